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

#include <coffer/backup.h>
#include <coffer/event.h>

#include "backup/proto.h"

/* Run a backup of TYPE for WHO over S. STOPPING (may be NULL) is polled
 * between frames: when it becomes non-zero the backup is aborted with
 * COFFER_E_SHUTTING_DOWN sent to the client. Returns the backup's result
 * code (already reported to the client and in the event log). */
int srv_backup_session(coffer_env *env, coffer_evlog *ev, struct cf_stream *s, unsigned type,
		       const char *who, const atomic_int *stopping);

#endif
