/* test_evlog.c - the store's event log: round trip, rotation, damage, limits,
 * concurrent writers, and writers killed with SIGKILL in the middle. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <coffer/event.h>

#include "common/err.h"
#include "common/os.h"
#include "common/timefmt.h"

/* ---- scratch directories ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup_dir(void **state)
{
	const char *tmp = getenv("TMPDIR");
	char *dir = malloc(PATH_MAX);
	snprintf(dir, PATH_MAX, "%s/coffer-test-evlog-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		free(dir);
		return -1;
	}
	*state = dir;
	return 0;
}

static int teardown_dir(void **state)
{
	cf_os = cf_os_real;
#ifdef COFFER_TESTING
	cf_inject_reset();
#endif
	nftw(*state, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(*state);
	return 0;
}

/* ---- collecting what the reader gives ---- */

struct rec {
	uint64_t seq;
	int64_t time_us;
	int id, severity;
	char *source, *message, *fields; /* fields as "K=V;K=V" */
	long run, n;                      /* fields RUN and N, or -1 */
	char *file;
	uint64_t offset;
};

struct dmg {
	char *file, *why;
	uint64_t offset;
};

struct coll {
	struct rec *r;
	size_t n, cap;
	struct dmg *d;
	size_t nd, capd;
};

static const char *field(const coffer_event *ev, const char *key)
{
	for (size_t i = 0; i < ev->nfields; i++)
		if (strcmp(ev->fields[i].key, key) == 0)
			return ev->fields[i].value;
	return NULL;
}

static int on_event(const coffer_event *ev, void *arg)
{
	struct coll *c = arg;
	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 64;
		c->r = realloc(c->r, c->cap * sizeof *c->r);
	}
	struct rec *r = &c->r[c->n++];
	r->seq = ev->seq;
	r->time_us = ev->time_us;
	r->id = ev->id;
	r->severity = ev->severity;
	r->source = strdup(ev->source);
	r->message = strdup(ev->message);
	r->file = strdup(ev->file);
	r->offset = ev->offset;
	size_t len = 1;
	for (size_t i = 0; i < ev->nfields; i++)
		len += strlen(ev->fields[i].key) + strlen(ev->fields[i].value) + 2;
	r->fields = calloc(1, len);
	for (size_t i = 0; i < ev->nfields; i++)
		sprintf(r->fields + strlen(r->fields), "%s%s=%s", i ? ";" : "", ev->fields[i].key,
			ev->fields[i].value);
	const char *v = field(ev, "RUN");
	r->run = v ? atol(v) : -1;
	v = field(ev, "N");
	r->n = v ? atol(v) : -1;
	return 0;
}

static int on_damage(const char *file, uint64_t offset, const char *why, void *arg)
{
	struct coll *c = arg;
	if (c->nd == c->capd) {
		c->capd = c->capd ? 2 * c->capd : 8;
		c->d = realloc(c->d, c->capd * sizeof *c->d);
	}
	c->d[c->nd++] = (struct dmg){strdup(file), strdup(why), offset};
	return 0;
}

static void coll_free(struct coll *c)
{
	for (size_t i = 0; i < c->n; i++) {
		free(c->r[i].source);
		free(c->r[i].message);
		free(c->r[i].fields);
		free(c->r[i].file);
	}
	for (size_t i = 0; i < c->nd; i++) {
		free(c->d[i].file);
		free(c->d[i].why);
	}
	free(c->r);
	free(c->d);
	memset(c, 0, sizeof *c);
}

static void read_all(const char *dir, struct coll *c)
{
	coll_free(c);
	int rc = coffer_evlog_read(dir, on_event, on_damage, c);
	if (rc != COFFER_OK)
		fail_msg("read: %s", coffer_error_last()->message);
}

static coffer_evlog *open_log(const char *dir, uint64_t max_bytes, unsigned keep)
{
	coffer_evlog_options o = COFFER_EVLOG_OPTIONS_INIT;
	o.max_file_bytes = max_bytes;
	o.keep_files = keep;
	o.flags = COFFER_EVLOG_NO_SYSTEM;
	coffer_evlog *log = NULL;
	int rc = coffer_evlog_open(&log, dir, &o);
	if (rc != COFFER_OK)
		fail_msg("open: %s", coffer_error_last()->message);
	return log;
}

/* Write events N=from..to-1 with RUN=run. */
static void write_n(coffer_evlog *log, long run, long from, long to)
{
	char r[24], n[24];
	coffer_evfield f[] = {{"RUN", r}, {"N", n}, {"PAD", "some padding for a realistic size"}};
	snprintf(r, sizeof r, "%ld", run);
	for (long i = from; i < to; i++) {
		snprintf(n, sizeof n, "%ld", i);
		int rc = coffer_event_write(log, COFFER_EV_LOG_ROLLED, f, 3, "rolled to %ld", i);
		if (rc != COFFER_OK)
			fail_msg("write %ld: %s", i, coffer_error_last()->message);
	}
}

static void file_name(char *out, const char *dir, unsigned num)
{
	snprintf(out, PATH_MAX, "%s/events/events-%06u.log", dir, num);
}

static void patch_byte(const char *path, uint64_t off, uint8_t xor_with)
{
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	uint8_t b;
	assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
	b ^= xor_with;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

static void patch_bytes(const char *path, uint64_t off, const void *data, size_t n)
{
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, data, n, (off_t)off), (ssize_t)n);
	close(fd);
}

static void append_bytes(const char *path, const void *data, size_t n)
{
	int fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	close(fd);
}

static off_t file_size(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

/* ---- tests ---- */

static void test_round_trip(void **state)
{
	const char *dir = *state;
	struct coll c = {0};
	int64_t before = cf_time_now_us();
	coffer_evlog *log = open_log(dir, 0, 0);
	coffer_evfield f[] = {{"ADDRESS", "unix:/d/cofferd.sock"}, {"note", "a b=c \"q\""}};
	assert_int_equal(coffer_event_write(log, COFFER_EV_SERVER_STARTED, f, 2,
					    "server started on %s", "unix:/d/cofferd.sock"),
			 COFFER_OK);
	assert_int_equal(coffer_event_write(log, COFFER_EV_BACKUP_FAILED, NULL, 0, NULL), COFFER_OK);
	CF_ERROR(COFFER_E_DISK_FULL, CF_OBJ(.file = "/d/log/00000007.log", CF_OFF(4096), CF_GEN(7),
					    .sys_errno = 28),
		 "could not write \"/d/log/00000007.log\" at offset 4096: No space left on device");
	coffer_evfield extra[] = {{"BACKUP_ID", "42"}};
	assert_int_equal(coffer_event_error(log, COFFER_EV_FATAL_WRITE, NULL, extra, 1), COFFER_OK);
	coffer_evlog_close(log);
	int64_t after = cf_time_now_us();

	read_all(dir, &c);
	assert_int_equal(c.nd, 0);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.r[0].id, 1000);
	assert_string_equal(c.r[0].source, "cofferd");
	assert_int_equal(c.r[0].severity, 6);
	assert_string_equal(c.r[0].message, "server started on unix:/d/cofferd.sock");
	assert_string_equal(c.r[0].fields, "ADDRESS=unix:/d/cofferd.sock;NOTE=a b=c \"q\"");
	assert_true(c.r[0].time_us >= before && c.r[0].time_us <= after);
	assert_int_equal(c.r[0].offset, 16); /* right after the file header */
	assert_non_null(strstr(c.r[0].file, "/events/events-000001.log"));
	assert_int_equal(c.r[1].id, 1202);
	assert_string_equal(c.r[1].source, "coffer-backup");
	assert_int_equal(c.r[1].severity, 3);
	assert_string_equal(c.r[1].message, "backup failed"); /* the catalog's */
	assert_string_equal(c.r[1].fields, "");
	assert_int_equal(c.r[2].id, 1004);
	assert_string_equal(c.r[2].message,
			    "could not write \"/d/log/00000007.log\" at offset 4096: No space left on device");
	assert_string_equal(c.r[2].fields,
			    "CODE=21;CODE_NAME=COFFER_E_DISK_FULL;FILE=/d/log/00000007.log;"
			    "GENERATION=7;OFFSET=4096;ERRNO=28;BACKUP_ID=42");
	for (size_t i = 0; i < c.n; i++)
		assert_int_equal(c.r[i].seq, i + 1);

	/* A new writer continues the sequence. */
	log = open_log(dir, 0, 0);
	write_n(log, 1, 0, 1);
	coffer_evlog_close(log);
	read_all(dir, &c);
	assert_int_equal(c.n, 4);
	assert_int_equal(c.r[3].seq, 4);
	assert_string_equal(c.r[3].file, c.r[0].file); /* appended to the same file */

	/* Files and directory are private. */
	char path[PATH_MAX];
	struct stat st;
	file_name(path, dir, 1);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(path, sizeof path, "%s/events", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	coll_free(&c);
}

static void test_rotation_and_keep(void **state)
{
	const char *dir = *state;
	struct coll c = {0};
	coffer_evlog *log = open_log(dir, 1024, 3);
	write_n(log, 1, 0, 100);
	coffer_evlog_close(log);

	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/events", dir);
	DIR *d = opendir(path);
	assert_non_null(d);
	unsigned nfiles = 0, maxnum = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		unsigned num;
		if (sscanf(de->d_name, "events-%u.log", &num) == 1) {
			nfiles++;
			maxnum = num > maxnum ? num : maxnum;
		}
	}
	closedir(d);
	assert_int_equal(nfiles, 3);
	assert_true(maxnum >= 8);
	for (unsigned num = maxnum - 2; num <= maxnum; num++) {
		file_name(path, dir, num);
		assert_true(file_size(path) < 1024 + 200); /* one record past the limit at most */
	}
	file_name(path, dir, maxnum - 3);
	assert_int_equal(access(path, F_OK), -1);

	read_all(dir, &c);
	assert_int_equal(c.nd, 0);
	assert_true(c.n > 10 && c.n < 50);
	for (size_t i = 0; i < c.n; i++) /* the newest events, in order */
		assert_int_equal(c.r[i].n, 100 - (long)c.n + (long)i);
	coll_free(&c);
}

static void test_torn_tail_then_append(void **state)
{
	const char *dir = *state;
	struct coll c = {0};
	char path[PATH_MAX];
	coffer_evlog *log = open_log(dir, 0, 0);
	write_n(log, 1, 0, 5);
	coffer_evlog_close(log);
	read_all(dir, &c);
	assert_int_equal(c.n, 5);
	uint64_t last = c.r[4].offset;
	file_name(path, dir, 1);
	off_t size = file_size(path);

	/* Cut the last record short, as a crash in the middle of write(2) does. */
	assert_int_equal(truncate(path, size - 7), 0);
	read_all(dir, &c);
	assert_int_equal(c.n, 4);
	for (long i = 0; i < 4; i++)
		assert_int_equal(c.r[i].n, i);
	assert_int_equal(c.nd, 1);
	assert_int_equal(c.d[0].offset, last);
	assert_string_equal(c.d[0].file, path);
	assert_non_null(strstr(c.d[0].why, "cut short"));

	/* Only the header of the record left. */
	assert_int_equal(truncate(path, (off_t)last + 9), 0);
	read_all(dir, &c);
	assert_int_equal(c.n, 4);
	assert_int_equal(c.nd, 1);
	assert_int_equal(c.d[0].offset, last);

	/* The log stays appendable: the next writer appends after the garbage
	 * and the reader finds its records past it. */
	log = open_log(dir, 0, 0);
	write_n(log, 2, 0, 3);
	coffer_evlog_close(log);
	read_all(dir, &c);
	assert_int_equal(c.n, 7);
	assert_int_equal(c.nd, 1);
	assert_int_equal(c.d[0].offset, last);
	for (long i = 0; i < 3; i++) {
		assert_int_equal(c.r[4 + i].run, 2);
		assert_int_equal(c.r[4 + i].n, i);
	}
	assert_int_equal(c.r[4].offset, last + 9); /* right after the 9 torn bytes */
	coll_free(&c);
}

static void test_damage_in_the_middle(void **state)
{
	const char *dir = *state;
	struct coll c = {0};
	char path[PATH_MAX];
	coffer_evlog *log = open_log(dir, 0, 0);
	write_n(log, 1, 0, 8);
	coffer_evlog_close(log);
	read_all(dir, &c);
	assert_int_equal(c.n, 8);
	uint64_t off[8];
	for (int i = 0; i < 8; i++)
		off[i] = c.r[i].offset;
	file_name(path, dir, 1);

	/* A flipped bit in the payload of record 1. */
	patch_byte(path, off[1] + 40, 0x10);
	/* A length of record 3 pointing beyond its end, into record 4. */
	uint8_t len[4] = {0x2C, 0x01, 0x00, 0x00};
	patch_bytes(path, off[3] + 4, len, 4);
	/* A damaged magic of record 5. */
	patch_byte(path, off[5], 0xFF);
	read_all(dir, &c);
	assert_int_equal(c.nd, 3);
	assert_int_equal(c.d[0].offset, off[1]);
	assert_non_null(strstr(c.d[0].why, "checksum mismatch"));
	assert_int_equal(c.d[1].offset, off[3]);
	assert_non_null(strstr(c.d[1].why, "checksum mismatch"));
	assert_int_equal(c.d[2].offset, off[5]);
	assert_non_null(strstr(c.d[2].why, "bad magic"));
	long want[] = {0, 2, 4, 6, 7};
	assert_int_equal(c.n, 5);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(c.r[i].n, want[i]);
		assert_int_equal(c.r[i].offset, off[want[i]]);
	}
	coll_free(&c);
}

static void test_garbage_is_bounded(void **state)
{
	const char *dir = *state;
	struct coll c = {0};
	char path[PATH_MAX];
	coffer_evlog *log = open_log(dir, 0, 0);
	write_n(log, 1, 0, 2);
	coffer_evlog_close(log);
	file_name(path, dir, 1);

	/* Records that claim huge lengths, fake magics everywhere, random bytes. */
	size_t gsize = 1 << 20;
	uint8_t *g = malloc(gsize);
	assert_non_null(g);
	srand(12345);
	for (size_t i = 0; i < gsize; i++)
		g[i] = (uint8_t)rand();
	static const uint8_t magic[4] = {0xFF, 0xC5, 0x56, 0xFE};
	for (size_t i = 0; i + 16 < gsize; i += 4096) {
		memcpy(g + i, magic, 4);
		uint32_t l = (i / 4096) % 2 ? 0xFFFFFFFFu : 65536u;
		memcpy(g + i + 4, &l, 4);
	}
	for (size_t i = 512; i + 8 < gsize / 4; i += 37) /* dense fake headers */
		memcpy(g + i, magic, 4);
	append_bytes(path, g, gsize);
	free(g);

	log = open_log(dir, 0, 0);
	write_n(log, 2, 0, 2);
	coffer_evlog_close(log);
	read_all(dir, &c);
	assert_int_equal(c.n, 4);
	assert_int_equal(c.r[0].run, 1);
	assert_int_equal(c.r[1].run, 1);
	assert_int_equal(c.r[2].run, 2);
	assert_int_equal(c.r[3].run, 2);
	assert_int_equal(c.nd, 1);

	/* A file that is all garbage, and a file of an unknown version. */
	char p2[PATH_MAX], p3[PATH_MAX];
	file_name(p2, dir, 7);
	file_name(p3, dir, 8);
	uint8_t junk[3000];
	memset(junk, 'x', sizeof junk);
	int fd = open(p2, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
	close(fd);
	uint8_t hdr[16] = {'C', 'O', 'F', 'F', 'E', 'R', 'E', 'V', 99, 0, 0, 0, 0, 0, 0, 0};
	fd = open(p3, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, hdr, sizeof hdr), 16);
	close(fd);
	read_all(dir, &c);
	assert_int_equal(c.n, 4);
	assert_int_equal(c.nd, 3);
	assert_string_equal(c.d[1].file, p2);
	assert_int_equal(c.d[1].offset, 0);
	assert_non_null(strstr(c.d[1].why, "header"));
	assert_string_equal(c.d[2].file, p3);
	assert_non_null(strstr(c.d[2].why, "version 99"));

	/* A writer does not append to a file of another version: it starts the next. */
	log = open_log(dir, 0, 0);
	write_n(log, 3, 0, 1);
	coffer_evlog_close(log);
	file_name(path, dir, 9);
	assert_int_equal(access(path, F_OK), 0);
	assert_int_equal(file_size(p3), 16);
	coll_free(&c);
}

static void test_limits_and_keys(void **state)
{
	const char *dir = *state;
	struct coll c = {0};
	coffer_evlog *log = open_log(dir, 0, 0);
	char *big = malloc(6001);
	for (int i = 0; i < 2000; i++)
		memcpy(big + 3 * i, "\xe2\x82\xac", 3); /* the euro sign */
	big[6000] = '\0';
	coffer_evfield f[40];
	char keys[40][16];
	for (int i = 0; i < 40; i++) {
		snprintf(keys[i], sizeof keys[i], "k%d", i);
		f[i] = (coffer_evfield){keys[i], i == 0 ? big : "v"};
	}
	f[1] = (coffer_evfield){"peer-addr.x", NULL};
	assert_int_equal(coffer_event_write(log, 1000, f, 40, "%s", big), COFFER_OK);
	assert_int_equal(coffer_event_write(log, 999, NULL, 0, NULL), COFFER_E_INVALID_ARGUMENT);
	assert_non_null(strstr(coffer_error_last()->message, "999"));
	assert_int_equal(coffer_event_write(NULL, 1000, NULL, 0, NULL), COFFER_E_INVALID_ARGUMENT);
	coffer_evlog_close(log);
	free(big);

	read_all(dir, &c);
	assert_int_equal(c.n, 1);
	assert_int_equal(strlen(c.r[0].message), 4095); /* 1365 whole euro signs */
	/* 32 fields; the first value cut to 1023 bytes (341 euro signs). */
	size_t nsemi = 0;
	for (const char *s = c.r[0].fields; *s; s++)
		nsemi += *s == ';';
	assert_int_equal(nsemi, 31);
	assert_true(strncmp(c.r[0].fields, "K0=\xe2\x82\xac", 6) == 0);
	assert_non_null(strstr(c.r[0].fields, ";PEER_ADDR_X=;K2=v;"));
	const char *k1 = strstr(c.r[0].fields, ";PEER_ADDR_X=");
	assert_int_equal(k1 - c.r[0].fields, 3 + 1023);
	coll_free(&c);
}

static ssize_t write_enospc(int fd, const void *buf, size_t n)
{
	(void)fd;
	(void)buf;
	(void)n;
	errno = ENOSPC;
	return -1;
}

static void test_write_failures_are_returned(void **state)
{
	const char *dir = *state;
	struct coll c = {0};
	coffer_evlog *log = open_log(dir, 0, 0);
	write_n(log, 1, 0, 1);
	cf_os.write = write_enospc;
	assert_int_equal(coffer_event_write(log, 1000, NULL, 0, NULL), COFFER_E_DISK_FULL);
	cf_os.write = cf_os_real.write;
	const coffer_error *e = coffer_error_last();
	assert_int_equal(e->sys_errno, ENOSPC);
	assert_non_null(strstr(e->file, "events-000001.log"));
	assert_non_null(strstr(e->message, "could not write"));
	write_n(log, 1, 1, 2); /* the handle stays usable */
#ifdef COFFER_TESTING
	assert_int_equal(cf_inject_arm("evlog.write", ENOSPC, 0, 1), COFFER_OK);
	assert_int_equal(coffer_event_write(log, 1000, NULL, 0, NULL), COFFER_E_DISK_FULL);
	assert_non_null(strstr(coffer_error_last()->message, "could not append to the event log"));
	assert_int_equal(cf_inject_arm("evlog.fsync", EIO, 0, 1), COFFER_OK);
	assert_int_equal(coffer_event_write(log, 1000, NULL, 0, NULL), COFFER_E_IO);
#else
	assert_int_equal(coffer_event_write(log, 1000, NULL, 0, NULL), COFFER_OK);
#endif
	write_n(log, 1, 2, 3);
	coffer_evlog_close(log);
	read_all(dir, &c);
	/* The record whose fdatasync failed was written: it is there, as the
	 * caller must assume it may be. */
	assert_int_equal(c.n, 4);
	assert_int_equal(c.nd, 0);
	assert_int_equal(c.r[0].n, 0);
	assert_int_equal(c.r[1].n, 1);
	assert_int_equal(c.r[2].n, -1);
	assert_int_equal(c.r[3].n, 2);

	/* Opening the log when the directory cannot be created. */
	char file[PATH_MAX];
	snprintf(file, sizeof file, "%s/plainfile", dir);
	int fd = open(file, O_WRONLY | O_CREAT, 0600);
	close(fd);
	coffer_evlog *bad = NULL;
	assert_int_equal(coffer_evlog_open(&bad, file, NULL), COFFER_E_NOT_A_DIRECTORY);
	assert_null(bad);
	coffer_evlog_options o = {.version = 77};
	assert_int_equal(coffer_evlog_open(&bad, dir, &o), COFFER_E_INVALID_ARGUMENT);
	coll_free(&c);
}

static void test_no_store_and_missing(void **state)
{
	const char *dir = *state;
	struct coll c = {0};
	coffer_evlog *log = NULL;
	coffer_evlog_options o = COFFER_EVLOG_OPTIONS_INIT;
	o.flags = COFFER_EVLOG_NO_SYSTEM;
	assert_int_equal(coffer_evlog_open(&log, NULL, &o), COFFER_OK);
	assert_int_equal(coffer_event_write(log, 1000, NULL, 0, NULL), COFFER_OK);
	coffer_evlog_close(log);
	/* To the system log (journal, or syslog without one): never an error. */
	assert_int_equal(coffer_evlog_open(&log, NULL, NULL), COFFER_OK);
	coffer_evfield f[] = {{"CODE", "21"}, {"FILE", "/x y"}};
	assert_int_equal(coffer_event_write(log, COFFER_EV_LOG_ROLLED, f, 2, "unit test event"),
			 COFFER_OK);
	coffer_evlog_close(log);

	/* A store with no event log: nothing to read, no error. */
	assert_int_equal(coffer_evlog_read(dir, on_event, on_damage, &c), COFFER_OK);
	assert_int_equal(c.n + c.nd, 0);
	char missing[PATH_MAX];
	snprintf(missing, sizeof missing, "%s/none", dir);
	assert_int_equal(coffer_evlog_read(missing, on_event, on_damage, &c), COFFER_E_FILE_NOT_FOUND);
	assert_string_equal(coffer_error_last()->file, missing);
	assert_non_null(strstr(coffer_error_last()->message, "does not exist"));
	assert_int_equal(coffer_evlog_open(&log, missing, &o), COFFER_E_FILE_NOT_FOUND);
	coll_free(&c);
}

static int stop_after_two(const coffer_event *ev, void *arg)
{
	(void)ev;
	return ++*(int *)arg == 2 ? 99 : 0;
}

static void test_callback_stops(void **state)
{
	const char *dir = *state;
	coffer_evlog *log = open_log(dir, 0, 0);
	write_n(log, 1, 0, 5);
	coffer_evlog_close(log);
	int seen = 0;
	assert_int_equal(coffer_evlog_read(dir, stop_after_two, NULL, &seen), 99);
	assert_int_equal(seen, 2);
}

/* Several processes append to one log while rotating it. */
static void test_concurrent_writers(void **state)
{
	const char *dir = *state;
	struct coll c = {0};
	enum { WRITERS = 3, EACH = 150 };
	pid_t pids[WRITERS];
	for (int w = 0; w < WRITERS; w++) {
		pids[w] = fork();
		assert_true(pids[w] >= 0);
		if (pids[w] == 0) {
			coffer_evlog_options o = COFFER_EVLOG_OPTIONS_INIT;
			o.max_file_bytes = 4096;
			o.keep_files = 100000;
			o.flags = COFFER_EVLOG_NO_SYSTEM;
			coffer_evlog *log;
			if (coffer_evlog_open(&log, dir, &o) != COFFER_OK)
				_exit(1);
			char r[8], n[8];
			coffer_evfield f[] = {{"RUN", r}, {"N", n}};
			snprintf(r, sizeof r, "%d", w);
			for (int i = 0; i < EACH; i++) {
				snprintf(n, sizeof n, "%d", i);
				if (coffer_event_write(log, 1103, f, 2, NULL) != COFFER_OK)
					_exit(2);
			}
			coffer_evlog_close(log);
			_exit(0);
		}
	}
	for (int w = 0; w < WRITERS; w++) {
		int status;
		assert_int_equal(waitpid(pids[w], &status, 0), pids[w]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	read_all(dir, &c);
	assert_int_equal(c.nd, 0);
	assert_int_equal(c.n, WRITERS * EACH);
	/* Each writer's events appear whole and in its order. */
	long next[WRITERS] = {0};
	for (size_t i = 0; i < c.n; i++) {
		assert_true(c.r[i].run >= 0 && c.r[i].run < WRITERS);
		assert_int_equal(c.r[i].n, next[c.r[i].run]);
		next[c.r[i].run]++;
	}
	coll_free(&c);
}

/*
 * The kill test (WiredTiger's random_abort): a child writes events and, after
 * each coffer_event_write() returns, reports the event's number through a
 * pipe. In even runs the parent waits until a random number of events were
 * reported and kills the child with SIGKILL. A small write(2) is rarely torn
 * by a signal, so in odd runs the child tears one itself: through the patched
 * system call table it writes a random part of a record, then kills itself,
 * as a crash in the middle of write(2) would. At the end every reported event
 * must be in the log, intact, in order; each torn record is reported once
 * and the records appended after it by later runs are read.
 */
enum { KILL_RUNS = 8, KILL_MAX_EVENTS = 20000, KILL_MAX_SECONDS = 5 };

static long tear_countdown; /* in the child: writes left before tearing one */

static ssize_t tearing_write(int fd, const void *buf, size_t n)
{
	/* Only event records: a new file's 16-byte header is not counted. */
	if (n <= 16 || --tear_countdown > 0)
		return cf_os_real.write(fd, buf, n);
	size_t part = 1 + (size_t)rand() % (n - 1);
	if (cf_os_real.write(fd, buf, part) < 0)
		_exit(4);
	raise(SIGKILL);
	_exit(5);
}

static void kill_child(const char *dir, int run, long tear_at, int wfd)
{
	if (tear_at > 0) {
		tear_countdown = tear_at;
		cf_os.write = tearing_write;
	}
	coffer_evlog_options o = COFFER_EVLOG_OPTIONS_INIT;
	o.max_file_bytes = 16384; /* rotations happen under the kills too */
	o.keep_files = 100000;
	o.flags = COFFER_EVLOG_NO_SYSTEM;
	coffer_evlog *log;
	if (coffer_evlog_open(&log, dir, &o) != COFFER_OK)
		_exit(1);
	char r[8], n[16], pad[600];
	memset(pad, 'p', sizeof pad - 1);
	pad[sizeof pad - 1] = '\0';
	coffer_evfield f[] = {{"RUN", r}, {"N", n}, {"PAD", pad}};
	snprintf(r, sizeof r, "%d", run);
	int64_t end = cf_time_now_us() + KILL_MAX_SECONDS * INT64_C(1000000);
	for (uint32_t i = 0; i < KILL_MAX_EVENTS && cf_time_now_us() < end; i++) {
		snprintf(n, sizeof n, "%u", i);
		/* Vary the size so records straddle pages at different places. */
		pad[(i * 37) % (sizeof pad - 1)] = '\0';
		if (coffer_event_write(log, 1103, f, 3, NULL) != COFFER_OK)
			_exit(2);
		pad[(i * 37) % (sizeof pad - 1)] = 'p';
		if (write(wfd, &i, sizeof i) != sizeof i)
			_exit(3);
	}
	_exit(0);
}

static void test_kill_during_writes(void **state)
{
	const char *dir = *state;
	struct coll c = {0};
	long acked[KILL_RUNS];
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	srand(seed);
	for (int run = 0; run < KILL_RUNS; run++) {
		bool tear = run % 2 == 1;
		long want = 20 + rand() % 200, got = -1;
		int p[2];
		assert_int_equal(pipe(p), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			kill_child(dir, run, tear ? want + 1 : 0, p[1]);
		}
		close(p[1]);
		uint32_t i;
		bool killed = false;
		/* Bounded: the child stops by itself after a few seconds. */
		while (read(p[0], &i, sizeof i) == sizeof i) {
			assert_int_equal((long)i, got + 1);
			got = i;
			if (!tear && !killed && got + 1 >= want) {
				kill(pid, SIGKILL);
				killed = true;
			}
		}
		close(p[0]);
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL || (!tear && !killed))
			fail_msg("run %d (seed %u): child ended with status %d, not by the kill", run,
				 seed, status);
		if (tear && got + 1 != want)
			fail_msg("run %d (seed %u): torn after %ld events, not %ld", run, seed, got + 1,
				 want);
		acked[run] = got;
	}
	read_all(dir, &c);
	/* One damaged record per torn run; at most one more per killed run. */
	if (c.nd < KILL_RUNS / 2 || c.nd > KILL_RUNS)
		fail_msg("seed %u: %zu damaged records for %d kills, %d of them tearing", seed, c.nd,
			 KILL_RUNS, KILL_RUNS / 2);
	for (int run = 0; run < KILL_RUNS; run++) {
		/* Present: exactly 0..k with acked <= k <= acked + 1 (the event
		 * written just before the kill may not have been reported). */
		long expect = 0;
		for (size_t j = 0; j < c.n; j++) {
			if (c.r[j].run != run)
				continue;
			if (c.r[j].n != expect)
				fail_msg("seed %u run %d: event %ld where %ld was expected", seed, run,
					 c.r[j].n, expect);
			expect++;
		}
		if (expect - 1 < acked[run] || expect - 1 > acked[run] + (run % 2 == 0))
			fail_msg("seed %u run %d: %ld events acknowledged, %ld found", seed, run,
				 acked[run] + 1, expect);
	}
	coll_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_rotation_and_keep, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_torn_tail_then_append, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_damage_in_the_middle, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_garbage_is_bounded, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_limits_and_keys, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_write_failures_are_returned, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_no_store_and_missing, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_callback_stops, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_concurrent_writers, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_kill_during_writes, setup_dir, teardown_dir),
	};
	return cmocka_run_group_tests_name("evlog", tests, NULL, NULL);
}
