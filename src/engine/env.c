/*
 * env.c - opening, creating, checkpointing and closing a store.
 *
 * Open: lock DIR -> create the store if asked and absent -> read the header
 * (both copies) -> read the checkpoint -> replay the log from its redo LSN
 * (recovery.c) -> drop generations past the last complete commit -> open
 * the log for appending -> write every replayed page, write a checkpoint ->
 * mark the header dirty -> start the background checkpointer.
 *
 * Checkpoint: under the writer lock take C = end of log and make C the
 * full-image threshold (the first change of any page after C is logged as a
 * full image) -> flush the log -> write every dirty page and fdatasync ->
 * write DIR/checkpoint with redo C -> update the header -> with circular
 * logging delete generations before C's.
 *
 * Close: stop the checkpointer -> checkpoint -> header clean -> close.
 *
 * Sticky failure: a failed log append or flush, or a failed page write-back
 * marks the env fatal (cf_env_set_fatal): writes are refused with
 * COFFER_E_FATAL until the store is reopened, and event 1004 says why.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "engine/env.h"

extern char *program_invocation_short_name;

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void coffer_env_options_init(coffer_env_options *o)
{
	memset(o, 0, sizeof *o);
	o->version = COFFER_ENV_OPTIONS_VERSION;
}

static void ev_str(coffer_evfield *f, const char *k, const char *v)
{
	f->key = k;
	f->value = v;
}

int cf_env_set_fatal(coffer_env *env, int code, const char *what)
{
	/* The message is written before the flag is published: a writer that
	 * sees env->fatal quotes fatal_msg at once, from another thread. */
	if (atomic_exchange(&env->fatal_claimed, 1) == 0) {
		const coffer_error *e = coffer_error_last();
		snprintf(env->fatal_msg, sizeof env->fatal_msg,
			 "the store stopped accepting writes after an error while %s: %s (%s); "
			 "restart to recover",
			 what, e->message, coffer_code_name(code) ? coffer_code_name(code) : "?");
		env->fatal_code = code;
		atomic_store(&env->fatal, 1);
		if (env->evlog) {
			coffer_evfield f[1];
			ev_str(&f[0], "WHILE", what);
			coffer_event_error(env->evlog, COFFER_EV_FATAL_WRITE, e, f, 1);
		}
	}
	return code;
}

void cf_env_page_damage_event(coffer_env *env, enum cf_page_state st, uint64_t stored,
			      uint64_t computed, uint64_t suppressed)
{
	if (env->evlog == NULL)
		return;
	coffer_error saved = *coffer_error_last();
	char sv[24], cv[24], sup[24];
	coffer_evfield f[3];
	size_t n = 0;
	if (st == CF_PAGE_BAD_CHECKSUM) {
		snprintf(sv, sizeof sv, "0x%016llx", (unsigned long long)stored);
		snprintf(cv, sizeof cv, "0x%016llx", (unsigned long long)computed);
		f[n++] = (coffer_evfield){"STORED", sv};
		f[n++] = (coffer_evfield){"COMPUTED", cv};
	}
	if (suppressed) {
		snprintf(sup, sizeof sup, "%llu", (unsigned long long)suppressed);
		f[n++] = (coffer_evfield){"SUPPRESSED", sup};
	}
	coffer_event_error(env->evlog, COFFER_EV_PAGE_CHECKSUM, &saved, f, n);
	*(coffer_error *)coffer_error_last() = saved;
}

static void page_damage_cb(void *arg, cf_pgno pgno, enum cf_page_state st, uint64_t stored,
			   uint64_t computed, uint64_t suppressed)
{
	(void)pgno; /* in the error record */
	cf_env_page_damage_event(arg, st, stored, computed, suppressed);
}

static int flush_log_cb(void *arg, cf_lsn lsn)
{
	coffer_env *env = arg;
	if (env->log == NULL) /* recovery: the log is already on disk */
		return COFFER_OK;
	return cf_log_flush(env->log, lsn);
}

static int join(char **out, const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 2;
	*out = malloc(n);
	if (*out == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory");
	snprintf(*out, n, "%s/%s", a, b);
	return COFFER_OK;
}

/* ---- creating a store ---- */

/* A creation cut by a crash leaves DIR/log (and maybe DIR/checkpoint) but no
 * coffer.db: the log is then generation 1 alone, with no record, and the
 * checkpoint (if any) carries the log's signature. Remove those pieces so
 * the creation can start again; anything else is somebody's data and stays. */
static int interrupted_creation(coffer_env *env)
{
	uint32_t lo, hi;
	if (cf_log_scan_dir(env->logdir, &lo, &hi) != COFFER_OK || lo != 1 || hi != 1)
		return 0;
	cf_log_reader *r;
	if (cf_log_reader_open(&r, env->logdir, NULL, CF_LSN(1, CF_LOG_HDR_SIZE)) != COFFER_OK)
		return 0;
	cf_log_rec rec;
	int empty = cf_log_reader_next(r, &rec) == COFFER_E_NOT_FOUND;
	uint8_t sig[16];
	const struct cf_log_file_header *lh = cf_log_reader_header(r);
	if (lh)
		memcpy(sig, lh->sig, 16);
	cf_log_reader_close(r);
	if (!empty || lh == NULL)
		return 0;
	struct cf_checkpoint ck;
	int crc = cf_checkpoint_read(env->ckptpath, &ck);
	if (crc == COFFER_OK && memcmp(ck.signature, sig, 16) != 0)
		return 0;
	if (crc != COFFER_OK && crc != COFFER_E_FILE_NOT_FOUND && crc != COFFER_E_CHECKPOINT_CORRUPT)
		return 0;
	char path[4096];
	snprintf(path, sizeof path, "%s/%010u.log", env->logdir, 1u);
	if (cf_os.unlink(path) != 0 && errno != ENOENT)
		return 0;
	cf_os.unlink(env->ckptpath);
	cf_os.rmdir(env->logdir);
	cf_fsync_dir(env->dir);
	return 1;
}

static int create_store(coffer_env *env)
{
	const coffer_env_options *o = &env->opts;
	uint32_t ps = o->page_size ? o->page_size : CF_PAGE_SIZE_DEFAULT;
	if (ps < CF_PAGE_SIZE_MIN || ps > CF_PAGE_SIZE_MAX || (ps & (ps - 1)))
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL,
				"page size %u is not a power of two from %u to %u", ps,
				CF_PAGE_SIZE_MIN, CF_PAGE_SIZE_MAX);
	struct cf_header h = {.version = CF_HEADER_VERSION, .page_size = ps, .state = CF_DB_CLEAN};
	if (getrandom(h.signature, sizeof h.signature, 0) != (ssize_t)sizeof h.signature)
		return CF_ERROR(COFFER_E_IO, CF_OBJ(.sys_errno = errno),
				"could not read random bytes for the database signature: %s",
				strerror(errno));
	h.created_us = now_us();
	h.redo_lsn = CF_LSN(1, CF_LOG_HDR_SIZE);
	h.min_gen = 1;

	/* The log and the checkpoint first: a database file without them is
	 * never left behind as a "store" (the file is created last, by rename). */
	cf_log_options lo = {.file_size = o->log_file_size};
	int rc = cf_log_create(env->logdir, h.signature, &lo);
	if (rc == COFFER_E_EXISTS && interrupted_creation(env)) {
		coffer_error_clear();
		rc = cf_log_create(env->logdir, h.signature, &lo);
	}
	if (rc == COFFER_E_EXISTS)
		return CF_ERROR(COFFER_E_EXISTS, CF_OBJ(.file = env->logdir),
				"\"%s\" holds log files but no database file; refusing to create a "
				"store over them",
				env->logdir);
	CF_RET(rc);
	struct cf_checkpoint c = {.redo = h.redo_lsn, .time_us = h.created_us};
	memcpy(c.signature, h.signature, 16);
	CF_RET(cf_checkpoint_write(env->ckptpath, &c));

	size_t len = (size_t)3 * ps;
	uint8_t *buf = aligned_alloc(4096, len);
	if (buf == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory to create the store");
	h.counter = 1;
	cf_header_encode(&h, buf, CF_PGNO_HEADER_A);
	cf_header_encode(&h, buf + ps, CF_PGNO_HEADER_B);
	uint8_t *m = buf + 2 * ps;
	cf_page_init(m, ps, CF_PGNO_META, CF_PT_META);
	cf_put32(m + CF_META_NPAGES, CF_PGNO_FIRST_FREE);
	cf_page_seal(m, ps);
	rc = cf_durable_write_file(env->dbpath, buf, len, 0600);
	free(buf);
	return rc;
}

/* ---- checkpoint ---- */

static int header_update(coffer_env *env, uint32_t state, cf_lsn redo)
{
	pthread_mutex_lock(&env->hdr_mu);
	env->hdr.state = state;
	env->hdr.redo_lsn = redo;
	env->hdr.min_gen = CF_LSN_GEN(redo);
	if (state == CF_DB_CLEAN)
		env->hdr.clean_end_lsn = redo;
	int rc = cf_header_write(env->fd, env->dbpath, &env->hdr);
	pthread_mutex_unlock(&env->hdr_mu);
	return rc;
}

static int checkpoint(coffer_env *env, uint32_t state)
{
	int rc;
	pthread_mutex_lock(&env->ckpt_run_mu);
	pthread_mutex_lock(&env->write_mu);
	cf_lsn c = cf_log_end(env->log);
	atomic_store(&env->fpi_threshold, c);
	pthread_mutex_unlock(&env->write_mu);

	CF_GO(rc, cf_log_flush(env->log, c));
	cf_pager_gc(env->pager, cf_env_horizon(env));
	rc = cf_pager_writeback(env->pager, CF_LSN_MAX, NULL);
	if (rc) {
		cf_env_set_fatal(env, rc, "writing pages for a checkpoint");
		goto err;
	}
	struct cf_checkpoint ck = {.redo = c, .time_us = now_us()};
	memcpy(ck.signature, env->hdr.signature, 16);
	CF_GO(rc, cf_checkpoint_write(env->ckptpath, &ck));
	CF_GO(rc, header_update(env, state, c));
	env->ckpt_redo = c;
	if (env->opts.circular_logging) {
		uint32_t deleted = 0, keep = CF_LSN_GEN(c), hold = atomic_load(&env->backup_hold_gen);
		if (hold && hold < keep) /* a running backup still copies these */
			keep = hold;
		CF_GO(rc, cf_log_truncate(env->log, keep, &deleted));
		if (deleted && env->evlog) {
			char range[64];
			snprintf(range, sizeof range, "below %u", CF_LSN_GEN(c));
			coffer_evfield f[2];
			ev_str(&f[0], "GENERATIONS", range);
			ev_str(&f[1], "REASON", "circular logging");
			coffer_event_write(env->evlog, COFFER_EV_LOG_TRUNCATED, f, 2,
					   "%u log generation(s) below %u deleted by circular logging",
					   deleted, CF_LSN_GEN(c));
		}
	}
err:
	pthread_mutex_unlock(&env->ckpt_run_mu);
	return rc;
}

int coffer_env_checkpoint(coffer_env *env)
{
	return checkpoint(env, CF_DB_DIRTY);
}

int cf_env_checkpoint(coffer_env *env)
{
	return checkpoint(env, CF_DB_DIRTY);
}

void cf_env_kick_checkpoint(coffer_env *env)
{
	cf_lsn end = atomic_load(&env->last_commit);
	uint64_t span = CF_LSN_GEN(end) > CF_LSN_GEN(env->ckpt_redo)
				? (uint64_t)(CF_LSN_GEN(end) - CF_LSN_GEN(env->ckpt_redo)) *
					  (env->opts.log_file_size ? env->opts.log_file_size : CF_LOG_FILE_DEFAULT)
				: 0;
	struct cf_pager_stats st;
	cf_pager_stats(env->pager, &st);
	uint64_t limit = env->opts.cache_bytes ? env->opts.cache_bytes : (64u << 20);
	if (span >= env->opts.checkpoint_log_bytes || st.dirty * env->page_size > limit / 2) {
		pthread_mutex_lock(&env->ckpt_mu);
		if (!env->ckpt_wanted) {
			env->ckpt_wanted = 1;
			pthread_cond_signal(&env->ckpt_cond);
		}
		pthread_mutex_unlock(&env->ckpt_mu);
	}
}

static void *ckpt_main(void *arg)
{
	coffer_env *env = arg;
	pthread_mutex_lock(&env->ckpt_mu);
	while (!env->ckpt_stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += env->opts.checkpoint_seconds;
		while (!env->ckpt_stop && !env->ckpt_wanted)
			if (pthread_cond_timedwait(&env->ckpt_cond, &env->ckpt_mu, &ts) == ETIMEDOUT)
				break;
		if (env->ckpt_stop)
			break;
		env->ckpt_wanted = 0;
		pthread_mutex_unlock(&env->ckpt_mu);
		if (!atomic_load(&env->fatal) && checkpoint(env, CF_DB_DIRTY) != COFFER_OK &&
		    env->evlog && !atomic_load(&env->fatal))
			coffer_event_error(env->evlog, COFFER_EV_FATAL_WRITE, coffer_error_last(), NULL, 0);
		pthread_mutex_lock(&env->ckpt_mu);
	}
	pthread_mutex_unlock(&env->ckpt_mu);
	return NULL;
}

/* ---- open ---- */

static void env_free(coffer_env *env)
{
	if (env->pager)
		cf_pager_close(env->pager);
	if (env->fd >= 0)
		close(env->fd);
	cf_dirlock_release(env->lock);
	pthread_mutex_destroy(&env->hdr_mu);
	pthread_mutex_destroy(&env->write_mu);
	pthread_mutex_destroy(&env->snap_mu);
	pthread_mutex_destroy(&env->ckpt_mu);
	pthread_mutex_destroy(&env->ckpt_run_mu);
	pthread_mutex_destroy(&env->backup_mu);
	pthread_cond_destroy(&env->ckpt_cond);
	free(env->dir);
	free(env->dbpath);
	free(env->logdir);
	free(env->ckptpath);
	free(env);
}

static void lsn_str(char *buf, size_t n, cf_lsn l)
{
	snprintf(buf, n, "%u:%u", CF_LSN_GEN(l), CF_LSN_OFF(l));
}

int coffer_env_open(coffer_env **out, const char *dir, const coffer_env_options *o)
{
	int rc;
	coffer_env *env = calloc(1, sizeof *env);
	if (env == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a store handle");
	env->fd = -1;
	pthread_mutex_init(&env->hdr_mu, NULL);
	pthread_mutex_init(&env->write_mu, NULL);
	pthread_mutex_init(&env->snap_mu, NULL);
	pthread_mutex_init(&env->ckpt_mu, NULL);
	pthread_mutex_init(&env->ckpt_run_mu, NULL);
	pthread_mutex_init(&env->backup_mu, NULL);
	pthread_cond_init(&env->ckpt_cond, NULL);
	if (o)
		env->opts = *o;
	else
		coffer_env_options_init(&env->opts);
	if (env->opts.checkpoint_seconds == 0)
		env->opts.checkpoint_seconds = 30;
	if (env->opts.checkpoint_log_bytes == 0)
		env->opts.checkpoint_log_bytes = 64u << 20;
	if (env->opts.cache_bytes == 0)
		env->opts.cache_bytes = 64u << 20;
	env->evlog = env->opts.evlog;
	env->dir = strdup(dir);
	if (env->dir == NULL) {
		rc = CF_ERROR(COFFER_E_NOMEM, NULL, "no memory");
		goto err;
	}
	CF_GO(rc, join(&env->dbpath, dir, "coffer.db"));
	CF_GO(rc, join(&env->logdir, dir, "log"));
	CF_GO(rc, join(&env->ckptpath, dir, "checkpoint"));

	if (env->opts.flags & COFFER_ENV_CREATE)
		CF_GO(rc, cf_mkdir_p(dir, 0700));
	CF_GO(rc, cf_dirlock_acquire(&env->lock, dir, program_invocation_short_name));

	struct stat st;
	if (cf_os.stat(env->dbpath, &st) != 0) {
		if (errno != ENOENT) {
			rc = cf_error_sys("stat", env->dbpath, -1);
			goto err;
		}
		if (!(env->opts.flags & COFFER_ENV_CREATE)) {
			rc = CF_ERROR(COFFER_E_FILE_NOT_FOUND, CF_OBJ(.file = env->dbpath),
				      "there is no store in \"%s\" (no coffer.db)", dir);
			goto err;
		}
		CF_GO(rc, create_store(env));
	}
	CF_GO(rc, cf_open(&env->fd, env->dbpath, O_RDWR, 0));
	unsigned damaged = 0;
	CF_GO(rc, cf_header_read(env->fd, env->dbpath, &env->hdr, &damaged));
	if (damaged && env->evlog) {
		coffer_evfield f[2];
		ev_str(&f[0], "FILE", env->dbpath);
		ev_str(&f[1], "COPY", damaged & CF_HEADER_A_DAMAGED ? "A (page 0)" : "B (page 1)");
		coffer_event_write(env->evlog, COFFER_EV_HEADER_COPY_DAMAGED, f, 2,
				   "header copy %s of \"%s\" is damaged; the other copy was used",
				   f[1].value, env->dbpath);
	}
	int hard = (env->opts.flags & COFFER_ENV_HARD_RECOVERY) != 0;
	if (env->hdr.state == CF_DB_NEEDS_RECOVERY && !hard) {
		rc = CF_ERROR(COFFER_E_NEEDS_HARD_RECOVERY, CF_OBJ(.file = env->dbpath),
			      "the store in \"%s\" was restored without recovery; run 'coffer recover "
			      "%s' before opening it",
			      dir, dir);
		goto err;
	}
	env->page_size = env->hdr.page_size;
	uint32_t prev_state = env->hdr.state;

	struct cf_checkpoint ck;
	cf_lsn redo = env->hdr.redo_lsn;
	rc = cf_checkpoint_read(env->ckptpath, &ck);
	if (rc == COFFER_OK) {
		if (memcmp(ck.signature, env->hdr.signature, 16) != 0) {
			rc = CF_ERROR(COFFER_E_SIGNATURE_MISMATCH, CF_OBJ(.file = env->ckptpath),
				      "checkpoint file \"%s\" belongs to another database",
				      env->ckptpath);
			goto err;
		}
		redo = ck.redo;
	} else if (rc == COFFER_E_CHECKPOINT_CORRUPT || rc == COFFER_E_FILE_NOT_FOUND) {
		/* The header records the redo LSN of the same checkpoint (it
		 * is written right after the file): fall back to it. */
		if (env->evlog) {
			char lsn[32];
			lsn_str(lsn, sizeof lsn, redo);
			coffer_evfield f[1];
			ev_str(&f[0], "REDO_LSN", lsn);
			coffer_event_error(env->evlog, COFFER_EV_CHECKPOINT_FALLBACK, coffer_error_last(),
					   f, 1);
		}
		coffer_error_clear();
	} else {
		goto err;
	}

	CF_GO(rc, cf_pager_open(&env->pager, env->fd, env->dbpath, env->page_size,
				env->opts.cache_bytes, flush_log_cb, env));
	cf_pager_on_damage(env->pager, page_damage_cb, env);
	struct cf_recovery_result res;
	rc = cf_recover(env, redo, &res);
	if (rc) {
		if (rc != COFFER_E_NOMEM && rc != COFFER_E_LOG_MISSING && rc != COFFER_E_LOG_GAP &&
		    rc != COFFER_E_LOG_MISMATCH)
			cf_error_prefix("recovery from %u:%u failed", CF_LSN_GEN(redo), CF_LSN_OFF(redo));
		goto err;
	}
	/* A target past the last commit is reached when the log is known to
	 * go on past it: a later roll mark (time) or the end of the log (LSN). */
	int reached = res.stopped_early ||
		      (env->opts.until_us && env->opts.until_us <= res.marked_us) ||
		      (env->opts.until_lsn && env->opts.until_lsn <= res.end);
	if ((env->opts.until_us || env->opts.until_lsn) && !reached) {
		rc = CF_ERROR(COFFER_E_UNTIL_NOT_REACHED, CF_OBJ(.file = env->logdir, CF_GEN(res.gen_last)),
			      "the log ends at %u:%u before the recovery target; the last commit "
			      "replayed was at %lld µs",
			      CF_LSN_GEN(res.end), CF_LSN_OFF(res.end), (long long)res.last_commit_us);
		goto err;
	}
	/* cf_log_open deletes the generations after res.end: they hold only a
	 * batch cut by the crash, or history after a recovery target. */
	cf_log_options lo = {.file_size = env->opts.log_file_size,
			     .circular = env->opts.circular_logging,
			     .evlog = env->evlog};
	CF_GO(rc, cf_log_open(&env->log, env->logdir, env->hdr.signature, res.end, &lo));
	atomic_store(&env->last_commit, res.end);
	atomic_store(&env->fpi_threshold, res.end);

	/* Make the replayed pages durable and start from a fresh checkpoint. */
	CF_GO(rc, checkpoint(env, CF_DB_DIRTY));
	if (damaged)
		CF_GO(rc, header_update(env, CF_DB_DIRTY, env->ckpt_redo));

	if (env->evlog && (prev_state != CF_DB_CLEAN || res.commits)) {
		char from[32], to[32], commits[32], pages[32], torn[32];
		lsn_str(from, sizeof from, redo);
		lsn_str(to, sizeof to, res.end);
		snprintf(commits, sizeof commits, "%llu", (unsigned long long)res.commits);
		snprintf(pages, sizeof pages, "%llu", (unsigned long long)res.pages);
		coffer_evfield f[6];
		ev_str(&f[0], "FROM_LSN", from);
		ev_str(&f[1], "TO_LSN", to);
		ev_str(&f[2], "COMMITS", commits);
		ev_str(&f[3], "PAGES", pages);
		ev_str(&f[4], "MODE", hard ? "hard recovery" : "crash recovery");
		size_t nf = 5;
		if (res.torn) {
			lsn_str(torn, sizeof torn, res.torn_at);
			ev_str(&f[nf++], "TORN_AT", torn);
		}
		if (res.torn) {
			coffer_evfield tf[2] = {{"TORN_AT", torn}, {"DIR", env->logdir}};
			coffer_event_write(env->evlog, COFFER_EV_LOG_TORN_TAIL, tf, 2,
					   "the log ended at a torn record at %s (generation %u, offset %u); "
					   "the commit it belonged to was never acknowledged",
					   torn, CF_LSN_GEN(res.torn_at), CF_LSN_OFF(res.torn_at));
		}
		coffer_event_write(env->evlog, hard ? COFFER_EV_RECOVERY_COMPLETED : COFFER_EV_CRASH_RECOVERY,
				   f, nf, "replayed %llu commit(s), %llu page change(s) from %s to %s%s",
				   (unsigned long long)res.commits, (unsigned long long)res.pages, from,
				   to, res.torn ? " (the log ended at a torn record)" : "");
	}

	if (pthread_create(&env->ckpt_thread, NULL, ckpt_main, env) != 0) {
		rc = CF_ERROR(COFFER_E_NOMEM, NULL, "could not start the checkpoint thread");
		goto err;
	}
	env->ckpt_running = 1;
	*out = env;
	return COFFER_OK;
err:
	if (env->log) {
		cf_log_close(env->log);
		env->log = NULL;
	}
	{
		/* Keep the error record across the clean-up. */
		coffer_error saved = *coffer_error_last();
		env_free(env);
		*(coffer_error *)coffer_error_last() = saved;
	}
	return rc;
}

int coffer_env_close(coffer_env *env)
{
	if (env == NULL)
		return COFFER_OK;
	int rc = COFFER_OK;
	if (env->ckpt_running) {
		pthread_mutex_lock(&env->ckpt_mu);
		env->ckpt_stop = 1;
		pthread_cond_signal(&env->ckpt_cond);
		pthread_mutex_unlock(&env->ckpt_mu);
		pthread_join(env->ckpt_thread, NULL);
	}
	if (!atomic_load(&env->fatal))
		rc = checkpoint(env, CF_DB_CLEAN);
	int rc2 = cf_log_close(env->log);
	env->log = NULL;
	if (rc == COFFER_OK && rc2 != COFFER_OK && !atomic_load(&env->fatal))
		rc = rc2;
	if (rc == COFFER_OK && atomic_load(&env->fatal))
		rc = CF_ERROR(COFFER_E_FATAL, CF_OBJ(.file = env->dir), "%s", env->fatal_msg);
	coffer_error saved = *coffer_error_last();
	env_free(env);
	if (rc)
		*(coffer_error *)coffer_error_last() = saved;
	return rc;
}

int coffer_env_info(coffer_env *env, struct coffer_env_info *info)
{
	memset(info, 0, sizeof *info);
	info->page_size = env->page_size;
	memcpy(info->signature, env->hdr.signature, 16);
	info->last_commit_lsn = atomic_load(&env->last_commit);
	info->durable_lsn = cf_log_durable(env->log);
	info->redo_lsn = env->ckpt_redo;
	info->log_gen_current = cf_log_current_gen(env->log);
	info->log_gen_first = CF_LSN_GEN(env->hdr.redo_lsn);
	uint32_t lo, hi;
	if (cf_log_scan_dir(env->logdir, &lo, &hi) == COFFER_OK)
		info->log_gen_first = lo;
	info->commits = atomic_load(&env->commits);
	struct cf_pager_stats st;
	cf_pager_stats(env->pager, &st);
	info->cache_bytes = st.bytes;
	info->cache_hits = st.hits;
	info->cache_misses = st.misses;
	info->dirty_pages = st.dirty;
	info->circular_logging = env->opts.circular_logging;
	info->fatal = atomic_load(&env->fatal);
	coffer_txn *t;
	CF_RET(cf_txn_begin(env, 1, &t));
	const uint8_t *m;
	void *pin;
	cf_pageio *io = cf_txn_io(t);
	int rc = io->ops->read(io, CF_PGNO_META, &m, &pin);
	if (rc == COFFER_OK) {
		info->pages = cf_get32(m + CF_META_NPAGES);
		info->free_pages = cf_get64(m + CF_META_NFREE);
		io->ops->release(io, pin);
	}
	coffer_txn_abort(t);
	return rc;
}
