/*
 * fuzz_util.h - helpers shared by the libFuzzer targets in tests/fuzz.
 *
 * A target's input is untrusted bytes; a failure of the harness itself (a
 * temporary file that cannot be written) is not a finding, so these helpers
 * abort with a message naming the harness, never silently continue.
 */
#ifndef COFFER_TESTS_FUZZ_UTIL_H
#define COFFER_TESTS_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* The libFuzzer entry point every target defines. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A private directory for this process, created at the first call under
 * $TMPDIR (else /tmp) and removed at exit. */
const char *fz_tmpdir(void);

/* DIR/NAME into OUT (PATH_MAX); aborts if it does not fit. */
void fz_path(char *out, const char *dir, const char *name);

/* Create or replace PATH with N bytes at P (mode 0600); aborts on failure. */
void fz_write_file(const char *path, const void *p, size_t n);

/* Make PATH exactly SIZE bytes long (sparse); aborts on failure. */
void fz_truncate(const char *path, uint64_t size);

/* Read all of PATH into a malloc'ed buffer (*N bytes); aborts on failure. */
uint8_t *fz_read_file(const char *path, size_t *n);

/* Create directory PATH (0700) if it does not exist; aborts on failure. */
void fz_mkdir(const char *path);

/* Remove PATH and everything under it (no error if it does not exist). */
void fz_rmtree(const char *path);

/* Stop with a message: a broken harness or a violated invariant of the code
 * under test (the latter is a finding, reported by libFuzzer as a crash). */
void fz_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* With COFFER_FUZZ_DEBUG set in the environment: print what the harness
 * saw to stderr (to check that seeds reach deep, or to triage an input). */
void fz_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Consume bytes from the front of an input. */
struct fz_in {
	const uint8_t *p;
	size_t n;
};
uint8_t fz_u8(struct fz_in *in);   /* 0 when empty */
uint16_t fz_u16(struct fz_in *in); /* little-endian; missing bytes are 0 */
/* Up to N bytes (fewer if the input is shorter): *LEN gets the count. */
const uint8_t *fz_take(struct fz_in *in, size_t n, size_t *len);

/* One end of a Unix socket pair on which the N bytes at P are queued and
 * whose other end is closed: reads get the bytes, then the end of the
 * connection; writes get EPIPE. FIX: first recompute the XXH3 of every
 * whole backup frame in the bytes (src/backup/proto.h), so that mutations
 * reach the checks behind the checksum.
 * What does not fit in the socket's buffer (1 MiB) is dropped, as if the
 * peer went away. */
int fz_peer_socket(const uint8_t *p, size_t n, int fix);

#endif
