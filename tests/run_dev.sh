#!/bin/sh
# run_dev.sh BINARY [KPROXYD-ARGS...] - `make run`: a mock Kafka cluster
# (build/tools/kp_mock, topic `orders` with 3 partitions) in the background
# and kproxyd in the foreground against it with conf/kproxyd.dev.json and
# KPROXYD-ARGS (`make run RUN_ARGS="-X log_level=debug"`). Sockets, the
# dead letter file and `bootstrap` (the mock's address, for kcat) go to
# ./run/, or to $KP_RUN_DIR (tests/it/test_readme.py). Ctrl-C stops both.
set -eu

BINARY=${1:?usage: run_dev.sh BINARY [KPROXYD-ARGS...]}
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case $BINARY in /*) ;; *) BINARY=$(pwd)/$BINARY ;; esac
cd "$ROOT"
TOOLS=$ROOT/build/tools
CONF=conf/kproxyd.dev.json
RUN=${KP_RUN_DIR:-run}

for f in "$BINARY" "$TOOLS/kp_mock" "$TOOLS/kp_consume"; do
    [ -x "$f" ] || {
        echo "run_dev: $f is missing (make all tools)" >&2
        exit 1
    }
done
[ -f "$CONF" ] || { echo "run_dev: $CONF is missing" >&2; exit 1; }

mkdir -p "$RUN"
rm -f "$RUN/mock.in" "$RUN/mock.out"
mkfifo "$RUN/mock.in"

MOCK_PID=""
# shellcheck disable=SC2317  # invoked by the traps
cleanup() {
    trap - EXIT INT TERM
    # Closing the mock's stdin makes it exit; the kill is for a stuck one.
    exec 3>&-
    if [ -n "$MOCK_PID" ]; then
        sleep 0.2
        kill "$MOCK_PID" 2>/dev/null || true
        wait "$MOCK_PID" 2>/dev/null || true
    fi
    rm -f "$RUN/mock.in"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The mock reads commands on stdin and exits at EOF: fd 3 keeps the FIFO's
# writing end open for as long as this script runs.
"$TOOLS/kp_mock" -b 3 -t orders:3 <"$RUN/mock.in" >"$RUN/mock.out" \
    2>"$RUN/mock.log" &
MOCK_PID=$!
exec 3>"$RUN/mock.in"

i=0
until grep -q '^READY$' "$RUN/mock.out" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 100 ] || ! kill -0 "$MOCK_PID" 2>/dev/null; then
        echo "run_dev: the mock cluster did not start:" >&2
        cat "$RUN/mock.log" >&2
        exit 1
    fi
    sleep 0.1
done
BOOTSTRAP=$(sed -n 's/^BOOTSTRAP //p' "$RUN/mock.out")
echo "$BOOTSTRAP" >"$RUN/bootstrap"

# The commands below are the README's "Quick start" (test_readme.py checks
# that they are the same).
cat <<EOF
==> mock Kafka cluster: $BOOTSTRAP (topic "orders", 3 partitions)
==> starting kproxyd: $BINARY -c $CONF -X brokers=$BOOTSTRAP (sockets in $RUN/)

In another terminal, in $(pwd):
Send a line (the reply is the fate of every line sent):
    echo 'orders hello' | socat -t 10 - UNIX-CONNECT:$RUN/kproxyd.sock
Read it back:
    kcat -C -b \$(cat $RUN/bootstrap) -t orders -e -q
Control socket:
    echo stats | socat -t 10 - UNIX-CONNECT:$RUN/control.sock
Ctrl-C stops kproxyd and the mock cluster.

EOF

set +e
"$BINARY" -c "$CONF" -X "brokers=$BOOTSTRAP" \
    -X "listeners[0].path=$RUN/kproxyd.sock" -X "control=$RUN/control.sock" \
    -X "dead_letter=$RUN/dead_letter.jsonl" "$@"
rc=$?
set -e
exit "$rc"
