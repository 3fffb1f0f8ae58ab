/*
 * ar_restore.c - restore: lay a chain of backup sets down into a new store
 * and bring it up with hard recovery (NTBackup + eseutil /cc).
 *
 * Steps, each failing before anything is visible in the target:
 *   1. open every set (manifests of files and directories are read at once)
 *      and check each set and the chain (cf_set_check, cf_set_chain_check);
 *      a set read from a pipe is checked when its manifest arrives;
 *   2. the target: refused if it holds anything but an event log (a real
 *      directory), an unlocked lock file (not a link: cf_dirlock_acquire
 *      opens it O_NOFOLLOW) and a .restore-tmp left by a killed restore
 *      (removed once the lock is held; a symbolic link there is removed
 *      itself, never followed) (COFFER_E_DIR_NOT_EMPTY), or if a process
 *      holds its lock (COFFER_E_SERVER_RUNNING); else created 0700 and
 *      locked for the whole restore (cf_dirlock_acquire);
 *   3. every stored file is written into TARGET/.restore-tmp as it is read,
 *      each block verified before it is written, each file's size and
 *      SHA-256 before it counts, its header checked (cf_content_check);
 *      the reader hashes on its own thread while this one checks and
 *      writes (ar_read.c); the file's space is preallocated when the
 *      manifest gives its size, and its writeback started every 32 MiB
 *      (sync_file_range) so that its fsync is not one burst;
 *   4. TARGET/.restore-tmp/checkpoint: the full set's signature and redo
 *      LSN; the database header (both copies) set to NEEDS_RECOVERY with that
 *      redo LSN unless it already is; every file and directory fsynced;
 *   5. log/, checkpoint, then coffer.db renamed into the target (coffer.db
 *      last: its presence makes the directory a store, and it says "needs
 *      recovery"), never over anything that appeared there meanwhile
 *      (RENAME_NOREPLACE: COFFER_E_DIR_NOT_EMPTY); the target fsynced;
 *      .restore-tmp removed;
 *   6. the lock released (the engine takes it again), then unless
 *      --no-recover, coffer_env_open(COFFER_ENV_HARD_RECOVERY [, until])
 *      and coffer_env_close: a clean store. If recovery fails the store
 *      stays NEEDS_RECOVERY (cofferd refuses it, naming coffer recover).
 * On failure in steps 1-5 .restore-tmp is removed; the target keeps only its
 * lock file and its event log, which records 1300 and 1302, so the same
 * restore can be run again at once. A restore refused before the target is
 * touched (step 1 or 2) sends 1302 to the system log only.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <coffer/coffer.h>
#include <coffer/event.h>

#include "backup/ar_int.h"
#include "common/err.h"
#include "common/os.h"
#include "common/timefmt.h"
#include "engine/env.h"
#include "engine/header.h"

#define TMP_NAME ".restore-tmp"

struct restore {
	const struct cf_restore_options *o;
	size_t n;
	const char *const *names;
	cf_archive_reader **r;
	const struct cf_set_manifest **mf;
	cf_dirlock *lock;
	coffer_evlog *ev;
	char tmp[PATH_MAX];
	int tmp_made;
	int moved; /* how many of log/, checkpoint are in the target already */
	char sets_text[1024];
};

/* NAME in the directory open as D is a directory, not a link to one. */
static int real_dir(DIR *d, const char *name)
{
	struct stat st;
	return cf_os.fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

/* The entries of DIR other than the lock file and the event log: *OTHER
 * gets the first one, *COUNT how many. */
static int scan_target(const char *dir, char *other, size_t cap, unsigned *count, int *has_lock)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return cf_error_sys("read the directory", dir, -1);
	struct dirent *e;
	*count = 0;
	*has_lock = 0;
	other[0] = '\0';
	while ((e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (!strcmp(e->d_name, "cofferd.lock")) {
			*has_lock = 1;
			continue;
		}
		if (!strcmp(e->d_name, TMP_NAME))
			continue; /* a restore killed midway: removed (a link as a link) */
		if (!strcmp(e->d_name, "events") && real_dir(d, e->d_name))
			continue; /* an event log; a link there would be followed: "other" */
		if ((*count)++ == 0)
			snprintf(other, cap, "%s", e->d_name);
	}
	closedir(d);
	return COFFER_OK;
}

static int server_running(const char *dir)
{
	const coffer_error *e = coffer_error_last();
	char msg[sizeof e->message];
	snprintf(msg, sizeof msg, "%s", e->message);
	return CF_ERROR(COFFER_E_SERVER_RUNNING, CF_OBJ(.file = dir),
			"refusing to restore into \"%s\": %s; stop it, or restore into another directory",
			dir, msg);
}

static int prepare_target(struct restore *rs)
{
	const char *dir = rs->o->target;
	struct stat st;
	char other[256];
	unsigned count;
	int has_lock;
	if (cf_os.stat(dir, &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			return CF_ERROR(COFFER_E_NOT_A_DIRECTORY, CF_OBJ(.file = dir),
					"the restore target \"%s\" exists and is not a directory", dir);
		CF_RET(scan_target(dir, other, sizeof other, &count, &has_lock));
		if (count) {
			if (has_lock) {
				/* A running server's directory: say so rather than "not empty". */
				cf_dirlock *l;
				int rc = cf_dirlock_acquire(&l, dir, "coffer restore");
				if (rc == COFFER_E_LOCKED)
					return server_running(dir);
				cf_dirlock_release(l);
			}
			return CF_ERROR(COFFER_E_DIR_NOT_EMPTY, CF_OBJ(.file = dir),
					"the restore target \"%s\" is not empty: it holds \"%s\"%s; restore "
					"into a new or empty directory",
					dir, other, count > 1 ? " and more" : "");
		}
	} else if (errno == ENOENT) {
		CF_RET(cf_mkdir_p(dir, 0700));
	} else {
		return cf_error_sys("stat", dir, -1);
	}
	int rc = cf_dirlock_acquire(&rs->lock, dir, "coffer restore");
	if (rc == COFFER_E_LOCKED)
		return server_running(dir);
	CF_RET(rc);
	/* Someone may have put something there meanwhile. */
	CF_RET(scan_target(dir, other, sizeof other, &count, &has_lock));
	if (count)
		return CF_ERROR(COFFER_E_DIR_NOT_EMPTY, CF_OBJ(.file = dir),
				"the restore target \"%s\" is not empty: it holds \"%s\"", dir, other);
	/* Left by a restore that was killed: we hold the lock, it is ours. */
	char tmp[PATH_MAX];
	CF_RET(cf_path_join(tmp, sizeof tmp, dir, TMP_NAME));
	ar_remove_tree(tmp, 1); /* a symbolic link is removed, never followed */
	return COFFER_OK;
}

#define WB_CHUNK (32u << 20)

/* Preallocate the size the manifest gives NAME (a hint, errors ignored;
 * not on tmpfs, ar_prealloc_helps). */
static void preallocate(struct restore *rs, size_t i, const char *name, int fd)
{
	const struct cf_set_manifest *m = cf_archive_manifest(rs->r[i]);
	if (!ar_prealloc_helps(fd))
		return;
	for (uint32_t k = 0; m && k < m->nfiles; k++)
		if (strcmp(m->files[k].name, name) == 0) {
			int saved = errno;
			if (m->files[k].size)
				cf_os.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)m->files[k].size);
			errno = saved; /* a full disk shows in the writes, with their detail */
			return;
		}
}

/* Write one stored file from R into the temporary directory. */
static int lay_down(struct restore *rs, size_t i, const char *name, struct cf_content_check *cc,
		    struct cf_restore_result *res)
{
	char path[PATH_MAX];
	int fd = -1, rc;
	uint64_t size = 0;
	if (strcmp(name, CF_AR_DB_NAME) == 0 && i > 0)
		return CF_ERROR(COFFER_E_CHAIN_BROKEN, CF_OBJ(.file = rs->names[i]),
				"\"%s\" holds a database file (coffer.db): only the first set of a restore "
				"may be a full or copy set",
				rs->names[i]);
	CF_RET(cf_path_join(path, sizeof path, rs->tmp, name));
	CF_RET(cf_content_check_begin(cc, name));
	rc = cf_open(&fd, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
	if (rc == COFFER_E_EXISTS)
		return CF_ERROR(COFFER_E_CHAIN_BROKEN, CF_OBJ(.file = rs->names[i]),
				"\"%s\" holds \"%s\", which an earlier set of the restore already gave",
				rs->names[i], name);
	CF_RET(rc);
	preallocate(rs, i, name, fd);
	uint64_t wb = 0;
	for (;;) {
		const void *d;
		size_t n;
		CF_GO(rc, cf_archive_read(rs->r[i], &d, &n));
		if (n == 0)
			break;
		CF_GO(rc, cf_content_check_feed(cc, d, n));
		CF_GO(rc, cf_write_full(fd, path, d, n));
		size += n;
		if (size - wb >= WB_CHUNK) { /* best effort: errors show at the fsync */
			sync_file_range(fd, (off_t)wb, (off_t)(size - wb), SYNC_FILE_RANGE_WRITE);
			wb = size;
		}
	}
	CF_GO(rc, cf_content_check_end(cc, size));
	CF_GO(rc, cf_fsync(fd, path));
	rc = cf_close(fd, path);
	fd = -1;
	CF_GO(rc, rc);
	res->files++;
	res->bytes += size;
	return COFFER_OK;
err:
	if (fd >= 0)
		cf_os.close(fd);
	return rc;
}

static int restore_set(struct restore *rs, size_t i, struct cf_restore_result *res)
{
	struct cf_content_check *cc;
	const char *name;
	int rc;
	CF_RET(cf_content_check_new(&cc, rs->names[i]));
	const struct cf_set_manifest *m = cf_archive_manifest(rs->r[i]);
	if (m)
		cf_content_check_expect(cc, m->meta.signature, m->meta.page_size);
	else if (i > 0)
		cf_content_check_expect(cc, rs->mf[0]->meta.signature, 0);
	while ((rc = cf_archive_next_file(rs->r[i], &name)) == COFFER_OK)
		CF_GO(rc, lay_down(rs, i, name, cc, res));
	if (rc != COFFER_E_NOT_FOUND)
		goto err;
	m = cf_archive_manifest(rs->r[i]);
	if (rs->mf[i] == NULL) { /* a stream: check it now that its manifest is known */
		CF_GO(rc, cf_set_check(m, rs->names[i]));
		rs->mf[i] = m;
	}
	CF_GO(rc, cf_content_check_finish(cc, m));
	if (rs->o->on_set)
		rs->o->on_set(rs->o->arg, rs->names[i], m);
	res->sets++;
	rc = COFFER_OK;
err:
	cf_content_check_free(cc);
	return rc;
}

/* Checkpoint file and header: the store must be recovered from the redo LSN. */
static int mark_needs_recovery(struct restore *rs, const cf_set_meta *full)
{
	char path[PATH_MAX];
	struct cf_checkpoint ck = {.redo = full->redo_lsn, .time_us = cf_time_now_us()};
	memcpy(ck.signature, full->signature, 16);
	CF_RET(cf_path_join(path, sizeof path, rs->tmp, "checkpoint"));
	CF_RET(cf_checkpoint_write(path, &ck));
	CF_RET(cf_path_join(path, sizeof path, rs->tmp, CF_AR_DB_NAME));
	int fd, rc;
	unsigned damaged;
	struct cf_header h;
	CF_RET(cf_open(&fd, path, O_RDWR, 0));
	CF_GO(rc, cf_header_read(fd, path, &h, &damaged));
	if (memcmp(h.signature, full->signature, 16) != 0) {
		rc = CF_ERROR(COFFER_E_SIGNATURE_MISMATCH, CF_OBJ(.file = rs->names[0]),
			      "the database file of \"%s\" belongs to another database than its manifest "
			      "says",
			      rs->names[0]);
		goto err;
	}
	if (damaged || h.state != CF_DB_NEEDS_RECOVERY || h.redo_lsn != full->redo_lsn ||
	    h.min_gen != CF_LSN_GEN(full->redo_lsn)) {
		h.state = CF_DB_NEEDS_RECOVERY;
		h.redo_lsn = full->redo_lsn;
		h.min_gen = CF_LSN_GEN(full->redo_lsn);
		h.clean_end_lsn = 0;
		CF_GO(rc, cf_header_write(fd, path, &h)); /* copy A, fsync, copy B, fsync */
	}
	CF_GO(rc, cf_fsync(fd, path));
err:
	cf_os.close(fd);
	return rc;
}

static int move_in(struct restore *rs, const char *name)
{
	char from[PATH_MAX], to[PATH_MAX];
	CF_RET(cf_path_join(from, sizeof from, rs->tmp, name));
	CF_RET(cf_path_join(to, sizeof to, rs->o->target, name));
	/* The target was empty when its lock was taken; whatever appeared
	 * since (a file, a symbolic link) is never replaced. */
	int rc = cf_rename_noreplace(from, to);
	if (rc == COFFER_E_EXISTS)
		return CF_ERROR(COFFER_E_DIR_NOT_EMPTY, CF_OBJ(.file = rs->o->target),
				"\"%s\" appeared in the restore target \"%s\" during the restore; "
				"nothing was replaced; restore into a new or empty directory",
				name, rs->o->target);
	return rc;
}

static void lsn_text(char *buf, size_t cap, uint64_t lsn)
{
	snprintf(buf, cap, "%u:%u", CF_LSN_GEN(lsn), CF_LSN_OFF(lsn));
}

static int recover(struct restore *rs, struct cf_restore_result *res)
{
	coffer_env_options eo;
	coffer_env_options_init(&eo);
	eo.flags = COFFER_ENV_HARD_RECOVERY;
	eo.until_us = rs->o->until_us;
	eo.until_lsn = rs->o->until_lsn;
	eo.evlog = rs->ev;
	coffer_env *env;
	CF_RET(coffer_env_open(&env, rs->o->target, &eo));
	struct coffer_env_info info;
	int rc = coffer_env_info(env, &info);
	if (rc == COFFER_OK) {
		res->recovered_to = info.last_commit_lsn;
		res->pages = info.pages;
	}
	int rc2 = coffer_env_close(env);
	if (rc == COFFER_OK)
		rc = rc2;
	if (rc == COFFER_OK)
		res->recovered = 1;
	return rc;
}

int cf_restore(const char *const *sets, size_t n, const struct cf_restore_options *o,
	       struct cf_restore_result *res)
{
	struct restore rs = {.o = o, .n = n, .names = sets};
	int rc = COFFER_OK, laid = 0;
	memset(res, 0, sizeof *res);
	if (n == 0)
		return CF_ERROR(COFFER_E_CHAIN_BROKEN, NULL, "no backup set given");
	rs.r = calloc(n, sizeof *rs.r);
	rs.mf = calloc(n, sizeof *rs.mf);
	if (rs.r == NULL || rs.mf == NULL) {
		rc = CF_ERROR(COFFER_E_NOMEM, NULL, "no memory");
		goto out;
	}
	size_t streams = 0;
	for (size_t i = 0; i < n; i++) {
		size_t used = strlen(rs.sets_text);
		snprintf(rs.sets_text + used, sizeof rs.sets_text - used, "%s%s", i ? " " : "", sets[i]);
		CF_GO(rc, cf_archive_open(&rs.r[i], sets[i]));
		rs.mf[i] = cf_archive_manifest(rs.r[i]);
		if (rs.mf[i])
			CF_GO(rc, cf_set_check(rs.mf[i], sets[i]));
		else if (++streams > 1) {
			rc = CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL,
				      "only one backup set can be read from standard input");
			goto err;
		}
	}
	if (streams == 0)
		CF_GO(rc, cf_set_chain_check(rs.mf, sets, n));
	else if (rs.mf[0] && rs.mf[0]->meta.type != CF_SET_FULL && rs.mf[0]->meta.type != CF_SET_COPY)
		CF_GO(rc, cf_set_chain_check(rs.mf, sets, 1));

	CF_GO(rc, prepare_target(&rs));
	coffer_evlog_options eo = COFFER_EVLOG_OPTIONS_INIT;
	eo.flags = o->evlog_flags;
	if (coffer_evlog_open(&rs.ev, o->target, &eo) != COFFER_OK) {
		rs.ev = NULL; /* the restore goes on; the failure is not the restore's */
		coffer_error_clear();
	}
	if (rs.ev) {
		coffer_evfield f[2] = {{"SETS", rs.sets_text}, {"TARGET", o->target}};
		coffer_event_write(rs.ev, COFFER_EV_RESTORE_STARTED, f, 2, "restore of %s into %s started",
				   rs.sets_text, o->target);
	}
	CF_GO(rc, cf_path_join(rs.tmp, sizeof rs.tmp, o->target, TMP_NAME));
	if (cf_os.mkdir(rs.tmp, 0700) != 0) {
		rc = cf_error_sys("create directory", rs.tmp, -1);
		goto err;
	}
	rs.tmp_made = 1;
	char logdir[PATH_MAX];
	CF_GO(rc, cf_path_join(logdir, sizeof logdir, rs.tmp, "log"));
	if (cf_os.mkdir(logdir, 0700) != 0) {
		rc = cf_error_sys("create directory", logdir, -1);
		goto err;
	}
	for (size_t i = 0; i < n; i++)
		CF_GO(rc, restore_set(&rs, i, res));
	CF_GO(rc, cf_set_chain_check(rs.mf, sets, n));

	const cf_set_meta *full = &rs.mf[0]->meta, *last = &rs.mf[n - 1]->meta;
	res->gen_first = full->gen_first;
	res->gen_last = last->gen_last;
	res->redo_lsn = full->redo_lsn;
	CF_GO(rc, mark_needs_recovery(&rs, full));
	CF_GO(rc, cf_fsync_dir(logdir));
	CF_GO(rc, cf_fsync_dir(rs.tmp));
	CF_GO(rc, move_in(&rs, "log"));
	rs.moved = 1;
	CF_GO(rc, move_in(&rs, "checkpoint"));
	rs.moved = 2;
	CF_GO(rc, move_in(&rs, CF_AR_DB_NAME));
	laid = 1;
	CF_GO(rc, cf_fsync_dir(o->target));
	cf_os.rmdir(rs.tmp);
	rs.tmp_made = 0;
	CF_GO(rc, cf_fsync_dir(o->target));
	cf_dirlock_release(rs.lock); /* the engine locks the store itself */
	rs.lock = NULL;
	if (!o->no_recover) {
		rc = recover(&rs, res);
		if (rc) {
			cf_error_prefix("the sets were laid down in \"%s\", but hard recovery failed (fix "
					"the cause, then run 'coffer recover %s')",
					o->target, o->target);
			goto err;
		}
	}
	if (rs.ev) {
		char redo[32], to[32], gens[48], files[32];
		lsn_text(redo, sizeof redo, res->redo_lsn);
		lsn_text(to, sizeof to, res->recovered_to);
		snprintf(gens, sizeof gens, "%u..%u", res->gen_first, res->gen_last);
		snprintf(files, sizeof files, "%u", res->files);
		coffer_evfield f[6] = {{"SETS", rs.sets_text}, {"TARGET", o->target},
				       {"GENERATIONS", gens}, {"REDO_LSN", redo},
				       {"FILES", files},
				       {"RECOVERY", o->no_recover ? "not run (--no-recover)" : to}};
		if (o->no_recover)
			coffer_event_write(rs.ev, COFFER_EV_RESTORE_COMPLETED, f, 6,
					   "restored %s into %s (generations %s); hard recovery not run: "
					   "run 'coffer recover %s'",
					   rs.sets_text, o->target, gens, o->target);
		else
			coffer_event_write(rs.ev, COFFER_EV_RESTORE_COMPLETED, f, 6,
					   "restored %s into %s (generations %s); hard recovery replayed "
					   "the log from %s to %s",
					   rs.sets_text, o->target, gens, redo, to);
	}
	goto out;
err:
	if (rs.ev == NULL && !(o->evlog_flags & COFFER_EVLOG_NO_SYSTEM)) {
		/* Refused before the target was touched: the system log only. */
		coffer_error saved = *coffer_error_last();
		coffer_evlog_options so = COFFER_EVLOG_OPTIONS_INIT;
		if (coffer_evlog_open(&rs.ev, NULL, &so) != COFFER_OK)
			rs.ev = NULL;
		*(coffer_error *)coffer_error_last() = saved;
	}
	if (rs.ev) {
		coffer_evfield f[3] = {{"SETS", rs.sets_text},
				       {"TARGET", o->target},
				       {"STATE", laid ? "laid down, needs recovery" : "nothing restored"}};
		coffer_event_error(rs.ev, COFFER_EV_RESTORE_FAILED, coffer_error_last(), f, 3);
	}
out: {
	coffer_error saved = *coffer_error_last();
	/* coffer.db did not get there: take log/ and checkpoint back out, so
	 * that the target holds nothing of the restore. */
	static const char *const moved[] = {"log", "checkpoint"};
	for (int i = laid ? 0 : rs.moved; i-- > 0;) {
		char from[PATH_MAX], to[PATH_MAX];
		if (cf_path_join(from, sizeof from, o->target, moved[i]) == COFFER_OK &&
		    cf_path_join(to, sizeof to, rs.tmp, moved[i]) == COFFER_OK)
			(void)cf_os.rename(from, to);
	}
	if (rs.tmp_made)
		ar_remove_tree(rs.tmp, 1);
	cf_dirlock_release(rs.lock);
	coffer_evlog_close(rs.ev);
	for (size_t i = 0; rs.r && i < n; i++)
		cf_archive_close(rs.r[i]);
	free(rs.r);
	free((void *)rs.mf);
	*(coffer_error *)coffer_error_last() = saved;
}
	return rc;
}
