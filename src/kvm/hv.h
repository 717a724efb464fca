/* hv.h: thin wrappers over /dev/kvm: the system handle, the VM and its vCPUs. */
#ifndef VMSTACK_HV_H
#define VMSTACK_HV_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* GSIs 0-23 are the in-kernel PIC/IOAPIC pins; MSI routes take the GSIs after them. */
#define HV_IOAPIC_PINS 24
#define HV_MAX_MSI     512

struct hv_msi_route {
	uint64_t addr;
	uint32_t data;
	bool used;  /* allocated to a device vector */
	bool valid; /* addr/data programmed: present in KVM's routing table */
};

/* The KVM system and VM file descriptors. */
struct hv {
	int sys_fd;
	int vm_fd;
	int vcpu_mmap_size;
	int max_vcpus;
	int nr_memslots;
	pthread_mutex_t route_lock;
	bool route_lock_ready;
	struct hv_msi_route msi[HV_MAX_MSI]; /* msi[i] is GSI HV_IOAPIC_PINS + i */
};

/*
 * Opens `dev` (normally "/dev/kvm"), checks API version 12 and the capabilities the
 * monitor relies on, creates the VM. On failure returns a negative errno and writes a
 * one-line explanation (with the likely fix) into err.
 */
int hv_open(struct hv *hv, const char *dev, char *err, size_t errlen);
void hv_close(struct hv *hv);

bool hv_has_cap(struct hv *hv, long cap);

/* In-kernel PIC+IOAPIC+LAPIC and PIT (with the dummy port-0x61 speaker), TSS and identity map. */
int hv_create_irqchip(struct hv *hv, uint64_t tss_addr, uint64_t identity_map_addr);

/* Maps host memory at guest-physical gpa as slot `slot`. */
int hv_set_memory(struct hv *hv, uint32_t slot, uint64_t gpa, uint64_t size, void *host);

/* Drives ISA/GSI interrupt line `irq` to `level`. */
int hv_irq_line(struct hv *hv, uint32_t irq, bool level);

/* KVM_GET_SUPPORTED_CPUID; returns a malloc'd struct (caller frees) or NULL with errno set. */
struct kvm_cpuid2 *hv_supported_cpuid(struct hv *hv);

/* Creates vCPU `id`; maps its kvm_run into *run. Returns the vCPU fd or -errno. */
int hv_create_vcpu(struct hv *hv, unsigned id, struct kvm_run **run);

/*
 * MSI through KVM's GSI routing: a device vector gets a GSI (hv_msi_route_alloc), the
 * guest's address/data for it are installed with hv_msi_route_set (the whole table, the
 * default PIC/IOAPIC routes included, goes to KVM_SET_GSI_ROUTING), and an irqfd bound to
 * that GSI lets an I/O thread interrupt the guest with one eventfd write.
 */
int hv_msi_route_alloc(struct hv *hv); /* a GSI, or -ENOSPC */
void hv_msi_route_free(struct hv *hv, int gsi);
/* valid=false removes the route (the vector is not programmed). Returns 0 or -errno. */
int hv_msi_route_set(struct hv *hv, int gsi, uint64_t addr, uint32_t data, bool valid);
/* KVM_SIGNAL_MSI: one interrupt without a route (slow path). */
int hv_signal_msi(struct hv *hv, uint64_t addr, uint32_t data);

/* Binds (assign) or unbinds eventfd `fd` to `gsi`: a write to fd raises that interrupt. */
int hv_irqfd(struct hv *hv, int fd, int gsi, bool assign);

/*
 * Binds eventfd `fd` to guest writes of `len` bytes (1, 2, 4, 8; 0 = any length) at
 * `addr` in MMIO (pio=false) or port space: KVM signals fd and resumes the vCPU at once,
 * without an exit to the monitor.
 */
int hv_ioeventfd(struct hv *hv, int fd, uint64_t addr, unsigned len, bool pio, bool assign);

#endif
