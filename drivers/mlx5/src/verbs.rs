//! The FFI layer: rdma-core's libibverbs loaded at run time with dlopen, the
//! `#[repr(C)]` mirrors of the structs we touch, and owning handles for every
//! verbs object. This folder (with its test-only fake NIC `verbs::fake`) is
//! where the crate's `unsafe` lives; everything above it is safe Rust.
//!
//! - [`ffi`]: the struct mirrors and constants of `<infiniband/verbs.h>`;
//! - [`library`]: dlopen and the exported functions ([`Fns`], [`Verbs`]);
//! - [`context`]: the device context and the verbs that create objects in it;
//! - [`objects`]: the owning handles (MR, CQ, WQ, table, QP, flow rule,
//!   thread domain) and the one poller of each CQ;
//! - [`rings`]: the safe owners of the buffers posted to the device.
//!
//! Three ways into libibverbs, mirroring `<infiniband/verbs.h>` (rdma-core 44):
//!
//! - **exported functions** (`ibv_open_device`, `ibv_create_qp`, ...) are looked
//!   up with `dlsym` once, into [`Fns`];
//! - **`ibv_context.ops`** (`poll_cq`, `post_send`, `post_recv`): the header's
//!   `static inline` wrappers call through this table, and so do we;
//! - **`verbs_context` extension ops** (`ibv_create_flow`, `ibv_create_wq`,
//!   `ibv_create_qp_ex`, ...): a table that sits *before* the `ibv_context` in
//!   memory, with a `size_t sz` immediately before it. The header checks
//!   `abi_compat == UINTPTR_MAX`, `sz`, and a non-NULL pointer before calling an
//!   op ([`vctx_op!`] does the same). New ops are added at the front, so the
//!   context-relative offsets we use are stable across rdma-core versions.
//!
//! A work queue's `post_recv` is a function pointer in `struct ibv_wq` itself
//! (`ibv_post_wq_recv`).
//!
//! Every mirror's size and field offsets are compared with the C compiler's
//! view of the installed header by the layout test (`layout_test.rs`).
#![allow(unsafe_code)]

/// Cast a byte address to a pointer typed like a `VerbsContext` field, without
/// ever forming a reference to (or an in-bounds projection of) a struct that may
/// be smaller in an older library.
#[inline(always)]
fn typed<T>(p: *const u8, _field: fn(&ffi::VerbsContext) -> &T) -> *const T {
    p as *const T
}

/// The extension op `$field` of the context `$ctx`, as `verbs_get_ctx_op` finds
/// it: `None` unless the context is extended, its `sz` covers the op, and the op
/// is set. `$ctx` must point to a live `ibv_context`.
macro_rules! vctx_op {
    ($ctx:expr, $field:ident) => {{
        use std::mem::{offset_of, size_of};
        use $crate::verbs::ffi::{IbvContext, VerbsContext};
        let ctx: *mut IbvContext = $ctx;
        // SAFETY: ctx is a live ibv_context (the macro's contract).
        let abi = unsafe { std::ptr::read(std::ptr::addr_of!((*ctx).abi_compat)) };
        if abi as usize != usize::MAX {
            None
        } else {
            let base = (ctx as *const u8).wrapping_sub(offset_of!(VerbsContext, context));
            // SAFETY: an extended context is embedded in a verbs_context, whose
            // `sz` sits immediately before it.
            let sz = unsafe {
                std::ptr::read(base.wrapping_add(offset_of!(VerbsContext, sz)) as *const usize)
            };
            let op_off = offset_of!(VerbsContext, $field);
            if sz < size_of::<VerbsContext>() - op_off {
                None
            } else {
                // SAFETY: `sz` says the library's verbs_context reaches this op.
                unsafe {
                    std::ptr::read($crate::verbs::typed(base.wrapping_add(op_off), |v| {
                        &v.$field
                    }))
                }
            }
        }
    }};
}

pub mod context;
#[cfg(test)]
pub(crate) mod fake;
pub mod ffi;
pub mod library;
pub mod objects;
pub mod rings;

pub use context::{Context, DeviceLimits, VerbError};
pub use ffi::*;
pub use library::Verbs;
pub use objects::{Completion, CqPoller, Flow, IndTable, Mr, Qp, ThreadDomain, Wq};
pub use rings::{RecvQueue, SendQueue, TxPlan};
