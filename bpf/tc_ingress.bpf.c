/* tc_ingress.bpf.c - the node's TC ingress (clsact) program: drops sources on
 * the deny lists and throttles clients over their limit, identified by the
 * client-id header of plaintext HTTP requests. Every packet ends with exactly
 * one enum client_reason; only this file turns it into a TC verdict, a
 * counter, statistics and an event. Everything that is not a clear DENY or
 * RATE passes: the proxy behind it enforces the full policy anyway.
 */
#include "common.h"

#include "maps.h"

#include "deny.h"
#include "http.h"
#include "parse.h"
#include "ratelimit.h"
#include "report.h"

/* The project licence. No GPL-only helper is called; one that is would be
 * refused at load with a clear message. */
char LICENSE[] SEC("license") = "Apache-2.0";

static __always_inline int is_http_port(const struct client_global_config *g, __u16 port)
{
#pragma clang loop unroll(full)
	for (int i = 0; i < CLIENT_HTTP_PORTS_MAX; i++) {
		if (g->http_ports[i] != 0 && g->http_ports[i] == port)
			return 1;
	}
	return 0;
}

static __always_inline int client_limit(const struct client_global_config *g, struct pkt *pkt)
{
	struct client_config *cc;
	__u64 *client_id;

	client_id = bpf_map_lookup_elem(&client_lookup, &pkt->key_hash);
	if (!client_id)
		return -CLIENT_REASON_UNKNOWN_CLIENT;
	cc = bpf_map_lookup_elem(&client_config, client_id);
	if (!cc)
		return -CLIENT_REASON_UNKNOWN_CLIENT;
	pkt->client_id = *client_id;
	return ratelimit_take(pkt->client_id, cc, g, pkt_now(pkt));
}

/* Always returns a negative reason. */
static __always_inline int classify(struct __sk_buff *skb, const struct client_global_config *g,
				    struct pkt *pkt)
{
	__be16 proto;
	__u32 l3_off;
	int ret, deny;

	parse_make_linear(skb, pkt);
	ret = parse_eth(pkt, &l3_off, &proto);
	if (ret < 0)
		return ret;
	if (proto == bpf_htons(ETH_P_IP))
		ret = parse_ipv4(pkt, l3_off);
	else if (proto == bpf_htons(ETH_P_IPV6))
		ret = parse_ipv6(pkt, l3_off);
	else
		return -CLIENT_REASON_NOT_IP;
	/* The source is known even for a later fragment: deny it too. */
	if (pkt->family != 0) {
		deny = deny_check(pkt);
		if (deny < 0)
			return deny;
	}
	if (ret < 0)
		return ret;
	if (pkt->l4_proto != IPPROTO_TCP)
		return -CLIENT_REASON_NOT_TCP;
	ret = parse_tcp(pkt);
	if (ret < 0)
		return ret;
	if (!is_http_port(g, pkt->dport))
		return -CLIENT_REASON_NOT_HTTP;
	if (pkt->payload_off >= pkt->payload_end)
		return -CLIENT_REASON_NO_PAYLOAD;
	ret = http_client_key(skb, g, pkt);
	if (ret < 0)
		return ret;
	return client_limit(g, pkt);
}

SEC("tc")
int tc_ingress(struct __sk_buff *skb)
{
	struct client_global_config *g;
	struct pkt pkt = {};
	__u32 zero = 0, reason;
	__u16 ev_type;

	g = bpf_map_lookup_elem(&global_config, &zero);
	if (!g || !g->enabled) {
		report_count(CLIENT_REASON_DISABLED);
		return TC_ACT_OK;
	}
	reason = -classify(skb, g, &pkt);
	if (reason == CLIENT_REASON_NONE || reason >= CLIENT_REASON_MAX)
		reason = CLIENT_REASON_MALFORMED;

	report_count(reason);
	if (pkt.client_id != 0)
		report_stats(&pkt, reason, pkt_now(&pkt));
	ev_type = report_event_type(reason, g->log_level, &pkt);
	if (ev_type != 0)
		report_event(&pkt, ev_type, reason, pkt_now(&pkt));
	return reason == CLIENT_REASON_DENY || reason == CLIENT_REASON_RATE ? TC_ACT_SHOT
									     : TC_ACT_OK;
}
