/* vcpu.c: KVM_RUN loop per vCPU thread; port/MMIO exits to the buses; fatal exits reported. */
#include "vcpu.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <time.h>

#include "log.h"
#include "util.h"

static __thread struct kvm_run *current_run;

static void kick_handler(int sig)
{
	(void)sig;
	/* Closes the window between checking `stopping` and entering KVM_RUN. */
	if (current_run)
		current_run->immediate_exit = 1;
}

int vcpu_signals_init(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;
	sigemptyset(&sa.sa_mask);
	return sigaction(VCPU_KICK_SIGNAL, &sa, NULL) < 0 ? -errno : 0;
}

void vcpu_kick(struct vcpu *v)
{
	if (v->started)
		pthread_kill(v->thread, VCPU_KICK_SIGNAL);
}

static void handle_pio(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	struct machine *m = v->m;
	uint8_t *p = (uint8_t *)run + run->io.data_offset;
	uint16_t port = run->io.port;
	unsigned size = run->io.size;
	bool claimed = true;

	for (uint32_t i = 0; i < run->io.count; i++, p += size) {
		if (run->io.direction == KVM_EXIT_IO_OUT)
			claimed = io_bus_write(&m->pio, port, p, size);
		else
			claimed = io_bus_read(&m->pio, port, p, size);
	}
	if (!claimed && log_get_level() >= LOG_DEBUG) {
		uint8_t bit = (uint8_t)(1u << (port & 7));
		if (!(__atomic_fetch_or(&m->pio_reported[port >> 3], bit, __ATOMIC_RELAXED) & bit))
			log_debug("vcpu%u: unclaimed port 0x%04x (%s, %u bytes); reads as all-ones",
			          v->id, port, run->io.direction == KVM_EXIT_IO_OUT ? "out" : "in",
			          size);
	}
}

static void handle_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	static __thread struct ratelimit rl = {.interval_ms = 5000, .burst = 5};
	unsigned len = run->mmio.len;
	bool claimed;

	if (len == 0 || len > sizeof(run->mmio.data))
		return;
	if (run->mmio.is_write)
		claimed = io_bus_write(&v->m->mmio, run->mmio.phys_addr, run->mmio.data, len);
	else
		claimed = io_bus_read(&v->m->mmio, run->mmio.phys_addr, run->mmio.data, len);
	if (!claimed && log_get_level() >= LOG_DEBUG)
		log_ratelimited(&rl, LOG_DEBUG, "vcpu%u: unclaimed MMIO %s at 0x%llx (%u bytes)",
		                v->id, run->mmio.is_write ? "write" : "read",
		                (unsigned long long)run->mmio.phys_addr, len);
}

static void seg_line(const char *name, const struct kvm_segment *s)
{
	log_err("%-4s=%04x %016llx %08x %02x%s%s%s%s", name, s->selector,
	        (unsigned long long)s->base, s->limit, s->type, s->present ? " P" : "",
	        s->l ? " L" : "", s->db ? " DB" : "", s->unusable ? " unusable" : "");
}

void vcpu_dump_state(struct vcpu *v)
{
	struct kvm_regs r;
	struct kvm_sregs s;

	if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 || ioctl(v->fd, KVM_GET_SREGS, &s) < 0) {
		log_err("vcpu%u: cannot read registers: %s", v->id, strerror(errno));
		return;
	}
	log_err("vcpu%u registers:", v->id);
	log_err("RAX=%016llx RBX=%016llx RCX=%016llx RDX=%016llx", r.rax, r.rbx, r.rcx, r.rdx);
	log_err("RSI=%016llx RDI=%016llx RBP=%016llx RSP=%016llx", r.rsi, r.rdi, r.rbp, r.rsp);
	log_err("R8 =%016llx R9 =%016llx R10=%016llx R11=%016llx", r.r8, r.r9, r.r10, r.r11);
	log_err("R12=%016llx R13=%016llx R14=%016llx R15=%016llx", r.r12, r.r13, r.r14, r.r15);
	log_err("RIP=%016llx RFL=%08llx", r.rip, r.rflags);
	seg_line("CS", &s.cs);
	seg_line("SS", &s.ss);
	seg_line("DS", &s.ds);
	seg_line("TR", &s.tr);
	log_err("GDT=%016llx %04x IDT=%016llx %04x", s.gdt.base, s.gdt.limit, s.idt.base,
	        s.idt.limit);
	log_err("CR0=%08llx CR2=%016llx CR3=%016llx CR4=%08llx EFER=%08llx", s.cr0, s.cr2, s.cr3,
	        s.cr4, s.efer);

	/* The instruction bytes at RIP, the first thing anyone asks for. */
	struct kvm_translation t = {.linear_address = s.cs.base + r.rip};
	const uint8_t *code = NULL;
	if (ioctl(v->fd, KVM_TRANSLATE, &t) == 0 && t.valid)
		code = gm_ptr(&v->m->mem, t.physical_address, 16);
	if (code) {
		char hex[16 * 3 + 1];
		for (int i = 0; i < 16; i++)
			snprintf(hex + i * 3, 4, "%02x ", code[i]);
		hex[sizeof(hex) - 2] = '\0';
		log_err("Code at RIP: %s", hex);
	}
}

static void fatal(struct vcpu *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fatal(struct vcpu *v, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_err("%s", line);
	vcpu_dump_state(v);
	machine_request_exit(v->m, MACHINE_FAILED);
}

static const char *internal_error_name(uint32_t sub)
{
	switch (sub) {
	case KVM_INTERNAL_ERROR_EMULATION:
		return "KVM could not emulate an instruction";
	case KVM_INTERNAL_ERROR_SIMUL_EX:
		return "exception while delivering an exception";
	case KVM_INTERNAL_ERROR_DELIVERY_EV:
		return "exit while delivering an event";
	default:
		return "internal error";
	}
}

/* Returns false when the vCPU must stop. */
static bool handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		handle_pio(v);
		return true;
	case KVM_EXIT_MMIO:
		handle_mmio(v);
		return true;
	case KVM_EXIT_HLT:
	case KVM_EXIT_IRQ_WINDOW_OPEN:
	case KVM_EXIT_INTR:
		return true;
	case KVM_EXIT_SHUTDOWN:
		fatal(v,
		      "vcpu%u: guest triple fault (CPU shutdown) — the guest kernel crashed "
		      "before it could report why; try a serial console earlier in its boot "
		      "(earlyprintk=serial)",
		      v->id);
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		switch (run->system_event.type) {
		case KVM_SYSTEM_EVENT_SHUTDOWN:
			machine_request_exit(v->m, MACHINE_POWEROFF);
			return false;
		case KVM_SYSTEM_EVENT_RESET:
			machine_request_exit(v->m, MACHINE_RESET);
			return false;
		default:
			fatal(v, "vcpu%u: guest crash reported by KVM (system event %u)", v->id,
			      run->system_event.type);
			return false;
		}
	case KVM_EXIT_INTERNAL_ERROR: {
		char data[128] = "";
		size_t off = 0;
		for (uint32_t i = 0; i < run->internal.ndata && i < 8 && off < sizeof(data); i++)
			off += (size_t)snprintf(data + off, sizeof(data) - off, " %llx",
			                        (unsigned long long)run->internal.data[i]);
		fatal(v, "vcpu%u: KVM internal error %u (%s); data:%s", v->id,
		      run->internal.suberror, internal_error_name(run->internal.suberror), data);
		return false;
	}
	case KVM_EXIT_FAIL_ENTRY:
		fatal(v, "vcpu%u: KVM could not enter the guest (hardware reason 0x%llx)", v->id,
		      (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		return false;
	default:
		fatal(v, "vcpu%u: unexpected KVM exit reason %u", v->id, run->exit_reason);
		return false;
	}
}

void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct machine *m = v->m;
	sigset_t set;
	char name[16];

	snprintf(name, sizeof(name), "vcpu%u", v->id);
	pthread_setname_np(pthread_self(), name);
	current_run = v->run;
	sigemptyset(&set);
	sigaddset(&set, VCPU_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);

	if (v->id == 0 && log_get_level() >= LOG_INFO) {
		/* bench/boot reads this: the monitor's set-up cost before the guest runs. */
		/* bench/snapshot reads the CLOCK_MONOTONIC time: restore-to-running. */
		struct rusage ru;
		struct timespec ts;
		getrusage(RUSAGE_SELF, &ru);
		clock_gettime(CLOCK_MONOTONIC, &ts);
		log_info("vcpu0: first KVM_RUN after %.3f ms of monitor CPU time (user %.3f, sys "
		         "%.3f) at monotonic %.6f s",
		         (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
		             (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3,
		         ru.ru_utime.tv_sec * 1e3 + ru.ru_utime.tv_usec / 1e3,
		         ru.ru_stime.tv_sec * 1e3 + ru.ru_stime.tv_usec / 1e3,
		         ts.tv_sec + ts.tv_nsec / 1e9);
	}

	v->tid = gettid();
	while (!atomic_load(&m->stopping)) {
		if (atomic_load(&m->pause_wanted)) {
			/*
			 * An exit for port or MMIO I/O completes (the IN's value reaches the
			 * register) only on the next KVM_RUN: enter with immediate_exit so it
			 * does, without running guest code, and a paused vCPU's saved state is
			 * between instructions.
			 */
			v->run->immediate_exit = 1;
			if (ioctl(v->fd, KVM_RUN, 0) == 0 || (errno != EINTR && errno != EAGAIN))
				log_debug("vcpu%u: completing I/O before pausing: %s", v->id,
				          strerror(errno));
			v->run->immediate_exit = 0;
			machine_park(m);
			continue;
		}
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				v->run->immediate_exit = 0;
				continue;
			}
			log_err("vcpu%u: KVM_RUN failed: %s", v->id, strerror(errno));
			vcpu_dump_state(v);
			machine_request_exit(m, MACHINE_FAILED);
			break;
		}
		if (!handle_exit(v))
			break;
	}
	/* With -vv, a VM stopped from the host shows where each vCPU was: hangs are debuggable. */
	if (log_get_level() >= LOG_DEBUG && machine_exit_reason(m) == MACHINE_STOPPED)
		vcpu_dump_state(v);
	current_run = NULL;
	return NULL;
}
