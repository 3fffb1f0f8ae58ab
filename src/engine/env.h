/*
 * env.h - the store handle and transactions (internal).
 *
 * Layers: os (common/os.c) -> pager (page cache, versions) and log (write-
 * ahead log) -> txn (private pages, commit) -> btree (through cf_pageio) ->
 * env (open, recovery, checkpoint, the public API in coffer/coffer.h).
 *
 * Meta page (page 2), after the common page header:
 *   24 u32 npages       pages in the database file (the next page to grow)
 *   28 u32 free_head    first free-list trunk page, 0 if none
 *   32 u32 catalog_root root of the catalog tree (name -> root pgno), 0 none
 *   36 u32 reserved
 *   40 u64 nfree        free pages (trunk pages included)
 * Free-list trunk page (CF_PT_FREELIST):
 *   24 u32 next trunk   28 u32 count   32 u32 pgno[count]
 */
#ifndef COFFER_ENGINE_ENV_H
#define COFFER_ENGINE_ENV_H

#include <pthread.h>
#include <stdatomic.h>

#include <coffer/coffer.h>
#include <coffer/event.h>

#include "common/os.h"
#include "engine/header.h"
#include "engine/log.h"
#include "engine/pageio.h"
#include "engine/pager.h"

#define CF_META_NPAGES 24
#define CF_META_FREE_HEAD 28
#define CF_META_CATALOG 32
#define CF_META_NFREE 40
#define CF_TRUNK_NEXT 24
#define CF_TRUNK_COUNT 28
#define CF_TRUNK_ENTRIES 32

struct cf_reader; /* an active read snapshot */

struct coffer_env {
	char *dir, *dbpath, *logdir, *ckptpath;
	coffer_env_options opts;
	cf_dirlock *lock;
	int fd;
	uint32_t page_size;
	struct coffer_evlog *evlog;

	pthread_mutex_t hdr_mu; /* header fields and header writes */
	struct cf_header hdr;

	cf_pager *pager;
	cf_log *log;

	pthread_mutex_t write_mu; /* the single writer */
	atomic_uint_fast64_t fpi_threshold; /* pages older than this get a full image */
	atomic_uint_fast64_t last_commit;   /* version of the newest published commit */
	atomic_uint_fast64_t commits;
	uint64_t txn_seq;                   /* under write_mu */

	pthread_mutex_t snap_mu;            /* active readers */
	struct cf_reader *readers;

	atomic_int fatal;                   /* sticky failure; fatal_msg is set before it */
	atomic_int fatal_claimed;           /* the one thread that writes fatal_msg */
	char fatal_msg[1400];
	int fatal_code;

	/* online backup (backup.c): one at a time */
	pthread_mutex_t backup_mu;
	struct coffer_backup *backup;
	atomic_uint backup_hold_gen;        /* circular logging keeps generations >= this */

	/* background checkpoint */
	pthread_mutex_t ckpt_mu;
	pthread_cond_t ckpt_cond;
	pthread_t ckpt_thread;
	int ckpt_running, ckpt_stop, ckpt_wanted;
	cf_lsn ckpt_redo;                   /* redo LSN of the last checkpoint */
	pthread_mutex_t ckpt_run_mu;        /* one checkpoint at a time */
};

/* txn.c */
int cf_txn_begin(coffer_env *env, int rdonly, coffer_txn **out);
cf_pageio *cf_txn_io(coffer_txn *txn);
/* A commit record only (used to log backup-history updates, empty commits). */
cf_lsn cf_env_horizon(coffer_env *env);

/* env.c */
/* Event 1100 (COFFER_EV_PAGE_CHECKSUM) for a damaged page that a read
 * met; the thread's error record (cf_page_error's) gives the file, page,
 * offset and message, which it keeps. Fields STORED and COMPUTED (the
 * checksums, hex) and, when reports were dropped by the pager's rate
 * limit, SUPPRESSED. Nothing without an event log. */
void cf_env_page_damage_event(coffer_env *env, enum cf_page_state st, uint64_t stored,
			      uint64_t computed, uint64_t suppressed);
int cf_env_set_fatal(coffer_env *env, int code, const char *what);
void cf_env_kick_checkpoint(coffer_env *env);

/* recovery.c: replay from REDO; *end receives the LSN after the last complete
 * commit, *replayed the number of commits applied. */
struct cf_recovery_result {
	cf_lsn end;
	uint64_t commits, pages, skipped;
	uint32_t gen_first, gen_last;
	int torn;
	cf_lsn torn_at;
	int stopped_early;       /* until target reached before the end of the log */
	int64_t last_commit_us;
	int64_t marked_us;       /* the log is known complete up to this time */
};
int cf_recover(coffer_env *env, cf_lsn redo, struct cf_recovery_result *res);

/* env.c: checkpoint now (state: CF_DB_DIRTY while open). */
int cf_env_checkpoint(coffer_env *env);

/* checkpoint file (ckpt.c) */
struct cf_checkpoint {
	uint8_t signature[16];
	cf_lsn redo;
	int64_t time_us;
};
int cf_checkpoint_read(const char *path, struct cf_checkpoint *c);
int cf_checkpoint_write(const char *path, const struct cf_checkpoint *c);

#endif
