/*
 * journal.h - sending events to the system log (internal to the event log).
 *
 * When a systemd journal runs (/run/systemd/journal/socket exists) an event
 * goes to it with sd_journal_sendv() and these fields:
 *   MESSAGE, MESSAGE_ID (from the catalog), PRIORITY (the catalog severity),
 *   SYSLOG_IDENTIFIER (the catalog source), COFFER_EVENT_ID, COFFER_EVENT
 *   (the catalog name), COFFER_SEQ, and COFFER_<KEY> for each field (CODE
 *   becomes COFFER_CODE, as contrib/coffer.catalog expects).
 * Otherwise, or when the journal refuses it, it goes to syslog(3) (facility
 * daemon, identity the source) as "[event N] MESSAGE KEY=value ...".
 * Sending never fails visibly and never touches the thread's error record.
 */
#ifndef COFFER_COMMON_JOURNAL_H
#define COFFER_COMMON_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/catalog.h"

/* A field whose key is already normalized ([A-Z0-9_]) and whose value may
 * not be NUL-terminated. */
struct cf_jfield {
	const char *key;
	const char *value;
	size_t value_len;
};

void cf_journal_send(const struct coffer_event_info *info, uint64_t seq, const char *message,
		     const struct cf_jfield *fields, size_t nfields);

#endif
