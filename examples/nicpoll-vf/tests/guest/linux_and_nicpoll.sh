#!/bin/sh
# Runs in the guest of examples/nicpoll-vf/tests/guest.rs, one boot:
#   1. Linux's iavf brings VF0 up (0000:00:10.0): the PF's MAC, link up at its
#      speed; it pings the host's namespace through the PF's uplink; its netdev
#      counters (GET_STATS) are printed for the host to compare with its own.
#   2. nicpoll's testpmd drives VF1 (vfio-pci, no-IOMMU) in icmpecho mode;
#      Linux pings an address only nicpoll answers, across the PF's switch.
#   3. The host resets the PF; both drivers recover and the pings resume.
cd /lab || exit 1
NP=${NICPOLL_GUEST_BDFS:?VF1 bound to vfio-pci}
say() { echo "=== $* $(cut -d' ' -f1 /proc/uptime)"; }
up_to() { n=0; while [ $n -lt "$1" ] && ! eval "$2"; do sleep 1; n=$((n+1)); done; eval "$2"; }

up_to 60 '[ -e /sys/class/net/eth0 ]' || { say "NO NETDEV"; dmesg | tail -20; exit 1; }
ip link set eth0 up
up_to 30 '[ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ]'
D=$(basename "$(readlink /sys/class/net/eth0/device/driver)")
say "LINK mac=$(cat /sys/class/net/eth0/address) carrier=$(cat /sys/class/net/eth0/carrier) speed=$(cat /sys/class/net/eth0/speed) driver=$D"
ip addr add 10.77.0.2/24 dev eth0
ping -c 5 -i 0.3 -W 2 10.77.0.1 | sed 's/^/ping-uplink: /'
# iavf's netdev counters are the PF's (GET_STATS), asked for by its watchdog
# every few seconds; `ip -s link` shows these same counters.
sleep 6
S=/sys/class/net/eth0/statistics
say "STATS rx_packets=$(cat $S/rx_packets) tx_packets=$(cat $S/tx_packets) rx_bytes=$(cat $S/rx_bytes) tx_bytes=$(cat $S/tx_bytes)"
# The host reads its side now; nothing moves meanwhile.
sleep 4

./testpmd -l 0,1 -a "$NP" --file-prefix=np --huge-unlink=always -- \
    --forward-mode=icmpecho --run-time=300 --stats-period=10 > /tmp/np.log 2>&1 &
NPPID=$!
up_to 60 'grep -q "Port 0: link up" /tmp/np.log || grep -qi "forwarding" /tmp/np.log'
up_to 30 'ping -c 1 -W 1 10.77.0.9 >/dev/null 2>&1'
ping -c 5 -i 0.3 -W 2 10.77.0.9 | sed 's/^/ping-nicpoll: /'
say "READY FOR PF RESET"
# iavf logs the PF's RESET_IMPENDING event (iavf_virtchnl.c).
up_to 60 'dmesg | grep -q "Reset indication received from the PF"'
say "RESET SEEN by iavf"
t0=$(cut -d' ' -f1 /proc/uptime)
up_to 90 'ping -c 1 -W 1 10.77.0.9 >/dev/null 2>&1' && say "RECOVERED nicpoll (from $t0)"
up_to 60 'ping -c 1 -W 1 10.77.0.1 >/dev/null 2>&1' && say "RECOVERED uplink (from $t0)"
ping -c 5 -i 0.3 -W 2 10.77.0.9 | sed 's/^/ping-nicpoll-after: /'
ping -c 5 -i 0.3 -W 2 10.77.0.1 | sed 's/^/ping-uplink-after: /'
kill -INT $NPPID
wait $NPPID
say "TESTPMD EXIT $?"
sed 's/^/testpmd: /' /tmp/np.log | grep -v "^testpmd: *$" | tail -60
dmesg | grep -i iavf | sed 's/^/kernel: /' | tail -30
say "GUEST DONE"
