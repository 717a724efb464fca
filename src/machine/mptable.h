/* mptable.h: Intel MultiProcessor Specification 1.4 tables, for guests that run without ACPI. */
#ifndef VMSTACK_MPTABLE_H
#define VMSTACK_MPTABLE_H

#include <stddef.h>
#include <stdint.h>

struct mptable_config {
	unsigned ncpus;       /* local APIC ids 0..ncpus-1; 1..254 */
	uint8_t ioapic_id;    /* must not be a CPU's id; normally ncpus */
	uint32_t ioapic_addr; /* 0xfec00000 */
	uint32_t lapic_addr;  /* 0xfee00000 */
	/* Non-zero: a PCI bus 0 whose slot s (1..31) has INTA on I/O APIC pin base + s % 8. */
	uint8_t pci_intx_gsi_base;
};

/*
 * Writes the tables into buf, which the caller copies to guest-physical `gpa` (16-byte
 * aligned, below 4 GiB). Linux looks for the floating pointer only in the first KiB of the
 * EBDA, the last KiB of base memory (639 KiB) and the BIOS area 0xf0000-0xfffff; unlike
 * the ACPI RSDP it does not scan 0xe0000-0xeffff.
 *
 *   gpa + 0    floating pointer "_MP_", 16 bytes, rev 1.4 -> configuration table;
 *              feature bytes 0 (table present, virtual-wire mode: no IMCR)
 *   gpa + 16   configuration table "PCMP", spec rev 4, base entries only:
 *                processor   x ncpus  (APIC version 0x14, CPU 0 is the BSP, all enabled)
 *                bus         ISA, id 0 [; PCI, id 1]
 *                I/O APIC    version 0x11, enabled
 *                I/O int     ISA IRQ 0 -> pin 2, IRQ n -> pin n for n = 1, 3..15
 *                            [PCI slot s INTA -> pin pci_intx_gsi_base + s % 8, s = 1..31,
 *                             polarity and trigger "conform to the bus": level, low]
 *                local int   ExtINT -> LINT0, NMI -> LINT1 of every local APIC
 *
 * Both checksums are set; there is no extended table. Returns the number of bytes used,
 * -ENOSPC if len is too small, -EINVAL for an impossible configuration.
 */
int mptable_build(const struct mptable_config *cfg, uint8_t *buf, size_t len, uint64_t gpa);

#endif
