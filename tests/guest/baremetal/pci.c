/* pci.c: PCI configuration space access and BAR placement (see pci.h). */
#include "pci.h"

static uint32_t cfg_address(unsigned slot, unsigned off)
{
	return 0x80000000u | (slot & 31) << 11 | (off & 0xfc);
}

uint32_t pci_read32(unsigned slot, unsigned off)
{
	outl(PCI_CONFIG_ADDRESS, cfg_address(slot, off));
	return inl(PCI_CONFIG_DATA);
}

uint16_t pci_read16(unsigned slot, unsigned off)
{
	outl(PCI_CONFIG_ADDRESS, cfg_address(slot, off));
	return inw((uint16_t)(PCI_CONFIG_DATA + (off & 2)));
}

uint8_t pci_read8(unsigned slot, unsigned off)
{
	outl(PCI_CONFIG_ADDRESS, cfg_address(slot, off));
	return inb((uint16_t)(PCI_CONFIG_DATA + (off & 3)));
}

void pci_write32(unsigned slot, unsigned off, uint32_t v)
{
	outl(PCI_CONFIG_ADDRESS, cfg_address(slot, off));
	outl(PCI_CONFIG_DATA, v);
}

void pci_write16(unsigned slot, unsigned off, uint16_t v)
{
	outl(PCI_CONFIG_ADDRESS, cfg_address(slot, off));
	outw((uint16_t)(PCI_CONFIG_DATA + (off & 2)), v);
}

void pci_write8(unsigned slot, unsigned off, uint8_t v)
{
	outl(PCI_CONFIG_ADDRESS, cfg_address(slot, off));
	outb((uint16_t)(PCI_CONFIG_DATA + (off & 3)), v);
}

bool pci_present(unsigned slot)
{
	return pci_read16(slot, PCI_VENDOR_ID) != 0xffff;
}

int pci_find(uint16_t vendor, uint16_t device)
{
	for (unsigned s = 0; s < PCI_SLOTS; s++) {
		uint32_t id = pci_read32(s, PCI_VENDOR_ID);

		if ((id & 0xffff) == vendor && id >> 16 == device)
			return (int)s;
	}
	return -1;
}

unsigned pci_scan_print(void)
{
	unsigned n = 0;

	for (unsigned s = 0; s < PCI_SLOTS; s++) {
		uint32_t id = pci_read32(s, PCI_VENDOR_ID);

		if ((id & 0xffff) == 0xffff)
			continue;
		print("pci: 00:%02x.0 %04x:%04x class %06x\n", s, id & 0xffff, id >> 16,
		      pci_read32(s, PCI_REVISION_ID) >> 8);
		n++;
	}
	return n;
}

unsigned pci_find_cap(unsigned slot, uint8_t id, unsigned after)
{
	unsigned off;

	if (!(pci_read16(slot, PCI_STATUS) & PCI_STATUS_CAP_LIST))
		return 0;
	off = after ? pci_read8(slot, after + 1) : pci_read8(slot, PCI_CAP_PTR);
	for (unsigned hops = 0; hops < 48 && off >= 0x40; hops++) {
		off &= 0xfc;
		if (pci_read8(slot, off) == id)
			return off;
		off = pci_read8(slot, off + 1);
	}
	return 0;
}

static uint64_t mmio_next = PCI_MMIO_BASE;

uint64_t pci_alloc_mmio(uint64_t size)
{
	uint64_t addr = (mmio_next + size - 1) & ~(size - 1);

	if (!size || (size & (size - 1)) || addr + size > PCI_MMIO_END)
		return 0;
	mmio_next = addr + size;
	return addr;
}

uint64_t pci_size_bar(unsigned slot, unsigned n, struct pci_bar *bar)
{
	unsigned off = PCI_BAR0 + 4 * n;
	uint32_t orig = pci_read32(slot, off);
	uint32_t lo, hi = 0xffffffffu;
	uint64_t mask;

	memset(bar, 0, sizeof(*bar));
	pci_write32(slot, off, 0xffffffffu);
	lo = pci_read32(slot, off);
	pci_write32(slot, off, orig);
	if (lo == 0 || lo == 0xffffffffu)
		return 0; /* not implemented (all-ones: the slot itself is absent) */

	if (lo & PCI_BAR_IO) {
		bar->io = true;
		mask = 0xffff0000u | (lo & ~3u);
		bar->size = (~mask & 0xffff) + 1;
		bar->addr = orig & ~3u;
		return bar->size;
	}
	bar->mem64 = (lo & 6) == PCI_BAR_MEM64;
	bar->prefetch = lo & PCI_BAR_PREFETCH;
	bar->addr = orig & ~0xfu;
	if (bar->mem64 && n < 5) {
		uint32_t orig_hi = pci_read32(slot, off + 4);

		pci_write32(slot, off + 4, 0xffffffffu);
		hi = pci_read32(slot, off + 4);
		pci_write32(slot, off + 4, orig_hi);
		bar->addr |= (uint64_t)orig_hi << 32;
	}
	mask = (uint64_t)hi << 32 | (lo & ~0xfu);
	bar->size = ~mask + 1;
	return bar->size;
}

void pci_set_bar(unsigned slot, unsigned n, const struct pci_bar *bar, uint64_t addr)
{
	unsigned off = PCI_BAR0 + 4 * n;

	pci_write32(slot, off, (uint32_t)addr);
	if (bar->mem64)
		pci_write32(slot, off + 4, (uint32_t)(addr >> 32));
}

const char *pci_setup_bars(unsigned slot, struct pci_bar bars[6])
{
	uint16_t cmd = pci_read16(slot, PCI_COMMAND);
	bool any_io = false;

	if (!pci_present(slot))
		return "no function in this slot";
	pci_write16(slot, PCI_COMMAND, (uint16_t)(cmd & ~(PCI_COMMAND_MEMORY | PCI_COMMAND_IO)));
	for (unsigned n = 0; n < 6; n++) {
		struct pci_bar *b = &bars[n];

		if (!pci_size_bar(slot, n, b))
			continue;
		if (b->io) {
			any_io = true;
			continue;
		}
		b->addr = pci_alloc_mmio(b->size);
		if (!b->addr)
			return "BAR does not fit in the 32-bit window";
		pci_set_bar(slot, n, b, b->addr);
		if (b->mem64) {
			n++;
			if (n < 6)
				memset(&bars[n], 0, sizeof(bars[n]));
		}
	}
	cmd = (uint16_t)((cmd & ~PCI_COMMAND_IO) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
	                 (any_io ? PCI_COMMAND_IO : 0));
	pci_write16(slot, PCI_COMMAND, cmd);
	return NULL;
}
