/* sync_state_test.c - the fail-static state file: a good file round-trips
 * exactly; every damaged one (truncated at each length, any bit flipped,
 * wrong magic, wrong ruleset, trailing bytes) is refused whole, and a save
 * replaces the file atomically.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"
#include "policy_load.h"
#include "sync.h"

static struct snapshot *example(int version)
{
	struct policy_res *res[4];
	struct policy_errs errs;
	struct snapshot *s;

	res[0] = fixture_res("{\"rateLimit\": {\"id\": \"gold\", \"algorithm\": \"TOKEN_BUCKET\", "
			     "\"rate\": \"%d\", \"unit\": \"SECOND\", \"burst\": \"5\"}}", 10 + version);
	res[1] = fixture_res("{\"client\": {\"id\": \"acme\", \"keys\": [\"k1\"], "
			     "\"rateLimit\": \"gold\"}}");
	res[2] = fixture_res("{\"upstream\": {\"id\": \"be\", \"endpoints\": [\"127.0.0.1:9\"]}}");
	res[3] = fixture_res("{\"route\": {\"id\": \"api\", \"pathPrefix\": \"/api\", "
			     "\"upstream\": \"be\"}}");
	policy_errs_init(&errs);
	cr_assert_eq(snapshot_build("edge", (uint64_t)version, res, 4, &errs, &s), 0, "%s",
		     errs.msg[0]);
	for (int i = 0; i < 4; i++)
		policy_res_unref(res[i]);
	return s;
}

static void encode(const struct snapshot *s, uint8_t **buf, size_t *len)
{
	cr_assert_eq(sync_state_encode(s, 1234, buf, len), 0);
	cr_assert_gt(*len, SYNC_STATE_HEADER_LEN);
}

Test(sync_state, good_file_round_trips)
{
	struct snapshot *s = example(7), *back;
	char err[SYNC_STATE_ERR_LEN];
	uint8_t *buf;
	size_t len;

	encode(s, &buf, &len);
	cr_assert_eq(memcmp(buf, "SLCSNAP", 8), 0);
	cr_assert_eq(sync_state_decode(buf, len, "edge", err, &back), 0, "%s", err);
	cr_assert_eq(snapshot_version(back), 7);
	cr_assert_str_eq(snapshot_ruleset(back), "edge");
	cr_assert(snapshot_equal(s, back));
	snapshot_unref(back);
	free(buf);
	snapshot_unref(s);
}

Test(sync_state, every_truncation_is_refused)
{
	struct snapshot *s = example(3), *back = NULL;
	char err[SYNC_STATE_ERR_LEN];
	uint8_t *buf;
	size_t len;

	encode(s, &buf, &len);
	for (size_t cut = 0; cut < len; cut++) {
		int r = sync_state_decode(buf, cut, "edge", err, &back);

		cr_assert_eq(r, -EBADMSG, "cut at %zu of %zu: %d", cut, len, r);
		cr_assert(strstr(err, cut < SYNC_STATE_HEADER_LEN ? "truncated" : "length mismatch"),
			  "cut at %zu: '%s'", cut, err);
	}
	cr_assert_null(back);
	free(buf);
	snapshot_unref(s);
}

Test(sync_state, every_bit_flip_is_refused)
{
	struct snapshot *s = example(3), *back = NULL;
	char err[SYNC_STATE_ERR_LEN];
	uint8_t *buf;
	size_t len;

	encode(s, &buf, &len);
	for (size_t i = 0; i < len; i++) {
		/* The write time (bytes 32..39) is covered by the checksum too. */
		for (int bit = 0; bit < 8; bit++) {
			int r;

			buf[i] ^= (uint8_t)(1u << bit);
			r = sync_state_decode(buf, len, "edge", err, &back);
			buf[i] ^= (uint8_t)(1u << bit);
			cr_assert_eq(r, -EBADMSG, "bit %d of byte %zu: %d", bit, i, r);
		}
	}
	cr_assert_null(back);
	/* And the undamaged buffer still decodes. */
	cr_assert_eq(sync_state_decode(buf, len, "edge", err, &back), 0, "%s", err);
	snapshot_unref(back);
	free(buf);
	snapshot_unref(s);
}

Test(sync_state, wrong_magic_format_or_ruleset)
{
	struct snapshot *s = example(3), *back = NULL;
	char err[SYNC_STATE_ERR_LEN];
	uint8_t *buf, *longer;
	size_t len;

	encode(s, &buf, &len);
	memcpy(buf, "NOTSLUIC", 8);
	cr_assert_eq(sync_state_decode(buf, len, "edge", err, &back), -EBADMSG);
	cr_assert(strstr(err, "magic"), "%s", err);
	memcpy(buf, "SLCSNAP", 8);
	buf[8] = 2; /* format 2 */
	cr_assert_eq(sync_state_decode(buf, len, "edge", err, &back), -EBADMSG);
	cr_assert(strstr(err, "format"), "%s", err);
	buf[8] = 1;
	cr_assert_eq(sync_state_decode(buf, len, "other", err, &back), -EINVAL);
	cr_assert(strstr(err, "'edge'"), "%s", err);
	/* A byte appended after a good file. */
	longer = malloc(len + 1);
	memcpy(longer, buf, len);
	longer[len] = 0;
	cr_assert_eq(sync_state_decode(longer, len + 1, "edge", err, &back), -EBADMSG);
	cr_assert_null(back);
	free(longer);
	free(buf);
	snapshot_unref(s);
}

Test(sync_state, save_load_and_atomic_replace)
{
	char dir[] = "/tmp/sluice-state-XXXXXX", path[512], err[SYNC_STATE_ERR_LEN];
	struct snapshot *a = example(5), *b = example(9), *back;
	struct stat st;

	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(sync_state_load(dir, "edge", err, &back), -ENOENT);
	cr_assert_eq(sync_state_save(dir, a, err), 0, "%s", err);
	cr_assert_eq(sync_state_load(dir, "edge", err, &back), 0, "%s", err);
	cr_assert_eq(snapshot_version(back), 5);
	snapshot_unref(back);
	cr_assert_eq(sync_state_save(dir, b, err), 0, "%s", err);
	cr_assert_eq(sync_state_load(dir, "edge", err, &back), 0, "%s", err);
	cr_assert_eq(snapshot_version(back), 9);
	cr_assert(snapshot_equal(back, b));
	snapshot_unref(back);
	/* No temporary file left behind; the file is private. */
	cr_assert_eq(sync_state_path(dir, "edge", path, sizeof(path)), 0);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600);
	strcat(path, ".tmp");
	cr_assert_eq(stat(path, &st), -1);
	/* A file cut short on disk is refused by load, naming the file. */
	cr_assert_eq(sync_state_path(dir, "edge", path, sizeof(path)), 0);
	cr_assert_eq(truncate(path, 60), 0);
	cr_assert_eq(sync_state_load(dir, "edge", err, &back), -EBADMSG);
	cr_assert(strstr(err, "edge.snapshot"), "%s", err);
	unlink(path);
	rmdir(dir);
	snapshot_unref(a);
	snapshot_unref(b);
}

Test(sync_state, path_refuses_bad_names)
{
	char path[64];

	cr_assert_eq(sync_state_path("/var/lib/sluice", "../etc", path, sizeof(path)), -EINVAL);
	cr_assert_eq(sync_state_path("/var/lib/sluice", "", path, sizeof(path)), -EINVAL);
	cr_assert_eq(sync_state_path("/var/lib/sluice", "edge", path, 8), -ENAMETOOLONG);
	cr_assert_eq(sync_state_path("/var/lib/sluice", "edge", path, sizeof(path)), 0);
	cr_assert_str_eq(path, "/var/lib/sluice/edge.snapshot");
}

/* lib/policy_load: the shared loader both binaries use. */
Test(policy_load, names_file_and_field)
{
	char dir[] = "/tmp/sluice-load-XXXXXX", path[512], err[POLICY_LOAD_ERR_LEN];
	struct policy_errs errs;
	struct snapshot *s;
	FILE *f;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/p.json", dir);
	f = fopen(path, "w");
	fputs("{\"name\": \"edge\", \"version\": \"4\", \"resources\": [{\"route\": {\"id\": "
	      "\"api\", \"pathPrefix\": \"api\", \"staticFiles\": {\"root\": \"/tmp\"}}}]}", f);
	fclose(f);
	cr_assert_eq(policy_load_file(path, NULL, err, &errs, &s), -EINVAL);
	cr_assert(strstr(err, "p.json': route/api.path_prefix: must start with '/'"), "%s", err);
	cr_assert_eq(errs.n, 1);
	cr_assert(strstr(errs.msg[0], "route/api.path_prefix"));

	f = fopen(path, "w");
	fputs("{\"name\": \"edge\", \"version\": \"4\", \"resources\": []}", f);
	fclose(f);
	cr_assert_eq(policy_load_file(path, "other", err, NULL, &s), -EINVAL);
	cr_assert(strstr(err, "this node enforces 'other'"), "%s", err);
	cr_assert_eq(policy_load_file(path, "edge", err, NULL, &s), 0, "%s", err);
	cr_assert_eq(snapshot_version(s), 4);
	snapshot_unref(s);
	unlink(path);
	cr_assert_lt(policy_load_file(path, NULL, err, NULL, &s), 0);
	cr_assert(strstr(err, "p.json"), "%s", err);
	rmdir(dir);
}
