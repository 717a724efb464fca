/* test_acpi_pm.c: the PM1 registers, PM timer and reset register as the guest sees them. */
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "acpi_pm.h"
#include "test.h"

struct calls {
	struct acpi_pm *pm;
	int poweroffs, resets;
	int lock_was_free;
};

static void on_poweroff(void *opaque)
{
	struct calls *c = opaque;

	c->poweroffs++;
	if (pthread_mutex_trylock(&c->pm->lock) == 0) {
		c->lock_was_free++;
		pthread_mutex_unlock(&c->pm->lock);
	}
}

static void on_reset(void *opaque)
{
	struct calls *c = opaque;

	c->resets++;
	if (pthread_mutex_trylock(&c->pm->lock) == 0) {
		c->lock_was_free++;
		pthread_mutex_unlock(&c->pm->lock);
	}
}

static void setup(struct acpi_pm *pm, struct calls *c)
{
	struct acpi_pm_callbacks cb = {.poweroff = on_poweroff, .reset = on_reset, .opaque = c};

	memset(c, 0, sizeof(*c));
	c->pm = pm;
	CHECK_EQ(acpi_pm_init(pm, 0x600, &cb), 0);
	CHECK_EQ(pm->io.base, 0x600);
	CHECK_EQ(pm->io.len, 16);
	CHECK_STR(pm->io.name, "acpi-pm");
}

static uint32_t rd(struct acpi_pm *pm, uint64_t off, unsigned len)
{
	uint8_t b[4] = {0};

	pm->io.ops->read(&pm->io, off, b, len);
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void wr(struct acpi_pm *pm, uint64_t off, uint32_t v, unsigned len)
{
	uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};

	pm->io.ops->write(&pm->io, off, b, len);
}

#define SLP(typ) ((uint32_t)(typ) << ACPI_PM1_CNT_SLP_TYP_SHIFT)

TEST(acpi_pm_poweroff_needs_slp_en_and_s5)
{
	struct acpi_pm pm;
	struct calls c;

	setup(&pm, &c);
	/* ACPICA writes SLP_TYP first, then SLP_TYP | SLP_EN. */
	wr(&pm, ACPI_PM_CNT_OFF, SLP(ACPI_SLP_TYP_S5), 2);
	CHECK_EQ(c.poweroffs, 0);
	wr(&pm, ACPI_PM_CNT_OFF, SLP(3) | ACPI_PM1_CNT_SLP_EN, 2);
	CHECK_EQ(c.poweroffs, 0);
	wr(&pm, ACPI_PM_CNT_OFF, SLP(0) | ACPI_PM1_CNT_SLP_EN, 2);
	CHECK_EQ(c.poweroffs, 0);
	wr(&pm, ACPI_PM_CNT_OFF, SLP(ACPI_SLP_TYP_S5) | ACPI_PM1_CNT_SLP_EN, 2);
	CHECK_EQ(c.poweroffs, 1);
	CHECK_EQ(c.resets, 0);
	CHECK_EQ(c.lock_was_free, 1);
	acpi_pm_destroy(&pm);
}

TEST(acpi_pm_poweroff_by_byte_and_dword_writes)
{
	struct acpi_pm pm;
	struct calls c;

	setup(&pm, &c);
	/* SLP_TYP and SLP_EN both live in the high byte. */
	wr(&pm, ACPI_PM_CNT_OFF + 1, (SLP(ACPI_SLP_TYP_S5) | ACPI_PM1_CNT_SLP_EN) >> 8, 1);
	CHECK_EQ(c.poweroffs, 1);
	/* A write to the low byte alone keeps the stored SLP_TYP but sets no SLP_EN. */
	wr(&pm, ACPI_PM_CNT_OFF, 0x01, 1);
	CHECK_EQ(c.poweroffs, 1);
	/* A 32-bit write at +4 covers the control register and the unused bytes after it. */
	wr(&pm, ACPI_PM_CNT_OFF, SLP(ACPI_SLP_TYP_S5) | ACPI_PM1_CNT_SLP_EN, 4);
	CHECK_EQ(c.poweroffs, 2);
	acpi_pm_destroy(&pm);
}

TEST(acpi_pm_control_reads_back)
{
	struct acpi_pm pm;
	struct calls c;

	setup(&pm, &c);
	CHECK_EQ(rd(&pm, ACPI_PM_CNT_OFF, 2), ACPI_PM1_CNT_SCI_EN);
	wr(&pm, ACPI_PM_CNT_OFF, 0, 2); /* SCI_EN cannot be cleared */
	CHECK_EQ(rd(&pm, ACPI_PM_CNT_OFF, 2), ACPI_PM1_CNT_SCI_EN);
	CHECK_EQ(rd(&pm, ACPI_PM_CNT_OFF, 1), ACPI_PM1_CNT_SCI_EN);
	/* SLP_TYP is kept, SLP_EN and GBL_RLS are write-only. */
	wr(&pm, ACPI_PM_CNT_OFF, SLP(2) | ACPI_PM1_CNT_SLP_EN | ACPI_PM1_CNT_GBL_RLS, 2);
	CHECK_EQ(rd(&pm, ACPI_PM_CNT_OFF, 2), SLP(2) | ACPI_PM1_CNT_SCI_EN);
	CHECK_EQ(rd(&pm, ACPI_PM_CNT_OFF + 1, 1), SLP(2) >> 8);
	acpi_pm_destroy(&pm);
}

TEST(acpi_pm_status_write_one_to_clear)
{
	struct acpi_pm pm;
	struct calls c;

	setup(&pm, &c);
	CHECK_EQ(rd(&pm, ACPI_PM_EVT_OFF, 2), 0);
	/* A refused sleep request reports an immediate wake. */
	wr(&pm, ACPI_PM_CNT_OFF, SLP(1) | ACPI_PM1_CNT_SLP_EN, 2);
	CHECK_EQ(rd(&pm, ACPI_PM_EVT_OFF, 2), ACPI_PM1_STS_WAK);
	wr(&pm, ACPI_PM_EVT_OFF, 0, 2); /* writing 0 changes nothing */
	wr(&pm, ACPI_PM_EVT_OFF, 0x7fff, 2);
	CHECK_EQ(rd(&pm, ACPI_PM_EVT_OFF, 2), ACPI_PM1_STS_WAK);
	CHECK_EQ(rd(&pm, ACPI_PM_EVT_OFF + 1, 1), ACPI_PM1_STS_WAK >> 8);
	wr(&pm, ACPI_PM_EVT_OFF + 1, ACPI_PM1_STS_WAK >> 8, 1);
	CHECK_EQ(rd(&pm, ACPI_PM_EVT_OFF, 2), 0);

	/* Again, cleared by a 16-bit write; the enable register is separate. */
	wr(&pm, ACPI_PM_CNT_OFF, SLP(3) | ACPI_PM1_CNT_SLP_EN, 2);
	wr(&pm, ACPI_PM_EVT_OFF + 2, ACPI_PM1_STS_PWRBTN, 2);
	CHECK_EQ(rd(&pm, ACPI_PM_EVT_OFF, 4), ACPI_PM1_STS_WAK | ACPI_PM1_STS_PWRBTN << 16);
	wr(&pm, ACPI_PM_EVT_OFF, ACPI_PM1_STS_WAK, 2);
	CHECK_EQ(rd(&pm, ACPI_PM_EVT_OFF, 2), 0);
	CHECK_EQ(rd(&pm, ACPI_PM_EVT_OFF + 2, 2), ACPI_PM1_STS_PWRBTN);
	acpi_pm_destroy(&pm);
}

TEST(acpi_pm_enable_register)
{
	struct acpi_pm pm;
	struct calls c;

	setup(&pm, &c);
	wr(&pm, ACPI_PM_EVT_OFF + 2, 0x0521, 2);
	CHECK_EQ(rd(&pm, ACPI_PM_EVT_OFF + 2, 2), 0x0521);
	wr(&pm, ACPI_PM_EVT_OFF + 3, 0x01, 1);
	CHECK_EQ(rd(&pm, ACPI_PM_EVT_OFF + 2, 2), 0x0121);
	acpi_pm_destroy(&pm);
}

TEST(acpi_pm_reset)
{
	struct acpi_pm pm;
	struct calls c;

	setup(&pm, &c);
	wr(&pm, ACPI_PM_RESET_OFF, 2, 1);
	CHECK_EQ(c.resets, 0);
	wr(&pm, ACPI_PM_RESET_OFF, ACPI_RESET_VALUE, 1);
	CHECK_EQ(c.resets, 1);
	CHECK_EQ(c.poweroffs, 0);
	CHECK_EQ(c.lock_was_free, 1);
	CHECK_EQ(rd(&pm, ACPI_PM_RESET_OFF, 1), 0);
	acpi_pm_destroy(&pm);
}

TEST(acpi_pm_timer)
{
	struct acpi_pm pm;
	struct calls c;
	struct timespec ms = {.tv_nsec = 2000000};
	uint32_t a, b, delta;

	setup(&pm, &c);
	a = rd(&pm, ACPI_PM_TMR_OFF, 4);
	nanosleep(&ms, NULL);
	b = rd(&pm, ACPI_PM_TMR_OFF, 4);
	CHECK(a <= ACPI_PM_TMR_MASK);
	CHECK(b <= ACPI_PM_TMR_MASK);
	delta = (b - a) & ACPI_PM_TMR_MASK;
	/* 2 ms is about 7159 ticks; allow a slow, loaded machine. */
	CHECK(delta >= 7000);
	CHECK(delta < ACPI_PM_TMR_HZ);
	CHECK_EQ(rd(&pm, ACPI_PM_TMR_OFF + 3, 1), 0);
	/* Writes to the timer are ignored. */
	wr(&pm, ACPI_PM_TMR_OFF, 0, 4);
	CHECK(((rd(&pm, ACPI_PM_TMR_OFF, 4) - b) & ACPI_PM_TMR_MASK) < ACPI_PM_TMR_HZ);
	acpi_pm_destroy(&pm);
}

TEST(acpi_pm_bad_accesses)
{
	struct acpi_pm pm;
	struct calls c;
	uint8_t b[8];

	setup(&pm, &c);
	memset(b, 0, sizeof(b));
	pm.io.ops->read(&pm.io, 14, b, 4); /* runs past the block */
	CHECK_EQ(b[0], 0xff);
	CHECK_EQ(b[3], 0xff);
	pm.io.ops->read(&pm.io, 0, b, 8); /* wider than any register access */
	CHECK_EQ(b[7], 0xff);
	b[0] = ACPI_RESET_VALUE;
	pm.io.ops->write(&pm.io, 12, b, 8);
	pm.io.ops->write(&pm.io, 100, b, 1);
	CHECK_EQ(c.resets, 0);
	/* Unused bytes read as zero. */
	CHECK_EQ(rd(&pm, 6, 2), 0);
	CHECK_EQ(rd(&pm, 13, 2), 0);
	acpi_pm_destroy(&pm);
}

TEST(acpi_pm_no_callbacks)
{
	struct acpi_pm pm;

	CHECK_EQ(acpi_pm_init(&pm, 0xfff8, NULL), -EINVAL);
	CHECK_EQ(acpi_pm_init(&pm, 0x600, NULL), 0);
	wr(&pm, ACPI_PM_CNT_OFF, SLP(ACPI_SLP_TYP_S5) | ACPI_PM1_CNT_SLP_EN, 2);
	wr(&pm, ACPI_PM_RESET_OFF, ACPI_RESET_VALUE, 1);
	acpi_pm_destroy(&pm);
}

struct sci_log {
	int changes;
	bool level;
};

static void on_sci(void *opaque, bool level)
{
	struct sci_log *l = opaque;

	l->changes++;
	l->level = level;
}

/* The power button sets PWRBTN_STS; the SCI follows status & enable, and clearing the
 * status (write 1) or the enable bit lowers it. */
TEST(power_button_raises_sci_while_enabled)
{
	struct sci_log l = {0};
	struct acpi_pm_callbacks cb = {.sci = on_sci, .opaque = &l};
	struct acpi_pm pm;

	CHECK_EQ(acpi_pm_init(&pm, 0x600, &cb), 0);
	acpi_pm_power_button(&pm);
	CHECK_EQ(rd(&pm, 0, 2) & (1u << 8), 1u << 8);
	CHECK_EQ(l.changes, 0); /* not enabled: no SCI */
	wr(&pm, 0, 1u << 8, 2); /* clear */
	CHECK_EQ(rd(&pm, 0, 2) & (1u << 8), 0);

	wr(&pm, 2, 1u << 8, 2); /* PWRBTN_EN */
	CHECK_EQ(rd(&pm, 2, 2), 1u << 8);
	acpi_pm_power_button(&pm);
	CHECK(l.level);
	CHECK_EQ(l.changes, 1);
	acpi_pm_power_button(&pm); /* still pending: no new edge */
	CHECK_EQ(l.changes, 1);
	wr(&pm, 0, 1u << 15, 2); /* clearing another bit leaves it */
	CHECK(l.level);
	wr(&pm, 0, 1u << 8, 2);
	CHECK(!l.level);
	CHECK_EQ(l.changes, 2);

	acpi_pm_power_button(&pm);
	CHECK(l.level);
	wr(&pm, 2, 0, 2); /* disabling the event lowers the line too */
	CHECK(!l.level);
	CHECK_EQ(rd(&pm, 0, 2) & (1u << 8), 1u << 8);
	acpi_pm_destroy(&pm);
}
