/* acpi.h: ACPI tables telling a guest its CPUs, interrupt wiring and how to power off. */
#ifndef VMSTACK_ACPI_H
#define VMSTACK_ACPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The fixed-hardware register block the FADT describes, at pm_base in port space
 * (modelled by devices/acpi_pm.c; both sides use these numbers):
 *
 *   +0x0  PM1a_EVT_BLK  u16 status (write 1 to clear), u16 enable
 *   +0x4  PM1a_CNT_BLK  u16 control: SCI_EN, SLP_TYP, SLP_EN
 *   +0x8  PM_TMR_BLK    u32 free-running 24-bit counter at 3.579545 MHz (read only)
 *   +0xc  RESET_REG     u8, writing ACPI_RESET_VALUE resets the machine
 */
#define ACPI_PM_EVT_OFF   0x0
#define ACPI_PM_EVT_LEN   4
#define ACPI_PM_CNT_OFF   0x4
#define ACPI_PM_CNT_LEN   2
#define ACPI_PM_TMR_OFF   0x8
#define ACPI_PM_TMR_LEN   4
#define ACPI_PM_RESET_OFF 0xc
#define ACPI_PM_LEN       16
#define ACPI_PM_TMR_HZ    3579545
#define ACPI_PM_TMR_MASK  0xffffffu
#define ACPI_RESET_VALUE  1

/* PM1 status bits (ACPI 6.x 4.8.3.1.1); only WAK_STS is ever set by this machine. */
#define ACPI_PM1_STS_TMR    (1u << 0)
#define ACPI_PM1_STS_PWRBTN (1u << 8)
#define ACPI_PM1_STS_WAK    (1u << 15)

/* PM1 control bits (ACPI 6.x 4.8.3.2.1). */
#define ACPI_PM1_CNT_SCI_EN        (1u << 0)
#define ACPI_PM1_CNT_GBL_RLS       (1u << 2)
#define ACPI_PM1_CNT_SLP_TYP_SHIFT 10
#define ACPI_PM1_CNT_SLP_TYP_MASK  (7u << ACPI_PM1_CNT_SLP_TYP_SHIFT)
#define ACPI_PM1_CNT_SLP_EN        (1u << 13)

/* The DSDT's \_S5 package gives this SLP_TYP; the guest writes it with SLP_EN to power off. */
#define ACPI_SLP_TYP_S5 5

struct acpi_config {
	unsigned ncpus;       /* local APIC ids 0..ncpus-1; 1..254 */
	uint8_t ioapic_id;    /* must not be a CPU's id; normally ncpus */
	uint32_t ioapic_addr; /* 0xfec00000 */
	uint32_t lapic_addr;  /* 0xfee00000 */
	uint16_t pm_base;     /* port of the register block above, e.g. 0x600 */
	uint8_t sci_irq;      /* ISA IRQ and GSI of the SCI, e.g. 9 */

	/*
	 * A PCI host bridge for bus 0 (configuration mechanism #1, ports 0xcf8-0xcff) in the
	 * DSDT. With ACPI on, Linux scans only the root bridges the DSDT declares, so a machine
	 * with PCI devices must set pci_host or the guest sees none of them. The bridge's _CRS
	 * lists bus 0-255, all I/O ports except 0xcf8-0xcff, and the memory windows below (a
	 * zero length leaves a window out). Its _PRT wires INTA of slot s (1..31) to GSI
	 * pci_intx_gsi_base + s % 8 (level triggered, active low, as ACPI defines for GSIs
	 * named directly); pci_intx_gsi_base 0 leaves _PRT out.
	 */
	bool pci_host;
	uint8_t pci_intx_gsi_base;
	uint32_t pci_mmio32_base, pci_mmio32_len; /* below 4 GiB */
	uint64_t pci_mmio64_base, pci_mmio64_len; /* above 4 GiB */
};

/*
 * Writes the tables into buf, which the caller copies to guest-physical `gpa` (16-byte
 * aligned, and the whole of it below 4 GiB because the RSDT holds 32-bit pointers).
 * Every pointer inside is an absolute guest-physical address computed from gpa:
 *
 *   gpa + 0   RSDP  "RSD PTR ", revision 2 -> RSDT and XSDT
 *             XSDT  -> FADT, MADT      (64-bit entries)
 *             RSDT  -> FADT, MADT      (32-bit entries, for ACPI 1.0 readers)
 *             FADT  "FACP" rev 6 -> FACS, DSDT; PM registers at pm_base; reset register
 *             FACS  (64-byte aligned; no checksum by definition)
 *             DSDT  Name(\_S5_, Package(){5, 0, 0, 0}) [, \_SB.PCI0]
 *             MADT  "APIC": one enabled local APIC per CPU, the I/O APIC (GSI base 0),
 *                   overrides IRQ0 -> GSI 2 and SCI -> GSI sci_irq (level, active high),
 *                   local APIC NMI on LINT1 for every processor
 *
 * The RSDP comes first so that placing buf at 0xe0000-0xfffff lets Linux find it by its
 * scan of that range (boot_params.acpi_rsdp_addr = gpa also works). Returns the number
 * of bytes used, -ENOSPC if len is too small, -EINVAL for an impossible configuration.
 */
int acpi_build(const struct acpi_config *cfg, uint8_t *buf, size_t len, uint64_t gpa);

#endif
