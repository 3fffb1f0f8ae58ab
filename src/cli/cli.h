/*
 * cli.h - shared pieces of the coffer command's subcommands.
 *
 * Each subcommand is one file (cmd_NAME.c) with one entry point
 * int cmd_NAME(struct cli *cli, int argc, char **argv), argv[0] being the
 * subcommand's name. It returns COFFER_OK or a catalog code, having left the
 * detail in the thread's error record (coffer_error_last()); main() prints it
 * as "coffer: error: MESSAGE (NAME)" and exits with the code.
 */
#ifndef COFFER_CLI_H
#define COFFER_CLI_H

#include <coffer/error.h>

struct cli {
	const char *server;        /* --server, $COFFER_SERVER, or the default */
	const char *tls_ca;        /* --tls-ca */
	const char *password_file; /* --password-file */
};

#define COFFER_DEFAULT_SERVER "unix:/run/coffer/cofferd.sock"

int cmd_explain(struct cli *cli, int argc, char **argv);
int cmd_events(struct cli *cli, int argc, char **argv);
int cmd_dump(struct cli *cli, int argc, char **argv);

int cmd_check(struct cli *cli, int argc, char **argv);
int cmd_backup(struct cli *cli, int argc, char **argv);
int cmd_recover(struct cli *cli, int argc, char **argv);
/* backup sets (src/backup/archive.h) */
int cmd_verify(struct cli *cli, int argc, char **argv);
int cmd_list(struct cli *cli, int argc, char **argv);
int cmd_restore(struct cli *cli, int argc, char **argv);
/* the server's state (COFFER.STATUS) */
int cmd_status(struct cli *cli, int argc, char **argv);
/* dump subjects in cmd_dump_store.c; argv[0] = the subject */
int dump_header(int argc, char **argv);
int dump_checkpoint(int argc, char **argv);

/* Raise COFFER_E_USAGE for subcommand CMD with a printf-style message. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
