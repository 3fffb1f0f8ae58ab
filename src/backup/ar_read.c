/*
 * ar_read.c - the reader: input -> records -> verified file data.
 *
 * Three inputs:
 *   M_FILE    an archive file: its trailer and manifest are read first by
 *             seeking (a missing trailer is COFFER_E_ARCHIVE_TRUNCATED), then
 *             the records are read front to back with pread.
 *   M_DIR     a directory set: MANIFEST first, then NAME.blocks per file in
 *             the manifest's order.
 *   M_STREAM  standard input or any descriptor (a pipe): read front to back
 *             with read(2); the manifest comes last, so every file seen is
 *             remembered and compared with it when it arrives.
 *
 * Every record header is checked (magic, checksum, bounds for its kind)
 * before its payload is read; no length from the input is used before it is
 * bounded, so memory is fixed: a 1 MiB block buffer, one compressed-block
 * buffer, the manifest (<= 32 MiB) and the list of files (<= 262144).
 * Each block's XXH3 is checked after decompression, each file's size, block
 * count and SHA-256 against its END record and the manifest before its end
 * is reported; the manifest's own checksum against its record header and
 * the trailer. Errors are sticky: after one, every call returns it again.
 *
 * Messages name the set, the stored file, the block number and the offset
 * of the record in the file being read (the archive, or DIR/NAME.blocks).
 *
 * Data path: a block is read (and decompressed) into one of a ring of
 * AR_SHA_PIPE_DEPTH buffers and its XXH3 checked on the caller's thread;
 * it is then queued to the SHA pipe (ar_digest.c: the file's SHA-256 on
 * its own thread, in block order) and returned at once, so the caller
 * (restore: content check and write; verify) works on it while it is
 * hashed. A buffer is reused only once hashed, and never the one returned
 * by the previous call. The file's digest is compared at its END record,
 * after waiting for the pipe. The thread starts with the first block of
 * AR_SHA_THREAD_MIN bytes or more; smaller blocks before it are hashed
 * inline (small sets and fuzzing start no thread).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "backup/ar_int.h"
#include "common/err.h"
#include "common/os.h"
#include "common/xxh.h"

enum { M_STREAM, M_FILE, M_DIR };
#define AR_SHA_THREAD_MIN (64u << 10)
#define NRING AR_SHA_PIPE_DEPTH
enum { ST_BETWEEN, ST_IN_FILE, ST_END };

struct cf_archive_reader {
	char *set;                 /* the set as given */
	int mode;
	int fd, own_fd;
	char cur[PATH_MAX];        /* the file being read, for messages */
	uint64_t off;              /* offset of the next byte in it */
	uint64_t total;            /* bytes read overall */
	struct cf_set_manifest mf;
	int mf_known;
	struct ar_trailer trl;     /* M_FILE: read at open */
	int state;
	uint32_t next_index, cur_index;
	uint32_t cur_gen;
	struct cf_set_file curf;   /* the current file so far */
	ar_sha *sha;
	struct ar_sha_pipe *pipe;  /* NULL until the first big block */
	uint8_t *ring[NRING];      /* raw block buffers */
	uint8_t *stored;
	ZSTD_DCtx *dctx;
	struct cf_set_file *seen;  /* M_STREAM: the files as read */
	uint32_t nseen, capseen;
	int rc;
	coffer_error err;
};

/* Wait until the SHA pipe has hashed every block given to it. */
static void sha_idle(cf_archive_reader *r)
{
	if (r->pipe)
		ar_sha_pipe_wait(r->pipe, ar_sha_pipe_pushed(r->pipe));
}

static int rfail(cf_archive_reader *r, int rc)
{
	if (r->rc == 0) {
		r->rc = rc;
		r->err = *coffer_error_last();
	}
	return rc;
}

static int rfailed(cf_archive_reader *r)
{
	*(coffer_error *)coffer_error_last() = r->err;
	return r->rc;
}

const struct cf_set_manifest *cf_archive_manifest(const cf_archive_reader *r)
{
	return r->mf_known ? &r->mf : NULL;
}

int cf_archive_is_stream(const cf_archive_reader *r)
{
	return r->mode == M_STREAM;
}

const char *cf_archive_path(const cf_archive_reader *r)
{
	return r->set;
}

uint64_t cf_archive_bytes_read(const cf_archive_reader *r)
{
	return r->total;
}

/* What the reader expects next, for messages. */
static void expected(const cf_archive_reader *r, char *buf, size_t cap)
{
	if (r->state == ST_IN_FILE)
		snprintf(buf, cap, "block %llu of \"%s\" or its end", (unsigned long long)r->curf.blocks,
			 r->curf.name);
	else if (r->mf_known && r->mode != M_STREAM && r->next_index >= r->mf.nfiles)
		snprintf(buf, cap, "the manifest");
	else
		snprintf(buf, cap, "file %u or the manifest", r->next_index + 1);
}

#define CORRUPT(at, ...) \
	CF_ERROR(COFFER_E_ARCHIVE_CORRUPT, CF_OBJ(.file = r->cur, CF_OFF(at)), __VA_ARGS__)

/* Read exactly N bytes of the current input at r->off. WHAT: for messages. */
static int in_read(cf_archive_reader *r, void *buf, size_t n, const char *what)
{
	size_t got = 0;
	while (got < n) {
		ssize_t k = r->mode == M_STREAM
				    ? cf_os.read(r->fd, (char *)buf + got, n - got)
				    : cf_os.pread(r->fd, (char *)buf + got, n - got, (off_t)(r->off + got));
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return cf_error_sys("read", r->cur, (int64_t)(r->off + got));
		}
		if (k == 0)
			return CF_ERROR(COFFER_E_ARCHIVE_TRUNCATED, CF_OBJ(.file = r->cur, CF_OFF(r->off + got)),
					"backup set \"%s\": \"%s\" ends at offset %llu inside %s: the set is "
					"truncated (the copy was interrupted or the disk filled)",
					r->set, r->cur, (unsigned long long)(r->off + got), what);
		got += (size_t)k;
	}
	r->off += n;
	r->total += n;
	return COFFER_OK;
}

/* 1 if the current input has more bytes (after the trailer or an END). */
static int in_has_more(cf_archive_reader *r)
{
	uint8_t b;
	ssize_t k;
	do
		k = r->mode == M_STREAM ? cf_os.read(r->fd, &b, 1) : cf_os.pread(r->fd, &b, 1, (off_t)r->off);
	while (k < 0 && errno == EINTR);
	return k > 0;
}

/* Read and check the archive header of the current input. */
static int read_header(cf_archive_reader *r, uint32_t want_kind)
{
	uint8_t h[AR_HDR_SIZE];
	uint32_t kind = 0, version = 0;
	CF_RET(in_read(r, h, sizeof h, "its archive header"));
	const char *why = ar_hdr_decode(h, &kind, &version);
	if (why && strcmp(why, "version") == 0)
		return CF_ERROR(COFFER_E_VERSION, CF_OBJ(.file = r->cur, CF_OFF(0)),
				"backup set \"%s\" has format version %u; this Coffer reads version %u",
				r->set, version, AR_FORMAT_VERSION);
	if (why)
		return CORRUPT(0, "backup set \"%s\": \"%s\" is not usable: %s", r->set, r->cur, why);
	if (kind != want_kind)
		return CORRUPT(0, "backup set \"%s\": \"%s\" is a %s, not a %s", r->set, r->cur,
			       kind == AR_H_STREAM ? "backup archive" : kind == AR_H_BLOCKS ? "block file"
											     : "manifest file",
			       want_kind == AR_H_STREAM ? "backup archive"
			       : want_kind == AR_H_BLOCKS ? "block file"
							  : "manifest file");
	return COFFER_OK;
}

/* Read the next record header; *AT receives its offset. */
static int read_rec(cf_archive_reader *r, struct ar_rec *rec, uint64_t *at)
{
	uint8_t h[AR_REC_SIZE];
	char exp[128];
	expected(r, exp, sizeof exp);
	*at = r->off;
	CF_RET(in_read(r, h, sizeof h, exp));
	const char *why = ar_rec_decode(h, rec);
	if (why)
		return CORRUPT(*at,
			       "backup set \"%s\": the record at offset %llu of \"%s\" (%s was expected) is "
			       "damaged: %s",
			       r->set, (unsigned long long)*at, r->cur, exp, why);
	if (r->mode == M_FILE) {
		uint64_t end = *at + AR_REC_SIZE + rec->stored_len;
		if ((rec->kind == AR_K_MANIFEST) != (*at == r->trl.mf_off) ||
		    (rec->kind != AR_K_MANIFEST && end > r->trl.mf_off))
			return CORRUPT(*at,
				       "backup set \"%s\": the record at offset %llu (%s was expected) "
				       "does not fit the manifest at offset %llu its trailer names",
				       r->set, (unsigned long long)*at, exp,
				       (unsigned long long)r->trl.mf_off);
	}
	return COFFER_OK;
}

/* Read a small payload (FILE, END) and check its XXH3. */
static int read_small(cf_archive_reader *r, const struct ar_rec *rec, uint64_t at, void *buf,
		      const char *what)
{
	CF_RET(in_read(r, buf, rec->stored_len, what));
	if (XXH3_64bits(buf, rec->stored_len) != rec->xxh)
		return CORRUPT(at, "backup set \"%s\": %s at offset %llu of \"%s\" fails its checksum",
			       r->set, what, (unsigned long long)at, r->cur);
	return COFFER_OK;
}

/* Read the manifest record at the trailer's position in FD (M_FILE, M_DIR). */
static int load_manifest(cf_archive_reader *r, uint64_t size)
{
	uint8_t t[AR_TRAILER_SIZE], h[AR_REC_SIZE];
	int no_magic = 0;
	if (size < AR_HDR_SIZE + AR_REC_SIZE + AR_MF_FIXED + AR_TRAILER_SIZE)
		return CF_ERROR(COFFER_E_ARCHIVE_TRUNCATED, CF_OBJ(.file = r->cur, CF_OFF(size)),
				"backup set \"%s\": \"%s\" has only %llu bytes, too few for a manifest and "
				"trailer: the set is truncated",
				r->set, r->cur, (unsigned long long)size);
	r->off = size - AR_TRAILER_SIZE;
	CF_RET(in_read(r, t, sizeof t, "the trailer"));
	const char *why = ar_trailer_decode(t, &r->trl, &no_magic);
	if (no_magic)
		return CF_ERROR(COFFER_E_ARCHIVE_TRUNCATED,
				CF_OBJ(.file = r->cur, CF_OFF(size - AR_TRAILER_SIZE)),
				"backup set \"%s\": \"%s\" does not end with a trailer (%llu bytes): the "
				"set is truncated, or its last bytes are damaged",
				r->set, r->cur, (unsigned long long)size);
	if (why == NULL && (r->trl.mf_off < AR_HDR_SIZE ||
			    r->trl.mf_off + AR_REC_SIZE + r->trl.mf_len + AR_TRAILER_SIZE != size))
		why = "the manifest position it gives does not match the file's size";
	if (why)
		return CORRUPT(size - AR_TRAILER_SIZE,
			       "backup set \"%s\": the trailer at offset %llu of \"%s\" is damaged: %s",
			       r->set, (unsigned long long)(size - AR_TRAILER_SIZE), r->cur, why);
	r->off = r->trl.mf_off;
	CF_RET(in_read(r, h, sizeof h, "the manifest record"));
	struct ar_rec rec;
	why = ar_rec_decode(h, &rec);
	if (why == NULL && (rec.kind != AR_K_MANIFEST || rec.raw_len != r->trl.mf_len ||
			    rec.xxh != r->trl.mf_xxh))
		why = "it does not match the trailer";
	if (why)
		return CORRUPT(r->trl.mf_off,
			       "backup set \"%s\": the manifest record at offset %llu of \"%s\" is "
			       "damaged: %s",
			       r->set, (unsigned long long)r->trl.mf_off, r->cur, why);
	uint8_t *p = malloc(rec.stored_len);
	if (p == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a manifest of %u bytes", rec.stored_len);
	int rc = in_read(r, p, rec.stored_len, "the manifest");
	if (rc == 0 && cf_xxh3_seed(p, rec.stored_len, 0) != rec.xxh)
		rc = CORRUPT(r->trl.mf_off,
			     "backup set \"%s\": the manifest at offset %llu of \"%s\" fails its checksum",
			     r->set, (unsigned long long)r->trl.mf_off, r->cur);
	if (rc == 0)
		rc = ar_manifest_decode(p, rec.stored_len, r->set, r->trl.mf_off, &r->mf);
	free(p);
	if (rc == 0)
		r->mf_known = 1;
	return rc;
}

static int reader_new(cf_archive_reader **out, const char *set)
{
	cf_archive_reader *r = calloc(1, sizeof *r);
	*out = r;
	if (r == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a backup set reader");
	r->fd = -1;
	if ((r->set = strdup(set)) == NULL || (r->stored = malloc(ar_stored_max())) == NULL ||
	    (r->dctx = ZSTD_createDCtx()) == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a backup set reader");
	return ar_sha_new(&r->sha);
}

void cf_archive_close(cf_archive_reader *r)
{
	if (r == NULL)
		return;
	if (r->own_fd && r->fd >= 0)
		cf_os.close(r->fd);
	ar_manifest_free(&r->mf);
	ar_sha_pipe_free(r->pipe); /* before the buffers and the context it uses */
	ar_sha_free(r->sha);
	ZSTD_freeDCtx(r->dctx);
	for (unsigned i = 0; i < NRING; i++)
		free(r->ring[i]);
	free(r->stored);
	free(r->seen);
	free(r->set);
	free(r);
}

int cf_archive_open_fd(cf_archive_reader **out, int fd, const char *name)
{
	cf_archive_reader *r = NULL;
	*out = NULL;
	int rc = reader_new(&r, name);
	if (rc == 0) {
		r->mode = M_STREAM;
		r->fd = fd;
		snprintf(r->cur, sizeof r->cur, "%s", name);
		rc = read_header(r, AR_H_STREAM);
	}
	if (rc) {
		cf_archive_close(r);
		return rc;
	}
	*out = r;
	return COFFER_OK;
}

int cf_archive_open(cf_archive_reader **out, const char *path)
{
	if (strcmp(path, "-") == 0)
		return cf_archive_open_fd(out, 0, "standard input");
	cf_archive_reader *r = NULL;
	struct stat st;
	int rc;
	*out = NULL;
	CF_GO(rc, reader_new(&r, path));
	if (cf_os.stat(path, &st) != 0) {
		rc = cf_error_sys("open the backup set", path, -1);
		goto err;
	}
	if (S_ISDIR(st.st_mode)) {
		r->mode = M_DIR;
		CF_GO(rc, cf_path_join(r->cur, sizeof r->cur, path, "MANIFEST"));
		CF_GO(rc, cf_open(&r->fd, r->cur, O_RDONLY, 0));
		r->own_fd = 1;
		CF_GO(rc, cf_os.fstat(r->fd, &st) == 0 ? 0 : cf_error_sys("stat", r->cur, -1));
		CF_GO(rc, read_header(r, AR_H_MANIFEST));
		CF_GO(rc, load_manifest(r, (uint64_t)st.st_size));
		if (r->trl.mf_off != AR_HDR_SIZE) {
			rc = CORRUPT(r->trl.mf_off, "backup set \"%s\": \"%s\" holds more than its manifest",
				     path, r->cur);
			goto err;
		}
		cf_os.close(r->fd);
		r->fd = -1;
	} else {
		snprintf(r->cur, sizeof r->cur, "%s", path);
		CF_GO(rc, cf_open(&r->fd, path, O_RDONLY, 0));
		r->own_fd = 1;
		if (S_ISREG(st.st_mode)) {
			r->mode = M_FILE;
			CF_GO(rc, cf_os.fstat(r->fd, &st) == 0 ? 0 : cf_error_sys("stat", path, -1));
			CF_GO(rc, read_header(r, AR_H_STREAM));
			CF_GO(rc, load_manifest(r, (uint64_t)st.st_size));
			r->off = AR_HDR_SIZE;
			r->total = AR_HDR_SIZE;
		} else {
			r->mode = M_STREAM; /* a FIFO or a device */
			CF_GO(rc, read_header(r, AR_H_STREAM));
		}
	}
	*out = r;
	return COFFER_OK;
err:
	cf_archive_close(r);
	return rc;
}

/* The manifest record reached while streaming (M_STREAM, M_FILE). */
static int at_manifest(cf_archive_reader *r, const struct ar_rec *rec, uint64_t at)
{
	int rc;
	if (r->mode == M_FILE) {
		if (r->next_index != r->mf.nfiles)
			return CORRUPT(at,
				       "backup set \"%s\": its manifest lists %u files but the set holds "
				       "only %u",
				       r->set, r->mf.nfiles, r->next_index);
		r->state = ST_END; /* position and checksum matched the trailer */
		return COFFER_OK;
	}
	uint8_t *p = malloc(rec->stored_len), t[AR_TRAILER_SIZE];
	if (p == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a manifest of %u bytes", rec->stored_len);
	rc = in_read(r, p, rec->stored_len, "the manifest");
	if (rc == 0 && cf_xxh3_seed(p, rec->stored_len, 0) != rec->xxh)
		rc = CORRUPT(at, "backup set \"%s\": the manifest at offset %llu of \"%s\" fails its checksum",
			     r->set, (unsigned long long)at, r->cur);
	if (rc == 0)
		rc = ar_manifest_decode(p, rec->stored_len, r->set, at, &r->mf);
	free(p);
	CF_RET(rc);
	CF_RET(in_read(r, t, sizeof t, "the trailer"));
	int no_magic;
	struct ar_trailer trl;
	const char *why = ar_trailer_decode(t, &trl, &no_magic);
	if (why == NULL && (trl.mf_off != at || trl.mf_len != rec->stored_len || trl.mf_xxh != rec->xxh))
		why = "it does not match the manifest before it";
	if (why)
		return CORRUPT(r->off - AR_TRAILER_SIZE,
			       "backup set \"%s\": the trailer at offset %llu of \"%s\" is damaged: %s",
			       r->set, (unsigned long long)(r->off - AR_TRAILER_SIZE), r->cur, why);
	if (in_has_more(r))
		return CORRUPT(r->off, "backup set \"%s\": \"%s\" has data after its trailer at offset %llu",
			       r->set, r->cur, (unsigned long long)r->off);
	r->mf_known = 1;
	if (r->mf.nfiles != r->nseen)
		return CORRUPT(at, "backup set \"%s\": its manifest lists %u files but the set holds %u",
			       r->set, r->mf.nfiles, r->nseen);
	for (uint32_t i = 0; i < r->nseen; i++) {
		const struct cf_set_file *a = &r->mf.files[i], *b = &r->seen[i];
		if (strcmp(a->name, b->name) != 0 || a->size != b->size || a->blocks != b->blocks ||
		    memcmp(a->sha256, b->sha256, 32) != 0)
			return CORRUPT(at,
				       "backup set \"%s\": its manifest entry %u (\"%s\", %llu bytes) does "
				       "not match file %u of the set (\"%s\", %llu bytes)",
				       r->set, i + 1, a->name, (unsigned long long)a->size, i + 1, b->name,
				       (unsigned long long)b->size);
	}
	r->state = ST_END;
	return COFFER_OK;
}

/* Open DIR/NAME.blocks for file NEXT_INDEX (M_DIR). */
static int open_block_file(cf_archive_reader *r)
{
	char member[64];
	snprintf(member, sizeof member, "%s.blocks", r->mf.files[r->next_index].name);
	CF_RET(cf_path_join(r->cur, sizeof r->cur, r->set, member));
	int rc = cf_open(&r->fd, r->cur, O_RDONLY, 0);
	if (rc == COFFER_E_FILE_NOT_FOUND)
		return CF_ERROR(COFFER_E_ARCHIVE_TRUNCATED, CF_OBJ(.file = r->cur),
				"backup set \"%s\": \"%s\", which holds \"%s\", is missing", r->set,
				r->cur, r->mf.files[r->next_index].name);
	CF_RET(rc);
	r->off = 0;
	return read_header(r, AR_H_BLOCKS);
}

static int next_file(cf_archive_reader *r, const char **name)
{
	struct ar_rec rec;
	uint64_t at;
	if (r->mode == M_DIR) {
		if (r->next_index >= r->mf.nfiles) {
			r->state = ST_END;
			return COFFER_E_NOT_FOUND;
		}
		CF_RET(open_block_file(r));
	}
	CF_RET(read_rec(r, &rec, &at));
	if (rec.kind == AR_K_MANIFEST && r->mode != M_DIR) {
		CF_RET(at_manifest(r, &rec, at));
		return COFFER_E_NOT_FOUND;
	}
	char exp[128];
	expected(r, exp, sizeof exp);
	if (rec.kind != AR_K_FILE || rec.index != r->next_index)
		return CORRUPT(at,
			       "backup set \"%s\": the record at offset %llu of \"%s\" is a %s of file %u "
			       "where %s was expected",
			       r->set, (unsigned long long)at, r->cur,
			       rec.kind == AR_K_DATA ? "data block" : rec.kind == AR_K_END ? "end record"
			       : rec.kind == AR_K_FILE ? "start" : "manifest",
			       rec.index + 1, exp);
	if (r->next_index >= CF_AR_FILES_MAX)
		return CORRUPT(at, "backup set \"%s\" holds more than %u files", r->set, CF_AR_FILES_MAX);
	char nm[CF_AR_NAME_MAX + 1];
	CF_RET(read_small(r, &rec, at, nm, "the name of the next file"));
	CF_RET(cf_archive_name_check(nm, rec.stored_len, r->set, &r->cur_gen));
	nm[rec.stored_len] = '\0';
	if (r->mf_known && (r->next_index >= r->mf.nfiles || strcmp(nm, r->mf.files[r->next_index].name)))
		return CORRUPT(at, "backup set \"%s\" holds \"%s\" at offset %llu where its manifest lists %s%s%s",
			       r->set, nm, (unsigned long long)at,
			       r->next_index < r->mf.nfiles ? "\"" : "no more files",
			       r->next_index < r->mf.nfiles ? r->mf.files[r->next_index].name : "",
			       r->next_index < r->mf.nfiles ? "\"" : "");
	memset(&r->curf, 0, sizeof r->curf);
	memcpy(r->curf.name, nm, rec.stored_len + 1);
	sha_idle(r);
	ar_sha_reset(r->sha);
	r->cur_index = r->next_index++;
	r->state = ST_IN_FILE;
	*name = r->curf.name;
	return COFFER_OK;
}

int cf_archive_next_file(cf_archive_reader *r, const char **name)
{
	if (r->rc)
		return rfailed(r);
	if (r->state == ST_IN_FILE) {
		const void *d;
		size_t n;
		do
			CF_RET(cf_archive_read(r, &d, &n));
		while (n);
	}
	if (r->state == ST_END)
		return COFFER_E_NOT_FOUND;
	int rc = next_file(r, name);
	if (rc == COFFER_E_NOT_FOUND) {
		coffer_error_clear();
		return rc;
	}
	return rc ? rfail(r, rc) : COFFER_OK;
}

#define BLOCK_ERR(code, at, ...)                                                                \
	CF_ERROR((code), CF_OBJ(.file = r->cur, CF_OFF(at), .generation = r->cur_gen,          \
				.has_generation = r->cur_gen != 0),                            \
		 __VA_ARGS__)

static int end_of_file(cf_archive_reader *r, const struct ar_rec *rec, uint64_t at)
{
	uint8_t e[AR_END_SIZE], sha[32], esha[32];
	uint64_t size, blocks;
	char what[96], h1[65], h2[65];
	snprintf(what, sizeof what, "the end record of \"%s\"", r->curf.name);
	CF_RET(read_small(r, rec, at, e, what));
	ar_end_decode(e, &size, &blocks, esha);
	sha_idle(r);
	ar_sha_final(r->sha, sha);
	memcpy(r->curf.sha256, sha, 32);
	if (size != r->curf.size || blocks != r->curf.blocks)
		return BLOCK_ERR(COFFER_E_ARCHIVE_CORRUPT, at,
				 "backup set \"%s\": the end record of \"%s\" (offset %llu) says %llu bytes "
				 "in %llu blocks, but %llu bytes in %llu blocks were read",
				 r->set, r->curf.name, (unsigned long long)at, (unsigned long long)size,
				 (unsigned long long)blocks, (unsigned long long)r->curf.size,
				 (unsigned long long)r->curf.blocks);
	if (memcmp(sha, esha, 32) != 0) {
		ar_hex(h1, sha, 32);
		ar_hex(h2, esha, 32);
		return BLOCK_ERR(COFFER_E_DIGEST_MISMATCH, at,
				 "backup set \"%s\": \"%s\" as read has SHA-256 %s, but its end record "
				 "says %s",
				 r->set, r->curf.name, h1, h2);
	}
	if (r->mf_known) {
		const struct cf_set_file *m = &r->mf.files[r->cur_index];
		if (m->size != size || m->blocks != blocks)
			return BLOCK_ERR(COFFER_E_ARCHIVE_CORRUPT, at,
					 "backup set \"%s\": \"%s\" holds %llu bytes in %llu blocks, but "
					 "its manifest says %llu bytes in %llu blocks",
					 r->set, r->curf.name, (unsigned long long)size,
					 (unsigned long long)blocks, (unsigned long long)m->size,
					 (unsigned long long)m->blocks);
		if (memcmp(m->sha256, sha, 32) != 0) {
			ar_hex(h1, sha, 32);
			ar_hex(h2, m->sha256, 32);
			return BLOCK_ERR(COFFER_E_DIGEST_MISMATCH, at,
					 "backup set \"%s\": \"%s\" as read has SHA-256 %s, but its "
					 "manifest says %s",
					 r->set, r->curf.name, h1, h2);
		}
	} else {
		if (r->nseen == r->capseen) {
			uint32_t ncap = r->capseen ? r->capseen * 2 : 64;
			struct cf_set_file *ns = realloc(r->seen, ncap * sizeof *ns);
			if (ns == NULL)
				return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the list of files");
			r->seen = ns;
			r->capseen = ncap;
		}
		r->seen[r->nseen++] = r->curf;
	}
	if (r->mode == M_DIR) {
		if (in_has_more(r))
			return CORRUPT(r->off, "backup set \"%s\": \"%s\" has data after its end record",
				       r->set, r->cur);
		cf_os.close(r->fd);
		r->fd = -1;
	}
	r->state = ST_BETWEEN;
	return COFFER_OK;
}

/* The buffer for the next block of LEN raw bytes: the SHA pipe is started
 * for a big one; a buffer the pipe may still be hashing is waited for. */
static int ring_buffer(cf_archive_reader *r, uint32_t len, uint8_t **out)
{
	if (r->pipe == NULL && len >= AR_SHA_THREAD_MIN)
		CF_RET(ar_sha_pipe_new(&r->pipe, r->sha));
	uint64_t seq = r->pipe ? ar_sha_pipe_pushed(r->pipe) : 0;
	if (seq >= NRING) /* the buffer's last block, pushed NRING blocks ago, is hashed */
		ar_sha_pipe_wait(r->pipe, seq - NRING + 1);
	uint8_t **b = &r->ring[seq % NRING];
	if (*b == NULL && (*b = malloc(CF_AR_BLOCK_MAX)) == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a backup set reader");
	*out = *b;
	return COFFER_OK;
}

static int read_block(cf_archive_reader *r, const void **data, size_t *n)
{
	struct ar_rec rec;
	uint64_t at;
	CF_RET(read_rec(r, &rec, &at));
	if (rec.kind == AR_K_END && rec.index == r->cur_index) {
		CF_RET(end_of_file(r, &rec, at));
		*n = 0;
		return COFFER_OK;
	}
	if (rec.kind != AR_K_DATA || rec.index != r->cur_index || rec.blockno != r->curf.blocks)
		return BLOCK_ERR(COFFER_E_ARCHIVE_CORRUPT, at,
				 "backup set \"%s\": block %llu of \"%s\" was expected at offset %llu of "
				 "\"%s\", but the record there is a %s of file %u (block %u)",
				 r->set, (unsigned long long)r->curf.blocks, r->curf.name,
				 (unsigned long long)at, r->cur,
				 rec.kind == AR_K_DATA ? "data block" : rec.kind == AR_K_END ? "end record"
				 : rec.kind == AR_K_FILE ? "file start" : "manifest",
				 rec.index + 1, rec.blockno);
	if (r->mf_known && r->curf.size + rec.raw_len > r->mf.files[r->cur_index].size)
		return BLOCK_ERR(COFFER_E_ARCHIVE_CORRUPT, at,
				 "backup set \"%s\": block %u of \"%s\" (offset %llu) goes past the %llu "
				 "bytes its manifest gives the file",
				 r->set, rec.blockno, r->curf.name, (unsigned long long)at,
				 (unsigned long long)r->mf.files[r->cur_index].size);
	char what[96];
	snprintf(what, sizeof what, "block %u of \"%s\"", rec.blockno, r->curf.name);
	uint8_t *raw = NULL;
	CF_RET(ring_buffer(r, rec.raw_len, &raw));
	if (rec.comp == AR_C_NONE) {
		CF_RET(in_read(r, raw, rec.stored_len, what));
	} else {
		CF_RET(in_read(r, r->stored, rec.stored_len, what));
		size_t got = ZSTD_decompressDCtx(r->dctx, raw, CF_AR_BLOCK_MAX, r->stored, rec.stored_len);
		if (ZSTD_isError(got) || got != rec.raw_len)
			return BLOCK_ERR(COFFER_E_ARCHIVE_CORRUPT, at,
					 "backup set \"%s\": block %u of \"%s\" at offset %llu of \"%s\" "
					 "is damaged: %s%s",
					 r->set, rec.blockno, r->curf.name, (unsigned long long)at, r->cur,
					 ZSTD_isError(got) ? "it does not decompress: " : "it decompresses "
											   "to the wrong length",
					 ZSTD_isError(got) ? ZSTD_getErrorName(got) : "");
	}
	uint64_t x = cf_xxh3_seed(raw, rec.raw_len, 0);
	if (x != rec.xxh)
		return BLOCK_ERR(COFFER_E_ARCHIVE_CORRUPT, at,
				 "backup set \"%s\": block %u of \"%s\" at offset %llu of \"%s\" is "
				 "damaged: its data fails its checksum (stored %016llx, computed %016llx)",
				 r->set, rec.blockno, r->curf.name, (unsigned long long)at, r->cur,
				 (unsigned long long)rec.xxh, (unsigned long long)x);
	if (r->pipe)
		ar_sha_pipe_push(r->pipe, raw, rec.raw_len);
	else
		ar_sha_update(r->sha, raw, rec.raw_len);
	r->curf.size += rec.raw_len;
	r->curf.blocks++;
	*data = raw;
	*n = rec.raw_len;
	return COFFER_OK;
}

int cf_archive_read(cf_archive_reader *r, const void **data, size_t *n)
{
	*data = NULL;
	*n = 0;
	if (r->rc)
		return rfailed(r);
	if (r->state != ST_IN_FILE)
		return COFFER_OK;
	int rc = read_block(r, data, n);
	return rc ? rfail(r, rc) : COFFER_OK;
}

int cf_archive_read_all(cf_archive_reader *r)
{
	const char *name;
	int rc;
	while ((rc = cf_archive_next_file(r, &name)) == COFFER_OK)
		;
	if (rc == COFFER_E_NOT_FOUND)
		return COFFER_OK;
	return rc;
}
