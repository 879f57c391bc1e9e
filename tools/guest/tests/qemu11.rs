//! The harness's QEMU 11 side, checked against programs we did not write:
//! DPDK 24.11's dpdk-testpmd drives a virtio-net NIC through vfio-pci in
//! no-IOMMU mode and its frames reach a host peer; Linux's iavf.ko loads; and a
//! vfio-user-pci device's socket, in a folder outside the cache, reaches QEMU 11
//! in the chroot, which opens the protocol with its VERSION message. Nothing
//! stays mounted on the host afterwards.

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use nicpoll_guest::{Cache, Emulator, Guest, Mode, Net, Nic, VfioUser};
use nicpoll_testkit::skip;

use common::script;

/// testpmd's accumulated TX-packets.
fn tx_packets(output: &str) -> u64 {
    output
        .lines()
        .filter(|l| l.contains("TX-packets:") && l.contains("TX-dropped:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .next_back()
        .unwrap_or(0)
}

#[test]
fn dpdk_testpmd_24_11_drives_virtio_through_vfio_noiommu_in_qemu11() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(
        dir.path(),
        "dpdk.sh",
        r#"echo "modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
timeout -s INT 6 /opt/dpdk/bin/dpdk-testpmd -l 0,1 -n 1 --in-memory --iova-mode=pa \
    -a "$NICPOLL_GUEST_BDF" -- --forward-mode=txonly --total-num-mbufs=2048 --txd=256 --rxd=256
echo "testpmd-exit=$?"
"#,
    );
    let guest = Guest::new()
        .emulator(Emulator::Qemu11)
        .mode(Mode::NoIommu)
        .nic(Nic::virtio().net(Net::Dgram(dir.path().join("peer.sock"))))
        .dpdk()
        .kmod("iavf")
        .smp(2)
        .program(&prog, Vec::<String>::new())
        .timeout(Duration::from_secs(300));
    if let Some(why) = guest.missing() {
        return skip(why);
    }
    let (out, frames) = common::run_with_peer(&guest, dir.path());
    let o = &out.output;
    assert!(o.contains("testpmd-exit=0"), "{}", out.report());
    assert!(o.contains("EAL: Selected IOVA mode 'PA'"), "{o}");
    assert!(o.contains("modules: iavf "), "Linux's iavf is loaded: {o}");
    let sent = tx_packets(o);
    // txonly's default frames: UDP 198.18.0.1 -> 198.18.0.2.
    let got = frames
        .of_type(0x0800)
        .iter()
        .filter(|f| f.len() >= 34 && f[30..34] == [198, 18, 0, 2])
        .count() as u64;
    eprintln!("dpdk-testpmd sent {sent}, the peer got {got}");
    assert!(got > 0 && got <= sent, "sent {sent}, peer got {got}");
    let cache = Cache::from_env().unwrap();
    let left = common::mounted_under(cache.root());
    assert!(left.is_empty(), "mounts left on the host: {left:?}");
}

#[test]
fn a_vfio_user_socket_outside_the_cache_reaches_qemu11() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("server.sock");
    let prog = script(dir.path(), "never.sh", "echo reached\n");
    let guest = Guest::new()
        .vfio_user(VfioUser::new(&sock))
        .program(&prog, Vec::<String>::new())
        .timeout(Duration::from_secs(120));
    if let Some(why) = guest.missing() {
        return skip(why);
    }
    // A server that reads QEMU's first message and hangs up: QEMU then gives up
    // on the device, so the guest never boots.
    let listener = UnixListener::bind(&sock).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut header = [0u8; 16];
        s.read_exact(&mut header).unwrap();
        let size = u32::from_le_bytes(header[4..8].try_into().unwrap()) as usize;
        let mut payload = vec![0u8; size.saturating_sub(16)];
        s.read_exact(&mut payload).unwrap();
        (header, payload)
    });
    let out = guest.run().expect("the harness starts QEMU");
    let (header, payload) = server.join().unwrap();
    // vfio-user message header: id u16, command u16, size u32, flags u32, error u32;
    // VERSION is command 1, flags 0 (a command), payload major u16, minor u16, JSON.
    assert_eq!(u16::from_le_bytes([header[2], header[3]]), 1, "VERSION");
    assert_eq!(
        u32::from_le_bytes(header[8..12].try_into().unwrap()) & 0xf,
        0
    );
    let json = String::from_utf8_lossy(&payload[4..]);
    assert!(json.contains("\"capabilities\""), "{json}");
    assert_eq!(
        out.status, None,
        "the guest cannot start without its device"
    );
    assert!(!out.output.contains("reached"));
    assert!(
        out.console.contains("vfio-user"),
        "QEMU names the device: {}",
        out.console
    );
    let cache = Cache::from_env().unwrap();
    let left = common::mounted_under(cache.root());
    assert!(left.is_empty(), "mounts left on the host: {left:?}");
}
