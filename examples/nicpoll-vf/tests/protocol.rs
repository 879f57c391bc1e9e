//! What a vfio-user client sees of a VF, through a client written here from
//! the protocol (QEMU's `docs/interop/vfio-user.rst`) and `linux/vfio.h`: the
//! device info, the regions (BAR0 with its doorbell pages mappable, BAR3,
//! the config space), the IRQ indices, the PCI identity of each PF flavour,
//! doorbell stores through the mapped pages reaching the registers, and the
//! one model thread that serves all the VFs.

mod common;

use std::os::unix::fs::FileExt;

use common::*;

const DEVICE_GET_IRQ_INFO: u16 = 7;
/// `VFIO_DEVICE_FLAGS_RESET`, `VFIO_DEVICE_FLAGS_PCI`.
const FLAGS_RESET: u32 = 1 << 0;
const FLAGS_PCI: u32 = 1 << 1;
/// `VFIO_REGION_INFO_FLAG_{READ,WRITE,MMAP,CAPS}`.
const R_READ: u32 = 1;
const R_WRITE: u32 = 2;
const R_MMAP: u32 = 4;
const R_CAPS: u32 = 8;
/// `VFIO_REGION_INFO_CAP_SPARSE_MMAP`.
const CAP_SPARSE_MMAP: u16 = 1;

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// DEVICE_GET_REGION_INFO of `index` with room for `argsz` bytes of reply.
fn region_info(c: &mut Client, index: u32, argsz: u32) -> Reply {
    let mut p = vec![0u8; 32];
    p[0..4].copy_from_slice(&argsz.to_le_bytes());
    p[8..12].copy_from_slice(&index.to_le_bytes());
    let r = c.call(DEVICE_GET_REGION_INFO, &p, &[]);
    assert!(!r.is_error(), "region {index}");
    r
}

#[test]
fn a_client_sees_an_x710_vf_and_maps_its_doorbells() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 1, &[]);
    let mut c = Client::connect(&server.sockets[0]);
    c.version();
    let mut p = vec![0u8; 16];
    p[0..4].copy_from_slice(&16u32.to_le_bytes());
    let info = c.call(DEVICE_GET_INFO, &p, &[]);
    assert_eq!(u32_at(&info.payload, 4), FLAGS_PCI | FLAGS_RESET);
    assert_eq!(u32_at(&info.payload, 8), 9, "BAR0-5, ROM, config, VGA");
    assert_eq!(u32_at(&info.payload, 12), 5, "INTx, MSI, MSI-X, ERR, REQ");
    // IRQs: no INTx, no MSI, 5 MSI-X vectors (eventfd, no resize).
    let mut counts = Vec::new();
    for index in 0..5u32 {
        let mut p = vec![0u8; 16];
        p[0..4].copy_from_slice(&16u32.to_le_bytes());
        p[8..12].copy_from_slice(&index.to_le_bytes());
        let r = c.call(DEVICE_GET_IRQ_INFO, &p, &[]);
        counts.push((u32_at(&r.payload, 12), u32_at(&r.payload, 4)));
    }
    assert_eq!(counts, vec![(0, 0), (0, 0), (5, 1 | 8), (1, 1), (1, 1)]);
    // BAR3 and the config space: plain, readable and writable.
    let bar3 = region_info(&mut c, 3, 32);
    assert_eq!(u32_at(&bar3.payload, 4), R_READ | R_WRITE);
    assert_eq!(u64_at(&bar3.payload, 16), 0x4000);
    let cfg = region_info(&mut c, 7, 32);
    assert_eq!(u64_at(&cfg.payload, 16), 4096);
    assert_eq!(c.read32(7, 0), Ok(0x154C_8086));
    assert_eq!(c.read32(7, 8).unwrap() >> 8, 0x02_0000);
    // BAR0: 64 KiB, its doorbell pages mappable. Asked with the fixed size
    // first, the reply says how much room the capabilities need.
    let bar0 = region_info(&mut c, 0, 32);
    let flags = u32_at(&bar0.payload, 4);
    assert_eq!(flags, R_READ | R_WRITE | R_MMAP | R_CAPS);
    assert_eq!(u64_at(&bar0.payload, 16), 0x1_0000);
    let full = u32_at(&bar0.payload, 0);
    assert!(full > 32, "argsz names the room the sparse areas need");
    let bar0 = region_info(&mut c, 0, full);
    let cap_offset = u32_at(&bar0.payload, 12) as usize;
    let cap = &bar0.payload[cap_offset..];
    assert_eq!(u16::from_le_bytes([cap[0], cap[1]]), CAP_SPARSE_MMAP);
    assert_eq!(u32_at(cap, 8), 1, "one area");
    assert_eq!((u64_at(cap, 16), u64_at(cap, 24)), (0, 0x3000));
    assert_eq!(bar0.fds.len(), 1, "the doorbell pages' file");
    let pages = std::fs::File::from(bar0.fds.into_iter().next().unwrap());
    let mmap_offset = u64_at(&bar0.payload, 24);
    // A doorbell stored into the pages is the register (Rx tail of queue 2);
    // one written by message shows in the pages.
    pages
        .write_all_at(&0x1ABu32.to_le_bytes(), mmap_offset + 0x2008)
        .unwrap();
    assert_eq!(c.read32(0, 0x2008), Ok(0x1AB));
    c.write32_posted(0, 0x0004, 0x33);
    assert_eq!(c.read32(0, 0x8800), Ok(2), "VFACTIVE");
    let mut w = [0u8; 4];
    pages.read_exact_at(&mut w, mmap_offset + 0x0004).unwrap();
    assert_eq!(u32::from_le_bytes(w), 0x33);
}

/// The VFs of the PF are served by one polling thread of the model, as one
/// adapter moves the queues of all its VFs, however many VFs there are
/// (before, each VF had a device thread of its own).
#[test]
fn the_vfs_of_one_pf_share_one_polling_thread() {
    for vfs in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), vfs, &[]);
        assert!(
            server
                .output()
                .contains("served by one polling thread (iavf-sim-pf0)"),
            "{}",
            server.output()
        );
        let names = server.thread_names();
        let model: Vec<&String> = names.iter().filter(|n| n.starts_with("iavf-sim")).collect();
        assert_eq!(model, ["iavf-sim-pf0"], "{vfs} VF(s), threads {names:?}");
        let (st, out) = server.stop();
        assert_eq!(st, Some(0), "{out}");
    }
}

#[test]
fn each_pf_flavour_shows_its_vf_device_id() {
    for (pf, id, vectors) in [("x722", 0x37CDu32, 5u32), ("ice", 0x1889, 17)] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), 1, &["--pf", pf]);
        let mut c = Client::connect(&server.sockets[0]);
        c.version();
        assert_eq!(c.read32(7, 0), Ok((id << 16) | 0x8086), "{pf}");
        // MSI-X table size N-1 in the capability at 0x70.
        assert_eq!(
            c.read32(7, 0x70).unwrap() >> 16 & 0x7FF,
            vectors - 1,
            "{pf}"
        );
        drop(c);
        let (st, out) = server.stop();
        assert_eq!(st, Some(0), "{out}");
    }
}
