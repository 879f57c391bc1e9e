#!/usr/bin/env bash
# Threaded Mpps through two simulated VFs: nicpoll testpmd's demo command line
# (io forwarding, --tx-first), interleaved builds, quiet-machine waits.
# usage: threaded.sh OUT label1=bin1 label2=bin2 ...   (REPS rounds, RUNTIME s)
set -euo pipefail
OUT=$1; shift
REPS=${REPS:-4}; RUNTIME=${RUNTIME:-10}; QUIET_PCT=${QUIET_PCT:-5}; QUIET_WAIT=${QUIET_WAIT:-900}
mkdir -p "$OUT"
ARGS=(--vdev net_iavf_sim0,peer=net_iavf_sim1 --vdev net_iavf_sim1,peer=net_iavf_sim0 -- --forward-mode=io --tx-first --stats-period=1 "--run-time=$RUNTIME" --stats-format=json)
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat; }
wait_quiet() {
    local t0=$SECONDS
    while :; do
        read -r b0 t0j < <(busy); sleep 2; read -r b1 t1j < <(busy)
        local pct=$(( 100 * (b1 - b0) * 2 / ( (t1j - t0j) > 0 ? (t1j - t0j) : 1 ) ))
        # pct is in % of one CPU (2 CPUs)
        [[ $pct -le $QUIET_PCT ]] && { echo "$pct"; return; }
        (( SECONDS - t0 > QUIET_WAIT )) && { echo "busy:$pct"; return; }
        sleep 5
    done
}
: >"$OUT/results.tsv"
for r in $(seq 1 "$REPS"); do
    order=("$@"); (( r % 2 == 0 )) && order=($(printf '%s\n' "$@" | tac))
    for lb in "${order[@]}"; do
        label=${lb%%=*}; bin=${lb#*=}
        q=$(wait_quiet)
        log=$OUT/$label.r$r.out
        printf '%q ' "$bin" "${ARGS[@]}" >>"$OUT/commands.txt"; echo "  > $log" >>"$OUT/commands.txt"
        "$bin" "${ARGS[@]}" >"$log" 2>&1 || echo "run failed: $log" >&2
        # Mpps: rx packets of both ports over the stats periods 3..last (skip 2 s of warm-up)
        m=$(grep '"event":"stats"' "$log" | jq -s '[.[2:][] | {t: .elapsed_s, p: ([.ports[].rx_pps * .elapsed_s] | add)}] | ((map(.p) | add) / (map(.t) | add) / 1e6)')
        printf '%s\t%s\t%s\tquiet_before=%s\n' "$r" "$label" "$m" "$q" | tee -a "$OUT/results.tsv"
    done
done
for lb in "$@"; do
    label=${lb%%=*}
    awk -F'\t' -v l="$label" '$2 == l { print $3 }' "$OUT/results.tsv" | sort -n |
        awk -v l="$label" '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s median %.4f Mpps over %d runs (min %.4f, max %.4f)\n", l, m, NR, v[1], v[NR] }'
done | tee "$OUT/summary.txt"
