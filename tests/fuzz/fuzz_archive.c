/*
 * fuzz_archive.c - libFuzzer target: the backup-set reader
 * (src/backup/ar_read.c, archive.c, ar_check.c; format at the top of
 * archive.c). The input is written as a set file and verified the way
 * 'coffer verify' does it (src/cli/cmd_verify.c): open, the per-set rules,
 * every stored file read to its end through the content check (log headers,
 * the database header), then the manifest, the set rules and the content
 * check's comparison with the manifest; also the chain rules on the set
 * alone and on the set twice.
 *
 * Input:
 *   byte 0   flags
 *     bit 0  fix checksums: the archive header's, each record header's,
 *            each block's XXH3 (after zstd decompression for a compressed
 *            block), each END record's SHA-256 (over the file's blocks as
 *            stored before it), the manifest's XXH3 in the trailer and the
 *            trailer's own - so that mutations reach the bounds, order and
 *            content checks behind them
 *     bit 1  read the set as a stream (cf_archive_open_fd, as from a pipe:
 *            the manifest comes last) instead of by seeking (cf_archive_open)
 *   then the set file.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <coffer/error.h>

#include "backup/ar_int.h"
#include "engine/page.h"
#include "fuzz_util.h"

static uint8_t *raw; /* CF_AR_BLOCK_MAX */

static void fix_checksums(uint8_t *b, size_t n)
{
	static ar_sha *sha;
	if (sha == NULL && ar_sha_new(&sha) != COFFER_OK)
		fz_die("ar_sha_new");
	if (n < AR_HDR_SIZE || memcmp(b, "COFFERBK", 8) != 0)
		return;
	cf_put64(b + 16, XXH3_64bits(b, 16));
	size_t pos = AR_HDR_SIZE;
	uint32_t cur = UINT32_MAX;
	ar_sha_reset(sha);
	while (n - pos >= AR_REC_SIZE && ar_rec_has_magic(b + pos)) {
		uint8_t *h = b + pos, *pl = h + AR_REC_SIZE;
		uint32_t stored = cf_get32(h + 20), index = cf_get32(h + 8);
		if (stored > n - pos - AR_REC_SIZE)
			break;
		const uint8_t *data = pl;
		size_t dlen = stored;
		if (h[5] == AR_C_ZSTD && h[4] == AR_K_DATA) {
			size_t k = ZSTD_decompress(raw, CF_AR_BLOCK_MAX, pl, stored);
			if (ZSTD_isError(k)) {
				data = NULL;
			} else {
				data = raw;
				dlen = k;
			}
		}
		switch (h[4]) {
		case AR_K_FILE:
			cur = index;
			ar_sha_reset(sha);
			break;
		case AR_K_DATA:
			if (data && index == cur)
				ar_sha_update(sha, data, dlen);
			break;
		case AR_K_END:
			if (stored == AR_END_SIZE && index == cur)
				ar_sha_final(sha, pl + 16);
			break;
		default:
			break;
		}
		if (data)
			cf_put64(h + 24, XXH3_64bits(data, dlen));
		cf_put64(h + 32, XXH3_64bits(h, 32));
		pos += AR_REC_SIZE + stored;
	}
	/* The trailer: the last 40 bytes. */
	if (n >= AR_HDR_SIZE + AR_TRAILER_SIZE) {
		uint8_t *t = b + n - AR_TRAILER_SIZE;
		if (memcmp(t, "CFTRAILR", 8) != 0)
			return;
		uint64_t off = cf_get64(t + 8), len = cf_get64(t + 16);
		if (off <= n && n - off >= AR_REC_SIZE + AR_TRAILER_SIZE &&
		    len <= n - off - AR_REC_SIZE - AR_TRAILER_SIZE)
			cf_put64(t + 24, XXH3_64bits(b + off + AR_REC_SIZE, len));
		cf_put64(t + 32, XXH3_64bits(t, 32));
	}
}

static void verify(cf_archive_reader *r, const char *set)
{
	struct cf_content_check *cc = NULL;
	const char *name;
	int rc;
	const struct cf_set_manifest *m = cf_archive_manifest(r);
	if (cf_content_check_new(&cc, set) != COFFER_OK)
		return;
	if (m) {
		if (cf_set_check(m, set) != COFFER_OK)
			goto out;
		cf_content_check_expect(cc, m->meta.signature, m->meta.page_size);
	}
	while ((rc = cf_archive_next_file(r, &name)) == COFFER_OK) {
		uint64_t size = 0;
		const void *d;
		size_t n;
		(void)strlen(name);
		if (cf_content_check_begin(cc, name) != COFFER_OK)
			goto out;
		do {
			if (cf_archive_read(r, &d, &n) != COFFER_OK ||
			    cf_content_check_feed(cc, d, n) != COFFER_OK)
				goto out;
			size += n;
		} while (n);
		if (cf_content_check_end(cc, size) != COFFER_OK)
			goto out;
	}
	if (rc != COFFER_E_NOT_FOUND)
		goto out;
	m = cf_archive_manifest(r);
	if (m == NULL)
		fz_die("cf_archive_next_file reached the end but the manifest is unknown");
	if (cf_set_check(m, set) != COFFER_OK || cf_content_check_finish(cc, m) != COFFER_OK)
		goto out;
	const struct cf_set_manifest *chain[2] = {m, m};
	const char *names[2] = {set, set};
	(void)cf_set_chain_check(chain, names, 1);
	(void)cf_set_chain_check(chain, names, 2);
	/* Reading on after the end stays at the end. */
	(void)cf_archive_next_file(r, &name);
	(void)cf_archive_read_all(r);
	fz_debug("verified: %u files", m->nfiles);
out:
	fz_debug("end: %s", coffer_error_last()->message);
	cf_content_check_free(cc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[PATH_MAX];
	static uint8_t *copy;
	if (raw == NULL) {
		raw = malloc(CF_AR_BLOCK_MAX);
		copy = malloc(1 << 20);
		fz_path(path, fz_tmpdir(), "set.cbk");
	}
	if (size < 1 || size - 1 > (1u << 20))
		return 0;
	unsigned flags = data[0];
	size_t n = size - 1;
	memcpy(copy, data + 1, n);
	if (flags & 1)
		fix_checksums(copy, n);
	fz_write_file(path, copy, n);

	cf_archive_reader *r = NULL;
	int fd = -1;
	if (flags & 2) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			fz_die("open %s", path);
		if (cf_archive_open_fd(&r, fd, "fuzz-stream") != COFFER_OK)
			r = NULL;
	} else if (cf_archive_open(&r, path) != COFFER_OK) {
		r = NULL;
	}
	if (r == NULL)
		fz_debug("open: %s", coffer_error_last()->message);
	if (r) {
		(void)cf_archive_is_stream(r);
		(void)strlen(cf_archive_path(r));
		verify(r, flags & 2 ? "fuzz-stream" : path);
		(void)cf_archive_bytes_read(r);
		cf_archive_close(r);
	}
	if (fd >= 0)
		close(fd);
	unlink(path);
	coffer_error_clear();
	return 0;
}
