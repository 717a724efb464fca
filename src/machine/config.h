/* config.h: everything `vmstack-vm run` was asked for, checked before the guest starts. */
#ifndef VMSTACK_CONFIG_H
#define VMSTACK_CONFIG_H

#include <stdint.h>

#include "cpuid.h"

enum console_kind { CONSOLE_STDIO, CONSOLE_FILE, CONSOLE_PTY };
enum on_reboot { ON_REBOOT_RESTART, ON_REBOOT_EXIT };

struct vm_config {
	const char *kernel;
	const char *initrd;  /* NULL: none */
	const char *cmdline; /* never NULL after parsing */
	const char *name;    /* NULL: none */
	uint64_t memory;
	unsigned cpus;
	const char *cpu_spec;
	struct cpu_model cpu;
	enum console_kind console;
	const char *console_path; /* for CONSOLE_FILE */
	enum on_reboot on_reboot;
	const char *kvm_device; /* "/dev/kvm" unless overridden */
	int verbose;
};

#endif
