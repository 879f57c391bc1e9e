#!/usr/bin/env bash
# virtio-guest.sh - txonly and rxonly Mpps of nicpoll's virtio PMD and of
# dpdk-testpmd's net_virtio, both driving the same emulated virtio-net NIC through
# VFIO inside ONE QEMU guest boot (the project's harness, tools/guest; TCG: no KVM).
#
#   benches/virtio-guest.sh [--mode noiommu|type1] [--seconds N] [--cpu MODEL] [--out DIR]
#
# Software emulation makes every figure slow, and QEMU's own device model (one
# thread for virtio-net and its dgram backend, beside the two vCPUs on this host's
# cores) is most of the cost: compare the two drivers with each other, not with
# hardware.
#
# Setup
#   - guest: --mode noiommu by default (how our users' VMs run: no vIOMMU, physical
#     addresses), --smp 2 (lcore 0 main, lcore 1 forwarding), --cpu
#     qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt (Debian's DPDK needs SSE4.2; `max` is
#     slower under TCG), 512 MiB of 2 MiB hugepages, one virtio-net-pci
#     (disable-legacy=on) on -netdev dgram to a host-side socket.
#   - host side: a Python peer on that socket. While the guest transmits it only
#     drains (blocking recv_into, nothing kept); once the guest sends a marker (32
#     UDP frames to 198.18.0.99, after the txonly runs) it blasts 60-byte frames
#     (64 on the wire with the FCS) as fast as QEMU takes them, for the rxonly
#     runs, still draining.
#   - in the guest, in this order, each SECONDS long (default 6):
#       nicpoll txonly, dpdk-testpmd txonly (twice, interleaved), then
#       nicpoll rxonly, dpdk-testpmd rxonly (twice, interleaved)
#     with the same options for both tools:
#       -l 0,1 -a BDF -- --forward-mode=MODE --port-topology=loop --burst=32
#       --txpkts=64 --rxd=256 --txd=256 --stats-period=1
#     nicpoll adds --run-time=SECONDS --no-latency --file-prefix=np; dpdk-testpmd
#     adds -n 1 --in-memory --no-telemetry -d librte_net_virtio.so.23
#     -d librte_mempool_ring.so.23 --total-num-mbufs=8192 and is stopped with
#     SIGINT after SECONDS (busybox timeout).
#   - figure: the median of the per-second Tx-pps (txonly) or Rx-pps (rxonly)
#     lines both tools print (per-port block), first and last samples of each run
#     left out, over both runs of a tool and mode.
#
# Needs what the harness needs (`cargo run -p nicpoll-guest -- check --mode noiommu`
# says what is missing), python3, cargo, and Debian's dpdk packages for the DPDK
# runs (/usr/bin/dpdk-testpmd; skipped with a note if missing). Never touches a
# host NIC: every device access happens inside the guest.
set -euo pipefail

MODE=noiommu SECS=6 OUT="" CPU="qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt"
while [ $# -gt 0 ]; do
    case $1 in
        --mode) MODE=$2; shift 2;;
        --seconds) SECS=$2; shift 2;;
        --out) OUT=$2; shift 2;;
        --cpu) CPU=$2; shift 2;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2;;
    esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/virtio-guest.XXXXXX")}
mkdir -p "$OUT"
cargo_bin() {  # cargo_bin PACKAGE PROFILE-ARGS...: build and print the binary's path
    local p=$1; shift
    (cd "$ROOT" && cargo build "$@" -p "$p" --bin "$p" --message-format=json |
      python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])' | tail -1)
}
echo "== building the release testpmd and the guest harness"
BIN=$(cargo_bin testpmd --release)
HARNESS=$(cargo_bin nicpoll-guest)
[ -x "$BIN" ] && [ -x "$HARNESS" ] || { echo "cargo built no testpmd or nicpoll-guest" >&2; exit 1; }

# Guest files: the harness copies each into /lab and the libraries ldd lists for
# it to their own paths.
FILES=("$BIN")
DPDK=0
PMDS=/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0
if [ -x /usr/bin/dpdk-testpmd ] && [ -e $PMDS/librte_net_virtio.so.23 ]; then
    DPDK=1
    FILES+=(/usr/bin/dpdk-testpmd "$PMDS/librte_net_virtio.so.23" "$PMDS/librte_mempool_ring.so.23")
else
    echo "note: dpdk-testpmd or its net_virtio PMD is not installed (apt-get install dpdk); nicpoll only"
fi

cat > "$OUT/bench.sh" <<EOF
#!/bin/sh
cd /lab
B=\$NICPOLL_GUEST_BDF
COMMON="--port-topology=loop --burst=32 --txpkts=64 --rxd=256 --txd=256 --stats-period=1"
np() { echo "=== RUN nicpoll \$1"; ./testpmd -l 0,1 -a \$B --file-prefix=np -- --forward-mode=\$1 \$COMMON --run-time=$SECS --no-latency; echo "=== END \$?"; }
dp() { echo "=== RUN dpdk \$1"; timeout -s INT $SECS ./dpdk-testpmd -l 0,1 -n 1 --in-memory --no-telemetry -a \$B \\
        -d /lab/librte_net_virtio.so.23 -d /lab/librte_mempool_ring.so.23 -- --forward-mode=\$1 \$COMMON \\
        --total-num-mbufs=8192 --no-lsc-interrupt; echo "=== END \$?"; }
for r in 1 2; do np txonly; [ $DPDK = 1 ] && dp txonly; done
# Tell the peer to start blasting: 32 UDP frames to 198.18.0.99.
./testpmd -l 0,1 -a \$B --file-prefix=np -- --forward-mode=txonly --port-topology=loop \\
    --tx-ip=198.18.0.1,198.18.0.99 --max-packets=32 --run-time=5 > /dev/null 2>&1
for r in 1 2; do np rxonly; [ $DPDK = 1 ] && dp rxonly; done
echo "=== BENCH DONE"
EOF
chmod +x "$OUT/bench.sh"

cat > "$OUT/peer.py" <<'EOF'
import os, socket, sys, time
path = sys.argv[1]
if os.path.exists(path): os.unlink(path)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
buf = bytearray(65536)
MARK = bytes([198, 18, 0, 99])  # the guest's "start blasting" UDP frames
qemu, got = None, 0
# Drain (blocking, so the peer takes no CPU from QEMU while the guest sends)
# until the guest sends the marker.
s.settimeout(0.5)
while True:
    try:
        n, addr = s.recvfrom_into(buf)
    except socket.timeout:
        continue
    qemu, got = addr or qemu, got + 1
    if n >= 34 and buf[30:34] == MARK:
        break
print(f'peer: drained {got} frames; blasting', flush=True)
frame = bytes.fromhex('525400123456020000000202') + b'\x88\xb5' + bytes(46)
s.setblocking(False)
while True:
    try:  # keep draining, or QEMU's sends to us would block its transmit path
        while True:
            s.recv_into(buf)
    except BlockingIOError:
        pass
    try:
        for _ in range(64):
            s.sendto(frame, qemu)
    except BlockingIOError:
        time.sleep(0.00005)  # QEMU is not reading (no driver yet, or a full socket)
    except OSError:
        time.sleep(0.01)
EOF

echo "== guest boot ($MODE), output in $OUT"
python3 "$OUT/peer.py" "$OUT/peer.sock" > "$OUT/peer.log" 2>&1 &
PEER=$!
trap 'kill $PEER 2>/dev/null || true' EXIT
sleep 0.3
ARGS=(--mode "$MODE" --smp 2 --cpu "$CPU" --mem 2048 --hugepages 256 --timeout 600
      --nic virtio --net "dgram:$OUT/peer.sock" --log "$OUT/console.log")
[ "$MODE" = type1 ] && ARGS+=(--qemu-arg=-global --qemu-arg=intel-iommu.aw-bits=48)
for f in "${FILES[@]}"; do ARGS+=(--file "$f"); done
T0=$(date +%s)
"$HARNESS" run "${ARGS[@]}" -- "$OUT/bench.sh" > "$OUT/guest.txt" 2>&1 || {
    echo "guest run failed; see $OUT/guest.txt and $OUT/console.log" >&2; tail -30 "$OUT/guest.txt" >&2; exit 1; }
echo "guest run took $(( $(date +%s) - T0 )) s"

python3 - "$OUT/guest.txt" "$MODE" "$SECS" <<'EOF' | tee "$OUT/results.txt"
import re, statistics, sys
text = open(sys.argv[1], errors='replace').read()
runs = re.findall(r'=== RUN (\S+) (\S+)\n(.*?)=== END (\d+)', text, re.S)
print(f"virtio-net in a QEMU TCG guest ({sys.argv[2]}), {sys.argv[3]} s per run, 64-byte frames, one forwarding core")
print(f"{'tool':<8} {'mode':<7} {'Mpps':>8} {'samples':>8}  per-second pps of each run")
agg = {}
for tool, mode, body, rc in runs:
    key = 'Tx-pps' if mode == 'txonly' else 'Rx-pps'
    v = [int(x) for x in re.findall(r'^\s+' + key + r':\s+(\d+)', body, re.M)]
    a = agg.setdefault((tool, mode), ([], []))
    a[0].extend(v[1:-1] if len(v) > 2 else v)
    a[1].append(' '.join(map(str, v)) + ('' if rc in ('0', '124', '130') else f' (exit {rc})'))
for (tool, mode), (use, per) in agg.items():
    med = statistics.median(use) / 1e6 if use else 0.0
    print(f"{tool:<8} {mode:<7} {med:>8.4f} {len(use):>8}  {' | '.join(per)}")
EOF
