/* echo.c: console input path — echoes host keystrokes from COM1 upper-cased until "q". */
#include "lib.h"

#define COM1   0x3f8
#define LSR_DR 0x01

void guest_main(struct boot_params *bp)
{
	unsigned count = 0;

	(void)bp;
	print("echo: ready\n");
	for (;;) {
		uint8_t c;

		/* Polling, no interrupts: the monitor must queue input until we read it. */
		while (!(inb(COM1 + 5) & LSR_DR))
			delay_us(100);
		c = inb(COM1);
		if (c == 'q')
			break;
		if (c >= 'a' && c <= 'z')
			c = (uint8_t)(c - 'a' + 'A');
		print_char((char)c);
		count++;
	}
	print("\necho: %u bytes\n", count);
	pass();
}
