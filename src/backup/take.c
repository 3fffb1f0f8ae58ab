/*
 * take.c - the client's side of a backup stream (see take.h).
 */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/take.h"
#include "common/err.h"
#include "common/os.h"

static void tick(struct cf_take *t)
{
	if (t->tick)
		t->tick(t);
}

/* N more bytes (DATA or ZEROS) after GOT must stay within the file's
 * announced SIZE. */
static int within_file(const struct cf_stream *s, uint64_t got, uint32_t n, uint64_t size)
{
	if (got + n <= size)
		return COFFER_OK;
	return CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
			"the server sent more data than the file's announced %llu bytes", (unsigned long long)size);
}

/* N zero bytes into the file being written (a ZEROS frame), straight into
 * the set's block buffers. */
static int put_zeros(cf_archive_writer *w, uint32_t n)
{
	while (n) {
		void *dst;
		size_t room;
		CF_RET(cf_archive_file_reserve(w, &dst, &room));
		size_t k = n < room ? n : room;
		memset(dst, 0, k);
		CF_RET(cf_archive_file_commit(w, k));
		n -= (uint32_t)k;
	}
	return COFFER_OK;
}

/* A log generation offered through the fast path: check the descriptor,
 * copy the file from it into the set, and tell the server (FD_OK), or
 * tell it why not (FD_FAIL) so that it sends the file over the stream. */
static int take_fd_file(struct cf_take *t, const uint8_t *p, uint32_t len, int fd, uint32_t *gen, int *used)
{
	struct cf_stream *s = t->s;
	cf_archive_writer *w = t->w;
	char name[64], why[200] = "";
	uint64_t size;
	int rc = cf_bkp_file_decode(p, len, name, sizeof name, &size);
	if (rc == COFFER_OK)
		rc = cf_archive_name_check(name, strlen(name), s->peer, gen);
	if (rc || *gen == 0) {
		if (fd >= 0)
			close(fd);
		return rc ? rc : CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer), "FILE_FD for %s", name);
	}
	struct stat st;
	int inj = CF_INJECT("backup.fastpath.client");
	if (fd < 0)
		snprintf(why, sizeof why, "no file descriptor arrived with the offer of %s", name);
	else if (inj)
		snprintf(why, sizeof why, "injected failure (%s) taking %s", strerror(inj), name);
	else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
		snprintf(why, sizeof why, "the descriptor for %s is not a regular file", name);
	else if ((uint64_t)st.st_size != size)
		snprintf(why, sizeof why, "the descriptor for %s has %lld bytes, not %llu", name,
			 (long long)st.st_size, (unsigned long long)size);
	if (why[0]) {
		if (fd >= 0)
			close(fd);
		*used = 0;
		return cf_bkp_send(s, BKF_FD_FAIL, why, strlen(why), NULL, 0);
	}
	t->total += size;
	t->phase = "logs";
	rc = cf_archive_file_begin(w, name);
	if (rc == COFFER_OK)
		cf_archive_file_expect(w, size);
	/* Read straight into the set's block buffers. */
	for (uint64_t off = 0; rc == COFFER_OK && off < size;) {
		void *dst;
		size_t room;
		rc = cf_archive_file_reserve(w, &dst, &room);
		if (rc)
			break;
		size_t n = size - off < room ? (size_t)(size - off) : room;
		rc = cf_pread_full(fd, name, dst, n, off);
		int rc2 = cf_archive_file_commit(w, rc ? 0 : n);
		if (rc == COFFER_OK)
			rc = rc2;
		off += n;
		t->done += n;
		tick(t);
	}
	close(fd);
	if (rc == COFFER_OK)
		rc = cf_archive_file_end(w);
	if (rc)
		return rc; /* the set is broken now: the backup fails (and aborts) */
	*used = 1;
	return cf_bkp_send(s, BKF_FD_OK, NULL, 0, NULL, 0);
}

int cf_take_stream(struct cf_take *t)
{
	struct cf_stream *s = t->s;
	cf_archive_writer *w = t->w;
	uint8_t *buf = t->buf;
	int fast = t->fast, rc;
	struct cf_bkp_rx rx;
	t->done = t->total = 0;
	t->fast_files = 0;
	t->phase = "starting";
	CF_RET(cf_bkp_rx_init(&rx));
	uint16_t type;
	uint32_t len;
	CF_GO(rc, cf_bkp_recv(s, &type, buf, &len));
	if (type != BKF_INFO) {
		rc = CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer), "expected INFO, got frame %u", type);
		goto err;
	}
	CF_GO(rc, cf_bkp_info_decode(buf, len, &t->bi));
	t->total = t->bi.npages * t->bi.page_size;
	t->phase = t->bi.npages ? "database" : "logs";

	/* Files until the last generation has ended. DATA payloads are received
	 * straight into the set's block buffers (cf_archive_file_reserve), and
	 * their frame checked there; other frames into BUF. */
	int in_file = 0, rolled = 0;
	uint64_t fsize = 0, fgot = 0;
	uint32_t expect_gen = t->bi.gen_first;
	for (;;) {
		int pfd = -1;
		CF_GO(rc, cf_bkp_rx_head(s, &rx, fast ? &pfd : NULL));
		type = rx.type;
		len = rx.len;
		if (type == BKF_DATA && in_file && pfd < 0) {
			CF_GO(rc, within_file(s, fgot, len, fsize));
			while (rx.left) {
				void *dst;
				size_t room;
				CF_GO(rc, cf_archive_file_reserve(w, &dst, &room));
				size_t n = rx.left < room ? rx.left : room;
				rc = cf_bkp_rx_read(s, &rx, dst, n);
				int rc2 = cf_archive_file_commit(w, rc ? 0 : n);
				CF_GO(rc, rc ? rc : rc2);
			}
			/* A damaged frame fails the backup: its bytes never reach a visible set. */
			CF_GO(rc, cf_bkp_rx_end(s, &rx, NULL));
			fgot += len;
			t->done += len;
			tick(t);
			continue;
		}
		if (type == BKF_ZEROS && in_file && pfd < 0) {
			uint32_t zn;
			CF_GO(rc, cf_bkp_rx_read(s, &rx, buf, len));
			CF_GO(rc, cf_bkp_rx_end(s, &rx, NULL));
			CF_GO(rc, cf_bkp_zeros_decode(buf, len, &zn));
			CF_GO(rc, within_file(s, fgot, zn, fsize));
			CF_GO(rc, put_zeros(w, zn));
			fgot += zn;
			t->done += zn;
			tick(t);
			continue;
		}
		rc = cf_bkp_rx_read(s, &rx, buf, len);
		if (rc == COFFER_OK)
			rc = cf_bkp_rx_end(s, &rx, buf);
		if (rc) {
			if (pfd >= 0)
				close(pfd);
			goto err;
		}
		if (type == BKF_FILE_FD && !in_file && rolled) {
			uint32_t gen = 0;
			int used = 0;
			rc = take_fd_file(t, buf, len, pfd, &gen, &used);
			pfd = -1;
			if (rc)
				goto err;
			if (gen != expect_gen) {
				rc = CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer, CF_GEN(gen)),
					      "the server offered log generation %u, expected %u", gen, expect_gen);
				goto err;
			}
			if (used) {
				expect_gen++;
				t->fast_files++;
				if (expect_gen > t->bi.gen_last)
					break;
			} else {
				fast = 0; /* the server sends this and the rest over the stream */
			}
			continue;
		}
		if (pfd >= 0) {
			close(pfd);
			rc = CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
				      "the server passed a descriptor with frame %u", type);
			goto err;
		}
		if (type == BKF_FILE && !in_file) {
			char name[64];
			uint32_t gen;
			CF_GO(rc, cf_bkp_file_decode(buf, len, name, sizeof name, &fsize));
			CF_GO(rc, cf_archive_name_check(name, strlen(name), s->peer, &gen));
			if (gen && !rolled) {
				rc = CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer, CF_GEN(gen)),
					      "the server sent log generation %u before it rolled the log", gen);
				goto err;
			}
			if (gen && gen != expect_gen) {
				rc = CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer, CF_GEN(gen)),
					      "the server sent log generation %u, expected %u", gen, expect_gen);
				goto err;
			}
			CF_GO(rc, cf_archive_file_begin(w, name));
			cf_archive_file_expect(w, fsize);
			in_file = 1;
			fgot = 0;
			if (gen) {
				t->phase = "logs";
				t->total += fsize;
				expect_gen++;
			}
		} else if (type == BKF_FILE_END && in_file) {
			if (fgot != fsize) {
				rc = CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
					      "a file ended after %llu of %llu bytes", (unsigned long long)fgot,
					      (unsigned long long)fsize);
				goto err;
			}
			CF_GO(rc, cf_archive_file_end(w));
			in_file = 0;
			if (rolled && expect_gen > t->bi.gen_last)
				break;
		} else if (type == BKF_ROLLED && !in_file && len == 4) {
			memcpy(&t->bi.gen_last, buf, 4);
			if (t->bi.gen_last < t->bi.gen_first) {
				rc = CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
					      "rolled generation %u before the first %u", t->bi.gen_last,
					      t->bi.gen_first);
				goto err;
			}
			rolled = 1;
		} else {
			rc = CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.peer = s->peer),
				      "unexpected backup frame %u from %s", type, s->peer);
			goto err;
		}
	}

	cf_bkp_rx_free(&rx);
	return COFFER_OK;
err:
	cf_bkp_rx_free(&rx);
	return rc;
}

int cf_take_finish(struct cf_take *t, int64_t end_us)
{
	const struct coffer_backup_info *bi = &t->bi;
	cf_set_meta meta;
	memset(&meta, 0, sizeof meta);
	memcpy(meta.set_id, bi->id, 16);
	memcpy(meta.parent_id, bi->parent_id, 16);
	memcpy(meta.signature, bi->signature, 16);
	meta.type = bi->type;
	meta.page_size = bi->page_size;
	meta.gen_first = bi->gen_first;
	meta.gen_last = bi->gen_last;
	meta.redo_lsn = bi->redo_lsn;
	meta.start_us = bi->start_us;
	meta.end_us = end_us;
	cf_archive_writer *w = t->w;
	t->w = NULL;
	return cf_archive_finish(w, &meta);
}
