/* etcd_helper.h - a real, private etcd for integration tests.
 *
 * Each helper runs /usr/bin/etcd on free loopback ports with its data in a
 * fresh mkdtemp directory; free kills it and removes the directory. The
 * etcd process dies with the thread that started it (PR_SET_PDEATHSIG), so
 * a crashed test leaves no server behind (only its temp directory).
 */
#ifndef SLUICE_TESTS_ETCD_HELPER_H
#define SLUICE_TESTS_ETCD_HELPER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Overridable at build time (-DETCD_HELPER_BINARY=...) to test the skip. */
#ifndef ETCD_HELPER_BINARY
#define ETCD_HELPER_BINARY "/usr/bin/etcd"
#endif

/* Owned by the test that started it; lives until etcd_helper_free. */
struct etcd_helper {
	pid_t pid;		/* 0 while stopped */
	char dir[64];		/* mkdtemp root: data/ and etcd.log inside */
	uint16_t client_port;
	uint16_t peer_port;
	char endpoint[40];	/* "http://127.0.0.1:<client_port>" */
};

/* True when the etcd binary can be run; else writes why into `why`. */
bool etcd_helper_available(char *why, size_t why_len);

/* Starts etcd on free ports and waits (up to 10 s) until /health answers.
 * Retries with other ports when the chosen ones were taken meanwhile.
 * 0 or -errno; *ret written only on success. */
int etcd_helper_start(struct etcd_helper **ret);

/* SIGKILLs etcd and reaps it; the data directory stays. 0 or -errno. */
int etcd_helper_kill(struct etcd_helper *h);

/* Starts etcd again on the same ports and data directory and waits until
 * healthy. 0 or -errno. */
int etcd_helper_restart(struct etcd_helper *h);

/* Kills etcd if running, removes the directory, frees. NULL is fine. */
void etcd_helper_free(struct etcd_helper *h);

/* A loopback TCP port nobody listens on right now (bind to port 0, read it
 * back, close). 0 on failure. */
uint16_t etcd_helper_free_port(void);

#endif
