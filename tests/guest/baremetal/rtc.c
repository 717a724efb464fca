/* rtc.c: reads the MC146818 CMOS clock on ports 0x70/0x71 and checks the fields. */
#include "lib.h"

#define CMOS_INDEX 0x70
#define CMOS_DATA  0x71

#define RTC_SEC     0x00
#define RTC_MIN     0x02
#define RTC_HOUR    0x04
#define RTC_MDAY    0x07
#define RTC_MON     0x08
#define RTC_YEAR    0x09
#define RTC_REG_A   0x0a
#define RTC_REG_B   0x0b
#define RTC_CENTURY 0x32 /* the ACPI FADT's usual century index */

#define REG_A_UIP    0x80
#define REG_B_24H    0x02
#define REG_B_BINARY 0x04

struct rtc_raw {
	uint8_t sec, min, hour, mday, mon, year, century;
};

static uint8_t cmos_read(uint8_t index)
{
	outb(CMOS_INDEX, index); /* bit 7 clear: NMI stays enabled, as Linux leaves it */
	return inb(CMOS_DATA);
}

static bool wait_not_uip(void)
{
	uint64_t end = pmtimer_us() + 1100000; /* an update cycle comes once a second */

	while (cmos_read(RTC_REG_A) & REG_A_UIP) {
		if (pmtimer_us() > end)
			return false;
	}
	return true;
}

static void read_raw(struct rtc_raw *r)
{
	r->sec = cmos_read(RTC_SEC);
	r->min = cmos_read(RTC_MIN);
	r->hour = cmos_read(RTC_HOUR);
	r->mday = cmos_read(RTC_MDAY);
	r->mon = cmos_read(RTC_MON);
	r->year = cmos_read(RTC_YEAR);
	r->century = cmos_read(RTC_CENTURY);
}

static bool valid_bcd(uint8_t v)
{
	return (v & 0x0f) <= 9 && (v >> 4) <= 9;
}

static unsigned bcd(uint8_t v)
{
	return (v >> 4) * 10 + (v & 0x0f);
}

/* Decodes one field; false if it is not valid BCD (in BCD mode). */
static bool field(uint8_t raw, bool binary, unsigned *out)
{
	if (binary) {
		*out = raw;
		return true;
	}
	*out = bcd(raw);
	return valid_bcd(raw);
}

void guest_main(struct boot_params *bp)
{
	struct rtc_raw a, b;
	unsigned sec, min, hour, mday, mon, year, century;
	uint8_t reg_b;
	bool binary, pm = false, ok = true;
	int tries;

	(void)bp;
	/* Read until two consecutive snapshots agree, so no field straddles an update. */
	for (tries = 0; tries < 5; tries++) {
		if (!wait_not_uip())
			fail("register A UIP stays set for over a second");
		read_raw(&a);
		if (!wait_not_uip())
			fail("register A UIP stays set for over a second");
		read_raw(&b);
		if (memcmp(&a, &b, sizeof(a)) == 0)
			break;
	}
	if (tries == 5)
		fail("time changes between every two reads");

	reg_b = cmos_read(RTC_REG_B);
	binary = reg_b & REG_B_BINARY;
	print("rtc: register A %02x B %02x (%s, %s)\n", cmos_read(RTC_REG_A), reg_b,
	      binary ? "binary" : "BCD", (reg_b & REG_B_24H) ? "24h" : "12h");
	print("rtc: raw %02x-%02x-%02x %02x:%02x:%02x century %02x\n", a.year, a.mon, a.mday,
	      a.hour, a.min, a.sec, a.century);

	if (!(reg_b & REG_B_24H)) {
		pm = a.hour & 0x80;
		a.hour &= 0x7f;
	}
	ok &= field(a.sec, binary, &sec);
	ok &= field(a.min, binary, &min);
	ok &= field(a.hour, binary, &hour);
	ok &= field(a.mday, binary, &mday);
	ok &= field(a.mon, binary, &mon);
	ok &= field(a.year, binary, &year);
	if (!ok)
		fail("a time field is not valid BCD");
	if (!(reg_b & REG_B_24H)) {
		if (hour < 1 || hour > 12)
			fail("12-hour clock hour out of range");
		hour = hour % 12 + (pm ? 12 : 0);
	}
	century = 20;
	if (a.century != 0 && a.century != 0xff) {
		if (!field(a.century, binary, &century) || century < 19 || century > 99)
			fail("century register 0x32 holds an invalid value");
	}
	year += century * 100;

	print("rtc: %04u-%02u-%02u %02u:%02u:%02u\n", year, mon, mday, hour, min, sec);
	if (sec > 59 || min > 59 || hour > 23)
		fail("time of day out of range");
	if (mon < 1 || mon > 12 || mday < 1 || mday > 31)
		fail("date out of range");
	if (year < 2020)
		fail("year before 2020");
	pass();
}
