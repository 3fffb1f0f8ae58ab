/*
 * mem_pageio.c - an in-memory cf_pageio for unit tests (see mem_pageio.h).
 */
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "mem_pageio.h"

static mem_pageio *mem_of(cf_pageio *io)
{
	return (mem_pageio *)io;
}

static int misuse(mem_pageio *m, cf_pgno pgno, const char *what)
{
	return CF_ERROR(COFFER_E_INTERNAL, CF_OBJ(.file = m->io.file, CF_PAGE(pgno)),
			"mem_pageio: %s page %u", what, pgno);
}

static int in_file(mem_pageio *m, cf_pgno pgno)
{
	return pgno >= CF_PGNO_FIRST_FREE && pgno < m->npages;
}

static uint8_t *current(mem_pageio *m, cf_pgno pgno)
{
	return m->dirty[pgno] ? m->dirty[pgno] : m->pages[pgno];
}

static int mem_read(cf_pageio *io, cf_pgno pgno, const uint8_t **page, void **pin)
{
	mem_pageio *m = mem_of(io);
	if (!in_file(m, pgno))
		return CF_ERROR(COFFER_E_PAGE_CORRUPT, CF_OBJ(.file = io->file, CF_PAGE(pgno)),
				"page %u is outside the file of %u pages", pgno, m->npages);
	m->reads++;
	if (!m->used[pgno])
		m->free_reads++;
	m->pins[pgno]++;
	m->pins_out++;
	*page = current(m, pgno);
	*pin = (void *)(uintptr_t)pgno;
	return COFFER_OK;
}

static void mem_release(cf_pageio *io, void *pin)
{
	mem_pageio *m = mem_of(io);
	cf_pgno pgno = (cf_pgno)(uintptr_t)pin;
	if (!in_file(m, pgno) || m->pins[pgno] == 0) {
		misuse(m, pgno, "release of an unpinned");
		abort(); /* a test-harness bug or a double release: stop loudly */
	}
	m->pins[pgno]--;
	m->pins_out--;
}

static int make_copy(mem_pageio *m, cf_pgno pgno)
{
	if (m->dirty[pgno])
		return COFFER_OK;
	uint8_t *p = malloc(m->io.page_size);
	if (!p)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "mem_pageio: no memory for a page copy");
	if (m->pages[pgno])
		memcpy(p, m->pages[pgno], m->io.page_size);
	else
		memset(p, 0, m->io.page_size);
	m->dirty[pgno] = p;
	m->dirtylist[m->ndirty++] = pgno;
	return COFFER_OK;
}

static int mem_write(cf_pageio *io, cf_pgno pgno, uint8_t **page)
{
	mem_pageio *m = mem_of(io);
	if (m->read_only)
		return CF_ERROR(COFFER_E_READ_ONLY, CF_OBJ(.file = io->file, CF_PAGE(pgno)),
				"mem_pageio: read-only");
	if (!in_file(m, pgno))
		return CF_ERROR(COFFER_E_PAGE_CORRUPT, CF_OBJ(.file = io->file, CF_PAGE(pgno)),
				"page %u is outside the file of %u pages", pgno, m->npages);
	if (!m->used[pgno])
		return misuse(m, pgno, "write of free");
	CF_RET(make_copy(m, pgno));
	m->writes++;
	*page = m->dirty[pgno];
	return COFFER_OK;
}

static int grow(mem_pageio *m)
{
	cf_pgno cap = m->cap ? m->cap * 2 : 64;
	uint8_t **pages = realloc(m->pages, cap * sizeof *pages);
	if (pages)
		m->pages = pages;
	uint8_t **dirty = realloc(m->dirty, cap * sizeof *dirty);
	if (dirty)
		m->dirty = dirty;
	uint8_t *used = realloc(m->used, cap);
	if (used)
		m->used = used;
	uint32_t *pins = realloc(m->pins, cap * sizeof *pins);
	if (pins)
		m->pins = pins;
	cf_pgno *fl = realloc(m->freelist, cap * sizeof *fl);
	if (fl)
		m->freelist = fl;
	cf_pgno *dl = realloc(m->dirtylist, cap * sizeof *dl);
	if (dl)
		m->dirtylist = dl;
	if (!pages || !dirty || !used || !pins || !fl || !dl)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "mem_pageio: no memory for %u pages", cap);
	for (cf_pgno i = m->cap; i < cap; i++) {
		m->pages[i] = m->dirty[i] = NULL;
		m->used[i] = 0;
		m->pins[i] = 0;
	}
	m->cap = cap;
	return COFFER_OK;
}

static int mem_alloc(cf_pageio *io, cf_pgno *pgno, uint8_t **page)
{
	mem_pageio *m = mem_of(io);
	if (m->read_only)
		return CF_ERROR(COFFER_E_READ_ONLY, CF_OBJ(.file = io->file), "mem_pageio: read-only");
	if (m->fail_alloc_in > 0 && --m->fail_alloc_in == 0)
		return CF_ERROR(COFFER_E_DISK_FULL, CF_OBJ(.file = io->file),
				"mem_pageio: injected allocation failure");
	cf_pgno p;
	if (m->nfree > 0) {
		p = m->freelist[--m->nfree];
	} else {
		if (m->npages == m->cap)
			CF_RET(grow(m));
		p = m->npages++;
	}
	CF_RET(make_copy(m, p));
	cf_page_init(m->dirty[p], io->page_size, p, CF_PT_ZERO);
	m->used[p] = 1;
	m->live++;
	m->allocs++;
	*pgno = p;
	*page = m->dirty[p];
	return COFFER_OK;
}

static int mem_free(cf_pageio *io, cf_pgno pgno)
{
	mem_pageio *m = mem_of(io);
	if (m->read_only)
		return CF_ERROR(COFFER_E_READ_ONLY, CF_OBJ(.file = io->file), "mem_pageio: read-only");
	if (!in_file(m, pgno))
		return CF_ERROR(COFFER_E_PAGE_CORRUPT, CF_OBJ(.file = io->file, CF_PAGE(pgno)),
				"page %u is outside the file of %u pages", pgno, m->npages);
	if (!m->used[pgno])
		return misuse(m, pgno, "free of free");
	if (m->pins[pgno])
		return misuse(m, pgno, "free of pinned");
	CF_RET(make_copy(m, pgno));
	m->dirty[pgno][12] = CF_PT_FREE;
	m->used[pgno] = 0;
	m->live--;
	m->frees++;
	m->freelist[m->nfree++] = pgno;
	return COFFER_OK;
}

static const struct cf_pageio_ops mem_ops = {
	.read = mem_read,
	.release = mem_release,
	.write = mem_write,
	.alloc = mem_alloc,
	.free = mem_free,
};

mem_pageio *mem_pageio_open(uint32_t page_size)
{
	mem_pageio *m = calloc(1, sizeof *m);
	if (!m)
		return NULL;
	m->io.ops = &mem_ops;
	m->io.page_size = page_size;
	m->io.file = "mem.db";
	if (grow(m)) {
		mem_pageio_close(m);
		return NULL;
	}
	m->npages = CF_PGNO_FIRST_FREE;
	return m;
}

void mem_pageio_close(mem_pageio *m)
{
	if (!m)
		return;
	for (cf_pgno i = 0; i < m->cap && m->pages; i++) {
		free(m->pages[i]);
		if (m->dirty)
			free(m->dirty[i]);
	}
	free(m->pages);
	free(m->dirty);
	free(m->used);
	free(m->pins);
	free(m->freelist);
	free(m->dirtylist);
	free(m);
}

void mem_pageio_commit(mem_pageio *m)
{
	for (cf_pgno i = 0; i < m->ndirty; i++) {
		cf_pgno p = m->dirtylist[i];
		free(m->pages[p]);
		m->pages[p] = m->dirty[p];
		m->dirty[p] = NULL;
	}
	m->ndirty = 0;
}

uint8_t *mem_pageio_page(mem_pageio *m, cf_pgno pgno)
{
	if (!in_file(m, pgno))
		return NULL;
	return current(m, pgno);
}
