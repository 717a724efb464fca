/* test_cmos_rtc.c: MC146818 registers as the guest reads and writes them, on a fixed clock. */
#include "cmos_rtc.h"
#include "test.h"

/* 2026-11-23 10:11:12 UTC, a Monday. */
#define T0 ((time_t)1795428672)

static time_t fake_time;

static time_t fake_now(void)
{
	return fake_time;
}

static void rtc_setup(struct cmos_rtc *rtc)
{
	cmos_rtc_init(rtc);
	rtc->now = fake_now;
	fake_time = T0;
}

static uint8_t get(struct cmos_rtc *rtc, uint8_t idx)
{
	uint8_t v = 0;

	rtc->io.ops->write(&rtc->io, 0, &idx, 1);
	rtc->io.ops->read(&rtc->io, 1, &v, 1);
	return v;
}

static void set(struct cmos_rtc *rtc, uint8_t idx, uint8_t val)
{
	rtc->io.ops->write(&rtc->io, 0, &idx, 1);
	rtc->io.ops->write(&rtc->io, 1, &val, 1);
}

TEST(rtc_region)
{
	struct cmos_rtc rtc;

	rtc_setup(&rtc);
	CHECK_EQ(rtc.io.base, 0x70);
	CHECK_EQ(rtc.io.len, 2);
	cmos_rtc_destroy(&rtc);
}

TEST(rtc_bcd_time_and_date)
{
	struct cmos_rtc rtc;

	rtc_setup(&rtc);
	CHECK_EQ(get(&rtc, 0x0b) & 0x06, 0x02); /* BCD, 24-hour by default */
	CHECK_EQ(get(&rtc, 0x00), 0x12);
	CHECK_EQ(get(&rtc, 0x02), 0x11);
	CHECK_EQ(get(&rtc, 0x04), 0x10);
	CHECK_EQ(get(&rtc, 0x06), 0x02); /* Monday; Sunday is 1 */
	CHECK_EQ(get(&rtc, 0x07), 0x23);
	CHECK_EQ(get(&rtc, 0x08), 0x11);
	CHECK_EQ(get(&rtc, 0x09), 0x26);
	CHECK_EQ(get(&rtc, 0x32), 0x20);

	/* The host clock moves on and the registers follow it. */
	fake_time = T0 + 3600 + 48; /* 11:12:00 */
	CHECK_EQ(get(&rtc, 0x00), 0x00);
	CHECK_EQ(get(&rtc, 0x02), 0x12);
	CHECK_EQ(get(&rtc, 0x04), 0x11);
	fake_time = 946684799; /* 1999-12-31 23:59:59, a Friday */
	CHECK_EQ(get(&rtc, 0x04), 0x23);
	CHECK_EQ(get(&rtc, 0x06), 0x06);
	CHECK_EQ(get(&rtc, 0x09), 0x99);
	CHECK_EQ(get(&rtc, 0x32), 0x19);
	cmos_rtc_destroy(&rtc);
}

TEST(rtc_binary_mode)
{
	struct cmos_rtc rtc;

	rtc_setup(&rtc);
	set(&rtc, 0x0b, 0x06); /* binary, 24-hour */
	CHECK_EQ(get(&rtc, 0x0b), 0x06);
	CHECK_EQ(get(&rtc, 0x00), 12);
	CHECK_EQ(get(&rtc, 0x02), 11);
	CHECK_EQ(get(&rtc, 0x04), 10);
	CHECK_EQ(get(&rtc, 0x06), 2);
	CHECK_EQ(get(&rtc, 0x07), 23);
	CHECK_EQ(get(&rtc, 0x08), 11);
	CHECK_EQ(get(&rtc, 0x09), 26);
	CHECK_EQ(get(&rtc, 0x32), 20);
	cmos_rtc_destroy(&rtc);
}

TEST(rtc_12_hour_mode)
{
	struct cmos_rtc rtc;

	rtc_setup(&rtc);
	set(&rtc, 0x0b, 0x00);           /* BCD, 12-hour */
	CHECK_EQ(get(&rtc, 0x04), 0x10); /* 10 AM */
	fake_time = T0 + 12 * 3600;      /* 22:11 */
	CHECK_EQ(get(&rtc, 0x04), 0x80 | 0x10);
	fake_time = T0 - 10 * 3600; /* 00:11 is 12 AM */
	CHECK_EQ(get(&rtc, 0x04), 0x12);
	fake_time = T0 + 2 * 3600; /* 12:11 is 12 PM */
	CHECK_EQ(get(&rtc, 0x04), 0x80 | 0x12);
	fake_time = T0 + 3 * 3600; /* 13:11 is 1 PM */
	CHECK_EQ(get(&rtc, 0x04), 0x80 | 0x01);

	set(&rtc, 0x0b, 0x04); /* binary, 12-hour */
	fake_time = T0 + 12 * 3600;
	CHECK_EQ(get(&rtc, 0x04), 0x80 | 10);
	cmos_rtc_destroy(&rtc);
}

/* The guest's clock-setting sequence: SET, write the fields, clear SET. */
static void guest_set_clock(struct cmos_rtc *rtc, uint8_t b, const uint8_t f[7])
{
	set(rtc, 0x0b, b | 0x80);
	set(rtc, 0x09, f[0]);
	set(rtc, 0x08, f[1]);
	set(rtc, 0x07, f[2]);
	set(rtc, 0x04, f[3]);
	set(rtc, 0x02, f[4]);
	set(rtc, 0x00, f[5]);
	set(rtc, 0x32, f[6]);
	set(rtc, 0x0b, b);
}

TEST(rtc_guest_sets_clock)
{
	struct cmos_rtc rtc;
	/* 2030-01-02 03:04:05 */
	static const uint8_t when[7] = {0x30, 0x01, 0x02, 0x03, 0x04, 0x05, 0x20};

	rtc_setup(&rtc);
	guest_set_clock(&rtc, 0x02, when);
	CHECK_EQ(get(&rtc, 0x09), 0x30);
	CHECK_EQ(get(&rtc, 0x08), 0x01);
	CHECK_EQ(get(&rtc, 0x07), 0x02);
	CHECK_EQ(get(&rtc, 0x04), 0x03);
	CHECK_EQ(get(&rtc, 0x02), 0x04);
	CHECK_EQ(get(&rtc, 0x00), 0x05);
	CHECK_EQ(get(&rtc, 0x32), 0x20);
	CHECK_EQ(get(&rtc, 0x06), 0x04); /* a Wednesday */

	/* The guest's clock runs with the host's, from where the guest set it. */
	fake_time = T0 + 100;
	CHECK_EQ(get(&rtc, 0x00), 0x45);
	CHECK_EQ(get(&rtc, 0x02), 0x05);
	CHECK_EQ(get(&rtc, 0x04), 0x03);
	fake_time = T0 + 86400;
	CHECK_EQ(get(&rtc, 0x07), 0x03);
	CHECK_EQ(get(&rtc, 0x00), 0x05);

	/* A second instance is independent (no shared state). */
	struct cmos_rtc other;
	cmos_rtc_init(&other);
	other.now = fake_now;
	CHECK_EQ(get(&other, 0x09), 0x26);
	cmos_rtc_destroy(&other);
	cmos_rtc_destroy(&rtc);
}

TEST(rtc_guest_sets_clock_binary_12h)
{
	struct cmos_rtc rtc;
	/* 2029-06-30 23:59:58 in binary with 12-hour 11 PM. */
	static const uint8_t when[7] = {29, 6, 30, 0x80 | 11, 59, 58, 20};

	rtc_setup(&rtc);
	set(&rtc, 0x0b, 0x04);
	guest_set_clock(&rtc, 0x04, when);
	CHECK_EQ(get(&rtc, 0x04), 0x80 | 11);
	CHECK_EQ(get(&rtc, 0x00), 58);
	fake_time = T0 + 3; /* over midnight into July */
	CHECK_EQ(get(&rtc, 0x00), 1);
	CHECK_EQ(get(&rtc, 0x02), 0);
	CHECK_EQ(get(&rtc, 0x04), 12); /* 12 AM */
	CHECK_EQ(get(&rtc, 0x07), 1);
	CHECK_EQ(get(&rtc, 0x08), 7);
	cmos_rtc_destroy(&rtc);
}

TEST(rtc_guest_sets_12_am_and_pm)
{
	struct cmos_rtc rtc;
	/* 2027-03-04 12:30:00 AM, then 12:30:00 PM, written in BCD 12-hour mode. */
	static const uint8_t am[7] = {0x27, 0x03, 0x04, 0x12, 0x30, 0x00, 0x20};
	static const uint8_t pm[7] = {0x27, 0x03, 0x04, 0x80 | 0x12, 0x30, 0x00, 0x20};

	rtc_setup(&rtc);
	set(&rtc, 0x0b, 0x00);
	guest_set_clock(&rtc, 0x00, am);
	CHECK_EQ(get(&rtc, 0x04), 0x12);
	set(&rtc, 0x0b, 0x02); /* read it back in 24-hour mode */
	CHECK_EQ(get(&rtc, 0x04), 0x00);
	CHECK_EQ(get(&rtc, 0x07), 0x04);

	set(&rtc, 0x0b, 0x00);
	guest_set_clock(&rtc, 0x00, pm);
	CHECK_EQ(get(&rtc, 0x04), 0x80 | 0x12);
	set(&rtc, 0x0b, 0x02);
	CHECK_EQ(get(&rtc, 0x04), 0x12);
	CHECK_EQ(get(&rtc, 0x07), 0x04);
	cmos_rtc_destroy(&rtc);
}

TEST(rtc_set_bit_freezes_time)
{
	struct cmos_rtc rtc;

	rtc_setup(&rtc);
	set(&rtc, 0x0b, 0x82);
	fake_time = T0 + 30;
	CHECK_EQ(get(&rtc, 0x00), 0x12); /* frozen at the moment SET was written */
	set(&rtc, 0x00, 0x40);
	fake_time = T0 + 60;
	CHECK_EQ(get(&rtc, 0x00), 0x40); /* the guest's value, not overwritten */
	CHECK_EQ(get(&rtc, 0x02), 0x11);
	set(&rtc, 0x0b, 0x02); /* committed at host time T0 + 60 as 10:11:40 */
	fake_time = T0 + 65;
	CHECK_EQ(get(&rtc, 0x00), 0x45);
	CHECK_EQ(get(&rtc, 0x02), 0x11);
	cmos_rtc_destroy(&rtc);
}

TEST(rtc_single_field_write_without_set)
{
	struct cmos_rtc rtc;

	rtc_setup(&rtc);
	CHECK_EQ(get(&rtc, 0x04), 0x10); /* read at 10:11:12 */
	fake_time = T0 + 2 * 3600;       /* the host clock is now 12:11:12 */
	set(&rtc, 0x02, 0x30);           /* the guest moves the minutes only */
	CHECK_EQ(get(&rtc, 0x02), 0x30);
	CHECK_EQ(get(&rtc, 0x04), 0x12); /* hours still follow the current time */
	CHECK_EQ(get(&rtc, 0x00), 0x12);
	CHECK_EQ(get(&rtc, 0x07), 0x23);
	cmos_rtc_destroy(&rtc);
}

TEST(rtc_status_registers)
{
	struct cmos_rtc rtc;

	rtc_setup(&rtc);
	/* A: UIP (bit 7) never reads as set, even if the guest writes it. */
	CHECK_EQ(get(&rtc, 0x0a), 0x26);
	set(&rtc, 0x0a, 0xa6);
	CHECK_EQ(get(&rtc, 0x0a), 0x26);
	set(&rtc, 0x0a, 0x2f);
	CHECK_EQ(get(&rtc, 0x0a), 0x2f);

	/* C: interrupt flags, cleared by reading; guest writes ignored. */
	rtc.ram[0x0c] = 0xf0; /* as if the chip had raised flags */
	CHECK_EQ(get(&rtc, 0x0c), 0xf0);
	CHECK_EQ(get(&rtc, 0x0c), 0x00);
	set(&rtc, 0x0c, 0xff);
	CHECK_EQ(get(&rtc, 0x0c), 0x00);

	/* D: valid RAM and time, read-only. */
	CHECK_EQ(get(&rtc, 0x0d), 0x80);
	set(&rtc, 0x0d, 0x00);
	CHECK_EQ(get(&rtc, 0x0d), 0x80);
	cmos_rtc_destroy(&rtc);
}

TEST(rtc_cmos_ram_and_index)
{
	struct cmos_rtc rtc;
	uint8_t v = 0;

	rtc_setup(&rtc);
	set(&rtc, 0x40, 0x5a);
	set(&rtc, 0x7f, 0xa5);
	CHECK_EQ(get(&rtc, 0x40), 0x5a);
	CHECK_EQ(get(&rtc, 0x7f), 0xa5);
	/* Bit 7 of the index is the NMI mask, not part of the address. */
	CHECK_EQ(get(&rtc, 0x80 | 0x40), 0x5a);
	set(&rtc, 0x80 | 0x41, 0x33);
	CHECK_EQ(get(&rtc, 0x41), 0x33);
	/* The index port itself does not read back a register. */
	rtc.io.ops->read(&rtc.io, 0, &v, 1);
	CHECK_EQ(v, 0xff);
	cmos_rtc_destroy(&rtc);
}
