#!/bin/sh
# bench/run.sh [BUILD]          - Coffer against SQLite and LMDB, same workload, one run.
# bench/run.sh --summary FILE   - the tables again from a raw result file
#
# Builds nothing: uses BUILD/engine_bench (default build/; `make bench` builds
# it when liblmdb-dev and libsqlite3-dev are installed). Every workload runs
# for the three engines side by side, REPS times, in rotating engine order,
# each run in a fresh directory under one temporary directory (so all three
# engines use the same file system). Prints the machine, one table of medians
# with the ratios coffer/sqlite and coffer/lmdb, and the spread. The raw
# result lines are kept in BUILD/bench-engine.txt. Then runs bench/redis.sh,
# bench/backup.sh and bench/backup_load.sh, those that exist.
#
# Environment (defaults sized for ~5 minutes on a 2-core VM):
#   BENCH_REPS=5            repetitions of every measurement
#   BENCH_N_COMMIT1=10000   single-key durable commits, 1 writer
#   BENCH_N_COMMIT16=20000  single-key durable commits, 16 writers in total
#   BENCH_N_BULK=1000000    keys bulk loaded (10,000 per transaction)
#   BENCH_N_READ=1000000    random point reads of the bulk-loaded store
#   BENCH_VALUE_SIZE=100    value bytes (keys are 16 bytes)
#   BENCH_DIR=BUILD         where the temporary directory is made
set -eu

summarize() { # RAWFILE: medians, spread and ratios from the key=value lines
	awk -v engines="coffer sqlite lmdb" '
function median(list,    a, n, i, j, t) {
	n = split(list, a, " ")
	for (i = 2; i <= n; i++) {        # insertion sort, numeric
		t = a[i] + 0
		for (j = i - 1; j >= 1 && a[j] + 0 > t; j--)
			a[j + 1] = a[j]
		a[j + 1] = t
	}
	if (n == 0) return 0
	return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function minmax(list, which,    a, n, i, m) {
	n = split(list, a, " ")
	m = a[1] + 0
	for (i = 2; i <= n; i++)
		if ((which == "min" && a[i] + 0 < m) || (which == "max" && a[i] + 0 > m)) m = a[i] + 0
	return m
}
function human(x) {
	if (x >= 1e6) return sprintf("%.2fM", x / 1e6)
	if (x >= 1e4) return sprintf("%.1fk", x / 1e3)
	return sprintf("%.0f", x)
}
{
	delete f
	for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
	k = f["workload"] SUBSEP f["engine"]
	ops[k] = ops[k] " " f["ops_per_s"]
	mb[k] = mb[k] " " f["mb_per_s"]
	rss[k] = rss[k] " " f["peak_rss_kb"]
	cnt[k]++
}
END {
	nw = split("commit1 commit16 bulk read scan", W, " ")
	ne = split(engines, E, " ")
	unit["commit1"] = "commits/s"; unit["commit16"] = "commits/s"; unit["bulk"] = "MB/s"
	unit["read"] = "reads/s"; unit["scan"] = "rows/s"
	printf "%-9s %-10s %10s %10s %10s %9s %9s   %s\n", "workload", "unit", "coffer", "sqlite",
	       "lmdb", "c/sqlite", "c/lmdb", "peak RSS MiB coffer/sqlite/lmdb"
	for (i = 1; i <= nw; i++) {
		w = W[i]
		for (j = 1; j <= ne; j++) {
			k = w SUBSEP E[j]
			m[E[j]] = (w == "bulk") ? median(mb[k]) : median(ops[k])
			r[E[j]] = median(rss[k]) / 1024
		}
		for (j = 1; j <= ne; j++)
			cell[E[j]] = (w == "bulk") ? sprintf("%.1f", m[E[j]]) : human(m[E[j]])
		rs = (m["sqlite"] > 0) ? m["coffer"] / m["sqlite"] : 0
		rl = (m["lmdb"] > 0) ? m["coffer"] / m["lmdb"] : 0
		printf "%-9s %-10s %10s %10s %10s %8.2fx %8.2fx   %.0f / %.0f / %.0f\n", w, unit[w],
		       cell["coffer"], cell["sqlite"], cell["lmdb"], rs, rl,
		       r["coffer"], r["sqlite"], r["lmdb"]
	}
	printf "\nspread (min..max of ops/s over the runs; n = runs)\n"
	for (i = 1; i <= nw; i++) {
		w = W[i]
		line = sprintf("%-9s", w)
		for (j = 1; j <= ne; j++) {
			k = w SUBSEP E[j]
			line = line sprintf("  %s %s..%s (n=%d)", E[j], human(minmax(ops[k], "min")),
					    human(minmax(ops[k], "max")), cnt[k])
		}
		print line
	}
}' "$1"
}

if [ "${1:-}" = "--summary" ]; then
	summarize "$2"
	exit 0
fi

BUILD="${1:-build}"
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="$BUILD/engine_bench"
REPS="${BENCH_REPS:-5}"
N_COMMIT1="${BENCH_N_COMMIT1:-10000}"
N_COMMIT16="${BENCH_N_COMMIT16:-20000}"
N_BULK="${BENCH_N_BULK:-1000000}"
N_READ="${BENCH_N_READ:-1000000}"
VSIZE="${BENCH_VALUE_SIZE:-100}"
BENCH_DIR="${BENCH_DIR:-$BUILD}"

if [ ! -x "$BIN" ]; then
	echo "bench: $BIN not found: it is built only when liblmdb-dev and libsqlite3-dev" \
		"are installed (sh tools/deps.sh bench as root, then make)" >&2
	exit 1
fi

WORK="$(mktemp -d "$BENCH_DIR/bench.XXXXXX")"
WORK="$(cd "$WORK" && pwd)"
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
# A private copy: others rebuilding BUILD during the run cannot swap it.
cp "$BIN" "$WORK/engine_bench"
BIN="$WORK/engine_bench"
RAW="$WORK/raw.txt"
: >"$RAW"

pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"; }

echo "== engine benchmark: coffer vs sqlite vs lmdb"
echo "machine: nproc=$(nproc)" \
	"cpu=\"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)\"" \
	"kernel=$(uname -r)"
echo "bench dir: $WORK fs=$(findmnt -n -o FSTYPE -T "$WORK" 2>/dev/null || stat -f -c %T "$WORK")" \
	"device=$(df -P "$WORK" | awk 'NR == 2 { print $1 }')"
echo "memory: $(free -m | awk '/^Mem:/ { printf "total=%s MiB free=%s MiB available=%s MiB", $2, $4, $7 }')"
echo "peers: sqlite $(pkgver libsqlite3-0), lmdb $(pkgver liblmdb0)" \
	"(Debian packages); coffer $(git -C "$HERE/.." describe --always --dirty 2>/dev/null || echo '?')" \
	"$(/usr/bin/python3 -c 'import json, sys
o = {x["name"]: x["value"] for x in json.load(open(sys.argv[1]))}
print("buildtype=%s testing=%s" % (o.get("buildtype"), o.get("testing")))' \
		"$BUILD/meson-info/intro-buildoptions.json" 2>/dev/null || true)"
echo "sizes: commit1 n=$N_COMMIT1, commit16 n=$N_COMMIT16 (16 threads), bulk n=$N_BULK" \
	"(10,000 per txn), read n=$N_READ, scan n=$N_BULK; key 16 B, value $VSIZE B; reps=$REPS"
echo

run() { # engine dir workload args...
	e="$1" d="$2" w="$3"
	shift 3
	sync
	line="$("$BIN" --engine "$e" --dir "$d" --workload "$w" --value-size "$VSIZE" "$@")" || {
		echo "bench: $e $w failed" >&2
		exit 1
	}
	echo "$line" >>"$RAW"
	printf '  %s\n' "$line"
}

START=$(date +%s)
rep=1
while [ "$rep" -le "$REPS" ]; do
	# Rotate the engine order so that none always runs first or last.
	case $((rep % 3)) in
	1) order="coffer sqlite lmdb" ;;
	2) order="sqlite lmdb coffer" ;;
	0) order="lmdb coffer sqlite" ;;
	esac
	echo "rep $rep/$REPS ($order)"
	for e in $order; do
		run "$e" "$WORK/$e.c1" commit1 --n "$N_COMMIT1"
		rm -rf "$WORK/$e.c1"
	done
	for e in $order; do
		run "$e" "$WORK/$e.c16" commit16 --n "$N_COMMIT16"
		rm -rf "$WORK/$e.c16"
	done
	for e in $order; do
		run "$e" "$WORK/$e.bulk" bulk --n "$N_BULK"
		run "$e" "$WORK/$e.bulk" read --n "$N_READ" --keys "$N_BULK"
		run "$e" "$WORK/$e.bulk" scan --keys "$N_BULK"
		rm -rf "$WORK/$e.bulk"
	done
	rep=$((rep + 1))
done
cp "$RAW" "$BUILD/bench-engine.txt"
echo "engine runs took $(($(date +%s) - START)) s"
echo

summarize "$RAW"
echo
echo "raw results: $BUILD/bench-engine.txt"

if [ -f "$HERE/redis.sh" ]; then
	echo
	sh "$HERE/redis.sh" "$BUILD"
fi

if [ -f "$HERE/backup.sh" ]; then
	echo
	sh "$HERE/backup.sh" "$BUILD"
fi

if [ -f "$HERE/backup_load.sh" ]; then
	echo
	sh "$HERE/backup_load.sh" "$BUILD"
fi
