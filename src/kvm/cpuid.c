/* cpuid.c: CPU models (host, baseline = x86-64-v2), feature names, topology leaves. */
#include "cpuid.h"

#include <cpuid.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

struct feature_name {
	const char *name;
	enum cpuid_word word;
	uint8_t bit;
};

/* Names as Linux prints them in /proc/cpuinfo, so clearcpuid= and --cpu agree. */
static const struct feature_name features[] = {
    {"sse3", CPUID_1_ECX, 0},
    {"pclmulqdq", CPUID_1_ECX, 1},
    {"monitor", CPUID_1_ECX, 3},
    {"vmx", CPUID_1_ECX, 5},
    {"ssse3", CPUID_1_ECX, 9},
    {"fma", CPUID_1_ECX, 12},
    {"cx16", CPUID_1_ECX, 13},
    {"pdcm", CPUID_1_ECX, 15},
    {"pcid", CPUID_1_ECX, 17},
    {"sse4_1", CPUID_1_ECX, 19},
    {"sse4_2", CPUID_1_ECX, 20},
    {"x2apic", CPUID_1_ECX, 21},
    {"movbe", CPUID_1_ECX, 22},
    {"popcnt", CPUID_1_ECX, 23},
    {"tsc_deadline_timer", CPUID_1_ECX, 24},
    {"aes", CPUID_1_ECX, 25},
    {"xsave", CPUID_1_ECX, 26},
    {"avx", CPUID_1_ECX, 28},
    {"f16c", CPUID_1_ECX, 29},
    {"rdrand", CPUID_1_ECX, 30},
    {"hypervisor", CPUID_1_ECX, 31},
    {"fpu", CPUID_1_EDX, 0},
    {"vme", CPUID_1_EDX, 1},
    {"de", CPUID_1_EDX, 2},
    {"pse", CPUID_1_EDX, 3},
    {"tsc", CPUID_1_EDX, 4},
    {"msr", CPUID_1_EDX, 5},
    {"pae", CPUID_1_EDX, 6},
    {"mce", CPUID_1_EDX, 7},
    {"cx8", CPUID_1_EDX, 8},
    {"apic", CPUID_1_EDX, 9},
    {"sep", CPUID_1_EDX, 11},
    {"mtrr", CPUID_1_EDX, 12},
    {"pge", CPUID_1_EDX, 13},
    {"mca", CPUID_1_EDX, 14},
    {"cmov", CPUID_1_EDX, 15},
    {"pat", CPUID_1_EDX, 16},
    {"pse36", CPUID_1_EDX, 17},
    {"clflush", CPUID_1_EDX, 19},
    {"mmx", CPUID_1_EDX, 23},
    {"fxsr", CPUID_1_EDX, 24},
    {"sse", CPUID_1_EDX, 25},
    {"sse2", CPUID_1_EDX, 26},
    {"ht", CPUID_1_EDX, 28},
    {"fsgsbase", CPUID_7_EBX, 0},
    {"bmi1", CPUID_7_EBX, 3},
    {"hle", CPUID_7_EBX, 4},
    {"avx2", CPUID_7_EBX, 5},
    {"smep", CPUID_7_EBX, 7},
    {"bmi2", CPUID_7_EBX, 8},
    {"erms", CPUID_7_EBX, 9},
    {"invpcid", CPUID_7_EBX, 10},
    {"rtm", CPUID_7_EBX, 11},
    {"mpx", CPUID_7_EBX, 14},
    {"avx512f", CPUID_7_EBX, 16},
    {"avx512dq", CPUID_7_EBX, 17},
    {"rdseed", CPUID_7_EBX, 18},
    {"adx", CPUID_7_EBX, 19},
    {"smap", CPUID_7_EBX, 20},
    {"clflushopt", CPUID_7_EBX, 23},
    {"clwb", CPUID_7_EBX, 24},
    {"avx512cd", CPUID_7_EBX, 28},
    {"sha_ni", CPUID_7_EBX, 29},
    {"avx512bw", CPUID_7_EBX, 30},
    {"avx512vl", CPUID_7_EBX, 31},
    {"umip", CPUID_7_ECX, 2},
    {"pku", CPUID_7_ECX, 3},
    {"waitpkg", CPUID_7_ECX, 5},
    {"gfni", CPUID_7_ECX, 8},
    {"vaes", CPUID_7_ECX, 9},
    {"vpclmulqdq", CPUID_7_ECX, 10},
    {"la57", CPUID_7_ECX, 16},
    {"rdpid", CPUID_7_ECX, 22},
    {"fsrm", CPUID_7_EDX, 4},
    {"md_clear", CPUID_7_EDX, 10},
    {"serialize", CPUID_7_EDX, 14},
    {"arch_capabilities", CPUID_7_EDX, 29},
    {"lahf_lm", CPUID_80000001_ECX, 0},
    {"svm", CPUID_80000001_ECX, 2},
    {"abm", CPUID_80000001_ECX, 5},
    {"sse4a", CPUID_80000001_ECX, 6},
    {"3dnowprefetch", CPUID_80000001_ECX, 8},
    {"syscall", CPUID_80000001_EDX, 11},
    {"nx", CPUID_80000001_EDX, 20},
    {"pdpe1gb", CPUID_80000001_EDX, 26},
    {"rdtscp", CPUID_80000001_EDX, 27},
    {"lm", CPUID_80000001_EDX, 29},
    /* Off unless asked for, as in QEMU: with it Linux prefers the TSC to kvm-clock, and
     * the TSC keeps counting while the VM is paused, saved or restored elsewhere. */
    {"invtsc", CPUID_80000007_EDX, 8},
    /* KVM paravirtual features, with QEMU's names. */
    {"kvmclock", CPUID_KVM_FEATURES, 0},
    {"kvm-nopiodelay", CPUID_KVM_FEATURES, 1},
    {"kvm-mmu", CPUID_KVM_FEATURES, 2},
    {"kvmclock2", CPUID_KVM_FEATURES, 3},
    {"kvm-asyncpf", CPUID_KVM_FEATURES, 4},
    {"kvm-steal-time", CPUID_KVM_FEATURES, 5},
    {"kvm-pv-eoi", CPUID_KVM_FEATURES, 6},
    {"kvm-pv-unhalt", CPUID_KVM_FEATURES, 7},
    {"kvm-pv-tlb-flush", CPUID_KVM_FEATURES, 9},
    {"kvm-asyncpf-vmexit", CPUID_KVM_FEATURES, 10},
    {"kvm-pv-ipi", CPUID_KVM_FEATURES, 11},
    {"kvm-poll-control", CPUID_KVM_FEATURES, 12},
    {"kvm-pv-sched-yield", CPUID_KVM_FEATURES, 13},
    {"kvm-asyncpf-int", CPUID_KVM_FEATURES, 14},
    {"kvm-msi-ext-dest-id", CPUID_KVM_FEATURES, 15},
};

/* x86-64-v2 (the psABI level every x86-64 distro since ~2020 can rely on) plus x2apic. */
static const char *const baseline_features[] = {
    "fpu",    "vme",    "de",         "pse",     "tsc",  "msr",   "pae",     "mce",    "cx8",
    "apic",   "sep",    "mtrr",       "pge",     "mca",  "cmov",  "pat",     "pse36",  "clflush",
    "mmx",    "fxsr",   "sse",        "sse2",    "sse3", "ssse3", "cx16",    "sse4_1", "sse4_2",
    "popcnt", "x2apic", "hypervisor", "syscall", "nx",   "lm",    "lahf_lm",
};

static const struct feature_name *feature_lookup(const char *name, size_t len)
{
	for (size_t i = 0; i < ARRAY_SIZE(features); i++) {
		if (strlen(features[i].name) == len && strncmp(features[i].name, name, len) == 0)
			return &features[i];
	}
	/* Accept the dashed spellings people type (sse4-1, tsc-deadline-timer). */
	for (size_t i = 0; i < ARRAY_SIZE(features); i++) {
		const char *f = features[i].name;
		size_t j;
		if (strlen(f) != len)
			continue;
		for (j = 0; j < len; j++) {
			char a = name[j] == '-' ? '_' : name[j];
			if (a != f[j])
				break;
		}
		if (j == len)
			return &features[i];
	}
	return NULL;
}

int cpu_model_parse(const char *spec, struct cpu_model *m, char *err, size_t errlen)
{
	const char *p = spec;
	bool first = true;

	memset(m, 0, sizeof(*m));
	m->base = CPU_MODEL_HOST;
	if (!spec || !*spec) {
		snprintf(err, errlen, "--cpu: empty CPU model — use host, baseline or +feat,-feat");
		return -EINVAL;
	}
	while (*p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const struct feature_name *f;
		char sign = p[0];

		if (len == 0) {
			snprintf(err, errlen, "--cpu '%s': empty item between commas", spec);
			return -EINVAL;
		}
		if (first && len == 4 && strncmp(p, "host", 4) == 0) {
			m->base = CPU_MODEL_HOST;
		} else if (first && len == 8 && strncmp(p, "baseline", 8) == 0) {
			m->base = CPU_MODEL_BASELINE;
		} else if (sign == '+' || sign == '-') {
			f = feature_lookup(p + 1, len - 1);
			if (!f) {
				snprintf(err, errlen,
				         "--cpu: unknown CPU feature '%.*s' — 'vmstack-vm run "
				         "--cpu help' "
				         "lists the names",
				         (int)(len - 1), p + 1);
				return -EINVAL;
			}
			if (sign == '+') {
				m->add[f->word] |= 1u << f->bit;
				m->del[f->word] &= ~(1u << f->bit);
			} else {
				m->del[f->word] |= 1u << f->bit;
				m->add[f->word] &= ~(1u << f->bit);
			}
		} else {
			snprintf(err, errlen,
			         "--cpu: '%.*s' is neither a model (host, baseline, first) nor "
			         "+feature/-feature",
			         (int)len, p);
			return -EINVAL;
		}
		first = false;
		p += len;
		if (*p == ',')
			p++;
	}
	return 0;
}

void cpu_model_list_features(char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(features) && off < len; i++) {
		int n = snprintf(buf + off, len - off, "%s%s", i ? " " : "", features[i].name);
		if (n < 0)
			break;
		off += (size_t)n;
	}
}

struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *c, uint32_t leaf, uint32_t index)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function == leaf && e->index == index)
			return e;
	}
	return NULL;
}

/* Where each feature word lives. */
static uint32_t *word_ptr(struct kvm_cpuid2 *c, enum cpuid_word w)
{
	struct kvm_cpuid_entry2 *e;

	switch (w) {
	case CPUID_1_ECX:
		e = cpuid_find(c, 1, 0);
		return e ? &e->ecx : NULL;
	case CPUID_1_EDX:
		e = cpuid_find(c, 1, 0);
		return e ? &e->edx : NULL;
	case CPUID_7_EBX:
		e = cpuid_find(c, 7, 0);
		return e ? &e->ebx : NULL;
	case CPUID_7_ECX:
		e = cpuid_find(c, 7, 0);
		return e ? &e->ecx : NULL;
	case CPUID_7_EDX:
		e = cpuid_find(c, 7, 0);
		return e ? &e->edx : NULL;
	case CPUID_80000007_EDX:
		e = cpuid_find(c, 0x80000007, 0);
		return e ? &e->edx : NULL;
	case CPUID_80000001_ECX:
		e = cpuid_find(c, 0x80000001, 0);
		return e ? &e->ecx : NULL;
	case CPUID_80000001_EDX:
		e = cpuid_find(c, 0x80000001, 0);
		return e ? &e->edx : NULL;
	case CPUID_KVM_FEATURES:
		e = cpuid_find(c, 0x40000001, 0);
		return e ? &e->eax : NULL;
	default:
		return NULL;
	}
}

int cpu_model_check(const struct cpu_model *m, const struct kvm_cpuid2 *supported, char *err,
                    size_t errlen)
{
	struct kvm_cpuid2 *c = (struct kvm_cpuid2 *)supported; /* word_ptr does not write */

	for (size_t i = 0; i < ARRAY_SIZE(features); i++) {
		const struct feature_name *f = &features[i];
		uint32_t *w;
		if (!(m->add[f->word] & (1u << f->bit)) || strcmp(f->name, "hypervisor") == 0)
			continue;
		w = word_ptr(c, f->word);
		if (!w || !(*w & (1u << f->bit))) {
			snprintf(err, errlen,
			         "--cpu: feature '%s' is not offered by this host's KVM — remove "
			         "+%s",
			         f->name, f->name);
			return -ENOTSUP;
		}
	}
	return 0;
}

static unsigned bits_for(unsigned n)
{
	unsigned b = 0;

	while ((1u << b) < n)
		b++;
	return b;
}

void cpuid_shape(struct kvm_cpuid2 *c, const struct cpu_model *m, unsigned apic_id, unsigned ncpus)
{
	uint32_t baseline[CPUID_NWORDS] = {0};
	unsigned shift = bits_for(ncpus);

	if (m->base == CPU_MODEL_BASELINE) {
		for (size_t i = 0; i < ARRAY_SIZE(baseline_features); i++) {
			const struct feature_name *f =
			    feature_lookup(baseline_features[i], strlen(baseline_features[i]));
			if (f)
				baseline[f->word] |= 1u << f->bit;
		}
	}
	for (int w = 0; w < CPUID_NWORDS; w++) {
		uint32_t *p = word_ptr(c, (enum cpuid_word)w);
		if (!p)
			continue;
		if (m->base == CPU_MODEL_BASELINE && w != CPUID_KVM_FEATURES)
			*p &= baseline[w] | m->add[w];
		*p &= ~m->del[w];
		if (w == CPUID_80000007_EDX)
			*p &= ~(1u << 8) | m->add[w];
	}

	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		switch (e->function) {
		case 1:
			e->ebx = (e->ebx & 0xffff) | (apic_id << 24) |
			         ((ncpus > 1 ? MIN(1u << shift, 255u) : 1u) << 16);
			if (ncpus > 1)
				e->edx |= 1u << 28; /* HTT: the count field above is valid */
			else
				e->edx &= ~(1u << 28);
			e->ecx |= 1u << 31; /* hypervisor present */
			if (m->del[CPUID_1_ECX] & (1u << 31))
				e->ecx &= ~(1u << 31);
			break;
		case 4:
			/* Deterministic cache parameters: cores per package in bits 31:26. */
			if ((e->eax & 0x1f) != 0)
				e->eax = (e->eax & 0x03ffffff) | (MIN(ncpus - 1, 63u) << 26);
			break;
		case 0xb:
		case 0x1f:
			/* Topology: level 0 = SMT (1 thread), level 1 = core (ncpus). */
			e->edx = apic_id;
			if (e->index == 0) {
				e->eax = 0;
				e->ebx = 1;
				e->ecx = (1u << 8) | 0;
			} else if (e->index == 1) {
				e->eax = shift;
				e->ebx = ncpus;
				e->ecx = (2u << 8) | 1;
			} else {
				e->eax = 0;
				e->ebx = 0;
				e->ecx = e->index;
			}
			break;
		case 0x40000000:
			/* "KVMKVMKVM\0\0\0": Linux's KVM guest support keys off this signature. */
			e->ebx = 0x4b4d564b;
			e->ecx = 0x564b4d56;
			e->edx = 0x0000004d;
			if (e->eax < 0x40000001)
				e->eax = 0x40000001;
			break;
		case 0x80000008:
			e->ecx = (e->ecx & ~0xf0ffu) | (ncpus - 1) | (shift << 12);
			break;
		default:
			break;
		}
	}
}

/* The cpuid instruction (<cpuid.h> would find our own header first on the include path). */
static void host_cpuid(uint32_t leaf, uint32_t r[4])
{
	__asm__ volatile("cpuid"
	                 : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
	                 : "a"(leaf), "c"(0));
}

void cpuid_host_brand(char brand[48])
{
	uint32_t r[4];

	memset(brand, 0, 48);
	host_cpuid(0x80000000, r);
	if (r[0] < 0x80000004)
		return;
	for (unsigned i = 0; i < 3; i++) {
		host_cpuid(0x80000002 + i, r);
		memcpy(brand + 16 * i, r, 16);
	}
}

void cpuid_fill_brand(struct kvm_cpuid2 *c, const char brand[48])
{
	struct kvm_cpuid_entry2 *e[3];

	for (unsigned i = 0; i < 3; i++) {
		e[i] = cpuid_find(c, 0x80000002 + i, 0);
		if (!e[i] || e[i]->eax || e[i]->ebx || e[i]->ecx || e[i]->edx)
			return;
	}
	for (unsigned i = 0; i < 3; i++) {
		uint32_t r[4];
		memcpy(r, brand + 16 * i, 16);
		e[i]->eax = r[0];
		e[i]->ebx = r[1];
		e[i]->ecx = r[2];
		e[i]->edx = r[3];
	}
}
