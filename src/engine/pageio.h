/*
 * pageio.h - how the B+tree reaches pages: a small table of operations.
 *
 * The B+tree (bt_*.c) never touches the page cache or the file. It reads and
 * changes pages through a cf_pageio, which a transaction (txn.c) provides:
 *
 *   read     the page as this transaction sees it (its own private copy if it
 *            changed it, else the committed version of its snapshot). The
 *            pointer stays valid until release(pin) (or the transaction ends).
 *   write    a private, writable copy of the page for this write transaction
 *            (COFFER_E_READ_ONLY in a read transaction). Changes become
 *            visible to others only at commit. The pointer stays valid until
 *            the transaction ends; calling write again returns the same copy.
 *   alloc    a new page (from the free list, or by growing the file),
 *            zero-filled with its pgno set (cf_page_init), writable.
 *   free     give a page back; it must not be used by this transaction again.
 *
 * All return COFFER_OK or a catalog code with the error record filled in
 * (COFFER_E_PAGE_CHECKSUM etc. from a damaged file, COFFER_E_NOMEM,
 * COFFER_E_DISK_FULL...). Unit tests provide an in-memory cf_pageio.
 */
#ifndef COFFER_ENGINE_PAGEIO_H
#define COFFER_ENGINE_PAGEIO_H

#include "engine/page.h"

typedef struct cf_pageio cf_pageio;

struct cf_pageio_ops {
	int (*read)(cf_pageio *io, cf_pgno pgno, const uint8_t **page, void **pin);
	void (*release)(cf_pageio *io, void *pin);
	int (*write)(cf_pageio *io, cf_pgno pgno, uint8_t **page);
	int (*alloc)(cf_pageio *io, cf_pgno *pgno, uint8_t **page);
	int (*free)(cf_pageio *io, cf_pgno pgno);
};

struct cf_pageio {
	const struct cf_pageio_ops *ops;
	uint32_t page_size;
	const char *file; /* database file name, for error messages */
};

#endif
