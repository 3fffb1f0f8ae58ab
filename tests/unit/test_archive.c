/* test_archive.c - backup sets (src/backup): the writer and the reader in
 * both formats with and without zstd, damage (every byte flipped, blocks,
 * manifest, trailer), truncation at many offsets, hostile names and
 * lengths, a full disk, the chain rules, and restore of real sets taken from
 * a live store (full + incremental, point in time, refusals). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/magic.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <openssl/evp.h>

#include <cmocka.h>

#include <coffer/coffer.h>
#include <coffer/event.h>

#include "backup/ar_int.h"
#include "backup/archive.h"
#include "backup/proto.h"
#include "common/err.h"
#include "common/os.h"
#include "engine/env.h"
#include "engine/header.h"

#define OK(x)                                                                                 \
	do {                                                                                  \
		int rc_ = (x);                                                                \
		if (rc_)                                                                      \
			fail_msg("%s: %s (%s)", #x, coffer_error_last()->message,            \
				 coffer_code_name(rc_));                                      \
	} while (0)

#define EXPECT_CODE(x, code)                                                                      \
	do {                                                                                      \
		int rc_ = (x);                                                                    \
		if (rc_ != (code))                                                                \
			fail_msg("%s: expected %s, got %s: %s", #x, coffer_code_name(code),       \
				 rc_ ? coffer_code_name(rc_) : "COFFER_OK", coffer_error_last()->message); \
	} while (0)

static char tdir[512];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_rf(const char *d)
{
	nftw(d, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup(void **state)
{
	(void)state;
	const char *tmp = getenv("TMPDIR");
	snprintf(tdir, sizeof tdir, "%s/coffer-test-archive-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(tdir) == NULL)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	cf_os = cf_os_real;
	cf_os_fault_hook = NULL;
	if (getenv("COFFER_TEST_KEEP") == NULL)
		rm_rf(tdir);
	return 0;
}

static void tpath(char *out, const char *name)
{
	snprintf(out, PATH_MAX, "%s/%s", tdir, name);
}

static int exists(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0;
}

/* Entries of the test directory, for "nothing visible" checks. */
static int count_entries(const char *d)
{
	char cmd[PATH_MAX + 64];
	snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", d);
	FILE *f = popen(cmd, "r");
	int n = -1;
	if (f) {
		if (fscanf(f, "%d", &n) != 1)
			n = -1;
		pclose(f);
	}
	return n;
}

/* ---- synthetic sets ---- */

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

struct tfile {
	const char *name;
	size_t size;
	int random; /* incompressible */
	uint8_t *data;
};

static void fill(struct tfile *f)
{
	f->data = malloc(f->size ? f->size : 1);
	for (size_t i = 0; i < f->size; i++) {
		if (f->random)
			f->data[i] = (uint8_t)next_rand();
		else
			f->data[i] = (uint8_t)("coffer backup set "[(i / 7) % 18] + (i % 4096 == 0));
	}
}

static void free_files(struct tfile *f, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(f[i].data);
}

static cf_set_meta test_meta(uint32_t type, uint32_t gfirst, uint32_t glast)
{
	cf_set_meta m = {.type = type, .page_size = 4096, .gen_first = gfirst, .gen_last = glast,
			 .redo_lsn = ((uint64_t)gfirst << 32) | 4096, .start_us = 1764097200000000,
			 .end_us = 1764097260000000};
	for (int i = 0; i < 16; i++) {
		m.set_id[i] = (uint8_t)(0xA0 + i + type);
		m.signature[i] = (uint8_t)(0x10 + i);
	}
	if (type == CF_SET_INCREMENTAL || type == CF_SET_DIFFERENTIAL)
		m.parent_id[0] = 1;
	return m;
}

/* Write FILES as a set at PATH; chunked writes of odd sizes. */
static void write_set(const char *path, const struct cf_archive_options *o, struct tfile *files,
		      size_t n, const cf_set_meta *meta)
{
	cf_archive_writer *w;
	OK(cf_archive_create(&w, path, o));
	for (size_t i = 0; i < n; i++) {
		OK(cf_archive_file_begin(w, files[i].name));
		size_t pos = 0, chunk = 777;
		while (pos < files[i].size) {
			size_t k = files[i].size - pos < chunk ? files[i].size - pos : chunk;
			OK(cf_archive_file_write(w, files[i].data + pos, k));
			pos += k;
			chunk = chunk * 3 + 1; /* 777, 2332, ... up to several MiB */
		}
		OK(cf_archive_file_end(w));
	}
	assert_true(cf_archive_bytes_in(w) > 0 || n == 0);
	OK(cf_archive_finish(w, meta));
}

/* Read the set with R and compare with FILES. */
static void check_reader(cf_archive_reader *r, struct tfile *files, size_t n, const cf_set_meta *meta)
{
	const char *name;
	size_t i = 0;
	int rc;
	while ((rc = cf_archive_next_file(r, &name)) == COFFER_OK) {
		assert_true(i < n);
		assert_string_equal(name, files[i].name);
		size_t pos = 0;
		for (;;) {
			const void *d;
			size_t k;
			OK(cf_archive_read(r, &d, &k));
			if (k == 0)
				break;
			assert_true(k <= CF_AR_BLOCK_MAX);
			assert_true(pos + k <= files[i].size);
			assert_memory_equal(d, files[i].data + pos, k);
			pos += k;
		}
		assert_int_equal(pos, files[i].size);
		i++;
	}
	EXPECT_CODE(rc, COFFER_E_NOT_FOUND);
	assert_int_equal(i, n);
	const struct cf_set_manifest *m = cf_archive_manifest(r);
	assert_non_null(m);
	assert_int_equal(m->nfiles, n);
	assert_memory_equal(&m->meta, meta, sizeof *meta);
	assert_true(m->host[0] != '\0');
	assert_true(m->coffer_version[0] != 0);
	for (size_t j = 0; j < n; j++) {
		assert_string_equal(m->files[j].name, files[j].name);
		assert_int_equal(m->files[j].size, files[j].size);
		assert_int_equal(m->files[j].blocks, (files[j].size + CF_AR_BLOCK_MAX - 1) / CF_AR_BLOCK_MAX);
	}
	/* after the end: still NOT_FOUND */
	EXPECT_CODE(cf_archive_next_file(r, &name), COFFER_E_NOT_FOUND);
}

static void check_set(const char *path, struct tfile *files, size_t n, const cf_set_meta *meta)
{
	cf_archive_reader *r;
	OK(cf_archive_open(&r, path));
	assert_non_null(cf_archive_manifest(r)); /* file or directory: known at once */
	check_reader(r, files, n, meta);
	cf_archive_close(r);
}

/* The standard test set: a database of 3 MiB + a bit (partial last block),
 * one generation of exactly 1 MiB, one empty, one tiny, random or not. */
#define NSTD 5
static void std_files(struct tfile *f, int random)
{
	struct tfile t[NSTD] = {
		{"coffer.db", 4096 * 800, random, NULL},
		{"log/0000000003.log", CF_AR_BLOCK_MAX, !random, NULL},
		{"log/0000000004.log", 0, 0, NULL},
		{"log/0000000005.log", 5, 1, NULL},
		{"log/0000000006.log", 2 * CF_AR_BLOCK_MAX + 1, random, NULL},
	};
	for (int i = 0; i < NSTD; i++) {
		f[i] = t[i];
		fill(&f[i]);
	}
}

static void roundtrip(int dir, int level, int random)
{
	char path[PATH_MAX];
	tpath(path, "set");
	struct tfile f[NSTD];
	std_files(f, random);
	cf_set_meta meta = test_meta(CF_SET_FULL, 3, 6);
	struct cf_archive_options o = {.format_dir = dir, .compress_level = level, .threads = 2};
	write_set(path, &o, f, NSTD, &meta);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true(dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 0777, dir ? 0700 : 0600);
	assert_int_equal(count_entries(tdir), 1); /* no temporary left */
	check_set(path, f, NSTD, &meta);
	if (!dir) { /* the same file read as a stream */
		cf_archive_reader *r;
		int fd = open(path, O_RDONLY);
		OK(cf_archive_open_fd(&r, fd, "stream"));
		assert_null(cf_archive_manifest(r));
		assert_true(cf_archive_is_stream(r));
		check_reader(r, f, NSTD, &meta);
		assert_int_equal(cf_archive_bytes_read(r), (uint64_t)st.st_size);
		cf_archive_close(r);
		close(fd);
		if (level && !random) { /* compressed (one generation is random) */
			size_t total = 0;
			for (int i = 0; i < NSTD; i++)
				total += f[i].size;
			assert_true(st.st_size < (off_t)(total / 2));
		}
	}
	free_files(f, NSTD);
}

static void test_roundtrip_file_plain(void **s)
{
	(void)s;
	roundtrip(0, 0, 0);
}
static void test_roundtrip_file_zstd(void **s)
{
	(void)s;
	roundtrip(0, 3, 0);
}
static void test_roundtrip_file_zstd_random(void **s)
{
	(void)s;
	roundtrip(0, 1, 1); /* incompressible blocks are stored as they are */
}
static void test_roundtrip_dir_plain(void **s)
{
	(void)s;
	roundtrip(1, 0, 1);
}
static void test_roundtrip_dir_zstd(void **s)
{
	(void)s;
	roundtrip(1, 5, 0);
}

/* A pipe: the writer streams to "standard output" (fd 1 redirected into a
 * pipe), a thread reads it as a stream. */
struct pipe_reader {
	int fd;
	struct tfile *f;
	cf_set_meta meta;
	int ok;
};

static void *pipe_read_main(void *arg)
{
	struct pipe_reader *p = arg;
	cf_archive_reader *r;
	if (cf_archive_open_fd(&r, p->fd, "pipe") != COFFER_OK)
		return NULL;
	const char *name;
	size_t i = 0, bad = 0;
	int rc;
	while ((rc = cf_archive_next_file(r, &name)) == COFFER_OK) {
		size_t pos = 0;
		for (;;) {
			const void *d;
			size_t k;
			if (cf_archive_read(r, &d, &k) != COFFER_OK) {
				bad++;
				break;
			}
			if (k == 0)
				break;
			if (memcmp(d, p->f[i].data + pos, k) != 0)
				bad++;
			pos += k;
		}
		if (pos != p->f[i].size || strcmp(name, p->f[i].name) != 0)
			bad++;
		i++;
	}
	const struct cf_set_manifest *m = cf_archive_manifest(r);
	p->ok = rc == COFFER_E_NOT_FOUND && bad == 0 && i == NSTD && m &&
		memcmp(&m->meta, &p->meta, sizeof p->meta) == 0;
	cf_archive_close(r);
	return NULL;
}

static void test_stream_through_pipe(void **s)
{
	(void)s;
	struct tfile f[NSTD];
	std_files(f, 0);
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	struct pipe_reader pr = {.fd = pfd[0], .f = f, .meta = test_meta(CF_SET_COPY, 3, 6)};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, pipe_read_main, &pr), 0);
	fflush(stdout);
	int saved = dup(1);
	dup2(pfd[1], 1);
	close(pfd[1]);
	struct cf_archive_options o = {.compress_level = 1, .threads = 2};
	cf_archive_writer *w;
	int rc = cf_archive_create(&w, "-", &o);
	for (int i = 0; rc == 0 && i < NSTD; i++) {
		rc = cf_archive_file_begin(w, f[i].name);
		if (rc == 0)
			rc = cf_archive_file_write(w, f[i].data, f[i].size);
		if (rc == 0)
			rc = cf_archive_file_end(w);
	}
	if (rc == 0)
		rc = cf_archive_finish(w, &pr.meta);
	dup2(saved, 1); /* closes the pipe's write end: the reader sees the end */
	close(saved);
	pthread_join(t, NULL);
	close(pfd[0]);
	OK(rc);
	assert_true(pr.ok);
	/* a directory set cannot go to standard output */
	struct cf_archive_options od = {.format_dir = 1};
	EXPECT_CODE(cf_archive_create(&w, "-", &od), COFFER_E_INVALID_ARGUMENT);
	free_files(f, NSTD);
}

/* ---- damage ---- */

/* A small set for exhaustive damage tests: 3 pages of 4 KiB + 2 log files. */
#define NSMALL 3
static void small_files(struct tfile *f)
{
	struct tfile t[NSMALL] = {
		{"coffer.db", 3 * 4096, 0, NULL},
		{"log/0000000007.log", 3000, 1, NULL},
		{"log/0000000008.log", 100, 0, NULL},
	};
	for (int i = 0; i < NSMALL; i++) {
		f[i] = t[i];
		fill(&f[i]);
	}
}

/* Read everything; return the code. */
static int read_everything(cf_archive_reader *r)
{
	const char *name;
	int rc;
	while ((rc = cf_archive_next_file(r, &name)) == COFFER_OK) {
		const void *d;
		size_t k;
		do {
			rc = cf_archive_read(r, &d, &k);
			if (rc)
				return rc;
		} while (k);
	}
	return rc == COFFER_E_NOT_FOUND ? COFFER_OK : rc;
}

static int read_path(const char *path)
{
	cf_archive_reader *r;
	int rc = cf_archive_open(&r, path);
	if (rc)
		return rc;
	rc = read_everything(r);
	cf_archive_close(r);
	return rc;
}

static int read_as_stream(const char *path)
{
	cf_archive_reader *r;
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	int rc = cf_archive_open_fd(&r, fd, path);
	if (rc == 0) {
		rc = read_everything(r);
		cf_archive_close(r);
	}
	close(fd);
	return rc;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *b = malloc(*len ? *len : 1);
	assert_int_equal(fread(b, 1, *len, f), *len);
	fclose(f);
	return b;
}

static void spit(const char *path, const uint8_t *b, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(b, 1, len, f), len);
	fclose(f);
}

static void flip_at(const char *path, uint64_t off)
{
	int fd = open(path, O_RDWR);
	uint8_t b;
	assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0x55;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

static int damage_code_ok(int rc)
{
	return rc == COFFER_E_ARCHIVE_CORRUPT || rc == COFFER_E_ARCHIVE_TRUNCATED ||
	       rc == COFFER_E_DIGEST_MISMATCH || rc == COFFER_E_UNSAFE_PATH || rc == COFFER_E_VERSION;
}

/* Flip every byte of a small set in turn: every flip is found, as a
 * catalog damage code, in file mode and in stream mode. */
static void flip_every_byte(int level)
{
	char path[PATH_MAX];
	tpath(path, "small");
	struct tfile f[NSMALL];
	small_files(f);
	cf_set_meta meta = test_meta(CF_SET_FULL, 7, 8);
	struct cf_archive_options o = {.compress_level = level, .threads = 1};
	write_set(path, &o, f, NSMALL, &meta);
	size_t len;
	uint8_t *orig = slurp(path, &len);
	OK(read_path(path));
	int fd = open(path, O_RDWR);
	for (size_t off = 0; off < len; off++) {
		uint8_t b = orig[off] ^ 0x55;
		assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
		int rc1 = read_path(path), rc2 = read_as_stream(path);
		if (!damage_code_ok(rc1) || !damage_code_ok(rc2))
			fail_msg("flip at %zu of %zu: file mode %s, stream mode %s: %s", off, len,
				 coffer_code_name(rc1) ? coffer_code_name(rc1) : "OK",
				 coffer_code_name(rc2) ? coffer_code_name(rc2) : "OK",
				 coffer_error_last()->message);
		assert_int_equal(pwrite(fd, orig + off, 1, (off_t)off), 1);
	}
	close(fd);
	free(orig);
	free_files(f, NSMALL);
}

static void test_flip_every_byte_plain(void **s)
{
	(void)s;
	flip_every_byte(0);
}

static void test_flip_every_byte_zstd(void **s)
{
	(void)s;
	flip_every_byte(3);
}

/* Read the set at PATH (stream mode: through a descriptor) and compare
 * with FILES; *SAME = 0 if a read succeeded with other content. */
static int read_compare(const char *path, int stream, struct tfile *files, size_t n, int *same)
{
	cf_archive_reader *r = NULL;
	int fd = -1, rc;
	*same = 1;
	if (stream) {
		fd = open(path, O_RDONLY);
		rc = cf_archive_open_fd(&r, fd, path);
	} else {
		rc = cf_archive_open(&r, path);
	}
	if (rc)
		r = NULL;
	const char *name;
	size_t i = 0;
	while (rc == 0 && (rc = cf_archive_next_file(r, &name)) == COFFER_OK) {
		size_t pos = 0;
		for (;;) {
			const void *d;
			size_t k;
			if ((rc = cf_archive_read(r, &d, &k)) != 0 || k == 0)
				break;
			if (i >= n || pos + k > files[i].size || memcmp(d, files[i].data + pos, k))
				*same = 0;
			pos += k;
		}
		if (rc == 0 && (i >= n || pos != files[i].size || strcmp(name, files[i].name)))
			*same = 0;
		i++;
	}
	if (rc == COFFER_E_NOT_FOUND) {
		rc = COFFER_OK;
		if (i != n)
			*same = 0;
	}
	cf_archive_close(r);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Random mutations (bit flips, bytes replaced, inserted, deleted; 1 to 4 at
 * a time) of a small set: a damage code, or the very same content. */
static void test_random_mutations(void **s)
{
	(void)s;
	char path[PATH_MAX], mut[PATH_MAX];
	tpath(path, "small");
	tpath(mut, "mutated");
	struct tfile f[NSMALL];
	small_files(f);
	cf_set_meta meta = test_meta(CF_SET_FULL, 7, 8);
	for (int level = 0; level <= 3; level += 3) {
		struct cf_archive_options o = {.compress_level = level, .threads = 1};
		unlink(path);
		write_set(path, &o, f, NSMALL, &meta);
		size_t len;
		uint8_t *orig = slurp(path, &len), *m = malloc(len + 8);
		for (int it = 0; it < 1500; it++) {
			size_t ml = len;
			memcpy(m, orig, len);
			int nm = 1 + (int)(next_rand() % 4);
			for (int j = 0; j < nm; j++) {
				size_t at = next_rand() % ml;
				switch (next_rand() % 4) {
				case 0:
					m[at] ^= (uint8_t)(1u << (next_rand() % 8));
					break;
				case 1:
					m[at] = (uint8_t)next_rand();
					break;
				case 2:
					memmove(m + at, m + at + 1, ml - at - 1);
					ml--;
					break;
				default:
					if (ml < len + 8) {
						memmove(m + at + 1, m + at, ml - at);
						m[at] = (uint8_t)next_rand();
						ml++;
					}
				}
			}
			spit(mut, m, ml);
			for (int stream = 0; stream < 2; stream++) {
				int same;
				int rc = read_compare(mut, stream, f, NSMALL, &same);
				if (rc == COFFER_OK ? !same : !damage_code_ok(rc))
					fail_msg("mutation %d (level %d, %s): %s%s", it, level,
						 stream ? "stream" : "file",
						 rc ? coffer_code_name(rc) : "read with other content",
						 rc ? coffer_error_last()->message : "");
			}
		}
		free(m);
		free(orig);
	}
	free_files(f, NSMALL);
}

/* Offset of the DATA record of block B of the first file (coffer.db),
 * uncompressed layout. */
static uint64_t block_off(unsigned b)
{
	return AR_HDR_SIZE + AR_REC_SIZE + strlen("coffer.db") + (uint64_t)b * (AR_REC_SIZE + CF_AR_BLOCK_MAX);
}

static void test_damaged_block_is_named(void **s)
{
	(void)s;
	char path[PATH_MAX];
	tpath(path, "set");
	struct tfile f[NSTD];
	std_files(f, 1);
	cf_set_meta meta = test_meta(CF_SET_FULL, 3, 6);
	struct cf_archive_options o = {0};
	write_set(path, &o, f, NSTD, &meta);
	/* a byte in the payload of block 2 of coffer.db */
	flip_at(path, block_off(2) + AR_REC_SIZE + 1000);
	for (int stream = 0; stream < 2; stream++) {
		int rc = stream ? read_as_stream(path) : read_path(path);
		EXPECT_CODE(rc, COFFER_E_ARCHIVE_CORRUPT);
		const coffer_error *e = coffer_error_last();
		assert_non_null(strstr(e->message, "block 2 of \"coffer.db\""));
		assert_non_null(strstr(e->message, "fails its checksum"));
		assert_int_equal(e->offset, (int64_t)block_off(2));
		assert_string_equal(e->file, path);
	}
	flip_at(path, block_off(2) + AR_REC_SIZE + 1000); /* repair */
	OK(read_path(path));
	/* the header of block 1 */
	flip_at(path, block_off(1) + 17);
	EXPECT_CODE(read_path(path), COFFER_E_ARCHIVE_CORRUPT);
	assert_non_null(strstr(coffer_error_last()->message, "block 1 of \"coffer.db\""));
	assert_non_null(strstr(coffer_error_last()->message, "header fails its checksum"));
	assert_int_equal(coffer_error_last()->offset, (int64_t)block_off(1));
	free_files(f, NSTD);
}

static void test_damaged_compressed_block(void **s)
{
	(void)s;
	char path[PATH_MAX];
	tpath(path, "set");
	struct tfile f[NSTD];
	std_files(f, 0);
	cf_set_meta meta = test_meta(CF_SET_FULL, 3, 6);
	struct cf_archive_options o = {.compress_level = 3, .threads = 2};
	write_set(path, &o, f, NSTD, &meta);
	/* find block 1 of coffer.db by walking the records */
	size_t len;
	uint8_t *b = slurp(path, &len);
	uint64_t off = AR_HDR_SIZE;
	struct ar_rec rec;
	for (;;) {
		assert_null(ar_rec_decode(b + off, &rec));
		if (rec.kind == AR_K_DATA && rec.index == 0 && rec.blockno == 1)
			break;
		off += AR_REC_SIZE + rec.stored_len;
	}
	assert_int_equal(rec.comp, AR_C_ZSTD);
	b[off + AR_REC_SIZE + rec.stored_len / 2] ^= 0x01;
	spit(path, b, len);
	EXPECT_CODE(read_path(path), COFFER_E_ARCHIVE_CORRUPT);
	assert_non_null(strstr(coffer_error_last()->message, "block 1 of \"coffer.db\""));
	assert_int_equal(coffer_error_last()->offset, (int64_t)off);
	free(b);
	free_files(f, NSTD);
}

static void test_damaged_manifest_and_trailer(void **s)
{
	(void)s;
	char path[PATH_MAX];
	tpath(path, "set");
	struct tfile f[NSMALL];
	small_files(f);
	cf_set_meta meta = test_meta(CF_SET_FULL, 7, 8);
	write_set(path, NULL, f, NSMALL, &meta);
	size_t len;
	uint8_t *b = slurp(path, &len);
	struct ar_trailer t;
	int nm;
	assert_null(ar_trailer_decode(b + len - AR_TRAILER_SIZE, &t, &nm));
	/* a byte inside the manifest payload */
	flip_at(path, t.mf_off + AR_REC_SIZE + 50);
	EXPECT_CODE(read_path(path), COFFER_E_ARCHIVE_CORRUPT);
	assert_non_null(strstr(coffer_error_last()->message, "manifest"));
	EXPECT_CODE(read_as_stream(path), COFFER_E_ARCHIVE_CORRUPT);
	assert_non_null(strstr(coffer_error_last()->message, "manifest"));
	spit(path, b, len);
	/* the trailer's checksum */
	flip_at(path, len - 3);
	EXPECT_CODE(read_path(path), COFFER_E_ARCHIVE_CORRUPT);
	assert_non_null(strstr(coffer_error_last()->message, "trailer"));
	spit(path, b, len);
	/* bytes after the trailer */
	uint8_t *longer = malloc(len + 1);
	memcpy(longer, b, len);
	longer[len] = 0;
	spit(path, longer, len + 1);
	EXPECT_CODE(read_as_stream(path), COFFER_E_ARCHIVE_CORRUPT);
	assert_non_null(strstr(coffer_error_last()->message, "after its trailer"));
	free(longer);
	free(b);
	free_files(f, NSMALL);
}

static void test_truncation_everywhere(void **s)
{
	(void)s;
	char path[PATH_MAX], cut[PATH_MAX];
	tpath(path, "set");
	tpath(cut, "cut");
	struct tfile f[NSTD];
	std_files(f, 1);
	cf_set_meta meta = test_meta(CF_SET_FULL, 3, 6);
	struct cf_archive_options o = {.compress_level = 1, .threads = 2};
	write_set(path, &o, f, NSTD, &meta);
	size_t len;
	uint8_t *b = slurp(path, &len);
	/* offsets: the first 300 bytes, around every record boundary, random */
	size_t offs[4000], n = 0;
	for (size_t i = 0; i < 300; i++)
		offs[n++] = i;
	for (uint64_t off = AR_HDR_SIZE; off < len && n < 3000;) {
		for (int d = -2; d <= 42; d += 4)
			if ((int64_t)off + d > 0 && off + (uint64_t)d < len)
				offs[n++] = off + (uint64_t)d;
		struct ar_rec rec;
		if (ar_rec_decode(b + off, &rec) != NULL)
			break; /* the trailer */
		off += AR_REC_SIZE + rec.stored_len;
	}
	for (int i = 0; i < 200; i++)
		offs[n++] = next_rand() % len;
	for (int i = 1; i <= 41; i++)
		offs[n++] = len - (size_t)i;
	for (size_t i = 0; i < n; i++) {
		spit(cut, b, offs[i]);
		int rc1 = read_path(cut);
		if (rc1 != COFFER_E_ARCHIVE_TRUNCATED)
			fail_msg("cut at %zu of %zu: file mode %s: %s", offs[i], len,
				 coffer_code_name(rc1) ? coffer_code_name(rc1) : "OK",
				 coffer_error_last()->message);
		int rc2 = read_as_stream(cut);
		if (rc2 != COFFER_E_ARCHIVE_TRUNCATED)
			fail_msg("cut at %zu of %zu: stream mode %s: %s", offs[i], len,
				 coffer_code_name(rc2) ? coffer_code_name(rc2) : "OK",
				 coffer_error_last()->message);
		if (offs[i] > AR_HDR_SIZE + 100)
			assert_true(coffer_error_last()->offset >= 0);
	}
	free(b);
	free_files(f, NSTD);
}

static void test_directory_damage(void **s)
{
	(void)s;
	char path[1024], p[PATH_MAX];
	snprintf(path, sizeof path, "%s/dset", tdir);
	struct tfile f[NSTD];
	std_files(f, 1);
	cf_set_meta meta = test_meta(CF_SET_FULL, 3, 6);
	struct cf_archive_options o = {.format_dir = 1};
	write_set(path, &o, f, NSTD, &meta);
	snprintf(p, sizeof p, "%s/log/0000000006.log.blocks", path);
	size_t len;
	uint8_t *b = slurp(p, &len);
	/* a flipped byte in block 1 of generation 6 */
	flip_at(p, AR_HDR_SIZE + AR_REC_SIZE + 18 + AR_REC_SIZE + CF_AR_BLOCK_MAX + AR_REC_SIZE + 7);
	EXPECT_CODE(read_path(path), COFFER_E_ARCHIVE_CORRUPT);
	assert_non_null(strstr(coffer_error_last()->message, "block 1 of \"log/0000000006.log\""));
	assert_string_equal(coffer_error_last()->file, p);
	assert_int_equal(coffer_error_last()->generation, 6);
	/* truncated block file */
	spit(p, b, len - 10);
	EXPECT_CODE(read_path(path), COFFER_E_ARCHIVE_TRUNCATED);
	/* missing block file */
	unlink(p);
	EXPECT_CODE(read_path(path), COFFER_E_ARCHIVE_TRUNCATED);
	assert_non_null(strstr(coffer_error_last()->message, "is missing"));
	spit(p, b, len);
	OK(read_path(path));
	/* truncated manifest */
	snprintf(p, sizeof p, "%s/MANIFEST", path);
	free(b);
	b = slurp(p, &len);
	spit(p, b, len - 1);
	EXPECT_CODE(read_path(path), COFFER_E_ARCHIVE_TRUNCATED);
	spit(p, b, len);
	flip_at(p, len / 2);
	EXPECT_CODE(read_path(path), COFFER_E_ARCHIVE_CORRUPT);
	free(b);
	free_files(f, NSTD);
}

/* ---- hostile input ---- */

static void test_hostile_names(void **s)
{
	(void)s;
	static const char *bad[] = {"../etc/passwd", "/etc/passwd", "log/../../x", "log/1.log",
				    "coffer.db/x", "a\nb", "log//0000000001.log", "./coffer.db",
				    "log/0000000000.log", "log/00000000001.log", "log/000000000x.log",
				    "COFFER.DB", "log/0000000001.log/", "", "log/99999999999.log"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (cf_archive_name_check(bad[i], strlen(bad[i]), "set", NULL) != COFFER_E_UNSAFE_PATH)
			fail_msg("name \"%s\" was accepted", bad[i]);
	char longname[400];
	memset(longname, 'a', sizeof longname);
	EXPECT_CODE(cf_archive_name_check(longname, sizeof longname, "set", NULL), COFFER_E_UNSAFE_PATH);
	uint32_t g;
	OK(cf_archive_name_check("log/4294967295.log", 18, "set", &g));
	assert_int_equal(g, 4294967295u);
	OK(cf_archive_name_check("coffer.db", 9, "set", &g));
	assert_int_equal(g, 0);

	/* the writer refuses them */
	char path[PATH_MAX];
	tpath(path, "set");
	cf_archive_writer *w;
	OK(cf_archive_create(&w, path, NULL));
	EXPECT_CODE(cf_archive_file_begin(w, "../evil"), COFFER_E_UNSAFE_PATH);
	assert_non_null(strstr(coffer_error_last()->message, "'..'"));
	cf_archive_abort(w);
	assert_int_equal(count_entries(tdir), 0);

	/* an archive naming "../evil" in a FILE record (checksums right) */
	uint8_t buf[4096];
	size_t n = 0;
	ar_hdr_encode(buf, AR_H_STREAM);
	n += AR_HDR_SIZE;
	const char *evil = "../evil";
	struct ar_rec r = {.kind = AR_K_FILE, .raw_len = 7, .stored_len = 7, .xxh = XXH3_64bits(evil, 7)};
	ar_rec_encode(&r, buf + n);
	n += AR_REC_SIZE;
	memcpy(buf + n, evil, 7);
	n += 7;
	spit(path, buf, n);
	EXPECT_CODE(read_as_stream(path), COFFER_E_UNSAFE_PATH);
	assert_non_null(strstr(coffer_error_last()->message, "../evil"));

	/* a manifest naming "/etc/shadow" */
	struct cf_set_file sf = {.name = "/etc/shadow"};
	struct cf_set_manifest m = {.version = 1, .meta = test_meta(CF_SET_INCREMENTAL, 1, 1),
				    .nfiles = 1, .files = &sf};
	uint8_t *p;
	size_t plen;
	OK(ar_manifest_encode(&m, &p, &plen));
	struct cf_set_manifest back;
	EXPECT_CODE(ar_manifest_decode(p, plen, "set", 0, &back), COFFER_E_UNSAFE_PATH);
	free(p);
}

static void test_huge_lengths_bounded(void **s)
{
	(void)s;
	char path[PATH_MAX];
	tpath(path, "set");
	uint8_t buf[256];
	struct ar_rec r;
	/* lengths of each kind out of bounds, checksums right */
	struct ar_rec cases[] = {
		{.kind = AR_K_DATA, .raw_len = 0xFFFFFFFFu, .stored_len = 0xFFFFFFFFu},
		{.kind = AR_K_DATA, .comp = AR_C_ZSTD, .raw_len = 100, .stored_len = 0xFFFFFF00u},
		{.kind = AR_K_DATA, .raw_len = CF_AR_BLOCK_MAX + 1, .stored_len = CF_AR_BLOCK_MAX + 1},
		{.kind = AR_K_FILE, .raw_len = 60000, .stored_len = 60000},
		{.kind = AR_K_MANIFEST, .index = AR_INDEX_NONE, .raw_len = 0xFFFFFFF0u, .stored_len = 0xFFFFFFF0u},
		{.kind = AR_K_END, .raw_len = 1u << 30, .stored_len = 1u << 30},
		{.kind = AR_K_DATA, .comp = 7, .raw_len = 10, .stored_len = 10},
		{.kind = 99, .raw_len = 10, .stored_len = 10},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		assert_non_null(ar_rec_decode((ar_rec_encode(&cases[i], buf), buf), &r));
		ar_hdr_encode(buf, AR_H_STREAM);
		ar_rec_encode(&cases[i], buf + AR_HDR_SIZE);
		spit(path, buf, AR_HDR_SIZE + AR_REC_SIZE + 16);
		EXPECT_CODE(read_as_stream(path), COFFER_E_ARCHIVE_CORRUPT);
	}
	/* a trailer naming a 1 TiB manifest */
	struct ar_trailer t = {.mf_off = 24, .mf_len = 1ull << 40, .mf_xxh = 0};
	int nm;
	uint8_t tb[AR_TRAILER_SIZE];
	ar_trailer_encode(&t, tb);
	assert_non_null(ar_trailer_decode(tb, &t, &nm));
	ar_hdr_encode(buf, AR_H_STREAM);
	memset(buf + AR_HDR_SIZE, 0, 200);
	memcpy(buf + 200, tb, sizeof tb);
	spit(path, buf, 240);
	EXPECT_CODE(read_path(path), COFFER_E_ARCHIVE_CORRUPT);
	/* a manifest claiming 262144 files in 200 bytes: refused before allocating */
	struct cf_set_manifest m = {.version = 1, .meta = test_meta(CF_SET_INCREMENTAL, 1, 1)};
	uint8_t *p;
	size_t plen;
	OK(ar_manifest_encode(&m, &p, &plen));
	cf_put32(p + 76, CF_AR_FILES_MAX);
	struct cf_set_manifest back;
	EXPECT_CODE(ar_manifest_decode(p, plen, "set", 0, &back), COFFER_E_ARCHIVE_CORRUPT);
	cf_put32(p + 76, 0xFFFFFFFFu);
	EXPECT_CODE(ar_manifest_decode(p, plen, "set", 0, &back), COFFER_E_ARCHIVE_CORRUPT);
	cf_put32(p + 76, 0);
	cf_put16(p + 112, 60000); /* host length */
	EXPECT_CODE(ar_manifest_decode(p, plen, "set", 0, &back), COFFER_E_ARCHIVE_CORRUPT);
	free(p);
	/* garbage and an empty file */
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (uint8_t)next_rand();
	spit(path, buf, sizeof buf);
	EXPECT_CODE(read_path(path), COFFER_E_ARCHIVE_CORRUPT);
	EXPECT_CODE(read_as_stream(path), COFFER_E_ARCHIVE_CORRUPT);
	spit(path, buf, 0);
	EXPECT_CODE(read_path(path), COFFER_E_ARCHIVE_TRUNCATED);
	EXPECT_CODE(read_as_stream(path), COFFER_E_ARCHIVE_TRUNCATED);
}

/* ---- writer failures ---- */

static long writes_left;
static ssize_t enospc_write(int fd, const void *b, size_t n)
{
	if (writes_left-- <= 0) {
		errno = ENOSPC;
		return -1;
	}
	return cf_os_real.write(fd, b, n);
}

static void disk_full(int dir, int level)
{
	char path[PATH_MAX];
	tpath(path, "set");
	struct tfile f[NSTD];
	std_files(f, 1);
	cf_set_meta meta = test_meta(CF_SET_FULL, 3, 6);
	struct cf_archive_options o = {.format_dir = dir, .compress_level = level, .threads = 2};
	/* Fail the k-th write for every k until the set completes. */
	for (long k = 0;; k++) {
		cf_os.write = enospc_write;
		writes_left = k;
		cf_archive_writer *w;
		int rc = cf_archive_create(&w, path, &o);
		const char *failed_in = NULL;
		for (int i = 0; rc == 0 && i < NSTD; i++) {
			rc = cf_archive_file_begin(w, f[i].name);
			if (rc == 0)
				rc = cf_archive_file_write(w, f[i].data, f[i].size);
			if (rc == 0)
				rc = cf_archive_file_end(w);
			if (rc)
				failed_in = f[i].name;
		}
		if (w && rc) {
			/* sticky: the same error again */
			assert_int_equal(cf_archive_file_end(w), rc);
			cf_archive_abort(w);
		} else if (rc == 0) {
			rc = cf_archive_finish(w, &meta);
		}
		cf_os = cf_os_real;
		if (rc == 0) {
			assert_true(k > 5);
			check_set(path, f, NSTD, &meta);
			rm_rf(path);
			break;
		}
		EXPECT_CODE(rc, COFFER_E_DISK_FULL);
		const coffer_error *e = coffer_error_last();
		assert_non_null(strstr(e->message, "No space left"));
		if (failed_in)
			assert_non_null(strstr(e->message, failed_in));
		assert_int_equal(e->sys_errno, ENOSPC);
		assert_non_null(strstr(e->file, path));
		assert_true(e->offset >= 0); /* where in the set's file */
		/* nothing visible, no temporary */
		assert_false(exists(path));
		assert_int_equal(count_entries(tdir), 0);
	}
	free_files(f, NSTD);
}

static void test_disk_full_file(void **s)
{
	(void)s;
	disk_full(0, 0);
	disk_full(0, 3);
}

static void test_disk_full_dir(void **s)
{
	(void)s;
	disk_full(1, 0);
	disk_full(1, 3);
}

static int fsync_fails(const char *op, int fd, const char *path)
{
	(void)fd;
	(void)path;
	return strcmp(op, "fsync") == 0 ? EIO : 0;
}

static void test_writer_refusals(void **s)
{
	(void)s;
	char path[PATH_MAX];
	tpath(path, "set");
	struct tfile f[NSMALL];
	small_files(f);
	cf_set_meta meta = test_meta(CF_SET_FULL, 7, 8);
	/* an existing OUT */
	spit(path, (const uint8_t *)"x", 1);
	cf_archive_writer *w;
	EXPECT_CODE(cf_archive_create(&w, path, NULL), COFFER_E_EXISTS);
	unlink(path);
	struct cf_archive_options bad = {.compress_level = 99};
	EXPECT_CODE(cf_archive_create(&w, path, &bad), COFFER_E_INVALID_ARGUMENT);
	/* order: coffer.db first, generations consecutive */
	OK(cf_archive_create(&w, path, NULL));
	OK(cf_archive_file_begin(w, "log/0000000007.log"));
	OK(cf_archive_file_end(w));
	EXPECT_CODE(cf_archive_file_begin(w, "coffer.db"), COFFER_E_INVALID_ARGUMENT);
	EXPECT_CODE(cf_archive_file_begin(w, "log/0000000009.log"), COFFER_E_INVALID_ARGUMENT);
	EXPECT_CODE(cf_archive_file_write(w, "x", 1), COFFER_E_INVALID_ARGUMENT);
	cf_archive_abort(w);
	assert_int_equal(count_entries(tdir), 0);
	/* a manifest that contradicts the files: refused, nothing visible */
	OK(cf_archive_create(&w, path, NULL));
	for (int i = 0; i < NSMALL; i++) {
		OK(cf_archive_file_begin(w, f[i].name));
		OK(cf_archive_file_write(w, f[i].data, f[i].size));
		OK(cf_archive_file_end(w));
	}
	cf_set_meta wrong = test_meta(CF_SET_FULL, 7, 9);
	EXPECT_CODE(cf_archive_finish(w, &wrong), COFFER_E_ARCHIVE_CORRUPT);
	assert_int_equal(count_entries(tdir), 0);
	/* fsync fails at the end: nothing visible */
	cf_os_fault_hook = fsync_fails;
	OK(cf_archive_create(&w, path, NULL));
	for (int i = 0; i < NSMALL; i++) {
		OK(cf_archive_file_begin(w, f[i].name));
		OK(cf_archive_file_write(w, f[i].data, f[i].size));
		OK(cf_archive_file_end(w));
	}
	EXPECT_CODE(cf_archive_finish(w, &meta), COFFER_E_IO);
	cf_os_fault_hook = NULL;
	assert_int_equal(count_entries(tdir), 0);
	/* abort of a directory set removes it */
	struct cf_archive_options od = {.format_dir = 1};
	OK(cf_archive_create(&w, path, &od));
	OK(cf_archive_file_begin(w, f[1].name));
	OK(cf_archive_file_write(w, f[1].data, f[1].size));
	assert_int_equal(count_entries(tdir), 1);
	cf_archive_abort(w);
	assert_int_equal(count_entries(tdir), 0);
	free_files(f, NSMALL);
}


/* ---- the block pipeline (ar_zpool.c, ar_digest.c) ---- */

/* SHA-256 of the whole buffer in one call (as sha256sum gives). */
static void sha256_once(const uint8_t *p, size_t n, uint8_t out[32])
{
	unsigned len = 32;
	assert_int_equal(EVP_Digest(p, n, out, &len, EVP_sha256(), NULL), 1);
}

/* The set's manifest digests are the plain SHA-256 of each file. */
static void check_digests(const char *path, struct tfile *f, size_t n)
{
	cf_archive_reader *r;
	OK(cf_archive_open(&r, path));
	OK(cf_archive_read_all(r));
	const struct cf_set_manifest *m = cf_archive_manifest(r);
	assert_int_equal(m->nfiles, n);
	for (size_t i = 0; i < n; i++) {
		uint8_t want[32];
		sha256_once(f[i].data, f[i].size, want);
		assert_memory_equal(m->files[i].sha256, want, 32);
	}
	cf_archive_close(r);
}

/* Write FILES through cf_archive_file_reserve/commit in pieces of odd
 * sizes, some commits of 0, some pieces through cf_archive_file_write, and
 * with a reserve left unused before each file's end. */
static void write_set_reserved(const char *path, const struct cf_archive_options *o, struct tfile *files,
			       size_t n, const cf_set_meta *meta)
{
	cf_archive_writer *w;
	OK(cf_archive_create(&w, path, o));
	for (size_t i = 0; i < n; i++) {
		OK(cf_archive_file_begin(w, files[i].name));
		cf_archive_file_expect(w, files[i].size);
		size_t pos = 0, piece = 1;
		for (unsigned step = 0; pos < files[i].size; step++) {
			size_t left = files[i].size - pos;
			if (step % 5 == 4) { /* the copying API, mixed in */
				size_t k = left < 3001 ? left : 3001;
				OK(cf_archive_file_write(w, files[i].data + pos, k));
				pos += k;
				continue;
			}
			void *dst;
			size_t room;
			OK(cf_archive_file_reserve(w, &dst, &room));
			assert_true(room >= 1 && room <= CF_AR_BLOCK_MAX);
			size_t k = piece < room ? piece : room;
			if (k > left)
				k = left;
			if (step % 7 == 3)
				k = 0; /* nothing received this time */
			memcpy(dst, files[i].data + pos, k);
			OK(cf_archive_file_commit(w, k));
			pos += k;
			piece = piece * 5 + 3; /* 1, 8, 43, ... then whole blocks */
		}
		void *dst;
		size_t room;
		OK(cf_archive_file_reserve(w, &dst, &room)); /* left empty: no block is written */
		OK(cf_archive_file_end(w));
	}
	OK(cf_archive_finish(w, meta));
}

static void test_pipeline_reserve_commit(void **s)
{
	(void)s;
	static const int levels[] = {0, 3};
	for (int fmt = 0; fmt < 2; fmt++)
		for (int l = 0; l < 2; l++) {
			char path[PATH_MAX];
			tpath(path, "set");
			struct tfile f[NSTD]; /* partial last blocks, an exact block, an empty file */
			std_files(f, l);
			cf_set_meta meta = test_meta(CF_SET_FULL, 3, 6);
			struct cf_archive_options o = {.format_dir = fmt, .compress_level = levels[l], .threads = 2};
			write_set_reserved(path, &o, f, NSTD, &meta);
			assert_int_equal(count_entries(tdir), 1);
			check_set(path, f, NSTD, &meta);
			check_digests(path, f, NSTD);
			rm_rf(path);
			free_files(f, NSTD);
		}
	/* commit beyond the reserved room, and outside a file: refused */
	char path[PATH_MAX];
	tpath(path, "set");
	cf_archive_writer *w;
	OK(cf_archive_create(&w, path, NULL));
	void *dst;
	size_t room;
	EXPECT_CODE(cf_archive_file_reserve(w, &dst, &room), COFFER_E_INVALID_ARGUMENT);
	OK(cf_archive_file_begin(w, "log/0000000001.log"));
	OK(cf_archive_file_reserve(w, &dst, &room));
	assert_int_equal(room, CF_AR_BLOCK_MAX);
	EXPECT_CODE(cf_archive_file_commit(w, room + 1), COFFER_E_INVALID_ARGUMENT);
	cf_archive_abort(w);
	assert_int_equal(count_entries(tdir), 0);
}

/* Preallocation: the set's files are reserved with fallocate on a disk
 * file system, never on tmpfs (where it would allocate and zero every page
 * ahead of the writes, on the receiving thread). */
static unsigned fallocs;
static int counting_fallocate(int fd, int mode, off_t off, off_t len)
{
	if (mode == FALLOC_FL_KEEP_SIZE) /* the hints of sets and restores, not the log's */
		__atomic_add_fetch(&fallocs, 1, __ATOMIC_RELAXED);
	return cf_os_real.fallocate(fd, mode, off, len);
}

static unsigned set_fallocates(const char *dir)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/prealloc-set", dir);
	struct tfile f[NSTD];
	std_files(f, 1);
	cf_set_meta meta = test_meta(CF_SET_FULL, 3, 6);
	struct cf_archive_options o = {.compress_level = 0, .threads = 1};
	fallocs = 0;
	cf_os.fallocate = counting_fallocate;
	write_set_reserved(path, &o, f, NSTD, &meta);
	cf_os = cf_os_real;
	check_set(path, f, NSTD, &meta);
	rm_rf(path);
	free_files(f, NSTD);
	return fallocs;
}

/* WRITE(dir, arg) writes into DIR and returns its fallocate hints: at
 * least one on the test directory (unless that is tmpfs itself), none on
 * /dev/shm (when it is a tmpfs). */
static void check_prealloc_by_fs(unsigned (*write)(const char *dir, void *arg), void *arg)
{
	struct statfs sf;
	assert_int_equal(statfs(tdir, &sf), 0);
	if (sf.f_type != TMPFS_MAGIC)
		assert_true(write(tdir, arg) >= 1);
	else
		print_message("test directory %s is on tmpfs: the disk case is not checked\n", tdir);
	char shm[] = "/dev/shm/coffer-test-prealloc-XXXXXX";
	if (statfs("/dev/shm", &sf) != 0 || sf.f_type != TMPFS_MAGIC || mkdtemp(shm) == NULL) {
		print_message("no tmpfs at /dev/shm: the tmpfs case is not checked\n");
		return;
	}
	unsigned n = write(shm, arg);
	rm_rf(shm);
	assert_int_equal(n, 0);
}

static unsigned set_fallocates_cb(const char *dir, void *arg)
{
	(void)arg;
	return set_fallocates(dir);
}

static void test_preallocation_by_file_system(void **s)
{
	(void)s;
	check_prealloc_by_fs(set_fallocates_cb, NULL);
}

/* Many blocks through a ring of few slots, workers finishing out of order
 * (compressible and random blocks alternate): the set holds them in order
 * and each digest is the plain SHA-256. */
static void test_pipeline_order_many_blocks(void **s)
{
	(void)s;
	static const int levels[] = {0, 1, 9};
	for (int l = 0; l < 3; l++) {
		char path[PATH_MAX];
		tpath(path, "set");
		struct tfile f[3] = {{"coffer.db", 37 * CF_AR_BLOCK_MAX, 0, NULL},
				     {"log/0000000003.log", 0, 0, NULL},
				     {"log/0000000004.log", 5 * CF_AR_BLOCK_MAX + 12345, 1, NULL}};
		for (int i = 0; i < 3; i++)
			fill(&f[i]);
		/* every other block of coffer.db random: slow and fast blocks mix */
		for (size_t b = 1; b < 37; b += 2)
			for (size_t i = 0; i < CF_AR_BLOCK_MAX; i++)
				f[0].data[b * CF_AR_BLOCK_MAX + i] = (uint8_t)next_rand();
		cf_set_meta meta = test_meta(CF_SET_FULL, 3, 4);
		struct cf_archive_options o = {.compress_level = levels[l], .threads = 4};
		write_set(path, &o, f, 3, &meta);
		check_set(path, f, 3, &meta);
		check_digests(path, f, 3);
		/* the same set read as a stream */
		cf_archive_reader *r;
		int fd = open(path, O_RDONLY);
		OK(cf_archive_open_fd(&r, fd, "stream"));
		check_reader(r, f, 3, &meta);
		cf_archive_close(r);
		close(fd);
		rm_rf(path);
		free_files(f, 3);
	}
}

/* A write that fails after a delay, so that the producer is blocks ahead
 * when the writer thread meets the full disk. */
static long slow_writes_left;
static ssize_t slow_enospc_write(int fd, const void *b, size_t n)
{
	if (slow_writes_left-- <= 0) {
		usleep(20000);
		errno = ENOSPC;
		return -1;
	}
	return cf_os_real.write(fd, b, n);
}

static void test_pipeline_writer_error_detail(void **s)
{
	(void)s;
	for (int level = 0; level <= 1; level++) {
		char path[PATH_MAX];
		tpath(path, "set");
		struct tfile f = {"coffer.db", 24 * CF_AR_BLOCK_MAX, 1, NULL};
		fill(&f);
		struct cf_archive_options o = {.compress_level = level, .threads = 2};
		cf_archive_writer *w;
		OK(cf_archive_create(&w, path, &o));
		OK(cf_archive_file_begin(w, f.name));
		/* writes so far: the archive header, the FILE record; then blocks
		 * 0, 1, 2 go out and block 3's write fails */
		slow_writes_left = 3;
		cf_os.write = slow_enospc_write;
		int rc = COFFER_OK;
		size_t pos = 0, calls = 0;
		while (rc == COFFER_OK && pos < f.size) {
			rc = cf_archive_file_write(w, f.data + pos, 65536);
			pos += 65536;
			calls++;
		}
		if (rc == COFFER_OK)
			rc = cf_archive_file_end(w);
		cf_os = cf_os_real;
		EXPECT_CODE(rc, COFFER_E_DISK_FULL);
		coffer_error e = *coffer_error_last();
		assert_non_null(strstr(e.message, "No space left"));
		assert_non_null(strstr(e.message, "coffer.db"));
		assert_non_null(strstr(e.message, path));
		assert_non_null(strstr(e.file, path));
		assert_int_equal(e.sys_errno, ENOSPC);
		if (level == 0) /* the offset of block 3's record in the set */
			assert_int_equal(e.offset, AR_HDR_SIZE + AR_REC_SIZE + 9 + 3 * (AR_REC_SIZE + CF_AR_BLOCK_MAX));
		else
			assert_true(e.offset > 0);
		/* the temporary is gone at once; the error is sticky, detail and all */
		assert_int_equal(count_entries(tdir), 0);
		EXPECT_CODE(cf_archive_file_write(w, "x", 1), COFFER_E_DISK_FULL);
		assert_string_equal(coffer_error_last()->message, e.message);
		assert_int_equal(coffer_error_last()->offset, e.offset);
		void *dst;
		size_t room;
		EXPECT_CODE(cf_archive_file_reserve(w, &dst, &room), COFFER_E_DISK_FULL);
		EXPECT_CODE(cf_archive_file_end(w), COFFER_E_DISK_FULL);
		cf_set_meta meta = test_meta(CF_SET_COPY, 3, 3);
		EXPECT_CODE(cf_archive_finish(w, &meta), COFFER_E_DISK_FULL);
		assert_string_equal(coffer_error_last()->message, e.message);
		assert_false(exists(path));
		assert_int_equal(count_entries(tdir), 0);
		free(f.data);
	}
}

/* ---- frames received in parts (proto.c cf_bkp_rx_*) ---- */

struct frame_sender {
	int fd;
	uint8_t *data;
	size_t n;
};

static void *send_frames(void *arg)
{
	struct frame_sender *fs = arg;
	struct cf_stream s = {.fd = fs->fd, .timeout_ms = 20000};
	snprintf(s.peer, sizeof s.peer, "test sender");
	int rc = cf_bkp_send(&s, BKF_DATA, fs->data, fs->n, NULL, 0);
	if (rc == 0)
		rc = cf_bkp_send_file(&s, "coffer.db", 123);
	if (rc == 0) {
		coffer_error e = {.code = COFFER_E_DISK_FULL, .page = -1, .generation = 7, .offset = 99};
		snprintf(e.message, sizeof e.message, "the server's disk is full");
		snprintf(e.file, sizeof e.file, "/srv/x");
		rc = cf_bkp_send_error(&s, &e);
	}
	if (rc == 0) { /* a DATA frame damaged in transit: one payload byte flipped */
		/* In a copy: the receiver compares FS->data with what it got
		 * while this thread goes on (flipping it in place was a race). */
		uint32_t len = 1000;
		uint8_t *bad = malloc(len);
		if (bad == NULL)
			return (void *)(intptr_t)COFFER_E_NOMEM;
		memcpy(bad, fs->data, len);
		uint8_t h[CF_BKP_HDR] = {'C', 'B', 'K', '1', BKF_DATA, 0};
		memcpy(h + 8, &len, 4);
		XXH3_state_t *st = XXH3_createState();
		XXH3_64bits_reset(st);
		XXH3_64bits_update(st, h, sizeof h);
		XXH3_64bits_update(st, bad, len);
		uint64_t sum = XXH3_64bits_digest(st);
		XXH3_freeState(st);
		memcpy(h + 16, &sum, 8);
		bad[500] ^= 1;
		rc = cf_stream_write(&s, h, sizeof h);
		if (rc == 0)
			rc = cf_stream_write(&s, bad, len);
		free(bad);
	}
	return (void *)(intptr_t)rc;
}

static void test_frames_received_in_parts(void **s)
{
	(void)s;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct frame_sender fs = {.fd = sv[1], .n = CF_BKP_DATA_MAX};
	fs.data = malloc(fs.n);
	for (size_t i = 0; i < fs.n; i++)
		fs.data[i] = (uint8_t)next_rand();
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, send_frames, &fs), 0);
	struct cf_stream in = {.fd = sv[0], .timeout_ms = 20000};
	snprintf(in.peer, sizeof in.peer, "test peer");
	struct cf_bkp_rx rx;
	OK(cf_bkp_rx_init(&rx));
	/* DATA, in three pieces into two buffers */
	uint8_t *got = malloc(fs.n), *buf = malloc(CF_BKP_MAX_PAYLOAD);
	int fd = 12345;
	OK(cf_bkp_rx_head(&in, &rx, &fd));
	assert_int_equal(fd, -1);
	assert_int_equal(rx.type, BKF_DATA);
	assert_int_equal(rx.len, fs.n);
	OK(cf_bkp_rx_read(&in, &rx, got, 1));
	OK(cf_bkp_rx_read(&in, &rx, got + 1, 300000));
	EXPECT_CODE(cf_bkp_rx_end(&in, &rx, NULL), COFFER_E_INTERNAL); /* not all read */
	EXPECT_CODE(cf_bkp_rx_read(&in, &rx, got, fs.n), COFFER_E_INTERNAL); /* more than is left */
	OK(cf_bkp_rx_read(&in, &rx, got + 300001, rx.left));
	OK(cf_bkp_rx_end(&in, &rx, NULL));
	assert_memory_equal(got, fs.data, fs.n);
	/* FILE, whole */
	OK(cf_bkp_rx_head(&in, &rx, NULL));
	assert_int_equal(rx.type, BKF_FILE);
	OK(cf_bkp_rx_read(&in, &rx, buf, rx.len));
	OK(cf_bkp_rx_end(&in, &rx, buf));
	char name[64];
	uint64_t size;
	OK(cf_bkp_file_decode(buf, rx.len, name, sizeof name, &size));
	assert_string_equal(name, "coffer.db");
	assert_int_equal(size, 123);
	/* ERROR: raised with its detail */
	OK(cf_bkp_rx_head(&in, &rx, NULL));
	OK(cf_bkp_rx_read(&in, &rx, buf, rx.len));
	EXPECT_CODE(cf_bkp_rx_end(&in, &rx, buf), COFFER_E_DISK_FULL);
	assert_non_null(strstr(coffer_error_last()->message, "the server's disk is full"));
	assert_string_equal(coffer_error_last()->file, "/srv/x");
	assert_int_equal(coffer_error_last()->offset, 99);
	/* damaged: refused once read */
	OK(cf_bkp_rx_head(&in, &rx, NULL));
	OK(cf_bkp_rx_read(&in, &rx, got, rx.len));
	EXPECT_CODE(cf_bkp_rx_end(&in, &rx, NULL), COFFER_E_PROTOCOL);
	assert_non_null(strstr(coffer_error_last()->message, "damaged in transit"));
	void *trc;
	pthread_join(t, &trc);
	assert_int_equal((intptr_t)trc, 0);
	/* the peer gone: CONNECTION_LOST */
	close(sv[1]);
	EXPECT_CODE(cf_bkp_rx_head(&in, &rx, NULL), COFFER_E_CONNECTION_LOST);
	cf_bkp_rx_free(&rx);
	close(sv[0]);
	free(got);
	free(buf);
	free(fs.data);
}

/* cf_archive_remove: a finished file set and a directory set go, a link
 * planted in the directory set is removed as a link (its target stays). */
static void test_remove_finished_sets(void **s)
{
	(void)s;
	for (int fmt = 0; fmt < 2; fmt++) {
		char path[PATH_MAX], outside[PATH_MAX], link[PATH_MAX + 16];
		tpath(path, "set");
		struct tfile f[NSTD];
		std_files(f, 0);
		cf_set_meta meta = test_meta(CF_SET_FULL, 3, 6);
		struct cf_archive_options o = {.format_dir = fmt};
		write_set_reserved(path, &o, f, NSTD, &meta);
		free_files(f, NSTD);
		tpath(outside, "outside");
		int fd = open(outside, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, "keep", 4), 4);
		close(fd);
		if (fmt) {
			snprintf(link, sizeof link, "%s/log/planted", path);
			assert_int_equal(symlink(outside, link), 0);
		}
		OK(cf_archive_remove(path));
		assert_false(exists(path));
		struct stat st;
		assert_int_equal(stat(outside, &st), 0);
		assert_int_equal(st.st_size, 4);
		unlink(outside);
	}
	assert_int_equal(count_entries(tdir), 0);
}

/* ZEROS payloads: a count of 1..CF_BKP_DATA_MAX in 4 bytes, nothing else. */
static void test_zeros_frame_decode(void **s)
{
	(void)s;
	uint8_t p[8] = {0};
	uint32_t n = 0;
	cf_put32(p, 65536);
	OK(cf_bkp_zeros_decode(p, 4, &n));
	assert_int_equal(n, 65536);
	cf_put32(p, CF_BKP_DATA_MAX);
	OK(cf_bkp_zeros_decode(p, 4, &n));
	cf_put32(p, CF_BKP_DATA_MAX + 1);
	EXPECT_CODE(cf_bkp_zeros_decode(p, 4, &n), COFFER_E_PROTOCOL);
	cf_put32(p, 0);
	EXPECT_CODE(cf_bkp_zeros_decode(p, 4, &n), COFFER_E_PROTOCOL);
	cf_put32(p, 7);
	EXPECT_CODE(cf_bkp_zeros_decode(p, 3, &n), COFFER_E_PROTOCOL);
	EXPECT_CODE(cf_bkp_zeros_decode(p, 8, &n), COFFER_E_PROTOCOL);
	EXPECT_CODE(cf_bkp_zeros_decode(p, 0, &n), COFFER_E_PROTOCOL);
}

/* ---- chain rules ---- */

static void test_chain_rules(void **s)
{
	(void)s;
	struct cf_set_manifest full = {.meta = test_meta(CF_SET_FULL, 3, 5)},
			       i1 = {.meta = test_meta(CF_SET_INCREMENTAL, 6, 7)},
			       i2 = {.meta = test_meta(CF_SET_INCREMENTAL, 8, 8)},
			       d1 = {.meta = test_meta(CF_SET_DIFFERENTIAL, 6, 9)};
	full.meta.set_id[0] = 1;
	i1.meta.set_id[0] = 2;
	i2.meta.set_id[0] = 3;
	d1.meta.set_id[0] = 4;
	memcpy(i1.meta.parent_id, full.meta.set_id, 16);
	memcpy(i2.meta.parent_id, i1.meta.set_id, 16);
	memcpy(d1.meta.parent_id, full.meta.set_id, 16);
	const char *names[] = {"A", "B", "C"};
	const struct cf_set_manifest *ok1[] = {&full, &i1, &i2}, *ok2[] = {&full, &d1};
	OK(cf_set_chain_check(ok1, names, 3));
	OK(cf_set_chain_check(ok2, names, 2));
	OK(cf_set_chain_check(ok1, names, 1));
	struct {
		const struct cf_set_manifest *s[3];
		size_t n;
		const char *words;
	} bad[] = {
		{{&i1, &i2}, 2, "cannot start a restore"},             /* incremental without its full */
		{{&full, &i2}, 2, "was not taken after"},              /* a gap: wrong parent */
		{{&full, &i2, &i1}, 3, "was not taken after"},         /* wrong order */
		{{&full, &d1, &d1}, 3, "must be the last"},            /* two differentials */
		{{&full, &i1, &d1}, 3, "must follow its full set"},
		{{&full, &full}, 2, "second full"},
	};
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		EXPECT_CODE(cf_set_chain_check(bad[k].s, names, bad[k].n), COFFER_E_CHAIN_BROKEN);
		if (!strstr(coffer_error_last()->message, bad[k].words))
			fail_msg("case %zu: \"%s\" lacks \"%s\"", k, coffer_error_last()->message, bad[k].words);
	}
	/* generations missing although the parent matches */
	struct cf_set_manifest gap = i1;
	gap.meta.gen_first = 7;
	const struct cf_set_manifest *g[] = {&full, &gap};
	EXPECT_CODE(cf_set_chain_check(g, names, 2), COFFER_E_CHAIN_BROKEN);
	assert_non_null(strstr(coffer_error_last()->message, "starts at log generation 7"));
	assert_non_null(strstr(coffer_error_last()->message, "ends at 5"));
	/* another database */
	struct cf_set_manifest foreign = i1;
	foreign.meta.signature[3] ^= 1;
	const struct cf_set_manifest *fs[] = {&full, &foreign};
	EXPECT_CODE(cf_set_chain_check(fs, names, 2), COFFER_E_CHAIN_BROKEN);
	assert_non_null(strstr(coffer_error_last()->message, "another database"));
}

static void test_set_rules(void **s)
{
	(void)s;
	struct cf_set_file files[3] = {{"coffer.db", 3 * 4096, 1, {0}},
				       {"log/0000000003.log", 10, 1, {0}},
				       {"log/0000000004.log", 10, 1, {0}}};
	struct cf_set_manifest m = {.meta = test_meta(CF_SET_FULL, 3, 4), .nfiles = 3, .files = files};
	OK(cf_set_check(&m, "s"));
	m.meta.redo_lsn = (uint64_t)5 << 32;
	EXPECT_CODE(cf_set_check(&m, "s"), COFFER_E_ARCHIVE_CORRUPT);
	m.meta.redo_lsn = (uint64_t)3 << 32;
	files[0].size = 3 * 4096 + 1;
	EXPECT_CODE(cf_set_check(&m, "s"), COFFER_E_ARCHIVE_CORRUPT);
	files[0].size = 3 * 4096;
	m.meta.gen_last = 5;
	EXPECT_CODE(cf_set_check(&m, "s"), COFFER_E_ARCHIVE_CORRUPT);
	m.meta.gen_last = 4;
	snprintf(files[2].name, sizeof files[2].name, "log/0000000005.log");
	EXPECT_CODE(cf_set_check(&m, "s"), COFFER_E_ARCHIVE_CORRUPT);
	assert_non_null(strstr(coffer_error_last()->message, "log generation 4"));
	struct cf_set_manifest inc = {.meta = test_meta(CF_SET_INCREMENTAL, 3, 4), .nfiles = 2,
				      .files = files + 1};
	snprintf(files[2].name, sizeof files[2].name, "log/0000000004.log");
	OK(cf_set_check(&inc, "s"));
	memset(inc.meta.parent_id, 0, 16);
	EXPECT_CODE(cf_set_check(&inc, "s"), COFFER_E_ARCHIVE_CORRUPT);
}

/* ---- restore of sets taken from a live store ---- */

static char store[1024];

static void put_keys(coffer_env *env, int from, int to)
{
	for (int i = from; i < to;) {
		coffer_txn *t;
		OK(coffer_txn_begin(env, 0, &t));
		for (int j = 0; j < 50 && i < to; j++, i++) {
			char k[32], v[128];
			snprintf(k, sizeof k, "key%06d", i);
			snprintf(v, sizeof v, "value %d of the backup test, padded to make pages fill", i);
			OK(coffer_put(t, "main", k, strlen(k), v, strlen(v), 0));
		}
		OK(coffer_txn_commit(t));
	}
}

static void check_keys(const char *dir, int from, int to, int present)
{
	coffer_env_options o;
	coffer_env_options_init(&o);
	coffer_env *env;
	OK(coffer_env_open(&env, dir, &o));
	coffer_txn *t;
	OK(coffer_txn_begin(env, COFFER_TXN_READ_ONLY, &t));
	for (int i = from; i < to; i++) {
		char k[32], v[128];
		snprintf(k, sizeof k, "key%06d", i);
		snprintf(v, sizeof v, "value %d of the backup test, padded to make pages fill", i);
		void *val = NULL;
		size_t vlen = 0;
		int rc = coffer_get(t, "main", k, strlen(k), &val, &vlen);
		if (present) {
			if (rc)
				fail_msg("%s: key %s: %s", dir, k, coffer_code_name(rc));
			assert_int_equal(vlen, strlen(v));
			assert_memory_equal(val, v, vlen);
			free(val);
		} else if (rc != COFFER_E_NOT_FOUND) {
			fail_msg("%s: key %s should not be there (%s)", dir, k, coffer_code_name(rc));
		}
	}
	coffer_txn_abort(t);
	OK(coffer_env_close(env));
}

static void copy_file_into(cf_archive_writer *w, const char *path, const char *name)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		fail_msg("open %s: %s", path, strerror(errno));
	OK(cf_archive_file_begin(w, name));
	static uint8_t buf[300000];
	ssize_t k;
	while ((k = read(fd, buf, sizeof buf)) > 0)
		OK(cf_archive_file_write(w, buf, (size_t)k));
	assert_int_equal(k, 0);
	close(fd);
	OK(cf_archive_file_end(w));
}

/* Write a set of the store's files as they are (the store open, quiet). */
static void set_from_store(const char *out, const struct cf_archive_options *o, uint32_t type,
			   uint32_t g1, uint32_t g2, const uint8_t parent[16], uint8_t id[16],
			   uint64_t redo)
{
	char p[PATH_MAX];
	cf_archive_writer *w;
	struct cf_checkpoint ck;
	snprintf(p, sizeof p, "%s/checkpoint", store);
	OK(cf_checkpoint_read(p, &ck));
	cf_set_meta m = {.type = type, .page_size = 4096, .gen_first = g1, .gen_last = g2,
			 .redo_lsn = redo, .start_us = 1, .end_us = 2};
	memcpy(m.signature, ck.signature, 16);
	for (int i = 0; i < 16; i++)
		id[i] = (uint8_t)next_rand();
	memcpy(m.set_id, id, 16);
	if (parent)
		memcpy(m.parent_id, parent, 16);
	OK(cf_archive_create(&w, out, o));
	if (type == CF_SET_FULL) {
		snprintf(p, sizeof p, "%s/coffer.db", store);
		copy_file_into(w, p, "coffer.db");
	}
	for (uint32_t g = g1; g <= g2; g++) {
		char name[32];
		snprintf(name, sizeof name, "log/%010u.log", g);
		snprintf(p, sizeof p, "%s/%s", store, name);
		copy_file_into(w, p, name);
	}
	OK(cf_archive_finish(w, &m));
}

struct two_sets {
	char full[1024], incr[1024];
	uint64_t mid_lsn;   /* after key 1499 */
	uint32_t full_last, incr_last;
};

/* Store with 1000 keys -> full set; 1000 more -> incremental set. */
static void make_two_sets(struct two_sets *ts, int dir_format, int level)
{
	snprintf(store, sizeof store, "%s/store", tdir);
	snprintf(ts->full, sizeof ts->full, "%s/full.set", tdir);
	snprintf(ts->incr, sizeof ts->incr, "%s/incr.set", tdir);
	coffer_env_options o;
	coffer_env_options_init(&o);
	o.flags = COFFER_ENV_CREATE;
	o.page_size = 4096;
	o.log_file_size = 1u << 20;
	o.cache_bytes = 1u << 20;
	o.checkpoint_seconds = 3600;
	coffer_env *env;
	OK(coffer_env_open(&env, store, &o));
	put_keys(env, 0, 1000);
	OK(coffer_env_checkpoint(env));
	char p[PATH_MAX];
	struct cf_checkpoint ck;
	snprintf(p, sizeof p, "%s/checkpoint", store);
	OK(cf_checkpoint_read(p, &ck));
	put_keys(env, 1000, 1100); /* after the checkpoint: replayed from the full set's log */
	uint32_t closed;
	OK(cf_log_roll(env->log, &closed));
	ts->full_last = closed;
	struct cf_archive_options ao = {.format_dir = dir_format, .compress_level = level, .threads = 2};
	uint8_t full_id[16], incr_id[16];
	set_from_store(ts->full, &ao, CF_SET_FULL, CF_LSN_GEN(ck.redo), closed, NULL, full_id, ck.redo);
	put_keys(env, 1100, 1500);
	struct coffer_env_info info;
	OK(coffer_env_info(env, &info));
	ts->mid_lsn = info.last_commit_lsn;
	put_keys(env, 1500, 2000);
	OK(cf_log_roll(env->log, &closed));
	ts->incr_last = closed;
	set_from_store(ts->incr, &ao, CF_SET_INCREMENTAL, ts->full_last + 1, closed, full_id, incr_id, 0);
	OK(coffer_env_close(env));
}

static void on_problem(void *arg, int64_t page, const char *what)
{
	(void)arg;
	fail_msg("coffer_check: page %lld: %s", (long long)page, what);
}

static int events_seen[3];
static int on_event(const coffer_event *ev, void *arg)
{
	(void)arg;
	if (ev->id >= COFFER_EV_RESTORE_STARTED && ev->id <= COFFER_EV_RESTORE_FAILED)
		events_seen[ev->id - COFFER_EV_RESTORE_STARTED]++;
	return 0;
}

static void count_events(const char *dir)
{
	memset(events_seen, 0, sizeof events_seen);
	coffer_evlog_read(dir, on_event, NULL, NULL);
}

/* The same rule for the files a restore lays down: the fallocate hints of
 * one restore of the two sets ARG into DIR. */
static unsigned restore_fallocates(const char *dir, void *arg)
{
	const struct two_sets *ts = arg;
	char target[1024];
	snprintf(target, sizeof target, "%s/restored-prealloc", dir);
	const char *sets[] = {ts->full, ts->incr};
	struct cf_restore_options ro = {.target = target, .evlog_flags = COFFER_EVLOG_NO_SYSTEM};
	struct cf_restore_result res;
	fallocs = 0;
	cf_os.fallocate = counting_fallocate;
	OK(cf_restore(sets, 2, &ro, &res));
	cf_os = cf_os_real;
	assert_true(res.recovered);
	rm_rf(target);
	return fallocs;
}

static void test_restore_preallocation_by_file_system(void **s)
{
	(void)s;
	struct two_sets ts;
	make_two_sets(&ts, 0, 0);
	check_prealloc_by_fs(restore_fallocates, &ts);
}

static void restore_full_incr(int dir_format, int level)
{
	struct two_sets ts;
	make_two_sets(&ts, dir_format, level);
	char target[1024];
	snprintf(target, sizeof target, "%s/restored", tdir);
	const char *sets[] = {ts.full, ts.incr};
	struct cf_restore_options ro = {.target = target, .evlog_flags = COFFER_EVLOG_NO_SYSTEM};
	struct cf_restore_result res;
	OK(cf_restore(sets, 2, &ro, &res));
	assert_int_equal(res.sets, 2);
	assert_true(res.recovered);
	assert_int_equal(res.gen_last, ts.incr_last);
	assert_true(CF_LSN_GEN(res.recovered_to) >= ts.full_last);
	struct stat st;
	assert_int_equal(stat(target, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s/.restore-tmp", target);
	assert_false(exists(p));
	check_keys(target, 0, 2000, 1);
	struct coffer_check_result cr;
	OK(coffer_check(target, on_problem, NULL, &cr));
	assert_int_equal(cr.keys, 2000 + 1); /* and the catalog's entry for "main" */
	count_events(target);
	assert_int_equal(events_seen[0], 1);
	assert_int_equal(events_seen[1], 1);
	assert_int_equal(events_seen[2], 0);

	/* the full set alone: the first 1100 keys */
	char t2[1024];
	snprintf(t2, sizeof t2, "%s/restored-full", tdir);
	ro.target = t2;
	OK(cf_restore(sets, 1, &ro, &res));
	check_keys(t2, 0, 1100, 1);
	check_keys(t2, 1100, 1200, 0);

	/* point in time: up to key 1499 */
	char t3[1024];
	snprintf(t3, sizeof t3, "%s/restored-pit", tdir);
	ro.target = t3;
	ro.until_lsn = ts.mid_lsn;
	OK(cf_restore(sets, 2, &ro, &res));
	check_keys(t3, 0, 1500, 1);
	check_keys(t3, 1500, 2000, 0);
}

static void test_restore_full_incremental_file(void **s)
{
	(void)s;
	restore_full_incr(0, 3);
}

static void test_restore_full_incremental_dir(void **s)
{
	(void)s;
	restore_full_incr(1, 0);
}

static void test_restore_refusals(void **s)
{
	(void)s;
	struct two_sets ts;
	make_two_sets(&ts, 0, 1);
	char target[1024], p[PATH_MAX];
	snprintf(target, sizeof target, "%s/t", tdir);
	struct cf_restore_options ro = {.target = target, .evlog_flags = COFFER_EVLOG_NO_SYSTEM};
	struct cf_restore_result res;
	/* wrong order, incremental alone */
	const char *rev[] = {ts.incr, ts.full};
	EXPECT_CODE(cf_restore(rev, 2, &ro, &res), COFFER_E_CHAIN_BROKEN);
	EXPECT_CODE(cf_restore(rev, 1, &ro, &res), COFFER_E_CHAIN_BROKEN);
	assert_false(exists(target)); /* refused before the target is touched */
	/* a non-empty target */
	mkdir(target, 0700);
	snprintf(p, sizeof p, "%s/somefile", target);
	spit(p, (const uint8_t *)"x", 1);
	const char *sets[] = {ts.full, ts.incr};
	EXPECT_CODE(cf_restore(sets, 2, &ro, &res), COFFER_E_DIR_NOT_EMPTY);
	assert_non_null(strstr(coffer_error_last()->message, "somefile"));
	unlink(p);
	/* a target in use (its lock held) */
	cf_dirlock *lock;
	OK(cf_dirlock_acquire(&lock, target, "cofferd"));
	EXPECT_CODE(cf_restore(sets, 2, &ro, &res), COFFER_E_SERVER_RUNNING);
	assert_non_null(strstr(coffer_error_last()->message, "cofferd"));
	cf_dirlock_release(lock);
	/* a damaged block in the incremental: stops with the block named,
	 * nothing laid down, the failure in the target's event log */
	size_t len;
	uint8_t *b = slurp(ts.incr, &len);
	uint64_t off = AR_HDR_SIZE;
	struct ar_rec rec;
	while (!(ar_rec_decode(b + off, &rec) == NULL && rec.kind == AR_K_DATA && rec.blockno == 0 &&
		 rec.index == 0))
		off += AR_REC_SIZE + rec.stored_len;
	b[off + AR_REC_SIZE + 3] ^= 0x80;
	spit(ts.incr, b, len);
	EXPECT_CODE(cf_restore(sets, 2, &ro, &res), COFFER_E_ARCHIVE_CORRUPT);
	assert_non_null(strstr(coffer_error_last()->message, "block 0 of \"log/"));
	assert_int_equal(coffer_error_last()->offset, (int64_t)off);
	snprintf(p, sizeof p, "%s/coffer.db", target);
	assert_false(exists(p));
	snprintf(p, sizeof p, "%s/.restore-tmp", target);
	assert_false(exists(p));
	count_events(target);
	assert_int_equal(events_seen[0], 1);
	assert_int_equal(events_seen[2], 1);
	b[off + AR_REC_SIZE + 3] ^= 0x80;
	spit(ts.incr, b, len);
	free(b);
	/* the same target again: the event log, the lock file and a
	 * .restore-tmp left by a killed restore do not count */
	snprintf(p, sizeof p, "%s/.restore-tmp", target);
	mkdir(p, 0700);
	snprintf(p, sizeof p, "%s/.restore-tmp/log", target);
	mkdir(p, 0700);
	snprintf(p, sizeof p, "%s/.restore-tmp/log/0000000001.log", target);
	spit(p, (const uint8_t *)"partial", 7);
	ro.no_recover = 1;
	OK(cf_restore(sets, 2, &ro, &res));
	assert_false(res.recovered);
	/* not recovered: the store refuses a plain open, the header says so */
	coffer_env_options eo;
	coffer_env_options_init(&eo);
	coffer_env *env;
	EXPECT_CODE(coffer_env_open(&env, target, &eo), COFFER_E_NEEDS_HARD_RECOVERY);
	snprintf(p, sizeof p, "%s/coffer.db", target);
	int fd = open(p, O_RDONLY);
	struct cf_header h;
	unsigned damaged;
	OK(cf_header_read(fd, p, &h, &damaged));
	close(fd);
	assert_int_equal(h.state, CF_DB_NEEDS_RECOVERY);
	assert_int_equal(damaged, 0);
	/* hard recovery then makes it usable */
	eo.flags = COFFER_ENV_HARD_RECOVERY;
	OK(coffer_env_open(&env, target, &eo));
	OK(coffer_env_close(env));
	check_keys(target, 0, 2000, 1);
	/* and a restore over it is refused */
	ro.no_recover = 0;
	EXPECT_CODE(cf_restore(sets, 2, &ro, &res), COFFER_E_DIR_NOT_EMPTY);
	/* a point in time past the end of the log */
	char t2[1024];
	snprintf(t2, sizeof t2, "%s/t2", tdir);
	ro.target = t2;
	ro.until_us = INT64_MAX / 2;
	EXPECT_CODE(cf_restore(sets, 2, &ro, &res), COFFER_E_UNTIL_NOT_REACHED);
	assert_non_null(strstr(coffer_error_last()->message, "coffer recover"));
	EXPECT_CODE(coffer_env_open(&env, t2, NULL), COFFER_E_NEEDS_HARD_RECOVERY);
}

static void test_restore_hostile_name(void **s)
{
	(void)s;
	/* A set whose manifest and records are consistent but names "../x":
	 * built with the internal encoders. Nothing is written anywhere. */
	char path[PATH_MAX], target[1024], outside[1024];
	tpath(path, "evil.set");
	snprintf(target, sizeof target, "%s/t", tdir);
	snprintf(outside, sizeof outside, "%s/x", tdir);
	uint8_t buf[1024];
	size_t n = 0;
	ar_hdr_encode(buf, AR_H_STREAM);
	n = AR_HDR_SIZE;
	const char *nm = "../x";
	struct ar_rec r = {.kind = AR_K_FILE, .raw_len = 4, .stored_len = 4, .xxh = XXH3_64bits(nm, 4)};
	ar_rec_encode(&r, buf + n);
	memcpy(buf + n + AR_REC_SIZE, nm, 4);
	n += AR_REC_SIZE + 4;
	spit(path, buf, n);
	struct cf_restore_options ro = {.target = target, .evlog_flags = COFFER_EVLOG_NO_SYSTEM};
	struct cf_restore_result res;
	const char *sets[] = {path};
	/* as a file (no trailer: truncated) and as a stream (the name) */
	EXPECT_CODE(cf_restore(sets, 1, &ro, &res), COFFER_E_ARCHIVE_TRUNCATED);
	int fd = open(path, O_RDONLY);
	int saved = dup(0);
	dup2(fd, 0);
	close(fd);
	const char *stdin_set[] = {"-"};
	int rc = cf_restore(stdin_set, 1, &ro, &res);
	dup2(saved, 0);
	close(saved);
	EXPECT_CODE(rc, COFFER_E_UNSAFE_PATH);
	assert_false(exists(outside));
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s/.restore-tmp", target);
	assert_false(exists(p));
}

/* Planted symbolic links on the output paths: a set's name and a file a
 * restore moves into its target are never replaced (RENAME_NOREPLACE), a
 * link is never written or removed through (O_NOFOLLOW, ar_remove_tree). */
static char *planted_link_to; /* on_set: plant TARGET/coffer.db -> this */
static char *planted_at;

static void plant_link(void *arg, const char *set, const struct cf_set_manifest *m)
{
	(void)arg;
	(void)set;
	(void)m;
	if (planted_at && symlink(planted_link_to, planted_at) != 0)
		fail_msg("symlink %s: %s", planted_at, strerror(errno));
	planted_at = NULL; /* once */
}

static void test_planted_links_never_followed(void **s)
{
	(void)s;
	char path[PATH_MAX], aim[PATH_MAX], buf[16];
	struct tfile f[NSMALL];
	small_files(f);
	cf_set_meta meta = test_meta(CF_SET_FULL, 7, 8);
	tpath(path, "set");
	tpath(aim, "aim");
	/* the set's name a dangling link at the start: EXISTS, link kept */
	OK(symlink(aim, path) == 0 ? COFFER_OK : COFFER_E_IO);
	cf_archive_writer *w;
	EXPECT_CODE(cf_archive_create(&w, path, NULL), COFFER_E_EXISTS);
	assert_non_null(strstr(coffer_error_last()->message, "symbolic link"));
	unlink(path);
	/* ... and planted while the set is written, in both formats: never
	 * renamed over, nothing written where it points, temporary removed */
	for (int dir = 0; dir <= 1; dir++) {
		struct cf_archive_options o = {.format_dir = dir};
		OK(cf_archive_create(&w, path, &o));
		for (int i = 0; i < NSMALL; i++) {
			OK(cf_archive_file_begin(w, f[i].name));
			OK(cf_archive_file_write(w, f[i].data, f[i].size));
			OK(cf_archive_file_end(w));
		}
		assert_int_equal(symlink(aim, path), 0);
		EXPECT_CODE(cf_archive_finish(w, &meta), COFFER_E_EXISTS);
		struct stat st;
		assert_int_equal(lstat(path, &st), 0);
		assert_true(S_ISLNK(st.st_mode));
		assert_false(exists(aim));
		assert_int_equal(count_entries(tdir), 1); /* the link only */
		unlink(path);
	}
	free_files(f, NSMALL);

	/* a restore: coffer.db planted as a link in the target after the set
	 * was laid down: refused, the link and what it points at untouched */
	struct two_sets ts;
	make_two_sets(&ts, 0, 1);
	char target[1024], db[PATH_MAX], precious[PATH_MAX];
	snprintf(target, sizeof target, "%s/t", tdir);
	snprintf(db, sizeof db, "%s/coffer.db", target);
	tpath(precious, "precious");
	spit(precious, (const uint8_t *)"keep", 4);
	planted_link_to = precious;
	planted_at = db;
	struct cf_restore_options ro = {.target = target, .evlog_flags = COFFER_EVLOG_NO_SYSTEM,
					.on_set = plant_link};
	struct cf_restore_result res;
	const char *sets[] = {ts.full, ts.incr};
	EXPECT_CODE(cf_restore(sets, 2, &ro, &res), COFFER_E_DIR_NOT_EMPTY);
	assert_non_null(strstr(coffer_error_last()->message, "coffer.db"));
	struct stat st;
	assert_int_equal(lstat(db, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	int fd = open(precious, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, buf, sizeof buf), 4);
	close(fd);
	assert_memory_equal(buf, "keep", 4);
	/* nothing of the restore stays: log/ and checkpoint were taken back */
	char p0[PATH_MAX];
	snprintf(p0, sizeof p0, "%s/log", target);
	assert_false(exists(p0));
	snprintf(p0, sizeof p0, "%s/checkpoint", target);
	assert_false(exists(p0));
	snprintf(p0, sizeof p0, "%s/.restore-tmp", target);
	assert_false(exists(p0));
	unlink(db);
	/* a leftover .restore-tmp holding links (to a directory, to a file):
	 * the links are removed, not what they point at; the restore runs */
	char tmpd[2048], p[PATH_MAX], pdir[1024];
	snprintf(pdir, sizeof pdir, "%s/pdir", tdir);
	mkdir(pdir, 0700);
	snprintf(p, sizeof p, "%s/f", pdir);
	spit(p, (const uint8_t *)"keep", 4);
	snprintf(tmpd, sizeof tmpd, "%s/.restore-tmp", target);
	mkdir(tmpd, 0700);
	snprintf(p, sizeof p, "%s/log", tmpd);
	assert_int_equal(symlink(pdir, p), 0);
	snprintf(p, sizeof p, "%s/coffer.db", tmpd);
	assert_int_equal(symlink(precious, p), 0);
	ro.on_set = NULL;
	OK(cf_restore(sets, 2, &ro, &res));
	snprintf(p, sizeof p, "%s/f", pdir);
	assert_true(exists(p));
	assert_true(exists(precious));
	assert_false(exists(tmpd));
	check_keys(target, 0, 2000, 1);
	/* a lock file that is a link: refused, never written through */
	char t3[1024];
	snprintf(t3, sizeof t3, "%s/t3", tdir);
	mkdir(t3, 0700);
	snprintf(p, sizeof p, "%s/cofferd.lock", t3);
	assert_int_equal(symlink(precious, p), 0);
	ro.target = t3;
	EXPECT_CODE(cf_restore(sets, 2, &ro, &res), COFFER_E_PERMISSION);
	assert_non_null(strstr(coffer_error_last()->message, "symbolic link"));
	fd = open(precious, O_RDONLY);
	assert_int_equal(read(fd, buf, sizeof buf), 4);
	close(fd);
	assert_memory_equal(buf, "keep", 4);
	/* an event log directory that is a link: not ours, refused */
	char t4[1024];
	snprintf(t4, sizeof t4, "%s/t4", tdir);
	mkdir(t4, 0700);
	snprintf(p, sizeof p, "%s/events", t4);
	assert_int_equal(symlink(pdir, p), 0);
	ro.target = t4;
	EXPECT_CODE(cf_restore(sets, 2, &ro, &res), COFFER_E_DIR_NOT_EMPTY);
	assert_int_equal(count_entries(pdir), 1);
}

static void test_restore_from_stdin(void **s)
{
	(void)s;
	struct two_sets ts;
	make_two_sets(&ts, 0, 3);
	char target[1024];
	snprintf(target, sizeof target, "%s/from-stdin", tdir);
	struct cf_restore_options ro = {.target = target, .evlog_flags = COFFER_EVLOG_NO_SYSTEM};
	struct cf_restore_result res;
	/* the full set from a regular file read as a stream, then the incremental */
	int fd = open(ts.full, O_RDONLY);
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(pfd[0]);
		char buf[65536];
		ssize_t k;
		while ((k = read(fd, buf, sizeof buf)) > 0)
			if (write(pfd[1], buf, (size_t)k) != k)
				_exit(1);
		_exit(0);
	}
	close(pfd[1]);
	close(fd);
	int saved = dup(0);
	dup2(pfd[0], 0);
	close(pfd[0]);
	const char *sets[] = {"-", ts.incr};
	int rc = cf_restore(sets, 2, &ro, &res);
	dup2(saved, 0);
	close(saved);
	waitpid(pid, NULL, 0);
	OK(rc);
	check_keys(target, 0, 2000, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip_file_plain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_file_zstd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_file_zstd_random, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_dir_plain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_dir_zstd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_through_pipe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flip_every_byte_plain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flip_every_byte_zstd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_mutations, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_block_is_named, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_compressed_block, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_manifest_and_trailer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncation_everywhere, setup, teardown),
		cmocka_unit_test_setup_teardown(test_directory_damage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_huge_lengths_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disk_full_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disk_full_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_reserve_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_preallocation_by_file_system, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_order_many_blocks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_writer_error_detail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_frames_received_in_parts, setup, teardown),
		cmocka_unit_test(test_zeros_frame_decode),
		cmocka_unit_test_setup_teardown(test_remove_finished_sets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_full_incremental_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_full_incremental_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_hostile_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_from_stdin, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_preallocation_by_file_system, setup, teardown),
		cmocka_unit_test_setup_teardown(test_planted_links_never_followed, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
