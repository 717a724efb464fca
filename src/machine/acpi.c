/* acpi.c: builds RSDP, XSDT, RSDT, FADT, FACS, DSDT and MADT for a guest with no firmware. */
#include "acpi.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define ACPI_OEM_ID       "VMSTCK"
#define ACPI_OEM_TABLE_ID "VMSTACK "
#define ACPI_CREATOR_ID   "VMSK"

/*
 * Table layouts from the ACPI 6.x specification, section numbers in the comments. Fields are
 * filled in host byte order, which on the x86 hosts KVM runs this machine on is little-endian.
 */

struct acpi_rsdp { /* 5.2.5.3 */
	char signature[8];
	uint8_t checksum; /* over the first 20 bytes (the ACPI 1.0 structure) */
	char oem_id[6];
	uint8_t revision;
	uint32_t rsdt_address;
	uint32_t length;
	uint64_t xsdt_address;
	uint8_t ext_checksum; /* over all `length` bytes */
	uint8_t reserved[3];
} __attribute__((packed));

struct acpi_header { /* 5.2.6 */
	char signature[4];
	uint32_t length;
	uint8_t revision;
	uint8_t checksum;
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	char creator_id[4];
	uint32_t creator_revision;
} __attribute__((packed));

struct acpi_gas { /* 5.2.3.2 generic address structure */
	uint8_t space_id;
	uint8_t bit_width;
	uint8_t bit_offset;
	uint8_t access_size; /* 1 byte, 2 word, 3 dword, 4 qword */
	uint64_t address;
} __attribute__((packed));

#define ACPI_GAS_SYSTEM_IO 1

struct acpi_fadt { /* 5.2.9, revision 6 */
	struct acpi_header h;
	uint32_t firmware_ctrl;
	uint32_t dsdt;
	uint8_t reserved0;
	uint8_t preferred_pm_profile;
	uint16_t sci_int;
	uint32_t smi_cmd;
	uint8_t acpi_enable;
	uint8_t acpi_disable;
	uint8_t s4bios_req;
	uint8_t pstate_cnt;
	uint32_t pm1a_evt_blk;
	uint32_t pm1b_evt_blk;
	uint32_t pm1a_cnt_blk;
	uint32_t pm1b_cnt_blk;
	uint32_t pm2_cnt_blk;
	uint32_t pm_tmr_blk;
	uint32_t gpe0_blk;
	uint32_t gpe1_blk;
	uint8_t pm1_evt_len;
	uint8_t pm1_cnt_len;
	uint8_t pm2_cnt_len;
	uint8_t pm_tmr_len;
	uint8_t gpe0_blk_len;
	uint8_t gpe1_blk_len;
	uint8_t gpe1_base;
	uint8_t cst_cnt;
	uint16_t p_lvl2_lat;
	uint16_t p_lvl3_lat;
	uint16_t flush_size;
	uint16_t flush_stride;
	uint8_t duty_offset;
	uint8_t duty_width;
	uint8_t day_alrm;
	uint8_t mon_alrm;
	uint8_t century;
	uint16_t iapc_boot_arch;
	uint8_t reserved1;
	uint32_t flags;
	struct acpi_gas reset_reg;
	uint8_t reset_value;
	uint16_t arm_boot_arch;
	uint8_t minor_version;
	uint64_t x_firmware_ctrl;
	uint64_t x_dsdt;
	struct acpi_gas x_pm1a_evt_blk;
	struct acpi_gas x_pm1b_evt_blk;
	struct acpi_gas x_pm1a_cnt_blk;
	struct acpi_gas x_pm1b_cnt_blk;
	struct acpi_gas x_pm2_cnt_blk;
	struct acpi_gas x_pm_tmr_blk;
	struct acpi_gas x_gpe0_blk;
	struct acpi_gas x_gpe1_blk;
	struct acpi_gas sleep_control_reg;
	struct acpi_gas sleep_status_reg;
	uint64_t hypervisor_vendor_id;
} __attribute__((packed));

/* FADT flags (5.2.9, table 5.10). */
#define FADT_F_WBINVD        (1u << 0)
#define FADT_F_PROC_C1       (1u << 2)
#define FADT_F_PWR_BUTTON    (1u << 4) /* set: no fixed-feature power button */
#define FADT_F_SLP_BUTTON    (1u << 5) /* set: no fixed-feature sleep button */
#define FADT_F_FIX_RTC       (1u << 6) /* set: no RTC wake status in PM1 */
#define FADT_F_RESET_REG_SUP (1u << 10)

/* IA-PC boot architecture flags (5.2.9.3). */
#define FADT_BOOT_VGA_NOT_PRESENT (1u << 2)

struct acpi_facs { /* 5.2.10 */
	char signature[4];
	uint32_t length;
	uint32_t hardware_signature;
	uint32_t firmware_waking_vector;
	uint32_t global_lock;
	uint32_t flags;
	uint64_t x_firmware_waking_vector;
	uint8_t version;
	uint8_t reserved0[3];
	uint32_t ospm_flags;
	uint8_t reserved1[24];
} __attribute__((packed));

struct acpi_madt { /* 5.2.12 */
	struct acpi_header h;
	uint32_t lapic_addr;
	uint32_t flags;
} __attribute__((packed));

#define MADT_PCAT_COMPAT 1u /* dual 8259s are present (and masked by Linux) */

enum {
	MADT_LAPIC = 0,
	MADT_IOAPIC = 1,
	MADT_INT_OVERRIDE = 2,
	MADT_LAPIC_NMI = 4,
};

struct madt_lapic {
	uint8_t type, length;
	uint8_t processor_uid;
	uint8_t apic_id;
	uint32_t flags; /* bit 0: enabled */
} __attribute__((packed));

struct madt_ioapic {
	uint8_t type, length;
	uint8_t ioapic_id;
	uint8_t reserved;
	uint32_t address;
	uint32_t gsi_base;
} __attribute__((packed));

struct madt_int_override {
	uint8_t type, length;
	uint8_t bus; /* 0: ISA */
	uint8_t source_irq;
	uint32_t gsi;
	uint16_t flags; /* MPS INTI flags: polarity bits 1:0, trigger mode bits 3:2 */
} __attribute__((packed));

struct madt_lapic_nmi {
	uint8_t type, length;
	uint8_t processor_uid; /* 0xff: all processors */
	uint16_t flags;
	uint8_t lint;
} __attribute__((packed));

#define MPS_INTI_POLARITY_HIGH 0x1
#define MPS_INTI_TRIGGER_LEVEL 0xc

_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP layout");
_Static_assert(sizeof(struct acpi_header) == 36, "table header layout");
_Static_assert(sizeof(struct acpi_gas) == 12, "GAS layout");
_Static_assert(sizeof(struct acpi_fadt) == 276, "FADT revision 6 layout");
_Static_assert(sizeof(struct acpi_facs) == 64, "FACS layout");
_Static_assert(sizeof(struct acpi_madt) == 44, "MADT layout");
_Static_assert(sizeof(struct madt_lapic) == 8, "MADT local APIC layout");
_Static_assert(sizeof(struct madt_ioapic) == 12, "MADT I/O APIC layout");
_Static_assert(sizeof(struct madt_int_override) == 10, "MADT override layout");
_Static_assert(sizeof(struct madt_lapic_nmi) == 6, "MADT NMI layout");

/*
 * A small AML writer. Package-like objects carry a PkgLength (ACPI 20.2.4) that counts
 * itself and must be as short as possible, so aml_open() reserves one byte and
 * aml_close() widens it once the body's size is known.
 */
#define AML_ZERO_OP       0x00
#define AML_ONE_OP        0x01
#define AML_NAME_OP       0x08
#define AML_BYTE_PREFIX   0x0a
#define AML_WORD_PREFIX   0x0b
#define AML_DWORD_PREFIX  0x0c
#define AML_QWORD_PREFIX  0x0e
#define AML_SCOPE_OP      0x10
#define AML_BUFFER_OP     0x11
#define AML_PACKAGE_OP    0x12
#define AML_EXT_OP_PREFIX 0x5b
#define AML_EXT_DEVICE_OP 0x82

struct aml {
	uint8_t *buf;
	size_t len, cap;
	bool overflow;
};

static void aml_bytes(struct aml *a, const void *p, size_t n)
{
	if (a->overflow || n > a->cap - a->len) {
		a->overflow = true;
		return;
	}
	memcpy(a->buf + a->len, p, n);
	a->len += n;
}

static void aml_byte(struct aml *a, uint8_t b)
{
	aml_bytes(a, &b, 1);
}

static void aml_le(struct aml *a, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		aml_byte(a, (uint8_t)(v >> (8 * i)));
}

static void aml_integer(struct aml *a, uint64_t v)
{
	if (v == 0) {
		aml_byte(a, AML_ZERO_OP);
	} else if (v == 1) {
		aml_byte(a, AML_ONE_OP);
	} else if (v <= UINT8_MAX) {
		aml_byte(a, AML_BYTE_PREFIX);
		aml_le(a, v, 1);
	} else if (v <= UINT16_MAX) {
		aml_byte(a, AML_WORD_PREFIX);
		aml_le(a, v, 2);
	} else if (v <= UINT32_MAX) {
		aml_byte(a, AML_DWORD_PREFIX);
		aml_le(a, v, 4);
	} else {
		aml_byte(a, AML_QWORD_PREFIX);
		aml_le(a, v, 8);
	}
}

/* Reserves the PkgLength byte after an opcode; returns where it is, for aml_close(). */
static size_t aml_open(struct aml *a)
{
	size_t at = a->len;

	aml_byte(a, 0);
	return at;
}

static void aml_close(struct aml *a, size_t at)
{
	size_t body, total;
	unsigned n;

	if (a->overflow)
		return;
	body = a->len - at - 1;
	if (body + 1 <= 0x3f)
		n = 1;
	else if (body + 2 <= 0xfff)
		n = 2;
	else if (body + 3 <= 0xfffff)
		n = 3;
	else
		n = 4;
	if (n - 1 > a->cap - a->len) {
		a->overflow = true;
		return;
	}
	memmove(a->buf + at + n, a->buf + at + 1, body);
	a->len += n - 1;
	total = body + n;
	if (n == 1) {
		a->buf[at] = (uint8_t)total;
		return;
	}
	/* Lead byte: count of following bytes in bits 7:6, low nibble of the length. */
	a->buf[at] = (uint8_t)(((n - 1) << 6) | (total & 0xf));
	for (unsigned i = 1; i < n; i++)
		a->buf[at + i] = (uint8_t)(total >> (4 + 8 * (i - 1)));
}

/* Name(name, <integer>) with a 4-character name segment. */
static void aml_name_integer(struct aml *a, const char *seg, uint64_t v)
{
	aml_byte(a, AML_NAME_OP);
	aml_bytes(a, seg, 4);
	aml_integer(a, v);
}

/* EISAID("PNP0A03") packs three letters in 5 bits each and four hex digits, big-endian. */
static uint32_t eisa_id(const char *s)
{
	uint16_t vendor = (uint16_t)(((s[0] - '@') << 10) | ((s[1] - '@') << 5) | (s[2] - '@'));
	uint16_t product = (uint16_t)strtoul(s + 3, NULL, 16);

	return (uint32_t)(vendor >> 8) | (uint32_t)(vendor & 0xff) << 8 |
	       (uint32_t)(product >> 8) << 16 | (uint32_t)(product & 0xff) << 24;
}

/* Resource descriptors for _CRS (ACPI 6.x 6.4). */
#define RES_IO              0x47
#define RES_END_TAG         0x79
#define RES_DWORD_ADDRESS   0x87
#define RES_WORD_ADDRESS    0x88
#define RES_QWORD_ADDRESS   0x8a
#define RES_TYPE_MEMORY     0
#define RES_TYPE_IO         1
#define RES_TYPE_BUS        2
#define RES_PRODUCER_FIXED  0x0c /* producer, positive decode, min and max fixed */
#define RES_IO_ENTIRE_RANGE 0x03
#define RES_MEM_RW          0x01 /* read-write, non-cacheable */

/* Word/DWord/QWord Address Space Descriptor: tag, length, type, flags, then five fields. */
static void res_address(struct aml *a, uint8_t tag, unsigned width, uint8_t type,
                        uint8_t type_flags, uint64_t min, uint64_t len)
{
	aml_byte(a, tag);
	aml_le(a, 3 + 5 * width, 2);
	aml_byte(a, type);
	aml_byte(a, RES_PRODUCER_FIXED);
	aml_byte(a, type_flags);
	aml_le(a, 0, width);             /* granularity */
	aml_le(a, min, width);           /* minimum */
	aml_le(a, min + len - 1, width); /* maximum */
	aml_le(a, 0, width);             /* translation offset */
	aml_le(a, len, width);           /* length */
}

/* Name(_PRT, Package(){ Package(){0xSSSSFFFF, 0, Zero, GSI}, ... }): INTA of each slot. */
static void aml_prt(struct aml *a, uint8_t gsi_base)
{
	size_t outer, inner;

	aml_byte(a, AML_NAME_OP);
	aml_bytes(a, "_PRT", 4);
	aml_byte(a, AML_PACKAGE_OP);
	outer = aml_open(a);
	aml_byte(a, 31); /* NumElements: slots 1..31 */
	for (unsigned slot = 1; slot < 32; slot++) {
		aml_byte(a, AML_PACKAGE_OP);
		inner = aml_open(a);
		aml_byte(a, 4);
		aml_integer(a, (uint64_t)slot << 16 | 0xffff); /* any function of the slot */
		aml_integer(a, 0);                             /* INTA */
		aml_integer(a, 0);                             /* no link device: a GSI */
		aml_integer(a, gsi_base + slot % 8);
		aml_close(a, inner);
	}
	aml_close(a, outer);
}

static void aml_pci_host(struct aml *a, const struct acpi_config *cfg)
{
	static const uint8_t cf8_ports[] = {RES_IO, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08};
	uint8_t crs_buf[160];
	struct aml crs = {.buf = crs_buf, .cap = sizeof(crs_buf)};
	size_t scope, dev, buffer;

	res_address(&crs, RES_WORD_ADDRESS, 2, RES_TYPE_BUS, 0, 0, 256);
	aml_bytes(&crs, cf8_ports, sizeof(cf8_ports));
	res_address(&crs, RES_WORD_ADDRESS, 2, RES_TYPE_IO, RES_IO_ENTIRE_RANGE, 0, 0xcf8);
	res_address(&crs, RES_WORD_ADDRESS, 2, RES_TYPE_IO, RES_IO_ENTIRE_RANGE, 0xd00,
	            0x10000 - 0xd00);
	if (cfg->pci_mmio32_len)
		res_address(&crs, RES_DWORD_ADDRESS, 4, RES_TYPE_MEMORY, RES_MEM_RW,
		            cfg->pci_mmio32_base, cfg->pci_mmio32_len);
	if (cfg->pci_mmio64_len)
		res_address(&crs, RES_QWORD_ADDRESS, 8, RES_TYPE_MEMORY, RES_MEM_RW,
		            cfg->pci_mmio64_base, cfg->pci_mmio64_len);
	aml_byte(&crs, RES_END_TAG);
	aml_byte(&crs, 0); /* checksum 0: "treat as correct" */
	assert(!crs.overflow);

	/* Scope(\_SB_) { Device(PCI0) { _HID, _UID, _CRS } } */
	aml_byte(a, AML_SCOPE_OP);
	scope = aml_open(a);
	aml_bytes(a, "\\_SB_", 5);
	aml_byte(a, AML_EXT_OP_PREFIX);
	aml_byte(a, AML_EXT_DEVICE_OP);
	dev = aml_open(a);
	aml_bytes(a, "PCI0", 4);
	aml_byte(a, AML_NAME_OP);
	aml_bytes(a, "_HID", 4);
	aml_byte(a, AML_DWORD_PREFIX);
	aml_le(a, eisa_id("PNP0A03"), 4);
	aml_name_integer(a, "_UID", 0);
	aml_byte(a, AML_NAME_OP);
	aml_bytes(a, "_CRS", 4);
	aml_byte(a, AML_BUFFER_OP);
	buffer = aml_open(a);
	aml_integer(a, crs.len);
	aml_bytes(a, crs.buf, crs.len);
	aml_close(a, buffer);
	if (cfg->pci_intx_gsi_base)
		aml_prt(a, cfg->pci_intx_gsi_base);
	aml_close(a, dev);
	aml_close(a, scope);
}

/* The DSDT's definition block body. */
static void aml_dsdt(struct aml *a, const struct acpi_config *cfg)
{
	size_t pkg;

	/* Name(\_S5_, Package(){SLP_TYPa, SLP_TYPb, reserved, reserved}) */
	aml_byte(a, AML_NAME_OP);
	aml_bytes(a, "\\_S5_", 5);
	aml_byte(a, AML_PACKAGE_OP);
	pkg = aml_open(a);
	aml_byte(a, 4); /* NumElements */
	aml_integer(a, ACPI_SLP_TYP_S5);
	aml_integer(a, 0);
	aml_integer(a, 0);
	aml_integer(a, 0);
	aml_close(a, pkg);

	if (cfg->pci_host)
		aml_pci_host(a, cfg);
}

static void acpi_header_init(struct acpi_header *h, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(h->signature, sig, 4);
	h->length = len;
	h->revision = rev;
	memcpy(h->oem_id, ACPI_OEM_ID, 6);
	memcpy(h->oem_table_id, ACPI_OEM_TABLE_ID, 8);
	h->oem_revision = 1;
	memcpy(h->creator_id, ACPI_CREATOR_ID, 4);
	h->creator_revision = 1;
}

/* Sets the checksum byte at `csum` so that the `len` bytes at p sum to zero. */
static void acpi_checksum(void *p, size_t len, uint8_t *csum)
{
	*csum = 0;
	*csum = (uint8_t)-byte_sum(p, len);
}

/* A register of `bytes` bytes in port space, accessed `access` (1, 2 or 4) bytes at a time. */
static struct acpi_gas acpi_gas_io(uint64_t port, unsigned bytes, unsigned access)
{
	return (struct acpi_gas){
	    .space_id = ACPI_GAS_SYSTEM_IO,
	    .bit_width = (uint8_t)(bytes * 8),
	    .access_size = (uint8_t)(__builtin_ctz(access) + 1),
	    .address = port,
	};
}

static void acpi_fill_fadt(struct acpi_fadt *f, const struct acpi_config *cfg, uint64_t facs,
                           uint64_t dsdt)
{
	uint32_t pm = cfg->pm_base;

	acpi_header_init(&f->h, "FACP", sizeof(*f), 6);
	/*
	 * The FACS only through X_FIRMWARE_CTRL: an OS must then ignore FIRMWARE_CTRL, and
	 * Linux would otherwise install (and list) the same FACS twice. The DSDT goes in both.
	 */
	f->x_firmware_ctrl = facs;
	f->dsdt = (uint32_t)dsdt;
	f->x_dsdt = dsdt;
	f->sci_int = cfg->sci_irq;
	/* SMI_CMD 0: no SMM handshake, the machine starts (and stays) in ACPI mode. */
	f->smi_cmd = 0;
	f->pm1a_evt_blk = pm + ACPI_PM_EVT_OFF;
	f->pm1a_cnt_blk = pm + ACPI_PM_CNT_OFF;
	f->pm_tmr_blk = pm + ACPI_PM_TMR_OFF;
	f->pm1_evt_len = ACPI_PM_EVT_LEN;
	f->pm1_cnt_len = ACPI_PM_CNT_LEN;
	f->pm_tmr_len = ACPI_PM_TMR_LEN;
	/* The event block is two 16-bit registers, status then enable. */
	f->x_pm1a_evt_blk = acpi_gas_io(pm + ACPI_PM_EVT_OFF, ACPI_PM_EVT_LEN, 2);
	f->x_pm1a_cnt_blk = acpi_gas_io(pm + ACPI_PM_CNT_OFF, ACPI_PM_CNT_LEN, 2);
	f->x_pm_tmr_blk = acpi_gas_io(pm + ACPI_PM_TMR_OFF, ACPI_PM_TMR_LEN, 4);
	/* Latencies above 100 and 1000 us say C2 and C3 are not supported (5.2.9). */
	f->p_lvl2_lat = 101;
	f->p_lvl3_lat = 1001;
	/* No 8042 flag: Linux then skips probing a keyboard controller. */
	f->iapc_boot_arch = FADT_BOOT_VGA_NOT_PRESENT;
	/* TMR_VAL_EXT stays clear: the PM timer is 24 bits wide. */
	/* No PWR_BUTTON flag: the power button is the fixed-feature one in PM1 (acpi_pm). */
	f->flags = FADT_F_WBINVD | FADT_F_PROC_C1 | FADT_F_SLP_BUTTON | FADT_F_FIX_RTC |
	           FADT_F_RESET_REG_SUP;
	/* Linux uses the reset register only if it is exactly 8 bits at bit offset 0. */
	f->reset_reg = acpi_gas_io(pm + ACPI_PM_RESET_OFF, 1, 1);
	f->reset_value = ACPI_RESET_VALUE;
	acpi_checksum(f, sizeof(*f), &f->h.checksum);
}

static void acpi_fill_madt(struct acpi_madt *m, size_t len, const struct acpi_config *cfg)
{
	uint8_t *p = (uint8_t *)(m + 1);
	struct madt_ioapic *io;
	struct madt_int_override *ovr;
	struct madt_lapic_nmi *nmi;

	acpi_header_init(&m->h, "APIC", (uint32_t)len, 4);
	m->lapic_addr = cfg->lapic_addr;
	m->flags = MADT_PCAT_COMPAT;

	for (unsigned i = 0; i < cfg->ncpus; i++) {
		struct madt_lapic *l = (struct madt_lapic *)p;
		l->type = MADT_LAPIC;
		l->length = sizeof(*l);
		l->processor_uid = (uint8_t)i;
		l->apic_id = (uint8_t)i;
		l->flags = 1;
		p += sizeof(*l);
	}

	io = (struct madt_ioapic *)p;
	io->type = MADT_IOAPIC;
	io->length = sizeof(*io);
	io->ioapic_id = cfg->ioapic_id;
	io->address = cfg->ioapic_addr;
	io->gsi_base = 0;
	p += sizeof(*io);

	/* The PIT's IRQ0 is wired to pin 2 of the I/O APIC, as on every PC since the 440FX. */
	ovr = (struct madt_int_override *)p;
	ovr->type = MADT_INT_OVERRIDE;
	ovr->length = sizeof(*ovr);
	ovr->source_irq = 0;
	ovr->gsi = 2;
	ovr->flags = 0; /* conforming: edge, active high for ISA */
	p += sizeof(*ovr);

	/* Without this the SCI would default to level, active low (5.2.12.5). */
	ovr = (struct madt_int_override *)p;
	ovr->type = MADT_INT_OVERRIDE;
	ovr->length = sizeof(*ovr);
	ovr->source_irq = cfg->sci_irq;
	ovr->gsi = cfg->sci_irq;
	ovr->flags = MPS_INTI_POLARITY_HIGH | MPS_INTI_TRIGGER_LEVEL;
	p += sizeof(*ovr);

	nmi = (struct madt_lapic_nmi *)p;
	nmi->type = MADT_LAPIC_NMI;
	nmi->length = sizeof(*nmi);
	nmi->processor_uid = 0xff;
	nmi->flags = 0;
	nmi->lint = 1;
	p += sizeof(*nmi);

	assert((size_t)(p - (uint8_t *)m) == len);
	acpi_checksum(m, len, &m->h.checksum);
}

static int acpi_check_config(const struct acpi_config *cfg)
{
	if (cfg->ncpus == 0 || cfg->ncpus > 254 || cfg->ioapic_id < cfg->ncpus ||
	    cfg->ioapic_id == 0xff)
		return -EINVAL;
	if ((uint32_t)cfg->pm_base + ACPI_PM_LEN > 0x10000 || cfg->sci_irq >= 16)
		return -EINVAL;
	if (cfg->pci_host) {
		if (cfg->pci_mmio32_len &&
		    (uint64_t)cfg->pci_mmio32_base + cfg->pci_mmio32_len > 4 * GiB)
			return -EINVAL;
		if (cfg->pci_mmio64_len &&
		    cfg->pci_mmio64_base + (cfg->pci_mmio64_len - 1) < cfg->pci_mmio64_base)
			return -EINVAL;
	}
	return 0;
}

int acpi_build(const struct acpi_config *cfg, uint8_t *buf, size_t len, uint64_t gpa)
{
	uint8_t aml_buf[2048];
	struct aml aml = {.buf = aml_buf, .cap = sizeof(aml_buf)};
	size_t rsdp_off = 0, xsdt_off, rsdt_off, fadt_off, facs_off, madt_off, dsdt_off, end;
	size_t xsdt_len, rsdt_len, madt_len, dsdt_len;
	struct acpi_rsdp *rsdp;
	struct acpi_header *xsdt, *rsdt, *dsdt;
	struct acpi_facs *facs;
	int err;

	err = acpi_check_config(cfg);
	if (err)
		return err;
	if (gpa % 16)
		return -EINVAL;

	aml_dsdt(&aml, cfg);
	assert(!aml.overflow);

	xsdt_len = sizeof(struct acpi_header) + 2 * sizeof(uint64_t);
	rsdt_len = sizeof(struct acpi_header) + 2 * sizeof(uint32_t);
	madt_len = sizeof(struct acpi_madt) + cfg->ncpus * sizeof(struct madt_lapic) +
	           sizeof(struct madt_ioapic) + 2 * sizeof(struct madt_int_override) +
	           sizeof(struct madt_lapic_nmi);
	dsdt_len = sizeof(struct acpi_header) + aml.len;

	xsdt_off = ALIGN_UP(rsdp_off + sizeof(struct acpi_rsdp), 16);
	rsdt_off = ALIGN_UP(xsdt_off + xsdt_len, 16);
	fadt_off = ALIGN_UP(rsdt_off + rsdt_len, 16);
	facs_off = ALIGN_UP(fadt_off + sizeof(struct acpi_fadt), 64);
	madt_off = ALIGN_UP(facs_off + sizeof(struct acpi_facs), 16);
	dsdt_off = ALIGN_UP(madt_off + madt_len, 16);
	end = dsdt_off + dsdt_len;

	if (len < end)
		return -ENOSPC;
	if (gpa > 4 * GiB - end)
		return -EINVAL;
	memset(buf, 0, end);

	dsdt = (struct acpi_header *)(buf + dsdt_off);
	acpi_header_init(dsdt, "DSDT", (uint32_t)dsdt_len, 2);
	memcpy(dsdt + 1, aml.buf, aml.len);
	acpi_checksum(dsdt, dsdt_len, &dsdt->checksum);

	facs = (struct acpi_facs *)(buf + facs_off);
	memcpy(facs->signature, "FACS", 4);
	facs->length = sizeof(*facs);
	facs->version = 2;

	acpi_fill_fadt((struct acpi_fadt *)(buf + fadt_off), cfg, gpa + facs_off, gpa + dsdt_off);
	acpi_fill_madt((struct acpi_madt *)(buf + madt_off), madt_len, cfg);

	xsdt = (struct acpi_header *)(buf + xsdt_off);
	acpi_header_init(xsdt, "XSDT", (uint32_t)xsdt_len, 1);
	put_le64((uint8_t *)(xsdt + 1), gpa + fadt_off);
	put_le64((uint8_t *)(xsdt + 1) + 8, gpa + madt_off);
	acpi_checksum(xsdt, xsdt_len, &xsdt->checksum);

	rsdt = (struct acpi_header *)(buf + rsdt_off);
	acpi_header_init(rsdt, "RSDT", (uint32_t)rsdt_len, 1);
	put_le32((uint8_t *)(rsdt + 1), gpa + fadt_off);
	put_le32((uint8_t *)(rsdt + 1) + 4, gpa + madt_off);
	acpi_checksum(rsdt, rsdt_len, &rsdt->checksum);

	rsdp = (struct acpi_rsdp *)(buf + rsdp_off);
	memcpy(rsdp->signature, "RSD PTR ", 8);
	memcpy(rsdp->oem_id, ACPI_OEM_ID, 6);
	rsdp->revision = 2;
	rsdp->rsdt_address = (uint32_t)(gpa + rsdt_off);
	rsdp->length = sizeof(*rsdp);
	rsdp->xsdt_address = gpa + xsdt_off;
	acpi_checksum(rsdp, 20, &rsdp->checksum);
	acpi_checksum(rsdp, sizeof(*rsdp), &rsdp->ext_checksum);

	return (int)end;
}
