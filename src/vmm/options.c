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
    "  --disk path=IMG[,readonly][,serial=S][,cache=writeback|none][,aio=auto|io_uring|threads]\n"
    "       [,queues=N][,format=raw|qcow2|auto][,l2-cache-size=SIZE]\n"
    "                       a virtio-blk disk on a raw or qcow2 image (repeatable: vda, vdb, ...)\n"
    "  --net tap=NAME[,mac=MAC][,vhost=auto|on|off] | tap,fd=N[,...] | user[,mac=MAC]\n"
    "                       a virtio-net interface on a tap device (served by the kernel's\n"
    "                       vhost-net when /dev/vhost-net is usable), or user-mode\n"
    "                       networking through passt (guest 10.0.2.15/24, host 10.0.2.2)\n"
    "  --rng                a virtio-rng entropy device fed by the host's getrandom()\n"
    "  --control PATH       a QMP-style control socket (mode 0600): query-status, stop, cont,\n"
    "                       system_reset, quit, query-cpus-fast, query-block, query-stats, ...\n"
    "  --vconsole KIND      a virtio console port (/dev/hvc0): file:PATH | pty\n"
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
	OPT_DISK,
	OPT_NET,
	OPT_RNG,
	OPT_CONTROL,
	OPT_VCONSOLE,
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
    {"disk", required_argument, NULL, OPT_DISK},
    {"net", required_argument, NULL, OPT_NET},
    {"rng", no_argument, NULL, OPT_RNG},
    {"control", required_argument, NULL, OPT_CONTROL},
    {"vconsole", required_argument, NULL, OPT_VCONSOLE},
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

/*
 * Splits "a=1,b,c=x" in place into items; for each calls fn(key, value-or-NULL).
 * Returns the first error fn returned.
 */
static int parse_items(char *spec, int (*fn)(void *ctx, const char *key, const char *val),
                       void *ctx)
{
	char *save = NULL;

	for (char *it = strtok_r(spec, ",", &save); it; it = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(it, '=');
		int r;
		if (eq)
			*eq++ = 0;
		r = fn(ctx, it, eq);
		if (r < 0)
			return r;
	}
	return 0;
}

struct item_ctx {
	const char *opt, *spec;
	char *err;
	size_t errlen;
	void *out;
};

static int bad_item(struct item_ctx *c, const char *key, const char *fmt, const char *hint)
{
	char what[160];

	snprintf(what, sizeof(what), fmt, key);
	snprintf(c->err, c->errlen, "%s %s: %s — %s", c->opt, c->spec, what, hint);
	return -EINVAL;
}

static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	if (!s || !*s || s[0] == '-')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (*end || errno || v < min || v > max)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static int disk_item(void *ctx, const char *key, const char *val)
{
	struct item_ctx *c = ctx;
	struct disk_config *d = c->out;
	static const char keys[] =
	    "known keys: path, format, readonly, serial, cache, aio, queues, l2-cache-size";

	if (strcmp(key, "path") == 0 && val && *val) {
		d->opts.path = val;
	} else if (strcmp(key, "readonly") == 0 && (!val || !strcmp(val, "on"))) {
		d->opts.readonly = true;
	} else if (strcmp(key, "readonly") == 0 && !strcmp(val, "off")) {
		d->opts.readonly = false;
	} else if (strcmp(key, "serial") == 0 && val) {
		if (strlen(val) > VIRTIO_BLK_SERIAL_LEN)
			return bad_item(c, key, "%s is longer than 20 bytes",
			                "virtio-blk serials hold at most 20");
		snprintf(d->serial, sizeof(d->serial), "%s", val);
	} else if (strcmp(key, "cache") == 0 && val && !strcmp(val, "none")) {
		d->opts.cache = BLK_CACHE_NONE;
	} else if (strcmp(key, "cache") == 0 && val && !strcmp(val, "writeback")) {
		d->opts.cache = BLK_CACHE_WRITEBACK;
	} else if (strcmp(key, "cache") == 0) {
		return bad_item(c, key, "bad %s value", "use cache=writeback or cache=none");
	} else if (strcmp(key, "aio") == 0 && val && !strcmp(val, "auto")) {
		d->opts.aio = BLK_AIO_AUTO;
	} else if (strcmp(key, "aio") == 0 && val && !strcmp(val, "io_uring")) {
		d->opts.aio = BLK_AIO_IO_URING;
	} else if (strcmp(key, "aio") == 0 && val && !strcmp(val, "threads")) {
		d->opts.aio = BLK_AIO_THREADS;
	} else if (strcmp(key, "aio") == 0) {
		return bad_item(c, key, "bad %s value", "use aio=auto, io_uring or threads");
	} else if (strcmp(key, "format") == 0 && val &&
	           (!strcmp(val, "raw") || !strcmp(val, "qcow2") || !strcmp(val, "auto"))) {
		d->opts.format = (enum img_format)img_format_parse(val);
	} else if (strcmp(key, "format") == 0) {
		return bad_item(c, key, "bad %s value", "use format=raw, qcow2 or auto");
	} else if (strcmp(key, "l2-cache-size") == 0) {
		if (!val || parse_size(val, &d->opts.l2_cache_bytes) < 0 ||
		    d->opts.l2_cache_bytes > 1 * GiB)
			return bad_item(c, key, "bad %s value",
			                "use a size up to 1G such as l2-cache-size=4M");
	} else if (strcmp(key, "queues") == 0) {
		if (parse_uint(val, 1, VM_MAX_QUEUES, &d->queues) < 0)
			return bad_item(c, key, "bad %s value", "use queues=1 to 8");
	} else if (!val && !strchr(key, '=') && !d->opts.path && *key && key[0] != '.' &&
	           strchr(key, '/')) {
		d->opts.path = key; /* --disk ./img or /path/img: path= may be left out */
	} else {
		return bad_item(c, key, "unknown or incomplete key '%s'", keys);
	}
	return 0;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
	unsigned v[6];
	char extra;

	if (!s || sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
	                 &extra) != 6)
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
	if (mac[0] & 1)
		return -EINVAL; /* multicast */
	return 0;
}

static int net_item(void *ctx, const char *key, const char *val)
{
	struct item_ctx *c = ctx;
	struct net_config *n = c->out;
	unsigned fd;

	if (strcmp(key, "tap") == 0) {
		n->opts.kind = NETDEV_TAP;
		n->opts.ifname = val;
		if (val && strlen(val) >= 16)
			return bad_item(c, val, "interface name '%s' is too long",
			                "Linux interface names have at most 15 characters");
	} else if (strcmp(key, "user") == 0 && !val) {
		n->opts.kind = NETDEV_USER;
	} else if (strcmp(key, "fd") == 0) {
		if (parse_uint(val, 0, 65535, &fd) < 0)
			return bad_item(c, key, "bad %s value", "use fd=N with an open tap fd");
		n->opts.fd = (int)fd;
	} else if (strcmp(key, "mac") == 0) {
		if (parse_mac(val, n->mac) < 0)
			return bad_item(c, key, "bad %s address",
			                "use six hex bytes like 52:54:00:12:34:56 (unicast)");
	} else if (strcmp(key, "vhost") == 0) {
		if (val && strcmp(val, "on") == 0)
			n->vhost = VHOST_ON;
		else if (val && strcmp(val, "off") == 0)
			n->vhost = VHOST_OFF;
		else if (val && strcmp(val, "auto") == 0)
			n->vhost = VHOST_AUTO;
		else
			return bad_item(c, key, "bad %s value",
			                "use vhost=on, vhost=off or vhost=auto");
	} else {
		return bad_item(c, key, "unknown key '%s'",
		                "known keys: tap, user, fd, mac, vhost");
	}
	return 0;
}

static int parse_disk(struct vm_config *cfg, char *spec, char *err, size_t errlen)
{
	struct disk_config *d;
	struct item_ctx c = {.opt = "--disk", .spec = spec, .err = err, .errlen = errlen};
	char *copy;

	if (cfg->ndisks == VM_MAX_DISKS) {
		snprintf(err, errlen, "--disk %s: at most %d disks", spec, VM_MAX_DISKS);
		return -EINVAL;
	}
	d = &cfg->disks[cfg->ndisks];
	memset(d, 0, sizeof(*d));
	d->queues = 1;
	copy = d->spec = strdup(spec); /* items point into it until options_free() */
	if (!copy)
		return -ENOMEM;
	cfg->ndisks++;
	c.out = d;
	if (parse_items(copy, disk_item, &c) < 0)
		return -EINVAL;
	if (!d->opts.path) {
		snprintf(err, errlen, "--disk %s: no image — use --disk path=IMG", spec);
		return -EINVAL;
	}
	return 0;
}

static int parse_net(struct vm_config *cfg, char *spec, char *err, size_t errlen)
{
	struct net_config *n;
	struct item_ctx c = {.opt = "--net", .spec = spec, .err = err, .errlen = errlen};
	unsigned i = cfg->nnets;
	char *copy;

	if (i == VM_MAX_NETS) {
		snprintf(err, errlen, "--net %s: at most %d interfaces", spec, VM_MAX_NETS);
		return -EINVAL;
	}
	n = &cfg->nets[i];
	memset(n, 0, sizeof(*n));
	n->opts.kind = (enum netdev_kind) - 1;
	n->opts.fd = -1;
	/* QEMU's locally administered prefix; the last byte tells interfaces apart. */
	memcpy(n->mac, (uint8_t[6]){0x52, 0x54, 0x00, 0x12, 0x34, (uint8_t)(0x56 + i)}, 6);
	copy = n->spec = strdup(spec);
	if (!copy)
		return -ENOMEM;
	cfg->nnets++;
	c.out = n;
	if (parse_items(copy, net_item, &c) < 0)
		return -EINVAL;
	if ((int)n->opts.kind == -1) {
		snprintf(err, errlen, "--net %s: say tap=NAME, tap,fd=N or user", spec);
		return -EINVAL;
	}
	if (n->opts.kind == NETDEV_TAP && !n->opts.ifname && n->opts.fd < 0) {
		snprintf(err, errlen, "--net %s: tap needs a name (tap=NAME) or an fd (tap,fd=N)",
		         spec);
		return -EINVAL;
	}
	if (n->opts.kind == NETDEV_USER && n->opts.fd >= 0) {
		snprintf(err, errlen, "--net %s: fd= is for tap devices", spec);
		return -EINVAL;
	}
	if (n->opts.kind == NETDEV_USER && n->vhost == VHOST_ON) {
		snprintf(err, errlen,
		         "--net %s: vhost=on needs a tap (vhost-net serves tap devices, not passt)",
		         spec);
		return -EINVAL;
	}
	return 0;
}

static enum options_result parse_args(int argc, char **argv, struct vm_config *cfg, char *err,
                                      size_t errlen);

/* Frees what parse_args() allocated on the way to an error. */
enum options_result options_parse(int argc, char **argv, struct vm_config *cfg, char *err,
                                  size_t errlen)
{
	enum options_result r = parse_args(argc, argv, cfg, err, errlen);

	if (r == OPTIONS_ERROR)
		options_free(cfg);
	return r;
}

void options_free(struct vm_config *cfg)
{
	for (unsigned i = 0; i < cfg->ndisks; i++) {
		free(cfg->disks[i].spec);
		cfg->disks[i].spec = NULL;
	}
	for (unsigned i = 0; i < cfg->nnets; i++) {
		free(cfg->nets[i].spec);
		cfg->nets[i].spec = NULL;
	}
}

static enum options_result parse_args(int argc, char **argv, struct vm_config *cfg, char *err,
                                      size_t errlen)
{
	int c, r;

	memset(cfg, 0, sizeof(*cfg));
	cfg->cmdline = "console=ttyS0";
	cfg->memory = 512 * MiB;
	cfg->cpus = 1;
	cfg->cpu_spec = "host";
	cfg->kvm_device = "/dev/kvm";
	cfg->vconsole_in = cfg->vconsole_out = -1;
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
		case OPT_DISK:
			if (parse_disk(cfg, optarg, err, errlen) < 0)
				return OPTIONS_ERROR;
			break;
		case OPT_NET:
			if (parse_net(cfg, optarg, err, errlen) < 0)
				return OPTIONS_ERROR;
			break;
		case OPT_CONTROL:
			if (!*optarg) {
				snprintf(err, errlen, "--control: empty path — give a socket path");
				return OPTIONS_ERROR;
			}
			cfg->control_path = optarg;
			break;
		case OPT_RNG:
			cfg->rng = true;
			break;
		case OPT_VCONSOLE:
			cfg->vconsole = true;
			if (strcmp(optarg, "pty") == 0) {
				cfg->vconsole_kind = CONSOLE_PTY;
			} else if (strncmp(optarg, "file:", 5) == 0 && optarg[5]) {
				cfg->vconsole_kind = CONSOLE_FILE;
				cfg->vconsole_path = optarg + 5;
			} else {
				snprintf(err, errlen, "--vconsole '%s': expected file:PATH or pty",
				         optarg);
				return OPTIONS_ERROR;
			}
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
