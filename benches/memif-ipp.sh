#!/usr/bin/env bash
# memif-ipp.sh - instructions per packet of nicpoll's testpmd and DPDK's
# dpdk-testpmd over memif, per side (receiver: rxonly, memif server;
# generator: txonly, memif client) and mode (copy; zc: the client shares its
# mempool), measured inside one run so that start-up costs nothing.
#
# Run as root from the repository: sudo benches/memif-ipp.sh
# Env: TOOLS("np dpdk") SIDES("rx tx") MODES("copy zc") WARM(3) MEAS(6) WINDOWS(3) RSIZE(14) ZC_RSIZE(12)
#      NP_LATENCY(0: nicpoll runs with --no-latency, see memif-lib.sh)
#      DPDK_TESTPMD(dpdk-testpmd) NICPOLL_TESTPMD(target/release/testpmd)
#      OUT(/tmp/nicpoll-bench/memif-ipp-<UTC time>)
#
# Method. The measured side runs under callgrind (it counts the instructions
# the guest executes, whatever the machine's load; this VM has no PMU, so
# `perf stat -e instructions` is not supported), its peer natively, the same
# tool, on the other CPU. Once frames flow and WARM statistics blocks have
# passed, the script waits for the next block, zeroes callgrind's counters
# (callgrind_control -z) and notes that block's cumulative packet count; MEAS
# blocks later it dumps them (callgrind_control -d) and notes the count again.
# IPP = Ir of the dump / packets between the two blocks. Both counter actions
# follow their block by the same delay (the script's poll and vgdb's signal,
# ~0.2 s), so at a steady rate the misalignment cancels; the handshake,
# start-up and tear-down are outside the window whatever they cost.
#
# The receiver under callgrind is ~50 times slower than its native generator,
# so its ring is always full and it takes full bursts of 32 (the script
# prints the mean burst where the tool's symbols allow: nicpoll). The
# generator under callgrind is slower than its native receiver, so every
# burst it builds is sent; a ring of 2^14 slots (rsize=14, both tools) covers
# the receiver losing its CPU for a while on a busy machine; nicpoll reports
# the drops inside the window, DPDK's drops are in its final statistics.
# Zero copy: 2^12 slots (ZC_RSIZE), as a zero-copy client's ring holds mbufs
# of its pool of 16384: a ring as large as the pool takes every mbuf, and
# neither tool's txonly calls its transmit again once it cannot allocate (the
# transmit is where both take back what the peer has read).
#
# Whole process: every thread (the forwarding lcore, the main thread's
# statistics, the control threads). Driver: the burst function inclusive
# (mbuf allocation and freeing included): nicpoll's rx_burst/tx_burst, and
# DPDK's entry into librte_net_memif from the forwarding function (its
# objects are stripped; that callee is eth_memif_rx or eth_memif_tx), with
# the packets per call, which says whether the bursts were full.
#
# Zero copy needs the pool in hugepage files; valgrind maps them for nicpoll,
# DPDK's EAL does not start under valgrind with hugepages (it is measured with
# --no-huge, copy mode only): the zc rows say so when they fail.
set -u -o pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
TOOLS=${TOOLS:-"np dpdk"}; SIDES=${SIDES:-"rx tx"}; MODES=${MODES:-"copy zc"}
WARM=${WARM:-3}; MEAS=${MEAS:-6}; WINDOWS=${WINDOWS:-3}; RSIZE=${RSIZE:-14}; ZC_RSIZE=${ZC_RSIZE:-12}
OUT=${OUT:-/tmp/nicpoll-bench/memif-ipp-$(date -u +%Y%m%dT%H%M%SZ)}
source benches/memif-lib.sh
[[ $(id -u) == 0 ]] || { echo "run as root (hugepages, /run)" >&2; exit 1; }
command -v "$DPDK" >/dev/null || { echo "$DPDK missing: apt-get install dpdk librte-net-memif23" >&2; exit 1; }
[[ -x $NP ]] || { echo "$NP missing: cargo build --release -p testpmd" >&2; exit 1; }
for c in jq valgrind callgrind_control callgrind_annotate; do
  command -v $c >/dev/null || { echo "$c missing: apt-get install jq valgrind" >&2; exit 1; }
done
mkdir -p "$OUT/logs" "$OUT/bin"; cp -f "$NP" "$OUT/bin/nicpoll-testpmd"; NP=$OUT/bin/nicpoll-testpmd
CMDS=$OUT/commands.txt; : >> "$CMDS"
TAG=mi$$
trap cleanup EXIT; trap 'exit 130' INT TERM
open_nap

# Cumulative packets of the measured side in block $3 (1-based).
count_at() {  # tool side log block
  totals "$1" "$3" | awk -v b="$4" -v s="$2" 'NR==b{print (s=="rx") ? $1 : $2}'
}
now() { date +%s.%N; }
# The count at the middle of [ta, tb] (a counter action), from blocks n and
# n+1 seen at t0 and t1.
at_time() {  # tool side log n t0 t1 ta tb
  local x y
  x=$(count_at "$1" "$2" "$3" "$4"); y=$(count_at "$1" "$2" "$3" $(($4 + 1)))
  awk -v x="$x" -v y="$y" -v t0="$5" -v t1="$6" -v ta="$7" -v tb="$8" \
    'BEGIN{ f = (t1 > t0) ? ((ta + tb) / 2 - t0) / (t1 - t0) : 0; printf "%.0f", x + (y - x) * f }'
}
dropped_at() { totals "$1" "$2" | awk -v b="$3" 'NR==b{print $3}'; }

# One dump: "score|IPP summary", the score saying how close its bursts were
# to full (receiver, and DPDK's generator) or minus its drops (nicpoll's
# generator).
window() {  # tool side dump packets dropped0 dropped1
  local t=$1 side=$2 dump=$3 pk=$4 ann ir f line calls a drop="" score
  [[ -s $dump ]] || { echo "0|FAIL(no dump $dump)"; return; }
  (( pk > 0 )) || { echo "0|FAIL(no packets in the window)"; return; }
  ir=$(grep -a '^summary:' "$dump" | awk '{print $2}')
  if [[ $t == np ]]; then
    if [[ $side == rx ]]; then f='as nicpoll::port::RxQueue>::rx_burst'; else f='as nicpoll::port::TxQueue>::tx_burst'; fi
    line=$(callgrind_annotate --tree=calling --inclusive=yes "$dump" 2>/dev/null | grep -F "$f (" | head -1)
  else
    # DPDK's objects are stripped: its burst function is the entry into
    # librte_net_memif that the forwarding function calls.
    line=$(callgrind_annotate --tree=calling --inclusive=yes "$dump" 2>/dev/null | grep -E '^ *[0-9,]+ .*>  .*librte_net_memif' | head -1)
  fi
  calls=$(sed -E 's/.*\(([0-9,]+)x\).*/\1/; s/,//g' <<< "$line"); a=$(awk '{gsub(",","",$1); print $1}' <<< "$line")
  [[ $5 != NA && -n $5 && -n $6 ]] && drop=", $(($6 - $5)) dropped"
  awk -v ir="$ir" -v p="$pk" -v a="${a:-0}" -v c="${calls:-0}" -v s="$side" -v dr="$drop" -v d0="$5" -v d1="$6" 'BEGIN{
    ppc = (c > 0) ? p / c : 0
    # Over 32 per call is the interpolation error, under is partial bursts.
    score = (s == "rx" || d0 == "NA") ? -((ppc > 32) ? ppc - 32 : 32 - ppc) : -(d1 - d0)
    printf "%.3f|%.1f whole process, driver %s_burst %.1f (%d packets, %.1f per call%s)\n", score, ir / p, s, a / p, p, ppc, dr }'
}

measure() {  # tool side mode
  local t=$1 side=$2 m=$3 label=$1-$2-$3
  local sock=/run/$TAG-$label.sock base=$OUT/logs/$label mp peerp vp
  local pxm=$TAG-m$RANDOM pxp=$TAG-p$RANDOM nohuge=1
  local rsize=$RSIZE
  [[ $m == zc ]] && { nohuge=0; rsize=$ZC_RSIZE; }
  SOCKS+=("$sock"); PREFIXES+=("$pxm" "$pxp"); rm -f "$sock"
  local -a vg=(valgrind --tool=callgrind --callgrind-out-file="$base.cg" --dump-instr=no --compress-strings=no)
  if [[ $side == rx ]]; then
    # Slower still (the cache simulation changes no count), so that a
    # generator losing its CPU for a while on a busy machine does not drain
    # the ring into empty polls.
    vg+=(--cache-sim=yes --branch-sim=yes)
    launch mp "$base.log" 900 "${vg[@]}" "$(tool_bin $t)" $(eal $t $pxm server $m $nohuge) --lcores=0@1,1@1 \
      $(vdev server $m $sock) -- $(app $t rxonly)
    wait_sock "$sock" || { echo "FAIL(no socket: $(tail -2 "$base.err" | tr '\n' ' '))"; return; }
    launch peerp "$base-peer.log" 900 "$(tool_bin $t)" $(eal $t $pxp client $m $nohuge) --lcores=0@0,1@0 \
      $(vdev client $m $sock ",rsize=$rsize") -- $(app $t txonly)
  else
    launch peerp "$base-peer.log" 900 "$(tool_bin $t)" $(eal $t $pxp server $m $nohuge) --lcores=0@1,1@1 \
      $(vdev server $m $sock) -- $(app $t rxonly)
    wait_sock "$sock" || { echo "FAIL(peer: no socket)"; return; }
    launch mp "$base.log" 900 "${vg[@]}" "$(tool_bin $t)" $(eal $t $pxm client $m $nohuge) --lcores=0@0,1@0 \
      $(vdev client $m $sock ",rsize=$rsize") -- $(app $t txonly)
  fi
  local t0=$SECONDS
  until vp=$(pgrep -P "$mp" -n valgrind 2>/dev/null || pgrep -P "$mp" -n); [[ -n $vp ]]; do
    (( SECONDS - t0 > 10 )) && break; nap 0.1
  done
  # Frames flowing: a block whose cumulative count is non-zero.
  local first=0 b
  t0=$SECONDS
  while (( SECONDS - t0 < 300 )); do
    kill -0 "$mp" 2>/dev/null || break
    first=$(totals $t "$base.log" | awk -v s=$side '((s=="rx")?$1:$2)>0{print NR; exit}')
    [[ -n $first ]] && break; nap 0.2
  done
  local result
  if [[ -z ${first:-} || $first == 0 ]]; then
    result="FAIL(no traffic: $(grep -ai 'error\|fail\|cause' "$base.err" "$base.log" 2>/dev/null | tail -1 | cut -c1-120))"
  else
    b=$((first + WARM))
    # Packets at the moment of each counter action, interpolated between the
    # block before it and the block after it by the time each was seen (the
    # script sees a block within 20 ms of its print). WINDOWS dumps of MEAS
    # blocks each, one after the other.
    local ta tb t0b t1b c_prev c w best="" line rows=""
    wait_blocks $t "$base.log" $b "$mp" $((WARM * 5 + 60)); t0b=$(now)
    ta=$(now); callgrind_control -z "$vp" > /dev/null; tb=$(now)
    wait_blocks $t "$base.log" $((b + 1)) "$mp" 60; t1b=$(now)
    c_prev=$(at_time $t $side "$base.log" $b "$t0b" "$t1b" "$ta" "$tb")
    local d_prev d
    d_prev=$(dropped_at $t "$base.log" $b)
    for w in $(seq 1 "$WINDOWS"); do
      local e=$((b + w * MEAS))
      wait_blocks $t "$base.log" $e "$mp" $((MEAS * 5 + 60)) || break; t0b=$(now)
      ta=$(now); callgrind_control -d "$vp" > /dev/null; tb=$(now)
      wait_blocks $t "$base.log" $((e + 1)) "$mp" 60 || break; t1b=$(now)
      c=$(at_time $t $side "$base.log" $e "$t0b" "$t1b" "$ta" "$tb"); d=$(dropped_at $t "$base.log" $e)
      line=$(window "$t" "$side" "$base.cg.$w" $((c - c_prev)) "$d_prev" "$d")
      rows+="      window $w: $line"$'\n'
      # The window whose bursts were fullest (receiver) or that dropped
      # least (generator): the one a busy machine disturbed least.
      best=$(printf '%s\n%s\n' "$best" "$line" | awk 'NF' | sort -t'|' -k1,1gr | head -1)
      c_prev=$c; d_prev=$d
    done
    if [[ -z $best ]]; then result="FAIL(no callgrind dump)"
    else result="$(cut -d'|' -f2- <<< "$best")"$'\n'"${rows%$'\n'}"; fi
  fi
  kill -INT "$mp" 2>/dev/null; wait "$mp" 2>/dev/null
  kill -INT "$peerp" 2>/dev/null; wait "$peerp" 2>/dev/null
  rm -f "$sock"
  echo "$result"
}

{ date -u; uname -r; dpkg-query -W dpdk librte-net-memif23 valgrind 2>/dev/null; sha256sum "$NP"; git rev-parse HEAD 2>/dev/null; echo "WARM=$WARM MEAS=$MEAS NP_LATENCY=$NP_LATENCY"; uptime; } > "$OUT/env.txt" 2>&1
{
  echo "Instructions per packet (callgrind, zeroed and dumped inside one run; $MEAS statistics blocks; 64-byte frames, burst 32; nicpoll $( ((NP_LATENCY)) && echo with || echo without) latency stamping, as DPDK):"
  for m in $MODES; do for t in $TOOLS; do for s in $SIDES; do
    name=$( [[ $s == rx ]] && echo "receiver (rxonly, server)" || echo "generator (txonly, client)")
    printf '  %-5s %-4s %-27s %s\n' "$m" "$t" "$name" "$(measure $t $s $m)"
  done; done; done
} | tee "$OUT/summary.txt"
log "done: $OUT/summary.txt"
