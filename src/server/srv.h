/*
 * srv.h - cofferd's Redis-protocol server: the parts and how they meet.
 *
 * Files (module prefix srv_):
 *   srv_loop.c   the event loop thread: listeners, accept, reads, RESP
 *                parsing, TLS, writes, dispatch of batches, shutdown
 *   srv_resp.c   the RESP parser (multibulk and inline) and reply buffers
 *   srv_pool.c   worker threads: read batches in a read transaction, write
 *                batches of many connections combined in one write
 *                transaction (group commit)
 *   srv_cmd.c    command table, permissions, connection and admin
 *                commands (PING HELLO AUTH CLIENT COMMAND CONFIG INFO ...),
 *                MULTI/EXEC
 *   srv_data.c   the data model on the engine and the data commands
 *   srv_auth.c   peer credentials, roles, password, rate-limited events
 *   srv_status.c COFFER.STATUS and COFFER.EVENTS (coffer status, events --server)
 *   srv_backup.c one backup session over a detached connection
 *   srv_backup.c one backup session (COFFER.BACKUP: srv_cmd.c accepts it,
 *                srv_loop.c hands the connection to a thread of its own)
 *
 * Threads and ownership (docs/design-server.md has the full story):
 *  - One loop thread owns every socket and the I/O half of each connection
 *    (input buffer, parser, pending commands, output queue).
 *  - A connection has at most one job (a batch of its commands) in flight.
 *    While it does (c->busy), the worker running the job owns the command
 *    half of the connection (protocol, authentication, MULTI queue, name);
 *    the loop touches only the I/O half. Replies go back through the done
 *    list and an eventfd; the loop sends them in order.
 *  - The loop never blocks on a peer and never calls the engine.
 */
#ifndef COFFER_SERVER_SRV_H
#define COFFER_SERVER_SRV_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include <coffer/coffer.h>
#include <coffer/event.h>

#define SRV_VERSION "0.1.0"
#define SRV_REDIS_VERSION "7.0.0" /* what we tell Redis clients we speak */
#define SRV_MAX_LISTEN 16

/* ---- configuration and limits ---- */

struct srv_limits {
	size_t max_clients;  /* connections at once (also bounded by RLIMIT_NOFILE) */
	size_t max_bulk;     /* one bulk string (argument) */
	size_t max_args;     /* arguments of one command */
	size_t max_inline;   /* one inline command line */
	size_t max_query;    /* all arguments of one command together */
	size_t max_output;   /* replies waiting to be sent to one client */
	unsigned workers;    /* worker threads */
	/* Deadlines in seconds (0: none), enforced by srv_loop.c's sweep: */
	unsigned handshake_timeout; /* TLS handshake and AUTH, from the connect */
	unsigned request_timeout;   /* one command being received (authenticated) */
	unsigned idle_timeout;      /* nothing read or sent (authenticated; Redis's timeout) */
};

#define SRV_DEFAULT_MAX_CLIENTS 10000u
#define SRV_DEFAULT_MAX_BULK ((size_t)512 << 20)
#define SRV_DEFAULT_MAX_ARGS ((size_t)1 << 20)
#define SRV_DEFAULT_MAX_INLINE ((size_t)64 << 10)
#define SRV_DEFAULT_MAX_QUERY ((size_t)1 << 30)
#define SRV_DEFAULT_MAX_OUTPUT ((size_t)1 << 30)
#define SRV_DEFAULT_WORKERS 16u
#define SRV_DEFAULT_HANDSHAKE_TIMEOUT 10u
#define SRV_DEFAULT_REQUEST_TIMEOUT 60u
#define SRV_DEFAULT_IDLE_TIMEOUT 0u
#define SRV_MAX_TIMEOUT 31536000u /* a year */
/* A command being received earns one more second per this many bytes
 * (a large value over a slow link is not a slowloris). */
#define SRV_REQUEST_MIN_RATE ((size_t)64 << 10)
/* Before AUTH on a connection that needs it (Redis does the same). */
#define SRV_UNAUTH_MAX_ARGS 10u
#define SRV_UNAUTH_MAX_BULK ((size_t)16 << 10)

/* A batch (one job) takes at most this many commands / argument bytes;
 * the rest waits for the next batch. */
#define SRV_BATCH_CMDS 1024u
#define SRV_BATCH_BYTES ((size_t)16 << 20)
/* A worker stops executing a batch once its replies reach this size (the
 * rest of the batch runs when they have been sent), and the loop starts the
 * next batch of a connection only when less than this is left to send. */
#define SRV_OUT_SOFT ((size_t)256 << 10)
/* One combined write transaction takes at most this many batches / bytes. */
#define SRV_COMBINE_JOBS 256u
#define SRV_COMBINE_BYTES ((size_t)64 << 20)

struct srv_config {
	const char *data_dir;
	const char *listen[SRV_MAX_LISTEN];
	int nlisten;
	const char *tls_cert, *tls_key;
	const char *password;     /* NULL: none (protected mode on TCP) */
	const char *backup_group; /* group name */
	const char *config_file;  /* for INFO */
	uint64_t backup_rate;     /* backup-rate-limit, bytes/s (0: none) */
	int backup_normal_priority; /* backup-priority normal (default low) */
	struct srv_limits lim;
};

/* ---- arguments, commands, replies ---- */

/* An argument. p[-1] may be written (one byte of headroom, used to prefix
 * a value with its type byte without copying) and p[len] is NUL. The
 * allocation is p - 1. */
struct sarg {
	char *p;
	size_t len;
};

struct cmd {
	struct cmd *next;
	int argc, cap;
	size_t bytes; /* argument bytes */
	struct sarg *argv;
	const struct cmd_def *def; /* looked up when parsed; NULL: unknown */
};

void cmd_free(struct cmd *c);

/* A reply buffer: a list of chunks. Copy chunks hold small pieces; large
 * values are attached by reference (zero copy) with the allocation that
 * holds them. */
struct rchunk {
	struct rchunk *next;
	char *data;
	size_t len, cap; /* cap 0: a reference chunk */
	void *owner;     /* freed with a reference chunk */
	char buf[];
};

struct rbuf {
	struct rchunk *head, *tail;
	size_t bytes;
	int oom; /* an allocation failed: the contents are incomplete */
};

struct rmark {
	struct rchunk *tail;
	size_t tail_len, bytes;
};

void rb_init(struct rbuf *b);
void rb_free(struct rbuf *b);
void rb_add(struct rbuf *b, const void *p, size_t n);
/* Attach N bytes at P by reference; OWNER is freed when the chunk is sent
 * (or immediately, after copying, for small pieces). */
void rb_add_ref(struct rbuf *b, const void *p, size_t n, void *owner);
void rb_splice(struct rbuf *dst, struct rbuf *src); /* src becomes empty */
struct rmark rb_mark(const struct rbuf *b);
void rb_truncate(struct rbuf *b, struct rmark m);

/* Replies in the client's protocol (2 or 3). */
struct reply {
	struct rbuf rb;
	int proto;
};

void r_simple(struct reply *r, const char *s);
void r_ok(struct reply *r);
void r_int(struct reply *r, long long v);
void r_bulk(struct reply *r, const void *p, size_t n);
void r_bulk_str(struct reply *r, const char *s);
/* A bulk whose bytes live in OWNER (freed when sent). */
void r_bulk_ref(struct reply *r, const void *p, size_t n, void *owner);
void r_null(struct reply *r);        /* $-1 or _ */
void r_null_array(struct reply *r);  /* *-1 or _ */
void r_array(struct reply *r, size_t n);
void r_map(struct reply *r, size_t n);  /* n pairs: %n or *2n */
void r_set(struct reply *r, size_t n);  /* ~n or *n */
void r_verbatim(struct reply *r, const char *p, size_t n); /* INFO text */
/* "-PREFIX text (COFFER_E_NAME)"; PREFIX NULL: "ERR". CR and LF in the
 * text become spaces. Counts the error in the statistics. */
void r_error(struct reply *r, const char *prefix, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The calling thread's coffer_error_last() as an error reply. */
void r_error_last(struct reply *r, int code);

/* Format "-PREFIX text (NAME)\r\n" into OUT (for the loop's own replies). */
size_t resp_error_line(char *out, size_t cap, const char *prefix, int code, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* ---- the parser ---- */

struct ibuf {
	char *buf;
	size_t cap, r, w; /* unread bytes are buf[r..w) */
};

/* Make room in a connection's input buffer for the next read: allocate it
 * (16 KiB), move the unread bytes to the front, grow it up to 256 KiB (the
 * parser's limits keep any one piece within that). 0 if there is no room
 * (out of memory). srv_resp.c. */
int ibuf_room(struct ibuf *b);

struct parser {
	int state;          /* PS_* in srv_resp.c */
	long long nargs;    /* arguments still expected */
	struct cmd *cur;    /* command being built */
	char *big;          /* large bulk being received into its own buffer */
	size_t big_len, big_have; /* bulk length; bytes received (CRLF included) */
	int err_code;       /* after RESP_ERROR */
	char err[256];
};

enum { RESP_MORE = 0, RESP_CMD = 1, RESP_ERROR = -1 };

struct parse_limits {
	size_t max_bulk, max_args, max_inline, max_query;
};

/* Whether the parser is in the middle of a command. */
int resp_partial(const struct parser *ps);
/* Parse from IB: RESP_CMD with *out set (a complete command), RESP_MORE
 * when more input is needed, RESP_ERROR with ps->err / ps->err_code set
 * (the connection must be closed after the error is sent). */
int resp_parse(struct parser *ps, struct ibuf *ib, const struct parse_limits *lim, struct cmd **out);
/* Where the next read() should go: into the large bulk being received
 * (returns 1, with P and N set) or into IB (returns 0). */
int resp_read_target(struct parser *ps, char **p, size_t *n);
/* After N bytes were read into the large bulk target. */
void resp_big_received(struct parser *ps, size_t n);
void resp_parser_free(struct parser *ps);

/* ---- connections and jobs ---- */

enum conn_kind { CONN_UNIX, CONN_TCP };
enum role { ROLE_UNKNOWN, ROLE_NONE, ROLE_BACKUP, ROLE_FULL };

struct listener;

struct conn {
	struct conn *prev, *next; /* all connections (loop) */
	uint64_t id;
	int fd;
	enum conn_kind kind;
	SSL *ssl;
	const struct listener *lst;
	char peer[160];  /* "uid 1001" or "192.0.2.7:5000" */
	char addr[160];  /* for CLIENT INFO: "ip:port" or "path:0" */
	char laddr[160];
	uid_t uid;
	gid_t gid;
	pid_t pid;
	int64_t created_us;

	/* I/O half: the loop thread only. */
	struct ibuf in;
	struct parser ps;
	struct cmd *pend_head, *pend_tail; /* parsed, not dispatched */
	size_t npend, pend_bytes;
	struct rbuf out;
	size_t out_off;      /* bytes of out.head already sent */
	unsigned readable : 1, writable : 1, eof : 1, closing : 1, dead : 1, busy : 1,
		reject : 1, parse_stop : 1, hup : 1, lingering : 1;
	unsigned detach;     /* after the replies are sent: backup session of this type */
	uint64_t detach_rate; /* ... paced to this many bytes/s (0: none; COFFER.BACKUP RATE) */
	char *perr;          /* protocol error line, sent after the pending replies */
	size_t perr_len;
	int64_t close_deadline_us; /* monotonic; 0: none */
	/* Deadlines (monotonic; see "Deadlines" in srv_loop.c). */
	int64_t hs_deadline_us;  /* handshake (TLS, AUTH) done by then; 0: none */
	int64_t active_us;       /* last byte received or sent */
	int64_t req_start_us;    /* a command is partly received since; 0: none */
	size_t req_bytes;        /* bytes received for it */

	/* Command half: the loop while idle, the job's worker while busy. */
	int proto;           /* 2 or 3 */
	int authed;          /* passed AUTH (or needs none) */
	enum role role;
	char *name;          /* CLIENT SETNAME */
	int in_multi, multi_abort, multi_write;
	struct cmd *mq_head, *mq_tail; /* queued by MULTI */
	size_t nmq, mq_bytes;
	int denied_logged;
	int64_t last_cmd_us;
	char last_cmd[32];
};

enum job_kind { JOB_CMDS, JOB_EVENT };

struct job {
	struct job *next;
	enum job_kind kind;
	struct conn *c;
	struct cmd **cmds;
	size_t ncmds, ndone;  /* ndone: executed (the rest go back to pending) */
	size_t bytes;
	int write;            /* needs the write transaction */
	int slow;             /* has a command that may walk a whole tree */
	unsigned detach;      /* COFFER.BACKUP accepted: its type (see srv_loop.c) */
	uint64_t detach_rate; /* its RATE option, bytes/s (0: none) */
	int close_after;      /* QUIT, a limit or a failed commit */
	struct reply rep;
	/* JOB_EVENT */
	int ev_id;
	char *ev_msg;
	coffer_evfield ev_fields[4];
	size_t ev_nfields;
	char *ev_strs[4];
};

void job_free(struct job *j);

/* ---- the server ---- */

struct srv_stats {
	atomic_uint_fast64_t conns_total, conns_rejected, conns_timed_out, commands, net_in, net_out;
	atomic_uint_fast64_t hits, misses, write_txns, write_jobs, read_jobs;
	atomic_uint_fast64_t errors[256];        /* by COFFER_E_ code */
	atomic_uint_fast64_t err_prefix[8];       /* by reply prefix, see srv_cmd.c */
};

struct scan_slot {
	uint64_t id;
	uint8_t kind;   /* 1 SCAN, 2 HSCAN */
	size_t len;
	char *key;      /* resume after this (tree) key */
};
#define SRV_SCAN_SLOTS 4096u

struct srv_pool; /* srv_pool.c */
struct srv_recover; /* srv_recover.c */
struct cf_stream; /* src/backup/proto.h */

struct srv {
	const struct srv_config *cfg;
	coffer_env *env;
	coffer_evlog *ev;
	gid_t backup_gid;
	int have_backup_group;
	uid_t own_uid;
	SSL_CTX *tls;
	int64_t start_us;
	char run_id[41];
	int tcp_port;             /* first TCP port, for INFO/CONFIG */
	char unix_path[110];      /* first Unix socket, for CONFIG */
	size_t max_clients;       /* effective */

	struct srv_pool *pool;
	struct srv_recover *recover; /* NULL: writes are not resumed after a failure */
	struct srv_stats st;
	atomic_size_t nconns;
	atomic_int stopping;

	pthread_mutex_t scan_mu;
	uint64_t scan_next;
	struct scan_slot scan[SRV_SCAN_SLOTS];

	pthread_mutex_t rate_mu; /* event rate limit, per class (srv_auth.c) */
	int64_t rate_window_us[2];
	unsigned rate_count[2], rate_dropped[2];

	struct srv_loop *loop;   /* srv_loop.c */

	pthread_mutex_t sess_mu; /* backup sessions on their own threads */
	pthread_cond_t sess_cv;
	struct srv_session *sessions;
	unsigned nsessions;
};

/* srv_loop.c: create listeners (errors: COFFER_E_BAD_ADDRESS, COFFER_E_TLS,
 * COFFER_E_SERVER_RUNNING, socket errors), then run the loop in a thread. */
int srv_loop_open(struct srv *s);
int srv_loop_start(struct srv *s);
/* Describe the listeners, "unix:/x.sock 127.0.0.1:6379", into OUT. */
void srv_loop_describe(struct srv *s, char *out, size_t cap);
/* Stop accepting, finish in-flight commands, send their replies (at most
 * a few seconds), close every connection, remove Unix sockets; returns
 * when the loop thread has ended. */
void srv_loop_stop(struct srv *s);
/* Called by workers: hand finished jobs (a list linked by next) back. */
void srv_loop_done_list(struct srv *s, struct job *list);
void srv_loop_done(struct srv *s, struct job *j);
/* Wait for the backup sessions to end (they see s->stopping and abort);
 * after GRACE_MS cut their connections. Call after srv_loop_stop. */
void srv_sessions_stop(struct srv *s, int grace_ms);

/* srv_pool.c */
int srv_pool_start(struct srv *s, unsigned nworkers);
void srv_pool_submit(struct srv *s, struct job *j);
void srv_pool_submit_list(struct srv *s, struct job *list); /* linked by next */
void srv_pool_stop(struct srv *s); /* after the loop: runs what is queued, joins */

/* srv_recover.c: reopen the store after it stopped accepting writes (a
 * full disk), see the top of srv_recover.c. s->env changes only while no
 * job runs: a job uses s->env between srv_recover_enter() (which returns
 * it; NULL: the store could not be reopened, fail the job with
 * srv_recover_fail_job) and srv_recover_leave(). */
int srv_recover_start(struct srv *s, const coffer_env_options *opts);
void srv_recover_stop(struct srv *s);  /* no reopen after this; idempotent */
void srv_recover_free(struct srv *s);  /* after the pool and the sessions stopped */
coffer_env *srv_recover_enter(struct srv *s);
void srv_recover_leave(struct srv *s);
void srv_recover_fail_job(struct srv *s, struct job *j);
/* A write transaction failed with RC and message MSG (CAP bytes): wake the
 * monitor, and fix the advice in MSG when the store is fatal. */
void srv_recover_notice(struct srv *s, int rc, char *msg, size_t cap);
/* A backup session over ST (srv_loop.c), refused while writes are stopped. */
struct srv_backup_opts;
int srv_recover_backup_session(struct srv *s, struct cf_stream *st, const struct srv_backup_opts *o,
			       const char *who);
/* COFFER_OK, or the error to exit with when the store is not open at shutdown. */
int srv_recover_down(struct srv *s);

/* srv_cmd.c */
struct cmd_def;
const struct cmd_def *cmd_lookup(const char *name, size_t len);
int cmd_is_write(const struct cmd_def *d);
int cmd_is_slow(const struct cmd_def *d); /* KEYS, SCAN, HGETALL, DBSIZE, INFO... */
/* Whether this job needs the write transaction (called by the loop while
 * the connection is idle). */
int job_needs_write(const struct job *j);
struct exec;
/* Run the job's commands (srv_pool.c calls it with the transaction set up). */
void job_run(struct exec *e, struct job *j);
/* After a failed commit (or begin): replace every reply of the job with
 * this error and close the connection. */
void job_fail(struct job *j, int code, const char *msg);
/* Free the MULTI queue of a connection and leave MULTI. */
void srv_conn_multi_clear(struct conn *c);

/* The execution context of a job on a worker. */
struct exec {
	struct srv *s;
	coffer_txn *txn;       /* the write transaction, or a lazily begun read one */
	int write;
	int observed, changed; /* read data / changed data (write txn) */
	int close;             /* close the connection after this command's reply */
	unsigned detach;       /* hand the connection to a backup session (type) */
	uint64_t detach_rate;  /* its RATE option, bytes/s (0: none) */
	int hard_rc;           /* first engine failure that broke the write txn */
	char hard_msg[768];
};
/* The transaction for data access (begins a read transaction if needed). */
int exec_txn(struct exec *e, coffer_txn **t);

/* srv_data.c: the data commands; each takes the argv and writes a reply. */
typedef void (*cmd_fn)(struct exec *e, struct conn *c, struct cmd *cmd, struct reply *r);
/* Note an engine error: a hard one marks the write txn broken. */
void exec_engine_error(struct exec *e, struct reply *r, int rc);
int scan_ring_put(struct srv *s, uint8_t kind, const void *key, size_t len, uint64_t *id);
int scan_ring_get(struct srv *s, uint8_t kind, uint64_t id, char **key, size_t *len);
int glob_match(const char *pat, size_t plen, const char *s, size_t slen);

/* srv_auth.c */
int srv_auth_init(struct srv *s);
/* Compute c->role from the peer's credentials (Unix sockets). */
void srv_auth_role(struct srv *s, struct conn *c);
int srv_auth_check_password(struct srv *s, const char *pw, size_t len);
/* Log an event from the server's clients' doings, at most 10 a second
 * (the first one after a suppressed stretch says how many were left out):
 * queued for a worker to write, so that neither the loop nor a transaction
 * waits for the event log's fdatasync. Up to two fields (K1 = V1, K2 = V2;
 * a NULL key ends them). */
void srv_event_async(struct srv *s, int id, const char *k1, const char *v1, const char *k2,
		     const char *v2, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
void srv_event_job(struct srv *s, struct job *j); /* srv_pool.c runs JOB_EVENT */

/* Redis's string2ll: "0" or -?[1-9][0-9]*, no blanks; 0 or -1. */
int srv_strict_ll(const char *p, size_t n, long long *out);
extern struct srv_stats *srv_stats_global;

int64_t srv_now_us(void);
int64_t srv_mono_us(void);

#endif
