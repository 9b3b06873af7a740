/* fileio_test.c - fileio_read: exact bytes, the cap at its edge, files
 * whose size says nothing (/proc, a pipe), and every refusal. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"

static char dir[] = "/tmp/fileio-test.XXXXXX";

static void setup(void)
{
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[64];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_expect_eq(system(cmd), 0);
}

TestSuite(fileio, .init = setup, .fini = teardown);

static const char *write_file(const char *name, const char *data, size_t len)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(data, 1, len, f), len);
	fclose(f);
	return path;
}

Test(fileio, reads_every_byte_and_terminates)
{
	const char data[] = "line one\n\0binary\xff tail";
	const char *path = write_file("a", data, sizeof(data) - 1);
	char *buf = NULL;
	size_t len = 0;

	cr_assert_eq(fileio_read(path, 1024, &buf, &len), 0);
	cr_assert_eq(len, sizeof(data) - 1);
	cr_assert_eq(memcmp(buf, data, len), 0);
	cr_assert_eq(buf[len], '\0');
	free(buf);
}

Test(fileio, empty_file_is_an_empty_string)
{
	const char *path = write_file("empty", "", 0);
	char *buf = NULL;
	size_t len = 99;

	cr_assert_eq(fileio_read(path, 0, &buf, &len), 0);
	cr_assert_eq(len, 0);
	cr_assert_str_eq(buf, "");
	free(buf);
}

Test(fileio, cap_is_inclusive)
{
	const char *path = write_file("ten", "0123456789", 10);
	char *buf = NULL, *untouched = (char *)"x";

	cr_assert_eq(fileio_read(path, 10, &buf, NULL), 0);
	cr_assert_str_eq(buf, "0123456789");
	free(buf);
	buf = untouched;
	cr_assert_eq(fileio_read(path, 9, &buf, NULL), -EFBIG);
	cr_assert_eq(buf, untouched);
}

Test(fileio, proc_file_with_zero_size_is_read_to_the_end)
{
	char *buf = NULL;
	size_t len = 0;

	/* st_size of /proc files is 0; this one is never empty. */
	cr_assert_eq(fileio_read("/proc/self/status", 1u << 20, &buf, &len), 0);
	cr_assert_gt(len, 0);
	cr_assert_not_null(strstr(buf, "Name:"));
	cr_assert_eq(strlen(buf), len);
	free(buf);
}

Test(fileio, pipe_larger_than_the_first_buffer)
{
	char path[128], cmd[256], *buf = NULL;
	size_t len = 0;

	/* 200 KiB through a FIFO: more than the first 64 KiB allocation. */
	snprintf(path, sizeof(path), "%s/fifo", dir);
	cr_assert_eq(mkfifo(path, 0600), 0);
	snprintf(cmd, sizeof(cmd), "head -c 204800 /dev/zero | tr '\\0' 'z' > %s &", path);
	cr_assert_eq(system(cmd), 0);
	cr_assert_eq(fileio_read(path, 1u << 20, &buf, &len), 0);
	cr_assert_eq(len, 204800);
	cr_assert_eq(buf[0], 'z');
	cr_assert_eq(buf[len - 1], 'z');
	cr_assert_eq(buf[len], '\0');
	free(buf);
}

Test(fileio, pipe_over_the_cap_is_refused)
{
	char path[128], cmd[256], *buf = NULL;

	snprintf(path, sizeof(path), "%s/fifo", dir);
	cr_assert_eq(mkfifo(path, 0600), 0);
	snprintf(cmd, sizeof(cmd), "head -c 100000 /dev/zero > %s 2>/dev/null &", path);
	cr_assert_eq(system(cmd), 0);
	cr_assert_eq(fileio_read(path, 99999, &buf, NULL), -EFBIG);
	cr_assert_null(buf);
}

Test(fileio, refusals)
{
	char missing[128], *buf = NULL;

	snprintf(missing, sizeof(missing), "%s/none", dir);
	cr_assert_eq(fileio_read(missing, 10, &buf, NULL), -ENOENT);
	cr_assert_eq(fileio_read(dir, 10, &buf, NULL), -EISDIR);
	cr_assert_eq(fileio_read(NULL, 10, &buf, NULL), -EINVAL);
	cr_assert_null(buf);
}
