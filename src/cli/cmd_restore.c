/*
 * cmd_restore.c - coffer restore SET... --target DIR [--until TIME|LOGPOS]
 * [--no-recover]: lay down a full (or copy) set and the incrementals that
 * follow it, or one differential, into a new store, then run hard recovery,
 * optionally stopping at a time or a log position (GEN:OFFSET). The work is
 * cf_restore() (src/backup/ar_restore.c); this file parses and prints.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/archive.h"
#include "cli/cli.h"
#include "common/err.h"
#include "common/timefmt.h"

#define USAGE "usage: coffer restore SET... --target DIR [--until TIME|LOGPOS] [--no-recover]"

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
	return (uint64_t)gen << 32 | off;
}

static void on_set(void *arg, const char *set, const struct cf_set_manifest *m)
{
	(void)arg;
	printf("restored %s: %s set, %u files, %llu bytes, generations %u..%u\n", set,
	       cf_set_type_name(m->meta.type), m->nfiles, (unsigned long long)m->total_bytes,
	       m->meta.gen_first, m->meta.gen_last);
	fflush(stdout);
}

int cmd_restore(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	static const struct option opts[] = {
		{"target", required_argument, NULL, 't'},
		{"until", required_argument, NULL, 'u'},
		{"no-recover", no_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct cf_restore_options o = {.on_set = on_set};
	const char *until = NULL;
	int c;
	opterr = 0;
	/* Permute: options may come before or after the sets; '-' is a set. */
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			o.target = optarg;
			break;
		case 'u':
			until = optarg;
			break;
		case 'n':
			o.no_recover = 1;
			break;
		case 'h':
			puts(USAGE);
			return COFFER_OK;
		default:
			return cli_usage_error("restore", "unknown option or missing value '%s'; %s",
					       argv[optind - 1], USAGE);
		}
	}
	if (o.target == NULL || optind >= argc)
		return cli_usage_error("restore", "%s", USAGE);
	if (until && o.no_recover)
		return cli_usage_error("restore", "--until applies to recovery; it cannot go with "
						  "--no-recover (give it to 'coffer recover' later)");
	if (until) {
		o.until_lsn = parse_logpos(until);
		if (o.until_lsn == 0) {
			int64_t us;
			CF_RET(cf_time_parse(until, cf_time_now_us(), &us));
			o.until_us = us;
		}
	}
	struct cf_restore_result res;
	int rc = cf_restore((const char *const *)(argv + optind), (size_t)(argc - optind), &o, &res);
	if (rc)
		return rc;
	printf("restored %u set(s) into %s: %u files, %llu bytes, log generations %u..%u, replay from "
	       "%u:%u\n",
	       res.sets, o.target, res.files, (unsigned long long)res.bytes, res.gen_first, res.gen_last,
	       (unsigned)(res.redo_lsn >> 32), (unsigned)res.redo_lsn);
	if (o.no_recover)
		printf("hard recovery not run: the store needs 'coffer recover %s' before use\n", o.target);
	else
		printf("hard recovery: log replayed to %u:%u%s; %llu pages; the store is shut down "
		       "cleanly\n",
		       (unsigned)(res.recovered_to >> 32), (unsigned)res.recovered_to,
		       until ? " (stopped at the recovery target)" : "", (unsigned long long)res.pages);
	return COFFER_OK;
}
