//! Real VFIO, run inside a QEMU guest of the project's harness (`tools/guest`;
//! `tests/vfio_vm.rs` builds this binary and boots it in both modes).
//!
//! Every test is `#[ignore]` and does nothing unless `NICPOLL_GUEST_BDF` is set
//! (the guest sets it, with `NICPOLL_GUEST_MODE` = type1 | noiommu and
//! `NICPOLL_GUEST_BDFS`). Extra switches from the host: `NICPOLL_TEST_EXPECT_VA=1`
//! (the vIOMMU has a 48-bit address width, so IOVA mode VA must be chosen) and
//! `NICPOLL_TEST_POD_RENAME=1` (no-IOMMU: rename `/dev/vfio/noiommu-N` to
//! `/dev/vfio/N` as the SR-IOV device plugin does in a pod, and open it that way).
//!
//! The e1000e test sends an ARP request through a TX ring in DMA memory and waits
//! for QEMU's slirp to answer into an RX ring: DMA reads and writes at the IOVAs
//! the VFIO layer set up. Descriptors live in DMA memory, so they are written and
//! read only with volatile accesses through raw pointers.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nicpoll::bar::Bar;
use nicpoll::memory::{DmaMemory, DmaRegion, IovaMode, MemoryConfig};
use nicpoll::pci::{PciAddress, Sysfs};
use nicpoll::vfio::{IommuType, VfioConfig, VfioContext, VfioDevice};

fn guest() -> Option<(String, Vec<PciAddress>)> {
    let bdf = std::env::var("NICPOLL_GUEST_BDF")
        .ok()
        .filter(|s| !s.is_empty());
    let Some(bdf) = bdf else {
        eprintln!("not in the VFIO guest (NICPOLL_GUEST_BDF unset): nothing to do");
        return None;
    };
    let all = std::env::var("NICPOLL_GUEST_BDFS").unwrap_or(bdf);
    let addrs = all
        .split_whitespace()
        .map(|s| s.parse().expect("NICPOLL_GUEST_BDFS"))
        .collect();
    Some((
        std::env::var("NICPOLL_GUEST_MODE").unwrap_or_default(),
        addrs,
    ))
}

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

fn memory(mode: IovaMode, prefix: &str) -> DmaMemory {
    DmaMemory::new(MemoryConfig {
        iova_mode: Some(mode),
        file_prefix: prefix.to_string(),
        huge_unlink: true,
        ..MemoryConfig::default()
    })
    .expect("hugepages in the guest")
}

fn expected_mode(mode: &str) -> IommuType {
    if mode == "noiommu" {
        IommuType::NoIommu
    } else {
        IommuType::Type1v2
    }
}

/// Open every device, check identities against sysfs, map every mmappable BAR and
/// one hugepage of DMA memory.
fn open_all(ctx: &VfioContext, addrs: &[PciAddress], mode: &str) -> Vec<VfioDevice> {
    let sysfs = Sysfs::default();
    let mut devs = Vec::new();
    for a in addrs {
        let d = ctx.open_device(a).unwrap();
        let s = sysfs.device(a).unwrap();
        assert_eq!((d.vendor_id(), d.device_id()), (s.vendor, s.device), "{a}");
        assert_eq!(d.iommu_type(), expected_mode(mode), "{a}");
        let cmd = d.read_config_u16(4).unwrap();
        assert_eq!(cmd & 0x6, 0x6, "{a}: memory space and bus master on");
        println!(
            "{a}: {:04x}:{:04x} group {} {:?} reset={} command={cmd:#06x}",
            d.vendor_id(),
            d.device_id(),
            d.group(),
            d.iommu_type(),
            d.can_reset()
        );
        for i in 0..6 {
            match d.region(i) {
                Some(r) if r.mmappable() => {
                    let bar = d.map_bar(i).unwrap();
                    assert_eq!(bar.len() as u64, r.size);
                    println!("  BAR{i} {:#x} bytes: [0]={:#010x}", r.size, bar.read32(0));
                }
                Some(r) => {
                    assert!(d.map_bar(i).is_err());
                    println!("  BAR{i} {:#x} bytes, not mmappable", r.size);
                }
                None => {}
            }
        }
        devs.push(d);
    }
    devs
}

#[test]
#[ignore = "runs inside the QEMU guest (tests/vfio_vm.rs)"]
fn guest_open_devices_map_bars_and_dma() {
    let Some((mode, addrs)) = guest() else { return };
    let ctx = VfioContext::new().unwrap();
    let iova = ctx.iova_mode_for(&addrs).unwrap();
    println!(
        "mode {mode}: IOVA mode {iova:?}, IOMMU info {:?}",
        ctx.iommu_info()
    );
    match mode.as_str() {
        "noiommu" => assert_eq!(iova, IovaMode::Pa),
        _ if flag("NICPOLL_TEST_EXPECT_VA") => assert_eq!(iova, IovaMode::Va),
        _ => {}
    }
    let devs = open_all(&ctx, &addrs, &mode);
    let mem = memory(iova, "vfioguest");
    let region = std::sync::Arc::new(mem.alloc("guest dma", 2 << 20).unwrap());
    ctx.map_dma(&region).unwrap();
    // Held in every mode (no-IOMMU too: the device addresses it physically).
    assert!(ctx.dma_mapping_count() >= 1);
    if iova == IovaMode::Va {
        assert_eq!(region.iova(0), region.as_ptr() as u64);
    } else {
        assert_ne!(region.iova(0), region.as_ptr() as u64);
    }
    println!(
        "DMA memory at {:p}, IOVA {:#x}",
        region.as_ptr(),
        region.iova(0)
    );
    ctx.unmap_dma(&region).unwrap();
    assert_eq!(ctx.dma_mapping_count(), 0);
    drop(devs);
}

#[test]
#[ignore = "runs inside the QEMU guest (tests/vfio_vm.rs)"]
fn guest_e1000e_dma_round_trip() {
    let Some((mode, addrs)) = guest() else { return };
    let sysfs = Sysfs::default();
    let Some(e1000e) = addrs.iter().find(|a| {
        sysfs
            .device(a)
            .is_ok_and(|d| (d.vendor, d.device) == (0x8086, 0x10d3))
    }) else {
        println!("no e1000e among {addrs:?}: skipped");
        return;
    };
    let ctx = VfioContext::new().unwrap();
    let iova = ctx.iova_mode_for(&[*e1000e]).unwrap();
    let dev = ctx.open_device(e1000e).unwrap();
    assert_eq!(dev.iommu_type(), expected_mode(&mode));
    let mem = memory(iova, "vfioe1000e");
    let region = std::sync::Arc::new(mem.alloc("e1000e rings", 2 << 20).unwrap());
    ctx.map_dma(&region).unwrap();
    let bar0 = dev.map_bar(0).unwrap();
    let t = Instant::now();
    e1000e_arp(&bar0, &region);
    println!(
        "e1000e ARP round trip through DMA in {:?} ({iova:?})",
        t.elapsed()
    );

    if mode != "noiommu" {
        // Type1 with physical addresses as IOVAs (DPDK's choice for narrow IOMMUs).
        let pa = memory(IovaMode::Pa, "vfioe1000epa");
        let r2 = std::sync::Arc::new(pa.alloc("e1000e rings (PA)", 2 << 20).unwrap());
        ctx.map_dma(&r2).unwrap();
        e1000e_arp(&bar0, &r2);
        println!("e1000e ARP round trip with IOVA = PA on type1");
        ctx.unmap_dma(&r2).unwrap();
    }
}

/// Write `v` at `off` in DMA memory.
fn put<T: Copy>(r: &DmaRegion, off: usize, v: T) {
    assert!(off + size_of::<T>() <= r.len() && off.is_multiple_of(align_of::<T>()));
    // SAFETY: in bounds and aligned (checked); DMA memory is only ever accessed
    // volatilely through raw pointers, never through references.
    unsafe { r.as_ptr().add(off).cast::<T>().write_volatile(v) }
}

/// Read a `T` at `off` in DMA memory.
fn get<T: Copy>(r: &DmaRegion, off: usize) -> T {
    assert!(off + size_of::<T>() <= r.len() && off.is_multiple_of(align_of::<T>()));
    // SAFETY: as in `put`.
    unsafe { r.as_ptr().add(off).cast::<T>().read_volatile() }
}

/// 82574 (e1000e) legacy rings: send "who-has 10.0.2.2" and wait for slirp's
/// reply. Register offsets as Linux's drivers/net/ethernet/intel/e1000e/regs.h
/// names them (E1000_CTRL, E1000_STATUS, E1000_IMC, E1000_RCTL, E1000_TCTL,
/// E1000_TIPG, E1000_RDBAL(0), E1000_TDBAL(0), E1000_RAL(0)), bits as its
/// defines.h (E1000_CTRL_RST, E1000_CTRL_SLU, E1000_RCTL_*, E1000_TCTL_*,
/// E1000_TXD_CMD_*); the legacy descriptor layouts of the 82574 datasheet.
fn e1000e_arp<B: Bar>(bar: &B, mem: &DmaRegion) {
    const CTRL: usize = 0x0000;
    const STATUS: usize = 0x0008;
    const IMC: usize = 0x00d8;
    const RCTL: usize = 0x0100;
    const TCTL: usize = 0x0400;
    const TIPG: usize = 0x0410;
    const RDBAL: usize = 0x2800;
    const TDBAL: usize = 0x3800;
    const RAL: usize = 0x5400;
    const N: usize = 8;
    let (rx, tx, frame, bufs) = (0x0usize, 0x1000usize, 0x2000usize, 0x1_0000usize);
    for off in (0..0x2_0000).step_by(8) {
        put::<u64>(mem, off, 0);
    }
    bar.write32(IMC, u32::MAX);
    bar.write32(CTRL, bar.read32(CTRL) | 1 << 26); // reset
    let t = Instant::now();
    while bar.read32(CTRL) & 1 << 26 != 0 && t.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(10));
    bar.write32(IMC, u32::MAX);
    bar.write32(CTRL, bar.read32(CTRL) | 1 << 6); // set link up
    let (ral, rah) = (bar.read32(RAL), bar.read32(RAL + 4));
    let mac = [
        ral as u8,
        (ral >> 8) as u8,
        (ral >> 16) as u8,
        (ral >> 24) as u8,
        rah as u8,
        (rah >> 8) as u8,
    ];
    let t = Instant::now();
    while bar.read32(STATUS) & 2 == 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_ne!(bar.read32(STATUS) & 2, 0, "e1000e link up");

    let split = |a: u64| (a as u32, (a >> 32) as u32);
    for i in 0..N {
        put(mem, rx + i * 16, mem.iova(bufs + i * 2048));
    }
    let (lo, hi) = split(mem.iova(rx));
    bar.write32(RDBAL, lo);
    bar.write32(RDBAL + 4, hi);
    bar.write32(RDBAL + 8, (N * 16) as u32);
    bar.write32(RDBAL + 0x10, 0);
    bar.write32(RDBAL + 0x18, (N - 1) as u32);
    bar.write32(RCTL, 1 << 1 | 1 << 3 | 1 << 4 | 1 << 15 | 1 << 26);
    let (lo, hi) = split(mem.iova(tx));
    bar.write32(TDBAL, lo);
    bar.write32(TDBAL + 4, hi);
    bar.write32(TDBAL + 8, (N * 16) as u32);
    bar.write32(TDBAL + 0x10, 0);
    bar.write32(TDBAL + 0x18, 0);
    bar.write32(TIPG, 0x0060_2008);
    bar.write32(TCTL, 1 << 1 | 1 << 3 | 0x0f << 4 | 0x3f << 12);

    let mut f = [0u8; 60];
    f[..6].fill(0xff);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&[10, 0, 2, 15]);
    f[38..42].copy_from_slice(&[10, 0, 2, 2]);
    for (i, b) in f.iter().enumerate() {
        put(mem, frame + i, *b);
    }
    let mut got = false;
    let mut tdt = 0;
    for attempt in 0..3 {
        let d = tx + tdt * 16;
        put(mem, d, mem.iova(frame));
        put::<u16>(mem, d + 8, f.len() as u16);
        put::<u8>(mem, d + 11, 0x01 | 0x02 | 0x08); // EOP | IFCS | RS
        put::<u8>(mem, d + 12, 0);
        tdt = (tdt + 1) % N;
        bar.write32(TDBAL + 0x18, tdt as u32);
        let t = Instant::now();
        while get::<u8>(mem, d + 12) & 1 == 0 && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_ne!(
            get::<u8>(mem, d + 12) & 1,
            0,
            "TX #{attempt}: descriptor done"
        );
        let t = Instant::now();
        while !got && t.elapsed() < Duration::from_secs(1) {
            for i in 0..N {
                if get::<u8>(mem, rx + i * 16 + 12) & 1 == 0 {
                    continue;
                }
                let b = |o: usize| get::<u8>(mem, bufs + i * 2048 + o);
                if (b(12), b(13), b(21)) == (8, 6, 2)
                    && (b(28), b(29), b(30), b(31)) == (10, 0, 2, 2)
                {
                    got = true;
                }
                put::<u8>(mem, rx + i * 16 + 12, 0);
                bar.write32(RDBAL + 0x18, i as u32);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if got {
            break;
        }
    }
    bar.write32(TCTL, 0);
    bar.write32(RCTL, 0);
    assert!(got, "ARP reply from 10.0.2.2 DMA'd into the RX ring");
}

/// `capset` on the calling thread only: drop `caps` from its effective set.
fn drop_caps_on_this_thread(caps: &[u32]) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget writes two Data structs (version 3) into `d`.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
    assert_eq!(r, 0, "capget");
    for &c in caps {
        d[(c / 32) as usize].effective &= !(1 << (c % 32));
    }
    // SAFETY: capset reads the header and two Data structs; it changes only this
    // thread's credentials (Linux capabilities are per thread).
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
    assert_eq!(r, 0, "capset");
}

#[test]
#[ignore = "runs inside the QEMU guest (tests/vfio_vm.rs)"]
fn guest_permission_errors_name_the_fix() {
    let Some((mode, addrs)) = guest() else { return };
    const CAP_DAC_OVERRIDE: u32 = 1;
    const CAP_DAC_READ_SEARCH: u32 = 2;
    const CAP_SYS_RAWIO: u32 = 17;
    let a = addrs[0];
    if mode == "noiommu" {
        // Without CAP_SYS_RAWIO a no-IOMMU group does not open.
        let e = std::thread::spawn(move || {
            drop_caps_on_this_thread(&[CAP_SYS_RAWIO]);
            let ctx = VfioContext::new().unwrap();
            ctx.open_device(&a).unwrap_err().to_string()
        })
        .join()
        .unwrap();
        println!("without CAP_SYS_RAWIO: {e}");
        assert!(
            e.contains("CAP_SYS_RAWIO") && e.contains("SYS_RAWIO\"]"),
            "{e}"
        );
    }
    // A group node this process may not open.
    let group = Sysfs::default().device(&a).unwrap().iommu_group.unwrap();
    let node = ["noiommu-", ""]
        .iter()
        .map(|p| PathBuf::from(format!("/dev/vfio/{p}{group}")))
        .find(|p| p.exists())
        .unwrap();
    let old = fs::metadata(&node).unwrap().permissions();
    fs::set_permissions(&node, fs::Permissions::from_mode(0o000)).unwrap();
    let e = std::thread::spawn(move || {
        drop_caps_on_this_thread(&[CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH]);
        let ctx = VfioContext::new().unwrap();
        ctx.open_device(&a).unwrap_err().to_string()
    })
    .join()
    .unwrap();
    fs::set_permissions(&node, old).unwrap();
    println!("node mode 000: {e}");
    assert!(
        e.contains(&node.display().to_string()) && e.contains("device plugin"),
        "{e}"
    );
}

#[test]
#[ignore = "runs inside the QEMU guest (tests/vfio_vm.rs)"]
fn guest_pod_renamed_noiommu_node() {
    let Some((mode, addrs)) = guest() else { return };
    if mode != "noiommu" || !flag("NICPOLL_TEST_POD_RENAME") {
        println!("pod rename: only in no-IOMMU mode with NICPOLL_TEST_POD_RENAME=1");
        return;
    }
    let sysfs = Sysfs::default();
    let groups: Vec<u32> = addrs
        .iter()
        .map(|a| sysfs.device(a).unwrap().iommu_group.unwrap())
        .collect();
    // As the SR-IOV device plugin mounts them in a pod.
    for g in &groups {
        fs::rename(format!("/dev/vfio/noiommu-{g}"), format!("/dev/vfio/{g}")).unwrap();
    }
    let result = std::panic::catch_unwind(|| {
        // 1. sysfs names the groups vfio-noiommu.
        let ctx = VfioContext::new().unwrap();
        assert_eq!(ctx.iova_mode_for(&addrs).unwrap(), IovaMode::Pa);
        drop(open_all(&ctx, &addrs, "noiommu"));
        drop(ctx);
        // 2. A sysfs without group names (only the links): the container decides.
        let fake = tempfile::tempdir().unwrap();
        for a in &addrs {
            let dir = fake.path().join(format!("sys/bus/pci/devices/{a}"));
            fs::create_dir_all(&dir).unwrap();
            let real = sysfs.device_dir(a);
            for f in ["vendor", "device", "class"] {
                fs::copy(real.join(f), dir.join(f)).unwrap();
            }
            std::os::unix::fs::symlink(
                fs::read_link(real.join("driver")).unwrap(),
                dir.join("driver"),
            )
            .unwrap();
            let g = sysfs.device(a).unwrap().iommu_group.unwrap();
            let gdir = fake.path().join(format!("sys/kernel/iommu_groups/{g}"));
            fs::create_dir_all(&gdir).unwrap();
            std::os::unix::fs::symlink(&gdir, dir.join("iommu_group")).unwrap();
        }
        let ctx = VfioContext::with_config(VfioConfig {
            root: fake.path().to_path_buf(),
            dev_dir: Path::new("/dev/vfio").to_path_buf(),
        })
        .unwrap();
        let d = ctx.open_device(&addrs[0]).unwrap();
        assert_eq!(d.iommu_type(), IommuType::NoIommu);
        println!(
            "pod rename: {} opened through /dev/vfio/{}",
            addrs[0],
            d.group()
        );
    });
    for g in &groups {
        fs::rename(format!("/dev/vfio/{g}"), format!("/dev/vfio/noiommu-{g}")).unwrap();
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// The kernel's log (`/dev/kmsg`, every record so far).
fn kernel_log() -> Vec<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .unwrap();
    let mut lines = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => lines.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_string()),
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue, // overwritten record
            Err(_) => break,                                             // EAGAIN: the end
        }
    }
    lines
}

/// Runs last (tests run in name order with --test-threads=1): what the kernel
/// said about the runs above.
#[test]
#[ignore = "runs inside the QEMU guest (tests/vfio_vm.rs)"]
fn guest_zz_kernel_log() {
    let Some((mode, _)) = guest() else { return };
    let log = kernel_log();
    let faults: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("DMAR") && l.to_lowercase().contains("fault"))
        .collect();
    assert!(faults.is_empty(), "IOMMU faults: {faults:#?}");
    if mode == "noiommu" {
        let opened = log
            .iter()
            .find(|l| l.contains("vfio-noiommu device opened by user"))
            .expect("the kernel logs each no-IOMMU device open");
        println!("kernel log: {}", opened.split(';').nth(1).unwrap_or(opened));
    } else {
        assert!(
            log.iter().any(|l| l.contains("DMAR: IOMMU enabled")),
            "the type1 guest has a vIOMMU"
        );
        println!("kernel log: DMAR enabled, no DMAR faults");
    }
}
