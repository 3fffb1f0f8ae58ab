/*
 * json.h - JSON text for the programs' --json output and COFFER.EVENTS:
 * string escaping (invalid UTF-8 becomes U+FFFD, control characters \uXXXX)
 * and the one-line JSON form of an event. Output goes through a sink, so
 * the same code writes to a FILE or to a growing buffer.
 */
#ifndef COFFER_COMMON_JSON_H
#define COFFER_COMMON_JSON_H

#include <stddef.h>
#include <stdio.h>

#include "coffer/event.h"

/* Receives N bytes at P. */
typedef void (*cf_sink_fn)(void *arg, const void *p, size_t n);

/* The sink for a FILE *: ARG is the FILE. */
void cf_sink_file(void *arg, const void *p, size_t n);

/* Length of the valid UTF-8 sequence at S (1..4), or 0 if it is not one. */
size_t cf_utf8_len(const unsigned char *s);

/* S as the inside of a JSON string (no quotes). */
void cf_json_str(cf_sink_fn put, void *arg, const char *s);

/* Shorthand: S as the inside of a JSON string, to OUT. */
void cf_json_fputs(FILE *out, const char *s);

/* EV as one JSON object and a newline:
 * {"time","time_us","seq","id","name","severity","source","message","fields"}. */
void cf_event_json(cf_sink_fn put, void *arg, const coffer_event *ev);

#endif
