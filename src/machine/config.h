/* config.h: everything `vmstack-vm run` was asked for, checked before the guest starts. */
#ifndef VMSTACK_CONFIG_H
#define VMSTACK_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "block.h"
#include "cpuid.h"
#include "netdev.h"

enum console_kind { CONSOLE_STDIO, CONSOLE_FILE, CONSOLE_PTY };
enum on_reboot { ON_REBOOT_RESTART, ON_REBOOT_EXIT };

#define VM_MAX_DISKS          16
#define VM_MAX_NETS           8
#define VM_MAX_QUEUES         8
#define VIRTIO_BLK_SERIAL_LEN 20

/* --disk path=IMG[,readonly][,serial=S][,cache=none|writeback][,aio=...][,queues=N] */
struct disk_config {
	struct blk_opts opts;
	char serial[VIRTIO_BLK_SERIAL_LEN + 1];
	unsigned queues;
	char *spec;      /* the option's copy that opts point into (freed by options_free) */
	struct blk *blk; /* opened by the monitor before the guest starts; outlives reboots */
};

/* --net tap=NAME[,mac=M] | tap,fd=N[,mac=M] | user[,mac=M] */
/* vhost= of --net: the kernel's vhost-net as the data path of a tap (vhost_net.h). */
enum vhost_mode {
	VHOST_AUTO, /* when /dev/vhost-net can be used, else our own path (the default) */
	VHOST_ON,   /* required: an error before the guest starts if it cannot be used */
	VHOST_OFF,
};

struct net_config {
	struct netdev_opts opts;
	uint8_t mac[6];
	enum vhost_mode vhost;
	char *spec;        /* the option's copy that opts point into (freed by options_free) */
	struct netdev *nd; /* opened before the guest starts */
};

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
	struct disk_config disks[VM_MAX_DISKS];
	unsigned ndisks;
	struct net_config nets[VM_MAX_NETS];
	unsigned nnets;
	bool rng;
	bool vconsole; /* a virtio console port, on vconsole_kind (FILE or PTY) */
	enum console_kind vconsole_kind;
	const char *vconsole_path;
	int vconsole_in, vconsole_out; /* its host fds, opened before the guest starts */
	const char *control_path;      /* --control socket, NULL: none */
	/* The `run` arguments as given (saved in snapshots; restore parses them again). */
	int argc;
	char **argv;
	const char *restore_dir; /* restore: the snapshot directory (machine_restore) */
};

#endif
