/* x86_boot.h: the CPU state a directly booted kernel expects (GDT, page tables, registers). */
#ifndef VMSTACK_X86_BOOT_H
#define VMSTACK_X86_BOOT_H

#include "boot.h"
#include "guest_mem.h"

/* Writes the boot GDT (GM_BOOT_GDT) and identity page tables for 0-4 GiB (GM_PML4..). */
int x86_boot_tables(const struct guest_mem *m);

/* State every vCPU needs at power-on: MSRs, FPU control words, LAPIC LINT0/LINT1 wiring. */
int x86_vcpu_init(int vcpu_fd);

/* Registers and segments of the boot CPU for `bi` (long mode or PVH 32-bit mode). */
int x86_bsp_entry(int vcpu_fd, const struct boot_info *bi);

#endif
