/* test_snapshot_file.c: the snapshot state file — round trip, and every kind of damage. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "snapshot_file.h"
#include "test.h"
#include "util.h"

static char *tmpdir(void)
{
	static char dir[64];

	strcpy(dir, "/tmp/vmstack-snapfile-XXXXXX");
	return mkdtemp(dir);
}

static uint8_t *read_state(const char *dir, size_t *len)
{
	char path[256];
	const uint8_t *m;
	uint8_t *copy;

	snprintf(path, sizeof(path), "%s/state", dir);
	if (map_file(path, &m, len) < 0)
		return NULL;
	copy = malloc(*len);
	memcpy(copy, m, *len);
	unmap_file(m, *len);
	return copy;
}

static void fix_crc(uint8_t *b, size_t len)
{
	put_le32(b + len - 4, (uint32_t)crc32(0, b, (uInt)(len - 4)));
}

TEST(round_trip_finds_sections_by_tag_and_instance)
{
	struct snap_writer *w = snap_writer_new();
	struct snap_reader *r;
	char err[256], *dir = tmpdir();
	uint64_t a = 0x1122334455667788ull, b = 42, out = 0;
	const void *p;
	size_t len;

	CHECK(w && dir);
	CHECK_EQ(snap_put(w, "vcpu.regs", 0, &a, sizeof(a)), 0);
	CHECK_EQ(snap_put(w, "vcpu.regs", 1, &b, sizeof(b)), 0);
	CHECK_EQ(snap_put(w, "empty", 0, NULL, 0), 0);
	CHECK_EQ(snap_put(w, "a-tag-too-long!!", 0, &a, 1), -EINVAL);
	CHECK_EQ(snap_put(w, "", 0, &a, 1), -EINVAL);
	CHECK_EQ(snap_writer_commit(w, dir, err, sizeof(err)), 0);
	snap_writer_free(w);

	r = snap_reader_open(dir, err, sizeof(err));
	CHECK(r);
	CHECK_EQ(snap_get_exact(r, "vcpu.regs", 1, &out, sizeof(out), err, sizeof(err)), 0);
	CHECK_EQ(out, 42);
	CHECK_EQ(snap_get_exact(r, "vcpu.regs", 0, &out, sizeof(out), err, sizeof(err)), 0);
	CHECK_EQ(out, a);
	p = snap_get(r, "empty", 0, &len);
	CHECK(p != NULL);
	CHECK_EQ(len, 0);
	CHECK(snap_get(r, "vcpu.regs", 2, &len) == NULL);
	CHECK_EQ(snap_get_exact(r, "vcpu.regs", 0, &out, 4, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "section vcpu.regs 0 has 8 bytes, expected 4"));
	CHECK_EQ(snap_get_exact(r, "nothing", 3, &out, 8, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "section nothing 3 is missing"));
	snap_reader_free(r);
}

TEST(damaged_files_are_refused_with_a_reason)
{
	struct snap_writer *w = snap_writer_new();
	char err[256], *dir = tmpdir();
	uint8_t *b, *c;
	uint32_t v = 7;
	size_t len;

	CHECK(w && dir);
	CHECK_EQ(snap_put(w, "x", 0, &v, sizeof(v)), 0);
	CHECK_EQ(snap_writer_commit(w, dir, err, sizeof(err)), 0);
	snap_writer_free(w);
	b = read_state(dir, &len);
	CHECK(b);
	c = malloc(len);

	/* Every truncation fails, none crashes. */
	for (size_t n = 0; n < len; n++) {
		CHECK(snap_reader_parse(b, n, "t", err, sizeof(err)) == NULL);
	}
	/* A flipped bit anywhere: the checksum catches it. */
	for (size_t i = 16; i < len - 4; i++) {
		memcpy(c, b, len);
		c[i] ^= 0x10;
		CHECK(snap_reader_parse(c, len, "t", err, sizeof(err)) == NULL);
	}
	memcpy(c, b, len);
	c[len - 20] ^= 1;
	CHECK(snap_reader_parse(c, len, "t", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "checksum mismatch"));
	/* Another version. */
	memcpy(c, b, len);
	put_le32(c + 16, SNAP_VERSION + 1);
	fix_crc(c, len);
	CHECK(snap_reader_parse(c, len, "t", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "version 2, this vmstack-vm reads version 1"));
	/* Consistent checksum but lying lengths and counts. */
	memcpy(c, b, len);
	put_le32(c + 20, 1000000);
	fix_crc(c, len);
	CHECK(snap_reader_parse(c, len, "t", err, sizeof(err)) == NULL);
	memcpy(c, b, len);
	put_le32(c + 24 + 16 + 4, 0xfffffff0u);
	fix_crc(c, len);
	CHECK(snap_reader_parse(c, len, "t", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "malformed"));
	memcpy(c, b, len);
	put_le32(c + 24 + 16 + 4, 2); /* shorter than the data: bytes left over */
	fix_crc(c, len);
	CHECK(snap_reader_parse(c, len, "t", err, sizeof(err)) == NULL);
	memcpy(c, b, len);
	memset(c + 24, 'A', 16); /* tag without its NUL */
	fix_crc(c, len);
	CHECK(snap_reader_parse(c, len, "t", err, sizeof(err)) == NULL);
	memcpy(c, b, len);
	c[0] = 'X';
	CHECK(snap_reader_parse(c, len, "t", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "not a vmstack snapshot state file"));
	/* The original still parses. */
	struct snap_reader *r = snap_reader_parse(b, len, "t", err, sizeof(err));
	CHECK(r);
	snap_reader_free(r);
	free(b);
	free(c);
}

TEST(missing_directory_says_so)
{
	char err[256];

	CHECK(snap_reader_open("/nonexistent/snap", err, sizeof(err)) == NULL);
	CHECK_STR(err, "/nonexistent/snap/state: no such file — is /nonexistent/snap a snapshot "
	               "directory?");
}
