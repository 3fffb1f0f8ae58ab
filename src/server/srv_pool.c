/*
 * srv_pool.c - the worker threads that run commands against the engine.
 *
 * Two queues: read jobs (batches without a write command, and event
 * writes) and write jobs. Any idle worker takes a read job and runs it in
 * its own read-only transaction (a snapshot of what is durable).
 *
 * Write jobs are combined: one worker at a time is the *combiner*. It
 * begins a write transaction (waiting for the engine's single writer),
 * then takes every write job queued at that moment (at most
 * SRV_COMBINE_JOBS / SRV_COMBINE_BYTES), runs them one after the other in
 * that transaction, gives up the combiner role and commits. The commit
 * appends the batch, lets the next writer in and waits for the shared
 * fdatasync (the engine's group commit), so while one combined transaction
 * waits for the disk the next one is already being built. Replies are
 * handed back only after the commit returned, so every acknowledged write
 * is durable. Running the batches of several connections in one
 * transaction is observably the same as running them one after the other:
 * the order is a valid serial order, each batch sees the ones before it,
 * and none of their replies leaves before all of them are durable. If the
 * commit fails, every command of every batch in it gets the error and the
 * connections are closed (their state is unknown to them).
 *
 * Durability of what a write job *read*: a write transaction sees commits
 * that are published but maybe not yet durable. If a combined transaction
 * changed nothing (its commit then does not wait for the log) but read
 * data while an earlier commit was still not durable, it writes one small
 * key (tree "meta", key "sync") so that its commit waits for the log too.
 *
 * The store: every job uses s->env between srv_recover_enter() and
 * srv_recover_leave(), so that srv_recover.c can swap in a reopened store
 * after a write failure while no job runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "server/srv.h"

#define READ_CHUNK 8u

struct srv_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *rq_head, *rq_tail;
	struct job *wq_head, *wq_tail;
	int combiner;
	unsigned nidle;  /* workers waiting for work */
	int stop;
	unsigned n;
	pthread_t *threads;
	uint64_t sync_seq;
};

static void q_push(struct job **h, struct job **t, struct job *j)
{
	j->next = NULL;
	if (*t)
		(*t)->next = j;
	else
		*h = j;
	*t = j;
}

static struct job *q_pop(struct job **h, struct job **t)
{
	struct job *j = *h;
	if (j) {
		*h = j->next;
		if (*h == NULL)
			*t = NULL;
		j->next = NULL;
	}
	return j;
}

void srv_pool_submit_list(struct srv *s, struct job *list)
{
	struct srv_pool *p = s->pool;
	unsigned reads = 0;
	int writes = 0;
	pthread_mutex_lock(&p->mu);
	while (list) {
		struct job *j = list;
		list = j->next;
		if (j->kind == JOB_CMDS && j->write) {
			q_push(&p->wq_head, &p->wq_tail, j);
			writes = 1;
		} else {
			q_push(&p->rq_head, &p->rq_tail, j);
			reads++;
		}
	}
	/* Wake only workers that can start now: write jobs wait in place for
	 * the combiner, who takes every queued one; a reader takes up to
	 * READ_CHUNK read jobs. */
	unsigned wake = (reads + READ_CHUNK - 1) / READ_CHUNK + (writes && !p->combiner);
	if (wake > p->nidle)
		wake = p->nidle;
	if (wake == 1)
		pthread_cond_signal(&p->cv);
	else if (wake > 1)
		pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

void srv_pool_submit(struct srv *s, struct job *j)
{
	j->next = NULL;
	srv_pool_submit_list(s, j);
}

static void run_event(struct srv *s, struct job *j)
{
	srv_event_job(s, j);
	job_free(j);
}

/* Run a list of read jobs (and events) in one read transaction: a snapshot
 * of what is durable, which is all any of these connections has been told
 * about. */
static void run_reads(struct srv *s, struct job *list)
{
	struct exec e;
	memset(&e, 0, sizeof e);
	e.s = s;
	struct job *done = NULL, *tail = NULL;
	coffer_env *env = srv_recover_enter(s); /* s->env stays until leave */
	while (list) {
		struct job *j = list;
		list = j->next;
		j->next = NULL;
		if (j->kind == JOB_EVENT) {
			run_event(s, j);
			continue;
		}
		atomic_fetch_add(&s->st.read_jobs, 1);
		if (env)
			job_run(&e, j);
		else
			srv_recover_fail_job(s, j);
		if (tail)
			tail->next = j;
		else
			done = j;
		tail = j;
	}
	if (e.txn)
		coffer_txn_abort(e.txn);
	srv_recover_leave(s);
	srv_loop_done_list(s, done);
}

/* Make the commit of a transaction that changed nothing wait for the log
 * when what it read may not be durable yet (see the top of this file). */
static int sync_guard(struct srv *s, struct exec *e)
{
	if (e->changed || !e->observed)
		return COFFER_OK;
	struct coffer_env_info info;
	if (coffer_env_info(s->env, &info) == COFFER_OK && info.durable_lsn >= info.last_commit_lsn)
		return COFFER_OK;
	uint64_t v = ++s->pool->sync_seq; /* under the engine's writer lock */
	return coffer_put(e->txn, "meta", "sync", 4, &v, sizeof v, 0);
}

static void run_writes(struct srv *s)
{
	struct srv_pool *p = s->pool;
	coffer_txn *t = NULL;
	coffer_env *env = srv_recover_enter(s); /* s->env stays until leave */
	int rc = env ? coffer_txn_begin(env, 0, &t) : COFFER_E_FATAL;
	int ran = rc == COFFER_OK;
	char msg[900];
	if (rc)
		snprintf(msg, sizeof msg, "%s", coffer_error_last()->message);

	struct job *jobs = NULL, *last = NULL;
	size_t n = 0, bytes = 0;
	pthread_mutex_lock(&p->mu);
	while (p->wq_head && n < SRV_COMBINE_JOBS && (n == 0 || bytes < SRV_COMBINE_BYTES)) {
		struct job *j = q_pop(&p->wq_head, &p->wq_tail);
		bytes += j->bytes;
		n++;
		if (last)
			last->next = j;
		else
			jobs = j;
		last = j;
	}
	pthread_mutex_unlock(&p->mu);

	struct exec e;
	memset(&e, 0, sizeof e);
	e.s = s;
	e.txn = t;
	e.write = 1;
	if (rc == COFFER_OK) {
		for (struct job *j = jobs; j; j = j->next)
			job_run(&e, j);
		if (e.hard_rc == COFFER_OK) {
			int g = sync_guard(s, &e);
			if (g) {
				e.hard_rc = g;
				snprintf(e.hard_msg, sizeof e.hard_msg, "%s", coffer_error_last()->message);
			}
		}
	}
	/* Let the next combiner begin: it waits in coffer_txn_begin until our
	 * commit has appended and published, then builds while we wait for
	 * the disk. */
	pthread_mutex_lock(&p->mu);
	p->combiner = 0;
	if (p->wq_head && p->nidle)
		pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);

	if (rc == COFFER_OK) {
		if (e.hard_rc) {
			coffer_txn_abort(t);
			rc = e.hard_rc;
			snprintf(msg, sizeof msg, "%s", e.hard_msg);
		} else {
			rc = coffer_txn_commit(t);
			if (rc)
				snprintf(msg, sizeof msg, "%s", coffer_error_last()->message);
		}
	}
	atomic_fetch_add(&s->st.write_txns, 1);
	atomic_fetch_add(&s->st.write_jobs, n);
	if (rc && env)
		srv_recover_notice(s, rc, msg, sizeof msg);
	for (struct job *j = rc ? jobs : NULL; j; j = j->next) {
		if (env == NULL) {
			srv_recover_fail_job(s, j);
			continue;
		}
		/* A transaction that could not begin ran nothing: every
		 * command gets the error (job_fail answers those run). */
		if (!ran)
			j->ndone = j->ncmds;
		job_fail(j, rc, msg);
	}
	srv_recover_leave(s);
	srv_loop_done_list(s, jobs);
}

static void *worker_main(void *arg)
{
	struct srv *s = arg;
	struct srv_pool *p = s->pool;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		if (p->wq_head && !p->combiner) {
			p->combiner = 1;
			pthread_mutex_unlock(&p->mu);
			run_writes(s);
			pthread_mutex_lock(&p->mu);
			continue;
		}
		if (p->rq_head) {
			/* Up to READ_CHUNK jobs at once: fewer wake-ups and
			 * transactions when many small reads are queued. */
			struct job *list = NULL, *tail = NULL;
			for (unsigned k = 0; k < READ_CHUNK && p->rq_head; k++) {
				/* A slow job (KEYS...) goes alone, so that it delays
				 * nobody else's reply. */
				if (k > 0 && (p->rq_head->slow || tail->slow))
					break;
				struct job *j = q_pop(&p->rq_head, &p->rq_tail);
				if (tail)
					tail->next = j;
				else
					list = j;
				tail = j;
			}
			/* Others may be able to take more work. */
			if (p->nidle && (p->rq_head || (p->wq_head && !p->combiner)))
				pthread_cond_signal(&p->cv);
			pthread_mutex_unlock(&p->mu);
			run_reads(s, list);
			pthread_mutex_lock(&p->mu);
			continue;
		}
		if (p->stop)
			break;
		p->nidle++;
		pthread_cond_wait(&p->cv, &p->mu);
		p->nidle--;
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int srv_pool_start(struct srv *s, unsigned nworkers)
{
	struct srv_pool *p = calloc(1, sizeof *p);
	if (p == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the worker pool");
	p->threads = calloc(nworkers, sizeof *p->threads);
	if (p->threads == NULL) {
		free(p);
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the worker pool");
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	s->pool = p;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 1u << 20);
	for (unsigned i = 0; i < nworkers; i++) {
		if (pthread_create(&p->threads[i], &attr, worker_main, s) != 0) {
			pthread_attr_destroy(&attr);
			srv_pool_stop(s);
			return CF_ERROR(COFFER_E_NOMEM, NULL, "could not start worker thread %u", i + 1);
		}
		p->n++;
	}
	pthread_attr_destroy(&attr);
	return COFFER_OK;
}

void srv_pool_stop(struct srv *s)
{
	struct srv_pool *p = s->pool;
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->n; i++)
		pthread_join(p->threads[i], NULL);
	/* Anything left (nothing, normally) is dropped. */
	struct job *j;
	while ((j = q_pop(&p->rq_head, &p->rq_tail)) != NULL)
		job_free(j);
	while ((j = q_pop(&p->wq_head, &p->wq_tail)) != NULL)
		job_free(j);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->threads);
	free(p);
	s->pool = NULL;
}
