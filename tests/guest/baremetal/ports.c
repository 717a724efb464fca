/* ports.c: unclaimed port and MMIO accesses, and the in-kernel IOAPIC/LAPIC registers. */
#include "lib.h"

#define IOAPIC_BASE    0xfec00000u
#define IOAPIC_REGSEL  0x00
#define IOAPIC_WIN     0x10
#define IOAPIC_REG_ID  0x00
#define IOAPIC_REG_VER 0x01

#define LAPIC_BASE 0xfee00000u
#define LAPIC_ID   0x20
#define LAPIC_VER  0x30

#define UNCLAIMED_MMIO 0xd0000000u

static bool check_port8(uint16_t port)
{
	uint8_t v = inb(port);

	print("ports: inb(%x) = %02x\n", port, v);
	return v == 0xff;
}

static uint32_t ioapic_read(uint32_t reg)
{
	mmio_write32(IOAPIC_BASE + IOAPIC_REGSEL, reg);
	return mmio_read32(IOAPIC_BASE + IOAPIC_WIN);
}

void guest_main(struct boot_params *bp)
{
	uint32_t a, b, c, d, v32, ioapic_ver, lapic_id, lapic_ver;
	uint16_t v16;
	uint8_t v8;
	bool ok = true;

	(void)bp;
	/* COM2 and COM4 are not present. */
	ok &= check_port8(0x2f8);
	ok &= check_port8(0x2fd);
	ok &= check_port8(0x3e8);
	v16 = inw(0x3e8);
	v32 = inl(0x3e8);
	print("ports: inw(3e8) = %04x, inl(3e8) = %08x\n", v16, v32);
	if (!ok || v16 != 0xffff || v32 != 0xffffffffu)
		fail("an unclaimed port does not read all-ones");

	/* Writes that must go nowhere: the POST port and COM2's THR/LCR. */
	outb(0x80, 0x42);
	outb(0x2f8, 'X');
	outb(0x2fb, 0x80);
	outw(0x3e8, 0x1234);
	outl(0x3e8, 0x12345678);
	print("ports: wrote 80, 2f8, 2fb, 3e8; COM1 still talks\n");
	if (inb(0x2fb) != 0xff)
		fail("port 0x2fb kept a write");

	/* Unclaimed MMIO: reads all-ones, writes are dropped. */
	v32 = mmio_read32(UNCLAIMED_MMIO);
	mmio_write32(UNCLAIMED_MMIO, 0);
	v8 = mmio_read8(UNCLAIMED_MMIO + 3);
	print("ports: mmio %x = %08x, byte +3 after writing 0 = %02x\n", UNCLAIMED_MMIO, v32, v8);
	if (v32 != 0xffffffffu || v8 != 0xff)
		fail("unclaimed MMIO does not read all-ones");

	/* IOAPIC version: low byte 0x11 (82093AA, as KVM models) or 0x20. */
	ioapic_ver = ioapic_read(IOAPIC_REG_VER);
	print("ports: ioapic id %08x version %08x (%u pins)\n", ioapic_read(IOAPIC_REG_ID),
	      ioapic_ver, ((ioapic_ver >> 16) & 0xff) + 1);
	if ((ioapic_ver & 0xff) != 0x11 && (ioapic_ver & 0xff) != 0x20)
		fail("IOAPIC version register has an unexpected version");

	/* LAPIC: an integrated APIC has version 0x1X; its ID is CPUID.1:EBX[31:24]. */
	lapic_id = mmio_read32(LAPIC_BASE + LAPIC_ID);
	lapic_ver = mmio_read32(LAPIC_BASE + LAPIC_VER);
	cpuid(1, 0, &a, &b, &c, &d);
	print("ports: lapic id %08x version %08x (%u LVT entries), cpuid apic id %u\n", lapic_id,
	      lapic_ver, ((lapic_ver >> 16) & 0xff) + 1, b >> 24);
	if ((lapic_ver & 0xf0) != 0x10)
		fail("LAPIC version register is not an integrated APIC");
	if ((lapic_id >> 24) != (b >> 24))
		fail("LAPIC ID differs from the CPUID initial APIC ID");
	pass();
}
