/*
 * backup.c - online backup (coffer/backup.h), in the manner of ESE's
 * external backup.
 *
 * Why a fuzzy copy restores exactly: begin takes a checkpoint, whose redo
 * LSN C becomes the set's replay start. From C on, the first change of every
 * page is logged as a full image (txn.c, rule 5). The pages are then copied
 * while writers go on, so a copied page may be older or newer than C, or
 * (without the re-read below) torn; the log from C through the roll holds a
 * full image of every page changed after C followed by its later changes,
 * so replaying it from C brings every page to the state at the roll.
 *
 * Generations a set holds: full/copy gen(C)..roll; incremental: after the
 * last full or incremental..roll; differential: after the last full..roll.
 * Truncation (full, incremental) after a checkpoint that moves the redo LSN
 * into the generation after the roll: every generation up to the roll is in
 * the set, and nothing later is deleted. The history update is appended to
 * the log (CF_LOG_HEADER + COMMIT) and flushed before the header is
 * written, so a crash at any moment leaves a coherent history: replay
 * re-applies it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <coffer/backup.h>

#include "common/err.h"
#include "engine/env.h"

struct coffer_backup {
	coffer_env *env;
	struct coffer_backup_info info;
	int rolled;
	uint8_t *hdr_snapshot; /* pages 0 and 1 as the set holds them */
	int rfd;               /* the database opened for this backup's sequential reads, or -1 */
};

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static const char *names[] = {NULL, "full", "incremental", "differential", "copy"};

const char *coffer_backup_type_name(unsigned type)
{
	return type >= 1 && type <= 4 ? names[type] : NULL;
}

unsigned coffer_backup_type_parse(const char *text)
{
	for (unsigned i = 1; i <= 4; i++)
		if (text && strcmp(text, names[i]) == 0)
			return i;
	return 0;
}

static void hex16(const uint8_t *b, char out[33])
{
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void backup_event(coffer_backup *b, int id, const coffer_error *err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void backup_event(coffer_backup *b, int id, const coffer_error *err, const char *fmt, ...)
{
	coffer_env *env = b->env;
	if (env->evlog == NULL)
		return;
	char bid[33], gens[48], msg[512];
	hex16(b->info.id, bid);
	snprintf(gens, sizeof gens, "%u..%u", b->info.gen_first, b->info.gen_last);
	coffer_evfield f[4] = {{"TYPE", coffer_backup_type_name(b->info.type)},
			       {"BACKUP_ID", bid},
			       {"WHO", b->info.who},
			       {"GENERATIONS", gens}};
	if (err) {
		coffer_event_error(env->evlog, id, err, f, 4);
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	coffer_event_write(env->evlog, id, f, 4, "%s", msg);
}

/* Is generation GEN present in the log directory? */
static int gen_present(coffer_env *env, uint32_t gen)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%010u.log", env->logdir, gen);
	struct stat st;
	return cf_os.stat(path, &st) == 0;
}

static void release(coffer_backup *b)
{
	coffer_env *env = b->env;
	pthread_mutex_lock(&env->backup_mu);
	if (env->backup == b)
		env->backup = NULL;
	atomic_store(&env->backup_hold_gen, 0);
	pthread_mutex_unlock(&env->backup_mu);
	free(b->hdr_snapshot);
	if (b->rfd >= 0)
		close(b->rfd);
	free(b);
}

int coffer_backup_begin(coffer_env *env, unsigned type, const char *who, coffer_backup **out)
{
	if (coffer_backup_type_name(type) == NULL)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL, "unknown backup type %u", type);
	if ((type == COFFER_BACKUP_INCREMENTAL || type == COFFER_BACKUP_DIFFERENTIAL) &&
	    env->opts.circular_logging)
		return CF_ERROR(COFFER_E_CIRCULAR_LOGGING, CF_OBJ(.file = env->dir),
				"an %s backup needs the log since the last backup, but the store in \"%s\" "
				"runs with circular logging",
				coffer_backup_type_name(type), env->dir);
	if (atomic_load(&env->fatal))
		return CF_ERROR(COFFER_E_FATAL, CF_OBJ(.file = env->dir), "%s", env->fatal_msg);
	coffer_backup *b = calloc(1, sizeof *b);
	if (b == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a backup");
	b->env = env;
	b->rfd = -1;
	b->info.type = type;
	b->info.start_us = now_us();
	snprintf(b->info.who, sizeof b->info.who, "%s", who ? who : "unknown");
	if (getrandom(b->info.id, 16, 0) != 16) {
		free(b);
		return CF_ERROR(COFFER_E_IO, CF_OBJ(.sys_errno = errno), "no random bytes for a backup id");
	}
	pthread_mutex_lock(&env->backup_mu);
	if (env->backup) {
		struct coffer_backup_info *r = &env->backup->info;
		char when[64];
		time_t t = (time_t)(r->start_us / 1000000);
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
		pthread_mutex_unlock(&env->backup_mu);
		int rc = CF_ERROR(COFFER_E_BACKUP_IN_PROGRESS, CF_OBJ(.peer = r->who),
				  "a %s backup started by %s at %s is still running",
				  coffer_backup_type_name(r->type), r->who, when);
		free(b);
		return rc;
	}
	env->backup = b;
	pthread_mutex_unlock(&env->backup_mu);

	int rc;
	struct cf_header h;
	pthread_mutex_lock(&env->hdr_mu);
	h = env->hdr;
	pthread_mutex_unlock(&env->hdr_mu);
	memcpy(b->info.signature, h.signature, 16);
	b->info.page_size = env->page_size;

	if (type == COFFER_BACKUP_FULL || type == COFFER_BACKUP_COPY) {
		/* Hold circular truncation at the current redo, then move it. */
		atomic_store(&env->backup_hold_gen, CF_LSN_GEN(env->ckpt_redo));
		CF_GO(rc, cf_env_checkpoint(env));
		b->info.redo_lsn = env->ckpt_redo;
		b->info.gen_first = CF_LSN_GEN(b->info.redo_lsn);
		atomic_store(&env->backup_hold_gen, b->info.gen_first);
		struct coffer_env_info ei;
		CF_GO(rc, coffer_env_info(env, &ei));
		b->info.npages = ei.pages;
		/* The header snapshot the set carries: a restored store must be
		 * recovered from the set's redo position before use. */
		h.state = CF_DB_NEEDS_RECOVERY;
		h.redo_lsn = b->info.redo_lsn;
		h.min_gen = b->info.gen_first;
		h.clean_end_lsn = 0;
		b->hdr_snapshot = aligned_alloc(64, 2 * (size_t)env->page_size);
		if (b->hdr_snapshot == NULL) {
			rc = CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the header snapshot");
			goto err;
		}
		cf_header_encode(&h, b->hdr_snapshot, CF_PGNO_HEADER_A);
		cf_header_encode(&h, b->hdr_snapshot + env->page_size, CF_PGNO_HEADER_B);
		/* The pages are read front to back through a descriptor of the
		 * backup's own, marked sequential (a larger read-ahead window),
		 * so that the pager's random reads keep their own. Without one
		 * (no descriptor left), the store's descriptor serves. */
		if (cf_open(&b->rfd, env->dbpath, O_RDONLY | O_CLOEXEC, 0) == COFFER_OK)
			(void)posix_fadvise(b->rfd, 0, 0, POSIX_FADV_SEQUENTIAL);
		else
			coffer_error_clear();
	} else {
		const struct cf_backup_info *full = &h.last[0], *inc = &h.last[1];
		if (!full->valid) {
			rc = CF_ERROR(COFFER_E_BACKUP_NO_FULL, CF_OBJ(.file = env->dir),
				      "the store in \"%s\" has no full backup to base an %s backup on",
				      env->dir, coffer_backup_type_name(type));
			goto err;
		}
		const struct cf_backup_info *base =
			type == COFFER_BACKUP_INCREMENTAL && inc->valid ? inc : full;
		memcpy(b->info.parent_id, base->id, 16);
		b->info.gen_first = base->gen_hi + 1;
		atomic_store(&env->backup_hold_gen, b->info.gen_first);
		uint32_t cur = cf_log_current_gen(env->log);
		for (uint32_t g = b->info.gen_first; g <= cur; g++)
			if (!gen_present(env, g)) {
				rc = CF_ERROR(COFFER_E_LOG_MISSING, CF_OBJ(.file = env->logdir, CF_GEN(g)),
					      "an %s backup needs log generation %u (after the last %s backup), "
					      "but it was deleted%s; take a full backup",
					      coffer_backup_type_name(type), g,
					      base == full ? "full" : "incremental",
					      type == COFFER_BACKUP_DIFFERENTIAL && inc->valid
						      ? " by an incremental backup"
						      : "");
				goto err;
			}
	}
	backup_event(b, COFFER_EV_BACKUP_STARTED, NULL, "%s backup started by %s",
		     coffer_backup_type_name(type), b->info.who);
	*out = b;
	return COFFER_OK;
err:
	release(b);
	return rc;
}

const struct coffer_backup_info *coffer_backup_get_info(const coffer_backup *b)
{
	return &b->info;
}

int coffer_backup_read_pages(coffer_backup *b, uint64_t first, uint32_t count, void *buf)
{
	coffer_env *env = b->env;
	uint32_t ps = env->page_size;
	if (b->hdr_snapshot == NULL)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL, "an %s backup copies no pages",
				coffer_backup_type_name(b->info.type));
	if (first + count > b->info.npages || first + count < first)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, CF_OBJ(.file = env->dbpath, CF_PAGE(first)),
				"pages %llu..%llu are past the %llu pages of the backup",
				(unsigned long long)first, (unsigned long long)(first + count - 1),
				(unsigned long long)b->info.npages);
	uint8_t *out = buf;
	uint64_t pos = first;
	/* Header copies: the stamped snapshot. */
	while (pos < CF_PGNO_META && pos < first + count) {
		memcpy(out + (pos - first) * ps, b->hdr_snapshot + pos * ps, ps);
		pos++;
	}
	if (pos == first + count)
		return COFFER_OK;
	uint64_t n = first + count - pos;
	uint8_t *dst = out + (pos - first) * ps;
	int fd = b->rfd >= 0 ? b->rfd : env->fd;
	int rc = cf_pread_full(fd, env->dbpath, dst, n * ps, pos * ps);
	if (rc == COFFER_E_SHORT_READ) {
		/* The file ends before npages: pages allocated but never
		 * written read as zeroes (their content is in the log). */
		coffer_error_clear();
		memset(dst, 0, n * ps);
		struct stat st;
		if (fstat(fd, &st) != 0)
			return cf_error_sys("stat", env->dbpath, -1);
		uint64_t have = (uint64_t)st.st_size > pos * ps ? ((uint64_t)st.st_size - pos * ps) / ps : 0;
		if (have > n)
			have = n;
		rc = have ? cf_pread_full(fd, env->dbpath, dst, have * ps, pos * ps) : COFFER_OK;
	}
	if (rc)
		return rc;
	for (uint64_t i = 0; i < n; i++) {
		uint8_t *pg = dst + i * ps;
		cf_pgno pgno = (cf_pgno)(pos + i);
		enum cf_page_state st = cf_page_verify(pg, ps, pgno);
		if (st == CF_PAGE_OK || st == CF_PAGE_ZERO)
			continue;
		/* Maybe torn by a page write in flight: re-read with writes held. */
		cf_pager_io_hold(env->pager);
		rc = cf_pread_full(env->fd, env->dbpath, pg, ps, (uint64_t)pgno * ps);
		cf_pager_io_release(env->pager);
		if (rc)
			return rc;
		st = cf_page_verify(pg, ps, pgno);
		if (st != CF_PAGE_OK && st != CF_PAGE_ZERO) {
			rc = cf_page_error(st, pg, ps, pgno, env->dbpath);
			cf_env_page_damage_event(env, st, cf_get64(pg), cf_page_checksum(pg, ps), 0);
			return rc;
		}
	}
	return COFFER_OK;
}

int coffer_backup_roll(coffer_backup *b)
{
	/* A time mark at the end of the set's log: point-in-time recovery to
	 * any moment up to here is then known to be reachable. */
	coffer_env *env = b->env;
	uint8_t mark[16];
	memcpy(mark, "ROLLTIME", 8);
	int64_t t = now_us();
	memcpy(mark + 8, &t, 8);
	cf_log_in rec = {.type = CF_LOG_NOOP, .p1 = mark, .n1 = sizeof mark};
	pthread_mutex_lock(&env->write_mu);
	int rc = cf_log_append(env->log, &rec, 1, NULL, NULL);
	pthread_mutex_unlock(&env->write_mu);
	if (rc)
		return cf_env_set_fatal(env, rc, "marking the end of a backup's log");
	uint32_t closed;
	CF_RET(cf_log_roll(env->log, &closed));
	b->info.gen_last = closed;
	b->rolled = 1;
	if (b->info.gen_last < b->info.gen_first)
		return CF_ERROR(COFFER_E_INTERNAL, NULL, "log roll closed generation %u before %u", closed,
				b->info.gen_first);
	return COFFER_OK;
}

int coffer_backup_open_log(coffer_backup *b, uint32_t gen, int *fd, uint64_t *size)
{
	coffer_env *env = b->env;
	if (!b->rolled || gen < b->info.gen_first || gen > b->info.gen_last)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, CF_OBJ(CF_GEN(gen)),
				"log generation %u is not part of this backup (%u..%u)", gen,
				b->info.gen_first, b->info.gen_last);
	char path[4096];
	snprintf(path, sizeof path, "%s/%010u.log", env->logdir, gen);
	int rc = cf_open(fd, path, O_RDONLY, 0);
	if (rc == COFFER_E_FILE_NOT_FOUND)
		return CF_ERROR(COFFER_E_LOG_MISSING, CF_OBJ(.file = path, CF_GEN(gen)),
				"log generation %u that the backup needs is missing from \"%s\"", gen,
				env->logdir);
	CF_RET(rc);
	struct stat st;
	if (fstat(*fd, &st) != 0) {
		rc = cf_error_sys("stat", path, -1);
		close(*fd);
		return rc;
	}
	*size = (uint64_t)st.st_size;
	return COFFER_OK;
}

/* Log the new history (HEADER + COMMIT), flush, write the header. */
static int record_history(coffer_env *env, const struct cf_header *nh)
{
	uint8_t hist[CF_HISTORY_SIZE], commit[CF_LOG_COMMIT_LEN];
	cf_header_encode_history(nh, hist);
	pthread_mutex_lock(&env->write_mu);
	cf_log_encode_commit(commit, ++env->txn_seq, now_us());
	cf_log_in recs[2] = {
		{.type = CF_LOG_HEADER, .p1 = hist, .n1 = sizeof hist},
		{.type = CF_LOG_COMMIT, .p1 = commit, .n1 = sizeof commit},
	};
	cf_lsn end;
	int rc = cf_log_append(env->log, recs, 2, NULL, &end);
	pthread_mutex_unlock(&env->write_mu);
	if (rc)
		return cf_env_set_fatal(env, rc, "logging the backup history");
	rc = cf_log_flush(env->log, end);
	if (rc)
		return cf_env_set_fatal(env, rc, "flushing the backup history");
	pthread_mutex_lock(&env->hdr_mu);
	memcpy(env->hdr.last, nh->last, sizeof env->hdr.last);
	rc = cf_header_write(env->fd, env->dbpath, &env->hdr);
	pthread_mutex_unlock(&env->hdr_mu);
	return rc;
}

int coffer_backup_end(coffer_backup *b, uint32_t copied_through, struct coffer_backup_result *res)
{
	coffer_env *env = b->env;
	struct coffer_backup_result r = {0};
	int rc = COFFER_OK;
	if (!b->rolled) {
		rc = CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL, "the backup ended before its log roll");
		goto err;
	}
	if (copied_through < b->info.gen_last) {
		rc = CF_ERROR(COFFER_E_LOG_NOT_COPIED, CF_OBJ(.file = env->logdir, CF_GEN(copied_through + 1)),
			      "the backup client confirmed log generations only through %u of %u..%u; "
			      "nothing was recorded and no log was deleted",
			      copied_through, b->info.gen_first, b->info.gen_last);
		goto err;
	}
	r.end_us = now_us();
	if (b->info.type != COFFER_BACKUP_COPY) {
		struct cf_header nh;
		pthread_mutex_lock(&env->hdr_mu);
		nh = env->hdr;
		pthread_mutex_unlock(&env->hdr_mu);
		struct cf_backup_info e = {.type = b->info.type, .valid = 1,
					   .gen_lo = b->info.gen_first, .gen_hi = b->info.gen_last,
					   .start_us = b->info.start_us, .end_us = r.end_us,
					   .end_lsn = cf_log_end(env->log)};
		memcpy(e.id, b->info.id, 16);
		if (b->info.type == COFFER_BACKUP_FULL) {
			nh.last[0] = e;
			memset(&nh.last[1], 0, sizeof nh.last[1]);
			memset(&nh.last[2], 0, sizeof nh.last[2]);
		} else if (b->info.type == COFFER_BACKUP_INCREMENTAL) {
			nh.last[1] = e;
		} else {
			nh.last[2] = e;
		}
		CF_GO(rc, record_history(env, &nh));
	}
	if (b->info.type == COFFER_BACKUP_FULL || b->info.type == COFFER_BACKUP_INCREMENTAL) {
		/* Move the redo LSN past the roll so that no generation the set
		 * holds is needed by recovery, then delete them. A failure from
		 * here on fails the call although the backup is recorded: the
		 * client cannot tell, and keeps its set (cmd_backup.c). Test hook
		 * backup.end.truncate fails this step. */
		int inj = CF_INJECT("backup.end.truncate");
		if (inj) {
			rc = CF_ERROR(COFFER_E_IO, CF_OBJ(.file = env->logdir, .sys_errno = inj),
				      "injected failure (%s) before deleting the log generations of the %s "
				      "backup, which is recorded",
				      strerror(inj), coffer_backup_type_name(b->info.type));
			goto err;
		}
		CF_GO(rc, cf_env_checkpoint(env));
		uint32_t keep = b->info.gen_last + 1;
		if (CF_LSN_GEN(env->ckpt_redo) < keep)
			keep = CF_LSN_GEN(env->ckpt_redo);
		uint32_t lo = 0, hi = 0, deleted = 0;
		if (cf_log_scan_dir(env->logdir, &lo, &hi) == COFFER_OK && lo < keep) {
			CF_GO(rc, cf_log_truncate(env->log, keep, &deleted));
			if (deleted) {
				r.truncated_from = lo;
				r.truncated_to = keep - 1;
				if (env->evlog) {
					char range[48];
					snprintf(range, sizeof range, "%u..%u", lo, keep - 1);
					coffer_evfield f[2] = {{"GENERATIONS", range},
							       {"REASON", coffer_backup_type_name(b->info.type)}};
					coffer_event_write(env->evlog, COFFER_EV_LOG_TRUNCATED, f, 2,
							   "log generations %s deleted after a %s backup", range,
							   coffer_backup_type_name(b->info.type));
				}
			}
		}
	}
	backup_event(b, COFFER_EV_BACKUP_COMPLETED, NULL, "%s backup completed: log generations %u..%u",
		     coffer_backup_type_name(b->info.type), b->info.gen_first, b->info.gen_last);
	if (res)
		*res = r;
	release(b);
	return COFFER_OK;
err:
	backup_event(b, COFFER_EV_BACKUP_FAILED, coffer_error_last(), NULL);
	{
		coffer_error saved = *coffer_error_last();
		release(b);
		*(coffer_error *)coffer_error_last() = saved;
	}
	return rc;
}

void coffer_backup_abort(coffer_backup *b, const coffer_error *err)
{
	if (b == NULL)
		return;
	coffer_error e;
	if (err)
		e = *err;
	else {
		memset(&e, 0, sizeof e);
		e.code = COFFER_E_BACKUP_ABORTED;
		e.page = e.generation = e.offset = COFFER_NONE;
		snprintf(e.message, sizeof e.message, "the %s backup was abandoned before it completed",
			 coffer_backup_type_name(b->info.type));
	}
	backup_event(b, COFFER_EV_BACKUP_FAILED, &e, NULL);
	release(b);
}

int coffer_backup_status(coffer_env *env, struct coffer_backup_status *st)
{
	memset(st, 0, sizeof *st);
	pthread_mutex_lock(&env->backup_mu);
	if (env->backup) {
		st->running = 1;
		st->type = env->backup->info.type;
		memcpy(st->who, env->backup->info.who, sizeof st->who);
		st->start_us = env->backup->info.start_us;
	}
	pthread_mutex_unlock(&env->backup_mu);
	pthread_mutex_lock(&env->hdr_mu);
	for (int i = 0; i < 3; i++) {
		const struct cf_backup_info *bi = &env->hdr.last[i];
		st->last[i].valid = (int)bi->valid;
		memcpy(st->last[i].id, bi->id, 16);
		st->last[i].gen_first = bi->gen_lo;
		st->last[i].gen_last = bi->gen_hi;
		st->last[i].start_us = bi->start_us;
		st->last[i].end_us = bi->end_us;
	}
	pthread_mutex_unlock(&env->hdr_mu);
	return COFFER_OK;
}
