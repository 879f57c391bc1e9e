# memif-lib.sh - what benches/memif-vs-dpdk.sh and benches/memif-ipp.sh share:
# the command lines of both tools (identical but for nicpoll's output format
# and, unless NP_LATENCY=1, its --no-latency), process launch and clean-up, and
# readers of both tools' periodic statistics. Sourced, not run.
#
# Like with like: DPDK's txonly stamps nothing and its rxonly only counts and
# frees (app/test-pmd/rxonly.c, txonly.c of 22.11: no timestamp unless
# --txtimes, no latency unless --latencystats). nicpoll's txonly stamps every
# frame and its rxonly records one-way latency and sequence by default, about
# 60 instructions per packet on the receiver; --no-latency turns both off, so
# both tools do the same work per packet.

DPDK=${DPDK_TESTPMD:-dpdk-testpmd}
NP=${NICPOLL_TESTPMD:-$PWD/target/release/testpmd}
NP_LATENCY=${NP_LATENCY:-0}
PIDS=(); PREFIXES=(); SOCKS=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*" | tee -a "$OUT/run.log" >&2; }
cleanup() {
  local p; for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 1; for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${PREFIXES[@]}"; do rm -rf "/var/run/dpdk/$p"; rm -f /dev/hugepages/"$p"* 2>/dev/null; done
  for p in "${SOCKS[@]}"; do rm -f "$p"; done
}
open_nap() { mkfifo "$OUT/.nap"; exec 9<>"$OUT/.nap"; rm -f "$OUT/.nap"; }
nap() { read -r -t "$1" -u 9 _ || true; }

tool_bin() { if [[ $1 == dpdk ]]; then echo "$DPDK"; else echo "$NP"; fi; }
# EAL options. DPDK's zero-copy client needs --single-file-segments (DPDK
# refuses zero-copy without it; nicpoll's pool is one file per allocation).
eal() {  # tool prefix role mode nohuge
  local -a a=(--no-pci --file-prefix="$2")
  if [[ $5 == 1 ]]; then a+=(--no-huge -m 128); else a+=(-m 128); fi
  [[ $1 == dpdk && $3 == client && $4 == zc ]] && a+=(--single-file-segments)
  echo "${a[@]}"
}
vdev() {  # role mode sock [extra devargs, starting with a comma]
  local v="net_memif0,role=$1,socket=$3,socket-abstract=no${4:-}"
  [[ $1 == client && $2 == zc ]] && v+=",zero-copy=yes"
  echo "--vdev=$v"
}
app() {  # tool fwd-mode
  local -a a=(--forward-mode="$2" --burst=32 --stats-period=1 --nb-cores=1 --rxq=1 --txq=1 --total-num-mbufs=16384)
  [[ $2 == txonly ]] && a+=(--txpkts=64)
  [[ $1 == np ]] && a+=(--stats-format=json)
  [[ $1 == np && $NP_LATENCY == 0 ]] && a+=(--no-latency)
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
# Cumulative port counters per block: "rx_packets tx_packets tx_dropped"
# (DPDK's NIC statistics do not show what testpmd dropped: NA).
totals() {  # tool log
  if [[ $1 == dpdk ]]; then
    awk '/Port statistics/{b=1} b&&/RX-packets:/{r=$2} b&&/TX-packets:/{print r, $2, "NA"; b=0}' "$2"
  else
    grep '"event":"stats"' "$2" | jq -r '.ports[0] | "\(.rx_packets) \(.tx_packets) \(.tx_dropped)"'
  fi
}
wait_blocks() {  # tool log n pid timeout
  local t0=$SECONDS
  while (( $(blocks "$1" "$2") < $3 )); do
    kill -0 "$4" 2>/dev/null || return 1; (( SECONDS - t0 > $5 )) && return 2; nap 0.02
  done
}
wait_sock() { local t0=$SECONDS; while [[ ! -S $1 ]] && (( SECONDS - t0 < 60 )); do nap 0.1; done; [[ -S $1 ]]; }
# Foreign CPU: what the machine spent busy outside the given processes (and
# their children: launch's pids are timeout's), between two snapshots, in %
# of one CPU (2 CPUs: at most 200). /proc/stat busy = user nice system irq
# softirq; a process's utime + stime (/proc/PID/stat fields 14, 15) covers
# all its threads.
cpu_snap() {  # pids... -> "busy ours total" (clock ticks)
  local ours=0 p c t
  for p in "$@"; do
    for c in "$p" $(pgrep -P "$p" 2>/dev/null); do
      t=$(awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null) && ours=$((ours + ${t:-0}))
    done
  done
  awk -v o="$ours" '/^cpu /{print $2+$3+$4+$7+$8, o, $2+$3+$4+$5+$6+$7+$8+$9; exit}' /proc/stat
}
foreign_pct() {  # "snap0" "snap1"
  awk -v a="$1" -v b="$2" -v n="$(nproc)" 'BEGIN{split(a,x," "); split(b,y," "); t=(y[3]-x[3])/n;
    if (t > 0) printf "%.0f", 100*((y[1]-x[1])-(y[2]-x[2]))/t; else print "NA"}'
}
