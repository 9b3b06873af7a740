/* etcd_helper.c - start, kill, restart and clean up a private etcd.
 *
 * Ports come from binding port 0 and closing: another process may take
 * one before etcd binds it, so start retries with fresh ports when etcd
 * exits early. Health is polled over HTTP with libcurl.
 */
#include "etcd_helper.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HEALTH_WAIT_MS 10000
#define HEALTH_POLL_MS 50
#define START_ATTEMPTS 5

bool etcd_helper_available(char *why, size_t why_len)
{
	if (access(ETCD_HELPER_BINARY, X_OK) == 0)
		return true;
	snprintf(why, why_len, "'%s' is not executable (%s): install Debian's etcd-server",
		 ETCD_HELPER_BINARY, strerror(errno));
	return false;
}

uint16_t etcd_helper_free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	uint16_t port = 0;

	if (fd < 0)
		return 0;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static size_t collect(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	char *buf = userdata;
	size_t n = size * nmemb, have = strlen(buf);

	if (have + n < 256) {
		memcpy(buf + have, ptr, n);
		buf[have + n] = '\0';
	}
	return n;
}

static bool healthy(const struct etcd_helper *h)
{
	char url[64], body[256] = "";
	CURL *c = curl_easy_init();
	long status = 0;
	CURLcode cc;

	if (!c)
		return false;
	snprintf(url, sizeof(url), "%s/health", h->endpoint);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	return cc == CURLE_OK && status == 200 && strstr(body, "\"true\"");
}

static int spawn(struct etcd_helper *h)
{
	char client_url[48], peer_url[48], cluster[64], data[96], log_path[96];
	pid_t parent = getpid(), pid;

	snprintf(client_url, sizeof(client_url), "http://127.0.0.1:%u", h->client_port);
	snprintf(peer_url, sizeof(peer_url), "http://127.0.0.1:%u", h->peer_port);
	snprintf(cluster, sizeof(cluster), "n=%s", peer_url);
	snprintf(data, sizeof(data), "%s/data", h->dir);
	snprintf(log_path, sizeof(log_path), "%s/etcd.log", h->dir);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

		/* Die with the test, even when it crashes. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execl(ETCD_HELPER_BINARY, "etcd", "--name", "n", "--data-dir", data,
		      "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
		      "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
		      "--initial-cluster", cluster, "--log-level", "warn", (char *)NULL);
		_exit(127);
	}
	h->pid = pid;
	return 0;
}

/* 0 when healthy; -ECHILD when etcd exited; -ETIMEDOUT. */
static int wait_healthy(struct etcd_helper *h)
{
	uint64_t deadline = mono_ms() + HEALTH_WAIT_MS;

	while (mono_ms() < deadline) {
		int status;

		if (waitpid(h->pid, &status, WNOHANG) == h->pid) {
			h->pid = 0;
			return -ECHILD;
		}
		if (healthy(h))
			return 0;
		usleep(HEALTH_POLL_MS * 1000);
	}
	return -ETIMEDOUT;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

int etcd_helper_kill(struct etcd_helper *h)
{
	if (h->pid <= 0)
		return 0;
	if (kill(h->pid, SIGKILL) < 0 && errno != ESRCH)
		return -errno;
	while (waitpid(h->pid, NULL, 0) < 0)
		if (errno != EINTR)
			break;
	h->pid = 0;
	return 0;
}

int etcd_helper_restart(struct etcd_helper *h)
{
	int r;

	etcd_helper_kill(h);
	r = spawn(h);
	if (r < 0)
		return r;
	r = wait_healthy(h);
	if (r < 0)
		etcd_helper_kill(h);
	return r;
}

int etcd_helper_start(struct etcd_helper **ret)
{
	struct etcd_helper *h;
	int r = -EADDRINUSE;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -ENOMEM;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	snprintf(h->dir, sizeof(h->dir), "/tmp/sluice-etcd-XXXXXX");
	if (!mkdtemp(h->dir)) {
		r = -errno;
		free(h);
		return r;
	}
	for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
		char data[96];

		h->client_port = etcd_helper_free_port();
		h->peer_port = etcd_helper_free_port();
		if (!h->client_port || !h->peer_port || h->client_port == h->peer_port)
			continue;
		snprintf(h->endpoint, sizeof(h->endpoint), "http://127.0.0.1:%u", h->client_port);
		/* A failed start may have left a half-made member behind. */
		snprintf(data, sizeof(data), "%s/data", h->dir);
		nftw(data, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
		r = etcd_helper_restart(h);
		if (r == 0) {
			*ret = h;
			return 0;
		}
	}
	etcd_helper_free(h);
	return r;
}

void etcd_helper_free(struct etcd_helper *h)
{
	if (!h)
		return;
	etcd_helper_kill(h);
	nftw(h->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(h);
}
