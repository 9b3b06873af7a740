/* node_policy.c - loads a ruleset file for standalone mode.
 *
 * protobuf-c types stop here (policy_wire turns the message into a
 * snapshot); nothing is published: the caller decides what to do with the
 * new snapshot, so a bad file can never replace a good policy.
 */
#include "node_policy.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pbjson.h"
#include "policy_wire.h"

/* Appends "; msg" (or msg first) to err; cuts at the buffer's end. */
static void append(char err[NODE_POLICY_ERR_LEN], const char *msg)
{
	size_t len = strlen(err);

	if (len + 3 >= NODE_POLICY_ERR_LEN)
		return;
	snprintf(err + len, NODE_POLICY_ERR_LEN - len, "%s%s", len ? "; " : "", msg);
}

int node_policy_load(const char *path, const char *want_ruleset,
		     char err[NODE_POLICY_ERR_LEN], struct snapshot **ret)
{
	char perr[PBJSON_ERR_LEN];
	ProtobufCMessage *msg;
	struct policy_errs errs;
	struct snapshot *s = NULL;
	int r;

	err[0] = '\0';
	/* pbjson prefixes file errors with the quoted path already. */
	r = pbjson_decode_file(&sluice__v1__ruleset__descriptor, path, perr, &msg);
	if (r < 0) {
		snprintf(err, NODE_POLICY_ERR_LEN, "%s", perr);
		return r;
	}
	policy_errs_init(&errs);
	r = policy_ruleset_from_pb((const Sluice__V1__Ruleset *)msg, &errs, &s);
	protobuf_c_message_free_unpacked(msg, NULL);
	if (r < 0) {
		if (policy_errs_count(&errs) == 0) {
			snprintf(err, NODE_POLICY_ERR_LEN, "'%s': %s", path, strerror(-r));
			return r;
		}
		snprintf(err, NODE_POLICY_ERR_LEN, "'%s': ", path);
		for (unsigned i = 0; i < errs.n; i++) {
			/* the first message follows "'path': " directly */
			if (i == 0)
				strncat(err, errs.msg[0], NODE_POLICY_ERR_LEN - strlen(err) - 1);
			else
				append(err, errs.msg[i]);
		}
		if (errs.dropped) {
			char more[64];

			snprintf(more, sizeof(more), "... and %u more errors", errs.dropped);
			append(err, more);
		}
		return r;
	}
	if (want_ruleset && strcmp(snapshot_ruleset(s), want_ruleset) != 0) {
		snprintf(err, NODE_POLICY_ERR_LEN,
			 "'%s': name: ruleset '%s' in the file, this node enforces '%s'", path,
			 snapshot_ruleset(s), want_ruleset);
		snapshot_unref(s);
		return -EINVAL;
	}
	*ret = s;
	return 0;
}
