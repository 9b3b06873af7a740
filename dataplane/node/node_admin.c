/* node_admin.c - admin listener: one thread, one poll(2) loop over the
 * listening socket, a stop eventfd and at most max_connections clients.
 *
 * Invariants: every socket is non-blocking; a connection lives at most
 * request_timeout_ms from accept; the listener is not polled while at the
 * cap, so the kernel backlog (not memory here) absorbs bursts.
 */
#include "node_admin.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "node_config.h"
#include "snapshot.h"

#define ADMIN_REQUEST_MAX_BYTES 8192
#define ADMIN_DEFAULT_MAX_CONNECTIONS 32u
#define ADMIN_DEFAULT_TIMEOUT_MS 5000u

/* One client; owned by the admin thread; lives until its response is sent,
 * it fails or its deadline passes. */
struct admin_conn {
	int fd;
	uint64_t deadline_ms;
	size_t req_len;
	char *resp;          /* NULL while reading the request */
	size_t resp_len;
	size_t resp_off;
	char req[ADMIN_REQUEST_MAX_BYTES];
};

/* Owned by the node's main; lives until node_admin_free. */
struct node_admin {
	struct node_admin_config cfg;
	int listen_fd;
	int stop_fd;          /* eventfd: written once by node_admin_free */
	uint16_t port;
	bool started;
	pthread_t thread;
	struct admin_conn **conns;
	unsigned n_conns;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int bind_listener(const char *addr, int *fd_out, uint16_t *port_out)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res, *ai;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[256], port_s[8];
	uint16_t port;
	int fd = -1, r, one = 1;

	if (node_config_split_addr(addr, host, sizeof(host), &port) < 0)
		return -EINVAL;
	snprintf(port_s, sizeof(port_s), "%u", port);
	r = getaddrinfo(host[0] && strcmp(host, "*") ? host : NULL, port_s, &hints, &res);
	if (r != 0)
		return r == EAI_MEMORY ? -ENOMEM : -EADDRNOTAVAIL;
	r = -EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0)
			break;
		r = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return r;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	*port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						    : ((struct sockaddr_in *)&ss)->sin_port);
	*fd_out = fd;
	return 0;
}

int node_admin_new(const struct node_admin_config *cfg, struct node_admin **ret)
{
	struct node_admin *a;
	int r;

	if (!cfg || !cfg->listen || !cfg->metrics || !cfg->not_ready)
		return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->cfg = *cfg;
	a->cfg.listen = NULL; /* only read here */
	if (!a->cfg.max_connections)
		a->cfg.max_connections = ADMIN_DEFAULT_MAX_CONNECTIONS;
	if (!a->cfg.request_timeout_ms)
		a->cfg.request_timeout_ms = ADMIN_DEFAULT_TIMEOUT_MS;
	a->listen_fd = -1;
	a->conns = calloc(a->cfg.max_connections, sizeof(*a->conns));
	if (!a->conns) {
		r = -ENOMEM;
		goto out_free;
	}
	a->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->stop_fd < 0) {
		r = -errno;
		goto out_free_conns;
	}
	r = bind_listener(cfg->listen, &a->listen_fd, &a->port);
	if (r < 0)
		goto out_close_stop;
	*ret = a;
	return 0;

out_close_stop:
	close(a->stop_fd);
out_free_conns:
	free(a->conns);
out_free:
	free(a);
	return r;
}

uint16_t node_admin_port(const struct node_admin *a)
{
	return a->port;
}

static void conn_close(struct node_admin *a, unsigned i)
{
	struct admin_conn *c = a->conns[i];

	close(c->fd);
	free(c->resp);
	free(c);
	a->conns[i] = a->conns[--a->n_conns];
	a->conns[a->n_conns] = NULL;
}

static const char *reason_phrase(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 431: return "Request Header Fields Too Large";
	case 503: return "Service Unavailable";
	default: return "Error";
	}
}

/* Builds the whole response (head + body unless HEAD) into c->resp. */
static int respond(struct admin_conn *c, int status, const char *ctype, const char *body,
		   size_t body_len, bool head_only, const char *extra)
{
	char hdr[512];
	int n;

	n = snprintf(hdr, sizeof(hdr),
		     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		     "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n",
		     status, reason_phrase(status), ctype, body_len, extra ? extra : "");
	if (n < 0 || (size_t)n >= sizeof(hdr))
		return -EINVAL;
	c->resp_len = (size_t)n + (head_only ? 0 : body_len);
	c->resp = malloc(c->resp_len);
	if (!c->resp)
		return -ENOMEM;
	memcpy(c->resp, hdr, (size_t)n);
	if (!head_only)
		memcpy(c->resp + n, body, body_len);
	c->resp_off = 0;
	return 0;
}

static int respond_text(struct admin_conn *c, int status, const char *text, bool head_only,
			const char *extra)
{
	return respond(c, status, "text/plain; charset=utf-8", text, strlen(text), head_only,
		       extra);
}

/* The request head is complete in c->req: route it. */
static int handle(struct node_admin *a, struct admin_conn *c)
{
	char *sp1, *sp2, *eol, *q;
	bool head_only;
	const char *why;

	eol = memchr(c->req, '\r', c->req_len);
	if (!eol)
		return respond_text(c, 400, "bad request\n", false, NULL);
	*eol = '\0';
	sp1 = strchr(c->req, ' ');
	sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (!sp1 || !sp2 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0)
		return respond_text(c, 400, "bad request\n", false, NULL);
	*sp1 = '\0';
	*sp2 = '\0';
	q = strchr(sp1 + 1, '?');
	if (q)
		*q = '\0';
	head_only = strcmp(c->req, "HEAD") == 0;
	if (!head_only && strcmp(c->req, "GET") != 0)
		return respond_text(c, 405, "method not allowed\n", false, "Allow: GET, HEAD\r\n");

	if (strcmp(sp1 + 1, "/healthz") == 0)
		return respond_text(c, 200, "ok\n", head_only, NULL);
	if (strcmp(sp1 + 1, "/readyz") == 0) {
		why = a->cfg.not_ready(a->cfg.arg);
		if (!why)
			return respond_text(c, 200, "ready\n", head_only, NULL);
		char body[128];

		snprintf(body, sizeof(body), "not ready: %s\n", why);
		return respond_text(c, 503, body, head_only, NULL);
	}
	if (strcmp(sp1 + 1, "/metrics") == 0) {
		struct metrics_buf b;
		int r;

		metrics_buf_init(&b);
		a->cfg.metrics(a->cfg.arg, &b);
		if (b.err) {
			metrics_buf_done(&b);
			return -ENOMEM;
		}
		r = respond(c, 200, "text/plain; version=0.0.4; charset=utf-8",
			    b.data ? b.data : "", b.len, head_only, NULL);
		metrics_buf_done(&b);
		return r;
	}
	return respond_text(c, 404, "not found: /metrics, /healthz, /readyz\n", head_only, NULL);
}

/* Reads what is there; returns 1 to keep the connection, 0 to close it. */
static int conn_read(struct node_admin *a, struct admin_conn *c)
{
	for (;;) {
		ssize_t n;

		if (c->req_len == sizeof(c->req)) {
			return respond_text(c, 431, "request head too large\n", false, NULL) == 0;
		}
		n = recv(c->fd, c->req + c->req_len, sizeof(c->req) - c->req_len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN;
		if (n == 0)
			return 0;
		c->req_len += (size_t)n;
		/* A request head ends with an empty line; the body (none for
		 * GET) is not read. */
		if (memmem(c->req, c->req_len, "\r\n\r\n", 4))
			return handle(a, c) == 0;
	}
}

/* Sends what the socket takes; 1 to keep waiting, 0 done or failed. */
static int conn_write(struct admin_conn *c)
{
	while (c->resp_off < c->resp_len) {
		ssize_t n = send(c->fd, c->resp + c->resp_off, c->resp_len - c->resp_off,
				 MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN;
		c->resp_off += (size_t)n;
	}
	/* Half-close so the client sees the end before our close. */
	shutdown(c->fd, SHUT_WR);
	return 0;
}

static void accept_all(struct node_admin *a)
{
	while (a->n_conns < a->cfg.max_connections) {
		struct admin_conn *c;
		int fd = accept4(a->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != ECONNABORTED)
				log_warn("admin accept failed", "error=%d", errno);
			return;
		}
		c = malloc(sizeof(*c));
		if (!c) {
			close(fd);
			return;
		}
		c->fd = fd;
		c->deadline_ms = now_ms() + a->cfg.request_timeout_ms;
		c->req_len = 0;
		c->resp = NULL;
		c->resp_len = c->resp_off = 0;
		a->conns[a->n_conns++] = c;
	}
}

static void *admin_thread(void *arg)
{
	struct node_admin *a = arg;
	struct pollfd *pfds;
	unsigned cap = a->cfg.max_connections + 2;

	pfds = calloc(cap, sizeof(*pfds));
	if (!pfds) {
		log_error("admin listener stopped", "error=%s", "out of memory");
		return NULL;
	}
	snapshot_thread_online();
	for (;;) {
		uint64_t now = now_ms(), next = UINT64_MAX;
		unsigned n = 0, base;
		int timeout, r;

		pfds[n++] = (struct pollfd){ .fd = a->stop_fd, .events = POLLIN };
		pfds[n++] = (struct pollfd){ .fd = a->n_conns < a->cfg.max_connections
							? a->listen_fd : -1,
					     .events = POLLIN };
		base = n;
		for (unsigned i = 0; i < a->n_conns; i++) {
			struct admin_conn *c = a->conns[i];

			pfds[n++] = (struct pollfd){ .fd = c->fd,
						     .events = c->resp ? POLLOUT : POLLIN };
			if (c->deadline_ms < next)
				next = c->deadline_ms;
		}
		timeout = next == UINT64_MAX ? -1 : next <= now ? 0 : (int)(next - now);
		r = poll(pfds, n, timeout);
		if (r < 0 && errno != EINTR) {
			log_error("admin listener stopped", "error=%d", errno);
			break;
		}
		if (pfds[0].revents)
			break;
		now = now_ms();
		/* Walk backwards: conn_close moves the last connection into i. */
		for (unsigned i = a->n_conns; i-- > 0;) {
			struct admin_conn *c = a->conns[i];
			short ev = r > 0 ? pfds[base + i].revents : 0;
			int keep = 1;

			if (!c->resp && (ev & (POLLIN | POLLHUP | POLLERR)))
				keep = conn_read(a, c);
			/* Try at once: a small response fits the socket buffer. */
			if (keep && c->resp)
				keep = conn_write(c);
			if (!keep || now >= c->deadline_ms)
				conn_close(a, i);
		}
		if (r > 0 && pfds[1].revents & POLLIN)
			accept_all(a);
	}
	while (a->n_conns)
		conn_close(a, a->n_conns - 1);
	snapshot_thread_offline();
	free(pfds);
	return NULL;
}

int node_admin_start(struct node_admin *a)
{
	int r = pthread_create(&a->thread, NULL, admin_thread, a);

	if (r)
		return -r;
	a->started = true;
	return 0;
}

void node_admin_free(struct node_admin *a)
{
	uint64_t one = 1;

	if (!a)
		return;
	if (a->started) {
		if (write(a->stop_fd, &one, sizeof(one)) < 0)
			log_warn("admin stop signal failed", "error=%d", errno);
		pthread_join(a->thread, NULL);
	}
	while (a->n_conns)
		conn_close(a, a->n_conns - 1);
	close(a->listen_fd);
	close(a->stop_fd);
	free(a->conns);
	free(a);
}
