#!/bin/busybox sh
# The guest's /init (nicpoll-guest): loads the kernel modules the host chose, in
# dependency order, hands the chosen PCI functions to vfio-pci, mounts hugetlbfs,
# then runs the program between two marker lines and powers off. The host reads
# the program's exit status from the second marker; no marker means the guest
# never got that far (the lines before say why).
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp /run
/bin/busybox --install -s
# The initramfs root starts world-writable; DPDK refuses to load plugins below one.
chmod 755 /
# A firmware banner may end without a newline: start on a fresh line.
echo
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /var && ln -s /run /var/run
mkdir -p /dev/hugepages
mount -t hugetlbfs hugetlbfs /dev/hugepages

say() { echo "[guest] $*"; }
fail() {
    say "setup failed: $*"
    dmesg | tail -n 25
    poweroff -f
}

# /lab/config sets MODE, BIND (PCI addresses for vfio-pci) and LATE (modules to
# load after binding); /lab/modules lists "file.ko parameters" in load order.
. /lab/config
while read -r ko params; do
    [ -n "$ko" ] || continue
    # shellcheck disable=SC2086
    insmod "/lib/modules/$ko" $params || fail "insmod $ko $params"
done < /lab/modules

for bdf in $BIND; do
    dev=/sys/bus/pci/devices/$bdf
    [ -e "$dev" ] || fail "no PCI function $bdf in the guest"
    [ -e "$dev/driver" ] && echo "$bdf" > "$dev/driver/unbind"
    echo vfio-pci > "$dev/driver_override"
    echo "$bdf" > /sys/bus/pci/drivers_probe
    driver=$(basename "$(readlink "$dev/driver")" 2>/dev/null)
    group=$(basename "$(readlink "$dev/iommu_group")" 2>/dev/null)
    say "$bdf $(cat "$dev/vendor"):$(cat "$dev/device") -> ${driver:-no driver}, iommu group ${group:-none}"
    [ "$driver" = vfio-pci ] || fail "$bdf did not bind to vfio-pci"
done

for ko in $LATE; do
    insmod "/lib/modules/$ko" || fail "insmod $ko"
done

say "mode $MODE; /dev/vfio: $(ls /dev/vfio 2>/dev/null | tr '\n' ' '); hugepages $(cat /proc/sys/vm/nr_hugepages); up $(cut -d' ' -f1 /proc/uptime) s"
echo "=== NICPOLL-GUEST BEGIN ==="
sh /lab/run
echo "=== NICPOLL-GUEST EXIT $? ==="
poweroff -f
