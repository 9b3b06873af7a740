/* tls_clients_test.c - dataplane/tls over real loopback sockets against real
 * independent clients: openssl s_client (TLS 1.2 and 1.3 forced) and curl.
 * A poll-loop server built on tls_conn (tls_helpers.c) answers them. Covers
 * verification failures, garbage ClientHellos, certificate reload with a live
 * connection, and the counted kTLS fallback / ktls_required refusal.
 * Every client runs under `timeout`; nothing leaves loopback.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tls.h"
#include "tls_helpers.h"

__attribute__((constructor)) static void skip_without_clients(void)
{
	if (system("command -v openssl >/dev/null && command -v curl >/dev/null && "
		   "command -v timeout >/dev/null") != 0) {
		fprintf(stderr, "tls_clients_test: skipped: needs openssl, curl and timeout on PATH\n");
		_exit(77);
	}
}

static char out[65536];
static char path_a[512], path_b[512];

static struct tls_ctx *ctx_for(const char *dir, bool ktls, bool required, bool ignore_probe)
{
	struct tls_config cfg = {
		.cert_file = path_a, .key_file = path_b,
		.ktls = ktls, .ktls_required = required, .ktls_ignore_probe = ignore_probe,
	};
	struct tls_ctx *ctx = NULL;

	snprintf(path_a, sizeof(path_a), "%s/server.pem", dir);
	snprintf(path_b, sizeof(path_b), "%s/server.key", dir);
	cr_assert_eq(tls_ctx_new(&cfg, &ctx), 0);
	return ctx;
}

static void fini(void)
{
	helpers_cleanup();
}

#define STAT(f) offsetof(struct tls_stats, f)

static struct tls_stats stats_of(struct tls_ctx *ctx)
{
	struct tls_stats st;

	tls_ctx_stats(ctx, &st);
	return st;
}

/* s_client with input lines, -ign_eof so it waits for our close_notify. */
static int s_client(const char *dir, uint16_t port, const char *proto, const char *input)
{
	return helpers_run(out, sizeof(out),
			   "printf '%s' | timeout 20 openssl s_client -connect 127.0.0.1:%u "
			   "-servername localhost -verify_hostname localhost -CAfile '%s/ca.pem' "
			   "-verify_return_error %s -ign_eof",
			   input, port, dir, proto);
}

TestSuite(tls_clients, .fini = fini, .timeout = 120);

Test(tls_clients, s_client_tls13_handshake_verifies_and_echoes)
{
	const char *dir = helpers_certs();
	struct tls_ctx *ctx = ctx_for(dir, false, false, false);
	struct helpers_server *s = helpers_server_start(ctx);
	int st = s_client(dir, helpers_server_port(s), "-tls1_3", "hello\\nquit\\n");

	cr_assert_eq(st, 0, "s_client exit %d:\n%s", st, out);
	cr_assert(strstr(out, "New, TLSv1.3"), "%s", out);
	cr_assert(strstr(out, "Verify return code: 0 (ok)"), "%s", out);
	cr_assert(strstr(out, "ECHO hello\n"), "%s", out);
	cr_assert(strstr(out, "BYE\n"), "%s", out);
	helpers_server_stop(s);
	struct tls_stats t = stats_of(ctx);
	cr_assert_eq(t.handshakes, 1);
	cr_assert_eq(t.handshake_failures, 0);
	cr_assert_eq(t.path[TLS_PATH_USERSPACE], 1);
	tls_ctx_free(ctx);
}

Test(tls_clients, s_client_tls12_handshake_uses_ecdhe_aead)
{
	const char *dir = helpers_certs();
	struct tls_ctx *ctx = ctx_for(dir, false, false, false);
	struct helpers_server *s = helpers_server_start(ctx);
	int st = s_client(dir, helpers_server_port(s), "-tls1_2", "one\\ntwo\\nquit\\n");

	cr_assert_eq(st, 0, "s_client exit %d:\n%s", st, out);
	cr_assert(strstr(out, "New, TLSv1.2, Cipher is ECDHE-ECDSA-"), "%s", out);
	cr_assert(strstr(out, "GCM") || strstr(out, "CHACHA20"), "%s", out);
	cr_assert(strstr(out, "ECHO one\nECHO two\nBYE\n"), "%s", out);
	helpers_server_stop(s);
	cr_assert_eq(stats_of(ctx).handshakes, 1);
	tls_ctx_free(ctx);
}

Test(tls_clients, s_client_tls11_is_refused)
{
	const char *dir = helpers_certs();
	struct tls_ctx *ctx = ctx_for(dir, false, false, false);
	struct helpers_server *s = helpers_server_start(ctx);
	/* @SECLEVEL=0 so that the client really offers TLS 1.1 and only the
	 * server can be the one saying no. */
	int st = helpers_run(out, sizeof(out),
			     "timeout 20 openssl s_client -connect 127.0.0.1:%u -tls1_1 "
			     "-cipher 'DEFAULT:@SECLEVEL=0' </dev/null",
			     helpers_server_port(s));

	cr_assert_neq(st, 0, "%s", out);
	cr_assert_eq(helpers_wait_stat(ctx, STAT(handshake_failures), 1), 1);
	helpers_server_stop(s);
	cr_assert_eq(stats_of(ctx).handshakes, 0);
	tls_ctx_free(ctx);
}

Test(tls_clients, curl_gets_body_by_name_and_by_ip)
{
	const char *dir = helpers_certs();
	struct tls_ctx *ctx = ctx_for(dir, false, false, false);
	struct helpers_server *s = helpers_server_start(ctx);
	uint16_t port = helpers_server_port(s);
	int st;

	st = helpers_run(out, sizeof(out),
			 "timeout 20 curl -sS --cacert '%s/ca.pem' --resolve localhost:%u:127.0.0.1 "
			 "https://localhost:%u/", dir, port, port);
	cr_assert_eq(st, 0, "curl exit %d: %s", st, out);
	cr_assert_str_eq(out, HELPERS_BODY);

	st = helpers_run(out, sizeof(out),
			 "timeout 20 curl -sS --http1.1 --tlsv1.2 --tls-max 1.2 --cacert '%s/ca.pem' "
			 "https://127.0.0.1:%u/x", dir, port);
	cr_assert_eq(st, 0, "curl exit %d: %s", st, out);
	cr_assert_str_eq(out, HELPERS_BODY);
	helpers_server_stop(s);
	cr_assert_eq(stats_of(ctx).handshakes, 2);
	tls_ctx_free(ctx);
}

Test(tls_clients, curl_receives_one_mebibyte_intact)
{
	const char *dir = helpers_certs();
	struct tls_ctx *ctx = ctx_for(dir, false, false, false);
	struct helpers_server *s = helpers_server_start(ctx);
	char file[600];
	FILE *f;
	size_t i = 0;
	int ch, st;

	snprintf(file, sizeof(file), "%s/big.out", dir);
	st = helpers_run(out, sizeof(out),
			 "timeout 30 curl -sS --cacert '%s/ca.pem' -o '%s' https://127.0.0.1:%u/big",
			 dir, file, helpers_server_port(s));
	cr_assert_eq(st, 0, "curl exit %d: %s", st, out);
	f = fopen(file, "rb");
	cr_assert_not_null(f);
	while ((ch = fgetc(f)) != EOF) {
		if (ch != 'a' + (int)(i % 23))
			cr_assert_fail("byte %zu is %d", i, ch);
		i++;
	}
	fclose(f);
	cr_assert_eq(i, HELPERS_BIG_BYTES);
	helpers_server_stop(s);
	tls_ctx_free(ctx);
}

Test(tls_clients, client_trusting_another_ca_fails_and_is_counted)
{
	const char *dir = helpers_certs();
	const char *other = helpers_other_certs();
	struct tls_ctx *ctx = ctx_for(dir, false, false, false);
	struct helpers_server *s = helpers_server_start(ctx);
	uint16_t port = helpers_server_port(s);
	int st;

	st = helpers_run(out, sizeof(out),
			 "timeout 20 openssl s_client -connect 127.0.0.1:%u -CAfile '%s/ca.pem' "
			 "-verify_return_error -tls1_3 </dev/null", port, other);
	cr_assert_neq(st, 0, "%s", out);
	cr_assert(strstr(out, "unable to get local issuer certificate") ||
		  strstr(out, "certificate verify failed"), "%s", out);
	st = helpers_run(out, sizeof(out),
			 "timeout 20 curl -sS --cacert '%s/ca.pem' https://127.0.0.1:%u/", other, port);
	cr_assert_eq(st, 60, "curl exit %d (want 60, peer certificate): %s", st, out);
	/* Each client aborted the handshake with an alert the server read. */
	cr_assert_eq(helpers_wait_stat(ctx, STAT(handshake_failures), 2), 2);
	helpers_server_stop(s);
	cr_assert_eq(stats_of(ctx).handshakes, 0);
	tls_ctx_free(ctx);
}

/* Sends raw bytes, then waits for the server to close; true if it did. */
static bool raw_exchange(uint16_t port, const void *data, size_t len)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	char buf[4096];
	bool closed = false;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(send(fd, data, len, MSG_NOSIGNAL), (ssize_t)len);
	for (int i = 0; i < 100; i++) {  /* bounded: 100 x 100 ms */
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 100) <= 0)
			continue;
		n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0) {
			closed = true;
			break;
		}
	}
	close(fd);
	return closed;
}

Test(tls_clients, garbage_client_hellos_fail_cleanly_and_server_lives_on)
{
	const char *dir = helpers_certs();
	struct tls_ctx *ctx = ctx_for(dir, false, false, false);
	struct helpers_server *s = helpers_server_start(ctx);
	uint16_t port = helpers_server_port(s);
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	/* A handshake record claiming 65535 bytes: over the TLS limit. */
	unsigned char huge[64] = { 0x16, 0x03, 0x01, 0xff, 0xff };
	/* A complete ClientHello message whose body is 4 bytes: too short for
	 * even the client random. */
	unsigned char trunc[] = { 0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04,
				  0x03, 0x03, 0x00, 0x00 };
	unsigned char noise[300];
	int st;

	for (size_t i = 0; i < sizeof(noise); i++)
		noise[i] = (unsigned char)(i * 37 + 11);
	noise[0] = 0x16;  /* looks like a handshake record, then nonsense */
	memset(huge + 5, 0x41, sizeof(huge) - 5);

	cr_assert(raw_exchange(port, http, sizeof(http) - 1));
	cr_assert(raw_exchange(port, huge, sizeof(huge)));
	cr_assert(raw_exchange(port, trunc, sizeof(trunc)));
	cr_assert(raw_exchange(port, noise, sizeof(noise)));
	cr_assert_eq(helpers_wait_stat(ctx, STAT(handshake_failures), 4), 4);

	st = helpers_run(out, sizeof(out), "timeout 20 curl -sS --cacert '%s/ca.pem' "
			 "https://127.0.0.1:%u/", dir, port);
	cr_assert_eq(st, 0, "%s", out);
	cr_assert_str_eq(out, HELPERS_BODY);
	helpers_server_stop(s);
	struct tls_stats t = stats_of(ctx);
	cr_assert_eq(t.handshakes, 1);
	cr_assert_eq(t.handshake_failures, 4);
	tls_ctx_free(ctx);
}

/* A second server pair signed by the same CA (so clients still verify),
 * with its own random serial. */
static void make_second_pair(const char *dir, char *dir2, size_t cap)
{
	int st;

	snprintf(dir2, cap, "%s/second", dir);
	st = helpers_run(out, sizeof(out), "mkdir -p '%s' && cp '%s/ca.pem' '%s/ca.key' '%s/' && '%s' '%s'",
			 dir2, dir, dir, dir2, GEN_CERTS, dir2);
	cr_assert_eq(st, 0, "%s", out);
}

static void new_connection_serial(const char *dir, uint16_t port, char *serial, size_t cap)
{
	char *nl;
	int st = helpers_run(serial, cap,
			     "timeout 20 openssl s_client -connect 127.0.0.1:%u -CAfile '%s/ca.pem' "
			     "-verify_return_error </dev/null 2>/dev/null | openssl x509 -noout -serial",
			     port, dir);

	cr_assert_eq(st, 0, "%s", serial);
	nl = strchr(serial, '\n');
	if (nl)
		*nl = '\0';
}

Test(tls_clients, reload_serves_new_cert_and_keeps_open_connection)
{
	const char *dir = helpers_certs();
	struct tls_ctx *ctx = ctx_for(dir, false, false, false);
	struct helpers_server *s = helpers_server_start(ctx);
	uint16_t port = helpers_server_port(s);
	char dir2[300], cmd[1024], old_serial[128], new_serial[128], seen[128];
	char cert2[400], key2[400];
	struct helpers_child a;
	struct tls_config cfg = { .cert_file = cert2, .key_file = key2 };

	make_second_pair(dir, dir2, sizeof(dir2));
	snprintf(cert2, sizeof(cert2), "%s/server.pem", dir2);
	snprintf(key2, sizeof(key2), "%s/server.key", dir2);
	helpers_serial(path_a, old_serial, sizeof(old_serial));
	helpers_serial(cert2, new_serial, sizeof(new_serial));
	cr_assert_str_neq(old_serial, new_serial);

	/* Connection A: open before the reload, used after it. s_client prints
	 * the served certificate's PEM, checked against the old file below. */
	snprintf(cmd, sizeof(cmd),
		 "timeout 60 openssl s_client -connect 127.0.0.1:%u -CAfile '%s/ca.pem' "
		 "-verify_return_error -ign_eof", port, dir);
	cr_assert_eq(helpers_spawn(&a, cmd), 0);
	helpers_child_write(&a, "before\n");
	cr_assert(helpers_child_wait_for(&a, "ECHO before\n"), "%s", a.out);

	cr_assert_eq(tls_ctx_reload(ctx, &cfg), 0);

	new_connection_serial(dir, port, seen, sizeof(seen));
	cr_assert_str_eq(seen, new_serial);

	/* A still works, and still holds the old certificate. */
	helpers_child_write(&a, "after\n");
	cr_assert(helpers_child_wait_for(&a, "ECHO after\n"), "%s", a.out);
	helpers_child_write(&a, "quit\n");
	cr_assert(helpers_child_wait_for(&a, "BYE\n"), "%s", a.out);
	cr_assert_eq(helpers_child_finish(&a), 0, "%s", a.out);
	{
		char pem[4096] = "";
		FILE *f = fopen(path_a, "r");
		size_t n;
		char *b, *e;

		cr_assert_not_null(f);
		n = fread(pem, 1, sizeof(pem) - 1, f);
		fclose(f);
		pem[n] = '\0';
		b = strstr(pem, "-----BEGIN CERTIFICATE-----");
		e = strstr(pem, "-----END CERTIFICATE-----");
		cr_assert(b && e);
		e[0] = '\0';
		cr_assert(strstr(a.out, b), "connection A did not see the old certificate");
	}
	helpers_server_stop(s);
	struct tls_stats t = stats_of(ctx);
	cr_assert_eq(t.reloads, 1);
	cr_assert_eq(t.reload_failures, 0);
	cr_assert_eq(t.handshakes, 2);
	tls_ctx_free(ctx);
}

Test(tls_clients, failed_reload_keeps_old_pair)
{
	const char *dir = helpers_certs();
	struct tls_ctx *ctx = ctx_for(dir, false, false, false);
	struct helpers_server *s = helpers_server_start(ctx);
	uint16_t port = helpers_server_port(s);
	char old_serial[128], seen[128], garbage[400], other_key[400], missing[400];
	FILE *f;

	helpers_serial(path_a, old_serial, sizeof(old_serial));
	snprintf(garbage, sizeof(garbage), "%s/garbage.key", dir);
	snprintf(other_key, sizeof(other_key), "%s/control.key", dir);
	snprintf(missing, sizeof(missing), "%s/missing.pem", dir);
	f = fopen(garbage, "w");
	cr_assert_not_null(f);
	fputs("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", f);
	fclose(f);

	struct tls_config bad_key = { .cert_file = path_a, .key_file = garbage };
	struct tls_config wrong_key = { .cert_file = path_a, .key_file = other_key };
	struct tls_config no_cert = { .cert_file = missing, .key_file = path_b };
	struct tls_config null_cert = { .cert_file = NULL, .key_file = path_b };

	cr_assert_eq(tls_ctx_reload(ctx, &bad_key), -EBADMSG);
	cr_assert_eq(tls_ctx_reload(ctx, &wrong_key), -EBADMSG);
	cr_assert_eq(tls_ctx_reload(ctx, &no_cert), -EBADMSG);
	cr_assert_eq(tls_ctx_reload(ctx, &null_cert), -EINVAL);

	new_connection_serial(dir, port, seen, sizeof(seen));
	cr_assert_str_eq(seen, old_serial);
	helpers_server_stop(s);
	struct tls_stats t = stats_of(ctx);
	cr_assert_eq(t.reloads, 0);
	cr_assert_eq(t.reload_failures, 4);
	cr_assert_eq(t.handshakes, 1);
	tls_ctx_free(ctx);
}

Test(tls_clients, kernel_probe_agrees_with_a_connected_socket)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0);
	bool accepted;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(l, 1), 0);
	cr_assert_eq(getsockname(l, (struct sockaddr *)&a, &alen), 0);
	cr_assert_eq(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
	accepted = setsockopt(c, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) == 0;
	if (!accepted)
		cr_assert_eq(errno, ENOENT, "unexpected errno %d", errno);
	cr_assert_eq(tls_kernel_has_ulp(), accepted);
	cr_assert_eq(tls_kernel_has_ulp(), accepted);  /* cached, same answer */
	close(c);
	close(l);
}

Test(tls_clients, ktls_requested_without_ulp_falls_back_to_userspace_and_counts)
{
	const char *dir = helpers_certs();

	if (tls_kernel_has_ulp())
		cr_skip_test("this kernel has the TLS ULP: the fallback is not forced here");
	struct tls_ctx *ctx = ctx_for(dir, true, false, false);
	struct helpers_server *s = helpers_server_start(ctx);
	int st = helpers_run(out, sizeof(out), "timeout 20 curl -sS --cacert '%s/ca.pem' "
			     "https://127.0.0.1:%u/", dir, helpers_server_port(s));

	cr_assert_eq(st, 0, "%s", out);
	cr_assert_str_eq(out, HELPERS_BODY);
	helpers_server_stop(s);
	struct tls_stats t = stats_of(ctx);
	cr_assert_eq(t.path[TLS_PATH_USERSPACE], 1);
	cr_assert_eq(t.path[TLS_PATH_KTLS_SEND], 0);
	cr_assert_eq(t.path[TLS_PATH_KTLS_BOTH], 0);
	cr_assert_eq(t.refused_no_ktls, 0);
	tls_ctx_free(ctx);
}

Test(tls_clients, ktls_handshake_on_socket_falls_back_when_offload_fails)
{
	const char *dir = helpers_certs();

	if (tls_kernel_has_ulp())
		cr_skip_test("this kernel has the TLS ULP: offload would succeed");
	/* The kTLS handshake runs on the socket, OpenSSL's offload attempt
	 * fails, and the engine moves onto its rings for the rest. */
	struct tls_ctx *ctx = ctx_for(dir, true, false, true);
	struct helpers_server *s = helpers_server_start(ctx);
	uint16_t port = helpers_server_port(s);
	int st;

	st = helpers_run(out, sizeof(out), "timeout 20 curl -sS --cacert '%s/ca.pem' "
			 "https://127.0.0.1:%u/", dir, port);
	cr_assert_eq(st, 0, "%s", out);
	cr_assert_str_eq(out, HELPERS_BODY);
	st = s_client(dir, port, "-tls1_2", "over tls 1.2\\nquit\\n");
	cr_assert_eq(st, 0, "%s", out);
	cr_assert(strstr(out, "ECHO over tls 1.2\nBYE\n"), "%s", out);
	helpers_server_stop(s);
	struct tls_stats t = stats_of(ctx);
	cr_assert_eq(t.handshakes, 2);
	cr_assert_eq(t.path[TLS_PATH_USERSPACE], 2);
	cr_assert_eq(t.path[TLS_PATH_KTLS_SEND] + t.path[TLS_PATH_KTLS_BOTH], 0);
	tls_ctx_free(ctx);
}

Test(tls_clients, ktls_required_refuses_connections_that_cannot_offload)
{
	const char *dir = helpers_certs();

	if (tls_kernel_has_ulp())
		cr_skip_test("this kernel has the TLS ULP: connections would offload");
	struct tls_ctx *ctx = ctx_for(dir, true, true, false);
	struct helpers_server *s = helpers_server_start(ctx);
	uint16_t port = helpers_server_port(s);
	int st;

	st = helpers_run(out, sizeof(out), "timeout 20 curl -sS --cacert '%s/ca.pem' "
			 "https://127.0.0.1:%u/", dir, port);
	cr_assert_neq(st, 0, "%s", out);
	st = s_client(dir, port, "-tls1_3", "x\\n");
	cr_assert_neq(st, 0, "%s", out);
	cr_assert_eq(helpers_server_refused(s), 2);
	helpers_server_stop(s);
	struct tls_stats t = stats_of(ctx);
	cr_assert_eq(t.refused_no_ktls, 2);
	cr_assert_eq(t.handshakes, 0);
	cr_assert_eq(t.path[TLS_PATH_USERSPACE], 0);
	tls_ctx_free(ctx);
}

Test(tls_clients, ktls_required_refuses_after_a_failed_offload)
{
	const char *dir = helpers_certs();

	if (tls_kernel_has_ulp())
		cr_skip_test("this kernel has the TLS ULP: offload would succeed");
	/* Probe ignored: the handshake completes on the socket, the offload
	 * fails, and only then is the connection refused. */
	struct tls_ctx *ctx = ctx_for(dir, true, true, true);
	struct helpers_server *s = helpers_server_start(ctx);
	int st = helpers_run(out, sizeof(out), "timeout 20 curl -sS --cacert '%s/ca.pem' "
			     "https://127.0.0.1:%u/", dir, helpers_server_port(s));

	cr_assert_neq(st, 0, "%s", out);
	cr_assert_eq(helpers_wait_stat(ctx, STAT(refused_no_ktls), 1), 1);
	helpers_server_stop(s);
	struct tls_stats t = stats_of(ctx);
	cr_assert_eq(t.handshakes, 0);
	cr_assert_eq(t.handshake_failures, 0);
	tls_ctx_free(ctx);
}
