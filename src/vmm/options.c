/* options.c: parses and checks `vmstack-vm run` options; every error names the option. */
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

const char options_usage[] =
    "usage: vmstack-vm run --kernel PATH [options]\n"
    "\n"
    "  --kernel PATH        bzImage or ELF vmlinux to boot directly\n"
    "  --initrd PATH        initial ramdisk (cpio)\n"
    "  --cmdline STR        kernel command line (default \"console=ttyS0\")\n"
    "  --memory SIZE        guest RAM, e.g. 512M, 2G (default 512M)\n"
    "  --cpus N             number of vCPUs (default 1)\n"
    "  --cpu MODEL          host | baseline | +feat,-feat,... ('--cpu help' lists features)\n"
    "  --console KIND       stdio (default; Ctrl-A x quits) | file:PATH | pty\n"
    "  --on-reboot ACTION   restart (default) | exit\n"
    "  --name NAME          a name for messages and process listings\n"
    "  --kvm-device PATH    the KVM device (default /dev/kvm)\n"
    "  -v, --verbose        more messages (twice: debug)\n"
    "  -h, --help           this text\n"
    "\n"
    "Exit status: 0 after the guest powers off (or reboots, with --on-reboot exit, or the\n"
    "host stops it with SIGTERM or Ctrl-A x), 1 for a configuration or start-up error,\n"
    "2 when the guest crashed (triple fault, KVM internal error).\n";

enum {
	OPT_KERNEL = 256,
	OPT_INITRD,
	OPT_CMDLINE,
	OPT_MEMORY,
	OPT_CPUS,
	OPT_CPU,
	OPT_CONSOLE,
	OPT_ON_REBOOT,
	OPT_NAME,
	OPT_KVM_DEVICE,
};

static const struct option long_opts[] = {
    {"kernel", required_argument, NULL, OPT_KERNEL},
    {"initrd", required_argument, NULL, OPT_INITRD},
    {"cmdline", required_argument, NULL, OPT_CMDLINE},
    {"memory", required_argument, NULL, OPT_MEMORY},
    {"cpus", required_argument, NULL, OPT_CPUS},
    {"cpu", required_argument, NULL, OPT_CPU},
    {"console", required_argument, NULL, OPT_CONSOLE},
    {"on-reboot", required_argument, NULL, OPT_ON_REBOOT},
    {"name", required_argument, NULL, OPT_NAME},
    {"kvm-device", required_argument, NULL, OPT_KVM_DEVICE},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int parse_cpus(const char *s, unsigned *out, char *err, size_t errlen)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (!*s || *end || errno || s[0] == '-') {
		snprintf(err, errlen, "--cpus '%s': not a number", s);
		return -EINVAL;
	}
	if (v == 0 || v > VM_MAX_CPUS) {
		snprintf(err, errlen, "--cpus %s: must be between 1 and %d", s, VM_MAX_CPUS);
		return -ERANGE;
	}
	*out = (unsigned)v;
	return 0;
}

enum options_result options_parse(int argc, char **argv, struct vm_config *cfg, char *err,
                                  size_t errlen)
{
	int c, r;

	memset(cfg, 0, sizeof(*cfg));
	cfg->cmdline = "console=ttyS0";
	cfg->memory = 512 * MiB;
	cfg->cpus = 1;
	cfg->cpu_spec = "host";
	cfg->kvm_device = "/dev/kvm";
	cpu_model_parse("host", &cfg->cpu, err, errlen);

	optind = 0; /* full reset of getopt state: options_parse may run more than once */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":vh", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_KERNEL:
			cfg->kernel = optarg;
			break;
		case OPT_INITRD:
			cfg->initrd = optarg;
			break;
		case OPT_CMDLINE:
			cfg->cmdline = optarg;
			break;
		case OPT_MEMORY:
			r = parse_size(optarg, &cfg->memory);
			if (r == -ERANGE) {
				snprintf(err, errlen, "--memory '%s': too large", optarg);
				return OPTIONS_ERROR;
			}
			if (r < 0) {
				snprintf(err, errlen,
				         "--memory '%s': not a size — use a number with K, M, G or "
				         "T, e.g. 512M",
				         optarg);
				return OPTIONS_ERROR;
			}
			if (cfg->memory == 0) {
				snprintf(err, errlen,
				         "--memory 0: a guest needs some memory — e.g. "
				         "--memory 512M");
				return OPTIONS_ERROR;
			}
			break;
		case OPT_CPUS:
			if (parse_cpus(optarg, &cfg->cpus, err, errlen) < 0)
				return OPTIONS_ERROR;
			break;
		case OPT_CPU:
			if (strcmp(optarg, "help") == 0) {
				char names[2048];
				cpu_model_list_features(names, sizeof(names));
				printf("CPU models: host (everything KVM offers), baseline "
				       "(x86-64-v2)\nfeatures for +/-: %s\n",
				       names);
				return OPTIONS_HELP;
			}
			cfg->cpu_spec = optarg;
			if (cpu_model_parse(optarg, &cfg->cpu, err, errlen) < 0)
				return OPTIONS_ERROR;
			break;
		case OPT_CONSOLE:
			if (strcmp(optarg, "stdio") == 0) {
				cfg->console = CONSOLE_STDIO;
			} else if (strcmp(optarg, "pty") == 0) {
				cfg->console = CONSOLE_PTY;
			} else if (strncmp(optarg, "file:", 5) == 0 && optarg[5]) {
				cfg->console = CONSOLE_FILE;
				cfg->console_path = optarg + 5;
			} else {
				snprintf(err, errlen,
				         "--console '%s': expected stdio, file:PATH or pty",
				         optarg);
				return OPTIONS_ERROR;
			}
			break;
		case OPT_ON_REBOOT:
			if (strcmp(optarg, "restart") == 0) {
				cfg->on_reboot = ON_REBOOT_RESTART;
			} else if (strcmp(optarg, "exit") == 0) {
				cfg->on_reboot = ON_REBOOT_EXIT;
			} else {
				snprintf(err, errlen, "--on-reboot '%s': expected restart or exit",
				         optarg);
				return OPTIONS_ERROR;
			}
			break;
		case OPT_NAME:
			cfg->name = optarg;
			break;
		case OPT_KVM_DEVICE:
			cfg->kvm_device = optarg;
			break;
		case 'v':
			cfg->verbose++;
			break;
		case 'h':
			fputs(options_usage, stdout);
			return OPTIONS_HELP;
		case ':':
			snprintf(err, errlen, "%s: needs a value — see vmstack-vm run --help",
			         argv[optind - 1]);
			return OPTIONS_ERROR;
		default:
			/*
			 * An unknown letter inside a cluster ("-xv") leaves optind on that
			 * cluster, so argv[optind - 1] would name the argument before it.
			 * optopt holds the letter then; for long options it is 0 or the
			 * option's own value ('v', 'h' for "--verbose=2").
			 */
			if (optopt > 0 && optopt < 256 && !strchr("vh", optopt))
				snprintf(err, errlen,
				         "unknown option '-%c' — see vmstack-vm run --help",
				         optopt);
			else
				snprintf(err, errlen,
				         "unknown option '%s' — see vmstack-vm run --help",
				         argv[optind - 1]);
			return OPTIONS_ERROR;
		}
	}
	if (optind < argc) {
		snprintf(err, errlen,
		         "unexpected argument '%s' — to pass it to the kernel, use --cmdline",
		         argv[optind]);
		return OPTIONS_ERROR;
	}
	if (!cfg->kernel) {
		snprintf(err, errlen,
		         "--kernel is required — e.g. vmstack-vm run --kernel bzImage");
		return OPTIONS_ERROR;
	}
	return OPTIONS_OK;
}
