/* virtio_pci.h: the virtio 1.x PCI transport (modern only) shared by every device. */
#ifndef VMSTACK_VIRTIO_PCI_H
#define VMSTACK_VIRTIO_PCI_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "log.h"
#include "msix.h"
#include "pci.h"
#include "virtq.h"

struct guest_mem;
struct hv;
struct iothread;
struct snap_writer;
struct snap_reader;

/*
 * Virtio 1.2 section 4.1. A device is a PCI function (vendor 0x1af4, device
 * 0x1040 + virtio id, revision 1) with two memory BARs:
 *
 *   BAR0  32-bit, 4 KiB   MSI-X table (one vector per queue + one for config) at 0,
 *                         pending bits at 0x800
 *   BAR2  64-bit, 16 KiB  0x0000 common configuration (features, status, queues)
 *                         0x1000 ISR status (read to clear; for INTx)
 *                         0x2000 device-specific configuration
 *                         0x3000 notifications: queue i at 0x3000 + 4 * i
 *
 * and vendor capabilities pointing at those, plus the PCI configuration access
 * capability and MSI-X. Threads:
 *  - vCPU threads run register accesses under d->lock. Anything that changes what the
 *    queues do (reset, DRIVER_OK) is handed to the device's iothread with iothread_call()
 *    and waited for, so queue state is only ever touched there.
 *  - The iothread waits on each queue's kick eventfd (bound with KVM_IOEVENTFD to the
 *    queue's notify address: a guest kick costs no exit to the monitor; other write
 *    widths exit and are forwarded to the same eventfd) and calls ops->queue_notify().
 *  - Interrupts: with MSI-X, an irqfd write per vector (msix.h); without, ISR + INTx.
 * The guest is hostile: bad queue addresses or sizes put the device in NEEDS_RESET when
 * the driver says DRIVER_OK; bad register accesses are ignored (and logged, rate-limited).
 */

#define VIRTIO_ID_NET     1
#define VIRTIO_ID_BLOCK   2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG     4

/* Feature bits common to all devices (6). */
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX     29
#define VIRTIO_F_VERSION_1     32

/* Device status (2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER      2
#define VIRTIO_STATUS_DRIVER_OK   4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED      128

#define VIRTIO_MSI_NO_VECTOR 0xffff

/* Capability types (4.1.4). */
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG    3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG    5

/* The layout above. */
#define VIRTIO_PCI_MSIX_BAR    0
#define VIRTIO_PCI_MSIX_SIZE   0x1000
#define VIRTIO_PCI_PBA_OFF     0x800
#define VIRTIO_PCI_BAR         2
#define VIRTIO_PCI_BAR_SIZE    0x4000
#define VIRTIO_PCI_COMMON_OFF  0x0000
#define VIRTIO_PCI_ISR_OFF     0x1000
#define VIRTIO_PCI_DEVICE_OFF  0x2000
#define VIRTIO_PCI_NOTIFY_OFF  0x3000
#define VIRTIO_PCI_NOTIFY_MULT 4
#define VIRTIO_PCI_MAX_QUEUES  (0x1000 / VIRTIO_PCI_NOTIFY_MULT)

/* Common configuration registers (4.1.4.3). */
#define VIRTIO_PCI_COMMON_DFSELECT 0x00
#define VIRTIO_PCI_COMMON_DF       0x04
#define VIRTIO_PCI_COMMON_GFSELECT 0x08
#define VIRTIO_PCI_COMMON_GF       0x0c
#define VIRTIO_PCI_COMMON_MSIX     0x10
#define VIRTIO_PCI_COMMON_NUMQ     0x12
#define VIRTIO_PCI_COMMON_STATUS   0x14
#define VIRTIO_PCI_COMMON_CFGGEN   0x15
#define VIRTIO_PCI_COMMON_Q_SELECT 0x16
#define VIRTIO_PCI_COMMON_Q_SIZE   0x18
#define VIRTIO_PCI_COMMON_Q_MSIX   0x1a
#define VIRTIO_PCI_COMMON_Q_ENABLE 0x1c
#define VIRTIO_PCI_COMMON_Q_NOFF   0x1e
#define VIRTIO_PCI_COMMON_Q_DESC   0x20
#define VIRTIO_PCI_COMMON_Q_DRIVER 0x28
#define VIRTIO_PCI_COMMON_Q_DEVICE 0x30
#define VIRTIO_PCI_COMMON_LEN      0x38

struct virtio_dev;

struct virtio_dev_ops {
	/* Device config space access (bounds already checked); vCPU thread, d->lock held. */
	void (*cfg_read)(struct virtio_dev *d, uint32_t off, void *data, unsigned len);
	void (*cfg_write)(struct virtio_dev *d, uint32_t off, const void *data, unsigned len);
	/* DRIVER_OK: the enabled queues are live (iothread). Optional. */
	void (*start)(struct virtio_dev *d);
	/* Queue q was kicked, or may have work (iothread). */
	void (*queue_notify)(struct virtio_dev *d, unsigned q);
	/* Reset: stop using the queues, wait for or cancel requests in flight (iothread). */
	void (*reset)(struct virtio_dev *d);
	/* Snapshot (iothread, optional): finish every request in flight, completing them into
	 * the used rings with their interrupts as usual, and make the backend's state durable
	 * (a disk flush), so that nothing is outside guest RAM and the transport's state. */
	void (*quiesce)(struct virtio_dev *d);
	/* After a snapshot (iothread, optional): carry on as before quiesce. */
	void (*unquiesce)(struct virtio_dev *d);
};

struct virtio_queue {
	struct virtio_dev *dev;
	unsigned index;
	char name[40];
	struct virtq vq; /* live between DRIVER_OK and reset */
	uint16_t max_size, size, msix_vector;
	bool enabled;
	uint64_t desc, driver, device;
	int kick_fd;
	bool ioeventfd;        /* kick_fd bound in KVM at the current notify address */
	uint8_t ioeventfd_len; /* as bound: 0 (any length) or 2 */
	bool external;         /* kick_fd served outside the iothread (vhost) */
};

struct virtio_pci_params {
	const char *name; /* "virtio-blk0": log prefix, thread name; must outlive the device */
	uint16_t device_id;
	uint32_t pci_class;
	uint64_t features; /* device-specific bits; VERSION_1, INDIRECT, EVENT_IDX are added */
	unsigned nqueues;
	uint16_t queue_size;
	uint32_t cfg_size; /* bytes of device config space */
	const struct virtio_dev_ops *ops;
	bool poll; /* the iothread may poll the avail rings (iothread.h); for request queues */
};

struct virtio_dev {
	const struct virtio_dev_ops *ops;
	const char *name;
	struct pci_dev pci;
	struct msix msix;
	struct hv *hv;
	const struct guest_mem *mem;
	struct iothread *io;
	pthread_mutex_t lock; /* the registers below; never taken on the iothread */
	uint64_t host_features, driver_features;
	uint32_t dfselect, gfselect;
	uint16_t queue_select;
	uint8_t status; /* without NEEDS_RESET, which is needs_reset */
	_Atomic uint16_t msix_config;
	atomic_uint config_generation;
	atomic_bool needs_reset;
	uint32_t cfg_size;
	unsigned nqueues;
	struct virtio_queue *q;
	bool running; /* DRIVER_OK and queues live; iothread's view */
	pthread_mutex_t isr_lock;
	uint8_t isr;
	struct ratelimit rl;
	/* counters, for stats */
	atomic_uint_fast64_t kicks, interrupts, polled; /* kick fd reads, interrupts, poller runs */
	/* Told about a device failure the management layer should see (DEVICE_ERROR): set
	 * by the machine before the guest runs; any thread, rate-limited by the caller. */
	void (*on_error)(void *opaque, const char *device, const char *reason, const char *msg);
	void *on_error_opaque;
	struct ratelimit error_rl;
};

/*
 * Sets the device up and puts it on `bus`; starts its iothread. hv may be NULL in unit
 * tests (no ioeventfd/irqfd; kicks then come only through the notify region). Returns 0
 * or -errno with a message in err.
 */
int virtio_pci_init(struct virtio_dev *d, const struct virtio_pci_params *p, struct hv *hv,
                    const struct guest_mem *mem, struct pci_bus *bus, char *err, size_t errlen);
/* Stops the iothread, resets the device, takes it off the bus. */
void virtio_pci_destroy(struct virtio_dev *d);

static inline bool virtio_has_feature(const struct virtio_dev *d, unsigned bit)
{
	return d->driver_features & (1ull << bit);
}

/* iothread: after virtq_push()es on q, interrupts the driver if the ring asks for it. */
void virtio_queue_interrupt(struct virtio_queue *q);
/* iothread: interrupts the driver for q now, whatever the ring says (for a device whose
 * rings someone else serves and who already decided, such as vhost-net's call fd). */
void virtio_queue_raise(struct virtio_queue *q);
/*
 * iothread: with external, the iothread stops reading q's kick eventfd, which someone
 * else (vhost-net) then waits on, and queue_notify() is no longer called for kicks;
 * without, it takes it back. Reset does not change this. Returns 0 or -errno.
 */
int virtio_queue_set_external(struct virtio_queue *q, bool external);
/* Device config changed (any thread): bumps the generation and interrupts. */
void virtio_config_changed(struct virtio_dev *d);
/* iothread: something is broken beyond one request; the driver must reset the device. */
void virtio_set_needs_reset(struct virtio_dev *d);
/* A host-side failure of one request (disk I/O error): reported through on_error, at
 * most 10 per 5 s. */
void virtio_report_error(struct virtio_dev *d, const char *reason, const char *msg);

/*
 * Snapshot (virtio_pci_state.c). Call order when saving:
 *
 *	virtio_pci_quiesce(d);      // requests finished, disk flushed, iothread paused
 *	... save vCPUs, then virtio_pci_save(d, w, inst), then guest RAM ...
 *	virtio_pci_unquiesce(d);    // the iothread runs again
 *
 * and when restoring: create the device as it was created (same parameters, same order
 * on the bus), restore guest RAM, then virtio_pci_load(d, r, inst, ...). vCPUs must be
 * stopped throughout. Devices normally go through their own wrappers (virtio_blk_save()
 * and so on), which pick the instance; quiescing is always virtio_pci_quiesce(&dev->vdev).
 *
 * Sections, all with the instance `inst` (unique among the machine's virtio devices,
 * below 2^24; VIRTIO_PCI_STATE_INST() makes one from the device type and its index):
 *   "virtio-pci"    transport registers: features, selects, status, needs_reset,
 *                   msix_config, config_generation, ISR, queue_select
 *   "virtio-pci.q"  instance inst * 256 + queue index, one per queue: size, vector,
 *                   enabled, ring addresses and the live positions in the rings
 *   "pci", "msix"   the PCI function (pci_dev_save) and its MSI-X table (msix_save)
 */
#define VIRTIO_PCI_STATE_INST(device_id, index) ((uint32_t)(device_id) << 16 | (uint16_t)(index))

/*
 * Pauses the device's iothread between callbacks (iothread_pause), then runs ops->quiesce
 * (if any) there; until virtio_pci_unquiesce() nothing touches guest RAM or the device
 * state on its behalf (virtio_pci_save() reads the queues through a call it still runs).
 * Not from the device's own iothread.
 */
void virtio_pci_quiesce(struct virtio_dev *d);
void virtio_pci_unquiesce(struct virtio_dev *d);

/* Saves the transport (and d->pci, d->msix); d quiesced. Returns 0 or -errno. */
int virtio_pci_save(struct virtio_dev *d, struct snap_writer *w, uint32_t inst);
/*
 * Loads what virtio_pci_save() wrote into d, just created (reset state, iothread
 * running, not quiesced), guest RAM already restored. With DRIVER_OK saved, the enabled
 * queues go live as at DRIVER_OK (on the iothread) but carry on from the saved ring
 * positions, then each gets one queue_notify() for what the guest queued meanwhile.
 * Returns 0, or -EINVAL/-ENOENT with one line in err naming the section and field
 * ("state: section virtio-pci.q 1/0: queue size 3000 > 256"); after an error d is in an
 * unspecified but safe state: destroy it.
 */
int virtio_pci_load(struct virtio_dev *d, const struct snap_reader *r, uint32_t inst, char *err,
                    size_t errlen);

/* For virtio_pci_state.c, on the iothread: virtq_init() of q from its registers and the
 * negotiated features; then the device running as at DRIVER_OK, one queue_notify() each. */
int virtio_queue_start(struct virtio_queue *q);
void virtio_pci_run(struct virtio_dev *d);

/* Region handlers, exposed for the unit tests (offsets relative to the BAR). */
void virtio_pci_bar_read(struct virtio_dev *d, uint64_t off, void *data, unsigned len);
void virtio_pci_bar_write(struct virtio_dev *d, uint64_t off, const void *data, unsigned len);

#endif
