/* rpc_internal.h - what rpc.c shares with the built-in services
 * (rpc_health.c, rpc_reflection.c) and the descriptor-set index. Not for
 * services outside controlplane/rpc: they use rpc.h only.
 */
#ifndef SLUICE_RPC_INTERNAL_H
#define SLUICE_RPC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "rpc.h"

struct rpc_health;
struct rpc_reflection;

/* Calls fn(arg, service) for each distinct service name ("pkg.Svc") that
 * has a registered method, in registration order. Only before start or
 * from callbacks (the method table is frozen by then). */
void rpc_server_each_service(const struct rpc_server *s,
			     void (*fn)(void *arg, const char *service), void *arg);

/* Set by the enable_* calls; freed by rpc_server_free after the workers
 * have stopped. */
void rpc_server_set_builtin(struct rpc_server *s, struct rpc_health *h,
			    struct rpc_reflection *r);
struct rpc_health *rpc_server_health(const struct rpc_server *s);
struct rpc_reflection *rpc_server_reflection(const struct rpc_server *s);

/* rpc_health.c */
int rpc_health_new(struct rpc_server *s, struct rpc_health **ret);
/* Every registered service not set yet becomes SERVING (called by start). */
void rpc_health_seed(struct rpc_health *h);
int rpc_health_set(struct rpc_health *h, const char *service, enum rpc_health_status status);
int rpc_health_set_all(struct rpc_health *h, enum rpc_health_status status);
void rpc_health_free(struct rpc_health *h);

/* rpc_reflection.c */
int rpc_reflection_new(struct rpc_server *s, const uint8_t *set, size_t len,
		       struct rpc_reflection **ret);
void rpc_reflection_free(struct rpc_reflection *r);

/* ---- descriptor-set index (rpc_descset.c) ---------------------------------
 * Names only: which file defines which symbol, and which files a file
 * imports. Views into the borrowed set bytes. */

/* One FileDescriptorProto of the set. Owned by its rpc_descset. */
struct rpc_descfile {
	char *name;
	char *package;
	const uint8_t *raw;     /* the encoded FileDescriptorProto, in the set */
	size_t raw_len;
	size_t *deps;           /* indexes of the imported files */
	size_t n_deps;
};

/* Owned by its creator; lives until rpc_descset_free. */
struct rpc_descset;

/* -EBADMSG: not a FileDescriptorSet, or an import missing from it;
 * -ENOMEM. */
int rpc_descset_new(const uint8_t *set, size_t len, struct rpc_descset **ret);
void rpc_descset_free(struct rpc_descset *d);

size_t rpc_descset_n_files(const struct rpc_descset *d);
const struct rpc_descfile *rpc_descset_file(const struct rpc_descset *d, size_t i);
/* Index of the file, -1 when absent. */
long rpc_descset_find_file(const struct rpc_descset *d, const char *name);
/* Index of the file defining a fully-qualified symbol (no leading dot):
 * message, nested message, enum, service or "Service.Method"; -1. */
long rpc_descset_find_symbol(const struct rpc_descset *d, const char *symbol);
/* Is `symbol` a service of the set? */
bool rpc_descset_is_service(const struct rpc_descset *d, const char *symbol);
/* Names of every service in the set, in file order. */
size_t rpc_descset_n_services(const struct rpc_descset *d);
const char *rpc_descset_service(const struct rpc_descset *d, size_t i);
/* Extensions of `type` (no leading dot): file of the one with `number`
 * (-1 when none); all numbers into out (up to max), returns the count. */
long rpc_descset_find_extension(const struct rpc_descset *d, const char *type, int32_t number);
size_t rpc_descset_extension_numbers(const struct rpc_descset *d, const char *type,
				     int32_t *out, size_t max);
/* The file and its transitive imports, each once, the file first: indexes
 * into out (room for rpc_descset_n_files), returns the count. */
size_t rpc_descset_closure(const struct rpc_descset *d, size_t file, size_t *out);

#endif
