/* proxy.c - placeholder until the proxy lands; every call fails with
 * -ENOSYS so that sluice-node can link against the final interface. */
#include <errno.h>

#include "proxy.h"

int proxy_new(const struct proxy_config *cfg, struct proxy **ret)
{
	(void)cfg;
	(void)ret;
	return -ENOSYS;
}

int proxy_start(struct proxy *p)
{
	(void)p;
	return -ENOSYS;
}

uint16_t proxy_port(const struct proxy *p, bool tls)
{
	(void)p;
	(void)tls;
	return 0;
}

unsigned proxy_drain(struct proxy *p)
{
	(void)p;
	return 0;
}

void proxy_free(struct proxy *p)
{
	(void)p;
}

void proxy_metrics(const struct proxy *p, struct metrics_buf *b)
{
	(void)p;
	(void)b;
}
