/*
 * bt_check.c - the structure check behind 'coffer check'.
 *
 * A depth-first walk of the whole tree that verifies everything the normal
 * paths check only lazily: every cell of every node, that cells do not
 * overlap and account for the cell area exactly (with the holes), keys
 * strictly ascending within a node and inside the bounds set by the
 * separators above (lower <= key < upper), all leaves at one depth,
 * non-root nodes not empty, and each overflow chain (type, links, length).
 * Every page reached is marked in the caller's bitmap; a page reached
 * twice (or outside the file) is a problem and is not descended into, so
 * cycles end. Problems are reported one by one and the walk goes on; only
 * errors that are not about the tree's pages (no memory, I/O) stop it.
 */
#include <stdio.h>
#include <stdlib.h>

#define CF_BT_INTERNAL
#include "engine/btree.h"

typedef struct chk {
	cf_pageio *io;
	uint8_t *owned;
	cf_pgno npages;
	cf_bt_problem_fn fn;
	void *arg;
	uint64_t nproblems, nkeys;
	int leaf_depth; /* -1 until the first leaf */
	int fatal;      /* an error that stops the walk */
	cf_pgno first_pgno;
	char first[400];
} chk;

static void problem(chk *k, cf_pgno pgno, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void problem(chk *k, cf_pgno pgno, const char *fmt, ...)
{
	char what[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	if (k->nproblems++ == 0) {
		k->first_pgno = pgno;
		memcpy(k->first, what, sizeof what);
	}
	if (k->fn)
		k->fn(k->arg, pgno, what);
}

/* Report the current error record as a problem if it is about the pages
 * (damage); otherwise remember it as fatal. */
static void page_error(chk *k, cf_pgno pgno, int rc)
{
	if (rc == COFFER_E_PAGE_CORRUPT || rc == COFFER_E_PAGE_CHECKSUM || rc == COFFER_E_PAGE_NUMBER ||
	    rc == COFFER_E_SHORT_READ)
		problem(k, pgno, "%s", coffer_error_last()->message);
	else if (!k->fatal)
		k->fatal = rc;
}

/* Mark pgno as owned; 0 if it is out of range or was already marked. */
static int mark(chk *k, cf_pgno from, cf_pgno pgno, const char *what)
{
	if (pgno < CF_PGNO_FIRST_FREE || pgno >= k->npages) {
		problem(k, from, "page %u links to %s page %u, outside the file's pages [%u, %u)", from, what,
			pgno, CF_PGNO_FIRST_FREE, k->npages);
		return 0;
	}
	if (k->owned[pgno / 8] & (1u << (pgno % 8))) {
		problem(k, pgno, "page %u is used twice (reached again from page %u as %s page)", pgno, from,
			what);
		return 0;
	}
	k->owned[pgno / 8] |= (uint8_t)(1u << (pgno % 8));
	return 1;
}

static void check_chain(chk *k, cf_pgno leaf, unsigned cell, cf_pgno first, uint64_t vlen)
{
	cf_pageio *io = k->io;
	uint64_t npg = bt_ovfl_npages(io->page_size, vlen), i;
	cf_pgno pgno = first, from = leaf;
	for (i = 0; pgno != CF_PGNO_NONE; i++) {
		if (i == npg) {
			problem(k, from, "the overflow chain of cell %u of page %u is longer than the %llu "
				"pages its %llu-byte value needs", cell, leaf, (unsigned long long)npg,
				(unsigned long long)vlen);
			return;
		}
		if (!mark(k, from, pgno, "an overflow"))
			return;
		const uint8_t *pg;
		void *pin;
		int rc = io->ops->read(io, pgno, &pg, &pin);
		if (rc) {
			page_error(k, pgno, rc);
			return;
		}
		cf_pgno next = cf_get32(pg + BT_OVFL_NEXT);
		if (cf_page_type(pg) != CF_PT_OVERFLOW) {
			problem(k, pgno, "page %u has type %u but is page %llu of the overflow chain of cell %u "
				"of page %u", pgno, cf_page_type(pg), (unsigned long long)i + 1, cell, leaf);
			next = CF_PGNO_NONE;
			i = npg; /* do not report the length too */
		} else if (cf_page_pgno(pg) != pgno) {
			problem(k, pgno, "page %u carries page number %u", pgno, cf_page_pgno(pg));
		}
		io->ops->release(io, pin);
		from = pgno;
		pgno = next;
	}
	if (i < npg)
		problem(k, from, "the overflow chain of cell %u of page %u has %llu pages where its "
			"%llu-byte value needs %llu", cell, leaf, (unsigned long long)i,
			(unsigned long long)vlen, (unsigned long long)npg);
}

typedef struct span {
	uint32_t off, len;
} span;

static int span_cmp(const void *a, const void *b)
{
	const span *x = a, *y = b;
	return (x->off > y->off) - (x->off < y->off);
}

/* Check the cells of a node; 0 if they cannot be trusted. */
static int check_cells(chk *k, cf_pgno pgno, const uint8_t *pg)
{
	cf_pageio *io = k->io;
	uint32_t ps = io->page_size;
	unsigned n = bt_ncells(pg);
	if (n == 0)
		return 1;
	span *sp = malloc(n * sizeof *sp);
	if (!sp) {
		if (!k->fatal)
			k->fatal = CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = io->file), "no memory to check page %u",
					    pgno);
		return 0;
	}
	int ok = 1;
	uint64_t bytes = 0;
	for (unsigned i = 0; i < n; i++) {
		bt_cell c;
		int rc = bt_cell_at(io, pgno, pg, i, &c);
		if (rc) {
			page_error(k, pgno, rc);
			ok = 0;
			goto out;
		}
		sp[i].off = bt_slot(pg, i);
		sp[i].len = c.size;
		bytes += c.size;
	}
	qsort(sp, n, sizeof *sp, span_cmp);
	for (unsigned i = 1; i < n; i++) {
		if (sp[i - 1].off + sp[i - 1].len > sp[i].off) {
			problem(k, pgno, "page %u has overlapping cells at offsets %u and %u", pgno,
				sp[i - 1].off, sp[i].off);
			ok = 0;
			goto out;
		}
	}
	if (bytes + bt_garbage(pg) != ps - bt_content(pg))
		problem(k, pgno, "page %u: its cells (%llu bytes) and holes (%u bytes) do not add up to its "
			"cell area (%u bytes)", pgno, (unsigned long long)bytes, bt_garbage(pg),
			ps - bt_content(pg));
out:
	free(sp);
	return ok;
}

/* Check the subtree at pgno: its keys must lie in [lo, hi) (NULL: open). */
static void check_node(chk *k, cf_pgno from, cf_pgno pgno, int depth, const uint8_t *lo,
		       uint32_t lolen, const uint8_t *hi, uint32_t hilen)
{
	cf_pageio *io = k->io;
	if (k->fatal)
		return;
	if (depth >= BT_MAX_DEPTH) {
		problem(k, from, "page %u has descendants more than %d levels down", from, BT_MAX_DEPTH);
		return;
	}
	if (!mark(k, from, pgno, depth ? "a child" : "the root"))
		return;
	const uint8_t *pg;
	void *pin;
	int rc = bt_read_node(io, pgno, &pg, &pin);
	if (rc) {
		page_error(k, pgno, rc);
		return;
	}
	unsigned n = bt_ncells(pg);
	int leaf = bt_is_leaf(pg);
	if (!check_cells(k, pgno, pg))
		goto out;
	if (n == 0 && depth > 0)
		problem(k, pgno, "page %u is an empty %s below the root", pgno, leaf ? "leaf" : "branch");

	/* key order within the node and against the bounds */
	const uint8_t *pk = lo;
	uint32_t pkl = lolen;
	for (unsigned i = 0; i < n; i++) {
		bt_cell c;
		if (bt_cell_at(io, pgno, pg, i, &c))
			goto out; /* reported by check_cells */
		if (pk) {
			int r = bt_cmp(pk, pkl, c.key, c.klen);
			if (i == 0 ? r > 0 : r >= 0) {
				if (i == 0)
					problem(k, pgno, "page %u: its first key is below the separator that "
						"leads to it", pgno);
				else
					problem(k, pgno, "page %u: the keys of cells %u and %u are out of order",
						pgno, i - 1, i);
				goto out;
			}
		}
		pk = c.key;
		pkl = c.klen;
	}
	if (n > 0 && hi && bt_cmp(pk, pkl, hi, hilen) >= 0) {
		problem(k, pgno, "page %u: its last key is not below the separator that follows it", pgno);
		goto out;
	}

	if (leaf) {
		if (k->leaf_depth < 0)
			k->leaf_depth = depth;
		else if (k->leaf_depth != depth)
			problem(k, pgno, "leaf page %u is at depth %d, other leaves at depth %d", pgno, depth,
				k->leaf_depth);
		k->nkeys += n;
		for (unsigned i = 0; i < n && !k->fatal; i++) {
			bt_cell c;
			if (bt_cell_at(io, pgno, pg, i, &c))
				break;
			if (c.ovfl)
				check_chain(k, pgno, i, c.ovfl, c.vlen);
			else if (c.vlen > 4 && c.size > bt_max_local(io->page_size))
				problem(k, pgno, "page %u: cell %u keeps a %llu-byte value inline", pgno, i,
					(unsigned long long)c.vlen);
		}
	} else {
		for (unsigned i = 0; i <= n && !k->fatal; i++) {
			bt_cell lc = {0}, hc = {0};
			cf_pgno child;
			if (bt_child_at(io, pgno, pg, i, &child))
				break;
			if (i > 0 && bt_cell_at(io, pgno, pg, i - 1, &lc))
				break;
			if (i < n && bt_cell_at(io, pgno, pg, i, &hc))
				break;
			check_node(k, pgno, child, depth + 1, i > 0 ? lc.key : lo, i > 0 ? lc.klen : lolen,
				   i < n ? hc.key : hi, i < n ? hc.klen : hilen);
		}
	}
out:
	io->ops->release(io, pin);
}

int cf_bt_check(cf_pageio *io, cf_pgno root, uint8_t *owned, cf_pgno npages, cf_bt_problem_fn fn,
		void *arg, uint64_t *nkeys)
{
	chk k = {.io = io, .owned = owned, .npages = npages, .fn = fn, .arg = arg, .leaf_depth = -1};
	check_node(&k, root, root, 0, NULL, 0, NULL, 0);
	if (nkeys)
		*nkeys = k.nkeys;
	if (k.fatal)
		return k.fatal;
	if (k.nproblems)
		return CF_ERROR(COFFER_E_PAGE_CORRUPT, CF_OBJ(.file = io->file, CF_PAGE(k.first_pgno)),
				"the B+tree rooted at page %u of \"%s\" has %llu problem%s; the first: %s", root,
				io->file ? io->file : "?", (unsigned long long)k.nproblems,
				k.nproblems == 1 ? "" : "s", k.first);
	return COFFER_OK;
}
