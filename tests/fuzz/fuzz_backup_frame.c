/*
 * fuzz_backup_frame.c - libFuzzer target: the backup protocol's framing
 * (src/backup/proto.c): cf_bkp_recv on a struct cf_stream over one end of a
 * Unix socket pair whose other end carries the input and is then shut down;
 * every frame received goes through cf_bkp_info_decode and
 * cf_bkp_file_decode and cf_bkp_zeros_decode (an ERROR frame is decoded and raised by cf_bkp_recv
 * itself).
 *
 * Input:
 *   byte 0   flags
 *     bit 0  fix checksums: recompute the XXH3 of every whole frame in the
 *            input, so that mutations reach the type and payload checks
 *     bit 1  first read the server's reply line (cf_stream_read_line, as the
 *            client does before the frames: "+COFFER-BACKUP 1\r\n")
 *   then the bytes the peer sends.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "backup/proto.h"
#include "engine/page.h"
#include "fuzz_util.h"

#define MAX_FRAMES 10000

static void fix_checksums(uint8_t *b, size_t n)
{
	for (size_t pos = 0; n - pos >= CF_BKP_HDR;) {
		uint8_t *h = b + pos;
		uint32_t len = cf_get32(h + 8);
		if (len > CF_BKP_MAX_PAYLOAD || len > n - pos - CF_BKP_HDR)
			break;
		uint8_t hz[CF_BKP_HDR];
		memcpy(hz, h, CF_BKP_HDR);
		memset(hz + 16, 0, 8);
		XXH3_state_t st;
		XXH3_64bits_reset(&st);
		XXH3_64bits_update(&st, hz, CF_BKP_HDR);
		XXH3_64bits_update(&st, h + CF_BKP_HDR, len);
		cf_put64(h + 16, XXH3_64bits_digest(&st));
		pos += CF_BKP_HDR + len;
	}
}

/* Queue N bytes at P on FD (non-blocking); what does not fit is dropped,
 * as if the peer went away. */
static void feed(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		p += k;
		n -= (size_t)k;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *buf;
	if (buf == NULL && (buf = malloc(CF_BKP_MAX_PAYLOAD)) == NULL)
		fz_die("no memory");
	if (size < 1)
		return 0;
	unsigned flags = data[0];
	size_t n = size - 1;
	uint8_t *in = malloc(n ? n : 1);
	if (in == NULL)
		fz_die("no memory");
	memcpy(in, data + 1, n);
	if (flags & 1)
		fix_checksums(in, n);

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		fz_die("socketpair: %s", strerror(errno));
	int big = 1 << 20;
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
	setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
	feed(sv[1], in, n);
	shutdown(sv[1], SHUT_WR);

	struct cf_stream s;
	memset(&s, 0, sizeof s);
	s.fd = sv[0];
	s.timeout_ms = 10000;
	strcpy(s.peer, "fuzz-peer");
	if (flags & 2) {
		char line[256];
		(void)cf_stream_read_line(&s, line, sizeof line);
	}
	for (int i = 0; i < MAX_FRAMES; i++) {
		uint16_t type;
		uint32_t len;
		if (cf_bkp_recv(&s, &type, buf, &len) != COFFER_OK) {
			fz_debug("%d frames; then: %s", i, coffer_error_last()->message);
			break;
		}
		struct coffer_backup_info bi;
		char name[256];
		uint64_t fsize;
		(void)cf_bkp_info_decode(buf, len, &bi);
		(void)cf_bkp_file_decode(buf, len, name, sizeof name, &fsize);
		uint32_t zeros;
		(void)cf_bkp_zeros_decode(buf, len, &zeros);
	}
	close(sv[0]);
	close(sv[1]);
	free(in);
	coffer_error_clear();
	return 0;
}
