#!/usr/bin/env bash
# memif-vs-dpdk.sh - nicpoll testpmd vs DPDK dpdk-testpmd over memif (issue 17).
# Two processes: the generator (txonly, memif client) pinned to CPU0, the
# receiver (rxonly, memif server) pinned to CPU1, 64-byte frames, burst 32,
# the same command line for both tools. Pairs tx->rx: np-np, dpdk-dpdk and the
# mixed np-dpdk, dpdk-np; modes: copy, and zc (the client, i.e. the generator,
# shares its mempool: zero-copy=yes). Rounds interleave every pair and mode.
#
# Run as root: sudo benches/memif-vs-dpdk.sh
# Env: REPS(3) WARM(2) MEAS(6) PAIRS("np-np dpdk-dpdk np-dpdk dpdk-np")
#      MODES("copy zc") THROUGHPUT(1) IPP(1) IPP_SHORT(4) IPP_LONG(10) DRIVER_IPP(1)
#      DPDK_TESTPMD(dpdk-testpmd) NICPOLL_TESTPMD(target/release/testpmd)
#      OUT(/tmp/nicpoll-bench/memif-<UTC time>)
#
# Rate: the receiver's per-second Rx-pps, mean of MEAS blocks after WARM
# blocks. The ratio column is nicpoll-to-nicpoll over dpdk-to-dpdk of the same
# round and mode (DPDK's rate moves between plateaus on this VM: compare only
# within a round).
#
# Instructions per packet (IPP, valgrind cachegrind, deterministic whatever
# the machine's load): one side runs under valgrind, its peer natively; each
# side is run twice (IPP_SHORT and IPP_LONG seconds) and IPP = delta(Ir) /
# delta(packets), which cancels start-up and tear-down. The receiver's peer
# floods it (the measured receiver runs with cache simulation, several times
# slower than the generator), so it takes full bursts and few empty polls. The generator's peer may not keep
# up when the machine is busy (the generator then drops what the ring cannot
# take, and a dropped packet costs it an allocation, a build and a free):
# so the ring is 2^14 slots (rsize=14) in these runs, for both tools, and the
# drops left are charged at their own cost, measured with a peer that refuses
# the connection (every packet dropped): IPP_tx = (dIr - dDrops * IPP_drop) /
# dSent. valgrind does not map hugepages well: these runs use --no-huge, and
# zero copy (which needs the pool in hugepage files) is measured natively only.
# On a busy machine the native peers lose their CPU for long stretches, and
# these whole-process figures grow with the empty polls and small bursts that
# follow; the lead's quiet-machine run is the one to quote.
#
# Driver instructions per packet (DRIVER_IPP, nicpoll only, load-independent):
# drivers/memif/benches/pair_burst.rs runs a connected client and server on
# one thread under callgrind, 32 frames each way per step, and the inclusive
# Ir of net_memif's rx_burst and tx_burst is divided by the packets.
set -u -o pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPS=${REPS:-3}; WARM=${WARM:-2}; MEAS=${MEAS:-6}
PAIRS=${PAIRS:-"np-np dpdk-dpdk np-dpdk dpdk-np"}; MODES=${MODES:-"copy zc"}
THROUGHPUT=${THROUGHPUT:-1}; IPP=${IPP:-1}; IPP_SHORT=${IPP_SHORT:-4}; IPP_LONG=${IPP_LONG:-10}
DRIVER_IPP=${DRIVER_IPP:-1}
DPDK=${DPDK_TESTPMD:-dpdk-testpmd}; NP=${NICPOLL_TESTPMD:-$PWD/target/release/testpmd}
OUT=${OUT:-/tmp/nicpoll-bench/memif-$(date -u +%Y%m%dT%H%M%SZ)}
[[ $(id -u) == 0 ]] || { echo "run as root (hugepages, /run)" >&2; exit 1; }
command -v "$DPDK" >/dev/null || { echo "$DPDK missing: apt-get install dpdk-dev librte-net-memif23" >&2; exit 1; }
[[ -x $NP ]] || { echo "$NP missing: cargo build --release -p testpmd" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq missing: apt-get install jq" >&2; exit 1; }
if (( IPP )); then command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install valgrind" >&2; exit 1; }; fi
mkdir -p "$OUT/logs" "$OUT/bin"; cp -f "$NP" "$OUT/bin/nicpoll-testpmd"; NP=$OUT/bin/nicpoll-testpmd
CMDS=$OUT/commands.txt; : > "$CMDS"
RES=$OUT/results.tsv; printf 'round\tmode\tpair\trx_mpps\ttx_mpps\ttx_dropped_pct\tstatus\n' > "$RES"
TAG=mb$$; PIDS=(); PREFIXES=(); SOCKS=()
log() { printf '[%s] %s\n' "$(date +%T)" "$*" | tee -a "$OUT/run.log" >&2; }
cleanup() {
  local p; for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 1; for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${PREFIXES[@]}"; do rm -rf "/var/run/dpdk/$p"; rm -f /dev/hugepages/"$p"* 2>/dev/null; done
  for p in "${SOCKS[@]}"; do rm -f "$p"; done
}
trap cleanup EXIT; trap 'exit 130' INT TERM
mkfifo "$OUT/.nap"; exec 9<>"$OUT/.nap"; rm -f "$OUT/.nap"
nap() { read -r -t "$1" -u 9 _ || true; }

tool_bin() { if [[ $1 == dpdk ]]; then echo "$DPDK"; else echo "$NP"; fi; }
# The command line shared by both tools; only the output format differs
# (nicpoll prints JSON for this script), and DPDK's zero-copy client needs
# --single-file-segments (DPDK refuses zero-copy without it; nicpoll's pool is
# always one file per allocation).
eal() {  # tool prefix role mode nohuge
  local -a a=(--no-pci --file-prefix="$2")
  if [[ $5 == 1 ]]; then a+=(--no-huge -m 128); else a+=(-m 128); fi
  [[ $1 == dpdk && $3 == client && $4 == zc ]] && a+=(--single-file-segments)
  echo "${a[@]}"
}
vdev() {  # role mode sock [extra]
  local v="net_memif0,role=$1,socket=$3,socket-abstract=no${4:-}"
  [[ $1 == client && $2 == zc ]] && v+=",zero-copy=yes"
  echo "--vdev=$v"
}
app() {  # tool fwd-mode
  local -a a=(--forward-mode="$2" --burst=32 --stats-period=1 --nb-cores=1 --rxq=1 --txq=1 --total-num-mbufs=16384)
  [[ $2 == txonly ]] && a+=(--txpkts=64)
  [[ $1 == np ]] && a+=(--stats-format=json)
  echo "${a[@]}"
}
launch() {  # var log seconds cmd...
  local v=$1 lg=$2 t=$3; shift 3
  local -a cmd=(timeout -s INT -k 10 "$t" "$@")
  printf '%q ' "${cmd[@]}" >> "$CMDS"; echo >> "$CMDS"
  "${cmd[@]}" > "$lg" 2> "${lg%.log}.err" < /dev/null &
  printf -v "$v" '%s' $!; PIDS+=($!)
}
blocks() {  # tool log
  [[ -e $2 ]] || { echo 0; return; }
  if [[ $1 == dpdk ]]; then grep -ac 'Port statistics' "$2"; else grep -c '"event":"stats"' "$2"; fi
}
samples() {  # tool log -> "rx_pps tx_pps" per block
  if [[ $1 == dpdk ]]; then
    awk '/Rx-pps:/{r=$2} /Tx-pps:/{print r, $2}' "$2"
  else
    grep '"event":"stats"' "$2" | jq -r '.ports[0] | "\(.rx_pps) \(.tx_pps // 0)"'
  fi
}
wait_blocks() {  # tool log n pid timeout
  local t0=$SECONDS
  while (( $(blocks "$1" "$2") < $3 )); do
    kill -0 "$4" 2>/dev/null || return 1; (( SECONDS - t0 > $5 )) && return 2; nap 0.2
  done
}
wait_sock() { local t0=$SECONDS; while [[ ! -S $1 ]] && (( SECONDS - t0 < 20 )); do nap 0.1; done; [[ -S $1 ]]; }

RUN_RX=NA RUN_TX=NA RUN_DROP=NA RUN_STATUS=
run_rate() {  # round mode pair
  local r=$1 m=$2 pair=$3 tx=${3%-*} rx=${3#*-}
  local sock=/run/$TAG-$m-$pair-$r.sock base=$OUT/logs/$m-$pair-r$r rxp txp pxr pxt
  SOCKS+=("$sock"); rm -f "$sock"
  pxr=$TAG-rx-$r$RANDOM; pxt=$TAG-tx-$r$RANDOM; PREFIXES+=("$pxr" "$pxt")
  RUN_RX=NA RUN_TX=NA RUN_DROP=NA RUN_STATUS=ok
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
    local b0; b0=$(blocks $rx "$base-rx.log")
    wait_blocks $rx "$base-rx.log" $((b0 + WARM + MEAS)) $rxp $((WARM + MEAS + 20)) || RUN_STATUS=short
    samples $rx "$base-rx.log" > "$base-rx.samples"; samples $tx "$base-tx.log" > "$base-tx.samples"
    RUN_RX=$(awk -v a=$((b0 + WARM + 1)) -v b=$((b0 + WARM + MEAS)) 'NR>=a&&NR<=b{s+=$1;n++} END{if(n) printf "%.3f", s/n/1e6; else print "NA"}' "$base-rx.samples")
    RUN_TX=$(awk -v m=$MEAS '{a[NR]=$2} END{n=0;for(i=NR-m+1;i<=NR;i++) if(i>0){s+=a[i];n++}; if(n) printf "%.3f", s/n/1e6; else print "NA"}' "$base-tx.samples")
    RUN_DROP=$(awk -v rx=$RUN_RX -v tx=$RUN_TX 'BEGIN{ if (tx+0 > 0) printf "%.0f", 100*(1-rx/tx); else print "NA" }')
  fi
  kill -INT "$txp" 2>/dev/null; wait "$txp" 2>/dev/null
  kill -INT "$rxp" 2>/dev/null; wait "$rxp" 2>/dev/null
  rm -f "$sock"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$m" "$pair" "$RUN_RX" "$RUN_TX" "$RUN_DROP" "$RUN_STATUS" >> "$RES"
  log "r$r $m $pair: receiver $RUN_RX Mpps, generator offered $RUN_TX Mpps ($RUN_STATUS)"
}

# ---- instructions per packet
# One valgrind run: prints "Ir sent dropped received" of the measured side.
ipp_run() {  # tool side(tx|rx) seconds peer-extra(vdev suffix for the client) label
  local t=$1 side=$2 secs=$3 extra=$4 label=$5
  local sock=/run/$TAG-ipp-$label.sock peerp mp px1=$TAG-ippa$RANDOM px2=$TAG-ippb$RANDOM
  local base=$OUT/logs/ipp-$label peer_tool=$t
  SOCKS+=("$sock"); PREFIXES+=("$px1" "$px2"); rm -f "$sock"
  # The peer is the same tool, native, on the other CPU. A measured receiver
  # must be slower than its generator, or it counts polls that find nothing:
  # its cachegrind also simulates the caches, which slows it a few times more
  # (the instruction count is the same).
  local -a vg=(valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null)
  if [[ $side == rx ]]; then
    vg=(valgrind --tool=cachegrind --cache-sim=yes --cachegrind-out-file=/dev/null)
    launch mp "$base.log" $((secs * 4 + 60)) "${vg[@]}" "$(tool_bin $t)" $(eal $t $px1 server copy 1) --lcores=0@1,1@1 \
      $(vdev server copy $sock) -- $(app $t rxonly)
    wait_sock "$sock" || { echo "NA NA NA NA"; return; }
    launch peerp "$base-peer.log" $((secs * 4 + 60)) "$(tool_bin $peer_tool)" $(eal $peer_tool $px2 client copy 1) --lcores=0@0,1@0 \
      $(vdev client copy $sock ",rsize=14") -- $(app $peer_tool txonly)
  else
    launch peerp "$base-peer.log" $((secs * 4 + 60)) "$(tool_bin $peer_tool)" $(eal $peer_tool $px2 server copy 1) --lcores=0@1,1@1 \
      $(vdev server copy $sock) -- $(app $peer_tool rxonly)
    wait_sock "$sock" || { echo "NA NA NA NA"; return; }
    launch mp "$base.log" $((secs * 4 + 60)) "${vg[@]}" "$(tool_bin $t)" $(eal $t $px1 client copy 1) --lcores=0@0,1@0 \
      $(vdev client copy $sock ",rsize=14$extra") -- $(app $t txonly)
  fi
  # Measure from the first statistics block with traffic (the handshake is
  # slow under valgrind) for `secs` more blocks, then stop the measured
  # process first (its final statistics need the peer connected).
  local t0=$SECONDS
  until samples $t "$base.log" 2>/dev/null | awk '$1+$2>0{f=1} END{exit !f}'; do
    kill -0 "$mp" 2>/dev/null && (( SECONDS - t0 < 120 )) || break; nap 0.3
  done
  wait_blocks $t "$base.log" $(( $(blocks $t "$base.log") + secs )) $mp $((secs * 10 + 60)) >/dev/null
  kill -INT "$mp" 2>/dev/null; wait "$mp" 2>/dev/null
  kill -INT "$peerp" 2>/dev/null; wait "$peerp" 2>/dev/null
  rm -f "$sock"
  local ir sent drop recv
  ir=$(grep -a 'I *refs:' "$base.err" | tail -1 | awk '{gsub(",","",$NF); print $NF}')
  if [[ $t == np ]]; then
    read -r sent drop recv < <(grep '"event":"final"' "$base.log" | jq -r '.total | "\(.tx_packets) \(.tx_dropped) \(.rx_packets)"')
  else
    read -r sent drop recv < <(awk '/Accumulated forward statistics/{a=1} a&&/RX-packets:/{r=$2} a&&/TX-packets:/{s=$2; d=$4} END{print s+0, d+0, r+0}' "$base.log")
  fi
  echo "${ir:-NA} ${sent:-NA} ${drop:-NA} ${recv:-NA}"
}
ipp_side() {  # tool side -> IPP
  local t=$1 side=$2 a b
  a=$(ipp_run $t $side $IPP_SHORT "" $t-$side-s); b=$(ipp_run $t $side $IPP_LONG "" $t-$side-l)
  echo "$t $side short: $a long: $b" >> "$OUT/ipp.raw"
  if [[ $side == rx ]]; then
    awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," "); split(b,y," "); if (y[4]-x[4] > 0) printf "%.1f", (y[1]-x[1])/(y[4]-x[4]); else print "NA"}'
  else
    # The cost of a dropped packet: the same generator against a server that
    # refuses it (id=1 is nobody's), so every packet is dropped.
    local c d
    c=$(ipp_run $t tx $IPP_SHORT ",id=1" $t-drop-s); d=$(ipp_run $t tx $IPP_LONG ",id=1" $t-drop-l)
    echo "$t drop short: $c long: $d" >> "$OUT/ipp.raw"
    awk -v a="$a" -v b="$b" -v c="$c" -v d="$d" 'BEGIN{split(a,x," "); split(b,y," "); split(c,u," "); split(d,v," ");
      cd = (v[3]-u[3] > 0) ? (v[1]-u[1])/(v[3]-u[3]) : 0;
      ds = y[2]-x[2]; dd = y[3]-x[3];
      if (ds > 0) printf "%.1f (long run: %.0f%% of generated packets dropped, charged %.1f instr each)", ((y[1]-x[1]) - dd*cd)/ds, 100*y[3]/(y[2]+y[3]), cd; else print "NA"}'
  fi
}

{ date -u; uname -r; dpkg-query -W dpdk dpdk-dev librte-net-memif23 2>/dev/null; sha256sum "$NP"; echo "REPS=$REPS WARM=$WARM MEAS=$MEAS PAIRS=$PAIRS MODES=$MODES"; uptime; } > "$OUT/env.txt" 2>&1
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
  : > "$OUT/ipp.raw"
  {
    echo "Instructions per packet (valgrind cachegrind, copy mode, --no-huge, rsize=14):"
    for t in np dpdk; do
      echo "  $t receiver (rxonly, server):  $(ipp_side $t rx)"
      echo "  $t generator (txonly, client): $(ipp_side $t tx)"
    done
  } | tee -a "$OUT/summary.txt"
fi
if (( DRIVER_IPP )); then
  bench=$(cargo bench -p nicpoll-memif --bench pair_burst --no-run --message-format=json 2>/dev/null \
    | jq -r 'select(.executable != null and .target.name == "pair_burst") | .executable' | tail -1)
  if [[ -x ${bench:-} ]]; then
    cp -f "$bench" "$OUT/bin/pair_burst"
    {
      echo "net_memif driver instructions per packet (callgrind, one thread, burst 32, 64-byte frames):"
      for m in copy zc; do
        n=20000
        if [[ $m == zc ]] && (( $(awk '/HugePages_Free/{print $2}' /proc/meminfo) < 8 )); then echo "  $m: no free hugepages"; continue; fi
        valgrind --tool=callgrind --callgrind-out-file="$OUT/pair-$m.cg" "$OUT/bin/pair_burst" $m $n > "$OUT/logs/pair-$m.log" 2>&1
        pk=$((n * 64))
        # Sorted by inclusive cost: the first line naming a burst function is its total.
        ann=$(callgrind_annotate --inclusive=yes "$OUT/pair-$m.cg" 2>"$OUT/logs/pair-$m.annotate.err")
        rx=$(grep -F 'Held<nicpoll_memif::queue::MemifRx> as nicpoll::port::RxQueue>::rx_burst' <<< "$ann" | head -1 | awk '{gsub(",","",$1); print $1}')
        tx=$(grep -F 'Held<nicpoll_memif::queue::MemifTx> as nicpoll::port::TxQueue>::tx_burst' <<< "$ann" | head -1 | awk '{gsub(",","",$1); print $1}')
        awk -v rx="${rx:-0}" -v tx="${tx:-0}" -v pk=$pk -v m=$m 'BEGIN {printf "  %s: rx_burst %.1f, tx_burst %.1f (mean of the client and the server; mbuf allocation and freeing included)\n", m, rx/pk, tx/pk}'
      done
    } | tee -a "$OUT/summary.txt"
  else
    log "pair_burst did not build (run from the repository with cargo)"
  fi
fi
log "done: $OUT/summary.txt"
