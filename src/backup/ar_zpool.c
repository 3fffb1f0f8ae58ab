/*
 * ar_zpool.c - the compression filter: per-block XXH3 and zstd on a small
 * pool of worker threads, blocks handed back in the order they came.
 *
 * A ring of block buffers. The one producer (the writer's caller) takes the
 * slot at HEAD, fills it, and submits it (READY); a worker takes the oldest
 * READY slot (BUSY), checksums and compresses it into the slot's own output
 * buffer (DONE). The producer emits DONE slots strictly from TAIL, so the
 * output keeps the submission order whatever order the workers finish in;
 * emitting happens on the producer's thread, so output errors (a full disk)
 * surface in the caller's call. When the ring is full the producer waits
 * for the slot at TAIL. Each block is an independent zstd frame, so the
 * reader verifies and decompresses each alone.
 *
 * Slot states: FREE -> FILLING (acquire) -> READY (submit) -> BUSY (worker)
 * -> DONE (worker) -> FREE (emitted). Level 0 (no compression) has one slot
 * and no threads: submit checksums and emits at once.
 *
 * Memory: (2 x workers + 2) slots of 1 MiB in and ZSTD_compressBound(1 MiB)
 * out: about 12 MiB with 2 workers, at most 36 MiB (8 workers).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "backup/ar_int.h"
#include "common/err.h"

#define AR_WORKERS_MAX 8

enum { S_FREE, S_FILLING, S_READY, S_BUSY, S_DONE };

struct ar_zpool;
struct worker {
	struct ar_zpool *pool;
	pthread_t tid;
	ZSTD_CCtx *cctx;
};

struct ar_zpool {
	int level;
	ar_emit_fn emit;
	void *arg;
	size_t nslots, head, tail;
	struct ar_block *slots;
	uint64_t next_seq;
	int nworkers, started, stop;
	struct worker *workers;
	pthread_mutex_t mu;
	pthread_cond_t work, done;
	int rc; /* sticky: the first failure */
};

static void block_process(struct ar_block *b, ZSTD_CCtx *cctx, int level)
{
	b->xxh = XXH3_64bits(AR_RAW(b), b->raw_len);
	b->compressed = 0;
	if (cctx == NULL)
		return;
	size_t z = ZSTD_compressCCtx(cctx, AR_Z(b), ar_stored_max(), AR_RAW(b), b->raw_len, level);
	if (ZSTD_isError(z)) {
		b->rc = COFFER_E_INTERNAL;
		snprintf(b->why, sizeof b->why, "zstd could not compress block %u: %s", b->blockno,
			 ZSTD_getErrorName(z));
		return;
	}
	if (z < b->raw_len) {
		b->z_len = z;
		b->compressed = 1;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct ar_zpool *p = w->pool;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		struct ar_block *b = NULL;
		while (!p->stop) {
			/* The oldest READY slot: scan from TAIL. */
			for (size_t i = 0; i < p->nslots && b == NULL; i++) {
				struct ar_block *s = &p->slots[(p->tail + i) % p->nslots];
				if (s->state == S_READY)
					b = s;
			}
			if (b)
				break;
			pthread_cond_wait(&p->work, &p->mu);
		}
		if (p->stop)
			break;
		b->state = S_BUSY;
		pthread_mutex_unlock(&p->mu);
		block_process(b, w->cctx, p->level);
		pthread_mutex_lock(&p->mu);
		b->state = S_DONE;
		pthread_cond_broadcast(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

void ar_zpool_free(struct ar_zpool *p)
{
	if (p == NULL)
		return;
	if (p->started) {
		pthread_mutex_lock(&p->mu);
		p->stop = 1;
		pthread_cond_broadcast(&p->work);
		pthread_mutex_unlock(&p->mu);
		for (int i = 0; i < p->started; i++)
			pthread_join(p->workers[i].tid, NULL);
	}
	for (int i = 0; p->workers && i < p->nworkers; i++)
		ZSTD_freeCCtx(p->workers[i].cctx);
	for (size_t i = 0; p->slots && i < p->nslots; i++) {
		free(p->slots[i].raw);
		free(p->slots[i].z);
	}
	free(p->slots);
	free(p->workers);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->work);
	pthread_cond_destroy(&p->done);
	free(p);
}

int ar_zpool_new(struct ar_zpool **out, int level, int threads, ar_emit_fn emit, void *arg)
{
	struct ar_zpool *p = calloc(1, sizeof *p);
	if (p == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the compression pool");
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->done, NULL);
	p->level = level;
	p->emit = emit;
	p->arg = arg;
	if (level != 0) {
		long n = threads > 0 ? threads : sysconf(_SC_NPROCESSORS_ONLN);
		p->nworkers = (int)(n < 1 ? 1 : n > AR_WORKERS_MAX ? AR_WORKERS_MAX : n);
	}
	p->nslots = level == 0 ? 1 : (size_t)p->nworkers * 2 + 2;
	p->slots = calloc(p->nslots, sizeof *p->slots);
	if (p->slots == NULL)
		goto nomem;
	for (size_t i = 0; i < p->nslots; i++) {
		p->slots[i].raw = malloc(AR_REC_SIZE + CF_AR_BLOCK_MAX);
		if (p->slots[i].raw == NULL)
			goto nomem;
		if (level != 0 && (p->slots[i].z = malloc(AR_REC_SIZE + ar_stored_max())) == NULL)
			goto nomem;
	}
	if (p->nworkers) {
		p->workers = calloc((size_t)p->nworkers, sizeof *p->workers);
		if (p->workers == NULL)
			goto nomem;
		for (int i = 0; i < p->nworkers; i++) {
			p->workers[i].pool = p;
			if ((p->workers[i].cctx = ZSTD_createCCtx()) == NULL)
				goto nomem;
		}
		for (int i = 0; i < p->nworkers; i++) {
			if (pthread_create(&p->workers[i].tid, NULL, worker_main, &p->workers[i]) != 0) {
				ar_zpool_free(p);
				return CF_ERROR(COFFER_E_NOMEM, NULL, "could not start compression thread %d", i);
			}
			p->started++;
		}
	}
	*out = p;
	return COFFER_OK;
nomem:
	ar_zpool_free(p);
	return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the compression buffers");
}

/* Emit the slot at TAIL if it is DONE (or, with WAIT, once it is). Called
 * with the lock held; drops it around the emit. 1: emitted one, 0: none. */
static int emit_tail(struct ar_zpool *p, int wait, int *rc)
{
	struct ar_block *b = &p->slots[p->tail];
	if (b->state != S_READY && b->state != S_BUSY && b->state != S_DONE)
		return 0; /* nothing submitted there */
	while (b->state != S_DONE) {
		if (!wait)
			return 0;
		pthread_cond_wait(&p->done, &p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	if (b->rc)
		*rc = CF_ERROR(b->rc, NULL, "%s", b->why);
	else
		*rc = p->emit(p->arg, b);
	pthread_mutex_lock(&p->mu);
	b->state = S_FREE;
	b->rc = 0;
	p->tail = (p->tail + 1) % p->nslots;
	return 1;
}

int ar_zpool_acquire(struct ar_zpool *p, struct ar_block **out)
{
	int rc = p->rc;
	if (rc)
		return rc;
	pthread_mutex_lock(&p->mu);
	struct ar_block *b = &p->slots[p->head];
	while (b->state != S_FREE && rc == 0)
		if (!emit_tail(p, 1, &rc))
			break;
	if (rc == 0 && b->state != S_FREE)
		rc = CF_ERROR(COFFER_E_INTERNAL, NULL, "compression slot %zu is never freed", p->head);
	if (rc == 0) {
		b->state = S_FILLING;
		b->raw_len = b->z_len = 0;
		b->compressed = 0;
		b->seq = p->next_seq++;
		p->head = (p->head + 1) % p->nslots;
		*out = b;
	}
	pthread_mutex_unlock(&p->mu);
	if (rc)
		p->rc = rc;
	return rc;
}

int ar_zpool_submit(struct ar_zpool *p, struct ar_block *b)
{
	int rc = p->rc;
	if (rc)
		return rc;
	if (p->nworkers == 0) {
		block_process(b, NULL, 0);
		rc = p->emit(p->arg, b);
		b->state = S_FREE;
		p->tail = p->head;
		if (rc)
			p->rc = rc;
		return rc;
	}
	pthread_mutex_lock(&p->mu);
	b->state = S_READY;
	pthread_cond_signal(&p->work);
	while (rc == 0 && emit_tail(p, 0, &rc))
		;
	pthread_mutex_unlock(&p->mu);
	if (rc)
		p->rc = rc;
	return rc;
}

int ar_zpool_drain(struct ar_zpool *p)
{
	int rc = p->rc;
	if (rc || p->nworkers == 0)
		return rc;
	pthread_mutex_lock(&p->mu);
	while (rc == 0 && emit_tail(p, 1, &rc))
		;
	pthread_mutex_unlock(&p->mu);
	if (rc)
		p->rc = rc;
	return rc;
}
