/* vcpu_state.h: a vCPU's architectural state to and from a snapshot. */
#ifndef VMSTACK_VCPU_STATE_H
#define VMSTACK_VCPU_STATE_H

#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>

#include "snapshot_file.h"

/*
 * Saves vCPU `id` (fd; sys_fd is /dev/kvm for the MSR list) — registers, FPU/AVX, MSRs,
 * LAPIC, pending events, MP state, debug registers and the CPUID it runs with. The vCPU
 * must be outside KVM_RUN. Returns 0 or -errno with a line in err.
 */
int vcpu_state_save(int sys_fd, int fd, uint32_t id, const struct kvm_cpuid2 *cpuid,
                    struct snap_writer *w, char *err, size_t errlen);

/* The CPUID saved for vCPU id (malloc'd; set it with KVM_SET_CPUID2 before loading), or
 * NULL with a line in err. */
struct kvm_cpuid2 *vcpu_state_cpuid(const struct snap_reader *r, uint32_t id, char *err,
                                    size_t errlen);

/* Loads everything vcpu_state_save() saved into a fresh vCPU with that CPUID set. */
int vcpu_state_load(int fd, uint32_t id, const struct snap_reader *r, char *err, size_t errlen);

#endif
