#!/bin/sh
# In the guest: ROUNDS x (nicpoll, dpdk-testpmd), io forwarding between the VFs.
cd /lab
set -- $NICPOLL_GUEST_BDFS
A=$1; B=$2
APP="-- -i --forward-mode=io --eth-peer=0,02:00:00:56:46:01 --eth-peer=1,02:00:00:56:46:00 --burst=32 --txd=512 --rxd=512"
feed() {  # the commands, and the measure window's markers on the console
    sleep 6; echo "start tx_first 16"; sleep 1; echo "show port stats all"
    echo "=== MEASURE $1 BEGIN" > /dev/console
    sleep 8; echo "show port stats all"
    echo "=== MEASURE $1 END" > /dev/console
    echo stop; sleep 1; echo quit
}
for r in $(seq 4); do
    echo "=== RUN nicpoll $r"
    feed nicpoll | ./testpmd -l 0,1 -a $A -a $B --file-prefix=np --huge-unlink=always         --log-level=info $APP 2>&1
    echo "=== END $?"
    echo "=== RUN dpdk $r"
    feed dpdk | /opt/dpdk/bin/dpdk-testpmd -l 0,1 -n 1 --in-memory --iova-mode=pa -a $A -a $B         --log-level=pmd.net.iavf.driver:debug $APP 2>&1
    echo "=== END $?"
done
echo "=== BENCH DONE"
