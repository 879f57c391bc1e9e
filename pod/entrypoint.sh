#!/bin/sh
# nicpoll container entrypoint.
#
#   nicpoll-entrypoint                  run testpmd in entrypoint mode: devices from the
#                                       device plugin's PCIDEVICE_* variables (and --vdev
#                                       ports from NICPOLL_EAL_ARGS), cores from the
#                                       container's cpuset, hugepages from the mounts
#   nicpoll-entrypoint ARGS...          run `testpmd ARGS...` as given
#   nicpoll-entrypoint sleep infinity   (or sh, bash) run that instead, for debugging
#
# Environment:
#   NICPOLL_EAL_ARGS   EAL options for entrypoint mode (default: none)
#   NICPOLL_APP_ARGS   application options (default: --forward-mode=io --stats-period=1)
#   NICPOLL_DOCTOR     warn (default): print `testpmd doctor` findings, then start anyway;
#                      strict: do not start when a check fails (exit 1); off: skip it
#   TESTPMD            the testpmd binary (default: testpmd on PATH)
#
# testpmd is exec'd, so it is PID 1 and gets SIGTERM from the kubelet itself.
set -eu

TESTPMD=${TESTPMD:-testpmd}

case "${1-}" in
    sleep|sh|bash|/bin/sh|/bin/bash)
        exec "$@"
        ;;
esac

if [ "$#" -gt 0 ]; then
    exec "$TESTPMD" "$@"
fi

case "${NICPOLL_DOCTOR:-warn}" in
    off) ;;
    warn)
        "$TESTPMD" doctor --brief || echo "nicpoll-entrypoint: doctor found problems (see above); starting anyway (NICPOLL_DOCTOR=strict would stop here)" >&2
        ;;
    strict)
        if ! "$TESTPMD" doctor --brief; then
            echo "nicpoll-entrypoint: doctor found problems (see above); not starting (NICPOLL_DOCTOR=strict)" >&2
            exit 1
        fi
        ;;
    *)
        echo "nicpoll-entrypoint: NICPOLL_DOCTOR=${NICPOLL_DOCTOR}: give warn, strict or off" >&2
        exit 2
        ;;
esac

# Tells testpmd it runs in entrypoint mode even when NICPOLL_EAL_ARGS adds
# --vdev ports (without it, any --vdev makes the command line explicit).
export NICPOLL_ENTRYPOINT=1
# Word splitting of the two variables is intended: they hold option lists.
# shellcheck disable=SC2086
exec "$TESTPMD" ${NICPOLL_EAL_ARGS:-} -- ${NICPOLL_APP_ARGS:---forward-mode=io --stats-period=1}
