/*
 * header.h - the database header, kept in two copies (pages 0 and 1).
 *
 * Layout of each copy, after the 24-byte common page header (type
 * CF_PT_HEADER, pgno 0 or 1), little-endian:
 *
 *   off size field
 *    24    8 magic "COFFERDB"
 *    32    4 format version (CF_HEADER_VERSION)
 *    36    4 page size
 *    40   16 database signature: random bytes chosen at creation; every log
 *            generation, checkpoint and backup set carries it
 *    56    8 creation time (µs since the epoch)
 *    64    8 write counter: +1 on every header write; the valid copy with the
 *            higher counter wins
 *    72    4 state: 1 clean shutdown, 2 dirty (open, or crashed),
 *            3 restored, needs hard recovery (coffer recover)
 *    76    4 reserved
 *    80    8 redo LSN: where recovery starts (the last checkpoint's)
 *    88    8 end LSN at the last clean shutdown (0 if none)
 *    96    4 lowest log generation recovery needs
 *   100    4 reserved
 *   104  3x64 backup history: last full, last incremental, last
 *            differential; each: u32 type, u32 valid, 16-byte backup id,
 *            u32 first generation, u32 last generation, i64 start time,
 *            i64 end time, u64 LSN at the end of the backup, 8 reserved
 *   296      zero to the end of the page
 *
 * Writes: copy A is written and fsynced, then copy B (so a torn write can
 * hit only one). Reads: both copies are verified; a damaged copy is reported
 * (event COFFER_EV_HEADER_COPY_DAMAGED) and the other is used.
 */
#ifndef COFFER_ENGINE_HEADER_H
#define COFFER_ENGINE_HEADER_H

#include <stdint.h>

#include "engine/page.h"

#define CF_HEADER_VERSION 1u

enum cf_db_state { CF_DB_CLEAN = 1, CF_DB_DIRTY = 2, CF_DB_NEEDS_RECOVERY = 3 };
enum cf_backup_type { CF_BK_FULL = 1, CF_BK_INCREMENTAL = 2, CF_BK_DIFFERENTIAL = 3, CF_BK_COPY = 4 };

struct cf_backup_info {
	uint32_t type;
	uint32_t valid;
	uint8_t id[16];
	uint32_t gen_lo, gen_hi;
	int64_t start_us, end_us;
	cf_lsn end_lsn;
};

struct cf_header {
	uint32_t version;
	uint32_t page_size;
	uint8_t signature[16];
	int64_t created_us;
	uint64_t counter;
	uint32_t state;
	cf_lsn redo_lsn;
	cf_lsn clean_end_lsn;
	uint32_t min_gen;
	struct cf_backup_info last[3]; /* [0] full, [1] incremental, [2] differential */
};

/* Which copies were found damaged by cf_header_read (bit 0: A, bit 1: B). */
#define CF_HEADER_A_DAMAGED 1u
#define CF_HEADER_B_DAMAGED 2u

/* Read and verify both copies from the open database file FD (PATH for
 * messages). Errors: COFFER_E_HEADER_CORRUPT (both copies bad, naming
 * each copy's problem), COFFER_E_VERSION, COFFER_E_SHORT_READ / I/O codes. */
int cf_header_read(int fd, const char *path, struct cf_header *h, unsigned *damaged);

/* Increment h->counter and write copy A, fsync, copy B, fsync. */
int cf_header_write(int fd, const char *path, struct cf_header *h);

/* Encode / decode one copy (page_size bytes) - for tests and dump tools. */
void cf_header_encode(const struct cf_header *h, uint8_t *page, cf_pgno which);
int cf_header_decode(const uint8_t *page, uint32_t page_size, cf_pgno which, const char *path,
		     struct cf_header *h);

/* The backup history alone (3 x 64 bytes as in the header): the payload of
 * a CF_LOG_HEADER record, so that a history update is logged and replayed. */
#define CF_HISTORY_SIZE 192
void cf_header_encode_history(const struct cf_header *h, uint8_t out[CF_HISTORY_SIZE]);
void cf_header_decode_history(struct cf_header *h, const uint8_t in[CF_HISTORY_SIZE]);

const char *cf_db_state_name(uint32_t state);
const char *cf_backup_type_name(uint32_t type);

#endif
