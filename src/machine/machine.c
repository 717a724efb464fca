/* machine.c: builds the VM in one readable order and tears it down; exit requests. */
#include "machine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "acpi.h"
#include "cpuid.h"
#include "log.h"
#include "mptable.h"
#include "serial8250.h"
#include "util.h"
#include "virtio_blk.h"
#include "virtio_console.h"
#include "virtio_net.h"
#include "virtio_rng.h"
#include "vcpu.h"
#include "vcpu_state.h"
#include "x86_boot.h"

#define COM1_PORT   0x3f8
#define COM1_IRQ    4
#define PM_PORT     0x600
#define SCI_IRQ     9
#define IOAPIC_ADDR 0xfec00000u
#define LAPIC_ADDR  0xfee00000u

/* PCI memory windows: 32-bit BARs in the hole below the IOAPIC, 64-bit ones above RAM. */
#define PCI_MMIO32_BASE 0xc0000000ull
#define PCI_MMIO32_END  0xfc000000ull
#define PCI_MMIO64_SIZE (64 * GiB)

/* --- wiring of the chips to this machine --- */

static void com1_set_irq(void *opaque, bool level)
{
	struct machine *m = opaque;

	hv_irq_line(&m->hv, COM1_IRQ, level);
}

static void com1_tx(void *opaque, const uint8_t *buf, size_t len)
{
	struct machine *m = opaque;

	if (m->host.console_out)
		m->host.console_out(m->host.opaque, buf, len);
}

static void com1_read(struct io_region *r, uint64_t off, void *data, unsigned len)
{
	struct machine *m = container_of(r, struct machine, com1_io);

	memset(data, 0, len);
	*(uint8_t *)data = serial8250_read(m->com1, (unsigned)off);
}

static void com1_write(struct io_region *r, uint64_t off, const void *data, unsigned len)
{
	struct machine *m = container_of(r, struct machine, com1_io);

	(void)len;
	serial8250_write(m->com1, (unsigned)off, *(const uint8_t *)data);
}

static const struct io_region_ops com1_ops = {.read = com1_read, .write = com1_write};

static void sink_read(struct io_region *r, uint64_t off, void *data, unsigned len)
{
	(void)r;
	(void)off;
	memset(data, 0xff, len);
}

static void sink_write(struct io_region *r, uint64_t off, const void *data, unsigned len)
{
	(void)r;
	(void)off;
	(void)data;
	(void)len;
}

/* Ports Linux writes to for delays and POST codes: accepted silently. */
static const struct io_region_ops sink_ops = {.read = sink_read, .write = sink_write};

static void guest_poweroff(void *opaque)
{
	machine_request_exit(opaque, MACHINE_POWEROFF);
}

static void guest_reset(void *opaque)
{
	machine_request_exit(opaque, MACHINE_RESET);
}

static void acpi_sci(void *opaque, bool level)
{
	struct machine *m = opaque;
	int r = hv_irq_line(&m->hv, SCI_IRQ, level);

	if (r < 0)
		log_warn("acpi: cannot set the SCI (IRQ %d): %s", SCI_IRQ, strerror(-r));
}

void machine_powerdown(struct machine *m)
{
	acpi_pm_power_button(&m->pm);
}

/* --- creation --- */

static uint64_t host_memory_limit(void)
{
	struct sysinfo si;

	if (sysinfo(&si) < 0)
		return 0;
	return ((uint64_t)si.totalram + si.totalswap) * si.mem_unit;
}

static unsigned guest_phys_bits(struct kvm_cpuid2 *c)
{
	struct kvm_cpuid_entry2 *e = cpuid_find(c, 0x80000008, 0);

	return e ? (e->eax & 0xff) : 36;
}

static int add_region(struct io_bus *bus, struct io_region *r, char *err, size_t errlen)
{
	int ret = io_bus_add(bus, r);

	if (ret < 0)
		snprintf(err, errlen, "internal: %s 0x%llx for %s: %s", bus->name,
		         (unsigned long long)r->base, r->name, strerror(-ret));
	return ret;
}

static int create_devices(struct machine *m, char *err, size_t errlen)
{
	struct serial8250_callbacks scb = {.set_irq = com1_set_irq, .tx = com1_tx, .opaque = m};
	struct i8042_callbacks kcb = {.reset = guest_reset, .opaque = m};
	struct acpi_pm_callbacks pcb = {
	    .poweroff = guest_poweroff, .reset = guest_reset, .sci = acpi_sci, .opaque = m};
	int r;

	m->com1 = serial8250_create(&scb);
	if (!m->com1) {
		snprintf(err, errlen, "serial port: out of memory");
		return -ENOMEM;
	}
	m->com1_io =
	    (struct io_region){.base = COM1_PORT, .len = 8, .name = "com1", .ops = &com1_ops};
	cmos_rtc_init(&m->rtc);
	i8042_init(&m->kbd, &kcb);
	r = acpi_pm_init(&m->pm, PM_PORT, &pcb);
	if (r < 0) {
		snprintf(err, errlen, "ACPI PM block: %s", strerror(-r));
		return r;
	}
	m->port_sink[0] =
	    (struct io_region){.base = 0x80, .len = 1, .name = "post", .ops = &sink_ops};
	m->port_sink[1] =
	    (struct io_region){.base = 0xed, .len = 1, .name = "delay", .ops = &sink_ops};

	if ((r = add_region(&m->pio, &m->com1_io, err, errlen)) < 0 ||
	    (r = add_region(&m->pio, &m->rtc.io, err, errlen)) < 0 ||
	    (r = add_region(&m->pio, &m->kbd.data_io, err, errlen)) < 0 ||
	    (r = add_region(&m->pio, &m->kbd.cmd_io, err, errlen)) < 0 ||
	    (r = add_region(&m->pio, &m->pm.io, err, errlen)) < 0 ||
	    (r = add_region(&m->pio, &m->port_sink[0], err, errlen)) < 0 ||
	    (r = add_region(&m->pio, &m->port_sink[1], err, errlen)) < 0)
		return r;
	return 0;
}

/* The 64-bit window starts at the first GiB boundary above RAM and stays inside what the
 * guest can address; none (64-bit BARs then go below 4 GiB) if there is no room. */
static void pci_windows(struct machine *m, uint64_t *base64, uint64_t *len64)
{
	uint64_t top = GM_4G, limit = 1ull << guest_phys_bits(m->supported_cpuid);

	for (unsigned i = 0; i < m->mem.nregions; i++)
		top = MAX(top, m->mem.regions[i].gpa + m->mem.regions[i].size);
	*base64 = ALIGN_UP(top, GiB);
	*len64 = *base64 < limit ? MIN(PCI_MMIO64_SIZE, limit - *base64) : 0;
}

static int create_pci(struct machine *m, char *err, size_t errlen)
{
	const struct vm_config *cfg = m->cfg;
	uint64_t base64, len64;
	int r;

	pci_windows(m, &base64, &len64);
	r = pci_bus_init(&m->pci, &m->hv, &m->pio, &m->mmio, PCI_MMIO32_BASE,
	                 PCI_MMIO32_END - PCI_MMIO32_BASE, base64, len64);
	if (r < 0) {
		snprintf(err, errlen, "internal: PCI configuration ports: %s", strerror(-r));
		return r;
	}
	m->pci_ready = true;
	for (unsigned i = 0; i < cfg->ndisks; i++) {
		m->blk[i] = calloc(1, sizeof(*m->blk[i]));
		if (!m->blk[i])
			return -ENOMEM;
		r = virtio_blk_create(m->blk[i], i, &cfg->disks[i], &m->hv, &m->mem, &m->pci, err,
		                      errlen);
		if (r < 0) {
			free(m->blk[i]);
			m->blk[i] = NULL;
			return r;
		}
	}
	for (unsigned i = 0; i < cfg->nnets; i++) {
		m->net[i] = calloc(1, sizeof(*m->net[i]));
		if (!m->net[i])
			return -ENOMEM;
		r = virtio_net_create(m->net[i], i, &cfg->nets[i], &m->hv, &m->mem, &m->pci, err,
		                      errlen);
		if (r < 0) {
			free(m->net[i]);
			m->net[i] = NULL;
			return r;
		}
	}
	if (cfg->vconsole) {
		m->vcon = calloc(1, sizeof(*m->vcon));
		if (!m->vcon)
			return -ENOMEM;
		r = virtio_console_create(m->vcon, cfg->vconsole_in, cfg->vconsole_out, &m->hv,
		                          &m->mem, &m->pci, err, errlen);
		if (r < 0) {
			free(m->vcon);
			m->vcon = NULL;
			return r;
		}
	}
	if (cfg->rng) {
		m->rng = calloc(1, sizeof(*m->rng));
		if (!m->rng)
			return -ENOMEM;
		r = virtio_rng_create(m->rng, &m->hv, &m->mem, &m->pci, err, errlen);
		if (r < 0) {
			free(m->rng);
			m->rng = NULL;
			return r;
		}
	}
	return 0;
}

static void device_error(void *opaque, const char *device, const char *reason, const char *msg)
{
	struct machine *m = opaque;

	if (m->host.device_error)
		m->host.device_error(m->host.event_opaque, device, reason, msg);
}

/* Every virtio device reports failures to the machine's host. */
static void hook_device_errors(struct machine *m)
{
	struct virtio_dev *v[VM_MAX_DISKS + VM_MAX_NETS + 2];
	unsigned n = 0;

	for (unsigned i = 0; i < VM_MAX_DISKS; i++)
		if (m->blk[i])
			v[n++] = &m->blk[i]->vdev;
	for (unsigned i = 0; i < VM_MAX_NETS; i++)
		if (m->net[i])
			v[n++] = &m->net[i]->vdev;
	if (m->vcon)
		v[n++] = &m->vcon->vdev;
	if (m->rng)
		v[n++] = &m->rng->vdev;
	for (unsigned i = 0; i < n; i++) {
		v[i]->on_error_opaque = m;
		v[i]->on_error = device_error;
	}
}

static void destroy_pci(struct machine *m)
{
	for (unsigned i = 0; i < VM_MAX_DISKS; i++) {
		if (m->blk[i]) {
			virtio_blk_destroy(m->blk[i]);
			free(m->blk[i]);
			m->blk[i] = NULL;
		}
	}
	for (unsigned i = 0; i < VM_MAX_NETS; i++) {
		if (m->net[i]) {
			virtio_net_destroy(m->net[i]);
			free(m->net[i]);
			m->net[i] = NULL;
		}
	}
	if (m->vcon) {
		virtio_console_destroy(m->vcon);
		free(m->vcon);
		m->vcon = NULL;
	}
	if (m->rng) {
		virtio_rng_destroy(m->rng);
		free(m->rng);
		m->rng = NULL;
	}
	if (m->pci_ready) {
		pci_bus_destroy(&m->pci);
		m->pci_ready = false;
	}
}

/* ACPI tables for kernels that use ACPI, an MP table for those that do not. */
static int create_firmware_tables(struct machine *m, uint64_t *rsdp, char *err, size_t errlen)
{
	struct acpi_config ac = {
	    .ncpus = m->ncpus,
	    .ioapic_id = (uint8_t)m->ncpus,
	    .ioapic_addr = IOAPIC_ADDR,
	    .lapic_addr = LAPIC_ADDR,
	    .pm_base = PM_PORT,
	    .sci_irq = SCI_IRQ,
	    .pci_host = true,
	    .pci_intx_gsi_base = PCI_INTX_GSI_BASE,
	    .pci_mmio32_base = (uint32_t)m->pci.mmio32_base,
	    .pci_mmio32_len = (uint32_t)m->pci.mmio32_len,
	    .pci_mmio64_base = m->pci.mmio64_base,
	    .pci_mmio64_len = m->pci.mmio64_len,
	};
	struct mptable_config mc = {
	    .ncpus = m->ncpus,
	    .ioapic_id = (uint8_t)m->ncpus,
	    .ioapic_addr = IOAPIC_ADDR,
	    .lapic_addr = LAPIC_ADDR,
	    .pci_intx_gsi_base = PCI_INTX_GSI_BASE,
	};
	uint64_t acpi_len = GM_MPTABLE - GM_ACPI, mp_len = GM_BIOS_END - GM_MPTABLE;
	int r;

	r = acpi_build(&ac, gm_ptr(&m->mem, GM_ACPI, acpi_len), acpi_len, GM_ACPI);
	if (r < 0) {
		snprintf(err, errlen, "ACPI tables for %u vCPUs do not fit in %llu bytes", m->ncpus,
		         (unsigned long long)acpi_len);
		return r;
	}
	*rsdp = GM_ACPI;
	r = mptable_build(&mc, gm_ptr(&m->mem, GM_MPTABLE, mp_len), mp_len, GM_MPTABLE);
	if (r < 0) {
		snprintf(err, errlen, "MP table for %u vCPUs does not fit in %llu bytes", m->ncpus,
		         (unsigned long long)mp_len);
		return r;
	}
	return 0;
}

/* Creates the vCPUs with their CPUID: shaped from the CPU model, or as saved (`from`). */
static int create_vcpus(struct machine *m, const struct snap_reader *from, char *err, size_t errlen)
{
	size_t cpuid_size =
	    sizeof(struct kvm_cpuid2) + m->supported_cpuid->nent * sizeof(struct kvm_cpuid_entry2);
	int r = 0;

	m->vcpus = calloc(m->ncpus, sizeof(*m->vcpus));
	if (!m->vcpus)
		return -ENOMEM;
	for (unsigned i = 0; i < m->ncpus; i++) {
		struct vcpu *v = &m->vcpus[i];
		v->m = m;
		v->id = i;
		v->fd = -1;
	}
	for (unsigned i = 0; i < m->ncpus; i++) {
		struct vcpu *v = &m->vcpus[i];
		r = hv_create_vcpu(&m->hv, i, &v->run);
		if (r < 0) {
			snprintf(err, errlen, "/dev/kvm: cannot create vCPU %u of %u: %s", i,
			         m->ncpus, strerror(-r));
			break;
		}
		v->fd = r;
		if (from) {
			v->cpuid = vcpu_state_cpuid(from, i, err, errlen);
			if (!v->cpuid) {
				r = -EINVAL;
				break;
			}
		} else {
			v->cpuid = malloc(cpuid_size);
			if (!v->cpuid) {
				r = -ENOMEM;
				break;
			}
			memcpy(v->cpuid, m->supported_cpuid, cpuid_size);
			cpuid_shape(v->cpuid, &m->cfg->cpu, i, m->ncpus);
			if (m->cfg->cpu.base == CPU_MODEL_HOST) {
				char brand[48];
				cpuid_host_brand(brand);
				cpuid_fill_brand(v->cpuid, brand);
			}
		}
		if (ioctl(v->fd, KVM_SET_CPUID2, v->cpuid) < 0) {
			r = -errno;
			if (from)
				snprintf(err, errlen,
				         "vCPU %u: this host's KVM refused the snapshot's CPU "
				         "model: %s — "
				         "restore on a host with the same CPU features",
				         i, strerror(errno));
			else
				snprintf(err, errlen, "vCPU %u: KVM refused the CPU model '%s': %s",
				         i, m->cfg->cpu_spec, strerror(errno));
			break;
		}
		if (from) {
			r = vcpu_state_load(v->fd, i, from, err, errlen);
			if (r < 0)
				break;
			continue;
		}
		r = x86_vcpu_init(v->fd);
		if (r == 0 && i == 0)
			r = x86_bsp_entry(v->fd, &m->boot);
		if (r < 0) {
			snprintf(err, errlen, "vCPU %u: cannot set its initial state: %s", i,
			         strerror(-r));
			break;
		}
	}
	return r < 0 ? r : 0;
}

/* Builds the machine: booting `boot`, or restoring the snapshot `from` (in `dir`). */
static int machine_build(struct machine *m, const struct vm_config *cfg,
                         const struct boot_config *boot, const struct snap_reader *from,
                         const char *dir, const struct machine_host *host, char *err, size_t errlen)
{
	struct boot_config bc = boot ? *boot : (struct boot_config){0};
	int r;

	memset(m, 0, sizeof(*m));
	m->cfg = cfg;
	m->host = *host;
	m->ncpus = cfg->cpus;
	m->event_fd = -1;
	m->hv.sys_fd = m->hv.vm_fd = -1;
	m->mem.fd = -1;
	pthread_mutex_init(&m->exit_lock, NULL);
	pthread_mutex_init(&m->pause_lock, NULL);
	pthread_cond_init(&m->pause_cond, NULL);
	io_bus_init(&m->pio, "port");
	io_bus_init(&m->mmio, "MMIO");

	m->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->event_fd < 0) {
		r = -errno;
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		goto fail;
	}
	r = hv_open(&m->hv, cfg->kvm_device, err, errlen);
	if (r < 0)
		goto fail;
	if (m->ncpus > (unsigned)m->hv.max_vcpus) {
		snprintf(err, errlen, "--cpus %u: this host's KVM allows at most %d vCPUs per VM",
		         m->ncpus, m->hv.max_vcpus);
		r = -EINVAL;
		goto fail;
	}
	m->supported_cpuid = hv_supported_cpuid(&m->hv);
	if (!m->supported_cpuid) {
		r = -errno;
		snprintf(err, errlen, "%s: KVM_GET_SUPPORTED_CPUID: %s", cfg->kvm_device,
		         strerror(errno));
		goto fail;
	}
	r = cpu_model_check(&cfg->cpu, m->supported_cpuid, err, errlen);
	if (r < 0)
		goto fail;

	if (from) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", dir, SNAP_MEM_NAME);
		r = guest_mem_open_snapshot(&m->mem, cfg->memory, path, host_memory_limit(),
		                            guest_phys_bits(m->supported_cpuid), err, errlen);
	} else {
		r = guest_mem_create(&m->mem, cfg->memory, host_memory_limit(),
		                     guest_phys_bits(m->supported_cpuid), err, errlen);
	}
	if (r < 0)
		goto fail;
	for (unsigned i = 0; i < m->mem.nregions; i++) {
		struct gm_region *g = &m->mem.regions[i];
		r = hv_set_memory(&m->hv, i, g->gpa, g->size, m->mem.host + g->offset);
		if (r < 0) {
			char a[32];
			snprintf(err, errlen, "KVM refused %s of guest RAM at 0x%llx: %s",
			         format_size(g->size, a, sizeof(a)), (unsigned long long)g->gpa,
			         strerror(-r));
			goto fail;
		}
	}
	r = hv_create_irqchip(&m->hv, GM_KVM_TSS, GM_KVM_IDENTITY_MAP);
	if (r < 0) {
		snprintf(err, errlen, "%s: cannot create the in-kernel interrupt controllers: %s",
		         cfg->kvm_device, strerror(-r));
		goto fail;
	}
	r = create_devices(m, err, errlen);
	if (r < 0)
		goto fail;
	r = create_pci(m, err, errlen);
	if (r < 0)
		goto fail;
	hook_device_errors(m);
	if (!from) {
		/* Firmware tables and the kernel go into RAM; a snapshot's RAM has them. */
		r = create_firmware_tables(m, &bc.rsdp_gpa, err, errlen);
		if (r < 0)
			goto fail;
		r = boot_load(&m->mem, &bc, &m->boot, err, errlen);
		if (r < 0)
			goto fail;
		r = x86_boot_tables(&m->mem);
		if (r < 0) {
			snprintf(err, errlen, "cannot write boot page tables: %s", strerror(-r));
			goto fail;
		}
	}
	r = create_vcpus(m, from, err, errlen);
	if (r < 0)
		goto fail;
	if (from) {
		r = machine_state_load(m, from, err, errlen);
		if (r < 0)
			goto fail;
		log_info("restored from %s: %u vCPU(s), %llu MiB", dir, m->ncpus,
		         (unsigned long long)(cfg->memory >> 20));
		return 0;
	}
	log_info("%s: %s loaded at 0x%llx, entry 0x%llx; %u vCPU(s), %llu MiB", cfg->kernel,
	         m->boot.format, (unsigned long long)m->boot.kernel_lo,
	         (unsigned long long)m->boot.entry, m->ncpus,
	         (unsigned long long)(cfg->memory >> 20));
	return 0;
fail:
	machine_destroy(m);
	return r;
}

int machine_create(struct machine *m, const struct vm_config *cfg, const struct boot_config *boot,
                   const struct machine_host *host, char *err, size_t errlen)
{
	return machine_build(m, cfg, boot, NULL, NULL, host, err, errlen);
}

int machine_restore(struct machine *m, const struct vm_config *cfg, const struct snap_reader *r,
                    const char *dir, const struct machine_host *host, char *err, size_t errlen)
{
	return machine_build(m, cfg, NULL, r, dir, host, err, errlen);
}

int machine_start(struct machine *m)
{
	for (unsigned i = 0; i < m->ncpus; i++) {
		struct vcpu *v = &m->vcpus[i];
		int r = pthread_create(&v->thread, NULL, vcpu_thread, v);
		if (r) {
			log_err("cannot start the thread of vCPU %u: %s", i, strerror(r));
			machine_request_exit(m, MACHINE_FAILED);
			return -r;
		}
		v->started = true;
	}
	return 0;
}

void machine_request_exit(struct machine *m, enum machine_exit why)
{
	uint64_t one = 1;

	pthread_mutex_lock(&m->exit_lock);
	if (m->exit_reason == MACHINE_RUNNING)
		m->exit_reason = why;
	pthread_mutex_unlock(&m->exit_lock);
	atomic_store(&m->stopping, true);
	if (write(m->event_fd, &one, sizeof(one)) < 0) {
		/* the counter is already non-zero: the main loop will wake anyway */
	}
	/* Parked vCPUs and a waiting machine_pause() must see `stopping`. */
	pthread_mutex_lock(&m->pause_lock);
	pthread_cond_broadcast(&m->pause_cond);
	pthread_mutex_unlock(&m->pause_lock);
}

void machine_park(struct machine *m)
{
	pthread_mutex_lock(&m->pause_lock);
	m->parked++;
	pthread_cond_broadcast(&m->pause_cond);
	while (atomic_load(&m->pause_wanted) && !atomic_load(&m->stopping))
		pthread_cond_wait(&m->pause_cond, &m->pause_lock);
	m->parked--;
	pthread_mutex_unlock(&m->pause_lock);
}

static unsigned running_vcpus(const struct machine *m)
{
	unsigned n = 0;

	for (unsigned i = 0; m->vcpus && i < m->ncpus; i++)
		n += m->vcpus[i].started;
	return n;
}

int machine_pause(struct machine *m)
{
	int ret = 0;

	pthread_mutex_lock(&m->pause_lock);
	if (m->paused)
		goto out;
	atomic_store(&m->pause_wanted, true);
	for (unsigned i = 0; m->vcpus && i < m->ncpus; i++)
		vcpu_kick(&m->vcpus[i]);
	while (m->parked < running_vcpus(m) && !atomic_load(&m->stopping))
		pthread_cond_wait(&m->pause_cond, &m->pause_lock);
	if (atomic_load(&m->stopping)) {
		atomic_store(&m->pause_wanted, false);
		ret = -ESHUTDOWN;
		goto out;
	}
	/* kvmclock keeps counting host time unless told otherwise (QEMU does the same). */
	memset(&m->paused_clock, 0, sizeof(m->paused_clock));
	if (ioctl(m->hv.vm_fd, KVM_GET_CLOCK, &m->paused_clock) < 0)
		log_warn("pause: KVM_GET_CLOCK: %s (guest time will jump at resume)",
		         strerror(errno));
	m->paused = true;
out:
	pthread_mutex_unlock(&m->pause_lock);
	return ret;
}

int machine_resume(struct machine *m)
{
	pthread_mutex_lock(&m->pause_lock);
	if (m->paused) {
		struct kvm_clock_data c = {.clock = m->paused_clock.clock};

		if (c.clock && ioctl(m->hv.vm_fd, KVM_SET_CLOCK, &c) < 0)
			log_warn("resume: KVM_SET_CLOCK: %s", strerror(errno));
		m->paused = false;
	}
	atomic_store(&m->pause_wanted, false);
	pthread_cond_broadcast(&m->pause_cond);
	pthread_mutex_unlock(&m->pause_lock);
	return 0;
}

bool machine_paused(struct machine *m)
{
	bool p;

	pthread_mutex_lock(&m->pause_lock);
	p = m->paused;
	pthread_mutex_unlock(&m->pause_lock);
	return p;
}

enum machine_exit machine_exit_reason(struct machine *m)
{
	enum machine_exit why;

	pthread_mutex_lock(&m->exit_lock);
	why = m->exit_reason;
	pthread_mutex_unlock(&m->exit_lock);
	return why;
}

enum machine_exit machine_stop(struct machine *m)
{
	atomic_store(&m->stopping, true);
	for (unsigned i = 0; m->vcpus && i < m->ncpus; i++)
		vcpu_kick(&m->vcpus[i]);
	for (unsigned i = 0; m->vcpus && i < m->ncpus; i++) {
		if (m->vcpus[i].started) {
			pthread_join(m->vcpus[i].thread, NULL);
			m->vcpus[i].started = false;
		}
	}
	return machine_exit_reason(m);
}

void machine_destroy(struct machine *m)
{
	machine_stop(m);
	for (unsigned i = 0; m->vcpus && i < m->ncpus; i++) {
		struct vcpu *v = &m->vcpus[i];
		if (v->run)
			munmap(v->run, (size_t)m->hv.vcpu_mmap_size);
		if (v->fd >= 0)
			close(v->fd);
		free(v->cpuid);
	}
	free(m->vcpus);
	m->vcpus = NULL;
	destroy_pci(m);
	if (m->com1) {
		serial8250_destroy(m->com1);
		m->com1 = NULL;
		cmos_rtc_destroy(&m->rtc);
		i8042_destroy(&m->kbd);
		acpi_pm_destroy(&m->pm);
	}
	hv_close(&m->hv);
	guest_mem_destroy(&m->mem);
	free(m->supported_cpuid);
	m->supported_cpuid = NULL;
	io_bus_destroy(&m->pio);
	io_bus_destroy(&m->mmio);
	if (m->event_fd >= 0)
		close(m->event_fd);
	m->event_fd = -1;
	pthread_mutex_destroy(&m->exit_lock);
	pthread_mutex_destroy(&m->pause_lock);
	pthread_cond_destroy(&m->pause_cond);
}

size_t machine_console_input(struct machine *m, const uint8_t *buf, size_t len)
{
	return serial8250_receive(m->com1, buf, len);
}
