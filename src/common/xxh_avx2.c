/*
 * xxh_avx2.c - the XXH3 kernels built with -mavx2 (see xxh.h); called only
 * after xxh.c has checked that the CPU has AVX2.
 */
#include <stddef.h>
#include <stdint.h>

#define CF_XXH_NAME(x) cf_xxh3_avx2_##x
#include "common/xxh_impl.h"
