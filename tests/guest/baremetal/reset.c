/* reset.c: asks the i8042 for a CPU reset (0xFE to port 0x64); must not come back. */
#include "lib.h"

void guest_main(struct boot_params *bp)
{
	(void)bp;
	print("reset: boot\n");
	outb(0x64, 0xfe);
	delay_us(500000);
	fail("still running 0.5 s after the i8042 reset command");
}
