/*
 * evlog.c - the store's event log: on-disk format, writer and reader.
 * The API is in include/coffer/event.h; the system journal side in journal.c.
 *
 * Files. DATADIR/events/events-NNNNNN.log, numbered from 000001 up (more
 * digits past 999999). A file is created whole (header written, fsynced,
 * renamed into place, directory fsynced: cf_durable_write_file) and then
 * only appended to; it is never renamed or rewritten. Old files are deleted
 * from the lowest number up so that at most keep_files remain.
 * DATADIR/events/lock is flock()ed by whoever creates or deletes files.
 *
 * File header (16 bytes):
 *   0  8  magic "COFFEREV"
 *   8  4  format version, 1
 *   12 4  reserved, 0
 *
 * Record (all integers little-endian):
 *   0  4  magic 0xFE56C5FF (bytes FF C5 56 FE; FF and FE never occur in
 *         UTF-8 text, so the magic cannot hide in a message or a field)
 *   4  4  payload length L, 27 <= L <= 65536
 *   8  8  XXH3-64 of the 4 length bytes followed by the L payload bytes
 *   16 L  payload:
 *         u64 seq, i64 time_us, u32 event id, u8 severity,
 *         str source, str message, u16 field count N,
 *         N x (str key, str value)
 *         where str = u16 length + that many bytes (UTF-8, no NUL).
 *   The payload must be consumed exactly by its contents.
 *
 * Writing. Each event is built in memory, written with one write(2) on a
 * descriptor opened O_APPEND, then fdatasync()ed before the call returns.
 * O_APPEND keeps the records of several processes whole and apart. Before
 * each write the writer moves to the newest file if another process started
 * one (or its file was deleted), and starts the next file (under the lock,
 * after checking again) when its file has reached max_file_bytes; so a file
 * exceeds the limit by at most one record per writer. seq is increasing per
 * writer; a writer starts after the highest seq in the newest file, so with
 * one writer at a time seq increases across restarts.
 *
 * Crash behaviour. A process killed in the middle of write(2), or a machine
 * that crashes before the fdatasync, can leave a partial record at the end
 * of a file; the next writer appends after it. Everything before it is
 * intact: records are never rewritten.
 *
 * Reading. Records are checked in order: magic, length bounds, the whole
 * record present, payload structure, checksum. A record failing any check is
 * reported (file, offset, why) and skipped: the reader scans forward for the
 * next offset holding the magic where a whole record validates, and goes on
 * from there. A torn tail is such a record with nothing valid after it.
 * Every length is bounded before it is used; memory use is fixed (a 256 KiB
 * window and a 64 KiB decode area) whatever the files hold. A reader racing
 * a writer may report the record being appended as cut short.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include <coffer/event.h>

#include "common/catalog.h"
#include "common/err.h"
#include "common/journal.h"
#include "common/os.h"
#include "common/timefmt.h"

#define EV_DIR "events"
#define EV_LOCK "lock"
#define EV_FILE_MAGIC "COFFEREV"
#define EV_FILE_VERSION 1u
#define EV_FILE_HDR 16u
#define EV_REC_HDR 16u
#define EV_MIN_PAYLOAD 27u /* 8 + 8 + 4 + 1 + 2 + 2 + 2 */
#define EV_MAX_PAYLOAD 65536u
#define EV_MAX_MESSAGE 4096
#define EV_MSG_BUF (EV_MAX_MESSAGE + 8) /* room to see a UTF-8 sequence cut at the limit */
#define EV_MAX_SOURCE 64
#define EV_MAX_FIELDS 32
#define EV_MAX_KEY 64
#define EV_MAX_VALUE 1024
#define EV_MAX_FIELDS_READ 256
#define EV_DEFAULT_MAX_BYTES (UINT64_C(4) << 20)
#define EV_DEFAULT_KEEP 8u
#define EV_MIN_KEEP 2u
#define RD_BUF (4 * (EV_REC_HDR + EV_MAX_PAYLOAD))
#define RD_SCAN (64 * 1024)

static const uint8_t rec_magic[4] = {0xFF, 0xC5, 0x56, 0xFE};

/* ---- little-endian encoding ---- */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t rec_checksum(XXH3_state_t *st, const uint8_t *lenbytes, const uint8_t *payload,
			     size_t len)
{
	XXH3_64bits_reset(st);
	XXH3_64bits_update(st, lenbytes, 4);
	XXH3_64bits_update(st, payload, len);
	return XXH3_64bits_digest(st);
}

/* Length of S cut to at most MAX bytes without splitting a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);
	if (n <= max)
		return n;
	n = max;
	while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
		n--;
	return n;
}

const char *coffer_severity_name(int severity)
{
	switch (severity) {
	case 3:
		return "error";
	case 4:
		return "warning";
	case 5:
		return "notice";
	case 6:
		return "info";
	default:
		return NULL;
	}
}

/* ---- the files of the log ---- */

static int file_path(char *out, const char *dir, unsigned num)
{
	char name[32];
	snprintf(name, sizeof name, "events-%06u.log", num);
	return cf_path_join(out, PATH_MAX, dir, name);
}

/* "events-NNNNNN.log" -> NNNNNN (1 .. UINT_MAX). */
static bool parse_name(const char *name, unsigned *num)
{
	if (strncmp(name, "events-", 7) != 0)
		return false;
	const char *p = name + 7;
	unsigned long long v = 0;
	int nd = 0;
	for (; isdigit((unsigned char)*p); p++) {
		if (++nd > 10)
			return false;
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (nd == 0 || strcmp(p, ".log") != 0 || v == 0 || v > UINT_MAX)
		return false;
	*num = (unsigned)v;
	return true;
}

static int cmp_unsigned(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
	return x < y ? -1 : x > y;
}

/* The numbers of the log files in DIR, ascending, in a malloc'ed array. */
static int list_files(const char *dir, unsigned **out, size_t *count)
{
	unsigned *v = NULL;
	size_t n = 0, cap = 0;
	int rc = COFFER_OK;
	*out = NULL;
	*count = 0;
	DIR *d = opendir(dir);
	if (d == NULL)
		return cf_error_sys("list the directory", dir, -1);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		unsigned num;
		if (!parse_name(de->d_name, &num))
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			unsigned *nv = realloc(v, ncap * sizeof *nv);
			if (nv == NULL) {
				rc = CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = dir),
					      "no memory to list the event log files in %s", dir);
				goto err;
			}
			v = nv;
			cap = ncap;
		}
		v[n++] = num;
	}
	closedir(d);
	if (n > 1)
		qsort(v, n, sizeof *v, cmp_unsigned);
	*out = v;
	*count = n;
	return COFFER_OK;
err:
	closedir(d);
	free(v);
	return rc;
}

/* ---- writer ---- */

struct coffer_evlog {
	pthread_mutex_t mu;
	char *dir;               /* DATADIR/events; NULL without a store */
	int fd;                  /* the current file, opened O_APPEND; -1 if none */
	unsigned fileno;         /* its number */
	char path[PATH_MAX];     /* its path */
	uint64_t seq;            /* seq of the last event */
	uint64_t max_file_bytes;
	unsigned keep_files;
	unsigned flags;
	XXH3_state_t *xxh;
	char keys[EV_MAX_FIELDS][EV_MAX_KEY + 1]; /* normalized keys of the event */
	struct cf_jfield jf[EV_MAX_FIELDS];       /* the event's fields */
	uint8_t rec[EV_REC_HDR + EV_MAX_PAYLOAD];  /* the record being written */
};

static int lock_events_dir(const char *dir, int *lockfd)
{
	char path[PATH_MAX];
	CF_RET(cf_path_join(path, sizeof path, dir, EV_LOCK));
	CF_RET(cf_open(lockfd, path, O_RDWR | O_CREAT, 0600));
	while (cf_os.flock(*lockfd, LOCK_EX) != 0) {
		if (errno == EINTR)
			continue;
		int rc = cf_error_sys("lock", path, -1);
		cf_os.close(*lockfd);
		*lockfd = -1;
		return rc;
	}
	return COFFER_OK;
}

/* Is the header of the open file FD one this version appends to? */
static bool header_ok(int fd)
{
	uint8_t h[EV_FILE_HDR];
	ssize_t r = cf_os.pread(fd, h, sizeof h, 0);
	return r == (ssize_t)sizeof h && memcmp(h, EV_FILE_MAGIC, 8) == 0 &&
	       get32(h + 8) == EV_FILE_VERSION;
}

static int create_file(const char *path)
{
	uint8_t h[EV_FILE_HDR] = {0};
	memcpy(h, EV_FILE_MAGIC, 8);
	put32(h + 8, EV_FILE_VERSION);
	int e = CF_INJECT("evlog.create");
	if (e) {
		errno = e;
		return cf_error_sys("create the event log file", path, -1);
	}
	return cf_durable_write_file(path, h, sizeof h, 0600);
}

/* Delete the oldest files so that KEEP remain, NUMS (ascending) plus NEWEST
 * being the files. Best effort: a file that cannot be deleted stays, and the
 * event being written is not failed for it. */
static void prune(const char *dir, const unsigned *nums, size_t n, unsigned newest, unsigned keep)
{
	size_t total = n + 1, removed = 0;
	for (size_t i = 0; i < n && total > keep; i++) {
		char path[PATH_MAX];
		if (nums[i] >= newest || file_path(path, dir, nums[i]) != COFFER_OK)
			continue;
		if (cf_os.unlink(path) == 0 || errno == ENOENT) {
			total--;
			removed++;
		}
	}
	if (removed)
		(void)cf_fsync_dir(dir);
}

/* Under the directory lock: open the newest file, or start the next one if
 * there is none, it is full or it is not of this format; delete beyond
 * keep_files. Leaves the result as the current file. */
static int evlog_switch(coffer_evlog *log)
{
	int lockfd = -1, fd = -1, rc;
	unsigned *nums = NULL, cur;
	size_t n = 0;
	char path[PATH_MAX];
	CF_GO(rc, lock_events_dir(log->dir, &lockfd));
	CF_GO(rc, list_files(log->dir, &nums, &n));
	cur = n ? nums[n - 1] : 0;
	if (cur != 0) {
		struct stat st;
		CF_GO(rc, file_path(path, log->dir, cur));
		CF_GO(rc, cf_open(&fd, path, O_RDWR | O_APPEND, 0)); /* RDWR: header_ok reads */
		if (cf_os.fstat(fd, &st) != 0) {
			rc = cf_error_sys("stat", path, -1);
			goto err;
		}
		if ((uint64_t)st.st_size >= log->max_file_bytes || !header_ok(fd)) {
			cf_os.close(fd);
			fd = -1;
		}
	}
	if (fd < 0) {
		if (cur == UINT_MAX) {
			rc = CF_ERROR(COFFER_E_LIMIT, CF_OBJ(.file = log->dir),
				      "the event log in %s has reached the last file number", log->dir);
			goto err;
		}
		cur++;
		CF_GO(rc, file_path(path, log->dir, cur));
		CF_GO(rc, create_file(path));
		CF_GO(rc, cf_open(&fd, path, O_WRONLY | O_APPEND, 0));
		prune(log->dir, nums, n, cur, log->keep_files);
	}
	if (log->fd >= 0)
		cf_os.close(log->fd);
	log->fd = fd;
	log->fileno = cur;
	memcpy(log->path, path, sizeof path);
	fd = -1;
	rc = COFFER_OK;
err:
	if (fd >= 0)
		cf_os.close(fd);
	free(nums);
	if (lockfd >= 0)
		cf_os.close(lockfd); /* releases the flock */
	return rc;
}

/* Make log->fd the file this event belongs in. */
static int ensure_current(coffer_evlog *log)
{
	struct stat st;
	char next[PATH_MAX];
	if (log->fd < 0)
		return evlog_switch(log);
	if (cf_os.fstat(log->fd, &st) != 0)
		return cf_error_sys("stat", log->path, -1);
	if (st.st_nlink == 0 || (uint64_t)st.st_size >= log->max_file_bytes)
		return evlog_switch(log);
	CF_RET(file_path(next, log->dir, log->fileno + 1));
	if (cf_os.stat(next, &st) == 0)
		return evlog_switch(log);
	return COFFER_OK;
}

static uint8_t *put_str(uint8_t *p, const char *s, size_t len)
{
	put16(p, (uint16_t)len);
	memcpy(p + 2, s, len);
	return p + 2 + len;
}

/* Build the record of one event in log->rec; returns its size. The limits
 * keep it far below EV_MAX_PAYLOAD (about 39 KiB at most). */
static size_t build_record(coffer_evlog *log, const struct coffer_event_info *info, uint64_t seq,
			   int64_t time_us, const char *msg, size_t nf)
{
	uint8_t *start = log->rec + EV_REC_HDR, *p = start;
	put64(p, seq);
	put64(p + 8, (uint64_t)time_us);
	put32(p + 16, (uint32_t)info->id);
	p[20] = (uint8_t)info->severity;
	p += 21;
	p = put_str(p, info->source, utf8_cut(info->source, EV_MAX_SOURCE));
	p = put_str(p, msg, strlen(msg));
	put16(p, (uint16_t)nf);
	p += 2;
	for (size_t i = 0; i < nf; i++) {
		p = put_str(p, log->jf[i].key, strlen(log->jf[i].key));
		p = put_str(p, log->jf[i].value, log->jf[i].value_len);
	}
	size_t len = (size_t)(p - start);
	memcpy(log->rec, rec_magic, 4);
	put32(log->rec + 4, (uint32_t)len);
	put64(log->rec + 8, rec_checksum(log->xxh, log->rec + 4, start, len));
	return EV_REC_HDR + len;
}

/* Normalize FIELDS into log->keys/log->jf; returns how many were kept. */
static size_t normalize_fields(coffer_evlog *log, const coffer_evfield *fields, size_t nfields)
{
	size_t nf = 0;
	for (size_t i = 0; i < nfields && nf < EV_MAX_FIELDS; i++) {
		if (fields[i].key == NULL)
			continue;
		char *k = log->keys[nf];
		size_t kl = 0;
		for (const char *s = fields[i].key; *s && kl < EV_MAX_KEY; s++) {
			unsigned char c = (unsigned char)*s;
			k[kl++] = (char)(islower(c) ? toupper(c) : (isupper(c) || isdigit(c)) ? c : '_');
		}
		k[kl] = '\0';
		if (kl == 0)
			continue;
		const char *v = fields[i].value ? fields[i].value : "";
		log->jf[nf].key = k;
		log->jf[nf].value = v;
		log->jf[nf].value_len = utf8_cut(v, EV_MAX_VALUE);
		nf++;
	}
	return nf;
}

static int append_record(coffer_evlog *log, size_t n)
{
	int e;
	CF_RET(ensure_current(log));
	if ((e = CF_INJECT("evlog.write")) != 0) {
		errno = e;
		return cf_error_sys("append to the event log", log->path, -1);
	}
	CF_RET(cf_write_full(log->fd, log->path, log->rec, n));
	if ((e = CF_INJECT("evlog.fsync")) != 0) {
		errno = e;
		return cf_error_sys("fdatasync", log->path, -1);
	}
	return cf_fdatasync(log->fd, log->path);
}

/* Write one event: MSG (a buffer of EV_MSG_BUF bytes, cut here). */
static int emit(coffer_evlog *log, const struct coffer_event_info *info, char *msg,
		const coffer_evfield *fields, size_t nfields)
{
	int rc = COFFER_OK;
	msg[utf8_cut(msg, EV_MAX_MESSAGE)] = '\0';
	pthread_mutex_lock(&log->mu);
	uint64_t seq = ++log->seq;
	int64_t now = cf_time_now_us();
	size_t nf = normalize_fields(log, fields, nfields);
	if (log->dir != NULL)
		rc = append_record(log, build_record(log, info, seq, now, msg, nf));
	if (!(log->flags & COFFER_EVLOG_NO_SYSTEM))
		cf_journal_send(info, seq, msg, log->jf, nf);
	pthread_mutex_unlock(&log->mu);
	return rc;
}

static const struct coffer_event_info *event_info(const coffer_evlog *log, int event_id)
{
	const struct coffer_event_info *info = coffer_event_info_get(event_id);
	if (log == NULL)
		CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL, "no event log handle given for event %d",
			 event_id);
	else if (info == NULL)
		CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL,
			 "event id %d is not in the event catalog (catalog/events.ini)", event_id);
	return log ? info : NULL;
}

int coffer_event_write(coffer_evlog *log, int event_id, const coffer_evfield *fields,
		       size_t nfields, const char *fmt, ...)
{
	char msg[EV_MSG_BUF];
	const struct coffer_event_info *info = event_info(log, event_id);
	if (info == NULL)
		return COFFER_E_INVALID_ARGUMENT;
	if (fmt != NULL) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof msg, fmt, ap);
		va_end(ap);
	} else {
		snprintf(msg, sizeof msg, "%s", info->message);
	}
	return emit(log, info, msg, fields, fields ? nfields : 0);
}

int coffer_event_error(coffer_evlog *log, int event_id, const coffer_error *err,
		       const coffer_evfield *extra, size_t nextra)
{
	char msg[EV_MSG_BUF], num[6][24];
	coffer_evfield f[EV_MAX_FIELDS];
	size_t n = 0;
	const struct coffer_event_info *info = event_info(log, event_id);
	if (info == NULL)
		return COFFER_E_INVALID_ARGUMENT;
	if (err == NULL)
		err = coffer_error_last();
	/* ERR may be the thread's record, which a failure below overwrites:
	 * take copies first. */
	coffer_error e = *err;
	snprintf(msg, sizeof msg, "%s", e.message[0] ? e.message : coffer_code_message(e.code));
	snprintf(num[0], sizeof num[0], "%d", e.code);
	f[n++] = (coffer_evfield){"CODE", num[0]};
	if (coffer_code_name(e.code) != NULL)
		f[n++] = (coffer_evfield){"CODE_NAME", coffer_code_name(e.code)};
	if (e.file[0])
		f[n++] = (coffer_evfield){"FILE", e.file};
	if (e.page != COFFER_NONE) {
		snprintf(num[1], sizeof num[1], "%lld", (long long)e.page);
		f[n++] = (coffer_evfield){"PAGE", num[1]};
	}
	if (e.generation != COFFER_NONE) {
		snprintf(num[2], sizeof num[2], "%lld", (long long)e.generation);
		f[n++] = (coffer_evfield){"GENERATION", num[2]};
	}
	if (e.offset != COFFER_NONE) {
		snprintf(num[3], sizeof num[3], "%lld", (long long)e.offset);
		f[n++] = (coffer_evfield){"OFFSET", num[3]};
	}
	if (e.sys_errno) {
		snprintf(num[4], sizeof num[4], "%d", e.sys_errno);
		f[n++] = (coffer_evfield){"ERRNO", num[4]};
	}
	if (e.peer[0])
		f[n++] = (coffer_evfield){"PEER", e.peer};
	for (size_t i = 0; extra != NULL && i < nextra && n < EV_MAX_FIELDS; i++)
		f[n++] = extra[i];
	return emit(log, info, msg, f, n);
}

/* ---- reader ---- */

struct rd {
	const char *path;
	int fd;
	uint64_t size;  /* file size when opened (less if it shrank) */
	uint8_t *buf;   /* RD_BUF bytes: the file from offset base */
	uint64_t base;
	size_t len;
	XXH3_state_t *xxh;
	char *strs;     /* decoded strings, NUL-terminated */
	coffer_evfield fields[EV_MAX_FIELDS_READ];
	int (*on_event)(const coffer_event *, void *);
	int (*on_damage)(const char *, uint64_t, const char *, void *);
	void *arg;
};

#define RD_STRS (EV_MAX_PAYLOAD + 2 * EV_MAX_FIELDS_READ + 16)

/* Point *P at the file's bytes [OFF, OFF + WANT) (WANT <= RD_BUF), reading
 * them as needed; *GOT is how many exist (fewer at the end of the file). */
static int rd_window(struct rd *r, uint64_t off, size_t want, const uint8_t **p, size_t *got)
{
	*p = NULL;
	*got = 0;
	if (off >= r->size)
		return COFFER_OK;
	if (want > r->size - off)
		want = (size_t)(r->size - off);
	if (off < r->base || off + want > r->base + r->len) {
		size_t n = RD_BUF, done = 0;
		if (n > r->size - off)
			n = (size_t)(r->size - off);
		while (done < n) {
			ssize_t k = cf_os.pread(r->fd, r->buf + done, n - done, (off_t)(off + done));
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				return cf_error_sys("read", r->path, (int64_t)(off + done));
			if (k == 0) { /* the file shrank under us */
				r->size = off + done;
				break;
			}
			done += (size_t)k;
		}
		r->base = off;
		r->len = done;
		if (want > done)
			want = done;
	}
	*p = r->buf + (off - r->base);
	*got = want;
	return COFFER_OK;
}

struct cursor {
	const uint8_t *p, *end;
	char *out; /* next free byte of the string area */
};

static bool take(struct cursor *c, size_t n, const uint8_t **out)
{
	if ((size_t)(c->end - c->p) < n)
		return false;
	*out = c->p;
	c->p += n;
	return true;
}

static bool take_str(struct cursor *c, const char **out)
{
	const uint8_t *l, *s;
	if (!take(c, 2, &l) || !take(c, get16(l), &s))
		return false;
	size_t n = get16(l);
	if (memchr(s, 0, n) != NULL)
		return false;
	memcpy(c->out, s, n);
	c->out[n] = '\0';
	*out = c->out;
	c->out += n + 1;
	return true;
}

/* Decode PAYLOAD into EV; NULL if well formed, else why not. */
static const char *decode(struct rd *r, const uint8_t *payload, size_t len, coffer_event *ev)
{
	struct cursor c = {payload, payload + len, r->strs};
	const uint8_t *fixed, *nf;
	memset(ev, 0, sizeof *ev);
	if (!take(&c, 21, &fixed))
		return "payload shorter than its fixed part";
	ev->seq = get64(fixed);
	ev->time_us = (int64_t)get64(fixed + 8);
	uint32_t id = get32(fixed + 16);
	if (id > INT_MAX)
		return "event id out of range";
	ev->id = (int)id;
	ev->severity = fixed[20];
	if (!take_str(&c, &ev->source) || !take_str(&c, &ev->message))
		return "source or message runs past the payload";
	if (!take(&c, 2, &nf))
		return "field count missing";
	size_t n = get16(nf);
	if (n > EV_MAX_FIELDS_READ)
		return "too many fields";
	for (size_t i = 0; i < n; i++)
		if (!take_str(&c, &r->fields[i].key) || !take_str(&c, &r->fields[i].value))
			return "a field runs past the payload";
	if (c.p != c.end)
		return "payload longer than its contents";
	ev->nfields = n;
	ev->fields = r->fields;
	return NULL;
}

enum rec_state { REC_OK, REC_END, REC_BAD };

/* Check the record at OFF. REC_OK: *EV decoded and *RECLEN its size. REC_BAD:
 * WHY says why (unless QUIET, used while scanning for the next record). */
static int check_record(struct rd *r, uint64_t off, bool quiet, enum rec_state *st,
			size_t *reclen, coffer_event *ev, char *why, size_t whycap)
{
	const uint8_t *p;
	size_t got;
	*st = REC_BAD;
	CF_RET(rd_window(r, off, EV_REC_HDR, &p, &got));
	if (got == 0) {
		*st = REC_END;
		return COFFER_OK;
	}
	if (got < 4) {
		if (!quiet)
			snprintf(why, whycap, "record cut short: %zu bytes at the end of the file", got);
		return COFFER_OK;
	}
	if (memcmp(p, rec_magic, 4) != 0) {
		if (!quiet)
			snprintf(why, whycap, "no record starts here (bad magic)");
		return COFFER_OK;
	}
	if (got < EV_REC_HDR) {
		if (!quiet)
			snprintf(why, whycap, "record cut short: %zu of at least %u header bytes present",
				 got, EV_REC_HDR);
		return COFFER_OK;
	}
	uint32_t len = get32(p + 4);
	uint64_t stored = get64(p + 8);
	if (len < EV_MIN_PAYLOAD || len > EV_MAX_PAYLOAD) {
		if (!quiet)
			snprintf(why, whycap, "record length %u outside %u..%u", len, EV_MIN_PAYLOAD,
				 EV_MAX_PAYLOAD);
		return COFFER_OK;
	}
	CF_RET(rd_window(r, off, EV_REC_HDR + len, &p, &got));
	if (got < EV_REC_HDR + len) {
		if (!quiet)
			snprintf(why, whycap, "record cut short: %zu of %u bytes present", got,
				 EV_REC_HDR + len);
		return COFFER_OK;
	}
	const char *bad = decode(r, p + EV_REC_HDR, len, ev);
	if (bad != NULL && quiet)
		return COFFER_OK; /* cheap rejection while scanning */
	uint64_t computed = rec_checksum(r->xxh, p + 4, p + EV_REC_HDR, len);
	if (computed != stored) {
		if (!quiet)
			snprintf(why, whycap, "checksum mismatch (stored %016llx, computed %016llx)",
				 (unsigned long long)stored, (unsigned long long)computed);
		return COFFER_OK;
	}
	if (bad != NULL) {
		snprintf(why, whycap, "malformed record: %s", bad);
		return COFFER_OK;
	}
	*reclen = EV_REC_HDR + len;
	*st = REC_OK;
	return COFFER_OK;
}

/* Find the first offset >= FROM where a valid record starts. */
static int resync(struct rd *r, uint64_t from, bool *found, uint64_t *at)
{
	uint64_t p = from;
	*found = false;
	for (;;) {
		const uint8_t *w;
		size_t got;
		CF_RET(rd_window(r, p, RD_SCAN, &w, &got));
		if (got < 4)
			return COFFER_OK;
		const uint8_t *hit = memmem(w, got, rec_magic, 4);
		if (hit == NULL) {
			p += got - 3;
			continue;
		}
		uint64_t cand = p + (uint64_t)(hit - w);
		enum rec_state st;
		size_t len;
		coffer_event ev;
		char why[4];
		CF_RET(check_record(r, cand, true, &st, &len, &ev, why, sizeof why));
		if (st == REC_OK) {
			*found = true;
			*at = cand;
			return COFFER_OK;
		}
		p = cand + 1;
	}
}

static int read_file(struct rd *r, const char *path)
{
	struct stat st;
	char why[160];
	int rc = COFFER_OK;
	uint64_t off = EV_FILE_HDR;
	bool found;
	r->path = path;
	r->base = 0;
	r->len = 0;
	if (cf_open(&r->fd, path, O_RDONLY, 0) != COFFER_OK) {
		if (coffer_error_last()->sys_errno == ENOENT) { /* deleted by a writer */
			coffer_error_clear();
			return COFFER_OK;
		}
		return coffer_error_last()->code;
	}
	if (cf_os.fstat(r->fd, &st) != 0) {
		rc = cf_error_sys("stat", path, -1);
		goto err;
	}
	r->size = (uint64_t)st.st_size;

	const uint8_t *h;
	size_t got;
	CF_GO(rc, rd_window(r, 0, EV_FILE_HDR, &h, &got));
	if (got < EV_FILE_HDR || memcmp(h, EV_FILE_MAGIC, 8) != 0) {
		if (r->on_damage &&
		    (rc = r->on_damage(path, 0, got == 0 ? "empty file (no header)"
							 : "file header missing or damaged",
				       r->arg)) != 0)
			goto err;
		CF_GO(rc, resync(r, 0, &found, &off));
		if (!found)
			goto err;
	} else if (get32(h + 8) != EV_FILE_VERSION) {
		snprintf(why, sizeof why, "format version %u is not supported; file skipped",
			 get32(h + 8));
		if (r->on_damage)
			rc = r->on_damage(path, 8, why, r->arg);
		goto err;
	}
	for (;;) {
		enum rec_state rs;
		size_t len = 0;
		coffer_event ev;
		CF_GO(rc, check_record(r, off, false, &rs, &len, &ev, why, sizeof why));
		if (rs == REC_END)
			break;
		if (rs == REC_OK) {
			ev.file = path;
			ev.offset = off;
			if (r->on_event && (rc = r->on_event(&ev, r->arg)) != 0)
				goto err;
			off += len;
			continue;
		}
		if (r->on_damage && (rc = r->on_damage(path, off, why, r->arg)) != 0)
			goto err;
		CF_GO(rc, resync(r, off + 1, &found, &off));
		if (!found)
			break;
	}
err: /* also the way out: a callback's stop or the end of the file */
	cf_os.close(r->fd);
	r->fd = -1;
	return rc;
}

static void rd_free(struct rd *r)
{
	if (r == NULL)
		return;
	free(r->buf);
	free(r->strs);
	if (r->xxh)
		XXH3_freeState(r->xxh);
	free(r);
}

static struct rd *rd_new(void)
{
	struct rd *r = calloc(1, sizeof *r);
	if (r == NULL)
		return NULL;
	r->fd = -1;
	r->buf = malloc(RD_BUF);
	r->strs = malloc(RD_STRS);
	r->xxh = XXH3_createState();
	if (!r->buf || !r->strs || !r->xxh) {
		rd_free(r);
		return NULL;
	}
	return r;
}

/* Check that DATADIR is a directory. */
static int check_datadir(const char *datadir)
{
	struct stat st;
	if (datadir == NULL || *datadir == '\0')
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL, "no data directory given");
	if (cf_os.stat(datadir, &st) != 0) {
		if (errno == ENOENT)
			return CF_ERROR(COFFER_E_FILE_NOT_FOUND,
					CF_OBJ(.file = datadir, .sys_errno = ENOENT),
					"data directory %s does not exist", datadir);
		return cf_error_sys("open the data directory", datadir, -1);
	}
	if (!S_ISDIR(st.st_mode))
		return CF_ERROR(COFFER_E_NOT_A_DIRECTORY, CF_OBJ(.file = datadir),
				"data directory %s is not a directory", datadir);
	return COFFER_OK;
}

int coffer_evlog_read(const char *datadir, int (*on_event)(const coffer_event *ev, void *arg),
		      int (*on_damage)(const char *file, uint64_t offset, const char *why, void *arg),
		      void *arg)
{
	char dir[PATH_MAX], path[PATH_MAX];
	struct stat st;
	unsigned *nums = NULL;
	size_t n = 0;
	struct rd *r = NULL;
	int rc;
	CF_RET(check_datadir(datadir));
	CF_RET(cf_path_join(dir, sizeof dir, datadir, EV_DIR));
	if (cf_os.stat(dir, &st) != 0) {
		if (errno == ENOENT)
			return COFFER_OK; /* no event was ever written */
		return cf_error_sys("open the event log directory", dir, -1);
	}
	if (!S_ISDIR(st.st_mode))
		return CF_ERROR(COFFER_E_NOT_A_DIRECTORY, CF_OBJ(.file = dir),
				"event log directory %s is not a directory", dir);
	CF_GO(rc, list_files(dir, &nums, &n));
	r = rd_new();
	if (r == NULL) {
		rc = CF_ERROR(COFFER_E_NOMEM, CF_OBJ(.file = dir), "no memory to read the event log");
		goto err;
	}
	r->on_event = on_event;
	r->on_damage = on_damage;
	r->arg = arg;
	for (size_t i = 0; i < n; i++) {
		CF_GO(rc, file_path(path, dir, nums[i]));
		CF_GO(rc, read_file(r, path));
	}
	rc = COFFER_OK;
err:
	rd_free(r);
	free(nums);
	return rc;
}

/* ---- open / close ---- */

static int max_seq_cb(const coffer_event *ev, void *arg)
{
	uint64_t *max = arg;
	if (ev->seq > *max)
		*max = ev->seq;
	return 0;
}

/* The highest seq in the newest file that has a record (two files at most). */
static uint64_t last_seq(const coffer_evlog *log)
{
	uint64_t max = 0;
	char path[PATH_MAX];
	struct rd *r = rd_new();
	if (r == NULL)
		return 0;
	r->on_event = max_seq_cb;
	r->arg = &max;
	for (unsigned num = log->fileno; num > 0 && num + 2 > log->fileno && max == 0; num--)
		if (file_path(path, log->dir, num) == COFFER_OK)
			(void)read_file(r, path);
	rd_free(r);
	return max;
}

int coffer_evlog_open(coffer_evlog **out, const char *datadir, const coffer_evlog_options *opts)
{
	coffer_evlog_options o = COFFER_EVLOG_OPTIONS_INIT;
	char dir[PATH_MAX];
	coffer_evlog *log = NULL;
	int rc;
	if (out == NULL)
		return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL, "no place for the event log handle");
	*out = NULL;
	if (opts != NULL) {
		if (opts->version != COFFER_EVLOG_OPTIONS_VERSION)
			return CF_ERROR(COFFER_E_INVALID_ARGUMENT, NULL,
					"event log options of version %u; this library knows version %u",
					opts->version, COFFER_EVLOG_OPTIONS_VERSION);
		o = *opts;
	}
	if (datadir != NULL) {
		CF_RET(check_datadir(datadir));
		CF_RET(cf_path_join(dir, sizeof dir, datadir, EV_DIR));
	}
	log = calloc(1, sizeof *log);
	if (log == NULL)
		return CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the event log");
	pthread_mutex_init(&log->mu, NULL);
	log->fd = -1;
	log->max_file_bytes = o.max_file_bytes ? o.max_file_bytes : EV_DEFAULT_MAX_BYTES;
	log->keep_files = o.keep_files ? o.keep_files : EV_DEFAULT_KEEP;
	if (log->keep_files < EV_MIN_KEEP)
		log->keep_files = EV_MIN_KEEP;
	log->flags = o.flags;
	log->xxh = XXH3_createState();
	if (log->xxh == NULL) {
		rc = CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the event log");
		goto err;
	}
	if (datadir != NULL) {
		log->dir = strdup(dir);
		if (log->dir == NULL) {
			rc = CF_ERROR(COFFER_E_NOMEM, NULL, "no memory for the event log");
			goto err;
		}
		CF_GO(rc, cf_mkdir_p(log->dir, 0700));
		CF_GO(rc, evlog_switch(log));
		log->seq = last_seq(log);
	}
	*out = log;
	return COFFER_OK;
err:
	coffer_evlog_close(log);
	return rc;
}

void coffer_evlog_close(coffer_evlog *log)
{
	if (log == NULL)
		return;
	if (log->fd >= 0)
		cf_os.close(log->fd);
	if (log->xxh)
		XXH3_freeState(log->xxh);
	pthread_mutex_destroy(&log->mu);
	free(log->dir);
	free(log);
}
