/*
 * mkset.c - make backup sets from a live store without cofferd, for the
 * end-to-end tests of coffer verify / list / restore
 * (tests/e2e/test_restore_offline.py).
 *
 *   mkset make STORE FULL INCR [DIFF] [--format dir] [--level N] [--keys N]
 *       Create STORE, put N keys (default 1000), checkpoint, put N/10 more,
 *       roll the log, write FULL from the store's files as they are (the
 *       store open and quiet), put N/2 - N/10 more, print "mid G:O" (the log
 *       position after them), put the rest up to 2N, roll, write INCR with
 *       the generations after FULL's, and DIFF (if given): the same
 *       generations as a differential of FULL. Prints "full A..B",
 *       "incr C..D", "mid G:O", "keys 2N".
 *   mkset check DIR FROM TO present|absent
 *       Open the store in DIR and check keys FROM..TO-1.
 *
 * Keys are "key%06d" in tree "main", values "value %d of the backup test".
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <coffer/coffer.h>

#include "backup/archive.h"
#include "common/err.h"
#include "engine/env.h"

static void die(const char *what, int rc)
{
	fprintf(stderr, "mkset: %s: %s (%s)\n", what, coffer_error_last()->message,
		coffer_code_name(rc) ? coffer_code_name(rc) : "?");
	exit(1);
}

#define OK(x)                          \
	do {                           \
		int rc_ = (x);         \
		if (rc_)               \
			die(#x, rc_);  \
	} while (0)

static void value(char *v, size_t cap, int i)
{
	snprintf(v, cap, "value %d of the backup test", i);
}

static void put_keys(coffer_env *env, int from, int to)
{
	for (int i = from; i < to;) {
		coffer_txn *t;
		OK(coffer_txn_begin(env, 0, &t));
		for (int j = 0; j < 50 && i < to; j++, i++) {
			char k[32], v[96];
			snprintf(k, sizeof k, "key%06d", i);
			value(v, sizeof v, i);
			OK(coffer_put(t, "main", k, strlen(k), v, strlen(v), 0));
		}
		OK(coffer_txn_commit(t));
	}
}

static void copy_into(cf_archive_writer *w, const char *path, const char *name)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "mkset: open %s: %s\n", path, strerror(errno));
		exit(1);
	}
	OK(cf_archive_file_begin(w, name));
	static unsigned char buf[1 << 16];
	ssize_t k;
	while ((k = read(fd, buf, sizeof buf)) > 0)
		OK(cf_archive_file_write(w, buf, (size_t)k));
	close(fd);
	OK(cf_archive_file_end(w));
}

static void write_set(const char *store, const char *out, const struct cf_archive_options *o,
		      uint32_t type, uint32_t g1, uint32_t g2, const uint8_t *parent, uint8_t id[16],
		      uint64_t redo, uint32_t page_size)
{
	char p[4096];
	struct cf_checkpoint ck;
	snprintf(p, sizeof p, "%s/checkpoint", store);
	OK(cf_checkpoint_read(p, &ck));
	cf_set_meta m = {.type = type, .page_size = page_size, .gen_first = g1, .gen_last = g2,
			 .redo_lsn = redo};
	memcpy(m.signature, ck.signature, 16);
	if (getrandom(id, 16, 0) != 16)
		exit(1);
	memcpy(m.set_id, id, 16);
	if (parent)
		memcpy(m.parent_id, parent, 16);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	m.start_us = m.end_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	cf_archive_writer *w;
	OK(cf_archive_create(&w, out, o));
	if (type == CF_SET_FULL) {
		snprintf(p, sizeof p, "%s/coffer.db", store);
		copy_into(w, p, "coffer.db");
	}
	for (uint32_t g = g1; g <= g2; g++) {
		char name[32];
		snprintf(name, sizeof name, "log/%010u.log", g);
		snprintf(p, sizeof p, "%s/%s", store, name);
		copy_into(w, p, name);
	}
	OK(cf_archive_finish(w, &m));
}

static int cmd_make(int argc, char **argv)
{
	const char *pos[4] = {0};
	int npos = 0, keys = 1000;
	struct cf_archive_options ao = {0};
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--format") && i + 1 < argc)
			ao.format_dir = !strcmp(argv[++i], "dir");
		else if (!strcmp(argv[i], "--level") && i + 1 < argc)
			ao.compress_level = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--keys") && i + 1 < argc)
			keys = atoi(argv[++i]);
		else if (npos < 4)
			pos[npos++] = argv[i];
	}
	if (npos < 3 || keys < 10) {
		fprintf(stderr, "usage: mkset make STORE FULL INCR [DIFF] [--format dir] [--level N] [--keys N]\n");
		return 2;
	}
	const char *store = pos[0];
	coffer_env_options o;
	coffer_env_options_init(&o);
	o.flags = COFFER_ENV_CREATE;
	o.page_size = 4096;
	o.log_file_size = 1u << 20;
	o.checkpoint_seconds = 3600;
	coffer_env *env;
	OK(coffer_env_open(&env, store, &o));
	put_keys(env, 0, keys);
	OK(coffer_env_checkpoint(env));
	char p[4096];
	struct cf_checkpoint ck;
	snprintf(p, sizeof p, "%s/checkpoint", store);
	OK(cf_checkpoint_read(p, &ck));
	put_keys(env, keys, keys + keys / 10);
	uint32_t full_last, incr_last;
	OK(cf_log_roll(env->log, &full_last));
	uint8_t full_id[16], incr_id[16], diff_id[16];
	write_set(store, pos[1], &ao, CF_SET_FULL, CF_LSN_GEN(ck.redo), full_last, NULL, full_id, ck.redo,
		  4096);
	put_keys(env, keys + keys / 10, keys + keys / 2);
	struct coffer_env_info info;
	OK(coffer_env_info(env, &info));
	uint64_t mid = info.last_commit_lsn;
	put_keys(env, keys + keys / 2, 2 * keys);
	OK(cf_log_roll(env->log, &incr_last));
	write_set(store, pos[2], &ao, CF_SET_INCREMENTAL, full_last + 1, incr_last, full_id, incr_id, 0,
		  4096);
	if (npos > 3)
		write_set(store, pos[3], &ao, CF_SET_DIFFERENTIAL, full_last + 1, incr_last, full_id,
			  diff_id, 0, 4096);
	OK(coffer_env_close(env));
	printf("full %u..%u\nincr %u..%u\nmid %u:%u\nkeys %d\n", CF_LSN_GEN(ck.redo), full_last,
	       full_last + 1, incr_last, CF_LSN_GEN(mid), CF_LSN_OFF(mid), 2 * keys);
	return 0;
}

static int cmd_check(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: mkset check DIR FROM TO present|absent\n");
		return 2;
	}
	int from = atoi(argv[1]), to = atoi(argv[2]), present = !strcmp(argv[3], "present");
	coffer_env_options o;
	coffer_env_options_init(&o);
	coffer_env *env;
	OK(coffer_env_open(&env, argv[0], &o));
	coffer_txn *t;
	OK(coffer_txn_begin(env, COFFER_TXN_READ_ONLY, &t));
	int bad = 0;
	for (int i = from; i < to; i++) {
		char k[32], v[96];
		snprintf(k, sizeof k, "key%06d", i);
		value(v, sizeof v, i);
		void *val = NULL;
		size_t vlen = 0;
		int rc = coffer_get(t, "main", k, strlen(k), &val, &vlen);
		if (present && (rc || vlen != strlen(v) || memcmp(val, v, vlen))) {
			if (bad++ < 5)
				fprintf(stderr, "mkset: %s missing or wrong (%s)\n", k,
					rc ? coffer_code_name(rc) : "value");
		} else if (!present && rc != COFFER_E_NOT_FOUND && rc != COFFER_E_TREE_NOT_FOUND) {
			if (bad++ < 5)
				fprintf(stderr, "mkset: %s present\n", k);
		}
		free(val);
	}
	coffer_txn_abort(t);
	OK(coffer_env_close(env));
	printf("checked %d keys %s: %d bad\n", to - from, present ? "present" : "absent", bad);
	return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "make"))
		return cmd_make(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "check"))
		return cmd_check(argc - 2, argv + 2);
	fprintf(stderr, "usage: mkset make ... | mkset check ...\n");
	return 2;
}
