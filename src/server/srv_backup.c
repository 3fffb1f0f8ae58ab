/*
 * srv_backup.c - one backup over one connection (see srv_backup.h).
 *
 * Order: begin -> INFO -> database pages (full, copy) -> roll -> ROLLED ->
 * each log generation -> wait for CONFIRM -> end -> END. Any failure: the
 * backup is aborted (nothing recorded or truncated), the client gets an
 * ERROR frame when it can still be reached, and the event log says why; a
 * client that vanished gets event 1203.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/os.h"
#include "server/srv_backup.h"

static int check_stop(const atomic_int *stopping)
{
	if (stopping && atomic_load(stopping))
		return CF_ERROR(COFFER_E_SHUTTING_DOWN, NULL,
				"cofferd is shutting down; the backup was aborted and changed nothing");
	return COFFER_OK;
}

static int send_pages(coffer_backup *b, struct cf_stream *s, uint8_t *buf, const atomic_int *stopping)
{
	const struct coffer_backup_info *bi = coffer_backup_get_info(b);
	uint32_t per = CF_BKP_DATA_MAX / bi->page_size;
	CF_RET(cf_bkp_send_file(s, "coffer.db", bi->npages * bi->page_size));
	for (uint64_t p = 0; p < bi->npages; p += per) {
		CF_RET(check_stop(stopping));
		uint32_t n = (uint32_t)(bi->npages - p < per ? bi->npages - p : per);
		CF_RET(coffer_backup_read_pages(b, p, n, buf));
		CF_RET(cf_bkp_send(s, BKF_DATA, buf, (size_t)n * bi->page_size, NULL, 0));
	}
	uint64_t size = bi->npages * bi->page_size;
	return cf_bkp_send(s, BKF_FILE_END, &size, sizeof size, NULL, 0);
}

static int send_log(coffer_backup *b, struct cf_stream *s, uint32_t gen, uint8_t *buf,
		    const atomic_int *stopping)
{
	int fd, rc;
	uint64_t size, sent = 0;
	char name[32], path[64];
	CF_RET(coffer_backup_open_log(b, gen, &fd, &size));
	snprintf(name, sizeof name, "log/%010u.log", gen);
	snprintf(path, sizeof path, "generation %u", gen);
	CF_GO(rc, cf_bkp_send_file(s, name, size));
	while (sent < size) {
		CF_GO(rc, check_stop(stopping));
		size_t want = size - sent < CF_BKP_DATA_MAX ? (size_t)(size - sent) : CF_BKP_DATA_MAX;
		CF_GO(rc, cf_pread_full(fd, path, buf, want, sent));
		CF_GO(rc, cf_bkp_send(s, BKF_DATA, buf, want, NULL, 0));
		sent += want;
	}
	rc = cf_bkp_send(s, BKF_FILE_END, &size, sizeof size, NULL, 0);
err:
	close(fd);
	return rc;
}

/* Fast path for one generation: pass the descriptor, wait for the client's
 * word. *used = 1 when the client took the file through it. */
static int offer_log_fd(coffer_backup *b, struct cf_stream *s, coffer_evlog *ev, uint32_t gen,
			uint8_t *buf, int *used)
{
	int fd, rc;
	uint64_t size;
	char name[32];
	*used = 0;
	CF_RET(coffer_backup_open_log(b, gen, &fd, &size));
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
		return COFFER_OK;
	}
	if (t != BKF_FD_FAIL)
		return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
				"expected FD_OK or FD_FAIL from %s, got frame %u", s->peer, t);
	char why[256];
	size_t n = len < sizeof why - 1 ? len : sizeof why - 1;
	memcpy(why, buf, n);
	why[n] = '\0';
	if (ev) {
		char g[16];
		snprintf(g, sizeof g, "%u", gen);
		coffer_evfield f[3] = {{"PEER", s->peer}, {"GENERATION", g}, {"REASON", why}};
		coffer_event_write(ev, COFFER_EV_BACKUP_FAST_PATH_FALLBACK, f, 3,
				   "the local fast path for log generation %u failed at %s (%s); the backup "
				   "goes on over the plain stream",
				   gen, s->peer, why);
	}
	return COFFER_OK;
}

int srv_backup_session(coffer_env *env, coffer_evlog *ev, struct cf_stream *s, unsigned type,
		       const char *who, const atomic_int *stopping)
{
	int fast = (type & CF_BKP_FASTPATH) != 0;
	type &= ~CF_BKP_FASTPATH;
	coffer_backup *b = NULL;
	uint8_t *buf = malloc(CF_BKP_MAX_PAYLOAD);
	int rc, sent_error = 0;
	if (buf == NULL) {
		rc = CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a backup buffer");
		goto err;
	}
	CF_GO(rc, coffer_backup_begin(env, type, who, &b));
	const struct coffer_backup_info *bi = coffer_backup_get_info(b);
	uint8_t info[CF_BKP_INFO_LEN];
	cf_bkp_info_encode(bi, info);
	CF_GO(rc, cf_bkp_send(s, BKF_INFO, info, sizeof info, NULL, 0));
	if (bi->npages)
		CF_GO(rc, send_pages(b, s, buf, stopping));
	CF_GO(rc, check_stop(stopping));
	CF_GO(rc, coffer_backup_roll(b));
	uint32_t last = bi->gen_last;
	CF_GO(rc, cf_bkp_send(s, BKF_ROLLED, &last, sizeof last, NULL, 0));
	for (uint32_t g = bi->gen_first; g <= bi->gen_last; g++) {
		int used = 0;
		if (fast) {
			CF_GO(rc, offer_log_fd(b, s, ev, g, buf, &used));
			fast = used; /* after one failure, the plain stream for the rest */
		}
		if (!used)
			CF_GO(rc, send_log(b, s, g, buf, stopping));
	}

	/* The client writes its manifest and fsyncs before confirming. */
	uint16_t t;
	uint32_t len;
	int saved_timeout = s->timeout_ms;
	s->timeout_ms = 600 * 1000;
	rc = cf_bkp_recv(s, &t, buf, &len);
	s->timeout_ms = saved_timeout;
	if (rc) {
		sent_error = 1; /* the client sent the error, or is gone */
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
	free(buf);
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
	free(buf);
	return rc;
}
}
