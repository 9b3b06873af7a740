/* sync_report.c - a NodeReport's counters, read from the node's Prometheus
 * text (the same families /metrics shows).
 *
 * The proxy exposes its counters only as text (proxy_metrics); parsing our
 * own exposition keeps one source of truth for what a node counted, so the
 * control plane and a Prometheus scrape can never disagree. Families read:
 * sluice_proxy_requests_total{route,status}, sluice_proxy_decisions_total
 * {rule,outcome}, sluice_proxy_client_decisions_total{client,outcome} (the
 * proxy's top PROXY_CLIENT_TOP_N clients, so clients[] is bounded the same
 * way), sluice_proxy_request_duration_seconds (histogram),
 * sluice_tls_connections_total{path}, sluice_tls_handshake_failures_total,
 * sluice_bpf_attached, sluice_bpf_packets_total{reason,verdict},
 * sluice_bpf_events_lost_total (present only when the kernel enforcer is on).
 */
#include "sync_internal.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LABELS 4
#define LABEL_MAX 256

/* One sample line, labels unescaped into fixed buffers. Stack only. */
struct sample {
	char name[128];
	unsigned n_labels;
	char key[MAX_LABELS][32];
	char val[MAX_LABELS][LABEL_MAX];
	double value;
};

static const char *label(const struct sample *s, const char *key)
{
	for (unsigned i = 0; i < s->n_labels; i++)
		if (strcmp(s->key[i], key) == 0)
			return s->val[i];
	return NULL;
}

/* Parses `name{k="v",...} value` in line[0..len). false when it is not one. */
static bool parse_sample(const char *p, const char *end, struct sample *s)
{
	size_t n = 0;
	char *vend;
	char num[64];

	s->n_labels = 0;
	while (p < end && *p != '{' && *p != ' ' && n + 1 < sizeof(s->name))
		s->name[n++] = *p++;
	s->name[n] = '\0';
	if (p < end && *p == '{') {
		p++;
		while (p < end && *p != '}') {
			unsigned i = s->n_labels;
			size_t k = 0, v = 0;

			if (i == MAX_LABELS)
				return false;
			while (p < end && *p != '=' && k + 1 < sizeof(s->key[i]))
				s->key[i][k++] = *p++;
			s->key[i][k] = '\0';
			if (p + 1 >= end || p[0] != '=' || p[1] != '"')
				return false;
			p += 2;
			while (p < end && *p != '"') {
				char c = *p++;

				if (c == '\\' && p < end) {
					c = *p++;
					if (c == 'n')
						c = '\n';
				}
				if (v + 1 < LABEL_MAX)
					s->val[i][v++] = c;
			}
			s->val[i][v] = '\0';
			if (p >= end)
				return false;
			p++; /* closing quote */
			s->n_labels++;
			if (p < end && *p == ',')
				p++;
		}
		if (p >= end)
			return false;
		p++;
	}
	if (p >= end || *p != ' ')
		return false;
	p++;
	n = (size_t)(end - p);
	if (n == 0 || n >= sizeof(num))
		return false;
	memcpy(num, p, n);
	num[n] = '\0';
	s->value = strtod(num, &vend);
	return vend != num;
}

static uint64_t u64(double v)
{
	return v > 0 && v < 1.8e19 ? (uint64_t)v : 0;
}

/* Grows *arr (of pointers) by one; NULL on ENOMEM. */
static void *push(void *arr_p, size_t *n, size_t size)
{
	void ***arr = arr_p;
	void **grown = realloc(*arr, (*n + 1) * sizeof(void *));
	void *elem;

	if (!grown)
		return NULL;
	*arr = grown;
	elem = calloc(1, size);
	if (!elem)
		return NULL;
	grown[(*n)++] = elem;
	return elem;
}

static Sluice__V1__RouteCounters *route_of(Sluice__V1__NodeReport *r, const char *name)
{
	Sluice__V1__RouteCounters *rc;

	for (size_t i = 0; i < r->n_routes; i++)
		if (strcmp(r->routes[i]->route, name) == 0)
			return r->routes[i];
	rc = push(&r->routes, &r->n_routes, sizeof(*rc));
	if (!rc)
		return NULL;
	sluice__v1__route_counters__init(rc);
	rc->route = strdup(name);
	return rc->route ? rc : NULL;
}

static Sluice__V1__RuleCounters *rule_of(Sluice__V1__NodeReport *r, const char *name)
{
	Sluice__V1__RuleCounters *rc;

	for (size_t i = 0; i < r->n_rules; i++)
		if (strcmp(r->rules[i]->rate_limit, name) == 0)
			return r->rules[i];
	rc = push(&r->rules, &r->n_rules, sizeof(*rc));
	if (!rc)
		return NULL;
	sluice__v1__rule_counters__init(rc);
	rc->rate_limit = strdup(name);
	return rc->rate_limit ? rc : NULL;
}

static Sluice__V1__ClientCounters *client_of(Sluice__V1__NodeReport *r, const char *name)
{
	Sluice__V1__ClientCounters *cc;

	/* A client's three outcome lines are adjacent: the last row first. */
	if (r->n_clients && strcmp(r->clients[r->n_clients - 1]->client, name) == 0)
		return r->clients[r->n_clients - 1];
	for (size_t i = 0; i < r->n_clients; i++)
		if (strcmp(r->clients[i]->client, name) == 0)
			return r->clients[i];
	cc = push(&r->clients, &r->n_clients, sizeof(*cc));
	if (!cc)
		return NULL;
	sluice__v1__client_counters__init(cc);
	cc->client = strdup(name);
	return cc->client ? cc : NULL;
}

/* The outcome labels of sluice_proxy_decisions_total and
 * sluice_proxy_client_decisions_total, as the report's three counters. */
/* A decisions sample by `key` (rule or client) and outcome: its name in
 * *name and its value in the count of its outcome (allowed, rejected,
 * shadow: c[0..2]). false for outcomes a report does not carry and for
 * an empty name. */
static bool outcome_sample(const struct sample *s, const char *key, const char **name,
			   uint64_t c[3])
{
	static const char *const outcomes[3] = { "allow", "rate_limited", "shadow" };
	const char *a = label(s, key), *b = label(s, "outcome");

	if (!a || !b || !a[0])
		return false;
	for (unsigned i = 0; i < 3; i++)
		if (strcmp(b, outcomes[i]) == 0) {
			c[i] = u64(s->value);
			*name = a;
			return true;
		}
	return false;
}

static int add_u64(uint64_t **arr, size_t *n, uint64_t v)
{
	uint64_t *grown = realloc(*arr, (*n + 1) * sizeof(uint64_t));

	if (!grown)
		return -ENOMEM;
	grown[(*n)++] = v;
	*arr = grown;
	return 0;
}

/* BpfCounters: the message exists only when the node runs the kernel
 * enforcer (its families are in the text). */
static int take_bpf(Sluice__V1__NodeReport *r, const struct sample *s)
{
	const char *reason, *verdict;

	if (!r->bpf) {
		r->bpf = calloc(1, sizeof(*r->bpf));
		if (!r->bpf)
			return -ENOMEM;
		sluice__v1__bpf_counters__init(r->bpf);
	}
	if (strcmp(s->name, "sluice_bpf_attached") == 0) {
		r->bpf->attached = s->value == 1;
	} else if (strcmp(s->name, "sluice_bpf_events_lost_total") == 0) {
		r->bpf->events_lost = u64(s->value);
	} else if (strcmp(s->name, "sluice_bpf_packets_total") == 0) {
		reason = label(s, "reason");
		verdict = label(s, "verdict");
		if (!reason || !verdict)
			return 0;
		if (strcmp(verdict, "pass") == 0)
			r->bpf->passed += u64(s->value);
		else if (strcmp(reason, "deny") == 0)
			r->bpf->dropped_deny += u64(s->value);
		else if (strcmp(reason, "rate") == 0)
			r->bpf->dropped_rate += u64(s->value);
	}
	return 0;
}

static int take(Sluice__V1__NodeReport *r, const struct sample *s)
{
	const char *a, *b;

	if (strcmp(s->name, "sluice_proxy_requests_total") == 0) {
		Sluice__V1__RouteCounters *rc;
		Sluice__V1__StatusCount *sc;

		a = label(s, "route");
		b = label(s, "status");
		if (!a || !b)
			return 0;
		rc = route_of(r, a);
		if (!rc)
			return -ENOMEM;
		rc->requests += u64(s->value);
		sc = push(&rc->statuses, &rc->n_statuses, sizeof(*sc));
		if (!sc)
			return -ENOMEM;
		sluice__v1__status_count__init(sc);
		sc->status = (uint32_t)strtoul(b, NULL, 10);
		sc->count = u64(s->value);
		return 0;
	}
	if (strcmp(s->name, "sluice_proxy_decisions_total") == 0) {
		Sluice__V1__RuleCounters *rc;
		uint64_t c[3] = { 0 };

		/* An allow or a 429 names the rate limit that decided it, a
		 * shadow the SHADOW limit that would have refused; other
		 * outcomes name access lists or routes, not limits. */
		if (!outcome_sample(s, "rule", &a, c))
			return 0;
		rc = rule_of(r, a);
		if (!rc)
			return -ENOMEM;
		rc->allowed += c[0];
		rc->rejected += c[1];
		rc->shadow_rejected += c[2];
		return 0;
	}
	if (strcmp(s->name, "sluice_proxy_client_decisions_total") == 0) {
		Sluice__V1__ClientCounters *cc;
		uint64_t c[3] = { 0 };

		if (!outcome_sample(s, "client", &a, c))
			return 0;
		cc = client_of(r, a);
		if (!cc)
			return -ENOMEM;
		cc->allowed += c[0];
		cc->rejected += c[1];
		cc->shadow_rejected += c[2];
		return 0;
	}
	if (strcmp(s->name, "sluice_proxy_request_duration_seconds_bucket") == 0) {
		a = label(s, "le");
		if (!a || strcmp(a, "+Inf") == 0)
			return a ? add_u64(&r->latency->counts, &r->latency->n_counts, u64(s->value))
				 : 0;
		if (add_u64(&r->latency->bounds_us, &r->latency->n_bounds_us,
			    u64(llround(strtod(a, NULL) * 1e6))) < 0)
			return -ENOMEM;
		return add_u64(&r->latency->counts, &r->latency->n_counts, u64(s->value));
	}
	if (strcmp(s->name, "sluice_proxy_request_duration_seconds_sum") == 0) {
		r->latency->sum_us = u64(s->value * 1e6);
		return 0;
	}
	if (strcmp(s->name, "sluice_tls_connections_total") == 0) {
		a = label(s, "path");
		if (!a)
			return 0;
		if (strcmp(a, "userspace") == 0) {
			r->tls->user_space += u64(s->value);
		} else if (strcmp(a, "ktls_send") == 0) {
			r->tls->ktls_send += u64(s->value);
		} else if (strcmp(a, "ktls_both") == 0) {
			r->tls->ktls_send += u64(s->value);
			r->tls->ktls_recv += u64(s->value);
		}
		return 0;
	}
	if (strcmp(s->name, "sluice_tls_handshake_failures_total") == 0)
		r->tls->handshake_failures = u64(s->value);
	if (strncmp(s->name, "sluice_bpf_", 11) == 0)
		return take_bpf(r, s);
	return 0;
}

int sync_report_fill(Sluice__V1__NodeReport *r, const char *text, size_t len)
{
	const char *p = text, *end = text + len;
	struct sample s;

	r->latency = calloc(1, sizeof(*r->latency));
	r->tls = calloc(1, sizeof(*r->tls));
	if (!r->latency || !r->tls)
		return -ENOMEM;
	sluice__v1__latency_histogram__init(r->latency);
	sluice__v1__tls_counters__init(r->tls);
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));

		if (!eol)
			eol = end;
		if (*p != '#' && parse_sample(p, eol, &s) && take(r, &s) < 0)
			return -ENOMEM;
		p = eol + 1;
	}
	return 0;
}

void sync_report_done(Sluice__V1__NodeReport *r)
{
	for (size_t i = 0; i < r->n_routes; i++) {
		if (!r->routes[i])
			continue;
		for (size_t j = 0; j < r->routes[i]->n_statuses; j++)
			free(r->routes[i]->statuses[j]);
		free(r->routes[i]->statuses);
		free(r->routes[i]->route);
		free(r->routes[i]);
	}
	free(r->routes);
	for (size_t i = 0; i < r->n_rules; i++) {
		if (!r->rules[i])
			continue;
		free(r->rules[i]->rate_limit);
		free(r->rules[i]);
	}
	free(r->rules);
	for (size_t i = 0; i < r->n_clients; i++) {
		if (!r->clients[i])
			continue;
		free(r->clients[i]->client);
		free(r->clients[i]);
	}
	free(r->clients);
	r->clients = NULL;
	r->n_clients = 0;
	if (r->latency) {
		free(r->latency->bounds_us);
		free(r->latency->counts);
		free(r->latency);
	}
	free(r->tls);
	free(r->bpf);
	r->bpf = NULL;
	r->routes = NULL;
	r->rules = NULL;
	r->n_routes = r->n_rules = 0;
	r->latency = NULL;
	r->tls = NULL;
}
