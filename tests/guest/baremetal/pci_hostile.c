/*
 * pci_hostile.c: a guest that abuses the PCI bus and the virtio-pci devices (run with
 * --rng and --disk): garbage in every config dword of every slot, odd config-mechanism
 * accesses, odd-width and unaligned BAR accesses, bad queue setups, bad descriptor
 * chains, a runaway avail.idx, nonexistent queues and MSI-X entries, BARs moved under a
 * live device and overlapping each other, malformed block requests. The monitor must
 * survive all of it, and the devices must work again after a reset. Ends with a working
 * virtio-rng request, then PASS.
 *
 * Each step prints "hostile: <what>: <outcome>".
 */
#include "virtio.h"

#define RNG_BUF 64

#define VIRTIO_BLK_T_IN     0
#define VIRTIO_BLK_T_OUT    1
#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

/* A check that failed without stopping the run: reported, counted, FAIL at the end. */
#define soft_fail(fmt, ...)                                                                        \
	do {                                                                                       \
		print("hostile: FAILED: " fmt "\n", ##__VA_ARGS__);                                \
		nfailed++;                                                                         \
	} while (0)

static unsigned nfailed;
static struct virtio_pci rng, blk;
static bool have_blk;
static struct vq rq, bq;
static uint8_t *rbuf;
static uint64_t ram_end;

/* ---- MMIO of any width at any alignment ---- */

static uint64_t rd(uint64_t a, unsigned w)
{
	uint64_t v = 0;

	switch (w) {
	case 1:
		__asm__ volatile("movb (%1), %b0" : "=q"(v) : "r"(a) : "memory");
		return v & 0xff;
	case 2:
		__asm__ volatile("movw (%1), %w0" : "=r"(v) : "r"(a) : "memory");
		return v & 0xffff;
	case 4:
		__asm__ volatile("movl (%1), %k0" : "=r"(v) : "r"(a) : "memory");
		return v & 0xffffffffu;
	default:
		__asm__ volatile("movq (%1), %0" : "=r"(v) : "r"(a) : "memory");
		return v;
	}
}

static void wr(uint64_t a, unsigned w, uint64_t v)
{
	switch (w) {
	case 1:
		__asm__ volatile("movb %b0, (%1)" : : "q"(v), "r"(a) : "memory");
		break;
	case 2:
		__asm__ volatile("movw %w0, (%1)" : : "r"(v), "r"(a) : "memory");
		break;
	case 4:
		__asm__ volatile("movl %k0, (%1)" : : "r"(v), "r"(a) : "memory");
		break;
	default:
		__asm__ volatile("movq %0, (%1)" : : "r"(v), "r"(a) : "memory");
		break;
	}
}

/* ---- rng helpers ---- */

static void rng_init(bool poke_missing_queues)
{
	const char *err = virtio_negotiate(&rng, 1ull << VIRTIO_F_INDIRECT_DESC);

	if (err)
		failf("rng: %s", err);
	err = vq_setup(&rng, &rq, 0, 16);
	if (err)
		failf("rng: queue 0: %s", err);
	if (poke_missing_queues) {
		static const uint16_t sel[] = {0, 1, 2, 0x100, 0x7fff, 0xffff};

		for (unsigned i = 0; i < sizeof(sel) / sizeof(sel[0]); i++) {
			uint16_t s = sel[i] ? sel[i] : rng.num_queues;

			if (s < rng.num_queues)
				continue;
			vc_write16(&rng, VC_Q_SELECT, s);
			if (vc_read16(&rng, VC_Q_SIZE) != 0)
				soft_fail(
				    "rng: queue_select %u (of %u queues): queue_size reads %u, "
				    "not 0",
				    s, rng.num_queues, vc_read16(&rng, VC_Q_SIZE));
			vc_write16(&rng, VC_Q_SIZE, 8);
			vc_write64(&rng, VC_Q_DESC, 0x1234567);
			vc_write64(&rng, VC_Q_DRIVER, 0xfffffffffffff000ull);
			vc_write64(&rng, VC_Q_DEVICE, 3);
			vc_write16(&rng, VC_Q_MSIX, 5);
			vc_write16(&rng, VC_Q_ENABLE, 1);
			if (vc_read16(&rng, VC_Q_SIZE) || vc_read16(&rng, VC_Q_ENABLE))
				soft_fail(
				    "rng: nonexistent queue %u took queue_size/queue_enable writes",
				    s);
			(void)vc_read16(&rng, VC_Q_NOFF);
			(void)vc_read64(&rng, VC_Q_DESC);
		}
		print("hostile: queue_select beyond num_queues: queue_size 0, writes ignored\n");
	}
	virtio_add_status(&rng, VIRTIO_STATUS_DRIVER_OK);
	if (virtio_status(&rng) != (VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	                            VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK))
		failf("rng: status 0x%x after DRIVER_OK", virtio_status(&rng));
}

static void rng_draw(const char *when)
{
	struct vbuf b = {rbuf, RNG_BUF, true};
	uint32_t len;
	bool zero = true;

	memset(rbuf, 0, RNG_BUF);
	len = vq_transfer(&rq, &b, 1);
	for (unsigned i = 0; i < len && i < RNG_BUF; i++)
		zero = zero && !rbuf[i];
	if (len == 0 || len > RNG_BUF || zero)
		failf("rng %s: used.len %u, %s", when, len, zero ? "all zero" : "bad length");
}

/* Waits up to 1 s for NEEDS_RESET, then resets the device. */
static void expect_needs_reset(struct virtio_pci *d, const char *what)
{
	uint64_t end = pmtimer_ticks() + PMTIMER_HZ;
	uint8_t st;

	while (!((st = virtio_status(d)) & VIRTIO_STATUS_NEEDS_RESET) && pmtimer_ticks() < end)
		;
	if (!(st & VIRTIO_STATUS_NEEDS_RESET))
		soft_fail("%s: status 0x%x, expected NEEDS_RESET (0x40)", what, st);
	if (!virtio_reset(d))
		failf("%s: reset after status 0x%x did not complete", what, st);
	if (st & VIRTIO_STATUS_NEEDS_RESET)
		print("hostile: %s: NEEDS_RESET, reset ok\n", what);
}

/* ---- 1: configuration space ---- */

static void config_space_garbage(void)
{
	static const uint32_t pats[] = {0xffffffffu, 0x00000000u, 0xa5a5a5a5u, 0x5a5a5a5au};
	static uint32_t saved[PCI_SLOTS][PCI_CFG_BYTES / 4];
	uint32_t ids[PCI_SLOTS], class[PCI_SLOTS];
	unsigned present = 0;

	for (unsigned s = 0; s < PCI_SLOTS; s++) {
		ids[s] = pci_read32(s, PCI_VENDOR_ID);
		class[s] = pci_read32(s, PCI_REVISION_ID);
		if ((ids[s] & 0xffff) == 0xffff)
			continue;
		present++;
		for (unsigned i = 0; i < PCI_CFG_BYTES / 4; i++)
			saved[s][i] = pci_read32(s, 4 * i);
	}
	for (unsigned p = 0; p < sizeof(pats) / sizeof(pats[0]); p++) {
		for (unsigned s = 0; s < PCI_SLOTS; s++) {
			bool here = (ids[s] & 0xffff) != 0xffff;

			/* Absent slots (slow to walk, and nothing to see): two patterns, no reads.
			 */
			if (!here && (p & 1))
				continue;
			for (unsigned off = 0; off < PCI_CFG_BYTES; off += 4) {
				pci_write32(s, off, pats[p] ^ off);
				if (here)
					(void)pci_read32(s, off);
			}
			if (pci_read32(s, PCI_VENDOR_ID) != ids[s] ||
			    pci_read32(s, PCI_REVISION_ID) != class[s])
				soft_fail(
				    "slot %u: ids/class %08x/%08x became %08x/%08x after writing "
				    "%08x everywhere",
				    s, ids[s], class[s], pci_read32(s, PCI_VENDOR_ID),
				    pci_read32(s, PCI_REVISION_ID), pats[p]);
		}
	}
	/* Odd-width writes at every byte and word of the present functions. */
	for (unsigned s = 0; s < PCI_SLOTS; s++) {
		if ((ids[s] & 0xffff) == 0xffff)
			continue;
		for (unsigned off = 0; off < PCI_CFG_BYTES; off++) {
			pci_write8(s, off, (uint8_t)(0x3c ^ off));
			if (!(off & 1))
				pci_write16(s, off, (uint16_t)(0xc33c ^ off));
		}
		if (pci_read32(s, PCI_VENDOR_ID) != ids[s])
			soft_fail("slot %u: ids changed after byte/word writes", s);
	}
	print("hostile: garbage in every config dword of %u functions and 32 slots: ids intact\n",
	      present);

	/* Put the headers back (command last, so nothing decodes at a garbage address). */
	for (unsigned s = 0; s < PCI_SLOTS; s++) {
		if ((ids[s] & 0xffff) == 0xffff)
			continue;
		pci_write16(s, PCI_COMMAND, 0);
		for (unsigned i = 2; i < PCI_CFG_BYTES / 4; i++)
			pci_write32(s, 4 * i, saved[s][i]);
		pci_write16(s, PCI_COMMAND, (uint16_t)saved[s][1]);
		if (pci_read32(s, PCI_VENDOR_ID) != ids[s])
			soft_fail("slot %u: ids changed after restoring its header", s);
	}
}

static void config_mechanism_oddities(unsigned slot)
{
	uint32_t id = pci_read32(slot, PCI_VENDOR_ID);
	uint16_t cmd = pci_read16(slot, PCI_COMMAND);
	uint32_t v;

	/* Enable bit clear: data port must not reach the function. */
	outl(PCI_CONFIG_ADDRESS, (slot << 11) | PCI_COMMAND);
	(void)inl(PCI_CONFIG_DATA);
	outl(PCI_CONFIG_DATA, 0);
	if (pci_read16(slot, PCI_COMMAND) != cmd)
		soft_fail(
		    "slot %u: a CONFIG_DATA write with the CONFIG_ADDRESS enable bit clear changed "
		    "the command register 0x%x -> 0x%x",
		    slot, cmd, pci_read16(slot, PCI_COMMAND));
	/* Bus 1, functions 1-7, reserved bits, register low bits set. */
	outl(PCI_CONFIG_ADDRESS, 0x80010000u | (slot << 11));
	v = inl(PCI_CONFIG_DATA);
	if (v != 0xffffffffu)
		soft_fail("bus 1 slot %u reads 0x%x, not all-ones", slot, v);
	outl(PCI_CONFIG_DATA, 0);
	for (unsigned fn = 1; fn < 8; fn++) {
		outl(PCI_CONFIG_ADDRESS, 0x80000000u | (slot << 11) | (fn << 8));
		v = inl(PCI_CONFIG_DATA);
		if (v != 0xffffffffu)
			soft_fail("slot %u function %u reads 0x%x, not all-ones", slot, fn, v);
		outl(PCI_CONFIG_DATA, 0x12345678);
	}
	outl(PCI_CONFIG_ADDRESS, 0xff000003u | (slot << 11));
	(void)inl(PCI_CONFIG_DATA);
	outl(PCI_CONFIG_ADDRESS, 0x80000003u | (slot << 11));
	(void)inl(PCI_CONFIG_DATA);
	/* Narrow accesses to CONFIG_ADDRESS (0xcf9 is never written: reset control). */
	(void)inb(0xcf8);
	(void)inb(0xcf9);
	(void)inw(0xcfa);
	(void)inw(0xcf9);
	outb(0xcf8, 0);
	outb(0xcfb, 0x80);
	outw(0xcfa, 0);
	/* Data port accesses that straddle the end of 0xcfc-0xcff. */
	outl(PCI_CONFIG_ADDRESS, 0x80000000u | (slot << 11) | PCI_VENDOR_ID);
	(void)inl(0xcfd);
	(void)inl(0xcfe);
	(void)inl(0xcff);
	(void)inw(0xcff);
	(void)inw(0xcfd);
	outl(PCI_CONFIG_ADDRESS, 0x80000000u | (slot << 11) | PCI_CAP_PTR);
	outl(0xcfd, 0xffffffffu);
	outw(0xcff, 0xffff);
	outl(0xcff, 0);

	if (pci_read32(slot, PCI_VENDOR_ID) != id)
		soft_fail("slot %u ids changed after odd config-mechanism accesses", slot);
	print("hostile: odd CONFIG_ADDRESS/CONFIG_DATA accesses: ok\n");
}

/* ---- 2: odd register accesses ---- */

static void odd_bar_accesses(struct virtio_pci *d)
{
	uint64_t b2 = d->common, b0 = d->msix_table;
	uint64_t bar = d->bar[2].addr, size = d->bar[2].size;
	uint32_t feat0, nq;

	vc_write32(d, VC_DFSELECT, 0);
	feat0 = vc_read32(d, VC_DF);
	nq = vc_read16(d, VC_NUMQ);

	for (unsigned off = 0; off < VC_MIN_LEN; off++)
		(void)rd(b2 + off, 1);
	for (unsigned off = 1; off < VC_MIN_LEN; off += 2)
		(void)rd(b2 + off, 2);
	for (unsigned off = 1; off < VC_MIN_LEN; off += 3)
		(void)rd(b2 + off, 4);
	(void)rd(b2, 8);
	(void)rd(b2 + VC_Q_DESC, 8);
	(void)rd(b2 + 0x13, 8);

	/* Writes to read-only fields, odd widths, unaligned. */
	wr(b2 + VC_DF, 4, 0xdeadbeef);
	wr(b2 + VC_NUMQ, 2, 0x7777);
	wr(b2 + VC_CFGGEN, 1, 0x99);
	wr(b2 + VC_Q_NOFF, 2, 0x4444);
	wr(b2 + 0x11, 2, 0xffff); /* config_msix_vector high byte + num_queues low byte */
	wr(b2 + 0x13, 4, 0xffffffffu);
	wr(b2 + VC_Q_DESC + 1, 4, 0x12345678);
	wr(b2 + VC_Q_DESC, 8, 0xfedcba9876543210ull);
	wr(b2 + VC_Q_DRIVER + 3, 1, 0xff);
	wr(b2 + VC_DFSELECT, 1, 0xff);
	(void)vc_read32(d, VC_DF);
	vc_write32(d, VC_DFSELECT, 0xffffffffu);
	if (vc_read32(d, VC_DF) != 0)
		soft_fail("device_feature_select 0xffffffff: device_feature reads 0x%x, not 0",
		          vc_read32(d, VC_DF));
	vc_write32(d, VC_GFSELECT, 0x80000000u);
	vc_write32(d, VC_GF, 0xffffffffu);
	vc_write32(d, VC_DFSELECT, 0);
	if (vc_read32(d, VC_DF) != feat0 || vc_read16(d, VC_NUMQ) != nq)
		soft_fail("read-only device_feature / num_queues changed after writes");
	/* Status garbage, then reset. */
	vc_write8(d, VC_STATUS, 0xff);
	(void)virtio_status(d);
	vc_write8(d, VC_STATUS, 0x40);
	if (!virtio_reset(d))
		fail("reset after writing garbage status did not complete");

	/* Past the structures inside the BAR, and across its end. */
	(void)rd(b2 + 0x0f00, 4);
	wr(b2 + 0x0f00, 4, 1);
	(void)rd(d->isr, 4);
	(void)rd(d->isr, 8);
	wr(d->isr, 1, 0xff);
	wr(d->isr + 1, 2, 0xffff);
	(void)rd(d->isr + 0x800, 4);
	if (d->devcfg) {
		(void)rd(d->devcfg, 8);
		(void)rd(d->devcfg + d->devcfg_len, 4);
		wr(d->devcfg, 4, 0xffffffffu);
		wr(d->devcfg + 3, 2, 0xffff);
	}
	(void)rd(bar + 0x2ff0, 4);
	(void)rd(bar + size - 1, 1);
	(void)rd(bar + size - 2, 4);
	(void)rd(bar + size - 4, 8);
	wr(bar + size - 2, 4, 0);
	wr(bar + size - 1, 2, 0);
	wr(bar + size - 4, 8, 0);
	/* Notifications: odd widths, nonexistent queues, beyond the structure. */
	wr(d->notify, 1, 0);
	wr(d->notify, 4, 0);
	wr(d->notify, 8, 0);
	wr(d->notify + 1, 2, 0);
	wr(d->notify, 2, 0xffff);
	wr(d->notify, 2, 0x1234);
	wr(d->notify + (uint64_t)d->notify_mult * 200, 2, 200);
	(void)rd(d->notify, 2);
	(void)rd(d->notify + 2, 4);
	if (d->notify_len >= 2)
		wr(d->notify + d->notify_len - 2, 4, 0xffff);

	/* MSI-X: narrow and wide accesses, entries past the table, writes to the PBA. */
	if (b0) {
		for (unsigned e = d->msix_size; e < d->msix_size + 8u && e < 0x800 / 16; e++) {
			msix_entry_write(d, e, 0, 0xfee00000u);
			msix_entry_write(d, e, 4, 0xffffffffu);
			msix_entry_write(d, e, 8, 0x41);
			msix_entry_write(d, e, MSIX_ENTRY_CTRL, 0);
			(void)msix_entry_read(d, e, MSIX_ENTRY_CTRL);
		}
		wr(b0 + 0x7f0, 4, 0);
		wr(b0 + 0x7fc, 8, 0);
		(void)rd(b0 + 0x7fe, 4);
		(void)rd(b0 + 1, 2);
		(void)rd(b0 + 3, 4);
		(void)rd(b0, 8);
		wr(b0 + 0xd, 2, 0x1); /* vector control low byte straddle */
		wr(b0 + MSIX_ENTRY_CTRL, 1, 1);
		wr(d->msix_pba, 4, 0xffffffffu);
		wr(d->msix_pba + 1, 1, 0xff);
		wr(d->msix_pba, 8, ~0ull);
		(void)rd(d->msix_pba + 8, 4);
		(void)rd(d->msix_pba + 0x7fc, 4);
		(void)rd(d->msix_pba + 0x7fe, 4);
		wr(d->msix_pba + 0x7fe, 4, 0);
		for (unsigned e = 0; e < d->msix_size; e++) {
			msix_entry_write(d, e, MSIX_ENTRY_CTRL, MSIX_ENTRY_MASKED);
			if (!(msix_entry_read(d, e, MSIX_ENTRY_CTRL) & MSIX_ENTRY_MASKED))
				soft_fail("MSI-X entry %u does not stay masked", e);
		}
		if (d->msix_size < 32 && (mmio_read32(d->msix_pba) & ~((1u << d->msix_size) - 1)))
			soft_fail("PBA reads 0x%x: bits beyond the %u vectors, or writes stuck",
			          mmio_read32(d->msix_pba), d->msix_size);
	}

	/* The PCI configuration access capability, sane and not. */
	if (d->cap_pcicfg) {
		uint32_t off = pci_read32(d->slot, d->cap_common + VIRTIO_CAP_OFFSET);
		uint8_t cbar = pci_read8(d->slot, d->cap_common + VIRTIO_CAP_BAR);
		uint32_t v = virtio_pcicfg_read(d, cbar, off + VC_NUMQ, 2) & 0xffff;

		if (v != nq)
			soft_fail("pci cfg access capability: num_queues reads 0x%x, expected %u",
			          v, nq);
		v = virtio_pcicfg_read(d, cbar, off + VC_DF, 4);
		if (v != feat0)
			soft_fail(
			    "pci cfg access capability: device_feature reads 0x%x, expected 0x%x",
			    v, feat0);
		(void)virtio_pcicfg_read(d, 7, 0, 4);
		(void)virtio_pcicfg_read(d, 1, 0, 4);
		(void)virtio_pcicfg_read(d, 5, 0, 4);
		(void)virtio_pcicfg_read(d, cbar, 0xfffffffcu, 4);
		(void)virtio_pcicfg_read(d, cbar, (uint32_t)size - 2, 4);
		(void)virtio_pcicfg_read(d, cbar, off + 1, 3);
		(void)virtio_pcicfg_read(d, cbar, off, 0);
		(void)virtio_pcicfg_read(d, cbar, off, 8);
		(void)virtio_pcicfg_read(d, cbar, off, 0xffffffffu);
		virtio_pcicfg_write(d, 9, 0, 4, 0);
		virtio_pcicfg_write(d, cbar, off + VC_NUMQ, 2, 0x5555);
		virtio_pcicfg_write(d, cbar, (uint32_t)size, 4, 0);
		virtio_pcicfg_write(d, cbar, off + 3, 2, 0);
		virtio_pcicfg_write(d, cbar, off, 0x10000, 0);
		pci_write8(d->slot, d->cap_pcicfg + VIRTIO_CAP_PCI_DATA + 3, 0xff);
		pci_write16(d->slot, d->cap_pcicfg + VIRTIO_CAP_PCI_DATA + 1, 0xffff);
		if (vc_read16(d, VC_NUMQ) != nq)
			soft_fail("num_queues changed through the pci cfg access capability");
	}
	if (!virtio_reset(d))
		fail("reset after odd accesses did not complete");
	print("hostile: odd-width/unaligned BAR, MSI-X and cfg-access accesses: ok\n");
}

/* ---- 3: bad queue setups ---- */

static void bad_queue_setup(const char *what, uint16_t size, int64_t desc_delta, int64_t used_delta,
                            uint64_t desc_abs)
{
	const char *err = virtio_negotiate(&rng, 0);
	uint64_t desc = (uint64_t)(uintptr_t)rq.desc, avail = (uint64_t)(uintptr_t)rq.avail;
	uint64_t used = (uint64_t)(uintptr_t)rq.used;

	if (err)
		failf("rng: %s", err);
	vc_write16(&rng, VC_Q_SELECT, 0);
	vq_program(&rng, 0, size, desc_abs ? desc_abs : desc + (uint64_t)desc_delta, avail,
	           used + (uint64_t)used_delta, false);
	if (vc_read16(&rng, VC_Q_SIZE) != size) {
		print("hostile: %s: queue_size write refused (reads %u)\n", what,
		      vc_read16(&rng, VC_Q_SIZE));
		if (!virtio_reset(&rng))
			failf("%s: reset did not complete", what);
		return;
	}
	vc_write16(&rng, VC_Q_ENABLE, 1);
	virtio_add_status(&rng, VIRTIO_STATUS_DRIVER_OK);
	expect_needs_reset(&rng, what);
}

static void bad_queue_setups(void)
{
	uint16_t max;

	/* queue_size reads the maximum only until the driver writes a smaller size. */
	if (!virtio_reset(&rng))
		fail("rng: reset did not complete");
	vc_write16(&rng, VC_Q_SELECT, 0);
	max = vc_read16(&rng, VC_Q_SIZE);
	bad_queue_setup("desc table beyond RAM", 16, 0, 0, 0x100000000000ull);
	bad_queue_setup("desc table in the MMIO hole", 16, 0, 0, 0xfec00000u);
	bad_queue_setup("desc table across the end of RAM", 16, 0, 0, ram_end - 64);
	bad_queue_setup("unaligned desc table", 16, 8, 0, 0);
	bad_queue_setup("unaligned used ring", 16, 0, 2, 0);
	bad_queue_setup("queue_size 15", 15, 0, 0, 0);
	bad_queue_setup("queue_size 0", 0, 0, 0, 0);
	if (max < 0x8000)
		bad_queue_setup("queue_size above the maximum", (uint16_t)(max * 2), 0, 0, 0);
	bad_queue_setup("queue_size 0xffff", 0xffff, 0, 0, 0);

	/* DRIVER_OK without FEATURES_OK, and queue registers written after DRIVER_OK. */
	if (!virtio_reset(&rng))
		fail("rng: reset");
	virtio_add_status(&rng, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	virtio_add_status(&rng, VIRTIO_STATUS_DRIVER_OK);
	(void)virtio_status(&rng);
	if (!virtio_reset(&rng))
		fail("rng: reset after DRIVER_OK without FEATURES_OK");

	vq_clear(&rq);
	rng_init(true);
	rng_draw("after bad queue setups");
	print("hostile: rng works after bad queue setups\n");

	/*
	 * Queue registers rewritten while the device runs (the driver must not; what the
	 * device makes of it is up to it, as long as a reset brings it back).
	 */
	vc_write16(&rng, VC_Q_SELECT, 0);
	vc_write16(&rng, VC_Q_SIZE, 2);
	vc_write64(&rng, VC_Q_DESC, 0x100000000000ull);
	vc_write16(&rng, VC_Q_ENABLE, 0);
	vc_write32(&rng, VC_GF, 0);
	{
		struct vbuf b = {rbuf, RNG_BUF, true};
		uint32_t id, len;
		int r;

		vq_publish(&rq, vq_chain(&rq, 0, &b, 1));
		vq_notify(&rq);
		r = vq_wait(&rq, 2000, &id, &len);
		print("hostile: queue registers rewritten after DRIVER_OK: %s\n",
		      r == VQ_DONE          ? "ignored"
		      : r == VQ_NEEDS_RESET ? "NEEDS_RESET"
		                            : "queue stopped");
	}
	if (!virtio_reset(&rng))
		fail("rng: reset after queue writes while DRIVER_OK");
	vq_clear(&rq);
	rng_init(false);
	rng_draw("after a reset");
}

/* ---- 4: bad chains ---- */

/* Publishes head (descriptors already written) and accepts completion with len 0 or NEEDS_RESET. */
static void submit_bad(const char *what, uint16_t head)
{
	uint32_t id, len;
	int r;

	vq_publish(&rq, head);
	vq_notify(&rq);
	r = vq_wait(&rq, 2000, &id, &len);
	if (r == VQ_DONE) {
		if (len != 0)
			soft_fail("%s: completed with used.len %u (id %u), expected 0", what, len,
			          id);
		print("hostile: %s: completed, used.len 0\n", what);
	} else if (r == VQ_NEEDS_RESET) {
		expect_needs_reset(&rng, what);
		vq_clear(&rq);
		rng_init(false);
	} else {
		soft_fail("%s: neither completed nor NEEDS_RESET within 2 s (status 0x%x)", what,
		          virtio_status(&rng));
		if (!virtio_reset(&rng))
			failf("%s: reset did not complete", what);
		vq_clear(&rq);
		rng_init(false);
	}
	rng_draw(what);
}

static void set_desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	rq.desc[i].addr = addr;
	rq.desc[i].len = len;
	rq.desc[i].flags = flags;
	rq.desc[i].next = next;
}

static void bad_chains(void)
{
	uint64_t buf = (uint64_t)(uintptr_t)rbuf;
	const uint16_t W = VRING_DESC_F_WRITE, N = VRING_DESC_F_NEXT, I = VRING_DESC_F_INDIRECT;

	set_desc(0, buf, RNG_BUF, W | N, 0);
	submit_bad("descriptor chained to itself", 0);
	set_desc(0, buf, 8, W | N, 1);
	set_desc(1, buf + 8, 8, W | N, 0);
	submit_bad("two-descriptor loop", 0);
	set_desc(0, buf, 8, W | N, (uint16_t)(rq.size + 5));
	submit_bad("next beyond the queue", 0);
	set_desc(0, 0x100000000000ull, RNG_BUF, W, 0);
	submit_bad("buffer beyond RAM", 0);
	set_desc(0, 0xfec00000u, RNG_BUF, W, 0);
	submit_bad("buffer in the MMIO hole (IOAPIC)", 0);
	set_desc(0, ram_end - 16, RNG_BUF, W, 0);
	submit_bad("buffer across the end of RAM", 0);
	set_desc(0, buf, 0xffffffffu, W, 0);
	submit_bad("buffer of 4 GiB - 1", 0);
	set_desc(0, 0xfffffffffffffff0ull, 0x20, W, 0);
	submit_bad("buffer address wrapping around", 0);
	set_desc(0, buf, 0, W, 0);
	submit_bad("zero-length buffer", 0);
	set_desc(0, buf, RNG_BUF, 0, 0);
	submit_bad("device-readable buffer for rng", 0);
	/* An avail ring entry naming a descriptor that does not exist. */
	submit_bad("avail entry 0xffff", 0xffff);

	if (rng.driver_features & (1ull << VIRTIO_F_INDIRECT_DESC)) {
		volatile struct vring_desc *t = dma_alloc(4 * sizeof(struct vring_desc), 16);
		uint64_t ta = (uint64_t)(uintptr_t)t;

		t[0].addr = ta;
		t[0].len = 32;
		t[0].flags = I;
		t[0].next = 0;
		set_desc(0, ta, 16, I, 0);
		submit_bad("indirect table inside an indirect table", 0);
		t[0].addr = buf;
		t[0].len = RNG_BUF;
		t[0].flags = W | N;
		t[0].next = 0;
		set_desc(0, ta, 16, I, 0);
		submit_bad("indirect descriptor chained to itself", 0);
		t[0].flags = W | N;
		t[0].next = 9;
		set_desc(0, ta, 16, I, 0);
		submit_bad("indirect next beyond the table", 0);
		set_desc(0, ta, 24, I, 0);
		submit_bad("indirect table length 24", 0);
		set_desc(0, ta, 0, I, 0);
		submit_bad("indirect table length 0", 0);
		set_desc(0, 0x100000000000ull, 64, I, 0);
		submit_bad("indirect table beyond RAM", 0);
		t[0].flags = W;
		set_desc(0, ta, 16, I | N, 1);
		set_desc(1, buf, 8, W, 0);
		submit_bad("INDIRECT together with NEXT", 0);
	}
	print("hostile: rng works after bad descriptor chains\n");
}

static void avail_idx_jump(void)
{
	rq.avail->ring[rq.avail_idx % rq.size] = 0;
	set_desc(0, (uint64_t)(uintptr_t)rbuf, RNG_BUF, VRING_DESC_F_WRITE, 0);
	barrier();
	rq.avail->idx = (uint16_t)(rq.avail_idx + 1000);
	barrier();
	vq_notify(&rq);
	expect_needs_reset(&rng, "avail.idx 1000 ahead");
	vq_clear(&rq);
	rng_init(false);
	rng_draw("after avail.idx jump");
}

static void bogus_notifies(void)
{
	for (unsigned i = 1; i < 8; i++)
		mmio_write16(rq.notify_addr, (uint16_t)i);
	mmio_write16(rq.notify_addr, 0xffff);
	for (unsigned i = 1; i < 64 && (uint64_t)i * rng.notify_mult + 2 <= rng.notify_len; i++)
		mmio_write16(rng.notify + (uint64_t)i * rng.notify_mult, (uint16_t)i);
	mmio_write32(rq.notify_addr, 0);
	mmio_write8(rq.notify_addr, 0);
	rng_draw("after notifies for nonexistent queues");
	print("hostile: notifies for nonexistent queues: ignored\n");
}

static void msix_abuse(void)
{
	uint16_t v;

	msix_enable(&rng, true);
	vc_write16(&rng, VC_Q_SELECT, 0);
	vc_write16(&rng, VC_Q_MSIX, (uint16_t)(rng.msix_size + 3));
	v = vc_read16(&rng, VC_Q_MSIX);
	if (v != VIRTIO_MSI_NO_VECTOR)
		soft_fail("queue_msix_vector %u (table has %u entries) reads 0x%x, not NO_VECTOR",
		          rng.msix_size + 3, rng.msix_size, v);
	vc_write16(&rng, VC_MSIX, 0x7ff);
	v = vc_read16(&rng, VC_MSIX);
	if (v != VIRTIO_MSI_NO_VECTOR)
		soft_fail("config_msix_vector 0x7ff reads 0x%x, not NO_VECTOR", v);
	rng_draw("with an out-of-range MSI-X vector");
	/* A vector that really fires (to vector 0x30; interrupts are off, so it just waits). */
	vc_write16(&rng, VC_Q_MSIX, 0);
	msix_entry_write(&rng, 0, 0, 0xfee00000u);
	msix_entry_write(&rng, 0, 4, 0);
	msix_entry_write(&rng, 0, 8, 0x30);
	msix_entry_write(&rng, 0, MSIX_ENTRY_CTRL, 0);
	rng_draw("with an unmasked MSI-X vector");
	/* Function mask, then out-of-range entries while enabled. */
	pci_write16(rng.slot, rng.cap_msix + MSIX_CTRL, MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL);
	rng_draw("with the MSI-X function masked");
	for (unsigned e = rng.msix_size; e < 0x800 / 16; e += 17)
		msix_entry_write(&rng, e, MSIX_ENTRY_CTRL, 0);
	msix_entry_write(&rng, 0, MSIX_ENTRY_CTRL, MSIX_ENTRY_MASKED);
	msix_enable(&rng, false);
	vc_write16(&rng, VC_Q_MSIX, VIRTIO_MSI_NO_VECTOR);
	rng_draw("after MSI-X abuse");
	print("hostile: MSI-X out-of-range vectors and entries: ok\n");
}

/* ---- 5: BARs moved under live devices ---- */

static void move_bar2(struct virtio_pci *d, uint64_t addr, bool decoding_on)
{
	uint16_t cmd = pci_read16(d->slot, PCI_COMMAND);

	if (!decoding_on)
		pci_write16(d->slot, PCI_COMMAND, (uint16_t)(cmd & ~PCI_COMMAND_MEMORY));
	pci_set_bar(d->slot, 2, &d->bar[2], addr);
	pci_write16(d->slot, PCI_COMMAND, (uint16_t)(cmd | PCI_COMMAND_MEMORY));
	d->bar[2].addr = addr;
	if (addr < 0x100000000ull && virtio_parse_caps(d))
		fail("capabilities unusable after moving BAR2");
}

static void bar_moves(void)
{
	uint64_t old = rng.bar[2].addr, a = pci_alloc_mmio(rng.bar[2].size);
	uint64_t b = pci_alloc_mmio(rng.bar[2].size);
	uint64_t old_common = rng.common;

	move_bar2(&rng, a, false);
	rq.notify_addr = rng.notify; /* queue 0 */
	vc_write16(&rng, VC_Q_SELECT, 0);
	rq.notify_addr = rng.notify + (uint64_t)vc_read16(&rng, VC_Q_NOFF) * rng.notify_mult;
	if (mmio_read16(old_common + VC_NUMQ) != 0xffff)
		soft_fail("BAR2 still decodes at its old address after moving");
	rng_draw("after moving BAR2");
	print("hostile: BAR2 moved %p -> %p under a live device: ok\n", (void *)old, (void *)a);

	move_bar2(&rng, b, true);
	rq.notify_addr = rng.notify + (uint64_t)vc_read16(&rng, VC_Q_NOFF) * rng.notify_mult;
	rng_draw("after moving BAR2 with decoding on");

	/* Above 4 GiB (out of our reach), onto RAM, then back. */
	move_bar2(&rng, 0x800000000ull, false);
	move_bar2(&rng, 0x2800000u, false);
	move_bar2(&rng, 0, false);
	move_bar2(&rng, a, false);
	rq.notify_addr = rng.notify + (uint64_t)vc_read16(&rng, VC_Q_NOFF) * rng.notify_mult;
	rng_draw("after BAR2 went above 4 GiB, onto RAM and back");

	/* Memory decoding off: registers read all-ones, a kick goes nowhere; then on again. */
	pci_write16(rng.slot, PCI_COMMAND,
	            (uint16_t)(pci_read16(rng.slot, PCI_COMMAND) & ~PCI_COMMAND_MEMORY));
	if (mmio_read16(rng.common + VC_NUMQ) != 0xffff)
		soft_fail("BAR2 decodes with memory decoding off");
	pci_write16(rng.slot, PCI_COMMAND,
	            (uint16_t)(pci_read16(rng.slot, PCI_COMMAND) | PCI_COMMAND_MEMORY));
	rng_draw("after toggling memory decoding");

	if (have_blk && blk.bar[2].size == rng.bar[2].size) {
		uint64_t blk_old = blk.bar[2].addr;

		/* Two devices' BARs on top of each other, then apart again. */
		move_bar2(&blk, rng.bar[2].addr, false);
		(void)vc_read16(&rng, VC_NUMQ);
		mmio_write16(rq.notify_addr, 0);
		move_bar2(&blk, blk_old, false);
		/* Whichever device the overlap reached, reset it now that it is apart. */
		move_bar2(&rng, rng.bar[2].addr, false);
		if (vc_read16(&rng, VC_NUMQ) != rng.num_queues ||
		    vc_read16(&blk, VC_NUMQ) != blk.num_queues)
			soft_fail("num_queues wrong after overlapping BARs were separated");
		if (virtio_status(&rng) & VIRTIO_STATUS_NEEDS_RESET) {
			virtio_reset(&rng);
			vq_clear(&rq);
			rng_init(false);
		}
		rng_draw("after two BARs overlapped");
		print("hostile: overlapping BARs of two devices, then apart: ok\n");
	}
}

/* ---- 6: malformed block requests ---- */

struct blk_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

static void blk_init(void)
{
	const char *err = virtio_negotiate(&blk, 1ull << VIRTIO_F_INDIRECT_DESC);

	if (err)
		failf("blk: %s", err);
	err = vq_setup(&blk, &bq, 0, 16);
	if (err)
		failf("blk: queue 0: %s", err);
	virtio_add_status(&blk, VIRTIO_STATUS_DRIVER_OK);
	if (virtio_status(&blk) & VIRTIO_STATUS_NEEDS_RESET)
		fail("blk: NEEDS_RESET right after DRIVER_OK");
}

/*
 * Sends the chain; returns the status byte (0xee if the device never wrote it), or -1 if
 * the device went NEEDS_RESET (it is then reset and set up again).
 */
static int blk_bad(const char *what, const struct vbuf *bufs, unsigned n, volatile uint8_t *st)
{
	uint32_t id, len;
	int r;

	if (st)
		*st = 0xee;
	vq_chain(&bq, 0, bufs, n);
	vq_publish(&bq, 0);
	vq_notify(&bq);
	r = vq_wait(&bq, 2000, &id, &len);
	if (r == VQ_TIMEOUT) {
		soft_fail("blk %s: neither completed nor NEEDS_RESET within 2 s (status 0x%x)",
		          what, virtio_status(&blk));
		if (!virtio_reset(&blk))
			failf("blk %s: reset did not complete", what);
		vq_clear(&bq);
		blk_init();
		return -1;
	}
	if (r == VQ_NEEDS_RESET) {
		expect_needs_reset(&blk, what);
		vq_clear(&bq);
		blk_init();
		return -1;
	}
	print("hostile: blk %s: completed, used.len %u, status %u\n", what, len, st ? *st : 0xee);
	return st ? *st : 0xee;
}

static void blk_read_ok(const char *when, uint8_t *data, volatile struct blk_hdr *h,
                        volatile uint8_t *st)
{
	struct vbuf b[3] = {{(void *)h, 16, false}, {data, 512, true}, {(void *)st, 1, true}};
	uint32_t len;

	h->type = VIRTIO_BLK_T_IN;
	h->reserved = 0;
	h->sector = 0;
	*st = 0xee;
	len = vq_transfer(&bq, b, 3);
	if (*st != VIRTIO_BLK_S_OK || len != 513)
		failf("blk read %s: status %u used.len %u", when, *st, len);
}

/*
 * queue_size above the device's maximum, then a request whose head descriptor index is
 * beyond that maximum (a device that sizes per-request state by its maximum must have
 * refused the size).
 */
static void blk_oversized_queue(volatile struct blk_hdr *h, volatile uint8_t *st, uint8_t *data)
{
	struct vq q;
	uint16_t max, head;
	uint32_t id, len;
	int r;

	if (virtio_negotiate(&blk, 0))
		fail("blk: negotiate");
	vc_write16(&blk, VC_Q_SELECT, 0);
	max = vc_read16(&blk, VC_Q_SIZE);
	if (max == 0 || max >= 0x8000) {
		virtio_reset(&blk);
		return;
	}
	memset(&q, 0, sizeof(q));
	q.dev = &blk;
	q.size = (uint16_t)(max * 2);
	q.desc = dma_alloc(16u * q.size, 4096);
	q.avail = dma_alloc(6u + 2u * q.size, 64);
	q.used = dma_alloc(6u + 8u * q.size, 64);
	vq_program(&blk, 0, q.size, (uint64_t)(uintptr_t)q.desc, (uint64_t)(uintptr_t)q.avail,
	           (uint64_t)(uintptr_t)q.used, false);
	if (vc_read16(&blk, VC_Q_SIZE) != q.size) {
		print("hostile: blk queue_size %u (max %u): refused\n", q.size, max);
		virtio_reset(&blk);
		return;
	}
	q.notify_addr = blk.notify + (uint64_t)vc_read16(&blk, VC_Q_NOFF) * blk.notify_mult;
	vc_write16(&blk, VC_Q_ENABLE, 1);
	virtio_add_status(&blk, VIRTIO_STATUS_DRIVER_OK);
	if (virtio_status(&blk) & VIRTIO_STATUS_NEEDS_RESET) {
		print("hostile: blk queue_size %u (max %u): NEEDS_RESET at DRIVER_OK\n", q.size,
		      max);
		virtio_reset(&blk);
		return;
	}
	soft_fail("blk: queue_size %u above the maximum %u accepted at DRIVER_OK", q.size, max);

	head = max; /* the first index past the maximum */
	h->type = VIRTIO_BLK_T_IN;
	h->reserved = 0;
	h->sector = 0;
	*st = 0xee;
	vq_chain(&q, head,
	         (struct vbuf[]){{(void *)h, 16, false}, {data, 512, true}, {(void *)st, 1, true}},
	         3);
	vq_publish(&q, head);
	vq_notify(&q);
	r = vq_wait(&q, 2000, &id, &len);
	print("hostile: blk request with head %u in a queue of %u (max %u): %s, status %u\n", head,
	      q.size, max,
	      r == VQ_DONE          ? "completed"
	      : r == VQ_NEEDS_RESET ? "NEEDS_RESET"
	                            : "no answer",
	      *st);
	if (!virtio_reset(&blk))
		fail("blk: reset after the oversized queue");
}

static void blk_abuse(void)
{
	volatile struct blk_hdr *h = dma_alloc(sizeof(*h), 16);
	volatile uint8_t *st = dma_alloc(1, 1);
	uint8_t *data = dma_alloc(4096, 4096);
	int r;

	blk_init();
	blk_read_ok("before abuse", data, h, st);

	h->type = VIRTIO_BLK_T_IN;
	h->sector = 0;
	blk_bad("8-byte header", (struct vbuf[]){{(void *)h, 8, false}, {(void *)st, 1, true}}, 2,
	        st);
	blk_bad("header only, no status",
	        (struct vbuf[]){{(void *)h, 16, false}, {data, 512, true}}, 2, NULL);
	blk_bad("device-readable status",
	        (struct vbuf[]){{(void *)h, 16, false}, {data, 512, true}, {(void *)st, 1, false}},
	        3, st);
	blk_bad("zero-length status",
	        (struct vbuf[]){{(void *)h, 16, false}, {data, 512, true}, {(void *)st, 0, true}},
	        3, st);
	blk_bad("read of 100 bytes",
	        (struct vbuf[]){{(void *)h, 16, false}, {data, 100, true}, {(void *)st, 1, true}},
	        3, st);
	blk_bad("device-writable header",
	        (struct vbuf[]){{(void *)h, 16, true}, {data, 512, true}, {(void *)st, 1, true}}, 3,
	        st);
	blk_bad("read into a device-readable buffer",
	        (struct vbuf[]){{(void *)h, 16, false}, {data, 512, false}, {(void *)st, 1, true}},
	        3, st);

	h->type = 0x77;
	r = blk_bad(
	    "unknown request type",
	    (struct vbuf[]){{(void *)h, 16, false}, {data, 512, true}, {(void *)st, 1, true}}, 3,
	    st);
	if (r >= 0 && r != VIRTIO_BLK_S_UNSUPP)
		soft_fail("blk: unknown request type: status %d, not UNSUPP", r);

	h->type = VIRTIO_BLK_T_IN;
	h->sector = 0xffffffffffffffffull;
	r = blk_bad(
	    "read of sector 2^64-1",
	    (struct vbuf[]){{(void *)h, 16, false}, {data, 512, true}, {(void *)st, 1, true}}, 3,
	    st);
	if (r == VIRTIO_BLK_S_OK)
		soft_fail("blk: read of sector 2^64-1 succeeded");
	h->type = VIRTIO_BLK_T_OUT;
	h->sector = 0x0080000000000000ull; /* * 512 overflows 64 bits */
	r = blk_bad(
	    "write of sector 2^55",
	    (struct vbuf[]){{(void *)h, 16, false}, {data, 512, false}, {(void *)st, 1, true}}, 3,
	    st);
	if (r == VIRTIO_BLK_S_OK)
		soft_fail("blk: write at sector 2^55 succeeded");
	h->type = VIRTIO_BLK_T_IN;
	h->sector = 0;
	blk_bad("data buffer beyond RAM",
	        (struct vbuf[]){{(void *)h, 16, false},
	                        {phys(0x100000000000ull), 512, true},
	                        {(void *)st, 1, true}},
	        3, st);
	blk_bad("header beyond RAM",
	        (struct vbuf[]){
	            {phys(0x100000000000ull), 16, false}, {data, 512, true}, {(void *)st, 1, true}},
	        3, st);

	blk_oversized_queue(h, st, data);
	vq_clear(&bq);
	blk_init();
	blk_read_ok("after abuse", data, h, st);
	if (!virtio_reset(&blk))
		fail("blk: reset");
	print("hostile: blk works after malformed requests\n");
}

static uint64_t find_ram_end(struct boot_params *bp)
{
	uint64_t end = 0;

	for (unsigned i = 0; i < bp_e820_count(bp); i++) {
		const struct e820_entry *e = bp_e820_entry(bp, i);

		if (e->type == E820_RAM && e->addr + e->size <= 0x100000000ull &&
		    e->addr + e->size > end)
			end = e->addr + e->size;
	}
	return end;
}

void guest_main(struct boot_params *bp)
{
	int rs, bs;

	print("pci_hostile: start\n");
	ram_end = find_ram_end(bp);
	if (ram_end < 0x4000000u)
		failf("pci_hostile wants >= 64 MiB of RAM below 4 GiB (have %p)", (void *)ram_end);
	pci_scan_print();
	rs = pci_find(VIRTIO_VENDOR, VIRTIO_DEVICE_BASE + VIRTIO_ID_RNG);
	bs = pci_find(VIRTIO_VENDOR, VIRTIO_DEVICE_BASE + VIRTIO_ID_BLOCK);
	if (rs < 0)
		fail("no virtio-rng device (run with --rng)");

	config_space_garbage();
	config_mechanism_oddities((unsigned)rs);

	virtio_find(&rng, VIRTIO_ID_RNG);
	if (bs >= 0) {
		virtio_find(&blk, VIRTIO_ID_BLOCK);
		have_blk = true;
	}
	rbuf = dma_alloc(RNG_BUF, 64);

	odd_bar_accesses(&rng);
	if (have_blk)
		odd_bar_accesses(&blk);

	rng_init(false);
	rng_draw("first request");
	bad_queue_setups();
	bad_chains();
	avail_idx_jump();
	bogus_notifies();
	if (rng.cap_msix)
		msix_abuse();
	bar_moves();
	if (have_blk)
		blk_abuse();

	rng_draw("final request");
	print("hostile: monitor survived, rng still works\n");
	if (nfailed)
		failf("%u checks failed (the 'hostile: FAILED' lines)", nfailed);
	pass();
}
