/*
 * fuzz_util.c - helpers shared by the libFuzzer targets (see fuzz_util.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "backup/proto.h"
#include "fuzz_util.h"

static char tmpdir[PATH_MAX];

void fz_die(const char *fmt, ...)
{
	va_list ap;
	fputs("fuzz harness: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

void fz_debug(const char *fmt, ...)
{
	static int on = -1;
	va_list ap;
	if (on < 0)
		on = getenv("COFFER_FUZZ_DEBUG") != NULL;
	if (!on)
		return;
	fputs("fuzz: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void fz_rmtree(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void cleanup(void)
{
	if (tmpdir[0])
		fz_rmtree(tmpdir);
}

const char *fz_tmpdir(void)
{
	if (tmpdir[0])
		return tmpdir;
	const char *base = getenv("TMPDIR");
	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	if (snprintf(tmpdir, sizeof tmpdir, "%s/coffer-fuzz-XXXXXX", base) >= (int)sizeof tmpdir)
		fz_die("TMPDIR is too long");
	if (mkdtemp(tmpdir) == NULL)
		fz_die("mkdtemp %s: %s", tmpdir, strerror(errno));
	atexit(cleanup);
	return tmpdir;
}

void fz_path(char *out, const char *dir, const char *name)
{
	if (snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX)
		fz_die("path %s/%s is too long", dir, name);
}

void fz_write_file(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		fz_die("open %s: %s", path, strerror(errno));
	const uint8_t *b = p;
	while (n > 0) {
		ssize_t k = write(fd, b, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			fz_die("write %s: %s", path, strerror(errno));
		b += k;
		n -= (size_t)k;
	}
	close(fd);
}

void fz_truncate(const char *path, uint64_t size)
{
	if (truncate(path, (off_t)size) != 0)
		fz_die("truncate %s: %s", path, strerror(errno));
}

uint8_t *fz_read_file(const char *path, size_t *n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0)
		fz_die("open %s: %s", path, strerror(errno));
	uint8_t *b = malloc((size_t)st.st_size + 1);
	size_t got = 0;
	if (b == NULL)
		fz_die("no memory for %s", path);
	while (got < (size_t)st.st_size) {
		ssize_t k = read(fd, b + got, (size_t)st.st_size - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			fz_die("read %s: %s", path, k ? strerror(errno) : "short file");
		got += (size_t)k;
	}
	close(fd);
	*n = got;
	return b;
}

void fz_mkdir(const char *path)
{
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		fz_die("mkdir %s: %s", path, strerror(errno));
}

uint8_t fz_u8(struct fz_in *in)
{
	if (in->n == 0)
		return 0;
	in->n--;
	return *in->p++;
}

uint16_t fz_u16(struct fz_in *in)
{
	uint16_t lo = fz_u8(in);
	return (uint16_t)(lo | (fz_u8(in) << 8));
}

const uint8_t *fz_take(struct fz_in *in, size_t n, size_t *len)
{
	const uint8_t *p = in->p;
	if (n > in->n)
		n = in->n;
	in->p += n;
	in->n -= n;
	*len = n;
	return p;
}

/* ---- backup frames (src/backup/proto.h) ---- */

static void fix_frame_sums(uint8_t *b, size_t n)
{
	for (size_t pos = 0; n - pos >= CF_BKP_HDR;) {
		uint8_t *h = b + pos;
		uint32_t len;
		memcpy(&len, h + 8, 4);
		if (len > CF_BKP_MAX_PAYLOAD || len > n - pos - CF_BKP_HDR)
			break;
		uint8_t hz[CF_BKP_HDR];
		memcpy(hz, h, CF_BKP_HDR);
		memset(hz + 16, 0, 8);
		XXH3_state_t st;
		XXH3_64bits_reset(&st);
		XXH3_64bits_update(&st, hz, CF_BKP_HDR);
		XXH3_64bits_update(&st, h + CF_BKP_HDR, len);
		uint64_t sum = XXH3_64bits_digest(&st);
		memcpy(h + 16, &sum, 8);
		pos += CF_BKP_HDR + len;
	}
}

int fz_peer_socket(const uint8_t *p, size_t n, int fix)
{
	uint8_t *in = malloc(n ? n : 1);
	if (in == NULL)
		fz_die("no memory");
	memcpy(in, p, n);
	if (fix)
		fix_frame_sums(in, n);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		fz_die("socketpair: %s", strerror(errno));
	int big = 1 << 20;
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
	setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
	const uint8_t *q = in;
	while (n > 0) {
		ssize_t k = send(sv[1], q, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		q += k;
		n -= (size_t)k;
	}
	close(sv[1]);
	free(in);
	return sv[0];
}
