/* test_mptable.c: walks what mptable_build() wrote the way Linux's mpparse does. */
#include <errno.h>

#include "mptable.h"
#include "test.h"
#include "util.h"

#define GPA 0xf0000ull

static uint64_t rd(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static struct mptable_config default_config(unsigned ncpus)
{
	return (struct mptable_config){
	    .ncpus = ncpus,
	    .ioapic_id = (uint8_t)ncpus,
	    .ioapic_addr = 0xfec00000,
	    .lapic_addr = 0xfee00000,
	};
}

static void check_tables(unsigned ncpus)
{
	struct mptable_config cfg = default_config(ncpus);
	static uint8_t buf[8192];
	const uint8_t *mpc, *p, *end;
	unsigned cpus = 0, bsps = 0, buses = 0, ioapics = 0, lints = 0, entries = 0;
	bool pins[24] = {false}, irq_seen[16] = {false};
	int used;

	memset(buf, 0xa5, sizeof(buf));
	used = mptable_build(&cfg, buf, sizeof(buf), GPA);
	CHECK(used > 0);
	if (used <= 0)
		return;

	/* Floating pointer. */
	CHECK(memcmp(buf, "_MP_", 4) == 0);
	CHECK_EQ(byte_sum(buf, 16), 0);
	CHECK_EQ(buf[8], 1);  /* length in paragraphs */
	CHECK_EQ(buf[9], 4);  /* spec 1.4 */
	CHECK_EQ(buf[11], 0); /* feature 1: the table is present, no default config */
	CHECK_EQ(rd(buf + 4, 4), GPA + 16);

	/* Configuration table header. */
	mpc = buf + (rd(buf + 4, 4) - GPA);
	CHECK(memcmp(mpc, "PCMP", 4) == 0);
	CHECK_EQ(mpc[6], 4);
	CHECK_EQ(byte_sum(mpc, rd(mpc + 4, 2)), 0);
	CHECK_EQ(16 + rd(mpc + 4, 2), (uint64_t)used);
	CHECK_EQ(rd(mpc + 36, 4), 0xfee00000);
	CHECK_EQ(rd(mpc + 40, 2), 0); /* extended table length */
	CHECK(memcmp(mpc + 8, "VMSTACK ", 8) == 0);

	end = mpc + rd(mpc + 4, 2);
	for (p = mpc + 44; p < end; entries++) {
		switch (p[0]) {
		case 0:
			CHECK_EQ(p[1], cpus);
			CHECK_EQ(p[2], 0x14);
			CHECK(p[3] & 1);
			if (p[3] & 2)
				bsps++;
			CHECK_EQ(!!(p[3] & 2), p[1] == 0);
			cpus++;
			p += 20;
			break;
		case 1:
			CHECK_EQ(p[1], 0);
			CHECK(memcmp(p + 2, "ISA   ", 6) == 0);
			buses++;
			p += 8;
			break;
		case 2:
			CHECK_EQ(p[1], ncpus);
			CHECK_EQ(p[2], 0x11);
			CHECK(p[3] & 1);
			CHECK_EQ(rd(p + 4, 4), 0xfec00000);
			ioapics++;
			p += 8;
			break;
		case 3:
			CHECK_EQ(p[1], 0); /* INT */
			CHECK_EQ(rd(p + 2, 2), 0);
			CHECK_EQ(p[4], 0);
			CHECK_EQ(p[6], ncpus);
			CHECK(p[5] < 16 && p[5] != 2 && p[7] < 24);
			if (p[5] < 16 && p[7] < 24) {
				CHECK(!irq_seen[p[5]] && !pins[p[7]]);
				irq_seen[p[5]] = pins[p[7]] = true;
				CHECK_EQ(p[7], p[5] == 0 ? 2 : p[5]);
			}
			p += 8;
			break;
		case 4:
			CHECK_EQ(p[6], 0xff);
			if (p[1] == 3)
				CHECK_EQ(p[7], 0); /* ExtINT -> LINT0 */
			else if (p[1] == 1)
				CHECK_EQ(p[7], 1); /* NMI -> LINT1 */
			else
				CHECK(!"unexpected local interrupt type");
			lints++;
			p += 8;
			break;
		default:
			CHECK(!"unexpected entry type");
			return;
		}
	}
	CHECK_EQ(p, end);
	CHECK_EQ(entries, rd(mpc + 34, 2));
	CHECK_EQ(cpus, ncpus);
	CHECK_EQ(bsps, 1);
	CHECK_EQ(buses, 1);
	CHECK_EQ(ioapics, 1);
	CHECK_EQ(lints, 2);
	for (unsigned irq = 0; irq < 16; irq++)
		CHECK_EQ(irq_seen[irq], irq != 2);
}

TEST(mptable_1_cpu)
{
	check_tables(1);
}

TEST(mptable_8_cpus)
{
	check_tables(8);
}

TEST(mptable_short_buffer)
{
	struct mptable_config cfg = default_config(8);
	static uint8_t buf[4096];
	int used = mptable_build(&cfg, buf, sizeof(buf), GPA);

	CHECK(used > 0);
	CHECK_EQ(mptable_build(&cfg, buf, (size_t)used - 1, GPA), -ENOSPC);
	CHECK_EQ(mptable_build(&cfg, buf, 16, GPA), -ENOSPC);
	CHECK_EQ(mptable_build(&cfg, buf, (size_t)used, GPA), used);
}

TEST(mptable_bad_config)
{
	struct mptable_config cfg = default_config(0);
	static uint8_t buf[4096];

	CHECK_EQ(mptable_build(&cfg, buf, sizeof(buf), GPA), -EINVAL);
	cfg = default_config(4);
	cfg.ioapic_id = 0;
	CHECK_EQ(mptable_build(&cfg, buf, sizeof(buf), GPA), -EINVAL);
	cfg = default_config(4);
	CHECK_EQ(mptable_build(&cfg, buf, sizeof(buf), GPA + 4), -EINVAL);
}
