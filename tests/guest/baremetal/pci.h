/* pci.h: PCI configuration mechanism #1 and BAR placement for the bare-metal test guests. */
#ifndef BAREMETAL_PCI_H
#define BAREMETAL_PCI_H

#include "lib.h"

/*
 * Bus 0, function 0 only, through CONFIG_ADDRESS (0xcf8) and CONFIG_DATA (0xcfc). No
 * firmware runs before the guests, and the monitor may put 64-bit BARs above 4 GiB where
 * a bare-metal guest (identity map of the low 4 GiB only) cannot reach them, so
 * pci_setup_bars() plays firmware: it sizes every memory BAR of a function and places it
 * in the window [PCI_MMIO_BASE, PCI_MMIO_END) below 4 GiB, naturally aligned.
 */

#define PCI_CONFIG_ADDRESS 0xcf8
#define PCI_CONFIG_DATA    0xcfc
#define PCI_SLOTS          32
#define PCI_CFG_BYTES      256

#define PCI_MMIO_BASE 0xe0000000u
#define PCI_MMIO_END  0xf0000000u

/* Header offsets and bits. */
#define PCI_VENDOR_ID     0x00
#define PCI_DEVICE_ID     0x02
#define PCI_COMMAND       0x04
#define PCI_STATUS        0x06
#define PCI_REVISION_ID   0x08
#define PCI_CLASS_PROG    0x09
#define PCI_HEADER_TYPE   0x0e
#define PCI_BAR0          0x10
#define PCI_SUBSYS_VENDOR 0x2c
#define PCI_SUBSYS_ID     0x2e
#define PCI_CAP_PTR       0x34
#define PCI_INTERRUPT_PIN 0x3d

#define PCI_COMMAND_IO      0x1
#define PCI_COMMAND_MEMORY  0x2
#define PCI_COMMAND_MASTER  0x4
#define PCI_STATUS_CAP_LIST 0x10

#define PCI_BAR_IO       0x1
#define PCI_BAR_MEM64    0x4
#define PCI_BAR_PREFETCH 0x8

#define PCI_CAP_ID_VENDOR 0x09
#define PCI_CAP_ID_MSIX   0x11

struct pci_bar {
	uint64_t addr; /* 0 if the BAR is not implemented */
	uint64_t size;
	bool io;
	bool mem64; /* the next BAR is its upper half */
	bool prefetch;
};

uint32_t pci_read32(unsigned slot, unsigned off);
uint16_t pci_read16(unsigned slot, unsigned off);
uint8_t pci_read8(unsigned slot, unsigned off);
void pci_write32(unsigned slot, unsigned off, uint32_t v);
void pci_write16(unsigned slot, unsigned off, uint16_t v);
void pci_write8(unsigned slot, unsigned off, uint8_t v);

/* A function answers in this slot (vendor id not all-ones). */
bool pci_present(unsigned slot);
/* The first slot holding vendor:device, or -1. */
int pci_find(uint16_t vendor, uint16_t device);
/* Prints "pci: 00:SS.0 vvvv:dddd class cccccc" for every present slot; returns how many. */
unsigned pci_scan_print(void);
/*
 * Config offset of the first capability with this id after `after` (0: from the start of
 * the list), or 0. The walk is bounded (a looping list ends it).
 */
unsigned pci_find_cap(unsigned slot, uint8_t id, unsigned after);

/*
 * Firmware's job for one function: memory decoding off, size every BAR, place the memory
 * BARs in the window (64-bit ones with upper dword 0), then memory decoding and bus
 * mastering on. I/O BARs keep the monitor's address. Fills bars[6]; returns NULL or a
 * reason for failure.
 */
const char *pci_setup_bars(unsigned slot, struct pci_bar bars[6]);
/* Sizes BAR n without placing it (decoding must be off); returns its size, 0 if none. */
uint64_t pci_size_bar(unsigned slot, unsigned n, struct pci_bar *bar);
/* Writes addr to memory BAR n (both halves for a 64-bit BAR). Decoding is left alone. */
void pci_set_bar(unsigned slot, unsigned n, const struct pci_bar *bar, uint64_t addr);
/* A naturally aligned range of `size` bytes from the window; 0 when it is exhausted. */
uint64_t pci_alloc_mmio(uint64_t size);

#endif
