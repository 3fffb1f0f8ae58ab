/*
 * srv_resp.c - RESP: the request parser and the reply buffers.
 *
 * Requests (Redis's protocol, RESP2 framing; RESP3 changes only replies):
 *   multibulk  *<n>\r\n then n times $<len>\r\n<len bytes>\r\n
 *   inline     a line of at most max_inline bytes ending in \n (or \r\n),
 *              split on blanks; "..." and '...' quote, with the escapes of
 *              Redis's sdssplitargs (\n \r \t \b \a \xHH, \" and \')
 * Every length is checked against its limit before anything is allocated
 * for it: the argument count (max_args), a bulk length (max_bulk), the sum
 * of one command's arguments (max_query), an inline line (max_inline).
 * A bulk of 32 KiB or more is received into its own allocation (the loop
 * reads straight into it: resp_read_target), smaller ones are copied out of
 * the connection's input buffer. Every argument gets one byte of headroom
 * before it and a NUL after it (struct sarg).
 *
 * Parser states:
 *   PS_START  expecting a new command (first byte '*' or an inline line)
 *   PS_ARGS   in a multibulk, expecting "$<len>\r\n" (nargs more to come)
 *   PS_BULK   header of a small bulk read, waiting for its len + 2 bytes
 *   PS_BIG    receiving a large bulk into ps->big
 *
 * Replies: a struct rbuf is a list of chunks; small pieces are copied into
 * 16 KiB chunks, large values are attached by reference with the allocation
 * the engine returned them in (rb_add_ref), so a 64 MiB GET is never copied.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

enum { PS_START, PS_ARGS, PS_BULK, PS_BIG };

#define BIG_BULK ((size_t)32 << 10)
#define CHUNK ((size_t)16 << 10)
#define REF_MIN ((size_t)16 << 10)

struct srv_stats *srv_stats_global; /* set by the server; NULL in tools */

/* ---- reply buffers ---- */

void rb_init(struct rbuf *b)
{
	memset(b, 0, sizeof *b);
}

static void chunk_free(struct rchunk *c)
{
	if (c->cap == 0)
		free(c->owner);
	free(c);
}

void rb_free(struct rbuf *b)
{
	struct rchunk *c = b->head;
	while (c) {
		struct rchunk *n = c->next;
		chunk_free(c);
		c = n;
	}
	rb_init(b);
}

static void rb_link(struct rbuf *b, struct rchunk *c)
{
	c->next = NULL;
	if (b->tail)
		b->tail->next = c;
	else
		b->head = c;
	b->tail = c;
}

void rb_add(struct rbuf *b, const void *p, size_t n)
{
	if (n == 0 || b->oom)
		return;
	struct rchunk *t = b->tail;
	if (t && t->cap) {
		size_t room = t->cap - t->len;
		size_t k = n < room ? n : room;
		memcpy(t->data + t->len, p, k);
		t->len += k;
		b->bytes += k;
		p = (const char *)p + k;
		n -= k;
		if (n == 0)
			return;
	}
	/* Small first (most replies are a few bytes), then doubling to CHUNK. */
	size_t cap = t && t->cap ? 2 * t->cap : 512;
	if (cap > CHUNK)
		cap = CHUNK;
	if (cap < n)
		cap = n;
	struct rchunk *c = malloc(sizeof *c + cap);
	if (c == NULL) {
		b->oom = 1;
		return;
	}
	c->data = c->buf;
	c->cap = cap;
	c->len = n;
	c->owner = NULL;
	memcpy(c->data, p, n);
	rb_link(b, c);
	b->bytes += n;
}

void rb_add_ref(struct rbuf *b, const void *p, size_t n, void *owner)
{
	if (n < REF_MIN || b->oom) {
		rb_add(b, p, n);
		free(owner);
		return;
	}
	struct rchunk *c = malloc(sizeof *c);
	if (c == NULL) {
		b->oom = 1;
		free(owner);
		return;
	}
	c->data = (char *)p;
	c->len = n;
	c->cap = 0;
	c->owner = owner;
	rb_link(b, c);
	b->bytes += n;
}

void rb_splice(struct rbuf *dst, struct rbuf *src)
{
	if (src->oom)
		dst->oom = 1;
	if (src->head == NULL)
		return;
	if (dst->tail)
		dst->tail->next = src->head;
	else
		dst->head = src->head;
	dst->tail = src->tail;
	dst->bytes += src->bytes;
	rb_init(src);
}

struct rmark rb_mark(const struct rbuf *b)
{
	return (struct rmark){b->tail, b->tail ? b->tail->len : 0, b->bytes};
}

void rb_truncate(struct rbuf *b, struct rmark m)
{
	struct rchunk *c = m.tail ? m.tail->next : b->head;
	while (c) {
		struct rchunk *n = c->next;
		chunk_free(c);
		c = n;
	}
	if (m.tail) {
		m.tail->next = NULL;
		m.tail->len = m.tail_len;
	} else {
		b->head = NULL;
	}
	b->tail = m.tail;
	b->bytes = m.bytes;
}

/* ---- reply encoders ---- */

static void r_head(struct reply *r, char type, long long n)
{
	char tmp[32];
	int k = snprintf(tmp, sizeof tmp, "%c%lld\r\n", type, n);
	rb_add(&r->rb, tmp, (size_t)k);
}

void r_simple(struct reply *r, const char *s)
{
	rb_add(&r->rb, "+", 1);
	rb_add(&r->rb, s, strlen(s));
	rb_add(&r->rb, "\r\n", 2);
}

void r_ok(struct reply *r)
{
	rb_add(&r->rb, "+OK\r\n", 5);
}

void r_int(struct reply *r, long long v)
{
	r_head(r, ':', v);
}

void r_bulk(struct reply *r, const void *p, size_t n)
{
	r_head(r, '$', (long long)n);
	rb_add(&r->rb, p, n);
	rb_add(&r->rb, "\r\n", 2);
}

void r_bulk_str(struct reply *r, const char *s)
{
	r_bulk(r, s, strlen(s));
}

void r_bulk_ref(struct reply *r, const void *p, size_t n, void *owner)
{
	r_head(r, '$', (long long)n);
	rb_add_ref(&r->rb, p, n, owner);
	rb_add(&r->rb, "\r\n", 2);
}

void r_null(struct reply *r)
{
	if (r->proto >= 3)
		rb_add(&r->rb, "_\r\n", 3);
	else
		rb_add(&r->rb, "$-1\r\n", 5);
}

void r_null_array(struct reply *r)
{
	if (r->proto >= 3)
		rb_add(&r->rb, "_\r\n", 3);
	else
		rb_add(&r->rb, "*-1\r\n", 5);
}

void r_array(struct reply *r, size_t n)
{
	r_head(r, '*', (long long)n);
}

void r_map(struct reply *r, size_t n)
{
	if (r->proto >= 3)
		r_head(r, '%', (long long)n);
	else
		r_head(r, '*', (long long)(2 * n));
}

void r_set(struct reply *r, size_t n)
{
	r_head(r, r->proto >= 3 ? '~' : '*', (long long)n);
}

void r_verbatim(struct reply *r, const char *p, size_t n)
{
	if (r->proto >= 3) {
		r_head(r, '=', (long long)(n + 4));
		rb_add(&r->rb, "txt:", 4);
		rb_add(&r->rb, p, n);
		rb_add(&r->rb, "\r\n", 2);
	} else {
		r_bulk(r, p, n);
	}
}

static const char *const prefixes[] = {"ERR",     "WRONGTYPE", "NOAUTH",  "WRONGPASS",
				       "NOPERM",  "EXECABORT", "NOPROTO", NULL};

static size_t vformat_error(char *out, size_t cap, const char *prefix, int code, const char *fmt,
			    va_list ap) __attribute__((format(printf, 5, 0)));
static size_t vformat_error(char *out, size_t cap, const char *prefix, int code, const char *fmt,
			    va_list ap)
{
	if (prefix == NULL)
		prefix = "ERR";
	int k = snprintf(out, cap, "-%s ", prefix);
	size_t n = k > 0 ? (size_t)k : 0;
	if (n < cap) {
		k = vsnprintf(out + n, cap - n, fmt, ap);
		if (k > 0)
			n += (size_t)k;
	}
	if (n >= cap)
		n = cap - 1;
	/* Room for " (NAME)\r\n". */
	const char *name = coffer_code_name(code);
	if (name == NULL)
		name = "COFFER_E_INTERNAL";
	size_t tail = strlen(name) + 5;
	if (n + tail >= cap)
		n = cap - tail - 1;
	for (size_t i = 1; i < n; i++)
		if (out[i] == '\r' || out[i] == '\n')
			out[i] = ' ';
	k = snprintf(out + n, cap - n, " (%s)\r\n", name);
	return n + (size_t)k;
}

size_t resp_error_line(char *out, size_t cap, const char *prefix, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t n = vformat_error(out, cap, prefix, code, fmt, ap);
	va_end(ap);
	return n;
}

static void count_error(const char *prefix, int code)
{
	struct srv_stats *st = srv_stats_global;
	if (st == NULL)
		return;
	if (code > 0 && code < 256)
		atomic_fetch_add(&st->errors[code], 1);
	size_t i = 0;
	if (prefix)
		while (prefixes[i] && strcmp(prefixes[i], prefix) != 0)
			i++;
	atomic_fetch_add(&st->err_prefix[i], 1);
}

void r_error(struct reply *r, const char *prefix, int code, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	size_t n = vformat_error(line, sizeof line, prefix, code, fmt, ap);
	va_end(ap);
	rb_add(&r->rb, line, n);
	count_error(prefix, code);
}

void r_error_last(struct reply *r, int code)
{
	const coffer_error *e = coffer_error_last();
	if (e->code == code && e->message[0])
		r_error(r, NULL, code, "%s", e->message);
	else
		r_error(r, NULL, code, "%s", coffer_code_message(code));
}

/* ---- commands ---- */

void cmd_free(struct cmd *c)
{
	if (c == NULL)
		return;
	for (int i = 0; i < c->argc; i++)
		free(c->argv[i].p - 1);
	free(c->argv);
	free(c);
}

static struct cmd *cmd_new(long long hint)
{
	struct cmd *c = calloc(1, sizeof *c);
	if (c == NULL)
		return NULL;
	c->cap = hint < 1 ? 1 : hint > 1024 ? 1024 : (int)hint;
	c->argv = malloc((size_t)c->cap * sizeof *c->argv);
	if (c->argv == NULL) {
		free(c);
		return NULL;
	}
	return c;
}

/* Append an argument whose allocation is BASE (bytes at BASE + 1). */
static int cmd_push(struct cmd *c, char *base, size_t len)
{
	if (c->argc == c->cap) {
		size_t ncap = (size_t)c->cap * 2;
		if (ncap > INT_MAX)
			return -1;
		struct sarg *a = realloc(c->argv, ncap * sizeof *a);
		if (a == NULL)
			return -1;
		c->argv = a;
		c->cap = (int)ncap;
	}
	c->argv[c->argc].p = base + 1;
	c->argv[c->argc].len = len;
	c->argc++;
	c->bytes += len;
	return 0;
}

static int cmd_push_copy(struct cmd *c, const char *p, size_t len)
{
	char *base = malloc(len + 2);
	if (base == NULL)
		return -1;
	memcpy(base + 1, p, len);
	base[len + 1] = 0;
	if (cmd_push(c, base, len)) {
		free(base);
		return -1;
	}
	return 0;
}

/* ---- the parser ---- */

static int perr(struct parser *ps, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int perr(struct parser *ps, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ps->err, sizeof ps->err, fmt, ap);
	va_end(ap);
	ps->err_code = code;
	return RESP_ERROR;
}

static int nomem(struct parser *ps)
{
	return perr(ps, COFFER_E_NOMEM, "out of memory while reading a request");
}

/* Redis's string2ll: "0" or -?[1-9][0-9]*, no blanks, no overflow. */
static int strict_ll(const char *p, size_t n, long long *out)
{
	if (n == 0 || n > 20)
		return -1;
	size_t i = 0;
	int neg = 0;
	if (p[0] == '-') {
		neg = 1;
		i = 1;
		if (n == 1)
			return -1;
	}
	if (p[i] == '0') {
		if (n == 1) {
			*out = 0;
			return 0;
		}
		return -1;
	}
	unsigned long long v = 0;
	for (; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		unsigned d = (unsigned)(p[i] - '0');
		if (v > (ULLONG_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (neg) {
		if (v > (unsigned long long)LLONG_MAX + 1)
			return -1;
		*out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
	} else {
		if (v > (unsigned long long)LLONG_MAX)
			return -1;
		*out = (long long)v;
	}
	return 0;
}

int srv_strict_ll(const char *p, size_t n, long long *out)
{
	return strict_ll(p, n, out);
}

/* A header line "<x><number>\r\n" at ib->r: RESP_CMD with *v and the line
 * consumed, RESP_MORE, or RESP_ERROR. */
static int header_line(struct parser *ps, struct ibuf *ib, const struct parse_limits *lim,
		       const char *what, long long *v)
{
	const char *s = ib->buf + ib->r;
	size_t avail = ib->w - ib->r;
	const char *cr = memchr(s, '\r', avail);
	if (cr == NULL) {
		if (avail > lim->max_inline)
			return perr(ps, COFFER_E_LIMIT, "Protocol error: too big %s count string", what);
		return RESP_MORE;
	}
	if ((size_t)(cr - s) + 1 >= avail)
		return RESP_MORE; /* the \n is not here yet */
	if (cr[1] != '\n')
		return perr(ps, COFFER_E_PROTOCOL, "Protocol error: %s header not ended by CRLF", what);
	if (strict_ll(s + 1, (size_t)(cr - s) - 1, v))
		return perr(ps, COFFER_E_PROTOCOL, "Protocol error: invalid %s length", what);
	ib->r += (size_t)(cr - s) + 2;
	return RESP_CMD;
}

static int finish_arg(struct parser *ps, struct cmd **out)
{
	if (--ps->nargs > 0) {
		ps->state = PS_ARGS;
		return RESP_MORE;
	}
	*out = ps->cur;
	ps->cur = NULL;
	ps->state = PS_START;
	return RESP_CMD;
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Split an inline line (sdssplitargs rules) into a new command. */
static int split_inline(struct parser *ps, const char *p, size_t n, const struct parse_limits *lim,
			struct cmd **out)
{
	struct cmd *c = cmd_new(8);
	if (c == NULL)
		return nomem(ps);
	char *arg = malloc(n + 2); /* no argument is longer than the line */
	if (arg == NULL) {
		cmd_free(c);
		return nomem(ps);
	}
	const char *e = p + n;
	int rc = RESP_CMD;
	for (;;) {
		while (p < e && isspace((unsigned char)*p))
			p++;
		if (p == e)
			break;
		size_t len = 0;
		int inq = 0, insq = 0, done = 0;
		char *d = arg + 1;
		while (!done) {
			if (inq) {
				if (p == e) {
					rc = perr(ps, COFFER_E_PROTOCOL, "Protocol error: unbalanced quotes in request");
					goto out;
				}
				if (*p == '\\' && e - p >= 4 && p[1] == 'x' && hexval(p[2]) >= 0 &&
				    hexval(p[3]) >= 0) {
					d[len++] = (char)(hexval(p[2]) * 16 + hexval(p[3]));
					p += 3;
				} else if (*p == '\\' && e - p >= 2) {
					p++;
					char ch;
					switch (*p) {
					case 'n': ch = '\n'; break;
					case 'r': ch = '\r'; break;
					case 't': ch = '\t'; break;
					case 'b': ch = '\b'; break;
					case 'a': ch = '\a'; break;
					default: ch = *p; break;
					}
					d[len++] = ch;
				} else if (*p == '"') {
					if (p + 1 < e && !isspace((unsigned char)p[1])) {
						rc = perr(ps, COFFER_E_PROTOCOL,
							  "Protocol error: unbalanced quotes in request");
						goto out;
					}
					done = 1;
				} else {
					d[len++] = *p;
				}
			} else if (insq) {
				if (p == e) {
					rc = perr(ps, COFFER_E_PROTOCOL, "Protocol error: unbalanced quotes in request");
					goto out;
				}
				if (*p == '\\' && e - p >= 2 && p[1] == '\'') {
					p++;
					d[len++] = '\'';
				} else if (*p == '\'') {
					if (p + 1 < e && !isspace((unsigned char)p[1])) {
						rc = perr(ps, COFFER_E_PROTOCOL,
							  "Protocol error: unbalanced quotes in request");
						goto out;
					}
					done = 1;
				} else {
					d[len++] = *p;
				}
			} else {
				if (p == e)
					break;
				switch (*p) {
				case ' ': case '\n': case '\r': case '\t': case '\0':
					done = 1;
					break;
				case '"': inq = 1; break;
				case '\'': insq = 1; break;
				default: d[len++] = *p; break;
				}
			}
			if (p < e)
				p++;
		}
		if ((size_t)c->argc >= lim->max_args) {
			rc = perr(ps, COFFER_E_LIMIT, "Protocol error: more than %zu arguments", lim->max_args);
			goto out;
		}
		if (cmd_push_copy(c, d, len)) {
			rc = nomem(ps);
			goto out;
		}
	}
out:
	free(arg);
	if (rc != RESP_CMD || c->argc == 0) {
		cmd_free(c);
		return rc == RESP_CMD ? RESP_MORE : rc;
	}
	*out = c;
	return RESP_CMD;
}

int resp_partial(const struct parser *ps)
{
	return ps->state != PS_START;
}

int resp_parse(struct parser *ps, struct ibuf *ib, const struct parse_limits *lim, struct cmd **out)
{
	for (;;) {
		switch (ps->state) {
		case PS_START: {
			if (ib->r == ib->w)
				return RESP_MORE;
			if (ib->buf[ib->r] != '*') {
				const char *s = ib->buf + ib->r;
				size_t avail = ib->w - ib->r;
				const char *nl = memchr(s, '\n', avail);
				if (nl == NULL) {
					if (avail > lim->max_inline)
						return perr(ps, COFFER_E_LIMIT,
							    "Protocol error: too big inline request (more than %zu bytes)",
							    lim->max_inline);
					return RESP_MORE;
				}
				size_t len = (size_t)(nl - s);
				if (len > lim->max_inline)
					return perr(ps, COFFER_E_LIMIT,
						    "Protocol error: too big inline request (more than %zu bytes)",
						    lim->max_inline);
				ib->r += len + 1;
				if (len && s[len - 1] == '\r')
					len--;
				int rc = split_inline(ps, s, len, lim, out);
				if (rc == RESP_MORE)
					continue; /* an empty line */
				return rc;
			}
			long long n;
			int rc = header_line(ps, ib, lim, "multibulk", &n);
			if (rc != RESP_CMD)
				return rc;
			if (n <= 0)
				continue; /* an empty command: ignored */
			if ((unsigned long long)n > lim->max_args)
				return perr(ps, COFFER_E_LIMIT,
					    "Protocol error: %lld arguments exceed the limit of %zu", n,
					    lim->max_args);
			ps->cur = cmd_new(n);
			if (ps->cur == NULL)
				return nomem(ps);
			ps->nargs = n;
			ps->state = PS_ARGS;
			break;
		}
		case PS_ARGS: {
			if (ib->r == ib->w)
				return RESP_MORE;
			if (ib->buf[ib->r] != '$') {
				char ch = ib->buf[ib->r];
				return perr(ps, COFFER_E_PROTOCOL, "Protocol error: expected '$', got '%c'",
					    isprint((unsigned char)ch) ? ch : '?');
			}
			long long n;
			int rc = header_line(ps, ib, lim, "bulk", &n);
			if (rc != RESP_CMD)
				return rc;
			if (n < 0)
				return perr(ps, COFFER_E_PROTOCOL, "Protocol error: invalid bulk length");
			if ((unsigned long long)n > lim->max_bulk)
				return perr(ps, COFFER_E_LIMIT,
					    "Protocol error: bulk length %lld exceeds the limit of %zu bytes", n,
					    lim->max_bulk);
			if (ps->cur->bytes + (size_t)n > lim->max_query)
				return perr(ps, COFFER_E_LIMIT,
					    "Protocol error: the command's arguments exceed the limit of %zu bytes",
					    lim->max_query);
			ps->big_len = (size_t)n;
			if ((size_t)n >= BIG_BULK) {
				ps->big = malloc((size_t)n + 3);
				if (ps->big == NULL)
					return nomem(ps);
				size_t avail = ib->w - ib->r, want = (size_t)n + 2;
				size_t k = avail < want ? avail : want;
				memcpy(ps->big + 1, ib->buf + ib->r, k);
				ib->r += k;
				ps->big_have = k;
				ps->state = PS_BIG;
			} else {
				ps->state = PS_BULK;
			}
			break;
		}
		case PS_BULK: {
			size_t n = ps->big_len;
			if (ib->w - ib->r < n + 2)
				return RESP_MORE;
			const char *s = ib->buf + ib->r;
			if (s[n] != '\r' || s[n + 1] != '\n')
				return perr(ps, COFFER_E_PROTOCOL, "Protocol error: bulk string not ended by CRLF");
			if (cmd_push_copy(ps->cur, s, n))
				return nomem(ps);
			ib->r += n + 2;
			int rc = finish_arg(ps, out);
			if (rc == RESP_CMD)
				return rc;
			break;
		}
		case PS_BIG: {
			size_t n = ps->big_len;
			if (ps->big_have < n + 2)
				return RESP_MORE;
			char *p = ps->big + 1;
			if (p[n] != '\r' || p[n + 1] != '\n')
				return perr(ps, COFFER_E_PROTOCOL, "Protocol error: bulk string not ended by CRLF");
			p[n] = 0;
			if (cmd_push(ps->cur, ps->big, n))
				return nomem(ps);
			ps->big = NULL;
			ps->big_have = 0;
			int rc = finish_arg(ps, out);
			if (rc == RESP_CMD)
				return rc;
			break;
		}
		}
	}
}

int resp_read_target(struct parser *ps, char **p, size_t *n)
{
	if (ps->state != PS_BIG)
		return 0;
	*p = ps->big + 1 + ps->big_have;
	*n = ps->big_len + 2 - ps->big_have;
	return 1;
}

void resp_big_received(struct parser *ps, size_t n)
{
	ps->big_have += n;
}

void resp_parser_free(struct parser *ps)
{
	cmd_free(ps->cur);
	free(ps->big);
	memset(ps, 0, sizeof *ps);
}

/* ---- the input buffer (srv.h) ---- */

#define IB_INIT ((size_t)16 << 10)
#define IB_MAX ((size_t)256 << 10)

int ibuf_room(struct ibuf *b)
{
	if (b->buf == NULL) {
		b->buf = malloc(IB_INIT);
		if (b->buf == NULL)
			return 0;
		b->cap = IB_INIT;
	}
	if (b->cap - b->w < 4096 && b->r > 0) {
		memmove(b->buf, b->buf + b->r, b->w - b->r);
		b->w -= b->r;
		b->r = 0;
	}
	if (b->cap - b->w < 4096 && b->cap < IB_MAX) {
		char *nb = realloc(b->buf, b->cap * 2);
		if (nb == NULL)
			return 0;
		b->buf = nb;
		b->cap *= 2;
	}
	return b->cap > b->w;
}
