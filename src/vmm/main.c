/* main.c: vmstack-vm — the per-VM monitor process: parse, check, create, run, supervise. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "boot.h"
#include "console.h"
#include "log.h"
#include "machine.h"
#include "options.h"
#include "util.h"
#include "vcpu.h"
#include "vmm_control.h"

#define EXIT_CONFIG      1
#define EXIT_GUEST_CRASH 2

#ifndef VMSTACK_VERSION
#define VMSTACK_VERSION "0.1"
#endif

static void console_out(void *opaque, const uint8_t *buf, size_t len)
{
	console_write(opaque, buf, len);
}

/* Maps a user-named file with an error that says which option it came from. */
static int load_file(const char *opt, const char *path, const uint8_t **data, size_t *len)
{
	int r = map_file(path, data, len);

	if (r == 0)
		return 0;
	switch (-r) {
	case ENOENT:
		log_err("%s %s: no such file", opt, path);
		break;
	case EACCES:
		log_err("%s %s: permission denied — check the file's mode and owner", opt, path);
		break;
	case EISDIR:
		log_err("%s %s: is a directory, expected a file", opt, path);
		break;
	case EINVAL:
		log_err("%s %s: not a regular file", opt, path);
		break;
	default:
		log_err("%s %s: %s", opt, path, strerror(-r));
		break;
	}
	return r;
}

static int map_boot_files(const struct vm_config *cfg, struct boot_config *boot)
{
	if (load_file("--kernel", cfg->kernel, &boot->kernel, &boot->kernel_len) < 0)
		return -1;
	if (cfg->initrd &&
	    load_file("--initrd", cfg->initrd, &boot->initrd, &boot->initrd_len) < 0) {
		unmap_file(boot->kernel, boot->kernel_len);
		boot->kernel = NULL;
		return -1;
	}
	return 0;
}

static void unmap_boot_files(struct boot_config *boot)
{
	unmap_file(boot->kernel, boot->kernel_len);
	unmap_file(boot->initrd, boot->initrd_len);
	boot->kernel = boot->initrd = NULL;
}

/*
 * Waits for the machine to stop, feeding console input to the guest meanwhile.
 * Returns MACHINE_STOPPED when the host asked for it (signal, escape key).
 */
static enum machine_exit supervise(struct machine *m, struct console *con, int sig_fd)
{
	uint8_t pending[256];
	size_t npending = 0, off = 0;
	bool input_open = con->in_fd >= 0;

	for (;;) {
		struct pollfd p[3] = {
		    {.fd = m->event_fd, .events = POLLIN},
		    {.fd = sig_fd, .events = POLLIN},
		    {.fd = (input_open && npending == 0) ? con->in_fd : -1, .events = POLLIN},
		};
		/* A full receive FIFO: retry soon rather than spin or drop keystrokes. */
		int timeout = npending ? 10 : -1;

		if (poll(p, 3, timeout) < 0 && errno != EINTR)
			return MACHINE_FAILED;
		/* The host's request first: a guest that reboots in a loop must still stop. */
		if (p[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sig_fd, &si, sizeof(si)) == sizeof(si))
				log_info("stopping the VM on signal %u (%s)", si.ssi_signo,
				         strsignal((int)si.ssi_signo));
			return MACHINE_STOPPED;
		}
		if (p[0].revents & POLLIN)
			return MACHINE_RUNNING; /* the machine has its own reason */
		if (p[2].revents & POLLNVAL) {
			input_open = false; /* stdin was closed before we started */
		} else if (p[2].revents & (POLLIN | POLLHUP | POLLERR)) {
			bool quit = false;
			ssize_t n = console_read(con, pending, sizeof(pending), &quit);
			if (quit) {
				log_info("console escape: stopping the VM");
				return MACHINE_STOPPED;
			}
			if (n < 0)
				input_open = false; /* end of input: the guest keeps running */
			else
				npending = (size_t)n, off = 0;
		}
		if (npending) {
			size_t took = machine_console_input(m, pending + off, npending);
			off += took;
			npending -= took;
		}
	}
}

/* Disks and host network ends are opened once, before the guest starts, and outlive
 * reboots; every failure is one line naming the resource. */
static int open_backends(struct vm_config *cfg)
{
	char err[512];

	for (unsigned i = 0; i < cfg->ndisks; i++) {
		cfg->disks[i].blk = blk_open(&cfg->disks[i].opts, err, sizeof(err));
		if (!cfg->disks[i].blk) {
			log_err("--disk %s", err);
			return -1;
		}
	}
	for (unsigned i = 0; i < cfg->nnets; i++) {
		cfg->nets[i].nd = netdev_open(&cfg->nets[i].opts, err, sizeof(err));
		if (!cfg->nets[i].nd) {
			log_err("--net %s", err);
			return -1;
		}
	}
	return 0;
}

static void close_backends(struct vm_config *cfg)
{
	for (unsigned i = 0; i < cfg->ndisks; i++) {
		if (cfg->disks[i].blk)
			blk_close(cfg->disks[i].blk);
		cfg->disks[i].blk = NULL;
	}
	for (unsigned i = 0; i < cfg->nnets; i++) {
		if (cfg->nets[i].nd)
			netdev_close(cfg->nets[i].nd);
		cfg->nets[i].nd = NULL;
	}
}

static int run(struct vm_config *cfgp, const struct snap_reader *restore);

static int cmd_run(int argc, char **argv)
{
	struct vm_config cfg;
	char err[512];
	int status = 0;

	switch (options_parse(argc, argv, &cfg, err, sizeof(err))) {
	case OPTIONS_HELP:
		break;
	case OPTIONS_ERROR:
		log_err("%s", err);
		status = EXIT_CONFIG;
		break;
	case OPTIONS_OK:
		cfg.argc = argc;
		cfg.argv = argv;
		status = run(&cfg, NULL);
		break;
	}
	options_free(&cfg);
	return status;
}

/* What `restore` may change: how the monitor is reached, never the machine itself. */
static bool restore_option_ok(const char *a)
{
	static const char *const ok[] = {"--control",   "--console", "--name",
	                                 "--on-reboot", "--verbose", "-v",
	                                 "-vv",         "--help",    "-h"};
	size_t n = strcspn(a, "=");

	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		if (strlen(ok[i]) == n && !strncmp(a, ok[i], n))
			return true;
	}
	return false;
}

/*
 * vmstack-vm restore DIR [--control PATH] [--console KIND] [--name N] [-v]: the machine
 * is the one saved (its `run` arguments are in the state file); the options given here
 * are added after them and win.
 */
static int cmd_restore(int argc, char **argv)
{
	struct vm_config cfg;
	struct snap_reader *rd;
	const char *saved, *dir;
	char err[512], **args;
	size_t len, nsaved = 0;
	int nargs = 0, status = EXIT_CONFIG;

	if (argc < 2 || argv[1][0] == '-') {
		log_err("restore: usage: vmstack-vm restore DIR [--control PATH] [--console KIND] "
		        "[--name NAME] [-v]");
		return (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
		           ? 0
		           : EXIT_CONFIG;
	}
	dir = argv[1];
	for (int i = 2; i < argc; i++) {
		if (argv[i][0] == '-' && !restore_option_ok(argv[i])) {
			log_err("restore %s: option %s cannot be changed at restore — the machine "
			        "is the one saved (allowed: --control, --console, --name, "
			        "--on-reboot, -v)",
			        dir, argv[i]);
			return EXIT_CONFIG;
		}
	}
	rd = snap_reader_open(dir, err, sizeof(err));
	if (!rd) {
		log_err("restore: %s", err);
		return EXIT_CONFIG;
	}
	saved = snap_get(rd, "config", 0, &len);
	if (!saved || !len || saved[len - 1] != '\0') {
		log_err("restore: %s: the saved configuration is missing or malformed",
		        snap_reader_name(rd));
		snap_reader_free(rd);
		return EXIT_CONFIG;
	}
	for (size_t i = 0; i < len; i++)
		nsaved += saved[i] == '\0';
	args = calloc(nsaved + (size_t)argc + 2, sizeof(*args));
	if (!args) {
		snap_reader_free(rd);
		return EXIT_CONFIG;
	}
	args[nargs++] = "run";
	for (size_t off = 0; off < len; off += strlen(saved + off) + 1)
		args[nargs++] = (char *)saved + off;
	for (int i = 2; i < argc; i++)
		args[nargs++] = argv[i];
	switch (options_parse(nargs, args, &cfg, err, sizeof(err))) {
	case OPTIONS_HELP:
		status = 0;
		break;
	case OPTIONS_ERROR:
		log_err("restore %s: %s", dir, err);
		break;
	case OPTIONS_OK:
		cfg.argc = nargs;
		cfg.argv = args;
		cfg.restore_dir = dir;
		status = run(&cfg, rd);
		break;
	}
	options_free(&cfg);
	free(args);
	snap_reader_free(rd);
	return status;
}

/* Runs the machine cfg describes (first restored from `restore` if given), through
 * reboots, until it stops for good. */
static int run(struct vm_config *cfgp, const struct snap_reader *restore)
{
	struct vm_config cfg = *cfgp;
	struct boot_config boot = {0};
	struct console con, vcon = {.in_fd = -1, .out_fd = -1, .pty_slave = -1};
	struct machine m;
	struct machine_host host;
	enum machine_exit why;
	char err[512];
	sigset_t sigs;
	int sig_fd, r, status = EXIT_CONFIG;
	unsigned boots = 0;
	bool host_stop, host_reset;
	struct vmm_ctl *ctl = NULL;

	log_set_level(cfg.verbose >= 2 ? LOG_DEBUG : cfg.verbose ? LOG_INFO : LOG_WARN);
	if (cfg.name) {
		/* Several VMs logging to one terminal or journal: say which one speaks. */
		static char prefix[80];
		snprintf(prefix, sizeof(prefix), "vmstack-vm[%s]", cfg.name);
		log_set_prefix(prefix);
		prctl(PR_SET_NAME, cfg.name, 0, 0, 0);
	}

	boot = (struct boot_config){
	    .kernel_path = cfg.kernel,
	    .initrd_path = cfg.initrd,
	    .cmdline = cfg.cmdline,
	};
	/* Mapped now so a bad path fails before the terminal changes; the first boot uses it.
	 * A restored machine needs the kernel only if it reboots. */
	if (!restore && map_boot_files(&cfg, &boot) < 0)
		return EXIT_CONFIG;
	if (open_backends(&cfg) < 0) {
		close_backends(&cfg);
		unmap_boot_files(&boot);
		return EXIT_CONFIG;
	}

	/* Termination signals arrive through a signalfd; vCPU threads inherit the mask. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC);
	signal(SIGPIPE, SIG_IGN);
	if (sig_fd < 0 || vcpu_signals_init() < 0) {
		log_err("cannot set up signal handling: %s", strerror(errno));
		goto out_files;
	}

	if (cfg.control_path) {
		ctl = vmm_ctl_start(cfg.control_path, &cfg, err, sizeof(err));
		if (!ctl) {
			log_err("--control %s", err);
			goto out_sig;
		}
	}
	if (console_open(&con, &cfg, err, sizeof(err)) < 0) {
		log_err("%s", err);
		goto out_sig;
	}
	host = (struct machine_host){.console_out = console_out,
	                             .opaque = &con,
	                             .device_error = vmm_ctl_device_error,
	                             .event_opaque = ctl};
	if (cfg.vconsole) {
		if (console_open_as(&vcon, cfg.vconsole_kind, cfg.vconsole_path, "--vconsole", err,
		                    sizeof(err)) < 0) {
			log_err("%s", err);
			console_close(&con);
			goto out_sig;
		}
		cfg.vconsole_in = vcon.in_fd;
		cfg.vconsole_out = vcon.out_fd;
	}

	for (;;) {
		/*
		 * The files are mapped only while the machine is built: afterwards they cost
		 * no memory, and a reboot loads the kernel as it is on disk then.
		 */
		if (restore && boots == 0) {
			r = machine_restore(&m, &cfg, restore, cfg.restore_dir, &host, err,
			                    sizeof(err));
		} else {
			if (!boot.kernel && map_boot_files(&cfg, &boot) < 0) {
				status = EXIT_CONFIG;
				break;
			}
			r = machine_create(&m, &cfg, &boot, &host, err, sizeof(err));
			unmap_boot_files(&boot);
		}
		if (r < 0) {
			log_err("%s", err);
			status = EXIT_CONFIG;
			break;
		}
		boots++;
		if (machine_start(&m) == 0) {
			vmm_ctl_attach(ctl, &m);
			why = supervise(&m, &con, sig_fd);
		} else {
			why = MACHINE_FAILED;
		}
		host_stop = why == MACHINE_STOPPED;
		if (host_stop)
			machine_request_exit(&m, MACHINE_STOPPED);
		why = machine_stop(&m);
		if (host_stop)
			why = MACHINE_STOPPED; /* wins over a reset the guest did meanwhile */
		why = vmm_ctl_detach(ctl, why, &host_reset);
		machine_destroy(&m);

		if (why == MACHINE_RESET && (cfg.on_reboot == ON_REBOOT_RESTART || host_reset)) {
			log_info("guest rebooted: restarting it (boot %u)", boots + 1);
			continue;
		}
		switch (why) {
		case MACHINE_POWEROFF:
			log_info("guest powered off");
			status = 0;
			break;
		case MACHINE_RESET:
			log_info("guest rebooted: exiting (--on-reboot exit)");
			status = 0;
			break;
		case MACHINE_STOPPED:
			status = 0;
			break;
		default:
			status = EXIT_GUEST_CRASH;
			break;
		}
		break;
	}
	console_close(&con);
	if (cfg.vconsole)
		console_close(&vcon);
out_sig:
	vmm_ctl_stop(ctl);
	close(sig_fd);
out_files:
	unmap_boot_files(&boot);
	close_backends(&cfg);
	return status;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: vmstack-vm run --kernel PATH [options]   (vmstack-vm run --help)\n"
	           "       vmstack-vm restore DIR [--control PATH] [--console KIND] [-v]\n"
	           "       vmstack-vm --version\n");
}

int main(int argc, char **argv)
{
	/*
	 * Started with stdin/stdout/stderr closed, the next open() would take their numbers
	 * and console or log output would land in an eventfd. Put /dev/null there first.
	 */
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd)
			return EXIT_CONFIG;
	}
	log_set_prefix("vmstack-vm");
	if (argc < 2) {
		usage(stderr);
		return EXIT_CONFIG;
	}
	if (strcmp(argv[1], "run") == 0)
		return cmd_run(argc - 1, argv + 1);
	if (strcmp(argv[1], "restore") == 0)
		return cmd_restore(argc - 1, argv + 1);
	if (strcmp(argv[1], "--version") == 0) {
		printf("vmstack-vm %s\n", VMSTACK_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	log_err("unknown command '%s' — the commands are 'run' and 'restore' (vmstack-vm --help)",
	        argv[1]);
	return EXIT_CONFIG;
}
