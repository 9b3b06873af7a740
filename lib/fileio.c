/* fileio.c - see fileio.h. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int fileio_read(const char *path, size_t max_bytes, char **out, size_t *len)
{
	char *buf = NULL;
	size_t got = 0, cap;
	struct stat st;
	int fd, r = 0;

	if (!path || !out)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		r = -EISDIR;
		goto out;
	}
	if (S_ISREG(st.st_mode) && (unsigned long long)st.st_size > max_bytes) {
		r = -EFBIG;
		goto out;
	}
	/* st_size is only a hint: one spare byte for the NUL (and to see the
	 * end without a second allocation), then doubling. */
	cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 64 * 1024;
	for (;;) {
		ssize_t n;

		if (!buf || got == cap) {
			size_t ncap = buf ? cap * 2 : cap;
			char *nb = realloc(buf, ncap);

			if (!nb) {
				r = -ENOMEM;
				goto out;
			}
			buf = nb;
			cap = ncap;
		}
		n = read(fd, buf + got, cap - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got > max_bytes) {
			r = -EFBIG;
			goto out;
		}
	}
	buf[got] = '\0'; /* the loop only ends with room left: got < cap */
	*out = buf;
	buf = NULL;
	if (len)
		*len = got;
out:
	close(fd);
	free(buf);
	return r;
}
