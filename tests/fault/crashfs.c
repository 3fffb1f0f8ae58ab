/*
 * crashfs.c - the crash-simulating file layer (design and limits in
 * crashfs.h).
 *
 * State: one `node` per file name under the root that the engine opened,
 * holding the file's unsynced changes in order (`rec`: what a change
 * overwrote, for the undo, and what it wrote, for the replay); a node is
 * detached (its name cleared, its changes forgotten) when its file is
 * unlinked or renamed over, since later writes through old descriptors go
 * to an inode no name reaches. Descriptors map to nodes (or, for
 * directories, to the directory's path). Pending directory operations are
 * one list in the order they were made.
 *
 * Every real call is made with cf_os_real, under the layer's mutex.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/os.h"
#include "crashfs.h"

#define SECTOR 512u
#define MAX_FD 4096

enum rec_kind {
	R_DATA,     /* a write: DATA[0..len) at off */
	R_TRUNCATE, /* ftruncate or O_TRUNC to new_size (old bytes beyond it saved) */
	R_GROW,     /* fallocate: size at least new_size */
};

struct rec {
	enum rec_kind kind;
	uint64_t off;      /* where OLD goes back (data: the write's offset; truncate: new_size) */
	uint64_t len;      /* data: bytes written */
	uint64_t old_size; /* file size before the change */
	uint64_t new_size; /* truncate/grow */
	uint8_t *old;      /* bytes the change destroyed, OLDLEN of them at OFF */
	uint64_t oldlen;
	uint8_t *data;     /* data: the bytes written */
};

struct node {
	char *path; /* NULL once detached */
	struct rec *recs;
	size_t nrec, cap;
	struct node *next;
};

enum dirop_kind { D_CREATE, D_RENAME, D_UNLINK };

struct dirop {
	enum dirop_kind kind;
	char *path;       /* create, unlink: the file; rename: the new name */
	char *from;       /* rename: the old name */
	int had;          /* rename: a file was replaced; unlink: always 1 */
	uint8_t *saved;   /* its durable contents */
	size_t savedlen;
	struct dirop *next;
};

struct fdent {
	int used;
	int append;
	struct node *node; /* a file */
	char *dir;         /* a directory */
};

static struct {
	pthread_mutex_t mu;
	int installed;
	struct crashfs_config cfg;
	char *root;
	size_t rootlen;
	struct crashfs_stats own, *st;
	struct node *nodes;
	struct dirop *ops, *ops_tail;
	struct fdent fds[MAX_FD];
	uint64_t rng;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER};

#define R cf_os_real

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "crashfs: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL)
		die("out of memory");
	return p;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);
	if (p == NULL)
		die("out of memory");
	return p;
}

static uint64_t rnd(void)
{
	uint64_t z = (S.rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* ---- paths ---- */

static int tracked(const char *path)
{
	if (path == NULL || strncmp(path, S.root, S.rootlen) != 0 ||
	    (path[S.rootlen] != '\0' && path[S.rootlen] != '/'))
		return 0;
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	for (const char *const *ig = S.cfg.ignore; ig && *ig; ig++)
		if (strcmp(base, *ig) == 0)
			return 0;
	return 1;
}

/* Is PATH directly inside DIR? */
static int in_dir(const char *path, const char *dir)
{
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) : 0;
	return n == strlen(dir) && strncmp(path, dir, n) == 0;
}

/* ---- real I/O helpers ---- */

static uint64_t fsize(int fd)
{
	struct stat st;
	if (R.fstat(fd, &st) != 0)
		die("fstat failed: %s", strerror(errno));
	return (uint64_t)st.st_size;
}

static void pread_all(int fd, uint8_t *buf, uint64_t n, uint64_t off)
{
	while (n > 0) {
		ssize_t r = R.pread(fd, buf, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) { /* cannot happen below the size we read */
			memset(buf, 0, n);
			return;
		}
		buf += r;
		off += (uint64_t)r;
		n -= (uint64_t)r;
	}
}

static void pwrite_all(int fd, const uint8_t *buf, uint64_t n, uint64_t off)
{
	while (n > 0) {
		ssize_t r = R.pwrite(fd, buf, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			die("restoring a file failed: %s", strerror(errno));
		buf += r;
		off += (uint64_t)r;
		n -= (uint64_t)r;
	}
}

/* Whole contents of PATH; 0 if it does not exist. */
static int read_whole(const char *path, uint8_t **buf, size_t *len)
{
	int fd = R.open(path, O_RDONLY | O_CLOEXEC, 0);
	*buf = NULL;
	*len = 0;
	if (fd < 0)
		return 0;
	uint64_t n = fsize(fd);
	*buf = xmalloc(n);
	pread_all(fd, *buf, n, 0);
	*len = n;
	R.close(fd);
	return 1;
}

static void write_whole(const char *path, const uint8_t *buf, size_t len)
{
	int fd = R.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		die("cannot restore %s", path);
	pwrite_all(fd, buf, len, 0);
	R.close(fd);
}

/* ---- nodes and records ---- */

static struct node *node_find(const char *path)
{
	for (struct node *n = S.nodes; n; n = n->next)
		if (n->path && strcmp(n->path, path) == 0)
			return n;
	return NULL;
}

static struct node *node_new(const char *path)
{
	struct node *n = calloc(1, sizeof *n);
	if (n == NULL)
		die("out of memory");
	n->path = xstrdup(path);
	n->next = S.nodes;
	S.nodes = n;
	return n;
}

static struct node *node_get(const char *path)
{
	struct node *n = node_find(path);
	return n ? n : node_new(path);
}

static void recs_clear(struct node *n)
{
	for (size_t i = 0; i < n->nrec; i++) {
		free(n->recs[i].old);
		free(n->recs[i].data);
	}
	n->nrec = 0;
}

static void node_detach(struct node *n)
{
	recs_clear(n);
	free(n->path);
	n->path = NULL;
}

static struct rec *rec_add(struct node *n)
{
	if (n->nrec == n->cap) {
		size_t ncap = n->cap ? n->cap * 2 : 16;
		struct rec *r = realloc(n->recs, ncap * sizeof *r);
		if (r == NULL)
			die("out of memory");
		n->recs = r;
		n->cap = ncap;
	}
	struct rec *r = &n->recs[n->nrec++];
	memset(r, 0, sizeof *r);
	return r;
}

static void rec_pop(struct node *n)
{
	struct rec *r = &n->recs[--n->nrec];
	free(r->old);
	free(r->data);
}

/* Save the OLDLEN bytes at OFF of FD in R. */
static void rec_save_old(struct rec *r, int fd, uint64_t off, uint64_t oldlen)
{
	r->off = off;
	r->oldlen = oldlen;
	r->old = xmalloc(oldlen);
	pread_all(fd, r->old, oldlen, off);
}

/* The durable contents of PATH: what it holds with its unsynced changes
 * undone. *had = 0 if it does not exist. */
static void durable_contents(const char *path, uint8_t **out, size_t *outlen, int *had)
{
	uint8_t *buf;
	size_t len;
	*had = read_whole(path, &buf, &len);
	struct node *n = *had ? node_find(path) : NULL;
	for (size_t i = n ? n->nrec : 0; i-- > 0;) {
		const struct rec *r = &n->recs[i];
		if (r->old_size != len) {
			uint8_t *nb = realloc(buf, r->old_size ? r->old_size : 1);
			if (nb == NULL)
				die("out of memory");
			buf = nb;
			if (r->old_size > len)
				memset(buf + len, 0, r->old_size - len);
			len = r->old_size;
		}
		if (r->oldlen)
			memcpy(buf + r->off, r->old, r->oldlen);
	}
	*out = buf;
	*outlen = len;
}

/* ---- directory operations ---- */

static void dirop_add(enum dirop_kind kind, const char *path, const char *from, int had,
		      uint8_t *saved, size_t savedlen)
{
	struct dirop *d = calloc(1, sizeof *d);
	if (d == NULL)
		die("out of memory");
	d->kind = kind;
	d->path = xstrdup(path);
	d->from = from ? xstrdup(from) : NULL;
	d->had = had;
	d->saved = saved;
	d->savedlen = savedlen;
	if (S.ops_tail)
		S.ops_tail->next = d;
	else
		S.ops = d;
	S.ops_tail = d;
}

static void dirop_free(struct dirop *d)
{
	free(d->path);
	free(d->from);
	free(d->saved);
	free(d);
}

/* fsync of DIR: the journal commits every operation up to the last in DIR. */
static void dir_commit(const char *dir)
{
	struct dirop *last = NULL;
	for (struct dirop *d = S.ops; d; d = d->next)
		if (in_dir(d->path, dir) || (d->from && in_dir(d->from, dir)))
			last = d;
	if (last == NULL)
		return;
	struct dirop *d = S.ops, *stop = last->next;
	while (d != stop) {
		struct dirop *next = d->next;
		dirop_free(d);
		d = next;
	}
	S.ops = stop;
	if (stop == NULL)
		S.ops_tail = NULL;
}

static void dirop_undo(const struct dirop *d)
{
	switch (d->kind) {
	case D_CREATE:
		R.unlink(d->path);
		break;
	case D_RENAME:
		R.rename(d->path, d->from);
		if (d->had)
			write_whole(d->path, d->saved, d->savedlen);
		break;
	case D_UNLINK:
		if (d->had)
			write_whole(d->path, d->saved, d->savedlen);
		break;
	}
}

/* ---- the crash ---- */

static void set_str(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}

/* Put N's file back to its durable contents, then replay each unsynced
 * change with a random fate. */
static void crash_node(struct node *n)
{
	int fd = R.open(n->path, O_RDWR | O_CLOEXEC, 0);
	if (fd < 0)
		die("cannot open %s at the crash", n->path);
	for (size_t i = n->nrec; i-- > 0;) {
		const struct rec *r = &n->recs[i];
		if (R.ftruncate(fd, (off_t)r->old_size) != 0)
			die("ftruncate failed at the crash: %s", strerror(errno));
		if (r->oldlen)
			pwrite_all(fd, r->old, r->oldlen, r->off);
	}
	for (size_t i = 0; i < n->nrec; i++) {
		const struct rec *r = &n->recs[i];
		S.st->pending++;
		if (r->kind != R_DATA) { /* a size change: kept or dropped */
			if (rnd() % 2)
				continue;
			uint64_t size = fsize(fd);
			if (r->kind == R_TRUNCATE || size < r->new_size)
				if (R.ftruncate(fd, (off_t)r->new_size) != 0)
					die("ftruncate failed at the crash: %s", strerror(errno));
			continue;
		}
		/* Sector boundaries strictly inside the write: where it can tear. */
		uint64_t first = (r->off / SECTOR + 1) * SECTOR;
		uint64_t end = r->off + r->len;
		uint64_t nb = first < end ? (end - 1) / SECTOR - r->off / SECTOR : 0;
		uint64_t fate = rnd() % (nb ? 3 : 2), keep = r->len;
		if (fate == 1) {
			S.st->dropped++;
			continue;
		}
		if (fate == 2) {
			keep = first + (rnd() % nb) * SECTOR - r->off;
			S.st->torn++;
		} else {
			S.st->kept++;
		}
		pwrite_all(fd, r->data, keep, r->off);
	}
	R.close(fd);
}

static void crash(const char *op, const char *path) __attribute__((noreturn));
static void crash(const char *op, const char *path)
{
	S.st->crashed = strstr(op, "sync") ? 1 : 2;
	set_str(S.st->crash_op, sizeof S.st->crash_op, op);
	set_str(S.st->crash_path, sizeof S.st->crash_path, path);
	for (struct node *n = S.nodes; n; n = n->next)
		if (n->path && n->nrec)
			crash_node(n);
	size_t nops = 0;
	for (struct dirop *d = S.ops; d; d = d->next)
		nops++;
	if (nops) {
		struct dirop **v = xmalloc(nops * sizeof *v);
		size_t i = 0;
		for (struct dirop *d = S.ops; d; d = d->next)
			v[i++] = d;
		size_t keep = (size_t)(rnd() % (nops + 1));
		for (i = nops; i-- > keep;)
			dirop_undo(v[i]);
		S.st->dirops_kept += keep;
		S.st->dirops_undone += nops - keep;
		free(v);
	}
	_exit(S.cfg.exit_code);
}

void crashfs_crash_now(const char *op, const char *path)
{
	pthread_mutex_lock(&S.mu);
	crash(op, path);
}

/* ---- the hooks ---- */

static struct fdent *fdent(int fd)
{
	if (fd < 0)
		return NULL;
	if (fd >= MAX_FD)
		die("descriptor %d beyond the layer's table", fd);
	return S.fds[fd].used ? &S.fds[fd] : NULL;
}

static void fd_track(int fd, struct node *n, const char *dir, int append)
{
	if (fd >= MAX_FD)
		die("descriptor %d beyond the layer's table", fd);
	free(S.fds[fd].dir);
	S.fds[fd] = (struct fdent){
		.used = 1, .append = append, .node = n, .dir = dir ? xstrdup(dir) : NULL};
}

static int h_open(const char *path, int flags, mode_t mode)
{
	if (!tracked(path))
		return R.open(path, flags, mode);
	pthread_mutex_lock(&S.mu);
	struct stat st;
	int existed = R.stat(path, &st) == 0, fd, e;
	if (flags & O_DIRECTORY) {
		fd = R.open(path, flags, mode);
		e = errno;
		if (fd >= 0)
			fd_track(fd, NULL, path, 0);
		pthread_mutex_unlock(&S.mu);
		errno = e;
		return fd;
	}
	struct node *n = NULL;
	int truncating = existed && S_ISREG(st.st_mode) && (flags & O_TRUNC) && st.st_size > 0 &&
			 (flags & O_ACCMODE) != O_RDONLY;
	if (truncating) {
		n = node_get(path);
		int rfd = R.open(path, O_RDONLY | O_CLOEXEC, 0);
		if (rfd < 0)
			die("cannot read %s before truncating it", path);
		struct rec *r = rec_add(n);
		r->kind = R_TRUNCATE;
		r->old_size = (uint64_t)st.st_size;
		r->new_size = 0;
		rec_save_old(r, rfd, 0, (uint64_t)st.st_size);
		R.close(rfd);
	}
	fd = R.open(path, flags, mode);
	e = errno;
	if (fd >= 0) {
		if (!existed) {
			struct node *stale = node_find(path);
			if (stale)
				node_detach(stale);
			n = node_new(path);
			dirop_add(D_CREATE, path, NULL, 0, NULL, 0);
		} else if (n == NULL) {
			n = node_get(path);
		}
		fd_track(fd, n, NULL, (flags & O_APPEND) != 0);
	} else if (truncating) {
		rec_pop(n);
	}
	pthread_mutex_unlock(&S.mu);
	errno = e;
	return fd;
}

static int h_close(int fd)
{
	pthread_mutex_lock(&S.mu);
	if (fd >= 0 && fd < MAX_FD && S.fds[fd].used) {
		free(S.fds[fd].dir);
		memset(&S.fds[fd], 0, sizeof S.fds[fd]);
	}
	int r = R.close(fd);
	int e = errno;
	pthread_mutex_unlock(&S.mu);
	errno = e;
	return r;
}

/* A write of N bytes at OFF through F (mu held), recorded for the crash;
 * USE_WRITE: write(2) at the file position (OFF is where that is). */
static ssize_t write_at(struct fdent *f, int fd, const void *buf, size_t n, uint64_t off,
			int use_write)
{
	struct node *node = f->node;
	if (node == NULL || node->path == NULL || n == 0) /* a directory, or a detached file */
		return use_write ? R.write(fd, buf, n) : R.pwrite(fd, buf, n, (off_t)off);
	uint64_t size = fsize(fd);
	struct rec *r = rec_add(node);
	r->kind = R_DATA;
	r->old_size = size;
	rec_save_old(r, fd, off, off < size ? (size - off < n ? size - off : n) : 0);
	ssize_t w = use_write ? R.write(fd, buf, n) : R.pwrite(fd, buf, n, (off_t)off);
	int e = errno;
	if (w <= 0) {
		rec_pop(node);
	} else {
		r->len = (uint64_t)w;
		r->data = xmalloc((size_t)w);
		memcpy(r->data, buf, (size_t)w);
	}
	errno = e;
	return w;
}

static ssize_t h_pwrite(int fd, const void *buf, size_t n, off_t off)
{
	pthread_mutex_lock(&S.mu);
	struct fdent *f = fdent(fd);
	if (f == NULL) {
		pthread_mutex_unlock(&S.mu);
		return R.pwrite(fd, buf, n, off);
	}
	ssize_t w = write_at(f, fd, buf, n, (uint64_t)off, 0);
	int e = errno;
	if (++S.st->writes == S.cfg.crash_write)
		crash("pwrite", f->node && f->node->path ? f->node->path : "?");
	pthread_mutex_unlock(&S.mu);
	errno = e;
	return w;
}

static ssize_t h_write(int fd, const void *buf, size_t n)
{
	pthread_mutex_lock(&S.mu);
	struct fdent *f = fdent(fd);
	if (f == NULL) {
		pthread_mutex_unlock(&S.mu);
		return R.write(fd, buf, n);
	}
	uint64_t off = f->append ? fsize(fd) : (uint64_t)lseek(fd, 0, SEEK_CUR);
	ssize_t w = write_at(f, fd, buf, n, off, 1);
	int e = errno;
	if (++S.st->writes == S.cfg.crash_write)
		crash("write", f->node && f->node->path ? f->node->path : "?");
	pthread_mutex_unlock(&S.mu);
	errno = e;
	return w;
}

static int do_sync(int fd, int data_only)
{
	pthread_mutex_lock(&S.mu);
	struct fdent *f = fdent(fd);
	if (f == NULL) {
		pthread_mutex_unlock(&S.mu);
		return data_only ? R.fdatasync(fd) : R.fsync(fd);
	}
	const char *op = f->dir ? "dirsync" : data_only ? "fdatasync" : "fsync";
	if (++S.st->syncs == S.cfg.crash_sync)
		crash(op, f->dir ? f->dir : f->node && f->node->path ? f->node->path : "?");
	if (f->dir)
		dir_commit(f->dir);
	else if (f->node)
		recs_clear(f->node);
	int r = 0, e = 0;
	if (S.cfg.real_sync) {
		r = data_only ? R.fdatasync(fd) : R.fsync(fd);
		e = errno;
	}
	pthread_mutex_unlock(&S.mu);
	errno = e;
	return r;
}

static int h_fsync(int fd)
{
	return do_sync(fd, 0);
}

static int h_fdatasync(int fd)
{
	return do_sync(fd, 1);
}

static int h_ftruncate(int fd, off_t len)
{
	pthread_mutex_lock(&S.mu);
	struct fdent *f = fdent(fd);
	struct node *n = f ? f->node : NULL;
	if (n == NULL || n->path == NULL) {
		pthread_mutex_unlock(&S.mu);
		return R.ftruncate(fd, len);
	}
	uint64_t size = fsize(fd), nl = (uint64_t)len;
	struct rec *r = rec_add(n);
	r->kind = R_TRUNCATE;
	r->old_size = size;
	r->new_size = nl;
	rec_save_old(r, fd, nl, nl < size ? size - nl : 0);
	int rc = R.ftruncate(fd, len), e = errno;
	if (rc != 0)
		rec_pop(n);
	pthread_mutex_unlock(&S.mu);
	errno = e;
	return rc;
}

static int h_fallocate(int fd, int mode, off_t off, off_t len)
{
	pthread_mutex_lock(&S.mu);
	struct fdent *f = fdent(fd);
	struct node *n = f ? f->node : NULL;
	if (n == NULL || n->path == NULL) {
		pthread_mutex_unlock(&S.mu);
		return R.fallocate(fd, mode, off, len);
	}
	if (mode != 0)
		die("fallocate mode other than 0 is not modelled (%s)", n->path);
	uint64_t size = fsize(fd), want = (uint64_t)off + (uint64_t)len;
	struct rec *r = rec_add(n);
	r->kind = R_GROW;
	r->old_size = size;
	r->new_size = want > size ? want : size;
	int rc = R.fallocate(fd, mode, off, len), e = errno;
	if (rc != 0)
		rec_pop(n);
	pthread_mutex_unlock(&S.mu);
	errno = e;
	return rc;
}

static int h_rename(const char *from, const char *to)
{
	if (!tracked(from) && !tracked(to))
		return R.rename(from, to);
	pthread_mutex_lock(&S.mu);
	uint8_t *saved;
	size_t savedlen;
	int had;
	durable_contents(to, &saved, &savedlen, &had);
	int rc = R.rename(from, to), e = errno;
	if (rc == 0 && strcmp(from, to) != 0) {
		struct node *old = node_find(to), *n = node_find(from);
		if (old)
			node_detach(old);
		if (n) {
			free(n->path);
			n->path = xstrdup(to);
		} else {
			node_new(to);
		}
		dirop_add(D_RENAME, to, from, had, saved, savedlen);
	} else {
		free(saved);
	}
	pthread_mutex_unlock(&S.mu);
	errno = e;
	return rc;
}

static int h_unlink(const char *path)
{
	if (!tracked(path))
		return R.unlink(path);
	pthread_mutex_lock(&S.mu);
	uint8_t *saved;
	size_t savedlen;
	int had;
	durable_contents(path, &saved, &savedlen, &had);
	int rc = R.unlink(path), e = errno;
	if (rc == 0) {
		struct node *n = node_find(path);
		if (n)
			node_detach(n);
		dirop_add(D_UNLINK, path, NULL, had, saved, savedlen);
	} else {
		free(saved);
	}
	pthread_mutex_unlock(&S.mu);
	errno = e;
	return rc;
}

/* ---- install ---- */

int crashfs_install(const struct crashfs_config *c)
{
	if (S.installed || c == NULL || c->root == NULL || c->root[0] != '/')
		return -1;
	S.cfg = *c;
	S.root = xstrdup(c->root);
	S.rootlen = strlen(S.root);
	while (S.rootlen > 1 && S.root[S.rootlen - 1] == '/')
		S.root[--S.rootlen] = '\0';
	S.st = c->stats ? c->stats : &S.own;
	memset(S.st, 0, sizeof *S.st);
	S.rng = c->seed;
	S.nodes = NULL;
	S.ops = S.ops_tail = NULL;
	memset(S.fds, 0, sizeof S.fds);
	cf_os.open = h_open;
	cf_os.close = h_close;
	cf_os.write = h_write;
	cf_os.pwrite = h_pwrite;
	cf_os.fsync = h_fsync;
	cf_os.fdatasync = h_fdatasync;
	cf_os.ftruncate = h_ftruncate;
	cf_os.fallocate = h_fallocate;
	cf_os.rename = h_rename;
	cf_os.unlink = h_unlink;
	S.installed = 1;
	return 0;
}

void crashfs_uninstall(void)
{
	if (!S.installed)
		return;
	cf_os = cf_os_real;
	pthread_mutex_lock(&S.mu);
	while (S.nodes) {
		struct node *n = S.nodes;
		S.nodes = n->next;
		recs_clear(n);
		free(n->recs);
		free(n->path);
		free(n);
	}
	while (S.ops) {
		struct dirop *d = S.ops;
		S.ops = d->next;
		dirop_free(d);
	}
	S.ops_tail = NULL;
	for (int i = 0; i < MAX_FD; i++)
		free(S.fds[i].dir);
	memset(S.fds, 0, sizeof S.fds);
	free(S.root);
	S.root = NULL;
	S.installed = 0;
	pthread_mutex_unlock(&S.mu);
}
