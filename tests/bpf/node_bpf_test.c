/* node_bpf_test.c - sluice-node's kernel enforcer glue (dataplane/node/
 * node_bpf.c) against the real kernel: start syncs the latest snapshot and
 * attaches, stop leaves the interface clean, the proxy's rejection hook
 * escalates a source to a kernel deny entry that stops real TCP traffic
 * until its TTL runs out (checked in the program, then swept), and a node
 * without privileges keeps working without the kernel layer. Each case runs
 * in its own network namespace (unshare), on its private loopback. Root
 * only: exits 77 with the reason otherwise.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <criterion/criterion.h>

#include "bpfload.h"
#include "client_abi.h"
#include "fixture.h"
#include "node_bpf.h"
#include "policy.h"
#include "snapshot.h"

#define RS "edge"

static struct snapshot *build(const char *const *json)
{
	size_t n = 0;

	while (json[n])
		n++;
	return fixture_snapshot(RS, json, n);
}

static void sh_out(char *buf, size_t len, const char *cmd)
{
	FILE *p = popen(cmd, "r");
	size_t n;

	cr_assert_not_null(p);
	n = fread(buf, 1, len - 1, p);
	buf[n] = '\0';
	pclose(p);
}

/* A private network namespace with loopback up: attaching there touches
 * nothing outside this test process. */
static void private_netns(void)
{
	cr_assert_eq(unshare(CLONE_NEWNET), 0, "unshare: %s", strerror(errno));
	cr_assert_eq(system("ip link set lo up"), 0);
}

static struct node_bpf *new_nb(bool enabled, uint16_t port)
{
	struct node_bpf_config cfg = {
		.enabled = enabled, .ifname = "lo", .http_ports = {port},
		.poll_interval_ms = 50,
	};
	struct node_bpf *nb = NULL;

	cr_assert_eq(node_bpf_new(&cfg, &nb), 0);
	return nb;
}

static const char *const policy_json[] = {
	"{\"settings\": {\"id\": \"global\", \"escalationRejects\": 3,"
	" \"escalationWindowMs\": 2000, \"escalationTtlS\": 1}}",
	"{\"rateLimit\": {\"id\": \"tight\", \"algorithm\": \"TOKEN_BUCKET\", \"rate\": \"1\","
	" \"unit\": \"HOUR\", \"burst\": \"2\", \"enforce\": \"KERNEL\"}}",
	"{\"client\": {\"id\": \"alpha\", \"keys\": [\"alpha-key\"], \"rateLimit\": \"tight\"}}",
	NULL,
};

/* A listening socket on 127.0.0.1; returns its fd and port. */
static int listener(uint16_t *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(listen(fd, 64), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

/* true when a TCP handshake to 127.0.0.1:port completes within wait_ms. */
static bool can_connect(uint16_t port, int wait_ms)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	struct pollfd p;
	int fd, err = 0;
	socklen_t len = sizeof(err);
	bool ok = false;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		ok = true;
	} else if (errno == EINPROGRESS) {
		p = (struct pollfd){.fd = fd, .events = POLLOUT};
		if (poll(&p, 1, wait_ms) == 1 &&
		    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
			ok = true;
	}
	close(fd);
	return ok;
}

static void drain_accepts(int lfd)
{
	int c;

	while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0)
		close(c);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

Test(node_bpf, start_syncs_the_latest_snapshot_and_stop_leaves_lo_clean)
{
	struct snapshot *s = build(policy_json);
	struct node_bpf_counters c;
	struct metrics_buf b;
	struct node_bpf *nb;
	char out[4096], err[256];

	private_netns();
	nb = new_nb(true, 8080);
	/* Before start: only remembered. */
	cr_assert_eq(node_bpf_on_snapshot(nb, s), 0);
	node_bpf_counters(nb, &c);
	cr_assert(c.enabled);
	cr_assert_not(c.attached);
	cr_assert_eq(c.syncs, 0);

	cr_assert_eq(node_bpf_start(nb, err, sizeof(err)), 0, "start: %s", err);
	cr_assert_eq(node_bpf_start(nb, err, sizeof(err)), -EALREADY);
	sh_out(out, sizeof(out), "tc filter show dev lo ingress 2>&1");
	cr_assert_not_null(strstr(out, "bpf"), "filter: %s", out);
	node_bpf_counters(nb, &c);
	cr_assert(c.attached);
	cr_assert_eq(c.syncs, 1);
	cr_assert_eq(c.sync_errors, 0);
	cr_assert_eq(c.kernel_clients, 1, "alpha's limit is in the kernel");
	cr_assert_gt(c.map_updates, 0);

	/* The same snapshot again: nothing to write. */
	cr_assert_eq(node_bpf_on_snapshot(nb, s), 0);
	node_bpf_counters(nb, &c);
	cr_assert_eq(c.syncs, 2);

	metrics_buf_init(&b);
	node_bpf_metrics(nb, &b);
	cr_assert_eq(b.err, 0);
	cr_assert_not_null(strstr(b.data, "sluice_bpf_attached 1\n"), "%s", b.data);
	cr_assert_not_null(strstr(b.data, "sluice_bpf_kernel_clients 1\n"));
	cr_assert_not_null(
		strstr(b.data, "sluice_bpf_packets_total{reason=\"deny\",verdict=\"drop\"}"));
	cr_assert_not_null(strstr(b.data, "sluice_escalation_escalations_total 0\n"));
	metrics_buf_done(&b);

	node_bpf_stop(nb);
	node_bpf_stop(nb); /* idempotent */
	sh_out(out, sizeof(out), "tc filter show dev lo ingress 2>&1");
	cr_assert_str_eq(out, "", "filters left: %s", out);
	sh_out(out, sizeof(out), "tc qdisc show dev lo 2>&1");
	cr_assert_null(strstr(out, "clsact"), "qdisc left: %s", out);
	node_bpf_counters(nb, &c);
	cr_assert_not(c.attached);
	node_bpf_free(nb);
	snapshot_unref(s);
}

Test(node_bpf, repeated_rejections_deny_the_source_until_the_ttl_ends, .timeout = 30)
{
	struct snapshot *s = build(policy_json);
	struct sockaddr_in peer = {.sin_family = AF_INET};
	struct node_bpf_counters c;
	struct node_bpf *nb;
	uint16_t port;
	uint64_t t0;
	char err[256];
	int lfd;

	private_netns();
	lfd = listener(&port);
	nb = new_nb(true, port);
	cr_assert_eq(node_bpf_on_snapshot(nb, s), 0);
	cr_assert_eq(node_bpf_start(nb, err, sizeof(err)), 0, "start: %s", err);
	cr_assert(can_connect(port, 1000), "open before any rejection");
	peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

	/* Statuses other than 403 and 429 never count. */
	for (int i = 0; i < 10; i++)
		node_bpf_on_reject(nb, (struct sockaddr *)&peer, sizeof(peer), "x", 1, 404);
	node_bpf_on_reject(nb, (struct sockaddr *)&peer, sizeof(peer), "alpha-key", 9, 429);
	node_bpf_on_reject(nb, (struct sockaddr *)&peer, sizeof(peer), "alpha-key", 9, 403);
	cr_assert(can_connect(port, 1000), "two rejections: still under the threshold");
	t0 = mono_ms();
	node_bpf_on_reject(nb, (struct sockaddr *)&peer, sizeof(peer), "alpha-key", 9, 429);
	/* The consumer thread writes it (the hook only queues). */
	for (int i = 0; i < 100; i++) {
		node_bpf_counters(nb, &c);
		if (c.escalations)
			break;
		usleep(10000);
	}
	cr_assert_eq(c.rejects, 3);
	cr_assert_eq(c.escalations, 1);
	cr_assert_eq(c.escalation_failures, 0);
	cr_assert_not(can_connect(port, 300), "escalated: the handshake is dropped");
	node_bpf_counters(nb, &c);
	cr_assert_geq(c.dropped_deny, 1);

	/* The TTL is 1 s: the kernel lets the source in again by itself. */
	while (mono_ms() < t0 + 1100)
		usleep(20000);
	cr_assert(can_connect(port, 1000), "after the TTL");
	/* And the consumer thread deletes the dead entry within ~1 s. */
	for (int i = 0; i < 60; i++) {
		node_bpf_counters(nb, &c);
		if (c.deny_expired)
			break;
		usleep(50000);
	}
	cr_assert_eq(c.deny_expired, 1);
	cr_assert_geq(c.events_by_reason[CLIENT_REASON_DENY], 1, "drops reached the log");
	drain_accepts(lfd);
	close(lfd);
	node_bpf_free(nb);
	snapshot_unref(s);
}

Test(node_bpf, escalation_is_off_when_the_policy_says_zero)
{
	const char *json[] = {"{\"settings\": {\"id\": \"global\"}}", NULL};
	struct snapshot *s = build(json);
	struct sockaddr_in peer = {.sin_family = AF_INET};
	struct node_bpf_counters c;
	struct node_bpf *nb;
	char err[256];

	private_netns();
	nb = new_nb(true, 8080);
	cr_assert_eq(node_bpf_on_snapshot(nb, s), 0);
	cr_assert_eq(node_bpf_start(nb, err, sizeof(err)), 0, "start: %s", err);
	peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (int i = 0; i < 1000; i++)
		node_bpf_on_reject(nb, (struct sockaddr *)&peer, sizeof(peer), NULL, 0, 429);
	node_bpf_counters(nb, &c);
	cr_assert_eq(c.rejects, 1000);
	cr_assert_eq(c.escalations, 0);
	cr_assert_eq(c.tracked_sources, 0);
	node_bpf_free(nb);
	snapshot_unref(s);
}

/* The loader alone: the TTL is enforced by the program, before any sweep. */
Test(node_bpf, kernel_ignores_an_expired_entry_before_it_is_swept, .timeout = 30)
{
	struct bpfload_config cfg = {.ifname = "lo"};
	const char *json[] = {
		"{\"settings\": {\"id\": \"global\", \"accessLists\": [\"blk\"]}}",
		"{\"accessList\": {\"id\": \"blk\", \"deny\": [\"192.0.2.1/32\"]}}",
		NULL,
	};
	struct snapshot *s = build(json);
	struct client_deny_v4_key k = {.prefixlen = 32, .addr = {127, 0, 0, 1}};
	struct client_deny_v4_key kp = {.prefixlen = 32, .addr = {192, 0, 2, 1}};
	struct client_deny_value v;
	struct bpfload *l = NULL;
	struct cidr lo, pol;
	const char *why;
	uint16_t port;
	size_t n;
	int lfd;

	private_netns();
	lfd = listener(&port);
	cr_assert_eq(bpfload_new(&cfg, &l), 0);
	cr_assert_eq(bpfload_sync(l, s, NULL), 0);
	cr_assert_eq(bpfload_attach(l), 0);
	cr_assert_eq(cidr_parse("127.0.0.1", &lo, &why), 0);
	cr_assert_eq(cidr_parse("192.0.2.1", &pol, &why), 0);

	/* A policy deny is never turned into an expiring one. */
	cr_assert_eq(bpfload_deny_add(l, &pol, 1000000000ull), -EEXIST);
	cr_assert_eq(bpf_map_lookup_elem(bpfload_map_fd(l, "deny_v4"), &kp, &v), 0);
	cr_assert_eq(v.expires_ns, 0);

	cr_assert_eq(bpfload_deny_add(l, &lo, 400000000ull), 0);
	cr_assert_not(can_connect(port, 200), "denied while the entry lives");
	usleep(450000);
	cr_assert_eq(bpf_map_lookup_elem(bpfload_map_fd(l, "deny_v4"), &k, &v), 0,
		     "still in the trie");
	cr_assert(can_connect(port, 1000), "but expired: the program lets it in");
	/* A second escalation of the same prefix renews it. */
	cr_assert_eq(bpfload_deny_add(l, &lo, 60000000000ull), 0);
	cr_assert_not(can_connect(port, 200));
	cr_assert_eq(bpfload_deny_add(l, &lo, 1), 0); /* 1 ns: expired at once */
	usleep(1000);
	cr_assert_eq(bpfload_deny_sweep(l, &n), 0);
	cr_assert_eq(n, 1, "the sweep deletes exactly the expired escalation");
	cr_assert_neq(bpf_map_lookup_elem(bpfload_map_fd(l, "deny_v4"), &k, &v), 0);
	cr_assert_eq(bpf_map_lookup_elem(bpfload_map_fd(l, "deny_v4"), &kp, &v), 0,
		     "the policy entry stays");
	drain_accepts(lfd);
	close(lfd);
	bpfload_free(l);
	snapshot_unref(s);
}

Test(node_bpf, without_privileges_the_node_runs_without_the_kernel_layer)
{
	struct snapshot *s = build(policy_json);
	struct sockaddr_in peer = {.sin_family = AF_INET};
	struct node_bpf_counters c;
	struct metrics_buf b;
	struct node_bpf *nb = new_nb(true, 8080);
	char err[256];

	/* Criterion forks per case: dropping root here drops it for this one. */
	cr_assert_eq(setresgid(65534, 65534, 65534), 0);
	cr_assert_eq(setresuid(65534, 65534, 65534), 0);
	cr_assert_eq(node_bpf_on_snapshot(nb, s), 0);
	cr_assert_eq(node_bpf_start(nb, err, sizeof(err)), -EPERM);
	cr_assert_not_null(strstr(err, "root"), "reason: %s", err);
	/* Everything else still answers. */
	cr_assert_eq(node_bpf_on_snapshot(nb, s), 0);
	for (int i = 0; i < 10; i++)
		node_bpf_on_reject(nb, (struct sockaddr *)&peer, sizeof(peer), NULL, 0, 429);
	node_bpf_counters(nb, &c);
	cr_assert_not(c.attached);
	cr_assert_eq(c.escalations, 0);
	metrics_buf_init(&b);
	node_bpf_metrics(nb, &b);
	cr_assert_not_null(strstr(b.data, "sluice_bpf_attached 0\n"));
	metrics_buf_done(&b);
	node_bpf_free(nb);
	snapshot_unref(s);
}

Test(node_bpf, disabled_or_misconfigured)
{
	struct node_bpf_config cfg = {.enabled = true};
	struct node_bpf *nb = NULL;
	char err[64] = "x";
	uint8_t lvl;

	cr_assert_eq(node_bpf_new(&cfg, &nb), -EINVAL, "enabled needs an interface");
	cfg.ifname = "lo";
	cfg.log_level = 3;
	cr_assert_eq(node_bpf_new(&cfg, &nb), -EINVAL);
	cr_assert_null(nb);
	nb = new_nb(false, 0);
	cr_assert_eq(node_bpf_start(nb, err, sizeof(err)), 0, "disabled: nothing to do");
	cr_assert_str_eq(err, "");
	node_bpf_free(nb);
	node_bpf_free(NULL);
	cfg.ifname = "no-such-if0";
	cfg.log_level = 0;
	cr_assert_eq(node_bpf_new(&cfg, &nb), 0);
	cr_assert_eq(node_bpf_start(nb, err, sizeof(err)), -ENODEV);
	cr_assert_not_null(strstr(err, "no-such-if0"), "%s", err);
	node_bpf_free(nb);
	cr_assert_eq(node_bpf_log_level_parse("errors", &lvl), 0);
	cr_assert_eq(lvl, 1);
	cr_assert_eq(node_bpf_log_level_parse("loud", &lvl), -EINVAL);
	cr_assert_str_eq(node_bpf_reason_name(CLIENT_REASON_RATE), "rate");
	cr_assert_null(node_bpf_reason_name(CLIENT_REASON_MAX));
}

int main(int argc, char **argv)
{
	struct criterion_test_set *tests;
	int result = 0;

	if (geteuid() != 0) {
		printf("node_bpf_test: skipped: needs root (CAP_BPF, CAP_NET_ADMIN, netns)\n");
		return 77;
	}
	tests = criterion_initialize();
	if (criterion_handle_args(argc, argv, true))
		result = !criterion_run_all_tests(tests);
	criterion_finalize(tests);
	return result;
}
