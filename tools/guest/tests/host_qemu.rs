//! The harness on the host's QEMU, checked against what the guest's Linux says
//! and does: the VFIO modes as the kernel reports them, devices bound to
//! vfio-pci, hugetlbfs, the program's arguments, environment and exit status,
//! and frames from Linux's own NIC drivers on each kind of network (a unix
//! datagram peer, a pcap file, a tap in a network namespace answered by its
//! Linux stack).

mod common;

use std::process::Command;
use std::time::Duration;

use nicpoll_guest::{Driver, Guest, Mode, Net, Nic};
use nicpoll_testkit::skip;

use common::script;

#[test]
fn type1_binds_to_vfio_pci_behind_an_iommu_and_returns_the_program_status() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(
        dir.path(),
        "check.sh",
        r#"d=/sys/bus/pci/devices/$NICPOLL_GUEST_BDF
echo "bdf=$NICPOLL_GUEST_BDF mode=$NICPOLL_GUEST_MODE"
echo "driver=$(basename "$(readlink $d/driver)") group=$(basename "$(readlink $d/iommu_group)")"
echo "nodes=$(ls /dev/vfio | tr '\n' ' ')"
echo "hugepages=$(cat /proc/sys/vm/nr_hugepages) hugetlbfs=$(grep -c ' /dev/hugepages hugetlbfs ' /proc/mounts)"
echo "arg1=$1|arg2=$2|greeting=$GREETING"
dmesg | grep -E 'DMAR: IOMMU enabled|DMAR-IR: Enabled IRQ remapping' | sed 's/^\[[ .0-9]*\] /kernel: /'
exit 7
"#,
    );
    let guest = Guest::new()
        .mode(Mode::Type1)
        .nic(Nic::e1000e())
        .env("GREETING", "it's \"quoted\"")
        .program(&prog, ["two words", "$HOME"])
        .timeout(Duration::from_secs(240));
    if let Some(why) = guest.missing() {
        return skip(why);
    }
    let out = guest.run().expect("the harness runs");
    assert_eq!(out.status, Some(7), "{}", out.report());
    let o = &out.output;
    assert!(o.contains("bdf=0000:00:03.0 mode=type1"), "{o}");
    let group = common::value_of(o, "group=");
    assert!(o.contains("driver=vfio-pci"), "{o}");
    assert!(
        o.contains(&format!("nodes={group} vfio")),
        "the group's node: {o}"
    );
    assert!(o.contains("hugepages=64 hugetlbfs=1"), "{o}");
    assert!(
        o.contains("arg1=two words|arg2=$HOME|greeting=it's \"quoted\""),
        "{o}"
    );
    assert!(o.contains("kernel: DMAR: IOMMU enabled"), "{o}");
    assert!(o.contains("kernel: DMAR-IR: Enabled IRQ remapping"), "{o}");
    assert!(
        out.console
            .contains("[guest] 0000:00:03.0 0x8086:0x10d3 -> vfio-pci")
    );
}

/// A tap interface in a network namespace of its own, deleted on drop.
struct TapNetns {
    name: &'static str,
    _lock: nicpoll_testkit::NameLock,
}

impl TapNetns {
    fn new(name: &'static str, tap: &str, addr: &str) -> TapNetns {
        let lock = nicpoll_testkit::lock_name(name);
        let ip = |args: &[&str]| {
            let s = Command::new("ip").args(args).status().expect("ip");
            assert!(s.success(), "ip {args:?}");
        };
        // A namespace an interrupted run left behind.
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", name]);
        let ns = TapNetns { name, _lock: lock };
        ip(&["-n", name, "tuntap", "add", "dev", tap, "mode", "tap"]);
        ip(&["-n", name, "addr", "add", addr, "dev", tap]);
        ip(&["-n", name, "link", "set", tap, "up"]);
        ns
    }
}

impl Drop for TapNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", self.name])
            .status();
    }
}

#[test]
fn noiommu_and_the_networks_carry_linux_drivers_frames() {
    if !nicpoll_testkit::is_root() {
        return skip("root: the test makes a network namespace with a tap");
    }
    if let Some(t) = nicpoll_testkit::missing_command(&["ip"]) {
        return skip(format!("{t} (apt-get install iproute2)"));
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("pcap");
    let prog = script(
        dir.path(),
        "nets.sh",
        r#"echo "noiommu=$(cat /sys/module/vfio/parameters/enable_unsafe_noiommu_mode) nodes=$(ls /dev/vfio | tr '\n' ' ')"
# The netdev of a PCI function (virtio's sits below its virtio device).
netdev() { basename "$(ls -d /sys/bus/pci/devices/$1/net/* /sys/bus/pci/devices/$1/virtio*/net/* 2>/dev/null)"; }
up() {
    ip link set "$1" up; ip addr add "$2" dev "$1"
    n=0; while [ $n -lt 20 ] && [ "$(cat /sys/class/net/$1/carrier)" != 1 ]; do sleep 0.5; n=$((n+1)); done
}
set -- $NICPOLL_GUEST_KERNEL_BDFS
dgram=$(netdev $1); tap=$(netdev $2)
echo "dgram-mac=$(cat /sys/class/net/$dgram/address)"
up "$dgram" 10.0.2.15/24
up "$tap" 10.9.0.15/24
ping -c 1 -W 1 10.0.2.2 > /dev/null
ping -c 3 -W 3 10.9.0.2; echo "tap-ping=$?"
"#,
    );
    let ns = "nicpoll-guest-selftest";
    let guest = Guest::new()
        .mode(Mode::NoIommu)
        .nic(Nic::e1000e())
        .nic(
            Nic::virtio()
                .driver(Driver::Kernel)
                .net(Net::Dgram(dir.path().join("peer.sock"))),
        )
        .nic(Nic::e1000e().driver(Driver::Kernel).net(Net::Tap {
            ifname: "ngtap0".into(),
            netns: Some(ns.into()),
        }))
        .pcap(&pcap)
        .program(&prog, Vec::<String>::new())
        .timeout(Duration::from_secs(240));
    let _tap = TapNetns::new(ns, "ngtap0", "10.9.0.2/24");
    if let Some(why) = guest.missing() {
        return skip(why);
    }
    let (out, frames) = common::run_with_peer(&guest, dir.path());
    let o = &out.output;
    assert!(o.contains("noiommu=Y nodes=noiommu-0 vfio"), "{o}");
    assert!(o.contains("tap-ping=0"), "the netns answered: {o}");
    // Linux's virtio_net asked for 10.0.2.2 over the datagram socket, from its MAC.
    let mac = common::value_of(o, "dgram-mac=");
    let mac: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let arps = frames.of_type(0x0806);
    assert!(
        arps.iter()
            .any(|f| f[6..12] == mac[..] && f[38..42] == [10, 0, 2, 2]),
        "an ARP request for 10.0.2.2 from {mac:02x?} among {} frames",
        frames.frames.len()
    );
    // QEMU's filter-dump saw the same frames leave the NIC.
    let dumped = common::pcap_records(&pcap.join("nic1.pcap"));
    assert!(
        dumped.iter().any(|f| arps.contains(&f)),
        "the pcap holds the peer's ARP frames"
    );
    assert!(
        !common::pcap_records(&pcap.join("nic2.pcap")).is_empty(),
        "the tap NIC's frames are dumped too"
    );
}
