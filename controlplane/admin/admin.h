/* admin.h - the sluice.v1.PolicyAdmin handlers: decode a request, call the
 * store, encode the reply, and turn every store error into the gRPC status
 * an operator can act on. Transport-free: the rpc adapter registers the
 * methods (role admin is checked there, not here).
 *
 * Invariants: a handler never writes to etcd unless the request decoded, the
 * author is present (ApplyChanges, Rollback) and the change validated; it
 * always fills the reply (status OK with an encoded message, or an error
 * with a message naming what is wrong).
 */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "rpc.h"

struct store;

/* Cap on upserts + removes in one ApplyChanges / Validate request, checked
 * before anything is decoded into policy structs. The store's own cap (one
 * etcd transaction, STORE_DEFAULT_MAX_TXN_OPS) applies after that to the
 * part of the change that actually changes something. */
#define ADMIN_MAX_CHANGE_ITEMS 10000
/* Largest GetHistory page; bigger limits are clamped to it. */
#define ADMIN_MAX_HISTORY_LIMIT 1000

/* Borrowed by admin_new. */
struct admin_config {
	struct store *store;  /* borrowed; outlives the admin */
};

/* Owned by the creator; lives until admin_free, after the last handler call
 * returned. Immutable: handlers may run on any number of threads at once. */
struct admin;

/* -EINVAL without a store; -ENOMEM. *ret written only on success. */
int admin_new(const struct admin_config *cfg, struct admin **ret);
void admin_free(struct admin *a); /* accepts NULL */

/* One unary method of sluice.v1.PolicyAdmin. Static storage. */
struct admin_method {
	const char *path;  /* "/sluice.v1.PolicyAdmin/ListRulesets" */
	rpc_unary_fn fn;   /* ctx passed to fn is the struct admin * */
};

/* Every PolicyAdmin method; *n set to their number. */
const struct admin_method *admin_methods(size_t *n);

#endif
