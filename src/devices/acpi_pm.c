/* acpi_pm.c: PM1 status/enable/control, the 3.58 MHz PM timer and the reset register. */
#include "acpi_pm.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "snapshot_file.h"
#include "util.h"

#define NSEC_PER_SEC 1000000000ull

static uint64_t acpi_pm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* Counts of the 3.579545 MHz clock since init, wrapped to 24 bits (TMR_VAL_EXT is clear). */
static uint32_t acpi_pm_timer(const struct acpi_pm *pm)
{
	uint64_t ns = acpi_pm_now_ns() - pm->start_ns;
	/* Split so the product cannot overflow however long the machine runs. */
	uint64_t ticks =
	    ns / NSEC_PER_SEC * ACPI_PM_TMR_HZ + ns % NSEC_PER_SEC * ACPI_PM_TMR_HZ / NSEC_PER_SEC;

	return (uint32_t)(ticks & ACPI_PM_TMR_MASK);
}

static uint32_t get_le(const uint8_t *p, unsigned n)
{
	uint32_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static void put_le(uint8_t *p, uint32_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Events that raise the SCI when enabled (the timer's is not modelled). Lock held. */
#define ACPI_PM_SCI_EVENTS ACPI_PM1_STS_PWRBTN

static void acpi_pm_update_sci(struct acpi_pm *pm)
{
	bool level = (pm->status & pm->enable & ACPI_PM_SCI_EVENTS) != 0;

	if (level != pm->sci_level && pm->cb.sci)
		pm->cb.sci(pm->cb.opaque, level);
	pm->sci_level = level;
}

void acpi_pm_power_button(struct acpi_pm *pm)
{
	pthread_mutex_lock(&pm->lock);
	pm->status |= ACPI_PM1_STS_PWRBTN;
	acpi_pm_update_sci(pm);
	pthread_mutex_unlock(&pm->lock);
}

static bool acpi_pm_access_ok(uint64_t off, unsigned len)
{
	return len >= 1 && len <= 4 && off < ACPI_PM_LEN && len <= ACPI_PM_LEN - off;
}

/*
 * Accesses of any size are handled on an image of the whole block: reads copy their
 * bytes out of it, writes land in it alongside a mask of the bytes they cover.
 */
static void acpi_pm_read(struct io_region *r, uint64_t off, void *data, unsigned len)
{
	struct acpi_pm *pm = container_of(r, struct acpi_pm, io);
	uint8_t regs[ACPI_PM_LEN] = {0};

	if (!acpi_pm_access_ok(off, len)) {
		memset(data, 0xff, len);
		return;
	}
	pthread_mutex_lock(&pm->lock);
	put_le(regs + ACPI_PM_EVT_OFF, pm->status, 2);
	put_le(regs + ACPI_PM_EVT_OFF + 2, pm->enable, 2);
	/* SCI_EN reads as set: there is no legacy mode to hand back to. */
	put_le(regs + ACPI_PM_CNT_OFF, pm->control | ACPI_PM1_CNT_SCI_EN, 2);
	pthread_mutex_unlock(&pm->lock);
	if (off < ACPI_PM_TMR_OFF + ACPI_PM_TMR_LEN && off + len > ACPI_PM_TMR_OFF)
		put_le(regs + ACPI_PM_TMR_OFF, acpi_pm_timer(pm), 4);
	memcpy(data, regs + off, len);
}

static void acpi_pm_write(struct io_region *r, uint64_t off, const void *data, unsigned len)
{
	struct acpi_pm *pm = container_of(r, struct acpi_pm, io);
	uint8_t val[ACPI_PM_LEN] = {0}, mask[ACPI_PM_LEN] = {0};
	uint16_t m, v;
	bool poweroff = false, reset = false;

	if (!acpi_pm_access_ok(off, len))
		return;
	memcpy(val + off, data, len);
	memset(mask + off, 0xff, len);

	pthread_mutex_lock(&pm->lock);
	m = (uint16_t)get_le(mask + ACPI_PM_EVT_OFF, 2);
	pm->status &= (uint16_t) ~(get_le(val + ACPI_PM_EVT_OFF, 2) & m);

	m = (uint16_t)get_le(mask + ACPI_PM_EVT_OFF + 2, 2);
	v = (uint16_t)get_le(val + ACPI_PM_EVT_OFF + 2, 2);
	pm->enable = (uint16_t)((pm->enable & ~m) | (v & m));

	m = (uint16_t)get_le(mask + ACPI_PM_CNT_OFF, 2);
	if (m) {
		uint16_t cnt;
		unsigned slp_typ;

		v = (uint16_t)get_le(val + ACPI_PM_CNT_OFF, 2) & m;
		cnt = (uint16_t)((pm->control & ~m) | v);
		slp_typ = (cnt & ACPI_PM1_CNT_SLP_TYP_MASK) >> ACPI_PM1_CNT_SLP_TYP_SHIFT;
		if (v & ACPI_PM1_CNT_SLP_EN) {
			if (slp_typ == ACPI_SLP_TYP_S5) {
				poweroff = true;
			} else {
				log_ratelimited(&pm->warn_rl, LOG_WARN,
				                "%s: guest asked for sleep type %u, only S5 (%u) "
				                "is supported; waking at once",
				                pm->io.name, slp_typ, ACPI_SLP_TYP_S5);
				pm->status |= ACPI_PM1_STS_WAK;
			}
		}
		pm->control = cnt & (uint16_t) ~(ACPI_PM1_CNT_SLP_EN | ACPI_PM1_CNT_GBL_RLS);
	}

	if (mask[ACPI_PM_RESET_OFF] && val[ACPI_PM_RESET_OFF] == ACPI_RESET_VALUE)
		reset = true;
	acpi_pm_update_sci(pm);
	pthread_mutex_unlock(&pm->lock);

	if (poweroff && pm->cb.poweroff)
		pm->cb.poweroff(pm->cb.opaque);
	if (reset && pm->cb.reset)
		pm->cb.reset(pm->cb.opaque);
}

static const struct io_region_ops acpi_pm_ops = {
    .read = acpi_pm_read,
    .write = acpi_pm_write,
};

int acpi_pm_init(struct acpi_pm *pm, uint16_t base, const struct acpi_pm_callbacks *cb)
{
	int err;

	memset(pm, 0, sizeof(*pm));
	if ((uint32_t)base + ACPI_PM_LEN > 0x10000)
		return -EINVAL;
	err = pthread_mutex_init(&pm->lock, NULL);
	if (err)
		return -err;
	pm->io.base = base;
	pm->io.len = ACPI_PM_LEN;
	pm->io.name = "acpi-pm";
	pm->io.ops = &acpi_pm_ops;
	if (cb)
		pm->cb = *cb;
	pm->warn_rl.interval_ms = 5000;
	pm->warn_rl.burst = 5;
	pm->start_ns = acpi_pm_now_ns();
	return 0;
}

void acpi_pm_destroy(struct acpi_pm *pm)
{
	pthread_mutex_destroy(&pm->lock);
}

/* --- snapshot --- */

/* Section "acpi-pm". timer_ns: nanoseconds the PM timer had counted (before wrapping). */
struct acpi_pm_state {
	uint16_t status, enable, control, pad0;
	uint64_t timer_ns;
	uint8_t sci_level;
	uint8_t pad1[7];
};
_Static_assert(sizeof(struct acpi_pm_state) == 24, "acpi_pm_state layout");

#define ACPI_PM_TAG "acpi-pm"
/* Status bits this model ever sets (writes only clear them). */
#define ACPI_PM_STS_MODELLED (ACPI_PM1_STS_PWRBTN | ACPI_PM1_STS_WAK)

int acpi_pm_save(const struct acpi_pm *pm, struct snap_writer *w, uint32_t inst)
{
	pthread_mutex_t *lock = (pthread_mutex_t *)&pm->lock;
	struct acpi_pm_state st;

	memset(&st, 0, sizeof(st));
	pthread_mutex_lock(lock);
	st.status = pm->status;
	st.enable = pm->enable;
	st.control = pm->control;
	st.sci_level = pm->sci_level;
	pthread_mutex_unlock(lock);
	st.timer_ns = acpi_pm_now_ns() - pm->start_ns;
	return snap_put(w, ACPI_PM_TAG, inst, &st, sizeof(st));
}

int acpi_pm_load(struct acpi_pm *pm, const struct snap_reader *r, uint32_t inst, char *err,
                 size_t errlen)
{
	struct acpi_pm_state st;
	const char *field = NULL;
	unsigned val = 0;
	int ret = snap_get_exact(r, ACPI_PM_TAG, inst, &st, sizeof(st), err, errlen);

	if (ret < 0)
		return ret;
	if (st.status & ~ACPI_PM_STS_MODELLED) {
		field = "PM1 status";
		val = st.status;
	} else if (st.control & (ACPI_PM1_CNT_SLP_EN | ACPI_PM1_CNT_GBL_RLS)) {
		field = "PM1 control (write-only bits set)";
		val = st.control;
	} else if (st.sci_level != ((st.status & st.enable & ACPI_PM_SCI_EVENTS) != 0)) {
		field = "SCI level (not what status and enable imply)";
		val = st.sci_level;
	}
	if (field) {
		snprintf(err, errlen, "%s: section %s %u: %s 0x%x out of range",
		         snap_reader_name(r), ACPI_PM_TAG, inst, field, val);
		return -EINVAL;
	}
	pthread_mutex_lock(&pm->lock);
	pm->status = st.status;
	pm->enable = st.enable;
	pm->control = st.control;
	/* Wraps for a count longer than this host's uptime: the subtraction in
	 * acpi_pm_timer() wraps back, so the timer still resumes at timer_ns. */
	pm->start_ns = acpi_pm_now_ns() - st.timer_ns;
	acpi_pm_update_sci(pm); /* raises the SCI again if it was */
	pthread_mutex_unlock(&pm->lock);
	return 0;
}
