/*
 * log_format.h - the byte layout of a log generation file (DIR/log/NNNNNNNNNN.log).
 *
 * All integers little-endian (Coffer refuses big-endian hosts). The design,
 * invariants and the writer's state machine are at the top of log.c.
 *
 * File:  [ header block, 4096 bytes ][ record ][ record ] ... [ zeroes ]
 *
 * Header block (CF_LOG_HDR_SIZE bytes; the fields use the first 64, the rest
 * is zero):
 *
 *   off size field
 *     0    8 magic "COFFERLG"
 *     8    4 format version (CF_LOG_VERSION)
 *    12    4 header size (CF_LOG_HDR_SIZE): records start here
 *    16    4 generation (equals the number in the file name)
 *    20    4 file size in bytes (multiple of 4096, CF_LOG_FILE_MIN..MAX)
 *    24   16 database signature (the store's, from its database header)
 *    40    8 creation time, µs since the epoch (i64)
 *    48    8 prev end: the LSN at which the previous generation ended
 *            (0 for generation 1 or the first generation of a new history)
 *    56    8 checksum: XXH3-64 of bytes [0, 56), seed 0
 *
 * Record (starts at an offset that is a multiple of 8, never crosses the
 * end of its file):
 *
 *   off size field
 *     0    4 length: header + payload in bytes, before padding (>= 16);
 *            0 means "no more records in this file"
 *     4    2 type (CF_LOG_* in log.h)
 *     6    2 flags (0; reserved)
 *     8    8 checksum: XXH3-64 of the whole record (header and payload) with
 *            this field zeroed, seed = the record's LSN, so bytes that are
 *            stale from another position or generation never validate
 *    16      payload (length - 16 bytes), then zero padding up to a multiple of 8
 *
 * A record's LSN is CF_LSN(generation, offset of its first byte); the LSN
 * just past it is CF_LSN(generation, offset + align8(length)). When fewer
 * than 16 bytes are left in a file, the file is full and the log continues
 * in the next generation.
 */
#ifndef COFFER_ENGINE_LOG_FORMAT_H
#define COFFER_ENGINE_LOG_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/page.h"

#define CF_LOG_MAGIC "COFFERLG"
#define CF_LOG_VERSION 1u
#define CF_LOG_HDR_SIZE 4096u
#define CF_LOG_HDR_USED 64u /* bytes of the header block that hold fields */

#define CF_LOG_FILE_MIN (1u << 20)           /* 1 MiB */
#define CF_LOG_FILE_MAX (1u << 30)           /* 1 GiB */
#define CF_LOG_FILE_DEFAULT (16u << 20)      /* 16 MiB */

#define CF_LOG_REC_HDR 16u   /* record header size */
#define CF_LOG_ALIGN 8u      /* records start at multiples of this */
#define CF_LOG_ALIGN_UP(n) (((uint64_t)(n) + (CF_LOG_ALIGN - 1)) & ~(uint64_t)(CF_LOG_ALIGN - 1))

/* File names: 10 decimal digits of the generation, ".log". */
#define CF_LOG_NAME_LEN 14u /* "0000000001.log" */
#define CF_LOG_GEN_MAX UINT32_MAX

/* Header field offsets. */
#define CF_LOG_H_MAGIC 0
#define CF_LOG_H_VERSION 8
#define CF_LOG_H_HDRSIZE 12
#define CF_LOG_H_GEN 16
#define CF_LOG_H_FILESIZE 20
#define CF_LOG_H_SIG 24
#define CF_LOG_H_CREATED 40
#define CF_LOG_H_PREV_END 48
#define CF_LOG_H_CHECKSUM 56

/* Record header field offsets. */
#define CF_LOG_R_LEN 0
#define CF_LOG_R_TYPE 4
#define CF_LOG_R_FLAGS 6
#define CF_LOG_R_CHECKSUM 8

/* A generation's header, decoded. */
struct cf_log_file_header {
	uint32_t version;
	uint32_t header_size;
	uint32_t generation;
	uint32_t file_size;
	uint8_t sig[16];
	int64_t created_us;
	cf_lsn prev_end;
	uint64_t checksum;
};

/* Fill BLOCK (CF_LOG_HDR_SIZE bytes) from H, computing the checksum (stored
 * back into H too). */
void cf_log_header_encode(struct cf_log_file_header *h, uint8_t *block);

/* Decode and verify the first CF_LOG_HDR_USED bytes of a header read from
 * PATH (for the messages). Checks magic, checksum, version, header size and
 * file size bounds; not the generation or signature (the caller knows what
 * to expect). Errors: COFFER_E_LOG_CORRUPT, COFFER_E_VERSION. */
int cf_log_header_decode(const uint8_t *block, const char *path, struct cf_log_file_header *h);

/* The record checksum: XXH3-64 seeded with LSN over the header with its
 * checksum field zeroed (HDR, 16 bytes as stored) and then the payload. */
uint64_t cf_log_rec_checksum(cf_lsn lsn, const uint8_t *hdr, const void *p1, size_t n1,
			     const void *p2, size_t n2);

/* "DIR/NNNNNNNNNN.log" into OUT. Errors: COFFER_E_INVALID_ARGUMENT (too long). */
int cf_log_gen_path(char *out, size_t cap, const char *logdir, uint32_t gen);

/* 1 and *gen if NAME is a generation file name "NNNNNNNNNN.log", else 0. */
int cf_log_parse_name(const char *name, uint32_t *gen);

/* The generations present in LOGDIR, ascending, in *GENS (malloc'ed, free
 * it; NULL when *N is 0). Errors: I/O codes (LOGDIR unreadable), COFFER_E_NOMEM. */
int cf_log_list_gens(const char *logdir, uint32_t **gens, size_t *n);

#endif
