/*
 * fuzz_backup_frame.c - libFuzzer target: the backup protocol's framing
 * (src/backup/proto.c): cf_bkp_recv on a struct cf_stream over one end of a
 * Unix socket pair whose other end carried the input and was closed;
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

#include "backup/proto.h"
#include "engine/page.h"
#include "fuzz_util.h"

#define MAX_FRAMES 10000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *buf;
	if (buf == NULL && (buf = malloc(CF_BKP_MAX_PAYLOAD)) == NULL)
		fz_die("no memory");
	if (size < 1)
		return 0;
	unsigned flags = data[0];
	int fd = fz_peer_socket(data + 1, size - 1, flags & 1);

	struct cf_stream s;
	memset(&s, 0, sizeof s);
	s.fd = fd;
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
	close(fd);
	coffer_error_clear();
	return 0;
}
