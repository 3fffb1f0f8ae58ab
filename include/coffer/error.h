/*
 * coffer/error.h - error codes and the per-thread error detail record.
 *
 * Every libcoffer call that can fail returns an int: COFFER_OK (0) on
 * success, or one of the COFFER_E_* codes of the catalog (catalog/errors.ini,
 * docs/errors.md). A failing call also leaves a detail record for the calling
 * thread, read with coffer_error_last(): a sentence saying what failed, and
 * the object it concerns (file, page, log generation, offset, errno, peer).
 * The record stays until the next failure on the same thread or
 * coffer_error_clear().
 */
#ifndef COFFER_ERROR_H
#define COFFER_ERROR_H

#include <stdint.h>
#include <stdio.h>

#include <coffer/errcodes.h>

#ifdef __cplusplus
extern "C" {
#endif

/** "No value" marker for the numeric object fields of coffer_error. */
#define COFFER_NONE INT64_C(-1)

/** The object an error concerns. Unknown numeric fields are COFFER_NONE,
 *  unknown strings are empty. */
typedef struct coffer_error {
	int code;               /* COFFER_E_*, or COFFER_OK when no error */
	int sys_errno;          /* errno of the failing system call, or 0 */
	char message[768];      /* what failed, on which object: one sentence */
	char file[512];         /* file or directory concerned */
	int64_t page;           /* database page number */
	int64_t generation;     /* log generation */
	int64_t offset;         /* byte offset in file or stream */
	char peer[128];         /* peer: "uid 1001" or "192.0.2.7:5000" */
	const char *func;       /* where it was raised (for bug reports) */
	int line;
} coffer_error;

/** The calling thread's last error; never NULL (code COFFER_OK if none). */
const coffer_error *coffer_error_last(void);

/** Forget the calling thread's last error. */
void coffer_error_clear(void);

/** Symbolic name of a code ("COFFER_E_IO"), or NULL if the code is unknown. */
const char *coffer_code_name(int code);

/** One-line message of a code, or "unknown error" if the code is unknown. */
const char *coffer_code_message(int code);

/** Explanation and remedy sentences of a code, or NULL if unknown. */
const char *coffer_code_explanation(int code);
const char *coffer_code_remedy(int code);

/** Look a code up by number ("20"), full name ("COFFER_E_IO") or short
 *  name ("IO", case-insensitive). Returns the code, or 0 if none. */
int coffer_code_lookup(const char *text);

/** Write the whole of err as the programs print it:
 *    PROG: error: MESSAGE (NAME)
 *    PROG: detail: file=... page=... errno=...      (only when there is one)
 *    PROG: hint: REMEDY
 */
void coffer_error_print(FILE *out, const char *prog, const coffer_error *err);

/** Format the object fields of err as "file=/x page=3 errno=28 (...)".
 *  Returns the length written (0 if err has no object). */
size_t coffer_error_object(const coffer_error *err, char *buf, size_t len);

/** Map an errno value to the closest code (ENOSPC -> COFFER_E_DISK_FULL...). */
int coffer_code_from_errno(int err);

#ifdef __cplusplus
}
#endif
#endif
