/*
 * srv_backup.c - one backup over one connection (see srv_backup.h).
 *
 * Order: begin -> INFO -> database pages (full, copy) -> roll -> ROLLED ->
 * each log generation -> wait for CONFIRM -> end -> END. The pages and the
 * generations are read and sent by a data thread of their own, at a low
 * priority unless configured otherwise and paced to the rate limit
 * (srv_backup.h); begin, roll and end run on the session thread. Any failure: the
 * backup is aborted (nothing recorded or truncated), the client gets an
 * ERROR frame when it can still be reached, and the event log says why; a
 * client that vanished gets event 1203.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/os.h"
#include "engine/page.h"
#include "server/srv_backup.h"

static int check_stop(const atomic_int *stopping)
{
	if (stopping && atomic_load(stopping))
		return CF_ERROR(COFFER_E_SHUTTING_DOWN, NULL,
				"cofferd is shutting down; the backup was aborted and changed nothing");
	return COFFER_OK;
}

static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The rate limit: a token bucket. NEXT is when the bucket allows the next
 * byte; idle time earns at most SRV_BACKUP_BURST_MS of credit, so N bytes
 * take at least N / rate - SRV_BACKUP_BURST_MS. */
struct pace {
	uint64_t rate; /* bytes per second; 0: none */
	int64_t next_us;
};

/* Charge N bytes just sent; sleep until the bucket allows more, in slices
 * of at most 100 ms so that a shutdown is seen. */
static int pace_charge(struct pace *p, uint64_t n, const atomic_int *stopping)
{
	if (p->rate == 0)
		return COFFER_OK;
	int64_t now = mono_us();
	if (p->next_us < now - SRV_BACKUP_BURST_MS * 1000)
		p->next_us = now - SRV_BACKUP_BURST_MS * 1000;
	p->next_us += (int64_t)(n * 1000000u / p->rate);
	while (now < p->next_us) {
		CF_RET(check_stop(stopping));
		int64_t d = p->next_us - now < 100000 ? p->next_us - now : 100000;
		struct timespec ts = {.tv_sec = d / 1000000, .tv_nsec = (d % 1000000) * 1000};
		nanosleep(&ts, NULL);
		now = mono_us();
	}
	return COFFER_OK;
}

/* What the data thread needs. FRAME has CF_BKP_HDR bytes of room, then
 * CF_BKP_MAX_PAYLOAD. */
struct data {
	coffer_backup *b;
	coffer_evlog *ev;
	struct cf_stream *s;
	uint8_t *frame;
	const atomic_int *stopping;
	struct pace pace;
	int low_priority;
	int fast;  /* logs: offer the descriptor fast path (cleared after a failure) */
	int zeros; /* all-zero payloads go as ZEROS frames */
	int phase; /* 0: pages, 1: log generations */
	int rc;
	coffer_error err;
};

/* One piece of a file, N bytes of payload in place in d->frame. Without
 * zero runs: one DATA frame. With them: the piece is cut in units of
 * ZERO_UNIT bytes, and each run of all-zero units goes as one ZEROS frame,
 * each run of the others as one DATA frame sent in place (its header is
 * written over the last bytes of the run before it, already sent). */
#define ZERO_UNIT (64u << 10)
static int send_piece(struct data *d, size_t n)
{
	uint8_t *pl = d->frame + CF_BKP_HDR;
	if (!d->zeros)
		return cf_bkp_send_frame(d->s, BKF_DATA, d->frame, n);
	for (size_t off = 0, end; off < n; off = end) {
		size_t k = n - off < ZERO_UNIT ? n - off : ZERO_UNIT;
		int z = cf_all_zero(pl + off, k);
		for (end = off + k; end < n; end += k) {
			k = n - end < ZERO_UNIT ? n - end : ZERO_UNIT;
			if (cf_all_zero(pl + end, k) != z)
				break;
		}
		if (z) {
			uint8_t c[4];
			cf_put32(c, (uint32_t)(end - off));
			CF_RET(cf_bkp_send(d->s, BKF_ZEROS, c, sizeof c, NULL, 0));
		} else {
			CF_RET(cf_bkp_send_frame(d->s, BKF_DATA, pl + off - CF_BKP_HDR, end - off));
		}
	}
	return COFFER_OK;
}

static int send_pages(struct data *d)
{
	const struct coffer_backup_info *bi = coffer_backup_get_info(d->b);
	uint32_t per = CF_BKP_DATA_MAX / bi->page_size;
	uint8_t *pl = d->frame + CF_BKP_HDR;
	CF_RET(cf_bkp_send_file(d->s, "coffer.db", bi->npages * bi->page_size));
	for (uint64_t p = 0; p < bi->npages; p += per) {
		CF_RET(check_stop(d->stopping));
		uint32_t n = (uint32_t)(bi->npages - p < per ? bi->npages - p : per);
		CF_RET(coffer_backup_read_pages(d->b, p, n, pl));
		CF_RET(send_piece(d, (size_t)n * bi->page_size));
		CF_RET(pace_charge(&d->pace, (uint64_t)n * bi->page_size, d->stopping));
	}
	uint64_t size = bi->npages * bi->page_size;
	return cf_bkp_send(d->s, BKF_FILE_END, &size, sizeof size, NULL, 0);
}

static int send_log(struct data *d, uint32_t gen)
{
	int fd, rc;
	uint64_t size, sent = 0;
	char name[32], path[64];
	uint8_t *pl = d->frame + CF_BKP_HDR;
	CF_RET(coffer_backup_open_log(d->b, gen, &fd, &size));
	snprintf(name, sizeof name, "log/%010u.log", gen);
	snprintf(path, sizeof path, "generation %u", gen);
	CF_GO(rc, cf_bkp_send_file(d->s, name, size));
	while (sent < size) {
		CF_GO(rc, check_stop(d->stopping));
		size_t want = size - sent < CF_BKP_DATA_MAX ? (size_t)(size - sent) : CF_BKP_DATA_MAX;
		CF_GO(rc, cf_pread_full(fd, path, pl, want, sent));
		CF_GO(rc, send_piece(d, want));
		sent += want;
		CF_GO(rc, pace_charge(&d->pace, want, d->stopping));
	}
	rc = cf_bkp_send(d->s, BKF_FILE_END, &size, sizeof size, NULL, 0);
err:
	close(fd);
	return rc;
}

/* Fast path for one generation: pass the descriptor, wait for the client's
 * word. *used = 1 when the client took the file through it (its bytes are
 * then charged to the rate limit as if they had been sent). */
static int offer_log_fd(struct data *d, uint32_t gen, int *used)
{
	int fd, rc;
	uint64_t size;
	char name[32];
	struct cf_stream *s = d->s;
	uint8_t *buf = d->frame + CF_BKP_HDR;
	*used = 0;
	CF_RET(coffer_backup_open_log(d->b, gen, &fd, &size));
	snprintf(name, sizeof name, "log/%010u.log", gen);
	uint8_t p[8 + 2 + 32];
	size_t l = strlen(name);
	memcpy(p, &size, 8);
	uint16_t l16 = (uint16_t)l;
	memcpy(p + 8, &l16, 2);
	memcpy(p + 10, name, l);
	/* Test hook: lose the descriptor on the way. */
	rc = cf_bkp_send_fd(s, BKF_FILE_FD, p, 10 + l, CF_INJECT("backup.fastpath.server") ? -1 : fd);
	close(fd);
	CF_RET(rc);
	uint16_t t;
	uint32_t len;
	CF_RET(cf_bkp_recv(s, &t, buf, &len));
	if (t == BKF_FD_OK) {
		*used = 1;
		return pace_charge(&d->pace, size, d->stopping);
	}
	if (t != BKF_FD_FAIL)
		return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
				"expected FD_OK or FD_FAIL from %s, got frame %u", s->peer, t);
	char why[256];
	size_t n = len < sizeof why - 1 ? len : sizeof why - 1;
	memcpy(why, buf, n);
	why[n] = '\0';
	if (d->ev) {
		char g[16];
		snprintf(g, sizeof g, "%u", gen);
		coffer_evfield f[3] = {{"PEER", s->peer}, {"GENERATION", g}, {"REASON", why}};
		coffer_event_write(d->ev, COFFER_EV_BACKUP_FAST_PATH_FALLBACK, f, 3,
				   "the local fast path for log generation %u failed at %s (%s); the backup "
				   "goes on over the plain stream",
				   gen, s->peer, why);
	}
	return COFFER_OK;
}

static int send_logs(struct data *d)
{
	const struct coffer_backup_info *bi = coffer_backup_get_info(d->b);
	for (uint32_t g = bi->gen_first; g <= bi->gen_last; g++) {
		int used = 0;
		if (d->fast) {
			CF_RET(offer_log_fd(d, g, &used));
			d->fast = used; /* after one failure, the plain stream for the rest */
		}
		if (!used)
			CF_RET(send_log(d, g));
	}
	return COFFER_OK;
}

static void *data_main(void *arg)
{
	struct data *d = arg;
	pthread_setname_np(pthread_self(), SRV_BACKUP_THREAD);
	if (d->low_priority)
		(void)cf_bkp_lower_priority(SRV_BACKUP_NICE); /* lowering one's own never fails in practice */
	d->rc = d->phase == 0 ? send_pages(d) : send_logs(d);
	if (d->rc)
		d->err = *coffer_error_last();
	return NULL;
}

/* Run one data phase on its own thread (so that its priority is its own)
 * and carry its error record back to this thread. Without a thread (no
 * memory), the phase runs here at the session's priority. */
static int run_data(struct data *d, int phase)
{
	pthread_t t;
	d->phase = phase;
	if (pthread_create(&t, NULL, data_main, d) != 0)
		return phase == 0 ? send_pages(d) : send_logs(d);
	pthread_join(t, NULL);
	if (d->rc)
		*(coffer_error *)coffer_error_last() = d->err;
	return d->rc;
}

int srv_backup_session(coffer_env *env, coffer_evlog *ev, struct cf_stream *s,
		       const struct srv_backup_opts *o, const char *who, const atomic_int *stopping)
{
	unsigned type = o->type & ~CF_BKP_OPTIONS;
	coffer_backup *b = NULL;
	/* Header room in front of the payload: a frame leaves in one write. */
	uint8_t *frame = malloc(CF_BKP_HDR + CF_BKP_MAX_PAYLOAD);
	uint8_t *buf = frame ? frame + CF_BKP_HDR : NULL;
	int rc, sent_error = 0;
	if (frame == NULL) {
		rc = CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a backup buffer");
		goto err;
	}
	CF_GO(rc, coffer_backup_begin(env, type, who, &b));
	const struct coffer_backup_info *bi = coffer_backup_get_info(b);
	struct data d = {.b = b, .ev = ev, .s = s, .frame = frame, .stopping = stopping,
			 .pace = {.rate = o->rate, .next_us = mono_us()},
			 .low_priority = o->low_priority, .fast = (o->type & CF_BKP_FASTPATH) != 0,
			 .zeros = (o->type & CF_BKP_ZEROS) != 0};
	uint8_t info[CF_BKP_INFO_LEN];
	cf_bkp_info_encode(bi, info);
	CF_GO(rc, cf_bkp_send(s, BKF_INFO, info, sizeof info, NULL, 0));
	if (bi->npages)
		CF_GO(rc, run_data(&d, 0));
	CF_GO(rc, check_stop(stopping));
	CF_GO(rc, coffer_backup_roll(b));
	uint32_t last = bi->gen_last;
	CF_GO(rc, cf_bkp_send(s, BKF_ROLLED, &last, sizeof last, NULL, 0));
	CF_GO(rc, run_data(&d, 1));

	/* The client writes its manifest and fsyncs before confirming. */
	uint16_t t = 0;
	uint32_t len;
	int saved_timeout = s->timeout_ms;
	s->timeout_ms = 600 * 1000;
	rc = cf_bkp_recv(s, &t, buf, &len);
	s->timeout_ms = saved_timeout;
	if (rc) {
		/* The client's own ERROR is not echoed back; a frame it broke
		 * (checksum, magic, length, type) is answered like any error. */
		sent_error = t == BKF_ERROR;
		goto err;
	}
	if (t == BKF_ABORT) {
		rc = CF_ERROR(COFFER_E_BACKUP_ABORTED, CF_OBJ(.peer = s->peer),
			      "the backup client (%s) gave up before confirming; nothing was recorded",
			      who);
		sent_error = 1;
		goto err;
	}
	if (t != BKF_CONFIRM || len != 4) {
		rc = CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
			      "expected a CONFIRM frame from %s, got type %u", s->peer, t);
		goto err;
	}
	uint32_t copied;
	memcpy(&copied, buf, 4);
	struct coffer_backup_result res;
	rc = coffer_backup_end(b, copied, &res);
	b = NULL; /* freed by end */
	if (rc)
		goto err;
	uint8_t endp[16];
	memcpy(endp, &res.truncated_from, 4);
	memcpy(endp + 4, &res.truncated_to, 4);
	memcpy(endp + 8, &res.end_us, 8);
	rc = cf_bkp_send(s, BKF_END, endp, sizeof endp, NULL, 0);
	free(frame);
	if (rc)
		coffer_error_clear(); /* recorded already; the client may just have closed */
	return COFFER_OK;
err: {
	coffer_error e = *coffer_error_last();
	int gone = rc == COFFER_E_CONNECTION_LOST || rc == COFFER_E_TIMEOUT || rc == COFFER_E_TLS;
	if (!gone && !sent_error)
		cf_bkp_send_error(s, &e); /* best effort */
	if (b) {
		coffer_backup_abort(b, &e); /* logs event 1202 */
	} else if (ev && !gone) {
		/* Refused before it began (already running, no full backup,
		 * circular logging...): the event log says so too. */
		coffer_evfield f[2] = {{"WHO", who}, {"TYPE", coffer_backup_type_name(type)}};
		coffer_event_error(ev, COFFER_EV_BACKUP_FAILED, &e, f, 2);
	}
	if (gone && ev) {
		coffer_evfield f[1] = {{"PEER", s->peer}};
		coffer_event_error(ev, COFFER_EV_BACKUP_CLIENT_GONE, &e, f, 1);
	}
	*(coffer_error *)coffer_error_last() = e;
	free(frame);
	return rc;
}
}
