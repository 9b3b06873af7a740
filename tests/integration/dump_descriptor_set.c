/* dump_descriptor_set.c - writes the embedded descriptor set to stdout, so
 * the integration test can check that what reflection will serve is the
 * descriptor set protoc-c produced, and that it is complete. */
#include <stdio.h>

#include "descriptor_set.h"

int main(void)
{
	return fwrite(sluice_descriptor_set, 1, sluice_descriptor_set_len, stdout) ==
			       sluice_descriptor_set_len
		       ? 0
		       : 1;
}
