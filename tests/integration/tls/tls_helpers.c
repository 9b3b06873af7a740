/* tls_helpers.c - certificates, child processes and a tls_conn poll server
 * for the TLS tests. The server uses tls_conn exactly as tls.h tells a worker
 * to: it owns the sockets, feeds ciphertext, drains plaintext, and sends the
 * pending ciphertext after every call.
 */
#include "tls_helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef GEN_CERTS
#error "GEN_CERTS (path of scripts/gen-certs.sh) must be defined"
#endif

static char certs_dir[64];
static char other_dir[64];

static void die(const char *what)
{
	fprintf(stderr, "tls_helpers: %s: %s\n", what, strerror(errno));
	abort();
}

static const char *make_pki(char *dir, size_t cap)
{
	char cmd[512];

	if (dir[0])
		return dir;
	snprintf(dir, cap, "/tmp/sluice-tls-XXXXXX");
	if (!mkdtemp(dir))
		die("mkdtemp");
	snprintf(cmd, sizeof(cmd), "'%s' '%s' >/dev/null", GEN_CERTS, dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "tls_helpers: '%s' failed\n", cmd);
		abort();
	}
	return dir;
}

const char *helpers_certs(void)
{
	return make_pki(certs_dir, sizeof(certs_dir));
}

const char *helpers_other_certs(void)
{
	return make_pki(other_dir, sizeof(other_dir));
}

void helpers_cleanup(void)
{
	char cmd[256];

	if (certs_dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", certs_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "tls_helpers: cannot remove '%s'\n", certs_dir);
		certs_dir[0] = '\0';
	}
	if (other_dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", other_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "tls_helpers: cannot remove '%s'\n", other_dir);
		other_dir[0] = '\0';
	}
}

int helpers_run(char *out, size_t cap, const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	FILE *f;
	size_t len = 0;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd) - 8, fmt, ap);
	va_end(ap);
	strcat(cmd, " 2>&1");
	f = popen(cmd, "r");
	if (!f)
		die("popen");
	for (;;) {
		char tmp[4096];
		size_t n = fread(tmp, 1, sizeof(tmp), f);

		if (n == 0)
			break;
		if (out && len + 1 < cap) {
			size_t k = n < cap - 1 - len ? n : cap - 1 - len;

			memcpy(out + len, tmp, k);
			len += k;
		}
	}
	if (out && cap)
		out[len] = '\0';
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void helpers_serial(const char *pem_file, char *out, size_t cap)
{
	char *nl;

	helpers_run(out, cap, "openssl x509 -in '%s' -noout -serial", pem_file);
	nl = strchr(out, '\n');
	if (nl)
		*nl = '\0';
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t helpers_wait_stat(struct tls_ctx *ctx, size_t field_offset, uint64_t want)
{
	int64_t end = now_ms() + 10000;
	struct tls_stats st;
	uint64_t v;

	for (;;) {
		tls_ctx_stats(ctx, &st);
		memcpy(&v, (const char *)&st + field_offset, sizeof(v));
		if (v >= want || now_ms() > end)
			return v;
		usleep(5000);
	}
}

/* ---- child processes ---- */

int helpers_spawn(struct helpers_child *c, const char *cmd)
{
	int in[2], out[2];
	pid_t pid;

	memset(c, 0, sizeof(*c));
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(out[1], 2);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	c->pid = pid;
	c->in_fd = in[1];
	c->out_fd = out[0];
	return 0;
}

bool helpers_child_wait_for(struct helpers_child *c, const char *needle)
{
	int64_t end = now_ms() + 15000;

	for (;;) {
		struct pollfd p = { .fd = c->out_fd, .events = POLLIN };
		int64_t left = end - now_ms();
		ssize_t n;

		if (memmem(c->out, c->out_len, needle, strlen(needle)))
			return true;
		if (left <= 0 || c->out_len + 1 >= sizeof(c->out))
			return false;
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		n = read(c->out_fd, c->out + c->out_len, sizeof(c->out) - 1 - c->out_len);
		if (n <= 0)
			return memmem(c->out, c->out_len, needle, strlen(needle)) != NULL;
		c->out_len += (size_t)n;
		c->out[c->out_len] = '\0';
	}
}

void helpers_child_write(struct helpers_child *c, const char *s)
{
	size_t len = strlen(s);

	if (write(c->in_fd, s, len) != (ssize_t)len)
		die("write to child");
}

int helpers_child_finish(struct helpers_child *c)
{
	int st = 0;
	int64_t end = now_ms() + 15000;

	close(c->in_fd);
	while (waitpid(c->pid, &st, WNOHANG) == 0) {
		if (now_ms() > end) {
			kill(c->pid, SIGKILL);
			waitpid(c->pid, &st, 0);
			break;
		}
		/* Keep draining so the child never blocks on a full pipe. */
		if (c->out_len + 1 < sizeof(c->out)) {
			struct pollfd p = { .fd = c->out_fd, .events = POLLIN };

			if (poll(&p, 1, 20) > 0) {
				ssize_t n = read(c->out_fd, c->out + c->out_len,
						 sizeof(c->out) - 1 - c->out_len);
				if (n > 0) {
					c->out_len += (size_t)n;
					c->out[c->out_len] = '\0';
				}
			}
		} else {
			usleep(20000);
		}
	}
	close(c->out_fd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- the server ---- */

#define MAX_CONNS 32
#define OUTQ_BYTES 65536u

/* Owned by the server thread; lives until the connection closes. */
struct sconn {
	int fd;
	struct tls_conn *tc;
	bool established;
	bool closing;            /* finish the output, then close_notify */
	bool shut;               /* close_notify queued */
	char in[8192];           /* plaintext not yet a full line/request */
	size_t in_len;
	char outq[OUTQ_BYTES];   /* plaintext tls_conn_write did not take yet */
	size_t outq_len;
	size_t big_left;         /* generated body bytes still to queue */
	size_t big_off;
};

/* Owned by the test; lives until helpers_server_stop. */
struct helpers_server {
	struct tls_ctx *ctx;     /* borrowed */
	int lfd;
	int stop_pipe[2];
	uint16_t port;
	unsigned refused;        /* atomic */
	pthread_t thread;
	struct sconn *conns[MAX_CONNS];
};

static void queue_out(struct sconn *c, const char *p, size_t len)
{
	if (c->outq_len + len > OUTQ_BYTES) {
		fprintf(stderr, "tls_helpers: output queue overflow\n");
		abort();
	}
	memcpy(c->outq + c->outq_len, p, len);
	c->outq_len += len;
}

static void app_http(struct sconn *c)
{
	char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
	char hdr[256];
	int n;

	if (!end)
		return;
	if (c->in_len > 9 && memcmp(c->in + 4, "/big ", 5) == 0) {
		n = snprintf(hdr, sizeof(hdr),
			     "HTTP/1.1 200 OK\r\nContent-Length: %u\r\nConnection: close\r\n\r\n",
			     HELPERS_BIG_BYTES);
		c->big_left = HELPERS_BIG_BYTES;
	} else {
		n = snprintf(hdr, sizeof(hdr),
			     "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
			     strlen(HELPERS_BODY), HELPERS_BODY);
	}
	queue_out(c, hdr, (size_t)n);
	c->in_len = 0;
	c->closing = true;
}

static void app_lines(struct sconn *c)
{
	char *nl;

	while (!c->closing && (nl = memchr(c->in, '\n', c->in_len))) {
		size_t line_len = (size_t)(nl - c->in);

		if (line_len == 4 && memcmp(c->in, "quit", 4) == 0) {
			queue_out(c, "BYE\n", 4);
			c->closing = true;
		} else {
			queue_out(c, "ECHO ", 5);
			queue_out(c, c->in, line_len + 1);
		}
		memmove(c->in, nl + 1, c->in_len - line_len - 1);
		c->in_len -= line_len + 1;
	}
}

static void app_input(struct sconn *c, const char *p, size_t len)
{
	if (c->in_len + len > sizeof(c->in)) {
		c->closing = true;  /* an over-long line: stop talking */
		return;
	}
	memcpy(c->in + c->in_len, p, len);
	c->in_len += len;
	if (c->in_len >= 4 && memcmp(c->in, "GET ", 4) == 0)
		app_http(c);
	else
		app_lines(c);
}

/* Plaintext into the engine; returns false if the connection is dead. */
static bool push_plaintext(struct sconn *c)
{
	for (;;) {
		ssize_t k;

		while (c->big_left > 0 && c->outq_len < OUTQ_BYTES) {
			c->outq[c->outq_len++] = (char)('a' + c->big_off++ % 23);
			c->big_left--;
		}
		if (c->outq_len == 0)
			break;
		k = tls_conn_write(c->tc, c->outq, c->outq_len);
		if (k == -EAGAIN)
			break;
		if (k < 0)
			return false;
		memmove(c->outq, c->outq + k, c->outq_len - (size_t)k);
		c->outq_len -= (size_t)k;
	}
	if (c->closing && !c->shut && c->outq_len == 0 && c->big_left == 0) {
		int r = tls_conn_shutdown(c->tc);

		if (r == 0)
			c->shut = true;
		else if (r != -EAGAIN)
			return false;
	}
	return true;
}

/* Sends pending ciphertext; false on a socket error. */
static bool flush(struct sconn *c)
{
	const void *data;
	size_t len;

	while ((len = tls_conn_pending(c->tc, &data)) > 0) {
		ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);

		if (n < 0)
			return errno == EAGAIN;
		tls_conn_consume(c->tc, (size_t)n);
	}
	return true;
}

static bool drain_plaintext(struct sconn *c)
{
	char buf[4096];
	ssize_t m;

	while ((m = tls_conn_read(c->tc, buf, sizeof(buf))) > 0)
		app_input(c, buf, (size_t)m);
	if (m == 0)
		c->closing = true;  /* the peer's close_notify: answer with ours */
	return m == 0 || m == -EAGAIN;
}

/* One readable event; false when the connection must close. */
static bool on_readable(struct sconn *c)
{
	char buf[16384];
	const char *p = buf;
	int stalls = 0;
	ssize_t n;

	if (tls_conn_on_socket(c->tc)) {
		int r = tls_conn_handshake(c->tc);

		if (r == -EAGAIN)
			return true;
		if (r < 0)
			return false;
		c->established = true;
		return true;
	}
	n = recv(c->fd, buf, sizeof(buf), 0);
	if (n < 0)
		return errno == EAGAIN;
	if (n == 0)
		return false;  /* TCP EOF: whatever was not close_notify'd is lost */
	while (n > 0) {
		ssize_t k = tls_conn_feed(c->tc, p, (size_t)n);

		if (k < 0)
			return false;
		if (k == 0 && stalls++ > 0) {
			/* The engine drained nothing since the last feed: only a
			 * full output ring could do that; the test is broken. */
			fprintf(stderr, "tls_helpers: input ring stuck\n");
			return false;
		}
		if (k > 0)
			stalls = 0;
		p += k;
		n -= k;
		if (!c->established) {
			int r = tls_conn_handshake(c->tc);

			if (r == -EAGAIN) {
				flush(c);
				continue;
			}
			if (r < 0) {
				flush(c);  /* the alert, best effort */
				return false;
			}
			c->established = true;
		}
		if (!drain_plaintext(c) || !flush(c))
			return false;
	}
	return true;
}

static void close_conn(struct helpers_server *s, int i)
{
	struct sconn *c = s->conns[i];

	tls_conn_free(c->tc);
	close(c->fd);
	free(c);
	s->conns[i] = NULL;
}

static void on_accept(struct helpers_server *s)
{
	int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	struct tls_conn *tc;
	struct sconn *c;
	int i;

	if (fd < 0)
		return;
	for (i = 0; i < MAX_CONNS && s->conns[i]; i++)
		;
	if (i == MAX_CONNS || tls_conn_new(s->ctx, fd, &tc) < 0) {
		__atomic_fetch_add(&s->refused, 1, __ATOMIC_RELAXED);
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		die("calloc");
	c->fd = fd;
	c->tc = tc;
	s->conns[i] = c;
}

static void *server_main(void *arg)
{
	struct helpers_server *s = arg;

	for (;;) {
		struct pollfd p[MAX_CONNS + 2];
		int idx[MAX_CONNS];
		int n = 0;

		p[n++] = (struct pollfd){ .fd = s->stop_pipe[0], .events = POLLIN };
		p[n++] = (struct pollfd){ .fd = s->lfd, .events = POLLIN };
		for (int i = 0; i < MAX_CONNS; i++) {
			const void *d;

			if (!s->conns[i])
				continue;
			idx[n - 2] = i;
			p[n] = (struct pollfd){ .fd = s->conns[i]->fd, .events = POLLIN };
			if (tls_conn_pending(s->conns[i]->tc, &d) > 0)
				p[n].events |= POLLOUT;
			n++;
		}
		if (poll(p, (nfds_t)n, 1000) < 0 && errno != EINTR)
			die("poll");
		if (p[0].revents)
			break;
		if (p[1].revents & POLLIN)
			on_accept(s);
		for (int j = 2; j < n; j++) {
			int i = idx[j - 2];
			struct sconn *c = s->conns[i];
			bool ok = true;

			if (p[j].revents & (POLLIN | POLLHUP | POLLERR))
				ok = on_readable(c);
			if (ok && c->established)
				ok = push_plaintext(c);
			if (ok)
				ok = flush(c);
			if (ok && c->established)
				ok = push_plaintext(c) && flush(c);
			if (ok && c->shut) {
				const void *d;

				if (tls_conn_pending(c->tc, &d) == 0)
					ok = false;  /* close_notify is out: done */
			}
			if (!ok)
				close_conn(s, i);
		}
	}
	return NULL;
}

struct helpers_server *helpers_server_start(struct tls_ctx *ctx)
{
	struct helpers_server *s = calloc(1, sizeof(*s));
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);

	if (!s)
		die("calloc");
	s->ctx = ctx;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(s->lfd, 64) < 0 || getsockname(s->lfd, (struct sockaddr *)&a, &alen) < 0)
		die("listen");
	s->port = ntohs(a.sin_port);
	if (pipe2(s->stop_pipe, O_CLOEXEC) < 0)
		die("pipe");
	if (pthread_create(&s->thread, NULL, server_main, s) != 0)
		die("pthread_create");
	return s;
}

uint16_t helpers_server_port(const struct helpers_server *s)
{
	return s->port;
}

unsigned helpers_server_refused(const struct helpers_server *s)
{
	return __atomic_load_n(&s->refused, __ATOMIC_RELAXED);
}

void helpers_server_stop(struct helpers_server *s)
{
	if (!s)
		return;
	if (write(s->stop_pipe[1], "x", 1) != 1)
		die("stop");
	pthread_join(s->thread, NULL);
	for (int i = 0; i < MAX_CONNS; i++)
		if (s->conns[i])
			close_conn(s, i);
	close(s->lfd);
	close(s->stop_pipe[0]);
	close(s->stop_pipe[1]);
	free(s);
}
