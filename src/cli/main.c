/*
 * main.c - the coffer command: global options and subcommand dispatch.
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/err.h"

static const char usage_text[] =
	"usage: coffer [--server ADDR] [--tls-ca FILE] [--password-file FILE] COMMAND ...\n"
	"\n"
	"commands:\n"
	"  explain CODE|NAME|EVENT-ID   print the catalog entry of an error or event\n"
	"  explain --list               list every error code and event id, code first\n"
	"  events (--data DIR | --server ADDR) [--id N] [--source S] [--since TIME] [--json]\n"
	"                               list events from a store's event log or a server's\n"
	"  backup [--type full|incremental|differential|copy] -o OUT [--format file|dir]\n"
	"         [--compress zstd[:LEVEL]|none] [--quiet] [--json]\n"
	"                               take an online backup from cofferd\n"
	"  check DIR                    offline check: page checksums, tree structure\n"
	"  recover DIR [--until TIME|LOGPOS]  offline (hard) recovery\n"
	"  restore SET... --target DIR [--until TIME|LOGPOS] [--no-recover]\n"
	"                               restore a full set and its incrementals (or one\n"
	"                               differential) into a new store, then recover it\n"
	"  verify SET...                check every block, digest and the chain of sets\n"
	"  list SET                     the catalog of a backup set\n"
	"  dump header|checkpoint|logs DIR    dump the header, checkpoint or log\n"
	"  dump logs DIR [--from GEN] [--summary]\n"
	"                               print the log generations of a store, offline\n"
	"  status [--raw]               the server: log, checkpoint, backup running, last backups\n"
	"\n"
	"ADDR is unix:PATH or HOST:PORT; the default is $COFFER_SERVER, else\n"
	COFFER_DEFAULT_SERVER ". COFFER_PASSWORD in the environment gives the password.\n"
	"On failure coffer prints 'coffer: error: MESSAGE (NAME)' and exits with the\n"
	"error's code (see 'coffer explain --list').\n";

struct command {
	const char *name;
	int (*run)(struct cli *, int, char **);
};

static const struct command commands[] = {
	{"explain", cmd_explain},
	{"events", cmd_events},
	{"dump", cmd_dump},
	{"check", cmd_check},
	{"backup", cmd_backup},
	{"recover", cmd_recover},
	{"verify", cmd_verify},
	{"list", cmd_list},
	{"restore", cmd_restore},
	{"status", cmd_status},
};

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	return CF_ERROR(COFFER_E_USAGE, NULL, "%s%s%s", cmd ? cmd : "", cmd ? ": " : "", buf);
}

int main(int argc, char **argv)
{
	struct cli cli = {0};
	static const struct option opts[] = {
		{"server", required_argument, NULL, 's'},
		{"tls-ca", required_argument, NULL, 'c'},
		{"password-file", required_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, rc;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			cli.server = optarg;
			break;
		case 'c':
			cli.tls_ca = optarg;
			break;
		case 'p':
			cli.password_file = optarg;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		default:
			rc = cli_usage_error(NULL, "unknown option '%s'; see 'coffer --help'",
					     argv[optind - 1]);
			coffer_error_print(stderr, "coffer", coffer_error_last());
			return rc;
		}
	}
	if (optind >= argc) {
		fputs(usage_text, stderr);
		rc = cli_usage_error(NULL, "no command given");
		coffer_error_print(stderr, "coffer", coffer_error_last());
		return rc;
	}
	const char *name = argv[optind];
	int sub_argc = argc - optind;
	char **sub_argv = argv + optind;
	if (cli.server == NULL)
		cli.server = getenv("COFFER_SERVER");
	if (cli.server == NULL || *cli.server == '\0')
		cli.server = COFFER_DEFAULT_SERVER;
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		if (strcmp(commands[i].name, name) != 0)
			continue;
		optind = 0; /* glibc: 0 re-initializes getopt for the subcommand */
		coffer_error_clear();
		rc = commands[i].run(&cli, sub_argc, sub_argv);
		if (rc != COFFER_OK) {
			const coffer_error *e = coffer_error_last();
			if (e->code != rc) /* a path forgot to fill in the record */
				CF_ERROR(rc, NULL, "%s failed", name);
			coffer_error_print(stderr, "coffer", coffer_error_last());
		}
		fflush(stdout);
		return rc;
	}
	rc = cli_usage_error(NULL, "unknown command '%s'; see 'coffer --help'", name);
	coffer_error_print(stderr, "coffer", coffer_error_last());
	return rc;
}
