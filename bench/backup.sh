#!/bin/sh
# bench/backup.sh [BUILD] - Coffer's online backup against the limit (cp +
# fdatasync of the same files) and against PostgreSQL (pg_basebackup), SQLite
# (.backup) and LMDB (mdb_copy), all from Debian, on stores of about 1 GiB.
#
#   1. stores: ~1 GiB Coffer store loaded through cofferd (redis-cli --pipe,
#      1,000,000 SETs of 16-byte keys and 1000-byte values), PostgreSQL
#      (pgbench -i -s 70, data checksums on), SQLite (recursive CTE of
#      randomblob(1000)), LMDB (BUILD/engine_bench --workload bulk);
#   2. full backup, hot (files read just before) and cold (drop_caches),
#      REPS times in rotating order: coffer --compress none and zstd:1,
#      cp + fdatasync, pg_basebackup -Ft -X stream [-c fast] plain,
#      server-zstd:1 and server-zstd:level=1,workers=2, sqlite3 .backup,
#      mdb_copy + fdatasync; MB/s = bytes of the store copied / seconds;
#   3. under write load: redis-benchmark durable SETs against cofferd alone,
#      then with coffer backups back to back, then alone again; the same for
#      pgbench -c 8 and pg_basebackup;
#   4. restore + recovery: coffer restore SET --target DIR against untar of
#      the pg_basebackup + start (WAL replay) until PostgreSQL accepts
#      connections, for an idle set and for one taken under write load;
#   5. incremental backups after ~100 MB of new log on the 1 GiB store and on
#      a ~100 MiB store: the time follows the log, not the store.
#
# Needs root (drop_caches; PostgreSQL runs as the postgres user through
# runuser) and the bench packages (sh tools/deps.sh bench). Every server is
# started here and stopped by its pid (cofferd: SIGTERM; PostgreSQL:
# pg_ctl -m fast); nothing else is touched. Raw lines: BUILD/bench-backup.txt.
#
# Environment (defaults sized for ~15 minutes on a 2-core VM):
#   BENCH_BACKUP_REPS=3          repetitions of every full-backup measurement
#   BENCH_BACKUP_KEYS=1000000    keys of the big Coffer store (1000-byte values)
#   BENCH_BACKUP_SMALL_KEYS=100000  keys of the small store (incremental)
#   BENCH_BACKUP_INCR_KEYS=100000   new keys written before each incremental
#   BENCH_BACKUP_PG_SCALE=70     pgbench -i -s
#   BENCH_BACKUP_LMDB_KEYS=530000   LMDB keys (1000-byte values, ~1.09 GB file)
#   BENCH_BACKUP_SQLITE_ROWS=1000000
#   BENCH_BACKUP_LOAD_N=150000   SETs per redis-benchmark run (about 20 s)
#   BENCH_BACKUP_LOAD_RATE=200   MiB/s of the paced run under load
#                                (coffer backup --rate; 0: no paced run)
#   BENCH_BACKUP_PGBENCH_T=40    seconds per pgbench run (a pg_basebackup under
#                                pgbench takes ~20 s here: at least one whole one)
#   BENCH_DIR=BUILD              where the temporary directory is made
#   PGBIN=/usr/lib/postgresql/N/bin (the newest installed)
set -eu

BUILD="${1:-build}"
HERE="$(cd "$(dirname "$0")" && pwd)"
REPS="${BENCH_BACKUP_REPS:-3}"
KEYS="${BENCH_BACKUP_KEYS:-1000000}"
SMALL_KEYS="${BENCH_BACKUP_SMALL_KEYS:-100000}"
INCR_KEYS="${BENCH_BACKUP_INCR_KEYS:-100000}"
PG_SCALE="${BENCH_BACKUP_PG_SCALE:-70}"
LMDB_KEYS="${BENCH_BACKUP_LMDB_KEYS:-530000}"
SQLITE_ROWS="${BENCH_BACKUP_SQLITE_ROWS:-1000000}"
LOAD_N="${BENCH_BACKUP_LOAD_N:-150000}"
LOAD_RATE="${BENCH_BACKUP_LOAD_RATE:-200}"
PGBENCH_T="${BENCH_BACKUP_PGBENCH_T:-40}"
BENCH_DIR="${BENCH_DIR:-$BUILD}"
# shellcheck disable=SC2012
PGBIN="${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"

die() {
	echo "bench/backup.sh: $*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root (drop_caches, and PostgreSQL through runuser -u postgres)"
for p in redis-cli redis-benchmark sqlite3 mdb_copy python3 runuser; do
	command -v "$p" >/dev/null 2>&1 || die "$p is not installed (sh tools/deps.sh bench)"
done
for p in initdb pg_ctl pg_basebackup pgbench; do
	[ -x "$PGBIN/$p" ] || die "$PGBIN/$p not found (sh tools/deps.sh bench; or set PGBIN)"
done
for p in coffer cofferd engine_bench; do
	[ -x "$BUILD/$p" ] || die "$BUILD/$p is not built (make; engine_bench needs liblmdb-dev, libsqlite3-dev)"
done
id postgres >/dev/null 2>&1 || die "no postgres user (install postgresql)"

WORK="$(mktemp -d "$BENCH_DIR/bench-backup.XXXXXX")"
WORK="$(cd "$WORK" && pwd)"
chmod 755 "$WORK"
SOCKS="$(mktemp -d /tmp/cbb.XXXXXX)" # Unix socket paths must be short
chmod 755 "$SOCKS"
CPIDS=""
LOOP_PID=""
PG_UP=""
cleanup() {
	set +e
	[ -n "$LOOP_PID" ] && { touch "$WORK/stop"; wait "$LOOP_PID"; }
	for d in $PG_UP; do
		runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m fast -w stop >/dev/null 2>&1
	done
	for pid in $CPIDS; do
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in $CPIDS; do
		wait "$pid" 2>/dev/null
	done
	rm -rf "$WORK" "$SOCKS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Private copies: others rebuilding BUILD during the run cannot swap them.
mkdir "$WORK/bin"
cp "$BUILD/coffer" "$BUILD/cofferd" "$BUILD/engine_bench" "$WORK/bin/"
COFFER="$WORK/bin/coffer"
COFFERD="$WORK/bin/cofferd"
RAW="$WORK/raw.txt"
: >"$RAW"
OUT="$WORK/out"
mkdir -p "$OUT" "$WORK/keep"
chown postgres: "$OUT" "$WORK/keep"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
fsize() { stat -c %s "$@" | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
pgu() { runuser -u postgres -- "$@"; }
pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"; }
raw() { echo "$*" >>"$RAW"; }

COLD=1
sync
if ! (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
	COLD=0
fi
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

echo "== backup benchmark: coffer vs cp+fdatasync, pg_basebackup, sqlite3 .backup, mdb_copy"
echo "machine: nproc=$(nproc)" \
	"cpu=\"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)\"" \
	"kernel=$(uname -r) load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
echo "bench dir: $WORK fs=$(findmnt -n -o FSTYPE -T "$WORK" 2>/dev/null || stat -f -c %T "$WORK")" \
	"device=$(df -P "$WORK" | awk 'NR == 2 { print $1 }')"
echo "memory: $(free -m | awk '/^Mem:/ { printf "total=%s MiB free=%s MiB available=%s MiB", $2, $4, $7 }')"
echo "peers: postgresql $(pkgver postgresql-15) ($PGBIN), sqlite3 $(pkgver sqlite3)," \
	"lmdb-utils $(pkgver lmdb-utils), redis-tools $(pkgver redis-tools)"
echo "coffer: $(git -C "$HERE/.." describe --always --dirty 2>/dev/null || echo '?')" \
	"$(python3 -c 'import json, sys
o = {x["name"]: x["value"] for x in json.load(open(sys.argv[1]))}
print("buildtype=%s testing=%s" % (o.get("buildtype"), o.get("testing")))' \
		"$BUILD/meson-info/intro-buildoptions.json" 2>/dev/null || true)"
if [ "$COLD" -eq 1 ]; then
	echo "cold cache: sync; echo 3 > /proc/sys/vm/drop_caches before each cold run"
else
	echo "cold cache: REFUSED (writing /proc/sys/vm/drop_caches failed): hot runs only"
fi
echo "reps=$REPS; coffer keys=$KEYS x 1000 B; pgbench scale=$PG_SCALE; sqlite rows=$SQLITE_ROWS;" \
	"lmdb keys=$LMDB_KEYS"
echo
START=$(date +%s)

# --- servers and stores --------------------------------------------------

# start_cofferd DATADIR SOCK: started, its pid appended to CPIDS, CPID set.
start_cofferd() {
	"$COFFERD" --data "$1" --listen "unix:$2" >"$1.log" 2>&1 &
	CPID=$!
	CPIDS="$CPIDS $CPID"
	i=0
	while ! grep -q "cofferd: started" "$1.log" 2>/dev/null; do
		i=$((i + 1))
		if [ "$i" -gt 300 ] || ! kill -0 "$CPID" 2>/dev/null; then
			cat "$1.log" >&2
			die "cofferd did not start"
		fi
		sleep 0.1
	done
}
stop_cofferd() { # PID
	kill -TERM "$1"
	wait "$1" || true
	CPIDS="$(echo "$CPIDS" | tr ' ' '\n' | grep -vx "$1" | tr '\n' ' ')"
}

# load_keys SOCK FIRST COUNT: COUNT SETs key:%012d (16 bytes) -> 1000 x 'x',
# keys FIRST.., pipelined through redis-cli --pipe (every SET durable).
# shellcheck disable=SC2016
GEN='import sys
n0, n = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
pre = b"*3\r\n$3\r\nSET\r\n$16\r\n"
mid = b"\r\n$1000\r\n" + b"x" * 1000 + b"\r\n"
for b in range(n0, n0 + n, 4096):
    out.write(b"".join(pre + b"key:%012d" % i + mid for i in range(b, min(b + 4096, n0 + n))))'
load_keys() {
	r="$(python3 -c "$GEN" "$2" "$3" | redis-cli -s "$1" --pipe 2>&1 | tail -n 1)"
	case "$r" in
	"errors: 0, replies: $3") ;;
	*) die "loading $3 keys into cofferd failed: $r" ;;
	esac
}

# coffer_backup SOCK TYPE OUT COMPRESS [OPTION...]: prints "seconds bytes
# bytes_written" (seconds of wall time around the client, bytes from its
# --json summary).
coffer_backup() {
	t0=$(now)
	cb_sock=$1 cb_type=$2 cb_out=$3 cb_comp=$4
	shift 4
	j="$("$COFFER" --server "unix:$cb_sock" backup --type "$cb_type" -o "$cb_out" --compress "$cb_comp" --quiet --json "$@")" ||
		die "coffer backup failed"
	s=$(elapsed "$t0")
	echo "$s $(echo "$j" | python3 -c 'import json, sys; j = json.load(sys.stdin)
print(j["bytes"], j["bytes_written"])')"
}

CDATA="$WORK/coffer"
CSOCK="$SOCKS/c.sock"
echo "loading: coffer $KEYS keys through cofferd (redis-cli --pipe)..."
t0=$(now)
start_cofferd "$CDATA" "$CSOCK"
load_keys "$CSOCK" 0 "$KEYS"
echo "  $(elapsed "$t0") s; log before the first backup: $(du -sm "$CDATA/log" | cut -f1) MiB"
# The first full backup truncates the load's log: the store is then coffer.db
# plus the current log generation.
coffer_backup "$CSOCK" full "$OUT/warm.cbk" none >/dev/null
rm -f "$OUT/warm.cbk"
echo "  coffer store: coffer.db $(fsize "$CDATA/coffer.db") B + log $(fsize "$CDATA"/log/*.log) B"

PGPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PGSOCK="$SOCKS/pg"
mkdir -p "$PGSOCK" "$WORK/pg"
chown postgres: "$PGSOCK" "$WORK/pg"
PGDATA="$WORK/pg/data"
echo "loading: postgresql initdb --data-checksums, pgbench -i -s $PG_SCALE..."
t0=$(now)
pgu "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres --data-checksums >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PGPORT
listen_addresses = ''
unix_socket_directories = '$PGSOCK'
EOF
pgu "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/pg/log" -w start >/dev/null
PG_UP="$PGDATA"
pgu "$PGBIN/pgbench" -h "$PGSOCK" -p "$PGPORT" -U postgres -i -q -s "$PG_SCALE" postgres >/dev/null 2>&1 ||
	die "pgbench -i failed"
pgu psql -h "$PGSOCK" -p "$PGPORT" -U postgres -q -c checkpoint postgres
echo "  $(elapsed "$t0") s; database $(pgu psql -h "$PGSOCK" -p "$PGPORT" -U postgres -Atc \
	"select pg_database_size('postgres')" postgres) B"

pg_backup() { # DIR [pg_basebackup options]: prints seconds
	d="$1"
	shift
	t0=$(now)
	pgu "$PGBIN/pg_basebackup" -h "$PGSOCK" -p "$PGPORT" -U postgres -D "$d" -Ft -X stream -c fast "$@" ||
		die "pg_basebackup failed"
	elapsed "$t0"
}
pg_backup "$OUT/pgwarm" >/dev/null
PG_BYTES=$(fsize "$OUT/pgwarm/base.tar" "$OUT/pgwarm/pg_wal.tar")
rm -rf "$OUT/pgwarm"
echo "  pg_basebackup content: base.tar + pg_wal.tar = $PG_BYTES B"

SQ="$WORK/sqlite.db"
echo "loading: sqlite3 $SQLITE_ROWS rows of randomblob(1000)..."
t0=$(now)
sqlite3 "$SQ" "PRAGMA page_size=4096; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < $SQLITE_ROWS)
INSERT INTO t SELECT i, randomblob(1000) FROM c;"
SQ_BYTES=$(fsize "$SQ")
echo "  $(elapsed "$t0") s; $SQ_BYTES B"

LM="$WORK/lmdb"
echo "loading: lmdb $LMDB_KEYS keys (engine_bench --workload bulk --value-size 1000)..."
t0=$(now)
"$WORK/bin/engine_bench" --engine lmdb --workload bulk --n "$LMDB_KEYS" --value-size 1000 --dir "$LM" >/dev/null
mkdir -p "$OUT/lmprobe"
mdb_copy "$LM" "$OUT/lmprobe"
LM_BYTES=$(fsize "$OUT/lmprobe/data.mdb")
rm -rf "$OUT/lmprobe"
echo "  $(elapsed "$t0") s; data.mdb $(fsize "$LM/data.mdb") B, used (mdb_copy output) $LM_BYTES B"
echo

# --- full backups, hot and cold ------------------------------------------

warm_files() { # read the source files of METHOD into the page cache
	case "$1" in
	coffer* | cp) cat "$CDATA/coffer.db" "$CDATA"/log/*.log >/dev/null ;;
	pg*) find "$PGDATA" -path "$PGDATA/pg_wal" -prune -o -type f -exec cat {} + >/dev/null ;;
	sqlite) cat "$SQ" >/dev/null ;;
	lmdb) cat "$LM/data.mdb" >/dev/null ;;
	esac
}

# measure METHOD CACHE REP: one run, one raw line
measure() {
	m="$1" cache="$2" rep="$3"
	rm -rf "$OUT/set"
	mkdir -p "$OUT/set"
	chown postgres: "$OUT/set"
	if [ "$cache" = cold ]; then
		drop_caches
	else
		warm_files "$m"
		sync
	fi
	bytes=0 outb=0
	case "$m" in
	coffer_none | coffer_zstd1)
		c=none
		[ "$m" = coffer_zstd1 ] && c=zstd:1
		r=$(coffer_backup "$CSOCK" full "$OUT/set/full.cbk" "$c")
		# shellcheck disable=SC2086
		# shellcheck disable=SC2086
	set -- $r
		s=$1 bytes=$2 outb=$3
		;;
	cp)
		t0=$(now)
		cp "$CDATA/coffer.db" "$CDATA"/log/*.log "$OUT/set/"
		sync -d "$OUT"/set/*
		s=$(elapsed "$t0")
		bytes=$(fsize "$OUT"/set/*) outb=$bytes
		;;
	pg_plain) s=$(pg_backup "$OUT/set/pg") ;;
	pg_zstd1) s=$(pg_backup "$OUT/set/pg" --compress=server-zstd:1) ;;
	pg_zstd1w2) s=$(pg_backup "$OUT/set/pg" --compress=server-zstd:level=1,workers=2) ;;
	sqlite)
		t0=$(now)
		sqlite3 "$SQ" ".backup '$OUT/set/sq.db'"
		s=$(elapsed "$t0")
		bytes=$SQ_BYTES outb=$(fsize "$OUT/set/sq.db")
		;;
	lmdb)
		# mdb_copy writes with O_DIRECT and never fsyncs: add the fdatasync.
		mkdir -p "$OUT/set/lm"
		t0=$(now)
		mdb_copy "$LM" "$OUT/set/lm"
		sync -d "$OUT/set/lm/data.mdb"
		s=$(elapsed "$t0")
		bytes=$(fsize "$OUT/set/lm/data.mdb") outb=$bytes
		;;
	esac
	case "$m" in
	pg_*)
		bytes=$PG_BYTES
		outb=$(fsize "$OUT"/set/pg/*.tar*)
		;;
	esac
	raw "part=full method=$m cache=$cache rep=$rep bytes=$bytes out_bytes=$outb seconds=$s"
	printf '  %-13s %-4s rep %d: %7.3f s %8.1f MB/s  (out %s B)\n' "$m" "$cache" "$rep" "$s" \
		"$(awk -v b="$bytes" -v s="$s" 'BEGIN { print b / s / 1e6 }')" "$outb"
}

METHODS="coffer_none coffer_zstd1 cp pg_plain pg_zstd1 pg_zstd1w2 sqlite lmdb"
NM=8
CACHES="hot"
[ "$COLD" -eq 1 ] && CACHES="hot cold"
echo "full backups: $REPS reps x ($CACHES), rotating order"
T=$(date +%s)
rep=1
while [ "$rep" -le "$REPS" ]; do
	# rotate the order by 3*(rep-1) places so no method is always first
	k=$(((3 * (rep - 1)) % NM))
	# shellcheck disable=SC2086
	order="$(echo $METHODS $METHODS | tr ' ' '\n' | sed -n "$((k + 1)),$((k + NM))p" | tr '\n' ' ')"
	for cache in $CACHES; do
		for m in $order; do
			measure "$m" "$cache" "$rep"
		done
	done
	rep=$((rep + 1))
done
# keep one idle set of each for the restore part
rm -rf "$OUT/set"
mkdir -p "$OUT/set"
chown postgres: "$OUT/set"
r=$(coffer_backup "$CSOCK" full "$WORK/keep/idle.cbk" none)
echo "$r" | cut -d' ' -f2 >"$WORK/keep/idle.bytes"
pg_backup "$WORK/keep/pg_idle" >/dev/null
echo "  full backups took $(($(date +%s) - T)) s"
echo "  one coffer verify of an idle set (not in the ratios):"
t0=$(now)
"$COFFER" verify "$WORK/keep/idle.cbk" >/dev/null
s=$(elapsed "$t0")
raw "part=verify method=coffer_verify rep=1 bytes=$(fsize "$WORK/keep/idle.cbk") seconds=$s"
echo "    coffer verify: $s s"
echo

# --- under write load ----------------------------------------------------

# backup_loop KIND RESULTFILE: back-to-back backups until $WORK/stop exists;
# one line "seconds bytes" per backup.
backup_loop() {
	n=0
	while [ ! -e "$WORK/stop" ]; do
		n=$((n + 1))
		if [ "$1" = coffer ] || [ "$1" = cofferpaced ]; then
			rm -f "$OUT/load.cbk"
			if [ "$1" = coffer ]; then
				r=$(coffer_backup "$CSOCK" full "$OUT/load.cbk" none)
			else
				r=$(coffer_backup "$CSOCK" full "$OUT/load.cbk" none --rate "$LOAD_RATE")
			fi
			echo "$r" | cut -d' ' -f1-2 >>"$2"
		else
			rm -rf "$OUT/loadpg"
			s=$(pg_backup "$OUT/loadpg")
			echo "$s $(fsize "$OUT/loadpg/base.tar" "$OUT/loadpg/pg_wal.tar")" >>"$2"
		fi
	done
}
rb_set() { # one redis-benchmark run; prints SET requests/s
	redis-benchmark -s "$CSOCK" -t set -c 50 -d 100 -r 1000000 -n "$LOAD_N" -q 2>&1 |
		tr '\r' '\n' | awk '/^SET: .*requests per second/ { print $2; exit }'
}
pgb_tps() { # one pgbench run; prints tps
	pgu "$PGBIN/pgbench" -h "$PGSOCK" -p "$PGPORT" -U postgres -c 8 -T "$PGBENCH_T" postgres 2>/dev/null |
		awk '/^tps = / { print $3; exit }'
}
# loaded KIND: runs the load alone, with the backup loop, alone again
loaded() {
	kind=$1
	if [ "$kind" = pg ]; then load=pgb_tps; else load=rb_set; fi
	a=$($load)
	rm -f "$WORK/stop" "$WORK/loop.txt"
	: >"$WORK/loop.txt"
	backup_loop "$kind" "$WORK/loop.txt" &
	LOOP_PID=$!
	b=$($load)
	touch "$WORK/stop"
	wait "$LOOP_PID"
	LOOP_PID=""
	c=$($load)
	nb=$(wc -l <"$WORK/loop.txt")
	# The last backup overlapped the end of the load: left out when there are others.
	awk -v kind="$kind" -v a="$a" -v b="$b" -v c="$c" -v nb="$nb" '
		{ n++; s[n] = $1; by[n] = $2 }
		END {
			use = (n > 1) ? n - 1 : n
			for (i = 1; i <= use; i++) printf "part=load method=%s_backup rep=%d bytes=%s seconds=%s\n", kind, i, by[i], s[i]
			printf "part=load method=%s_rate alone_before=%s with_backup=%s alone_after=%s backups=%d\n", kind, a, b, c, nb
		}' "$WORK/loop.txt" >>"$RAW"
	grep "part=load method=${kind}_" "$RAW" | sed 's/^/  /'
	if [ "$kind" = coffer ]; then
		mv "$OUT/load.cbk" "$WORK/keep/load.cbk"
		tail -n 1 "$WORK/loop.txt" | cut -d' ' -f2 >"$WORK/keep/load.bytes"
	elif [ "$kind" = pg ]; then
		rm -rf "$WORK/keep/pg_load"
		mv "$OUT/loadpg" "$WORK/keep/pg_load"
	fi
}
echo "under write load: redis-benchmark -t set -c 50 -d 100 -r 1000000 -n $LOAD_N (alone, with coffer backups, alone)"
loaded coffer
if [ "$LOAD_RATE" != 0 ]; then
	echo "under write load: the same, coffer backup --rate $LOAD_RATE (MiB/s)"
	loaded cofferpaced
	rm -f "$OUT/load.cbk"
fi
echo "under write load: pgbench -c 8 -T $PGBENCH_T (alone, with pg_basebackup, alone)"
loaded pg
echo

# --- restore + recovery --------------------------------------------------

restore_coffer() { # SET LABEL REP
	rm -rf "$OUT/restored"
	sync
	t0=$(now)
	"$COFFER" restore "$1" --target "$OUT/restored" >/dev/null
	s=$(elapsed "$t0")
	raw "part=restore method=coffer_$2 rep=$3 bytes=$(cat "${1%.cbk}.bytes") seconds=$s"
}
restore_pg() { # BACKUPDIR LABEL REP
	rm -rf "$OUT/pgr"
	mkdir -p "$OUT/pgr"
	chmod 700 "$OUT/pgr"
	chown postgres: "$OUT/pgr"
	sync
	t0=$(now)
	pgu tar -xf "$1/base.tar" -C "$OUT/pgr"
	pgu tar -xf "$1/pg_wal.tar" -C "$OUT/pgr/pg_wal"
	pgu "$PGBIN/pg_ctl" -D "$OUT/pgr" -l "$WORK/pg/restore.log" -w -t 600 \
		-o "-p $((PGPORT + 1)) -c listen_addresses=''" start >/dev/null
	PG_UP="$PG_UP $OUT/pgr"
	s=$(elapsed "$t0")
	pgu "$PGBIN/pg_ctl" -D "$OUT/pgr" -m fast -w stop >/dev/null
	PG_UP="$PGDATA"
	raw "part=restore method=pg_$2 rep=$3 bytes=$(fsize "$1/base.tar" "$1/pg_wal.tar") seconds=$s"
}
echo "restore + recovery (hot: the set was just written or read)"
rep=1
while [ "$rep" -le "$REPS" ]; do
	for what in idle load; do
		cat "$WORK/keep/$what.cbk" >/dev/null
		restore_coffer "$WORK/keep/$what.cbk" "$what" "$rep"
		find "$WORK/keep/pg_$what" -type f -exec cat {} + >/dev/null
		restore_pg "$WORK/keep/pg_$what" "$what" "$rep"
	done
	rep=$((rep + 1))
done
rm -rf "$OUT/restored" "$OUT/pgr"
grep 'part=restore' "$RAW" | sed 's/^/  /'
echo

# --- incremental: big and small store ------------------------------------

SDATA="$WORK/small"
SSOCK="$SOCKS/s.sock"
start_cofferd "$SDATA" "$SSOCK"
SMALL_PID=$CPID
load_keys "$SSOCK" 0 "$SMALL_KEYS"
coffer_backup "$SSOCK" full "$OUT/swarm.cbk" none >/dev/null
rm -f "$OUT/swarm.cbk"
echo "incremental: a full backup, then $REPS x ($INCR_KEYS new keys of 1000 B; incremental), on each store"
for st in big small; do
	if [ $st = big ]; then sock=$CSOCK dd=$CDATA; else sock=$SSOCK dd=$SDATA; fi
	rm -f "$OUT/f.cbk"
	r=$(coffer_backup "$sock" full "$OUT/f.cbk" none)
	# shellcheck disable=SC2086
	set -- $r
	raw "part=incr method=${st}_full rep=1 bytes=$2 seconds=$1"
	echo "  $st store after its full backup: coffer.db $(fsize "$dd/coffer.db") B," \
		"log $(fsize "$dd"/log/*.log) B"
	rm -f "$OUT/f.cbk"
	rep=1
	while [ "$rep" -le "$REPS" ]; do
		load_keys "$sock" $((1000000000 + rep * INCR_KEYS)) "$INCR_KEYS"
		rm -f "$OUT/i.cbk"
		sync
		r=$(coffer_backup "$sock" incremental "$OUT/i.cbk" none)
		# shellcheck disable=SC2086
		# shellcheck disable=SC2086
	set -- $r
		raw "part=incr method=${st}_incremental rep=$rep bytes=$2 seconds=$1"
		rep=$((rep + 1))
	done
done
rm -f "$OUT/i.cbk"
stop_cofferd "$SMALL_PID"
grep 'part=incr' "$RAW" | sed 's/^/  /'
echo

cp "$RAW" "$BUILD/bench-backup.txt"
echo "backup benchmark took $(($(date +%s) - START)) s; load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# --- summary ---------------------------------------------------------------
awk '
function median(list,    a, n, i, j, t) {
	n = split(list, a, " ")
	for (i = 2; i <= n; i++) {
		t = a[i] + 0
		for (j = i - 1; j >= 1 && a[j] + 0 > t; j--)
			a[j + 1] = a[j]
		a[j + 1] = t
	}
	if (n == 0) return 0
	return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function mbs(k) { return (med[k] > 0) ? by[k] / med[k] / 1e6 : 0 }
{
	delete f
	for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
	k = f["part"] " " f["method"] " " f["cache"]
	if ("seconds" in f) {
		secs[k] = secs[k] " " f["seconds"]
		mbl[k] = mbl[k] " " (f["bytes"] / f["seconds"] / 1e6)
		by[k] = f["bytes"]; ob[k] = f["out_bytes"]; cnt[k]++
	}
	if (f["part"] == "load" && f["method"] ~ /_rate$/) {
		ra[f["method"]] = f["alone_before"]; rb[f["method"]] = f["with_backup"]
		rc[f["method"]] = f["alone_after"]; nb[f["method"]] = f["backups"]
	}
}
END {
	for (k in secs) med[k] = median(secs[k])
	n = split("coffer_none coffer_zstd1 cp pg_plain pg_zstd1 pg_zstd1w2 sqlite lmdb", M, " ")
	split("coffer backup --compress none (verified)|coffer backup --compress zstd:1|cp + fdatasync (coffer.db + log)|pg_basebackup -Ft -X stream|pg_basebackup server-zstd:1|pg_basebackup server-zstd:1 workers=2|sqlite3 .backup|mdb_copy + fdatasync", L, "|")
	printf "full backup, ~1 GiB, medians of seconds (MB/s = bytes / median seconds)\n"
	printf "%-42s %13s %9s %9s %9s %9s  %s\n", "method", "bytes", "hot s", "hot MB/s", "cold s", "cold MB/s", "out bytes"
	for (i = 1; i <= n; i++) {
		h = "full " M[i] " hot"; c = "full " M[i] " cold"
		printf "%-42s %13s %9.3f %9.1f %9.3f %9.1f  %s\n", L[i], by[h], med[h], mbs(h), med[c], mbs(c), ob[h]
	}
	printf "\nratios of MB/s (> 1: coffer faster)               hot      cold\n"
	split("coffer_none/cp coffer_none/pg_plain coffer_zstd1/pg_zstd1 coffer_zstd1/pg_zstd1w2 coffer_none/sqlite coffer_none/lmdb", R, " ")
	for (i = 1; i in R; i++) {
		split(R[i], p, "/")
		printf "  %-44s %7.2fx %7.2fx\n", R[i],
			(mbs("full " p[2] " hot") > 0) ? mbs("full " p[1] " hot") / mbs("full " p[2] " hot") : 0,
			(mbs("full " p[2] " cold") > 0) ? mbs("full " p[1] " cold") / mbs("full " p[2] " cold") : 0
	}
	k = "verify coffer_verify "
	if (k in med) printf "  (coffer verify of the set, not timed above: %.3f s, %.1f MB/s)\n", med[k], mbs(k)

	printf "\nunder write load (backups back to back while the load runs; MB/s median of the backups)\n"
	cb = "load coffer_backup "; pb = "load pg_backup "
	printf "  coffer backup none: %.1f MB/s (n=%d); redis-benchmark SET/s alone %s / %s, with backup %s: kept %.2fx\n",
		median(mbl[cb]), cnt[cb], ra["coffer_rate"], rc["coffer_rate"], rb["coffer_rate"],
		(ra["coffer_rate"] + rc["coffer_rate"] > 0) ? 2 * rb["coffer_rate"] / (ra["coffer_rate"] + rc["coffer_rate"]) : 0
	printf "  pg_basebackup:      %.1f MB/s (n=%d); pgbench -c 8 tps alone %s / %s, with backup %s: kept %.2fx\n",
		median(mbl[pb]), cnt[pb], ra["pg_rate"], rc["pg_rate"], rb["pg_rate"],
		(ra["pg_rate"] + rc["pg_rate"] > 0) ? 2 * rb["pg_rate"] / (ra["pg_rate"] + rc["pg_rate"]) : 0
	kp = "load cofferpaced_backup "
	if (cnt[kp] > 0)
		printf "  coffer backup none --rate: %.1f MB/s (n=%d); redis-benchmark SET/s alone %s / %s, with backup %s: kept %.2fx\n",
			median(mbl[kp]), cnt[kp], ra["cofferpaced_rate"], rc["cofferpaced_rate"], rb["cofferpaced_rate"], kept("cofferpaced_rate")
	if (median(mbl[pb]) > 0)
		printf "  ratio coffer/pg_basebackup MB/s under load: %.2fx\n", median(mbl[cb]) / median(mbl[pb])

	printf "\nrestore + recovery (coffer restore; PostgreSQL untar + start until ready), medians\n"
	split("idle load", W, " ")
	for (i = 1; i <= 2; i++) {
		a = "restore coffer_" W[i] " "; b = "restore pg_" W[i] " "
		printf "  %-5s set: coffer %6.3f s %7.1f MB/s (%s B)   postgresql %6.3f s %7.1f MB/s (%s B)   ratio %.2fx\n",
			W[i], med[a], mbs(a), by[a], med[b], mbs(b), by[b], (mbs(b) > 0) ? mbs(a) / mbs(b) : 0
	}

	printf "\nincremental after new log (medians; full backup of the same store for contrast)\n"
	split("big small", S, " ")
	for (i = 1; i <= 2; i++) {
		a = "incr " S[i] "_incremental "; b = "incr " S[i] "_full "
		printf "  %-5s store: incremental %6.3f s (%s B of log, %.1f MB/s)   full %6.3f s (%s B)\n",
			S[i], med[a], by[a], mbs(a), med[b], by[b]
	}

	printf "\ngoals (issue 5), hot cache\n"
	goal("uncompressed, verified >= 0.9x cp + fdatasync", ratio("coffer_none", "cp", "hot"), 0.9)
	goal("uncompressed, verified >= 2x pg_basebackup", ratio("coffer_none", "pg_plain", "hot"), 2)
	goal("zstd:1 >= 1.2x pg_basebackup server-zstd:1 (2 workers)", ratio("coffer_zstd1", "pg_zstd1w2", "hot"), 1.2)
	goal("zstd:1 >= 1.2x pg_basebackup server-zstd:1 (no workers)", ratio("coffer_zstd1", "pg_zstd1", "hot"), 1.2)
	goal("under write load >= 2x pg_basebackup MB/s", (median(mbl[pb]) > 0) ? median(mbl[cb]) / median(mbl[pb]) : 0, 2)
	goal("under write load SET rate kept >= 0.85x",
	     (ra["coffer_rate"] + rc["coffer_rate"] > 0) ? 2 * rb["coffer_rate"] / (ra["coffer_rate"] + rc["coffer_rate"]) : 0, 0.85)
	if (cnt[kp] > 0) {
		goal("paced (--rate): under write load >= 2x pg_basebackup MB/s",
		     (median(mbl[pb]) > 0) ? median(mbl[kp]) / median(mbl[pb]) : 0, 2)
		goal("paced (--rate): SET rate kept >= 0.85x", kept("cofferpaced_rate"), 0.85)
	}
	a = "incr big_incremental "; b = "incr small_incremental "
	printf "  %-58s big/small incremental time %.2fx, big/small full time %.2fx\n",
	       "incremental time follows the log, not the store:", (med[b] > 0) ? med[a] / med[b] : 0,
	       (med["incr small_full "] > 0) ? med["incr big_full "] / med["incr small_full "] : 0
}
function kept(m) {
	return (ra[m] + rc[m] > 0) ? 2 * rb[m] / (ra[m] + rc[m]) : 0
}
function ratio(x, y, c) {
	return (mbs("full " y " " c) > 0) ? mbs("full " x " " c) / mbs("full " y " " c) : 0
}
function goal(what, v, want) {
	printf "  %-58s %6.2fx  %s\n", what, v, (v >= want) ? "met" : "MISSED"
}' "$RAW"
echo
echo "raw results: $BUILD/bench-backup.txt"
