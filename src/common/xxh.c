/*
 * xxh.c - XXH3-64 with a kernel chosen at run time (see xxh.h).
 */
#include <stddef.h>
#include <stdint.h>

#include "common/xxh.h"

#define CF_XXH_NAME(x) cf_xxh3_generic_##x
#include "common/xxh_impl.h"

#ifdef CF_HAVE_XXH_AVX2
uint64_t cf_xxh3_avx2_seed(const void *p, size_t n, uint64_t seed);
uint64_t cf_xxh3_avx2_cat(const void *a, size_t na, const void *b, size_t nb, const void *c, size_t nc);

/* Decided once, at load time: no branch on a variable that changes. */
static int use_avx2;
__attribute__((constructor)) static void pick(void)
{
	__builtin_cpu_init();
	use_avx2 = __builtin_cpu_supports("avx2");
}
#else
enum { use_avx2 = 0 };
#define cf_xxh3_avx2_seed cf_xxh3_generic_seed
#define cf_xxh3_avx2_cat cf_xxh3_generic_cat
#endif

uint64_t cf_xxh3_seed(const void *p, size_t n, uint64_t seed)
{
	return use_avx2 ? cf_xxh3_avx2_seed(p, n, seed) : cf_xxh3_generic_seed(p, n, seed);
}

uint64_t cf_xxh3_cat(const void *a, size_t na, const void *b, size_t nb, const void *c, size_t nc)
{
	return use_avx2 ? cf_xxh3_avx2_cat(a, na, b, nb, c, nc) : cf_xxh3_generic_cat(a, na, b, nb, c, nc);
}

const char *cf_xxh3_kernel(void)
{
	return use_avx2 ? "avx2" : "generic";
}
