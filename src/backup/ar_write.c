/*
 * ar_write.c - the writer: stored files -> 1 MiB blocks -> block pipeline
 * (ar_zpool.c: SHA-256 of the file on its own thread; XXH3 and zstd on
 * workers; the output written on a writer thread, in order) -> output;
 * then the manifest and the trailer. The API and its errors are in
 * archive.h, the bytes at the top of archive.c.
 *
 * Data path: the caller either receives its bytes straight into the block
 * buffer (cf_archive_file_reserve / cf_archive_file_commit: no copy at
 * all) or has cf_archive_file_write copy them there once. The buffer has
 * room for the record header in front; the pool compresses into the
 * block's own output buffer (with the same headroom); the record header is
 * written into that headroom and header + payload go out in one write(2).
 * So on the caller's thread a byte costs only its receipt; hashing,
 * checksumming, compressing and writing happen on the pipeline's threads,
 * overlapped with receiving the next blocks.
 *
 * The small records (FILE, END, MANIFEST) are written on the caller's
 * thread, but only when the pipeline is drained (a file's blocks are all
 * out before its END, and a file begins only after the previous one
 * ended), so the output keeps its order and has one writer at a time.
 *
 * Failure is sticky: the first error - raised here or on a pipeline thread
 * (a full disk during a block's write keeps its file, offset and errno) -
 * is kept with its detail record, the writer thread is stopped and the
 * temporary removed at once, and every later call returns that error with
 * the same detail until cf_archive_abort.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "backup/ar_int.h"
#include "common/err.h"
#include "common/xxh.h"

#ifndef COFFER_VERSION_STRING
#define COFFER_VERSION_STRING "unknown"
#endif

struct cf_archive_writer {
	struct ar_out *out;
	int level;
	struct ar_zpool *pool;
	ar_sha *sha;
	struct ar_block *blk;   /* the block being filled, or NULL */
	int in_file;
	struct cf_set_file cur; /* the current file: name, size and blocks so far */
	uint32_t last_gen;      /* of the last log file begun, 0 if none */
	struct cf_set_file *files;
	uint32_t nfiles, cap;
	uint64_t bytes_in;
	int rc;                 /* sticky failure */
	coffer_error err;       /* its detail */
};

/* Make W failed with the current error RC: keep the detail, drop the temporary. */
static int fail(cf_archive_writer *w, int rc)
{
	if (w->rc)
		return w->rc;
	if (w->in_file)
		cf_error_prefix("backup set \"%s\", file \"%s\"", ar_out_path(w->out), w->cur.name);
	else
		cf_error_prefix("backup set \"%s\"", ar_out_path(w->out));
	w->rc = rc;
	w->err = *coffer_error_last();
	ar_zpool_halt(w->pool); /* no block write in progress while it goes */
	ar_out_discard(w->out);
	return rc;
}

/* The sticky error again, with its detail. */
static int failed(cf_archive_writer *w)
{
	*(coffer_error *)coffer_error_last() = w->err;
	return w->rc;
}

uint64_t cf_archive_bytes_in(cf_archive_writer *w)
{
	return w ? w->bytes_in : 0;
}

uint64_t cf_archive_bytes_out(cf_archive_writer *w)
{
	return w ? ar_out_bytes(w->out) : 0;
}

/* The pool's emit: header into the headroom, header + payload in one write. */
static int emit_block(void *arg, struct ar_block *b)
{
	cf_archive_writer *w = arg;
	struct ar_rec r = {.kind = AR_K_DATA,
			   .comp = b->compressed ? AR_C_ZSTD : AR_C_NONE,
			   .index = b->index,
			   .blockno = b->blockno,
			   .raw_len = (uint32_t)b->raw_len,
			   .stored_len = (uint32_t)(b->compressed ? b->z_len : b->raw_len),
			   .xxh = b->xxh};
	uint8_t *base = b->compressed ? b->z : b->raw;
	ar_rec_encode(&r, base);
	return ar_out_write(w->out, base, AR_REC_SIZE + r.stored_len);
}

/* A small record (FILE, END): header and payload in one write. */
static int write_small(cf_archive_writer *w, uint8_t kind, uint32_t index, const void *p, size_t n)
{
	uint8_t buf[AR_REC_SIZE + CF_AR_NAME_MAX];
	struct ar_rec r = {.kind = kind, .index = index, .raw_len = (uint32_t)n,
			   .stored_len = (uint32_t)n, .xxh = cf_xxh3_seed(p, n, 0)};
	ar_rec_encode(&r, buf);
	memcpy(buf + AR_REC_SIZE, p, n);
	return ar_out_write(w->out, buf, AR_REC_SIZE + n);
}

int cf_archive_create(cf_archive_writer **out, const char *path, const struct cf_archive_options *o)
{
	struct cf_archive_options def = {0};
	if (o == NULL)
		o = &def;
	*out = NULL;
	if (o->compress_level < -7 || o->compress_level > 22)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL,
				"compression level %d is out of range (0 = none, zstd 1..22, -7..-1 fast)",
				o->compress_level);
	cf_archive_writer *w = calloc(1, sizeof *w);
	if (w == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a backup set writer");
	int rc;
	w->level = o->compress_level;
	CF_GO(rc, ar_sha_new(&w->sha));
	CF_GO(rc, ar_zpool_new(&w->pool, o->compress_level, o->threads, w->sha, emit_block, w));
	CF_GO(rc, ar_out_open(&w->out, path, o->format_dir));
	*out = w;
	return COFFER_OK;
err:
	cf_archive_abort(w);
	return rc;
}

int cf_archive_file_begin(cf_archive_writer *w, const char *name)
{
	if (w->rc)
		return failed(w);
	if (w->in_file)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL,
				"file \"%s\" begun while \"%s\" is still open in the backup set", name,
				w->cur.name);
	uint32_t gen;
	CF_RET(cf_archive_name_check(name, strlen(name), ar_out_path(w->out), &gen));
	if (gen == 0 && w->nfiles > 0)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL,
				"coffer.db must be the first file of a backup set");
	if (gen && w->last_gen && gen != w->last_gen + 1)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, CF_OBJ(CF_GEN(gen)),
				"log generation %u follows %u in the backup set; generations must be "
				"consecutive",
				gen, w->last_gen);
	if (w->nfiles >= CF_AR_FILES_MAX)
		return CF_ERROR(COFFER_E_LIMIT, NULL, "a backup set holds at most %u files",
				CF_AR_FILES_MAX);
	if (w->nfiles == w->cap) {
		uint32_t ncap = w->cap ? w->cap * 2 : 64;
		struct cf_set_file *nf = realloc(w->files, ncap * sizeof *nf);
		if (nf == NULL)
			return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the manifest");
		w->files = nf;
		w->cap = ncap;
	}
	memset(&w->cur, 0, sizeof w->cur);
	snprintf(w->cur.name, sizeof w->cur.name, "%s", name);
	w->in_file = 1;
	if (gen)
		w->last_gen = gen;
	ar_sha_reset(w->sha);
	int rc = ar_out_file_begin(w->out, name);
	if (rc == 0)
		rc = write_small(w, AR_K_FILE, w->nfiles, name, strlen(name));
	return rc ? fail(w, rc) : COFFER_OK;
}

/* Data may go to the current file: not failed, inside a file. */
static int writable(cf_archive_writer *w)
{
	if (w->rc)
		return failed(w);
	if (!w->in_file)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL, "backup set data written outside a file");
	return COFFER_OK;
}

/* The copying form of reserve/commit. */
int cf_archive_file_write(cf_archive_writer *w, const void *data, size_t n)
{
	const uint8_t *p = data;
	CF_RET(writable(w));
	while (n > 0) {
		void *dst;
		size_t room;
		CF_RET(cf_archive_file_reserve(w, &dst, &room));
		size_t take = room < n ? room : n;
		memcpy(dst, p, take);
		CF_RET(cf_archive_file_commit(w, take));
		p += take;
		n -= take;
	}
	return COFFER_OK;
}

int cf_archive_file_reserve(cf_archive_writer *w, void **p, size_t *room)
{
	*p = NULL;
	*room = 0;
	CF_RET(writable(w));
	int rc;
	if (w->blk == NULL) {
		if (w->cur.blocks >= UINT32_MAX)
			return fail(w, CF_ERROR(COFFER_E_LIMIT, NULL, "file too large for a backup set"));
		CF_GO(rc, ar_zpool_acquire(w->pool, &w->blk));
		w->blk->index = w->nfiles;
		w->blk->blockno = (uint32_t)w->cur.blocks;
	}
	*p = AR_RAW(w->blk) + w->blk->raw_len;
	*room = CF_AR_BLOCK_MAX - w->blk->raw_len;
	return COFFER_OK;
err:
	return fail(w, rc);
}

int cf_archive_file_commit(cf_archive_writer *w, size_t n)
{
	if (w->rc)
		return failed(w);
	struct ar_block *b = w->blk;
	if (!w->in_file || (n > 0 && b == NULL) || (b && n > CF_AR_BLOCK_MAX - b->raw_len))
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL,
				"%zu bytes committed to the backup set beyond the room reserved", n);
	if (n == 0)
		return COFFER_OK;
	b->raw_len += n;
	w->cur.size += n;
	w->bytes_in += n;
	if (b->raw_len == CF_AR_BLOCK_MAX) {
		w->blk = NULL;
		w->cur.blocks++;
		int rc = ar_zpool_submit(w->pool, b);
		if (rc)
			return fail(w, rc);
	}
	return COFFER_OK;
}

void cf_archive_file_expect(cf_archive_writer *w, uint64_t size)
{
	/* Only uncompressed sets know their size; only at a file's start. */
	if (w->rc || !w->in_file || w->level != 0 || w->cur.size || w->blk || size == 0)
		return;
	uint64_t blocks = (size + CF_AR_BLOCK_MAX - 1) / CF_AR_BLOCK_MAX;
	ar_out_reserve(w->out, size + blocks * AR_REC_SIZE + AR_REC_SIZE + AR_END_SIZE);
}

int cf_archive_file_end(cf_archive_writer *w)
{
	if (w->rc)
		return failed(w);
	if (!w->in_file)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL, "no file of the backup set is open");
	int rc;
	if (w->blk) {
		struct ar_block *b = w->blk;
		w->blk = NULL;
		if (b->raw_len) /* else a reserved block left empty: nothing is written */
			w->cur.blocks++;
		CF_GO(rc, ar_zpool_submit(w->pool, b));
	}
	CF_GO(rc, ar_zpool_drain(w->pool));
	ar_sha_final(w->sha, w->cur.sha256);
	uint8_t end[AR_END_SIZE];
	ar_end_encode(end, w->cur.size, w->cur.blocks, w->cur.sha256);
	CF_GO(rc, write_small(w, AR_K_END, w->nfiles, end, sizeof end));
	CF_GO(rc, ar_out_file_end(w->out));
	w->files[w->nfiles++] = w->cur;
	w->in_file = 0;
	return COFFER_OK;
err:
	return fail(w, rc);
}

static void host_name(char *out, size_t cap)
{
	char h[HOST_NAME_MAX + 1] = "";
	if (gethostname(h, sizeof h) != 0)
		h[0] = '\0';
	h[sizeof h - 1] = '\0';
	size_t n = 0;
	for (const char *s = h; *s && n + 1 < cap; s++)
		out[n++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
	out[n] = '\0';
}

int cf_archive_finish(cf_archive_writer *w, const cf_set_meta *meta)
{
	int rc;
	uint8_t *payload = NULL;
	size_t len = 0;
	if (w->rc) {
		rc = failed(w);
		goto out;
	}
	if (w->in_file) {
		rc = CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL,
			      "the backup set was finished while \"%s\" is still open", w->cur.name);
		goto out;
	}
	struct cf_set_manifest m = {.version = AR_FORMAT_VERSION, .meta = *meta,
				    .nfiles = w->nfiles, .files = w->files};
	host_name(m.host, sizeof m.host);
	snprintf(m.coffer_version, sizeof m.coffer_version, "%s", COFFER_VERSION_STRING);
	for (uint32_t i = 0; i < w->nfiles; i++)
		m.total_bytes += w->files[i].size;
	/* Never report success for a set that verify would reject. */
	CF_GO(rc, cf_set_check(&m, ar_out_path(w->out)));
	CF_GO(rc, ar_manifest_encode(&m, &payload, &len));
	CF_GO(rc, ar_out_manifest_begin(w->out));
	struct ar_trailer t = {.mf_off = ar_out_offset(w->out), .mf_len = len,
			       .mf_xxh = XXH3_64bits(payload, len)};
	uint8_t hdr[AR_REC_SIZE], trl[AR_TRAILER_SIZE];
	struct ar_rec r = {.kind = AR_K_MANIFEST, .index = AR_INDEX_NONE, .raw_len = (uint32_t)len,
			   .stored_len = (uint32_t)len, .xxh = t.mf_xxh};
	ar_rec_encode(&r, hdr);
	ar_trailer_encode(&t, trl);
	CF_GO(rc, ar_out_write(w->out, hdr, sizeof hdr));
	CF_GO(rc, ar_out_write(w->out, payload, len));
	CF_GO(rc, ar_out_write(w->out, trl, sizeof trl));
	CF_GO(rc, ar_out_commit(w->out));
	goto out;
err:
	fail(w, rc);
out:
	free(payload);
	{
		coffer_error saved = *coffer_error_last();
		cf_archive_abort(w);
		*(coffer_error *)coffer_error_last() = saved;
	}
	return rc;
}

void cf_archive_abort(cf_archive_writer *w)
{
	if (w == NULL)
		return;
	ar_zpool_free(w->pool); /* its threads first: then nothing writes */
	ar_out_free(w->out);
	ar_sha_free(w->sha);
	free(w->files);
	free(w);
}
