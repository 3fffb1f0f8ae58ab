/*
 * xxh_impl.h - the body of the XXH3 kernels, included by xxh_avx2.c
 * (compiled with -mavx2 -O2) with CF_XXH_NAME(x) naming them.
 */
#define XXH_INLINE_ALL
#include <xxhash.h>

uint64_t CF_XXH_NAME(seed)(const void *p, size_t n, uint64_t seed);
uint64_t CF_XXH_NAME(cat)(const void *a, size_t na, const void *b, size_t nb, const void *c, size_t nc);

uint64_t CF_XXH_NAME(seed)(const void *p, size_t n, uint64_t seed)
{
	return XXH3_64bits_withSeed(p, n, seed);
}

uint64_t CF_XXH_NAME(cat)(const void *a, size_t na, const void *b, size_t nb, const void *c, size_t nc)
{
	XXH3_state_t st;
	XXH3_INITSTATE(&st);
	XXH3_64bits_reset(&st);
	if (na)
		XXH3_64bits_update(&st, a, na);
	if (nb)
		XXH3_64bits_update(&st, b, nb);
	if (nc)
		XXH3_64bits_update(&st, c, nc);
	return XXH3_64bits_digest(&st);
}
