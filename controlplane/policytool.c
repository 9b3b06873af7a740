/* policytool.c - sluice-policy: offline policy work on proto3 JSON files,
 * the same JSON grpcurl sends to the admin API.
 *
 *   sluice-policy validate RULESET.json
 *   sluice-policy diff OLD.json NEW.json          > delta.json
 *   sluice-policy apply OLD.json DELTA.json       > new.json
 *   sluice-policy check RULESET.json [request options]
 *
 * Uses only lib/: the validation, diff, apply and decision code here is
 * the code the control plane and the nodes run.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decision.h"
#include "limiter.h"
#include "pbjson.h"
#include "policy_load.h"
#include "policy_wire.h"
#include "snapshot.h"

static void usage(FILE *f)
{
	fputs("usage: sluice-policy validate RULESET.json\n"
	      "       sluice-policy diff OLD.json NEW.json\n"
	      "       sluice-policy apply OLD.json DELTA.json\n"
	      "       sluice-policy check RULESET.json [--host H] [--path P] [--method M]\n"
	      "                           [--client ID] [--source IP] [--count N]\n"
	      "                           [--interval-ms MS]\n"
	      "Files are proto3 JSON: a sluice.v1.Ruleset, or a sluice.v1.Delta for apply.\n",
	      f);
}

static void print_errs(const char *file, const struct policy_errs *errs)
{
	for (unsigned i = 0; i < errs->n; i++)
		fprintf(stderr, "%s: %s\n", file, errs->msg[i]);
	if (errs->dropped)
		fprintf(stderr, "%s: ... and %u more errors\n", file, errs->dropped);
}

/* Reads and validates a ruleset file (lib/policy_load); prints why not on
 * failure, one validation error per line. */
static struct snapshot *load_ruleset(const char *path)
{
	char err[POLICY_LOAD_ERR_LEN];
	struct policy_errs errs;
	struct snapshot *s;

	if (policy_load_file(path, NULL, err, &errs, &s) < 0) {
		if (policy_errs_count(&errs))
			print_errs(path, &errs);
		else
			fprintf(stderr, "%s\n", err);
		return NULL;
	}
	return s;
}

static int print_json(const ProtobufCMessage *msg)
{
	char *json = pbjson_encode(msg, PBJSON_PRETTY);

	if (!json) {
		fprintf(stderr, "sluice-policy: cannot encode JSON: %s\n", strerror(errno));
		return 1;
	}
	fputs(json, stdout);
	free(json);
	return 0;
}

static int cmd_validate(int argc, char **argv)
{
	static const enum policy_kind kinds[] = {
		POLICY_KIND_CLIENT, POLICY_KIND_RATE_LIMIT, POLICY_KIND_ACCESS_LIST,
		POLICY_KIND_ROUTE, POLICY_KIND_UPSTREAM, POLICY_KIND_SETTINGS,
	};
	struct snapshot *s;

	if (argc != 2) {
		usage(stderr);
		return 2;
	}
	s = load_ruleset(argv[1]);
	if (!s)
		return 1;
	printf("%s: ruleset '%s' version %lu is valid: %zu resources", argv[1],
	       snapshot_ruleset(s), (unsigned long)snapshot_version(s), snapshot_count(s, 0));
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (snapshot_count(s, kinds[i]))
			printf(", %zu %s", snapshot_count(s, kinds[i]), policy_kind_name(kinds[i]));
	printf("\n");
	snapshot_unref(s);
	return 0;
}

static int cmd_diff(int argc, char **argv)
{
	struct snapshot *a, *b = NULL;
	struct policy_delta *d = NULL;
	Sluice__V1__Delta *pb = NULL;
	int ret = 1, r;

	if (argc != 3) {
		usage(stderr);
		return 2;
	}
	a = load_ruleset(argv[1]);
	if (a)
		b = load_ruleset(argv[2]);
	if (!b)
		goto out;
	if (strcmp(snapshot_ruleset(a), snapshot_ruleset(b)) != 0) {
		fprintf(stderr, "sluice-policy: rulesets differ: '%s' and '%s'\n",
			snapshot_ruleset(a), snapshot_ruleset(b));
		goto out;
	}
	r = snapshot_diff(a, b, &d);
	if (r < 0) {
		fprintf(stderr, "sluice-policy: diff failed: %s\n", strerror(-r));
		goto out;
	}
	pb = policy_delta_to_pb(d);
	if (!pb) {
		fprintf(stderr, "sluice-policy: %s\n", strerror(errno));
		goto out;
	}
	ret = print_json(&pb->base);
out:
	policy_delta_pb_free(pb);
	policy_delta_free(d);
	snapshot_unref(b);
	snapshot_unref(a);
	return ret;
}

static int cmd_apply(int argc, char **argv)
{
	char err[PBJSON_ERR_LEN];
	struct policy_errs errs;
	struct snapshot *base, *next = NULL;
	struct policy_delta *d = NULL;
	ProtobufCMessage *msg = NULL;
	Sluice__V1__Ruleset *out = NULL;
	int ret = 1, r;

	if (argc != 3) {
		usage(stderr);
		return 2;
	}
	base = load_ruleset(argv[1]);
	if (!base)
		return 1;
	r = pbjson_decode_file(&sluice__v1__delta__descriptor, argv[2], err, &msg);
	if (r < 0) {
		fprintf(stderr, "%s: %s\n", argv[2], err);
		goto out;
	}
	policy_errs_init(&errs);
	r = policy_delta_from_pb((Sluice__V1__Delta *)msg, &errs, &d);
	if (r == 0)
		r = snapshot_apply(base, d, &errs, &next);
	if (r < 0) {
		if (policy_errs_count(&errs))
			print_errs(argv[2], &errs);
		else
			fprintf(stderr, "%s: %s\n", argv[2], strerror(-r));
		goto out;
	}
	out = policy_ruleset_to_pb(next);
	if (!out) {
		fprintf(stderr, "sluice-policy: %s\n", strerror(errno));
		goto out;
	}
	ret = print_json(&out->base);
out:
	policy_ruleset_pb_free(out);
	if (msg)
		protobuf_c_message_free_unpacked(msg, NULL);
	policy_delta_free(d);
	snapshot_unref(next);
	snapshot_unref(base);
	return ret;
}

/* Runs `count` requests through the decision code on a synthetic clock and
 * prints one line per run of equal answers. */
static int cmd_check(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "host", required_argument, NULL, 'H' },
		{ "path", required_argument, NULL, 'p' },
		{ "method", required_argument, NULL, 'm' },
		{ "client", required_argument, NULL, 'c' },
		{ "source", required_argument, NULL, 's' },
		{ "count", required_argument, NULL, 'n' },
		{ "interval-ms", required_argument, NULL, 'i' },
		{ 0 },
	};
	const char *host = "", *path = "/", *method = "GET", *client = NULL, *source = "127.0.0.1";
	unsigned long count = 1, interval_ms = 0;
	struct decision_request req;
	struct limiter *lim = NULL;
	struct snapshot *s;
	unsigned long run_start = 1;
	int last_status = 0, o, r;
	char last_line[256] = "";

	optind = 1;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'H': host = optarg; break;
		case 'p': path = optarg; break;
		case 'm': method = optarg; break;
		case 'c': client = optarg; break;
		case 's': source = optarg; break;
		case 'n': count = strtoul(optarg, NULL, 10); break;
		case 'i': interval_ms = strtoul(optarg, NULL, 10); break;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1 || count == 0 || count > 10000000) {
		usage(stderr);
		return 2;
	}
	memset(&req, 0, sizeof(req));
	if (cidr_addr_parse(source, &req.source) < 0) {
		fprintf(stderr, "sluice-policy: '%s' is not an IP address\n", source);
		return 2;
	}
	s = load_ruleset(argv[optind]);
	if (!s)
		return 1;
	r = limiter_new(&(struct limiter_config){ 0 }, &lim);
	if (r < 0) {
		fprintf(stderr, "sluice-policy: %s\n", strerror(-r));
		snapshot_unref(s);
		return 1;
	}
	req.host = host;
	req.host_len = strlen(host);
	req.path = path;
	req.path_len = strcspn(path, "?");
	req.method = method;
	req.method_len = strlen(method);
	req.client_key = client;
	req.client_key_len = client ? strlen(client) : 0;

	snapshot_thread_online();
	for (unsigned long i = 1; i <= count + 1; i++) {
		struct decision d;
		char line[256] = "";
		int status = 0;

		if (i <= count) {
			decision_eval(s, lim, &req, (i - 1) * interval_ms * 1000000ull, &d);
			status = decision_http_status(d.verdict);
			if (d.verdict == DECISION_RATE_LIMITED)
				snprintf(line, sizeof(line), " by rate_limit/%s, retry after %.3f s",
					 d.limit->id, d.limit_result.retry_after_ns / 1e9);
			else if (d.verdict == DECISION_DENY)
				snprintf(line, sizeof(line), " by access_list/%s", d.access_list->id);
			else if (d.verdict == DECISION_ALLOW && d.route)
				snprintf(line, sizeof(line), " route/%s%s%s", d.route->id,
					 d.client ? " client/" : "", d.client ? d.client->id : "");
		}
		if (i > 1 && (status != last_status || strcmp(line, last_line) != 0)) {
			printf("requests %lu-%lu: %d%s\n", run_start, i - 1, last_status, last_line);
			run_start = i;
		}
		last_status = status;
		snprintf(last_line, sizeof(last_line), "%s", line);
	}
	snapshot_thread_offline();
	limiter_free(lim);
	snapshot_unref(s);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "validate") == 0)
		return cmd_validate(argc - 1, argv + 1);
	if (strcmp(argv[1], "diff") == 0)
		return cmd_diff(argc - 1, argv + 1);
	if (strcmp(argv[1], "apply") == 0)
		return cmd_apply(argc - 1, argv + 1);
	if (strcmp(argv[1], "check") == 0)
		return cmd_check(argc - 1, argv + 1);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "sluice-policy: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
