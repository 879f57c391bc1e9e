#!/usr/bin/env bash
# iavf-sim-demo.sh - the packet rate of the README's demo (`cargo run --release
# --bin testpmd`, no arguments): io forwarding between two simulated X710 VFs,
# the iavf PMD against the device model, on this machine (issue 14, part 5).
#
# Run from anywhere (no root needed):
#   benches/iavf-sim-demo.sh                        # the work tree's build
#   benches/iavf-sim-demo.sh base=/path/testpmd new=/other/testpmd
#                                                   # builds interleaved
#
# What it does
#   1. Without arguments, builds testpmd (`cargo build --release --bin testpmd`)
#      and measures it as label "demo"; with LABEL=BINARY arguments, measures
#      those binaries, interleaved (the order reversed every other round).
#   2. Each run is the demo's command line with JSON statistics (the demo is
#      exactly these arguments; it prints them):
#        testpmd --vdev net_iavf_sim0,peer=net_iavf_sim1 \
#                --vdev net_iavf_sim1,peer=net_iavf_sim0 -- --forward-mode=io \
#                --tx-first --stats-period=1 --run-time=$RUNTIME --stats-format=json
#      Before each run it waits (up to QUIET_WAIT s) until other processes use
#      at most QUIET_PCT % of one CPU.
#   3. Mpps = packets received on both ports per second over the statistics
#      periods after the first two (rx_pps x elapsed summed over ports and
#      periods / elapsed summed), as BENCHMARKS.md section 4 has always
#      counted it. "foreign" = CPU time used by everything but testpmd during
#      the run, in % of one CPU (/proc/stat's busy time less testpmd's own user
#      and system time): what the machine's other users took from the demo's
#      two busy threads (the forwarding lcore and the simulated PF's polling
#      thread).
#
# Environment
#   OUT(/tmp/nicpoll-bench/iavf-sim-demo/<UTC time>)  results directory
#   REPS(5) RUNTIME(10) QUIET_PCT(5) QUIET_WAIT(120; 0: do not wait)
#   CARGO_TARGET_DIR  as usual, for the build of step 1
#
# Output (OUT): results.tsv (round, label, Mpps, foreign % of a CPU, load
# average, quiet wait result), summary.txt (per label: median and range of all
# runs, and of the runs with foreign <= QUIET_PCT), LABEL.rN.out (each run's
# whole output), commands.txt, env.txt.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/nicpoll-bench/iavf-sim-demo/$(date -u +%Y%m%dT%H%M%SZ)}
REPS=${REPS:-5}
RUNTIME=${RUNTIME:-10}
QUIET_PCT=${QUIET_PCT:-5}
QUIET_WAIT=${QUIET_WAIT:-120}
mkdir -p "$OUT"

die() { echo "iavf-sim-demo: $*" >&2; exit 1; }
command -v jq >/dev/null || die "jq is missing: apt-get install -y jq"
(( RUNTIME >= 4 )) || die "RUNTIME=$RUNTIME: at least 4 s (the first 2 are skipped)"

if (( $# == 0 )); then
    echo "# build (in $here)" >>"$OUT/commands.txt"
    echo "cargo build --release --bin testpmd" >>"$OUT/commands.txt"
    (cd "$here" && cargo build --release --bin testpmd) >"$OUT/build.log" 2>&1 ||
        die "build failed (see $OUT/build.log)"
    set -- "demo=${CARGO_TARGET_DIR:-$here/target}/release/testpmd"
fi
for lb in "$@"; do
    [[ $lb == *=* ]] || die "argument $lb: expected LABEL=BINARY"
    [[ -x ${lb#*=} ]] || die "${lb#*=}: not an executable"
done

ARGS=(--vdev net_iavf_sim0,peer=net_iavf_sim1 --vdev net_iavf_sim1,peer=net_iavf_sim0 --
    --forward-mode=io --tx-first --stats-period=1 "--run-time=$RUNTIME" --stats-format=json)
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -a)"
    lscpu | grep -E '^(CPU\(s\)|Model name|CPU family|Model|Stepping|L1d|L2|L3)' || true
    echo "commit: $(git -C "$here" rev-parse HEAD 2>/dev/null || echo unknown)"
    for lb in "$@"; do
        echo "binary ${lb%%=*}: ${lb#*=} sha256 $(sha256sum "${lb#*=}" | cut -c1-16)"
    done
    echo "settings: REPS=$REPS RUNTIME=$RUNTIME QUIET_PCT=$QUIET_PCT QUIET_WAIT=$QUIET_WAIT"
} >"$OUT/env.txt"

# Busy and total jiffies of all CPUs.
jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat; }

# Wait until other processes use at most QUIET_PCT % of one CPU (2 s
# samples); prints the last sample, "busy:N" if QUIET_WAIT ran out.
wait_quiet() {
    local start=$SECONDS b0 t0 b1 t1 pct
    while :; do
        read -r b0 t0 < <(jiffies)
        sleep 2
        read -r b1 t1 < <(jiffies)
        pct=$(( 100 * NCPU * (b1 - b0) / ((t1 - t0) > 0 ? (t1 - t0) : 1) ))
        (( pct <= QUIET_PCT )) && { echo "$pct"; return; }
        (( SECONDS - start >= QUIET_WAIT )) && { echo "busy:$pct"; return; }
        sleep 3
    done
}

printf 'round\tlabel\tmpps\tforeign_pct_of_a_cpu\tloadavg_1m\tquiet_before\n' >"$OUT/results.tsv"
for r in $(seq 1 "$REPS"); do
    order=("$@")
    (( r % 2 == 0 )) && mapfile -t order < <(printf '%s\n' "$@" | tac)
    for lb in "${order[@]}"; do
        label=${lb%%=*}
        bin=${lb#*=}
        q=quiet-wait-off
        (( QUIET_WAIT > 0 )) && q=$(wait_quiet)
        log=$OUT/$label.r$r.out
        printf '%q ' "$bin" "${ARGS[@]}" >>"$OUT/commands.txt"
        echo " > $label.r$r.out" >>"$OUT/commands.txt"
        read -r b0 t0 < <(jiffies)
        w0=$(date +%s.%N)
        # bash's `time` reports the child's own user and system time (all its threads).
        TIMEFORMAT='%U %S'
        { time "$bin" "${ARGS[@]}" >"$log" 2>&1; } 2>"$OUT/.time" || die "run failed: $log"
        w1=$(date +%s.%N)
        read -r b1 t1 < <(jiffies)
        read -r usr sys <"$OUT/.time"
        foreign=$(awk -v b="$((b1 - b0))" -v hz="$HZ" -v u="$usr" -v s="$sys" -v w0="$w0" -v w1="$w1" \
            'BEGIN { f = b / hz - u - s; if (f < 0) f = 0; printf "%.0f", 100 * f / (w1 - w0) }')
        load=$(cut -d' ' -f1 /proc/loadavg)
        m=$(grep '"event":"stats"' "$log" |
            jq -s '[.[2:][] | {t: .elapsed_s, p: ([.ports[].rx_pps * .elapsed_s] | add)}] |
                   ((map(.p) | add) / (map(.t) | add) / 1e6)')
        [[ -n "$m" && "$m" != null ]] || die "no statistics in $log"
        printf '%s\t%s\t%.3f\t%s\t%s\t%s\n' "$r" "$label" "$m" "$foreign" "$load" "$q" |
            tee -a "$OUT/results.tsv"
    done
done
rm -f "$OUT/.time"

{
    echo "demo packet rate (Mpps received over both ports, seconds 3..$RUNTIME), $REPS rounds"
    for lb in "$@"; do
        label=${lb%%=*}
        for sel in all quiet; do
            awk -F'\t' -v l="$label" -v sel="$sel" -v q="$QUIET_PCT" \
                'NR > 1 && $2 == l && (sel == "all" || $4 <= q) { print $3 }' "$OUT/results.tsv" |
                sort -n |
                awk -v l="$label" -v sel="$sel" -v q="$QUIET_PCT" '
                    { v[NR] = $1 }
                    END {
                        what = (sel == "all") ? "all runs" : "runs with foreign <= " q "% of a CPU"
                        if (NR == 0) { printf "  %s, %s: none\n", l, what; exit }
                        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                        printf "  %s, %s: median %.3f Mpps over %d (min %.3f, max %.3f)\n", l, what, m, NR, v[1], v[NR]
                    }'
        done
    done
    echo "foreign CPU use per run (% of one CPU, by others than testpmd): see results.tsv"
} | tee "$OUT/summary.txt"
echo "results in $OUT"
