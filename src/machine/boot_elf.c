/* boot_elf.c: ELF64 kernels — PVH entry when the Xen PHYS32_ENTRY note is present, else 64-bit. */
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "boot.h"
#include "boot_internal.h"
#include "util.h"

/* Linux's x86 COMMAND_LINE_SIZE: an ELF kernel carries no header that says otherwise. */
#define ELF_CMDLINE_MAX     2048
#define ELF_INITRD_ADDR_MAX 0x7fffffffULL

/* Finds the PVH entry note in [p, p+len); returns 0 if absent. Bounds-checked throughout. */
static uint64_t find_pvh_entry(const uint8_t *p, uint64_t len)
{
	uint64_t off = 0;

	while (len - off >= 12) {
		uint32_t namesz = get_le32(p + off), descsz = get_le32(p + off + 4);
		uint32_t type = get_le32(p + off + 8);
		uint64_t name_off = off + 12;
		uint64_t desc_off = name_off + ALIGN_UP((uint64_t)namesz, 4);
		uint64_t next = desc_off + ALIGN_UP((uint64_t)descsz, 4);

		if (next > len || next <= off)
			return 0;
		if (type == PVH_NOTE_PHYS32_ENTRY && namesz == 4 &&
		    memcmp(p + name_off, "Xen", 4) == 0) {
			if (descsz >= 8)
				return get_le64(p + desc_off);
			if (descsz >= 4)
				return get_le32(p + desc_off);
			return 0;
		}
		off = next;
	}
	return 0;
}

static int write_pvh_info(const struct guest_mem *m, const struct boot_config *cfg,
                          struct boot_info *bi)
{
	struct e820_entry e820[8];
	unsigned n = gm_e820(m, e820, 8);
	uint64_t modlist = GM_PVH_INFO + 0x40, memmap = GM_PVH_INFO + 0x100;
	uint8_t *si = gm_ptr(m, GM_PVH_INFO, 0x1000);

	if (!si)
		return -EFAULT;
	memset(si, 0, 0x1000);
	put_le32(si + 0, PVH_START_MAGIC);
	put_le32(si + 4, 1); /* version 1: has the memory map */
	put_le32(si + 12, bi->initrd_len ? 1 : 0);
	put_le64(si + 16, modlist);
	put_le64(si + 24, GM_CMDLINE);
	put_le64(si + 32, cfg->rsdp_gpa);
	put_le64(si + 40, memmap);
	put_le32(si + 48, n);
	if (bi->initrd_len) {
		uint8_t *mod = si + (modlist - GM_PVH_INFO);
		put_le64(mod + 0, bi->initrd_gpa);
		put_le64(mod + 8, bi->initrd_len);
	}
	for (unsigned i = 0; i < n; i++) {
		uint8_t *e = si + (memmap - GM_PVH_INFO) + i * 24;
		put_le64(e, e820[i].addr);
		put_le64(e + 8, e820[i].size);
		put_le32(e + 16, e820[i].type);
	}
	return 0;
}

int boot_load_elf(const struct guest_mem *m, const struct boot_config *cfg, struct boot_info *bi,
                  char *err, size_t errlen)
{
	const uint8_t *k = cfg->kernel;
	size_t len = cfg->kernel_len;
	Elf64_Ehdr eh;
	uint64_t pvh_entry = 0, lo = UINT64_MAX, hi = 0;
	int r;

	if (len < sizeof(eh)) {
		snprintf(err, errlen, "%s: truncated ELF header", cfg->kernel_path);
		return -ENOEXEC;
	}
	memcpy(&eh, k, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_machine != EM_X86_64) {
		snprintf(err, errlen,
		         "%s: ELF file is not an x86-64 (64-bit little-endian) executable — build "
		         "the kernel for x86_64",
		         cfg->kernel_path);
		return -ENOEXEC;
	}
	if (eh.e_type != ET_EXEC || eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 ||
	    eh.e_phoff > len || (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > len - eh.e_phoff) {
		snprintf(err, errlen,
		         "%s: not a bootable ELF executable (bad type or program headers; "
		         "truncated?)",
		         cfg->kernel_path);
		return -ENOEXEC;
	}
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, k + eh.e_phoff + i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_LOAD && ph.p_type != PT_NOTE)
			continue;
		if (ph.p_offset > len || ph.p_filesz > len - ph.p_offset) {
			snprintf(
			    err, errlen,
			    "%s: truncated ELF: segment %u needs bytes %llu-%llu, the file has "
			    "%zu",
			    cfg->kernel_path, i, (unsigned long long)ph.p_offset,
			    (unsigned long long)(ph.p_offset + ph.p_filesz), len);
			return -ENOEXEC;
		}
		if (ph.p_type == PT_NOTE) {
			if (!pvh_entry)
				pvh_entry = find_pvh_entry(k + ph.p_offset, ph.p_filesz);
			continue;
		}
		if (ph.p_memsz == 0)
			continue;
		if (ph.p_filesz > ph.p_memsz || ph.p_paddr < GM_BIOS_END ||
		    !gm_ptr(m, ph.p_paddr, ph.p_memsz)) {
			char a[32];
			snprintf(err, errlen,
			         "%s: segment %u (0x%llx, %llu bytes) lies outside guest RAM "
			         "above 1 MiB — raise --memory (now %s) or check the link address",
			         cfg->kernel_path, i, (unsigned long long)ph.p_paddr,
			         (unsigned long long)ph.p_memsz,
			         format_size(m->size, a, sizeof(a)));
			return -ENOSPC;
		}
		uint8_t *dst = gm_ptr(m, ph.p_paddr, ph.p_memsz);
		memcpy(dst, k + ph.p_offset, ph.p_filesz);
		memset(dst + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
		lo = MIN(lo, ph.p_paddr);
		hi = MAX(hi, ph.p_paddr + ph.p_memsz);
	}
	if (hi == 0) {
		snprintf(err, errlen, "%s: ELF file has nothing to load", cfg->kernel_path);
		return -ENOEXEC;
	}
	bi->kernel_lo = lo;
	bi->kernel_hi = ALIGN_UP(hi, 4096);
	bi->entry = pvh_entry ? pvh_entry : eh.e_entry;
	if (!gm_ptr(m, bi->entry, 1)) {
		snprintf(err, errlen, "%s: entry point 0x%llx is outside guest RAM",
		         cfg->kernel_path, (unsigned long long)bi->entry);
		return -ENOEXEC;
	}
	r = boot_place_cmdline(m, cfg, ELF_CMDLINE_MAX, err, errlen);
	if (r < 0)
		return r;
	r = boot_place_initrd(m, cfg, ELF_INITRD_ADDR_MAX, bi->kernel_hi, bi, err, errlen);
	if (r < 0)
		return r;
	if (pvh_entry) {
		bi->entry_mode = BOOT_ENTRY_PVH32;
		bi->boot_arg = GM_PVH_INFO;
		bi->format = "ELF vmlinux (PVH)";
		return write_pvh_info(m, cfg, bi);
	}
	/* No PVH note: the 64-bit Linux boot protocol, with a zero page we make up. */
	uint8_t *zp = gm_ptr(m, GM_ZERO_PAGE, BP_SIZE);
	if (!zp)
		return -EFAULT;
	memset(zp, 0, BP_SIZE);
	put_le16(zp + BP_BOOT_FLAG, 0xaa55);
	memcpy(zp + BP_HEADER_MAGIC, "HdrS", 4);
	put_le16(zp + BP_VERSION, 0x020f);
	put_le32(zp + BP_KERNEL_ALIGNMENT, 0x1000000);
	put_le32(zp + BP_CMDLINE_SIZE, ELF_CMDLINE_MAX - 1);
	put_le32(zp + BP_INITRD_ADDR_MAX, (uint32_t)ELF_INITRD_ADDR_MAX);
	boot_fill_zero_page(m, cfg, bi, zp);
	bi->entry_mode = BOOT_ENTRY_LINUX64;
	bi->boot_arg = GM_ZERO_PAGE;
	bi->format = "ELF (64-bit entry)";
	return 0;
}
