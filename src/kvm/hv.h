/* hv.h: thin wrappers over /dev/kvm: the system handle, the VM and its vCPUs. */
#ifndef VMSTACK_HV_H
#define VMSTACK_HV_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The KVM system and VM file descriptors. */
struct hv {
	int sys_fd;
	int vm_fd;
	int vcpu_mmap_size;
	int max_vcpus;
	int nr_memslots;
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

#endif
