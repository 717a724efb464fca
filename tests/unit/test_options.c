/* test_options.c: `vmstack-vm run` option parsing — defaults, every option, every error. */
#include <fcntl.h>
#include <stdarg.h>
#include <unistd.h>

#include "options.h"
#include "test.h"
#include "util.h"

static char errbuf[512];

/* options_parse on "run" followed by the NULL-terminated arguments. */
static enum options_result parse(struct vm_config *cfg, ...)
{
	static char *argv[32];
	int argc = 0;
	va_list ap;
	char *a;

	argv[argc++] = "run";
	va_start(ap, cfg);
	while ((a = va_arg(ap, char *)) != NULL && argc < 31)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	errbuf[0] = '\0';
	return options_parse(argc, argv, cfg, errbuf, sizeof(errbuf));
}

static bool contains(const char *haystack, const char *needle)
{
	if (strstr(haystack, needle))
		return true;
	fprintf(stderr, "message \"%s\" lacks \"%s\"\n", haystack, needle);
	return false;
}

/* The arguments must be refused with a message containing both needles. */
#define FAILS(needle1, needle2, ...)                                                               \
	do {                                                                                       \
		struct vm_config c_;                                                               \
		CHECK_EQ(parse(&c_, __VA_ARGS__, (char *)NULL), OPTIONS_ERROR);                    \
		CHECK(contains(errbuf, needle1));                                                  \
		CHECK(contains(errbuf, needle2));                                                  \
	} while (0)

TEST(options_defaults)
{
	struct vm_config cfg;

	CHECK_EQ(parse(&cfg, "--kernel", "/boot/bzImage", (char *)NULL), OPTIONS_OK);
	CHECK_STR(errbuf, "");
	CHECK_STR(cfg.kernel, "/boot/bzImage");
	CHECK(cfg.initrd == NULL);
	CHECK_STR(cfg.cmdline, "console=ttyS0");
	CHECK(cfg.name == NULL);
	CHECK_EQ(cfg.memory, 512 * MiB);
	CHECK_EQ(cfg.cpus, 1);
	CHECK_STR(cfg.cpu_spec, "host");
	CHECK_EQ(cfg.cpu.base, CPU_MODEL_HOST);
	for (int i = 0; i < CPUID_NWORDS; i++)
		CHECK_EQ(cfg.cpu.add[i] | cfg.cpu.del[i], 0);
	CHECK_EQ(cfg.console, CONSOLE_STDIO);
	CHECK(cfg.console_path == NULL);
	CHECK_EQ(cfg.on_reboot, ON_REBOOT_RESTART);
	CHECK_STR(cfg.kvm_device, "/dev/kvm");
	CHECK_EQ(cfg.verbose, 0);
}

TEST(options_every_option)
{
	struct vm_config cfg;

	CHECK_EQ(parse(&cfg, "--kernel", "vmlinux", "--initrd", "initrd.cpio", "--cmdline",
	               "console=ttyS0 quiet", "--memory", "2G", "--cpus", "4", "--cpu",
	               "baseline,+avx,-nx", "--console", "pty", "--on-reboot", "exit", "--name",
	               "web1", "--kvm-device", "/dev/null", "-v", "--verbose", (char *)NULL),
	         OPTIONS_OK);
	CHECK_STR(errbuf, "");
	CHECK_STR(cfg.kernel, "vmlinux");
	CHECK_STR(cfg.initrd, "initrd.cpio");
	CHECK_STR(cfg.cmdline, "console=ttyS0 quiet");
	CHECK_EQ(cfg.memory, 2 * GiB);
	CHECK_EQ(cfg.cpus, 4);
	CHECK_STR(cfg.cpu_spec, "baseline,+avx,-nx");
	CHECK_EQ(cfg.cpu.base, CPU_MODEL_BASELINE);
	CHECK_EQ(cfg.cpu.add[CPUID_1_ECX], 1u << 28);
	CHECK_EQ(cfg.cpu.del[CPUID_80000001_EDX], 1u << 20);
	CHECK_EQ(cfg.console, CONSOLE_PTY);
	CHECK_EQ(cfg.on_reboot, ON_REBOOT_EXIT);
	CHECK_STR(cfg.name, "web1");
	CHECK_STR(cfg.kvm_device, "/dev/null");
	CHECK_EQ(cfg.verbose, 2);
}

TEST(options_value_forms)
{
	struct vm_config cfg;

	/* --opt=value, clustered short options, options after others. */
	CHECK_EQ(
	    parse(&cfg, "-vv", "--memory=64M", "--kernel=k", "--on-reboot=restart", (char *)NULL),
	    OPTIONS_OK);
	CHECK_EQ(cfg.verbose, 2);
	CHECK_EQ(cfg.memory, 64 * MiB);
	CHECK_STR(cfg.kernel, "k");
	CHECK_EQ(cfg.on_reboot, ON_REBOOT_RESTART);

	CHECK_EQ(parse(&cfg, "--kernel", "k", "--console", "file:/tmp/console.log", (char *)NULL),
	         OPTIONS_OK);
	CHECK_EQ(cfg.console, CONSOLE_FILE);
	CHECK_STR(cfg.console_path, "/tmp/console.log");
	CHECK_EQ(
	    parse(&cfg, "--console", "pty", "--console", "stdio", "--kernel", "k", (char *)NULL),
	    OPTIONS_OK);
	CHECK_EQ(cfg.console, CONSOLE_STDIO);

	/* The last of a repeated option wins; an empty command line is allowed. */
	CHECK_EQ(parse(&cfg, "--kernel", "a", "--kernel", "b", "--cmdline", "", "--cpus", "254",
	               (char *)NULL),
	         OPTIONS_OK);
	CHECK_STR(cfg.kernel, "b");
	CHECK_STR(cfg.cmdline, "");
	CHECK_EQ(cfg.cpus, 254);
}

TEST(options_missing_kernel)
{
	FAILS("--kernel", "required", "--memory", "1G");
	struct vm_config cfg;
	CHECK_EQ(parse(&cfg, (char *)NULL), OPTIONS_ERROR);
	CHECK(contains(errbuf, "--kernel"));
}

TEST(options_memory_errors)
{
	FAILS("--memory", "0", "--kernel", "k", "--memory", "0");
	FAILS("--memory", "'abc'", "--kernel", "k", "--memory", "abc");
	FAILS("--memory", "'1.5G'", "--kernel", "k", "--memory", "1.5G");
	FAILS("--memory", "'-1'", "--kernel", "k", "--memory", "-1");
	FAILS("--memory", "too large", "--kernel", "k", "--memory", "100000000000T");
	FAILS("--memory", "'100000000000T'", "--kernel", "k", "--memory", "100000000000T");
}

TEST(options_cpus_errors)
{
	FAILS("--cpus", "between 1 and 254", "--kernel", "k", "--cpus", "0");
	FAILS("--cpus", "between 1 and 254", "--kernel", "k", "--cpus", "255");
	FAILS("--cpus", "10000", "--kernel", "k", "--cpus", "10000");
	FAILS("--cpus", "not a number", "--kernel", "k", "--cpus", "abc");
	FAILS("--cpus", "not a number", "--kernel", "k", "--cpus", "4x");
	FAILS("--cpus", "not a number", "--kernel", "k", "--cpus", "-1");
	FAILS("--cpus", "not a number", "--kernel", "k", "--cpus", "");
	FAILS("--cpus", "not a number", "--kernel", "k", "--cpus", "99999999999999999999999");
}

TEST(options_value_errors)
{
	FAILS("--cpu", "xsav", "--kernel", "k", "--cpu", "host,-xsav");
	FAILS("--cpu", "empty", "--kernel", "k", "--cpu", "");
	FAILS("--console", "bogus", "--kernel", "k", "--console", "bogus");
	FAILS("--console", "file:", "--kernel", "k", "--console", "file:");
	FAILS("--on-reboot", "bogus", "--kernel", "k", "--on-reboot", "bogus");
}

TEST(options_unknown_and_stray)
{
	FAILS("--bogus", "unknown option", "--kernel", "k", "--bogus");
	FAILS("--bogus", "unknown option", "--bogus=1", "--kernel", "k");
	FAILS("-x", "unknown option", "--kernel", "k", "-x");
	/* The unknown letter is named even when it is not the last of a cluster. */
	FAILS("-x", "unknown option", "--kernel", "k", "-xv");
	FAILS("-x", "unknown option", "--kernel", "k", "-vxv");
	/* --verbose takes no value. */
	FAILS("verbose", "--help", "--kernel", "k", "--verbose=2");
	FAILS("'quiet'", "--cmdline", "--kernel", "k", "quiet");
	FAILS("'quiet'", "--cmdline", "quiet", "--kernel", "k");
}

TEST(options_missing_value)
{
	FAILS("--kernel", "needs a value", "--kernel");
	FAILS("--memory", "needs a value", "--kernel", "k", "--memory");
	FAILS("--cpus", "needs a value", "--kernel", "k", "--cpus");
	FAILS("--console", "needs a value", "--kernel", "k", "--console");
}

TEST(options_help)
{
	struct vm_config cfg;
	int saved, devnull;

	/* Help text goes to stdout; keep it out of the test log. */
	fflush(stdout);
	saved = dup(STDOUT_FILENO);
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	CHECK(saved >= 0 && devnull >= 0);
	dup2(devnull, STDOUT_FILENO);
	CHECK_EQ(parse(&cfg, "--help", (char *)NULL), OPTIONS_HELP);
	CHECK_EQ(parse(&cfg, "--kernel", "k", "-h", (char *)NULL), OPTIONS_HELP);
	CHECK_EQ(parse(&cfg, "--cpu", "help", (char *)NULL), OPTIONS_HELP);
	fflush(stdout);
	dup2(saved, STDOUT_FILENO);
	close(saved);
	close(devnull);
	CHECK(contains(options_usage, "--kernel PATH"));
}

TEST(options_parse_twice_resets_state)
{
	struct vm_config cfg;

	/* Stop in the middle of a cluster, then parse again from scratch. */
	CHECK_EQ(parse(&cfg, "-vxv", "--kernel", "a", (char *)NULL), OPTIONS_ERROR);
	CHECK_EQ(parse(&cfg, "-v", "--kernel", "b", (char *)NULL), OPTIONS_OK);
	CHECK_EQ(cfg.verbose, 1);
	CHECK_STR(cfg.kernel, "b");
	CHECK_EQ(cfg.memory, 512 * MiB);

	/* A previous run's values do not leak into the next. */
	CHECK_EQ(parse(&cfg, "--kernel", "c", "--memory", "1G", "--cpus", "8", "--name", "x",
	               (char *)NULL),
	         OPTIONS_OK);
	CHECK_EQ(parse(&cfg, "--kernel", "d", (char *)NULL), OPTIONS_OK);
	CHECK_EQ(cfg.memory, 512 * MiB);
	CHECK_EQ(cfg.cpus, 1);
	CHECK(cfg.name == NULL);
	CHECK_STR(cfg.kernel, "d");
}

TEST(options_control_and_disk_format)
{
	struct vm_config cfg;

	CHECK_EQ(parse(&cfg, "--kernel", "k", "--control", "/run/vm.sock", "--disk",
	               "path=/d.qcow2,format=qcow2,l2-cache-size=4M", NULL),
	         OPTIONS_OK);
	CHECK_STR(cfg.control_path, "/run/vm.sock");
	CHECK_EQ(cfg.disks[0].opts.format, IMG_FMT_QCOW2);
	CHECK_EQ(cfg.disks[0].opts.l2_cache_bytes, 4 * 1024 * 1024);
	options_free(&cfg);
	CHECK_EQ(parse(&cfg, "--kernel", "k", "--control", "", NULL), OPTIONS_ERROR);
	CHECK(contains(errbuf, "--control"));
	options_free(&cfg);
	CHECK_EQ(parse(&cfg, "--kernel", "k", "--disk", "path=/d,format=vmdk", NULL),
	         OPTIONS_ERROR);
	CHECK(contains(errbuf, "format=raw, qcow2 or auto"));
	options_free(&cfg);
	CHECK_EQ(parse(&cfg, "--kernel", "k", "--disk", "path=/d,l2-cache-size=2G", NULL),
	         OPTIONS_ERROR);
	CHECK(contains(errbuf, "l2-cache-size"));
	options_free(&cfg);
}

TEST(options_net_vhost)
{
	struct vm_config cfg;

	CHECK_EQ(parse(&cfg, "--kernel", "k", "--net", "tap=vm0", "--net", "tap=vm1,vhost=on",
	               "--net", "tap=vm2,vhost=off", "--net", "user,vhost=auto", (char *)NULL),
	         OPTIONS_OK);
	CHECK_EQ(cfg.nnets, 4);
	CHECK_EQ(cfg.nets[0].vhost, VHOST_AUTO);
	CHECK_EQ(cfg.nets[1].vhost, VHOST_ON);
	CHECK_EQ(cfg.nets[2].vhost, VHOST_OFF);
	CHECK_EQ(cfg.nets[3].vhost, VHOST_AUTO);
	options_free(&cfg);
	FAILS("--net tap=vm0,vhost=yes: bad vhost value", "use vhost=on, vhost=off or vhost=auto",
	      "--kernel", "k", "--net", "tap=vm0,vhost=yes");
	FAILS("--net tap=vm0,vhost: bad vhost value", "vhost=auto", "--kernel", "k", "--net",
	      "tap=vm0,vhost");
	FAILS("--net user,vhost=on: vhost=on needs a tap", "not passt", "--kernel", "k", "--net",
	      "user,vhost=on");
}
