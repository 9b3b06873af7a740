/* tls.h - TLS termination for the node's proxy through OpenSSL.
 *
 * A tls_ctx holds the certificate and key (reloadable: new handshakes use the
 * new pair, live connections keep theirs). A tls_conn is a memory-BIO engine
 * driven by the worker's io_uring: the worker feeds received ciphertext in,
 * reads plaintext out, writes plaintext in and sends the ciphertext the
 * engine queues. After the handshake kTLS is asked for when the kernel has a
 * TLS ULP; which path each connection took is counted.
 */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Owned by the caller; strings read during tls_ctx_new/tls_ctx_reload only. */
struct tls_config {
	const char *cert_file;   /* PEM chain */
	const char *key_file;    /* PEM key */
	bool ktls;               /* try kTLS after the handshake */
	bool ktls_required;      /* refuse connections that cannot offload */
};

/* Which path a connection's records take. */
enum tls_path {
	TLS_PATH_USERSPACE = 0,  /* OpenSSL records in user space */
	TLS_PATH_KTLS_SEND,      /* kernel encrypts, user space decrypts */
	TLS_PATH_KTLS_BOTH,      /* kernel both ways */
	TLS_PATH__COUNT
};

/* Counters, relaxed atomics, monotonic. */
struct tls_stats {
	uint64_t handshakes;
	uint64_t handshake_failures;
	uint64_t refused_no_ktls;  /* ktls_required and no offload */
	uint64_t path[TLS_PATH__COUNT];
	uint64_t reloads;
	uint64_t reload_failures;
};

/* Shared by all workers; owned by the node's main; lives until tls_ctx_free
 * after the proxy is freed. */
struct tls_ctx;

int tls_ctx_new(const struct tls_config *cfg, struct tls_ctx **ret);
/* Re-reads cert_file/key_file. On error the old pair stays and -errno is
 * returned. Any thread. */
int tls_ctx_reload(struct tls_ctx *c, const struct tls_config *cfg);
void tls_ctx_free(struct tls_ctx *c);  /* accepts NULL */
void tls_ctx_stats(const struct tls_ctx *c, struct tls_stats *out);
/* Probe: does this kernel accept TCP_ULP "tls"? Cached after the first call. */
bool tls_kernel_has_ulp(void);

#endif
