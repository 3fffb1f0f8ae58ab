/*
 * cmd_backup.c - coffer backup [--type full|incremental|differential|copy]
 *                -o OUT [--format file|dir] [--compress zstd[:LEVEL]|none]
 *                [--threads N] [--quiet] [--json] [--rate MIB_PER_S]
 *                [--priority low|normal]
 *
 * The backup client (NTBackup's role): asks cofferd for a backup over the
 * connection given by --server (protocol in src/backup/proto.h) and writes
 * a backup set (src/backup/archive.h) to OUT - a file, '-' for standard
 * output, or a directory with --format dir. The set becomes visible at OUT
 * only once complete and fsynced; only then does the client confirm the
 * logs to the server, which records the backup and truncates its logs,
 * then answers END. If the CONFIRM cannot be sent, or the server answers
 * that it recorded nothing (COFFER_E_LOG_NOT_COPIED), the set is removed
 * again and the backup fails. If the END is lost in any other way (server
 * killed, connection cut, the server failing while it records), the outcome
 * is unknown: the set is kept and the backup ends with
 * COFFER_E_BACKUP_OUTCOME_UNKNOWN (see outcome_unknown). A progress line (phase, bytes, rate, ETA) goes to a terminal on
 * standard error, never to a pipe or with --quiet; --json prints a summary.
 * --rate asks the server to pace the data (COFFER.BACKUP ... RATE); the
 * client runs at a low CPU and I/O priority unless --priority normal
 * (cofferd's data thread has its own setting, backup-priority).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <coffer/backup.h>
#include <coffer/event.h>

#include "backup/archive.h"
#include "backup/proto.h"
#include "backup/take.h"
#include "cli/cli.h"
#include "cli/conn.h"
#include "common/err.h"
#include "common/json.h"
#include "common/os.h"
#include "common/timefmt.h"

struct progress {
	int on;
	const char *phase;
	uint64_t done, total;
	double start, last;
};

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void human(double b, char *out, size_t n)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int i = 0;
	while (b >= 1024 && i < 4) {
		b /= 1024;
		i++;
	}
	snprintf(out, n, "%.1f %s", b, u[i]);
}

static void progress_show(struct progress *p, int final)
{
	if (!p->on)
		return;
	double now = mono();
	if (!final && now - p->last < 0.2)
		return;
	p->last = now;
	double rate = p->done / (now - p->start > 0.001 ? now - p->start : 0.001);
	char done[32], total[32], r[32], eta[32] = "";
	human((double)p->done, done, sizeof done);
	human((double)p->total, total, sizeof total);
	human(rate, r, sizeof r);
	if (p->total > p->done && rate > 0)
		snprintf(eta, sizeof eta, ", ETA %.0f s", (double)(p->total - p->done) / rate);
	fprintf(stderr, "\r\033[Kcoffer backup: %-12s %s of %s, %s/s%s%s", p->phase, done, total, r, eta,
		final ? "\n" : "");
	fflush(stderr);
}

/* Remove a set made visible that the server certainly did not record (the
 * CONFIRM never reached it whole, or it said so). The backup fails with the
 * server's error either way; a failure to make the removal durable is only
 * noted after it. */
static void remove_set(const char *path)
{
	coffer_error saved = *coffer_error_last();
	if (cf_archive_remove(path) != COFFER_OK)
		fprintf(stderr, "coffer backup: removing %s: %s\n", path, coffer_error_last()->message);
	*(coffer_error *)coffer_error_last() = saved;
}

static int parse_compress(const char *v, int *level)
{
	if (strcmp(v, "none") == 0) {
		*level = 0;
		return COFFER_OK;
	}
	if (strncmp(v, "zstd", 4) == 0) {
		*level = 1;
		if (v[4] == '\0')
			return COFFER_OK;
		char *end;
		long l = v[4] == ':' ? strtol(v + 5, &end, 10) : 0;
		if (v[4] == ':' && end != v + 5 && *end == '\0' && l >= -7 && l <= 22 && l != 0) {
			*level = (int)l;
			return COFFER_OK;
		}
	}
	return cli_usage_error("backup", "--compress takes zstd, zstd:LEVEL (1..22) or none, not '%s'", v);
}

static void client_event(int id, const char *set, const char *type)
{
	/* The client has no store: its events go to the system journal. */
	coffer_evlog *ev;
	if (coffer_evlog_open(&ev, NULL, NULL) != COFFER_OK) {
		coffer_error_clear();
		return;
	}
	coffer_evfield f[2] = {{"SET", set}, {"TYPE", type}};
	if (id == COFFER_EV_BACKUP_FAILED)
		coffer_event_error(ev, id, coffer_error_last(), f, 2);
	else
		coffer_event_write(ev, id, f, 2, "backup set %s written (%s)", set, type);
	coffer_evlog_close(ev);
}

/* The progress line follows the stream. */
static void take_sync(struct progress *pg, const struct cf_take *t)
{
	pg->phase = t->phase;
	pg->done = t->done;
	pg->total = t->total;
}

static void take_tick(struct cf_take *t)
{
	take_sync(t->arg, t);
	progress_show(t->arg, 0);
}

static void hex_id(const uint8_t b[16], char out[33])
{
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/*
 * The END frame did not come after a CONFIRM sent whole: the set is complete
 * and durable (visible at OUT since cf_archive_finish), and the server may
 * or may not have recorded it. Between CONFIRM and END the server
 * (coffer_backup_end) appends the new history to its log and flushes it -
 * from then on the backup is recorded, recovery replays it - then, for a
 * full or incremental backup, checkpoints and deletes the generations the
 * set holds, and only then sends END. So a lost END, or an ERROR from any
 * of these steps, says nothing about whether the history was written: the
 * set is kept and the error says so (COFFER_E_BACKUP_OUTCOME_UNKNOWN). The
 * error that cut the exchange is the cause named in the message.
 */
static int outcome_unknown(const struct cf_stream *s, int answered, const char *out,
			   const struct coffer_backup_info *bi, struct progress *pg)
{
	coffer_error cause = *coffer_error_last();
	const char *name = coffer_code_name(cause.code);
	char id[33], where[600], what[300];
	hex_id(bi->id, id);
	if (pg->on)
		fputc('\n', stderr);
	if (strcmp(out, "-") == 0)
		snprintf(where, sizeof where, "the %s backup set %s written to standard output is complete",
			 coffer_backup_type_name(bi->type), id);
	else
		snprintf(where, sizeof where, "the %s backup set %s at \"%s\" is complete and was kept",
			 coffer_backup_type_name(bi->type), id, out);
	if (bi->type == COFFER_BACKUP_COPY)
		snprintf(what, sizeof what, "a copy backup records nothing and deletes no log, so the set "
					    "is a standalone restore point either way");
	else if (bi->type == COFFER_BACKUP_DIFFERENTIAL)
		snprintf(what, sizeof what, "the server may or may not have recorded it as its last "
					    "differential backup (a differential deletes no log)");
	else
		snprintf(what, sizeof what, "the server may or may not have recorded it as its last %s "
					    "backup and deleted log generations through %u",
			 coffer_backup_type_name(bi->type), bi->gen_last);
	return CF_ERROR(COFFER_E_BACKUP_OUTCOME_UNKNOWN,
			CF_OBJ(.file = strcmp(out, "-") == 0 ? NULL : out, .peer = s->peer),
			"%s, but %s (%.200s%s%s): %s; 'coffer status' shows the server's last backups", where,
			answered ? "the server answered its confirmation with an error"
				 : "the server's answer to its confirmation was lost",
			cause.message, name ? ", " : "", name ? name : "", what);
}

/* The summary line or --json object. ENDP: the END payload, or NULL when
 * the outcome is unknown (the set kept, see outcome_unknown). */
static void summary(int json, int quiet, const char *out, const struct coffer_backup_info *bi,
		    const struct progress *pg, uint64_t bytes_out, uint64_t wire_in, uint32_t stats_fast,
		    const uint8_t *endp)
{
	char id[33];
	hex_id(bi->id, id);
	uint32_t tr_from = 0, tr_to = 0;
	if (endp) {
		memcpy(&tr_from, endp, 4);
		memcpy(&tr_to, endp + 4, 4);
	}
	double secs = mono() - pg->start;
	FILE *info = strcmp(out, "-") == 0 ? stderr : stdout;
	if (json) {
		char tr[64] = "\"truncated_from\":null,\"truncated_to\":null";
		if (endp)
			snprintf(tr, sizeof tr, "\"truncated_from\":%u,\"truncated_to\":%u", tr_from, tr_to);
		fputs("{\"set\":\"", info);
		cf_json_fputs(info, out);
		fprintf(info,
			"\",\"type\":\"%s\",\"id\":\"%s\",\"pages\":%llu,\"page_size\":%u,"
			"\"gen_first\":%u,\"gen_last\":%u,\"bytes\":%llu,\"bytes_written\":%llu,"
			"\"bytes_received\":%llu,\"seconds\":%.3f,%s,\"fast_path_files\":%u,\"outcome\":\"%s\","
			"\"kept\":%s%s}\n",
			coffer_backup_type_name(bi->type), id, (unsigned long long)bi->npages, bi->page_size,
			bi->gen_first, bi->gen_last, (unsigned long long)pg->done, (unsigned long long)bytes_out,
			(unsigned long long)wire_in, secs, tr, stats_fast, endp ? "confirmed" : "unknown",
			endp || strcmp(out, "-") == 0 ? "false" : "true",
			endp ? "" : ",\"error\":\"COFFER_E_BACKUP_OUTCOME_UNKNOWN\"");
	} else if (!quiet && endp) {
		char d[32], o[32];
		human((double)pg->done, d, sizeof d);
		human((double)bytes_out, o, sizeof o);
		fprintf(info, "coffer backup: %s backup %s written to %s: %llu pages, log generations %u..%u, "
			      "%s read, %s written, %.2f s",
			coffer_backup_type_name(bi->type), id, out, (unsigned long long)bi->npages, bi->gen_first,
			bi->gen_last, d, o, secs);
		if (tr_to)
			fprintf(info, "; the server deleted generations %u..%u", tr_from, tr_to);
		fputc('\n', info);
	}
	fflush(info);
}

int cmd_backup(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{"type", required_argument, NULL, 't'},
		{"output", required_argument, NULL, 'o'},
		{"format", required_argument, NULL, 'f'},
		{"compress", required_argument, NULL, 'c'},
		{"threads", required_argument, NULL, 'j'},
		{"quiet", no_argument, NULL, 'q'},
		{"json", no_argument, NULL, 'J'},
		{"no-fast-path", no_argument, NULL, 'N'},
		{"rate", required_argument, NULL, 'r'},
		{"priority", required_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	unsigned type = COFFER_BACKUP_FULL;
	const char *out = NULL;
	struct cf_archive_options ao = {.compress_level = 1};
	int quiet = 0, json = 0, nofast = 0, normal_prio = 0, ch;
	unsigned long long rate = 0; /* bytes/s, 0: no limit asked */
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+o:qh", opts, NULL)) != -1) {
		switch (ch) {
		case 't':
			type = coffer_backup_type_parse(optarg);
			if (type == 0)
				return cli_usage_error("backup",
						       "--type takes full, incremental, differential or copy, not '%s'",
						       optarg);
			break;
		case 'o':
			out = optarg;
			break;
		case 'f':
			if (strcmp(optarg, "dir") == 0)
				ao.format_dir = 1;
			else if (strcmp(optarg, "file") != 0)
				return cli_usage_error("backup", "--format takes file or dir, not '%s'", optarg);
			break;
		case 'c':
			CF_RET(parse_compress(optarg, &ao.compress_level));
			break;
		case 'j':
			ao.threads = atoi(optarg);
			if (ao.threads < 0 || ao.threads > 64)
				return cli_usage_error("backup", "--threads takes 0..64");
			break;
		case 'q':
			quiet = 1;
			break;
		case 'J':
			json = 1;
			break;
		case 'N':
			nofast = 1;
			break;
		case 'r': {
			char *end;
			double mib = strtod(optarg, &end);
			if (end == optarg || *end || !(mib >= 0.1 && mib <= 1e6))
				return cli_usage_error("backup", "--rate takes MiB per second (0.1 to 1000000), not '%s'",
						       optarg);
			rate = (unsigned long long)(mib * 1048576.0);
			break;
		}
		case 'p':
			if (strcmp(optarg, "normal") == 0)
				normal_prio = 1;
			else if (strcmp(optarg, "low") != 0)
				return cli_usage_error("backup", "--priority takes low or normal, not '%s'", optarg);
			break;
		case 'h':
			puts("usage: coffer backup [--type full|incremental|differential|copy] -o OUT\n"
			     "                     [--format file|dir] [--compress zstd[:LEVEL]|none]\n"
			     "                     [--threads N] [--quiet] [--json] [--no-fast-path]\n"
			     "                     [--rate MIB_PER_S] [--priority low|normal]");
			return COFFER_OK;
		default:
			return cli_usage_error("backup", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (out == NULL || optind != argc)
		return cli_usage_error("backup", "give the output with -o OUT (a file, '-' or a directory)");
	if (strcmp(out, "-") == 0 && ao.format_dir)
		return cli_usage_error("backup", "--format dir cannot go to standard output");
	/* Before any thread starts: the compression workers inherit it. */
	if (!normal_prio)
		(void)cf_bkp_lower_priority(CF_BKP_CLIENT_NICE);

	struct progress pg = {.on = !quiet && isatty(2), .phase = "starting", .start = mono()};
	cf_archive_writer *w = NULL;
	struct cf_conn conn;
	int connected = 0, rc, visible = 0;
	uint8_t *buf = malloc(CF_BKP_MAX_PAYLOAD);
	struct coffer_backup_info bi;
	uint8_t endp[16] = {0};
	if (buf == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the backup buffer");

	/* The set first: a bad OUT fails before the server starts anything. */
	CF_GO(rc, cf_archive_create(&w, out, &ao));
	CF_GO(rc, cf_conn_open(&conn, cli));
	connected = 1;
	char ver[16], vtype[16];
	snprintf(ver, sizeof ver, "%u", CF_BKP_VERSION);
	snprintf(vtype, sizeof vtype, "%s", coffer_backup_type_name(type));
	/* The fast path (descriptor passing) is asked for on Unix sockets only
	 * and set up over this very connection; see src/backup/proto.h. */
	int want_fast = !nofast && strncmp(cli->server, "unix:", 5) == 0;
	const char *cmdv[8] = {"COFFER.BACKUP", ver, vtype, "ZEROS"};
	int cmdc = 4;
	char vrate[24];
	if (want_fast)
		cmdv[cmdc++] = "FASTPATH";
	if (rate) {
		snprintf(vrate, sizeof vrate, "%llu", rate);
		cmdv[cmdc++] = "RATE";
		cmdv[cmdc++] = vrate;
	}
	CF_GO(rc, cf_conn_command(&conn, cmdc, cmdv));
	char line[256];
	CF_GO(rc, cf_conn_simple_reply(&conn, line, sizeof line));
	unsigned sv = 0;
	int fast = want_fast && strstr(line, " FASTPATH") != NULL;
	if (sscanf(line, "COFFER-BACKUP %u", &sv) != 1 || sv != CF_BKP_VERSION) {
		rc = CF_ERROR(COFFER_E_PROTOCOL_VERSION, CF_OBJ(.peer = conn.s.peer),
			      "the server at %s answered '%s' to a backup request of protocol version %u",
			      conn.s.peer, line, CF_BKP_VERSION);
		goto err;
	}

	struct cf_take tk = {.s = &conn.s, .w = w, .buf = buf, .fast = fast, .tick = take_tick, .arg = &pg};
	rc = cf_take_stream(&tk);
	bi = tk.bi;
	take_sync(&pg, &tk);
	if (rc)
		goto err;
	uint32_t last_done = bi.gen_last, stats_fast = tk.fast_files;

	/* Complete and durable before the server may truncate anything. */
	pg.phase = "finishing";
	progress_show(&pg, 0);
	uint64_t bytes_out = cf_archive_bytes_out(w);
	rc = cf_take_finish(&tk, cf_time_now_us());
	w = NULL;
	if (rc)
		goto err;
	visible = strcmp(out, "-") != 0;
	/* A CONFIRM that could not be sent whole never reached the server:
	 * nothing was recorded (the error path removes the set). Test hook
	 * backup.confirm.send: the send fails, the connection is dropped. */
	int inj = CF_INJECT("backup.confirm.send");
	if (inj) {
		rc = CF_ERROR(COFFER_E_CONNECTION_LOST, CF_OBJ(.peer = conn.s.peer, .sys_errno = inj),
			      "the confirmation of the set could not be sent to %s: %s (injected)", conn.s.peer,
			      strerror(inj));
		goto err;
	}
	CF_GO(rc, cf_bkp_send(&conn.s, BKF_CONFIRM, &last_done, 4, NULL, 0));
	uint16_t t = 0;
	uint32_t len;
	rc = cf_bkp_recv(&conn.s, &t, buf, &len);
	if (rc == COFFER_OK && (t != BKF_END || len != 16))
		rc = CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = conn.s.peer), "expected END, got frame %u", t);
	if (rc) {
		/* Only the server's own word that it recorded nothing lets the set
		 * go; anything else after CONFIRM leaves the outcome unknown. */
		if (t == BKF_ERROR && rc == COFFER_E_LOG_NOT_COPIED)
			goto err;
		rc = outcome_unknown(&conn.s, t == BKF_ERROR, out, &bi, &pg);
		cf_conn_close(&conn);
		summary(json, quiet, out, &bi, &pg, bytes_out, conn.s.bytes_in, stats_fast, NULL);
		client_event(COFFER_EV_BACKUP_FAILED, out, coffer_backup_type_name(bi.type));
		free(buf);
		return rc;
	}
	memcpy(endp, buf, 16);
	pg.phase = "done";
	progress_show(&pg, 1);
	cf_conn_close(&conn);
	connected = 0;
	summary(json, quiet, out, &bi, &pg, bytes_out, conn.s.bytes_in, stats_fast, endp);
	client_event(COFFER_EV_BACKUP_COMPLETED, out, coffer_backup_type_name(bi.type));
	free(buf);
	return COFFER_OK;
err:
	if (pg.on)
		fputc('\n', stderr);
	{
		coffer_error e = *coffer_error_last();
		if (connected) {
			/* Tell the server unless it is the one that failed. */
			if (rc != COFFER_E_CONNECTION_LOST && rc != COFFER_E_TIMEOUT && rc != COFFER_E_TLS &&
			    e.peer[0] == '\0')
				cf_bkp_send(&conn.s, BKF_ABORT, NULL, 0, NULL, 0);
			cf_conn_close(&conn);
		}
		cf_archive_abort(w);
		if (visible) /* the server did not record it: do not leave it looking good */
			remove_set(out);
		*(coffer_error *)coffer_error_last() = e;
	}
	client_event(COFFER_EV_BACKUP_FAILED, out, coffer_backup_type_name(type));
	free(buf);
	return rc;
}
