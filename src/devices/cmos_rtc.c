/* cmos_rtc.c: MC146818 RTC: time registers computed from the host clock plus a guest offset. */
#include "cmos_rtc.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "snapshot_file.h"
#include "util.h"

enum {
	RTC_SECONDS = 0x00,
	RTC_MINUTES = 0x02,
	RTC_HOURS = 0x04,
	RTC_DAY_OF_WEEK = 0x06,
	RTC_DAY = 0x07,
	RTC_MONTH = 0x08,
	RTC_YEAR = 0x09,
	RTC_REG_A = 0x0a,
	RTC_REG_B = 0x0b,
	RTC_REG_C = 0x0c,
	RTC_REG_D = 0x0d,
	RTC_CENTURY = 0x32,
};

#define REG_B_SET       0x80 /* guest is setting the clock: updates frozen */
#define REG_B_DM_BINARY 0x04
#define REG_B_24H       0x02

static uint8_t to_bcd(unsigned v)
{
	return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static unsigned from_bcd(uint8_t v)
{
	return (v >> 4) * 10 + (v & 0x0f);
}

static uint8_t encode(const struct cmos_rtc *rtc, unsigned v)
{
	return (rtc->ram[RTC_REG_B] & REG_B_DM_BINARY) ? (uint8_t)v : to_bcd(v);
}

static unsigned decode(const struct cmos_rtc *rtc, uint8_t v)
{
	return (rtc->ram[RTC_REG_B] & REG_B_DM_BINARY) ? v : from_bcd(v);
}

/* Fills the time registers from host time + offset. Caller holds the lock. */
static void latch_time(struct cmos_rtc *rtc)
{
	time_t t = rtc->now() + (time_t)rtc->offset;
	struct tm tm;
	unsigned hour;

	gmtime_r(&t, &tm);
	hour = (unsigned)tm.tm_hour;
	rtc->ram[RTC_SECONDS] = encode(rtc, (unsigned)tm.tm_sec);
	rtc->ram[RTC_MINUTES] = encode(rtc, (unsigned)tm.tm_min);
	if (rtc->ram[RTC_REG_B] & REG_B_24H) {
		rtc->ram[RTC_HOURS] = encode(rtc, hour);
	} else {
		unsigned h12 = hour % 12 ? hour % 12 : 12;
		rtc->ram[RTC_HOURS] = (uint8_t)(encode(rtc, h12) | (hour >= 12 ? 0x80 : 0));
	}
	rtc->ram[RTC_DAY_OF_WEEK] = encode(rtc, (unsigned)tm.tm_wday + 1);
	rtc->ram[RTC_DAY] = encode(rtc, (unsigned)tm.tm_mday);
	rtc->ram[RTC_MONTH] = encode(rtc, (unsigned)tm.tm_mon + 1);
	rtc->ram[RTC_YEAR] = encode(rtc, (unsigned)(tm.tm_year + 1900) % 100);
	rtc->ram[RTC_CENTURY] = encode(rtc, (unsigned)(tm.tm_year + 1900) / 100);
}

/* The guest finished setting the clock: remember how far it is from the host's. */
static void commit_time(struct cmos_rtc *rtc)
{
	struct tm tm;
	unsigned hour;
	uint8_t h = rtc->ram[RTC_HOURS];

	memset(&tm, 0, sizeof(tm));
	tm.tm_sec = (int)decode(rtc, rtc->ram[RTC_SECONDS]);
	tm.tm_min = (int)decode(rtc, rtc->ram[RTC_MINUTES]);
	if (rtc->ram[RTC_REG_B] & REG_B_24H) {
		hour = decode(rtc, h);
	} else {
		hour = decode(rtc, h & 0x7f) % 12;
		if (h & 0x80)
			hour += 12;
	}
	tm.tm_hour = (int)hour;
	tm.tm_mday = (int)decode(rtc, rtc->ram[RTC_DAY]);
	tm.tm_mon = (int)decode(rtc, rtc->ram[RTC_MONTH]) - 1;
	tm.tm_year =
	    (int)(decode(rtc, rtc->ram[RTC_CENTURY]) * 100 + decode(rtc, rtc->ram[RTC_YEAR])) -
	    1900;
	if (tm.tm_year < 0)
		tm.tm_year += 100; /* century register never set: assume 20xx */
	rtc->offset = (int64_t)(timegm(&tm) - rtc->now());
}

static bool is_time_reg(uint8_t idx)
{
	return idx <= RTC_YEAR || idx == RTC_CENTURY;
}

static void rtc_read(struct io_region *r, uint64_t off, void *data, unsigned len)
{
	struct cmos_rtc *rtc = container_of(r, struct cmos_rtc, io);
	uint8_t v = 0xff;

	pthread_mutex_lock(&rtc->lock);
	if (off == 1) {
		uint8_t idx = rtc->index;
		if (is_time_reg(idx) && !(rtc->ram[RTC_REG_B] & REG_B_SET))
			latch_time(rtc);
		v = rtc->ram[idx];
		if (idx == RTC_REG_A)
			v &= 0x7f; /* UIP never set: reads are atomic here */
		else if (idx == RTC_REG_C)
			rtc->ram[RTC_REG_C] = 0; /* read-to-clear interrupt flags */
	}
	pthread_mutex_unlock(&rtc->lock);
	memset(data, v, len);
}

static void rtc_write(struct io_region *r, uint64_t off, const void *data, unsigned len)
{
	struct cmos_rtc *rtc = container_of(r, struct cmos_rtc, io);
	uint8_t v = *(const uint8_t *)data;

	(void)len;
	pthread_mutex_lock(&rtc->lock);
	if (off == 0) {
		rtc->index = v & 0x7f; /* bit 7 gates NMI; not modelled */
	} else {
		uint8_t idx = rtc->index;
		switch (idx) {
		case RTC_REG_B: {
			bool was_set = rtc->ram[RTC_REG_B] & REG_B_SET;
			if (!was_set && (v & REG_B_SET))
				latch_time(rtc); /* freeze the current time for the guest to edit */
			rtc->ram[RTC_REG_B] = v;
			if (was_set && !(v & REG_B_SET))
				commit_time(rtc);
			break;
		}
		case RTC_REG_C:
		case RTC_REG_D:
			break; /* read-only */
		case RTC_REG_A:
			rtc->ram[idx] = v & 0x7f;
			break;
		default:
			if (is_time_reg(idx) && !(rtc->ram[RTC_REG_B] & REG_B_SET)) {
				/* The other fields must be the current time, not the last read's.
				 */
				latch_time(rtc);
				rtc->ram[idx] = v;
				commit_time(rtc);
			} else {
				rtc->ram[idx] = v;
			}
			break;
		}
	}
	pthread_mutex_unlock(&rtc->lock);
}

static const struct io_region_ops rtc_ops = {.read = rtc_read, .write = rtc_write};

static time_t host_now(void)
{
	return time(NULL);
}

void cmos_rtc_init(struct cmos_rtc *rtc)
{
	memset(rtc, 0, sizeof(*rtc));
	rtc->io = (struct io_region){
	    .base = CMOS_RTC_PORT, .len = 2, .name = "cmos-rtc", .ops = &rtc_ops};
	pthread_mutex_init(&rtc->lock, NULL);
	rtc->now = host_now;
	rtc->ram[RTC_REG_A] = 0x26; /* 32.768 kHz time base, 1024 Hz periodic rate */
	rtc->ram[RTC_REG_B] = REG_B_24H;
	rtc->ram[RTC_REG_D] = 0x80; /* valid RAM and time: battery good */
}

void cmos_rtc_destroy(struct cmos_rtc *rtc)
{
	pthread_mutex_destroy(&rtc->lock);
}

/* --- snapshot --- */

/* Section "rtc". offset is the signed seconds of struct cmos_rtc, two's complement. */
struct cmos_rtc_state {
	uint8_t index;
	uint8_t pad[7];
	uint64_t offset;
	uint8_t ram[128];
};
_Static_assert(sizeof(struct cmos_rtc_state) == 144, "cmos_rtc_state layout");

#define CMOS_RTC_TAG "rtc"
/*
 * Far beyond any offset a guest can set (years up to 25755 through a binary-mode century
 * register), yet small enough that host time plus it cannot overflow a time_t nor make
 * gmtime_r() fail.
 */
#define CMOS_RTC_MAX_OFFSET (INT64_C(1) << 44)

int cmos_rtc_save(const struct cmos_rtc *rtc, struct snap_writer *w, uint32_t inst)
{
	pthread_mutex_t *lock = (pthread_mutex_t *)&rtc->lock;
	struct cmos_rtc_state st;

	memset(&st, 0, sizeof(st));
	pthread_mutex_lock(lock);
	st.index = rtc->index;
	st.offset = (uint64_t)rtc->offset;
	memcpy(st.ram, rtc->ram, sizeof(st.ram));
	pthread_mutex_unlock(lock);
	return snap_put(w, CMOS_RTC_TAG, inst, &st, sizeof(st));
}

int cmos_rtc_load(struct cmos_rtc *rtc, const struct snap_reader *r, uint32_t inst, char *err,
                  size_t errlen)
{
	struct cmos_rtc_state st;
	int64_t offset;
	int ret = snap_get_exact(r, CMOS_RTC_TAG, inst, &st, sizeof(st), err, errlen);

	if (ret < 0)
		return ret;
	offset = (int64_t)st.offset;
	if (st.index >= sizeof(rtc->ram)) {
		snprintf(err, errlen, "%s: section %s %u: index 0x%x >= 0x%zx", snap_reader_name(r),
		         CMOS_RTC_TAG, inst, st.index, sizeof(rtc->ram));
		return -EINVAL;
	}
	if (offset > CMOS_RTC_MAX_OFFSET || offset < -CMOS_RTC_MAX_OFFSET) {
		snprintf(err, errlen, "%s: section %s %u: offset %lld s from host time is absurd",
		         snap_reader_name(r), CMOS_RTC_TAG, inst, (long long)offset);
		return -EINVAL;
	}
	if (st.ram[RTC_REG_A] & 0x80) {
		snprintf(err, errlen, "%s: section %s %u: register A 0x%x has UIP set",
		         snap_reader_name(r), CMOS_RTC_TAG, inst, st.ram[RTC_REG_A]);
		return -EINVAL;
	}
	pthread_mutex_lock(&rtc->lock);
	rtc->index = st.index;
	rtc->offset = offset;
	memcpy(rtc->ram, st.ram, sizeof(rtc->ram));
	pthread_mutex_unlock(&rtc->lock);
	return 0;
}
