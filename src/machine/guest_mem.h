/* guest_mem.h: guest RAM (one memfd, mapped shared) and the x86 physical memory map. */
#ifndef VMSTACK_GUEST_MEM_H
#define VMSTACK_GUEST_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Guest-physical layout:
 *
 *   0x00000000 +-----------------------------+
 *              | RAM (low 640 KiB, boot data)|  GDT 0x500, PVH info 0x6000, zero page
 *   0x0009fc00 +-----------------------------+  0x7000, page tables 0x9000-0xefff,
 *              | reserved (EBDA)             |  command line 0x20000
 *   0x000a0000 +-----------------------------+
 *              | legacy hole (not in e820)   |
 *   0x000e0000 +-----------------------------+
 *              | reserved: ACPI tables       |
 *   0x000f0000 +-----------------------------+
 *              | reserved: MP table          |
 *   0x00100000 +-----------------------------+
 *              | RAM                         |  kernel loaded here, initrd at the top
 *   min(RAM, 3 GiB) -------------------------+
 *              | 32-bit PCI hole, IOAPIC     |
 *              | 0xfec00000, LAPIC 0xfee00000|
 *   4 GiB      +-----------------------------+
 *              | RAM above 3 GiB continues   |  only if RAM > 3 GiB
 *              +-----------------------------+
 *
 * All of RAM is one memfd mapped MAP_SHARED, so later issues can snapshot or share it.
 */
#define GM_HOLE_START  0xc0000000ULL
#define GM_4G          0x100000000ULL
#define GM_BOOT_GDT    0x500ULL
#define GM_PVH_INFO    0x6000ULL
#define GM_ZERO_PAGE   0x7000ULL
#define GM_PML4        0x9000ULL
#define GM_PDPT        0xa000ULL
#define GM_PD          0xb000ULL /* four pages: identity map of 0-4 GiB with 2 MiB pages */
#define GM_CMDLINE     0x20000ULL
#define GM_CMDLINE_MAX 0x10000ULL
#define GM_EBDA        0x9fc00ULL
#define GM_EBDA_END    0xa0000ULL
#define GM_ACPI        0xe0000ULL
#define GM_MPTABLE     0xf0000ULL /* Linux scans 0xf0000-0xfffff for the floating pointer */
#define GM_BIOS_END    0x100000ULL
#define GM_KERNEL      0x100000ULL
/* KVM's TSS (3 pages) and identity-map page, in the hole just below 4 GiB. */
#define GM_KVM_IDENTITY_MAP 0xfeffc000ULL
#define GM_KVM_TSS          0xfeffd000ULL
#define GM_MIN_SIZE         (4ULL << 20)

enum e820_type { E820_RAM = 1, E820_RESERVED = 2, E820_ACPI = 3 };

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
} __attribute__((packed));

struct gm_region {
	uint64_t gpa;
	uint64_t size;
	uint64_t offset; /* in the memfd and the host mapping */
};

struct guest_mem {
	int fd;
	uint8_t *host;
	uint64_t size;
	struct gm_region regions[2];
	unsigned nregions;
	bool private_map; /* copy-on-write over a snapshot's memory file */
};

/*
 * Creates `size` bytes of guest RAM. `host_limit` is the most the host allows (0 = no
 * check); `phys_bits` the guest's physical address width (0 = no check). On failure
 * returns -errno with a one-line message in err.
 */
int guest_mem_create(struct guest_mem *m, uint64_t size, uint64_t host_limit, unsigned phys_bits,
                     char *err, size_t errlen);
void guest_mem_destroy(struct guest_mem *m);

/*
 * Restore: RAM of `size` bytes mapped copy-on-write (MAP_PRIVATE) from a snapshot's
 * memory file, so pages are read from it when the guest first touches them and restore
 * time does not grow with RAM. The file must have exactly `size` bytes.
 */
int guest_mem_open_snapshot(struct guest_mem *m, uint64_t size, const char *path,
                            uint64_t host_limit, unsigned phys_bits, char *err, size_t errlen);

/*
 * Writes RAM to `path` as a sparse file (zero pages are holes), through a temporary file
 * renamed into place. *written = bytes of data written. 0 or -errno with a line in err.
 */
int guest_mem_save(const struct guest_mem *m, const char *path, uint64_t *written, char *err,
                   size_t errlen);

/* Highest guest-physical address + 1 of RAM below the 32-bit hole. */
uint64_t guest_mem_low_end(const struct guest_mem *m);

/*
 * The one checked translation of guest-physical addresses: a host pointer to
 * [gpa, gpa+len) if the whole range is RAM inside one region, else NULL. Overflow-safe.
 */
void *gm_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);

/* Copies into guest RAM; -EFAULT if the range is not RAM. */
int gm_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len);

/* Fills `out` with the e820 map (at most `max` entries); returns the number written. */
unsigned gm_e820(const struct guest_mem *m, struct e820_entry *out, unsigned max);

#endif
