/* test_log.c - the write-ahead log: writer, group commit, reader, damage.
 *
 * Every test works in its own scratch directory with 1 MiB generations so
 * that rolls happen after a few hundred records. The group-commit test also
 * prints a small benchmark as TAP comments ("# bench: ..."); set
 * COFFER_LOG_BENCH_MS to run each measurement longer (default 400 ms).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/os.h"
#include "engine/log.h"

#define MiB (1u << 20)

static const uint8_t SIG[16] = {0xc0, 0xff, 0xee, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};
static const uint8_t OTHER_SIG[16] = {0xde, 0xad, 0xbe, 0xef};

/* ---- scratch directories and files ---- */

struct t {
	char dir[PATH_MAX];
	char logdir[PATH_MAX];
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	const char *tmp = getenv("TMPDIR");
	struct t *t = calloc(1, sizeof *t);
	snprintf(t->dir, sizeof t->dir, "%s/coffer-test-log-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(t->dir) == NULL) {
		free(t);
		return -1;
	}
	if (cf_path_join(t->logdir, sizeof t->logdir, t->dir, "log") != COFFER_OK) {
		free(t);
		return -1;
	}
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;
	cf_os = cf_os_real;
	nftw(t->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(t);
	return 0;
}

static void gen_path(struct t *t, uint32_t gen, char *out)
{
	assert_int_equal(cf_log_gen_path(out, PATH_MAX, t->logdir, gen), COFFER_OK);
}

static int gen_present(struct t *t, uint32_t gen)
{
	char p[PATH_MAX];
	gen_path(t, gen, p);
	return access(p, F_OK) == 0;
}

static void file_write(const char *path, uint64_t off, const void *buf, size_t n)
{
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
	close(fd);
}

static void file_read(const char *path, uint64_t off, void *buf, size_t n)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, n, (off_t)off), (ssize_t)n);
	close(fd);
}

static void flip_byte(struct t *t, cf_lsn at)
{
	char p[PATH_MAX];
	uint8_t b;
	gen_path(t, CF_LSN_GEN(at), p);
	file_read(p, CF_LSN_OFF(at), &b, 1);
	b ^= 0x40;
	file_write(p, CF_LSN_OFF(at), &b, 1);
}

static cf_log *new_log(struct t *t, uint32_t file_size)
{
	cf_log_options o = {.file_size = file_size};
	cf_log *log;
	assert_int_equal(cf_log_create(t->logdir, SIG, &o), COFFER_OK);
	assert_int_equal(cf_log_open(&log, t->logdir, SIG, CF_LSN(1, CF_LOG_HDR_SIZE), &o), COFFER_OK);
	return log;
}

static cf_log *reopen(struct t *t, cf_lsn end)
{
	cf_log_options o = {.file_size = MiB};
	cf_log *log;
	int rc = cf_log_open(&log, t->logdir, SIG, end, &o);
	if (rc != COFFER_OK)
		fprintf(stderr, "cf_log_open: %s\n", coffer_error_last()->message);
	assert_int_equal(rc, COFFER_OK);
	return log;
}

/* Deterministic payloads: record I has length len_of(I) and bytes fill(I). */
static size_t len_of(unsigned i)
{
	return (i * 7919u) % 3000u;
}

static void fill(uint8_t *p, size_t n, unsigned i)
{
	for (size_t k = 0; k < n; k++)
		p[k] = (uint8_t)(i * 131u + k * 7u + (k >> 8));
}

/* Append records FIRST..FIRST+N-1 (NOOP, with the payloads above), one per
 * batch, storing their LSNs. */
static void append_range(cf_log *log, unsigned first, unsigned n, cf_lsn *lsns)
{
	static uint8_t buf[4096];
	for (unsigned i = first; i < first + n; i++) {
		size_t len = len_of(i);
		fill(buf, len, i);
		cf_log_in in = {.type = CF_LOG_NOOP, .p1 = buf, .n1 = len / 3, .p2 = buf + len / 3,
				.n2 = len - len / 3};
		cf_lsn end;
		assert_int_equal(cf_log_append(log, &in, 1, &lsns[i - first], &end), COFFER_OK);
		assert_true(end > lsns[i - first]);
	}
}

/* Read the whole log from START and check records FIRST.. against LSNS.
 * Returns the count read; *WHERE and the torn flag from the reader. */
static unsigned read_check(struct t *t, cf_lsn start, unsigned first, const cf_lsn *lsns,
			   unsigned n, cf_lsn *where, int *torn)
{
	cf_log_reader *r;
	cf_log_rec rec;
	uint8_t buf[4096];
	unsigned i = 0;
	int rc;
	assert_int_equal(cf_log_reader_open(&r, t->logdir, SIG, start), COFFER_OK);
	while ((rc = cf_log_reader_next(r, &rec)) == COFFER_OK) {
		assert_true(i < n);
		size_t len = len_of(first + i);
		fill(buf, len, first + i);
		assert_int_equal(rec.lsn, lsns[i]);
		assert_int_equal(rec.type, CF_LOG_NOOP);
		assert_int_equal(rec.len, len);
		assert_memory_equal(rec.payload, buf, len);
		i++;
	}
	if (rc != COFFER_E_NOT_FOUND)
		fprintf(stderr, "reader: %s\n", coffer_error_last()->message);
	assert_int_equal(rc, COFFER_E_NOT_FOUND);
	int tr = cf_log_reader_torn(r, where);
	if (torn)
		*torn = tr;
	cf_log_reader_close(r);
	return i;
}

/* Read from START expecting error CODE; returns the error record. */
static const coffer_error *read_expect_error(struct t *t, const uint8_t *sig, cf_lsn start, int code)
{
	cf_log_reader *r = NULL;
	cf_log_rec rec;
	int rc = cf_log_reader_open(&r, t->logdir, sig, start);
	while (rc == COFFER_OK)
		rc = cf_log_reader_next(r, &rec);
	if (rc != code)
		fprintf(stderr, "expected %s, got %s: %s\n", coffer_code_name(code),
			coffer_code_name(rc), coffer_error_last()->message);
	assert_int_equal(rc, code);
	if (r) {
		/* Sticky: the same error again. */
		assert_int_equal(cf_log_reader_next(r, &rec), code);
		cf_log_reader_close(r);
	}
	return coffer_error_last();
}

/* ---- tests ---- */

static void test_roundtrip_generations(void **state)
{
	struct t *t = *state;
	enum { N = 2000 };
	static cf_lsn lsns[N];
	cf_log *log = new_log(t, MiB);
	append_range(log, 0, N, lsns);
	cf_lsn end = cf_log_end(log);
	assert_int_equal(cf_log_flush(log, end), COFFER_OK);
	assert_true(cf_log_durable(log) >= end);
	uint32_t gen = cf_log_current_gen(log);
	assert_true(gen >= 3); /* ~3 MB of records in 1 MiB files */
	assert_int_equal(cf_log_close(log), COFFER_OK);

	/* LSNs strictly increase, never cross a file end, 8-aligned. */
	for (unsigned i = 1; i < N; i++) {
		assert_true(lsns[i] > lsns[i - 1]);
		assert_int_equal(CF_LSN_OFF(lsns[i]) % 8, 0);
		assert_true(CF_LSN_OFF(lsns[i]) >= CF_LOG_HDR_SIZE);
	}
	uint32_t lo, hi;
	assert_int_equal(cf_log_scan_dir(t->logdir, &lo, &hi), COFFER_OK);
	assert_int_equal(lo, 1);
	assert_int_equal(hi, gen);

	cf_lsn where;
	int torn;
	assert_int_equal(read_check(t, 0, 0, lsns, N, &where, &torn), N);
	assert_false(torn);
	assert_int_equal(where, end);

	/* From the middle: a record boundary in a later generation. */
	unsigned mid = N / 2;
	assert_int_equal(read_check(t, lsns[mid], mid, lsns + mid, N - mid, &where, &torn), N - mid);

	/* Each header: generation, signature, link to the previous end. */
	for (uint32_t g = 2; g <= gen; g++) {
		char p[PATH_MAX];
		struct cf_log_file_header h;
		gen_path(t, g, p);
		assert_int_equal(cf_log_read_header(p, &h), COFFER_OK);
		assert_int_equal(h.generation, g);
		assert_int_equal(h.file_size, MiB);
		assert_memory_equal(h.sig, SIG, 16);
		assert_int_equal(CF_LSN_GEN(h.prev_end), g - 1);
	}

	/* Reopen at the end and keep going. */
	log = reopen(t, end);
	static cf_lsn more[100];
	append_range(log, N, 100, more);
	assert_int_equal(more[0], end);
	assert_int_equal(cf_log_close(log), COFFER_OK);
}

static void test_batch_and_roll(void **state)
{
	struct t *t = *state;
	static uint8_t big[400 * 1024];
	uint8_t small[100] = {0};
	cf_log *log = new_log(t, MiB);
	cf_lsn lsn[4], end;

	/* Fill gen 1 to within 1000 bytes of its end. */
	uint32_t left = MiB - CF_LOG_HDR_SIZE - 1000;
	while (left > 0) {
		uint32_t n = left > sizeof big ? (uint32_t)sizeof big : left;
		cf_log_in in = {.type = CF_LOG_NOOP, .p1 = big, .n1 = n - CF_LOG_REC_HDR};
		assert_int_equal(cf_log_append(log, &in, 1, NULL, &end), COFFER_OK);
		left -= n;
	}
	assert_int_equal(CF_LSN_OFF(end), MiB - 1000);
	/* A batch of 3 x 400 bytes does not fit in 1000: it starts in gen 2 whole. */
	cf_log_in b3[3];
	for (int i = 0; i < 3; i++)
		b3[i] = (cf_log_in){.type = CF_LOG_NOOP, .p1 = big, .n1 = 384};
	assert_int_equal(cf_log_append(log, b3, 3, lsn, &end), COFFER_OK);
	assert_int_equal(lsn[0], CF_LSN(2, CF_LOG_HDR_SIZE));
	assert_int_equal(lsn[1], CF_LSN(2, CF_LOG_HDR_SIZE + 400));
	assert_int_equal(lsn[2], CF_LSN(2, CF_LOG_HDR_SIZE + 800));
	assert_int_equal(end, CF_LSN(2, CF_LOG_HDR_SIZE + 1200));

	/* A batch larger than a generation continues into the next ones. */
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = (uint8_t)(i * 13);
	cf_log_in b4[4];
	for (int i = 0; i < 4; i++)
		b4[i] = (cf_log_in){.type = CF_LOG_PAGE_IMAGE, .p1 = small, .n1 = 4, .p2 = big,
				    .n2 = sizeof big};
	assert_int_equal(cf_log_append(log, b4, 4, lsn, &end), COFFER_OK);
	/* (Two such records fill a generation.) */
	assert_int_equal(lsn[0], CF_LSN(2, CF_LOG_HDR_SIZE + 1200));
	assert_int_equal(CF_LSN_GEN(lsn[1]), 2);
	assert_int_equal(lsn[2], CF_LSN(3, CF_LOG_HDR_SIZE));
	assert_int_equal(lsn[3], lsn[2] + CF_LOG_ALIGN_UP(CF_LOG_REC_HDR + 4 + sizeof big));

	/* Explicit roll: closes gen 3, durable at once. */
	uint32_t closed;
	cf_lsn before = cf_log_end(log);
	assert_int_equal(cf_log_roll(log, &closed), COFFER_OK);
	assert_int_equal(closed, 3);
	assert_int_equal(cf_log_current_gen(log), 4);
	assert_int_equal(cf_log_end(log), CF_LSN(4, CF_LOG_HDR_SIZE));
	assert_true(cf_log_durable(log) >= CF_LSN(4, CF_LOG_HDR_SIZE));
	cf_log_in nop = {.type = CF_LOG_NOOP, .p1 = small, .n1 = 10};
	assert_int_equal(cf_log_append(log, &nop, 1, lsn, NULL), COFFER_OK);
	assert_int_equal(lsn[0], CF_LSN(4, CF_LOG_HDR_SIZE));
	assert_int_equal(cf_log_roll(log, &closed), COFFER_OK);
	assert_int_equal(closed, 4);
	/* An empty generation can be closed too. */
	assert_int_equal(cf_log_roll(log, &closed), COFFER_OK);
	assert_int_equal(closed, 5);
	assert_int_equal(cf_log_close(log), COFFER_OK);

	char p[PATH_MAX];
	struct cf_log_file_header h;
	gen_path(t, 4, p);
	assert_int_equal(cf_log_read_header(p, &h), COFFER_OK);
	assert_int_equal(h.prev_end, before);

	/* Read it all back: the big records intact, the end clean in gen 6. */
	cf_log_reader *r;
	cf_log_rec rec;
	unsigned n = 0, images = 0;
	int rc;
	assert_int_equal(cf_log_reader_open(&r, t->logdir, NULL, 0), COFFER_OK);
	while ((rc = cf_log_reader_next(r, &rec)) == COFFER_OK) {
		n++;
		if (rec.type == CF_LOG_PAGE_IMAGE) {
			cf_pgno pgno;
			const uint8_t *page;
			size_t plen;
			assert_int_equal(cf_log_decode_page_image(&rec, &pgno, &page, &plen), COFFER_OK);
			assert_int_equal(plen, sizeof big);
			assert_memory_equal(page, big, plen);
			images++;
		}
	}
	assert_int_equal(rc, COFFER_E_NOT_FOUND);
	assert_int_equal(images, 4);
	cf_lsn where;
	assert_int_equal(cf_log_reader_torn(r, &where), 0);
	assert_int_equal(where, CF_LSN(6, CF_LOG_HDR_SIZE));
	assert_int_equal(cf_log_reader_header(r)->generation, 6);
	cf_log_reader_close(r);
	(void)n;
}

static void test_invalid_arguments(void **state)
{
	struct t *t = *state;
	cf_log_options o = {.file_size = MiB};
	cf_log *log = new_log(t, MiB), *l2;
	static uint8_t big[MiB];
	cf_log_in in = {.type = CF_LOG_NOOP, .p1 = big, .n1 = MiB - CF_LOG_HDR_SIZE};
	assert_int_equal(cf_log_append(log, &in, 1, NULL, NULL), COFFER_E_INVALID_ARGUMENT);
	in = (cf_log_in){.type = 99, .p1 = big, .n1 = 1};
	assert_int_equal(cf_log_append(log, &in, 1, NULL, NULL), COFFER_E_INVALID_ARGUMENT);
	/* The largest record that fits. */
	in = (cf_log_in){.type = CF_LOG_NOOP, .p1 = big, .n1 = MiB - CF_LOG_HDR_SIZE - CF_LOG_REC_HDR};
	assert_int_equal(cf_log_append(log, &in, 1, NULL, NULL), COFFER_OK);
	assert_int_equal(CF_LSN_GEN(cf_log_end(log)), 1);
	assert_int_equal(cf_log_roll(log, NULL), COFFER_OK);
	assert_int_equal(cf_log_close(log), COFFER_OK);

	assert_int_equal(cf_log_create(t->logdir, SIG, &o), COFFER_E_EXISTS);
	o.file_size = MiB + 1;
	assert_int_equal(cf_log_create(t->dir, SIG, &o), COFFER_E_INVALID_ARGUMENT);
	o.file_size = MiB;
	assert_int_equal(cf_log_open(&l2, t->logdir, SIG, CF_LSN(2, 4100), &o), COFFER_E_INVALID_ARGUMENT);
	assert_int_equal(cf_log_open(&l2, t->logdir, SIG, CF_LSN(2, MiB + 8), &o), COFFER_E_INVALID_ARGUMENT);
	assert_int_equal(cf_log_open(&l2, t->logdir, SIG, CF_LSN(7, 4096), &o), COFFER_E_LOG_MISSING);
	assert_int_equal(cf_log_open(&l2, t->logdir, OTHER_SIG, CF_LSN(2, 4096), &o), COFFER_E_LOG_MISMATCH);
	assert_true(gen_present(t, 2));
}

/* A roll just before a crash leaves an empty generation after the last
 * commit; point-in-time recovery stops before later generations. Opening at
 * the end recovery chose discards what follows it. */
static void test_open_discards_later(void **state)
{
	struct t *t = *state;
	static cf_lsn lsns[20];
	cf_log *log = new_log(t, MiB);
	append_range(log, 0, 10, lsns);
	cf_lsn end = cf_log_end(log);
	assert_int_equal(cf_log_roll(log, NULL), COFFER_OK);
	append_range(log, 10, 5, lsns + 10);
	assert_int_equal(cf_log_roll(log, NULL), COFFER_OK);
	assert_int_equal(cf_log_close(log), COFFER_OK);
	assert_true(gen_present(t, 3));

	log = reopen(t, end);
	struct cf_log_stats st;
	cf_log_get_stats(log, &st);
	assert_int_equal(st.discarded, 2);
	assert_false(gen_present(t, 2));
	assert_false(gen_present(t, 3));
	append_range(log, 10, 10, lsns + 10);
	assert_int_equal(lsns[10], end);
	uint32_t closed;
	assert_int_equal(cf_log_roll(log, &closed), COFFER_OK);
	assert_int_equal(closed, 1);
	end = cf_log_end(log);
	assert_int_equal(cf_log_close(log), COFFER_OK);
	cf_lsn where;
	int torn;
	assert_int_equal(read_check(t, 0, 0, lsns, 20, &where, &torn), 20);
	assert_false(torn);
	assert_int_equal(where, end);
}

/* ---- group commit ---- */

struct committer {
	cf_log *log;
	unsigned id, n;
	atomic_int *stop;
	cf_lsn *lsns; /* n entries, or NULL (benchmark) */
	uint64_t done;
	int rc;
};

static void *commit_thread(void *arg)
{
	struct committer *c = arg;
	static uint8_t page[8192];
	uint8_t diff[120], commit[CF_LOG_COMMIT_LEN], head[CF_LOG_PAGE_HEAD];
	memset(diff, (int)c->id, sizeof diff);
	cf_log_encode_page_head(head, c->id);
	for (unsigned i = 0; c->lsns ? i < c->n : !atomic_load(c->stop); i++) {
		/* In the checked run every 4th commit also logs a page image,
		 * so that buffer write-outs and rolls race with the flushes. */
		int img = c->lsns && i % 4 == 0;
		cf_log_in batch[2] = {
			{.type = CF_LOG_PAGE_DIFF, .p1 = diff, .n1 = sizeof diff},
			{.type = CF_LOG_COMMIT, .p1 = commit, .n1 = sizeof commit},
		};
		if (img)
			batch[0] = (cf_log_in){.type = CF_LOG_PAGE_IMAGE, .p1 = head, .n1 = sizeof head,
					       .p2 = page, .n2 = sizeof page};
		cf_log_encode_commit(commit, ((uint64_t)c->id << 32) | i, 0);
		cf_lsn lsn[2], end;
		c->rc = cf_log_append(c->log, batch, 2, lsn, &end);
		if (c->rc == COFFER_OK)
			c->rc = cf_log_flush(c->log, end);
		if (c->rc != COFFER_OK)
			break;
		if (c->lsns)
			c->lsns[i] = lsn[1];
		c->done++;
	}
	return NULL;
}

/* Rolls the log every 50 ms, as a backup would, while others commit. */
struct roller {
	cf_log *log;
	atomic_int *stop;
	unsigned rolls;
	int rc;
};

static void *roll_thread(void *arg)
{
	struct roller *ro = arg;
	struct timespec d = {.tv_nsec = 50 * 1000000};
	while (!atomic_load(ro->stop)) {
		nanosleep(&d, NULL);
		uint32_t closed;
		ro->rc = cf_log_roll(ro->log, &closed);
		if (ro->rc != COFFER_OK)
			break;
		ro->rolls++;
	}
	return NULL;
}

static int cmp_lsn(const void *a, const void *b)
{
	cf_lsn x = *(const cf_lsn *)a, y = *(const cf_lsn *)b;
	return x < y ? -1 : x > y;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Commits per second with NT threads for MS milliseconds. */
static void bench(struct t *t, unsigned nt, unsigned ms, cf_lsn *endp)
{
	cf_log_options o = {.file_size = CF_LOG_FILE_DEFAULT}; /* as a store by default */
	cf_log *log;
	assert_int_equal(cf_log_open(&log, t->logdir, SIG, *endp, &o), COFFER_OK);
	struct committer c[64];
	pthread_t th[64];
	atomic_int stop = 0;
	struct cf_log_stats st0, st;
	cf_log_get_stats(log, &st0);
	double t0 = now_s();
	for (unsigned i = 0; i < nt; i++) {
		c[i] = (struct committer){.log = log, .id = i, .stop = &stop};
		assert_int_equal(pthread_create(&th[i], NULL, commit_thread, &c[i]), 0);
	}
	struct timespec d = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&d, NULL);
	atomic_store(&stop, 1);
	uint64_t total = 0;
	for (unsigned i = 0; i < nt; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(c[i].rc, COFFER_OK);
		total += c[i].done;
	}
	double el = now_s() - t0;
	cf_log_get_stats(log, &st);
	uint64_t syncs = st.syncs - st0.syncs;
	printf("# bench: %2u committers: %8.0f commits/s, %6.0f fdatasync/s, %5.1f commits per "
	       "sync (%llu commits in %.2f s, %llu rolls)\n",
	       nt, (double)total / el, (double)syncs / el, syncs ? (double)total / (double)syncs : 0,
	       (unsigned long long)total, el, (unsigned long long)(st.rolls - st0.rolls));
	fflush(stdout);
	*endp = cf_log_end(log);
	assert_int_equal(cf_log_close(log), COFFER_OK);
}

static void test_group_commit(void **state)
{
	struct t *t = *state;
	enum { NT = 16, PER = 200 };
	cf_log *log = new_log(t, MiB);
	struct committer c[NT];
	pthread_t th[NT];
	static cf_lsn all[NT * PER];
	atomic_int stop = 0;
	struct roller ro = {.log = log, .stop = &stop};
	pthread_t rt;
	for (unsigned i = 0; i < NT; i++) {
		c[i] = (struct committer){.log = log, .id = i, .n = PER, .lsns = all + i * PER};
		assert_int_equal(pthread_create(&th[i], NULL, commit_thread, &c[i]), 0);
	}
	assert_int_equal(pthread_create(&rt, NULL, roll_thread, &ro), 0);
	for (unsigned i = 0; i < NT; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(c[i].rc, COFFER_OK);
	}
	atomic_store(&stop, 1);
	pthread_join(rt, NULL);
	assert_int_equal(ro.rc, COFFER_OK);
	assert_true(ro.rolls > 0);
	struct cf_log_stats st;
	cf_log_get_stats(log, &st);
	assert_int_equal(st.appends, NT * PER);
	/* Group commit: far fewer syncs than commits. */
	assert_true(st.syncs < NT * PER);
	printf("# group commit: %u commits by %u threads, %llu fdatasyncs, %llu rolls (%u explicit)\n",
	       NT * PER, NT, (unsigned long long)st.syncs, (unsigned long long)st.rolls, ro.rolls);
	cf_lsn end = cf_log_end(log);
	assert_true(cf_log_durable(log) >= end);
	assert_int_equal(cf_log_close(log), COFFER_OK);

	/* Every commit LSN a thread was told is durable is in the log, once. */
	qsort(all, NT * PER, sizeof all[0], cmp_lsn);
	cf_log_reader *r;
	cf_log_rec rec;
	unsigned k = 0, commits = 0;
	int rc;
	assert_int_equal(cf_log_reader_open(&r, t->logdir, SIG, 0), COFFER_OK);
	while ((rc = cf_log_reader_next(r, &rec)) == COFFER_OK) {
		if (rec.type != CF_LOG_COMMIT)
			continue;
		commits++;
		assert_true(k < NT * PER);
		assert_int_equal(rec.lsn, all[k]);
		k++;
	}
	assert_int_equal(rc, COFFER_E_NOT_FOUND);
	assert_int_equal(commits, NT * PER);
	cf_log_reader_close(r);

	/* The benchmark. */
	const char *ms_env = getenv("COFFER_LOG_BENCH_MS");
	unsigned ms = ms_env ? (unsigned)atoi(ms_env) : 400;
	static const unsigned threads[] = {1, 4, 16, 50};
	for (unsigned i = 0; i < sizeof threads / sizeof threads[0]; i++)
		bench(t, threads[i], ms, &end);
}

/* ---- reopening, torn tails, damage ---- */

static void test_reopen_zeroes_tail(void **state)
{
	struct t *t = *state;
	static cf_lsn lsns[50];
	cf_log *log = new_log(t, MiB);
	append_range(log, 0, 50, lsns);
	cf_lsn end = cf_log_end(log);
	assert_int_equal(cf_log_close(log), COFFER_OK);

	/* Stale bytes after the end: a copy of a valid record (valid at its own
	 * LSN only) and garbage further on. */
	char p[PATH_MAX];
	uint8_t rec[4096], junk[8192];
	gen_path(t, 1, p);
	uint32_t len0 = (uint32_t)CF_LOG_ALIGN_UP(CF_LOG_REC_HDR + len_of(1));
	file_read(p, CF_LSN_OFF(lsns[1]), rec, len0);
	file_write(p, CF_LSN_OFF(end), rec, len0);
	memset(junk, 0x5a, sizeof junk);
	file_write(p, CF_LSN_OFF(end) + 4096, junk, sizeof junk);

	/* The LSN seed: the copied record does not validate at the end. */
	cf_lsn where;
	int torn;
	assert_int_equal(read_check(t, 0, 0, lsns, 50, &where, &torn), 50);
	assert_true(torn);
	assert_int_equal(where, end);

	/* Reopen at the end: the rest of the generation is zeroed. */
	log = reopen(t, end);
	uint8_t back[8192], zero[8192] = {0};
	file_read(p, CF_LSN_OFF(end), back, sizeof back);
	assert_memory_equal(back, zero, sizeof back);
	file_read(p, CF_LSN_OFF(end) + 4096, back, sizeof back);
	assert_memory_equal(back, zero, sizeof back);
	static cf_lsn all[60];
	memcpy(all, lsns, sizeof lsns);
	append_range(log, 50, 10, all + 50);
	cf_lsn end2 = cf_log_end(log);
	assert_int_equal(cf_log_close(log), COFFER_OK);
	assert_int_equal(read_check(t, 0, 0, all, 60, &where, &torn), 60);
	assert_false(torn);
	assert_int_equal(where, end2);
}

/* A store made before log files were private (0750 log/, 0640
 * generations) is made private when its log is opened. */
static void test_reopen_tightens_modes(void **state)
{
	struct t *t = *state;
	static cf_lsn lsns[5];
	cf_log *log = new_log(t, MiB);
	append_range(log, 0, 5, lsns);
	assert_int_equal(cf_log_roll(log, NULL), COFFER_OK);
	cf_lsn end = cf_log_end(log);
	assert_int_equal(cf_log_close(log), COFFER_OK);
	char g1[PATH_MAX], g2[PATH_MAX];
	gen_path(t, 1, g1);
	gen_path(t, 2, g2);
	struct stat st;
	assert_int_equal(stat(g1, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600); /* new files are private */
	assert_int_equal(chmod(t->logdir, 0750), 0);
	assert_int_equal(chmod(g1, 0640), 0);
	assert_int_equal(chmod(g2, 0644), 0);
	log = reopen(t, end);
	assert_int_equal(cf_log_close(log), COFFER_OK);
	assert_int_equal(stat(t->logdir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(stat(g1, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(g2, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* Once log/ is private, opening looks no further than the directory
	 * (no open per generation at every start). */
	assert_int_equal(chmod(g1, 0640), 0);
	log = reopen(t, end);
	assert_int_equal(cf_log_close(log), COFFER_OK);
	assert_int_equal(stat(g1, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);
}

static void test_torn_tail(void **state)
{
	struct t *t = *state;
	static cf_lsn lsns[700];
	cf_log *log = new_log(t, MiB);
	append_range(log, 0, 700, lsns);
	assert_int_equal(cf_log_close(log), COFFER_OK);
	uint32_t last = CF_LSN_GEN(lsns[699]);
	assert_true(last >= 2);
	unsigned in_last = 0;
	while (CF_LSN_GEN(lsns[699 - in_last]) == last)
		in_last++;
	assert_true(in_last > 10);

	/* Garbage in the middle of the last generation, only records of no
	 * commit (NOOPs) after it: nothing acknowledged can be lost, so this
	 * is taken for a torn tail (R2; test_damage_in_last_generation has
	 * COMMITs after the damage). */
	unsigned k = 700 - in_last / 2;
	cf_lsn where;
	int torn;
	char msg[sizeof(((coffer_error *)0)->message)], want[64];
	flip_byte(t, lsns[k] + 20);
	assert_int_equal(read_check(t, 0, 0, lsns, 700, &where, &torn), k);
	assert_true(torn);
	assert_int_equal(where, lsns[k]);
	flip_byte(t, lsns[k] + 20); /* undo */

	char p[PATH_MAX];
	gen_path(t, last, p);
	const coffer_error *e;
	/* A torn write: the file holds a prefix of record k, then zeroes (or
	 * bytes that never validate): the log ends there. */
	uint8_t *tail = calloc(1, MiB);
	assert_non_null(tail);
	uint32_t cut = CF_LSN_OFF(lsns[k]) + 30;
	file_read(p, cut, tail, MiB - cut);
	static uint8_t zeroes[MiB];
	file_write(p, cut, zeroes, MiB - cut);
	assert_int_equal(read_check(t, 0, 0, lsns, 700, &where, &torn), k);
	assert_true(torn);
	assert_int_equal(where, lsns[k]);
	uint8_t junk[3000];
	memset(junk, 0x5a, sizeof junk);
	file_write(p, cut + 4000, junk, sizeof junk);
	assert_int_equal(read_check(t, 0, 0, lsns, 700, &where, &torn), k);
	assert_true(torn);
	assert_int_equal(where, lsns[k]);
	file_write(p, cut, tail, MiB - cut); /* undo */
	free(tail);

	/* An impossible length in the last record. */
	uint8_t b4[4];
	cf_put32(b4, 3);
	file_write(p, CF_LSN_OFF(lsns[699]), b4, 4);
	assert_int_equal(read_check(t, 0, 0, lsns, 700, &where, &torn), 699);
	assert_true(torn);
	assert_int_equal(where, lsns[699]);

	/* The file cut in the middle of record 698: no crash leaves a
	 * generation shorter than its header says (R2a). */
	assert_int_equal(truncate(p, CF_LSN_OFF(lsns[698]) + 30), 0);
	e = read_expect_error(t, SIG, 0, COFFER_E_LOG_CORRUPT);
	assert_int_equal(e->generation, last);
	assert_int_equal(e->offset, CF_LSN_OFF(lsns[698]));
	snprintf(msg, sizeof msg, "%s", e->message);
	assert_non_null(strstr(msg, "cut short"));
	snprintf(want, sizeof want, "header says %u bytes, the file has %u", MiB,
		 CF_LSN_OFF(lsns[698]) + 30);
	assert_non_null(strstr(msg, want));

	/* Back to its full size, zeroes after the cut: a torn tail. */
	assert_int_equal(truncate(p, MiB), 0);
	assert_int_equal(read_check(t, 0, 0, lsns, 700, &where, &torn), 698);
	assert_true(torn);
	assert_int_equal(where, lsns[698]);

	/* Recovery's view: open at the torn position, append, read it all. */
	log = reopen(t, where);
	cf_lsn more[2];
	append_range(log, 698, 2, more);
	assert_int_equal(more[0], lsns[698]);
	assert_int_equal(cf_log_close(log), COFFER_OK);
	assert_int_equal(read_check(t, 0, 0, lsns, 700, &where, &torn), 700);
	assert_false(torn);
}

/* Batches {NOOP, COMMIT} as a store writes them: damage in the middle of
 * the last generation with COMMITs after it is damage, not a torn tail. */
#define NB 900 /* batches: about 2 MB, 2 generations and more */
static void test_damage_in_last_generation(void **state)
{
	struct t *t = *state;
	static cf_lsn lsns[2 * NB];
	cf_log *log = new_log(t, MiB);
	static uint8_t buf[3000];
	for (unsigned i = 0; i < NB; i++) {
		uint8_t commit[CF_LOG_COMMIT_LEN];
		fill(buf, sizeof buf, i);
		cf_log_encode_commit(commit, i + 1, 1000 + i);
		cf_log_in in[2] = {{.type = CF_LOG_NOOP, .p1 = buf, .n1 = 1000 + (i * 7) % 2000},
				   {.type = CF_LOG_COMMIT, .p1 = commit, .n1 = sizeof commit}};
		assert_int_equal(cf_log_append(log, in, 2, &lsns[2 * i], NULL), COFFER_OK);
		assert_int_equal(cf_log_flush(log, CF_LSN_MAX), COFFER_OK);
	}
	assert_int_equal(cf_log_close(log), COFFER_OK);
	uint32_t last = CF_LSN_GEN(lsns[2 * NB - 1]);
	assert_true(last >= 2);
	unsigned in_last = 0;
	while (CF_LSN_GEN(lsns[2 * NB - 1 - in_last]) == last)
		in_last++;
	assert_true(in_last > 20);
	unsigned k = 2 * NB - in_last / 2;
	k &= ~1u; /* a NOOP, its COMMIT next */
	assert_int_equal(CF_LSN_GEN(lsns[k]), last);
	char p[PATH_MAX], want[64];
	gen_path(t, last, p);

	/* A flipped checksum: the error names the record and the COMMIT after it. */
	flip_byte(t, lsns[k] + 8);
	const coffer_error *e = read_expect_error(t, SIG, 0, COFFER_E_LOG_CHECKSUM);
	assert_int_equal(e->generation, last);
	assert_int_equal(e->offset, CF_LSN_OFF(lsns[k]));
	assert_non_null(strstr(e->message, "not at the end of the log"));
	snprintf(want, sizeof want, "follows at %010u:%010u", last, CF_LSN_OFF(lsns[k + 1]));
	assert_non_null(strstr(e->message, want));
	flip_byte(t, lsns[k] + 8); /* undo */

	/* An impossible length, valid COMMITs after it. */
	uint8_t save[512], b4[4];
	file_read(p, CF_LSN_OFF(lsns[k]), save, sizeof save);
	cf_put32(b4, 3);
	file_write(p, CF_LSN_OFF(lsns[k]), b4, 4);
	e = read_expect_error(t, SIG, 0, COFFER_E_LOG_CORRUPT);
	assert_int_equal(e->offset, CF_LSN_OFF(lsns[k]));
	assert_non_null(strstr(e->message, "impossible length"));

	/* A zeroed sector at a record: its length 0 is not the end of the
	 * generation, since valid COMMITs follow. */
	static const uint8_t zero[512];
	file_write(p, CF_LSN_OFF(lsns[k]), zero, sizeof zero);
	e = read_expect_error(t, SIG, 0, COFFER_E_LOG_CORRUPT);
	assert_int_equal(e->generation, last);
	assert_int_equal(e->offset, CF_LSN_OFF(lsns[k]));
	assert_non_null(strstr(e->message, "has length 0"));
	file_write(p, CF_LSN_OFF(lsns[k]), save, sizeof save);

	/* Still whole: every record, a clean end. */
	cf_log_reader *r;
	cf_log_rec rec;
	unsigned n = 0;
	assert_int_equal(cf_log_reader_open(&r, t->logdir, SIG, 0), COFFER_OK);
	while (cf_log_reader_next(r, &rec) == COFFER_OK) {
		assert_true(n < 2 * NB);
		assert_int_equal(rec.lsn, lsns[n]);
		n++;
	}
	assert_int_equal(n, 2 * NB);
	cf_lsn where;
	assert_int_equal(cf_log_reader_torn(r, &where), 0);
	cf_log_reader_close(r);

	/* A torn last write: the last batches cut inside record k, zeroes
	 * after it. The log ends in a torn record there. */
	uint32_t cut = CF_LSN_OFF(lsns[k]) + 700;
	assert_int_equal(truncate(p, cut), 0);
	assert_int_equal(truncate(p, MiB), 0);
	assert_int_equal(cf_log_reader_open(&r, t->logdir, SIG, 0), COFFER_OK);
	n = 0;
	while (cf_log_reader_next(r, &rec) == COFFER_OK)
		n++;
	assert_int_equal(n, k);
	assert_int_equal(cf_log_reader_torn(r, &where), 1);
	assert_int_equal(where, lsns[k]);
	cf_log_reader_close(r);
}

#undef NB

static void test_damage_not_at_end(void **state)
{
	struct t *t = *state;
	static cf_lsn lsns[2000];
	cf_log *log = new_log(t, MiB);
	append_range(log, 0, 2000, lsns);
	assert_int_equal(cf_log_close(log), COFFER_OK);
	assert_true(CF_LSN_GEN(lsns[1999]) >= 3);

	/* A checksum failure in generation 1, generations 2.. present. */
	cf_lsn bad = lsns[100];
	flip_byte(t, bad + 40);
	const coffer_error *e = read_expect_error(t, SIG, 0, COFFER_E_LOG_CHECKSUM);
	assert_int_equal(e->generation, 1);
	assert_int_equal(e->offset, CF_LSN_OFF(bad));
	assert_non_null(strstr(e->message, "not at the end of the log"));
	assert_non_null(strstr(e->message, "the log is damaged"));
	flip_byte(t, bad + 40);

	/* An impossible length in generation 2. */
	unsigned i = 0;
	while (CF_LSN_GEN(lsns[i]) < 2)
		i++;
	bad = lsns[i + 5];
	char p[PATH_MAX];
	uint8_t b4[4];
	gen_path(t, 2, p);
	cf_put32(b4, 0x7fffffff);
	file_write(p, CF_LSN_OFF(bad), b4, 4);
	e = read_expect_error(t, SIG, 0, COFFER_E_LOG_CORRUPT);
	assert_int_equal(e->generation, 2);
	assert_int_equal(e->offset, CF_LSN_OFF(bad));
	assert_non_null(strstr(e->message, "impossible length"));

	/* A damaged header. */
	uint8_t b = 0x11;
	gen_path(t, 3, p);
	file_write(p, 30, &b, 1);
	e = read_expect_error(t, SIG, CF_LSN(3, 0), COFFER_E_LOG_CORRUPT);
	assert_non_null(strstr(e->message, "checksum"));
}

static void test_missing_and_gap(void **state)
{
	struct t *t = *state;
	static cf_lsn lsns[3000];
	cf_log *log = new_log(t, MiB);
	append_range(log, 0, 3000, lsns);
	assert_int_equal(cf_log_close(log), COFFER_OK);
	assert_true(CF_LSN_GEN(lsns[2999]) >= 4);

	char p[PATH_MAX];
	gen_path(t, 2, p);
	assert_int_equal(unlink(p), 0);
	uint32_t lo, hi;
	assert_int_equal(cf_log_scan_dir(t->logdir, &lo, &hi), COFFER_E_LOG_GAP);
	assert_int_equal(coffer_error_last()->generation, 2);

	const coffer_error *e = read_expect_error(t, SIG, CF_LSN(1, 0), COFFER_E_LOG_GAP);
	assert_int_equal(e->generation, 2);
	e = read_expect_error(t, SIG, CF_LSN(2, 0), COFFER_E_LOG_MISSING);
	assert_int_equal(e->generation, 2);
	assert_non_null(strstr(e->message, t->logdir));

	/* Only the tail left: reading from gen 1 says it is missing. */
	gen_path(t, 1, p);
	assert_int_equal(unlink(p), 0);
	e = read_expect_error(t, SIG, CF_LSN(1, 0), COFFER_E_LOG_MISSING);
	assert_int_equal(e->generation, 1);
	assert_int_equal(cf_log_scan_dir(t->logdir, &lo, &hi), COFFER_OK);
	assert_int_equal(lo, 3);
}

static void test_mismatch(void **state)
{
	struct t *t = *state;
	static cf_lsn lsns[2000];
	cf_log *log = new_log(t, MiB);
	append_range(log, 0, 2000, lsns);
	assert_int_equal(cf_log_close(log), COFFER_OK);

	/* Wrong signature. */
	const coffer_error *e = read_expect_error(t, OTHER_SIG, 0, COFFER_E_LOG_MISMATCH);
	assert_int_equal(e->generation, 1);
	assert_non_null(strstr(e->message, "c0ffee0102030405060708090a0b0c0d"));
	assert_non_null(strstr(e->message, "deadbeef000000000000000000000000"));

	/* Generation 2's header replaced by generation 3's: wrong number. */
	char p2[PATH_MAX], p3[PATH_MAX];
	uint8_t hdr[CF_LOG_HDR_SIZE], save[CF_LOG_HDR_SIZE];
	gen_path(t, 2, p2);
	gen_path(t, 3, p3);
	file_read(p2, 0, save, sizeof save);
	file_read(p3, 0, hdr, sizeof hdr);
	file_write(p2, 0, hdr, sizeof hdr);
	e = read_expect_error(t, SIG, 0, COFFER_E_LOG_MISMATCH);
	assert_int_equal(e->generation, 2);
	assert_non_null(strstr(e->message, "carries generation 3"));
	file_write(p2, 0, save, sizeof save);

	/* A broken prev-end link (header re-sealed, so only the link is wrong). */
	struct cf_log_file_header h;
	assert_int_equal(cf_log_header_decode(save, p2, &h), COFFER_OK);
	h.prev_end += 8;
	cf_log_header_encode(&h, hdr);
	file_write(p2, 0, hdr, sizeof hdr);
	e = read_expect_error(t, SIG, 0, COFFER_E_LOG_MISMATCH);
	assert_int_equal(e->generation, 2);
	assert_non_null(strstr(e->message, "previous generation ended"));
	file_write(p2, 0, save, sizeof save);

	/* Intact again. */
	cf_lsn where;
	assert_int_equal(read_check(t, 0, 0, lsns, 2000, &where, NULL), 2000);
}

static void test_truncate(void **state)
{
	struct t *t = *state;
	cf_log *log = new_log(t, MiB);
	uint32_t closed, deleted;
	for (int i = 0; i < 5; i++)
		assert_int_equal(cf_log_roll(log, &closed), COFFER_OK);
	assert_int_equal(cf_log_current_gen(log), 6);
	assert_int_equal(cf_log_truncate(log, 3, &deleted), COFFER_OK);
	assert_int_equal(deleted, 2);
	assert_false(gen_present(t, 1));
	assert_false(gen_present(t, 2));
	for (uint32_t g = 3; g <= 6; g++)
		assert_true(gen_present(t, g));
	/* Never the current generation. */
	assert_int_equal(cf_log_truncate(log, 100, &deleted), COFFER_OK);
	assert_int_equal(deleted, 3);
	assert_true(gen_present(t, 6));
	assert_int_equal(cf_log_truncate(log, 6, &deleted), COFFER_OK);
	assert_int_equal(deleted, 0);
	uint8_t x[10] = {0};
	cf_log_in in = {.type = CF_LOG_NOOP, .p1 = x, .n1 = sizeof x};
	cf_lsn lsn;
	assert_int_equal(cf_log_append(log, &in, 1, &lsn, NULL), COFFER_OK);
	assert_int_equal(cf_log_close(log), COFFER_OK);
	uint32_t lo, hi;
	assert_int_equal(cf_log_scan_dir(t->logdir, &lo, &hi), COFFER_OK);
	assert_int_equal(lo, 6);
	assert_int_equal(hi, 6);
}

/* ---- sticky failure ---- */

/* Patched into the system call table (only log files are open here). */
static int fail_sync(int fd)
{
	(void)fd;
	errno = EIO;
	return -1;
}

static ssize_t fail_write(int fd, const void *buf, size_t n, off_t off)
{
	(void)fd;
	(void)buf;
	(void)n;
	(void)off;
	errno = ENOSPC;
	return -1;
}

static void test_sticky_failure(void **state)
{
	struct t *t = *state;
	static cf_lsn lsns[10];
	cf_log *log = new_log(t, MiB);
	append_range(log, 0, 10, lsns);
	cf_lsn end = cf_log_end(log);
	assert_int_equal(cf_log_flush(log, end), COFFER_OK);

	append_range(log, 0, 3, lsns);
	cf_os.fdatasync = fail_sync;
	assert_int_equal(cf_log_flush(log, cf_log_end(log)), COFFER_E_IO);
	assert_int_equal(coffer_error_last()->sys_errno, EIO);
	cf_os = cf_os_real;
	/* Stopped, even though the disk works again. */
	uint8_t x[4] = {0};
	cf_log_in in = {.type = CF_LOG_NOOP, .p1 = x, .n1 = 4};
	assert_int_equal(cf_log_append(log, &in, 1, NULL, NULL), COFFER_E_FATAL);
	const coffer_error *e = coffer_error_last();
	assert_non_null(strstr(e->message, "fdatasync"));
	assert_non_null(strstr(e->message, "COFFER_E_IO"));
	assert_int_equal(cf_log_flush(log, cf_log_end(log)), COFFER_E_FATAL);
	assert_int_equal(cf_log_roll(log, NULL), COFFER_E_FATAL);
	assert_int_equal(cf_log_durable(log), end); /* nothing after the failure */
	assert_int_equal(cf_log_close(log), COFFER_E_FATAL);

	/* Reopened (after recovery), it works again. */
	log = reopen(t, end);
	append_range(log, 0, 3, lsns);
	end = cf_log_end(log);
	assert_int_equal(cf_log_close(log), COFFER_OK);

	/* A failing write (not a sync) stops the log the same way. */
	log = reopen(t, end);
	append_range(log, 0, 3, lsns);
	cf_os.pwrite = fail_write;
	assert_int_equal(cf_log_flush(log, cf_log_end(log)), COFFER_E_DISK_FULL);
	cf_os = cf_os_real;
	assert_int_equal(cf_log_append(log, &in, 1, NULL, NULL), COFFER_E_FATAL);
	assert_non_null(strstr(coffer_error_last()->message, "COFFER_E_DISK_FULL"));
	assert_int_equal(cf_log_close(log), COFFER_E_FATAL);
}

static int fallocate_enospc(int fd, int mode, off_t off, off_t len)
{
	(void)fd;
	(void)mode;
	(void)off;
	(void)len;
	errno = ENOSPC;
	return -1;
}

static void test_log_full(void **state)
{
	struct t *t = *state;
	static cf_lsn lsns[10];
	cf_log *log = new_log(t, MiB);
	append_range(log, 0, 10, lsns);
	cf_lsn end = cf_log_end(log);
	/* No space for the next generation: LOG_FULL, nothing written, not sticky. */
	cf_os.fallocate = fallocate_enospc;
	assert_int_equal(cf_log_roll(log, NULL), COFFER_E_LOG_FULL);
	const coffer_error *e = coffer_error_last();
	assert_int_equal(e->generation, 2);
	assert_int_equal(e->sys_errno, ENOSPC);
	assert_false(gen_present(t, 2));
	cf_os = cf_os_real;
	assert_true(cf_log_durable(log) >= end);
	append_range(log, 0, 10, lsns);
	uint32_t closed;
	assert_int_equal(cf_log_roll(log, &closed), COFFER_OK);
	assert_int_equal(closed, 1);
	assert_int_equal(cf_log_close(log), COFFER_OK);
	/* No leftover .tmp file. */
	char p[PATH_MAX];
	gen_path(t, 2, p);
	strcat(p, ".tmp");
	assert_int_equal(access(p, F_OK), -1);
}

static void test_payload_codecs(void **state)
{
	(void)state;
	uint8_t page[4096], out[4096], payload[256];
	for (int i = 0; i < 4096; i++)
		page[i] = (uint8_t)i;
	cf_log_range rg[2] = {{.off = 10, .len = 5}, {.off = 4000, .len = 96}};
	size_t n = cf_log_page_diff_size(rg, 2);
	assert_int_equal(n, 8 + 8 + 5 + 8 + 96);
	cf_log_encode_page_diff(payload, 42, page, rg, 2);
	cf_log_rec rec = {.lsn = CF_LSN(3, 4096), .type = CF_LOG_PAGE_DIFF, .payload = payload, .len = n};
	cf_pgno pgno;
	uint32_t nr;
	assert_int_equal(cf_log_decode_page_diff(&rec, 4096, &pgno, &nr), COFFER_OK);
	assert_int_equal(pgno, 42);
	assert_int_equal(nr, 2);
	memset(out, 0, sizeof out);
	assert_int_equal(cf_log_page_diff_apply(&rec, out, 4096), COFFER_OK);
	assert_memory_equal(out + 10, page + 10, 5);
	assert_memory_equal(out + 4000, page + 4000, 96);
	assert_int_equal(out[9], 0);
	/* A range beyond a smaller page, a cut-off record, trailing bytes. */
	assert_int_equal(cf_log_page_diff_apply(&rec, out, 2048), COFFER_E_LOG_CORRUPT);
	assert_int_equal(coffer_error_last()->generation, 3);
	rec.len = n - 1;
	assert_int_equal(cf_log_decode_page_diff(&rec, 0, &pgno, &nr), COFFER_E_LOG_CORRUPT);
	rec.len = n;
	cf_put32(payload + 4, 1);
	assert_int_equal(cf_log_decode_page_diff(&rec, 0, &pgno, &nr), COFFER_E_LOG_CORRUPT);
	cf_put32(payload + 4, 0xffffffffu);
	assert_int_equal(cf_log_decode_page_diff(&rec, 0, &pgno, &nr), COFFER_E_LOG_CORRUPT);

	uint8_t c[CF_LOG_COMMIT_LEN];
	cf_log_encode_commit(c, 77, -5);
	rec = (cf_log_rec){.type = CF_LOG_COMMIT, .payload = c, .len = sizeof c};
	uint64_t txn;
	int64_t us;
	assert_int_equal(cf_log_decode_commit(&rec, &txn, &us), COFFER_OK);
	assert_int_equal(txn, 77);
	assert_int_equal(us, -5);
	rec.len = 15;
	assert_int_equal(cf_log_decode_commit(&rec, &txn, &us), COFFER_E_LOG_CORRUPT);
	uint8_t k[CF_LOG_CHECKPOINT_LEN];
	cf_log_encode_checkpoint(k, CF_LSN(9, 8192));
	rec = (cf_log_rec){.type = CF_LOG_CHECKPOINT, .payload = k, .len = sizeof k};
	cf_lsn redo;
	assert_int_equal(cf_log_decode_checkpoint(&rec, &redo), COFFER_OK);
	assert_int_equal(redo, CF_LSN(9, 8192));
	assert_string_equal(cf_log_type_name(CF_LOG_HEADER), "HEADER");
	assert_string_equal(cf_log_type_name(77), "UNKNOWN");
	uint32_t g;
	assert_true(cf_log_parse_name("0000000012.log", &g));
	assert_int_equal(g, 12);
	assert_false(cf_log_parse_name("0000000000.log", &g));
	assert_false(cf_log_parse_name("000000012.log", &g));
	assert_false(cf_log_parse_name("0000000012.log.tmp", &g));
	assert_false(cf_log_parse_name("9999999999.log", &g));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_payload_codecs),
		cmocka_unit_test_setup_teardown(test_roundtrip_generations, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_and_roll, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_arguments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_discards_later, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_zeroes_tail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_tightens_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damage_in_last_generation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damage_not_at_end, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_and_gap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sticky_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
