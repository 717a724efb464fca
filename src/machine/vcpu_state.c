/* vcpu_state.c: a vCPU's architectural state to and from a snapshot (KVM_GET/SET_*). */
#include "vcpu_state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "log.h"
#include "util.h"

/*
 * Sections, instance = vCPU number; each holds the KVM ABI struct as is (fixed layouts
 * of fixed-width fields, x86-64 only):
 *   vcpu.regs      struct kvm_regs
 *   vcpu.sregs     struct kvm_sregs
 *   vcpu.xsave     struct kvm_xsave (4 KiB legacy area + header + AVX state)
 *   vcpu.xcrs      struct kvm_xcrs
 *   vcpu.msrs      u32 count, u32 0, then count x {u32 index, u32 0, u64 value}
 *   vcpu.lapic     struct kvm_lapic_state
 *   vcpu.events    struct kvm_vcpu_events (pending exceptions, NMI, interrupt shadow)
 *   vcpu.mpstate   struct kvm_mp_state (running, halted, waiting for INIT/SIPI)
 *   vcpu.debugregs struct kvm_debugregs
 *   vcpu.cpuid     u32 count, u32 0, then count x struct kvm_cpuid_entry2: the CPU model
 *                  the guest saw, set again at restore so it sees the same CPU
 */

#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MAX_MSRS              1024
#define MAX_CPUID             256

struct msr_rec {
	uint32_t index;
	uint32_t pad;
	uint64_t value;
};

static struct kvm_msr_list *msr_index_list(int sys_fd)
{
	struct kvm_msr_list probe = {.nmsrs = 0}, *l;

	if (ioctl(sys_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return NULL;
	if (probe.nmsrs > MAX_MSRS)
		probe.nmsrs = MAX_MSRS;
	l = calloc(1, sizeof(*l) + probe.nmsrs * sizeof(uint32_t));
	if (!l)
		return NULL;
	l->nmsrs = probe.nmsrs;
	if (ioctl(sys_fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
		free(l);
		return NULL;
	}
	return l;
}

static int get_one_msr(int fd, uint32_t index, uint64_t *value)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e;
	} m = {.hdr.nmsrs = 1, .e.index = index};

	if (ioctl(fd, KVM_GET_MSRS, &m) != 1)
		return -EINVAL;
	*value = m.e.data;
	return 0;
}

static int set_one_msr(int fd, uint32_t index, uint64_t value)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e;
	} m = {.hdr.nmsrs = 1, .e.index = index, .e.data = value};

	return ioctl(fd, KVM_SET_MSRS, &m) == 1 ? 0 : -EINVAL;
}

/* Every MSR KVM lists that this vCPU can read: what QEMU saves is a subset of it. */
static int save_msrs(int sys_fd, int fd, struct snap_writer *w, uint32_t id)
{
	struct kvm_msr_list *l = msr_index_list(sys_fd);
	uint8_t *buf;
	uint32_t n = 0;
	int r;

	if (!l)
		return -errno ? -errno : -ENOMEM;
	buf = calloc(1, 8 + l->nmsrs * sizeof(struct msr_rec));
	if (!buf) {
		free(l);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < l->nmsrs; i++) {
		struct msr_rec rec = {.index = l->indices[i]};

		if (get_one_msr(fd, rec.index, &rec.value) < 0)
			continue;
		memcpy(buf + 8 + n * sizeof(rec), &rec, sizeof(rec));
		n++;
	}
	memcpy(buf, &n, 4);
	r = snap_put(w, "vcpu.msrs", id, buf, 8 + n * sizeof(struct msr_rec));
	free(buf);
	free(l);
	return r;
}

/* Sets the saved MSRs; TSC_DEADLINE only after the LAPIC (`deadline`). */
static int load_msrs(int fd, const void *data, size_t len, bool deadline, uint32_t id, char *err,
                     size_t errlen)
{
	uint32_t n;

	memcpy(&n, data, 4);
	for (uint32_t i = 0; i < n; i++) {
		struct msr_rec rec;

		memcpy(&rec, (const uint8_t *)data + 8 + i * sizeof(rec), sizeof(rec));
		if ((rec.index == MSR_IA32_TSC_DEADLINE) != deadline)
			continue;
		if (set_one_msr(fd, rec.index, rec.value) < 0) {
			/* KVM lists MSRs it can read but refuses to set to some values (feature
			 * MSRs it derives from CPUID): the guest saw them already. */
			log_debug("vCPU %u: KVM refused MSR 0x%x = 0x%llx at restore", id,
			          rec.index, (unsigned long long)rec.value);
		}
	}
	(void)len;
	(void)err;
	(void)errlen;
	return 0;
}

static int put_ioctl(int fd, unsigned long req, void *buf, size_t len, struct snap_writer *w,
                     const char *tag, uint32_t id)
{
	memset(buf, 0, len);
	if (ioctl(fd, req, buf) < 0)
		return -errno;
	return snap_put(w, tag, id, buf, len);
}

int vcpu_state_save(int sys_fd, int fd, uint32_t id, const struct kvm_cpuid2 *cpuid,
                    struct snap_writer *w, char *err, size_t errlen)
{
	union {
		struct kvm_regs regs;
		struct kvm_sregs sregs;
		struct kvm_xsave xsave;
		struct kvm_xcrs xcrs;
		struct kvm_lapic_state lapic;
		struct kvm_vcpu_events events;
		struct kvm_mp_state mp;
		struct kvm_debugregs dbg;
	} *u = malloc(sizeof(*u));
	const char *what = "registers";
	uint8_t *cbuf;
	size_t clen;
	int r;

	if (!u)
		return -ENOMEM;
	if ((r = put_ioctl(fd, KVM_GET_REGS, u, sizeof(u->regs), w, "vcpu.regs", id)) < 0)
		goto fail;
	what = "segment registers";
	if ((r = put_ioctl(fd, KVM_GET_SREGS, u, sizeof(u->sregs), w, "vcpu.sregs", id)) < 0)
		goto fail;
	what = "FPU/SSE/AVX state";
	if ((r = put_ioctl(fd, KVM_GET_XSAVE, u, sizeof(u->xsave), w, "vcpu.xsave", id)) < 0)
		goto fail;
	what = "XCRs";
	if ((r = put_ioctl(fd, KVM_GET_XCRS, u, sizeof(u->xcrs), w, "vcpu.xcrs", id)) < 0)
		goto fail;
	what = "local APIC";
	if ((r = put_ioctl(fd, KVM_GET_LAPIC, u, sizeof(u->lapic), w, "vcpu.lapic", id)) < 0)
		goto fail;
	what = "pending events";
	if ((r = put_ioctl(fd, KVM_GET_VCPU_EVENTS, u, sizeof(u->events), w, "vcpu.events", id)) <
	    0)
		goto fail;
	what = "MP state";
	if ((r = put_ioctl(fd, KVM_GET_MP_STATE, u, sizeof(u->mp), w, "vcpu.mpstate", id)) < 0)
		goto fail;
	what = "debug registers";
	if ((r = put_ioctl(fd, KVM_GET_DEBUGREGS, u, sizeof(u->dbg), w, "vcpu.debugregs", id)) < 0)
		goto fail;
	what = "MSRs";
	if ((r = save_msrs(sys_fd, fd, w, id)) < 0)
		goto fail;
	what = "CPUID";
	clen = 8 + cpuid->nent * sizeof(struct kvm_cpuid_entry2);
	cbuf = calloc(1, clen);
	if (!cbuf) {
		r = -ENOMEM;
		goto fail;
	}
	memcpy(cbuf, &cpuid->nent, 4);
	memcpy(cbuf + 8, cpuid->entries, cpuid->nent * sizeof(struct kvm_cpuid_entry2));
	r = snap_put(w, "vcpu.cpuid", id, cbuf, clen);
	free(cbuf);
	if (r < 0)
		goto fail;
	free(u);
	return 0;
fail:
	snprintf(err, errlen, "vCPU %u: cannot save its %s: %s", id, what, strerror(-r));
	free(u);
	return r;
}

/* A variable-length section: u32 count, u32 0, count records of `rec` bytes. */
static const void *get_array(const struct snap_reader *rd, const char *tag, uint32_t id, size_t rec,
                             uint32_t max, uint32_t *count, char *err, size_t errlen)
{
	size_t len;
	const uint8_t *p = snap_get(rd, tag, id, &len);

	if (!p) {
		snprintf(err, errlen, "%s: section %s %u is missing", snap_reader_name(rd), tag,
		         id);
		return NULL;
	}
	if (len < 8)
		goto bad;
	memcpy(count, p, 4);
	if (*count > max || len != 8 + (size_t)*count * rec)
		goto bad;
	return p;
bad:
	snprintf(err, errlen, "%s: section %s %u: bad length %zu", snap_reader_name(rd), tag, id,
	         len);
	return NULL;
}

struct kvm_cpuid2 *vcpu_state_cpuid(const struct snap_reader *rd, uint32_t id, char *err,
                                    size_t errlen)
{
	uint32_t n;
	const uint8_t *p = get_array(rd, "vcpu.cpuid", id, sizeof(struct kvm_cpuid_entry2),
	                             MAX_CPUID, &n, err, errlen);
	struct kvm_cpuid2 *c;

	if (!p)
		return NULL;
	c = calloc(1, sizeof(*c) + n * sizeof(struct kvm_cpuid_entry2));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->nent = n;
	memcpy(c->entries, p + 8, n * sizeof(struct kvm_cpuid_entry2));
	return c;
}

static int get_set(const struct snap_reader *rd, int fd, unsigned long req, const char *tag,
                   uint32_t id, void *buf, size_t len, char *err, size_t errlen)
{
	int r = snap_get_exact(rd, tag, id, buf, len, err, errlen);

	if (r < 0)
		return r;
	if (ioctl(fd, req, buf) < 0) {
		r = -errno;
		snprintf(err, errlen, "vCPU %u: KVM refused the saved %s: %s", id, tag,
		         strerror(errno));
		return r;
	}
	return 0;
}

int vcpu_state_load(int fd, uint32_t id, const struct snap_reader *rd, char *err, size_t errlen)
{
	union {
		struct kvm_regs regs;
		struct kvm_sregs sregs;
		struct kvm_xsave xsave;
		struct kvm_xcrs xcrs;
		struct kvm_lapic_state lapic;
		struct kvm_vcpu_events events;
		struct kvm_mp_state mp;
		struct kvm_debugregs dbg;
	} *u = malloc(sizeof(*u));
	const void *msrs;
	uint32_t nmsrs;
	int r;

	if (!u)
		return -ENOMEM;
	msrs =
	    get_array(rd, "vcpu.msrs", id, sizeof(struct msr_rec), MAX_MSRS, &nmsrs, err, errlen);
	if (!msrs) {
		r = -EINVAL;
		goto out;
	}
	/* QEMU's order: special registers (APIC base, EFER, CR*) before what depends on them,
	 * the LAPIC after the MP state, the TSC deadline after the LAPIC. */
	if ((r = get_set(rd, fd, KVM_SET_SREGS, "vcpu.sregs", id, u, sizeof(u->sregs), err,
	                 errlen)) < 0 ||
	    (r = get_set(rd, fd, KVM_SET_REGS, "vcpu.regs", id, u, sizeof(u->regs), err, errlen)) <
	        0 ||
	    (r = get_set(rd, fd, KVM_SET_XSAVE, "vcpu.xsave", id, u, sizeof(u->xsave), err,
	                 errlen)) < 0 ||
	    (r = get_set(rd, fd, KVM_SET_XCRS, "vcpu.xcrs", id, u, sizeof(u->xcrs), err, errlen)) <
	        0)
		goto out;
	load_msrs(fd, msrs, 0, false, id, err, errlen);
	if ((r = get_set(rd, fd, KVM_SET_MP_STATE, "vcpu.mpstate", id, u, sizeof(u->mp), err,
	                 errlen)) < 0 ||
	    (r = get_set(rd, fd, KVM_SET_LAPIC, "vcpu.lapic", id, u, sizeof(u->lapic), err,
	                 errlen)) < 0)
		goto out;
	load_msrs(fd, msrs, 0, true, id, err, errlen);
	if ((r = get_set(rd, fd, KVM_SET_VCPU_EVENTS, "vcpu.events", id, u, sizeof(u->events), err,
	                 errlen)) < 0 ||
	    (r = get_set(rd, fd, KVM_SET_DEBUGREGS, "vcpu.debugregs", id, u, sizeof(u->dbg), err,
	                 errlen)) < 0)
		goto out;
out:
	free(u);
	return r;
}
