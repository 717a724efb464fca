/* smp_trampoline.S: real mode -> long mode start-up code for the smp guest's APs. */

/*
 * The BSP copies ap_trampoline..ap_trampoline_end to AP_TRAMP_BASE (0x10000), fills
 * in the CR3 slot and sends INIT-SIPI-SIPI with vector 0x10, so each AP starts here
 * at CS:IP = 1000:0000 in real mode. It loads the GDT below, enters protected mode,
 * turns on PAE + EFER.LME + paging with the BSP's page tables, far-jumps to 64-bit
 * code, sets its bit (LAPIC ID) in the bitmap, increments the counter and halts with
 * interrupts off. It needs no stack and touches nothing outside this page.
 *
 * Layout shared with smp.c (struct ap_tramp_data at offset 8):
 *   +0  jmp over the data    +8  u32 cr3    +12 u32 count    +16 u32 bitmap[8]
 * Kept to plain instructions: every one of them runs in KVM's emulator here.
 */

#define AP_TRAMP_BASE	0x10000
#define LAPIC_ID_REG	0xfee00020
#define ABS(sym)	(AP_TRAMP_BASE + (sym) - ap_trampoline)

	.section .rodata.ap_trampoline, "a"
	.globl	ap_trampoline
	.globl	ap_trampoline_end
	.balign	16
	.code16
ap_trampoline:
	jmp	ap_real

	.org	ap_trampoline + 8
ap_cr3:
	.long	0
ap_count:
	.long	0
ap_bitmap:
	.fill	8, 4, 0

	.balign	8
ap_gdt:
	.quad	0
	.quad	0x00cf9a000000ffff	/* 0x08: 32-bit code, flat */
	.quad	0x00cf92000000ffff	/* 0x10: data, flat */
	.quad	0x00af9a000000ffff	/* 0x18: 64-bit code */
ap_gdt_end:
ap_gdt_desc:
	.word	ap_gdt_end - ap_gdt - 1
	.long	ABS(ap_gdt)

ap_real:
	cli
	cld
	movw	%cs, %ax
	movw	%ax, %ds
	lgdtl	ap_gdt_desc - ap_trampoline
	movl	%cr0, %eax
	orl	$1, %eax			/* PE */
	movl	%eax, %cr0
	ljmpl	$0x08, $ABS(ap_prot)

	.code32
ap_prot:
	movl	$0x10, %eax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	%ax, %fs
	movw	%ax, %gs
	movl	%cr4, %eax
	orl	$0x20, %eax			/* PAE */
	movl	%eax, %cr4
	movl	ABS(ap_cr3), %eax
	movl	%eax, %cr3
	movl	$0xc0000080, %ecx		/* EFER */
	rdmsr
	orl	$0x100, %eax			/* LME */
	wrmsr
	movl	%cr0, %eax
	andl	$0x9fffffff, %eax		/* clear CD and NW, left set by INIT */
	orl	$0x80000000, %eax		/* PG */
	movl	%eax, %cr0
	ljmp	$0x18, $ABS(ap_long)

	.code64
ap_long:
	movl	$LAPIC_ID_REG, %edx
	movl	(%rdx), %eax
	shrl	$24, %eax
	movl	%eax, %ecx
	shrl	$5, %eax
	andl	$31, %ecx
	movl	$1, %edx
	shll	%cl, %edx
	lock orl %edx, ABS(ap_bitmap)(,%rax,4)
	lock incl ABS(ap_count)		/* after the bitmap: the BSP waits on the count */
1:	cli
	hlt
	jmp	1b
ap_trampoline_end:

	.section .note.GNU-stack, "", @progbits
