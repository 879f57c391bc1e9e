#!/usr/bin/env bash
# iavf-sim-callgrind.sh - the iavf PMD's own instructions per packet (rx_burst,
# tx_burst, burst 32) against the simulated VF, and the stepped packet rate
# (issue 4, "Measured").
#
# Run from anywhere (no root needed):   benches/iavf-sim-callgrind.sh
#
# What it does
#   1. Builds drivers/iavf/benches/sim_burst.rs in the bench profile (release,
#      LTO, debug line info) with `cargo bench --no-run --message-format=json`
#      and copies the binary into OUT/bin (a rebuild cannot change it mid-run).
#   2. Runs it plainly REPS times (`fwd $PLAIN_ITERS`): wall-clock Mpps of the
#      whole stepped loop, driver AND model on one thread (not a NIC rate).
#   3. Runs it under `valgrind --tool=callgrind` twice:
#      - `fwd $CG_ITERS`: io forwarding both ways between two simulated VFs in
#        manual mode (the model runs only inside SimVf::step(), on the same
#        thread): every packet crosses one tx_burst and one rx_burst;
#      - `empty $CG_EMPTY`: rx_burst on an empty queue and tx_burst with
#        nothing to send, CG_EMPTY times each.
#   4. From `callgrind_annotate --inclusive=yes --tree=calling` takes the
#      inclusive Ir of the driver's burst functions,
#        <nicpoll_iavf::rxq::IavfRxQueue<B> as nicpoll::port::RxQueue>::rx_burst
#        <nicpoll_iavf::txq::IavfTxQueue<B> as nicpoll::port::TxQueue>::tx_burst
#      and of nicpoll_iavf::sim::SimVf::step (the model), and divides by the
#      packets (fwd) or calls (empty). It checks that no function of the model's
#      device (sim::device, sim::datapath, SimVf::step) is called from inside
#      the bursts, so their inclusive cost is the driver's alone, except the
#      simulated BAR register accesses (SimVfBar, one tail doorbell per burst:
#      one store on hardware), which are reported and also subtracted
#      ("driver only").
#
# Environment
#   OUT(/tmp/nicpoll-bench/iavf-sim/<UTC time>)  results directory
#   REPS(3) PLAIN_ITERS(200000)   plain runs (64 packets per iteration)
#   CG_ITERS(20000)               callgrind fwd iterations (1.28 M packets)
#   CG_EMPTY(200000)              callgrind empty polls
#   IAVF_BENCH_RING(512)          descriptors per ring (read by the bench)
#   IAVF_BENCH_SIMD(1)            the driver's simd= values: 1 (or 256): the best loops
#                                 the CPU has (AVX2, else SSE4.1); 128: at most SSE4.1;
#                                 0 (or 64): scalar
#   CARGO_TARGET_DIR              as usual; BENCH_BIN: a prebuilt binary (no build)
#
# Output (OUT): summary.txt (the figures), plain.N.out, callgrind.{fwd,empty}.out
# (raw callgrind data), *.annotate.txt (callgrind_annotate output), commands.txt,
# env.txt, bin/.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/nicpoll-bench/iavf-sim/$(date -u +%Y%m%dT%H%M%SZ)}
REPS=${REPS:-3}
PLAIN_ITERS=${PLAIN_ITERS:-200000}
CG_ITERS=${CG_ITERS:-20000}
CG_EMPTY=${CG_EMPTY:-200000}
mkdir -p "$OUT/bin"

die() { echo "iavf-sim-callgrind: $*" >&2; exit 1; }
command -v valgrind >/dev/null || die "valgrind is missing: apt-get install -y valgrind"
command -v callgrind_annotate >/dev/null || die "callgrind_annotate is missing (package valgrind)"
command -v jq >/dev/null || die "jq is missing: apt-get install -y jq"

log_cmd() { printf '%q ' "$@" >>"$OUT/commands.txt"; echo >>"$OUT/commands.txt"; }

# 1. Build.
if [[ -n "${BENCH_BIN:-}" ]]; then
    bin=$BENCH_BIN
else
    cmd=(cargo bench -p nicpoll-iavf --features sim --bench sim_burst --no-run --message-format=json)
    echo "# build (in $here)" >>"$OUT/commands.txt"
    log_cmd "${cmd[@]}"
    bin=$(cd "$here" && "${cmd[@]}" 2>"$OUT/build.log" |
        jq -r 'select(.reason == "compiler-artifact" and .target.name == "sim_burst" and .executable != null) | .executable' |
        tail -n1)
    [[ -n "$bin" && -x "$bin" ]] || die "no sim_burst binary (see $OUT/build.log)"
fi
cp "$bin" "$OUT/bin/sim_burst"
bin=$OUT/bin/sim_burst

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -a)"
    lscpu | grep -E '^(CPU\(s\)|Model name|CPU family|Model|Stepping|L1d|L2|L3)' || true
    echo "valgrind: $(valgrind --version)"
    echo "rustc: $(rustc --version 2>/dev/null || echo unknown)"
    echo "commit: $(git -C "$here" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$here" diff --quiet HEAD -- drivers/iavf src 2>/dev/null || echo ' (+ uncommitted changes in drivers/iavf or src)')"
    echo "binary: $bin sha256 $(sha256sum "$bin" | cut -c1-16)"
    echo "settings: REPS=$REPS PLAIN_ITERS=$PLAIN_ITERS CG_ITERS=$CG_ITERS CG_EMPTY=$CG_EMPTY IAVF_BENCH_RING=${IAVF_BENCH_RING:-512} IAVF_BENCH_SIMD=${IAVF_BENCH_SIMD:-1}"
} >"$OUT/env.txt"

# 2. Plain runs.
echo "# plain runs" >>"$OUT/commands.txt"
mpps=()
for r in $(seq 1 "$REPS"); do
    log_cmd "$bin" fwd "$PLAIN_ITERS"
    "$bin" fwd "$PLAIN_ITERS" >"$OUT/plain.$r.out" 2>&1 || die "plain run $r failed: $(cat "$OUT/plain.$r.out")"
    m=$(sed -n 's/.*s, \([0-9.]*\) Mpps$/\1/p' "$OUT/plain.$r.out")
    [[ -n "$m" ]] || die "no Mpps in plain.$r.out"
    mpps+=("$m")
    echo "plain run $r: $m Mpps (driver + model, one thread)"
done
median=$(printf '%s\n' "${mpps[@]}" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')

# A callgrind.out file (event Ir) to a table, exact for inlined code: a
# function's inclusive Ir is its self cost (wherever its inlined lines come
# from) plus the inclusive cost recorded on each of its call arcs.
CGPARSE=$(cat <<'AWK'
# Parse a callgrind.out file (one event, Ir): per function, self Ir (inlined
# code included), inclusive Ir (self + the inclusive cost of its calls) and the
# calls it received; per call arc, count and inclusive Ir.
# Output lines:  F <tab> name <tab> self <tab> inclusive <tab> calls_in
#                C <tab> caller <tab> callee <tab> count <tab> inclusive
function nm(s,   id, rest) {
    if (match(s, /^\([0-9]+\)/)) {
        id = substr(s, 2, RLENGTH - 2); rest = substr(s, RLENGTH + 2)
        if (rest != "") names[id] = rest
        return names[id]
    }
    return s
}
/^fn=/ { fn = nm(substr($0, 4)); incall = 0; next }
/^cfn=/ { cfn = nm(substr($0, 5)); next }
/^calls=/ { split(substr($0, 7), a, " "); ccount = a[1]; incall = 1; next }
/^[0-9+*-]/ {
    c = $NF
    if (incall) {
        arc[fn SUBSEP cfn] += c; arcn[fn SUBSEP cfn] += ccount
        callin[cfn] += ccount; out[fn] += c; incall = 0
    } else self[fn] += c
    seen[fn] = 1
    next
}
END {
    for (f in seen) printf "F\t%s\t%.0f\t%.0f\t%.0f\n", f, self[f], self[f] + out[f], callin[f]
    for (k in arc) { split(k, p, SUBSEP); printf "C\t%s\t%s\t%.0f\t%.0f\n", p[1], p[2], arcn[k], arc[k] }
}
AWK
)

# 3. Callgrind.
for mode in fwd empty; do
    n=$CG_ITERS
    [[ $mode == empty ]] && n=$CG_EMPTY
    cmd=(valgrind --tool=callgrind "--callgrind-out-file=$OUT/callgrind.$mode.out" "$bin" "$mode" "$n")
    echo "# callgrind $mode" >>"$OUT/commands.txt"
    log_cmd "${cmd[@]}"
    echo "callgrind $mode $n ..."
    "${cmd[@]}" >"$OUT/valgrind.$mode.log" 2>&1 || die "callgrind $mode failed (see $OUT/valgrind.$mode.log)"
    awk "$CGPARSE" "$OUT/callgrind.$mode.out" >"$OUT/$mode.functions.tsv"
    callgrind_annotate --auto=yes --threshold=100 "$OUT/callgrind.$mode.out" \
        >"$OUT/$mode.annotate.txt" 2>/dev/null
    callgrind_annotate --inclusive=yes --tree=calling --threshold=100 "$OUT/callgrind.$mode.out" \
        >"$OUT/$mode.calling.txt" 2>/dev/null
done

RX='<nicpoll_iavf::rxq::IavfRxQueue<B> as nicpoll::port::RxQueue>::rx_burst'
TX='<nicpoll_iavf::txq::IavfTxQueue<B> as nicpoll::port::TxQueue>::tx_burst'
STEP='nicpoll_iavf::sim::SimVf::step'

# Inclusive Ir of function $2 (exact name) in table $1.
incl() {
    awk -F'\t' -v f="$2" '$1 == "F" && $2 == f { print $4; found = 1 } END { if (!found) exit 1 }' "$1" ||
        die "no function '$2' in $1"
}
# Calls that function $2 received.
calls() { awk -F'\t' -v f="$2" '$1 == "F" && $2 == f { print $5 }' "$1"; }
# Inclusive Ir of the calls from function $2 to functions matching regex $3,
# directly or through the functions it calls (a call's share of a callee's
# matching cost is proportional to its share of the callee's inclusive cost).
callee_ir() {
    awk -F'\t' -v f="$2" -v re="$3" '
        function part(g,   i, s, h) {
            if (g in memo) return memo[g]
            memo[g] = 0
            for (i = 1; i <= nout[g]; i++) {
                h = callee[g, i]
                if (h ~ re) s += cost[g, i]
                else if (incl[h] > 0) s += cost[g, i] * part(h) / incl[h]
            }
            return memo[g] = s
        }
        $1 == "F" { incl[$2] = $4 }
        $1 == "C" { n = ++nout[$2]; callee[$2, n] = $3; cost[$2, n] = $5 }
        END { printf "%.0f\n", part(f) }' "$1"
}
# The model must not run inside a burst: then a burst's inclusive cost is the
# driver's own (plus the simulated BAR accesses, reported apart).
for f in "$RX" "$TX"; do
    for mode in fwd empty; do
        bad=$(callee_ir "$OUT/$mode.functions.tsv" "$f" 'sim::(device|datapath|dma|wire|pf)|SimVf::step')
        [[ "$bad" == 0 ]] || die "$f calls into the model ($bad Ir) in $mode: its inclusive cost is not the driver's alone"
        awk -F'\t' -v f="$f" '$1 == "C" && $2 == f { printf "  %s -> %s: %d calls, %.0f Ir\n", $2, $3, $4, $5 }' \
            "$OUT/$mode.functions.tsv" >>"$OUT/$mode.callees.txt"
    done
done

# And the model runs only where the bench steps it.
for mode in fwd empty; do
    who=$(awk -F'\t' -v f="$STEP" '$1 == "C" && $3 == f && $2 !~ /^sim_burst::/ { print $2 }' "$OUT/$mode.functions.tsv")
    [[ -z "$who" ]] || die "SimVf::step called from outside the bench loop: $who"
done
echo "# tables: awk \"\$CGPARSE\" callgrind.MODE.out (the parser is in this script); also" >>"$OUT/commands.txt"
log_cmd callgrind_annotate --auto=yes --threshold=100 "$OUT/callgrind.MODE.out"
log_cmd callgrind_annotate --inclusive=yes --tree=calling --threshold=100 "$OUT/callgrind.MODE.out"

pkts=$(sed -n 's/.* iterations, \([0-9]*\) packets .*/\1/p' "$OUT/valgrind.fwd.log")
[[ -n "$pkts" && "$pkts" -gt 0 ]] || die "no packet count in valgrind.fwd.log"
total=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$OUT/valgrind.fwd.log")
F=$OUT/fwd.functions.tsv
E=$OUT/empty.functions.tsv
rx=$(incl "$F" "$RX"); tx=$(incl "$F" "$TX"); step=$(incl "$F" "$STEP")
rx_bar=$(callee_ir "$F" "$RX" 'SimVfBar as nicpoll::bar::Bar')
tx_bar=$(callee_ir "$F" "$TX" 'SimVfBar as nicpoll::bar::Bar')
rx_calls=$(calls "$F" "$RX"); tx_calls=$(calls "$F" "$TX")
erx=$(incl "$E" "$RX"); etx=$(incl "$E" "$TX")
erx_bar=$(callee_ir "$E" "$RX" 'SimVfBar as nicpoll::bar::Bar')
etx_bar=$(callee_ir "$E" "$TX" 'SimVfBar as nicpoll::bar::Bar')
erx_calls=$(calls "$E" "$RX"); etx_calls=$(calls "$E" "$TX")
[[ "$erx_calls" -gt 0 && "$etx_calls" -gt 0 && "$rx_calls" -gt 0 ]] || die "no call counts"

per() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
{
    echo "iavf PMD against the simulated VF: burst 32, 64-byte frames, io forwarding A->B->A, stepped model"
    echo "binary: $(grep '^binary:' "$OUT/env.txt" | cut -d' ' -f2-)"
    grep '^commit:' "$OUT/env.txt"
    grep '^valgrind:' "$OUT/env.txt"
    grep -m1 '^burst mode:' "$OUT/valgrind.fwd.log" || echo "burst mode: not reported"
    echo
    echo "instructions (valgrind callgrind, inclusive Ir; fwd: $pkts packets, $rx_calls rx_burst + $tx_calls tx_burst calls):"
    printf '  %-34s %10s %18s\n' "" "Ir/packet" "driver only (-BAR)"
    printf '  %-34s %10s %18s\n' "rx_burst" "$(per "$rx" "$pkts")" "$(per $((rx - rx_bar)) "$pkts")"
    printf '  %-34s %10s %18s\n' "tx_burst" "$(per "$tx" "$pkts")" "$(per $((tx - tx_bar)) "$pkts")"
    printf '  %-34s %10s %18s\n' "rx + tx (goal < 60)" "$(per $((rx + tx)) "$pkts")" "$(per $((rx + tx - rx_bar - tx_bar)) "$pkts")"
    printf '  %-34s %10s\n' "model (SimVf::step, 4 per 64 pkts)" "$(per "$step" "$pkts")"
    printf '  %-34s %10s\n' "whole program" "$(per "$total" "$pkts")"
    echo "  (-BAR: without the simulated BAR accesses inside the bursts, i.e. the SimVfBar tail"
    echo "   doorbell: rx $rx_bar Ir, tx $tx_bar Ir in total; one MMIO store each on hardware)"
    echo
    echo "empty polls (callgrind, $erx_calls rx_burst calls on an empty queue, $etx_calls tx_burst calls with nothing to send):"
    echo "  rx_burst, empty: $(per "$erx" "$erx_calls") Ir per call (driver only: $(per $((erx - erx_bar)) "$erx_calls"))"
    echo "  tx_burst, empty: $(per "$etx" "$etx_calls") Ir per call (driver only: $(per $((etx - etx_bar)) "$etx_calls"))"
    echo
    echo "stepped packet rate, driver + model on ONE thread (wall clock, $REPS runs of $PLAIN_ITERS iterations):"
    echo "  runs: ${mpps[*]} Mpps; median $median Mpps"
    echo "  (the model's cost dominates: this is not the driver's rate, nor a NIC's)"
    echo
    echo "raw: rx=$rx tx=$tx step=$step total=$total rx_bar=$rx_bar tx_bar=$tx_bar erx=$erx etx=$etx erx_bar=$erx_bar etx_bar=$etx_bar"
} | tee "$OUT/summary.txt"
echo "results in $OUT"
