/*
 * archive.c - the backup set format: archive header, records, manifest,
 * trailer, and the names a set may hold.
 *
 * All integers are little-endian. XXH3 is XXH3-64 (seed 0).
 *
 * ONE FILE (streamable: written front to back, never seeks back)
 *
 *   archive header (24)      kind 1 (stream)
 *   for each stored file, in set order:
 *     FILE record            payload: the name
 *     DATA record ...        payload: one block of the file, 1 B..1 MiB raw
 *     END record             payload: size, block count, SHA-256
 *   MANIFEST record          payload: the manifest
 *   trailer (40)
 *
 * DIRECTORY (--format dir)
 *
 *   DIR/coffer.db.blocks            archive header (kind 2), then the FILE,
 *   DIR/log/NNNNNNNNNN.log.blocks   DATA... and END records of that file
 *   DIR/MANIFEST                    archive header (kind 3), the MANIFEST
 *                                   record, the trailer (offsets are in
 *                                   this file)
 *
 * Archive header (24 bytes)
 *    0  8  magic "COFFERBK"
 *    8  4  format version (1)
 *   12  4  kind: 1 stream archive, 2 block file, 3 manifest file
 *   16  8  XXH3 of bytes 0..15
 *
 * Record header (40 bytes), followed by stored_len payload bytes
 *    0  4  magic "CFRC"
 *    4  1  kind: 1 FILE, 2 DATA, 3 END, 4 MANIFEST
 *    5  1  compression: 0 none, 1 zstd (one zstd frame; DATA only)
 *    6  2  reserved, 0
 *    8  4  file index in the set (0-based; MANIFEST: 0xFFFFFFFF)
 *   12  4  block number within the file (DATA; else 0)
 *   16  4  raw length: payload bytes uncompressed
 *   20  4  stored length: payload bytes that follow
 *   24  8  XXH3 of the raw (uncompressed) payload
 *   32  8  XXH3 of bytes 0..31 of this header
 *   Bounds, checked before anything is read or allocated:
 *     FILE      1 <= raw = stored <= 255, compression 0
 *     DATA      1 <= raw <= 1 MiB; stored = raw uncompressed, else
 *               1 <= stored <= ZSTD_compressBound(1 MiB)
 *     END       raw = stored = 48, compression 0
 *     MANIFEST  120 <= raw = stored <= 32 MiB, compression 0
 *   A block whose zstd output would not be smaller is stored uncompressed.
 *
 * END payload (48 bytes)
 *    0  8  file size in bytes     8  8  block count    16 32  SHA-256 of the file
 *
 * Manifest payload
 *    0  8  magic "CFMANIFS"      8  4  manifest version (1)
 *   12  4  type: 1 full, 2 incremental, 3 differential, 4 copy
 *   16 16  set id                32 16  parent set id (zero for full/copy)
 *   48 16  database signature    64  4  page size
 *   68  4  first log generation  72  4  last log generation
 *   76  4  file count N (<= 262144)
 *   80  8  redo LSN (generation << 32 | offset; where replay starts)
 *   88  8  start time (µs)       96  8  end time (µs)
 *  104  8  total bytes of the files
 *  112  2  host name length H (<= 255)   114  2  version length V (<= 63)
 *  116  4  reserved, 0
 *  120  H  host name, then V bytes of coffer version (printable ASCII)
 *       then N entries: u16 name length L (<= 255), L bytes of name,
 *       u64 size, u64 block count, 32 bytes SHA-256
 *   The payload must be consumed exactly.
 *
 * Trailer (40 bytes, the last bytes of the archive / of MANIFEST)
 *    0  8  magic "CFTRAILR"
 *    8  8  offset of the MANIFEST record (from the start of its file)
 *   16  8  manifest payload length
 *   24  8  XXH3 of the manifest payload
 *   32  8  XXH3 of bytes 0..31
 *   A file ends exactly after it: offset + 40 + length + 40 = file size.
 *
 * Names (cf_archive_name_check): "coffer.db" or "log/NNNNNNNNNN.log";
 * checked when written, when read from a FILE record and in the manifest,
 * before anything of the file is returned or laid down.
 *
 * Truncation shows as a missing trailer (a file read by seeking), or as the
 * end of input inside a record or before the trailer (a stream):
 * COFFER_E_ARCHIVE_TRUNCATED. Anything that fails a checksum or a bound is
 * COFFER_E_ARCHIVE_CORRUPT naming the stored file, the block and the offset.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

#include "backup/ar_int.h"
#include "common/err.h"
#include "engine/page.h"

static const char HDR_MAGIC[8] = {'C', 'O', 'F', 'F', 'E', 'R', 'B', 'K'};
static const char REC_MAGIC[4] = {'C', 'F', 'R', 'C'};
static const char TRL_MAGIC[8] = {'C', 'F', 'T', 'R', 'A', 'I', 'L', 'R'};
static const char MF_MAGIC[8] = {'C', 'F', 'M', 'A', 'N', 'I', 'F', 'S'};

const char *cf_set_type_name(uint32_t type)
{
	switch (type) {
	case CF_SET_FULL:
		return "full";
	case CF_SET_INCREMENTAL:
		return "incremental";
	case CF_SET_DIFFERENTIAL:
		return "differential";
	case CF_SET_COPY:
		return "copy";
	default:
		return "unknown";
	}
}

size_t ar_stored_max(void)
{
	return ZSTD_COMPRESSBOUND(CF_AR_BLOCK_MAX);
}

void ar_printable(char *dst, size_t cap, const void *s, size_t len)
{
	const unsigned char *p = s;
	size_t n = 0;
	for (size_t i = 0; i < len && n + 5 < cap; i++) {
		if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\' && p[i] != '"')
			dst[n++] = (char)p[i];
		else
			n += (size_t)snprintf(dst + n, cap - n, "\\x%02x", p[i]);
	}
	if (cap)
		dst[n < cap ? n : cap - 1] = '\0';
}

void ar_hex(char *dst, const uint8_t *b, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		dst[2 * i] = digits[b[i] >> 4];
		dst[2 * i + 1] = digits[b[i] & 15];
	}
	dst[2 * n] = '\0';
}

/* ---- names ---- */

int cf_archive_name_check(const char *name, size_t len, const char *where, uint32_t *gen)
{
	char shown[CF_AR_NAME_MAX * 4 + 8];
	const char *why = NULL;
	if (gen)
		*gen = 0;
	if (len == 0)
		why = "is empty";
	else if (len > CF_AR_NAME_MAX)
		why = "is longer than 255 bytes";
	else if (name[0] == '/')
		why = "is an absolute path";
	if (why == NULL)
		for (size_t i = 0; i < len; i++) {
			char c = name[i];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			      c == '.' || c == '_' || c == '/' || c == '-')) {
				why = "has a character outside [A-Za-z0-9._/-]";
				break;
			}
		}
	if (why == NULL) {
		/* No empty, "." or ".." component. */
		size_t start = 0;
		for (size_t i = 0; i <= len; i++) {
			if (i < len && name[i] != '/')
				continue;
			size_t cl = i - start;
			if (cl == 0 || (cl == 1 && name[start] == '.') ||
			    (cl == 2 && name[start] == '.' && name[start + 1] == '.')) {
				why = "has an empty, '.' or '..' component";
				break;
			}
			start = i + 1;
		}
	}
	if (why == NULL) {
		if (len == strlen(CF_AR_DB_NAME) && memcmp(name, CF_AR_DB_NAME, len) == 0)
			return COFFER_OK;
		/* log/NNNNNNNNNN.log */
		if (len == 18 && memcmp(name, "log/", 4) == 0 && memcmp(name + 14, ".log", 4) == 0) {
			uint64_t g = 0;
			size_t i;
			for (i = 4; i < 14 && name[i] >= '0' && name[i] <= '9'; i++)
				g = g * 10 + (uint64_t)(name[i] - '0');
			if (i == 14 && g >= 1 && g <= UINT32_MAX) {
				if (gen)
					*gen = (uint32_t)g;
				return COFFER_OK;
			}
		}
		why = "is not a file a backup set holds (coffer.db or log/NNNNNNNNNN.log)";
	}
	ar_printable(shown, sizeof shown, name, len > CF_AR_NAME_MAX ? 64 : len);
	return CF_ERROR(COFFER_E_UNSAFE_PATH, CF_OBJ(.file = where),
			"backup set \"%s\" names a file \"%s%s\" that %s; nothing of it is written", where,
			shown, len > CF_AR_NAME_MAX ? "..." : "", why);
}

/* ---- archive header ---- */

void ar_hdr_encode(uint8_t out[AR_HDR_SIZE], uint32_t kind)
{
	memcpy(out, HDR_MAGIC, 8);
	cf_put32(out + 8, AR_FORMAT_VERSION);
	cf_put32(out + 12, kind);
	cf_put64(out + 16, XXH3_64bits(out, 16));
}

const char *ar_hdr_decode(const uint8_t in[AR_HDR_SIZE], uint32_t *kind, uint32_t *version)
{
	if (memcmp(in, HDR_MAGIC, 8) != 0)
		return "it does not start with the COFFERBK magic (not a Coffer backup set)";
	if (cf_get64(in + 16) != XXH3_64bits(in, 16))
		return "its archive header fails its checksum";
	*version = cf_get32(in + 8);
	*kind = cf_get32(in + 12);
	if (*version != AR_FORMAT_VERSION)
		return "version";
	if (*kind < AR_H_STREAM || *kind > AR_H_MANIFEST)
		return "its archive header has an unknown kind";
	return NULL;
}

/* ---- records ---- */

void ar_rec_encode(const struct ar_rec *r, uint8_t out[AR_REC_SIZE])
{
	memcpy(out, REC_MAGIC, 4);
	out[4] = r->kind;
	out[5] = r->comp;
	out[6] = out[7] = 0;
	cf_put32(out + 8, r->index);
	cf_put32(out + 12, r->blockno);
	cf_put32(out + 16, r->raw_len);
	cf_put32(out + 20, r->stored_len);
	cf_put64(out + 24, r->xxh);
	cf_put64(out + 32, XXH3_64bits(out, 32));
}

int ar_rec_has_magic(const uint8_t in[AR_REC_SIZE])
{
	return memcmp(in, REC_MAGIC, 4) == 0;
}

const char *ar_rec_decode(const uint8_t in[AR_REC_SIZE], struct ar_rec *r)
{
	if (memcmp(in, REC_MAGIC, 4) != 0)
		return "no record magic";
	if (cf_get64(in + 32) != XXH3_64bits(in, 32))
		return "the record header fails its checksum";
	if (in[6] || in[7])
		return "reserved bytes of the record header are not zero";
	r->kind = in[4];
	r->comp = in[5];
	r->index = cf_get32(in + 8);
	r->blockno = cf_get32(in + 12);
	r->raw_len = cf_get32(in + 16);
	r->stored_len = cf_get32(in + 20);
	r->xxh = cf_get64(in + 24);
	switch (r->kind) {
	case AR_K_FILE:
		if (r->comp || r->raw_len < 1 || r->raw_len > CF_AR_NAME_MAX || r->stored_len != r->raw_len ||
		    r->blockno)
			return "a file record with lengths out of bounds";
		break;
	case AR_K_DATA:
		if (r->raw_len < 1 || r->raw_len > CF_AR_BLOCK_MAX)
			return "a data block longer than 1 MiB or empty";
		if (r->comp == AR_C_NONE) {
			if (r->stored_len != r->raw_len)
				return "an uncompressed block whose stored and raw lengths differ";
		} else if (r->comp == AR_C_ZSTD) {
			if (r->stored_len < 1 || r->stored_len > ar_stored_max())
				return "a compressed block whose stored length is out of bounds";
		} else {
			return "an unknown compression";
		}
		break;
	case AR_K_END:
		if (r->comp || r->raw_len != AR_END_SIZE || r->stored_len != AR_END_SIZE || r->blockno)
			return "an end record with lengths out of bounds";
		break;
	case AR_K_MANIFEST:
		if (r->comp || r->raw_len < AR_MF_FIXED || r->raw_len > CF_AR_MANIFEST_MAX ||
		    r->stored_len != r->raw_len || r->index != AR_INDEX_NONE || r->blockno)
			return "a manifest record with lengths out of bounds";
		break;
	default:
		return "an unknown record kind";
	}
	return NULL;
}

/* ---- trailer ---- */

void ar_trailer_encode(const struct ar_trailer *t, uint8_t out[AR_TRAILER_SIZE])
{
	memcpy(out, TRL_MAGIC, 8);
	cf_put64(out + 8, t->mf_off);
	cf_put64(out + 16, t->mf_len);
	cf_put64(out + 24, t->mf_xxh);
	cf_put64(out + 32, XXH3_64bits(out, 32));
}

const char *ar_trailer_decode(const uint8_t in[AR_TRAILER_SIZE], struct ar_trailer *t, int *no_magic)
{
	*no_magic = memcmp(in, TRL_MAGIC, 8) != 0;
	if (*no_magic)
		return "no trailer magic";
	if (cf_get64(in + 32) != XXH3_64bits(in, 32))
		return "the trailer fails its checksum";
	t->mf_off = cf_get64(in + 8);
	t->mf_len = cf_get64(in + 16);
	t->mf_xxh = cf_get64(in + 24);
	if (t->mf_len < AR_MF_FIXED || t->mf_len > CF_AR_MANIFEST_MAX)
		return "the trailer gives a manifest length out of bounds";
	return NULL;
}

/* ---- END payload ---- */

void ar_end_encode(uint8_t out[AR_END_SIZE], uint64_t size, uint64_t blocks, const uint8_t sha[32])
{
	cf_put64(out, size);
	cf_put64(out + 8, blocks);
	memcpy(out + 16, sha, 32);
}

void ar_end_decode(const uint8_t in[AR_END_SIZE], uint64_t *size, uint64_t *blocks, uint8_t sha[32])
{
	*size = cf_get64(in);
	*blocks = cf_get64(in + 8);
	memcpy(sha, in + 16, 32);
}

/* ---- manifest ---- */

static int printable_ascii(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] >= 0x7f)
			return 0;
	return 1;
}

int ar_manifest_encode(const struct cf_set_manifest *m, uint8_t **out, size_t *len)
{
	size_t hl = strnlen(m->host, CF_AR_HOST_MAX), vl = strnlen(m->coffer_version, CF_AR_VERSION_MAX);
	size_t n = AR_MF_FIXED + hl + vl;
	for (uint32_t i = 0; i < m->nfiles; i++)
		n += 2 + strlen(m->files[i].name) + 8 + 8 + 32;
	if (n > CF_AR_MANIFEST_MAX || m->nfiles > CF_AR_FILES_MAX)
		return CF_ERROR(COFFER_E_LIMIT, NULL, "a manifest of %u files does not fit in %u bytes",
				m->nfiles, CF_AR_MANIFEST_MAX);
	uint8_t *b = calloc(1, n);
	if (b == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a manifest of %zu bytes", n);
	const cf_set_meta *mt = &m->meta;
	memcpy(b, MF_MAGIC, 8);
	cf_put32(b + 8, AR_FORMAT_VERSION);
	cf_put32(b + 12, mt->type);
	memcpy(b + 16, mt->set_id, 16);
	memcpy(b + 32, mt->parent_id, 16);
	memcpy(b + 48, mt->signature, 16);
	cf_put32(b + 64, mt->page_size);
	cf_put32(b + 68, mt->gen_first);
	cf_put32(b + 72, mt->gen_last);
	cf_put32(b + 76, m->nfiles);
	cf_put64(b + 80, mt->redo_lsn);
	cf_put64(b + 88, (uint64_t)mt->start_us);
	cf_put64(b + 96, (uint64_t)mt->end_us);
	cf_put64(b + 104, m->total_bytes);
	cf_put16(b + 112, (uint16_t)hl);
	cf_put16(b + 114, (uint16_t)vl);
	uint8_t *p = b + AR_MF_FIXED;
	memcpy(p, m->host, hl);
	p += hl;
	memcpy(p, m->coffer_version, vl);
	p += vl;
	for (uint32_t i = 0; i < m->nfiles; i++) {
		const struct cf_set_file *f = &m->files[i];
		size_t nl = strlen(f->name);
		cf_put16(p, (uint16_t)nl);
		memcpy(p + 2, f->name, nl);
		p += 2 + nl;
		cf_put64(p, f->size);
		cf_put64(p + 8, f->blocks);
		memcpy(p + 16, f->sha256, 32);
		p += 48;
	}
	*out = b;
	*len = n;
	return COFFER_OK;
}

void ar_manifest_free(struct cf_set_manifest *m)
{
	if (m) {
		free(m->files);
		m->files = NULL;
		m->nfiles = 0;
	}
}

int ar_manifest_decode(const uint8_t *b, size_t len, const char *where, uint64_t off,
		       struct cf_set_manifest *m)
{
	const char *why = NULL;
	memset(m, 0, sizeof *m);
/* The message first: its arguments may point into the entries freed after. */
#define BAD(fmt, ...)                                                                         \
	do {                                                                                  \
		int bad_rc_ = CF_ERROR(COFFER_E_ARCHIVE_CORRUPT, CF_OBJ(.file = where, CF_OFF(off)), \
				       "the manifest of backup set \"%s\" (at offset %llu) is damaged: " fmt, \
				       where, (unsigned long long)off, __VA_ARGS__);          \
		ar_manifest_free(m);                                                          \
		return bad_rc_;                                                               \
	} while (0)
	if (len < AR_MF_FIXED)
		BAD("%s", "it is too short");
	if (memcmp(b, MF_MAGIC, 8) != 0)
		BAD("%s", "no manifest magic");
	m->version = cf_get32(b + 8);
	if (m->version != AR_FORMAT_VERSION)
		return CF_ERROR(COFFER_E_VERSION, CF_OBJ(.file = where, CF_OFF(off)),
				"the manifest of backup set \"%s\" has version %u; this Coffer reads "
				"version %u",
				where, m->version, AR_FORMAT_VERSION);
	cf_set_meta *mt = &m->meta;
	mt->type = cf_get32(b + 12);
	memcpy(mt->set_id, b + 16, 16);
	memcpy(mt->parent_id, b + 32, 16);
	memcpy(mt->signature, b + 48, 16);
	mt->page_size = cf_get32(b + 64);
	mt->gen_first = cf_get32(b + 68);
	mt->gen_last = cf_get32(b + 72);
	uint32_t nfiles = cf_get32(b + 76);
	mt->redo_lsn = cf_get64(b + 80);
	mt->start_us = (int64_t)cf_get64(b + 88);
	mt->end_us = (int64_t)cf_get64(b + 96);
	m->total_bytes = cf_get64(b + 104);
	size_t hl = cf_get16(b + 112), vl = cf_get16(b + 114);
	if (mt->type < CF_SET_FULL || mt->type > CF_SET_COPY)
		why = "an unknown set type";
	else if (mt->page_size &&
		 (mt->page_size < CF_PAGE_SIZE_MIN || mt->page_size > CF_PAGE_SIZE_MAX ||
		  (mt->page_size & (mt->page_size - 1))))
		why = "a page size that is not a power of two from 4096 to 65536";
	else if (nfiles > CF_AR_FILES_MAX)
		why = "more than 262144 files";
	else if (hl > CF_AR_HOST_MAX || vl > CF_AR_VERSION_MAX)
		why = "a host name or version too long";
	else if (cf_get32(b + 116) != 0)
		why = "reserved bytes not zero";
	else if (AR_MF_FIXED + hl + vl > len)
		why = "host name and version past its end";
	else if ((len - AR_MF_FIXED - hl - vl) / (2 + 1 + 48) < nfiles)
		why = "more files than its length can hold"; /* bound before allocating */
	if (why)
		BAD("%s", why);
	const uint8_t *p = b + AR_MF_FIXED, *end = b + len;
	if (!printable_ascii(p, hl + vl))
		BAD("%s", "a host name or version that is not printable ASCII");
	memcpy(m->host, p, hl);
	m->host[hl] = '\0';
	memcpy(m->coffer_version, p + hl, vl);
	m->coffer_version[vl] = '\0';
	p += hl + vl;
	if (nfiles) {
		m->files = calloc(nfiles, sizeof *m->files);
		if (m->files == NULL)
			return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a manifest of %u files", nfiles);
	}
	m->nfiles = nfiles;
	uint64_t total = 0;
	for (uint32_t i = 0; i < nfiles; i++) {
		struct cf_set_file *f = &m->files[i];
		if ((size_t)(end - p) < 2)
			BAD("entry %u is cut short", i);
		size_t nl = cf_get16(p);
		if (nl > CF_AR_NAME_MAX || (size_t)(end - p) < 2 + nl + 48)
			BAD("entry %u has a name length out of bounds or is cut short", i);
		int rc = cf_archive_name_check((const char *)p + 2, nl, where, NULL);
		if (rc) {
			ar_manifest_free(m);
			cf_error_prefix("in its manifest");
			return rc;
		}
		memcpy(f->name, p + 2, nl); /* nl <= 18 once checked */
		f->name[nl] = '\0';
		p += 2 + nl;
		f->size = cf_get64(p);
		f->blocks = cf_get64(p + 8);
		memcpy(f->sha256, p + 16, 32);
		p += 48;
		total += f->size;
		uint64_t want = (f->size + CF_AR_BLOCK_MAX - 1) / CF_AR_BLOCK_MAX;
		if (f->blocks < want || f->blocks > f->size)
			BAD("entry %u (\"%s\") has %llu blocks for %llu bytes", i, f->name, (unsigned long long)f->blocks,
			    (unsigned long long)f->size);
	}
	if (p != end)
		BAD("%zu bytes follow its last entry", (size_t)(end - p));
	if (total != m->total_bytes)
		BAD("its total of %llu bytes is not the sum of its files (%llu)", (unsigned long long)m->total_bytes,
		    (unsigned long long)total);
#undef BAD
	return COFFER_OK;
}
