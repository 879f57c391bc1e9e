#!/usr/bin/env bash
# Tests of pod/entrypoint.sh with a fake testpmd that records how it was called.
set -u
here=$(cd "$(dirname "$0")" && pwd)
entry="$here/../entrypoint.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0

# The fake: records its arguments; `doctor` exits with $FAKE_DOCTOR_RC.
cat > "$work/testpmd" <<'FAKE'
#!/bin/sh
echo "$*${NICPOLL_ENTRYPOINT:+ [NICPOLL_ENTRYPOINT=$NICPOLL_ENTRYPOINT]}" >> "$FAKE_LOG"
if [ "${1-}" = doctor ]; then exit "${FAKE_DOCTOR_RC:-0}"; fi
exit "${FAKE_RC:-0}"
FAKE
chmod +x "$work/testpmd"

check() { # check NAME EXPECTED_RC EXPECTED_LOG [env...] -- [args...]
    local name=$1 want_rc=$2 want_log=$3; shift 3
    local envs=()
    while [ "$#" -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    : > "$work/log"
    env TESTPMD="$work/testpmd" FAKE_LOG="$work/log" "${envs[@]}" sh "$entry" "$@" > "$work/out" 2>&1
    local rc=$?
    local log
    log=$(cat "$work/log")
    if [ "$rc" = "$want_rc" ] && [ "$log" = "$want_log" ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL $name: rc=$rc (want $want_rc) log=[$log] (want [$want_log]) out=$(cat "$work/out")"
    fi
}

check "explicit args pass through" 0 "-l 0,1 --vdev net_null0 -- --run-time=1" -- -l 0,1 --vdev net_null0 -- --run-time=1
# Entrypoint mode marks testpmd's environment (doctor's is left alone);
# explicit arguments do not.
em="[NICPOLL_ENTRYPOINT=1]"
check "defaults run doctor then testpmd" 0 "doctor --brief
-- --forward-mode=io --stats-period=1 $em" --
check "env options" 0 "doctor --brief
-l 0,1 --vdev net_null0 -- --forward-mode=macswap $em" NICPOLL_EAL_ARGS="-l 0,1 --vdev net_null0" NICPOLL_APP_ARGS="--forward-mode=macswap" --
check "doctor warn starts anyway" 0 "doctor --brief
-- --forward-mode=io --stats-period=1 $em" FAKE_DOCTOR_RC=1 --
check "doctor strict stops" 1 "doctor --brief" FAKE_DOCTOR_RC=1 NICPOLL_DOCTOR=strict --
check "doctor off" 0 "-- --forward-mode=io --stats-period=1 $em" NICPOLL_DOCTOR=off --
check "bad doctor mode" 2 "" NICPOLL_DOCTOR=maybe --
check "testpmd exit status is the container's" 3 "-- --forward-mode=io --stats-period=1 $em" NICPOLL_DOCTOR=off FAKE_RC=3 --
: > "$work/log"
if env TESTPMD="$work/testpmd" FAKE_LOG="$work/log" sh "$entry" sh -c 'echo debug-shell' | grep -q debug-shell && [ ! -s "$work/log" ]; then
    passed=$((passed + 1))
else
    failed=$((failed + 1)); echo "FAIL debug shell passthrough"
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
