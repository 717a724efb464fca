/* cpuid.c: the CPUID leaves a guest kernel looks at first: vendor, hypervisor, APIC id. */
#include "lib.h"

static void regs_to_str(char *out, uint32_t r0, uint32_t r1, uint32_t r2)
{
	memcpy(out, &r0, 4);
	memcpy(out + 4, &r1, 4);
	memcpy(out + 8, &r2, 4);
	out[12] = '\0';
	for (int i = 0; i < 12; i++) {
		if (out[i] && (out[i] < ' ' || out[i] > '~'))
			out[i] = '?';
	}
}

void guest_main(struct boot_params *bp)
{
	uint32_t a, b, c, d, hv_max;
	char vendor[13], hv[13];

	(void)bp;
	cpuid(0, 0, &a, &b, &c, &d);
	regs_to_str(vendor, b, d, c);
	print("cpuid: max basic leaf %x, vendor %s\n", a, vendor);

	cpuid(1, 0, &a, &b, &c, &d);
	print("cpuid: leaf 1 eax %08x ebx %08x ecx %08x edx %08x\n", a, b, c, d);
	print("cpuid: initial apic id %u, hypervisor bit %u\n", b >> 24, c >> 31);

	cpuid(0x40000000, 0, &hv_max, &b, &c, &d);
	regs_to_str(hv, b, c, d);
	print("cpuid: hypervisor %s, max leaf %x\n", hv, hv_max);
	if (hv_max >= 0x40000001) {
		cpuid(0x40000001, 0, &a, &b, &c, &d);
		print("cpuid: kvm features eax %08x edx %08x\n", a, d);
	}

	if (memcmp(hv, "KVMKVMKVM\0\0\0", 12) != 0)
		fail("hypervisor signature is not KVMKVMKVM");
	pass();
}
