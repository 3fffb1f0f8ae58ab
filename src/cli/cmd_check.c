/*
 * cmd_check.c - coffer check DIR (eseutil /k and /g): every page checksum and
 * the structure of every tree, offline. Prints each problem with its page and
 * exits non-zero (COFFER_E_PAGE_CORRUPT) if there is any.
 */
#include <stdio.h>

#include <coffer/coffer.h>

#include "cli/cli.h"
#include "common/err.h"

static void on_problem(void *arg, int64_t page, const char *what)
{
	(void)arg;
	if (page >= 0)
		printf("problem: page %lld: %s\n", (long long)page, what);
	else
		printf("problem: %s\n", what);
}

int cmd_check(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	if (argc != 2 || argv[1][0] == '-')
		return cli_usage_error("check", "usage: coffer check DIR");
	struct coffer_check_result r;
	int rc = coffer_check(argv[1], on_problem, NULL, &r);
	if (rc == COFFER_OK || rc == COFFER_E_PAGE_CORRUPT)
		printf("checked %s: %llu pages of %u bytes, %llu trees, %llu keys, %llu free pages, "
		       "%llu bad checksums, %llu problems\n",
		       argv[1], (unsigned long long)r.pages, r.page_size, (unsigned long long)r.trees,
		       (unsigned long long)r.keys, (unsigned long long)r.free_pages,
		       (unsigned long long)r.bad_checksums, (unsigned long long)r.problems);
	return rc;
}
