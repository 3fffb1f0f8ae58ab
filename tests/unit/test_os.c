/* test_os.c - the system call table, the I/O helpers, the directory lock and
 * the injection points. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/os.h"

/* ---- scratch directories ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup_dir(void **state)
{
	const char *tmp = getenv("TMPDIR");
	char *dir = malloc(PATH_MAX);
	snprintf(dir, PATH_MAX, "%s/coffer-test-os-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		free(dir);
		return -1;
	}
	*state = dir;
	return 0;
}

static int teardown_dir(void **state)
{
	cf_os = cf_os_real;
#ifdef COFFER_TESTING
	cf_os_fault_hook = NULL;
#endif
	nftw(*state, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(*state);
	return 0;
}

static void path_in(char *out, void **state, const char *name)
{
	assert_int_equal(cf_path_join(out, PATH_MAX, *state, name), COFFER_OK);
}

static int file_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* ---- tests ---- */

static void test_full_read_write(void **state)
{
	char path[PATH_MAX];
	path_in(path, state, "data");
	unsigned char out[10000], in[10000];
	for (size_t i = 0; i < sizeof out; i++)
		out[i] = (unsigned char)(i * 7 + 3);
	int fd;
	assert_int_equal(cf_open(&fd, path, O_RDWR | O_CREAT, 0600), COFFER_OK);
	assert_int_equal(cf_pwrite_full(fd, path, out, sizeof out, 4096), COFFER_OK);
	assert_int_equal(cf_fdatasync(fd, path), COFFER_OK);
	assert_int_equal(cf_pread_full(fd, path, in, sizeof in, 4096), COFFER_OK);
	assert_memory_equal(in, out, sizeof out);
	assert_int_equal(cf_write_full(fd, path, out, 10), COFFER_OK); /* at position 0 */
	assert_int_equal(cf_pread_full(fd, path, in, 10, 0), COFFER_OK);
	assert_memory_equal(in, out, 10);
	assert_int_equal(cf_fsync(fd, path), COFFER_OK);
	assert_int_equal(cf_close(fd, path), COFFER_OK);
	assert_int_equal(cf_fsync_dir(*state), COFFER_OK);
}

static void test_open_missing_names_file(void **state)
{
	char path[PATH_MAX];
	path_in(path, state, "nope/none");
	int fd = 99;
	assert_int_equal(cf_open(&fd, path, O_RDONLY, 0), COFFER_E_FILE_NOT_FOUND);
	assert_int_equal(fd, -1);
	const coffer_error *e = coffer_error_last();
	assert_string_equal(e->file, path);
	assert_int_equal(e->sys_errno, ENOENT);
	assert_non_null(strstr(e->message, "could not open"));
}

static void test_short_read_names_offset(void **state)
{
	char path[PATH_MAX];
	path_in(path, state, "short");
	char buf[100] = {0};
	int fd;
	assert_int_equal(cf_open(&fd, path, O_RDWR | O_CREAT, 0600), COFFER_OK);
	assert_int_equal(cf_pwrite_full(fd, path, buf, 100, 0), COFFER_OK);
	assert_int_equal(cf_pread_full(fd, path, buf, 50, 80), COFFER_E_SHORT_READ);
	const coffer_error *e = coffer_error_last();
	assert_string_equal(e->file, path);
	assert_int_equal(e->offset, 80);
	assert_non_null(strstr(e->message, "ends at offset 100"));
	assert_non_null(strstr(e->message, "expected 50 bytes at offset 80, got 20"));
	cf_os.close(fd);
}

static ssize_t pwrite_enospc(int fd, const void *buf, size_t n, off_t off)
{
	(void)fd;
	(void)buf;
	(void)n;
	(void)off;
	errno = ENOSPC;
	return -1;
}

/* Writes one byte at a time and is interrupted every other call. */
static int calls;
static ssize_t pwrite_dribble(int fd, const void *buf, size_t n, off_t off)
{
	if (calls++ % 2 == 0) {
		errno = EINTR;
		return -1;
	}
	return cf_os_real.pwrite(fd, buf, n > 0 ? 1 : 0, off);
}

static void test_enospc_via_table(void **state)
{
	char path[PATH_MAX];
	path_in(path, state, "full");
	int fd;
	assert_int_equal(cf_open(&fd, path, O_RDWR | O_CREAT, 0600), COFFER_OK);
	cf_os.pwrite = pwrite_enospc;
	int rc = cf_pwrite_full(fd, path, "abc", 3, 8192);
	cf_os.pwrite = cf_os_real.pwrite;
	assert_int_equal(rc, COFFER_E_DISK_FULL);
	const coffer_error *e = coffer_error_last();
	assert_int_equal(e->code, COFFER_E_DISK_FULL);
	assert_int_equal(e->sys_errno, 28);
	assert_string_equal(e->file, path);
	assert_int_equal(e->offset, 8192);

	/* Short and interrupted writes are continued until whole. */
	calls = 0;
	cf_os.pwrite = pwrite_dribble;
	rc = cf_pwrite_full(fd, path, "hello, world", 12, 0);
	cf_os.pwrite = cf_os_real.pwrite;
	assert_int_equal(rc, COFFER_OK);
	char back[12];
	assert_int_equal(cf_pread_full(fd, path, back, 12, 0), COFFER_OK);
	assert_memory_equal(back, "hello, world", 12);
	assert_true(calls >= 24);
	cf_os.close(fd);
}

#ifdef COFFER_TESTING
static const char *hook_op;
static int hook(const char *op, int fd, const char *path)
{
	(void)fd;
	(void)path;
	return hook_op && strcmp(op, hook_op) == 0 ? EIO : 0;
}
#endif

static void test_fault_hook(void **state)
{
#ifndef COFFER_TESTING
	(void)state;
	skip(); /* needs the test hooks (meson -Dtesting=true) */
#else
	char path[PATH_MAX];
	path_in(path, state, "hooked");
	int fd;
	assert_int_equal(cf_open(&fd, path, O_RDWR | O_CREAT, 0600), COFFER_OK);
	cf_os_fault_hook = hook;
	hook_op = "fsync";
	assert_int_equal(cf_fsync(fd, path), COFFER_E_IO);
	assert_int_equal(coffer_error_last()->sys_errno, EIO);
	assert_non_null(strstr(coffer_error_last()->message, "could not fsync"));
	assert_int_equal(cf_fdatasync(fd, path), COFFER_OK);
	hook_op = "write";
	assert_int_equal(cf_write_full(fd, path, "x", 1), COFFER_E_IO);
	assert_int_equal(cf_pwrite_full(fd, path, "x", 1, 0), COFFER_OK);
	cf_os_fault_hook = NULL;
	cf_os.close(fd);
#endif
}

static void read_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(buf, 1, cap - 1, f);
	buf[n] = '\0';
	fclose(f);
}

static void test_durable_write(void **state)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8], buf[64];
	path_in(path, state, "meta");
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	assert_int_equal(cf_durable_write_file(path, "first", 5, 0600), COFFER_OK);
	read_file(path, buf, sizeof buf);
	assert_string_equal(buf, "first");
	assert_false(file_exists(tmp));
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(cf_durable_write_file(path, "second!", 7, 0600), COFFER_OK);
	read_file(path, buf, sizeof buf);
	assert_string_equal(buf, "second!");
	assert_false(file_exists(tmp));

#ifdef COFFER_TESTING
	/* A failed fsync leaves the old contents and no temporary file. */
	cf_os_fault_hook = hook;
	hook_op = "fsync";
	assert_int_equal(cf_durable_write_file(path, "third", 5, 0600), COFFER_E_IO);
	cf_os_fault_hook = NULL;
	assert_string_equal(coffer_error_last()->file, tmp);
	read_file(path, buf, sizeof buf);
	assert_string_equal(buf, "second!");
	assert_false(file_exists(tmp));
#endif

	/* Durable rename. */
	char other[PATH_MAX];
	path_in(other, state, "meta2");
	assert_int_equal(cf_durable_rename(path, other), COFFER_OK);
	assert_false(file_exists(path));
	read_file(other, buf, sizeof buf);
	assert_string_equal(buf, "second!");
}

static void test_mkdir_p_and_paths(void **state)
{
	char path[PATH_MAX], file[PATH_MAX], buf[PATH_MAX];
	path_in(path, state, "a/b//c/");
	assert_int_equal(cf_mkdir_p(path, 0700), COFFER_OK);
	assert_int_equal(cf_mkdir_p(path, 0700), COFFER_OK); /* exists: fine */
	path_in(buf, state, "a/b/c");
	struct stat st;
	assert_int_equal(stat(buf, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);

	path_in(file, state, "a/file");
	assert_int_equal(cf_durable_write_file(file, "x", 1, 0600), COFFER_OK);
	path_in(path, state, "a/file/sub");
	assert_int_equal(cf_mkdir_p(path, 0700), COFFER_E_NOT_A_DIRECTORY);
	assert_string_equal(coffer_error_last()->file, file);

	assert_int_equal(cf_path_join(buf, sizeof buf, "/x", "y"), COFFER_OK);
	assert_string_equal(buf, "/x/y");
	assert_int_equal(cf_path_join(buf, sizeof buf, "/x/", "y"), COFFER_OK);
	assert_string_equal(buf, "/x/y");
	char small[8];
	assert_int_equal(cf_path_join(small, sizeof small, "/abc", "defg"), COFFER_E_INVALID_ARGUMENT);
	assert_non_null(strstr(coffer_error_last()->message, "/abc/defg"));
	assert_int_equal(cf_path_dirname(buf, sizeof buf, "/x/y/z"), COFFER_OK);
	assert_string_equal(buf, "/x/y");
	assert_int_equal(cf_path_dirname(buf, sizeof buf, "/x"), COFFER_OK);
	assert_string_equal(buf, "/");
	assert_int_equal(cf_path_dirname(buf, sizeof buf, "x"), COFFER_OK);
	assert_string_equal(buf, ".");
}

/* In a child: try to take DIR's lock; send the code and message back. */
static void child_try_lock(const char *dir, int wfd)
{
	cf_dirlock *l = NULL;
	int rc = cf_dirlock_acquire(&l, dir, "test-child");
	char msg[1024];
	snprintf(msg, sizeof msg, "%d %s", rc, rc ? coffer_error_last()->message : "");
	if (write(wfd, msg, strlen(msg)) < 0)
		_exit(2);
	_exit(0);
}

static int lock_from_child(const char *dir, char *msg, size_t cap)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		child_try_lock(dir, p[1]);
	}
	close(p[1]);
	size_t n = 0;
	ssize_t r;
	while (n + 1 < cap && (r = read(p[0], msg + n, cap - 1 - n)) > 0)
		n += (size_t)r;
	msg[n] = '\0';
	close(p[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return atoi(msg);
}

static void test_dirlock(void **state)
{
	const char *dir = *state;
	cf_dirlock *lock = NULL, *again = NULL;
	assert_int_equal(cf_dirlock_acquire(&lock, dir, "cofferd"), COFFER_OK);
	assert_non_null(lock);

	char msg[1100], want[64];
	assert_int_equal(lock_from_child(dir, msg, sizeof msg), COFFER_E_LOCKED);
	snprintf(want, sizeof want, "is in use by cofferd (pid %ld) since 2", (long)getpid());
	if (strstr(msg, want) == NULL)
		fail_msg("lock message \"%s\" lacks \"%s\"", msg, want);
	assert_non_null(strstr(msg, dir));

	/* Even the same process cannot take it twice. */
	assert_int_equal(cf_dirlock_acquire(&again, dir, "cofferd"), COFFER_E_LOCKED);
	assert_null(again);
	assert_string_equal(coffer_error_last()->file, dir);

	cf_dirlock_release(lock);
	assert_int_equal(lock_from_child(dir, msg, sizeof msg), COFFER_OK);
	/* The child exited: the lock is free again for us. */
	assert_int_equal(cf_dirlock_acquire(&lock, dir, "cofferd"), COFFER_OK);
	cf_dirlock_release(lock);

	char missing[PATH_MAX];
	path_in(missing, state, "no-such-dir");
	assert_int_equal(cf_dirlock_acquire(&lock, missing, "x"), COFFER_E_FILE_NOT_FOUND);
}

static void test_inject_api(void **state)
{
#ifndef COFFER_TESTING
	(void)state;
	skip(); /* needs the test hooks (meson -Dtesting=true) */
#else
	(void)state;
	unsetenv("COFFER_INJECT");
	cf_inject_reset();
	assert_int_equal(CF_INJECT("t.point"), 0);
	assert_int_equal(cf_inject_arm("t.point", ENOSPC, 2, 1), COFFER_OK);
	assert_int_equal(CF_INJECT("t.point"), 0);
	assert_int_equal(CF_INJECT("t.point"), 0);
	assert_int_equal(CF_INJECT("t.point"), ENOSPC);
	assert_int_equal(CF_INJECT("t.point"), 0);
	assert_int_equal(cf_inject_fired("t.point"), 1);
	assert_int_equal(CF_INJECT("t.other"), 0);
	/* COUNT 0: every hit from then on. */
	assert_int_equal(cf_inject_arm("t.point", EIO, 0, 0), COFFER_OK);
	for (int i = 0; i < 5; i++)
		assert_int_equal(CF_INJECT("t.point"), EIO);
	assert_int_equal(cf_inject_fired("t.point"), 5);
	assert_int_equal(cf_inject_arm("t.point", 0, 0, 0), COFFER_OK); /* disarm */
	assert_int_equal(CF_INJECT("t.point"), 0);
	assert_int_equal(cf_inject_arm("", EIO, 0, 0), COFFER_E_INVALID_ARGUMENT);
	cf_inject_reset();
#endif
}

static void test_inject_env(void **state)
{
#ifndef COFFER_TESTING
	(void)state;
	skip(); /* needs the test hooks (meson -Dtesting=true) */
#else
	(void)state;
	setenv("COFFER_INJECT", "evlog.write:ENOSPC:2,c.d:EIO,e.f:5:0:2", 1);
	cf_inject_reset();
	assert_int_equal(CF_INJECT("evlog.write"), 0);
	assert_int_equal(CF_INJECT("evlog.write"), 0);
	assert_int_equal(CF_INJECT("evlog.write"), ENOSPC);
	assert_int_equal(CF_INJECT("evlog.write"), ENOSPC);
	assert_int_equal(CF_INJECT("c.d"), EIO);
	assert_int_equal(CF_INJECT("e.f"), 5);
	assert_int_equal(CF_INJECT("e.f"), 5);
	assert_int_equal(CF_INJECT("e.f"), 0);

	/* Bad specifications are refused whole, naming the entry. */
	cf_inject_reset();
	unsetenv("COFFER_INJECT");
	static const char *bad[] = {"x", "x:ENOTANERRNO", "x:ENOSPC:1:2:3", ":EIO", "x:EIO:-1",
				    "x:0", "ok:EIO,x:EIO:zz"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(cf_inject_parse(bad[i]), COFFER_E_INVALID_ARGUMENT);
		assert_non_null(strstr(coffer_error_last()->message, "NAME:ERRNO"));
	}
	assert_int_equal(CF_INJECT("ok"), 0); /* nothing of the bad spec was armed */
	assert_int_equal(cf_inject_parse("n:28"), COFFER_OK);
	assert_int_equal(CF_INJECT("n"), ENOSPC);

	/* A malformed environment arms nothing (and warns on stderr). */
	setenv("COFFER_INJECT", "broken", 1);
	cf_inject_reset();
	assert_int_equal(CF_INJECT("broken"), 0);
	unsetenv("COFFER_INJECT");
	cf_inject_reset();
#endif
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_full_read_write, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_open_missing_names_file, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_short_read_names_offset, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_enospc_via_table, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_fault_hook, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_durable_write, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_mkdir_p_and_paths, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_dirlock, setup_dir, teardown_dir),
		cmocka_unit_test(test_inject_api),
		cmocka_unit_test(test_inject_env),
	};
	return cmocka_run_group_tests_name("os", tests, NULL, NULL);
}
