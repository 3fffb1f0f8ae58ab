/*
 * crashfs.h - a crash-simulating file layer for tests (SQLite's test6.c
 * idea), installed by patching the OS call table `cf_os` (common/os.h).
 *
 * Writes go to the real files at once, but the layer remembers, for every
 * file under ROOT, each change that is not durable yet: for a write the
 * bytes it overwrote and the file size before it (an undo record), and the
 * bytes it wrote; the same for ftruncate, fallocate and O_TRUNC. An
 * fsync/fdatasync of the file forgets them (they are durable).
 *
 * Directory entries: create (open with O_CREAT of a missing file), rename
 * (also over an existing file) and unlink are remembered as pending
 * directory operations, with what an undo needs (the durable contents of a
 * file renamed over or unlinked). They are modelled as an ordered metadata
 * journal, as ext4 and XFS behave: they reach the disk in the order they
 * were made; an fsync of directory D commits every pending operation up to
 * the latest one in D; at a crash a random prefix of the uncommitted ones
 * survives and the rest is undone, newest first (a create by deleting the
 * file, a rename by renaming back and restoring the file it replaced, an
 * unlink by restoring the file).
 *
 * A crash point is the Nth sync call (fsync, fdatasync, or the fsync of a
 * directory; the crash happens before the call takes effect) or the Nth
 * write (pwrite or write; the crash happens right after it, while it is
 * "in flight"). There the layer simulates a power loss: every file is first
 * put back to its durable contents, then each unsynced change is replayed
 * in order with a seeded random fate: kept, dropped, or - for a write that
 * spans several 512-byte sectors - torn (a prefix of whole sectors is kept,
 * the rest keeps its old contents); size changes are kept or dropped.
 * Then the pending directory operations are cut as described above and
 * the process ends at once with _exit(EXIT_CODE): run the workload in a
 * forked child.
 *
 * Not modelled: mkdir/rmdir (treated as durable at once: cf_mkdir_p
 * fsyncs the parent right after), writes through mmap, reordering of
 * sectors inside one write (a tear keeps a prefix), torn size updates
 * (a kept extending write keeps the whole size), corruption of synced data
 * (bit rot, misdirected writes), and files under ROOT changed other than
 * through cf_os. Files whose base name is in IGNORE (e.g. the advisory
 * lock file) are not tracked and their calls are not crash points.
 *
 * The layer takes one mutex around every tracked call (and performs the
 * real call under it), so the engine's background threads are serialized
 * and a crash sees no I/O in progress.
 */
#ifndef COFFER_TESTS_CRASHFS_H
#define COFFER_TESTS_CRASHFS_H

#include <stdint.h>

/* Counters, typically in a MAP_SHARED page so that the parent reads them
 * after the child crashed. */
struct crashfs_stats {
	uint64_t syncs;        /* sync calls seen (crash points of the first kind) */
	uint64_t writes;       /* write calls seen (crash points of the second kind) */
	uint64_t pending;      /* unsynced changes at the crash (writes and size changes) */
	uint64_t kept, dropped, torn; /* fates of the unsynced writes */
	uint64_t dirops_kept, dirops_undone;
	int crashed;           /* 0 no crash, 1 at a sync, 2 at a write */
	char crash_op[16];     /* "fsync", "fdatasync", "dirsync", "pwrite", "write" */
	char crash_path[256];  /* the file of the call that crashed */
};

struct crashfs_config {
	const char *root;            /* track files under this directory (absolute) */
	const char *const *ignore;   /* NULL-terminated base names not tracked; may be NULL */
	uint64_t crash_sync;         /* crash at this sync call (1-based); 0: never */
	uint64_t crash_write;        /* crash after this write call (1-based); 0: never */
	uint64_t seed;               /* fates of the unsynced changes */
	int real_sync;               /* also call the real fsync (slower; not needed) */
	int exit_code;               /* _exit status after a crash */
	struct crashfs_stats *stats; /* counters; NULL: internal */
};

/* Install the layer: save nothing (cf_os_real holds the real calls) and
 * patch cf_os. Call while no other thread does I/O. Returns 0, or -1 if the
 * configuration is unusable (no root, or already installed). */
int crashfs_install(const struct crashfs_config *c);
/* Put the real calls back and free the records. */
void crashfs_uninstall(void);
/* Simulate a power loss now (as at a crash point) and _exit. */
void crashfs_crash_now(const char *op, const char *path) __attribute__((noreturn));

#endif
