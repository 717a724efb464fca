/* test_pci.c: PCI bus 0 (config mechanism #1, BARs, capabilities, INTx) and MSI-X, no KVM. */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

#include "iobus.h"
#include "msix.h"
#include "pci.h"
#include "test.h"
#include "util.h"

#define MMIO32_BASE 0xc0000000ull
#define MMIO32_LEN  0x3c000000ull
#define MMIO64_BASE 0x1000000000ull
#define MMIO64_LEN  0x1000000000ull

/* The two address spaces and the bus, as the machine sets them up. */
struct env {
	struct io_bus pio, mmio;
	struct pci_bus bus;
};

static void env_init(struct env *e)
{
	memset(e, 0, sizeof(*e));
	io_bus_init(&e->pio, "pio");
	io_bus_init(&e->mmio, "mmio");
	CHECK_EQ(pci_bus_init(&e->bus, NULL, &e->pio, &e->mmio, MMIO32_BASE, MMIO32_LEN,
	                      MMIO64_BASE, MMIO64_LEN),
	         0);
}

static void env_fini(struct env *e)
{
	pci_bus_destroy(&e->bus);
	io_bus_destroy(&e->pio);
	io_bus_destroy(&e->mmio);
}

static uint32_t cfg_address(unsigned bus, unsigned slot, unsigned fn, unsigned reg)
{
	return 0x80000000u | bus << 16 | slot << 11 | fn << 8 | (reg & 0xfc);
}

static void set_address(struct env *e, uint32_t a)
{
	CHECK(io_bus_write(&e->pio, PCI_CFG_ADDR_PORT, &a, 4));
}

/* A config read the way a guest does it: CONFIG_ADDRESS, then CONFIG_DATA + (reg & 3). */
static uint32_t port_read_fn(struct env *e, unsigned bus, unsigned slot, unsigned fn, unsigned reg,
                             unsigned len)
{
	uint32_t v = 0;

	set_address(e, cfg_address(bus, slot, fn, reg));
	io_bus_read(&e->pio, PCI_CFG_DATA_PORT + (reg & 3), &v, len);
	return v;
}

static uint32_t port_read(struct env *e, unsigned slot, unsigned reg, unsigned len)
{
	return port_read_fn(e, 0, slot, 0, reg, len);
}

static void port_write(struct env *e, unsigned slot, unsigned reg, unsigned len, uint32_t v)
{
	set_address(e, cfg_address(0, slot, 0, reg));
	io_bus_write(&e->pio, PCI_CFG_DATA_PORT + (reg & 3), &v, len);
}

/* --- a test device: three BARs and a log of what the bus told it --- */

struct tdev {
	struct pci_dev pci;
	struct msix *msix; /* set by MSI-X tests */
	unsigned moved_calls;
	unsigned moved_bar;
	uint64_t moved_old;
	bool moved_was_mapped;
	unsigned cfg_written_calls;
};

static void tdev_bar_moved(struct pci_dev *d, unsigned bar, uint64_t old, bool was_mapped)
{
	struct tdev *t = container_of(d, struct tdev, pci);

	t->moved_calls++;
	t->moved_bar = bar;
	t->moved_old = old;
	t->moved_was_mapped = was_mapped;
}

static void tdev_cfg_written(struct pci_dev *d, unsigned off, unsigned len)
{
	struct tdev *t = container_of(d, struct tdev, pci);

	t->cfg_written_calls++;
	if (t->msix)
		msix_cfg_written(t->msix, off, len);
}

static const struct pci_dev_ops tdev_ops = {.bar_moved = tdev_bar_moved,
                                            .cfg_written = tdev_cfg_written};

/* BAR reads return the offset in every byte's low bits: 0xA0 | off. */
static void tbar_read(struct io_region *r, uint64_t off, void *data, unsigned len)
{
	for (unsigned i = 0; i < len; i++)
		((uint8_t *)data)[i] = (uint8_t)(0xa0 | ((off + i) & 0xf));
	(void)r;
}

/* The last BAR write any test device saw (tests run one at a time). */
static struct {
	struct io_region *r;
	uint64_t off;
	uint32_t val;
	unsigned len;
} last_bar_write;

static void tbar_write(struct io_region *r, uint64_t off, const void *data, unsigned len)
{
	uint32_t v = 0;

	memcpy(&v, data, len > 4 ? 4 : len);
	last_bar_write.r = r;
	last_bar_write.off = off;
	last_bar_write.val = v;
	last_bar_write.len = len;
}

static const struct io_region_ops tbar_ops = {.read = tbar_read, .write = tbar_write};

/* BAR0: 32-bit 4 KiB; BAR2: 64-bit prefetchable 16 KiB; BAR4: I/O 32 ports. */
static void tdev_init(struct tdev *t, const char *name, uint64_t bar0_size)
{
	memset(t, 0, sizeof(*t));
	pci_dev_init(&t->pci, name, 0x1234, 0x5678, 0x020000, 3, 0x1234, 0x0001, &tdev_ops);
	pci_dev_set_bar(&t->pci, 0, PCI_BAR_MEM32, false, bar0_size, &tbar_ops);
	pci_dev_set_bar(&t->pci, 2, PCI_BAR_MEM64, true, 0x4000, &tbar_ops);
	pci_dev_set_bar(&t->pci, 4, PCI_BAR_IO, false, 0x20, &tbar_ops);
}

static void tdev_add(struct env *e, struct tdev *t)
{
	CHECK_EQ(pci_bus_add(&e->bus, &t->pci), 0);
}

static void tdev_fini(struct env *e, struct tdev *t)
{
	pci_bus_remove(&e->bus, &t->pci);
	pci_dev_destroy(&t->pci);
}

static uint64_t bar_addr(struct env *e, unsigned slot, unsigned n, bool is64)
{
	uint64_t a = pci_cfg_read(&e->bus, slot, PCI_BAR0 + 4 * n, 4) & ~15u;

	if (is64)
		a |= (uint64_t)pci_cfg_read(&e->bus, slot, PCI_BAR0 + 4 * (n + 1), 4) << 32;
	return a;
}

/* --- tests --- */

TEST(pci_host_bridge_via_ports)
{
	struct env e;

	env_init(&e);
	CHECK_EQ(port_read(&e, 0, PCI_VENDOR_ID, 4), 0x00081b36);
	CHECK_EQ(port_read(&e, 0, PCI_VENDOR_ID, 2), 0x1b36);
	CHECK_EQ(port_read(&e, 0, PCI_DEVICE_ID, 2), 0x0008);
	CHECK_EQ(port_read(&e, 0, PCI_VENDOR_ID + 1, 1), 0x1b);
	/* Class code: base 06 (bridge), sub 00 (host), prog-if 0; revision 0. */
	CHECK_EQ(port_read(&e, 0, PCI_REVISION_ID, 4), 0x06000000);
	CHECK_EQ(port_read(&e, 0, PCI_CLASS_DEVICE, 2), 0x0600);
	CHECK_EQ(port_read(&e, 0, PCI_CLASS_DEVICE + 1, 1), 0x06);
	CHECK_EQ(port_read(&e, 0, PCI_HEADER_TYPE, 1), 0x00);
	CHECK_EQ(port_read(&e, 0, PCI_SUBSYSTEM_VENDOR, 2), 0x1af4);
	/* The same through the direct accessor. */
	CHECK_EQ(pci_cfg_read(&e.bus, 0, PCI_VENDOR_ID, 4), 0x00081b36);
	env_fini(&e);
}

TEST(pci_absent_slot_reads_all_ones)
{
	struct env e;
	uint32_t v;

	env_init(&e);
	CHECK_EQ(port_read(&e, 5, PCI_VENDOR_ID, 4), 0xffffffff);
	CHECK_EQ(port_read(&e, 5, PCI_VENDOR_ID, 2), 0xffff);
	CHECK_EQ(port_read(&e, 31, PCI_CLASS_DEVICE + 1, 1), 0xff);
	CHECK_EQ(pci_cfg_read(&e.bus, 7, 0, 4), 0xffffffff);
	CHECK_EQ(pci_cfg_read(&e.bus, 7, 2, 2), 0xffff);
	CHECK_EQ(pci_cfg_read(&e.bus, 7, 3, 1), 0xff);
	/* Writes to nothing are dropped without harm. */
	port_write(&e, 5, PCI_COMMAND, 2, 0xffff);
	pci_cfg_write(&e.bus, 5, PCI_COMMAND, 2, 0xffff);
	CHECK_EQ(port_read(&e, 5, PCI_COMMAND, 2), 0xffff);
	/* CONFIG_ADDRESS without the enable bit: data reads all-ones, even for the bridge. */
	set_address(&e, cfg_address(0, 0, 0, 0) & ~0x80000000u);
	v = 0;
	io_bus_read(&e.pio, PCI_CFG_DATA_PORT, &v, 4);
	CHECK_EQ(v, 0xffffffff);
	env_fini(&e);
}

TEST(pci_config_address_latch)
{
	struct env e;
	uint32_t a = cfg_address(0, 3, 0, 0x10), v = 0;
	uint8_t b = 0x01;

	env_init(&e);
	set_address(&e, a);
	CHECK(io_bus_read(&e.pio, PCI_CFG_ADDR_PORT, &v, 4));
	CHECK_EQ(v, a);
	/* A byte write to 0xcfb (the mechanism #2 probe) does not touch CONFIG_ADDRESS. */
	CHECK(io_bus_write(&e.pio, PCI_CFG_ADDR_PORT + 3, &b, 1));
	v = 0;
	io_bus_read(&e.pio, PCI_CFG_ADDR_PORT, &v, 4);
	CHECK_EQ(v, a);
	/* Nor does a 16-bit write at 0xcf8. */
	uint16_t w = 0x1234;
	io_bus_write(&e.pio, PCI_CFG_ADDR_PORT, &w, 2);
	v = 0;
	io_bus_read(&e.pio, PCI_CFG_ADDR_PORT, &v, 4);
	CHECK_EQ(v, a);
	/* The latched address is the one CONFIG_DATA uses. */
	set_address(&e, cfg_address(0, 0, 0, 0));
	v = 0;
	io_bus_read(&e.pio, PCI_CFG_DATA_PORT, &v, 4);
	CHECK_EQ(v, 0x00081b36);
	env_fini(&e);
}

TEST(pci_nonzero_function_and_bus_read_all_ones)
{
	struct env e;
	struct tdev t;

	env_init(&e);
	tdev_init(&t, "tdev", 0x1000);
	tdev_add(&e, &t);
	CHECK_EQ(t.pci.slot, 1);
	CHECK_EQ(port_read_fn(&e, 0, 1, 0, 0, 4), 0x56781234);
	for (unsigned fn = 1; fn < 8; fn++)
		CHECK_EQ(port_read_fn(&e, 0, 1, fn, 0, 4), 0xffffffff);
	CHECK_EQ(port_read_fn(&e, 0, 0, 3, 0, 2), 0xffff);
	CHECK_EQ(port_read_fn(&e, 1, 0, 0, 0, 4), 0xffffffff);
	CHECK_EQ(port_read_fn(&e, 1, 1, 0, 0, 4), 0xffffffff);
	CHECK_EQ(port_read_fn(&e, 0xff, 1, 0, 0, 1), 0xff);
	/* Writes there do not reach function 0 of the slot. */
	set_address(&e, cfg_address(0, 1, 1, PCI_INTERRUPT_LINE));
	uint8_t b = 0x55;
	io_bus_write(&e.pio, PCI_CFG_DATA_PORT, &b, 1);
	set_address(&e, cfg_address(2, 1, 0, PCI_INTERRUPT_LINE));
	io_bus_write(&e.pio, PCI_CFG_DATA_PORT, &b, 1);
	CHECK_EQ(port_read(&e, 1, PCI_INTERRUPT_LINE, 1), 17);
	tdev_fini(&e, &t);
	env_fini(&e);
}

TEST(pci_read_only_fields_stay)
{
	struct env e;
	struct tdev t;
	static const unsigned ro[] = {PCI_VENDOR_ID, PCI_REVISION_ID, 0x0c /* ...header type */,
	                              PCI_SUBSYSTEM_VENDOR, PCI_CAP_PTR};
	uint32_t before[2][ARRAY_SIZE(ro)];

	env_init(&e);
	tdev_init(&t, "tdev", 0x1000);
	tdev_add(&e, &t);
	for (unsigned s = 0; s < 2; s++)
		for (unsigned i = 0; i < ARRAY_SIZE(ro); i++)
			before[s][i] = port_read(&e, s, ro[i], 4);
	for (unsigned s = 0; s < 2; s++)
		for (unsigned i = 0; i < ARRAY_SIZE(ro); i++) {
			port_write(&e, s, ro[i], 4, 0xffffffff);
			port_write(&e, s, ro[i], 2, 0);
			port_write(&e, s, ro[i] + 3, 1, 0xa5);
		}
	for (unsigned s = 0; s < 2; s++)
		for (unsigned i = 0; i < ARRAY_SIZE(ro); i++)
			CHECK_EQ(port_read(&e, s, ro[i], 4), before[s][i]);
	CHECK_EQ(port_read(&e, 1, PCI_VENDOR_ID, 4), 0x56781234);
	CHECK_EQ(port_read(&e, 1, PCI_REVISION_ID, 4), 0x02000003);
	CHECK_EQ(port_read(&e, 1, PCI_HEADER_TYPE, 1), 0);
	CHECK_EQ(port_read(&e, 0, PCI_CLASS_DEVICE, 2), 0x0600);
	/* Command: only I/O, memory, master and INTx-disable stick. */
	port_write(&e, 1, PCI_COMMAND, 2, 0xffff);
	CHECK_EQ(port_read(&e, 1, PCI_COMMAND, 2), PCI_COMMAND_IO | PCI_COMMAND_MEMORY |
	                                               PCI_COMMAND_MASTER |
	                                               PCI_COMMAND_INTX_DISABLE);
	/* Status is read-only here (no write-1-to-clear bits are set up). */
	uint32_t st = port_read(&e, 1, PCI_STATUS, 2);
	port_write(&e, 1, PCI_STATUS, 2, 0xffff);
	CHECK_EQ(port_read(&e, 1, PCI_STATUS, 2), st);
	tdev_fini(&e, &t);
	env_fini(&e);
}

TEST(pci_bar_sizing)
{
	struct env e;
	struct tdev t;
	uint32_t bar0, bar2lo, bar2hi, bar4;

	env_init(&e);
	tdev_init(&t, "tdev", 0x1000);
	tdev_add(&e, &t);
	bar0 = port_read(&e, 1, PCI_BAR0, 4);
	bar2lo = port_read(&e, 1, PCI_BAR0 + 8, 4);
	bar2hi = port_read(&e, 1, PCI_BAR0 + 12, 4);
	bar4 = port_read(&e, 1, PCI_BAR0 + 16, 4);
	/* Type bits: BAR0 32-bit memory, BAR2 64-bit prefetchable, BAR4 I/O. */
	CHECK_EQ(bar0 & 0xf, 0);
	CHECK_EQ(bar2lo & 0xf, 0xc);
	CHECK_EQ(bar4 & 0x3, 1);

	/*
	 * As Linux does it: decoding off while sizing, then the old values back. (Command
	 * writes that change I/O decoding go through pci_cfg_write: through the ports they
	 * deadlock, see pci_io_decoding_change_through_ports below.)
	 */
	pci_cfg_write(&e.bus, 1, PCI_COMMAND, 2, 0);
	for (unsigned n = 0; n < 6; n++)
		port_write(&e, 1, PCI_BAR0 + 4 * n, 4, 0xffffffff);
	CHECK_EQ(port_read(&e, 1, PCI_BAR0, 4), 0xfffff000);
	CHECK_EQ(port_read(&e, 1, PCI_BAR0 + 4, 4), 0); /* unimplemented */
	CHECK_EQ(port_read(&e, 1, PCI_BAR0 + 8, 4), 0xffffc00c);
	CHECK_EQ(port_read(&e, 1, PCI_BAR0 + 12, 4), 0xffffffff); /* size < 4 GiB */
	CHECK_EQ(port_read(&e, 1, PCI_BAR0 + 16, 4), 0xffffffe1);
	CHECK_EQ(port_read(&e, 1, PCI_BAR0 + 20, 4), 0);
	/* Nothing decodes at the sizing pattern, and nothing crashed. */
	CHECK(!t.pci.bar[0].mapped && !t.pci.bar[2].mapped && !t.pci.bar[4].mapped);

	port_write(&e, 1, PCI_BAR0, 4, bar0);
	port_write(&e, 1, PCI_BAR0 + 8, 4, bar2lo);
	port_write(&e, 1, PCI_BAR0 + 12, 4, bar2hi);
	port_write(&e, 1, PCI_BAR0 + 16, 4, bar4);
	pci_cfg_write(&e.bus, 1, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_IO);
	CHECK_EQ(port_read(&e, 1, PCI_BAR0, 4), bar0);
	CHECK_EQ(port_read(&e, 1, PCI_BAR0 + 8, 4), bar2lo);
	CHECK_EQ(port_read(&e, 1, PCI_BAR0 + 12, 4), bar2hi);
	CHECK(io_bus_find(&e.mmio, bar0, 4) == &t.pci.bar[0].region);
	CHECK(io_bus_find(&e.mmio, (uint64_t)bar2hi << 32 | (bar2lo & ~15u), 4) ==
	      &t.pci.bar[2].region);
	CHECK(io_bus_find(&e.pio, bar4 & ~3u, 1) == &t.pci.bar[4].region);

	/* A bigger BAR sizes to its own mask. */
	struct tdev t2;
	tdev_init(&t2, "tdev2", 0x100000);
	tdev_add(&e, &t2);
	pci_cfg_write(&e.bus, 2, PCI_COMMAND, 2, 0);
	pci_cfg_write(&e.bus, 2, PCI_BAR0, 4, 0xffffffff);
	CHECK_EQ(pci_cfg_read(&e.bus, 2, PCI_BAR0, 4), 0xfff00000);
	tdev_fini(&e, &t2);
	tdev_fini(&e, &t);
	env_fini(&e);
}

TEST(pci_bar_placement)
{
	struct env e;
	struct tdev a, b;
	uint8_t buf[4];

	env_init(&e);
	tdev_init(&a, "a", 0x1000);
	tdev_init(&b, "b", 0x10000);
	tdev_add(&e, &a);
	tdev_add(&e, &b);
	CHECK_EQ(a.pci.slot, 1);
	CHECK_EQ(b.pci.slot, 2);
	struct tdev *ds[2] = {&a, &b};
	for (unsigned i = 0; i < 2; i++) {
		struct tdev *t = ds[i];
		unsigned s = t->pci.slot;
		uint64_t a0 = bar_addr(&e, s, 0, false), a2 = bar_addr(&e, s, 2, true);
		uint64_t a4 = pci_cfg_read(&e.bus, s, PCI_BAR0 + 16, 4) & ~3u;

		CHECK_EQ(a0 % t->pci.bar[0].size, 0);
		CHECK(a0 >= MMIO32_BASE && a0 + t->pci.bar[0].size <= MMIO32_BASE + MMIO32_LEN);
		CHECK_EQ(a2 % 0x4000, 0);
		CHECK(a2 >= MMIO64_BASE && a2 + 0x4000 <= MMIO64_BASE + MMIO64_LEN);
		CHECK_EQ(a4 % 0x20, 0);
		CHECK(a4 >= 0xc000 && a4 + 0x20 <= 0x10000);
		CHECK(t->pci.bar[0].mapped && t->pci.bar[2].mapped && t->pci.bar[4].mapped);
		CHECK_EQ(t->pci.bar[0].addr, a0);
		CHECK(io_bus_find(&e.mmio, a0, 4) == &t->pci.bar[0].region);
		CHECK(io_bus_find(&e.mmio, a0 + t->pci.bar[0].size - 4, 4) ==
		      &t->pci.bar[0].region);
		CHECK(io_bus_find(&e.mmio, a2, 8) == &t->pci.bar[2].region);
		CHECK(io_bus_find(&e.pio, a4 + 0x1f, 1) == &t->pci.bar[4].region);
		/* pci_bus_add turned decoding on. */
		CHECK(pci_cfg_read(&e.bus, s, PCI_COMMAND, 2) & PCI_COMMAND_MEMORY);
		/* An access at the BAR reaches the device's ops, relative to the BAR. */
		memset(buf, 0, sizeof(buf));
		CHECK(io_bus_read(&e.mmio, a0 + 0x105, buf, 1));
		CHECK_EQ(buf[0], 0xa5);
		uint32_t w = 0xdeadbeef;
		memset(&last_bar_write, 0, sizeof(last_bar_write));
		CHECK(io_bus_write(&e.mmio, a2 + 0x3004, &w, 4));
		CHECK(last_bar_write.r == &t->pci.bar[2].region);
		CHECK_EQ(last_bar_write.off, 0x3004);
		CHECK_EQ(last_bar_write.val, 0xdeadbeef);
		CHECK_EQ(last_bar_write.len, 4);
	}
	/* The two devices' BARs do not overlap. */
	CHECK(a.pci.bar[0].addr + 0x1000 <= b.pci.bar[0].addr ||
	      b.pci.bar[0].addr + 0x10000 <= a.pci.bar[0].addr);
	CHECK(a.pci.bar[2].addr != b.pci.bar[2].addr);
	tdev_fini(&e, &b);
	tdev_fini(&e, &a);
	env_fini(&e);
}

TEST(pci_bar_move)
{
	struct env e;
	struct tdev t;
	uint64_t old0, old2, new0 = 0xd0000000, new2 = 0x1800000000ull;

	env_init(&e);
	tdev_init(&t, "tdev", 0x1000);
	tdev_add(&e, &t);
	old0 = t.pci.bar[0].addr;
	old2 = t.pci.bar[2].addr;

	t.moved_calls = 0;
	port_write(&e, 1, PCI_BAR0, 4, (uint32_t)new0);
	CHECK_EQ(port_read(&e, 1, PCI_BAR0, 4), new0);
	CHECK(io_bus_find(&e.mmio, old0, 4) == NULL);
	CHECK(io_bus_find(&e.mmio, new0, 4) == &t.pci.bar[0].region);
	CHECK_EQ(t.pci.bar[0].region.base, new0);
	CHECK_EQ(t.moved_calls, 1);
	CHECK_EQ(t.moved_bar, 0);
	CHECK_EQ(t.moved_old, old0);
	CHECK(t.moved_was_mapped);
	/* Writing the same address again moves nothing. */
	port_write(&e, 1, PCI_BAR0, 4, (uint32_t)new0);
	CHECK_EQ(t.moved_calls, 1);

	/* 64-bit BAR: low dword then high dword, as a guest does. */
	t.moved_calls = 0;
	port_write(&e, 1, PCI_BAR0 + 8, 4, (uint32_t)new2);
	port_write(&e, 1, PCI_BAR0 + 12, 4, (uint32_t)(new2 >> 32));
	CHECK_EQ(bar_addr(&e, 1, 2, true), new2);
	CHECK(io_bus_find(&e.mmio, old2, 4) == NULL);
	CHECK(io_bus_find(&e.mmio, new2, 4) == &t.pci.bar[2].region);
	CHECK(t.moved_calls >= 1);
	CHECK_EQ(t.moved_bar, 2);
	CHECK(t.pci.bar[2].mapped);
	CHECK_EQ(t.pci.bar[2].addr, new2);

	/* I/O BAR too (not through the ports: see pci_io_decoding_change_through_ports). */
	pci_cfg_write(&e.bus, 1, PCI_BAR0 + 16, 4, 0xe000);
	CHECK(io_bus_find(&e.pio, 0xe000, 4) == &t.pci.bar[4].region);
	tdev_fini(&e, &t);
	env_fini(&e);
}

TEST(pci_command_memory_toggles_decoding)
{
	struct env e;
	struct tdev t;
	uint64_t a0, a2, a4;

	env_init(&e);
	tdev_init(&t, "tdev", 0x1000);
	tdev_add(&e, &t);
	a0 = t.pci.bar[0].addr;
	a2 = t.pci.bar[2].addr;
	a4 = t.pci.bar[4].addr;
	CHECK(io_bus_find(&e.mmio, a0, 4) != NULL);

	t.moved_calls = 0;
	port_write(&e, 1, PCI_COMMAND, 2, PCI_COMMAND_IO);
	CHECK(io_bus_find(&e.mmio, a0, 4) == NULL);
	CHECK(io_bus_find(&e.mmio, a2, 4) == NULL);
	CHECK(io_bus_find(&e.pio, a4, 1) == &t.pci.bar[4].region); /* I/O still on */
	CHECK(!t.pci.bar[0].mapped && !t.pci.bar[2].mapped);
	CHECK_EQ(t.moved_calls, 2);
	CHECK(t.moved_was_mapped);
	/* Accesses there now hit nothing: all-ones. */
	uint32_t v = 0;
	CHECK(!io_bus_read(&e.mmio, a0, &v, 4));
	CHECK_EQ(v, 0xffffffff);
	/* The BAR register itself keeps its value. */
	CHECK_EQ(bar_addr(&e, 1, 0, false), a0);

	port_write(&e, 1, PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
	CHECK(io_bus_find(&e.mmio, a0, 4) == &t.pci.bar[0].region);
	CHECK(io_bus_find(&e.mmio, a2, 4) == &t.pci.bar[2].region);
	CHECK_EQ(t.moved_calls, 4);
	CHECK(!t.moved_was_mapped);

	pci_cfg_write(&e.bus, 1, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
	CHECK(io_bus_find(&e.pio, a4, 1) == NULL);
	CHECK(io_bus_find(&e.mmio, a0, 4) != NULL);
	tdev_fini(&e, &t);
	/* Removal unmapped everything. */
	CHECK(io_bus_find(&e.mmio, a0, 4) == NULL);
	CHECK(io_bus_find(&e.mmio, a2, 4) == NULL);
	env_fini(&e);
}

TEST(pci_bar_overlap_not_mapped)
{
	struct env e;
	struct tdev a, b;

	env_init(&e);
	tdev_init(&a, "a", 0x1000);
	tdev_init(&b, "b", 0x1000);
	tdev_add(&e, &a);
	tdev_add(&e, &b);
	uint64_t aa = a.pci.bar[0].addr, bb = b.pci.bar[0].addr;

	/* b's BAR0 onto a's: b's not decoded, a's untouched. */
	pci_cfg_write(&e.bus, b.pci.slot, PCI_BAR0, 4, (uint32_t)aa);
	CHECK(!b.pci.bar[0].mapped);
	CHECK(a.pci.bar[0].mapped);
	CHECK(io_bus_find(&e.mmio, aa, 4) == &a.pci.bar[0].region);
	CHECK(io_bus_find(&e.mmio, bb, 4) == NULL);
	/* Partial overlap with a 64-bit BAR too. */
	pci_cfg_write(&e.bus, b.pci.slot, PCI_BAR0 + 8, 4, (uint32_t)a.pci.bar[2].addr);
	pci_cfg_write(&e.bus, b.pci.slot, PCI_BAR0 + 12, 4, (uint32_t)(a.pci.bar[2].addr >> 32));
	CHECK(!b.pci.bar[2].mapped);
	CHECK(io_bus_find(&e.mmio, a.pci.bar[2].addr, 4) == &a.pci.bar[2].region);

	/* Moved somewhere free, it decodes again. */
	pci_cfg_write(&e.bus, b.pci.slot, PCI_BAR0, 4, 0xd0000000);
	CHECK(b.pci.bar[0].mapped);
	CHECK(io_bus_find(&e.mmio, 0xd0000000, 4) == &b.pci.bar[0].region);
	tdev_fini(&e, &b);
	tdev_fini(&e, &a);
	CHECK_EQ(e.mmio.count, 0);
	env_fini(&e);
}

/*
 * BUG (src/pci/pci.c bar_update, reached from data_write; src/machine/iobus.c
 * io_bus_write): a guest config write through ports 0xcf8/0xcfc that changes an I/O BAR's
 * decoding (toggling PCI_COMMAND_IO, or writing a new address into an I/O BAR) deadlocks
 * the vCPU thread. io_bus_write() holds the pio bus's rwlock for reading while it calls
 * data_write() -> pci_cfg_write() -> bars_update() -> bar_update(), which calls
 * io_bus_remove()/io_bus_add() on that same pio bus, i.e. pthread_rwlock_wrlock() on a
 * lock this thread already holds for reading: it never returns. (Memory BARs are fine,
 * being on the other bus.) This is how every guest sizes BARs (Linux clears the command
 * register's decode bits first), so any device with an I/O BAR hangs the guest at boot.
 * Expected: the write completes, the I/O BAR is unmapped. Fix: have io_bus_read/write
 * drop the lock before calling the handler (the region's owner outlives its place on the
 * bus), or let pci.c defer I/O-BAR bus updates until after the access returns.
 * The child process does the access so that the test fails instead of hanging.
 * Disabled until fixed.
 */
#if 1
TEST(pci_io_decoding_change_through_ports)
{
	pid_t pid = fork();
	int st = 0;

	CHECK(pid >= 0);
	if (pid == 0) {
		struct env e;
		struct tdev t;
		alarm(5);
		env_init(&e);
		tdev_init(&t, "tdev", 0x1000);
		tdev_add(&e, &t);
		port_write(&e, 1, PCI_COMMAND, 2, PCI_COMMAND_MEMORY); /* I/O decoding off */
		if (io_bus_find(&e.pio, t.pci.bar[4].addr, 1) != NULL)
			_exit(2);
		port_write(&e, 1, PCI_BAR0 + 16, 4, 0xe000);
		port_write(&e, 1, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_IO);
		if (io_bus_find(&e.pio, 0xe000, 1) != &t.pci.bar[4].region)
			_exit(3);
		tdev_fini(&e, &t);
		env_fini(&e);
		_exit(0);
	}
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	CHECK(WIFEXITED(st)); /* killed by SIGALRM: deadlocked */
	CHECK_EQ(WEXITSTATUS(st), 0);
}
#endif

/* Walks the capability list from 0x34; returns how many, ids and offsets in ids[]/offs[]. */
static unsigned walk_caps(struct env *e, unsigned slot, uint8_t *ids, uint8_t *offs, unsigned max)
{
	unsigned n = 0, off = pci_cfg_read(&e->bus, slot, PCI_CAP_PTR, 1);

	while (off && n < max) {
		CHECK(off >= 0x40 && off % 4 == 0);
		ids[n] = (uint8_t)pci_cfg_read(&e->bus, slot, off, 1);
		offs[n] = (uint8_t)off;
		n++;
		off = pci_cfg_read(&e->bus, slot, off + 1, 1);
	}
	return n;
}

TEST(pci_capability_list)
{
	struct env e;
	struct tdev t;
	uint8_t c1[8] = {PCI_CAP_ID_VENDOR, 0x77, 8, 1, 2, 3, 4, 5};
	uint8_t c2[6] = {0x05, 0, 0x11, 0x22, 0x33, 0x44};
	uint8_t w2[6] = {0xff, 0xff, 0x0f, 0, 0xff, 0};
	uint8_t c3[12] = {PCI_CAP_ID_VENDOR, 0, 12};
	uint8_t ids[8], offs[8];
	unsigned o1, o2, o3;

	env_init(&e);
	tdev_init(&t, "tdev", 0x1000);
	CHECK_EQ(pci_cfg16(&t.pci, PCI_STATUS) & PCI_STATUS_CAP_LIST, 0);
	o1 = pci_add_cap(&t.pci, c1, sizeof(c1), NULL);
	o2 = pci_add_cap(&t.pci, c2, sizeof(c2), w2);
	o3 = pci_add_cap(&t.pci, c3, sizeof(c3), NULL);
	tdev_add(&e, &t);
	CHECK_EQ(o1, 0x40);
	CHECK_EQ(o2, 0x48);
	CHECK_EQ(o3, 0x50); /* 0x48 + 6, dword aligned */
	CHECK(pci_cfg_read(&e.bus, 1, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
	CHECK_EQ(walk_caps(&e, 1, ids, offs, 8), 3);
	CHECK_EQ(ids[0], PCI_CAP_ID_VENDOR);
	CHECK_EQ(ids[1], 0x05);
	CHECK_EQ(ids[2], PCI_CAP_ID_VENDOR);
	CHECK_EQ(offs[0], o1);
	CHECK_EQ(offs[1], o2);
	CHECK_EQ(offs[2], o3);
	/* Bodies as given; the next byte is the list's, whatever body[1] said. */
	CHECK_EQ(pci_cfg_read(&e.bus, 1, o1, 4), 0x01080000u | o2 << 8 | PCI_CAP_ID_VENDOR);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, o1 + 4, 4), 0x05040302);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, o3 + 1, 1), 0);
	/* wmask: id and next stay read-only even if the mask said otherwise. */
	pci_cfg_write(&e.bus, 1, o2, 4, 0xffffffff);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, o2, 4), 0x22000000u | 0x1f << 16 | o3 << 8 | 0x05);
	pci_cfg_write(&e.bus, 1, o2 + 2, 1, 0x00);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, o2 + 2, 1), 0x10);
	pci_cfg_write(&e.bus, 1, o2 + 4, 2, 0x0000);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, o2 + 4, 2), 0x4400);
	/* A read-only cap ignores writes. */
	pci_cfg_write(&e.bus, 1, o1 + 4, 4, 0);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, o1 + 4, 4), 0x05040302);
	/* Too short a capability is refused. */
	CHECK_EQ(pci_add_cap(&t.pci, c1, 1, NULL), 0);
	tdev_fini(&e, &t);
	env_fini(&e);
}

/*
 * BUG (src/pci/pci.h, struct pci_dev.cap_end; src/pci/pci.c, pci_add_cap): cap_end is a
 * uint8_t, so when a capability ends within 4 bytes of the end of config space,
 * ALIGN_UP(off + len, 4) == 256 is stored as 0. The next pci_add_cap() then "places" its
 * capability at offset 0, overwriting the vendor/device ids (and the one after at 0x04,
 * the command register) instead of returning 0 untouched. Expected: once the space is
 * full, pci_add_cap returns 0 and changes nothing. Fix: make cap_end an unsigned (or
 * uint16_t), or have pci_add_cap refuse when off < 0x40. Disabled until fixed.
 */
#if 1
TEST(pci_capability_space_full)
{
	struct env e;
	struct tdev t;
	uint8_t big[PCI_CFG_SIZE - 0x40] = {PCI_CAP_ID_VENDOR};
	uint8_t small[4] = {PCI_CAP_ID_VENDOR, 0, 4, 0xee};

	env_init(&e);
	tdev_init(&t, "tdev", 0x1000);
	CHECK_EQ(pci_add_cap(&t.pci, big, sizeof(big), NULL), 0x40);
	CHECK_EQ(pci_add_cap(&t.pci, small, sizeof(small), NULL), 0);
	CHECK_EQ(pci_add_cap(&t.pci, small, sizeof(small), NULL), 0);
	tdev_add(&e, &t);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, PCI_VENDOR_ID, 4), 0x56781234);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, PCI_COMMAND, 2), PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, 0x41, 1), 0);
	tdev_fini(&e, &t);
	env_fini(&e);
}
#endif

TEST(pci_intx_status)
{
	struct env e;
	struct tdev t;

	env_init(&e);
	tdev_init(&t, "tdev", 0x1000);
	tdev_add(&e, &t);
	CHECK_EQ(port_read(&e, 1, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, 0);
	pci_set_intx(&t.pci, true);
	CHECK(port_read(&e, 1, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	CHECK(t.pci.intx);
	/* INTX_DISABLE masks the line, not the status bit. */
	port_write(&e, 1, PCI_COMMAND, 2,
	           PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_INTX_DISABLE);
	CHECK(port_read(&e, 1, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	/* The guest cannot clear it by writing the status register. */
	port_write(&e, 1, PCI_STATUS, 2, 0xffff);
	port_write(&e, 1, PCI_STATUS, 2, 0);
	CHECK(port_read(&e, 1, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	port_write(&e, 1, PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
	CHECK(port_read(&e, 1, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	pci_set_intx(&t.pci, false);
	CHECK_EQ(port_read(&e, 1, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, 0);
	/* Other status bits survive INTx changes. */
	pci_set_intx(&t.pci, true);
	pci_set_intx(&t.pci, false);
	CHECK_EQ(port_read(&e, 1, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, 0);
	tdev_fini(&e, &t);
	env_fini(&e);
}

TEST(pci_interrupt_line_and_pin)
{
	struct env e;
	struct tdev t[10];

	env_init(&e);
	for (unsigned i = 0; i < 10; i++) {
		tdev_init(&t[i], "tdev", 0x1000);
		tdev_add(&e, &t[i]);
	}
	for (unsigned i = 0; i < 10; i++) {
		unsigned s = t[i].pci.slot;
		CHECK_EQ(s, i + 1);
		CHECK_EQ(port_read(&e, s, PCI_INTERRUPT_PIN, 1), 1);
		CHECK_EQ(port_read(&e, s, PCI_INTERRUPT_LINE, 1), 16 + s % 8);
		CHECK_EQ(t[i].pci.gsi, 16 + s % 8);
	}
	/* Line is the guest's scratch register; pin is read-only. */
	port_write(&e, 3, PCI_INTERRUPT_LINE, 1, 0x0b);
	port_write(&e, 3, PCI_INTERRUPT_PIN, 1, 4);
	CHECK_EQ(port_read(&e, 3, PCI_INTERRUPT_LINE, 2), 0x010b);
	CHECK_EQ(t[2].pci.gsi, 16 + 3);
	for (unsigned i = 10; i-- > 0;)
		tdev_fini(&e, &t[i]);
	env_fini(&e);
}

TEST(pci_odd_config_accesses)
{
	struct env e;
	struct tdev t;
	uint8_t snap[PCI_CFG_SIZE];
	uint32_t v;

	env_init(&e);
	tdev_init(&t, "tdev", 0x1000);
	tdev_add(&e, &t);
	memcpy(snap, t.pci.cfg, sizeof(snap));
	CHECK_EQ(pci_cfg_read(&e.bus, 1, 255, 4), 0xffffffff);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, 254, 4), 0xffffffff);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, 256, 1), 0xffffffff);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, 0, 3), 0xffffffff);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, 0, 0), 0xffffffff);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, 0, 8), 0xffffffff);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, 0xffffffffu, 4), 0xffffffff);
	CHECK_EQ(pci_cfg_read(&e.bus, 99, 0, 4), 0xffffffff);
	CHECK_EQ(pci_cfg_read(&e.bus, 1, 255, 1), 0); /* last byte is fine */
	pci_cfg_write(&e.bus, 1, 255, 4, 0xffffffff);
	pci_cfg_write(&e.bus, 1, PCI_INTERRUPT_LINE, 3, 0xffffffff);
	pci_cfg_write(&e.bus, 1, PCI_COMMAND, 0, 0xffffffff);
	pci_cfg_write(&e.bus, 1, 0xfffffffcu, 4, 0xffffffff);
	pci_cfg_write(&e.bus, 99, 0, 4, 0);
	CHECK(memcmp(snap, t.pci.cfg, sizeof(snap)) == 0);
	/* Through the ports: a dword at 0xcfd is not one CONFIG_DATA access. */
	set_address(&e, cfg_address(0, 1, 0, 0));
	v = 0;
	CHECK(!io_bus_read(&e.pio, PCI_CFG_DATA_PORT + 1, &v, 4));
	CHECK_EQ(v, 0xffffffff);
	v = 0;
	CHECK(io_bus_read(&e.pio, PCI_CFG_DATA_PORT + 3, &v, 1));
	CHECK_EQ(v, 0x56);
	v = 0xffffffff;
	io_bus_write(&e.pio, PCI_CFG_DATA_PORT + 2, &v, 4);
	/* Register 0xfc, bytes up to 0xff: at the end of config space, still in range. */
	set_address(&e, cfg_address(0, 1, 0, 0xfc));
	v = 0;
	io_bus_read(&e.pio, PCI_CFG_DATA_PORT + 3, &v, 1);
	CHECK_EQ(v, 0);
	CHECK(memcmp(snap, t.pci.cfg, sizeof(snap)) == 0);
	tdev_fini(&e, &t);
	env_fini(&e);
}

/* --- MSI-X --- */

#define NVEC 4

struct mdev {
	struct env e;
	struct tdev t;
	struct msix x;
	unsigned cap;
};

static void mdev_init(struct mdev *m)
{
	env_init(&m->e);
	tdev_init(&m->t, "msix-dev", 0x1000);
	CHECK_EQ(msix_init(&m->x, &m->t.pci, NULL, NVEC, 0, 0, 0x800), 0);
	m->t.msix = &m->x;
	m->cap = m->x.cap;
	tdev_add(&m->e, &m->t);
}

static void mdev_fini(struct mdev *m)
{
	tdev_fini(&m->e, &m->t);
	msix_destroy(&m->x);
	env_fini(&m->e);
}

static void msix_ctrl(struct mdev *m, uint16_t ctrl)
{
	pci_cfg_write(&m->e.bus, m->t.pci.slot, m->cap + 2, 2, ctrl);
}

static uint32_t tbl_read32(struct mdev *m, uint64_t off)
{
	uint32_t v = 0;

	msix_table_read(&m->x, off, &v, 4);
	return v;
}

static void tbl_write32(struct mdev *m, uint64_t off, uint32_t v)
{
	msix_table_write(&m->x, off, &v, 4);
}

static uint64_t pba(struct mdev *m)
{
	uint64_t v = 0;

	msix_pba_read(&m->x, 0, &v, 8);
	return v;
}

/* Reads (and so resets) the vector's eventfd; the count, 0 if nothing was signalled. */
static uint64_t fd_count(struct mdev *m, unsigned v)
{
	uint64_t n = 0;

	if (read(m->x.vec[v].fd, &n, sizeof(n)) != sizeof(n))
		return 0;
	return n;
}

static void vec_setup(struct mdev *m, unsigned v, bool masked)
{
	tbl_write32(m, v * 16 + 0, 0xfee00000 | v << 12);
	tbl_write32(m, v * 16 + 4, 0);
	tbl_write32(m, v * 16 + 8, 0x40 + v);
	tbl_write32(m, v * 16 + 12, masked);
}

TEST(msix_capability_layout)
{
	struct mdev m;
	uint8_t ids[8], offs[8];
	unsigned n;

	mdev_init(&m);
	n = walk_caps(&m.e, 1, ids, offs, 8);
	CHECK_EQ(n, 1);
	CHECK_EQ(ids[0], PCI_CAP_ID_MSIX);
	CHECK_EQ(offs[0], m.cap);
	CHECK_EQ(pci_cfg_read(&m.e.bus, 1, m.cap + 2, 2), NVEC - 1);
	CHECK_EQ(pci_cfg_read(&m.e.bus, 1, m.cap + 4, 4), 0x000 | 0); /* table: BAR0 + 0 */
	CHECK_EQ(pci_cfg_read(&m.e.bus, 1, m.cap + 8, 4), 0x800 | 0); /* PBA: BAR0 + 0x800 */
	/* Only enable and function mask are writable in Message Control. */
	msix_ctrl(&m, 0xffff);
	CHECK_EQ(pci_cfg_read(&m.e.bus, 1, m.cap + 2, 2),
	         MSIX_CTRL_ENABLE | MSIX_CTRL_FUNC_MASK | (NVEC - 1));
	CHECK(msix_enabled(&m.x));
	pci_cfg_write(&m.e.bus, 1, m.cap + 4, 4, 0xffffffff);
	CHECK_EQ(pci_cfg_read(&m.e.bus, 1, m.cap + 4, 4), 0);
	msix_ctrl(&m, 0);
	CHECK(!msix_enabled(&m.x));
	CHECK_EQ(msix_table_size(NVEC), NVEC * 16);
	CHECK_EQ(msix_pba_size(NVEC), 8);
	CHECK_EQ(msix_pba_size(65), 16);
	mdev_fini(&m);
}

TEST(msix_table_read_back)
{
	struct mdev m;
	uint64_t q;

	mdev_init(&m);
	/* Every vector starts masked. */
	for (unsigned v = 0; v < NVEC; v++)
		CHECK_EQ(tbl_read32(&m, v * 16 + 12) & 1, 1);
	/* Dword writes. */
	tbl_write32(&m, 16 + 0, 0xfee01000);
	tbl_write32(&m, 16 + 4, 0x12345678);
	tbl_write32(&m, 16 + 8, 0x4041);
	CHECK_EQ(tbl_read32(&m, 16 + 0), 0xfee01000);
	CHECK_EQ(tbl_read32(&m, 16 + 4), 0x12345678);
	CHECK_EQ(tbl_read32(&m, 16 + 8), 0x4041);
	CHECK_EQ(tbl_read32(&m, 16 + 12), 1);
	/* Qword accesses, both halves of an entry. */
	q = 0x00000000fee02000ull;
	msix_table_write(&m.x, 32, &q, 8);
	q = 0x0000000100004242ull; /* data 0x4242, masked */
	msix_table_write(&m.x, 40, &q, 8);
	q = 0;
	msix_table_read(&m.x, 32, &q, 8);
	CHECK_EQ(q, 0x00000000fee02000ull);
	msix_table_read(&m.x, 40, &q, 8);
	CHECK_EQ(q, 0x0000000100004242ull);
	CHECK_EQ(tbl_read32(&m, 40), 0x4242);
	/* Only bit 0 of vector control is implemented. */
	tbl_write32(&m, 3 * 16 + 12, 0xfffffffe);
	CHECK_EQ(tbl_read32(&m, 3 * 16 + 12), 0);
	tbl_write32(&m, 3 * 16 + 12, 0xffffffff);
	CHECK_EQ(tbl_read32(&m, 3 * 16 + 12), 1);
	/* Other entries untouched. */
	CHECK_EQ(tbl_read32(&m, 0), 0);
	CHECK_EQ(tbl_read32(&m, 8), 0);
	/* Nothing is pending, nothing fired. */
	CHECK_EQ(pba(&m), 0);
	for (unsigned v = 0; v < NVEC; v++)
		CHECK_EQ(fd_count(&m, v), 0);
	mdev_fini(&m);
}

TEST(msix_masked_vector_pends_then_fires_on_unmask)
{
	struct mdev m;

	mdev_init(&m);
	msix_ctrl(&m, MSIX_CTRL_ENABLE);
	vec_setup(&m, 2, true);
	msix_notify(&m.x, 2);
	CHECK_EQ(pba(&m), 1u << 2);
	CHECK_EQ(fd_count(&m, 2), 0);
	/* The PBA is readable as a dword too. */
	uint32_t lo = 0;
	msix_pba_read(&m.x, 0, &lo, 4);
	CHECK_EQ(lo, 1u << 2);
	/* Unmasking delivers it and clears the pending bit. */
	tbl_write32(&m, 2 * 16 + 12, 0);
	CHECK_EQ(fd_count(&m, 2), 1);
	CHECK_EQ(pba(&m), 0);
	/* Unmasked, a notify goes straight to the eventfd. */
	msix_notify(&m.x, 2);
	msix_notify(&m.x, 2);
	CHECK_EQ(fd_count(&m, 2), 2);
	CHECK_EQ(pba(&m), 0);
	/* Other vectors (still masked) saw nothing. */
	CHECK_EQ(fd_count(&m, 0), 0);
	CHECK_EQ(fd_count(&m, 1), 0);
	CHECK_EQ(fd_count(&m, 3), 0);
	mdev_fini(&m);
}

TEST(msix_function_mask)
{
	struct mdev m;

	mdev_init(&m);
	vec_setup(&m, 1, false);
	msix_ctrl(&m, MSIX_CTRL_ENABLE | MSIX_CTRL_FUNC_MASK);
	msix_notify(&m.x, 1);
	CHECK_EQ(pba(&m), 1u << 1);
	CHECK_EQ(fd_count(&m, 1), 0);
	/* Clearing the function mask delivers what was pending. */
	msix_ctrl(&m, MSIX_CTRL_ENABLE);
	CHECK_EQ(fd_count(&m, 1), 1);
	CHECK_EQ(pba(&m), 0);
	/* A byte write to the upper half of Message Control works too. */
	pci_cfg_write(&m.e.bus, 1, m.cap + 3, 1, (MSIX_CTRL_ENABLE | MSIX_CTRL_FUNC_MASK) >> 8);
	msix_notify(&m.x, 1);
	CHECK_EQ(fd_count(&m, 1), 0);
	pci_cfg_write(&m.e.bus, 1, m.cap + 3, 1, MSIX_CTRL_ENABLE >> 8);
	CHECK_EQ(fd_count(&m, 1), 1);
	mdev_fini(&m);
}

TEST(msix_disabled_records_pending)
{
	struct mdev m;

	mdev_init(&m);
	vec_setup(&m, 0, false);
	vec_setup(&m, 3, false);
	CHECK(!msix_enabled(&m.x));
	msix_notify(&m.x, 0);
	msix_notify(&m.x, 3);
	CHECK_EQ(pba(&m), 1u << 0 | 1u << 3);
	CHECK_EQ(fd_count(&m, 0), 0);
	CHECK_EQ(fd_count(&m, 3), 0);
	msix_ctrl(&m, MSIX_CTRL_ENABLE);
	CHECK_EQ(fd_count(&m, 0), 1);
	CHECK_EQ(fd_count(&m, 3), 1);
	CHECK_EQ(pba(&m), 0);
	mdev_fini(&m);
}

TEST(msix_out_of_range_accesses)
{
	struct mdev m;
	uint32_t v;
	uint16_t h;
	uint64_t q;

	mdev_init(&m);
	msix_ctrl(&m, MSIX_CTRL_ENABLE);
	/* Past the last entry: reads all-ones, writes ignored. */
	CHECK_EQ(tbl_read32(&m, NVEC * 16), 0xffffffff);
	CHECK_EQ(tbl_read32(&m, 0x7fc), 0xffffffff);
	tbl_write32(&m, NVEC * 16 + 12, 0);
	tbl_write32(&m, 0xfffffffffffffff0ull, 0);
	q = 0;
	msix_table_read(&m.x, 0xfffffffffffffff8ull, &q, 8);
	CHECK_EQ(q, ~0ull);
	/* Sub-dword or misaligned accesses: all-ones, ignored. */
	h = 0;
	msix_table_read(&m.x, 12, &h, 2);
	CHECK_EQ(h, 0xffff);
	h = 0;
	msix_table_write(&m.x, 12, &h, 2);
	v = 0;
	msix_table_write(&m.x, 14, &v, 4);
	msix_table_write(&m.x, 4, &q, 8);
	v = 0;
	msix_table_read(&m.x, 2, &v, 4);
	CHECK_EQ(v, 0xffffffff);
	for (unsigned i = 0; i < NVEC; i++)
		CHECK_EQ(tbl_read32(&m, i * 16 + 12), 1);
	CHECK_EQ(tbl_read32(&m, 0), 0);
	/* Out-of-range vectors are a no-op. */
	msix_notify(&m.x, NVEC);
	msix_notify(&m.x, 0xffff);
	CHECK_EQ(pba(&m), 0);
	for (unsigned i = 0; i < NVEC; i++)
		CHECK_EQ(fd_count(&m, i), 0);
	/* PBA beyond the vectors reads zero; odd sizes read zero. */
	q = ~0ull;
	msix_pba_read(&m.x, 8, &q, 8);
	CHECK_EQ(q, 0);
	h = 0xffff;
	msix_pba_read(&m.x, 0, &h, 2);
	CHECK_EQ(h, 0);
	/* Bad parameters to msix_init. */
	struct msix bad;
	CHECK_EQ(msix_init(&bad, &m.t.pci, NULL, 0, 0, 0, 0x800), -EINVAL);
	CHECK_EQ(msix_init(&bad, &m.t.pci, NULL, MSIX_MAX_VEC + 1, 0, 0, 0x800), -EINVAL);
	CHECK_EQ(msix_init(&bad, &m.t.pci, NULL, 1, 0, 4, 0x800), -EINVAL);
	mdev_fini(&m);
}

/* The direct-raise watch (vhost's call fd): told of every change, and the fd offered
 * only while the vector can be raised by writing it. */
struct watch_log {
	struct msix *x;
	unsigned calls;
	int fd[NVEC]; /* msix_direct_fd_locked() as the watch last saw it */
};

static void watch_fn(void *opaque, unsigned v)
{
	struct watch_log *w = opaque;

	w->calls++;
	if (v < NVEC)
		w->fd[v] = msix_direct_fd_locked(w->x, v);
}

TEST(msix_watch_follows_mask_and_enable)
{
	struct mdev m;
	struct watch_log w = {.x = &m.x};

	mdev_init(&m);
	for (unsigned v = 0; v < NVEC; v++)
		w.fd[v] = -2;
	msix_set_watch(&m.x, watch_fn, &w);
	vec_setup(&m, 1, false);
	CHECK(w.calls >= 4);
	CHECK_EQ(w.fd[1], -1); /* MSI-X not enabled yet */
	msix_ctrl(&m, MSIX_CTRL_ENABLE);
	CHECK_EQ(w.fd[1], m.x.vec[1].fd);
	CHECK_EQ(w.fd[2], -1); /* never unmasked */
	tbl_write32(&m, 1 * 16 + 12, 1);
	CHECK_EQ(w.fd[1], -1);
	tbl_write32(&m, 1 * 16 + 12, 0);
	CHECK_EQ(w.fd[1], m.x.vec[1].fd);
	msix_ctrl(&m, MSIX_CTRL_ENABLE | MSIX_CTRL_FUNC_MASK);
	CHECK_EQ(w.fd[1], -1);
	msix_ctrl(&m, MSIX_CTRL_ENABLE);
	CHECK_EQ(w.fd[1], m.x.vec[1].fd);
	msix_lock(&m.x);
	CHECK_EQ(msix_direct_fd_locked(&m.x, NVEC), -1);
	CHECK_EQ(msix_direct_fd_locked(&m.x, 0xffff), -1);
	msix_unlock(&m.x);
	msix_set_watch(&m.x, NULL, NULL);
	unsigned calls = w.calls;
	tbl_write32(&m, 1 * 16 + 12, 1);
	CHECK_EQ(w.calls, calls);
	mdev_fini(&m);
}
