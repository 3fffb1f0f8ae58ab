/*
 * cmd_list.c - coffer list SET: the catalog of a backup set (its manifest):
 * type, ids, times, database signature, page size, redo position, log
 * range, the host and Coffer version that made it, and every file with its
 * size and SHA-256. An archive file or directory is listed from its
 * manifest at once (by seeking); a set read from standard input is read and
 * verified to its end first.
 */
#include <stdio.h>
#include <string.h>

#include "backup/archive.h"
#include "cli/cli.h"
#include "common/err.h"
#include "common/timefmt.h"

static void hex(char *out, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

int cmd_list(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		puts("usage: coffer list SET   (SET: an archive file, a directory set, or '-')");
		return COFFER_OK;
	}
	if (argc != 2 || (argv[1][0] == '-' && argv[1][1] != '\0'))
		return cli_usage_error("list", "usage: coffer list SET");
	const char *set = argv[1];
	cf_archive_reader *r;
	CF_RET(cf_archive_open(&r, set));
	int rc = COFFER_OK;
	if (cf_archive_manifest(r) == NULL)
		rc = cf_archive_read_all(r);
	if (rc) {
		cf_archive_close(r);
		return rc;
	}
	const struct cf_set_manifest *m = cf_archive_manifest(r);
	const cf_set_meta *mt = &m->meta;
	static const uint8_t zero[16];
	char id[33], parent[33], sig[33], t1[CF_TIME_BUF], t2[CF_TIME_BUF];
	hex(id, mt->set_id, 16);
	hex(parent, mt->parent_id, 16);
	hex(sig, mt->signature, 16);
	printf("set:         %s\n", set);
	printf("type:        %s\n", cf_set_type_name(mt->type));
	printf("set id:      %s\n", id);
	printf("parent id:   %s\n", memcmp(mt->parent_id, zero, 16) ? parent : "none");
	printf("started:     %s\n", cf_time_format(mt->start_us, t1, sizeof t1));
	printf("ended:       %s\n", cf_time_format(mt->end_us, t2, sizeof t2));
	printf("signature:   %s\n", sig);
	printf("page size:   %u\n", mt->page_size);
	if (mt->type == CF_SET_FULL || mt->type == CF_SET_COPY)
		printf("redo:        %u:%u\n", (unsigned)(mt->redo_lsn >> 32), (unsigned)mt->redo_lsn);
	printf("log:         generations %u..%u\n", mt->gen_first, mt->gen_last);
	printf("host:        %s\n", m->host);
	printf("coffer:      %s\n", m->coffer_version);
	printf("files:       %u, %llu bytes\n", m->nfiles, (unsigned long long)m->total_bytes);
	for (uint32_t i = 0; i < m->nfiles; i++) {
		char sha[65];
		hex(sha, m->files[i].sha256, 32);
		printf("  %-20s %14llu  sha256:%s\n", m->files[i].name, (unsigned long long)m->files[i].size,
		       sha);
	}
	cf_archive_close(r);
	return COFFER_OK;
}
