/* virtio_pci.c: common configuration, ISR, notifications, capabilities, reset. */
#include "virtio_pci.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "hv.h"
#include "iothread.h"
#include "util.h"

#define VIRTIO_PCI_VENDOR      0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040

#define vdev_warn(d, fmt, ...)                                                                     \
	log_ratelimited(&(d)->rl, LOG_WARN, "%s: " fmt, (d)->name, ##__VA_ARGS__)

static const uint64_t transport_features =
    1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_F_INDIRECT_DESC | 1ull << VIRTIO_F_EVENT_IDX;

/* --- interrupts --- */

static void raise_isr(struct virtio_dev *d, uint8_t bit)
{
	pthread_mutex_lock(&d->isr_lock);
	d->isr |= bit;
	pci_set_intx(&d->pci, true);
	pthread_mutex_unlock(&d->isr_lock);
}

void virtio_queue_raise(struct virtio_queue *q)
{
	struct virtio_dev *d = q->dev;

	atomic_fetch_add_explicit(&d->interrupts, 1, memory_order_relaxed);
	if (!msix_notify_if_enabled(&d->msix, q->msix_vector))
		raise_isr(d, 1);
}

void virtio_queue_interrupt(struct virtio_queue *q)
{
	if (virtq_should_notify(&q->vq))
		virtio_queue_raise(q);
}

void virtio_config_changed(struct virtio_dev *d)
{
	uint16_t vec = atomic_load(&d->msix_config);

	atomic_fetch_add(&d->config_generation, 1);
	if (!msix_notify_if_enabled(&d->msix, vec))
		raise_isr(d, 2);
}

void virtio_set_needs_reset(struct virtio_dev *d)
{
	if (atomic_exchange(&d->needs_reset, true))
		return;
	log_warn("%s: device needs reset (the driver put something invalid in a queue)", d->name);
	virtio_config_changed(d);
	if (d->on_error)
		d->on_error(d->on_error_opaque, d->name, "needs-reset",
		            "the driver put something invalid in a queue; the device waits for a "
		            "reset");
}

void virtio_report_error(struct virtio_dev *d, const char *reason, const char *msg)
{
	if (d->on_error && ratelimit_ok(&d->error_rl))
		d->on_error(d->on_error_opaque, d->name, reason, msg);
}

/* --- what runs on the iothread --- */

/* The driver has the queue running: its rings may be looked at and handled. */
static bool queue_live(const struct virtio_queue *q)
{
	return q->dev->running && q->enabled && !q->vq.broken;
}

static void kick_ready(void *opaque, uint32_t events)
{
	struct virtio_queue *q = opaque;
	struct virtio_dev *d = q->dev;
	uint64_t n;

	(void)events;
	if (read(q->kick_fd, &n, sizeof(n)) < 0)
		return;
	atomic_fetch_add_explicit(&d->kicks, 1, memory_order_relaxed);
	if (queue_live(q))
		d->ops->queue_notify(d, q->index);
}

/* Polling the avail ring instead of waiting for kicks (iothread.h), for devices that ask. */

static bool queue_poll_ready(void *opaque)
{
	struct virtio_queue *q = opaque;

	return queue_live(q) && virtq_poll_ready(&q->vq);
}

static void queue_poll_run(void *opaque)
{
	struct virtio_queue *q = opaque;
	struct virtio_dev *d = q->dev;

	atomic_fetch_add_explicit(&d->polled, 1, memory_order_relaxed);
	d->ops->queue_notify(d, q->index);
}

static void queue_poll_begin(void *opaque)
{
	struct virtio_queue *q = opaque;

	if (queue_live(q))
		virtq_poll_begin(&q->vq);
}

static bool queue_poll_end(void *opaque)
{
	struct virtio_queue *q = opaque;

	/* Always, even if the queue died meanwhile: polling must not outlive the phase. */
	return virtq_poll_end(&q->vq) && queue_live(q);
}

int virtio_queue_set_external(struct virtio_queue *q, bool external)
{
	struct virtio_dev *d = q->dev;

	if (external == q->external)
		return 0;
	if (external) {
		iothread_del(d->io, q->kick_fd);
	} else {
		int r = iothread_add(d->io, q->kick_fd, EPOLLIN, kick_ready, q);
		if (r < 0)
			return r;
	}
	q->external = external;
	return 0;
}

static void do_reset(void *opaque)
{
	struct virtio_dev *d = opaque;

	if (d->ops->reset)
		d->ops->reset(d);
	d->running = false;
	for (unsigned i = 0; i < d->nqueues; i++) {
		struct virtio_queue *q = &d->q[i];
		uint64_t n;
		memset(&q->vq, 0, sizeof(q->vq));
		q->enabled = false;
		q->size = q->max_size;
		q->msix_vector = VIRTIO_MSI_NO_VECTOR;
		q->desc = q->driver = q->device = 0;
		if (read(q->kick_fd, &n, sizeof(n)) < 0) {
			/* nothing pending */
		}
	}
}

int virtio_queue_start(struct virtio_queue *q)
{
	struct virtio_dev *d = q->dev;
	struct virtq_config c = {
	    .name = q->name,
	    .size = q->size,
	    .desc_gpa = q->desc,
	    .avail_gpa = q->driver,
	    .used_gpa = q->device,
	    .event_idx = virtio_has_feature(d, VIRTIO_F_EVENT_IDX),
	    .indirect = virtio_has_feature(d, VIRTIO_F_INDIRECT_DESC),
	};

	return virtq_init(&q->vq, d->mem, &c);
}

void virtio_pci_run(struct virtio_dev *d)
{
	d->running = true;
	if (d->ops->start)
		d->ops->start(d);
	/* Kicks that came before DRIVER_OK were dropped: look at every queue once. */
	for (unsigned i = 0; i < d->nqueues; i++)
		if (d->q[i].enabled && !d->q[i].vq.broken)
			d->ops->queue_notify(d, i);
}

static void do_start(void *opaque)
{
	struct virtio_dev *d = opaque;
	bool bad = false;

	for (unsigned i = 0; i < d->nqueues; i++) {
		struct virtio_queue *q = &d->q[i];
		if (!q->enabled)
			continue;
		if (virtio_queue_start(q) < 0) {
			q->vq.broken = true;
			bad = true;
		}
	}
	virtio_pci_run(d);
	if (bad)
		virtio_set_needs_reset(d);
}

/* --- common configuration --- */

static struct virtio_queue *selected(struct virtio_dev *d)
{
	return d->queue_select < d->nqueues ? &d->q[d->queue_select] : NULL;
}

/* All registers as one little-endian image, from which any access is cut. */
static void common_image(struct virtio_dev *d, uint8_t *b)
{
	struct virtio_queue *q = selected(d);
	uint64_t f = d->dfselect < 2 ? d->host_features >> (32 * d->dfselect) : 0;
	uint64_t g = d->gfselect < 2 ? d->driver_features >> (32 * d->gfselect) : 0;

	memset(b, 0, VIRTIO_PCI_COMMON_LEN);
	put_le32(b + VIRTIO_PCI_COMMON_DFSELECT, d->dfselect);
	put_le32(b + VIRTIO_PCI_COMMON_DF, (uint32_t)f);
	put_le32(b + VIRTIO_PCI_COMMON_GFSELECT, d->gfselect);
	put_le32(b + VIRTIO_PCI_COMMON_GF, (uint32_t)g);
	put_le16(b + VIRTIO_PCI_COMMON_MSIX, d->msix_config);
	put_le16(b + VIRTIO_PCI_COMMON_NUMQ, (uint16_t)d->nqueues);
	b[VIRTIO_PCI_COMMON_STATUS] =
	    d->status | (atomic_load(&d->needs_reset) ? VIRTIO_STATUS_NEEDS_RESET : 0);
	b[VIRTIO_PCI_COMMON_CFGGEN] = (uint8_t)atomic_load(&d->config_generation);
	put_le16(b + VIRTIO_PCI_COMMON_Q_SELECT, d->queue_select);
	if (!q)
		return; /* queue_size 0: "not available" */
	put_le16(b + VIRTIO_PCI_COMMON_Q_SIZE, q->size);
	put_le16(b + VIRTIO_PCI_COMMON_Q_MSIX, q->msix_vector);
	put_le16(b + VIRTIO_PCI_COMMON_Q_ENABLE, q->enabled);
	put_le16(b + VIRTIO_PCI_COMMON_Q_NOFF, (uint16_t)q->index);
	put_le64(b + VIRTIO_PCI_COMMON_Q_DESC, q->desc);
	put_le64(b + VIRTIO_PCI_COMMON_Q_DRIVER, q->driver);
	put_le64(b + VIRTIO_PCI_COMMON_Q_DEVICE, q->device);
}

static void common_read(struct virtio_dev *d, uint64_t off, void *data, unsigned len)
{
	uint8_t img[VIRTIO_PCI_COMMON_LEN];

	memset(data, 0, len);
	if (off >= VIRTIO_PCI_COMMON_LEN || len > VIRTIO_PCI_COMMON_LEN - off)
		return;
	common_image(d, img);
	memcpy(data, img + off, len);
}

static void write_status(struct virtio_dev *d, uint8_t v)
{
	uint8_t old = d->status;

	if (v == 0) {
		iothread_call(d->io, do_reset, d);
		d->status = 0;
		atomic_store(&d->needs_reset, false);
		d->driver_features = 0;
		d->dfselect = d->gfselect = 0;
		d->queue_select = 0;
		d->msix_config = VIRTIO_MSI_NO_VECTOR;
		pthread_mutex_lock(&d->isr_lock);
		d->isr = 0;
		pci_set_intx(&d->pci, false);
		pthread_mutex_unlock(&d->isr_lock);
		return;
	}
	/* Bits are only ever added, except by reset; NEEDS_RESET is ours to set. */
	v = (uint8_t)((v | old) & ~VIRTIO_STATUS_NEEDS_RESET);
	if ((v & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK)) {
		if (!(d->driver_features & (1ull << VIRTIO_F_VERSION_1)) ||
		    (d->driver_features & ~d->host_features)) {
			vdev_warn(d,
			          "driver accepted features 0x%llx (offered 0x%llx, VERSION_1 is "
			          "required); FEATURES_OK refused",
			          (unsigned long long)d->driver_features,
			          (unsigned long long)d->host_features);
			v &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
		}
	}
	if ((v & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK)) {
		if (!(v & VIRTIO_STATUS_FEATURES_OK)) {
			vdev_warn(d, "DRIVER_OK without FEATURES_OK; ignored");
			v &= (uint8_t)~VIRTIO_STATUS_DRIVER_OK;
		} else {
			d->status = v;
			iothread_call(d->io, do_start, d); /* may set needs_reset */
		}
	}
	d->status = v;
}

static bool queue_writable(struct virtio_dev *d, struct virtio_queue *q)
{
	if (!q)
		return false;
	if (q->enabled || (d->status & VIRTIO_STATUS_DRIVER_OK)) {
		vdev_warn(d, "queue %u changed after it was enabled; ignored", q->index);
		return false;
	}
	return true;
}

static void set_half(uint64_t *v, uint64_t off, unsigned len, uint64_t val)
{
	if (len == 8)
		*v = val;
	else if (off & 4)
		*v = (*v & 0xffffffffull) | val << 32;
	else
		*v = (*v & ~0xffffffffull) | (uint32_t)val;
}

static void common_write(struct virtio_dev *d, uint64_t off, const void *data, unsigned len)
{
	struct virtio_queue *q = selected(d);
	uint64_t val = 0;
	unsigned field_len;

	memcpy(&val, data, len);
	switch (off & ~7ull) {
	case VIRTIO_PCI_COMMON_Q_DESC:
	case VIRTIO_PCI_COMMON_Q_DRIVER:
	case VIRTIO_PCI_COMMON_Q_DEVICE:
		field_len = 8;
		break;
	default:
		field_len =
		    off < VIRTIO_PCI_COMMON_MSIX ? 4 : (off == VIRTIO_PCI_COMMON_STATUS ? 1 : 2);
	}
	/* Whole fields only (and 32-bit halves of 64-bit ones). */
	if (!(len == field_len || (field_len == 8 && len == 4 && !(off & 3))) ||
	    (field_len != 8 && (off & (field_len - 1)))) {
		vdev_warn(d, "%u-byte write at common config 0x%llx; ignored", len,
		          (unsigned long long)off);
		return;
	}
	switch (off & ~(uint64_t)(field_len == 8 ? 7 : 0)) {
	case VIRTIO_PCI_COMMON_DFSELECT:
		d->dfselect = (uint32_t)val;
		break;
	case VIRTIO_PCI_COMMON_GFSELECT:
		d->gfselect = (uint32_t)val;
		break;
	case VIRTIO_PCI_COMMON_GF:
		if (d->status & VIRTIO_STATUS_FEATURES_OK)
			break; /* negotiation is over */
		if (d->gfselect < 2) {
			unsigned sh = 32 * d->gfselect;
			d->driver_features = (d->driver_features & ~(0xffffffffull << sh)) |
			                     (val & 0xffffffffull) << sh;
		}
		break;
	case VIRTIO_PCI_COMMON_MSIX:
		d->msix_config = val < d->msix.nvec ? (uint16_t)val : VIRTIO_MSI_NO_VECTOR;
		break;
	case VIRTIO_PCI_COMMON_STATUS:
		write_status(d, (uint8_t)val);
		break;
	case VIRTIO_PCI_COMMON_Q_SELECT:
		d->queue_select = (uint16_t)val;
		break;
	case VIRTIO_PCI_COMMON_Q_SIZE:
		if (!queue_writable(d, q))
			break;
		/* Smaller powers of two only (2.7.1): the device sized its state for max_size. */
		if (val == 0 || val > q->max_size || (val & (val - 1)))
			vdev_warn(d, "queue %u: size %llu refused (a power of two up to %u)",
			          q->index, (unsigned long long)val, q->max_size);
		else
			q->size = (uint16_t)val;
		break;
	case VIRTIO_PCI_COMMON_Q_MSIX:
		if (q)
			q->msix_vector = val < d->msix.nvec ? (uint16_t)val : VIRTIO_MSI_NO_VECTOR;
		break;
	case VIRTIO_PCI_COMMON_Q_ENABLE:
		if (q && val == 1 && queue_writable(d, q))
			q->enabled = true;
		break;
	case VIRTIO_PCI_COMMON_Q_DESC:
		if (queue_writable(d, q))
			set_half(&q->desc, off, len, val);
		break;
	case VIRTIO_PCI_COMMON_Q_DRIVER:
		if (queue_writable(d, q))
			set_half(&q->driver, off, len, val);
		break;
	case VIRTIO_PCI_COMMON_Q_DEVICE:
		if (queue_writable(d, q))
			set_half(&q->device, off, len, val);
		break;
	default: /* read-only fields */
		break;
	}
}

/* --- BAR2 --- */

void virtio_pci_bar_read(struct virtio_dev *d, uint64_t off, void *data, unsigned len)
{
	memset(data, 0, len);
	if (off < VIRTIO_PCI_ISR_OFF) {
		pthread_mutex_lock(&d->lock);
		common_read(d, off, data, len);
		pthread_mutex_unlock(&d->lock);
	} else if (off == VIRTIO_PCI_ISR_OFF) {
		pthread_mutex_lock(&d->isr_lock);
		*(uint8_t *)data = d->isr;
		d->isr = 0;
		pci_set_intx(&d->pci, false);
		pthread_mutex_unlock(&d->isr_lock);
	} else if (off >= VIRTIO_PCI_DEVICE_OFF && off < VIRTIO_PCI_NOTIFY_OFF) {
		uint64_t o = off - VIRTIO_PCI_DEVICE_OFF;
		if (o < d->cfg_size && len <= d->cfg_size - o && d->ops->cfg_read) {
			pthread_mutex_lock(&d->lock);
			d->ops->cfg_read(d, (uint32_t)o, data, len);
			pthread_mutex_unlock(&d->lock);
		}
	}
}

void virtio_pci_bar_write(struct virtio_dev *d, uint64_t off, const void *data, unsigned len)
{
	if (off < VIRTIO_PCI_ISR_OFF) {
		if (off + len > VIRTIO_PCI_COMMON_LEN)
			return;
		pthread_mutex_lock(&d->lock);
		common_write(d, off, data, len);
		pthread_mutex_unlock(&d->lock);
	} else if (off >= VIRTIO_PCI_DEVICE_OFF && off < VIRTIO_PCI_NOTIFY_OFF) {
		uint64_t o = off - VIRTIO_PCI_DEVICE_OFF;
		if (o < d->cfg_size && len <= d->cfg_size - o && d->ops->cfg_write) {
			pthread_mutex_lock(&d->lock);
			d->ops->cfg_write(d, (uint32_t)o, data, len);
			pthread_mutex_unlock(&d->lock);
		}
	} else if (off >= VIRTIO_PCI_NOTIFY_OFF) {
		/* A kick KVM did not catch (another width, or no ioeventfd): same eventfd. */
		uint64_t qi = (off - VIRTIO_PCI_NOTIFY_OFF) / VIRTIO_PCI_NOTIFY_MULT, one = 1;
		if (qi < d->nqueues && write(d->q[qi].kick_fd, &one, sizeof(one)) < 0) {
			/* counter saturated: the iothread will look anyway */
		}
	}
}

static void bar2_read(struct io_region *r, uint64_t off, void *data, unsigned len)
{
	struct virtio_dev *d = container_of(r, struct virtio_dev, pci.bar[VIRTIO_PCI_BAR].region);

	virtio_pci_bar_read(d, off, data, len);
}

static void bar2_write(struct io_region *r, uint64_t off, const void *data, unsigned len)
{
	struct virtio_dev *d = container_of(r, struct virtio_dev, pci.bar[VIRTIO_PCI_BAR].region);

	virtio_pci_bar_write(d, off, data, len);
}

static void bar0_read(struct io_region *r, uint64_t off, void *data, unsigned len)
{
	struct virtio_dev *d =
	    container_of(r, struct virtio_dev, pci.bar[VIRTIO_PCI_MSIX_BAR].region);

	if (off < VIRTIO_PCI_PBA_OFF)
		msix_table_read(&d->msix, off, data, len);
	else
		msix_pba_read(&d->msix, off - VIRTIO_PCI_PBA_OFF, data, len);
}

static void bar0_write(struct io_region *r, uint64_t off, const void *data, unsigned len)
{
	struct virtio_dev *d =
	    container_of(r, struct virtio_dev, pci.bar[VIRTIO_PCI_MSIX_BAR].region);

	if (off < VIRTIO_PCI_PBA_OFF)
		msix_table_write(&d->msix, off, data, len);
}

static const struct io_region_ops bar2_ops = {.read = bar2_read, .write = bar2_write};
static const struct io_region_ops bar0_ops = {.read = bar0_read, .write = bar0_write};

/* --- PCI glue --- */

static void bind_kicks(struct virtio_dev *d, uint64_t base, bool assign)
{
	if (!d->hv)
		return;
	for (unsigned i = 0; i < d->nqueues; i++) {
		struct virtio_queue *q = &d->q[i];
		uint64_t a = base + VIRTIO_PCI_NOTIFY_OFF + (uint64_t)VIRTIO_PCI_NOTIFY_MULT * i;
		if (assign == q->ioeventfd)
			continue;
		/*
		 * Drivers notify with a 16-bit write of the queue index. A length-0 ioeventfd
		 * (any write to the address, KVM_CAP_IOEVENTFD_ANY_LENGTH) is what lets KVM
		 * take the kick on its fast MMIO path, with no instruction decoding, on hosts
		 * with EPT/NPT (QEMU registers its notify addresses the same way).
		 */
		if (assign)
			q->ioeventfd_len = hv_has_cap(d->hv, KVM_CAP_IOEVENTFD_ANY_LENGTH) ? 0 : 2;
		if (hv_ioeventfd(d->hv, q->kick_fd, a, q->ioeventfd_len, false, assign) == 0)
			q->ioeventfd = assign;
		else if (assign)
			vdev_warn(d,
			          "KVM_IOEVENTFD at 0x%llx failed; kicks will exit to the monitor",
			          (unsigned long long)a);
	}
}

static void bar_moved(struct pci_dev *p, unsigned bar, uint64_t old, bool was_mapped)
{
	struct virtio_dev *d = container_of(p, struct virtio_dev, pci);

	if (bar != VIRTIO_PCI_BAR)
		return;
	if (was_mapped)
		bind_kicks(d, old, false);
	if (p->bar[bar].mapped)
		bind_kicks(d, p->bar[bar].addr, true);
}

/* struct virtio_pci_cap fields (4.1.4). */
#define CAP_BAR    4
#define CAP_OFFSET 8
#define CAP_LENGTH 12
#define CAP_DATA   16 /* virtio_pci_cfg_cap.pci_cfg_data */

static unsigned pci_cfg_cap(struct virtio_dev *d)
{
	/* the capability after the notify one; found once and cached in cfg[] order */
	for (unsigned off = d->pci.cfg[PCI_CAP_PTR]; off && off < PCI_CFG_SIZE - 20;
	     off = d->pci.cfg[off + 1])
		if (d->pci.cfg[off] == PCI_CAP_ID_VENDOR &&
		    d->pci.cfg[off + 3] == VIRTIO_PCI_CAP_PCI_CFG)
			return off;
	return 0;
}

/* The PCI configuration access capability: a window onto the BARs through config space. */
static bool cfg_window(struct virtio_dev *d, unsigned off, unsigned len, unsigned *cap,
                       uint32_t *bar_off, unsigned *acc_len)
{
	unsigned c = pci_cfg_cap(d);

	if (!c || off + len <= c + CAP_DATA || off >= c + CAP_DATA + 4)
		return false;
	*cap = c;
	*bar_off = get_le32(&d->pci.cfg[c + CAP_OFFSET]);
	*acc_len = get_le32(&d->pci.cfg[c + CAP_LENGTH]);
	return d->pci.cfg[c + CAP_BAR] == VIRTIO_PCI_BAR &&
	       (*acc_len == 1 || *acc_len == 2 || *acc_len == 4) &&
	       *bar_off < VIRTIO_PCI_BAR_SIZE && *acc_len <= VIRTIO_PCI_BAR_SIZE - *bar_off;
}

static void cfg_read_hook(struct pci_dev *p, unsigned off, unsigned len)
{
	struct virtio_dev *d = container_of(p, struct virtio_dev, pci);
	unsigned c, n;
	uint32_t o, v = 0;

	if (cfg_window(d, off, len, &c, &o, &n)) {
		virtio_pci_bar_read(d, o, &v, n);
		put_le32(&p->cfg[c + CAP_DATA], v);
	}
}

static void cfg_written_hook(struct pci_dev *p, unsigned off, unsigned len)
{
	struct virtio_dev *d = container_of(p, struct virtio_dev, pci);
	unsigned c, n;
	uint32_t o;

	msix_cfg_written(&d->msix, off, len);
	if (cfg_window(d, off, len, &c, &o, &n)) {
		uint32_t v = get_le32(&p->cfg[c + CAP_DATA]);
		virtio_pci_bar_write(d, o, &v, n);
	}
}

static const struct pci_dev_ops virtio_pci_dev_ops = {
    .bar_moved = bar_moved, .cfg_written = cfg_written_hook, .cfg_read = cfg_read_hook};

static void add_virtio_cap(struct virtio_dev *d, uint8_t type, uint32_t off, uint32_t len,
                           unsigned cap_len, uint32_t extra)
{
	uint8_t c[20] = {PCI_CAP_ID_VENDOR, 0, (uint8_t)cap_len, type, VIRTIO_PCI_BAR},
	        wm[20] = {0};

	put_le32(&c[CAP_OFFSET], off);
	put_le32(&c[CAP_LENGTH], len);
	if (cap_len == 20)
		put_le32(&c[16], extra);
	if (type == VIRTIO_PCI_CAP_PCI_CFG) {
		c[CAP_BAR] = 0;
		wm[CAP_BAR] = 0xff;
		memset(&wm[CAP_OFFSET], 0xff, 12);
	}
	pci_add_cap(&d->pci, c, cap_len, wm);
}

int virtio_pci_init(struct virtio_dev *d, const struct virtio_pci_params *p, struct hv *hv,
                    const struct guest_mem *mem, struct pci_bus *bus, char *err, size_t errlen)
{
	int r;

	if (p->nqueues == 0 || p->nqueues > VIRTIO_PCI_MAX_QUEUES ||
	    p->nqueues + 1 > MSIX_MAX_VEC ||
	    p->cfg_size > VIRTIO_PCI_NOTIFY_OFF - VIRTIO_PCI_DEVICE_OFF) {
		snprintf(err, errlen, "%s: %u queues is more than this transport supports", p->name,
		         p->nqueues);
		return -EINVAL;
	}
	memset(d, 0, sizeof(*d));
	d->ops = p->ops;
	d->name = p->name;
	d->hv = hv;
	d->mem = mem;
	d->host_features = p->features | transport_features;
	d->cfg_size = p->cfg_size;
	d->nqueues = p->nqueues;
	d->msix_config = VIRTIO_MSI_NO_VECTOR;
	d->rl = (struct ratelimit)RATELIMIT_INIT;
	d->error_rl = (struct ratelimit)RATELIMIT_INIT;
	pthread_mutex_init(&d->lock, NULL);
	pthread_mutex_init(&d->isr_lock, NULL);
	d->q = calloc(p->nqueues, sizeof(*d->q));
	if (!d->q) {
		r = -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < p->nqueues; i++)
		d->q[i].kick_fd = -1;
	d->io = iothread_new(p->name);
	if (!d->io) {
		r = -errno ? -errno : -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < p->nqueues; i++) {
		struct virtio_queue *q = &d->q[i];
		q->dev = d;
		q->index = i;
		q->max_size = q->size = p->queue_size;
		q->msix_vector = VIRTIO_MSI_NO_VECTOR;
		snprintf(q->name, sizeof(q->name), "%s q%u", p->name, i);
		q->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (q->kick_fd < 0) {
			r = -errno;
			goto fail;
		}
		r = iothread_add(d->io, q->kick_fd, EPOLLIN, kick_ready, q);
		if (r == 0 && p->poll)
			r = iothread_add_poller(d->io,
			                        &(struct iothread_poller){.ready = queue_poll_ready,
			                                                  .run = queue_poll_run,
			                                                  .begin = queue_poll_begin,
			                                                  .end = queue_poll_end,
			                                                  .opaque = q});
		if (r < 0)
			goto fail;
	}

	pci_dev_init(&d->pci, p->name, VIRTIO_PCI_VENDOR, VIRTIO_PCI_DEVICE_BASE + p->device_id,
	             p->pci_class, 1, VIRTIO_PCI_VENDOR, 0x1100, &virtio_pci_dev_ops);
	pci_dev_set_bar(&d->pci, VIRTIO_PCI_MSIX_BAR, PCI_BAR_MEM32, false, VIRTIO_PCI_MSIX_SIZE,
	                &bar0_ops);
	pci_dev_set_bar(&d->pci, VIRTIO_PCI_BAR, PCI_BAR_MEM64, true, VIRTIO_PCI_BAR_SIZE,
	                &bar2_ops);
	add_virtio_cap(d, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_COMMON_OFF, VIRTIO_PCI_COMMON_LEN,
	               16, 0);
	add_virtio_cap(d, VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_ISR_OFF, 1, 16, 0);
	if (p->cfg_size)
		add_virtio_cap(d, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_DEVICE_OFF, p->cfg_size, 16,
		               0);
	add_virtio_cap(d, VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_NOTIFY_OFF,
	               VIRTIO_PCI_NOTIFY_MULT * p->nqueues, 20, VIRTIO_PCI_NOTIFY_MULT);
	add_virtio_cap(d, VIRTIO_PCI_CAP_PCI_CFG, 0, 0, 20, 0);
	r = msix_init(&d->msix, &d->pci, hv, p->nqueues + 1, VIRTIO_PCI_MSIX_BAR, 0,
	              VIRTIO_PCI_PBA_OFF);
	if (r < 0) {
		pci_dev_destroy(&d->pci);
		goto fail;
	}
	r = iothread_start(d->io);
	if (r == 0)
		r = pci_bus_add(bus, &d->pci);
	if (r < 0) {
		msix_destroy(&d->msix);
		pci_dev_destroy(&d->pci);
		goto fail;
	}
	return 0;
fail:
	snprintf(err, errlen, "%s: cannot set the device up: %s", p->name, strerror(-r));
	iothread_free(d->io);
	for (unsigned i = 0; d->q && i < p->nqueues; i++)
		if (d->q[i].kick_fd >= 0)
			close(d->q[i].kick_fd);
	free(d->q);
	pthread_mutex_destroy(&d->lock);
	pthread_mutex_destroy(&d->isr_lock);
	d->q = NULL;
	return r;
}

void virtio_pci_destroy(struct virtio_dev *d)
{
	if (!d->q)
		return;
	iothread_call(d->io, do_reset, d);
	if (d->pci.bus)
		pci_bus_remove(d->pci.bus, &d->pci); /* unbinds the ioeventfds */
	iothread_free(d->io);
	d->io = NULL;
	msix_destroy(&d->msix);
	pci_dev_destroy(&d->pci);
	for (unsigned i = 0; i < d->nqueues; i++)
		close(d->q[i].kick_fd);
	free(d->q);
	d->q = NULL;
	pthread_mutex_destroy(&d->lock);
	pthread_mutex_destroy(&d->isr_lock);
}
