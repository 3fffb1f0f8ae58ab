/*
 * fuzz_page.c - libFuzzer target: pages from the database file.
 *
 *  - cf_page_verify on every page, cf_header_decode on pages 0 and 1;
 *  - the B+tree (src/engine/bt_*.c) over the pages through the in-memory
 *    cf_pageio of the unit tests (tests/unit/mem_pageio.c): cf_bt_check,
 *    cf_bt_count, cursors both ways with values (overflow chains read
 *    whole and streamed), seek, get, and optionally put and delete;
 *  - the offline check (coffer_check, src/engine/check.c: both header
 *    copies read from a file, every page's checksum, meta page, catalog,
 *    every tree, free list) over the pages written as DIR/coffer.db.
 * Pages reach the tree only after the pager has verified their checksum
 * and page number, so with flag bit 3 the harness seals every page (its
 * number and checksum) as a writer would; without it the damaged-page paths
 * of the check are exercised instead.
 *
 * Input:
 *   byte 0   flags
 *     bits 0-2  page size 4096 << (n % 5)
 *     bit 3     seal every page (page number and checksum)
 *     bit 4     also change the tree: put, delete, cursor delete, check again
 *     bit 5     skip the offline check (coffer_check) - it is the slow part
 *   byte 1   tree root for the in-memory walk: 3 + n % (pages - 3), or the
 *            catalog root named by the meta page when n == 255
 *   byte 2   key length K (at most 255), then K bytes: the key for seek,
 *            get, put and delete
 *   then pages 0, 1, 2, ...: u16 head length H, u16 tail length T, H bytes
 *   placed at the start of the page, T bytes at its end, zeroes between
 *   (real pages have their free space in the middle). At most 64 pages and
 *   1 MiB; fewer than 4 are padded with zero pages.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <coffer/coffer.h>

#include "engine/btree.h"
#include "engine/env.h"
#include "engine/header.h"
#include "fuzz_util.h"
#include "mem_pageio.h"

#define MAX_PAGES 64u
#define MAX_BYTES (1u << 20)
#define MAX_STEPS 4096

static void on_problem(void *arg, cf_pgno pgno, const char *what)
{
	(void)arg;
	(void)pgno;
	(void)strlen(what);
}

static void on_check_problem(void *arg, int64_t page, const char *what)
{
	(void)arg;
	fz_debug("check: page %lld: %s", (long long)page, what);
}

/* Touch the current item of a cursor: key, value whole, value streamed. */
static void touch_item(cf_bt_cursor *c, uint8_t *buf, size_t cap)
{
	const void *k, *v;
	size_t kl, vl, got;
	uint64_t vsize;
	volatile uint8_t sink = 0;
	if (cf_bt_cursor_key(c, &k, &kl) == COFFER_OK && kl)
		sink ^= ((const uint8_t *)k)[0] ^ ((const uint8_t *)k)[kl - 1];
	if (cf_bt_cursor_value_size(c, &vsize) == COFFER_OK && vsize > 0) {
		if (cf_bt_cursor_value_read(c, vsize / 2, buf, cap, &got) == COFFER_OK && got)
			sink ^= buf[got - 1];
	}
	/* Whole values only when small: a damaged length may claim 4 GiB. */
	if (cf_bt_cursor_value_size(c, &vsize) == COFFER_OK && vsize <= MAX_BYTES &&
	    cf_bt_cursor_value(c, &v, &vl) == COFFER_OK && vl)
		sink ^= ((const uint8_t *)v)[0] ^ ((const uint8_t *)v)[vl - 1];
	(void)sink;
}

static void walk(cf_pageio *io, cf_pgno root, const uint8_t *key, size_t klen, uint8_t *buf,
		 size_t cap)
{
	cf_bt_cursor *c;
	uint64_t n;
	void *val;
	size_t vlen;
	(void)cf_bt_count(io, root, &n);
	if (cf_bt_cursor_open(io, root, &c) == COFFER_OK) {
		int i = 0;
		for (int r = cf_bt_cursor_first(c); r == COFFER_OK && i < MAX_STEPS;
		     r = cf_bt_cursor_next(c), i++)
			touch_item(c, buf, cap);
		i = 0;
		for (int r = cf_bt_cursor_last(c); r == COFFER_OK && i < MAX_STEPS;
		     r = cf_bt_cursor_prev(c), i++)
			touch_item(c, buf, cap);
		if (cf_bt_cursor_seek(c, key, klen) == COFFER_OK) {
			touch_item(c, buf, cap);
			if (cf_bt_cursor_prev(c) == COFFER_OK)
				touch_item(c, buf, cap);
		}
		cf_bt_cursor_close(c);
	}
	if (klen && cf_bt_get(io, root, key, klen, &val, &vlen) == COFFER_OK)
		free(val);
}

static void change(cf_pageio *io, cf_pgno root, const uint8_t *key, size_t klen, uint8_t *buf,
		   size_t cap)
{
	cf_bt_cursor *c;
	static uint8_t big[3 * 4096];
	memset(big, 'v', sizeof big);
	if (klen) {
		(void)cf_bt_put(io, &root, key, klen, key, klen, 0);
		(void)cf_bt_put(io, &root, key, klen, big, sizeof big, 0); /* overflow value */
		(void)cf_bt_del(io, &root, key, klen);
	}
	if (cf_bt_cursor_open(io, root, &c) == COFFER_OK) {
		if (cf_bt_cursor_seek(c, key, klen) == COFFER_OK && cf_bt_cursor_del(c) == COFFER_OK)
			touch_item(c, buf, cap);
		cf_bt_cursor_close(c);
	}
	(void)cf_bt_put(io, &root, "\x01", 1, "", 0, CF_BT_NOOVERWRITE);
}

static void offline_check(const uint8_t *file, size_t n)
{
	static char dir[PATH_MAX], db[PATH_MAX];
	if (dir[0] == '\0') {
		fz_path(dir, fz_tmpdir(), "store");
		fz_mkdir(dir);
		fz_path(db, dir, "coffer.db");
	}
	fz_write_file(db, file, n);
	struct coffer_check_result res;
	int rc = coffer_check(dir, on_check_problem, NULL, &res);
	fz_debug("coffer_check: %s: %llu pages, %llu trees, %llu keys, %llu problems",
		 rc ? coffer_error_last()->message : "ok", (unsigned long long)res.pages,
		 (unsigned long long)res.trees, (unsigned long long)res.keys,
		 (unsigned long long)res.problems);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *file, *buf;
	if (file == NULL) {
		file = malloc(MAX_BYTES);
		buf = malloc(CF_PAGE_SIZE_MAX);
		if (file == NULL || buf == NULL)
			fz_die("no memory");
	}
	struct fz_in in = {data, size};
	unsigned flags = fz_u8(&in);
	unsigned rootsel = fz_u8(&in);
	size_t klen;
	const uint8_t *key = fz_take(&in, fz_u8(&in), &klen);
	uint32_t ps = 4096u << ((flags & 7) % 5);
	cf_pgno npages = 0;

	while (in.n > 0 && npages < MAX_PAGES && (size_t)(npages + 1) * ps <= MAX_BYTES) {
		uint8_t *pg = file + (size_t)npages * ps;
		size_t hl, tl;
		size_t hwant = fz_u16(&in), twant = fz_u16(&in);
		const uint8_t *head = fz_take(&in, hwant < ps ? hwant : ps, &hl);
		const uint8_t *tail = fz_take(&in, twant < ps - hl ? twant : ps - hl, &tl);
		memset(pg, 0, ps);
		memcpy(pg, head, hl);
		memcpy(pg + ps - tl, tail, tl);
		npages++;
	}
	while (npages < CF_PGNO_FIRST_FREE + 1) {
		memset(file + (size_t)npages * ps, 0, ps);
		npages++;
	}
	for (cf_pgno p = 0; p < npages; p++) {
		uint8_t *pg = file + (size_t)p * ps;
		if (flags & 8) {
			cf_put32(pg + 8, p);
			cf_page_seal(pg, ps);
		}
		(void)cf_page_verify(pg, ps, p);
	}
	struct cf_header h;
	(void)cf_header_decode(file, ps, CF_PGNO_HEADER_A, "fuzz.db", &h);
	(void)cf_header_decode(file + ps, ps, CF_PGNO_HEADER_B, "fuzz.db", &h);

	/* The tree over the in-memory pages 3.. (pages 0-2 stay reserved). */
	mem_pageio *m = mem_pageio_open(ps);
	if (m == NULL)
		fz_die("no memory");
	for (cf_pgno p = CF_PGNO_FIRST_FREE; p < npages; p++) {
		cf_pgno got;
		uint8_t *pg;
		if (m->io.ops->alloc(&m->io, &got, &pg) != COFFER_OK || got != p)
			fz_die("mem_pageio alloc");
	}
	mem_pageio_commit(m);
	for (cf_pgno p = CF_PGNO_FIRST_FREE; p < npages; p++)
		memcpy(mem_pageio_page(m, p), file + (size_t)p * ps, ps);
	cf_pgno root = rootsel == 255 ? cf_get32(file + 2 * (size_t)ps + CF_META_CATALOG)
				      : CF_PGNO_FIRST_FREE + rootsel % (npages - CF_PGNO_FIRST_FREE);
	uint8_t *owned = calloc((size_t)npages / 8 + 1, 1);
	uint64_t nkeys;
	int rc = cf_bt_check(&m->io, root, owned, npages, on_problem, NULL, &nkeys);
	fz_debug("%u pages of %u bytes, root %u: cf_bt_check %s, %llu keys", npages, ps, root,
		 rc ? coffer_error_last()->message : "ok", (unsigned long long)nkeys);
	walk(&m->io, root, key, klen, buf, ps);
	if (flags & 16) {
		change(&m->io, root, key, klen, buf, ps);
		walk(&m->io, root, key, klen, buf, ps);
		memset(owned, 0, (size_t)npages / 8 + 1);
		(void)cf_bt_check(&m->io, root, owned, npages, on_problem, NULL, &nkeys);
	}
	if (m->pins_out != 0)
		fz_die("the B+tree left %llu page(s) pinned (a missing release)",
		       (unsigned long long)m->pins_out);
	free(owned);
	mem_pageio_close(m);

	if (!(flags & 32))
		offline_check(file, (size_t)npages * ps);
	coffer_error_clear();
	return 0;
}
