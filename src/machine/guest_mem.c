/* guest_mem.c: memfd-backed guest RAM, the checked gpa->host translation, the e820 map. */
#include "guest_mem.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* The checks every way of creating RAM shares: the size is usable on this host. */
static int check_size(uint64_t size, uint64_t host_limit, unsigned phys_bits, char *err,
                      size_t errlen)
{
	char a[32], b[32];
	uint64_t top;

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
	return 0;
}

/* Maps m->fd (shared: RAM is the memfd; private: copy-on-write over a snapshot file). */
static int map_ram(struct guest_mem *m, uint64_t size, bool shared, char *err, size_t errlen)
{
	char a[32];

	m->host = mmap(NULL, size, PROT_READ | PROT_WRITE,
	               (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_NORESERVE, m->fd, 0);
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

int guest_mem_create(struct guest_mem *m, uint64_t size, uint64_t host_limit, unsigned phys_bits,
                     char *err, size_t errlen)
{
	char a[32];
	int r;

	memset(m, 0, sizeof(*m));
	m->fd = -1;
	r = check_size(size, host_limit, phys_bits, err, errlen);
	if (r < 0)
		return r;
	m->fd = memfd_create("vmstack-guest-ram", MFD_CLOEXEC);
	if (m->fd < 0 || ftruncate(m->fd, (off_t)size) < 0) {
		int e = errno;
		snprintf(err, errlen, "guest RAM (%s): %s", format_size(size, a, sizeof(a)),
		         strerror(e));
		guest_mem_destroy(m);
		return -e;
	}
	return map_ram(m, size, true, err, errlen);
}

int guest_mem_open_snapshot(struct guest_mem *m, uint64_t size, const char *path,
                            uint64_t host_limit, unsigned phys_bits, char *err, size_t errlen)
{
	struct stat st;
	int r;

	memset(m, 0, sizeof(*m));
	m->fd = -1;
	r = check_size(size, host_limit, phys_bits, err, errlen);
	if (r < 0)
		return r;
	m->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (m->fd < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return r;
	}
	if (fstat(m->fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != size) {
		snprintf(err, errlen,
		         "%s: %llu bytes, the snapshot's guest has %llu — not this "
		         "snapshot's memory file",
		         path, (unsigned long long)st.st_size, (unsigned long long)size);
		guest_mem_destroy(m);
		return -EINVAL;
	}
	m->private_map = true;
	return map_ram(m, size, false, err, errlen);
}

static bool page_is_zero(const uint8_t *p)
{
	static const uint8_t zero[4096];

	return memcmp(p, zero, sizeof(zero)) == 0;
}

/* Writes the non-zero pages of host[from, to) at the same offsets in fd. */
static int save_range(const struct guest_mem *m, int fd, uint64_t from, uint64_t to,
                      uint64_t *written)
{
	uint64_t run = from, p;
	int r;

	for (p = from; p < to; p += 4096) {
		if (!page_is_zero(m->host + p))
			continue;
		if (p > run) {
			r = pwrite_all(fd, m->host + run, p - run, run);
			if (r < 0)
				return r;
			*written += p - run;
		}
		run = p + 4096;
	}
	if (to > run) {
		r = pwrite_all(fd, m->host + run, to - run, run);
		if (r < 0)
			return r;
		*written += to - run;
	}
	return 0;
}

/*
 * The pages that may hold data: for the memfd, its data extents (pages never touched are
 * holes); over a snapshot file, every page (private copies are not visible in the file).
 */
static int save_pages(const struct guest_mem *m, int fd, uint64_t *written)
{
	off_t pos = 0, end;

	if (m->private_map)
		return save_range(m, fd, 0, m->size, written);
	while ((uint64_t)pos < m->size) {
		pos = lseek(m->fd, pos, SEEK_DATA);
		if (pos < 0)
			return errno == ENXIO ? 0 : -errno;
		end = lseek(m->fd, pos, SEEK_HOLE);
		if (end < 0)
			end = (off_t)m->size;
		end = (off_t)MIN((uint64_t)end, m->size);
		int r = save_range(m, fd, ALIGN_DOWN((uint64_t)pos, 4096),
		                   ALIGN_UP((uint64_t)end, 4096), written);
		if (r < 0)
			return r;
		pos = end;
	}
	return 0;
}

int guest_mem_save(const struct guest_mem *m, const char *path, uint64_t *written, char *err,
                   size_t errlen)
{
	char tmp[4096];
	int fd, r;

	*written = 0;
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "%s: path too long", path);
		return -ENAMETOOLONG;
	}
	/* A new file renamed over the old: a VM restored from `path` keeps its mapping. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		return r;
	}
	r = ftruncate(fd, (off_t)m->size) < 0 ? -errno : 0;
	if (r == 0)
		r = save_pages(m, fd, written);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		snprintf(err, errlen, "%s: writing guest memory: %s", path, strerror(-r));
	}
	return r;
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
