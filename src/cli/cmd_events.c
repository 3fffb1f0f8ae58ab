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
 *
 * --server ADDR (or neither --data nor --server: the global --server,
 * $COFFER_SERVER or the default address) reads a running server's events:
 * COFFER.EVENTS SINCE-US ID (src/server/srv_status.c, allowed for the
 * backup operators) answers JSON Lines in the --json format above, at most
 * the newest 10,000 matching events / 16 MiB. Each line is parsed back into
 * a coffer_event and goes through the same filters and printers, so the
 * text output is the same as with --data; with --json the server's lines
 * are printed as they came. (The server keeps a copy of print_json(); keep
 * the two in step.)
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <coffer/event.h>

#include "cli/cli.h"
#include "cli/conn.h"
#include "common/catalog.h"
#include "common/err.h"
#include "common/json.h"
#include "common/timefmt.h"

struct listing {
	int id;             /* --id, 0: all */
	const char *source; /* --source, NULL: all */
	bool has_since;
	int64_t since_us;
	bool json;
	unsigned long damaged;
};

/* Write S for a text line: control characters and invalid UTF-8 as C
 * escapes; with QUOTED, also '"' and '\\' (the caller adds the quotes). */
static void text_str(FILE *out, const char *s, bool quoted)
{
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		size_t n = cf_utf8_len(p);
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
	cf_event_json(cf_sink_file, stdout, ev);
}

static bool event_wanted(const struct listing *l, const coffer_event *ev)
{
	if (l->id != 0 && ev->id != l->id)
		return false;
	if (l->source != NULL && strcmp(ev->source, l->source) != 0)
		return false;
	if (l->has_since && ev->time_us < l->since_us)
		return false;
	return true;
}

static int on_event(const coffer_event *ev, void *arg)
{
	const struct listing *l = arg;
	if (!event_wanted(l, ev))
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

/* ---- reading a server's events (COFFER.EVENTS) ---- */

/* One JSON line being parsed back into a coffer_event. Decoded strings are
 * kept in STRS until the event has been printed. */
struct jline {
	const char *p, *end;
	char **strs;
	size_t nstrs, capstrs;
	coffer_evfield *fields;
	size_t nfields, capfields;
};

static void jl_free(struct jline *j)
{
	for (size_t i = 0; i < j->nstrs; i++)
		free(j->strs[i]);
	free(j->strs);
	free(j->fields);
	memset(j, 0, sizeof *j);
}

static void jl_ws(struct jline *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n'))
		j->p++;
}

static bool jl_char(struct jline *j, char c)
{
	jl_ws(j);
	if (j->p < j->end && *j->p == c) {
		j->p++;
		return true;
	}
	return false;
}

static int hex4(const char *p, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xC0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xE0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (char)(0xF0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* A JSON string; *OUT (may be NULL: skip it) is decoded, NUL-terminated and
 * owned by J. Returns false if it is not a valid string. */
static bool jl_string(struct jline *j, const char **out)
{
	jl_ws(j);
	if (j->p >= j->end || *j->p != '"')
		return false;
	j->p++;
	/* Decoded text is never longer than its JSON form (up to the closing quote). */
	const char *q = j->p;
	while (q < j->end && *q != '"')
		q += *q == '\\' ? 2 : 1;
	if (q >= j->end)
		return false;
	char *buf = malloc((size_t)(q - j->p) + 1);
	if (buf == NULL)
		return false;
	size_t n = 0;
	for (;;) {
		if (j->p >= j->end)
			goto bad;
		unsigned char c = (unsigned char)*j->p++;
		if (c == '"')
			break;
		if (c < 0x20)
			goto bad;
		if (c != '\\') {
			buf[n++] = (char)c;
			continue;
		}
		if (j->p >= j->end)
			goto bad;
		c = (unsigned char)*j->p++;
		switch (c) {
		case '"':
		case '\\':
		case '/':
			buf[n++] = (char)c;
			break;
		case 'b':
			buf[n++] = '\b';
			break;
		case 'f':
			buf[n++] = '\f';
			break;
		case 'n':
			buf[n++] = '\n';
			break;
		case 'r':
			buf[n++] = '\r';
			break;
		case 't':
			buf[n++] = '\t';
			break;
		case 'u': {
			unsigned cp, lo;
			if (j->end - j->p < 4 || hex4(j->p, &cp))
				goto bad;
			j->p += 4;
			if (cp >= 0xD800 && cp <= 0xDBFF && j->end - j->p >= 6 && j->p[0] == '\\' &&
			    j->p[1] == 'u' && hex4(j->p + 2, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
				j->p += 6;
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
			} else if (cp >= 0xD800 && cp <= 0xDFFF) {
				cp = 0xFFFD; /* a lone surrogate */
			}
			if (cp == 0)
				goto bad; /* events are C strings: never sent */
			n += put_utf8(buf + n, cp);
			break;
		}
		default:
			goto bad;
		}
	}
	buf[n] = '\0';
	if (out == NULL) {
		free(buf);
		return true;
	}
	if (j->nstrs == j->capstrs) {
		size_t nc = j->capstrs ? 2 * j->capstrs : 16;
		char **ns = realloc(j->strs, nc * sizeof *ns);
		if (ns == NULL)
			goto bad;
		j->strs = ns;
		j->capstrs = nc;
	}
	j->strs[j->nstrs++] = buf;
	*out = buf;
	return true;
bad:
	free(buf);
	return false;
}

static bool jl_int(struct jline *j, long long *out)
{
	jl_ws(j);
	const char *q = j->p;
	if (q < j->end && *q == '-')
		q++;
	if (q >= j->end || *q < '0' || *q > '9')
		return false;
	char num[32];
	size_t n = 0;
	for (q = j->p; q < j->end && n + 1 < sizeof num && (*q == '-' || (*q >= '0' && *q <= '9')); q++)
		num[n++] = *q;
	num[n] = '\0';
	char *e;
	errno = 0;
	long long v = strtoll(num, &e, 10);
	if (*e || errno)
		return false;
	j->p = q;
	*out = v;
	return true;
}

/* Skip any JSON value (keys this version does not know). */
static bool jl_skip(struct jline *j, int depth)
{
	jl_ws(j);
	if (j->p >= j->end || depth > 16)
		return false;
	char c = *j->p;
	if (c == '"')
		return jl_string(j, NULL);
	if (c == '{' || c == '[') {
		char close = c == '{' ? '}' : ']';
		j->p++;
		if (jl_char(j, close))
			return true;
		do {
			if (c == '{' && (!jl_string(j, NULL) || !jl_char(j, ':')))
				return false;
			if (!jl_skip(j, depth + 1))
				return false;
		} while (jl_char(j, ','));
		return jl_char(j, close);
	}
	const char *q = j->p;
	while (q < j->end && (strchr("+-.eE", *q) || (*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'z')))
		q++;
	if (q == j->p)
		return false;
	j->p = q;
	return true;
}

static bool key_is(const char *k, const char *name)
{
	return strcmp(k, name) == 0;
}

/* Parse one line of COFFER.EVENTS into EV. */
static bool parse_event_line(struct jline *j, coffer_event *ev)
{
	memset(ev, 0, sizeof *ev);
	ev->source = "";
	ev->message = "";
	bool have_id = false, have_time = false;
	if (!jl_char(j, '{'))
		return false;
	if (jl_char(j, '}'))
		return false;
	do {
		const char *k;
		long long v;
		if (!jl_string(j, &k) || !jl_char(j, ':'))
			return false;
		if (key_is(k, "time_us")) {
			if (!jl_int(j, &v))
				return false;
			ev->time_us = v;
			have_time = true;
		} else if (key_is(k, "seq")) {
			if (!jl_int(j, &v))
				return false;
			ev->seq = (uint64_t)v;
		} else if (key_is(k, "id")) {
			if (!jl_int(j, &v) || v < INT_MIN || v > INT_MAX)
				return false;
			ev->id = (int)v;
			have_id = true;
		} else if (key_is(k, "severity")) {
			const char *sv;
			if (!jl_string(j, &sv))
				return false;
			ev->severity = -1;
			for (int i = 0; i < 8 && ev->severity < 0; i++) {
				const char *nm = coffer_severity_name(i);
				if (nm && strcmp(nm, sv) == 0)
					ev->severity = i;
			}
			if (ev->severity < 0 && (strncmp(sv, "sev", 3) != 0 || (ev->severity = atoi(sv + 3)) < 0))
				ev->severity = 0;
		} else if (key_is(k, "source")) {
			if (!jl_string(j, &ev->source))
				return false;
		} else if (key_is(k, "message")) {
			if (!jl_string(j, &ev->message))
				return false;
		} else if (key_is(k, "fields")) {
			if (!jl_char(j, '{'))
				return false;
			if (!jl_char(j, '}')) {
				do {
					const char *fk, *fv;
					if (!jl_string(j, &fk) || !jl_char(j, ':') || !jl_string(j, &fv))
						return false;
					if (j->nfields == j->capfields) {
						size_t nc = j->capfields ? 2 * j->capfields : 8;
						coffer_evfield *nf = realloc(j->fields, nc * sizeof *nf);
						if (nf == NULL)
							return false;
						j->fields = nf;
						j->capfields = nc;
					}
					j->fields[j->nfields].key = fk;
					j->fields[j->nfields].value = fv;
					j->nfields++;
				} while (jl_char(j, ','));
				if (!jl_char(j, '}'))
					return false;
			}
		} else if (!jl_skip(j, 0)) { /* time, name, and keys of later versions */
			return false;
		}
	} while (jl_char(j, ','));
	if (!jl_char(j, '}'))
		return false;
	jl_ws(j);
	ev->fields = j->fields;
	ev->nfields = j->nfields;
	return j->p == j->end && have_id && have_time;
}

static int read_remote(const struct cli *cli, const char *server, struct listing *l)
{
	struct cli rcli = *cli;
	if (server != NULL)
		rcli.server = server;
	struct cf_conn conn;
	CF_RET(cf_conn_open(&conn, &rcli));
	char since[32], id[16];
	snprintf(since, sizeof since, "%lld", l->has_since ? (long long)l->since_us : 0LL);
	snprintf(id, sizeof id, "%d", l->id);
	const char *argv[3] = {"COFFER.EVENTS", since, id};
	char *buf = NULL;
	size_t len = 0;
	int rc = cf_conn_command(&conn, 3, argv);
	if (rc == COFFER_OK)
		rc = cf_conn_bulk_reply(&conn, &buf, &len);
	cf_conn_close(&conn);
	if (rc)
		return rc;
	unsigned long lineno = 0;
	for (const char *p = buf, *end = buf + len; p < end && rc == COFFER_OK;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		lineno++;
		if (le > p) {
			struct jline j = {.p = p, .end = le};
			coffer_event ev;
			if (!parse_event_line(&j, &ev)) {
				rc = CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = rcli.server),
					      "line %lu of the events from cofferd at %s is not an event: '%.60s'",
					      lineno, rcli.server, p);
			} else if (l->json) {
				if (event_wanted(l, &ev)) {
					fwrite(p, 1, (size_t)(le - p), stdout);
					fputc('\n', stdout);
				}
			} else {
				on_event(&ev, l);
			}
			jl_free(&j);
		}
		p = le + 1;
	}
	free(buf);
	return rc;
}

static const char events_usage[] =
	"usage: coffer events (--data DIR | --server ADDR) [--id N] [--source S]\n"
	"                     [--since TIME] [--json]\n"
	"  --data DIR     read the event log of the store in DIR\n"
	"  --server ADDR  read the events of a running server (the default when\n"
	"                 --data is not given: coffer's --server, $COFFER_SERVER or\n"
	"                 " COFFER_DEFAULT_SERVER "; at most the newest 10,000)\n"
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
		CF_RET(read_remote(cli, server, &l));
	else
		CF_RET(coffer_evlog_read(data, on_event, on_damage, &l));
	if (fflush(stdout) != 0 || ferror(stdout))
		return cf_error_sys("write the events to", "standard output", -1);
	return COFFER_OK;
}
