/*
 * os.c - the system call table, the I/O helpers, the data directory lock and
 * the injection points. The design is in os.h.
 *
 * Invariants:
 *  - every helper reads cf_os at each call (a test may have patched it);
 *  - a helper that fails has filled the thread's error record with the
 *    operation, the file, the offset when there is one and the errno;
 *  - EINTR is retried everywhere except close(2) (on Linux the descriptor is
 *    gone after an interrupted close);
 *  - a short transfer is continued; a write that makes no progress is taken
 *    as ENOSPC (what the kernel reports on the next attempt).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "common/err.h"
#include "common/os.h"
#include "common/timefmt.h"

/* ---- the table ---- */

static int os_open(const char *path, int flags, mode_t mode)
{
	return open(path, flags, mode);
}

static int os_openat(int dirfd, const char *path, int flags, mode_t mode)
{
	return openat(dirfd, path, flags, mode);
}

/* The real calls: cf_os starts as them, cf_os_real keeps them for tests. */
#define OS_REAL \
{ \
	.open = os_open, \
	.close = close, \
	.read = read, \
	.write = write, \
	.pread = pread, \
	.pwrite = pwrite, \
	.fsync = fsync, \
	.fdatasync = fdatasync, \
	.ftruncate = ftruncate, \
	.fallocate = fallocate, \
	.rename = rename, \
	.unlink = unlink, \
	.mkdir = mkdir, \
	.rmdir = rmdir, \
	.fstat = fstat, \
	.stat = stat, \
	.flock = flock, \
	.lstat = lstat, \
	.openat = os_openat, \
	.fstatat = fstatat, \
	.unlinkat = unlinkat, \
	.renameat2 = renameat2, \
}

const struct cf_os_table cf_os_real = OS_REAL;

struct cf_os_table cf_os = OS_REAL;

#ifdef COFFER_TESTING
int (*cf_os_fault_hook)(const char *op, int fd, const char *path);

static int fault(const char *op, int fd, const char *path)
{
	int (*hook)(const char *, int, const char *) = cf_os_fault_hook;
	return hook ? hook(op, fd, path) : 0;
}
#else
static inline int fault(const char *op, int fd, const char *path)
{
	(void)op;
	(void)fd;
	(void)path;
	return 0;
}
#endif

/* ---- I/O helpers ---- */

int cf_open(int *fd, const char *path, int flags, mode_t mode)
{
	int f;
	do
		f = cf_os.open(path, flags | O_CLOEXEC, mode);
	while (f < 0 && errno == EINTR);
	*fd = f;
	if (f < 0)
		return cf_error_sys("open", path, -1);
	return COFFER_OK;
}

int cf_close(int fd, const char *path)
{
	if (cf_os.close(fd) != 0 && errno != EINTR)
		return cf_error_sys("close", path, -1);
	return COFFER_OK;
}

int cf_pread_full(int fd, const char *path, void *buf, size_t n, uint64_t off)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = cf_os.pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return cf_error_sys("read", path, (int64_t)(off + done));
		}
		if (r == 0)
			return CF_ERROR(COFFER_E_SHORT_READ, CF_OBJ(.file = path, CF_OFF(off)),
					"\"%s\" ends at offset %llu: expected %zu bytes at offset %llu, "
					"got %zu",
					path, (unsigned long long)(off + done), n,
					(unsigned long long)off, done);
		done += (size_t)r;
	}
	return COFFER_OK;
}

int cf_pwrite_full(int fd, const char *path, const void *buf, size_t n, uint64_t off)
{
	int e = fault("pwrite", fd, path);
	if (e) {
		errno = e;
		return cf_error_sys("write", path, (int64_t)off);
	}
	size_t done = 0;
	while (done < n) {
		ssize_t r = cf_os.pwrite(fd, (const char *)buf + done, n - done, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = ENOSPC;
			return cf_error_sys("write", path, (int64_t)(off + done));
		}
		done += (size_t)r;
	}
	return COFFER_OK;
}

int cf_write_full(int fd, const char *path, const void *buf, size_t n)
{
	int e = fault("write", fd, path);
	if (e) {
		errno = e;
		return cf_error_sys("write", path, -1);
	}
	size_t done = 0;
	while (done < n) {
		ssize_t r = cf_os.write(fd, (const char *)buf + done, n - done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = ENOSPC;
			return cf_error_sys("write", path, -1);
		}
		done += (size_t)r;
	}
	return COFFER_OK;
}

static int sync_fd(int fd, const char *path, bool data_only)
{
	const char *op = data_only ? "fdatasync" : "fsync";
	int e = fault(op, fd, path), r;
	if (e) {
		errno = e;
		return cf_error_sys(op, path, -1);
	}
	do
		r = data_only ? cf_os.fdatasync(fd) : cf_os.fsync(fd);
	while (r != 0 && errno == EINTR);
	if (r != 0)
		return cf_error_sys(op, path, -1);
	return COFFER_OK;
}

int cf_fsync(int fd, const char *path)
{
	return sync_fd(fd, path, false);
}

int cf_fdatasync(int fd, const char *path)
{
	return sync_fd(fd, path, true);
}

int cf_fsync_dir(const char *dir)
{
	int fd, rc;
	CF_RET(cf_open(&fd, dir, O_RDONLY | O_DIRECTORY, 0));
	rc = cf_fsync(fd, dir);
	/* Some file systems cannot fsync a directory; nothing to make durable. */
	if (rc != COFFER_OK && (coffer_error_last()->sys_errno == EINVAL ||
				coffer_error_last()->sys_errno == EBADF)) {
		coffer_error_clear();
		rc = COFFER_OK;
	}
	cf_os.close(fd);
	return rc;
}

int cf_path_join(char *out, size_t cap, const char *a, const char *b)
{
	size_t la = strlen(a);
	const char *sep = (la == 0 || a[la - 1] == '/') ? "" : "/";
	int n = snprintf(out, cap, "%s%s%s", a, sep, b);
	if (n < 0 || (size_t)n >= cap)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, CF_OBJ(.file = a),
				"the path \"%s%s%s\" is longer than %zu bytes", a, sep, b, cap - 1);
	return COFFER_OK;
}

int cf_path_dirname(char *out, size_t cap, const char *path)
{
	const char *slash = strrchr(path, '/'), *src = path;
	size_t n = slash == NULL ? 0 : (size_t)(slash - path);
	if (slash == NULL || slash == path) {
		src = slash == NULL ? "." : "/";
		n = 1;
	}
	if (n >= cap)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, CF_OBJ(.file = path),
				"the directory of \"%s\" is longer than %zu bytes", path, cap - 1);
	memcpy(out, src, n);
	out[n] = '\0';
	return COFFER_OK;
}

int cf_mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);
	if (len == 0 || len >= sizeof buf)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, CF_OBJ(.file = path),
				"cannot create directory \"%s\": the path is empty or longer than %zu bytes",
				path, sizeof buf - 1);
	memcpy(buf, path, len + 1);
	while (len > 1 && buf[len - 1] == '/')
		buf[--len] = '\0';
	/* Create each component in turn; i is the end of the current prefix. */
	for (size_t i = 1; i <= len; i++) {
		if (i < len && buf[i] != '/')
			continue;
		if (i < len && buf[i - 1] == '/')
			continue; /* "a//b" */
		char saved = buf[i];
		buf[i] = '\0';
		if (cf_os.mkdir(buf, mode) == 0) {
			/* Make the new entry durable in its parent. */
			char parent[PATH_MAX];
			CF_RET(cf_path_dirname(parent, sizeof parent, buf));
			CF_RET(cf_fsync_dir(parent));
		} else if (errno == EEXIST) {
			struct stat st;
			if (cf_os.stat(buf, &st) != 0)
				return cf_error_sys("stat", buf, -1);
			if (!S_ISDIR(st.st_mode))
				return CF_ERROR(COFFER_E_NOT_A_DIRECTORY, CF_OBJ(.file = buf),
						"cannot create directory \"%s\": \"%s\" exists and is not "
						"a directory",
						path, buf);
		} else {
			return cf_error_sys("create directory", buf, -1);
		}
		buf[i] = saved;
	}
	return COFFER_OK;
}

/* Rename FROM to TO and fsync the directories involved. */
static int rename_synced(const char *from, const char *to)
{
	char dto[PATH_MAX], dfrom[PATH_MAX];
	CF_RET(cf_path_dirname(dto, sizeof dto, to));
	CF_RET(cf_path_dirname(dfrom, sizeof dfrom, from));
	if (cf_os.rename(from, to) != 0) {
		int e = errno;
		CF_ERROR(coffer_code_from_errno(e), CF_OBJ(.file = to, .sys_errno = e),
			 "could not rename \"%s\" to \"%s\": %s", from, to, strerror(e));
		return coffer_error_last()->code;
	}
	CF_RET(cf_fsync_dir(dto));
	if (strcmp(dto, dfrom) != 0)
		CF_RET(cf_fsync_dir(dfrom));
	return COFFER_OK;
}

int cf_rename_noreplace(const char *from, const char *to)
{
	int e;
	if (cf_os.renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return COFFER_OK;
	e = errno;
	if (e == EINVAL || e == ENOSYS) {
		struct stat st;
		if (cf_os.lstat(to, &st) == 0)
			e = EEXIST;
		else if (errno != ENOENT)
			e = errno;
		else if (cf_os.rename(from, to) == 0)
			return COFFER_OK;
		else
			e = errno;
	}
	if (e == EEXIST)
		return CF_ERROR(COFFER_E_EXISTS, CF_OBJ(.file = to, .sys_errno = e),
				"could not rename \"%s\" to \"%s\": \"%s\" exists", from, to, to);
	return CF_ERROR(coffer_code_from_errno(e), CF_OBJ(.file = to, .sys_errno = e),
			"could not rename \"%s\" to \"%s\": %s", from, to, strerror(e));
}

int cf_durable_rename(const char *from, const char *to)
{
	int fd, rc;
	CF_RET(cf_open(&fd, from, O_RDONLY, 0));
	rc = cf_fsync(fd, from);
	cf_os.close(fd);
	CF_RET(rc);
	return rename_synced(from, to);
}

int cf_durable_write_file(const char *path, const void *data, size_t n, mode_t mode)
{
	char tmp[PATH_MAX];
	int fd = -1, rc;
	if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, CF_OBJ(.file = path),
				"the path \"%s.tmp\" is longer than %zu bytes", path, sizeof tmp - 1);
	CF_GO(rc, cf_open(&fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode));
	CF_GO(rc, cf_write_full(fd, tmp, data, n));
	CF_GO(rc, cf_fsync(fd, tmp));
	rc = cf_close(fd, tmp);
	fd = -1;
	CF_GO(rc, rc);
	CF_GO(rc, rename_synced(tmp, path));
	return COFFER_OK;
err:
	if (fd >= 0)
		cf_os.close(fd);
	cf_os.unlink(tmp); /* gone already if the rename happened */
	return rc;
}

/* ---- the data directory lock ---- */

struct cf_dirlock {
	int fd;
	char path[];
};

/* Keep printable ASCII of SRC (up to a newline) in DST. */
static void printable_line(char *dst, size_t cap, const char *src)
{
	size_t n = 0;
	for (; *src && *src != '\n' && n + 1 < cap; src++)
		if (*src >= 0x20 && *src < 0x7f)
			dst[n++] = *src;
	dst[n] = '\0';
}

/* Raise COFFER_E_LOCKED for DIR, naming the holder from its lock file. */
static int locked_error(int fd, const char *dir, const char *path)
{
	char buf[512], who[80] = "", since[64] = "";
	ssize_t r = cf_os.pread(fd, buf, sizeof buf - 1, 0);
	buf[r > 0 ? r : 0] = '\0';
	char *end;
	long pid = strtol(buf, &end, 10);
	if (r > 0 && pid > 0 && *end == '\n') {
		printable_line(who, sizeof who, end + 1);
		char *l3 = strchr(end + 1, '\n');
		if (l3 != NULL)
			printable_line(since, sizeof since, l3 + 1);
		return CF_ERROR(COFFER_E_LOCKED, CF_OBJ(.file = dir),
				"data directory %s is in use by %s (pid %ld)%s%s; its lock is %s", dir,
				who[0] ? who : "another process", pid, since[0] ? " since " : "", since,
				path);
	}
	return CF_ERROR(COFFER_E_LOCKED, CF_OBJ(.file = dir),
			"data directory %s is in use by another process (its lock file %s does not "
			"name it yet)",
			dir, path);
}

int cf_dirlock_acquire(cf_dirlock **out, const char *dir, const char *who)
{
	char path[PATH_MAX], text[256], now[CF_TIME_BUF];
	struct stat st;
	cf_dirlock *lock = NULL;
	int fd = -1, rc;
	*out = NULL;
	CF_RET(cf_path_join(path, sizeof path, dir, "cofferd.lock"));
	if (cf_os.stat(dir, &st) != 0)
		return cf_error_sys("open the data directory", dir, -1);
	if (!S_ISDIR(st.st_mode))
		return CF_ERROR(COFFER_E_NOT_A_DIRECTORY, CF_OBJ(.file = dir),
				"data directory %s is not a directory", dir);
	/* O_NOFOLLOW: the lock file is written and truncated, so a symbolic
	 * link planted in its place must not be followed. */
	rc = cf_open(&fd, path, O_RDWR | O_CREAT | O_NOFOLLOW, 0600);
	if (rc && coffer_error_last()->sys_errno == ELOOP)
		rc = CF_ERROR(COFFER_E_PERMISSION, CF_OBJ(.file = path, .sys_errno = ELOOP),
			      "the lock file %s of data directory %s is a symbolic link; Coffer "
			      "does not follow it: remove the link",
			      path, dir);
	CF_GO(rc, rc);
	if (cf_os.flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno == EWOULDBLOCK)
			rc = locked_error(fd, dir, path);
		else
			rc = cf_error_sys("lock", path, -1);
		goto err;
	}
	int n = snprintf(text, sizeof text, "%ld\n%s\n%s\n", (long)getpid(), who ? who : "",
			 cf_time_format(cf_time_now_us(), now, sizeof now));
	if (n < 0 || (size_t)n >= sizeof text)
		n = (int)strlen(text);
	CF_GO(rc, cf_pwrite_full(fd, path, text, (size_t)n, 0));
	if (cf_os.ftruncate(fd, n) != 0) {
		rc = cf_error_sys("truncate", path, n);
		goto err;
	}
	lock = malloc(sizeof *lock + strlen(path) + 1);
	if (lock == NULL) {
		rc = CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = dir), "no memory for the lock of %s", dir);
		goto err;
	}
	lock->fd = fd;
	strcpy(lock->path, path);
	*out = lock;
	return COFFER_OK;
err:
	if (fd >= 0)
		cf_os.close(fd); /* releases the flock if we had it */
	return rc;
}

void cf_dirlock_release(cf_dirlock *lock)
{
	if (lock == NULL)
		return;
	/* An empty lock file says nobody holds the store (if this fails, the
	 * next holder rewrites the file anyway). */
	(void)cf_os.ftruncate(lock->fd, 0);
	cf_os.close(lock->fd);
	free(lock);
}

/* ---- injection points ---- */
#ifdef COFFER_TESTING

#define INJECT_MAX 32
#define INJECT_NAME 64

struct inject_point {
	char name[INJECT_NAME]; /* "" = free slot */
	int err;                /* 0 = disarmed */
	unsigned skip;          /* hits still to let pass */
	unsigned remaining;     /* failures left, when !forever */
	bool forever;
	unsigned fired;
};

static pthread_mutex_t inject_mu = PTHREAD_MUTEX_INITIALIZER;
static struct inject_point inject_points[INJECT_MAX];
static bool inject_env_loaded;

static struct inject_point *inject_find(const char *name)
{
	for (int i = 0; i < INJECT_MAX; i++)
		if (inject_points[i].name[0] && strcmp(inject_points[i].name, name) == 0)
			return &inject_points[i];
	return NULL;
}

static int inject_arm_locked(const char *name, int err, unsigned skip, unsigned count)
{
	if (name == NULL || name[0] == '\0' || strlen(name) >= INJECT_NAME)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL,
				"injection point name \"%s\" is empty or longer than %d bytes",
				name ? name : "", INJECT_NAME - 1);
	struct inject_point *p = inject_find(name);
	if (p == NULL) {
		if (err == 0)
			return COFFER_OK;
		for (int i = 0; i < INJECT_MAX && p == NULL; i++)
			if (!inject_points[i].name[0])
				p = &inject_points[i];
		if (p == NULL)
			return CF_ERROR(COFFER_E_LIMIT, NULL,
					"cannot arm injection point \"%s\": %d points are armed already",
					name, INJECT_MAX);
	}
	memset(p, 0, sizeof *p);
	if (err == 0)
		return COFFER_OK;
	strcpy(p->name, name);
	p->err = err;
	p->skip = skip;
	p->remaining = count;
	p->forever = count == 0;
	return COFFER_OK;
}

static int errno_by_name(const char *s, int *out)
{
	char *end;
	if (*s >= '0' && *s <= '9') {
		long v = strtol(s, &end, 10);
		if (*end || v <= 0 || v > 4095)
			return -1;
		*out = (int)v;
		return 0;
	}
	for (int e = 1; e < 4096; e++) {
		const char *n = strerrorname_np(e);
		if (n && strcmp(n, s) == 0) {
			*out = e;
			return 0;
		}
	}
	return -1;
}

struct inject_spec {
	char name[INJECT_NAME];
	int err;
	unsigned skip, count;
};

static int parse_uint(const char *s, unsigned *out)
{
	char *end;
	if (*s < '0' || *s > '9')
		return -1;
	unsigned long v = strtoul(s, &end, 10);
	if (*end || v > 1000000000ul)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static int inject_parse_locked(const char *spec)
{
	struct inject_spec specs[INJECT_MAX];
	int n = 0;
	char entry[256];
	const char *p = spec;
	while (*p) {
		size_t len = strcspn(p, ",");
		if (len == 0) {
			p++;
			continue;
		}
		if (len >= sizeof entry || n >= INJECT_MAX)
			return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL,
					"COFFER_INJECT entry \"%.*s\" is too long or there are more than %d",
					(int)len, p, INJECT_MAX);
		memcpy(entry, p, len);
		entry[len] = '\0';
		p += len;
		/* Split at ':' by hand (strtok would merge empty fields). */
		char *fields[4] = {entry, NULL, NULL, NULL};
		int nf = 1;
		for (char *c = entry; *c; c++)
			if (*c == ':') {
				*c = '\0';
				if (nf == 4) {
					nf = 5;
					break;
				}
				fields[nf++] = c + 1;
			}
		struct inject_spec *s = &specs[n];
		memset(s, 0, sizeof *s);
		if (nf < 2 || nf > 4 || !fields[0][0] || strlen(fields[0]) >= INJECT_NAME ||
		    errno_by_name(fields[1], &s->err) != 0 ||
		    (nf >= 3 && parse_uint(fields[2], &s->skip) != 0) ||
		    (nf >= 4 && parse_uint(fields[3], &s->count) != 0))
			return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL,
					"COFFER_INJECT entry \"%.*s\" is not NAME:ERRNO[:SKIP[:COUNT]] "
					"(ERRNO a name such as ENOSPC or a number)",
					(int)len, p - len);
		strcpy(s->name, fields[0]);
		n++;
	}
	for (int i = 0; i < n; i++)
		CF_RET(inject_arm_locked(specs[i].name, specs[i].err, specs[i].skip, specs[i].count));
	return COFFER_OK;
}

static void inject_load_env_locked(void)
{
	if (inject_env_loaded)
		return;
	inject_env_loaded = true;
	const char *spec = getenv("COFFER_INJECT");
	if (spec == NULL || *spec == '\0')
		return;
	int rc = inject_parse_locked(spec);
	if (rc != COFFER_OK) {
		const coffer_error *e = coffer_error_last();
		fprintf(stderr, "%s: warning: %s (%s); no injection point armed from it\n",
			program_invocation_short_name, e->message, coffer_code_name(rc));
		coffer_error_clear();
	}
}

int cf_inject(const char *name)
{
	int err = 0;
	pthread_mutex_lock(&inject_mu);
	inject_load_env_locked();
	struct inject_point *p = inject_find(name);
	if (p != NULL && p->err != 0) {
		if (p->skip > 0) {
			p->skip--;
		} else if (p->forever || p->remaining > 0) {
			err = p->err;
			p->fired++;
			if (!p->forever)
				p->remaining--;
		}
	}
	pthread_mutex_unlock(&inject_mu);
	return err;
}

int cf_inject_arm(const char *name, int err, unsigned skip, unsigned count)
{
	pthread_mutex_lock(&inject_mu);
	inject_load_env_locked();
	int rc = inject_arm_locked(name, err, skip, count);
	pthread_mutex_unlock(&inject_mu);
	return rc;
}

int cf_inject_parse(const char *spec)
{
	pthread_mutex_lock(&inject_mu);
	inject_load_env_locked();
	int rc = inject_parse_locked(spec);
	pthread_mutex_unlock(&inject_mu);
	return rc;
}

void cf_inject_reset(void)
{
	pthread_mutex_lock(&inject_mu);
	memset(inject_points, 0, sizeof inject_points);
	inject_env_loaded = false;
	pthread_mutex_unlock(&inject_mu);
}

unsigned cf_inject_fired(const char *name)
{
	pthread_mutex_lock(&inject_mu);
	struct inject_point *p = inject_find(name);
	unsigned n = p ? p->fired : 0;
	pthread_mutex_unlock(&inject_mu);
	return n;
}

#endif /* COFFER_TESTING */
