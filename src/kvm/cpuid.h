/* cpuid.h: the guest CPU model: --cpu parsing and shaping KVM's supported CPUID per vCPU. */
#ifndef VMSTACK_CPUID_H
#define VMSTACK_CPUID_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The CPUID feature words a model can mask (index into cpu_model.add/del). */
enum cpuid_word {
	CPUID_1_ECX,
	CPUID_1_EDX,
	CPUID_7_EBX,
	CPUID_7_ECX,
	CPUID_7_EDX,
	CPUID_80000001_ECX,
	CPUID_80000001_EDX,
	CPUID_KVM_FEATURES, /* leaf 0x40000001 EAX: KVM paravirtual features */
	CPUID_80000007_EDX, /* advanced power management: invariant TSC */
	CPUID_NWORDS
};

enum cpu_base_model { CPU_MODEL_HOST, CPU_MODEL_BASELINE };

/* What --cpu asked for: a base model plus features added and removed. */
struct cpu_model {
	enum cpu_base_model base;
	uint32_t add[CPUID_NWORDS];
	uint32_t del[CPUID_NWORDS];
};

/*
 * Parses "host", "baseline", "+feat,-feat", "host,-xsave" (feature names as in
 * /proc/cpuinfo). Returns 0, or -EINVAL with a one-line message in err.
 */
int cpu_model_parse(const char *spec, struct cpu_model *m, char *err, size_t errlen);

/* Writes the known feature names, space separated, into buf (for --cpu help). */
void cpu_model_list_features(char *buf, size_t len);

/*
 * Checks that every feature the model adds is offered by `supported` (KVM's list).
 * Returns 0, or -ENOTSUP with a message naming the first missing feature.
 */
int cpu_model_check(const struct cpu_model *m, const struct kvm_cpuid2 *supported, char *err,
                    size_t errlen);

/*
 * Rewrites `c` (a copy of KVM's supported CPUID) for vCPU `apic_id` of `ncpus`:
 * feature masks, APIC id and topology leaves (one socket, ncpus cores, one thread
 * each), the hypervisor bit and the KVM signature leaf.
 */
void cpuid_shape(struct kvm_cpuid2 *c, const struct cpu_model *m, unsigned apic_id, unsigned ncpus);

/*
 * The processor brand string (leaves 0x80000002-0x80000004, what /proc/cpuinfo calls
 * "model name"): some KVMs leave those leaves zero, and `--cpu host` should show the
 * host's name as QEMU's does. cpuid_host_brand() reads it with the cpuid instruction
 * (all zeros if the host has none); cpuid_fill_brand() writes it into c's leaves, only
 * where c has all three and they are all zero.
 */
void cpuid_host_brand(char brand[48]);
void cpuid_fill_brand(struct kvm_cpuid2 *c, const char brand[48]);

/* The entry for leaf/subleaf, or NULL. */
struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *c, uint32_t leaf, uint32_t index);

#endif
