/*
 * fuzz_backup_stream.c - libFuzzer target: the backup client's side of the
 * stream (src/backup/take.c), the code that turns whatever a server sends
 * into a backup set. cf_take_stream reads a struct cf_stream over one end
 * of a Unix socket pair whose other end carried the input and was closed
 * (so the client's own frames, FD_FAIL and FD_OK, meet EPIPE, and a read
 * past the input meets the end of the connection), writing into a real
 * archive writer in the harness's temporary directory.
 *
 * Input:
 *   byte 0   flags
 *     bit 0  fix checksums: recompute the XXH3 of every whole frame, so
 *            that mutations reach the checks behind the checksum
 *     bit 1  the fast path was agreed (frame headers read with recvmsg)
 *     bit 2  a zstd-compressed set (level 1), else uncompressed
 *     bit 3  a directory set (--format dir), else one archive file
 *   then the bytes the server sends after its "+COFFER-BACKUP 1" line.
 *
 * Invariants, beyond no crash, leak or hang:
 *   - a stream that fails leaves nothing at the set's path (aborted: no
 *     temporary either, the directory is empty again);
 *   - a stream the client accepts, once the set is finished, gives a set
 *     that opens, reads back whole (every block checked) and whose manifest
 *     agrees with its files (cf_set_check) - as `coffer verify` would find.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <dirent.h>
#include <unistd.h>

#include "backup/archive.h"
#include "backup/proto.h"
#include "backup/take.h"
#include "fuzz_util.h"

/* Entries in DIR other than . and .. */
static int entries(const char *dir)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		fz_die("opendir %s: %s", dir, strerror(errno));
	int n = 0;
	for (struct dirent *e; (e = readdir(d)) != NULL;)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/* The finished set at PATH must read back whole and agree with itself. */
static void check_set(const char *path)
{
	cf_archive_reader *r;
	if (cf_archive_open(&r, path) != COFFER_OK)
		fz_die("a set the client finished does not open: %s", coffer_error_last()->message);
	if (cf_archive_read_all(r) != COFFER_OK)
		fz_die("a set the client finished does not read back: %s", coffer_error_last()->message);
	const struct cf_set_manifest *m = cf_archive_manifest(r);
	if (m == NULL || cf_set_check(m, path) != COFFER_OK)
		fz_die("a set the client finished fails its own manifest: %s", coffer_error_last()->message);
	cf_archive_close(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *buf;
	static char dir[PATH_MAX], path[PATH_MAX];
	if (buf == NULL) {
		if ((buf = malloc(CF_BKP_MAX_PAYLOAD)) == NULL)
			fz_die("no memory");
		fz_path(dir, fz_tmpdir(), "sets");
		fz_mkdir(dir);
		fz_path(path, dir, "set");
	}
	if (size < 1)
		return 0;
	unsigned flags = data[0];
	int fd = fz_peer_socket(data + 1, size - 1, flags & 1);

	struct cf_archive_options ao = {.compress_level = (flags & 4) ? 1 : 0, .format_dir = (flags & 8) != 0,
					.threads = 1};
	cf_archive_writer *w;
	if (cf_archive_create(&w, path, &ao) != COFFER_OK)
		fz_die("cannot create a set in %s: %s", dir, coffer_error_last()->message);
	struct cf_stream s;
	memset(&s, 0, sizeof s);
	s.fd = fd;
	strcpy(s.peer, "fuzz-server");
	struct cf_take t = {.s = &s, .w = w, .buf = buf, .fast = (flags & 2) != 0};
	int rc = cf_take_stream(&t);
	if (rc == COFFER_OK) {
		rc = cf_take_finish(&t, t.bi.start_us);
		fz_debug("accepted: %u files taken, finish: %s", t.fast_files,
			 rc ? coffer_error_last()->message : "ok");
		if (rc == COFFER_OK) {
			check_set(path);
			if (cf_archive_remove(path) != COFFER_OK)
				fz_die("cannot remove %s: %s", path, coffer_error_last()->message);
		}
	} else {
		fz_debug("refused after %llu bytes: %s", (unsigned long long)t.done, coffer_error_last()->message);
		cf_archive_abort(w);
	}
	if (entries(dir) != 0)
		fz_die("a backup that %s left files in %s", rc ? "failed" : "was removed", dir);
	close(fd);
	coffer_error_clear();
	return 0;
}
