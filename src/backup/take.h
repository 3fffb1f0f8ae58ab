/*
 * take.h - the client's side of a backup stream: the frames of a backup
 * in (src/backup/proto.h), a backup set out (src/backup/archive.h).
 *
 * After the client has asked COFFER.BACKUP and read the server's answer,
 * cf_take_stream reads INFO, then every file the server sends - coffer.db
 * (full and copy), ROLLED, then each log generation as DATA/ZEROS frames or,
 * on the fast path, as a descriptor (FILE_FD, answered FD_OK or FD_FAIL) -
 * into the archive writer, until the last generation has ended. It checks
 * every frame and every claim the server makes (frame checksums, file
 * names, sizes, generation order) and fails with a named error on the
 * first that does not hold: a server is not trusted (test_hostile_server.py,
 * the backup_stream fuzz target). It does not finish the set and sends no
 * CONFIRM: that is the caller's (src/cli/cmd_backup.c).
 */
#ifndef COFFER_BACKUP_TAKE_H
#define COFFER_BACKUP_TAKE_H

#include <stdint.h>

#include <coffer/backup.h>

#include "backup/archive.h"
#include "backup/proto.h"

struct cf_take {
	/* in */
	struct cf_stream *s;
	cf_archive_writer *w;
	uint8_t *buf;   /* CF_BKP_MAX_PAYLOAD bytes of scratch */
	int fast;       /* the fast path was agreed: descriptors may come */
	void (*tick)(struct cf_take *t); /* after each piece of data, if set */
	void *arg;      /* the caller's, for tick */
	/* out */
	struct coffer_backup_info bi; /* INFO, with gen_last from ROLLED: on
					 success every generation through it is
					 in the set */
	const char *phase;            /* "database", "logs" */
	uint64_t done, total;         /* bytes of files taken, announced */
	uint32_t fast_files;          /* generations taken by descriptor */
};

/* Take the backup of T->s into T->w (see above). COFFER_OK once the last
 * log generation has ended; else the first error, the set unfinished. */
int cf_take_stream(struct cf_take *t);

/* After cf_take_stream succeeded: finish the set (cf_archive_finish, which
 * frees T->w in every case) with the manifest's identity taken from T->bi,
 * ended at END_US. */
int cf_take_finish(struct cf_take *t, int64_t end_us);

#endif
