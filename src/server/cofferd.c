/*
 * cofferd.c - the Coffer server: options, store life cycle, signals.
 *
 *   cofferd --data DIR [--listen ADDR]... [--config FILE] [--circular-logging]
 *           [--tls-cert FILE --tls-key FILE] [--password-file FILE]
 *           [--backup-group NAME] [--workers N] [--max-clients N]
 *           [--max-bulk-length SIZE] [--max-output-buffer SIZE]
 *           [--handshake-timeout S] [--request-timeout S] [--timeout S]
 *           [--backup-rate-limit MIB_PER_S] [--backup-priority low|normal]
 *
 * Runs in the foreground. Start: create/lock DIR, open the event log, open
 * the store (crash recovery runs there, with its own event), open the
 * listeners (default unix:DIR/cofferd.sock), start the workers and the
 * event loop (src/server/srv.h), log "server started" naming the
 * addresses. SIGTERM or SIGINT: stop accepting, finish the commands in
 * flight and send their replies, close the connections and remove the Unix
 * sockets, checkpoint, mark the store clean, log "server stopped cleanly",
 * exit 0. A failure at start prints "cofferd: error: MESSAGE (NAME)", logs
 * event 1002 and exits with the code.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <ini.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/rand.h>

#include <coffer/coffer.h>
#include <coffer/event.h>

#include "common/err.h"
#include "common/os.h"
#include "server/srv.h"

#define MAX_LISTEN SRV_MAX_LISTEN

struct config {
	char *data;
	char *listen[MAX_LISTEN];
	int nlisten;
	char *tls_cert, *tls_key, *password_file, *backup_group;
	int circular_logging;
	uint64_t cache_bytes;
	unsigned checkpoint_seconds; /* 0: the engine's default (30) */
	uint32_t page_size;
	uint32_t log_file_size;
	char *config_file;
	struct srv_limits lim;
	uint64_t backup_rate;       /* bytes/s, 0: none */
	int backup_normal_priority; /* 0: low (default) */
};

static const char usage_text[] =
	"usage: cofferd --data DIR [--listen ADDR]... [--config FILE] [--circular-logging]\n"
	"               [--tls-cert FILE --tls-key FILE] [--password-file FILE]\n"
	"               [--backup-group NAME] [--workers N] [--max-clients N]\n"
	"               [--max-bulk-length SIZE] [--max-output-buffer SIZE]\n"
	"               [--handshake-timeout S] [--request-timeout S] [--timeout S]\n"
	"               [--cache-size SIZE] [--checkpoint-interval S]\n"
	"               [--backup-rate-limit MIB_PER_S] [--backup-priority low|normal]\n"
	"  ADDR is unix:PATH or HOST:PORT; default unix:DIR/cofferd.sock\n"
	"  deadlines in seconds, 0 for none: TLS handshake and AUTH (default 10), one\n"
	"  command being received (default 60, +1 s per 64 KiB), idle client (default 0)\n"
	"  checkpoints every --checkpoint-interval seconds (default 30), after 64 MiB\n"
	"  of log, or when half the page cache (--cache-size, default 64M) is dirty\n"
	"  runs in the foreground; SIGTERM or SIGINT: clean shutdown\n"
	"  without a password, TCP is accepted from loopback only; the backup-operators\n"
	"  group (default coffer-backup) may back up and read events over a Unix socket\n";

static int set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = strdup(v);
	return *dst ? COFFER_OK : CF_ERROR(COFFER_E_NOMEM, NULL, "no memory");
}

static int parse_size(const char *what, const char *v, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	uint64_t mul = 1;
	if (*end == 'k' || *end == 'K')
		mul = 1024, end++;
	else if (*end == 'm' || *end == 'M')
		mul = 1024 * 1024, end++;
	else if (*end == 'g' || *end == 'G')
		mul = 1024ull * 1024 * 1024, end++;
	if (errno || end == v || *end || n > UINT64_MAX / mul)
		return CF_ERROR(COFFER_E_CONFIG, NULL, "%s: '%s' is not a size (a number with K, M or G)",
				what, v);
	*out = n * mul;
	return COFFER_OK;
}

static int add_listen(struct config *c, const char *v)
{
	if (c->nlisten == MAX_LISTEN)
		return CF_ERROR(COFFER_E_USAGE, NULL, "at most %d listen addresses", MAX_LISTEN);
	c->listen[c->nlisten] = strdup(v);
	if (c->listen[c->nlisten] == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory");
	c->nlisten++;
	return COFFER_OK;
}

/* One key of the configuration file (section [cofferd] or none). */
static int apply_key(struct config *c, const char *key, const char *v)
{
	uint64_t n;
	if (strcmp(key, "data") == 0)
		return set_str(&c->data, v);
	if (strcmp(key, "listen") == 0)
		return add_listen(c, v);
	if (strcmp(key, "tls-cert") == 0)
		return set_str(&c->tls_cert, v);
	if (strcmp(key, "tls-key") == 0)
		return set_str(&c->tls_key, v);
	if (strcmp(key, "password-file") == 0)
		return set_str(&c->password_file, v);
	if (strcmp(key, "backup-group") == 0)
		return set_str(&c->backup_group, v);
	if (strcmp(key, "circular-logging") == 0) {
		if (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
			c->circular_logging = 1;
		else if (strcmp(v, "no") == 0 || strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
			c->circular_logging = 0;
		else
			return CF_ERROR(COFFER_E_CONFIG, NULL, "circular-logging must be yes or no, not '%s'", v);
		return COFFER_OK;
	}
	if (strcmp(key, "workers") == 0 || strcmp(key, "max-clients") == 0) {
		char *end;
		errno = 0;
		unsigned long num = strtoul(v, &end, 10);
		unsigned long hi = key[0] == 'w' ? 1024 : 1000000;
		if (errno || *end || end == v || num < 1 || num > hi)
			return CF_ERROR(COFFER_E_CONFIG, NULL, "%s must be a number 1..%lu, not '%s'", key, hi, v);
		if (key[0] == 'w')
			c->lim.workers = (unsigned)num;
		else
			c->lim.max_clients = num;
		return COFFER_OK;
	}
	if (strcmp(key, "handshake-timeout") == 0 || strcmp(key, "request-timeout") == 0 ||
	    strcmp(key, "timeout") == 0) {
		char *end;
		errno = 0;
		unsigned long num = strtoul(v, &end, 10);
		if (errno || *end || end == v || v[0] == '-' || num > SRV_MAX_TIMEOUT)
			return CF_ERROR(COFFER_E_CONFIG, NULL, "%s must be a number of seconds 0..%u (0: none), not '%s'",
					key, SRV_MAX_TIMEOUT, v);
		if (key[0] == 'h')
			c->lim.handshake_timeout = (unsigned)num;
		else if (key[0] == 'r')
			c->lim.request_timeout = (unsigned)num;
		else
			c->lim.idle_timeout = (unsigned)num;
		return COFFER_OK;
	}
	if (strcmp(key, "max-bulk-length") == 0 || strcmp(key, "max-output-buffer") == 0) {
		CF_RET(parse_size(key, v, &n));
		/* A value must fit the engine (4 GiB - 1) with its type byte. */
		uint64_t lo = key[4] == 'b' ? 1024 : 64 * 1024, hi = 2ull << 30;
		if (n < lo || n > hi)
			return CF_ERROR(COFFER_E_CONFIG, NULL, "%s must be between %lluK and 2G, not %s", key,
					(unsigned long long)(lo / 1024), v);
		if (key[4] == 'b')
			c->lim.max_bulk = (size_t)n;
		else
			c->lim.max_output = (size_t)n;
		return COFFER_OK;
	}
	if (strcmp(key, "checkpoint-interval") == 0) {
		char *end;
		errno = 0;
		unsigned long num = strtoul(v, &end, 10);
		if (errno || *end || end == v || v[0] == '-' || num < 1 || num > 86400)
			return CF_ERROR(COFFER_E_CONFIG, NULL,
					"checkpoint-interval must be a number of seconds 1..86400, not '%s'", v);
		c->checkpoint_seconds = (unsigned)num;
		return COFFER_OK;
	}
	if (strcmp(key, "cache-size") == 0) {
		CF_RET(parse_size(key, v, &n));
		c->cache_bytes = n;
		return COFFER_OK;
	}
	if (strcmp(key, "page-size") == 0 || strcmp(key, "log-file-size") == 0) {
		CF_RET(parse_size(key, v, &n));
		if (n > UINT32_MAX)
			return CF_ERROR(COFFER_E_CONFIG, NULL, "%s: %s is too large", key, v);
		if (key[0] == 'p')
			c->page_size = (uint32_t)n;
		else
			c->log_file_size = (uint32_t)n;
		return COFFER_OK;
	}
	if (strcmp(key, "backup-rate-limit") == 0) {
		/* MiB per second, fractions allowed; 0: none */
		char *end;
		errno = 0;
		double mib = strtod(v, &end);
		if (errno || end == v || *end || !(mib == 0 || (mib >= 0.1 && mib <= 1e6)))
			return CF_ERROR(COFFER_E_CONFIG, NULL,
					"backup-rate-limit takes MiB per second (0.1 to 1000000, or 0: no limit), "
					"not '%s'",
					v);
		c->backup_rate = (uint64_t)(mib * 1048576.0);
		return COFFER_OK;
	}
	if (strcmp(key, "backup-priority") == 0) {
		if (strcmp(v, "low") == 0)
			c->backup_normal_priority = 0;
		else if (strcmp(v, "normal") == 0)
			c->backup_normal_priority = 1;
		else
			return CF_ERROR(COFFER_E_CONFIG, NULL, "backup-priority must be low or normal, not '%s'", v);
		return COFFER_OK;
	}
	return CF_ERROR(COFFER_E_CONFIG, NULL, "unknown key '%s'", key);
}

struct ini_ctx {
	struct config *c;
	const char *path;
	int rc;
};

/* inih stops at the first line its handler refuses and returns that line. */
static int cfg_handler(void *arg, const char *section, const char *name, const char *value)
{
	struct ini_ctx *x = arg;
	if (section[0] && strcmp(section, "cofferd") != 0) {
		x->rc = CF_ERROR(COFFER_E_CONFIG, CF_OBJ(.file = x->path),
				 "unknown section [%s] (use [cofferd])", section);
		return 0;
	}
	int rc = apply_key(x->c, name, value);
	if (rc) {
		x->rc = rc;
		return 0;
	}
	return 1;
}

static int load_config(struct config *c, const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return cf_error_sys("open the configuration file", path, -1);
	struct ini_ctx x = {c, path, COFFER_OK};
	int r = ini_parse_file(f, cfg_handler, &x);
	fclose(f);
	if (x.rc) {
		cf_error_prefix("%s line %d", path, r);
		return x.rc;
	}
	if (r != 0)
		return CF_ERROR(COFFER_E_CONFIG, CF_OBJ(.file = path), "%s line %d: syntax error", path, r);
	return COFFER_OK;
}

static int parse_args(struct config *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, NULL, 'd'},
		{"listen", required_argument, NULL, 'l'},
		{"config", required_argument, NULL, 'c'},
		{"circular-logging", no_argument, NULL, 'C'},
		{"tls-cert", required_argument, NULL, 'T'},
		{"tls-key", required_argument, NULL, 'K'},
		{"password-file", required_argument, NULL, 'P'},
		{"backup-group", required_argument, NULL, 'G'},
		{"cache-size", required_argument, NULL, 's'},
		{"checkpoint-interval", required_argument, NULL, 'I'},
		{"workers", required_argument, NULL, 'W'},
		{"max-clients", required_argument, NULL, 'M'},
		{"max-bulk-length", required_argument, NULL, 'B'},
		{"max-output-buffer", required_argument, NULL, 'O'},
		{"handshake-timeout", required_argument, NULL, 'H'},
		{"request-timeout", required_argument, NULL, 'R'},
		{"timeout", required_argument, NULL, 't'},
		{"backup-rate-limit", required_argument, NULL, 'L'},
		{"backup-priority", required_argument, NULL, 'Y'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	/* The configuration file first, so that flags override it. */
	for (int i = 1; i < argc; i++) {
		const char *cfg = NULL;
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			cfg = argv[i + 1];
		else if (strncmp(argv[i], "--config=", 9) == 0)
			cfg = argv[i] + 9;
		if (cfg) {
			CF_RET(load_config(c, cfg));
			CF_RET(set_str(&c->config_file, cfg));
		}
	}
	int ch;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'd': CF_RET(set_str(&c->data, optarg)); break;
		case 'l': CF_RET(add_listen(c, optarg)); break;
		case 'c': break;
		case 'C': c->circular_logging = 1; break;
		case 'T': CF_RET(set_str(&c->tls_cert, optarg)); break;
		case 'K': CF_RET(set_str(&c->tls_key, optarg)); break;
		case 'P': CF_RET(set_str(&c->password_file, optarg)); break;
		case 'G': CF_RET(set_str(&c->backup_group, optarg)); break;
		case 's': CF_RET(apply_key(c, "cache-size", optarg)); break;
		case 'I': CF_RET(apply_key(c, "checkpoint-interval", optarg)); break;
		case 'W': CF_RET(apply_key(c, "workers", optarg)); break;
		case 'M': CF_RET(apply_key(c, "max-clients", optarg)); break;
		case 'B': CF_RET(apply_key(c, "max-bulk-length", optarg)); break;
		case 'O': CF_RET(apply_key(c, "max-output-buffer", optarg)); break;
		case 'H': CF_RET(apply_key(c, "handshake-timeout", optarg)); break;
		case 'R': CF_RET(apply_key(c, "request-timeout", optarg)); break;
		case 't': CF_RET(apply_key(c, "timeout", optarg)); break;
		case 'L': CF_RET(apply_key(c, "backup-rate-limit", optarg)); break;
		case 'Y': CF_RET(apply_key(c, "backup-priority", optarg)); break;
		case 'h':
			fputs(usage_text, stdout);
			exit(0);
		default:
			return CF_ERROR(COFFER_E_USAGE, NULL, "unknown or incomplete option '%s'; see 'cofferd --help'",
					argv[optind - 1]);
		}
	}
	if (optind < argc)
		return CF_ERROR(COFFER_E_USAGE, NULL, "unexpected argument '%s'", argv[optind]);
	if (c->data == NULL)
		return CF_ERROR(COFFER_E_USAGE, NULL, "--data DIR is required");
	if ((c->tls_cert == NULL) != (c->tls_key == NULL))
		return CF_ERROR(COFFER_E_USAGE, NULL, "--tls-cert and --tls-key go together");
	if (c->lim.max_output < c->lim.max_bulk + 64)
		return CF_ERROR(COFFER_E_CONFIG, NULL,
				"max-output-buffer (%zu) must be larger than max-bulk-length (%zu): a GET of the "
				"largest value must fit",
				c->lim.max_output, c->lim.max_bulk);
	if (c->nlisten == 0) {
		char def[4096];
		snprintf(def, sizeof def, "unix:%s/cofferd.sock", c->data);
		CF_RET(add_listen(c, def));
	}
	return COFFER_OK;
}

/* The password: the first line of FILE, without its line end. */
static int read_password(const char *path, char **out)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return cf_error_sys("open the password file", path, -1);
	char buf[4096];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	int bad = ferror(f);
	fclose(f);
	if (bad)
		return cf_error_sys("read the password file", path, -1);
	buf[n] = 0;
	buf[strcspn(buf, "\r\n")] = 0;
	if (buf[0] == 0)
		return CF_ERROR(COFFER_E_CONFIG, CF_OBJ(.file = path),
				"the password file \"%s\" is empty; its first line is the password", path);
	*out = strdup(buf);
	explicit_bzero(buf, sizeof buf);
	return *out ? COFFER_OK : CF_ERROR(COFFER_E_NOMEM, NULL, "no memory");
}

/* As many descriptors as we may have: one per connection. */
static rlim_t raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur;
}

static void config_free(struct config *c)
{
	free(c->data);
	for (int i = 0; i < c->nlisten; i++)
		free(c->listen[i]);
	free(c->tls_cert);
	free(c->tls_key);
	free(c->password_file);
	free(c->backup_group);
	free(c->config_file);
}

static int fail(coffer_evlog *ev, int rc)
{
	const coffer_error *e = coffer_error_last();
	coffer_error_print(stderr, "cofferd", e);
	if (ev)
		coffer_event_error(ev, COFFER_EV_SERVER_START_FAILED, e, NULL, 0);
	return rc;
}

int main(int argc, char **argv)
{
	struct config cfg = {0};
	coffer_evlog *ev = NULL;
	coffer_env *env = NULL;
	struct srv *srv = NULL;
	struct srv_config scfg;
	char *password = NULL;
	cfg.lim = (struct srv_limits){.max_clients = SRV_DEFAULT_MAX_CLIENTS,
				      .max_bulk = SRV_DEFAULT_MAX_BULK,
				      .max_args = SRV_DEFAULT_MAX_ARGS,
				      .max_inline = SRV_DEFAULT_MAX_INLINE,
				      .max_query = SRV_DEFAULT_MAX_QUERY,
				      .max_output = SRV_DEFAULT_MAX_OUTPUT,
				      .workers = SRV_DEFAULT_WORKERS,
				      .handshake_timeout = SRV_DEFAULT_HANDSHAKE_TIMEOUT,
				      .request_timeout = SRV_DEFAULT_REQUEST_TIMEOUT,
				      .idle_timeout = SRV_DEFAULT_IDLE_TIMEOUT};
	int rc = parse_args(&cfg, argc, argv);
	if (rc) {
		rc = fail(NULL, rc);
		goto out;
	}
	/* Signals are taken synchronously by sigwait: block them in every
	 * thread before any is created. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	rlim_t nofile = raise_nofile();
	if (cfg.password_file) {
		rc = read_password(cfg.password_file, &password);
		if (rc) {
			rc = fail(NULL, rc);
			goto out;
		}
	}

	rc = cf_mkdir_p(cfg.data, 0700);
	if (rc == COFFER_OK)
		rc = coffer_evlog_open(&ev, cfg.data, NULL);
	if (rc) {
		rc = fail(NULL, rc);
		goto out;
	}
	coffer_env_options eo;
	coffer_env_options_init(&eo);
	eo.flags = COFFER_ENV_CREATE;
	eo.cache_bytes = cfg.cache_bytes;
	eo.checkpoint_seconds = cfg.checkpoint_seconds;
	eo.page_size = cfg.page_size;
	eo.log_file_size = cfg.log_file_size;
	eo.circular_logging = cfg.circular_logging;
	eo.evlog = ev;
	rc = coffer_env_open(&env, cfg.data, &eo);
	if (rc) {
		rc = fail(ev, rc);
		goto out;
	}

	/* The server: listeners, workers, event loop. */
	memset(&scfg, 0, sizeof scfg);
	scfg.data_dir = cfg.data;
	for (int i = 0; i < cfg.nlisten; i++)
		scfg.listen[i] = cfg.listen[i];
	scfg.nlisten = cfg.nlisten;
	scfg.tls_cert = cfg.tls_cert;
	scfg.tls_key = cfg.tls_key;
	scfg.password = password;
	scfg.backup_group = cfg.backup_group;
	scfg.config_file = cfg.config_file;
	scfg.lim = cfg.lim;
	scfg.backup_rate = cfg.backup_rate;
	scfg.backup_normal_priority = cfg.backup_normal_priority;
	srv = calloc(1, sizeof *srv);
	if (srv == NULL) {
		rc = fail(ev, CF_ERROR(COFFER_E_NOMEM, NULL, "no memory"));
		goto out;
	}
	srv->cfg = &scfg;
	srv->env = env; /* srv owns it now: srv_recover.c may replace it */
	env = NULL;
	srv->ev = ev;
	srv->start_us = srv_now_us();
	pthread_mutex_init(&srv->scan_mu, NULL);
	pthread_mutex_init(&srv->rate_mu, NULL);
	pthread_mutex_init(&srv->sess_mu, NULL);
	pthread_cond_init(&srv->sess_cv, NULL);
	{
		unsigned char rnd[20];
		if (RAND_bytes(rnd, sizeof rnd) != 1)
			memset(rnd, 0, sizeof rnd);
		for (int i = 0; i < 20; i++)
			snprintf(srv->run_id + 2 * i, 3, "%02x", rnd[i]);
	}
	/* Leave room for the store's files, the event log and the listeners. */
	size_t fds = nofile > 64 + (rlim_t)cfg.nlisten * 4 ? (size_t)nofile - 64 - (size_t)cfg.nlisten * 4 : 16;
	srv->max_clients = cfg.lim.max_clients < fds ? cfg.lim.max_clients : fds;
	srv_stats_global = &srv->st;
	rc = srv_auth_init(srv);
	if (rc == COFFER_OK)
		rc = srv_recover_start(srv, &eo);
	if (rc == COFFER_OK)
		rc = srv_loop_open(srv);
	if (rc == COFFER_OK)
		rc = srv_pool_start(srv, cfg.lim.workers);
	if (rc == COFFER_OK)
		rc = srv_loop_start(srv);
	if (rc) {
		rc = fail(ev, rc);
		goto out;
	}

	char listen[1024];
	srv_loop_describe(srv, listen, sizeof listen);
	coffer_evfield f[3] = {{"DATA", cfg.data}, {"PID", NULL}, {"LISTEN", listen}};
	char pid[24];
	snprintf(pid, sizeof pid, "%ld", (long)getpid());
	f[1].value = pid;
	fprintf(stderr, "cofferd: listening on %s\n", listen);
	if (password == NULL && srv->tcp_port != 0)
		fprintf(stderr, "cofferd: note: no password: TCP clients are accepted from loopback only\n");
	coffer_event_write(ev, COFFER_EV_SERVER_STARTED, f, 3, "cofferd started on \"%s\" (pid %s), listening on %s",
			   cfg.data, pid, listen);
	fprintf(stderr, "cofferd: started on %s (pid %s)\n", cfg.data, pid);

	int sig = 0;
	sigwait(&sigs, &sig);
	fprintf(stderr, "cofferd: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
	atomic_store(&srv->stopping, 1);
	srv_recover_stop(srv);
	srv_loop_stop(srv);
	srv_sessions_stop(srv, 5000);
	srv_pool_stop(srv);
	env = srv->env;
	srv->env = NULL;
	rc = env ? coffer_env_close(env) : srv_recover_down(srv);
	env = NULL;
	if (rc) {
		rc = fail(ev, rc);
		goto out;
	}
	coffer_event_write(ev, COFFER_EV_SERVER_STOPPED, f, 2, "cofferd stopped cleanly on %s",
			   sig == SIGINT ? "SIGINT" : "SIGTERM");
	fprintf(stderr, "cofferd: stopped cleanly\n");
out:
	if (srv) {
		atomic_store(&srv->stopping, 1);
		srv_recover_stop(srv);
		srv_loop_stop(srv);
		srv_sessions_stop(srv, 5000);
		srv_pool_stop(srv);
		srv_recover_free(srv);
		if (srv->env)
			env = srv->env;
		for (unsigned i = 0; i < SRV_SCAN_SLOTS; i++)
			free(srv->scan[i].key);
		pthread_mutex_destroy(&srv->scan_mu);
		pthread_mutex_destroy(&srv->rate_mu);
		pthread_mutex_destroy(&srv->sess_mu);
		pthread_cond_destroy(&srv->sess_cv);
		srv_stats_global = NULL;
		free(srv);
	}
	if (env)
		coffer_env_close(env);
	coffer_evlog_close(ev);
	if (password) {
		explicit_bzero(password, strlen(password));
		free(password);
	}
	config_free(&cfg);
	return rc;
}
