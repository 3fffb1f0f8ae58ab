/*
 * json.c - JSON strings and the JSON form of an event, written once for the
 * coffer command (--json) and for cofferd (COFFER.EVENTS), which must print
 * the same bytes for the same event. See json.h.
 */
#include <stdio.h>
#include <string.h>

#include "common/catalog.h"
#include "common/json.h"
#include "common/timefmt.h"

void cf_sink_file(void *arg, const void *p, size_t n)
{
	fwrite(p, 1, n, (FILE *)arg);
}

static void put_s(cf_sink_fn put, void *arg, const char *s)
{
	put(arg, s, strlen(s));
}

size_t cf_utf8_len(const unsigned char *s)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xBF;
	size_t n;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return n;
}

void cf_json_str(cf_sink_fn put, void *arg, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	char esc[8];
	while (*p) {
		size_t n = cf_utf8_len(p);
		if (n == 0) {
			put_s(put, arg, "\\ufffd");
			p++;
			continue;
		}
		if (n > 1) {
			put(arg, p, n);
			p += n;
			continue;
		}
		switch (*p) {
		case '"':
			put_s(put, arg, "\\\"");
			break;
		case '\\':
			put_s(put, arg, "\\\\");
			break;
		case '\n':
			put_s(put, arg, "\\n");
			break;
		case '\r':
			put_s(put, arg, "\\r");
			break;
		case '\t':
			put_s(put, arg, "\\t");
			break;
		default:
			if (*p < 0x20 || *p == 0x7f) {
				snprintf(esc, sizeof esc, "\\u%04x", *p);
				put_s(put, arg, esc);
			} else {
				put(arg, p, 1);
			}
		}
		p++;
	}
}

void cf_json_fputs(FILE *out, const char *s)
{
	cf_json_str(cf_sink_file, out, s);
}

void cf_event_json(cf_sink_fn put, void *arg, const coffer_event *ev)
{
	char when[CF_TIME_BUF], buf[160];
	const struct coffer_event_info *info = coffer_event_info_get(ev->id);
	const char *sname = coffer_severity_name(ev->severity);
	snprintf(buf, sizeof buf, "{\"time\":\"%s\",\"time_us\":%lld,\"seq\":%llu,\"id\":%d,\"name\":",
		 cf_time_format(ev->time_us, when, sizeof when), (long long)ev->time_us,
		 (unsigned long long)ev->seq, ev->id);
	put_s(put, arg, buf);
	if (info != NULL) {
		put_s(put, arg, "\"");
		cf_json_str(put, arg, info->name);
		put_s(put, arg, "\"");
	} else {
		put_s(put, arg, "null");
	}
	put_s(put, arg, ",\"severity\":\"");
	if (sname != NULL) {
		cf_json_str(put, arg, sname);
	} else {
		snprintf(buf, sizeof buf, "sev%d", ev->severity);
		put_s(put, arg, buf);
	}
	put_s(put, arg, "\",\"source\":\"");
	cf_json_str(put, arg, ev->source);
	put_s(put, arg, "\",\"message\":\"");
	cf_json_str(put, arg, ev->message);
	put_s(put, arg, "\",\"fields\":{");
	for (size_t i = 0; i < ev->nfields; i++) {
		put_s(put, arg, i ? ",\"" : "\"");
		cf_json_str(put, arg, ev->fields[i].key);
		put_s(put, arg, "\":\"");
		cf_json_str(put, arg, ev->fields[i].value);
		put_s(put, arg, "\"");
	}
	put_s(put, arg, "}}\n");
}
