/*
 * page.h - the common page format of the database file.
 *
 * The database file DIR/coffer.db is an array of fixed-size pages (page_size,
 * a power of two from 4 KiB to 64 KiB, chosen at creation, 8 KiB default).
 * Page n lives at byte offset n * page_size. Every page starts with this
 * 24-byte header (little-endian):
 *
 *   off size field
 *     0    8 checksum  XXH3-64 of bytes [8, page_size), seed = page number.
 *                      Computed when the page is written to the file and
 *                      verified on every read from the file.
 *     8    4 pgno      the page's own number (catches misdirected writes)
 *    12    1 type      CF_PT_* below
 *    13    1 flags     type-specific
 *    14    2 reserved  zero
 *    16    8 lsn       log position of the commit that last changed the page
 *                      (its version; see docs/design.md, "Versions")
 *    24      type-specific body
 *
 * A page that was never written is all zeroes (checksum 0 included) and is
 * recognized as such: cf_page_verify() reports CF_PAGE_ZERO, never a checksum
 * error. Pages 0 and 1 hold the two copies of the database header
 * (src/engine/header.c); page 2 is the meta page (catalog root, free list,
 * page count); tree, overflow and free-list pages follow.
 */
#ifndef COFFER_ENGINE_PAGE_H
#define COFFER_ENGINE_PAGE_H

#include <stdint.h>
#include <string.h>

typedef uint64_t cf_lsn; /* log position: generation << 32 | byte offset */
typedef uint32_t cf_pgno;

#define CF_LSN(gen, off) (((uint64_t)(gen) << 32) | (uint32_t)(off))
#define CF_LSN_GEN(l) ((uint32_t)((l) >> 32))
#define CF_LSN_OFF(l) ((uint32_t)(l))
#define CF_LSN_MAX UINT64_MAX

#define CF_PAGE_HDR 24
#define CF_PAGE_SIZE_MIN 4096u
#define CF_PAGE_SIZE_MAX 65536u
#define CF_PAGE_SIZE_DEFAULT 8192u

#define CF_PGNO_HEADER_A 0u
#define CF_PGNO_HEADER_B 1u
#define CF_PGNO_META 2u
#define CF_PGNO_FIRST_FREE 3u /* first page a tree may use */
#define CF_PGNO_NONE 0u        /* "no page" in links: page 0 is never a link target */

enum cf_page_type {
	CF_PT_ZERO = 0,     /* never written */
	CF_PT_HEADER = 1,   /* database header copy (pages 0 and 1) */
	CF_PT_META = 2,     /* meta page (page 2) */
	CF_PT_LEAF = 3,     /* B+tree leaf */
	CF_PT_BRANCH = 4,   /* B+tree branch (interior) */
	CF_PT_OVERFLOW = 5, /* part of a large value */
	CF_PT_FREELIST = 6, /* free-list trunk */
	CF_PT_FREE = 7,     /* a free page (content meaningless) */
};

static inline uint16_t cf_get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t cf_get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t cf_get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline void cf_put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void cf_put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void cf_put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
/* (Coffer is little-endian only; meson.build refuses big-endian hosts.) */

/* Whether all N bytes at P are zero (memcmp of P against P+1: libc's
 * vectorized compare, no table of zeroes). */
static inline int cf_all_zero(const void *p, size_t n)
{
	const uint8_t *b = p;
	return n == 0 || (b[0] == 0 && memcmp(b, b + 1, n - 1) == 0);
}

static inline cf_pgno cf_page_pgno(const uint8_t *pg) { return cf_get32(pg + 8); }
static inline uint8_t cf_page_type(const uint8_t *pg) { return pg[12]; }
static inline uint8_t cf_page_flags(const uint8_t *pg) { return pg[13]; }
static inline cf_lsn cf_page_lsn(const uint8_t *pg) { return cf_get64(pg + 16); }
static inline void cf_page_set_lsn(uint8_t *pg, cf_lsn l) { cf_put64(pg + 16, l); }

/* Start a fresh page: zero it and fill in pgno and type (lsn 0). */
void cf_page_init(uint8_t *pg, uint32_t page_size, cf_pgno pgno, uint8_t type);

/* Compute and store the checksum (just before writing to the file). */
void cf_page_seal(uint8_t *pg, uint32_t page_size);
uint64_t cf_page_checksum(const uint8_t *pg, uint32_t page_size);

enum cf_page_state { CF_PAGE_OK = 0, CF_PAGE_ZERO = 1, CF_PAGE_BAD_CHECKSUM = 2, CF_PAGE_BAD_PGNO = 3 };

/* Classify a page just read from position pgno of the file. */
enum cf_page_state cf_page_verify(const uint8_t *pg, uint32_t page_size, cf_pgno pgno);

/* Raise the catalog error for a page that cf_page_verify() rejected, naming
 * the file, the page and (for checksums) the expected and found values. */
int cf_page_error(enum cf_page_state st, const uint8_t *pg, uint32_t page_size, cf_pgno pgno,
		  const char *file);

#endif
