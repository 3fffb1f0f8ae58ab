/*
 * ar_out.c - the output filter: where a set's bytes go, and how it becomes
 * visible only when complete (PostgreSQL's durable_rename, libgit2's filebuf).
 *
 *   '-'         standard output (fd 1): streamed, never seeks; fsynced if it
 *               is a regular file; a failed set shows as a stream without
 *               its trailer (COFFER_E_ARCHIVE_TRUNCATED for the reader).
 *   PATH        PATH.tmp-XXXXXXXX (0600, O_EXCL), fsynced, closed, renamed to
 *               PATH, parent directory fsynced.
 *   PATH (dir)  directory PATH.tmp-XXXXXXXX (0700) holding NAME.blocks per
 *               stored file (each fsynced when its file ends), log/, and
 *               MANIFEST; the directories fsynced, then renamed to PATH.
 *
 * PATH must not exist at the start (COFFER_E_EXISTS; lstat: a symbolic
 * link, dangling or not, counts) and is checked again just before the
 * rename, which is renameat2(RENAME_NOREPLACE) (cf_rename_noreplace): a
 * file, link or empty directory that appears at PATH is never replaced.
 * Members are created O_EXCL | O_NOFOLLOW. On failure ar_out_discard()
 * removes the temporary at once (ar_remove_tree: never through a link).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "backup/ar_int.h"
#include "common/err.h"
#include "common/os.h"

struct ar_out {
	char *path;   /* as given */
	char *tmp;    /* the temporary file or directory; NULL for stdout */
	int dir, is_stdout, log_made;
	int fd;       /* the file being written, -1 if none */
	char cur[PATH_MAX];
	uint64_t off, bytes;
	int regular;  /* fd is a regular file: write-behind */
	int prealloc; /* ... on a file system where preallocation helps */
	uint64_t wb;  /* offset from which written bytes have not been handed to writeback */
	uint64_t reserved; /* offset up to which space was preallocated */
	int discarded, committed;
};

/* Write-behind: every AR_WB_CHUNK bytes written, start their writeback
 * (sync_file_range(SYNC_FILE_RANGE_WRITE), which does not wait), so the
 * final fsync does not flush a whole set in one burst. */
#define AR_WB_CHUNK (32u << 20)

const char *ar_out_path(const struct ar_out *o)
{
	return o->path;
}

const char *ar_out_current(const struct ar_out *o)
{
	return o->cur;
}

uint64_t ar_out_offset(const struct ar_out *o)
{
	return o->off;
}

uint64_t ar_out_bytes(const struct ar_out *o)
{
	return __atomic_load_n(&o->bytes, __ATOMIC_RELAXED); /* read while the writer thread writes */
}

int ar_prealloc_helps(int fd)
{
	struct statfs sf;
	return fstatfs(fd, &sf) == 0 && sf.f_type != TMPFS_MAGIC && sf.f_type != RAMFS_MAGIC;
}

/* Note the current file's descriptor: regular file or not. */
static void out_fd_set(struct ar_out *o)
{
	struct stat st;
	o->regular = cf_os.fstat(o->fd, &st) == 0 && S_ISREG(st.st_mode);
	o->prealloc = o->regular && ar_prealloc_helps(o->fd);
	o->wb = o->off;
	o->reserved = 0;
}

void ar_out_reserve(struct ar_out *o, uint64_t n)
{
	/* Not standard output: it may be a file opened for appending. */
	if (o->fd < 0 || o->is_stdout || !o->prealloc || n == 0 || o->off + n <= o->reserved)
		return;
	int saved = errno;
	if (cf_os.fallocate(o->fd, FALLOC_FL_KEEP_SIZE, (off_t)o->off, (off_t)n) == 0)
		o->reserved = o->off + n;
	errno = saved; /* a hint: a full disk shows in the writes, with their detail */
}

/* PATH must not be there as anything: lstat, so that a symbolic link (even
 * a dangling one) counts, rather than being replaced by the rename. */
static int must_not_exist(const char *path)
{
	struct stat st;
	if (cf_os.lstat(path, &st) == 0)
		return CF_ERROR(COFFER_E_EXISTS, CF_OBJ(.file = path),
				"the backup set \"%s\" already exists%s; choose another name or remove it",
				path, S_ISLNK(st.st_mode) ? " (as a symbolic link)" : "");
	if (errno != ENOENT)
		return cf_error_sys("stat", path, -1);
	return COFFER_OK;
}

int ar_out_write(struct ar_out *o, const void *p, size_t n)
{
	if (o->fd < 0)
		return CF_ERROR(COFFER_E_INTERNAL, NULL, "backup set output written while no file is open");
	if (cf_write_full(o->fd, o->cur, p, n) != COFFER_OK) {
		/* Name the offset in the output (of the record being written). */
		const coffer_error *e = coffer_error_last();
		if (e->sys_errno == 0 || e->offset >= 0)
			return e->code;
		errno = e->sys_errno;
		return cf_error_sys("write", o->cur, (int64_t)o->off);
	}
	o->off += n;
	__atomic_store_n(&o->bytes, o->bytes + n, __ATOMIC_RELAXED);
	if (o->regular && o->off - o->wb >= AR_WB_CHUNK) {
		/* Best effort: an I/O error shows again at the fsync. */
		sync_file_range(o->fd, (off_t)o->wb, (off_t)(o->off - o->wb), SYNC_FILE_RANGE_WRITE);
		o->wb = o->off;
	}
	return COFFER_OK;
}

static int write_header(struct ar_out *o, uint32_t kind)
{
	uint8_t h[AR_HDR_SIZE];
	ar_hdr_encode(h, kind);
	return ar_out_write(o, h, sizeof h);
}

int ar_out_open(struct ar_out **out, const char *path, int dir)
{
	int rc;
	int is_stdout = strcmp(path, "-") == 0;
	if (is_stdout && dir)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL,
				"a directory backup set cannot be written to standard output");
	if (!is_stdout)
		CF_RET(must_not_exist(path));
	struct ar_out *o = calloc(1, sizeof *o);
	if (o == NULL || (o->path = strdup(path)) == NULL) {
		free(o);
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the backup output");
	}
	o->fd = -1;
	o->dir = dir;
	o->is_stdout = is_stdout;
	if (is_stdout) {
		o->fd = 1;
		out_fd_set(o);
		snprintf(o->cur, sizeof o->cur, "standard output");
		CF_GO(rc, write_header(o, AR_H_STREAM));
		*out = o;
		return COFFER_OK;
	}
	uint32_t rnd;
	if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
		rc = CF_ERROR(COFFER_E_IO, CF_OBJ(.sys_errno = errno), "no random bytes for a temporary name");
		goto err;
	}
	size_t n = strlen(path) + 16;
	if ((o->tmp = malloc(n)) == NULL) {
		rc = CF_ERROR(COFFER_E_NOMEM, NULL, "no memory");
		goto err;
	}
	snprintf(o->tmp, n, "%s.tmp-%08x", path, rnd);
	if (dir) {
		if (cf_os.mkdir(o->tmp, 0700) != 0) {
			rc = cf_error_sys("create directory", o->tmp, -1);
			free(o->tmp);
			o->tmp = NULL; /* not ours to remove */
			goto err;
		}
	} else {
		snprintf(o->cur, sizeof o->cur, "%s", o->tmp);
		rc = cf_open(&o->fd, o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
		if (rc) {
			free(o->tmp);
			o->tmp = NULL;
			goto err;
		}
		out_fd_set(o);
		CF_GO(rc, write_header(o, AR_H_STREAM));
	}
	*out = o;
	return COFFER_OK;
err:
	ar_out_free(o);
	return rc;
}

/* Directory sets: open TMP/NAME (creating log/ once), write its header. */
static int open_member(struct ar_out *o, const char *name, uint32_t kind)
{
	if (strncmp(name, "log/", 4) == 0 && !o->log_made) {
		char d[PATH_MAX];
		CF_RET(cf_path_join(d, sizeof d, o->tmp, "log"));
		if (cf_os.mkdir(d, 0700) != 0) /* EEXIST too: log/ is made once */
			return cf_error_sys("create directory", d, -1);
		o->log_made = 1;
	}
	CF_RET(cf_path_join(o->cur, sizeof o->cur, o->tmp, name));
	CF_RET(cf_open(&o->fd, o->cur, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600));
	o->off = 0;
	out_fd_set(o);
	return write_header(o, kind);
}

/* Give back preallocated space past the end (a file shorter than hinted). */
static void trim_reserve(struct ar_out *o)
{
	if (o->reserved > o->off) {
		int saved = errno;
		if (cf_os.ftruncate(o->fd, (off_t)o->off) != 0)
			errno = saved;
		o->reserved = 0;
	}
}

static int close_member(struct ar_out *o)
{
	trim_reserve(o);
	int rc = cf_fsync(o->fd, o->cur);
	int rc2 = cf_close(o->fd, o->cur);
	o->fd = -1;
	return rc ? rc : rc2;
}

int ar_out_file_begin(struct ar_out *o, const char *name)
{
	if (!o->dir)
		return COFFER_OK;
	char member[64];
	snprintf(member, sizeof member, "%s.blocks", name);
	return open_member(o, member, AR_H_BLOCKS);
}

int ar_out_file_end(struct ar_out *o)
{
	return o->dir ? close_member(o) : COFFER_OK;
}

int ar_out_manifest_begin(struct ar_out *o)
{
	return o->dir ? open_member(o, "MANIFEST", AR_H_MANIFEST) : COFFER_OK;
}

int ar_out_commit(struct ar_out *o)
{
	char parent[PATH_MAX];
	if (o->is_stdout) {
		struct stat st;
		if (cf_os.fstat(1, &st) == 0 && S_ISREG(st.st_mode))
			CF_RET(cf_fsync(1, o->cur));
		o->committed = 1;
		return COFFER_OK;
	}
	if (o->fd >= 0)
		CF_RET(close_member(o)); /* trims preallocated space, fsyncs */
	if (o->dir) {
		char d[PATH_MAX];
		if (o->log_made) {
			CF_RET(cf_path_join(d, sizeof d, o->tmp, "log"));
			CF_RET(cf_fsync_dir(d));
		}
		CF_RET(cf_fsync_dir(o->tmp));
	}
	CF_RET(must_not_exist(o->path));
	/* Never over anything that appeared since (a file, a link, an empty
	 * directory): the check above says why in most cases, this closes the
	 * race. */
	int rc = cf_rename_noreplace(o->tmp, o->path);
	if (rc == COFFER_E_EXISTS)
		return CF_ERROR(COFFER_E_EXISTS, CF_OBJ(.file = o->path),
				"the backup set \"%s\" appeared while the backup was written; "
				"choose another name or remove it",
				o->path);
	CF_RET(rc);
	o->committed = 1;
	CF_RET(cf_path_dirname(parent, sizeof parent, o->path));
	return cf_fsync_dir(parent);
}

/* Empty the directory open as DFD: every entry that is not a directory
 * (a symbolic link included) is unlinked itself; a directory is opened
 * with O_NOFOLLOW | O_DIRECTORY relative to DFD, emptied (DEPTH more
 * levels) and removed. Nothing is ever reached through a link. Closes DFD. */
static void empty_dir_fd(int dfd, int depth)
{
	DIR *dh = fdopendir(dfd);
	if (dh == NULL) {
		cf_os.close(dfd);
		return;
	}
	struct dirent *e;
	while ((e = readdir(dh)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		struct stat st;
		if (cf_os.fstatat(dirfd(dh), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		if (!S_ISDIR(st.st_mode)) {
			(void)cf_os.unlinkat(dirfd(dh), e->d_name, 0);
			continue;
		}
		if (depth <= 0)
			continue;
		int sub = cf_os.openat(dirfd(dh), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
		if (sub < 0)
			continue; /* replaced by a link meanwhile: left alone */
		empty_dir_fd(sub, depth - 1);
		(void)cf_os.unlinkat(dirfd(dh), e->d_name, AT_REMOVEDIR);
	}
	closedir(dh);
}

/* Remove D: a symbolic link or file is unlinked (never followed); a
 * directory loses its entries (DEPTH levels of subdirectories), then
 * itself. */
void ar_remove_tree(const char *d, int depth)
{
	struct stat st;
	if (cf_os.lstat(d, &st) != 0)
		return;
	if (!S_ISDIR(st.st_mode)) {
		(void)cf_os.unlink(d);
		return;
	}
	int fd = cf_os.open(d, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
	if (fd < 0)
		return;
	empty_dir_fd(fd, depth);
	cf_os.rmdir(d);
}

int cf_archive_remove(const char *path)
{
	char parent[PATH_MAX];
	ar_remove_tree(path, 1);
	CF_RET(cf_path_dirname(parent, sizeof parent, path));
	return cf_fsync_dir(parent);
}

void ar_out_discard(struct ar_out *o)
{
	if (o == NULL || o->discarded)
		return;
	coffer_error saved = *coffer_error_last();
	o->discarded = 1;
	if (o->fd >= 0 && !o->is_stdout)
		cf_os.close(o->fd);
	o->fd = -1;
	if (o->tmp && !o->committed) {
		if (o->dir)
			ar_remove_tree(o->tmp, 1);
		else
			cf_os.unlink(o->tmp);
	}
	*(coffer_error *)coffer_error_last() = saved;
}

void ar_out_free(struct ar_out *o)
{
	if (o == NULL)
		return;
	ar_out_discard(o);
	free(o->tmp);
	free(o->path);
	free(o);
}
