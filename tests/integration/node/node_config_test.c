/* node_config_test.c - the node's YAML config parser and cross-key checks:
 * every key of the example config lands in its field; each bad config is
 * refused with an error naming its line and dotted key.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "node_config.h"

static int parse(struct node_config *c, const char *yaml, char err[NODE_CONFIG_ERR_LEN])
{
	node_config_init(c);
	return node_config_parse(c, yaml, strlen(yaml), "t.yaml", err);
}

Test(node_config, example_file_sets_every_section)
{
	struct node_config c;
	char err[NODE_CONFIG_ERR_LEN];

	node_config_init(&c);
	cr_assert_eq(node_config_load(&c, NODE_EXAMPLE_CONFIG, err), 0, "%s", err);
	cr_assert_str_eq(c.node_id, "edge-fra-1");
	cr_assert_str_eq(c.ruleset, "edge");
	cr_assert_eq(c.n_labels, 2);
	cr_assert_str_eq(c.labels[0].name, "region");
	cr_assert_str_eq(c.labels[0].value, "eu-central");
	cr_assert_str_eq(c.listen, "0.0.0.0:8080");
	cr_assert_eq(c.max_connections, 10000);
	cr_assert_eq(c.max_clients, 16384);
	cr_assert_eq(c.max_head_bytes, 8192);
	cr_assert_eq(c.max_body_bytes, 10485760);
	cr_assert_eq(c.header_timeout_ms, 10000);
	cr_assert_eq(c.upstream_read_timeout_ms, 30000);
	cr_assert_eq(c.drain_timeout_ms, 10000);
	cr_assert_eq(c.upstream_idle_per_worker, 32);
	cr_assert_str_eq(c.tls_listen, "0.0.0.0:8443");
	cr_assert_str_eq(c.tls_key_file, "/etc/sluice/tls/edge.key");
	cr_assert(c.ktls);
	cr_assert(!c.ktls_required);
	cr_assert_str_eq(c.admin_listen, "127.0.0.1:9901");
	cr_assert_eq(c.admin_drain_delay_ms, 5000);
	cr_assert_eq(c.log_level, LOG_LEVEL_INFO);
	cr_assert_str_eq(c.access_log, "/var/log/sluice/access.log");
	cr_assert_str_eq(c.policy_file, "/etc/sluice/policy.json");
	cr_assert_eq(c.limiter_max_buckets, 1048576);
	cr_assert(c.limiter_prefault);
	cr_assert(!c.sync_enabled);
	cr_assert_eq(node_config_check(&c, err), 0, "%s", err);
	node_config_done(&c);
}

Test(node_config, sync_section_parses_and_checks)
{
	static const char yaml[] =
		"node:\n"
		"  ruleset: edge\n"
		"proxy:\n"
		"  listen: '[::1]:8080'\n"
		"sync:\n"
		"  endpoints: [\"cp1:7443\", \"[::1]:7443\"]\n"
		"  tls:\n"
		"    ca: ca.pem\n"
		"    cert: node.pem\n"
		"    key: node.key\n"
		"  state_dir: /var/lib/sluice\n"
		"  backoff_min_ms: 100\n"
		"  backoff_max_ms: 5000\n";
	struct node_config c;
	char err[NODE_CONFIG_ERR_LEN];

	cr_assert_eq(parse(&c, yaml, err), 0, "%s", err);
	cr_assert(c.sync_enabled);
	cr_assert_eq(c.n_sync_endpoints, 2);
	cr_assert_str_eq(c.sync_endpoints[1], "[::1]:7443");
	cr_assert_str_eq(c.sync_cert_file, "node.pem");
	cr_assert_eq(c.sync_backoff_max_ms, 5000);
	cr_assert_eq(node_config_check(&c, err), 0, "%s", err);
	node_config_done(&c);
}

Test(node_config, empty_document_keeps_defaults)
{
	struct node_config c;
	char err[NODE_CONFIG_ERR_LEN];

	cr_assert_eq(parse(&c, "", err), 0, "%s", err);
	cr_assert(c.ktls);
	cr_assert_eq(c.log_level, LOG_LEVEL_INFO);
	cr_assert_null(c.listen);
	cr_assert(c.limiter_prefault);
	node_config_done(&c);
}

Test(node_config, limiter_prefault_can_be_turned_off)
{
	struct node_config c;
	char err[NODE_CONFIG_ERR_LEN];

	cr_assert_eq(parse(&c, "limiter:\n  prefault: false\n", err), 0, "%s", err);
	cr_assert(!c.limiter_prefault);
	cr_assert(c.ktls, "other defaults stay");
	node_config_done(&c);
}

Test(node_config, null_value_resets_to_default)
{
	struct node_config c;
	char err[NODE_CONFIG_ERR_LEN];

	cr_assert_eq(parse(&c, "proxy:\n  listen: 127.0.0.1:1\n  workers: ~\n", err), 0, "%s", err);
	cr_assert_eq(c.workers, 0);
	node_config_done(&c);
}

/* Each case: the YAML, then the exact "line: key: why" the error ends with. */
struct bad_case {
	const char *name;
	const char *yaml;
	const char *want;
};

static const struct bad_case bad_cases[] = {
	{ "unknown_top_level_key", "proxy:\n  listen: 127.0.0.1:1\nlisten: x\n",
	  "t.yaml:3: listen: unknown key" },
	{ "unknown_nested_key", "proxy:\n  timeouts:\n    header_msx: 5\n",
	  "t.yaml:3: proxy.timeouts.header_msx: unknown key" },
	{ "duplicate_key", "proxy:\n  workers: 1\n  workers: 2\n",
	  "t.yaml:3: proxy.workers: duplicate key" },
	{ "duplicate_section", "log:\n  level: info\nlog:\n  level: warn\n",
	  "t.yaml:3: log: duplicate key" },
	{ "number_not_a_number", "proxy:\n  workers: four\n",
	  "t.yaml:2: proxy.workers: expected an unsigned integer, got 'four'" },
	{ "negative_number", "proxy:\n  max_connections: -1\n",
	  "t.yaml:2: proxy.max_connections: expected an unsigned integer, got '-1'" },
	{ "number_above_max", "proxy:\n  workers: 5000\n",
	  "t.yaml:2: proxy.workers: 5000 is above the maximum 1024" },
	{ "clients_above_max", "proxy:\n  max_clients: 2000000\n",
	  "t.yaml:2: proxy.max_clients: 2000000 is above the maximum 1048576" },
	{ "u32_overflow", "proxy:\n  timeouts:\n    idle_ms: 99999999999999999999999\n",
	  "t.yaml:3: proxy.timeouts.idle_ms: 99999999999999999999999 is above the maximum 86400000" },
	{ "bool_not_true_false", "tls:\n  ktls: yes\n", "t.yaml:2: tls.ktls: expected true or false" },
	{ "bad_log_level", "log:\n  level: verbose\n",
	  "t.yaml:2: log.level: expected debug, info, warn or error" },
	{ "address_without_port", "proxy:\n  listen: 127.0.0.1\n",
	  "t.yaml:2: proxy.listen: '127.0.0.1' is not host:port (IPv6 as [addr]:port)" },
	{ "bare_ipv6_address", "admin:\n  listen: ::1:9901\n",
	  "t.yaml:2: admin.listen: '::1:9901' is not host:port (IPv6 as [addr]:port)" },
	{ "port_out_of_range", "tls:\n  listen: 0.0.0.0:70000\n",
	  "t.yaml:2: tls.listen: '0.0.0.0:70000' is not host:port (IPv6 as [addr]:port)" },
	{ "section_not_a_mapping", "proxy: 8080\n", "t.yaml:1: proxy: expected a mapping" },
	{ "scalar_given_a_list", "proxy:\n  listen: [a, b]\n",
	  "t.yaml:2: proxy.listen: expected a single value, not a list" },
	{ "endpoints_not_a_list", "sync:\n  endpoints: cp1:7443\n",
	  "t.yaml:2: sync.endpoints: expected a list of host:port" },
	{ "endpoint_port_zero", "sync:\n  endpoints:\n    - cp1:7443\n    - cp2:0\n",
	  "t.yaml:4: sync.endpoints: 'cp2:0' is not host:port with a non-zero port" },
	{ "unknown_sync_tls_key", "sync:\n  tls:\n    cafile: x\n",
	  "t.yaml:3: sync.tls.cafile: unknown key" },
	{ "labels_not_a_mapping", "node:\n  labels: [a]\n",
	  "t.yaml:2: node.labels: expected a mapping of name: value" },
	{ "duplicate_label", "node:\n  labels:\n    a: x\n    a: y\n",
	  "t.yaml:4: node.labels: duplicate label 'a'" },
	{ "top_level_not_a_mapping", "- a\n- b\n", "t.yaml:1: (top): expected a mapping of sections" },
	{ "two_documents", "log:\n  level: info\n---\nlog:\n  level: warn\n",
	  "t.yaml:4: (top): only one YAML document is allowed" },
	{ "yaml_syntax_error", "proxy:\n  listen: [127.0.0.1:1\n", "YAML syntax:" },
};

/* Criterion re-executes the binary per test, so its parameterized tests
 * cannot carry pointers: one test walks each table, naming the case. */
Test(node_config, bad_config_names_line_and_key)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *tc = &bad_cases[i];
		struct node_config c;
		char err[NODE_CONFIG_ERR_LEN];

		cr_expect_eq(parse(&c, tc->yaml, err), -EINVAL, "%s: accepted", tc->name);
		cr_expect(strstr(err, tc->want), "%s: got '%s', want '%s'", tc->name, err,
			  tc->want);
		node_config_done(&c);
	}
}

/* Cross-key rules, after command-line overrides: "key: why". */
static const struct bad_case check_cases[] = {
	{ "no_listener", "policy:\n  file: p.json\n", "proxy.listen: no listener configured" },
	{ "tls_without_cert", "tls:\n  listen: 127.0.0.1:1\n  key: k\npolicy:\n  file: p\n",
	  "tls.cert: required with tls.listen" },
	{ "tls_without_key", "tls:\n  listen: 127.0.0.1:1\n  cert: c\npolicy:\n  file: p\n",
	  "tls.key: required with tls.listen" },
	{ "cert_without_listener", "proxy:\n  listen: 127.0.0.1:1\ntls:\n  cert: c\npolicy:\n  file: p\n",
	  "tls.listen: tls.cert and tls.key given without a listener" },
	{ "no_policy_no_sync", "proxy:\n  listen: 127.0.0.1:1\n",
	  "policy.file: required without a sync section" },
	{ "policy_and_sync", "proxy:\n  listen: 127.0.0.1:1\npolicy:\n  file: p\nsync:\n  plaintext: true\n",
	  "policy.file: standalone policy file and sync section are exclusive" },
	{ "sync_without_endpoints", "node:\n  ruleset: r\nproxy:\n  listen: 127.0.0.1:1\nsync:\n  plaintext: true\n",
	  "sync.endpoints: at least one endpoint is required" },
	{ "sync_without_ruleset", "proxy:\n  listen: 127.0.0.1:1\nsync:\n  endpoints: [a:1]\n",
	  "node.ruleset: required with a sync section" },
	{ "sync_without_state_dir",
	  "node:\n  ruleset: r\nproxy:\n  listen: 127.0.0.1:1\nsync:\n  endpoints: [a:1]\n",
	  "sync.state_dir: required" },
	{ "sync_mtls_without_ca",
	  "node:\n  ruleset: r\nproxy:\n  listen: 127.0.0.1:1\nsync:\n  endpoints: [a:1]\n  state_dir: /s\n",
	  "sync.tls.ca: required unless sync.plaintext is true" },
	{ "sync_backoff_inverted",
	  "node:\n  ruleset: r\nproxy:\n  listen: 127.0.0.1:1\nsync:\n  endpoints: [a:1]\n"
	  "  state_dir: /s\n  plaintext: true\n  backoff_min_ms: 10\n  backoff_max_ms: 5\n",
	  "sync.backoff_min_ms: above sync.backoff_max_ms" },
	{ "empty_access_log", "proxy:\n  listen: 127.0.0.1:1\nlog:\n  access_log: ''\npolicy:\n  file: p\n",
	  "log.access_log: empty path" },
};

Test(node_config, bad_combination_names_key)
{
	for (size_t i = 0; i < sizeof(check_cases) / sizeof(check_cases[0]); i++) {
		const struct bad_case *tc = &check_cases[i];
		struct node_config c;
		char err[NODE_CONFIG_ERR_LEN];

		cr_expect_eq(parse(&c, tc->yaml, err), 0, "%s: %s", tc->name, err);
		cr_expect_eq(node_config_check(&c, err), -EINVAL, "%s: accepted", tc->name);
		cr_expect(strncmp(err, tc->want, strlen(tc->want)) == 0,
			  "%s: got '%s', want '%s'", tc->name, err, tc->want);
		node_config_done(&c);
	}
}

Test(node_config, command_line_address_is_checked_too)
{
	struct node_config c;
	char err[NODE_CONFIG_ERR_LEN];

	node_config_init(&c);
	cr_assert_eq(node_config_set(&c.listen, "localhost"), 0);
	cr_assert_eq(node_config_set(&c.policy_file, "p.json"), 0);
	cr_assert_eq(node_config_check(&c, err), -EINVAL);
	cr_assert_str_eq(err, "proxy.listen: 'localhost' is not host:port (IPv6 as [addr]:port)");
	node_config_done(&c);
}

struct addr_case {
	const char *in;
	int ret;
	const char *host;
	unsigned port;
};

Test(node_config, split_addr_forms)
{
	static const struct addr_case cases[] = {
		{ "127.0.0.1:80", 0, "127.0.0.1", 80 },
		{ ":0", 0, "", 0 },
		{ "[::1]:9901", 0, "::1", 9901 },
		{ "example.net:65535", 0, "example.net", 65535 },
		{ "host:65536", -EINVAL, NULL, 0 },
		{ "host:", -EINVAL, NULL, 0 },
		{ "host:8x", -EINVAL, NULL, 0 },
		{ "[::1]9901", -EINVAL, NULL, 0 },
		{ "[]:1", -EINVAL, NULL, 0 },
		{ "::1:80", -EINVAL, NULL, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char host[64];
		uint16_t port = 1234;

		cr_assert_eq(node_config_split_addr(cases[i].in, host, sizeof(host), &port),
			     cases[i].ret, "%s", cases[i].in);
		if (cases[i].ret == 0) {
			cr_assert_str_eq(host, cases[i].host, "%s", cases[i].in);
			cr_assert_eq(port, cases[i].port, "%s", cases[i].in);
		}
	}
}
