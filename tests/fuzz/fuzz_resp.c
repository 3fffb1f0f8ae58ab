/*
 * fuzz_resp.c - libFuzzer target: cofferd's RESP request parser
 * (resp_parse, src/server/srv_resp.c, compiled into this program).
 *
 * The input is what a client sends. The harness plays the event loop's
 * part exactly as srv_loop.c does (conn_read, ibuf_room, parse_input): it
 * reads the input in pieces into the connection's input buffer (16 KiB,
 * doubled up to 256 KiB, compacted when less than 4 KiB is free) or, for
 * a large bulk, into the parser's own buffer (resp_read_target /
 * resp_big_received), parses after each read, and stops at a protocol
 * error (then formats the error line the server sends) or when the buffer
 * is full. Each command is checked against the parser's promises (at least
 * one argument; counts and lengths within the limits; a writable byte
 * before and a NUL after each argument), answered through the reply
 * builders and freed.
 *
 * Input:
 *   byte 0   bits 0-1 limits: 0 the server's defaults, 1 before AUTH,
 *            2 small (bulk 64, 4 arguments, inline 64, query 128),
 *            3 defaults with inline 100
 *            bits 2-7 read size: 0 everything at once, else pieces of
 *            1..n bytes chosen by a small generator seeded with byte 1
 *   byte 1   seed
 *   then the bytes the client sends.
 */
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"
#include "fuzz_util.h"

static void answer(struct cmd *c, const struct parse_limits *lim)
{
	if (c->argc < 1 || c->argv == NULL)
		fz_die("resp_parse returned a command with %d arguments", c->argc);
	if ((size_t)c->argc > lim->max_args)
		fz_die("resp_parse returned %d arguments, limit %zu", c->argc, lim->max_args);
	size_t total = 0;
	for (int i = 0; i < c->argc; i++) {
		struct sarg *a = &c->argv[i];
		if (a->p[a->len] != '\0')
			fz_die("argument %d is not NUL-terminated", i);
		a->p[-1] = '#'; /* the promised byte of headroom */
		if (a->len > lim->max_bulk && a->len > lim->max_inline)
			fz_die("argument %d has %zu bytes, limits %zu / %zu", i, a->len, lim->max_bulk,
			       lim->max_inline);
		total += a->len;
	}
	if (total != c->bytes)
		fz_die("command counts %zu argument bytes, has %zu", c->bytes, total);
	if (total > lim->max_query && total > lim->max_inline)
		fz_die("command of %zu bytes, limits %zu / %zu", total, lim->max_query, lim->max_inline);

	struct reply r = {.proto = 2 + (c->argc & 1)};
	rb_init(&r.rb);
	r_array(&r, (size_t)c->argc);
	for (int i = 0; i < c->argc; i++) {
		long long v;
		if (srv_strict_ll(c->argv[i].p, c->argv[i].len, &v) == 0)
			r_int(&r, v);
		else
			r_bulk(&r, c->argv[i].p, c->argv[i].len);
	}
	struct rmark mk = rb_mark(&r.rb);
	r_error(&r, NULL, COFFER_E_PROTOCOL, "unknown command '%.*s'", (int)c->argv[0].len,
		c->argv[0].p);
	r_verbatim(&r, c->argv[c->argc - 1].p, c->argv[c->argc - 1].len);
	rb_truncate(&r.rb, mk);
	r_null(&r);
	r_map(&r, 1);
	rb_free(&r.rb);
	cmd_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = {data, size};
	unsigned mode = fz_u8(&in);
	uint32_t seed = fz_u8(&in) * 2654435761u + 1;
	unsigned piece = mode >> 2;
	struct parse_limits lims[4] = {
		{SRV_DEFAULT_MAX_BULK, SRV_DEFAULT_MAX_ARGS, SRV_DEFAULT_MAX_INLINE, SRV_DEFAULT_MAX_QUERY},
		{SRV_UNAUTH_MAX_BULK, SRV_UNAUTH_MAX_ARGS, SRV_DEFAULT_MAX_INLINE,
		 SRV_UNAUTH_MAX_BULK * SRV_UNAUTH_MAX_ARGS},
		{64, 4, 64, 128},
		{SRV_DEFAULT_MAX_BULK, SRV_DEFAULT_MAX_ARGS, 100, SRV_DEFAULT_MAX_QUERY},
	};
	const struct parse_limits *lim = &lims[mode & 3];
	struct ibuf ib = {0};
	struct parser ps;
	memset(&ps, 0, sizeof ps);

	for (int stop = 0; !stop;) {
		/* parse_input */
		for (;;) {
			struct cmd *c = NULL;
			int rc = resp_parse(&ps, &ib, lim, &c);
			if (rc == RESP_MORE)
				break;
			if (rc == RESP_ERROR) {
				char line[512];
				(void)resp_error_line(line, sizeof line, NULL, ps.err_code, "%s", ps.err);
				stop = 1;
				break;
			}
			if (rc != RESP_CMD || c == NULL)
				fz_die("resp_parse returned %d", rc);
			answer(c, lim);
		}
		if (ib.r == ib.w)
			ib.r = ib.w = 0;
		if (stop || in.n == 0)
			break;
		/* one read */
		char *p;
		size_t room;
		int big = resp_read_target(&ps, &p, &room);
		if (!big) {
			if (!ibuf_room(&ib))
				break; /* the server closes the connection */
			p = ib.buf + ib.w;
			room = ib.cap - ib.w;
		}
		size_t want = room;
		if (piece) {
			seed = seed * 1103515245u + 12345u;
			size_t k = 1 + (seed >> 16) % (piece * piece * 16);
			if (k < want)
				want = k;
		}
		size_t got;
		const uint8_t *src = fz_take(&in, want, &got);
		memcpy(p, src, got);
		if (big)
			resp_big_received(&ps, got);
		else
			ib.w += got;
	}
	resp_parser_free(&ps);
	free(ib.buf);
	return 0;
}
