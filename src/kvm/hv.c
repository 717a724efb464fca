/* hv.c: /dev/kvm open, capability checks, VM creation; errors explain what to do. */
#include "hv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/* What the monitor cannot work without, and why (for the error message). */
static const struct {
	long cap;
	const char *name;
} required_caps[] = {
    {KVM_CAP_IRQCHIP, "in-kernel irqchip"},
    {KVM_CAP_HLT, "in-kernel HLT"},
    {KVM_CAP_USER_MEMORY, "user memory slots"},
    {KVM_CAP_SET_TSS_ADDR, "TSS address"},
    {KVM_CAP_EXT_CPUID, "KVM_GET_SUPPORTED_CPUID"},
    {KVM_CAP_PIT2, "in-kernel PIT"},
    {KVM_CAP_IRQ_ROUTING, "IRQ routing"},
    {KVM_CAP_IMMEDIATE_EXIT, "immediate exit"},
    {KVM_CAP_IRQFD, "irqfd"},
    {KVM_CAP_IOEVENTFD, "ioeventfd"},
    {KVM_CAP_SIGNAL_MSI, "MSI injection"},
};

int hv_open(struct hv *hv, const char *dev, char *err, size_t errlen)
{
	int ver;

	memset(hv, 0, sizeof(*hv));
	hv->vm_fd = -1;
	hv->sys_fd = open(dev, O_RDWR | O_CLOEXEC);
	if (hv->sys_fd < 0) {
		int e = errno;
		if (e == ENOENT)
			snprintf(err, errlen,
			         "%s: no such device — load the KVM module (modprobe kvm_intel or "
			         "kvm_amd) or enable virtualization in the firmware",
			         dev);
		else if (e == EACCES || e == EPERM)
			snprintf(err, errlen,
			         "%s: permission denied — add the user to group kvm "
			         "(usermod -aG kvm $USER) and log in again",
			         dev);
		else
			snprintf(err, errlen, "%s: %s", dev, strerror(e));
		return -e;
	}
	ver = ioctl(hv->sys_fd, KVM_GET_API_VERSION, 0);
	if (ver != KVM_API_VERSION) {
		snprintf(err, errlen,
		         "%s: KVM API version %d, expected %d — the host kernel is too old", dev,
		         ver, KVM_API_VERSION);
		hv_close(hv);
		return -ENOTSUP;
	}
	for (size_t i = 0; i < sizeof(required_caps) / sizeof(required_caps[0]); i++) {
		if (ioctl(hv->sys_fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0) {
			snprintf(err, errlen,
			         "%s: KVM lacks %s (capability %ld) — the host kernel is too old",
			         dev, required_caps[i].name, required_caps[i].cap);
			hv_close(hv);
			return -ENOTSUP;
		}
	}
	hv->vcpu_mmap_size = ioctl(hv->sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	hv->max_vcpus = ioctl(hv->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (hv->max_vcpus <= 0)
		hv->max_vcpus = ioctl(hv->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	if (hv->max_vcpus <= 0)
		hv->max_vcpus = 4;
	hv->nr_memslots = ioctl(hv->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
	pthread_mutex_init(&hv->route_lock, NULL);
	hv->route_lock_ready = true;
	/* Try, and report KVM's own error: no gating on CPUID vmx/svm flags. */
	do {
		hv->vm_fd = ioctl(hv->sys_fd, KVM_CREATE_VM, 0);
	} while (hv->vm_fd < 0 && errno == EINTR);
	if (hv->vm_fd < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: cannot create a VM: %s%s", dev, strerror(e),
		         e == ENOMEM ? " — the host is short of memory"
		                     : " — is hardware virtualization enabled and usable?");
		hv_close(hv);
		return -e;
	}
	return 0;
}

void hv_close(struct hv *hv)
{
	if (hv->route_lock_ready) {
		pthread_mutex_destroy(&hv->route_lock);
		hv->route_lock_ready = false;
	}
	if (hv->vm_fd >= 0)
		close(hv->vm_fd);
	if (hv->sys_fd >= 0)
		close(hv->sys_fd);
	hv->vm_fd = hv->sys_fd = -1;
}

bool hv_has_cap(struct hv *hv, long cap)
{
	return ioctl(hv->vm_fd >= 0 ? hv->vm_fd : hv->sys_fd, KVM_CHECK_EXTENSION, cap) > 0;
}

static int commit_routes(struct hv *hv);

int hv_create_irqchip(struct hv *hv, uint64_t tss_addr, uint64_t identity_map_addr)
{
	struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
	uint64_t idmap = identity_map_addr;

	if (ioctl(hv->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)tss_addr) < 0)
		return -errno;
	if (hv_has_cap(hv, KVM_CAP_SET_IDENTITY_MAP_ADDR) &&
	    ioctl(hv->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
		return -errno;
	if (ioctl(hv->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return -errno;
	if (ioctl(hv->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return -errno;
	/* Our table from the start: KVM's default routes GSI 0 to IOAPIC pin 0. */
	return commit_routes(hv);
}

int hv_set_memory(struct hv *hv, uint32_t slot, uint64_t gpa, uint64_t size, void *host)
{
	struct kvm_userspace_memory_region r = {
	    .slot = slot,
	    .guest_phys_addr = gpa,
	    .memory_size = size,
	    .userspace_addr = (uint64_t)(uintptr_t)host,
	};

	return ioctl(hv->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0 ? -errno : 0;
}

int hv_irq_line(struct hv *hv, uint32_t irq, bool level)
{
	struct kvm_irq_level l = {.irq = irq, .level = level};

	return ioctl(hv->vm_fd, KVM_IRQ_LINE, &l) < 0 ? -errno : 0;
}

struct kvm_cpuid2 *hv_supported_cpuid(struct hv *hv)
{
	/* 256 covers today's CPUs in one call; each E2BIG retry costs about a millisecond. */
	for (unsigned n = 256; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			return NULL;
		c->nent = n;
		if (ioctl(hv->sys_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
			return c;
		free(c);
		if (errno != E2BIG)
			return NULL;
	}
	errno = E2BIG;
	return NULL;
}

int hv_create_vcpu(struct hv *hv, unsigned id, struct kvm_run **run)
{
	int fd = ioctl(hv->vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
	void *p;

	if (fd < 0)
		return -errno;
	p = mmap(NULL, (size_t)hv->vcpu_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		int e = errno;
		close(fd);
		return -e;
	}
	*run = p;
	return fd;
}

/* --- interrupt routing --- */

int hv_msi_route_alloc(struct hv *hv)
{
	int gsi = -ENOSPC;

	pthread_mutex_lock(&hv->route_lock);
	for (int i = 0; i < HV_MAX_MSI; i++) {
		if (!hv->msi[i].used) {
			hv->msi[i] = (struct hv_msi_route){.used = true};
			gsi = HV_IOAPIC_PINS + i;
			break;
		}
	}
	pthread_mutex_unlock(&hv->route_lock);
	return gsi;
}

/* KVM_SET_GSI_ROUTING replaces the whole table: KVM's defaults first, then our MSIs. */
static int commit_routes(struct hv *hv)
{
	size_t max = 16 + HV_IOAPIC_PINS + HV_MAX_MSI;
	struct kvm_irq_routing *t =
	    calloc(1, sizeof(*t) + max * sizeof(struct kvm_irq_routing_entry));
	unsigned n = 0;
	int r;

	if (!t)
		return -ENOMEM;
	for (unsigned pin = 0; pin < HV_IOAPIC_PINS; pin++) {
		/* As QEMU does: the PIT raises GSI 0, which reaches IOAPIC pin 2 (the MADT's
		 * and MP table's IRQ0 -> pin 2 override). */
		t->entries[n++] = (struct kvm_irq_routing_entry){
		    .gsi = pin,
		    .type = KVM_IRQ_ROUTING_IRQCHIP,
		    .u.irqchip = {.irqchip = KVM_IRQCHIP_IOAPIC, .pin = pin == 0 ? 2 : pin}};
		if (pin < 16)
			t->entries[n++] = (struct kvm_irq_routing_entry){
			    .gsi = pin,
			    .type = KVM_IRQ_ROUTING_IRQCHIP,
			    .u.irqchip = {.irqchip = pin < 8 ? KVM_IRQCHIP_PIC_MASTER
			                                     : KVM_IRQCHIP_PIC_SLAVE,
			                  .pin = pin & 7}};
	}
	for (unsigned i = 0; i < HV_MAX_MSI; i++) {
		struct hv_msi_route *m = &hv->msi[i];
		if (!m->used || !m->valid)
			continue;
		t->entries[n++] = (struct kvm_irq_routing_entry){
		    .gsi = HV_IOAPIC_PINS + i,
		    .type = KVM_IRQ_ROUTING_MSI,
		    .u.msi = {.address_lo = (uint32_t)m->addr,
		              .address_hi = (uint32_t)(m->addr >> 32),
		              .data = m->data}};
	}
	t->nr = n;
	r = ioctl(hv->vm_fd, KVM_SET_GSI_ROUTING, t) < 0 ? -errno : 0;
	free(t);
	return r;
}

void hv_msi_route_free(struct hv *hv, int gsi)
{
	unsigned i = (unsigned)(gsi - HV_IOAPIC_PINS);
	bool was_valid;

	if (gsi < HV_IOAPIC_PINS || i >= HV_MAX_MSI)
		return;
	pthread_mutex_lock(&hv->route_lock);
	was_valid = hv->msi[i].valid;
	hv->msi[i] = (struct hv_msi_route){0};
	if (was_valid)
		commit_routes(hv);
	pthread_mutex_unlock(&hv->route_lock);
}

int hv_msi_route_set(struct hv *hv, int gsi, uint64_t addr, uint32_t data, bool valid)
{
	unsigned i = (unsigned)(gsi - HV_IOAPIC_PINS);
	struct hv_msi_route *m;
	int r = 0;

	if (gsi < HV_IOAPIC_PINS || i >= HV_MAX_MSI)
		return -EINVAL;
	pthread_mutex_lock(&hv->route_lock);
	m = &hv->msi[i];
	if (m->valid != valid || (valid && (m->addr != addr || m->data != data))) {
		m->addr = addr;
		m->data = data;
		m->valid = valid;
		r = commit_routes(hv);
	}
	pthread_mutex_unlock(&hv->route_lock);
	return r;
}

int hv_signal_msi(struct hv *hv, uint64_t addr, uint32_t data)
{
	struct kvm_msi msi = {
	    .address_lo = (uint32_t)addr, .address_hi = (uint32_t)(addr >> 32), .data = data};

	return ioctl(hv->vm_fd, KVM_SIGNAL_MSI, &msi) < 0 ? -errno : 0;
}

int hv_irqfd(struct hv *hv, int fd, int gsi, bool assign)
{
	struct kvm_irqfd req = {.fd = (uint32_t)fd,
	                        .gsi = (uint32_t)gsi,
	                        .flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN};

	return ioctl(hv->vm_fd, KVM_IRQFD, &req) < 0 ? -errno : 0;
}

int hv_ioeventfd(struct hv *hv, int fd, uint64_t addr, unsigned len, bool pio, bool assign)
{
	struct kvm_ioeventfd req = {.addr = addr,
	                            .len = len,
	                            .fd = fd,
	                            .flags = (pio ? KVM_IOEVENTFD_FLAG_PIO : 0) |
	                                     (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN)};

	return ioctl(hv->vm_fd, KVM_IOEVENTFD, &req) < 0 ? -errno : 0;
}
