/* tls.h - TLS termination for the node's proxy through OpenSSL.
 *
 * A tls_ctx holds the certificate and key (reloadable: new handshakes use the
 * new pair, live connections keep theirs). A tls_conn is a memory-BIO engine
 * driven by the worker's io_uring: the worker feeds received ciphertext in,
 * reads plaintext out, writes plaintext in and sends the ciphertext the
 * engine queues. After the handshake kTLS is asked for when the kernel has a
 * TLS ULP; which path each connection took is counted.
 */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Owned by the caller; strings read during tls_ctx_new/tls_ctx_reload only. */
struct tls_config {
	const char *cert_file;   /* PEM chain */
	const char *key_file;    /* PEM key */
	bool ktls;               /* try kTLS after the handshake */
	bool ktls_required;      /* refuse connections that cannot offload */
	/* Tests only: attempt the kTLS handshake (on the socket) even when
	 * tls_kernel_has_ulp() says no, so that the fallback is exercised on a
	 * kernel without the ULP. Never set in production configs. */
	bool ktls_ignore_probe;
};

/* Which path a connection's records take. */
enum tls_path {
	TLS_PATH_USERSPACE = 0,  /* OpenSSL records in user space */
	TLS_PATH_KTLS_SEND,      /* kernel encrypts, user space decrypts */
	TLS_PATH_KTLS_BOTH,      /* kernel both ways */
	TLS_PATH__COUNT
};

/* Counters, relaxed atomics, monotonic. */
struct tls_stats {
	uint64_t handshakes;
	uint64_t handshake_failures;
	uint64_t refused_no_ktls;  /* ktls_required and no offload */
	uint64_t path[TLS_PATH__COUNT];
	uint64_t reloads;
	uint64_t reload_failures;
};

/* Shared by all workers; owned by the node's main; lives until tls_ctx_free
 * after the proxy is freed. */
struct tls_ctx;

/* TLS 1.2 and 1.3 only, ECDHE + AEAD suites, no renegotiation, session
 * tickets on, ALPN "http/1.1" when the client offers it. cfg->ktls,
 * cfg->ktls_required and cfg->ktls_ignore_probe are fixed here; reload only
 * re-reads the files. -EINVAL on a NULL path, -EBADMSG on an unreadable or
 * mismatched cert/key, -ENOMEM. */
int tls_ctx_new(const struct tls_config *cfg, struct tls_ctx **ret);
/* Re-reads cert_file/key_file. On error the old pair stays and -errno is
 * returned. Any thread. */
int tls_ctx_reload(struct tls_ctx *c, const struct tls_config *cfg);
void tls_ctx_free(struct tls_ctx *c);  /* accepts NULL */
void tls_ctx_stats(const struct tls_ctx *c, struct tls_stats *out);
/* Probe: does this kernel accept TCP_ULP "tls"? Cached after the first call. */
bool tls_kernel_has_ulp(void);

/* ---- One connection ------------------------------------------------------
 *
 * Owned by the worker that accepted the socket; used by that thread only;
 * lives until tls_conn_free (before tls_ctx_free). The worker owns the socket
 * and does every recv/send itself; the engine never touches fd on the
 * user-space path (fd is kept for the kTLS path and for logging).
 *
 * Buffers are allocated once in tls_conn_new (a fixed ciphertext buffer each
 * way behind our own BIO); feed, handshake, read, write, pending and consume
 * do not allocate.
 *
 * Calling sequence (user-space path, the one this kernel always takes):
 *
 *   tls_conn_new(ctx, fd, &tc);            // -EOPNOTSUPP: refused, close fd
 *   on recv of n ciphertext bytes at p:
 *     while (n > 0) {
 *       ssize_t k = tls_conn_feed(tc, p, n);   // copies; may take < n
 *       p += k; n -= k;
 *       if (!established) {
 *         r = tls_conn_handshake(tc);      // 0 done, -EAGAIN more input
 *         if (r < 0 && r != -EAGAIN) -> send pending (alert), close
 *         if (r == 0) established = true;  // fall through: data may follow
 *       }
 *       if (established)
 *         while ((m = tls_conn_read(tc, buf, sizeof(buf))) > 0) use(buf, m);
 *         // m == 0: peer sent close_notify; m == -EAGAIN: need more input
 *     }
 *   to send plaintext: k = tls_conn_write(tc, data, len);  // may take < len,
 *     -EAGAIN when the ciphertext buffer is full: send and consume all
 *     pending first (its room comes back once everything pending is sent)
 *   after EVERY call above: while ((len = tls_conn_pending(tc, &out)) > 0)
 *     { send(out, len) ... on completion of s bytes: tls_conn_consume(tc, s); }
 *   to close: tls_conn_shutdown(tc); send pending; close(fd);
 *     tls_conn_free(tc);
 *   recv returning 0 (TCP EOF without close_notify): a truncation; close
 *     without answering.
 *
 * kTLS path (only when the ctx has ktls and the kernel has the ULP): the
 * handshake runs on the socket itself. While tls_conn_on_socket() is true the
 * worker must not recv from fd: it waits for POLLIN and calls
 * tls_conn_handshake(), which does its own I/O (pending stays empty). After
 * the handshake tls_conn_path() says what happened:
 *   TLS_PATH_KTLS_BOTH  the socket carries plaintext both ways: recv/send
 *                       (and splice/sendfile) directly; feed, read and write
 *                       return -EINVAL; tls_conn_shutdown sends close_notify
 *                       through the kernel itself.
 *   TLS_PATH_KTLS_SEND  send plaintext directly (kernel encrypts; write
 *                       returns -EINVAL); received bytes still go through
 *                       feed/read as above.
 *   TLS_PATH_USERSPACE  offload failed: the engine has switched to its
 *                       buffers; continue exactly as on the user-space path.
 * With ktls_required, a connection that cannot offload is refused:
 * tls_conn_new (kernel has no ULP) or tls_conn_handshake (offload failed)
 * returns -EOPNOTSUPP and stats.refused_no_ktls is counted.
 */
struct tls_conn;

/* -EOPNOTSUPP: ktls_required and this kernel cannot offload (counted);
 * -ENOMEM. ret written only on success. */
int tls_conn_new(struct tls_ctx *ctx, int fd, struct tls_conn **ret);
void tls_conn_free(struct tls_conn *c);  /* accepts NULL; never sends */

/* Copies up to len received ciphertext bytes into the engine. Returns the
 * bytes taken (< len when the input buffer is full: call tls_conn_handshake or
 * tls_conn_read to drain it, then feed the rest), -EINVAL while the engine
 * reads the socket itself. Never 0 for len > 0 after the buffer was drained. */
ssize_t tls_conn_feed(struct tls_conn *c, const void *buf, size_t len);

/* Advances the server handshake. 0: established (path counted; call
 * tls_conn_read next, application data may already be buffered); -EAGAIN:
 * needs more input (or pending output to be sent); -EPROTO: failed, counted
 * once, pending may hold an alert worth sending; -EOPNOTSUPP: refused by
 * ktls_required. Idempotent once established. */
int tls_conn_handshake(struct tls_conn *c);

/* Plaintext out. >0 bytes; 0 the peer sent close_notify; -EAGAIN needs more
 * input (or pending output sent: a key update answer); -ENOTCONN before the
 * handshake; -EPROTO bad record (connection is dead). Loop until -EAGAIN: a
 * record can be larger than buf. */
ssize_t tls_conn_read(struct tls_conn *c, void *buf, size_t len);

/* Encrypts up to len plaintext bytes into the pending output. Returns bytes
 * taken (may be < len: the rest waits until pending output is consumed);
 * -EAGAIN nothing fits now; -ENOTCONN before the handshake; -EPIPE after
 * tls_conn_shutdown; -EPROTO on a dead connection. The caller may reuse buf
 * as soon as this returns: nothing refers to it afterwards. */
ssize_t tls_conn_write(struct tls_conn *c, const void *buf, size_t len);

/* Ciphertext waiting to be sent: sets *data to the first contiguous chunk and
 * returns its length (0: nothing). The chunk stays valid, unchanged, until
 * tls_conn_consume or tls_conn_free; calls that append (write, read,
 * handshake, shutdown) never move it. Consume what was sent, then ask again:
 * more may have been appended since. */
size_t tls_conn_pending(struct tls_conn *c, const void **data);
void tls_conn_consume(struct tls_conn *c, size_t n);  /* n <= pending */

/* Queues close_notify (no wait for the peer's). 0 queued or nothing to do
 * (handshake not finished), -EAGAIN output full: send pending and call again.
 * Later writes get -EPIPE. */
int tls_conn_shutdown(struct tls_conn *c);

/* The path after the handshake (USERSPACE before it). */
enum tls_path tls_conn_path(const struct tls_conn *c);
/* True while the engine does socket I/O itself (kTLS handshake, see above). */
bool tls_conn_on_socket(const struct tls_conn *c);
/* Negotiated "TLSv1.2"/"TLSv1.3", NULL before the handshake; static string. */
const char *tls_conn_version(const struct tls_conn *c);
/* Why the handshake or a read failed, for one log line; static string, NULL
 * if nothing failed. */
const char *tls_conn_error(const struct tls_conn *c);

#endif
