/*
 * conn.c - connecting to cofferd (see conn.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "cli/conn.h"
#include "common/err.h"
#include "common/os.h"

#define CONNECT_TIMEOUT_MS 10000
#define IO_TIMEOUT_MS 120000

static int read_password(const struct cli *cli, char *out, size_t cap)
{
	out[0] = '\0';
	if (cli->password_file) {
		int fd;
		CF_RET(cf_open(&fd, cli->password_file, O_RDONLY, 0));
		ssize_t n = read(fd, out, cap - 1);
		int e = errno;
		close(fd);
		if (n < 0) {
			errno = e;
			return cf_error_sys("read the password file", cli->password_file, -1);
		}
		out[n] = '\0';
		out[strcspn(out, "\r\n")] = '\0';
		if (out[0] == '\0')
			return CF_ERROR(COFFER_E_USAGE, CF_OBJ(.file = cli->password_file),
					"the password file \"%s\" is empty", cli->password_file);
		return COFFER_OK;
	}
	const char *env = getenv("COFFER_PASSWORD");
	if (env && *env) {
		if (strlen(env) >= cap)
			return CF_ERROR(COFFER_E_USAGE, NULL, "COFFER_PASSWORD is too long");
		strcpy(out, env);
	}
	return COFFER_OK;
}

/* connect() with a deadline on a non-blocking socket, then blocking again. */
static int connect_deadline(int fd, const struct sockaddr *sa, socklen_t len, const char *addr)
{
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	int r = connect(fd, sa, len);
	if (r != 0 && errno == EINPROGRESS) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		r = poll(&p, 1, CONNECT_TIMEOUT_MS);
		if (r == 0)
			return CF_ERROR(COFFER_E_TIMEOUT, CF_OBJ(.peer = addr),
					"connecting to cofferd at %s took longer than %d s", addr,
					CONNECT_TIMEOUT_MS / 1000);
		int err = 0;
		socklen_t el = sizeof err;
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err) {
			errno = err;
			r = -1;
		} else {
			r = 0;
		}
	}
	if (r != 0) {
		int e = errno;
		const char *why = e == ENOENT	       ? " (no such socket: is cofferd running, is the path right?)"
				  : e == ECONNREFUSED ? " (nothing listens there: is cofferd running?)"
				  : e == EACCES	       ? " (no permission on the socket)"
							: "";
		return CF_ERROR(e == EACCES ? COFFER_E_ACCESS_DENIED : COFFER_E_CONNECT,
				CF_OBJ(.peer = addr, .sys_errno = e),
				"cannot connect to cofferd at %s: %s%s", addr, strerror(e), why);
	}
	fcntl(fd, F_SETFL, fl);
	return COFFER_OK;
}

static int tls_setup(struct cf_conn *c, const struct cli *cli, const char *host)
{
	c->ctx = SSL_CTX_new(TLS_client_method());
	if (c->ctx == NULL)
		return CF_ERROR(COFFER_E_TLS, NULL, "cannot create a TLS context");
	SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
	if (SSL_CTX_load_verify_locations(c->ctx, cli->tls_ca, NULL) != 1) {
		char b[256];
		ERR_error_string_n(ERR_get_error(), b, sizeof b);
		return CF_ERROR(COFFER_E_TLS, CF_OBJ(.file = cli->tls_ca),
				"cannot load the CA certificate \"%s\": %s", cli->tls_ca, b);
	}
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	/* Fewer, larger reads: up to CF_TLS_RBUF bytes of records per read(2)
	 * (OpenSSL's default buffer holds one 16 KiB record). */
	SSL_CTX_set_read_ahead(c->ctx, 1);
	SSL_CTX_set_default_read_buffer_len(c->ctx, CF_TLS_RBUF);
	SSL_CTX_set_ciphersuites(c->ctx, CF_TLS13_SUITES);
	SSL_CTX_set_options(c->ctx, SSL_OP_ENABLE_KTLS); /* when the kernel has it */
	c->s.ssl = SSL_new(c->ctx);
	SSL_set_fd(c->s.ssl, c->s.fd);
	struct in6_addr a6;
	struct in_addr a4;
	if (inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1) {
		X509_VERIFY_PARAM *vp = SSL_get0_param(c->s.ssl);
		X509_VERIFY_PARAM_set1_ip_asc(vp, host);
	} else {
		SSL_set_tlsext_host_name(c->s.ssl, host);
		SSL_set1_host(c->s.ssl, host);
	}
	struct pollfd p = {.fd = c->s.fd};
	for (;;) {
		int r = SSL_connect(c->s.ssl);
		if (r == 1) {
			cf_stream_tls_bulk(&c->s); /* a blocking socket from here on */
			return COFFER_OK;
		}
		int e = SSL_get_error(c->s.ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			p.events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
			if (poll(&p, 1, CONNECT_TIMEOUT_MS) <= 0)
				return CF_ERROR(COFFER_E_TIMEOUT, CF_OBJ(.peer = c->s.peer),
						"the TLS handshake with %s did not finish", c->s.peer);
			continue;
		}
		long vr = SSL_get_verify_result(c->s.ssl);
		if (vr != X509_V_OK)
			return CF_ERROR(COFFER_E_TLS, CF_OBJ(.peer = c->s.peer),
					"the server %s presented a certificate that cannot be trusted: %s "
					"(checked against --tls-ca %s)",
					c->s.peer, X509_verify_cert_error_string(vr), cli->tls_ca);
		char b[256];
		ERR_error_string_n(ERR_get_error(), b, sizeof b);
		return CF_ERROR(COFFER_E_TLS, CF_OBJ(.peer = c->s.peer),
				"the TLS handshake with %s failed: %s (does the server use TLS on this port?)",
				c->s.peer, b);
	}
}

int cf_conn_open(struct cf_conn *c, const struct cli *cli)
{
	memset(c, 0, sizeof *c);
	c->s.fd = -1;
	const char *addr = cli->server;
	snprintf(c->s.peer, sizeof c->s.peer, "%s", addr);
	int rc;
	if (strncmp(addr, "unix:", 5) == 0) {
		struct sockaddr_un un = {.sun_family = AF_UNIX};
		if (strlen(addr + 5) == 0 || strlen(addr + 5) >= sizeof un.sun_path)
			return CF_ERROR(COFFER_E_BAD_ADDRESS, CF_OBJ(.peer = addr),
					"the socket path in '%s' is empty or longer than %zu bytes", addr,
					sizeof un.sun_path - 1);
		strcpy(un.sun_path, addr + 5);
		c->s.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (c->s.fd < 0)
			return cf_error_sys("create a socket for", addr, -1);
		CF_GO(rc, connect_deadline(c->s.fd, (struct sockaddr *)&un, sizeof un, addr));
	} else {
		char host[256], port[16];
		const char *colon = strrchr(addr, ':');
		if (colon == NULL || colon == addr || strlen(colon + 1) == 0 || strlen(colon + 1) >= sizeof port)
			return CF_ERROR(COFFER_E_BAD_ADDRESS, CF_OBJ(.peer = addr),
					"'%s' is not an address: use unix:PATH, HOST:PORT or [V6]:PORT", addr);
		size_t hl = (size_t)(colon - addr);
		const char *h = addr;
		if (addr[0] == '[' && hl >= 2 && addr[hl - 1] == ']') {
			h++;
			hl -= 2;
		}
		if (hl >= sizeof host)
			return CF_ERROR(COFFER_E_BAD_ADDRESS, CF_OBJ(.peer = addr), "host name too long in '%s'", addr);
		memcpy(host, h, hl);
		host[hl] = '\0';
		strcpy(port, colon + 1);
		struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
		int g = getaddrinfo(host, port, &hints, &ai);
		if (g != 0)
			return CF_ERROR(COFFER_E_CONNECT, CF_OBJ(.peer = addr), "cannot resolve '%s': %s", host,
					gai_strerror(g));
		rc = COFFER_E_CONNECT;
		for (struct addrinfo *p = ai; p; p = p->ai_next) {
			c->s.fd = socket(p->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (c->s.fd < 0)
				continue;
			rc = connect_deadline(c->s.fd, p->ai_addr, p->ai_addrlen, addr);
			if (rc == COFFER_OK)
				break;
			close(c->s.fd);
			c->s.fd = -1;
		}
		freeaddrinfo(ai);
		if (rc)
			return rc;
		if (cli->tls_ca)
			CF_GO(rc, tls_setup(c, cli, host));
	}
	c->s.timeout_ms = IO_TIMEOUT_MS;
	c->first = 1;
	char pw[512];
	CF_GO(rc, read_password(cli, pw, sizeof pw));
	if (pw[0]) {
		const char *argv[2] = {"AUTH", pw};
		char line[512];
		CF_GO(rc, cf_conn_command(c, 2, argv));
		memset(pw, 0, sizeof pw);
		CF_GO(rc, cf_conn_simple_reply(c, line, sizeof line));
	}
	return COFFER_OK;
err:
	cf_conn_close(c);
	return rc;
}

void cf_conn_close(struct cf_conn *c)
{
	if (c->s.ssl) {
		SSL_shutdown(c->s.ssl);
		SSL_free(c->s.ssl);
		c->s.ssl = NULL;
	}
	if (c->ctx) {
		SSL_CTX_free(c->ctx);
		c->ctx = NULL;
	}
	if (c->s.fd >= 0) {
		close(c->s.fd);
		c->s.fd = -1;
	}
}

static int first_reply_check(struct cf_conn *c, int rc, const char *line);

/* The whole command in one write: a TLS listener that a plain client
 * reached resets the connection after the first bytes, and a command sent
 * in pieces then fails on a later piece with a bare "connection reset"
 * instead of at the reply, where first_reply_check() explains it. */
static int command_write(struct cf_conn *c, int argc, const char *const *argv)
{
	size_t total = 16;
	for (int i = 0; i < argc; i++)
		total += strlen(argv[i]) + 32;
	char small[1024];
	char *buf = total <= sizeof small ? small : malloc(total);
	if (buf == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a command of %zu bytes", total);
	size_t n = (size_t)snprintf(buf, total, "*%d\r\n", argc);
	for (int i = 0; i < argc; i++) {
		size_t l = strlen(argv[i]);
		n += (size_t)snprintf(buf + n, total - n, "$%zu\r\n", l);
		memcpy(buf + n, argv[i], l);
		memcpy(buf + n + l, "\r\n", 2);
		n += l + 2;
	}
	int rc = cf_stream_write(&c->s, buf, n);
	explicit_bzero(buf, n); /* AUTH carries the password */
	if (buf != small)
		free(buf);
	return rc;
}

int cf_conn_command(struct cf_conn *c, int argc, const char *const *argv)
{
	int rc = command_write(c, argc, argv);
	/* A TLS listener resets a plain client: the reset may meet one of the
	 * first request's writes before any reply is read. */
	if (rc == COFFER_E_CONNECTION_LOST)
		rc = first_reply_check(c, rc, "");
	return rc;
}

/* "-ERR text (COFFER_E_NAME)" -> the code and the text. */
static int raise_reply_error(struct cf_conn *c, const char *line)
{
	int code = COFFER_E_PROTOCOL;
	const char *open = strrchr(line, '(');
	if (open && line[strlen(line) - 1] == ')') {
		char name[64];
		size_t n = strlen(open + 1) - 1;
		if (n < sizeof name) {
			memcpy(name, open + 1, n);
			name[n] = '\0';
			int k = coffer_code_lookup(name);
			if (k)
				code = k;
		}
	}
	const char *text = line + 1;
	const char *sp = strchr(text, ' ');
	if (sp && sp - text < 16) /* skip the Redis code word (ERR, DENIED, ...) */
		text = sp + 1;
	char msg[700];
	snprintf(msg, sizeof msg, "%s", text);
	char *tail = strrchr(msg, '(');
	if (tail && code != COFFER_E_PROTOCOL && tail > msg)
		tail[-1] = '\0';
	return CF_ERROR(code, CF_OBJ(.peer = c->s.peer), "%s (reported by cofferd at %s)", msg,
			c->s.peer);
}

/* The first reply on a plain TCP connection: a TLS alert record (0x15) or
 * a connection closed without a word is what a TLS listener does to a client
 * that does not speak TLS. */
static int first_reply_check(struct cf_conn *c, int rc, const char *line)
{
	if (c->s.ssl || !c->first || strncmp(c->s.peer, "unix:", 5) == 0)
		return rc;
	if ((rc == COFFER_OK && (unsigned char)line[0] == 0x15) || rc == COFFER_E_CONNECTION_LOST ||
	    (rc == COFFER_E_PROTOCOL && (unsigned char)line[0] == 0x15))
		return CF_ERROR(COFFER_E_TLS, CF_OBJ(.peer = c->s.peer),
				"cofferd at %s closed the connection at the first request without answering: "
				"it expects TLS on this port; give --tls-ca FILE (the CA of its certificate)",
				c->s.peer);
	return rc;
}

int cf_conn_simple_reply(struct cf_conn *c, char *out, size_t cap)
{
	char line[1024] = "";
	int rc = cf_stream_read_line(&c->s, line, sizeof line);
	rc = first_reply_check(c, rc, line);
	c->first = 0;
	CF_RET(rc);
	if (line[0] == '-')
		return raise_reply_error(c, line);
	if (line[0] != '+')
		return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = c->s.peer),
				"unexpected reply from %s: '%.60s'", c->s.peer, line);
	snprintf(out, cap, "%s", line + 1);
	return COFFER_OK;
}

int cf_conn_bulk_reply(struct cf_conn *c, char **out, size_t *len)
{
	char line[1024] = "";
	int rc = cf_stream_read_line(&c->s, line, sizeof line);
	rc = first_reply_check(c, rc, line);
	c->first = 0;
	CF_RET(rc);
	if (line[0] == '-')
		return raise_reply_error(c, line);
	if (line[0] != '$' && line[0] != '=')
		return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = c->s.peer),
				"unexpected reply from %s: '%.60s'", c->s.peer, line);
	char *end;
	long long n = strtoll(line + 1, &end, 10);
	if (*end || n < 0 || n > (64 << 20))
		return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = c->s.peer), "bad bulk length from %s",
				c->s.peer);
	*out = malloc((size_t)n + 3);
	if (*out == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a reply of %lld bytes", n);
	rc = cf_stream_read(&c->s, *out, (size_t)n + 2);
	if (rc) {
		free(*out);
		return rc;
	}
	(*out)[n] = '\0';
	*len = (size_t)n;
	return COFFER_OK;
}
