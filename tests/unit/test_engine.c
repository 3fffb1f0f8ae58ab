/* test_engine.c - libcoffer end to end: transactions, snapshots, reopen,
 * crash recovery (fork + SIGKILL), torn-page repair, group commit. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <coffer/coffer.h>

#include "engine/env.h"

static char dir[256];

static void rm_rf(const char *d)
{
	char cmd[512];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
	if (system(cmd) != 0)
		fail_msg("could not remove %s", d);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof dir, "%s/coffer-test-engine-%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
		 (int)getpid());
	rm_rf(dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (getenv("COFFER_TEST_KEEP") == NULL) /* keep the store to look at a failure */
		rm_rf(dir);
	return 0;
}

static coffer_env *open_env(unsigned page_size, uint32_t log_size)
{
	coffer_env_options o;
	coffer_env_options_init(&o);
	o.flags = COFFER_ENV_CREATE;
	o.page_size = page_size;
	o.log_file_size = log_size;
	o.cache_bytes = 1u << 20; /* small: exercise eviction */
	coffer_env *env = NULL;
	int rc = coffer_env_open(&env, dir, &o);
	if (rc)
		fail_msg("open: %s (%s)", coffer_error_last()->message, coffer_code_name(rc));
	return env;
}

#define OK(x)                                                                                 \
	do {                                                                                  \
		int rc_ = (x);                                                                \
		if (rc_)                                                                      \
			fail_msg("%s: %s (%s)", #x, coffer_error_last()->message,            \
				 coffer_code_name(rc_));                                      \
	} while (0)

static void put_str(coffer_txn *t, const char *tree, const char *k, const char *v)
{
	OK(coffer_put(t, tree, k, strlen(k), v, strlen(v), 0));
}

static void expect(coffer_txn *t, const char *tree, const char *k, const char *v)
{
	void *val = NULL;
	size_t vlen = 0;
	int rc = coffer_get(t, tree, k, strlen(k), &val, &vlen);
	if (v == NULL) {
		assert_true(rc == COFFER_E_NOT_FOUND || rc == COFFER_E_TREE_NOT_FOUND);
		return;
	}
	if (rc)
		fail_msg("get %s: %s (%s)", k, coffer_error_last()->message, coffer_code_name(rc));
	assert_int_equal(vlen, strlen(v));
	assert_memory_equal(val, v, vlen);
	free(val);
}

static void test_put_get_reopen(void **state)
{
	(void)state;
	coffer_env *env = open_env(0, 0);
	coffer_txn *t;
	OK(coffer_txn_begin(env, 0, &t));
	put_str(t, "main", "hello", "world");
	put_str(t, "other", "a", "1");
	OK(coffer_txn_commit(t));
	OK(coffer_txn_begin(env, COFFER_TXN_READ_ONLY, &t));
	expect(t, "main", "hello", "world");
	expect(t, "other", "a", "1");
	expect(t, "main", "nope", NULL);
	expect(t, "missing-tree", "x", NULL);
	coffer_txn_abort(t);
	/* abort discards */
	OK(coffer_txn_begin(env, 0, &t));
	put_str(t, "main", "gone", "x");
	coffer_txn_abort(t);
	OK(coffer_env_close(env));

	env = open_env(0, 0);
	OK(coffer_txn_begin(env, COFFER_TXN_READ_ONLY, &t));
	expect(t, "main", "hello", "world");
	expect(t, "main", "gone", NULL);
	coffer_txn_abort(t);
	/* a second open of the same directory is refused */
	coffer_env *env2 = NULL;
	coffer_env_options o;
	coffer_env_options_init(&o);
	assert_int_equal(coffer_env_open(&env2, dir, &o), COFFER_E_LOCKED);
	OK(coffer_env_close(env));
}

static void test_snapshot_isolation(void **state)
{
	(void)state;
	coffer_env *env = open_env(4096, 0);
	coffer_txn *w, *r;
	OK(coffer_txn_begin(env, 0, &w));
	put_str(w, "t", "k", "v1");
	OK(coffer_txn_commit(w));
	OK(coffer_txn_begin(env, COFFER_TXN_READ_ONLY, &r));
	/* many writes that split pages while the reader is open */
	for (int i = 0; i < 50; i++) {
		OK(coffer_txn_begin(env, 0, &w));
		char k[32], v[64];
		for (int j = 0; j < 40; j++) {
			snprintf(k, sizeof k, "key-%04d-%02d", i, j);
			snprintf(v, sizeof v, "value-%d-%d-padding-padding-padding", i, j);
			put_str(w, "t", k, v);
		}
		put_str(w, "t", "k", "v2");
		OK(coffer_txn_commit(w));
	}
	expect(r, "t", "k", "v1");
	expect(r, "t", "key-0000-00", NULL);
	coffer_txn_abort(r);
	OK(coffer_txn_begin(env, COFFER_TXN_READ_ONLY, &r));
	expect(r, "t", "k", "v2");
	expect(r, "t", "key-0049-39", "value-49-39-padding-padding-padding");
	uint64_t n = 0;
	OK(coffer_tree_count(r, "t", &n));
	assert_int_equal(n, 50 * 40 + 1);
	coffer_txn_abort(r);
	OK(coffer_env_close(env));
}

/* Random operations against a model, with reopen and checkpoints. */
#define NKEYS 2000
static char *model[NKEYS];

static void check_model(coffer_env *env)
{
	coffer_txn *t;
	OK(coffer_txn_begin(env, COFFER_TXN_READ_ONLY, &t));
	for (int i = 0; i < NKEYS; i++) {
		char k[32];
		snprintf(k, sizeof k, "k%05d", i);
		expect(t, "m", k, model[i]);
	}
	/* ordered scan sees exactly the model */
	coffer_cursor *c;
	int rc = coffer_cursor_open(t, "m", &c);
	if (rc == COFFER_OK) {
		int last = -1, seen = 0;
		for (rc = coffer_cursor_first(c); rc == COFFER_OK; rc = coffer_cursor_next(c)) {
			const void *k, *v;
			size_t kl, vl;
			OK(coffer_cursor_get(c, &k, &kl, &v, &vl));
			char kbuf[16];
			assert_int_equal(kl, 6);
			memcpy(kbuf, (const char *)k + 1, 5);
			kbuf[5] = '\0';
			int idx = atoi(kbuf);
			assert_true(idx > last);
			last = idx;
			assert_non_null(model[idx]);
			assert_int_equal(vl, strlen(model[idx]));
			seen++;
		}
		assert_int_equal(rc, COFFER_E_NOT_FOUND);
		int want = 0;
		for (int i = 0; i < NKEYS; i++)
			want += model[i] != NULL;
		assert_int_equal(seen, want);
		coffer_cursor_close(c);
	}
	coffer_txn_abort(t);
}

static void test_random_model(void **state)
{
	(void)state;
	unsigned seed = (unsigned)time(NULL);
	printf("# random model seed %u\n", seed);
	srand(seed);
	memset(model, 0, sizeof model);
	coffer_env *env = open_env(4096, 1u << 20);
	for (int round = 0; round < 30; round++) {
		coffer_txn *t;
		OK(coffer_txn_begin(env, 0, &t));
		char *shadow[NKEYS];
		memcpy(shadow, model, sizeof model);
		char *fresh[256];
		int nfresh = 0;
		int ops = 1 + rand() % 200;
		for (int i = 0; i < ops; i++) {
			int idx = rand() % NKEYS;
			char k[32];
			snprintf(k, sizeof k, "k%05d", idx);
			if (rand() % 4 == 0) {
				int rc = coffer_del(t, "m", k, strlen(k));
				assert_true(rc == COFFER_OK || rc == COFFER_E_NOT_FOUND);
				assert_int_equal(rc == COFFER_OK, shadow[idx] != NULL);
				shadow[idx] = NULL;
			} else {
				size_t len = (size_t)(rand() % 3 == 0 ? rand() % 3000 : rand() % 60);
				char *v = malloc(len + 1);
				for (size_t j = 0; j < len; j++)
					v[j] = (char)('a' + (idx + j) % 26);
				v[len] = '\0';
				OK(coffer_put(t, "m", k, strlen(k), v, len, 0));
				shadow[idx] = v;
				if (nfresh < 256)
					fresh[nfresh++] = v;
				else
					fail_msg("too many values");
			}
		}
		if (rand() % 5 == 0) {
			coffer_txn_abort(t);
			for (int i = 0; i < nfresh; i++)
				free(fresh[i]);
		} else {
			OK(coffer_txn_commit(t));
			/* free values replaced in the model but not fresh */
			for (int i = 0; i < NKEYS; i++)
				if (model[i] != shadow[i]) {
					int is_fresh = 0;
					for (int j = 0; j < nfresh; j++)
						is_fresh |= fresh[j] == model[i];
					if (!is_fresh)
						free(model[i]);
				}
			/* free fresh values superseded within the txn */
			for (int j = 0; j < nfresh; j++) {
				int used = 0;
				for (int i = 0; i < NKEYS && !used; i++)
					used = shadow[i] == fresh[j];
				int was_model = 0;
				for (int i = 0; i < NKEYS && !was_model; i++)
					was_model = model[i] == fresh[j];
				if (!used && !was_model)
					free(fresh[j]);
			}
			memcpy(model, shadow, sizeof model);
		}
		if (round % 7 == 6)
			OK(coffer_env_checkpoint(env));
		if (round % 10 == 9) {
			OK(coffer_env_close(env));
			env = open_env(4096, 1u << 20);
		}
		check_model(env);
	}
	struct coffer_env_info info;
	OK(coffer_env_info(env, &info));
	printf("# pages %llu free %llu commits %llu cache %llu bytes\n",
	       (unsigned long long)info.pages, (unsigned long long)info.free_pages,
	       (unsigned long long)info.commits, (unsigned long long)info.cache_bytes);
	OK(coffer_env_close(env));
	struct coffer_check_result cr;
	OK(coffer_check(dir, NULL, NULL, &cr));
	assert_int_equal(cr.problems, 0);
	assert_true(cr.trees >= 2); /* catalog + m */
	for (int i = 0; i < NKEYS; i++)
		free(model[i]);
}

struct problems {
	int n;
	int64_t first_page;
	char first[512];
	int checksum; /* problems saying a page failed its checksum */
};

static void on_problem(void *arg, int64_t page, const char *what)
{
	struct problems *p = arg;
	if (p->n++ == 0) {
		p->first_page = page;
		snprintf(p->first, sizeof p->first, "%s", what);
	}
	if (strstr(what, "failed its checksum"))
		p->checksum++;
}

/* coffer_check finds a flipped bit and a header copy torn, naming the page. */
static void test_check_finds_damage(void **state)
{
	(void)state;
	coffer_env *env = open_env(4096, 0);
	coffer_txn *t;
	OK(coffer_txn_begin(env, 0, &t));
	for (int i = 0; i < 500; i++) {
		char k[32];
		snprintf(k, sizeof k, "chk%05d", i);
		put_str(t, "c", k, "some value that fills pages a little");
	}
	OK(coffer_txn_commit(t));
	OK(coffer_env_close(env));
	struct coffer_check_result cr;
	struct problems pr = {0};
	OK(coffer_check(dir, on_problem, &pr, &cr));
	assert_int_equal(pr.n, 0);
	assert_int_equal(cr.keys, 500 + 1);

	char path[512];
	snprintf(path, sizeof path, "%s/coffer.db", dir);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	unsigned char b;
	assert_int_equal(pread(fd, &b, 1, 5 * 4096 + 100), 1);
	b ^= 0x10;
	assert_int_equal(pwrite(fd, &b, 1, 5 * 4096 + 100), 1);
	/* tear header copy A */
	assert_int_equal(pwrite(fd, "xxxx", 4, 200), 4);
	close(fd);
	memset(&pr, 0, sizeof pr);
	assert_int_equal(coffer_check(dir, on_problem, &pr, &cr), COFFER_E_PAGE_CORRUPT);
	assert_true(pr.n >= 2);
	assert_int_equal(pr.first_page, 0);
	assert_non_null(strstr(pr.first, "copy A"));
	assert_int_equal(cr.bad_checksums, 1);
	/* page 5 (in the tree) is reported once, not again by the tree walk */
	assert_int_equal(pr.checksum, 1);
	/* the store still opens from header copy B; the damaged page is named on read */
	env = open_env(4096, 0);
	OK(coffer_txn_begin(env, COFFER_TXN_READ_ONLY, &t));
	int rc = COFFER_OK;
	for (int i = 0; i < 500 && rc == COFFER_OK; i++) {
		char k[32];
		void *v;
		size_t vl;
		snprintf(k, sizeof k, "chk%05d", i);
		rc = coffer_get(t, "c", k, strlen(k), &v, &vl);
		if (rc == COFFER_OK)
			free(v);
	}
	assert_int_equal(rc, COFFER_E_PAGE_CHECKSUM);
	assert_int_equal(coffer_error_last()->page, 5);
	coffer_txn_abort(t);
	OK(coffer_env_close(env));
}

/* A damaged page met by readers is reported once per page (until it is
 * rewritten), and at most CF_PAGER_DAMAGE_PER_SEC times a second; reports
 * dropped by the limit are counted in the next one. */
struct damage_seen {
	int n, page5;
	uint64_t suppressed, stored, computed;
};

static void on_damage(void *arg, cf_pgno pgno, enum cf_page_state st, uint64_t stored,
		      uint64_t computed, uint64_t suppressed)
{
	struct damage_seen *d = arg;
	assert_int_equal(st, CF_PAGE_BAD_CHECKSUM);
	assert_int_equal(coffer_error_last()->code, COFFER_E_PAGE_CHECKSUM);
	assert_int_equal(coffer_error_last()->page, pgno);
	d->n++;
	d->page5 += pgno == 5;
	d->suppressed += suppressed;
	d->stored = stored;
	d->computed = computed;
}

static void test_pager_damage_reports(void **state)
{
	(void)state;
	enum { NP = 64 };
	char path[512];
	mkdir(dir, 0700);
	snprintf(path, sizeof path, "%s/pages", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	static uint8_t junk[NP * 4096];
	memset(junk, 0xab, sizeof junk);
	assert_int_equal(pwrite(fd, junk, sizeof junk, 0), (ssize_t)sizeof junk);
	cf_pager *p;
	OK(cf_pager_open(&p, fd, path, 4096, 1u << 20, NULL, NULL));
	struct damage_seen d = {0};
	cf_pager_on_damage(p, on_damage, &d);
	cf_img *img;
	/* one page read many times: one report */
	for (int i = 0; i < 50; i++)
		assert_int_equal(cf_pager_get(p, 5, UINT64_MAX, 1, &img), COFFER_E_PAGE_CHECKSUM);
	assert_int_equal(d.n, 1);
	assert_int_equal(d.stored, 0xababababababababull);
	assert_true(d.computed != d.stored);
	/* many pages at once: bounded by the rate (a second boundary may fall
	 * inside the loop: two seconds' worth at most) */
	for (cf_pgno pg = 10; pg < NP; pg++)
		assert_int_equal(cf_pager_get(p, pg, UINT64_MAX, 1, &img), COFFER_E_PAGE_CHECKSUM);
	assert_true(d.n <= 1 + 2 * CF_PAGER_DAMAGE_PER_SEC);
	assert_true(d.n < 1 + (NP - 10));
	/* the pages dropped are reported when met again once the rate allows,
	 * with the count of those dropped (bounded poll: 5 s) */
	int before = d.n;
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		for (cf_pgno pg = 10; pg < NP && d.suppressed == 0; pg++)
			(void)cf_pager_get(p, pg, UINT64_MAX, 1, &img);
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while (d.suppressed == 0 && t.tv_sec - t0.tv_sec < 5);
	assert_true(d.n > before);
	assert_true(d.suppressed > 0);
	assert_int_equal(d.page5, 1); /* still once: it stayed among the recent ones */
	cf_pager_close(p);
	close(fd);
}

/* Fill and empty: the file must not grow without bound. */
static void test_fill_empty_reuses_pages(void **state)
{
	(void)state;
	coffer_env *env = open_env(4096, 0);
	uint64_t pages_after_first = 0;
	for (int cycle = 0; cycle < 3; cycle++) {
		coffer_txn *t;
		OK(coffer_txn_begin(env, 0, &t));
		char k[32], v[200];
		memset(v, 'x', sizeof v);
		for (int i = 0; i < 3000; i++) {
			snprintf(k, sizeof k, "fill%06d", i);
			OK(coffer_put(t, "f", k, strlen(k), v, sizeof v, 0));
		}
		OK(coffer_txn_commit(t));
		OK(coffer_txn_begin(env, 0, &t));
		for (int i = 0; i < 3000; i++) {
			snprintf(k, sizeof k, "fill%06d", i);
			OK(coffer_del(t, "f", k, strlen(k)));
		}
		OK(coffer_txn_commit(t));
		struct coffer_env_info info;
		OK(coffer_env_info(env, &info));
		if (cycle == 0)
			pages_after_first = info.pages;
		else
			assert_true(info.pages <= pages_after_first + 2);
	}
	OK(coffer_env_close(env));
}

/* Crash: a child commits and reports each committed key; SIGKILL; reopen. */
static void test_kill9_recovery(void **state)
{
	(void)state;
	for (int round = 0; round < 4; round++) {
		rm_rf(dir);
		int pfd[2];
		assert_int_equal(pipe(pfd), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(pfd[0]);
			coffer_env *env = open_env(4096, 1u << 20);
			for (int i = 0; i < 100000; i++) {
				coffer_txn *t;
				if (coffer_txn_begin(env, 0, &t))
					_exit(3);
				char k[32], v[100];
				snprintf(k, sizeof k, "c%07d", i);
				memset(v, 'a' + i % 26, sizeof v);
				if (coffer_put(t, "crash", k, strlen(k), v, (size_t)(i % 100), 0) ||
				    coffer_txn_commit(t))
					_exit(4);
				if (write(pfd[1], &i, sizeof i) != sizeof i)
					_exit(5);
			}
			_exit(0);
		}
		close(pfd[1]);
		int last = -1, got, target = 200 + round * 300;
		while (last < target && read(pfd[0], &got, sizeof got) == sizeof got)
			last = got;
		/* let it run into the middle of another commit */
		usleep((useconds_t)(rand() % 2000));
		kill(pid, SIGKILL);
		while (read(pfd[0], &got, sizeof got) == sizeof got)
			last = got;
		close(pfd[0]);
		int st;
		waitpid(pid, &st, 0);
		assert_true(WIFSIGNALED(st));
		assert_true(last >= target);

		coffer_env *env = open_env(4096, 1u << 20);
		coffer_txn *t;
		OK(coffer_txn_begin(env, COFFER_TXN_READ_ONLY, &t));
		for (int i = 0; i <= last; i++) {
			char k[32];
			snprintf(k, sizeof k, "c%07d", i);
			void *v;
			size_t vl;
			int rc = coffer_get(t, "crash", k, strlen(k), &v, &vl);
			if (rc)
				fail_msg("acknowledged key %s lost after kill -9 (round %d, last %d): %s", k,
					 round, last, coffer_error_last()->message);
			assert_int_equal(vl, (size_t)(i % 100));
			free(v);
		}
		uint64_t n;
		OK(coffer_tree_count(t, "crash", &n));
		/* at most one commit beyond the last acknowledged one */
		assert_true(n == (uint64_t)last + 1 || n == (uint64_t)last + 2);
		coffer_txn_abort(t);
		OK(coffer_env_close(env));
	}
}

/* Pages torn after the checkpoint are rebuilt from their full images; a torn
 * page the log does not cover is named when read. */
static void tear_page(unsigned pgno)
{
	char path[512];
	snprintf(path, sizeof path, "%s/coffer.db", dir);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	char junk[2048];
	memset(junk, 0x5a, sizeof junk);
	assert_int_equal(pwrite(fd, junk, sizeof junk, (off_t)pgno * 4096 + 1024), (ssize_t)sizeof junk);
	close(fd);
}

/* Tear every page that the log holds a full image of after the checkpoint. */
static int tear_imaged_pages(void)
{
	char ck[512], logdir[512];
	snprintf(ck, sizeof ck, "%s/checkpoint", dir);
	snprintf(logdir, sizeof logdir, "%s/log", dir);
	struct cf_checkpoint c;
	OK(cf_checkpoint_read(ck, &c));
	cf_log_reader *r;
	OK(cf_log_reader_open(&r, logdir, c.signature, c.redo));
	cf_log_rec rec;
	int n = 0;
	while (cf_log_reader_next(r, &rec) == COFFER_OK) {
		if (rec.type == CF_LOG_PAGE_IMAGE) {
			tear_page(cf_get32(rec.payload));
			n++;
		}
	}
	cf_log_reader_close(r);
	return n;
}

static void test_torn_page_repaired(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		coffer_env *env = open_env(4096, 0);
		coffer_txn *t;
		for (int i = 0; i < 300; i++) {
			if (coffer_txn_begin(env, 0, &t))
				_exit(2);
			char k[32];
			snprintf(k, sizeof k, "t%05d", i);
			if (coffer_put(t, "torn", k, strlen(k), k, strlen(k), 0) || coffer_txn_commit(t))
				_exit(3);
		}
		if (coffer_env_checkpoint(env))
			_exit(4);
		/* After the checkpoint change every page (all keys, a new tree for
		 * the catalog and the meta page): each first change is logged as a
		 * full image. Then crash without writing the pages. */
		if (coffer_txn_begin(env, 0, &t))
			_exit(5);
		for (int i = 0; i < 300; i++) {
			char k[32];
			snprintf(k, sizeof k, "t%05d", i);
			if (coffer_put(t, "torn", k, strlen(k), "new", 3, 0))
				_exit(6);
		}
		if (coffer_put(t, "second", "x", 1, "y", 1, 0) || coffer_txn_commit(t))
			_exit(7);
		_exit(0);
	}
	int st;
	waitpid(pid, &st, 0);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_true(tear_imaged_pages() >= 3);

	coffer_env *env = open_env(4096, 0);
	coffer_txn *t;
	OK(coffer_txn_begin(env, COFFER_TXN_READ_ONLY, &t));
	for (int i = 0; i < 300; i++) {
		char k[32];
		snprintf(k, sizeof k, "t%05d", i);
		expect(t, "torn", k, "new");
	}
	expect(t, "second", "x", "y");
	coffer_txn_abort(t);
	OK(coffer_env_close(env)); /* clean: the next open replays nothing */

	for (unsigned pg = 3; pg < 12; pg++)
		tear_page(pg);
	env = open_env(4096, 0);
	OK(coffer_txn_begin(env, COFFER_TXN_READ_ONLY, &t));
	void *v;
	size_t vl;
	int rc = COFFER_OK;
	for (int i = 0; i < 300 && rc == COFFER_OK; i++) {
		char k[32];
		snprintf(k, sizeof k, "t%05d", i);
		rc = coffer_get(t, "torn", k, strlen(k), &v, &vl);
		if (rc == COFFER_OK)
			free(v);
	}
	assert_int_equal(rc, COFFER_E_PAGE_CHECKSUM);
	assert_true(coffer_error_last()->page >= 3);
	assert_non_null(strstr(coffer_error_last()->file, "coffer.db"));
	assert_non_null(strstr(coffer_error_last()->message, "failed its checksum"));
	coffer_txn_abort(t);
	OK(coffer_env_close(env));
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	if (system(cmd) != 0)
		fail_msg("command failed: %s", cmd);
}

static int64_t wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Point-in-time recovery: a copy taken at a checkpoint plus the later log,
 * replayed up to a time or a log position. */
static void test_point_in_time(void **state)
{
	(void)state;
	char copy[300];
	snprintf(copy, sizeof copy, "%s-copy", dir);
	rm_rf(copy);
	coffer_env *env = open_env(4096, 1u << 20);
	coffer_txn *t;
	OK(coffer_txn_begin(env, 0, &t));
	put_str(t, "p", "base", "0");
	OK(coffer_txn_commit(t));
	OK(coffer_env_checkpoint(env));
	sh("mkdir -p '%s' && cp '%s/coffer.db' '%s/checkpoint' '%s/'", copy, dir, dir, copy);
	int64_t marks[5];
	struct coffer_env_info info[5];
	for (int i = 0; i < 5; i++) {
		OK(coffer_txn_begin(env, 0, &t));
		char k[16], v[16];
		snprintf(k, sizeof k, "step%d", i);
		snprintf(v, sizeof v, "%d", i);
		put_str(t, "p", k, v);
		OK(coffer_txn_commit(t));
		OK(coffer_env_info(env, &info[i]));
		marks[i] = wall_us();
		usleep(2000); /* commit times must differ across the marks */
	}
	OK(coffer_env_close(env));
	for (int round = 0; round < 4; round++) {
		int target = round % 2 ? 3 : 1;
		sh("rm -rf '%s/log' && cp -r '%s/log' '%s/log'", copy, dir, copy);
		char keep[320];
		snprintf(keep, sizeof keep, "%s-base", copy);
		if (round == 0)
			sh("rm -rf '%s' && cp -r '%s' '%s'", keep, copy, keep);
		else
			sh("rm -rf '%s' && cp -r '%s' '%s' && rm -rf '%s/log' && cp -r '%s/log' '%s/log'",
			   copy, keep, copy, copy, dir, copy);
		coffer_env_options o;
		coffer_env_options_init(&o);
		o.flags = COFFER_ENV_HARD_RECOVERY;
		if (round < 2)
			o.until_us = marks[target];
		else
			o.until_lsn = info[target].last_commit_lsn;
		coffer_env *e2;
		int rc = coffer_env_open(&e2, copy, &o);
		if (rc)
			fail_msg("recover --until: %s", coffer_error_last()->message);
		OK(coffer_txn_begin(e2, COFFER_TXN_READ_ONLY, &t));
		expect(t, "p", "base", "0");
		for (int i = 0; i < 5; i++) {
			char k[16], v[16];
			snprintf(k, sizeof k, "step%d", i);
			snprintf(v, sizeof v, "%d", i);
			expect(t, "p", k, i <= target ? v : NULL);
		}
		coffer_txn_abort(t);
		OK(coffer_env_close(e2));
		if (round == 3)
			sh("rm -rf '%s'", keep);
	}
	/* A target past the end of the log is refused, not silently accepted. */
	coffer_env_options o;
	coffer_env_options_init(&o);
	o.flags = COFFER_ENV_HARD_RECOVERY;
	o.until_us = wall_us() + 3600 * 1000000LL;
	coffer_env *e3;
	assert_int_equal(coffer_env_open(&e3, copy, &o), COFFER_E_UNTIL_NOT_REACHED);
	rm_rf(copy);
}

struct gc_arg {
	coffer_env *env;
	int id, n;
};

static void *committer(void *p)
{
	struct gc_arg *a = p;
	for (int i = 0; i < a->n; i++) {
		coffer_txn *t;
		char k[32];
		snprintf(k, sizeof k, "w%02d-%05d", a->id, i);
		if (coffer_txn_begin(a->env, 0, &t) || coffer_put(t, "g", k, strlen(k), k, strlen(k), 0) ||
		    coffer_txn_commit(t))
			return (void *)1;
	}
	return NULL;
}

static void test_group_commit_threads(void **state)
{
	(void)state;
	coffer_env *env = open_env(0, 0);
	enum { NT = 16, PER = 100 };
	pthread_t th[NT];
	struct gc_arg args[NT];
	for (int i = 0; i < NT; i++) {
		args[i] = (struct gc_arg){env, i, PER};
		assert_int_equal(pthread_create(&th[i], NULL, committer, &args[i]), 0);
	}
	for (int i = 0; i < NT; i++) {
		void *res;
		pthread_join(th[i], &res);
		assert_null(res);
	}
	coffer_txn *t;
	OK(coffer_txn_begin(env, COFFER_TXN_READ_ONLY, &t));
	uint64_t n;
	OK(coffer_tree_count(t, "g", &n));
	assert_int_equal(n, NT * PER);
	coffer_txn_abort(t);
	OK(coffer_env_close(env));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_get_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_isolation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_model, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fill_empty_reuses_pages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check_finds_damage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pager_damage_reports, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kill9_recovery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_page_repaired, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_point_in_time, setup, teardown),
	};
	if (getenv("COFFER_TEST_FILTER")) /* run one test: COFFER_TEST_FILTER=test_name */
		cmocka_set_test_filter(getenv("COFFER_TEST_FILTER"));
	return cmocka_run_group_tests_name("engine", tests, NULL, NULL);
}
