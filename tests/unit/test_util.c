/* test_util.c: parse_size, format_size and byte_sum from src/common/util.h. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "test.h"
#include "util.h"

/* parse_size's result, or a sentinel so a failed parse cannot look like success. */
static uint64_t size_of(const char *s)
{
	uint64_t v = 0xdeadbeef;
	int r = parse_size(s, &v);

	CHECK_EQ(r, 0);
	return r == 0 ? v : 0xdeadbeef;
}

TEST(parse_size_plain_bytes)
{
	CHECK_EQ(size_of("1024"), 1024);
	CHECK_EQ(size_of("0"), 0);
	CHECK_EQ(size_of("4097"), 4097);
	CHECK_EQ(size_of("18446744073709551615"), UINT64_MAX);
}

TEST(parse_size_suffixes)
{
	CHECK_EQ(size_of("64K"), 64 * 1024ULL);
	CHECK_EQ(size_of("512M"), 512ULL << 20);
	CHECK_EQ(size_of("4G"), 4ULL << 30);
	CHECK_EQ(size_of("1T"), 1ULL << 40);
	CHECK_EQ(size_of("2GiB"), 2ULL << 30);
	CHECK_EQ(size_of("3MB"), 3ULL << 20);
	CHECK_EQ(size_of("8k"), 8192);
	CHECK_EQ(size_of("1g"), 1ULL << 30);
	CHECK_EQ(size_of("16777215T"), 16777215ULL << 40); /* 2^64 - 1 TiB */
}

TEST(parse_size_rejects_malformed)
{
	static const char *const bad[] = {
	    "",      "M",   "12X",  "-1", "1.5G", " 1G", "1G ", "1Gi",
	    "1GiBB", "1iB", "0x10", "+5", "G1",   "1 G", "1KM",
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		uint64_t v = 0;
		int r = parse_size(bad[i], &v);
		if (r != -EINVAL)
			fprintf(stderr, "parse_size(\"%s\") = %d\n", bad[i], r);
		CHECK_EQ(r, -EINVAL);
	}
	CHECK_EQ(parse_size(NULL, &(uint64_t){0}), -EINVAL);
}

TEST(parse_size_overflow)
{
	uint64_t v = 0;

	CHECK_EQ(parse_size("100000000000T", &v), -ERANGE);
	CHECK_EQ(parse_size("16777216T", &v), -ERANGE); /* exactly 2^64 */
	CHECK_EQ(parse_size("18446744073709551616", &v), -ERANGE);
	CHECK_EQ(parse_size("99999999999999999999999", &v), -ERANGE);
	CHECK_EQ(parse_size("17179869184G", &v), -ERANGE);
}

static const char *fmt(uint64_t bytes)
{
	static char buf[64];

	return format_size(bytes, buf, sizeof(buf));
}

TEST(format_size_units)
{
	CHECK_STR(fmt(0), "0 bytes");
	CHECK_STR(fmt(1023), "1023 bytes");
	CHECK_STR(fmt(1024), "1 KiB");
	CHECK_STR(fmt(1536), "1.5 KiB");
	CHECK_STR(fmt(512 * MiB), "512 MiB");
	CHECK_STR(fmt(1536 * MiB), "1.5 GiB");
	CHECK_STR(fmt(4 * GiB), "4 GiB");
	CHECK_STR(fmt(1 * TiB), "1 TiB");
	CHECK_STR(fmt(2 * 1024 * TiB), "2 PiB");
	CHECK_STR(fmt(2048 * 1024 * TiB), "2048 PiB"); /* PiB is the largest unit */
}

TEST(format_size_returns_buf_and_truncates)
{
	char buf[16];
	char small[4];

	memset(small, 'z', sizeof(small));
	CHECK(format_size(64 * MiB, buf, sizeof(buf)) == buf);
	CHECK_STR(buf, "64 MiB");
	CHECK(format_size(512 * MiB, small, sizeof(small)) == small);
	CHECK_STR(small, "512");
}

TEST(byte_sum_values)
{
	uint8_t table[32];
	uint8_t b[3] = {1, 2, 3};
	uint8_t wrap[2] = {0xff, 0x02};

	CHECK_EQ(byte_sum(b, 0), 0);
	CHECK_EQ(byte_sum(b, 3), 6);
	CHECK_EQ(byte_sum(wrap, 2), 1);

	/* The ACPI/MP checksum idiom: a last byte that makes the whole table sum to 0. */
	for (size_t i = 0; i < sizeof(table); i++)
		table[i] = (uint8_t)(i * 37 + 11);
	table[31] = 0;
	table[31] = (uint8_t)(0x100 - byte_sum(table, sizeof(table)));
	CHECK_EQ(byte_sum(table, sizeof(table)), 0);
	table[5] ^= 1;
	CHECK(byte_sum(table, sizeof(table)) != 0);
}

TEST(map_file_regular_empty_and_errors)
{
	char dir[] = "/tmp/vmstack-test-XXXXXX";
	char path[64];
	const uint8_t *data = NULL;
	size_t len = 0;
	FILE *f;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/f", dir);
	f = fopen(path, "w");
	CHECK(f != NULL);
	fputs("kernel bytes", f);
	fclose(f);
	CHECK_EQ(map_file(path, &data, &len), 0);
	CHECK_EQ(len, 12);
	CHECK(data && memcmp(data, "kernel bytes", 12) == 0);
	unmap_file(data, len);

	f = fopen(path, "w"); /* now empty */
	fclose(f);
	CHECK_EQ(map_file(path, &data, &len), 0);
	CHECK(data == NULL);
	CHECK_EQ(len, 0);

	CHECK_EQ(map_file(dir, &data, &len), -EISDIR);
	CHECK_EQ(map_file("/dev/null", &data, &len), -EINVAL);
	snprintf(path, sizeof(path), "%s/missing", dir);
	CHECK_EQ(map_file(path, &data, &len), -ENOENT);
	snprintf(path, sizeof(path), "%s/f", dir);
	unlink(path);
	rmdir(dir);
}
