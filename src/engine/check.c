/*
 * check.c - offline structure and checksum check of a store (coffer check).
 *
 * Works on the files directly (the store must not be open elsewhere: the
 * directory lock is taken) and on a cleanly shut-down store (a dirty one
 * needs recovery first: COFFER_E_DIRTY_SHUTDOWN). Steps:
 *  1 both header copies (a damaged copy is a problem, both is fatal);
 *  2 every page of the file: checksum and page number (all-zero pages are
 *    fine only if nothing uses them);
 *  3 the meta page, the catalog tree and every tree it names (cf_bt_check:
 *    node format, key order, separators, depth, overflow chains), marking
 *    the pages each owns;
 *  4 the free list (trunk pages and their entries), marking them too;
 *  5 every page owned twice is reported by 3/4; every page owned by nobody
 *    is reported as leaked; the free count in the meta page must match.
 * Each problem goes to the callback with its page and a sentence, once: a
 * page that fails its checksum in step 2 is not reported again when the
 * walk of 3/4 meets it (the walk does not go below it).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "engine/btree.h"
#include "engine/env.h"

struct chk {
	cf_pageio io;
	int fd;
	const char *path;
	uint32_t ps;
	cf_pgno npages;
	uint8_t *owned;
	uint8_t *bad;          /* pages step 2 found damaged: reported there, once */
	cf_pgno quiet;         /* pgno + 1 of a read refused for a page in bad */
	char quiet_msg[sizeof(((coffer_error *)0)->message)]; /* its message, which the walk repeats */
	struct coffer_check_result *res;
	coffer_check_problem_fn fn;
	void *arg;
};

#define CHK_OF(io_) ((struct chk *)(void *)(io_))

static void problem(struct chk *c, int64_t pgno, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void problem(struct chk *c, int64_t pgno, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	c->res->problems++;
	if (c->fn)
		c->fn(c->arg, pgno, msg);
}

static int is_bad(const struct chk *c, cf_pgno pgno)
{
	return c->bad && pgno < c->npages && ((c->bad[pgno / 8] >> (pgno % 8)) & 1);
}

/* The tree walk reports a page it cannot read; a page whose damage step 2
 * reported already is not reported again (one problem per damaged page). */
static void bt_problem(void *arg, cf_pgno pgno, const char *what)
{
	struct chk *c = arg;
	if (c->quiet == pgno + 1 && strncmp(c->quiet_msg, what, strlen(what)) == 0) {
		c->quiet = 0;
		return;
	}
	problem(c, pgno, "%s", what);
}

static int io_read(cf_pageio *io, cf_pgno pgno, const uint8_t **page, void **pin)
{
	struct chk *c = CHK_OF(io);
	c->quiet = 0;
	if (pgno >= c->npages)
		return CF_ERROR(COFFER_E_PAGE_CORRUPT, CF_OBJ(.file = c->path, CF_PAGE(pgno)),
				"a link points at page %u, past the end of the file (%u pages)", pgno,
				c->npages);
	uint8_t *buf = malloc(c->ps);
	if (buf == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory");
	int rc = cf_pread_full(c->fd, c->path, buf, c->ps, (uint64_t)pgno * c->ps);
	if (rc == COFFER_OK) {
		enum cf_page_state st = cf_page_verify(buf, c->ps, pgno);
		if (st != CF_PAGE_OK)
			rc = cf_page_error(st, buf, c->ps, pgno, c->path);
		if (rc && is_bad(c, pgno)) {
			c->quiet = pgno + 1;
			snprintf(c->quiet_msg, sizeof c->quiet_msg, "%s", coffer_error_last()->message);
		}
	}
	if (rc) {
		free(buf);
		return rc;
	}
	*page = buf;
	*pin = buf;
	return COFFER_OK;
}

static void io_release(cf_pageio *io, void *pin)
{
	(void)io;
	free(pin);
}

static int io_ro(cf_pageio *io, cf_pgno pgno, uint8_t **page)
{
	(void)pgno;
	(void)page;
	return CF_ERROR(COFFER_E_READ_ONLY, CF_OBJ(.file = io->file), "the check never writes");
}

static int io_alloc_ro(cf_pageio *io, cf_pgno *pgno, uint8_t **page)
{
	(void)pgno;
	return io_ro(io, 0, page);
}

static int io_free_ro(cf_pageio *io, cf_pgno pgno)
{
	return io_ro(io, pgno, NULL);
}

static const struct cf_pageio_ops chk_ops = {
	.read = io_read, .release = io_release, .write = io_ro, .alloc = io_alloc_ro, .free = io_free_ro,
};

static int mark(struct chk *c, cf_pgno pgno, const char *what, cf_pgno from)
{
	if (pgno < CF_PGNO_FIRST_FREE || pgno >= c->npages) {
		problem(c, pgno, "%s page %u (listed in page %u) is outside the usable pages 3..%u", what,
			pgno, from, c->npages - 1);
		return 0;
	}
	if (c->owned[pgno / 8] & (1u << (pgno % 8))) {
		problem(c, pgno, "%s page %u (listed in page %u) is already used elsewhere", what, pgno,
			from);
		return 0;
	}
	c->owned[pgno / 8] |= (uint8_t)(1u << (pgno % 8));
	return 1;
}

static void check_freelist(struct chk *c, cf_pgno head)
{
	uint32_t cap = (c->ps - CF_TRUNK_ENTRIES) / 4;
	cf_pgno from = CF_PGNO_META;
	for (uint64_t hops = 0; head && hops <= c->npages; hops++) {
		if (!mark(c, head, "free-list trunk", from))
			return;
		const uint8_t *pg;
		void *pin;
		if (io_read(&c->io, head, &pg, &pin) != COFFER_OK) {
			if (!is_bad(c, head)) /* else reported by step 2 */
				problem(c, head, "free-list trunk page %u cannot be read: %s", head,
					coffer_error_last()->message);
			return;
		}
		uint32_t n = cf_get32(pg + CF_TRUNK_COUNT);
		if (cf_page_type(pg) != CF_PT_FREELIST || n > cap) {
			problem(c, head, "free-list trunk page %u is malformed (type %u, count %u)", head,
				cf_page_type(pg), n);
			io_release(&c->io, pin);
			return;
		}
		c->res->free_pages++;
		for (uint32_t i = 0; i < n; i++)
			if (mark(c, cf_get32(pg + CF_TRUNK_ENTRIES + 4 * i), "free", head))
				c->res->free_pages++;
		from = head;
		head = cf_get32(pg + CF_TRUNK_NEXT);
		io_release(&c->io, pin);
	}
}

static void check_tree(struct chk *c, const char *name, cf_pgno root)
{
	uint64_t nkeys = 0;
	int rc = cf_bt_check(&c->io, root, c->owned, c->npages, bt_problem, c, &nkeys);
	if (rc && rc != COFFER_E_PAGE_CORRUPT)
		problem(c, root, "tree \"%s\" (root %u) could not be walked: %s", name, root,
			coffer_error_last()->message);
	c->res->trees++;
	c->res->keys += nkeys;
}

int coffer_check(const char *dir, coffer_check_problem_fn fn, void *arg,
		 struct coffer_check_result *res)
{
	memset(res, 0, sizeof *res);
	struct chk c = {.fd = -1, .res = res, .fn = fn, .arg = arg};
	cf_dirlock *lock = NULL;
	char path[4096];
	int rc;
	CF_GO(rc, cf_path_join(path, sizeof path, dir, "coffer.db"));
	c.path = path;
	CF_GO(rc, cf_dirlock_acquire(&lock, dir, "coffer check"));
	CF_GO(rc, cf_open(&c.fd, path, O_RDONLY, 0));
	struct cf_header h;
	unsigned damaged = 0;
	CF_GO(rc, cf_header_read(c.fd, path, &h, &damaged));
	if (damaged & CF_HEADER_A_DAMAGED)
		problem(&c, 0, "header copy A (page 0) is damaged; copy B is intact");
	if (damaged & CF_HEADER_B_DAMAGED)
		problem(&c, 1, "header copy B (page 1) is damaged; copy A is intact");
	if (h.state == CF_DB_DIRTY) {
		rc = CF_ERROR(COFFER_E_DIRTY_SHUTDOWN, CF_OBJ(.file = path),
			      "the store in \"%s\" was not shut down cleanly; start cofferd once or run "
			      "'coffer recover %s' before checking it",
			      dir, dir);
		goto err;
	}
	if (h.state == CF_DB_NEEDS_RECOVERY) {
		rc = CF_ERROR(COFFER_E_NEEDS_HARD_RECOVERY, CF_OBJ(.file = path),
			      "the store in \"%s\" was restored without recovery; run 'coffer recover %s'",
			      dir, dir);
		goto err;
	}
	c.ps = h.page_size;
	res->page_size = h.page_size;
	struct stat st;
	if (fstat(c.fd, &st) != 0) {
		rc = cf_error_sys("stat", path, -1);
		goto err;
	}
	if ((uint64_t)st.st_size % c.ps)
		problem(&c, (int64_t)((uint64_t)st.st_size / c.ps),
			"the file size %lld is not a multiple of the page size %u (a torn extension)",
			(long long)st.st_size, c.ps);
	c.npages = (cf_pgno)((uint64_t)st.st_size / c.ps);
	c.io = (cf_pageio){.ops = &chk_ops, .page_size = c.ps, .file = path};

	/* 2: every page's checksum */
	uint8_t *buf = malloc(c.ps);
	c.owned = calloc((size_t)c.npages / 8 + 1, 1);
	if (buf == NULL || c.owned == NULL) {
		free(buf);
		rc = CF_ERROR(COFFER_E_NOMEM, NULL, "no memory to check %u pages", c.npages);
		goto err;
	}
	uint8_t *zero = calloc((size_t)c.npages / 8 + 1, 1);
	c.bad = calloc((size_t)c.npages / 8 + 1, 1);
	if (zero == NULL || c.bad == NULL) {
		free(buf);
		free(zero);
		rc = CF_ERROR(COFFER_E_NOMEM, NULL, "no memory to check %u pages", c.npages);
		goto err;
	}
	for (cf_pgno p = CF_PGNO_META; p < c.npages; p++) {
		rc = cf_pread_full(c.fd, path, buf, c.ps, (uint64_t)p * c.ps);
		if (rc) {
			free(buf);
			free(zero);
			goto err;
		}
		enum cf_page_state s = cf_page_verify(buf, c.ps, p);
		res->pages++;
		if (s == CF_PAGE_ZERO)
			zero[p / 8] |= (uint8_t)(1u << (p % 8));
		else if (s != CF_PAGE_OK) {
			cf_page_error(s, buf, c.ps, p, path);
			problem(&c, p, "%s", coffer_error_last()->message);
			res->bad_checksums++;
			c.bad[p / 8] |= (uint8_t)(1u << (p % 8));
		}
	}
	free(buf);
	res->pages += 2;

	/* 3: meta, catalog, trees */
	const uint8_t *meta;
	void *mpin;
	rc = io_read(&c.io, CF_PGNO_META, &meta, &mpin);
	if (rc) {
		if (!is_bad(&c, CF_PGNO_META)) /* else reported by step 2 */
			problem(&c, CF_PGNO_META, "the meta page cannot be read: %s",
				coffer_error_last()->message);
		free(zero);
		rc = COFFER_OK;
		goto done;
	}
	cf_pgno npages_meta = cf_get32(meta + CF_META_NPAGES);
	cf_pgno free_head = cf_get32(meta + CF_META_FREE_HEAD);
	cf_pgno cat = cf_get32(meta + CF_META_CATALOG);
	uint64_t nfree = cf_get64(meta + CF_META_NFREE);
	io_release(&c.io, mpin);
	if (npages_meta > c.npages)
		problem(&c, CF_PGNO_META, "the meta page counts %u pages but the file holds %u",
			npages_meta, c.npages);
	else
		c.npages = npages_meta; /* pages past it are an unused extension */

	if (cat) {
		check_tree(&c, "(catalog)", cat);
		cf_bt_cursor *cur;
		if (cf_bt_cursor_open(&c.io, cat, &cur) == COFFER_OK) {
			int r;
			for (r = cf_bt_cursor_first(cur); r == COFFER_OK; r = cf_bt_cursor_next(cur)) {
				const void *k, *v;
				size_t kl, vl;
				if (cf_bt_cursor_key(cur, &k, &kl) || cf_bt_cursor_value(cur, &v, &vl))
					break;
				char name[COFFER_MAX_TREE_NAME + 1];
				size_t n = kl < COFFER_MAX_TREE_NAME ? kl : COFFER_MAX_TREE_NAME;
				memcpy(name, k, n);
				name[n] = '\0';
				if (vl != 4) {
					problem(&c, cat, "catalog entry \"%s\" has %zu bytes, not 4", name, vl);
					continue;
				}
				check_tree(&c, name, cf_get32(v));
			}
			if (r != COFFER_E_NOT_FOUND && r != COFFER_OK)
				problem(&c, cat, "the catalog cannot be read to its end: %s",
					coffer_error_last()->message);
			cf_bt_cursor_close(cur);
		}
	}
	/* 4: the free list */
	check_freelist(&c, free_head);
	if (res->free_pages != nfree)
		problem(&c, CF_PGNO_META, "the meta page counts %llu free pages but the free list holds %llu",
			(unsigned long long)nfree, (unsigned long long)res->free_pages);
	/* 5: leaked and zero pages in use */
	for (cf_pgno p = CF_PGNO_FIRST_FREE; p < c.npages; p++) {
		int owned = (c.owned[p / 8] >> (p % 8)) & 1;
		int isz = (zero[p / 8] >> (p % 8)) & 1;
		if (!owned && !isz)
			problem(&c, p, "page %u is neither in a tree nor in the free list (leaked)", p);
		if (!owned && isz)
			problem(&c, p, "page %u was never written and is neither in a tree nor free", p);
	}
	free(zero);
done:
	coffer_error_clear();
	rc = res->problems ? CF_ERROR(COFFER_E_PAGE_CORRUPT, CF_OBJ(.file = path),
				      "the check of \"%s\" found %llu problem(s)", dir,
				      (unsigned long long)res->problems)
			   : COFFER_OK;
err:
	free(c.owned);
	free(c.bad);
	if (c.fd >= 0)
		close(c.fd);
	cf_dirlock_release(lock);
	return rc;
}
