/* tls.c - OpenSSL server contexts (reloadable) and per-connection engines.
 *
 * The current SSL_CTX is swapped under a mutex taken only to pin it when a
 * connection is created; every SSL holds its own reference, so a reload never
 * touches live connections. A connection's ciphertext lives in two flat
 * buffers inside the tls_conn, reached by OpenSSL through a minimal BIO of
 * ours (no allocation after tls_conn_new; pending/consume/feed never call
 * into OpenSSL). Output bytes never move while unconsumed: the buffer only
 * rewinds once empty. The kTLS attempt is the one place where OpenSSL talks
 * to the socket itself.
 */
#include "tls.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

/* Input: room for one largest TLS record (2^14 + 2048 + 5) with slack, so a
 * feed after a drain always makes progress. Output: a few full records, so
 * a 64 KiB response goes out in about one send. (The sizes of the BIO pair
 * rings these buffers replaced: per-connection memory is unchanged.) */
#define TLS_IN_BUF_BYTES (32u * 1024u)
#define TLS_OUT_BUF_BYTES (64u * 1024u)
/* Largest plaintext per record (OpenSSL's default max_send_fragment). */
#define TLS_RECORD_PLAIN_BYTES 16384u
/* Ciphertext expansion per record is at most 29 bytes for the AEAD suites
 * allowed here (TLS 1.2 GCM: header 5 + nonce 8 + tag 16); the slack also
 * covers a small handshake message (KeyUpdate) queued ahead of the record. */
#define TLS_RECORD_SLACK_BYTES 512u

/* TLS 1.2 suites: forward secrecy and AEAD only. TLS 1.3 keeps OpenSSL's
 * defaults (all AEAD). */
static const char tls12_ciphers[] =
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

static const unsigned char alpn_http11[] = "\x08http/1.1";

/* Owned by the node's main; lives until tls_ctx_free, after every tls_conn. */
struct tls_ctx {
	pthread_mutex_t lock;        /* guards cur against a concurrent swap */
	SSL_CTX *cur;                /* one reference held here */
	bool ktls;
	bool ktls_required;
	bool ktls_ignore_probe;
	struct tls_stats stats;      /* __atomic relaxed */
};

enum tls_conn_state {
	TLS_CONN_HANDSHAKE = 0,
	TLS_CONN_ESTABLISHED,
	TLS_CONN_SHUTDOWN,           /* close_notify queued: no more writes */
	TLS_CONN_FAILED,
};

/* Owned by one worker; lives until tls_conn_free. One allocation: the
 * buffers are allocated with the struct and never zeroed. */
struct tls_conn {
	struct tls_ctx *ctx;         /* borrowed: outlives the connection */
	SSL *ssl;
	BIO *bio;                    /* ours over in/out; owned by ssl once attached */
	/* in[in_rpos, in_wpos): fed ciphertext SSL has not read yet. */
	size_t in_rpos, in_wpos;
	/* out[out_rpos, out_wpos): ciphertext SSL wrote, not yet consumed; may
	 * be in flight in a send, so it never moves (append only, rewind to 0
	 * only when empty). */
	size_t out_rpos, out_wpos;
	int fd;
	enum tls_conn_state state;
	enum tls_path path;
	bool on_socket;              /* kTLS handshake: OpenSSL does socket I/O */
	bool rx_on_socket;           /* KTLS_BOTH: feed is meaningless */
	bool tx_on_socket;           /* KTLS_SEND/BOTH: pending stays empty */
	bool app_data_seen;          /* a read returned plaintext (handshake follow-ups done) */
	const char *error;           /* static string from OpenSSL or here */
	unsigned char in[TLS_IN_BUF_BYTES];
	unsigned char out[TLS_OUT_BUF_BYTES];
};

static void stat_add(uint64_t *field)
{
	__atomic_fetch_add(field, 1, __ATOMIC_RELAXED);
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	unsigned char *sel = NULL;
	unsigned char sel_len = 0;

	(void)ssl;
	(void)arg;
	/* Only HTTP/1.1 is spoken; a client offering only h2 gets no ALPN and
	 * can decide itself whether to go on. */
	if (SSL_select_next_proto(&sel, &sel_len, alpn_http11, sizeof(alpn_http11) - 1,
				  in, inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	*outlen = sel_len;
	return SSL_TLSEXT_ERR_OK;
}

/* Builds a complete server SSL_CTX from the files, or nothing. */
static int build_ssl_ctx(const struct tls_config *cfg, SSL_CTX **ret)
{
	SSL_CTX *s;
	int r = -EBADMSG;

	if (!cfg || !cfg->cert_file || !cfg->key_file)
		return -EINVAL;
	ERR_clear_error();
	s = SSL_CTX_new(TLS_server_method());
	if (!s)
		return -ENOMEM;
	if (!SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(s, TLS1_3_VERSION) ||
	    !SSL_CTX_set_cipher_list(s, tls12_ciphers))
		goto out_free_ctx;
	SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
			       SSL_OP_NO_COMPRESSION);
	/* Partial writes: tls_conn_write sizes every SSL_write to fit, but a
	 * moving buffer keeps a retry legal should one ever not fit. */
	SSL_CTX_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_session_id_context(s, (const unsigned char *)"sluice", 6);
	SSL_CTX_set_alpn_select_cb(s, alpn_select, NULL);
	if (SSL_CTX_use_certificate_chain_file(s, cfg->cert_file) != 1 ||
	    SSL_CTX_use_PrivateKey_file(s, cfg->key_file, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(s) != 1)
		goto out_free_ctx;
	ERR_clear_error();
	*ret = s;
	return 0;

out_free_ctx:
	ERR_clear_error();
	SSL_CTX_free(s);
	return r;
}

int tls_ctx_new(const struct tls_config *cfg, struct tls_ctx **ret)
{
	struct tls_ctx *c;
	SSL_CTX *s;
	int r;

	r = build_ssl_ctx(cfg, &s);
	if (r < 0)
		return r;
	c = calloc(1, sizeof(*c));
	if (!c) {
		SSL_CTX_free(s);
		return -ENOMEM;
	}
	pthread_mutex_init(&c->lock, NULL);
	c->cur = s;
	c->ktls = cfg->ktls;
	c->ktls_required = cfg->ktls && cfg->ktls_required;
	c->ktls_ignore_probe = cfg->ktls_ignore_probe;
	*ret = c;
	return 0;
}

int tls_ctx_reload(struct tls_ctx *c, const struct tls_config *cfg)
{
	SSL_CTX *s, *old;
	int r;

	r = build_ssl_ctx(cfg, &s);
	if (r < 0) {
		stat_add(&c->stats.reload_failures);
		return r;
	}
	pthread_mutex_lock(&c->lock);
	old = c->cur;
	c->cur = s;
	pthread_mutex_unlock(&c->lock);
	/* Live SSLs hold their own reference: this only drops ours. */
	SSL_CTX_free(old);
	stat_add(&c->stats.reloads);
	return 0;
}

void tls_ctx_free(struct tls_ctx *c)
{
	if (!c)
		return;
	SSL_CTX_free(c->cur);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

void tls_ctx_stats(const struct tls_ctx *c, struct tls_stats *out)
{
	const struct tls_stats *s = &c->stats;

	out->handshakes = __atomic_load_n(&s->handshakes, __ATOMIC_RELAXED);
	out->handshake_failures = __atomic_load_n(&s->handshake_failures, __ATOMIC_RELAXED);
	out->refused_no_ktls = __atomic_load_n(&s->refused_no_ktls, __ATOMIC_RELAXED);
	for (int i = 0; i < TLS_PATH__COUNT; i++)
		out->path[i] = __atomic_load_n(&s->path[i], __ATOMIC_RELAXED);
	out->reloads = __atomic_load_n(&s->reloads, __ATOMIC_RELAXED);
	out->reload_failures = __atomic_load_n(&s->reload_failures, __ATOMIC_RELAXED);
}

static bool ulp_present;
static pthread_once_t ulp_once = PTHREAD_ONCE_INIT;

static void probe_ulp(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return;
	/* The ULP is looked up before the socket state is checked: ENOENT means
	 * no "tls" ULP at all, ENOTCONN means it exists (this socket is not
	 * connected, which is all the probe needs). */
	if (setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) == 0 || errno == ENOTCONN)
		ulp_present = true;
	close(fd);
}

bool tls_kernel_has_ulp(void)
{
	pthread_once(&ulp_once, probe_ulp);
	return ulp_present;
}

/* ---- the connection BIO: OpenSSL's side of in/out ----
 *
 * What the BIO pair did, minus its generic ring machinery: reads drain in,
 * writes append to out (partially when short of room, as the pair did),
 * "retry" when empty/full. ctrl answers the few questions OpenSSL asks; every
 * other command (the kTLS queries and BIO_set_ktls among them) gets 0: this
 * BIO is never kTLS. */

static int conn_bio_read(BIO *b, char *data, size_t len, size_t *readbytes)
{
	struct tls_conn *c = BIO_get_data(b);
	size_t have = c->in_wpos - c->in_rpos;

	BIO_clear_retry_flags(b);
	if (have == 0) {
		BIO_set_retry_read(b);
		*readbytes = 0;
		return 0;
	}
	if (len > have)
		len = have;
	memcpy(data, c->in + c->in_rpos, len);
	c->in_rpos += len;
	if (c->in_rpos == c->in_wpos)
		c->in_rpos = c->in_wpos = 0;
	*readbytes = len;
	return 1;
}

static int conn_bio_write(BIO *b, const char *data, size_t len, size_t *written)
{
	struct tls_conn *c = BIO_get_data(b);
	size_t room = sizeof(c->out) - c->out_wpos;

	BIO_clear_retry_flags(b);
	if (room == 0) {
		BIO_set_retry_write(b);
		*written = 0;
		return 0;
	}
	if (len > room)
		len = room;
	memcpy(c->out + c->out_wpos, data, len);
	c->out_wpos += len;
	*written = len;
	return 1;
}

/* OpenSSL asks about a dozen questions per request here (mostly the kTLS
 * ones): look the connection up only for the two that need it. */
static long conn_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	const struct tls_conn *c;

	(void)num;
	(void)ptr;
	switch (cmd) {
	case BIO_CTRL_PENDING:
		c = BIO_get_data(b);
		return (long)(c->in_wpos - c->in_rpos);
	case BIO_CTRL_WPENDING:
		c = BIO_get_data(b);
		return (long)(c->out_wpos - c->out_rpos);
	case BIO_CTRL_FLUSH:
		return 1;
	default:
		/* BIO_CTRL_EOF included: like the pair's, this peer never
		 * shuts its write side, so no EOF; a TCP EOF is the worker's. */
		return 0;
	}
}

static int conn_bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static int conn_bio_destroy(BIO *b)
{
	BIO_set_data(b, NULL);
	return 1;
}

/* Built once per process; never freed (shared by every ctx and conn). */
static BIO_METHOD *conn_bio_method;
static pthread_once_t conn_bio_once = PTHREAD_ONCE_INIT;

static void make_conn_bio_method(void)
{
	int index = BIO_get_new_index();
	BIO_METHOD *m;

	if (index == -1)
		return;
	m = BIO_meth_new(index | BIO_TYPE_SOURCE_SINK, "sluice tls_conn");
	if (!m)
		return;
	if (!BIO_meth_set_read_ex(m, conn_bio_read) || !BIO_meth_set_write_ex(m, conn_bio_write) ||
	    !BIO_meth_set_ctrl(m, conn_bio_ctrl) || !BIO_meth_set_create(m, conn_bio_create) ||
	    !BIO_meth_set_destroy(m, conn_bio_destroy)) {
		BIO_meth_free(m);
		return;
	}
	conn_bio_method = m;
}

/* ---- connections ---- */

static SSL_CTX *pin_current(struct tls_ctx *ctx)
{
	SSL_CTX *s;

	pthread_mutex_lock(&ctx->lock);
	s = ctx->cur;
	SSL_CTX_up_ref(s);
	pthread_mutex_unlock(&ctx->lock);
	return s;
}

int tls_conn_new(struct tls_ctx *ctx, int fd, struct tls_conn **ret)
{
	struct tls_conn *c;
	SSL_CTX *s;
	bool try_ktls = ctx->ktls && (ctx->ktls_ignore_probe || tls_kernel_has_ulp());
	int r = -ENOMEM;

	if (ctx->ktls_required && !try_ktls) {
		stat_add(&ctx->stats.refused_no_ktls);
		return -EOPNOTSUPP;
	}
	pthread_once(&conn_bio_once, make_conn_bio_method);
	if (!conn_bio_method)
		return -ENOMEM;
	/* The 96 KiB of buffers are left unzeroed (as the pair's rings were):
	 * only what is written is ever read. */
	c = malloc(sizeof(*c));
	if (!c)
		return -ENOMEM;
	memset(c, 0, offsetof(struct tls_conn, in));
	c->ctx = ctx;
	c->fd = fd;
	c->path = TLS_PATH_USERSPACE;

	s = pin_current(ctx);
	c->ssl = SSL_new(s);
	SSL_CTX_free(s);  /* the SSL holds its own reference now */
	if (!c->ssl)
		goto out_free_conn;
	c->bio = BIO_new(conn_bio_method);
	if (!c->bio)
		goto out_free_ssl;
	BIO_set_data(c->bio, c);

	if (try_ktls) {
		if (SSL_set_fd(c->ssl, fd) != 1)
			goto out_free_bio;
		SSL_set_options(c->ssl, SSL_OP_ENABLE_KTLS);
		c->on_socket = true;
	} else {
		SSL_set_bio(c->ssl, c->bio, c->bio);
		c->bio = NULL;  /* owned by ssl */
		/* All the buffered ciphertext in one BIO read, not a header
		 * read and a body read per record (README, "Cost per record"). */
		SSL_set_read_ahead(c->ssl, 1);
	}
	SSL_set_accept_state(c->ssl);
	ERR_clear_error();
	*ret = c;
	return 0;

out_free_bio:
	BIO_free(c->bio);
out_free_ssl:
	SSL_free(c->ssl);
out_free_conn:
	ERR_clear_error();
	free(c);
	return r;
}

void tls_conn_free(struct tls_conn *c)
{
	if (!c)
		return;
	/* SSL_free frees the BIOs attached to it (ours only points into c,
	 * freed after it); an unattached one is ours. Neither ever closes fd
	 * (socket BIOs are BIO_NOCLOSE). */
	SSL_free(c->ssl);
	BIO_free(c->bio);
	free(c);
}

ssize_t tls_conn_feed(struct tls_conn *c, const void *buf, size_t len)
{
	size_t room;

	if (c->on_socket || c->rx_on_socket)
		return -EINVAL;
	if (len == 0)
		return 0;
	room = sizeof(c->in) - c->in_wpos;
	if (len > room && c->in_rpos > 0) {
		/* Unread bytes (a record's head, or records SSL was not asked
		 * for yet) sit at the end: SSL sees in only through our read
		 * callback, so they may move to the front. */
		size_t have = c->in_wpos - c->in_rpos;

		memmove(c->in, c->in + c->in_rpos, have);
		c->in_rpos = 0;
		c->in_wpos = have;
		room = sizeof(c->in) - have;
	}
	if (len > room)
		len = room;
	memcpy(c->in + c->in_wpos, buf, len);
	c->in_wpos += len;
	return (ssize_t)len;
}

/* SSL_get_error needs an empty error queue before the call it judges.
 * ERR_clear_error wipes all 16 slots of the thread's queue every time (a
 * few % of the CPU of a TLS request); the queue is almost always empty
 * already, and ERR_peek_error only compares two indexes. */
static inline void errors_empty(void)
{
	if (ERR_peek_error() != 0)
		ERR_clear_error();
}

static void note_failure(struct tls_conn *c, const char *fallback)
{
	unsigned long e = ERR_peek_last_error();
	const char *why = e ? ERR_reason_error_string(e) : NULL;

	c->error = why ? why : fallback;
	ERR_clear_error();
}

/* The kTLS handshake finished on the socket: keep the kernel for what it took
 * and move the rest onto our buffers. */
static int settle_ktls(struct tls_conn *c)
{
	bool tx = BIO_get_ktls_send(SSL_get_wbio(c->ssl));
	bool rx = BIO_get_ktls_recv(SSL_get_rbio(c->ssl));

	c->on_socket = false;
	if (tx && rx) {
		c->path = TLS_PATH_KTLS_BOTH;
		c->rx_on_socket = c->tx_on_socket = true;
		return 0;
	}
	if (rx) {
		/* No enum value for receive-only offload, and the kernel already
		 * decrypts: the buffers cannot take over. */
		c->error = "kTLS receive without send offload";
		return -EPROTO;
	}
	if (c->ctx->ktls_required) {
		c->error = "kTLS offload failed and ktls_required is set";
		stat_add(&c->ctx->stats.refused_no_ktls);
		return -EOPNOTSUPP;
	}
	/* Without read-ahead OpenSSL has read exactly the handshake records, so
	 * nothing is lost by switching: what follows is still in the socket. */
	if (tx) {
		c->path = TLS_PATH_KTLS_SEND;
		c->tx_on_socket = true;
		SSL_set0_rbio(c->ssl, c->bio);
	} else {
		c->path = TLS_PATH_USERSPACE;
		SSL_set_bio(c->ssl, c->bio, c->bio);
	}
	c->bio = NULL;  /* owned by ssl */
	return 0;
}

int tls_conn_handshake(struct tls_conn *c)
{
	int r, err;

	switch (c->state) {
	case TLS_CONN_HANDSHAKE:
		break;
	case TLS_CONN_FAILED:
		return -EPROTO;
	default:
		return 0;
	}
	ERR_clear_error();
	r = SSL_do_handshake(c->ssl);
	if (r != 1) {
		err = SSL_get_error(c->ssl, r);
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
			return -EAGAIN;
		note_failure(c, err == SSL_ERROR_SYSCALL ? "connection closed during handshake"
							 : "handshake failed");
		c->state = TLS_CONN_FAILED;
		stat_add(&c->ctx->stats.handshake_failures);
		return -EPROTO;
	}
	if (c->on_socket) {
		r = settle_ktls(c);
		if (r < 0) {
			c->state = TLS_CONN_FAILED;
			if (r != -EOPNOTSUPP)
				stat_add(&c->ctx->stats.handshake_failures);
			return r;
		}
	}
	c->state = TLS_CONN_ESTABLISHED;
	stat_add(&c->ctx->stats.handshakes);
	stat_add(&c->ctx->stats.path[c->path]);
	return 0;
}

ssize_t tls_conn_read(struct tls_conn *c, void *buf, size_t len)
{
	int r, err;

	if (c->state == TLS_CONN_HANDSHAKE)
		return -ENOTCONN;
	if (c->state == TLS_CONN_FAILED)
		return -EPROTO;
	if (c->rx_on_socket)
		return -EINVAL;
	if (len == 0)
		return 0;
	if (len > INT32_MAX)
		len = INT32_MAX;
	/* The caller loops until -EAGAIN, so every request would end with
	 * an SSL_read that fails for want of input. Once application data
	 * flowed, nothing buffered in the engine and no ciphertext in the
	 * input buffer means exactly that: answer without asking OpenSSL. (Before
	 * the first plaintext, SSL_read may still have handshake follow-ups
	 * to do, so it is always called then; after close_notify it keeps
	 * answering 0.) */
	if (c->app_data_seen && !c->on_socket && !SSL_has_pending(c->ssl) &&
	    c->in_wpos == c->in_rpos &&
	    !(SSL_get_shutdown(c->ssl) & SSL_RECEIVED_SHUTDOWN))
		return -EAGAIN;
	errors_empty();
	r = SSL_read(c->ssl, buf, (int)len);
	if (r > 0) {
		c->app_data_seen = true;
		return r;
	}
	err = SSL_get_error(c->ssl, r);
	switch (err) {
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return -EAGAIN;
	default:
		note_failure(c, "bad record");
		c->state = TLS_CONN_FAILED;
		return -EPROTO;
	}
}

ssize_t tls_conn_write(struct tls_conn *c, const void *buf, size_t len)
{
	const char *p = buf;
	size_t done = 0;

	switch (c->state) {
	case TLS_CONN_HANDSHAKE:
		return -ENOTCONN;
	case TLS_CONN_SHUTDOWN:
		return -EPIPE;
	case TLS_CONN_FAILED:
		return -EPROTO;
	default:
		break;
	}
	if (c->tx_on_socket)
		return -EINVAL;
	while (done < len) {
		size_t room = sizeof(c->out) - c->out_wpos;
		size_t n = len - done;
		int r;

		if (room <= TLS_RECORD_SLACK_BYTES)
			break;
		if (n > TLS_RECORD_PLAIN_BYTES)
			n = TLS_RECORD_PLAIN_BYTES;
		if (n > room - TLS_RECORD_SLACK_BYTES)
			n = room - TLS_RECORD_SLACK_BYTES;
		errors_empty();
		r = SSL_write(c->ssl, p + done, (int)n);
		if (r > 0) {
			done += (size_t)r;
			continue;
		}
		/* A record was sized to fit the output buffer, so a short write
		 * would leave OpenSSL holding a half-written record that a later
		 * write with other bytes would misattribute: call it fatal. */
		note_failure(c, "record did not fit the output buffer");
		c->state = TLS_CONN_FAILED;
		return -EPROTO;
	}
	if (done == 0 && len > 0)
		return -EAGAIN;
	return (ssize_t)done;
}

/* On the kTLS paths OpenSSL writes to the socket, so out stays empty and
 * both need no special case. */
size_t tls_conn_pending(struct tls_conn *c, const void **data)
{
	size_t n = c->out_wpos - c->out_rpos;

	*data = n ? c->out + c->out_rpos : NULL;
	return n;
}

void tls_conn_consume(struct tls_conn *c, size_t n)
{
	assert(n <= c->out_wpos - c->out_rpos);
	c->out_rpos += n;
	/* Empty: nothing can be in flight any more, so rewind. */
	if (c->out_rpos >= c->out_wpos)
		c->out_rpos = c->out_wpos = 0;
}

int tls_conn_shutdown(struct tls_conn *c)
{
	int r, err;

	if (c->state != TLS_CONN_ESTABLISHED && c->state != TLS_CONN_SHUTDOWN)
		return 0;
	c->state = TLS_CONN_SHUTDOWN;
	ERR_clear_error();
	r = SSL_shutdown(c->ssl);
	if (r >= 0)
		return 0;  /* 0: ours queued, the peer's not awaited */
	err = SSL_get_error(c->ssl, r);
	if (err == SSL_ERROR_WANT_WRITE)
		return -EAGAIN;
	ERR_clear_error();
	return 0;
}

enum tls_path tls_conn_path(const struct tls_conn *c)
{
	return c->path;
}

bool tls_conn_on_socket(const struct tls_conn *c)
{
	return c->on_socket;
}

const char *tls_conn_version(const struct tls_conn *c)
{
	if (c->state == TLS_CONN_HANDSHAKE || c->state == TLS_CONN_FAILED)
		return NULL;
	return SSL_get_version(c->ssl);
}

const char *tls_conn_error(const struct tls_conn *c)
{
	return c->error;
}
