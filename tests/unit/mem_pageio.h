/*
 * mem_pageio.h - an in-memory cf_pageio for unit tests (engine/pageio.h).
 *
 * Pages live in malloc'd buffers indexed by page number; pages 0..2 are
 * reserved (header and meta) as in a real file, so the first page handed
 * out is CF_PGNO_FIRST_FREE. It behaves like one long write transaction
 * that can be committed at any point:
 *
 *   read    the page's current version (this transaction's copy if it
 *           wrote the page, else the committed one); counts a pin.
 *   write   a private copy of the committed version, made on first write;
 *           the same copy afterwards.
 *   alloc   the most recently freed page (LIFO), else a new page at the end
 *           of the "file"; zero-filled with its pgno set.
 *   free    marks the page free (type CF_PT_FREE in its current version) and
 *           puts it on the free list; it may be allocated again at once.
 *   mem_pageio_commit() makes the copies the committed versions and frees the
 *   old ones, so a pointer kept from before the commit is a use-after-free
 *   that AddressSanitizer reports.
 *
 * Misuse by the code under test is an error return (COFFER_E_INTERNAL),
 * never a crash: writing or freeing a free page, freeing a pinned page,
 * releasing a page that is not pinned. Reading a free page succeeds (a real
 * file would return its old bytes) but is counted in free_reads.
 */
#ifndef COFFER_TESTS_MEM_PAGEIO_H
#define COFFER_TESTS_MEM_PAGEIO_H

#include <stdint.h>

#include "engine/pageio.h"

typedef struct mem_pageio {
	cf_pageio io;        /* first member: &m->io is the cf_pageio */
	cf_pgno npages;      /* pages in the "file": the high-water mark */
	cf_pgno cap;
	uint8_t **pages;     /* committed version of each page (NULL: none) */
	uint8_t **dirty;     /* this transaction's copy (NULL: none) */
	uint8_t *used;       /* 1: allocated */
	uint32_t *pins;      /* pins held on each page */
	cf_pgno *freelist;   /* free pages, most recently freed last */
	cf_pgno nfree;
	cf_pgno *dirtylist;  /* pages with a copy */
	cf_pgno ndirty;
	uint64_t live;       /* allocated pages */
	uint64_t pins_out;   /* pins not yet released */
	uint64_t reads, writes, allocs, frees, free_reads;
	int read_only;       /* write/alloc/free fail with COFFER_E_READ_ONLY */
	long fail_alloc_in;  /* > 0: the Nth alloc from now fails (COFFER_E_DISK_FULL) */
} mem_pageio;

/* A new empty "file" of pages of page_size bytes; NULL without memory. */
mem_pageio *mem_pageio_open(uint32_t page_size);
void mem_pageio_close(mem_pageio *m);

/* Make this transaction's copies the committed versions. */
void mem_pageio_commit(mem_pageio *m);

/* The current version of a page, writable without a copy (for tests that
 * damage pages on purpose); NULL if pgno is outside the file. */
uint8_t *mem_pageio_page(mem_pageio *m, cf_pgno pgno);

#endif
