/* boot_internal.h: helpers shared by the bzImage and ELF loaders (not for other callers). */
#ifndef VMSTACK_BOOT_INTERNAL_H
#define VMSTACK_BOOT_INTERNAL_H

#include "boot.h"
#include "util.h"

/* Copies the command line to GM_CMDLINE; -E2BIG (with message) if longer than max_len - 1. */
int boot_place_cmdline(const struct guest_mem *m, const struct boot_config *cfg, uint64_t max_len,
                       char *err, size_t errlen);
/* Puts the initrd as high as possible below addr_max, above kernel_hi. */
int boot_place_initrd(const struct guest_mem *m, const struct boot_config *cfg, uint64_t addr_max,
                      uint64_t kernel_hi, struct boot_info *bi, char *err, size_t errlen);
/* Fills the loader-owned fields of a zero page (command line, initrd, e820, RSDP). */
void boot_fill_zero_page(const struct guest_mem *m, const struct boot_config *cfg,
                         const struct boot_info *bi, uint8_t *zp);

int boot_load_bzimage(const struct guest_mem *m, const struct boot_config *cfg,
                      struct boot_info *bi, char *err, size_t errlen);
int boot_load_elf(const struct guest_mem *m, const struct boot_config *cfg, struct boot_info *bi,
                  char *err, size_t errlen);

#endif
