/* img_cli.h: `vmstack img` (the qemu-img role): subcommand table and the helpers they share. */
#ifndef VMSTACK_IMG_CLI_H
#define VMSTACK_IMG_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"

/*
 * Each subcommand lives in its own file and exports one struct cli_img_cmd. run() gets
 * argv with argv[0] = the subcommand name and returns the process exit status (0 = done,
 * 1 = error, except where a subcommand documents more, like check and compare). Errors go
 * to stderr as one line through log_err(), whose prefix main() set to "vmstack img".
 */
struct cli_img_cmd {
	const char *name;
	const char *synopsis; /* "create [-f FMT] ... FILE [SIZE]" */
	const char *summary;  /* one line for `vmstack img --help` */
	const char *help;     /* the options, for `vmstack img NAME --help` */
	int (*run)(int argc, char **argv);
};

extern const struct cli_img_cmd cli_img_create_cmd, cli_img_info_cmd, cli_img_check_cmd,
    cli_img_convert_cmd, cli_img_resize_cmd, cli_img_snapshot_cmd, cli_img_rebase_cmd,
    cli_img_commit_cmd, cli_img_compare_cmd;

/* `vmstack img ...`; argv[0] is "img". Returns the exit status. */
int cli_img_main(int argc, char **argv);
/* Prints the list of subcommands (to stdout). */
void cli_img_usage(void);

/* Exit statuses shared by most subcommands (qemu-img's). */
#define CLI_EXIT_OK    0
#define CLI_EXIT_ERROR 1

/* Long options without a short letter start here (getopt_long val). */
enum {
	CLI_OPT_HELP = 'h',
	CLI_OPT_OUTPUT = 256,
	CLI_OPT_BACKING_CHAIN,
	CLI_OPT_FORCE,
	CLI_OPT_SHRINK,
};

/*
 * getopt_long() for subcommand cmd, with our own one-line errors. shortopts must start
 * with ':'. Returns the option, -1 when options end, '?' after logging an unknown option
 * or a missing argument, and 'h' for -h/--help after printing the help (the caller
 * returns 0). Call cli_getopt_reset() before the first call.
 */
void cli_getopt_reset(void);
int cli_getopt(const struct cli_img_cmd *cmd, int argc, char **argv, const char *shortopts,
               const struct option *longopts);
/* Prints cmd's synopsis and help to stdout. */
void cli_print_help(const struct cli_img_cmd *cmd);

/* Logs "<cmd>: missing <what> — see `vmstack img <cmd> --help`" (or unexpected argument). */
int cli_missing(const struct cli_img_cmd *cmd, const char *what);
int cli_extra(const struct cli_img_cmd *cmd, const char *arg);

/* Parses a -f/-O/-F value; logs and returns -EINVAL for an unknown name. */
int cli_parse_format(const struct cli_img_cmd *cmd, char opt, const char *name,
                     enum img_format *out);
/* Parses a --output value (human or json). */
int cli_parse_output(const struct cli_img_cmd *cmd, const char *s, bool *json);
/* Parses a SIZE argument; logs "<cmd>: bad size '<s>' — ..." on failure. */
int cli_parse_size(const struct cli_img_cmd *cmd, const char *what, const char *s, uint64_t *out);

/*
 * Creation options (-o for create and convert). cli_parse_create_opts() applies one -o
 * list (modified in place) to *o; size= goes to *size when size is non-NULL. The first
 * qcow2-only key is recorded in *qcow2_key for cli_check_create_opts(). Returns 0, 1 after
 * printing `-o help`, or -EINVAL after logging.
 */
int cli_parse_create_opts(const struct cli_img_cmd *cmd, char *spec, struct img_create_opts *o,
                          uint64_t *size, bool *size_set, const char **qcow2_key);
int cli_check_create_opts(const struct cli_img_cmd *cmd, const struct img_create_opts *o,
                          const char *qcow2_key);
/* qemu-img's "Formatting 'FILE', fmt=qcow2 cluster_size=65536 ... size=N ..." line. */
void cli_print_formatting(const struct img_create_opts *o, const char *backing_fmt_name);

/*
 * Opens an image; on failure logs the library's line and returns NULL. lock is always
 * taken (shared when readonly), so a running VM's image is not changed under it.
 */
struct img *cli_open(const char *path, enum img_format fmt, bool readonly, bool no_backing);
/* Read-write without the backing chain, even if the image is marked dirty or corrupt. */
struct img *cli_open_for_repair(const char *path, enum img_format fmt);
/* Closes and logs an error from the final flush; returns 0 or -errno. */
int cli_close(struct img *im);

/* Path of backing file name `backing` as seen from image `image_path` (relative names are
 * relative to the image's directory, as QEMU does). Returns malloc'ed text or NULL. */
char *cli_backing_path(const char *image_path, const char *backing);

/* qemu's size_to_str(): "0 B", "196 KiB", "1.5 GiB" (3 significant digits). */
const char *cli_size_str(uint64_t v, char *buf, size_t len);

/*
 * Logs a failed data or block-status request ("<path>: <what> of N bytes at offset O
 * failed: ...") and returns r — except -EIO, which image.h promises was logged already
 * (with the metadata at fault). what is e.g. "read", "write", "allocation map read".
 */
int cli_io_error(const char *what, struct img *im, uint64_t off, uint64_t len, int r);

/* True if len bytes at buf are all zero. */
bool cli_is_zero(const void *buf, size_t len);

/*
 * How [off, off+len) of im reads, looking down the backing chain: *n (> 0, <= len) bytes
 * from off are either known zeros without reading (*zero: unallocated through the whole
 * chain, zero-flagged, a raw hole or past a backing file's end) or hold data somewhere.
 * Returns 0 or -errno (logged).
 */
int cli_chain_status(struct img *im, uint64_t off, uint64_t len, bool *zero, uint64_t *n);

/* The copy chunk of convert, compare, rebase and commit; block status is asked for up to
 * CLI_STATUS_SPAN at a time, so that large holes are skipped in one step. */
#define CLI_CHUNK       (2u << 20)
#define CLI_STATUS_SPAN (1ULL << 30)

/* A qemu-img-style "    (42.00/100%)" line on stderr, redrawn at most ~10 times a second. */
struct cli_progress {
	bool on;
	uint64_t last_ms;
	double last_pct;
};
void cli_progress_start(struct cli_progress *p, bool on);
void cli_progress_update(struct cli_progress *p, uint64_t done, uint64_t total);
/* done: draw 100% first (else just end the line, before an error message). */
void cli_progress_end(struct cli_progress *p, bool done);

#endif
