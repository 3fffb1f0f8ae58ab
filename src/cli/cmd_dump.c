/*
 * cmd_dump.c - coffer dump SUBJECT DIR: offline dumps of a store's files
 * (eseutil /ml, /mh, /mk).
 *
 *   coffer dump logs DIR [--from GEN] [--summary]
 *
 * DIR is the data directory; the log is DIR/log. Each subject is one
 * function in the subjects[] table below.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/err.h"
#include "common/os.h"
#include "common/timefmt.h"
#include "engine/log.h"

static const char dump_usage[] =
	"usage: coffer dump header DIR | checkpoint DIR | logs DIR [--from GEN] [--summary]\n"
	"  header      both copies of the database header: state, redo position, backups\n"
	"  checkpoint  the checkpoint file: where recovery starts\n"
	"  logs   every log generation's header and records (DIR/log)\n"
	"         --from GEN   start at generation GEN (default: the lowest present)\n"
	"         --summary    one line per generation: record counts by type\n";

/* ---- dump logs ---- */

static void lsn_text(cf_lsn l, char out[24])
{
	snprintf(out, 24, "%010u:%010u", CF_LSN_GEN(l), CF_LSN_OFF(l));
}

static void print_gen_header(const struct cf_log_file_header *h, const char *path)
{
	char sig[33], t[CF_TIME_BUF], prev[24];
	for (int i = 0; i < 16; i++)
		snprintf(sig + 2 * i, 3, "%02x", h->sig[i]);
	lsn_text(h->prev_end, prev);
	printf("generation %010u  %s\n", h->generation, path);
	printf("  signature  %s\n", sig);
	printf("  created    %s\n", cf_time_format(h->created_us, t, sizeof t));
	printf("  prev end   %s\n", prev);
	printf("  file size  %u\n", h->file_size);
}

/* Print the header of generation GEN (read from its file). */
static int show_gen(const char *logdir, uint32_t gen)
{
	char path[PATH_MAX];
	struct cf_log_file_header h;
	CF_RET(cf_log_gen_path(path, sizeof path, logdir, gen));
	CF_RET(cf_log_read_header(path, &h));
	print_gen_header(&h, path);
	return COFFER_OK;
}

static void print_record(const cf_log_rec *rec)
{
	char at[24], t[CF_TIME_BUF], redo[24], what[160] = "";
	cf_pgno pgno;
	uint32_t n;
	uint64_t txn;
	int64_t us;
	cf_lsn l;
	const uint8_t *page;
	size_t plen;
	int rc = COFFER_OK;
	switch (rec->type) {
	case CF_LOG_PAGE_IMAGE:
		if ((rc = cf_log_decode_page_image(rec, &pgno, &page, &plen)) == COFFER_OK)
			snprintf(what, sizeof what, "pgno %u, %zu bytes", pgno, plen);
		break;
	case CF_LOG_PAGE_DIFF:
		if ((rc = cf_log_decode_page_diff(rec, 0, &pgno, &n)) == COFFER_OK)
			snprintf(what, sizeof what, "pgno %u, %u range%s", pgno, n, n == 1 ? "" : "s");
		break;
	case CF_LOG_COMMIT:
		if ((rc = cf_log_decode_commit(rec, &txn, &us)) == COFFER_OK)
			snprintf(what, sizeof what, "txn %llu at %s", (unsigned long long)txn,
				 cf_time_format(us, t, sizeof t));
		break;
	case CF_LOG_CHECKPOINT:
		if ((rc = cf_log_decode_checkpoint(rec, &l)) == COFFER_OK) {
			lsn_text(l, redo);
			snprintf(what, sizeof what, "redo %s", redo);
		}
		break;
	case CF_LOG_HEADER:
		snprintf(what, sizeof what, "%zu bytes of backup history", rec->len);
		break;
	default:
		break;
	}
	lsn_text(rec->lsn, at);
	if (what[0])
		printf("%s  %-10s len %-6zu %s", at, cf_log_type_name(rec->type),
		       rec->len + CF_LOG_REC_HDR, what);
	else
		printf("%s  %-10s len %zu", at, cf_log_type_name(rec->type), rec->len + CF_LOG_REC_HDR);
	if (rc != COFFER_OK) {
		printf("  (malformed: %s)", coffer_error_last()->message);
		coffer_error_clear();
	}
	if (rec->flags)
		printf("  flags 0x%04x", rec->flags);
	putchar('\n');
}

struct gen_counts {
	uint32_t gen;
	uint64_t records, by_type[CF_LOG_TYPE_MAX + 1];
	uint32_t end_off; /* where its last record ended */
};

static void print_counts(const struct gen_counts *c)
{
	printf("%010u  %llu record%s", c->gen, (unsigned long long)c->records,
	       c->records == 1 ? "" : "s");
	for (unsigned t = CF_LOG_TYPE_MIN; t <= CF_LOG_TYPE_MAX; t++)
		if (c->by_type[t])
			printf(", %llu %s", (unsigned long long)c->by_type[t],
			       cf_log_type_name((uint16_t)t));
	if (c->end_off)
		printf("; used up to offset %u", c->end_off);
	putchar('\n');
}

/* Show generations up to and including GEN that have not been shown yet. */
static int advance_to(const char *logdir, uint32_t gen, uint32_t *shown, int summary,
		      struct gen_counts *c)
{
	while (*shown < gen) {
		if (summary && c->gen)
			print_counts(c);
		(*shown)++;
		memset(c, 0, sizeof *c);
		c->gen = *shown;
		if (!summary)
			CF_RET(show_gen(logdir, *shown));
	}
	return COFFER_OK;
}

static int parse_gen(const char *text, uint32_t *gen)
{
	char *end;
	unsigned long long v = strtoull(text, &end, 10);
	if (*text < '0' || *text > '9' || *end || v == 0 || v > CF_LOG_GEN_MAX)
		return cli_usage_error("dump logs", "--from needs a generation number from 1 to %u, "
				       "not '%s'", CF_LOG_GEN_MAX, text);
	*gen = (uint32_t)v;
	return COFFER_OK;
}

static int dump_logs(int argc, char **argv)
{
	static const struct option opts[] = {
		{"from", required_argument, NULL, 'f'},
		{"summary", no_argument, NULL, 's'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	uint32_t from = 0, shown;
	int c, summary = 0, rc;
	char logdir[PATH_MAX], where_text[24];
	cf_log_reader *r = NULL;
	cf_log_rec rec;
	struct gen_counts counts = {0};
	opterr = 0;
	optind = 0;
	while ((c = getopt_long(argc, argv, "f:sh", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			CF_RET(parse_gen(optarg, &from));
			break;
		case 's':
			summary = 1;
			break;
		case 'h':
			fputs(dump_usage, stdout);
			return COFFER_OK;
		default:
			return cli_usage_error("dump logs", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("dump logs", "give exactly one data directory (coffer dump logs DIR)");
	CF_RET(cf_path_join(logdir, sizeof logdir, argv[optind], "log"));
	CF_RET(cf_log_reader_open(&r, logdir, NULL, from ? CF_LSN(from, 0) : 0));
	shown = cf_log_reader_header(r)->generation - 1; /* the start generation is next */
	while ((rc = cf_log_reader_next(r, &rec)) == COFFER_OK) {
		CF_GO(rc, advance_to(logdir, CF_LSN_GEN(rec.lsn), &shown, summary, &counts));
		counts.records++;
		counts.by_type[rec.type]++;
		counts.end_off = CF_LSN_OFF(rec.end);
		if (!summary)
			print_record(&rec);
	}
	if (rc != COFFER_E_NOT_FOUND) {
		if (summary && counts.gen)
			print_counts(&counts);
		goto err;
	}
	coffer_error_clear();
	cf_lsn where;
	int torn = cf_log_reader_torn(r, &where);
	CF_GO(rc, advance_to(logdir, CF_LSN_GEN(where), &shown, summary, &counts));
	if (summary)
		print_counts(&counts);
	lsn_text(where, where_text);
	if (torn)
		printf("end of log at %s: torn (the record there is incomplete or damaged; "
		       "recovery ends the log there)\n", where_text);
	else
		printf("end of log at %s: clean\n", where_text);
	rc = COFFER_OK;
err:
	cf_log_reader_close(r);
	return rc;
}

/* ---- dispatch ---- */

struct dump_subject {
	const char *name;
	int (*run)(int argc, char **argv); /* argv[0] = the subject */
};

static const struct dump_subject subjects[] = {
	{"logs", dump_logs},
	{"header", dump_header},         /* cmd_dump_store.c */
	{"checkpoint", dump_checkpoint}, /* cmd_dump_store.c */
};

int cmd_dump(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	if (argc < 2) {
		fputs(dump_usage, stderr);
		return cli_usage_error("dump", "name what to dump (logs) and the data directory");
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		fputs(dump_usage, stdout);
		return COFFER_OK;
	}
	for (size_t i = 0; i < sizeof subjects / sizeof subjects[0]; i++)
		if (strcmp(subjects[i].name, argv[1]) == 0)
			return subjects[i].run(argc - 1, argv + 1);
	return cli_usage_error("dump", "unknown subject '%s' (known: header, logs, checkpoint)", argv[1]);
}
