/* rpc_test.c - the controlplane/rpc adapter served for real on loopback and
 * driven by a gRPC C-core client: unary, server and bidi streams, auth by
 * token and by (m)TLS certificates from scripts/gen-certs.sh, deadlines,
 * unknown methods, bounded send queues, health, reflection, shutdown.
 *
 * Each test runs in its own process (Criterion forks) with its own server.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "descriptor_set.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "rpc.h"
#include "rpc_client.h"

#define TOKEN "s3cret-admin-token"
#define QUEUE_MAX 8

#ifndef GEN_CERTS
#error "GEN_CERTS (path of scripts/gen-certs.sh) must be defined"
#endif

/* ---- test services ------------------------------------------------------ */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int inside;              /* handlers inside /test.Echo/Meet */
static int closes;              /* close callbacks seen */
static enum rpc_status last_close = (enum rpc_status)-1;
static int flood_accepted;
static bool flood_again;
static uint64_t seen_deadline_ms;

static void reply_bytes(struct rpc_reply *reply, const void *data, size_t len)
{
	reply->data = malloc(len ? len : 1);
	memcpy(reply->data, data, len);
	reply->len = len;
	reply->status = RPC_OK;
}

static void echo(void *ctx, const struct rpc_peer *peer, const uint8_t *req, size_t len,
		 struct rpc_reply *reply)
{
	(void)ctx;
	(void)peer;
	if (len == 4 && memcmp(req, "fail", 4) == 0) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT, "route/api.path_prefix: %s",
				"must start with '/'");
		return;
	}
	if (len == 4 && memcmp(req, "slow", 4) == 0) {
		pthread_mutex_lock(&mu);
		seen_deadline_ms = rpc_call_deadline_ms();
		pthread_mutex_unlock(&mu);
		usleep(1500 * 1000);
	}
	reply_bytes(reply, req, len);
}

/* Two calls must be inside at once: proves handlers run on several
 * threads, none of them the completion-queue thread. */
static void meet(void *ctx, const struct rpc_peer *peer, const uint8_t *req, size_t len,
		 struct rpc_reply *reply)
{
	struct timespec ts;
	bool met = true;

	(void)ctx;
	(void)peer;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 8;
	pthread_mutex_lock(&mu);
	inside++;
	pthread_cond_broadcast(&cond);
	while (inside < 2 && met)
		met = pthread_cond_timedwait(&cond, &mu, &ts) == 0;
	pthread_mutex_unlock(&mu);
	if (!met)
		rpc_reply_error(reply, RPC_ABORTED, "alone");
	else
		reply_bytes(reply, req, len);
}

static void whoami(void *ctx, const struct rpc_peer *peer, const uint8_t *req, size_t len,
		   struct rpc_reply *reply)
{
	char buf[512];
	int n;

	(void)ctx;
	(void)req;
	(void)len;
	n = snprintf(buf, sizeof(buf), "id=%s admin=%d node=%d",
		     peer->identity ? peer->identity : "-", peer->admin, peer->node);
	reply_bytes(reply, buf, (size_t)n);
}

/* Server stream: "N" -> N messages "prefix:i" built from a shared part. */
static void count_open(void *ctx, struct rpc_stream *st, const struct rpc_peer *peer,
		       const uint8_t *req, size_t len)
{
	struct rpc_buf *shared = rpc_buf_new("msg:", 4);
	char num[16];
	int n;

	(void)ctx;
	(void)peer;
	snprintf(num, sizeof(num), "%.*s", (int)(len < 15 ? len : 15), (const char *)req);
	n = atoi(num);
	for (int i = 0; i < n; i++) {
		char part[16];
		int pl = snprintf(part, sizeof(part), "%d", i);
		struct rpc_buf *own = rpc_buf_new(part, (size_t)pl);
		struct rpc_buf *parts[2] = { shared, own };

		cr_assert_eq(rpc_stream_sendv(st, parts, 2), 0);
		rpc_buf_unref(own);
	}
	rpc_buf_unref(shared);
	rpc_stream_finish(st, RPC_OK, "counted");
}

static void note_close(void *ctx, struct rpc_stream *st, enum rpc_status status)
{
	(void)ctx;
	(void)st;
	pthread_mutex_lock(&mu);
	closes++;
	last_close = status;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&mu);
}

static void chat_recv(void *ctx, struct rpc_stream *st, const uint8_t *msg, size_t len)
{
	(void)ctx;
	if (!msg) {
		rpc_stream_finish(st, RPC_OK, "bye");
		return;
	}
	cr_assert_eq(rpc_stream_send(st, msg, len), 0);
}

/* Sends 256 KiB messages to a client that does not read, until the queue
 * says no. */
static void flood_open(void *ctx, struct rpc_stream *st, const struct rpc_peer *peer,
		       const uint8_t *req, size_t len)
{
	size_t big = 256 * 1024;
	uint8_t *buf = calloc(1, big);
	int n = 0, err = 0;

	(void)ctx;
	(void)peer;
	(void)req;
	(void)len;
	for (n = 0; n < 1000; n++) {
		buf[0] = (uint8_t)n;
		err = rpc_stream_send(st, buf, big);
		if (err)
			break;
	}
	free(buf);
	pthread_mutex_lock(&mu);
	flood_accepted = n;
	flood_again = err == -EAGAIN;
	pthread_mutex_unlock(&mu);
	rpc_stream_finish(st, RPC_OK, NULL);
}

static const struct rpc_stream_ops count_ops = { .open = count_open, .close = note_close };
static const struct rpc_stream_ops chat_ops = { .recv = chat_recv, .close = note_close };
static const struct rpc_stream_ops hold_ops = { .close = note_close };
static const struct rpc_stream_ops flood_ops = { .open = flood_open, .close = note_close };

/* ---- fixture ---------------------------------------------------------------- */

static struct rpc_server *srv;
static char pki[64];
static char token_file[128];

static void write_token_file(void)
{
	FILE *f;

	snprintf(token_file, sizeof(token_file), "/tmp/rpc_test_token.XXXXXX");
	cr_assert_neq(mkstemp(token_file), -1);
	f = fopen(token_file, "w");
	fprintf(f, "# admin tokens\n\nother-token\n" TOKEN "\n");
	fclose(f);
}

static void make_pki(void)
{
	char cmd[256];

	snprintf(pki, sizeof(pki), "/tmp/rpc_test_pki.XXXXXX");
	cr_assert_not_null(mkdtemp(pki));
	snprintf(cmd, sizeof(cmd), "bash %s %s node-1 >/dev/null 2>&1", GEN_CERTS, pki);
	cr_assert_eq(system(cmd), 0, "gen-certs.sh failed");
}

static char *pki_path(const char *name)
{
	static char paths[8][128];
	static int next;
	char *p = paths[next++ % 8];

	snprintf(p, 128, "%s/%s", pki, name);
	return p;
}

static void start_server(bool tls)
{
	struct rpc_server_config cfg = {
		.listen = "127.0.0.1:0",
		.admin_token_file = token_file,
		.n_workers = 3,
		.stream_queue_max = QUEUE_MAX,
	};

	if (tls) {
		cfg.tls_cert_file = pki_path("control.pem");
		cfg.tls_key_file = pki_path("control.key");
		cfg.tls_ca_file = pki_path("ca.pem");
	}
	cr_assert_eq(rpc_server_new(&cfg, &srv), 0);
	cr_assert_gt(rpc_server_port(srv), 0);
	cr_assert_eq(rpc_server_add_unary(srv, "/test.Echo/Unary", RPC_ROLE_NONE, echo, NULL), 0);
	cr_assert_eq(rpc_server_add_unary(srv, "/test.Echo/Meet", RPC_ROLE_NONE, meet, NULL), 0);
	cr_assert_eq(rpc_server_add_unary(srv, "/test.Echo/Admin", RPC_ROLE_ADMIN, whoami, NULL), 0);
	cr_assert_eq(rpc_server_add_unary(srv, "/test.Echo/Node", RPC_ROLE_NODE, whoami, NULL), 0);
	cr_assert_eq(rpc_server_add_stream(srv, "/test.Echo/Count", RPC_ROLE_NONE,
					   RPC_STREAM_SERVER, &count_ops, NULL), 0);
	cr_assert_eq(rpc_server_add_stream(srv, "/test.Echo/Chat", RPC_ROLE_NONE,
					   RPC_STREAM_BIDI, &chat_ops, NULL), 0);
	cr_assert_eq(rpc_server_add_stream(srv, "/test.Echo/Hold", RPC_ROLE_NONE,
					   RPC_STREAM_BIDI, &hold_ops, NULL), 0);
	cr_assert_eq(rpc_server_add_stream(srv, "/test.Echo/AdminHold", RPC_ROLE_ADMIN,
					   RPC_STREAM_BIDI, &hold_ops, NULL), 0);
	cr_assert_eq(rpc_server_add_stream(srv, "/test.Echo/Flood", RPC_ROLE_NONE,
					   RPC_STREAM_SERVER, &flood_ops, NULL), 0);
	cr_assert_eq(rpc_server_add_unary(srv, "/test.Echo/Unary", RPC_ROLE_NONE, echo, NULL),
		     -EEXIST);
	cr_assert_eq(rpc_server_add_unary(srv, "no-slash", RPC_ROLE_NONE, echo, NULL), -EINVAL);
	cr_assert_eq(rpc_server_enable_health(srv), 0);
	cr_assert_eq(rpc_server_enable_reflection(srv, sluice_descriptor_set,
						  sluice_descriptor_set_len), 0);
	cr_assert_eq(rpc_server_start(srv), 0);
	cr_assert_eq(rpc_server_add_unary(srv, "/test.Echo/Late", RPC_ROLE_NONE, echo, NULL),
		     -EBUSY);
}

static void setup_plain(void)
{
	write_token_file();
	start_server(false);
}

static void setup_tls(void)
{
	write_token_file();
	make_pki();
	start_server(true);
}

static void teardown(void)
{
	char cmd[128];

	rpc_server_free(srv);
	srv = NULL;
	unlink(token_file);
	if (pki[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", pki);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", pki);
	}
}

static bool wait_closes(int n)
{
	struct timespec ts;
	bool ok = true;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	pthread_mutex_lock(&mu);
	while (closes < n && ok)
		ok = pthread_cond_timedwait(&cond, &mu, &ts) == 0;
	pthread_mutex_unlock(&mu);
	return closes >= n;
}

#define UNARY(c, path, str, token, out) \
	tc_unary((c), (path), (str), strlen(str), (token), 0, (out))

/* ---- unary ------------------------------------------------------------------ */

Test(rpc_unary, echo_returns_the_request_bytes, .init = setup_plain, .fini = teardown)
{
	struct tc *c = tc_new(rpc_server_port(srv), NULL, NULL, NULL);
	struct tc_result r;
	uint8_t bin[300];

	for (size_t i = 0; i < sizeof(bin); i++)
		bin[i] = (uint8_t)(i * 7);
	tc_unary(c, "/test.Echo/Unary", bin, sizeof(bin), NULL, 0, &r);
	cr_assert_eq(r.status, RPC_OK, "%s", r.details);
	cr_assert_eq(r.len, sizeof(bin));
	cr_assert_arr_eq(r.data, bin, sizeof(bin));
	tc_result_done(&r);

	/* an empty message is a message */
	tc_unary(c, "/test.Echo/Unary", "", 0, NULL, 0, &r);
	cr_assert_eq(r.status, RPC_OK);
	cr_assert_not_null(r.data);
	cr_assert_eq(r.len, 0);
	tc_result_done(&r);
	tc_free(c);
}

Test(rpc_unary, handler_error_reaches_the_client_with_its_message,
     .init = setup_plain, .fini = teardown)
{
	struct tc *c = tc_new(rpc_server_port(srv), NULL, NULL, NULL);
	struct tc_result r;

	UNARY(c, "/test.Echo/Unary", "fail", NULL, &r);
	cr_assert_eq(r.status, RPC_INVALID_ARGUMENT);
	cr_assert_str_eq(r.details, "route/api.path_prefix: must start with '/'");
	cr_assert_null(r.data);
	tc_result_done(&r);
	tc_free(c);
}

Test(rpc_unary, unknown_method_is_unimplemented_not_a_timeout,
     .init = setup_plain, .fini = teardown)
{
	struct tc *c = tc_new(rpc_server_port(srv), NULL, NULL, NULL);
	struct tc_result r;

	for (int i = 0; i < 3; i++) {   /* the slot is re-armed each time */
		tc_unary(c, "/nope.Service/Missing", "x", 1, NULL, 20000, &r);
		cr_assert_eq(r.status, RPC_UNIMPLEMENTED, "got %d %s", r.status, r.details);
		cr_assert(strstr(r.details, "/nope.Service/Missing"));
		tc_result_done(&r);
	}
	tc_free(c);
}

Test(rpc_unary, deadline_is_exceeded_and_visible_to_the_handler,
     .init = setup_plain, .fini = teardown)
{
	struct tc *c = tc_new(rpc_server_port(srv), NULL, NULL, NULL);
	struct tc_result r;

	tc_unary(c, "/test.Echo/Unary", "slow", 4, NULL, 300, &r);
	cr_assert_eq(r.status, RPC_DEADLINE_EXCEEDED);
	tc_result_done(&r);
	pthread_mutex_lock(&mu);
	cr_assert_neq(seen_deadline_ms, UINT64_MAX, "handler saw no deadline");
	cr_assert_neq(seen_deadline_ms, 0);
	pthread_mutex_unlock(&mu);
	/* the server is still answering */
	UNARY(c, "/test.Echo/Unary", "ok", NULL, &r);
	cr_assert_eq(r.status, RPC_OK);
	tc_result_done(&r);
	tc_free(c);
}

struct meet_arg {
	int port;
	int status;
};

static void *meet_thread(void *p)
{
	struct meet_arg *a = p;
	struct tc *c = tc_new(a->port, NULL, NULL, NULL);
	struct tc_result r;

	UNARY(c, "/test.Echo/Meet", "hi", NULL, &r);
	a->status = r.status;
	tc_result_done(&r);
	tc_free(c);
	return NULL;
}

Test(rpc_unary, handlers_run_concurrently_on_the_worker_pool,
     .init = setup_plain, .fini = teardown)
{
	struct meet_arg a[2] = { { rpc_server_port(srv), -1 }, { rpc_server_port(srv), -1 } };
	pthread_t t[2];

	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, meet_thread, &a[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	cr_assert_eq(a[0].status, RPC_OK);
	cr_assert_eq(a[1].status, RPC_OK);
}

/* ---- auth -------------------------------------------------------------------- */

Test(rpc_auth, bearer_token_roles_over_plaintext, .init = setup_plain, .fini = teardown)
{
	struct tc *c = tc_new(rpc_server_port(srv), NULL, NULL, NULL);
	struct tc_result r;

	UNARY(c, "/test.Echo/Admin", "", NULL, &r);
	cr_assert_eq(r.status, RPC_UNAUTHENTICATED, "no token: %d", r.status);
	tc_result_done(&r);
	UNARY(c, "/test.Echo/Admin", "", "wrong-token", &r);
	cr_assert_eq(r.status, RPC_UNAUTHENTICATED, "wrong token: %d", r.status);
	tc_result_done(&r);
	UNARY(c, "/test.Echo/Admin", "", TOKEN "x", &r);
	cr_assert_eq(r.status, RPC_UNAUTHENTICATED, "token with a suffix: %d", r.status);
	tc_result_done(&r);
	UNARY(c, "/test.Echo/Admin", "", TOKEN, &r);
	cr_assert_eq(r.status, RPC_OK, "%s", r.details);
	cr_assert_str_eq((char *)r.data, "id=- admin=1 node=0");
	tc_result_done(&r);
	UNARY(c, "/test.Echo/Admin", "", "other-token", &r);
	cr_assert_eq(r.status, RPC_OK, "second token of the file");
	tc_result_done(&r);
	/* an admin token is not a node certificate */
	UNARY(c, "/test.Echo/Node", "", TOKEN, &r);
	cr_assert_eq(r.status, RPC_PERMISSION_DENIED, "%d", r.status);
	tc_result_done(&r);
	UNARY(c, "/test.Echo/Node", "", NULL, &r);
	cr_assert_eq(r.status, RPC_UNAUTHENTICATED);
	tc_result_done(&r);
	/* role-none methods do not care */
	UNARY(c, "/test.Echo/Unary", "x", "wrong-token", &r);
	cr_assert_eq(r.status, RPC_OK);
	tc_result_done(&r);
	tc_free(c);
}

Test(rpc_auth, stream_methods_check_roles_before_open, .init = setup_plain, .fini = teardown)
{
	struct tc *c = tc_new(rpc_server_port(srv), NULL, NULL, NULL);
	struct tc_stream *s = tc_stream_start(c, "/test.Echo/AdminHold", NULL, 0, NULL, 0);
	struct tc_result r;

	tc_stream_status(s, &r);
	cr_assert_eq(r.status, RPC_UNAUTHENTICATED);
	tc_result_done(&r);
	tc_stream_free(s);
	tc_free(c);
}

Test(rpc_auth, client_certificates_give_identity_and_role, .init = setup_tls, .fini = teardown)
{
	int port = rpc_server_port(srv);
	struct tc *node = tc_new(port, pki_path("ca.pem"), pki_path("node-1.pem"),
				 pki_path("node-1.key"));
	struct tc *admin = tc_new(port, pki_path("ca.pem"), pki_path("admin.pem"),
				  pki_path("admin.key"));
	struct tc *anon = tc_new(port, pki_path("ca.pem"), NULL, NULL);
	struct tc_result r;

	UNARY(node, "/test.Echo/Node", "", NULL, &r);
	cr_assert_eq(r.status, RPC_OK, "%d %s", r.status, r.details);
	cr_assert_str_eq((char *)r.data, "id=node-1 admin=0 node=1");
	tc_result_done(&r);
	UNARY(node, "/test.Echo/Admin", "", NULL, &r);
	cr_assert_eq(r.status, RPC_PERMISSION_DENIED, "node cert on admin: %d", r.status);
	tc_result_done(&r);

	UNARY(admin, "/test.Echo/Admin", "", NULL, &r);
	cr_assert_eq(r.status, RPC_OK, "%d %s", r.status, r.details);
	cr_assert_str_eq((char *)r.data, "id=admin admin=1 node=0");
	tc_result_done(&r);
	UNARY(admin, "/test.Echo/Node", "", NULL, &r);
	cr_assert_eq(r.status, RPC_PERMISSION_DENIED);
	tc_result_done(&r);

	/* TLS without a client certificate: token or nothing */
	UNARY(anon, "/test.Echo/Admin", "", NULL, &r);
	cr_assert_eq(r.status, RPC_UNAUTHENTICATED, "%d", r.status);
	tc_result_done(&r);
	UNARY(anon, "/test.Echo/Admin", "", TOKEN, &r);
	cr_assert_eq(r.status, RPC_OK, "%d %s", r.status, r.details);
	tc_result_done(&r);
	UNARY(anon, "/test.Echo/Unary", "tls", NULL, &r);
	cr_assert_eq(r.status, RPC_OK);
	tc_result_done(&r);
	tc_free(node);
	tc_free(admin);
	tc_free(anon);
}

Test(rpc_auth, plaintext_client_cannot_talk_to_a_tls_server, .init = setup_tls,
     .fini = teardown)
{
	struct tc *c = tc_new(rpc_server_port(srv), NULL, NULL, NULL);
	struct tc_result r;

	tc_unary(c, "/test.Echo/Unary", "x", 1, NULL, 2000, &r);
	cr_assert_eq(r.status, RPC_UNAVAILABLE, "%d", r.status);
	tc_result_done(&r);
	tc_free(c);
}

Test(rpc_config, bad_files_and_busy_ports_are_refused)
{
	struct rpc_server_config cfg = { .listen = "127.0.0.1:0" };
	struct rpc_server *a = NULL, *b = NULL;
	char addr[64];

	make_pki();
	cfg.tls_cert_file = pki_path("control.pem");
	cfg.tls_key_file = pki_path("admin.key");     /* not its key */
	cr_assert_eq(rpc_server_new(&cfg, &b), -EINVAL);
	cr_assert_null(b);
	cfg.tls_key_file = "/nonexistent.key";
	cr_assert_eq(rpc_server_new(&cfg, &b), -EINVAL);
	cfg.tls_cert_file = NULL;
	cfg.tls_key_file = NULL;
	cfg.admin_token_file = "/nonexistent-token-file";
	cr_assert_eq(rpc_server_new(&cfg, &b), -EINVAL);
	cfg.admin_token_file = NULL;
	cfg.tls_ca_file = pki_path("ca.pem");         /* mTLS without TLS */
	cr_assert_eq(rpc_server_new(&cfg, &b), -EINVAL);
	cfg.tls_ca_file = NULL;

	cr_assert_eq(rpc_server_new(&cfg, &a), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", rpc_server_port(a));
	cfg.listen = addr;
	cr_assert_eq(rpc_server_new(&cfg, &b), -EADDRINUSE);
	cr_assert_null(b);
	rpc_server_free(a);     /* never started */
	teardown();
}

/* ---- streams ------------------------------------------------------------------- */

Test(rpc_stream, server_stream_sends_every_message_in_order_then_status,
     .init = setup_plain, .fini = teardown)
{
	struct tc *c = tc_new(rpc_server_port(srv), NULL, NULL, NULL);
	struct tc_stream *s = tc_stream_start(c, "/test.Echo/Count", "5", 1, NULL, 0);
	struct tc_result r;
	uint8_t *m;
	size_t len;

	for (int i = 0; i < 5; i++) {
		char want[16];

		cr_assert_eq(tc_stream_recv(s, &m, &len), 1, "message %d missing", i);
		snprintf(want, sizeof(want), "msg:%d", i);
		cr_assert_str_eq((char *)m, want);
		free(m);
	}
	cr_assert_eq(tc_stream_recv(s, &m, &len), 0);
	tc_stream_status(s, &r);
	cr_assert_eq(r.status, RPC_OK);
	cr_assert_str_eq(r.details, "counted");
	tc_result_done(&r);
	tc_stream_free(s);
	cr_assert(wait_closes(1));
	cr_assert_eq(last_close, RPC_OK);
	tc_free(c);
}

Test(rpc_stream, bidi_echoes_and_ends_after_half_close, .init = setup_plain, .fini = teardown)
{
	struct tc *c = tc_new(rpc_server_port(srv), NULL, NULL, NULL);
	struct tc_stream *s = tc_stream_start(c, "/test.Echo/Chat", NULL, 0, NULL, 0);
	struct tc_result r;
	uint8_t *m;
	size_t len;

	for (int i = 0; i < 3; i++) {
		char msg[16];

		snprintf(msg, sizeof(msg), "hello %d", i);
		cr_assert_eq(tc_stream_send(s, msg, strlen(msg)), 0);
		cr_assert_eq(tc_stream_recv(s, &m, &len), 1);
		cr_assert_str_eq((char *)m, msg);
		free(m);
	}
	cr_assert_eq(tc_stream_half_close(s), 0);
	cr_assert_eq(tc_stream_recv(s, &m, &len), 0);
	tc_stream_status(s, &r);
	cr_assert_eq(r.status, RPC_OK);
	cr_assert_str_eq(r.details, "bye");
	tc_result_done(&r);
	tc_stream_free(s);
	cr_assert(wait_closes(1));
	cr_assert_eq(last_close, RPC_OK);
	tc_free(c);
}

Test(rpc_stream, client_cancel_runs_close_with_cancelled, .init = setup_plain, .fini = teardown)
{
	struct tc *c = tc_new(rpc_server_port(srv), NULL, NULL, NULL);
	struct tc_stream *s = tc_stream_start(c, "/test.Echo/Hold", NULL, 0, NULL, 0);
	struct tc_result r;

	cr_assert_eq(tc_stream_send(s, "x", 1), 0);
	tc_stream_cancel(s);
	tc_stream_status(s, &r);
	cr_assert_eq(r.status, RPC_CANCELLED);
	tc_result_done(&r);
	tc_stream_free(s);
	cr_assert(wait_closes(1), "close callback never ran");
	cr_assert_eq(last_close, RPC_CANCELLED);
	tc_free(c);
}

Test(rpc_stream, full_queue_says_eagain_and_loses_nothing_accepted,
     .init = setup_plain, .fini = teardown)
{
	struct tc *c = tc_new(rpc_server_port(srv), NULL, NULL, NULL);
	struct tc_stream *s = tc_stream_start(c, "/test.Echo/Flood", "", 0, NULL, 30000);
	struct tc_result r;
	uint8_t *m;
	size_t len;
	int got = 0;

	cr_assert(wait_closes(0));
	/* the server stops at the bound while nobody reads */
	for (int i = 0; i < 100; i++) {
		pthread_mutex_lock(&mu);
		bool done = flood_accepted > 0;
		pthread_mutex_unlock(&mu);
		if (done)
			break;
		usleep(50 * 1000);
	}
	pthread_mutex_lock(&mu);
	cr_assert(flood_again, "never refused: accepted %d", flood_accepted);
	cr_assert_geq(flood_accepted, QUEUE_MAX);
	cr_assert_lt(flood_accepted, 1000);
	pthread_mutex_unlock(&mu);
	while (tc_stream_recv(s, &m, &len) == 1) {
		cr_assert_eq(len, 256 * 1024);
		cr_assert_eq(m[0], (uint8_t)got, "message %d out of order", got);
		free(m);
		got++;
	}
	cr_assert_eq(got, flood_accepted);
	tc_stream_status(s, &r);
	cr_assert_eq(r.status, RPC_OK);
	tc_result_done(&r);
	tc_stream_free(s);
	tc_free(c);
}

Test(rpc_stream, shutdown_finishes_open_streams_with_unavailable,
     .init = setup_plain, .fini = teardown)
{
	struct tc *c = tc_new(rpc_server_port(srv), NULL, NULL, NULL);
	struct tc_stream *s = tc_stream_start(c, "/test.Echo/Chat", NULL, 0, NULL, 0);
	struct tc_result r;
	uint8_t *m;
	size_t len;

	/* the echo proves the server has the stream open */
	cr_assert_eq(tc_stream_send(s, "x", 1), 0);
	cr_assert_eq(tc_stream_recv(s, &m, &len), 1);
	free(m);
	rpc_server_shutdown(srv, 2000);
	cr_assert_eq(closes, 1, "shutdown returned before the close callback");
	tc_stream_status(s, &r);
	cr_assert_eq(r.status, RPC_UNAVAILABLE, "%d %s", r.status, r.details);
	tc_result_done(&r);
	tc_stream_free(s);
	tc_free(c);
}

/* ---- health and reflection ---------------------------------------------------------- */

static int health_check(struct tc *c, const char *service)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	Grpc__Health__V1__HealthCheckResponse *resp;
	uint8_t buf[300];
	struct tc_result r;
	size_t len;
	int status;

	req.service = (char *)service;
	len = grpc__health__v1__health_check_request__pack(&req, buf);
	tc_unary(c, "/grpc.health.v1.Health/Check", buf, len, NULL, 0, &r);
	if (r.status != RPC_OK) {
		status = -r.status;
		tc_result_done(&r);
		return status;
	}
	resp = grpc__health__v1__health_check_response__unpack(NULL, r.len, r.data);
	cr_assert_not_null(resp);
	status = resp->status;
	grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
	tc_result_done(&r);
	return status;
}

static int health_next(struct tc_stream *s)
{
	Grpc__Health__V1__HealthCheckResponse *resp;
	uint8_t *m;
	size_t len;
	int status;

	if (tc_stream_recv(s, &m, &len) != 1)
		return -1;
	resp = grpc__health__v1__health_check_response__unpack(NULL, len, m);
	cr_assert_not_null(resp);
	status = resp->status;
	grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
	free(m);
	return status;
}

Test(rpc_health, check_and_watch_follow_the_owner, .init = setup_plain, .fini = teardown)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	struct tc *c = tc_new(rpc_server_port(srv), NULL, NULL, NULL);
	struct tc_stream *w, *wu;
	uint8_t buf[64];
	size_t len;

	cr_assert_eq(health_check(c, ""), 1);
	cr_assert_eq(health_check(c, "test.Echo"), 1, "registered services start SERVING");
	cr_assert_eq(health_check(c, "no.Such"), -RPC_NOT_FOUND);

	req.service = (char *)"";
	len = grpc__health__v1__health_check_request__pack(&req, buf);
	w = tc_stream_start(c, "/grpc.health.v1.Health/Watch", buf, len, NULL, 0);
	req.service = (char *)"later.Svc";
	len = grpc__health__v1__health_check_request__pack(&req, buf);
	wu = tc_stream_start(c, "/grpc.health.v1.Health/Watch", buf, len, NULL, 0);
	cr_assert_eq(health_next(w), 1);
	cr_assert_eq(health_next(wu), 3, "unknown service: SERVICE_UNKNOWN");

	cr_assert_eq(rpc_server_set_health(srv, "", RPC_HEALTH_NOT_SERVING), 0);
	cr_assert_eq(health_next(w), 2);
	cr_assert_eq(health_check(c, ""), 2);
	/* setting the same status again sends nothing; a change does */
	cr_assert_eq(rpc_server_set_health(srv, "", RPC_HEALTH_NOT_SERVING), 0);
	cr_assert_eq(rpc_server_set_health_all(srv, RPC_HEALTH_SERVING), 0);
	cr_assert_eq(health_next(w), 1);
	cr_assert_eq(health_check(c, "test.Echo"), 1);
	cr_assert_eq(rpc_server_set_health(srv, "later.Svc", RPC_HEALTH_SERVING), 0);
	cr_assert_eq(health_next(wu), 1);
	tc_stream_cancel(w);
	tc_stream_cancel(wu);
	tc_stream_free(w);
	tc_stream_free(wu);
	tc_free(c);
}

static Grpc__Reflection__V1__ServerReflectionResponse *
reflect(struct tc_stream *s, Grpc__Reflection__V1__ServerReflectionRequest *req)
{
	uint8_t buf[1024], *m;
	size_t len = grpc__reflection__v1__server_reflection_request__pack(req, buf);

	cr_assert_eq(tc_stream_send(s, buf, len), 0);
	cr_assert_eq(tc_stream_recv(s, &m, &len), 1);
	Grpc__Reflection__V1__ServerReflectionResponse *resp =
		grpc__reflection__v1__server_reflection_response__unpack(NULL, len, m);
	free(m);
	cr_assert_not_null(resp);
	return resp;
}

/* Does the FileDescriptorProto name itself `name`? (field 1, first) */
static bool fdp_named(const ProtobufCBinaryData *b, const char *name)
{
	size_t n = strlen(name);

	return b->len > n + 2 && b->data[0] == 0x0a && b->data[1] == n &&
	       memcmp(b->data + 2, name, n) == 0;
}

static void check_reflection(const char *path)
{
	Grpc__Reflection__V1__ServerReflectionRequest req =
		GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
	Grpc__Reflection__V1__ServerReflectionResponse *resp;
	struct tc *c = tc_new(rpc_server_port(srv), NULL, NULL, NULL);
	struct tc_stream *s = tc_stream_start(c, path, NULL, 0, NULL, 0);
	struct tc_result r;
	bool health = false, v1 = false, test_svc = false;

	req.message_request_case =
		GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
	req.list_services = (char *)"*";
	resp = reflect(s, &req);
	cr_assert_eq(resp->message_response_case,
		     GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
	for (size_t i = 0; i < resp->list_services_response->n_service; i++) {
		const char *n = resp->list_services_response->service[i]->name;

		health |= strcmp(n, "grpc.health.v1.Health") == 0;
		v1 |= strcmp(n, "grpc.reflection.v1.ServerReflection") == 0;
		test_svc |= strcmp(n, "test.Echo") == 0;
	}
	cr_assert(health && v1);
	cr_assert_not(test_svc, "a service the descriptor set does not describe is not listed");
	cr_assert_not_null(resp->original_request);
	grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);

	/* a method symbol: fleet.proto, then sync.proto and policy.proto */
	req.message_request_case =
		GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
	req.file_containing_symbol = (char *)"sluice.v1.Fleet.WatchNodes";
	resp = reflect(s, &req);
	cr_assert_eq(resp->message_response_case,
		     GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
	cr_assert_eq(resp->file_descriptor_response->n_file_descriptor_proto, 3);
	cr_assert(fdp_named(&resp->file_descriptor_response->file_descriptor_proto[0],
			    "sluice/v1/fleet.proto"));
	grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);

	/* a nested enum symbol and a file name */
	req.file_containing_symbol = (char *)"grpc.health.v1.HealthCheckResponse.ServingStatus";
	resp = reflect(s, &req);
	cr_assert_eq(resp->file_descriptor_response->n_file_descriptor_proto, 1);
	cr_assert(fdp_named(&resp->file_descriptor_response->file_descriptor_proto[0],
			    "grpc/health/v1/health.proto"));
	grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);
	req.message_request_case =
		GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
	req.file_by_filename = (char *)"sluice/v1/policy.proto";
	resp = reflect(s, &req);
	cr_assert_eq(resp->file_descriptor_response->n_file_descriptor_proto, 1);
	grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);

	/* misses are answered, not fatal */
	req.file_by_filename = (char *)"nope.proto";
	resp = reflect(s, &req);
	cr_assert_eq(resp->message_response_case,
		     GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
	cr_assert_eq(resp->error_response->error_code, RPC_NOT_FOUND);
	grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);

	cr_assert_eq(tc_stream_half_close(s), 0);
	tc_stream_status(s, &r);
	cr_assert_eq(r.status, RPC_OK);
	tc_result_done(&r);
	tc_stream_free(s);
	tc_free(c);
}

Test(rpc_reflection, v1_lists_and_describes_with_imports, .init = setup_plain, .fini = teardown)
{
	check_reflection("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
}

Test(rpc_reflection, v1alpha_answers_the_same, .init = setup_plain, .fini = teardown)
{
	check_reflection("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo");
}
