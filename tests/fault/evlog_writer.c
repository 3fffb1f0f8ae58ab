/*
 * evlog_writer.c - write events to a store's event log, for the event log's
 * end-to-end and kill tests.
 *
 *   evlog_writer [--id ID] [--count N] [--run TAG] [--message TEXT]
 *                [--max-bytes N] [--keep N] [--system] DATADIR [KEY=VALUE]...
 *
 * Writes N events (default 1) of event id ID (default 1000) with the fields
 * RUN=TAG, N=<i> and the KEY=VALUE pairs given, to DATADIR's event log only
 * (also to the journal/syslog with --system). After each write returns, it
 * prints i on a line of its own and flushes standard output: a line printed
 * is an acknowledged (durable) event, which a test that kills this program
 * with SIGKILL must find again. On failure it prints the error as the
 * programs do and exits with the code.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <coffer/event.h>

static int usage(void)
{
	fputs("usage: evlog_writer [--id ID] [--count N] [--run TAG] [--message TEXT]\n"
	      "                    [--max-bytes N] [--keep N] [--system] DATADIR [KEY=VALUE]...\n",
	      stderr);
	return 220; /* COFFER_E_USAGE */
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"id", required_argument, NULL, 'i'},
		{"count", required_argument, NULL, 'n'},
		{"run", required_argument, NULL, 'r'},
		{"message", required_argument, NULL, 'm'},
		{"max-bytes", required_argument, NULL, 'b'},
		{"keep", required_argument, NULL, 'k'},
		{"system", no_argument, NULL, 's'},
		{NULL, 0, NULL, 0},
	};
	coffer_evlog_options o = COFFER_EVLOG_OPTIONS_INIT;
	const char *run = "0", *message = NULL;
	int id = COFFER_EV_SERVER_STARTED, c;
	unsigned long count = 1;
	o.flags = COFFER_EVLOG_NO_SYSTEM;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'i':
			id = atoi(optarg);
			break;
		case 'n':
			count = strtoul(optarg, NULL, 10);
			break;
		case 'r':
			run = optarg;
			break;
		case 'm':
			message = optarg;
			break;
		case 'b':
			o.max_file_bytes = strtoull(optarg, NULL, 10);
			break;
		case 'k':
			o.keep_files = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 's':
			o.flags = 0;
			break;
		default:
			return usage();
		}
	}
	if (optind >= argc)
		return usage();
	const char *datadir = argv[optind++];
	size_t nextra = (size_t)(argc - optind);
	coffer_evfield *f = calloc(nextra + 2, sizeof *f);
	char **copies = calloc(nextra + 1, sizeof *copies);
	char num[32];
	if (f == NULL || copies == NULL)
		return 2;
	f[0] = (coffer_evfield){"RUN", run};
	f[1] = (coffer_evfield){"N", num};
	for (size_t i = 0; i < nextra; i++) {
		copies[i] = strdup(argv[optind + (int)i]);
		char *eq = copies[i] ? strchr(copies[i], '=') : NULL;
		if (eq == NULL)
			return usage();
		*eq = '\0';
		f[2 + i] = (coffer_evfield){copies[i], eq + 1};
	}

	coffer_evlog *log;
	int rc = coffer_evlog_open(&log, datadir, &o);
	if (rc != 0) {
		coffer_error_print(stderr, "evlog_writer", coffer_error_last());
		return rc;
	}
	for (unsigned long i = 0; i < count; i++) {
		snprintf(num, sizeof num, "%lu", i);
		rc = message ? coffer_event_write(log, id, f, nextra + 2, "%s", message)
			     : coffer_event_write(log, id, f, nextra + 2, NULL);
		if (rc != 0) {
			coffer_error_print(stderr, "evlog_writer", coffer_error_last());
			break;
		}
		printf("%lu\n", i);
		fflush(stdout);
	}
	coffer_evlog_close(log);
	for (size_t i = 0; i < nextra; i++)
		free(copies[i]);
	free(copies);
	free(f);
	return rc;
}
