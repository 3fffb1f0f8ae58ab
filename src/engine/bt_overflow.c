/*
 * bt_overflow.c - chains of overflow pages for large values.
 *
 * A value that does not fit in its leaf (bt_page.c, "LEAF CELL") is written
 * to ceil(vlen / (page_size - 28)) pages of type CF_PT_OVERFLOW, linked by
 * their next field (0 on the last). The leaf cell keeps the total length
 * and the first page. Every page read is checked: its type, its page
 * number, and that the chain is exactly as long as the length says (which
 * also stops a cycle).
 */
#include <stdlib.h>

#define CF_BT_INTERNAL
#include "engine/btree.h"

int bt_ovfl_write(cf_pageio *io, const uint8_t *val, uint64_t vlen, cf_pgno *first)
{
	uint32_t room = bt_ovfl_room(io->page_size);
	uint64_t npg = bt_ovfl_npages(io->page_size, vlen);
	uint8_t *prev = NULL;
	*first = CF_PGNO_NONE;
	for (uint64_t i = 0; i < npg; i++) {
		cf_pgno pgno;
		uint8_t *pg;
		CF_RET(io->ops->alloc(io, &pgno, &pg));
		pg[12] = CF_PT_OVERFLOW;
		pg[13] = 0;
		cf_put32(pg + BT_OVFL_NEXT, CF_PGNO_NONE);
		uint64_t off = i * room;
		uint64_t len = vlen - off < room ? vlen - off : room;
		memcpy(pg + BT_OVFL_DATA, val + off, (size_t)len);
		if (len < room)
			memset(pg + BT_OVFL_DATA + len, 0, (size_t)(room - len));
		if (prev)
			cf_put32(prev + BT_OVFL_NEXT, pgno);
		else
			*first = pgno;
		prev = pg;
	}
	return COFFER_OK;
}

/* Check overflow page pgno, number index of a chain of npg pages, and return
 * its successor (0 after the last). */
static int ovfl_page_check(cf_pageio *io, cf_pgno owner, cf_pgno pgno, const uint8_t *pg,
			   uint64_t index, uint64_t npg, cf_pgno *next)
{
	if (cf_page_type(pg) != CF_PT_OVERFLOW)
		return BT_CORRUPT(io, pgno, "page type %u where page %llu of the overflow chain of a value "
				  "in page %u was expected", cf_page_type(pg),
				  (unsigned long long)index + 1, owner);
	if (cf_page_pgno(pg) != pgno)
		return BT_CORRUPT(io, pgno, "it carries page number %u", cf_page_pgno(pg));
	cf_pgno nx = cf_get32(pg + BT_OVFL_NEXT);
	if (index + 1 == npg && nx != CF_PGNO_NONE)
		return BT_CORRUPT(io, pgno, "the last page of an overflow chain of %llu pages (value in page "
				  "%u) links to page %u", (unsigned long long)npg, owner, nx);
	if (index + 1 < npg && (nx < CF_PGNO_FIRST_FREE || nx == pgno))
		return BT_CORRUPT(io, pgno, "page %llu of an overflow chain of %llu pages (value in page %u) "
				  "links to page %u", (unsigned long long)index + 1, (unsigned long long)npg,
				  owner, nx);
	*next = nx;
	return COFFER_OK;
}

int bt_ovfl_read(cf_pageio *io, cf_pgno owner, cf_pgno first, uint64_t vlen, uint64_t off,
		 uint8_t *buf, size_t n, cf_pgno *hint_pgno, uint64_t *hint_index)
{
	uint32_t room = bt_ovfl_room(io->page_size);
	uint64_t npg = bt_ovfl_npages(io->page_size, vlen);
	if (off >= vlen || n == 0)
		return COFFER_OK;
	if (n > vlen - off)
		n = (size_t)(vlen - off);
	uint64_t target = off / room, index = 0;
	cf_pgno pgno = first;
	if (hint_pgno && *hint_pgno && *hint_index <= target) {
		pgno = *hint_pgno;
		index = *hint_index;
	}
	while (n > 0) {
		const uint8_t *pg;
		void *pin;
		cf_pgno next;
		CF_RET(io->ops->read(io, pgno, &pg, &pin));
		int rc = ovfl_page_check(io, owner, pgno, pg, index, npg, &next);
		if (rc) {
			io->ops->release(io, pin);
			return rc;
		}
		if (index >= target) {
			uint64_t s = off - index * room;
			size_t len = room - s < n ? (size_t)(room - s) : n;
			memcpy(buf, pg + BT_OVFL_DATA + s, len);
			buf += len;
			off += len;
			n -= len;
		}
		io->ops->release(io, pin);
		if (hint_pgno) {
			*hint_pgno = pgno;
			*hint_index = index;
		}
		pgno = next;
		index++;
	}
	return COFFER_OK;
}

int bt_ovfl_free(cf_pageio *io, cf_pgno owner, cf_pgno first, uint64_t vlen)
{
	uint64_t npg = bt_ovfl_npages(io->page_size, vlen);
	cf_pgno pgno = first;
	for (uint64_t i = 0; i < npg; i++) {
		const uint8_t *pg;
		void *pin;
		cf_pgno next;
		CF_RET(io->ops->read(io, pgno, &pg, &pin));
		int rc = ovfl_page_check(io, owner, pgno, pg, i, npg, &next);
		io->ops->release(io, pin);
		CF_RET(rc);
		CF_RET(io->ops->free(io, pgno));
		pgno = next;
	}
	return COFFER_OK;
}
