/*
 * ar_digest.c - the SHA-256 filter: every stored file's digest, through
 * OpenSSL's EVP interface (hardware SHA extensions when the CPU has them).
 * The writer feeds each file's bytes in order and records the digest in
 * the file's END record and in the manifest; the reader recomputes it.
 */
#include <openssl/evp.h>
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
