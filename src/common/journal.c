/*
 * journal.c - events to the systemd journal, or to syslog(3) without one.
 * The fields are listed in journal.h.
 *
 * Invariants: nothing here raises a Coffer error or changes errno as the
 * caller sees it; the journal is looked for at each event (events are rare,
 * and journald may start after us); syslog's identity is process-wide, so
 * openlog()+syslog() run under one mutex and each event sets its source.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>

#include <systemd/sd-journal.h>

#include "common/journal.h"

#define JOURNAL_SOCKET "/run/systemd/journal/socket"
#define FIXED_FIELDS 7
#define MAX_FIELDS 64
#define NAME_MAX_LEN 64 /* journal field names: at most 64 characters */

static pthread_mutex_t syslog_mu = PTHREAD_MUTEX_INITIALIZER;

static bool journal_running(void)
{
	struct stat st;
	return stat(JOURNAL_SOCKET, &st) == 0 && S_ISSOCK(st.st_mode);
}

struct arena {
	char *p;
	size_t left;
	struct iovec iov[FIXED_FIELDS + MAX_FIELDS];
	int n;
};

static void add(struct arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct arena *a, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int w = vsnprintf(a->p, a->left, fmt, ap);
	va_end(ap);
	if (w < 0 || (size_t)w >= a->left || a->n >= FIXED_FIELDS + MAX_FIELDS)
		return; /* cannot happen with the sizes computed below */
	a->iov[a->n].iov_base = a->p;
	a->iov[a->n].iov_len = (size_t)w;
	a->n++;
	a->p += w + 1;
	a->left -= (size_t)w + 1;
}

static int send_journal(const struct coffer_event_info *info, uint64_t seq, const char *message,
			const struct cf_jfield *fields, size_t nfields)
{
	size_t total = strlen(message) + 1024;
	if (nfields > MAX_FIELDS)
		nfields = MAX_FIELDS;
	for (size_t i = 0; i < nfields; i++)
		total += NAME_MAX_LEN + fields[i].value_len + 2;
	char *mem = malloc(total);
	if (mem == NULL)
		return -ENOMEM;
	struct arena a = {.p = mem, .left = total};
	add(&a, "MESSAGE=%s", message);
	add(&a, "MESSAGE_ID=%s", info->message_id);
	add(&a, "PRIORITY=%d", info->severity);
	add(&a, "SYSLOG_IDENTIFIER=%s", info->source);
	add(&a, "COFFER_EVENT_ID=%d", info->id);
	add(&a, "COFFER_EVENT=%s", info->name);
	add(&a, "COFFER_SEQ=%llu", (unsigned long long)seq);
	for (size_t i = 0; i < nfields; i++) {
		bool prefixed = strncmp(fields[i].key, "COFFER_", 7) == 0;
		int klen = (int)strlen(fields[i].key);
		if (klen > NAME_MAX_LEN - (prefixed ? 0 : 7))
			klen = NAME_MAX_LEN - (prefixed ? 0 : 7);
		add(&a, "%s%.*s=%.*s", prefixed ? "" : "COFFER_", klen, fields[i].key,
		    (int)fields[i].value_len, fields[i].value);
	}
	int r = sd_journal_sendv(a.iov, a.n);
	free(mem);
	return r;
}

static void send_syslog(const struct coffer_event_info *info, const char *message,
			const struct cf_jfield *fields, size_t nfields)
{
	char line[8192];
	size_t n = 0;
	int w = snprintf(line, sizeof line, "[event %d] %s", info->id, message);
	n = w > 0 ? (size_t)w : 0;
	for (size_t i = 0; i < nfields && n < sizeof line; i++) {
		const struct cf_jfield *f = &fields[i];
		bool quote = f->value_len == 0 || memchr(f->value, ' ', f->value_len) != NULL;
		w = snprintf(line + n, sizeof line - n, " %s=%s%.*s%s", f->key, quote ? "\"" : "",
			     (int)f->value_len, f->value, quote ? "\"" : "");
		n += w > 0 ? (size_t)w : 0;
	}
	pthread_mutex_lock(&syslog_mu);
	openlog(info->source, LOG_PID, LOG_DAEMON);
	syslog(info->severity, "%s", line);
	pthread_mutex_unlock(&syslog_mu);
}

void cf_journal_send(const struct coffer_event_info *info, uint64_t seq, const char *message,
		     const struct cf_jfield *fields, size_t nfields)
{
	int saved = errno;
	if (!journal_running() || send_journal(info, seq, message, fields, nfields) < 0)
		send_syslog(info, message, fields, nfields);
	errno = saved;
}
