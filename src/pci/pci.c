/* pci.c: configuration mechanism #1, BAR decoding and placement, INTx. */
#include "pci.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "hv.h"
#include "log.h"
#include "snapshot_file.h"
#include "util.h"

#define IO_BAR_BASE 0xc000
#define IO_BAR_END  0x10000

static struct ratelimit pci_rl = RATELIMIT_INIT;

/* --- config space bytes --- */

static void put_cfg16(struct pci_dev *d, unsigned off, uint16_t v)
{
	put_le16(&d->cfg[off], v);
}

static void put_cfg32(struct pci_dev *d, unsigned off, uint32_t v)
{
	put_le32(&d->cfg[off], v);
}

void pci_dev_init(struct pci_dev *d, const char *name, uint16_t vendor, uint16_t device,
                  uint32_t class_code, uint8_t revision, uint16_t subsys_vendor, uint16_t subsys_id,
                  const struct pci_dev_ops *ops)
{
	memset(d, 0, sizeof(*d));
	d->name = name;
	d->ops = ops;
	put_cfg16(d, PCI_VENDOR_ID, vendor);
	put_cfg16(d, PCI_DEVICE_ID, device);
	d->cfg[PCI_REVISION_ID] = revision;
	d->cfg[PCI_CLASS_PROG] = (uint8_t)class_code;
	put_cfg16(d, PCI_CLASS_DEVICE, (uint16_t)(class_code >> 8));
	put_cfg16(d, PCI_SUBSYSTEM_VENDOR, subsys_vendor);
	put_cfg16(d, PCI_SUBSYSTEM_ID, subsys_id);
	/* Command: I/O, memory, bus master, INTx disable are the guest's to set. */
	put_le16(&d->wmask[PCI_COMMAND], PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
	                                     PCI_COMMAND_INTX_DISABLE);
	d->wmask[PCI_INTERRUPT_LINE] = 0xff;
	d->cap_end = 0x40;
	pthread_mutex_init(&d->intx_lock, NULL);
}

void pci_dev_destroy(struct pci_dev *d)
{
	pthread_mutex_destroy(&d->intx_lock);
}

void pci_dev_set_bar(struct pci_dev *d, unsigned n, enum pci_bar_type type, bool prefetch,
                     uint64_t size, const struct io_region_ops *ops)
{
	struct pci_bar *b = &d->bar[n];
	uint32_t low =
	    type == PCI_BAR_IO ? 1 : (type == PCI_BAR_MEM64 ? 4 : 0) | (prefetch ? 8 : 0);
	uint64_t mask = ~(size - 1);

	b->type = type;
	b->prefetch = prefetch;
	b->size = size;
	b->region = (struct io_region){.len = size, .name = d->name, .ops = ops};
	put_cfg32(d, PCI_BAR0 + 4 * n, low);
	put_le32(&d->wmask[PCI_BAR0 + 4 * n], (uint32_t)mask & (type == PCI_BAR_IO ? ~3u : ~15u));
	if (type == PCI_BAR_MEM64)
		put_le32(&d->wmask[PCI_BAR0 + 4 * (n + 1)], (uint32_t)(mask >> 32));
}

unsigned pci_add_cap(struct pci_dev *d, const uint8_t *body, unsigned len, const uint8_t *wmask)
{
	unsigned off = d->cap_end;

	if (len < 2 || off < 0x40 || off + len > PCI_CFG_SIZE)
		return 0;
	memcpy(&d->cfg[off], body, len);
	d->cfg[off + 1] = 0;
	if (wmask)
		memcpy(&d->wmask[off], wmask, len);
	d->wmask[off] = d->wmask[off + 1] = 0;
	if (d->cap_last_next)
		*d->cap_last_next = (uint8_t)off;
	else
		d->cfg[PCI_CAP_PTR] = (uint8_t)off;
	d->cap_last_next = &d->cfg[off + 1];
	put_cfg16(d, PCI_STATUS, pci_cfg16(d, PCI_STATUS) | PCI_STATUS_CAP_LIST);
	d->cap_end = (unsigned)ALIGN_UP(off + len, 4);
	return off;
}

/* --- BAR decoding --- */

/* Where BAR n points now, per its registers. */
static uint64_t bar_reg_addr(const struct pci_dev *d, unsigned n)
{
	const struct pci_bar *b = &d->bar[n];
	uint64_t a = get_le32(&d->cfg[PCI_BAR0 + 4 * n]);

	if (b->type == PCI_BAR_IO)
		return a & ~3ull;
	a &= ~15ull;
	if (b->type == PCI_BAR_MEM64)
		a |= (uint64_t)get_le32(&d->cfg[PCI_BAR0 + 4 * (n + 1)]) << 32;
	return a;
}

static bool bar_should_map(const struct pci_dev *d, unsigned n, uint64_t addr)
{
	const struct pci_bar *b = &d->bar[n];
	uint16_t cmd = pci_cfg16(d, PCI_COMMAND);

	if (b->type == PCI_BAR_NONE || addr == 0 || addr + b->size < addr)
		return false;
	if (b->type == PCI_BAR_IO)
		return (cmd & PCI_COMMAND_IO) && addr + b->size <= IO_BAR_END;
	return cmd & PCI_COMMAND_MEMORY;
}

static struct io_bus *bar_bus(struct pci_dev *d, unsigned n)
{
	return d->bar[n].type == PCI_BAR_IO ? d->bus->pio : d->bus->mmio;
}

/* Brings BAR n's region in line with the registers; tells the device if anything moved. */
static void bar_update(struct pci_dev *d, unsigned n)
{
	struct pci_bar *b = &d->bar[n];
	uint64_t addr = bar_reg_addr(d, n), old = b->addr;
	bool want = bar_should_map(d, n, addr), was = b->mapped;

	if (want == was && (!want || addr == old))
		return;
	if (was) {
		io_bus_remove(bar_bus(d, n), &b->region);
		b->mapped = false;
	}
	b->addr = addr;
	if (want) {
		b->region.base = addr;
		int r = io_bus_add(bar_bus(d, n), &b->region);
		if (r < 0)
			log_ratelimited(&pci_rl, LOG_WARN,
			                "%s: BAR%u at 0x%llx overlaps another device; not decoded",
			                d->name, n, (unsigned long long)addr);
		else
			b->mapped = true;
	}
	if (d->ops && d->ops->bar_moved && (was || b->mapped))
		d->ops->bar_moved(d, n, old, was);
}

static void bars_update(struct pci_dev *d)
{
	for (unsigned n = 0; n < 6; n++)
		if (d->bar[n].type != PCI_BAR_NONE)
			bar_update(d, n);
}

/* --- INTx --- */

/* With intx_lock held. */
static void intx_apply(struct pci_dev *d)
{
	bool disabled = pci_cfg16(d, PCI_COMMAND) & PCI_COMMAND_INTX_DISABLE;
	uint16_t st = pci_cfg16(d, PCI_STATUS) & ~PCI_STATUS_INTERRUPT;

	put_cfg16(d, PCI_STATUS, st | (d->intx ? PCI_STATUS_INTERRUPT : 0));
	if (d->bus && d->bus->hv)
		hv_irq_line(d->bus->hv, d->gsi, d->intx && !disabled);
}

void pci_set_intx(struct pci_dev *d, bool level)
{
	pthread_mutex_lock(&d->intx_lock);
	d->intx = level;
	intx_apply(d);
	pthread_mutex_unlock(&d->intx_lock);
}

/* --- config accesses --- */

static struct pci_dev *slot_dev(struct pci_bus *bus, unsigned slot)
{
	return slot < PCI_SLOTS ? bus->dev[slot] : NULL;
}

uint32_t pci_cfg_read(struct pci_bus *bus, unsigned slot, unsigned off, unsigned len)
{
	struct pci_dev *d;
	uint32_t v = 0;

	if (off >= PCI_CFG_SIZE || len > PCI_CFG_SIZE - off || (len != 1 && len != 2 && len != 4))
		return ~0u;
	pthread_mutex_lock(&bus->lock);
	d = slot_dev(bus, slot);
	if (!d) {
		pthread_mutex_unlock(&bus->lock);
		return len == 4 ? ~0u : (1u << (8 * len)) - 1;
	}
	if (d->ops && d->ops->cfg_read)
		d->ops->cfg_read(d, off, len);
	for (unsigned i = 0; i < len; i++)
		v |= (uint32_t)d->cfg[off + i] << (8 * i);
	pthread_mutex_unlock(&bus->lock);
	return v;
}

void pci_cfg_write(struct pci_bus *bus, unsigned slot, unsigned off, unsigned len, uint32_t val)
{
	struct pci_dev *d;
	uint16_t old_cmd;
	bool bars = false;

	if (off >= PCI_CFG_SIZE || len > PCI_CFG_SIZE - off || (len != 1 && len != 2 && len != 4))
		return;
	pthread_mutex_lock(&bus->lock);
	d = slot_dev(bus, slot);
	if (!d) {
		pthread_mutex_unlock(&bus->lock);
		return;
	}
	old_cmd = pci_cfg16(d, PCI_COMMAND);
	for (unsigned i = 0; i < len; i++) {
		unsigned o = off + i;
		uint8_t b = (uint8_t)(val >> (8 * i));
		d->cfg[o] = (uint8_t)((d->cfg[o] & ~d->wmask[o]) | (b & d->wmask[o]));
		d->cfg[o] &= (uint8_t) ~(b & d->w1cmask[o]);
		if (o >= PCI_BAR0 && o < PCI_BAR0 + 24)
			bars = true;
	}
	if (bars || pci_cfg16(d, PCI_COMMAND) != old_cmd)
		bars_update(d);
	if (pci_cfg16(d, PCI_COMMAND) != old_cmd) {
		pthread_mutex_lock(&d->intx_lock);
		intx_apply(d);
		pthread_mutex_unlock(&d->intx_lock);
	}
	if (d->ops && d->ops->cfg_written)
		d->ops->cfg_written(d, off, len);
	pthread_mutex_unlock(&bus->lock);
}

/* CONFIG_ADDRESS: bit 31 enable, bus 23:16, device 15:11, function 10:8, register 7:2. */
static bool decode_addr(uint32_t a, unsigned *slot, unsigned *reg)
{
	if (!(a & 0x80000000u) || ((a >> 16) & 0xff) != 0 || ((a >> 8) & 7) != 0)
		return false;
	*slot = (a >> 11) & 0x1f;
	*reg = a & 0xfc;
	return true;
}

static void addr_read(struct io_region *r, uint64_t off, void *data, unsigned len)
{
	struct pci_bus *bus = container_of(r, struct pci_bus, addr_io);
	uint32_t v;

	pthread_mutex_lock(&bus->lock);
	v = bus->cfg_addr;
	pthread_mutex_unlock(&bus->lock);
	if (off == 0 && len == 4)
		memcpy(data, &v, 4);
	else
		memset(data, 0xff, len);
}

static void addr_write(struct io_region *r, uint64_t off, const void *data, unsigned len)
{
	struct pci_bus *bus = container_of(r, struct pci_bus, addr_io);

	/* Only whole dword writes set the address (byte writes to 0xcfb probe mechanism #2). */
	if (off != 0 || len != 4)
		return;
	pthread_mutex_lock(&bus->lock);
	memcpy(&bus->cfg_addr, data, 4);
	pthread_mutex_unlock(&bus->lock);
}

static void data_read(struct io_region *r, uint64_t off, void *data, unsigned len)
{
	struct pci_bus *bus = container_of(r, struct pci_bus, data_io);
	unsigned slot, reg;
	uint32_t a, v = ~0u;

	pthread_mutex_lock(&bus->lock);
	a = bus->cfg_addr;
	pthread_mutex_unlock(&bus->lock);
	if (off + len <= 4 && decode_addr(a, &slot, &reg))
		v = pci_cfg_read(bus, slot, reg + (unsigned)off, len);
	memcpy(data, &v, len);
}

static void data_write(struct io_region *r, uint64_t off, const void *data, unsigned len)
{
	struct pci_bus *bus = container_of(r, struct pci_bus, data_io);
	unsigned slot, reg;
	uint32_t a, v = 0;

	pthread_mutex_lock(&bus->lock);
	a = bus->cfg_addr;
	pthread_mutex_unlock(&bus->lock);
	memcpy(&v, data, len > 4 ? 4 : len);
	if (off + len <= 4 && decode_addr(a, &slot, &reg))
		pci_cfg_write(bus, slot, reg + (unsigned)off, len, v);
}

static const struct io_region_ops addr_ops = {.read = addr_read, .write = addr_write};
static const struct io_region_ops data_ops = {.read = data_read, .write = data_write};

/* --- bus --- */

int pci_bus_init(struct pci_bus *bus, struct hv *hv, struct io_bus *pio, struct io_bus *mmio,
                 uint64_t mmio32_base, uint64_t mmio32_len, uint64_t mmio64_base,
                 uint64_t mmio64_len)
{
	int r;

	memset(bus, 0, sizeof(*bus));
	bus->hv = hv;
	bus->pio = pio;
	bus->mmio = mmio;
	bus->mmio32_base = bus->mmio32_next = mmio32_base;
	bus->mmio32_len = mmio32_len;
	bus->mmio64_base = bus->mmio64_next = mmio64_base;
	bus->mmio64_len = mmio64_len;
	bus->io_next = IO_BAR_BASE;
	pthread_mutex_init(&bus->lock, NULL);
	/* QEMU's generic PCIe host bridge ids (Red Hat vendor): no driver binds to it. */
	pci_dev_init(&bus->host, "pci-host", 0x1b36, 0x0008, 0x060000, 0, 0x1af4, 0x1100, NULL);
	bus->host.bus = bus;
	bus->dev[0] = &bus->host;
	bus->addr_io = (struct io_region){
	    .base = PCI_CFG_ADDR_PORT, .len = 4, .name = "pci-config-address", .ops = &addr_ops};
	bus->data_io = (struct io_region){
	    .base = PCI_CFG_DATA_PORT, .len = 4, .name = "pci-config-data", .ops = &data_ops};
	r = io_bus_add(pio, &bus->addr_io);
	if (r == 0) {
		r = io_bus_add(pio, &bus->data_io);
		if (r < 0)
			io_bus_remove(pio, &bus->addr_io);
	}
	if (r < 0)
		pthread_mutex_destroy(&bus->lock);
	return r;
}

void pci_bus_destroy(struct pci_bus *bus)
{
	for (unsigned s = 1; s < PCI_SLOTS; s++)
		if (bus->dev[s])
			pci_bus_remove(bus, bus->dev[s]);
	io_bus_remove(bus->pio, &bus->addr_io);
	io_bus_remove(bus->pio, &bus->data_io);
	pci_dev_destroy(&bus->host);
	pthread_mutex_destroy(&bus->lock);
}

/* Firmware's job: a naturally aligned address for each BAR from its window. */
static int assign_bars(struct pci_bus *bus, struct pci_dev *d)
{
	for (unsigned n = 0; n < 6; n++) {
		struct pci_bar *b = &d->bar[n];
		uint64_t *next, end, a;
		if (b->type == PCI_BAR_NONE)
			continue;
		if (b->type == PCI_BAR_IO) {
			a = ALIGN_UP(bus->io_next, b->size);
			if (a + b->size > IO_BAR_END)
				return -ENOSPC;
			bus->io_next = (uint32_t)(a + b->size);
			put_cfg32(d, PCI_BAR0 + 4 * n, (uint32_t)a | 1);
			continue;
		}
		if (b->type == PCI_BAR_MEM64 && bus->mmio64_len) {
			next = &bus->mmio64_next;
			end = bus->mmio64_base + bus->mmio64_len;
		} else {
			next = &bus->mmio32_next;
			end = bus->mmio32_base + bus->mmio32_len;
		}
		a = ALIGN_UP(*next, b->size);
		if (a + b->size > end)
			return -ENOSPC;
		*next = a + b->size;
		put_cfg32(d, PCI_BAR0 + 4 * n,
		          (uint32_t)a | (get_le32(&d->cfg[PCI_BAR0 + 4 * n]) & 0xf));
		if (b->type == PCI_BAR_MEM64)
			put_cfg32(d, PCI_BAR0 + 4 * (n + 1), (uint32_t)(a >> 32));
	}
	return 0;
}

int pci_bus_add(struct pci_bus *bus, struct pci_dev *d)
{
	unsigned s;
	int r;

	pthread_mutex_lock(&bus->lock);
	for (s = 1; s < PCI_SLOTS && bus->dev[s]; s++)
		;
	if (s == PCI_SLOTS) {
		pthread_mutex_unlock(&bus->lock);
		return -ENOSPC;
	}
	r = assign_bars(bus, d);
	if (r < 0) {
		pthread_mutex_unlock(&bus->lock);
		return r;
	}
	d->bus = bus;
	d->slot = s;
	d->gsi = PCI_INTX_GSI_BASE + s % 8;
	d->cfg[PCI_INTERRUPT_LINE] = (uint8_t)d->gsi;
	d->cfg[PCI_INTERRUPT_PIN] = 1;
	bus->dev[s] = d;
	put_cfg16(d, PCI_COMMAND, pci_cfg16(d, PCI_COMMAND) | PCI_COMMAND_MEMORY | PCI_COMMAND_IO);
	bars_update(d);
	pthread_mutex_unlock(&bus->lock);
	return 0;
}

void pci_bus_remove(struct pci_bus *bus, struct pci_dev *d)
{
	pthread_mutex_lock(&bus->lock);
	if (d->bus == bus && bus->dev[d->slot] == d) {
		put_cfg16(d, PCI_COMMAND, 0);
		bars_update(d);
		if (d->intx && bus->hv)
			hv_irq_line(bus->hv, d->gsi, false);
		bus->dev[d->slot] = NULL;
		d->bus = NULL;
	}
	pthread_mutex_unlock(&bus->lock);
}

/* --- snapshot --- */

/* Section "pci": config space as the guest reads it, INTA as the device drives it. */
struct pci_dev_state {
	uint8_t cfg[PCI_CFG_SIZE];
	uint8_t intx;
	uint8_t bars_mapped; /* bit n: BAR n was decoding (on its bus) */
	uint8_t pad[2];
};
_Static_assert(sizeof(struct pci_dev_state) == PCI_CFG_SIZE + 4, "pci_dev_state layout");

#define PCI_TAG     "pci"
#define PCI_BUS_TAG "pci-bus"

/* Section "pci-bus": the CONFIG_ADDRESS latch and the host bridge's function. */
struct pci_bus_state {
	uint32_t cfg_addr;
	uint32_t pad;
	struct pci_dev_state host;
};
_Static_assert(sizeof(struct pci_bus_state) == 8 + sizeof(struct pci_dev_state),
               "pci_bus_state layout");

/* Takes the bus lock if d is on one. */
static void pci_dev_state_get(struct pci_dev *d, struct pci_dev_state *st)
{
	struct pci_bus *bus = d->bus;

	memset(st, 0, sizeof(*st));
	if (bus)
		pthread_mutex_lock(&bus->lock);
	memcpy(st->cfg, d->cfg, sizeof(st->cfg));
	for (unsigned n = 0; n < 6; n++)
		if (d->bar[n].mapped)
			st->bars_mapped |= (uint8_t)(1u << n);
	pthread_mutex_lock(&d->intx_lock);
	st->intx = d->intx;
	pthread_mutex_unlock(&d->intx_lock);
	if (bus)
		pthread_mutex_unlock(&bus->lock);
}

int pci_dev_save(struct pci_dev *d, struct snap_writer *w, uint32_t inst)
{
	struct pci_dev_state st;

	pci_dev_state_get(d, &st);
	return snap_put(w, PCI_TAG, inst, &st, sizeof(st));
}

/* Bits of config byte o that are state rather than identity. */
static uint8_t cfg_dynamic_bits(const struct pci_dev *d, unsigned o)
{
	uint8_t dyn = d->wmask[o] | d->w1cmask[o];

	if (o == PCI_STATUS)
		dyn |= PCI_STATUS_INTERRUPT; /* follows intx */
	return dyn;
}

/* Checks st against d, then applies it; errors name section (tag, inst) of reader rn. */
static int pci_dev_state_put(struct pci_dev *d, const struct pci_dev_state *st, const char *rn,
                             const char *tag, uint32_t inst, char *err, size_t errlen)
{
	struct pci_bus *bus = d->bus;
	int ret = 0;

	if (!bus) {
		snprintf(err, errlen, "%s: section %s %u: %s is not on a PCI bus", rn, tag, inst,
		         d->name);
		return -EINVAL;
	}
	if (st->intx > 1) {
		snprintf(err, errlen, "%s: section %s %u: intx %u is not 0 or 1", rn, tag, inst,
		         st->intx);
		return -EINVAL;
	}
	for (unsigned n = 0; n < 8; n++) {
		if ((st->bars_mapped & (1u << n)) && (n >= 6 || d->bar[n].type == PCI_BAR_NONE)) {
			snprintf(err, errlen,
			         "%s: section %s %u: bars_mapped 0x%x names BAR%u, which %s does "
			         "not have",
			         rn, tag, inst, st->bars_mapped, n, d->name);
			return -EINVAL;
		}
	}

	pthread_mutex_lock(&bus->lock);
	for (unsigned o = 0; o < PCI_CFG_SIZE; o++) {
		if ((st->cfg[o] ^ d->cfg[o]) & ~cfg_dynamic_bits(d, o)) {
			snprintf(err, errlen,
			         "%s: section %s %u: not the same device: config byte 0x%02x is "
			         "0x%02x, %s has 0x%02x",
			         rn, tag, inst, o, st->cfg[o], d->name, d->cfg[o]);
			pthread_mutex_unlock(&bus->lock);
			return -EINVAL;
		}
	}
	for (unsigned o = 0; o < PCI_CFG_SIZE; o++) {
		uint8_t dyn = cfg_dynamic_bits(d, o);
		d->cfg[o] = (uint8_t)((d->cfg[o] & ~dyn) | (st->cfg[o] & dyn));
	}
	/* What pci_cfg_write() does after a write to the BARs and the command register. */
	bars_update(d);
	pthread_mutex_lock(&d->intx_lock);
	d->intx = st->intx;
	intx_apply(d);
	pthread_mutex_unlock(&d->intx_lock);
	for (unsigned n = 0; n < 6 && ret == 0; n++) {
		if ((st->bars_mapped & (1u << n)) && !d->bar[n].mapped) {
			snprintf(err, errlen,
			         "%s: section %s %u: %s BAR%u at 0x%llx was decoding and now "
			         "cannot be (command 0x%x; another device there?)",
			         rn, tag, inst, d->name, n, (unsigned long long)d->bar[n].addr,
			         pci_cfg16(d, PCI_COMMAND));
			ret = -EINVAL;
		}
	}
	pthread_mutex_unlock(&bus->lock);
	return ret;
}

int pci_dev_load(struct pci_dev *d, const struct snap_reader *r, uint32_t inst, char *err,
                 size_t errlen)
{
	struct pci_dev_state st;
	int ret = snap_get_exact(r, PCI_TAG, inst, &st, sizeof(st), err, errlen);

	if (ret < 0)
		return ret;
	return pci_dev_state_put(d, &st, snap_reader_name(r), PCI_TAG, inst, err, errlen);
}

int pci_bus_save(struct pci_bus *bus, struct snap_writer *w)
{
	struct pci_bus_state st;

	memset(&st, 0, sizeof(st));
	pci_dev_state_get(&bus->host, &st.host);
	pthread_mutex_lock(&bus->lock);
	st.cfg_addr = bus->cfg_addr;
	pthread_mutex_unlock(&bus->lock);
	return snap_put(w, PCI_BUS_TAG, 0, &st, sizeof(st));
}

int pci_bus_load(struct pci_bus *bus, const struct snap_reader *r, char *err, size_t errlen)
{
	struct pci_bus_state st;
	int ret = snap_get_exact(r, PCI_BUS_TAG, 0, &st, sizeof(st), err, errlen);

	if (ret < 0)
		return ret;
	ret = pci_dev_state_put(&bus->host, &st.host, snap_reader_name(r), PCI_BUS_TAG, 0, err,
	                        errlen);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&bus->lock);
	bus->cfg_addr = st.cfg_addr; /* any value: the guest may write any */
	pthread_mutex_unlock(&bus->lock);
	return 0;
}
