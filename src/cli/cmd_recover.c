/*
 * cmd_recover.c - coffer recover DIR [--until TIME|LOGPOS] (eseutil /r):
 * offline recovery. On a store that crashed it replays the log like a server
 * start would; on a store laid down by 'coffer restore --no-recover' it is the
 * hard recovery that makes it usable, optionally stopping at a point in time
 * (the first commit later than TIME is not applied) or a log position
 * (GEN:OFFSET as 'coffer dump logs' prints it). Log generations after the
 * stop point are deleted from DIR. Ends with the store cleanly shut down.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <coffer/coffer.h>
#include <coffer/event.h>

#include "cli/cli.h"
#include "common/err.h"
#include "common/timefmt.h"
#include "engine/page.h"

/* GEN:OFFSET (decimal) -> LSN; 0 if TEXT is not of that form. */
static uint64_t parse_logpos(const char *text)
{
	char *end;
	unsigned long long gen = strtoull(text, &end, 10);
	if (end == text || *end != ':' || gen == 0 || gen > UINT32_MAX)
		return 0;
	const char *o = end + 1;
	unsigned long long off = strtoull(o, &end, 10);
	if (end == o || *end || off > UINT32_MAX)
		return 0;
	return CF_LSN(gen, off);
}

int cmd_recover(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	static const struct option opts[] = {
		{"until", required_argument, NULL, 'u'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *until = NULL;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'u':
			until = optarg;
			break;
		case 'h':
			puts("usage: coffer recover DIR [--until TIME|LOGPOS]");
			return COFFER_OK;
		default:
			return cli_usage_error("recover", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("recover", "usage: coffer recover DIR [--until TIME|LOGPOS]");
	const char *dir = argv[optind];

	coffer_env_options o;
	coffer_env_options_init(&o);
	o.flags = COFFER_ENV_HARD_RECOVERY;
	if (until) {
		o.until_lsn = parse_logpos(until);
		if (o.until_lsn == 0) {
			int64_t us;
			CF_RET(cf_time_parse(until, cf_time_now_us(), &us));
			o.until_us = us;
		}
	}
	coffer_evlog *ev = NULL;
	if (coffer_evlog_open(&ev, dir, NULL) != COFFER_OK)
		coffer_error_clear(); /* the store check below gives the real error */
	o.evlog = ev;
	coffer_env *env;
	int rc = coffer_env_open(&env, dir, &o);
	if (rc == COFFER_OK) {
		struct coffer_env_info info;
		rc = coffer_env_info(env, &info);
		if (rc == COFFER_OK)
			printf("recovered %s: log replayed to %u:%u; %llu pages; the store is shut down "
			       "cleanly\n",
			       dir, CF_LSN_GEN(info.last_commit_lsn), CF_LSN_OFF(info.last_commit_lsn),
			       (unsigned long long)info.pages);
		int rc2 = coffer_env_close(env);
		if (rc == COFFER_OK)
			rc = rc2;
	}
	coffer_evlog_close(ev);
	return rc;
}
