/*
 * bt_cursor.c - cursors: ordered scans without sibling links.
 *
 * Leaves are not linked to each other (each page's versions are published
 * on their own, so the structure is parent -> child only). A cursor keeps
 * its path from the root: at each level the page, its pin and the index
 * taken (child index in branches, cell index in the leaf). Moving past the
 * end of a leaf climbs to the nearest ancestor with a further child and
 * descends along its edge. Pins: exactly the pages of the path.
 *
 * Damage checks while scanning: every cell is bounds-checked as it is
 * loaded; consecutive keys in a page must ascend; the first key of each new
 * leaf must lie beyond the last key seen (kept in edge[]).
 */
#include <stdlib.h>

#define CF_BT_INTERNAL
#include "engine/btree.h"

struct cf_bt_cursor {
	cf_pageio *io;
	cf_pgno root;
	unsigned depth; /* levels on the path; 0: at no item */
	int on;         /* on an item (cell loaded) */
	struct bt_clevel {
		cf_pgno pgno;
		const uint8_t *pg;
		void *pin;
		unsigned idx, n;
	} lv[BT_MAX_DEPTH];
	bt_cell cell;     /* the current item */
	uint8_t *vbuf;    /* overflow value read whole */
	size_t vcap;
	int vloaded;
	cf_pgno s_pgno;   /* streaming: chain page number s_index is s_pgno */
	uint64_t s_index;
	int has_edge;     /* edge: the last key passed, for the order check */
	uint32_t edge_len;
	uint8_t edge[CF_BT_MAX_KEY];
};

static void cur_release(cf_bt_cursor *c)
{
	while (c->depth > 0) {
		c->depth--;
		c->io->ops->release(c->io, c->lv[c->depth].pin);
	}
	c->on = 0;
	c->vloaded = 0;
	c->s_pgno = CF_PGNO_NONE;
	c->s_index = 0;
}

static int at_end(cf_bt_cursor *c)
{
	cur_release(c);
	return CF_ERROR(COFFER_E_NOT_FOUND, CF_OBJ(.file = c->io->file, CF_PAGE(c->root)),
			"no further key in the B+tree rooted at page %u", c->root);
}

static int not_on_item(cf_bt_cursor *c)
{
	return CF_ERROR(COFFER_E_NOT_FOUND, CF_OBJ(.file = c->io->file, CF_PAGE(c->root)),
			"the cursor on the B+tree rooted at page %u is not on a key", c->root);
}

/* Index to start from at the left (dir > 0) or right edge of a node. */
static unsigned edge_idx(const struct bt_clevel *l, int dir)
{
	if (dir > 0)
		return 0;
	if (bt_is_leaf(l->pg))
		return l->n ? l->n - 1 : 0;
	return l->n;
}

static int cur_push(cf_bt_cursor *c, cf_pgno pgno)
{
	if (c->depth == BT_MAX_DEPTH)
		return BT_CORRUPT(c->io, pgno, "it lies more than %d levels below root page %u (a cycle?)",
				  BT_MAX_DEPTH, c->root);
	struct bt_clevel *l = &c->lv[c->depth];
	CF_RET(bt_read_node(c->io, pgno, &l->pg, &l->pin));
	l->pgno = pgno;
	l->n = bt_ncells(l->pg);
	l->idx = 0;
	c->depth++;
	return COFFER_OK;
}

/* From the top of the path, follow edge children down to a leaf. */
static int cur_descend(cf_bt_cursor *c, int dir)
{
	for (;;) {
		struct bt_clevel *t = &c->lv[c->depth - 1];
		if (bt_is_leaf(t->pg))
			return COFFER_OK;
		cf_pgno child;
		CF_RET(bt_child_at(c->io, t->pgno, t->pg, t->idx, &child));
		CF_RET(cur_push(c, child));
		t = &c->lv[c->depth - 1];
		t->idx = edge_idx(t, dir);
	}
}

static int cur_load(cf_bt_cursor *c)
{
	struct bt_clevel *l = &c->lv[c->depth - 1];
	CF_RET(bt_cell_at(c->io, l->pgno, l->pg, l->idx, &c->cell));
	c->on = 1;
	c->vloaded = 0;
	c->s_pgno = CF_PGNO_NONE;
	c->s_index = 0;
	return COFFER_OK;
}

static void set_edge(cf_bt_cursor *c, const uint8_t *key, uint32_t klen)
{
	memcpy(c->edge, key, klen);
	c->edge_len = klen;
	c->has_edge = 1;
}

/* Leave the current leaf for the next (dir > 0) or previous non-empty leaf. */
static int cur_leave(cf_bt_cursor *c, int dir)
{
	for (;;) {
		c->depth--;
		c->io->ops->release(c->io, c->lv[c->depth].pin);
		while (c->depth > 0) {
			struct bt_clevel *t = &c->lv[c->depth - 1];
			if (dir > 0 ? t->idx < t->n : t->idx > 0) {
				t->idx = dir > 0 ? t->idx + 1 : t->idx - 1;
				break;
			}
			c->depth--;
			c->io->ops->release(c->io, t->pin);
		}
		if (c->depth == 0)
			return at_end(c);
		CF_RET(cur_descend(c, dir));
		struct bt_clevel *l = &c->lv[c->depth - 1];
		if (l->n == 0)
			continue;
		CF_RET(cur_load(c));
		if (c->has_edge) {
			int r = bt_cmp(c->edge, c->edge_len, c->cell.key, c->cell.klen);
			if (dir > 0 ? r >= 0 : r <= 0)
				return BT_CORRUPT(c->io, l->pgno, "its %s key is out of order with the page %s it",
						  dir > 0 ? "first" : "last", dir > 0 ? "before" : "after");
		}
		return COFFER_OK;
	}
}

static int cur_fail(cf_bt_cursor *c, int rc)
{
	if (rc)
		cur_release(c);
	return rc;
}

int cf_bt_cursor_open(cf_pageio *io, cf_pgno root, cf_bt_cursor **out)
{
	cf_bt_cursor *c = calloc(1, sizeof *c);
	*out = NULL;
	if (!c)
		return CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = io->file), "could not allocate a B+tree cursor");
	c->io = io;
	c->root = root;
	*out = c;
	return COFFER_OK;
}

void cf_bt_cursor_close(cf_bt_cursor *c)
{
	if (!c)
		return;
	cur_release(c);
	free(c->vbuf);
	free(c);
}

static int cur_edge(cf_bt_cursor *c, int dir)
{
	cur_release(c);
	c->has_edge = 0;
	CF_RET(cur_push(c, c->root));
	c->lv[0].idx = edge_idx(&c->lv[0], dir);
	CF_RET(cur_descend(c, dir));
	if (c->lv[c->depth - 1].n == 0) {
		if (c->depth == 1)
			return at_end(c);
		return cur_leave(c, dir);
	}
	return cur_load(c);
}

int cf_bt_cursor_first(cf_bt_cursor *c)
{
	return cur_fail(c, cur_edge(c, 1));
}

int cf_bt_cursor_last(cf_bt_cursor *c)
{
	return cur_fail(c, cur_edge(c, -1));
}

static int cur_seek(cf_bt_cursor *c, const uint8_t *key, size_t klen)
{
	cur_release(c);
	c->has_edge = 0;
	CF_RET(cur_push(c, c->root));
	for (;;) {
		struct bt_clevel *t = &c->lv[c->depth - 1];
		int exact;
		CF_RET(bt_search(c->io, t->pgno, t->pg, key, klen, &t->idx, &exact));
		if (bt_is_leaf(t->pg))
			break;
		cf_pgno child;
		CF_RET(bt_child_at(c->io, t->pgno, t->pg, t->idx, &child));
		CF_RET(cur_push(c, child));
	}
	struct bt_clevel *l = &c->lv[c->depth - 1];
	CF_RET(bt_leaf_order_near(c->io, l->pgno, l->pg, l->idx));
	if (l->idx < l->n)
		return cur_load(c);
	if (l->n > 0) {
		const uint8_t *k;
		uint32_t kl;
		CF_RET(bt_key_at(c->io, l->pgno, l->pg, l->n - 1, &k, &kl));
		set_edge(c, k, kl);
	}
	if (c->depth == 1)
		return at_end(c);
	return cur_leave(c, 1);
}

int cf_bt_cursor_seek(cf_bt_cursor *c, const void *key, size_t klen)
{
	return cur_fail(c, cur_seek(c, key, klen));
}

static int cur_step(cf_bt_cursor *c, int dir)
{
	if (!c->on)
		return not_on_item(c);
	struct bt_clevel *l = &c->lv[c->depth - 1];
	const uint8_t *pk = c->cell.key;
	uint32_t pkl = c->cell.klen;
	if (dir > 0 ? l->idx + 1 < l->n : l->idx > 0) {
		l->idx = dir > 0 ? l->idx + 1 : l->idx - 1;
		CF_RET(cur_load(c));
		int r = bt_cmp(pk, pkl, c->cell.key, c->cell.klen);
		if (dir > 0 ? r >= 0 : r <= 0)
			return BT_CORRUPT(c->io, l->pgno, "the keys of cells %u and %u are out of order",
					  dir > 0 ? l->idx - 1 : l->idx, dir > 0 ? l->idx : l->idx + 1);
		return COFFER_OK;
	}
	set_edge(c, pk, pkl);
	return cur_leave(c, dir);
}

int cf_bt_cursor_next(cf_bt_cursor *c)
{
	return cur_fail(c, cur_step(c, 1));
}

int cf_bt_cursor_prev(cf_bt_cursor *c)
{
	return cur_fail(c, cur_step(c, -1));
}

int cf_bt_cursor_key(cf_bt_cursor *c, const void **key, size_t *klen)
{
	if (!c->on)
		return not_on_item(c);
	*key = c->cell.key;
	*klen = c->cell.klen;
	return COFFER_OK;
}

int cf_bt_cursor_value_size(cf_bt_cursor *c, uint64_t *vlen)
{
	if (!c->on)
		return not_on_item(c);
	*vlen = c->cell.vlen;
	return COFFER_OK;
}

int cf_bt_cursor_value(cf_bt_cursor *c, const void **val, size_t *vlen)
{
	if (!c->on)
		return not_on_item(c);
	if (!c->cell.ovfl) {
		*val = c->cell.val;
		*vlen = (size_t)c->cell.vlen;
		return COFFER_OK;
	}
	if (!c->vloaded) {
		size_t need = (size_t)c->cell.vlen;
		if (c->vcap < need) {
			uint8_t *nb = realloc(c->vbuf, need);
			if (!nb)
				return CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = c->io->file),
						"could not allocate %zu bytes for a value", need);
			c->vbuf = nb;
			c->vcap = need;
		}
		CF_RET(bt_ovfl_read(c->io, c->lv[c->depth - 1].pgno, c->cell.ovfl, c->cell.vlen, 0, c->vbuf,
				    need, NULL, NULL));
		c->vloaded = 1;
	}
	*val = c->vbuf;
	*vlen = (size_t)c->cell.vlen;
	return COFFER_OK;
}

int cf_bt_cursor_value_read(cf_bt_cursor *c, uint64_t off, void *buf, size_t n, size_t *got)
{
	*got = 0;
	if (!c->on)
		return not_on_item(c);
	uint64_t vlen = c->cell.vlen;
	if (off >= vlen || n == 0)
		return COFFER_OK;
	if (n > vlen - off)
		n = (size_t)(vlen - off);
	if (!c->cell.ovfl)
		memcpy(buf, c->cell.val + off, n);
	else if (c->vloaded)
		memcpy(buf, c->vbuf + off, n);
	else
		CF_RET(bt_ovfl_read(c->io, c->lv[c->depth - 1].pgno, c->cell.ovfl, vlen, off, buf, n,
				    &c->s_pgno, &c->s_index));
	*got = n;
	return COFFER_OK;
}

int cf_bt_cursor_del(cf_bt_cursor *c)
{
	uint8_t key[CF_BT_MAX_KEY];
	if (!c->on)
		return not_on_item(c);
	size_t klen = c->cell.klen;
	memcpy(key, c->cell.key, klen);
	cur_release(c);
	CF_RET(cf_bt_del(c->io, &c->root, key, klen));
	return cf_bt_cursor_seek(c, key, klen);
}
