#!/bin/sh
# bench/redis.sh [BUILD] - cofferd against Redis with its AOF fsync'd on every
# write (appendonly yes, appendfsync always): the same redis-benchmark runs,
# side by side, so that "durable" means the same on both sides.
#
#   redis-benchmark -t set,get -c 50 -d 100 -n N          (one command at a time)
#   redis-benchmark -t set,get -c 50 -d 100 -n N -P 16    (pipelined)
#
# Both servers listen on a loopback TCP port and keep their files in one
# temporary directory under BENCH_DIR (so both use the same file system).
# Every measurement runs BENCH_REDIS_REPS times, alternating which server
# goes first; the table shows medians, the ratio cofferd/redis, and cofferd's
# peak resident memory (VmHWM). Both servers are stopped by pid at the end.
#
# Environment:
#   BENCH_REDIS_N=200000    requests per redis-benchmark test
#   BENCH_REDIS_REPS=3      repetitions
#   BENCH_DIR=BUILD         where the temporary directory is made
# Needs redis-server and redis-benchmark (make deps-bench installs them).
set -eu

BUILD="${1:-build}"
N="${BENCH_REDIS_N:-200000}"
REPS="${BENCH_REDIS_REPS:-3}"
COFFERD="$BUILD/cofferd"

for p in redis-server redis-benchmark redis-cli; do
	if ! command -v "$p" >/dev/null 2>&1; then
		echo "bench/redis.sh: $p is not installed (run: make deps-bench)" >&2
		exit 1
	fi
done
if [ ! -x "$COFFERD" ]; then
	echo "bench/redis.sh: $COFFERD is not built (run: make)" >&2
	exit 1
fi

TMP=$(mktemp -d "${BENCH_DIR:-$BUILD}/bench-redis.XXXXXX")
TMP=$(cd "$TMP" && pwd)
CPID=""
RPID=""
cleanup() {
	for pid in $CPID $RPID; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in $CPID $RPID; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ready PORT PID NAME LOG: PONG within 30 s, or fail with the log.
wait_ready() {
	i=0
	while [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" != "PONG" ]; do
		i=$((i + 1))
		if [ "$i" -gt 300 ] || ! kill -0 "$2" 2>/dev/null; then
			echo "bench/redis.sh: $3 did not start; its log:" >&2
			cat "$4" >&2
			exit 1
		fi
		sleep 0.1
	done
}

CPORT=$(free_port)
"$COFFERD" --data "$TMP/coffer" --listen "127.0.0.1:$CPORT" 2>"$TMP/cofferd.log" &
CPID=$!
wait_ready "$CPORT" "$CPID" cofferd "$TMP/cofferd.log"

RPORT=$(free_port)
mkdir -p "$TMP/redis"
redis-server --port "$RPORT" --bind 127.0.0.1 --appendonly yes --appendfsync always --save '' \
	--dir "$TMP/redis" --daemonize no --logfile "$TMP/redis.log" &
RPID=$!
wait_ready "$RPORT" "$RPID" redis-server "$TMP/redis.log"

RAW="$TMP/raw.txt"
: >"$RAW"
# run SERVER PORT MODE [OPTIONS]: one redis-benchmark, lines "SERVER MODE TEST RPS".
run() {
	server=$1 port=$2 mode=$3
	shift 3
	redis-benchmark -h 127.0.0.1 -p "$port" -t set,get -c 50 -d 100 -n "$N" -q "$@" 2>&1 |
		tr '\r' '\n' | awk -v s="$server" -v m="$mode" \
		'/requests per second/ { sub(":", "", $1); print s, m, $1, $2 }' >>"$RAW"
}

echo "bench/redis.sh: $(nproc) CPUs, $(uname -r), $(redis-server --version | cut -d' ' -f1-3)"
echo "bench/redis.sh: $REPS x redis-benchmark -t set,get -c 50 -d 100 -n $N [-P 16], loopback TCP"
rep=1
while [ "$rep" -le "$REPS" ]; do
	for mode in single P16; do
		opt=""
		[ "$mode" = P16 ] && opt="-P 16"
		if [ $((rep % 2)) -eq 1 ]; then
			# shellcheck disable=SC2086
			run cofferd "$CPORT" "$mode" $opt
			# shellcheck disable=SC2086
			run redis "$RPORT" "$mode" $opt
		else
			# shellcheck disable=SC2086
			run redis "$RPORT" "$mode" $opt
			# shellcheck disable=SC2086
			run cofferd "$CPORT" "$mode" $opt
		fi
	done
	rep=$((rep + 1))
done

HWM=$(awk '/^VmHWM/ { print $2 }' "/proc/$CPID/status")
redis-cli -h 127.0.0.1 -p "$CPORT" info stats | tr -d '\r' |
	awk -F: '/^write_(transactions|batches)/ { printf "cofferd: %s %s\n", $1, $2 }'

awk -v hwm="$HWM" '
function median(list,    a, n, i, j, t) {
	n = split(list, a, " ")
	for (i = 2; i <= n; i++) {
		t = a[i] + 0
		for (j = i - 1; j >= 1 && a[j] + 0 > t; j--)
			a[j + 1] = a[j]
		a[j + 1] = t
	}
	return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{ v[$1 " " $2 " " $3] = v[$1 " " $2 " " $3] " " $4 }
END {
	printf "\n%-22s %14s %14s %8s\n", "requests/s (median)", "cofferd", "redis(AOF)", "ratio"
	split("single P16", modes, " ")
	split("SET GET", tests, " ")
	for (mi = 1; mi <= 2; mi++)
		for (ti = 1; ti <= 2; ti++) {
			c = median(v["cofferd " modes[mi] " " tests[ti]])
			r = median(v["redis " modes[mi] " " tests[ti]])
			label = tests[ti] (modes[mi] == "P16" ? " -P 16" : "")
			printf "%-22s %14.0f %14.0f %8.2f\n", label, c, r, (r > 0 ? c / r : 0)
		}
	printf "\ncofferd peak RSS (VmHWM): %.1f MiB\n", hwm / 1024
}' "$RAW"
