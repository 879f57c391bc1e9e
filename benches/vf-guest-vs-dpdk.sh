#!/usr/bin/env bash
# vf-guest-vs-dpdk.sh - io forwarding between two simulated X710 VFs, driven
# from inside ONE QEMU guest boot by nicpoll's testpmd (net_iavf) and by
# dpdk-testpmd 24.11 (net_iavf), runs interleaved; and the cost of the
# vfio-user server (nicpoll-vf) that serves the VFs: its CPU time per packet
# and where it goes.
#
#   sudo benches/vf-guest-vs-dpdk.sh [--rounds N] [--seconds N] [--bursts N] [--cpu MODEL]
#                                    [--devargs ARGS] [--no-ticker] [--no-perf] [--out DIR]
#
# What runs
#   - host: target/release/nicpoll-vf --vf OUT/vf0.sock --vf OUT/vf1.sock (one
#     simulated X710 PF under i40e, its two VFs on the PF's switch, no uplink).
#   - guest (tools/guest, QEMU 11 with TCG: no KVM): no-IOMMU, both VFs bound to
#     vfio-pci, --smp 2 (lcore 0 main, lcore 1 forwarding), 256 hugepages; the
#     vCPU model the harness gives DPDK guests (qemu64 with SSE4.2: both PMDs
#     then run their non-AVX2 loops) unless --cpu names another.
#   - ROUNDS rounds, each: nicpoll's testpmd, then dpdk-testpmd, with the same
#     options and the same commands on stdin:
#       -l 0,1 -a VF0 -a VF1 -- -i --forward-mode=io --eth-peer=0,<VF1 MAC>
#       --eth-peer=1,<VF0 MAC> --burst=32 --txd=512 --rxd=512
#       start tx_first BURSTS; (1 s) show port stats all; (SECONDS) show port
#       stats all; stop; quit
#     (dpdk-testpmd adds -n 1 --in-memory --iova-mode=pa; nicpoll's
#     --file-prefix=np --huge-unlink=always, and --devargs ARGS after each
#     VF's address, e.g. --devargs ,simd=0 for its scalar loops). BURSTS bursts of 32 frames per port
#     circulate (default 16: 512 per direction), so the rate is throughput-bound,
#     not the latency of one burst's round trip.
#   - the ticker (unless --no-ticker): a shell loop pinned to the forwarding vCPU that
#     sleeps 50 ms at a time, for both tools alike. TCG resizes a vCPU's software TLB
#     only when it flushes it (a context switch on that vCPU); a forwarding loop that
#     makes no system call can otherwise run for seconds with a TLB too small for its
#     mbufs, and a run lands at random in a slow or a fast regime (BENCHMARKS.md §5).
#   - figure: each tool's own statistics: the sum over both ports of the Rx-pps
#     of the second "show port stats all" (the SECONDS window).
#   - server cost: at the window's start and end (markers the guest prints) the
#     host reads nicpoll-vf's CPU time per thread (/proc/PID/task/*/stat) and
#     its switch counter (SIGUSR1): CPU time per switched packet (each forwarded
#     frame crosses the server once: one VF's Tx ring to the other's Rx ring).
#     With perf, `perf record -g` of the server over the whole run and the top
#     symbols.
#   - the machine in each window (% of one CPU): "guest" = the guest's QEMU
#     (the harness's process tree), "others" = everything else but the server
#     (/proc/stat's busy time less both): on a shared machine, what other work
#     took from the guest's vCPUs and the server; "load" = the 1-minute load
#     average at the window's end; "fwd vCPU" = the busiest thread of the
#     guest's QEMU (the vCPU that runs the forwarding lcore). Their CPU time
#     per forwarded packet (ns/pkt) is the rate's inverse with the other
#     work's share taken out: the fairer comparison on a shared machine.
#
# Software emulation makes every figure slow, and the two vCPUs share this
# host's cores with the server: compare the two drivers with each other, not
# with hardware. Needs root and what the harness needs (`cargo run -p
# nicpoll-guest -- check --mode noiommu --qemu11 --dpdk`), cargo, python3, and
# perf for the profile. Touches no host NIC.
set -euo pipefail

ROUNDS=3 SECS=8 BURSTS=16 PERF=1 OUT="" CPU="" DEVARGS="" TICKER=1
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2;;
        --seconds) SECS=$2; shift 2;;
        --bursts) BURSTS=$2; shift 2;;
        --no-perf) PERF=0; shift;;
        --no-ticker) TICKER=0; shift;;
        --cpu) CPU=$2; shift 2;;
        --devargs) DEVARGS=$2; shift 2;;
        --out) OUT=$2; shift 2;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "run as root (QEMU 11's chroot, vfio-user sockets)" >&2; exit 1; }
command -v perf >/dev/null || PERF=0
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/vf-guest-vs-dpdk.XXXXXX")}
mkdir -p "$OUT"
cargo_bin() {  # cargo_bin PACKAGE BIN PROFILE-ARGS...: build and print the binary's path
    local p=$1 b=$2; shift 2
    (cd "$ROOT" && cargo build "$@" -p "$p" --bin "$b" --message-format=json |
      python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])' | tail -1)
}
echo "== building the release testpmd and nicpoll-vf, and the guest harness"
TESTPMD=$(cargo_bin testpmd testpmd --release)
SERVER=$(cargo_bin nicpoll-vf nicpoll-vf --release)
HARNESS=$(cargo_bin nicpoll-guest nicpoll-guest)
for b in "$TESTPMD" "$SERVER" "$HARNESS"; do [ -x "$b" ] || { echo "missing build: $b" >&2; exit 1; }; done
cp "$SERVER" "$OUT/nicpoll-vf"

V0=02:00:00:56:46:00 V1=02:00:00:56:46:01
cat > "$OUT/bench.sh" <<EOF
#!/bin/sh
# In the guest: ROUNDS x (nicpoll, dpdk-testpmd), io forwarding between the VFs.
cd /lab
set -- \$NICPOLL_GUEST_BDFS
A=\$1; B=\$2
APP="-- -i --forward-mode=io --eth-peer=0,$V1 --eth-peer=1,$V0 --burst=32 --txd=512 --rxd=512"
if [ $TICKER = 1 ]; then
    ./taskset -c 1 sh -c 'while :; do sleep 0.05; done' &
    echo "=== ticker on lcore 1's CPU (pid \$!)"
fi
feed() {  # the commands, and the measure window's markers on the console
    sleep 6; echo "start tx_first $BURSTS"; sleep 1; echo "show port stats all"
    echo "=== MEASURE \$1 BEGIN" > /dev/console
    sleep $SECS; echo "show port stats all"
    echo "=== MEASURE \$1 END" > /dev/console
    echo stop; sleep 1; echo quit
}
for r in \$(seq $ROUNDS); do
    echo "=== RUN nicpoll \$r"
    feed nicpoll | ./testpmd -l 0,1 -a \$A$DEVARGS -a \$B$DEVARGS --file-prefix=np --huge-unlink=always \
        --log-level=info \$APP 2>&1
    echo "=== END \$?"
    echo "=== RUN dpdk \$r"
    feed dpdk | /opt/dpdk/bin/dpdk-testpmd -l 0,1 -n 1 --in-memory --iova-mode=pa -a \$A -a \$B \
        --log-level=pmd.net.iavf.driver:debug \$APP 2>&1
    echo "=== END \$?"
done
echo "=== BENCH DONE"
EOF
chmod +x "$OUT/bench.sh"

rm -f "$OUT/vf0.sock" "$OUT/vf1.sock"
"$OUT/nicpoll-vf" --vf "$OUT/vf0.sock" --vf "$OUT/vf1.sock" > "$OUT/server.log" 2>&1 &
SPID=$!
PERFPID=""
SAMPLER=""
cleanup() {
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
    [ -n "$PERFPID" ] && kill -INT "$PERFPID" 2>/dev/null && wait "$PERFPID" 2>/dev/null || true
    kill -TERM "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 50); do [ -S "$OUT/vf1.sock" ] && break; sleep 0.1; done
[ -S "$OUT/vf1.sock" ] || { echo "nicpoll-vf did not start: $(cat "$OUT/server.log")" >&2; exit 1; }

# The sampler: at each marker, the server's CPU time per thread and its switch
# counter.
: > "$OUT/console.log"
: > "$OUT/samples.txt"   # (an --out used before holds an older run's samples)
sample() {  # sample LABEL
    local n
    n=$(grep -c '^switch:' "$OUT/server.log" || true)
    kill -USR1 "$SPID"
    for _ in $(seq 50); do
        [ "$(grep -c '^switch:' "$OUT/server.log" || true)" -gt "$n" ] && break
        sleep 0.02
    done
    {
        echo "SAMPLE $1 $(date +%s.%N) $(grep '^switch:' "$OUT/server.log" | tail -1)"
        for t in /proc/$SPID/task/*; do
            echo "THREAD $1 $(cat "$t/comm") $(cut -d' ' -f14,15 "$t/stat")"
        done
        echo "MACHINE $1 $(machine_jiffies) $(cut -d' ' -f1 /proc/loadavg)" \
            "$(tree_jiffies "$(cat "$OUT/harness.pid" 2>/dev/null)")"
    } >> "$OUT/samples.txt"
}
# The machine's busy and total jiffies (/proc/stat: user nice system irq
# softirq; + idle iowait).
machine_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat; }
# User + system jiffies of PID and every process below it (the harness: the
# guest's QEMU and its helpers), so that what the rest of the machine used in
# a window is the busy time less this and the server's; then TID:jiffies of
# each of their threads (the busiest in a window is the vCPU that runs the
# forwarding lcore: both testpmds poll there).
tree_jiffies() {
    python3 - "$1" <<'PY'
import os, sys
root = sys.argv[1]
procs = {}
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    procs[p] = (f[1], int(f[11]) + int(f[12]))  # ppid, utime + stime
total, todo, threads = 0, [root] if root in procs else [], []
while todo:
    p = todo.pop()
    total += procs[p][1]
    todo += [c for c, (pp, _) in procs.items() if pp == p]
    for t in os.listdir(f"/proc/{p}/task") if os.path.isdir(f"/proc/{p}/task") else []:
        try:
            f = open(f"/proc/{p}/task/{t}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        threads.append(f"{t}:{int(f[11]) + int(f[12])}")
print(total, *threads)
PY
}
# (tail ends with this script: killing the subshell alone left tail and the
# loop running after every run.)
( tail -n0 -F --pid=$$ "$OUT/console.log" 2>/dev/null | while read -r line; do
      if [[ $line =~ ===\ MEASURE\ ([a-z]+)\ (BEGIN|END) ]]; then
          sample "${BASH_REMATCH[1]}-${BASH_REMATCH[2]}"
      fi
  done ) &
SAMPLER=$!
if [ "$PERF" = 1 ]; then
    perf record -q -g -F 499 -p "$SPID" -o "$OUT/perf.data" > "$OUT/perf-record.log" 2>&1 &
    PERFPID=$!
fi

echo "== guest boot, output in $OUT"
T0=$(date +%s)
CPUARG=()
[ -n "$CPU" ] && CPUARG=(--cpu "$CPU")
"$HARNESS" run --vfio-user "$OUT/vf0.sock,vfio-pci" --vfio-user "$OUT/vf1.sock,vfio-pci" \
    --mode noiommu --dpdk --smp 2 --hugepages 256 --mem 2048 --timeout $((ROUNDS * (SECS + 40) + 120)) \
    "${CPUARG[@]}" --file "$TESTPMD" --file "$(command -v taskset)" --log "$OUT/console.log" -- "$OUT/bench.sh" > "$OUT/guest.txt" 2>&1 &
echo $! > "$OUT/harness.pid"
if ! wait "$(cat "$OUT/harness.pid")"; then
    echo "guest run failed; see $OUT/guest.txt and $OUT/console.log" >&2; tail -30 "$OUT/guest.txt" >&2; exit 1
fi
echo "guest run took $(( $(date +%s) - T0 )) s"
sleep 0.5
if [ -n "$PERFPID" ]; then kill -INT "$PERFPID" 2>/dev/null || true; wait "$PERFPID" 2>/dev/null || true; PERFPID=""; fi
kill "$SAMPLER" 2>/dev/null || true; SAMPLER=""
HZ=$(getconf CLK_TCK)

python3 - "$OUT" "$SECS" "$BURSTS" "$HZ" <<'EOF' | tee "$OUT/results.txt"
import re, statistics, sys, collections
out, secs, bursts, hz = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
text = open(f"{out}/guest.txt", errors="replace").read()
runs = re.findall(r"=== RUN (\S+) (\d+)\n(.*?)=== END (\d+)", text, re.S)
samples = collections.defaultdict(dict)   # (tool-BEGIN/END occurrence) -> data
order = []
try:
    lines = open(f"{out}/samples.txt").read().splitlines()
except FileNotFoundError:
    lines = []
for l in lines:
    w = l.split()
    if w[0] == "SAMPLE":
        order.append(w[1])
        sw = re.search(r"vf->vf (\d+)", l)
        samples[len(order) - 1]["label"] = w[1]
        samples[len(order) - 1]["switched"] = int(sw.group(1)) if sw else 0
        samples[len(order) - 1]["threads"] = {}
    elif w[0] == "MACHINE":
        # busy, total, the guest's (harness tree) jiffies, load average
        samples[len(order) - 1]["machine"] = (int(w[2]), int(w[3]), int(w[5]), w[4])
        samples[len(order) - 1]["guest_threads"] = dict(
            (int(t), int(j)) for t, j in (x.split(":") for x in w[6:]))
    elif w[0] == "THREAD":
        name = re.sub(r"\d+", "N", w[2])
        t = samples[len(order) - 1]["threads"]
        t[name] = t.get(name, 0) + int(w[3]) + int(w[4])
print(f"io forwarding between two simulated X710 VFs (nicpoll-vf), QEMU 11 TCG guest, no-IOMMU,")
print(f"{bursts} bursts of 32 frames per port in flight, {secs} s windows, each tool's own statistics")
paths = {
    "nicpoll": sorted(set(re.findall(r"iavf \S+: (.*(?:AVX2|SSE|scalar)[^\n]*loops?[^\n]*)", text))),
    "dpdk": sorted(set(re.findall(r"(Using [^\n]*(?:Vector|Rx|Tx)[^\n]*)", text))),
}
for t, p in paths.items():
    print(f"{t} paths: {'; '.join(p) if p else '(not logged)'}")
print(f"{'round':>5} {'tool':<8} {'Mpps':>8} {'server CPU':>11} {'ns/pkt':>8} {'guest':>6} {'ns/pkt':>7} {'fwd vCPU':>8} {'ns/pkt':>7} {'others':>6} {'load':>5}"
      "  server CPU by thread (% of one CPU)")
rates = collections.defaultdict(list)
cost = collections.defaultdict(list)
others_by = collections.defaultdict(list)
guest_cost = collections.defaultdict(list)
vcpu_cost = collections.defaultdict(list)
i = 0
for tool, rnd, body, rc in runs:
    pps = [int(x) for x in re.findall(r"Rx-pps:\s+(\d+)", body)]
    mpps = sum(pps[-2:]) / 1e6 if len(pps) >= 4 else float("nan")
    rates[tool].append(mpps)
    cpu_s, ns, split = float("nan"), float("nan"), ""
    guest, guest_ns, others, load = float("nan"), float("nan"), float("nan"), "?"
    busiest, vcpu_ns = float("nan"), float("nan")
    if i + 1 < len(order) and samples[i]["label"].endswith("BEGIN"):
        a, b = samples[i], samples[i + 1]
        i += 2
        th = {k: (b["threads"].get(k, 0) - v) / hz for k, v in a["threads"].items()}
        total = sum(th.values())
        pk = b["switched"] - a["switched"]
        cpu_s = total / float(secs)
        ns = total / pk * 1e9 if pk else float("nan")
        cost[tool].append(ns)
        if "machine" in a and "machine" in b:
            (b0, _, g0, _), (b1, _, g1, load) = a["machine"], b["machine"]
            window = float(secs) * hz
            guest = (g1 - g0) / window
            # The guest's CPU time per forwarded packet (each tool's own rate):
            # what the rate would be if the guest had the CPUs to itself.
            guest_ns = guest / (mpps * 1e6) * 1e9 if mpps > 0 else float("nan")
            guest_cost[tool].append(guest_ns)
            ta, tb = a.get("guest_threads", {}), b.get("guest_threads", {})
            busiest = max((tb[t] - ta[t] for t in tb if t in ta), default=0) / window
            vcpu_ns = busiest / (mpps * 1e6) * 1e9 if mpps > 0 and busiest > 0 else float("nan")
            vcpu_cost[tool].append(vcpu_ns)
            others = (b1 - b0 - (g1 - g0)) / window - total / float(secs)
            others_by[tool].append(others)
        split = " ".join(f"{k}={v / float(secs) * 100:.0f}" for k, v in sorted(th.items(), key=lambda x: -x[1]) if v > 0)
    print(f"{rnd:>5} {tool:<8} {mpps:>8.3f} {cpu_s * 100:>10.0f}% {ns:>8.0f} {guest * 100:>5.0f}% {guest_ns:>7.0f} {busiest * 100:>7.0f}% {vcpu_ns:>7.0f} {others * 100:>5.0f}% {load:>5}  {split}"
          + ("" if rc == "0" else f"  (exit {rc})"))
med = {t: statistics.median(v) for t, v in rates.items() if v}
for t, v in med.items():
    c = statistics.median(cost[t]) if cost[t] else float("nan")
    o = statistics.median(others_by[t]) * 100 if others_by[t] else float("nan")
    gc = statistics.median(guest_cost[t]) if guest_cost[t] else float("nan")
    vc = statistics.median(vcpu_cost[t]) if vcpu_cost[t] else float("nan")
    print(f"median   {t:<8} {v:>8.3f} Mpps, server {c:.0f} ns per switched packet, guest {gc:.0f} ns "
          f"per forwarded packet ({vc:.0f} on the forwarding vCPU), others {o:.0f}% of a CPU")
if "nicpoll" in med and "dpdk" in med and med["dpdk"] > 0:
    print(f"nicpoll / dpdk-testpmd: {med['nicpoll'] / med['dpdk']:.2f}x (median rates)")
    pairs = [n / d for n, d in zip(rates["nicpoll"], rates["dpdk"]) if d > 0]
    if pairs:
        print(f"round by round: {' '.join(f'{x:.2f}' for x in pairs)}x")
    for what, cost_of in (("guest", guest_cost), ("forwarding vCPU", vcpu_cost)):
        if cost_of["nicpoll"] and cost_of["dpdk"]:
            print(f"{what} CPU per packet, dpdk-testpmd / nicpoll: "
                  f"{statistics.median(cost_of['dpdk']) / statistics.median(cost_of['nicpoll']):.2f}x")
EOF
if [ "$PERF" = 1 ] && [ -s "$OUT/perf.data" ]; then
    perf report -i "$OUT/perf.data" --stdio --no-children --sort comm,symbol 2>/dev/null |
        grep -v '^#' | grep -v '^$' | grep '%' | head -30 > "$OUT/perf-top.txt" || true
    echo "== where the server's time goes (perf, self time, top 30): $OUT/perf-top.txt"
    cat "$OUT/perf-top.txt"
fi
