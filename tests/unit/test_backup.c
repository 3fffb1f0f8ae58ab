/* test_backup.c - the engine's online backup API: fuzzy copy under writes
 * restores exactly, history and truncation per type, refusals. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <coffer/backup.h>
#include <coffer/coffer.h>

#include <xxhash.h>

#include "common/xxh.h"
#include "engine/env.h"

static char dir[256], rdir[300];

#define OK(x)                                                                                 \
	do {                                                                                  \
		int rc_ = (x);                                                                \
		if (rc_)                                                                      \
			fail_msg("%s: %s (%s)", #x, coffer_error_last()->message,            \
				 coffer_code_name(rc_));                                      \
	} while (0)

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

static int setup(void **state)
{
	(void)state;
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(dir, sizeof dir, "%s/coffer-test-backup-%d", tmp, (int)getpid());
	snprintf(rdir, sizeof rdir, "%s-restore", dir);
	sh("rm -rf '%s' '%s'", dir, rdir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (getenv("COFFER_TEST_KEEP") == NULL)
		sh("rm -rf '%s' '%s'", dir, rdir);
	return 0;
}

static coffer_env *open_env(int circular)
{
	coffer_env_options o;
	coffer_env_options_init(&o);
	o.flags = COFFER_ENV_CREATE;
	o.page_size = 4096;
	o.log_file_size = 1u << 20;
	o.cache_bytes = 512u << 10;
	o.circular_logging = circular;
	coffer_env *env;
	OK(coffer_env_open(&env, dir, &o));
	return env;
}

static void put_n(coffer_env *env, const char *tree, int from, int n, size_t vlen)
{
	char *v = malloc(vlen + 1);
	memset(v, 'v', vlen);
	for (int i = from; i < from + n; i++) {
		coffer_txn *t;
		char k[32];
		snprintf(k, sizeof k, "key%07d", i);
		OK(coffer_txn_begin(env, 0, &t));
		OK(coffer_put(t, tree, k, strlen(k), v, vlen, 0));
		OK(coffer_txn_commit(t));
	}
	free(v);
}

/* Copy what a backup set would hold into RDIR (pages, logs, checkpoint). */
static void take_backup(coffer_env *env, unsigned type, const char *into, int copy_pages,
			struct coffer_backup_info *out_info, int *acked_before_roll, int *acked)
{
	coffer_backup *b;
	OK(coffer_backup_begin(env, type, "unit test", &b));
	const struct coffer_backup_info *bi = coffer_backup_get_info(b);
	sh("mkdir -p '%s/log'", into);
	if (copy_pages) {
		char path[512];
		snprintf(path, sizeof path, "%s/coffer.db", into);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		assert_true(fd >= 0);
		uint8_t *buf = malloc(16 * (size_t)bi->page_size);
		for (uint64_t p = 0; p < bi->npages; p += 16) {
			uint32_t n = (uint32_t)(bi->npages - p < 16 ? bi->npages - p : 16);
			OK(coffer_backup_read_pages(b, p, n, buf));
			assert_int_equal(pwrite(fd, buf, (size_t)n * bi->page_size, (off_t)(p * bi->page_size)),
					 (ssize_t)((size_t)n * bi->page_size));
		}
		free(buf);
		close(fd);
		struct cf_checkpoint ck = {.redo = bi->redo_lsn};
		memcpy(ck.signature, bi->signature, 16);
		snprintf(path, sizeof path, "%s/checkpoint", into);
		OK(cf_checkpoint_write(path, &ck));
	}
	if (acked_before_roll)
		*acked_before_roll = __atomic_load_n(acked, __ATOMIC_SEQ_CST);
	OK(coffer_backup_roll(b));
	for (uint32_t g = bi->gen_first; g <= bi->gen_last; g++) {
		int fd;
		uint64_t size;
		OK(coffer_backup_open_log(b, g, &fd, &size));
		char path[512];
		snprintf(path, sizeof path, "%s/log/%010u.log", into, g);
		int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		assert_true(out >= 0);
		char buf[65536];
		ssize_t r;
		uint64_t total = 0;
		while ((r = read(fd, buf, sizeof buf)) > 0) {
			assert_int_equal(write(out, buf, (size_t)r), r);
			total += (uint64_t)r;
		}
		assert_int_equal(total, size);
		close(fd);
		close(out);
	}
	*out_info = *bi;
	struct coffer_backup_result res;
	OK(coffer_backup_end(b, out_info->gen_last, &res));
}

struct writer {
	coffer_env *env;
	int stop;
	int acked; /* keys w0..w(acked-1) are committed */
};

static void *writer_main(void *p)
{
	struct writer *w = p;
	char v[300];
	memset(v, 'w', sizeof v);
	for (int i = 0; i < 200000 && !__atomic_load_n(&w->stop, __ATOMIC_SEQ_CST); i++) {
		coffer_txn *t;
		char k[32];
		snprintf(k, sizeof k, "w%07d", i);
		if (coffer_txn_begin(w->env, 0, &t) || coffer_put(t, "live", k, strlen(k), v, sizeof v, 0) ||
		    coffer_txn_commit(t))
			return (void *)1;
		__atomic_store_n(&w->acked, i + 1, __ATOMIC_SEQ_CST);
	}
	return NULL;
}

static void test_full_backup_under_writes_restores(void **state)
{
	(void)state;
	coffer_env *env = open_env(0);
	put_n(env, "base", 0, 3000, 200);
	struct writer w = {.env = env};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, writer_main, &w), 0);
	while (__atomic_load_n(&w.acked, __ATOMIC_SEQ_CST) < 200)
		usleep(1000);
	struct coffer_backup_info bi;
	int before_roll = 0;
	take_backup(env, COFFER_BACKUP_FULL, rdir, 1, &bi, &before_roll, &w.acked);
	__atomic_store_n(&w.stop, 1, __ATOMIC_SEQ_CST);
	void *res;
	pthread_join(th, &res);
	assert_null(res);
	print_message("# full backup: %llu pages, generations %u..%u, %d writes acknowledged before the roll\n",
		      (unsigned long long)bi.npages, bi.gen_first, bi.gen_last, before_roll);
	assert_true(before_roll >= 200);

	/* history recorded, logs truncated up to the roll */
	struct coffer_backup_status st;
	OK(coffer_backup_status(env, &st));
	assert_false(st.running);
	assert_true(st.last[0].valid);
	assert_memory_equal(st.last[0].id, bi.id, 16);
	struct coffer_env_info ei;
	OK(coffer_env_info(env, &ei));
	assert_true(ei.log_gen_first > bi.gen_last);
	OK(coffer_env_close(env));

	/* hard recovery of the copy */
	coffer_env_options o;
	coffer_env_options_init(&o);
	coffer_env *r;
	assert_int_equal(coffer_env_open(&r, rdir, &o), COFFER_E_NEEDS_HARD_RECOVERY);
	o.flags = COFFER_ENV_HARD_RECOVERY;
	OK(coffer_env_open(&r, rdir, &o));
	coffer_txn *t;
	OK(coffer_txn_begin(r, COFFER_TXN_READ_ONLY, &t));
	uint64_t n;
	OK(coffer_tree_count(t, "base", &n));
	assert_int_equal(n, 3000);
	OK(coffer_tree_count(t, "live", &n));
	assert_true(n >= (uint64_t)before_roll);
	for (int i = 0; i < (int)n; i++) {
		char k[32];
		void *v;
		size_t vl;
		snprintf(k, sizeof k, "w%07d", i);
		OK(coffer_get(t, "live", k, strlen(k), &v, &vl));
		assert_int_equal(vl, 300);
		free(v);
	}
	coffer_txn_abort(t);
	OK(coffer_env_close(r));
	struct coffer_check_result cr;
	OK(coffer_check(rdir, NULL, NULL, &cr));
	assert_int_equal(cr.problems, 0);
}

static void test_incremental_chain_and_truncation(void **state)
{
	(void)state;
	coffer_env *env = open_env(0);
	coffer_backup *b;
	assert_int_equal(coffer_backup_begin(env, COFFER_BACKUP_INCREMENTAL, "t", &b), COFFER_E_BACKUP_NO_FULL);
	put_n(env, "a", 0, 500, 1000);
	struct coffer_backup_info full, inc1, inc2, diff;
	take_backup(env, COFFER_BACKUP_FULL, rdir, 1, &full, NULL, NULL);
	put_n(env, "a", 500, 1500, 1000); /* > 1 MiB: several generations */
	char incdir[400];
	snprintf(incdir, sizeof incdir, "%s-inc", rdir);
	sh("rm -rf '%s'", incdir);
	take_backup(env, COFFER_BACKUP_INCREMENTAL, incdir, 0, &inc1, NULL, NULL);
	assert_int_equal(inc1.gen_first, full.gen_last + 1);
	assert_true(inc1.gen_last > inc1.gen_first);
	assert_memory_equal(inc1.parent_id, full.id, 16);
	put_n(env, "a", 2000, 100, 1000);
	take_backup(env, COFFER_BACKUP_INCREMENTAL, incdir, 0, &inc2, NULL, NULL);
	assert_int_equal(inc2.gen_first, inc1.gen_last + 1);
	assert_memory_equal(inc2.parent_id, inc1.id, 16);
	/* the incrementals truncated what the differential would need */
	assert_int_equal(coffer_backup_begin(env, COFFER_BACKUP_DIFFERENTIAL, "t", &b), COFFER_E_LOG_MISSING);
	assert_non_null(strstr(coffer_error_last()->message, "incremental"));
	/* a new full, then a differential keeps the logs */
	char fdir[400];
	snprintf(fdir, sizeof fdir, "%s-full2", rdir);
	sh("rm -rf '%s'", fdir);
	take_backup(env, COFFER_BACKUP_FULL, fdir, 1, &full, NULL, NULL);
	put_n(env, "a", 3000, 50, 100);
	char ddir[400];
	snprintf(ddir, sizeof ddir, "%s-diff", rdir);
	sh("rm -rf '%s'", ddir);
	take_backup(env, COFFER_BACKUP_DIFFERENTIAL, ddir, 0, &diff, NULL, NULL);
	assert_int_equal(diff.gen_first, full.gen_last + 1);
	struct coffer_env_info ei;
	OK(coffer_env_info(env, &ei));
	assert_true(ei.log_gen_first <= diff.gen_first); /* nothing truncated */
	/* copy changes no history */
	struct coffer_backup_status before, after;
	OK(coffer_backup_status(env, &before));
	char cdir[400];
	snprintf(cdir, sizeof cdir, "%s-copy", rdir);
	sh("rm -rf '%s'", cdir);
	struct coffer_backup_info cp;
	take_backup(env, COFFER_BACKUP_COPY, cdir, 1, &cp, NULL, NULL);
	OK(coffer_backup_status(env, &after));
	assert_memory_equal(&before.last, &after.last, sizeof before.last);
	OK(coffer_env_close(env));

	/* restore full + inc1 + inc2: the first full's pages and all three logs */
	sh("cp '%s'/log/* '%s/log/'", incdir, rdir);
	coffer_env_options o;
	coffer_env_options_init(&o);
	o.flags = COFFER_ENV_HARD_RECOVERY;
	coffer_env *r;
	OK(coffer_env_open(&r, rdir, &o));
	coffer_txn *t;
	OK(coffer_txn_begin(r, COFFER_TXN_READ_ONLY, &t));
	uint64_t n;
	OK(coffer_tree_count(t, "a", &n));
	assert_int_equal(n, 2100);
	coffer_txn_abort(t);
	OK(coffer_env_close(r));
	/* restore full2 + diff */
	sh("cp '%s'/log/* '%s/log/'", ddir, fdir);
	OK(coffer_env_open(&r, fdir, &o));
	OK(coffer_txn_begin(r, COFFER_TXN_READ_ONLY, &t));
	OK(coffer_tree_count(t, "a", &n));
	assert_int_equal(n, 2150);
	coffer_txn_abort(t);
	OK(coffer_env_close(r));
	sh("rm -rf '%s' '%s' '%s' '%s'", incdir, fdir, ddir, cdir);
}

static void test_refusals(void **state)
{
	(void)state;
	coffer_env *env = open_env(1);
	coffer_backup *b, *b2;
	assert_int_equal(coffer_backup_begin(env, COFFER_BACKUP_INCREMENTAL, "t", &b),
			 COFFER_E_CIRCULAR_LOGGING);
	assert_int_equal(coffer_backup_begin(env, COFFER_BACKUP_DIFFERENTIAL, "t", &b),
			 COFFER_E_CIRCULAR_LOGGING);
	put_n(env, "x", 0, 10, 10);
	OK(coffer_backup_begin(env, COFFER_BACKUP_FULL, "uid 1001", &b));
	assert_int_equal(coffer_backup_begin(env, COFFER_BACKUP_COPY, "uid 1002", &b2),
			 COFFER_E_BACKUP_IN_PROGRESS);
	assert_non_null(strstr(coffer_error_last()->message, "started by uid 1001"));
	OK(coffer_backup_roll(b));
	const struct coffer_backup_info *bi = coffer_backup_get_info(b);
	struct coffer_backup_status st;
	OK(coffer_backup_status(env, &st));
	assert_true(st.running);
	assert_int_equal(coffer_backup_end(b, bi->gen_last - 1, NULL), COFFER_E_LOG_NOT_COPIED);
	OK(coffer_backup_status(env, &st));
	assert_false(st.running);
	assert_false(st.last[0].valid); /* nothing recorded */
	/* abort changes nothing and frees the slot */
	OK(coffer_backup_begin(env, COFFER_BACKUP_FULL, "t", &b));
	coffer_backup_abort(b, NULL);
	OK(coffer_backup_begin(env, COFFER_BACKUP_COPY, "t", &b));
	coffer_backup_abort(b, NULL);
	OK(coffer_env_close(env));
}

/* A failure after the history is written fails coffer_backup_end, yet the
 * backup is recorded: what the client must assume when END does not come. */
static void test_end_fails_after_recording(void **state)
{
	(void)state;
	coffer_env *env = open_env(0);
	coffer_backup *b;
	put_n(env, "x", 0, 10, 10);
	OK(coffer_backup_begin(env, COFFER_BACKUP_FULL, "t", &b));
	OK(coffer_backup_roll(b));
	uint8_t id[16];
	memcpy(id, coffer_backup_get_info(b)->id, 16);
	uint32_t last = coffer_backup_get_info(b)->gen_last;
	OK(cf_inject_arm("backup.end.truncate", EIO, 0, 1));
	assert_int_equal(coffer_backup_end(b, last, NULL), COFFER_E_IO);
	assert_int_equal(cf_inject_fired("backup.end.truncate"), 1);
	struct coffer_backup_status st;
	OK(coffer_backup_status(env, &st));
	assert_false(st.running);
	assert_true(st.last[0].valid);
	assert_memory_equal(st.last[0].id, id, 16);
	/* and durably: the history is in the log and the header */
	OK(coffer_env_close(env));
	env = open_env(0);
	OK(coffer_backup_status(env, &st));
	assert_true(st.last[0].valid);
	assert_memory_equal(st.last[0].id, id, 16);
	OK(coffer_env_close(env));
	cf_inject_reset();
}

static void test_bad_page_fails_backup(void **state)
{
	(void)state;
	coffer_env *env = open_env(0);
	put_n(env, "x", 0, 2000, 100);
	OK(coffer_env_checkpoint(env));
	/* damage page 4 on disk behind the engine's back */
	char path[512];
	snprintf(path, sizeof path, "%s/coffer.db", dir);
	int fd = open(path, O_RDWR);
	assert_int_equal(pwrite(fd, "garbage!", 8, 4 * 4096 + 500), 8);
	close(fd);
	coffer_backup *b;
	OK(coffer_backup_begin(env, COFFER_BACKUP_FULL, "t", &b));
	const struct coffer_backup_info *bi = coffer_backup_get_info(b);
	uint8_t *buf = malloc(bi->npages * bi->page_size);
	assert_int_equal(coffer_backup_read_pages(b, 0, (uint32_t)bi->npages, buf), COFFER_E_PAGE_CHECKSUM);
	assert_int_equal(coffer_error_last()->page, 4);
	coffer_backup_abort(b, coffer_error_last());
	free(buf);
	/* the store keeps serving (page 4 may or may not be cached) */
	coffer_txn *t;
	OK(coffer_txn_begin(env, 0, &t));
	OK(coffer_put(t, "y", "k", 1, "v", 1, 0));
	OK(coffer_txn_commit(t));
	coffer_env_close(env);
}

/* The hashes behind page checksums and backup frames (src/common/xxh.h):
 * whichever kernel runs, the same bits as libxxhash, for every length class
 * of XXH3 (0, 1-3, 4-8, 9-16, 17-128, 129-240, long, across stripes) and
 * any split into pieces. */
static void test_xxh3_kernel_matches_libxxhash(void **state)
{
	(void)state;
	size_t max = 3 * 8192 + 77;
	uint8_t *b = malloc(max);
	assert_non_null(b);
	for (size_t i = 0; i < max; i++)
		b[i] = (uint8_t)(i * 131 + (i >> 7));
	const size_t lens[] = {0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1023, 1024, 1025, 8184, 8192, 24653};
	for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
		size_t n = lens[k];
		assert_true(n <= max);
		assert_int_equal(cf_xxh3_seed(b, n, 12345), XXH3_64bits_withSeed(b, n, 12345));
		assert_int_equal(cf_xxh3_seed(b + 1, n > 0 ? n - 1 : 0, 7), XXH3_64bits_withSeed(b + 1, n > 0 ? n - 1 : 0, 7));
		uint64_t whole = XXH3_64bits(b, n);
		size_t a = n / 3, c = n / 2;
		assert_int_equal(cf_xxh3_cat(b, a, b + a, c - a, b + c, n - c), whole);
		assert_int_equal(cf_xxh3_cat(b, n, NULL, 0, NULL, 0), whole);
		assert_int_equal(cf_xxh3_cat(NULL, 0, b, 24 < n ? 24 : n, b + (24 < n ? 24 : n), n - (24 < n ? 24 : n)),
				 whole);
		/* streaming, in pieces of 1, 7, 63, 511, ... bytes (across the
		 * 256-byte internal buffer and the 1024-byte stripes block) */
		_Alignas(64) cf_xxh3_state st;
		cf_xxh3_reset(&st);
		for (size_t pos = 0, piece = 1; pos < n; piece = piece * 8 + 7) {
			size_t m = piece < n - pos ? piece : n - pos;
			cf_xxh3_update(&st, b + pos, m);
			pos += m;
		}
		assert_int_equal(cf_xxh3_digest(&st), whole);
	}
	print_message("xxh3 kernel: %s\n", cf_xxh3_kernel());
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_xxh3_kernel_matches_libxxhash),
		cmocka_unit_test_setup_teardown(test_full_backup_under_writes_restores, setup, teardown),
		cmocka_unit_test_setup_teardown(test_incremental_chain_and_truncation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_end_fails_after_recording, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_page_fails_backup, setup, teardown),
	};
	if (getenv("COFFER_TEST_FILTER"))
		cmocka_set_test_filter(getenv("COFFER_TEST_FILTER"));
	return cmocka_run_group_tests_name("backup", tests, NULL, NULL);
}
