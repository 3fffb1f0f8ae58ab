/* test_btree.c - the B+tree (src/engine/bt_*.c) over an in-memory pageio. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define CF_BT_INTERNAL /* the damage tests reach into the node format */
#include "engine/btree.h"

/* tests/meson.build builds one source per test program: take the in-memory
 * pageio in whole (the lead may instead add it to the executable). */
#include "mem_pageio.c"

static uint32_t PS4K = 4096, PS8K = 8192, PS64K = 65536;

/* ---- helpers ---------------------------------------------------------- */

static uint64_t rng_state;
static uint64_t rnd(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}
static void rnd_seed(uint64_t s) { rng_state = s * UINT64_C(0x9E3779B97F4A7C15) + 1; }
static uint64_t rnd_below(uint64_t n) { return rnd() % n; }

static void fill_pattern(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * UINT64_C(0x9E3779B97F4A7C15) + 7;
	for (size_t i = 0; i < n; i++) {
		if (i % 8 == 0) {
			x ^= x >> 12;
			x ^= x << 25;
			x ^= x >> 27;
		}
		p[i] = (uint8_t)(x >> (8 * (i % 8)));
	}
}

static uint32_t ps_of(void **state)
{
	return *(uint32_t *)*state;
}

/* mem_pageio_open and mem_pageio_page that cannot return NULL. */
static mem_pageio *mem_open(uint32_t ps)
{
	mem_pageio *m = mem_pageio_open(ps);
	if (!m)
		abort();
	return m;
}

static uint8_t *raw_page(mem_pageio *m, cf_pgno pgno)
{
	uint8_t *p = mem_pageio_page(m, pgno);
	if (!p)
		abort();
	return p;
}

typedef struct problems {
	int n;
	int twice; /* a problem said "used twice" */
	cf_pgno first;
	char text[512];
} problems;

static void on_problem(void *arg, cf_pgno pgno, const char *what)
{
	problems *p = arg;
	if (strstr(what, "used twice"))
		p->twice = 1;
	if (p->n++ == 0) {
		p->first = pgno;
		snprintf(p->text, sizeof p->text, "%s", what);
	}
}

static void print_problem(void *arg, cf_pgno pgno, const char *what)
{
	(void)arg;
	print_message("# check: page %u: %s\n", pgno, what);
}

/* cf_bt_check on one tree; returns its result, *nkeys the count. */
static int check_tree(mem_pageio *m, cf_pgno root, uint64_t *nkeys, problems *pr)
{
	uint8_t *owned = calloc(m->npages / 8 + 1, 1);
	assert_non_null(owned);
	int rc = cf_bt_check(&m->io, root, owned, m->npages, pr ? on_problem : print_problem, pr, nkeys);
	free(owned);
	return rc;
}

static void assert_clean(mem_pageio *m, cf_pgno root, uint64_t expect_keys)
{
	uint64_t n = 0;
	int rc = check_tree(m, root, &n, NULL);
	if (rc)
		print_message("# %s\n", coffer_error_last()->message);
	assert_int_equal(rc, COFFER_OK);
	assert_int_equal(n, expect_keys);
	assert_int_equal(m->pins_out, 0);
	assert_int_equal(m->free_reads, 0);
}

static void put_ok(mem_pageio *m, cf_pgno *root, const void *k, size_t kl, const void *v, size_t vl)
{
	int rc = cf_bt_put(&m->io, root, k, kl, v, vl, 0);
	if (rc)
		print_message("# put: %s\n", coffer_error_last()->message);
	assert_int_equal(rc, COFFER_OK);
}

static void get_expect(mem_pageio *m, cf_pgno root, const void *k, size_t kl, const void *v, size_t vl)
{
	void *got = NULL;
	size_t gl = 0;
	int rc = cf_bt_get(&m->io, root, k, kl, &got, &gl);
	if (rc)
		print_message("# get: %s\n", coffer_error_last()->message);
	assert_int_equal(rc, COFFER_OK);
	assert_non_null(got);
	assert_int_equal(gl, vl);
	if (vl)
		assert_memory_equal(got, v, vl);
	free(got);
}

static size_t numkey(uint8_t *buf, const char *prefix, unsigned i)
{
	return (size_t)sprintf((char *)buf, "%s%08u", prefix, i);
}

/* ---- basics ----------------------------------------------------------- */

static void test_empty_tree(void **state)
{
	mem_pageio *m = mem_open(ps_of(state));
	cf_pgno root;
	assert_int_equal(cf_bt_create(&m->io, &root), COFFER_OK);
	assert_int_equal(root, CF_PGNO_FIRST_FREE);
	assert_int_equal(m->live, 1);
	void *v = (void *)1;
	size_t vl = 7;
	assert_int_equal(cf_bt_get(&m->io, root, "a", 1, &v, &vl), COFFER_E_NOT_FOUND);
	assert_null(v);
	assert_int_equal(vl, 0);
	assert_int_equal(coffer_error_last()->code, COFFER_E_NOT_FOUND);
	assert_int_equal(cf_bt_del(&m->io, &root, "a", 1), COFFER_E_NOT_FOUND);
	uint64_t n = 9;
	assert_int_equal(cf_bt_count(&m->io, root, &n), COFFER_OK);
	assert_int_equal(n, 0);
	cf_bt_cursor *c;
	assert_int_equal(cf_bt_cursor_open(&m->io, root, &c), COFFER_OK);
	assert_int_equal(cf_bt_cursor_first(c), COFFER_E_NOT_FOUND);
	assert_int_equal(cf_bt_cursor_last(c), COFFER_E_NOT_FOUND);
	assert_int_equal(cf_bt_cursor_seek(c, "", 0), COFFER_E_NOT_FOUND);
	assert_int_equal(cf_bt_cursor_next(c), COFFER_E_NOT_FOUND);
	const void *k;
	size_t kl;
	assert_int_equal(cf_bt_cursor_key(c, &k, &kl), COFFER_E_NOT_FOUND);
	assert_int_equal(cf_bt_cursor_del(c), COFFER_E_NOT_FOUND);
	cf_bt_cursor_close(c);
	assert_clean(m, root, 0);
	assert_int_equal(cf_bt_drop(&m->io, root), COFFER_OK);
	assert_int_equal(m->live, 0);
	mem_pageio_close(m);
}

static void test_key_and_value_limits(void **state)
{
	mem_pageio *m = mem_open(ps_of(state));
	cf_pgno root;
	assert_int_equal(cf_bt_create(&m->io, &root), COFFER_OK);
	static uint8_t big[CF_BT_MAX_KEY + 1];
	memset(big, 'k', sizeof big);

	assert_int_equal(cf_bt_put(&m->io, &root, "", 0, "v", 1, 0), COFFER_E_INVALID_ARGUMENT);
	assert_int_equal(cf_bt_put(&m->io, &root, big, CF_BT_MAX_KEY + 1, "v", 1, 0), COFFER_E_KEY_TOO_LARGE);
	assert_non_null(strstr(coffer_error_last()->message, "1024"));
	assert_int_equal(cf_bt_put(&m->io, &root, "k", 1, big, (size_t)CF_BT_MAX_VALUE + 1, 0),
			 COFFER_E_VALUE_TOO_LARGE);
	assert_non_null(strstr(coffer_error_last()->message, "4294967295"));
	void *v;
	size_t vl;
	assert_int_equal(cf_bt_get(&m->io, root, big, CF_BT_MAX_KEY + 1, &v, &vl), COFFER_E_KEY_TOO_LARGE);
	assert_int_equal(cf_bt_del(&m->io, &root, "", 0), COFFER_E_INVALID_ARGUMENT);

	/* 1-byte keys, every byte value, empty values */
	for (unsigned b = 0; b < 256; b++) {
		uint8_t k = (uint8_t)b;
		put_ok(m, &root, &k, 1, "", 0);
	}
	/* max-size keys differing in the last byte only, and in the first */
	for (unsigned i = 0; i < 40; i++) {
		big[CF_BT_MAX_KEY - 1] = (uint8_t)i;
		big[0] = (uint8_t)(i % 3);
		uint8_t val[8];
		fill_pattern(val, sizeof val, i);
		put_ok(m, &root, big, CF_BT_MAX_KEY, val, sizeof val);
	}
	assert_clean(m, root, 256 + 40);
	for (unsigned b = 0; b < 256; b++) {
		uint8_t k = (uint8_t)b;
		get_expect(m, root, &k, 1, "", 0);
	}
	for (unsigned i = 0; i < 40; i++) {
		big[CF_BT_MAX_KEY - 1] = (uint8_t)i;
		big[0] = (uint8_t)(i % 3);
		uint8_t val[8];
		fill_pattern(val, sizeof val, i);
		get_expect(m, root, big, CF_BT_MAX_KEY, val, sizeof val);
	}
	/* the order: 1-byte key 0x00 first, then the max keys starting 0x00... */
	cf_bt_cursor *c;
	assert_int_equal(cf_bt_cursor_open(&m->io, root, &c), COFFER_OK);
	uint8_t prev[CF_BT_MAX_KEY];
	size_t prevl = 0, seen = 0;
	for (int rc = cf_bt_cursor_first(c); rc == COFFER_OK; rc = cf_bt_cursor_next(c)) {
		const void *k;
		size_t kl;
		assert_int_equal(cf_bt_cursor_key(c, &k, &kl), COFFER_OK);
		if (seen)
			assert_true(bt_cmp(prev, prevl, k, kl) < 0);
		memcpy(prev, k, kl);
		prevl = kl;
		seen++;
	}
	assert_int_equal(seen, 256 + 40);
	cf_bt_cursor_close(c);
	/* empty everything */
	for (unsigned b = 0; b < 256; b++) {
		uint8_t k = (uint8_t)b;
		assert_int_equal(cf_bt_del(&m->io, &root, &k, 1), COFFER_OK);
	}
	for (unsigned i = 0; i < 40; i++) {
		big[CF_BT_MAX_KEY - 1] = (uint8_t)i;
		big[0] = (uint8_t)(i % 3);
		assert_int_equal(cf_bt_del(&m->io, &root, big, CF_BT_MAX_KEY), COFFER_OK);
	}
	assert_clean(m, root, 0);
	assert_int_equal(m->live, 1);
	mem_pageio_close(m);
}

static void test_inline_overflow_boundary(void **state)
{
	uint32_t ps = ps_of(state);
	size_t klens[] = {1, 17, 200, 1000, CF_BT_MAX_KEY};
	for (size_t t = 0; t < sizeof klens / sizeof klens[0]; t++) {
		mem_pageio *m = mem_open(ps);
		cf_pgno root;
		assert_int_equal(cf_bt_create(&m->io, &root), COFFER_OK);
		size_t kl = klens[t];
		uint8_t key[CF_BT_MAX_KEY];
		fill_pattern(key, kl, kl);
		uint64_t max = cf_bt_max_inline_value(ps, kl);
		assert_true(max >= 4);
		uint32_t room = ps - BT_OVFL_DATA;
		/* exactly at the limit: inline, no extra page */
		uint8_t *val = malloc(max + 2 * room + 2);
		fill_pattern(val, max + 2 * room + 2, 99);
		put_ok(m, &root, key, kl, val, max);
		assert_int_equal(m->live, 1);
		get_expect(m, root, key, kl, val, max);
		/* one more byte: overflow */
		put_ok(m, &root, key, kl, val, max + 1);
		assert_int_equal(m->live, 1 + (max + 1 + room - 1) / room);
		get_expect(m, root, key, kl, val, max + 1);
		/* chain lengths: exactly one and two pages, one byte over */
		uint64_t sizes[] = {room, room + 1, 2 * room, 2 * room + 1};
		for (size_t i = 0; i < 4; i++) {
			if (sizes[i] <= max)
				continue;
			put_ok(m, &root, key, kl, val, sizes[i]);
			assert_int_equal(m->live, 1 + (sizes[i] + room - 1) / room);
			get_expect(m, root, key, kl, val, sizes[i]);
		}
		/* back to inline frees the chain */
		put_ok(m, &root, key, kl, val, 3);
		assert_int_equal(m->live, 1);
		assert_clean(m, root, 1);
		free(val);
		mem_pageio_close(m);
	}
	/* the limit follows the documented rule */
	assert_int_equal(cf_bt_max_inline_value(4096, 1), 1013 - 1 - 2 - 1);
	assert_int_equal(cf_bt_max_inline_value(4096, CF_BT_MAX_KEY), 4);
	assert_int_equal(cf_bt_max_inline_value(8192, 10), 2037 - 1 - 2 - 10);
}

static void test_large_value_streaming(void **state)
{
	uint32_t ps = ps_of(state);
	size_t big = ps == 4096 ? (size_t)64 << 20 : (size_t)5 << 20;
	mem_pageio *m = mem_open(ps);
	cf_pgno root;
	assert_int_equal(cf_bt_create(&m->io, &root), COFFER_OK);
	uint8_t *val = malloc(big);
	assert_non_null(val);
	fill_pattern(val, big, 1234);
	put_ok(m, &root, "big", 3, val, big);
	put_ok(m, &root, "small", 5, "x", 1);
	mem_pageio_commit(m);
	uint64_t npg = (big + ps - 29) / (ps - 28);
	assert_int_equal(m->live, 1 + npg);

	void *got;
	size_t gl;
	assert_int_equal(cf_bt_get(&m->io, root, "big", 3, &got, &gl), COFFER_OK);
	assert_int_equal(gl, big);
	assert_memory_equal(got, val, big);
	free(got);

	cf_bt_cursor *c;
	assert_int_equal(cf_bt_cursor_open(&m->io, root, &c), COFFER_OK);
	assert_int_equal(cf_bt_cursor_seek(c, "big", 3), COFFER_OK);
	uint64_t vs;
	assert_int_equal(cf_bt_cursor_value_size(c, &vs), COFFER_OK);
	assert_int_equal(vs, big);
	/* stream it in odd-sized chunks: reads stay linear */
	size_t chunk = 100003, off = 0, n;
	uint8_t *buf = malloc(chunk);
	uint64_t reads0 = m->reads;
	while (off < big) {
		assert_int_equal(cf_bt_cursor_value_read(c, off, buf, chunk, &n), COFFER_OK);
		assert_true(n > 0);
		assert_memory_equal(buf, val + off, n);
		off += n;
	}
	assert_true(m->reads - reads0 < npg + npg / 10 + big / chunk + 4);
	assert_int_equal(cf_bt_cursor_value_read(c, big, buf, chunk, &n), COFFER_OK);
	assert_int_equal(n, 0);
	/* random reads */
	for (int i = 0; i < 20; i++) {
		uint64_t o = rnd_below(big);
		assert_int_equal(cf_bt_cursor_value_read(c, o, buf, 5000, &n), COFFER_OK);
		assert_int_equal(n, big - o < 5000 ? big - o : 5000);
		assert_memory_equal(buf, val + o, n);
	}
	free(buf);
	const void *vp;
	size_t vpl;
	assert_int_equal(cf_bt_cursor_value(c, &vp, &vpl), COFFER_OK);
	assert_int_equal(vpl, big);
	assert_memory_equal(vp, val, big);
	assert_int_equal(cf_bt_cursor_next(c), COFFER_OK);
	assert_int_equal(cf_bt_cursor_value(c, &vp, &vpl), COFFER_OK);
	assert_int_equal(vpl, 1);
	assert_memory_equal(vp, "x", 1);
	cf_bt_cursor_close(c);
	assert_int_equal(m->pins_out, 0);
	assert_clean(m, root, 2);

	assert_int_equal(cf_bt_del(&m->io, &root, "big", 3), COFFER_OK);
	assert_int_equal(m->live, 1);
	free(val);
	mem_pageio_close(m);
}

static void test_nooverwrite_and_replace(void **state)
{
	mem_pageio *m = mem_open(ps_of(state));
	cf_pgno root;
	assert_int_equal(cf_bt_create(&m->io, &root), COFFER_OK);
	put_ok(m, &root, "key", 3, "one", 3);
	assert_int_equal(cf_bt_put(&m->io, &root, "key", 3, "two", 3, CF_BT_NOOVERWRITE), COFFER_E_EXISTS);
	get_expect(m, root, "key", 3, "one", 3);
	assert_int_equal(cf_bt_put(&m->io, &root, "kez", 3, "two", 3, CF_BT_NOOVERWRITE), COFFER_OK);
	put_ok(m, &root, "key", 3, "three", 5);
	get_expect(m, root, "key", 3, "three", 5);
	put_ok(m, &root, "key", 3, "4", 1);
	get_expect(m, root, "key", 3, "4", 1);
	put_ok(m, &root, "key", 3, "5", 1); /* same size: in place */
	get_expect(m, root, "key", 3, "5", 1);
	assert_clean(m, root, 2);
	mem_pageio_close(m);
}

/* ---- order, seek, scans ----------------------------------------------- */

static void test_order_seek_prefix(void **state)
{
	uint32_t ps = ps_of(state);
	mem_pageio *m = mem_open(ps);
	cf_pgno root;
	assert_int_equal(cf_bt_create(&m->io, &root), COFFER_OK);
	unsigned N = 3000;
	uint8_t k[64], v[64];
	/* insert in a scrambled order: keys "p%03u/%08u" (30 prefixes) */
	for (unsigned j = 0; j < N; j++) {
		unsigned i = (j * 7919u) % N;
		size_t kl = (size_t)sprintf((char *)k, "p%03u/%08u", i % 30, i);
		size_t vl = (size_t)sprintf((char *)v, "value-%u", i);
		put_ok(m, &root, k, kl, v, vl);
	}
	assert_clean(m, root, N);
	cf_bt_cursor *c;
	assert_int_equal(cf_bt_cursor_open(&m->io, root, &c), COFFER_OK);
	/* forward: strictly ascending, N items */
	uint8_t prev[64];
	size_t prevl = 0, seen = 0;
	int rc;
	for (rc = cf_bt_cursor_first(c); rc == COFFER_OK; rc = cf_bt_cursor_next(c)) {
		const void *key, *val;
		size_t kl, vl;
		assert_int_equal(cf_bt_cursor_key(c, &key, &kl), COFFER_OK);
		assert_int_equal(cf_bt_cursor_value(c, &val, &vl), COFFER_OK);
		unsigned pfx, i;
		assert_int_equal(sscanf(key, "p%03u/%08u", &pfx, &i), 2);
		char ev[32];
		assert_int_equal(vl, (size_t)sprintf(ev, "value-%u", i));
		assert_memory_equal(val, ev, vl);
		if (seen)
			assert_true(bt_cmp(prev, prevl, key, kl) < 0);
		memcpy(prev, key, kl);
		prevl = kl;
		seen++;
	}
	assert_int_equal(rc, COFFER_E_NOT_FOUND);
	assert_int_equal(seen, N);
	assert_int_equal(cf_bt_cursor_next(c), COFFER_E_NOT_FOUND);
	/* backward */
	seen = 0;
	for (rc = cf_bt_cursor_last(c); rc == COFFER_OK; rc = cf_bt_cursor_prev(c)) {
		const void *key;
		size_t kl;
		assert_int_equal(cf_bt_cursor_key(c, &key, &kl), COFFER_OK);
		if (seen)
			assert_true(bt_cmp(key, kl, prev, prevl) < 0);
		memcpy(prev, key, kl);
		prevl = kl;
		seen++;
	}
	assert_int_equal(seen, N);
	/* seek: exact, between, before the first, after the last */
	const void *key;
	size_t kl;
	assert_int_equal(cf_bt_cursor_seek(c, "p007/00000007", 13), COFFER_OK);
	assert_int_equal(cf_bt_cursor_key(c, &key, &kl), COFFER_OK);
	assert_memory_equal(key, "p007/00000007", 13);
	assert_int_equal(cf_bt_cursor_seek(c, "p007/00000008", 13), COFFER_OK); /* absent: next is 37 */
	assert_int_equal(cf_bt_cursor_key(c, &key, &kl), COFFER_OK);
	assert_int_equal(kl, 13);
	assert_memory_equal(key, "p007/00000037", 13);
	assert_int_equal(cf_bt_cursor_seek(c, "p007", 4), COFFER_OK); /* a prefix */
	assert_int_equal(cf_bt_cursor_key(c, &key, &kl), COFFER_OK);
	assert_memory_equal(key, "p007/00000007", 13);
	assert_int_equal(cf_bt_cursor_seek(c, "", 0), COFFER_OK);
	assert_int_equal(cf_bt_cursor_key(c, &key, &kl), COFFER_OK);
	assert_memory_equal(key, "p000/00000000", 13);
	assert_int_equal(cf_bt_cursor_seek(c, "p029/99999999", 13), COFFER_E_NOT_FOUND);
	assert_int_equal(cf_bt_cursor_seek(c, "q", 1), COFFER_E_NOT_FOUND);
	assert_int_equal(cf_bt_cursor_seek(c, "p029/00002999", 13), COFFER_OK);
	assert_int_equal(cf_bt_cursor_next(c), COFFER_E_NOT_FOUND);
	/* seek to every key and to just before it */
	for (unsigned i = 0; i < N; i += 13) {
		size_t l = (size_t)sprintf((char *)k, "p%03u/%08u", i % 30, i);
		assert_int_equal(cf_bt_cursor_seek(c, k, l), COFFER_OK);
		assert_int_equal(cf_bt_cursor_key(c, &key, &kl), COFFER_OK);
		assert_int_equal(kl, l);
		assert_memory_equal(key, k, l);
		k[l - 1]--; /* "...6" < "...7": lands on the key itself or an earlier one */
		if (k[l - 1] >= '0') {
			assert_int_equal(cf_bt_cursor_seek(c, k, l), COFFER_OK);
			assert_int_equal(cf_bt_cursor_key(c, &key, &kl), COFFER_OK);
			assert_true(bt_cmp(key, kl, k, l) >= 0);
		}
	}
	/* prefix scan: every key of p013/ */
	seen = 0;
	for (rc = cf_bt_cursor_seek(c, "p013/", 5); rc == COFFER_OK; rc = cf_bt_cursor_next(c)) {
		assert_int_equal(cf_bt_cursor_key(c, &key, &kl), COFFER_OK);
		if (kl < 5 || memcmp(key, "p013/", 5) != 0)
			break;
		seen++;
	}
	assert_int_equal(seen, N / 30);
	/* range scan [p010/00000500, p010/00001000) */
	seen = 0;
	for (rc = cf_bt_cursor_seek(c, "p010/00000500", 13); rc == COFFER_OK; rc = cf_bt_cursor_next(c)) {
		assert_int_equal(cf_bt_cursor_key(c, &key, &kl), COFFER_OK);
		if (bt_cmp(key, kl, (const uint8_t *)"p010/00001000", 13) >= 0)
			break;
		seen++;
	}
	assert_int_equal(seen, 16); /* 520, 550, ..., 970 */
	/* cursor_del: remove the whole p020/ range through the cursor */
	rc = cf_bt_cursor_seek(c, "p020/", 5);
	unsigned deleted = 0;
	while (rc == COFFER_OK) {
		assert_int_equal(cf_bt_cursor_key(c, &key, &kl), COFFER_OK);
		if (memcmp(key, "p020/", 5) != 0)
			break;
		rc = cf_bt_cursor_del(c);
		deleted++;
	}
	assert_int_equal(rc, COFFER_OK);
	assert_int_equal(deleted, N / 30);
	assert_int_equal(cf_bt_cursor_key(c, &key, &kl), COFFER_OK);
	assert_memory_equal(key, "p021/00000021", 13);
	/* delete the last key through the cursor: NOT_FOUND, but deleted */
	assert_int_equal(cf_bt_cursor_last(c), COFFER_OK);
	assert_int_equal(cf_bt_cursor_del(c), COFFER_E_NOT_FOUND);
	cf_bt_cursor_close(c);
	assert_int_equal(m->pins_out, 0);
	assert_clean(m, root, N - N / 30 - 1);
	uint64_t cnt;
	assert_int_equal(cf_bt_count(&m->io, root, &cnt), COFFER_OK);
	assert_int_equal(cnt, N - N / 30 - 1);
	mem_pageio_close(m);
}

/* ---- page usage --------------------------------------------------------- */

/* Sequential loads (ascending or descending) leave nearly full pages. */
static void test_sequential_fill(void **state)
{
	uint32_t ps = ps_of(state);
	unsigned N = ps == 65536 ? 60000 : 20000;
	for (int dir = 0; dir < 3; dir++) {
		mem_pageio *m = mem_open(ps);
		cf_pgno root;
		assert_int_equal(cf_bt_create(&m->io, &root), COFFER_OK);
		uint8_t k[32], v[16];
		memset(v, 'v', sizeof v);
		for (unsigned j = 0; j < N; j++) {
			unsigned i = dir == 0 ? j : dir == 1 ? N - 1 - j : (unsigned)((j * 1000003ull) % N);
			size_t kl = numkey(k, "key", i);
			put_ok(m, &root, k, kl, v, sizeof v);
		}
		assert_clean(m, root, N);
		/* cell: 1 + 1 + 11 + 16 bytes, slot 2 */
		uint64_t min_leaves = (uint64_t)N * 31 / bt_usable(ps) + 1;
		double fill = (double)min_leaves / (double)m->live;
		print_message("# page %u, %s load: %llu pages for %llu leaves' worth (%.0f%%)\n", ps,
			      dir == 0 ? "ascending" : dir == 1 ? "descending" : "random",
			      (unsigned long long)m->live, (unsigned long long)min_leaves, fill * 100);
		if (dir < 2)
			assert_true(fill > 0.95);
		else
			assert_true(fill > 0.55);
		mem_pageio_close(m);
	}
}

/* Fill, empty (in several orders), refill: pages come back and are reused. */
static void test_fill_empty_refill(void **state)
{
	uint32_t ps = ps_of(state);
	unsigned N = ps == 65536 ? 6000 : 3000;
	uint32_t room = ps - BT_OVFL_DATA;
	uint8_t *vbuf = malloc(3 * room);
	fill_pattern(vbuf, 3 * room, 5);
	for (int order = 0; order < 3; order++) {
		mem_pageio *m = mem_open(ps);
		cf_pgno root;
		assert_int_equal(cf_bt_create(&m->io, &root), COFFER_OK);
		cf_pgno hwm = 0;
		for (int round = 0; round < 2; round++) {
			uint8_t k[32];
			for (unsigned i = 0; i < N; i++) {
				size_t kl = numkey(k, i % 2 ? "odd" : "even", (unsigned)((i * 2654435761ull) % 100000));
				size_t vl = i % 97 == 0 ? room + i % room : (i * 31) % 200;
				put_ok(m, &root, k, kl, vbuf + i % room, vl);
			}
			mem_pageio_commit(m);
			assert_clean(m, root, N);
			if (round == 0)
				hwm = m->npages;
			else
				assert_int_equal(m->npages, hwm); /* refill reused the freed pages */
			uint64_t full = m->live;
			for (unsigned j = 0; j < N; j++) {
				unsigned i = order == 0 ? j : order == 1 ? N - 1 - j : (j * 7u) % N;
				if (order == 2 && N % 7 == 0)
					i = j;
				size_t kl = numkey(k, i % 2 ? "odd" : "even", (unsigned)((i * 2654435761ull) % 100000));
				int rc = cf_bt_del(&m->io, &root, k, kl);
				if (rc)
					print_message("# del: %s\n", coffer_error_last()->message);
				assert_int_equal(rc, COFFER_OK);
				if (j == N * 9 / 10) {
					/* with a tenth left, pages shrank with it */
					assert_clean(m, root, N - j - 1);
					assert_true(m->live * 4 < full);
				}
			}
			assert_clean(m, root, 0);
			assert_int_equal(m->live, 1);
			assert_int_equal(m->nfree, m->npages - CF_PGNO_FIRST_FREE - 1);
		}
		assert_int_equal(cf_bt_drop(&m->io, root), COFFER_OK);
		assert_int_equal(m->live, 0);
		mem_pageio_close(m);
	}
	free(vbuf);
}

static void test_several_trees_and_drop(void **state)
{
	uint32_t ps = ps_of(state);
	mem_pageio *m = mem_open(ps);
	cf_pgno roots[3];
	for (int t = 0; t < 3; t++)
		assert_int_equal(cf_bt_create(&m->io, &roots[t]), COFFER_OK);
	uint8_t k[32], *v = malloc(ps);
	fill_pattern(v, ps, 3);
	for (unsigned i = 0; i < 2000; i++) {
		int t = (int)(i % 3);
		size_t kl = numkey(k, "k", i);
		put_ok(m, &roots[t], k, kl, v, i % 50 == 0 ? ps : i % 40);
	}
	uint8_t *owned = calloc(m->npages / 8 + 1, 1);
	uint64_t total = 0;
	for (int t = 0; t < 3; t++) {
		uint64_t n;
		assert_int_equal(cf_bt_check(&m->io, roots[t], owned, m->npages, print_problem, NULL, &n),
				 COFFER_OK);
		total += n;
	}
	assert_int_equal(total, 2000);
	uint64_t marked = 0;
	for (cf_pgno p = 0; p < m->npages; p++)
		marked += (owned[p / 8] >> (p % 8)) & 1;
	assert_int_equal(marked, m->live);
	/* the same bitmap again: every page is "used twice" */
	problems pr = {0};
	assert_int_equal(cf_bt_check(&m->io, roots[0], owned, m->npages, on_problem, &pr, NULL),
			 COFFER_E_PAGE_CORRUPT);
	assert_int_equal(pr.n, 1); /* the root; the walk stops there */
	assert_int_equal(pr.first, roots[0]);
	free(owned);
	for (unsigned i = 0; i < 2000; i++) {
		size_t kl = numkey(k, "k", i);
		for (int t = 0; t < 3; t++) {
			void *g;
			size_t gl;
			assert_int_equal(cf_bt_get(&m->io, roots[t], k, kl, &g, &gl),
					 t == (int)(i % 3) ? COFFER_OK : COFFER_E_NOT_FOUND);
			free(g);
		}
	}
	uint64_t before = m->live;
	uint8_t *own1 = calloc(m->npages / 8 + 1, 1);
	assert_int_equal(cf_bt_check(&m->io, roots[1], own1, m->npages, print_problem, NULL, NULL), COFFER_OK);
	uint64_t t1 = 0;
	for (cf_pgno p = 0; p < m->npages; p++)
		t1 += (own1[p / 8] >> (p % 8)) & 1;
	free(own1);
	assert_int_equal(cf_bt_drop(&m->io, roots[1]), COFFER_OK);
	assert_int_equal(m->live, before - t1);
	assert_clean(m, roots[0], 667);
	assert_clean(m, roots[2], 666);
	free(v);
	mem_pageio_close(m);
}

/* ---- randomized against a model ---------------------------------------- */

typedef struct entry {
	uint8_t *key;
	size_t klen;
	uint8_t *val;
	size_t vlen;
} entry;

typedef struct model {
	entry *e;
	size_t n, cap;
} model;

static size_t model_find(const model *md, const uint8_t *k, size_t kl, int *found)
{
	size_t lo = 0, hi = md->n;
	*found = 0;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int r = bt_cmp(md->e[mid].key, md->e[mid].klen, k, kl);
		if (r < 0)
			lo = mid + 1;
		else if (r > 0)
			hi = mid;
		else {
			*found = 1;
			return mid;
		}
	}
	return lo;
}

static void model_put(model *md, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
	int found;
	size_t i = model_find(md, k, kl, &found);
	uint8_t *nv = malloc(vl ? vl : 1);
	memcpy(nv, v, vl);
	if (found) {
		free(md->e[i].val);
	} else {
		if (md->n == md->cap) {
			md->cap = md->cap ? md->cap * 2 : 256;
			md->e = realloc(md->e, md->cap * sizeof *md->e);
		}
		memmove(md->e + i + 1, md->e + i, (md->n - i) * sizeof *md->e);
		md->n++;
		md->e[i].key = malloc(kl);
		memcpy(md->e[i].key, k, kl);
		md->e[i].klen = kl;
	}
	md->e[i].val = nv;
	md->e[i].vlen = vl;
}

static int model_del(model *md, const uint8_t *k, size_t kl)
{
	int found;
	size_t i = model_find(md, k, kl, &found);
	if (!found)
		return 0;
	free(md->e[i].key);
	free(md->e[i].val);
	memmove(md->e + i, md->e + i + 1, (md->n - i - 1) * sizeof *md->e);
	md->n--;
	return 1;
}

static void model_free(model *md)
{
	for (size_t i = 0; i < md->n; i++) {
		free(md->e[i].key);
		free(md->e[i].val);
	}
	free(md->e);
}

/* 0: short keys, sometimes long; 1: long keys with long shared prefixes
 * (long separators: few cells per branch, deep trees, branch rotations). */
static int key_mode;

/* A key from a small alphabet with shared prefixes; sometimes long. */
static size_t random_key(uint8_t *k)
{
	if (key_mode == 1) {
		static const size_t plen[] = {0, 200, 600, 900, 1010};
		size_t pl = plen[rnd_below(5)];
		memset(k, 'a' + (int)(pl % 7), pl);
		return pl + (size_t)sprintf((char *)k + pl, "%llu", (unsigned long long)rnd_below(5000));
	}
	uint64_t r = rnd_below(100);
	size_t kl = r < 2 ? CF_BT_MAX_KEY - rnd_below(30) : r < 10 ? 20 + rnd_below(300) : 1 + rnd_below(12);
	for (size_t i = 0; i < kl; i++)
		k[i] = (uint8_t)("abcd\x00\xff"[rnd_below(i < 3 ? 6 : 3)]);
	return kl;
}

static size_t random_vlen(uint32_t ps)
{
	uint64_t r = rnd_below(100);
	if (r < 10)
		return 0;
	if (r < 80)
		return rnd_below(40);
	if (r < 95)
		return rnd_below(ps / 2);
	return rnd_below(3 * ps);
}

static void verify_against_model(mem_pageio *m, cf_pgno root, const model *md)
{
	assert_clean(m, root, md->n);
	cf_bt_cursor *c;
	assert_int_equal(cf_bt_cursor_open(&m->io, root, &c), COFFER_OK);
	size_t i = 0;
	int rc;
	for (rc = cf_bt_cursor_first(c); rc == COFFER_OK; rc = cf_bt_cursor_next(c), i++) {
		const void *k, *v;
		size_t kl, vl;
		assert_true(i < md->n);
		assert_int_equal(cf_bt_cursor_key(c, &k, &kl), COFFER_OK);
		assert_int_equal(kl, md->e[i].klen);
		assert_memory_equal(k, md->e[i].key, kl);
		assert_int_equal(cf_bt_cursor_value(c, &v, &vl), COFFER_OK);
		assert_int_equal(vl, md->e[i].vlen);
		if (vl)
			assert_memory_equal(v, md->e[i].val, vl);
	}
	assert_int_equal(rc, COFFER_E_NOT_FOUND);
	assert_int_equal(i, md->n);
	/* backward, keys only */
	for (rc = cf_bt_cursor_last(c); rc == COFFER_OK; rc = cf_bt_cursor_prev(c)) {
		const void *k;
		size_t kl;
		assert_true(i > 0);
		i--;
		assert_int_equal(cf_bt_cursor_key(c, &k, &kl), COFFER_OK);
		assert_int_equal(kl, md->e[i].klen);
		assert_memory_equal(k, md->e[i].key, kl);
	}
	assert_int_equal(i, 0);
	/* random seeks */
	for (int s = 0; s < 20; s++) {
		uint8_t k[CF_BT_MAX_KEY];
		size_t kl = random_key(k);
		int found;
		size_t at = model_find(md, k, kl, &found);
		rc = cf_bt_cursor_seek(c, k, kl);
		if (at == md->n) {
			assert_int_equal(rc, COFFER_E_NOT_FOUND);
		} else {
			const void *ck;
			size_t ckl;
			assert_int_equal(rc, COFFER_OK);
			assert_int_equal(cf_bt_cursor_key(c, &ck, &ckl), COFFER_OK);
			assert_int_equal(ckl, md->e[at].klen);
			assert_memory_equal(ck, md->e[at].key, ckl);
		}
	}
	cf_bt_cursor_close(c);
	assert_int_equal(m->pins_out, 0);
}

static void random_run(uint32_t ps, uint64_t seed, unsigned batches, unsigned per_batch)
{
	rnd_seed(seed);
	mem_pageio *m = mem_open(ps);
	cf_pgno root;
	assert_int_equal(cf_bt_create(&m->io, &root), COFFER_OK);
	model md = {0};
	uint8_t k[CF_BT_MAX_KEY];
	uint8_t *vbuf = malloc(3 * ps);
	for (unsigned b = 0; b < batches; b++) {
		/* the first half of the batches grows the tree, the rest shrinks it */
		unsigned put_pct = b < batches / 2 ? 70 : 30;
		for (unsigned o = 0; o < per_batch; o++) {
			uint64_t r = rnd_below(100);
			size_t kl;
			if (r < put_pct) {
				kl = random_key(k);
				size_t vl = random_vlen(ps);
				fill_pattern(vbuf, vl, rnd());
				unsigned flags = rnd_below(10) == 0 ? CF_BT_NOOVERWRITE : 0;
				int found;
				model_find(&md, k, kl, &found);
				int rc = cf_bt_put(&m->io, &root, k, kl, vbuf, vl, flags);
				if (found && flags) {
					assert_int_equal(rc, COFFER_E_EXISTS);
				} else {
					if (rc)
						print_message("# put: %s\n", coffer_error_last()->message);
					assert_int_equal(rc, COFFER_OK);
					model_put(&md, k, kl, vbuf, vl);
				}
			} else if (r < 95 && md.n > 0 && rnd_below(4)) {
				/* delete an existing key */
				entry *e = &md.e[rnd_below(md.n)];
				memcpy(k, e->key, e->klen);
				kl = e->klen;
				int rc = cf_bt_del(&m->io, &root, k, kl);
				if (rc)
					print_message("# del: %s\n", coffer_error_last()->message);
				assert_int_equal(rc, COFFER_OK);
				model_del(&md, k, kl);
			} else {
				kl = random_key(k);
				int found;
				size_t at = model_find(&md, k, kl, &found);
				void *g = NULL;
				size_t gl;
				int rc = cf_bt_get(&m->io, root, k, kl, &g, &gl);
				if (found) {
					assert_int_equal(rc, COFFER_OK);
					assert_int_equal(gl, md.e[at].vlen);
					if (gl)
						assert_memory_equal(g, md.e[at].val, gl);
				} else {
					assert_int_equal(rc, COFFER_E_NOT_FOUND);
					rc = cf_bt_del(&m->io, &root, k, kl);
					assert_int_equal(rc, COFFER_E_NOT_FOUND);
				}
				free(g);
			}
		}
		verify_against_model(m, root, &md);
		if (b % 3 == 0)
			mem_pageio_commit(m);
	}
	/* empty it: back to the root alone */
	while (md.n > 0) {
		entry *e = &md.e[rnd_below(md.n)];
		memcpy(k, e->key, e->klen);
		size_t kl = e->klen;
		assert_int_equal(cf_bt_del(&m->io, &root, k, kl), COFFER_OK);
		model_del(&md, k, kl);
	}
	verify_against_model(m, root, &md);
	assert_int_equal(m->live, 1);
	model_free(&md);
	free(vbuf);
	mem_pageio_close(m);
}

static void test_random_ops(void **state)
{
	uint32_t ps = ps_of(state);
	uint64_t seeds[] = {1, 2, 3};
	for (size_t i = 0; i < 3; i++)
		random_run(ps, seeds[i], 12, 300);
	/* one seed from the clock, printed; BT_SEED=N replays it */
	const char *env = getenv("BT_SEED");
	uint64_t t = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)ps << 20);
	print_message("# random_ops page %u: seed %llu (replay: BT_SEED=%llu)\n", ps, (unsigned long long)t,
		      (unsigned long long)t);
	random_run(ps, t, 12, 300);
}

static void test_random_long_keys(void **state)
{
	uint32_t ps = ps_of(state);
	key_mode = 1;
	random_run(ps, 11, 16, ps == 65536 ? 700 : 500);
	random_run(ps, 12, 16, ps == 65536 ? 700 : 500);
	key_mode = 0;
}

/* Many small keys: deep trees with branch splits, merges and rotations. */
static void test_random_small_keys_deep(void **state)
{
	uint32_t ps = ps_of(state);
	rnd_seed(77);
	mem_pageio *m = mem_open(ps);
	cf_pgno root;
	assert_int_equal(cf_bt_create(&m->io, &root), COFFER_OK);
	unsigned N = 30000;
	uint8_t k[64];
	/* long shared-prefix keys make branches fill quickly at 4 KiB */
	for (unsigned i = 0; i < N; i++) {
		unsigned x = (unsigned)((i * 7919ull) % N);
		size_t kl = (size_t)sprintf((char *)k, "%0*u", 40, x);
		put_ok(m, &root, k, kl, "v", 1);
	}
	assert_clean(m, root, N);
	for (unsigned i = 0; i < N; i++) {
		unsigned x = (unsigned)((i * 1000003ull) % N);
		size_t kl = (size_t)sprintf((char *)k, "%0*u", 40, x);
		int rc = cf_bt_del(&m->io, &root, k, kl);
		if (rc)
			print_message("# del: %s\n", coffer_error_last()->message);
		assert_int_equal(rc, COFFER_OK);
		if (i % 5000 == 0)
			assert_clean(m, root, N - i - 1);
	}
	assert_clean(m, root, 0);
	assert_int_equal(m->live, 1);
	mem_pageio_close(m);
}

/* Build a node from (key, value) pairs (leaf) or (key, child) pairs plus
 * leftmost (branch), straight from the format helpers. */
typedef struct kv {
	const char *key;
	size_t klen;
	size_t vlen;   /* leaf: value length (bytes 'v') */
	cf_pgno child; /* branch */
} kv;

static void build_node(mem_pageio *m, cf_pgno pgno, uint8_t type, cf_pgno leftmost, const kv *kvs,
		       unsigned n)
{
	static uint8_t val[2048];
	memset(val, 'v', sizeof val);
	uint8_t *bufs[16];
	bt_ref refs[16];
	assert_true(n <= 16);
	for (unsigned i = 0; i < n; i++) {
		bt_src s;
		if (type == CF_PT_LEAF)
			bt_src_leaf(&s, m->io.page_size, (const uint8_t *)kvs[i].key, (uint32_t)kvs[i].klen,
				    val, kvs[i].vlen, 0);
		else
			bt_src_branch(&s, kvs[i].child, (const uint8_t *)kvs[i].key, (uint32_t)kvs[i].klen);
		bufs[i] = malloc(bt_src_size(&s));
		bt_src_write(bufs[i], &s);
		refs[i].p = bufs[i];
		refs[i].len = bt_src_size(&s);
	}
	uint8_t *pg;
	assert_int_equal(m->io.ops->write(&m->io, pgno, &pg), COFFER_OK);
	assert_int_equal(bt_node_build(&m->io, pgno, pg, type, leftmost, refs, n), COFFER_OK);
	for (unsigned i = 0; i < n; i++)
		free(bufs[i]);
}

static cf_pgno new_page(mem_pageio *m)
{
	cf_pgno p;
	uint8_t *pg;
	assert_int_equal(m->io.ops->alloc(&m->io, &p, &pg), COFFER_OK);
	return p;
}

/* A leaf redistribution whose new separator (1003 bytes) no longer fits in
 * the nearly full parent (the root): the parent splits. */
static void test_redistribution_splits_parent(void **state)
{
	(void)state;
	mem_pageio *m = mem_open(4096);
	cf_pgno root;
	assert_int_equal(cf_bt_create(&m->io, &root), COFFER_OK);
	static char kb[4][1004], kd[1011], ke[1011], kf[1011];
	for (int i = 0; i < 4; i++) {
		kb[i][0] = 'B';
		memset(kb[i] + 1, 'y', 1000);
		sprintf(kb[i] + 1001, "%02d", i);
	}
	kd[0] = 'D', ke[0] = 'E', kf[0] = 'F';
	memset(kd + 1, 'z', 1009);
	memset(ke + 1, 'w', 1009);
	memset(kf + 1, 'u', 1009);
	cf_pgno l = new_page(m), r = new_page(m), d = new_page(m), e = new_page(m), f = new_page(m);
	kv lk[4], rk[2] = {{"C1", 2, 1, 0}, {"C2", 2, 900, 0}};
	for (int i = 0; i < 4; i++)
		lk[i] = (kv){kb[i], 1003, 1, 0};
	kv dk = {kd, 1010, 1, 0}, ek = {ke, 1010, 1, 0}, fk = {kf, 1010, 1, 0};
	build_node(m, l, CF_PT_LEAF, 0, lk, 4);
	build_node(m, r, CF_PT_LEAF, 0, rk, 2);
	build_node(m, d, CF_PT_LEAF, 0, &dk, 1);
	build_node(m, e, CF_PT_LEAF, 0, &ek, 1);
	build_node(m, f, CF_PT_LEAF, 0, &fk, 1);
	kv pk[4] = {{"C", 1, 0, r}, {kd, 1010, 0, d}, {ke, 1010, 0, e}, {kf, 1010, 0, f}};
	build_node(m, root, CF_PT_BRANCH, l, pk, 4);
	const uint8_t *rp = raw_page(m, root);
	assert_true(bt_free(rp) < 1011 - 8); /* the long separator will not fit */
	assert_clean(m, root, 9);

	assert_int_equal(cf_bt_del(&m->io, &root, "C1", 2), COFFER_OK);
	assert_clean(m, root, 8);
	rp = raw_page(m, root);
	assert_int_equal(cf_page_type(rp), CF_PT_BRANCH);
	const uint8_t *child = raw_page(m, bt_leftmost(rp));
	assert_int_equal(cf_page_type(child), CF_PT_BRANCH); /* one level deeper */
	for (int i = 0; i < 4; i++)
		get_expect(m, root, kb[i], 1003, "v", 1);
	void *g;
	size_t gl;
	assert_int_equal(cf_bt_get(&m->io, root, "C2", 2, &g, &gl), COFFER_OK);
	assert_int_equal(gl, 900);
	free(g);
	get_expect(m, root, kf, 1010, "v", 1);
	mem_pageio_close(m);
}

/* ---- damage ----------------------------------------------------------- */

typedef struct dtree {
	mem_pageio *m;
	cf_pgno root;
	unsigned n;
} dtree;

static size_t dkey(uint8_t *k, unsigned i)
{
	return numkey(k, "dmg", i);
}

static void dtree_build(dtree *d, uint32_t ps, unsigned n)
{
	d->m = mem_open(ps);
	d->n = n;
	assert_int_equal(cf_bt_create(&d->m->io, &d->root), COFFER_OK);
	uint8_t k[32], v[64];
	memset(v, 'v', sizeof v);
	for (unsigned i = 0; i < n; i++) {
		size_t kl = dkey(k, i);
		size_t vl = i == n / 2 ? 0 : 20;
		put_ok(d->m, &d->root, k, kl, v, vl);
	}
	mem_pageio_commit(d->m);
}

/* A leaf of the tree: the one holding key i. */
static cf_pgno leaf_of(dtree *d, unsigned i)
{
	uint8_t k[32];
	size_t kl = dkey(k, i);
	bt_path path;
	const uint8_t *pg;
	void *pin;
	int exact;
	assert_int_equal(bt_descend(&d->m->io, d->root, k, kl, &path, &pg, &pin, &exact), COFFER_OK);
	d->m->io.ops->release(&d->m->io, pin);
	assert_true(path.depth >= 2);
	return path.lv[path.depth - 1].pgno;
}

/* get/scan/check all report COFFER_E_PAGE_CORRUPT on page bad. */
static void expect_damage(dtree *d, cf_pgno bad, unsigned key_in_bad)
{
	mem_pageio *m = d->m;
	uint8_t k[32];
	size_t kl = dkey(k, key_in_bad);
	void *v = NULL;
	size_t vl;
	int rc = cf_bt_get(&m->io, d->root, k, kl, &v, &vl);
	free(v);
	assert_int_equal(rc, COFFER_E_PAGE_CORRUPT);
	assert_int_equal(coffer_error_last()->page, bad);
	assert_string_equal(coffer_error_last()->file, "mem.db");
	assert_int_equal(m->pins_out, 0);

	cf_bt_cursor *c;
	assert_int_equal(cf_bt_cursor_open(&m->io, d->root, &c), COFFER_OK);
	for (rc = cf_bt_cursor_first(c); rc == COFFER_OK; rc = cf_bt_cursor_next(c)) {
		const void *val;
		size_t vl2;
		rc = cf_bt_cursor_value(c, &val, &vl2);
		if (rc)
			break;
	}
	assert_int_equal(rc, COFFER_E_PAGE_CORRUPT);
	assert_int_equal(coffer_error_last()->page, bad);
	cf_bt_cursor_close(c);
	assert_int_equal(m->pins_out, 0);

	problems pr = {0};
	rc = check_tree(m, d->root, NULL, &pr);
	assert_int_equal(rc, COFFER_E_PAGE_CORRUPT);
	assert_true(pr.n >= 1);
	assert_int_equal(pr.first, bad);
	assert_int_equal(coffer_error_last()->page, bad);
	assert_int_equal(m->pins_out, 0);

	/* writes refuse the damaged page too, without crashing */
	rc = cf_bt_put(&m->io, &d->root, k, kl, "new", 3, 0);
	assert_int_equal(rc, COFFER_E_PAGE_CORRUPT);
	assert_int_equal(m->pins_out, 0);
}

static void test_damage_bad_count(void **state)
{
	dtree d;
	dtree_build(&d, ps_of(state), 2000);
	cf_pgno leaf = leaf_of(&d, 700);
	cf_put16(raw_page(d.m, leaf) + BT_NCELLS, 60000);
	expect_damage(&d, leaf, 700);
	mem_pageio_close(d.m);
}

static void test_damage_offset_out_of_range(void **state)
{
	uint32_t ps = ps_of(state);
	dtree d;
	dtree_build(&d, ps, 2000);
	cf_pgno leaf = leaf_of(&d, 700);
	uint8_t *pg = raw_page(d.m, leaf);
	/* every slot past the end of the page, then one just inside it (the
	 * cell would run off the end), then one below the cell area */
	unsigned n = bt_ncells(pg);
	for (unsigned i = 0; i < n; i++)
		cf_put16(pg + BT_SLOTS + 2 * i, (uint16_t)(ps - 2));
	expect_damage(&d, leaf, 700);
	mem_pageio_close(d.m);

	dtree_build(&d, ps, 2000);
	leaf = leaf_of(&d, 700);
	pg = raw_page(d.m, leaf);
	n = bt_ncells(pg);
	for (unsigned i = 0; i < n; i++)
		cf_put16(pg + BT_SLOTS + 2 * i, (uint16_t)(BT_SLOTS));
	expect_damage(&d, leaf, 700);
	mem_pageio_close(d.m);
}

static void test_damage_keys_out_of_order(void **state)
{
	dtree d;
	dtree_build(&d, ps_of(state), 2000);
	cf_pgno leaf = leaf_of(&d, 700);
	uint8_t *pg = raw_page(d.m, leaf);
	/* swap the slots of key 700 and its successor */
	uint8_t k[32];
	size_t kl = dkey(k, 700);
	unsigned idx;
	int exact;
	assert_int_equal(bt_search(&d.m->io, leaf, pg, k, kl, &idx, &exact), COFFER_OK);
	assert_true(exact);
	assert_true(idx + 1 < bt_ncells(pg));
	uint16_t a = (uint16_t)bt_slot(pg, idx), b = (uint16_t)bt_slot(pg, idx + 1);
	cf_put16(pg + BT_SLOTS + 2 * idx, b);
	cf_put16(pg + BT_SLOTS + 2 * (idx + 1), a);
	expect_damage(&d, leaf, 700);
	mem_pageio_close(d.m);
}

static void test_damage_branch_and_chain(void **state)
{
	uint32_t ps = ps_of(state);
	dtree d;
	dtree_build(&d, ps, 2000);
	/* the root's leftmost child points at a free page */
	uint8_t *root = raw_page(d.m, d.root);
	assert_int_equal(cf_page_type(root), CF_PT_BRANCH);
	cf_pgno freed = d.m->npages; /* just past the end */
	cf_pgno old = bt_leftmost(root);
	cf_put32(root + BT_LEFTMOST, freed);
	void *v = NULL;
	size_t vl;
	uint8_t k[32];
	size_t kl = dkey(k, 0);
	assert_int_equal(cf_bt_get(&d.m->io, d.root, k, kl, &v, &vl), COFFER_E_PAGE_CORRUPT);
	problems pr = {0};
	assert_int_equal(check_tree(d.m, d.root, NULL, &pr), COFFER_E_PAGE_CORRUPT);
	assert_int_equal(pr.first, d.root);
	/* ... or at another node already in the tree: met twice */
	cf_put32(root + BT_LEFTMOST, leaf_of(&d, 1999));
	memset(&pr, 0, sizeof pr);
	assert_int_equal(check_tree(d.m, d.root, NULL, &pr), COFFER_E_PAGE_CORRUPT);
	assert_true(pr.twice);
	cf_put32(root + BT_LEFTMOST, old);
	assert_clean(d.m, d.root, 2000);
	mem_pageio_close(d.m);

	/* an overflow chain with a damaged second page */
	mem_pageio *m = mem_open(ps);
	cf_pgno r;
	assert_int_equal(cf_bt_create(&m->io, &r), COFFER_OK);
	uint8_t *val = malloc(3 * ps);
	fill_pattern(val, 3 * ps, 1);
	put_ok(m, &r, "big", 3, val, 3 * ps);
	mem_pageio_commit(m);
	const uint8_t *leaf;
	void *pin;
	assert_int_equal(m->io.ops->read(&m->io, r, &leaf, &pin), COFFER_OK);
	bt_cell c;
	assert_int_equal(bt_cell_at(&m->io, r, leaf, 0, &c), COFFER_OK);
	m->io.ops->release(&m->io, pin);
	cf_pgno second = cf_get32(raw_page(m, c.ovfl) + BT_OVFL_NEXT);
	raw_page(m, second)[12] = CF_PT_LEAF;
	assert_int_equal(cf_bt_get(&m->io, r, "big", 3, &v, &vl), COFFER_E_PAGE_CORRUPT);
	assert_int_equal(coffer_error_last()->page, second);
	memset(&pr, 0, sizeof pr);
	assert_int_equal(check_tree(m, r, NULL, &pr), COFFER_E_PAGE_CORRUPT);
	assert_int_equal(pr.first, second);
	/* a cycle in the chain */
	raw_page(m, second)[12] = CF_PT_OVERFLOW;
	cf_put32(raw_page(m, second) + BT_OVFL_NEXT, c.ovfl);
	assert_int_equal(cf_bt_get(&m->io, r, "big", 3, &v, &vl), COFFER_E_PAGE_CORRUPT);
	memset(&pr, 0, sizeof pr);
	assert_int_equal(check_tree(m, r, NULL, &pr), COFFER_E_PAGE_CORRUPT);
	assert_int_equal(m->pins_out, 0);
	free(val);
	mem_pageio_close(m);
}

/* Random byte damage on random pages: every call returns, none crashes or
 * leaks a pin (run under AddressSanitizer). */
static void test_damage_fuzz(void **state)
{
	uint32_t ps = ps_of(state);
	rnd_seed(4242);
	unsigned rounds = ps == 65536 ? 60 : 200;
	for (unsigned round = 0; round < rounds; round++) {
		mem_pageio *m = mem_open(ps);
		cf_pgno root;
		assert_int_equal(cf_bt_create(&m->io, &root), COFFER_OK);
		uint8_t k[64], *v = malloc(2 * ps);
		fill_pattern(v, 2 * ps, round);
		unsigned n = 150 + (unsigned)rnd_below(300);
		for (unsigned i = 0; i < n; i++) {
			size_t kl = numkey(k, i % 3 ? "f" : "fuzz/", i * 7);
			put_ok(m, &root, k, kl, v, i % 29 == 0 ? ps + i : i % 50);
		}
		mem_pageio_commit(m);
		/* damage: a few random bytes in one page, header area favoured */
		cf_pgno victim = CF_PGNO_FIRST_FREE + (cf_pgno)rnd_below(m->npages - CF_PGNO_FIRST_FREE);
		uint8_t *pg = raw_page(m, victim);
		unsigned hits = 1 + (unsigned)rnd_below(4);
		for (unsigned h = 0; h < hits; h++) {
			uint32_t off = rnd_below(3) ? 24 + (uint32_t)rnd_below(64) : (uint32_t)rnd_below(ps);
			if (rnd_below(2))
				pg[off] ^= (uint8_t)(1u << rnd_below(8));
			else
				pg[off] = (uint8_t)rnd();
		}
		/* reads */
		for (unsigned i = 0; i < n; i += 5) {
			size_t kl = numkey(k, i % 3 ? "f" : "fuzz/", i * 7);
			void *g = NULL;
			size_t gl;
			(void)cf_bt_get(&m->io, root, k, kl, &g, &gl);
			free(g);
		}
		cf_bt_cursor *c;
		assert_int_equal(cf_bt_cursor_open(&m->io, root, &c), COFFER_OK);
		int rc;
		unsigned steps = 0;
		for (rc = cf_bt_cursor_first(c); rc == COFFER_OK && steps < 10 * n; rc = cf_bt_cursor_next(c)) {
			const void *val;
			size_t vl;
			(void)cf_bt_cursor_value(c, &val, &vl);
			steps++;
		}
		for (rc = cf_bt_cursor_last(c); rc == COFFER_OK && steps < 20 * n; rc = cf_bt_cursor_prev(c))
			steps++;
		(void)cf_bt_cursor_seek(c, "fuzz/", 5);
		cf_bt_cursor_close(c);
		uint64_t cnt;
		(void)cf_bt_count(&m->io, root, &cnt);
		problems pr = {0};
		(void)check_tree(m, root, NULL, &pr);
		assert_int_equal(m->pins_out, 0);
		/* writes: they may fail, they must not crash */
		for (unsigned i = 0; i < n; i += 3) {
			size_t kl = numkey(k, i % 3 ? "f" : "fuzz/", i * 7);
			if (i % 2)
				(void)cf_bt_del(&m->io, &root, k, kl);
			else
				(void)cf_bt_put(&m->io, &root, k, kl, v, i % 7 == 0 ? ps : 3, 0);
			assert_int_equal(m->pins_out, 0);
		}
		(void)check_tree(m, root, NULL, &pr);
		(void)cf_bt_drop(&m->io, root);
		assert_int_equal(m->pins_out, 0);
		free(v);
		mem_pageio_close(m);
	}
}

/* Failures from the pageio come back unchanged (disk full mid-split). */
static void test_pageio_failure(void **state)
{
	uint32_t ps = ps_of(state);
	mem_pageio *m = mem_open(ps);
	cf_pgno root;
	assert_int_equal(cf_bt_create(&m->io, &root), COFFER_OK);
	uint8_t k[32];
	int rc = COFFER_OK;
	m->fail_alloc_in = 3;
	for (unsigned i = 0; i < 100000 && rc == COFFER_OK; i++) {
		size_t kl = numkey(k, "k", i);
		rc = cf_bt_put(&m->io, &root, k, kl, "value", 5, 0);
	}
	assert_int_equal(rc, COFFER_E_DISK_FULL);
	assert_int_equal(m->pins_out, 0);
	m->read_only = 1;
	assert_int_equal(cf_bt_put(&m->io, &root, "zz", 2, "v", 1, 0), COFFER_E_READ_ONLY);
	assert_int_equal(m->pins_out, 0);
	mem_pageio_close(m);
}

#define PS_TESTS(f)                                          \
	cmocka_unit_test_prestate(f, &PS4K), cmocka_unit_test_prestate(f, &PS8K), \
		cmocka_unit_test_prestate(f, &PS64K)

int main(void)
{
	const struct CMUnitTest tests[] = {
		PS_TESTS(test_empty_tree),
		PS_TESTS(test_key_and_value_limits),
		PS_TESTS(test_inline_overflow_boundary),
		PS_TESTS(test_large_value_streaming),
		PS_TESTS(test_nooverwrite_and_replace),
		PS_TESTS(test_order_seek_prefix),
		PS_TESTS(test_sequential_fill),
		PS_TESTS(test_fill_empty_refill),
		PS_TESTS(test_several_trees_and_drop),
		PS_TESTS(test_random_ops),
		PS_TESTS(test_random_long_keys),
		PS_TESTS(test_random_small_keys_deep),
		cmocka_unit_test(test_redistribution_splits_parent),
		PS_TESTS(test_damage_bad_count),
		PS_TESTS(test_damage_offset_out_of_range),
		PS_TESTS(test_damage_keys_out_of_order),
		PS_TESTS(test_damage_branch_and_chain),
		PS_TESTS(test_damage_fuzz),
		PS_TESTS(test_pageio_failure),
	};
	return cmocka_run_group_tests_name("btree", tests, NULL, NULL);
}
