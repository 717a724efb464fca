/* cmos_rtc.h: MC146818 real-time clock and CMOS RAM on ports 0x70-0x71, reporting host UTC time. */
#ifndef VMSTACK_CMOS_RTC_H
#define VMSTACK_CMOS_RTC_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "iobus.h"

#define CMOS_RTC_PORT 0x70

struct snap_writer;
struct snap_reader;

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

/*
 * Snapshot, section "rtc" number `inst`: the index register, the 128 bytes of CMOS RAM
 * and the guest's offset from host time. The clock itself is not frozen: after a restore
 * the guest's time is host time plus the saved offset, so it has moved on by however long
 * the snapshot sat on disk, as a battery-backed RTC does across a power-off (and as the
 * guest expects of a wall clock). Load into a chip fresh from cmos_rtc_init(); returns 0,
 * or -EINVAL/-ENOENT with one line in err naming the section and field (rtc unchanged).
 */
int cmos_rtc_save(const struct cmos_rtc *rtc, struct snap_writer *w, uint32_t inst);
int cmos_rtc_load(struct cmos_rtc *rtc, const struct snap_reader *r, uint32_t inst, char *err,
                  size_t errlen);

#endif
