/* upstream.c - the proxy's side toward upstreams: per-worker keep-alive
 * pools per endpoint, connect with failover, the rewritten request head,
 * request bodies (Content-Length passed through, chunked decoded and
 * re-chunked), and the response relay (Content-Length, chunked or
 * close-delimited) with hop-by-hop fields removed.
 *
 * Invariants: an upstream connection serves one client request at a time;
 * it goes back to its pool only after a complete, well-framed response on
 * a persistent connection. An idle pooled connection keeps one receive
 * armed, so a close by the upstream is seen at once.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "bytes.h"
#include "proxy_internal.h"

/* ---- header helpers ---- */

/* Field names are compared once per field per request: the length and the
 * first byte (ASCII lower-cased) rule out almost every pair before the
 * case-insensitive compare. `lit` must be a lower-case string literal. */
static inline bool name_eq(const struct http_str *n, const char *lit, size_t l)
{
	return n->len == l && (n->ptr[0] | 0x20) == lit[0] && bytes_eq_lower(n->ptr, lit, l);
}
#define name_is(n, lit) name_eq((n), "" lit "", sizeof(lit) - 1)

/* Fields that describe one hop (RFC 9110 7.6.1) or the framing we redo.
 * Dispatched on the length: one compare at most for the common fields. */
static inline __attribute__((always_inline)) bool hop_by_hop(const struct http_str *n)
{
	switch (n->len) {
	case 2:
		return name_is(n, "te");
	case 7:
		if (name_is(n, "trailer") || name_is(n, "upgrade"))
			return true;
		break; /* "proxy-x" is seven bytes too */
	case 10:
		if (name_is(n, "connection") || name_is(n, "keep-alive"))
			return true;
		break;
	case 17:
		if (name_is(n, "transfer-encoding"))
			return true;
		break;
	default:
		break;
	}
	return n->len >= 6 && (n->ptr[0] | 0x20) == 'p' && bytes_eq_lower(n->ptr, "proxy-", 6);
}

/* The comma-separated tokens of every Connection field. */
#define CONN_TOKENS_MAX 16
struct conn_tokens {
	struct http_str t[CONN_TOKENS_MAX];
	unsigned n;
	bool close, keep_alive;
};

static void collect_conn_tokens(const struct http_header *h, size_t nh, struct conn_tokens *ct)
{
	memset(ct, 0, sizeof(*ct));
	for (size_t i = 0; i < nh; i++) {
		const char *p, *end;

		if (!name_is(&h[i].name, "connection"))
			continue;
		p = h[i].value.ptr;
		end = p + h[i].value.len;
		while (p < end) {
			const char *s, *e;
			struct http_str tok;

			while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
				p++;
			s = p;
			while (p < end && *p != ',')
				p++;
			e = p;
			while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
				e--;
			if (e == s)
				continue;
			tok.ptr = s;
			tok.len = (size_t)(e - s);
			if (name_is(&tok, "close"))
				ct->close = true;
			else if (name_is(&tok, "keep-alive"))
				ct->keep_alive = true;
			else if (ct->n < CONN_TOKENS_MAX)
				ct->t[ct->n++] = tok;
		}
	}
}

static bool named_by_connection(const struct conn_tokens *ct, const struct http_str *n)
{
	for (unsigned i = 0; i < ct->n; i++)
		if (ct->t[i].len == n->len && strncasecmp(ct->t[i].ptr, n->ptr, n->len) == 0)
			return true;
	return false;
}

/* ---- pools ---- */

static void resolve(struct proxy_upool *pool, const struct policy_endpoint *ep)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&pool->addr;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&pool->addr;
	struct addrinfo hints, *res = NULL;
	char port[8];

	memset(&pool->addr, 0, sizeof(pool->addr));
	if (inet_pton(AF_INET, ep->host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(ep->port);
		pool->addr_len = sizeof(*sin);
		return;
	}
	if (inet_pton(AF_INET6, ep->host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(ep->port);
		pool->addr_len = sizeof(*sin6);
		return;
	}
	/* A name: resolved once per worker, when first used (blocking). */
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%u", ep->port);
	if (getaddrinfo(ep->host, port, &hints, &res) != 0 || !res) {
		pool->resolve_err = -EHOSTUNREACH;
		return;
	}
	memcpy(&pool->addr, res->ai_addr, res->ai_addrlen);
	pool->addr_len = res->ai_addrlen;
	freeaddrinfo(res);
}

static struct proxy_upool *pool_get(struct proxy_worker *w, const struct policy_endpoint *ep)
{
	size_t hl = strlen(ep->host), n;
	struct proxy_upool *pool;

	/* Per request: compared field by field, the key is formatted once. */
	for (pool = w->pools; pool; pool = pool->next)
		if (pool->port == ep->port && pool->host_len == hl &&
		    memcmp(pool->key, ep->host, hl) == 0)
			return pool;
	if (hl + 7 > sizeof(pool->key))
		return NULL;
	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return NULL;
	memcpy(pool->key, ep->host, hl);
	pool->key[hl] = ':';
	n = proxy_fmt_u64(pool->key + hl + 1, ep->port);
	pool->key[hl + 1 + n] = '\0';
	pool->host_len = hl;
	pool->port = ep->port;
	resolve(pool, ep);
	pool->next = w->pools;
	w->pools = pool;
	return pool;
}

static void upconn_unlink_idle(struct proxy_upconn *u)
{
	struct proxy_upconn **pp;

	if (!u->idle)
		return;
	for (pp = &u->pool->idle; *pp; pp = &(*pp)->next) {
		if (*pp == u) {
			*pp = u->next;
			u->pool->n_idle--;
			break;
		}
	}
	u->idle = false;
	u->next = NULL;
}

static void upconn_maybe_free(struct proxy_upconn *u)
{
	struct proxy_worker *w = u->w;

	if (!u->closing || u->inflight || u->dead)
		return;
	u->dead = true;
	if (u->fixed)
		proxy_fixed_del(w, u->fd);
	close(u->fd);
	if (u->all_prev)
		u->all_prev->all_next = u->all_next;
	else
		w->upconns = u->all_next;
	if (u->all_next)
		u->all_next->all_prev = u->all_prev;
	free(u->rbuf);
	u->rbuf = NULL;
	proxy_buf_free(&u->pend);
	u->next = w->dead_ups;
	w->dead_ups = u;
}

void proxy_up_reap(struct proxy_worker *w)
{
	while (w->dead_ups) {
		struct proxy_upconn *u = w->dead_ups;

		w->dead_ups = u->next;
		free(u);
	}
}

static void upconn_close(struct proxy_upconn *u)
{
	if (u->closing)
		return;
	u->closing = true;
	upconn_unlink_idle(u);
	u->c = NULL;
	shutdown(u->fd, SHUT_RDWR);
	if (u->connect_pending)
		proxy_cancel(u->w, &u->op_connect);
	if (u->send_pending)
		proxy_cancel(u->w, &u->op_send);
	if (u->recv_pending)
		proxy_cancel(u->w, &u->op_recv);
	if (u->ms_armed && !u->ms_cancel) {
		u->ms_cancel = true;
		proxy_cancel(u->w, &u->op_mrecv);
	}
	u->want = false;
	upconn_maybe_free(u);
}

static void on_recv(struct proxy_upconn *u, int res);

/* Receiving works as for client connections (worker.c, "receiving"): one
 * multishot receive over the worker's provided buffers while the
 * connection is idle in its pool or waits for a response head (the
 * request/response turn of a keep-alive connection then needs no receive
 * submitted and no poll armed), bytes copied into rbuf when wanted, else
 * kept in pend (past PROXY_PEND_MAX the receive is cancelled); a response
 * body is read with single shots into rbuf, as large as it takes. */
static void arm_urecv(struct proxy_upconn *u)
{
	struct io_uring_sqe *sqe = proxy_get_sqe(u->w);

	io_uring_prep_recv(sqe, u->fd, u->rbuf + u->rlen, PROXY_UP_BUF_BYTES - u->rlen, 0);
	proxy_sqe_fixed(sqe, u->fixed);
	/* Armed right after a request went out or when the connection goes
	 * idle: nothing to read yet, so skip the attempt and wait. */
	sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
	io_uring_sqe_set_data(sqe, &u->op_recv);
	u->recv_pending = true;
	u->inflight++;
}

static void arm_umrecv(struct proxy_upconn *u)
{
	struct io_uring_sqe *sqe = proxy_get_sqe(u->w);

	io_uring_prep_recv_multishot(sqe, u->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = PROXY_PBUF_GROUP;
	proxy_sqe_fixed(sqe, u->fixed);
	io_uring_sqe_set_data(sqe, &u->op_mrecv);
	u->ms_armed = true;
	u->inflight++;
}

/* Wants bytes at rbuf + rlen: from pend, a remembered EOF/error, or a
 * receive. May deliver (on_recv) before it returns. */
static void urecv(struct proxy_upconn *u)
{
	size_t avail = u->pend.len - u->pend_off, room = PROXY_UP_BUF_BYTES - u->rlen;

	if (u->recv_pending || u->want || u->closing)
		return;
	if (avail) {
		size_t n = avail < room ? avail : room;

		if (n == 0)
			return; /* never: a full rbuf is a 502 before any receive */

		memcpy(u->rbuf + u->rlen, u->pend.p + u->pend_off, n);
		u->pend_off += n;
		if (u->pend_off == u->pend.len)
			u->pend_off = u->pend.len = 0;
		on_recv(u, (int)n);
		return;
	}
	if (u->peer_end) {
		u->peer_end = false;
		on_recv(u, u->peer_res);
		return;
	}
	if (u->ms_armed) {
		u->want = true;
		return;
	}
	if (u->w->pbuf_n && !u->ms_off && (!u->c || !u->head_done)) {
		arm_umrecv(u);
		u->want = true;
		return;
	}
	arm_urecv(u);
}

static void upend_add(struct proxy_upconn *u, const char *data, size_t n)
{
	proxy_buf_add(&u->pend, data, n);
	if (PROXY_BUF_FAILED(&u->pend)) {
		/* Lost bytes: the connection cannot go on. */
		u->pend.len = u->pend_off = 0;
		u->peer_end = true;
		u->peer_res = -ENOMEM;
		if (u->ms_armed && !u->ms_cancel) {
			u->ms_cancel = true;
			proxy_cancel(u->w, &u->op_mrecv);
		}
		return;
	}
	if (u->pend.len - u->pend_off >= PROXY_PEND_MAX && u->ms_armed && !u->ms_cancel) {
		u->ms_cancel = true;
		proxy_cancel(u->w, &u->op_mrecv);
	}
}

static void on_umrecv(struct proxy_upconn *u, int res, uint32_t flags)
{
	struct proxy_worker *w = u->w;
	bool last = !(flags & IORING_CQE_F_MORE);

	if (last) {
		u->ms_armed = false;
		u->ms_cancel = false;
		u->inflight--;
	}
	if (flags & IORING_CQE_F_BUFFER) {
		unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
		const char *data = proxy_pbuf(w, bid);
		size_t n = res > 0 ? (size_t)res : 0, room = PROXY_UP_BUF_BYTES - u->rlen;

		if (n && !u->closing && u->peer_end)
			n = 0; /* after a failure nothing more counts */
		if (n && !u->closing) {
			if (u->want && u->pend.len == u->pend_off && room) {
				size_t k = n < room ? n : room;

				memcpy(u->rbuf + u->rlen, data, k);
				u->want = false;
				if (k < n)
					upend_add(u, data + k, n - k);
				proxy_pbuf_give_back(w, bid);
				on_recv(u, (int)k);
				goto after;
			}
			upend_add(u, data, n);
		}
		proxy_pbuf_give_back(w, bid);
	}
after:
	if (u->closing) {
		upconn_maybe_free(u);
		return;
	}
	if (res == -ENOBUFS) {
		u->ms_off = true;
	} else if (res == 0 || (res < 0 && res != -ECANCELED)) {
		u->peer_end = true;
		u->peer_res = res;
	}
	if (last && u->want) {
		u->want = false;
		urecv(u);
	}
}

static void usend(struct proxy_upconn *u)
{
	struct io_uring_sqe *sqe;

	sqe = proxy_get_sqe(u->w);
	if (u->iovcnt == 1) {
		/* The common case (a request without a body): send has no
		 * msghdr for the kernel to copy in. */
		io_uring_prep_send(sqe, u->fd, u->iov[0].iov_base, u->iov[0].iov_len, MSG_NOSIGNAL);
	} else {
		memset(&u->msg, 0, sizeof(u->msg));
		u->msg.msg_iov = u->iov;
		u->msg.msg_iovlen = u->iovcnt;
		io_uring_prep_sendmsg(sqe, u->fd, &u->msg, MSG_NOSIGNAL);
	}
	proxy_sqe_fixed(sqe, u->fixed);
	io_uring_sqe_set_data(sqe, &u->op_send);
	u->send_pending = true;
	u->inflight++;
}

void proxy_up_detach(struct proxy_conn *c, bool reusable)
{
	struct proxy_upconn *u = c->up;
	struct proxy_worker *w = c->w;

	if (!u)
		return;
	c->up = NULL;
	u->c = NULL;
	if (reusable && !u->closing && !w->draining && u->pool->n_idle < c->pool_cap &&
	    !u->send_pending) {
		u->idle = true;
		u->reused = false;
		u->head_done = false;
		u->head_scanned = 0;
		u->rlen = 0;
		u->idle_since_ns = w->now_ns;
		u->next = u->pool->idle;
		u->pool->idle = u;
		u->pool->n_idle++;
		urecv(u);
		return;
	}
	upconn_close(u);
}

void proxy_up_tick(struct proxy_worker *w, uint64_t now)
{
	uint64_t ttl = (uint64_t)w->p->cfg.upstream_idle_timeout_ms * 1000000ull;

	for (struct proxy_upool *pool = w->pools; pool; pool = pool->next) {
		struct proxy_upconn *u = pool->idle, *next;

		for (; u; u = next) {
			next = u->next;
			if (w->draining || now - u->idle_since_ns >= ttl)
				upconn_close(u);
		}
	}
}

void proxy_up_free_all(struct proxy_worker *w)
{
	while (w->upconns) {
		struct proxy_upconn *u = w->upconns;

		u->closing = true;
		u->inflight = 0;
		upconn_maybe_free(u);
	}
	proxy_up_reap(w);
	while (w->pools) {
		struct proxy_upool *pool = w->pools;

		w->pools = pool->next;
		free(pool);
	}
}

/* ---- failures toward the client ---- */

static void fail(struct proxy_conn *c, int status, const char *why)
{
	c->up_error = why;
	atomic_fetch_add_explicit(&c->w->p->up_errors, 1, memory_order_relaxed);
	proxy_up_detach(c, false);
	if (c->resp_started) {
		proxy_conn_abort(c);
		return;
	}
	proxy_conn_respond(c, status, NULL, 0, false);
}

/* ---- request head ---- */

static void add_target(struct proxy_buf *b, const struct policy_route *rt,
		       const struct http_request *req)
{
	const char *path = req->path.len ? req->path.ptr : "/";
	size_t len = req->path.len ? req->path.len : 1;

	if (rt->rewrite_prefix) {
		/* "/api/" -> "/app/": the matched prefix (without its trailing
		 * '/') is replaced by the rewrite (without its trailing '/'). */
		size_t skip = rt->match_prefix_len == 1 ? 0 : rt->match_prefix_len;
		const char *rw = rt->rewrite_prefix;
		size_t rwlen = strlen(rw);

		if (rwlen && rw[rwlen - 1] == '/')
			rwlen--;
		if (rwlen + (len - skip) == 0) {
			proxy_buf_add(b, "/", 1);
		} else {
			proxy_buf_add(b, rw, rwlen);
			if (len - skip && path[skip] != '/')
				proxy_buf_add(b, "/", 1);
			proxy_buf_add(b, path + skip, len - skip);
			if (len == skip && rwlen == 0)
				proxy_buf_add(b, "/", 1);
		}
	} else {
		proxy_buf_add(b, path, len);
	}
	if (req->query.ptr) {
		proxy_buf_add(b, "?", 1);
		proxy_buf_add(b, req->query.ptr, req->query.len);
	}
}

/* What build_head does with a request field. */
enum fwd_kind { FK_COPY = 0, FK_HOST, FK_DROP, FK_XFF, FK_FWD, FK_VIA };

/* One switch on the length, then at most two compares: hop-by-hop fields
 * (RFC 9110 7.6.1) and the framing we redo are dropped, the hop-trail
 * fields merged with this hop appended. */
static enum fwd_kind fwd_kind(const struct http_str *n)
{
	switch (n->len) {
	case 3:
		if (name_is(n, "via"))
			return FK_VIA;
		break;
	case 4:
		if (name_is(n, "host"))
			return FK_HOST;
		break;
	case 6:
		if (name_is(n, "expect"))
			return FK_DROP;
		break;
	case 9:
		if (name_is(n, "forwarded"))
			return FK_FWD;
		break;
	case 14:
		if (name_is(n, "content-length"))
			return FK_DROP;
		break;
	case 15:
		if (name_is(n, "x-forwarded-for"))
			return FK_XFF;
		break;
	default:
		break;
	}
	/* te, trailer, upgrade, connection, keep-alive, transfer-encoding,
	 * proxy-*: also a switch on the length. */
	return hop_by_hop(n) ? FK_DROP : FK_COPY;
}

/* One past the CRLF that ends field h's line: the parser accepted only
 * "name:" OWS value OWS CRLF, so OWS is all that can follow the value. */
static const char *field_line_end(const struct http_header *h)
{
	const char *e = h->value.ptr + h->value.len;

	while (*e == ' ' || *e == '\t')
		e++;
	return e + 2;
}

/* The field line of one trail field (kind) up to our value: its name,
 * then the earlier hops' values in order when the request had any. */
static void add_trail(struct proxy_buf *b, const struct http_request *req, enum fwd_kind kind,
		      bool any, const char *out, size_t out_len)
{
	bool seen = false;

	for (size_t i = 0; any && i < req->num_headers; i++) {
		const struct http_header *h = &req->headers[i];

		if (h->value.len == 0 || fwd_kind(&h->name) != kind)
			continue;
		if (seen)
			proxy_buf_add(b, ", ", 2);
		else
			proxy_buf_add(b, out, out_len);
		proxy_buf_add(b, h->value.ptr, h->value.len);
		seen = true;
	}
	if (seen)
		proxy_buf_add(b, ", ", 2);
	else
		proxy_buf_add(b, out, out_len);
}

/* Our X-Forwarded-For value and its CRLF: the client's address. */
static char *put_xff(char *o, const struct proxy_conn *c, size_t peer_len)
{
	o = proxy_put(o, c->peer_str, peer_len);
	return PROXY_PUT_LIT(o, "\r\n");
}

/* Our Forwarded value and its CRLF: for="[v6]";proto=https at most. */
static char *put_forwarded(char *o, const struct proxy_conn *c, size_t peer_len)
{
	bool v6 = c->peer.family == AF_INET6;

	o = v6 ? PROXY_PUT_LIT(o, "for=\"[") : PROXY_PUT_LIT(o, "for=");
	o = proxy_put(o, c->peer_str, peer_len);
	o = v6 ? PROXY_PUT_LIT(o, "]\";proto=") : PROXY_PUT_LIT(o, ";proto=");
	return c->tls_port ? PROXY_PUT_LIT(o, "https\r\n") : PROXY_PUT_LIT(o, "http\r\n");
}

/* The upstream's request head. Fields pass through as the client wrote
 * them (the parser admits only strict field lines), each run of fields
 * we keep in one copy; hop-by-hop ones and those named by Connection are
 * dropped; X-Forwarded-For, Forwarded and Via come last with this hop. */
static void build_head(struct proxy_conn *c, const struct http_request *req,
		       const struct policy_route *rt, const char *default_host)
{
	struct proxy_buf *b = &c->uhead;
	struct conn_tokens ct;
	bool host = false, conn = false;
	unsigned trail = 0; /* bit k: a field of kind FK_XFF + k was seen */
	size_t run = 0, peer_len = strlen(c->peer_str);
	char *o;

	b->len = 0;
	ct.n = 0; /* the rest only once collected */
	/* Connection may name further fields to drop: only then the list. */
	for (size_t i = 0; i < req->num_headers && !conn; i++)
		conn = req->headers[i].name.len == 10 && name_is(&req->headers[i].name, "connection");
	if (conn)
		collect_conn_tokens(req->headers, req->num_headers, &ct);
	proxy_buf_add(b, req->method.ptr, req->method.len);
	proxy_buf_add(b, " ", 1);
	add_target(b, rt, req);
	proxy_buf_add(b, " HTTP/1.1\r\n", 11);
	for (size_t i = 0; i < req->num_headers; i++) {
		const struct http_header *h = &req->headers[i];
		enum fwd_kind k = fwd_kind(&h->name);

		if (k >= FK_XFF)
			trail |= 1u << (k - FK_XFF);
		else if (ct.n && named_by_connection(&ct, &h->name))
			k = FK_DROP;
		if (k == FK_HOST)
			host = true;
		if (k == FK_COPY || k == FK_HOST)
			continue;
		if (run < i) /* fields run..i-1 are kept: one copy */
			proxy_buf_add(b, req->headers[run].name.ptr,
				      (size_t)(h->name.ptr - req->headers[run].name.ptr));
		run = i + 1;
	}
	if (run < req->num_headers)
		proxy_buf_add(b, req->headers[run].name.ptr,
			      (size_t)(field_line_end(&req->headers[req->num_headers - 1]) -
				       req->headers[run].name.ptr));
	if (!host) {
		proxy_buf_add(b, "Host: ", 6);
		if (req->authority.ptr)
			proxy_buf_add(b, req->authority.ptr, req->authority.len);
		else
			proxy_buf_str(b, default_host);
		proxy_buf_add(b, "\r\n", 2);
	}
	/* Earlier hops first, in their order, then ours. Without earlier
	 * hops (the usual case) all of our lines and the framing fit one
	 * room: both values ~30 bytes with the address, ~80 after them. */
	if (!trail) {
		o = proxy_buf_room(b, 200 + 2 * peer_len);
		if (!o)
			return;
		o = PROXY_PUT_LIT(o, "X-Forwarded-For: ");
		o = put_xff(o, c, peer_len);
		o = PROXY_PUT_LIT(o, "Forwarded: ");
		o = put_forwarded(o, c, peer_len);
		o = PROXY_PUT_LIT(o, "Via: ");
	} else {
		add_trail(b, req, FK_XFF, trail & 1, "X-Forwarded-For: ", 17);
		if (!(o = proxy_buf_room(b, 40 + peer_len)))
			return;
		proxy_buf_commit(b, put_xff(o, c, peer_len));
		add_trail(b, req, FK_FWD, trail & 2, "Forwarded: ", 11);
		if (!(o = proxy_buf_room(b, 40 + peer_len)))
			return;
		proxy_buf_commit(b, put_forwarded(o, c, peer_len));
		add_trail(b, req, FK_VIA, trail & 4, "Via: ", 5);
		if (!(o = proxy_buf_room(b, 80)))
			return;
	}
	o = req->version_minor == 0 ? PROXY_PUT_LIT(o, "1.0 sluice\r\n")
				    : PROXY_PUT_LIT(o, "1.1 sluice\r\n");
	if (c->body_mode == BODY_LENGTH) {
		o = PROXY_PUT_LIT(o, "Content-Length: ");
		o += proxy_fmt_u64(o, c->body_left);
		o = PROXY_PUT_LIT(o, "\r\n");
	} else if (c->body_mode == BODY_CHUNKED) {
		o = PROXY_PUT_LIT(o, "Transfer-Encoding: chunked\r\n");
	}
	o = PROXY_PUT_LIT(o, "\r\n");
	proxy_buf_commit(b, o);
}

void proxy_up_start(struct proxy_conn *c, const struct http_request *req, size_t head_len,
		    const struct proxy_route_target *t)
{
	struct proxy_worker *w = c->w;
	const struct proxy_config *cfg = &w->p->cfg;
	const struct policy_upstream *up = t->upstream;
	static const char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";
	unsigned start;

	(void)head_len;
	c->up_connect_timeout_ms = cfg->upstream_connect_timeout_ms ? cfg->upstream_connect_timeout_ms
								     : up->connect_timeout_ms;
	c->up_read_timeout_ms = cfg->upstream_read_timeout_ms ? cfg->upstream_read_timeout_ms
			       : t->route->request_timeout_ms ? t->route->request_timeout_ms
							      : up->read_timeout_ms;
	c->pool_cap = cfg->upstream_idle_per_worker ? cfg->upstream_idle_per_worker
						    : up->keepalive_pool_size;
	c->n_alt = 0;
	c->alt_idx = 0;
	start = w->rr++;
	for (size_t i = 0; i < up->n_endpoints && c->n_alt < 8; i++) {
		struct proxy_upool *pool = pool_get(w, &up->parsed[(start + i) % up->n_endpoints]);

		if (pool)
			c->alt[c->n_alt++] = pool;
	}
	if (c->n_alt == 0) {
		fail(c, 503, "no_endpoint");
		return;
	}
	build_head(c, req, t->route, c->alt[0]->key);
	if (PROXY_BUF_FAILED(&c->uhead)) {
		fail(c, 503, "no_memory");
		return;
	}
	c->phase = PH_UPSTREAM;
	if (req->expect_continue && c->body_mode != BODY_NONE && c->rlen == c->bpos) {
		c->wbuf.len = 0;
		proxy_buf_add(&c->wbuf, continue_line, sizeof(continue_line) - 1);
		c->iov[0].iov_base = c->wbuf.p;
		c->iov[0].iov_len = c->wbuf.len;
		c->iovcnt = 1;
		proxy_conn_send(c, SN_CONTINUE);
		return;
	}
	proxy_up_begin(c);
}

/* ---- connecting ---- */

static void pump_body(struct proxy_conn *c);

static void connect_new(struct proxy_conn *c)
{
	struct proxy_worker *w = c->w;
	struct proxy_upool *pool;
	struct proxy_upconn *u;
	struct io_uring_sqe *sqe;
	int fd, one = 1;

	while (c->alt_idx < c->n_alt && c->alt[c->alt_idx]->resolve_err)
		c->alt_idx++;
	if (c->alt_idx >= c->n_alt) {
		fail(c, c->up_error ? 502 : 503, c->up_error ? c->up_error : "resolve");
		return;
	}
	pool = c->alt[c->alt_idx];
	fd = socket(pool->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fail(c, 503, "socket");
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	u = calloc(1, sizeof(*u));
	if (u && !(u->rbuf = malloc(PROXY_UP_BUF_BYTES))) {
		free(u);
		u = NULL;
	}
	if (!u) {
		close(fd);
		fail(c, 503, "no_memory");
		return;
	}
	u->w = w;
	u->pool = pool;
	u->fd = fd;
	u->fixed = proxy_fixed_add(w, fd);
	u->op_connect = (struct proxy_op){ OP_UCONNECT, u };
	u->op_send = (struct proxy_op){ OP_USEND, u };
	u->op_recv = (struct proxy_op){ OP_URECV, u };
	u->op_mrecv = (struct proxy_op){ OP_URECV_MS, u };
	u->all_next = w->upconns;
	if (w->upconns)
		w->upconns->all_prev = u;
	w->upconns = u;
	u->c = c;
	c->up = u;
	c->pool = pool;
	atomic_fetch_add_explicit(&w->p->up_connects, 1, memory_order_relaxed);
	sqe = proxy_get_sqe(w);
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)&pool->addr, pool->addr_len);
	io_uring_sqe_set_data(sqe, &u->op_connect);
	u->connect_pending = true;
	u->inflight++;
	proxy_conn_set_deadline(c, DL_UP_CONNECT, c->up_connect_timeout_ms);
}

void proxy_up_begin(struct proxy_conn *c)
{
	struct proxy_upool *pool = c->alt[0];
	struct proxy_upconn *u;

	c->phase = PH_UPSTREAM;
	/* A retried request skips the pool: its connection just failed. */
	while (!c->retried && (u = pool->idle)) {
		upconn_unlink_idle(u);
		if (u->closing || u->rlen) {
			upconn_close(u);
			continue;
		}
		u->c = c;
		u->reused = true;
		c->up = u;
		c->pool = pool;
		atomic_fetch_add_explicit(&c->w->p->up_reuses, 1, memory_order_relaxed);
		pump_body(c);
		return;
	}
	connect_new(c);
}

/* ---- request body ---- */

static void wait_response(struct proxy_conn *c);

static void pump_body(struct proxy_conn *c)
{
	struct proxy_upconn *u = c->up;
	size_t avail = c->rlen - c->bpos;

	u->iovcnt = 0;
	if (!c->uhead_sent) {
		u->iov[u->iovcnt].iov_base = c->uhead.p;
		u->iov[u->iovcnt++].iov_len = c->uhead.len;
	}
	c->pump_ends = false;
	switch (c->body_mode) {
	case BODY_NONE:
		c->pump_ends = true;
		c->pump_rpos = c->rpos;
		c->pump_rlen = c->rlen;
		break;
	case BODY_LENGTH: {
		size_t n = avail < c->body_left ? avail : (size_t)c->body_left;

		if (n) {
			u->iov[u->iovcnt].iov_base = c->rbuf + c->bpos;
			u->iov[u->iovcnt++].iov_len = n;
		}
		c->body_left -= n;
		c->pump_ends = c->body_left == 0;
		c->pump_rpos = c->pump_ends ? c->bpos + n : 0;
		c->pump_rlen = c->pump_ends ? c->rlen : 0;
		break;
	}
	case BODY_CHUNKED: {
		size_t len = avail;
		int r = avail ? http_chunked_decode(&c->chunked, c->rbuf + c->bpos, &len) : -EAGAIN;

		if (r == -EBADMSG) {
			/* The rest of the body cannot be framed: answer, then close. */
			c->body_done = true;
			c->close_after = true;
			fail(c, http_error_status(c->chunked.error), "bad_chunked_body");
			return;
		}
		if (!avail)
			len = 0;
		if (len) {
			snprintf(c->chunk_line, sizeof(c->chunk_line), "%zx\r\n", len);
			u->iov[u->iovcnt].iov_base = c->chunk_line;
			u->iov[u->iovcnt++].iov_len = strlen(c->chunk_line);
			u->iov[u->iovcnt].iov_base = c->rbuf + c->bpos;
			u->iov[u->iovcnt++].iov_len = len;
			u->iov[u->iovcnt].iov_base = (char *)"\r\n";
			u->iov[u->iovcnt++].iov_len = 2;
		}
		if (r >= 0) {
			/* Trailers are dropped: the decoder consumed them. */
			u->iov[u->iovcnt].iov_base = (char *)"0\r\n\r\n";
			u->iov[u->iovcnt++].iov_len = 5;
			c->pump_ends = true;
			c->pump_rpos = c->bpos + len;
			c->pump_rlen = c->pump_rpos + (size_t)r;
		} else {
			c->pump_rpos = c->pump_rlen = 0;
		}
		break;
	}
	}
	if (u->iovcnt == 0) {
		/* Only chunk framing arrived: read on. */
		c->rpos = c->rlen = c->bpos = 0;
		proxy_conn_set_deadline(c, DL_BODY, c->w->p->cfg.body_timeout_ms);
		proxy_conn_recv(c);
		return;
	}
	c->uhead_sent = true;
	usend(u);
	/* An upstream that stops reading the request counts as not answering. */
	proxy_conn_set_deadline(c, DL_UP_READ, c->up_read_timeout_ms);
}

/* The body send finished: the client buffer is ours again. */
static void body_sent(struct proxy_conn *c)
{
	if (c->pump_ends) {
		c->body_done = true;
		c->rpos = c->bpos = c->pump_rpos;
		c->rlen = c->pump_rlen;
		wait_response(c);
		return;
	}
	c->rpos = c->rlen = c->bpos = 0;
	proxy_conn_set_deadline(c, DL_BODY, c->w->p->cfg.body_timeout_ms);
	proxy_conn_recv(c);
}

void proxy_up_body_more(struct proxy_conn *c)
{
	if (!c->up || c->body_done) {
		/* The response is decided (or the upstream gone): bytes wait. */
		return;
	}
	pump_body(c);
}

/* ---- response ---- */

static void relay(struct proxy_conn *c, size_t start);

static void wait_response(struct proxy_conn *c)
{
	struct proxy_upconn *u = c->up;

	proxy_conn_set_deadline(c, DL_UP_READ, c->up_read_timeout_ms);
	if (u->rlen) {
		relay(c, 0);
		return;
	}
	urecv(u);
}

/* Builds the client's response head from the upstream's (rh->headers). */
static int start_response(struct proxy_conn *c, const struct http_response *rh)
{
	struct proxy_upconn *u = c->up;
	struct proxy_buf *b = &c->wbuf;
	const struct http_header *hdrs = rh->headers;
	struct conn_tokens ct;
	size_t run = 0;

	if (rh->status == 304 || rh->status == 204 || c->is_head_method)
		u->mode = RESP_NONE;
	else if (rh->chunked)
		u->mode = RESP_CHUNKED;
	else if (rh->te_not_chunked)
		u->mode = RESP_CLOSE;
	else if (rh->content_length >= 0)
		u->mode = RESP_LENGTH;
	else
		u->mode = RESP_CLOSE;
	u->left = rh->content_length > 0 ? (uint64_t)rh->content_length : 0;
	u->keep_alive = rh->keep_alive;
	/* Transfer-Encoding wins over Content-Length (RFC 9112 6.3), but a
	 * sender that framed both ways is not trusted with the next request. */
	if ((rh->chunked || rh->te_not_chunked) && rh->content_length >= 0)
		u->keep_alive = false;
	/* Options named by Connection are dropped too; the parser says whether
	 * there are any, so the usual "keep-alive" costs no second scan. */
	if (rh->conn_other)
		collect_conn_tokens(hdrs, rh->num_headers, &ct);
	else
		ct.n = 0;
	if (u->mode == RESP_CHUNKED) {
		struct http_limits lim = { .max_body_bytes = UINT64_MAX / 4 };

		http_chunked_init(&u->ch, &lim);
	}
	if (u->mode == RESP_CLOSE || (u->mode == RESP_CHUNKED && c->http10))
		c->close_after = true;
	if (c->w->draining)
		c->close_after = true;

	b->len = 0;
	/* "HTTP/1.1 200 OK" goes as it came; anything else is rewritten to
	 * our version with a reason (possibly empty) after a SP. */
	if (rh->version_minor == 1 && u->rbuf[12] == ' ') {
		proxy_buf_add(b, u->rbuf, (size_t)(rh->reason.ptr + rh->reason.len + 2 - u->rbuf));
	} else {
		char *o = proxy_buf_room(b, 40 + rh->reason.len);

		if (!o)
			return -ENOMEM;
		o = PROXY_PUT_LIT(o, "HTTP/1.1 ");
		o += proxy_fmt_u64(o, (uint64_t)rh->status);
		*o++ = ' ';
		o = proxy_put(o, rh->reason.ptr, rh->reason.len);
		o = PROXY_PUT_LIT(o, "\r\n");
		proxy_buf_commit(b, o);
	}
	/* Fields pass as the upstream wrote them, a run of kept ones per copy
	 * (the parser admits only strict field lines), less the hop-by-hop
	 * ones and a Content-Length the framing no longer matches. Our Via
	 * entry is a line of its own after the upstream's (RFC 9110 7.6.3:
	 * several Via lines are one list, in order). */
	for (size_t i = 0; i < rh->num_headers; i++) {
		const struct http_header *h = &hdrs[i];
		bool drop;

		if (h->name.len == 14)
			drop = name_is(&h->name, "content-length") &&
			       (u->mode == RESP_CHUNKED || u->mode == RESP_CLOSE);
		else
			drop = hop_by_hop(&h->name);
		if (!drop && ct.n && named_by_connection(&ct, &h->name))
			drop = true;
		if (!drop)
			continue;
		if (run < i)
			proxy_buf_add(b, hdrs[run].name.ptr,
				      (size_t)(h->name.ptr - hdrs[run].name.ptr));
		run = i + 1;
	}
	if (run < rh->num_headers)
		proxy_buf_add(b, hdrs[run].name.ptr,
			      (size_t)(field_line_end(&hdrs[rh->num_headers - 1]) -
				       hdrs[run].name.ptr));
	{
		size_t rl = c->rl_hdr_len;
		char *o = proxy_buf_room(b, 120 + rl);

		if (!o)
			return -ENOMEM;
		o = rh->version_minor ? PROXY_PUT_LIT(o, "Via: 1.1 sluice\r\n")
				      : PROXY_PUT_LIT(o, "Via: 1.0 sluice\r\n");
		if (u->mode == RESP_CHUNKED && !c->http10)
			o = PROXY_PUT_LIT(o, "Transfer-Encoding: chunked\r\n");
		o = proxy_put(o, c->rl_hdr, rl);
		if (c->close_after)
			o = PROXY_PUT_LIT(o, "Connection: close\r\n");
		else if (c->http10)
			o = PROXY_PUT_LIT(o, "Connection: keep-alive\r\n");
		o = PROXY_PUT_LIT(o, "\r\n");
		proxy_buf_commit(b, o);
	}
	if (PROXY_BUF_FAILED(b))
		return -ENOMEM;
	c->status = rh->status;
	c->resp_started = true;
	u->head_done = true;
	return 0;
}

/* Relays u->rbuf[start..rlen) (after a head, if any, went into c->iov). */
static void relay(struct proxy_conn *c, size_t start)
{
	struct proxy_upconn *u = c->up;
	size_t seg, n = 0;
	char *data = u->rbuf + start;
	bool ends = false;

	if (!u->head_done) {
		struct http_response rh = { .headers = c->w->headers,
					    .headers_cap = PROXY_MAX_FIELDS };
		int r;

		for (;;) {
			/* A head split over receives: only the new bytes are
			 * looked at for its end, so an upstream dripping it
			 * byte by byte costs no quadratic work. */
			r = http_parse_response(u->rbuf, u->rlen, u->head_scanned, &rh);
			if (r == -EAGAIN) {
				if (u->rlen == PROXY_UP_BUF_BYTES) {
					fail(c, 502, "response_head_too_large");
					return;
				}
				u->head_scanned = u->rlen;
				urecv(u);
				return;
			}
			u->head_scanned = 0;
			if (r < 0) {
				fail(c, 502, "bad_response");
				return;
			}
			if (rh.status >= 100 && rh.status < 200) {
				if (rh.status == 101) {
					fail(c, 502, "unexpected_upgrade");
					return;
				}
				/* Interim responses are ours to drop: we
				 * sent no Expect and asked for no upgrade. */
				memmove(u->rbuf, u->rbuf + r, u->rlen - (size_t)r);
				u->rlen -= (size_t)r;
				continue;
			}
			break;
		}
		if (start_response(c, &rh) < 0) {
			fail(c, 502, "no_memory");
			return;
		}
		start = (size_t)r;
		data = u->rbuf + start;
		c->iov[0].iov_base = c->wbuf.p;
		c->iov[0].iov_len = c->wbuf.len;
		c->iovcnt = 1;
	} else {
		c->iovcnt = 0;
	}
	seg = u->rlen - start;
	switch (u->mode) {
	case RESP_NONE:
		ends = true;
		if (seg)
			u->keep_alive = false;
		break;
	case RESP_LENGTH:
		n = seg < u->left ? seg : (size_t)u->left;
		u->left -= n;
		ends = u->left == 0;
		if (seg > n)
			u->keep_alive = false;
		break;
	case RESP_CHUNKED: {
		size_t len = seg;
		int r;

		if (c->http10) {
			/* Decoded in place, sent close-delimited. */
			r = seg ? http_chunked_decode(&u->ch, data, &len) : -EAGAIN;
			if (!seg)
				len = 0;
			n = len;
		} else {
			/* Passed through as received; a copy is decoded only
			 * to find where the body ends. */
			memcpy(c->w->scratch, data, seg);
			r = seg ? http_chunked_decode(&u->ch, c->w->scratch, &len) : -EAGAIN;
			n = r >= 0 ? seg - (size_t)r : seg;
		}
		if (r == -EBADMSG) {
			fail(c, 502, "bad_chunked_response");
			return;
		}
		if (r >= 0) {
			ends = true;
			if (r > 0)
				u->keep_alive = false;
		}
		break;
	}
	case RESP_CLOSE:
		n = seg;
		break;
	}
	if (n && c->iovcnt == 1 && n <= PROXY_MERGE_BODY_BYTES) {
		/* A small body goes out with the head in one plain send: a
		 * copy of a few bytes costs less than a sendmsg with two iovecs. */
		proxy_buf_add(&c->wbuf, data, n);
		if (PROXY_BUF_FAILED(&c->wbuf)) {
			fail(c, 502, "no_memory");
			return;
		}
		c->iov[0].iov_base = c->wbuf.p;
		c->iov[0].iov_len = c->wbuf.len;
	} else if (n) {
		c->iov[c->iovcnt].iov_base = data;
		c->iov[c->iovcnt++].iov_len = n;
	}
	u->relay_ends = ends;
	c->deadline_kind = DL_NONE;
	if (c->iovcnt == 0) {
		u->rlen = 0;
		if (ends) {
			proxy_up_relay_sent(c);
			return;
		}
		proxy_conn_set_deadline(c, DL_UP_READ, c->up_read_timeout_ms);
		urecv(u);
		return;
	}
	proxy_conn_send(c, SN_RELAY);
}

void proxy_up_relay_sent(struct proxy_conn *c)
{
	struct proxy_upconn *u = c->up;

	if (!u) {
		proxy_conn_request_done(c);
		return;
	}
	u->rlen = 0;
	if (u->relay_ends) {
		proxy_up_detach(c, u->keep_alive && u->mode != RESP_CLOSE);
		proxy_conn_request_done(c);
		return;
	}
	proxy_conn_set_deadline(c, DL_UP_READ, c->up_read_timeout_ms);
	urecv(u);
}

static void on_recv(struct proxy_upconn *u, int res)
{
	struct proxy_conn *c = u->c;

	if (!c) {
		/* Idle in the pool: the upstream closed it or sent what it
		 * should not have. Either way it is no longer reusable. */
		upconn_close(u);
		return;
	}
	if (res <= 0) {
		if (!u->head_done && u->rlen == 0 && u->reused && !c->retried &&
		    c->body_mode == BODY_NONE) {
			/* A pooled connection the upstream had closed: once,
			 * on a fresh connection. */
			c->retried = true;
			c->uhead_sent = false;
			proxy_up_detach(c, false);
			connect_new(c);
			return;
		}
		if (res == 0 && u->head_done && u->mode == RESP_CLOSE) {
			u->relay_ends = true;
			u->keep_alive = false;
			c->close_after = true;
			proxy_up_relay_sent(c);
			return;
		}
		fail(c, 502, res == 0 ? "upstream_closed" : "upstream_reset");
		return;
	}
	u->rlen += (size_t)res;
	if (!c->body_done) {
		/* An early response: relayed once the request is sent. */
		return;
	}
	relay(c, 0);
}

void proxy_up_cqe(struct proxy_upconn *u, uint8_t kind, int res, uint32_t flags)
{
	struct proxy_conn *c;

	if (kind == OP_URECV_MS) {
		on_umrecv(u, res, flags);
		return;
	}
	u->inflight--;
	switch (kind) {
	case OP_UCONNECT:
		u->connect_pending = false;
		break;
	case OP_USEND:
		u->send_pending = false;
		break;
	default:
		u->recv_pending = false;
		/* The next receive may try the multishot again. */
		u->ms_off = false;
		break;
	}
	if (u->closing) {
		upconn_maybe_free(u);
		return;
	}
	c = u->c;
	if (kind == OP_URECV) {
		on_recv(u, res);
		return;
	}
	if (!c)
		return;
	if (kind == OP_UCONNECT) {
		if (res < 0) {
			c->up_error = res == -ECONNREFUSED ? "connect_refused" : "connect_failed";
			proxy_up_detach(c, false);
			c->alt_idx++;
			connect_new(c);
			return;
		}
		u->connected = true;
		pump_body(c);
		return;
	}
	/* OP_USEND */
	if (res < 0) {
		if (u->reused && !c->retried && c->body_mode == BODY_NONE) {
			c->retried = true;
			c->uhead_sent = false;
			proxy_up_detach(c, false);
			connect_new(c);
			return;
		}
		fail(c, 502, "upstream_write");
		return;
	}
	{
		size_t left = (size_t)res;
		unsigned i = 0;

		while (i < u->iovcnt && left >= u->iov[i].iov_len)
			left -= u->iov[i++].iov_len;
		if (i < u->iovcnt) {
			u->iov[i].iov_base = (char *)u->iov[i].iov_base + left;
			u->iov[i].iov_len -= left;
			memmove(u->iov, u->iov + i, (u->iovcnt - i) * sizeof(u->iov[0]));
			u->iovcnt -= i;
			usend(u);
			return;
		}
	}
	body_sent(c);
}

void proxy_up_timeout(struct proxy_conn *c, enum proxy_deadline k)
{
	if (k == DL_UP_CONNECT) {
		fail(c, 504, "connect_timeout");
		return;
	}
	fail(c, 504, "read_timeout");
}
