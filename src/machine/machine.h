/* machine.h: one x86 virtual machine — KVM VM, RAM, legacy devices, vCPU threads. */
#ifndef VMSTACK_MACHINE_H
#define VMSTACK_MACHINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "acpi_pm.h"
#include "boot.h"
#include "cmos_rtc.h"
#include "config.h"
#include "guest_mem.h"
#include "hv.h"
#include "i8042.h"
#include "iobus.h"
#include "pci.h"
#include "snapshot_file.h"

struct serial8250;
struct machine;
struct virtio_blk;
struct virtio_rng;
struct virtio_net;
struct virtio_console;

/* Why the machine stopped running. */
enum machine_exit {
	MACHINE_RUNNING,
	MACHINE_POWEROFF, /* the guest powered off */
	MACHINE_RESET,    /* the guest asked for a reboot */
	MACHINE_FAILED,   /* triple fault, KVM internal error, ...: already reported */
	MACHINE_STOPPED,  /* the host stopped it (signal, console escape) */
};

struct vcpu {
	struct machine *m;
	unsigned id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool started;
	int tid;                  /* the vCPU thread's kernel id (query-cpus); 0 until it runs */
	struct kvm_cpuid2 *cpuid; /* what KVM_SET_CPUID2 was given (saved in snapshots) */
};

/* What the machine needs from the process around it. */
struct machine_host {
	/* Bytes the guest wrote to its serial console. Called on vCPU threads. */
	void (*console_out)(void *opaque, const uint8_t *buf, size_t len);
	void *opaque;
	/* A device failed (DEVICE_ERROR): device name, reason ("needs-reset", "io-error"),
	 * one-line message. Optional; any thread. */
	void (*device_error)(void *opaque, const char *device, const char *reason, const char *msg);
	void *event_opaque;
};

struct machine {
	const struct vm_config *cfg;
	struct machine_host host;
	struct hv hv;
	struct guest_mem mem;
	struct io_bus pio, mmio;
	struct kvm_cpuid2 *supported_cpuid;
	struct vcpu *vcpus;
	unsigned ncpus;
	struct boot_info boot;

	struct serial8250 *com1;
	struct io_region com1_io;
	struct cmos_rtc rtc;
	struct i8042 kbd;
	struct acpi_pm pm;
	struct io_region port_sink[2]; /* POST code 0x80, delay port 0xed */

	struct pci_bus pci;
	bool pci_ready;
	struct virtio_blk *blk[VM_MAX_DISKS];
	struct virtio_net *net[VM_MAX_NETS];
	struct virtio_rng *rng;
	struct virtio_console *vcon;

	pthread_mutex_t exit_lock;
	enum machine_exit exit_reason;
	atomic_bool stopping;
	int event_fd; /* readable once exit_reason is set */

	/* Pause (machine_pause/resume): vCPUs park before KVM_RUN while pause_wanted. */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;
	atomic_bool pause_wanted;
	unsigned parked; /* vCPU threads waiting in the park */
	bool paused;
	struct kvm_clock_data paused_clock; /* kvmclock at pause, restored at resume */
	uint8_t pio_reported[65536 / 8];    /* unclaimed ports already logged (debug level) */
};

/*
 * Creates the VM from `cfg` and loads the kernel described by `boot` (file contents
 * already read). On failure returns -errno with a one-line message in err and leaves
 * nothing allocated. The vCPUs do not run until machine_start().
 */
int machine_create(struct machine *m, const struct vm_config *cfg, const struct boot_config *boot,
                   const struct machine_host *host, char *err, size_t errlen);

/*
 * Creates the VM a snapshot describes (`r`, opened on directory `dir`; cfg is the saved
 * configuration): RAM mapped copy-on-write from DIR/memory, every vCPU, interrupt
 * controller and device as saved. The vCPUs do not run until machine_start().
 */
int machine_restore(struct machine *m, const struct vm_config *cfg, const struct snap_reader *r,
                    const char *dir, const struct machine_host *host, char *err, size_t errlen);

/* What a snapshot wrote. */
struct machine_save_info {
	uint64_t state_bytes, memory_bytes; /* memory: data written (the file is sparse) */
	double seconds;                     /* from pause to files on disk */
};

/*
 * Saves the machine into directory `dir` (created if needed): guest RAM and, through w
 * (the caller commits it, after adding its own sections), the state of every vCPU,
 * interrupt controller and device. Pauses the vCPUs and quiesces the devices (in-flight
 * disk requests complete, disks flushed); the machine stays paused afterwards (resume
 * with machine_resume). Any thread but a vCPU's. 0 or -errno with a line in err.
 */
int machine_save(struct machine *m, struct snap_writer *w, const char *dir,
                 struct machine_save_info *info, char *err, size_t errlen);

/* Loads the VM-wide and device sections (machine_restore's last step). */
int machine_state_load(struct machine *m, const struct snap_reader *r, char *err, size_t errlen);

/* Starts one thread per vCPU. SIGUSR1 must have vcpu_kick_handler installed (see vcpu.h). */
int machine_start(struct machine *m);

/* Records why the machine should stop (the first reason wins) and wakes event_fd. */
void machine_request_exit(struct machine *m, enum machine_exit why);

/* The recorded exit reason (MACHINE_RUNNING while none). */
enum machine_exit machine_exit_reason(struct machine *m);

/* Stops and joins the vCPU threads; returns the recorded exit reason. */
enum machine_exit machine_stop(struct machine *m);

void machine_destroy(struct machine *m);

/*
 * Stops every vCPU outside KVM_RUN and freezes the guest's kvmclock (restored at resume,
 * so guest time does not advance while paused, as with QEMU's stop). Waits until all
 * vCPUs have parked; returns 0, or -ESHUTDOWN if the machine is stopping. Idempotent.
 * Any thread but a vCPU's.
 */
int machine_pause(struct machine *m);
/* Restores the clock and lets the vCPUs run again. Idempotent. */
int machine_resume(struct machine *m);
bool machine_paused(struct machine *m);
/* Called by a vCPU thread before KVM_RUN when pause_wanted is set. */
void machine_park(struct machine *m);

/* Presses the ACPI power button (PM1 PWRBTN_STS + SCI): an ACPI OS shuts down in order. */
void machine_powerdown(struct machine *m);

/* Host keyboard input for the serial console; returns the bytes accepted. */
size_t machine_console_input(struct machine *m, const uint8_t *buf, size_t len);

#endif
