/*
 * fault_crash.c - crash tests through the crash-simulating file layer
 * (crashfs.h): power loss at every sync point and at random writes, then
 * recovery and an exact check of the store against a model.
 *
 * The workload runs in a forked child with crashfs installed: it creates a
 * store (4 KiB pages, 1 MiB log files so that the log rolls, a 256 KiB
 * cache so that pages are evicted and read back from the file), runs NTXN
 * transactions that put and delete keys of tree "t" (some values of 10-12
 * KiB, on overflow pages), sometimes create, fill and drop tree "x", and
 * always set m/last = the transaction's number; it checkpoints every
 * CKPT_EVERY commits and closes the store. Before each commit it records
 * "txn i began" and after the commit returns "txn i committed" in a
 * MAP_SHARED page. Every transaction is a pure function of its number and
 * the state before it, so the parent rebuilds the expected state of "all
 * transactions up to L" exactly.
 *
 * After the child crashed (or finished), the parent opens the store
 * (recovery) and reads L = m/last: L must be the last committed number C,
 * or C + 1 when that commit was in flight (began), never anything else; the
 * whole store must then equal the model after L (every key and value of
 * every tree, no other tree), which proves both durability of acknowledged
 * commits and atomicity of the one in flight. Then it commits one more
 * transaction (the recovered log must take appends), closes, reopens
 * (recovery again), checks everything again and runs a structure check:
 * every tree with cf_bt_check() (the check behind 'coffer check'; the
 * public engine API has no check call yet), the free list, and that every
 * page of the file is owned exactly once (no page leaked or shared).
 *
 * Crash points: a dry run counts the sync calls S and writes W; then the
 * child crashes at every sync point 1..S (or, beyond the budget, at a
 * deterministic stride), and at random writes. The number of runs is
 * COFFER_FAULT_RUNS (default 240, 60 under AddressSanitizer), split 3/4 to
 * sync points, 1/6 to random writes and the rest to crashes during recovery
 * (below); COFFER_FAULT_SEED changes the seed (printed). A failure
 * names the crash point and the seed, and keeps the store (its path is in
 * the message).
 *
 * test_crash_during_recovery crashes the workload, then crashes the
 * recovery of that store at its own sync points, and checks as above.
 * test_crash_while_creating: after a crash before coffer.db exists, a new
 * coffer_env_open(COFFER_ENV_CREATE) must create the store (the other tests
 * count that case as "cannot be created over" and go on, unless
 * COFFER_FAULT_STRICT is set).
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <coffer/coffer.h>

#include "crashfs.h"
#include "engine/btree.h"
#include "engine/env.h"

/* Workload size; -DNTXN=200 -DCKPT_EVERY=7 makes a longer exploration. */
#ifndef NTXN
#define NTXN 60
#endif
#ifndef CKPT_EVERY
#define CKPT_EVERY 3
#endif
#define NKEYS 48
#define NXKEYS 16
#define MAXOPS 8
#define CRASH_EXIT 77
#define FAIL_EXIT 3

#if defined(__SANITIZE_ADDRESS__)
#define DEFAULT_RUNS 60
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DEFAULT_RUNS 60
#endif
#endif
#ifndef DEFAULT_RUNS
#define DEFAULT_RUNS 240
#endif

static char dir[256];
static int keep_dir;
static uint64_t base_seed;

/* ---- what the child tells the parent ---- */

struct shared {
	volatile int began;     /* last transaction whose commit was called */
	volatile int committed; /* last transaction whose commit returned OK */
	char msg[1200];         /* why the child failed (FAIL_EXIT) */
	struct crashfs_stats st;
};
static struct shared *sh;

/* ---- the workload model ---- */

struct val {
	int present;
	uint32_t txn, op, len;
};

struct model {
	struct val t[NKEYS];
	struct val x[NXKEYS];
	int x_exists;
	uint32_t last;
};

enum { OP_PUT_T, OP_DEL_T, OP_PUT_X, OP_DROP_X };

struct op {
	int kind;
	unsigned key;
	uint32_t len;
};

static uint64_t mix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The operations of transaction I on state M. */
static size_t txn_plan(uint32_t i, const struct model *m, struct op *ops)
{
	uint64_t r = (uint64_t)i * 1000003u;
	size_t n = 0;
	int present[NKEYS];
	for (unsigned k = 0; k < NKEYS; k++)
		present[k] = m->t[k].present;
	unsigned nput = 1 + (unsigned)(mix(&r) % 4);
	for (unsigned j = 0; j < nput; j++) {
		unsigned k = (unsigned)(mix(&r) % NKEYS), c = (unsigned)(mix(&r) % 10);
		if (c < 2 && present[k]) {
			ops[n++] = (struct op){OP_DEL_T, k, 0};
			present[k] = 0;
		} else {
			uint32_t len = c < 4 ? 10240 + (uint32_t)(mix(&r) % 2048) : 16 + (uint32_t)(mix(&r) % 300);
			ops[n++] = (struct op){OP_PUT_T, k, len};
			present[k] = 1;
		}
	}
	if (i % 10 == 5) {
		if (m->x_exists) {
			ops[n++] = (struct op){OP_DROP_X, 0, 0};
		} else {
			for (int j = 0; j < 3; j++)
				ops[n++] = (struct op){OP_PUT_X, (unsigned)(mix(&r) % NXKEYS),
						       16 + (uint32_t)(mix(&r) % 3000)};
		}
	} else if (m->x_exists && i % 2 == 0) {
		ops[n++] = (struct op){OP_PUT_X, (unsigned)(mix(&r) % NXKEYS), 16 + (uint32_t)(mix(&r) % 200)};
	}
	return n;
}

static void model_apply(struct model *m, uint32_t i, const struct op *ops, size_t n)
{
	for (size_t j = 0; j < n; j++) {
		const struct op *o = &ops[j];
		struct val v = {1, i, (uint32_t)j, o->len};
		switch (o->kind) {
		case OP_PUT_T:
			m->t[o->key] = v;
			break;
		case OP_DEL_T:
			m->t[o->key].present = 0;
			break;
		case OP_PUT_X:
			m->x[o->key] = v;
			m->x_exists = 1;
			break;
		case OP_DROP_X:
			memset(m->x, 0, sizeof m->x);
			m->x_exists = 0;
			break;
		}
	}
	m->last = i;
}

static void model_build(struct model *m, uint32_t upto)
{
	struct op ops[MAXOPS];
	memset(m, 0, sizeof *m);
	for (uint32_t i = 1; i <= upto; i++)
		model_apply(m, i, ops, txn_plan(i, m, ops));
}

static void key_name(char *k, char tree, unsigned key)
{
	snprintf(k, 8, "%c%03u", tree, key);
}

/* The bytes of a value: who wrote it, then a stream that depends on it. */
static void value_fill(uint8_t *b, char tree, unsigned key, const struct val *v)
{
	uint64_t s = ((uint64_t)v->txn << 32) ^ ((uint64_t)v->op << 16) ^ (uint64_t)key ^
		     ((uint64_t)(unsigned char)tree << 56);
	uint8_t head[12];
	memcpy(head, &v->txn, 4);
	memcpy(head + 4, &v->op, 4);
	uint32_t kt = key | (uint32_t)(unsigned char)tree << 16;
	memcpy(head + 8, &kt, 4);
	for (uint32_t i = 0; i < v->len; i += 8) {
		uint64_t w = mix(&s);
		memcpy(b + i, &w, v->len - i < 8 ? v->len - i : 8);
	}
	memcpy(b, head, v->len < 12 ? v->len : 12);
}

/* ---- the child ---- */

static void options(coffer_env_options *o, unsigned flags)
{
	coffer_env_options_init(o);
	o->flags = flags;
	o->page_size = 4096;
	o->log_file_size = 1u << 20;
	o->cache_bytes = 256u << 10;
	/* Checkpoints at known points only (every CKPT_EVERY commits). */
	o->checkpoint_seconds = 3600;
	o->checkpoint_log_bytes = 1ull << 40;
}

static void child_fail(const char *what, int rc) __attribute__((noreturn));
static void child_fail(const char *what, int rc)
{
	snprintf(sh->msg, sizeof sh->msg, "%s: %s (%s)", what, coffer_error_last()->message,
		 coffer_code_name(rc) ? coffer_code_name(rc) : "?");
	_exit(FAIL_EXIT);
}

#define CHILD_OK(x, what)                                                                     \
	do {                                                                                  \
		int rc_ = (x);                                                                \
		if (rc_)                                                                      \
			child_fail(what, rc_);                                                \
	} while (0)

static void child_workload(void)
{
	coffer_env_options o;
	options(&o, COFFER_ENV_CREATE);
	coffer_env *env;
	CHILD_OK(coffer_env_open(&env, dir, &o), "open");
	struct model m;
	memset(&m, 0, sizeof m);
	uint8_t *buf = malloc(16384);
	if (buf == NULL)
		child_fail("malloc", COFFER_E_NOMEM);
	for (uint32_t i = 1; i <= NTXN; i++) {
		struct op ops[MAXOPS];
		size_t n = txn_plan(i, &m, ops);
		coffer_txn *t;
		CHILD_OK(coffer_txn_begin(env, 0, &t), "begin");
		for (size_t j = 0; j < n; j++) {
			char k[8];
			struct val v = {1, i, (uint32_t)j, ops[j].len};
			switch (ops[j].kind) {
			case OP_PUT_T:
			case OP_PUT_X: {
				char tree = ops[j].kind == OP_PUT_T ? 't' : 'x';
				key_name(k, tree, ops[j].key);
				value_fill(buf, tree, ops[j].key, &v);
				CHILD_OK(coffer_put(t, tree == 't' ? "t" : "x", k, 4, buf, v.len, 0), "put");
				break;
			}
			case OP_DEL_T:
				key_name(k, 't', ops[j].key);
				CHILD_OK(coffer_del(t, "t", k, 4), "del");
				break;
			case OP_DROP_X:
				CHILD_OK(coffer_tree_drop(t, "x"), "drop");
				break;
			}
		}
		CHILD_OK(coffer_put(t, "m", "last", 4, &i, 4, 0), "put last");
		__atomic_store_n(&sh->began, (int)i, __ATOMIC_SEQ_CST);
		CHILD_OK(coffer_txn_commit(t), "commit");
		__atomic_store_n(&sh->committed, (int)i, __ATOMIC_SEQ_CST);
		model_apply(&m, i, ops, n);
		if (i % CKPT_EVERY == 0)
			CHILD_OK(coffer_env_checkpoint(env), "checkpoint");
	}
	free(buf);
	CHILD_OK(coffer_env_close(env), "close");
}

/* ---- the parent's checks ---- */

static void rm_rf(const char *d)
{
	char cmd[512];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
	if (system(cmd) != 0)
		fail_msg("could not remove %s", d);
}

static char where[512]; /* the crash point being checked, for messages */

static void fail_here(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail_here(const char *fmt, ...)
{
	char msg[1500];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	keep_dir = 1;
	fail_msg("%s; %s; store kept in %s", msg, where, dir);
	abort(); /* not reached */
}

#define CHECK_OK(x)                                                                           \
	do {                                                                                  \
		int rc_ = (x);                                                                \
		if (rc_)                                                                      \
			fail_here("%s: %s (%s)", #x, coffer_error_last()->message,           \
				  coffer_code_name(rc_));                                     \
	} while (0)

/* Tree NAME must hold exactly the present entries of VALS. */
static void compare_tree(coffer_txn *t, const char *name, char tree, const struct val *vals,
			 unsigned nkeys, int exists, uint8_t *buf)
{
	coffer_cursor *c;
	int rc = coffer_cursor_open(t, name, &c);
	if (!exists) {
		if (rc != COFFER_E_TREE_NOT_FOUND)
			fail_here("tree \"%s\" should not exist (rc %d)", name, rc);
		coffer_error_clear();
		return;
	}
	if (rc)
		fail_here("tree \"%s\" should exist: %s (%s)", name, coffer_error_last()->message,
			  coffer_code_name(rc));
	rc = coffer_cursor_first(c);
	for (unsigned k = 0; k < nkeys; k++) {
		if (!vals[k].present)
			continue;
		char want[8];
		key_name(want, tree, k);
		if (rc == COFFER_E_NOT_FOUND)
			fail_here("tree \"%s\" ends before key %s (written by txn %u)", name, want,
				  vals[k].txn);
		CHECK_OK(rc);
		const void *key, *val;
		size_t klen, vlen;
		CHECK_OK(coffer_cursor_get(c, &key, &klen, &val, &vlen));
		if (klen != 4 || memcmp(key, want, 4) != 0)
			fail_here("tree \"%s\": found key \"%.*s\" where %s (txn %u) was expected", name,
				  (int)klen, (const char *)key, want, vals[k].txn);
		value_fill(buf, tree, k, &vals[k]);
		if (vlen != vals[k].len || memcmp(val, buf, vlen) != 0) {
			uint32_t wtxn = 0, wop = 0;
			if (vlen >= 8) {
				memcpy(&wtxn, val, 4);
				memcpy(&wop, (const uint8_t *)val + 4, 4);
			}
			fail_here("tree \"%s\" key %s: value of %zu bytes (txn %u op %u), expected %u "
				  "bytes of txn %u op %u",
				  name, want, vlen, wtxn, wop, vals[k].len, vals[k].txn, vals[k].op);
		}
		rc = coffer_cursor_next(c);
	}
	if (rc != COFFER_E_NOT_FOUND) {
		const void *key;
		size_t klen = 0;
		if (rc == COFFER_OK && coffer_cursor_get(c, &key, &klen, NULL, NULL) == COFFER_OK)
			fail_here("tree \"%s\" holds key \"%.*s\", which no transaction up to %s left",
				  name, (int)klen, (const char *)key, "the recovered one");
		CHECK_OK(rc);
	}
	coffer_error_clear();
	coffer_cursor_close(c);
}

/* Read m/last (0 if tree m does not exist) and compare the whole store with
 * the model after it. POST: the extra transaction of the parent is there. */
static uint32_t verify_store(coffer_env *env, int post)
{
	coffer_txn *t;
	CHECK_OK(coffer_txn_begin(env, COFFER_TXN_READ_ONLY, &t));
	void *v;
	size_t vl;
	uint32_t last = 0;
	int rc = coffer_get(t, "m", "last", 4, &v, &vl);
	if (rc == COFFER_OK) {
		if (vl != 4)
			fail_here("m/last has %zu bytes", vl);
		memcpy(&last, v, 4);
		free(v);
	} else if (rc != COFFER_E_TREE_NOT_FOUND && rc != COFFER_E_NOT_FOUND) {
		fail_here("reading m/last: %s (%s)", coffer_error_last()->message, coffer_code_name(rc));
	}
	coffer_error_clear();
	if (last > NTXN)
		fail_here("m/last is %u, beyond the workload", last);
	rc = coffer_get(t, "m", "post", 4, &v, &vl);
	if (rc == COFFER_OK)
		free(v);
	if (post != (rc == COFFER_OK))
		fail_here("m/post is %s after the parent's %s commit", rc == COFFER_OK ? "present" : "absent",
			  post ? "acknowledged" : "missing");
	coffer_error_clear();
	struct model m;
	model_build(&m, last);
	uint8_t *buf = malloc(16384);
	assert_non_null(buf);
	compare_tree(t, "t", 't', m.t, NKEYS, last >= 1, buf);
	compare_tree(t, "x", 'x', m.x, NXKEYS, m.x_exists, buf);
	free(buf);
	coffer_txn_abort(t);
	return last;
}

struct chk_state {
	unsigned problems;
	char first[600];
};

static void on_problem(void *arg, cf_pgno pgno, const char *what)
{
	struct chk_state *k = arg;
	if (k->problems++ == 0)
		snprintf(k->first, sizeof k->first, "page %u: %s", pgno, what);
}

static void mark_page(struct chk_state *k, uint8_t *owned, cf_pgno npages, cf_pgno p,
		      const char *what)
{
	if (p < CF_PGNO_FIRST_FREE || p >= npages) {
		on_problem(k, p, what);
		return;
	}
	if (owned[p / 8] & (1u << (p % 8)))
		on_problem(k, p, "page owned twice (free list)");
	owned[p / 8] |= (uint8_t)(1u << (p % 8));
}

/* Structure check: trees (cf_bt_check), catalog entries, free list, and
 * every page owned exactly once. Returns the number of trees. */
static unsigned check_store(coffer_env *env)
{
	coffer_txn *t;
	CHECK_OK(coffer_txn_begin(env, COFFER_TXN_READ_ONLY, &t));
	cf_pageio *io = cf_txn_io(t);
	const uint8_t *mp;
	void *pin;
	CHECK_OK(io->ops->read(io, CF_PGNO_META, &mp, &pin));
	cf_pgno npages = cf_get32(mp + CF_META_NPAGES), head = cf_get32(mp + CF_META_FREE_HEAD);
	cf_pgno cat = cf_get32(mp + CF_META_CATALOG);
	uint64_t nfree = cf_get64(mp + CF_META_NFREE);
	io->ops->release(io, pin);
	uint8_t *owned = calloc(npages / 8 + 1, 1);
	assert_non_null(owned);
	struct chk_state k = {0};
	unsigned trees = 0;
	if (cat) {
		int rc = cf_bt_check(io, cat, owned, npages, on_problem, &k, NULL);
		if (rc && rc != COFFER_E_PAGE_CORRUPT)
			CHECK_OK(rc);
		cf_bt_cursor *c;
		CHECK_OK(cf_bt_cursor_open(io, cat, &c));
		for (rc = cf_bt_cursor_first(c); rc == COFFER_OK; rc = cf_bt_cursor_next(c)) {
			const void *key, *val;
			size_t klen, vlen;
			CHECK_OK(cf_bt_cursor_key(c, &key, &klen));
			CHECK_OK(cf_bt_cursor_value(c, &val, &vlen));
			if (klen != 1 || memchr("tmx", *(const char *)key, 3) == NULL || vlen != 4) {
				on_problem(&k, cat, "unexpected catalog entry");
				continue;
			}
			trees++;
			int r2 = cf_bt_check(io, cf_get32(val), owned, npages, on_problem, &k, NULL);
			if (r2 && r2 != COFFER_E_PAGE_CORRUPT)
				CHECK_OK(r2);
		}
		if (rc != COFFER_E_NOT_FOUND)
			CHECK_OK(rc);
		coffer_error_clear();
		cf_bt_cursor_close(c);
	}
	/* The free list: trunk pages and their entries. */
	uint64_t counted = 0;
	for (cf_pgno p = head, steps = 0; p != 0 && steps <= npages; steps++) {
		mark_page(&k, owned, npages, p, "free-list trunk outside the file");
		if (p < CF_PGNO_FIRST_FREE || p >= npages)
			break;
		const uint8_t *pg;
		CHECK_OK(io->ops->read(io, p, &pg, &pin));
		uint32_t cnt = cf_get32(pg + CF_TRUNK_COUNT);
		cf_pgno next = cf_get32(pg + CF_TRUNK_NEXT);
		if (cf_page_type(pg) != CF_PT_FREELIST || cnt > (env->page_size - CF_TRUNK_ENTRIES) / 4) {
			on_problem(&k, p, "bad free-list trunk");
			io->ops->release(io, pin);
			break;
		}
		for (uint32_t e = 0; e < cnt; e++)
			mark_page(&k, owned, npages, cf_get32(pg + CF_TRUNK_ENTRIES + 4 * e),
				  "free-list entry outside the file");
		counted += cnt + 1;
		io->ops->release(io, pin);
		p = next;
	}
	if (counted != nfree) {
		char w[100];
		snprintf(w, sizeof w, "meta counts %" PRIu64 " free pages, the free list holds %" PRIu64,
			 nfree, counted);
		on_problem(&k, CF_PGNO_META, w);
	}
	for (cf_pgno p = CF_PGNO_FIRST_FREE; p < npages; p++)
		if (!(owned[p / 8] & (1u << (p % 8))))
			on_problem(&k, p, "page owned by no tree and not free (leaked)");
	free(owned);
	coffer_txn_abort(t);
	if (k.problems)
		fail_here("structure check: %u problem(s), first: %s", k.problems, k.first);
	return trees;
}

/* ---- one crash run ---- */

struct totals {
	unsigned runs, crashed, completed, before_store, create_refused, in_flight_kept, in_flight_lost;
	uint64_t pending, kept, dropped, torn, dirops_kept, dirops_undone;
	double seconds;
};

static int open_store(coffer_env **env, unsigned flags)
{
	coffer_env_options o;
	options(&o, flags);
	return coffer_env_open(env, dir, &o);
}

/* Only open the store (recovery) and close it: the child of the tests that
 * crash during recovery. */
static void child_recover(void)
{
	coffer_env_options o;
	options(&o, 0);
	coffer_env *env;
	CHILD_OK(coffer_env_open(&env, dir, &o), "open (recovery)");
	CHILD_OK(coffer_env_close(env), "close");
}

/* Fork a child with crashfs crashing at CRASH_SYNC or CRASH_WRITE (both 0:
 * a dry run) that runs the workload on a new store or, with RECOVER, only
 * opens and closes the store in DIR; its counters are left in sh->st
 * (sh->began and sh->committed are kept for RECOVER). */
static void run_child(uint64_t crash_sync, uint64_t crash_write, uint64_t seed, int recover)
{
	if (recover) {
		memset(&sh->st, 0, sizeof sh->st);
		sh->msg[0] = '\0';
	} else {
		rm_rf(dir);
		memset(sh, 0, sizeof *sh);
	}
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(120); /* a hung child ends (SIGALRM) and the run fails */
		static const char *const ignore[] = {"cofferd.lock", NULL};
		struct crashfs_config c = {
			.root = dir,
			.ignore = ignore,
			.crash_sync = crash_sync,
			.crash_write = crash_write,
			.seed = seed,
			.exit_code = CRASH_EXIT,
			.stats = &sh->st,
		};
		if (crashfs_install(&c) != 0) {
			snprintf(sh->msg, sizeof sh->msg, "crashfs_install failed");
			_exit(FAIL_EXIT);
		}
		if (recover)
			child_recover();
		else
			child_workload();
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (WIFEXITED(st) && WEXITSTATUS(st) == FAIL_EXIT)
		fail_here("the %s failed before the crash point: %s", recover ? "recovery" : "workload",
			  sh->msg);
	if (!WIFEXITED(st) || (WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != CRASH_EXIT))
		fail_here("the child ended with status 0x%x", st);
}

static void add_stats(struct totals *tot, const struct crashfs_stats *s)
{
	tot->runs++;
	if (s->crashed)
		tot->crashed++;
	else
		tot->completed++;
	tot->pending += s->pending;
	tot->kept += s->kept;
	tot->dropped += s->dropped;
	tot->torn += s->torn;
	tot->dirops_kept += s->dirops_kept;
	tot->dirops_undone += s->dirops_undone;
}

/* Append the child's crash to `where`. */
static void describe_crash(const struct crashfs_stats *s)
{
	size_t wl = strlen(where);
	snprintf(where + wl, sizeof where - wl, " (%s of %s; %d committed, %d began; %" PRIu64
		 " unsynced changes, writes %" PRIu64 " kept, %" PRIu64 " dropped, %" PRIu64
		 " torn; %" PRIu64 "/%" PRIu64 " directory operations undone)",
		 s->crashed ? s->crash_op : "no crash", s->crashed ? s->crash_path : "-",
		 sh->committed, sh->began, s->pending, s->kept, s->dropped, s->torn,
		 s->dirops_undone, s->dirops_undone + s->dirops_kept);
}

/* The store in DIR has just crashed: recover it and check everything
 * against sh->committed and sh->began. Returns 0 if there is no store to
 * check (the crash came before it was created). */
static int check_recovered(struct totals *tot, int count_in_flight)
{
	int began = sh->began, committed = sh->committed;
	coffer_env *env;
	int rc = open_store(&env, 0);
	if (rc == COFFER_E_FILE_NOT_FOUND && began == 0) {
		/* The crash came before the store was created (no coffer.db):
		 * creating it now must work. */
		coffer_error_clear();
		tot->before_store++;
		rc = open_store(&env, COFFER_ENV_CREATE);
		if (rc == COFFER_E_EXISTS && getenv("COFFER_FAULT_STRICT") == NULL) {
			/* Known: test_crash_while_creating reports it. */
			coffer_error_clear();
			tot->create_refused++;
			return 0;
		}
		if (rc)
			fail_here("creating the store after a crash during its creation failed: %s (%s)",
				  coffer_error_last()->message, coffer_code_name(rc));
		CHECK_OK(coffer_env_close(env));
		return 0;
	}
	if (rc)
		fail_here("recovery failed: %s (%s)", coffer_error_last()->message, coffer_code_name(rc));
	uint32_t last = verify_store(env, 0);
	if ((int)last < committed)
		fail_here("acknowledged commit %d lost: the store holds transactions up to %u", committed,
			  last);
	if ((int)last > committed && !((int)last == committed + 1 && began == committed + 1))
		fail_here("the store holds transaction %u, which had not begun to commit (last "
			  "committed %d, began %d)",
			  last, committed, began);
	if (count_in_flight && began == committed + 1)
		(int)last == began ? tot->in_flight_kept++ : tot->in_flight_lost++;

	/* The recovered store takes a commit, and recovery again finds it all. */
	coffer_txn *t;
	CHECK_OK(coffer_txn_begin(env, 0, &t));
	CHECK_OK(coffer_put(t, "m", "post", 4, "yes", 3, 0));
	CHECK_OK(coffer_txn_commit(t));
	CHECK_OK(coffer_env_close(env));
	rc = open_store(&env, 0);
	if (rc)
		fail_here("second recovery failed: %s (%s)", coffer_error_last()->message,
			  coffer_code_name(rc));
	uint32_t again = verify_store(env, 1);
	if (again != last)
		fail_here("second recovery found transactions up to %u, the first up to %u", again, last);
	check_store(env);
	CHECK_OK(coffer_env_close(env));
	return 1;
}

static void crash_and_check(uint64_t crash_sync, uint64_t crash_write, uint64_t seed,
			    struct totals *tot)
{
	snprintf(where, sizeof where, "crash at %s %" PRIu64 ", seed 0x%" PRIx64,
		 crash_sync ? "sync" : "write", crash_sync ? crash_sync : crash_write, seed);
	run_child(crash_sync, crash_write, seed, 0);
	describe_crash(&sh->st);
	add_stats(tot, &sh->st);
	if (!sh->st.crashed && sh->committed != NTXN)
		fail_here("the workload ended without a crash after %d commits", sh->committed);
	check_recovered(tot, 1);
}

/* ---- the tests ---- */

static unsigned runs_budget(void)
{
	const char *e = getenv("COFFER_FAULT_RUNS");
	long v = e ? strtol(e, NULL, 10) : 0;
	return v > 0 && v < 100000 ? (unsigned)v : DEFAULT_RUNS;
}

static unsigned budget_sync(void)
{
	unsigned r = runs_budget() * 3 / 4;
	return r ? r : 1;
}

static unsigned budget_writes(void)
{
	unsigned r = runs_budget() / 6;
	return r ? r : 1;
}

static unsigned budget_recovery(void)
{
	unsigned used = budget_sync() + budget_writes(), all = runs_budget();
	return all > used + 2 ? all - used : 2;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Dry run: count the sync points and the writes of the workload. */
static void dry_run(uint64_t *syncs, uint64_t *writes)
{
	snprintf(where, sizeof where, "dry run");
	run_child(0, 0, base_seed, 0);
	if (sh->committed != NTXN)
		fail_here("the dry run committed %d of %d transactions", sh->committed, NTXN);
	*syncs = sh->st.syncs;
	*writes = sh->st.writes;
}

static void report(const char *what, const struct totals *t)
{
	printf("# %s: %u crash runs (%u crashed, %u ran to the end), %u before the store existed "
	       "(%u of them left a directory that cannot be created over); commit in flight kept "
	       "%u, lost %u\n",
	       what, t->runs, t->crashed, t->completed, t->before_store, t->create_refused,
	       t->in_flight_kept,
	       t->in_flight_lost);
	printf("# %s: unsynced changes at the crashes: %" PRIu64 "; writes %" PRIu64 " kept, %" PRIu64
	       " dropped, %" PRIu64 " torn; directory operations %" PRIu64 " kept, %" PRIu64
	       " undone; %.1f s\n",
	       what, t->pending, t->kept, t->dropped, t->torn, t->dirops_kept, t->dirops_undone,
	       t->seconds);
	fflush(stdout);
}

static void test_crash_at_sync_points(void **state)
{
	(void)state;
	double t0 = now_s();
	uint64_t s1, w1, s2, w2;
	dry_run(&s1, &w1);
	dry_run(&s2, &w2);
	printf("# workload: %d transactions, checkpoint every %d; %" PRIu64 " sync points, %" PRIu64
	       " writes (second dry run: %" PRIu64 ", %" PRIu64 "); seed 0x%" PRIx64 "\n",
	       NTXN, CKPT_EVERY, s1, w1, s2, w2, base_seed);
	unsigned budget = budget_sync();
	struct totals tot = {0};
	/* Every sync point while the budget lasts, else the first half of the
	 * budget one by one and the rest at a fixed stride. */
	uint64_t dense = s1 <= budget ? s1 : budget / 2;
	uint64_t stride = s1 <= budget ? 1 : (s1 - dense + (budget - dense) - 1) / (budget - dense);
	for (uint64_t p = 1; p <= s1 && tot.runs < budget; p = p < dense ? p + 1 : p + stride)
		crash_and_check(p, 0, base_seed ^ (p * 0x100000001b3ull), &tot);
	tot.seconds = now_s() - t0;
	printf("# sync points tried: %u of %" PRIu64 "%s\n", tot.runs, s1,
	       dense < s1 ? " (dense, then strided)" : " (all)");
	report("sync points", &tot);
}

static void test_crash_at_random_writes(void **state)
{
	(void)state;
	double t0 = now_s();
	uint64_t s, w;
	dry_run(&s, &w);
	unsigned budget = budget_writes();
	struct totals tot = {0};
	uint64_t r = base_seed ^ 0x5752495445ull; /* "WRITE" */
	for (unsigned i = 0; i < budget; i++) {
		uint64_t n = 1 + mix(&r) % w;
		crash_and_check(0, n, mix(&r), &tot);
	}
	tot.seconds = now_s() - t0;
	printf("# random writes tried: %u of %" PRIu64 "\n", tot.runs, w);
	report("random writes", &tot);
}

static int store_exists(void)
{
	char p[300];
	struct stat st;
	snprintf(p, sizeof p, "%s/coffer.db", dir);
	return stat(p, &st) == 0;
}

static void copy_dir(const char *from, const char *to)
{
	char cmd[700];
	snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", from, to);
	if (system(cmd) != 0)
		fail_msg("%s failed", cmd);
}

/*
 * A crash during recovery: crash the workload at sync points spread over
 * it, keep a copy of the crashed store, count the sync points of its
 * recovery (open + close) in a dry run, then crash the recovery itself at
 * some of them, each time from the copy, and check as after any crash.
 */
static void test_crash_during_recovery(void **state)
{
	(void)state;
	double t0 = now_s();
	uint64_t s, w;
	dry_run(&s, &w);
	const unsigned per = 4, budget = budget_recovery();
	const unsigned nfirst = (budget + per - 1) / per;
	char snap[300];
	snprintf(snap, sizeof snap, "%s.snap", dir);
	struct totals tot = {0};
	uint64_t rec_points = 0;
	for (unsigned k = 0; k < nfirst && tot.runs < budget; k++) {
		uint64_t p = s * (2 * k + 1) / (2 * nfirst) + 1, seed = base_seed ^ (p << 20);
		snprintf(where, sizeof where, "crash at sync %" PRIu64 ", seed 0x%" PRIx64, p, seed);
		run_child(p, 0, seed, 0);
		if (!sh->st.crashed || !store_exists())
			continue;
		int began = sh->began, committed = sh->committed;
		rm_rf(snap);
		copy_dir(dir, snap);
		run_child(0, 0, seed, 1); /* dry recovery */
		uint64_t sr = sh->st.syncs;
		rec_points += sr;
		for (unsigned m = 0; m < per && tot.runs < budget; m++) {
			uint64_t j = 1 + sr * m / per + k % 2, seed2 = seed ^ (j * 0x9e3779b97f4a7c15ull);
			if (j > sr)
				j = sr;
			rm_rf(dir);
			copy_dir(snap, dir);
			sh->began = began;
			sh->committed = committed;
			snprintf(where, sizeof where,
				 "crash at sync %" PRIu64 " (seed 0x%" PRIx64 "), then during recovery at "
				 "sync %" PRIu64 " of %" PRIu64 " (seed 0x%" PRIx64 ")",
				 p, seed, j, sr, seed2);
			run_child(j, 0, seed2, 1);
			describe_crash(&sh->st);
			add_stats(&tot, &sh->st);
			check_recovered(&tot, 0);
		}
	}
	rm_rf(snap);
	tot.seconds = now_s() - t0;
	printf("# crashes during recovery: %u, after %u crashes of the workload (recoveries had %" PRIu64
	       " sync points in all)\n",
	       tot.runs, nfirst, rec_points);
	report("during recovery", &tot);
}

/*
 * Minimal: a crash while a new store is being created (before coffer.db
 * exists) must not leave a directory in which the store can then be
 * neither opened nor created.
 */
static void test_crash_while_creating(void **state)
{
	(void)state;
	unsigned tried = 0, refused = 0;
	char first[1200] = "";
	for (uint64_t p = 1; p <= 16; p++) {
		run_child(p, 0, base_seed ^ p, 0);
		if (!sh->st.crashed || store_exists())
			continue;
		tried++;
		coffer_env *env;
		int rc = open_store(&env, COFFER_ENV_CREATE);
		if (rc == COFFER_OK) {
			CHECK_OK(coffer_env_close(env));
			continue;
		}
		if (refused++ == 0)
			snprintf(first, sizeof first, "crash at sync %" PRIu64 " (%s of %s): %s (%s)", p,
				 sh->st.crash_op, sh->st.crash_path, coffer_error_last()->message,
				 coffer_code_name(rc));
		coffer_error_clear();
	}
	printf("# %u crash points before coffer.db existed; creating the store afterwards failed "
	       "after %u of them\n",
	       tried, refused);
	if (refused) {
		keep_dir = 1;
		fail_msg("after a crash during the creation of a store, coffer_env_open(CREATE) fails; "
			 "first: %s; the store of the last case is in %s",
			 first, dir);
	}
}

static int setup(void **state)
{
	(void)state;
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(dir, sizeof dir, "%s/coffer-fault-crash-%d", tmp, (int)getpid());
	keep_dir = 0;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (!keep_dir && getenv("COFFER_TEST_KEEP") == NULL)
		rm_rf(dir);
	return 0;
}

int main(void)
{
	sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	const char *e = getenv("COFFER_FAULT_SEED");
	base_seed = e ? strtoull(e, NULL, 0) : 0xC0FFEEu;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_crash_at_sync_points, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_at_random_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_during_recovery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_while_creating, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
