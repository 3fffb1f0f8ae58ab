/*
 * coffer/coffer.h - libcoffer, the embeddable storage engine.
 *
 * A store is a directory:
 *   DIR/coffer.db       database file of checksummed pages (two header copies)
 *   DIR/log/NNNNNNNNNN.log write-ahead log in numbered generations
 *   DIR/checkpoint      where recovery starts
 *   DIR/events/         the store's event log (coffer/event.h)
 *   DIR/cofferd.lock    held while a process has the store open
 *
 * Transactions: one writer at a time (others wait), any number of readers.
 * A reader sees the snapshot of everything durably committed when it began
 * and never blocks the writer. coffer_txn_commit() returns once the commit
 * is durable (log fdatasync, shared by concurrent committers).
 *
 * Every call returns COFFER_OK (0) or a COFFER_E_* code (docs/errors.md) and
 * leaves the detail in coffer_error_last(). After a failed log write or
 * flush the store is "fatal": writes fail with COFFER_E_FATAL until it is
 * reopened (reads go on).
 */
#ifndef COFFER_COFFER_H
#define COFFER_COFFER_H

#include <stddef.h>
#include <stdint.h>

#include <coffer/error.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct coffer_env coffer_env;
typedef struct coffer_txn coffer_txn;
typedef struct coffer_cursor coffer_cursor;
struct coffer_evlog;

#define COFFER_ENV_CREATE 0x1u          /* create the store if DIR has none */
#define COFFER_ENV_HARD_RECOVERY 0x2u   /* open a restored store (coffer recover) */

#define COFFER_ENV_OPTIONS_VERSION 1u
typedef struct coffer_env_options {
	unsigned version;           /* COFFER_ENV_OPTIONS_VERSION */
	unsigned flags;             /* COFFER_ENV_* */
	uint32_t page_size;         /* at creation: 4096..65536, power of two; 0: 8192 */
	uint64_t cache_bytes;       /* page cache; 0: 64 MiB */
	uint32_t log_file_size;     /* bytes per log generation; 0: 16 MiB */
	int circular_logging;       /* delete log generations once checkpointed */
	unsigned checkpoint_seconds;/* background checkpoint period; 0: 30 */
	uint64_t checkpoint_log_bytes; /* or after this much log; 0: 64 MiB */
	struct coffer_evlog *evlog; /* where events go; NULL: none */
	/* Recovery target (hard recovery only): stop before the first commit
	 * later than until_us (µs since the epoch) or past until_lsn; 0: none. */
	int64_t until_us;
	uint64_t until_lsn;
} coffer_env_options;

void coffer_env_options_init(coffer_env_options *o);

/* Open (and with COFFER_ENV_CREATE create) the store in DIR, running crash
 * recovery if it was not shut down cleanly.
 * Errors: COFFER_E_LOCKED (another process has it, naming its pid),
 * COFFER_E_FILE_NOT_FOUND, COFFER_E_HEADER_CORRUPT, COFFER_E_VERSION,
 * COFFER_E_NEEDS_HARD_RECOVERY (a restored store: run coffer recover),
 * COFFER_E_LOG_MISSING / _GAP / _MISMATCH / _CHECKSUM / _CORRUPT,
 * COFFER_E_PAGE_CHECKSUM, COFFER_E_RECOVERY_FAILED, COFFER_E_UNTIL_NOT_REACHED,
 * I/O codes. */
int coffer_env_open(coffer_env **out, const char *dir, const coffer_env_options *o);

/* Checkpoint, mark the store clean and close it. The handle is freed even on
 * error (the store then needs recovery at the next open). */
int coffer_env_close(coffer_env *env);

/* Write every dirty page and move the recovery start forward. */
int coffer_env_checkpoint(coffer_env *env);

struct coffer_env_info {
	uint32_t page_size;
	uint64_t pages;             /* database file size in pages */
	uint64_t free_pages;
	uint8_t signature[16];
	uint64_t last_commit_lsn, durable_lsn, redo_lsn;
	uint32_t log_gen_first, log_gen_current;
	uint64_t commits, cache_bytes, cache_hits, cache_misses, dirty_pages;
	int circular_logging, fatal;
};
int coffer_env_info(coffer_env *env, struct coffer_env_info *info);

#define COFFER_TXN_READ_ONLY 0x1u
/* Begin a transaction. A write transaction waits for the running one.
 * Errors: COFFER_E_FATAL (write, after an earlier failure), COFFER_E_NOMEM. */
int coffer_txn_begin(coffer_env *env, unsigned flags, coffer_txn **out);
/* Commit: atomic, durable when it returns. The handle is freed.
 * Errors: COFFER_E_FATAL, COFFER_E_DISK_FULL, COFFER_E_IO, COFFER_E_TXN_CONFLICT
 * (the transaction had failed before), COFFER_E_NOMEM. On error nothing of
 * the transaction is visible or durable. */
int coffer_txn_commit(coffer_txn *txn);
/* Abandon the transaction; frees the handle. */
void coffer_txn_abort(coffer_txn *txn);

/* Trees are named byte strings (1..255 bytes, no NUL). A tree is created by
 * its first put. Errors of all data calls: COFFER_E_TREE_NOT_FOUND (reads of
 * a tree that does not exist), COFFER_E_KEY_TOO_LARGE, COFFER_E_VALUE_TOO_LARGE,
 * COFFER_E_READ_ONLY (writes in a read transaction), COFFER_E_PAGE_CHECKSUM /
 * COFFER_E_PAGE_CORRUPT (damaged pages, naming them), I/O codes. */
#define COFFER_MAX_KEY 1024u
#define COFFER_MAX_TREE_NAME 255u

/* *val is a malloc'd copy (free it). COFFER_E_NOT_FOUND if absent. */
int coffer_get(coffer_txn *txn, const char *tree, const void *key, size_t klen, void **val,
	       size_t *vlen);
#define COFFER_NOOVERWRITE 0x1u /* COFFER_E_EXISTS if the key is present */
int coffer_put(coffer_txn *txn, const char *tree, const void *key, size_t klen, const void *val,
	       size_t vlen, unsigned flags);
/* COFFER_E_NOT_FOUND if absent. */
int coffer_del(coffer_txn *txn, const char *tree, const void *key, size_t klen);
/* Delete a whole tree. COFFER_E_TREE_NOT_FOUND if absent. */
int coffer_tree_drop(coffer_txn *txn, const char *tree);
int coffer_tree_count(coffer_txn *txn, const char *tree, uint64_t *n);

/* Cursors: ordered iteration (memcmp order). Key and value pointers stay
 * valid until the cursor moves or closes. A cursor must not outlive its
 * transaction; a change to the tree (put/del) invalidates its cursors. */
int coffer_cursor_open(coffer_txn *txn, const char *tree, coffer_cursor **out);
int coffer_cursor_first(coffer_cursor *c);                       /* NOT_FOUND: empty */
int coffer_cursor_seek(coffer_cursor *c, const void *key, size_t klen); /* first >= key */
int coffer_cursor_next(coffer_cursor *c);                        /* NOT_FOUND: end */
int coffer_cursor_get(coffer_cursor *c, const void **key, size_t *klen, const void **val,
		      size_t *vlen);
void coffer_cursor_close(coffer_cursor *c);

/* Offline check of the store in DIR (coffer check): both header copies,
 * every page's checksum, the structure of every tree, the free list, and
 * pages used twice or by nobody. Each problem goes to FN with its page (or
 * -1) and a sentence; RES counts what was seen. The store must be shut down
 * cleanly and not in use. Returns COFFER_OK when nothing is wrong,
 * COFFER_E_PAGE_CORRUPT when problems were reported, or an error that
 * stopped the check: COFFER_E_LOCKED, COFFER_E_DIRTY_SHUTDOWN,
 * COFFER_E_NEEDS_HARD_RECOVERY, COFFER_E_HEADER_CORRUPT, I/O codes. */
struct coffer_check_result {
	uint32_t page_size;
	uint64_t pages, trees, keys, free_pages, bad_checksums, problems;
};
typedef void (*coffer_check_problem_fn)(void *arg, int64_t page, const char *what);
int coffer_check(const char *dir, coffer_check_problem_fn fn, void *arg,
		 struct coffer_check_result *res);

#ifdef __cplusplus
}
#endif
#endif
