/*
 * error.c - the per-thread error detail record and catalog look-ups.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/catalog.h"
#include "common/err.h"

static _Thread_local coffer_error tls_error = {
	.page = COFFER_NONE, .generation = COFFER_NONE, .offset = COFFER_NONE,
};

const coffer_error *coffer_error_last(void)
{
	return &tls_error;
}

void coffer_error_clear(void)
{
	memset(&tls_error, 0, sizeof(tls_error));
	tls_error.page = tls_error.generation = tls_error.offset = COFFER_NONE;
}

const struct coffer_error_info *coffer_error_info_get(int code)
{
	/* The table is sorted by code (gencatalog.py sorts it): binary search. */
	unsigned lo = 0, hi = coffer_error_table_len;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		if (coffer_error_table[mid].code == code)
			return &coffer_error_table[mid];
		if (coffer_error_table[mid].code < code)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

const struct coffer_event_info *coffer_event_info_get(int id)
{
	for (unsigned i = 0; i < coffer_event_table_len; i++)
		if (coffer_event_table[i].id == id)
			return &coffer_event_table[i];
	return NULL;
}

/* Compare NAME with TEXT given in full (PREFIXNAME) or short (NAME), any case. */
static int name_matches(const char *name, const char *prefix, const char *text)
{
	if (strcasecmp(name, text) == 0)
		return 1;
	size_t pl = strlen(prefix);
	return strncmp(name, prefix, pl) == 0 && strcasecmp(name + pl, text) == 0;
}

const struct coffer_event_info *coffer_event_info_lookup(const char *text)
{
	for (unsigned i = 0; i < coffer_event_table_len; i++)
		if (name_matches(coffer_event_table[i].name, "COFFER_EV_", text))
			return &coffer_event_table[i];
	return NULL;
}

const char *coffer_code_name(int code)
{
	const struct coffer_error_info *e = coffer_error_info_get(code);
	return e ? e->name : NULL;
}

const char *coffer_code_message(int code)
{
	const struct coffer_error_info *e = coffer_error_info_get(code);
	return e ? e->message : "unknown error";
}

const char *coffer_code_explanation(int code)
{
	const struct coffer_error_info *e = coffer_error_info_get(code);
	return e ? e->explanation : NULL;
}

const char *coffer_code_remedy(int code)
{
	const struct coffer_error_info *e = coffer_error_info_get(code);
	return e ? e->remedy : NULL;
}

int coffer_code_lookup(const char *text)
{
	if (text == NULL || *text == '\0')
		return 0;
	if (isdigit((unsigned char)text[0])) {
		char *end;
		errno = 0;
		long v = strtol(text, &end, 10);
		if (errno || *end || v <= 0 || v > COFFER_CODE_MAX)
			return 0;
		return coffer_error_info_get((int)v) ? (int)v : 0;
	}
	for (unsigned i = 0; i < coffer_error_table_len; i++)
		if (name_matches(coffer_error_table[i].name, "COFFER_E_", text))
			return coffer_error_table[i].code;
	return 0;
}

int coffer_code_from_errno(int e)
{
	switch (e) {
	case 0:
		return COFFER_E_INTERNAL;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return COFFER_E_DISK_FULL;
	case EACCES:
	case EPERM:
	case EROFS:
		return COFFER_E_PERMISSION;
	case ENOENT:
		return COFFER_E_FILE_NOT_FOUND;
	case ENOTDIR:
		return COFFER_E_NOT_A_DIRECTORY;
	case ENOTEMPTY:
		return COFFER_E_DIR_NOT_EMPTY;
	case ENOMEM:
		return COFFER_E_NOMEM;
	case EEXIST:
		return COFFER_E_EXISTS;
	case EINTR:
		return COFFER_E_INTERRUPTED;
	case ETIMEDOUT:
		return COFFER_E_TIMEOUT;
	case ECONNREFUSED:
	case EHOSTUNREACH:
	case ENETUNREACH:
		return COFFER_E_CONNECT;
	case ECONNRESET:
	case EPIPE:
		return COFFER_E_CONNECTION_LOST;
	default:
		return COFFER_E_IO;
	}
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	if (src == NULL) {
		dst[0] = '\0';
		return;
	}
	size_t n = strnlen(src, cap - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* An error's text reaches terminals and the event log, and parts of it may
 * come from a peer (an ERROR frame, a RESP error line, a name in a set):
 * control characters - C0, DEL and C1 in their UTF-8 form - become '?',
 * so that no peer can move a cursor, retitle a window or forge a line. */
void cf_defang(char *s)
{
	for (unsigned char *p = (unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			*p = '?';
		else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
			p[0] = p[1] = '?';
			p++;
		}
	}
}

int cf_error_vset(const char *func, int line, int code, const cf_obj *obj,
		  const char *fmt, va_list ap)
{
	coffer_error *e = &tls_error;
	/* The arguments may point into the current record (re-raising with
	 * more context): format into a scratch buffer first. */
	char msg[sizeof e->message];
	vsnprintf(msg, sizeof msg, fmt, ap);
	coffer_error_clear();
	memcpy(e->message, msg, sizeof msg);
	e->code = code;
	e->func = func;
	e->line = line;
	if (obj != NULL) {
		copy_str(e->file, sizeof e->file, obj->file);
		copy_str(e->peer, sizeof e->peer, obj->peer);
		e->sys_errno = obj->sys_errno;
		if (obj->has_page)
			e->page = obj->page;
		if (obj->has_generation)
			e->generation = obj->generation;
		if (obj->has_offset)
			e->offset = obj->offset;
	}
	cf_defang(e->message);
	cf_defang(e->file);
	cf_defang(e->peer);
	return code;
}

int cf_error_set(const char *func, int line, int code, const cf_obj *obj, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cf_error_vset(func, line, code, obj, fmt, ap);
	va_end(ap);
	return code;
}

int cf_error_sys_at(const char *func, int line, const char *op, const char *path, int64_t offset)
{
	int saved = errno;
	int code = coffer_code_from_errno(saved);
	cf_obj o = {.file = path, .sys_errno = saved};
	if (offset >= 0) {
		o.offset = offset;
		o.has_offset = 1;
	}
	if (offset >= 0)
		cf_error_set(func, line, code, &o, "could not %s \"%s\" at offset %lld: %s", op,
			     path ? path : "?", (long long)offset, strerror(saved));
	else
		cf_error_set(func, line, code, &o, "could not %s \"%s\": %s", op,
			     path ? path : "?", strerror(saved));
	errno = saved;
	return code;
}

void cf_error_prefix(const char *fmt, ...)
{
	char pre[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(pre, sizeof pre, fmt, ap);
	va_end(ap);
	char joined[sizeof pre + sizeof tls_error.message + 2];
	snprintf(joined, sizeof joined, "%s: %s", pre, tls_error.message);
	copy_str(tls_error.message, sizeof tls_error.message, joined);
	cf_defang(tls_error.message);
}

size_t coffer_error_object(const coffer_error *e, char *buf, size_t len)
{
	size_t n = 0;
	buf[0] = '\0';
#define ADD(...)                                                              \
	do {                                                                  \
		if (n < len) {                                                \
			int w_ = snprintf(buf + n, len - n, "%s", n ? " " : ""); \
			n += (size_t)(w_ > 0 ? w_ : 0);                       \
		}                                                             \
		if (n < len) {                                                \
			int w_ = snprintf(buf + n, len - n, __VA_ARGS__);     \
			n += (size_t)(w_ > 0 ? w_ : 0);                       \
		}                                                             \
	} while (0)
	if (e->file[0])
		ADD("file=%s", e->file);
	if (e->page != COFFER_NONE)
		ADD("page=%lld", (long long)e->page);
	if (e->generation != COFFER_NONE)
		ADD("generation=%lld", (long long)e->generation);
	if (e->offset != COFFER_NONE)
		ADD("offset=%lld", (long long)e->offset);
	if (e->sys_errno)
		ADD("errno=%d (%s)", e->sys_errno, strerror(e->sys_errno));
	if (e->peer[0])
		ADD("peer=%s", e->peer);
#undef ADD
	return n < len ? n : len - 1;
}

void coffer_error_print(FILE *out, const char *prog, const coffer_error *e)
{
	const char *name = coffer_code_name(e->code);
	const char *msg = e->message[0] ? e->message : coffer_code_message(e->code);
	if (name)
		fprintf(out, "%s: error: %s (%s)\n", prog, msg, name);
	else
		fprintf(out, "%s: error: %s (code %d, not in the catalog)\n", prog, msg, e->code);
	char obj[1024];
	if (coffer_error_object(e, obj, sizeof obj))
		fprintf(out, "%s: detail: %s\n", prog, obj);
	const char *remedy = coffer_code_remedy(e->code);
	if (remedy)
		fprintf(out, "%s: hint: %s See 'coffer explain %s'.\n", prog, remedy, name);
}
