/*
 * cmd_dump_store.c - coffer dump header DIR, coffer dump checkpoint DIR
 * (eseutil /mh and /mk): the database header copies and the checkpoint file.
 * Read-only; works while a server runs (what it prints may then be a moment
 * old).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/err.h"
#include "common/os.h"
#include "common/timefmt.h"
#include "engine/env.h"

static void hex16(const uint8_t *b, char out[33])
{
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void lsn_text(cf_lsn l, char out[24])
{
	snprintf(out, 24, "%010u:%010u", CF_LSN_GEN(l), CF_LSN_OFF(l));
}

static int one_dir(const char *what, int argc, char **argv, const char **dir)
{
	if (argc != 2)
		return cli_usage_error("dump", "usage: coffer dump %s DIR", what);
	*dir = argv[1];
	return COFFER_OK;
}

int dump_header(int argc, char **argv)
{
	const char *dir = NULL;
	CF_RET(one_dir("header", argc, argv, &dir));
	char path[4096];
	CF_RET(cf_path_join(path, sizeof path, dir, "coffer.db"));
	int fd;
	CF_RET(cf_open(&fd, path, O_RDONLY, 0));
	struct cf_header h;
	unsigned damaged = 0;
	int rc = cf_header_read(fd, path, &h, &damaged);
	close(fd);
	CF_RET(rc);
	char sig[33], t[CF_TIME_BUF], l1[24], l2[24];
	hex16(h.signature, sig);
	printf("database   %s\n", path);
	printf("  format version  %u\n", h.version);
	printf("  page size       %u\n", h.page_size);
	printf("  signature       %s\n", sig);
	printf("  created         %s\n", cf_time_format(h.created_us, t, sizeof t));
	printf("  state           %s\n", cf_db_state_name(h.state));
	lsn_text(h.redo_lsn, l1);
	printf("  redo position   %s (recovery starts here; generations from %010u needed)\n", l1,
	       h.min_gen);
	lsn_text(h.clean_end_lsn, l2);
	printf("  clean end       %s\n", h.clean_end_lsn ? l2 : "none");
	printf("  header copies   A %s, B %s (write counter %llu)\n",
	       damaged & CF_HEADER_A_DAMAGED ? "DAMAGED" : "ok",
	       damaged & CF_HEADER_B_DAMAGED ? "DAMAGED" : "ok", (unsigned long long)h.counter);
	static const char *kinds[3] = {"last full", "last incremental", "last differential"};
	for (int i = 0; i < 3; i++) {
		const struct cf_backup_info *b = &h.last[i];
		if (!b->valid) {
			printf("  %-17s none\n", kinds[i]);
			continue;
		}
		char id[33], ts[CF_TIME_BUF], te[CF_TIME_BUF];
		hex16(b->id, id);
		printf("  %-17s id %s, generations %010u..%010u, %s .. %s\n", kinds[i], id, b->gen_lo,
		       b->gen_hi, cf_time_format(b->start_us, ts, sizeof ts),
		       cf_time_format(b->end_us, te, sizeof te));
	}
	return COFFER_OK;
}

int dump_checkpoint(int argc, char **argv)
{
	const char *dir = NULL;
	CF_RET(one_dir("checkpoint", argc, argv, &dir));
	char path[4096];
	CF_RET(cf_path_join(path, sizeof path, dir, "checkpoint"));
	struct cf_checkpoint c;
	CF_RET(cf_checkpoint_read(path, &c));
	char sig[33], t[CF_TIME_BUF], l[24];
	hex16(c.signature, sig);
	lsn_text(c.redo, l);
	printf("checkpoint %s\n", path);
	printf("  signature       %s\n", sig);
	printf("  redo position   %s (generation %010u, offset %u)\n", l, CF_LSN_GEN(c.redo),
	       CF_LSN_OFF(c.redo));
	printf("  written         %s\n", cf_time_format(c.time_us, t, sizeof t));
	return COFFER_OK;
}
