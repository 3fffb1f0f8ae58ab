/*
 * btree.h - the B+tree: ordered byte-string keys to byte-string values.
 *
 * Files (module prefix bt_):
 *   bt_page.c      node format (documented at its top), cell parsing,
 *                  in-page insert/remove/defragment
 *   bt_tree.c      get, put, del, split, merge/redistribute, drop, count
 *   bt_cursor.c    cursors: first/last/seek/next/prev, values, streaming
 *   bt_overflow.c  overflow page chains for large values
 *   bt_check.c     structure check for 'coffer check'
 *
 * The tree reaches pages only through a cf_pageio (pageio.h): it never
 * touches the file or the cache. Several trees live in one file; a tree is
 * identified by its root page number. The root page number never changes
 * from cf_bt_create() to cf_bt_drop() (a root split moves the root's cells
 * into two new children, a root collapse copies its only child into it),
 * but the calls that could move it take a cf_pgno * so that a later version
 * may: callers store *root back after each call.
 *
 * Keys are 1..CF_BT_MAX_KEY bytes, ordered by memcmp() with a shorter key
 * before every longer key it is a prefix of. Values are 0..CF_BT_MAX_VALUE
 * bytes; a value whose leaf cell would not fit in a quarter of the page goes
 * to a chain of overflow pages (cf_bt_max_inline_value()).
 *
 * Errors: every call returns COFFER_OK or a catalog code and leaves the
 * detail record (err.h). Damaged pages give COFFER_E_PAGE_CORRUPT naming the
 * file and the page (or what cf_pageio returned: COFFER_E_PAGE_CHECKSUM,
 * COFFER_E_PAGE_NUMBER, COFFER_E_IO, COFFER_E_NOMEM...). The expected
 * outcomes COFFER_E_NOT_FOUND, COFFER_E_EXISTS, COFFER_E_KEY_TOO_LARGE,
 * COFFER_E_VALUE_TOO_LARGE and COFFER_E_INVALID_ARGUMENT change nothing.
 * Any other error from a call that changes the tree (put, del, drop,
 * cursor_del) may leave the tree half-changed in this transaction: the
 * transaction must then be rolled back (txn.c makes that failure sticky).
 *
 * Cursors: a cursor pins the pages of its current path (root to leaf) and
 * nothing else. A change to its tree through any other call (put, del, drop,
 * or another cursor's cf_bt_cursor_del) invalidates it: the only calls then
 * allowed are a repositioning (first, last, seek) and close. Its own
 * cf_bt_cursor_del keeps it valid.
 */
#ifndef COFFER_ENGINE_BTREE_H
#define COFFER_ENGINE_BTREE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/pageio.h"

/* Longest key, at every page size. Cells with a key this long take 1037
 * bytes with their slot: four fit in pages of 8 KiB and more, three in a
 * 4 KiB page (splits and merges need two; see bt_page.c). */
#define CF_BT_MAX_KEY 1024u
/* Longest value: its length is stored in 32 bits (4 GiB - 1). */
#define CF_BT_MAX_VALUE ((uint64_t)UINT32_MAX)

/* cf_bt_put flags */
#define CF_BT_NOOVERWRITE 0x1u /* fail with COFFER_E_EXISTS if the key is present */

typedef struct cf_bt_cursor cf_bt_cursor;

/* The largest value stored in the leaf itself for a key of klen bytes at
 * this page size (longer values go to overflow pages). */
uint64_t cf_bt_max_inline_value(uint32_t page_size, size_t klen);

/* Create an empty tree (one empty leaf page); *root receives its page. */
int cf_bt_create(cf_pageio *io, cf_pgno *root);

/* Copy of the value of key into a malloc'd buffer *val (caller frees; a
 * non-NULL 1-byte buffer for an empty value), its length in *vlen.
 * COFFER_E_NOT_FOUND if absent; COFFER_E_INVALID_ARGUMENT for an empty key,
 * COFFER_E_KEY_TOO_LARGE for one longer than CF_BT_MAX_KEY. */
int cf_bt_get(cf_pageio *io, cf_pgno root, const void *key, size_t klen, void **val, size_t *vlen);

/* Insert or replace. flags: CF_BT_NOOVERWRITE -> COFFER_E_EXISTS if present.
 * COFFER_E_INVALID_ARGUMENT (empty key), COFFER_E_KEY_TOO_LARGE,
 * COFFER_E_VALUE_TOO_LARGE (the message names the limit). */
int cf_bt_put(cf_pageio *io, cf_pgno *root, const void *key, size_t klen, const void *val,
	      size_t vlen, unsigned flags);

/* Delete key; COFFER_E_NOT_FOUND if absent. Empty nodes are freed, nodes
 * under a quarter full are merged with or refilled from a sibling. */
int cf_bt_del(cf_pageio *io, cf_pgno *root, const void *key, size_t klen);

/* Free every page of the tree, its root and overflow chains included. */
int cf_bt_drop(cf_pageio *io, cf_pgno root);

/* Number of keys (reads every leaf). */
int cf_bt_count(cf_pageio *io, cf_pgno root, uint64_t *n);

/* Cursors, in a read or a write transaction (see the top of this file).
 * Positioning calls return COFFER_E_NOT_FOUND when there is no such item;
 * the cursor is then at no item and key/value calls return
 * COFFER_E_NOT_FOUND too. */
int cf_bt_cursor_open(cf_pageio *io, cf_pgno root, cf_bt_cursor **out);
int cf_bt_cursor_first(cf_bt_cursor *c);
int cf_bt_cursor_last(cf_bt_cursor *c);
/* First key >= key (klen may be 0: the first key; any length is allowed). */
int cf_bt_cursor_seek(cf_bt_cursor *c, const void *key, size_t klen);
int cf_bt_cursor_next(cf_bt_cursor *c);
int cf_bt_cursor_prev(cf_bt_cursor *c);
/* Key and value of the current item, valid until the cursor moves or closes.
 * Inline values point into the page; overflow values are read whole into a
 * cursor-owned buffer (use value_read to stream them instead). */
int cf_bt_cursor_key(cf_bt_cursor *c, const void **key, size_t *klen);
int cf_bt_cursor_value(cf_bt_cursor *c, const void **val, size_t *vlen);
int cf_bt_cursor_value_size(cf_bt_cursor *c, uint64_t *vlen);
/* Copy up to n bytes of the value from offset off into buf; *got is the
 * count copied (0 at or past the end). Reading an overflow value in order
 * costs one page read per page. */
int cf_bt_cursor_value_read(cf_bt_cursor *c, uint64_t off, void *buf, size_t n, size_t *got);
/* Delete the current item; the cursor moves to the item that followed it.
 * COFFER_OK, or COFFER_E_NOT_FOUND when the deleted item was the last (it
 * was deleted all the same). */
int cf_bt_cursor_del(cf_bt_cursor *c);
void cf_bt_cursor_close(cf_bt_cursor *c);

/* Structure check: walk the whole tree; verify the node format, key order
 * within nodes and against the separators above them, equal depth of all
 * leaves, overflow chains (type, length), and mark every page the tree owns
 * in owned (bit pgno % 8 of byte pgno / 8, npages bits). A page already
 * marked, or a page number outside [3, npages), is a problem. Each problem
 * goes to fn(arg, pgno, sentence) and the walk goes on where it can.
 * *nkeys (may be NULL) receives the number of keys found. Returns COFFER_OK,
 * COFFER_E_PAGE_CORRUPT if any problem was found, or an error that stopped
 * the walk (COFFER_E_NOMEM, COFFER_E_IO...). */
typedef void (*cf_bt_problem_fn)(void *arg, cf_pgno pgno, const char *what);
int cf_bt_check(cf_pageio *io, cf_pgno root, uint8_t *owned, cf_pgno npages, cf_bt_problem_fn fn,
		void *arg, uint64_t *nkeys);

/* ------------------------------------------------------------------------
 * Module-internal: shared by the bt_*.c files only (they define
 * CF_BT_INTERNAL before including this header). Format in bt_page.c.
 */
#ifdef CF_BT_INTERNAL

#include <stdarg.h>

#include "common/err.h"

/* node header, after the 24-byte page header */
#define BT_NCELLS 24   /* u16 number of cells */
#define BT_CONTENT 26  /* u16 start of the cell area; 0 means 65536 */
#define BT_GARBAGE 28  /* u16 bytes of holes inside the cell area */
#define BT_RESERVED 30 /* u16 zero */
#define BT_LEFTMOST 32 /* u32 branch: leftmost child; leaf: zero */
#define BT_SLOTS 36    /* u16 cell offsets, in key order */

#define BT_OVFL_NEXT 24 /* u32 next overflow page, 0 on the last */
#define BT_OVFL_DATA 28

#define BT_MAX_DEPTH 48 /* deeper is a cycle or damage */
#define BT_MAX_HDR 12   /* longest cell header we build */
#define BT_OVFL_CELL_TAIL 4

/* Space for slots and cells in a node. */
static inline uint32_t bt_usable(uint32_t ps) { return ps - BT_SLOTS; }
/* Largest leaf cell kept whole in the leaf (a quarter page, slot included). */
static inline uint32_t bt_max_local(uint32_t ps) { return bt_usable(ps) / 4 - 2; }
static inline uint32_t bt_ovfl_room(uint32_t ps) { return ps - BT_OVFL_DATA; }
static inline uint64_t bt_ovfl_npages(uint32_t ps, uint64_t vlen)
{
	return (vlen + bt_ovfl_room(ps) - 1) / bt_ovfl_room(ps);
}

static inline unsigned bt_ncells(const uint8_t *pg) { return cf_get16(pg + BT_NCELLS); }
static inline uint32_t bt_content(const uint8_t *pg)
{
	uint32_t c = cf_get16(pg + BT_CONTENT);
	return c ? c : 65536u;
}
static inline unsigned bt_garbage(const uint8_t *pg) { return cf_get16(pg + BT_GARBAGE); }
static inline cf_pgno bt_leftmost(const uint8_t *pg) { return cf_get32(pg + BT_LEFTMOST); }
static inline unsigned bt_slot(const uint8_t *pg, unsigned i) { return cf_get16(pg + BT_SLOTS + 2 * i); }
static inline int bt_is_leaf(const uint8_t *pg) { return cf_page_type(pg) == CF_PT_LEAF; }

/* Free bytes of a node (the gap between slots and cells plus the holes). */
static inline uint32_t bt_free(const uint8_t *pg)
{
	return bt_content(pg) - (BT_SLOTS + 2 * bt_ncells(pg)) + bt_garbage(pg);
}
/* Bytes used by slots and cells. */
static inline uint32_t bt_used(const uint8_t *pg, uint32_t ps) { return bt_usable(ps) - bt_free(pg); }

/* LEB128 varints, at most 5 bytes (values < 2^35). */
static inline unsigned bt_varint_len(uint64_t v)
{
	unsigned n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}
static inline unsigned bt_varint_put(uint8_t *p, uint64_t v)
{
	unsigned n = 0;
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}
/* Bytes read, or 0 if the varint is longer than 5 bytes or runs past end. */
static inline unsigned bt_varint_get(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
	if (p < end && p[0] < 0x80) {
		*v = p[0];
		return 1;
	}
	uint64_t x = 0;
	for (unsigned i = 0; i < 5 && p + i < end; i++) {
		x |= (uint64_t)(p[i] & 0x7f) << (7 * i);
		if (!(p[i] & 0x80)) {
			*v = x;
			return i + 1;
		}
	}
	return 0;
}

static inline int bt_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
	int r = memcmp(a, b, al < bl ? al : bl);
	if (r)
		return r;
	return (al > bl) - (al < bl);
}

/* A parsed cell. */
typedef struct bt_cell {
	const uint8_t *key;
	uint32_t klen;
	uint32_t size;      /* bytes of the cell */
	uint64_t vlen;      /* leaf: value length */
	const uint8_t *val; /* leaf: inline value, NULL if in overflow pages */
	cf_pgno ovfl;       /* leaf: first overflow page, 0 if inline */
	cf_pgno child;      /* branch: child page */
} bt_cell;

/* A cell being built: header, key and tail (value or pgno) in pieces. */
typedef struct bt_src {
	uint8_t hdr[BT_MAX_HDR];
	uint32_t hlen;
	const uint8_t *key;
	uint32_t klen;
	const uint8_t *tail;
	uint32_t tlen;
	uint8_t tbuf[4];
} bt_src;
static inline uint32_t bt_src_size(const bt_src *s) { return s->hlen + s->klen + s->tlen; }

/* A raw cell in a list (split, merge, redistribution). */
typedef struct bt_ref {
	const uint8_t *p;
	uint32_t len;
} bt_ref;

/* Tree path from the root (level 0) down to a leaf: the child index taken
 * in each branch, the cell index in the leaf. */
typedef struct bt_path {
	unsigned depth;
	struct {
		cf_pgno pgno;
		unsigned idx;
	} lv[BT_MAX_DEPTH];
} bt_path;

int bt_corrupt_at(const char *func, int line, cf_pageio *io, cf_pgno pgno, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
#define BT_CORRUPT(io, pgno, ...) bt_corrupt_at(__func__, __LINE__, (io), (pgno), __VA_ARGS__)

/* bt_page.c */
int bt_node_check(cf_pageio *io, cf_pgno pgno, const uint8_t *pg);
int bt_read_node(cf_pageio *io, cf_pgno pgno, const uint8_t **pg, void **pin);
int bt_write_node(cf_pageio *io, cf_pgno pgno, uint8_t **pg);
int bt_cell_at(cf_pageio *io, cf_pgno pgno, const uint8_t *pg, unsigned i, bt_cell *c);
int bt_key_at(cf_pageio *io, cf_pgno pgno, const uint8_t *pg, unsigned i, const uint8_t **key,
	      uint32_t *klen);
int bt_child_at(cf_pageio *io, cf_pgno pgno, const uint8_t *pg, unsigned idx, cf_pgno *child);
int bt_search(cf_pageio *io, cf_pgno pgno, const uint8_t *pg, const uint8_t *key, size_t klen,
	      unsigned *idx, int *exact);
int bt_leaf_order_near(cf_pageio *io, cf_pgno pgno, const uint8_t *pg, unsigned idx);
int bt_raw_key(const uint8_t *cell, uint32_t len, int leaf, const uint8_t **key, uint32_t *klen);
void bt_src_leaf(bt_src *s, uint32_t ps, const uint8_t *key, uint32_t klen, const uint8_t *val,
		 uint64_t vlen, cf_pgno ovfl);
void bt_src_branch(bt_src *s, cf_pgno child, const uint8_t *key, uint32_t klen);
void bt_src_write(uint8_t *dst, const bt_src *s);
void bt_node_init(uint8_t *pg, uint32_t ps, uint8_t type, cf_pgno leftmost);
int bt_node_insert(cf_pageio *io, cf_pgno pgno, uint8_t *pg, unsigned idx, const bt_src *s);
int bt_node_remove(cf_pageio *io, cf_pgno pgno, uint8_t *pg, unsigned idx);
int bt_node_defrag(cf_pageio *io, cf_pgno pgno, uint8_t *pg);
int bt_node_cells(cf_pageio *io, cf_pgno pgno, const uint8_t *pg, bt_ref *out);
int bt_node_build(cf_pageio *io, cf_pgno pgno, uint8_t *pg, uint8_t type, cf_pgno leftmost,
		  const bt_ref *cells, unsigned n);

/* bt_overflow.c */
int bt_ovfl_write(cf_pageio *io, const uint8_t *val, uint64_t vlen, cf_pgno *first);
int bt_ovfl_read(cf_pageio *io, cf_pgno owner, cf_pgno first, uint64_t vlen, uint64_t off,
		 uint8_t *buf, size_t n, cf_pgno *hint_pgno, uint64_t *hint_index);
int bt_ovfl_free(cf_pageio *io, cf_pgno owner, cf_pgno first, uint64_t vlen);

/* bt_tree.c */
int bt_descend(cf_pageio *io, cf_pgno root, const uint8_t *key, size_t klen, bt_path *path,
	       const uint8_t **leaf, void **pin, int *exact);

#endif /* CF_BT_INTERNAL */
#endif
