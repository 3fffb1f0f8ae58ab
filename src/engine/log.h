/*
 * log.h - the write-ahead log in numbered generations.
 *
 * The log is a sequence of fixed-size files DIR/log/NNNNNNNNNN.log
 * (generation 1, 2, ...). Each holds a header block and then records; a
 * record's position is its LSN, CF_LSN(generation, byte offset). The byte
 * layout is in log_format.h, the design and the writer's invariants at the
 * top of log.c, the reader's rules at the top of log_read.c.
 *
 * Writer: cf_log_create (new store), cf_log_open (after recovery found the
 * end), cf_log_append (buffered, ordered, thread-safe), cf_log_flush (group
 * commit: wait until durable), cf_log_roll (close the current generation),
 * cf_log_truncate (delete old generations), cf_log_close.
 * Reader: cf_log_reader_open/next/torn/close, cf_log_scan_dir,
 * cf_log_read_header.
 *
 * Every call returns COFFER_OK or a catalog code with the thread's error
 * record filled in (coffer_error_last()); the codes each call returns are
 * listed with it. I/O errors come from common/os.h (COFFER_E_IO,
 * COFFER_E_DISK_FULL, COFFER_E_PERMISSION, COFFER_E_FILE_NOT_FOUND...).
 */
#ifndef COFFER_ENGINE_LOG_H
#define COFFER_ENGINE_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "engine/log_format.h"
#include "engine/page.h"

struct coffer_evlog;

/* ---- record types and payloads ---- */

enum cf_log_type {
	CF_LOG_PAGE_IMAGE = 1, /* u32 pgno, then the full page bytes */
	CF_LOG_PAGE_DIFF = 2,  /* u32 pgno, u32 nranges, then per range:
				  u32 offset, u32 length, length bytes */
	CF_LOG_COMMIT = 3,     /* u64 txn id, i64 time (µs since the epoch) */
	CF_LOG_HEADER = 4,     /* opaque: an update of the backup history */
	CF_LOG_CHECKPOINT = 5, /* u64 redo LSN */
	CF_LOG_NOOP = 6,       /* any payload; ignored by recovery */
};
#define CF_LOG_TYPE_MIN 1u
#define CF_LOG_TYPE_MAX 6u

/* "PAGE_IMAGE", ... or "UNKNOWN". */
const char *cf_log_type_name(uint16_t type);

/* A record as the reader returns it. PAYLOAD stays valid until the next
 * cf_log_reader_next() or cf_log_reader_close(). */
typedef struct cf_log_rec {
	cf_lsn lsn, end; /* its position, and the position just past it (padded) */
	uint16_t type, flags;
	const uint8_t *payload;
	size_t len; /* payload bytes */
} cf_log_rec;

#define CF_LOG_PAGE_HEAD 4u     /* PAGE_IMAGE: pgno before the page bytes */
#define CF_LOG_DIFF_HEAD 8u     /* PAGE_DIFF: pgno, nranges */
#define CF_LOG_DIFF_RANGE 8u    /* PAGE_DIFF: offset, length before each range */
#define CF_LOG_COMMIT_LEN 16u
#define CF_LOG_CHECKPOINT_LEN 8u

/* Encoders for the fixed parts. A page image is appended as
 * {CF_LOG_PAGE_IMAGE, head, CF_LOG_PAGE_HEAD, page, page_size}. */
static inline void cf_log_encode_page_head(uint8_t out[CF_LOG_PAGE_HEAD], cf_pgno pgno)
{
	cf_put32(out, pgno);
}
static inline void cf_log_encode_commit(uint8_t out[CF_LOG_COMMIT_LEN], uint64_t txn, int64_t time_us)
{
	cf_put64(out, txn);
	cf_put64(out + 8, (uint64_t)time_us);
}
static inline void cf_log_encode_checkpoint(uint8_t out[CF_LOG_CHECKPOINT_LEN], cf_lsn redo)
{
	cf_put64(out, redo);
}

/* A changed byte range of a page. */
typedef struct cf_log_range {
	uint32_t off, len;
} cf_log_range;

/* Payload size of a PAGE_DIFF with these N ranges. */
size_t cf_log_page_diff_size(const cf_log_range *r, uint32_t n);
/* Encode a PAGE_DIFF payload into OUT (cf_log_page_diff_size() bytes),
 * copying each range's bytes from PAGE. */
void cf_log_encode_page_diff(uint8_t *out, cf_pgno pgno, const uint8_t *page,
			     const cf_log_range *r, uint32_t n);

/* Decoders: validate the payload of REC against its type and extract the
 * fields. Errors: COFFER_E_LOG_CORRUPT naming the record's generation and
 * offset (wrong type, payload too short or too long, a range out of bounds). */
int cf_log_decode_page_image(const cf_log_rec *rec, cf_pgno *pgno, const uint8_t **page,
			     size_t *page_len);
/* Validates every range; PAGE_SIZE 0 skips the check that ranges lie inside
 * a page. */
int cf_log_decode_page_diff(const cf_log_rec *rec, uint32_t page_size, cf_pgno *pgno,
			    uint32_t *nranges);
/* Copy the ranges of a PAGE_DIFF into PAGE (PAGE_SIZE bytes); validates first,
 * so PAGE is unchanged on error. */
int cf_log_page_diff_apply(const cf_log_rec *rec, uint8_t *page, uint32_t page_size);
/* Walk the ranges of a PAGE_DIFF already validated by cf_log_decode_page_diff:
 *   size_t pos = 0; while (cf_log_page_diff_next(rec, &pos, &off, &len, &bytes)) ... */
int cf_log_page_diff_next(const cf_log_rec *rec, size_t *pos, uint32_t *off, uint32_t *len,
			  const uint8_t **bytes);
int cf_log_decode_commit(const cf_log_rec *rec, uint64_t *txn, int64_t *time_us);
int cf_log_decode_checkpoint(const cf_log_rec *rec, cf_lsn *redo);

/* ---- writer ---- */

typedef struct cf_log cf_log;

typedef struct cf_log_options {
	uint32_t file_size;  /* bytes per generation; 0: CF_LOG_FILE_DEFAULT; a
				multiple of 4096 within CF_LOG_FILE_MIN..MAX */
	int circular;        /* circular logging (kept for the caller; the log
				deletes only through cf_log_truncate) */
	struct coffer_evlog *evlog; /* may be NULL; not used by the log itself */
} cf_log_options;

/* One record to append: type and payload = P1 (N1 bytes) then P2 (N2 bytes). */
typedef struct cf_log_in {
	uint16_t type;
	const void *p1;
	size_t n1;
	const void *p2;
	size_t n2;
} cf_log_in;

/* New store: create the directory LOGDIR (and missing parents) and
 * generation 1 (prev end 0), durably. O may be NULL (defaults).
 * Errors: COFFER_E_EXISTS (LOGDIR already holds generations),
 * COFFER_E_INVALID_ARGUMENT (file size), I/O codes. */
int cf_log_create(const char *logdir, const uint8_t sig[16], const cf_log_options *o);

/* Open for appending at END, the LSN just after the last good record (from
 * the reader: cf_log_reader_torn()'s WHERE, or the end of the last commit;
 * CF_LSN(1, 4096) for a store just created). Everything after END is
 * discarded: generations after END's are deleted (counted in
 * cf_log_stats.discarded, for the caller's event), then the rest of END's
 * generation is zeroed (so no stale record can follow new ones) and
 * fdatasynced before returning; stale *.tmp files are removed. O's file
 * size applies to generations created from now on.
 * Errors: COFFER_E_LOG_MISSING (END's generation absent),
 * COFFER_E_LOG_MISMATCH (its signature or generation number differ),
 * COFFER_E_LOG_CORRUPT (unreadable header), COFFER_E_INVALID_ARGUMENT (END
 * not a record boundary inside the file), COFFER_E_NOMEM, I/O codes. */
int cf_log_open(cf_log **out, const char *logdir, const uint8_t sig[16], cf_lsn end,
		const cf_log_options *o);

/* Append N records as one batch, in order and contiguous: no other thread's
 * record comes between them. A record that does not fit in the rest of the
 * current generation goes to the next one (the log rolls first, durably).
 * Stores each record's LSN in LSNS[i] if LSNS != NULL, and the LSN just past
 * the batch in *END if END != NULL. Does not wait for durability
 * (cf_log_flush). Thread-safe.
 * Errors: COFFER_E_INVALID_ARGUMENT (a record larger than a generation can
 * hold, unknown type), COFFER_E_FATAL (an earlier write or sync failed),
 * COFFER_E_LOG_FULL (generation numbers exhausted), I/O codes (then the log
 * is stopped: later calls return COFFER_E_FATAL). */
int cf_log_append(cf_log *log, const cf_log_in *recs, size_t n, cf_lsn *lsns, cf_lsn *end);

/* Wait until everything before LSN is durable (written and fdatasynced);
 * an LSN beyond the end means the end. Group commit: concurrent callers share
 * one fdatasync. Thread-safe.
 * Errors: COFFER_E_FATAL, I/O codes (the log is stopped then). */
int cf_log_flush(cf_log *log, cf_lsn lsn);

/* Highest durable LSN: every byte before it is on disk. */
cf_lsn cf_log_durable(cf_log *log);
/* The LSN where the next record goes. */
cf_lsn cf_log_end(cf_log *log);

/* Make everything durable, close the current generation and start the next;
 * *CLOSED_GEN (may be NULL) = the generation just closed. Durable before it
 * returns. Errors: as cf_log_append. */
int cf_log_roll(cf_log *log, uint32_t *closed_gen);
uint32_t cf_log_current_gen(cf_log *log);

/* Delete the generations below KEEP_FROM (never the current one) and fsync
 * the directory; *DELETED (may be NULL) = how many files were removed.
 * Errors: I/O codes (files deleted before the failure stay deleted). */
int cf_log_truncate(cf_log *log, uint32_t keep_from, uint32_t *deleted);

/* Flush, close and free. Returns the flush's error, or COFFER_E_FATAL if the
 * log had stopped; the log is freed in every case. NULL is ignored. */
int cf_log_close(cf_log *log);

/* Counters (for tests, benchmarks and `coffer status`). */
struct cf_log_stats {
	uint64_t appends, records, bytes;  /* cf_log_append calls, records, record bytes */
	uint64_t writes, syncs, rolls;     /* pwrites of the buffer, fdatasyncs, rolls */
	uint64_t flush_waits;              /* cf_log_flush calls that had to wait */
	uint32_t discarded;                /* generations after END deleted by cf_log_open */
};
void cf_log_get_stats(cf_log *log, struct cf_log_stats *st);

/* ---- reader ---- */

typedef struct cf_log_reader cf_log_reader;

/* Read the log in LOGDIR from START. START 0: from the lowest generation
 * present; offset 0: from the first record of START's generation. SIG may
 * be NULL: then it is taken from the first file read and checked for all
 * later ones.
 * Errors: COFFER_E_LOG_MISSING (START's generation absent, naming it and the
 * directory), COFFER_E_LOG_MISMATCH (signature, generation number),
 * COFFER_E_LOG_CORRUPT (header), COFFER_E_INVALID_ARGUMENT (START not
 * 8-aligned or outside its file), COFFER_E_NOMEM, I/O codes. */
int cf_log_reader_open(cf_log_reader **out, const char *logdir, const uint8_t sig[16],
		       cf_lsn start);

/* The next record into *REC (valid until the next call), or
 * COFFER_E_NOT_FOUND at the end of the log (clean or torn; see
 * cf_log_reader_torn). Errors (sticky: later calls return them again):
 * COFFER_E_LOG_CHECKSUM / COFFER_E_LOG_CORRUPT for a bad record that is not
 * at the end of the log (it names the generation and offset),
 * COFFER_E_LOG_GAP, COFFER_E_LOG_MISMATCH (signature, generation, prev-end
 * link), COFFER_E_NOMEM, I/O codes. */
int cf_log_reader_next(cf_log_reader *r, cf_log_rec *rec);

/* After COFFER_E_NOT_FOUND: 1 if the log ended in a torn record (a bad
 * checksum, length or type in the last generation), else 0. *WHERE (may be
 * NULL) = the end of the log: the torn record's LSN, or the clean end; in
 * both cases the LSN just after the last good record, which is what
 * cf_log_open() takes. Before the end: 0 and the reader's position. */
int cf_log_reader_torn(cf_log_reader *r, cf_lsn *where);

/* The header of the generation the last record (or the end) was found in. */
const struct cf_log_file_header *cf_log_reader_header(cf_log_reader *r);

void cf_log_reader_close(cf_log_reader *r);

/* The lowest and highest generations in LOGDIR. Errors: COFFER_E_LOG_MISSING
 * (no generation at all), COFFER_E_LOG_GAP naming the first missing one
 * between them, I/O codes. */
int cf_log_scan_dir(const char *logdir, uint32_t *lo, uint32_t *hi);

/* Read and verify the header of the log file PATH (see
 * cf_log_header_decode). Errors: COFFER_E_LOG_CORRUPT, COFFER_E_VERSION,
 * COFFER_E_FILE_NOT_FOUND and other I/O codes. */
int cf_log_read_header(const char *path, struct cf_log_file_header *h);

#endif
