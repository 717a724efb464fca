/* test_boot.c: boot_load on hand-made bzImages and ELF kernels — good ones and hostile ones. */
#include <elf.h>
#include <errno.h>

#include "boot.h"
#include "guest_mem.h"
#include "test.h"
#include "util.h"

#define KPATH "/images/test-kernel"
#define IPATH "/images/test-initrd"

/* Our own little-endian accessors, so a bug in the loader's cannot hide itself. */
static void w16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void w32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t r16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t r32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t r64(const uint8_t *p)
{
	return r32(p) | (uint64_t)r32(p + 4) << 32;
}

static bool contains(const char *haystack, const char *needle)
{
	if (strstr(haystack, needle))
		return true;
	fprintf(stderr, "message \"%s\" lacks \"%s\"\n", haystack, needle);
	return false;
}

static void mem_setup(struct guest_mem *m)
{
	char err[256];
	int r = guest_mem_create(m, 64 * MiB, 0, 0, err, sizeof(err));

	CHECK_EQ(r, 0);
	if (r < 0) {
		fprintf(stderr, "guest_mem_create: %s\n", err);
		exit(1);
	}
	/* Garbage where the boot data goes, so the loader must clear what it relies on. */
	memset(m->host, 0xab, 0x100000);
}

static uint8_t *mem(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	uint8_t *p = gm_ptr(m, gpa, len);

	CHECK(p != NULL);
	if (!p) {
		fprintf(stderr, "gpa 0x%llx+0x%llx is not RAM\n", (unsigned long long)gpa,
		        (unsigned long long)len);
		exit(1);
	}
	return p;
}

static uint8_t *make_initrd(size_t len)
{
	uint8_t *p = malloc(len);

	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(i * 13 + 5);
	return p;
}

/* ---- bzImage ---------------------------------------------------------------------------- */

#define SETUP_SECTS 4
#define SETUP_SIZE  ((SETUP_SECTS + 1) * 512)
#define PAYLOAD     8192
#define HDR_END     0x26c /* 0x202 + the jump byte below */
#define INIT_SIZE   0x400000

static uint8_t payload_byte(size_t i)
{
	return (uint8_t)(i * 7 + 3);
}

/* A minimal bzImage: setup sectors with a 2.15 header, then a recognisable payload. */
static uint8_t *make_bzimage(size_t *len)
{
	uint8_t *k = malloc(SETUP_SIZE + PAYLOAD);

	memset(k, 0, SETUP_SIZE);
	memset(k + HDR_END, 0xcc, SETUP_SIZE - HDR_END); /* "setup code" after the header */
	k[0x1f1] = SETUP_SECTS;
	w32(k + 0x1f4, PAYLOAD / 16);
	w16(k + 0x1fe, 0xaa55);
	k[0x200] = 0xeb;
	k[0x201] = HDR_END - 0x202;
	memcpy(k + 0x202, "HdrS", 4);
	w16(k + 0x206, 0x020f);
	k[0x211] = 0x01;
	w32(k + 0x22c, 0x37ffffff);
	w32(k + 0x230, 0x200000);
	k[0x234] = 1;
	w16(k + 0x236, XLF_KERNEL_64 | 0x2);
	w32(k + 0x238, 2047);
	w32(k + 0x258, 0x1000000);
	w32(k + 0x260, INIT_SIZE);
	w32(k + 0x264, 0x190); /* handover_offset: inside the header, so copied */
	for (size_t i = 0; i < PAYLOAD; i++)
		k[SETUP_SIZE + i] = payload_byte(i);
	*len = SETUP_SIZE + PAYLOAD;
	return k;
}

static struct boot_config kernel_cfg(const uint8_t *k, size_t len, const char *cmdline)
{
	return (struct boot_config){
	    .kernel_path = KPATH, .kernel = k, .kernel_len = len, .cmdline = cmdline};
}

static void check_e820_in_zero_page(const struct guest_mem *m, const uint8_t *zp)
{
	struct e820_entry e[BP_E820_MAX];
	unsigned n = gm_e820(m, e, BP_E820_MAX);

	CHECK_EQ(n, 4);
	CHECK_EQ(zp[BP_E820_ENTRIES], n);
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *z = zp + BP_E820_TABLE + i * 20;
		CHECK_EQ(r64(z), e[i].addr);
		CHECK_EQ(r64(z + 8), e[i].size);
		CHECK_EQ(r32(z + 16), e[i].type);
	}
	/* The slot after the last entry is cleared, not left as garbage. */
	CHECK_EQ(r32(zp + BP_E820_TABLE + n * 20 + 16), 0);
}

TEST(bzimage_loads)
{
	struct guest_mem m;
	struct boot_info bi;
	char err[256] = "";
	size_t klen;
	uint8_t *k = make_bzimage(&klen);
	uint8_t *initrd = make_initrd(10000);
	struct boot_config cfg = kernel_cfg(k, klen, "console=ttyS0 root=/dev/vda quiet");
	uint8_t *zp;
	uint64_t initrd_gpa = ALIGN_DOWN(64 * MiB - 10000, 4096);

	mem_setup(&m);
	cfg.initrd_path = IPATH;
	cfg.initrd = initrd;
	cfg.initrd_len = 10000;
	cfg.rsdp_gpa = 0xe0000;
	CHECK_EQ(boot_load(&m, &cfg, &bi, err, sizeof(err)), 0);
	CHECK_STR(err, "");

	CHECK_EQ(bi.entry_mode, BOOT_ENTRY_LINUX64);
	CHECK_EQ(bi.entry, 0x100200);
	CHECK_EQ(bi.boot_arg, 0x7000);
	CHECK_EQ(bi.kernel_lo, 0x100000);
	CHECK_EQ(bi.kernel_hi, 0x100000 + INIT_SIZE);
	CHECK_STR(bi.format, "bzImage");

	/* The payload (everything after the setup sectors) at 1 MiB, byte for byte. */
	CHECK(memcmp(mem(&m, 0x100000, PAYLOAD), k + SETUP_SIZE, PAYLOAD) == 0);

	/* Command line. */
	CHECK_STR((const char *)mem(&m, 0x20000, 64), "console=ttyS0 root=/dev/vda quiet");

	/* Initrd at the top of RAM, page aligned. */
	CHECK_EQ(bi.initrd_gpa, initrd_gpa);
	CHECK_EQ(bi.initrd_gpa % 4096, 0);
	CHECK_EQ(bi.initrd_len, 10000);
	CHECK(memcmp(mem(&m, initrd_gpa, 10000), initrd, 10000) == 0);

	/* Zero page: loader fields. */
	zp = mem(&m, 0x7000, 0x1000);
	CHECK_EQ(zp[BP_TYPE_OF_LOADER], 0xff);
	CHECK_EQ(zp[BP_LOADFLAGS] & (LOADFLAG_LOADED_HIGH | LOADFLAG_CAN_USE_HEAP),
	         LOADFLAG_LOADED_HIGH | LOADFLAG_CAN_USE_HEAP);
	CHECK_EQ(r16(zp + BP_HEAP_END_PTR), 0xfe00);
	CHECK_EQ(r32(zp + BP_CMD_LINE_PTR), 0x20000);
	CHECK_EQ(r32(zp + BP_EXT_CMD_LINE_PTR), 0);
	CHECK_EQ(r32(zp + BP_RAMDISK_IMAGE), initrd_gpa);
	CHECK_EQ(r32(zp + BP_RAMDISK_SIZE), 10000);
	CHECK_EQ(r32(zp + BP_EXT_RAMDISK_IMAGE), 0);
	CHECK_EQ(r32(zp + BP_EXT_RAMDISK_SIZE), 0);
	CHECK_EQ(r64(zp + BP_ACPI_RSDP_ADDR), 0xe0000);
	check_e820_in_zero_page(&m, zp);

	/* Zero page: the kernel's setup header copied, and nothing past its end. */
	CHECK_EQ(zp[BP_SETUP_SECTS], SETUP_SECTS);
	CHECK_EQ(r16(zp + BP_BOOT_FLAG), 0xaa55);
	CHECK(memcmp(zp + BP_HEADER_MAGIC, "HdrS", 4) == 0);
	CHECK_EQ(r16(zp + BP_VERSION), 0x020f);
	CHECK_EQ(r32(zp + BP_SYSSIZE), PAYLOAD / 16);
	CHECK_EQ(r32(zp + BP_KERNEL_ALIGNMENT), 0x200000);
	CHECK_EQ(zp[BP_RELOCATABLE], 1);
	CHECK_EQ(r16(zp + BP_XLOADFLAGS), XLF_KERNEL_64 | 0x2);
	CHECK_EQ(r32(zp + BP_CMDLINE_SIZE), 2047);
	CHECK_EQ(r32(zp + BP_INITRD_ADDR_MAX), 0x37ffffff);
	CHECK_EQ(r64(zp + BP_PREF_ADDRESS), 0x1000000);
	CHECK_EQ(r32(zp + BP_INIT_SIZE), INIT_SIZE);
	CHECK_EQ(r32(zp + 0x264), 0x190);
	CHECK_EQ(zp[HDR_END], 0);
	CHECK_EQ(zp[0x2cf], 0);
	/* Everything else was cleared. */
	CHECK_EQ(zp[0x000], 0);
	CHECK_EQ(zp[0x100], 0);
	CHECK_EQ(zp[0xfff], 0);

	guest_mem_destroy(&m);
	free(initrd);
	free(k);
}

TEST(bzimage_without_initrd_or_acpi)
{
	struct guest_mem m;
	struct boot_info bi;
	char err[256] = "";
	size_t klen;
	uint8_t *k = make_bzimage(&klen);
	struct boot_config cfg = kernel_cfg(k, klen, "");
	uint8_t *zp;

	mem_setup(&m);
	k[0x1f1] = 0; /* setup_sects 0 means 4, for ancient reasons */
	CHECK_EQ(boot_load(&m, &cfg, &bi, err, sizeof(err)), 0);
	CHECK_EQ(bi.initrd_gpa, 0);
	CHECK_EQ(bi.initrd_len, 0);
	CHECK(memcmp(mem(&m, 0x100000, PAYLOAD), k + SETUP_SIZE, PAYLOAD) == 0);
	zp = mem(&m, 0x7000, 0x1000);
	CHECK_EQ(r32(zp + BP_RAMDISK_IMAGE), 0);
	CHECK_EQ(r32(zp + BP_RAMDISK_SIZE), 0);
	CHECK_EQ(r64(zp + BP_ACPI_RSDP_ADDR), 0);
	CHECK_EQ(*mem(&m, 0x20000, 1), 0); /* empty command line, terminated */
	guest_mem_destroy(&m);
	free(k);
}

TEST(bzimage_initrd_below_initrd_addr_max)
{
	struct guest_mem m;
	struct boot_info bi;
	char err[256] = "";
	size_t klen;
	uint8_t *k = make_bzimage(&klen);
	uint8_t *initrd = make_initrd(5000);
	struct boot_config cfg = kernel_cfg(k, klen, "x");
	uint64_t want = ALIGN_DOWN(32 * MiB - 5000, 4096);

	mem_setup(&m);
	w32(k + 0x22c, 32 * MiB - 1); /* the kernel can only reach 32 MiB */
	cfg.initrd_path = IPATH;
	cfg.initrd = initrd;
	cfg.initrd_len = 5000;
	CHECK_EQ(boot_load(&m, &cfg, &bi, err, sizeof(err)), 0);
	CHECK_EQ(bi.initrd_gpa, want);
	CHECK(bi.initrd_gpa + bi.initrd_len <= 32 * MiB);
	CHECK(memcmp(mem(&m, want, 5000), initrd, 5000) == 0);
	CHECK_EQ(r32(mem(&m, 0x7000 + BP_RAMDISK_IMAGE, 4)), want);
	guest_mem_destroy(&m);
	free(initrd);
	free(k);
}

TEST(bzimage_cmdline_limit)
{
	struct guest_mem m;
	struct boot_info bi;
	char err[256] = "";
	size_t klen;
	uint8_t *k = make_bzimage(&klen);
	char *line = malloc(2049);
	struct boot_config cfg = kernel_cfg(k, klen, line);

	mem_setup(&m);
	memset(line, 'a', 2047);
	line[2047] = '\0';
	CHECK_EQ(boot_load(&m, &cfg, &bi, err, sizeof(err)), 0); /* exactly cmdline_size */
	CHECK_EQ(strlen((const char *)mem(&m, 0x20000, 2048)), 2047);

	line[2047] = 'a';
	line[2048] = '\0';
	CHECK_EQ(boot_load(&m, &cfg, &bi, err, sizeof(err)), -E2BIG);
	CHECK(contains(err, "--cmdline"));
	CHECK(contains(err, KPATH));
	CHECK(contains(err, "2047"));

	/* A kernel that says it takes less is believed. */
	w32(k + 0x238, 255);
	line[255] = '\0';
	CHECK_EQ(boot_load(&m, &cfg, &bi, err, sizeof(err)), 0);
	line[255] = 'a';
	line[256] = '\0';
	CHECK_EQ(boot_load(&m, &cfg, &bi, err, sizeof(err)), -E2BIG);
	guest_mem_destroy(&m);
	free(line);
	free(k);
}

/* boot_load must fail with `rc` and a message naming `path` and containing `needle`. */
static void expect_fail(const struct boot_config *cfg, int rc, const char *path, const char *needle)
{
	struct guest_mem m;
	struct boot_info bi;
	char err[256] = "";
	int r;

	mem_setup(&m);
	r = boot_load(&m, cfg, &bi, err, sizeof(err));
	if (rc)
		CHECK_EQ(r, rc);
	else
		CHECK(r < 0);
	CHECK(contains(err, path));
	if (needle)
		CHECK(contains(err, needle));
	guest_mem_destroy(&m);
}

TEST(bzimage_rejects_non_kernels)
{
	uint8_t *junk = malloc(4096);
	uint32_t x = 12345;
	size_t klen;
	uint8_t *k;
	struct boot_config cfg;

	for (size_t i = 0; i < 4096; i++) {
		x = x * 1103515245 + 12345;
		junk[i] = (uint8_t)(x >> 16);
	}
	junk[0] = 'J';
	junk[0x1fe] = 0; /* not a boot sector either */
	cfg = kernel_cfg(junk, 4096, "");
	expect_fail(&cfg, -ENOEXEC, KPATH, "not a kernel");
	cfg.kernel_len = 0;
	expect_fail(&cfg, -ENOEXEC, KPATH, "not a kernel");

	/* A boot sector (an MBR, a disk image) without the HdrS header. */
	memset(junk, 0, 4096);
	w16(junk + 0x1fe, 0xaa55);
	cfg = kernel_cfg(junk, 512, "");
	expect_fail(&cfg, -ENOEXEC, KPATH, "boot sector");
	cfg.kernel_len = 4096;
	expect_fail(&cfg, -ENOEXEC, KPATH, "boot sector");

	k = make_bzimage(&klen);
	memcpy(k + 0x202, "HdrX", 4);
	cfg = kernel_cfg(k, klen, "");
	expect_fail(&cfg, -ENOEXEC, KPATH, "boot sector");
	free(k);
	free(junk);
}

TEST(bzimage_rejects_old_or_32bit)
{
	size_t klen;
	uint8_t *k = make_bzimage(&klen);
	struct boot_config cfg = kernel_cfg(k, klen, "");

	w16(k + 0x206, 0x0200);
	expect_fail(&cfg, -ENOEXEC, KPATH, "too old");
	w16(k + 0x206, 0x020b);
	expect_fail(&cfg, -ENOEXEC, KPATH, "2.11");
	w16(k + 0x206, 0x020f);
	w16(k + 0x236, 0);
	expect_fail(&cfg, -ENOEXEC, KPATH, "64-bit");
	free(k);
}

TEST(bzimage_rejects_truncated)
{
	size_t klen;
	uint8_t *k = make_bzimage(&klen);
	uint8_t *shortk;
	struct boot_config cfg = kernel_cfg(k, klen, "");

	/* syssize claims more payload than the file has. */
	w32(k + 0x1f4, PAYLOAD / 16 + 1);
	expect_fail(&cfg, -ENOEXEC, KPATH, "truncated");
	w32(k + 0x1f4, PAYLOAD / 16);

	/* The file ends partway through the payload. */
	cfg.kernel_len = klen - 1;
	expect_fail(&cfg, -ENOEXEC, KPATH, "truncated");

	/* The file ends inside the setup sectors (copied to an exact-size buffer for ASan). */
	shortk = malloc(0x400);
	memcpy(shortk, k, 0x400);
	cfg = kernel_cfg(shortk, 0x400, "");
	expect_fail(&cfg, -ENOEXEC, KPATH, "truncated");
	/* ... or right at their end, with no payload at all. */
	cfg = kernel_cfg(k, SETUP_SIZE, "");
	expect_fail(&cfg, -ENOEXEC, KPATH, "truncated");
	/* More setup sectors than the file holds. */
	k[0x1f1] = 200;
	cfg = kernel_cfg(k, klen, "");
	expect_fail(&cfg, -ENOEXEC, KPATH, "truncated");
	free(shortk);
	free(k);
}

TEST(bzimage_rejects_what_does_not_fit)
{
	size_t klen;
	uint8_t *k = make_bzimage(&klen);
	uint8_t *initrd = make_initrd(60 * MiB);
	struct boot_config cfg = kernel_cfg(k, klen, "");

	/* init_size beyond the RAM above 1 MiB. */
	w32(k + 0x260, 0x10000000);
	expect_fail(&cfg, -ENOSPC, KPATH, "--memory");
	w32(k + 0x260, 63 * MiB + 1);
	expect_fail(&cfg, -ENOSPC, KPATH, "--memory");
	w32(k + 0x260, INIT_SIZE);

	/* An initrd that would overlap the kernel's init_size, or exceed RAM. */
	cfg.initrd_path = IPATH;
	cfg.initrd = initrd;
	cfg.initrd_len = 60 * MiB;
	expect_fail(&cfg, -ENOSPC, IPATH, "--memory");
	cfg.initrd_len = 64 * MiB + 1;
	expect_fail(&cfg, -ENOSPC, IPATH, "--memory");
	cfg.initrd_len = 0;
	expect_fail(&cfg, -EINVAL, IPATH, "empty");
	free(initrd);
	free(k);
}

/* ---- ELF -------------------------------------------------------------------------------- */

#define CODE_OFF   0x200
#define CODE_LEN   0x1000
#define TAIL_OFF   (CODE_OFF + CODE_LEN)
#define LOAD_ADDR  0x200000
#define LOAD_MEMSZ 0x3000
#define ELF_ENTRY  0x200100
#define PVH_ENTRY  0x200040

/*
 * An ELF64 x86-64 executable: header, program headers at 64, CODE_LEN bytes of code at
 * CODE_OFF, then `tail` (notes) ending the file, in a buffer of exactly that size.
 */
static uint8_t *elf_build(size_t *len, const Elf64_Phdr *ph, unsigned nph, const void *tail,
                          size_t tail_len)
{
	Elf64_Ehdr eh;
	uint8_t *f;

	*len = TAIL_OFF + tail_len;
	f = calloc(1, *len);
	memset(&eh, 0, sizeof(eh));
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_type = ET_EXEC;
	eh.e_machine = EM_X86_64;
	eh.e_version = EV_CURRENT;
	eh.e_entry = ELF_ENTRY;
	eh.e_phoff = sizeof(eh);
	eh.e_ehsize = sizeof(eh);
	eh.e_phentsize = sizeof(Elf64_Phdr);
	eh.e_phnum = (uint16_t)nph;
	memcpy(f, &eh, sizeof(eh));
	memcpy(f + sizeof(eh), ph, nph * sizeof(*ph));
	for (size_t i = 0; i < CODE_LEN; i++)
		f[CODE_OFF + i] = (uint8_t)(0x90 + i % 7);
	if (tail_len)
		memcpy(f + TAIL_OFF, tail, tail_len);
	return f;
}

static Elf64_Phdr load_phdr(void)
{
	return (Elf64_Phdr){.p_type = PT_LOAD,
	                    .p_flags = PF_R | PF_X,
	                    .p_offset = CODE_OFF,
	                    .p_vaddr = 0xffffffff80000000ULL + LOAD_ADDR,
	                    .p_paddr = LOAD_ADDR,
	                    .p_filesz = CODE_LEN,
	                    .p_memsz = LOAD_MEMSZ,
	                    .p_align = 0x1000};
}

static Elf64_Phdr note_phdr(size_t len)
{
	return (Elf64_Phdr){.p_type = PT_NOTE, .p_offset = TAIL_OFF, .p_filesz = len, .p_align = 4};
}

/* Appends one note (namesz/descsz as given, even if they lie) to buf; returns new length. */
static size_t put_note(uint8_t *buf, size_t off, uint32_t namesz, uint32_t descsz, uint32_t type,
                       const char *name, size_t name_bytes, const void *desc, size_t desc_bytes)
{
	w32(buf + off, namesz);
	w32(buf + off + 4, descsz);
	w32(buf + off + 8, type);
	off += 12;
	memcpy(buf + off, name, name_bytes);
	off += ALIGN_UP(name_bytes, 4);
	memcpy(buf + off, desc, desc_bytes);
	off += ALIGN_UP(desc_bytes, 4);
	return off;
}

TEST(elf_loads_with_64bit_entry)
{
	struct guest_mem m;
	struct boot_info bi;
	char err[256] = "";
	Elf64_Phdr ph[2] = {load_phdr(), {.p_type = PT_GNU_STACK}};
	size_t len;
	uint8_t *f = elf_build(&len, ph, 2, NULL, 0);
	uint8_t *initrd = make_initrd(7000);
	struct boot_config cfg = kernel_cfg(f, len, "console=hvc0");
	uint8_t *zp, *dst;
	uint64_t initrd_gpa = ALIGN_DOWN(64 * MiB - 7000, 4096);

	mem_setup(&m);
	memset(mem(&m, LOAD_ADDR, LOAD_MEMSZ), 0xee, LOAD_MEMSZ); /* bss must be cleared */
	cfg.initrd_path = IPATH;
	cfg.initrd = initrd;
	cfg.initrd_len = 7000;
	cfg.rsdp_gpa = 0xe0000;
	CHECK_EQ(boot_load(&m, &cfg, &bi, err, sizeof(err)), 0);
	CHECK_STR(err, "");

	CHECK_EQ(bi.entry_mode, BOOT_ENTRY_LINUX64);
	CHECK_EQ(bi.entry, ELF_ENTRY);
	CHECK_EQ(bi.boot_arg, 0x7000);
	CHECK_EQ(bi.kernel_lo, LOAD_ADDR);
	CHECK_EQ(bi.kernel_hi, LOAD_ADDR + LOAD_MEMSZ);
	CHECK_STR(bi.format, "ELF (64-bit entry)");

	dst = mem(&m, LOAD_ADDR, LOAD_MEMSZ);
	CHECK(memcmp(dst, f + CODE_OFF, CODE_LEN) == 0);
	CHECK_EQ(dst[CODE_LEN], 0);
	CHECK_EQ(dst[LOAD_MEMSZ - 1], 0);

	CHECK_EQ(bi.initrd_gpa, initrd_gpa);
	CHECK_EQ(bi.initrd_len, 7000);
	CHECK(memcmp(mem(&m, initrd_gpa, 7000), initrd, 7000) == 0);
	CHECK_STR((const char *)mem(&m, 0x20000, 16), "console=hvc0");

	/* The zero page we make up for a kernel that brought none. */
	zp = mem(&m, 0x7000, 0x1000);
	CHECK_EQ(r16(zp + BP_BOOT_FLAG), 0xaa55);
	CHECK(memcmp(zp + BP_HEADER_MAGIC, "HdrS", 4) == 0);
	CHECK_EQ(r16(zp + BP_VERSION), 0x020f);
	CHECK_EQ(r32(zp + BP_CMDLINE_SIZE), 2047);
	CHECK_EQ(zp[BP_TYPE_OF_LOADER], 0xff);
	CHECK_EQ(r32(zp + BP_CMD_LINE_PTR), 0x20000);
	CHECK_EQ(r32(zp + BP_RAMDISK_IMAGE), initrd_gpa);
	CHECK_EQ(r32(zp + BP_RAMDISK_SIZE), 7000);
	CHECK_EQ(r64(zp + BP_ACPI_RSDP_ADDR), 0xe0000);
	check_e820_in_zero_page(&m, zp);
	CHECK_EQ(zp[0], 0);
	CHECK_EQ(zp[0xfff], 0);

	guest_mem_destroy(&m);
	free(initrd);
	free(f);
}

static size_t pvh_notes(uint8_t *buf, uint32_t entry)
{
	static const uint8_t build_id[20] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
	                                     11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
	uint8_t desc[4];
	size_t off;

	w32(desc, entry);
	off = put_note(buf, 0, 4, sizeof(build_id), NT_GNU_BUILD_ID, "GNU", 4, build_id,
	               sizeof(build_id));
	/* Another Xen note first, of a different type: must be skipped. */
	off = put_note(buf, off, 4, 4, 6 /* XEN_ELFNOTE_LOADER */, "Xen", 4, "\x11\x22\x33\x44", 4);
	return put_note(buf, off, 4, 4, PVH_NOTE_PHYS32_ENTRY, "Xen", 4, desc, 4);
}

TEST(elf_pvh_note_selects_pvh_entry)
{
	struct guest_mem m;
	struct boot_info bi;
	char err[256] = "";
	uint8_t notes[128];
	size_t nlen = pvh_notes(notes, PVH_ENTRY);
	Elf64_Phdr ph[2] = {note_phdr(nlen), load_phdr()};
	size_t len;
	uint8_t *f = elf_build(&len, ph, 2, notes, nlen);
	uint8_t *initrd = make_initrd(3000);
	struct boot_config cfg = kernel_cfg(f, len, "console=ttyS0 init=/init");
	struct e820_entry e[16];
	unsigned n = 0;
	uint8_t *si, *mod, *map;
	uint64_t memmap;

	mem_setup(&m);
	n = gm_e820(&m, e, ARRAY_SIZE(e));
	cfg.initrd_path = IPATH;
	cfg.initrd = initrd;
	cfg.initrd_len = 3000;
	cfg.rsdp_gpa = 0xe0000;
	CHECK_EQ(boot_load(&m, &cfg, &bi, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK_EQ(bi.entry_mode, BOOT_ENTRY_PVH32);
	CHECK_EQ(bi.entry, PVH_ENTRY);
	CHECK_EQ(bi.boot_arg, 0x6000);
	CHECK_STR(bi.format, "ELF vmlinux (PVH)");
	CHECK(memcmp(mem(&m, LOAD_ADDR, CODE_LEN), f + CODE_OFF, CODE_LEN) == 0);
	CHECK_STR((const char *)mem(&m, 0x20000, 32), "console=ttyS0 init=/init");

	si = mem(&m, 0x6000, 56);
	CHECK_EQ(r32(si + 0), 0x336ec578);
	CHECK_EQ(r32(si + 4), 1);
	CHECK_EQ(r32(si + 8), 0);
	CHECK_EQ(r32(si + 12), 1); /* nr_modules */
	CHECK_EQ(r64(si + 24), 0x20000);
	CHECK_EQ(r64(si + 32), 0xe0000);

	mod = mem(&m, r64(si + 16), 32);
	CHECK_EQ(r64(mod + 0), bi.initrd_gpa);
	CHECK_EQ(r64(mod + 8), 3000);
	CHECK_EQ(bi.initrd_gpa, ALIGN_DOWN(64 * MiB - 3000, 4096));
	CHECK(memcmp(mem(&m, bi.initrd_gpa, 3000), initrd, 3000) == 0);

	memmap = r64(si + 40);
	CHECK_EQ(r32(si + 48), n);
	CHECK(memmap >= 0x6000 && memmap + n * 24 <= 0x7000);
	map = mem(&m, memmap, n * 24);
	for (unsigned i = 0; i < n; i++) {
		CHECK_EQ(r64(map + i * 24), e[i].addr);
		CHECK_EQ(r64(map + i * 24 + 8), e[i].size);
		CHECK_EQ(r32(map + i * 24 + 16), e[i].type);
		CHECK_EQ(r32(map + i * 24 + 20), 0);
	}
	guest_mem_destroy(&m);
	free(initrd);
	free(f);
}

TEST(elf_pvh_without_initrd)
{
	struct guest_mem m;
	struct boot_info bi;
	char err[256] = "";
	uint8_t notes[128];
	size_t nlen = pvh_notes(notes, PVH_ENTRY);
	Elf64_Phdr ph[2] = {load_phdr(), note_phdr(nlen)};
	size_t len;
	uint8_t *f = elf_build(&len, ph, 2, notes, nlen);
	struct boot_config cfg = kernel_cfg(f, len, "");

	mem_setup(&m);
	CHECK_EQ(boot_load(&m, &cfg, &bi, err, sizeof(err)), 0);
	CHECK_EQ(bi.entry_mode, BOOT_ENTRY_PVH32);
	CHECK_EQ(r32(mem(&m, 0x6000 + 12, 4)), 0);
	CHECK_EQ(r64(mem(&m, 0x6000 + 32, 8)), 0); /* no RSDP */
	guest_mem_destroy(&m);
	free(f);
}

TEST(elf_pvh_note_with_64bit_desc)
{
	struct guest_mem m;
	struct boot_info bi;
	char err[256] = "";
	uint8_t notes[64], desc[8];
	size_t nlen;
	Elf64_Phdr ph[2];
	size_t len;
	uint8_t *f;
	struct boot_config cfg;

	/* Linux emits the entry with _ASM_PTR: 8 bytes on x86-64. */
	w32(desc, PVH_ENTRY);
	w32(desc + 4, 0);
	nlen = put_note(notes, 0, 4, 8, PVH_NOTE_PHYS32_ENTRY, "Xen", 4, desc, 8);
	ph[0] = load_phdr();
	ph[1] = note_phdr(nlen);
	f = elf_build(&len, ph, 2, notes, nlen);
	cfg = kernel_cfg(f, len, "");
	mem_setup(&m);
	CHECK_EQ(boot_load(&m, &cfg, &bi, err, sizeof(err)), 0);
	CHECK_EQ(bi.entry_mode, BOOT_ENTRY_PVH32);
	CHECK_EQ(bi.entry, PVH_ENTRY);
	guest_mem_destroy(&m);
	free(f);
}

/* Loads an ELF whose notes are malformed: the notes are ignored, never read past. */
static void expect_note_ignored(const uint8_t *notes, size_t nlen, uint64_t filesz)
{
	struct guest_mem m;
	struct boot_info bi;
	char err[256] = "";
	Elf64_Phdr ph[2] = {load_phdr(), note_phdr(filesz)};
	size_t len;
	uint8_t *f = elf_build(&len, ph, 2, notes, nlen);
	struct boot_config cfg = kernel_cfg(f, len, "");

	mem_setup(&m);
	CHECK_EQ(boot_load(&m, &cfg, &bi, err, sizeof(err)), 0);
	CHECK_EQ(bi.entry_mode, BOOT_ENTRY_LINUX64);
	CHECK_EQ(bi.entry, ELF_ENTRY);
	guest_mem_destroy(&m);
	free(f);
}

TEST(elf_hostile_notes)
{
	uint8_t notes[64] = {0}, desc[8] = {0x40, 0, 0x20, 0, 0, 0, 0, 0};
	size_t n;

	/* namesz so large that name + desc would run far past the segment (and wrap 32 bits). */
	n = put_note(notes, 0, 0xfffffff0, 4, PVH_NOTE_PHYS32_ENTRY, "Xen", 4, desc, 4);
	expect_note_ignored(notes, n, n);
	n = put_note(notes, 0, 0xffffffff, 0xffffffff, PVH_NOTE_PHYS32_ENTRY, "Xen", 4, desc, 4);
	expect_note_ignored(notes, n, n);
	/* The right name and type, but descsz claims 8 bytes and the file ends after 4. */
	n = put_note(notes, 0, 4, 8, PVH_NOTE_PHYS32_ENTRY, "Xen", 4, desc, 4);
	expect_note_ignored(notes, n, n);
	/* descsz huge. */
	n = put_note(notes, 0, 4, 0xfffffffc, PVH_NOTE_PHYS32_ENTRY, "Xen", 4, desc, 4);
	expect_note_ignored(notes, n, n);
	/* A descriptor too small to hold an entry. */
	n = put_note(notes, 0, 4, 2, PVH_NOTE_PHYS32_ENTRY, "Xen", 4, desc, 2);
	expect_note_ignored(notes, n, n);
	/* The name without its NUL, and a "Xen" name of the wrong size. */
	n = put_note(notes, 0, 3, 4, PVH_NOTE_PHYS32_ENTRY, "Xen", 3, desc, 4);
	expect_note_ignored(notes, n, n);
	/* A note header cut short by the segment end (fewer than 12 bytes). */
	n = put_note(notes, 0, 4, 4, PVH_NOTE_PHYS32_ENTRY, "Xen", 4, desc, 4);
	expect_note_ignored(notes, 8, 8);
	/* A good note, but the segment's filesz stops before its descriptor. */
	expect_note_ignored(notes, 18, 18);
	CHECK_EQ(n, 20);
}

static void expect_elf_fail(uint8_t *f, size_t len, int rc, const char *needle)
{
	struct boot_config cfg = kernel_cfg(f, len, "");

	expect_fail(&cfg, rc, KPATH, needle);
	free(f);
}

TEST(elf_rejects_wrong_kind)
{
	Elf64_Phdr ph = load_phdr();
	size_t len;
	uint8_t *f;

	f = elf_build(&len, &ph, 1, NULL, 0);
	f[EI_CLASS] = ELFCLASS32;
	expect_elf_fail(f, len, -ENOEXEC, "x86-64");

	f = elf_build(&len, &ph, 1, NULL, 0);
	f[EI_DATA] = ELFDATA2MSB;
	expect_elf_fail(f, len, -ENOEXEC, "x86-64");

	f = elf_build(&len, &ph, 1, NULL, 0);
	w16(f + offsetof(Elf64_Ehdr, e_machine), EM_386);
	expect_elf_fail(f, len, -ENOEXEC, "x86-64");

	f = elf_build(&len, &ph, 1, NULL, 0);
	w16(f + offsetof(Elf64_Ehdr, e_machine), EM_AARCH64);
	expect_elf_fail(f, len, -ENOEXEC, "x86-64");

	f = elf_build(&len, &ph, 1, NULL, 0);
	w16(f + offsetof(Elf64_Ehdr, e_type), ET_DYN);
	expect_elf_fail(f, len, -ENOEXEC, "not a bootable ELF");

	/* Only the magic and a few bytes: a truncated header. */
	f = malloc(20);
	memcpy(f, ELFMAG, SELFMAG);
	memset(f + 4, 0, 16);
	expect_elf_fail(f, 20, -ENOEXEC, "truncated");
}

TEST(elf_rejects_bad_program_headers)
{
	Elf64_Phdr ph = load_phdr();
	size_t len;
	uint8_t *f;

	/* Program headers past the end of the file. */
	f = elf_build(&len, &ph, 1, NULL, 0);
	w32(f + offsetof(Elf64_Ehdr, e_phoff), (uint32_t)len - 10);
	expect_elf_fail(f, len, -ENOEXEC, "program headers");

	f = elf_build(&len, &ph, 1, NULL, 0);
	w32(f + offsetof(Elf64_Ehdr, e_phoff), 0xfffffff8);
	w32(f + offsetof(Elf64_Ehdr, e_phoff) + 4, 0xffffffff); /* phoff + size wraps */
	expect_elf_fail(f, len, -ENOEXEC, "program headers");

	f = elf_build(&len, &ph, 1, NULL, 0);
	w16(f + offsetof(Elf64_Ehdr, e_phnum), 0xffff);
	expect_elf_fail(f, len, -ENOEXEC, "program headers");

	f = elf_build(&len, &ph, 1, NULL, 0);
	w16(f + offsetof(Elf64_Ehdr, e_phnum), 0);
	expect_elf_fail(f, len, -ENOEXEC, "program headers");

	f = elf_build(&len, &ph, 1, NULL, 0);
	w16(f + offsetof(Elf64_Ehdr, e_phentsize), 32);
	expect_elf_fail(f, len, -ENOEXEC, "program headers");
}

TEST(elf_rejects_truncated_segments)
{
	Elf64_Phdr ph[2];
	size_t len;
	uint8_t *f;

	/* offset + filesz past the end of the file. */
	ph[0] = load_phdr();
	ph[0].p_filesz = CODE_LEN + 1;
	ph[0].p_memsz = CODE_LEN + 1;
	f = elf_build(&len, ph, 1, NULL, 0);
	expect_elf_fail(f, len, -ENOEXEC, "truncated");

	ph[0] = load_phdr();
	ph[0].p_offset = 0x100000;
	f = elf_build(&len, ph, 1, NULL, 0);
	expect_elf_fail(f, len, -ENOEXEC, "truncated");

	ph[0] = load_phdr();
	ph[0].p_offset = UINT64_MAX - 0x10; /* offset + filesz wraps */
	f = elf_build(&len, ph, 1, NULL, 0);
	expect_elf_fail(f, len, -ENOEXEC, "truncated");

	/* A note segment past the end of the file. */
	ph[0] = load_phdr();
	ph[1] = note_phdr(64);
	f = elf_build(&len, ph, 2, NULL, 0);
	expect_elf_fail(f, len, -ENOEXEC, "truncated");
}

TEST(elf_rejects_segments_outside_ram)
{
	Elf64_Phdr ph;
	size_t len;
	uint8_t *f;

	ph = load_phdr();
	ph.p_paddr = 0x10000000; /* 256 MiB, RAM ends at 64 */
	f = elf_build(&len, &ph, 1, NULL, 0);
	expect_elf_fail(f, len, -ENOSPC, "outside guest RAM");

	ph = load_phdr();
	ph.p_paddr = 64 * MiB - 0x1000; /* starts in RAM, ends past it */
	f = elf_build(&len, &ph, 1, NULL, 0);
	expect_elf_fail(f, len, -ENOSPC, "outside guest RAM");

	ph = load_phdr();
	ph.p_paddr = 0x7000; /* below 1 MiB: would overwrite the boot data */
	f = elf_build(&len, &ph, 1, NULL, 0);
	expect_elf_fail(f, len, -ENOSPC, "outside guest RAM");

	ph = load_phdr();
	ph.p_paddr = UINT64_MAX - 0xfff; /* paddr + memsz wraps */
	f = elf_build(&len, &ph, 1, NULL, 0);
	expect_elf_fail(f, len, -ENOSPC, "outside guest RAM");

	ph = load_phdr();
	ph.p_memsz = UINT64_MAX;
	f = elf_build(&len, &ph, 1, NULL, 0);
	expect_elf_fail(f, len, -ENOSPC, "outside guest RAM");

	ph = load_phdr();
	ph.p_memsz = CODE_LEN - 1; /* filesz > memsz */
	f = elf_build(&len, &ph, 1, NULL, 0);
	expect_elf_fail(f, len, -ENOSPC, NULL);
}

TEST(elf_rejects_bad_entry_or_empty)
{
	Elf64_Phdr ph = load_phdr();
	Elf64_Phdr note;
	uint8_t notes[64];
	size_t len, n;
	uint8_t *f;

	f = elf_build(&len, &ph, 1, NULL, 0);
	w32(f + offsetof(Elf64_Ehdr, e_entry), 0x10000000);
	expect_elf_fail(f, len, -ENOEXEC, "entry point");

	/* A PVH entry outside RAM is just as bad. */
	n = put_note(notes, 0, 4, 4, PVH_NOTE_PHYS32_ENTRY, "Xen", 4, "\0\0\0\x40", 4);
	note = note_phdr(n);
	Elf64_Phdr both[2] = {ph, note};
	f = elf_build(&len, both, 2, notes, n);
	expect_elf_fail(f, len, -ENOEXEC, "entry point");

	/* Nothing but a note: nothing to load. */
	n = put_note(notes, 0, 4, 4, PVH_NOTE_PHYS32_ENTRY, "Xen", 4, "\x40\0\x20\0", 4);
	note = note_phdr(n);
	f = elf_build(&len, &note, 1, notes, n);
	expect_elf_fail(f, len, -ENOEXEC, "nothing to load");

	/* Only empty PT_LOADs. */
	ph.p_memsz = 0;
	ph.p_filesz = 0;
	f = elf_build(&len, &ph, 1, NULL, 0);
	expect_elf_fail(f, len, -ENOEXEC, "nothing to load");
}

TEST(elf_cmdline_and_initrd_limits)
{
	Elf64_Phdr ph = load_phdr();
	size_t len;
	uint8_t *f = elf_build(&len, &ph, 1, NULL, 0);
	char *line = malloc(2049);
	uint8_t *initrd = make_initrd(64 * MiB);
	struct boot_config cfg = kernel_cfg(f, len, line);
	struct guest_mem m;
	struct boot_info bi;
	char err[256];

	memset(line, 'b', 2048);
	line[2048] = '\0';
	expect_fail(&cfg, -E2BIG, KPATH, "--cmdline");
	line[2047] = '\0';
	mem_setup(&m);
	CHECK_EQ(boot_load(&m, &cfg, &bi, err, sizeof(err)), 0);
	guest_mem_destroy(&m);

	cfg.initrd_path = IPATH;
	cfg.initrd = initrd;
	cfg.initrd_len = 64 * MiB;
	expect_fail(&cfg, -ENOSPC, IPATH, "--memory");
	cfg.initrd_len = 64 * MiB - LOAD_ADDR - LOAD_MEMSZ + 1;
	expect_fail(&cfg, -ENOSPC, IPATH, "--memory");
	/* The largest initrd that fits between the kernel's end and the top of RAM. */
	cfg.initrd_len = 64 * MiB - LOAD_ADDR - LOAD_MEMSZ;
	mem_setup(&m);
	CHECK_EQ(boot_load(&m, &cfg, &bi, err, sizeof(err)), 0);
	CHECK_EQ(bi.initrd_gpa, LOAD_ADDR + LOAD_MEMSZ);
	guest_mem_destroy(&m);
	free(initrd);
	free(line);
	free(f);
}
