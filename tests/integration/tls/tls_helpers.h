/* tls_helpers.h - shared by the TLS tests: a private certificate directory
 * made by scripts/gen-certs.sh, shell commands with captured output, and a
 * poll-loop TLS server built on tls_conn (echo lines, or answer HTTP GET).
 */
#ifndef SLUICE_TLS_HELPERS_H
#define SLUICE_TLS_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tls.h"

/* Makes a fresh temp dir with the test PKI; returns its path (static
 * storage, one per process: Criterion forks per test). Aborts on failure. */
const char *helpers_certs(void);
/* Another PKI with its own CA, in a second temp dir. */
const char *helpers_other_certs(void);
void helpers_cleanup(void);  /* removes the dirs made above */

/* Runs `sh -c cmd` (the caller bounds it with `timeout`); captures stdout and
 * stderr into out (NUL-terminated, truncated at cap). Returns the exit
 * status, or -1 if it did not exit normally. */
int helpers_run(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* `openssl x509 -serial` of a PEM file, "serial=..." without newline. */
void helpers_serial(const char *pem_file, char *out, size_t cap);

/* The server: one thread, one poll loop, loopback only. A line "quit" makes
 * it answer "BYE" and send close_notify; other lines get "ECHO <line>".
 * "GET /big " answers 1 MiB (byte i = 'a' + i % 23), "GET <other> " a short
 * body (HELPERS_BODY); both close after the response. Owned by the test;
 * lives until helpers_server_stop. */
#define HELPERS_BODY "hello over tls\n"
#define HELPERS_BIG_BYTES (1024u * 1024u)
struct helpers_server;
struct helpers_server *helpers_server_start(struct tls_ctx *ctx);
uint16_t helpers_server_port(const struct helpers_server *s);
/* Connections tls_conn_new refused. */
unsigned helpers_server_refused(const struct helpers_server *s);
void helpers_server_stop(struct helpers_server *s);

/* Waits (bounded, 10 s) until *field >= want; returns the last value seen. */
uint64_t helpers_wait_stat(struct tls_ctx *ctx, size_t field_offset, uint64_t want);

/* A child process with pipes to its stdin and from its stdout+stderr. */
struct helpers_child {
	int pid;
	int in_fd;
	int out_fd;
	char out[65536];
	size_t out_len;
};
int helpers_spawn(struct helpers_child *c, const char *cmd);
/* Reads output until needle appears (bounded, 15 s); true if it did. */
bool helpers_child_wait_for(struct helpers_child *c, const char *needle);
void helpers_child_write(struct helpers_child *c, const char *s);
int helpers_child_finish(struct helpers_child *c);  /* close stdin, reap */

#endif
