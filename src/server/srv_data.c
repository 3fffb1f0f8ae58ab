/*
 * srv_data.c - Redis data types on the engine, and the data commands.
 *
 * Data model (two engine trees, plus "meta" for the server's own use):
 *
 *   tree "kv"    KEY -> TYPE || PAYLOAD
 *                TYPE 's': a string, PAYLOAD its bytes;
 *                TYPE 'h': a hash, PAYLOAD the field count (u64, little-endian)
 *   tree "hash"  varint(len(KEY)) || KEY || FIELD -> field value
 *                (varint: LEB128; the length prefix keeps the fields of one
 *                key together, in field order, and apart from every other
 *                key's, so a hash is one contiguous range of the tree)
 *   tree "meta"  "sync" -> counter (see srv_pool.c)
 *
 * Invariants: a key is a hash exactly when "kv" says 'h' and then it has at
 * least one field in "hash" (removing the last field removes the key); a
 * string key has no entries in "hash". Keys are 1..1024 bytes (the engine's
 * key limit); for a hash, varint + key + field together at most 1024.
 * Strings are at most the bulk limit (max_bulk, default 512 MiB).
 *
 * Values are never copied to be stored: the type byte goes into the byte
 * of headroom in front of every argument (struct sarg), and a GET's reply
 * points into the allocation the engine returned.
 *
 * KEYS and SCAN walk "kv" in key order. A SCAN cursor is a decimal number
 * naming a slot of a server-wide ring (SRV_SCAN_SLOTS) that holds the last
 * key the call examined; the next call resumes at the first key after it.
 * So every key that exists for the whole scan is returned exactly once,
 * whatever is written meanwhile, and a key is never returned twice. A
 * cursor stays valid until 4096 newer cursors have been handed out; an
 * expired or unknown one is an error ("start again from 0"). HSCAN works
 * the same way within one hash.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/err.h"
#include "server/srv_cmds.h"

#define T_KV "kv"
#define T_HASH "hash"
#define TY_NONE 0
#define TY_STRING 's'
#define TY_HASH 'h'
#define HKEY_MAX COFFER_MAX_KEY

static void wrongtype(struct reply *r)
{
	r_error(r, "WRONGTYPE", COFFER_E_WRONG_TYPE, "Operation against a key holding the wrong kind of value");
}

static void syntax_error(struct reply *r)
{
	r_error(r, NULL, COFFER_E_INVALID_ARGUMENT, "syntax error");
}

static void not_integer(struct reply *r)
{
	r_error(r, NULL, COFFER_E_NOT_INTEGER, "value is not an integer or out of range");
}

static int check_key(struct reply *r, const struct sarg *k)
{
	if (k->len == 0) {
		r_error(r, NULL, COFFER_E_INVALID_ARGUMENT, "empty keys are not supported by Coffer");
		return 0;
	}
	if (k->len > COFFER_MAX_KEY) {
		r_error(r, NULL, COFFER_E_KEY_TOO_LARGE, "key of %zu bytes is longer than the limit of %u bytes",
			k->len, COFFER_MAX_KEY);
		return 0;
	}
	return 1;
}

static int is_missing(int rc)
{
	return rc == COFFER_E_NOT_FOUND || rc == COFFER_E_TREE_NOT_FOUND;
}

/* ---- engine helpers ---- */

/* Value of KEY in "kv": COFFER_OK with *val (malloc'd: the caller owns it),
 * COFFER_E_NOT_FOUND, or an engine error. */
static int kv_get(struct exec *e, const struct sarg *k, char **val, size_t *vlen)
{
	coffer_txn *t;
	CF_RET(exec_txn(e, &t));
	e->observed = 1;
	void *v = NULL;
	int rc = coffer_get(t, T_KV, k->p, k->len, &v, vlen);
	if (is_missing(rc))
		return COFFER_E_NOT_FOUND;
	if (rc)
		return rc;
	if (v == NULL || *vlen == 0) {
		free(v);
		return CF_ERROR(COFFER_E_INTERNAL, NULL, "the entry of key '%.*s' in tree kv is empty",
				(int)(k->len > 64 ? 64 : k->len), k->p);
	}
	*val = v;
	return COFFER_OK;
}

/* Store a string: VAL has a byte of headroom (struct sarg). */
static int kv_put_string(struct exec *e, const struct sarg *k, struct sarg *val)
{
	val->p[-1] = TY_STRING;
	int rc = coffer_put(e->txn, T_KV, k->p, k->len, val->p - 1, val->len + 1, 0);
	if (rc == COFFER_OK)
		e->changed = 1;
	return rc;
}

static int kv_put_raw(struct exec *e, const struct sarg *k, const void *v, size_t n)
{
	int rc = coffer_put(e->txn, T_KV, k->p, k->len, v, n, 0);
	if (rc == COFFER_OK)
		e->changed = 1;
	return rc;
}

static size_t hprefix(char *out, const struct sarg *k)
{
	size_t n = 0, len = k->len;
	do {
		uint8_t b = len & 0x7f;
		len >>= 7;
		out[n++] = (char)(len ? b | 0x80 : b);
	} while (len);
	memcpy(out + n, k->p, k->len);
	return n + k->len;
}

/* The tree key of FIELD of hash KEY into OUT (HKEY_MAX bytes); 0 if too long. */
static size_t hkey(char *out, const struct sarg *k, const struct sarg *f)
{
	char pre[16 + COFFER_MAX_KEY];
	size_t n = hprefix(pre, k);
	if (n + f->len > HKEY_MAX)
		return 0;
	memcpy(out, pre, n);
	memcpy(out + n, f->p, f->len);
	return n + f->len;
}

static int check_fields(struct reply *r, const struct sarg *k, const struct sarg *f, int nf, int step)
{
	char tmp[HKEY_MAX];
	for (int i = 0; i < nf; i += step)
		if (hkey(tmp, k, &f[i]) == 0) {
			r_error(r, NULL, COFFER_E_KEY_TOO_LARGE,
				"key and field (%zu and %zu bytes) are too long together: at most %u bytes", k->len,
				f[i].len, HKEY_MAX - 2);
			return 0;
		}
	return 1;
}

/* Iterate over the fields of one hash. */
struct hiter {
	coffer_cursor *cur;
	char pre[16 + COFFER_MAX_KEY];
	size_t plen;
	int valid;
};

static void hiter_close(struct hiter *it)
{
	coffer_cursor_close(it->cur);
	it->cur = NULL;
}

/* Position at the first field after (or at, if !AFTER) FROM (a whole tree
 * key), or the first field when FROM is NULL. */
static int hiter_open(struct exec *e, struct hiter *it, const struct sarg *k, const char *from, size_t flen,
		      int after)
{
	coffer_txn *t;
	it->cur = NULL;
	it->valid = 0;
	it->plen = hprefix(it->pre, k);
	CF_RET(exec_txn(e, &t));
	e->observed = 1;
	int rc = coffer_cursor_open(t, T_HASH, &it->cur);
	if (is_missing(rc))
		return COFFER_OK;
	CF_RET(rc);
	rc = from ? coffer_cursor_seek(it->cur, from, flen) : coffer_cursor_seek(it->cur, it->pre, it->plen);
	if (is_missing(rc))
		return COFFER_OK;
	CF_RET(rc);
	it->valid = 1;
	if (from && after) {
		const void *key;
		size_t klen;
		CF_RET(coffer_cursor_get(it->cur, &key, &klen, NULL, NULL));
		if (klen == flen && memcmp(key, from, flen) == 0) {
			rc = coffer_cursor_next(it->cur);
			if (is_missing(rc))
				it->valid = 0;
			else
				CF_RET(rc);
		}
	}
	return COFFER_OK;
}

/* The current field: COFFER_OK, or COFFER_E_NOT_FOUND past the hash. */
static int hiter_get(struct hiter *it, const char **key, size_t *klen, const char **field, size_t *flen,
		     const void **val, size_t *vlen)
{
	if (!it->valid)
		return COFFER_E_NOT_FOUND;
	const void *kp;
	size_t kl;
	CF_RET(coffer_cursor_get(it->cur, &kp, &kl, NULL, NULL));
	if (kl < it->plen || memcmp(kp, it->pre, it->plen) != 0) {
		it->valid = 0;
		return COFFER_E_NOT_FOUND;
	}
	if (val)
		CF_RET(coffer_cursor_get(it->cur, &kp, &kl, val, vlen));
	if (key) {
		*key = kp;
		*klen = kl;
	}
	*field = (const char *)kp + it->plen;
	*flen = kl - it->plen;
	return COFFER_OK;
}

static int hiter_next(struct hiter *it)
{
	int rc = coffer_cursor_next(it->cur);
	if (is_missing(rc)) {
		it->valid = 0;
		return COFFER_OK;
	}
	return rc;
}

/* Whether hash KEY has any field (i.e. KEY is a hash). */
static int hash_exists(struct exec *e, const struct sarg *k, int *yes)
{
	struct hiter it;
	*yes = 0;
	int rc = hiter_open(e, &it, k, NULL, 0, 0);
	if (rc == COFFER_OK) {
		const char *f;
		size_t fl;
		rc = hiter_get(&it, NULL, NULL, &f, &fl, NULL, NULL);
		if (rc == COFFER_OK)
			*yes = 1;
		else if (rc == COFFER_E_NOT_FOUND)
			rc = COFFER_OK;
	}
	hiter_close(&it);
	return rc;
}

/* Delete every field of hash KEY. */
static int hash_clear(struct exec *e, const struct sarg *k)
{
	struct hiter it;
	CF_RET(hiter_open(e, &it, k, NULL, 0, 0));
	int rc = COFFER_OK;
	char tk[HKEY_MAX];
	for (;;) {
		const char *key, *f;
		size_t klen, fl;
		rc = hiter_get(&it, &key, &klen, &f, &fl, NULL, NULL);
		if (rc == COFFER_E_NOT_FOUND) {
			rc = COFFER_OK;
			break;
		}
		if (rc)
			break;
		memcpy(tk, key, klen);
		rc = coffer_del(e->txn, T_HASH, tk, klen);
		if (rc)
			break;
		e->changed = 1;
		rc = coffer_cursor_seek(it.cur, it.pre, it.plen);
		if (is_missing(rc)) {
			rc = COFFER_OK;
			break;
		}
		if (rc)
			break;
	}
	hiter_close(&it);
	return rc;
}

/* Whether KEY exists in "kv", without reading its value. */
static int kv_exists(struct exec *e, const struct sarg *k, int *yes)
{
	coffer_txn *t;
	coffer_cursor *cur = NULL;
	*yes = 0;
	CF_RET(exec_txn(e, &t));
	e->observed = 1;
	int rc = coffer_cursor_open(t, T_KV, &cur);
	if (is_missing(rc))
		return COFFER_OK;
	CF_RET(rc);
	rc = coffer_cursor_seek(cur, k->p, k->len);
	if (rc == COFFER_OK) {
		const void *key;
		size_t klen;
		rc = coffer_cursor_get(cur, &key, &klen, NULL, NULL);
		if (rc == COFFER_OK && klen == k->len && memcmp(key, k->p, klen) == 0)
			*yes = 1;
	}
	if (is_missing(rc))
		rc = COFFER_OK;
	coffer_cursor_close(cur);
	return rc;
}

/* The type of KEY without reading a string's value. */
static int key_type(struct exec *e, const struct sarg *k, int *type)
{
	int yes;
	CF_RET(kv_exists(e, k, &yes));
	if (!yes) {
		*type = TY_NONE;
		return COFFER_OK;
	}
	CF_RET(hash_exists(e, k, &yes));
	*type = yes ? TY_HASH : TY_STRING;
	return COFFER_OK;
}

/* Field count of hash KEY (0 if it does not exist); WRONGTYPE as 1. */
static int hash_count(struct exec *e, const struct sarg *k, uint64_t *n, int *wrong)
{
	char *v = NULL;
	size_t vlen = 0;
	*n = 0;
	*wrong = 0;
	int rc = kv_get(e, k, &v, &vlen);
	if (rc == COFFER_E_NOT_FOUND)
		return COFFER_OK;
	if (rc || v == NULL) /* v is set when rc is 0; the test tells the compiler */
		return rc;
	if (v[0] != TY_HASH) {
		*wrong = 1;
	} else if (vlen != 9) {
		free(v);
		return CF_ERROR(COFFER_E_INTERNAL, NULL, "the hash entry of '%.*s' in tree kv has %zu bytes, not 9",
				(int)(k->len > 64 ? 64 : k->len), k->p, vlen);
	} else {
		memcpy(n, v + 1, 8);
	}
	free(v);
	return COFFER_OK;
}

static int hash_set_count(struct exec *e, const struct sarg *k, uint64_t n)
{
	if (n == 0) {
		int rc = coffer_del(e->txn, T_KV, k->p, k->len);
		if (rc == COFFER_OK)
			e->changed = 1;
		return is_missing(rc) ? COFFER_OK : rc;
	}
	char v[9];
	v[0] = TY_HASH;
	memcpy(v + 1, &n, 8);
	return kv_put_raw(e, k, v, sizeof v);
}

/* Delete KEY of any type; *deleted 1 if it existed. */
static int key_delete(struct exec *e, const struct sarg *k, int *deleted)
{
	*deleted = 0;
	e->observed = 1;
	int rc = coffer_del(e->txn, T_KV, k->p, k->len);
	if (is_missing(rc))
		return COFFER_OK;
	CF_RET(rc);
	e->changed = 1;
	*deleted = 1;
	return hash_clear(e, k);
}

/* ---- strings ---- */

CMD_FN(cmd_get)
{
	(void)c;
	if (!check_key(r, &cmd->argv[1]))
		return;
	char *v = NULL;
	size_t vlen = 0;
	int rc = kv_get(e, &cmd->argv[1], &v, &vlen);
	if (rc == COFFER_E_NOT_FOUND) {
		atomic_fetch_add(&e->s->st.misses, 1);
		r_null(r);
		return;
	}
	if (rc) {
		exec_engine_error(e, r, rc);
		return;
	}
	if (v[0] != TY_STRING) {
		free(v);
		wrongtype(r);
		return;
	}
	atomic_fetch_add(&e->s->st.hits, 1);
	r_bulk_ref(r, v + 1, vlen - 1, v);
}

CMD_FN(cmd_set)
{
	(void)c;
	struct sarg *k = &cmd->argv[1], *val = &cmd->argv[2];
	int nx = 0, xx = 0, get = 0;
	for (int i = 3; i < cmd->argc; i++) {
		const struct sarg *a = &cmd->argv[i];
		if (a->len == 2 && strncasecmp(a->p, "nx", 2) == 0 && !xx)
			nx = 1;
		else if (a->len == 2 && strncasecmp(a->p, "xx", 2) == 0 && !nx)
			xx = 1;
		else if (a->len == 3 && strncasecmp(a->p, "get", 3) == 0)
			get = 1;
		else if (a->len == 7 && strncasecmp(a->p, "keepttl", 7) == 0)
			; /* no key has a time to live */
		else if ((a->len == 2 && (strncasecmp(a->p, "ex", 2) == 0 || strncasecmp(a->p, "px", 2) == 0)) ||
			 (a->len == 4 && (strncasecmp(a->p, "exat", 4) == 0 || strncasecmp(a->p, "pxat", 4) == 0))) {
			r_error(r, NULL, COFFER_E_NOT_SUPPORTED, "keys with a time to live (SET %.*s) are not supported",
				(int)a->len, a->p);
			return;
		} else {
			syntax_error(r);
			return;
		}
	}
	if (!check_key(r, k))
		return;
	int rc, exists = 0, type = TY_NONE;
	char *old = NULL;
	size_t olen = 0;
	if (get) {
		rc = kv_get(e, k, &old, &olen);
		if (rc == COFFER_OK) {
			exists = 1;
			type = old[0];
			if (type != TY_STRING) {
				free(old);
				wrongtype(r);
				return;
			}
		} else if (rc != COFFER_E_NOT_FOUND) {
			exec_engine_error(e, r, rc);
			return;
		}
	} else if (nx || xx) {
		rc = kv_exists(e, k, &exists);
		if (rc) {
			exec_engine_error(e, r, rc);
			return;
		}
	}
	if ((nx && exists) || (xx && !exists)) {
		if (get && old)
			r_bulk_ref(r, old + 1, olen - 1, old);
		else
			r_null(r);
		return;
	}
	rc = kv_put_string(e, k, val);
	if (rc == COFFER_OK && type != TY_STRING)
		rc = hash_clear(e, k); /* it may have been a hash */
	if (rc) {
		free(old);
		exec_engine_error(e, r, rc);
		return;
	}
	if (!get)
		r_ok(r);
	else if (old)
		r_bulk_ref(r, old + 1, olen - 1, old);
	else
		r_null(r);
}

CMD_FN(cmd_mget)
{
	(void)c;
	r_array(r, (size_t)cmd->argc - 1);
	for (int i = 1; i < cmd->argc; i++) {
		char *v = NULL;
		size_t vlen = 0;
		if (cmd->argv[i].len == 0 || cmd->argv[i].len > COFFER_MAX_KEY) {
			r_null(r);
			continue;
		}
		int rc = kv_get(e, &cmd->argv[i], &v, &vlen);
		if (rc == COFFER_OK && v && v[0] == TY_STRING) {
			atomic_fetch_add(&e->s->st.hits, 1);
			r_bulk_ref(r, v + 1, vlen - 1, v);
			continue;
		}
		if (rc == COFFER_OK)
			free(v);
		else if (rc != COFFER_E_NOT_FOUND && e->write && e->hard_rc == COFFER_OK) {
			/* Keep the array well formed; the failure still fails the batch. */
			struct reply tmp = {.proto = r->proto};
			rb_init(&tmp.rb);
			exec_engine_error(e, &tmp, rc);
			rb_free(&tmp.rb);
		}
		atomic_fetch_add(&e->s->st.misses, 1);
		r_null(r);
	}
}

CMD_FN(cmd_mset)
{
	(void)c;
	if ((cmd->argc - 1) % 2 != 0) {
		r_error(r, NULL, COFFER_E_INVALID_ARGUMENT, "wrong number of arguments for 'mset' command");
		return;
	}
	for (int i = 1; i < cmd->argc; i += 2)
		if (!check_key(r, &cmd->argv[i]))
			return;
	for (int i = 1; i < cmd->argc; i += 2) {
		int rc = kv_put_string(e, &cmd->argv[i], &cmd->argv[i + 1]);
		if (rc == COFFER_OK)
			rc = hash_clear(e, &cmd->argv[i]);
		if (rc) {
			exec_engine_error(e, r, rc);
			return;
		}
	}
	r_ok(r);
}

/* DEL and EXISTS: OP on each key of a valid length (others count as
 * absent), the number of keys it said yes to. */
static void count_keys(struct exec *e, struct cmd *cmd, struct reply *r,
		       int (*op)(struct exec *, const struct sarg *, int *))
{
	long long n = 0;
	for (int i = 1; i < cmd->argc; i++) {
		if (cmd->argv[i].len == 0 || cmd->argv[i].len > COFFER_MAX_KEY)
			continue;
		int yes;
		int rc = op(e, &cmd->argv[i], &yes);
		if (rc) {
			exec_engine_error(e, r, rc);
			return;
		}
		n += yes;
	}
	r_int(r, n);
}

CMD_FN(cmd_del)
{
	(void)c;
	count_keys(e, cmd, r, key_delete);
}

CMD_FN(cmd_exists)
{
	(void)c;
	count_keys(e, cmd, r, kv_exists);
}

static void incr_by(struct exec *e, struct cmd *cmd, struct reply *r, long long by)
{
	struct sarg *k = &cmd->argv[1];
	if (!check_key(r, k))
		return;
	char *v = NULL;
	size_t vlen = 0;
	long long cur = 0;
	int rc = kv_get(e, k, &v, &vlen);
	if (rc == COFFER_OK) {
		int bad = v[0] != TY_STRING ? 2 : srv_strict_ll(v + 1, vlen - 1, &cur) ? 1 : 0;
		free(v);
		if (bad == 2) {
			wrongtype(r);
			return;
		}
		if (bad) {
			not_integer(r);
			return;
		}
	} else if (rc != COFFER_E_NOT_FOUND) {
		exec_engine_error(e, r, rc);
		return;
	}
	if ((by > 0 && cur > LLONG_MAX - by) || (by < 0 && cur < LLONG_MIN - by)) {
		r_error(r, NULL, COFFER_E_NOT_INTEGER, "increment or decrement would overflow");
		return;
	}
	cur += by;
	char buf[32];
	int n = snprintf(buf, sizeof buf, "%c%lld", TY_STRING, cur);
	rc = kv_put_raw(e, k, buf, (size_t)n);
	if (rc) {
		exec_engine_error(e, r, rc);
		return;
	}
	r_int(r, cur);
}

static int arg_ll(struct reply *r, const struct sarg *a, long long *v)
{
	if (srv_strict_ll(a->p, a->len, v)) {
		not_integer(r);
		return 0;
	}
	return 1;
}

CMD_FN(cmd_incr)
{
	(void)c;
	incr_by(e, cmd, r, 1);
}

CMD_FN(cmd_decr)
{
	(void)c;
	incr_by(e, cmd, r, -1);
}

CMD_FN(cmd_incrby)
{
	(void)c;
	long long by;
	if (arg_ll(r, &cmd->argv[2], &by))
		incr_by(e, cmd, r, by);
}

CMD_FN(cmd_decrby)
{
	(void)c;
	long long by;
	if (!arg_ll(r, &cmd->argv[2], &by))
		return;
	if (by == LLONG_MIN) {
		r_error(r, NULL, COFFER_E_NOT_INTEGER, "decrement would overflow");
		return;
	}
	incr_by(e, cmd, r, -by);
}

CMD_FN(cmd_append)
{
	(void)c;
	struct sarg *k = &cmd->argv[1], *a = &cmd->argv[2];
	if (!check_key(r, k))
		return;
	char *v = NULL;
	size_t vlen = 0;
	int rc = kv_get(e, k, &v, &vlen);
	if (rc == COFFER_E_NOT_FOUND) {
		rc = kv_put_string(e, k, a);
		if (rc)
			exec_engine_error(e, r, rc);
		else
			r_int(r, (long long)a->len);
		return;
	}
	if (rc) {
		exec_engine_error(e, r, rc);
		return;
	}
	if (v[0] != TY_STRING) {
		free(v);
		wrongtype(r);
		return;
	}
	size_t nlen = vlen - 1 + a->len;
	if (nlen > e->s->cfg->lim.max_bulk) {
		free(v);
		r_error(r, NULL, COFFER_E_LIMIT, "string exceeds maximum allowed size (%zu bytes)",
			e->s->cfg->lim.max_bulk);
		return;
	}
	char *nv = realloc(v, nlen + 1);
	if (nv == NULL) {
		free(v);
		r_error(r, NULL, COFFER_E_NOMEM, "out of memory");
		return;
	}
	memcpy(nv + vlen, a->p, a->len);
	rc = kv_put_raw(e, k, nv, nlen + 1);
	free(nv);
	if (rc)
		exec_engine_error(e, r, rc);
	else
		r_int(r, (long long)nlen);
}

CMD_FN(cmd_strlen)
{
	(void)c;
	if (!check_key(r, &cmd->argv[1]))
		return;
	char *v = NULL;
	size_t vlen = 0;
	int rc = kv_get(e, &cmd->argv[1], &v, &vlen);
	if (rc == COFFER_E_NOT_FOUND) {
		r_int(r, 0);
		return;
	}
	if (rc) {
		exec_engine_error(e, r, rc);
		return;
	}
	if (v[0] != TY_STRING)
		wrongtype(r);
	else
		r_int(r, (long long)(vlen - 1));
	free(v);
}

CMD_FN(cmd_getrange)
{
	(void)c;
	long long start, end;
	if (!arg_ll(r, &cmd->argv[2], &start) || !arg_ll(r, &cmd->argv[3], &end))
		return;
	if (!check_key(r, &cmd->argv[1]))
		return;
	char *v = NULL;
	size_t vlen = 0;
	int rc = kv_get(e, &cmd->argv[1], &v, &vlen);
	if (rc == COFFER_E_NOT_FOUND) {
		r_bulk(r, "", 0);
		return;
	}
	if (rc) {
		exec_engine_error(e, r, rc);
		return;
	}
	if (v[0] != TY_STRING) {
		free(v);
		wrongtype(r);
		return;
	}
	long long len = (long long)vlen - 1;
	if (start < 0 && end < 0 && start > end) {
		free(v);
		r_bulk(r, "", 0);
		return;
	}
	if (start < 0)
		start = len + start;
	if (end < 0)
		end = len + end;
	if (start < 0)
		start = 0;
	if (end < 0)
		end = 0;
	if (end >= len)
		end = len - 1;
	if (len == 0 || start > end) {
		free(v);
		r_bulk(r, "", 0);
		return;
	}
	r_bulk_ref(r, v + 1 + start, (size_t)(end - start + 1), v);
}

CMD_FN(cmd_type)
{
	(void)c;
	if (!check_key(r, &cmd->argv[1]))
		return;
	int type;
	int rc = key_type(e, &cmd->argv[1], &type);
	if (rc) {
		exec_engine_error(e, r, rc);
		return;
	}
	r_simple(r, type == TY_STRING ? "string" : type == TY_HASH ? "hash" : "none");
}

/* ---- keys, scan, dbsize, flush ---- */

int glob_match(const char *pat, size_t plen, const char *s, size_t slen);

/* Match one character against the token at PAT; *adv is the token length. */
static int glob_one(const char *pat, size_t plen, char ch, size_t *adv)
{
	if (pat[0] == '?') {
		*adv = 1;
		return 1;
	}
	if (pat[0] == '\\' && plen >= 2) {
		*adv = 2;
		return pat[1] == ch;
	}
	if (pat[0] != '[') {
		*adv = 1;
		return pat[0] == ch;
	}
	size_t i = 1;
	int neg = 0, match = 0;
	if (i < plen && pat[i] == '^') {
		neg = 1;
		i++;
	}
	for (;;) {
		if (i >= plen) { /* unterminated class: ends with the pattern */
			*adv = plen;
			break;
		}
		if (pat[i] == '\\' && i + 1 < plen) {
			if (pat[i + 1] == ch)
				match = 1;
			i += 2;
		} else if (pat[i] == ']') {
			*adv = i + 1;
			break;
		} else if (i + 2 < plen && pat[i + 1] == '-' && pat[i + 2] != ']') {
			unsigned char a = (unsigned char)pat[i], b = (unsigned char)pat[i + 2], x = (unsigned char)ch;
			if (a > b) {
				unsigned char t = a;
				a = b;
				b = t;
			}
			if (x >= a && x <= b)
				match = 1;
			i += 3;
		} else {
			if (pat[i] == ch)
				match = 1;
			i++;
		}
	}
	return neg ? !match : match;
}

/* Redis's glob: * ? [abc] [^a-z] and \x; iterative, so never exponential. */
int glob_match(const char *pat, size_t plen, const char *s, size_t slen)
{
	size_t p = 0, i = 0, star_p = SIZE_MAX, star_i = 0;
	while (i < slen) {
		if (p < plen && pat[p] == '*') {
			while (p < plen && pat[p] == '*')
				p++;
			if (p == plen)
				return 1;
			star_p = p;
			star_i = i;
			continue;
		}
		size_t adv;
		if (p < plen && glob_one(pat + p, plen - p, s[i], &adv)) {
			p += adv;
			i++;
			continue;
		}
		if (star_p == SIZE_MAX)
			return 0;
		p = star_p;
		i = ++star_i;
	}
	while (p < plen && pat[p] == '*')
		p++;
	return p == plen;
}

/* The literal beginning of a pattern (every match starts with it). */
static size_t glob_prefix(const char *pat, size_t plen, char *out, size_t cap)
{
	size_t n = 0;
	for (size_t i = 0; i < plen && n < cap; i++) {
		char ch = pat[i];
		if (ch == '*' || ch == '?' || ch == '[')
			break;
		if (ch == '\\') {
			if (i + 1 >= plen)
				break;
			ch = pat[++i];
		}
		out[n++] = ch;
	}
	return n;
}

/* The end of a reply built apart in TMP (KEYS, HGETALL): an engine error
 * RC, or a reply over the output buffer limit, is answered instead and TMP
 * freed; 1: TMP may follow. SCAN_CMD: what the client should use instead. */
static int tmp_reply_fits(struct exec *e, struct reply *r, struct reply *tmp, int rc, const char *scan_cmd)
{
	if (rc == COFFER_OK && tmp->rb.bytes <= e->s->cfg->lim.max_output)
		return 1;
	rb_free(&tmp->rb);
	if (rc) {
		exec_engine_error(e, r, rc);
		return 0;
	}
	r_error(r, NULL, COFFER_E_LIMIT,
		"the reply exceeds the output buffer limit of %zu bytes; use %s; closing the connection",
		e->s->cfg->lim.max_output, scan_cmd);
	e->close = 1;
	return 0;
}

CMD_FN(cmd_keys)
{
	(void)c;
	const struct sarg *pat = &cmd->argv[1];
	coffer_txn *t;
	coffer_cursor *cur = NULL;
	int rc = exec_txn(e, &t);
	e->observed = 1;
	if (rc == COFFER_OK)
		rc = coffer_cursor_open(t, T_KV, &cur);
	if (is_missing(rc)) {
		r_array(r, 0);
		return;
	}
	if (rc) {
		exec_engine_error(e, r, rc);
		return;
	}
	char pre[COFFER_MAX_KEY];
	size_t plen = glob_prefix(pat->p, pat->len, pre, sizeof pre);
	int literal = plen == pat->len;
	struct reply tmp = {.proto = r->proto};
	rb_init(&tmp.rb);
	size_t n = 0;
	rc = plen ? coffer_cursor_seek(cur, pre, plen) : coffer_cursor_first(cur);
	while (rc == COFFER_OK) {
		const void *kp;
		size_t kl;
		rc = coffer_cursor_get(cur, &kp, &kl, NULL, NULL);
		if (rc)
			break;
		if (kl < plen || memcmp(kp, pre, plen) != 0)
			break;
		if (literal ? kl == plen : glob_match(pat->p, pat->len, kp, kl)) {
			r_bulk(&tmp, kp, kl);
			n++;
			if (tmp.rb.bytes > e->s->cfg->lim.max_output)
				break;
		}
		if (literal)
			break;
		rc = coffer_cursor_next(cur);
	}
	coffer_cursor_close(cur);
	if (!tmp_reply_fits(e, r, &tmp, rc && !is_missing(rc) ? rc : COFFER_OK, "SCAN"))
		return;
	r_array(r, n);
	rb_splice(&r->rb, &tmp.rb);
}

int scan_ring_put(struct srv *s, uint8_t kind, const void *key, size_t len, uint64_t *id)
{
	char *copy = malloc(len ? len : 1);
	if (copy == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for a scan cursor");
	memcpy(copy, key, len);
	pthread_mutex_lock(&s->scan_mu);
	uint64_t n = ++s->scan_next;
	struct scan_slot *sl = &s->scan[n % SRV_SCAN_SLOTS];
	free(sl->key);
	sl->id = n;
	sl->kind = kind;
	sl->key = copy;
	sl->len = len;
	pthread_mutex_unlock(&s->scan_mu);
	*id = n;
	return COFFER_OK;
}

int scan_ring_get(struct srv *s, uint8_t kind, uint64_t id, char **key, size_t *len)
{
	int rc = COFFER_E_NOT_FOUND;
	pthread_mutex_lock(&s->scan_mu);
	struct scan_slot *sl = &s->scan[id % SRV_SCAN_SLOTS];
	if (sl->id == id && sl->kind == kind && sl->key) {
		*key = malloc(sl->len ? sl->len : 1);
		if (*key) {
			memcpy(*key, sl->key, sl->len);
			*len = sl->len;
			rc = COFFER_OK;
		} else {
			rc = COFFER_E_NOMEM;
		}
	}
	pthread_mutex_unlock(&s->scan_mu);
	return rc;
}

static int parse_cursor(const struct sarg *a, uint64_t *v)
{
	if (a->len == 0 || a->len > 20)
		return -1;
	uint64_t n = 0;
	for (size_t i = 0; i < a->len; i++) {
		if (a->p[i] < '0' || a->p[i] > '9')
			return -1;
		unsigned d = (unsigned)(a->p[i] - '0');
		if (n > (UINT64_MAX - d) / 10)
			return -1;
		n = n * 10 + d;
	}
	*v = n;
	return 0;
}

struct scan_opts {
	const struct sarg *match;
	long long count;
	int type;      /* TY_*, or -1: any */
	int novalues;
};

static int scan_options(struct reply *r, struct cmd *cmd, int first, struct scan_opts *o, int hscan)
{
	o->match = NULL;
	o->count = 10;
	o->type = -1;
	o->novalues = 0;
	for (int i = first; i < cmd->argc; i++) {
		const struct sarg *a = &cmd->argv[i];
		if (a->len == 5 && strncasecmp(a->p, "match", 5) == 0 && i + 1 < cmd->argc) {
			o->match = &cmd->argv[++i];
		} else if (a->len == 5 && strncasecmp(a->p, "count", 5) == 0 && i + 1 < cmd->argc) {
			if (!arg_ll(r, &cmd->argv[++i], &o->count))
				return 0;
			if (o->count < 1) {
				syntax_error(r);
				return 0;
			}
		} else if (!hscan && a->len == 4 && strncasecmp(a->p, "type", 4) == 0 && i + 1 < cmd->argc) {
			const struct sarg *t = &cmd->argv[++i];
			if (t->len == 6 && strncasecmp(t->p, "string", 6) == 0)
				o->type = TY_STRING;
			else if (t->len == 4 && strncasecmp(t->p, "hash", 4) == 0)
				o->type = TY_HASH;
			else
				o->type = 0; /* a type Coffer does not have: nothing matches */
		} else if (hscan && a->len == 8 && strncasecmp(a->p, "novalues", 8) == 0) {
			o->novalues = 1;
		} else {
			syntax_error(r);
			return 0;
		}
	}
	return 1;
}

static void invalid_cursor(struct reply *r, const struct sarg *a)
{
	r_error(r, NULL, COFFER_E_INVALID_ARGUMENT,
		"invalid cursor '%.*s': unknown or expired (a cursor stays valid for the next %u cursors the "
		"server hands out); start again from 0",
		(int)(a->len > 24 ? 24 : a->len), a->p, SRV_SCAN_SLOTS);
}

static void reply_cursor(struct reply *r, uint64_t id)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)id);
	r_array(r, 2);
	r_bulk(r, tmp, (size_t)n);
}

CMD_FN(cmd_scan)
{
	(void)c;
	uint64_t id;
	struct scan_opts o;
	if (parse_cursor(&cmd->argv[1], &id)) {
		invalid_cursor(r, &cmd->argv[1]);
		return;
	}
	if (!scan_options(r, cmd, 2, &o, 0))
		return;
	char *from = NULL;
	size_t flen = 0;
	if (id != 0) {
		int rc = scan_ring_get(e->s, 1, id, &from, &flen);
		if (rc) {
			invalid_cursor(r, &cmd->argv[1]);
			return;
		}
	}
	coffer_txn *t;
	coffer_cursor *cur = NULL;
	int rc = exec_txn(e, &t);
	e->observed = 1;
	if (rc == COFFER_OK)
		rc = coffer_cursor_open(t, T_KV, &cur);
	if (is_missing(rc)) {
		free(from);
		reply_cursor(r, 0);
		r_array(r, 0);
		return;
	}
	if (rc) {
		free(from);
		exec_engine_error(e, r, rc);
		return;
	}
	if (from) {
		rc = coffer_cursor_seek(cur, from, flen);
		if (rc == COFFER_OK) {
			const void *kp;
			size_t kl;
			rc = coffer_cursor_get(cur, &kp, &kl, NULL, NULL);
			if (rc == COFFER_OK && kl == flen && memcmp(kp, from, flen) == 0)
				rc = coffer_cursor_next(cur);
		}
	} else {
		rc = coffer_cursor_first(cur);
	}
	free(from);
	struct reply tmp = {.proto = r->proto};
	rb_init(&tmp.rb);
	size_t n = 0;
	long long seen = 0;
	char last[COFFER_MAX_KEY];
	size_t lastlen = 0;
	while (rc == COFFER_OK && seen < o.count) {
		const void *kp, *vp;
		size_t kl, vl;
		rc = coffer_cursor_get(cur, &kp, &kl, NULL, NULL);
		if (rc)
			break;
		seen++;
		memcpy(last, kp, kl);
		lastlen = kl;
		int ok = !o.match || glob_match(o.match->p, o.match->len, kp, kl);
		if (ok && o.type >= 0) {
			rc = coffer_cursor_get(cur, &kp, &kl, &vp, &vl);
			if (rc)
				break;
			ok = vl > 0 && ((const char *)vp)[0] == o.type;
		}
		if (ok) {
			r_bulk(&tmp, kp, kl);
			n++;
		}
		rc = coffer_cursor_next(cur);
	}
	coffer_cursor_close(cur);
	uint64_t next = 0;
	if (rc == COFFER_OK) {
		rc = scan_ring_put(e->s, 1, last, lastlen, &next);
	} else if (is_missing(rc)) {
		rc = COFFER_OK;
	}
	if (rc) {
		rb_free(&tmp.rb);
		exec_engine_error(e, r, rc);
		return;
	}
	reply_cursor(r, next);
	r_array(r, n);
	rb_splice(&r->rb, &tmp.rb);
}

int data_key_count(struct exec *e, uint64_t *n)
{
	coffer_txn *t;
	*n = 0;
	CF_RET(exec_txn(e, &t));
	e->observed = 1;
	int rc = coffer_tree_count(t, T_KV, n);
	if (is_missing(rc)) {
		*n = 0;
		return COFFER_OK;
	}
	return rc;
}

CMD_FN(cmd_dbsize)
{
	(void)c;
	(void)cmd;
	uint64_t n;
	int rc = data_key_count(e, &n);
	if (rc)
		exec_engine_error(e, r, rc);
	else
		r_int(r, (long long)n);
}

CMD_FN(cmd_flushdb)
{
	(void)c;
	for (int i = 1; i < cmd->argc; i++) {
		const struct sarg *a = &cmd->argv[i];
		if (!((a->len == 4 && strncasecmp(a->p, "sync", 4) == 0) ||
		      (a->len == 5 && strncasecmp(a->p, "async", 5) == 0)) ||
		    cmd->argc > 2) {
			syntax_error(r);
			return;
		}
	}
	e->observed = 1;
	const char *trees[2] = {T_KV, T_HASH};
	for (int i = 0; i < 2; i++) {
		int rc = coffer_tree_drop(e->txn, trees[i]);
		if (rc == COFFER_OK)
			e->changed = 1;
		else if (!is_missing(rc)) {
			exec_engine_error(e, r, rc);
			return;
		}
	}
	r_ok(r);
}

/* ---- hashes ---- */

/* The type of KEY for a hash command: 0 and a reply written on WRONGTYPE
 * or an error. */
static int hash_type(struct exec *e, struct reply *r, const struct sarg *k, int *type)
{
	if (!check_key(r, k))
		return 0;
	int rc = key_type(e, k, type);
	if (rc) {
		exec_engine_error(e, r, rc);
		return 0;
	}
	if (*type == TY_STRING) {
		wrongtype(r);
		return 0;
	}
	return 1;
}

static void hset_common(struct exec *e, struct cmd *cmd, struct reply *r, int hmset)
{
	struct sarg *k = &cmd->argv[1];
	if ((cmd->argc - 2) % 2 != 0) {
		r_error(r, NULL, COFFER_E_INVALID_ARGUMENT, "wrong number of arguments for '%s' command",
			hmset ? "hmset" : "hset");
		return;
	}
	int type;
	if (!hash_type(e, r, k, &type))
		return;
	if (!check_fields(r, k, &cmd->argv[2], cmd->argc - 2, 2))
		return;
	uint64_t count = 0;
	int wrong, rc;
	if (type == TY_HASH) {
		rc = hash_count(e, k, &count, &wrong);
		if (rc) {
			exec_engine_error(e, r, rc);
			return;
		}
	}
	long long added = 0;
	char tk[HKEY_MAX];
	for (int i = 2; i < cmd->argc; i += 2) {
		size_t n = hkey(tk, k, &cmd->argv[i]);
		const struct sarg *v = &cmd->argv[i + 1];
		rc = coffer_put(e->txn, T_HASH, tk, n, v->p, v->len, COFFER_NOOVERWRITE);
		if (rc == COFFER_OK) {
			added++;
		} else if (rc == COFFER_E_EXISTS) {
			rc = coffer_put(e->txn, T_HASH, tk, n, v->p, v->len, 0);
		}
		if (rc) {
			exec_engine_error(e, r, rc);
			return;
		}
		e->changed = 1;
	}
	if (added || type == TY_NONE) {
		rc = hash_set_count(e, k, count + (uint64_t)added);
		if (rc) {
			exec_engine_error(e, r, rc);
			return;
		}
	}
	if (hmset)
		r_ok(r);
	else
		r_int(r, added);
}

CMD_FN(cmd_hset)
{
	(void)c;
	hset_common(e, cmd, r, 0);
}

CMD_FN(cmd_hmset)
{
	(void)c;
	hset_common(e, cmd, r, 1);
}

/* Value of one field: COFFER_OK, COFFER_E_NOT_FOUND, or an error. */
static int hfield_get(struct exec *e, const struct sarg *k, const struct sarg *f, char **v, size_t *vlen)
{
	char tk[HKEY_MAX];
	size_t n = hkey(tk, k, f);
	if (n == 0)
		return COFFER_E_NOT_FOUND; /* too long to exist */
	coffer_txn *t;
	CF_RET(exec_txn(e, &t));
	e->observed = 1;
	void *p = NULL;
	int rc = coffer_get(t, T_HASH, tk, n, &p, vlen);
	if (is_missing(rc))
		return COFFER_E_NOT_FOUND;
	*v = p;
	return rc;
}

static void hget_common(struct exec *e, struct cmd *cmd, struct reply *r, int exists)
{
	const struct sarg *k = &cmd->argv[1];
	if (!check_key(r, k))
		return;
	char *v = NULL;
	size_t vlen = 0;
	int rc = hfield_get(e, k, &cmd->argv[2], &v, &vlen);
	if (rc == COFFER_E_NOT_FOUND) {
		int type;
		rc = key_type(e, k, &type);
		if (rc)
			exec_engine_error(e, r, rc);
		else if (type == TY_STRING)
			wrongtype(r);
		else if (exists)
			r_int(r, 0);
		else
			r_null(r);
		return;
	}
	if (rc) {
		exec_engine_error(e, r, rc);
		return;
	}
	if (exists) {
		free(v);
		r_int(r, 1);
	} else {
		r_bulk_ref(r, v, vlen, v);
	}
}

CMD_FN(cmd_hget)
{
	(void)c;
	hget_common(e, cmd, r, 0);
}

CMD_FN(cmd_hexists)
{
	(void)c;
	hget_common(e, cmd, r, 1);
}

CMD_FN(cmd_hmget)
{
	(void)c;
	const struct sarg *k = &cmd->argv[1];
	int type;
	if (!hash_type(e, r, k, &type))
		return;
	r_array(r, (size_t)cmd->argc - 2);
	for (int i = 2; i < cmd->argc; i++) {
		char *v = NULL;
		size_t vlen = 0;
		int rc = type == TY_HASH ? hfield_get(e, k, &cmd->argv[i], &v, &vlen) : COFFER_E_NOT_FOUND;
		if (rc == COFFER_OK) {
			r_bulk_ref(r, v, vlen, v);
			continue;
		}
		if (rc != COFFER_E_NOT_FOUND && e->write && e->hard_rc == COFFER_OK) {
			struct reply tmp = {.proto = r->proto};
			rb_init(&tmp.rb);
			exec_engine_error(e, &tmp, rc);
			rb_free(&tmp.rb);
		}
		r_null(r);
	}
}

CMD_FN(cmd_hdel)
{
	(void)c;
	const struct sarg *k = &cmd->argv[1];
	int type;
	if (!hash_type(e, r, k, &type))
		return;
	if (type == TY_NONE) {
		r_int(r, 0);
		return;
	}
	uint64_t count;
	int wrong;
	int rc = hash_count(e, k, &count, &wrong);
	if (rc) {
		exec_engine_error(e, r, rc);
		return;
	}
	long long removed = 0;
	char tk[HKEY_MAX];
	for (int i = 2; i < cmd->argc; i++) {
		size_t n = hkey(tk, k, &cmd->argv[i]);
		if (n == 0)
			continue;
		rc = coffer_del(e->txn, T_HASH, tk, n);
		if (rc == COFFER_OK) {
			removed++;
			e->changed = 1;
		} else if (!is_missing(rc)) {
			exec_engine_error(e, r, rc);
			return;
		}
	}
	if (removed) {
		rc = hash_set_count(e, k, count > (uint64_t)removed ? count - (uint64_t)removed : 0);
		if (rc) {
			exec_engine_error(e, r, rc);
			return;
		}
	}
	r_int(r, removed);
}

CMD_FN(cmd_hlen)
{
	(void)c;
	const struct sarg *k = &cmd->argv[1];
	if (!check_key(r, k))
		return;
	uint64_t n;
	int wrong;
	int rc = hash_count(e, k, &n, &wrong);
	if (rc)
		exec_engine_error(e, r, rc);
	else if (wrong)
		wrongtype(r);
	else
		r_int(r, (long long)n);
}

/* HGETALL (fields and values), HKEYS, HVALS. */
static void hall(struct exec *e, struct cmd *cmd, struct reply *r, int fields, int values)
{
	const struct sarg *k = &cmd->argv[1];
	int type;
	if (!hash_type(e, r, k, &type))
		return;
	struct hiter it;
	int rc = hiter_open(e, &it, k, NULL, 0, 0);
	struct reply tmp = {.proto = r->proto};
	rb_init(&tmp.rb);
	size_t n = 0;
	while (rc == COFFER_OK) {
		const char *f;
		size_t fl, vl;
		const void *vp;
		rc = hiter_get(&it, NULL, NULL, &f, &fl, values ? &vp : NULL, &vl);
		if (rc)
			break;
		if (fields)
			r_bulk(&tmp, f, fl);
		if (values)
			r_bulk(&tmp, vp, vl);
		n++;
		if (tmp.rb.bytes > e->s->cfg->lim.max_output)
			break;
		rc = hiter_next(&it);
	}
	hiter_close(&it);
	if (!tmp_reply_fits(e, r, &tmp, rc != COFFER_E_NOT_FOUND ? rc : COFFER_OK, "HSCAN"))
		return;
	if (fields && values)
		r_map(r, n);
	else
		r_array(r, n);
	rb_splice(&r->rb, &tmp.rb);
}

CMD_FN(cmd_hgetall)
{
	(void)c;
	hall(e, cmd, r, 1, 1);
}

CMD_FN(cmd_hkeys)
{
	(void)c;
	hall(e, cmd, r, 1, 0);
}

CMD_FN(cmd_hvals)
{
	(void)c;
	hall(e, cmd, r, 0, 1);
}

CMD_FN(cmd_hscan)
{
	(void)c;
	const struct sarg *k = &cmd->argv[1];
	uint64_t id;
	struct scan_opts o;
	if (parse_cursor(&cmd->argv[2], &id)) {
		invalid_cursor(r, &cmd->argv[2]);
		return;
	}
	if (!scan_options(r, cmd, 3, &o, 1))
		return;
	int type;
	if (!hash_type(e, r, k, &type))
		return;
	char *from = NULL;
	size_t flen = 0;
	struct hiter it;
	memset(&it, 0, sizeof it);
	if (id != 0) {
		char pre[16 + COFFER_MAX_KEY];
		size_t plen = hprefix(pre, k);
		if (scan_ring_get(e->s, 2, id, &from, &flen) || flen < plen || memcmp(from, pre, plen) != 0) {
			free(from);
			invalid_cursor(r, &cmd->argv[2]);
			return;
		}
	}
	int rc = hiter_open(e, &it, k, from, flen, 1);
	free(from);
	struct reply tmp = {.proto = r->proto};
	rb_init(&tmp.rb);
	size_t n = 0;
	long long seen = 0;
	char last[HKEY_MAX];
	size_t lastlen = 0;
	while (rc == COFFER_OK && seen < o.count) {
		const char *key, *f;
		size_t kl, fl, vl;
		const void *vp;
		rc = hiter_get(&it, &key, &kl, &f, &fl, o.novalues ? NULL : &vp, &vl);
		if (rc)
			break;
		seen++;
		memcpy(last, key, kl);
		lastlen = kl;
		if (!o.match || glob_match(o.match->p, o.match->len, f, fl)) {
			r_bulk(&tmp, f, fl);
			if (!o.novalues)
				r_bulk(&tmp, vp, vl);
			n += o.novalues ? 1 : 2;
		}
		rc = hiter_next(&it);
	}
	int more = rc == COFFER_OK && it.valid;
	if (more) {
		/* Is there a field after the last one examined? */
		const char *key, *f;
		size_t kl, fl;
		int g = hiter_get(&it, &key, &kl, &f, &fl, NULL, NULL);
		more = g == COFFER_OK;
		if (g && g != COFFER_E_NOT_FOUND)
			rc = g;
	}
	hiter_close(&it);
	if (rc == COFFER_E_NOT_FOUND)
		rc = COFFER_OK;
	uint64_t next = 0;
	if (rc == COFFER_OK && more)
		rc = scan_ring_put(e->s, 2, last, lastlen, &next);
	if (rc) {
		rb_free(&tmp.rb);
		exec_engine_error(e, r, rc);
		return;
	}
	reply_cursor(r, next);
	r_array(r, n);
	rb_splice(&r->rb, &tmp.rb);
}
