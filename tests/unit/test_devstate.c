/* test_devstate.c: snapshot save/load of the legacy chips; pausing an iothread. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "acpi_pm.h"
#include "cmos_rtc.h"
#include "i8042.h"
#include "iothread.h"
#include "serial8250.h"
#include "state_util.h"
#include "test.h"
#include "util.h"

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* A load that must fail: -EINVAL with a message naming the section and `what`. */
static void expect_bad(int ret, const char *err, const char *section, const char *what)
{
	CHECK_EQ(ret, -EINVAL);
	if (!strstr(err, section) || !strstr(err, what)) {
		fprintf(stderr, "error \"%s\" does not name \"%s\" and \"%s\"\n", err, section,
		        what);
		CHECK(!"error message");
	}
}

/* --- serial8250 --- */

struct irq_rec {
	bool level;
	unsigned calls;
};

static void rec_irq(void *opaque, bool level)
{
	struct irq_rec *r = opaque;

	r->level = level;
	r->calls++;
}

static struct serial8250 *serial_new(struct irq_rec *r)
{
	struct serial8250_callbacks cb = {.set_irq = rec_irq, .opaque = r};

	memset(r, 0, sizeof(*r));
	return serial8250_create(&cb);
}

/* The same register reads on both chips give the same answers. */
static void serial_same(struct serial8250 *a, struct serial8250 *b)
{
	static const unsigned regs[] = {SERIAL8250_IER, SERIAL8250_IIR, SERIAL8250_LCR,
	                                SERIAL8250_MCR, SERIAL8250_LSR, SERIAL8250_MSR,
	                                SERIAL8250_SCR};
	uint8_t lcr = serial8250_read(a, SERIAL8250_LCR);

	for (unsigned i = 0; i < ARRAY_SIZE(regs); i++)
		CHECK_EQ(serial8250_read(a, regs[i]), serial8250_read(b, regs[i]));
	serial8250_write(a, SERIAL8250_LCR, lcr | 0x80);
	serial8250_write(b, SERIAL8250_LCR, lcr | 0x80);
	CHECK_EQ(serial8250_read(a, SERIAL8250_DLL), serial8250_read(b, SERIAL8250_DLL));
	CHECK_EQ(serial8250_read(a, SERIAL8250_DLM), serial8250_read(b, SERIAL8250_DLM));
	serial8250_write(a, SERIAL8250_LCR, lcr);
	serial8250_write(b, SERIAL8250_LCR, lcr);
}

TEST(serial_save_load_roundtrip)
{
	struct irq_rec ra, rb;
	struct serial8250 *a = serial_new(&ra), *b = serial_new(&rb);
	struct snap_writer *w = snap_writer_new();
	struct snap_reader *r;
	char err[256] = "";

	/* 38400 8N1, FIFO on, rx interrupts, OUT2; a string half read; the FIFO wrapped. */
	serial8250_write(a, SERIAL8250_LCR, 0x80);
	serial8250_write(a, SERIAL8250_DLL, 3);
	serial8250_write(a, SERIAL8250_DLM, 0);
	serial8250_write(a, SERIAL8250_LCR, 0x03);
	serial8250_write(a, SERIAL8250_FCR, 0xc1);
	serial8250_write(a, SERIAL8250_SCR, 0x5a);
	serial8250_write(a, SERIAL8250_MCR, 0x0b);
	for (unsigned i = 0; i < 60; i++) {
		uint8_t c = (uint8_t)i;
		CHECK_EQ(serial8250_receive(a, &c, 1), 1);
		CHECK_EQ(serial8250_read(a, SERIAL8250_RBR), c);
	}
	CHECK_EQ(serial8250_receive(a, (const uint8_t *)"hello, world", 12), 12);
	CHECK_EQ(serial8250_read(a, SERIAL8250_RBR), 'h');
	serial8250_write(a, SERIAL8250_IER, 0x05);
	CHECK(ra.level);

	CHECK_EQ(serial8250_save(a, w, 3), 0);
	r = st_reopen(w);
	CHECK_EQ(serial8250_load(b, r, 2, err, sizeof(err)), -ENOENT);
	CHECK_EQ(rb.calls, 0);
	CHECK_EQ(serial8250_load(b, r, 3, err, sizeof(err)), 0);
	/* The line comes up on the new chip's own callback. */
	CHECK_EQ(rb.calls, 1);
	CHECK(rb.level);
	serial_same(a, b);
	for (unsigned i = 1; i < 12; i++) {
		uint8_t ca = serial8250_read(a, SERIAL8250_RBR);
		CHECK_EQ(serial8250_read(b, SERIAL8250_RBR), ca);
		CHECK_EQ(ca, (uint8_t) "hello, world"[i]);
	}
	/* FIFO empty: both lines drop, both chips agree on everything still. */
	CHECK(!ra.level);
	CHECK(!rb.level);
	serial_same(a, b);
	CHECK_EQ(serial8250_rx_room(b), SERIAL8250_RX_FIFO_SIZE);
	snap_reader_free(r);
	snap_writer_free(w);
	serial8250_destroy(a);
	serial8250_destroy(b);
}

TEST(serial_load_rejects_bad_state)
{
	static const struct st_sect list[] = {{"serial", 0}};
	static const struct {
		size_t off;
		uint8_t val;
		const char *what;
	} bad[] = {
	    {0, 0xf0, "IER"},
	    {1, 0x02, "FCR"},
	    {3, 0x20, "MCR"},
	    {7, 0x10, "MSR delta"},
	    {8, 2, "overrun"},
	    {9, 7, "thre_pending"},
	    {10, 0, "irq_level"},
	    {12, 64, "rx FIFO head"},
	    {12, 0xff, "rx FIFO head"},
	    {13, 65, "rx FIFO count"},
	    {13, 0xff, "rx FIFO count"},
	};
	struct irq_rec ra, rb;
	struct serial8250 *a = serial_new(&ra), *b = serial_new(&rb);
	struct snap_writer *w = snap_writer_new();
	struct snap_reader *r, *t;
	char err[256];

	serial8250_write(a, SERIAL8250_MCR, 0x08);
	serial8250_write(a, SERIAL8250_IER, 0x01);
	CHECK_EQ(serial8250_receive(a, (const uint8_t *)"xy", 2), 2);
	CHECK_EQ(serial8250_save(a, w, 0), 0);
	r = st_reopen(w);
	for (unsigned i = 0; i < ARRAY_SIZE(bad); i++) {
		t = st_poke(r, list, 1, "serial", 0, bad[i].off, bad[i].val, 1);
		err[0] = '\0';
		expect_bad(serial8250_load(b, t, 0, err, sizeof(err)), err, "serial 0",
		           bad[i].what);
		snap_reader_free(t);
	}
	t = st_edit(r, list, 1, "serial", 0, 0, NULL, 0, 79);
	expect_bad(serial8250_load(b, t, 0, err, sizeof(err)), err, "serial 0", "79 bytes");
	snap_reader_free(t);
	t = st_edit(r, list, 1, "serial", 0, 0, NULL, 0, 81);
	expect_bad(serial8250_load(b, t, 0, err, sizeof(err)), err, "serial 0", "81 bytes");
	snap_reader_free(t);
	/* Nothing of that reached the chip. */
	CHECK_EQ(rb.calls, 0);
	CHECK_EQ(serial8250_read(b, SERIAL8250_IER), 0);
	CHECK_EQ(serial8250_read(b, SERIAL8250_LSR), 0x60);
	CHECK_EQ(serial8250_load(b, r, 0, err, sizeof(err)), 0);
	CHECK_EQ(serial8250_read(b, SERIAL8250_RBR), 'x');
	snap_reader_free(r);
	snap_writer_free(w);
	serial8250_destroy(a);
	serial8250_destroy(b);
}

/* --- cmos_rtc --- */

static time_t fake_now = 1700000000; /* 2023-11-14 22:13:20 UTC */

static time_t fake_clock(void)
{
	return fake_now;
}

static uint8_t rtc_rd(struct cmos_rtc *rtc, uint8_t idx)
{
	uint8_t v = 0;

	rtc->io.ops->write(&rtc->io, 0, &idx, 1);
	rtc->io.ops->read(&rtc->io, 1, &v, 1);
	return v;
}

static void rtc_wr(struct cmos_rtc *rtc, uint8_t idx, uint8_t v)
{
	rtc->io.ops->write(&rtc->io, 0, &idx, 1);
	rtc->io.ops->write(&rtc->io, 1, &v, 1);
}

TEST(rtc_save_load_roundtrip)
{
	static const struct st_sect list[] = {{"rtc", 0}};
	struct cmos_rtc a, b, c;
	struct snap_writer *w = snap_writer_new();
	struct snap_reader *r, *t;
	char err[256];
	uint8_t idx = 0x40, v;

	cmos_rtc_init(&a);
	cmos_rtc_init(&b);
	cmos_rtc_init(&c);
	a.now = b.now = c.now = fake_clock;
	/* The guest sets the clock to 1999-12-31 23:59:50 (binary mode), and some CMOS RAM. */
	rtc_wr(&a, 0x0b, 0x80 | 0x04 | 0x02);
	rtc_wr(&a, 0x00, 50);
	rtc_wr(&a, 0x02, 59);
	rtc_wr(&a, 0x04, 23);
	rtc_wr(&a, 0x07, 31);
	rtc_wr(&a, 0x08, 12);
	rtc_wr(&a, 0x09, 99);
	rtc_wr(&a, 0x32, 19);
	rtc_wr(&a, 0x0b, 0x04 | 0x02);
	rtc_wr(&a, 0x40, 0x77);
	rtc_wr(&a, 0x7f, 0x12);
	a.io.ops->write(&a.io, 0, &idx, 1);
	CHECK_EQ(cmos_rtc_save(&a, w, 0), 0);
	r = st_reopen(w);
	CHECK_EQ(cmos_rtc_load(&b, r, 0, err, sizeof(err)), 0);
	/* The index register came along: a data read without writing it. */
	v = 0;
	b.io.ops->read(&b.io, 1, &v, 1);
	CHECK_EQ(v, 0x77);
	for (unsigned i = 0; i < 128; i++)
		CHECK_EQ(rtc_rd(&b, (uint8_t)i), rtc_rd(&a, (uint8_t)i));
	CHECK_EQ(rtc_rd(&b, 0x09), 99);
	/* Time moves on for both alike: 11 s later it is 2000. */
	fake_now += 11;
	CHECK_EQ(rtc_rd(&b, 0x09), 0);
	CHECK_EQ(rtc_rd(&b, 0x32), 20);
	for (unsigned i = 0; i < 10; i++)
		CHECK_EQ(rtc_rd(&b, (uint8_t)i), rtc_rd(&a, (uint8_t)i));

	t = st_poke(r, list, 1, "rtc", 0, 0, 0x80, 1);
	expect_bad(cmos_rtc_load(&c, t, 0, err, sizeof(err)), err, "rtc 0", "index");
	snap_reader_free(t);
	t = st_poke(r, list, 1, "rtc", 0, 8, INT64_MAX, 8);
	expect_bad(cmos_rtc_load(&c, t, 0, err, sizeof(err)), err, "rtc 0", "offset");
	snap_reader_free(t);
	t = st_poke(r, list, 1, "rtc", 0, 8, (uint64_t)INT64_MIN, 8);
	expect_bad(cmos_rtc_load(&c, t, 0, err, sizeof(err)), err, "rtc 0", "offset");
	snap_reader_free(t);
	t = st_poke(r, list, 1, "rtc", 0, 16 + 0x0a, 0xa6, 1);
	expect_bad(cmos_rtc_load(&c, t, 0, err, sizeof(err)), err, "rtc 0", "UIP");
	snap_reader_free(t);
	t = st_edit(r, list, 1, "rtc", 0, 0, NULL, 0, 16);
	expect_bad(cmos_rtc_load(&c, t, 0, err, sizeof(err)), err, "rtc 0", "16 bytes");
	snap_reader_free(t);
	CHECK_EQ(rtc_rd(&c, 0x40), 0);
	CHECK_EQ(c.offset, 0);
	snap_reader_free(r);
	snap_writer_free(w);
	cmos_rtc_destroy(&a);
	cmos_rtc_destroy(&b);
	cmos_rtc_destroy(&c);
}

/* --- i8042 --- */

static void count_reset(void *opaque)
{
	(*(unsigned *)opaque)++;
}

static uint8_t kbd_rd(struct io_region *io)
{
	uint8_t v = 0;

	io->ops->read(io, 0, &v, 1);
	return v;
}

static void kbd_wr(struct io_region *io, uint8_t v)
{
	io->ops->write(io, 0, &v, 1);
}

TEST(i8042_save_load_roundtrip)
{
	static const struct st_sect list[] = {{"i8042", 0}};
	unsigned resets_a = 0, resets_b = 0;
	struct i8042_callbacks ca = {.reset = count_reset, .opaque = &resets_a};
	struct i8042_callbacks cb = {.reset = count_reset, .opaque = &resets_b};
	struct i8042 a, b;
	struct snap_writer *w = snap_writer_new();
	struct snap_reader *r, *t;
	char err[256];

	i8042_init(&a, &ca);
	i8042_init(&b, &cb);
	kbd_wr(&a.cmd_io, 0x60); /* write command byte */
	kbd_wr(&a.data_io, 0x47);
	kbd_wr(&a.cmd_io, 0x20); /* read it: output buffer full */
	kbd_wr(&a.cmd_io, 0xd1); /* output port write pending */
	CHECK_EQ(i8042_save(&a, w, 0), 0);
	r = st_reopen(w);

	t = st_poke(r, list, 1, "i8042", 0, 1, 0x55, 1);
	expect_bad(i8042_load(&b, t, 0, err, sizeof(err)), err, "i8042 0", "pending");
	snap_reader_free(t);
	t = st_poke(r, list, 1, "i8042", 0, 3, 2, 1);
	expect_bad(i8042_load(&b, t, 0, err, sizeof(err)), err, "i8042 0", "out_full");
	snap_reader_free(t);
	t = st_edit(r, list, 1, "i8042", 0, 0, NULL, 0, 8);
	expect_bad(i8042_load(&b, t, 0, err, sizeof(err)), err, "i8042 0", "8 bytes");
	snap_reader_free(t);
	CHECK_EQ(kbd_rd(&b.cmd_io) & 1, 0);

	CHECK_EQ(i8042_load(&b, r, 0, err, sizeof(err)), 0);
	CHECK_EQ(kbd_rd(&b.cmd_io), kbd_rd(&a.cmd_io));
	CHECK_EQ(kbd_rd(&b.cmd_io) & 1, 1);
	/* The pending 0xd1 takes the next data byte: bit 0 clear pulses reset, on both. */
	kbd_wr(&a.data_io, 0x00);
	kbd_wr(&b.data_io, 0x00);
	CHECK_EQ(resets_a, 1);
	CHECK_EQ(resets_b, 1);
	CHECK_EQ(kbd_rd(&b.data_io), 0x47);
	CHECK_EQ(kbd_rd(&a.data_io), 0x47);
	CHECK_EQ(kbd_rd(&b.cmd_io), kbd_rd(&a.cmd_io));
	snap_reader_free(r);
	snap_writer_free(w);
	i8042_destroy(&a);
	i8042_destroy(&b);
}

/* --- acpi_pm --- */

struct sci_rec {
	bool level;
	unsigned calls;
};

static void rec_sci(void *opaque, bool level)
{
	struct sci_rec *s = opaque;

	s->level = level;
	s->calls++;
}

static uint32_t pm_rd(struct acpi_pm *pm, uint64_t off, unsigned len)
{
	uint8_t b[4] = {0};

	pm->io.ops->read(&pm->io, off, b, len);
	return get_le32(b);
}

static void pm_wr(struct acpi_pm *pm, uint64_t off, uint32_t v, unsigned len)
{
	uint8_t b[4];

	put_le32(b, v);
	pm->io.ops->write(&pm->io, off, b, len);
}

TEST(acpi_pm_save_load_roundtrip)
{
	static const struct st_sect list[] = {{"acpi-pm", 0}};
	struct sci_rec sa = {0}, sb = {0};
	struct acpi_pm_callbacks ca = {.sci = rec_sci, .opaque = &sa};
	struct acpi_pm_callbacks cb = {.sci = rec_sci, .opaque = &sb};
	struct acpi_pm a, b;
	struct snap_writer *w = snap_writer_new();
	struct snap_reader *r, *t;
	char err[256];
	uint32_t ta, tb;

	CHECK_EQ(acpi_pm_init(&a, 0x600, &ca), 0);
	CHECK_EQ(acpi_pm_init(&b, 0x600, &cb), 0);
	pm_wr(&a, ACPI_PM_EVT_OFF + 2, ACPI_PM1_STS_PWRBTN, 2);
	pm_wr(&a, ACPI_PM_CNT_OFF, 3u << ACPI_PM1_CNT_SLP_TYP_SHIFT, 2);
	acpi_pm_power_button(&a);
	CHECK(sa.level);
	sleep_ms(20);
	ta = pm_rd(&a, ACPI_PM_TMR_OFF, 4);
	CHECK_EQ(acpi_pm_save(&a, w, 0), 0);
	r = st_reopen(w);

	t = st_poke(r, list, 1, "acpi-pm", 0, 0, 0x0101, 2);
	expect_bad(acpi_pm_load(&b, t, 0, err, sizeof(err)), err, "acpi-pm 0", "status");
	snap_reader_free(t);
	t = st_poke(r, list, 1, "acpi-pm", 0, 4, ACPI_PM1_CNT_SLP_EN, 2);
	expect_bad(acpi_pm_load(&b, t, 0, err, sizeof(err)), err, "acpi-pm 0", "control");
	snap_reader_free(t);
	t = st_poke(r, list, 1, "acpi-pm", 0, 16, 0, 1);
	expect_bad(acpi_pm_load(&b, t, 0, err, sizeof(err)), err, "acpi-pm 0", "SCI level");
	snap_reader_free(t);
	t = st_edit(r, list, 1, "acpi-pm", 0, 0, NULL, 0, 12);
	expect_bad(acpi_pm_load(&b, t, 0, err, sizeof(err)), err, "acpi-pm 0", "12 bytes");
	snap_reader_free(t);
	CHECK_EQ(sb.calls, 0);

	CHECK_EQ(acpi_pm_load(&b, r, 0, err, sizeof(err)), 0);
	/* The timer resumes where it stopped (not where a is now, after the file I/O). */
	tb = pm_rd(&b, ACPI_PM_TMR_OFF, 4);
	CHECK(((tb - ta) & ACPI_PM_TMR_MASK) < ACPI_PM_TMR_HZ / 20);
	CHECK(ta >= ACPI_PM_TMR_HZ / 100); /* the 20 ms before the save */
	CHECK_EQ(sb.calls, 1);
	CHECK(sb.level);
	CHECK_EQ(pm_rd(&b, ACPI_PM_EVT_OFF, 4), pm_rd(&a, ACPI_PM_EVT_OFF, 4));
	CHECK_EQ(pm_rd(&b, ACPI_PM_CNT_OFF, 2), pm_rd(&a, ACPI_PM_CNT_OFF, 2));
	/* The OS acknowledges the button: the SCI drops on both. */
	pm_wr(&a, ACPI_PM_EVT_OFF, ACPI_PM1_STS_PWRBTN, 2);
	pm_wr(&b, ACPI_PM_EVT_OFF, ACPI_PM1_STS_PWRBTN, 2);
	CHECK(!sa.level);
	CHECK(!sb.level);
	CHECK_EQ(pm_rd(&b, ACPI_PM_EVT_OFF, 4), pm_rd(&a, ACPI_PM_EVT_OFF, 4));
	snap_reader_free(r);
	snap_writer_free(w);
	acpi_pm_destroy(&a);
	acpi_pm_destroy(&b);
}

/* --- iothread pause --- */

struct pause_ctx {
	int fd, slow_fd;
	atomic_uint count;
	atomic_bool slow_started, slow_finished;
	pthread_t call_thread;
};

static void on_event(void *opaque, uint32_t events)
{
	struct pause_ctx *c = opaque;
	uint64_t n;

	(void)events;
	if (read(c->fd, &n, sizeof(n)) == sizeof(n))
		atomic_fetch_add(&c->count, 1);
}

static void on_slow(void *opaque, uint32_t events)
{
	struct pause_ctx *c = opaque;
	uint64_t n;

	(void)events;
	if (read(c->slow_fd, &n, sizeof(n)) != sizeof(n))
		return;
	atomic_store(&c->slow_started, true);
	sleep_ms(100);
	atomic_store(&c->slow_finished, true);
}

static void note_thread(void *opaque)
{
	struct pause_ctx *c = opaque;

	c->call_thread = pthread_self();
}

static void kick(int fd)
{
	uint64_t one = 1;

	CHECK_EQ(write(fd, &one, sizeof(one)), sizeof(one));
}

static bool wait_count(struct pause_ctx *c, unsigned want)
{
	for (unsigned i = 0; i < 5000 && atomic_load(&c->count) < want; i++)
		sleep_ms(1);
	return atomic_load(&c->count) == want;
}

TEST(iothread_pause_blocks_callbacks_until_resume)
{
	struct iothread *t = iothread_new("t-pause");
	struct pause_ctx c;

	memset(&c, 0, sizeof(c));
	c.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	c.slow_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	CHECK(t != NULL && c.fd >= 0 && c.slow_fd >= 0);
	CHECK_EQ(iothread_add(t, c.fd, EPOLLIN, on_event, &c), 0);
	CHECK_EQ(iothread_add(t, c.slow_fd, EPOLLIN, on_slow, &c), 0);
	CHECK_EQ(iothread_start(t), 0);
	kick(c.fd);
	CHECK(wait_count(&c, 1));

	/* Paused: the event waits, then runs after the resume. */
	iothread_pause(t);
	kick(c.fd);
	sleep_ms(50);
	CHECK_EQ(atomic_load(&c.count), 1);
	/* A call meanwhile still runs, on the loop thread, and lets no callback in. */
	iothread_call(t, note_thread, &c);
	CHECK(!pthread_equal(c.call_thread, pthread_self()));
	sleep_ms(20);
	CHECK_EQ(atomic_load(&c.count), 1);
	iothread_resume(t);
	CHECK(wait_count(&c, 2));

	/* Pauses nest. */
	iothread_pause(t);
	iothread_pause(t);
	iothread_resume(t);
	kick(c.fd);
	sleep_ms(50);
	CHECK_EQ(atomic_load(&c.count), 2);
	iothread_resume(t);
	CHECK(wait_count(&c, 3));

	/* A pause waits for the callback that is running, never stops inside it. */
	kick(c.slow_fd);
	for (unsigned i = 0; i < 5000 && !atomic_load(&c.slow_started); i++)
		sleep_ms(1);
	CHECK(atomic_load(&c.slow_started));
	iothread_pause(t);
	CHECK(atomic_load(&c.slow_finished));
	iothread_resume(t);

	/* Freeing a paused thread does not hang. */
	iothread_pause(t);
	iothread_free(t);
	close(c.fd);
	close(c.slow_fd);
}
