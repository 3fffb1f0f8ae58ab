/*
 * txn.c - transactions: private pages, free-page management and commit.
 *
 * A write transaction never changes a page others can see. The first write
 * to a page copies its latest image into a private page (pinning the image
 * it was copied from: the base). Commit turns the private pages into log
 * records - a full page image when the page is new or its base predates the
 * last checkpoint's redo point (so replay from there can rebuild a torn or
 * fuzzily copied page), else the byte ranges that changed - appends them with
 * a COMMIT record as one batch, publishes the pages as the new versions
 * (version = the LSN just past the batch), lets the next writer in, and then
 * waits for the log to be durable (group commit). Readers take the durable
 * LSN as their snapshot, so they see a commit only once it is durable.
 *
 * The logged-change rule (PostgreSQL's transam/README, adapted): 1 change
 * only private copies; 2 build and append the log records; 3 publish with the
 * batch's end LSN as the version; 4 a published page reaches the file only
 * after the log is durable to its version (pager.c, P2); 5 the first change
 * of a page after a checkpoint's redo point is logged as a full image.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "engine/btree.h"
#include "engine/env.h"

struct priv {
	cf_pgno pgno;
	cf_img *img;   /* private copy */
	cf_img *base;  /* image it was copied from (pinned), NULL for a new page */
	int fresh;     /* allocated in this transaction: log a full image */
	int freed;     /* freed again: not logged, not published */
};

struct troot {
	char *name;
	cf_pgno root;   /* 0: does not exist */
	int dirty;      /* root changed (or created/dropped) in this transaction */
};

struct cf_reader {
	cf_lsn snapshot;
	struct cf_reader *prev, *next;
};

struct coffer_txn {
	coffer_env *env;
	int rdonly;
	int failed;          /* an error left the private state uncertain */
	cf_lsn snapshot;
	cf_pageio io;
	struct cf_reader reader;

	struct priv *privs;
	size_t npriv, cap_priv;
	uint32_t *slots;     /* open-addressing index into privs (+1; 0 empty) */
	size_t nslots;

	struct troot *roots;
	size_t nroots, cap_roots;
	int meta_loaded;
};

#define TXN_OF(io_) ((coffer_txn *)(void *)((char *)(io_) - offsetof(coffer_txn, io)))

/* ---- private page index ---- */

static size_t slot_of(const coffer_txn *t, cf_pgno pgno)
{
	return (pgno * 2654435761u) & (t->nslots - 1);
}

static struct priv *priv_find(coffer_txn *t, cf_pgno pgno)
{
	if (t->nslots == 0)
		return NULL;
	for (size_t i = slot_of(t, pgno);; i = (i + 1) & (t->nslots - 1)) {
		uint32_t s = t->slots[i];
		if (s == 0)
			return NULL;
		if (t->privs[s - 1].pgno == pgno)
			return &t->privs[s - 1];
	}
}

static int priv_reindex(coffer_txn *t, size_t nslots)
{
	uint32_t *slots = calloc(nslots, sizeof *slots);
	if (slots == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the transaction's page index");
	free(t->slots);
	t->slots = slots;
	t->nslots = nslots;
	for (size_t k = 0; k < t->npriv; k++) {
		size_t i = slot_of(t, t->privs[k].pgno);
		while (t->slots[i])
			i = (i + 1) & (nslots - 1);
		t->slots[i] = (uint32_t)k + 1;
	}
	return COFFER_OK;
}

static int priv_add(coffer_txn *t, cf_pgno pgno, cf_img *img, cf_img *base, int fresh,
		    struct priv **out)
{
	if (t->npriv == t->cap_priv) {
		size_t ncap = t->cap_priv ? t->cap_priv * 2 : 16;
		struct priv *n = realloc(t->privs, ncap * sizeof *n);
		if (n == NULL)
			return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the transaction's pages");
		t->privs = n;
		t->cap_priv = ncap;
	}
	if ((t->npriv + 1) * 2 > t->nslots)
		CF_RET(priv_reindex(t, t->nslots ? t->nslots * 2 : 64));
	struct priv *p = &t->privs[t->npriv];
	*p = (struct priv){.pgno = pgno, .img = img, .base = base, .fresh = fresh};
	size_t i = slot_of(t, pgno);
	while (t->slots[i])
		i = (i + 1) & (t->nslots - 1);
	t->slots[i] = (uint32_t)++t->npriv;
	*out = p;
	return COFFER_OK;
}

/* ---- cf_pageio for the B+tree ---- */

static int io_read(cf_pageio *io, cf_pgno pgno, const uint8_t **page, void **pin)
{
	coffer_txn *t = TXN_OF(io);
	struct priv *p = priv_find(t, pgno);
	if (p) {
		if (p->freed)
			return CF_ERROR(COFFER_E_INTERNAL, CF_OBJ(.file = io->file, CF_PAGE(pgno)),
					"page %u read after it was freed", pgno);
		*page = p->img->data;
		*pin = NULL;
		return COFFER_OK;
	}
	if (pgno < CF_PGNO_META)
		return CF_ERROR(COFFER_E_PAGE_CORRUPT, CF_OBJ(.file = io->file, CF_PAGE(pgno)),
				"a link points at header page %u", pgno);
	cf_img *img;
	CF_RET(cf_pager_get(t->env->pager, pgno, t->snapshot, 0, &img));
	*page = img->data;
	*pin = img;
	return COFFER_OK;
}

static void io_release(cf_pageio *io, void *pin)
{
	(void)io;
	cf_img_release(pin);
}

static int txn_writable(coffer_txn *t)
{
	if (t->rdonly)
		return CF_ERROR(COFFER_E_READ_ONLY, NULL, "a read-only transaction cannot change the store");
	if (t->failed)
		return CF_ERROR(COFFER_E_TXN_CONFLICT, NULL,
				"the transaction failed earlier and can only be aborted");
	if (atomic_load(&t->env->fatal))
		return CF_ERROR(COFFER_E_FATAL, CF_OBJ(.file = t->env->dir), "%s", t->env->fatal_msg);
	return COFFER_OK;
}

static int io_write(cf_pageio *io, cf_pgno pgno, uint8_t **page)
{
	coffer_txn *t = TXN_OF(io);
	CF_RET(txn_writable(t));
	struct priv *p = priv_find(t, pgno);
	if (p) {
		if (p->freed)
			return CF_ERROR(COFFER_E_INTERNAL, CF_OBJ(.file = io->file, CF_PAGE(pgno)),
					"page %u written after it was freed", pgno);
		*page = p->img->data;
		return COFFER_OK;
	}
	if (pgno < CF_PGNO_META)
		return CF_ERROR(COFFER_E_PAGE_CORRUPT, CF_OBJ(.file = io->file, CF_PAGE(pgno)),
				"a link points at header page %u", pgno);
	cf_img *base, *img;
	CF_RET(cf_pager_get(t->env->pager, pgno, CF_LSN_MAX, pgno == CF_PGNO_META, &base));
	int rc = cf_img_copy(t->env->pager, base, &img);
	if (rc == COFFER_OK)
		rc = priv_add(t, pgno, img, base, 0, &p);
	if (rc) {
		cf_img_release(base);
		t->failed = 1;
		return rc;
	}
	*page = img->data;
	return COFFER_OK;
}

static uint8_t *meta_page(coffer_txn *t, int *rc)
{
	uint8_t *m;
	*rc = io_write(&t->io, CF_PGNO_META, &m);
	return *rc ? NULL : m;
}

static int io_alloc(cf_pageio *io, cf_pgno *out, uint8_t **page)
{
	coffer_txn *t = TXN_OF(io);
	uint32_t ps = io->page_size;
	int rc;
	uint8_t *m = meta_page(t, &rc);
	if (m == NULL)
		return rc;
	cf_pgno pgno, head = cf_get32(m + CF_META_FREE_HEAD);
	if (head) {
		uint8_t *trunk;
		CF_RET(io_write(io, head, &trunk));
		uint32_t count = cf_get32(trunk + CF_TRUNK_COUNT);
		if (cf_page_type(trunk) != CF_PT_FREELIST || count > (ps - CF_TRUNK_ENTRIES) / 4) {
			t->failed = 1;
			return CF_ERROR(COFFER_E_PAGE_CORRUPT, CF_OBJ(.file = io->file, CF_PAGE(head)),
					"free-list page %u is damaged (type %u, count %u)", head,
					cf_page_type(trunk), count);
		}
		if (count > 0) {
			pgno = cf_get32(trunk + CF_TRUNK_ENTRIES + 4 * (count - 1));
			cf_put32(trunk + CF_TRUNK_COUNT, count - 1);
		} else {
			pgno = head;
			cf_put32(m + CF_META_FREE_HEAD, cf_get32(trunk + CF_TRUNK_NEXT));
		}
		uint32_t npages = cf_get32(m + CF_META_NPAGES);
		if (pgno < CF_PGNO_FIRST_FREE || pgno >= npages) {
			t->failed = 1;
			return CF_ERROR(COFFER_E_PAGE_CORRUPT, CF_OBJ(.file = io->file, CF_PAGE(head)),
					"free list holds impossible page %u (file has %u pages)", pgno,
					npages);
		}
		cf_put64(m + CF_META_NFREE, cf_get64(m + CF_META_NFREE) - 1);
	} else {
		pgno = cf_get32(m + CF_META_NPAGES);
		if (pgno == UINT32_MAX)
			return CF_ERROR(COFFER_E_DISK_FULL, CF_OBJ(.file = io->file),
					"database file \"%s\" has reached the maximum page count", io->file);
		cf_put32(m + CF_META_NPAGES, pgno + 1);
	}

	struct priv *p = priv_find(t, pgno);
	if (p) { /* freed earlier in this transaction, now reused */
		p->freed = 0;
		p->fresh = 1;
	} else {
		/* Keep the page's current image as the base so that older
		 * snapshots still find it after we publish (pager.h, P1). */
		cf_img *base = NULL, *img;
		if (head && cf_pager_get(t->env->pager, pgno, CF_LSN_MAX, 1, &base) != COFFER_OK) {
			base = NULL; /* a damaged free page: nobody can reach it */
			coffer_error_clear();
		}
		rc = cf_img_new(t->env->pager, &img);
		if (rc == COFFER_OK)
			rc = priv_add(t, pgno, img, base, 1, &p);
		if (rc) {
			cf_img_release(base);
			t->failed = 1;
			return rc;
		}
	}
	cf_page_init(p->img->data, ps, pgno, CF_PT_FREE);
	*out = pgno;
	*page = p->img->data;
	return COFFER_OK;
}

static int io_free(cf_pageio *io, cf_pgno pgno)
{
	coffer_txn *t = TXN_OF(io);
	uint32_t ps = io->page_size;
	int rc;
	uint8_t *m = meta_page(t, &rc);
	if (m == NULL)
		return rc;
	if (pgno < CF_PGNO_FIRST_FREE || pgno >= cf_get32(m + CF_META_NPAGES)) {
		t->failed = 1;
		return CF_ERROR(COFFER_E_PAGE_CORRUPT, CF_OBJ(.file = io->file, CF_PAGE(pgno)),
				"attempt to free impossible page %u", pgno);
	}
	cf_pgno head = cf_get32(m + CF_META_FREE_HEAD);
	uint8_t *trunk = NULL;
	if (head) {
		CF_RET(io_write(io, head, &trunk));
		if (cf_page_type(trunk) != CF_PT_FREELIST) {
			t->failed = 1;
			return CF_ERROR(COFFER_E_PAGE_CORRUPT, CF_OBJ(.file = io->file, CF_PAGE(head)),
					"free-list page %u has type %u", head, cf_page_type(trunk));
		}
	}
	uint32_t count = trunk ? cf_get32(trunk + CF_TRUNK_COUNT) : 0;
	if (trunk && count < (ps - CF_TRUNK_ENTRIES) / 4) {
		cf_put32(trunk + CF_TRUNK_ENTRIES + 4 * count, pgno);
		cf_put32(trunk + CF_TRUNK_COUNT, count + 1);
		struct priv *p = priv_find(t, pgno);
		if (p)
			p->freed = 1;
	} else {
		/* The freed page becomes the new trunk. */
		uint8_t *pg;
		CF_RET(io_write(io, pgno, &pg));
		cf_page_init(pg, ps, pgno, CF_PT_FREELIST);
		cf_put32(pg + CF_TRUNK_NEXT, head);
		cf_put32(m + CF_META_FREE_HEAD, pgno);
	}
	cf_put64(m + CF_META_NFREE, cf_get64(m + CF_META_NFREE) + 1);
	return COFFER_OK;
}

static const struct cf_pageio_ops txn_ops = {
	.read = io_read, .release = io_release, .write = io_write,
	.alloc = io_alloc, .free = io_free,
};

cf_pageio *cf_txn_io(coffer_txn *txn)
{
	return &txn->io;
}

/* ---- readers and the version horizon ---- */

cf_lsn cf_env_horizon(coffer_env *env)
{
	cf_lsn h = cf_log_durable(env->log);
	pthread_mutex_lock(&env->snap_mu);
	for (struct cf_reader *r = env->readers; r; r = r->next)
		if (r->snapshot < h)
			h = r->snapshot;
	pthread_mutex_unlock(&env->snap_mu);
	return h;
}

/* ---- begin / end ---- */

int cf_txn_begin(coffer_env *env, int rdonly, coffer_txn **out)
{
	coffer_txn *t = calloc(1, sizeof *t);
	if (t == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a transaction");
	t->env = env;
	t->rdonly = rdonly;
	t->io.ops = &txn_ops;
	t->io.page_size = env->page_size;
	t->io.file = env->dbpath;
	if (rdonly) {
		pthread_mutex_lock(&env->snap_mu);
		/* Taken under snap_mu so that the horizon never passes it. */
		t->snapshot = cf_log_durable(env->log);
		t->reader.snapshot = t->snapshot;
		t->reader.next = env->readers;
		if (env->readers)
			env->readers->prev = &t->reader;
		env->readers = &t->reader;
		pthread_mutex_unlock(&env->snap_mu);
	} else {
		if (atomic_load(&env->fatal)) {
			free(t);
			return CF_ERROR(COFFER_E_FATAL, CF_OBJ(.file = env->dir), "%s", env->fatal_msg);
		}
		pthread_mutex_lock(&env->write_mu);
		t->snapshot = CF_LSN_MAX;
	}
	*out = t;
	return COFFER_OK;
}

static void txn_free(coffer_txn *t)
{
	for (size_t i = 0; i < t->npriv; i++) {
		cf_img_release(t->privs[i].img);
		cf_img_release(t->privs[i].base);
	}
	for (size_t i = 0; i < t->nroots; i++)
		free(t->roots[i].name);
	free(t->roots);
	free(t->privs);
	free(t->slots);
	free(t);
}

static void reader_end(coffer_txn *t)
{
	coffer_env *env = t->env;
	pthread_mutex_lock(&env->snap_mu);
	if (t->reader.prev)
		t->reader.prev->next = t->reader.next;
	else
		env->readers = t->reader.next;
	if (t->reader.next)
		t->reader.next->prev = t->reader.prev;
	pthread_mutex_unlock(&env->snap_mu);
}

void coffer_txn_abort(coffer_txn *t)
{
	if (t == NULL)
		return;
	if (t->rdonly)
		reader_end(t);
	else
		pthread_mutex_unlock(&t->env->write_mu);
	txn_free(t);
}

/* ---- tree roots (catalog) ---- */

static int catalog_root(coffer_txn *t, cf_pgno *root)
{
	const uint8_t *m;
	void *pin;
	CF_RET(io_read(&t->io, CF_PGNO_META, &m, &pin));
	*root = cf_get32(m + CF_META_CATALOG);
	io_release(&t->io, pin);
	return COFFER_OK;
}

static int check_name(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > COFFER_MAX_TREE_NAME)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL,
				"a tree name must have 1 to %u bytes", COFFER_MAX_TREE_NAME);
	return COFFER_OK;
}

/* Find the root of tree NAME (cached per transaction). *slot receives the
 * cache entry; its root is 0 when the tree does not exist. */
static int tree_lookup(coffer_txn *t, const char *name, struct troot **slot)
{
	CF_RET(check_name(name));
	for (size_t i = 0; i < t->nroots; i++)
		if (strcmp(t->roots[i].name, name) == 0) {
			*slot = &t->roots[i];
			return COFFER_OK;
		}
	cf_pgno cat, root = 0;
	CF_RET(catalog_root(t, &cat));
	if (cat) {
		void *v = NULL;
		size_t vlen = 0;
		int rc = cf_bt_get(&t->io, cat, name, strlen(name), &v, &vlen);
		if (rc == COFFER_OK) {
			if (vlen != 4) {
				free(v);
				return CF_ERROR(COFFER_E_PAGE_CORRUPT, CF_OBJ(.file = t->io.file),
						"catalog entry of tree \"%s\" has %zu bytes, not 4", name, vlen);
			}
			root = cf_get32(v);
			free(v);
		} else if (rc != COFFER_E_NOT_FOUND) {
			return rc;
		}
		coffer_error_clear();
	}
	if (t->nroots == t->cap_roots) {
		size_t ncap = t->cap_roots ? t->cap_roots * 2 : 4;
		struct troot *n = realloc(t->roots, ncap * sizeof *n);
		if (n == NULL)
			return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for tree handles");
		t->roots = n;
		t->cap_roots = ncap;
	}
	struct troot *r = &t->roots[t->nroots];
	r->name = strdup(name);
	if (r->name == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for tree handles");
	r->root = root;
	r->dirty = 0;
	t->nroots++;
	*slot = r;
	return COFFER_OK;
}

static int tree_for_read(coffer_txn *t, const char *name, cf_pgno *root)
{
	struct troot *r;
	CF_RET(tree_lookup(t, name, &r));
	if (r->root == 0)
		return CF_ERROR(COFFER_E_TREE_NOT_FOUND, NULL, "tree \"%s\" does not exist", name);
	*root = r->root;
	return COFFER_OK;
}

static int tree_for_write(coffer_txn *t, const char *name, struct troot **out)
{
	CF_RET(txn_writable(t));
	struct troot *r;
	CF_RET(tree_lookup(t, name, &r));
	if (r->root == 0) {
		int rc = cf_bt_create(&t->io, &r->root);
		if (rc) {
			t->failed = 1;
			return rc;
		}
		r->dirty = 1;
	}
	*out = r;
	return COFFER_OK;
}

/* Write the changed roots into the catalog tree. */
static int catalog_sync(coffer_txn *t)
{
	cf_pgno cat, cat0;
	CF_RET(catalog_root(t, &cat));
	cat0 = cat;
	for (size_t i = 0; i < t->nroots; i++) {
		struct troot *r = &t->roots[i];
		if (!r->dirty)
			continue;
		if (cat == 0)
			CF_RET(cf_bt_create(&t->io, &cat));
		if (r->root) {
			uint8_t v[4];
			cf_put32(v, r->root);
			CF_RET(cf_bt_put(&t->io, &cat, r->name, strlen(r->name), v, 4, 0));
		} else {
			int rc = cf_bt_del(&t->io, &cat, r->name, strlen(r->name));
			if (rc && rc != COFFER_E_NOT_FOUND)
				return rc;
			coffer_error_clear();
		}
		r->dirty = 0;
	}
	if (cat != cat0) {
		int rc;
		uint8_t *m = meta_page(t, &rc);
		if (m == NULL)
			return rc;
		cf_put32(m + CF_META_CATALOG, cat);
	}
	return COFFER_OK;
}

/* ---- commit ---- */

/* Byte ranges where A and B differ, from offset 8 (the checksum is not part
 * of a page's content); gaps under 16 bytes are merged. */
static uint32_t page_diff(const uint8_t *a, const uint8_t *b, uint32_t ps, cf_log_range *r,
			  uint32_t max)
{
	uint32_t n = 0, i = 8;
	while (i < ps) {
		if (a[i] == b[i]) {
			/* skip equal 8-byte words fast */
			while (i + 8 <= ps && i % 8 == 0 && cf_get64(a + i) == cf_get64(b + i))
				i += 8;
			if (i < ps && a[i] == b[i]) {
				i++;
				continue;
			}
			if (i >= ps)
				break;
		}
		uint32_t start = i, last = i;
		while (i < ps && i - last < 16) {
			if (a[i] != b[i])
				last = i;
			i++;
		}
		if (n == max)
			return UINT32_MAX;
		r[n].off = start;
		r[n].len = last + 1 - start;
		n++;
		i = last + 1;
	}
	return n;
}

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct buf {
	uint8_t *p;
	size_t len, cap;
};

static uint8_t *buf_take(struct buf *b, size_t n)
{
	if (b->len + n > b->cap) {
		size_t ncap = b->cap ? b->cap : 4096;
		while (ncap < b->len + n)
			ncap *= 2;
		uint8_t *np = realloc(b->p, ncap);
		if (np == NULL)
			return NULL;
		b->p = np;
		b->cap = ncap;
	}
	uint8_t *out = b->p + b->len;
	b->len += n;
	return out;
}

static int cmp_priv(const void *a, const void *b)
{
	cf_pgno x = ((const struct priv *)a)->pgno, y = ((const struct priv *)b)->pgno;
	return x < y ? -1 : x > y;
}

int coffer_txn_commit(coffer_txn *t)
{
	if (t == NULL)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL, "commit of a NULL transaction");
	if (t->rdonly) {
		reader_end(t);
		txn_free(t);
		return COFFER_OK;
	}
	coffer_env *env = t->env;
	uint32_t ps = env->page_size;
	struct buf enc = {0};
	cf_log_in *recs = NULL;
	cf_log_range *ranges = NULL;
	int rc = COFFER_OK;

	if (t->failed) {
		rc = CF_ERROR(COFFER_E_TXN_CONFLICT, NULL,
			      "the transaction failed earlier; nothing of it was committed");
		goto err;
	}
	CF_GO(rc, catalog_sync(t));
	if (t->npriv == 0) { /* nothing changed */
		pthread_mutex_unlock(&env->write_mu);
		txn_free(t);
		return COFFER_OK;
	}
	if (atomic_load(&env->fatal)) {
		rc = CF_ERROR(COFFER_E_FATAL, CF_OBJ(.file = env->dir), "%s", env->fatal_msg);
		goto err;
	}

	/* Sorting invalidates the index; it is not used after this point. */
	qsort(t->privs, t->npriv, sizeof *t->privs, cmp_priv);
	recs = calloc(t->npriv + 1, sizeof *recs);
	uint32_t maxr = ps / 32;
	ranges = malloc(maxr * sizeof *ranges);
	if (recs == NULL || ranges == NULL) {
		rc = CF_ERROR(COFFER_E_NOMEM, NULL, "no memory to commit");
		goto err;
	}
	cf_lsn threshold = atomic_load(&env->fpi_threshold);
	size_t nrec = 0;
	/* First pass: encode into enc (offsets, since enc may move). */
	size_t *offs = calloc(t->npriv + 1, sizeof *offs);
	if (offs == NULL) {
		rc = CF_ERROR(COFFER_E_NOMEM, NULL, "no memory to commit");
		goto err;
	}
	for (size_t i = 0; i < t->npriv; i++) {
		struct priv *p = &t->privs[i];
		if (p->freed)
			continue;
		uint8_t *pg = p->img->data;
		cf_put64(pg, 0);
		uint32_t n = UINT32_MAX;
		int full = p->fresh || p->base == NULL || p->base->version <= threshold;
		if (!full) {
			/* The lsn field is set at publish; keep it out of the diff. */
			cf_page_set_lsn(pg, cf_page_lsn(p->base->data));
			n = page_diff(p->base->data, pg, ps, ranges, maxr);
			if (n == 0) {
				p->freed = 1; /* unchanged after all: nothing to log or publish */
				continue;
			}
		}
		offs[nrec] = enc.len;
		if (n == UINT32_MAX) {
			uint8_t *h = buf_take(&enc, CF_LOG_PAGE_HEAD);
			if (h == NULL)
				goto nomem;
			cf_log_encode_page_head(h, p->pgno);
			recs[nrec] = (cf_log_in){.type = CF_LOG_PAGE_IMAGE, .n1 = CF_LOG_PAGE_HEAD,
						 .p2 = pg, .n2 = ps};
			cf_page_set_lsn(pg, 0);
		} else {
			size_t sz = cf_log_page_diff_size(ranges, n);
			uint8_t *d = buf_take(&enc, sz);
			if (d == NULL)
				goto nomem;
			cf_log_encode_page_diff(d, p->pgno, pg, ranges, n);
			recs[nrec] = (cf_log_in){.type = CF_LOG_PAGE_DIFF, .n1 = sz};
		}
		nrec++;
	}
	uint8_t commit[CF_LOG_COMMIT_LEN];
	cf_log_encode_commit(commit, ++env->txn_seq, now_us());
	recs[nrec++] = (cf_log_in){.type = CF_LOG_COMMIT, .p1 = commit, .n1 = sizeof commit};
	for (size_t i = 0; i + 1 < nrec; i++)
		recs[i].p1 = enc.p + offs[i];
	free(offs);
	offs = NULL;

	cf_lsn end;
	rc = cf_log_append(env->log, recs, nrec, NULL, &end);
	if (rc) {
		cf_env_set_fatal(env, rc, "appending a commit to the log");
		goto err;
	}
	for (size_t i = 0; i < t->npriv; i++) {
		struct priv *p = &t->privs[i];
		if (p->freed)
			continue;
		rc = cf_pager_publish(env->pager, p->pgno, p->img, end);
		p->img = NULL; /* the pager owns it now (even on error) */
		if (rc) {
			/* The log has the commit: the store must not go on. */
			cf_env_set_fatal(env, rc, "publishing committed pages");
			pthread_mutex_unlock(&env->write_mu);
			goto out;
		}
	}
	atomic_store(&env->last_commit, end);
	atomic_fetch_add(&env->commits, 1);
	pthread_mutex_unlock(&env->write_mu);

	rc = cf_log_flush(env->log, end); /* group commit */
	if (rc) {
		cf_env_set_fatal(env, rc, "flushing the log");
		goto out;
	}
	cf_pager_gc(env->pager, cf_env_horizon(env));
	cf_env_kick_checkpoint(env);
out:
	free(enc.p);
	free(recs);
	free(ranges);
	txn_free(t);
	return rc;
nomem:
	free(offs);
	rc = CF_ERROR(COFFER_E_NOMEM, NULL, "no memory to encode the commit");
err:
	free(enc.p);
	free(recs);
	free(ranges);
	pthread_mutex_unlock(&env->write_mu);
	txn_free(t);
	return rc;
}

/* ---- the data API ---- */

int coffer_txn_begin(coffer_env *env, unsigned flags, coffer_txn **out)
{
	return cf_txn_begin(env, (flags & COFFER_TXN_READ_ONLY) != 0, out);
}

int coffer_get(coffer_txn *t, const char *tree, const void *key, size_t klen, void **val,
	       size_t *vlen)
{
	cf_pgno root = 0;
	CF_RET(tree_for_read(t, tree, &root));
	return cf_bt_get(&t->io, root, key, klen, val, vlen);
}

static int mark(coffer_txn *t, int rc)
{
	/* A failed change may have left private pages half-done. */
	if (rc && rc != COFFER_E_NOT_FOUND && rc != COFFER_E_EXISTS && rc != COFFER_E_KEY_TOO_LARGE &&
	    rc != COFFER_E_VALUE_TOO_LARGE && rc != COFFER_E_INVALID_ARGUMENT)
		t->failed = 1;
	return rc;
}

int coffer_put(coffer_txn *t, const char *tree, const void *key, size_t klen, const void *val,
	       size_t vlen, unsigned flags)
{
	struct troot *r;
	CF_RET(tree_for_write(t, tree, &r));
	cf_pgno root = r->root;
	int rc = cf_bt_put(&t->io, &root, key, klen, val, vlen,
			   (flags & COFFER_NOOVERWRITE) ? CF_BT_NOOVERWRITE : 0);
	if (root != r->root) {
		r->root = root;
		r->dirty = 1;
	}
	return mark(t, rc);
}

int coffer_del(coffer_txn *t, const char *tree, const void *key, size_t klen)
{
	CF_RET(txn_writable(t));
	struct troot *r;
	CF_RET(tree_lookup(t, tree, &r));
	if (r->root == 0)
		return CF_ERROR(COFFER_E_NOT_FOUND, NULL, "tree \"%s\" does not exist", tree);
	cf_pgno root = r->root;
	int rc = cf_bt_del(&t->io, &root, key, klen);
	if (root != r->root) {
		r->root = root;
		r->dirty = 1;
	}
	return mark(t, rc);
}

int coffer_tree_drop(coffer_txn *t, const char *tree)
{
	CF_RET(txn_writable(t));
	struct troot *r;
	CF_RET(tree_lookup(t, tree, &r));
	if (r->root == 0)
		return CF_ERROR(COFFER_E_TREE_NOT_FOUND, NULL, "tree \"%s\" does not exist", tree);
	int rc = cf_bt_drop(&t->io, r->root);
	if (rc)
		return mark(t, rc);
	r->root = 0;
	r->dirty = 1;
	return COFFER_OK;
}

int coffer_tree_count(coffer_txn *t, const char *tree, uint64_t *n)
{
	cf_pgno root = 0;
	CF_RET(tree_for_read(t, tree, &root));
	return cf_bt_count(&t->io, root, n);
}

struct coffer_cursor {
	cf_bt_cursor *bc;
};

int coffer_cursor_open(coffer_txn *t, const char *tree, coffer_cursor **out)
{
	cf_pgno root = 0;
	CF_RET(tree_for_read(t, tree, &root));
	coffer_cursor *c = calloc(1, sizeof *c);
	if (c == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a cursor");
	int rc = cf_bt_cursor_open(&t->io, root, &c->bc);
	if (rc) {
		free(c);
		return rc;
	}
	*out = c;
	return COFFER_OK;
}

int coffer_cursor_first(coffer_cursor *c) { return cf_bt_cursor_first(c->bc); }
int coffer_cursor_seek(coffer_cursor *c, const void *key, size_t klen)
{
	return cf_bt_cursor_seek(c->bc, key, klen);
}
int coffer_cursor_next(coffer_cursor *c) { return cf_bt_cursor_next(c->bc); }

int coffer_cursor_get(coffer_cursor *c, const void **key, size_t *klen, const void **val,
		      size_t *vlen)
{
	if (key)
		CF_RET(cf_bt_cursor_key(c->bc, key, klen));
	if (val)
		CF_RET(cf_bt_cursor_value(c->bc, val, vlen));
	return COFFER_OK;
}

void coffer_cursor_close(coffer_cursor *c)
{
	if (c == NULL)
		return;
	cf_bt_cursor_close(c->bc);
	free(c);
}
