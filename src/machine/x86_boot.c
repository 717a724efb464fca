/* x86_boot.c: boot GDT, identity page tables, MSRs, FPU and LAPIC set-up, entry registers. */
#include "x86_boot.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "boot_internal.h"
#include "util.h"

/* Selectors as the Linux boot protocol requires: __BOOT_CS 0x10, __BOOT_DS 0x18. */
#define SEL_CODE64 0x10
#define SEL_DATA   0x18
#define SEL_TSS    0x20
#define SEL_CODE32 0x28

static const uint64_t boot_gdt[] = {
    0,
    0,
    0x00af9b000000ffffULL, /* 0x10: 64-bit code, DPL 0 */
    0x00cf93000000ffffULL, /* 0x18: flat 4 GiB data */
    0x00808b0000000067ULL, /* 0x20: 32-bit busy TSS at 0 (PVH asks for one) */
    0x00cf9b000000ffffULL, /* 0x28: flat 4 GiB 32-bit code (PVH entry) */
};

int x86_boot_tables(const struct guest_mem *m)
{
	uint8_t *gdt = gm_ptr(m, GM_BOOT_GDT, sizeof(boot_gdt));
	uint8_t *pml4 = gm_ptr(m, GM_PML4, 4096);
	uint8_t *pdpt = gm_ptr(m, GM_PDPT, 4096);
	uint8_t *pd = gm_ptr(m, GM_PD, 4 * 4096);

	if (!gdt || !pml4 || !pdpt || !pd)
		return -EFAULT;
	for (size_t i = 0; i < ARRAY_SIZE(boot_gdt); i++)
		put_le64(gdt + i * 8, boot_gdt[i]);
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	put_le64(pml4, GM_PDPT | 0x3); /* present, writable */
	for (uint64_t i = 0; i < 4; i++)
		put_le64(pdpt + i * 8, (GM_PD + i * 4096) | 0x3);
	for (uint64_t i = 0; i < 4 * 512; i++)
		put_le64(pd + i * 8, (i << 21) | 0x83); /* present, writable, 2 MiB page */
	return 0;
}

static void set_msr(struct kvm_msr_entry *e, unsigned *n, uint32_t index, uint64_t data)
{
	e[*n].index = index;
	e[*n].data = data;
	(*n)++;
}

int x86_vcpu_init(int fd)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[16];
	} msrs;
	struct kvm_fpu fpu;
	struct kvm_lapic_state lapic;
	unsigned n = 0;
	uint32_t *lvt;

	memset(&msrs, 0, sizeof(msrs));
	set_msr(msrs.e, &n, 0x174, 0);              /* SYSENTER_CS */
	set_msr(msrs.e, &n, 0x175, 0);              /* SYSENTER_ESP */
	set_msr(msrs.e, &n, 0x176, 0);              /* SYSENTER_EIP */
	set_msr(msrs.e, &n, 0xc0000081, 0);         /* STAR */
	set_msr(msrs.e, &n, 0xc0000082, 0);         /* LSTAR */
	set_msr(msrs.e, &n, 0xc0000083, 0);         /* CSTAR */
	set_msr(msrs.e, &n, 0xc0000084, 0);         /* SYSCALL_MASK */
	set_msr(msrs.e, &n, 0xc0000102, 0);         /* KERNEL_GS_BASE */
	set_msr(msrs.e, &n, 0x1a0, 1);              /* MISC_ENABLE: fast strings */
	set_msr(msrs.e, &n, 0x2ff, (1u << 11) | 6); /* MTRRdefType: enabled, write-back */
	msrs.hdr.nmsrs = n;
	if (ioctl(fd, KVM_SET_MSRS, &msrs) < 0)
		return -errno;
	/* KVM_SET_MSRS stops at the first MSR it refuses; the rest are optional. */

	memset(&fpu, 0, sizeof(fpu));
	fpu.fcw = 0x37f;
	fpu.mxcsr = 0x1f80;
	if (ioctl(fd, KVM_SET_FPU, &fpu) < 0)
		return -errno;

	/* LINT0 = ExtINT (the 8259 behind it), LINT1 = NMI, as firmware leaves them. */
	if (ioctl(fd, KVM_GET_LAPIC, &lapic) < 0)
		return -errno;
	lvt = (uint32_t *)(void *)&lapic.regs[0x350];
	*lvt = (*lvt & ~0x700u & ~0x10000u) | (7u << 8);
	lvt = (uint32_t *)(void *)&lapic.regs[0x360];
	*lvt = (*lvt & ~0x700u & ~0x10000u) | (4u << 8);
	if (ioctl(fd, KVM_SET_LAPIC, &lapic) < 0)
		return -errno;
	return 0;
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code64, bool db)
{
	memset(s, 0, sizeof(*s));
	s->selector = sel;
	s->base = 0;
	s->limit = 0xffffffff;
	s->type = type;
	s->present = 1;
	s->s = 1;
	s->l = code64;
	s->db = db;
	s->g = 1;
}

int x86_bsp_entry(int fd, const struct boot_info *bi)
{
	struct kvm_sregs sr;
	struct kvm_regs regs;
	bool lm = bi->entry_mode == BOOT_ENTRY_LINUX64;

	if (ioctl(fd, KVM_GET_SREGS, &sr) < 0)
		return -errno;
	if (lm)
		seg(&sr.cs, SEL_CODE64, 0xb, true, false);
	else
		seg(&sr.cs, SEL_CODE32, 0xb, false, true);
	seg(&sr.ds, SEL_DATA, 0x3, false, true);
	sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
	memset(&sr.tr, 0, sizeof(sr.tr));
	sr.tr.selector = SEL_TSS;
	sr.tr.limit = 0x67;
	sr.tr.type = 0xb;
	sr.tr.present = 1;
	sr.gdt.base = GM_BOOT_GDT;
	sr.gdt.limit = sizeof(boot_gdt) - 1;
	sr.idt.base = 0;
	sr.idt.limit = 0;
	if (lm) {
		sr.cr0 = 0x80000011; /* PG | ET | PE */
		sr.cr3 = GM_PML4;
		sr.cr4 = 0x20;   /* PAE */
		sr.efer = 0x500; /* LMA | LME */
	} else {
		sr.cr0 = 0x11; /* ET | PE */
		sr.cr3 = 0;
		sr.cr4 = 0;
		sr.efer = 0;
	}
	if (ioctl(fd, KVM_SET_SREGS, &sr) < 0)
		return -errno;

	memset(&regs, 0, sizeof(regs));
	regs.rflags = 0x2;
	regs.rip = bi->entry;
	if (lm)
		regs.rsi = bi->boot_arg;
	else
		regs.rbx = bi->boot_arg;
	if (ioctl(fd, KVM_SET_REGS, &regs) < 0)
		return -errno;
	return 0;
}
