/* ticks.c: counts interrupts from the LAPIC timer (periodic, 100 Hz) and from the PIT
 * (channel 0, 100 Hz, through IOAPIC pin 2), halting between them, while a value kept in
 * a callee-saved register and its copy in memory advance in step. Made for snapshot and
 * restore: a test saves the VM mid-run, and the restored guest must carry on counting
 * from where it was (registers, IDT, LAPIC, IOAPIC, PIT and serial port intact). */
#include "lib.h"

#define LAPIC         0xfee00000u
#define LAPIC_EOI     0xb0
#define LAPIC_SVR     0xf0
#define LAPIC_LVT_TMR 0x320
#define LAPIC_TMICT   0x380
#define LAPIC_TDCR    0x3e0
#define IOAPIC        0xfec00000u
#define VEC_LAPIC     0x40
#define VEC_PIT       0x41
#define END_TICKS     600
#define STEP          25

struct idt_gate {
	uint16_t off0, sel;
	uint8_t ist, type;
	uint16_t off1;
	uint32_t off2, zero;
} __attribute__((packed));

struct idt_ptr {
	uint16_t limit;
	uint64_t base;
} __attribute__((packed));

struct frame;

static struct idt_gate idt[256] __attribute__((aligned(16)));
static volatile uint64_t lapic_ticks, pit_ticks, mem_copy;

__attribute__((interrupt)) static void lapic_isr(struct frame *f)
{
	(void)f;
	lapic_ticks++;
	mmio_write32(LAPIC + LAPIC_EOI, 0);
}

__attribute__((interrupt)) static void pit_isr(struct frame *f)
{
	(void)f;
	pit_ticks++;
	mmio_write32(LAPIC + LAPIC_EOI, 0);
}

static void set_gate(unsigned vec, void (*fn)(struct frame *))
{
	uint64_t a = (uint64_t)fn;
	uint16_t cs;

	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	idt[vec] = (struct idt_gate){.off0 = (uint16_t)a,
	                             .sel = cs,
	                             .type = 0x8e, /* present, ring 0, interrupt gate */
	                             .off1 = (uint16_t)(a >> 16),
	                             .off2 = (uint32_t)(a >> 32)};
}

static void ioapic_write(uint32_t reg, uint32_t v)
{
	mmio_write32(IOAPIC, reg);
	mmio_write32(IOAPIC + 0x10, v);
}

void guest_main(struct boot_params *bp)
{
	struct idt_ptr ip = {.limit = sizeof(idt) - 1, .base = (uint64_t)idt};
	register uint64_t reg_copy __asm__("r12") = 0x5eed;
	uint64_t next = STEP;

	(void)bp;
	mem_copy = reg_copy;
	set_gate(VEC_LAPIC, lapic_isr);
	set_gate(VEC_PIT, pit_isr);
	__asm__ volatile("lidt %0" : : "m"(ip));

	outb(0x21, 0xff); /* the 8259s stay masked: the IOAPIC delivers */
	outb(0xa1, 0xff);
	ioapic_write(0x10 + 2 * 2, VEC_PIT); /* pin 2: fixed, edge, high, to APIC 0 */
	ioapic_write(0x10 + 2 * 2 + 1, 0);
	outb(0x43, 0x34); /* PIT channel 0, lo/hi byte, rate generator */
	outb(0x40, 11932 & 0xff);
	outb(0x40, 11932 >> 8);

	mmio_write32(LAPIC + LAPIC_SVR, 0x100 | 0xff);
	mmio_write32(LAPIC + LAPIC_TDCR, 0xb); /* divide by 1 */
	mmio_write32(LAPIC + LAPIC_LVT_TMR, VEC_LAPIC | (1u << 17));
	mmio_write32(LAPIC + LAPIC_TMICT, 10000000); /* KVM's APIC bus: 1 GHz -> 10 ms */
	print("ticks: started\n");
	__asm__ volatile("sti");

	while (lapic_ticks < END_TICKS) {
		if (reg_copy != mem_copy)
			failf("ticks: r12 0x%lx, memory copy 0x%lx", reg_copy, mem_copy);
		reg_copy = reg_copy * 6364136223846793005ull + 1442695040888963407ull;
		__asm__ volatile("" : "+r"(reg_copy));
		mem_copy = reg_copy;
		if (lapic_ticks >= next) {
			print("ticks: lapic %lu pit %lu\n", lapic_ticks, pit_ticks);
			next += STEP;
		}
		__asm__ volatile("hlt");
	}
	__asm__ volatile("cli");
	print("ticks: lapic %lu pit %lu\n", lapic_ticks, pit_ticks);
	if (pit_ticks < END_TICKS / 4)
		failf("ticks: only %lu PIT interrupts for %u LAPIC ones", pit_ticks, END_TICKS);
	pass();
}
