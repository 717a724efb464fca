/* boot.h: direct kernel boot — bzImage (64-bit entry), ELF vmlinux (PVH or 64-bit entry). */
#ifndef VMSTACK_BOOT_H
#define VMSTACK_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include "guest_mem.h"

/* How the BSP enters the guest. */
enum boot_entry {
	BOOT_ENTRY_LINUX64, /* long mode, paging on, RSI = zero page (Linux boot protocol) */
	BOOT_ENTRY_PVH32,   /* 32-bit protected mode, paging off, EBX = hvm_start_info */
};

struct boot_config {
	const char *kernel_path; /* for messages */
	const uint8_t *kernel;
	size_t kernel_len;
	const char *initrd_path; /* NULL: no initrd */
	const uint8_t *initrd;
	size_t initrd_len;
	const char *cmdline; /* never NULL */
	uint64_t rsdp_gpa;   /* 0: no ACPI tables */
};

struct boot_info {
	enum boot_entry entry_mode;
	uint64_t entry;    /* RIP */
	uint64_t boot_arg; /* RSI (zero page) or RBX (start_info) */
	uint64_t kernel_lo, kernel_hi;
	uint64_t initrd_gpa, initrd_len;
	const char *format; /* "bzImage", "ELF vmlinux (PVH)", "ELF (64-bit entry)" */
};

/*
 * Loads the kernel, initrd and command line into guest RAM and writes the boot data
 * (zero page and e820, or PVH start_info and memmap). Everything in the kernel file is
 * untrusted: a malformed file gets -EINVAL/-ENOEXEC and a one-line message naming the
 * file and what is wrong. Does not touch vCPU state: see x86_boot.h.
 */
int boot_load(const struct guest_mem *m, const struct boot_config *cfg, struct boot_info *bi,
              char *err, size_t errlen);

/* Offsets in the Linux zero page (struct boot_params), Documentation/x86/zero-page.rst. */
#define BP_ACPI_RSDP_ADDR    0x070
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE  0x0c4
#define BP_EXT_CMD_LINE_PTR  0x0c8
#define BP_E820_ENTRIES      0x1e8
#define BP_SETUP_HEADER      0x1f1
#define BP_SETUP_SECTS       0x1f1
#define BP_SYSSIZE           0x1f4
#define BP_VID_MODE          0x1fa
#define BP_BOOT_FLAG         0x1fe
#define BP_JUMP              0x200
#define BP_HEADER_MAGIC      0x202
#define BP_VERSION           0x206
#define BP_TYPE_OF_LOADER    0x210
#define BP_LOADFLAGS         0x211
#define BP_RAMDISK_IMAGE     0x218
#define BP_RAMDISK_SIZE      0x21c
#define BP_HEAP_END_PTR      0x224
#define BP_CMD_LINE_PTR      0x228
#define BP_INITRD_ADDR_MAX   0x22c
#define BP_KERNEL_ALIGNMENT  0x230
#define BP_RELOCATABLE       0x234
#define BP_XLOADFLAGS        0x236
#define BP_CMDLINE_SIZE      0x238
#define BP_PREF_ADDRESS      0x258
#define BP_INIT_SIZE         0x260
#define BP_E820_TABLE        0x2d0
#define BP_E820_MAX          128
#define BP_SIZE              0x1000

#define XLF_KERNEL_64         (1u << 0)
#define LOADFLAG_LOADED_HIGH  (1u << 0)
#define LOADFLAG_CAN_USE_HEAP (1u << 7)

/* PVH boot ABI (xen/include/public/arch-x86/hvm/start_info.h). */
#define PVH_START_MAGIC       0x336ec578u
#define PVH_NOTE_PHYS32_ENTRY 18

#endif
