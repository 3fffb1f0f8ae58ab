/*
 * bench/engine_bench.c - one workload against one engine, one result line.
 *
 *   engine_bench --engine coffer|sqlite|lmdb --dir DIR
 *                --workload commit1|commit16|bulk|read|scan
 *                [--n N] [--value-size B] [--keys K] [--batch B] [--threads T]
 *                [--coffer-cache-mb M]   (diagnostics; run.sh keeps defaults)
 *
 * Workloads (the same keys and values for every engine):
 *   commit1   N single-key durable commits (new keys, random order), 1 thread
 *   commit16  the same from 16 threads at once (N in total; --threads T)
 *   bulk      load N keys in sorted order, B keys per transaction (10,000)
 *   read      N random point reads of a store that bulk loaded K keys
 *             (default K = N); every value is checked (length, first
 *             bytes; one in 256 whole)
 *   scan      one full ordered scan of a bulk-loaded store; rows counted
 *             and checked against K
 *
 * Keys are 16 bytes, "key%013u" (lexical order = numeric order). The value
 * of key i is B bytes (100 by default) of a splitmix64 stream seeded with i:
 * incompressible, different for every key, and recomputed to check reads.
 *
 * Each engine is used for durability as its documentation recommends:
 *   coffer  coffer_env_open with default options; coffer_txn_commit is
 *           durable on return (log fdatasync shared by concurrent committers)
 *   sqlite  journal_mode=WAL, synchronous=FULL, one connection per thread,
 *           table kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID,
 *           BEGIN IMMEDIATE / INSERT / COMMIT per commit, busy_timeout 600 s
 *   lmdb    mdb_env_open flags 0 (durable: no MDB_NOSYNC / MDB_NOMETASYNC /
 *           MDB_WRITEMAP), one write transaction per commit (LMDB
 *           serializes writers), plain mdb_put (no MDB_APPEND), map size
 *           large enough for the run
 * Caches are left at each engine's default (coffer 64 MiB, SQLite 2 MB per
 * connection, LMDB: the OS page cache through its read-only map).
 *
 * Only the workload is timed: opening the store, creating threads and
 * closing the store are not. The close time (checkpoint for coffer and
 * SQLite) is printed separately as close_s.
 *
 * Output, one line on stdout, key=value separated by spaces:
 *   engine= workload= ops= seconds= ops_per_s= mb_per_s= peak_rss_kb=
 *   threads= value_size= close_s=
 * mb_per_s is (16 + value_size) * ops / seconds / 1e6: key and value bytes
 * written (commit, bulk) or returned (read, scan). peak_rss_kb is
 * getrusage(RUSAGE_SELF).ru_maxrss of the whole process (for LMDB it
 * includes the resident pages of its memory map).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include <coffer/coffer.h>
#include <lmdb.h>
#include <sqlite3.h>

#define KLEN 16
#define TREE "bench"
#define MAX_VALUE (1u << 20)

enum engine { E_COFFER, E_SQLITE, E_LMDB };
enum workload { W_COMMIT, W_BULK, W_READ, W_SCAN };

static const char *engine_names[] = {"coffer", "sqlite", "lmdb"};

static struct config {
	enum engine engine;
	enum workload workload;
	const char *workload_name;
	const char *dir;
	uint64_t n, keys, batch;
	size_t vsize;
	unsigned threads;
	uint64_t coffer_cache_mb; /* diagnostics only; 0: the default */
} cfg;

/* Seconds spent closing SQLite connections after the timed part (the last
 * close checkpoints the WAL); reported in close_s. */
static double sq_close_s;

/* ---- helpers ---- */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "engine_bench: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* "key" + 13 decimal digits, no NUL. */
static void make_key(uint8_t k[KLEN], uint64_t i)
{
	memcpy(k, "key", 3);
	for (int d = KLEN - 1; d >= 3; d--) {
		k[d] = (uint8_t)('0' + i % 10);
		i /= 10;
	}
}

static void make_value(uint8_t *v, size_t len, uint64_t i)
{
	uint64_t s = 0xC0FFEE0000000000ull ^ (i * 0x2545F4914F6CDD1Dull);
	size_t off = 0;
	while (off < len) {
		uint64_t r = splitmix64(&s);
		size_t n = len - off < 8 ? len - off : 8;
		memcpy(v + off, &r, n);
		off += n;
	}
}

/* Every value's length and first bytes are checked, and one value in 256
 * whole: a full check of each would cost more than LMDB's whole lookup. */
static void check_value(const void *got, size_t glen, uint64_t i, uint8_t *scratch)
{
	size_t n = glen < 8 ? glen : 8;
	if ((i & 255) == 0)
		n = glen;
	make_value(scratch, n, i);
	if (glen != cfg.vsize || memcmp(got, scratch, n) != 0)
		die("wrong value for key %" PRIu64 " (length %zu)", i, glen);
}

static uint64_t key_index(const void *k, size_t klen)
{
	const uint8_t *p = k;
	if (klen != KLEN || memcmp(p, "key", 3) != 0)
		die("unexpected key of length %zu", klen);
	uint64_t i = 0;
	for (size_t d = 3; d < KLEN; d++)
		i = i * 10 + (uint64_t)(p[d] - '0');
	return i;
}

/* Random order of 0..n-1 (Fisher-Yates, fixed seed). */
static uint32_t *permutation(uint64_t n)
{
	uint32_t *p = malloc(n * sizeof *p);
	if (p == NULL)
		die("no memory");
	for (uint64_t i = 0; i < n; i++)
		p[i] = (uint32_t)i;
	uint64_t s = 42;
	for (uint64_t i = n - 1; i > 0; i--) {
		uint64_t j = splitmix64(&s) % (i + 1);
		uint32_t t = p[i];
		p[i] = p[j];
		p[j] = t;
	}
	return p;
}

/* ---- coffer ---- */

static coffer_env *cf_env;

static void cf_die(const char *what, int rc)
{
	const coffer_error *e = coffer_error_last();
	die("coffer: %s: %s (%d)", what, e && e->message[0] ? e->message : "?", rc);
}

static void cf_open(void)
{
	coffer_env_options o;
	coffer_env_options_init(&o);
	o.flags = COFFER_ENV_CREATE;
	o.cache_bytes = cfg.coffer_cache_mb << 20;
	int rc = coffer_env_open(&cf_env, cfg.dir, &o);
	if (rc)
		cf_die("open", rc);
}

static void cf_close(void)
{
	int rc = coffer_env_close(cf_env);
	if (rc)
		cf_die("close", rc);
}

/* ---- sqlite ---- */

static void sq_check(sqlite3 *db, int rc, int want, const char *what)
{
	if (rc != want)
		die("sqlite: %s: %s (%d)", what, sqlite3_errmsg(db), rc);
}

static void sq_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		die("sqlite: %s: %s", sql, msg ? msg : "?");
}

static sqlite3 *sq_open(void)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/bench.sqlite", cfg.dir);
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(path, &db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
				 NULL);
	sq_check(db, rc, SQLITE_OK, "open");
	sqlite3_busy_timeout(db, 600000);
	sq_exec(db, "PRAGMA journal_mode=WAL");
	sq_exec(db, "PRAGMA synchronous=FULL");
	return db;
}

static sqlite3_stmt *sq_prep(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	sq_check(db, sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL),
		 SQLITE_OK, sql);
	return st;
}

/* Step a statement that returns no row, retrying on SQLITE_BUSY (the busy
 * timeout normally absorbs it). */
static void sq_step_done(sqlite3 *db, sqlite3_stmt *st, const char *what)
{
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_BUSY)
		sqlite3_reset(st);
	sq_check(db, rc, SQLITE_DONE, what);
	sqlite3_reset(st);
}

static void sq_create(void)
{
	sqlite3 *db = sq_open();
	sq_exec(db, "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID");
	sqlite3_close(db);
}

/* ---- lmdb ---- */

static MDB_env *mdb_env;
static MDB_dbi mdb_dbi;

static void mdb_ok(int rc, const char *what)
{
	if (rc != MDB_SUCCESS)
		die("lmdb: %s: %s", what, mdb_strerror(rc));
}

static void lm_open(void)
{
	mdb_ok(mdb_env_create(&mdb_env), "env_create");
	/* Room for the data several times over (B+tree overhead, free pages
	 * kept for readers); the file grows only as used. */
	uint64_t want = cfg.keys * (KLEN + cfg.vsize + 64) * 4 + (256ull << 20);
	if (want < (1ull << 30))
		want = 1ull << 30;
	mdb_ok(mdb_env_set_mapsize(mdb_env, (size_t)want), "set_mapsize");
	mdb_ok(mdb_env_set_maxreaders(mdb_env, 126), "set_maxreaders");
	mdb_ok(mdb_env_open(mdb_env, cfg.dir, 0, 0644), "env_open");
	MDB_txn *t;
	mdb_ok(mdb_txn_begin(mdb_env, NULL, 0, &t), "txn_begin");
	mdb_ok(mdb_dbi_open(t, NULL, 0, &mdb_dbi), "dbi_open");
	mdb_ok(mdb_txn_commit(t), "txn_commit");
}

static void lm_close(void)
{
	mdb_env_close(mdb_env);
}

/* ---- workloads ---- */

struct worker {
	pthread_t th;
	unsigned id;
	const uint32_t *order;
	pthread_barrier_t *start;
	sqlite3 *db; /* sqlite: this thread's connection */
};

/* Single-key durable commits of keys order[id], order[id + T], ... */
static void *commit_worker(void *arg)
{
	struct worker *w = arg;
	uint8_t key[KLEN];
	uint8_t *val = malloc(cfg.vsize ? cfg.vsize : 1);
	sqlite3_stmt *sb = NULL, *si = NULL, *sc = NULL;
	if (val == NULL)
		die("no memory");
	if (cfg.engine == E_SQLITE) {
		sb = sq_prep(w->db, "BEGIN IMMEDIATE");
		si = sq_prep(w->db, "INSERT INTO kv (k, v) VALUES (?1, ?2)");
		sc = sq_prep(w->db, "COMMIT");
	}
	pthread_barrier_wait(w->start);
	for (uint64_t i = w->id; i < cfg.n; i += cfg.threads) {
		uint64_t k = w->order[i];
		make_key(key, k);
		make_value(val, cfg.vsize, k);
		int rc;
		switch (cfg.engine) {
		case E_COFFER: {
			coffer_txn *t;
			if ((rc = coffer_txn_begin(cf_env, 0, &t)))
				cf_die("txn_begin", rc);
			if ((rc = coffer_put(t, TREE, key, KLEN, val, cfg.vsize, 0)))
				cf_die("put", rc);
			if ((rc = coffer_txn_commit(t)))
				cf_die("commit", rc);
			break;
		}
		case E_SQLITE:
			sq_step_done(w->db, sb, "BEGIN IMMEDIATE");
			sqlite3_bind_blob(si, 1, key, KLEN, SQLITE_STATIC);
			sqlite3_bind_blob(si, 2, val, (int)cfg.vsize, SQLITE_STATIC);
			sq_step_done(w->db, si, "INSERT");
			sq_step_done(w->db, sc, "COMMIT");
			break;
		case E_LMDB: {
			MDB_txn *t;
			mdb_ok(mdb_txn_begin(mdb_env, NULL, 0, &t), "txn_begin");
			MDB_val mk = {KLEN, key}, mv = {cfg.vsize, val};
			mdb_ok(mdb_put(t, mdb_dbi, &mk, &mv, 0), "put");
			mdb_ok(mdb_txn_commit(t), "txn_commit");
			break;
		}
		}
	}
	if (cfg.engine == E_SQLITE) {
		sqlite3_finalize(sb);
		sqlite3_finalize(si);
		sqlite3_finalize(sc);
	}
	free(val);
	return NULL;
}

static double run_commit(void)
{
	uint32_t *order = permutation(cfg.n);
	struct worker *w = calloc(cfg.threads, sizeof *w);
	pthread_barrier_t start;
	if (w == NULL)
		die("no memory");
	pthread_barrier_init(&start, NULL, cfg.threads + 1);
	for (unsigned i = 0; i < cfg.threads; i++) {
		w[i].id = i;
		w[i].order = order;
		w[i].start = &start;
		if (cfg.engine == E_SQLITE)
			w[i].db = sq_open();
		int rc = pthread_create(&w[i].th, NULL, commit_worker, &w[i]);
		if (rc)
			die("pthread_create: %s", strerror(rc));
	}
	pthread_barrier_wait(&start);
	double t0 = now_s();
	for (unsigned i = 0; i < cfg.threads; i++)
		pthread_join(w[i].th, NULL);
	double t = now_s() - t0;
	double c0 = now_s();
	for (unsigned i = 0; i < cfg.threads; i++)
		if (w[i].db)
			sqlite3_close(w[i].db);
	sq_close_s = now_s() - c0;
	pthread_barrier_destroy(&start);
	free(w);
	free(order);
	return t;
}

static double run_bulk(void)
{
	uint8_t key[KLEN];
	uint8_t *val = malloc(cfg.vsize ? cfg.vsize : 1);
	sqlite3 *db = NULL;
	sqlite3_stmt *sb = NULL, *si = NULL, *sc = NULL;
	if (val == NULL)
		die("no memory");
	if (cfg.engine == E_SQLITE) {
		db = sq_open();
		sb = sq_prep(db, "BEGIN IMMEDIATE");
		si = sq_prep(db, "INSERT INTO kv (k, v) VALUES (?1, ?2)");
		sc = sq_prep(db, "COMMIT");
	}
	double t0 = now_s();
	for (uint64_t base = 0; base < cfg.n; base += cfg.batch) {
		uint64_t end = base + cfg.batch < cfg.n ? base + cfg.batch : cfg.n;
		coffer_txn *ct = NULL;
		MDB_txn *mt = NULL;
		int rc;
		switch (cfg.engine) {
		case E_COFFER:
			if ((rc = coffer_txn_begin(cf_env, 0, &ct)))
				cf_die("txn_begin", rc);
			break;
		case E_SQLITE:
			sq_step_done(db, sb, "BEGIN IMMEDIATE");
			break;
		case E_LMDB:
			mdb_ok(mdb_txn_begin(mdb_env, NULL, 0, &mt), "txn_begin");
			break;
		}
		for (uint64_t i = base; i < end; i++) {
			make_key(key, i);
			make_value(val, cfg.vsize, i);
			switch (cfg.engine) {
			case E_COFFER:
				if ((rc = coffer_put(ct, TREE, key, KLEN, val, cfg.vsize, 0)))
					cf_die("put", rc);
				break;
			case E_SQLITE:
				sqlite3_bind_blob(si, 1, key, KLEN, SQLITE_STATIC);
				sqlite3_bind_blob(si, 2, val, (int)cfg.vsize, SQLITE_STATIC);
				sq_step_done(db, si, "INSERT");
				break;
			case E_LMDB: {
				MDB_val mk = {KLEN, key}, mv = {cfg.vsize, val};
				mdb_ok(mdb_put(mt, mdb_dbi, &mk, &mv, 0), "put");
				break;
			}
			}
		}
		switch (cfg.engine) {
		case E_COFFER:
			if ((rc = coffer_txn_commit(ct)))
				cf_die("commit", rc);
			break;
		case E_SQLITE:
			sq_step_done(db, sc, "COMMIT");
			break;
		case E_LMDB:
			mdb_ok(mdb_txn_commit(mt), "txn_commit");
			break;
		}
	}
	double t = now_s() - t0;
	if (db) {
		double c0 = now_s();
		sqlite3_finalize(sb);
		sqlite3_finalize(si);
		sqlite3_finalize(sc);
		sqlite3_close(db);
		sq_close_s = now_s() - c0;
	}
	free(val);
	return t;
}

/* N random point reads in one read transaction (one snapshot). */
static double run_read(void)
{
	uint8_t key[KLEN];
	uint8_t *scratch = malloc(cfg.vsize ? cfg.vsize : 1);
	sqlite3 *db = NULL;
	sqlite3_stmt *ss = NULL;
	coffer_txn *ct = NULL;
	MDB_txn *mt = NULL;
	int rc;
	if (scratch == NULL)
		die("no memory");
	uint64_t s = 7;
	double t0 = now_s();
	switch (cfg.engine) {
	case E_COFFER:
		if ((rc = coffer_txn_begin(cf_env, COFFER_TXN_READ_ONLY, &ct)))
			cf_die("txn_begin", rc);
		break;
	case E_SQLITE:
		db = sq_open();
		ss = sq_prep(db, "SELECT v FROM kv WHERE k = ?1");
		sq_exec(db, "BEGIN");
		break;
	case E_LMDB:
		mdb_ok(mdb_txn_begin(mdb_env, NULL, MDB_RDONLY, &mt), "txn_begin");
		break;
	}
	for (uint64_t i = 0; i < cfg.n; i++) {
		uint64_t k = splitmix64(&s) % cfg.keys;
		make_key(key, k);
		switch (cfg.engine) {
		case E_COFFER: {
			void *v;
			size_t vlen;
			if ((rc = coffer_get(ct, TREE, key, KLEN, &v, &vlen)))
				cf_die("get", rc);
			check_value(v, vlen, k, scratch);
			free(v);
			break;
		}
		case E_SQLITE:
			sqlite3_bind_blob(ss, 1, key, KLEN, SQLITE_STATIC);
			rc = sqlite3_step(ss);
			sq_check(db, rc, SQLITE_ROW, "SELECT");
			check_value(sqlite3_column_blob(ss, 0), (size_t)sqlite3_column_bytes(ss, 0), k,
				    scratch);
			sqlite3_reset(ss);
			break;
		case E_LMDB: {
			MDB_val mk = {KLEN, key}, mv;
			mdb_ok(mdb_get(mt, mdb_dbi, &mk, &mv), "get");
			check_value(mv.mv_data, mv.mv_size, k, scratch);
			break;
		}
		}
	}
	switch (cfg.engine) {
	case E_COFFER:
		if ((rc = coffer_txn_commit(ct)))
			cf_die("read txn end", rc);
		break;
	case E_SQLITE:
		sq_exec(db, "COMMIT");
		break;
	case E_LMDB:
		mdb_txn_abort(mt);
		break;
	}
	double t = now_s() - t0;
	if (db) {
		sqlite3_finalize(ss);
		sqlite3_close(db);
	}
	free(scratch);
	return t;
}

/* One full ordered scan; every row's key must follow the previous one and
 * its value must be the key's. */
static double run_scan(void)
{
	uint8_t *scratch = malloc(cfg.vsize ? cfg.vsize : 1);
	uint64_t rows = 0, prev = 0;
	int rc;
	if (scratch == NULL)
		die("no memory");
#define ROW(kp, kl, vp, vl)                                                                  \
	do {                                                                                 \
		uint64_t ki_ = key_index(kp, kl);                                            \
		if (rows > 0 && ki_ <= prev)                                                 \
			die("scan out of order at row %" PRIu64, rows);                      \
		check_value(vp, vl, ki_, scratch);                                           \
		prev = ki_;                                                                  \
		rows++;                                                                      \
	} while (0)
	double t0 = now_s();
	switch (cfg.engine) {
	case E_COFFER: {
		coffer_txn *t;
		coffer_cursor *c;
		if ((rc = coffer_txn_begin(cf_env, COFFER_TXN_READ_ONLY, &t)))
			cf_die("txn_begin", rc);
		if ((rc = coffer_cursor_open(t, TREE, &c)))
			cf_die("cursor_open", rc);
		for (rc = coffer_cursor_first(c); rc == COFFER_OK; rc = coffer_cursor_next(c)) {
			const void *k, *v;
			size_t kl, vl;
			int grc = coffer_cursor_get(c, &k, &kl, &v, &vl);
			if (grc)
				cf_die("cursor_get", grc);
			ROW(k, kl, v, vl);
		}
		if (rc != COFFER_E_NOT_FOUND)
			cf_die("cursor_next", rc);
		coffer_cursor_close(c);
		if ((rc = coffer_txn_commit(t)))
			cf_die("read txn end", rc);
		break;
	}
	case E_SQLITE: {
		sqlite3 *db = sq_open();
		sqlite3_stmt *ss = sq_prep(db, "SELECT k, v FROM kv ORDER BY k");
		while ((rc = sqlite3_step(ss)) == SQLITE_ROW)
			ROW(sqlite3_column_blob(ss, 0), (size_t)sqlite3_column_bytes(ss, 0),
			    sqlite3_column_blob(ss, 1), (size_t)sqlite3_column_bytes(ss, 1));
		sq_check(db, rc, SQLITE_DONE, "SELECT");
		sqlite3_finalize(ss);
		sqlite3_close(db);
		break;
	}
	case E_LMDB: {
		MDB_txn *t;
		MDB_cursor *c;
		MDB_val mk, mv;
		mdb_ok(mdb_txn_begin(mdb_env, NULL, MDB_RDONLY, &t), "txn_begin");
		mdb_ok(mdb_cursor_open(t, mdb_dbi, &c), "cursor_open");
		for (rc = mdb_cursor_get(c, &mk, &mv, MDB_FIRST); rc == MDB_SUCCESS;
		     rc = mdb_cursor_get(c, &mk, &mv, MDB_NEXT))
			ROW(mk.mv_data, mk.mv_size, mv.mv_data, mv.mv_size);
		if (rc != MDB_NOTFOUND)
			mdb_ok(rc, "cursor_get");
		mdb_cursor_close(c);
		mdb_txn_abort(t);
		break;
	}
	}
#undef ROW
	double t = now_s() - t0;
	if (rows != cfg.keys)
		die("scan saw %" PRIu64 " rows, expected %" PRIu64 " (use --keys)", rows, cfg.keys);
	cfg.n = rows;
	free(scratch);
	return t;
}

/* ---- main ---- */

static void usage(void) __attribute__((noreturn));
static void usage(void)
{
	fprintf(stderr,
		"usage: engine_bench --engine coffer|sqlite|lmdb --dir DIR\n"
		"                    --workload commit1|commit16|bulk|read|scan\n"
		"                    [--n N] [--value-size B] [--keys K] [--batch B] [--threads T]\n"
		"                    [--coffer-cache-mb M]\n");
	exit(2);
}

static uint64_t num(const char *s, const char *opt)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end != '\0')
		die("%s: not a number: '%s'", opt, s);
	return v;
}

int main(int argc, char **argv)
{
	const char *engine = NULL, *workload = NULL;
	int64_t n = -1, keys = -1, threads = -1;
	cfg.vsize = 100;
	cfg.batch = 10000;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (i + 1 >= argc)
			usage();
		const char *v = argv[++i];
		if (strcmp(a, "--engine") == 0)
			engine = v;
		else if (strcmp(a, "--dir") == 0)
			cfg.dir = v;
		else if (strcmp(a, "--workload") == 0)
			workload = v;
		else if (strcmp(a, "--n") == 0)
			n = (int64_t)num(v, a);
		else if (strcmp(a, "--keys") == 0)
			keys = (int64_t)num(v, a);
		else if (strcmp(a, "--value-size") == 0)
			cfg.vsize = num(v, a);
		else if (strcmp(a, "--batch") == 0)
			cfg.batch = num(v, a);
		else if (strcmp(a, "--threads") == 0)
			threads = (int64_t)num(v, a);
		else if (strcmp(a, "--coffer-cache-mb") == 0)
			cfg.coffer_cache_mb = num(v, a);
		else
			usage();
	}
	if (engine == NULL || workload == NULL || cfg.dir == NULL)
		usage();
	if (strcmp(engine, "coffer") == 0)
		cfg.engine = E_COFFER;
	else if (strcmp(engine, "sqlite") == 0)
		cfg.engine = E_SQLITE;
	else if (strcmp(engine, "lmdb") == 0)
		cfg.engine = E_LMDB;
	else
		usage();
	cfg.workload_name = workload;
	cfg.threads = 1;
	if (strcmp(workload, "commit1") == 0) {
		cfg.workload = W_COMMIT;
	} else if (strcmp(workload, "commit16") == 0) {
		cfg.workload = W_COMMIT;
		cfg.threads = 16;
	} else if (strcmp(workload, "bulk") == 0) {
		cfg.workload = W_BULK;
	} else if (strcmp(workload, "read") == 0) {
		cfg.workload = W_READ;
	} else if (strcmp(workload, "scan") == 0) {
		cfg.workload = W_SCAN;
	} else {
		usage();
	}
	if (threads > 0)
		cfg.threads = (unsigned)threads;
	if (cfg.workload != W_COMMIT && cfg.threads != 1)
		die("--threads applies to the commit workloads only");
	cfg.n = n >= 0 ? (uint64_t)n : 1000000;
	cfg.keys = keys >= 0 ? (uint64_t)keys : cfg.n;
	if (cfg.workload == W_COMMIT || cfg.workload == W_BULK)
		cfg.keys = cfg.n;
	if (cfg.vsize > MAX_VALUE)
		die("--value-size: at most %u", MAX_VALUE);
	if (cfg.n == 0 || cfg.keys == 0 || cfg.batch == 0 || cfg.n > UINT32_MAX ||
	    cfg.keys > UINT32_MAX)
		die("--n, --keys and --batch must be 1..%u", UINT32_MAX);
	if (mkdir(cfg.dir, 0700) != 0 && errno != EEXIST)
		die("mkdir %s: %s", cfg.dir, strerror(errno));

	switch (cfg.engine) {
	case E_COFFER:
		cf_open();
		break;
	case E_SQLITE:
		sq_create();
		break;
	case E_LMDB:
		lm_open();
		break;
	}

	double t = 0;
	switch (cfg.workload) {
	case W_COMMIT:
		t = run_commit();
		break;
	case W_BULK:
		t = run_bulk();
		break;
	case W_READ:
		t = run_read();
		break;
	case W_SCAN:
		t = run_scan();
		break;
	}

	double c0 = now_s();
	switch (cfg.engine) {
	case E_COFFER:
		cf_close();
		break;
	case E_SQLITE:
		break; /* every connection is closed by its workload */
	case E_LMDB:
		lm_close();
		break;
	}
	double close_s = now_s() - c0 + sq_close_s;

	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double ops_s = t > 0 ? (double)cfg.n / t : 0;
	printf("engine=%s workload=%s ops=%" PRIu64 " seconds=%.4f ops_per_s=%.1f mb_per_s=%.3f "
	       "peak_rss_kb=%ld threads=%u value_size=%zu close_s=%.4f\n",
	       engine_names[cfg.engine], cfg.workload_name, cfg.n, t, ops_s,
	       ops_s * (double)(KLEN + cfg.vsize) / 1e6, ru.ru_maxrss, cfg.threads, cfg.vsize,
	       close_s);
	return 0;
}
