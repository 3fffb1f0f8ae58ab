/*
 * srv_auth.c - who may do what: peer credentials, roles, the password, and
 * the rate-limited events the server writes about its clients.
 *
 * Roles (decided per connection, before its first command runs):
 *   FULL    everything. Unix socket: root and the server's own uid; TCP:
 *           any client when there is no password (loopback only then), or
 *           after AUTH with the password; any client after a good AUTH.
 *   BACKUP  backups (next issue), events, INFO, PING and the connection
 *           commands; no data. Unix socket: members of the backup-operators
 *           group (--backup-group, default coffer-backup): the peer's
 *           primary gid (SO_PEERCRED) is the group, or the group is among
 *           getgrouplist() of the peer's user name.
 *   NONE    only AUTH, HELLO and QUIT: everybody else on a Unix socket, and
 *           TCP clients before AUTH when there is a password.
 * The group lookups may block (NSS), so they run on a worker, lazily, at
 * the connection's first command, never on the loop thread.
 */
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/err.h"
#include "server/srv.h"

int64_t srv_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t srv_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int srv_auth_init(struct srv *s)
{
	s->own_uid = geteuid();
	s->have_backup_group = 0;
	const char *g = s->cfg->backup_group ? s->cfg->backup_group : "coffer-backup";
	struct group gr, *res = NULL;
	char buf[16384];
	if (getgrnam_r(g, &gr, buf, sizeof buf, &res) == 0 && res) {
		s->backup_gid = gr.gr_gid;
		s->have_backup_group = 1;
	} else {
		fprintf(stderr, "cofferd: note: group '%s' does not exist; nobody is a backup operator\n", g);
	}
	return COFFER_OK;
}

static int in_group_list(const char *user, gid_t primary, gid_t want)
{
	int n = 64;
	for (int tries = 0; tries < 4; tries++) {
		gid_t *groups = malloc((size_t)n * sizeof *groups);
		if (groups == NULL)
			return 0;
		int got = n;
		if (getgrouplist(user, primary, groups, &got) >= 0) {
			int found = 0;
			for (int i = 0; i < got; i++)
				if (groups[i] == want)
					found = 1;
			free(groups);
			return found;
		}
		free(groups);
		if (got <= n || got > 65536)
			return 0;
		n = got;
	}
	return 0;
}

void srv_auth_role(struct srv *s, struct conn *c)
{
	if (c->role != ROLE_UNKNOWN)
		return;
	if (c->uid == 0 || c->uid == s->own_uid) {
		c->role = ROLE_FULL;
		return;
	}
	c->role = ROLE_NONE;
	if (!s->have_backup_group)
		return;
	if (c->gid == s->backup_gid) {
		c->role = ROLE_BACKUP;
		return;
	}
	struct passwd pw, *res = NULL;
	char buf[16384];
	if (getpwuid_r(c->uid, &pw, buf, sizeof buf, &res) == 0 && res &&
	    in_group_list(pw.pw_name, pw.pw_gid, s->backup_gid))
		c->role = ROLE_BACKUP;
}

/* Compare digests so that the time does not depend on where they differ
 * or on the length of the password. */
int srv_auth_check_password(struct srv *s, const char *pw, size_t len)
{
	const char *want = s->cfg->password;
	if (want == NULL)
		return 0;
	unsigned char a[EVP_MAX_MD_SIZE], b[EVP_MAX_MD_SIZE];
	unsigned na = 0, nb = 0;
	if (!EVP_Digest(pw, len, a, &na, EVP_sha256(), NULL) ||
	    !EVP_Digest(want, strlen(want), b, &nb, EVP_sha256(), NULL) || na != nb)
		return 0;
	return CRYPTO_memcmp(a, b, na) == 0;
}

/* At most RATE events per second from clients' doings, counted apart for
 * two classes: connections that broke the protocol or its deadlines (1012,
 * 1013), and the rest (refusals, wrong passwords, refused backups). So a
 * flood of idle or garbage connections cannot hide a password guess. The
 * first event after a suppressed stretch says how many were left out. */
#define RATE 10u

static int rate_take(struct srv *s, int id, unsigned *dropped)
{
	int k = id == COFFER_EV_PROTOCOL_ERROR || id == COFFER_EV_CLIENT_TIMEOUT ||
		id == COFFER_EV_TLS_HANDSHAKE_FAILED;
	int64_t now = srv_mono_us();
	int ok;
	pthread_mutex_lock(&s->rate_mu);
	if (now - s->rate_window_us[k] >= 1000000) {
		s->rate_window_us[k] = now;
		s->rate_count[k] = 0;
	}
	ok = s->rate_count[k] < RATE;
	if (ok) {
		s->rate_count[k]++;
		*dropped = s->rate_dropped[k];
		s->rate_dropped[k] = 0;
	} else {
		s->rate_dropped[k]++;
	}
	pthread_mutex_unlock(&s->rate_mu);
	return ok;
}

void srv_event_job(struct srv *s, struct job *j)
{
	coffer_event_write(s->ev, j->ev_id, j->ev_fields, j->ev_nfields, "%s", j->ev_msg ? j->ev_msg : "");
}

void srv_event_async(struct srv *s, int id, const char *k1, const char *v1, const char *k2,
		     const char *v2, const char *fmt, ...)
{
	unsigned dropped = 0;
	if (s->ev == NULL || !rate_take(s, id, &dropped))
		return;
	struct job *j = calloc(1, sizeof *j);
	if (j == NULL)
		return;
	j->kind = JOB_EVENT;
	j->ev_id = id;
	char msg[1200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (dropped) {
		size_t n = strlen(msg);
		snprintf(msg + n, sizeof msg - n, " (%u similar events were not logged)", dropped);
	}
	j->ev_msg = strdup(msg);
	const char *kv[4] = {k1, v1, k2, v2};
	for (int i = 0; i < 2; i++) {
		if (kv[2 * i] == NULL)
			break;
		j->ev_strs[2 * i] = strdup(kv[2 * i]);
		j->ev_strs[2 * i + 1] = strdup(kv[2 * i + 1] ? kv[2 * i + 1] : "");
		j->ev_fields[i].key = j->ev_strs[2 * i];
		j->ev_fields[i].value = j->ev_strs[2 * i + 1];
		j->ev_nfields++;
	}
	srv_pool_submit(s, j);
}
