/*
 * bt_tree.c - search, insert, delete, split, merge, drop and count.
 *
 * Every operation first walks from the root to a leaf with read() only,
 * recording the path (page and index at each level, bt_path) and keeping
 * at most two pages pinned. Only the pages that change are then obtained
 * with write(), bottom-up, so an insert that fits touches one page.
 *
 * Insert (bt_insert): put the cell into its leaf; when it does not fit,
 * split the node (bt_split) and insert the separator into the parent, up
 * the path; a root split moves the root's cells into two new pages so the
 * root keeps its number.
 *
 * Delete (bt_rebalance): a non-root node under a quarter of the usable
 * space is merged with its left sibling (its right one if it is the
 * leftmost child) when both fit in one page, the parent losing their
 * separator and being rebalanced in turn; otherwise cells move from the
 * sibling to even the two out and the separator in the parent is replaced
 * (which may split the parent). A root branch left with no cells takes in
 * its only child.
 */
#include <stdlib.h>

#define CF_BT_INTERNAL
#include "engine/btree.h"

static int key_args(cf_pageio *io, size_t klen)
{
	if (klen == 0)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, CF_OBJ(.file = io->file),
				"a B+tree key must have at least 1 byte");
	if (klen > CF_BT_MAX_KEY)
		return CF_ERROR(COFFER_E_KEY_TOO_LARGE, CF_OBJ(.file = io->file),
				"a key of %zu bytes is longer than the limit of %u bytes", klen, CF_BT_MAX_KEY);
	return COFFER_OK;
}

static int not_found(cf_pageio *io, cf_pgno root)
{
	return CF_ERROR(COFFER_E_NOT_FOUND, CF_OBJ(.file = io->file, CF_PAGE(root)),
			"key not found in the B+tree rooted at page %u", root);
}

static int no_memory(cf_pageio *io, size_t n)
{
	return CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = io->file), "could not allocate %zu bytes for the B+tree",
			n);
}

/* Whether a leaf cell with this key and value keeps the value inline. */
static int fits_inline(uint32_t ps, size_t klen, uint64_t vlen)
{
	if (vlen <= 4)
		return 1;
	uint64_t size = bt_varint_len((uint64_t)klen << 1) + bt_varint_len(vlen) + klen + vlen;
	return size <= bt_max_local(ps);
}

/* Length of the shortest prefix of b that is > a (a < b). */
static uint32_t sep_len(const uint8_t *a, uint32_t al, const uint8_t *b, uint32_t bl)
{
	uint32_t i = 0, m = al < bl ? al : bl;
	while (i < m && a[i] == b[i])
		i++;
	return i + 1 <= bl ? i + 1 : bl;
}

int cf_bt_create(cf_pageio *io, cf_pgno *root)
{
	uint8_t *pg;
	CF_RET(io->ops->alloc(io, root, &pg));
	bt_node_init(pg, io->page_size, CF_PT_LEAF, 0);
	return COFFER_OK;
}

int bt_descend(cf_pageio *io, cf_pgno root, const uint8_t *key, size_t klen, bt_path *path,
	       const uint8_t **leaf, void **pin, int *exact)
{
	cf_pgno pgno = root;
	path->depth = 0;
	for (;;) {
		const uint8_t *pg;
		void *pn;
		unsigned idx;
		int ex, rc;
		if (path->depth == BT_MAX_DEPTH)
			return BT_CORRUPT(io, pgno, "it lies more than %d levels below root page %u (a cycle?)",
					  BT_MAX_DEPTH, root);
		CF_RET(bt_read_node(io, pgno, &pg, &pn));
		CF_GO(rc, bt_search(io, pgno, pg, key, klen, &idx, &ex));
		path->lv[path->depth].pgno = pgno;
		path->lv[path->depth].idx = idx;
		path->depth++;
		if (bt_is_leaf(pg)) {
			CF_GO(rc, bt_leaf_order_near(io, pgno, pg, idx));
			*leaf = pg;
			*pin = pn;
			*exact = ex;
			return COFFER_OK;
		}
		CF_GO(rc, bt_child_at(io, pgno, pg, idx, &pgno));
		io->ops->release(io, pn);
		continue;
err:
		io->ops->release(io, pn);
		return rc;
	}
}

int cf_bt_get(cf_pageio *io, cf_pgno root, const void *key, size_t klen, void **val, size_t *vlen)
{
	bt_path path;
	const uint8_t *leaf;
	void *pin;
	int exact, rc;
	*val = NULL;
	*vlen = 0;
	CF_RET(key_args(io, klen));
	CF_RET(bt_descend(io, root, key, klen, &path, &leaf, &pin, &exact));
	cf_pgno lpg = path.lv[path.depth - 1].pgno;
	bt_cell c;
	uint8_t *buf = NULL;
	if (!exact) {
		rc = not_found(io, root);
		goto err;
	}
	CF_GO(rc, bt_cell_at(io, lpg, leaf, path.lv[path.depth - 1].idx, &c));
	if (!(buf = malloc(c.vlen ? (size_t)c.vlen : 1))) {
		rc = no_memory(io, (size_t)c.vlen);
		goto err;
	}
	if (c.ovfl) {
		io->ops->release(io, pin);
		pin = NULL;
		CF_GO(rc, bt_ovfl_read(io, lpg, c.ovfl, c.vlen, 0, buf, (size_t)c.vlen, NULL, NULL));
	} else {
		memcpy(buf, c.val, (size_t)c.vlen);
		io->ops->release(io, pin);
	}
	*val = buf;
	*vlen = (size_t)c.vlen;
	return COFFER_OK;
err:
	if (pin)
		io->ops->release(io, pin);
	free(buf);
	return rc;
}

/* Choose where to divide cells[0..n): for a leaf, the first cell of the
 * right page; for a branch, the cell moved up. Both pages must fit; the
 * most even division in bytes wins. Returns 0 if none fits. */
static unsigned split_point(const bt_ref *cells, unsigned n, int leaf, uint32_t usable)
{
	uint64_t total = 0, left = 0, best_diff = UINT64_MAX;
	unsigned best = 0;
	for (unsigned i = 0; i < n; i++)
		total += cells[i].len + 2;
	for (unsigned s = 1; s + (leaf ? 0 : 1) < n; s++) {
		left += cells[s - 1].len + 2;
		uint64_t right = total - left - (leaf ? 0 : cells[s].len + 2);
		if (left > usable)
			break;
		if (right > usable)
			continue;
		uint64_t diff = left > right ? left - right : right - left;
		if (diff < best_diff) {
			best_diff = diff;
			best = s;
		}
	}
	return best;
}

/* Whether dividing at s (see split_point) gives two pages that fit. */
static int split_fits(const bt_ref *cells, unsigned n, int leaf, uint32_t usable, unsigned s)
{
	uint64_t left = 0, right = 0;
	if (s == 0 || s + (leaf ? 0 : 1) >= n)
		return 0;
	for (unsigned i = 0; i < n; i++) {
		if (i < s)
			left += cells[i].len + 2;
		else if (leaf || i > s)
			right += cells[i].len + 2;
	}
	return left <= usable && right <= usable;
}

/* The separator between cells[s - 1] and cells[s] of a leaf, or the key of
 * branch cell s (with its child in *child), copied into key. */
static int separator(cf_pageio *io, cf_pgno pgno, const bt_ref *cells, unsigned s, int leaf,
		     uint8_t *key, uint32_t *klen, cf_pgno *child)
{
	const uint8_t *a, *b;
	uint32_t al, bl;
	CF_RET(bt_raw_key(cells[s].p, cells[s].len, leaf, &b, &bl));
	if (leaf) {
		CF_RET(bt_raw_key(cells[s - 1].p, cells[s - 1].len, leaf, &a, &al));
		if (bt_cmp(a, al, b, bl) >= 0)
			return BT_CORRUPT(io, pgno, "its keys are out of order");
		*klen = sep_len(a, al, b, bl);
		*child = 0;
	} else {
		*klen = bl;
		*child = cf_get32(cells[s].p);
	}
	memcpy(key, b, *klen);
	return COFFER_OK;
}

/* Split the node at path level `level` (writable page pg), which cannot
 * take cell x at index idx. The left part stays in the page, the right part
 * goes to a new page, and *sep (key in sepkey) is the cell to insert into
 * the parent. At the root, both parts go to new pages and the root becomes
 * a branch over them; *sep is then unused. */
static int bt_split(cf_pageio *io, bt_path *path, unsigned level, uint8_t *pg, unsigned idx,
		    const bt_src *x, bt_src *sep, uint8_t *sepkey)
{
	uint32_t ps = io->page_size, usable = bt_usable(ps);
	cf_pgno pgno = path->lv[level].pgno;
	unsigned n = bt_ncells(pg), N = n + 1;
	int leaf = bt_is_leaf(pg), rc;
	uint8_t type = cf_page_type(pg);
	size_t wsize = N * sizeof(bt_ref) + ps + bt_src_size(x);
	bt_ref *cells = malloc(wsize);
	if (!cells)
		return no_memory(io, wsize);
	uint8_t *copy = (uint8_t *)(cells + N), *xbuf = copy + ps;
	memcpy(copy, pg, ps);
	bt_src_write(xbuf, x);
	CF_GO(rc, bt_node_cells(io, pgno, copy, cells));
	memmove(cells + idx + 1, cells + idx, (n - idx) * sizeof(bt_ref));
	cells[idx].p = xbuf;
	cells[idx].len = bt_src_size(x);

	/* Inserting after the last cell (or before the first) keeps the old
	 * cells together: sequential loads leave full pages behind. */
	unsigned s = 0;
	if (idx == n)
		s = leaf ? n : n - 1;
	else if (idx == 0)
		s = 1;
	if (!split_fits(cells, N, leaf, usable, s))
		s = split_point(cells, N, leaf, usable);
	if (s == 0) {
		rc = BT_CORRUPT(io, pgno, "its %u cells cannot be divided between two pages", N);
		goto err;
	}
	uint32_t sklen;
	cf_pgno rleft;
	CF_GO(rc, separator(io, pgno, cells, s, leaf, sepkey, &sklen, &rleft));
	const bt_ref *rcells = cells + (leaf ? s : s + 1);
	unsigned rn = N - (leaf ? s : s + 1);

	cf_pgno rpgno, lpgno;
	uint8_t *rpg, *lpg;
	CF_GO(rc, io->ops->alloc(io, &rpgno, &rpg));
	CF_GO(rc, bt_node_build(io, rpgno, rpg, type, rleft, rcells, rn));
	if (level > 0) {
		CF_GO(rc, bt_node_build(io, pgno, pg, type, bt_leftmost(copy), cells, s));
		bt_src_branch(sep, rpgno, sepkey, sklen);
	} else {
		CF_GO(rc, io->ops->alloc(io, &lpgno, &lpg));
		CF_GO(rc, bt_node_build(io, lpgno, lpg, type, bt_leftmost(copy), cells, s));
		bt_src rs;
		bt_src_branch(&rs, rpgno, sepkey, sklen);
		memset(pg + BT_SLOTS, 0, ps - BT_SLOTS);
		bt_node_init(pg, ps, CF_PT_BRANCH, lpgno);
		CF_GO(rc, bt_node_insert(io, pgno, pg, 0, &rs));
	}
err:
	free(cells);
	return rc;
}

/* Insert cell src at index idx of the node at path level `level`,
 * splitting up the path as needed. */
static int bt_insert(cf_pageio *io, bt_path *path, unsigned level, unsigned idx, const bt_src *src)
{
	uint8_t keybuf[2][CF_BT_MAX_KEY];
	int kb = 0;
	bt_src cur = *src;
	for (;;) {
		cf_pgno pgno = path->lv[level].pgno;
		uint8_t *pg;
		CF_RET(bt_write_node(io, pgno, &pg));
		if (bt_free(pg) >= bt_src_size(&cur) + 2)
			return bt_node_insert(io, pgno, pg, idx, &cur);
		bt_src sep;
		CF_RET(bt_split(io, path, level, pg, idx, &cur, &sep, keybuf[kb]));
		kb ^= 1;
		if (level == 0)
			return COFFER_OK;
		level--;
		idx = path->lv[level].idx;
		cur = sep;
	}
}

int cf_bt_put(cf_pageio *io, cf_pgno *root, const void *key, size_t klen, const void *val,
	      size_t vlen, unsigned flags)
{
	uint32_t ps = io->page_size;
	bt_path path;
	const uint8_t *leaf;
	void *pin;
	int exact, rc;
	CF_RET(key_args(io, klen));
	if ((uint64_t)vlen > CF_BT_MAX_VALUE)
		return CF_ERROR(COFFER_E_VALUE_TOO_LARGE, CF_OBJ(.file = io->file),
				"a value of %zu bytes is longer than the limit of %llu bytes", vlen,
				(unsigned long long)CF_BT_MAX_VALUE);
	CF_RET(bt_descend(io, *root, key, klen, &path, &leaf, &pin, &exact));
	unsigned level = path.depth - 1, idx = path.lv[level].idx;
	cf_pgno lpgno = path.lv[level].pgno;
	bt_cell old = {0};
	rc = exact ? bt_cell_at(io, lpgno, leaf, idx, &old) : COFFER_OK;
	io->ops->release(io, pin);
	CF_RET(rc);
	if (exact && (flags & CF_BT_NOOVERWRITE))
		return CF_ERROR(COFFER_E_EXISTS, CF_OBJ(.file = io->file, CF_PAGE(*root)),
				"the key already exists in the B+tree rooted at page %u", *root);

	if (exact && old.ovfl)
		CF_RET(bt_ovfl_free(io, lpgno, old.ovfl, old.vlen));
	cf_pgno ovfl = CF_PGNO_NONE;
	if (!fits_inline(ps, klen, vlen))
		CF_RET(bt_ovfl_write(io, val, vlen, &ovfl));
	bt_src s;
	bt_src_leaf(&s, ps, key, (uint32_t)klen, val, vlen, ovfl);
	if (exact) {
		uint8_t *pg;
		CF_RET(bt_write_node(io, lpgno, &pg));
		if (bt_src_size(&s) == old.size) {
			bt_cell c;
			CF_RET(bt_cell_at(io, lpgno, pg, idx, &c));
			bt_src_write(pg + bt_slot(pg, idx), &s);
			return COFFER_OK;
		}
		CF_RET(bt_node_remove(io, lpgno, pg, idx));
	}
	return bt_insert(io, &path, level, idx, &s);
}

/* Root page root, now a branch without cells: take in its only child (and
 * its child's, should that be one too). */
static int bt_collapse(cf_pageio *io, cf_pgno root, uint8_t *rpg)
{
	uint32_t ps = io->page_size;
	while (!bt_is_leaf(rpg) && bt_ncells(rpg) == 0) {
		cf_pgno child = bt_leftmost(rpg);
		uint8_t *cpg;
		CF_RET(bt_write_node(io, child, &cpg));
		memcpy(rpg + CF_PAGE_HDR, cpg + CF_PAGE_HDR, ps - CF_PAGE_HDR);
		rpg[12] = cpg[12];
		rpg[13] = cpg[13];
		CF_RET(io->ops->free(io, child));
		CF_RET(bt_node_check(io, root, rpg));
	}
	return COFFER_OK;
}

/* The node at path level `level` (> 0) fell under a quarter full. */
static int bt_rebalance(cf_pageio *io, bt_path *path, unsigned level)
{
	uint32_t ps = io->page_size, usable = bt_usable(ps);
	uint8_t sepkey[CF_BT_MAX_KEY], newkey[CF_BT_MAX_KEY];
	while (level > 0) {
		unsigned pl = level - 1, c = path->lv[pl].idx;
		cf_pgno ppgno = path->lv[pl].pgno, lno, rno;
		uint8_t *pp, *lpg, *rpg;
		int rc;
		CF_RET(bt_write_node(io, ppgno, &pp));
		unsigned np = bt_ncells(pp);
		if (bt_is_leaf(pp) || c > np)
			return BT_CORRUPT(io, ppgno, "it changed kind or size during an operation");
		if (np == 0)
			return COFFER_OK; /* no sibling to pair with */
		unsigned sepidx = c > 0 ? c - 1 : 0;
		bt_cell sc;
		CF_RET(bt_cell_at(io, ppgno, pp, sepidx, &sc));
		uint32_t sklen = sc.klen;
		memcpy(sepkey, sc.key, sklen);
		CF_RET(bt_child_at(io, ppgno, pp, sepidx, &lno));
		rno = sc.child;
		CF_RET(bt_write_node(io, lno, &lpg));
		CF_RET(bt_write_node(io, rno, &rpg));
		if (cf_page_type(lpg) != cf_page_type(rpg))
			return BT_CORRUPT(io, ppgno, "its children %u and %u are of different kinds", lno, rno);
		int leaf = bt_is_leaf(lpg);
		uint8_t type = cf_page_type(lpg);
		unsigned nl = bt_ncells(lpg), nr = bt_ncells(rpg), N = nl + nr + (leaf ? 0 : 1);
		uint8_t sepcell[4 + 5 + CF_BT_MAX_KEY];
		bt_src ss;
		bt_src_branch(&ss, bt_leftmost(rpg), sepkey, sklen);
		bt_src_write(sepcell, &ss);

		size_t wsize = N * sizeof(bt_ref) + 2 * (size_t)ps;
		bt_ref *cells = malloc(wsize);
		if (!cells)
			return no_memory(io, wsize);
		uint8_t *lcopy = (uint8_t *)(cells + N), *rcopy = lcopy + ps;
		memcpy(lcopy, lpg, ps);
		memcpy(rcopy, rpg, ps);
		CF_GO(rc, bt_node_cells(io, lno, lcopy, cells));
		if (!leaf) {
			cells[nl].p = sepcell;
			cells[nl].len = bt_src_size(&ss);
		}
		CF_GO(rc, bt_node_cells(io, rno, rcopy, cells + N - nr));

		uint64_t total = 0;
		for (unsigned i = 0; i < N; i++)
			total += cells[i].len + 2;
		if (total <= usable) {
			/* merge right into left */
			CF_GO(rc, bt_node_build(io, lno, lpg, type, bt_leftmost(lcopy), cells, N));
			free(cells);
			CF_RET(io->ops->free(io, rno));
			CF_RET(bt_node_remove(io, ppgno, pp, sepidx));
			if (pl == 0)
				return bt_collapse(io, ppgno, pp);
			if (bt_used(pp, ps) >= usable / 4)
				return COFFER_OK;
			level = pl;
			continue;
		}
		/* redistribute */
		unsigned s = split_point(cells, N, leaf, usable);
		if (s == 0) {
			rc = BT_CORRUPT(io, ppgno, "the cells of its children %u and %u cannot be divided", lno,
					rno);
			goto err;
		}
		uint32_t nklen;
		cf_pgno rleft;
		CF_GO(rc, separator(io, ppgno, cells, s, leaf, newkey, &nklen, &rleft));
		CF_GO(rc, bt_node_build(io, lno, lpg, type, bt_leftmost(lcopy), cells, s));
		CF_GO(rc, bt_node_build(io, rno, rpg, type, rleft, cells + (leaf ? s : s + 1),
					N - (leaf ? s : s + 1)));
		free(cells);
		CF_RET(bt_node_remove(io, ppgno, pp, sepidx));
		bt_src ns;
		bt_src_branch(&ns, rno, newkey, nklen);
		return bt_insert(io, path, pl, sepidx, &ns);
err:
		free(cells);
		return rc;
	}
	return COFFER_OK;
}

int cf_bt_del(cf_pageio *io, cf_pgno *root, const void *key, size_t klen)
{
	bt_path path;
	const uint8_t *leaf;
	void *pin;
	int exact, rc;
	CF_RET(key_args(io, klen));
	CF_RET(bt_descend(io, *root, key, klen, &path, &leaf, &pin, &exact));
	unsigned level = path.depth - 1, idx = path.lv[level].idx;
	cf_pgno lpgno = path.lv[level].pgno;
	bt_cell old = {0};
	rc = exact ? bt_cell_at(io, lpgno, leaf, idx, &old) : not_found(io, *root);
	io->ops->release(io, pin);
	CF_RET(rc);
	if (old.ovfl)
		CF_RET(bt_ovfl_free(io, lpgno, old.ovfl, old.vlen));
	uint8_t *pg;
	CF_RET(bt_write_node(io, lpgno, &pg));
	CF_RET(bt_node_remove(io, lpgno, pg, idx));
	if (level > 0 && bt_used(pg, io->page_size) < bt_usable(io->page_size) / 4)
		return bt_rebalance(io, &path, level);
	return COFFER_OK;
}

static int drop_node(cf_pageio *io, cf_pgno pgno, unsigned depth)
{
	const uint8_t *pg;
	void *pin;
	int rc = COFFER_OK;
	if (depth == BT_MAX_DEPTH)
		return BT_CORRUPT(io, pgno, "it lies more than %d levels below the root (a cycle?)",
				  BT_MAX_DEPTH);
	CF_RET(bt_read_node(io, pgno, &pg, &pin));
	unsigned n = bt_ncells(pg);
	if (bt_is_leaf(pg)) {
		for (unsigned i = 0; i < n; i++) {
			bt_cell c;
			CF_GO(rc, bt_cell_at(io, pgno, pg, i, &c));
			if (c.ovfl)
				CF_GO(rc, bt_ovfl_free(io, pgno, c.ovfl, c.vlen));
		}
	} else {
		for (unsigned i = 0; i <= n; i++) {
			cf_pgno child;
			CF_GO(rc, bt_child_at(io, pgno, pg, i, &child));
			CF_GO(rc, drop_node(io, child, depth + 1));
		}
	}
	io->ops->release(io, pin);
	return io->ops->free(io, pgno);
err:
	io->ops->release(io, pin);
	return rc;
}

int cf_bt_drop(cf_pageio *io, cf_pgno root)
{
	return drop_node(io, root, 0);
}

static int count_node(cf_pageio *io, cf_pgno pgno, unsigned depth, uint64_t *n)
{
	const uint8_t *pg;
	void *pin;
	int rc = COFFER_OK;
	if (depth == BT_MAX_DEPTH)
		return BT_CORRUPT(io, pgno, "it lies more than %d levels below the root (a cycle?)",
				  BT_MAX_DEPTH);
	CF_RET(bt_read_node(io, pgno, &pg, &pin));
	unsigned nc = bt_ncells(pg);
	if (bt_is_leaf(pg)) {
		*n += nc;
	} else {
		for (unsigned i = 0; i <= nc; i++) {
			cf_pgno child;
			CF_GO(rc, bt_child_at(io, pgno, pg, i, &child));
			CF_GO(rc, count_node(io, child, depth + 1, n));
		}
	}
err:
	io->ops->release(io, pin);
	return rc;
}

int cf_bt_count(cf_pageio *io, cf_pgno root, uint64_t *n)
{
	*n = 0;
	return count_node(io, root, 0, n);
}
