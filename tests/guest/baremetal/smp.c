/* smp.c: counts CPUs in the ACPI MADT and the MP table, then starts every AP. */
#include "lib.h"

#define LAPIC_BASE   0xfee00000u
#define LAPIC_ID     0x020
#define LAPIC_SVR    0x0f0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310

#define ICR_INIT    0x00000500u
#define ICR_STARTUP 0x00000600u
#define ICR_ASSERT  0x00004000u
#define ICR_BUSY    0x00001000u

#define AP_TRAMP_BASE 0x10000u
#define AP_TRAMP_DATA 8 /* offset of struct ap_tramp_data; see smp_trampoline.S */
#define AP_WAIT_US    5000000u

#define MAX_CPUS 256

/* Shared with the APs: written by them with locked instructions. */
struct ap_tramp_data {
	uint32_t cr3;
	uint32_t count;
	uint32_t apic_bitmap[MAX_CPUS / 32];
};

struct cpu_list {
	unsigned n;     /* enabled CPUs */
	unsigned ids_n; /* of which ids[] holds those with an xAPIC id */
	uint8_t ids[MAX_CPUS];
};

extern const char ap_trampoline[], ap_trampoline_end[];

static uint32_t rd32(uint64_t addr)
{
	uint32_t v;

	memcpy(&v, (const void *)addr, 4);
	return v;
}

static uint64_t rd64(uint64_t addr)
{
	uint64_t v;

	memcpy(&v, (const void *)addr, 8);
	return v;
}

static void cpu_add(struct cpu_list *l, uint32_t apic_id)
{
	l->n++;
	if (apic_id < 0xff && l->ids_n < MAX_CPUS)
		l->ids[l->ids_n++] = (uint8_t)apic_id;
}

/* ---- ACPI ---- */

static uint64_t acpi_find_rsdp(void)
{
	for (uint64_t p = 0xe0000; p < 0x100000; p += 16) {
		if (memcmp((const void *)p, "RSD PTR ", 8) != 0)
			continue;
		if (checksum8((const void *)p, 20) != 0) {
			print("smp: RSDP at %lx has a bad checksum\n", p);
			continue;
		}
		return p;
	}
	return 0;
}

/* A table header at addr with a sane length and a zero checksum, or 0. */
static uint32_t acpi_table_len(uint64_t addr)
{
	uint32_t len;

	if (addr == 0 || addr >= 0x100000000ull - 36)
		return 0;
	len = rd32(addr + 4);
	if (len < 36 || len > 0x10000 || addr + len > 0x100000000ull)
		return 0;
	if (checksum8((const void *)addr, len) != 0) {
		print("smp: table %lx '%c%c%c%c' has a bad checksum\n", addr, *(const char *)addr,
		      *(const char *)(addr + 1), *(const char *)(addr + 2),
		      *(const char *)(addr + 3));
		return 0;
	}
	return len;
}

static uint64_t acpi_find_madt(uint64_t rsdp)
{
	uint8_t rev = *(const uint8_t *)(rsdp + 15);
	uint64_t sdt = 0;
	unsigned esize = 4;
	uint32_t len;

	if (rev >= 2 && rd32(rsdp + 20) >= 36 && checksum8((const void *)rsdp, 36) == 0 &&
	    rd64(rsdp + 24) != 0) {
		sdt = rd64(rsdp + 24);
		esize = 8;
	} else {
		sdt = rd32(rsdp + 16);
	}
	len = acpi_table_len(sdt);
	print("smp: RSDP at %lx rev %u -> %s at %lx\n", rsdp, rev, esize == 8 ? "XSDT" : "RSDT",
	      sdt);
	if (!len || memcmp((const void *)sdt, esize == 8 ? "XSDT" : "RSDT", 4) != 0)
		return 0;
	for (uint32_t off = 36; off + esize <= len; off += esize) {
		uint64_t t = esize == 8 ? rd64(sdt + off) : rd32(sdt + off);

		if (acpi_table_len(t) && memcmp((const void *)t, "APIC", 4) == 0)
			return t;
	}
	return 0;
}

static bool madt_cpus(struct cpu_list *l)
{
	uint64_t rsdp = acpi_find_rsdp(), madt;
	uint32_t len;

	if (!rsdp) {
		print("smp: no RSDP in e0000-fffff\n");
		return false;
	}
	madt = acpi_find_madt(rsdp);
	if (!madt) {
		print("smp: no valid MADT\n");
		return false;
	}
	len = rd32(madt + 4);
	print("smp: MADT at %lx, %u bytes, lapic %x\n", madt, len, rd32(madt + 36));
	for (uint32_t off = 44; off + 2 <= len;) {
		const uint8_t *e = (const uint8_t *)(madt + off);

		if (e[1] < 2 || off + e[1] > len)
			break;
		if (e[0] == 0 && e[1] >= 8 && (rd32((uint64_t)e + 4) & 1))
			cpu_add(l, e[3]); /* Processor Local APIC */
		else if (e[0] == 9 && e[1] >= 16 && (rd32((uint64_t)e + 8) & 1))
			cpu_add(l, rd32((uint64_t)e + 4)); /* Processor Local x2APIC */
		off += e[1];
	}
	return true;
}

/* ---- MP table (Intel MP spec 1.4) ---- */

static uint64_t mp_scan(uint64_t start, uint64_t len)
{
	for (uint64_t p = start; p + 16 <= start + len; p += 16) {
		if (memcmp((const void *)p, "_MP_", 4) == 0 && *(const uint8_t *)(p + 8) == 1 &&
		    checksum8((const void *)p, 16) == 0)
			return p;
	}
	return 0;
}

static bool mptable_cpus(struct cpu_list *l)
{
	uint64_t ebda = (uint64_t) * (const volatile uint16_t *)phys(0x40e) << 4;
	uint64_t mpf = 0, cfg;
	uint16_t base_len, count;
	const uint8_t *e;

	if (ebda >= 0x80000 && ebda < 0xa0000)
		mpf = mp_scan(ebda, 1024);
	if (!mpf)
		mpf = mp_scan(0x9fc00, 1024);
	if (!mpf)
		mpf = mp_scan(0xf0000, 0x10000);
	if (!mpf) {
		print("smp: no MP floating pointer\n");
		return false;
	}
	cfg = rd32(mpf + 4);
	print("smp: MP floating pointer at %lx, config table at %lx, feature1 %u\n", mpf, cfg,
	      *(const uint8_t *)(mpf + 11));
	if (cfg == 0 || cfg >= 0x100000000ull - 44 || memcmp((const void *)cfg, "PCMP", 4) != 0) {
		print("smp: no PCMP config table\n");
		return false;
	}
	base_len = *(const uint16_t *)(cfg + 4);
	count = *(const uint16_t *)(cfg + 34);
	if (base_len < 44 || checksum8((const void *)cfg, base_len) != 0) {
		print("smp: MP config table has a bad length or checksum\n");
		return false;
	}
	e = (const uint8_t *)(cfg + 44);
	for (unsigned i = 0; i < count && (uint64_t)e < cfg + base_len; i++) {
		if (e[0] == 0) {
			if (e[3] & 1) /* CPU flags: EN */
				cpu_add(l, e[1]);
			e += 20;
		} else if (e[0] <= 4) {
			e += 8;
		} else {
			print("smp: unknown MP entry type %u\n", e[0]);
			return false;
		}
	}
	return true;
}

/* ---- starting the APs ---- */

static uint32_t lapic_read(uint32_t reg)
{
	return mmio_read32(LAPIC_BASE + reg);
}

static void lapic_write(uint32_t reg, uint32_t v)
{
	mmio_write32(LAPIC_BASE + reg, v);
}

static bool lapic_send_ipi(uint8_t dest, uint32_t lo)
{
	lapic_write(LAPIC_ICR_HI, (uint32_t)dest << 24);
	lapic_write(LAPIC_ICR_LO, lo);
	for (unsigned i = 0; i < 1000; i++) {
		if (!(lapic_read(LAPIC_ICR_LO) & ICR_BUSY))
			return true;
	}
	return false;
}

static void start_ap(uint8_t apic_id)
{
	uint32_t vector = AP_TRAMP_BASE >> 12;

	/* Intel SDM vol. 3 8.4.4.1: INIT, 10 ms, SIPI, 200 us, SIPI. */
	if (!lapic_send_ipi(apic_id, ICR_INIT | ICR_ASSERT))
		print("smp: INIT to %u stays busy\n", apic_id);
	delay_us(10000);
	for (int i = 0; i < 2; i++) {
		if (!lapic_send_ipi(apic_id, ICR_STARTUP | ICR_ASSERT | vector))
			print("smp: SIPI to %u stays busy\n", apic_id);
		delay_us(200);
	}
}

void guest_main(struct boot_params *bp)
{
	static struct cpu_list madt, mp;
	volatile struct ap_tramp_data *td =
	    (volatile struct ap_tramp_data *)(uint64_t)(AP_TRAMP_BASE + AP_TRAMP_DATA);
	uint32_t bsp = lapic_read(LAPIC_ID) >> 24;
	uint64_t cr3 = read_cr3(), start, waited;
	bool madt_ok, mp_ok, bsp_listed = false;
	unsigned want = 0, got;

	(void)bp;
	madt_ok = madt_cpus(&madt);
	mp_ok = mptable_cpus(&mp);
	print("smp: madt %u cpus, mptable %u cpus\n", madt.n, mp.n);
	print("smp: apic ids (madt):");
	for (unsigned i = 0; i < madt.ids_n; i++)
		print(" %u", madt.ids[i]);
	print(", bsp %u\n", bsp);
	if (!madt_ok || madt.n == 0)
		fail("no CPUs found in the ACPI MADT");
	if (!mp_ok || mp.n == 0)
		fail("no CPUs found in the MP table");
	if (mp.n != madt.n)
		fail("MADT and MP table disagree on the number of CPUs");
	if (madt.ids_n != madt.n)
		fail("a MADT CPU has an APIC id the xAPIC cannot address");
	for (unsigned i = 0; i < madt.ids_n; i++)
		bsp_listed |= madt.ids[i] == bsp;
	if (!bsp_listed)
		fail("the BSP's APIC id is not in the MADT");
	if (cr3 >= 0x100000000ull)
		fail("CR3 above 4 GiB: a 32-bit mov to CR3 cannot load it");

	memcpy((void *)(uint64_t)AP_TRAMP_BASE, ap_trampoline,
	       (size_t)(ap_trampoline_end - ap_trampoline));
	td->cr3 = (uint32_t)cr3;
	td->count = 0;
	for (unsigned i = 0; i < MAX_CPUS / 32; i++)
		td->apic_bitmap[i] = 0;
	/* x86 keeps stores in order; only the compiler must not sink them past the IPIs. */
	__asm__ volatile("" ::: "memory");

	lapic_write(LAPIC_SVR, 0x1ff); /* software-enable the LAPIC, spurious vector 0xff */
	if (!pmtimer_present())
		print("smp: no PM timer at 0x608, timing by loop count\n");
	for (unsigned i = 0; i < madt.ids_n; i++) {
		if (madt.ids[i] == bsp)
			continue;
		start_ap(madt.ids[i]);
		want++;
	}

	start = pmtimer_us();
	do {
		got = td->count;
		waited = pmtimer_us() - start;
	} while (got < want && waited < AP_WAIT_US);

	print("smp: %u of %u APs checked in after %lu ms:", got, want, waited / 1000);
	for (unsigned id = 0; id < MAX_CPUS; id++) {
		if (td->apic_bitmap[id / 32] & (1u << (id % 32)))
			print(" %u", id);
	}
	print("\n");
	if (got < want)
		failf("timeout: %u of %u APs started", got, want);
	if (got > want)
		failf("%u APs checked in, only %u were started", got, want);
	for (unsigned i = 0; i < madt.ids_n; i++) {
		uint8_t id = madt.ids[i];
		bool seen = td->apic_bitmap[id / 32] & (1u << (id % 32));

		if (seen != (id != bsp))
			failf("APIC id %u %s", id,
			      seen ? "is the BSP's, yet an AP reported it" : "did not check in");
	}
	print("smp: %u cpus up\n", got + 1);
	pass();
}
