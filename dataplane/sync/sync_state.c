/* sync_state.c - the fail-static state file: the last good snapshot of a
 * ruleset, framed by a header with magic, version, length and an XXH3-64
 * checksum over header and payload.
 *
 * A file is accepted whole or not at all: every check (length, checksum,
 * protobuf decode, full ruleset validation by lib/) runs before a snapshot
 * is returned. Writes never leave a half file under the final name.
 */
#include "sync.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "policy_wire.h"
#include "sluice/v1/policy.pb-c.h"

#define OFF_MAGIC 0
#define OFF_FORMAT 8
#define OFF_HEADER_LEN 12
#define OFF_VERSION 16
#define OFF_PAYLOAD_LEN 24
#define OFF_WRITTEN 32
#define OFF_CHECKSUM 40

/* Error text, cut to the buffer (paths can be long; the cut is fine). */
static void errf(char err[SYNC_STATE_ERR_LEN], const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void errf(char err[SYNC_STATE_ERR_LEN], const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, SYNC_STATE_ERR_LEN, fmt, ap);
	va_end(ap);
}

static void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

/* The header (up to the checksum) seeds the payload's hash, so a flipped
 * bit in the version or length is caught as surely as one in the payload. */
static uint64_t checksum(const uint8_t *header, const uint8_t *payload, size_t len)
{
	return XXH3_64bits_withSeed(payload, len, XXH3_64bits(header, OFF_CHECKSUM));
}

int sync_state_encode(const struct snapshot *s, uint64_t now_unix_ms, uint8_t **buf, size_t *len)
{
	Sluice__V1__Snapshot msg = SLUICE__V1__SNAPSHOT__INIT;
	Sluice__V1__Ruleset *rs;
	uint8_t *out;
	size_t plen;

	/* The canonical wire form: sorted resources, re-encoded fields. */
	rs = policy_ruleset_to_pb(s);
	if (!rs)
		return -ENOMEM;
	msg.ruleset = rs->name;
	msg.version = rs->version;
	msg.n_resources = rs->n_resources;
	msg.resources = rs->resources;
	plen = sluice__v1__snapshot__get_packed_size(&msg);
	out = malloc(SYNC_STATE_HEADER_LEN + plen);
	if (!out) {
		policy_ruleset_pb_free(rs);
		return -ENOMEM;
	}
	sluice__v1__snapshot__pack(&msg, out + SYNC_STATE_HEADER_LEN);
	policy_ruleset_pb_free(rs);

	memset(out, 0, SYNC_STATE_HEADER_LEN);
	memcpy(out + OFF_MAGIC, SYNC_STATE_MAGIC, 8);
	put32(out + OFF_FORMAT, SYNC_STATE_FORMAT);
	put32(out + OFF_HEADER_LEN, SYNC_STATE_HEADER_LEN);
	put64(out + OFF_VERSION, snapshot_version(s));
	put64(out + OFF_PAYLOAD_LEN, plen);
	put64(out + OFF_WRITTEN, now_unix_ms);
	put64(out + OFF_CHECKSUM, checksum(out, out + SYNC_STATE_HEADER_LEN, plen));
	*buf = out;
	*len = SYNC_STATE_HEADER_LEN + plen;
	return 0;
}

int sync_state_decode(const uint8_t *buf, size_t len, const char *want_ruleset,
		      char err[SYNC_STATE_ERR_LEN], struct snapshot **ret)
{
	Sluice__V1__Ruleset rs = SLUICE__V1__RULESET__INIT;
	Sluice__V1__Snapshot *msg;
	struct policy_errs errs;
	struct snapshot *s;
	uint64_t version, plen;
	int r;

	err[0] = '\0';
	if (len < SYNC_STATE_HEADER_LEN) {
		errf(err, "truncated: %zu bytes, the header alone is %u",
			 len, SYNC_STATE_HEADER_LEN);
		return -EBADMSG;
	}
	if (memcmp(buf + OFF_MAGIC, SYNC_STATE_MAGIC, 8) != 0) {
		errf(err, "bad magic: not a sluice state file");
		return -EBADMSG;
	}
	if (get32(buf + OFF_FORMAT) != SYNC_STATE_FORMAT ||
	    get32(buf + OFF_HEADER_LEN) != SYNC_STATE_HEADER_LEN) {
		errf(err, "unknown format %u (header %u bytes)",
			 get32(buf + OFF_FORMAT), get32(buf + OFF_HEADER_LEN));
		return -EBADMSG;
	}
	version = get64(buf + OFF_VERSION);
	plen = get64(buf + OFF_PAYLOAD_LEN);
	if (plen != len - SYNC_STATE_HEADER_LEN) {
		snprintf(err, SYNC_STATE_ERR_LEN,
			 "length mismatch: header says %llu payload bytes, file has %zu%s",
			 (unsigned long long)plen, len - SYNC_STATE_HEADER_LEN,
			 plen > len - SYNC_STATE_HEADER_LEN ? " (truncated)" : "");
		return -EBADMSG;
	}
	if (checksum(buf, buf + SYNC_STATE_HEADER_LEN, plen) != get64(buf + OFF_CHECKSUM)) {
		errf(err, "checksum mismatch: the file is corrupt");
		return -EBADMSG;
	}
	msg = sluice__v1__snapshot__unpack(NULL, plen, buf + SYNC_STATE_HEADER_LEN);
	if (!msg) {
		errf(err, "payload is not a sluice.v1.Snapshot");
		return -EBADMSG;
	}
	if (msg->version != version) {
		errf(err, "version %llu in the header, %llu in the payload",
			 (unsigned long long)version, (unsigned long long)msg->version);
		r = -EBADMSG;
		goto out_free;
	}
	if (want_ruleset && strcmp(msg->ruleset, want_ruleset) != 0) {
		errf(err, "ruleset '%s' in the file, this node enforces '%s'",
			 msg->ruleset, want_ruleset);
		r = -EINVAL;
		goto out_free;
	}
	rs.name = msg->ruleset;
	rs.version = msg->version;
	rs.n_resources = msg->n_resources;
	rs.resources = msg->resources;
	policy_errs_init(&errs);
	r = policy_ruleset_from_pb(&rs, &errs, &s);
	if (r < 0) {
		errf(err, "invalid ruleset: %s",
			 errs.n ? errs.msg[0] : strerror(-r));
		goto out_free;
	}
	*ret = s;
	r = 0;
out_free:
	sluice__v1__snapshot__free_unpacked(msg, NULL);
	return r;
}

int sync_state_path(const char *dir, const char *ruleset, char *path, size_t len)
{
	int n;

	/* Ruleset names are [a-z0-9._-] and start with a letter or digit, so
	 * the name cannot climb out of dir. */
	if (!dir || !policy_ruleset_name_valid(ruleset))
		return -EINVAL;
	n = snprintf(path, len, "%s/%s.snapshot", dir, ruleset);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int sync_state_save(const char *dir, const struct snapshot *s, char err[SYNC_STATE_ERR_LEN])
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	struct timespec ts;
	uint8_t *buf;
	size_t len;
	int fd, dfd, r;

	err[0] = '\0';
	r = sync_state_path(dir, snapshot_ruleset(s), path, sizeof(path));
	if (r < 0) {
		errf(err, "bad state path: %s", strerror(-r));
		return r;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	clock_gettime(CLOCK_REALTIME, &ts);
	r = sync_state_encode(s, (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u,
			      &buf, &len);
	if (r < 0) {
		errf(err, "encode: %s", strerror(-r));
		return r;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		errf(err, "open '%s': %s", tmp, strerror(errno));
		goto out_free;
	}
	r = write_all(fd, buf, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0) {
		errf(err, "write '%s': %s", tmp, strerror(-r));
		unlink(tmp);
		goto out_free;
	}
	if (rename(tmp, path) < 0) {
		r = -errno;
		errf(err, "rename to '%s': %s", path, strerror(errno));
		unlink(tmp);
		goto out_free;
	}
	/* The rename is durable only once the directory entry is. */
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) < 0) {
		r = -errno;
		errf(err, "fsync '%s': %s", dir, strerror(errno));
	}
	if (dfd >= 0)
		close(dfd);
out_free:
	free(buf);
	return r;
}

int sync_state_load(const char *dir, const char *ruleset, char err[SYNC_STATE_ERR_LEN],
		    struct snapshot **ret)
{
	char path[PATH_MAX], why[SYNC_STATE_ERR_LEN];
	struct stat st;
	uint8_t *buf;
	size_t got = 0;
	int fd, r;

	err[0] = '\0';
	r = sync_state_path(dir, ruleset, path, sizeof(path));
	if (r < 0) {
		errf(err, "bad state path: %s", strerror(-r));
		return r;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		errf(err, "'%s': %s", path, strerror(errno));
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		errf(err, "'%s': %s", path, strerror(errno));
		goto out_close;
	}
	if (st.st_size > SYNC_STATE_MAX_BYTES) {
		r = -EFBIG;
		errf(err, "'%s': larger than %u bytes", path,
			 SYNC_STATE_MAX_BYTES);
		goto out_close;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		r = -ENOMEM;
		errf(err, "'%s': out of memory", path);
		goto out_close;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			errf(err, "'%s': %s", path, strerror(errno));
			goto out_free;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	r = sync_state_decode(buf, got, ruleset, why, ret);
	if (r < 0)
		errf(err, "'%s': %s", path, why);
out_free:
	free(buf);
out_close:
	close(fd);
	return r;
}
