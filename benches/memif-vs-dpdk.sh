#!/usr/bin/env bash
# memif-vs-dpdk.sh - nicpoll testpmd vs DPDK dpdk-testpmd over memif (issue 17).
# Two processes: the generator (txonly, memif client) pinned to CPU0, the
# receiver (rxonly, memif server) pinned to CPU1, 64-byte frames, burst 32,
# the same command line for both tools (but nicpoll's JSON output and its
# --no-latency: DPDK stamps and records nothing, see benches/memif-lib.sh). Pairs tx->rx: np-np, dpdk-dpdk and the
# mixed np-dpdk, dpdk-np; modes: copy, and zc (the client, i.e. the generator,
# shares its mempool: zero-copy=yes). Rounds interleave every pair and mode.
#
# Run as root: sudo benches/memif-vs-dpdk.sh
# Env: REPS(3) WARM(2) MEAS(6) PAIRS("np-np dpdk-dpdk np-dpdk dpdk-np")
#      MODES("copy zc") THROUGHPUT(1) IPP(1) DRIVER_IPP(1) NP_LATENCY(0)
#      DPDK_TESTPMD(dpdk-testpmd) NICPOLL_TESTPMD(target/release/testpmd)
#      OUT(/tmp/nicpoll-bench/memif-<UTC time>)
#
# Rate: the receiver's per-second Rx-pps, mean of MEAS blocks after WARM
# blocks. Foreign: CPU the machine spent outside the two processes over the
# WARM + MEAS blocks, in % of one CPU (of 200; memif-lib.sh's foreign_pct).
# The ratio column is nicpoll-to-nicpoll over dpdk-to-dpdk of the same
# round and mode (DPDK's rate moves between plateaus on this VM: compare only
# within a round).
#
# Instructions per packet (IPP=1): benches/memif-ipp.sh, callgrind counters
# zeroed and dumped inside one run of each side, per tool and mode (see
# there); load-independent.
#
# Driver instructions per packet (DRIVER_IPP, nicpoll only, load-independent):
# drivers/memif/benches/pair_burst.rs runs a connected client and server on
# one thread under callgrind, 32 frames per step one way (client tx_burst ->
# server rx_burst, the benchmark's generator -> receiver path) or both ways,
# and the inclusive Ir of net_memif's rx_burst and tx_burst is divided by the
# packets.
set -u -o pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPS=${REPS:-3}; WARM=${WARM:-2}; MEAS=${MEAS:-6}
PAIRS=${PAIRS:-"np-np dpdk-dpdk np-dpdk dpdk-np"}; MODES=${MODES:-"copy zc"}
THROUGHPUT=${THROUGHPUT:-1}; IPP=${IPP:-1}; DRIVER_IPP=${DRIVER_IPP:-1}
OUT=${OUT:-/tmp/nicpoll-bench/memif-$(date -u +%Y%m%dT%H%M%SZ)}
source benches/memif-lib.sh
[[ $(id -u) == 0 ]] || { echo "run as root (hugepages, /run)" >&2; exit 1; }
command -v "$DPDK" >/dev/null || { echo "$DPDK missing: apt-get install dpdk-dev librte-net-memif23" >&2; exit 1; }
[[ -x $NP ]] || { echo "$NP missing: cargo build --release -p testpmd" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq missing: apt-get install jq" >&2; exit 1; }
mkdir -p "$OUT/logs" "$OUT/bin"; cp -f "$NP" "$OUT/bin/nicpoll-testpmd"; NP=$OUT/bin/nicpoll-testpmd
CMDS=$OUT/commands.txt; : > "$CMDS"
RES=$OUT/results.tsv; printf 'round\tmode\tpair\trx_mpps\ttx_mpps\ttx_dropped_pct\tstatus\tforeign_pct\n' > "$RES"
TAG=mb$$
trap cleanup EXIT; trap 'exit 130' INT TERM
open_nap

RUN_RX=NA RUN_TX=NA RUN_DROP=NA RUN_STATUS= RUN_FOREIGN=NA
run_rate() {  # round mode pair
  local r=$1 m=$2 pair=$3 tx=${3%-*} rx=${3#*-}
  local sock=/run/$TAG-$m-$pair-$r.sock base=$OUT/logs/$m-$pair-r$r rxp txp pxr pxt
  SOCKS+=("$sock"); rm -f "$sock"
  pxr=$TAG-rx-$r$RANDOM; pxt=$TAG-tx-$r$RANDOM; PREFIXES+=("$pxr" "$pxt")
  RUN_RX=NA RUN_TX=NA RUN_DROP=NA RUN_STATUS=ok RUN_FOREIGN=NA
  launch rxp "$base-rx.log" 60 "$(tool_bin $rx)" $(eal $rx $pxr server $m 0) --lcores=0@1,1@1 \
    $(vdev server $m $sock) -- $(app $rx rxonly)
  if ! wait_sock "$sock"; then RUN_STATUS=rx-failed; log "$m $pair: receiver failed: $(tail -3 "$base-rx.err" | tr '\n' ' ')"; fi
  if [[ $RUN_STATUS == ok ]]; then
    launch txp "$base-tx.log" 50 "$(tool_bin $tx)" $(eal $tx $pxt client $m 0) --lcores=0@0,1@0 \
      $(vdev client $m $sock) -- $(app $tx txonly)
    wait_blocks $rx "$base-rx.log" 1 $rxp 20 || RUN_STATUS=rx-failed
    wait_blocks $tx "$base-tx.log" 1 $txp 20 || RUN_STATUS=tx-failed
  fi
  if [[ $RUN_STATUS == ok ]]; then
    local b0 s0; b0=$(blocks $rx "$base-rx.log"); s0=$(cpu_snap "$rxp" "$txp")
    wait_blocks $rx "$base-rx.log" $((b0 + WARM + MEAS)) $rxp $((WARM + MEAS + 20)) || RUN_STATUS=short
    RUN_FOREIGN=$(foreign_pct "$s0" "$(cpu_snap "$rxp" "$txp")")
    samples $rx "$base-rx.log" > "$base-rx.samples"; samples $tx "$base-tx.log" > "$base-tx.samples"
    RUN_RX=$(awk -v a=$((b0 + WARM + 1)) -v b=$((b0 + WARM + MEAS)) 'NR>=a&&NR<=b{s+=$1;n++} END{if(n) printf "%.3f", s/n/1e6; else print "NA"}' "$base-rx.samples")
    RUN_TX=$(awk -v m=$MEAS '{a[NR]=$2} END{n=0;for(i=NR-m+1;i<=NR;i++) if(i>0){s+=a[i];n++}; if(n) printf "%.3f", s/n/1e6; else print "NA"}' "$base-tx.samples")
    RUN_DROP=$(awk -v rx=$RUN_RX -v tx=$RUN_TX 'BEGIN{ if (tx+0 > 0) printf "%.0f", 100*(1-rx/tx); else print "NA" }')
  fi
  kill -INT "$txp" 2>/dev/null; wait "$txp" 2>/dev/null
  kill -INT "$rxp" 2>/dev/null; wait "$rxp" 2>/dev/null
  rm -f "$sock"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$m" "$pair" "$RUN_RX" "$RUN_TX" "$RUN_DROP" "$RUN_STATUS" "$RUN_FOREIGN" >> "$RES"
  log "r$r $m $pair: receiver $RUN_RX Mpps, generator offered $RUN_TX Mpps, foreign CPU $RUN_FOREIGN% ($RUN_STATUS)"
}

{ date -u; uname -r; dpkg-query -W dpdk dpdk-dev librte-net-memif23 2>/dev/null; sha256sum "$NP"; echo "REPS=$REPS WARM=$WARM MEAS=$MEAS PAIRS=$PAIRS MODES=$MODES NP_LATENCY=$NP_LATENCY"; uptime; } > "$OUT/env.txt" 2>&1
if (( THROUGHPUT )); then
  (( $(cat /proc/sys/vm/nr_hugepages) >= 64 )) || { echo "needs hugepages: echo 1024 > /proc/sys/vm/nr_hugepages" >&2; exit 1; }
  for r in $(seq 1 "$REPS"); do
    # Interleaved: every pair and mode in each round, the order turned around
    # every other round.
    list=(); for m in $MODES; do for p in $PAIRS; do list+=("$m $p"); done; done
    if (( r % 2 == 0 )); then for ((i=${#list[@]}-1; i>=0; i--)); do run_rate "$r" ${list[i]}; done
    else for e in "${list[@]}"; do run_rate "$r" $e; done; fi
  done
  {
    echo "Packet rate (Mpps received), taken with uptime: $(uptime | sed 's/.*load/load/')"
    printf '%-6s %-5s' round mode; for p in $PAIRS; do printf ' %12s' "$p"; done; printf ' %10s\n' "np/dpdk"
    for r in $(seq 1 "$REPS"); do for m in $MODES; do
      printf '%-6s %-5s' "$r" "$m"
      for p in $PAIRS; do printf ' %12s' "$(awk -v r=$r -v m=$m -v p=$p '$1==r&&$2==m&&$3==p{print $4}' "$RES")"; done
      awk -v r=$r -v m=$m '$1==r&&$2==m&&$3=="np-np"{a=$4} $1==r&&$2==m&&$3=="dpdk-dpdk"{b=$4} END{ if (b+0>0 && a+0>0) printf " %10.2f\n", a/b; else printf " %10s\n", "NA"}' "$RES"
    done; done
    echo "Foreign CPU during each run (% of one CPU, of 200):"
    for r in $(seq 1 "$REPS"); do for m in $MODES; do
      printf '%-6s %-5s' "$r" "$m"
      for p in $PAIRS; do printf ' %12s' "$(awk -v r=$r -v m=$m -v p=$p '$1==r&&$2==m&&$3==p{print $8}' "$RES")"; done
      echo
    done; done
    for m in $MODES; do
      for p in $PAIRS; do
        printf 'median %-5s %-10s %s Mpps\n' "$m" "$p" "$(awk -v m=$m -v p=$p '$2==m&&$3==p&&$4!="NA"{print $4}' "$RES" | sort -g | awk '{a[NR]=$1} END{if(NR) print a[int((NR+1)/2)]; else print "NA"}')"
      done
    done
    echo "zero-copy over copy, per round (np-np, dpdk-dpdk):"
    for r in $(seq 1 "$REPS"); do
      awk -v r=$r '$1==r&&$3=="np-np"{n[$2]=$4} $1==r&&$3=="dpdk-dpdk"{d[$2]=$4} END{ printf "  round %s: nicpoll %.2f, dpdk %.2f\n", r, (n["copy"]>0?n["zc"]/n["copy"]:0), (d["copy"]>0?d["zc"]/d["copy"]:0)}' "$RES"
    done
  } | tee "$OUT/summary.txt"
fi
if (( IPP )); then
  OUT=$OUT/ipp NICPOLL_TESTPMD=$NP DPDK_TESTPMD=$DPDK MODES=$MODES benches/memif-ipp.sh
  cat "$OUT/ipp/summary.txt" >> "$OUT/summary.txt"
fi
if (( DRIVER_IPP )); then
  bench=$(cargo bench -p nicpoll-memif --bench pair_burst --no-run --message-format=json 2>/dev/null \
    | jq -r 'select(.executable != null and .target.name == "pair_burst") | .executable' | tail -1)
  if [[ -x ${bench:-} ]]; then
    cp -f "$bench" "$OUT/bin/pair_burst"
    {
      echo "net_memif driver instructions per packet (callgrind, one thread, burst 32, 64-byte frames):"
      for m in copy zc; do
        if [[ $m == zc ]] && (( $(awk '/HugePages_Free/{print $2}' /proc/meminfo) < 8 )); then echo "  $m: no free hugepages"; continue; fi
        for way in oneway pair; do
          n=20000; pk=$((n * 32)); [[ $way == pair ]] && pk=$((n * 64))
          cg=$OUT/pair-$m-$way.cg
          valgrind --tool=callgrind --callgrind-out-file="$cg" "$OUT/bin/pair_burst" $m $n $way > "$OUT/logs/pair-$m-$way.log" 2>&1
          # Sorted by inclusive cost: the first line naming a burst function is its total.
          ann=$(callgrind_annotate --inclusive=yes "$cg" 2>"$OUT/logs/pair-$m-$way.annotate.err")
          rx=$(grep -F 'Held<nicpoll_memif::queue::MemifRx> as nicpoll::port::RxQueue>::rx_burst' <<< "$ann" | head -1 | awk '{gsub(",","",$1); print $1}')
          tx=$(grep -F 'Held<nicpoll_memif::queue::MemifTx> as nicpoll::port::TxQueue>::tx_burst' <<< "$ann" | head -1 | awk '{gsub(",","",$1); print $1}')
          what="client tx -> server rx, the benchmark's path"
          [[ $way == pair ]] && what="mean of both directions"
          awk -v rx="${rx:-0}" -v tx="${tx:-0}" -v pk=$pk -v m=$m -v w="$what" 'BEGIN {printf "  %-4s rx_burst %5.1f, tx_burst %5.1f (%s; mbuf allocation and freeing included)\n", m, rx/pk, tx/pk, w}'
        done
      done
    } | tee -a "$OUT/summary.txt"
  else
    log "pair_burst did not build (run from the repository with cargo)"
  fi
fi
log "done: $OUT/summary.txt"
