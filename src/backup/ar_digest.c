/*
 * ar_digest.c - the SHA-256 filter: every stored file's digest, through
 * OpenSSL's EVP interface (hardware SHA extensions when the CPU has them).
 * The writer feeds each file's bytes in order and records the digest in
 * the file's END record and in the manifest; the reader recomputes it.
 *
 * The writer hashes on a thread of its block pipeline (ar_zpool.c); the
 * reader on the SHA pipe below: a thread that hashes the buffers it is
 * given strictly in order, so the digest is still the plain SHA-256 of the
 * file (as sha256sum gives), while the caller verifies and writes the next
 * block.
 */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>

#include "backup/ar_int.h"
#include "common/err.h"

struct ar_sha {
	EVP_MD_CTX *ctx;
};

int ar_sha_new(ar_sha **out)
{
	ar_sha *s = calloc(1, sizeof *s);
	if (s == NULL || (s->ctx = EVP_MD_CTX_new()) == NULL) {
		free(s);
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a SHA-256 context");
	}
	if (EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(s->ctx);
		free(s);
		return CF_ERROR(COFFER_E_INTERNAL, NULL, "OpenSSL could not start a SHA-256 digest");
	}
	*out = s;
	return COFFER_OK;
}

void ar_sha_reset(ar_sha *s)
{
	EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL);
}

void ar_sha_update(ar_sha *s, const void *p, size_t n)
{
	if (n)
		EVP_DigestUpdate(s->ctx, p, n);
}

void ar_sha_final(ar_sha *s, uint8_t out[32])
{
	unsigned len = 32;
	EVP_DigestFinal_ex(s->ctx, out, &len);
	EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL);
}

void ar_sha_free(ar_sha *s)
{
	if (s) {
		EVP_MD_CTX_free(s->ctx);
		free(s);
	}
}

/* ---- the SHA pipe ---- */

struct ar_sha_pipe {
	ar_sha *sha;
	pthread_t tid;
	pthread_mutex_t mu;
	pthread_cond_t work, done;
	const void *buf[AR_SHA_PIPE_DEPTH];
	size_t len[AR_SHA_PIPE_DEPTH];
	uint64_t pushed, hashed;
	int stop;
};

static void *pipe_main(void *arg)
{
	struct ar_sha_pipe *p = arg;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->stop && p->hashed == p->pushed)
			pthread_cond_wait(&p->work, &p->mu);
		if (p->stop) /* what is left is not wanted */
			break;
		size_t i = p->hashed % AR_SHA_PIPE_DEPTH;
		const void *b = p->buf[i];
		size_t n = p->len[i];
		pthread_mutex_unlock(&p->mu);
		ar_sha_update(p->sha, b, n);
		pthread_mutex_lock(&p->mu);
		p->hashed++;
		pthread_cond_broadcast(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int ar_sha_pipe_new(struct ar_sha_pipe **out, ar_sha *s)
{
	struct ar_sha_pipe *p = calloc(1, sizeof *p);
	*out = NULL;
	if (p == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the SHA-256 thread");
	p->sha = s;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->done, NULL);
	if (pthread_create(&p->tid, NULL, pipe_main, p) != 0) {
		pthread_mutex_destroy(&p->mu);
		pthread_cond_destroy(&p->work);
		pthread_cond_destroy(&p->done);
		free(p);
		return CF_ERROR(COFFER_E_NOMEM, NULL, "could not start the SHA-256 thread");
	}
	*out = p;
	return COFFER_OK;
}

uint64_t ar_sha_pipe_push(struct ar_sha_pipe *p, const void *buf, size_t n)
{
	pthread_mutex_lock(&p->mu);
	while (p->pushed - p->hashed >= AR_SHA_PIPE_DEPTH)
		pthread_cond_wait(&p->done, &p->mu);
	uint64_t seq = p->pushed++;
	p->buf[seq % AR_SHA_PIPE_DEPTH] = buf;
	p->len[seq % AR_SHA_PIPE_DEPTH] = n;
	pthread_cond_signal(&p->work);
	pthread_mutex_unlock(&p->mu);
	return seq;
}

void ar_sha_pipe_wait(struct ar_sha_pipe *p, uint64_t seq)
{
	pthread_mutex_lock(&p->mu);
	while (p->hashed < seq)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

uint64_t ar_sha_pipe_pushed(const struct ar_sha_pipe *p)
{
	return p->pushed; /* only the pushing thread writes it */
}

void ar_sha_pipe_free(struct ar_sha_pipe *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_signal(&p->work);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->tid, NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->work);
	pthread_cond_destroy(&p->done);
	free(p);
}
