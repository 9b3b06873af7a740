/* bench_record.c - see bench_record.h. */
#include "bench_record.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

extern char **environ;

void bench_record(const char *prog, const char *section, const char *cols)
{
	const char *path = getenv("SLUICE_BENCH_RESULTS");
	char dir[PATH_MAX], script[PATH_MAX + 16];
	pid_t pid;
	int r, st;

	if (!getenv("SLUICE_BENCH_RECORD"))
		return;
	if (!path)
		path = "bench/RESULTS.md";
	snprintf(dir, sizeof(dir), "%s", path);
	snprintf(script, sizeof(script), "%s/record.py", dirname(dir));
	char *argv[] = { "python3", script, (char *)path, (char *)section, (char *)cols, NULL };

	r = posix_spawnp(&pid, "python3", NULL, NULL, argv, environ);
	if (r != 0) {
		fprintf(stderr, "%s: cannot run %s: %s\n", prog, script, strerror(r));
		return;
	}
	if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fprintf(stderr, "%s: recording in '%s' failed\n", prog, path);
}
