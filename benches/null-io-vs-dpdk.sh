#!/usr/bin/env bash
# null-io-vs-dpdk.sh - nicpoll testpmd vs DPDK dpdk-testpmd, io forwarding
# between two net_null ports on one forwarding core, measured interleaved.
#
# Run as root from anywhere:   sudo benches/null-io-vs-dpdk.sh
#
# What it does
#   1. Builds nicpoll's testpmd (cargo build --release) if it is missing or
#      older than the sources, and copies the binary into OUT/bin so that a
#      rebuild by someone else during the benchmark cannot change it.
#   2. REPS rounds; each round runs both tools once with the same command line
#         --no-pci -l 0,1 --vdev=net_null0 --vdev=net_null1 -- --forward-mode=io
#         --burst=$BURST --nb-cores=1 --rxq=1 --txq=1 --stats-period=1
#      (dpdk-testpmd adds --file-prefix=<unique> --huge-unlink and is stopped
#      with SIGTERM after enough stats blocks; nicpoll adds --file-prefix=<unique>
#      --run-time=N --stats-format=json). The order alternates per round
#      (D N, N D, D N, ...) so that a slow drift of the machine does not favour
#      one tool.
#   3. Window, identical for both: stats block k is the k-th periodic print,
#      covering second k-1..k of forwarding (DPDK's block 1 always shows 0 pps;
#      it is skipped with the warm-up). Blocks WARM+1 .. WARM+MEAS are used,
#      i.e. seconds WARM .. WARM+MEAS. Rate = packets / time summed over both
#      ports' Rx (= packets the forwarding core received and transmitted), each
#      block's duration recovered as dPackets/pps, so a late print does not bias
#      the result.
#   4. Contention: before every run it waits (at most QUIET_WAIT s) until other
#      processes use <= QUIET_PCT % of one CPU. During the window it measures
#      "foreign" CPU = all user+nice+system time minus our testpmd and the
#      ksoftirqd threads. A run with foreign > FOREIGN_MAX % is redone up to
#      RETRIES times (rejected attempts stay in results.tsv); a run still busy
#      after that counts and is flagged "busy".
#   5. IPP=1 (default): instructions per forwarded packet for both tools under
#      valgrind --tool=cachegrind --cache-sim=no (this VM has no PMU), with
#      --no-huge -m 512 --total-num-mbufs=16384. Two runs of different length
#      per tool (DPDK stopped after IPP_SHORT / IPP_LONG stats blocks, nicpoll
#      --run-time=IPP_SHORT / IPP_LONG); IPP = dIr / dPackets, which cancels
#      start-up and tear-down. Packets = forwarded packets (DPDK: "Accumulated
#      forward statistics" RX-packets; nicpoll: the final JSON's total.rx_packets).
#
# Environment
#   REPS(3) BURST(32) WARM(3) MEAS(6)    rounds, burst, skipped / measured seconds
#   OUT(/tmp/nicpoll-bench/null-io-vs-dpdk/<UTC time>)   results directory
#   IPP(1) IPP_SHORT(6) IPP_LONG(21)     instruction counts (0 to skip)
#   THROUGHPUT(1)                         0 to run only the IPP part
#   QUIET_PCT(5) QUIET_WAIT(300) FOREIGN_MAX(8) RETRIES(2)
#   APP_EXTRA("")     extra application options given to BOTH tools, e.g.
#                     APP_EXTRA=--total-num-mbufs=155456 (DPDK's default pool size)
#   DPDK_TESTPMD(/usr/bin/dpdk-testpmd)   NICPOLL_TESTPMD (a prebuilt binary: no build;
#                     NICPOLL_LABEL: free text saying what it was built from, for env.txt)
#   BUILD(auto)       auto: build if missing/stale; 1: always run cargo; 0: never
#   PREFIX_JITTER(1)  append a random-length (1-16 chars) tail to every --file-prefix.
#                     nicpoll's rate depends on its memory layout (measured: ~110 vs
#                     ~130 vs ~145 Mpps depending only on the length of the prefix
#                     string, which shifts its heap); the jitter samples layouts
#                     instead of measuring one by accident. 0: fixed prefixes.
#   HUGEPAGES(1024)   2 MiB pages to make sure are reserved
#
# Output (OUT): summary.txt (the table), results.tsv (one line per attempt),
#   commands.txt (every command exactly as run), env.txt, logs/ (every log,
#   parsed per-second samples), bin/ (the nicpoll binary that was measured).
#
# Exit status: 0 all runs succeeded; 1 bad setup (not root, missing tool, build
#   failed); 2 some run of a tool failed (see results.tsv and logs/).
#
# Safety: every process runs under `timeout`; only PIDs started here are ever
# signalled; every testpmd gets --no-pci (no PCI device, so eth0's virtio NIC
# is never probed); only this script's own --file-prefix files are removed.
set -u -o pipefail
export LC_ALL=C

REPS=${REPS:-3}
BURST=${BURST:-32}
WARM=${WARM:-3}
MEAS=${MEAS:-6}
IPP=${IPP:-1}
IPP_SHORT=${IPP_SHORT:-6}
IPP_LONG=${IPP_LONG:-21}
THROUGHPUT=${THROUGHPUT:-1}
QUIET_PCT=${QUIET_PCT:-5}
QUIET_WAIT=${QUIET_WAIT:-300}
FOREIGN_MAX=${FOREIGN_MAX:-8}
RETRIES=${RETRIES:-2}
APP_EXTRA=${APP_EXTRA:-}
DPDK_TESTPMD=${DPDK_TESTPMD:-/usr/bin/dpdk-testpmd}
NICPOLL_TESTPMD=${NICPOLL_TESTPMD:-}
BUILD=${BUILD:-auto}
PREFIX_JITTER=${PREFIX_JITTER:-1}
HUGEPAGES=${HUGEPAGES:-1024}
OUT=${OUT:-/tmp/nicpoll-bench/null-io-vs-dpdk/$(date -u +%Y%m%dT%H%M%SZ)}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TAG=nvd$$                      # unique part of every --file-prefix
EXIT=0
PIDS=() PREFIXES=()

die() { echo "null-io-vs-dpdk: $*" >&2; exit 1; }
for v in REPS BURST WARM MEAS IPP IPP_SHORT IPP_LONG THROUGHPUT QUIET_PCT QUIET_WAIT FOREIGN_MAX RETRIES HUGEPAGES PREFIX_JITTER; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v=${!v} is not a non-negative integer"
done
(( WARM >= 1 )) || die "WARM must be >= 1 (DPDK's first stats block has no rate)"
(( MEAS >= 1 && REPS >= 1 )) || die "MEAS and REPS must be >= 1"
(( IPP_LONG > IPP_SHORT && IPP_SHORT >= 2 )) || die "need IPP_LONG > IPP_SHORT >= 2"
[[ $(id -u) == 0 ]] || die "run as root (hugepages, /var/run/dpdk)"

mkdir -p "$OUT/logs" "$OUT/bin" || die "cannot create $OUT"
RESULTS=$OUT/results.tsv
CMDS=$OUT/commands.txt
: > "$CMDS"
[[ -s $RESULTS ]] || printf 'tool\tround\tattempt\tstatus\tmpps\tsec_min\tsec_max\tforeign_pct\tsteal_pct\tquiet_wait_s\tlog\tfile_prefix\n' > "$RESULTS"

log() { printf '[%s] %s\n' "$(date +%T)" "$*" | tee -a "$OUT/run.log" >&2; }

cleanup() {
    local p c
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
        if kill -0 "$p" 2>/dev/null; then
            for c in $(pgrep -P "$p"); do kill -KILL "$c" 2>/dev/null; done
            kill -KILL "$p" 2>/dev/null
        fi
    done
    for p in "${PREFIXES[@]}"; do
        rm -rf "/var/run/dpdk/$p"
        rm -f /dev/hugepages/"$p"map_* /dev/hugepages/"$p"-* /dev/hugepages/"$p"_* 2>/dev/null
    done
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ------------------------------------------------------------------ preflight
command -v timeout >/dev/null || die "timeout (coreutils) is missing"
command -v jq >/dev/null || die "jq is missing: apt-get install -y jq"
[[ -x $DPDK_TESTPMD ]] || die "$DPDK_TESTPMD not found: apt-get install -y dpdk (or dpdk-dev)"
if (( IPP )); then command -v valgrind >/dev/null || die "valgrind is missing: apt-get install -y valgrind (or IPP=0)"; fi

find_cargo() {
    local c
    for c in "$(command -v cargo 2>/dev/null)" "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" /root/.cargo/bin/cargo; do
        [[ -n $c && -x $c ]] && { echo "$c"; return 0; }
    done
    return 1
}
if [[ -n $NICPOLL_TESTPMD ]]; then
    [[ -x $NICPOLL_TESTPMD ]] || die "NICPOLL_TESTPMD=$NICPOLL_TESTPMD is not executable"
    SRC_BIN=$NICPOLL_TESTPMD
else
    SRC_BIN=$REPO/target/release/testpmd
    need=0
    case $BUILD in
        1) need=1 ;;
        0) [[ -x $SRC_BIN ]] || die "$SRC_BIN missing and BUILD=0" ;;
        *) if [[ ! -x $SRC_BIN ]]; then need=1
           elif [[ -n $(find "$REPO/src" "$REPO/drivers" "$REPO/examples" "$REPO/Cargo.toml" "$REPO/Cargo.lock" \
                          -newer "$SRC_BIN" \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) -print -quit 2>/dev/null) ]]; then need=1
           fi ;;
    esac
    if (( need )); then
        CARGO=$(find_cargo) || die "cargo not found (needed to build $SRC_BIN)"
        log "building nicpoll: cargo build --release (in $REPO)"
        (cd "$REPO" && timeout 1800 "$CARGO" build --release) > "$OUT/logs/build.log" 2>&1 \
            || { tail -20 "$OUT/logs/build.log" >&2; die "cargo build --release failed (log: $OUT/logs/build.log)"; }
    fi
    [[ -x $SRC_BIN ]] || die "$SRC_BIN was not built"
fi
NICPOLL=$OUT/bin/nicpoll-testpmd
cp -f "$SRC_BIN" "$NICPOLL" || die "cannot copy $SRC_BIN"

# hugepages (2 MiB) on /dev/hugepages
nr=$(cat /proc/sys/vm/nr_hugepages)
if (( nr < HUGEPAGES )); then echo "$HUGEPAGES" > /proc/sys/vm/nr_hugepages; fi
if ! mountpoint -q /dev/hugepages; then
    mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages || die "cannot mount hugetlbfs at /dev/hugepages"
fi

{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -a)"
    lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|CPU family|Model:|Stepping|BogoMIPS|L1d|L2|L3|Hypervisor|Flags)' | sed 's/^Flags:.*/Flags: (avx512f: '"$(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)"', avx2: '"$(grep -qw avx2 /proc/cpuinfo && echo yes || echo no)"')/'
    grep -E 'MemTotal|HugePages_(Total|Free)|Hugepagesize' /proc/meminfo
    echo "pmu: $(dmesg 2>/dev/null | grep -m1 -i 'Performance Events' || echo 'dmesg: unknown')"
    echo "dpdk: $(dpkg-query -W -f='${Package} ${Version}\n' dpdk 2>/dev/null || echo '?') ($DPDK_TESTPMD)"
    echo "valgrind: $(valgrind --version 2>/dev/null || echo none)"
    echo "nicpoll binary: $SRC_BIN -> $NICPOLL sha256 $(sha256sum "$NICPOLL" | cut -c1-16)"
    if [[ -n $NICPOLL_TESTPMD ]]; then
        echo "nicpoll source: prebuilt NICPOLL_TESTPMD=$NICPOLL_TESTPMD (${NICPOLL_LABEL:-no NICPOLL_LABEL given})"
    else
        echo "nicpoll source: $REPO git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null) + $(git -C "$REPO" status --porcelain 2>/dev/null | wc -l) uncommitted paths"
    fi
    echo "rustc: $( (cd "$REPO" && rustc --version) 2>/dev/null || echo '?')"
    echo "settings: PREFIX_JITTER=$PREFIX_JITTER REPS=$REPS BURST=$BURST WARM=$WARM MEAS=$MEAS IPP=$IPP IPP_SHORT=$IPP_SHORT IPP_LONG=$IPP_LONG QUIET_PCT=$QUIET_PCT QUIET_WAIT=$QUIET_WAIT FOREIGN_MAX=$FOREIGN_MAX RETRIES=$RETRIES APP_EXTRA='$APP_EXTRA'"
} > "$OUT/env.txt" 2>&1

# ------------------------------------------------------------------ helpers
# shellcheck disable=SC2054  # "-l 0,1" is one argument
EAL=(--no-pci -l 0,1 --vdev=net_null0 --vdev=net_null1)
# shellcheck disable=SC2206
APP=(--forward-mode=io --burst="$BURST" --nb-cores=1 --rxq=1 --txq=1 --stats-period=1 $APP_EXTRA)

# launch OUTVAR STDOUT STDERR MAXSEC PREFIX cmd... : start under timeout, record the command
# (KILL_AFTER: seconds between timeout's TERM, or ours, and its KILL)
KILL_AFTER=10
launch() {
    local __v=$1 so=$2 se=$3 maxt=$4 prefix=$5; shift 5
    local -a cmd=(timeout -s TERM -k "$KILL_AFTER" "$maxt" "$@")
    [[ " $* " == *" --no-pci "* ]] || die "refusing to run without --no-pci: $*"
    { printf '# %s\n' "$(basename "$so")"; printf '%q ' "${cmd[@]}"; echo; } >> "$CMDS"
    "${cmd[@]}" > "$so" 2> "$se" < /dev/null &
    local _launched=$!
    PIDS+=("$_launched"); PREFIXES+=("$prefix")
    printf -v "$__v" '%s' "$_launched"
}
forget_pid() { local p keep=(); for p in "${PIDS[@]}"; do [[ $p != "$1" ]] && keep+=("$p"); done; PIDS=("${keep[@]}"); }
stop_pid() {  # SIGTERM to our timeout process (it forwards it), then reap; returns the exit status
    local rc
    kill -TERM "$1" 2>/dev/null
    wait "$1" 2>/dev/null; rc=$?
    forget_pid "$1"
    return "$rc"
}
reap_pid() { local rc; wait "$1" 2>/dev/null; rc=$?; forget_pid "$1"; return "$rc"; }

# number of complete periodic stats blocks so far
dpdk_blocks() { local c; c=$(grep -ac 'Port statistics' "$1" 2>/dev/null); echo "${c:-0}"; }
nicpoll_blocks() { local c; c=$(grep -c '"event":"stats"' "$1" 2>/dev/null); echo "${c:-0}"; }

# wait_for COUNTFN FILE N PID TIMEOUT -> 0 reached, 1 process ended, 2 timed out
wait_for() {
    local fn=$1 f=$2 n=$3 pid=$4 to=$5 t0=$SECONDS
    while :; do
        (( $($fn "$f") >= n )) && return 0
        kill -0 "$pid" 2>/dev/null || { (( $($fn "$f") >= n )) && return 0; return 1; }
        (( SECONDS - t0 >= to )) && return 2
        sleep 0.25
    done
}

# samples: "block port rx_pps rx_packets" per line
dpdk_samples() {
    awk '
        /Port statistics/ { blk++ }
        /NIC statistics for port/ { if (match($0, /port [0-9]+/)) port = substr($0, RSTART + 5, RLENGTH - 5) + 0 }
        /RX-packets:/ && /RX-missed:/ { rxp = $2 }
        /Rx-pps:/ { rxpps = $2 }
        /Tx-pps:/ { print blk, port, rxpps, rxp }
    ' "$1"
}
nicpoll_samples() {
    grep '"event":"stats"' "$1" | jq -rs '
        to_entries[] | (.key + 1) as $b | .value.ports[] | "\($b) \(.port) \(.rx_pps) \(.rx_packets)"'
}

# window SAMPLES FIRST LAST -> "rate_mpps sec_min sec_max" over blocks FIRST..LAST, ports 0+1
window() {
    awk -v a="$2" -v b="$3" '
        {
            if ($1 >= a && $1 <= b && ($2 in last)) {
                dp = $4 - last[$2]; dt = ($3 > 0) ? dp / $3 : 1
                pk[$2] += dp; tm[$2] += dt; s[$1] += $3
            }
            last[$2] = $4
        }
        END {
            c = 0; mn = -1; mx = 0
            for (k in s) { c++; if (mn < 0 || s[k] < mn) mn = s[k]; if (s[k] > mx) mx = s[k] }
            np = 0; for (p in pk) np++
            if (c < b - a + 1 || np < 2) { print "NA NA NA"; exit }
            r = 0; for (p in pk) if (tm[p] > 0) r += pk[p] / tm[p]
            printf "%.3f %.3f %.3f\n", r / 1e6, mn / 1e6, mx / 1e6
        }' "$1"
}

# ---- contention accounting
CLK_TCK=$(getconf CLK_TCK)
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 }' /proc/stat; }
steal_snap() { awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $9 }' /proc/stat; }
pid_ticks() { local s=0 p t; for p in "$@"; do t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null); s=$(( s + ${t:-0} )); done; echo "$s"; }
kthread_ticks() { pid_ticks $(pgrep -x 'ksoftirqd/[0-9]+') $(pgrep '^napi/'); }
our_pids() { local p; for p in "$@"; do echo "$p"; pgrep -P "$p"; done; }   # timeout + its child
# this script itself, including the children it has reaped (the polling greps, awks, ...)
self_ticks() { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$$/stat"; }
# shellcheck disable=SC2046  # a list of PIDs, split on purpose
our_ticks() { echo $(( $(pid_ticks $(our_pids "$@")) + $(self_ticks) )); }
fg_begin() { FG_T0=$(date +%s.%N); FG_B0=$(busy_ticks); FG_O0=$(our_ticks "$@"); FG_K0=$(kthread_ticks); FG_S0=$(steal_snap); }
fg_end() {
    local t1 b1 o1 k1 s1
    t1=$(date +%s.%N); b1=$(busy_ticks); o1=$(our_ticks "$@"); k1=$(kthread_ticks); s1=$(steal_snap)
    FOREIGN=$(awk -v t0="$FG_T0" -v t1="$t1" -v b=$((b1 - FG_B0)) -v o=$((o1 - FG_O0)) -v k=$((k1 - FG_K0)) -v hz="$CLK_TCK" \
        'BEGIN { f = (b - o - k) / hz / (t1 - t0) * 100; if (f < 0) f = 0; printf "%.0f", f }')
    STEAL=$(echo "$FG_S0 $s1" | awk '{ t = $3 - $1; printf "%.0f", (t > 0) ? 100 * ($4 - $2) / t : 0 }')
}
# wait until other processes leave the machine alone (nothing of ours runs now)
wait_quiet() {
    local t0=$SECONDS b0 b1 pct
    while :; do
        b0=$(busy_ticks); sleep 2; b1=$(busy_ticks)
        pct=$(( (b1 - b0) * 100 / CLK_TCK / 2 ))
        QUIET_WAITED=$(( SECONDS - t0 )); QUIET_LAST=$pct
        (( pct <= QUIET_PCT )) && return 0
        if (( SECONDS - t0 >= QUIET_WAIT )); then log "  machine still busy (others use ${pct}% of a CPU) after ${QUIET_WAIT}s - running anyway"; return 1; fi
        (( (SECONDS - t0) % 20 < 2 )) && log "  waiting for a quiet machine (others use ${pct}% of a CPU)"
    done
}

record() { (IFS=$'\t'; echo "$*") >> "$RESULTS"; }
err_tail() { grep -aiE 'error|fail|cannot|invalid|panic|unable|no such|denied|usage' "$@" 2>/dev/null | grep -avE 'RX-errors|TX-errors|rx_errors|tx_errors' | tail -n 3 | tr '\n' '|' | cut -c1-300; }

# ------------------------------------------------------------------ one throughput run
# run_once TOOL ROUND ATTEMPT -> sets RUN_STATUS RUN_RATE (and records a line)
run_once() {
    local tool=$1 round=$2 att=$3 tag="r$2" pid prefix so se samples rc st need=$((WARM + MEAS))
    (( att > 0 )) && tag="r$2.t$att"
    prefix="$TAG-$tool-$tag"
    if (( PREFIX_JITTER )); then prefix="$prefix-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' | cut -c1-$((RANDOM % 16 + 1)))"; fi
    so=$OUT/logs/$tool.$tag.out; se=$OUT/logs/$tool.$tag.err; samples=$OUT/logs/$tool.$tag.samples
    RUN_STATUS=FAIL RUN_RATE=NA FOREIGN=NA STEAL=NA
    wait_quiet
    local qw=$QUIET_WAITED
    log "$tool round $round$( (( att > 0 )) && echo " (retry $att)") (quiet gate: others ${QUIET_LAST}% after ${qw}s)"
    if [[ $tool == dpdk ]]; then
        launch pid "$so" "$se" $((need + 60)) "$prefix" \
            "$DPDK_TESTPMD" --file-prefix="$prefix" --huge-unlink "${EAL[@]}" -- "${APP[@]}"
        # block 1 has no rate; block k (k >= 2) covers second k-1..k
        if ! wait_for dpdk_blocks "$so" "$WARM" "$pid" 60; then
            stop_pid "$pid"; log "  dpdk-testpmd FAILED to start forwarding: $(err_tail "$so" "$se")"
            record "$tool" "$round" "$att" FAIL NA NA NA NA NA "$qw" "$(basename "$so")" "$prefix"; return
        fi
        fg_begin "$pid"
        wait_for dpdk_blocks "$so" "$need" "$pid" $((MEAS + 20)); rc=$?
        fg_end "$pid"
        # block `need` is complete once the next one starts
        (( rc == 0 )) && { wait_for dpdk_blocks "$so" $((need + 1)) "$pid" 10; rc=$?; }
        stop_pid "$pid"
        dpdk_samples "$so" > "$samples"
        grep -aq 'Accumulated forward statistics' "$so" || rc=3
    else
        launch pid "$so" "$se" $((need + 60)) "$prefix" \
            "$NICPOLL" --file-prefix="$prefix" "${EAL[@]}" -- "${APP[@]}" --run-time=$((need + 2)) --stats-format=json
        if ! wait_for nicpoll_blocks "$so" "$WARM" "$pid" 60; then
            stop_pid "$pid"; log "  nicpoll testpmd FAILED to start forwarding: $(err_tail "$so" "$se")"
            record "$tool" "$round" "$att" FAIL NA NA NA NA NA "$qw" "$(basename "$so")" "$prefix"; return
        fi
        fg_begin "$pid"
        wait_for nicpoll_blocks "$so" "$need" "$pid" $((MEAS + 20)); rc=$?
        fg_end "$pid"
        reap_pid "$pid"; local prc=$?
        (( prc != 0 )) && { log "  nicpoll testpmd exited with status $prc: $(err_tail "$se")"; rc=4; }
        grep -q '"event":"final"' "$so" || rc=3
        nicpoll_samples "$so" > "$samples"
    fi
    st=$(window "$samples" $((WARM + 1)) "$need")
    read -r RUN_RATE smin smax <<< "$st"
    if [[ $RUN_RATE == NA || $rc != 0 ]]; then
        RUN_STATUS=FAIL
        log "  FAILED (rc=$rc, window=$st): $(err_tail "$so" "$se")"
    else
        RUN_STATUS=ok
        (( FOREIGN > FOREIGN_MAX )) && RUN_STATUS=busy
        log "  $tool: $RUN_RATE Mpps (per-second min $smin max $smax), foreign ${FOREIGN}%, steal ${STEAL}%"
    fi
    record "$tool" "$round" "$att" "$RUN_STATUS" "$RUN_RATE" "$smin" "$smax" "$FOREIGN" "$STEAL" "$qw" "$(basename "$so")" "$prefix"
}

# run_counted TOOL ROUND: run, redo while busy (at most RETRIES times)
run_counted() {
    local att
    for att in $(seq 0 "$RETRIES"); do
        run_once "$1" "$2" "$att"
        if [[ $RUN_STATUS == busy && $att -lt $RETRIES ]]; then
            sed -i '$ s/\tbusy\t/\trejected-busy\t/' "$RESULTS"
            log "  rejected: other processes used ${FOREIGN}% of a CPU during the window; redoing"
            continue
        fi
        break
    done
    [[ $RUN_STATUS == FAIL ]] && EXIT=2
    RATE[$1.$2]=$RUN_RATE; STAT[$1.$2]=$RUN_STATUS; FGN[$1.$2]=$FOREIGN
}

median() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "NA"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b == 0) print "NA"; else printf "%.2f\n", a / b }'; }

declare -A RATE=() STAT=() FGN=()

# ------------------------------------------------------------------ throughput
if (( THROUGHPUT )); then
    log "results: $OUT"
    log "command (both): ${EAL[*]} -- ${APP[*]}"
    for r in $(seq 1 "$REPS"); do
        if (( r % 2 )); then order="dpdk nicpoll"; else order="nicpoll dpdk"; fi
        for t in $order; do run_counted "$t" "$r"; done
    done
fi

# ------------------------------------------------------------------ instructions per packet
declare -A IPPV=() IPPRAW=()
ipp_run() {  # ipp_run TOOL LEN TRY -> IPP_RES="Ir packets"
    local tool=$1 len=$2 pid so se prefix="$TAG-ipp-$1-$2-$3" ir pk
    so=$OUT/logs/ipp.$tool.$len.t$3.out; se=$OUT/logs/ipp.$tool.$len.t$3.err
    # --fair-sched=yes: without it the spinning forwarding thread can starve the
    # main thread for many seconds, so stats prints and the SIGTERM shutdown lag
    local -a vg=(valgrind --tool=cachegrind --cache-sim=no --fair-sched=yes --cachegrind-out-file=/dev/null)
    local -a mem=(--no-huge -m 512)
    local -a app=("${APP[@]}" --total-num-mbufs=16384)
    IPP_RES="NA NA"
    KILL_AFTER=60
    if [[ $tool == dpdk ]]; then
        launch pid "$so" "$se" 600 "$prefix" "${vg[@]}" "$DPDK_TESTPMD" --file-prefix="$prefix" "${mem[@]}" "${EAL[@]}" -- "${app[@]}"
        wait_for dpdk_blocks "$so" "$len" "$pid" 480
        stop_pid "$pid"
        pk=$(grep -a -A1 'Accumulated forward statistics' "$so" | awk '/RX-packets:/ { print $2 }' | tail -1)
    else
        launch pid "$so" "$se" 600 "$prefix" "${vg[@]}" "$NICPOLL" --file-prefix="$prefix" "${mem[@]}" "${EAL[@]}" -- "${app[@]}" \
            --run-time="$len" --stats-format=json
        reap_pid "$pid" || log "  nicpoll under valgrind exited with status $?"
        pk=$(grep '"event":"final"' "$so" | jq -r '.total.rx_packets' 2>/dev/null | tail -1)
    fi
    KILL_AFTER=10
    ir=$(grep -a 'I *refs:' "$se" | tail -1 | awk '{ gsub(",", "", $NF); print $NF }')
    IPP_RES="${ir:-NA} ${pk:-NA}"
}
if (( IPP )); then
    for t in dpdk nicpoll; do
        wait_quiet
        log "ipp/$t: valgrind cachegrind, runs of $IPP_SHORT and $IPP_LONG s"
        for len in "$IPP_SHORT" "$IPP_LONG"; do
            for try in 1 2; do   # one retry if a run gave no count
                ipp_run "$t" "$len" "$try"
                [[ $IPP_RES != *NA* ]] && break
                log "  $t ($len s): no instruction or packet count ($IPP_RES); $([[ $try == 1 ]] && echo retrying || echo giving up)"
            done
            if [[ $len == "$IPP_SHORT" ]]; then r1=$IPP_RES; else r2=$IPP_RES; fi
        done
        v=$(echo "$r1 $r2" | awk '$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+$/ && $4 ~ /^[0-9]+$/ && $4 > $2 { printf "%.1f", ($3 - $1) / ($4 - $2); next } { print "NA" }')
        [[ $v == NA ]] && EXIT=2
        IPPV[$t]=$v; IPPRAW[$t]="short: Ir=${r1% *} pkts=${r1#* }; long: Ir=${r2% *} pkts=${r2#* }"
        log "  $t: ${IPPRAW[$t]} -> $v instructions per forwarded packet"
        record "ipp-$t" - - "$([[ $v == NA ]] && echo FAIL || echo ok)" "$v" NA NA NA NA NA "${IPPRAW[$t]}" -
    done
fi

# ------------------------------------------------------------------ summary
{
    echo "nicpoll testpmd vs dpdk-testpmd: io forwarding, net_null0 <-> net_null1, 1 forwarding core (lcore 1 on CPU1)"
    echo "command (both): ${EAL[*]} -- ${APP[*]}"
    echo "window: stats blocks $((WARM + 1))..$((WARM + MEAS)) = seconds $WARM..$((WARM + MEAS)) of forwarding; Mpps = Rx of both ports (packets forwarded)"
    grep '^nicpoll' "$OUT/env.txt"
    echo
    if (( THROUGHPUT )); then
        printf '%-7s %12s %9s %12s %9s %8s\n' round dpdk_Mpps foreign nicpoll_Mpps foreign ratio
        dl="" nl=""
        for r in $(seq 1 "$REPS"); do
            d=${RATE[dpdk.$r]:-NA} n=${RATE[nicpoll.$r]:-NA}
            fd=${FGN[dpdk.$r]:-NA} fn=${FGN[nicpoll.$r]:-NA}
            [[ $fd != NA ]] && fd="$fd%"; [[ $fn != NA ]] && fn="$fn%"
            [[ ${STAT[dpdk.$r]:-} == busy ]] && fd="$fd*"
            [[ ${STAT[nicpoll.$r]:-} == busy ]] && fn="$fn*"
            printf '%-7s %12s %9s %12s %9s %8s\n' "$r" "$d" "$fd" "$n" "$fn" "$(ratio "$n" "$d")"
            dl="$dl $d" nl="$nl $n"
            [[ ${STAT[dpdk.$r]:-} == ok ]] && dq="${dq:-} $d"
            [[ ${STAT[nicpoll.$r]:-} == ok ]] && nq="${nq:-} $n"
        done
        dm=$(echo "$dl" | median) nm=$(echo "$nl" | median)
        printf '%-7s %12s %9s %12s %9s %8s\n' median "$dm" "" "$nm" "" "$(ratio "$nm" "$dm")"
        dqm=$(echo "${dq:-}" | median) nqm=$(echo "${nq:-}" | median)
        printf '%-7s %12s %9s %12s %9s %8s\n' "quiet" "$dqm" "($(echo ${dq:-} | wc -w) runs)" "$nqm" "($(echo ${nq:-} | wc -w) runs)" "$(ratio "$nqm" "$dqm")"
        echo "(ratio = nicpoll/dpdk; the median rows' ratio is median/median; * = foreign CPU still > ${FOREIGN_MAX}% after $RETRIES retries;"
        echo " 'quiet' = median over the rounds whose run had foreign <= ${FOREIGN_MAX}% only)"
        echo
    fi
    if (( IPP )); then
        echo "instructions per forwarded packet (valgrind cachegrind, dIr/dpkts, --no-huge -m 512 --total-num-mbufs=16384):"
        for t in dpdk nicpoll; do printf '  %-8s %8s   (%s)\n' "$t" "${IPPV[$t]:-NA}" "${IPPRAW[$t]:-}"; done
        echo "  ratio nicpoll/dpdk: $(ratio "${IPPV[nicpoll]:-NA}" "${IPPV[dpdk]:-NA}")"
    fi
} | tee "$OUT/summary.txt"
log "done: $OUT (exit $EXIT)"
exit "$EXIT"
