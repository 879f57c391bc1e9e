//! Loading libibverbs: dlopen, the exported functions looked up once, and the
//! errno conventions of rdma-core's calls.

use std::ffi::{CStr, c_int, c_void};
use std::io;
use std::ptr::NonNull;
use std::sync::Arc;

use libloading::Library;

use super::context::Context;
use super::ffi::*;
use crate::error::Mlx5Error;

/// Log a destroy or dealloc call that failed: all a `Drop` can do (the object
/// is given up either way), naming the device and the call.
pub(super) fn log_failed_destroy(device: &str, call: &str, rc: c_int) {
    if let Err(e) = rc_to_result(rc) {
        log::error!("{device}: {call}: {e}");
    }
}

// ---------------------------------------------------------------------------
// errno

/// Set errno to 0 before a call whose failure may or may not set it.
pub(super) fn clear_errno() {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = 0 };
}

/// The errno a failed call left, or `fallback` if it left none (rdma-core does
/// not promise errno on every NULL return).
pub(super) fn errno_or(fallback: i32) -> io::Error {
    // SAFETY: as in `clear_errno`.
    let e = unsafe { *libc::__errno_location() };
    io::Error::from_raw_os_error(if e == 0 { fallback } else { e })
}

/// Set errno (for the fake library).
#[cfg(test)]
pub(crate) fn set_errno(e: i32) {
    // SAFETY: as in `clear_errno`.
    unsafe { *libc::__errno_location() = e };
}

/// rdma-core verbs that return an int return 0 or a positive errno value (some
/// providers return -1 with errno set).
pub(super) fn rc_to_result(rc: c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        r if r > 0 => Err(io::Error::from_raw_os_error(r)),
        _ => Err(errno_or(libc::EINVAL)),
    }
}

// ---------------------------------------------------------------------------
// The library

macro_rules! exported {
    ($($field:ident : $sym:literal => $ty:ty),* $(,)?) => {
        /// The functions libibverbs exports (dlsym'd once).
        #[derive(Clone, Copy)]
        pub struct Fns {
            $(#[doc = $sym] pub $field: $ty,)*
        }

        impl Fns {
            pub(super) fn load(lib: &Library, library: &str) -> Result<Fns, Mlx5Error> {
                Ok(Fns {
                    $($field: {
                        // SAFETY: the type is the prototype in <infiniband/verbs.h>
                        // (rdma-core 44) of this exported, versioned symbol; the
                        // pointer stays valid while `lib` is loaded, and the Verbs
                        // value that keeps these pointers also keeps `lib`.
                        let s = unsafe { lib.get::<$ty>($sym) }.map_err(|e| {
                            Mlx5Error::LibraryTooOld {
                                library: library.to_string(),
                                symbol: $sym.to_string(),
                                reason: e.to_string(),
                            }
                        })?;
                        *s
                    },)*
                })
            }
        }
    };
}

exported! {
    get_device_list: "ibv_get_device_list" => unsafe extern "C" fn(*mut c_int) -> *mut *mut IbvDevice,
    free_device_list: "ibv_free_device_list" => unsafe extern "C" fn(*mut *mut IbvDevice),
    open_device: "ibv_open_device" => unsafe extern "C" fn(*mut IbvDevice) -> *mut IbvContext,
    close_device: "ibv_close_device" => unsafe extern "C" fn(*mut IbvContext) -> c_int,
    query_device: "ibv_query_device" => unsafe extern "C" fn(*mut IbvContext, *mut IbvDeviceAttr) -> c_int,
    query_port: "ibv_query_port" => unsafe extern "C" fn(*mut IbvContext, u8, *mut IbvPortAttr) -> c_int,
    alloc_pd: "ibv_alloc_pd" => unsafe extern "C" fn(*mut IbvContext) -> *mut IbvPd,
    dealloc_pd: "ibv_dealloc_pd" => unsafe extern "C" fn(*mut IbvPd) -> c_int,
    reg_mr: "ibv_reg_mr" => unsafe extern "C" fn(*mut IbvPd, *mut c_void, usize, c_int) -> *mut IbvMr,
    dereg_mr: "ibv_dereg_mr" => unsafe extern "C" fn(*mut IbvMr) -> c_int,
    destroy_cq: "ibv_destroy_cq" => unsafe extern "C" fn(*mut IbvCq) -> c_int,
    create_qp: "ibv_create_qp" => unsafe extern "C" fn(*mut IbvPd, *mut IbvQpInitAttr) -> *mut IbvQp,
    modify_qp: "ibv_modify_qp" => unsafe extern "C" fn(*mut IbvQp, *mut IbvQpAttr, c_int) -> c_int,
    destroy_qp: "ibv_destroy_qp" => unsafe extern "C" fn(*mut IbvQp) -> c_int,
    get_async_event: "ibv_get_async_event" => unsafe extern "C" fn(*mut IbvContext, *mut IbvAsyncEvent) -> c_int,
    ack_async_event: "ibv_ack_async_event" => unsafe extern "C" fn(*mut IbvAsyncEvent),
}

/// `ibv_reg_mr_iova2` (IBVERBS_1.8, rdma-core 23): what the header's `ibv_reg_mr`
/// macro calls when an optional access flag such as relaxed ordering is asked
/// for. Older libraries lack it; then the MR goes without relaxed ordering.
pub type RegMrIova2Fn =
    unsafe extern "C" fn(*mut IbvPd, *mut c_void, usize, u64, u32) -> *mut IbvMr;

/// The environment variable that makes libibverbs treat EIO from a destroy
/// command as success once the device is gone (`libibverbs/init.c`,
/// `ibv_open_device(3)`), so queues of a removed device are torn down without
/// leaking. Read once, by the library's first `ibv_get_device_list`.
pub const ALLOW_DISASSOC_DESTROY: &str = "RDMAV_ALLOW_DISASSOC_DESTROY";

/// libibverbs, loaded: its exported functions.
pub struct Verbs {
    /// What was loaded (for messages).
    pub library: String,
    pub(super) fns: Fns,
    /// `ibv_reg_mr_iova2`, if the library has it.
    pub(super) reg_mr_iova2: Option<RegMrIova2Fn>,
    /// Keeps the shared object mapped while any function pointer may be used.
    _lib: Option<Library>,
}

impl std::fmt::Debug for Verbs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verbs")
            .field("library", &self.library)
            .finish()
    }
}

impl Verbs {
    /// dlopen `libibverbs.so.1`.
    pub fn load() -> Result<Arc<Verbs>, Mlx5Error> {
        Verbs::load_from(LIBIBVERBS)
    }

    /// dlopen `library` (a SONAME or a path) and look up every function we use.
    pub fn load_from(library: &str) -> Result<Arc<Verbs>, Mlx5Error> {
        if std::env::var_os(ALLOW_DISASSOC_DESTROY).is_none() {
            // SAFETY: setenv races with getenv in other threads. Ports are opened
            // by the control thread before any lcore or watcher thread of ours
            // runs, and libibverbs reads its environment only in its first
            // ibv_get_device_list, which comes after this.
            unsafe { std::env::set_var(ALLOW_DISASSOC_DESTROY, "1") };
        }
        // SAFETY: loading runs the library's initialisers; libibverbs' only
        // initialise its own state (it reads /etc/libibverbs.d lazily).
        let lib = unsafe { Library::new(library) }.map_err(|e| Mlx5Error::LibraryMissing {
            library: library.to_string(),
            reason: e.to_string(),
        })?;
        let fns = Fns::load(&lib, library)?;
        // SAFETY: the prototype in <infiniband/verbs.h>; the pointer lives as
        // long as `lib`, which Verbs keeps.
        let reg_mr_iova2 = unsafe { lib.get::<RegMrIova2Fn>(b"ibv_reg_mr_iova2") }
            .ok()
            .map(|s| *s);
        Ok(Arc::new(Verbs {
            library: library.to_string(),
            fns,
            reg_mr_iova2,
            _lib: Some(lib),
        }))
    }

    /// A library made of the given functions (the fake NIC of the tests).
    #[cfg(test)]
    pub(crate) fn from_fns(
        library: &str,
        fns: Fns,
        reg_mr_iova2: Option<RegMrIova2Fn>,
    ) -> Arc<Verbs> {
        Arc::new(Verbs {
            library: library.to_string(),
            fns,
            reg_mr_iova2,
            _lib: None,
        })
    }

    /// The names of the RDMA devices libibverbs sees (those with a provider).
    pub fn device_names(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        self.with_devices(|_, name| {
            names.push(name.to_string());
            false
        })?;
        Ok(names)
    }

    /// Walk the device list until `f` returns true; the device it was given is
    /// valid only during the call.
    fn with_devices(&self, mut f: impl FnMut(*mut IbvDevice, &str) -> bool) -> io::Result<()> {
        let mut n: c_int = 0;
        clear_errno();
        // SAFETY: exported function, n is a valid out-pointer.
        let list = unsafe { (self.fns.get_device_list)(&mut n) };
        if list.is_null() {
            let e = errno_or(libc::ENODEV);
            // No kernel RDMA support at all is "no device", not a failure.
            if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::ENODEV)) {
                return Ok(());
            }
            return Err(e);
        }
        for i in 0..n.max(0) as usize {
            // SAFETY: the list holds n valid device pointers (NULL-terminated).
            let dev = unsafe { *list.add(i) };
            if dev.is_null() {
                break;
            }
            // SAFETY: dev points to a live ibv_device; name is NUL-terminated
            // within its 64 bytes (the library copies a sysfs name into it).
            let name = unsafe { CStr::from_ptr((*dev).name.as_ptr()) };
            if f(dev, &name.to_string_lossy()) {
                break;
            }
        }
        // SAFETY: the list came from get_device_list and is freed once; devices
        // we opened stay valid (the library refcounts them).
        unsafe { (self.fns.free_device_list)(list) };
        Ok(())
    }

    /// Open the device named `ibdev` and allocate its protection domain.
    /// `Ok(None)` if libibverbs does not list it.
    pub fn open(self: &Arc<Self>, ibdev: &str) -> io::Result<Option<Arc<Context>>> {
        let mut opened: Option<io::Result<NonNull<IbvContext>>> = None;
        self.with_devices(|dev, name| {
            if name != ibdev {
                return false;
            }
            clear_errno();
            // SAFETY: dev is valid during the walk.
            let ctx = unsafe { (self.fns.open_device)(dev) };
            opened = Some(NonNull::new(ctx).ok_or_else(|| errno_or(libc::ENODEV)));
            true
        })?;
        let ctx = match opened {
            None => return Ok(None),
            Some(r) => r?,
        };
        clear_errno();
        // SAFETY: ctx was just opened.
        let pd = unsafe { (self.fns.alloc_pd)(ctx.as_ptr()) };
        let Some(pd) = NonNull::new(pd) else {
            let e = errno_or(libc::ENOMEM);
            // SAFETY: ctx is open and owned by nobody else.
            unsafe { (self.fns.close_device)(ctx.as_ptr()) };
            return Err(e);
        };
        Ok(Some(Arc::new(Context {
            verbs: self.clone(),
            ctx,
            pd,
            name: ibdev.to_string(),
            destroy_lock: std::sync::Mutex::new(()),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bogus_library_name_is_library_missing() {
        let e = Verbs::load_from("libibverbs-does-not-exist.so.1").unwrap_err();
        assert!(matches!(e, Mlx5Error::LibraryMissing { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("ibverbs-providers")
                && msg.contains("libibverbs1")
                && msg.contains("Containerfile"),
            "{msg}"
        );
    }

    #[test]
    fn a_library_without_the_verbs_is_too_old() {
        // libc loads but exports no ibv_* function.
        let e = Verbs::load_from("libc.so.6").unwrap_err();
        assert!(
            matches!(&e, Mlx5Error::LibraryTooOld { symbol, .. } if symbol == "ibv_get_device_list"),
            "{e:?}"
        );
        // No release number fixes a library that is not libibverbs.
        let msg = e.to_string();
        assert!(
            msg.contains("not rdma-core's libibverbs") && !msg.contains("rdma-core 17"),
            "{msg}"
        );
    }

    #[test]
    fn real_library_loads_and_lists_devices() {
        if nicpoll_testkit::skip_if_missing(&[nicpoll_testkit::Need::Library("libibverbs.so.1")]) {
            return;
        }
        let v = Verbs::load().expect("libibverbs.so.1 loads with dlopen, so Verbs::load must");
        let names = v.device_names().expect("ibv_get_device_list");
        eprintln!("libibverbs loaded; RDMA devices: {names:?}");
    }
}
