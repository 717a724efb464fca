/* hello.c: the smallest guest: banner, command line, e820 map, PASS. */
#include "lib.h"

void guest_main(struct boot_params *bp)
{
	const char *cmdline = bp_cmdline(bp);
	unsigned n = bp_e820_count(bp);
	uint64_t usable = 0;
	bool covers_image = false;

	print("hello from vmstack bare-metal guest\n");
	print("cmdline: %s\n", cmdline);
	print("boot_params at %p\n", (void *)bp);

	for (unsigned i = 0; i < n; i++) {
		const struct e820_entry *e = bp_e820_entry(bp, i);

		print("e820: %016lx-%016lx type %u\n", e->addr, e->addr + e->size - 1, e->type);
		if (e->type != E820_RAM)
			continue;
		usable += e->size;
		if (e->addr <= 0x200000 && e->addr + e->size >= 0x300000)
			covers_image = true;
	}
	print("mem: %lu KiB usable in %u e820 entries\n", usable >> 10, n);

	/* "flood": console output without end, for tests of a console nobody reads. */
	for (uint64_t i = 0; cmdline_has(cmdline, "flood"); i++)
		print("flood line %lu ..................................................\n", i);

	if (n == 0)
		fail("empty e820 table");
	if (!covers_image)
		fail("no usable e820 range covers the guest image at 0x200000");
	pass();
}
