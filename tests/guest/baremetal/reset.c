/*
 * reset.c: asks for a CPU reset and must not come back. By default through the i8042
 * (0xFE to port 0x64, Linux's "kbd" method); with "acpi" on the command line through
 * the FADT reset register (port 0x60C, Linux's default first try when ACPI is on).
 */
#include "lib.h"

void guest_main(struct boot_params *bp)
{
	bool acpi = cmdline_has(bp_cmdline(bp), "acpi");

	print("reset: boot (%s)\n", acpi ? "acpi" : "i8042");
	if (acpi)
		outb(0x60c, 1);
	else
		outb(0x64, 0xfe);
	delay_us(500000);
	fail("still running 0.5 s after the reset request");
}
