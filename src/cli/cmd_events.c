/*
 * cmd_events.c - coffer events (--data DIR | --server ADDR) [--id N] [--source S]
 *                              [--since TIME] [--json]
 *
 * Lists the events of a store's event log (coffer_evlog_read), oldest first.
 * Text: one line per event,
 *   TIME(UTC, microseconds)  ID SEVERITY SOURCE MESSAGE  KEY=value ...
 * with control characters and invalid UTF-8 escaped so that one event is
 * always one line, and values quoted when they hold spaces, quotes or '='.
 * --json: JSON Lines, one object per event:
 *   {"time","time_us","seq","id","name","severity","source","message","fields"}
 * (name is null for an id this version's catalog does not know; invalid
 * UTF-8 becomes U+FFFD).
 * A damaged record is reported on standard error as a warning with its file
 * and offset and skipped; the listing still succeeds (exit 0).
 * --server: reading a server's events remotely comes with the server; until
 * then it is COFFER_E_NOT_SUPPORTED.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <coffer/event.h>

#include "cli/cli.h"
#include "common/catalog.h"
#include "common/err.h"
#include "common/timefmt.h"

struct listing {
	int id;             /* --id, 0: all */
	const char *source; /* --source, NULL: all */
	bool has_since;
	int64_t since_us;
	bool json;
	unsigned long damaged;
};

/* Length of the valid UTF-8 sequence at S (1..4), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned char c = s[0];
	if (c < 0x80)
		return 1;
	size_t n;
	unsigned char lo = 0x80, hi = 0xBF;
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

/* Write S as the inside of a JSON string. */
static void json_str(FILE *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		size_t n = utf8_len(p);
		if (n == 0) {
			fputs("\\ufffd", out);
			p++;
			continue;
		}
		if (n > 1) {
			fwrite(p, 1, n, out);
			p += n;
			continue;
		}
		switch (*p) {
		case '"':
			fputs("\\\"", out);
			break;
		case '\\':
			fputs("\\\\", out);
			break;
		case '\n':
			fputs("\\n", out);
			break;
		case '\r':
			fputs("\\r", out);
			break;
		case '\t':
			fputs("\\t", out);
			break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				fprintf(out, "\\u%04x", *p);
			else
				fputc(*p, out);
		}
		p++;
	}
}

/* Write S for a text line: control characters and invalid UTF-8 as C
 * escapes; with QUOTED, also '"' and '\\' (the caller adds the quotes). */
static void text_str(FILE *out, const char *s, bool quoted)
{
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		size_t n = utf8_len(p);
		if (n > 1) {
			fwrite(p, 1, n, out);
			p += n;
			continue;
		}
		if (n == 0 || *p < 0x20 || *p == 0x7f) {
			if (*p == '\n')
				fputs("\\n", out);
			else if (*p == '\t')
				fputs("\\t", out);
			else if (*p == '\r')
				fputs("\\r", out);
			else
				fprintf(out, "\\x%02x", *p);
		} else if (quoted && (*p == '"' || *p == '\\')) {
			fputc('\\', out);
			fputc(*p, out);
		} else {
			fputc(*p, out);
		}
		p++;
	}
}

static bool needs_quotes(const char *v)
{
	if (*v == '\0')
		return true;
	for (const unsigned char *p = (const unsigned char *)v; *p; p++)
		if (*p <= ' ' || *p == '"' || *p == '\\' || *p == '=' || *p == 0x7f)
			return true;
	return false;
}

static void print_text(const coffer_event *ev)
{
	char when[CF_TIME_BUF], sev[16];
	const char *sname = coffer_severity_name(ev->severity);
	if (sname == NULL) {
		snprintf(sev, sizeof sev, "sev%d", ev->severity);
		sname = sev;
	}
	printf("%s  %4d %-7s %-14s ", cf_time_format(ev->time_us, when, sizeof when), ev->id, sname,
	       ev->source);
	text_str(stdout, ev->message, false);
	for (size_t i = 0; i < ev->nfields; i++) {
		fputs(i == 0 ? "  " : " ", stdout);
		text_str(stdout, ev->fields[i].key, false);
		fputc('=', stdout);
		bool q = needs_quotes(ev->fields[i].value);
		if (q)
			fputc('"', stdout);
		text_str(stdout, ev->fields[i].value, q);
		if (q)
			fputc('"', stdout);
	}
	fputc('\n', stdout);
}

static void print_json(const coffer_event *ev)
{
	char when[CF_TIME_BUF];
	const struct coffer_event_info *info = coffer_event_info_get(ev->id);
	const char *sname = coffer_severity_name(ev->severity);
	printf("{\"time\":\"%s\",\"time_us\":%lld,\"seq\":%llu,\"id\":%d,\"name\":",
	       cf_time_format(ev->time_us, when, sizeof when), (long long)ev->time_us,
	       (unsigned long long)ev->seq, ev->id);
	if (info != NULL)
		printf("\"%s\"", info->name);
	else
		fputs("null", stdout);
	if (sname != NULL)
		printf(",\"severity\":\"%s\"", sname);
	else
		printf(",\"severity\":\"sev%d\"", ev->severity);
	fputs(",\"source\":\"", stdout);
	json_str(stdout, ev->source);
	fputs("\",\"message\":\"", stdout);
	json_str(stdout, ev->message);
	fputs("\",\"fields\":{", stdout);
	for (size_t i = 0; i < ev->nfields; i++) {
		fputs(i ? ",\"" : "\"", stdout);
		json_str(stdout, ev->fields[i].key);
		fputs("\":\"", stdout);
		json_str(stdout, ev->fields[i].value);
		fputc('"', stdout);
	}
	fputs("}}\n", stdout);
}

static int on_event(const coffer_event *ev, void *arg)
{
	const struct listing *l = arg;
	if (l->id != 0 && ev->id != l->id)
		return 0;
	if (l->source != NULL && strcmp(ev->source, l->source) != 0)
		return 0;
	if (l->has_since && ev->time_us < l->since_us)
		return 0;
	if (l->json)
		print_json(ev);
	else
		print_text(ev);
	return 0;
}

static int on_damage(const char *file, uint64_t offset, const char *why, void *arg)
{
	struct listing *l = arg;
	l->damaged++;
	fflush(stdout); /* keep the warning where it belongs among the events */
	fprintf(stderr, "coffer: warning: event log damaged at %s offset %llu: %s (%s); record skipped\n",
		file, (unsigned long long)offset, why, coffer_code_name(COFFER_E_EVENTLOG));
	return 0;
}

static int parse_id(const char *text, int *id)
{
	char *end;
	long v = strtol(text, &end, 10);
	if (*text != '\0' && *end == '\0') {
		if (v < 1000 || v > 9999)
			return cli_usage_error("events",
					       "--id %s: event ids are 1000 to 9999 ('coffer explain --list')",
					       text);
		*id = (int)v;
		return COFFER_OK;
	}
	const struct coffer_event_info *info = coffer_event_info_lookup(text);
	if (info == NULL)
		return cli_usage_error("events",
				       "--id %s: not an event id or event name ('coffer explain --list')",
				       text);
	*id = info->id;
	return COFFER_OK;
}

static const char events_usage[] =
	"usage: coffer events (--data DIR | --server ADDR) [--id N] [--source S]\n"
	"                     [--since TIME] [--json]\n"
	"  --data DIR     read the event log of the store in DIR\n"
	"  --server ADDR  read the events of a running server\n"
	"  --id N         only event N (an id or a name such as BACKUP_FAILED)\n"
	"  --source S     only events from program S (cofferd, coffer-backup, ...)\n"
	"  --since TIME   only events at or after TIME: 2026-11-25, 2026-11-25T19:00:00Z,\n"
	"                 '2026-11-25 19:00:00' (local), @EPOCH, or an age: 30s 10m 2h 3d\n"
	"  --json         one JSON object per line\n";

int cmd_events(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, NULL, 'd'},
		{"server", required_argument, NULL, 's'},
		{"id", required_argument, NULL, 'i'},
		{"source", required_argument, NULL, 'S'},
		{"since", required_argument, NULL, 't'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct listing l = {0};
	const char *data = NULL, *server = NULL, *since = NULL;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			data = optarg;
			break;
		case 's':
			server = optarg;
			break;
		case 'i':
			CF_RET(parse_id(optarg, &l.id));
			break;
		case 'S':
			l.source = optarg;
			break;
		case 't':
			since = optarg;
			break;
		case 'j':
			l.json = true;
			break;
		case 'h':
			fputs(events_usage, stdout);
			return COFFER_OK;
		case ':':
			return cli_usage_error("events", "option '%s' needs a value", argv[optind - 1]);
		default:
			return cli_usage_error("events", "unknown option '%s'; see 'coffer events --help'",
					       argv[optind - 1]);
		}
	}
	if (optind != argc)
		return cli_usage_error("events", "unexpected argument '%s'", argv[optind]);
	if (data != NULL && server != NULL)
		return cli_usage_error("events", "give either --data DIR or --server ADDR, not both");
	if (since != NULL) {
		CF_RET(cf_time_parse(since, cf_time_now_us(), &l.since_us));
		l.has_since = true;
	}
	if (data == NULL)
		return CF_ERROR(COFFER_E_NOT_SUPPORTED, CF_OBJ(.peer = server ? server : cli->server),
				"reading the events of a server (%s) is not available yet: it comes "
				"with the server's event endpoint; on the server's machine, read the "
				"store's event log with 'coffer events --data DIR'",
				server ? server : cli->server);
	CF_RET(coffer_evlog_read(data, on_event, on_damage, &l));
	if (fflush(stdout) != 0 || ferror(stdout))
		return cf_error_sys("write the events to", "standard output", -1);
	return COFFER_OK;
}
