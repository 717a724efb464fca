/* pci.h: a PCI bus 0 behind a host bridge — configuration space, BARs, INTx. */
#ifndef VMSTACK_PCI_H
#define VMSTACK_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iobus.h"

struct hv;
struct snap_writer;
struct snap_reader;

/*
 * What the guest sees (no firmware runs, so the monitor does the firmware's part and
 * places every BAR before the guest starts; a guest may move them, Linux normally keeps
 * them):
 *
 *   ports 0xcf8-0xcff   configuration mechanism #1: CONFIG_ADDRESS (32-bit only) and
 *                       CONFIG_DATA (1, 2 or 4 bytes at 0xcfc + (reg & 3)); bus 0 only,
 *                       function 0 only; absent slots read as all-ones
 *   slot 0              host bridge (class 06/00)
 *   slots 1..31         devices; INTA of slot s is wired to IOAPIC pin 16 + s % 8
 *                       (level triggered; the ACPI _PRT and the MP table say the same)
 *   32-bit memory BARs  from the window [mmio32_base, +mmio32_len) inside the 3-4 GiB hole
 *   64-bit memory BARs  from the window [mmio64_base, +mmio64_len) above guest RAM
 *   I/O BARs            from ports 0xc000-0xffff
 *
 * Config space is 256 bytes per function: header type 0, a capability list, and a write
 * mask so that read-only bits stay read-only whatever the guest writes. A BAR decodes
 * (its io_region is on the MMIO or port bus) only while the command register enables
 * that space and the address is sane; moving a BAR or toggling decoding calls the
 * device's bar_moved() so it can move what it registered elsewhere (ioeventfds).
 *
 * Locking: config accesses are serialised by the bus lock; BAR region handlers run on
 * vCPU threads concurrently and must not take the bus lock.
 */

#define PCI_SLOTS         32
#define PCI_CFG_SIZE      256
#define PCI_INTX_GSI_BASE 16

#define PCI_CFG_ADDR_PORT 0xcf8
#define PCI_CFG_DATA_PORT 0xcfc

/* Standard header offsets and bits. */
#define PCI_VENDOR_ID        0x00
#define PCI_DEVICE_ID        0x02
#define PCI_COMMAND          0x04
#define PCI_STATUS           0x06
#define PCI_REVISION_ID      0x08
#define PCI_CLASS_PROG       0x09
#define PCI_CLASS_DEVICE     0x0a
#define PCI_HEADER_TYPE      0x0e
#define PCI_BAR0             0x10
#define PCI_SUBSYSTEM_VENDOR 0x2c
#define PCI_SUBSYSTEM_ID     0x2e
#define PCI_CAP_PTR          0x34
#define PCI_INTERRUPT_LINE   0x3c
#define PCI_INTERRUPT_PIN    0x3d

#define PCI_COMMAND_IO           0x1
#define PCI_COMMAND_MEMORY       0x2
#define PCI_COMMAND_MASTER       0x4
#define PCI_COMMAND_INTX_DISABLE 0x400
#define PCI_STATUS_INTERRUPT     0x8
#define PCI_STATUS_CAP_LIST      0x10

#define PCI_CAP_ID_MSIX   0x11
#define PCI_CAP_ID_VENDOR 0x09

enum pci_bar_type { PCI_BAR_NONE, PCI_BAR_MEM32, PCI_BAR_MEM64, PCI_BAR_IO };

struct pci_dev;

struct pci_bar {
	enum pci_bar_type type;
	bool prefetch;
	uint64_t size;           /* a power of two, >= 16 (memory: >= 4096 here) */
	uint64_t addr;           /* where it decodes while mapped */
	bool mapped;             /* region is on the bus */
	struct io_region region; /* ops set by the device; base follows the BAR */
};

struct pci_dev_ops {
	/* A BAR was unmapped from `old` (was_mapped) and/or mapped at bar->addr (mapped). */
	void (*bar_moved)(struct pci_dev *d, unsigned bar, uint64_t old, bool was_mapped);
	/* After the guest wrote config bytes [off, off+len) (write mask applied). */
	void (*cfg_written)(struct pci_dev *d, unsigned off, unsigned len);
	/* Before a config read of [off, off+len): a chance to refresh cfg[] (optional). */
	void (*cfg_read)(struct pci_dev *d, unsigned off, unsigned len);
};

struct pci_bus;

struct pci_dev {
	struct pci_bus *bus;
	const char *name;
	unsigned slot;
	const struct pci_dev_ops *ops;
	uint8_t cfg[PCI_CFG_SIZE];
	uint8_t wmask[PCI_CFG_SIZE];   /* bits the guest may change */
	uint8_t w1cmask[PCI_CFG_SIZE]; /* bits a guest write of 1 clears */
	struct pci_bar bar[6];
	unsigned gsi;              /* INTA's IOAPIC pin */
	pthread_mutex_t intx_lock; /* intx, the status bit and the line; after the bus lock */
	bool intx;                 /* device asserts INTA (before INTX_DISABLE) */
	unsigned cap_end;          /* next free byte for pci_add_cap (256: full) */
	uint8_t *cap_last_next;    /* the previous capability's next pointer */
};

struct pci_bus {
	struct hv *hv;
	struct io_bus *pio, *mmio;
	pthread_mutex_t lock;
	uint32_t cfg_addr;
	struct pci_dev host;
	struct pci_dev *dev[PCI_SLOTS];
	struct io_region addr_io, data_io;
	uint64_t mmio32_base, mmio32_len, mmio32_next;
	uint64_t mmio64_base, mmio64_len, mmio64_next;
	uint32_t io_next;
};

/* Sets up bus 0 with its host bridge and claims ports 0xcf8-0xcff. Returns 0 or -errno. */
int pci_bus_init(struct pci_bus *bus, struct hv *hv, struct io_bus *pio, struct io_bus *mmio,
                 uint64_t mmio32_base, uint64_t mmio32_len, uint64_t mmio64_base,
                 uint64_t mmio64_len);
void pci_bus_destroy(struct pci_bus *bus); /* unmaps BARs; devices are their owners' */

/* Fills in a type-0 header: ids, class (base<<16 | sub<<8 | prog-if), INTA. */
void pci_dev_init(struct pci_dev *d, const char *name, uint16_t vendor, uint16_t device,
                  uint32_t class_code, uint8_t revision, uint16_t subsys_vendor, uint16_t subsys_id,
                  const struct pci_dev_ops *ops);

/* Declares BAR n (n+1 is taken too for MEM64). ops handle accesses relative to the BAR. */
void pci_dev_set_bar(struct pci_dev *d, unsigned n, enum pci_bar_type type, bool prefetch,
                     uint64_t size, const struct io_region_ops *ops);

/*
 * Appends a capability of `len` bytes (id, next and the body from `body`[2..]) to the
 * list; returns its config offset, or 0 if config space is full. `wmask` (len bytes, may
 * be NULL) marks guest-writable bits within it.
 */
unsigned pci_add_cap(struct pci_dev *d, const uint8_t *body, unsigned len, const uint8_t *wmask);

/* Puts d in the next free slot, assigns its BARs from the windows, enables decoding. */
int pci_bus_add(struct pci_bus *bus, struct pci_dev *d);
/* Takes d off the bus (unmapping its BARs). */
void pci_bus_remove(struct pci_bus *bus, struct pci_dev *d);
/* Frees what pci_dev_init set up (after pci_bus_remove). */
void pci_dev_destroy(struct pci_dev *d);

/* Drives INTA (honouring INTX_DISABLE and reflecting it in the status register). Any
 * thread, with or without the bus lock. */
void pci_set_intx(struct pci_dev *d, bool level);

/* Config-space access as the guest does it (also used by tests). */
uint32_t pci_cfg_read(struct pci_bus *bus, unsigned slot, unsigned off, unsigned len);
void pci_cfg_write(struct pci_bus *bus, unsigned slot, unsigned off, unsigned len, uint32_t val);

/*
 * Snapshot of one function, section "pci" number `inst` (the caller's: unique among the
 * machine's PCI functions): its whole config space, the INTA level the device drives and
 * which BARs were decoding.
 *
 * pci_dev_load() is for d as freshly created and added to its bus: it checks that every
 * read-only byte of the saved config space is what d has (ids, class, header type, BAR
 * types, the capability list and the read-only parts of each capability), else "not the
 * same device"; then takes the guest-writable bits, maps the BARs where the guest had
 * them and with the decoding the command register says, through the same code as a guest
 * config write (so the device's bar_moved() follows), and drives INTA again. It does not
 * call the device's cfg_written(): a device restores what it derives from config space
 * from its own sections (msix_load() for MSI-X). Returns 0, or -EINVAL/-ENOENT with one
 * line in err. A BAR the saved function decoded that now overlaps another device is an
 * error (restore every device as it was created, in the same order, and none will).
 */
int pci_dev_save(struct pci_dev *d, struct snap_writer *w, uint32_t inst);
int pci_dev_load(struct pci_dev *d, const struct snap_reader *r, uint32_t inst, char *err,
                 size_t errlen);
/*
 * The bus's own state, section "pci-bus" instance 0: the CONFIG_ADDRESS latch (a guest
 * may be between its two accesses) and the host bridge's config space, under the same
 * rules. Load into a bus fresh from pci_bus_init().
 */
int pci_bus_save(struct pci_bus *bus, struct snap_writer *w);
int pci_bus_load(struct pci_bus *bus, const struct snap_reader *r, char *err, size_t errlen);

static inline uint16_t pci_cfg16(const struct pci_dev *d, unsigned off)
{
	return (uint16_t)(d->cfg[off] | d->cfg[off + 1] << 8);
}

#endif
