/* mptable.c: builds the MP floating pointer and configuration table (MP spec 1.4, chapter 4). */
#include "mptable.h"

#include <assert.h>
#include <errno.h>
#include <string.h>

#include "util.h"

/* Layouts from MP spec 1.4 chapter 4; fields in host (x86, little-endian) byte order. */

struct mpf_intel { /* 4.1 floating pointer structure */
	char signature[4];
	uint32_t physptr;
	uint8_t length; /* in 16-byte units */
	uint8_t spec_rev;
	uint8_t checksum;
	uint8_t feature[5]; /* [0] 0: a configuration table exists; [1] bit 7: IMCR present */
} __attribute__((packed));

struct mpc_table { /* 4.2 configuration table header */
	char signature[4];
	uint16_t length; /* header plus base entries */
	uint8_t spec_rev;
	uint8_t checksum;
	char oem_id[8];
	char product_id[12];
	uint32_t oem_table;
	uint16_t oem_table_size;
	uint16_t entry_count;
	uint32_t lapic_addr;
	uint16_t ext_length;
	uint8_t ext_checksum;
	uint8_t reserved;
} __attribute__((packed));

enum {
	MPC_PROCESSOR = 0,
	MPC_BUS = 1,
	MPC_IOAPIC = 2,
	MPC_IOINTSRC = 3,
	MPC_LINTSRC = 4,
};

struct mpc_cpu { /* 4.3.1 */
	uint8_t type;
	uint8_t apic_id;
	uint8_t apic_ver;
	uint8_t cpu_flags;
	uint32_t signature;
	uint32_t feature_flags;
	uint32_t reserved[2];
} __attribute__((packed));

#define MPC_CPU_ENABLED 0x01
#define MPC_CPU_BSP     0x02

struct mpc_bus { /* 4.3.2 */
	uint8_t type;
	uint8_t bus_id;
	char bus_type[6];
} __attribute__((packed));

struct mpc_ioapic { /* 4.3.3 */
	uint8_t type;
	uint8_t apic_id;
	uint8_t apic_ver;
	uint8_t flags; /* bit 0: usable */
	uint32_t address;
} __attribute__((packed));

struct mpc_intsrc { /* 4.3.4 and 4.3.5 share this layout */
	uint8_t type;
	uint8_t irq_type;
	uint16_t flags; /* polarity bits 1:0, trigger bits 3:2; 0 = conforms to the bus */
	uint8_t src_bus;
	uint8_t src_irq;
	uint8_t dst_apic; /* I/O APIC id, or local APIC id (0xff: all) */
	uint8_t dst_pin;  /* I/O APIC INTIN#, or LINTIN# */
} __attribute__((packed));

enum { MP_INT = 0, MP_NMI = 1, MP_SMI = 2, MP_EXTINT = 3 };

_Static_assert(sizeof(struct mpf_intel) == 16, "MP floating pointer layout");
_Static_assert(sizeof(struct mpc_table) == 44, "MP table header layout");
_Static_assert(sizeof(struct mpc_cpu) == 20, "MP processor entry layout");
_Static_assert(sizeof(struct mpc_bus) == 8, "MP bus entry layout");
_Static_assert(sizeof(struct mpc_ioapic) == 8, "MP I/O APIC entry layout");
_Static_assert(sizeof(struct mpc_intsrc) == 8, "MP interrupt entry layout");

#define MP_SPEC_REV        4 /* 1.4 */
#define MP_LAPIC_VERSION   0x14
#define MP_IOAPIC_VER      0x11
#define MP_ISA_BUS         0
#define MP_ISA_IRQS        16
#define MP_ISA_IRQ_ENTRIES (MP_ISA_IRQS - 1) /* IRQ2 is the cascade and has no entry */

/* Family 6, model 15, stepping 1; features FPU and APIC (the table's fields are only read). */
#define MP_CPU_SIGNATURE 0x000006f1
#define MP_PCI_BUS       1
#define MP_PCI_SLOTS     31
#define MP_CPU_FEATURES  ((1u << 0) | (1u << 9))

static void mpc_intsrc_init(struct mpc_intsrc *e, uint8_t type, uint8_t irq_type, uint8_t src_irq,
                            uint8_t dst_apic, uint8_t dst_pin)
{
	e->type = type;
	e->irq_type = irq_type;
	e->flags = 0;
	e->src_bus = MP_ISA_BUS;
	e->src_irq = src_irq;
	e->dst_apic = dst_apic;
	e->dst_pin = dst_pin;
}

int mptable_build(const struct mptable_config *cfg, uint8_t *buf, size_t len, uint64_t gpa)
{
	size_t table_len, end;
	struct mpf_intel *mpf;
	struct mpc_table *mpc;
	struct mpc_bus *bus;
	struct mpc_ioapic *ioapic;
	struct mpc_intsrc *e;
	uint8_t *p;
	unsigned count = 0;

	if (cfg->ncpus == 0 || cfg->ncpus > 254 || cfg->ioapic_id < cfg->ncpus ||
	    cfg->ioapic_id == 0xff || gpa % 16)
		return -EINVAL;

	table_len = sizeof(struct mpc_table) + cfg->ncpus * sizeof(struct mpc_cpu) +
	            sizeof(struct mpc_bus) + sizeof(struct mpc_ioapic) +
	            (MP_ISA_IRQ_ENTRIES + 2) * sizeof(struct mpc_intsrc);
	if (cfg->pci_intx_gsi_base)
		table_len += sizeof(struct mpc_bus) + MP_PCI_SLOTS * sizeof(struct mpc_intsrc);
	end = sizeof(struct mpf_intel) + table_len;
	if (len < end)
		return -ENOSPC;
	if (gpa > 4 * GiB - end)
		return -EINVAL;
	memset(buf, 0, end);

	mpc = (struct mpc_table *)(buf + sizeof(struct mpf_intel));
	p = (uint8_t *)(mpc + 1);

	for (unsigned i = 0; i < cfg->ncpus; i++) {
		struct mpc_cpu *cpu = (struct mpc_cpu *)p;
		cpu->type = MPC_PROCESSOR;
		cpu->apic_id = (uint8_t)i;
		cpu->apic_ver = MP_LAPIC_VERSION;
		cpu->cpu_flags = MPC_CPU_ENABLED | (i == 0 ? MPC_CPU_BSP : 0);
		cpu->signature = MP_CPU_SIGNATURE;
		cpu->feature_flags = MP_CPU_FEATURES;
		p += sizeof(*cpu);
		count++;
	}

	bus = (struct mpc_bus *)p;
	bus->type = MPC_BUS;
	bus->bus_id = MP_ISA_BUS;
	memcpy(bus->bus_type, "ISA   ", 6);
	p += sizeof(*bus);
	count++;
	if (cfg->pci_intx_gsi_base) {
		bus = (struct mpc_bus *)p;
		bus->type = MPC_BUS;
		bus->bus_id = MP_PCI_BUS;
		memcpy(bus->bus_type, "PCI   ", 6);
		p += sizeof(*bus);
		count++;
	}

	ioapic = (struct mpc_ioapic *)p;
	ioapic->type = MPC_IOAPIC;
	ioapic->apic_id = cfg->ioapic_id;
	ioapic->apic_ver = MP_IOAPIC_VER;
	ioapic->flags = 1;
	ioapic->address = cfg->ioapic_addr;
	p += sizeof(*ioapic);
	count++;

	/* The PIT's IRQ0 arrives on pin 2; IRQ2 (the 8259 cascade) is not routed. */
	for (unsigned irq = 0; irq < MP_ISA_IRQS; irq++) {
		if (irq == 2)
			continue;
		e = (struct mpc_intsrc *)p;
		mpc_intsrc_init(e, MPC_IOINTSRC, MP_INT, (uint8_t)irq, cfg->ioapic_id,
		                (uint8_t)(irq == 0 ? 2 : irq));
		p += sizeof(*e);
		count++;
	}

	/* PCI source IRQ: device number in bits 6:2, pin (0 = INTA) in bits 1:0. */
	for (unsigned slot = 1; cfg->pci_intx_gsi_base && slot <= MP_PCI_SLOTS; slot++) {
		e = (struct mpc_intsrc *)p;
		mpc_intsrc_init(e, MPC_IOINTSRC, MP_INT, (uint8_t)(slot << 2), cfg->ioapic_id,
		                (uint8_t)(cfg->pci_intx_gsi_base + slot % 8));
		e->src_bus = MP_PCI_BUS;
		p += sizeof(*e);
		count++;
	}

	/* Virtual-wire mode: the 8259 reaches the CPUs through LINT0, NMIs through LINT1. */
	e = (struct mpc_intsrc *)p;
	mpc_intsrc_init(e, MPC_LINTSRC, MP_EXTINT, 0, 0xff, 0);
	p += sizeof(*e);
	count++;
	e = (struct mpc_intsrc *)p;
	mpc_intsrc_init(e, MPC_LINTSRC, MP_NMI, 0, 0xff, 1);
	p += sizeof(*e);
	count++;

	memcpy(mpc->signature, "PCMP", 4);
	mpc->length = (uint16_t)table_len;
	mpc->spec_rev = MP_SPEC_REV;
	memcpy(mpc->oem_id, "VMSTACK ", 8);
	memcpy(mpc->product_id, "VMSTACK     ", 12);
	mpc->entry_count = (uint16_t)count;
	mpc->lapic_addr = cfg->lapic_addr;
	mpc->checksum = (uint8_t)-byte_sum(mpc, table_len);

	mpf = (struct mpf_intel *)buf;
	memcpy(mpf->signature, "_MP_", 4);
	mpf->physptr = (uint32_t)(gpa + sizeof(*mpf));
	mpf->length = 1;
	mpf->spec_rev = MP_SPEC_REV;
	mpf->checksum = (uint8_t)-byte_sum(mpf, sizeof(*mpf));

	assert(p == buf + end);
	return (int)end;
}
