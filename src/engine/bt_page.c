/*
 * bt_page.c - the B+tree node format: parsing, checking, in-page changes.
 *
 * NODE PAGES (CF_PT_LEAF, CF_PT_BRANCH). All integers little-endian.
 *
 *   off  size  field
 *     0    24  common page header (page.h): checksum, pgno, type, flags=0,
 *              reserved, lsn
 *    24     2  ncells    number of cells
 *    26     2  content   offset of the first byte of the cell area; the
 *                        area runs to the end of the page. 0 means 65536
 *                        (an empty 64 KiB page).
 *    28     2  garbage   bytes of holes inside the cell area (left by removed
 *                        or replaced cells; reclaimed by defragmenting)
 *    30     2  reserved  zero
 *    32     4  leftmost  branch: the leftmost child; leaf: zero
 *    36  2*ncells slots  u16 offset of each cell, in key order
 *   ...          free space (the gap)
 *   content..page_size   cells, in any order, with holes (garbage)
 *
 *   Invariants checked on every read (bt_node_check, O(1)):
 *     36 + 2*ncells <= content <= page_size, garbage <= page_size - content,
 *     an empty node has content == page_size and garbage == 0,
 *     leftmost == 0 in leaves, leftmost >= 3 and != pgno in branches.
 *   Every cell is checked when it is used (bt_cell_at): its offset lies in
 *   [content, page_size) and all of it inside the page. bt_check() checks
 *   the rest: no overlaps, cell bytes + garbage == page_size - content,
 *   key order.
 *   Free space = (content - (36 + 2*ncells)) + garbage; a new cell goes into
 *   the gap, after defragmenting when the gap alone is too small.
 *
 * LEAF CELL
 *     varint   (klen << 1) | O   key length 1..1024; O = 1: value in overflow
 *     varint   vlen              value length, 0..2^32-1
 *     klen     key
 *     O = 0:   vlen bytes of value
 *     O = 1:   u32 first overflow page (the chain holds all vlen bytes)
 *   Varints are LEB128: 7 bits a byte, low group first, high bit "more";
 *   at most 5 bytes.
 *   A value stays inline when the whole cell fits in max_local =
 *   (page_size - 36) / 4 - 2 bytes (a quarter of the node, slot included),
 *   or when it is at most 4 bytes (no larger than the overflow form).
 *   Otherwise it goes to overflow pages and the cell keeps no part of it.
 *   max_local is 1013 bytes at 4 KiB, 2037 at 8 KiB, 16373 at 64 KiB.
 *
 * BRANCH CELL
 *     u32      child             page holding keys >= key (and < next key)
 *     varint   klen              1..1024
 *     klen     key               a separator
 *   A branch with cells (k1,c1)..(kn,cn) and leftmost c0 sends key K to
 *   c0 if K < k1, else to ci for the largest ki <= K. Separators made by a
 *   leaf split are the shortest prefix of the right page's first key that is
 *   greater than the left page's last key (suffix truncation), so
 *   left keys < separator <= right keys.
 *
 * OVERFLOW PAGE (CF_PT_OVERFLOW)
 *     0    24  common page header
 *    24     4  next      next page of the chain, 0 on the last page
 *    28   ...  data      page_size - 28 bytes (the last page: the rest)
 *   A value of vlen bytes takes ceil(vlen / (page_size - 28)) pages.
 *
 * SIZES. The largest cell is a leaf cell with a 1024-byte key and an
 * overflow value: 2 + 5 + 1024 + 4 = 1035 bytes, 1037 with its slot (a
 * branch cell is at most 4 + 2 + 1024 = 1030). Usable node space is
 * page_size - 36: 4060 at 4 KiB (three largest cells fit), 8156 at 8 KiB
 * (seven). A split needs any node's cells plus one more to divide into two
 * pages that fit, which holds when a cell is at most half the usable space;
 * merges and redistribution only move cells between pages that fit.
 *
 * BALANCE. Split: a node that cannot take a new cell is split into two at
 * the byte midpoint, except that inserting after its last cell (or before
 * its first) leaves the old cells together and the new cell alone in the
 * other page (a branch gives up one more old cell as the separator), so
 * sequential loads leave full pages. The left part keeps the page number,
 * the right part goes to a new page. A root split moves
 * the root's cells into two new pages so the root keeps its page number.
 * Delete: a non-root node left under a quarter of the usable space is
 * merged with a sibling when both fit in one page, else cells are moved
 * from the sibling to even them out; a root branch left with no cells takes
 * in its only child. Non-root nodes therefore always hold at least one cell.
 */
#include <stdio.h>
#include <stdlib.h>

#define CF_BT_INTERNAL
#include "engine/btree.h"

int bt_corrupt_at(const char *func, int line, cf_pageio *io, cf_pgno pgno, const char *fmt, ...)
{
	char what[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	const char *file = io->file ? io->file : "?";
	return cf_error_set(func, line, COFFER_E_PAGE_CORRUPT, CF_OBJ(.file = io->file, CF_PAGE(pgno)),
			    "B+tree page %u of \"%s\" is damaged: %s", pgno, file, what);
}

uint64_t cf_bt_max_inline_value(uint32_t page_size, size_t klen)
{
	if (klen == 0 || klen > CF_BT_MAX_KEY)
		return 0;
	uint32_t room = bt_max_local(page_size);
	unsigned h1 = bt_varint_len((uint64_t)klen << 1);
	/* the largest v with h1 + len(v) + klen + v <= room (at least 4) */
	uint64_t best = 4;
	for (unsigned vl = 1; vl <= 5; vl++) {
		if (h1 + vl + klen > room)
			break;
		uint64_t v = room - h1 - vl - klen;
		if (bt_varint_len(v) == vl && v > best)
			best = v;
		else if (bt_varint_len(v) > vl) {
			/* the largest v that still has a vl-byte varint */
			uint64_t m = (UINT64_C(1) << (7 * vl)) - 1;
			if (m < v && m > best)
				best = m;
		}
	}
	return best;
}

int bt_node_check(cf_pageio *io, cf_pgno pgno, const uint8_t *pg)
{
	uint32_t ps = io->page_size;
	uint8_t type = cf_page_type(pg);
	if (type != CF_PT_LEAF && type != CF_PT_BRANCH)
		return BT_CORRUPT(io, pgno, "page type %u where a B+tree node was expected", type);
	if (cf_page_pgno(pg) != pgno)
		return BT_CORRUPT(io, pgno, "it carries page number %u", cf_page_pgno(pg));
	unsigned n = bt_ncells(pg);
	uint32_t content = bt_content(pg);
	if (BT_SLOTS + 2 * n > content || content > ps)
		return BT_CORRUPT(io, pgno, "%u cells with the cell area at offset %u do not fit in %u bytes",
				  n, content, ps);
	if (bt_garbage(pg) > ps - content)
		return BT_CORRUPT(io, pgno, "%u bytes of holes in a cell area of %u bytes", bt_garbage(pg),
				  ps - content);
	if (n == 0 && (content != ps || bt_garbage(pg) != 0))
		return BT_CORRUPT(io, pgno, "an empty node with a cell area at offset %u", content);
	if (cf_get16(pg + BT_RESERVED) != 0)
		return BT_CORRUPT(io, pgno, "reserved node header field is %u, not 0",
				  cf_get16(pg + BT_RESERVED));
	cf_pgno lm = bt_leftmost(pg);
	if (type == CF_PT_LEAF && lm != 0)
		return BT_CORRUPT(io, pgno, "a leaf with a leftmost child %u", lm);
	if (type == CF_PT_BRANCH && (lm < CF_PGNO_FIRST_FREE || lm == pgno))
		return BT_CORRUPT(io, pgno, "leftmost child page number %u is not valid", lm);
	return COFFER_OK;
}

int bt_read_node(cf_pageio *io, cf_pgno pgno, const uint8_t **pg, void **pin)
{
	CF_RET(io->ops->read(io, pgno, pg, pin));
	int rc = bt_node_check(io, pgno, *pg);
	if (rc) {
		io->ops->release(io, *pin);
		*pg = NULL;
		*pin = NULL;
	}
	return rc;
}

int bt_write_node(cf_pageio *io, cf_pgno pgno, uint8_t **pg)
{
	CF_RET(io->ops->write(io, pgno, pg));
	return bt_node_check(io, pgno, *pg);
}

static int cell_offset(cf_pageio *io, cf_pgno pgno, const uint8_t *pg, unsigned i, uint32_t *off)
{
	uint32_t o = bt_slot(pg, i);
	if (o < bt_content(pg) || o >= io->page_size)
		return BT_CORRUPT(io, pgno, "cell %u at offset %u lies outside the cell area [%u, %u)", i, o,
				  bt_content(pg), io->page_size);
	*off = o;
	return COFFER_OK;
}

int bt_cell_at(cf_pageio *io, cf_pgno pgno, const uint8_t *pg, unsigned i, bt_cell *c)
{
	uint32_t ps = io->page_size, off;
	CF_RET(cell_offset(io, pgno, pg, i, &off));
	const uint8_t *end = pg + ps;
	uint64_t pos = off, v;
	unsigned l;
	memset(c, 0, sizeof *c);
	if (bt_is_leaf(pg)) {
		if (!(l = bt_varint_get(pg + pos, end, &v)))
			goto bad_header;
		pos += l;
		c->klen = (uint32_t)(v >> 1);
		int ovfl = (int)(v & 1);
		if (v >> 1 == 0 || v >> 1 > CF_BT_MAX_KEY)
			return BT_CORRUPT(io, pgno, "cell %u has a key of %llu bytes", i,
					  (unsigned long long)(v >> 1));
		if (!(l = bt_varint_get(pg + pos, end, &c->vlen)))
			goto bad_header;
		pos += l;
		if (c->vlen > CF_BT_MAX_VALUE)
			return BT_CORRUPT(io, pgno, "cell %u has a value of %llu bytes", i,
					  (unsigned long long)c->vlen);
		c->key = pg + pos;
		pos += c->klen;
		if (ovfl) {
			if (pos + 4 > ps)
				goto too_long;
			c->ovfl = cf_get32(pg + pos);
			pos += 4;
			if (c->ovfl < CF_PGNO_FIRST_FREE || c->vlen == 0)
				return BT_CORRUPT(io, pgno,
						  "cell %u has overflow page %u for a value of %llu bytes", i,
						  c->ovfl, (unsigned long long)c->vlen);
		} else {
			c->val = pg + pos;
			pos += c->vlen;
		}
	} else {
		if (pos + 4 > ps)
			goto too_long;
		c->child = cf_get32(pg + pos);
		pos += 4;
		if (!(l = bt_varint_get(pg + pos, end, &v)))
			goto bad_header;
		pos += l;
		if (v == 0 || v > CF_BT_MAX_KEY)
			return BT_CORRUPT(io, pgno, "cell %u has a key of %llu bytes", i, (unsigned long long)v);
		c->klen = (uint32_t)v;
		c->key = pg + pos;
		pos += v;
		if (c->child < CF_PGNO_FIRST_FREE || c->child == pgno)
			return BT_CORRUPT(io, pgno, "cell %u points to child page %u", i, c->child);
	}
	if (pos > ps)
		goto too_long;
	c->size = (uint32_t)(pos - off);
	return COFFER_OK;
bad_header:
	return BT_CORRUPT(io, pgno, "cell %u at offset %u has a malformed length", i, off);
too_long:
	return BT_CORRUPT(io, pgno, "cell %u at offset %u runs past the end of the page", i, off);
}

int bt_key_at(cf_pageio *io, cf_pgno pgno, const uint8_t *pg, unsigned i, const uint8_t **key,
	      uint32_t *klen)
{
	uint32_t ps = io->page_size, off;
	CF_RET(cell_offset(io, pgno, pg, i, &off));
	const uint8_t *end = pg + ps;
	uint64_t pos = off, v, vlen;
	unsigned l;
	if (bt_is_leaf(pg)) {
		if (!(l = bt_varint_get(pg + pos, end, &v)))
			goto bad_header;
		pos += l;
		v >>= 1;
		if (!(l = bt_varint_get(pg + pos, end, &vlen)))
			goto bad_header;
		pos += l;
	} else {
		pos += 4;
		if (pos >= ps || !(l = bt_varint_get(pg + pos, end, &v)))
			goto bad_header;
		pos += l;
	}
	if (v == 0 || v > CF_BT_MAX_KEY)
		return BT_CORRUPT(io, pgno, "cell %u has a key of %llu bytes", i, (unsigned long long)v);
	if (pos + v > ps)
		return BT_CORRUPT(io, pgno, "cell %u at offset %u runs past the end of the page", i, off);
	*key = pg + pos;
	*klen = (uint32_t)v;
	return COFFER_OK;
bad_header:
	return BT_CORRUPT(io, pgno, "cell %u at offset %u has a malformed length", i, off);
}

int bt_child_at(cf_pageio *io, cf_pgno pgno, const uint8_t *pg, unsigned idx, cf_pgno *child)
{
	if (idx == 0) {
		*child = bt_leftmost(pg); /* checked by bt_node_check */
		return COFFER_OK;
	}
	uint32_t off;
	CF_RET(cell_offset(io, pgno, pg, idx - 1, &off));
	if (off + 4 > io->page_size)
		return BT_CORRUPT(io, pgno, "cell %u at offset %u runs past the end of the page", idx - 1, off);
	cf_pgno ch = cf_get32(pg + off);
	if (ch < CF_PGNO_FIRST_FREE || ch == pgno)
		return BT_CORRUPT(io, pgno, "cell %u points to child page %u", idx - 1, ch);
	*child = ch;
	return COFFER_OK;
}

/* Leaf: *idx = first cell with key >= key, *exact if equal.
 * Branch: *idx = child index to follow (number of separators <= key). */
int bt_search(cf_pageio *io, cf_pgno pgno, const uint8_t *pg, const uint8_t *key, size_t klen,
	      unsigned *idx, int *exact)
{
	unsigned lo = 0, hi = bt_ncells(pg);
	int leaf = bt_is_leaf(pg);
	*exact = 0;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		const uint8_t *k;
		uint32_t kl;
		CF_RET(bt_key_at(io, pgno, pg, mid, &k, &kl));
		int r = bt_cmp(k, kl, key, klen);
		if (r < 0) {
			lo = mid + 1;
		} else if (r > 0) {
			hi = mid;
		} else {
			*exact = 1;
			*idx = leaf ? mid : mid + 1;
			return COFFER_OK;
		}
	}
	*idx = lo;
	return COFFER_OK;
}

/* Cheap order check around a search result in a leaf: the keys at idx - 1,
 * idx and idx + 1 must ascend. Catches most damage a binary search would
 * otherwise walk past silently. */
int bt_leaf_order_near(cf_pageio *io, cf_pgno pgno, const uint8_t *pg, unsigned idx)
{
	unsigned n = bt_ncells(pg);
	unsigned lo = idx > 0 ? idx - 1 : 0;
	unsigned hi = idx + 1 < n ? idx + 1 : (n ? n - 1 : 0);
	const uint8_t *pk = NULL, *k;
	uint32_t pkl = 0, kl;
	for (unsigned i = lo; i <= hi && i < n; i++) {
		CF_RET(bt_key_at(io, pgno, pg, i, &k, &kl));
		if (pk && bt_cmp(pk, pkl, k, kl) >= 0)
			return BT_CORRUPT(io, pgno, "the keys of cells %u and %u are out of order", i - 1, i);
		pk = k;
		pkl = kl;
	}
	return COFFER_OK;
}

/* Key of a raw cell from a validated page (bt_node_cells). */
int bt_raw_key(const uint8_t *cell, uint32_t len, int leaf, const uint8_t **key, uint32_t *klen)
{
	const uint8_t *p = cell, *end = cell + len;
	uint64_t v, vlen;
	unsigned l;
	if (leaf) {
		if (!(l = bt_varint_get(p, end, &v)))
			return COFFER_E_INTERNAL;
		p += l;
		v >>= 1;
		if (!(l = bt_varint_get(p, end, &vlen)))
			return COFFER_E_INTERNAL;
		p += l;
	} else {
		if (len < 5)
			return COFFER_E_INTERNAL;
		p += 4;
		if (!(l = bt_varint_get(p, end, &v)))
			return COFFER_E_INTERNAL;
		p += l;
	}
	if (v > (uint64_t)(end - p))
		return COFFER_E_INTERNAL;
	*key = p;
	*klen = (uint32_t)v;
	return COFFER_OK;
}

void bt_src_leaf(bt_src *s, uint32_t ps, const uint8_t *key, uint32_t klen, const uint8_t *val,
		 uint64_t vlen, cf_pgno ovfl)
{
	(void)ps;
	s->hlen = bt_varint_put(s->hdr, ((uint64_t)klen << 1) | (ovfl ? 1 : 0));
	s->hlen += bt_varint_put(s->hdr + s->hlen, vlen);
	s->key = key;
	s->klen = klen;
	if (ovfl) {
		cf_put32(s->tbuf, ovfl);
		s->tail = NULL; /* use tbuf */
		s->tlen = 4;
	} else {
		s->tail = val;
		s->tlen = (uint32_t)vlen;
	}
}

void bt_src_branch(bt_src *s, cf_pgno child, const uint8_t *key, uint32_t klen)
{
	cf_put32(s->hdr, child);
	s->hlen = 4 + bt_varint_put(s->hdr + 4, klen);
	s->key = key;
	s->klen = klen;
	s->tail = NULL;
	s->tlen = 0;
}

void bt_src_write(uint8_t *dst, const bt_src *s)
{
	memcpy(dst, s->hdr, s->hlen);
	memcpy(dst + s->hlen, s->key, s->klen);
	if (s->tlen)
		memcpy(dst + s->hlen + s->klen, s->tail ? s->tail : s->tbuf, s->tlen);
}

static void set_content(uint8_t *pg, uint32_t content)
{
	cf_put16(pg + BT_CONTENT, (uint16_t)(content & 0xffff)); /* 65536 -> 0 */
}

void bt_node_init(uint8_t *pg, uint32_t ps, uint8_t type, cf_pgno leftmost)
{
	pg[12] = type;
	pg[13] = 0;
	cf_put16(pg + BT_NCELLS, 0);
	set_content(pg, ps);
	cf_put16(pg + BT_GARBAGE, 0);
	cf_put16(pg + BT_RESERVED, 0);
	cf_put32(pg + BT_LEFTMOST, leftmost);
}

int bt_node_defrag(cf_pageio *io, cf_pgno pgno, uint8_t *pg)
{
	uint32_t ps = io->page_size;
	unsigned n = bt_ncells(pg);
	uint8_t *tmp = malloc(ps);
	if (!tmp)
		return CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = io->file, CF_PAGE(pgno)),
				"no memory to defragment B+tree page %u", pgno);
	memcpy(tmp, pg, ps);
	uint32_t content = ps, slot_end = BT_SLOTS + 2 * n;
	int rc = COFFER_OK;
	for (unsigned i = 0; i < n; i++) {
		bt_cell c;
		CF_GO(rc, bt_cell_at(io, pgno, tmp, i, &c));
		if (c.size > content - slot_end) {
			rc = BT_CORRUPT(io, pgno, "its cells add up to more than the page");
			goto err;
		}
		content -= c.size;
		memcpy(pg + content, tmp + bt_slot(tmp, i), c.size);
		cf_put16(pg + BT_SLOTS + 2 * i, (uint16_t)content);
	}
	memset(pg + slot_end, 0, content - slot_end);
	set_content(pg, content);
	cf_put16(pg + BT_GARBAGE, 0);
err:
	free(tmp);
	return rc;
}

int bt_node_insert(cf_pageio *io, cf_pgno pgno, uint8_t *pg, unsigned idx, const bt_src *s)
{
	uint32_t size = bt_src_size(s);
	unsigned n = bt_ncells(pg);
	if (idx > n || bt_free(pg) < size + 2)
		return CF_ERROR(COFFER_E_INTERNAL, CF_OBJ(.file = io->file, CF_PAGE(pgno)),
				"B+tree insert of a %u-byte cell at %u into page %u with %u cells and %u free bytes",
				size, idx, pgno, n, bt_free(pg));
	uint32_t slot_end = BT_SLOTS + 2 * n;
	if (bt_content(pg) - slot_end < size + 2) {
		CF_RET(bt_node_defrag(io, pgno, pg));
		if (bt_content(pg) - slot_end < size + 2)
			return BT_CORRUPT(io, pgno, "its count of free bytes is wrong");
	}
	uint32_t content = bt_content(pg) - size;
	bt_src_write(pg + content, s);
	uint8_t *sl = pg + BT_SLOTS + 2 * idx;
	memmove(sl + 2, sl, 2 * (n - idx));
	cf_put16(sl, (uint16_t)content);
	set_content(pg, content);
	cf_put16(pg + BT_NCELLS, (uint16_t)(n + 1));
	return COFFER_OK;
}

int bt_node_remove(cf_pageio *io, cf_pgno pgno, uint8_t *pg, unsigned idx)
{
	uint32_t ps = io->page_size;
	unsigned n = bt_ncells(pg);
	if (idx >= n)
		return CF_ERROR(COFFER_E_INTERNAL, CF_OBJ(.file = io->file, CF_PAGE(pgno)),
				"B+tree remove of cell %u from page %u with %u cells", idx, pgno, n);
	bt_cell c;
	CF_RET(bt_cell_at(io, pgno, pg, idx, &c));
	uint32_t off = bt_slot(pg, idx), content = bt_content(pg);
	if (off == content) {
		set_content(pg, content + c.size);
	} else {
		uint32_t g = bt_garbage(pg) + c.size;
		if (g > ps - content)
			return BT_CORRUPT(io, pgno, "its count of hole bytes is wrong");
		cf_put16(pg + BT_GARBAGE, (uint16_t)g);
	}
	uint8_t *sl = pg + BT_SLOTS + 2 * idx;
	memmove(sl, sl + 2, 2 * (n - idx - 1));
	cf_put16(pg + BT_NCELLS, (uint16_t)(n - 1));
	if (n == 1) {
		set_content(pg, ps);
		cf_put16(pg + BT_GARBAGE, 0);
	}
	return COFFER_OK;
}

int bt_node_cells(cf_pageio *io, cf_pgno pgno, const uint8_t *pg, bt_ref *out)
{
	unsigned n = bt_ncells(pg);
	for (unsigned i = 0; i < n; i++) {
		bt_cell c;
		CF_RET(bt_cell_at(io, pgno, pg, i, &c));
		out[i].p = pg + bt_slot(pg, i);
		out[i].len = c.size;
	}
	return COFFER_OK;
}

int bt_node_build(cf_pageio *io, cf_pgno pgno, uint8_t *pg, uint8_t type, cf_pgno leftmost,
		  const bt_ref *cells, unsigned n)
{
	uint32_t ps = io->page_size;
	uint32_t slot_end = BT_SLOTS + 2 * n, content = ps;
	bt_node_init(pg, ps, type, leftmost);
	for (unsigned i = 0; i < n; i++) {
		if (slot_end > content || cells[i].len > content - slot_end)
			return CF_ERROR(COFFER_E_INTERNAL, CF_OBJ(.file = io->file, CF_PAGE(pgno)),
					"B+tree page %u cannot hold the %u cells given to it", pgno, n);
		content -= cells[i].len;
		memcpy(pg + content, cells[i].p, cells[i].len);
		cf_put16(pg + BT_SLOTS + 2 * i, (uint16_t)content);
	}
	if (slot_end > content)
		return CF_ERROR(COFFER_E_INTERNAL, CF_OBJ(.file = io->file, CF_PAGE(pgno)),
				"B+tree page %u cannot hold the %u cells given to it", pgno, n);
	memset(pg + slot_end, 0, content - slot_end);
	set_content(pg, content);
	cf_put16(pg + BT_NCELLS, (uint16_t)n);
	return COFFER_OK;
}
