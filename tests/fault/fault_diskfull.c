/*
 * fault_diskfull.c - the log's file system fills up.
 *
 * The OS table is patched so that pwrite to the write-ahead log (files
 * DIR/log/NNNNNNNNNN.log, and NNNNNNNNNN.log.tmp while a generation is
 * being created) succeeds for the next N bytes only: a write crossing the
 * limit is short, the next one fails with ENOSPC - what a full file system
 * does. Other files are not affected.
 *
 *  - test_commit_disk_full: the commit whose log write fails returns
 *    COFFER_E_DISK_FULL naming the log file; the store is then fatal (a
 *    write transaction gets COFFER_E_FATAL with the cause, coffer_env_info
 *    says fatal) while reads go on and see every acknowledged commit and
 *    not the failed one; event 1004 is in the store's event log with the
 *    code and the file; reopening while the disk is still full fails
 *    cleanly, and once space is back the store opens (recovery) with every
 *    acknowledged commit and without the failed one, and takes commits.
 *    Repeated for several limits (0 bytes: the first write fails outright).
 *  - test_roll_disk_full: the disk fills while the log starts a new
 *    generation: the commit fails with a disk-full code naming the log, and
 *    after space is back and the store is reopened, every acknowledged
 *    commit is there.
 */
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

#include <coffer/coffer.h>
#include <coffer/event.h>

#include "common/os.h"

static char dir[256];

#define OK(x)                                                                                 \
	do {                                                                                  \
		int rc_ = (x);                                                                \
		if (rc_)                                                                      \
			fail_msg("%s: %s (%s)", #x, coffer_error_last()->message,            \
				 coffer_code_name(rc_));                                      \
	} while (0)

/* ---- the full disk: a byte budget for log writes ---- */

#define MAX_FD 1024
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char *fd_path[MAX_FD];
static int armed;
static uint64_t budget;    /* log bytes still accepted while armed */
static unsigned refusals;  /* pwrite calls that failed with ENOSPC */
static int tmp_only;       /* limit only NNNNNNNNNN.log.tmp (a new generation) */

static int is_log(const char *p)
{
	const char *base = p ? strrchr(p, '/') : NULL;
	if (base == NULL || base - p < 4 || strncmp(base - 4, "/log", 4) != 0)
		return 0;
	size_t n = strlen(base + 1);
	if (n == 14 && strcmp(base + 11, ".log") == 0)
		return !tmp_only;
	return n == 18 && strcmp(base + 11, ".log.tmp") == 0;
}

static int df_open(const char *path, int flags, mode_t mode)
{
	int fd = cf_os_real.open(path, flags, mode);
	if (fd >= 0 && fd < MAX_FD) {
		pthread_mutex_lock(&mu);
		free(fd_path[fd]);
		fd_path[fd] = strdup(path);
		pthread_mutex_unlock(&mu);
	}
	return fd;
}

static int df_close(int fd)
{
	if (fd >= 0 && fd < MAX_FD) {
		pthread_mutex_lock(&mu);
		free(fd_path[fd]);
		fd_path[fd] = NULL;
		pthread_mutex_unlock(&mu);
	}
	return cf_os_real.close(fd);
}

static ssize_t df_pwrite(int fd, const void *buf, size_t n, off_t off)
{
	pthread_mutex_lock(&mu);
	if (armed && fd >= 0 && fd < MAX_FD && is_log(fd_path[fd])) {
		if (budget == 0) {
			refusals++;
			pthread_mutex_unlock(&mu);
			errno = ENOSPC;
			return -1;
		}
		if (n > budget)
			n = (size_t)budget;
		budget -= n;
	}
	pthread_mutex_unlock(&mu);
	return cf_os_real.pwrite(fd, buf, n, off);
}

static void disk_install(void)
{
	cf_os.open = df_open;
	cf_os.close = df_close;
	cf_os.pwrite = df_pwrite;
}

static void disk_fill(uint64_t bytes_left, int only_new_generations)
{
	pthread_mutex_lock(&mu);
	armed = 1;
	budget = bytes_left;
	refusals = 0;
	tmp_only = only_new_generations;
	pthread_mutex_unlock(&mu);
}

static void disk_free(void)
{
	pthread_mutex_lock(&mu);
	armed = 0;
	pthread_mutex_unlock(&mu);
}

static void disk_uninstall(void)
{
	disk_free();
	cf_os = cf_os_real;
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAX_FD; i++) {
		free(fd_path[i]);
		fd_path[i] = NULL;
	}
	pthread_mutex_unlock(&mu);
}

/* ---- helpers ---- */

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
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(dir, sizeof dir, "%s/coffer-fault-diskfull-%d", tmp, (int)getpid());
	rm_rf(dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	disk_uninstall();
	if (getenv("COFFER_TEST_KEEP") == NULL)
		rm_rf(dir);
	return 0;
}

static int open_env(coffer_env **env, coffer_evlog *ev)
{
	coffer_env_options o;
	coffer_env_options_init(&o);
	o.flags = COFFER_ENV_CREATE;
	o.page_size = 4096;
	o.log_file_size = 1u << 20;
	o.checkpoint_seconds = 3600;
	o.checkpoint_log_bytes = 1ull << 40;
	o.evlog = ev;
	return coffer_env_open(env, dir, &o);
}

static void key_of(char *k, size_t cap, int i)
{
	snprintf(k, cap, "k%05d", i);
}

/* The value of key I: VLEN bytes derived from I. */
static void value_of(uint8_t *v, size_t vlen, int i)
{
	for (size_t j = 0; j < vlen; j++)
		v[j] = (uint8_t)(i * 131 + j * 7);
}

static int commit_one(coffer_env *env, int i, size_t vlen)
{
	uint8_t v[8192];
	char k[16];
	key_of(k, sizeof k, i);
	value_of(v, vlen, i);
	coffer_txn *t;
	int rc = coffer_txn_begin(env, 0, &t);
	if (rc)
		return rc;
	rc = coffer_put(t, "d", k, strlen(k), v, vlen, 0);
	if (rc) {
		coffer_txn_abort(t);
		return rc;
	}
	return coffer_txn_commit(t);
}

/* Keys 0..ACKED-1 present with their values; FAILED (if >= 0) absent. */
static void expect_keys(coffer_env *env, int acked, const size_t *vlens, int failed)
{
	coffer_txn *t;
	OK(coffer_txn_begin(env, COFFER_TXN_READ_ONLY, &t));
	uint8_t want[8192];
	for (int i = 0; i < acked; i++) {
		char k[16];
		void *v;
		size_t vl;
		key_of(k, sizeof k, i);
		int rc = coffer_get(t, "d", k, strlen(k), &v, &vl);
		if (rc)
			fail_msg("acknowledged commit %d (key %s) is missing: %s (%s)", i, k,
				 coffer_error_last()->message, coffer_code_name(rc));
		value_of(want, vlens[i], i);
		if (vl != vlens[i] || memcmp(v, want, vl) != 0)
			fail_msg("key %s has a wrong value (%zu bytes, expected %zu)", k, vl, vlens[i]);
		free(v);
	}
	if (failed >= 0) {
		char k[16];
		void *v;
		size_t vl;
		key_of(k, sizeof k, failed);
		int rc = coffer_get(t, "d", k, strlen(k), &v, &vl);
		if (rc == COFFER_OK) {
			free(v);
			fail_msg("the failed commit %d (key %s) is visible", failed, k);
		}
		assert_int_equal(rc, COFFER_E_NOT_FOUND);
	}
	uint64_t n;
	OK(coffer_tree_count(t, "d", &n));
	assert_int_equal(n, (uint64_t)acked);
	coffer_txn_abort(t);
}

struct ev_find {
	int found;
	char code[64], file[512], while_[128];
};

static int on_event(const coffer_event *ev, void *arg)
{
	struct ev_find *f = arg;
	if (ev->id != 1004)
		return 0;
	f->found++;
	for (size_t i = 0; i < ev->nfields; i++) {
		const coffer_evfield *x = &ev->fields[i];
		if (strcmp(x->key, "CODE_NAME") == 0)
			snprintf(f->code, sizeof f->code, "%s", x->value);
		else if (strcmp(x->key, "FILE") == 0)
			snprintf(f->file, sizeof f->file, "%s", x->value);
		else if (strcmp(x->key, "WHILE") == 0)
			snprintf(f->while_, sizeof f->while_, "%s", x->value);
	}
	return 0;
}

/* ---- tests ---- */

#define NPRE 20   /* commits before the disk fills */
#define NMAX 400  /* bound on the commits tried */

static void commit_until_full(uint64_t limit)
{
	rm_rf(dir);
	assert_int_equal(mkdir(dir, 0700), 0);
	coffer_evlog_options eo = COFFER_EVLOG_OPTIONS_INIT;
	eo.flags = COFFER_EVLOG_NO_SYSTEM;
	coffer_evlog *ev;
	OK(coffer_evlog_open(&ev, dir, &eo));
	disk_install();
	coffer_env *env;
	OK(open_env(&env, ev));
	size_t vlens[NMAX];
	int acked = 0, rc = COFFER_OK;
	for (; acked < NPRE; acked++) {
		vlens[acked] = 200 + (size_t)acked * 13;
		OK(commit_one(env, acked, vlens[acked]));
	}
	disk_fill(limit, 0);
	for (; acked < NMAX; acked++) {
		vlens[acked] = 1500;
		rc = commit_one(env, acked, vlens[acked]);
		if (rc)
			break;
	}
	int failed = acked;
	const coffer_error err = *coffer_error_last(), *e = &err;
	printf("# limit %llu: %d commits acknowledged after the disk filled; the failure: %s (%s)\n",
	       (unsigned long long)limit, failed - NPRE, e->message, coffer_code_name(rc));
	if (rc != COFFER_E_DISK_FULL)
		fail_msg("commit %d failed with %s, expected COFFER_E_DISK_FULL: %s", failed,
			 coffer_code_name(rc), e->message);
	if (!is_log(e->file) || e->sys_errno != ENOSPC)
		fail_msg("the error names file \"%s\" (errno %d), expected the log file and ENOSPC",
			 e->file, e->sys_errno);

	/* Sticky: writes refused with the cause, reads go on. */
	coffer_txn *t;
	rc = coffer_txn_begin(env, 0, &t);
	assert_int_equal(rc, COFFER_E_FATAL);
	assert_non_null(strstr(coffer_error_last()->message, "COFFER_E_DISK_FULL"));
	assert_int_equal(commit_one(env, failed + 1, 10), COFFER_E_FATAL);
	struct coffer_env_info info;
	OK(coffer_env_info(env, &info));
	assert_true(info.fatal);
	expect_keys(env, failed, vlens, failed);

	struct ev_find f = {0};
	OK(coffer_evlog_read(dir, on_event, NULL, &f));
	if (f.found != 1 || strcmp(f.code, "COFFER_E_DISK_FULL") != 0 || !is_log(f.file))
		fail_msg("event 1004: found %d, CODE_NAME \"%s\", FILE \"%s\"", f.found, f.code, f.file);
	printf("# event 1004: CODE_NAME=%s FILE=%s WHILE=%s\n", f.code, f.file, f.while_);

	rc = coffer_env_close(env);
	assert_true(rc == COFFER_E_FATAL || rc == COFFER_OK);
	coffer_error_clear();

	/* Still full: reopening fails cleanly (recovery zeroes the torn tail
	 * of the log, which needs space) or works; it must not damage anything. */
	disk_fill(0, 0);
	rc = open_env(&env, ev);
	if (rc == COFFER_OK) {
		expect_keys(env, failed, vlens, failed);
		coffer_env_close(env);
	} else {
		printf("# reopening with the disk still full: %s (%s)\n", coffer_error_last()->message,
		       coffer_code_name(rc));
		assert_int_equal(rc, COFFER_E_DISK_FULL);
	}
	coffer_error_clear();

	/* Space is back: everything acknowledged is there, the store writes. */
	disk_free();
	OK(open_env(&env, ev));
	expect_keys(env, failed, vlens, failed);
	vlens[failed] = 77;
	OK(commit_one(env, failed, vlens[failed]));
	OK(coffer_env_close(env));
	OK(open_env(&env, ev));
	expect_keys(env, failed + 1, vlens, -1);
	OK(coffer_env_close(env));
	coffer_evlog_close(ev);
	disk_uninstall();
}

static void test_commit_disk_full(void **state)
{
	(void)state;
	static const uint64_t limits[] = {0, 1, 700, 4096, 9000, 20000};
	for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++)
		commit_until_full(limits[i]);
}

static void test_roll_disk_full(void **state)
{
	(void)state;
	disk_install();
	coffer_env *env;
	OK(open_env(&env, NULL));
	/* Values of 3000 bytes: about 340 commits fill a 1 MiB generation. */
	size_t vlens[NMAX];
	int acked = 0, rc = COFFER_OK;
	disk_fill(0, 1); /* no space for a new generation */
	for (; acked < NMAX; acked++) {
		vlens[acked] = 3000;
		rc = commit_one(env, acked, vlens[acked]);
		if (rc)
			break;
	}
	const coffer_error err = *coffer_error_last(), *e = &err;
	struct coffer_env_info info;
	OK(coffer_env_info(env, &info));
	printf("# %d commits, then: %s (%s); store fatal: %d\n", acked, e->message,
	       coffer_code_name(rc), info.fatal);
	if (rc != COFFER_E_LOG_FULL && rc != COFFER_E_DISK_FULL)
		fail_msg("the commit that needed a new log generation failed with %s: %s",
			 coffer_code_name(rc), e->message);
	assert_true(acked > 100 && acked < NMAX);
	assert_non_null(strstr(e->file, "/log"));
	expect_keys(env, acked, vlens, acked);
	coffer_env_close(env);
	coffer_error_clear();
	disk_free();
	OK(open_env(&env, NULL));
	expect_keys(env, acked, vlens, acked);
	vlens[acked] = 10;
	OK(commit_one(env, acked, vlens[acked]));
	OK(coffer_env_close(env));
	OK(open_env(&env, NULL));
	expect_keys(env, acked + 1, vlens, -1);
	OK(coffer_env_close(env));
	disk_uninstall();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_commit_disk_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roll_disk_full, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
