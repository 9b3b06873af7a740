/* static.c - static files for routes with a static_files backend: the
 * route prefix is stripped and the rest resolved beneath the root (a
 * directory) or must be empty (a file root); directories serve their index.
 *
 * Invariants: every open is openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
 * from the root, so neither ".." nor a symlink can leave it; bodies go
 * file -> pipe -> socket with IORING_OP_SPLICE (no copy through user
 * space), or from memory for in_memory routes.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "proxy_internal.h"

static int hexval(unsigned char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

int proxy_path_decode(const char *src, size_t len, char *dst, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)src[i];

		if (ch == '%') {
			int hi, lo;

			if (i + 2 >= len)
				return -EINVAL;
			hi = hexval((unsigned char)src[i + 1]);
			lo = hexval((unsigned char)src[i + 2]);
			if (hi < 0 || lo < 0)
				return -EINVAL;
			ch = (unsigned char)(hi * 16 + lo);
			if (ch == 0)
				return -EINVAL;
			i += 2;
		}
		if (o + 1 >= cap)
			return -E2BIG;
		dst[o++] = (char)ch;
	}
	dst[o] = '\0';
	return (int)o;
}

bool proxy_path_has_dot_segment(const char *p, size_t len)
{
	size_t i = 0;

	while (i <= len) {
		size_t s = i;

		while (i < len && p[i] != '/')
			i++;
		if ((i - s == 1 && p[s] == '.') || (i - s == 2 && p[s] == '.' && p[s + 1] == '.'))
			return true;
		i++;
	}
	return false;
}

static const char *content_type(const char *name)
{
	static const struct {
		const char *ext, *type;
	} types[] = {
		{ "html", "text/html; charset=utf-8" },
		{ "htm", "text/html; charset=utf-8" },
		{ "css", "text/css; charset=utf-8" },
		{ "js", "text/javascript; charset=utf-8" },
		{ "mjs", "text/javascript; charset=utf-8" },
		{ "json", "application/json" },
		{ "map", "application/json" },
		{ "txt", "text/plain; charset=utf-8" },
		{ "csv", "text/csv; charset=utf-8" },
		{ "xml", "application/xml" },
		{ "svg", "image/svg+xml" },
		{ "png", "image/png" },
		{ "jpg", "image/jpeg" },
		{ "jpeg", "image/jpeg" },
		{ "gif", "image/gif" },
		{ "webp", "image/webp" },
		{ "avif", "image/avif" },
		{ "ico", "image/vnd.microsoft.icon" },
		{ "wasm", "application/wasm" },
		{ "pdf", "application/pdf" },
		{ "woff", "font/woff" },
		{ "woff2", "font/woff2" },
		{ "mp4", "video/mp4" },
		{ "webm", "video/webm" },
	};
	const char *slash = strrchr(name, '/');
	const char *dot = strrchr(slash ? slash : name, '.');

	if (dot && dot[1]) {
		for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
			if (strcasecmp(dot + 1, types[i].ext) == 0)
				return types[i].type;
	}
	return "application/octet-stream";
}

static int open_beneath(int dirfd, const char *rel)
{
	struct open_how how;
	long fd;

	memset(&how, 0, sizeof(how));
	how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY;
	how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
	fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
	return fd < 0 ? -errno : (int)fd;
}

static int errno_status(int err)
{
	switch (err) {
	case -ENOENT:
	case -ENOTDIR:
	case -ENAMETOOLONG:
		return 404;
	default:
		/* EXDEV: the path tried to leave the root; EACCES, ELOOP. */
		return 403;
	}
}

/* Opens the file for `rel` (decoded, no leading '/') beneath root_fd; a
 * directory gives its index. Returns an fd or a status (negative). */
static int open_file(int root_fd, char *rel, size_t cap, const char *index, struct stat *st,
		     const char **name)
{
	size_t len = strlen(rel);
	int fd;

	if (len == 0 || rel[len - 1] == '/') {
		if (len + strlen(index) + 1 > cap)
			return -404;
		strcpy(rel + len, index);
	}
	for (int tries = 0; tries < 2; tries++) {
		fd = open_beneath(root_fd, rel);
		if (fd < 0)
			return -errno_status(fd);
		if (fstat(fd, st) < 0) {
			close(fd);
			return -403;
		}
		if (S_ISREG(st->st_mode)) {
			*name = rel;
			return fd;
		}
		close(fd);
		if (!S_ISDIR(st->st_mode) || tries == 1)
			return -404;
		/* "/docs" serves docs/index.html directly, no redirect. */
		len = strlen(rel);
		if (len + strlen(index) + 2 > cap)
			return -404;
		snprintf(rel + len, cap - len, "/%s", index);
	}
	return -404;
}

void proxy_static_cleanup(struct proxy_conn *c)
{
	if (c->file_fd >= 0) {
		close(c->file_fd);
		c->file_fd = -1;
	}
	c->file_left = 0;
}

static void splice_step(struct proxy_conn *c)
{
	struct io_uring_sqe *sqe = proxy_get_sqe(c->w);

	if (c->pipe_bytes) {
		io_uring_prep_splice(sqe, c->pipe_fd[0], -1, c->fd, -1, (unsigned)c->pipe_bytes, 0);
		c->op_splice.kind = OP_SPLICE_OUT;
	} else {
		size_t n = c->file_left < PROXY_SPLICE_CHUNK ? (size_t)c->file_left
							     : PROXY_SPLICE_CHUNK;

		io_uring_prep_splice(sqe, c->file_fd, (int64_t)c->file_off, c->pipe_fd[1], -1,
				     (unsigned)n, 0);
		c->op_splice.kind = OP_SPLICE_IN;
	}
	io_uring_sqe_set_data(sqe, &c->op_splice);
	c->splice_pending = true;
	c->inflight++;
	proxy_conn_set_deadline(c, DL_SEND, c->w->p->cfg.body_timeout_ms);
}

/* TLS in user space encrypts in memory: the file goes through a buffer,
 * PROXY_SPLICE_CHUNK at a time. */
static void tls_file_step(struct proxy_conn *c)
{
	size_t n = c->file_left < PROXY_SPLICE_CHUNK ? (size_t)c->file_left : PROXY_SPLICE_CHUNK;
	ssize_t r;

	c->wbuf.len = 0;
	if (proxy_buf_reserve(&c->wbuf, n) < 0) {
		proxy_conn_abort(c);
		return;
	}
	r = pread(c->file_fd, c->wbuf.p, n, (off_t)c->file_off);
	if (r <= 0) {
		proxy_conn_abort(c);
		return;
	}
	c->file_off += (uint64_t)r;
	c->file_left -= (uint64_t)r;
	c->iov[0].iov_base = c->wbuf.p;
	c->iov[0].iov_len = (size_t)r;
	c->iovcnt = 1;
	proxy_conn_send(c, SN_STATIC);
}

void proxy_static_sent(struct proxy_conn *c)
{
	if (c->file_left == 0 || c->file_fd < 0) {
		proxy_static_cleanup(c);
		proxy_conn_request_done(c);
		return;
	}
	if (c->tls) {
		tls_file_step(c);
		return;
	}
	if (c->pipe_fd[0] < 0 && pipe2(c->pipe_fd, O_CLOEXEC) < 0) {
		c->pipe_fd[0] = c->pipe_fd[1] = -1;
		proxy_conn_abort(c);
		return;
	}
	c->pipe_bytes = 0;
	splice_step(c);
}

void proxy_static_cqe(struct proxy_conn *c, uint8_t kind, int res)
{
	c->deadline_kind = DL_NONE;
	if (res <= 0) {
		/* A short file (truncated while sent) or a client gone: the
		 * length is promised, so the connection ends here. */
		proxy_conn_abort(c);
		return;
	}
	if (kind == OP_SPLICE_IN) {
		c->pipe_bytes = (size_t)res;
		c->file_off += (uint64_t)res;
		c->file_left -= (uint64_t)res;
	} else {
		c->pipe_bytes -= (size_t)res;
		c->bytes_out += (uint64_t)res;
	}
	if (c->pipe_bytes == 0 && c->file_left == 0) {
		proxy_static_cleanup(c);
		proxy_conn_request_done(c);
		return;
	}
	splice_step(c);
}

void proxy_static_serve(struct proxy_conn *c, const struct policy_route *rt, const char *rest,
			size_t rest_len, const char *method, size_t method_len)
{
	char rel[4096];
	const char *name = rel;
	struct stat st;
	int root_fd, fd, n;
	const char *p;
	bool head = method_len == 4 && memcmp(method, "HEAD", 4) == 0;

	if (!head && !(method_len == 3 && memcmp(method, "GET", 3) == 0)) {
		static const char allow[] = "Allow: GET, HEAD\r\n";

		proxy_conn_respond(c, 405, allow, sizeof(allow) - 1, false);
		return;
	}
	n = proxy_path_decode(rest, rest_len, rel, sizeof(rel) - 256);
	if (n < 0) {
		proxy_conn_respond(c, n == -E2BIG ? 414 : 400, NULL, 0, false);
		return;
	}
	root_fd = open(rt->static_root, O_PATH | O_CLOEXEC);
	if (root_fd < 0) {
		proxy_conn_respond(c, errno_status(-errno), NULL, 0, false);
		return;
	}
	if (fstat(root_fd, &st) < 0) {
		close(root_fd);
		proxy_conn_respond(c, 403, NULL, 0, false);
		return;
	}
	if (S_ISREG(st.st_mode)) {
		/* A file root answers its exact path only. */
		close(root_fd);
		if (n != 0) {
			proxy_conn_respond(c, 404, NULL, 0, false);
			return;
		}
		fd = open(rt->static_root, O_RDONLY | O_CLOEXEC | O_NOCTTY);
		if (fd < 0 || fstat(fd, &st) < 0) {
			if (fd >= 0)
				close(fd);
			proxy_conn_respond(c, 403, NULL, 0, false);
			return;
		}
		name = rt->static_root;
	} else {
		p = rel;
		while (*p == '/')
			p++;
		memmove(rel, p, strlen(p) + 1);
		fd = open_file(root_fd, rel, sizeof(rel), rt->static_index, &st, &name);
		close(root_fd);
		if (fd < 0) {
			proxy_conn_respond(c, -fd, NULL, 0, false);
			return;
		}
	}

	proxy_conn_skip_body(c);
	if (c->w->draining)
		c->close_after = true;
	c->status = 200;
	c->phase = PH_STATIC;
	c->wbuf.len = 0;
	proxy_buf_fmt(&c->wbuf,
		      "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %llu\r\n%s\r\n",
		      content_type(name), (unsigned long long)st.st_size,
		      c->close_after ? "Connection: close\r\n" : "");
	c->file_fd = -1;
	c->file_off = 0;
	c->file_left = 0;
	if (!head && rt->static_in_memory && (uint64_t)st.st_size <= PROXY_IN_MEMORY_MAX_BYTES) {
		size_t size = (size_t)st.st_size, got = 0;

		if (proxy_buf_reserve(&c->wbuf, size) == 0) {
			while (got < size) {
				ssize_t r = pread(fd, c->wbuf.p + c->wbuf.len + got, size - got,
						  (off_t)got);

				if (r <= 0)
					break;
				got += (size_t)r;
			}
		}
		close(fd);
		if (PROXY_BUF_FAILED(&c->wbuf) || got != size) {
			c->status = 0;
			proxy_conn_respond(c, 500, NULL, 0, true);
			return;
		}
		c->wbuf.len += size;
		fd = -1;
	} else if (head || st.st_size == 0) {
		close(fd);
		fd = -1;
	} else {
		c->file_fd = fd;
		c->file_left = (uint64_t)st.st_size;
	}
	if (PROXY_BUF_FAILED(&c->wbuf)) {
		proxy_static_cleanup(c);
		proxy_conn_abort(c);
		return;
	}
	c->iov[0].iov_base = c->wbuf.p;
	c->iov[0].iov_len = c->wbuf.len;
	c->iovcnt = 1;
	proxy_conn_send(c, c->file_fd >= 0 ? SN_STATIC : SN_DONE);
}
