/*
 * cmd_verify.c - coffer verify SET...: re-read every block of each set and
 * check every checksum (block XXH3, file SHA-256 and size, manifest,
 * trailer), the files' own headers (each log generation's number and
 * signature, the database header) and that the generations form the
 * contiguous range the manifest gives; then, with several sets, that they
 * form one restorable chain in the order given. One line per good set;
 * the first bad set's error ends the command (exit status = its code).
 */
#include <stdio.h>
#include <string.h>

#include "backup/archive.h"
#include "cli/cli.h"
#include "common/err.h"

static int verify_one(const char *set, cf_archive_reader **out)
{
	cf_archive_reader *r;
	struct cf_content_check *cc = NULL;
	const char *name;
	int rc;
	CF_RET(cf_archive_open(&r, set));
	const struct cf_set_manifest *m = cf_archive_manifest(r);
	CF_GO(rc, cf_content_check_new(&cc, set));
	if (m) {
		CF_GO(rc, cf_set_check(m, set));
		cf_content_check_expect(cc, m->meta.signature, m->meta.page_size);
	}
	while ((rc = cf_archive_next_file(r, &name)) == COFFER_OK) {
		uint64_t size = 0;
		const void *d;
		size_t n;
		CF_GO(rc, cf_content_check_begin(cc, name));
		do {
			CF_GO(rc, cf_archive_read(r, &d, &n));
			CF_GO(rc, cf_content_check_feed(cc, d, n));
			size += n;
		} while (n);
		CF_GO(rc, cf_content_check_end(cc, size));
	}
	if (rc != COFFER_E_NOT_FOUND)
		goto err;
	m = cf_archive_manifest(r);
	CF_GO(rc, cf_set_check(m, set));
	CF_GO(rc, cf_content_check_finish(cc, m));
	cf_content_check_free(cc);
	printf("ok: %s: %s, %u files, %llu bytes, generations %u..%u\n", set,
	       cf_set_type_name(m->meta.type), m->nfiles, (unsigned long long)m->total_bytes,
	       m->meta.gen_first, m->meta.gen_last);
	fflush(stdout);
	*out = r;
	return COFFER_OK;
err:
	cf_content_check_free(cc);
	cf_archive_close(r);
	return rc;
}

int cmd_verify(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	if (argc < 2 || (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")))) {
		if (argc == 2) {
			puts("usage: coffer verify SET...   (SET: an archive file, a directory set, or '-')");
			return COFFER_OK;
		}
		return cli_usage_error("verify", "usage: coffer verify SET...");
	}
	int n = argc - 1, rc = COFFER_OK, stdin_used = 0;
	cf_archive_reader *readers[256] = {0};
	const struct cf_set_manifest *mf[256];
	if (n > 256)
		return cli_usage_error("verify", "at most 256 sets at a time");
	for (int i = 0; i < n; i++) {
		if (strcmp(argv[i + 1], "-") == 0 && stdin_used++)
			return cli_usage_error("verify", "standard input ('-') can be given only once");
		if (argv[i + 1][0] == '-' && argv[i + 1][1] != '\0')
			return cli_usage_error("verify", "unknown option '%s'", argv[i + 1]);
	}
	for (int i = 0; i < n && rc == COFFER_OK; i++) {
		rc = verify_one(argv[i + 1], &readers[i]);
		if (rc == COFFER_OK)
			mf[i] = cf_archive_manifest(readers[i]);
	}
	if (rc == COFFER_OK && n > 1) {
		rc = cf_set_chain_check(mf, (const char *const *)(argv + 1), (size_t)n);
		if (rc == COFFER_OK)
			printf("ok: chain of %d sets: %s set then %d %s, generations %u..%u\n", n,
			       cf_set_type_name(mf[0]->meta.type), n - 1,
			       mf[1]->meta.type == CF_SET_DIFFERENTIAL ? "differential" : "incremental(s)",
			       mf[0]->meta.gen_first, mf[n - 1]->meta.gen_last);
	}
	for (int i = 0; i < n; i++)
		cf_archive_close(readers[i]);
	return rc;
}
