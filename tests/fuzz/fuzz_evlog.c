/*
 * fuzz_evlog.c - libFuzzer target: the event log reader
 * (coffer_evlog_read, src/common/evlog.c; format in docs/design.md section 8)
 * over a data directory whose events/ holds the input as one or two files.
 * Every event delivered has each of its strings read in full.
 *
 * Input:
 *   byte 0   flags
 *     bit 0  fix checksums: recompute the XXH3 of every record whose magic,
 *            length bounds and extent hold (found as the reader's resync
 *            finds them), so that mutations reach the payload decoder
 *     bit 1  stop the reading from the event callback after the first event
 *            (a callback's non-zero return ends the read)
 *   then the file: a second "COFFEREV" file magic at an offset >= 16 starts
 *   a second file (events-000002.log).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <coffer/event.h>

#include "engine/page.h"
#include "fuzz_util.h"

#define FILE_HDR 16u
#define REC_HDR 16u
#define MIN_PAYLOAD 27u
#define MAX_PAYLOAD 65536u

static const uint8_t rec_magic[4] = {0xFF, 0xC5, 0x56, 0xFE};

static void fix_checksums(uint8_t *b, size_t n)
{
	size_t pos = 0;
	while (n - pos >= REC_HDR) {
		const uint8_t *m = memmem(b + pos, n - pos, rec_magic, 4);
		if (m == NULL)
			break;
		pos = (size_t)(m - b);
		if (n - pos < REC_HDR)
			break;
		uint32_t len = cf_get32(b + pos + 4);
		if (len < MIN_PAYLOAD || len > MAX_PAYLOAD || len > n - pos - REC_HDR) {
			pos++;
			continue;
		}
		XXH3_state_t st;
		XXH3_64bits_reset(&st);
		XXH3_64bits_update(&st, b + pos + 4, 4);
		XXH3_64bits_update(&st, b + pos + REC_HDR, len);
		cf_put64(b + pos + 8, XXH3_64bits_digest(&st));
		pos += REC_HDR + len;
	}
}

struct ctx {
	unsigned events, damage;
	int stop_after_one;
};

static int on_event(const coffer_event *ev, void *arg)
{
	struct ctx *x = arg;
	size_t n = strlen(ev->source) + strlen(ev->message) + strlen(ev->file);
	for (size_t i = 0; i < ev->nfields; i++)
		n += strlen(ev->fields[i].key) + strlen(ev->fields[i].value);
	(void)coffer_severity_name(ev->severity);
	(void)n;
	x->events++;
	return x->stop_after_one ? 1 : 0;
}

static int on_damage(const char *file, uint64_t offset, const char *why, void *arg)
{
	struct ctx *x = arg;
	(void)offset;
	fz_debug("damage at %llu: %s", (unsigned long long)offset, why);
	(void)strlen(file);
	x->damage++;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char datadir[PATH_MAX], files[2][PATH_MAX];
	static uint8_t *copy;
	if (datadir[0] == '\0') {
		char events[PATH_MAX];
		fz_path(datadir, fz_tmpdir(), "data");
		fz_mkdir(datadir);
		fz_path(events, datadir, "events");
		fz_mkdir(events);
		fz_path(files[0], events, "events-000001.log");
		fz_path(files[1], events, "events-000002.log");
		copy = malloc(1 << 20);
	}
	if (size < 1 || size - 1 > (1u << 20))
		return 0;
	unsigned flags = data[0];
	size_t n = size - 1;
	memcpy(copy, data + 1, n);
	size_t split = n;
	if (n > FILE_HDR) {
		const uint8_t *m = memmem(copy + FILE_HDR, n - FILE_HDR, "COFFEREV", 8);
		if (m)
			split = (size_t)(m - copy);
	}
	if (flags & 1) {
		fix_checksums(copy, split);
		fix_checksums(copy + split, n - split);
	}
	fz_write_file(files[0], copy, split);
	if (split < n)
		fz_write_file(files[1], copy + split, n - split);

	struct ctx x = {0, 0, flags & 2};
	(void)coffer_evlog_read(datadir, on_event, on_damage, &x);
	fz_debug("%u events, %u damaged", x.events, x.damage);
	unlink(files[0]);
	unlink(files[1]);
	coffer_error_clear();
	return 0;
}
