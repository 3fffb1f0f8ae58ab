/*
 * catalog.h - the generated tables behind coffer/error.h and the event log.
 * The tables themselves are generated from catalog/errors.ini and catalog/events.ini
 * (tools/gencatalog.py).
 */
#ifndef COFFER_COMMON_CATALOG_H
#define COFFER_COMMON_CATALOG_H

#include <coffer/errcodes.h>

struct coffer_error_info {
	int code;
	const char *name;
	const char *message;
	const char *explanation;
	const char *remedy;
};

struct coffer_event_info {
	int id;
	const char *name;
	const char *source;
	int severity; /* syslog priority: 3 error, 4 warning, 5 notice, 6 info */
	const char *message_id; /* journal MESSAGE_ID, 32 hex digits */
	const char *message;
	const char *explanation;
	const char *remedy; /* may be "" */
};

extern const struct coffer_error_info coffer_error_table[];
extern const unsigned coffer_error_table_len;
extern const struct coffer_event_info coffer_event_table[];
extern const unsigned coffer_event_table_len;

const struct coffer_error_info *coffer_error_info_get(int code);
const struct coffer_event_info *coffer_event_info_get(int id);
/* By full name (COFFER_EV_...) or short name, case-insensitive. */
const struct coffer_event_info *coffer_event_info_lookup(const char *text);

#endif
