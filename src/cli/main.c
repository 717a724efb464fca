/* main.c: `vmstack` — the command-line tool; dispatches to one command per table entry. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img_cli.h"
#include "log.h"
#include "util.h"

#ifndef VMSTACK_VERSION
#define VMSTACK_VERSION "0.1"
#endif

#define EXIT_USAGE 2

/* run() gets argv[0] = the command name; returns the exit status. */
struct cli_command {
	const char *name;
	const char *summary;
	const char *log_prefix; /* for its error lines */
	int (*run)(int argc, char **argv);
};

static int run_help(int argc, char **argv);
static int run_version(int argc, char **argv);

static const struct cli_command commands[] = {
    {"img", "create, inspect, check and convert disk images (like qemu-img)", "vmstack img",
     cli_img_main},
    {"help", "this text; `vmstack help COMMAND` for one command", "vmstack", run_help},
    {"version", "print the version", "vmstack", run_version},
};

static const struct cli_command *find_command(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: vmstack COMMAND [options]\n\nCommands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\n  --version  print the version\n");
}

static int run_help(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "img") == 0) {
		cli_img_usage();
		return 0;
	}
	if (argc > 1 && !find_command(argv[1])) {
		log_err("help: unknown command '%s' — try `vmstack help`", argv[1]);
		return EXIT_USAGE;
	}
	usage(stdout);
	return 0;
}

static int run_version(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("vmstack %s\n", VMSTACK_VERSION);
	return 0;
}

int main(int argc, char **argv)
{
	const struct cli_command *cmd;
	const char *name;

	log_set_prefix("vmstack");
	if (argc < 2) {
		log_err("missing command — try `vmstack help`");
		return EXIT_USAGE;
	}
	name = argv[1];
	if (!strcmp(name, "--version") || !strcmp(name, "-V"))
		name = "version";
	else if (!strcmp(name, "--help") || !strcmp(name, "-h"))
		name = "help";
	cmd = find_command(name);
	if (!cmd) {
		log_err("unknown command '%s' — try `vmstack help`", argv[1]);
		return EXIT_USAGE;
	}
	log_set_prefix(cmd->log_prefix);
	return cmd->run(argc - 1, argv + 1);
}
