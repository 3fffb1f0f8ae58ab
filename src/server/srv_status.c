/*
 * srv_status.c - COFFER.STATUS and COFFER.EVENTS: what `coffer status` and
 * `coffer events --server` show (role backup or full, like COFFER.BACKUP).
 *
 * COFFER.STATUS -> a bulk string of "key:value" lines (LF-terminated, keys
 * [a-z_], values without CR/LF): the server, its listeners and clients, the
 * log generations and checkpoint (coffer_env_info), the running backup and
 * the last backup of each type (coffer_backup_status). Times are UTC ISO
 * 8601 with microseconds; a value that does not apply is "none".
 *
 * COFFER.EVENTS [SINCE-US] [ID] -> a bulk string of JSON Lines, one event a
 * line, oldest first, exactly as `coffer events --json` prints them: only
 * events at or after SINCE-US (microseconds since the epoch; 0: all) and
 * with id ID (0: all). Bounded: the newest EV_MAX_EVENTS events that match,
 * and at most EV_MAX_BYTES of lines (older ones are left out). A damaged
 * record is skipped (`coffer events --data` on the server's machine names
 * it). Both commands are F_SLOW: they run on a worker, alone, never on the
 * loop (COFFER.EVENTS reads the event log files).
 *
 * The JSON formatting below is a copy of print_json() in
 * src/cli/cmd_events.c (the server does not link the CLI); keep the two in
 * step - tests/e2e/test_status_events.py compares their output.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <coffer/backup.h>
#include <coffer/event.h>

#include "common/catalog.h"
#include "common/err.h"
#include "common/json.h"
#include "common/timefmt.h"
#include "server/srv_cmds.h"

#define EV_MAX_EVENTS 10000u
#define EV_MAX_BYTES ((size_t)16 << 20)

/* Called from the command table in srv_cmd.c. */
CMD_FN(cmd_coffer_status);
CMD_FN(cmd_coffer_events);

/* ---- a growing text buffer ---- */

struct tbuf {
	char *p;
	size_t len, cap;
	int oom;
};

static void tb_reserve(struct tbuf *b, size_t n)
{
	if (b->oom || b->cap - b->len > n)
		return;
	size_t ncap = b->cap ? b->cap : 256;
	while (ncap - b->len <= n)
		ncap *= 2;
	char *np = realloc(b->p, ncap);
	if (np == NULL) {
		b->oom = 1;
		return;
	}
	b->p = np;
	b->cap = ncap;
}

static void tb_add(struct tbuf *b, const void *p, size_t n)
{
	tb_reserve(b, n);
	if (b->oom)
		return;
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void tb_puts(struct tbuf *b, const char *s)
{
	tb_add(b, s, strlen(s));
}

/* ---- COFFER.STATUS ---- */

static void lsn_text(char *out, size_t cap, uint64_t lsn)
{
	snprintf(out, cap, "%u/%u", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xffffffffu));
}

/* VALUE with CR, LF and other control characters as spaces (one line). */
static void kv(struct tbuf *b, const char *key, const char *value)
{
	tb_puts(b, key);
	tb_add(b, ":", 1);
	size_t at = b->len;
	tb_puts(b, value);
	if (!b->oom)
		for (size_t i = at; i < b->len; i++)
			if ((unsigned char)b->p[i] < 0x20 || b->p[i] == 0x7f)
				b->p[i] = ' ';
	tb_add(b, "\n", 1);
}

static void kv_time(struct tbuf *b, const char *key, int64_t us)
{
	char t[CF_TIME_BUF];
	kv(b, key, us ? cf_time_format(us, t, sizeof t) : "none");
}

CMD_FN(cmd_coffer_status)
{
	(void)c;
	(void)cmd;
	struct srv *s = e->s;
	struct tbuf b = {0};
	int64_t now = srv_now_us();
	char v[1024];

	kv(&b, "coffer_version", SRV_VERSION);
	snprintf(v, sizeof v, "%ld", (long)getpid());
	kv(&b, "process_id", v);
	char *abs = realpath(s->cfg->data_dir, NULL);
	kv(&b, "data_dir", abs ? abs : s->cfg->data_dir);
	free(abs);
	kv_time(&b, "started", s->start_us);
	snprintf(v, sizeof v, "%lld", (long long)((now - s->start_us) / 1000000));
	kv(&b, "uptime_in_seconds", v);
	srv_loop_describe(s, v, sizeof v);
	kv(&b, "listen", v);
	kv(&b, "tls", s->tls ? "yes" : "no");
	kv(&b, "password", s->cfg->password ? "yes" : "no");
	kv(&b, "backup_group", s->cfg->backup_group ? s->cfg->backup_group : "coffer-backup");
	pthread_mutex_lock(&s->sess_mu);
	unsigned sessions = s->nsessions;
	pthread_mutex_unlock(&s->sess_mu);
	snprintf(v, sizeof v, "%zu", atomic_load(&s->nconns));
	kv(&b, "connected_clients", v);
	snprintf(v, sizeof v, "%u", sessions);
	kv(&b, "backup_sessions", v);

	struct coffer_env_info in;
	if (coffer_env_info(s->env, &in) == COFFER_OK) {
		snprintf(v, sizeof v, "%u", in.log_gen_first);
		kv(&b, "log_generation_first", v);
		snprintf(v, sizeof v, "%u", in.log_gen_current);
		kv(&b, "log_generation_current", v);
		lsn_text(v, sizeof v, in.redo_lsn);
		kv(&b, "checkpoint_lsn", v);
		lsn_text(v, sizeof v, in.durable_lsn);
		kv(&b, "durable_lsn", v);
		lsn_text(v, sizeof v, in.last_commit_lsn);
		kv(&b, "last_commit_lsn", v);
		snprintf(v, sizeof v, "%llu", (unsigned long long)in.commits);
		kv(&b, "commits", v);
		kv(&b, "circular_logging", in.circular_logging ? "1" : "0");
		kv(&b, "store_fatal", in.fatal ? "1" : "0");
		snprintf(v, sizeof v, "%u", in.page_size);
		kv(&b, "page_size", v);
		snprintf(v, sizeof v, "%llu", (unsigned long long)in.pages);
		kv(&b, "db_pages", v);
	} else {
		kv(&b, "store_info_error", coffer_code_name(coffer_error_last()->code));
	}

	struct coffer_backup_status st;
	coffer_backup_status(s->env, &st);
	kv(&b, "backup_running", st.running ? "1" : "0");
	if (st.running) {
		const char *tn = coffer_backup_type_name(st.type);
		kv(&b, "backup_type", tn ? tn : "unknown");
		kv(&b, "backup_who", st.who);
		kv_time(&b, "backup_since", st.start_us);
	}
	static const char *const kinds[3] = {"full", "incremental", "differential"};
	for (int i = 0; i < 3; i++) {
		char key[64];
		snprintf(key, sizeof key, "last_%s_id", kinds[i]);
		if (!st.last[i].valid) {
			kv(&b, key, "none");
			continue;
		}
		char id[33];
		for (int k = 0; k < 16; k++)
			snprintf(id + 2 * k, 3, "%02x", st.last[i].id[k]);
		kv(&b, key, id);
		snprintf(key, sizeof key, "last_%s_generations", kinds[i]);
		snprintf(v, sizeof v, "%u-%u", st.last[i].gen_first, st.last[i].gen_last);
		kv(&b, key, v);
		snprintf(key, sizeof key, "last_%s_start", kinds[i]);
		kv_time(&b, key, st.last[i].start_us);
		snprintf(key, sizeof key, "last_%s_end", kinds[i]);
		kv_time(&b, key, st.last[i].end_us);
	}
	if (b.oom) {
		free(b.p);
		r_error(r, NULL, COFFER_E_NOMEM, "out of memory");
		return;
	}
	r_bulk_ref(r, b.p ? b.p : "", b.len, b.p);
}

/* ---- COFFER.EVENTS: each event in the JSON form of coffer events --json ---- */

static void tb_sink(void *arg, const void *p, size_t n)
{
	tb_add(arg, p, n);
}

static void event_json(struct tbuf *b, const coffer_event *ev)
{
	cf_event_json(tb_sink, b, ev);
}

/* ---- COFFER.EVENTS: the newest events that match, in a ring ---- */

struct evring {
	int64_t since_us;
	int id;
	char **line;  /* EV_MAX_EVENTS slots; line i is at (head + i) % EV_MAX_EVENTS */
	size_t *len;
	size_t head, n, bytes;
	unsigned long damaged;
	struct tbuf tmp;
};

static void ring_drop_oldest(struct evring *g)
{
	free(g->line[g->head]);
	g->line[g->head] = NULL;
	g->bytes -= g->len[g->head];
	g->head = (g->head + 1) % EV_MAX_EVENTS;
	g->n--;
}

static int ring_event(const coffer_event *ev, void *arg)
{
	struct evring *g = arg;
	if (g->id != 0 && ev->id != g->id)
		return 0;
	if (ev->time_us < g->since_us)
		return 0;
	g->tmp.len = 0;
	event_json(&g->tmp, ev);
	if (g->tmp.oom)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "out of memory formatting the events");
	if (g->tmp.len > EV_MAX_BYTES)
		return 0; /* cannot happen: an event is at most a few hundred KiB */
	char *copy = malloc(g->tmp.len);
	if (copy == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "out of memory reading the events");
	memcpy(copy, g->tmp.p, g->tmp.len);
	if (g->n == EV_MAX_EVENTS)
		ring_drop_oldest(g);
	while (g->n > 0 && g->bytes + g->tmp.len > EV_MAX_BYTES)
		ring_drop_oldest(g);
	size_t slot = (g->head + g->n) % EV_MAX_EVENTS;
	g->line[slot] = copy;
	g->len[slot] = g->tmp.len;
	g->bytes += g->tmp.len;
	g->n++;
	return 0;
}

static int ring_damage(const char *file, uint64_t offset, const char *why, void *arg)
{
	(void)file;
	(void)offset;
	(void)why;
	struct evring *g = arg;
	g->damaged++;
	return 0;
}

CMD_FN(cmd_coffer_events)
{
	(void)c;
	struct srv *s = e->s;
	long long since = 0, id = 0;
	if (cmd->argc > 3) {
		r_error(r, NULL, COFFER_E_INVALID_ARGUMENT, "wrong number of arguments for 'coffer.events' command");
		return;
	}
	if (cmd->argc >= 2 && srv_strict_ll(cmd->argv[1].p, cmd->argv[1].len, &since)) {
		r_error(r, NULL, COFFER_E_INVALID_ARGUMENT,
			"COFFER.EVENTS: the time '%.*s' is not microseconds since the epoch",
			(int)(cmd->argv[1].len > 32 ? 32 : cmd->argv[1].len), cmd->argv[1].p);
		return;
	}
	if (cmd->argc >= 3 && (srv_strict_ll(cmd->argv[2].p, cmd->argv[2].len, &id) || id < 0 || id > 9999)) {
		r_error(r, NULL, COFFER_E_INVALID_ARGUMENT, "COFFER.EVENTS: the event id '%.*s' is not 0 or 1..9999",
			(int)(cmd->argv[2].len > 32 ? 32 : cmd->argv[2].len), cmd->argv[2].p);
		return;
	}
	struct evring g = {.since_us = since, .id = (int)id};
	g.line = calloc(EV_MAX_EVENTS, sizeof *g.line);
	g.len = calloc(EV_MAX_EVENTS, sizeof *g.len);
	struct tbuf out = {0};
	if (g.line == NULL || g.len == NULL) {
		r_error(r, NULL, COFFER_E_NOMEM, "out of memory reading the events");
		goto done;
	}
	int rc = coffer_evlog_read(s->cfg->data_dir, ring_event, ring_damage, &g);
	if (rc) {
		r_error_last(r, rc);
		goto done;
	}
	tb_reserve(&out, g.bytes + 1);
	for (size_t i = 0; i < g.n; i++) {
		size_t k = (g.head + i) % EV_MAX_EVENTS;
		tb_add(&out, g.line[k], g.len[k]);
	}
	if (out.oom) {
		r_error(r, NULL, COFFER_E_NOMEM, "out of memory sending %zu bytes of events", g.bytes);
		goto done;
	}
	r_bulk_ref(r, out.p ? out.p : "", out.len, out.p);
	out.p = NULL;
done:
	free(out.p);
	if (g.line)
		for (size_t i = 0; i < EV_MAX_EVENTS; i++)
			free(g.line[i]);
	free(g.line);
	free(g.len);
	free(g.tmp.p);
}
