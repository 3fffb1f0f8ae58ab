/*
 * page.c - page checksums and verification (format in page.h).
 */
#include "common/err.h"
#include "common/xxh.h"
#include "engine/page.h"

void cf_page_init(uint8_t *pg, uint32_t page_size, cf_pgno pgno, uint8_t type)
{
	memset(pg, 0, page_size);
	cf_put32(pg + 8, pgno);
	pg[12] = type;
}

uint64_t cf_page_checksum(const uint8_t *pg, uint32_t page_size)
{
	uint64_t h = cf_xxh3_seed(pg + 8, page_size - 8, cf_get32(pg + 8));
	/* 0 marks a never-written page; a real checksum is never 0. */
	return h ? h : 1;
}

void cf_page_seal(uint8_t *pg, uint32_t page_size)
{
	cf_put64(pg, cf_page_checksum(pg, page_size));
}

enum cf_page_state cf_page_verify(const uint8_t *pg, uint32_t page_size, cf_pgno pgno)
{
	uint64_t stored = cf_get64(pg);
	if (stored == 0 && cf_all_zero(pg, page_size))
		return CF_PAGE_ZERO;
	if (stored != cf_page_checksum(pg, page_size))
		return CF_PAGE_BAD_CHECKSUM;
	if (cf_page_pgno(pg) != pgno)
		return CF_PAGE_BAD_PGNO;
	return CF_PAGE_OK;
}

int cf_page_error(enum cf_page_state st, const uint8_t *pg, uint32_t page_size, cf_pgno pgno,
		  const char *file)
{
	cf_obj o = {.file = file, CF_PAGE(pgno), CF_OFF((uint64_t)pgno * page_size)};
	switch (st) {
	case CF_PAGE_BAD_CHECKSUM:
		return CF_ERROR(COFFER_E_PAGE_CHECKSUM, &o,
				"page %u of \"%s\" failed its checksum: stored 0x%016llx, computed 0x%016llx",
				pgno, file, (unsigned long long)cf_get64(pg),
				(unsigned long long)cf_page_checksum(pg, page_size));
	case CF_PAGE_BAD_PGNO:
		return CF_ERROR(COFFER_E_PAGE_NUMBER, &o,
				"page %u of \"%s\" carries page number %u", pgno, file, cf_page_pgno(pg));
	case CF_PAGE_ZERO:
		return CF_ERROR(COFFER_E_PAGE_CORRUPT, &o,
				"page %u of \"%s\" was never written but is in use", pgno, file);
	case CF_PAGE_OK:
		break;
	}
	return CF_ERROR(COFFER_E_INTERNAL, &o, "cf_page_error called for a good page %u", pgno);
}
