/*
 * cmd_explain.c - coffer explain CODE|NAME|EVENT-ID | --list
 *
 * Prints the catalog entry of an error code (by number or name) or of an
 * event (by id, 1000 and up, or name), like 'net helpmsg' did for Windows;
 * also c7ff000d, the Exchange code of KB Q245664.
 */
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <coffer/event.h>

#include "cli/cli.h"
#include "common/catalog.h"
#include "common/err.h"

static void print_error(const struct coffer_error_info *e)
{
	printf("%d %s\n", e->code, e->name);
	printf("  message:     %s\n", e->message);
	printf("  explanation: %s\n", e->explanation);
	printf("  remedy:      %s\n", e->remedy);
}

static void print_event(const struct coffer_event_info *e)
{
	printf("event %d %s\n", e->id, e->name);
	printf("  source:      %s\n", e->source);
	printf("  severity:    %s\n", coffer_severity_name(e->severity));
	printf("  message:     %s\n", e->message);
	printf("  explanation: %s\n", e->explanation);
	if (e->remedy[0])
		printf("  remedy:      %s\n", e->remedy);
	printf("  journal:     MESSAGE_ID=%s\n", e->message_id);
}

static void print_list(void)
{
	for (unsigned i = 0; i < coffer_error_table_len; i++)
		printf("%d\t%s\t%s\n", coffer_error_table[i].code, coffer_error_table[i].name,
		       coffer_error_table[i].message);
	for (unsigned i = 0; i < coffer_event_table_len; i++)
		printf("%d\t%s\t%s\n", coffer_event_table[i].id, coffer_event_table[i].name,
		       coffer_event_table[i].message);
}

int cmd_explain(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	static const struct option opts[] = {
		{"list", no_argument, NULL, 'l'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, list = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+lh", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			list = 1;
			break;
		case 'h':
			puts("usage: coffer explain CODE|NAME|EVENT-ID\n"
			     "       coffer explain --list");
			return COFFER_OK;
		default:
			return cli_usage_error("explain", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (list) {
		if (optind != argc)
			return cli_usage_error("explain", "--list takes no argument");
		print_list();
		return COFFER_OK;
	}
	if (argc - optind != 1)
		return cli_usage_error("explain", "give one CODE, NAME or EVENT-ID (or --list)");
	const char *what = argv[optind];
	/* The code of KB Q245664, as an Exchange operator would type it. */
	if (strcasecmp(what, "c7ff000d") == 0 || strcasecmp(what, "0xc7ff000d") == 0 ||
	    strcasecmp(what, "hrCommunicationError") == 0)
		what = "COFFER_E_COMMUNICATION";

	if (isdigit((unsigned char)what[0])) {
		char *end;
		long v = strtol(what, &end, 10);
		if (*end == '\0' && v >= 1000 && v <= 9999) {
			const struct coffer_event_info *ev = coffer_event_info_get((int)v);
			if (ev) {
				print_event(ev);
				return COFFER_OK;
			}
		}
	}
	int code = coffer_code_lookup(what);
	if (code) {
		print_error(coffer_error_info_get(code));
		return COFFER_OK;
	}
	const struct coffer_event_info *ev = coffer_event_info_lookup(what);
	if (ev) {
		print_event(ev);
		return COFFER_OK;
	}
	return CF_ERROR(COFFER_E_NOT_FOUND, NULL,
			"'%s' is neither an error code, an error name nor an event id in the catalog; "
			"'coffer explain --list' lists them all",
			what);
}
