/*
 * srv_recover.c - resuming writes after the store stopped accepting them.
 *
 * The engine keeps its rule (docs/design.md section 4): after a failed log
 * write, fdatasync or page write-back the env is *fatal* and refuses every
 * write with COFFER_E_FATAL until it is reopened, because the state of the
 * page cache is then unknown. Reopening is exactly what a restart of cofferd
 * does (close without a checkpoint, open, crash recovery replays the log),
 * so cofferd does it itself once the cause, usually a full disk, is gone:
 *
 *   RUNNING  --a write job failed and coffer_env_info() says fatal-->  WAITING
 *   WAITING  --statvfs shows room and a trial write + fdatasync of
 *              DIR/.cofferd-space-check succeeds (checked every 500 ms)-->  SWAPPING
 *   SWAPPING  cut the backup sessions and wait for them; close the gate
 *             (no job runs); coffer_env_close (a fatal env writes no
 *             checkpoint); coffer_env_open (crash recovery: every
 *             acknowledged write is in the log); swap; open the gate
 *             --> RUNNING, event 1005            (open failed --> DOWN)
 *   DOWN      no store: every job gets an error; the open is retried
 *             every 500 ms --> RUNNING, event 1005
 *
 * What clients see: in WAITING reads run on the old env (a fatal env serves
 * reads of what is durable) and writes get COFFER_E_FATAL from the engine
 * with the original cause; new backup sessions are refused. During the
 * swap every job waits (the gate; it takes as long as crash recovery); in
 * DOWN every job gets the error.
 *
 * The gate is a reader-writer lock that every job holds shared while it
 * uses s->env (srv_pool.c: srv_recover_enter/leave), and the swap holds
 * exclusive; writers are preferred, so the swap waits only for the jobs
 * already running. Backup sessions run outside jobs, on threads of their
 * own, for minutes: they go through srv_recover_backup_session(), which
 * registers them so that the swap can cut their connections (shutdown) and
 * wait for them to end instead of holding the gate.
 *
 * Space needed before reopening: one log generation (the next roll) plus
 * the pages that were dirty when writes stopped (the first checkpoint
 * writes them) plus 1 MiB. If the store stops again within a minute of a
 * resume, the next reopen waits twice as long as the last (1 s .. 60 s), so
 * a failing disk does not make cofferd reopen the store in a tight loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/err.h"
#include "server/srv.h"
#include "server/srv_backup.h"

#define POLL_US 500000           /* how often WAITING and DOWN look again */
#define IDLE_WAIT_S 1            /* RUNNING: wake at least this often (stop) */
#define TRIAL_BYTES (64u << 10)  /* the trial write */
#define MARGIN_BYTES (1u << 20)
#define DEFAULT_LOG_FILE (16u << 20) /* coffer_env_options.log_file_size 0 */
#define BACKOFF_MIN_US 1000000
#define BACKOFF_MAX_US 60000000
#define REFATAL_WINDOW_US 60000000
#define CHECK_GAP_US 100000      /* between two checks that found the store healthy */
#define SAY_WHY_US 60000000      /* WAITING: say why, at most once a minute */

enum rstate { R_RUNNING, R_WAITING, R_SWAPPING, R_DOWN };

struct rsess {
	struct rsess *next;
	struct cf_stream *st;
	int cut; /* shut down by abort_sessions */
};

struct srv_recover {
	struct srv *s;
	coffer_env_options opts; /* how cofferd opened the store */
	char dir[4096];
	char scratch[4200];

	pthread_rwlock_t gate;

	pthread_mutex_t mu; /* everything below */
	pthread_cond_t cv;  /* the monitor's wake-up: a notice or stop */
	pthread_cond_t sess_cv; /* a registered session ended */
	enum rstate state;
	int kicked, stop;
	pthread_t thread;
	int running;
	struct rsess *sessions;
	unsigned nsess;
	char cause[800];       /* why writes stopped: the engine's message */
	char cause_code[64];   /* its code name */
	char down_msg[900];    /* DOWN: why the store could not be reopened */
	int down_code;
	int64_t stopped_us;    /* monotonic, when WAITING began */
	int64_t not_before_us; /* monotonic: no reopen before this */
	int64_t last_resume_us;
	int64_t next_check_us;  /* monotonic: no check_fatal before this */
	int64_t backoff_us;
	uint64_t need_bytes;
	char wait_why[256];    /* the last reason the space check said no */
	int64_t said_why_us;   /* monotonic: when it was last printed */
	unsigned aborted;      /* backup sessions ended by this failure: cut by the
				* reopen, or failed by themselves on the failing
				* store before it (a roll that met the full disk
				* may come before any write does); reported and
				* zeroed at resume */
	const coffer_env *aborted_env; /* the store those sessions ran on */
};

static void rlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void rlog(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("cofferd: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- the gate (srv_pool.c) ---- */

coffer_env *srv_recover_enter(struct srv *s)
{
	if (s->recover)
		pthread_rwlock_rdlock(&s->recover->gate);
	return s->env;
}

void srv_recover_leave(struct srv *s)
{
	if (s->recover)
		pthread_rwlock_unlock(&s->recover->gate);
}

void srv_recover_fail_job(struct srv *s, struct job *j)
{
	struct srv_recover *R = s->recover;
	char msg[1024];
	int code = COFFER_E_FATAL;
	if (R) {
		pthread_mutex_lock(&R->mu);
		snprintf(msg, sizeof msg,
			 "the store could not be reopened after it stopped accepting writes: %s "
			 "(cofferd tries again every 0.5 s)",
			 R->down_msg);
		if (R->down_code)
			code = R->down_code;
		pthread_mutex_unlock(&R->mu);
	} else {
		snprintf(msg, sizeof msg, "the store is not open");
	}
	j->ndone = j->ncmds; /* every command gets the error */
	job_fail(j, code, msg);
}

/* The engine's fatal message ends "; restart to recover": cofferd does
 * that itself. Replace the advice with ADVICE (or drop it). */
static void restart_advice(char *msg, size_t cap, const char *advice)
{
	static const char restart[] = "; restart to recover";
	size_t n = strlen(msg), k = sizeof restart - 1;
	if (n >= k && strcmp(msg + n - k, restart) == 0)
		snprintf(msg + n - k, cap - (n - k), "%s", advice);
}

void srv_recover_notice(struct srv *s, int rc, char *msg, size_t cap)
{
	struct srv_recover *R = s->recover;
	if (R == NULL || rc == COFFER_OK)
		return;
	if (rc == COFFER_E_FATAL)
		restart_advice(msg, cap,
			       "; cofferd reopens the store by itself once the disk accepts writes again");
	pthread_mutex_lock(&R->mu);
	if (R->state == R_RUNNING && !R->kicked) {
		R->kicked = 1;
		pthread_cond_signal(&R->cv);
	}
	pthread_mutex_unlock(&R->mu);
}

/* ---- backup sessions ---- */

int srv_recover_backup_session(struct srv *s, struct cf_stream *st, const struct srv_backup_opts *o,
			       const char *who)
{
	struct srv_recover *R = s->recover;
	if (R == NULL)
		return srv_backup_session(s->env, s->ev, st, o, who, &s->stopping);
	struct rsess me = {.st = st};
	pthread_mutex_lock(&R->mu);
	if (R->state != R_RUNNING) {
		int rc = CF_ERROR(COFFER_E_FATAL, CF_OBJ(.file = R->dir),
				  "cofferd stopped accepting writes (%s: %s); a backup can start once "
				  "writes resume (event 1005)",
				  R->cause_code, R->cause);
		pthread_mutex_unlock(&R->mu);
		coffer_error e = *coffer_error_last();
		cf_bkp_send_error(st, &e);
		/* Like any backup refused before it began (srv_backup.c). */
		coffer_evfield f[2] = {{"WHO", who},
				       {"TYPE", coffer_backup_type_name(o->type & ~CF_BKP_OPTIONS)}};
		coffer_event_error(s->ev, COFFER_EV_BACKUP_FAILED, &e, f, 2);
		*(coffer_error *)coffer_error_last() = e;
		return rc;
	}
	/* No swap while state is RUNNING: s->env stays this env until the
	 * session unregisters (the swap waits for it). */
	coffer_env *env = s->env;
	me.next = R->sessions;
	R->sessions = &me;
	R->nsess++;
	pthread_mutex_unlock(&R->mu);

	int rc = srv_backup_session(env, s->ev, st, o, who, &s->stopping);
	struct coffer_env_info info;
	int on_failed_store = rc == COFFER_E_FATAL || rc == COFFER_E_DISK_FULL || rc == COFFER_E_LOG_FULL ||
			      (rc != COFFER_OK && coffer_env_info(env, &info) == COFFER_OK && info.fatal);

	pthread_mutex_lock(&R->mu);
	if (me.cut || on_failed_store) {
		if (R->aborted_env != env) { /* counted for this store's failure only */
			R->aborted_env = env;
			R->aborted = 0;
		}
		R->aborted++;
	}
	for (struct rsess **pp = &R->sessions; *pp; pp = &(*pp)->next)
		if (*pp == &me) {
			*pp = me.next;
			break;
		}
	R->nsess--;
	pthread_cond_broadcast(&R->sess_cv);
	pthread_mutex_unlock(&R->mu);
	return rc;
}

/* ---- the monitor ---- */

/* Is there room to reopen and write again? Sets R->wait_why when not. */
static int space_ok(struct srv_recover *R)
{
	struct statvfs vs;
	if (statvfs(R->dir, &vs) != 0) {
		snprintf(R->wait_why, sizeof R->wait_why, "statvfs: %s", strerror(errno));
		return 0;
	}
	uint64_t avail = (uint64_t)vs.f_bavail * vs.f_frsize;
	if (avail < R->need_bytes) {
		snprintf(R->wait_why, sizeof R->wait_why,
			 "%llu bytes free, %llu needed", (unsigned long long)avail,
			 (unsigned long long)R->need_bytes);
		return 0;
	}
	/* statvfs can be optimistic (quotas, thin provisioning, a device that
	 * fails writes): write, fdatasync and remove a scratch file. */
	static const char zero[4096];
	int ok = 0, fd = open(R->scratch, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(R->wait_why, sizeof R->wait_why, "trial write: open: %s", strerror(errno));
		return 0;
	}
	size_t done = 0;
	while (done < TRIAL_BYTES) {
		ssize_t k = write(fd, zero, sizeof zero);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			snprintf(R->wait_why, sizeof R->wait_why, "trial write: %s",
				 k < 0 ? strerror(errno) : "short write");
			goto out;
		}
		done += (size_t)k;
	}
	if (fdatasync(fd) != 0) {
		snprintf(R->wait_why, sizeof R->wait_why, "trial fdatasync: %s", strerror(errno));
		goto out;
	}
	ok = 1;
out:
	close(fd);
	unlink(R->scratch);
	return ok;
}

/* RUNNING -> WAITING if the store is fatal (mu not held). */
static void check_fatal(struct srv_recover *R)
{
	struct srv *s = R->s;
	struct coffer_env_info in;
	coffer_env *env = srv_recover_enter(s);
	int fatal = env && coffer_env_info(env, &in) == COFFER_OK && in.fatal;
	uint64_t dirty = fatal ? in.dirty_pages * in.page_size : 0;
	srv_recover_leave(s);
	coffer_error_clear();
	if (!fatal) {
		/* A write failed for another reason (a damaged page...): do
		 * not look again at once, however fast writes fail. */
		pthread_mutex_lock(&R->mu);
		R->next_check_us = srv_mono_us() + CHECK_GAP_US;
		pthread_mutex_unlock(&R->mu);
		return;
	}
	/* The cause: a write transaction says it (the env's message). */
	char cause[800] = "", code[64] = "COFFER_E_FATAL";
	coffer_txn *t = NULL;
	env = srv_recover_enter(s);
	int rc = env ? coffer_txn_begin(env, 0, &t) : COFFER_E_FATAL;
	if (rc == COFFER_OK)
		coffer_txn_abort(t); /* healthy after all */
	else
		snprintf(cause, sizeof cause, "%s", coffer_error_last()->message);
	srv_recover_leave(s);
	restart_advice(cause, sizeof cause, "");
	coffer_error_clear();
	if (rc == COFFER_OK)
		return;
	/* "... (COFFER_E_LOG_FULL); restart to recover": take the code. */
	char *open_paren = strrchr(cause, '(');
	if (open_paren && strncmp(open_paren, "(COFFER_E_", 10) == 0) {
		size_t n = strcspn(open_paren + 1, ")");
		snprintf(code, sizeof code, "%.*s", (int)n, open_paren + 1);
	}
	uint32_t gen = R->opts.log_file_size ? R->opts.log_file_size : DEFAULT_LOG_FILE;
	int64_t now = srv_mono_us();
	pthread_mutex_lock(&R->mu);
	R->state = R_WAITING;
	R->stopped_us = now;
	snprintf(R->cause, sizeof R->cause, "%s", cause);
	snprintf(R->cause_code, sizeof R->cause_code, "%s", code);
	R->need_bytes = (uint64_t)gen + dirty + MARGIN_BYTES;
	if (R->last_resume_us && now - R->last_resume_us < REFATAL_WINDOW_US)
		R->backoff_us = R->backoff_us ? R->backoff_us * 2 : BACKOFF_MIN_US;
	else
		R->backoff_us = 0;
	if (R->backoff_us > BACKOFF_MAX_US)
		R->backoff_us = BACKOFF_MAX_US;
	R->not_before_us = now + R->backoff_us;
	R->wait_why[0] = '\0';
	R->said_why_us = 0;
	pthread_mutex_unlock(&R->mu);
	rlog("writes stopped: %s", cause);
	rlog("waiting for %llu bytes of room and a successful trial write in %s (checked every "
	     "0.5 s); reads go on",
	     (unsigned long long)R->need_bytes, R->dir);
}

/* Cut every registered backup session and wait until all have ended. New
 * ones are refused (state is not RUNNING). */
static void abort_sessions(struct srv_recover *R)
{
	pthread_mutex_lock(&R->mu);
	for (struct rsess *x = R->sessions; x; x = x->next) {
		if (x->st->fd >= 0)
			shutdown(x->st->fd, SHUT_RDWR);
		x->cut = 1;
	}
	/* Each fails at its next read or write of the connection (at most
	 * one engine call later) and aborts its backup. */
	while (R->nsess)
		pthread_cond_wait(&R->sess_cv, &R->mu);
	pthread_mutex_unlock(&R->mu);
}

/* SWAPPING: close the fatal store and open it again. mu not held. */
static void reopen(struct srv_recover *R)
{
	struct srv *s = R->s;
	pthread_mutex_lock(&R->mu);
	enum rstate from = R->state;
	R->state = R_SWAPPING;
	pthread_mutex_unlock(&R->mu);

	abort_sessions(R);
	int64_t t0 = srv_mono_us();
	pthread_rwlock_wrlock(&R->gate); /* no job runs from here */
	pthread_mutex_lock(&R->mu);
	if (s->env && R->aborted_env != s->env)
		R->aborted = 0; /* counted on an older store: not this failure's */
	R->aborted_env = NULL;
	pthread_mutex_unlock(&R->mu);
	if (s->env) {
		coffer_env_close(s->env); /* fatal: no checkpoint; COFFER_E_FATAL expected */
		s->env = NULL;
		coffer_error_clear();
	}
	coffer_env *env = NULL;
	int rc = coffer_env_open(&env, R->dir, &R->opts);
	coffer_error e = *coffer_error_last();
	if (rc == COFFER_OK)
		s->env = env;
	pthread_rwlock_unlock(&R->gate);
	int64_t now = srv_mono_us();

	pthread_mutex_lock(&R->mu);
	if (rc != COFFER_OK) {
		int first = from != R_DOWN || R->down_code != rc;
		R->state = R_DOWN;
		R->down_code = rc;
		snprintf(R->down_msg, sizeof R->down_msg, "%.800s (%s)", e.message,
			 coffer_code_name(rc) ? coffer_code_name(rc) : "?");
		pthread_mutex_unlock(&R->mu);
		if (first) {
			rlog("could not reopen the store: %s (%s); retrying every 0.5 s", e.message,
			     coffer_code_name(rc) ? coffer_code_name(rc) : "?");
			coffer_evfield f[1] = {{"WHILE", "reopening the store to resume writes"}};
			coffer_event_error(s->ev, COFFER_EV_FATAL_WRITE, &e, f, 1);
			coffer_error_clear();
		}
		return;
	}
	R->state = R_RUNNING;
	R->kicked = 0;
	R->last_resume_us = now;
	double down = (double)(now - R->stopped_us) / 1e6, pause = (double)(now - t0) / 1e6;
	char secs[32], paused[32], aborted[16];
	snprintf(secs, sizeof secs, "%.1f", down);
	snprintf(paused, sizeof paused, "%.3f", pause);
	snprintf(aborted, sizeof aborted, "%u", R->aborted);
	R->aborted = 0;
	char cause_code[64];
	snprintf(cause_code, sizeof cause_code, "%s", R->cause_code);
	pthread_mutex_unlock(&R->mu);
	rlog("writes resumed after recovery: the store was reopened %s s after writes stopped "
	     "(requests paused %s s, %s backup session(s) aborted)",
	     secs, paused, aborted);
	coffer_evfield f[5] = {{"DATA", R->dir},
			       {"CAUSE", cause_code},
			       {"DOWN_SECONDS", secs},
			       {"PAUSE_SECONDS", paused},
			       {"BACKUPS_ABORTED", aborted}};
	coffer_event_write(s->ev, COFFER_EV_WRITES_RESUMED, f, 5,
			   "writes resumed after recovery: the store was reopened %s s after it stopped "
			   "accepting writes (%s); requests paused %s s; %s backup session(s) aborted",
			   secs, cause_code, paused, aborted);
	coffer_error_clear();
}

static void *monitor_main(void *arg)
{
	struct srv_recover *R = arg;
	pthread_mutex_lock(&R->mu);
	while (!R->stop) {
		if (R->state == R_RUNNING) {
			int64_t wait_us = R->next_check_us - srv_mono_us();
			if (!R->kicked || wait_us > 0) {
				struct timespec ts;
				clock_gettime(CLOCK_REALTIME, &ts);
				if (R->kicked) {
					ts.tv_nsec += (long)wait_us * 1000L;
					if (ts.tv_nsec >= 1000000000L) {
						ts.tv_sec++;
						ts.tv_nsec -= 1000000000L;
					}
				} else {
					ts.tv_sec += IDLE_WAIT_S;
				}
				pthread_cond_timedwait(&R->cv, &R->mu, &ts);
				continue;
			}
			R->kicked = 0;
			pthread_mutex_unlock(&R->mu);
			check_fatal(R);
			pthread_mutex_lock(&R->mu);
			continue;
		}
		/* WAITING or DOWN: look every POLL_US. */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += POLL_US * 1000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&R->cv, &R->mu, &ts);
		if (R->stop)
			break;
		if (srv_mono_us() < R->not_before_us)
			continue;
		pthread_mutex_unlock(&R->mu);
		if (space_ok(R)) {
			reopen(R);
		} else if (srv_mono_us() - R->said_why_us >= SAY_WHY_US) {
			R->said_why_us = srv_mono_us(); /* the monitor's own fields */
			rlog("writes still stopped: %s", R->wait_why);
		}
		pthread_mutex_lock(&R->mu);
	}
	pthread_mutex_unlock(&R->mu);
	return NULL;
}

/* ---- life cycle (cofferd.c) ---- */

int srv_recover_start(struct srv *s, const coffer_env_options *opts)
{
	struct srv_recover *R = calloc(1, sizeof *R);
	if (R == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory");
	R->s = s;
	R->opts = *opts;
	R->opts.flags &= ~COFFER_ENV_CREATE; /* the store exists: never make a new one */
	snprintf(R->dir, sizeof R->dir, "%s", s->cfg->data_dir);
	snprintf(R->scratch, sizeof R->scratch, "%s/.cofferd-space-check", R->dir);
	pthread_rwlockattr_t ga;
	pthread_rwlockattr_init(&ga);
	pthread_rwlockattr_setkind_np(&ga, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&R->gate, &ga);
	pthread_rwlockattr_destroy(&ga);
	pthread_mutex_init(&R->mu, NULL);
	pthread_cond_init(&R->cv, NULL);
	pthread_cond_init(&R->sess_cv, NULL);
	if (pthread_create(&R->thread, NULL, monitor_main, R) != 0) {
		pthread_rwlock_destroy(&R->gate);
		pthread_mutex_destroy(&R->mu);
		pthread_cond_destroy(&R->cv);
		pthread_cond_destroy(&R->sess_cv);
		free(R);
		return CF_ERROR(COFFER_E_NOMEM, NULL, "could not start the recovery monitor thread");
	}
	R->running = 1;
	s->recover = R;
	return COFFER_OK;
}

void srv_recover_stop(struct srv *s)
{
	struct srv_recover *R = s->recover;
	if (R == NULL || !R->running)
		return;
	pthread_mutex_lock(&R->mu);
	R->stop = 1;
	pthread_cond_broadcast(&R->cv);
	pthread_mutex_unlock(&R->mu);
	pthread_join(R->thread, NULL); /* a reopen in progress finishes first */
	R->running = 0;
}

int srv_recover_down(struct srv *s)
{
	struct srv_recover *R = s->recover;
	if (R == NULL || s->env)
		return COFFER_OK;
	return CF_ERROR(R->down_code ? R->down_code : COFFER_E_FATAL, CF_OBJ(.file = R->dir),
			"the store was not open at shutdown: it could not be reopened after it stopped "
			"accepting writes: %s",
			R->down_msg);
}

void srv_recover_free(struct srv *s)
{
	struct srv_recover *R = s->recover;
	if (R == NULL)
		return;
	srv_recover_stop(s);
	pthread_rwlock_destroy(&R->gate);
	pthread_mutex_destroy(&R->mu);
	pthread_cond_destroy(&R->cv);
	pthread_cond_destroy(&R->sess_cv);
	free(R);
	s->recover = NULL;
}
