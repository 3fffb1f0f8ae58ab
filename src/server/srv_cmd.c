/*
 * srv_cmd.c - the command table, running a batch, permissions, MULTI/EXEC
 * and the connection and administration commands.
 *
 * A command runs on a worker inside the job of its connection (srv_pool.c
 * set up the transaction). The order of checks for each command:
 *   1. QUIT: reply OK, close after the reply;
 *   2. inside MULTI: unknown commands, wrong arity and missing permission
 *      are errors that also make EXEC fail (EXECABORT); the rest is queued;
 *   3. unknown command, arity;
 *   4. authentication (NOAUTH) and role (NOPERM, event 1010);
 *   5. the command itself.
 * Errors are "-PREFIX sentence (COFFER_E_NAME)": the Redis code word first
 * (ERR, WRONGTYPE, NOAUTH, WRONGPASS, NOPERM, EXECABORT, NOPROTO) so that
 * clients classify them as they do Redis's, and the catalog name last so
 * that 'coffer explain' finds the explanation and the remedy.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <coffer/backup.h>

#include "backup/proto.h"
#include "common/err.h"
#include "server/srv_backup.h"
#include "server/srv_cmds.h"

#define SRV_BACKUP_PROTOCOL ((int)CF_BKP_VERSION)

enum perm { PERM_ANY, PERM_CONN, PERM_BACKUP, PERM_DATA };

#define F_WRITE 0x01u    /* changes data: needs the write transaction */
#define F_READ 0x02u     /* reads data */
#define F_FAST 0x04u
#define F_ADMIN 0x08u
#define F_NOAUTH 0x10u   /* allowed before AUTH */
#define F_MULTI 0x20u    /* MULTI, EXEC, DISCARD: never queued */
#define F_DENYOOM 0x40u
#define F_SLOW 0x80u     /* may walk a whole tree: not batched with others */

struct cmd_def {
	const char *name;
	int arity; /* Redis's: n exactly, -n at least n (the name included) */
	unsigned flags;
	enum perm perm;
	cmd_fn fn;
	int first, last, step; /* key positions, for COMMAND */
	const char *group, *since, *summary;
};

static CMD_FN(cmd_auth);
static CMD_FN(cmd_backup);
static CMD_FN(cmd_client);
static CMD_FN(cmd_command);
static CMD_FN(cmd_config);
static CMD_FN(cmd_discard);
static CMD_FN(cmd_echo);
static CMD_FN(cmd_exec);
static CMD_FN(cmd_hello);
static CMD_FN(cmd_info);
static CMD_FN(cmd_multi);
static CMD_FN(cmd_ping);
static CMD_FN(cmd_quit);
static CMD_FN(cmd_select);
/* srv_status.c */
CMD_FN(cmd_coffer_status);
CMD_FN(cmd_coffer_events);

/* Sorted by name (binary search). */
static const struct cmd_def cmds[] = {
	{"append", 3, F_WRITE | F_DENYOOM, PERM_DATA, cmd_append, 1, 1, 1, "string", "2.0.0",
	 "Appends a string to the value of a key. Creates the key if it doesn't exist."},
	{"auth", -2, F_NOAUTH | F_FAST, PERM_ANY, cmd_auth, 0, 0, 0, "connection", "1.0.0",
	 "Authenticates the connection."},
	{"client", -2, F_ADMIN, PERM_CONN, cmd_client, 0, 0, 0, "connection", "2.4.0",
	 "A container for client connection commands."},
	{"coffer.backup", -3, F_MULTI | F_SLOW, PERM_BACKUP, cmd_backup, 0, 0, 0, "coffer", "0.1.0",
	 "Starts an online backup on this connection (coffer backup speaks the rest)."},
	{"coffer.events", -1, F_SLOW, PERM_BACKUP, cmd_coffer_events, 0, 0, 0, "coffer", "0.1.0",
	 "Returns the server's event log as JSON Lines (coffer events --server)."},
	{"coffer.status", 1, F_SLOW, PERM_BACKUP, cmd_coffer_status, 0, 0, 0, "coffer", "0.1.0",
	 "Returns the server's state, the running backup and the last backups (coffer status)."},
	{"command", -1, 0, PERM_CONN, cmd_command, 0, 0, 0, "server", "2.8.13",
	 "Returns detailed information about all commands."},
	{"config", -2, F_ADMIN, PERM_CONN, cmd_config, 0, 0, 0, "server", "2.0.0",
	 "A container for server configuration commands."},
	{"dbsize", 1, F_READ | F_SLOW, PERM_DATA, cmd_dbsize, 0, 0, 0, "server", "1.0.0",
	 "Returns the number of keys in the database."},
	{"decr", 2, F_WRITE | F_FAST | F_DENYOOM, PERM_DATA, cmd_decr, 1, 1, 1, "string", "1.0.0",
	 "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist."},
	{"decrby", 3, F_WRITE | F_FAST | F_DENYOOM, PERM_DATA, cmd_decrby, 1, 1, 1, "string", "1.0.0",
	 "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist."},
	{"del", -2, F_WRITE, PERM_DATA, cmd_del, 1, -1, 1, "generic", "1.0.0",
	 "Deletes one or more keys."},
	{"discard", 1, F_MULTI | F_FAST, PERM_DATA, cmd_discard, 0, 0, 0, "transactions", "2.0.0",
	 "Discards a transaction."},
	{"echo", 2, F_FAST, PERM_CONN, cmd_echo, 0, 0, 0, "connection", "1.0.0",
	 "Returns the given string."},
	{"exec", 1, F_MULTI, PERM_DATA, cmd_exec, 0, 0, 0, "transactions", "1.2.0",
	 "Executes all commands in a transaction."},
	{"exists", -2, F_READ | F_FAST, PERM_DATA, cmd_exists, 1, -1, 1, "generic", "1.0.0",
	 "Determines whether one or more keys exist."},
	{"flushall", -1, F_WRITE | F_SLOW, PERM_DATA, cmd_flushdb, 0, 0, 0, "server", "1.0.0",
	 "Removes all keys from all databases."},
	{"flushdb", -1, F_WRITE | F_SLOW, PERM_DATA, cmd_flushdb, 0, 0, 0, "server", "1.0.0",
	 "Remove all keys from the current database."},
	{"get", 2, F_READ | F_FAST, PERM_DATA, cmd_get, 1, 1, 1, "string", "1.0.0",
	 "Returns the string value of a key."},
	{"getrange", 4, F_READ, PERM_DATA, cmd_getrange, 1, 1, 1, "string", "2.4.0",
	 "Returns a substring of the string stored at a key."},
	{"hdel", -3, F_WRITE | F_FAST, PERM_DATA, cmd_hdel, 1, 1, 1, "hash", "2.0.0",
	 "Deletes one or more fields and their values from a hash. Deletes the hash if no fields remain."},
	{"hello", -1, F_NOAUTH | F_FAST, PERM_ANY, cmd_hello, 0, 0, 0, "connection", "6.0.0",
	 "Handshakes with the Redis server."},
	{"hexists", 3, F_READ | F_FAST, PERM_DATA, cmd_hexists, 1, 1, 1, "hash", "2.0.0",
	 "Determines whether a field exists in a hash."},
	{"hget", 3, F_READ | F_FAST, PERM_DATA, cmd_hget, 1, 1, 1, "hash", "2.0.0",
	 "Returns the value of a field in a hash."},
	{"hgetall", 2, F_READ | F_SLOW, PERM_DATA, cmd_hgetall, 1, 1, 1, "hash", "2.0.0",
	 "Returns all fields and values in a hash."},
	{"hkeys", 2, F_READ | F_SLOW, PERM_DATA, cmd_hkeys, 1, 1, 1, "hash", "2.0.0",
	 "Returns all fields in a hash."},
	{"hlen", 2, F_READ | F_FAST, PERM_DATA, cmd_hlen, 1, 1, 1, "hash", "2.0.0",
	 "Returns the number of fields in a hash."},
	{"hmget", -3, F_READ | F_FAST, PERM_DATA, cmd_hmget, 1, 1, 1, "hash", "2.0.0",
	 "Returns the values of all fields in a hash."},
	{"hmset", -4, F_WRITE | F_FAST | F_DENYOOM, PERM_DATA, cmd_hmset, 1, 1, 1, "hash", "2.0.0",
	 "Sets the values of multiple fields."},
	{"hscan", -3, F_READ | F_SLOW, PERM_DATA, cmd_hscan, 1, 1, 1, "hash", "2.8.0",
	 "Iterates over fields and values of a hash."},
	{"hset", -4, F_WRITE | F_FAST | F_DENYOOM, PERM_DATA, cmd_hset, 1, 1, 1, "hash", "2.0.0",
	 "Creates or modifies the value of a field in a hash."},
	{"hvals", 2, F_READ | F_SLOW, PERM_DATA, cmd_hvals, 1, 1, 1, "hash", "2.0.0",
	 "Returns all values in a hash."},
	{"incr", 2, F_WRITE | F_FAST | F_DENYOOM, PERM_DATA, cmd_incr, 1, 1, 1, "string", "1.0.0",
	 "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist."},
	{"incrby", 3, F_WRITE | F_FAST | F_DENYOOM, PERM_DATA, cmd_incrby, 1, 1, 1, "string", "1.0.0",
	 "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist."},
	{"info", -1, F_SLOW, PERM_CONN, cmd_info, 0, 0, 0, "server", "1.0.0",
	 "Returns information and statistics about the server."},
	{"keys", 2, F_READ | F_SLOW, PERM_DATA, cmd_keys, 0, 0, 0, "generic", "1.0.0",
	 "Returns all key names that match a pattern."},
	{"mget", -2, F_READ | F_FAST, PERM_DATA, cmd_mget, 1, -1, 1, "string", "1.0.0",
	 "Atomically returns the string values of one or more keys."},
	{"mset", -3, F_WRITE | F_DENYOOM, PERM_DATA, cmd_mset, 1, -1, 2, "string", "1.0.1",
	 "Atomically creates or modifies the string values of one or more keys."},
	{"multi", 1, F_MULTI | F_FAST, PERM_DATA, cmd_multi, 0, 0, 0, "transactions", "1.2.0",
	 "Starts a transaction."},
	{"ping", -1, F_FAST, PERM_CONN, cmd_ping, 0, 0, 0, "connection", "1.0.0",
	 "Returns the server's liveliness response."},
	{"quit", -1, F_NOAUTH | F_FAST, PERM_ANY, cmd_quit, 0, 0, 0, "connection", "1.0.0",
	 "Closes the connection."},
	{"scan", -2, F_READ | F_SLOW, PERM_DATA, cmd_scan, 0, 0, 0, "generic", "2.8.0",
	 "Iterates over the key names in the database."},
	{"select", 2, F_FAST, PERM_CONN, cmd_select, 0, 0, 0, "connection", "2.0.0",
	 "Changes the selected database."},
	{"set", -3, F_WRITE | F_DENYOOM, PERM_DATA, cmd_set, 1, 1, 1, "string", "1.0.0",
	 "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist."},
	{"strlen", 2, F_READ | F_FAST, PERM_DATA, cmd_strlen, 1, 1, 1, "string", "2.2.0",
	 "Returns the length of a string value."},
	{"type", 2, F_READ | F_FAST, PERM_DATA, cmd_type, 1, 1, 1, "generic", "1.0.0",
	 "Determines the type of value stored at a key."},
	{"unlink", -2, F_WRITE | F_FAST, PERM_DATA, cmd_del, 1, -1, 1, "generic", "4.0.0",
	 "Deletes one or more keys (here: at once, like DEL)."},
};
#define NCMDS (sizeof cmds / sizeof cmds[0])

const struct cmd_def *cmd_lookup(const char *name, size_t len)
{
	if (len == 0 || len > 16)
		return NULL;
	char low[17];
	for (size_t i = 0; i < len; i++)
		low[i] = (char)tolower((unsigned char)name[i]);
	low[len] = 0;
	size_t lo = 0, hi = NCMDS;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(low, cmds[mid].name);
		if (c == 0)
			return &cmds[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

int cmd_is_write(const struct cmd_def *d)
{
	return d && (d->flags & F_WRITE);
}

int cmd_is_slow(const struct cmd_def *d)
{
	return d && (d->flags & F_SLOW);
}

static int is_cmd(const struct cmd *cmd, const char *name)
{
	return cmd->def && strcmp(cmd->def->name, name) == 0;
}

int job_needs_write(const struct job *j)
{
	const struct conn *c = j->c;
	for (size_t i = j->ndone; i < j->ncmds; i++) {
		const struct cmd *cmd = j->cmds[i];
		if (cmd_is_write(cmd->def))
			return 1;
		if (is_cmd(cmd, "exec") && c->in_multi && c->multi_write)
			return 1;
	}
	return 0;
}

void job_free(struct job *j)
{
	if (j == NULL)
		return;
	for (size_t i = 0; i < j->ncmds; i++)
		cmd_free(j->cmds[i]);
	free(j->cmds);
	rb_free(&j->rep.rb);
	free(j->ev_msg);
	for (int i = 0; i < 4; i++)
		free(j->ev_strs[i]);
	free(j);
}

void job_fail(struct job *j, int code, const char *msg)
{
	rb_free(&j->rep.rb);
	for (size_t i = 0; i < j->ndone; i++)
		r_error(&j->rep, NULL, code, "%s; nothing of this request was stored", msg);
	j->close_after = 1;
}

int exec_txn(struct exec *e, coffer_txn **t)
{
	if (e->txn == NULL) {
		int rc = coffer_txn_begin(e->s->env, COFFER_TXN_READ_ONLY, &e->txn);
		if (rc) {
			e->txn = NULL;
			return rc;
		}
	}
	*t = e->txn;
	return COFFER_OK;
}

static int expected_code(int rc)
{
	return rc == COFFER_E_NOT_FOUND || rc == COFFER_E_EXISTS || rc == COFFER_E_KEY_TOO_LARGE ||
	       rc == COFFER_E_VALUE_TOO_LARGE || rc == COFFER_E_INVALID_ARGUMENT ||
	       rc == COFFER_E_TREE_NOT_FOUND;
}

void exec_engine_error(struct exec *e, struct reply *r, int rc)
{
	if (e->write && !expected_code(rc) && e->hard_rc == COFFER_OK) {
		e->hard_rc = rc;
		snprintf(e->hard_msg, sizeof e->hard_msg, "%s", coffer_error_last()->message);
	}
	r_error_last(r, rc);
}

/* ---- permissions ---- */

static const char *role_text(struct srv *s)
{
	static __thread char buf[160];
	snprintf(buf, sizeof buf, "data needs root or the server's user (uid %ld); backups and events, group %s",
		 (long)s->own_uid, s->cfg->backup_group ? s->cfg->backup_group : "coffer-backup");
	return buf;
}

static void upper(char *dst, size_t cap, const char *src)
{
	size_t i = 0;
	for (; src[i] && i + 1 < cap; i++)
		dst[i] = (char)toupper((unsigned char)src[i]);
	dst[i] = 0;
}

static int allowed(struct exec *e, struct conn *c, const struct cmd_def *d, struct reply *r)
{
	if (d->perm == PERM_ANY)
		return 1;
	if (!c->authed) {
		r_error(r, "NOAUTH", COFFER_E_AUTH_REQUIRED, "Authentication required.");
		if (c->denied_logged < 3) {
			char name[32];
			upper(name, sizeof name, d->name);
			c->denied_logged++;
			srv_event_async(e->s, COFFER_EV_ACCESS_DENIED, "PEER", c->peer, "COMMAND", name,
					"%s was refused '%s': it has not authenticated (COFFER_E_AUTH_REQUIRED)",
					c->peer, name);
		}
		return 0;
	}
	enum role need = d->perm == PERM_DATA ? ROLE_FULL : ROLE_BACKUP;
	if (c->role >= need)
		return 1;
	char name[32];
	upper(name, sizeof name, d->name);
	r_error(r, "NOPERM", COFFER_E_ACCESS_DENIED, "access denied: %s may not run '%s' (%s)", c->peer, name,
		role_text(e->s));
	if (c->denied_logged < 3) {
		c->denied_logged++;
		srv_event_async(e->s, COFFER_EV_ACCESS_DENIED, "PEER", c->peer, "COMMAND", name,
				"%s (pid %ld) was refused '%s': access denied (COFFER_E_ACCESS_DENIED)", c->peer,
				(long)c->pid, name);
	}
	return 0;
}

/* ---- running a batch ---- */

static void reply_unknown(struct reply *r, struct cmd *cmd)
{
	char args[200];
	size_t n = 0;
	args[0] = 0;
	for (int i = 1; i < cmd->argc && n < 120; i++) {
		int k = snprintf(args + n, sizeof args - n, "'%.*s' ", (int)(cmd->argv[i].len > 40 ? 40 : cmd->argv[i].len),
				 cmd->argv[i].p);
		if (k > 0)
			n += (size_t)k;
	}
	r_error(r, NULL, COFFER_E_UNKNOWN_COMMAND, "unknown command '%.*s', with args beginning with: %s",
		(int)(cmd->argv[0].len > 64 ? 64 : cmd->argv[0].len), cmd->argv[0].p, args);
}

static int arity_ok(const struct cmd_def *d, int argc)
{
	return d->arity > 0 ? argc == d->arity : argc >= -d->arity;
}

static void reply_arity(struct reply *r, const struct cmd_def *d)
{
	r_error(r, NULL, COFFER_E_INVALID_ARGUMENT, "wrong number of arguments for '%s' command", d->name);
}

/* Run one command that passed the checks. */
static void call(struct exec *e, struct conn *c, struct cmd *cmd, struct reply *r)
{
	const struct cmd_def *d = cmd->def;
	if (e->write && e->hard_rc) {
		r_error(r, NULL, e->hard_rc, "%s", e->hard_msg);
		return;
	}
	if ((d->flags & F_WRITE) && !e->write) {
		r_error(r, NULL, COFFER_E_INTERNAL, "'%s' reached a read-only batch", d->name);
		return;
	}
	d->fn(e, c, cmd, r);
}

/* Returns 1 if the command was moved into the MULTI queue. */
static int exec_one(struct exec *e, struct job *j, struct cmd *cmd)
{
	struct conn *c = j->c;
	struct reply *r = &j->rep;
	const struct cmd_def *d = cmd->def;
	r->proto = c->proto;
	c->last_cmd_us = srv_now_us();
	snprintf(c->last_cmd, sizeof c->last_cmd, "%s", d ? d->name : "unknown");
	if (c->role == ROLE_UNKNOWN)
		srv_auth_role(e->s, c);

	if (d && d->fn == cmd_quit) {
		r_ok(r);
		j->close_after = 1;
		return 0;
	}
	if (c->in_multi && !(d && (d->flags & F_MULTI))) {
		if (d == NULL) {
			reply_unknown(r, cmd);
			c->multi_abort = 1;
		} else if (!arity_ok(d, cmd->argc)) {
			reply_arity(r, d);
			c->multi_abort = 1;
		} else if (!allowed(e, c, d, r)) {
			c->multi_abort = 1;
		} else if (c->nmq >= e->s->cfg->lim.max_args ||
			   c->mq_bytes + cmd->bytes > e->s->cfg->lim.max_query) {
			r_error(r, NULL, COFFER_E_LIMIT,
				"the transaction has too many queued commands or bytes (limits %zu and %zu)",
				e->s->cfg->lim.max_args, e->s->cfg->lim.max_query);
			c->multi_abort = 1;
		} else {
			cmd->next = NULL;
			if (c->mq_tail)
				c->mq_tail->next = cmd;
			else
				c->mq_head = cmd;
			c->mq_tail = cmd;
			c->nmq++;
			c->mq_bytes += cmd->bytes;
			if (d->flags & F_WRITE)
				c->multi_write = 1;
			r_simple(r, "QUEUED");
			return 1;
		}
		return 0;
	}
	if (d == NULL) {
		reply_unknown(r, cmd);
		return 0;
	}
	if (!arity_ok(d, cmd->argc)) {
		reply_arity(r, d);
		return 0;
	}
	if (!allowed(e, c, d, r))
		return 0;
	call(e, c, cmd, r);
	return 0;
}

void job_run(struct exec *e, struct job *j)
{
	struct srv *s = e->s;
	size_t first = j->ndone;
	for (size_t i = j->ndone; i < j->ncmds; i++) {
		if (i > first && j->rep.rb.bytes >= SRV_OUT_SOFT)
			break; /* the rest runs once these replies are sent */
		struct rmark m = rb_mark(&j->rep.rb);
		if (exec_one(e, j, j->cmds[i]))
			j->cmds[i] = NULL; /* now in the MULTI queue */
		j->ndone = i + 1;
		atomic_fetch_add(&s->st.commands, 1);
		if (j->rep.rb.bytes > s->cfg->lim.max_output) {
			rb_truncate(&j->rep.rb, m);
			r_error(&j->rep, NULL, COFFER_E_LIMIT,
				"the reply exceeds the output buffer limit of %zu bytes; closing the connection",
				s->cfg->lim.max_output);
			j->close_after = 1;
		}
		if (j->rep.rb.oom) {
			j->close_after = 1;
			break;
		}
		if (e->close) {
			e->close = 0;
			j->close_after = 1;
		}
		if (e->detach) {
			/* The rest of the connection belongs to the backup session:
			 * commands sent after COFFER.BACKUP are not run. */
			j->detach = e->detach;
			j->detach_rate = e->detach_rate;
			e->detach = 0;
			e->detach_rate = 0;
			break;
		}
		if (j->close_after)
			break;
	}
}

/* ---- MULTI / EXEC / DISCARD ---- */

static void multi_clear(struct conn *c)
{
	struct cmd *q = c->mq_head;
	while (q) {
		struct cmd *n = q->next;
		cmd_free(q);
		q = n;
	}
	c->mq_head = c->mq_tail = NULL;
	c->nmq = c->mq_bytes = 0;
	c->in_multi = c->multi_abort = c->multi_write = 0;
}

void srv_conn_multi_clear(struct conn *c)
{
	multi_clear(c);
}

static CMD_FN(cmd_multi)
{
	(void)e;
	(void)cmd;
	if (c->in_multi) {
		r_error(r, NULL, COFFER_E_INVALID_ARGUMENT, "MULTI calls can not be nested");
		c->multi_abort = 1;
		return;
	}
	c->in_multi = 1;
	r_ok(r);
}

static CMD_FN(cmd_discard)
{
	(void)e;
	(void)cmd;
	if (!c->in_multi) {
		r_error(r, NULL, COFFER_E_INVALID_ARGUMENT, "DISCARD without MULTI");
		return;
	}
	multi_clear(c);
	r_ok(r);
}

static CMD_FN(cmd_exec)
{
	(void)cmd;
	if (!c->in_multi) {
		r_error(r, NULL, COFFER_E_INVALID_ARGUMENT, "EXEC without MULTI");
		return;
	}
	if (c->multi_abort) {
		multi_clear(c);
		r_error(r, "EXECABORT", COFFER_E_INVALID_ARGUMENT,
			"Transaction discarded because of previous errors.");
		return;
	}
	if (c->multi_write && !e->write) {
		multi_clear(c);
		r_error(r, NULL, COFFER_E_INTERNAL, "EXEC with writes reached a read-only batch");
		return;
	}
	struct cmd *q = c->mq_head;
	c->mq_head = c->mq_tail = NULL;
	r_array(r, c->nmq);
	multi_clear(c);
	/* All queued commands run in this job's transaction: atomically. */
	while (q) {
		struct cmd *n = q->next;
		call(e, c, q, r);
		cmd_free(q);
		q = n;
	}
}

static int arg_is(const struct sarg *a, const char *s);

/* ---- COFFER.BACKUP ---- */

/* COFFER.BACKUP <version> <type>: "+COFFER-BACKUP <version>", then the
 * loop hands the connection to srv_backup_session() on its own thread
 * (src/backup/proto.h has the protocol). */
static CMD_FN(cmd_backup)
{
	(void)c;
	long long v;
	if (c->in_multi) {
		r_error(r, NULL, COFFER_E_INVALID_ARGUMENT, "COFFER.BACKUP cannot run inside MULTI");
		c->multi_abort = 1;
		return;
	}
	if (srv_strict_ll(cmd->argv[1].p, cmd->argv[1].len, &v) || v != SRV_BACKUP_PROTOCOL) {
		r_error(r, NULL, COFFER_E_PROTOCOL_VERSION,
			"this server speaks backup protocol version %d, not '%.*s'; use a coffer client of the "
			"same version",
			SRV_BACKUP_PROTOCOL, (int)(cmd->argv[1].len > 16 ? 16 : cmd->argv[1].len), cmd->argv[1].p);
		srv_event_async(e->s, COFFER_EV_BACKUP_FAILED, "CODE_NAME", "COFFER_E_PROTOCOL_VERSION", "PEER",
				c->peer,
				"backup refused: %s asked for backup protocol version '%.*s'; this server speaks "
				"version %d (COFFER_E_PROTOCOL_VERSION)",
				c->peer, (int)(cmd->argv[1].len > 16 ? 16 : cmd->argv[1].len), cmd->argv[1].p,
				SRV_BACKUP_PROTOCOL);
		return;
	}
	unsigned type = coffer_backup_type_parse(cmd->argv[2].p);
	if (type == 0) {
		r_error(r, NULL, COFFER_E_INVALID_ARGUMENT,
			"backup type '%.*s' is not full, incremental, differential or copy",
			(int)(cmd->argv[2].len > 32 ? 32 : cmd->argv[2].len), cmd->argv[2].p);
		return;
	}
	/* FASTPATH: descriptor passing, offered on plain Unix sockets only;
	 * ZEROS: zero runs as ZEROS frames (both in src/backup/proto.h); RATE BYTES_PER_SECOND: pace the data (the
	 * tighter of it and backup-rate-limit applies); an unknown option is
	 * refused. */
	int fast = 0, zeros = 0;
	long long rate = 0;
	for (int i = 3; i < cmd->argc; i++) {
		if (cmd->argv[i].len == 8 && strncasecmp(cmd->argv[i].p, "FASTPATH", 8) == 0) {
			fast = c->kind == CONN_UNIX && c->ssl == NULL;
		} else if (arg_is(&cmd->argv[i], "ZEROS")) {
			zeros = 1;
		} else if (arg_is(&cmd->argv[i], "RATE") && i + 1 < cmd->argc) {
			i++;
			if (srv_strict_ll(cmd->argv[i].p, cmd->argv[i].len, &rate) || rate < SRV_BACKUP_MIN_RATE) {
				r_error(r, NULL, COFFER_E_INVALID_ARGUMENT,
					"COFFER.BACKUP RATE takes bytes per second, at least %d, not '%.*s'",
					SRV_BACKUP_MIN_RATE, (int)(cmd->argv[i].len > 32 ? 32 : cmd->argv[i].len),
					cmd->argv[i].p);
				return;
			}
		} else {
			r_error(r, NULL, COFFER_E_INVALID_ARGUMENT, "unknown COFFER.BACKUP option '%.*s'",
				(int)(cmd->argv[i].len > 32 ? 32 : cmd->argv[i].len), cmd->argv[i].p);
			return;
		}
	}
	char line[48];
	snprintf(line, sizeof line, "COFFER-BACKUP %d%s%s", SRV_BACKUP_PROTOCOL, fast ? " FASTPATH" : "",
		 zeros ? " ZEROS" : "");
	r_simple(r, line);
	e->detach = type | (fast ? CF_BKP_FASTPATH : 0) | (zeros ? CF_BKP_ZEROS : 0);
	e->detach_rate = (uint64_t)rate;
}

/* ---- connection commands ---- */

static int arg_is(const struct sarg *a, const char *s)
{
	return a->len == strlen(s) && strncasecmp(a->p, s, a->len) == 0;
}

static CMD_FN(cmd_quit)
{
	(void)e;
	(void)c;
	(void)cmd;
	r_ok(r);
}

static CMD_FN(cmd_ping)
{
	(void)e;
	(void)c;
	if (cmd->argc > 2) {
		reply_arity(r, cmd->def);
		return;
	}
	if (cmd->argc == 2)
		r_bulk(r, cmd->argv[1].p, cmd->argv[1].len);
	else
		r_simple(r, "PONG");
}

static CMD_FN(cmd_echo)
{
	(void)e;
	(void)c;
	r_bulk(r, cmd->argv[1].p, cmd->argv[1].len);
}

static CMD_FN(cmd_select)
{
	(void)e;
	(void)c;
	long long n;
	if (srv_strict_ll(cmd->argv[1].p, cmd->argv[1].len, &n)) {
		r_error(r, NULL, COFFER_E_NOT_INTEGER, "value is not an integer or out of range");
		return;
	}
	if (n != 0) {
		r_error(r, NULL, COFFER_E_INVALID_ARGUMENT, "DB index is out of range (Coffer has database 0 only)");
		return;
	}
	r_ok(r);
}

static void auth_failed(struct exec *e, struct conn *c, struct reply *r)
{
	r_error(r, "WRONGPASS", COFFER_E_AUTH_FAILED, "invalid username-password pair or user is disabled.");
	srv_event_async(e->s, COFFER_EV_AUTH_FAILED, "PEER", c->peer, NULL, NULL, "%s gave a wrong password",
			c->peer);
}

/* AUTH [user] password; returns 1 on success (reply written on failure). */
static int do_auth(struct exec *e, struct conn *c, const struct sarg *user, const struct sarg *pw,
		   struct reply *r)
{
	if (e->s->cfg->password == NULL) {
		r_error(r, NULL, COFFER_E_INVALID_ARGUMENT,
			"AUTH <password> called without any password configured for the default user. "
			"Are you sure your configuration is correct?");
		return 0;
	}
	if ((user && !arg_is(user, "default")) || !srv_auth_check_password(e->s, pw->p, pw->len)) {
		auth_failed(e, c, r);
		return 0;
	}
	c->authed = 1;
	c->role = ROLE_FULL;
	return 1;
}

static CMD_FN(cmd_auth)
{
	if (cmd->argc > 3) {
		r_error(r, NULL, COFFER_E_INVALID_ARGUMENT, "syntax error");
		return;
	}
	if (do_auth(e, c, cmd->argc == 3 ? &cmd->argv[1] : NULL, &cmd->argv[cmd->argc - 1], r))
		r_ok(r);
}

static int valid_name(const struct sarg *a)
{
	for (size_t i = 0; i < a->len; i++)
		if (a->p[i] < '!' || a->p[i] > '~')
			return 0;
	return 1;
}

static CMD_FN(cmd_hello)
{
	int proto = c->proto;
	int i = 1;
	if (cmd->argc >= 2) {
		long long v;
		if (srv_strict_ll(cmd->argv[1].p, cmd->argv[1].len, &v)) {
			r_error(r, NULL, COFFER_E_PROTOCOL_VERSION, "Protocol version is not an integer or out of range");
			return;
		}
		if (v != 2 && v != 3) {
			r_error(r, "NOPROTO", COFFER_E_PROTOCOL_VERSION, "unsupported protocol version");
			return;
		}
		proto = (int)v;
		i = 2;
	}
	const struct sarg *user = NULL, *pw = NULL, *name = NULL;
	for (; i < cmd->argc; i++) {
		if (arg_is(&cmd->argv[i], "auth") && i + 2 < cmd->argc) {
			user = &cmd->argv[i + 1];
			pw = &cmd->argv[i + 2];
			i += 2;
		} else if (arg_is(&cmd->argv[i], "setname") && i + 1 < cmd->argc) {
			name = &cmd->argv[i + 1];
			i++;
		} else {
			r_error(r, NULL, COFFER_E_INVALID_ARGUMENT, "Syntax error in HELLO option '%.*s'",
				(int)(cmd->argv[i].len > 64 ? 64 : cmd->argv[i].len), cmd->argv[i].p);
			return;
		}
	}
	if (pw && !do_auth(e, c, user, pw, r))
		return;
	if (!c->authed) {
		r_error(r, "NOAUTH", COFFER_E_AUTH_REQUIRED,
			"HELLO must be called with the client already authenticated, otherwise the "
			"HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
			"select the RESP protocol version at the same time");
		return;
	}
	if (name) {
		if (!valid_name(name)) {
			r_error(r, NULL, COFFER_E_INVALID_ARGUMENT,
				"Client names cannot contain spaces, newlines or special characters.");
			return;
		}
		free(c->name);
		c->name = strndup(name->p, name->len);
	}
	c->proto = proto;
	r->proto = proto;
	r_map(r, 8);
	r_bulk_str(r, "server");
	r_bulk_str(r, "redis");
	r_bulk_str(r, "version");
	r_bulk_str(r, SRV_REDIS_VERSION);
	r_bulk_str(r, "proto");
	r_int(r, proto);
	r_bulk_str(r, "id");
	r_int(r, (long long)c->id);
	r_bulk_str(r, "mode");
	r_bulk_str(r, "standalone");
	r_bulk_str(r, "role");
	r_bulk_str(r, "master");
	r_bulk_str(r, "modules");
	r_array(r, 0);
	r_bulk_str(r, "coffer");
	r_bulk_str(r, SRV_VERSION);
}

static void client_info_line(struct conn *c, char *buf, size_t cap)
{
	int64_t now = srv_now_us();
	snprintf(buf, cap,
		 "id=%llu addr=%s laddr=%s fd=%d name=%s age=%lld idle=%lld flags=%s db=0 sub=0 psub=0 "
		 "ssub=0 multi=%lld qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 "
		 "omem=0 tot-mem=0 events=r cmd=%s user=default redir=-1 resp=%d\n",
		 (unsigned long long)c->id, c->addr, c->laddr, c->fd, c->name ? c->name : "",
		 (long long)((now - c->created_us) / 1000000), (long long)((now - c->last_cmd_us) / 1000000),
		 c->in_multi ? "x" : "N", c->in_multi ? (long long)c->nmq : -1LL, c->last_cmd, c->proto);
}

static CMD_FN(cmd_client)
{
	(void)e;
	const struct sarg *sub = &cmd->argv[1];
	if (arg_is(sub, "id") && cmd->argc == 2) {
		r_int(r, (long long)c->id);
	} else if (arg_is(sub, "setname") && cmd->argc == 3) {
		if (!valid_name(&cmd->argv[2])) {
			r_error(r, NULL, COFFER_E_INVALID_ARGUMENT,
				"Client names cannot contain spaces, newlines or special characters.");
			return;
		}
		free(c->name);
		c->name = cmd->argv[2].len ? strndup(cmd->argv[2].p, cmd->argv[2].len) : NULL;
		r_ok(r);
	} else if (arg_is(sub, "getname") && cmd->argc == 2) {
		if (c->name)
			r_bulk_str(r, c->name);
		else
			r_null(r);
	} else if (arg_is(sub, "info") && cmd->argc == 2) {
		char line[1024];
		client_info_line(c, line, sizeof line);
		r_verbatim(r, line, strlen(line));
	} else if (arg_is(sub, "setinfo") && cmd->argc == 4) {
		r_ok(r); /* lib-name / lib-ver: accepted, not kept */
	} else if ((arg_is(sub, "no-evict") || arg_is(sub, "no-touch")) && cmd->argc == 3) {
		r_ok(r);
	} else if (arg_is(sub, "reply") && cmd->argc == 3 && arg_is(&cmd->argv[2], "on")) {
		r_ok(r);
	} else if (arg_is(sub, "help")) {
		static const char *const help[] = {
			"CLIENT <subcommand> [<arg> ...]. Subcommands are:",
			"ID", "    Return the ID of the current connection.",
			"GETNAME", "    Return the name of the current connection.",
			"SETNAME <name>", "    Assign the name <name> to the current connection.",
			"INFO", "    Return information about the current client connection.",
			"SETINFO <option> <value>", "    Accepted for client libraries; not kept.",
		};
		r_array(r, sizeof help / sizeof help[0]);
		for (size_t i = 0; i < sizeof help / sizeof help[0]; i++)
			r_simple(r, help[i]);
	} else {
		r_error(r, NULL, COFFER_E_UNKNOWN_COMMAND, "unknown subcommand or wrong number of arguments for '%.*s'. Try CLIENT HELP.",
			(int)(sub->len > 64 ? 64 : sub->len), sub->p);
	}
}

/* ---- COMMAND ---- */

static void command_flags(struct reply *r, const struct cmd_def *d)
{
	const char *f[6];
	size_t n = 0;
	if (d->flags & F_WRITE)
		f[n++] = "write";
	if (d->flags & F_READ)
		f[n++] = "readonly";
	if (d->flags & F_DENYOOM)
		f[n++] = "denyoom";
	if (d->flags & F_ADMIN)
		f[n++] = "admin";
	if (d->flags & F_FAST)
		f[n++] = "fast";
	if (d->flags & F_NOAUTH)
		f[n++] = "no-auth";
	r_set(r, n);
	for (size_t i = 0; i < n; i++)
		r_simple(r, f[i]);
}

static void command_info(struct reply *r, const struct cmd_def *d)
{
	r_array(r, 10);
	r_bulk_str(r, d->name);
	r_int(r, d->arity);
	command_flags(r, d);
	r_int(r, d->first);
	r_int(r, d->last);
	r_int(r, d->step);
	r_set(r, 0); /* ACL categories */
	r_array(r, 0); /* tips */
	r_array(r, 0); /* key specifications */
	r_array(r, 0); /* subcommands */
}

static void command_doc(struct reply *r, const struct cmd_def *d)
{
	r_bulk_str(r, d->name);
	r_map(r, 3);
	r_bulk_str(r, "summary");
	r_bulk_str(r, d->summary);
	r_bulk_str(r, "since");
	r_bulk_str(r, d->since);
	r_bulk_str(r, "group");
	r_bulk_str(r, d->group);
}

static CMD_FN(cmd_command)
{
	(void)e;
	(void)c;
	if (cmd->argc == 1) {
		r_array(r, NCMDS);
		for (size_t i = 0; i < NCMDS; i++)
			command_info(r, &cmds[i]);
		return;
	}
	const struct sarg *sub = &cmd->argv[1];
	if (arg_is(sub, "count") && cmd->argc == 2) {
		r_int(r, (long long)NCMDS);
	} else if (arg_is(sub, "list") && cmd->argc == 2) {
		r_array(r, NCMDS);
		for (size_t i = 0; i < NCMDS; i++)
			r_bulk_str(r, cmds[i].name);
	} else if (arg_is(sub, "info")) {
		if (cmd->argc == 2) {
			r_array(r, NCMDS);
			for (size_t i = 0; i < NCMDS; i++)
				command_info(r, &cmds[i]);
			return;
		}
		r_array(r, (size_t)cmd->argc - 2);
		for (int i = 2; i < cmd->argc; i++) {
			const struct cmd_def *d = cmd_lookup(cmd->argv[i].p, cmd->argv[i].len);
			if (d)
				command_info(r, d);
			else
				r_null_array(r);
		}
	} else if (arg_is(sub, "docs")) {
		if (cmd->argc == 2) {
			r_map(r, NCMDS);
			for (size_t i = 0; i < NCMDS; i++)
				command_doc(r, &cmds[i]);
			return;
		}
		size_t n = 0;
		for (int i = 2; i < cmd->argc; i++)
			if (cmd_lookup(cmd->argv[i].p, cmd->argv[i].len))
				n++;
		r_map(r, n);
		for (int i = 2; i < cmd->argc; i++) {
			const struct cmd_def *d = cmd_lookup(cmd->argv[i].p, cmd->argv[i].len);
			if (d)
				command_doc(r, d);
		}
	} else {
		r_error(r, NULL, COFFER_E_UNKNOWN_COMMAND, "unknown subcommand '%.*s'. Try COMMAND HELP.",
			(int)(sub->len > 64 ? 64 : sub->len), sub->p);
	}
}

/* ---- CONFIG ---- */

struct cfgval {
	const char *name;
	char value[256];
};

static size_t config_values(struct srv *s, struct cfgval *v, size_t cap)
{
	const struct srv_config *cfg = s->cfg;
	size_t n = 0;
#define CV(k, ...)                                                              \
	do {                                                                    \
		if (n < cap) {                                                  \
			v[n].name = (k);                                        \
			snprintf(v[n].value, sizeof v[n].value, __VA_ARGS__);  \
			n++;                                                    \
		}                                                               \
	} while (0)
	CV("appendfsync", "always");
	CV("appendonly", "yes");
	CV("bind", "%s", "");
	CV("client-output-buffer-limit", "normal %zu %zu 0", cfg->lim.max_output, cfg->lim.max_output);
	CV("client-query-buffer-limit", "%zu", cfg->lim.max_query);
	CV("cluster-enabled", "no");
	CV("databases", "1");
	CV("dir", "%s", cfg->data_dir);
	CV("handshake-timeout", "%u", cfg->lim.handshake_timeout); /* Coffer's own */
	CV("io-threads", "1");
	CV("maxclients", "%zu", s->max_clients);
	CV("maxmemory", "0");
	CV("maxmemory-policy", "noeviction");
	CV("port", "%d", s->tcp_port);
	CV("proto-max-bulk-len", "%zu", cfg->lim.max_bulk);
	CV("protected-mode", "%s", cfg->password ? "no" : "yes");
	CV("request-timeout", "%u", cfg->lim.request_timeout); /* Coffer's own */
	CV("save", "%s", "");
	CV("tcp-keepalive", "300");
	CV("timeout", "%u", cfg->lim.idle_timeout);
	CV("tls-port", "%d", s->tls ? s->tcp_port : 0);
	CV("unixsocket", "%s", s->unix_path);
	CV("unixsocketperm", "660");
#undef CV
	return n;
}

static CMD_FN(cmd_config)
{
	(void)c;
	struct srv *s = e->s;
	const struct sarg *sub = &cmd->argv[1];
	if (arg_is(sub, "get") && cmd->argc >= 3) {
		struct cfgval v[32];
		size_t n = config_values(s, v, 32);
		int hit[32] = {0};
		size_t nhit = 0;
		for (int a = 2; a < cmd->argc; a++)
			for (size_t i = 0; i < n; i++)
				if (!hit[i] && glob_match(cmd->argv[a].p, cmd->argv[a].len, v[i].name, strlen(v[i].name)) &&
				    (hit[i] = 1))
					nhit++;
		r_map(r, nhit);
		for (size_t i = 0; i < n; i++)
			if (hit[i]) {
				r_bulk_str(r, v[i].name);
				r_bulk_str(r, v[i].value);
			}
	} else if (arg_is(sub, "set") && cmd->argc >= 4) {
		r_error(r, NULL, COFFER_E_NOT_SUPPORTED,
			"CONFIG SET is not supported; change cofferd's options or configuration file and restart it");
	} else if (arg_is(sub, "resetstat") && cmd->argc == 2) {
		for (size_t i = 0; i < 256; i++)
			atomic_store(&s->st.errors[i], 0);
		for (size_t i = 0; i < 8; i++)
			atomic_store(&s->st.err_prefix[i], 0);
		atomic_store(&s->st.commands, 0);
		atomic_store(&s->st.hits, 0);
		atomic_store(&s->st.misses, 0);
		r_ok(r);
	} else {
		r_error(r, NULL, COFFER_E_UNKNOWN_COMMAND, "unknown subcommand or wrong number of arguments for '%.*s'",
			(int)(sub->len > 64 ? 64 : sub->len), sub->p);
	}
}

/* ---- INFO ---- */

struct sbuf {
	char *p;
	size_t len, cap;
	int oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	for (;;) {
		if (b->oom)
			return;
		va_list ap;
		va_start(ap, fmt);
		size_t room = b->cap - b->len;
		int k = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (k < 0)
			return;
		if ((size_t)k < room) {
			b->len += (size_t)k;
			return;
		}
		size_t ncap = b->cap ? b->cap * 2 : 4096;
		while (ncap - b->len <= (size_t)k)
			ncap *= 2;
		char *np = realloc(b->p, ncap);
		if (np == NULL) {
			b->oom = 1;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
}

static void lsn_text(char *out, size_t cap, uint64_t lsn)
{
	snprintf(out, cap, "%u/%u", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xffffffffu));
}

static int want_section(const struct cmd *cmd, const char *name, int dflt)
{
	if (cmd->argc == 1)
		return dflt;
	for (int i = 1; i < cmd->argc; i++) {
		const struct sarg *a = &cmd->argv[i];
		if (arg_is(a, name) || arg_is(a, "all") || arg_is(a, "everything") ||
		    (arg_is(a, "default") && dflt))
			return 1;
	}
	return 0;
}

static const char *const prefix_names[] = {"ERR", "WRONGTYPE", "NOAUTH", "WRONGPASS",
					   "NOPERM", "EXECABORT", "NOPROTO", "OTHER"};

static CMD_FN(cmd_info)
{
	struct srv *s = e->s;
	struct sbuf b = {0};
	int64_t now = srv_now_us();
	int first = 1;
#define SECTION(title)                                   \
	do {                                             \
		sb_printf(&b, "%s# %s\r\n", first ? "" : "\r\n", title); \
		first = 0;                               \
	} while (0)
	if (want_section(cmd, "server", 1)) {
		struct utsname u;
		uname(&u);
		char listen[1024];
		srv_loop_describe(s, listen, sizeof listen);
		SECTION("Server");
		sb_printf(&b,
			  "redis_version:%s\r\ncoffer_version:%s\r\nredis_mode:standalone\r\nos:%s %s %s\r\n"
			  "arch_bits:%d\r\nmultiplexing_api:epoll\r\nprocess_id:%ld\r\nrun_id:%s\r\n"
			  "tcp_port:%d\r\nuptime_in_seconds:%lld\r\nuptime_in_days:%lld\r\n"
			  "executable:cofferd\r\nconfig_file:%s\r\ndata_dir:%s\r\nlisten:%s\r\n"
			  "tls:%s\r\nworkers:%u\r\n",
			  SRV_REDIS_VERSION, SRV_VERSION, u.sysname, u.release, u.machine,
			  (int)(sizeof(void *) * 8), (long)getpid(), s->run_id, s->tcp_port,
			  (long long)((now - s->start_us) / 1000000), (long long)((now - s->start_us) / 86400000000LL),
			  s->cfg->config_file ? s->cfg->config_file : "", s->cfg->data_dir, listen,
			  s->tls ? "yes" : "no", s->cfg->lim.workers);
	}
	if (want_section(cmd, "clients", 1)) {
		SECTION("Clients");
		pthread_mutex_lock(&s->sess_mu);
		unsigned sessions = s->nsessions;
		pthread_mutex_unlock(&s->sess_mu);
		sb_printf(&b, "connected_clients:%zu\r\nmaxclients:%zu\r\nblocked_clients:0\r\nbackup_sessions:%u\r\n",
			  atomic_load(&s->nconns), s->max_clients, sessions);
	}
	if (want_section(cmd, "memory", 1)) {
		struct rusage ru;
		getrusage(RUSAGE_SELF, &ru);
		long rss = 0;
		FILE *f = fopen("/proc/self/statm", "r");
		if (f) {
			long pages, res;
			if (fscanf(f, "%ld %ld", &pages, &res) == 2)
				rss = res * sysconf(_SC_PAGESIZE);
			fclose(f);
		}
		SECTION("Memory");
		sb_printf(&b, "used_memory:%ld\r\nused_memory_rss:%ld\r\nused_memory_peak:%ld\r\nmaxmemory:0\r\n",
			  rss, rss, ru.ru_maxrss * 1024L);
	}
	if (want_section(cmd, "persistence", 1)) {
		struct coffer_env_info in;
		char redo[32], dur[32], last[32];
		SECTION("Persistence");
		if (coffer_env_info(s->env, &in) == COFFER_OK) {
			lsn_text(redo, sizeof redo, in.redo_lsn);
			lsn_text(dur, sizeof dur, in.durable_lsn);
			lsn_text(last, sizeof last, in.last_commit_lsn);
			sb_printf(&b,
				  "loading:0\r\naof_enabled:1\r\nlog_generation_first:%u\r\n"
				  "log_generation_current:%u\r\ncheckpoint_lsn:%s\r\ndurable_lsn:%s\r\n"
				  "last_commit_lsn:%s\r\ncommits:%llu\r\ncircular_logging:%d\r\n"
				  "store_fatal:%d\r\npage_size:%u\r\ndb_pages:%llu\r\nfree_pages:%llu\r\n"
				  "cache_bytes:%llu\r\ncache_hits:%llu\r\ncache_misses:%llu\r\ndirty_pages:%llu\r\n",
				  in.log_gen_first, in.log_gen_current, redo, dur, last,
				  (unsigned long long)in.commits, in.circular_logging, in.fatal, in.page_size,
				  (unsigned long long)in.pages, (unsigned long long)in.free_pages,
				  (unsigned long long)in.cache_bytes, (unsigned long long)in.cache_hits,
				  (unsigned long long)in.cache_misses, (unsigned long long)in.dirty_pages);
		} else {
			sb_printf(&b, "loading:0\r\naof_enabled:1\r\nstore_info_error:%s\r\n",
				  coffer_code_name(coffer_error_last()->code));
		}
		sb_printf(&b, "last_full_backup:none\r\nlast_incremental_backup:none\r\n"
			      "last_differential_backup:none\r\n");
	}
	if (want_section(cmd, "stats", 1)) {
		SECTION("Stats");
		sb_printf(&b,
			  "total_connections_received:%llu\r\ntotal_commands_processed:%llu\r\n"
			  "rejected_connections:%llu\r\ntimedout_connections:%llu\r\n"
			  "total_net_input_bytes:%llu\r\n"
			  "total_net_output_bytes:%llu\r\nkeyspace_hits:%llu\r\nkeyspace_misses:%llu\r\n"
			  "write_transactions:%llu\r\nwrite_batches:%llu\r\nread_batches:%llu\r\n",
			  (unsigned long long)atomic_load(&s->st.conns_total),
			  (unsigned long long)atomic_load(&s->st.commands),
			  (unsigned long long)atomic_load(&s->st.conns_rejected),
			  (unsigned long long)atomic_load(&s->st.conns_timed_out),
			  (unsigned long long)atomic_load(&s->st.net_in),
			  (unsigned long long)atomic_load(&s->st.net_out),
			  (unsigned long long)atomic_load(&s->st.hits),
			  (unsigned long long)atomic_load(&s->st.misses),
			  (unsigned long long)atomic_load(&s->st.write_txns),
			  (unsigned long long)atomic_load(&s->st.write_jobs),
			  (unsigned long long)atomic_load(&s->st.read_jobs));
	}
	if (want_section(cmd, "errorstats", 1)) {
		SECTION("Errorstats");
		for (size_t i = 0; i < 8; i++) {
			unsigned long long v = atomic_load(&s->st.err_prefix[i]);
			if (v)
				sb_printf(&b, "errorstat_%s:count=%llu\r\n", prefix_names[i], v);
		}
		for (int i = 1; i < 256; i++) {
			unsigned long long v = atomic_load(&s->st.errors[i]);
			const char *name = coffer_code_name(i);
			if (v && name)
				sb_printf(&b, "errorstat_%s:count=%llu\r\n", name, v);
		}
	}
	if (want_section(cmd, "keyspace", 1)) {
		SECTION("Keyspace");
		uint64_t n = 0;
		if (c->role == ROLE_FULL && data_key_count(e, &n) == COFFER_OK && n)
			sb_printf(&b, "db0:keys=%llu,expires=0,avg_ttl=0\r\n", (unsigned long long)n);
	}
#undef SECTION
	if (b.oom) {
		free(b.p);
		r_error(r, NULL, COFFER_E_NOMEM, "out of memory");
		return;
	}
	r_verbatim(r, b.p ? b.p : "", b.len);
	free(b.p);
}
