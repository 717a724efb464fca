/* msix.h: MSI-X for a PCI function — capability, vector table, pending bits, KVM routes. */
#ifndef VMSTACK_MSIX_H
#define VMSTACK_MSIX_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hv;
struct pci_dev;
struct snap_writer;
struct snap_reader;

/*
 * PCI 3.0 6.8.2. The capability (12 bytes) holds Message Control (enable, function
 * mask, table size - 1) and where the table and the pending-bit array live in a BAR;
 * the table has one 16-byte entry per vector: address low/high, data, vector control
 * (bit 0 = masked; every vector starts masked).
 *
 * Each vector owns a KVM GSI with an MSI route carrying the guest's address/data, and an
 * eventfd bound to it with KVM_IRQFD: msix_notify() from an I/O thread is one eventfd
 * write, and KVM delivers the interrupt without waking the monitor. A vector that is
 * masked (itself or the whole function) or not enabled records a pending bit instead;
 * unmasking it fires it then. Routes are (re)installed when a vector is unmasked or its
 * address/data change while it is unmasked, i.e. when the guest sets interrupts up, never
 * per interrupt.
 */

#define MSIX_CAP_LEN   12
#define MSIX_ENTRY_LEN 16
#define MSIX_MAX_VEC   64

#define MSIX_CTRL_ENABLE    0x8000
#define MSIX_CTRL_FUNC_MASK 0x4000

struct msix_vec {
	uint32_t addr_lo, addr_hi, data, ctrl;
	int gsi; /* KVM route, -1 if none could be had (then KVM_SIGNAL_MSI) */
	int fd;  /* irqfd */
	bool pending;
	bool routed; /* route installed with the current address/data */
};

/* Told, with the msix lock held, that vector v may have changed how it can be raised
 * (masking, enable, routing): see msix_set_watch(). */
typedef void msix_watch_fn(void *opaque, unsigned v);

struct msix {
	struct pci_dev *dev;
	struct hv *hv;
	unsigned nvec;
	unsigned cap; /* config offset of the capability */
	pthread_mutex_t lock;
	bool enabled, func_masked;
	struct msix_vec vec[MSIX_MAX_VEC];
	msix_watch_fn *watch;
	void *watch_opaque;
};

/*
 * Adds the capability to d (table at `table_off`, PBA at `pba_off`, both in BAR `bar`)
 * and sets up nvec vectors with their GSIs and irqfds. Returns 0 or -errno.
 */
int msix_init(struct msix *x, struct pci_dev *d, struct hv *hv, unsigned nvec, unsigned bar,
              uint32_t table_off, uint32_t pba_off);
void msix_destroy(struct msix *x);

/* Bytes the table and the PBA take in the BAR. */
static inline uint32_t msix_table_size(unsigned nvec)
{
	return nvec * MSIX_ENTRY_LEN;
}
static inline uint32_t msix_pba_size(unsigned nvec)
{
	return ((nvec + 63) / 64) * 8;
}

/* BAR accesses, offsets relative to the table / the PBA. */
void msix_table_read(struct msix *x, uint64_t off, void *data, unsigned len);
void msix_table_write(struct msix *x, uint64_t off, const void *data, unsigned len);
void msix_pba_read(struct msix *x, uint64_t off, void *data, unsigned len);

/* The guest wrote config space [off, off+len): picks up enable / function mask. */
void msix_cfg_written(struct msix *x, unsigned off, unsigned len);

/* MSI-X enabled by the guest (else the device uses INTx). */
bool msix_enabled(struct msix *x);

/* Raises vector v (any thread). Out-of-range v (e.g. VIRTIO_MSI_NO_VECTOR) does nothing. */
void msix_notify(struct msix *x, unsigned v);
/* The same in one lock round trip if MSI-X is enabled; returns false (doing nothing) if
 * it is not, so the caller falls back to INTx. The per-interrupt path of a device. */
bool msix_notify_if_enabled(struct msix *x, unsigned v);

/*
 * For something outside the monitor that raises vectors itself by writing an eventfd
 * (vhost-net's call fd): msix_direct_fd_locked() says whether vector v can be raised
 * that way now — enabled, unmasked and routed in KVM, so the vector's own irqfd
 * delivers it — and returns that irqfd, else -1 (then the raiser must go through
 * msix_notify(), which keeps pending bits). The watch is called, msix lock held,
 * whenever the answer may have changed for v; it must not call back into msix except
 * msix_direct_fd_locked(). msix_lock() lets the watcher change its own state in step.
 */
void msix_set_watch(struct msix *x, msix_watch_fn *fn, void *opaque);
int msix_direct_fd_locked(struct msix *x, unsigned v);
void msix_lock(struct msix *x);
void msix_unlock(struct msix *x);

/*
 * Snapshot, section "msix" number `inst` (the function's, as for pci_dev_save()): the
 * table, the pending bits, enable and function mask. Load into x as msix_init() left it,
 * after pci_dev_load() of its function (enable and function mask must agree with the
 * restored Message Control). Each vector is written as the guest writes it, so vectors
 * that are unmasked get their KVM route installed as then; a pending vector that is not
 * masked fires. Returns 0, or -EINVAL/-ENOENT with one line in err (x unchanged).
 */
int msix_save(struct msix *x, struct snap_writer *w, uint32_t inst);
int msix_load(struct msix *x, const struct snap_reader *r, uint32_t inst, char *err, size_t errlen);

#endif
