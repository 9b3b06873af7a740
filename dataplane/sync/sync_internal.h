/* sync_internal.h - what the agent's files share inside dataplane/sync/:
 * the NodeReport builder. protobuf-c types stay inside this folder.
 */
#ifndef SLUICE_SYNC_INTERNAL_H
#define SLUICE_SYNC_INTERNAL_H

#include <stddef.h>

#include "sluice/v1/sync.pb-c.h"

/* Fills the counter fields of r (clients, routes, rules, latency, tls)
 * from the node's Prometheus text. The repeated fields and sub-messages are
 * malloc'ed; free them with sync_report_done. Unknown families are
 * ignored. 0 or -ENOMEM (r is then still safe to pass to sync_report_done). */
int sync_report_fill(Sluice__V1__NodeReport *r, const char *text, size_t len);
void sync_report_done(Sluice__V1__NodeReport *r);

#endif
