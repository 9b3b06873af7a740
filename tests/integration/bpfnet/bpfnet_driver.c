/* bpfnet_driver.c - drives sluice-node's kernel enforcer glue (node_bpf)
 * for the real-traffic test: reads one command per line on stdin and
 * answers one line on stdout, so a test script can load policies, attach,
 * feed proxy rejections (escalation) and read counters and map contents
 * between its curl and wrk runs. Runs in the server's network namespace.
 *
 *   load FILE        ruleset JSON (sluice.v1.Ruleset) -> node_bpf_on_snapshot
 *   start            load + attach (node_bpf_start)
 *   reject IP STATUS one proxy rejection of source IP (node_bpf_on_reject)
 *   report           counters, events and client_stats entries, one JSON line
 *   stop             detach (node_bpf_stop)
 *   quit / EOF       free and exit
 * Answers: "ok", "error <reason>", or the report's JSON.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "client_abi.h"
#include "node_bpf.h"
#include "pbjson.h"
#include "policy.h"
#include "policy_wire.h"
#include "snapshot.h"

/* The current policy, for client names in the report. Main thread only. */
static struct snapshot *current;

static int load(struct node_bpf *nb, const char *path)
{
	char err[PBJSON_ERR_LEN];
	ProtobufCMessage *msg = NULL;
	struct policy_errs errs;
	struct snapshot *s = NULL;
	int r;

	r = pbjson_decode_file(&sluice__v1__ruleset__descriptor, path, err, &msg);
	if (r) {
		printf("error %s\n", err);
		return r;
	}
	policy_errs_init(&errs);
	r = policy_ruleset_from_pb((const Sluice__V1__Ruleset *)msg, &errs, &s);
	protobuf_c_message_free_unpacked(msg, NULL);
	if (r) {
		printf("error %s\n", errs.n ? errs.msg[0] : strerror(-r));
		return r;
	}
	r = node_bpf_on_snapshot(nb, s);
	if (r) {
		printf("error sync: %s\n", strerror(-r));
		snapshot_unref(s);
		return r;
	}
	snapshot_unref(current);
	current = s;
	printf("ok\n");
	return 0;
}

struct names {
	uint64_t id;
	const char *name;
};

static int collect(void *arg, const struct policy_res *r)
{
	struct names **n = arg;

	if (r->kind == POLICY_KIND_CLIENT) {
		(*n)->id = r->key_hash;
		(*n)->name = r->id;
		(*n)++;
	}
	return 0;
}

static void report(struct node_bpf *nb)
{
	static struct names names[1024];
	struct names *end = names;
	struct node_bpf_counters c;
	int fd = node_bpf_map_fd(nb, "client_stats");
	uint64_t key, next, *prev = NULL;
	bool first = true;

	if (current && snapshot_count(current, POLICY_KIND_CLIENT) < 1024)
		snapshot_foreach(current, collect, &end);
	node_bpf_counters(nb, &c);
	printf("{\"attached\": %s, \"passed\": %llu, \"dropped_deny\": %llu, "
	       "\"dropped_rate\": %llu, \"events_lost\": %llu, \"events\": %llu, "
	       "\"escalations\": %llu, \"escalation_failures\": %llu, \"rejects\": %llu, "
	       "\"deny_expired\": %llu, \"kernel_clients\": %llu, \"syncs\": %llu, "
	       "\"sync_errors\": %llu, \"packets\": {",
	       c.attached ? "true" : "false", (unsigned long long)c.passed,
	       (unsigned long long)c.dropped_deny, (unsigned long long)c.dropped_rate,
	       (unsigned long long)c.events_lost, (unsigned long long)c.events,
	       (unsigned long long)c.escalations, (unsigned long long)c.escalation_failures,
	       (unsigned long long)c.rejects, (unsigned long long)c.deny_expired,
	       (unsigned long long)c.kernel_clients, (unsigned long long)c.syncs,
	       (unsigned long long)c.sync_errors);
	for (unsigned i = 1; node_bpf_reason_name(i); i++)
		printf("%s\"%s\": %llu", i > 1 ? ", " : "", node_bpf_reason_name(i),
		       (unsigned long long)c.packets[i]);
	printf("}, \"events_by_reason\": {");
	for (unsigned i = 1; node_bpf_reason_name(i); i++)
		printf("%s\"%s\": %llu", i > 1 ? ", " : "", node_bpf_reason_name(i),
		       (unsigned long long)c.events_by_reason[i]);
	printf("}, \"client_stats\": {");
	while (fd >= 0 && bpf_map_get_next_key(fd, prev, &next) == 0) {
		struct client_stats st;
		const char *name = NULL;

		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &st) < 0)
			continue;
		for (struct names *n = names; n < end; n++)
			if (n->id == key)
				name = n->name;
		printf("%s\"%s\": {\"id\": \"%016llx\", \"requests\": %llu, \"drops\": %llu, "
		       "\"consecutive_drops\": %u, \"status\": %u}",
		       first ? "" : ", ", name ? name : "?", (unsigned long long)key,
		       (unsigned long long)st.requests, (unsigned long long)st.drops,
		       st.consecutive_drops, st.status);
		first = false;
	}
	printf("}}\n");
}

static void reject(struct node_bpf *nb, const char *ip, int status)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	socklen_t len;

	if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		len = sizeof(*in);
	} else if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		len = sizeof(*in6);
	} else {
		printf("error bad address\n");
		return;
	}
	node_bpf_on_reject(nb, (struct sockaddr *)&ss, len, "driver", 6, status);
	printf("ok\n");
}

int main(int argc, char **argv)
{
	struct node_bpf_config cfg = {.enabled = true, .poll_interval_ms = 100};
	struct node_bpf *nb;
	char line[4096], err[256];
	int r;

	if (argc != 3) {
		fprintf(stderr, "usage: %s IFNAME HTTP_PORT\n", argv[0]);
		return 2;
	}
	cfg.ifname = argv[1];
	cfg.http_ports[0] = (uint16_t)atoi(argv[2]);
	r = node_bpf_new(&cfg, &nb);
	if (r) {
		fprintf(stderr, "node_bpf_new: %s\n", strerror(-r));
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		char arg[4000];
		int status;

		line[strcspn(line, "\r\n")] = '\0';
		if (sscanf(line, "load %3999s", arg) == 1) {
			load(nb, arg);
		} else if (strcmp(line, "start") == 0) {
			r = node_bpf_start(nb, err, sizeof(err));
			if (r)
				printf("error %s\n", err);
			else
				printf("ok\n");
		} else if (sscanf(line, "reject %63s %d", arg, &status) == 2) {
			reject(nb, arg, status);
		} else if (strcmp(line, "report") == 0) {
			report(nb);
		} else if (strcmp(line, "stop") == 0) {
			node_bpf_stop(nb);
			printf("ok\n");
		} else if (strcmp(line, "quit") == 0) {
			break;
		} else {
			printf("error unknown command\n");
		}
	}
	node_bpf_free(nb);
	snapshot_unref(current);
	return 0;
}
