/*
 * coffer/backup.h - the engine's online backup API (ESE's external backup).
 *
 * The store keeps serving reads and writes during a backup. One backup at a
 * time. The sequence:
 *
 *   coffer_backup_begin(env, type, who)      checkpoint; fix the redo LSN
 *   coffer_backup_read_pages(...)            full/copy: every database page,
 *                                            checksum-verified as it is read;
 *                                            pages 0-1 are a header snapshot
 *                                            stamped "restored, needs recovery"
 *   coffer_backup_roll(b)                    close the current log generation
 *   coffer_backup_open_log(b, gen, ...)      every generation gen_first..gen_last
 *   coffer_backup_end(b, copied_through)     record the backup in the header
 *                                            history (logged) and truncate logs
 *   or coffer_backup_abort(b, err)           change nothing
 *
 * Types (as in ESE): FULL copies pages and the log from the checkpoint at
 * begin through the roll, records itself as the last full backup (resetting
 * the incremental and differential history) and truncates the generations
 * no later incremental, differential or recovery needs; INCREMENTAL copies
 * the generations after the last full or incremental backup and truncates
 * them; DIFFERENTIAL copies the generations after the last full backup and
 * truncates nothing; COPY is a full backup that changes no history and
 * truncates nothing. With circular logging, INCREMENTAL and DIFFERENTIAL are
 * refused (COFFER_E_CIRCULAR_LOGGING).
 */
#ifndef COFFER_BACKUP_H
#define COFFER_BACKUP_H

#include <stdint.h>

#include <coffer/coffer.h>

#ifdef __cplusplus
extern "C" {
#endif

enum coffer_backup_type {
	COFFER_BACKUP_FULL = 1,
	COFFER_BACKUP_INCREMENTAL = 2,
	COFFER_BACKUP_DIFFERENTIAL = 3,
	COFFER_BACKUP_COPY = 4,
};

typedef struct coffer_backup coffer_backup;

struct coffer_backup_info {
	unsigned type;
	uint8_t id[16];        /* this backup's id (random) */
	uint8_t parent_id[16]; /* incremental: the previous backup of the chain;
				  differential: the last full; else zero */
	uint8_t signature[16]; /* the database signature */
	uint32_t page_size;
	uint64_t npages;       /* full/copy: pages to copy (0 otherwise) */
	uint64_t redo_lsn;     /* full/copy: where replay of the set starts */
	uint32_t gen_first;    /* first log generation of the set */
	uint32_t gen_last;     /* last one; 0 until coffer_backup_roll */
	int64_t start_us;
	char who[128];
};

/* "full", "incremental", "differential", "copy"; NULL if unknown. */
const char *coffer_backup_type_name(unsigned type);
/* The type named by TEXT, or 0. */
unsigned coffer_backup_type_parse(const char *text);

/* Begin a backup of TYPE on behalf of WHO ("uid 1001 on unix:/run/...").
 * Errors: COFFER_E_BACKUP_IN_PROGRESS (naming who started the running one
 * and when), COFFER_E_CIRCULAR_LOGGING, COFFER_E_BACKUP_NO_FULL (incremental
 * or differential without a full backup), COFFER_E_LOG_MISSING (the
 * generations it needs were truncated, e.g. a differential after an
 * incremental), COFFER_E_FATAL, COFFER_E_INVALID_ARGUMENT, I/O codes. */
int coffer_backup_begin(coffer_env *env, unsigned type, const char *who, coffer_backup **out);
const struct coffer_backup_info *coffer_backup_get_info(const coffer_backup *b);

/* Copy COUNT pages from FIRST into BUF (COUNT * page_size bytes); full and
 * copy backups only; pages past info.npages are refused. Each page is
 * verified; a page that fails its checksum is re-read while no page write
 * can be in flight before it is declared damaged: COFFER_E_PAGE_CHECKSUM
 * naming the page (the backup must then be aborted). */
int coffer_backup_read_pages(coffer_backup *b, uint64_t first, uint32_t count, void *buf);

/* Close the current log generation (durably); sets info.gen_last. */
int coffer_backup_roll(coffer_backup *b);

/* Open generation GEN (gen_first..gen_last) for reading: *FD (caller
 * closes) and its size. Errors: COFFER_E_INVALID_ARGUMENT (outside the
 * range or before the roll), COFFER_E_LOG_MISSING, I/O codes. */
int coffer_backup_open_log(coffer_backup *b, uint32_t gen, int *fd, uint64_t *size);

struct coffer_backup_result {
	uint32_t truncated_from, truncated_to; /* generations deleted (0, 0: none) */
	int64_t end_us;
};

/* Finish: COPIED_THROUGH is the last generation the client confirmed it
 * stored; below gen_last the backup fails with COFFER_E_LOG_NOT_COPIED and
 * nothing is recorded or deleted. Otherwise the history update is logged and
 * written to the header, then logs are truncated per the type. Frees B in
 * every case. */
int coffer_backup_end(coffer_backup *b, uint32_t copied_through, struct coffer_backup_result *res);

/* Abandon the backup: nothing recorded, nothing truncated. ERR (may be
 * NULL) is the reason, written with event 1202. Frees B. */
void coffer_backup_abort(coffer_backup *b, const coffer_error *err);

/* The running backup, if any (for INFO and coffer status). */
struct coffer_backup_status {
	int running;
	unsigned type;
	char who[128];
	int64_t start_us;
	struct {
		int valid;
		uint8_t id[16];
		uint32_t gen_first, gen_last;
		int64_t start_us, end_us;
	} last[3]; /* last full, incremental, differential */
};
int coffer_backup_status(coffer_env *env, struct coffer_backup_status *st);

#ifdef __cplusplus
}
#endif
#endif
