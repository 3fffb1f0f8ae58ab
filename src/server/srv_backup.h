/*
 * srv_backup.h - the backup endpoint of cofferd (protocol in
 * src/backup/proto.h). The loop hands a connection that asked for
 * COFFER.BACKUP (and may: the backup role) to srv_backup_session on its own
 * thread with blocking I/O; the session drives the engine's backup API and
 * closes nothing (the caller closes the connection afterwards).
 */
#ifndef COFFER_SERVER_SRV_BACKUP_H
#define COFFER_SERVER_SRV_BACKUP_H

#include <stdatomic.h>
#include <stdint.h>

#include <coffer/backup.h>
#include <coffer/event.h>

#include "backup/proto.h"

/* How a session runs. */
struct srv_backup_opts {
	unsigned type;     /* COFFER_BACKUP_*, or-ed with CF_BKP_FASTPATH, CF_BKP_ZEROS when negotiated */
	uint64_t rate;     /* bytes per second the data may leave at; 0: no limit */
	int low_priority;  /* the data thread runs at nice SRV_BACKUP_NICE, I/O best-effort 7 */
};

/* The nice value of a low-priority backup's data thread. */
#define SRV_BACKUP_NICE 10
/* The name of that thread (for ps/top and the tests). */
#define SRV_BACKUP_THREAD "cf-backup"

/* Run a backup for WHO over S as O says. STOPPING (may be NULL) is polled
 * between frames and while paced: when it becomes non-zero the backup is
 * aborted with COFFER_E_SHUTTING_DOWN sent to the client. Returns the
 * backup's result code (already reported to the client and in the event
 * log).
 *
 * The session thread runs begin (a checkpoint), the log roll, the wait for
 * CONFIRM and end (a checkpoint, truncation) at cofferd's own priority; the
 * database pages and log generations are read, verified and sent by a data
 * thread (SRV_BACKUP_THREAD) that first lowers its own CPU and I/O priority
 * when O->low_priority, so a low priority never holds the engine's locks,
 * and that paces itself to O->rate (a token bucket with at most
 * SRV_BACKUP_BURST_MS of credit). */
int srv_backup_session(coffer_env *env, coffer_evlog *ev, struct cf_stream *s,
		       const struct srv_backup_opts *o, const char *who, const atomic_int *stopping);

#define SRV_BACKUP_BURST_MS 100
/* The lowest RATE a client may ask for (bytes/s): slower, a 1 MiB frame
 * would take longer than the client waits for it. */
#define SRV_BACKUP_MIN_RATE 65536

#endif
