/* replay_main.c - runs a libFuzzer target over saved inputs, for compilers
 * without libFuzzer (gcc). Arguments are files or directories (one level);
 * files run in name order so a failure reproduces. Exits 0 when every input
 * ran, 1 if one could not be read; the target itself aborts on a bug.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;
	int r = 0;

	if (!f) {
		fprintf(stderr, "Failed to open '%s': %m\n", path);
		return -1;
	}
	for (;;) {
		size_t n;

		if (len == cap) {
			uint8_t *nb = realloc(buf, cap ? cap * 2 : 4096);

			if (!nb) {
				r = -1;
				goto out_close;
			}
			buf = nb;
			cap = cap ? cap * 2 : 4096;
		}
		n = fread(buf + len, 1, cap - len, f);
		if (n == 0)
			break;
		len += n;
	}
	if (ferror(f)) {
		fprintf(stderr, "Failed to read '%s'\n", path);
		r = -1;
		goto out_close;
	}
	/* A private copy of exactly len bytes, as libFuzzer passes it, so an
	 * over-read shows up under ASan. */
	{
		uint8_t *exact = malloc(len ? len : 1);

		if (!exact) {
			r = -1;
			goto out_close;
		}
		memcpy(exact, buf, len);
		LLVMFuzzerTestOneInput(exact, len);
		free(exact);
	}
out_close:
	free(buf);
	fclose(f);
	return r;
}

int main(int argc, char **argv)
{
	int failed = 0;
	unsigned ran = 0;

	for (int i = 1; i < argc; i++) {
		struct dirent **names;
		struct stat st;
		int n;

		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "Failed to stat '%s': %m\n", argv[i]);
			failed = 1;
			continue;
		}
		if (!S_ISDIR(st.st_mode)) {
			failed |= replay_file(argv[i]) < 0;
			ran++;
			continue;
		}
		n = scandir(argv[i], &names, NULL, alphasort);
		if (n < 0) {
			fprintf(stderr, "Failed to list '%s': %m\n", argv[i]);
			failed = 1;
			continue;
		}
		for (int j = 0; j < n; j++) {
			char path[4096];

			snprintf(path, sizeof(path), "%s/%s", argv[i], names[j]->d_name);
			if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
				failed |= replay_file(path) < 0;
				ran++;
			}
			free(names[j]);
		}
		free(names);
	}
	printf("replayed %u inputs\n", ran);
	return failed;
}
