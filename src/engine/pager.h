/*
 * pager.h - the page cache: versioned, immutable page images.
 *
 * A cached page (a frame) holds its latest committed image and, while some
 * reader may still need them, older images ("versions"). Published images
 * are immutable: a reader pins one (refcount) and reads it without any
 * lock; the single writer never changes an image others can see - it
 * changes a private copy and publishes it at commit as the page's new
 * current image, pushing the old one onto the frame's version chain.
 *
 *   snapshot S reads, for each page, the newest image whose version <= S
 *   (version = the LSN of the commit that produced the image);
 *   an old image superseded at V is dropped once no reader can have S < V
 *   (cf_pager_gc with the horizon: min(oldest reader snapshot, durable LSN)).
 *
 * Invariants:
 *  P1 a frame with a version chain, a dirty image or a load in progress is
 *     never evicted; so a page not in the cache has its latest committed image
 *     on disk and nobody needs an older one;
 *  P2 a dirty image with version V is written to the file only after the log
 *     is durable up to V (flush_log callback) - the write-ahead rule;
 *  P3 in-memory images keep bytes 0..7 (checksum) zero; the checksum is
 *     computed into a scratch copy when the page is written.
 * Memory: frames + chains stay within cache_bytes, except pages that are
 * pinned or dirty at that moment (write-back then runs before more loads).
 */
#ifndef COFFER_ENGINE_PAGER_H
#define COFFER_ENGINE_PAGER_H

#include <stdatomic.h>
#include <stdint.h>

#include "engine/page.h"

typedef struct cf_img {
	atomic_int refs;
	cf_lsn version;        /* commit LSN that produced this image */
	cf_lsn superseded;     /* commit LSN of the next version, 0 while current */
	struct cf_img *older;  /* next older version still kept */
	uint8_t *data;         /* page_size bytes */
} cf_img;

typedef struct cf_pager cf_pager;

/* Make the log durable up to LSN (the write-ahead rule, P2). */
typedef int (*cf_flush_log_fn)(void *arg, cf_lsn lsn);

struct cf_pager_stats {
	uint64_t hits, misses, evictions, writes, frames, dirty, versions, bytes;
};

int cf_pager_open(cf_pager **out, int fd, const char *path, uint32_t page_size,
		  uint64_t cache_bytes, cf_flush_log_fn flush_log, void *flush_arg);
void cf_pager_close(cf_pager *p);

/* A page read from the file for a reader failed its check (checksum or
 * page number): called with the thread's error record describing it (the
 * reader gets the same error), the stored and computed checksums, and how
 * many reports were dropped by the rate limit since the last one. Called
 * without the pager's lock held. Not a flood: a page reported is not
 * reported again while it is among the last CF_PAGER_DAMAGE_RECENT pages
 * reported (until it is rewritten: cf_pager_publish forgets it), and at
 * most CF_PAGER_DAMAGE_PER_SEC reports are made per second. */
typedef void (*cf_page_damage_fn)(void *arg, cf_pgno pgno, enum cf_page_state st, uint64_t stored,
				  uint64_t computed, uint64_t suppressed);
#define CF_PAGER_DAMAGE_RECENT 16
#define CF_PAGER_DAMAGE_PER_SEC 10
/* Set before the pager is shared between threads. */
void cf_pager_on_damage(cf_pager *p, cf_page_damage_fn fn, void *arg);

/* New private image (refs 1, version 0), zero-filled. */
int cf_img_new(cf_pager *p, cf_img **out);
/* New private copy of SRC's data. */
int cf_img_copy(cf_pager *p, const cf_img *src, cf_img **out);
void cf_img_release(cf_img *img);
static inline void cf_img_ref(cf_img *img) { atomic_fetch_add(&img->refs, 1); }

/* The image of PGNO visible to SNAPSHOT (CF_LSN_MAX: the latest), pinned.
 * Loads it from the file if needed, verifying checksum and page number.
 * Errors: COFFER_E_PAGE_CHECKSUM, COFFER_E_PAGE_NUMBER, COFFER_E_SHORT_READ,
 * COFFER_E_IO..., COFFER_E_NOMEM. A never-written (all-zero) page is
 * returned as is when ZERO_OK, else COFFER_E_PAGE_CORRUPT. */
int cf_pager_get(cf_pager *p, cf_pgno pgno, cf_lsn snapshot, int zero_ok, cf_img **out);

/* For recovery: the latest image, or the file's bytes whatever their state
 * (*st says: ok, zero, bad checksum, bad pgno; a page past the end of the
 * file reads as zero). Pinned. */
int cf_pager_get_raw(cf_pager *p, cf_pgno pgno, cf_img **out, enum cf_page_state *st);

/* Publish IMG (a private image, now immutable) as the latest image of PGNO
 * at VERSION; the pager takes over the caller's reference. The previous
 * image stays available to older snapshots until cf_pager_gc passes VERSION.
 * The frame becomes dirty. */
int cf_pager_publish(cf_pager *p, cf_pgno pgno, cf_img *img, cf_lsn version);

/* Drop old versions superseded at or before HORIZON. */
void cf_pager_gc(cf_pager *p, cf_lsn horizon);

/* Write every dirty page whose version <= UPTO (the log must be durable to
 * the highest of them; flush_log is called), then fdatasync the file. */
int cf_pager_writeback(cf_pager *p, cf_lsn upto, uint64_t *written);

/* Write one page image to the file directly (recovery of a page that is not
 * cached; the checksum is computed here). */
int cf_pager_write_image(cf_pager *p, cf_pgno pgno, const uint8_t *data);

/* Hold off page writes (shared) while a backup re-reads a page whose
 * checksum failed: a page torn by a concurrent write is then re-read whole. */
void cf_pager_io_hold(cf_pager *p);
void cf_pager_io_release(cf_pager *p);

void cf_pager_stats(cf_pager *p, struct cf_pager_stats *st);
uint32_t cf_pager_page_size(const cf_pager *p);
const char *cf_pager_path(const cf_pager *p);
int cf_pager_fd(const cf_pager *p);

#endif
