#!/usr/bin/env bash
# veth-vs-dpdk.sh - nicpoll testpmd vs DPDK dpdk-testpmd, AF_PACKET and AF_XDP
# on a veth pair (issue 6). Two processes: generator (txonly) on CPU0, receiver
# (rxonly) on CPU1, both veth ends in a fresh netns per run (deleted after it).
# Run as root: sudo benches/veth-vs-dpdk.sh
# Env: REPS(3) WARM(2) MEAS(6) CASES("afpacket afxdp") PROFILE(1)
#      QUIET_PCT(5) QUIET_WAIT(120) DPDK_TESTPMD(/usr/bin/dpdk-testpmd)
#      NICPOLL_TESTPMD(/tmp/np-current/testpmd) OUT(/tmp/nicpoll-bench/veth-<time>)
#      PKTLEN(64): the generator's --txpkts. Above 1514 (jumbo frames) the veths get
#        MTU 9000. dpdk-testpmd: --mbuf-size=12416 --total-num-mbufs=16384 and
#        net_af_packet framesz=blocksz=12288 (its receive queue wants a ring frame
#        to fit one mbuf; its af_packet reports a 1518-byte limit, so no
#        --max-pkt-len, but receives what the ring holds). 22.11's af_xdp has no
#        multi-buffer and its UMEM frames are at most a page: its jumbo runs are
#        not attempted (status dpdk-no-jumbo). nicpoll: --mbuf-size=$NP_MBUF
#        (9216: one 16 KiB mbuf per frame; 1792: 2 KiB mbufs, every frame a
#        chain, the generator sending --txpkts=$NP_TXPKTS), frame sizes and
#        limits from the MTU. AF_XDP chunks are at most a page, so nicpoll's
#        af_xdp runs take 1792 (2 KiB mbufs, chains: multi-buffer AF_XDP) when
#        NP_MBUF is larger, with PKTLEN cut into 1664-byte segments.
#      NP_MBUF(9216) NP_TXPKTS(PKTLEN; e.g. 1664,1664,1664,1664,1664,680 with 1792)
# Rate = mean of the receiver's per-second Rx-pps over MEAS blocks after skipping
# WARM blocks following the generator's start. Foreign CPU = user+nice+system of
# all CPUs minus our testpmd processes and ksoftirqd, in % of one CPU.
set -u -o pipefail
export LC_ALL=C
REPS=${REPS:-3}; WARM=${WARM:-2}; MEAS=${MEAS:-6}; CASES=${CASES:-"afpacket afxdp"}
PROFILE=${PROFILE:-1}; QUIET_PCT=${QUIET_PCT:-5}; QUIET_WAIT=${QUIET_WAIT:-120}
DPDK=${DPDK_TESTPMD:-/usr/bin/dpdk-testpmd}; NP=${NICPOLL_TESTPMD:-/tmp/np-current/testpmd}
OUT=${OUT:-/tmp/nicpoll-bench/veth-$(date -u +%Y%m%dT%H%M%SZ)}
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq missing" >&2; exit 1; }
mkdir -p "$OUT/logs" "$OUT/bin"; cp -f "$NP" "$OUT/bin/nicpoll-testpmd"; NP=$OUT/bin/nicpoll-testpmd
CMDS=$OUT/commands.txt; : > "$CMDS"
PKTLEN=${PKTLEN:-64}; NP_MBUF=${NP_MBUF:-9216}; NP_TXPKTS=${NP_TXPKTS:-$PKTLEN}
JUMBO=0; (( PKTLEN > 1514 )) && JUMBO=1
RES=$OUT/results.tsv; printf 'case\ttool\tround\trx_mpps\tgen_tx_mpps\trx_missed\tforeign_pct\tstatus\n' > "$RES"
TAG=veth$$; PIDS=(); NSS=(); PREFIXES=()
log() { printf '[%s] %s\n' "$(date +%T)" "$*" | tee -a "$OUT/run.log" >&2; }
cleanup() {
  local p; for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 1; for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${NSS[@]}"; do ip netns del "$p" 2>/dev/null; done
  for p in "${PREFIXES[@]}"; do rm -rf "/var/run/dpdk/$p"; rm -f /dev/hugepages/"$p"* 2>/dev/null; done
}
trap cleanup EXIT; trap 'exit 130' INT TERM
(( $(cat /proc/sys/vm/nr_hugepages) >= 1024 )) || echo 1024 > /proc/sys/vm/nr_hugepages

# The measurement window must not start processes: each one preempts a
# polling receiver for a millisecond or more (its fork, exec and exit run on
# whichever CPU is free, and both are busy), which overflowed AF_XDP's 2048-entry
# rings and showed as rx-missed. So the window uses bash builtins only: CPU
# ticks from /proc with `read`, the clock from EPOCHREALTIME, and naps as a
# `read -t` on a FIFO nobody writes.
mkfifo "$OUT/.nap"; exec 9<>"$OUT/.nap"; rm -f "$OUT/.nap"
nap() { read -r -t "$1" -u 9 _ || true; }
# BUSY = CPU ticks (user+nice+system) of all CPUs
busy_ticks() { local _c u n s _r; read -r _c u n s _r < /proc/stat; BUSY=$((u + n + s)); }
# OWN = ticks (utime+stime) of the given pids (whole processes) + ksoftirqd
own_ticks() {
  local t=0 p f
  for p in "$@"; do
    if [[ -r /proc/$p/stat ]] && read -r -a f < "/proc/$p/stat"; then t=$((t + f[13] + f[14])); fi
  done; OWN=$t
}
tree_pids() { local p; for p in "$@"; do echo "$p"; tree_pids $(pgrep -P "$p"); done; }
quiet_gate() {  # wait until others use < QUIET_PCT % of one CPU over 2 s
  local t0=$SECONDS b0 b1
  while (( SECONDS - t0 < QUIET_WAIT )); do
    busy_ticks; b0=$BUSY; sleep 2; busy_ticks; b1=$BUSY
    (( (b1 - b0) * 100 / (2 * $(getconf CLK_TCK)) < QUIET_PCT )) && { echo $((SECONDS - t0)); return 0; }
  done; echo "busy"; return 1
}
blocks() {  # $1 tool $2 log (0 until the launched process has created its log)
  [[ -e $2 ]] || { echo 0; return; }
  if [[ $1 == dpdk ]]; then grep -ac 'Port statistics' "$2"; else grep -c '"event":"stats"' "$2"; fi
}
# per-block "rx_pps tx_pps rx_missed" lines
samples() {
  if [[ $1 == dpdk ]]; then
    awk '/Port statistics/{b++} /RX-missed:/{m=$4} /Rx-pps:/{r=$2} /Tx-pps:/{print r, $2, m}' "$2"
  else
    grep '"event":"stats"' "$2" | jq -r '.ports[0] | "\(.rx_pps) \(.tx_pps // 0) \(.rx_missed // 0)"'
  fi
}
wait_blocks() {  # tool log n pid timeout
  local t0=$SECONDS
  while (( $(blocks "$1" "$2") < $3 )); do
    kill -0 "$4" 2>/dev/null || return 1; (( SECONDS - t0 > $5 )) && return 2; nap 0.2
  done
}
vdev() {  # case iface tool
  local j=""; (( JUMBO )) && [[ $3 == dpdk ]] && j=",framesz=12288,blocksz=12288"
  if [[ $1 == afpacket ]]; then echo "--vdev=net_af_packet0,iface=$2$j"; else echo "--vdev=net_af_xdp0,iface=$2,start_queue=0,queue_count=1"; fi
}
xdp_chained() {  # case: nicpoll's mbufs would not fit an AF_XDP chunk
  (( JUMBO && NP_MBUF > 3840 )) && [[ $1 == afxdp ]]
}
jumbo_args() {  # tool case
  (( JUMBO )) || return 0
  if [[ $1 == dpdk ]]; then echo "--mbuf-size=12416 --total-num-mbufs=16384"
  elif xdp_chained $2; then echo "--mbuf-size=1792"
  else echo "--mbuf-size=$NP_MBUF"; fi
}
txpkts() {  # tool case
  if [[ $1 != nicpoll ]]; then echo "$PKTLEN"; return; fi
  xdp_chained $2 || { echo "$NP_TXPKTS"; return; }
  local n=$PKTLEN s=""; while (( n > 1664 )); do s+="1664,"; n=$((n - 1664)); done; echo "$s$n"
}
launch() {  # var log cmd...
  local v=$1 lg=$2; shift 2
  local -a cmd=(timeout -s TERM -k 5 "$@")
  printf '%q ' "${cmd[@]}" >> "$CMDS"; echo >> "$CMDS"
  "${cmd[@]}" > "$lg" 2> "${lg%.log}.err" < /dev/null &
  printf -v "$v" '%s' $!; PIDS+=($!)
}
RUN_RX= RUN_TX= RUN_MISS= RUN_FOR= RUN_STATUS=
run_one() {  # case tool round [profile]
  local c=$1 tool=$2 r=$3 prof=${4:-0}; local ns=vb-$TAG-$c-$tool-$r$([[ $prof == 1 ]] && echo p)
  local bin px base=$OUT/logs/$c-$tool-r$r$([[ $prof == 1 ]] && echo -prof)
  local -a extra
  if [[ $tool == dpdk ]]; then bin=$DPDK; else bin=$NP; fi
  RUN_RX=NA RUN_TX=NA RUN_MISS=NA RUN_FOR=NA RUN_STATUS=ok
  if (( JUMBO )) && [[ $tool == dpdk && $c == afxdp ]]; then
    printf '%s\t%s\t%s\tNA\tNA\tNA\tNA\tdpdk-no-jumbo\n' $c $tool $r >> "$RES"
    log "$c $tool r$r: not run (DPDK 22.11's af_xdp: no multi-buffer, UMEM frames at most a page)"
    return
  fi
  ip netns add "$ns" && NSS+=("$ns")
  ip -n "$ns" link add vba type veth peer name vbb
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$ns" link set lo up; ip -n "$ns" link set vba up; ip -n "$ns" link set vbb up
  (( JUMBO )) && { ip -n "$ns" link set vba mtu 9000; ip -n "$ns" link set vbb mtu 9000; }
  echo "# netns $ns: veth vba<->vbb, ipv6 off, up$( (( JUMBO )) && echo ', MTU 9000')" >> "$CMDS"
  local rxp= txp=
  for role in rx tx; do
    px=$TAG-$c-$tool-$role-r$r$RANDOM; PREFIXES+=("$px")
    if [[ $tool == dpdk ]]; then extra=(--no-pci --file-prefix=$px --huge-unlink); else extra=(--file-prefix=$px); fi
    if [[ $role == rx ]]; then
      launch rxp "$base-rx.log" 60 ip netns exec "$ns" "$bin" "${extra[@]}" --lcores=0@1,1@1 $(vdev $c vbb $tool) -- \
        --forward-mode=rxonly $(jumbo_args $tool $c) --burst=32 --stats-period=1 --nb-cores=1 --rxq=1 --txq=1 $([[ $tool == nicpoll ]] && echo --stats-format=json)
      wait_blocks $tool "$base-rx.log" 1 $rxp 20 || { RUN_STATUS="rx-failed"; log "$c $tool: receiver failed: $(tail -n 3 "$base-rx.err" "$base-rx.log" | tr '\n' ' ')"; break; }
    else
      launch txp "$base-tx.log" 60 ip netns exec "$ns" "$bin" "${extra[@]}" --lcores=0@0,1@0 $(vdev $c vba $tool) -- \
        --forward-mode=txonly $(jumbo_args $tool $c) --txpkts=$(txpkts $tool $c) --burst=32 --stats-period=1 --nb-cores=1 --rxq=1 --txq=1 $([[ $tool == nicpoll ]] && echo --stats-format=json)
      wait_blocks $tool "$base-tx.log" 1 $txp 20 || { RUN_STATUS="tx-failed"; log "$c $tool: generator failed: $(tail -n 3 "$base-tx.err" "$base-tx.log" | tr '\n' ' ')"; }
    fi
  done
  if [[ $RUN_STATUS == ok ]]; then
    local b0 n0 f0 o0 f1 o1 hz own; hz=$(getconf CLK_TCK)
    b0=$(blocks $tool "$base-rx.log")
    own=$(tree_pids $rxp $txp; pgrep -x ksoftirqd/0; pgrep -x ksoftirqd/1)
    wait_blocks $tool "$base-rx.log" $((b0 + WARM)) $rxp 20
    # The window: builtins only (see busy_ticks) until it has ended.
    busy_ticks; f0=$BUSY; own_ticks $own; o0=$OWN; local t0=$EPOCHREALTIME
    if [[ $prof == 1 ]]; then
      perf record -a -g -e cpu-clock -F 999 -o "$base.perf.data" -- sleep 4 > "$base.perf.log" 2>&1
    fi
    nap "$MEAS.7"  # the last block is printed about MEAS s after the first; be past it
    wait_blocks $tool "$base-rx.log" $((b0 + WARM + MEAS)) $rxp 30 || RUN_STATUS=short
    busy_ticks; f1=$BUSY; own_ticks $own; o1=$OWN; local t1=$EPOCHREALTIME
    RUN_FOR=$(awk -v d=$(( (f1-f0)-(o1-o0) )) -v hz=$hz -v t=$(awk -v a=$t0 -v b=$t1 'BEGIN{print b-a}') 'BEGIN{v=100*d/hz/t; if(v<0)v=0; printf "%.0f", v}')
    samples $tool "$base-rx.log" > "$base-rx.samples"; samples $tool "$base-tx.log" > "$base-tx.samples"
    read -r RUN_RX RUN_MISS < <(awk -v a=$((b0+WARM+1)) -v b=$((b0+WARM+MEAS)) 'NR==a-1{m0=$3} NR>=a&&NR<=b{s+=$1;n++;m=$3} END{printf "%.3f %d\n", s/n/1e6, m-m0}' "$base-rx.samples")
    RUN_TX=$(awk '{a[NR]=$2} END{n=0;for(i=NR-MEAS+1;i<=NR;i++) if(i>0){s+=a[i];n++}; printf "%.3f", s/n/1e6}' MEAS=$MEAS "$base-tx.samples")
  fi
  kill -TERM "$txp" 2>/dev/null; wait "$txp" 2>/dev/null
  kill -TERM "$rxp" 2>/dev/null; wait "$rxp" 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' $c $tool $r $RUN_RX $RUN_TX $RUN_MISS $RUN_FOR $RUN_STATUS >> "$RES"
  log "$c $tool r$r: rx $RUN_RX Mpps, gen tx $RUN_TX Mpps, rx-missed $RUN_MISS, foreign $RUN_FOR% ($RUN_STATUS)"
}

{ date -u; uname -r; dpkg-query -W dpdk; sha256sum "$NP"; echo "REPS=$REPS WARM=$WARM MEAS=$MEAS PKTLEN=$PKTLEN NP_MBUF=$NP_MBUF NP_TXPKTS=$NP_TXPKTS"; } > "$OUT/env.txt" 2>&1
for c in $CASES; do
  for r in $(seq 1 "$REPS"); do
    if (( r % 2 )); then order="dpdk nicpoll"; else order="nicpoll dpdk"; fi
    for tool in $order; do
      q=$(quiet_gate) || log "quiet gate: still busy after ${QUIET_WAIT}s"
      run_one $c $tool $r
    done
  done
done
if (( PROFILE )); then
  for c in $CASES; do for tool in dpdk nicpoll; do
    quiet_gate >/dev/null; run_one $c $tool 0 1
    b=$OUT/logs/$c-$tool-r0-prof
    [[ -s $b.perf.data ]] && perf report -i "$b.perf.data" --stdio --sort comm,dso --percent-limit 2 > "$b.report-comm-dso.txt" 2>/dev/null
    [[ -s $b.perf.data ]] && perf report -i "$b.perf.data" --stdio --no-children --sort cpu,comm,sym --percent-limit 1.5 -g none > "$b.report-cpu-sym.txt" 2>/dev/null
  done; done
fi
med() { sort -g | awk '{a[NR]=$1} END{if(NR==0){print "NA"}else if(NR%2){print a[(NR+1)/2]}else{printf "%.3f\n",(a[NR/2]+a[NR/2+1])/2}}'; }
{
  printf '%-9s %-8s %5s %9s %9s %10s %8s %s\n' case tool round rx_Mpps genTx_Mpps rx_missed foreign status
  awk -F'\t' 'NR>1 && $3>0 {printf "%-9s %-8s %5s %9s %9s %10s %7s%% %s\n",$1,$2,$3,$4,$5,$6,$7,$8}' "$RES"
  for c in $CASES; do
    d=$(awk -F'\t' -v c=$c '$1==c&&$2=="dpdk"&&$3>0&&$8=="ok"{print $4}' "$RES" | med)
    n=$(awk -F'\t' -v c=$c '$1==c&&$2=="nicpoll"&&$3>0&&$8=="ok"{print $4}' "$RES" | med)
    dt=$(awk -F'\t' -v c=$c '$1==c&&$2=="dpdk"&&$3>0&&$8=="ok"{print $5}' "$RES" | med)
    nt=$(awk -F'\t' -v c=$c '$1==c&&$2=="nicpoll"&&$3>0&&$8=="ok"{print $5}' "$RES" | med)
    printf 'median %-9s dpdk rx %s (gen %s)  nicpoll rx %s (gen %s)  ratio nicpoll/dpdk %s\n' $c $d $dt $n $nt \
      "$(awk -v a=$n -v b=$d 'BEGIN{if(a+0>0&&b+0>0) printf "%.2f", a/b; else print "NA"}')"
  done
} | tee "$OUT/summary.txt"
echo "results: $OUT"
