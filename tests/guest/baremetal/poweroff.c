/* poweroff.c: powers off through ACPI PM1a control (SLP_TYP=S5, SLP_EN). */
#include "lib.h"

void guest_main(struct boot_params *bp)
{
	(void)bp;
	print("poweroff: bye\n");
	poweroff();
	delay_us(500000);
	fail("poweroff: still running 0.5 s after the S5 write to PM1a control");
}
