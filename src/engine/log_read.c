/*
 * log_read.c - reading the log: headers, records, the end of the log.
 *
 * Used by recovery (to replay and to find where the writer continues),
 * `coffer dump logs`, and backup. The input may be hostile (a damaged disk,
 * a fuzzer): every length is bounded by the file before it is used, nothing
 * is allocated beyond the size of the file, and nothing is asserted about
 * file contents.
 *
 * Rules (they follow from the writer's invariants I1-I3 in log.c):
 *  R1 A record ends its file when its length field is 0 or fewer than 16
 *     bytes are left. The log then continues in the next generation if that
 *     file exists; its header must name the LSN where this one ended
 *     (prev end), else COFFER_E_LOG_MISMATCH. If it does not exist but a
 *     later one does: COFFER_E_LOG_GAP. Otherwise this is the clean end.
 *  R2 A bad record (length out of bounds, checksum mismatch, unknown type)
 *     is a torn write from a crash only if it is the tail of the log: it
 *     lies in the last generation present and no COMMIT record after it in
 *     that file is valid (checksummed at its own position, hence written by
 *     this generation after the bad one). The log then ends there
 *     (cf_log_reader_torn() says so and where). Otherwise it is damage:
 *     COFFER_E_LOG_CHECKSUM or COFFER_E_LOG_CORRUPT naming the generation
 *     and offset, and, in the last generation, the COMMIT that follows: a
 *     commit recovery would drop, maybe acknowledged. Why this is sound: a
 *     crash can only tear the last write (the writer syncs each write
 *     before the next one, I2 and I7 in log.c), and beyond it the file
 *     holds zeroes (I3), so after a torn write nothing valid follows; in
 *     any other generation the writer had synced the whole file before
 *     starting the next (I2). Only COMMITs count: valid records of a batch
 *     without its COMMIT lose nothing acknowledged, and they do follow
 *     zeroes when a crash interrupts cf_log_open() zeroing a long batch cut
 *     by an earlier crash. The same holds for the zero length that ends a
 *     file: in the last generation the rest of the file is scanned too, so
 *     a zeroed sector in the middle of the records is damage, not the end.
 *  R2a A generation file shorter than the size in its own header is damage
 *     wherever it is (COFFER_E_LOG_CORRUPT naming the file, the generation,
 *     both sizes): a file is created at its full size before it gets its
 *     name (I1), so no crash leaves one short. It is reported when the
 *     reader reaches the cut or the end of the generation's records.
 *  R3 Every generation read must carry the expected signature and its own
 *     generation number in its header (COFFER_E_LOG_MISMATCH).
 *  R4 Errors are sticky: once next() failed, it fails the same way again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/err.h"
#include "common/os.h"
#include "engine/log.h"

#define READ_WINDOW (1u << 20)

struct cf_log_reader {
	char *dir;
	uint8_t sig[16];
	int have_sig;
	int first; /* no generation opened yet: no prev-end check */

	uint32_t gen;
	int fd;
	char path[PATH_MAX];
	struct cf_log_file_header hdr;
	uint64_t size;   /* bytes actually in the file */
	uint32_t off;    /* next record */

	uint8_t *win;    /* window on the file */
	uint64_t win_off;
	size_t win_len;
	uint8_t *big;    /* a record larger than the window */
	size_t big_cap;

	enum { RS_READING, RS_END, RS_FAILED } state;
	int torn;
	cf_lsn end_at;
	coffer_error saved; /* the failure, for R4 */
};

/* ---- directory and header ---- */

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

int cf_log_list_gens(const char *logdir, uint32_t **gens, size_t *n)
{
	DIR *d = opendir(logdir);
	struct dirent *e;
	uint32_t *v = NULL, g;
	size_t len = 0, cap = 0;
	*gens = NULL;
	*n = 0;
	if (d == NULL)
		return cf_error_sys("open the log directory", logdir, -1);
	while ((e = readdir(d)) != NULL) {
		if (!cf_log_parse_name(e->d_name, &g))
			continue;
		if (len == cap) {
			size_t nc = cap ? cap * 2 : 64;
			uint32_t *nv = realloc(v, nc * sizeof *nv);
			if (nv == NULL) {
				free(v);
				closedir(d);
				return CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = logdir),
						"no memory to list the log directory %s", logdir);
			}
			v = nv;
			cap = nc;
		}
		v[len++] = g;
	}
	closedir(d);
	if (len)
		qsort(v, len, sizeof *v, cmp_u32);
	*gens = v;
	*n = len;
	return COFFER_OK;
}

int cf_log_scan_dir(const char *logdir, uint32_t *lo, uint32_t *hi)
{
	uint32_t *v;
	size_t n;
	CF_RET(cf_log_list_gens(logdir, &v, &n));
	if (n == 0)
		return CF_ERROR(COFFER_E_LOG_MISSING, CF_OBJ(.file = logdir),
				"there is no log generation in %s", logdir);
	*lo = v[0];
	*hi = v[n - 1];
	for (size_t i = 1; i < n; i++) {
		if (v[i] != v[i - 1] + 1) {
			uint32_t missing = v[i - 1] + 1;
			int rc = CF_ERROR(COFFER_E_LOG_GAP, CF_OBJ(.file = logdir, CF_GEN(missing)),
					  "log generation %u is missing from %s: generations %u to %u "
					  "are present, then %u to %u",
					  missing, logdir, v[0], v[i - 1], v[i], v[n - 1]);
			free(v);
			return rc;
		}
	}
	free(v);
	return COFFER_OK;
}

int cf_log_header_decode(const uint8_t *b, const char *path, struct cf_log_file_header *h)
{
	memset(h, 0, sizeof *h);
	if (memcmp(b + CF_LOG_H_MAGIC, CF_LOG_MAGIC, 8) != 0)
		return CF_ERROR(COFFER_E_LOG_CORRUPT, CF_OBJ(.file = path, CF_OFF(0)),
				"%s is not a Coffer log file (no \"" CF_LOG_MAGIC "\" magic at offset 0)",
				path);
	h->checksum = cf_get64(b + CF_LOG_H_CHECKSUM);
	uint64_t want = XXH3_64bits(b, CF_LOG_H_CHECKSUM);
	if (h->checksum != want)
		return CF_ERROR(COFFER_E_LOG_CORRUPT, CF_OBJ(.file = path, CF_OFF(0)),
				"the header of log file %s fails its checksum: stored 0x%016llx, "
				"computed 0x%016llx",
				path, (unsigned long long)h->checksum, (unsigned long long)want);
	h->version = cf_get32(b + CF_LOG_H_VERSION);
	h->header_size = cf_get32(b + CF_LOG_H_HDRSIZE);
	h->generation = cf_get32(b + CF_LOG_H_GEN);
	h->file_size = cf_get32(b + CF_LOG_H_FILESIZE);
	memcpy(h->sig, b + CF_LOG_H_SIG, 16);
	h->created_us = (int64_t)cf_get64(b + CF_LOG_H_CREATED);
	h->prev_end = cf_get64(b + CF_LOG_H_PREV_END);
	if (h->version != CF_LOG_VERSION)
		return CF_ERROR(COFFER_E_VERSION, CF_OBJ(.file = path, CF_GEN(h->generation)),
				"log file %s has format version %u; this Coffer reads version %u",
				path, h->version, CF_LOG_VERSION);
	if (h->header_size != CF_LOG_HDR_SIZE || h->file_size < CF_LOG_FILE_MIN ||
	    h->file_size > CF_LOG_FILE_MAX || h->file_size % 4096 != 0 || h->generation == 0)
		return CF_ERROR(COFFER_E_LOG_CORRUPT, CF_OBJ(.file = path, CF_GEN(h->generation)),
				"the header of log file %s is impossible: header size %u, file size "
				"%u, generation %u",
				path, h->header_size, h->file_size, h->generation);
	return COFFER_OK;
}

int cf_log_read_header(const char *path, struct cf_log_file_header *h)
{
	uint8_t b[CF_LOG_HDR_USED];
	struct stat st;
	int fd, rc;
	CF_RET(cf_open(&fd, path, O_RDONLY, 0));
	if (cf_os.fstat(fd, &st) != 0) {
		rc = cf_error_sys("stat", path, -1);
		goto err;
	}
	if (st.st_size < (off_t)CF_LOG_HDR_SIZE) {
		rc = CF_ERROR(COFFER_E_LOG_CORRUPT, CF_OBJ(.file = path),
			      "log file %s is %lld bytes long, shorter than its %u-byte header", path,
			      (long long)st.st_size, CF_LOG_HDR_SIZE);
		goto err;
	}
	CF_GO(rc, cf_pread_full(fd, path, b, sizeof b, 0));
	CF_GO(rc, cf_log_header_decode(b, path, h));
err:
	cf_os.close(fd);
	return rc;
}

static void sig_hex(const uint8_t sig[16], char out[33])
{
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", sig[i]);
}

/* ---- the reader ---- */

static int gen_exists(const char *dir, uint32_t gen)
{
	char path[PATH_MAX];
	struct stat st;
	if (gen == 0 || cf_log_gen_path(path, sizeof path, dir, gen) != COFFER_OK)
		return 0;
	return cf_os.stat(path, &st) == 0;
}

/* Highest generation present, 0 if none (or unreadable). */
static uint32_t highest_gen(const char *dir)
{
	uint32_t *v, hi = 0;
	size_t n;
	if (cf_log_list_gens(dir, &v, &n) != COFFER_OK) {
		coffer_error_clear();
		return 0;
	}
	if (n)
		hi = v[n - 1];
	free(v);
	return hi;
}

/* Record a failure for R4 and return it. */
static int reader_fail(cf_log_reader *r, int rc)
{
	r->state = RS_FAILED;
	r->saved = *coffer_error_last();
	return rc;
}

/* Open generation GEN; unless it is the first, its prev end must be PREV_END. */
static int open_gen(cf_log_reader *r, uint32_t gen, cf_lsn prev_end)
{
	char path[PATH_MAX], want[33], got[33];
	struct cf_log_file_header h;
	struct stat st;
	int fd = -1, rc;
	CF_RET(cf_log_gen_path(path, sizeof path, r->dir, gen));
	if (cf_os.stat(path, &st) != 0 && errno == ENOENT)
		return CF_ERROR(COFFER_E_LOG_MISSING, CF_OBJ(.file = r->dir, CF_GEN(gen)),
				"log generation %u (%010u.log) is missing from %s", gen, gen, r->dir);
	CF_RET(cf_log_read_header(path, &h));
	if (h.generation != gen)
		return CF_ERROR(COFFER_E_LOG_MISMATCH, CF_OBJ(.file = path, CF_GEN(gen)),
				"log file %s carries generation %u in its header, not %u: it was "
				"renamed or copied from elsewhere",
				path, h.generation, gen);
	if (r->have_sig && memcmp(h.sig, r->sig, 16) != 0) {
		sig_hex(r->sig, want);
		sig_hex(h.sig, got);
		return CF_ERROR(COFFER_E_LOG_MISMATCH, CF_OBJ(.file = path, CF_GEN(gen)),
				"log generation %u (%s) belongs to another store: its signature is %s, "
				"expected %s",
				gen, path, got, want);
	}
	if (!r->first && h.prev_end != prev_end)
		return CF_ERROR(COFFER_E_LOG_MISMATCH, CF_OBJ(.file = path, CF_GEN(gen)),
				"log generation %u (%s) says the previous generation ended at "
				"%010u:%010u, but generation %u ends at %010u:%010u: the files come "
				"from different histories",
				gen, path, CF_LSN_GEN(h.prev_end), CF_LSN_OFF(h.prev_end), gen - 1,
				CF_LSN_GEN(prev_end), CF_LSN_OFF(prev_end));
	CF_RET(cf_open(&fd, path, O_RDONLY, 0));
	if (cf_os.fstat(fd, &st) != 0) {
		rc = cf_error_sys("stat", path, -1);
		cf_os.close(fd);
		return rc;
	}
	if (r->fd >= 0)
		cf_os.close(r->fd);
	r->fd = fd;
	r->gen = gen;
	r->hdr = h;
	r->size = (uint64_t)st.st_size < h.file_size ? (uint64_t)st.st_size : h.file_size;
	r->off = CF_LOG_HDR_SIZE;
	r->win_len = 0;
	memcpy(r->path, path, sizeof r->path);
	if (!r->have_sig) {
		memcpy(r->sig, h.sig, 16);
		r->have_sig = 1;
	}
	r->first = 0;
	return COFFER_OK;
}

int cf_log_reader_open(cf_log_reader **out, const char *logdir, const uint8_t sig[16],
		       cf_lsn start)
{
	cf_log_reader *r = calloc(1, sizeof *r);
	uint32_t gen = CF_LSN_GEN(start), off = CF_LSN_OFF(start);
	int rc;
	*out = NULL;
	if (r == NULL)
		return CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = logdir), "no memory for a log reader");
	r->fd = -1;
	r->first = 1;
	r->dir = strdup(logdir);
	r->win = malloc(READ_WINDOW);
	if (r->dir == NULL || r->win == NULL) {
		rc = CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = logdir), "no memory for a log reader");
		goto err;
	}
	if (sig) {
		memcpy(r->sig, sig, 16);
		r->have_sig = 1;
	}
	if (start == 0) {
		uint32_t *v;
		size_t n;
		CF_GO(rc, cf_log_list_gens(logdir, &v, &n));
		gen = n ? v[0] : 0;
		free(v);
		if (n == 0) {
			rc = CF_ERROR(COFFER_E_LOG_MISSING, CF_OBJ(.file = logdir),
				      "there is no log generation in %s", logdir);
			goto err;
		}
	}
	if (gen == 0) {
		rc = CF_ERROR(COFFER_E_INVALID_ARGUMENT, CF_OBJ(.file = logdir),
			      "cannot read the log from %010u:%010u: generation 0 does not exist", gen,
			      off);
		goto err;
	}
	if (!gen_exists(logdir, gen)) {
		uint32_t hi = highest_gen(logdir);
		if (hi)
			rc = CF_ERROR(COFFER_E_LOG_MISSING, CF_OBJ(.file = logdir, CF_GEN(gen)),
				      "log generation %u, where reading starts, is missing from %s "
				      "(the highest present is %u)",
				      gen, logdir, hi);
		else
			rc = CF_ERROR(COFFER_E_LOG_MISSING, CF_OBJ(.file = logdir, CF_GEN(gen)),
				      "log generation %u, where reading starts, is missing from %s "
				      "(it holds no log generation)",
				      gen, logdir);
		goto err;
	}
	CF_GO(rc, open_gen(r, gen, 0));
	if (off != 0) {
		if (off < CF_LOG_HDR_SIZE || off > r->hdr.file_size || off % CF_LOG_ALIGN != 0) {
			rc = CF_ERROR(COFFER_E_INVALID_ARGUMENT, CF_OBJ(.file = r->path, CF_GEN(gen), CF_OFF(off)),
				      "cannot read log generation %u from offset %u: not a record "
				      "boundary inside the file",
				      gen, off);
			goto err;
		}
		r->off = off;
	}
	*out = r;
	return COFFER_OK;
err:
	cf_log_reader_close(r);
	return rc;
}

void cf_log_reader_close(cf_log_reader *r)
{
	if (r == NULL)
		return;
	if (r->fd >= 0)
		cf_os.close(r->fd);
	free(r->win);
	free(r->big);
	free(r->dir);
	free(r);
}

/* Bytes [OFF, OFF + N) of the current file (the caller checked they are
 * inside it) into *P. */
static int fetch(cf_log_reader *r, uint64_t off, size_t n, uint8_t **p)
{
	if (off >= r->win_off && off + n <= r->win_off + r->win_len) {
		*p = r->win + (off - r->win_off);
		return COFFER_OK;
	}
	if (n <= READ_WINDOW) {
		size_t len = r->size - off < READ_WINDOW ? (size_t)(r->size - off) : READ_WINDOW;
		r->win_len = 0;
		CF_RET(cf_pread_full(r->fd, r->path, r->win, len, off));
		r->win_off = off;
		r->win_len = len;
		*p = r->win;
		return COFFER_OK;
	}
	if (n > r->big_cap) {
		uint8_t *b = realloc(r->big, n);
		if (b == NULL)
			return CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = r->path, CF_GEN(r->gen), CF_OFF(off)),
					"no memory for a log record of %zu bytes", n);
		r->big = b;
		r->big_cap = n;
	}
	CF_RET(cf_pread_full(r->fd, r->path, r->big, n, off));
	*p = r->big;
	return COFFER_OK;
}

/*
 * The first COMMIT record after offset FROM of the current generation that
 * is valid at its own position (length inside the file, checksum seeded with
 * its LSN), into *FOUND; 0 if there is none (R2). Reads the rest of the file
 * once; stale or torn bytes never validate (the LSN seed).
 */
static int later_record(cf_log_reader *r, uint64_t from, uint64_t *found)
{
	uint64_t fsize = r->hdr.file_size;
	*found = 0;
	for (uint64_t pos = CF_LOG_ALIGN_UP(from); pos + CF_LOG_REC_HDR <= r->size;
	     pos += CF_LOG_ALIGN) {
		uint8_t *p;
		CF_RET(fetch(r, pos, CF_LOG_REC_HDR, &p));
		uint32_t len = cf_get32(p + CF_LOG_R_LEN);
		uint16_t type = cf_get16(p + CF_LOG_R_TYPE);
		if (type != CF_LOG_COMMIT || len < CF_LOG_REC_HDR || len > fsize - pos ||
		    pos + len > r->size)
			continue;
		CF_RET(fetch(r, pos, len, &p));
		uint64_t stored = cf_get64(p + CF_LOG_R_CHECKSUM);
		if (stored == cf_log_rec_checksum(CF_LSN(r->gen, pos), p, p + CF_LOG_REC_HDR,
						  len - CF_LOG_REC_HDR, NULL, 0)) {
			*found = pos;
			return COFFER_OK;
		}
	}
	return COFFER_OK;
}

/* The current generation is shorter than its header says (R2a); the reader
 * needed the bytes at its position or stopped there. WHAT says where. */
static int cut_short(cf_log_reader *r, const char *what)
{
	int last = highest_gen(r->dir) <= r->gen;
	CF_ERROR(COFFER_E_LOG_CORRUPT, CF_OBJ(.file = r->path, CF_GEN(r->gen), CF_OFF(r->off)),
		 "log generation %u (%s) is cut short: its header says %u bytes, the file has "
		 "%llu; %s%s. A generation file is created at its full size, so no crash leaves "
		 "it shorter: the log is damaged",
		 r->gen, r->path, r->hdr.file_size, (unsigned long long)r->size, what,
		 last ? ", and any records after the cut (maybe of acknowledged commits) are lost"
		      : "; it is not at the end of the log");
	return reader_fail(r, COFFER_E_LOG_CORRUPT);
}

/*
 * A bad record at the reader's position (R2): the torn end of the log if this
 * is the last generation and no valid record follows it, else damage. WHY
 * says what is wrong with it.
 */
static int bad_record(cf_log_reader *r, int code, const char *why)
{
	cf_lsn at = CF_LSN(r->gen, r->off);
	if (r->size < r->hdr.file_size) {
		char what[220];
		snprintf(what, sizeof what, "the record at offset %u %s", r->off, why);
		return cut_short(r, what);
	}
	if (highest_gen(r->dir) <= r->gen) {
		uint64_t later;
		int rc = later_record(r, (uint64_t)r->off + CF_LOG_ALIGN, &later);
		if (rc != COFFER_OK)
			return reader_fail(r, rc);
		if (later == 0) {
			r->state = RS_END;
			r->torn = 1;
			r->end_at = at;
			return CF_ERROR(COFFER_E_NOT_FOUND,
					CF_OBJ(.file = r->path, CF_GEN(r->gen), CF_OFF(r->off)),
					"the log ends in a torn record at %010u:%010u (%s)", r->gen,
					r->off, why);
		}
		CF_ERROR(code, CF_OBJ(.file = r->path, CF_GEN(r->gen), CF_OFF(r->off)),
			 "log record at %010u:%010u (generation %u, offset %u of %s) %s; it is not "
			 "at the end of the log: a valid COMMIT record of the same generation "
			 "follows at %010u:%010u, so this is damage, not a write torn by a crash, "
			 "and the commits after it (maybe acknowledged) cannot be replayed",
			 r->gen, r->off, r->gen, r->off, r->path, why, r->gen, (uint32_t)later);
		return reader_fail(r, code);
	}
	CF_ERROR(code, CF_OBJ(.file = r->path, CF_GEN(r->gen), CF_OFF(r->off)),
		 "log record at %010u:%010u (generation %u, offset %u of %s) %s; it is not at the "
		 "end of the log: the log is damaged",
		 r->gen, r->off, r->gen, r->off, r->path, why);
	return reader_fail(r, code);
}

/* The end of the current generation at the reader's position (R1). ZERO:
 * ended by a zero length, not by the end of the file. */
static int gen_end(cf_log_reader *r, int zero)
{
	cf_lsn at = CF_LSN(r->gen, r->off);
	int rc;
	if (r->size < r->hdr.file_size) {
		char what[64];
		snprintf(what, sizeof what, "its records end at offset %u", r->off);
		return cut_short(r, what);
	}
	if (r->gen < CF_LOG_GEN_MAX && gen_exists(r->dir, r->gen + 1)) {
		rc = open_gen(r, r->gen + 1, at);
		return rc == COFFER_OK ? COFFER_OK : reader_fail(r, rc);
	}
	uint32_t hi = highest_gen(r->dir);
	if (hi > r->gen) {
		CF_ERROR(COFFER_E_LOG_GAP, CF_OBJ(.file = r->dir, CF_GEN(r->gen + 1)),
			 "log generation %u is missing from %s: generation %u ends at %010u:%010u "
			 "and generation %u is present",
			 r->gen + 1, r->dir, r->gen, r->gen, r->off, hi);
		return reader_fail(r, COFFER_E_LOG_GAP);
	}
	if (zero) {
		/* The last generation: zeroes up to the end of the file (I3),
		 * unless a sector in the middle of the records was zeroed (R2). */
		uint64_t later;
		if ((rc = later_record(r, (uint64_t)r->off + CF_LOG_ALIGN, &later)) != COFFER_OK)
			return reader_fail(r, rc);
		if (later) {
			CF_ERROR(COFFER_E_LOG_CORRUPT,
				 CF_OBJ(.file = r->path, CF_GEN(r->gen), CF_OFF(r->off)),
				 "log record at %010u:%010u (generation %u, offset %u of %s) has length "
				 "0, the mark that ends a generation, but a valid COMMIT record of the "
				 "same generation follows at %010u:%010u; it is not at the end of the "
				 "log: the log is damaged (zeroed), and the commits after it (maybe "
				 "acknowledged) cannot be replayed",
				 r->gen, r->off, r->gen, r->off, r->path, r->gen, (uint32_t)later);
			return reader_fail(r, COFFER_E_LOG_CORRUPT);
		}
	}
	r->state = RS_END;
	r->torn = 0;
	r->end_at = at;
	return CF_ERROR(COFFER_E_NOT_FOUND, CF_OBJ(.file = r->path, CF_GEN(r->gen), CF_OFF(r->off)),
			"the log ends at %010u:%010u", r->gen, r->off);
}

int cf_log_reader_next(cf_log_reader *r, cf_log_rec *rec)
{
	char why[160];
	uint8_t *p;
	int rc;
	for (;;) {
		if (r->state == RS_END)
			return CF_ERROR(COFFER_E_NOT_FOUND, CF_OBJ(.file = r->dir),
					"the log ends at %010u:%010u", CF_LSN_GEN(r->end_at),
					CF_LSN_OFF(r->end_at));
		if (r->state == RS_FAILED) {
			const coffer_error *e = &r->saved;
			cf_obj o = {.file = e->file[0] ? e->file : NULL, .sys_errno = e->sys_errno};
			if (e->generation != COFFER_NONE) {
				o.generation = e->generation;
				o.has_generation = 1;
			}
			if (e->offset != COFFER_NONE) {
				o.offset = e->offset;
				o.has_offset = 1;
			}
			return CF_ERROR(e->code, &o, "%s", e->message);
		}
		uint64_t off = r->off, fsize = r->hdr.file_size;
		if (fsize - off < CF_LOG_REC_HDR) {
			rc = gen_end(r, 0);
			if (rc != COFFER_OK)
				return rc;
			continue;
		}
		if (off + CF_LOG_REC_HDR > r->size) {
			snprintf(why, sizeof why, "the next record, at offset %llu, lies beyond the cut",
				 (unsigned long long)off);
			return cut_short(r, why);
		}
		if ((rc = fetch(r, off, CF_LOG_REC_HDR, &p)) != COFFER_OK)
			return reader_fail(r, rc);
		uint32_t len = cf_get32(p + CF_LOG_R_LEN);
		uint16_t type = cf_get16(p + CF_LOG_R_TYPE), flags = cf_get16(p + CF_LOG_R_FLAGS);
		if (len == 0) {
			rc = gen_end(r, 1);
			if (rc != COFFER_OK)
				return rc;
			continue;
		}
		if (len < CF_LOG_REC_HDR || len > fsize - off) {
			snprintf(why, sizeof why, "has an impossible length %u (%llu bytes left in the file)",
				 len, (unsigned long long)(fsize - off));
			return bad_record(r, COFFER_E_LOG_CORRUPT, why);
		}
		if (off + len > r->size) {
			snprintf(why, sizeof why,
				 "the record of %u bytes at offset %llu extends beyond the cut", len,
				 (unsigned long long)off);
			return cut_short(r, why);
		}
		if ((rc = fetch(r, off, len, &p)) != COFFER_OK)
			return reader_fail(r, rc);
		cf_lsn lsn = CF_LSN(r->gen, off);
		uint64_t stored = cf_get64(p + CF_LOG_R_CHECKSUM);
		uint64_t sum = cf_log_rec_checksum(lsn, p, p + CF_LOG_REC_HDR, len - CF_LOG_REC_HDR,
						   NULL, 0);
		if (stored != sum) {
			snprintf(why, sizeof why,
				 "fails its checksum: stored 0x%016llx, computed 0x%016llx",
				 (unsigned long long)stored, (unsigned long long)sum);
			return bad_record(r, COFFER_E_LOG_CHECKSUM, why);
		}
		if (type < CF_LOG_TYPE_MIN || type > CF_LOG_TYPE_MAX) {
			snprintf(why, sizeof why, "has unknown type %u", type);
			return bad_record(r, COFFER_E_LOG_CORRUPT, why);
		}
		uint64_t next = off + CF_LOG_ALIGN_UP(len); /* <= fsize: fsize is 8-aligned */
		rec->lsn = lsn;
		rec->end = CF_LSN(r->gen, next);
		rec->type = type;
		rec->flags = flags;
		rec->payload = p + CF_LOG_REC_HDR;
		rec->len = len - CF_LOG_REC_HDR;
		r->off = (uint32_t)next;
		return COFFER_OK;
	}
}

int cf_log_reader_torn(cf_log_reader *r, cf_lsn *where)
{
	if (r->state != RS_END) {
		if (where)
			*where = CF_LSN(r->gen, r->off);
		return 0;
	}
	if (where)
		*where = r->end_at;
	return r->torn;
}

const struct cf_log_file_header *cf_log_reader_header(cf_log_reader *r)
{
	return &r->hdr;
}

/* ---- payload decoders ---- */

static int payload_error(const cf_log_rec *rec, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int payload_error(const cf_log_rec *rec, const char *fmt, ...)
{
	char detail[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	return CF_ERROR(COFFER_E_LOG_CORRUPT,
			CF_OBJ(CF_GEN(CF_LSN_GEN(rec->lsn)), CF_OFF(CF_LSN_OFF(rec->lsn))),
			"log record %s at %010u:%010u is malformed: %s", cf_log_type_name(rec->type),
			CF_LSN_GEN(rec->lsn), CF_LSN_OFF(rec->lsn), detail);
}

static int want_type(const cf_log_rec *rec, uint16_t type)
{
	if (rec->type == type)
		return COFFER_OK;
	return CF_ERROR(COFFER_E_INTERNAL, CF_OBJ(CF_GEN(CF_LSN_GEN(rec->lsn)), CF_OFF(CF_LSN_OFF(rec->lsn))),
			"log record at %010u:%010u is %s, decoded as %s", CF_LSN_GEN(rec->lsn),
			CF_LSN_OFF(rec->lsn), cf_log_type_name(rec->type), cf_log_type_name(type));
}

int cf_log_decode_page_image(const cf_log_rec *rec, cf_pgno *pgno, const uint8_t **page,
			     size_t *page_len)
{
	CF_RET(want_type(rec, CF_LOG_PAGE_IMAGE));
	if (rec->len <= CF_LOG_PAGE_HEAD)
		return payload_error(rec, "payload of %zu bytes, need more than %u", rec->len,
				     CF_LOG_PAGE_HEAD);
	*pgno = cf_get32(rec->payload);
	*page = rec->payload + CF_LOG_PAGE_HEAD;
	*page_len = rec->len - CF_LOG_PAGE_HEAD;
	return COFFER_OK;
}

int cf_log_decode_page_diff(const cf_log_rec *rec, uint32_t page_size, cf_pgno *pgno,
			    uint32_t *nranges)
{
	CF_RET(want_type(rec, CF_LOG_PAGE_DIFF));
	if (rec->len < CF_LOG_DIFF_HEAD)
		return payload_error(rec, "payload of %zu bytes, need at least %u", rec->len,
				     CF_LOG_DIFF_HEAD);
	uint32_t n = cf_get32(rec->payload + 4);
	size_t pos = CF_LOG_DIFF_HEAD;
	for (uint32_t i = 0; i < n; i++) {
		if (rec->len - pos < CF_LOG_DIFF_RANGE)
			return payload_error(rec, "range %u of %u is cut off", i, n);
		uint32_t off = cf_get32(rec->payload + pos), len = cf_get32(rec->payload + pos + 4);
		pos += CF_LOG_DIFF_RANGE;
		if (len > rec->len - pos)
			return payload_error(rec, "range %u has %u bytes, more than the record holds",
					     i, len);
		if (page_size && ((uint64_t)off + len > page_size))
			return payload_error(rec, "range %u ends at byte %llu, beyond the page size %u",
					     i, (unsigned long long)off + len, page_size);
		pos += len;
	}
	if (pos != rec->len)
		return payload_error(rec, "%zu bytes follow the last of its %u ranges",
				     rec->len - pos, n);
	*pgno = cf_get32(rec->payload);
	*nranges = n;
	return COFFER_OK;
}

int cf_log_page_diff_next(const cf_log_rec *rec, size_t *pos, uint32_t *off, uint32_t *len,
			  const uint8_t **bytes)
{
	if (*pos < CF_LOG_DIFF_HEAD)
		*pos = CF_LOG_DIFF_HEAD;
	if (*pos > rec->len || rec->len - *pos < CF_LOG_DIFF_RANGE)
		return 0;
	uint32_t l = cf_get32(rec->payload + *pos + 4);
	if (l > rec->len - *pos - CF_LOG_DIFF_RANGE)
		return 0;
	*off = cf_get32(rec->payload + *pos);
	*len = l;
	*bytes = rec->payload + *pos + CF_LOG_DIFF_RANGE;
	*pos += CF_LOG_DIFF_RANGE + l;
	return 1;
}

int cf_log_page_diff_apply(const cf_log_rec *rec, uint8_t *page, uint32_t page_size)
{
	cf_pgno pgno;
	uint32_t n, off, len;
	const uint8_t *bytes;
	size_t pos = 0;
	CF_RET(cf_log_decode_page_diff(rec, page_size, &pgno, &n));
	while (cf_log_page_diff_next(rec, &pos, &off, &len, &bytes))
		memcpy(page + off, bytes, len);
	return COFFER_OK;
}

int cf_log_decode_commit(const cf_log_rec *rec, uint64_t *txn, int64_t *time_us)
{
	CF_RET(want_type(rec, CF_LOG_COMMIT));
	if (rec->len != CF_LOG_COMMIT_LEN)
		return payload_error(rec, "payload of %zu bytes, expected %u", rec->len,
				     CF_LOG_COMMIT_LEN);
	*txn = cf_get64(rec->payload);
	*time_us = (int64_t)cf_get64(rec->payload + 8);
	return COFFER_OK;
}

int cf_log_decode_checkpoint(const cf_log_rec *rec, cf_lsn *redo)
{
	CF_RET(want_type(rec, CF_LOG_CHECKPOINT));
	if (rec->len != CF_LOG_CHECKPOINT_LEN)
		return payload_error(rec, "payload of %zu bytes, expected %u", rec->len,
				     CF_LOG_CHECKPOINT_LEN);
	*redo = cf_get64(rec->payload);
	return COFFER_OK;
}
