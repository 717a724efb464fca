/* test_pci_state.c: snapshot save/load of PCI functions (config space, BARs) and MSI-X. */
#include <errno.h>
#include <stdbool.h>
#include <unistd.h>

#include "iobus.h"
#include "msix.h"
#include "pci.h"
#include "state_util.h"
#include "test.h"
#include "util.h"

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

/* --- PCI function --- */

#define MMIO32_BASE 0xc0000000ull
#define MMIO32_LEN  0x3c000000ull
#define MMIO64_BASE 0x1000000000ull
#define MMIO64_LEN  0x1000000000ull

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

/* BAR0 32-bit 4 KiB (MSI-X table at 0, PBA at 0x800), BAR2 64-bit 16 KiB, BAR4 32 ports. */
struct tdev {
	struct pci_dev pci;
	struct msix x;
	bool has_msix;
	unsigned moved;
};

static void tdev_bar_moved(struct pci_dev *d, unsigned bar, uint64_t old, bool was_mapped)
{
	(void)bar;
	(void)old;
	(void)was_mapped;
	container_of(d, struct tdev, pci)->moved++;
}

static void tdev_cfg_written(struct pci_dev *d, unsigned off, unsigned len)
{
	struct tdev *t = container_of(d, struct tdev, pci);

	if (t->has_msix)
		msix_cfg_written(&t->x, off, len);
}

static const struct pci_dev_ops tdev_ops = {.bar_moved = tdev_bar_moved,
                                            .cfg_written = tdev_cfg_written};

/* BAR2 and BAR4 read 0xA0 | offset in each byte; BAR0 is the MSI-X table if there is one. */
static void tbar_read(struct io_region *r, uint64_t off, void *data, unsigned len)
{
	(void)r;
	for (unsigned i = 0; i < len; i++)
		((uint8_t *)data)[i] = (uint8_t)(0xa0 | ((off + i) & 0xf));
}

static void tbar_write(struct io_region *r, uint64_t off, const void *data, unsigned len)
{
	(void)r;
	(void)off;
	(void)data;
	(void)len;
}

static void tbar0_read(struct io_region *r, uint64_t off, void *data, unsigned len)
{
	struct tdev *t = container_of(r, struct tdev, pci.bar[0].region);

	if (!t->has_msix)
		tbar_read(r, off, data, len);
	else if (off < 0x800)
		msix_table_read(&t->x, off, data, len);
	else
		msix_pba_read(&t->x, off - 0x800, data, len);
}

static void tbar0_write(struct io_region *r, uint64_t off, const void *data, unsigned len)
{
	struct tdev *t = container_of(r, struct tdev, pci.bar[0].region);

	if (t->has_msix && off < 0x800)
		msix_table_write(&t->x, off, data, len);
}

static const struct io_region_ops tbar_ops = {.read = tbar_read, .write = tbar_write};
static const struct io_region_ops tbar0_ops = {.read = tbar0_read, .write = tbar0_write};

static void tdev_new(struct env *e, struct tdev *t, bool with_msix)
{
	memset(t, 0, sizeof(*t));
	pci_dev_init(&t->pci, "tdev", 0x1234, 0x5678, 0x020000, 3, 0x1234, 0x0001, &tdev_ops);
	pci_dev_set_bar(&t->pci, 0, PCI_BAR_MEM32, false, 0x1000, &tbar0_ops);
	pci_dev_set_bar(&t->pci, 2, PCI_BAR_MEM64, true, 0x4000, &tbar_ops);
	pci_dev_set_bar(&t->pci, 4, PCI_BAR_IO, false, 0x20, &tbar_ops);
	if (with_msix) {
		CHECK_EQ(msix_init(&t->x, &t->pci, NULL, 4, 0, 0, 0x800), 0);
		t->has_msix = true;
	}
	CHECK_EQ(pci_bus_add(&e->bus, &t->pci), 0);
}

static void tdev_free(struct env *e, struct tdev *t)
{
	pci_bus_remove(&e->bus, &t->pci);
	if (t->has_msix)
		msix_destroy(&t->x);
	pci_dev_destroy(&t->pci);
}

static void cfg_same(struct env *ea, struct tdev *a, struct env *eb, struct tdev *b)
{
	for (unsigned off = 0; off < PCI_CFG_SIZE; off += 4)
		CHECK_EQ(pci_cfg_read(&eb->bus, b->pci.slot, off, 4),
		         pci_cfg_read(&ea->bus, a->pci.slot, off, 4));
}

TEST(pci_save_load_maps_bars_as_programmed)
{
	struct env ea, eb;
	struct tdev a, b;
	struct snap_writer *w = snap_writer_new();
	struct snap_reader *r;
	char err[256] = "";
	uint64_t v = 0;
	unsigned s;

	env_init(&ea);
	env_init(&eb);
	tdev_new(&ea, &a, false);
	tdev_new(&eb, &b, false);
	s = a.pci.slot;
	/* The guest moves BAR2 and the I/O BAR, sets the line, turns on bus mastering. */
	pci_cfg_write(&ea.bus, s, PCI_BAR0 + 8, 4, 0x00000000);
	pci_cfg_write(&ea.bus, s, PCI_BAR0 + 12, 4, 0x20);
	pci_cfg_write(&ea.bus, s, PCI_BAR0 + 16, 4, 0xd000);
	pci_cfg_write(&ea.bus, s, PCI_INTERRUPT_LINE, 1, 0x0b);
	pci_cfg_write(&ea.bus, s, PCI_COMMAND, 2,
	              PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	pci_set_intx(&a.pci, true);
	CHECK(a.pci.bar[2].mapped && a.pci.bar[2].addr == 0x2000000000ull);
	CHECK_EQ(pci_dev_save(&a.pci, w, 7), 0);
	r = st_reopen(w);
	b.moved = 0;
	CHECK_EQ(pci_dev_load(&b.pci, r, 7, err, sizeof(err)), 0);
	if (err[0])
		fprintf(stderr, "%s\n", err);
	cfg_same(&ea, &a, &eb, &b);
	CHECK(pci_cfg_read(&eb.bus, b.pci.slot, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	CHECK_EQ(pci_cfg_read(&eb.bus, b.pci.slot, PCI_BAR0 + 16, 4), 0xd001);
	/* Decoding where the guest put them: accesses through the buses reach b. */
	CHECK(b.moved >= 2);
	CHECK(io_bus_find(&eb.mmio, 0x2000000000ull, 4) == &b.pci.bar[2].region);
	CHECK(io_bus_read(&eb.mmio, 0x2000000000ull + 5, &v, 1));
	CHECK_EQ(v, 0xa5);
	CHECK(io_bus_read(&eb.pio, 0xd003, &v, 1));
	CHECK_EQ(v, 0xa3);
	CHECK(io_bus_find(&eb.mmio, a.pci.bar[0].addr, 4) == &b.pci.bar[0].region);
	CHECK(io_bus_find(&eb.pio, 0xc000, 1) == NULL);
	snap_reader_free(r);
	snap_writer_free(w);

	/* Memory decoding off: after the load nothing of b is on the MMIO bus. */
	w = snap_writer_new();
	pci_cfg_write(&ea.bus, s, PCI_COMMAND, 2, PCI_COMMAND_IO);
	CHECK_EQ(pci_dev_save(&a.pci, w, 7), 0);
	r = st_reopen(w);
	CHECK_EQ(pci_dev_load(&b.pci, r, 7, err, sizeof(err)), 0);
	CHECK(!b.pci.bar[0].mapped && !b.pci.bar[2].mapped && b.pci.bar[4].mapped);
	CHECK(io_bus_find(&eb.mmio, 0x2000000000ull, 4) == NULL);
	cfg_same(&ea, &a, &eb, &b);
	snap_reader_free(r);
	snap_writer_free(w);
	tdev_free(&ea, &a);
	tdev_free(&eb, &b);
	env_fini(&ea);
	env_fini(&eb);
}

TEST(pci_load_rejects_another_device_and_bad_state)
{
	static const struct st_sect list[] = {{"pci", 0}};
	struct env ea, eb;
	struct tdev a, b, other;
	struct snap_writer *w = snap_writer_new();
	struct snap_reader *r, *t;
	char err[256];

	env_init(&ea);
	env_init(&eb);
	tdev_new(&ea, &a, false);
	tdev_new(&eb, &b, false);
	CHECK_EQ(pci_dev_save(&a.pci, w, 0), 0);
	r = st_reopen(w);
	/* Read-only bytes: ids, revision, header type, capability pointer, BAR type bits. */
	static const struct {
		size_t off;
		uint8_t val;
	} ro[] = {{0, 0x35},    {3, 0x57},    {8, 4},   {0x0e, 0x80},
	          {0x34, 0x40}, {0x10, 0x08}, {0x3d, 2}};
	for (unsigned i = 0; i < ARRAY_SIZE(ro); i++) {
		t = st_poke(r, list, 1, "pci", 0, ro[i].off, ro[i].val, 1);
		expect_bad(pci_dev_load(&b.pci, t, 0, err, sizeof(err)), err, "pci 0",
		           "not the same device");
		snap_reader_free(t);
	}
	t = st_poke(r, list, 1, "pci", 0, 256, 2, 1);
	expect_bad(pci_dev_load(&b.pci, t, 0, err, sizeof(err)), err, "pci 0", "intx");
	snap_reader_free(t);
	t = st_poke(r, list, 1, "pci", 0, 257, 0x02, 1); /* BAR1 does not exist */
	expect_bad(pci_dev_load(&b.pci, t, 0, err, sizeof(err)), err, "pci 0", "BAR1");
	snap_reader_free(t);
	t = st_poke(r, list, 1, "pci", 0, 257, 0x80, 1);
	expect_bad(pci_dev_load(&b.pci, t, 0, err, sizeof(err)), err, "pci 0", "BAR7");
	snap_reader_free(t);
	t = st_edit(r, list, 1, "pci", 0, 0, NULL, 0, 256);
	expect_bad(pci_dev_load(&b.pci, t, 0, err, sizeof(err)), err, "pci 0", "256 bytes");
	snap_reader_free(t);
	CHECK_EQ(pci_cfg_read(&eb.bus, b.pci.slot, PCI_VENDOR_ID, 2), 0x1234);
	snap_reader_free(r);
	snap_writer_free(w);

	/* A BAR that decoded cannot now, for another device sits there: an error. */
	tdev_new(&eb, &other, false);
	pci_cfg_write(&ea.bus, a.pci.slot, PCI_BAR0 + 8, 4, 0);
	pci_cfg_write(&ea.bus, a.pci.slot, PCI_BAR0 + 12, 4, 0x30);
	pci_cfg_write(&eb.bus, other.pci.slot, PCI_BAR0 + 8, 4, 0);
	pci_cfg_write(&eb.bus, other.pci.slot, PCI_BAR0 + 12, 4, 0x30);
	w = snap_writer_new();
	CHECK_EQ(pci_dev_save(&a.pci, w, 0), 0);
	r = st_reopen(w);
	err[0] = '\0';
	expect_bad(pci_dev_load(&b.pci, r, 0, err, sizeof(err)), err, "pci 0", "BAR2");
	snap_reader_free(r);
	snap_writer_free(w);
	tdev_free(&eb, &other);
	tdev_free(&ea, &a);
	tdev_free(&eb, &b);
	env_fini(&ea);
	env_fini(&eb);
}

/* --- MSI-X --- */

static void msix_entry_write(struct env *e, struct tdev *t, unsigned v, uint64_t addr,
                             uint32_t data, bool masked)
{
	uint64_t base = t->pci.bar[0].addr + 16ull * v;
	uint32_t dw[4] = {(uint32_t)addr, (uint32_t)(addr >> 32), data, masked};

	for (unsigned i = 0; i < 4; i++)
		CHECK(io_bus_write(&e->mmio, base + 4 * i, &dw[i], 4));
}

static uint64_t fd_count(int fd)
{
	uint64_t n = 0;

	if (read(fd, &n, sizeof(n)) != sizeof(n))
		return 0;
	return n;
}

TEST(msix_save_load_roundtrip)
{
	struct env ea, eb;
	struct tdev a, b;
	struct snap_writer *w = snap_writer_new();
	struct snap_reader *r;
	char err[256] = "";
	uint64_t qa, qb;

	env_init(&ea);
	env_init(&eb);
	tdev_new(&ea, &a, true);
	tdev_new(&eb, &b, true);
	pci_cfg_write(&ea.bus, a.pci.slot, a.x.cap + 2, 2, MSIX_CTRL_ENABLE);
	msix_entry_write(&ea, &a, 1, 0xfee00000, 0x4041, false);
	msix_entry_write(&ea, &a, 2, 0x1fee01000ull, 0x4042, true);
	msix_entry_write(&ea, &a, 3, 0xfee02000, 0x4043, true);
	msix_notify(&a.x, 2); /* masked: pending */
	msix_notify(&a.x, 1);
	CHECK_EQ(fd_count(a.x.vec[1].fd), 1);
	CHECK_EQ(pci_dev_save(&a.pci, w, 5), 0);
	CHECK_EQ(msix_save(&a.x, w, 5), 0);
	r = st_reopen(w);
	/* MSI-X before its function's config: enable disagrees with Message Control. */
	expect_bad(msix_load(&b.x, r, 5, err, sizeof(err)), err, "msix 5", "Message Control");
	CHECK_EQ(pci_dev_load(&b.pci, r, 5, err, sizeof(err)), 0);
	CHECK_EQ(msix_load(&b.x, r, 5, err, sizeof(err)), 0);
	CHECK(msix_enabled(&b.x));
	for (unsigned off = 0; off < 16 * 4; off += 4) {
		uint32_t va = 0, vb = 0;
		CHECK(io_bus_read(&ea.mmio, a.pci.bar[0].addr + off, &va, 4));
		CHECK(io_bus_read(&eb.mmio, b.pci.bar[0].addr + off, &vb, 4));
		CHECK_EQ(vb, va);
	}
	CHECK(io_bus_read(&ea.mmio, a.pci.bar[0].addr + 0x800, &qa, 8));
	CHECK(io_bus_read(&eb.mmio, b.pci.bar[0].addr + 0x800, &qb, 8));
	CHECK_EQ(qa, 4);
	CHECK_EQ(qb, qa);
	CHECK_EQ(b.x.vec[2].addr_hi, 1);
	/* Behaviour: vector 1 fires, vector 2 fires once unmasked, on both alike. */
	msix_notify(&b.x, 1);
	CHECK_EQ(fd_count(b.x.vec[1].fd), 1);
	CHECK_EQ(fd_count(b.x.vec[2].fd), 0);
	msix_entry_write(&eb, &b, 2, 0x1fee01000ull, 0x4042, false);
	msix_entry_write(&ea, &a, 2, 0x1fee01000ull, 0x4042, false);
	CHECK_EQ(fd_count(b.x.vec[2].fd), 1);
	CHECK_EQ(fd_count(a.x.vec[2].fd), 1);
	snap_reader_free(r);
	snap_writer_free(w);
	tdev_free(&ea, &a);
	tdev_free(&eb, &b);
	env_fini(&ea);
	env_fini(&eb);
}

TEST(msix_load_rejects_bad_state)
{
	static const struct st_sect list[] = {{"pci", 0}, {"msix", 0}};
	static const struct {
		size_t off;
		uint64_t val;
		size_t width;
		const char *what;
	} bad[] = {
	    {0, 5, 2, "not the same device"},
	    {0, 64, 2, "not the same device"},
	    {2, 0, 1, "Message Control"},
	    {2, 2, 1, "enable"},
	    {3, 1, 1, "function mask"},
	    {8, 1ull << 4, 8, "pending"},
	    {8, 1ull << 63, 8, "pending"},
	    {16 + 16 * 1 + 12, 2, 4, "vector 1"},
	    {16 + 16 * 3 + 0, 0xfee00002, 4, "vector 3"},
	    {16 + 16 * 4 + 8, 1, 4, "vector 4"},
	    {16 + 16 * 63 + 12, 1, 4, "vector 63"},
	};
	struct env ea, eb;
	struct tdev a, b;
	struct snap_writer *w = snap_writer_new();
	struct snap_reader *r, *t;
	char err[256];

	env_init(&ea);
	env_init(&eb);
	tdev_new(&ea, &a, true);
	tdev_new(&eb, &b, true);
	pci_cfg_write(&ea.bus, a.pci.slot, a.x.cap + 2, 2, MSIX_CTRL_ENABLE);
	msix_entry_write(&ea, &a, 1, 0xfee00000, 0x4041, false);
	CHECK_EQ(pci_dev_save(&a.pci, w, 0), 0);
	CHECK_EQ(msix_save(&a.x, w, 0), 0);
	r = st_reopen(w);
	CHECK_EQ(pci_dev_load(&b.pci, r, 0, err, sizeof(err)), 0);
	for (unsigned i = 0; i < ARRAY_SIZE(bad); i++) {
		t = st_poke(r, list, 2, "msix", 0, bad[i].off, bad[i].val, bad[i].width);
		err[0] = '\0';
		expect_bad(msix_load(&b.x, t, 0, err, sizeof(err)), err, "msix 0", bad[i].what);
		snap_reader_free(t);
	}
	t = st_edit(r, list, 2, "msix", 0, 0, NULL, 0, 1040 - 16);
	expect_bad(msix_load(&b.x, t, 0, err, sizeof(err)), err, "msix 0", "1024 bytes");
	snap_reader_free(t);
	/* b's table is untouched by all of that. */
	CHECK_EQ(b.x.vec[1].addr_lo, 0);
	CHECK_EQ(b.x.vec[1].ctrl, 1);
	CHECK_EQ(msix_load(&b.x, r, 0, err, sizeof(err)), 0);
	CHECK_EQ(b.x.vec[1].addr_lo, 0xfee00000);
	snap_reader_free(r);
	snap_writer_free(w);
	tdev_free(&ea, &a);
	tdev_free(&eb, &b);
	env_fini(&ea);
	env_fini(&eb);
}

TEST(pci_bus_save_load)
{
	static const struct st_sect list[] = {{"pci-bus", 0}};
	struct env ea, eb;
	struct snap_writer *w = snap_writer_new();
	struct snap_reader *r, *t;
	char err[256] = "";
	uint32_t a = 0x80000000u | 1u << 11 | 0x10, v = 0;

	env_init(&ea);
	env_init(&eb);
	/* The guest latched an address and is about to access CONFIG_DATA. */
	CHECK(io_bus_write(&ea.pio, PCI_CFG_ADDR_PORT, &a, 4));
	pci_cfg_write(&ea.bus, 0, PCI_COMMAND, 2, PCI_COMMAND_MASTER);
	CHECK_EQ(pci_bus_save(&ea.bus, w), 0);
	r = st_reopen(w);
	t = st_poke(r, list, 1, "pci-bus", 0, 8 + 2, 0x0009, 2);
	expect_bad(pci_bus_load(&eb.bus, t, err, sizeof(err)), err, "pci-bus 0",
	           "not the same device");
	snap_reader_free(t);
	t = st_edit(r, list, 1, "pci-bus", 0, 0, NULL, 0, 260);
	expect_bad(pci_bus_load(&eb.bus, t, err, sizeof(err)), err, "pci-bus 0", "260 bytes");
	snap_reader_free(t);
	CHECK_EQ(pci_bus_load(&eb.bus, r, err, sizeof(err)), 0);
	CHECK(io_bus_read(&eb.pio, PCI_CFG_ADDR_PORT, &v, 4));
	CHECK_EQ(v, a);
	CHECK_EQ(pci_cfg_read(&eb.bus, 0, PCI_COMMAND, 2), PCI_COMMAND_MASTER);
	for (unsigned off = 0; off < PCI_CFG_SIZE; off += 4)
		CHECK_EQ(pci_cfg_read(&eb.bus, 0, off, 4), pci_cfg_read(&ea.bus, 0, off, 4));
	snap_reader_free(r);
	snap_writer_free(w);
	env_fini(&ea);
	env_fini(&eb);
}
