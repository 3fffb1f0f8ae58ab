/*
 * proto.h - the backup protocol: framed, versioned, checksummed.
 *
 * A backup runs on an ordinary cofferd connection (Unix socket or TCP, TLS
 * or not). After authentication the client sends the RESP command
 *
 *     COFFER.BACKUP <version> <type> [FASTPATH] [ZEROS] [RATE <bytes/s>]
 *                                 (type: full|incremental|differential|copy;
 *                                  RATE: pace the data, srv_backup.h)
 *
 * and the server answers either a RESP error ("-ERR ... (COFFER_E_...)")
 * or "+COFFER-BACKUP <version>"; from then on both sides speak frames:
 *
 *   frame = header (24 bytes, little-endian) + payload
 *     0  4 magic "CBK1"
 *     4  2 type (BKF_*)
 *     6  2 flags (0)
 *     8  4 payload length (at most CF_BKP_MAX_PAYLOAD)
 *    12  4 reserved (0)
 *    16  8 XXH3-64 of the header (this field zero) and the payload
 *
 * Server -> client, in this order:
 *   INFO        the backup's identity (struct in proto.c, see cf_bkp_info_*)
 *   FILE        "coffer.db", size   (full and copy only)
 *   DATA...     the pages, the header snapshot first (at most 1 MiB each)
 *   FILE_END    size
 *   ROLLED      the last log generation (the log was rolled)
 *   FILE, DATA..., FILE_END   for each generation "log/NNNNNNNNNN.log"
 *   (then waits for the client's CONFIRM)
 *   END         the result: generations truncated, end time
 * Client -> server:
 *   CONFIRM     the last generation the client has durably stored
 *   ABORT       give up (the server aborts the backup, changes nothing)
 * Either side, instead of the next frame:
 *   ERROR       a catalog code and its detail: message, file, page,
 *               generation, offset, errno, peer - the receiver raises it as
 *               its own error, so the client prints what failed on the
 *               server, on which object, and what to do.
 * A broken checksum, an unknown type or an oversized length is
 * COFFER_E_PROTOCOL; a connection that ends early is
 * COFFER_E_CONNECTION_LOST; the server then aborts the backup.
 */
#ifndef COFFER_BACKUP_PROTO_H
#define COFFER_BACKUP_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include <coffer/backup.h>

#define CF_BKP_VERSION 1u
#define CF_BKP_HDR 24u
#define CF_BKP_MAX_PAYLOAD ((uint32_t)(1u << 20) + 4096u)
#define CF_BKP_DATA_MAX ((uint32_t)1u << 20)

enum cf_bkf_type {
	BKF_INFO = 1,
	BKF_FILE = 2,
	BKF_DATA = 3,
	BKF_FILE_END = 4,
	BKF_ERROR = 5,
	BKF_ROLLED = 6,
	BKF_CONFIRM = 7,
	BKF_END = 8,
	BKF_ABORT = 9,
	BKF_FILE_FD = 10, /* fast path: FILE payload, the file's descriptor attached */
	BKF_FD_OK = 11,   /* client: read it through the descriptor; data follows no more */
	BKF_FD_FAIL = 12, /* client: could not use it (reason text); send it as DATA */
	BKF_ZEROS = 13,   /* in place of DATA: N zero bytes of the file (u32 N); negotiated */
};
#define BKF_LAST BKF_ZEROS

/* Fast path (Unix sockets only, negotiated): the client asks with
 * "COFFER.BACKUP 1 TYPE FASTPATH"; a server that agrees answers
 * "+COFFER-BACKUP 1 FASTPATH". Then each log generation comes as FILE_FD
 * with the open file's descriptor passed over the connection itself
 * (SCM_RIGHTS) - never through a name (no /tmp, shared memory, PID or
 * session-keyed object: the trap of KB Q245664). The client checks the
 * descriptor (it arrived, it is a regular file of the announced size),
 * copies the file from it, and answers FD_OK; the server sends nothing for
 * that file until this confirmation. If anything fails, the client answers
 * FD_FAIL with the reason at once, the server logs event 1204 and sends the
 * file over the plain stream: a failed fast path never fails the backup. */
#define CF_BKP_FASTPATH 0x100u /* flag or-ed into the type handed to the session */

/* Zero runs (negotiated, any transport): the client asks with the option
 * ZEROS, a server that agrees adds " ZEROS" to its answer; then a DATA
 * payload that would be all zero bytes (the unused tail of a log
 * generation, a page never written) is sent as a ZEROS frame of 4 bytes
 * instead: its length, 1..CF_BKP_DATA_MAX. The client puts that many zero
 * bytes in the file; the set, its SHA-256 and its blocks are the same as
 * with DATA. The server looks for zeroes in units of 64 KiB (srv_backup.c):
 * over TLS or a slow link, a 16 MiB generation that holds 40 KiB of records
 * costs one 64 KiB DATA frame and 16 ZEROS frames of 28 bytes. */
#define CF_BKP_ZEROS 0x200u
#define CF_BKP_OPTIONS (CF_BKP_FASTPATH | CF_BKP_ZEROS)

/* A connected byte stream: a blocking socket, with TLS when ssl != NULL.
 * Each read or write waits at most timeout_ms (0: forever), enforced with
 * SO_RCVTIMEO/SO_SNDTIMEO rather than a poll before every call: a TLS
 * stream moves 16 KiB records, and a poll per record halved throughput. */
struct cf_stream {
	int fd;
	SSL *ssl;
	char peer[128];
	int timeout_ms;
	uint64_t bytes_in, bytes_out;
	int applied_ms; /* the timeout set on the socket (SO_RCVTIMEO/SO_SNDTIMEO), internal */
};

/* TLS 1.3 suites in the order cofferd and coffer prefer them. */
#define CF_TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

/* Make a TLS stream fit for bulk transfer on a blocking socket: no partial
 * writes (an SSL_write sends all of a frame), no buffer release between
 * records, and - unless kernel TLS sends - the encrypted records go through
 * a CF_TLS_WBUF-byte write buffer, so a 1 MiB frame leaves in 16 writes
 * instead of 64 of one 16 KiB record each; cf_stream_write flushes
 * it after every call. Returns 1 when kernel TLS sends, else 0. */
int cf_stream_tls_bulk(struct cf_stream *s);
#define CF_TLS_WBUF (64u << 10)
/* The client's TLS read buffer (SSL_CTX_set_default_read_buffer_len). */
#define CF_TLS_RBUF (64u << 10)

/* Errors: COFFER_E_CONNECTION_LOST (peer closed, reset), COFFER_E_TIMEOUT,
 * COFFER_E_TLS, with the peer named. */
int cf_stream_write(struct cf_stream *s, const void *p, size_t n);
int cf_stream_read(struct cf_stream *s, void *p, size_t n);
/* Read one line ending in "\r\n" (at most cap-1 bytes, NUL-terminated,
 * without the CRLF). Errors: as cf_stream_read, COFFER_E_PROTOCOL if longer. */
int cf_stream_read_line(struct cf_stream *s, char *buf, size_t cap);

/* Send one frame whose payload is P1 then P2 (either may be empty). On a
 * plain socket the header and the pieces leave in one sendmsg; over TLS a
 * small frame is one SSL_write (one record). */
int cf_bkp_send(struct cf_stream *s, uint16_t type, const void *p1, size_t n1, const void *p2,
		size_t n2);
/* Send one frame built in place: FRAME has CF_BKP_HDR bytes of room for the
 * header, then the N bytes of payload; the header is written there and the
 * whole frame leaves in one write (one SSL_write over TLS: full records,
 * no small record for the header). */
int cf_bkp_send_frame(struct cf_stream *s, uint16_t type, uint8_t *frame, size_t n);
/* Receive one frame into BUF (CF_BKP_MAX_PAYLOAD bytes). An ERROR frame is
 * decoded and raised: the call returns its code with the record filled in. */
int cf_bkp_recv(struct cf_stream *s, uint16_t *type, uint8_t *buf, uint32_t *len);

/* Send a frame with descriptor FD attached (SCM_RIGHTS) to its header. */
int cf_bkp_send_fd(struct cf_stream *s, uint16_t type, const void *p, size_t n, int fd);
/* As cf_bkp_recv, and a descriptor that came with the frame goes to *FD
 * (-1 if none; the caller closes it). */
int cf_bkp_recv_fd(struct cf_stream *s, uint16_t *type, uint8_t *buf, uint32_t *len, int *fd);

/* A frame received in parts, its payload straight into buffers of the
 * caller's choosing (e.g. a backup set's block buffer: no copy).
 * cf_bkp_rx_head reads the header (FD: as cf_bkp_recv_fd; NULL: no
 * descriptor expected) and checks its magic and length; then
 * cf_bkp_rx_read reads the next N bytes of the payload (N <= left) and
 * hashes them; cf_bkp_rx_end checks the frame's XXH3 once all is read and
 * then, like cf_bkp_recv, raises an ERROR frame (PAYLOAD: the whole payload,
 * needed only for ERROR) or refuses an unknown type. Nothing received may
 * be trusted before cf_bkp_rx_end returns COFFER_OK. A descriptor that came
 * with the header is the caller's to close in every case. */
struct cf_bkp_rx {
	uint8_t hdr[CF_BKP_HDR];
	uint16_t type;
	uint32_t len, left;  /* payload bytes: in all, still to read */
	void *xs;            /* the running XXH3 (cf_bkp_rx_init) */
};
int cf_bkp_rx_init(struct cf_bkp_rx *rx);
void cf_bkp_rx_free(struct cf_bkp_rx *rx);
int cf_bkp_rx_head(struct cf_stream *s, struct cf_bkp_rx *rx, int *fd);
int cf_bkp_rx_read(struct cf_stream *s, struct cf_bkp_rx *rx, void *buf, size_t n);
int cf_bkp_rx_end(struct cf_stream *s, struct cf_bkp_rx *rx, const uint8_t *payload);

/* Lower the calling thread's CPU priority to nice NICE (never raises it)
 * and its I/O priority to best-effort level 7 (the lowest of the normal
 * class; mq-deadline and BFQ honour the class). Threads it creates later
 * inherit both. Linux applies both per thread. Returns 0 or the errno of
 * the first call that failed; nothing needs undoing either way. Used by
 * cofferd's backup data thread and by `coffer backup --priority low`. */
int cf_bkp_lower_priority(int nice);
/* The nice value of `coffer backup --priority low` (the default). */
#define CF_BKP_CLIENT_NICE 10

/* ERROR frames carry a coffer_error. */
int cf_bkp_send_error(struct cf_stream *s, const coffer_error *e);

/* INFO payload */
#define CF_BKP_INFO_LEN 240u
void cf_bkp_info_encode(const struct coffer_backup_info *bi, uint8_t out[CF_BKP_INFO_LEN]);
int cf_bkp_info_decode(const uint8_t *p, uint32_t len, struct coffer_backup_info *bi);

/* FILE payload: u64 size, u16 name length, name. */
int cf_bkp_send_file(struct cf_stream *s, const char *name, uint64_t size);
int cf_bkp_file_decode(const uint8_t *p, uint32_t len, char *name, size_t cap, uint64_t *size);

/* ZEROS payload: u32 count, 1..CF_BKP_DATA_MAX. */
int cf_bkp_zeros_decode(const uint8_t *p, uint32_t len, uint32_t *count);

#endif
