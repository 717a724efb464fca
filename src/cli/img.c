/* img.c: `vmstack img` — subcommand dispatch and the helpers every subcommand shares. */
#include "img_cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "util.h"

static const struct cli_img_cmd *const img_cmds[] = {
    &cli_img_create_cmd,   &cli_img_info_cmd,    &cli_img_check_cmd,
    &cli_img_convert_cmd,  &cli_img_compare_cmd, &cli_img_resize_cmd,
    &cli_img_snapshot_cmd, &cli_img_rebase_cmd,  &cli_img_commit_cmd,
};

static const struct cli_img_cmd *find_cmd(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(img_cmds); i++)
		if (strcmp(img_cmds[i]->name, name) == 0)
			return img_cmds[i];
	return NULL;
}

void cli_img_usage(void)
{
	printf("usage: vmstack img COMMAND [options] FILE...\n"
	       "Create, inspect, check and convert raw and qcow2 disk images (qemu-img's role).\n"
	       "\n"
	       "Commands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(img_cmds); i++)
		printf("  %-10s %s\n", img_cmds[i]->name, img_cmds[i]->summary);
	printf("\n"
	       "Common options:\n"
	       "  -f FMT      the image's format: raw or qcow2 (default: probed; the qcow2 magic\n"
	       "              means qcow2, anything else raw)\n"
	       "  -h, --help  help for one command: vmstack img COMMAND --help\n"
	       "\n"
	       "SIZE is a number of bytes with an optional K, M, G or T suffix (powers of 1024).\n"
	       "Exit status: 0 on success, 1 on error (check and compare document more).\n");
}

void cli_print_help(const struct cli_img_cmd *cmd)
{
	printf("usage: vmstack img %s\n%s\n\n%s", cmd->synopsis, cmd->summary, cmd->help);
}

int cli_img_main(int argc, char **argv)
{
	const struct cli_img_cmd *cmd;

	if (argc < 2) {
		log_err("missing command — try `vmstack img --help`");
		return CLI_EXIT_ERROR;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		if (argc > 2 && (cmd = find_cmd(argv[2])) != NULL) {
			cli_print_help(cmd);
			return CLI_EXIT_OK;
		}
		cli_img_usage();
		return CLI_EXIT_OK;
	}
	cmd = find_cmd(argv[1]);
	if (!cmd) {
		log_err("unknown command '%s' — try `vmstack img --help`", argv[1]);
		return CLI_EXIT_ERROR;
	}
	return cmd->run(argc - 1, argv + 1);
}

/* ---- options ---- */

void cli_getopt_reset(void)
{
	optind = 0; /* glibc: full re-initialisation, as argv changed */
	opterr = 0;
}

static const char *opt_text(int argc, char **argv)
{
	return optind - 1 < argc && optind >= 1 ? argv[optind - 1] : "?";
}

int cli_getopt(const struct cli_img_cmd *cmd, int argc, char **argv, const char *shortopts,
               const struct option *longopts)
{
	int c = getopt_long(argc, argv, shortopts, longopts, NULL);

	switch (c) {
	case 'h':
		cli_print_help(cmd);
		return 'h';
	case '?':
		if (optopt > 0 && optopt < 256)
			log_err("%s: unknown option '-%c' — see `vmstack img %s --help`", cmd->name,
			        optopt, cmd->name);
		else
			log_err("%s: unknown option '%s' — see `vmstack img %s --help`", cmd->name,
			        opt_text(argc, argv), cmd->name);
		return '?';
	case ':':
		if (optopt > 0 && optopt < 256)
			log_err("%s: option -%c needs a value — see `vmstack img %s --help`",
			        cmd->name, optopt, cmd->name);
		else
			log_err("%s: option '%s' needs a value — see `vmstack img %s --help`",
			        cmd->name, opt_text(argc, argv), cmd->name);
		return '?';
	default:
		return c;
	}
}

int cli_missing(const struct cli_img_cmd *cmd, const char *what)
{
	log_err("%s: missing %s — usage: vmstack img %s", cmd->name, what, cmd->synopsis);
	return -EINVAL;
}

int cli_extra(const struct cli_img_cmd *cmd, const char *arg)
{
	log_err("%s: unexpected argument '%s' — usage: vmstack img %s", cmd->name, arg,
	        cmd->synopsis);
	return -EINVAL;
}

int cli_parse_format(const struct cli_img_cmd *cmd, char opt, const char *name,
                     enum img_format *out)
{
	int f = img_format_parse(name);

	if (f < 0 || (f == IMG_FMT_AUTO && opt == 'O')) {
		log_err("%s: -%c: unknown image format '%s' — use raw or qcow2", cmd->name, opt,
		        name);
		return -EINVAL;
	}
	*out = (enum img_format)f;
	return 0;
}

int cli_parse_output(const struct cli_img_cmd *cmd, const char *s, bool *json)
{
	if (strcmp(s, "json") == 0) {
		*json = true;
	} else if (strcmp(s, "human") == 0) {
		*json = false;
	} else {
		log_err("%s: --output: unknown output format '%s' — use human or json", cmd->name,
		        s);
		return -EINVAL;
	}
	return 0;
}

int cli_parse_size(const struct cli_img_cmd *cmd, const char *what, const char *s, uint64_t *out)
{
	int r = parse_size(s, out);

	if (r == -ERANGE)
		log_err("%s: %s '%s' is too large — the most is 16 EiB", cmd->name, what, s);
	else if (r < 0)
		log_err("%s: bad %s '%s' — use a number with an optional K, M, G or T suffix",
		        cmd->name, what, s);
	return r;
}

/* ---- images ---- */

static struct img *cli_open_with(const struct img_open_opts *o)
{
	char err[512] = "";
	const char *path = o->path;
	struct img *im = img_open(o, err, sizeof(err));

	if (!im) {
		if (err[0])
			log_err("%s", err);
		else
			log_err("%s: cannot open the image — check the path and its format", path);
	}
	return im;
}

struct img *cli_open(const char *path, enum img_format fmt, bool readonly, bool no_backing)
{
	return cli_open_with(&(struct img_open_opts){.path = path,
	                                             .format = fmt,
	                                             .readonly = readonly,
	                                             .no_backing = no_backing,
	                                             .lock = true});
}

struct img *cli_open_for_repair(const char *path, enum img_format fmt)
{
	return cli_open_with(&(struct img_open_opts){
	    .path = path, .format = fmt, .no_backing = true, .lock = true, .repair = true});
}

int cli_close(struct img *im)
{
	char path[4096];
	int r;

	if (!im)
		return 0;
	snprintf(path, sizeof(path), "%s", img_path(im));
	r = img_close(im);
	if (r < 0)
		log_err("%s: writing back the image failed: %s — the image may be incomplete", path,
		        strerror(-r));
	return r;
}

char *cli_backing_path(const char *image_path, const char *backing)
{
	const char *slash = strrchr(image_path, '/');
	char *out;

	if (backing[0] == '/' || !slash)
		return strdup(backing);
	if (asprintf(&out, "%.*s%s", (int)(slash - image_path + 1), image_path, backing) < 0)
		return NULL;
	return out;
}

const char *cli_size_str(uint64_t v, char *buf, size_t len)
{
	static const char *const suffix[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
	double x = (double)v * 1.024, unit = 1024.0;
	unsigned i = 0;

	/* Like QEMU: switch to the next unit once the number would reach 1000. */
	while (i + 1 < ARRAY_SIZE(suffix) && x >= unit) {
		i++;
		unit *= 1024.0;
	}
	snprintf(buf, len, "%0.3g %sB", (double)v / (double)(1ULL << (10 * i)), suffix[i]);
	return buf;
}

int cli_io_error(const char *what, struct img *im, uint64_t off, uint64_t len, int r)
{
	if (r != -EIO)
		log_err("%s: %s of %llu bytes at offset %llu failed: %s", img_path(im), what,
		        (unsigned long long)len, (unsigned long long)off, strerror(-r));
	return r;
}

bool cli_is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t head = MIN(len, (size_t)16);

	for (size_t i = 0; i < head; i++)
		if (p[i])
			return false;
	/* The first 16 bytes are zero, and each byte equals the one 16 before it. */
	return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

int cli_chain_status(struct img *im, uint64_t off, uint64_t len, bool *zero, uint64_t *n)
{
	struct img_extent ext;

	for (;;) {
		uint64_t size = img_size(im);
		int r;

		if (off >= size) { /* past a (shorter) backing file's end */
			*zero = true;
			*n = len;
			return 0;
		}
		len = MIN(len, size - off);
		r = img_block_status(im, off, len, &ext);
		if (r < 0)
			return cli_io_error("allocation map read", im, off, len, r);
		if (ext.len == 0 || ext.len > len) {
			log_err("%s: allocation map at offset %llu gave a bad extent length %llu",
			        img_path(im), (unsigned long long)off, (unsigned long long)ext.len);
			return -EIO;
		}
		len = ext.len;
		if (ext.kind != IMG_EXT_UNALLOC || !img_backing(im)) {
			*zero = ext.kind != IMG_EXT_DATA;
			*n = len;
			return 0;
		}
		im = img_backing(im);
	}
}

/* ---- progress ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void cli_progress_start(struct cli_progress *p, bool on)
{
	p->on = on;
	p->last_ms = now_ms();
	p->last_pct = 0;
	if (on) {
		fprintf(stderr, "    (%3.2f/100%%)\r", 0.0);
		fflush(stderr);
	}
}

void cli_progress_update(struct cli_progress *p, uint64_t done, uint64_t total)
{
	double pct = total ? (double)done * 100.0 / (double)total : 100.0;
	uint64_t t;

	if (!p->on || pct == p->last_pct)
		return;
	t = now_ms();
	if (t - p->last_ms < 100 && pct < 100.0)
		return;
	p->last_ms = t;
	p->last_pct = pct;
	fprintf(stderr, "    (%3.2f/100%%)\r", pct);
	fflush(stderr);
}

void cli_progress_end(struct cli_progress *p, bool done)
{
	if (!p->on)
		return;
	if (done && p->last_pct < 100.0)
		fprintf(stderr, "    (%3.2f/100%%)\r", 100.0);
	fputc('\n', stderr);
	fflush(stderr);
	p->on = false;
}
