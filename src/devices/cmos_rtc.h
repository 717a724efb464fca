/* cmos_rtc.h: MC146818 real-time clock and CMOS RAM on ports 0x70-0x71, reporting host UTC time. */
#ifndef VMSTACK_CMOS_RTC_H
#define VMSTACK_CMOS_RTC_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "iobus.h"

#define CMOS_RTC_PORT 0x70

struct cmos_rtc {
	struct io_region io; /* base 0x70, len 2 */
	pthread_mutex_t lock;
	uint8_t index;
	uint8_t ram[128];
	int64_t offset;      /* guest wall clock minus host wall clock, in seconds */
	time_t (*now)(void); /* host clock; replaceable by unit tests */
};

/* Initialises the chip; the caller adds &rtc->io to its port bus. */
void cmos_rtc_init(struct cmos_rtc *rtc);
void cmos_rtc_destroy(struct cmos_rtc *rtc);

#endif
