//! The VFIO layer against its test twin and fake sysfs trees.

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::Arc;

use vfio_bindings::bindings::vfio as sys;

use super::twin::{Call, Handle, Op, TwinDevice, VfioTwin};
use super::*;
use crate::bar::Bar;
use crate::memory::{DmaMemory, DmaRegion, MemoryConfig};
use crate::pci::fake::{FakeDev, FakeSys};

const E1000E: &str = "0000:00:03.0";
const VIRTIO: &str = "0000:00:04.0";

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn ctx(twin: &Arc<VfioTwin>, sys: &FakeSys) -> Result<VfioContext> {
    VfioContext::with_ops(
        twin.clone(),
        VfioConfig {
            root: sys.root().to_path_buf(),
            dev_dir: PathBuf::from("/dev/vfio"),
        },
    )
}

/// `twin` changed (a failure injected, say) before any context holds it.
fn altered(twin: Arc<VfioTwin>, change: impl FnOnce(VfioTwin) -> VfioTwin) -> Arc<VfioTwin> {
    Arc::new(change(
        Arc::into_inner(twin).expect("no context holds the twin yet"),
    ))
}

/// The error of opening the e1000e at 00:03.0 through `c`, as the user reads it.
fn open_error(c: &VfioContext) -> String {
    c.open_device(&addr(E1000E)).unwrap_err().to_string()
}

fn va_memory() -> DmaMemory {
    DmaMemory::new(MemoryConfig {
        no_huge: true,
        iova_mode: Some(IovaMode::Va),
        ..MemoryConfig::default()
    })
    .unwrap()
}

/// Plain memory that claims these physical page addresses (4 KiB pages).
fn pa_region(what: &str, pages: &[u64]) -> Arc<DmaRegion> {
    Arc::new(DmaRegion::fake_pa(what, pages))
}

/// A type1 host: e1000e at 00:03.0 in group 2 (`/dev/vfio/2`).
fn type1() -> (Arc<VfioTwin>, FakeSys) {
    let twin = VfioTwin::type1()
        .group(2, "2", true)
        .device(2, E1000E, TwinDevice::e1000e());
    let fs = FakeSys::new();
    fs.add(&FakeDev::default());
    (Arc::new(twin), fs)
}

/// A VM in no-IOMMU mode: e1000e at 00:03.0 in group 0 (`/dev/vfio/noiommu-0`).
fn noiommu(node: &str, sysfs_name: bool) -> (Arc<VfioTwin>, FakeSys) {
    let twin = VfioTwin::noiommu()
        .group(0, node, true)
        .device(0, E1000E, TwinDevice::e1000e());
    let fs = FakeSys::new();
    fs.add(&FakeDev {
        group: Some(0),
        noiommu: sysfs_name,
        ..FakeDev::default()
    });
    fs.noiommu_param(true);
    (Arc::new(twin), fs)
}

fn cfg_read(off: u64, len: usize) -> Call {
    Call::ConfigRead {
        device: E1000E.into(),
        offset: off,
        len,
    }
}

fn cfg_write(off: u64, data: &[u8]) -> Call {
    Call::ConfigWrite {
        device: E1000E.into(),
        offset: off,
        data: data.to_vec(),
    }
}

fn container_open() -> Vec<Call> {
    vec![
        Call::Open("/dev/vfio/vfio".into()),
        Call::GetApiVersion,
        Call::CheckExtension(sys::VFIO_TYPE1v2_IOMMU),
        Call::CheckExtension(sys::VFIO_TYPE1_IOMMU),
        Call::CheckExtension(sys::VFIO_NOIOMMU_IOMMU),
    ]
}

fn device_open(group_calls: Vec<Call>) -> Vec<Call> {
    let mut v = group_calls;
    v.push(Call::GetDeviceFd(E1000E.into()));
    v.push(Call::DeviceInfo(E1000E.into()));
    for i in 0..9 {
        v.push(Call::RegionInfo(E1000E.into(), i));
    }
    v.extend([
        cfg_read(0, 4),
        Call::Reset(E1000E.into()),
        cfg_read(4, 2),
        cfg_write(4, &[0x06, 0]),
    ]);
    v
}

#[test]
fn type1_sequence_and_teardown_order() {
    let (twin, fs) = type1();
    let c = ctx(&twin, &fs).unwrap();
    let dev = c.open_device(&addr(E1000E)).unwrap();
    let mut want = container_open();
    want.extend(device_open(vec![
        Call::Open("/dev/vfio/2".into()),
        Call::GroupStatus(2),
        Call::SetContainer(2),
        Call::SetIommu(sys::VFIO_TYPE1v2_IOMMU),
        Call::IommuInfo,
    ]));
    assert_eq!(twin.calls(), want);
    assert_eq!((dev.vendor_id(), dev.device_id()), (0x8086, 0x10d3));
    assert_eq!(dev.iommu_type(), IommuType::Type1v2);
    assert_eq!(c.iommu_type(), Some(IommuType::Type1v2));
    assert!(dev.can_reset());
    assert_eq!(dev.read_config_u16(device::PCI_COMMAND).unwrap(), 0x6);
    assert_eq!(twin.config(E1000E, 4, 2), [0x06, 0]);

    // DMA: IOVA = VA, one mapping for the whole region.
    let mem = va_memory();
    let region = Arc::new(mem.alloc("rings", 8192).unwrap());
    twin.clear_calls();
    c.map_dma(&region).unwrap();
    let va = region.as_ptr() as u64;
    assert_eq!(
        twin.calls(),
        [Call::MapDma {
            vaddr: va,
            iova: va,
            size: 8192
        }]
    );
    assert_eq!(region.iova(0), va);
    assert_eq!(c.dma_mapping_count(), 1);

    // A BAR, then teardown: BAR, device (bus master off, reset, close), DMA,
    // group, container.
    let bar = dev.map_bar(0).unwrap();
    bar.write32(0x3818, 5);
    assert_eq!(bar.read32(0x3818), 5);
    assert_eq!(bar.len(), 0x20000);
    twin.clear_calls();
    drop(bar);
    drop(dev);
    drop(c);
    assert_eq!(
        twin.calls(),
        [
            Call::Munmap { len: 0x20000 },
            cfg_read(4, 2),
            cfg_write(4, &[0x02, 0]),
            Call::Reset(E1000E.into()),
            Call::Close(Handle::Device(E1000E.into())),
            Call::UnmapDma {
                iova: va,
                size: 8192
            },
            Call::UnsetContainer(2),
            Call::Close(Handle::Group(2)),
            Call::Close(Handle::Container),
        ]
    );
    assert!(twin.open_handles().is_empty());
    assert!(twin.dma_mappings().is_empty());
    assert_eq!(twin.live_mmaps(), 0);
}

#[test]
fn noiommu_sequence_uses_physical_addresses_and_no_map_dma() {
    let (twin, fs) = noiommu("noiommu-0", true);
    let c = ctx(&twin, &fs).unwrap();
    assert_eq!(c.iova_mode_for(&[addr(E1000E)]).unwrap(), IovaMode::Pa);
    let dev = c.open_device(&addr(E1000E)).unwrap();
    let mut want = container_open();
    want.extend(vec![
        Call::Open("/dev/vfio/noiommu-0".into()),
        Call::GroupStatus(0),
        Call::SetContainer(0),
        Call::SetIommu(sys::VFIO_NOIOMMU_IOMMU),
    ]);
    // iova_mode_for attached the group; open_device reuses it.
    let got = twin.calls();
    assert_eq!(got[..want.len()], want[..]);
    assert_eq!(got[want.len()..], device_open(vec![])[..]);
    assert_eq!(dev.iommu_type(), IommuType::NoIommu);

    // Memory must be in PA mode; no MAP_DMA is issued.
    let mem = va_memory();
    let region = Arc::new(mem.alloc("rings", 4096).unwrap());
    let e = c.map_dma(&region).unwrap_err().to_string();
    assert!(
        e.contains("--iova-mode=pa") && e.contains("physical addresses"),
        "{e}"
    );
    assert_eq!(c.dma_mapping_count(), 0);
    c.map_dma(&pa_region("pool", &[0x1000_0000])).unwrap();
    assert!(
        !twin
            .calls()
            .iter()
            .any(|c| matches!(c, Call::MapDma { .. }))
    );
    // Nothing was mapped, but the context holds the region for the device.
    assert_eq!(c.dma_mapping_count(), 1);
    twin.clear_calls();
    drop(dev);
    drop(c);
    let calls = twin.calls();
    assert!(!calls.iter().any(|c| matches!(c, Call::UnmapDma { .. })));
    assert_eq!(
        calls[calls.len() - 3..],
        [
            Call::UnsetContainer(0),
            Call::Close(Handle::Group(0)),
            Call::Close(Handle::Container)
        ]
    );
    assert!(twin.open_handles().is_empty());
}

#[test]
fn pod_rename_noiommu_node_is_found_as_plain_number() {
    // The device plugin mounted the node's noiommu-0 as /dev/vfio/0; sysfs names the
    // group vfio-noiommu.
    let (twin, fs) = noiommu("0", true);
    let c = ctx(&twin, &fs).unwrap();
    let dev = c.open_device(&addr(E1000E)).unwrap();
    assert_eq!(dev.iommu_type(), IommuType::NoIommu);
    assert!(twin.calls().contains(&Call::Open("/dev/vfio/0".into())));
    assert!(
        twin.calls()
            .contains(&Call::SetIommu(sys::VFIO_NOIOMMU_IOMMU))
    );

    // No sysfs name: the container, which offers only no-IOMMU, decides.
    let (twin, fs) = noiommu("0", false);
    let c = ctx(&twin, &fs).unwrap();
    assert_eq!(
        c.open_device(&addr(E1000E)).unwrap().iommu_type(),
        IommuType::NoIommu
    );

    // A container that offers both: a plain-named group without the name is a
    // real IOMMU group; with the name it is a no-IOMMU one.
    for (name, want) in [(false, IommuType::Type1v2), (true, IommuType::NoIommu)] {
        let twin = Arc::new(
            VfioTwin::with_types(&[sys::VFIO_TYPE1v2_IOMMU, sys::VFIO_NOIOMMU_IOMMU])
                .group(0, "0", true)
                .device(0, E1000E, TwinDevice::e1000e()),
        );
        let fs = FakeSys::new();
        fs.add(&FakeDev {
            group: Some(0),
            noiommu: name,
            ..FakeDev::default()
        });
        let c = ctx(&twin, &fs).unwrap();
        assert_eq!(c.open_device(&addr(E1000E)).unwrap().iommu_type(), want);
    }
}

#[test]
fn twin_rename_between_contexts() {
    let (twin, fs) = noiommu("noiommu-0", true);
    drop(ctx(&twin, &fs).unwrap().open_device(&addr(E1000E)).unwrap());
    twin.rename_node("noiommu-0", "0");
    let c = ctx(&twin, &fs).unwrap();
    let d = c.open_device(&addr(E1000E)).unwrap();
    assert_eq!(d.iommu_type(), IommuType::NoIommu);
}

#[test]
fn missing_rawio_capability_names_the_pod_setting() {
    let check = |e: String| {
        assert!(
            e.contains("CAP_SYS_RAWIO")
                && e.contains(r#"capabilities: add: ["SYS_RAWIO"]"#)
                && e.contains("privileged: true"),
            "{e}"
        )
    };
    // EPERM on VFIO_SET_IOMMU(NOIOMMU).
    let (twin, fs) = noiommu("noiommu-0", true);
    let twin = altered(twin, |t| t.fail(Op::SetIommu, libc::EPERM));
    let c = ctx(&twin, &fs).unwrap();
    let e = open_error(&c);
    check(e.clone());
    assert!(e.contains("VFIO_SET_IOMMU(VFIO_NOIOMMU_IOMMU)"), "{e}");
    // The group was detached and closed; the container type is not set.
    assert_eq!(twin.iommu(), None);
    assert_eq!(twin.open_handles(), [Handle::Container]);
    drop(c);
    assert!(twin.open_handles().is_empty());

    // EPERM opening the no-IOMMU group node.
    let (twin, fs) = noiommu("noiommu-0", true);
    let twin = altered(twin, |t| t.fail_open("/dev/vfio/noiommu-0", libc::EPERM));
    let c = ctx(&twin, &fs).unwrap();
    let e = open_error(&c);
    check(e.clone());
    assert!(e.contains("open /dev/vfio/noiommu-0"), "{e}");

    // EPERM on GET_DEVICE_FD of a no-IOMMU device.
    let (twin, fs) = noiommu("0", true);
    let twin = altered(twin, |t| t.fail(Op::GetDeviceFd, libc::EPERM));
    let c = ctx(&twin, &fs).unwrap();
    check(open_error(&c));
}

#[test]
fn access_and_missing_node_errors_name_the_file_and_fix() {
    let (twin, fs) = type1();
    let twin = altered(twin, |t| t.fail_open("/dev/vfio/2", libc::EACCES));
    let e = open_error(&ctx(&twin, &fs).unwrap());
    assert!(
        e.contains("/dev/vfio/2") && e.contains("Permission denied") && e.contains("device plugin"),
        "{e}"
    );

    // No node at all (a pod without the plugin's mount).
    let twin = Arc::new(VfioTwin::type1().group(2, "2", true));
    twin.rename_node("2", "elsewhere");
    let e = open_error(&ctx(&twin, &fs).unwrap());
    assert!(
        e.contains("/dev/vfio/2")
            && e.contains("/dev/vfio/noiommu-2")
            && e.contains("device plugin"),
        "{e}"
    );

    // No container node.
    let twin = Arc::new(VfioTwin::type1().fail_open("/dev/vfio/vfio", libc::ENOENT));
    let e = ctx(&twin, &fs).unwrap_err().to_string();
    assert!(
        e.contains("/dev/vfio/vfio") && e.contains("modprobe vfio-pci"),
        "{e}"
    );

    // The group is in use by another process (the twin's EBUSY on a second open).
    let (twin, fs) = type1();
    let c1 = ctx(&twin, &fs).unwrap();
    let _d1 = c1.open_device(&addr(E1000E)).unwrap();
    let e = open_error(&ctx(&twin, &fs).unwrap());
    assert!(e.contains("another process"), "{e}");
}

#[test]
fn non_viable_group_lists_its_devices() {
    let twin = Arc::new(VfioTwin::type1().group(2, "2", false).device(
        2,
        E1000E,
        TwinDevice::e1000e(),
    ));
    let fs = FakeSys::new();
    fs.add(&FakeDev::default());
    fs.add(&FakeDev {
        bdf: "0000:00:03.1",
        driver: Some("e1000e"),
        ..FakeDev::default()
    });
    let c = ctx(&twin, &fs).unwrap();
    let e = open_error(&c);
    assert!(
        e.contains("not viable")
            && e.contains("0000:00:03.0 (vfio-pci)")
            && e.contains("0000:00:03.1 (e1000e)")
            && e.contains("testpmd bind 0000:00:03.1"),
        "{e}"
    );
    assert_eq!(twin.open_handles(), [Handle::Container]);
}

#[test]
fn device_not_bound_to_vfio_pci_is_refused_with_the_bind_command() {
    let twin = Arc::new(VfioTwin::type1().group(2, "2", true));
    let fs = FakeSys::new();
    fs.add(&FakeDev {
        driver: Some("e1000e"),
        ..FakeDev::default()
    });
    let c = ctx(&twin, &fs).unwrap();
    let e = open_error(&c);
    assert!(
        e.contains("kernel driver e1000e")
            && e.contains("testpmd bind 0000:00:03.0")
            && e.contains("echo vfio-pci > /sys/bus/pci/devices/0000:00:03.0/driver_override")
            && e.contains("echo 0000:00:03.0 > /sys/bus/pci/drivers_probe"),
        "{e}"
    );
    assert!(!twin.calls().contains(&Call::Open("/dev/vfio/2".into())));
    let e = c.open_device(&addr("00:09.0")).unwrap_err().to_string();
    assert!(e.contains("no such device"), "{e}");
}

#[test]
fn type1_without_interrupt_remapping_and_memlock_errors() {
    let (twin, fs) = type1();
    let twin = altered(twin, |t| t.fail(Op::SetIommu, libc::EPERM));
    let e = open_error(&ctx(&twin, &fs).unwrap());
    assert!(
        e.contains("interrupt remapping") && e.contains("allow_unsafe_interrupts=1"),
        "{e}"
    );

    let (twin, fs) = type1();
    let twin = altered(twin, |t| t.fail(Op::MapDma, libc::ENOMEM));
    let c = ctx(&twin, &fs).unwrap();
    let _d = c.open_device(&addr(E1000E)).unwrap();
    let mem = va_memory();
    let r = Arc::new(mem.alloc("mbuf pool", 4096).unwrap());
    let e = c.map_dma(&r).unwrap_err().to_string();
    assert!(
        e.contains("VFIO_IOMMU_MAP_DMA mbuf pool")
            && e.contains("IPC_LOCK")
            && e.contains("ulimit -l"),
        "{e}"
    );
    assert_eq!(c.dma_mapping_count(), 0);
}

#[test]
fn bad_api_version_or_no_iommu_type_is_refused() {
    let fs = FakeSys::new();
    let twin = Arc::new(VfioTwin::type1().api_version(1));
    let e = ctx(&twin, &fs).unwrap_err().to_string();
    assert!(e.contains("API version 1"), "{e}");
    assert!(twin.open_handles().is_empty());

    fs.noiommu_param(false);
    let twin = Arc::new(VfioTwin::with_types(&[]));
    let e = ctx(&twin, &fs).unwrap_err().to_string();
    assert!(
        e.contains("no usable IOMMU type") && e.contains("enable_unsafe_noiommu_mode"),
        "{e}"
    );
    assert!(twin.open_handles().is_empty());
}

#[test]
fn every_failure_point_leaves_nothing_open() {
    for op in [
        Op::GroupStatus,
        Op::SetContainer,
        Op::SetIommu,
        Op::GetDeviceFd,
        Op::DeviceInfo,
        Op::RegionInfo,
        Op::Pread,
        Op::Pwrite,
    ] {
        let (twin, fs) = type1();
        let twin = altered(twin, |t| t.fail(op, libc::EIO));
        let c = ctx(&twin, &fs).unwrap();
        let e = open_error(&c);
        let config_op = match op {
            Op::Pread => Some("pread config space 0000:00:03.0 at 0x"),
            Op::Pwrite => Some("pwrite config space 0000:00:03.0 at 0x"),
            _ => None,
        };
        if let Some(config_op) = config_op {
            assert!(
                e.contains(config_op) && e.contains("Input/output error"),
                "{op:?}: {e}"
            );
        }
        drop(c);
        assert!(
            twin.open_handles().is_empty(),
            "{op:?}: {:?}",
            twin.open_handles()
        );
        assert_eq!(twin.iommu(), None, "{op:?}");
        assert_eq!(
            twin.calls().last(),
            Some(&Call::Close(Handle::Container)),
            "{op:?}"
        );
    }
    // IOMMU info failing is not fatal (the aperture is just unknown).
    let (twin, fs) = type1();
    let twin = altered(twin, |t| t.fail(Op::IommuInfo, libc::EIO));
    let c = ctx(&twin, &fs).unwrap();
    c.open_device(&addr(E1000E)).unwrap();
    assert_eq!(c.iommu_info(), None);
    // A BAR that fails to map leaves the device usable and closes cleanly.
    let (twin, fs) = type1();
    let twin = altered(twin, |t| t.fail(Op::Mmap, libc::ENOMEM));
    let c = ctx(&twin, &fs).unwrap();
    let d = c.open_device(&addr(E1000E)).unwrap();
    let e = d.map_bar(0).unwrap_err().to_string();
    assert!(e.contains("mmap 0000:00:03.0 BAR0"), "{e}");
    drop((d, c));
    assert!(twin.open_handles().is_empty());
    // A failed reset at open is not fatal either.
    let (twin, fs) = type1();
    let twin = altered(twin, |t| t.fail(Op::Reset, libc::EIO));
    drop(ctx(&twin, &fs).unwrap().open_device(&addr(E1000E)).unwrap());
    assert!(twin.open_handles().is_empty());
}

#[test]
fn several_groups_and_devices_share_one_container() {
    let twin = Arc::new(
        VfioTwin::type1()
            .group(2, "2", true)
            .device(2, E1000E, TwinDevice::e1000e())
            .device(2, "0000:00:03.1", TwinDevice::e1000e())
            .group(3, "3", true)
            .device(3, VIRTIO, TwinDevice::virtio_net()),
    );
    let fs = FakeSys::new();
    fs.add(&FakeDev::default());
    fs.add(&FakeDev {
        bdf: "0000:00:03.1",
        ..FakeDev::default()
    });
    fs.add(&FakeDev {
        bdf: VIRTIO,
        group: Some(3),
        vendor: 0x1af4,
        device: 0x1041,
        ..FakeDev::default()
    });
    let c = ctx(&twin, &fs).unwrap();
    let mem = va_memory();
    let r = Arc::new(mem.alloc("pool", 4096).unwrap());
    let d0 = c.open_device(&addr(E1000E)).unwrap();
    c.map_dma(&r).unwrap();
    let d1 = c.open_device(&addr("0000:00:03.1")).unwrap();
    let v = c.open_device(&addr(VIRTIO)).unwrap();
    assert_eq!(
        (v.vendor_id(), v.device_id(), v.can_reset()),
        (0x1af4, 0x1041, false)
    );
    let calls = twin.calls();
    let count = |f: &dyn Fn(&Call) -> bool| calls.iter().filter(|c| f(c)).count();
    assert_eq!(count(&|c| matches!(c, Call::SetIommu(_))), 1);
    assert_eq!(count(&|c| *c == Call::Open("/dev/vfio/2".into())), 1);
    assert_eq!(count(&|c| matches!(c, Call::SetContainer(_))), 2);
    assert_eq!(count(&|c| matches!(c, Call::MapDma { .. })), 1);
    assert!(!calls.contains(&Call::Reset(VIRTIO.into())));
    // virtio: BAR4 maps; BAR0 does not exist.
    assert_eq!(v.map_bar(4).unwrap().len(), 0x4000);
    assert!(
        v.map_bar(0)
            .unwrap_err()
            .to_string()
            .contains("no such BAR")
    );
    twin.clear_calls();
    drop(c); // devices keep the context alive
    assert!(twin.calls().is_empty());
    drop((d0, d1, v));
    let calls = twin.calls();
    let pos = |want: &Call| calls.iter().position(|c| c == want).unwrap();
    let last_dev = pos(&Call::Close(Handle::Device(VIRTIO.into())));
    assert!(
        last_dev
            < calls
                .iter()
                .position(|c| matches!(c, Call::UnmapDma { .. }))
                .unwrap()
    );
    assert!(pos(&Call::UnsetContainer(2)) < pos(&Call::Close(Handle::Container)));
    assert!(pos(&Call::UnsetContainer(3)) < pos(&Call::Close(Handle::Container)));
    assert!(twin.open_handles().is_empty());
}

#[test]
fn groups_with_and_without_iommu_cannot_share_a_container() {
    let twin = Arc::new(
        VfioTwin::with_types(&[sys::VFIO_TYPE1v2_IOMMU, sys::VFIO_NOIOMMU_IOMMU])
            .group(2, "2", true)
            .device(2, E1000E, TwinDevice::e1000e())
            .group(0, "noiommu-0", true)
            .device(0, VIRTIO, TwinDevice::virtio_net()),
    );
    let fs = FakeSys::new();
    fs.add(&FakeDev::default());
    fs.add(&FakeDev {
        bdf: VIRTIO,
        group: Some(0),
        noiommu: true,
        ..FakeDev::default()
    });
    let c = ctx(&twin, &fs).unwrap();
    let _d = c.open_device(&addr(E1000E)).unwrap();
    let e = c.open_device(&addr(VIRTIO)).unwrap_err().to_string();
    assert!(e.contains("cannot share"), "{e}");
    let e = c.iova_mode_for(&[addr(VIRTIO)]).unwrap_err().to_string();
    assert!(e.contains("cannot share"), "{e}");
}

#[test]
fn bars_map_only_when_allowed_and_keep_the_device_open() {
    let twin = Arc::new(VfioTwin::type1().group(2, "2", true).device(
        2,
        E1000E,
        TwinDevice::e1000e().with_sparse_bar(3, vec![(0, 0x2000), (0x3000, 0x1000)]),
    ));
    let fs = FakeSys::new();
    fs.add(&FakeDev::default());
    let c = ctx(&twin, &fs).unwrap();
    let d = c.open_device(&addr(E1000E)).unwrap();
    let e = d.map_bar(2).unwrap_err().to_string();
    assert!(e.contains("does not allow mmap"), "{e}");
    assert!(d.map_bar(6).is_err() && d.map_bar(7).is_err());
    assert_eq!(d.region(2).unwrap().size, 0x20);
    assert!(d.region(8).is_none());
    let bar3 = d.map_bar(3).unwrap();
    assert!(twin.calls().contains(&Call::Mmap {
        device: E1000E.into(),
        index: 3,
        len: 0x4000,
        sparse: true
    }));
    let bar0 = d.map_bar(0).unwrap();
    bar0.write16(0x10, 0xbeef);
    bar0.write8(0x12, 0x7f);
    assert_eq!(bar0.read32(0x10), 0x007f_beef);
    assert_eq!(bar0.index(), 0);
    // The device outlives its handle while a BAR is mapped.
    twin.clear_calls();
    drop(d);
    drop(bar3);
    assert!(!twin.calls().contains(&Call::Reset(E1000E.into())));
    drop(bar0);
    let calls = twin.calls();
    assert_eq!(
        calls.last(),
        Some(&Call::Close(Handle::Device(E1000E.into())))
    );
    drop(c);
    assert!(twin.open_handles().is_empty());
}

#[test]
fn narrow_iommu_aperture_selects_pa_and_refuses_va() {
    let twin = Arc::new(
        VfioTwin::type1()
            .group(2, "2", true)
            .device(2, E1000E, TwinDevice::e1000e())
            .iova_ranges(vec![(0, 0xfedf_ffff), (0xfef0_0000, 0x7f_ffff_ffff)]),
    );
    let fs = FakeSys::new();
    fs.add(&FakeDev::default());
    let c = ctx(&twin, &fs).unwrap();
    assert_eq!(c.iova_mode_for(&[addr(E1000E)]).unwrap(), IovaMode::Pa);
    let _d = c.open_device(&addr(E1000E)).unwrap();
    let mem = va_memory();
    let r = Arc::new(mem.alloc("rings", 4096).unwrap());
    if r.as_ptr() as u64 > 0x7f_ffff_ffff {
        let e = c.map_dma(&r).unwrap_err().to_string();
        assert!(
            e.contains("outside the IOMMU's usable ranges")
                && e.contains("39-bit")
                && e.contains("--iova-mode=pa")
                && e.contains("aw-bits=48"),
            "{e}"
        );
    }
    // Type1 with physical addresses: IOVA = PA, one mapping per contiguous run.
    twin.clear_calls();
    let pool = pa_region(
        "pool",
        &[
            0x1000_0000,
            0x1000_1000,
            0x1000_2000,
            0x1000_3000,
            0x3000_0000,
        ],
    );
    c.map_dma(&pool).unwrap();
    let va = pool.as_ptr() as u64;
    assert_eq!(
        twin.calls(),
        [
            Call::MapDma {
                vaddr: va,
                iova: 0x1000_0000,
                size: 0x4000
            },
            Call::MapDma {
                vaddr: va + 0x4000,
                iova: 0x3000_0000,
                size: 0x1000
            },
        ]
    );
    // A failure half way undoes the part already mapped.
    twin.clear_calls();
    let other = pa_region("other", &[0x5000_0000, 0x1000_0000]);
    let e = c.map_dma(&other).unwrap_err().to_string();
    assert!(e.contains("overlaps"), "{e}");
    assert_eq!(
        twin.calls().last(),
        Some(&Call::UnmapDma {
            iova: 0x5000_0000,
            size: 0x1000
        })
    );
    assert_eq!(c.dma_mapping_count(), 2);
}

#[test]
fn mappings_before_the_first_device_wait_for_the_iommu_type() {
    let (twin, fs) = type1();
    let c = ctx(&twin, &fs).unwrap();
    let mem = va_memory();
    let r = Arc::new(mem.alloc("early", 4096).unwrap());
    c.map_dma(&r).unwrap();
    assert_eq!(c.dma_mapping_count(), 1);
    assert!(
        !twin
            .calls()
            .iter()
            .any(|c| matches!(c, Call::MapDma { .. }))
    );
    let _d = c.open_device(&addr(E1000E)).unwrap();
    let calls = twin.calls();
    let map = calls
        .iter()
        .position(|c| matches!(c, Call::MapDma { .. }))
        .unwrap();
    let set = calls
        .iter()
        .position(|c| matches!(c, Call::SetIommu(_)))
        .unwrap();
    let get = calls
        .iter()
        .position(|c| matches!(c, Call::GetDeviceFd(_)))
        .unwrap();
    assert!(set < map && map < get);
    c.unmap_dma(&r).unwrap();
    assert_eq!(c.dma_mapping_count(), 0);
    assert!(twin.dma_mappings().is_empty());

    // A VA mapping waiting for a no-IOMMU container fails the open cleanly.
    let (twin, fs) = noiommu("noiommu-0", true);
    let c = ctx(&twin, &fs).unwrap();
    c.map_dma(&r).unwrap();
    let e = open_error(&c);
    assert!(e.contains("--iova-mode=pa"), "{e}");
    assert_eq!(twin.iommu(), None);
    assert_eq!(twin.open_handles(), [Handle::Container]);
}

#[test]
fn dc_memory_is_refused() {
    let (twin, fs) = type1();
    let c = ctx(&twin, &fs).unwrap();
    let mem = DmaMemory::plain();
    let r = Arc::new(mem.alloc("sw", 4096).unwrap());
    let e = c.map_dma(&r).unwrap_err().to_string();
    assert!(
        e.contains("IOVA mode DC") && e.contains("iova_mode_for"),
        "{e}"
    );
}

#[test]
fn config_space_bus_master_and_irqs() {
    let (twin, fs) = type1();
    let c = ctx(&twin, &fs).unwrap();
    let d = c.open_device(&addr(E1000E)).unwrap();
    assert_eq!(d.read_config_u32(0).unwrap(), 0x10d3_8086);
    assert_eq!(d.set_bus_master(false).unwrap(), 0x2);
    assert_eq!(d.set_bus_master(true).unwrap(), 0x6);
    d.write_config_u32(0x40, 0xdead_beef).unwrap();
    assert_eq!(twin.config(E1000E, 0x40, 4), 0xdead_beefu32.to_le_bytes());
    let e = d.read_config_u32(0xffe).unwrap_err().to_string();
    assert!(e.contains("outside its 4096 bytes"), "{e}");
    assert_eq!(d.irq_info(2).unwrap().count, 5);
    let ev = std::fs::File::open("/dev/null").unwrap();
    let fds = [Some(ev.as_fd()), None];
    d.set_irq_eventfds(2, 0, &fds).unwrap();
    d.disable_irqs(2).unwrap();
    assert!(twin.calls().contains(&Call::SetIrqs {
        device: E1000E.into(),
        index: 2,
        start: 0,
        fds: vec![ev.as_raw_fd(), -1]
    }));
    let e = d.set_irq_eventfds(1, 0, &fds).unwrap_err().to_string();
    assert!(
        e.contains("VFIO_DEVICE_SET_IRQS 0000:00:03.0 index 1"),
        "{e}"
    );
    let dbg = format!("{d:?} {c:?}");
    assert!(
        dbg.contains("8086:10d3") && dbg.contains("Type1v2"),
        "{dbg}"
    );
}

#[test]
fn a_mapping_keeps_its_memory_until_unmapped_or_the_devices_are_gone() {
    // No IOMMU: the device reaches the memory by physical address, and only the
    // context's hold keeps those pages from going back to the system.
    let (twin, fs) = noiommu("noiommu-0", true);
    let c = ctx(&twin, &fs).unwrap();
    let dev = c.open_device(&addr(E1000E)).unwrap();
    let region = pa_region("rings", &[0x1000_0000]);
    let held = Arc::downgrade(&region);
    c.map_dma(&region).unwrap();
    drop(region);
    assert!(
        held.upgrade().is_some(),
        "freed while a device may still DMA into it"
    );
    c.unmap_dma(&held.upgrade().unwrap()).unwrap();
    assert!(held.upgrade().is_none(), "unmap_dma lets it go");

    // Never unmapped: it goes after the context and its last device.
    let region = pa_region("pool", &[0x2000_0000]);
    let held = Arc::downgrade(&region);
    c.map_dma(&region).unwrap();
    drop(region);
    drop(c);
    assert!(
        held.upgrade().is_some(),
        "the open device keeps the context"
    );
    drop(dev);
    assert!(held.upgrade().is_none());
    assert!(twin.open_handles().is_empty());

    // With an IOMMU too, until UNMAP_DMA.
    let (twin, fs) = type1();
    let c = ctx(&twin, &fs).unwrap();
    let _d = c.open_device(&addr(E1000E)).unwrap();
    let region = Arc::new(va_memory().alloc("rings", 4096).unwrap());
    let held = Arc::downgrade(&region);
    c.map_dma(&region).unwrap();
    drop(region);
    assert!(held.upgrade().is_some());
    assert_eq!(twin.dma_mappings().len(), 1);
    c.unmap_dma(&held.upgrade().unwrap()).unwrap();
    assert!(held.upgrade().is_none() && twin.dma_mappings().is_empty());
}

#[test]
fn twin_descriptors_are_real_and_all_given_back() {
    let (twin, fs) = type1();
    let c = ctx(&twin, &fs).unwrap();
    let d = c.open_device(&addr(E1000E)).unwrap();
    assert_eq!(
        twin.open_handles(),
        [
            Handle::Container,
            Handle::Group(2),
            Handle::Device(E1000E.into())
        ]
    );
    drop((d, c));
    assert!(twin.open_handles().is_empty());
}
