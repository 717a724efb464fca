/* virtio.h: a polling virtio 1.x PCI driver core for the bare-metal test guests. */
#ifndef BAREMETAL_VIRTIO_H
#define BAREMETAL_VIRTIO_H

#include "lib.h"
#include "pci.h"

/*
 * Modern virtio-pci only (virtio 1.2 section 4.1): everything is found through the vendor
 * capabilities. One split virtqueue per struct vq, used synchronously: a request is put
 * in descriptors 0.., made available, notified, and its used entry polled for with a
 * timeout (interrupts stay off; see lib.h).
 */

#define VIRTIO_VENDOR      0x1af4
#define VIRTIO_DEVICE_BASE 0x1040
#define VIRTIO_ID_NET      1
#define VIRTIO_ID_BLOCK    2
#define VIRTIO_ID_CONSOLE  3
#define VIRTIO_ID_RNG      4

#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX     29
#define VIRTIO_F_VERSION_1     32

#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER      2
#define VIRTIO_STATUS_DRIVER_OK   4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED      128

#define VIRTIO_MSI_NO_VECTOR 0xffff

#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG    3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG    5

/* struct virtio_pci_cap field offsets (4.1.4). */
#define VIRTIO_CAP_LEN        2
#define VIRTIO_CAP_CFG_TYPE   3
#define VIRTIO_CAP_BAR        4
#define VIRTIO_CAP_ID         5
#define VIRTIO_CAP_OFFSET     8
#define VIRTIO_CAP_LENGTH     12
#define VIRTIO_CAP_NOTIFY_MUL 16 /* notify cap only */
#define VIRTIO_CAP_PCI_DATA   16 /* PCI cfg access cap only */

/* Common configuration (4.1.4.3). */
#define VC_DFSELECT 0x00
#define VC_DF       0x04
#define VC_GFSELECT 0x08
#define VC_GF       0x0c
#define VC_MSIX     0x10
#define VC_NUMQ     0x12
#define VC_STATUS   0x14
#define VC_CFGGEN   0x15
#define VC_Q_SELECT 0x16
#define VC_Q_SIZE   0x18
#define VC_Q_MSIX   0x1a
#define VC_Q_ENABLE 0x1c
#define VC_Q_NOFF   0x1e
#define VC_Q_DESC   0x20
#define VC_Q_DRIVER 0x28
#define VC_Q_DEVICE 0x30
#define VC_MIN_LEN  0x38

/* MSI-X capability and table. */
#define MSIX_CTRL         2
#define MSIX_TABLE        4
#define MSIX_PBA          8
#define MSIX_CTRL_ENABLE  0x8000
#define MSIX_CTRL_MASKALL 0x4000
#define MSIX_ENTRY_SIZE   16
#define MSIX_ENTRY_CTRL   12
#define MSIX_ENTRY_MASKED 1

/* Split virtqueue layout (2.7). */
#define VRING_DESC_F_NEXT     1
#define VRING_DESC_F_WRITE    2
#define VRING_DESC_F_INDIRECT 4

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct vring_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];
};

struct vring_used_elem {
	uint32_t id;
	uint32_t len;
};

struct vring_used {
	uint16_t flags;
	uint16_t idx;
	struct vring_used_elem ring[];
};

/* ---- MMIO of every width (lib.h has 8 and 32) ---- */

static inline uint16_t mmio_read16(uint64_t addr)
{
	return *(volatile uint16_t *)addr;
}

static inline void mmio_write16(uint64_t addr, uint16_t v)
{
	*(volatile uint16_t *)addr = v;
}

static inline uint64_t mmio_read64(uint64_t addr)
{
	uint64_t v;

	__asm__ volatile("movq (%1), %0" : "=r"(v) : "r"(addr) : "memory");
	return v;
}

static inline void mmio_write64(uint64_t addr, uint64_t v)
{
	__asm__ volatile("movq %0, (%1)" : : "r"(v), "r"(addr) : "memory");
}

/* Orders the guest's own memory accesses (x86 is TSO; only the compiler reorders). */
static inline void barrier(void)
{
	__asm__ volatile("" : : : "memory");
}

/* ---- memory for rings and buffers ---- */

/*
 * Zeroed, `align`-aligned guest-physical memory from a bump allocator at 16 MiB (the
 * guests run with >= 64 MiB); fails the test when it runs out.
 */
void *dma_alloc(uint64_t size, uint64_t align);
/* Hex of n bytes, no separators. */
void print_hexbytes(const void *p, size_t n);

/* ---- the device ---- */

struct virtio_pci {
	unsigned slot;
	uint16_t device_id;
	struct pci_bar bar[6];
	/* capability config offsets (0: absent) */
	unsigned cap_common, cap_notify, cap_isr, cap_device, cap_pcicfg, cap_msix;
	/* absolute addresses of the structures, and their lengths */
	uint64_t common, isr, devcfg, notify;
	uint32_t common_len, isr_len, devcfg_len, notify_len;
	uint32_t notify_mult;
	uint16_t msix_size; /* table entries */
	uint64_t msix_table, msix_pba;
	uint16_t num_queues;
	uint64_t features;        /* offered */
	uint64_t driver_features; /* accepted */
};

struct vq {
	struct virtio_pci *dev;
	uint16_t index;
	uint16_t size;
	volatile struct vring_desc *desc;
	volatile struct vring_avail *avail;
	volatile struct vring_used *used;
	uint16_t avail_idx; /* next avail.idx we publish */
	uint16_t last_used; /* used.idx we have consumed up to */
	uint64_t notify_addr;
};

/* One buffer of a request. */
struct vbuf {
	void *addr;
	uint32_t len;
	bool write; /* device-writable */
};

/* Common config registers. */
uint8_t vc_read8(const struct virtio_pci *d, unsigned off);
uint16_t vc_read16(const struct virtio_pci *d, unsigned off);
uint32_t vc_read32(const struct virtio_pci *d, unsigned off);
void vc_write8(const struct virtio_pci *d, unsigned off, uint8_t v);
void vc_write16(const struct virtio_pci *d, unsigned off, uint16_t v);
void vc_write32(const struct virtio_pci *d, unsigned off, uint32_t v);
/* A 64-bit field as two 32-bit halves, low first. */
void vc_write64(const struct virtio_pci *d, unsigned off, uint64_t v);
uint64_t vc_read64(const struct virtio_pci *d, unsigned off);

/*
 * Finds the function for virtio device `id` (fails the test if absent), places its BARs
 * (pci_setup_bars) and parses its capabilities. Prints "virtio: ..." lines.
 */
void virtio_find(struct virtio_pci *d, uint16_t id);
/* Parses the capabilities into d (BARs already placed); NULL or what is wrong. */
const char *virtio_parse_caps(struct virtio_pci *d);

uint8_t virtio_status(const struct virtio_pci *d);
/* Writes status | what is there already. */
void virtio_add_status(const struct virtio_pci *d, uint8_t bits);
/* Writes 0 and waits until status reads 0; false on timeout. */
bool virtio_reset(const struct virtio_pci *d);
/*
 * Reset, ACKNOWLEDGE, DRIVER, features (offered & wanted, VERSION_1 required),
 * FEATURES_OK and its check. NULL or what failed.
 */
const char *virtio_negotiate(struct virtio_pci *d, uint64_t wanted);

/*
 * Selects queue `index`, takes min(queue_size, size) (size a power of two), allocates
 * the rings, programs and enables the queue. NULL or what failed. q->dev/index are set.
 */
const char *vq_setup(struct virtio_pci *d, struct vq *q, uint16_t index, uint16_t size);
/* Programs queue `index` with these raw values (no checks), queue_enable = enable. */
void vq_program(const struct virtio_pci *d, uint16_t index, uint16_t size, uint64_t desc,
                uint64_t driver, uint64_t device, bool enable);
/* Forgets progress (after a device reset) and clears the rings. */
void vq_clear(struct vq *q);

/* Builds the chain bufs[0..n) in descriptors first.., first + n - 1; returns `first`. */
uint16_t vq_chain(struct vq *q, uint16_t first, const struct vbuf *bufs, unsigned n);
/* Makes head available (bumps avail.idx) without notifying. */
void vq_publish(struct vq *q, uint16_t head);
/* Writes the queue index to its notify address. */
void vq_notify(struct vq *q);

enum vq_wait_result { VQ_DONE = 0, VQ_TIMEOUT = -1, VQ_NEEDS_RESET = -2 };
/*
 * Waits up to timeout_ms for the next used entry; stores its id and len. Returns VQ_DONE,
 * or VQ_NEEDS_RESET if the device status shows it, or VQ_TIMEOUT.
 */
int vq_wait(struct vq *q, uint32_t timeout_ms, uint32_t *id, uint32_t *len);
/* vq_chain + publish + notify + vq_wait (5 s); fails the test on timeout/NEEDS_RESET. */
uint32_t vq_transfer(struct vq *q, const struct vbuf *bufs, unsigned n);

/* Device config of any width; 64 bits as two 32-bit reads under config_generation. */
uint8_t virtio_cfg_read8(const struct virtio_pci *d, unsigned off);
uint32_t virtio_cfg_read32(const struct virtio_pci *d, unsigned off);
uint64_t virtio_cfg_read64(const struct virtio_pci *d, unsigned off);

/* Reads the ISR byte (which clears it). */
uint8_t virtio_isr(const struct virtio_pci *d);

/* MSI-X Message Control: enable (function mask off) or disable. */
void msix_enable(const struct virtio_pci *d, bool on);
uint32_t msix_entry_read(const struct virtio_pci *d, unsigned entry, unsigned off);
void msix_entry_write(const struct virtio_pci *d, unsigned entry, unsigned off, uint32_t v);
/* Pending bit of vector v. */
bool msix_pending(const struct virtio_pci *d, unsigned v);

/*
 * The PCI configuration access capability: reads/writes `len` bytes at `off` of `bar`
 * through the window in config space.
 */
uint32_t virtio_pcicfg_read(const struct virtio_pci *d, uint8_t bar, uint32_t off, uint32_t len);
void virtio_pcicfg_write(const struct virtio_pci *d, uint8_t bar, uint32_t off, uint32_t len,
                         uint32_t v);

#endif
