/*
 * srv_loop.c - the event loop: listeners, connections, RESP I/O, TLS,
 * batching and shutdown. One thread; it never blocks on a peer and never
 * calls the engine.
 *
 * A connection's life (all edge-triggered epoll; readable/writable record
 * the readiness last seen, cleared when a call says EAGAIN or WANT_*):
 *
 *   accept -> [reject?] error line queued, closing (protected mode, too
 *             many clients)
 *   read   -> only while idle (no job in flight), with less than
 *             SRV_OUT_SOFT bytes left to send and fewer than SRV_BATCH_*
 *             commands parsed; so a client that does not read its replies
 *             stops being read, and its requests stay in the kernel
 *   parse  -> complete commands go to the pending list (before AUTH one
 *             command per batch, with the small unauthenticated limits)
 *   dispatch -> idle and something pending: the pending commands (at most
 *             SRV_BATCH_CMDS / SRV_BATCH_BYTES) become one job for the
 *             workers; the connection is busy until it comes back
 *   done   -> the job's replies are queued, commands it did not run go
 *             back to the front of the pending list, then write, read,
 *             dispatch again
 *   close  -> after QUIT, a protocol error (its reply sent after the
 *             replies of the commands before it), EOF with nothing left,
 *             an I/O error, or shutdown. A busy connection is only marked
 *             dead; it is freed when its job comes back.
 *
 * Deadlines (struct srv_limits, cofferd --handshake-timeout, --request-timeout,
 * --timeout). A connection has three fields, set in O(1) where it reads or
 * sends, and a sweep (check_deadlines) walks the connections when the
 * earliest deadline it saw last time has come, at least every SWEEP_MAX_US
 * and at most every SWEEP_MIN_US; the loop's epoll timeout is the time to
 * that sweep. A connection with a job in flight, or closing, is never cut.
 *
 *   handshake  a TCP connection with TLS or a password must finish the TLS
 *              handshake and AUTH within handshake_timeout of the connect
 *              (absolute: trickling bytes does not extend it, and before
 *              AUTH every request is small, see SRV_UNAUTH_*)
 *   request    once authenticated, a command partly received must be
 *              complete within request_timeout of its first byte, plus one
 *              second per SRV_REQUEST_MIN_RATE bytes received (a slowloris
 *              is cut, a large value over a slow link is not); the clock
 *              restarts while we, not the peer, hold the connection up (a
 *              job in flight, replies not yet read, commands waiting)
 *   idle       once authenticated, nothing received and nothing sent for
 *              idle_timeout (Redis's `timeout`; default 0: never)
 *
 * A closed connection is event 1013 (PEER, REASON: handshake, auth,
 * request or idle; srv_event_async limits them to 10 a second). A peer
 * that can still read a line (no TLS, or the handshake done) gets
 * "-ERR ... (COFFER_E_TIMEOUT)" first, except at the idle timeout, which
 * closes quietly as Redis does (a client library reconnects). Backup
 * sessions have left the loop (conn_detach): none of this applies to them;
 * their stream's own timeout (no progress for 60 s) finds a vanished client.
 *
 * Shutdown (srv_loop_stop): close the listeners and remove their sockets;
 * connections with a job in flight get its replies, pending commands get
 * one "server is shutting down" error; every connection is closed once its
 * output is sent, at the latest after SHUTDOWN_GRACE; the loop ends when no
 * connection and no job is left.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>

#include "common/err.h"
#include "common/os.h"
#include "server/srv.h"
#include "server/srv_backup.h"

#define MAX_LISTENERS (SRV_MAX_LISTEN * 4)
#define SHUTDOWN_GRACE_US (5 * 1000000LL)
#define CLOSE_GRACE_US (10 * 1000000LL)
#define REJECT_GRACE_US (5 * 1000000LL)
#define LINGER_US (2 * 1000000LL)
#define SWEEP_MAX_US (1000000LL)
#define SWEEP_MIN_US (50 * 1000LL)

struct listener {
	int fd;
	enum conn_kind kind;
	int tls;
	int port;
	char text[600];   /* as printed: unix:/path or host:port */
	char path[110];   /* Unix socket path (sun_path: at most 107 bytes) */
	dev_t dev;
	ino_t ino;
};

struct srv_loop {
	struct srv *s;
	int epfd, done_fd, stop_fd, reserve_fd;
	pthread_t thread;
	int started;
	struct listener lst[MAX_LISTENERS];
	int nlst;
	struct conn *conns;
	struct conn *grave;  /* closed, freed after the current batch of events */
	struct job *sub_head, *sub_tail; /* dispatched, submitted together */
	size_t nconns, inflight;
	pthread_mutex_t done_mu;
	struct job *done_head, *done_tail;
	int done_signaled;
	int stopping;
	int64_t stop_deadline;
	uint64_t next_id;
	struct parse_limits lim, lim_unauth;
	int64_t now_us;        /* monotonic, when the current round of events began */
	int64_t next_sweep_us; /* check_deadlines runs then */
	int64_t hs_us, req_us, idle_us; /* the deadlines (0: none) */
};

static void conn_pump(struct srv_loop *L, struct conn *c);

/* ---- listeners ---- */

static int listen_error(const char *addr, const char *what)
{
	int err = errno;
	return CF_ERROR(COFFER_E_LISTEN, CF_OBJ(.file = addr, .sys_errno = err), "cannot %s %s: %s", what, addr,
			strerror(err));
}

static int add_listener(struct srv_loop *L, int fd, enum conn_kind kind, const char *text, int port)
{
	if (L->nlst == MAX_LISTENERS) {
		close(fd);
		return CF_ERROR(COFFER_E_USAGE, NULL, "too many listening sockets (at most %d)", MAX_LISTENERS);
	}
	struct listener *l = &L->lst[L->nlst++];
	memset(l, 0, sizeof *l);
	l->fd = fd;
	l->kind = kind;
	l->port = port;
	l->tls = kind == CONN_TCP && L->s->tls != NULL;
	snprintf(l->text, sizeof l->text, "%s", text);
	return COFFER_OK;
}

static int open_unix(struct srv_loop *L, const char *path)
{
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	if (path[0] == 0 || strlen(path) >= sizeof sa.sun_path)
		return CF_ERROR(COFFER_E_BAD_ADDRESS, CF_OBJ(.file = path),
				"Unix socket path '%s' is empty or longer than %zu bytes", path, sizeof sa.sun_path - 1);
	memcpy(sa.sun_path, path, strlen(path));
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return CF_ERROR(COFFER_E_LISTEN, CF_OBJ(.file = path),
					"cannot listen on unix:%s: the path exists and is not a socket", path);
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0) {
			close(probe);
			return CF_ERROR(COFFER_E_LISTEN, CF_OBJ(.file = path),
					"cannot listen on unix:%s: another server is listening there", path);
		}
		if (probe >= 0)
			close(probe);
		unlink(path); /* a stale socket of a server that is gone */
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return listen_error(path, "create a socket for");
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int rc = listen_error(path, "bind");
		close(fd);
		return rc;
	}
	/* Owner and group only; the group is the backup operators' when we
	 * may hand it to them, so that they can connect. */
	chmod(path, 0660);
	if (L->s->have_backup_group && chown(path, (uid_t)-1, L->s->backup_gid) != 0)
		fprintf(stderr,
			"cofferd: note: cannot give %s to group %s (%s); backup operators who are not in "
			"the socket's group cannot connect\n",
			path, L->s->cfg->backup_group ? L->s->cfg->backup_group : "coffer-backup", strerror(errno));
	if (listen(fd, SOMAXCONN) < 0) {
		int rc = listen_error(path, "listen on");
		close(fd);
		unlink(path);
		return rc;
	}
	char text[600];
	snprintf(text, sizeof text, "unix:%s", path);
	CF_RET(add_listener(L, fd, CONN_UNIX, text, 0));
	struct listener *l = &L->lst[L->nlst - 1];
	snprintf(l->path, sizeof l->path, "%s", path);
	if (stat(path, &st) == 0) {
		l->dev = st.st_dev;
		l->ino = st.st_ino;
	}
	if (L->s->unix_path[0] == 0)
		snprintf(L->s->unix_path, sizeof L->s->unix_path, "%s", path);
	return COFFER_OK;
}

static int open_tcp(struct srv_loop *L, const char *addr)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	if (colon == NULL || colon == addr || colon[1] == 0)
		return CF_ERROR(COFFER_E_BAD_ADDRESS, NULL,
				"cannot parse listen address '%s': use unix:PATH, HOST:PORT or [IPV6]:PORT", addr);
	size_t hl = (size_t)(colon - addr);
	if (addr[0] == '[') {
		if (hl < 2 || addr[hl - 1] != ']')
			return CF_ERROR(COFFER_E_BAD_ADDRESS, NULL, "cannot parse listen address '%s'", addr);
		hl -= 2;
		if (hl >= sizeof host)
			return CF_ERROR(COFFER_E_BAD_ADDRESS, NULL, "host name too long in '%s'", addr);
		memcpy(host, addr + 1, hl);
	} else {
		if (hl >= sizeof host)
			return CF_ERROR(COFFER_E_BAD_ADDRESS, NULL, "host name too long in '%s'", addr);
		memcpy(host, addr, hl);
	}
	host[hl] = 0;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || port < 0 || port > 65535)
		return CF_ERROR(COFFER_E_BAD_ADDRESS, NULL, "port '%s' in '%s' is not a number 0..65535", colon + 1,
				addr);
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	int any = hl == 0 || strcmp(host, "*") == 0;
	int g = getaddrinfo(any ? NULL : host, colon + 1, &hints, &res);
	if (g != 0)
		return CF_ERROR(COFFER_E_LISTEN, NULL, "cannot listen on %s: %s", addr, gai_strerror(g));
	/* Every address the name has (both families for "*"); with port 0
	 * the first bind chooses the port and the others take the same. */
	int n = 0, rc = COFFER_OK, chosen = (int)port;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		uint16_t nport = htons((uint16_t)chosen);
		if (ai->ai_family == AF_INET)
			memcpy((char *)ai->ai_addr + offsetof(struct sockaddr_in, sin_port), &nport, sizeof nport);
		else if (ai->ai_family == AF_INET6)
			memcpy((char *)ai->ai_addr + offsetof(struct sockaddr_in6, sin6_port), &nport, sizeof nport);
		else
			continue;
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			if (rc == COFFER_OK)
				rc = listen_error(addr, "create a socket for");
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
			int err = errno;
			if (rc == COFFER_OK || err == EADDRINUSE) {
				errno = err;
				rc = listen_error(addr, "listen on");
			}
			close(fd);
			if (err == EADDRINUSE || err == EACCES)
				break; /* somebody else has it: do not start half-listening */
			continue; /* e.g. no IPv6 on this host: the other addresses may do */
		}
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		char ip[INET6_ADDRSTRLEN] = "?";
		int p = chosen;
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
			if (ss.ss_family == AF_INET) {
				struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
				inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
				p = ntohs(s4->sin_port);
			} else {
				struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
				inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
				p = ntohs(s6->sin6_port);
			}
		}
		chosen = p;
		char text[600];
		snprintf(text, sizeof text, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, p);
		int r2 = add_listener(L, fd, CONN_TCP, text, p);
		if (r2) {
			rc = r2;
			break;
		}
		if (L->s->tcp_port == 0)
			L->s->tcp_port = p;
		n++;
	}
	if (n > 0 && rc != COFFER_OK) {
		const coffer_error *e = coffer_error_last();
		if (e->sys_errno != EADDRINUSE && e->sys_errno != EACCES && e->code == COFFER_E_LISTEN) {
			fprintf(stderr, "cofferd: note: %s\n", e->message);
			rc = COFFER_OK;
		}
	}
	if (res)
		freeaddrinfo(res);
	if (rc == COFFER_OK && n == 0)
		rc = CF_ERROR(COFFER_E_LISTEN, NULL, "cannot listen on %s: no usable address", addr);
	return rc;
}

static int tls_error(const char *what, const char *file)
{
	char buf[256] = "unknown reason";
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, buf, sizeof buf);
	ERR_clear_error();
	return CF_ERROR(COFFER_E_TLS, CF_OBJ(.file = file), "cannot %s \"%s\": %s", what, file, buf);
}

static int tls_open(struct srv *s)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
		return tls_error("create a TLS context for", s->cfg->tls_cert);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				      SSL_MODE_RELEASE_BUFFERS);
	/* Kernel TLS when the kernel has it (CONFIG_TLS; OpenSSL falls back to
	 * its own record layer, silently, when it has not). */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_ENABLE_KTLS);
	/* TLS 1.3: AES-128-GCM first (AES-NI/VAES, 10 rounds against 14 for
	 * AES-256: the backup stream's cost), ChaCha20 for peers without AES. */
	SSL_CTX_set_ciphersuites(ctx, CF_TLS13_SUITES);
	int rc = COFFER_OK;
	if (SSL_CTX_use_certificate_chain_file(ctx, s->cfg->tls_cert) != 1)
		rc = tls_error("load the TLS certificate", s->cfg->tls_cert);
	else if (SSL_CTX_use_PrivateKey_file(ctx, s->cfg->tls_key, SSL_FILETYPE_PEM) != 1)
		rc = tls_error("load the TLS private key", s->cfg->tls_key);
	else if (SSL_CTX_check_private_key(ctx) != 1)
		rc = tls_error("use the TLS private key (it does not match the certificate)", s->cfg->tls_key);
	if (rc) {
		SSL_CTX_free(ctx);
		return rc;
	}
	s->tls = ctx;
	return COFFER_OK;
}

static void close_listeners(struct srv_loop *L)
{
	for (int i = 0; i < L->nlst; i++) {
		struct listener *l = &L->lst[i];
		if (l->fd < 0)
			continue;
		close(l->fd);
		l->fd = -1;
		if (l->kind == CONN_UNIX && l->path[0]) {
			/* Only our own socket: a later server may have replaced it. */
			struct stat st;
			if (lstat(l->path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
				unlink(l->path);
		}
	}
}

int srv_loop_open(struct srv *s)
{
	struct srv_loop *L = calloc(1, sizeof *L);
	if (L == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the event loop");
	L->s = s;
	L->epfd = L->done_fd = L->stop_fd = L->reserve_fd = -1;
	pthread_mutex_init(&L->done_mu, NULL);
	s->loop = L;
	const struct srv_limits *lim = &s->cfg->lim;
	L->lim = (struct parse_limits){lim->max_bulk, lim->max_args, lim->max_inline, lim->max_query};
	L->lim_unauth = (struct parse_limits){SRV_UNAUTH_MAX_BULK, SRV_UNAUTH_MAX_ARGS, lim->max_inline,
					      SRV_UNAUTH_MAX_BULK * SRV_UNAUTH_MAX_ARGS};
	L->hs_us = (int64_t)lim->handshake_timeout * 1000000;
	L->req_us = (int64_t)lim->request_timeout * 1000000;
	L->idle_us = (int64_t)lim->idle_timeout * 1000000;
	L->now_us = srv_mono_us();
	L->next_sweep_us = L->now_us + SWEEP_MAX_US;
	int rc = COFFER_OK;
	if (s->cfg->tls_cert)
		CF_GO(rc, tls_open(s));
	L->epfd = epoll_create1(EPOLL_CLOEXEC);
	L->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	L->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	L->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (L->epfd < 0 || L->done_fd < 0 || L->stop_fd < 0) {
		rc = cf_error_sys("create the event loop's descriptors", NULL, -1);
		goto err;
	}
	for (int i = 0; i < s->cfg->nlisten; i++) {
		const char *a = s->cfg->listen[i];
		if (strncmp(a, "unix:", 5) == 0)
			CF_GO(rc, open_unix(L, a + 5));
		else
			CF_GO(rc, open_tcp(L, a));
	}
	struct epoll_event ev = {.events = EPOLLIN};
	ev.data.ptr = &L->done_fd;
	epoll_ctl(L->epfd, EPOLL_CTL_ADD, L->done_fd, &ev);
	ev.data.ptr = &L->stop_fd;
	epoll_ctl(L->epfd, EPOLL_CTL_ADD, L->stop_fd, &ev);
	for (int i = 0; i < L->nlst; i++) {
		ev.data.ptr = &L->lst[i];
		if (epoll_ctl(L->epfd, EPOLL_CTL_ADD, L->lst[i].fd, &ev) < 0) {
			rc = cf_error_sys("watch a listening socket", L->lst[i].text, -1);
			goto err;
		}
	}
	return COFFER_OK;
err: {
	coffer_error saved = *coffer_error_last();
	close_listeners(L);
	*(coffer_error *)coffer_error_last() = saved;
}
	return rc;
}

void srv_loop_describe(struct srv *s, char *out, size_t cap)
{
	struct srv_loop *L = s->loop;
	size_t n = 0;
	out[0] = 0;
	for (int i = 0; L && i < L->nlst && n < cap; i++) {
		int k = snprintf(out + n, cap - n, "%s%s%s", i ? " " : "", L->lst[i].text,
				 L->lst[i].tls ? "(tls)" : "");
		if (k > 0)
			n += (size_t)k;
	}
}

/* ---- connections ---- */

static size_t out_left(const struct conn *c)
{
	return c->out.bytes - c->out_off;
}

static void pending_free(struct conn *c)
{
	struct cmd *q = c->pend_head;
	while (q) {
		struct cmd *n = q->next;
		cmd_free(q);
		q = n;
	}
	c->pend_head = c->pend_tail = NULL;
	c->npend = c->pend_bytes = 0;
}

static void conn_free(struct conn *c)
{
	free(c->in.buf);
	resp_parser_free(&c->ps);
	pending_free(c);
	rb_free(&c->out);
	srv_conn_multi_clear(c);
	free(c->name);
	free(c->perr);
	free(c);
}

/* A closed connection may still appear in the batch of events being
 * handled: free it only after the batch. */
static void conn_bury(struct srv_loop *L, struct conn *c)
{
	c->next = L->grave;
	L->grave = c;
}

static void free_grave(struct srv_loop *L)
{
	while (L->grave) {
		struct conn *c = L->grave;
		L->grave = c->next;
		conn_free(c);
	}
}

static void conn_close(struct srv_loop *L, struct conn *c)
{
	if (c->dead)
		return;
	if (c->ssl) {
		SSL_shutdown(c->ssl); /* one try: a close_notify if it fits */
		SSL_free(c->ssl);
		c->ssl = NULL;
		ERR_clear_error();
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->dead = 1;
	if (c->prev)
		c->prev->next = c->next;
	else
		L->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	L->nconns--;
	atomic_fetch_sub(&L->s->nconns, 1);
	c->prev = c->next = NULL;
	if (!c->busy)
		conn_bury(L, c);
}

static void queue_line(struct conn *c, const char *line, size_t n)
{
	rb_add(&c->out, line, n);
}

/* Send an error line (after what is queued) and close once it is out. */
static void conn_fail(struct conn *c, const char *line, size_t n)
{
	queue_line(c, line, n);
	c->closing = 1;
	c->close_deadline_us = srv_mono_us() + CLOSE_GRACE_US;
	pending_free(c);
}

static int is_loopback(const struct sockaddr_storage *ss)
{
	if (CF_INJECT("server.peer_remote"))
		return 0; /* tests: treat every TCP peer as remote */
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr))
			return 1;
		if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr))
			return a->sin6_addr.s6_addr[12] == 127;
	}
	return 0;
}

static void addr_text(const struct sockaddr_storage *ss, char *out, size_t cap)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
		port = ntohs(a->sin_port);
		snprintf(out, cap, "%s:%d", ip, port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
		port = ntohs(a->sin6_port);
		snprintf(out, cap, "[%s]:%d", ip, port);
	} else {
		snprintf(out, cap, "?");
	}
}

static void new_conn(struct srv_loop *L, struct listener *l, int fd, struct sockaddr_storage *ss)
{
	struct srv *s = L->s;
	struct conn *c = calloc(1, sizeof *c);
	if (c == NULL) {
		close(fd);
		return;
	}
	c->id = ++L->next_id;
	c->fd = fd;
	c->kind = l->kind;
	c->lst = l;
	c->proto = 2;
	c->created_us = c->last_cmd_us = srv_now_us();
	c->active_us = L->now_us;
	c->writable = 1;
	snprintf(c->last_cmd, sizeof c->last_cmd, "NULL");
	atomic_fetch_add(&s->st.conns_total, 1);
	c->next = L->conns;
	if (L->conns)
		L->conns->prev = c;
	L->conns = c;
	L->nconns++;
	atomic_fetch_add(&s->nconns, 1);

	char line[512];
	size_t n;
	if (l->kind == CONN_UNIX) {
		struct ucred cr;
		socklen_t cl = sizeof cr;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0) {
			c->uid = cr.uid;
			c->gid = cr.gid;
			c->pid = cr.pid;
			snprintf(c->peer, sizeof c->peer, "uid %ld", (long)cr.uid);
		} else {
			c->uid = (uid_t)-1;
			c->gid = (gid_t)-1;
			snprintf(c->peer, sizeof c->peer, "uid unknown");
		}
		snprintf(c->addr, sizeof c->addr, "%s:0", l->path);
		snprintf(c->laddr, sizeof c->laddr, "%s:0", l->path);
		c->role = c->uid == (uid_t)-1 ? ROLE_NONE : ROLE_UNKNOWN;
		c->authed = 1;
	} else {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
		addr_text(ss, c->addr, sizeof c->addr);
		snprintf(c->peer, sizeof c->peer, "%s", c->addr);
		struct sockaddr_storage la;
		socklen_t ll = sizeof la;
		if (getsockname(fd, (struct sockaddr *)&la, &ll) == 0)
			addr_text(&la, c->laddr, sizeof c->laddr);
		c->authed = s->cfg->password == NULL;
		c->role = c->authed ? ROLE_FULL : ROLE_NONE;
		if (l->tls) {
			c->ssl = SSL_new(s->tls);
			if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
				ERR_clear_error();
				conn_close(L, c);
				return;
			}
			SSL_set_accept_state(c->ssl);
			c->readable = 1;
		}
		if ((c->ssl || !c->authed) && L->hs_us)
			c->hs_deadline_us = L->now_us + L->hs_us;
	}
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET};
	ev.data.ptr = c;
	if (epoll_ctl(L->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		conn_close(L, c);
		return;
	}
	if (L->nconns > s->max_clients) {
		atomic_fetch_add(&s->st.conns_rejected, 1);
		n = resp_error_line(line, sizeof line, NULL, COFFER_E_LIMIT, "max number of clients reached (%zu)",
				    s->max_clients);
		c->reject = 1;
		conn_fail(c, line, n);
		c->close_deadline_us = srv_mono_us() + REJECT_GRACE_US;
	} else if (l->kind == CONN_TCP && s->cfg->password == NULL && !is_loopback(ss)) {
		atomic_fetch_add(&s->st.conns_rejected, 1);
		n = resp_error_line(line, sizeof line, "DENIED", COFFER_E_NOT_LOOPBACK,
				    "Coffer is running in protected mode: without a password (--password-file) "
				    "only loopback clients may connect over TCP; %s was refused",
				    c->addr);
		c->reject = 1;
		conn_fail(c, line, n);
		c->close_deadline_us = srv_mono_us() + REJECT_GRACE_US;
		srv_event_async(s, COFFER_EV_ACCESS_DENIED, "PEER", c->addr, "COMMAND", "connect",
				"%s was refused: remote TCP connection without a password (protected mode)",
				c->addr);
	}
	conn_pump(L, c);
}

static void do_accept(struct srv_loop *L, struct listener *l)
{
	for (int k = 0; k < 128 && !L->stopping; k++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		memset(&ss, 0, sizeof ss);
		int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if ((errno == EMFILE || errno == ENFILE) && L->reserve_fd >= 0) {
				/* Out of descriptors: accept and close at once, so that
				 * the peer learns it instead of hanging in the backlog. */
				close(L->reserve_fd);
				int x = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
				if (x >= 0)
					close(x);
				L->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
				atomic_fetch_add(&L->s->st.conns_rejected, 1);
				continue;
			}
			break; /* EAGAIN, or an error to retry at the next event */
		}
		new_conn(L, l, fd, &ss);
	}
}

/* ---- I/O ---- */

/* A TLS handshake that failed on OpenSSL's side (an alert from the client,
 * or bytes that are not TLS): event 1014 with OpenSSL's reason and what it
 * usually means. A client that connects and goes away says nothing. */
static void tls_handshake_failed(struct srv_loop *L, struct conn *c)
{
	unsigned long err = ERR_peek_error();
	const char *why = err ? ERR_reason_error_string(err) : NULL;
	char reason[256];
	snprintf(reason, sizeof reason, "%s", why ? why : "unknown TLS error");
	const char *gloss = "";
	if (strstr(reason, "unknown ca") || strstr(reason, "bad certificate") ||
	    strstr(reason, "certificate unknown") || strstr(reason, "handshake failure"))
		gloss = ": the client does not trust this server's certificate (its CA, or the names in it)";
	else if (strstr(reason, "wrong version number") || strstr(reason, "http request") ||
		 strstr(reason, "packet length too long") || strstr(reason, "record layer failure"))
		gloss = ": the client does not speak TLS on this port";
	char full[384];
	snprintf(full, sizeof full, "%s%s", reason, gloss);
	srv_event_async(L->s, COFFER_EV_TLS_HANDSHAKE_FAILED, "PEER", c->peer, "REASON", full,
			"the TLS handshake with %s failed: %s; connection closed", c->peer, full);
}

/* Receive into P: > 0 bytes, 0 at EOF, -1 would block, -2 error. */
static ssize_t conn_recv(struct srv_loop *L, struct conn *c, char *p, size_t n)
{
	if (c->ssl) {
		size_t got = 0;
		int r = SSL_read_ex(c->ssl, p, n, &got);
		if (r == 1)
			return (ssize_t)got;
		int e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_SSL && !SSL_is_init_finished(c->ssl))
			tls_handshake_failed(L, c);
		ERR_clear_error();
		if (e == SSL_ERROR_WANT_READ) {
			c->readable = 0;
			return -1;
		}
		if (e == SSL_ERROR_WANT_WRITE) {
			c->writable = 0;
			return -1;
		}
		if (e == SSL_ERROR_ZERO_RETURN)
			return 0;
		return -2;
	}
	for (;;) {
		ssize_t k = read(c->fd, p, n);
		if (k >= 0)
			return k;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			c->readable = 0;
			return -1;
		}
		return -2;
	}
}

static void out_consume(struct conn *c, size_t n)
{
	while (n && c->out.head) {
		struct rchunk *h = c->out.head;
		size_t left = h->len - c->out_off;
		if (n < left) {
			c->out_off += n;
			return;
		}
		n -= left;
		c->out.head = h->next;
		if (c->out.head == NULL)
			c->out.tail = NULL;
		c->out.bytes -= h->len;
		c->out_off = 0;
		if (h->cap == 0)
			free(h->owner);
		free(h);
	}
}

/* Write what is queued: 0 (done or would block), -1 error. */
static int conn_flush(struct srv_loop *L, struct conn *c)
{
	while (c->out.head) {
		size_t sent = 0;
		if (c->ssl) {
			struct rchunk *h = c->out.head;
			int r = SSL_write_ex(c->ssl, h->data + c->out_off, h->len - c->out_off, &sent);
			if (r != 1) {
				int e = SSL_get_error(c->ssl, r);
				ERR_clear_error();
				if (e == SSL_ERROR_WANT_WRITE) {
					c->writable = 0;
					return 0;
				}
				if (e == SSL_ERROR_WANT_READ) {
					c->readable = 0;
					return 0;
				}
				return -1;
			}
		} else {
			struct iovec iov[64];
			int n = 0;
			size_t off = c->out_off;
			for (struct rchunk *h = c->out.head; h && n < 64; h = h->next) {
				iov[n].iov_base = h->data + off;
				iov[n].iov_len = h->len - off;
				off = 0;
				n++;
			}
			ssize_t k = writev(c->fd, iov, n);
			if (k < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK) {
					c->writable = 0;
					return 0;
				}
				return -1;
			}
			sent = (size_t)k;
		}
		atomic_fetch_add_explicit(&L->s->st.net_out, sent, memory_order_relaxed);
		if (sent)
			c->active_us = L->now_us;
		out_consume(c, sent);
	}
	if (c->out.head == NULL)
		c->out_off = 0;
	return 0;
}

static void protocol_error(struct srv_loop *L, struct conn *c)
{
	char line[512];
	size_t n = resp_error_line(line, sizeof line, NULL, c->ps.err_code, "%s", c->ps.err);
	free(c->perr);
	c->perr = malloc(n);
	if (c->perr) {
		memcpy(c->perr, line, n);
		c->perr_len = n;
	}
	c->parse_stop = 1;
	c->eof = 1; /* read nothing more */
	srv_event_async(L->s, COFFER_EV_PROTOCOL_ERROR, "PEER", c->peer, "ERROR", c->ps.err,
			"%s sent invalid protocol data (%s); connection closed", c->peer, c->ps.err);
}

/* Parse what the input buffer holds into the pending list. */
static int parse_input(struct srv_loop *L, struct conn *c)
{
	int got = 0;
	while (!c->parse_stop && c->npend < SRV_BATCH_CMDS && c->pend_bytes < SRV_BATCH_BYTES) {
		struct cmd *cmd = NULL;
		int rc = resp_parse(&c->ps, &c->in, c->authed ? &L->lim : &L->lim_unauth, &cmd);
		if (rc == RESP_MORE)
			break;
		if (rc == RESP_ERROR) {
			protocol_error(L, c);
			return -1;
		}
		cmd->def = cmd_lookup(cmd->argv[0].p, cmd->argv[0].len);
		cmd->next = NULL;
		if (c->pend_tail)
			c->pend_tail->next = cmd;
		else
			c->pend_head = cmd;
		c->pend_tail = cmd;
		c->npend++;
		c->pend_bytes += cmd->bytes;
		got = 1;
		if (!c->authed)
			c->parse_stop = 1; /* AUTH first: it changes the limits */
	}
	if (c->in.r == c->in.w)
		c->in.r = c->in.w = 0;
	/* The request deadline: a command begun and not complete (bytes not
	 * parsed yet, or the parser inside a command). */
	if (c->in.r == c->in.w && !resp_partial(&c->ps)) {
		c->req_start_us = 0;
	} else if (got || c->req_start_us == 0) {
		c->req_start_us = L->now_us;
		c->req_bytes = 0;
	}
	return 0;
}

static int want_read(const struct conn *c)
{
	return !c->eof && !c->closing && !c->busy && !c->dead && !c->reject && !c->parse_stop &&
	       out_left(c) < SRV_OUT_SOFT && c->npend < SRV_BATCH_CMDS && c->pend_bytes < SRV_BATCH_BYTES;
}

/* Read and parse while allowed; returns -1 if the connection was closed. */
static int conn_read(struct srv_loop *L, struct conn *c)
{
	for (int rounds = 0; rounds < 64; rounds++) {
		if (parse_input(L, c) < 0)
			return 0;
		if (!want_read(c) || !c->readable)
			return 0;
		char *p;
		size_t n;
		int big = resp_read_target(&c->ps, &p, &n);
		if (!big) {
			if (!ibuf_room(&c->in)) {
				conn_close(L, c);
				return -1;
			}
			p = c->in.buf + c->in.w;
			n = c->in.cap - c->in.w;
		}
		ssize_t k = conn_recv(L, c, p, n);
		if (k > 0) {
			/* A short read drained the socket: with edge-triggered epoll
			 * the next arrival is a new event (saves a read per request). */
			if ((size_t)k < n && c->ssl == NULL && !c->hup)
				c->readable = 0;
			atomic_fetch_add_explicit(&L->s->st.net_in, (size_t)k, memory_order_relaxed);
			c->active_us = L->now_us;
			c->req_bytes += (size_t)k;
			if (big)
				resp_big_received(&c->ps, (size_t)k);
			else
				c->in.w += (size_t)k;
			continue;
		}
		if (k == 0) {
			c->eof = 1;
			return 0;
		}
		if (k == -1)
			return 0;
		conn_close(L, c);
		return -1;
	}
	return 0;
}

static void shutting_down_reply(struct conn *c)
{
	char line[256];
	size_t n = resp_error_line(line, sizeof line, NULL, COFFER_E_SHUTTING_DOWN,
				   "server is shutting down; the command was not run");
	conn_fail(c, line, n);
}

static void dispatch(struct srv_loop *L, struct conn *c)
{
	if (c->busy || c->dead || c->closing || c->npend == 0 || out_left(c) >= SRV_OUT_SOFT)
		return;
	if (L->stopping) {
		shutting_down_reply(c);
		return;
	}
	size_t n = c->npend < SRV_BATCH_CMDS ? c->npend : SRV_BATCH_CMDS;
	struct job *j = calloc(1, sizeof *j);
	struct cmd **v = calloc(n, sizeof *v);
	if (j == NULL || v == NULL) {
		free(j);
		free(v);
		return; /* try again at the next event */
	}
	size_t k = 0, bytes = 0;
	while (k < n && (k == 0 || bytes < SRV_BATCH_BYTES)) {
		struct cmd *q = c->pend_head;
		c->pend_head = q->next;
		if (c->pend_head == NULL)
			c->pend_tail = NULL;
		q->next = NULL;
		c->npend--;
		c->pend_bytes -= q->bytes;
		bytes += q->bytes;
		v[k++] = q;
	}
	j->kind = JOB_CMDS;
	j->c = c;
	j->cmds = v;
	j->ncmds = k;
	j->bytes = bytes;
	j->rep.proto = c->proto;
	rb_init(&j->rep.rb);
	j->write = job_needs_write(j);
	for (size_t i = 0; i < k && !j->slow; i++)
		j->slow = cmd_is_slow(v[i]->def);
	c->busy = 1;
	L->inflight++;
	/* Submitted with the others of this round (one lock, one wake-up). */
	if (L->sub_tail)
		L->sub_tail->next = j;
	else
		L->sub_head = j;
	L->sub_tail = j;
}

static void submit_round(struct srv_loop *L)
{
	if (L->sub_head) {
		struct job *list = L->sub_head;
		L->sub_head = L->sub_tail = NULL;
		srv_pool_submit_list(L->s, list);
	}
}

/* Everything is sent: close. If the peer may still be sending (we close
 * after an error or QUIT, not at its EOF), half-close first and discard
 * what comes until its EOF (at most LINGER_US): closing with unread input
 * makes TCP answer with a reset, which can destroy our last reply before
 * the peer has read it. */
static void conn_finish(struct srv_loop *L, struct conn *c)
{
	if (c->eof || L->stopping) {
		conn_close(L, c);
		return;
	}
	if (!c->lingering) {
		c->lingering = 1;
		if (c->ssl) {
			SSL_shutdown(c->ssl);
			ERR_clear_error();
		}
		shutdown(c->fd, SHUT_WR);
		c->close_deadline_us = srv_mono_us() + LINGER_US;
		c->readable = 1;
	}
	char buf[16384];
	for (int i = 0; i < 64; i++) {
		ssize_t k = read(c->fd, buf, sizeof buf);
		if (k > 0 || (k < 0 && errno == EINTR))
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->readable = 0;
			return;
		}
		break; /* EOF or an error */
	}
	conn_close(L, c);
}

static void conn_detach(struct srv_loop *L, struct conn *c);

static void conn_pump(struct srv_loop *L, struct conn *c)
{
	if (c->dead)
		return;
	if (c->detach) {
		/* Send "+COFFER-BACKUP", then the session takes the connection. */
		if (c->out.head && (c->writable || (c->ssl && c->readable)) && conn_flush(L, c) < 0) {
			conn_close(L, c);
			return;
		}
		if (c->out.head == NULL)
			conn_detach(L, c);
		return;
	}
	if (c->lingering) {
		if (c->readable)
			conn_finish(L, c);
		return;
	}
	if (c->out.head && (c->writable || (c->ssl && c->readable))) {
		if (conn_flush(L, c) < 0) {
			conn_close(L, c);
			return;
		}
	}
	if (!c->busy && !c->reject) {
		if (conn_read(L, c) < 0)
			return;
		dispatch(L, c);
	}
	if (!c->busy && !c->closing && c->npend == 0) {
		if (c->perr) {
			/* The commands before the bad input have their replies. */
			conn_fail(c, c->perr, c->perr_len);
			free(c->perr);
			c->perr = NULL;
		} else if (c->eof) {
			c->closing = 1;
		}
	}
	if (c->closing && !c->busy && c->out.head == NULL) {
		conn_finish(L, c);
		return;
	}
	/* Something new to send (an error line just queued, a reply). */
	if (c->out.head && c->writable && !c->busy) {
		if (conn_flush(L, c) < 0) {
			conn_close(L, c);
			return;
		}
		if (c->closing && c->out.head == NULL)
			conn_finish(L, c);
	}
}

/* ---- backup sessions ----
 *
 * COFFER.BACKUP hands its connection to a thread of its own, where
 * srv_backup_session() speaks the framed protocol with blocking I/O (each
 * call waits at most the stream's timeout). The loop forgets the
 * connection (it no longer counts against max-clients); the session closes
 * it. At shutdown the sessions see s->stopping between frames and abort
 * with COFFER_E_SHUTTING_DOWN; srv_sessions_stop() waits for them and, after
 * a grace period, cuts the connections of those still blocked. */

struct srv_session {
	struct srv_session *prev, *next;
	struct srv *s;
	struct cf_stream st;
	struct srv_backup_opts opts;
	char who[160];
	pthread_t thread;
};

static void *session_main(void *arg)
{
	struct srv_session *ss = arg;
	struct srv *s = ss->s;
	/* Through srv_recover.c, which may reopen the store meanwhile. */
	srv_recover_backup_session(s, &ss->st, &ss->opts, ss->who);
	coffer_error_clear();
	if (ss->st.ssl) {
		SSL_shutdown(ss->st.ssl);
		SSL_free(ss->st.ssl);
		ERR_clear_error();
	}
	pthread_mutex_lock(&s->sess_mu);
	close(ss->st.fd);
	ss->st.fd = -1;
	if (ss->prev)
		ss->prev->next = ss->next;
	else
		s->sessions = ss->next;
	if (ss->next)
		ss->next->prev = ss->prev;
	s->nsessions--;
	pthread_cond_broadcast(&s->sess_cv);
	pthread_mutex_unlock(&s->sess_mu);
	free(ss);
	return NULL;
}

static void conn_detach(struct srv_loop *L, struct conn *c)
{
	struct srv *s = L->s;
	struct srv_session *ss = calloc(1, sizeof *ss);
	int fl = fcntl(c->fd, F_GETFL);
	if (ss == NULL || fl < 0 || fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		free(ss);
		conn_close(L, c);
		return;
	}
	epoll_ctl(L->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	ss->s = s;
	/* The tighter of the server's limit and the client's RATE; the
	 * server's priority setting (a client cannot raise it). */
	ss->opts.type = c->detach;
	ss->opts.rate = s->cfg->backup_rate;
	if (c->detach_rate && (ss->opts.rate == 0 || c->detach_rate < ss->opts.rate))
		ss->opts.rate = c->detach_rate;
	ss->opts.low_priority = !s->cfg->backup_normal_priority;
	ss->st.fd = c->fd;
	ss->st.ssl = c->ssl;
	if (ss->st.ssl) /* blocking from here: whole frames per write, records in batches */
		cf_stream_tls_bulk(&ss->st);
	ss->st.timeout_ms = 60 * 1000;
	snprintf(ss->st.peer, sizeof ss->st.peer, "%.120s", c->peer);
	if (c->kind == CONN_UNIX)
		snprintf(ss->who, sizeof ss->who, "%.120s (pid %ld)", c->peer, (long)c->pid);
	else
		snprintf(ss->who, sizeof ss->who, "%.120s", c->peer);
	c->fd = -1; /* the session owns descriptor and TLS session now */
	c->ssl = NULL;
	conn_close(L, c);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_mutex_lock(&s->sess_mu);
	ss->next = s->sessions;
	if (s->sessions)
		s->sessions->prev = ss;
	s->sessions = ss;
	s->nsessions++;
	if (pthread_create(&ss->thread, &attr, session_main, ss) != 0) {
		s->sessions = ss->next;
		if (ss->next)
			ss->next->prev = NULL;
		s->nsessions--;
		pthread_mutex_unlock(&s->sess_mu);
		if (ss->st.ssl)
			SSL_free(ss->st.ssl);
		close(ss->st.fd);
		free(ss);
	} else {
		pthread_mutex_unlock(&s->sess_mu);
	}
	pthread_attr_destroy(&attr);
}

void srv_sessions_stop(struct srv *s, int grace_ms)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += grace_ms / 1000;
	until.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&s->sess_mu);
	while (s->nsessions) {
		if (pthread_cond_timedwait(&s->sess_cv, &s->sess_mu, &until) == ETIMEDOUT) {
			/* Still blocked on a peer: cut the connections. */
			for (struct srv_session *ss = s->sessions; ss; ss = ss->next)
				if (ss->st.fd >= 0)
					shutdown(ss->st.fd, SHUT_RDWR);
			while (s->nsessions)
				pthread_cond_wait(&s->sess_cv, &s->sess_mu);
		}
	}
	pthread_mutex_unlock(&s->sess_mu);
}

/* ---- jobs coming back ---- */

void srv_loop_done(struct srv *s, struct job *j)
{
	j->next = NULL;
	srv_loop_done_list(s, j);
}

void srv_loop_done_list(struct srv *s, struct job *list)
{
	struct srv_loop *L = s->loop;
	if (list == NULL)
		return;
	struct job *last = list;
	while (last->next)
		last = last->next;
	pthread_mutex_lock(&L->done_mu);
	if (L->done_tail)
		L->done_tail->next = list;
	else
		L->done_head = list;
	L->done_tail = last;
	int signal = !L->done_signaled;
	L->done_signaled = 1;
	pthread_mutex_unlock(&L->done_mu);
	if (signal) {
		uint64_t one = 1;
		ssize_t k = write(L->done_fd, &one, sizeof one);
		(void)k;
	}
}

static void job_back(struct srv_loop *L, struct job *j)
{
	struct conn *c = j->c;
	L->inflight--;
	c->busy = 0;
	/* The peer waited for us: its clocks start again. */
	c->active_us = L->now_us;
	if (c->req_start_us) {
		c->req_start_us = L->now_us;
		c->req_bytes = 0;
	}
	if (c->dead) {
		job_free(j);
		conn_bury(L, c);
		return;
	}
	rb_splice(&c->out, &j->rep.rb);
	/* Commands the job did not run go back to the front, in order. */
	for (size_t i = j->ncmds; i > j->ndone; i--) {
		struct cmd *q = j->cmds[i - 1];
		j->cmds[i - 1] = NULL;
		if (j->close_after || L->stopping) {
			cmd_free(q);
			continue;
		}
		q->next = c->pend_head;
		c->pend_head = q;
		if (c->pend_tail == NULL)
			c->pend_tail = q;
		c->npend++;
		c->pend_bytes += q->bytes;
	}
	int oom = c->out.oom;
	if (j->detach && !j->close_after && !L->stopping) {
		c->detach = j->detach;
		c->detach_rate = j->detach_rate;
		c->eof = 1;
		pending_free(c);
	}
	if (j->close_after) {
		c->closing = 1;
		c->close_deadline_us = srv_mono_us() + CLOSE_GRACE_US;
		pending_free(c);
	}
	job_free(j);
	c->parse_stop = c->perr != NULL;
	if (oom) {
		conn_close(L, c);
		return;
	}
	if (L->stopping && !c->closing) {
		if (c->npend)
			shutting_down_reply(c);
		else {
			c->closing = 1;
			c->close_deadline_us = srv_mono_us() + CLOSE_GRACE_US;
		}
	}
	conn_pump(L, c);
}

static void take_done(struct srv_loop *L)
{
	uint64_t v;
	ssize_t k = read(L->done_fd, &v, sizeof v);
	(void)k;
	pthread_mutex_lock(&L->done_mu);
	struct job *j = L->done_head;
	L->done_head = L->done_tail = NULL;
	L->done_signaled = 0;
	pthread_mutex_unlock(&L->done_mu);
	while (j) {
		struct job *n = j->next;
		job_back(L, j);
		j = n;
	}
}

/* ---- the loop ---- */

static void begin_stop(struct srv_loop *L)
{
	L->stopping = 1;
	L->stop_deadline = srv_mono_us() + SHUTDOWN_GRACE_US;
	for (int i = 0; i < L->nlst; i++)
		if (L->lst[i].fd >= 0)
			epoll_ctl(L->epfd, EPOLL_CTL_DEL, L->lst[i].fd, NULL);
	close_listeners(L);
	struct conn *c = L->conns;
	while (c) {
		struct conn *n = c->next;
		c->eof = 1;
		c->parse_stop = 1;
		if (!c->busy && !c->closing) {
			if (c->npend)
				shutting_down_reply(c);
			else
				c->closing = 1;
			c->close_deadline_us = srv_mono_us() + CLOSE_GRACE_US;
			conn_pump(L, c);
		}
		c = n;
	}
}

/* ---- deadlines (see the top of this file) ---- */

enum { TO_HANDSHAKE, TO_AUTH, TO_REQUEST, TO_IDLE };

/* The deadline that applies to C now (0: none), and which one. */
static int64_t conn_deadline(struct srv_loop *L, struct conn *c, int *why)
{
	if (c->dead || c->busy || c->closing || c->lingering || c->detach || c->eof || c->reject)
		return 0;
	if (c->hs_deadline_us) {
		int tls_done = c->ssl == NULL || SSL_is_init_finished(c->ssl);
		if (!tls_done || !c->authed) {
			*why = tls_done ? TO_AUTH : TO_HANDSHAKE;
			return c->hs_deadline_us;
		}
		c->hs_deadline_us = 0; /* done: the other deadlines apply from now on */
	}
	int64_t d = 0;
	if (c->req_start_us && L->req_us) {
		if (c->npend || out_left(c) >= SRV_OUT_SOFT) {
			/* We hold it up (replies not read yet, commands waiting):
			 * not the peer's time. */
			c->req_start_us = L->now_us;
			c->req_bytes = 0;
		}
		d = c->req_start_us + L->req_us + (int64_t)(c->req_bytes / SRV_REQUEST_MIN_RATE) * 1000000;
		*why = TO_REQUEST;
	}
	if (L->idle_us && (d == 0 || c->active_us + L->idle_us < d)) {
		d = c->active_us + L->idle_us;
		*why = TO_IDLE;
	}
	return d;
}

/* C missed deadline WHY (due at D): log it, and close C. */
static void conn_expire(struct srv_loop *L, struct conn *c, int why, int64_t d)
{
	static const char *const reason[] = {"handshake", "auth", "request", "idle"};
	const struct srv_limits *lim = &L->s->cfg->lim;
	char what[256], line[512];
	size_t n = 0;
	switch (why) {
	case TO_HANDSHAKE:
		snprintf(what, sizeof what, "did not complete the TLS handshake within %u s of connecting",
			 lim->handshake_timeout);
		break;
	case TO_AUTH:
		snprintf(what, sizeof what, "did not authenticate (AUTH) within %u s of connecting",
			 lim->handshake_timeout);
		n = resp_error_line(line, sizeof line, NULL, COFFER_E_TIMEOUT,
				    "no AUTH within %u s of connecting (cofferd --handshake-timeout); closing the "
				    "connection",
				    lim->handshake_timeout);
		break;
	case TO_REQUEST: {
		long long allowed = (long long)((d - c->req_start_us + 999999) / 1000000);
		snprintf(what, sizeof what, "did not finish sending a command within %lld s (%zu bytes of it received)",
			 allowed, c->req_bytes);
		n = resp_error_line(line, sizeof line, NULL, COFFER_E_TIMEOUT,
				    "the command was not received completely within %lld s (cofferd "
				    "--request-timeout); closing the connection",
				    allowed);
		break;
	}
	default:
		snprintf(what, sizeof what, "was idle for %u s", lim->idle_timeout);
		break;
	}
	srv_event_async(L->s, COFFER_EV_CLIENT_TIMEOUT, "PEER", c->peer, "REASON", reason[why],
			"%s %s; connection closed", c->peer, what);
	atomic_fetch_add(&L->s->st.conns_timed_out, 1);
	c->parse_stop = 1; /* nothing more from this peer */
	if (n == 0) {
		conn_close(L, c);
		return;
	}
	conn_fail(c, line, n);
	conn_pump(L, c);
}

static void check_deadlines(struct srv_loop *L)
{
	int64_t now = L->now_us;
	int force = L->stopping && now >= L->stop_deadline;
	int64_t next = now + SWEEP_MAX_US;
	struct conn *c = L->conns;
	while (c) {
		struct conn *n = c->next;
		int why = 0;
		int64_t d;
		if (force || (c->closing && c->close_deadline_us && now >= c->close_deadline_us))
			conn_close(L, c);
		else if (!L->stopping && (d = conn_deadline(L, c, &why)) != 0) {
			if (now >= d)
				conn_expire(L, c, why, d);
			else if (d < next)
				next = d;
		}
		c = n;
	}
	L->next_sweep_us = next > now + SWEEP_MIN_US ? next : now + SWEEP_MIN_US;
}

static void *loop_main(void *arg)
{
	struct srv_loop *L = arg;
	struct epoll_event evs[256];
	for (;;) {
		int wait_ms = 100;
		if (!L->stopping) {
			int64_t w = L->next_sweep_us - srv_mono_us();
			wait_ms = w <= 0 ? 0 : w >= SWEEP_MAX_US ? (int)(SWEEP_MAX_US / 1000) : (int)((w + 999) / 1000);
		}
		int n = epoll_wait(L->epfd, evs, 256, wait_ms);
		L->now_us = srv_mono_us();
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			uint32_t e = evs[i].events;
			if (p == &L->done_fd) {
				take_done(L);
			} else if (p == &L->stop_fd) {
				uint64_t v;
				ssize_t k = read(L->stop_fd, &v, sizeof v);
				(void)k;
				if (!L->stopping)
					begin_stop(L);
			} else if (p >= (void *)L->lst && p < (void *)(L->lst + L->nlst)) {
				do_accept(L, p);
			} else {
				struct conn *c = p;
				if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
					c->hup = 1; /* read on to the end: no event will follow */
				if (c->ssl || (e & (EPOLLERR | EPOLLHUP))) {
					c->readable = c->writable = 1;
				} else {
					if (e & (EPOLLIN | EPOLLRDHUP))
						c->readable = 1;
					if (e & EPOLLOUT)
						c->writable = 1;
				}
				conn_pump(L, c);
			}
		}
		/* Replies that came back while we handled the events above. */
		if (L->done_head)
			take_done(L);
		submit_round(L);
		free_grave(L);
		L->now_us = srv_mono_us();
		if (L->stopping || L->now_us >= L->next_sweep_us)
			check_deadlines(L);
		if (L->stopping && L->nconns == 0 && L->inflight == 0)
			break;
	}
	return NULL;
}

int srv_loop_start(struct srv *s)
{
	struct srv_loop *L = s->loop;
	if (pthread_create(&L->thread, NULL, loop_main, L) != 0)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "could not start the event loop thread");
	L->started = 1;
	return COFFER_OK;
}

void srv_loop_stop(struct srv *s)
{
	struct srv_loop *L = s->loop;
	if (L == NULL)
		return;
	if (L->started) {
		uint64_t one = 1;
		ssize_t k = write(L->stop_fd, &one, sizeof one);
		(void)k;
		pthread_join(L->thread, NULL);
		L->started = 0;
	}
	close_listeners(L);
	/* Only when the loop never ran can connections remain. */
	while (L->conns)
		conn_close(L, L->conns);
	free_grave(L);
	if (L->epfd >= 0)
		close(L->epfd);
	if (L->done_fd >= 0)
		close(L->done_fd);
	if (L->stop_fd >= 0)
		close(L->stop_fd);
	if (L->reserve_fd >= 0)
		close(L->reserve_fd);
	pthread_mutex_destroy(&L->done_mu);
	if (s->tls)
		SSL_CTX_free(s->tls);
	s->tls = NULL;
	free(L);
	s->loop = NULL;
}
