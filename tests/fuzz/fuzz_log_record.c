/*
 * fuzz_log_record.c - libFuzzer target: the log reader and the record
 * payload decoders (src/engine/log_read.c; formats in log_format.h, log.h).
 *
 * The input becomes one or two generation files in a directory that is read
 * with cf_log_reader_open/next to the end; every record returned goes
 * through the decoder of its type (page image, page diff with apply on a
 * page buffer, commit, checkpoint).
 *
 * Input:
 *   byte 0     flags
 *     bit 0    fix checksums: recompute the header checksum and the checksum
 *              of every record the reader would reach, so that mutations get
 *              past them to the length, type and payload checks
 *     bit 1    extend each file (sparse) to the size its header gives, at
 *              most 16 MiB, as real generation files are; else the file ends
 *              where the input does (a torn end)
 *     bit 2    open the reader with the first header's signature as the
 *              expected one (else NULL: learnt from the first file)
 *     bit 3    open at CF_LSN(first generation, 0) instead of 0
 *     bit 7    open at an offset inside the first generation's records
 *              (4096 + 8 * (length % 16)), or at the invalid offset 8 when
 *              the input length is a multiple of 17
 *     bits 4-6 page size for cf_log_page_diff_apply: 4096 << (n % 5)
 *   then a generation image: the first 64 header bytes, then the records
 *   (the file from offset 4096: the harness writes the 64 bytes, zeroes up
 *   to 4096, then the rest). A second "COFFERLG" at an offset >= 64 of the
 *   image starts the next generation's image. A file is named after the
 *   generation in its header (1 if that is 0; the next free number if it
 *   is taken).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include <coffer/error.h>

#include "engine/log.h"
#include "fuzz_util.h"

#define MAX_EXTEND (16u << 20)
#define MAX_RECORDS 100000

struct gen_image {
	const uint8_t *p; /* header bytes (64) then records */
	size_t n;
	uint32_t gen;
	char path[PATH_MAX];
};

/* Recompute the checksums in FILE (N bytes, the file as written) of
 * generation GEN, following the reader's rules (log_read.c R1). */
static void fix_checksums(uint8_t *file, size_t n, uint32_t gen, int extended)
{
	if (n < CF_LOG_HDR_USED)
		return;
	cf_put64(file + CF_LOG_H_CHECKSUM, XXH3_64bits(file, CF_LOG_H_CHECKSUM));
	uint64_t fsize = cf_get32(file + CF_LOG_H_FILESIZE);
	uint64_t size = n;
	if (extended && fsize > size && fsize <= MAX_EXTEND)
		size = fsize; /* the rest is zero: the walk ends at a zero length */
	if (fsize > size)
		fsize = size;
	for (uint64_t off = CF_LOG_HDR_SIZE; fsize >= off + CF_LOG_REC_HDR && off + CF_LOG_REC_HDR <= n;) {
		uint8_t *r = file + off;
		uint32_t len = cf_get32(r + CF_LOG_R_LEN);
		if (len < CF_LOG_REC_HDR || len > fsize - off || off + len > n)
			break;
		uint64_t sum = cf_log_rec_checksum(CF_LSN(gen, off), r, r + CF_LOG_REC_HDR,
						   len - CF_LOG_REC_HDR, NULL, 0);
		cf_put64(r + CF_LOG_R_CHECKSUM, sum);
		off += CF_LOG_ALIGN_UP(len);
	}
}

/* Write generation image G as a file in DIR. */
static void write_gen(const char *dir, struct gen_image *g, unsigned flags)
{
	char name[32];
	size_t hn = g->n < CF_LOG_HDR_USED ? g->n : CF_LOG_HDR_USED;
	size_t rn = g->n - hn;
	size_t n = rn ? CF_LOG_HDR_SIZE + rn : hn;
	uint8_t *file = calloc(1, n ? n : 1);
	if (file == NULL)
		fz_die("no memory");
	memcpy(file, g->p, hn);
	memcpy(file + CF_LOG_HDR_SIZE, g->p + hn, rn);
	if (flags & 1)
		fix_checksums(file, n, g->gen, flags & 2);
	snprintf(name, sizeof name, "%010u.log", g->gen);
	fz_path(g->path, dir, name);
	fz_write_file(g->path, file, n);
	uint32_t fsize = n >= CF_LOG_HDR_USED ? cf_get32(file + CF_LOG_H_FILESIZE) : 0;
	if ((flags & 2) && fsize > n && fsize <= MAX_EXTEND)
		fz_truncate(g->path, fsize);
	free(file);
}

static void decode(const cf_log_rec *rec, uint8_t *page, uint32_t page_size)
{
	cf_pgno pgno;
	const uint8_t *img;
	size_t img_len;
	uint32_t nranges, off, len;
	uint64_t txn;
	int64_t time_us;
	cf_lsn redo;
	size_t pos = 0;
	const uint8_t *bytes;
	volatile uint8_t sink = 0;

	(void)cf_log_type_name(rec->type);
	switch (rec->type) {
	case CF_LOG_PAGE_IMAGE:
		if (cf_log_decode_page_image(rec, &pgno, &img, &img_len) == COFFER_OK)
			sink ^= img[0] ^ img[img_len - 1];
		break;
	case CF_LOG_PAGE_DIFF:
		(void)cf_log_decode_page_diff(rec, 0, &pgno, &nranges);
		if (cf_log_decode_page_diff(rec, page_size, &pgno, &nranges) == COFFER_OK) {
			while (cf_log_page_diff_next(rec, &pos, &off, &len, &bytes))
				if (len)
					sink ^= bytes[0] ^ bytes[len - 1];
		}
		(void)cf_log_page_diff_apply(rec, page, page_size);
		break;
	case CF_LOG_COMMIT:
		(void)cf_log_decode_commit(rec, &txn, &time_us);
		break;
	case CF_LOG_CHECKPOINT:
		(void)cf_log_decode_checkpoint(rec, &redo);
		break;
	default:
		if (rec->len)
			sink ^= rec->payload[0] ^ rec->payload[rec->len - 1];
		break;
	}
	(void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *page;
	static char dir[PATH_MAX];
	if (page == NULL) {
		page = malloc(CF_PAGE_SIZE_MAX);
		fz_path(dir, fz_tmpdir(), "log");
		fz_mkdir(dir);
	}
	if (size < 1)
		return 0;
	unsigned flags = data[0];
	uint32_t page_size = 4096u << (((flags >> 4) & 7) % 5);
	const uint8_t *img = data + 1;
	size_t n = size - 1;

	/* Split into generation images at a second magic. */
	struct gen_image g[2];
	int ng = 1;
	memset(g, 0, sizeof g);
	g[0].p = img;
	g[0].n = n;
	if (n > CF_LOG_HDR_USED + 8) {
		const uint8_t *m = memmem(img + CF_LOG_HDR_USED, n - CF_LOG_HDR_USED, CF_LOG_MAGIC, 8);
		if (m) {
			g[0].n = (size_t)(m - img);
			g[1].p = m;
			g[1].n = n - g[0].n;
			ng = 2;
		}
	}
	for (int i = 0; i < ng; i++) {
		g[i].gen = g[i].n >= CF_LOG_HDR_USED ? cf_get32(g[i].p + CF_LOG_H_GEN) : 0;
		if (g[i].gen == 0)
			g[i].gen = 1;
		if (i == 1 && g[1].gen == g[0].gen)
			g[1].gen = g[0].gen == UINT32_MAX ? 1 : g[0].gen + 1;
		write_gen(dir, &g[i], flags);
	}

	uint8_t sig[16];
	const uint8_t *want_sig = NULL;
	if ((flags & 4) && g[0].n >= CF_LOG_H_SIG + 16) {
		memcpy(sig, g[0].p + CF_LOG_H_SIG, 16);
		want_sig = sig;
	}
	cf_lsn start = (flags & 8) ? CF_LSN(g[0].gen, 0) : 0;
	if (flags & 128) /* somewhere inside the records, or an invalid offset */
		start = CF_LSN(g[0].gen, n % 17 ? CF_LOG_HDR_SIZE + 8 * (n % 16) : 8);

	cf_log_reader *r;
	int rc = cf_log_reader_open(&r, dir, want_sig, start);
	if (rc != COFFER_OK)
		fz_debug("open: %s", coffer_error_last()->message);
	if (rc == COFFER_OK) {
		cf_log_rec rec;
		int i = 0;
		memset(page, 0xA5, page_size);
		while (i < MAX_RECORDS && (rc = cf_log_reader_next(r, &rec)) == COFFER_OK) {
			fz_debug("record %s at %u:%u, %zu bytes", cf_log_type_name(rec.type),
				 CF_LSN_GEN(rec.lsn), CF_LSN_OFF(rec.lsn), rec.len);
			decode(&rec, page, page_size);
			i++;
		}
		cf_lsn where;
		int torn = cf_log_reader_torn(r, &where);
		fz_debug("%d records; end: %s (torn %d)", i, coffer_error_last()->message, torn);
		(void)cf_log_reader_header(r);
		/* R4: a failure is sticky and must be reported the same way again. */
		(void)cf_log_reader_next(r, &rec);
		cf_log_reader_close(r);
	}
	uint32_t lo, hi;
	(void)cf_log_scan_dir(dir, &lo, &hi);
	for (int i = 0; i < ng; i++) {
		struct cf_log_file_header h;
		(void)cf_log_read_header(g[i].path, &h);
	}
	for (int i = 0; i < ng; i++)
		unlink(g[i].path);
	coffer_error_clear();
	return 0;
}
