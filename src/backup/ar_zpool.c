/*
 * ar_zpool.c - the block pipeline of the writer: per-block XXH3 and zstd on
 * worker threads, the file's SHA-256 on its own thread, and the output
 * writes on a writer thread, blocks handed to the output in the order they
 * came.
 *
 * A ring of block buffers indexed by sequence number (block k lives in slot
 * k mod nslots). The one producer (the writer's caller, usually the thread
 * receiving from the server) takes the slot of the next sequence number
 * (acquire), fills it and submits it. Then, concurrently:
 *   - a worker takes the oldest READY slot (BUSY), checksums it and, with a
 *     level, compresses it into the slot's own output buffer (DONE);
 *   - the SHA thread hashes the blocks' raw bytes strictly in sequence
 *     order (counter HASHED), so the digest is the plain SHA-256 of the
 *     file, as sha256sum gives;
 *   - the writer thread emits DONE slots strictly in sequence order
 *     (counter WRITTEN), whatever order the workers finish in.
 * A slot is free again once both the SHA thread and the writer are past it
 * (k < min(HASHED, WRITTEN)); when the ring is full the producer waits.
 * Each block is an independent zstd frame, so the reader verifies and
 * decompresses each alone. Level 0 (no compression) has one worker (XXH3
 * only) and the same ring.
 *
 * The SHA context is the caller's: it resets and finalizes it only between
 * files, when ar_zpool_drain has returned (nothing in flight).
 *
 * Errors: a worker's failure (zstd) or an emit's failure (a full disk) is
 * kept with its detail (the coffer_error of the writer thread) and the
 * writer emits nothing after it; the producer's next acquire, submit or
 * drain returns it with that detail in the producer's thread. ar_zpool_halt
 * makes sure the writer is not inside an emit (so the caller may remove the
 * output) and stops it for good.
 *
 * Memory: nslots blocks of 1 MiB in (+ ZSTD_compressBound(1 MiB) out with
 * a level): 8 slots at level 0 (8 MiB), 2 x workers + 4 with zstd (about
 * 16 MiB with 2 workers, at most 40 MiB with 8).
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
#include "common/xxh.h"

#define AR_WORKERS_MAX 8
#define AR_SLOTS_PLAIN 8

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
	ar_sha *sha;          /* the caller's; NULL: no SHA stage */
	size_t nslots;
	struct ar_block *slots;
	uint64_t acquired;    /* sequence number of the next block acquired */
	uint64_t submitted;   /* blocks submitted: 0..submitted-1 */
	uint64_t hashed;      /* blocks hashed by the SHA thread, in order */
	uint64_t written;     /* blocks emitted by the writer, in order */
	int nworkers, started;
	struct worker *workers;
	pthread_t sha_tid, writer_tid;
	int sha_started, writer_started;
	int stop;             /* ar_zpool_free: every thread exits */
	int halted;           /* the writer emits nothing more */
	int emitting;         /* the writer is inside EMIT */
	pthread_mutex_t mu;
	/* Each waits on its own condition, so that a block's progress wakes
	 * only the thread it concerns (signals without a waiter cost nothing). */
	pthread_cond_t work;  /* to the workers: a block is READY */
	pthread_cond_t shac;  /* to the SHA thread: a block was submitted */
	pthread_cond_t wrc;   /* to the writer: a block is DONE */
	pthread_cond_t done;  /* to the producer (and halt): a block was hashed or written */
	int rc;               /* sticky: the first failure */
	coffer_error err;     /* its detail */
};

#define SLOT(p, k) (&(p)->slots[(k) % (p)->nslots])

static void block_process(struct ar_block *b, ZSTD_CCtx *cctx, int level)
{
	b->xxh = cf_xxh3_seed(AR_RAW(b), b->raw_len, 0);
	b->compressed = 0;
	if (cctx == NULL || b->raw_len == 0)
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

/* Record a failure raised in this (pool) thread; the lock is held. */
static void pool_fail(struct ar_zpool *p, int rc)
{
	if (p->rc == 0) {
		p->rc = rc;
		p->err = *coffer_error_last();
	}
	p->halted = 1;
	pthread_cond_broadcast(&p->done);
}

/* The sticky failure in the caller's thread (lock held). */
static int pool_rc(struct ar_zpool *p)
{
	if (p->rc)
		*(coffer_error *)coffer_error_last() = p->err;
	return p->rc;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct ar_zpool *p = w->pool;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		struct ar_block *b = NULL;
		while (!p->stop) {
			/* The oldest READY slot among those not yet written. */
			for (uint64_t k = p->written; k < p->submitted && b == NULL; k++)
				if (SLOT(p, k)->state == S_READY)
					b = SLOT(p, k);
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
		pthread_cond_signal(&p->wrc); /* the writer may be waiting for it */
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static void *sha_main(void *arg)
{
	struct ar_zpool *p = arg;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->stop && p->hashed >= p->submitted)
			pthread_cond_wait(&p->shac, &p->mu);
		if (p->stop)
			break;
		struct ar_block *b = SLOT(p, p->hashed);
		pthread_mutex_unlock(&p->mu);
		ar_sha_update(p->sha, AR_RAW(b), b->raw_len);
		pthread_mutex_lock(&p->mu);
		p->hashed++;
		pthread_cond_broadcast(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static void *writer_main(void *arg)
{
	struct ar_zpool *p = arg;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->stop && (p->halted || p->written >= p->submitted ||
				    SLOT(p, p->written)->state != S_DONE))
			pthread_cond_wait(&p->wrc, &p->mu);
		if (p->stop)
			break;
		struct ar_block *b = SLOT(p, p->written);
		p->emitting = 1;
		pthread_mutex_unlock(&p->mu);
		int rc = COFFER_OK;
		if (b->rc)
			rc = CF_ERROR(b->rc, NULL, "%s", b->why);
		else if (b->raw_len > 0) /* an empty block (reserved, nothing committed) is skipped */
			rc = p->emit(p->arg, b);
		pthread_mutex_lock(&p->mu);
		p->emitting = 0;
		if (rc) {
			pool_fail(p, rc);
			continue;
		}
		p->written++;
		pthread_cond_broadcast(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

void ar_zpool_free(struct ar_zpool *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_broadcast(&p->work);
	pthread_cond_broadcast(&p->shac);
	pthread_cond_broadcast(&p->wrc);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->started; i++)
		pthread_join(p->workers[i].tid, NULL);
	if (p->sha_started)
		pthread_join(p->sha_tid, NULL);
	if (p->writer_started)
		pthread_join(p->writer_tid, NULL);
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
	pthread_cond_destroy(&p->shac);
	pthread_cond_destroy(&p->wrc);
	pthread_cond_destroy(&p->done);
	free(p);
}

int ar_zpool_new(struct ar_zpool **out, int level, int threads, ar_sha *sha, ar_emit_fn emit, void *arg)
{
	struct ar_zpool *p = calloc(1, sizeof *p);
	*out = NULL;
	if (p == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the compression pool");
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->shac, NULL);
	pthread_cond_init(&p->wrc, NULL);
	pthread_cond_init(&p->done, NULL);
	p->level = level;
	p->emit = emit;
	p->arg = arg;
	p->sha = sha;
	if (level != 0) {
		long n = threads > 0 ? threads : sysconf(_SC_NPROCESSORS_ONLN);
		p->nworkers = (int)(n < 1 ? 1 : n > AR_WORKERS_MAX ? AR_WORKERS_MAX : n);
	} else {
		p->nworkers = 1; /* XXH3 only */
	}
	p->nslots = level == 0 ? AR_SLOTS_PLAIN : (size_t)p->nworkers * 2 + 4;
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
	p->workers = calloc((size_t)p->nworkers, sizeof *p->workers);
	if (p->workers == NULL)
		goto nomem;
	for (int i = 0; i < p->nworkers; i++) {
		p->workers[i].pool = p;
		if (level != 0 && (p->workers[i].cctx = ZSTD_createCCtx()) == NULL)
			goto nomem;
	}
	for (int i = 0; i < p->nworkers; i++) {
		if (pthread_create(&p->workers[i].tid, NULL, worker_main, &p->workers[i]) != 0)
			goto nothread;
		p->started++;
	}
	if (sha) {
		if (pthread_create(&p->sha_tid, NULL, sha_main, p) != 0)
			goto nothread;
		p->sha_started = 1;
	}
	if (pthread_create(&p->writer_tid, NULL, writer_main, p) != 0)
		goto nothread;
	p->writer_started = 1;
	*out = p;
	return COFFER_OK;
nothread:
	ar_zpool_free(p);
	return CF_ERROR(COFFER_E_NOMEM, NULL, "could not start the backup writer's threads");
nomem:
	ar_zpool_free(p);
	return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the compression buffers");
}

/* Blocks fully done with (hashed and written): their slots are free. */
static uint64_t retired(const struct ar_zpool *p)
{
	uint64_t h = p->sha ? p->hashed : p->submitted;
	return h < p->written ? h : p->written;
}

int ar_zpool_acquire(struct ar_zpool *p, struct ar_block **out)
{
	pthread_mutex_lock(&p->mu);
	while (p->rc == 0 && !p->halted && p->acquired >= retired(p) + p->nslots)
		pthread_cond_wait(&p->done, &p->mu);
	int rc = pool_rc(p);
	if (rc == 0 && p->halted)
		rc = CF_ERROR(COFFER_E_INTERNAL, NULL, "the backup writer was stopped");
	if (rc == 0) {
		struct ar_block *b = SLOT(p, p->acquired);
		b->state = S_FILLING;
		b->raw_len = b->z_len = 0;
		b->compressed = 0;
		b->rc = 0;
		b->seq = p->acquired++;
		*out = b;
	}
	pthread_mutex_unlock(&p->mu);
	return rc;
}

int ar_zpool_submit(struct ar_zpool *p, struct ar_block *b)
{
	pthread_mutex_lock(&p->mu);
	int rc = pool_rc(p);
	if (rc == 0 && b->seq != p->submitted)
		rc = CF_ERROR(COFFER_E_INTERNAL, NULL, "block %llu submitted out of order (expected %llu)",
			      (unsigned long long)b->seq, (unsigned long long)p->submitted);
	if (rc == 0) {
		b->state = S_READY;
		p->submitted++;
		pthread_cond_signal(&p->work);
		pthread_cond_signal(&p->shac);
	}
	pthread_mutex_unlock(&p->mu);
	return rc;
}

int ar_zpool_drain(struct ar_zpool *p)
{
	pthread_mutex_lock(&p->mu);
	while (p->rc == 0 && !p->halted && (p->written < p->submitted || retired(p) < p->submitted))
		pthread_cond_wait(&p->done, &p->mu);
	int rc = pool_rc(p);
	if (rc == 0 && p->halted)
		rc = CF_ERROR(COFFER_E_INTERNAL, NULL, "the backup writer was stopped");
	pthread_mutex_unlock(&p->mu);
	return rc;
}

void ar_zpool_halt(struct ar_zpool *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->halted = 1;
	pthread_cond_broadcast(&p->wrc);
	while (p->emitting)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}
