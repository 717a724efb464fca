/* test_acpi.c: parses what acpi_build() wrote the way an OS would, using the spec's offsets. */
#include <errno.h>

#include "acpi.h"
#include "test.h"
#include "util.h"

#define GPA     0xe0000ull
#define BUF_LEN 8192

static uint64_t rd(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static struct acpi_config default_config(unsigned ncpus)
{
	return (struct acpi_config){
	    .ncpus = ncpus,
	    .ioapic_id = (uint8_t)ncpus,
	    .ioapic_addr = 0xfec00000,
	    .lapic_addr = 0xfee00000,
	    .pm_base = 0x600,
	    .sci_irq = 9,
	};
}

/* The table at guest address `addr`, or NULL if it does not lie inside what was built. */
static const uint8_t *table_at(const uint8_t *buf, int used, uint64_t addr)
{
	uint64_t len;

	if (addr < GPA || addr + 36 > GPA + (uint64_t)used)
		return NULL;
	len = rd(buf + (addr - GPA) + 4, 4);
	if (len < 36 || addr + len > GPA + (uint64_t)used)
		return NULL;
	return buf + (addr - GPA);
}

/* Looks a signature up through the XSDT, checking that the RSDT lists the same tables. */
static const uint8_t *find_table(const uint8_t *buf, int used, const char *sig)
{
	const uint8_t *xsdt = table_at(buf, used, rd(buf + 24, 8));
	const uint8_t *rsdt = table_at(buf, used, rd(buf + 16, 4));
	const uint8_t *found = NULL;
	unsigned n;

	if (!xsdt || !rsdt)
		return NULL;
	n = (unsigned)(rd(xsdt + 4, 4) - 36) / 8;
	CHECK_EQ(rd(rsdt + 4, 4), 36 + 4 * n);
	for (unsigned i = 0; i < n; i++) {
		uint64_t addr = rd(xsdt + 36 + 8 * i, 8);
		const uint8_t *t = table_at(buf, used, addr);
		CHECK_EQ(rd(rsdt + 36 + 4 * i, 4), addr);
		if (t && memcmp(t, sig, 4) == 0)
			found = t;
	}
	return found;
}

static int build(const struct acpi_config *cfg, uint8_t *buf)
{
	int used;

	memset(buf, 0xa5, BUF_LEN);
	used = acpi_build(cfg, buf, BUF_LEN, GPA);
	CHECK(used > 0);
	return used;
}

TEST(acpi_rsdp)
{
	struct acpi_config cfg = default_config(4);
	static uint8_t buf[BUF_LEN];
	int used = build(&cfg, buf);

	CHECK(memcmp(buf, "RSD PTR ", 8) == 0);
	CHECK_EQ(byte_sum(buf, 20), 0);
	CHECK_EQ(byte_sum(buf, 36), 0);
	CHECK(memcmp(buf + 9, "VMSTCK", 6) == 0);
	CHECK_EQ(buf[15], 2);          /* revision: ACPI 2.0+ */
	CHECK_EQ(rd(buf + 20, 4), 36); /* length */
	CHECK(table_at(buf, used, rd(buf + 16, 4)) != NULL);
	CHECK(table_at(buf, used, rd(buf + 24, 8)) != NULL);
	CHECK(memcmp(table_at(buf, used, rd(buf + 16, 4)), "RSDT", 4) == 0);
	CHECK(memcmp(table_at(buf, used, rd(buf + 24, 8)), "XSDT", 4) == 0);
}

TEST(acpi_all_checksums)
{
	struct acpi_config cfg = default_config(8);
	static uint8_t buf[BUF_LEN];
	int used = build(&cfg, buf);
	const char *sigs[] = {"FACP", "APIC"};
	const uint8_t *fadt, *t;

	t = table_at(buf, used, rd(buf + 24, 8));
	CHECK(t && byte_sum(t, rd(t + 4, 4)) == 0);
	t = table_at(buf, used, rd(buf + 16, 4));
	CHECK(t && byte_sum(t, rd(t + 4, 4)) == 0);
	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++) {
		t = find_table(buf, used, sigs[i]);
		CHECK(t != NULL);
		if (!t)
			continue;
		CHECK_EQ(byte_sum(t, rd(t + 4, 4)), 0);
		CHECK(memcmp(t + 10, "VMSTCK", 6) == 0);
		CHECK(memcmp(t + 16, "VMSTACK ", 8) == 0);
		CHECK(memcmp(t + 28, "VMSK", 4) == 0);
		CHECK_EQ((t - buf) % 16, 0);
	}
	fadt = find_table(buf, used, "FACP");
	if (!fadt)
		return;
	t = table_at(buf, used, rd(fadt + 140, 8));
	CHECK(t && memcmp(t, "DSDT", 4) == 0 && byte_sum(t, rd(t + 4, 4)) == 0);
}

TEST(acpi_fadt_fields)
{
	struct acpi_config cfg = default_config(2);
	static uint8_t buf[BUF_LEN];
	int used = build(&cfg, buf);
	const uint8_t *f = find_table(buf, used, "FACP");
	const uint8_t *facs;
	uint32_t flags;

	CHECK(f != NULL);
	if (!f)
		return;
	CHECK_EQ(rd(f + 4, 4), 276);
	CHECK_EQ(f[8], 6);
	CHECK_EQ(rd(f + 46, 2), 9);        /* SCI_INT */
	CHECK_EQ(rd(f + 48, 4), 0);        /* SMI_CMD: already in ACPI mode */
	CHECK_EQ(rd(f + 56, 4), 0x600);    /* PM1a_EVT_BLK */
	CHECK_EQ(rd(f + 60, 4), 0);        /* PM1b_EVT_BLK */
	CHECK_EQ(rd(f + 64, 4), 0x604);    /* PM1a_CNT_BLK */
	CHECK_EQ(rd(f + 68, 4), 0);        /* PM1b_CNT_BLK */
	CHECK_EQ(rd(f + 76, 4), 0x608);    /* PM_TMR_BLK */
	CHECK_EQ(rd(f + 80, 4), 0);        /* GPE0_BLK */
	CHECK_EQ(f[88], 4);                /* PM1_EVT_LEN */
	CHECK_EQ(f[89], 2);                /* PM1_CNT_LEN */
	CHECK_EQ(f[91], 4);                /* PM_TMR_LEN */
	CHECK_EQ(rd(f + 109, 2), 1u << 2); /* IAPC_BOOT_ARCH: VGA not present, no 8042 */

	flags = (uint32_t)rd(f + 112, 4);
	CHECK(flags & (1u << 0));     /* WBINVD */
	CHECK(flags & (1u << 10));    /* RESET_REG_SUP */
	CHECK(!(flags & (1u << 8)));  /* TMR_VAL_EXT: 24-bit timer */
	CHECK(!(flags & (1u << 20))); /* not HW_REDUCED_ACPI */

	/* RESET_REG: SystemIO, 8 bits at offset 0, value 1. */
	CHECK_EQ(f[116], 1);
	CHECK_EQ(f[117], 8);
	CHECK_EQ(f[118], 0);
	CHECK_EQ(rd(f + 120, 8), 0x60c);
	CHECK_EQ(f[128], 1);

	/* FACS through X_FIRMWARE_CTRL only; the two DSDT pointers agree. */
	CHECK_EQ(rd(f + 36, 4), 0);
	CHECK_EQ(rd(f + 40, 4), rd(f + 140, 8));

	/* X_PM1a_EVT_BLK, X_PM1a_CNT_BLK, X_PM_TMR_BLK: SystemIO, widths match the lengths. */
	CHECK_EQ(f[148], 1);
	CHECK_EQ(f[149], 32);
	CHECK_EQ(rd(f + 152, 8), 0x600);
	CHECK_EQ(f[172], 1);
	CHECK_EQ(f[173], 16);
	CHECK_EQ(rd(f + 176, 8), 0x604);
	CHECK_EQ(f[208], 1);
	CHECK_EQ(f[209], 32);
	CHECK_EQ(rd(f + 212, 8), 0x608);
	CHECK_EQ(rd(f + 160 + 4, 8), 0); /* no PM1b */

	facs = buf + (rd(f + 132, 8) - GPA);
	CHECK_EQ(rd(f + 132, 8) % 64, 0);
	CHECK(memcmp(facs, "FACS", 4) == 0);
	CHECK_EQ(rd(facs + 4, 4), 64);
}

/* Decodes an AML PkgLength; returns its value and stores its own size in *n. */
static size_t pkg_length(const uint8_t *p, unsigned *n)
{
	size_t v;

	*n = 1 + (p[0] >> 6);
	if (*n == 1)
		return p[0] & 0x3f;
	v = p[0] & 0x0f;
	for (unsigned i = 1; i < *n; i++)
		v |= (size_t)p[i] << (4 + 8 * (i - 1));
	return v;
}

static const uint8_t *find_bytes(const uint8_t *hay, size_t len, const void *needle, size_t n)
{
	for (size_t i = 0; i + n <= len; i++)
		if (memcmp(hay + i, needle, n) == 0)
			return hay + i;
	return NULL;
}

TEST(acpi_dsdt_s5)
{
	static const uint8_t s5[] = {0x08, '\\', '_',  'S',  '5',  '_',  0x12,
	                             0x07, 0x04, 0x0a, 0x05, 0x00, 0x00, 0x00};
	struct acpi_config cfg = default_config(1);
	static uint8_t buf[BUF_LEN];
	int used = build(&cfg, buf);
	const uint8_t *f = find_table(buf, used, "FACP");
	const uint8_t *d = f ? table_at(buf, used, rd(f + 40, 4)) : NULL;

	CHECK(d != NULL);
	if (!d)
		return;
	CHECK(memcmp(d, "DSDT", 4) == 0);
	CHECK_EQ(d[8], 2);
	/* Without a PCI host the S5 package is the whole definition block. */
	CHECK_EQ(rd(d + 4, 4), 36 + sizeof(s5));
	CHECK(memcmp(d + 36, s5, sizeof(s5)) == 0);
	CHECK(find_bytes(d, rd(d + 4, 4), "PCI0", 4) == NULL);
}

TEST(acpi_dsdt_pci_host)
{
	static const uint8_t hid[] = {'_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03};
	struct acpi_config cfg = default_config(2);
	static uint8_t buf[BUF_LEN];
	const uint8_t *f, *d, *p, *end, *crs, *crs_end;
	bool saw_bus = false, saw_mem32 = false, saw_mem64 = false, saw_end = false;
	unsigned n, io_windows = 0;
	size_t l;
	int used;

	cfg.pci_host = true;
	cfg.pci_mmio32_base = 0xc0000000;
	cfg.pci_mmio32_len = 0x3ec00000;
	cfg.pci_mmio64_base = 0x8000000000ull;
	cfg.pci_mmio64_len = 0x4000000000ull;
	used = build(&cfg, buf);
	f = find_table(buf, used, "FACP");
	d = f ? table_at(buf, used, rd(f + 40, 4)) : NULL;
	CHECK(d != NULL);
	if (!d)
		return;
	CHECK_EQ(byte_sum(d, rd(d + 4, 4)), 0);
	end = d + rd(d + 4, 4);

	/* Scope(\_SB_) follows the 14-byte S5 object and runs to the end of the table. */
	p = d + 36 + 14;
	CHECK_EQ(p[0], 0x10);
	l = pkg_length(p + 1, &n);
	CHECK_EQ(p + 1 + l, end);
	CHECK(memcmp(p + 1 + n, "\\_SB_", 5) == 0);
	/* Device(PCI0), the scope's only object, also runs to the end. */
	p += 1 + n + 5;
	CHECK(p[0] == 0x5b && p[1] == 0x82);
	l = pkg_length(p + 2, &n);
	CHECK_EQ(p + 2 + l, end);
	CHECK(memcmp(p + 2 + n, "PCI0", 4) == 0);
	CHECK(find_bytes(p, (size_t)(end - p), hid, sizeof(hid)) != NULL);

	/* Name(_CRS, Buffer(size) {...}) is the last object: walk its descriptors. */
	p = find_bytes(p, (size_t)(end - p), "_CRS", 4);
	CHECK(p != NULL);
	if (!p)
		return;
	CHECK_EQ(p[4], 0x11);
	l = pkg_length(p + 5, &n);
	CHECK_EQ(p + 5 + l, end);
	CHECK_EQ(p[5 + n], 0x0a); /* BytePrefix: the size fits in a byte */
	crs = p + 5 + n + 2;
	crs_end = crs + p[5 + n + 1];
	CHECK_EQ(crs_end, end);
	for (p = crs; p < crs_end && !saw_end;) {
		if (p[0] == 0x79) { /* end tag */
			saw_end = true;
			p += 2;
		} else if (p[0] & 0x80) { /* large item: 16-bit length follows */
			unsigned len = (unsigned)rd(p + 1, 2);
			if (p[0] == 0x88 && p[3] == 2) {
				saw_bus = true;
				CHECK_EQ(rd(p + 8, 2), 0);     /* min */
				CHECK_EQ(rd(p + 10, 2), 0xff); /* max */
			} else if (p[0] == 0x88 && p[3] == 1) {
				io_windows++;
				CHECK(rd(p + 8, 2) > 0xcff || rd(p + 10, 2) < 0xcf8);
			} else if (p[0] == 0x87) {
				saw_mem32 = true;
				CHECK_EQ(rd(p + 10, 4), 0xc0000000);
				CHECK_EQ(rd(p + 14, 4), 0xfebfffff);
				CHECK_EQ(rd(p + 22, 4), 0x3ec00000);
			} else if (p[0] == 0x8a) {
				saw_mem64 = true;
				CHECK_EQ(rd(p + 14, 8), 0x8000000000ull);
				CHECK_EQ(rd(p + 22, 8), 0xbfffffffffull);
				CHECK_EQ(rd(p + 38, 8), 0x4000000000ull);
			}
			p += 3 + len;
		} else { /* small item: length in bits 2:0 */
			p += 1 + (p[0] & 7);
		}
	}
	CHECK(saw_bus && saw_mem32 && saw_mem64 && saw_end);
	CHECK_EQ(io_windows, 2);
	CHECK_EQ(p, crs_end);
}

static void check_madt(unsigned ncpus)
{
	struct acpi_config cfg = default_config(ncpus);
	static uint8_t buf[BUF_LEN];
	int used = build(&cfg, buf);
	const uint8_t *m = find_table(buf, used, "APIC");
	const uint8_t *p, *end;
	uint8_t seen[256] = {0};
	unsigned lapics = 0, ioapics = 0, nmis = 0;
	bool irq0 = false, sci = false;

	CHECK(m != NULL);
	if (!m)
		return;
	CHECK_EQ(byte_sum(m, rd(m + 4, 4)), 0);
	CHECK_EQ(rd(m + 36, 4), 0xfee00000);
	CHECK_EQ(rd(m + 40, 4), 1); /* PCAT_COMPAT */
	end = m + rd(m + 4, 4);
	for (p = m + 44; p + 2 <= end && p[1] >= 2 && p + p[1] <= end; p += p[1]) {
		switch (p[0]) {
		case 0:
			CHECK_EQ(p[1], 8);
			CHECK(rd(p + 4, 4) & 1);
			CHECK(p[3] < ncpus);
			seen[p[3]]++;
			lapics++;
			break;
		case 1:
			CHECK_EQ(p[1], 12);
			CHECK_EQ(p[2], ncpus);
			CHECK_EQ(rd(p + 4, 4), 0xfec00000);
			CHECK_EQ(rd(p + 8, 4), 0);
			ioapics++;
			break;
		case 2:
			CHECK_EQ(p[1], 10);
			CHECK_EQ(p[2], 0);
			if (p[3] == 0) {
				irq0 = true;
				CHECK_EQ(rd(p + 4, 4), 2);
				CHECK_EQ(rd(p + 8, 2), 0);
			} else if (p[3] == 9) {
				sci = true;
				CHECK_EQ(rd(p + 4, 4), 9);
				CHECK_EQ(rd(p + 8, 2), 0x0d); /* level, active high */
			} else {
				CHECK(!"unexpected override");
			}
			break;
		case 4:
			CHECK_EQ(p[1], 6);
			CHECK_EQ(p[2], 0xff);
			CHECK_EQ(p[5], 1);
			nmis++;
			break;
		default:
			CHECK(!"unexpected MADT entry");
		}
	}
	CHECK_EQ(p, end);
	CHECK_EQ(lapics, ncpus);
	for (unsigned i = 0; i < ncpus; i++)
		CHECK_EQ(seen[i], 1);
	CHECK_EQ(ioapics, 1);
	CHECK_EQ(nmis, 1);
	CHECK(irq0 && sci);
}

TEST(acpi_madt_1_cpu)
{
	check_madt(1);
}

TEST(acpi_madt_64_cpus)
{
	check_madt(64);
}

TEST(acpi_madt_254_cpus)
{
	check_madt(254);
}

TEST(acpi_short_buffer)
{
	struct acpi_config cfg = default_config(64);
	static uint8_t buf[BUF_LEN];
	int used = acpi_build(&cfg, buf, sizeof(buf), GPA);

	CHECK(used > 0);
	CHECK_EQ(acpi_build(&cfg, buf, (size_t)used - 1, GPA), -ENOSPC);
	CHECK_EQ(acpi_build(&cfg, buf, 0, GPA), -ENOSPC);
	CHECK_EQ(acpi_build(&cfg, buf, (size_t)used, GPA), used);
}

TEST(acpi_bad_config)
{
	static uint8_t buf[BUF_LEN];
	struct acpi_config cfg = default_config(4);

	cfg.ncpus = 0;
	CHECK_EQ(acpi_build(&cfg, buf, sizeof(buf), GPA), -EINVAL);
	cfg = default_config(4);
	cfg.ioapic_id = 3; /* a CPU's id */
	CHECK_EQ(acpi_build(&cfg, buf, sizeof(buf), GPA), -EINVAL);
	cfg = default_config(4);
	CHECK_EQ(acpi_build(&cfg, buf, sizeof(buf), GPA + 8), -EINVAL);
	CHECK_EQ(acpi_build(&cfg, buf, sizeof(buf), 4 * GiB - 256), -EINVAL);
	cfg.pci_host = true;
	cfg.pci_mmio32_base = 0xf0000000;
	cfg.pci_mmio32_len = 0x20000000;
	CHECK_EQ(acpi_build(&cfg, buf, sizeof(buf), GPA), -EINVAL);
}

TEST(acpi_pointers_follow_gpa)
{
	struct acpi_config cfg = default_config(2);
	static uint8_t a[BUF_LEN], b[BUF_LEN];
	int used = acpi_build(&cfg, a, sizeof(a), GPA);

	CHECK_EQ(acpi_build(&cfg, b, sizeof(b), 0x100000), used);
	CHECK_EQ(rd(b + 24, 8) - 0x100000, rd(a + 24, 8) - GPA);
	CHECK_EQ(byte_sum(b, 36), 0);
}
