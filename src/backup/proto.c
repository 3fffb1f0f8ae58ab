/*
 * proto.c - framing of the backup protocol (format in proto.h).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/err.h>

#include "backup/proto.h"
#include "common/err.h"
#include "common/xxh.h"

static const char MAGIC[4] = {'C', 'B', 'K', '1'};

/* Apply timeout_ms to the socket (once per change). */
static void apply_timeout(struct cf_stream *s)
{
	int want = s->timeout_ms > 0 ? s->timeout_ms : 0;
	if (s->applied_ms == want + 1)
		return;
	struct timeval tv = {.tv_sec = want / 1000, .tv_usec = (want % 1000) * 1000};
	setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(s->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	s->applied_ms = want + 1;
}

static int timed_out(struct cf_stream *s)
{
	return CF_ERROR(COFFER_E_TIMEOUT, CF_OBJ(.peer = s->peer),
			"no progress on the connection to %s for %d ms", s->peer, s->timeout_ms);
}

/* Descriptor-passing reads still wait with poll (rare, small). */
static int wait_fd(struct cf_stream *s, short ev)
{
	if (s->timeout_ms <= 0)
		return COFFER_OK;
	struct pollfd p = {.fd = s->fd, .events = ev};
	for (;;) {
		int r = poll(&p, 1, s->timeout_ms);
		if (r > 0)
			return COFFER_OK;
		if (r == 0)
			return timed_out(s);
		if (errno != EINTR)
			return CF_ERROR(COFFER_E_CONNECTION_LOST, CF_OBJ(.peer = s->peer, .sys_errno = errno),
					"poll on the connection to %s failed: %s", s->peer, strerror(errno));
	}
}

static int tls_error(struct cf_stream *s, const char *op, int r)
{
	int e = SSL_get_error(s->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ||
	    (e == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)))
		return timed_out(s);
	if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0))
		return CF_ERROR(COFFER_E_CONNECTION_LOST, CF_OBJ(.peer = s->peer),
				"the TLS connection to %s closed during %s", s->peer, op);
	char buf[256];
	ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
	ERR_clear_error();
	return CF_ERROR(COFFER_E_TLS, CF_OBJ(.peer = s->peer), "TLS %s with %s failed: %s", op,
			s->peer, buf);
}

int cf_stream_tls_bulk(struct cf_stream *s)
{
	SSL_clear_mode(s->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
	BIO *sock = SSL_get_wbio(s->ssl);
	if (sock == NULL)
		return 0;
#ifdef BIO_get_ktls_send
	if (BIO_get_ktls_send(sock))
		return 1;
#endif
	BIO *buf = BIO_new(BIO_f_buffer());
	if (buf == NULL || BIO_set_write_buffer_size(buf, CF_TLS_WBUF) != 1 || BIO_up_ref(sock) != 1) {
		BIO_free(buf);
		ERR_clear_error();
		return 0; /* records one by one: slower, still right */
	}
	BIO_push(buf, sock);
	SSL_set0_wbio(s->ssl, buf); /* drops the SSL's own reference to SOCK */
	return 0;
}

/* After an SSL_write: push out what the write buffer holds. */
static int tls_flush(struct cf_stream *s)
{
	BIO *w = SSL_get_wbio(s->ssl);
	if (w == NULL || BIO_method_type(w) != BIO_TYPE_BUFFER)
		return COFFER_OK;
	for (;;) {
		errno = 0;
		if (BIO_flush(w) > 0)
			return COFFER_OK;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return timed_out(s);
		ERR_clear_error();
		return CF_ERROR(COFFER_E_CONNECTION_LOST, CF_OBJ(.peer = s->peer, .sys_errno = errno),
				"sending to %s failed: %s", s->peer, errno ? strerror(errno) : "TLS write buffer");
	}
}

int cf_stream_write(struct cf_stream *s, const void *p, size_t n)
{
	const uint8_t *b = p;
	apply_timeout(s);
	while (n > 0) {
		ssize_t w;
		if (s->ssl) {
			int r = SSL_write(s->ssl, b, n > INT32_MAX ? INT32_MAX : (int)n);
			if (r <= 0)
				return tls_error(s, "write", r);
			w = r;
		} else {
			w = send(s->fd, b, n, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					return timed_out(s);
				return CF_ERROR(COFFER_E_CONNECTION_LOST,
						CF_OBJ(.peer = s->peer, .sys_errno = errno),
						"sending to %s failed: %s", s->peer, strerror(errno));
			}
		}
		b += w;
		n -= (size_t)w;
		s->bytes_out += (uint64_t)w;
	}
	return s->ssl ? tls_flush(s) : COFFER_OK;
}

int cf_stream_read(struct cf_stream *s, void *p, size_t n)
{
	uint8_t *b = p;
	apply_timeout(s);
	while (n > 0) {
		ssize_t r;
		if (s->ssl) {
			int x = SSL_read(s->ssl, b, n > INT32_MAX ? INT32_MAX : (int)n);
			if (x <= 0)
				return tls_error(s, "read", x);
			r = x;
		} else {
			r = recv(s->fd, b, n, 0);
			if (r < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					return timed_out(s);
				return CF_ERROR(COFFER_E_CONNECTION_LOST,
						CF_OBJ(.peer = s->peer, .sys_errno = errno),
						"receiving from %s failed: %s", s->peer, strerror(errno));
			}
			if (r == 0)
				return CF_ERROR(COFFER_E_CONNECTION_LOST, CF_OBJ(.peer = s->peer),
						"%s closed the connection", s->peer);
		}
		b += r;
		n -= (size_t)r;
		s->bytes_in += (uint64_t)r;
	}
	return COFFER_OK;
}

int cf_stream_read_line(struct cf_stream *s, char *buf, size_t cap)
{
	size_t n = 0;
	for (;;) {
		char ch;
		CF_RET(cf_stream_read(s, &ch, 1));
		if (ch == '\n' && n > 0 && buf[n - 1] == '\r') {
			buf[n - 1] = '\0';
			return COFFER_OK;
		}
		if (n + 1 >= cap)
			return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
					"%s sent a reply line longer than %zu bytes", s->peer, cap - 1);
		buf[n++] = ch;
	}
}

static uint64_t frame_sum(const uint8_t hdr[CF_BKP_HDR], const void *p1, size_t n1, const void *p2,
			  size_t n2)
{
	uint8_t h[CF_BKP_HDR];
	memcpy(h, hdr, CF_BKP_HDR);
	memset(h + 16, 0, 8);
	return cf_xxh3_cat(h, CF_BKP_HDR, p1, n1, p2, n2);
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Plain socket: the pieces in one sendmsg where the kernel takes them all. */
static int stream_writev(struct cf_stream *s, struct iovec *iov, int cnt)
{
	apply_timeout(s);
	while (cnt > 0) {
		struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
		ssize_t w = sendmsg(s->fd, &m, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return timed_out(s);
			return CF_ERROR(COFFER_E_CONNECTION_LOST, CF_OBJ(.peer = s->peer, .sys_errno = errno),
					"sending to %s failed: %s", s->peer, strerror(errno));
		}
		s->bytes_out += (uint64_t)w;
		while (cnt > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return COFFER_OK;
}

static void frame_header(uint8_t h[CF_BKP_HDR], uint16_t type, const void *p1, size_t n1, const void *p2,
			 size_t n2)
{
	memset(h, 0, CF_BKP_HDR);
	memcpy(h, MAGIC, 4);
	put16(h + 4, type);
	put32(h + 8, (uint32_t)(n1 + n2));
	put64(h + 16, frame_sum(h, p1, n1, p2, n2));
}

/* Small TLS frames go out as one record: header and payload copied together. */
#define SMALL_FRAME 4096u

int cf_bkp_send(struct cf_stream *s, uint16_t type, const void *p1, size_t n1, const void *p2,
		size_t n2)
{
	if (n1 + n2 > CF_BKP_MAX_PAYLOAD)
		return CF_ERROR(COFFER_E_INTERNAL, NULL, "frame of %zu bytes exceeds the limit", n1 + n2);
	uint8_t h[CF_BKP_HDR + SMALL_FRAME];
	frame_header(h, type, p1, n1, p2, n2);
	if (s->ssl == NULL) {
		struct iovec iov[3] = {{h, CF_BKP_HDR}, {(void *)p1, n1}, {(void *)p2, n2}};
		return stream_writev(s, iov, n2 ? 3 : (n1 ? 2 : 1));
	}
	if (n1 + n2 <= SMALL_FRAME) {
		if (n1)
			memcpy(h + CF_BKP_HDR, p1, n1);
		if (n2)
			memcpy(h + CF_BKP_HDR + n1, p2, n2);
		return cf_stream_write(s, h, CF_BKP_HDR + n1 + n2);
	}
	CF_RET(cf_stream_write(s, h, CF_BKP_HDR));
	if (n1)
		CF_RET(cf_stream_write(s, p1, n1));
	if (n2)
		CF_RET(cf_stream_write(s, p2, n2));
	return COFFER_OK;
}

int cf_bkp_send_frame(struct cf_stream *s, uint16_t type, uint8_t *frame, size_t n)
{
	if (n > CF_BKP_MAX_PAYLOAD)
		return CF_ERROR(COFFER_E_INTERNAL, NULL, "frame of %zu bytes exceeds the limit", n);
	frame_header(frame, type, frame + CF_BKP_HDR, n, NULL, 0);
	return cf_stream_write(s, frame, CF_BKP_HDR + n);
}

int cf_bkp_lower_priority(int nice)
{
	int err = 0;
	id_t tid = (id_t)syscall(SYS_gettid);
	errno = 0;
	int cur = getpriority(PRIO_PROCESS, tid);
	if ((cur != -1 || errno == 0) && cur < nice && setpriority(PRIO_PROCESS, tid, nice) != 0)
		err = errno;
#ifdef SYS_ioprio_set
	/* IOPRIO_WHO_PROCESS, who 0 (this thread), IOPRIO_CLASS_BE << 13 | 7 */
	if (syscall(SYS_ioprio_set, 1, 0, (2 << 13) | 7) != 0 && err == 0)
		err = errno;
#endif
	return err;
}

/* ERROR payload: u32 code, i32 errno, i64 page, generation, offset, then
 * u16-length-prefixed message, file, peer. */
int cf_bkp_send_error(struct cf_stream *s, const coffer_error *e)
{
	uint8_t p[32 + 3 * 2 + sizeof e->message + sizeof e->file + sizeof e->peer];
	size_t n = 0;
	put32(p, (uint32_t)e->code);
	put32(p + 4, (uint32_t)e->sys_errno);
	put64(p + 8, (uint64_t)e->page);
	put64(p + 16, (uint64_t)e->generation);
	put64(p + 24, (uint64_t)e->offset);
	n = 32;
	const char *strs[3] = {e->message, e->file, e->peer};
	for (int i = 0; i < 3; i++) {
		size_t l = strlen(strs[i]);
		put16(p + n, (uint16_t)l);
		memcpy(p + n + 2, strs[i], l);
		n += 2 + l;
	}
	return cf_bkp_send(s, BKF_ERROR, p, n, NULL, 0);
}

static int raise_error_frame(struct cf_stream *s, const uint8_t *p, uint32_t len)
{
	if (len < 32)
		return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer), "short ERROR frame from %s",
				s->peer);
	int code = (int)get32(p);
	if (coffer_code_name(code) == NULL)
		code = COFFER_E_PROTOCOL;
	char strs[3][768] = {"", "", ""};
	uint32_t n = 32;
	for (int i = 0; i < 3; i++) {
		if (n + 2 > len)
			break;
		uint32_t l = get16(p + n);
		if (n + 2 + l > len)
			break;
		size_t cap = i == 0 ? 767 : (i == 1 ? 511 : 127);
		size_t c = l < cap ? l : cap;
		memcpy(strs[i], p + n + 2, c);
		strs[i][c] = '\0';
		n += 2 + l;
	}
	cf_obj o = {.file = strs[1][0] ? strs[1] : NULL,
		    .peer = strs[2][0] ? strs[2] : s->peer,
		    .sys_errno = (int)get32(p + 4)};
	int64_t page = (int64_t)get64(p + 8), gen = (int64_t)get64(p + 16), off = (int64_t)get64(p + 24);
	if (page >= 0) {
		o.page = page;
		o.has_page = 1;
	}
	if (gen >= 0) {
		o.generation = gen;
		o.has_generation = 1;
	}
	if (off >= 0) {
		o.offset = off;
		o.has_offset = 1;
	}
	return CF_ERROR(code, &o, "%s", strs[0][0] ? strs[0] : coffer_code_message(code));
}

int cf_bkp_send_fd(struct cf_stream *s, uint16_t type, const void *p, size_t n, int fd)
{
	if (s->ssl || n > CF_BKP_MAX_PAYLOAD)
		return CF_ERROR(COFFER_E_INTERNAL, NULL, "descriptor passing needs a plain Unix socket");
	uint8_t h[CF_BKP_HDR] = {0};
	memcpy(h, MAGIC, 4);
	put16(h + 4, type);
	put32(h + 8, (uint32_t)n);
	put64(h + 16, frame_sum(h, p, n, NULL, 0));
	union {
		struct cmsghdr c;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	memset(&u, 0, sizeof u);
	struct iovec iov = {.iov_base = h, .iov_len = sizeof h};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
	if (fd >= 0) {
		m.msg_control = u.buf;
		m.msg_controllen = sizeof u.buf;
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof fd);
	}
	ssize_t w;
	do
		w = sendmsg(s->fd, &m, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	if (w < 0)
		return CF_ERROR(COFFER_E_CONNECTION_LOST, CF_OBJ(.peer = s->peer, .sys_errno = errno),
				"sending to %s failed: %s", s->peer, strerror(errno));
	s->bytes_out += (uint64_t)w;
	if ((size_t)w < sizeof h)
		CF_RET(cf_stream_write(s, h + w, sizeof h - (size_t)w));
	return n ? cf_stream_write(s, p, n) : COFFER_OK;
}

/* Read the frame header with recvmsg, keeping a descriptor that rides on it. */
static int read_header_fd(struct cf_stream *s, uint8_t *h, int *fd)
{
	size_t got = 0;
	*fd = -1;
	while (got < CF_BKP_HDR) {
		CF_RET(wait_fd(s, POLLIN));
		union {
			struct cmsghdr c;
			char buf[CMSG_SPACE(4 * sizeof(int))];
		} u;
		struct iovec iov = {.iov_base = h + got, .iov_len = CF_BKP_HDR - got};
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
				   .msg_controllen = sizeof u.buf};
		ssize_t r = recvmsg(s->fd, &m, MSG_CMSG_CLOEXEC);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return CF_ERROR(COFFER_E_CONNECTION_LOST, CF_OBJ(.peer = s->peer, .sys_errno = errno),
					"receiving from %s failed: %s", s->peer, strerror(errno));
		if (r == 0)
			return CF_ERROR(COFFER_E_CONNECTION_LOST, CF_OBJ(.peer = s->peer),
					"%s closed the connection", s->peer);
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int x;
				memcpy(&x, CMSG_DATA(c) + i * sizeof(int), sizeof x);
				if (*fd < 0)
					*fd = x;
				else
					close(x); /* only one is expected */
			}
		}
		got += (size_t)r;
		s->bytes_in += (uint64_t)r;
	}
	return COFFER_OK;
}

static int recv_rest(struct cf_stream *s, const uint8_t *h, uint16_t *type, uint8_t *buf, uint32_t *len);

int cf_bkp_recv_fd(struct cf_stream *s, uint16_t *type, uint8_t *buf, uint32_t *len, int *fd)
{
	uint8_t h[CF_BKP_HDR];
	if (s->ssl) {
		*fd = -1;
		return cf_bkp_recv(s, type, buf, len);
	}
	CF_RET(read_header_fd(s, h, fd));
	int rc = recv_rest(s, h, type, buf, len);
	if (rc && *fd >= 0) {
		close(*fd);
		*fd = -1;
	}
	return rc;
}

int cf_bkp_recv(struct cf_stream *s, uint16_t *type, uint8_t *buf, uint32_t *len)
{
	uint8_t h[CF_BKP_HDR];
	CF_RET(cf_stream_read(s, h, sizeof h));
	return recv_rest(s, h, type, buf, len);
}

static int recv_rest(struct cf_stream *s, const uint8_t *h, uint16_t *type, uint8_t *buf, uint32_t *len)
{
	uint32_t n = get32(h + 8);
	if (memcmp(h, MAGIC, 4) != 0)
		return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
				"%s sent bytes that are not a backup frame (wrong magic)", s->peer);
	if (n > CF_BKP_MAX_PAYLOAD)
		return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
				"%s announced a frame of %u bytes (limit %u)", s->peer, n, CF_BKP_MAX_PAYLOAD);
	CF_RET(cf_stream_read(s, buf, n));
	if (get64(h + 16) != frame_sum(h, buf, n, NULL, 0))
		return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer, CF_OFF(s->bytes_in - n - CF_BKP_HDR)),
				"a backup frame from %s fails its checksum (damaged in transit)", s->peer);
	*type = get16(h + 4);
	*len = n;
	if (*type == BKF_ERROR)
		return raise_error_frame(s, buf, n);
	if (*type < BKF_INFO || *type > BKF_LAST)
		return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
				"%s sent a backup frame of unknown type %u", s->peer, *type);
	return COFFER_OK;
}

/* ---- a frame received in parts ---- */

int cf_bkp_rx_init(struct cf_bkp_rx *rx)
{
	memset(rx, 0, sizeof *rx);
	if ((rx->xs = aligned_alloc(64, sizeof(cf_xxh3_state))) == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory to receive backup frames");
	return COFFER_OK;
}

void cf_bkp_rx_free(struct cf_bkp_rx *rx)
{
	free(rx->xs);
	rx->xs = NULL;
}

int cf_bkp_rx_head(struct cf_stream *s, struct cf_bkp_rx *rx, int *fd)
{
	rx->len = rx->left = 0;
	rx->type = 0;
	if (fd && !s->ssl)
		CF_RET(read_header_fd(s, rx->hdr, fd));
	else {
		if (fd)
			*fd = -1;
		CF_RET(cf_stream_read(s, rx->hdr, sizeof rx->hdr));
	}
	uint32_t n = get32(rx->hdr + 8);
	if (memcmp(rx->hdr, MAGIC, 4) != 0)
		return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
				"%s sent bytes that are not a backup frame (wrong magic)", s->peer);
	if (n > CF_BKP_MAX_PAYLOAD)
		return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
				"%s announced a frame of %u bytes (limit %u)", s->peer, n, CF_BKP_MAX_PAYLOAD);
	uint8_t h[CF_BKP_HDR];
	memcpy(h, rx->hdr, CF_BKP_HDR);
	memset(h + 16, 0, 8);
	cf_xxh3_reset(rx->xs);
	cf_xxh3_update(rx->xs, h, CF_BKP_HDR);
	rx->type = get16(rx->hdr + 4);
	rx->len = rx->left = n;
	return COFFER_OK;
}

int cf_bkp_rx_read(struct cf_stream *s, struct cf_bkp_rx *rx, void *buf, size_t n)
{
	if (n > rx->left)
		return CF_ERROR(COFFER_E_INTERNAL, NULL, "%zu bytes asked of a frame with %u left", n,
				rx->left);
	CF_RET(cf_stream_read(s, buf, n));
	cf_xxh3_update(rx->xs, buf, n);
	rx->left -= (uint32_t)n;
	return COFFER_OK;
}

int cf_bkp_rx_end(struct cf_stream *s, struct cf_bkp_rx *rx, const uint8_t *payload)
{
	if (rx->left)
		return CF_ERROR(COFFER_E_INTERNAL, NULL, "a frame checked with %u bytes unread", rx->left);
	if (get64(rx->hdr + 16) != cf_xxh3_digest(rx->xs))
		return CF_ERROR(COFFER_E_PROTOCOL,
				CF_OBJ(.peer = s->peer, CF_OFF(s->bytes_in - rx->len - CF_BKP_HDR)),
				"a backup frame from %s fails its checksum (damaged in transit)", s->peer);
	if (rx->type == BKF_ERROR)
		return payload ? raise_error_frame(s, payload, rx->len)
			       : CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
					  "%s sent an ERROR frame where data was expected", s->peer);
	if (rx->type < BKF_INFO || rx->type > BKF_LAST)
		return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
				"%s sent a backup frame of unknown type %u", s->peer, rx->type);
	return COFFER_OK;
}

void cf_bkp_info_encode(const struct coffer_backup_info *bi, uint8_t out[CF_BKP_INFO_LEN])
{
	memset(out, 0, CF_BKP_INFO_LEN);
	put32(out, CF_BKP_VERSION);
	put32(out + 4, bi->type);
	memcpy(out + 8, bi->id, 16);
	memcpy(out + 24, bi->parent_id, 16);
	memcpy(out + 40, bi->signature, 16);
	put32(out + 56, bi->page_size);
	put32(out + 60, bi->gen_first);
	put64(out + 64, bi->npages);
	put64(out + 72, bi->redo_lsn);
	put64(out + 80, (uint64_t)bi->start_us);
	put32(out + 88, bi->gen_last);
	size_t w = strnlen(bi->who, sizeof bi->who - 1);
	memcpy(out + 96, bi->who, w); /* 96..223 */
}

int cf_bkp_info_decode(const uint8_t *p, uint32_t len, struct coffer_backup_info *bi)
{
	if (len != CF_BKP_INFO_LEN)
		return CF_ERROR(COFFER_E_PROTOCOL, NULL, "INFO frame of %u bytes, expected %u", len,
				CF_BKP_INFO_LEN);
	if (get32(p) != CF_BKP_VERSION)
		return CF_ERROR(COFFER_E_PROTOCOL_VERSION, NULL,
				"the server speaks backup protocol version %u; this coffer speaks %u",
				get32(p), CF_BKP_VERSION);
	memset(bi, 0, sizeof *bi);
	bi->type = get32(p + 4);
	memcpy(bi->id, p + 8, 16);
	memcpy(bi->parent_id, p + 24, 16);
	memcpy(bi->signature, p + 40, 16);
	bi->page_size = get32(p + 56);
	bi->gen_first = get32(p + 60);
	bi->npages = get64(p + 64);
	bi->redo_lsn = get64(p + 72);
	bi->start_us = (int64_t)get64(p + 80);
	bi->gen_last = get32(p + 88);
	memcpy(bi->who, p + 96, 127);
	bi->who[127] = '\0';
	if (coffer_backup_type_name(bi->type) == NULL ||
	    (bi->npages && (bi->page_size < 4096 || bi->page_size > 65536 ||
			    (bi->page_size & (bi->page_size - 1)))))
		return CF_ERROR(COFFER_E_PROTOCOL, NULL, "INFO frame with impossible values (type %u, page size %u)",
				bi->type, bi->page_size);
	return COFFER_OK;
}

int cf_bkp_send_file(struct cf_stream *s, const char *name, uint64_t size)
{
	uint8_t p[8 + 2 + 256];
	size_t l = strlen(name);
	if (l > 255)
		return CF_ERROR(COFFER_E_INTERNAL, NULL, "file name too long: %s", name);
	put64(p, size);
	put16(p + 8, (uint16_t)l);
	memcpy(p + 10, name, l);
	return cf_bkp_send(s, BKF_FILE, p, 10 + l, NULL, 0);
}

int cf_bkp_zeros_decode(const uint8_t *p, uint32_t len, uint32_t *count)
{
	if (len != 4 || get32(p) == 0 || get32(p) > CF_BKP_DATA_MAX)
		return CF_ERROR(COFFER_E_PROTOCOL, NULL, "malformed ZEROS frame (%u bytes, count %u)", len,
				len == 4 ? get32(p) : 0);
	*count = get32(p);
	return COFFER_OK;
}

int cf_bkp_file_decode(const uint8_t *p, uint32_t len, char *name, size_t cap, uint64_t *size)
{
	if (len < 10 || get16(p + 8) != len - 10 || len - 10 >= cap || len - 10 == 0)
		return CF_ERROR(COFFER_E_PROTOCOL, NULL, "malformed FILE frame (%u bytes)", len);
	*size = get64(p);
	memcpy(name, p + 10, len - 10);
	name[len - 10] = '\0';
	return COFFER_OK;
}
