/* start.S: entry point of the bare-metal test guests (64-bit Linux boot protocol). */

/*
 * The monitor enters here in long mode with paging on (identity map of the low
 * 4 GiB), interrupts off, no usable stack, and RSI = the zero page (struct
 * boot_params). We set our own stack, zero .bss, call guest_main(bp) and power
 * off when it returns. If the power-off is ignored we halt for good.
 */

	.section .text.start, "ax"
	.code64
	.globl	_start
	.type	_start, @function
_start:
	cli
	cld
	movq	%rsi, %r12			/* callee-saved across the calls below */
	leaq	stack_top(%rip), %rsp
	xorl	%ebp, %ebp

	leaq	__bss_start(%rip), %rdi
	leaq	__bss_end(%rip), %rcx
	subq	%rdi, %rcx
	xorl	%eax, %eax
	rep stosb

	movq	%r12, %rdi
	call	guest_main
	call	poweroff
1:	cli
	hlt
	jmp	1b
	.size	_start, . - _start

	/* Not in .bss: zeroing it would cost ~16k emulated iterations for nothing. */
	.section .stack, "aw", @nobits
	.balign	16
stack_bottom:
	.skip	16384
stack_top:

	.section .note.GNU-stack, "", @progbits
