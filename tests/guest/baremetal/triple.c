/* triple.c: an empty IDT and a ud2: #UD cannot be delivered, so the CPU triple-faults. */
#include "lib.h"

struct idt_ptr {
	uint16_t limit;
	uint64_t base;
} __attribute__((packed));

void guest_main(struct boot_params *bp)
{
	static const struct idt_ptr empty = {0, 0};

	(void)bp;
	print("triple: about to fault\n");
	/* Limit 0: every vector is out of bounds, #UD -> #GP -> #DF -> shutdown. */
	__asm__ volatile("lidt %0\n\tud2" : : "m"(empty));
	fail("still running after ud2 with an empty IDT");
}
