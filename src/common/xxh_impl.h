/*
 * xxh_impl.h - the body of the XXH3 kernels, included by xxh_avx2.c
 * (compiled with -mavx2 -O2) with CF_XXH_NAME(x) naming them.
 */
#define XXH_INLINE_ALL
#include <xxhash.h>

uint64_t CF_XXH_NAME(seed)(const void *p, size_t n, uint64_t seed);
/* ST is a libxxhash XXH3_state_t (the same layout under XXH_INLINE_ALL). */
void CF_XXH_NAME(update)(void *st, const void *p, size_t n);
uint64_t CF_XXH_NAME(digest)(const void *st);

uint64_t CF_XXH_NAME(seed)(const void *p, size_t n, uint64_t seed)
{
	return XXH3_64bits_withSeed(p, n, seed);
}

void CF_XXH_NAME(update)(void *st, const void *p, size_t n)
{
	XXH3_64bits_update((XXH3_state_t *)st, p, n);
}

uint64_t CF_XXH_NAME(digest)(const void *st)
{
	return XXH3_64bits_digest((const XXH3_state_t *)st);
}
