/* boot_linux.c: the Linux x86 boot protocol: zero page, e820, command line, initrd, bzImage. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "boot.h"
#include "boot_internal.h"
#include "util.h"

int boot_place_cmdline(const struct guest_mem *m, const struct boot_config *cfg, uint64_t max_len,
                       char *err, size_t errlen)
{
	size_t len = strlen(cfg->cmdline);

	if (len + 1 > max_len || len + 1 > GM_CMDLINE_MAX) {
		snprintf(err, errlen, "--cmdline: %zu bytes, but %s accepts at most %llu", len,
		         cfg->kernel_path, (unsigned long long)MIN(max_len, GM_CMDLINE_MAX) - 1);
		return -E2BIG;
	}
	return gm_write(m, GM_CMDLINE, cfg->cmdline, len + 1);
}

int boot_place_initrd(const struct guest_mem *m, const struct boot_config *cfg, uint64_t addr_max,
                      uint64_t kernel_hi, struct boot_info *bi, char *err, size_t errlen)
{
	uint64_t top = MIN(addr_max + 1, guest_mem_low_end(m));
	uint64_t addr;
	char a[32], b[32], c[32], d[32];

	bi->initrd_gpa = bi->initrd_len = 0;
	if (!cfg->initrd_path)
		return 0;
	if (cfg->initrd_len == 0) {
		snprintf(err, errlen, "%s: initrd is empty", cfg->initrd_path);
		return -EINVAL;
	}
	addr = cfg->initrd_len <= top ? ALIGN_DOWN(top - cfg->initrd_len, 4096) : 0;
	if (cfg->initrd_len > top || addr < kernel_hi) {
		snprintf(err, errlen,
		         "%s: initrd of %s does not fit between the kernel (ends at %s) and %s "
		         "with --memory %s — raise --memory",
		         cfg->initrd_path, format_size(cfg->initrd_len, a, sizeof(a)),
		         format_size(kernel_hi, b, sizeof(b)), format_size(top, c, sizeof(c)),
		         format_size(m->size, d, sizeof(d)));
		return -ENOSPC;
	}
	if (gm_write(m, addr, cfg->initrd, cfg->initrd_len) < 0)
		return -EFAULT;
	bi->initrd_gpa = addr;
	bi->initrd_len = cfg->initrd_len;
	return 0;
}

void boot_fill_zero_page(const struct guest_mem *m, const struct boot_config *cfg,
                         const struct boot_info *bi, uint8_t *zp)
{
	struct e820_entry e820[BP_E820_MAX];
	unsigned n = gm_e820(m, e820, BP_E820_MAX);

	zp[BP_TYPE_OF_LOADER] = 0xff; /* "undefined" boot loader id */
	zp[BP_LOADFLAGS] |= LOADFLAG_LOADED_HIGH | LOADFLAG_CAN_USE_HEAP;
	put_le16(zp + BP_HEAP_END_PTR, 0xfe00);
	put_le16(zp + BP_VID_MODE, 0xffff); /* "normal" */
	put_le32(zp + BP_CMD_LINE_PTR, (uint32_t)GM_CMDLINE);
	put_le32(zp + BP_EXT_CMD_LINE_PTR, 0);
	put_le32(zp + BP_RAMDISK_IMAGE, (uint32_t)bi->initrd_gpa);
	put_le32(zp + BP_RAMDISK_SIZE, (uint32_t)bi->initrd_len);
	put_le32(zp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(bi->initrd_gpa >> 32));
	put_le32(zp + BP_EXT_RAMDISK_SIZE, (uint32_t)(bi->initrd_len >> 32));
	put_le64(zp + BP_ACPI_RSDP_ADDR, cfg->rsdp_gpa);
	zp[BP_E820_ENTRIES] = (uint8_t)n;
	for (unsigned i = 0; i < n; i++) {
		uint8_t *e = zp + BP_E820_TABLE + i * 20;
		put_le64(e, e820[i].addr);
		put_le64(e + 8, e820[i].size);
		put_le32(e + 16, e820[i].type);
	}
}

int boot_load_bzimage(const struct guest_mem *m, const struct boot_config *cfg,
                      struct boot_info *bi, char *err, size_t errlen)
{
	const uint8_t *k = cfg->kernel;
	size_t len = cfg->kernel_len;
	uint8_t *zp = gm_ptr(m, GM_ZERO_PAGE, BP_SIZE);
	unsigned setup_sects, version, hdr_end;
	uint64_t setup_size, payload, syssize, init_size, initrd_max, cmdline_max;
	char a[32], b[32];
	int r;

	if (!zp)
		return -EFAULT;
	version = get_le16(k + BP_VERSION);
	if (version < 0x020c) {
		snprintf(err, errlen,
		         "%s: boot protocol %u.%02u is too old — vmstack-vm needs 2.12 (Linux 3.8) "
		         "or later",
		         cfg->kernel_path, version >> 8, version & 0xff);
		return -ENOEXEC;
	}
	if (!(get_le16(k + BP_XLOADFLAGS) & XLF_KERNEL_64)) {
		snprintf(err, errlen,
		         "%s: this bzImage has no 64-bit entry point (a 32-bit kernel?) — build "
		         "it for x86_64",
		         cfg->kernel_path);
		return -ENOEXEC;
	}
	setup_sects = k[BP_SETUP_SECTS] ? k[BP_SETUP_SECTS] : 4;
	setup_size = (uint64_t)(setup_sects + 1) * 512;
	hdr_end = 0x202 + k[BP_JUMP + 1];
	syssize = (uint64_t)get_le32(k + BP_SYSSIZE) * 16;
	if (setup_size >= len || hdr_end > setup_size || hdr_end > BP_SIZE) {
		snprintf(err, errlen,
		         "%s: truncated bzImage: the setup header claims %llu bytes of setup code, "
		         "the file has %zu",
		         cfg->kernel_path, (unsigned long long)setup_size, len);
		return -ENOEXEC;
	}
	payload = len - setup_size;
	if (syssize > payload) {
		snprintf(err, errlen,
		         "%s: truncated bzImage: the header says %llu bytes of kernel, the file "
		         "has %llu — copy it again",
		         cfg->kernel_path, (unsigned long long)syssize,
		         (unsigned long long)payload);
		return -ENOEXEC;
	}
	init_size = get_le32(k + BP_INIT_SIZE);
	if (init_size < payload)
		init_size = payload;
	if (GM_KERNEL + init_size > guest_mem_low_end(m)) {
		snprintf(err, errlen,
		         "%s: the kernel needs %s of memory above 1 MiB, --memory %s is too small",
		         cfg->kernel_path, format_size(init_size, a, sizeof(a)),
		         format_size(m->size, b, sizeof(b)));
		return -ENOSPC;
	}
	if (gm_write(m, GM_KERNEL, k + setup_size, payload) < 0)
		return -EFAULT;
	bi->kernel_lo = GM_KERNEL;
	bi->kernel_hi = GM_KERNEL + init_size;

	cmdline_max = version >= 0x0206 ? (uint64_t)get_le32(k + BP_CMDLINE_SIZE) + 1 : 256;
	r = boot_place_cmdline(m, cfg, cmdline_max, err, errlen);
	if (r < 0)
		return r;
	initrd_max = version >= 0x0203 ? get_le32(k + BP_INITRD_ADDR_MAX) : 0x37ffffff;
	r = boot_place_initrd(m, cfg, initrd_max, bi->kernel_hi, bi, err, errlen);
	if (r < 0)
		return r;

	memset(zp, 0, BP_SIZE);
	memcpy(zp + BP_SETUP_HEADER, k + BP_SETUP_HEADER, hdr_end - BP_SETUP_HEADER);
	boot_fill_zero_page(m, cfg, bi, zp);
	bi->entry_mode = BOOT_ENTRY_LINUX64;
	bi->entry = GM_KERNEL + 0x200; /* startup_64 of the decompressor */
	bi->boot_arg = GM_ZERO_PAGE;
	bi->format = "bzImage";
	return 0;
}

int boot_load(const struct guest_mem *m, const struct boot_config *cfg, struct boot_info *bi,
              char *err, size_t errlen)
{
	const uint8_t *k = cfg->kernel;
	size_t len = cfg->kernel_len;

	memset(bi, 0, sizeof(*bi));
	if (len >= 4 && memcmp(k, "\177ELF", 4) == 0)
		return boot_load_elf(m, cfg, bi, err, errlen);
	if (len >= 0x270 && memcmp(k + BP_HEADER_MAGIC, "HdrS", 4) == 0 &&
	    get_le16(k + BP_BOOT_FLAG) == 0xaa55)
		return boot_load_bzimage(m, cfg, bi, err, errlen);
	if (len >= 0x200 && get_le16(k + BP_BOOT_FLAG) == 0xaa55)
		snprintf(err, errlen,
		         "%s: a boot sector but not a Linux bzImage (no HdrS header) — "
		         "vmstack-vm boots Linux kernels, not disk images",
		         cfg->kernel_path);
	else
		snprintf(err, errlen,
		         "%s: not a kernel vmstack-vm can boot (neither a bzImage nor an ELF "
		         "vmlinux)",
		         cfg->kernel_path);
	return -ENOEXEC;
}
