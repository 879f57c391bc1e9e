#!/bin/sh
# Runs in the guest of examples/nicpoll-vf/tests/guest.rs, one boot, both VFs
# bound to vfio-pci in no-IOMMU mode:
#   dpdk-io / dpdk-txonly   dpdk-testpmd 24.11 (net_iavf): io forwarding
#                           between the VFs (--tx-first), then txonly to a
#                           host MAC behind the PF's uplink
#   doctor                  the group nodes renamed /dev/vfio/N as in a pod;
#                           nicpoll's testpmd doctor -a both VFs
#   np-io / np-txonly       nicpoll's testpmd, the same two runs, on hugepages
# Each phase is framed by "=== PHASE name BEGIN/EXIT rc" lines.
cd /lab || exit 1
set -- ${NICPOLL_GUEST_BDFS:?two VFs bound to vfio-pci}
A=$1; B=$2
V0=02:00:00:56:46:00; V1=02:00:00:56:46:01
HOST_DPDK=${HOST_DPDK:?}; HOST_NP=${HOST_NP:?}; SECS=${SECS:-6}
phase() { echo "=== PHASE $1 BEGIN $(cut -d' ' -f1 /proc/uptime)"; }
done_() { echo "=== PHASE $1 EXIT $2 $(cut -d' ' -f1 /proc/uptime)"; }
dpdk() {
    name=$1; shift
    phase "$name"
    timeout -s INT "$SECS" /opt/dpdk/bin/dpdk-testpmd -l 0,1 -n 1 --in-memory --iova-mode=pa \
        -a "$A" -a "$B" -- --total-num-mbufs=8192 --txd=512 --rxd=512 "$@"
    done_ "$name" $?
}
np() {
    name=$1; shift
    phase "$name"
    ./testpmd -l 0,1 -a "$A" -a "$B" --file-prefix=np --huge-unlink=always --log-level=info -- \
        --txd=512 --rxd=512 --run-time=$((SECS - 2)) "$@"
    done_ "$name" $?
}
dpdk dpdk-io --forward-mode=io --tx-first --eth-peer=0,$V1 --eth-peer=1,$V0
dpdk dpdk-txonly --forward-mode=txonly --eth-peer=0,$HOST_DPDK --eth-peer=1,$HOST_DPDK
# As the SR-IOV device plugin mounts it in a pod.
for n in /dev/vfio/noiommu-*; do mv "$n" "/dev/vfio/${n#/dev/vfio/noiommu-}"; done
echo "pod rename: /dev/vfio now holds $(ls /dev/vfio | tr '\n' ' ')"
phase doctor
./testpmd doctor -a "$A" -a "$B" --json > /tmp/doctor.json
rc=$?
echo "doctor: $(tr -d '\n' < /tmp/doctor.json)"
done_ doctor $rc
np np-io --forward-mode=io --tx-first --eth-peer=0,$V1 --eth-peer=1,$V0
np np-txonly --forward-mode=txonly --eth-peer=0,$HOST_NP --eth-peer=1,$HOST_NP
echo "=== GUEST DONE"
