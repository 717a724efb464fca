/* options.h: `vmstack-vm run` command-line parsing into a checked vm_config. */
#ifndef VMSTACK_OPTIONS_H
#define VMSTACK_OPTIONS_H

#include <stddef.h>

#include "config.h"

/* APIC ids must fit the 8-bit xAPIC id used by the MP table and MADT entries. */
#define VM_MAX_CPUS 254

enum options_result {
	OPTIONS_OK,
	OPTIONS_HELP,  /* help was printed: exit 0 */
	OPTIONS_ERROR, /* err holds a one-line message: exit 1 */
};

/*
 * Parses argv (after the "run" word) into cfg. Checks values, not files: files are
 * opened later so their errors can name what failed. Pure: no I/O except the --help
 * and --cpu help text written to stdout.
 */
enum options_result options_parse(int argc, char **argv, struct vm_config *cfg, char *err,
                                  size_t errlen);

/* Frees what options_parse allocated (also after an error). */
void options_free(struct vm_config *cfg);

/* The usage text of `vmstack-vm run`. */
extern const char options_usage[];

#endif
