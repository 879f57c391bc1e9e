#!/bin/sh
# Runs inside the harness's guest (examples/testpmd/tests/guest.rs,
# virtio_jumbo_frames_*): jumbo frames through QEMU's virtio-net, which offers
# VIRTIO_NET_F_MRG_RXBUF, with testpmd's default 2 KiB mbufs, in one boot:
#   txonly    9000-byte frames built as six-segment chains (--txpkts), sent as
#             descriptor chains, to the host peer
#   rxonly    9014-byte frames the peer injects (merged receive buffers) for 2 s,
#             with a statistics event (bytes received) every second
#   icmpecho  answers the peer's ARP request and its 9014-byte pings (a chain in,
#             a chain out)
# Phases are framed as in run.sh; the peer runs with NICPOLL_PEER_JUMBO=1.
cd /lab || exit 1
B=${NICPOLL_GUEST_BDF:?}
phase() {
    name=$1; shift
    echo "=== PHASE $name BEGIN $(cut -d' ' -f1 /proc/uptime)"
    ./testpmd -l 0,1 -a "$B" --file-prefix=np --huge-unlink=always --log-level=info -- \
        --port-topology=loop --stats-format=json "$@"
    echo "=== PHASE $name EXIT $? $(cut -d' ' -f1 /proc/uptime)"
}
phase txonly --forward-mode=txonly --run-time=1 --txpkts=1664,1664,1664,1664,1664,680
phase rxonly --forward-mode=rxonly --run-time=2 --stats-period=1
phase icmpecho --forward-mode=icmpecho --run-time=3
dmesg | grep -E "DMAR: IOMMU enabled|vfio-noiommu device opened by user" | sed 's/^/kernel: /'
echo "=== kernel log: $(dmesg | grep -i dmar | grep -c -i fault) IOMMU fault line(s)"
echo "=== GUEST DONE"
