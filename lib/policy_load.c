/* policy_load.c - loads a ruleset file: pbjson decodes the JSON into the
 * wire Ruleset, policy_wire turns it into a validated snapshot.
 *
 * protobuf-c types stop here: callers get a snapshot or error text.
 */
#include "policy_load.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pbjson.h"
#include "policy_wire.h"

/* Appends "; msg" (or msg first after the "'path': " prefix) to err; cuts
 * at the buffer's end. */
static void append(char err[POLICY_LOAD_ERR_LEN], size_t prefix_len, const char *msg)
{
	size_t len = strlen(err);

	if (len + 3 >= POLICY_LOAD_ERR_LEN)
		return;
	snprintf(err + len, POLICY_LOAD_ERR_LEN - len, "%s%s", len > prefix_len ? "; " : "",
		 msg);
}

int policy_load_file(const char *path, const char *want_ruleset, char err[POLICY_LOAD_ERR_LEN],
		     struct policy_errs *errs, struct snapshot **ret)
{
	char perr[PBJSON_ERR_LEN];
	ProtobufCMessage *msg;
	struct policy_errs local;
	struct snapshot *s = NULL;
	size_t prefix_len;
	int r;

	if (!errs)
		errs = &local;
	policy_errs_init(errs);
	err[0] = '\0';
	/* pbjson prefixes file errors with the quoted path already. */
	r = pbjson_decode_file(&sluice__v1__ruleset__descriptor, path, perr, &msg);
	if (r < 0) {
		snprintf(err, POLICY_LOAD_ERR_LEN, "%s", perr);
		return r;
	}
	r = policy_ruleset_from_pb((const Sluice__V1__Ruleset *)msg, errs, &s);
	protobuf_c_message_free_unpacked(msg, NULL);
	if (r < 0) {
		if (policy_errs_count(errs) == 0) {
			snprintf(err, POLICY_LOAD_ERR_LEN, "'%s': %s", path, strerror(-r));
			return r;
		}
		snprintf(err, POLICY_LOAD_ERR_LEN, "'%s': ", path);
		prefix_len = strlen(err);
		for (unsigned i = 0; i < errs->n; i++)
			append(err, prefix_len, errs->msg[i]);
		if (errs->dropped) {
			char more[64];

			snprintf(more, sizeof(more), "... and %u more errors", errs->dropped);
			append(err, prefix_len, more);
		}
		return r;
	}
	if (want_ruleset && strcmp(snapshot_ruleset(s), want_ruleset) != 0) {
		policy_errs_add(errs, "name: ruleset '%s' in the file, this node enforces '%s'",
				snapshot_ruleset(s), want_ruleset);
		snprintf(err, POLICY_LOAD_ERR_LEN, "'%s': %s", path, errs->msg[0]);
		snapshot_unref(s);
		return -EINVAL;
	}
	*ret = s;
	return 0;
}
