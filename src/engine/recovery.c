/*
 * recovery.c - replay of the log from the checkpoint's redo LSN.
 *
 * The log holds batches: page records (full images and diffs) followed by a
 * COMMIT record; a batch counts only once its COMMIT is read, so a batch cut
 * by a crash is ignored. Each page record of a batch whose end LSN is E is
 * applied when the page's own LSN is below E (replay is idempotent: a page
 * already holding the change is skipped). A page that fails its checksum is
 * repaired by a full image; a diff against a damaged page is an error naming
 * the page and the record. Replay can stop early at a time or LSN
 * (point-in-time recovery, coffer recover --until). A damaged log record
 * (not a torn tail, log_read.c R2) fails recovery, naming it, unless it lies
 * at or after an LSN target: then the target is reached before it.
 */
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "engine/env.h"

struct pending {
	uint16_t type;
	cf_lsn lsn;
	size_t off, len;
};

struct batch {
	struct pending *recs;
	size_t n, cap;
	uint8_t *data;
	size_t dlen, dcap;
};

static int batch_add(struct batch *b, const cf_log_rec *rec)
{
	if (b->n == b->cap) {
		size_t ncap = b->cap ? b->cap * 2 : 64;
		struct pending *np = realloc(b->recs, ncap * sizeof *np);
		if (np == NULL)
			return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for recovery");
		b->recs = np;
		b->cap = ncap;
	}
	if (b->dlen + rec->len > b->dcap) {
		size_t ncap = b->dcap ? b->dcap : 65536;
		while (ncap < b->dlen + rec->len)
			ncap *= 2;
		uint8_t *nd = realloc(b->data, ncap);
		if (nd == NULL)
			return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for recovery");
		b->data = nd;
		b->dcap = ncap;
	}
	memcpy(b->data + b->dlen, rec->payload, rec->len);
	b->recs[b->n++] = (struct pending){rec->type, rec->lsn, b->dlen, rec->len};
	b->dlen += rec->len;
	return COFFER_OK;
}

static int apply_page(coffer_env *env, const struct pending *p, const uint8_t *payload,
		      cf_lsn version, struct cf_recovery_result *res)
{
	uint32_t ps = env->page_size;
	cf_log_rec rec = {.lsn = p->lsn, .type = p->type, .payload = payload, .len = p->len};
	cf_pgno pgno;
	const uint8_t *image = NULL;
	size_t ilen;
	uint32_t nranges;
	if (p->type == CF_LOG_PAGE_IMAGE) {
		CF_RET(cf_log_decode_page_image(&rec, &pgno, &image, &ilen));
		if (ilen != ps || cf_page_pgno(image) != pgno)
			return CF_ERROR(COFFER_E_LOG_CORRUPT,
					CF_OBJ(.file = env->logdir, CF_GEN(CF_LSN_GEN(p->lsn)),
					       CF_OFF(CF_LSN_OFF(p->lsn)), CF_PAGE(pgno)),
					"page image of page %u at log position %u:%u has %zu bytes for "
					"page %u (page size %u)",
					pgno, CF_LSN_GEN(p->lsn), CF_LSN_OFF(p->lsn), ilen,
					cf_page_pgno(image), ps);
	} else {
		CF_RET(cf_log_decode_page_diff(&rec, ps, &pgno, &nranges));
	}
	if (pgno < CF_PGNO_META)
		return CF_ERROR(COFFER_E_LOG_CORRUPT,
				CF_OBJ(.file = env->logdir, CF_GEN(CF_LSN_GEN(p->lsn)),
				       CF_OFF(CF_LSN_OFF(p->lsn))),
				"log record at %u:%u names header page %u", CF_LSN_GEN(p->lsn),
				CF_LSN_OFF(p->lsn), pgno);
	cf_img *cur, *img;
	enum cf_page_state st;
	CF_RET(cf_pager_get_raw(env->pager, pgno, &cur, &st));
	if (st == CF_PAGE_OK && cur->version >= version) {
		cf_img_release(cur);
		res->skipped++;
		return COFFER_OK;
	}
	int rc;
	if (image) {
		rc = cf_img_new(env->pager, &img);
		if (rc == COFFER_OK)
			memcpy(img->data, image, ps);
	} else {
		if (st != CF_PAGE_OK) {
			cf_img_release(cur);
			return CF_ERROR(COFFER_E_RECOVERY_FAILED,
					CF_OBJ(.file = env->dbpath, CF_PAGE(pgno),
					       CF_GEN(CF_LSN_GEN(p->lsn)), CF_OFF(CF_LSN_OFF(p->lsn))),
					"page %u of \"%s\" is %s and the log has no full image of it "
					"before the change at %u:%u",
					pgno, env->dbpath,
					st == CF_PAGE_ZERO ? "empty" : "damaged (bad checksum or page number)",
					CF_LSN_GEN(p->lsn), CF_LSN_OFF(p->lsn));
		}
		rc = cf_img_copy(env->pager, cur, &img);
		if (rc == COFFER_OK) {
			rc = cf_log_page_diff_apply(&rec, img->data, ps);
			if (rc)
				cf_img_release(img);
		}
	}
	cf_img_release(cur);
	if (rc)
		return rc;
	res->pages++;
	return cf_pager_publish(env->pager, pgno, img, version);
}

static int apply_batch(coffer_env *env, struct batch *b, cf_lsn version,
		       struct cf_recovery_result *res)
{
	for (size_t i = 0; i < b->n; i++) {
		const struct pending *p = &b->recs[i];
		if (p->type == CF_LOG_PAGE_IMAGE || p->type == CF_LOG_PAGE_DIFF) {
			CF_RET(apply_page(env, p, b->data + p->off, version, res));
		} else if (p->type == CF_LOG_HEADER) {
			/* A backup-history update: the header is rewritten with it
			 * at the checkpoint that ends recovery. */
			if (p->len != CF_HISTORY_SIZE)
				return CF_ERROR(COFFER_E_LOG_CORRUPT,
						CF_OBJ(.file = env->logdir, CF_GEN(CF_LSN_GEN(p->lsn)),
						       CF_OFF(CF_LSN_OFF(p->lsn))),
						"header record at %u:%u has %zu bytes, not %d",
						CF_LSN_GEN(p->lsn), CF_LSN_OFF(p->lsn), p->len, CF_HISTORY_SIZE);
			pthread_mutex_lock(&env->hdr_mu);
			cf_header_decode_history(&env->hdr, b->data + p->off);
			pthread_mutex_unlock(&env->hdr_mu);
		}
	}
	b->n = 0;
	b->dlen = 0;
	return COFFER_OK;
}

/*
 * A damaged record or a generation cut short (the reader's RC) at or after
 * the point-in-time target (coffer recover --until GEN:OFFSET): every commit
 * that ends at or before the target lies before the damage and was read,
 * so the target is reached. This is how an operator accepts losing the
 * records after a damaged one (log_read.c R2).
 */
static int damage_after_target(coffer_env *env, int rc)
{
	const coffer_error *e = coffer_error_last();
	if ((rc != COFFER_E_LOG_CHECKSUM && rc != COFFER_E_LOG_CORRUPT) || !env->opts.until_lsn ||
	    e->generation == COFFER_NONE || e->offset == COFFER_NONE)
		return 0;
	return CF_LSN((uint32_t)e->generation, (uint32_t)e->offset) >= env->opts.until_lsn;
}

int cf_recover(coffer_env *env, cf_lsn redo, struct cf_recovery_result *res)
{
	memset(res, 0, sizeof *res);
	res->end = redo;
	res->gen_first = CF_LSN_GEN(redo);
	res->gen_last = CF_LSN_GEN(redo);
	struct batch b = {0};
	cf_log_reader *r = NULL;
	int rc;
	CF_GO(rc, cf_log_reader_open(&r, env->logdir, env->hdr.signature, redo));
	for (;;) {
		cf_log_rec rec;
		rc = cf_log_reader_next(r, &rec);
		if (rc == COFFER_E_NOT_FOUND) {
			coffer_error_clear();
			rc = COFFER_OK;
			break;
		}
		if (rc) {
			if (damage_after_target(env, rc)) {
				/* Every commit up to the target was replayed:
				 * the operator chose to lose the rest. */
				coffer_error_clear();
				rc = COFFER_OK;
				res->stopped_early = 1;
				goto done;
			}
			goto err;
		}
		switch (rec.type) {
		case CF_LOG_COMMIT: {
			uint64_t txn;
			int64_t t_us;
			CF_GO(rc, cf_log_decode_commit(&rec, &txn, &t_us));
			if ((env->opts.until_us && t_us > env->opts.until_us) ||
			    (env->opts.until_lsn && rec.end > env->opts.until_lsn)) {
				res->stopped_early = 1;
				goto done;
			}
			CF_GO(rc, apply_batch(env, &b, rec.end, res));
			res->end = rec.end;
			res->commits++;
			res->last_commit_us = t_us;
			res->gen_last = CF_LSN_GEN(rec.lsn);
			if (res->commits % 256 == 0) {
				/* Bound memory: drop versions, write pages out. */
				cf_pager_gc(env->pager, CF_LSN_MAX);
				CF_GO(rc, cf_pager_writeback(env->pager, CF_LSN_MAX, NULL));
			}
			break;
		}
		case CF_LOG_NOOP:
			/* A backup's roll mark: the log is known complete up to its time. */
			if (rec.len == 16 && memcmp(rec.payload, "ROLLTIME", 8) == 0) {
				int64_t t;
				memcpy(&t, rec.payload + 8, 8);
				if (t > res->last_commit_us)
					res->marked_us = t;
			}
			__attribute__((fallthrough));
		case CF_LOG_CHECKPOINT:
			if (b.n == 0)
				res->end = rec.end;
			break;
		default:
			CF_GO(rc, batch_add(&b, &rec));
		}
	}
done:
	if (!res->stopped_early)
		res->torn = cf_log_reader_torn(r, &res->torn_at);
	cf_pager_gc(env->pager, CF_LSN_MAX);
err:
	cf_log_reader_close(r);
	free(b.recs);
	free(b.data);
	return rc;
}
