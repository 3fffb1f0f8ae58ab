/*
 * make_seeds.c - write the seed corpus of the fuzz targets with Coffer's
 * real writers (make fuzz-seeds; the result is committed in
 * tests/fuzz/corpus/NAME/).
 *
 *   fuzz_make_seeds OUTDIR
 *
 * Each seed is the target's input format (see the top of each
 * fuzz_NAME.c): a flags byte and the bytes a writer produced -
 *   log_record    a log written by cf_log_create/open/append/roll (every
 *                 record type, two generations) and the log of a store
 *   page          the database file of a store (B+tree of a few hundred
 *                 keys with a branch, an overflow value, a second tree, a
 *                 free list), pages with their free middle cut out
 *   backup_frame  the frames of a backup as cf_bkp_send sends them
 *   backup_stream a whole full backup a client accepts (DATA and ZEROS,
 *                 coffer.db of 3 pages, one log generation), in each kind
 *                 of set, and one whose generation is offered by descriptor
 *   evlog         event log files written by coffer_event_write
 *   archive       backup sets written by cf_archive_* (compressed, with a
 *                 real 1 MiB log generation; uncompressed, with a cut log)
 *   resp          requests as clients send them
 *   config        cofferd configuration files
 * Every seed is at most 64 KiB. Randomness (signatures, ids) makes each run
 * produce different bytes; the shapes are the same.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <coffer/backup.h>
#include <coffer/coffer.h>
#include <coffer/event.h>

#include "backup/archive.h"
#include "backup/proto.h"
#include "common/err.h"
#include "engine/header.h"
#include "engine/log.h"
#include "fuzz_util.h"

#define SEED_MAX (64u << 10)

static const char *outdir;

static void ok(int rc, const char *what)
{
	if (rc != COFFER_OK)
		fz_die("%s: %s (%s)", what, coffer_error_last()->message,
		       coffer_code_name(rc) ? coffer_code_name(rc) : "?");
}

/* Write OUTDIR/TARGET/NAME: FLAGS (unless < 0), then P1 and P2. */
static void seed(const char *target, const char *name, int flags, const void *p1, size_t n1,
		 const void *p2, size_t n2)
{
	char dir[PATH_MAX], path[PATH_MAX];
	size_t n = (flags >= 0) + n1 + n2;
	if (n > SEED_MAX)
		fz_die("seed %s/%s would be %zu bytes (limit %u)", target, name, n, SEED_MAX);
	uint8_t *b = malloc(n ? n : 1);
	if (b == NULL)
		fz_die("no memory");
	size_t k = 0;
	if (flags >= 0)
		b[k++] = (uint8_t)flags;
	if (n1)
		memcpy(b + k, p1, n1);
	if (n2)
		memcpy(b + k + n1, p2, n2);
	fz_path(dir, outdir, target);
	fz_mkdir(dir);
	fz_path(path, dir, name);
	fz_write_file(path, b, n);
	free(b);
	printf("  %s/%s (%zu bytes)\n", target, name, n);
}

/* ---- stores ---- */

static void put_keys(coffer_env *env, const char *tree, int from, int to, int vlen)
{
	char v[8192];
	memset(v, 'v', sizeof v);
	for (int i = from; i < to;) {
		coffer_txn *t;
		ok(coffer_txn_begin(env, 0, &t), "begin");
		for (int j = 0; j < 25 && i < to; j++, i++) {
			char k[32];
			snprintf(k, sizeof k, "key%06d", i);
			int n = snprintf(v, sizeof v, "value %d", i);
			v[n] = 'v';
			ok(coffer_put(t, tree, k, strlen(k), v, (size_t)(vlen > n ? vlen : n), 0), "put");
		}
		ok(coffer_txn_commit(t), "commit");
	}
}

static void del_keys(coffer_env *env, const char *tree, int from, int to)
{
	coffer_txn *t;
	ok(coffer_txn_begin(env, 0, &t), "begin");
	for (int i = from; i < to; i++) {
		char k[32];
		snprintf(k, sizeof k, "key%06d", i);
		ok(coffer_del(t, tree, k, strlen(k)), "del");
	}
	ok(coffer_txn_commit(t), "commit");
}

/* A store in DIR with page size PS: KEYS keys in "main", a value of
 * 6000 bytes (overflow pages), a second tree, deletions (free pages). */
static void make_store(const char *dir, uint32_t ps, int keys)
{
	coffer_env_options o;
	coffer_env_options_init(&o);
	o.flags = COFFER_ENV_CREATE;
	o.page_size = ps;
	o.log_file_size = 1u << 20;
	o.checkpoint_seconds = 3600;
	coffer_env *env;
	ok(coffer_env_open(&env, dir, &o), "open a store");
	put_keys(env, "main", 0, keys, 0);
	ok(coffer_env_checkpoint(env), "checkpoint");
	put_keys(env, "main", keys, keys + 1, 6000);
	put_keys(env, "other", 0, 5, 20);
	if (keys >= 40)
		del_keys(env, "main", keys / 4, keys / 4 + keys / 8);
	ok(coffer_env_close(env), "close a store");
}

/* ---- log_record ---- */

/* The image of generation file PATH the target takes: the 64 header bytes,
 * then the records up to END (an offset in the file). */
static size_t gen_image(const char *path, uint32_t end, uint8_t *out, size_t cap)
{
	size_t n;
	uint8_t *f = fz_read_file(path, &n);
	if (n < end || end < CF_LOG_HDR_SIZE || CF_LOG_HDR_USED + end - CF_LOG_HDR_SIZE > cap)
		fz_die("log file %s: %zu bytes, records end at %u", path, n, end);
	memcpy(out, f, CF_LOG_HDR_USED);
	memcpy(out + CF_LOG_HDR_USED, f + CF_LOG_HDR_SIZE, end - CF_LOG_HDR_SIZE);
	free(f);
	return CF_LOG_HDR_USED + end - CF_LOG_HDR_SIZE;
}

/* The end offset of the records of each generation in LOGDIR (ends[g]). */
static void log_ends(const char *logdir, uint32_t *ends, uint32_t maxgen)
{
	cf_log_reader *r;
	cf_log_rec rec;
	ok(cf_log_reader_open(&r, logdir, NULL, 0), "open the log");
	while (cf_log_reader_next(r, &rec) == COFFER_OK)
		if (CF_LSN_GEN(rec.end) <= maxgen)
			ends[CF_LSN_GEN(rec.end)] = CF_LSN_OFF(rec.end);
	cf_log_reader_close(r);
	coffer_error_clear();
}

static void seeds_log(const char *tmp)
{
	char logdir[PATH_MAX], p1[PATH_MAX], p2[PATH_MAX];
	uint8_t sig[16], page[4096], hist[CF_HISTORY_SIZE] = {0}, head[4], commit[16], ckpt[8];
	fz_path(logdir, tmp, "log");
	memset(sig, 0x5A, sizeof sig);
	cf_log_options lo = {.file_size = 1u << 20};
	ok(cf_log_create(logdir, sig, &lo), "cf_log_create");
	cf_log *log;
	ok(cf_log_open(&log, logdir, sig, CF_LSN(1, CF_LOG_HDR_SIZE), &lo), "cf_log_open");

	cf_page_init(page, sizeof page, 7, CF_PT_LEAF);
	memcpy(page + 100, "some page content", 17);
	cf_log_encode_page_head(head, 7);
	cf_log_range ranges[2] = {{40, 8}, {4000, 16}};
	size_t dn = cf_log_page_diff_size(ranges, 2);
	uint8_t *diff = malloc(dn);
	cf_log_encode_page_diff(diff, 7, page, ranges, 2);
	cf_log_encode_commit(commit, 42, 1700000000000000);
	cf_log_encode_checkpoint(ckpt, CF_LSN(1, CF_LOG_HDR_SIZE));
	cf_log_in batch[] = {
		{CF_LOG_PAGE_IMAGE, head, sizeof head, page, sizeof page},
		{CF_LOG_PAGE_DIFF, diff, dn, NULL, 0},
		{CF_LOG_COMMIT, commit, sizeof commit, NULL, 0},
		{CF_LOG_HEADER, hist, sizeof hist, NULL, 0},
		{CF_LOG_CHECKPOINT, ckpt, sizeof ckpt, NULL, 0},
		{CF_LOG_NOOP, "noop", 4, NULL, 0},
	};
	ok(cf_log_append(log, batch, 6, NULL, NULL), "cf_log_append");
	ok(cf_log_roll(log, NULL), "cf_log_roll");
	cf_log_encode_commit(commit, 43, 1700000000000001);
	cf_log_in batch2[] = {
		{CF_LOG_PAGE_DIFF, diff, dn, NULL, 0},
		{CF_LOG_COMMIT, commit, sizeof commit, NULL, 0},
	};
	ok(cf_log_append(log, batch2, 2, NULL, NULL), "cf_log_append");
	ok(cf_log_close(log), "cf_log_close");
	free(diff);

	uint32_t ends[3] = {0};
	log_ends(logdir, ends, 2);
	cf_log_gen_path(p1, sizeof p1, logdir, 1);
	cf_log_gen_path(p2, sizeof p2, logdir, 2);
	static uint8_t g1[SEED_MAX], g2[SEED_MAX];
	size_t n1 = gen_image(p1, ends[1], g1, sizeof g1);
	size_t n2 = gen_image(p2, ends[2], g2, sizeof g2);
	seed("log_record", "gen1", 0x00, g1, n1, NULL, 0);
	seed("log_record", "gen1-fix", 0x01, g1, n1, NULL, 0);
	seed("log_record", "two-gens-extended", 0x02, g1, n1, g2, n2);
	seed("log_record", "two-gens-fix-sig", 0x07, g1, n1, g2, n2);
	seed("log_record", "gen2-alone-8k", 0x18, g2, n2, NULL, 0);
}

static void seeds_log_of_store(const char *store)
{
	char logdir[PATH_MAX], p1[PATH_MAX];
	static uint8_t g1[SEED_MAX];
	uint32_t ends[2] = {0};
	fz_path(logdir, store, "log");
	log_ends(logdir, ends, 1);
	cf_log_gen_path(p1, sizeof p1, logdir, 1);
	size_t n1 = gen_image(p1, ends[1], g1, sizeof g1);
	seed("log_record", "store", 0x02, g1, n1, NULL, 0);
}

/* ---- page ---- */

/* Encode page PG (PS bytes) as the page target takes it: u16 head length,
 * u16 tail length, head, tail - the longest run of zeroes is left out. */
static size_t page_record(const uint8_t *pg, uint32_t ps, uint8_t *out)
{
	size_t best = 0, best_at = ps, run = 0;
	for (size_t i = 0; i <= ps; i++) {
		if (i < ps && pg[i] == 0) {
			run++;
			continue;
		}
		if (run > best) {
			best = run;
			best_at = i - run;
		}
		run = 0;
	}
	size_t hl = best ? best_at : ps, tl = best ? ps - best_at - best : 0;
	cf_put16(out, (uint16_t)(hl == 65536 ? 0 : hl));
	cf_put16(out + 2, (uint16_t)tl);
	memcpy(out + 4, pg, hl);
	memcpy(out + 4 + hl, pg + ps - tl, tl);
	return 4 + hl + tl;
}

static void seeds_page(const char *store, uint32_t ps, unsigned psbits, const char *tag)
{
	char db[PATH_MAX], name[64];
	size_t n;
	fz_path(db, store, "coffer.db");
	uint8_t *f = fz_read_file(db, &n);
	static uint8_t enc[4 * SEED_MAX];
	const char key[] = "key000050";
	size_t k = 0;
	enc[k++] = sizeof key - 1;
	memcpy(enc + k, key, sizeof key - 1);
	k += sizeof key - 1;
	size_t npages = n / ps;
	for (size_t p = 0; p < npages && k + 4 + ps < sizeof enc; p++)
		k += page_record(f + p * ps, ps, enc + k);
	free(f);
	if (k > SEED_MAX - 2)
		fz_die("page seed of %zu pages is %zu bytes", npages, k);
	/* flags, root selector: see fuzz_page.c */
	uint8_t pre[2];
	pre[0] = (uint8_t)(psbits | 0x08);
	pre[1] = 255;
	snprintf(name, sizeof name, "%s-catalog-sealed", tag);
	seed("page", name, -1, pre, 2, enc, k);
	pre[0] = (uint8_t)psbits;
	pre[1] = 0;
	snprintf(name, sizeof name, "%s-as-stored", tag);
	seed("page", name, -1, pre, 2, enc, k);
	pre[0] = (uint8_t)(psbits | 0x18 | 0x20);
	pre[1] = 255;
	snprintf(name, sizeof name, "%s-catalog-change", tag);
	seed("page", name, -1, pre, 2, enc, k);
}

/* ---- backup_frame ---- */

/* A socket pair whose first end takes frames (cf_bkp_send on *S). */
static void frames_open(int sv[2], struct cf_stream *s)
{
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		fz_die("socketpair: %s", strerror(errno));
	int big = 1 << 20;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
	memset(s, 0, sizeof *s);
	s->fd = sv[0];
	strcpy(s->peer, "seed");
}

/* The bytes sent on the pair into OUT (at most CAP); the pair closed. */
static size_t frames_close(int sv[2], uint8_t *out, size_t cap)
{
	shutdown(sv[0], SHUT_WR);
	size_t n = 0;
	ssize_t k;
	while ((k = read(sv[1], out + n, cap - n)) > 0)
		n += (size_t)k;
	close(sv[0]);
	close(sv[1]);
	return n;
}

/* The INFO of a full backup of NPAGES 4 KiB pages, generation 1. */
static void full_info(uint8_t info[CF_BKP_INFO_LEN], uint64_t npages, int id)
{
	struct coffer_backup_info bi = {.type = COFFER_BACKUP_FULL, .page_size = 4096, .npages = npages,
					.redo_lsn = CF_LSN(1, 4096), .gen_first = 1, .gen_last = 1,
					.start_us = 1700000000000000};
	memset(bi.id, id, 16);
	memset(bi.signature, id + 1, 16);
	strcpy(bi.who, "uid 1000");
	cf_bkp_info_encode(&bi, info);
}

static void seeds_frames(void)
{
	int sv[2];
	struct cf_stream s;
	frames_open(sv, &s);
	uint8_t info[CF_BKP_INFO_LEN], data[512];
	full_info(info, 2, 1);
	for (size_t i = 0; i < sizeof data; i++)
		data[i] = (uint8_t)i;
	uint64_t size = sizeof data;
	uint32_t gen = 1;
	uint8_t endp[16] = {0};
	coffer_error e = {0};
	e.code = COFFER_E_LOG_MISSING;
	e.page = -1;
	e.generation = 3;
	e.offset = -1;
	strcpy(e.message, "log generation 3 is missing");
	strcpy(e.file, "/srv/coffer/log");

	const char line[] = "+COFFER-BACKUP 1\r\n";
	if (write(sv[0], line, sizeof line - 1) != (ssize_t)sizeof line - 1)
		fz_die("write");
	ok(cf_bkp_send(&s, BKF_INFO, info, sizeof info, NULL, 0), "send");
	ok(cf_bkp_send_file(&s, "coffer.db", size), "send");
	ok(cf_bkp_send(&s, BKF_DATA, data, sizeof data, NULL, 0), "send");
	ok(cf_bkp_send(&s, BKF_FILE_END, &size, sizeof size, NULL, 0), "send");
	ok(cf_bkp_send(&s, BKF_ROLLED, &gen, sizeof gen, NULL, 0), "send");
	ok(cf_bkp_send_file(&s, "log/0000000001.log", size), "send");
	ok(cf_bkp_send(&s, BKF_DATA, data, sizeof data, NULL, 0), "send");
	ok(cf_bkp_send(&s, BKF_FILE_END, &size, sizeof size, NULL, 0), "send");
	ok(cf_bkp_send(&s, BKF_END, endp, sizeof endp, NULL, 0), "send");
	ok(cf_bkp_send(&s, BKF_CONFIRM, &gen, sizeof gen, NULL, 0), "send");
	ok(cf_bkp_send(&s, BKF_ABORT, NULL, 0, NULL, 0), "send");
	ok(cf_bkp_send_error(&s, &e), "send");
	static uint8_t buf[SEED_MAX];
	size_t n = frames_close(sv, buf, sizeof buf);
	size_t skip = sizeof line - 1;
	seed("backup_frame", "session-with-reply-line", 0x02, buf, n, NULL, 0);
	seed("backup_frame", "frames", 0x00, buf + skip, n - skip, NULL, 0);
	seed("backup_frame", "frames-fix", 0x01, buf + skip, n - skip, NULL, 0);
}

/* ---- backup_stream ---- */

/* The frames of a full backup as cofferd sends them after its answer line:
 * coffer.db of 3 pages (DATA, then a ZEROS run), ROLLED 1, then generation
 * 1 as a stream (FILE) or, with FD, offered by descriptor (FILE_FD; the
 * harness passes none, so the client answers FD_FAIL). */
static size_t stream_frames(uint8_t *out, size_t cap, int fd)
{
	int sv[2];
	struct cf_stream s;
	frames_open(sv, &s);
	uint8_t info[CF_BKP_INFO_LEN], page[8192];
	full_info(info, 3, 3);
	for (size_t i = 0; i < sizeof page; i++)
		page[i] = (uint8_t)(i * 7);
	uint64_t db = 3 * 4096, lg = 8192;
	uint32_t gen = 1, z4k = 4096;
	ok(cf_bkp_send(&s, BKF_INFO, info, sizeof info, NULL, 0), "send");
	ok(cf_bkp_send_file(&s, "coffer.db", db), "send");
	ok(cf_bkp_send(&s, BKF_DATA, page, sizeof page, NULL, 0), "send");
	ok(cf_bkp_send(&s, BKF_ZEROS, &z4k, 4, NULL, 0), "send");
	ok(cf_bkp_send(&s, BKF_FILE_END, &db, sizeof db, NULL, 0), "send");
	ok(cf_bkp_send(&s, BKF_ROLLED, &gen, sizeof gen, NULL, 0), "send");
	if (fd) {
		uint8_t p[10 + 18];
		uint16_t l = 18;
		memcpy(p, &lg, 8);
		memcpy(p + 8, &l, 2);
		memcpy(p + 10, "log/0000000001.log", 18);
		ok(cf_bkp_send(&s, BKF_FILE_FD, p, sizeof p, NULL, 0), "send");
	}
	ok(cf_bkp_send_file(&s, "log/0000000001.log", lg), "send");
	ok(cf_bkp_send(&s, BKF_DATA, page, 4096, NULL, 0), "send");
	ok(cf_bkp_send(&s, BKF_ZEROS, &z4k, 4, NULL, 0), "send");
	ok(cf_bkp_send(&s, BKF_FILE_END, &lg, sizeof lg, NULL, 0), "send");
	return frames_close(sv, out, cap);
}

static void seeds_stream(void)
{
	static uint8_t b[SEED_MAX];
	size_t n = stream_frames(b, sizeof b, 0);
	seed("backup_stream", "full", 0x00, b, n, NULL, 0);
	seed("backup_stream", "full-fix", 0x01, b, n, NULL, 0);
	seed("backup_stream", "full-zstd", 0x04, b, n, NULL, 0);
	seed("backup_stream", "full-dir", 0x08, b, n, NULL, 0);
	n = stream_frames(b, sizeof b, 1);
	seed("backup_stream", "full-fd-offer", 0x03, b, n, NULL, 0);
}

/* ---- evlog ---- */

static void seeds_evlog(const char *tmp)
{
	char data[PATH_MAX], f1[PATH_MAX], f2[PATH_MAX];
	fz_path(data, tmp, "evdata");
	fz_mkdir(data);
	coffer_evlog_options o = COFFER_EVLOG_OPTIONS_INIT;
	o.flags = COFFER_EVLOG_NO_SYSTEM;
	o.max_file_bytes = 300; /* two events a file */
	coffer_evlog *ev;
	ok(coffer_evlog_open(&ev, data, &o), "coffer_evlog_open");
	coffer_evfield f[3] = {{"DATA", "/srv/coffer"}, {"PID", "4242"}, {"peer", "uid 1000"}};
	ok(coffer_event_write(ev, COFFER_EV_SERVER_STARTED, f, 2, "cofferd started on %s", "/srv/coffer"),
	   "event");
	ok(coffer_event_write(ev, COFFER_EV_PROTOCOL_ERROR, f + 2, 1, NULL), "event");
	coffer_error e = {0};
	e.code = COFFER_E_PAGE_CHECKSUM;
	e.page = 17;
	e.generation = -1;
	e.offset = 139264;
	strcpy(e.message, "page 17 failed its checksum: \xc3\xa9t\xc3\xa9");
	strcpy(e.file, "/srv/coffer/coffer.db");
	ok(coffer_event_error(ev, COFFER_EV_PAGE_CHECKSUM, &e, NULL, 0), "event");
	ok(coffer_event_write(ev, COFFER_EV_SERVER_STOPPED, NULL, 0, NULL), "event");
	coffer_evlog_close(ev);
	fz_path(f1, data, "events/events-000001.log");
	fz_path(f2, data, "events/events-000002.log");
	size_t n1, n2;
	uint8_t *b1 = fz_read_file(f1, &n1), *b2 = fz_read_file(f2, &n2);
	seed("evlog", "one-file", 0x00, b1, n1, NULL, 0);
	seed("evlog", "two-files", 0x00, b1, n1, b2, n2);
	seed("evlog", "two-files-fix-stop", 0x03, b1, n1, b2, n2);
	/* A torn record at the end and garbage before a good record. */
	seed("evlog", "torn-end", 0x00, b1, n1 - 7, NULL, 0);
	static uint8_t g[SEED_MAX];
	memcpy(g, b2, 16);
	memcpy(g + 16, "garbage\xff\xc5", 9);
	memcpy(g + 25, b2 + 16, n2 - 16);
	seed("evlog", "garbage-then-record", 0x00, g, n2 + 9, NULL, 0);
	free(b1);
	free(b2);
}

/* ---- archive ---- */

static void set_file(cf_archive_writer *w, const char *name, const uint8_t *p, size_t n)
{
	ok(cf_archive_file_begin(w, name), "cf_archive_file_begin");
	ok(cf_archive_file_write(w, p, n), "cf_archive_file_write");
	ok(cf_archive_file_end(w), "cf_archive_file_end");
}

/* A full set of STORE at PATH. CUT_LOG: store only the log's header and
 * the first 4 KiB of its records (a seed stays small). */
static void write_set(const char *store, const char *path, int level, int cut_log)
{
	char db[PATH_MAX], lg[PATH_MAX], logdir[PATH_MAX];
	size_t dn, ln;
	fz_path(db, store, "coffer.db");
	fz_path(logdir, store, "log");
	cf_log_gen_path(lg, sizeof lg, logdir, 1);
	uint8_t *d = fz_read_file(db, &dn), *l = fz_read_file(lg, &ln);
	struct cf_header h;
	ok(cf_header_decode(d, 4096, 0, db, &h), "header");
	if (cut_log) {
		uint32_t ends[2] = {0};
		log_ends(logdir, ends, 1);
		ln = ends[1] < 2 * CF_LOG_HDR_SIZE ? ends[1] : 2 * CF_LOG_HDR_SIZE;
	}
	cf_set_meta m = {.type = CF_SET_FULL, .page_size = h.page_size, .gen_first = 1,
			 .gen_last = 1, .redo_lsn = h.redo_lsn, .start_us = 1700000000000000,
			 .end_us = 1700000001000000};
	memcpy(m.signature, h.signature, 16);
	memset(m.set_id, 0x33, 16);
	struct cf_archive_options o = {.compress_level = level, .threads = 1};
	cf_archive_writer *w;
	ok(cf_archive_create(&w, path, &o), "cf_archive_create");
	set_file(w, "coffer.db", d, dn);
	set_file(w, "log/0000000001.log", l, ln);
	ok(cf_archive_finish(w, &m), "cf_archive_finish");
	free(d);
	free(l);
}

static void seeds_archive(const char *tmp, const char *store)
{
	char p1[PATH_MAX], p2[PATH_MAX];
	size_t n1, n2;
	fz_path(p1, tmp, "set-zstd.cbk");
	fz_path(p2, tmp, "set-plain.cbk");
	write_set(store, p1, 3, 0);
	write_set(store, p2, 0, 1);
	uint8_t *b1 = fz_read_file(p1, &n1), *b2 = fz_read_file(p2, &n2);
	seed("archive", "full-zstd", 0x00, b1, n1, NULL, 0);
	seed("archive", "full-zstd-stream", 0x02, b1, n1, NULL, 0);
	seed("archive", "full-plain-cut-log", 0x00, b2, n2, NULL, 0);
	seed("archive", "full-plain-cut-log-fix-stream", 0x03, b2, n2, NULL, 0);
	free(b1);
	free(b2);
}

/* ---- resp and config: what clients and operators write ---- */

/* A string literal as a whole seed (it may hold NUL bytes). */
#define TEXT(target, name, lit) seed((target), (name), -1, (lit), sizeof(lit) - 1, NULL, 0)

static void seeds_resp(void)
{
	/* byte 0: limits and read size, byte 1: seed; see fuzz_resp.c */
	TEXT("resp", "multibulk",
	     "\x00\x00*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
	TEXT("resp", "inline-pieces",
	     "\x0d\x07PING\r\nSET k \"a \\x41\\n\\\"b\" 'it\\'s'\r\n\r\nECHO hello\n");
	TEXT("resp", "auth-before-limits",
	     "\x05\x03*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n*1\r\n$4\r\nPING\r\n");
	TEXT("resp", "small-limits-errors", "\x02\x00*5\r\n$1\r\na\r\n$70\r\n");
	TEXT("resp", "empty-and-negative", "\x00\x00*0\r\n*-1\r\n*1\r\n$0\r\n\r\n");
	/* A bulk of 32 KiB and more goes into its own buffer (resp_read_target). */
	static char big[40000];
	int k = snprintf(big, sizeof big, "\x20\x09*2\r\n$3\r\nSET\r\n$%d\r\n", 33000);
	memset(big + k, 'x', 33000);
	memcpy(big + k + 33000, "\r\n*1\r\n$4\r\nPING\r\n", 16);
	seed("resp", "big-bulk", -1, big, (size_t)k + 33000 + 16, NULL, 0);
}

static void seeds_config(void)
{
	TEXT("config", "full",
	     "; cofferd configuration\n"
	     "[cofferd]\n"
	     "data = /srv/coffer\n"
	     "listen = unix:/run/coffer/cofferd.sock\n"
	     "listen = 127.0.0.1:6379\n"
	     "circular-logging = yes\n"
	     "tls-cert = /etc/coffer/cert.pem\n"
	     "tls-key = /etc/coffer/key.pem\n"
	     "password-file = /etc/coffer/password\n"
	     "backup-group = coffer-backup\n"
	     "cache-size = 256M\n"
	     "page-size = 8K\n"
	     "log-file-size = 64M\n"
	     "workers = 8\n"
	     "max-clients = 1000\n"
	     "max-bulk-length = 16M\n"
	     "max-output-buffer = 1G\n");
	TEXT("config", "no-section", "data=/tmp/x\ncircular-logging=no\nworkers=1\n");
	TEXT("config", "bad", "[other]\nkey = value\n");
	TEXT("config", "limits", "[cofferd]\nmax-bulk-length = 2G\nmax-output-buffer = 64K\n");
	TEXT("config", "timeouts", "[cofferd]\nhandshake-timeout = 5\nrequest-timeout = 0\ntimeout = 300\n");
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: fuzz_make_seeds OUTDIR\n");
		return 2;
	}
	outdir = argv[1];
	fz_mkdir(outdir);
	const char *tmp = fz_tmpdir();
	char small[PATH_MAX], tree[PATH_MAX], tree8[PATH_MAX];
	fz_path(small, tmp, "small");
	fz_path(tree, tmp, "tree");
	fz_path(tree8, tmp, "tree8k");
	printf("fuzz_make_seeds: writing %s\n", outdir);
	make_store(small, 4096, 12);
	make_store(tree, 4096, 300);
	make_store(tree8, 8192, 200);
	seeds_log(tmp);
	seeds_log_of_store(small);
	seeds_page(tree, 4096, 0, "4k");
	seeds_page(tree8, 8192, 1, "8k");
	seeds_page(small, 4096, 0, "4k-small");
	seeds_frames();
	seeds_stream();
	seeds_evlog(tmp);
	seeds_archive(tmp, small);
	seeds_resp();
	seeds_config();
	return 0;
}
