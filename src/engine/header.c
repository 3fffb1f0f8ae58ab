/*
 * header.c - the two copies of the database header (format in header.h).
 */
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/os.h"
#include "engine/header.h"

static const char MAGIC[8] = {'C', 'O', 'F', 'F', 'E', 'R', 'D', 'B'};

const char *cf_db_state_name(uint32_t state)
{
	switch (state) {
	case CF_DB_CLEAN:
		return "clean shutdown";
	case CF_DB_DIRTY:
		return "dirty (open or crashed)";
	case CF_DB_NEEDS_RECOVERY:
		return "restored, needs hard recovery";
	default:
		return "unknown";
	}
}

const char *cf_backup_type_name(uint32_t type)
{
	switch (type) {
	case CF_BK_FULL:
		return "full";
	case CF_BK_INCREMENTAL:
		return "incremental";
	case CF_BK_DIFFERENTIAL:
		return "differential";
	case CF_BK_COPY:
		return "copy";
	default:
		return "unknown";
	}
}

void cf_header_encode_history(const struct cf_header *h, uint8_t out[CF_HISTORY_SIZE])
{
	for (int i = 0; i < 3; i++) {
		uint8_t *b = out + 64 * i;
		const struct cf_backup_info *bi = &h->last[i];
		memset(b, 0, 64);
		cf_put32(b, bi->type);
		cf_put32(b + 4, bi->valid);
		memcpy(b + 8, bi->id, 16);
		cf_put32(b + 24, bi->gen_lo);
		cf_put32(b + 28, bi->gen_hi);
		cf_put64(b + 32, (uint64_t)bi->start_us);
		cf_put64(b + 40, (uint64_t)bi->end_us);
		cf_put64(b + 48, bi->end_lsn);
	}
}

void cf_header_decode_history(struct cf_header *h, const uint8_t in[CF_HISTORY_SIZE])
{
	for (int i = 0; i < 3; i++) {
		const uint8_t *b = in + 64 * i;
		struct cf_backup_info *bi = &h->last[i];
		bi->type = cf_get32(b);
		bi->valid = cf_get32(b + 4);
		memcpy(bi->id, b + 8, 16);
		bi->gen_lo = cf_get32(b + 24);
		bi->gen_hi = cf_get32(b + 28);
		bi->start_us = (int64_t)cf_get64(b + 32);
		bi->end_us = (int64_t)cf_get64(b + 40);
		bi->end_lsn = cf_get64(b + 48);
	}
}

void cf_header_encode(const struct cf_header *h, uint8_t *pg, cf_pgno which)
{
	cf_page_init(pg, h->page_size, which, CF_PT_HEADER);
	memcpy(pg + 24, MAGIC, 8);
	cf_put32(pg + 32, h->version);
	cf_put32(pg + 36, h->page_size);
	memcpy(pg + 40, h->signature, 16);
	cf_put64(pg + 56, (uint64_t)h->created_us);
	cf_put64(pg + 64, h->counter);
	cf_put32(pg + 72, h->state);
	cf_put64(pg + 80, h->redo_lsn);
	cf_put64(pg + 88, h->clean_end_lsn);
	cf_put32(pg + 96, h->min_gen);
	cf_header_encode_history(h, pg + 104);
	cf_page_seal(pg, h->page_size);
}

int cf_header_decode(const uint8_t *pg, uint32_t page_size, cf_pgno which, const char *path,
		     struct cf_header *h)
{
	enum cf_page_state st = cf_page_verify(pg, page_size, which);
	if (st != CF_PAGE_OK) {
		if (st == CF_PAGE_ZERO)
			return CF_ERROR(COFFER_E_HEADER_CORRUPT, CF_OBJ(.file = path, CF_PAGE(which)),
					"header copy %c of \"%s\" is all zeroes", which ? 'B' : 'A', path);
		return cf_page_error(st, pg, page_size, which, path);
	}
	if (memcmp(pg + 24, MAGIC, 8) != 0 || cf_page_type(pg) != CF_PT_HEADER)
		return CF_ERROR(COFFER_E_VERSION, CF_OBJ(.file = path, CF_PAGE(which)),
				"\"%s\" is not a Coffer database file (no COFFERDB magic in header copy %c)",
				path, which ? 'B' : 'A');
	memset(h, 0, sizeof *h);
	h->version = cf_get32(pg + 32);
	h->page_size = cf_get32(pg + 36);
	if (h->version != CF_HEADER_VERSION)
		return CF_ERROR(COFFER_E_VERSION, CF_OBJ(.file = path, CF_PAGE(which)),
				"\"%s\" has database format version %u; this Coffer reads version %u",
				path, h->version, CF_HEADER_VERSION);
	if (h->page_size != page_size)
		return CF_ERROR(COFFER_E_HEADER_CORRUPT, CF_OBJ(.file = path, CF_PAGE(which)),
				"header copy %c of \"%s\" names page size %u but was read as %u",
				which ? 'B' : 'A', path, h->page_size, page_size);
	memcpy(h->signature, pg + 40, 16);
	h->created_us = (int64_t)cf_get64(pg + 56);
	h->counter = cf_get64(pg + 64);
	h->state = cf_get32(pg + 72);
	h->redo_lsn = cf_get64(pg + 80);
	h->clean_end_lsn = cf_get64(pg + 88);
	h->min_gen = cf_get32(pg + 96);
	cf_header_decode_history(h, pg + 104);
	if (h->state < CF_DB_CLEAN || h->state > CF_DB_NEEDS_RECOVERY)
		return CF_ERROR(COFFER_E_HEADER_CORRUPT, CF_OBJ(.file = path, CF_PAGE(which)),
				"header copy %c of \"%s\" has an unknown state %u", which ? 'B' : 'A',
				path, h->state);
	return COFFER_OK;
}

static int valid_page_size(uint32_t ps)
{
	return ps >= CF_PAGE_SIZE_MIN && ps <= CF_PAGE_SIZE_MAX && (ps & (ps - 1)) == 0;
}

/* Try to read copy WHICH at page size PS. */
static int read_copy(int fd, const char *path, uint32_t ps, cf_pgno which, uint8_t *buf,
		     struct cf_header *h)
{
	CF_RET(cf_pread_full(fd, path, buf, ps, (uint64_t)which * ps));
	return cf_header_decode(buf, ps, which, path, h);
}

int cf_header_read(int fd, const char *path, struct cf_header *h, unsigned *damaged)
{
	uint8_t *buf = aligned_alloc(4096, CF_PAGE_SIZE_MAX);
	if (buf == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory to read the header of \"%s\"", path);
	struct cf_header a, b;
	int rca, rcb = COFFER_E_HEADER_CORRUPT, rc;
	char why_a[sizeof(((coffer_error *)0)->message)] = "", why_b[sizeof why_a] = "";
	*damaged = 0;

	/* Copy A tells the page size; if A is damaged, look for B at each size. */
	uint32_t ps = 0;
	rca = cf_pread_full(fd, path, buf, CF_PAGE_SIZE_MIN, 0);
	if (rca == COFFER_OK) {
		uint32_t cand = cf_get32(buf + 36);
		if (memcmp(buf + 24, MAGIC, 8) == 0 && valid_page_size(cand))
			ps = cand;
	}
	if (rca == COFFER_E_SHORT_READ) {
		rc = CF_ERROR(COFFER_E_HEADER_CORRUPT, CF_OBJ(.file = path),
			      "\"%s\" is too short to hold a database header", path);
		goto out;
	}
	if (rca != COFFER_OK) {
		rc = rca;
		goto out;
	}
	if (ps) {
		rca = read_copy(fd, path, ps, CF_PGNO_HEADER_A, buf, &a);
		if (rca)
			snprintf(why_a, sizeof why_a, "%s", coffer_error_last()->message);
		rcb = read_copy(fd, path, ps, CF_PGNO_HEADER_B, buf, &b);
		if (rcb)
			snprintf(why_b, sizeof why_b, "%s", coffer_error_last()->message);
	} else {
		rca = COFFER_E_HEADER_CORRUPT;
		snprintf(why_a, sizeof why_a, "copy A has no valid magic and page size");
		for (uint32_t cand = CF_PAGE_SIZE_MIN; cand <= CF_PAGE_SIZE_MAX; cand *= 2) {
			rcb = read_copy(fd, path, cand, CF_PGNO_HEADER_B, buf, &b);
			if (rcb == COFFER_OK)
				break;
			if (rcb == COFFER_E_VERSION && coffer_error_last()->message[0] &&
			    strstr(coffer_error_last()->message, "format version"))
				break;
		}
		if (rcb)
			snprintf(why_b, sizeof why_b, "copy B not found at any page size");
	}
	if (rca == COFFER_E_VERSION && strstr(why_a, "format version")) {
		rc = CF_ERROR(COFFER_E_VERSION, CF_OBJ(.file = path, CF_PAGE(0)), "%s", why_a);
		goto out;
	}
	if (rca && rcb) {
		if (rca == COFFER_E_VERSION && rcb == COFFER_E_VERSION) {
			rc = CF_ERROR(COFFER_E_VERSION, CF_OBJ(.file = path), "%s", why_a);
			goto out;
		}
		rc = CF_ERROR(COFFER_E_HEADER_CORRUPT, CF_OBJ(.file = path),
			      "both header copies of \"%s\" are damaged: A: %s; B: %s", path, why_a,
			      why_b);
		goto out;
	}
	if (rca)
		*damaged |= CF_HEADER_A_DAMAGED;
	if (rcb)
		*damaged |= CF_HEADER_B_DAMAGED;
	if (rca == COFFER_OK && rcb == COFFER_OK) {
		if (memcmp(a.signature, b.signature, 16) != 0) {
			/* Two valid copies of different databases: trust neither. */
			rc = CF_ERROR(COFFER_E_SIGNATURE_MISMATCH, CF_OBJ(.file = path),
				      "the two header copies of \"%s\" carry different database signatures",
				      path);
			goto out;
		}
		*h = a.counter >= b.counter ? a : b;
	} else {
		*h = rca == COFFER_OK ? a : b;
	}
	coffer_error_clear();
	rc = COFFER_OK;
out:
	free(buf);
	return rc;
}

int cf_header_write(int fd, const char *path, struct cf_header *h)
{
	uint8_t *buf = aligned_alloc(4096, h->page_size);
	if (buf == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory to write the header of \"%s\"", path);
	int rc;
	h->counter++;
	cf_header_encode(h, buf, CF_PGNO_HEADER_A);
	CF_GO(rc, cf_pwrite_full(fd, path, buf, h->page_size, 0));
	CF_GO(rc, cf_fdatasync(fd, path));
	cf_header_encode(h, buf, CF_PGNO_HEADER_B);
	CF_GO(rc, cf_pwrite_full(fd, path, buf, h->page_size, h->page_size));
	CF_GO(rc, cf_fdatasync(fd, path));
err:
	free(buf);
	return rc;
}
