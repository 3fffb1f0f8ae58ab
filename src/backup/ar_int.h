/*
 * ar_int.h - the pieces of the backup module that talk to each other
 * (internal; the API is archive.h, the format is at the top of archive.c).
 */
#ifndef COFFER_BACKUP_AR_INT_H
#define COFFER_BACKUP_AR_INT_H

#include <stddef.h>
#include <stdint.h>

#include <coffer/error.h>

#include "backup/archive.h"

/* ---- format (archive.c) ---- */
#define AR_FORMAT_VERSION 1u
#define AR_HDR_SIZE 24u     /* archive header: start of a stream or of a directory set's file */
#define AR_REC_SIZE 40u     /* record header */
#define AR_TRAILER_SIZE 40u
#define AR_END_SIZE 48u     /* payload of an END record */
#define AR_MF_FIXED 120u    /* fixed part of the manifest payload */

enum ar_hdr_kind { AR_H_STREAM = 1, AR_H_BLOCKS = 2, AR_H_MANIFEST = 3 };
enum ar_kind { AR_K_FILE = 1, AR_K_DATA = 2, AR_K_END = 3, AR_K_MANIFEST = 4 };
enum ar_comp { AR_C_NONE = 0, AR_C_ZSTD = 1 };

#define AR_INDEX_NONE UINT32_MAX /* file index of a MANIFEST record */

struct ar_rec {
	uint8_t kind, comp;
	uint32_t index;      /* file index in the set (AR_INDEX_NONE: manifest) */
	uint32_t blockno;    /* DATA: block number within the file; else 0 */
	uint32_t raw_len;    /* payload bytes once decompressed */
	uint32_t stored_len; /* payload bytes that follow the header */
	uint64_t xxh;        /* XXH3-64 of the raw payload */
};

struct ar_trailer {
	uint64_t mf_off;     /* offset of the MANIFEST record in its file */
	uint64_t mf_len;     /* manifest payload bytes */
	uint64_t mf_xxh;     /* XXH3-64 of the manifest payload */
};

/* Largest stored payload of a DATA block: ZSTD_compressBound(1 MiB). */
size_t ar_stored_max(void);

void ar_hdr_encode(uint8_t out[AR_HDR_SIZE], uint32_t kind);
/* NULL if valid (*KIND set), else why not. COFFER_E_VERSION is the caller's
 * to raise when *VERSION differs (returned "version"). */
const char *ar_hdr_decode(const uint8_t in[AR_HDR_SIZE], uint32_t *kind, uint32_t *version);

/* Fill the header checksum too. */
void ar_rec_encode(const struct ar_rec *r, uint8_t out[AR_REC_SIZE]);
/* NULL if the header is valid (magic, checksum, reserved bytes, lengths in
 * bounds for its kind), else a short reason. */
const char *ar_rec_decode(const uint8_t in[AR_REC_SIZE], struct ar_rec *r);
/* 1 if the 40 bytes start with the record magic (to tell a damaged header
 * from something else). */
int ar_rec_has_magic(const uint8_t in[AR_REC_SIZE]);

void ar_trailer_encode(const struct ar_trailer *t, uint8_t out[AR_TRAILER_SIZE]);
/* NULL if valid, else why; *NO_MAGIC = 1 when the magic is absent. */
const char *ar_trailer_decode(const uint8_t in[AR_TRAILER_SIZE], struct ar_trailer *t, int *no_magic);

void ar_end_encode(uint8_t out[AR_END_SIZE], uint64_t size, uint64_t blocks, const uint8_t sha[32]);
void ar_end_decode(const uint8_t in[AR_END_SIZE], uint64_t *size, uint64_t *blocks, uint8_t sha[32]);

/* The manifest payload. Encode: *OUT malloc'ed. Decode: checks every
 * bound and name (COFFER_E_ARCHIVE_CORRUPT / COFFER_E_UNSAFE_PATH /
 * COFFER_E_VERSION naming WHERE); M->files malloc'ed (ar_manifest_free). */
int ar_manifest_encode(const struct cf_set_manifest *m, uint8_t **out, size_t *len);
int ar_manifest_decode(const uint8_t *p, size_t len, const char *where, uint64_t off,
		       struct cf_set_manifest *m);
void ar_manifest_free(struct cf_set_manifest *m);

/* Printable form of LEN bytes of S for messages ("\xNN" escapes). */
void ar_printable(char *dst, size_t cap, const void *s, size_t len);
void ar_hex(char *dst, const uint8_t *b, size_t n); /* 2n+1 bytes */

/* ---- SHA-256 (ar_digest.c) ---- */
typedef struct ar_sha ar_sha;
int ar_sha_new(ar_sha **out);
void ar_sha_reset(ar_sha *s);
void ar_sha_update(ar_sha *s, const void *p, size_t n);
void ar_sha_final(ar_sha *s, uint8_t out[32]);
void ar_sha_free(ar_sha *s);

/* ---- block pipeline (ar_zpool.c) ---- */

/* A block buffer: AR_REC_SIZE bytes of headroom before each payload so the
 * record header and its payload leave in one write. */
struct ar_block {
	uint8_t *raw;        /* headroom + CF_AR_BLOCK_MAX */
	uint8_t *z;          /* headroom + ar_stored_max() (NULL without compression) */
	size_t raw_len, z_len;
	uint32_t index, blockno;
	uint64_t xxh;
	int compressed;      /* the stored payload is z */
	int rc;              /* a worker's failure */
	char why[160];
	int state;           /* ar_zpool.c */
	uint64_t seq;
};
#define AR_RAW(b) ((b)->raw + AR_REC_SIZE)
#define AR_Z(b) ((b)->z + AR_REC_SIZE)

struct ar_zpool;
/* EMIT is called on the pool's writer thread, blocks in submission order
 * (an empty block is not emitted). It may raise an error (the thread's
 * error record is kept and handed to the producer). */
typedef int (*ar_emit_fn)(void *arg, struct ar_block *b);
/* Workers (XXH3, zstd at LEVEL != 0; THREADS of them, 0 = online CPUs; one
 * at level 0), the SHA thread (feeding SHA in block order; NULL: none) and
 * the writer thread. */
int ar_zpool_new(struct ar_zpool **out, int level, int threads, ar_sha *sha, ar_emit_fn emit, void *arg);
/* A free block to fill (waits for a slot). Blocks must be submitted in the
 * order they were acquired, one acquired at a time. */
int ar_zpool_acquire(struct ar_zpool *p, struct ar_block **b);
/* Hand a filled block over (raw_len 0: a placeholder, hashed and written as
 * nothing). Returns a failure of the pipeline, if any. */
int ar_zpool_submit(struct ar_zpool *p, struct ar_block *b);
/* Wait until every submitted block has been hashed and emitted. */
int ar_zpool_drain(struct ar_zpool *p);
/* Stop the writer for good, waiting for an emit in progress (before the
 * output is removed after a failure). */
void ar_zpool_halt(struct ar_zpool *p);
/* Stop the threads and free (submitted blocks are dropped). */
void ar_zpool_free(struct ar_zpool *p);

/* ---- SHA-256 on its own thread (ar_digest.c), for the reader ---- */
struct ar_sha_pipe;
/* Hash on a thread into S (the caller's; reset/final only when idle). */
int ar_sha_pipe_new(struct ar_sha_pipe **out, ar_sha *s);
/* Queue N bytes at P (must stay valid until hashed); waits while the queue
 * holds AR_SHA_PIPE_DEPTH buffers. Returns the buffer's sequence number. */
#define AR_SHA_PIPE_DEPTH 4u
uint64_t ar_sha_pipe_push(struct ar_sha_pipe *p, const void *buf, size_t n);
/* Wait until buffers 0..SEQ-1 are hashed (SEQ = pushes so far: all). */
void ar_sha_pipe_wait(struct ar_sha_pipe *p, uint64_t seq);
uint64_t ar_sha_pipe_pushed(const struct ar_sha_pipe *p);
void ar_sha_pipe_free(struct ar_sha_pipe *p);

/* ---- output (ar_out.c) ---- */
struct ar_out;
int ar_out_open(struct ar_out **out, const char *path, int dir);
/* Directory sets: start NAME.blocks (its archive header written). */
int ar_out_file_begin(struct ar_out *o, const char *name);
int ar_out_file_end(struct ar_out *o);
/* Directory sets: start MANIFEST. */
int ar_out_manifest_begin(struct ar_out *o);
int ar_out_write(struct ar_out *o, const void *p, size_t n);
/* Preallocate N bytes from the current offset of the current file (a hint:
 * fallocate with FALLOC_FL_KEEP_SIZE; failures are ignored, the writes
 * report a full disk). */
void ar_out_reserve(struct ar_out *o, uint64_t n);
/* Whether preallocating FD (a regular file) helps: not on tmpfs or ramfs,
 * where fallocate allocates and zeroes every page ahead of the writes, on
 * the calling thread, and there are no extents to keep together. */
int ar_prealloc_helps(int fd);
/* Offset of the next byte in the current output file. */
uint64_t ar_out_offset(const struct ar_out *o);
uint64_t ar_out_bytes(const struct ar_out *o);
const char *ar_out_path(const struct ar_out *o);     /* PATH as given */
const char *ar_out_current(const struct ar_out *o);  /* the file being written */
/* fsync, rename into place, fsync the parent. */
int ar_out_commit(struct ar_out *o);
/* Remove the temporary now (idempotent; keeps the error record). */
void ar_out_discard(struct ar_out *o);
/* Discard and free (NULL is ignored). */
void ar_out_free(struct ar_out *o);
/* Remove directory D with its files and DEPTH levels of subdirectories
 * (best effort: temporaries of a failed backup or restore). A symbolic
 * link, D itself or inside it, is removed as a link and never followed
 * (lstat, openat(O_NOFOLLOW | O_DIRECTORY), unlinkat). */
void ar_remove_tree(const char *d, int depth);

#endif
