/*
 * archive.h - backup sets: the writer (coffer backup), the reader (coffer
 * verify, list, restore), the chain rules and the restore.
 *
 * A backup set holds, in this order, the database stream "coffer.db" (full
 * and copy sets only: the file image, page n at byte n * page_size, pages
 * 0-1 being the header snapshot the engine took at backup start) and the log
 * generations "log/NNNNNNNNNN.log" of the set, ascending and contiguous;
 * then its manifest. It is either one streamable archive file (works through
 * a pipe) or a directory (--format dir). The byte format is at the top of
 * archive.c and in docs/design-backup-archive.md.
 *
 * Module files (one filter a file, PostgreSQL's bbstreamer):
 *   archive.c    the format: records, manifest, trailer, allowed names
 *   ar_digest.c  SHA-256 (OpenSSL EVP) of each stored file
 *   ar_zpool.c   the writer's block pipeline: the file's SHA-256 on its
 *                own thread, per-block XXH3 and zstd on workers, writes on
 *                a writer thread, blocks in order
 *   ar_out.c     the output: one file (temporary, renamed at the end),
 *                standard output, or a directory (temporary, renamed)
 *   ar_write.c   the writer API below: files -> blocks -> pool -> output
 *   ar_read.c    the reader API below: input -> records -> verified data
 *   ar_check.c   what the stored files must contain (log headers, the
 *                database header) and the per-set and chain rules
 *   ar_restore.c lay a chain of sets down into a directory and recover it
 *
 * Every call returns COFFER_OK or a catalog code with the detail in
 * coffer_error_last(). The reader is meant to be fuzzed: every length it
 * reads is bounded before it is used or allocated.
 */
#ifndef COFFER_BACKUP_ARCHIVE_H
#define COFFER_BACKUP_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#include <coffer/error.h>

/* ---- limits ---- */
#define CF_AR_BLOCK_MAX (1u << 20)       /* uncompressed bytes per data block */
#define CF_AR_NAME_MAX 255u              /* bytes of a stored file name */
#define CF_AR_FILES_MAX 262144u          /* files in one set */
#define CF_AR_MANIFEST_MAX (32u << 20)   /* bytes of a manifest */
#define CF_AR_HOST_MAX 255u
#define CF_AR_VERSION_MAX 63u
#define CF_AR_DB_NAME "coffer.db"

/* Set types: the engine's (coffer/backup.h COFFER_BACKUP_*, header.h CF_BK_*). */
enum cf_set_type { CF_SET_FULL = 1, CF_SET_INCREMENTAL = 2, CF_SET_DIFFERENTIAL = 3, CF_SET_COPY = 4 };

/* What a set is: filled by the backup client, given to cf_archive_finish. */
typedef struct cf_set_meta {
	uint8_t set_id[16];    /* random, this set's id (the engine's backup id) */
	uint8_t parent_id[16]; /* incremental: the previous set of the chain;
				  differential: its full set; full/copy: zero */
	uint8_t signature[16]; /* the database signature */
	uint32_t type;         /* CF_SET_* */
	uint32_t page_size;
	uint32_t gen_first, gen_last; /* log generations the set holds */
	uint64_t redo_lsn;     /* full/copy: where replay starts */
	int64_t start_us, end_us;
} cf_set_meta;

/* One stored file as the manifest lists it. Names are at most 18 bytes
 * ("log/NNNNNNNNNN.log"), see cf_archive_name_check. */
struct cf_set_file {
	char name[32];
	uint64_t size;
	uint64_t blocks;
	uint8_t sha256[32];
};

struct cf_set_manifest {
	uint32_t version;           /* manifest format version */
	cf_set_meta meta;
	char host[CF_AR_HOST_MAX + 1];       /* the host that made the set */
	char coffer_version[CF_AR_VERSION_MAX + 1];
	uint64_t total_bytes;       /* sum of the files' sizes */
	uint32_t nfiles;
	struct cf_set_file *files;  /* in set order */
};

/* "full", "incremental", "differential", "copy", or "unknown". */
const char *cf_set_type_name(uint32_t type);

/* COFFER_OK if NAME (LEN bytes) is a name a set may hold: "coffer.db" or
 * "log/NNNNNNNNNN.log" (10 digits, generation >= 1); *GEN (may be NULL)
 * receives the generation (0 for coffer.db). Anything else - an absolute
 * path, '..', characters outside [A-Za-z0-9._/-], longer than 255 bytes,
 * another shape - is COFFER_E_UNSAFE_PATH naming WHERE (the set) and the
 * name (non-printable bytes escaped). */
int cf_archive_name_check(const char *name, size_t len, const char *where, uint32_t *gen);

/* ======================= writer ======================= */

typedef struct cf_archive_writer cf_archive_writer;

struct cf_archive_options {
	int format_dir;     /* 1: a directory set, 0: one archive file */
	int compress_level; /* 0 = none, else the zstd level (1..22; negative: fast) */
	int threads;        /* zstd workers, 0 = auto (the online CPUs, at most 16) */
};

/*
 * Start a set at PATH ('-' = standard output, fd 1, not with format_dir).
 * A file set is written to PATH.tmp-<random> (or streamed straight to
 * standard output) and renamed to PATH only by cf_archive_finish after
 * fsync (file, then its directory); a directory set is likewise built in a
 * temporary directory renamed at the end. Files are created 0600,
 * directories 0700. O may be NULL (one file, no compression).
 * Errors: COFFER_E_EXISTS (PATH exists), COFFER_E_INVALID_ARGUMENT
 * (format_dir with '-', a level out of range), COFFER_E_PERMISSION,
 * COFFER_E_FILE_NOT_FOUND (no such parent directory), COFFER_E_DISK_FULL,
 * COFFER_E_IO, COFFER_E_NOMEM.
 */
int cf_archive_create(cf_archive_writer **out, const char *path, const struct cf_archive_options *o);

/* Begin the next stored file NAME ("coffer.db" first if at all, then
 * "log/NNNNNNNNNN.log" ascending). Errors: COFFER_E_UNSAFE_PATH,
 * COFFER_E_INVALID_ARGUMENT (a file already open, a name out of order, too
 * many files), and output errors. */
int cf_archive_file_begin(cf_archive_writer *w, const char *name);
/* Append N bytes to the current file (copied once into a block buffer).
 * Errors: COFFER_E_DISK_FULL naming the set's file and the stored file,
 * COFFER_E_IO, COFFER_E_INVALID_ARGUMENT (no file open). */
int cf_archive_file_write(cf_archive_writer *w, const void *data, size_t n);
/* Receive into the set without a copy: *P receives where the next bytes of
 * the current file go and *ROOM how many fit there (1..CF_AR_BLOCK_MAX: the
 * rest of the block being filled). Put up to *ROOM bytes there, then
 * cf_archive_file_commit the number put (0 is allowed). Nothing else may be
 * called between the two. Errors: as cf_archive_file_write. */
int cf_archive_file_reserve(cf_archive_writer *w, void **p, size_t *room);
int cf_archive_file_commit(cf_archive_writer *w, size_t n);
/* The current file, just begun, will have SIZE bytes: an uncompressed set
 * preallocates its space (a hint; never an error). */
void cf_archive_file_expect(cf_archive_writer *w, uint64_t size);
/* End the current file: its last block, then its size and SHA-256. */
int cf_archive_file_end(cf_archive_writer *w);
/* Check META against the files written (cf_set_check), write the manifest
 * and trailer, fsync, rename into place. Frees W in every case; on error
 * the temporary is removed and nothing is visible at PATH. */
int cf_archive_finish(cf_archive_writer *w, const cf_set_meta *meta);
/* Remove the temporary and free W (NULL is ignored). */
void cf_archive_abort(cf_archive_writer *w);
/* Remove a finished set at PATH (a file, or a directory set with its log/),
 * never following a symbolic link, and make the removal durable (fsync of
 * the parent directory): a set the server did not record must not come
 * back after a crash. Errors: those of the fsync. */
int cf_archive_remove(const char *path);

/* Bytes given to file_write so far; bytes written to the output so far
 * (exact between files; during a file the writer thread may be behind). */
uint64_t cf_archive_bytes_in(cf_archive_writer *w);
uint64_t cf_archive_bytes_out(cf_archive_writer *w);

/* After any writer error the writer is failed: later calls return the same
 * code, and the temporary has already been removed (space is freed at once,
 * e.g. after COFFER_E_DISK_FULL); call cf_archive_abort. */

/* ======================= reader ======================= */

typedef struct cf_archive_reader cf_archive_reader;

/*
 * Open the set at PATH: a directory set, an archive file (its trailer and
 * manifest are read at once by seeking), or '-' for standard input (a
 * stream: the manifest is known only at its end).
 * Errors: COFFER_E_FILE_NOT_FOUND, COFFER_E_PERMISSION,
 * COFFER_E_ARCHIVE_TRUNCATED (no trailer), COFFER_E_ARCHIVE_CORRUPT (not a
 * backup set, a damaged trailer or manifest), COFFER_E_UNSAFE_PATH (a name in
 * the manifest), COFFER_E_VERSION, COFFER_E_NOMEM, COFFER_E_IO.
 */
int cf_archive_open(cf_archive_reader **out, const char *path);
/* Read a set as a stream from FD (not closed by the reader); NAME is used in
 * messages. For pipes and fuzzing. */
int cf_archive_open_fd(cf_archive_reader **out, int fd, const char *name);
void cf_archive_close(cf_archive_reader *r);

/* The manifest: known after open for a file or directory set; for a stream
 * NULL until cf_archive_next_file has returned COFFER_E_NOT_FOUND. */
const struct cf_set_manifest *cf_archive_manifest(const cf_archive_reader *r);
/* 1 if the set is read as a stream (manifest at the end). */
int cf_archive_is_stream(const cf_archive_reader *r);
/* The set's path as given. */
const char *cf_archive_path(const cf_archive_reader *r);

/*
 * Move to the next stored file; *NAME is valid until the next call. The rest
 * of the current file, if any, is read and verified first. After the last
 * file, the manifest and the trailer are read and checked against every file
 * seen and COFFER_E_NOT_FOUND is returned (with no error record).
 * Errors: COFFER_E_ARCHIVE_CORRUPT (naming the file, block and offset),
 * COFFER_E_ARCHIVE_TRUNCATED, COFFER_E_UNSAFE_PATH (before any byte of the
 * file is returned), COFFER_E_DIGEST_MISMATCH, I/O codes.
 */
int cf_archive_next_file(cf_archive_reader *r, const char **name);
/*
 * The next verified piece of the current file: *DATA (valid until the next
 * call) and *N, at most CF_AR_BLOCK_MAX. *N == 0 at the end of the file,
 * returned only once its size and SHA-256 have been checked against its end
 * record and the manifest.
 * Errors: as cf_archive_next_file; COFFER_E_DIGEST_MISMATCH at the end.
 */
int cf_archive_read(cf_archive_reader *r, const void **data, size_t *n);
/* Read and verify everything left; the manifest is then known. */
int cf_archive_read_all(cf_archive_reader *r);

/* Total bytes of the set read so far (archive or block files). */
uint64_t cf_archive_bytes_read(const cf_archive_reader *r);

/* ======================= checks (ar_check.c) ======================= */

/* The rules one set keeps, given its manifest: full/copy sets start with
 * coffer.db (a whole number of pages, at least 3) and hold generations
 * gen_first..gen_last with gen(redo) among them and no parent;
 * incremental and differential sets hold only those generations and name a
 * parent. Errors: COFFER_E_ARCHIVE_CORRUPT naming SET and the rule. */
int cf_set_check(const struct cf_set_manifest *m, const char *set);

/* The rules of a chain of N sets in restore order: one full or copy set
 * first; the same database signature throughout; then either incrementals,
 * each the child of the one before with gen_first = previous gen_last + 1,
 * or exactly one differential whose parent is the full set and whose
 * gen_first = full gen_last + 1. Errors: COFFER_E_CHAIN_BROKEN with a
 * sentence naming the sets and generations. */
int cf_set_chain_check(const struct cf_set_manifest *const *sets, const char *const *names, size_t n);

/*
 * Content check of the stored files as they stream past: each log
 * generation's header must carry its own number, the set's signature and
 * its size; coffer.db's header (copy A, or B if A is damaged) the set's
 * signature and page size. Feed every piece of every file.
 */
struct cf_content_check;
int cf_content_check_new(struct cf_content_check **out, const char *set);
/* Known expectations (signature, page size: 0 = learn from the first file). */
void cf_content_check_expect(struct cf_content_check *c, const uint8_t sig[16], uint32_t page_size);
int cf_content_check_begin(struct cf_content_check *c, const char *name);
int cf_content_check_feed(struct cf_content_check *c, const void *data, size_t n);
int cf_content_check_end(struct cf_content_check *c, uint64_t size);
/* Compare what was learned with the manifest (for streams). */
int cf_content_check_finish(struct cf_content_check *c, const struct cf_set_manifest *m);
void cf_content_check_free(struct cf_content_check *c);

/* ======================= restore (ar_restore.c) ======================= */

struct cf_restore_options {
	const char *target;      /* the new store's directory */
	int no_recover;          /* leave it NEEDS_RECOVERY (coffer recover later) */
	int64_t until_us;        /* recovery target time, 0: none */
	uint64_t until_lsn;      /* recovery target position, 0: none */
	unsigned evlog_flags;    /* coffer_evlog_options.flags (tests: no system log) */
	/* Called after each set has been laid down (may be NULL). */
	void (*on_set)(void *arg, const char *set, const struct cf_set_manifest *m);
	void *arg;
};

struct cf_restore_result {
	uint32_t sets, files;
	uint64_t bytes;              /* bytes laid down */
	uint32_t gen_first, gen_last;
	uint64_t redo_lsn;
	int recovered;               /* hard recovery ran and succeeded */
	uint64_t recovered_to;       /* LSN after the last commit replayed */
	uint64_t pages;
};

/*
 * Restore the chain SETS[0..N) into O->target: check the chain; refuse a
 * non-empty target (COFFER_E_DIR_NOT_EMPTY) or one a running process has
 * locked (COFFER_E_SERVER_RUNNING); create it 0700 and hold its lock; lay
 * the files down, verified, in TARGET/.restore-tmp; write the checkpoint
 * file and mark the header NEEDS_RECOVERY; fsync; rename the pieces into
 * place; then, unless no_recover, run hard recovery (optionally to a time
 * or position). Events 1300/1301/1302 go to the target's event log.
 * Errors: COFFER_E_CHAIN_BROKEN, COFFER_E_DIR_NOT_EMPTY,
 * COFFER_E_SERVER_RUNNING, COFFER_E_NOT_A_DIRECTORY, the reader's errors,
 * COFFER_E_SIGNATURE_MISMATCH, the recovery's errors
 * (COFFER_E_UNTIL_NOT_REACHED, COFFER_E_RECOVERY_FAILED, ...), I/O codes.
 * On any error before the rename nothing but the lock file and the event
 * log is left in the target.
 */
int cf_restore(const char *const *sets, size_t n, const struct cf_restore_options *o,
	       struct cf_restore_result *res);

#endif
