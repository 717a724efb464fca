/* powerbutton.c: arms the ACPI fixed power button (PM1 enable), waits for a press (QMP
 * system_powerdown), acknowledges it and powers off as an OS would. */
#include "lib.h"

#define PM1A_STS   0x600
#define PM1A_EN    0x602
#define PM1_PWRBTN (1u << 8)

void guest_main(struct boot_params *bp)
{
	(void)bp;
	if (inw(PM1A_STS) & PM1_PWRBTN)
		fail("pwrbtn: PWRBTN_STS set before any press");
	outw(PM1A_EN, PM1_PWRBTN);
	if (inw(PM1A_EN) != PM1_PWRBTN)
		failf("pwrbtn: PM1 enable reads 0x%x after writing 0x%x", inw(PM1A_EN), PM1_PWRBTN);
	print("pwrbtn: armed\n");
	while (!(inw(PM1A_STS) & PM1_PWRBTN))
		delay_us(1000);
	outw(PM1A_STS, PM1_PWRBTN); /* write 1 to clear */
	if (inw(PM1A_STS) & PM1_PWRBTN)
		fail("pwrbtn: PWRBTN_STS does not clear");
	print("pwrbtn: pressed\n");
	pass();
}
