/* test_iobus.c: region table ordering, overlap rules and dispatch of the pio/mmio bus. */
#include <errno.h>

#include "iobus.h"
#include "test.h"
#include "util.h"

/* A device that answers reads with (fill + offset) bytes and records every access. */
struct fake_dev {
	struct io_region io;
	uint8_t fill;
	int reads, writes;
	uint64_t last_off;
	unsigned last_len;
	uint8_t last_data[8];
};

static void fake_read(struct io_region *r, uint64_t off, void *data, unsigned len)
{
	struct fake_dev *d = container_of(r, struct fake_dev, io);
	uint8_t *p = data;

	d->reads++;
	d->last_off = off;
	d->last_len = len;
	for (unsigned i = 0; i < len; i++)
		p[i] = (uint8_t)(d->fill + off + i);
}

static void fake_write(struct io_region *r, uint64_t off, const void *data, unsigned len)
{
	struct fake_dev *d = container_of(r, struct fake_dev, io);

	d->writes++;
	d->last_off = off;
	d->last_len = len;
	memcpy(d->last_data, data, len);
}

static const struct io_region_ops fake_ops = {.read = fake_read, .write = fake_write};

static void fake_init(struct fake_dev *d, uint64_t base, uint64_t len, uint8_t fill)
{
	memset(d, 0, sizeof(*d));
	d->io = (struct io_region){.base = base, .len = len, .name = "fake", .ops = &fake_ops};
	d->fill = fill;
}

static bool bus_sorted(const struct io_bus *bus)
{
	for (size_t i = 1; i < bus->count; i++) {
		const struct io_region *a = bus->regions[i - 1], *b = bus->regions[i];
		if (a->base + a->len > b->base)
			return false;
	}
	return true;
}

TEST(iobus_add_keeps_regions_sorted)
{
	struct io_bus bus;
	struct fake_dev com1, kbd_data, kbd_cmd, rtc, com2;

	io_bus_init(&bus, "pio");
	fake_init(&com1, 0x3f8, 8, 0x10);
	fake_init(&kbd_data, 0x60, 1, 0x20);
	fake_init(&kbd_cmd, 0x64, 1, 0x30);
	fake_init(&rtc, 0x70, 2, 0x40);
	fake_init(&com2, 0x2f8, 8, 0x50);
	/* Added out of order on purpose. */
	CHECK_EQ(io_bus_add(&bus, &com1.io), 0);
	CHECK_EQ(io_bus_add(&bus, &kbd_cmd.io), 0);
	CHECK_EQ(io_bus_add(&bus, &rtc.io), 0);
	CHECK_EQ(io_bus_add(&bus, &kbd_data.io), 0);
	CHECK_EQ(io_bus_add(&bus, &com2.io), 0);
	CHECK_EQ(bus.count, 5);
	CHECK(bus_sorted(&bus));
	CHECK(bus.regions[0] == &kbd_data.io);
	CHECK(bus.regions[4] == &com1.io);

	CHECK(io_bus_find(&bus, 0x60, 1) == &kbd_data.io);
	CHECK(io_bus_find(&bus, 0x64, 1) == &kbd_cmd.io);
	CHECK(io_bus_find(&bus, 0x71, 1) == &rtc.io);
	CHECK(io_bus_find(&bus, 0x2f8, 1) == &com2.io);
	CHECK(io_bus_find(&bus, 0x3f8, 4) == &com1.io);
	CHECK(io_bus_find(&bus, 0x3ff, 1) == &com1.io);
	CHECK(io_bus_find(&bus, 0x3fc, 4) == &com1.io);
	/* Holes between regions and outside them. */
	CHECK(io_bus_find(&bus, 0x0, 1) == NULL);
	CHECK(io_bus_find(&bus, 0x61, 1) == NULL);
	CHECK(io_bus_find(&bus, 0x72, 1) == NULL);
	CHECK(io_bus_find(&bus, 0x3f7, 1) == NULL);
	CHECK(io_bus_find(&bus, 0x400, 1) == NULL);
	CHECK(io_bus_find(&bus, UINT64_MAX, 1) == NULL);
	io_bus_destroy(&bus);
}

TEST(iobus_overlap_rejected)
{
	struct io_bus bus;
	struct fake_dev a, b;

	io_bus_init(&bus, "mmio");
	fake_init(&a, 0x1000, 0x100, 0);
	CHECK_EQ(io_bus_add(&bus, &a.io), 0);

	static const struct {
		uint64_t base, len;
	} overlapping[] = {
	    {0x1000, 0x100},  /* identical */
	    {0x0f00, 0x101},  /* last byte on a's first */
	    {0x10ff, 0x10},   /* first byte on a's last */
	    {0x1080, 0x8},    /* inside */
	    {0x0800, 0x1000}, /* around */
	};
	for (size_t i = 0; i < ARRAY_SIZE(overlapping); i++) {
		fake_init(&b, overlapping[i].base, overlapping[i].len, 0);
		CHECK_EQ(io_bus_add(&bus, &b.io), -EEXIST);
	}
	CHECK_EQ(bus.count, 1);

	/* Touching but not overlapping, on either side. */
	fake_init(&b, 0x0f00, 0x100, 0);
	CHECK_EQ(io_bus_add(&bus, &b.io), 0);
	struct fake_dev c;
	fake_init(&c, 0x1100, 0x100, 0);
	CHECK_EQ(io_bus_add(&bus, &c.io), 0);
	CHECK_EQ(bus.count, 3);
	CHECK(bus_sorted(&bus));
	CHECK(io_bus_find(&bus, 0x0fff, 1) == &b.io);
	CHECK(io_bus_find(&bus, 0x1000, 1) == &a.io);
	CHECK(io_bus_find(&bus, 0x10ff, 1) == &a.io);
	CHECK(io_bus_find(&bus, 0x1100, 1) == &c.io);
	io_bus_destroy(&bus);
}

TEST(iobus_empty_or_wrapping_region_rejected)
{
	struct io_bus bus;
	struct fake_dev a;

	io_bus_init(&bus, "mmio");
	fake_init(&a, 0x1000, 0, 0);
	CHECK_EQ(io_bus_add(&bus, &a.io), -EINVAL);
	fake_init(&a, UINT64_MAX - 3, 8, 0);
	CHECK_EQ(io_bus_add(&bus, &a.io), -EINVAL);
	CHECK_EQ(bus.count, 0);
	io_bus_destroy(&bus);
}

TEST(iobus_straddling_access_not_claimed)
{
	struct io_bus bus;
	struct fake_dev a, b;
	uint8_t buf[8];

	io_bus_init(&bus, "pio");
	fake_init(&a, 0x70, 2, 0xa0);
	fake_init(&b, 0x72, 2, 0xb0);
	CHECK_EQ(io_bus_add(&bus, &a.io), 0);
	CHECK_EQ(io_bus_add(&bus, &b.io), 0);

	CHECK(io_bus_find(&bus, 0x71, 2) == NULL);
	CHECK(io_bus_find(&bus, 0x70, 4) == NULL);
	CHECK(io_bus_find(&bus, 0x6f, 2) == NULL);
	CHECK(io_bus_find(&bus, 0x70, 2) == &a.io);
	CHECK(io_bus_find(&bus, 0x72, 2) == &b.io);
	/* A huge length must not wrap around into "fits". */
	CHECK(io_bus_find(&bus, 0x71, UINT64_MAX) == NULL);

	CHECK(!io_bus_read(&bus, 0x71, buf, 2));
	CHECK(!io_bus_write(&bus, 0x71, buf, 2));
	CHECK_EQ(a.reads + a.writes + b.reads + b.writes, 0);
	io_bus_destroy(&bus);
}

TEST(iobus_dispatch_passes_offset_and_data)
{
	struct io_bus bus;
	struct fake_dev uart;
	uint8_t buf[8];
	uint32_t v = 0x11223344;

	io_bus_init(&bus, "pio");
	fake_init(&uart, 0x3f8, 8, 0x40);
	CHECK_EQ(io_bus_add(&bus, &uart.io), 0);

	memset(buf, 0, sizeof(buf));
	CHECK(io_bus_read(&bus, 0x3fa, buf, 2));
	CHECK_EQ(uart.reads, 1);
	CHECK_EQ(uart.last_off, 2);
	CHECK_EQ(uart.last_len, 2);
	CHECK_EQ(buf[0], 0x42);
	CHECK_EQ(buf[1], 0x43);
	CHECK_EQ(buf[2], 0);

	CHECK(io_bus_write(&bus, 0x3fc, &v, 4));
	CHECK_EQ(uart.writes, 1);
	CHECK_EQ(uart.last_off, 4);
	CHECK_EQ(uart.last_len, 4);
	CHECK_EQ(uart.last_data[0], 0x44);
	CHECK_EQ(uart.last_data[3], 0x11);
	io_bus_destroy(&bus);
}

TEST(iobus_unclaimed_read_floats_high)
{
	struct io_bus bus;
	struct fake_dev a;
	uint8_t buf[8];
	uint64_t v = 0;

	io_bus_init(&bus, "mmio");
	fake_init(&a, 0xfed00000, 0x400, 0);
	CHECK_EQ(io_bus_add(&bus, &a.io), 0);

	memset(buf, 0x5a, sizeof(buf));
	CHECK(!io_bus_read(&bus, 0xfee00000, buf, 4));
	CHECK_EQ(buf[0], 0xff);
	CHECK_EQ(buf[3], 0xff);
	CHECK_EQ(buf[4], 0x5a); /* nothing written past len */
	CHECK(!io_bus_read(&bus, 0, &v, 8));
	CHECK_EQ(v, UINT64_MAX);
	CHECK(!io_bus_write(&bus, 0xfee00000, buf, 4));
	CHECK_EQ(a.reads + a.writes, 0);

	/* An empty bus behaves the same. */
	struct io_bus empty;
	io_bus_init(&empty, "pio");
	buf[0] = 0;
	CHECK(!io_bus_read(&empty, 0x80, buf, 1));
	CHECK_EQ(buf[0], 0xff);
	io_bus_destroy(&empty);
	io_bus_destroy(&bus);
}

TEST(iobus_remove)
{
	struct io_bus bus;
	struct fake_dev a, b, c, stranger;
	uint8_t x = 0;

	io_bus_init(&bus, "pio");
	fake_init(&a, 0x10, 4, 0);
	fake_init(&b, 0x20, 4, 0);
	fake_init(&c, 0x30, 4, 0);
	fake_init(&stranger, 0x40, 4, 0);
	CHECK_EQ(io_bus_add(&bus, &a.io), 0);
	CHECK_EQ(io_bus_add(&bus, &b.io), 0);
	CHECK_EQ(io_bus_add(&bus, &c.io), 0);

	io_bus_remove(&bus, &b.io);
	CHECK_EQ(bus.count, 2);
	CHECK(io_bus_find(&bus, 0x20, 1) == NULL);
	CHECK(!io_bus_read(&bus, 0x21, &x, 1));
	CHECK_EQ(b.reads, 0);
	CHECK(io_bus_find(&bus, 0x10, 1) == &a.io);
	CHECK(io_bus_find(&bus, 0x33, 1) == &c.io);

	io_bus_remove(&bus, &stranger.io); /* never added: no effect */
	CHECK_EQ(bus.count, 2);

	/* The freed range can be claimed again, by something of another size. */
	fake_init(&b, 0x1c, 8, 0);
	CHECK_EQ(io_bus_add(&bus, &b.io), 0);
	CHECK(io_bus_find(&bus, 0x1c, 8) == &b.io);
	CHECK(bus_sorted(&bus));

	io_bus_remove(&bus, &c.io);
	io_bus_remove(&bus, &a.io);
	io_bus_remove(&bus, &b.io);
	CHECK_EQ(bus.count, 0);
	CHECK(io_bus_find(&bus, 0x10, 1) == NULL);
	io_bus_destroy(&bus);
}

TEST(iobus_many_regions)
{
	static struct fake_dev devs[100];
	struct io_bus bus;

	io_bus_init(&bus, "mmio");
	/* Descending bases: every insert goes to the front and the table grows past 16. */
	for (int i = 99; i >= 0; i--) {
		fake_init(&devs[i], 0x100000 + (uint64_t)i * 0x1000, 0x1000, (uint8_t)i);
		CHECK_EQ(io_bus_add(&bus, &devs[i].io), 0);
	}
	CHECK_EQ(bus.count, 100);
	CHECK(bus_sorted(&bus));
	for (int i = 0; i < 100; i++) {
		uint64_t base = 0x100000 + (uint64_t)i * 0x1000;
		uint8_t v = 0;
		CHECK(io_bus_find(&bus, base, 1) == &devs[i].io);
		CHECK(io_bus_find(&bus, base + 0xffc, 4) == &devs[i].io);
		CHECK(io_bus_find(&bus, base + 0xffc, 8) == NULL);
		CHECK(io_bus_read(&bus, base + 3, &v, 1));
		CHECK_EQ(v, (uint8_t)(i + 3));
	}
	CHECK(io_bus_find(&bus, 0xfffff, 1) == NULL);
	CHECK(io_bus_find(&bus, 0x100000 + 100 * 0x1000, 1) == NULL);
	io_bus_destroy(&bus);
}
