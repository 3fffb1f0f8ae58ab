/*
 * xxh.c - XXH3-64 with a kernel chosen at run time (see xxh.h).
 */
#include <stddef.h>
#include <stdint.h>

#include "common/xxh.h" /* libxxhash with XXH3_state_t */

#ifdef CF_HAVE_XXH_AVX2
uint64_t cf_xxh3_avx2_seed(const void *p, size_t n, uint64_t seed);
void cf_xxh3_avx2_update(void *st, const void *p, size_t n);
uint64_t cf_xxh3_avx2_digest(const void *st);

/* Decided once, at load time: no branch on a variable that changes. */
static int use_avx2;
__attribute__((constructor)) static void pick(void)
{
	__builtin_cpu_init();
	use_avx2 = __builtin_cpu_supports("avx2");
}
#else
enum { use_avx2 = 0 };
#define cf_xxh3_avx2_seed(p, n, seed) 0
#define cf_xxh3_avx2_update(st, p, n) ((void)0)
#define cf_xxh3_avx2_digest(st) 0
#endif

/* The generic kernel is libxxhash itself (built optimized, whatever this
 * build's own optimization level). */
uint64_t cf_xxh3_seed(const void *p, size_t n, uint64_t seed)
{
	return use_avx2 ? cf_xxh3_avx2_seed(p, n, seed) : XXH3_64bits_withSeed(p, n, seed);
}

void cf_xxh3_reset(cf_xxh3_state *st)
{
	XXH3_INITSTATE(st);
	XXH3_64bits_reset(st);
}

void cf_xxh3_update(cf_xxh3_state *st, const void *p, size_t n)
{
	if (use_avx2)
		cf_xxh3_avx2_update(st, p, n);
	else
		XXH3_64bits_update(st, p, n);
}

uint64_t cf_xxh3_digest(const cf_xxh3_state *st)
{
	return use_avx2 ? cf_xxh3_avx2_digest(st) : XXH3_64bits_digest(st);
}

/* The concatenation through the streaming functions: one body for both
 * kernels (three calls more per frame than a fused one, nothing per byte). */
uint64_t cf_xxh3_cat(const void *a, size_t na, const void *b, size_t nb, const void *c, size_t nc)
{
	cf_xxh3_state st;
	cf_xxh3_reset(&st);
	if (na)
		cf_xxh3_update(&st, a, na);
	if (nb)
		cf_xxh3_update(&st, b, nb);
	if (nc)
		cf_xxh3_update(&st, c, nc);
	return cf_xxh3_digest(&st);
}

const char *cf_xxh3_kernel(void)
{
	return use_avx2 ? "avx2" : "generic";
}
