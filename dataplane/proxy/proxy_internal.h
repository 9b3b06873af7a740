/* proxy_internal.h - what the proxy's files (proxy.c, worker.c, upstream.c,
 * static.c) share: the proxy, its workers, client and upstream connections.
 *
 * Invariants: a worker's connections, pools and tables are touched only by
 * its own thread (no locks on the request path); the only cross-thread
 * state is in struct proxy (atomics) and the metrics tables (single writer,
 * readers use acquire loads). A connection is freed only once no io_uring
 * operation refers to it (inflight == 0).
 */
#ifndef SLUICE_PROXY_INTERNAL_H
#define SLUICE_PROXY_INTERNAL_H

#include <liburing.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "http.h"
#include "metrics.h"
#include "proxy.h"

/* Resolved defaults (see proxy.h for what 0 means in the config). */
#define PROXY_DEFAULT_MAX_CONNECTIONS 10000u
#define PROXY_DEFAULT_HEADER_TIMEOUT_MS 10000u
#define PROXY_DEFAULT_BODY_TIMEOUT_MS 30000u
#define PROXY_DEFAULT_IDLE_TIMEOUT_MS 60000u
#define PROXY_DEFAULT_UP_CONNECT_TIMEOUT_MS 2000u
#define PROXY_DEFAULT_UP_READ_TIMEOUT_MS 30000u
#define PROXY_DEFAULT_UP_IDLE_PER_WORKER 32u
#define PROXY_DEFAULT_UP_IDLE_TIMEOUT_MS 60000u
#define PROXY_DEFAULT_DRAIN_TIMEOUT_MS 10000u

#define PROXY_RING_ENTRIES 1024u
#define PROXY_FIXED_FILES_MAX 65536u  /* registered file table slots per worker, at most */
#define PROXY_TICK_MS 50u            /* timeout resolution */
#define PROXY_UP_BUF_BYTES (32u * 1024) /* upstream receive buffer = max response head */
#define PROXY_MAX_FIELDS 100u
#define PROXY_IN_MEMORY_MAX_BYTES (1u << 20) /* larger in-memory files are spliced */
#define PROXY_SPLICE_CHUNK (64u * 1024)       /* default pipe capacity */
#define PROXY_LOG_BUF_BYTES (64u * 1024)
#define PROXY_TLS_IN_BYTES (17u * 1024)   /* one TLS record and then some */
#define PROXY_MERGE_BODY_BYTES 4096u      /* relayed bodies up to this join the head's send */
/* Client receives: one multishot receive per connection over a per-worker
 * ring of provided buffers (count a power of two; SLUICE_PROXY_RECV_BUFS
 * overrides it, 0 = single-shot receives only). Bytes are copied out of a
 * buffer at once, so a buffer is held only while its completion is handled. */
#define PROXY_PBUF_COUNT 256u
#define PROXY_PBUF_BYTES 4096u
#define PROXY_PBUF_GROUP 0
/* Bytes received while the connection does not want them (a response under
 * way) wait in proxy_conn.pend; past this the multishot receive is
 * cancelled, so the socket's buffer and TCP push back as before. */
#define PROXY_PEND_MAX (2u * PROXY_PBUF_BYTES)

/* One labelled counter table per worker: (label, code) -> count. Owned by
 * its worker, lives until proxy_free; the worker is the only writer, a
 * metrics reader sees an entry once `used` is set (release/acquire).
 * The caller brings the label's hash, which must be fixed by the label's
 * text for a given code (the same (label, code) always with the same hash,
 * else it could get two rows): the resource's key_hash where one code's
 * labels are all resources of one kind, 0 for the empty label. */
#define PROXY_LTABLE_CAP 512u
#define PROXY_LABEL_MAX 129u
struct proxy_lentry {
	_Atomic uint32_t used;
	int code;
	char label[PROXY_LABEL_MAX];
	_Atomic uint64_t count;
};
struct proxy_ltable {
	struct proxy_lentry e[PROXY_LTABLE_CAP];
	_Atomic uint64_t dropped; /* increments that found the table full */
};
void proxy_ltable_add(struct proxy_ltable *t, uint64_t label_hash, const char *label,
		      size_t label_len, int code, uint64_t n);

/* Per-client decision counters, one table per worker: the hash of the
 * client key a request presented (decision_client_hint, computed once per
 * request and also used for the decision's memo) -> allowed, rejected,
 * shadow, with the client's id. A client reached through two of its keys
 * has two entries, merged by id when read.
 * Open addressing over at least 2 x cap slots (a power of two), so a probe
 * finds its key or an empty slot within a few slots; at most `cap`
 * keys, later ones are counted in `overflow`; all memory is allocated
 * by proxy_new, never on the request path. Keyed by the 64-bit hash alone:
 * two keys with the same hash (2^-64 per pair) would share a row. Entries
 * are never removed: the counters are cumulative, like a Prometheus
 * counter, also for clients the policy no longer has.
 * Owned by its worker, lives until proxy_free. The worker is the only
 * writer; a reader (metrics, NodeReport) sees a slot once its key is set
 * (release/acquire), and the id behind it is written before that and
 * never again. Counters are single-writer relaxed atomics: a plain load
 * and store, no locked add. */
#define PROXY_DEFAULT_MAX_CLIENTS 16384u
#define PROXY_MAX_CLIENTS_LIMIT (1u << 20)
enum { PROXY_CLIENT_ALLOWED = 0, PROXY_CLIENT_REJECTED, PROXY_CLIENT_SHADOW, PROXY_CLIENT__N };
struct proxy_cslot {                   /* 32 bytes: two per cache line */
	_Atomic uint64_t key;          /* 0: empty */
	_Atomic uint64_t n[PROXY_CLIENT__N];
};
struct proxy_ctable {
	struct proxy_cslot *slots;     /* mask + 1, mmap()ed (page-aligned) */
	uint32_t *id_of;               /* slot -> row of ids; set before the key */
	char (*ids)[POLICY_ID_MAX_LEN + 1]; /* cap rows, in insertion order */
	uint32_t mask;
	uint32_t cap, used;            /* writer only */
	_Atomic uint64_t overflow;     /* decisions of clients past the cap */
};
int proxy_ctable_init(struct proxy_ctable *t, unsigned cap);
void proxy_ctable_done(struct proxy_ctable *t);
/* The slow path of proxy_ctable_count: key absent, slot i empty. */
void proxy_ctable_insert(struct proxy_ctable *t, uint32_t i, uint64_t key, const char *id,
			 size_t id_len, unsigned outcome, bool shadow);
/* Starts loading the slot key_hash would count in, for a caller that
 * knows the key well before its decision is made. */
static inline void proxy_ctable_prefetch(const struct proxy_ctable *t, uint64_t key_hash)
{
	__builtin_prefetch(&t->slots[(uint32_t)(key_hash ? key_hash : 1) & t->mask], 1);
}

/* Counts one decision for a client: outcome is PROXY_CLIENT_ALLOWED or
 * PROXY_CLIENT_REJECTED, shadow whether a SHADOW limit would have refused
 * the request. Worker thread only. */
static inline void proxy_ctable_count(struct proxy_ctable *t, uint64_t key_hash, const char *id,
				      size_t id_len, unsigned outcome, bool shadow)
{
	uint64_t key = key_hash ? key_hash : 1; /* 0 marks an empty slot */
	uint32_t i = (uint32_t)key & t->mask;   /* XXH3: the low bits are as good as any */

	for (;;) {
		struct proxy_cslot *s = &t->slots[i];
		uint64_t k = atomic_load_explicit(&s->key, memory_order_relaxed);

		if (k == key) {
			atomic_store_explicit(&s->n[outcome],
					      atomic_load_explicit(&s->n[outcome],
								   memory_order_relaxed) + 1,
					      memory_order_relaxed);
			if (shadow)
				atomic_store_explicit(
					&s->n[PROXY_CLIENT_SHADOW],
					atomic_load_explicit(&s->n[PROXY_CLIENT_SHADOW],
							     memory_order_relaxed) + 1,
					memory_order_relaxed);
			return;
		}
		if (k == 0) {
			proxy_ctable_insert(t, i, key, id, id_len, outcome, shadow);
			return;
		}
		i = (i + 1) & t->mask;
	}
}

/* The tag an io_uring user_data points at. Embedded in its owner. */
enum proxy_op_kind {
	OP_ACCEPT = 1,
	OP_CRECV,
	OP_CRECV_MS,     /* the multishot receive of a client connection */
	OP_CSEND,
	OP_SPLICE_IN,
	OP_SPLICE_OUT,
	OP_UCONNECT,
	OP_USEND,
	OP_URECV,
	OP_URECV_MS,     /* the multishot receive of an upstream connection */
	OP_LOGWRITE,
};
struct proxy_op {
	uint8_t kind;
	void *owner;
};

enum proxy_phase {
	PH_HEAD = 0,     /* reading a request head (or idle between requests) */
	PH_UPSTREAM,     /* connecting / forwarding the body / relaying the response */
	PH_STATIC,       /* sending a file */
	PH_LOCAL,        /* sending a response made here */
};

enum proxy_deadline {
	DL_NONE = 0,
	DL_IDLE,         /* keep-alive, no byte of the next request yet */
	DL_HEADER,       /* head incomplete: 408 */
	DL_BODY,         /* waiting for request body bytes: 408 */
	DL_UP_CONNECT,   /* 504 */
	DL_UP_READ,      /* 504 (or close once the response started) */
	DL_SEND,         /* client not reading what we send: close */
	DL_LINGER,       /* discarding input after the last response */
};

enum proxy_send_next {
	SN_NONE = 0,
	SN_DONE,         /* response complete */
	SN_CONTINUE,     /* 100 Continue sent: go on with the upstream */
	SN_RELAY,        /* a relayed response piece sent: read more */
	SN_STATIC,       /* static head (and memory body) sent: splice the file */
};

enum proxy_body_mode { BODY_NONE = 0, BODY_LENGTH, BODY_CHUNKED };
enum proxy_resp_mode { RESP_NONE = 0, RESP_LENGTH, RESP_CHUNKED, RESP_CLOSE };

/* A growable byte buffer. Owned by its embedder. */
struct proxy_buf {
	char *p;
	size_t len, cap;
};
int proxy_buf_reserve(struct proxy_buf *b, size_t extra);
/* Appends n bytes (and keeps a NUL after them); on ENOMEM sets len =
 * SIZE_MAX. Inline: a response head is a few dozen appends, most of them
 * literals whose strlen the compiler folds, and the room is almost always
 * there already. (len == SIZE_MAX never passes the room check.) */
static inline void proxy_buf_add(struct proxy_buf *b, const void *s, size_t n)
{
	if (b->len + n + 1 > b->cap || b->len == SIZE_MAX) {
		if (proxy_buf_reserve(b, n) < 0)
			return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}
/* Room for at most n more bytes (and the NUL): where they go, or NULL
 * once the buffer failed (no memory). The caller writes there and ends
 * with proxy_buf_commit(). One check for a whole head instead of one per
 * piece, and pieces of known size copied without a call. */
static inline char *proxy_buf_room(struct proxy_buf *b, size_t n)
{
	if (b->len + n + 1 > b->cap || b->len == SIZE_MAX) {
		if (proxy_buf_reserve(b, n) < 0)
			return NULL;
	}
	return b->p + b->len;
}
/* Ends a write that began at proxy_buf_room(): end is one past its last byte. */
static inline void proxy_buf_commit(struct proxy_buf *b, char *end)
{
	b->len = (size_t)(end - b->p);
	*end = '\0';
}
/* Writers for such a room: put_str copies n bytes, PUT_LIT a literal. */
static inline char *proxy_put(char *o, const void *s, size_t n)
{
	memcpy(o, s, n);
	return o + n;
}
#define PROXY_PUT_LIT(o, lit) proxy_put((o), "" lit "", sizeof(lit) - 1)
static inline void proxy_buf_str(struct proxy_buf *b, const char *s)
{
	proxy_buf_add(b, s, strlen(s));
}
void proxy_buf_fmt(struct proxy_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void proxy_buf_u64(struct proxy_buf *b, uint64_t v);       /* decimal, no printf */
/* Writes v in decimal at out (room for 20 digits); returns the length. */
size_t proxy_fmt_u64(char *out, uint64_t v);
void proxy_buf_free(struct proxy_buf *b);
#define PROXY_BUF_FAILED(b) ((b)->len == SIZE_MAX)

struct proxy_worker;
struct proxy_upconn;

/* One upstream endpoint's idle keep-alive connections, per worker. Owned
 * by its worker; lives until the worker exits. */
struct proxy_upool {
	struct proxy_upool *next;
	char key[POLICY_MAX_HOST_LEN + 16];   /* "host:port" */
	size_t host_len;                       /* bytes of host in key */
	uint16_t port;
	struct sockaddr_storage addr;
	socklen_t addr_len;
	int resolve_err;                       /* -errno: name did not resolve */
	struct proxy_upconn *idle;             /* LIFO of idle connections */
	unsigned n_idle;
};

/* A client connection. Owned by its worker (in w->conns); lives until
 * closed and its last io_uring operation completed. */
struct proxy_conn {
	struct proxy_worker *w;
	struct proxy_conn *prev, *next;
	int fd;
	bool fixed;                            /* fd is also slot fd of the ring's file table */
	bool tls_port;
	/* TLS (user-space records): ciphertext in tls_in[tls_in_off..tls_in_len);
	 * in TLS mode op_send carries ciphertext from the engine's ring, and
	 * the plaintext of proxy_conn_send waits in iov until encrypted. */
	struct tls_conn *tls;
	char *tls_in;
	size_t tls_in_off, tls_in_len;
	bool tls_established, tls_peer_closed, tls_job, want_read;
	bool dead;                             /* on w->dead_conns, freed by the loop */
	unsigned inflight;
	bool closing;
	bool recv_pending, send_pending, splice_pending;
	struct proxy_op op_recv, op_send, op_splice;
	/* Multishot receive (worker.c, "receiving"): ms_armed while it is in
	 * flight (one unit of inflight until its last completion), ms_cancel
	 * once its cancel is sent; want = the state machine waits for bytes
	 * (what a pending single-shot receive means); ms_off = the next
	 * receive is a single shot (the buffer ring ran dry). pend holds
	 * bytes that arrived unwanted, [pend_off, pend.len) unread; peer_eof
	 * (or peer_err) is acted on once pend is used up. */
	bool ms_armed, ms_cancel, ms_off, want, peer_eof;
	int peer_err;
	struct proxy_op op_mrecv;
	struct proxy_buf pend;
	size_t pend_off;

	struct cidr_addr peer;
	char peer_str[48];
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} peer_sa;                             /* for proxy_config.on_reject */
	socklen_t peer_sa_len;
	/* The client-id header of the request being decided: a view into
	 * rbuf, set only while handle_request runs (NULL otherwise). */
	const char *req_cid;
	size_t req_cid_len;

	/* Receive buffer: [rpos, rlen) is unconsumed. */
	char *rbuf;
	size_t rcap, rpos, rlen, last_len;
	enum proxy_phase phase;
	uint64_t deadline_ns;
	enum proxy_deadline deadline_kind;
	uint64_t head_start_ns;               /* first byte of the current head */
	unsigned nreq;

	/* The current request (copied out of the head). */
	uint64_t req_start_ns;
	bool is_head_method, keep_alive, http10, close_after, lingering;
	char rl_hdr[512];                      /* RateLimit fields of this request's answer */
	size_t rl_hdr_len;
	char method[17];
	char path_log[256];
	char route_id[POLICY_ID_MAX_LEN + 1];
	size_t route_id_len;
	uint64_t route_hash;                   /* the route's key_hash, 0 without one */
	int status;
	uint64_t bytes_out;

	/* Request body. */
	enum proxy_body_mode body_mode;
	uint64_t body_left;
	struct http_chunked chunked;
	size_t bpos;                           /* body bytes start here in rbuf */
	bool body_done;

	/* Sending. */
	struct proxy_buf wbuf;                 /* head (and small body) made here */
	struct iovec iov[4];
	unsigned iovcnt;
	struct msghdr msg;
	enum proxy_send_next send_next;

	/* Static file. */
	int file_fd;
	uint64_t file_off, file_left;
	int pipe_fd[2];
	size_t pipe_bytes;

	/* Upstream. */
	struct proxy_upconn *up;
	struct proxy_upool *pool;
	struct proxy_buf uhead;                /* the request head for the upstream */
	bool uhead_sent, retried, resp_started;
	uint32_t up_connect_timeout_ms, up_read_timeout_ms;
	unsigned pool_cap;
	const char *up_error;                  /* why a 502/503/504 (log) */
	struct proxy_upool *alt[8];            /* endpoints to try, in order */
	unsigned n_alt, alt_idx;
	size_t pump_rpos, pump_rlen;           /* rbuf window once the body send is done */
	bool pump_ends;
	char chunk_line[24];
};

/* An upstream connection. Owned by its pool (idle) or by the client
 * connection using it; lives until closed and its last operation completed. */
struct proxy_upconn {
	struct proxy_worker *w;
	struct proxy_upool *pool;
	struct proxy_upconn *next;             /* pool idle list */
	struct proxy_upconn *all_prev, *all_next; /* the worker's list of all */
	struct proxy_conn *c;                  /* user; NULL when idle or orphaned */
	int fd;
	bool fixed;                            /* as proxy_conn.fixed */
	unsigned inflight;
	bool closing, connected, reused, idle, dead;
	bool connect_pending, send_pending, recv_pending;
	struct proxy_op op_connect, op_send, op_recv;
	uint64_t idle_since_ns;
	/* Multishot receive, as in proxy_conn (upstream.c, urecv): used while
	 * idle and while waiting for a response head; peer_end/peer_res hold
	 * an EOF or error until pend is used up. */
	bool ms_armed, ms_cancel, ms_off, want, peer_end;
	int peer_res;
	struct proxy_op op_mrecv;
	struct proxy_buf pend;
	size_t pend_off;

	char *rbuf;
	size_t rlen;
	struct iovec iov[5];
	unsigned iovcnt;
	struct msghdr msg;
	size_t send_body_bytes;                /* body bytes in the send in flight */
	bool send_ends_body;

	/* Response being relayed. */
	size_t head_scanned;  /* rlen the head parse last ran to (-EAGAIN) */
	bool head_done, keep_alive;
	int status;
	enum proxy_resp_mode mode;
	uint64_t left;
	struct http_chunked ch;
	size_t relay_len;                      /* bytes of rbuf in the client send */
	bool relay_ends;
};

/* One worker: thread, ring, listeners, connections. Owned by struct proxy;
 * lives until proxy_free. */
struct proxy_worker {
	struct proxy *p;
	unsigned idx;
	pthread_t thread;
	bool thread_started;
	int listen_fd[2];                      /* plaintext, TLS; -1 if none */
	struct proxy_op op_accept[2];
	bool accept_armed[2];
	struct io_uring ring;
	bool ring_ok;
	/* Registered file table: a socket's slot is its fd number (fds are
	 * unique in the process, so the workers' tables never disagree);
	 * n_fixed slots, 0 when the kernel refused the table. */
	unsigned n_fixed;
	/* Provided buffers of the client multishot receives: pbuf_n buffers
	 * of PROXY_PBUF_BYTES at pbuf_mem, ring pbr (group PROXY_PBUF_GROUP);
	 * pbuf_n == 0 when not set up (single-shot receives). */
	struct io_uring_buf_ring *pbr;
	char *pbuf_mem;
	unsigned pbuf_n;
	uint64_t pbuf_nobufs;                  /* multishot receives that ran dry (debug) */

	struct proxy_conn *conns;              /* all live client connections */
	unsigned n_conns;
	struct proxy_upool *pools;
	struct proxy_upconn *upconns;          /* every upstream connection */
	struct proxy_conn *dead_conns;         /* closed, freed after the current batch */
	struct proxy_upconn *dead_ups;
	unsigned rr;                           /* endpoint round robin */
	bool draining, stop_accept_done;
	uint64_t next_tick_ns;
	/* CLOCK_MONOTONIC read once per batch of completions: deadlines have
	 * PROXY_TICK_MS resolution and a batch takes microseconds, so one
	 * clock read serves every request in it. */
	uint64_t now_ns;

	struct http_header headers[PROXY_MAX_FIELDS];
	/* The RateLimit fields' fixed part for the last limit reported
	 * (policy line, then `RateLimit: "<id>";r=`), by snapshot uid and
	 * resource: the same limit answers most requests, and its rate, unit
	 * and id change only with the snapshot. rl_len 0: none. */
	uint64_t rl_uid;
	const struct policy_res *rl_res;
	size_t rl_len;
	char rl_fixed[2 * POLICY_ID_MAX_LEN + 96];
	char *scratch;                         /* PROXY_UP_BUF_BYTES: chunk scan, decoding */

	/* Access log: lines collect in buf[cur]; while log_pending, buf[cur ^ 1]
	 * is being written (log_off bytes of it are out already) and is emptied
	 * only when its write completes, so no line is written twice. */
	char *logbuf[2];
	size_t loglen[2];
	size_t log_off;
	unsigned logcur;
	bool log_pending;
	char log_ts[32];                       /* "YYYY-mm-ddTHH:MM:SS" of log_ts_sec */
	size_t log_ts_len;
	int64_t log_ts_sec;
	struct proxy_op op_log;

	struct proxy_ltable *requests;         /* (route, status) */
	struct proxy_ltable *decisions;        /* (rule, outcome) */
	struct proxy_ctable clients;           /* per-client decisions */
};

enum proxy_outcome {
	OUTCOME_ALLOW = 0,
	OUTCOME_DENY,
	OUTCOME_NO_ROUTE,
	OUTCOME_METHOD,
	OUTCOME_RATE_LIMITED,
	OUTCOME_SHADOW,
	OUTCOME_LIMITER_FULL,
	OUTCOME__COUNT
};

/* Owned by the node's main; lives until proxy_free. */
struct proxy {
	struct proxy_config cfg;               /* defaults resolved */
	unsigned n_workers;
	struct proxy_worker *workers;
	uint16_t port[2];

	_Atomic unsigned conns_open;
	_Atomic uint64_t conns_accepted, conns_refused_cap, conns_refused_tls, conns_timed_out;
	_Atomic uint64_t up_connects, up_reuses, up_errors, log_dropped;
	_Atomic unsigned workers_ready;
	_Atomic int workers_failed;            /* -errno of the first failure */
	_Atomic bool draining;
	_Atomic unsigned forced_closes;
	uint64_t drain_deadline_ns;
	bool started, drained;
	struct metrics_histogram latency;      /* seconds */
};

uint64_t proxy_now_ns(void);
void *proxy_worker_main(void *arg);

/* worker.c, used by upstream.c and static.c */
struct io_uring_sqe *proxy_get_sqe(struct proxy_worker *w);
void proxy_cancel(struct proxy_worker *w, struct proxy_op *op); /* no-op once the ring is gone */
/* Registered files: receives and sends on a socket in the table skip the
 * kernel's per-operation file lookup and reference (IOSQE_FIXED_FILE).
 * proxy_fixed_add registers fd in slot fd and returns whether it did (no
 * table, fd beyond it, or a refusal: the plain fd is used). proxy_fixed_del
 * must run before close(fd) of a registered socket: the table holds a
 * reference that would otherwise keep the connection open. */
bool proxy_fixed_add(struct proxy_worker *w, int fd);
/* Returns provided buffer bid to the worker's receive ring. */
void proxy_pbuf_give_back(struct proxy_worker *w, unsigned bid);
static inline char *proxy_pbuf(struct proxy_worker *w, unsigned bid)
{
	return w->pbuf_mem + (size_t)bid * PROXY_PBUF_BYTES;
}
void proxy_fixed_del(struct proxy_worker *w, int fd);
static inline void proxy_sqe_fixed(struct io_uring_sqe *sqe, bool fixed)
{
	if (fixed)
		sqe->flags |= IOSQE_FIXED_FILE;
}
void proxy_conn_send(struct proxy_conn *c, enum proxy_send_next next);
/* Answers the request locally: status line, a text/plain body "<status>
 * <reason>\n", and extra_len bytes of extra_headers (whole CRLF-ended
 * field lines; extra_headers may be NULL when extra_len is 0). */
void proxy_conn_respond(struct proxy_conn *c, int status, const char *extra_headers,
			size_t extra_len, bool close);
void proxy_conn_abort(struct proxy_conn *c);
void proxy_conn_skip_body(struct proxy_conn *c);
void proxy_conn_request_done(struct proxy_conn *c);
void proxy_conn_recv(struct proxy_conn *c);
void proxy_conn_set_deadline(struct proxy_conn *c, enum proxy_deadline k, uint32_t ms);

const char *proxy_outcome_name(int o); /* "allow", "deny", ... */

/* upstream.c */
struct proxy_route_target {
	const struct policy_route *route;
	const struct policy_upstream *upstream;
	const struct policy_settings *settings;
};
/* Prepares and starts the upstream exchange for the parsed request in
 * c->rbuf (head at [rpos, rpos + head_len)). Called inside the RCU read
 * section; copies what it needs. Responds itself on failure. */
void proxy_up_start(struct proxy_conn *c, const struct http_request *req, size_t head_len,
		    const struct proxy_route_target *t);
void proxy_up_begin(struct proxy_conn *c);            /* after 100 Continue */
void proxy_up_body_more(struct proxy_conn *c);        /* client body bytes arrived */
void proxy_up_relay_sent(struct proxy_conn *c);       /* client send of a piece completed */
void proxy_up_cqe(struct proxy_upconn *u, uint8_t kind, int res, uint32_t flags);
void proxy_up_detach(struct proxy_conn *c, bool reusable); /* c done with its upconn */
void proxy_up_timeout(struct proxy_conn *c, enum proxy_deadline k);
void proxy_up_tick(struct proxy_worker *w, uint64_t now_ns);
void proxy_up_free_all(struct proxy_worker *w);
void proxy_up_reap(struct proxy_worker *w);

/* static.c */
/* Serves `rest` (the raw path after the route prefix) from the route's
 * root. Responds itself (200/403/404/405/...). */
void proxy_static_serve(struct proxy_conn *c, const struct policy_route *rt, const char *rest,
			size_t rest_len, const char *method, size_t method_len);
void proxy_static_cqe(struct proxy_conn *c, uint8_t kind, int res);
void proxy_static_sent(struct proxy_conn *c);
void proxy_static_cleanup(struct proxy_conn *c);
/* Percent-decodes src into dst (cap bytes incl. NUL). Returns the length,
 * -EINVAL for a malformed escape or a decoded NUL, -E2BIG when too long. */
int proxy_path_decode(const char *src, size_t len, char *dst, size_t cap);
/* True when a decoded path has a "." or ".." segment. */
bool proxy_path_has_dot_segment(const char *p, size_t len);

#endif
