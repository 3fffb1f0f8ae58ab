/*
 * coffer/event.h - the event log: what Coffer programs tell the operator.
 *
 * An event has a stable id from the event catalog (catalog/events.ini,
 * docs/errors.md), which also fixes its source program and its severity; a
 * message sentence; and structured fields (KEY=value: CODE, FILE, PAGE,
 * GENERATION, PEER...). coffer_event_write() sends it to
 *  (a) the store's own event log, DATADIR/events/events-NNNNNN.log:
 *      append-only, one checksummed record per event, made durable before
 *      the call returns, rotated by size, readable after a crash (a torn
 *      record is skipped and reported, never fatal); and
 *  (b) the system journal (sd_journal_sendv, MESSAGE_ID from the catalog)
 *      when one is running, else syslog(3).
 * Several processes may append to one store's log at the same time.
 *
 * A handle may be used from several threads; calls are serialized.
 * Field keys are upper case [A-Z0-9_] (other characters are mapped to '_').
 * Limits (longer input is cut, never refused): message 4096 bytes, 32
 * fields, key 64 bytes, value 1024 bytes.
 */
#ifndef COFFER_EVENT_H
#define COFFER_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include <coffer/error.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct coffer_evlog coffer_evlog;

/** One structured field of an event. A NULL value is written as "". */
typedef struct coffer_evfield {
	const char *key;
	const char *value;
} coffer_evfield;

#define COFFER_EVLOG_OPTIONS_VERSION 1
/** Do not send events to the system journal or syslog (tests). */
#define COFFER_EVLOG_NO_SYSTEM 0x1u

typedef struct coffer_evlog_options {
	unsigned version;        /* COFFER_EVLOG_OPTIONS_VERSION */
	uint64_t max_file_bytes; /* start a new file beyond this size; 0: 4 MiB */
	unsigned keep_files;     /* files kept, the current one included; 0: 8 */
	unsigned flags;          /* COFFER_EVLOG_NO_SYSTEM */
} coffer_evlog_options;

#define COFFER_EVLOG_OPTIONS_INIT {COFFER_EVLOG_OPTIONS_VERSION, 0, 0, 0}

/**
 * Open the event log of the store in DATADIR, creating DATADIR/events (mode
 * 0700) and its first file as needed. DATADIR NULL: events go only to the
 * system journal or syslog (a program without a store). OPTS may be NULL
 * (defaults).
 * Errors: COFFER_E_INVALID_ARGUMENT (OPTS of an unknown version),
 * COFFER_E_FILE_NOT_FOUND (DATADIR does not exist), COFFER_E_NOT_A_DIRECTORY,
 * COFFER_E_PERMISSION, COFFER_E_DISK_FULL, COFFER_E_IO, COFFER_E_NOMEM.
 */
int coffer_evlog_open(coffer_evlog **out, const char *datadir, const coffer_evlog_options *opts);

/**
 * Write event EVENT_ID with NFIELDS FIELDS. FMT (printf) gives the specific
 * message; NULL uses the catalog's message. The store's record is durable
 * (fdatasync) when the call returns COFFER_OK. If the store's log cannot be
 * written the event still goes to the journal/syslog and the error is
 * returned; the handle stays usable.
 * Errors: COFFER_E_INVALID_ARGUMENT (EVENT_ID not in the catalog, LOG NULL),
 * COFFER_E_DISK_FULL, COFFER_E_PERMISSION, COFFER_E_IO (with file and errno).
 */
int coffer_event_write(coffer_evlog *log, int event_id, const coffer_evfield *fields,
		       size_t nfields, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/**
 * Write event EVENT_ID about error ERR: the message is ERR's message and the
 * fields are CODE (number), CODE_NAME, then FILE, PAGE, GENERATION, OFFSET,
 * ERRNO and PEER when ERR has them, then the NEXTRA EXTRA fields.
 * Errors: as coffer_event_write().
 */
int coffer_event_error(coffer_evlog *log, int event_id, const coffer_error *err,
		       const coffer_evfield *extra, size_t nextra);

/** Close the log; NULL is ignored. */
void coffer_evlog_close(coffer_evlog *log);

/** An event as read back. Strings and fields live until the callback returns. */
typedef struct coffer_event {
	uint64_t seq;                 /* per writer, increasing */
	int64_t time_us;              /* wall clock, microseconds since the epoch */
	int id;                       /* event id (may be unknown to this version) */
	int severity;                 /* syslog priority: 3 error .. 6 info */
	const char *source;           /* "cofferd", "coffer-backup", ... */
	const char *message;
	size_t nfields;
	const coffer_evfield *fields;
	const char *file;             /* the log file it was read from */
	uint64_t offset;              /* the record's offset in that file */
} coffer_event;

/**
 * Read the event log of the store in DATADIR, oldest file first, records in
 * the order they were appended. ON_EVENT is called for each record; a record
 * that fails its checksum, is cut short or is malformed is reported to
 * ON_DAMAGE (may be NULL) with the file, the offset and why, and skipped:
 * reading resumes at the next valid record. Damage is never fatal.
 * A non-zero return from a callback stops the reading and is returned.
 * DATADIR without an events directory: no events, COFFER_OK.
 * Errors: COFFER_E_FILE_NOT_FOUND (DATADIR does not exist),
 * COFFER_E_NOT_A_DIRECTORY, COFFER_E_PERMISSION, COFFER_E_IO, COFFER_E_NOMEM.
 */
int coffer_evlog_read(const char *datadir, int (*on_event)(const coffer_event *ev, void *arg),
		      int (*on_damage)(const char *file, uint64_t offset, const char *why, void *arg),
		      void *arg);

/** "error", "warning", "notice", "info" for syslog priorities 3..6; else NULL. */
const char *coffer_severity_name(int severity);

#ifdef __cplusplus
}
#endif
#endif
