/*
 * cmd_status.c - coffer status [--raw]
 *
 * Asks the server (coffer's --server, $COFFER_SERVER or the default address;
 * --tls-ca, --password-file / $COFFER_PASSWORD as for every command) for
 * COFFER.STATUS (src/server/srv_status.c; allowed for the backup operators)
 * and prints a summary: the server, its uptime and data directory, the log
 * generations and the checkpoint, the backup in progress (type, who, since
 * when) or "none", and the last full, incremental and differential backups.
 * --raw prints the server's key:value lines as they came (for scripts).
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/conn.h"
#include "common/err.h"
#include "common/timefmt.h"

#define MAX_KEYS 96

struct kvs {
	size_t n;
	const char *key[MAX_KEYS];
	const char *val[MAX_KEYS];
};

/* Split "key:value\n" lines in place. */
static void kvs_parse(struct kvs *k, char *text)
{
	k->n = 0;
	for (char *line = text; line && *line && k->n < MAX_KEYS;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		size_t len = strlen(line);
		if (len && line[len - 1] == '\r')
			line[len - 1] = '\0';
		char *colon = strchr(line, ':');
		if (colon) {
			*colon = '\0';
			cf_defang(colon + 1); /* the server's text goes to a terminal */
			k->key[k->n] = line;
			k->val[k->n] = colon + 1;
			k->n++;
		}
		line = nl ? nl + 1 : NULL;
	}
}

/* The value of KEY, or DFLT. */
static const char *get(const struct kvs *k, const char *key, const char *dflt)
{
	for (size_t i = 0; i < k->n; i++)
		if (strcmp(k->key[i], key) == 0)
			return k->val[i];
	return dflt;
}

/* The value of last_KIND_WHAT, or DFLT. */
static const char *get_last(const struct kvs *k, const char *kind, const char *what, const char *dflt)
{
	char key[64];
	snprintf(key, sizeof key, "last_%s_%s", kind, what);
	return get(k, key, dflt);
}

/* "3 d 4 h", "2 h 5 min", "5 min 7 s", "12 s". */
static const char *duration(long long s, char *buf, size_t cap)
{
	if (s < 0)
		s = 0;
	if (s >= 86400)
		snprintf(buf, cap, "%lld d %lld h", s / 86400, s % 86400 / 3600);
	else if (s >= 3600)
		snprintf(buf, cap, "%lld h %lld min", s / 3600, s % 3600 / 60);
	else if (s >= 60)
		snprintf(buf, cap, "%lld min %lld s", s / 60, s % 60);
	else
		snprintf(buf, cap, "%lld s", s);
	return buf;
}

/* Seconds from the ISO time T (as the server writes it) to now; -1 if T is
 * not one. */
static long long age_of(const char *t)
{
	int64_t us;
	if (t == NULL || cf_time_parse(t, cf_time_now_us(), &us) != COFFER_OK) {
		coffer_error_clear();
		return -1;
	}
	return (long long)((cf_time_now_us() - us) / 1000000);
}

#define LABEL "%-19s "

static void print_summary(const struct cli *cli, const struct kvs *k)
{
	char d[64];
	printf(LABEL "%s (cofferd %s, pid %s)\n", "server:", cli->server, get(k, "coffer_version", "?"),
	       get(k, "process_id", "?"));
	long long up = atoll(get(k, "uptime_in_seconds", "0"));
	printf(LABEL "%s (since %s)\n", "uptime:", duration(up, d, sizeof d), get(k, "started", "?"));
	printf(LABEL "%s\n", "data:", get(k, "data_dir", "?"));
	printf(LABEL "%s\n", "listening:", get(k, "listen", "?"));
	printf(LABEL "%s connected, %s backup session(s)\n", "clients:", get(k, "connected_clients", "?"),
	       get(k, "backup_sessions", "0"));
	const char *err = get(k, "store_info_error", NULL);
	if (err) {
		printf(LABEL "unavailable (%s)\n", "store:", err);
	} else {
		if (strcmp(get(k, "store_fatal", "0"), "0") != 0)
			printf(LABEL "FAILED: a write or flush failed; the store refuses writes until cofferd is "
			       "restarted (see 'coffer events')\n",
			       "store:");
		printf(LABEL "%s to %s (the current one), circular logging %s\n", "log generations:",
		       get(k, "log_generation_first", "?"), get(k, "log_generation_current", "?"),
		       strcmp(get(k, "circular_logging", "0"), "0") ? "on" : "off");
		printf(LABEL "redo LSN %s, durable LSN %s, last commit LSN %s, %s commits\n", "checkpoint:",
		       get(k, "checkpoint_lsn", "?"), get(k, "durable_lsn", "?"), get(k, "last_commit_lsn", "?"),
		       get(k, "commits", "?"));
	}
	if (strcmp(get(k, "backup_running", "0"), "0") != 0) {
		const char *since = get(k, "backup_since", "?");
		long long age = age_of(since);
		printf(LABEL "%s backup running since %s (%s), started by %s\n", "backup in progress:",
		       get(k, "backup_type", "?"), since, age >= 0 ? duration(age, d, sizeof d) : "?",
		       get(k, "backup_who", "?"));
	} else {
		printf(LABEL "none\n", "backup in progress:");
	}
	static const char *const kinds[3] = {"full", "incremental", "differential"};
	for (int i = 0; i < 3; i++) {
		char label[40];
		snprintf(label, sizeof label, "last %s:", kinds[i]);
		const char *id = get_last(k, kinds[i], "id", "none");
		if (strcmp(id, "none") == 0) {
			printf(LABEL "none\n", label);
			continue;
		}
		printf(LABEL "id %s, generations %s, %s to %s\n", label, id,
		       get_last(k, kinds[i], "generations", "?"), get_last(k, kinds[i], "start", "?"),
		       get_last(k, kinds[i], "end", "?"));
	}
}

static const char status_usage[] =
	"usage: coffer status [--raw]\n"
	"  the server's state: pid, version, uptime, data directory, log generations,\n"
	"  checkpoint, the backup in progress and the last backup of each type\n"
	"  --raw   the server's key:value lines as they are\n";

int cmd_status(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{"raw", no_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	bool raw = false;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			raw = true;
			break;
		case 'h':
			fputs(status_usage, stdout);
			return COFFER_OK;
		default:
			return cli_usage_error("status", "unknown option '%s'; see 'coffer status --help'",
					       argv[optind - 1]);
		}
	}
	if (optind != argc)
		return cli_usage_error("status", "unexpected argument '%s'", argv[optind]);

	struct cf_conn conn;
	CF_RET(cf_conn_open(&conn, cli));
	const char *args[1] = {"COFFER.STATUS"};
	char *text = NULL;
	size_t len = 0;
	int rc = cf_conn_command(&conn, 1, args);
	if (rc == COFFER_OK)
		rc = cf_conn_bulk_reply(&conn, &text, &len);
	cf_conn_close(&conn);
	if (rc)
		return rc;
	if (raw) {
		fwrite(text, 1, len, stdout);
	} else {
		struct kvs k;
		kvs_parse(&k, text);
		if (get(&k, "process_id", NULL) == NULL) {
			free(text);
			return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = cli->server),
					"the status from %s is not a cofferd status", cli->server);
		}
		print_summary(cli, &k);
	}
	free(text);
	if (fflush(stdout) != 0 || ferror(stdout))
		return cf_error_sys("write the status to", "standard output", -1);
	return COFFER_OK;
}
