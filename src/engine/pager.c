/*
 * pager.c - the page cache (design and invariants in pager.h).
 *
 * One mutex (p->mu) guards the hash table, the LRU list, frame states, the
 * version chains and the GC queue. File I/O happens outside it: a frame
 * being loaded is in state LOADING and others wait on p->loaded.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "common/os.h"
#include "engine/pager.h"

enum { FR_LOADING = 1, FR_READY = 2 };

typedef struct frame {
	cf_pgno pgno;
	int state;
	int dirty;
	int writing;           /* write-back in progress */
	int waiters;
	cf_img *cur;           /* latest image (NULL while loading) */
	struct frame *hnext;   /* hash chain */
	struct frame *prev, *next; /* LRU: head = most recent */
} frame;

struct gc_entry {
	frame *f;
	cf_lsn superseded;
};

struct cf_pager {
	int fd;
	char *path;
	uint32_t page_size;
	uint64_t budget;      /* cache_bytes */
	cf_flush_log_fn flush_log;
	void *flush_arg;

	pthread_mutex_t mu;
	pthread_cond_t loaded;
	pthread_rwlock_t io_lock; /* writers of pages: exclusive; backup re-reads: shared */
	frame **buckets;
	uint32_t nbuckets;    /* power of two */
	frame lru;            /* sentinel */
	uint64_t nframes, ndirty, nversions;

	struct gc_entry *gcq; /* ring buffer ordered by superseded */
	size_t gc_cap, gc_head, gc_len;

	struct cf_pager_stats st;

	/* damaged pages met by readers (cf_pager_on_damage) */
	cf_page_damage_fn on_damage;
	void *damage_arg;
	cf_pgno dmg_recent[CF_PAGER_DAMAGE_RECENT]; /* pgno + 1; 0 = free */
	unsigned dmg_next;                          /* ring position */
	int64_t dmg_sec;                            /* the second counted */
	unsigned dmg_in_sec;
	uint64_t dmg_suppressed;
};

/* ---- images ---- */

static cf_img *img_alloc(cf_pager *p)
{
	/* One allocation: the struct, then the page (16-byte aligned, as malloc
	 * gives). Not aligned_alloc: glibc's memalign splits chunks and, with
	 * images freed and allocated in random order, the heap fragmented to
	 * twice the cache size. */
	size_t hdr = (sizeof(cf_img) + 15) & ~(size_t)15;
	uint8_t *mem = malloc(hdr + p->page_size);
	if (mem == NULL)
		return NULL;
	cf_img *img = (cf_img *)(void *)mem;
	atomic_init(&img->refs, 1);
	img->version = 0;
	img->superseded = 0;
	img->older = NULL;
	img->data = mem + hdr;
	return img;
}

int cf_img_new(cf_pager *p, cf_img **out)
{
	cf_img *img = img_alloc(p);
	if (img == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a page of %u bytes", p->page_size);
	memset(img->data, 0, p->page_size);
	*out = img;
	return COFFER_OK;
}

int cf_img_copy(cf_pager *p, const cf_img *src, cf_img **out)
{
	cf_img *img = img_alloc(p);
	if (img == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a page of %u bytes", p->page_size);
	memcpy(img->data, src->data, p->page_size);
	*out = img;
	return COFFER_OK;
}

void cf_img_release(cf_img *img)
{
	if (img != NULL && atomic_fetch_sub(&img->refs, 1) == 1)
		free(img);
}

/* ---- hash and LRU (p->mu held) ---- */

static uint32_t hash_pgno(cf_pgno pgno)
{
	uint32_t h = pgno * 2654435761u;
	return h ^ (h >> 16);
}

static frame *lookup(cf_pager *p, cf_pgno pgno)
{
	for (frame *f = p->buckets[hash_pgno(pgno) & (p->nbuckets - 1)]; f; f = f->hnext)
		if (f->pgno == pgno)
			return f;
	return NULL;
}

static void lru_unlink(frame *f)
{
	f->prev->next = f->next;
	f->next->prev = f->prev;
}

static void lru_front(cf_pager *p, frame *f)
{
	f->next = p->lru.next;
	f->prev = &p->lru;
	p->lru.next->prev = f;
	p->lru.next = f;
}

static frame *frame_insert(cf_pager *p, cf_pgno pgno)
{
	frame *f = calloc(1, sizeof *f);
	if (f == NULL)
		return NULL;
	f->pgno = pgno;
	uint32_t b = hash_pgno(pgno) & (p->nbuckets - 1);
	f->hnext = p->buckets[b];
	p->buckets[b] = f;
	lru_front(p, f);
	p->nframes++;
	return f;
}

static void frame_remove(cf_pager *p, frame *f)
{
	frame **pp = &p->buckets[hash_pgno(f->pgno) & (p->nbuckets - 1)];
	while (*pp != f)
		pp = &(*pp)->hnext;
	*pp = f->hnext;
	lru_unlink(f);
	p->nframes--;
	cf_img_release(f->cur);
	free(f);
}

/* Drop a frame whose load failed, once nobody waits for it. */
static void frame_discard(cf_pager *p, frame *f)
{
	frame **pp = &p->buckets[hash_pgno(f->pgno) & (p->nbuckets - 1)];
	while (*pp && *pp != f)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = f->hnext;
	lru_unlink(f);
	p->nframes--;
	free(f);
}

static uint64_t cache_bytes(const cf_pager *p)
{
	return (p->nframes + p->nversions) * (uint64_t)p->page_size;
}

/* Evict clean, unchained frames from the cold end until within budget. */
static void evict(cf_pager *p)
{
	frame *f = p->lru.prev;
	while (cache_bytes(p) > p->budget && f != &p->lru) {
		frame *prev = f->prev;
		if (f->state == FR_READY && !f->dirty && !f->writing && f->waiters == 0 &&
		    f->cur && f->cur->older == NULL) {
			frame_remove(p, f);
			p->st.evictions++;
		}
		f = prev;
	}
}

/* ---- open / close ---- */

int cf_pager_open(cf_pager **out, int fd, const char *path, uint32_t page_size,
		  uint64_t cache_bytes_, cf_flush_log_fn flush_log, void *flush_arg)
{
	cf_pager *p = calloc(1, sizeof *p);
	if (p == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the page cache");
	p->fd = fd;
	p->path = strdup(path);
	p->page_size = page_size;
	p->budget = cache_bytes_ < 64u * page_size ? 64u * page_size : cache_bytes_;
	p->flush_log = flush_log;
	p->flush_arg = flush_arg;
	uint64_t want = p->budget / page_size * 2;
	p->nbuckets = 1024;
	while (p->nbuckets < want && p->nbuckets < (1u << 24))
		p->nbuckets <<= 1;
	p->buckets = calloc(p->nbuckets, sizeof *p->buckets);
	p->gc_cap = 1024;
	p->gcq = malloc(p->gc_cap * sizeof *p->gcq);
	if (p->path == NULL || p->buckets == NULL || p->gcq == NULL) {
		free(p->path);
		free(p->buckets);
		free(p->gcq);
		free(p);
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the page cache");
	}
	p->lru.next = p->lru.prev = &p->lru;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->loaded, NULL);
	pthread_rwlock_init(&p->io_lock, NULL);
	*out = p;
	return COFFER_OK;
}

static void drop_chain(cf_pager *p, cf_img *img)
{
	while (img) {
		cf_img *next = img->older;
		img->older = NULL;
		cf_img_release(img);
		p->nversions--;
		img = next;
	}
}

void cf_pager_close(cf_pager *p)
{
	if (p == NULL)
		return;
	while (p->lru.next != &p->lru) {
		frame *f = p->lru.next;
		if (f->cur) {
			drop_chain(p, f->cur->older);
			f->cur->older = NULL;
		}
		frame_remove(p, f);
	}
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->loaded);
	pthread_rwlock_destroy(&p->io_lock);
	free(p->buckets);
	free(p->gcq);
	free(p->path);
	free(p);
}

uint32_t cf_pager_page_size(const cf_pager *p) { return p->page_size; }
const char *cf_pager_path(const cf_pager *p) { return p->path; }
int cf_pager_fd(const cf_pager *p) { return p->fd; }

/* ---- reading ---- */

/* Read PGNO from the file into IMG; a page past the end reads as zeroes. */
static int read_page(cf_pager *p, cf_pgno pgno, cf_img *img, enum cf_page_state *st)
{
	int rc = cf_pread_full(p->fd, p->path, img->data, p->page_size,
			       (uint64_t)pgno * p->page_size);
	if (rc == COFFER_E_SHORT_READ) {
		memset(img->data, 0, p->page_size);
		coffer_error_clear();
		rc = COFFER_OK;
	}
	if (rc)
		return rc;
	*st = cf_page_verify(img->data, p->page_size, pgno);
	img->version = cf_page_lsn(img->data);
	return COFFER_OK;
}

void cf_pager_on_damage(cf_pager *p, cf_page_damage_fn fn, void *arg)
{
	p->on_damage = fn;
	p->damage_arg = arg;
}

/* Forget PGNO as reported (it was rewritten; p->mu held). */
static void damage_forget(cf_pager *p, cf_pgno pgno)
{
	for (unsigned i = 0; i < CF_PAGER_DAMAGE_RECENT; i++)
		if (p->dmg_recent[i] == pgno + 1)
			p->dmg_recent[i] = 0;
}

/* A reader's load of PGNO found the page damaged (state ST, bytes PG); the
 * error record describes it. Report it unless it was reported lately or
 * the rate limit is spent. Called without p->mu. */
static void damage_report(cf_pager *p, cf_pgno pgno, enum cf_page_state st, const uint8_t *pg)
{
	if (p->on_damage == NULL)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t suppressed = 0;
	int go = 1;
	pthread_mutex_lock(&p->mu);
	for (unsigned i = 0; i < CF_PAGER_DAMAGE_RECENT && go; i++)
		if (p->dmg_recent[i] == pgno + 1)
			go = 0;
	if (go) {
		if (p->dmg_sec != (int64_t)ts.tv_sec) {
			p->dmg_sec = (int64_t)ts.tv_sec;
			p->dmg_in_sec = 0;
		}
		if (p->dmg_in_sec >= CF_PAGER_DAMAGE_PER_SEC) {
			p->dmg_suppressed++; /* not remembered: reported when next met */
			go = 0;
		} else {
			p->dmg_in_sec++;
			p->dmg_recent[p->dmg_next] = pgno + 1;
			p->dmg_next = (p->dmg_next + 1) % CF_PAGER_DAMAGE_RECENT;
			suppressed = p->dmg_suppressed;
			p->dmg_suppressed = 0;
		}
	}
	pthread_mutex_unlock(&p->mu);
	if (go)
		p->on_damage(p->damage_arg, pgno, st, cf_get64(pg), cf_page_checksum(pg, p->page_size),
			     suppressed);
}

/* Find or load the frame of PGNO; returns with p->mu held and the frame READY. */
static int frame_get(cf_pager *p, cf_pgno pgno, frame **out, enum cf_page_state *st)
{
	*st = CF_PAGE_OK;
	for (;;) {
		frame *f = lookup(p, pgno);
		if (f && f->state == FR_READY) {
			p->st.hits++;
			lru_unlink(f);
			lru_front(p, f);
			*out = f;
			return COFFER_OK;
		}
		if (f) { /* loading: wait for it */
			f->waiters++;
			pthread_cond_wait(&p->loaded, &p->mu);
			f->waiters--;
			if (f->state == 0 && f->waiters == 0)
				frame_discard(p, f); /* the load failed; last one out drops it */
			continue;
		}
		evict(p);
		f = frame_insert(p, pgno);
		if (f == NULL)
			return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a cache frame");
		f->state = FR_LOADING;
		p->st.misses++;
		pthread_mutex_unlock(&p->mu);

		int rc;
		cf_img *img = img_alloc(p);
		if (img == NULL) {
			rc = CF_ERROR(COFFER_E_NOMEM, NULL, "no memory to read page %u", pgno);
		} else {
			rc = read_page(p, pgno, img, st);
			if (rc == COFFER_OK && *st != CF_PAGE_OK && *st != CF_PAGE_ZERO) {
				rc = cf_page_error(*st, img->data, p->page_size, pgno, p->path);
				damage_report(p, pgno, *st, img->data);
			}
			if (rc == COFFER_OK)
				cf_put64(img->data, 0); /* P3 */
		}

		pthread_mutex_lock(&p->mu);
		if (rc) {
			cf_img_release(img);
			f->state = 0;
			if (f->waiters == 0)
				frame_discard(p, f);
			pthread_cond_broadcast(&p->loaded);
			return rc;
		}
		f->cur = img;
		f->state = FR_READY;
		pthread_cond_broadcast(&p->loaded);
		*out = f;
		return COFFER_OK;
	}
}

int cf_pager_get(cf_pager *p, cf_pgno pgno, cf_lsn snapshot, int zero_ok, cf_img **out)
{
	enum cf_page_state st;
	frame *f = NULL;
	pthread_mutex_lock(&p->mu);
	int rc = frame_get(p, pgno, &f, &st);
	if (rc || f == NULL) {
		pthread_mutex_unlock(&p->mu);
		return rc ? rc : CF_ERROR(COFFER_E_INTERNAL, NULL, "no frame for page %u", pgno);
	}
	cf_img *img = f->cur;
	while (img && img->version > snapshot)
		img = img->older;
	if (img == NULL) {
		pthread_mutex_unlock(&p->mu);
		return CF_ERROR(COFFER_E_INTERNAL, CF_OBJ(.file = p->path, CF_PAGE(pgno)),
				"no version of page %u is old enough for snapshot %u:%u", pgno,
				CF_LSN_GEN(snapshot), CF_LSN_OFF(snapshot));
	}
	if (!zero_ok && cf_page_type(img->data) == CF_PT_ZERO && img->version == 0) {
		pthread_mutex_unlock(&p->mu);
		return CF_ERROR(COFFER_E_PAGE_CORRUPT,
				CF_OBJ(.file = p->path, CF_PAGE(pgno), CF_OFF((uint64_t)pgno * p->page_size)),
				"page %u of \"%s\" is referenced but was never written", pgno, p->path);
	}
	cf_img_ref(img);
	pthread_mutex_unlock(&p->mu);
	*out = img;
	return COFFER_OK;
}

int cf_pager_get_raw(cf_pager *p, cf_pgno pgno, cf_img **out, enum cf_page_state *st)
{
	pthread_mutex_lock(&p->mu);
	frame *f = lookup(p, pgno);
	if (f && f->state == FR_READY) {
		cf_img_ref(f->cur);
		*out = f->cur;
		*st = CF_PAGE_OK;
		pthread_mutex_unlock(&p->mu);
		return COFFER_OK;
	}
	pthread_mutex_unlock(&p->mu);
	/* Not cached: read it without caching (recovery decides what to do
	 * with a damaged page and publishes the result). */
	cf_img *img = img_alloc(p);
	if (img == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory to read page %u", pgno);
	int rc = read_page(p, pgno, img, st);
	if (rc) {
		cf_img_release(img);
		return rc;
	}
	cf_put64(img->data, 0);
	if (*st != CF_PAGE_OK)
		img->version = 0;
	*out = img;
	return COFFER_OK;
}

/* ---- publishing and versions ---- */

static int gc_push(cf_pager *p, frame *f, cf_lsn superseded)
{
	if (p->gc_len == p->gc_cap) {
		size_t ncap = p->gc_cap * 2;
		struct gc_entry *n = malloc(ncap * sizeof *n);
		if (n == NULL)
			return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the version queue");
		for (size_t i = 0; i < p->gc_len; i++)
			n[i] = p->gcq[(p->gc_head + i) % p->gc_cap];
		free(p->gcq);
		p->gcq = n;
		p->gc_cap = ncap;
		p->gc_head = 0;
	}
	p->gcq[(p->gc_head + p->gc_len) % p->gc_cap] = (struct gc_entry){f, superseded};
	p->gc_len++;
	return COFFER_OK;
}

int cf_pager_publish(cf_pager *p, cf_pgno pgno, cf_img *img, cf_lsn version)
{
	img->version = version;
	img->superseded = 0;
	cf_page_set_lsn(img->data, version);
	cf_put64(img->data, 0);
	pthread_mutex_lock(&p->mu);
	damage_forget(p, pgno);
	frame *f = lookup(p, pgno);
	while (f && f->state != FR_READY) {
		f->waiters++;
		pthread_cond_wait(&p->loaded, &p->mu);
		f->waiters--;
		f = lookup(p, pgno);
	}
	if (f == NULL) {
		f = frame_insert(p, pgno);
		if (f == NULL) {
			pthread_mutex_unlock(&p->mu);
			cf_img_release(img);
			return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a cache frame");
		}
		f->state = FR_READY;
		f->cur = img;
	} else {
		cf_img *old = f->cur;
		int rc = gc_push(p, f, version);
		if (rc) {
			pthread_mutex_unlock(&p->mu);
			cf_img_release(img);
			return rc;
		}
		old->superseded = version;
		img->older = old; /* the frame's reference moves to the chain */
		f->cur = img;
		p->nversions++;
		lru_unlink(f);
		lru_front(p, f);
	}
	if (!f->dirty) {
		f->dirty = 1;
		p->ndirty++;
	}
	pthread_mutex_unlock(&p->mu);
	return COFFER_OK;
}

void cf_pager_gc(cf_pager *p, cf_lsn horizon)
{
	pthread_mutex_lock(&p->mu);
	while (p->gc_len > 0) {
		struct gc_entry *e = &p->gcq[p->gc_head];
		if (e->superseded > horizon)
			break;
		/* Cut the chain of e->f at the first image superseded <= horizon. */
		cf_img *keep = e->f->cur;
		while (keep->older && keep->older->superseded > horizon)
			keep = keep->older;
		cf_img *drop = keep->older;
		keep->older = NULL;
		drop_chain(p, drop);
		p->gc_head = (p->gc_head + 1) % p->gc_cap;
		p->gc_len--;
	}
	evict(p);
	pthread_mutex_unlock(&p->mu);
}

/* ---- writing ---- */

int cf_pager_write_image(cf_pager *p, cf_pgno pgno, const uint8_t *data)
{
	uint8_t *buf = aligned_alloc(4096, p->page_size);
	if (buf == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory to write page %u", pgno);
	memcpy(buf, data, p->page_size);
	cf_page_seal(buf, p->page_size);
	pthread_rwlock_wrlock(&p->io_lock);
	int rc = cf_pwrite_full(p->fd, p->path, buf, p->page_size, (uint64_t)pgno * p->page_size);
	pthread_rwlock_unlock(&p->io_lock);
	free(buf);
	if (rc == COFFER_OK)
		p->st.writes++;
	return rc;
}

static int cmp_frame_pgno(const void *a, const void *b)
{
	cf_pgno x = (*(frame *const *)a)->pgno, y = (*(frame *const *)b)->pgno;
	return x < y ? -1 : x > y;
}

int cf_pager_writeback(cf_pager *p, cf_lsn upto, uint64_t *written)
{
	int rc = COFFER_OK;
	uint64_t n = 0;
	frame **list = NULL;
	cf_img **imgs = NULL;
	size_t cnt = 0;
	cf_lsn maxv = 0;

	pthread_mutex_lock(&p->mu);
	size_t cap = p->ndirty;
	if (cap) {
		list = malloc(cap * sizeof *list);
		imgs = malloc(cap * sizeof *imgs);
		if (list == NULL || imgs == NULL) {
			pthread_mutex_unlock(&p->mu);
			rc = CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for write-back");
			goto out;
		}
		for (frame *f = p->lru.next; f != &p->lru && cnt < cap; f = f->next) {
			if (f->state == FR_READY && f->dirty && !f->writing && f->cur->version <= upto) {
				f->writing = 1;
				list[cnt++] = f;
				if (f->cur->version > maxv)
					maxv = f->cur->version;
			}
		}
		qsort(list, cnt, sizeof *list, cmp_frame_pgno);
		for (size_t i = 0; i < cnt; i++) {
			imgs[i] = list[i]->cur;
			cf_img_ref(imgs[i]);
		}
	}
	pthread_mutex_unlock(&p->mu);
	if (cnt == 0)
		goto out;

	if (p->flush_log && maxv)
		rc = p->flush_log(p->flush_arg, maxv); /* P2 */
	for (size_t i = 0; i < cnt && rc == COFFER_OK; i++) {
		rc = cf_pager_write_image(p, list[i]->pgno, imgs[i]->data);
		if (rc == COFFER_OK)
			n++;
	}
	if (rc == COFFER_OK)
		rc = cf_fdatasync(p->fd, p->path);

	pthread_mutex_lock(&p->mu);
	for (size_t i = 0; i < cnt; i++) {
		frame *f = list[i];
		f->writing = 0;
		if (rc == COFFER_OK && f->cur == imgs[i] && f->dirty) {
			f->dirty = 0;
			p->ndirty--;
		}
		cf_img_release(imgs[i]);
	}
	if (rc == COFFER_OK)
		evict(p);
	pthread_mutex_unlock(&p->mu);
out:
	free(list);
	free(imgs);
	if (written)
		*written = n;
	return rc;
}

void cf_pager_io_hold(cf_pager *p)
{
	pthread_rwlock_rdlock(&p->io_lock);
}

void cf_pager_io_release(cf_pager *p)
{
	pthread_rwlock_unlock(&p->io_lock);
}

void cf_pager_stats(cf_pager *p, struct cf_pager_stats *st)
{
	pthread_mutex_lock(&p->mu);
	*st = p->st;
	st->frames = p->nframes;
	st->dirty = p->ndirty;
	st->versions = p->nversions;
	st->bytes = cache_bytes(p);
	pthread_mutex_unlock(&p->mu);
}
