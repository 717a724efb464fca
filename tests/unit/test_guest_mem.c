/* test_guest_mem.c: guest RAM creation limits, the checked gpa translation and the e820 map. */
#include <errno.h>

#include "guest_mem.h"
#include "test.h"
#include "util.h"

static bool e820_is(const struct e820_entry *e, uint64_t addr, uint64_t size, uint32_t type)
{
	if (e->addr == addr && e->size == size && e->type == type)
		return true;
	fprintf(stderr, "e820 entry 0x%llx+0x%llx type %u, expected 0x%llx+0x%llx type %u\n",
	        (unsigned long long)e->addr, (unsigned long long)e->size, e->type,
	        (unsigned long long)addr, (unsigned long long)size, type);
	return false;
}

TEST(guest_mem_64m_translation)
{
	struct guest_mem m;
	char err[256] = "";
	uint8_t *p;

	CHECK_EQ(guest_mem_create(&m, 64 * MiB, 0, 0, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK(m.host != NULL);
	CHECK(m.fd >= 0);
	CHECK_EQ(m.size, 64 * MiB);
	CHECK_EQ(guest_mem_low_end(&m), 64 * MiB);

	CHECK(gm_ptr(&m, 0, 1) == m.host);
	CHECK(gm_ptr(&m, 0, 64 * MiB) == m.host);
	CHECK(gm_ptr(&m, 0x1234, 16) == m.host + 0x1234);
	CHECK(gm_ptr(&m, 64 * MiB - 1, 1) == m.host + 64 * MiB - 1); /* last byte */
	CHECK(gm_ptr(&m, 64 * MiB - 8, 8) != NULL);
	CHECK(gm_ptr(&m, 64 * MiB, 1) == NULL);     /* one past */
	CHECK(gm_ptr(&m, 64 * MiB - 1, 2) == NULL); /* straddles the end */
	CHECK(gm_ptr(&m, 0, 64 * MiB + 1) == NULL);
	CHECK(gm_ptr(&m, 0x1000, UINT64_MAX) == NULL); /* gpa + len wraps */
	CHECK(gm_ptr(&m, UINT64_MAX, 2) == NULL);
	CHECK(gm_ptr(&m, UINT64_MAX - 0xfff, 0x2000) == NULL);
	CHECK(gm_ptr(&m, GM_HOLE_START, 1) == NULL);
	CHECK(gm_ptr(&m, GM_4G, 1) == NULL);

	/* The mapping is real, writable memory. */
	p = gm_ptr(&m, 64 * MiB - 1, 1);
	*p = 0x5a;
	CHECK_EQ(m.host[64 * MiB - 1], 0x5a);

	CHECK_EQ(gm_write(&m, 0x2000, "abc", 4), 0);
	CHECK_STR((const char *)m.host + 0x2000, "abc");
	CHECK_EQ(gm_write(&m, 64 * MiB - 2, "abc", 4), -EFAULT);
	CHECK_EQ(m.host[64 * MiB - 2], 0); /* a refused write writes nothing */
	CHECK_EQ(gm_write(&m, GM_4G, "abc", 4), -EFAULT);

	guest_mem_destroy(&m);
	CHECK(m.host == NULL);
	CHECK_EQ(m.fd, -1);
	guest_mem_destroy(&m); /* idempotent */
}

TEST(guest_mem_e820_64m)
{
	struct guest_mem m;
	struct e820_entry e[8];
	char err[256];
	unsigned n;

	CHECK_EQ(guest_mem_create(&m, 64 * MiB, 0, 0, err, sizeof(err)), 0);
	memset(e, 0xcc, sizeof(e));
	n = gm_e820(&m, e, ARRAY_SIZE(e));
	CHECK_EQ(n, 4);
	CHECK(e820_is(&e[0], 0, 0x9fc00, E820_RAM));
	CHECK(e820_is(&e[1], 0x9fc00, 0x400, E820_RESERVED));
	CHECK(e820_is(&e[2], 0xe0000, 0x20000, E820_RESERVED));
	CHECK(e820_is(&e[3], 0x100000, 64 * MiB - 0x100000, E820_RAM));
	CHECK_EQ(e[4].type, 0xcccccccc); /* nothing past n */

	/* A short output array gets the first entries only. */
	memset(e, 0xcc, sizeof(e));
	CHECK_EQ(gm_e820(&m, e, 2), 2);
	CHECK(e820_is(&e[1], 0x9fc00, 0x400, E820_RESERVED));
	CHECK_EQ(e[2].type, 0xcccccccc);
	CHECK_EQ(gm_e820(&m, e, 0), 0);
	guest_mem_destroy(&m);
}

TEST(guest_mem_4g_split_around_hole)
{
	struct guest_mem m;
	struct e820_entry e[8];
	char err[256];
	unsigned n;
	uint8_t *lo, *hi;

	/* MAP_NORESERVE and a sparse memfd: 4 GiB costs nothing until touched. */
	CHECK_EQ(guest_mem_create(&m, 4 * GiB, 0, 0, err, sizeof(err)), 0);
	if (!m.host)
		return;
	CHECK_EQ(m.nregions, 2);
	CHECK_EQ(guest_mem_low_end(&m), 3 * GiB);

	n = gm_e820(&m, e, ARRAY_SIZE(e));
	CHECK_EQ(n, 5);
	CHECK(e820_is(&e[0], 0, 0x9fc00, E820_RAM));
	CHECK(e820_is(&e[1], 0x9fc00, 0x400, E820_RESERVED));
	CHECK(e820_is(&e[2], 0xe0000, 0x20000, E820_RESERVED));
	CHECK(e820_is(&e[3], 0x100000, 3 * GiB - 0x100000, E820_RAM));
	CHECK(e820_is(&e[4], 4 * GiB, 1 * GiB, E820_RAM));
	for (unsigned i = 0; i < n; i++)
		CHECK(e[i].addr + e[i].size <= GM_HOLE_START || e[i].addr >= GM_4G);

	/* The hole is not RAM, and no access may cross into it from either side. */
	CHECK(gm_ptr(&m, GM_HOLE_START - 1, 1) != NULL);
	CHECK(gm_ptr(&m, GM_HOLE_START - 1, 2) == NULL);
	CHECK(gm_ptr(&m, GM_HOLE_START, 1) == NULL);
	CHECK(gm_ptr(&m, 0xfee00000, 4) == NULL);
	CHECK(gm_ptr(&m, GM_4G - 1, 2) == NULL);
	CHECK(gm_ptr(&m, 0, 4 * GiB) == NULL);
	CHECK(gm_ptr(&m, GM_4G, 1 * GiB) != NULL);
	CHECK(gm_ptr(&m, 5 * GiB - 1, 1) != NULL);
	CHECK(gm_ptr(&m, 5 * GiB, 1) == NULL);
	CHECK(gm_ptr(&m, 5 * GiB - 1, 2) == NULL);
	CHECK(gm_ptr(&m, GM_4G + 0x1000, UINT64_MAX) == NULL);

	/* RAM above 4 GiB follows the low RAM in the memfd, not at offset 4 GiB. */
	lo = gm_ptr(&m, GM_HOLE_START - 1, 1);
	hi = gm_ptr(&m, GM_4G, 1);
	CHECK(hi == m.host + GM_HOLE_START);
	CHECK(lo != NULL && hi == lo + 1);
	if (hi) {
		*hi = 0x42;
		CHECK_EQ(m.host[GM_HOLE_START], 0x42);
	}
	guest_mem_destroy(&m);
}

TEST(guest_mem_exactly_3g_has_no_high_region)
{
	struct guest_mem m;
	struct e820_entry e[8];
	char err[256];

	CHECK_EQ(guest_mem_create(&m, 3 * GiB, 0, 32, err, sizeof(err)), 0);
	CHECK_EQ(m.nregions, 1);
	CHECK_EQ(gm_e820(&m, e, ARRAY_SIZE(e)), 4);
	CHECK(e820_is(&e[3], 0x100000, 3 * GiB - 0x100000, E820_RAM));
	CHECK(gm_ptr(&m, GM_4G, 1) == NULL);
	guest_mem_destroy(&m);
}

static int create_fails(uint64_t size, uint64_t host_limit, unsigned phys_bits, const char *needle)
{
	struct guest_mem m;
	char err[256] = "";
	int r = guest_mem_create(&m, size, host_limit, phys_bits, err, sizeof(err));

	CHECK(r < 0);
	CHECK(m.host == NULL);
	CHECK_EQ(m.fd, -1);
	if (!strstr(err, needle)) {
		fprintf(stderr, "message \"%s\" lacks \"%s\"\n", err, needle);
		CHECK(0);
	}
	CHECK(strstr(err, "--memory") != NULL);
	guest_mem_destroy(&m); /* safe after a failed create */
	return r;
}

TEST(guest_mem_size_errors)
{
	CHECK_EQ(create_fails(0, 0, 0, "too small"), -EINVAL);
	CHECK_EQ(create_fails(GM_MIN_SIZE - 4096, 0, 0, "too small"), -EINVAL);
	CHECK_EQ(create_fails(64 * MiB + 512, 0, 0, "4 KiB"), -EINVAL);
	CHECK_EQ(create_fails(64 * MiB + 4096 + 1, 0, 0, "4 KiB"), -EINVAL);
}

TEST(guest_mem_host_limit)
{
	struct guest_mem m;
	char err[256];

	CHECK_EQ(create_fails(1 * GiB, 512 * MiB, 0, "512 MiB"), -ENOMEM);
	CHECK_EQ(create_fails(64 * MiB + 4096, 64 * MiB, 0, "64 MiB"), -ENOMEM);
	/* Exactly the limit is allowed. */
	CHECK_EQ(guest_mem_create(&m, 64 * MiB, 64 * MiB, 0, err, sizeof(err)), 0);
	guest_mem_destroy(&m);
}

TEST(guest_mem_phys_bits)
{
	struct guest_mem m;
	char err[256];

	/* 64 MiB ends at 2^26: fits 26 bits, not 25. */
	CHECK_EQ(guest_mem_create(&m, 64 * MiB, 0, 26, err, sizeof(err)), 0);
	guest_mem_destroy(&m);
	CHECK_EQ(create_fails(64 * MiB, 0, 25, "25-bit"), -ERANGE);
	/* 4 GiB of RAM ends at 5 GiB because of the hole: beyond 32 bits. */
	CHECK_EQ(create_fails(4 * GiB, 0, 32, "32-bit"), -ERANGE);
	CHECK_EQ(guest_mem_create(&m, 4 * GiB, 0, 33, err, sizeof(err)), 0);
	guest_mem_destroy(&m);
}
