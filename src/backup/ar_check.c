/*
 * ar_check.c - what a set and a chain of sets must be, and what the stored
 * files must contain.
 *
 * One set (cf_set_check, on its manifest):
 *   full, copy            files: coffer.db, then log/G for G = gen_first ..
 *                         gen_last; coffer.db a whole number of pages (>= 3);
 *                         gen(redo LSN) within gen_first..gen_last; no parent.
 *   incremental,          files: log/G for G = gen_first..gen_last only;
 *   differential          a parent id.
 *   Breaking a rule is COFFER_E_ARCHIVE_CORRUPT: the set contradicts itself.
 *
 * A chain (cf_set_chain_check), in restore order:
 *   1. the first set is a full or copy set;
 *   2. every set has the first set's database signature (and page size);
 *   3. then either incrementals, each naming the set before it as parent,
 *      with gen_first = the previous set's gen_last + 1; or exactly one
 *      differential, naming the full set, gen_first = full gen_last + 1,
 *      and nothing after it.
 *   Breaking a rule is COFFER_E_CHAIN_BROKEN naming both sets and their
 *   generations.
 *
 * Contents (cf_content_check_*, fed with the data as it streams past):
 *   log/G     its 4096-byte generation header decodes (magic, checksum),
 *             names generation G, the set's signature, and a file size equal
 *             to the stored size;
 *   coffer.db header copy A (or B, when A is damaged) decodes and carries
 *             the set's signature and page size.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/ar_int.h"
#include "common/err.h"
#include "engine/header.h"
#include "engine/log_format.h"

static const uint8_t zero16[16];

static int corrupt(const char *set, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int corrupt(const char *set, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return CF_ERROR(COFFER_E_ARCHIVE_CORRUPT, CF_OBJ(.file = set), "backup set \"%s\" %s", set, msg);
}

int cf_set_check(const struct cf_set_manifest *m, const char *set)
{
	const cf_set_meta *mt = &m->meta;
	int full = mt->type == CF_SET_FULL || mt->type == CF_SET_COPY;
	if (mt->type < CF_SET_FULL || mt->type > CF_SET_COPY)
		return corrupt(set, "has an unknown type %u", mt->type);
	if (mt->gen_first == 0 || mt->gen_last < mt->gen_first)
		return corrupt(set, "gives an empty or reversed log range %u..%u", mt->gen_first,
			       mt->gen_last);
	uint64_t want = (uint64_t)mt->gen_last - mt->gen_first + 1 + (full ? 1 : 0);
	if (m->nfiles != want)
		return corrupt(set, "(%s, generations %u..%u) should hold %llu files but holds %u",
			       cf_set_type_name(mt->type), mt->gen_first, mt->gen_last,
			       (unsigned long long)want, m->nfiles);
	uint32_t i = 0;
	if (full) {
		if (strcmp(m->files[0].name, CF_AR_DB_NAME) != 0)
			return corrupt(set, "is a %s set but does not start with coffer.db",
				       cf_set_type_name(mt->type));
		if (mt->page_size == 0 || m->files[0].size % mt->page_size ||
		    m->files[0].size < 3ull * mt->page_size)
			return corrupt(set, "has a coffer.db of %llu bytes, not a whole number (>= 3) of %u-byte pages",
				       (unsigned long long)m->files[0].size, mt->page_size);
		uint32_t rg = (uint32_t)(mt->redo_lsn >> 32);
		if (rg < mt->gen_first || rg > mt->gen_last)
			return corrupt(set, "starts replay in generation %u, outside its log range %u..%u", rg,
				       mt->gen_first, mt->gen_last);
		if (memcmp(mt->parent_id, zero16, 16) != 0)
			return corrupt(set, "is a %s set but names a parent set", cf_set_type_name(mt->type));
		i = 1;
	} else if (memcmp(mt->parent_id, zero16, 16) == 0) {
		return corrupt(set, "is an %s set without a parent set id", cf_set_type_name(mt->type));
	}
	for (uint32_t g = mt->gen_first; i < m->nfiles; i++, g++) {
		uint32_t have;
		const char *nm = m->files[i].name;
		if (cf_archive_name_check(nm, strlen(nm), set, &have) != COFFER_OK || have != g)
			return corrupt(set, "holds \"%s\" where log generation %u (log/%010u.log) belongs; its "
					    "generations must be %u..%u in order",
				       nm, g, g, mt->gen_first, mt->gen_last);
	}
	return COFFER_OK;
}

static int broken(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int broken(const char *fmt, ...)
{
	char msg[700];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return CF_ERROR(COFFER_E_CHAIN_BROKEN, NULL, "%s", msg);
}

int cf_set_chain_check(const struct cf_set_manifest *const *s, const char *const *names, size_t n)
{
	if (n == 0)
		return broken("no backup set given");
	const cf_set_meta *first = &s[0]->meta;
	if (first->type != CF_SET_FULL && first->type != CF_SET_COPY)
		return broken("\"%s\" is an %s set (generations %u..%u) and cannot start a restore: give "
			      "its full set first, then the sets that follow it in order",
			      names[0], cf_set_type_name(first->type), first->gen_first, first->gen_last);
	char h1[33], h2[33];
	for (size_t i = 1; i < n; i++) {
		const cf_set_meta *m = &s[i]->meta, *prev = &s[i - 1]->meta;
		if (memcmp(m->signature, first->signature, 16) != 0) {
			ar_hex(h1, m->signature, 16);
			ar_hex(h2, first->signature, 16);
			return broken("\"%s\" belongs to another database (signature %s) than \"%s\" (%s)",
				      names[i], h1, names[0], h2);
		}
		if (m->page_size && first->page_size && m->page_size != first->page_size)
			return broken("\"%s\" has page size %u but \"%s\" has %u", names[i], m->page_size,
				      names[0], first->page_size);
		if (m->type == CF_SET_FULL || m->type == CF_SET_COPY)
			return broken("\"%s\" is a second %s set after \"%s\": a restore takes one full or copy "
				      "set, then its incrementals or one differential",
				      names[i], cf_set_type_name(m->type), names[0]);
		if (prev->type == CF_SET_DIFFERENTIAL)
			return broken("\"%s\" follows the differential set \"%s\": a differential set must be "
				      "the last set of a restore",
				      names[i], names[i - 1]);
		if (m->type == CF_SET_DIFFERENTIAL && i != 1)
			return broken("the differential set \"%s\" must follow its full set \"%s\" directly, "
				      "not the incremental \"%s\"",
				      names[i], names[0], names[i - 1]);
		if (memcmp(m->parent_id, prev->set_id, 16) != 0) {
			ar_hex(h1, m->parent_id, 16);
			ar_hex(h2, prev->set_id, 16);
			return broken("\"%s\" (%s, generations %u..%u) was not taken after \"%s\" (%s, "
				      "generations %u..%u): its parent set is %s, not %s",
				      names[i], cf_set_type_name(m->type), m->gen_first, m->gen_last,
				      names[i - 1], cf_set_type_name(prev->type), prev->gen_first,
				      prev->gen_last, h1, h2);
		}
		if (m->gen_first != prev->gen_last + 1)
			return broken("\"%s\" starts at log generation %u but \"%s\" ends at %u: %s", names[i],
				      m->gen_first, names[i - 1], prev->gen_last,
				      m->gen_first > prev->gen_last + 1 ? "generations are missing between them"
									: "they overlap");
	}
	return COFFER_OK;
}

/* ---- contents ---- */

struct cf_content_check {
	char *set;
	uint8_t sig[16];
	int have_sig;
	uint32_t page_size;
	char name[32];
	uint32_t gen;         /* 0: coffer.db */
	size_t need, have;    /* bytes to collect before checking */
	int done;
	uint8_t buf[2 * 65536];
};

int cf_content_check_new(struct cf_content_check **out, const char *set)
{
	struct cf_content_check *c = calloc(1, sizeof *c);
	if (c == NULL || (c->set = strdup(set)) == NULL) {
		free(c);
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory");
	}
	*out = c;
	return COFFER_OK;
}

void cf_content_check_free(struct cf_content_check *c)
{
	if (c) {
		free(c->set);
		free(c);
	}
}

void cf_content_check_expect(struct cf_content_check *c, const uint8_t sig[16], uint32_t page_size)
{
	memcpy(c->sig, sig, 16);
	c->have_sig = 1;
	c->page_size = page_size;
}

int cf_content_check_begin(struct cf_content_check *c, const char *name)
{
	snprintf(c->name, sizeof c->name, "%s", name);
	CF_RET(cf_archive_name_check(name, strlen(name), c->set, &c->gen));
	c->have = 0;
	c->done = 0;
	c->need = c->gen ? CF_LOG_HDR_USED : CF_PAGE_SIZE_MIN;
	return COFFER_OK;
}

static int sig_check(struct cf_content_check *c, const uint8_t *sig, const char *what)
{
	if (!c->have_sig) {
		memcpy(c->sig, sig, 16);
		c->have_sig = 1;
		return COFFER_OK;
	}
	if (memcmp(sig, c->sig, 16) == 0)
		return COFFER_OK;
	char h1[33], h2[33];
	ar_hex(h1, sig, 16);
	ar_hex(h2, c->sig, 16);
	return CF_ERROR(COFFER_E_SIGNATURE_MISMATCH, CF_OBJ(.file = c->set),
			"backup set \"%s\": %s belongs to database %s, but the set is of database %s",
			c->set, what, h1, h2);
}

/* Enough bytes collected (or the file ended): check them. */
static int check_now(struct cf_content_check *c, uint64_t size, int at_end)
{
	char what[96];
	if (c->gen) {
		snprintf(what, sizeof what, "log generation %u (\"%s\")", c->gen, c->name);
		struct cf_log_file_header h;
		if (c->have < CF_LOG_HDR_USED)
			return CF_ERROR(COFFER_E_LOG_CORRUPT, CF_OBJ(.file = c->set, CF_GEN(c->gen)),
					"backup set \"%s\": %s is only %zu bytes long", c->set, what, c->have);
		int rc = cf_log_header_decode(c->buf, c->name, &h);
		if (rc) {
			cf_error_prefix("backup set \"%s\"", c->set);
			return rc;
		}
		if (h.generation != c->gen)
			return CF_ERROR(COFFER_E_LOG_MISMATCH, CF_OBJ(.file = c->set, CF_GEN(c->gen)),
					"backup set \"%s\": \"%s\" holds log generation %u", c->set, c->name,
					h.generation);
		if (at_end && h.file_size != size)
			return CF_ERROR(COFFER_E_LOG_CORRUPT, CF_OBJ(.file = c->set, CF_GEN(c->gen)),
					"backup set \"%s\": %s is %llu bytes long but its header says %u",
					c->set, what, (unsigned long long)size, h.file_size);
		return sig_check(c, h.sig, what);
	}
	/* coffer.db: copy A tells the page size; B is tried when A is damaged. */
	uint32_t ps = c->page_size ? c->page_size : cf_get32(c->buf + 36);
	if (ps < CF_PAGE_SIZE_MIN || ps > CF_PAGE_SIZE_MAX || (ps & (ps - 1)))
		ps = c->page_size ? c->page_size : CF_PAGE_SIZE_DEFAULT;
	if (!at_end && c->need < 2 * (size_t)ps) {
		c->need = 2 * (size_t)ps; /* collect both copies first */
		return COFFER_OK;
	}
	struct cf_header h;
	int rc = c->have >= ps ? cf_header_decode(c->buf, ps, CF_PGNO_HEADER_A, c->name, &h)
			       : COFFER_E_HEADER_CORRUPT;
	if (rc && c->have >= 2 * (size_t)ps) {
		coffer_error saved = *coffer_error_last();
		rc = cf_header_decode(c->buf + ps, ps, CF_PGNO_HEADER_B, c->name, &h);
		if (rc)
			*(coffer_error *)coffer_error_last() = saved;
	}
	if (rc) {
		if (c->have < ps)
			CF_ERROR(COFFER_E_HEADER_CORRUPT, CF_OBJ(.file = c->set),
				 "coffer.db is only %zu bytes long", c->have);
		cf_error_prefix("backup set \"%s\": the database header is damaged", c->set);
		return coffer_error_last()->code ? coffer_error_last()->code : COFFER_E_HEADER_CORRUPT;
	}
	if (c->page_size && h.page_size != c->page_size)
		return CF_ERROR(COFFER_E_ARCHIVE_CORRUPT, CF_OBJ(.file = c->set),
				"backup set \"%s\": coffer.db has page size %u but the manifest says %u",
				c->set, h.page_size, c->page_size);
	c->page_size = h.page_size;
	return sig_check(c, h.signature, "coffer.db");
}

int cf_content_check_feed(struct cf_content_check *c, const void *data, size_t n)
{
	const uint8_t *p = data;
	while (!c->done && n > 0) {
		size_t take = c->need - c->have;
		if (take > n)
			take = n;
		memcpy(c->buf + c->have, p, take);
		c->have += take;
		p += take;
		n -= take;
		if (c->have == c->need) {
			size_t before = c->need;
			CF_RET(check_now(c, 0, 0));
			if (c->need == before)
				c->done = 1;
		}
	}
	return COFFER_OK;
}

int cf_content_check_end(struct cf_content_check *c, uint64_t size)
{
	if (!c->done || c->gen) {
		c->done = 1;
		return check_now(c, size, 1);
	}
	return COFFER_OK;
}

int cf_content_check_finish(struct cf_content_check *c, const struct cf_set_manifest *m)
{
	if (c->have_sig)
		CF_RET(sig_check(c, m->meta.signature, "its manifest"));
	return COFFER_OK;
}
