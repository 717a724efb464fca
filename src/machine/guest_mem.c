/* guest_mem.c: memfd-backed guest RAM, the checked gpa->host translation, the e820 map. */
#include "guest_mem.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util.h"

int guest_mem_create(struct guest_mem *m, uint64_t size, uint64_t host_limit, unsigned phys_bits,
                     char *err, size_t errlen)
{
	char a[32], b[32];
	uint64_t top;

	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if (size < GM_MIN_SIZE) {
		snprintf(err, errlen, "--memory %s: too small — a guest needs at least %s",
		         format_size(size, a, sizeof(a)), format_size(GM_MIN_SIZE, b, sizeof(b)));
		return -EINVAL;
	}
	if (size % (4 * KiB)) {
		snprintf(err, errlen, "--memory %llu: not a multiple of 4 KiB",
		         (unsigned long long)size);
		return -EINVAL;
	}
	if (host_limit && size > host_limit) {
		snprintf(err, errlen,
		         "--memory %s: more than this host's %s of RAM and swap — choose a "
		         "smaller size",
		         format_size(size, a, sizeof(a)), format_size(host_limit, b, sizeof(b)));
		return -ENOMEM;
	}
	top = size > GM_HOLE_START ? GM_4G + (size - GM_HOLE_START) : size;
	if (phys_bits && phys_bits < 64 && top > (1ULL << phys_bits)) {
		snprintf(err, errlen,
		         "--memory %s: beyond the CPU's %u-bit physical address space — choose a "
		         "smaller size",
		         format_size(size, a, sizeof(a)), phys_bits);
		return -ERANGE;
	}
	m->fd = memfd_create("vmstack-guest-ram", MFD_CLOEXEC);
	if (m->fd < 0 || ftruncate(m->fd, (off_t)size) < 0) {
		int e = errno;
		snprintf(err, errlen, "guest RAM (%s): %s", format_size(size, a, sizeof(a)),
		         strerror(e));
		guest_mem_destroy(m);
		return -e;
	}
	m->host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m->fd, 0);
	if (m->host == MAP_FAILED) {
		int e = errno;
		m->host = NULL;
		snprintf(err, errlen, "guest RAM (%s): cannot map: %s",
		         format_size(size, a, sizeof(a)), strerror(e));
		guest_mem_destroy(m);
		return -e;
	}
	/* Guest RAM should not end up in a core dump of the monitor. */
	madvise(m->host, size, MADV_DONTDUMP);
	m->size = size;
	m->regions[0] = (struct gm_region){.gpa = 0, .size = MIN(size, GM_HOLE_START), .offset = 0};
	m->nregions = 1;
	if (size > GM_HOLE_START) {
		m->regions[1] = (struct gm_region){
		    .gpa = GM_4G, .size = size - GM_HOLE_START, .offset = GM_HOLE_START};
		m->nregions = 2;
	}
	return 0;
}

void guest_mem_destroy(struct guest_mem *m)
{
	if (m->host)
		munmap(m->host, m->size);
	if (m->fd >= 0)
		close(m->fd);
	memset(m, 0, sizeof(*m));
	m->fd = -1;
}

uint64_t guest_mem_low_end(const struct guest_mem *m)
{
	return m->regions[0].size;
}

void *gm_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < m->nregions; i++) {
		const struct gm_region *r = &m->regions[i];
		if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
			return m->host + r->offset + (gpa - r->gpa);
	}
	return NULL;
}

int gm_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len)
{
	void *p = gm_ptr(m, gpa, len);

	if (!p)
		return -EFAULT;
#ifdef MADV_POPULATE_WRITE
	/* A kernel image is thousands of pages: one call allocates them all, not one fault each. */
	if (len >= 64 * KiB) {
		uintptr_t start = ALIGN_DOWN((uintptr_t)p, 4096);
		madvise((void *)start, ALIGN_UP((uintptr_t)p + len, 4096) - start,
		        MADV_POPULATE_WRITE);
	}
#endif
	memcpy(p, src, len);
	return 0;
}

unsigned gm_e820(const struct guest_mem *m, struct e820_entry *out, unsigned max)
{
	struct e820_entry e[5];
	unsigned n = 0;
	uint64_t low = guest_mem_low_end(m);

	e[n++] = (struct e820_entry){0, GM_EBDA, E820_RAM};
	e[n++] = (struct e820_entry){GM_EBDA, GM_EBDA_END - GM_EBDA, E820_RESERVED};
	e[n++] = (struct e820_entry){GM_ACPI, GM_BIOS_END - GM_ACPI, E820_RESERVED};
	if (low > GM_BIOS_END)
		e[n++] = (struct e820_entry){GM_BIOS_END, low - GM_BIOS_END, E820_RAM};
	if (m->nregions > 1)
		e[n++] = (struct e820_entry){m->regions[1].gpa, m->regions[1].size, E820_RAM};
	n = MIN(n, max);
	memcpy(out, e, n * sizeof(e[0]));
	return n;
}
