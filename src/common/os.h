/*
 * os.h - every operating system call Coffer makes on files, through one table.
 *
 * All file I/O in Coffer goes through the function pointers of `cf_os`
 * (SQLite's aSyscall[] idea). The table starts out pointing at the real
 * system calls; a test may replace any entry (for example pwrite by a
 * function that fails with ENOSPC) and put the original back afterwards.
 * Patch the table only while no other thread does I/O.
 *
 * Above the table sit helpers that turn failures into catalog codes with the
 * object filled in (file, offset, errno), so callers write
 *     CF_GO(rc, cf_pwrite_full(fd, path, buf, n, off));
 * and never format an errno themselves. The helpers retry EINTR and short
 * transfers; a read that meets the end of the file early is
 * COFFER_E_SHORT_READ naming the file, the offset, and the bytes expected
 * and found.
 *
 * Durability rules (PostgreSQL's durable_rename, libgit2's filebuf):
 *  - a file that must survive a crash whole is written by
 *    cf_durable_write_file(): PATH.tmp is written and fsynced, renamed over
 *    PATH, and the directory is fsynced; a crash leaves the old or the new
 *    file, never a mix (a stale PATH.tmp may remain and is overwritten the
 *    next time);
 *  - cf_mkdir_p() fsyncs the parent of every directory it creates.
 *
 * Test hooks (only in builds with COFFER_TESTING, i.e. meson -Dtesting=true):
 *  - CF_INJECT("name") marks an injection point. It is 0 unless the point
 *    is armed, then an errno value the caller treats as the failure of the
 *    step that follows. Release builds compile it to the constant 0.
 *    Points are armed by cf_inject_arm() or by the environment:
 *        COFFER_INJECT="name:ERRNO[:SKIP[:COUNT]],..."
 *    e.g. COFFER_INJECT=evlog.write:ENOSPC:2 lets two hits pass, then fails
 *    every later hit with ENOSPC. ERRNO is a name (ENOSPC) or a number;
 *    COUNT 0 or absent means "every hit from then on". The variable is read
 *    at the first use of any injection call (and again after
 *    cf_inject_reset()).
 *  - cf_os_fault_hook, when set, is called by the write, pwrite, fsync and
 *    fdatasync helpers before the system call with the operation name
 *    ("write", "pwrite", "fsync", "fdatasync"), the descriptor and the path;
 *    a non-zero return is taken as the errno of a failed call.
 */
#ifndef COFFER_COMMON_OS_H
#define COFFER_COMMON_OS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* The replaceable system calls. open takes the mode always (the real call
 * is variadic). */
struct cf_os_table {
	int (*open)(const char *path, int flags, mode_t mode);
	int (*close)(int fd);
	ssize_t (*read)(int fd, void *buf, size_t n);
	ssize_t (*write)(int fd, const void *buf, size_t n);
	ssize_t (*pread)(int fd, void *buf, size_t n, off_t off);
	ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
	int (*fsync)(int fd);
	int (*fdatasync)(int fd);
	int (*ftruncate)(int fd, off_t len);
	int (*fallocate)(int fd, int mode, off_t off, off_t len);
	int (*rename)(const char *from, const char *to);
	int (*unlink)(const char *path);
	int (*mkdir)(const char *path, mode_t mode);
	int (*rmdir)(const char *path);
	int (*fstat)(int fd, struct stat *st);
	int (*stat)(const char *path, struct stat *st);
	int (*flock)(int fd, int op);
	int (*lstat)(const char *path, struct stat *st);
	/* For walks that must not follow links (relative to a directory fd). */
	int (*openat)(int dirfd, const char *path, int flags, mode_t mode);
	int (*fstatat)(int dirfd, const char *path, struct stat *st, int flags);
	int (*unlinkat)(int dirfd, const char *path, int flags);
	int (*renameat2)(int fromfd, const char *from, int tofd, const char *to, unsigned flags);
};

/* The table all of Coffer uses; tests may patch it (see above). */
extern struct cf_os_table cf_os;
/* The real system calls, for a test to restore an entry: cf_os = cf_os_real. */
extern const struct cf_os_table cf_os_real;

/* Open PATH (O_CLOEXEC is added). Errors: from errno (COFFER_E_FILE_NOT_FOUND,
 * COFFER_E_PERMISSION, COFFER_E_EXISTS, COFFER_E_NOT_A_DIRECTORY, COFFER_E_IO...). */
int cf_open(int *fd, const char *path, int flags, mode_t mode);
/* Close FD (never retried). Errors: COFFER_E_IO (a delayed write error). */
int cf_close(int fd, const char *path);
/* Read exactly N bytes at OFF. Errors: COFFER_E_SHORT_READ at end of file
 * (offset = OFF), COFFER_E_IO and the other errno codes. */
int cf_pread_full(int fd, const char *path, void *buf, size_t n, uint64_t off);
/* Write exactly N bytes at OFF. Errors: COFFER_E_DISK_FULL, COFFER_E_IO... */
int cf_pwrite_full(int fd, const char *path, const void *buf, size_t n, uint64_t off);
/* Write exactly N bytes at the file position (or the end, with O_APPEND). */
int cf_write_full(int fd, const char *path, const void *buf, size_t n);
int cf_fsync(int fd, const char *path);
int cf_fdatasync(int fd, const char *path);
/* Make the entries of directory DIR durable (open it, fsync, close). */
int cf_fsync_dir(const char *dir);
/* Create PATH and its missing parents with MODE; an existing directory is
 * fine. Errors: COFFER_E_NOT_A_DIRECTORY when a component is not a directory,
 * COFFER_E_INVALID_ARGUMENT for a path too long, errno codes. */
int cf_mkdir_p(const char *path, mode_t mode);
/* Replace PATH with the N bytes of DATA so that a crash leaves the old or
 * the new contents: write PATH.tmp, fsync, rename, fsync the directory.
 * One writer at a time per PATH (callers hold the directory lock). */
int cf_durable_write_file(const char *path, const void *data, size_t n, mode_t mode);
/* Rename FROM to TO durably: fsync FROM, rename, fsync the directory (or
 * both directories). */
int cf_durable_rename(const char *from, const char *to);
/* Rename FROM to TO unless TO exists as anything (a symbolic link, even a
 * dangling one, or an empty directory included): renameat2 with
 * RENAME_NOREPLACE; on a file system without it (EINVAL), an lstat check
 * then cf_os.rename (a window remains there). Nothing is fsynced.
 * Errors: COFFER_E_EXISTS naming TO, errno codes. */
int cf_rename_noreplace(const char *from, const char *to);
/* OUT = A "/" B. Errors: COFFER_E_INVALID_ARGUMENT if it needs more than CAP
 * bytes with the final NUL. */
int cf_path_join(char *out, size_t cap, const char *a, const char *b);
/* Directory part of PATH into OUT ("." if none). Errors as cf_path_join. */
int cf_path_dirname(char *out, size_t cap, const char *path);

/*
 * The data directory lock: DIR/cofferd.lock, held with flock(LOCK_EX) for as
 * long as the process uses the store. The file holds "PID\nWHO\nSTART\n"
 * (START in UTC ISO 8601) so that a refused process can say who holds it.
 * The file stays after release (removing it would race with a process that
 * has just opened it); an unlocked file means nobody holds the store.
 * A lock is per open file: a second acquire in the same process is refused
 * as well.
 */
typedef struct cf_dirlock cf_dirlock;

/* Errors: COFFER_E_LOCKED naming the holder's pid, program and start time;
 * COFFER_E_FILE_NOT_FOUND if DIR does not exist; COFFER_E_NOMEM; errno codes. */
int cf_dirlock_acquire(cf_dirlock **out, const char *dir, const char *who);
/* Release and free the lock; NULL is ignored. */
void cf_dirlock_release(cf_dirlock *lock);

/* ---- test hooks ---- */
#ifdef COFFER_TESTING
int cf_inject(const char *name);
#define CF_INJECT(name) cf_inject(name)
/* Arm NAME: let SKIP hits pass, then fail the next COUNT hits (0: all) with
 * ERR. ERR 0 disarms. Errors: COFFER_E_INVALID_ARGUMENT (name too long),
 * COFFER_E_LIMIT (too many points armed). */
int cf_inject_arm(const char *name, int err, unsigned skip, unsigned count);
/* Arm from a COFFER_INJECT-style SPEC. Errors: COFFER_E_INVALID_ARGUMENT
 * naming the bad entry (nothing of SPEC is armed then). */
int cf_inject_parse(const char *spec);
/* Disarm every point and read COFFER_INJECT again at the next use. */
void cf_inject_reset(void);
/* How many times NAME has failed since it was armed. */
unsigned cf_inject_fired(const char *name);
/* Fault hook for the write/pwrite/fsync/fdatasync helpers (see above). Set
 * it while no other thread does I/O. */
extern int (*cf_os_fault_hook)(const char *op, int fd, const char *path);
#else
#define CF_INJECT(name) 0
#endif

#endif
