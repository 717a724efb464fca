/* machine_snapshot.c: saving a paused machine to a snapshot directory, loading it back. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"
#include "machine.h"
#include "serial8250.h"
#include "util.h"
#include "vcpu_state.h"
#include "virtio_blk.h"
#include "virtio_console.h"
#include "virtio_net.h"
#include "virtio_rng.h"

/*
 * VM-wide sections (besides vcpu.* from vcpu_state.c and each device's own):
 *   vm.info      struct vm_info below: checked against the configuration at restore
 *   vm.irqchip   struct kvm_irqchip, instance 0 = master PIC, 1 = slave PIC, 2 = IOAPIC
 *   vm.pit       struct kvm_pit_state2
 *   vm.clock     struct kvm_clock_data: kvmclock when the vCPUs stopped
 */

struct vm_info {
	uint32_t ncpus;
	uint32_t ndisks;
	uint64_t memory;
	uint32_t nnets;
	uint8_t vconsole, rng, pad[2];
};
_Static_assert(sizeof(struct vm_info) == 24, "vm.info layout");

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Each virtio device, with its save/load and transport (for quiescing). */
struct vdev_ref {
	const char *kind;
	uint32_t inst;
	struct virtio_dev *vdev;
	int (*save)(void *dev, struct snap_writer *w, uint32_t inst);
	int (*load)(void *dev, const struct snap_reader *r, uint32_t inst, char *err,
	            size_t errlen);
	void *dev;
};

static int save_blk(void *d, struct snap_writer *w, uint32_t i)
{
	return virtio_blk_save(d, w, i);
}
static int load_blk(void *d, const struct snap_reader *r, uint32_t i, char *e, size_t n)
{
	return virtio_blk_load(d, r, i, e, n);
}
static int save_net(void *d, struct snap_writer *w, uint32_t i)
{
	return virtio_net_save(d, w, i);
}
static int load_net(void *d, const struct snap_reader *r, uint32_t i, char *e, size_t n)
{
	return virtio_net_load(d, r, i, e, n);
}
static int save_con(void *d, struct snap_writer *w, uint32_t i)
{
	return virtio_console_save(d, w, i);
}
static int load_con(void *d, const struct snap_reader *r, uint32_t i, char *e, size_t n)
{
	return virtio_console_load(d, r, i, e, n);
}
static int save_rng(void *d, struct snap_writer *w, uint32_t i)
{
	return virtio_rng_save(d, w, i);
}
static int load_rng(void *d, const struct snap_reader *r, uint32_t i, char *e, size_t n)
{
	return virtio_rng_load(d, r, i, e, n);
}

static unsigned list_vdevs(struct machine *m, struct vdev_ref *out)
{
	unsigned n = 0;

	for (unsigned i = 0; i < VM_MAX_DISKS; i++) {
		if (m->blk[i])
			out[n++] = (struct vdev_ref){"virtio-blk", i,        &m->blk[i]->vdev,
			                             save_blk,     load_blk, m->blk[i]};
	}
	for (unsigned i = 0; i < VM_MAX_NETS; i++) {
		if (m->net[i])
			out[n++] = (struct vdev_ref){"virtio-net", i,        &m->net[i]->vdev,
			                             save_net,     load_net, m->net[i]};
	}
	if (m->vcon)
		out[n++] = (struct vdev_ref){"virtio-console", 0,        &m->vcon->vdev,
		                             save_con,         load_con, m->vcon};
	if (m->rng)
		out[n++] =
		    (struct vdev_ref){"virtio-rng", 0, &m->rng->vdev, save_rng, load_rng, m->rng};
	return n;
}

#define MAX_VDEVS (VM_MAX_DISKS + VM_MAX_NETS + 2)

static void fill_info(const struct machine *m, struct vm_info *vi)
{
	*vi = (struct vm_info){
	    .ncpus = m->ncpus,
	    .ndisks = m->cfg->ndisks,
	    .memory = m->mem.size,
	    .nnets = m->cfg->nnets,
	    .vconsole = m->vcon != NULL,
	    .rng = m->rng != NULL,
	};
}

static int save_vm(struct machine *m, struct snap_writer *w, char *err, size_t errlen)
{
	struct kvm_irqchip chip;
	struct kvm_pit_state2 pit;
	struct vm_info vi;
	int r;

	fill_info(m, &vi);
	if ((r = snap_put(w, "vm.info", 0, &vi, sizeof(vi))) < 0)
		goto fail;
	for (uint32_t i = 0; i < 3; i++) {
		memset(&chip, 0, sizeof(chip));
		chip.chip_id = i;
		if (ioctl(m->hv.vm_fd, KVM_GET_IRQCHIP, &chip) < 0) {
			r = -errno;
			snprintf(err, errlen, "cannot read interrupt controller %u: %s", i,
			         strerror(errno));
			return r;
		}
		if ((r = snap_put(w, "vm.irqchip", i, &chip, sizeof(chip))) < 0)
			goto fail;
	}
	memset(&pit, 0, sizeof(pit));
	if (ioctl(m->hv.vm_fd, KVM_GET_PIT2, &pit) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot read the PIT: %s", strerror(errno));
		return r;
	}
	if ((r = snap_put(w, "vm.pit", 0, &pit, sizeof(pit))) < 0 ||
	    (r = snap_put(w, "vm.clock", 0, &m->paused_clock, sizeof(m->paused_clock))) < 0)
		goto fail;
	return 0;
fail:
	snprintf(err, errlen, "saving the machine: %s", strerror(-r));
	return r;
}

static int save_devices(struct machine *m, struct snap_writer *w, struct vdev_ref *v, unsigned nv,
                        char *err, size_t errlen)
{
	const char *what = "serial port";
	int r;

	if ((r = serial8250_save(m->com1, w, 0)) < 0)
		goto fail;
	what = "RTC";
	if ((r = cmos_rtc_save(&m->rtc, w, 0)) < 0)
		goto fail;
	what = "i8042";
	if ((r = i8042_save(&m->kbd, w, 0)) < 0)
		goto fail;
	what = "ACPI PM block";
	if ((r = acpi_pm_save(&m->pm, w, 0)) < 0)
		goto fail;
	what = "PCI host bridge";
	if ((r = pci_bus_save(&m->pci, w)) < 0)
		goto fail;
	for (unsigned i = 0; i < nv; i++) {
		what = v[i].vdev->name;
		if ((r = v[i].save(v[i].dev, w, v[i].inst)) < 0)
			goto fail;
	}
	return 0;
fail:
	snprintf(err, errlen, "cannot save the %s: %s", what, strerror(-r));
	return r;
}

int machine_save(struct machine *m, struct snap_writer *w, const char *dir,
                 struct machine_save_info *info, char *err, size_t errlen)
{
	struct vdev_ref v[MAX_VDEVS];
	unsigned nv = list_vdevs(m, v);
	char path[4096];
	double t0 = now();
	int r;

	memset(info, 0, sizeof(*info));
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err, errlen, "%s: cannot create the snapshot directory: %s", dir,
		         strerror(errno));
		return r;
	}
	if (snprintf(path, sizeof(path), "%s/%s", dir, SNAP_MEM_NAME) >= (int)sizeof(path)) {
		snprintf(err, errlen, "%s: path too long", dir);
		return -ENAMETOOLONG;
	}
	r = machine_pause(m);
	if (r < 0) {
		snprintf(err, errlen, "the VM is shutting down");
		return r;
	}
	/* Devices stop between requests: nothing in flight, disks flushed. */
	for (unsigned i = 0; i < nv; i++)
		virtio_pci_quiesce(v[i].vdev);
	for (unsigned i = 0; i < m->ncpus && r == 0; i++)
		r = vcpu_state_save(m->hv.sys_fd, m->vcpus[i].fd, i, m->vcpus[i].cpuid, w, err,
		                    errlen);
	if (r == 0)
		r = save_vm(m, w, err, errlen);
	if (r == 0)
		r = save_devices(m, w, v, nv, err, errlen);
	if (r == 0)
		r = guest_mem_save(&m->mem, path, &info->memory_bytes, err, errlen);
	for (unsigned i = 0; i < nv; i++)
		virtio_pci_unquiesce(v[i].vdev);
	info->seconds = now() - t0;
	return r;
}

static int load_vm(struct machine *m, const struct snap_reader *rd, char *err, size_t errlen)
{
	struct kvm_irqchip chip;
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
	struct vm_info vi, want;
	int r;

	if ((r = snap_get_exact(rd, "vm.info", 0, &vi, sizeof(vi), err, errlen)) < 0)
		return r;
	fill_info(m, &want);
	if (memcmp(&vi, &want, sizeof(vi)) != 0) {
		snprintf(err, errlen,
		         "%s: the saved machine (%u vCPUs, %llu MiB, %u disks, %u NICs) does not "
		         "match its configuration — the state file was edited or is not this "
		         "snapshot's",
		         snap_reader_name(rd), vi.ncpus, (unsigned long long)(vi.memory >> 20),
		         vi.ndisks, vi.nnets);
		return -EINVAL;
	}
	for (uint32_t i = 0; i < 3; i++) {
		if ((r = snap_get_exact(rd, "vm.irqchip", i, &chip, sizeof(chip), err, errlen)) < 0)
			return r;
		if (chip.chip_id != i || ioctl(m->hv.vm_fd, KVM_SET_IRQCHIP, &chip) < 0) {
			snprintf(err, errlen, "%s: KVM refused interrupt controller %u: %s",
			         snap_reader_name(rd), i,
			         chip.chip_id != i ? "wrong id" : strerror(errno));
			return -EINVAL;
		}
	}
	if ((r = snap_get_exact(rd, "vm.pit", 0, &pit, sizeof(pit), err, errlen)) < 0)
		return r;
	if (ioctl(m->hv.vm_fd, KVM_SET_PIT2, &pit) < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: KVM refused the PIT state: %s", snap_reader_name(rd),
		         strerror(errno));
		return r;
	}
	if ((r = snap_get_exact(rd, "vm.clock", 0, &clock, sizeof(clock), err, errlen)) < 0)
		return r;
	/* Only the clock value: flags and host timestamps describe the old host. */
	struct kvm_clock_data c = {.clock = clock.clock};
	if (ioctl(m->hv.vm_fd, KVM_SET_CLOCK, &c) < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: KVM refused the guest clock: %s", snap_reader_name(rd),
		         strerror(errno));
		return r;
	}
	return 0;
}

int machine_state_load(struct machine *m, const struct snap_reader *rd, char *err, size_t errlen)
{
	struct vdev_ref v[MAX_VDEVS];
	unsigned nv = list_vdevs(m, v);
	int r;

	if ((r = load_vm(m, rd, err, errlen)) < 0 ||
	    (r = serial8250_load(m->com1, rd, 0, err, errlen)) < 0 ||
	    (r = cmos_rtc_load(&m->rtc, rd, 0, err, errlen)) < 0 ||
	    (r = i8042_load(&m->kbd, rd, 0, err, errlen)) < 0 ||
	    (r = acpi_pm_load(&m->pm, rd, 0, err, errlen)) < 0 ||
	    (r = pci_bus_load(&m->pci, rd, err, errlen)) < 0)
		return r;
	for (unsigned i = 0; i < nv; i++) {
		if ((r = v[i].load(v[i].dev, rd, v[i].inst, err, errlen)) < 0)
			return r;
	}
	return 0;
}
