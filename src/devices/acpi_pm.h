/* acpi_pm.h: ACPI fixed hardware in port space: PM1 event/control, PM timer, reset register. */
#ifndef VMSTACK_ACPI_PM_H
#define VMSTACK_ACPI_PM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "acpi.h"
#include "iobus.h"
#include "log.h"

struct snap_writer;
struct snap_reader;

/*
 * What the guest asks of the machine. Either pointer may be NULL. They run on the vCPU
 * thread that made the request, without the device lock held, so they may call back into
 * acpi_pm; they should only record the request and let the vCPU loop act on it.
 */
struct acpi_pm_callbacks {
	void (*poweroff)(void *opaque); /* SLP_EN written with SLP_TYP = S5 */
	void (*reset)(void *opaque);    /* ACPI_RESET_VALUE written to the reset register */
	/* The SCI line's new level (status & enable of an event bit). Called with the device
	 * lock held, in order: it must only raise/lower the interrupt line. */
	void (*sci)(void *opaque, bool level);
	void *opaque;
};

/*
 * The register block described in acpi.h, ACPI_PM_LEN ports at `base` (what the FADT's
 * pm_base says). Registers take 1-, 2- and 4-byte accesses at any offset; an access
 * spanning two registers touches both. Bytes that are no register read as 0.
 *
 * Only S5 is a sleep state here. A request for another one is refused with a rate-limited
 * warning and answered by setting WAK_STS, as if the machine had woken at once, so an OS
 * waiting for the wake cannot hang. The one event is the fixed-feature power button
 * (acpi_pm_power_button): PWRBTN_STS, and the SCI while PWRBTN_EN is set, until the OS
 * writes 1 to clear it. The timer's TMR_STS is not modelled.
 */
struct acpi_pm {
	struct io_region io; /* base, ACPI_PM_LEN ports, name "acpi-pm" */
	pthread_mutex_t lock;
	uint16_t status;   /* PM1 status, write 1 to clear */
	uint16_t enable;   /* PM1 enable, stored only */
	uint16_t control;  /* PM1 control without the write-only SLP_EN and GBL_RLS */
	uint64_t start_ns; /* CLOCK_MONOTONIC at init: the PM timer counts from here */
	bool sci_level;    /* what was last passed to cb.sci */
	struct acpi_pm_callbacks cb;
	struct ratelimit warn_rl;
};

/* Fills in pm; the caller then adds &pm->io to its port bus. cb may be NULL. Returns 0 or -errno.
 */
int acpi_pm_init(struct acpi_pm *pm, uint16_t base, const struct acpi_pm_callbacks *cb);
/* A press of the power button (what QMP's system_powerdown does): the OS sees PWRBTN_STS
 * and, if it enabled the event, an SCI; an ACPI OS then shuts down in order. */
void acpi_pm_power_button(struct acpi_pm *pm);
/* After the caller has removed &pm->io from its bus. */
void acpi_pm_destroy(struct acpi_pm *pm);

/*
 * Snapshot, section "acpi-pm" number `inst`: PM1 status, enable and control, the PM
 * timer's count (as nanoseconds of its clock: it resumes from there, so the guest sees no
 * jump, as with its other clocks across a snapshot) and the SCI level. Load into a block
 * fresh from acpi_pm_init(); the SCI is raised again through cb.sci if it was. Returns 0,
 * or -EINVAL/-ENOENT with one line in err naming the section and field (pm unchanged).
 */
int acpi_pm_save(const struct acpi_pm *pm, struct snap_writer *w, uint32_t inst);
int acpi_pm_load(struct acpi_pm *pm, const struct snap_reader *r, uint32_t inst, char *err,
                 size_t errlen);

#endif
