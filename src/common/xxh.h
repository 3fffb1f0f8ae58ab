/*
 * xxh.h - XXH3-64 for the hot paths (page checksums, backup frames).
 *
 * The same function as libxxhash's XXH3_64bits_withSeed and the streaming
 * XXH3_64bits_update (results are identical, bit for bit: XXH3 is defined
 * independently of the vector width), but on x86-64 with AVX2 it runs the
 * AVX2 kernel (xxh_avx2.c, compiled with -mavx2 -O2 and chosen at run
 * time); Debian's libxxhash is built for plain x86-64 (SSE2) and hashes at
 * about 16 GB/s against 35 GB/s here. Elsewhere it calls libxxhash.
 * tests/unit/test_backup.c checks both against libxxhash.
 */
#ifndef COFFER_COMMON_XXH_H
#define COFFER_COMMON_XXH_H

#include <stddef.h>
#include <stdint.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t, for cf_xxh3_state */
#include <xxhash.h>

/* XXH3_64bits_withSeed(p, n, seed). */
uint64_t cf_xxh3_seed(const void *p, size_t n, uint64_t seed);

/* XXH3_64bits (seed 0) of the concatenation of up to three pieces (a NULL
 * or empty piece is skipped), without copying them together. */
uint64_t cf_xxh3_cat(const void *a, size_t na, const void *b, size_t nb, const void *c, size_t nc);

/* Streaming XXH3-64 (seed 0), as XXH3_64bits_reset/update/digest: for a
 * frame received in pieces. The state is libxxhash's own. */
typedef XXH3_state_t cf_xxh3_state;
void cf_xxh3_reset(cf_xxh3_state *st);
void cf_xxh3_update(cf_xxh3_state *st, const void *p, size_t n);
uint64_t cf_xxh3_digest(const cf_xxh3_state *st);

/* Which kernel runs: "avx2" or "generic" (for tests and status). */
const char *cf_xxh3_kernel(void);

#endif
