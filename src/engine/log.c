/*
 * log.c - the log writer: generations, buffering, group commit, roll, truncate.
 *
 * ---- Design ----
 *
 * The write-ahead log is a sequence of generation files DIR/log/NNNNNNNNNN.log
 * (10 decimal digits, generation 1 first), all of one fixed size per store
 * (option, 16 MiB default, 1 MiB..1 GiB), preallocated when created. Each
 * starts with a 4096-byte header block; records follow at offset 4096,
 * 8-byte aligned, never spanning files; a record length of 0 (the zeroes of
 * the preallocated file) ends a file. The byte layout is in log_format.h.
 * An LSN is CF_LSN(generation, offset): LSNs grow with the log, across files.
 *
 * Each record carries an XXH3-64 checksum seeded with its own LSN: a record
 * is valid only at the position it was written to, so stale bytes of an
 * older history, another generation or a recycled file never validate.
 * Each header carries the LSN where the previous generation ended, so the
 * reader can prove that no generation was swapped or cut short.
 *
 * ---- Invariants ----
 *
 *  I1 A generation file exists under its final name only when its header
 *     is complete and durable: it is written as NNNNNNNNNN.log.tmp,
 *     preallocated, fsynced, renamed, and the directory fsynced.
 *  I2 Generation g+1 is created only after every record of g has been
 *     written and fdatasynced. So only the last generation can end in a torn
 *     record; a bad record anywhere else is damage (log_read.c relies on
 *     this).
 *  I3 Beyond the end of the log there is nothing: the current generation
 *     holds only zeroes (new files are preallocated with fallocate, else
 *     ftruncate, both read as zeroes; cf_log_open() zeroes the rest of the
 *     generation from the recovered end) and no later generation exists
 *     (cf_log_open() deletes them first, highest first, before zeroing, so
 *     a crash in between leaves a chain the reader still accepts).
 *  I4 Nothing is reported durable (cf_log_durable(), cf_log_flush()
 *     returning) before the fdatasync covering it has returned.
 *  I5 Records are placed contiguously in append order; one batch is never
 *     interleaved with another. A batch that fits in an empty generation
 *     but not in the rest of the current one starts a new generation
 *     (nothing of it is written before the roll succeeded); only a batch
 *     larger than a whole generation rolls in its middle.
 *  I6 After a failed write or fdatasync, the state of the file is unknown:
 *     the log stops (sticky failure). Every later append, flush and roll
 *     returns COFFER_E_FATAL quoting the original cause, until the store is
 *     reopened and recovery has found the real end. A failure to create the
 *     next generation before its rename (disk full) changes nothing on disk
 *     and is returned as is, not sticky.
 *  I7 Every write of the buffer is fdatasynced before the next write starts
 *     (flush rounds, rolls, and a buffer written out because it is full), so
 *     at any time at most one write to the log is not durable, and
 *     everything before its start is. A crash therefore tears only the last
 *     write: after it the file holds what that write left (a part of it)
 *     and zeroes (I3), never a valid record after an invalid one. So a bad
 *     record followed by a valid COMMIT in the same generation is damage,
 *     not a crash (log_read.c R2). A power loss may persist the sectors of
 *     that one write out of order; then a valid but never acknowledged
 *     record can follow a hole, and recovery refuses to guess (see
 *     docs/design.md, "The end of the log").
 *
 * ---- Concurrency ----
 *
 * Two locks and one role:
 *   append_mu  serializes appenders (and roll). Only its holder changes
 *              `end`, the current generation and the file, so it can
 *              compute positions and checksums without `mu`.
 *   mu         guards the buffers, the positions, the io role, the
 *              counters and the failure; held only for short copies and
 *              state changes, never across a system call.
 *   io role    (io_busy, under mu) owns the file descriptor for writing:
 *              one thread at a time writes out the buffer, syncs or rolls,
 *              with mu released. Others wait on a condition variable.
 * Lock order: append_mu, then mu. trunc_mu serializes truncation only.
 *
 * Two buffers of CF_LOG_BUF bytes: appenders copy into `cur`; the io owner
 * swaps `cur` with `spare` under mu, then writes the old `cur` out without
 * the lock while appenders fill the new one. Bytes in `cur` are those from
 * `cur_start` to `cur_start + cur_len`; everything before `cur_start` has
 * been written (pwrite), everything before `durable` also synced. A record
 * bigger than the free space is copied in pieces, writing the buffer out
 * and syncing it whenever it is full (write-through, I7), so the buffer
 * never grows.
 *
 * Group commit (cf_log_flush, leader/follower): a caller whose LSN is not
 * durable and finds the io role free becomes the leader of a flush round: it
 * takes the whole buffer (its own records and everyone else's), writes it,
 * fdatasyncs and advances `durable`. Callers arriving meanwhile are
 * followers and sleep on one of two condition variables: cv_round[r & 1]
 * if round r in flight covers their LSN (round_target), else the next
 * round's. When round r ends, its followers are woken together; if others
 * wait for round r+1, the leader runs it at once (up to CF_LOG_LEAD_EXTRA
 * times, saving a hand-off), and finally signals one follower of the next
 * round, who leads it. So N concurrent committers share about one fdatasync
 * per round, and each wakes about once per commit. Appenders that need the
 * io role (full buffer, roll) wait on cv_io.
 *
 * State of a cf_log: OPEN (appending) -> FAILED (sticky, set by
 * set_failed() from io_write() or roll_locked()) -> freed by cf_log_close().
 * Rolling (roll_locked) is a transition inside OPEN: write + fdatasync the
 * buffer, create the next file (I1), switch the descriptor.
 */
#define XXH_STATIC_LINKING_ONLY
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/err.h"
#include "common/os.h"
#include "common/timefmt.h"
#include "engine/log.h"

#define CF_LOG_BUF (1u << 20) /* bytes per log buffer (two of them) */
/* Extra flush rounds a leader runs back to back for followers who arrived
 * during its own round (saves a hand-off; measured +10-30% commits/s). */
#define CF_LOG_LEAD_EXTRA 2

struct cf_log {
	char *dir;
	uint8_t sig[16];
	uint32_t new_file_size; /* size of generations created from now on */
	int circular;
	struct coffer_evlog *evlog;

	pthread_mutex_t append_mu;
	pthread_mutex_t trunc_mu;
	pthread_mutex_t mu;
	pthread_cond_t cv_io;       /* the io role became free */
	pthread_cond_t cv_round[2]; /* flush followers, by round parity */

	/* The current generation: changed by roll_locked() only, holding
	 * append_mu and the io role. */
	uint32_t gen;
	uint32_t file_size;
	int fd;
	char path[PATH_MAX];

	/* Under mu. */
	uint8_t *cur, *spare; /* spare is NULL while the io owner holds it */
	size_t cur_len;
	cf_lsn cur_start;
	cf_lsn end;     /* next record's LSN (also read by append_mu holders) */
	cf_lsn durable; /* every byte before it is synced */
	int io_busy;
	int flushing;        /* the io owner is a flush leader */
	uint64_t round;      /* flush rounds started */
	cf_lsn round_target; /* durable when the round in flight ends */
	int nwait_io, nwait_round[2];
	int failed;     /* code of the failure that stopped the log, 0 if none */
	char failed_msg[sizeof(((coffer_error *)0)->message)];
	struct cf_log_stats st;
};

/* ---- helpers shared with log_read.c (declared in log_format.h) ---- */

int cf_log_gen_path(char *out, size_t cap, const char *logdir, uint32_t gen)
{
	char name[32];
	snprintf(name, sizeof name, "%010u.log", gen);
	return cf_path_join(out, cap, logdir, name);
}

int cf_log_parse_name(const char *name, uint32_t *gen)
{
	uint64_t v = 0;
	if (strlen(name) != CF_LOG_NAME_LEN || strcmp(name + 10, ".log") != 0)
		return 0;
	for (int i = 0; i < 10; i++) {
		if (name[i] < '0' || name[i] > '9')
			return 0;
		v = v * 10 + (uint64_t)(name[i] - '0');
	}
	if (v == 0 || v > CF_LOG_GEN_MAX)
		return 0;
	*gen = (uint32_t)v;
	return 1;
}

void cf_log_header_encode(struct cf_log_file_header *h, uint8_t *block)
{
	memset(block, 0, CF_LOG_HDR_SIZE);
	memcpy(block + CF_LOG_H_MAGIC, CF_LOG_MAGIC, 8);
	cf_put32(block + CF_LOG_H_VERSION, h->version);
	cf_put32(block + CF_LOG_H_HDRSIZE, h->header_size);
	cf_put32(block + CF_LOG_H_GEN, h->generation);
	cf_put32(block + CF_LOG_H_FILESIZE, h->file_size);
	memcpy(block + CF_LOG_H_SIG, h->sig, 16);
	cf_put64(block + CF_LOG_H_CREATED, (uint64_t)h->created_us);
	cf_put64(block + CF_LOG_H_PREV_END, h->prev_end);
	h->checksum = XXH3_64bits(block, CF_LOG_H_CHECKSUM);
	cf_put64(block + CF_LOG_H_CHECKSUM, h->checksum);
}

uint64_t cf_log_rec_checksum(cf_lsn lsn, const uint8_t *hdr, const void *p1, size_t n1,
			     const void *p2, size_t n2)
{
	uint8_t h[CF_LOG_REC_HDR];
	memcpy(h, hdr, CF_LOG_REC_HDR);
	memset(h + CF_LOG_R_CHECKSUM, 0, 8);
	if (n1 + n2 <= 1024 - CF_LOG_REC_HDR) {
		/* Small records (commits, small diffs): one pass over a copy. */
		uint8_t tmp[1024];
		memcpy(tmp, h, CF_LOG_REC_HDR);
		if (n1)
			memcpy(tmp + CF_LOG_REC_HDR, p1, n1);
		if (n2)
			memcpy(tmp + CF_LOG_REC_HDR + n1, p2, n2);
		return XXH3_64bits_withSeed(tmp, CF_LOG_REC_HDR + n1 + n2, lsn);
	}
	XXH3_state_t s;
	XXH3_64bits_reset_withSeed(&s, lsn);
	XXH3_64bits_update(&s, h, CF_LOG_REC_HDR);
	if (n1)
		XXH3_64bits_update(&s, p1, n1);
	if (n2)
		XXH3_64bits_update(&s, p2, n2);
	return XXH3_64bits_digest(&s);
}

const char *cf_log_type_name(uint16_t type)
{
	switch (type) {
	case CF_LOG_PAGE_IMAGE:
		return "PAGE_IMAGE";
	case CF_LOG_PAGE_DIFF:
		return "PAGE_DIFF";
	case CF_LOG_COMMIT:
		return "COMMIT";
	case CF_LOG_HEADER:
		return "HEADER";
	case CF_LOG_CHECKPOINT:
		return "CHECKPOINT";
	case CF_LOG_NOOP:
		return "NOOP";
	default:
		return "UNKNOWN";
	}
}

size_t cf_log_page_diff_size(const cf_log_range *r, uint32_t n)
{
	size_t s = CF_LOG_DIFF_HEAD;
	for (uint32_t i = 0; i < n; i++)
		s += CF_LOG_DIFF_RANGE + r[i].len;
	return s;
}

void cf_log_encode_page_diff(uint8_t *out, cf_pgno pgno, const uint8_t *page,
			     const cf_log_range *r, uint32_t n)
{
	cf_put32(out, pgno);
	cf_put32(out + 4, n);
	out += CF_LOG_DIFF_HEAD;
	for (uint32_t i = 0; i < n; i++) {
		cf_put32(out, r[i].off);
		cf_put32(out + 4, r[i].len);
		memcpy(out + CF_LOG_DIFF_RANGE, page + r[i].off, r[i].len);
		out += CF_LOG_DIFF_RANGE + r[i].len;
	}
}

/* ---- creating generation files ---- */

static int check_file_size(uint32_t size)
{
	if (size < CF_LOG_FILE_MIN || size > CF_LOG_FILE_MAX || size % 4096 != 0)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL,
				"log file size %u is not a multiple of 4096 between %u (1 MiB) and %u "
				"(1 GiB)",
				size, CF_LOG_FILE_MIN, CF_LOG_FILE_MAX);
	return COFFER_OK;
}

/* Reserve SIZE bytes for FD: fallocate, else ftruncate (both read as zeroes). */
static int preallocate(int fd, const char *path, uint32_t size)
{
	int r;
	do
		r = cf_os.fallocate(fd, 0, 0, (off_t)size);
	while (r != 0 && errno == EINTR);
	if (r == 0)
		return COFFER_OK;
	if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL)
		return cf_error_sys("preallocate", path, -1);
	if (cf_os.ftruncate(fd, (off_t)size) != 0)
		return cf_error_sys("extend", path, -1);
	return COFFER_OK;
}

/*
 * Create generation GEN in DIR (invariant I1) and leave it open in *FD.
 * *RENAMED tells the caller whether the final name exists (a failure after
 * the rename leaves the directory in doubt).
 */
static int create_gen(const char *dir, uint32_t gen, const uint8_t sig[16], uint32_t size,
		      cf_lsn prev_end, int *fd_out, char *path, size_t cap, int *renamed)
{
	char tmp[PATH_MAX + 8];
	uint8_t *block = NULL;
	int fd = -1, rc;
	*fd_out = -1;
	*renamed = 0;
	CF_RET(cf_log_gen_path(path, cap, dir, gen));
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	block = calloc(1, CF_LOG_HDR_SIZE);
	if (block == NULL)
		return CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = path, CF_GEN(gen)),
				"no memory for the header of log generation %u", gen);
	struct cf_log_file_header h = {
		.version = CF_LOG_VERSION,
		.header_size = CF_LOG_HDR_SIZE,
		.generation = gen,
		.file_size = size,
		.created_us = cf_time_now_us(),
		.prev_end = prev_end,
	};
	memcpy(h.sig, sig, 16);
	cf_log_header_encode(&h, block);
	/* 0600 in a 0700 log/ (design.md section 3); O_NOFOLLOW: a stale
	 * .tmp is reused, a symbolic link there is refused, never written
	 * through. */
	CF_GO(rc, cf_open(&fd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600));
	CF_GO(rc, preallocate(fd, tmp, size));
	CF_GO(rc, cf_pwrite_full(fd, tmp, block, CF_LOG_HDR_SIZE, 0));
	CF_GO(rc, cf_fsync(fd, tmp));
	if (cf_os.rename(tmp, path) != 0) {
		rc = cf_error_sys("rename", tmp, -1);
		goto err;
	}
	*renamed = 1;
	CF_GO(rc, cf_fsync_dir(dir));
	free(block);
	*fd_out = fd;
	return COFFER_OK;
err:
	cf_error_prefix("creating log generation %u in %s", gen, dir);
	if (fd >= 0)
		cf_os.close(fd);
	if (!*renamed)
		cf_os.unlink(tmp);
	free(block);
	return rc;
}

int cf_log_create(const char *logdir, const uint8_t sig[16], const cf_log_options *o)
{
	uint32_t size = o && o->file_size ? o->file_size : CF_LOG_FILE_DEFAULT;
	uint32_t *gens = NULL;
	size_t n = 0;
	char path[PATH_MAX];
	int fd, renamed, rc;
	CF_RET(check_file_size(size));
	CF_RET(cf_mkdir_p(logdir, 0700));
	CF_RET(cf_log_list_gens(logdir, &gens, &n));
	free(gens);
	if (n > 0)
		return CF_ERROR(COFFER_E_EXISTS, CF_OBJ(.file = logdir),
				"cannot create a new log in %s: it already holds %zu log generation%s",
				logdir, n, n == 1 ? "" : "s");
	CF_RET(create_gen(logdir, 1, sig, size, 0, &fd, path, sizeof path, &renamed));
	rc = cf_close(fd, path);
	return rc;
}

/* ---- opening ---- */

static int sig_hex(const uint8_t sig[16], char out[33])
{
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", sig[i]);
	return 0;
}

/* Remove leftovers of interrupted generation creations (NNNNNNNNNN.log.tmp). */
static int remove_stale_tmp(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[PATH_MAX];
	uint32_t gen;
	int removed = 0;
	if (d == NULL)
		return cf_error_sys("open directory", dir, -1);
	while ((e = readdir(d)) != NULL) {
		size_t l = strlen(e->d_name);
		char name[CF_LOG_NAME_LEN + 1];
		if (l != CF_LOG_NAME_LEN + 4 || strcmp(e->d_name + CF_LOG_NAME_LEN, ".tmp") != 0)
			continue;
		memcpy(name, e->d_name, CF_LOG_NAME_LEN);
		name[CF_LOG_NAME_LEN] = '\0';
		if (!cf_log_parse_name(name, &gen))
			continue;
		if (cf_path_join(path, sizeof path, dir, e->d_name) != COFFER_OK)
			continue;
		if (cf_os.unlink(path) == 0)
			removed++;
	}
	closedir(d);
	if (removed)
		CF_RET(cf_fsync_dir(dir));
	return COFFER_OK;
}

/* Stores made before log files were private have a 0750 log/ and 0640
 * generations: take the group's and others' bits away from every
 * generation (each opened O_NOFOLLOW: whatever a symbolic link points to
 * is left as it is), then from the directory. The directory goes last and
 * marks the work done: a private log/ costs one fstat at start, not one
 * open per generation. Best effort: a file we may not chmod stays as it
 * was and the store opens anyway; ls -l shows it. */
static void tighten_modes(const char *dir)
{
	uint32_t *gens = NULL;
	size_t n = 0;
	char path[PATH_MAX];
	struct stat st;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return;
	if (fstat(dfd, &st) != 0 || (st.st_mode & 077) == 0)
		goto out;
	if (cf_log_list_gens(dir, &gens, &n) != COFFER_OK) {
		coffer_error_clear();
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct stat fs;
		int fd;
		if (cf_log_gen_path(path, sizeof path, dir, gens[i]) != COFFER_OK ||
		    (fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
			continue;
		if (fstat(fd, &fs) == 0 && S_ISREG(fs.st_mode) && (fs.st_mode & 077))
			(void)fchmod(fd, fs.st_mode & 0600);
		close(fd);
	}
	free(gens);
	(void)fchmod(dfd, st.st_mode & 0700);
out:
	close(dfd);
}

/* Zero [OFF, SIZE) of FD where it is not zero already (invariant I3). */
static int zero_tail(int fd, const char *path, uint32_t off, uint32_t size)
{
	const size_t chunk = 256 * 1024;
	uint8_t *buf = malloc(chunk), *zero = calloc(1, chunk);
	int rc = COFFER_OK, wrote = 0;
	if (buf == NULL || zero == NULL) {
		rc = CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = path), "no memory to zero a log file");
		goto out;
	}
	for (uint64_t pos = off; pos < size;) {
		size_t n = (size_t)(size - pos) < chunk ? (size_t)(size - pos) : chunk;
		ssize_t r;
		do
			r = cf_os.pread(fd, buf, n, (off_t)pos);
		while (r < 0 && errno == EINTR);
		if (r < 0) {
			rc = cf_error_sys("read", path, (int64_t)pos);
			goto out;
		}
		/* Past the end of a short file counts as not zero: extend it. */
		if ((size_t)r < n || memcmp(buf, zero, n) != 0) {
			CF_GO(rc, cf_pwrite_full(fd, path, zero, n, pos));
			wrote = 1;
		}
		pos += n;
	}
	if (wrote)
		CF_GO(rc, cf_fdatasync(fd, path));
out:
err:
	free(buf);
	free(zero);
	return rc;
}

/* Delete the generations above GEN (highest first), counting them in the stats. */
static int discard_after(cf_log *log, const char *dir, uint32_t gen)
{
	uint32_t *gens = NULL;
	size_t n = 0;
	char path[PATH_MAX];
	int rc = COFFER_OK;
	CF_RET(cf_log_list_gens(dir, &gens, &n));
	for (size_t i = n; i-- > 0 && gens[i] > gen;) {
		CF_GO(rc, cf_log_gen_path(path, sizeof path, dir, gens[i]));
		if (cf_os.unlink(path) != 0 && errno != ENOENT) {
			rc = cf_error_sys("delete", path, -1);
			cf_error_prefix("discarding log generation %u after the end of the log "
					"(%010u)",
					gens[i], gen);
			goto err;
		}
		log->st.discarded++;
	}
	if (log->st.discarded)
		rc = cf_fsync_dir(dir);
err:
	free(gens);
	return rc;
}

static void log_free(cf_log *log);

/* A new cf_log, or NULL with COFFER_E_NOMEM raised. */
static cf_log *log_alloc(const char *logdir)
{
	cf_log *log = calloc(1, sizeof *log);
	if (log == NULL) {
		CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = logdir), "no memory for the log");
		return NULL;
	}
	log->fd = -1;
	log->dir = strdup(logdir);
	log->cur = malloc(CF_LOG_BUF);
	log->spare = malloc(CF_LOG_BUF);
	pthread_mutex_init(&log->append_mu, NULL);
	pthread_mutex_init(&log->trunc_mu, NULL);
	pthread_mutex_init(&log->mu, NULL);
	pthread_cond_init(&log->cv_io, NULL);
	pthread_cond_init(&log->cv_round[0], NULL);
	pthread_cond_init(&log->cv_round[1], NULL);
	if (log->dir == NULL || log->cur == NULL || log->spare == NULL) {
		CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = logdir), "no memory for the log buffers");
		log_free(log);
		return NULL;
	}
	return log;
}

static void log_free(cf_log *log)
{
	if (log == NULL)
		return;
	if (log->fd >= 0)
		cf_os.close(log->fd);
	pthread_mutex_destroy(&log->append_mu);
	pthread_mutex_destroy(&log->trunc_mu);
	pthread_mutex_destroy(&log->mu);
	pthread_cond_destroy(&log->cv_io);
	pthread_cond_destroy(&log->cv_round[0]);
	pthread_cond_destroy(&log->cv_round[1]);
	free(log->cur);
	free(log->spare);
	free(log->dir);
	free(log);
}

int cf_log_open(cf_log **out, const char *logdir, const uint8_t sig[16], cf_lsn end,
		const cf_log_options *o)
{
	uint32_t gen = CF_LSN_GEN(end), off = CF_LSN_OFF(end);
	uint32_t size = o && o->file_size ? o->file_size : CF_LOG_FILE_DEFAULT;
	struct cf_log_file_header h;
	struct stat st;
	char want[33], got[33];
	cf_log *log = NULL;
	int rc;
	*out = NULL;
	CF_RET(check_file_size(size));
	if ((log = log_alloc(logdir)) == NULL)
		return COFFER_E_NOMEM;
	memcpy(log->sig, sig, 16);
	log->new_file_size = size;
	log->circular = o ? o->circular : 0;
	log->evlog = o ? o->evlog : NULL;
	log->gen = gen;
	if (gen == 0) {
		rc = CF_ERROR(COFFER_E_INVALID_ARGUMENT, CF_OBJ(.file = logdir),
			      "cannot open the log in %s at LSN %010u:%010u: generation 0 does not "
			      "exist (the first is 1)",
			      logdir, gen, off);
		goto err;
	}
	CF_GO(rc, cf_log_gen_path(log->path, sizeof log->path, logdir, gen));
	if (cf_os.stat(log->path, &st) != 0 && errno == ENOENT) {
		rc = CF_ERROR(COFFER_E_LOG_MISSING, CF_OBJ(.file = logdir, CF_GEN(gen)),
			      "log generation %u, where the log ends (%010u:%010u), is missing from %s",
			      gen, gen, off, logdir);
		goto err;
	}
	CF_GO(rc, cf_log_read_header(log->path, &h));
	if (h.generation != gen) {
		rc = CF_ERROR(COFFER_E_LOG_MISMATCH, CF_OBJ(.file = log->path, CF_GEN(gen)),
			      "log file %s carries generation %u in its header, not %u", log->path,
			      h.generation, gen);
		goto err;
	}
	if (memcmp(h.sig, sig, 16) != 0) {
		sig_hex(sig, want);
		sig_hex(h.sig, got);
		rc = CF_ERROR(COFFER_E_LOG_MISMATCH, CF_OBJ(.file = log->path, CF_GEN(gen)),
			      "log generation %u (%s) belongs to another store: signature %s, "
			      "expected %s",
			      gen, log->path, got, want);
		goto err;
	}
	if (off < CF_LOG_HDR_SIZE || off > h.file_size || off % CF_LOG_ALIGN != 0) {
		rc = CF_ERROR(COFFER_E_INVALID_ARGUMENT, CF_OBJ(.file = log->path, CF_GEN(gen), CF_OFF(off)),
			      "cannot append to log generation %u at offset %u: not a record "
			      "boundary inside the file (%u bytes, records from %u, 8-byte aligned)",
			      gen, off, h.file_size, CF_LOG_HDR_SIZE);
		goto err;
	}
	/* Later generations hold nothing the caller wants (an empty one left by
	 * a roll just before a crash, an uncommitted batch, the tail cut off by
	 * point-in-time recovery): remove them before zeroing, highest first,
	 * so that a crash in between leaves a readable chain. */
	CF_GO(rc, discard_after(log, logdir, gen));
	CF_GO(rc, remove_stale_tmp(logdir));
	tighten_modes(logdir);
	CF_GO(rc, cf_open(&log->fd, log->path, O_RDWR, 0));
	log->file_size = h.file_size;
	CF_GO(rc, zero_tail(log->fd, log->path, off, h.file_size));
	/* The records before END were found by recovery; make sure they are on
	 * disk before anything is reported durable after them. */
	CF_GO(rc, cf_fdatasync(log->fd, log->path));
	log->end = log->durable = log->cur_start = end;
	*out = log;
	return COFFER_OK;
err:
	log_free(log);
	return rc;
}

/* ---- the io role and the sticky failure (mu held) ---- */

static int failed_error(cf_log *log)
{
	return CF_ERROR(COFFER_E_FATAL, CF_OBJ(.file = log->path, CF_GEN(log->gen)),
			"the log in %s stopped after an earlier failure and accepts no writes until "
			"the store is reopened; the failure was: %s (%s)",
			log->dir, log->failed_msg, coffer_code_name(log->failed));
}

/* Wake every waiter: durable moved outside a flush round, or the log failed. */
static void wake_all(cf_log *log)
{
	if (log->nwait_io)
		pthread_cond_broadcast(&log->cv_io);
	for (int k = 0; k < 2; k++)
		if (log->nwait_round[k])
			pthread_cond_broadcast(&log->cv_round[k]);
}

static void set_failed(cf_log *log, int rc)
{
	if (log->failed)
		return;
	log->failed = rc;
	snprintf(log->failed_msg, sizeof log->failed_msg, "%s", coffer_error_last()->message);
	wake_all(log);
}

static int io_acquire(cf_log *log)
{
	while (log->io_busy && !log->failed) {
		log->nwait_io++;
		pthread_cond_wait(&log->cv_io, &log->mu);
		log->nwait_io--;
	}
	if (log->failed)
		return failed_error(log);
	log->io_busy = 1;
	return COFFER_OK;
}

/*
 * Give the io role back. After a flush round, wake the followers it covered
 * (all waiting on this round's condition variable) and one follower of the
 * next round, who leads it; the rest of the next round sleep on until that
 * round ends. So each committer wakes about once per commit. After any
 * other io (a buffer write-out, a roll), everyone re-checks.
 */
static void io_release(cf_log *log)
{
	int was_flush = log->flushing;
	log->io_busy = 0;
	log->flushing = 0;
	if (!was_flush || log->failed) {
		wake_all(log);
		return;
	}
	if (log->nwait_io)
		pthread_cond_broadcast(&log->cv_io);
	int cur = (int)(log->round & 1);
	if (log->nwait_round[cur])
		pthread_cond_broadcast(&log->cv_round[cur]);
	if (log->nwait_round[!cur])
		pthread_cond_signal(&log->cv_round[!cur]);
}

/*
 * The io owner writes out the buffer (and with SYNC fdatasyncs), releasing
 * mu during the system calls. On failure the log stops (I6).
 */
static int io_write(cf_log *log, int sync)
{
	uint8_t *b = log->cur;
	size_t n = log->cur_len;
	cf_lsn start = log->cur_start;
	int rc = COFFER_OK;
	log->cur = log->spare;
	log->spare = NULL;
	log->cur_len = 0;
	log->cur_start = start + n;
	pthread_mutex_unlock(&log->mu);
	if (n)
		rc = cf_pwrite_full(log->fd, log->path, b, n, CF_LSN_OFF(start));
	if (rc == COFFER_OK && sync)
		rc = cf_fdatasync(log->fd, log->path);
	pthread_mutex_lock(&log->mu);
	log->spare = b;
	if (rc != COFFER_OK) {
		cf_error_prefix("writing log generation %u", log->gen);
		set_failed(log, rc);
		return rc;
	}
	if (n)
		log->st.writes++;
	if (sync) {
		/* Bytes of a record still being copied may have gone with the
		 * buffer: report durable only up to a record boundary. */
		cf_lsn upto = start + n < log->end ? start + n : log->end;
		log->st.syncs++;
		if (upto > log->durable)
			log->durable = upto;
	}
	return COFFER_OK;
}

/* Copy N bytes into the buffer, writing it out whenever it is full. */
static int buf_put(cf_log *log, const void *src, size_t n)
{
	const uint8_t *p = src;
	while (n > 0) {
		size_t room = CF_LOG_BUF - log->cur_len;
		if (room == 0) {
			CF_RET(io_acquire(log));
			int rc = COFFER_OK;
			/* While we waited, a flush may have taken the buffer.
			 * Synced at once (I7): no two unsynced writes. */
			if (log->cur_len == CF_LOG_BUF)
				rc = io_write(log, 1);
			io_release(log);
			CF_RET(rc);
			continue;
		}
		size_t k = n < room ? n : room;
		memcpy(log->cur + log->cur_len, p, k);
		log->cur_len += k;
		p += k;
		n -= k;
	}
	return COFFER_OK;
}

/*
 * Close the current generation and start the next (append_mu and mu held).
 * MID_BATCH: part of a batch is already in the buffer, so any failure stops
 * the log (the batch would be cut in two otherwise).
 */
static int roll_locked(cf_log *log, int mid_batch)
{
	char path[PATH_MAX];
	int fd, renamed, rc;
	uint32_t next = log->gen + 1;
	CF_RET(io_acquire(log));
	CF_GO(rc, io_write(log, 1));
	/* Now every byte of the generation is durable (I2): release the
	 * followers waiting for it before creating the next file. */
	wake_all(log);
	if (log->gen == CF_LOG_GEN_MAX) {
		rc = CF_ERROR(COFFER_E_LOG_FULL, CF_OBJ(.file = log->dir, CF_GEN(log->gen)),
			      "the log in %s reached the last generation number %u", log->dir,
			      log->gen);
		goto err;
	}
	pthread_mutex_unlock(&log->mu);
	rc = create_gen(log->dir, next, log->sig, log->new_file_size, log->end, &fd, path,
			sizeof path, &renamed);
	pthread_mutex_lock(&log->mu);
	if (rc != COFFER_OK) {
		if (renamed || mid_batch) {
			set_failed(log, rc);
		} else if (rc == COFFER_E_DISK_FULL) {
			/* Nothing changed on disk: appending can resume once
			 * there is space (not sticky). */
			const coffer_error *e = coffer_error_last();
			char cause[sizeof e->message];
			int sys = e->sys_errno;
			snprintf(cause, sizeof cause, "%s", e->message);
			rc = CF_ERROR(COFFER_E_LOG_FULL,
				      CF_OBJ(.file = log->dir, CF_GEN(next), .sys_errno = sys),
				      "the log cannot start generation %u: %s", next, cause);
		}
		goto err;
	}
	cf_os.close(log->fd);
	log->fd = fd;
	log->gen = next;
	log->file_size = log->new_file_size;
	memcpy(log->path, path, sizeof log->path);
	log->end = log->durable = log->cur_start = CF_LSN(next, CF_LOG_HDR_SIZE);
	log->st.rolls++;
	io_release(log);
	return COFFER_OK;
err:
	io_release(log);
	return rc;
}

/* ---- appending ---- */

int cf_log_append(cf_log *log, const cf_log_in *recs, size_t n, cf_lsn *lsns, cf_lsn *end)
{
	static const uint8_t zero[CF_LOG_ALIGN];
	uint64_t cap = log->new_file_size - CF_LOG_HDR_SIZE, total = 0;
	int rc = COFFER_OK;
	for (size_t i = 0; i < n; i++) {
		uint64_t len = CF_LOG_REC_HDR + (uint64_t)recs[i].n1 + recs[i].n2;
		if (recs[i].type < CF_LOG_TYPE_MIN || recs[i].type > CF_LOG_TYPE_MAX)
			return CF_ERROR(COFFER_E_INVALID_ARGUMENT, CF_OBJ(.file = log->dir),
					"log record %zu of the batch has unknown type %u", i,
					recs[i].type);
		if (recs[i].n1 > cap || recs[i].n2 > cap || CF_LOG_ALIGN_UP(len) > cap)
			return CF_ERROR(COFFER_E_INVALID_ARGUMENT, CF_OBJ(.file = log->dir),
					"log record %zu of the batch (%s, %llu bytes) is larger than a "
					"log generation can hold (%llu bytes)",
					i, cf_log_type_name(recs[i].type), (unsigned long long)len,
					(unsigned long long)cap);
		total += CF_LOG_ALIGN_UP(len);
	}
	pthread_mutex_lock(&log->append_mu);
	pthread_mutex_lock(&log->mu);
	if (log->failed) {
		rc = failed_error(log);
		goto out;
	}
	/* I5: a batch that fits in a fresh generation is not split. */
	if ((uint64_t)CF_LSN_OFF(log->end) + total > log->file_size && total <= cap)
		CF_GO(rc, roll_locked(log, 0));
	for (size_t i = 0; i < n; i++) {
		const cf_log_in *in = &recs[i];
		uint32_t len = (uint32_t)(CF_LOG_REC_HDR + in->n1 + in->n2);
		uint32_t alen = (uint32_t)CF_LOG_ALIGN_UP(len);
		uint8_t hdr[CF_LOG_REC_HDR];
		if ((uint64_t)CF_LSN_OFF(log->end) + alen > log->file_size)
			CF_GO(rc, roll_locked(log, i > 0));
		cf_lsn lsn = log->end;
		cf_put32(hdr + CF_LOG_R_LEN, len);
		cf_put16(hdr + CF_LOG_R_TYPE, in->type);
		cf_put16(hdr + CF_LOG_R_FLAGS, 0);
		cf_put64(hdr + CF_LOG_R_CHECKSUM, 0);
		/* Positions only change with append_mu, which we hold: the
		 * checksum can be computed without mu. */
		pthread_mutex_unlock(&log->mu);
		uint64_t sum = cf_log_rec_checksum(lsn, hdr, in->p1, in->n1, in->p2, in->n2);
		cf_put64(hdr + CF_LOG_R_CHECKSUM, sum);
		pthread_mutex_lock(&log->mu);
		if (log->failed) {
			rc = failed_error(log);
			goto out;
		}
		/* A failure in buf_put stops the log (I6): the batch is cut. */
		CF_GO(rc, buf_put(log, hdr, CF_LOG_REC_HDR));
		if (in->n1)
			CF_GO(rc, buf_put(log, in->p1, in->n1));
		if (in->n2)
			CF_GO(rc, buf_put(log, in->p2, in->n2));
		if (alen > len)
			CF_GO(rc, buf_put(log, zero, alen - len));
		log->end = lsn + alen;
		if (lsns)
			lsns[i] = lsn;
		log->st.records++;
		log->st.bytes += alen;
	}
	log->st.appends++;
	if (end)
		*end = log->end;
out:
err:
	pthread_mutex_unlock(&log->mu);
	pthread_mutex_unlock(&log->append_mu);
	return rc;
}

/* ---- group commit ---- */

int cf_log_flush(cf_log *log, cf_lsn lsn)
{
	int rc = COFFER_OK, waited = 0;
	pthread_mutex_lock(&log->mu);
	if (lsn > log->end)
		lsn = log->end;
	for (;;) {
		if (log->failed) {
			rc = failed_error(log);
			break;
		}
		if (log->durable >= lsn)
			break;
		if (log->io_busy) {
			/* Follower: covered by the round in flight, or by the next. */
			int k = (int)(log->round & 1);
			if (!log->flushing || lsn > log->round_target)
				k = !k;
			waited = 1;
			log->nwait_round[k]++;
			pthread_cond_wait(&log->cv_round[k], &log->mu);
			log->nwait_round[k]--;
			continue;
		}
		/* Leader: write and sync everything buffered, ours and others'.
		 * (lsn <= end <= cur_start + cur_len: our bytes are buffered.) */
		log->io_busy = 1;
		log->flushing = 1;
		for (int extra = 0;; extra++) {
			log->round++;
			log->round_target = log->cur_start + log->cur_len;
			if (log->round_target > log->end)
				log->round_target = log->end;
			rc = io_write(log, 1);
			if (rc != COFFER_OK)
				break;
			/* Release the followers this round covered; if others
			 * wait for the next round, lead it too (no hand-off). */
			int cur = (int)(log->round & 1);
			if (log->nwait_round[cur])
				pthread_cond_broadcast(&log->cv_round[cur]);
			if (extra >= CF_LOG_LEAD_EXTRA || !log->nwait_round[!cur] || log->cur_len == 0)
				break;
		}
		io_release(log);
		if (rc != COFFER_OK)
			break;
	}
	if (waited)
		log->st.flush_waits++;
	pthread_mutex_unlock(&log->mu);
	return rc;
}

cf_lsn cf_log_durable(cf_log *log)
{
	pthread_mutex_lock(&log->mu);
	cf_lsn l = log->durable;
	pthread_mutex_unlock(&log->mu);
	return l;
}

cf_lsn cf_log_end(cf_log *log)
{
	pthread_mutex_lock(&log->mu);
	cf_lsn l = log->end;
	pthread_mutex_unlock(&log->mu);
	return l;
}

uint32_t cf_log_current_gen(cf_log *log)
{
	pthread_mutex_lock(&log->mu);
	uint32_t g = log->gen;
	pthread_mutex_unlock(&log->mu);
	return g;
}

void cf_log_get_stats(cf_log *log, struct cf_log_stats *st)
{
	pthread_mutex_lock(&log->mu);
	*st = log->st;
	pthread_mutex_unlock(&log->mu);
}

int cf_log_roll(cf_log *log, uint32_t *closed_gen)
{
	int rc;
	pthread_mutex_lock(&log->append_mu);
	pthread_mutex_lock(&log->mu);
	uint32_t gen = log->gen;
	rc = log->failed ? failed_error(log) : roll_locked(log, 0);
	pthread_mutex_unlock(&log->mu);
	pthread_mutex_unlock(&log->append_mu);
	if (rc == COFFER_OK && closed_gen)
		*closed_gen = gen;
	return rc;
}

/* ---- truncation ---- */

int cf_log_truncate(cf_log *log, uint32_t keep_from, uint32_t *deleted)
{
	uint32_t *gens = NULL, cur, count = 0;
	size_t n = 0;
	char path[PATH_MAX];
	int rc = COFFER_OK;
	if (deleted)
		*deleted = 0;
	pthread_mutex_lock(&log->trunc_mu);
	cur = cf_log_current_gen(log); /* only grows: older ones are closed */
	if (keep_from > cur)
		keep_from = cur;
	CF_GO(rc, cf_log_list_gens(log->dir, &gens, &n));
	/* Lowest first, so a crash half-way leaves a contiguous chain. */
	for (size_t i = 0; i < n && gens[i] < keep_from; i++) {
		CF_GO(rc, cf_log_gen_path(path, sizeof path, log->dir, gens[i]));
		if (cf_os.unlink(path) != 0 && errno != ENOENT) {
			rc = cf_error_sys("delete", path, -1);
			cf_error_prefix("truncating the log below generation %u", keep_from);
			break;
		}
		count++;
	}
	if (count) {
		int r2 = cf_fsync_dir(log->dir);
		if (rc == COFFER_OK)
			rc = r2;
	}
err:
	free(gens);
	pthread_mutex_unlock(&log->trunc_mu);
	if (deleted)
		*deleted = count;
	return rc;
}

int cf_log_close(cf_log *log)
{
	int rc;
	if (log == NULL)
		return COFFER_OK;
	rc = cf_log_flush(log, CF_LSN_MAX);
	if (log->fd >= 0) {
		int r2 = cf_close(log->fd, log->path);
		log->fd = -1;
		if (rc == COFFER_OK)
			rc = r2;
	}
	log_free(log);
	return rc;
}
