/* test_cpuid.c: --cpu model parsing and the per-vCPU shaping of a hand-made KVM CPUID table. */
#include <errno.h>

#include "cpuid.h"
#include "test.h"
#include "util.h"

#define BIT(n) (1u << (n))

static bool contains(const char *haystack, const char *needle)
{
	if (strstr(haystack, needle))
		return true;
	fprintf(stderr, "message \"%s\" lacks \"%s\"\n", haystack, needle);
	return false;
}

static bool model_is_plain(const struct cpu_model *m)
{
	for (int i = 0; i < CPUID_NWORDS; i++)
		if (m->add[i] || m->del[i])
			return false;
	return true;
}

TEST(cpu_model_parse_bases)
{
	struct cpu_model m;
	char err[256] = "";

	CHECK_EQ(cpu_model_parse("host", &m, err, sizeof(err)), 0);
	CHECK_EQ(m.base, CPU_MODEL_HOST);
	CHECK(model_is_plain(&m));
	CHECK_EQ(cpu_model_parse("baseline", &m, err, sizeof(err)), 0);
	CHECK_EQ(m.base, CPU_MODEL_BASELINE);
	CHECK(model_is_plain(&m));
	CHECK_STR(err, "");
}

TEST(cpu_model_parse_features)
{
	struct cpu_model m;
	char err[256] = "";

	CHECK_EQ(cpu_model_parse("+avx,-xsave", &m, err, sizeof(err)), 0);
	CHECK_EQ(m.base, CPU_MODEL_HOST);
	CHECK_EQ(m.add[CPUID_1_ECX], BIT(28));
	CHECK_EQ(m.del[CPUID_1_ECX], BIT(26));

	CHECK_EQ(cpu_model_parse("host,-xsave", &m, err, sizeof(err)), 0);
	CHECK_EQ(m.base, CPU_MODEL_HOST);
	CHECK_EQ(m.add[CPUID_1_ECX], 0);
	CHECK_EQ(m.del[CPUID_1_ECX], BIT(26));

	CHECK_EQ(cpu_model_parse("baseline,+avx2,-nx,+lahf_lm,+rdpid", &m, err, sizeof(err)), 0);
	CHECK_EQ(m.base, CPU_MODEL_BASELINE);
	CHECK_EQ(m.add[CPUID_7_EBX], BIT(5));
	CHECK_EQ(m.del[CPUID_80000001_EDX], BIT(20));
	CHECK_EQ(m.add[CPUID_80000001_ECX], BIT(0));
	CHECK_EQ(m.add[CPUID_7_ECX], BIT(22));

	/* Dashed spellings of underscored names. */
	CHECK_EQ(cpu_model_parse("-tsc-deadline-timer", &m, err, sizeof(err)), 0);
	CHECK_EQ(m.del[CPUID_1_ECX], BIT(24));
	CHECK_EQ(cpu_model_parse("+sse4-2,+sse4_1", &m, err, sizeof(err)), 0);
	CHECK_EQ(m.add[CPUID_1_ECX], BIT(20) | BIT(19));

	/* The later of +f and -f wins. */
	CHECK_EQ(cpu_model_parse("+avx,-avx", &m, err, sizeof(err)), 0);
	CHECK_EQ(m.add[CPUID_1_ECX], 0);
	CHECK_EQ(m.del[CPUID_1_ECX], BIT(28));
	CHECK_EQ(cpu_model_parse("-avx,+avx", &m, err, sizeof(err)), 0);
	CHECK_EQ(m.add[CPUID_1_ECX], BIT(28));
	CHECK_EQ(m.del[CPUID_1_ECX], 0);
	CHECK_STR(err, "");
}

static void parse_fails(const char *spec, const char *needle)
{
	struct cpu_model m;
	char err[256] = "";

	CHECK_EQ(cpu_model_parse(spec, &m, err, sizeof(err)), -EINVAL);
	CHECK(contains(err, "--cpu"));
	if (needle)
		CHECK(contains(err, needle));
}

TEST(cpu_model_parse_errors)
{
	parse_fails("+xsav", "'xsav'");
	parse_fails("host,-xsav", "'xsav'");
	parse_fails("host,,", "empty item");
	parse_fails(",host", "empty item");
	parse_fails("+avx,,-xsave", "empty item");
	parse_fails("foo", "'foo'");
	parse_fails("avx", "'avx'");        /* a feature needs its sign */
	parse_fails("+avx,host", "'host'"); /* the model comes first */
	parse_fails("host,baseline", "'baseline'");
	parse_fails("+", NULL);
	parse_fails("", "empty");
	parse_fails(NULL, "empty");
	parse_fails("+tsc_deadline-timerx", "tsc_deadline-timerx");
}

TEST(cpu_model_list_features_names)
{
	char buf[2048], small[10];

	cpu_model_list_features(buf, sizeof(buf));
	CHECK(contains(buf, "xsave "));
	CHECK(contains(buf, " avx2 "));
	CHECK(contains(buf, "tsc_deadline_timer"));
	CHECK(strncmp(buf, "sse3 ", 5) == 0);
	memset(small, 'z', sizeof(small));
	cpu_model_list_features(small, sizeof(small));
	CHECK(strlen(small) < sizeof(small));
	CHECK(strncmp(small, "sse3 pclm", 9) == 0);
}

/* ---- shaping ---------------------------------------------------------------------------- */

#define NENT 13

static struct kvm_cpuid2 *table(void)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + NENT * sizeof(struct kvm_cpuid_entry2));
	unsigned n = 0;

#define ENT(f, i, a, b, cc, d)                                                                     \
	c->entries[n++] = (struct kvm_cpuid_entry2){                                               \
	    .function = (f), .index = (i), .eax = (a), .ebx = (b), .ecx = (cc), .edx = (d)}
	ENT(0, 0, 0x1f, 0x756e6547, 0x6c65746e, 0x49656e69);
	/* Every feature bit except hypervisor and HTT; EBX: CLFLUSH size 8, brand 1, junk id. */
	ENT(1, 0, 0x000906ea, 0x7f3f0801, 0x7fffffff, 0xefffffff);
	ENT(4, 0, 0x1c004121, 0x01c0003f, 0x3f, 0);
	ENT(4, 1, 0x1c004122, 0x01c0003f, 0x3f, 0);
	ENT(4, 2, 0x1c000000, 0, 0, 0); /* type 0: no more caches, left alone */
	ENT(7, 0, 0, 0xffffffff, 0xffffffff, 0xffffffff);
	ENT(0xb, 0, 0x1, 0x2, 0x100, 0x77);
	ENT(0xb, 1, 0x4, 0x10, 0x201, 0x77);
	ENT(0xb, 2, 0x9, 0x9, 0x9, 0x77);
	ENT(0x40000000, 0, 0, 0x11111111, 0x22222222, 0x33333333);
	ENT(0x80000001, 0, 0, 0, 0xffffffff, 0xffffffff);
	ENT(0x80000007, 0, 0, 0, 0, 0x100); /* invariant TSC */
	ENT(0x80000008, 0, 0x3030, 0, 0x0001f0ff, 0);
#undef ENT
	c->nent = n;
	return c;
}

static struct kvm_cpuid_entry2 *ent(struct kvm_cpuid2 *c, uint32_t leaf, uint32_t index)
{
	struct kvm_cpuid_entry2 *e = cpuid_find(c, leaf, index);

	CHECK(e != NULL);
	if (!e) {
		fprintf(stderr, "no CPUID leaf 0x%x.%u\n", leaf, index);
		exit(1);
	}
	return e;
}

static struct cpu_model model(const char *spec)
{
	struct cpu_model m;
	char err[256];

	CHECK_EQ(cpu_model_parse(spec, &m, err, sizeof(err)), 0);
	return m;
}

TEST(cpuid_find_leaf_and_subleaf)
{
	struct kvm_cpuid2 *c = table();

	CHECK_EQ(ent(c, 4, 1)->eax, 0x1c004122);
	CHECK_EQ(ent(c, 0xb, 2)->eax, 9);
	CHECK(cpuid_find(c, 4, 3) == NULL);
	CHECK(cpuid_find(c, 0xd, 0) == NULL);
	free(c);
}

TEST(cpuid_shape_single_cpu)
{
	struct kvm_cpuid2 *c = table();
	struct cpu_model m = model("host");
	struct kvm_cpuid_entry2 *e;

	cpuid_shape(c, &m, 0, 1);
	e = ent(c, 1, 0);
	CHECK_EQ(e->ebx, 0x00010801);  /* APIC id 0, one logical CPU, low half kept */
	CHECK_EQ(e->edx & BIT(28), 0); /* HTT off */
	CHECK_EQ(e->ecx, 0xffffffff);  /* every host feature plus hypervisor */
	CHECK_EQ(e->eax, 0x000906ea);
	CHECK_EQ(ent(c, 4, 0)->eax, 0x00004121); /* one core per package */
	e = ent(c, 0xb, 1);
	CHECK_EQ(e->eax, 0);
	CHECK_EQ(e->ebx, 1);
	CHECK_EQ(ent(c, 0x80000008, 0)->ecx, 0x00010000);
	CHECK_EQ(ent(c, 0, 0)->ebx, 0x756e6547); /* untouched leaves stay */
	free(c);
}

TEST(cpuid_shape_smp_topology)
{
	struct kvm_cpuid2 *c = table();
	struct cpu_model m = model("host");
	struct kvm_cpuid_entry2 *e;

	cpuid_shape(c, &m, 3, 4);
	e = ent(c, 1, 0);
	CHECK_EQ(e->ebx >> 24, 3);           /* initial APIC id */
	CHECK_EQ((e->ebx >> 16) & 0xff, 4);  /* logical processors per package */
	CHECK_EQ(e->ebx & 0xffff, 0x0801);   /* CLFLUSH size and brand index kept */
	CHECK_EQ(e->edx & BIT(28), BIT(28)); /* HTT: the count is valid */
	CHECK_EQ(e->ecx & BIT(31), BIT(31)); /* hypervisor */

	CHECK_EQ(ent(c, 4, 0)->eax, (3u << 26) | 0x4121);
	CHECK_EQ(ent(c, 4, 1)->eax, (3u << 26) | 0x4122);
	CHECK_EQ(ent(c, 4, 2)->eax, 0x1c000000);

	e = ent(c, 0xb, 0); /* SMT level: one thread */
	CHECK_EQ(e->eax, 0);
	CHECK_EQ(e->ebx, 1);
	CHECK_EQ(e->ecx, 0x100);
	CHECK_EQ(e->edx, 3);
	e = ent(c, 0xb, 1); /* core level: all vCPUs, APIC id shift 2 */
	CHECK_EQ(e->eax, 2);
	CHECK_EQ(e->ebx, 4);
	CHECK_EQ(e->ecx, 0x201);
	CHECK_EQ(e->edx, 3);
	e = ent(c, 0xb, 2); /* invalid level ends the enumeration */
	CHECK_EQ(e->eax, 0);
	CHECK_EQ(e->ebx, 0);
	CHECK_EQ(e->ecx, 2);
	CHECK_EQ(e->edx, 3);

	/* AMD: NC = ncpus - 1, ApicIdCoreIdSize = 2; other bits kept. */
	CHECK_EQ(ent(c, 0x80000008, 0)->ecx, 0x00010000 | 3 | (2 << 12));
	free(c);
}

TEST(cpuid_shape_odd_cpu_counts)
{
	struct kvm_cpuid2 *c = table();
	struct cpu_model m = model("host");

	/* 3 vCPUs need 2 bits of APIC id; the count field is a power of two. */
	cpuid_shape(c, &m, 2, 3);
	CHECK_EQ(ent(c, 1, 0)->ebx >> 16, (2u << 8) | 4);
	CHECK_EQ(ent(c, 0xb, 1)->eax, 2);
	CHECK_EQ(ent(c, 0xb, 1)->ebx, 3);
	free(c);

	c = table();
	cpuid_shape(c, &m, 253, 254);
	CHECK_EQ(ent(c, 1, 0)->ebx >> 24, 253);
	CHECK_EQ((ent(c, 1, 0)->ebx >> 16) & 0xff, 255); /* 256 does not fit 8 bits */
	CHECK_EQ(ent(c, 0xb, 1)->eax, 8);
	CHECK_EQ(ent(c, 0xb, 1)->ebx, 254);
	CHECK_EQ(ent(c, 0xb, 0)->edx, 253);
	CHECK_EQ(ent(c, 4, 0)->eax >> 26, 63);
	free(c);
}

TEST(cpuid_shape_kvm_signature)
{
	struct kvm_cpuid2 *c = table();
	struct cpu_model m = model("host");
	struct kvm_cpuid_entry2 *e;
	char sig[13];

	cpuid_shape(c, &m, 0, 2);
	e = ent(c, 0x40000000, 0);
	memcpy(sig, &e->ebx, 4);
	memcpy(sig + 4, &e->ecx, 4);
	memcpy(sig + 8, &e->edx, 4);
	sig[12] = '\0';
	CHECK_STR(sig, "KVMKVMKVM");
	CHECK(e->eax >= 0x40000001);
	free(c);

	/* A higher max leaf from KVM is kept. */
	c = table();
	ent(c, 0x40000000, 0)->eax = 0x40000010;
	cpuid_shape(c, &m, 0, 2);
	CHECK_EQ(ent(c, 0x40000000, 0)->eax, 0x40000010);
	free(c);
}

TEST(cpuid_shape_feature_removal)
{
	struct kvm_cpuid2 *c = table();
	struct cpu_model m = model("host,-xsave,-avx2,-nx,-hypervisor");

	cpuid_shape(c, &m, 0, 1);
	CHECK_EQ(ent(c, 1, 0)->ecx, 0x7fffffff & ~BIT(26)); /* -hypervisor too */
	CHECK_EQ(ent(c, 7, 0)->ebx, 0xffffffff & ~BIT(5));
	CHECK_EQ(ent(c, 7, 0)->ecx, 0xffffffff);
	CHECK_EQ(ent(c, 0x80000001, 0)->edx, 0xffffffff & ~BIT(20));
	CHECK_EQ(ent(c, 0x80000001, 0)->ecx, 0xffffffff);
	free(c);

	/* +feature on host adds nothing the host lacks (cpu_model_check refuses it earlier). */
	c = table();
	ent(c, 7, 0)->ebx = 0;
	m = model("+avx512f");
	cpuid_shape(c, &m, 0, 1);
	CHECK_EQ(ent(c, 7, 0)->ebx, 0);
	free(c);
}

TEST(cpuid_shape_hides_invariant_tsc_unless_asked)
{
	struct kvm_cpuid2 *c = table();
	struct cpu_model m = model("host");

	/* As QEMU: the guest then keeps kvm-clock, which stops while the VM is paused. */
	cpuid_shape(c, &m, 0, 1);
	CHECK_EQ(ent(c, 0x80000007, 0)->edx, 0);
	free(c);
	c = table();
	m = model("host,+invtsc");
	cpuid_shape(c, &m, 0, 1);
	CHECK_EQ(ent(c, 0x80000007, 0)->edx, BIT(8));
	free(c);
}

TEST(cpuid_shape_baseline)
{
	struct kvm_cpuid2 *c = table();
	struct cpu_model m = model("baseline");
	struct kvm_cpuid_entry2 *e;

	cpuid_shape(c, &m, 0, 1);
	e = ent(c, 1, 0);
	CHECK_EQ(e->ecx & BIT(28), 0);           /* avx */
	CHECK_EQ(e->ecx & BIT(26), 0);           /* xsave */
	CHECK_EQ(e->ecx & BIT(12), 0);           /* fma */
	CHECK_EQ(e->ecx & BIT(5), 0);            /* vmx */
	CHECK(e->ecx & BIT(20));                 /* sse4_2 */
	CHECK(e->ecx & BIT(19));                 /* sse4_1 */
	CHECK(e->ecx & BIT(23));                 /* popcnt */
	CHECK(e->ecx & BIT(13));                 /* cx16 */
	CHECK(e->ecx & BIT(9));                  /* ssse3 */
	CHECK(e->ecx & BIT(0));                  /* sse3 */
	CHECK(e->ecx & BIT(21));                 /* x2apic */
	CHECK(e->ecx & BIT(31));                 /* hypervisor */
	CHECK(e->edx & BIT(26));                 /* sse2 */
	CHECK(e->edx & BIT(15));                 /* cmov */
	CHECK_EQ(ent(c, 7, 0)->ebx & BIT(5), 0); /* avx2 */
	CHECK_EQ(ent(c, 7, 0)->ebx, 0);          /* nothing in leaf 7 is x86-64-v2 */
	CHECK_EQ(ent(c, 7, 0)->ecx, 0);
	e = ent(c, 0x80000001, 0);
	CHECK(e->edx & BIT(29));       /* lm */
	CHECK(e->edx & BIT(20));       /* nx */
	CHECK(e->edx & BIT(11));       /* syscall */
	CHECK(e->ecx & BIT(0));        /* lahf_lm */
	CHECK_EQ(e->edx & BIT(27), 0); /* rdtscp */
	CHECK_EQ(e->ecx & BIT(5), 0);  /* abm */
	free(c);

	/* baseline plus a feature the host has; minus a baseline one. */
	c = table();
	m = model("baseline,+avx2,+avx,-sse4_2");
	cpuid_shape(c, &m, 0, 1);
	CHECK_EQ(ent(c, 7, 0)->ebx, BIT(5));
	CHECK(ent(c, 1, 0)->ecx & BIT(28));
	CHECK_EQ(ent(c, 1, 0)->ecx & BIT(20), 0);
	CHECK(ent(c, 1, 0)->ecx & BIT(23));
	free(c);
}

TEST(cpu_model_check_supported)
{
	struct kvm_cpuid2 *c = table();
	struct cpu_model m;
	char err[256] = "";

	m = model("+avx512f,+avx,-xsave");
	CHECK_EQ(cpu_model_check(&m, c, err, sizeof(err)), 0);
	m = model("host");
	CHECK_EQ(cpu_model_check(&m, c, err, sizeof(err)), 0);

	ent(c, 7, 0)->ebx &= ~BIT(16); /* this host's KVM has no avx512f */
	m = model("+avx,+avx512f");
	CHECK_EQ(cpu_model_check(&m, c, err, sizeof(err)), -ENOTSUP);
	CHECK(contains(err, "avx512f"));
	CHECK(contains(err, "--cpu"));
	/* Removing what is missing is fine. */
	m = model("-avx512f");
	CHECK_EQ(cpu_model_check(&m, c, err, sizeof(err)), 0);
	/* The hypervisor bit is ours to set, whatever KVM lists. */
	ent(c, 1, 0)->ecx &= ~BIT(31);
	m = model("+hypervisor");
	CHECK_EQ(cpu_model_check(&m, c, err, sizeof(err)), 0);

	/* A table without leaf 7 at all offers none of its features. */
	c->nent = 1; /* only leaf 0 */
	m = model("+avx2");
	CHECK_EQ(cpu_model_check(&m, c, err, sizeof(err)), -ENOTSUP);
	CHECK(contains(err, "avx2"));
	free(c);
}

TEST(cpuid_brand_filled_only_where_empty)
{
	static const char brand[48] = "Example(R) CPU @ 1.00GHz";
	struct {
		struct kvm_cpuid2 c;
		struct kvm_cpuid_entry2 e[4];
	} t = {0};
	char host[48], back[48];

	t.c.nent = 4;
	for (unsigned i = 0; i < 3; i++)
		t.e[i].function = 0x80000002 + i;
	t.e[3].function = 1;
	cpuid_fill_brand(&t.c, brand);
	for (unsigned i = 0; i < 3; i++)
		memcpy(back + 16 * i, &t.e[i].eax, 16);
	CHECK(memcmp(back, brand, 48) == 0);
	/* A KVM that gives a brand keeps it. */
	static const char other[48] = "something else entirely";
	cpuid_fill_brand(&t.c, other);
	CHECK(memcmp(&t.e[0].eax, brand, 16) == 0);
	/* Without all three leaves nothing is written. */
	memset(&t.e[0], 0, 3 * sizeof(t.e[0]));
	t.e[0].function = 0x80000002;
	t.e[1].function = 0x80000003;
	t.c.nent = 2;
	cpuid_fill_brand(&t.c, brand);
	CHECK_EQ(t.e[0].eax | t.e[1].eax, 0);
	/* The host's own string is printable ASCII, NUL-padded (or empty). */
	cpuid_host_brand(host);
	for (unsigned i = 0; i < 48 && host[i]; i++)
		CHECK(host[i] >= 0x20 && host[i] < 0x7f);
}
