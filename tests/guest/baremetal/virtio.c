/* virtio.c: the polling virtio 1.x PCI driver core (see virtio.h). */
#include "virtio.h"

/* ---- memory ---- */

#define DMA_BASE 0x1000000u
#define DMA_END  0x3000000u

static uint64_t dma_next = DMA_BASE;

void *dma_alloc(uint64_t size, uint64_t align)
{
	uint64_t addr = (dma_next + align - 1) & ~(align - 1);

	if (addr + size > DMA_END)
		fail("dma_alloc: out of memory for rings and buffers");
	dma_next = addr + size;
	memset(phys(addr), 0, size);
	return phys(addr);
}

void print_hexbytes(const void *p, size_t n)
{
	const volatile uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		print("%02x", b[i]);
}

/* ---- common config ---- */

uint8_t vc_read8(const struct virtio_pci *d, unsigned off)
{
	return mmio_read8(d->common + off);
}

uint16_t vc_read16(const struct virtio_pci *d, unsigned off)
{
	return mmio_read16(d->common + off);
}

uint32_t vc_read32(const struct virtio_pci *d, unsigned off)
{
	return mmio_read32(d->common + off);
}

void vc_write8(const struct virtio_pci *d, unsigned off, uint8_t v)
{
	mmio_write8(d->common + off, v);
}

void vc_write16(const struct virtio_pci *d, unsigned off, uint16_t v)
{
	mmio_write16(d->common + off, v);
}

void vc_write32(const struct virtio_pci *d, unsigned off, uint32_t v)
{
	mmio_write32(d->common + off, v);
}

void vc_write64(const struct virtio_pci *d, unsigned off, uint64_t v)
{
	vc_write32(d, off, (uint32_t)v);
	vc_write32(d, off + 4, (uint32_t)(v >> 32));
}

uint64_t vc_read64(const struct virtio_pci *d, unsigned off)
{
	uint64_t lo = vc_read32(d, off);

	return lo | (uint64_t)vc_read32(d, off + 4) << 32;
}

/* ---- discovery ---- */

const char *virtio_parse_caps(struct virtio_pci *d)
{
	unsigned s = d->slot;

	d->cap_common = d->cap_notify = d->cap_isr = d->cap_device = d->cap_pcicfg = 0;
	for (unsigned c = pci_find_cap(s, PCI_CAP_ID_VENDOR, 0); c;
	     c = pci_find_cap(s, PCI_CAP_ID_VENDOR, c)) {
		uint8_t type = pci_read8(s, c + VIRTIO_CAP_CFG_TYPE);
		uint8_t len = pci_read8(s, c + VIRTIO_CAP_LEN);
		uint8_t bar = pci_read8(s, c + VIRTIO_CAP_BAR);
		uint32_t off = pci_read32(s, c + VIRTIO_CAP_OFFSET);
		uint32_t length = pci_read32(s, c + VIRTIO_CAP_LENGTH);
		uint64_t base;

		print("virtio: cap at 0x%02x type %u bar %u offset 0x%x length 0x%x\n", c, type,
		      bar, off, length);
		if (type == VIRTIO_PCI_CAP_PCI_CFG) {
			if (!d->cap_pcicfg && len >= 20)
				d->cap_pcicfg = c;
			continue;
		}
		/* Only the first usable capability of each type counts (4.1.4.1). */
		if (bar > 5 || d->bar[bar].io || !d->bar[bar].size ||
		    (uint64_t)off + length > d->bar[bar].size)
			continue;
		base = d->bar[bar].addr + off;
		switch (type) {
		case VIRTIO_PCI_CAP_COMMON_CFG:
			if (!d->cap_common && length >= VC_MIN_LEN) {
				d->cap_common = c;
				d->common = base;
				d->common_len = length;
			}
			break;
		case VIRTIO_PCI_CAP_NOTIFY_CFG:
			if (!d->cap_notify && len >= 20) {
				d->cap_notify = c;
				d->notify = base;
				d->notify_len = length;
				d->notify_mult = pci_read32(s, c + VIRTIO_CAP_NOTIFY_MUL);
			}
			break;
		case VIRTIO_PCI_CAP_ISR_CFG:
			if (!d->cap_isr && length >= 1) {
				d->cap_isr = c;
				d->isr = base;
				d->isr_len = length;
			}
			break;
		case VIRTIO_PCI_CAP_DEVICE_CFG:
			if (!d->cap_device) {
				d->cap_device = c;
				d->devcfg = base;
				d->devcfg_len = length;
			}
			break;
		default:
			break;
		}
	}
	if (!d->cap_common)
		return "no common configuration capability";
	if (!d->cap_notify)
		return "no notification capability";
	if (!d->cap_isr)
		return "no ISR capability";

	d->cap_msix = pci_find_cap(s, PCI_CAP_ID_MSIX, 0);
	if (d->cap_msix) {
		uint32_t t = pci_read32(s, d->cap_msix + MSIX_TABLE);
		uint32_t p = pci_read32(s, d->cap_msix + MSIX_PBA);

		d->msix_size = (uint16_t)((pci_read16(s, d->cap_msix + MSIX_CTRL) & 0x7ff) + 1);
		if ((t & 7) > 5 || (p & 7) > 5 || !d->bar[t & 7].size || !d->bar[p & 7].size)
			return "MSI-X table or PBA in a BAR that does not exist";
		d->msix_table = d->bar[t & 7].addr + (t & ~7u);
		d->msix_pba = d->bar[p & 7].addr + (p & ~7u);
		print("virtio: msix cap at 0x%02x, %u vectors, table %p pba %p\n", d->cap_msix,
		      d->msix_size, (void *)d->msix_table, (void *)d->msix_pba);
	}
	d->num_queues = vc_read16(d, VC_NUMQ);
	return NULL;
}

void virtio_find(struct virtio_pci *d, uint16_t id)
{
	int slot = pci_find(VIRTIO_VENDOR, (uint16_t)(VIRTIO_DEVICE_BASE + id));
	const char *err;

	memset(d, 0, sizeof(*d));
	if (slot < 0)
		failf("no virtio device with id %u (PCI %04x:%04x)", id, VIRTIO_VENDOR,
		      VIRTIO_DEVICE_BASE + id);
	d->slot = (unsigned)slot;
	d->device_id = (uint16_t)(VIRTIO_DEVICE_BASE + id);
	if (pci_read8(d->slot, PCI_REVISION_ID) < 1)
		failf("virtio device in slot %u has revision %u (modern devices have >= 1)", slot,
		      pci_read8(d->slot, PCI_REVISION_ID));
	err = pci_setup_bars(d->slot, d->bar);
	if (err)
		failf("slot %u: %s", slot, err);
	for (unsigned n = 0; n < 6; n++) {
		if (d->bar[n].size)
			print("virtio: slot %u bar %u %s%s at %p size 0x%lx\n", slot, n,
			      d->bar[n].io      ? "io"
			      : d->bar[n].mem64 ? "mem64"
			                        : "mem32",
			      d->bar[n].prefetch ? " prefetch" : "", (void *)d->bar[n].addr,
			      d->bar[n].size);
	}
	err = virtio_parse_caps(d);
	if (err)
		failf("slot %u: %s", slot, err);
	print("virtio: slot %u common %p isr %p device %p notify %p (x%u), %u queues\n", slot,
	      (void *)d->common, (void *)d->isr, (void *)d->devcfg, (void *)d->notify,
	      d->notify_mult, d->num_queues);
}

/* ---- status and features ---- */

uint8_t virtio_status(const struct virtio_pci *d)
{
	return vc_read8(d, VC_STATUS);
}

void virtio_add_status(const struct virtio_pci *d, uint8_t bits)
{
	vc_write8(d, VC_STATUS, (uint8_t)(virtio_status(d) | bits));
}

bool virtio_reset(const struct virtio_pci *d)
{
	uint64_t end;

	vc_write8(d, VC_STATUS, 0);
	end = pmtimer_ticks() + 5ull * PMTIMER_HZ;
	while (virtio_status(d) != 0) {
		if (pmtimer_ticks() > end)
			return false;
	}
	return true;
}

const char *virtio_negotiate(struct virtio_pci *d, uint64_t wanted)
{
	uint8_t st;

	if (!virtio_reset(d))
		return "device status did not read 0 within 5 s of a reset";
	virtio_add_status(d, VIRTIO_STATUS_ACKNOWLEDGE);
	virtio_add_status(d, VIRTIO_STATUS_DRIVER);
	vc_write32(d, VC_DFSELECT, 0);
	d->features = vc_read32(d, VC_DF);
	vc_write32(d, VC_DFSELECT, 1);
	d->features |= (uint64_t)vc_read32(d, VC_DF) << 32;
	if (!(d->features & (1ull << VIRTIO_F_VERSION_1)))
		return "device does not offer VIRTIO_F_VERSION_1";
	d->driver_features = d->features & (wanted | 1ull << VIRTIO_F_VERSION_1);
	vc_write32(d, VC_GFSELECT, 0);
	vc_write32(d, VC_GF, (uint32_t)d->driver_features);
	vc_write32(d, VC_GFSELECT, 1);
	vc_write32(d, VC_GF, (uint32_t)(d->driver_features >> 32));
	virtio_add_status(d, VIRTIO_STATUS_FEATURES_OK);
	st = virtio_status(d);
	print("virtio: features offered 0x%lx accepted 0x%lx, status 0x%x\n", d->features,
	      d->driver_features, st);
	if (!(st & VIRTIO_STATUS_FEATURES_OK))
		return "FEATURES_OK did not stick";
	return NULL;
}

/* ---- queues ---- */

void vq_program(const struct virtio_pci *d, uint16_t index, uint16_t size, uint64_t desc,
                uint64_t driver, uint64_t device, bool enable)
{
	vc_write16(d, VC_Q_SELECT, index);
	vc_write16(d, VC_Q_SIZE, size);
	vc_write64(d, VC_Q_DESC, desc);
	vc_write64(d, VC_Q_DRIVER, driver);
	vc_write64(d, VC_Q_DEVICE, device);
	if (enable)
		vc_write16(d, VC_Q_ENABLE, 1);
}

const char *vq_setup(struct virtio_pci *d, struct vq *q, uint16_t index, uint16_t size)
{
	uint16_t max;

	memset(q, 0, sizeof(*q));
	q->dev = d;
	q->index = index;
	vc_write16(d, VC_Q_SELECT, index);
	max = vc_read16(d, VC_Q_SIZE);
	if (!max)
		return "queue_size reads 0 (no such queue)";
	if (vc_read16(d, VC_Q_ENABLE))
		return "queue_enable reads 1 before the driver enabled the queue";
	while (size > max)
		size >>= 1;
	if (!size)
		return "queue too small";
	q->size = size;
	q->desc = dma_alloc(16u * size, 4096);
	q->avail = dma_alloc(6u + 2u * size, 64);
	q->used = dma_alloc(6u + 8u * size, 64);
	vq_program(d, index, size, (uint64_t)(uintptr_t)q->desc, (uint64_t)(uintptr_t)q->avail,
	           (uint64_t)(uintptr_t)q->used, false);
	if (vc_read16(d, VC_Q_SIZE) != size)
		return "queue_size did not take the value written";
	if (vc_read64(d, VC_Q_DESC) != (uint64_t)(uintptr_t)q->desc ||
	    vc_read64(d, VC_Q_DRIVER) != (uint64_t)(uintptr_t)q->avail ||
	    vc_read64(d, VC_Q_DEVICE) != (uint64_t)(uintptr_t)q->used)
		return "queue addresses do not read back";
	q->notify_addr = d->notify + (uint64_t)vc_read16(d, VC_Q_NOFF) * d->notify_mult;
	if (q->notify_addr + 2 > d->notify + d->notify_len)
		return "queue_notify_off points beyond the notification structure";
	vc_write16(d, VC_Q_ENABLE, 1);
	if (vc_read16(d, VC_Q_ENABLE) != 1)
		return "queue_enable does not read 1 after enabling";
	return NULL;
}

void vq_clear(struct vq *q)
{
	memset((void *)q->desc, 0, 16u * q->size);
	memset((void *)q->avail, 0, 6u + 2u * q->size);
	memset((void *)q->used, 0, 6u + 8u * q->size);
	q->avail_idx = 0;
	q->last_used = 0;
}

uint16_t vq_chain(struct vq *q, uint16_t first, const struct vbuf *bufs, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		volatile struct vring_desc *dsc = &q->desc[(first + i) % q->size];

		dsc->addr = (uint64_t)(uintptr_t)bufs[i].addr;
		dsc->len = bufs[i].len;
		dsc->flags = (uint16_t)((bufs[i].write ? VRING_DESC_F_WRITE : 0) |
		                        (i + 1 < n ? VRING_DESC_F_NEXT : 0));
		dsc->next = (uint16_t)((first + i + 1) % q->size);
	}
	return first;
}

void vq_publish(struct vq *q, uint16_t head)
{
	q->avail->ring[q->avail_idx % q->size] = head;
	barrier();
	q->avail_idx++;
	q->avail->idx = q->avail_idx;
	barrier();
}

void vq_notify(struct vq *q)
{
	mmio_write16(q->notify_addr, q->index);
}

int vq_wait(struct vq *q, uint32_t timeout_ms, uint32_t *id, uint32_t *len)
{
	uint64_t end = pmtimer_ticks() + (uint64_t)timeout_ms * PMTIMER_HZ / 1000;

	for (unsigned i = 0;; i++) {
		if (q->used->idx != q->last_used) {
			volatile struct vring_used_elem *e;

			barrier();
			e = &q->used->ring[q->last_used % q->size];
			if (id)
				*id = e->id;
			if (len)
				*len = e->len;
			q->last_used++;
			return VQ_DONE;
		}
		if (pmtimer_ticks() > end)
			return VQ_TIMEOUT;
		if (i % 16 == 15 && (virtio_status(q->dev) & VIRTIO_STATUS_NEEDS_RESET))
			return VQ_NEEDS_RESET;
	}
}

uint32_t vq_transfer(struct vq *q, const struct vbuf *bufs, unsigned n)
{
	uint16_t head = vq_chain(q, 0, bufs, n);
	uint32_t id, len;
	int r;

	vq_publish(q, head);
	vq_notify(q);
	r = vq_wait(q, 5000, &id, &len);
	if (r == VQ_TIMEOUT)
		failf("queue %u: no used entry within 5 s (used.idx %u, status 0x%x)", q->index,
		      q->used->idx, virtio_status(q->dev));
	if (r == VQ_NEEDS_RESET)
		failf("queue %u: device set NEEDS_RESET (status 0x%x)", q->index,
		      virtio_status(q->dev));
	if (id != head)
		failf("queue %u: used id %u, expected %u", q->index, id, head);
	return len;
}

/* ---- device config, ISR, MSI-X ---- */

uint8_t virtio_cfg_read8(const struct virtio_pci *d, unsigned off)
{
	return mmio_read8(d->devcfg + off);
}

uint32_t virtio_cfg_read32(const struct virtio_pci *d, unsigned off)
{
	return mmio_read32(d->devcfg + off);
}

uint64_t virtio_cfg_read64(const struct virtio_pci *d, unsigned off)
{
	uint64_t v = 0;

	for (unsigned tries = 0; tries < 100; tries++) {
		uint8_t gen = vc_read8(d, VC_CFGGEN);

		v = virtio_cfg_read32(d, off);
		v |= (uint64_t)virtio_cfg_read32(d, off + 4) << 32;
		if (vc_read8(d, VC_CFGGEN) == gen)
			break;
	}
	return v;
}

uint8_t virtio_isr(const struct virtio_pci *d)
{
	return mmio_read8(d->isr);
}

void msix_enable(const struct virtio_pci *d, bool on)
{
	uint16_t ctrl = pci_read16(d->slot, d->cap_msix + MSIX_CTRL);

	ctrl &= (uint16_t) ~(MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL);
	if (on)
		ctrl |= MSIX_CTRL_ENABLE;
	pci_write16(d->slot, d->cap_msix + MSIX_CTRL, ctrl);
}

uint32_t msix_entry_read(const struct virtio_pci *d, unsigned entry, unsigned off)
{
	return mmio_read32(d->msix_table + (uint64_t)entry * MSIX_ENTRY_SIZE + off);
}

void msix_entry_write(const struct virtio_pci *d, unsigned entry, unsigned off, uint32_t v)
{
	mmio_write32(d->msix_table + (uint64_t)entry * MSIX_ENTRY_SIZE + off, v);
}

bool msix_pending(const struct virtio_pci *d, unsigned v)
{
	return mmio_read32(d->msix_pba + 4 * (v / 32)) & (1u << (v % 32));
}

/* ---- PCI configuration access capability ---- */

static void pcicfg_select(const struct virtio_pci *d, uint8_t bar, uint32_t off, uint32_t len)
{
	pci_write8(d->slot, d->cap_pcicfg + VIRTIO_CAP_BAR, bar);
	pci_write32(d->slot, d->cap_pcicfg + VIRTIO_CAP_OFFSET, off);
	pci_write32(d->slot, d->cap_pcicfg + VIRTIO_CAP_LENGTH, len);
}

uint32_t virtio_pcicfg_read(const struct virtio_pci *d, uint8_t bar, uint32_t off, uint32_t len)
{
	pcicfg_select(d, bar, off, len);
	return pci_read32(d->slot, d->cap_pcicfg + VIRTIO_CAP_PCI_DATA);
}

void virtio_pcicfg_write(const struct virtio_pci *d, uint8_t bar, uint32_t off, uint32_t len,
                         uint32_t v)
{
	pcicfg_select(d, bar, off, len);
	pci_write32(d->slot, d->cap_pcicfg + VIRTIO_CAP_PCI_DATA, v);
}
