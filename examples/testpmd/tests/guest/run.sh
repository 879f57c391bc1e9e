#!/bin/sh
# Runs inside the harness's guest (examples/testpmd/tests/guest.rs): testpmd drives
# the guest's virtio-net NIC ($NICPOLL_GUEST_BDF, bound to vfio-pci) in one boot:
#   txonly    frames to the host peer
#   rxonly    frames the peer injects, until 200 are counted
#   icmpecho  answers the peer's ARP request and pings
#   podrename (no-IOMMU only) txonly again after /dev/vfio/noiommu-N became /dev/vfio/N
# Each phase is framed by "=== PHASE name BEGIN/EXIT rc" lines; testpmd prints its
# final statistics as JSON (--stats-format json), one object per line. testpmd
# came as a file in /lab, its libraries at their own paths.
cd /lab || exit 1
B=${NICPOLL_GUEST_BDF:?}
phase() {
    name=$1; shift
    echo "=== PHASE $name BEGIN $(cut -d' ' -f1 /proc/uptime)"
    ./testpmd -l 0,1 -a "$B" --file-prefix=np --huge-unlink=always --log-level=info -- \
        --port-topology=loop --stats-format=json "$@"
    echo "=== PHASE $name EXIT $? $(cut -d' ' -f1 /proc/uptime)"
}
phase txonly --forward-mode=txonly --run-time=1
phase rxonly --forward-mode=rxonly --max-packets=200 --run-time=30
phase icmpecho --forward-mode=icmpecho --run-time=3
if [ "$NICPOLL_GUEST_MODE" = noiommu ]; then
    # As the SR-IOV device plugin mounts it in a pod.
    for n in /dev/vfio/noiommu-*; do mv "$n" "/dev/vfio/${n#/dev/vfio/noiommu-}"; done
    echo "pod rename: /dev/vfio now holds $(ls /dev/vfio | tr '\n' ' ')"
    phase podrename --forward-mode=txonly --run-time=1 --tx-ip=198.18.0.1,198.18.0.3
fi
dmesg | grep -E "DMAR: IOMMU enabled|vfio-noiommu device opened by user" | sed 's/^/kernel: /'
echo "=== kernel log: $(dmesg | grep -i dmar | grep -c -i fault) IOMMU fault line(s)"
echo "=== GUEST DONE"
