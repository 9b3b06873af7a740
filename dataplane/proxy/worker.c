/* worker.c - one proxy worker: a thread with its own io_uring, accepting on
 * its SO_REUSEPORT listener(s) and running every client connection's state
 * machine (head -> decision -> upstream/static/local response -> next).
 *
 * Invariants: a connection has at most one receive and one send in flight;
 * requests on a connection are handled one at a time, so pipelined requests
 * are answered in order; a connection is freed only when no operation
 * refers to it. Timeouts are deadlines checked every PROXY_TICK_MS.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "decision.h"
#include "log.h"
#include "proxy_internal.h"
#include "tls.h"

uint64_t proxy_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- small buffers ---- */

int proxy_buf_reserve(struct proxy_buf *b, size_t extra)
{
	size_t need, cap;
	char *np;

	if (PROXY_BUF_FAILED(b))
		return -ENOMEM;
	need = b->len + extra + 1;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 512;
	while (cap < need)
		cap *= 2;
	np = realloc(b->p, cap);
	if (!np) {
		b->len = SIZE_MAX;
		return -ENOMEM;
	}
	b->p = np;
	b->cap = cap;
	return 0;
}


void proxy_buf_fmt(struct proxy_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (proxy_buf_reserve(b, 128) < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->len = SIZE_MAX;
		return;
	}
	if ((size_t)n >= b->cap - b->len) {
		if (proxy_buf_reserve(b, (size_t)n) < 0)
			return;
		va_start(ap, fmt);
		vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
}

size_t proxy_fmt_u64(char *out, uint64_t v)
{
	/* Digits counted first, then written from the end two per division:
	 * a head carries several numbers, and a digit at a time or a copy
	 * through a buffer was a visible part of building one. */
	static const char pairs[201] = "00010203040506070809101112131415161718192021222324"
				       "25262728293031323334353637383940414243444546474849"
				       "50515253545556575859606162636465666768697071727374"
				       "75767778798081828384858687888990919293949596979899";
	static const uint64_t pow10[20] = {
		1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull,
		100000000ull, 1000000000ull, 10000000000ull, 100000000000ull,
		1000000000000ull, 10000000000000ull, 100000000000000ull, 1000000000000000ull,
		10000000000000000ull, 100000000000000000ull, 1000000000000000000ull,
		10000000000000000000ull,
	};
	size_t n, k;

	if (v < 10) {
		out[0] = (char)('0' + v);
		return 1;
	}
	/* The bit length times log10(2) (1233/4096) is the digit count or
	 * one less; one compare tells which. */
	n = ((64 - (size_t)__builtin_clzll(v)) * 1233) >> 12;
	n += v >= pow10[n];
	k = n;
	while (v >= 100) {
		unsigned d = (unsigned)(v % 100) * 2;

		v /= 100;
		out[--k] = pairs[d + 1];
		out[--k] = pairs[d];
	}
	if (v >= 10) {
		out[1] = pairs[v * 2 + 1];
		out[0] = pairs[v * 2];
	} else {
		out[0] = (char)('0' + v);
	}
	return n;
}

void proxy_buf_u64(struct proxy_buf *b, uint64_t v)
{
	char d[20];

	proxy_buf_add(b, d, proxy_fmt_u64(d, v));
}

void proxy_buf_free(struct proxy_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/* ---- labelled counters ---- */

void proxy_ltable_add(struct proxy_ltable *t, uint64_t label_hash, const char *label, size_t len,
		      int code, uint64_t n)
{
	uint64_t h = (label_hash ^ (uint64_t)(unsigned)code) * 0x9e3779b97f4a7c15ull;

	if (len >= PROXY_LABEL_MAX)
		len = PROXY_LABEL_MAX - 1;
	h ^= h >> 29;
	for (unsigned i = 0; i < PROXY_LTABLE_CAP; i++) {
		struct proxy_lentry *e = &t->e[(h + i) & (PROXY_LTABLE_CAP - 1)];

		if (!atomic_load_explicit(&e->used, memory_order_relaxed)) {
			memcpy(e->label, label, len);
			e->label[len] = '\0';
			e->code = code;
			atomic_store_explicit(&e->count, n, memory_order_relaxed);
			atomic_store_explicit(&e->used, 1, memory_order_release);
			return;
		}
		if (e->code == code && e->label[len] == '\0' && bytes_eq_short(e->label, label, len)) {
			atomic_fetch_add_explicit(&e->count, n, memory_order_relaxed);
			return;
		}
	}
	atomic_fetch_add_explicit(&t->dropped, n, memory_order_relaxed);
}

/* ---- ring helpers ---- */

struct io_uring_sqe *proxy_get_sqe(struct proxy_worker *w)
{
	struct io_uring_sqe *sqe;

	/* A full submission queue drains at the next submit. */
	while (!(sqe = io_uring_get_sqe(&w->ring)))
		io_uring_submit(&w->ring);
	return sqe;
}

void proxy_cancel(struct proxy_worker *w, struct proxy_op *op)
{
	struct io_uring_sqe *sqe;

	if (!w->ring_ok)
		return;
	sqe = proxy_get_sqe(w);

	io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op, 0);
	io_uring_sqe_set_data64(sqe, 0);
}

bool proxy_fixed_add(struct proxy_worker *w, int fd)
{
	if (fd < 0 || (unsigned)fd >= w->n_fixed || !w->ring_ok)
		return false;
	return io_uring_register_files_update(&w->ring, (unsigned)fd, &fd, 1) == 1;
}

void proxy_fixed_del(struct proxy_worker *w, int fd)
{
	int none = -1;

	/* After io_uring_queue_exit the table went with the ring. */
	if (!w->ring_ok)
		return;
	if (io_uring_register_files_update(&w->ring, (unsigned)fd, &none, 1) != 1)
		log_warn("Could not unregister a socket from the ring", "worker=%u fd=%d", w->idx,
			 fd);
}

void proxy_conn_set_deadline(struct proxy_conn *c, enum proxy_deadline k, uint32_t ms)
{
	c->deadline_kind = k;
	c->deadline_ns = k == DL_NONE ? 0 : c->w->now_ns + (uint64_t)ms * 1000000ull;
}

/* ---- connection lifecycle ---- */

static void conn_maybe_free(struct proxy_conn *c)
{
	struct proxy_worker *w = c->w;

	if (!c->closing || c->inflight || c->dead)
		return;
	c->dead = true;
	if (c->fixed)
		proxy_fixed_del(w, c->fd);
	close(c->fd);
	tls_conn_free(c->tls);
	c->tls = NULL;
	free(c->tls_in);
	c->tls_in = NULL;
	proxy_static_cleanup(c);
	if (c->pipe_fd[0] >= 0) {
		close(c->pipe_fd[0]);
		close(c->pipe_fd[1]);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->n_conns--;
	atomic_fetch_sub_explicit(&w->p->conns_open, 1, memory_order_relaxed);
	proxy_buf_free(&c->wbuf);
	proxy_buf_free(&c->uhead);
	proxy_buf_free(&c->pend);
	free(c->rbuf);
	c->rbuf = NULL;
	/* Freed by reap(): callers up the stack may still look at it. */
	c->next = w->dead_conns;
	w->dead_conns = c;
}

static void reap(struct proxy_worker *w)
{
	while (w->dead_conns) {
		struct proxy_conn *c = w->dead_conns;

		w->dead_conns = c->next;
		free(c);
	}
	proxy_up_reap(w);
}

/* Closes at once: pending operations are cancelled. */
static void conn_close(struct proxy_conn *c)
{
	struct proxy_worker *w = c->w;

	if (c->closing)
		return;
	c->closing = true;
	c->deadline_kind = DL_NONE;
	if (c->up)
		proxy_up_detach(c, false);
	shutdown(c->fd, SHUT_RDWR);
	if (c->recv_pending)
		proxy_cancel(w, &c->op_recv);
	/* A multishot receive ends with its last completion (F_MORE clear),
	 * which the cancel (or the shutdown's EOF) brings; until then the
	 * connection stays allocated. */
	if (c->ms_armed && !c->ms_cancel) {
		c->ms_cancel = true;
		proxy_cancel(w, &c->op_mrecv);
	}
	c->want = false;
	if (c->send_pending)
		proxy_cancel(w, &c->op_send);
	if (c->splice_pending)
		proxy_cancel(w, &c->op_splice);
	conn_maybe_free(c);
}

void proxy_conn_abort(struct proxy_conn *c)
{
	conn_close(c);
}

/* After a final response with unread input: half-close and drain what the
 * client still sends for a moment, so that closing with unread bytes does
 * not turn into a reset that destroys the response before it is read. */
static void conn_linger(struct proxy_conn *c)
{
	if (c->closing)
		return;
	if (c->up)
		proxy_up_detach(c, false);
	if (c->tls && c->tls_established && tls_conn_shutdown(c->tls) == 0) {
		const void *d;
		size_t len;

		/* Best effort, without waiting: the socket buffer is empty
		 * after the last response, so the alert fits. */
		while ((len = tls_conn_pending(c->tls, &d)) > 0) {
			ssize_t k = send(c->fd, d, len, MSG_DONTWAIT | MSG_NOSIGNAL);

			if (k <= 0)
				break;
			tls_conn_consume(c->tls, (size_t)k);
		}
	}
	shutdown(c->fd, SHUT_WR);
	c->phase = PH_LOCAL;
	c->rpos = c->rlen = 0;
	c->send_next = SN_NONE;
	c->lingering = true;
	proxy_conn_set_deadline(c, DL_LINGER, 2000);
	proxy_conn_recv(c);
}

static void deliver(struct proxy_conn *c);
static void tls_pump_send(struct proxy_conn *c);
static void recv_more(struct proxy_conn *c);

/* Feeds buffered ciphertext, advances the handshake and decrypts into
 * rbuf. Returns the plaintext bytes added, or -1 once the connection was
 * closed. */
static ssize_t tls_process(struct proxy_conn *c)
{
	ssize_t produced = 0;

	for (;;) {
		bool progress = false;

		if (c->tls_in_off < c->tls_in_len) {
			ssize_t k = tls_conn_feed(c->tls, c->tls_in + c->tls_in_off,
						  c->tls_in_len - c->tls_in_off);

			if (k < 0) {
				conn_close(c);
				return -1;
			}
			c->tls_in_off += (size_t)k;
			progress = k > 0;
		}
		if (!c->tls_established) {
			int r = tls_conn_handshake(c->tls);

			if (r == 0) {
				c->tls_established = true;
			} else if (r != -EAGAIN) {
				/* An alert may be pending: one try, then close. */
				const void *d;
				size_t len = tls_conn_pending(c->tls, &d);

				if (len && send(c->fd, d, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
					len = 0;
				conn_close(c);
				return -1;
			}
		}
		if (c->tls_established) {
			while (c->rlen < c->rcap) {
				ssize_t m = tls_conn_read(c->tls, c->rbuf + c->rlen, c->rcap - c->rlen);

				if (m > 0) {
					c->rlen += (size_t)m;
					produced += m;
					progress = true;
					continue;
				}
				if (m == 0)
					c->tls_peer_closed = true;
				else if (m != -EAGAIN) {
					conn_close(c);
					return -1;
				}
				break;
			}
		}
		if (c->tls_in_off >= c->tls_in_len || c->rlen == c->rcap || !progress)
			break;
	}
	tls_pump_send(c);
	return c->closing ? -1 : produced;
}

/* ---- receiving ----
 *
 * The state machine asks for bytes with proxy_conn_recv and gets them in
 * deliver(); between the two it must not find new bytes in rbuf (an
 * upstream send may point into it). Two ways to get them:
 *
 * - Multishot (the default for request heads): one receive per connection
 *   stays armed over the worker's provided buffer ring; it is not
 *   re-submitted per request, and the kernel keeps its poll armed (no
 *   apoll arm per request). A completion's bytes are copied at once into
 *   rbuf (or tls_in) when the connection wants them, else appended to
 *   c->pend, and the buffer goes straight back to the ring. Pipelined
 *   bytes thus wait in pend instead of the socket; past PROXY_PEND_MAX the
 *   receive is cancelled, so a client that sends without reading meets
 *   TCP's back-pressure as before. EOF or an error is remembered and acted
 *   on once pend is used up (as a single-shot receive would see it only
 *   after the bytes before it).
 * - Single shot into rbuf (tls_in): when the ring ran dry (ENOBUFS ends
 *   the multishot; the next receive is a single shot, the one after tries
 *   the multishot again), for request bodies (streamed in rbuf-sized
 *   pieces), or when the kernel refused the ring.
 */

static void arm_recv(struct proxy_conn *c)
{
	struct io_uring_sqe *sqe = proxy_get_sqe(c->w);

	if (c->tls) {
		c->tls_in_off = c->tls_in_len = 0;
		io_uring_prep_recv(sqe, c->fd, c->tls_in, PROXY_TLS_IN_BYTES, 0);
	} else {
		io_uring_prep_recv(sqe, c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
	}
	proxy_sqe_fixed(sqe, c->fixed);
	/* Keep-alive, between requests: the client sends its next request
	 * only after reading our response, so a first receive attempt would
	 * almost always fail; wait for readiness instead. */
	if (c->phase == PH_HEAD && c->nreq > 0 && c->rpos == c->rlen)
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
	io_uring_sqe_set_data(sqe, &c->op_recv);
	c->recv_pending = true;
	c->inflight++;
}

static void arm_mrecv(struct proxy_conn *c)
{
	struct io_uring_sqe *sqe = proxy_get_sqe(c->w);

	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = PROXY_PBUF_GROUP;
	proxy_sqe_fixed(sqe, c->fixed);
	io_uring_sqe_set_data(sqe, &c->op_mrecv);
	c->ms_armed = true;
	c->inflight++;
}

void proxy_pbuf_give_back(struct proxy_worker *w, unsigned bid)
{
	io_uring_buf_ring_add(w->pbr, w->pbuf_mem + (size_t)bid * PROXY_PBUF_BYTES,
			      PROXY_PBUF_BYTES, (unsigned short)bid,
			      io_uring_buf_ring_mask(w->pbuf_n), 0);
	io_uring_buf_ring_advance(w->pbr, 1);
}

/* Runs the TLS engine over what it holds, then: plaintext (or
 * `deliver_anyway`) goes to deliver(); the peer's close_notify closes;
 * handshake bytes or a partial record read on once tls_in is used up. */
static void tls_pump(struct proxy_conn *c, bool deliver_anyway)
{
	ssize_t k = tls_process(c);

	if (k < 0)
		return;
	if (k > 0 || deliver_anyway) {
		c->want_read = false;
		deliver(c);
		return;
	}
	if (c->tls_peer_closed) {
		conn_close(c);
		return;
	}
	if (c->tls_in_off >= c->tls_in_len)
		recv_more(c);
}

/* Bytes just placed: rbuf[rlen, rlen + n) in plaintext, tls_in[0, n) in
 * TLS. */
static void got_bytes(struct proxy_conn *c, size_t n)
{
	if (!c->tls) {
		c->rlen += n;
		deliver(c);
		return;
	}
	c->tls_in_off = 0;
	c->tls_in_len = n;
	tls_pump(c, c->lingering);
}

/* Where the next bytes go, and how many fit. */
static char *recv_dst(struct proxy_conn *c, size_t *room)
{
	if (c->tls) {
		*room = PROXY_TLS_IN_BYTES;
		return c->tls_in;
	}
	*room = c->rcap - c->rlen;
	return c->rbuf + c->rlen;
}

/* The connection wants bytes (rbuf, or an empty tls_in): from pend, else
 * from a receive. */
static void recv_more(struct proxy_conn *c)
{
	struct proxy_worker *w = c->w;
	size_t avail = c->pend.len - c->pend_off, room, n;
	char *dst;

	if (c->closing || c->recv_pending)
		return;
	if (avail) {
		dst = recv_dst(c, &room);
		n = avail < room ? avail : room;
		if (n == 0)
			return; /* never: a full rbuf is answered (431) or compacted first */
		memcpy(dst, c->pend.p + c->pend_off, n);
		c->pend_off += n;
		if (c->pend_off == c->pend.len)
			c->pend_off = c->pend.len = 0;
		c->want = false;
		got_bytes(c, n);
		return;
	}
	if (c->peer_eof) {
		conn_close(c);
		return;
	}
	if (c->ms_armed) {
		/* Running, or ending after a cancel: its last completion
		 * comes back here. */
		c->want = true;
		return;
	}
	if (w->pbuf_n && !c->ms_off && (c->phase == PH_HEAD || c->lingering)) {
		arm_mrecv(c);
		c->want = true;
		return;
	}
	c->want = false;
	arm_recv(c);
}

static void pend_add(struct proxy_conn *c, const char *data, size_t n)
{
	proxy_buf_add(&c->pend, data, n);
	if (PROXY_BUF_FAILED(&c->pend)) {
		conn_close(c);
		return;
	}
	if (c->pend.len - c->pend_off >= PROXY_PEND_MAX && c->ms_armed && !c->ms_cancel) {
		c->ms_cancel = true;
		proxy_cancel(c->w, &c->op_mrecv);
	}
}

static void absorb(struct proxy_conn *c, const char *data, size_t n)
{
	size_t room, k;
	char *dst;

	if (!c->want || c->pend.len != c->pend_off) {
		pend_add(c, data, n);
		return;
	}
	dst = recv_dst(c, &room);
	k = n < room ? n : room;
	if (k == 0) {
		pend_add(c, data, n);
		return;
	}
	memcpy(dst, data, k);
	c->want = false;
	/* The rest first: deliver() may ask for more at once. */
	if (k < n)
		pend_add(c, data + k, n - k);
	if (!c->closing)
		got_bytes(c, k);
}

static void on_mrecv(struct proxy_conn *c, int res, uint32_t flags)
{
	struct proxy_worker *w = c->w;
	bool last = !(flags & IORING_CQE_F_MORE);

	if (last) {
		c->ms_armed = false;
		c->ms_cancel = false;
		c->inflight--;
	}
	if (flags & IORING_CQE_F_BUFFER) {
		unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;

		/* Copied out (or dropped) before the buffer goes back. */
		if (res > 0 && !c->closing)
			absorb(c, proxy_pbuf(w, bid), (size_t)res);
		proxy_pbuf_give_back(w, bid);
	}
	if (c->closing)
		return;
	if (res == -ENOBUFS) {
		c->ms_off = true;
		w->pbuf_nobufs++;
	} else if (res == 0 || (res < 0 && res != -ECANCELED)) {
		c->peer_eof = true;
	}
	if (last && c->want) {
		c->want = false;
		recv_more(c);
	}
}

void proxy_conn_recv(struct proxy_conn *c)
{
	if (c->recv_pending || c->want || c->closing)
		return;
	if (c->rlen == c->rcap && c->rpos > 0) {
		memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
		c->rlen -= c->rpos;
		if (c->bpos >= c->rpos)
			c->bpos -= c->rpos;
		c->rpos = 0;
	}
	if (!c->tls) {
		recv_more(c);
		return;
	}
	/* Plaintext may already sit in the engine, ciphertext in tls_in. */
	c->want_read = true;
	tls_pump(c, false);
}

void proxy_conn_send(struct proxy_conn *c, enum proxy_send_next next)
{
	struct io_uring_sqe *sqe;

	c->send_next = next;
	if (c->tls) {
		c->tls_job = true;
		proxy_conn_set_deadline(c, DL_SEND, c->w->p->cfg.body_timeout_ms);
		tls_pump_send(c);
		return;
	}
	sqe = proxy_get_sqe(c->w);
	if (c->iovcnt == 1) {
		io_uring_prep_send(sqe, c->fd, c->iov[0].iov_base, c->iov[0].iov_len, MSG_NOSIGNAL);
	} else {
		memset(&c->msg, 0, sizeof(c->msg));
		c->msg.msg_iov = c->iov;
		c->msg.msg_iovlen = c->iovcnt;
		io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
	}
	proxy_sqe_fixed(sqe, c->fixed);
	io_uring_sqe_set_data(sqe, &c->op_send);
	c->send_pending = true;
	c->inflight++;
	proxy_conn_set_deadline(c, DL_SEND, c->w->p->cfg.body_timeout_ms);
}

/* ---- responses made here ---- */

static const char *status_reason(int status)
{
	const char *r = http_status_reason(status);

	if (*r)
		return r;
	switch (status) {
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	}
	return "Unknown";
}

void proxy_conn_skip_body(struct proxy_conn *c)
{
	/* Body bytes not yet read would be taken for the next request: skip
	 * a body that is all here, else close after the response. */
	if (c->body_mode == BODY_NONE || c->body_done)
		return;
	if (c->body_mode == BODY_LENGTH && c->rlen - c->bpos >= c->body_left) {
		c->rpos = c->bpos + c->body_left;
		c->body_left = 0;
		c->body_done = true;
		return;
	}
	c->close_after = true;
}

void proxy_conn_respond(struct proxy_conn *c, int status, const char *extra, size_t elen,
			bool close)
{
	struct proxy_buf *b = &c->wbuf;
	const char *reason = status_reason(status);
	size_t rlen = strlen(reason);
	char code[20], *o;
	size_t clen;

	proxy_conn_skip_body(c);
	if (close || c->w->draining)
		c->close_after = true;
	c->status = status;
	if ((status == 403 || status == 429) && c->w->p->cfg.on_reject)
		c->w->p->cfg.on_reject(c->w->p->cfg.on_reject_arg, &c->peer_sa.sa, c->peer_sa_len,
				       c->req_cid, c->req_cid ? c->req_cid_len : 0, status);
	c->phase = PH_LOCAL;
	/* Head and the body "<status> <reason>\n" without printf: a 429 is
	 * the whole work of a rejected request. */
	clen = proxy_fmt_u64(code, (uint64_t)status);
	b->len = 0;
	/* Fixed text ~110 bytes, the code and reason twice, the extra fields. */
	o = proxy_buf_room(b, 160 + 2 * (clen + rlen) + elen);
	if (!o) {
		conn_close(c);
		return;
	}
	o = PROXY_PUT_LIT(o, "HTTP/1.1 ");
	o = proxy_put(o, code, clen);
	*o++ = ' ';
	o = proxy_put(o, reason, rlen);
	o = PROXY_PUT_LIT(o, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ");
	o += proxy_fmt_u64(o, clen + 1 + rlen + 1);
	o = PROXY_PUT_LIT(o, "\r\n");
	if (elen)
		o = proxy_put(o, extra, elen);
	if (c->close_after)
		o = PROXY_PUT_LIT(o, "Connection: close\r\n");
	o = PROXY_PUT_LIT(o, "\r\n");
	if (!c->is_head_method) {
		o = proxy_put(o, code, clen);
		*o++ = ' ';
		o = proxy_put(o, reason, rlen);
		*o++ = '\n';
	}
	proxy_buf_commit(b, o);
	c->iov[0].iov_base = b->p;
	c->iov[0].iov_len = b->len;
	c->iovcnt = 1;
	proxy_conn_send(c, SN_DONE);
}

/* ---- access log ---- */

static void log_submit(struct proxy_worker *w)
{
	struct io_uring_sqe *sqe = proxy_get_sqe(w);
	unsigned b = w->logcur ^ 1;

	/* Offset -1: the file position (O_APPEND files append). */
	io_uring_prep_write(sqe, w->p->cfg.access_log_fd, w->logbuf[b] + w->log_off,
			    (unsigned)(w->loglen[b] - w->log_off), (uint64_t)-1);
	io_uring_sqe_set_data(sqe, &w->op_log);
}

/* Hands buf[cur] to the ring and collects into the other one, which an
 * earlier write has emptied. */
static void log_flush(struct proxy_worker *w)
{
	unsigned cur = w->logcur;

	if (w->log_pending || w->loglen[cur] == 0 || w->p->cfg.access_log_fd < 0)
		return;
	w->log_pending = true;
	w->log_off = 0;
	w->logcur = cur ^ 1;
	w->loglen[w->logcur] = 0;
	log_submit(w);
}

static uint64_t count_lines(const char *p, size_t n)
{
	uint64_t k = 0;

	for (const char *e = p + n; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++)
		k++;
	return k;
}

static void on_log_written(struct proxy_worker *w, int res)
{
	unsigned b = w->logcur ^ 1;

	if (res == -EINTR || res == -EAGAIN) {
		log_submit(w);
		return;
	}
	if (res > 0 && w->log_off + (size_t)res < w->loglen[b]) {
		/* A short write: the rest, in order, before anything newer. */
		w->log_off += (size_t)res;
		log_submit(w);
		return;
	}
	if (res <= 0)
		atomic_fetch_add_explicit(&w->p->log_dropped,
					  count_lines(w->logbuf[b] + w->log_off,
						      w->loglen[b] - w->log_off),
					  memory_order_relaxed);
	w->loglen[b] = 0;
	w->log_off = 0;
	w->log_pending = false;
}

/* At worker exit: waits (bounded) for the write in flight, then writes what
 * is left synchronously. Lines keep their order; none is written twice. */
static void log_finish(struct proxy_worker *w)
{
	struct proxy *p = w->p;
	uint64_t deadline = proxy_now_ns() + 2000000000ull;
	unsigned cur;
	size_t off = 0;

	while (w->log_pending && proxy_now_ns() < deadline) {
		struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 100000000 };
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;

		io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
		io_uring_for_each_cqe(&w->ring, head, cqe) {
			struct proxy_op *op = (struct proxy_op *)(uintptr_t)cqe->user_data;

			/* Only the log's completion matters now; the rest are
			 * cancellations the ring exit would discard anyway. */
			if (op == &w->op_log)
				on_log_written(w, cqe->res);
			n++;
		}
		io_uring_cq_advance(&w->ring, n);
	}
	if (w->log_pending) {
		/* Never completed: its lines are not known to be out. */
		unsigned b = w->logcur ^ 1;

		atomic_fetch_add_explicit(&p->log_dropped,
					  count_lines(w->logbuf[b] + w->log_off,
						      w->loglen[b] - w->log_off),
					  memory_order_relaxed);
		w->loglen[b] = 0;
		w->log_pending = false;
	}
	cur = w->logcur;
	while (p->cfg.access_log_fd >= 0 && off < w->loglen[cur]) {
		ssize_t k = write(p->cfg.access_log_fd, w->logbuf[cur] + off, w->loglen[cur] - off);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			atomic_fetch_add_explicit(&p->log_dropped,
						  count_lines(w->logbuf[cur] + off,
							      w->loglen[cur] - off),
						  memory_order_relaxed);
			break;
		}
		off += (size_t)k;
	}
	w->loglen[cur] = 0;
}

static void access_log(struct proxy_conn *c, uint64_t dur_ns)
{
	struct proxy_worker *w = c->w;
	char line[768], path[300], *o = line;
	struct timespec now;
	size_t *len = &w->loglen[w->logcur], n;
	const char *q;
	unsigned ms;

	if (w->p->cfg.access_log_fd < 0 || !w->logbuf[0])
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	if (now.tv_sec != w->log_ts_sec || !w->log_ts_len) {
		/* The date part changes once a second: formatted then only. */
		struct tm tm;

		gmtime_r(&now.tv_sec, &tm);
		w->log_ts_len = strftime(w->log_ts, sizeof(w->log_ts), "%Y-%m-%dT%H:%M:%S", &tm);
		w->log_ts_sec = now.tv_sec;
	}
	/* Bounded pieces: ts 20, client 47, method 16, path 299 (quoted),
	 * three numbers 20 each, route 128, error ~30: under sizeof(line). */
	o = PROXY_PUT_LIT(o, "ts=");
	o = proxy_put(o, w->log_ts, w->log_ts_len);
	ms = (unsigned)(now.tv_nsec / 1000000);
	*o++ = '.';
	*o++ = (char)('0' + ms / 100);
	*o++ = (char)('0' + ms / 10 % 10);
	*o++ = (char)('0' + ms % 10);
	o = PROXY_PUT_LIT(o, "Z client=");
	o = proxy_put(o, c->peer_str, strlen(c->peer_str));
	o = PROXY_PUT_LIT(o, " method=");
	o = c->method[0] ? proxy_put(o, c->method, strlen(c->method)) : PROXY_PUT_LIT(o, "-");
	o = PROXY_PUT_LIT(o, " path=");
	q = log_quote(c->path_log, path, sizeof(path));
	o = proxy_put(o, q, strlen(q));
	o = PROXY_PUT_LIT(o, " status=");
	o += proxy_fmt_u64(o, (uint64_t)c->status);
	o = PROXY_PUT_LIT(o, " bytes=");
	o += proxy_fmt_u64(o, c->bytes_out);
	o = PROXY_PUT_LIT(o, " dur_us=");
	o += proxy_fmt_u64(o, dur_ns / 1000);
	o = PROXY_PUT_LIT(o, " route=");
	o = c->route_id_len ? proxy_put(o, c->route_id, c->route_id_len) : PROXY_PUT_LIT(o, "-");
	if (c->up_error) {
		o = PROXY_PUT_LIT(o, " error=");
		o = proxy_put(o, c->up_error, strnlen(c->up_error, 64));
	}
	*o++ = '\n';
	n = (size_t)(o - line);
	if (*len + n > PROXY_LOG_BUF_BYTES) {
		log_flush(w);
		len = &w->loglen[w->logcur];
		if (*len + n > PROXY_LOG_BUF_BYTES) {
			atomic_fetch_add_explicit(&w->p->log_dropped, 1, memory_order_relaxed);
			return;
		}
	}
	memcpy(w->logbuf[w->logcur] + *len, line, n);
	*len += n;
	if (*len > PROXY_LOG_BUF_BYTES / 2)
		log_flush(w);
}

/* ---- request completion ---- */

static void parse_loop(struct proxy_conn *c);

void proxy_conn_request_done(struct proxy_conn *c)
{
	struct proxy_worker *w = c->w;
	uint64_t now = w->now_ns;
	uint64_t dur = c->req_start_ns && now > c->req_start_ns ? now - c->req_start_ns : 0;

	if (c->status) {
		proxy_ltable_add(w->requests, c->route_hash, c->route_id, c->route_id_len, c->status, 1);
		metrics_histogram_observe(&w->p->latency, (double)dur / 1e9);
		access_log(c, dur);
	}
	if (c->up)
		proxy_up_detach(c, false);
	proxy_static_cleanup(c);
	c->status = 0;
	c->bytes_out = 0;
	c->route_id[0] = '\0';
	c->route_id_len = 0;
	c->route_hash = 0;
	c->method[0] = '\0';
	c->path_log[0] = '\0';
	c->up_error = NULL;
	c->body_mode = BODY_NONE;
	c->body_done = false;
	c->uhead.len = 0;
	c->uhead_sent = c->retried = c->resp_started = false;
	c->send_next = SN_NONE;
	c->deadline_kind = DL_NONE;
	c->is_head_method = false;
	if (c->close_after || w->draining) {
		conn_linger(c);
		return;
	}
	c->phase = PH_HEAD;
	c->last_len = 0;
	c->head_start_ns = 0;
	parse_loop(c);
}

/* ---- request head ---- */

static int host_for_decision(const struct http_request *req, char *out, size_t cap, size_t *len)
{
	struct http_str h = req->host.ptr ? req->host : req->authority;
	size_t n = h.ptr ? h.len : 0, i;

	/* Port removed; "[v6]:port" keeps its brackets. */
	if (n && h.ptr[0] == '[') {
		const char *e = memchr(h.ptr, ']', n);

		if (e)
			n = (size_t)(e - h.ptr) + 1;
	} else {
		const char *col = h.ptr ? memchr(h.ptr, ':', n) : NULL;

		if (col)
			n = (size_t)(col - h.ptr);
	}
	if (n >= cap)
		return -E2BIG;
	/* Lower-cased eight bytes at a time: bit 7 of each byte of `up` is
	 * set exactly for 'A'..'Z' (ASCII, >= 'A', not > 'Z'). */
	for (i = 0; i + 8 <= n; i += 8) {
		const uint64_t ones = 0x0101010101010101ull;
		uint64_t x, low, up;

		memcpy(&x, h.ptr + i, 8);
		low = x & (ones * 0x7f);
		up = ~x & ((low + ones * (0x80 - 'A')) ^ (low + ones * (0x80 - 'Z' - 1))) &
		     (ones * 0x80);
		x |= up >> 2;
		memcpy(out + i, &x, 8);
	}
	for (; i < n; i++) {
		char ch = h.ptr[i];

		out[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
	}
	/* A trailing dot names the same host. */
	if (n > 1 && out[n - 1] == '.')
		n--;
	out[n] = '\0';
	*len = n;
	return 0;
}

static const char *outcome_name(enum proxy_outcome o)
{
	static const char *const names[OUTCOME__COUNT] = {
		"allow", "deny", "no_route", "method_not_allowed", "rate_limited", "shadow",
		"limiter_full",
	};
	return names[o];
}

static void count_decision(struct proxy_worker *w, const struct decision *d)
{
	enum proxy_outcome o;
	const struct policy_res *rule = NULL;

	switch (d->verdict) {
	case DECISION_ALLOW:
		o = OUTCOME_ALLOW;
		rule = d->limit;
		break;
	case DECISION_DENY:
		o = OUTCOME_DENY;
		rule = d->access_list;
		break;
	case DECISION_NO_ROUTE:
		o = OUTCOME_NO_ROUTE;
		break;
	case DECISION_METHOD_NOT_ALLOWED:
		o = OUTCOME_METHOD;
		rule = d->route;
		break;
	default:
		o = OUTCOME_RATE_LIMITED;
		rule = d->limit;
		break;
	}
	proxy_ltable_add(w->decisions, rule ? rule->key_hash : 0, rule ? rule->id : "",
			 rule ? rule->id_len : 0, (int)o, 1);
	/* Each SHADOW limit the request exceeded, under its own id; past the
	 * first few (a route with more shadow limits than that) unnamed. */
	for (unsigned i = 0; i < d->shadow_rejects; i++) {
		rule = i < DECISION_MAX_SHADOW ? d->shadow[i] : NULL;
		proxy_ltable_add(w->decisions, rule ? rule->key_hash : 0, rule ? rule->id : "",
				 rule ? rule->id_len : 0, OUTCOME_SHADOW, 1);
	}
	if (d->limiter_full)
		proxy_ltable_add(w->decisions, 0, "", 0, OUTCOME_LIMITER_FULL, d->limiter_full);
	/* Per client: today only ALLOW and 429 identify one (access lists,
	 * routes and methods are decided first); any other verdict that
	 * names a client would be a refusal for it too. */
	if (d->client)
		proxy_ctable_count(&w->clients, d->client_key_hash, d->client->id,
				   d->client->id_len,
				   d->verdict == DECISION_ALLOW ? PROXY_CLIENT_ALLOWED
								: PROXY_CLIENT_REJECTED,
				   d->shadow_rejects != 0);
}

const char *proxy_outcome_name(int o)
{
	return o >= 0 && o < OUTCOME__COUNT ? outcome_name((enum proxy_outcome)o) : "unknown";
}

static uint64_t ceil_s(uint64_t ns)
{
	return (ns + 999999999ull) / 1000000000ull;
}

/* The draft-ietf-httpapi-ratelimit-headers (-08 .. -10) fields:
 * RateLimit-Policy: "<id>";q=<rate>;w=<unit s> and
 * RateLimit: "<id>";r=<remaining>;t=<s until full>. */
static size_t ratelimit_headers(struct proxy_worker *w, const struct snapshot *s,
				const struct decision *d, bool refused, char *out, size_t cap)
{
	const struct policy_rate_limit *rl;
	const struct limiter_result *r = &d->limit_result;
	size_t id_len;
	char *o = out;

	out[0] = '\0';
	if (!d->limit)
		return 0;
	rl = &d->limit->u.rate_limit;
	id_len = d->limit->id_len;
	/* Worst case: fixed text ~80 bytes, two ids, five 20-digit numbers. */
	if (2 * id_len + 200 > cap)
		return 0;
	if (refused) {
		uint64_t ra = ceil_s(r->retry_after_ns);

		o = PROXY_PUT_LIT(o, "Retry-After: ");
		o += proxy_fmt_u64(o, ra ? ra : 1);
		o = PROXY_PUT_LIT(o, "\r\n");
	}
	if (w->rl_len == 0 || w->rl_res != d->limit || w->rl_uid != snapshot_uid(s)) {
		char *f = w->rl_fixed;

		/* Fits: id_len <= POLICY_ID_MAX_LEN (checked above against cap
		 * for any id), fixed text 43 bytes, two 20-digit numbers. */
		f = PROXY_PUT_LIT(f, "RateLimit-Policy: \"");
		f = proxy_put(f, d->limit->id, id_len);
		f = PROXY_PUT_LIT(f, "\";q=");
		f += proxy_fmt_u64(f, rl->rate);
		f = PROXY_PUT_LIT(f, ";w=");
		f += proxy_fmt_u64(f, rl->unit_ns / 1000000000ull);
		f = PROXY_PUT_LIT(f, "\r\nRateLimit: \"");
		f = proxy_put(f, d->limit->id, id_len);
		f = PROXY_PUT_LIT(f, "\";r=");
		w->rl_len = (size_t)(f - w->rl_fixed);
		w->rl_res = d->limit;
		w->rl_uid = snapshot_uid(s);
	}
	o = proxy_put(o, w->rl_fixed, w->rl_len);
	o += proxy_fmt_u64(o, r->remaining);
	o = PROXY_PUT_LIT(o, ";t=");
	o += proxy_fmt_u64(o, ceil_s(refused && r->retry_after_ns > r->reset_ns ? r->retry_after_ns
										: r->reset_ns));
	o = PROXY_PUT_LIT(o, "\r\n");
	*o = '\0';
	return (size_t)(o - out);
}


static void handle_request(struct proxy_conn *c, const struct snapshot *s,
			   const struct http_request *req, size_t head_len)
{
	struct proxy_worker *w = c->w;
	struct proxy *p = w->p;
	const struct policy_settings *settings = snapshot_settings(s);
	struct decision_request drq;
	struct decision d;
	char host[POLICY_MAX_HOST_LEN + 8];
	size_t host_len = 0, mlen;
	const char *path = req->path.ptr;
	size_t path_len = req->path.len;
	const struct policy_route *rt;
	uint64_t max_body;
	uint64_t key_hash = 0;
	int r;

	/* The client's memo entry and counter slot are the likeliest cache
	 * misses of the request: start both before the work below. */
	if (req->client_id.ptr) {
		key_hash = decision_client_hint(req->client_id.ptr, req->client_id.len);
		proxy_ctable_prefetch(&w->clients, key_hash);
	}
	c->nreq++;
	c->req_start_ns = c->head_start_ns ? c->head_start_ns : w->now_ns;
	mlen = req->method.len < sizeof(c->method) - 1 ? req->method.len : sizeof(c->method) - 1;
	memcpy(c->method, req->method.ptr, mlen);
	c->method[mlen] = '\0';
	if (!path || path_len == 0) {
		path = "/";
		path_len = 1;
	}
	{
		size_t n = path_len < sizeof(c->path_log) - 1 ? path_len : sizeof(c->path_log) - 1;

		memcpy(c->path_log, path, n);
		c->path_log[n] = '\0';
	}
	c->is_head_method = req->method.len == 4 && memcmp(req->method.ptr, "HEAD", 4) == 0;
	c->http10 = req->version_minor == 0;
	c->keep_alive = req->keep_alive;
	c->close_after = !req->keep_alive || w->draining;
	c->bpos = c->rpos + head_len;
	c->body_done = false;
	if (req->chunked) {
		c->body_mode = BODY_CHUNKED;
	} else if (req->content_length > 0) {
		c->body_mode = BODY_LENGTH;
		c->body_left = (uint64_t)req->content_length;
	} else {
		c->body_mode = BODY_NONE;
		c->rpos = c->bpos;
	}

	if (req->target_form == HTTP_TARGET_AUTHORITY || req->target_form == HTTP_TARGET_ASTERISK) {
		/* CONNECT and "OPTIONS *" are not a reverse proxy's business. */
		proxy_conn_respond(c, req->target_form == HTTP_TARGET_AUTHORITY ? 405 : 400, NULL, 0,
				   false);
		return;
	}
	if (host_for_decision(req, host, sizeof(host), &host_len) < 0) {
		proxy_conn_respond(c, 400, NULL, 0, true);
		return;
	}
	/* Dot segments (also percent-encoded) could reach a path the decision
	 * did not see once a backend normalizes; refuse them. */
	r = proxy_path_decode(path, path_len, w->scratch, PROXY_UP_BUF_BYTES);
	if (r < 0) {
		proxy_conn_respond(c, 400, NULL, 0, false);
		return;
	}
	if (proxy_path_has_dot_segment(w->scratch, (size_t)r)) {
		proxy_conn_respond(c, 403, NULL, 0, false);
		return;
	}

	memset(&drq, 0, sizeof(drq));
	drq.host = host;
	drq.host_len = host_len;
	drq.path = path;
	drq.path_len = path_len;
	drq.method = req->method.ptr;
	drq.method_len = req->method.len;
	drq.client_key = req->client_id.ptr;
	drq.client_key_len = req->client_id.len;
	drq.client_key_hash = key_hash;
	drq.source = c->peer;
	decision_eval(s, p->cfg.limiter, &drq, w->now_ns, &d);
	count_decision(w, &d);
	if (d.route) {
		size_t n = d.route->id_len < sizeof(c->route_id) - 1 ? d.route->id_len
								      : sizeof(c->route_id) - 1;

		memcpy(c->route_id, d.route->id, n);
		c->route_id[n] = '\0';
		c->route_id_len = n;
		c->route_hash = d.route->key_hash;
	}
	/* Into the connection: a 429 carries them now, a proxied response
	 * once the upstream answers (start_response). */
	c->rl_hdr_len = ratelimit_headers(w, s, &d, d.verdict == DECISION_RATE_LIMITED, c->rl_hdr,
					  sizeof(c->rl_hdr));
	if (d.verdict != DECISION_ALLOW) {
		bool limited = d.verdict == DECISION_RATE_LIMITED;

		if (d.verdict == DECISION_METHOD_NOT_ALLOWED && d.route) {
			struct proxy_buf allow = {0};

			proxy_buf_str(&allow, "Allow: ");
			for (size_t i = 0; i < d.route->u.route.n_methods; i++) {
				proxy_buf_str(&allow, i ? ", " : "");
				proxy_buf_str(&allow, d.route->u.route.methods[i]);
			}
			proxy_buf_str(&allow, "\r\n");
			proxy_conn_respond(c, 405, allow.p, PROXY_BUF_FAILED(&allow) ? 0 : allow.len,
					   false);
			proxy_buf_free(&allow);
			return;
		}
		proxy_conn_respond(c, decision_http_status(d.verdict), c->rl_hdr,
				   limited ? c->rl_hdr_len : 0, false);
		return;
	}

	rt = &d.route->u.route;
	max_body = rt->max_body_bytes ? rt->max_body_bytes
				      : p->cfg.max_body_bytes ? p->cfg.max_body_bytes
							      : settings->max_body_bytes;
	if (req->content_length > 0 && (uint64_t)req->content_length > max_body) {
		proxy_conn_respond(c, 413, NULL, 0, true);
		return;
	}
	if (c->body_mode == BODY_CHUNKED) {
		struct http_limits lim = {
			.max_head_bytes = p->cfg.max_head_bytes,
			.max_body_bytes = max_body,
		};

		http_chunked_init(&c->chunked, &lim);
	}
	c->chunk_line[0] = '\0';
	if (rt->backend == POLICY_BACKEND_STATIC) {
		const char *rest = rt->match_prefix_len == 1 ? path : path + rt->match_prefix_len;
		size_t rest_len = rt->match_prefix_len == 1 ? path_len
							    : path_len - rt->match_prefix_len;

		proxy_static_serve(c, rt, rest, rest_len, req->method.ptr, req->method.len);
		return;
	} else {
		const struct policy_res *up = snapshot_get_ref(s, POLICY_KIND_UPSTREAM, &rt->upstream);
		struct proxy_route_target t = { rt, up ? &up->u.upstream : NULL, settings };

		if (!up) {
			c->up_error = "upstream_missing";
			proxy_conn_respond(c, 503, NULL, 0, false);
			return;
		}
		proxy_up_start(c, req, head_len, &t);
	}
}

static void parse_loop(struct proxy_conn *c)
{
	struct proxy_worker *w = c->w;
	struct proxy *p = w->p;
	struct http_request req;
	struct http_limits lim;
	const struct snapshot *s;
	int r;

	if (c->closing)
		return;
	if (c->rlen == c->rpos) {
		c->rpos = c->rlen = 0;
		c->last_len = 0;
		if (w->draining && c->nreq > 0) {
			conn_close(c);
			return;
		}
		if (c->nreq > 0)
			proxy_conn_set_deadline(c, DL_IDLE, p->cfg.idle_timeout_ms);
		else if (c->deadline_kind != DL_HEADER)
			proxy_conn_set_deadline(c, DL_HEADER, p->cfg.header_timeout_ms);
		proxy_conn_recv(c);
		return;
	}
	if (c->last_len == 0 && c->head_start_ns == 0) {
		c->head_start_ns = w->now_ns;
		c->deadline_kind = DL_HEADER;
		c->deadline_ns = c->head_start_ns + (uint64_t)p->cfg.header_timeout_ms * 1000000ull;
	}

	memset(&req, 0, sizeof(req));
	req.headers = w->headers;
	req.headers_cap = PROXY_MAX_FIELDS;
	memset(&lim, 0, sizeof(lim));
	lim.max_head_bytes = p->cfg.max_head_bytes;
	lim.max_fields = PROXY_MAX_FIELDS;
	lim.max_body_bytes = POLICY_MAX_BODY_BYTES; /* the route's limit is checked later */

	snapshot_read_lock();
	s = snapshot_cell_get(p->cfg.policy);
	lim.client_id_name = s ? snapshot_settings(s)->client_id_header
			       : POLICY_DEFAULT_CLIENT_ID_HEADER;
	r = http_parse_request(c->rbuf + c->rpos, c->rlen - c->rpos, c->last_len, &req, &lim);
	if (r == -EAGAIN) {
		snapshot_read_unlock();
		c->last_len = c->rlen - c->rpos;
		if (c->rlen == c->rcap && c->rpos == 0) {
			proxy_conn_respond(c, 431, NULL, 0, true);
			return;
		}
		proxy_conn_recv(c);
		return;
	}
	if (r < 0) {
		snapshot_read_unlock();
		c->method[0] = '\0';
		proxy_conn_respond(c, http_error_status(req.error), NULL, 0, true);
		return;
	}
	c->deadline_kind = DL_NONE;
	if (!s) {
		snapshot_read_unlock();
		c->up_error = "no_policy";
		proxy_conn_respond(c, 503, NULL, 0, !req.keep_alive);
		return;
	}
	c->req_cid = req.client_id.ptr;
	c->req_cid_len = req.client_id.len;
	handle_request(c, s, &req, (size_t)r);
	c->req_cid = NULL;
	snapshot_read_unlock();
}

/* ---- completions ---- */

static void deliver(struct proxy_conn *c)
{
	if (c->lingering) {
		/* Lingering: discard until EOF or the deadline. */
		c->rpos = c->rlen = 0;
		proxy_conn_recv(c);
		return;
	}
	switch (c->phase) {
	case PH_HEAD:
		parse_loop(c);
		break;
	case PH_UPSTREAM:
		proxy_up_body_more(c);
		break;
	default:
		/* A response is under way; bytes wait for the next request. */
		break;
	}
}

static void on_crecv(struct proxy_conn *c, int res)
{
	c->recv_pending = false;
	c->inflight--;
	if (c->closing)
		return;
	if (res <= 0) {
		conn_close(c);
		return;
	}
	/* A single shot after the ring ran dry: the next one tries the
	 * multishot again. */
	c->ms_off = false;
	got_bytes(c, (size_t)res);
}

static void iov_advance(struct proxy_conn *c, size_t n)
{
	unsigned i = 0;

	while (i < c->iovcnt && n >= c->iov[i].iov_len) {
		n -= c->iov[i].iov_len;
		i++;
	}
	if (i < c->iovcnt) {
		c->iov[i].iov_base = (char *)c->iov[i].iov_base + n;
		c->iov[i].iov_len -= n;
	}
	memmove(c->iov, c->iov + i, (c->iovcnt - i) * sizeof(c->iov[0]));
	c->iovcnt -= i;
}

static void send_done(struct proxy_conn *c)
{
	c->deadline_kind = DL_NONE;
	switch (c->send_next) {
	case SN_DONE:
		proxy_conn_request_done(c);
		break;
	case SN_CONTINUE:
		proxy_up_begin(c);
		break;
	case SN_RELAY:
		proxy_up_relay_sent(c);
		break;
	case SN_STATIC:
		proxy_static_sent(c);
		break;
	default:
		break;
	}
}

/* Encrypts what fits of the plaintext in c->iov and keeps one ciphertext
 * send in flight; the plaintext send completes once all of it is out. */
static void tls_pump_send(struct proxy_conn *c)
{
	const void *data;
	size_t len;

	while (c->tls_job && c->iovcnt) {
		ssize_t k = tls_conn_write(c->tls, c->iov[0].iov_base, c->iov[0].iov_len);

		if (k == -EAGAIN)
			break;
		if (k < 0) {
			conn_close(c);
			return;
		}
		c->bytes_out += (uint64_t)k;
		iov_advance(c, (size_t)k);
	}
	if (c->send_pending)
		return;
	len = tls_conn_pending(c->tls, &data);
	if (len) {
		struct io_uring_sqe *sqe = proxy_get_sqe(c->w);

		io_uring_prep_send(sqe, c->fd, data, len, MSG_NOSIGNAL);
		proxy_sqe_fixed(sqe, c->fixed);
		io_uring_sqe_set_data(sqe, &c->op_send);
		c->send_pending = true;
		c->inflight++;
		return;
	}
	if (c->tls_job && c->iovcnt == 0) {
		c->tls_job = false;
		send_done(c);
	}
}

static void on_csend(struct proxy_conn *c, int res)
{
	c->send_pending = false;
	c->inflight--;
	if (c->closing)
		return;
	if (res < 0) {
		conn_close(c);
		return;
	}
	if (c->tls) {
		tls_conn_consume(c->tls, (size_t)res);
		tls_pump_send(c);
		return;
	}
	c->bytes_out += (uint64_t)res;
	iov_advance(c, (size_t)res);
	if (c->iovcnt) {
		proxy_conn_send(c, c->send_next);
		return;
	}
	send_done(c);
}

static void on_timeout(struct proxy_conn *c, enum proxy_deadline k)
{
	struct proxy *p = c->w->p;

	atomic_fetch_add_explicit(&p->conns_timed_out, 1, memory_order_relaxed);
	switch (k) {
	case DL_IDLE:
		conn_close(c);
		break;
	case DL_HEADER:
		if (c->recv_pending)
			proxy_cancel(c->w, &c->op_recv);
		c->want = false; /* later bytes wait in pend */
		c->body_mode = BODY_NONE;
		proxy_conn_respond(c, 408, NULL, 0, true);
		break;
	case DL_BODY:
		if (c->recv_pending)
			proxy_cancel(c->w, &c->op_recv);
		c->want = false;
		if (c->up)
			proxy_up_detach(c, false);
		if (c->resp_started) {
			conn_close(c);
			break;
		}
		c->body_mode = BODY_NONE;
		proxy_conn_respond(c, 408, NULL, 0, true);
		break;
	case DL_UP_CONNECT:
	case DL_UP_READ:
		proxy_up_timeout(c, k);
		break;
	default:
		conn_close(c);
		break;
	}
}

static void set_peer(struct proxy_conn *c)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	c->peer_str[0] = '\0';
	if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) == 0 && sl <= sizeof(c->peer_sa)) {
		memcpy(&c->peer_sa, &ss, sl);
		c->peer_sa_len = sl;
	}
	if (c->peer_sa_len == 0 ||
	    cidr_addr_from_sockaddr((struct sockaddr *)&ss, &c->peer) < 0) {
		memset(&c->peer, 0, sizeof(c->peer));
		c->peer.family = AF_INET;
		snprintf(c->peer_str, sizeof(c->peer_str), "unknown");
		return;
	}
	inet_ntop(c->peer.family, c->peer.addr, c->peer_str, sizeof(c->peer_str));
}

static void on_accept(struct proxy_worker *w, unsigned which, int res, uint32_t flags)
{
	struct proxy *p = w->p;
	struct proxy_conn *c;
	unsigned open;
	int one = 1;

	if (!(flags & IORING_CQE_F_MORE))
		w->accept_armed[which] = false;
	if (res < 0)
		return;
	if (w->draining) {
		close(res);
		return;
	}
	open = atomic_fetch_add_explicit(&p->conns_open, 1, memory_order_relaxed);
	if (open >= p->cfg.max_connections) {
		atomic_fetch_sub_explicit(&p->conns_open, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&p->conns_refused_cap, 1, memory_order_relaxed);
		close(res);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c)
		c->rcap = p->cfg.max_head_bytes + 8192;
	if (c && which == 1) {
		int r = tls_conn_new(p->cfg.tls, res, &c->tls);

		/* The engine's kTLS handshake does socket I/O itself: not
		 * driven by this worker (this kernel has no TLS ULP). */
		if (r == 0 && tls_conn_on_socket(c->tls)) {
			tls_conn_free(c->tls);
			c->tls = NULL;
			r = -EOPNOTSUPP;
		}
		if (r < 0 || !(c->tls_in = malloc(PROXY_TLS_IN_BYTES))) {
			if (r == -EOPNOTSUPP)
				atomic_fetch_add_explicit(&p->conns_refused_tls, 1,
							  memory_order_relaxed);
			tls_conn_free(c->tls);
			free(c);
			c = NULL;
		}
	}
	if (!c || !(c->rbuf = malloc(c->rcap))) {
		if (c) {
			tls_conn_free(c->tls);
			free(c->tls_in);
		}
		free(c);
		atomic_fetch_sub_explicit(&p->conns_open, 1, memory_order_relaxed);
		close(res);
		return;
	}
	atomic_fetch_add_explicit(&p->conns_accepted, 1, memory_order_relaxed);
	c->w = w;
	c->fd = res;
	c->tls_port = which == 1;
	c->file_fd = -1;
	c->pipe_fd[0] = c->pipe_fd[1] = -1;
	c->op_recv = (struct proxy_op){ OP_CRECV, c };
	c->op_mrecv = (struct proxy_op){ OP_CRECV_MS, c };
	c->op_send = (struct proxy_op){ OP_CSEND, c };
	c->op_splice = (struct proxy_op){ OP_SPLICE_IN, c };
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fixed = proxy_fixed_add(w, c->fd);
	set_peer(c);
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->n_conns++;
	c->phase = PH_HEAD;
	parse_loop(c);
}

static void arm_accepts(struct proxy_worker *w)
{
	for (unsigned i = 0; i < 2; i++) {
		struct io_uring_sqe *sqe;

		if (w->listen_fd[i] < 0 || w->accept_armed[i])
			continue;
		sqe = proxy_get_sqe(w);
		io_uring_prep_multishot_accept(sqe, w->listen_fd[i], NULL, NULL, SOCK_CLOEXEC);
		io_uring_sqe_set_data(sqe, &w->op_accept[i]);
		w->accept_armed[i] = true;
	}
}

static void dispatch(struct proxy_worker *w, uint64_t data, int res, uint32_t flags)
{
	struct proxy_op *op = (struct proxy_op *)(uintptr_t)data;
	struct proxy_conn *c;

	if (!op)
		return;
	switch (op->kind) {
	case OP_ACCEPT:
		on_accept(w, op == &w->op_accept[0] ? 0 : 1, res, flags);
		return;
	case OP_LOGWRITE:
		on_log_written(w, res);
		return;
	case OP_UCONNECT:
	case OP_USEND:
	case OP_URECV:
	case OP_URECV_MS:
		proxy_up_cqe(op->owner, op->kind, res, flags);
		return;
	default:
		break;
	}
	c = op->owner;
	switch (op->kind) {
	case OP_CRECV:
		on_crecv(c, res);
		break;
	case OP_CRECV_MS:
		on_mrecv(c, res, flags);
		break;
	case OP_CSEND:
		on_csend(c, res);
		break;
	case OP_SPLICE_IN:
	case OP_SPLICE_OUT:
		c->splice_pending = false;
		c->inflight--;
		if (!c->closing)
			proxy_static_cqe(c, op->kind, res);
		break;
	default:
		break;
	}
	conn_maybe_free(c);
}

static void start_drain(struct proxy_worker *w)
{
	struct proxy_conn *c, *next;

	w->draining = true;
	for (unsigned i = 0; i < 2; i++) {
		if (w->listen_fd[i] < 0)
			continue;
		if (w->accept_armed[i])
			proxy_cancel(w, &w->op_accept[i]);
		/* The ring holds its own reference while the accept is
		 * cancelled; closing now refuses new connections at once. */
		close(w->listen_fd[i]);
		w->listen_fd[i] = -1;
	}
	/* Idle keep-alive connections have nothing in flight: close them. */
	for (c = w->conns; c; c = next) {
		next = c->next;
		if (c->phase == PH_HEAD && c->rlen == c->rpos && !c->closing)
			conn_close(c);
	}
}

static void tick(struct proxy_worker *w, uint64_t now)
{
	struct proxy *p = w->p;
	struct proxy_conn *c, *next;

	if (!w->draining && atomic_load_explicit(&p->draining, memory_order_acquire))
		start_drain(w);
	if (w->draining && now >= p->drain_deadline_ns) {
		for (c = w->conns; c; c = next) {
			next = c->next;
			if (!c->closing) {
				atomic_fetch_add_explicit(&p->forced_closes, 1, memory_order_relaxed);
				conn_close(c);
			}
		}
	}
	for (c = w->conns; c; c = next) {
		next = c->next;
		if (c->deadline_kind != DL_NONE && !c->closing && now >= c->deadline_ns) {
			enum proxy_deadline k = c->deadline_kind;

			c->deadline_kind = DL_NONE;
			on_timeout(c, k);
		}
	}
	proxy_up_tick(w, now);
	log_flush(w);
}

/* The provided buffer ring of the client multishot receives. Without it
 * (old kernel, no memory, SLUICE_PROXY_RECV_BUFS=0) every receive is a
 * single shot, as before. */
static void pbuf_init(struct proxy_worker *w)
{
	const char *env = getenv("SLUICE_PROXY_RECV_BUFS");
	unsigned n = PROXY_PBUF_COUNT;
	struct io_uring_buf_reg reg;
	void *ring = NULL;
	int r;

	if (env && *env) {
		unsigned long v = strtoul(env, NULL, 10);

		/* A power of two up to 32768 (the ring's limit), else off. */
		n = v && v <= 32768 && !(v & (v - 1)) ? (unsigned)v : 0;
	}
	if (n == 0)
		return;
	if (posix_memalign(&ring, 4096, n * sizeof(struct io_uring_buf)) != 0)
		return;
	memset(ring, 0, n * sizeof(struct io_uring_buf));
	w->pbuf_mem = malloc((size_t)n * PROXY_PBUF_BYTES);
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)ring;
	reg.ring_entries = n;
	reg.bgid = PROXY_PBUF_GROUP;
	r = w->pbuf_mem ? io_uring_register_buf_ring(&w->ring, &reg, 0) : -ENOMEM;
	if (r < 0) {
		log_debug("No provided buffer ring, single-shot receives", "worker=%u err=%d",
			  w->idx, r);
		free(ring);
		free(w->pbuf_mem);
		w->pbuf_mem = NULL;
		return;
	}
	w->pbr = ring;
	w->pbuf_n = n;
	io_uring_buf_ring_init(w->pbr);
	for (unsigned i = 0; i < n; i++)
		io_uring_buf_ring_add(w->pbr, w->pbuf_mem + (size_t)i * PROXY_PBUF_BYTES,
				      PROXY_PBUF_BYTES, (unsigned short)i, io_uring_buf_ring_mask(n),
				      (int)i);
	io_uring_buf_ring_advance(w->pbr, (int)n);
}

static int worker_init(struct proxy_worker *w)
{
	struct io_uring_params params;
	struct rlimit rl;
	int r;

	memset(&params, 0, sizeof(params));
	params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	r = io_uring_queue_init_params(PROXY_RING_ENTRIES, &w->ring, &params);
	if (r == -EINVAL) {
		memset(&params, 0, sizeof(params));
		r = io_uring_queue_init_params(PROXY_RING_ENTRIES, &w->ring, &params);
	}
	if (r < 0)
		return r;
	/* A registered ring fd spares io_uring_enter its fdget/fdput; liburing
	 * uses it by itself once registered. Without it (old kernel) the
	 * plain fd works the same. */
	if (io_uring_register_ring_fd(&w->ring) < 0)
		log_debug("Ring fd not registered, using the plain fd", "worker=%u", w->idx);
	w->ring_ok = true;
	/* A sparse file table as large as the fd limit allows (capped: 8
	 * bytes a slot), so that a socket's fd can be its slot. Refused
	 * (old kernel, memory): every socket uses its plain fd. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		unsigned n = rl.rlim_cur > PROXY_FIXED_FILES_MAX ? PROXY_FIXED_FILES_MAX
								 : (unsigned)rl.rlim_cur;

		if (n > 0 && io_uring_register_files_sparse(&w->ring, n) == 0)
			w->n_fixed = n;
		else
			log_debug("No registered file table, using plain fds", "worker=%u", w->idx);
	}
	pbuf_init(w);
	w->op_accept[0] = (struct proxy_op){ OP_ACCEPT, w };
	w->op_accept[1] = (struct proxy_op){ OP_ACCEPT, w };
	w->op_log = (struct proxy_op){ OP_LOGWRITE, w };
	return 0;
}

static void pin_cpu(struct proxy_worker *w)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	cpu_set_t set;

	if (ncpu <= 0)
		return;
	CPU_ZERO(&set);
	CPU_SET((int)(w->idx % (unsigned long)ncpu), &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
		log_debug("Failed to pin worker, ignoring", "worker=%u", w->idx);
}

void *proxy_worker_main(void *arg)
{
	struct proxy_worker *w = arg;
	struct proxy *p = w->p;
	struct io_uring_cqe *cqes[64];
	int r;

	if (p->cfg.pin_cpus)
		pin_cpu(w);
	r = worker_init(w);
	if (r < 0) {
		int zero = 0;

		atomic_compare_exchange_strong(&p->workers_failed, &zero, r);
		atomic_fetch_add(&p->workers_ready, 1);
		return NULL;
	}
	snapshot_thread_online();
	arm_accepts(w);
	io_uring_submit(&w->ring);
	atomic_fetch_add(&p->workers_ready, 1);
	w->now_ns = proxy_now_ns();
	w->next_tick_ns = w->now_ns + PROXY_TICK_MS * 1000000ull;

	for (;;) {
		struct __kernel_timespec ts;
		struct io_uring_cqe *cqe;
		uint64_t now = w->now_ns;
		uint64_t wait = w->next_tick_ns > now ? w->next_tick_ns - now : 0;
		unsigned n;

		ts.tv_sec = (long long)(wait / 1000000000ull);
		ts.tv_nsec = (long long)(wait % 1000000000ull);
		r = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
		(void)r;
		while ((n = io_uring_peek_batch_cqe(&w->ring, cqes, 64)) > 0) {
			struct { uint64_t data; int res; uint32_t flags; } batch[64];

			w->now_ns = proxy_now_ns();
			for (unsigned i = 0; i < n; i++) {
				batch[i].data = cqes[i]->user_data;
				batch[i].res = cqes[i]->res;
				batch[i].flags = cqes[i]->flags;
			}
			io_uring_cq_advance(&w->ring, n);
			for (unsigned i = 0; i < n; i++)
				dispatch(w, batch[i].data, batch[i].res, batch[i].flags);
			reap(w);
		}
		now = w->now_ns = proxy_now_ns();
		if (now >= w->next_tick_ns) {
			tick(w, now);
			reap(w);
			w->next_tick_ns = now + PROXY_TICK_MS * 1000000ull;
		}
		if (w->draining) {
			if (w->n_conns == 0)
				break;
			if (now >= p->drain_deadline_ns + 2000000000ull)
				break; /* operations that never completed; the ring exit cancels them */
		} else {
			arm_accepts(w);
		}
	}

	/* The write in flight (or still queued: a tick may have prepared it
	 * right before the loop ended) completes first, then the rest. */
	if (w->logbuf[0])
		log_finish(w);
	io_uring_queue_exit(&w->ring);
	w->ring_ok = false;
	if (w->pbuf_nobufs)
		log_debug("Receive buffer ring ran dry", "worker=%u times=%llu", w->idx,
			  (unsigned long long)w->pbuf_nobufs);
	/* The kernel dropped its view of the buffers with the ring. */
	free(w->pbr);
	free(w->pbuf_mem);
	w->pbr = NULL;
	w->pbuf_mem = NULL;
	w->pbuf_n = 0;
	/* The ring is gone: whatever it still referred to can go too. */
	proxy_up_free_all(w);
	while (w->conns) {
		struct proxy_conn *c = w->conns;

		c->up = NULL;
		c->closing = true;
		c->inflight = 0;
		conn_maybe_free(c);
	}
	reap(w);
	snapshot_thread_offline();
	return NULL;
}
