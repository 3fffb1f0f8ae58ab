#!/bin/sh
# bench/backup_load.sh [BUILD] - what a backup that writes its set to the
# store's own disk costs the durable writes, as a curve: redis-benchmark
# durable SETs (-c 50 -d 100, random keys) alone, then with full backups
# back to back paced at each rate (coffer backup --rate), then unpaced, with
# the set written to the same file system as the store; and, for contrast,
# unpaced with the set written to /dev/null (same reads, no writes).
#
# Why a curve: on a virtual disk every fdatasync of the log ends in a cache
# FLUSH, and a FLUSH makes durable everything written before it - the
# backup's set included. So each commit pays for the set data written since
# the previous one, and the SET rate falls with the set's write rate, not
# with the backup's reads or CPU (the /dev/null row). The rate that keeps
# a given share of the SETs is the machine's, and --rate is how to choose it.
#
# Needs no root; the raw lines go to BUILD/bench-backup-load.txt.
# Environment:
#   BENCH_LOAD_KEYS=200000   4 KiB values loaded first (a ~1.6 GB store)
#   BENCH_LOAD_N=60000       SETs per redis-benchmark run
#   BENCH_LOAD_RATES="100 200 300 500"   MiB/s of the paced rows
#   BENCH_LOAD_REPS=2        repetitions (medians are printed)
#   BENCH_DIR=BUILD          where the store and the sets go
set -eu

BUILD="${1:-build}"
KEYS="${BENCH_LOAD_KEYS:-200000}"
N="${BENCH_LOAD_N:-60000}"
RATES="${BENCH_LOAD_RATES:-100 200 300 500}"
REPS="${BENCH_LOAD_REPS:-2}"
BENCH_DIR="${BENCH_DIR:-$BUILD}"

die() {
	echo "bench/backup_load.sh: $*" >&2
	exit 1
}
command -v redis-benchmark >/dev/null 2>&1 || die "redis-benchmark is not installed (sh tools/deps.sh bench)"
for p in coffer cofferd; do
	[ -x "$BUILD/$p" ] || die "$BUILD/$p is not built (make)"
done

WORK="$(mktemp -d "$BENCH_DIR/bench-load.XXXXXX")"
WORK="$(cd "$WORK" && pwd)"
SOCK="$(mktemp -d /tmp/cbl.XXXXXX)/s.sock"
SPID=""
LPID=""
cleanup() {
	set +e
	[ -n "$LPID" ] && { touch "$WORK/stop"; wait "$LPID"; }
	[ -n "$SPID" ] && { kill -TERM "$SPID"; wait "$SPID"; }
	rm -rf "$WORK" "$(dirname "$SOCK")"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir "$WORK/bin"
cp "$BUILD/coffer" "$BUILD/cofferd" "$WORK/bin/"
COFFER="$WORK/bin/coffer"
RAW="$BUILD/bench-backup-load.txt"
: >"$RAW"

echo "== backup write rate against durable SETs (set on the store's disk)"
echo "machine: nproc=$(nproc) kernel=$(uname -r) load=\"$(cut -d' ' -f1-3 /proc/loadavg)\"" \
	"fs=$(findmnt -n -o FSTYPE -T "$WORK" 2>/dev/null || echo '?')" \
	"device=$(df -P "$WORK" | awk 'NR == 2 { print $1 }')"
# The disk's own pace, for scale: 1 GiB written and fdatasynced.
dd if=/dev/zero of="$WORK/dd" bs=1M count=1024 conv=fdatasync 2>&1 |
	awk '/copied/ { printf "disk: dd 1 GiB + fdatasync: %s %s\n", $(NF-1), $NF }'
rm -f "$WORK/dd"

"$WORK/bin/cofferd" --data "$WORK/data" --listen "unix:$SOCK" >"$WORK/cofferd.log" 2>&1 &
SPID=$!
i=0
while ! grep -q "cofferd: started" "$WORK/cofferd.log"; do
	i=$((i + 1))
	[ "$i" -le 200 ] || die "cofferd did not start: $(cat "$WORK/cofferd.log")"
	sleep 0.05
done
redis-benchmark -s "$SOCK" -t set -d 4096 -r 100000000 -n "$KEYS" -P 32 -q >/dev/null 2>&1
echo "store: $(stat -c %s "$WORK/data/coffer.db" | awk '{ printf "%.2f GB", $1 / 1e9 }')"

sets() { # one redis-benchmark run: SET requests per second
	redis-benchmark -s "$SOCK" -t set -c 50 -d 100 -r 1000000 -n "$N" -q 2>&1 |
		tr '\r' '\n' | awk '/^SET: .*requests per second/ { print $2; exit }'
}
loop() { # full backups back to back until $WORK/stop: OUT RATE (0: none)
	while [ ! -e "$WORK/stop" ]; do
		if [ "$2" = 0 ]; then r=""; else r="--rate $2"; fi
		s=$(date +%s.%N)
		# shellcheck disable=SC2086
		if [ "$1" = null ]; then
			"$COFFER" --server "unix:$SOCK" backup --type full --compress none -q $r -o - >/dev/null
		else
			"$COFFER" --server "unix:$SOCK" backup --type full --compress none -q $r -o "$WORK/set.cbk"
			rm -f "$WORK/set.cbk"
		fi
		echo "$s $(date +%s.%N)" >>"$WORK/loop.txt"
	done
}
with() { # OUT RATE: prints "SET/s backups MB/s" of one run with the loop
	rm -f "$WORK/stop"
	: >"$WORK/loop.txt"
	loop "$1" "$2" &
	LPID=$!
	v=$(sets)
	touch "$WORK/stop"
	wait "$LPID"
	LPID=""
	size=$(stat -c %s "$WORK/data/coffer.db")
	awk -v v="$v" -v size="$size" '{ n++; t += $2 - $1 } END { printf "%s %d %.1f\n", v, n, n ? size * n / t / 1e6 : 0 }' "$WORK/loop.txt"
}

for rep in $(seq 1 "$REPS"); do
	echo "part=alone rep=$rep sets=$(sets)" >>"$RAW"
	for r in $RATES 0; do
		# shellcheck disable=SC2046 # three numbers, split on purpose
		set -- $(with disk "$r")
		echo "part=disk rate=$r rep=$rep sets=$1 backups=$2 mbs=$3" >>"$RAW"
	done
	# shellcheck disable=SC2046
	set -- $(with null 0)
	echo "part=null rate=0 rep=$rep sets=$1 backups=$2 mbs=$3" >>"$RAW"
	echo "part=alone rep=$rep sets=$(sets)" >>"$RAW"
done
sed 's/^/  /' "$RAW"

awk '
function median(a, n,   i, j, t) {
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{ for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } }
f["part"] == "alone" { alone[++na] = f["sets"]; next }
{ k = f["part"] " " f["rate"]; if (!(k in cnt)) order[++nk] = k; cnt[k]++; s[k, cnt[k]] = f["sets"]; m[k, cnt[k]] = f["mbs"] }
END {
	a = median(alone, na)
	printf "SETs alone: %.0f/s (median of %d)\n", a, na
	printf "%-26s %12s %10s %8s\n", "backups (full, none)", "backup MB/s", "SET/s", "kept"
	for (i = 1; i <= nk; i++) {
		k = order[i]; split(k, p, " ")
		for (j = 1; j <= cnt[k]; j++) { ss[j] = s[k, j]; mm[j] = m[k, j] }
		what = (p[1] == "null" ? "to /dev/null, unpaced" : (p[2] == 0 ? "to disk, unpaced" : "to disk, --rate " p[2]))
		sv = median(ss, cnt[k]); mv = median(mm, cnt[k])
		printf "%-26s %12.1f %10.0f %7.2fx\n", what, mv, sv, sv / a
	}
}' "$RAW"
