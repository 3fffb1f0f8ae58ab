/*
 * conn.h - how the coffer command reaches cofferd.
 *
 * The address is unix:PATH, HOST:PORT or [V6]:PORT (--server, else
 * $COFFER_SERVER, else unix:/run/coffer/cofferd.sock). TCP uses TLS when a
 * CA is given (--tls-ca): the server's certificate must chain to it and
 * name the host. The password comes from --password-file or
 * $COFFER_PASSWORD; with one, the connection starts with AUTH.
 * Nothing here depends on the caller's session: no temporary files, no
 * environment besides the two variables above, no terminal.
 */
#ifndef COFFER_CLI_CONN_H
#define COFFER_CLI_CONN_H

#include "backup/proto.h"
#include "cli/cli.h"

struct cf_conn {
	struct cf_stream s;
	SSL_CTX *ctx;
	int first; /* no reply read yet (to recognize a TLS-only listener) */
};

/* Connect and authenticate. Errors: COFFER_E_BAD_ADDRESS, COFFER_E_CONNECT
 * (naming the address and why), COFFER_E_TLS (handshake, certificate),
 * COFFER_E_AUTH_FAILED, COFFER_E_ACCESS_DENIED, COFFER_E_NOT_LOOPBACK,
 * COFFER_E_TIMEOUT, I/O codes reading the password file. */
int cf_conn_open(struct cf_conn *c, const struct cli *cli);
void cf_conn_close(struct cf_conn *c);

/* Send a command (RESP array of bulk strings). */
int cf_conn_command(struct cf_conn *c, int argc, const char *const *argv);
/* Read one reply line: "+..." into OUT (without '+'), or raise a "-..."
 * error reply: the catalog name in parentheses at its end gives the code.
 * Other reply types are COFFER_E_PROTOCOL here. */
int cf_conn_simple_reply(struct cf_conn *c, char *out, size_t cap);
/* Read one bulk string reply (malloc'd, NUL-terminated). */
int cf_conn_bulk_reply(struct cf_conn *c, char **out, size_t *len);

#endif
