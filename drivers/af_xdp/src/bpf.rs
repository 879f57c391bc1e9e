//! The `bpf(2)` system call: the XSKMAP, the redirect program (assembled here,
//! no clang, no libbpf), BPF links, and the object queries the attach policy
//! needs. This is one of the crate's two unsafe modules (with [`crate::sys`]).
//!
//! Each command has its own `#[repr(C)]` view of the kernel's `union bpf_attr`,
//! with the offsets of `include/uapi/linux/bpf.h` asserted at compile time; the
//! kernel copies `size` bytes into a zeroed union, so a view may stop after the
//! last field it sets.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

// Commands (enum bpf_cmd).
const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_LINK_CREATE: u32 = 28;
const BPF_LINK_GET_FD_BY_ID: u32 = 30;
const BPF_LINK_GET_NEXT_ID: u32 = 31;

/// BPF_MAP_TYPE_XSKMAP.
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
/// BPF_PROG_TYPE_XDP.
pub(crate) const BPF_PROG_TYPE_XDP: u32 = 6;
/// Attach type BPF_XDP.
const BPF_XDP: u32 = 37;
/// BPF_LINK_TYPE_XDP.
pub(crate) const BPF_LINK_TYPE_XDP: u32 = 6;
/// Helper number of `bpf_redirect_map`.
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
/// `XDP_PASS`: the redirect program's fallback action.
pub(crate) const XDP_PASS: i32 = 2;
/// Offset of `rx_queue_index` in `struct xdp_md`.
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;
/// Longest object name, with its NUL (BPF_OBJ_NAME_LEN).
pub(crate) const OBJ_NAME_LEN: usize = 16;

/// One eBPF instruction (`struct bpf_insn`): opcode, dst/src registers in one
/// byte (dst in the low nibble), 16-bit offset, 32-bit immediate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}
const _: () = assert!(size_of::<Insn>() == 8);

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }

    /// `dst = *(u32 *)(src + off)` (BPF_LDX | BPF_W | BPF_MEM).
    pub(crate) const fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(0x61, dst, src, off, 0)
    }

    /// `dst = map` as a 64-bit immediate load of a map fd (BPF_LD | BPF_DW |
    /// BPF_IMM with src = BPF_PSEUDO_MAP_FD); two slots.
    pub(crate) const fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        [Insn::new(0x18, dst, 1, 0, fd), Insn::new(0, 0, 0, 0, 0)]
    }

    /// `dst = imm` (BPF_ALU64 | BPF_MOV | BPF_K).
    pub(crate) const fn mov64_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(0xb7, dst, 0, 0, imm)
    }

    /// Call helper `func` (BPF_JMP | BPF_CALL).
    pub(crate) const fn call(func: i32) -> Insn {
        Insn::new(0x85, 0, 0, 0, func)
    }

    /// Return r0 (BPF_JMP | BPF_EXIT).
    pub(crate) const fn exit() -> Insn {
        Insn::new(0x95, 0, 0, 0, 0)
    }
}

/// The XSK redirect program, the equivalent of libxdp's `xsk_def_prog` for
/// kernels >= 5.3:
///
/// ```text
/// r2 = *(u32 *)(r1 + 16)        ; ctx->rx_queue_index
/// r1 = map[xskmap]              ; ld_imm64, BPF_PSEUDO_MAP_FD
/// r3 = XDP_PASS                 ; action when the slot is empty
/// call bpf_redirect_map
/// exit
/// ```
pub(crate) fn redirect_program(xskmap: RawFd) -> Vec<Insn> {
    let ld = Insn::ld_map_fd(1, xskmap);
    vec![
        Insn::ldx_w(2, 1, XDP_MD_RX_QUEUE_INDEX),
        ld[0],
        ld[1],
        Insn::mov64_imm(3, XDP_PASS),
        Insn::call(BPF_FUNC_REDIRECT_MAP),
        Insn::exit(),
    ]
}

/// `return XDP_PASS`: the smallest XDP program (tests use it as a foreign one).
#[cfg(test)]
pub(crate) fn pass_program() -> Vec<Insn> {
    vec![Insn::mov64_imm(0, XDP_PASS), Insn::exit()]
}

fn obj_name(name: &str) -> [u8; OBJ_NAME_LEN] {
    let mut n = [0u8; OBJ_NAME_LEN];
    let b = name.as_bytes();
    let k = b.len().min(OBJ_NAME_LEN - 1);
    n[..k].copy_from_slice(&b[..k]);
    n
}

/// Issue one bpf(2) command with `attr` as its argument.
///
/// # Safety
/// `attr` must be the command's attribute layout, and every pointer it carries
/// must be valid for what the command reads or writes, for the duration of the call.
unsafe fn bpf<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    // SAFETY: the caller vouches for the layout and the pointers inside `attr`;
    // `attr` itself is valid for size_of::<T>() bytes of reads and writes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_long,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as i64)
    }
}

/// Wrap a file descriptor a bpf(2) command returned.
fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just created this descriptor for us and nothing else
    // owns it (bpf(2) returns a fresh fd, with O_CLOEXEC, for these commands).
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; OBJ_NAME_LEN],
}
const _: () = assert!(std::mem::offset_of!(MapCreateAttr, map_name) == 28);

/// Create an XSKMAP (queue index → AF_XDP socket) with `entries` slots.
pub(crate) fn create_xskmap(name: &str, entries: u32) -> io::Result<OwnedFd> {
    let mut a = MapCreateAttr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        map_name: obj_name(name),
        ..Default::default()
    };
    // SAFETY: MapCreateAttr is the BPF_MAP_CREATE layout and carries no pointer.
    unsafe { bpf(BPF_MAP_CREATE, &mut a) }.map(owned)
}

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}
const _: () = assert!(size_of::<MapElemAttr>() == 32);

/// `map[key] = value` for a map with u32 keys and values (an XSKMAP slot).
pub(crate) fn map_update_u32(map: &OwnedFd, key: u32, value: u32) -> io::Result<()> {
    let mut a = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0, // BPF_ANY
    };
    // SAFETY: the attr is the BPF_MAP_UPDATE_ELEM layout; key and value point at
    // live u32s the kernel only reads during the call.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut a) }.map(drop)
}

/// Remove `key` from a map with u32 keys.
pub(crate) fn map_delete_u32(map: &OwnedFd, key: u32) -> io::Result<()> {
    let mut a = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: 0,
        flags: 0,
    };
    // SAFETY: the attr is the BPF_MAP_DELETE_ELEM layout; key points at a live
    // u32 the kernel only reads during the call.
    unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut a) }.map(drop)
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}
const _: () = assert!(std::mem::offset_of!(ProgLoadAttr, log_buf) == 32);
const _: () = assert!(std::mem::offset_of!(ProgLoadAttr, prog_name) == 48);
const _: () = assert!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type) == 68);

/// Why a program did not load: the OS error and, when the verifier spoke, its log.
#[derive(Debug)]
pub(crate) struct LoadError {
    pub(crate) source: io::Error,
    pub(crate) log: String,
}

/// `prog_flags`: the program handles multi-buffer (fragmented) frames, as
/// the "xdp.frags" section name asks of libbpf (Linux 5.18,
/// `include/uapi/linux/bpf.h`).
pub(crate) const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;

/// Load an XDP program with `prog_flags` (0 or [`BPF_F_XDP_HAS_FRAGS`]). On
/// failure the load is repeated with a verifier log (as libbpf does), so the
/// error carries what the verifier said.
pub(crate) fn load_xdp(
    name: &str,
    insns: &[Insn],
    license: &CStr,
    prog_flags: u32,
) -> Result<OwnedFd, LoadError> {
    let mut a = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_flags,
        prog_name: obj_name(name),
        expected_attach_type: BPF_XDP,
        ..Default::default()
    };
    // SAFETY: the attr is the BPF_PROG_LOAD layout; insns and license point at
    // live memory of the stated sizes, read only during the call; no log buffer.
    match unsafe { bpf(BPF_PROG_LOAD, &mut a) } {
        Ok(fd) => return Ok(owned(fd)),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            return Err(LoadError {
                source: e,
                log: String::new(),
            });
        }
        Err(_) => {}
    }
    let mut log = vec![0u8; 1 << 16];
    a.log_level = 1;
    a.log_size = log.len() as u32;
    a.log_buf = log.as_mut_ptr() as u64;
    // SAFETY: as above, and log_buf points at log_size writable bytes that live
    // until the call returns.
    match unsafe { bpf(BPF_PROG_LOAD, &mut a) } {
        Ok(fd) => Ok(owned(fd)),
        Err(source) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(LoadError {
                source,
                log: String::from_utf8_lossy(&log[..end]).trim().to_string(),
            })
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}
const _: () = assert!(std::mem::offset_of!(LinkCreateAttr, flags) == 12);

/// Attach an XDP program to an interface through a BPF link: detached by the
/// kernel when the last descriptor of the link is closed (process exit included).
/// `flags` is 0 (the kernel picks native if the driver has it), or one of the
/// XDP_FLAGS_*_MODE values.
pub(crate) fn link_create_xdp(prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut a = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
    };
    // SAFETY: the attr is the BPF_LINK_CREATE layout and carries no pointer.
    unsafe { bpf(BPF_LINK_CREATE, &mut a) }.map(owned)
}

#[repr(C)]
#[derive(Default)]
struct GetIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// A descriptor for the program with kernel id `id`.
pub(crate) fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut a = GetIdAttr {
        id,
        ..Default::default()
    };
    // SAFETY: the attr is the BPF_PROG_GET_FD_BY_ID layout, no pointer.
    unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut a) }.map(owned)
}

/// A descriptor for the BPF link with kernel id `id`.
pub(crate) fn link_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut a = GetIdAttr {
        id,
        ..Default::default()
    };
    // SAFETY: the attr is the BPF_LINK_GET_FD_BY_ID layout, no pointer.
    unsafe { bpf(BPF_LINK_GET_FD_BY_ID, &mut a) }.map(owned)
}

/// The id of the next BPF link after `start` (0: the first), or `None` at the end.
pub(crate) fn link_next_id(start: u32) -> io::Result<Option<u32>> {
    let mut a = GetIdAttr {
        id: start,
        ..Default::default()
    };
    // SAFETY: the attr is the BPF_LINK_GET_NEXT_ID layout, no pointer.
    match unsafe { bpf(BPF_LINK_GET_NEXT_ID, &mut a) } {
        Ok(_) => Ok(Some(a.next_id)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The start of `struct bpf_prog_info`, up to its name.
#[repr(C)]
#[derive(Default)]
struct RawProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; OBJ_NAME_LEN],
}
const _: () = assert!(std::mem::offset_of!(RawProgInfo, name) == 64);

/// What the attach policy needs to know about a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProgInfo {
    pub(crate) id: u32,
    pub(crate) prog_type: u32,
    pub(crate) name: String,
}

/// The start of `struct bpf_link_info`, up to the XDP member of its union.
#[repr(C)]
#[derive(Default)]
struct RawLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    /// `xdp.ifindex` for XDP links (the union starts 8-byte aligned at 16).
    ifindex: u32,
    _rest: [u32; 7],
}
const _: () = assert!(std::mem::offset_of!(RawLinkInfo, ifindex) == 16);

/// What the attach policy needs to know about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    pub(crate) id: u32,
    pub(crate) link_type: u32,
    pub(crate) prog_id: u32,
    /// The interface, for an XDP link.
    pub(crate) ifindex: u32,
}

/// BPF_OBJ_GET_INFO_BY_FD into `info`.
///
/// # Safety
/// `T` must be a prefix of the info struct of the object behind `fd`, made of
/// plain integers, with every pointer-carrying field zero.
unsafe fn obj_info<T>(fd: &OwnedFd, info: &mut T) -> io::Result<()> {
    let mut a = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<T>() as u32,
        info: info as *mut T as u64,
    };
    // SAFETY: the attr is the BPF_OBJ_GET_INFO_BY_FD layout; `info` points at
    // info_len writable bytes; the caller keeps the pointer fields zero, so the
    // kernel writes nothing else.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a) }.map(drop)
}

/// Id, type and name of the program behind `fd`.
pub(crate) fn prog_info(fd: &OwnedFd) -> io::Result<ProgInfo> {
    let mut i = RawProgInfo::default();
    // SAFETY: RawProgInfo is a prefix of struct bpf_prog_info; its pointer fields
    // (jited/xlated insns, map ids) are zero with zero lengths.
    unsafe { obj_info(fd, &mut i) }?;
    let end = i.name.iter().position(|&b| b == 0).unwrap_or(OBJ_NAME_LEN);
    Ok(ProgInfo {
        id: i.id,
        prog_type: i.prog_type,
        name: String::from_utf8_lossy(&i.name[..end]).into_owned(),
    })
}

/// Id, type, program and (XDP) interface of the link behind `fd`.
pub(crate) fn link_info(fd: &OwnedFd) -> io::Result<LinkInfo> {
    let mut i = RawLinkInfo::default();
    // SAFETY: RawLinkInfo is a prefix of struct bpf_link_info; the union members
    // that carry pointers (tracepoint names, uprobe paths ...) are zero, so the
    // kernel does not write through them.
    unsafe { obj_info(fd, &mut i) }?;
    Ok(LinkInfo {
        id: i.id,
        link_type: i.link_type,
        prog_id: i.prog_id,
        ifindex: if i.link_type == BPF_LINK_TYPE_XDP {
            i.ifindex
        } else {
            0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_program_encodes_like_libxdp() {
        let p = redirect_program(7);
        let raw: Vec<u64> = p
            .iter()
            .map(|i| {
                u64::from(i.code)
                    | u64::from(i.regs) << 8
                    | u64::from(i.off as u16) << 16
                    | u64::from(i.imm as u32) << 32
            })
            .collect();
        assert_eq!(
            raw,
            vec![
                0x0000_0000_0010_1261, // r2 = *(u32 *)(r1 + 16)
                0x0000_0007_0000_1118, // r1 = map fd 7 (src = PSEUDO_MAP_FD)
                0,
                0x0000_0002_0000_03b7, // r3 = 2
                0x0000_0033_0000_0085, // call 51
                0x0000_0000_0000_0095, // exit
            ]
        );
        assert_eq!(obj_name("nicpoll_xsk_and_more")[15], 0);
    }
}
