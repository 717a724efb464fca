/* img_create.c: `vmstack img create` and `vmstack img resize`, plus the -o creation options. */
#include "img_cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "util.h"

static const char create_o_help[] =
    "Creation options (-o NAME=VALUE,...):\n"
    "  cluster_size=SIZE           qcow2 cluster size, a power of two from 512 to 2M "
    "(default 64K)\n"
    "  compat=1.1|0.10             qcow2 version: 1.1 (v3, default) or 0.10 (v2)\n"
    "  preallocation=off|metadata|full\n"
    "                              allocate nothing (default), the qcow2 metadata, or every "
    "byte\n"
    "  lazy_refcounts=on|off       qcow2 v3: defer refcount updates (default off)\n"
    "  backing_file=FILE           like -b\n"
    "  backing_fmt=FMT             like -F\n"
    "  size=SIZE                   like the SIZE argument\n";

static int bad_o(const struct cli_img_cmd *cmd, const char *key, const char *val, const char *hint)
{
	log_err("%s: -o: bad %s '%s' — %s", cmd->name, key, val ? val : "", hint);
	return -EINVAL;
}

static bool is_on(const char *v)
{
	return !strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes");
}

static bool is_off(const char *v)
{
	return !strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no");
}

/*
 * Applies one -o list to *o. Sizes given as size= go to *size (if size is non-NULL).
 * Records the first qcow2-only key in *qcow2_key. Returns 0, 1 after printing `-o help`,
 * or -EINVAL after logging.
 */
int cli_parse_create_opts(const struct cli_img_cmd *cmd, char *spec, struct img_create_opts *o,
                          uint64_t *size, bool *size_set, const char **qcow2_key)
{
	char *save = NULL;

	for (char *it = strtok_r(spec, ",", &save); it; it = strtok_r(NULL, ",", &save)) {
		char *val = strchr(it, '=');
		bool qcow2_only = true;

		if (val)
			*val++ = 0;
		if (!strcmp(it, "help") || !strcmp(it, "?")) {
			printf("%s", create_o_help);
			return 1;
		}
		if (!val) {
			log_err("%s: -o: '%s' needs a value, as in %s=VALUE — -o help lists the "
			        "options",
			        cmd->name, it, it);
			return -EINVAL;
		}
		if (!strcmp(it, "cluster_size")) {
			uint64_t cs;
			if (parse_size(val, &cs) < 0 || cs < 512 || cs > 2 * MiB || (cs & (cs - 1)))
				return bad_o(cmd, it, val,
				             "use a power of two from 512 to 2M, e.g. 64K");
			o->cluster_size = (unsigned)cs;
		} else if (!strcmp(it, "compat")) {
			if (!strcmp(val, "1.1") || !strcmp(val, "v3"))
				o->compat = 3;
			else if (!strcmp(val, "0.10") || !strcmp(val, "v2"))
				o->compat = 2;
			else
				return bad_o(cmd, it, val,
				             "use compat=1.1 (v3) or compat=0.10 (v2)");
		} else if (!strcmp(it, "preallocation")) {
			qcow2_only = false;
			if (!strcmp(val, "off"))
				o->prealloc = IMG_PREALLOC_OFF;
			else if (!strcmp(val, "metadata"))
				o->prealloc = IMG_PREALLOC_METADATA;
			else if (!strcmp(val, "full"))
				o->prealloc = IMG_PREALLOC_FULL;
			else
				return bad_o(cmd, it, val, "use off, metadata or full");
		} else if (!strcmp(it, "lazy_refcounts")) {
			if (is_on(val) || is_off(val))
				o->lazy_refcounts = is_on(val);
			else
				return bad_o(cmd, it, val, "use on or off");
		} else if (!strcmp(it, "backing_file")) {
			o->backing_file = val;
		} else if (!strcmp(it, "backing_fmt")) {
			if (cli_parse_format(cmd, 'F', val, &o->backing_format) < 0)
				return -EINVAL;
		} else if (!strcmp(it, "size") && size) {
			qcow2_only = false;
			if (cli_parse_size(cmd, "size", val, size) < 0)
				return -EINVAL;
			*size_set = true;
		} else if (!strcmp(it, "refcount_bits")) {
			if (strcmp(val, "16"))
				return bad_o(cmd, it, val, "only 16-bit refcounts are supported");
		} else if (!strcmp(it, "compression_type")) {
			if (strcmp(val, "zlib"))
				return bad_o(cmd, it, val, "new images use zlib");
		} else if (!strcmp(it, "extended_l2")) {
			if (!is_off(val))
				return bad_o(cmd, it, val, "extended L2 entries are not supported");
		} else {
			log_err("%s: -o: unknown option '%s' — -o help lists the options",
			        cmd->name, it);
			return -EINVAL;
		}
		if (qcow2_only && !*qcow2_key)
			*qcow2_key = it;
	}
	return 0;
}

/* Checks the options against the format; logs and returns -EINVAL if they do not fit. */
int cli_check_create_opts(const struct cli_img_cmd *cmd, const struct img_create_opts *o,
                          const char *qcow2_key)
{
	if (o->format == IMG_FMT_RAW && qcow2_key) {
		log_err("%s: -o %s is a qcow2 option — use -%c qcow2, or drop it for a raw image",
		        cmd->name, qcow2_key, strcmp(cmd->name, "convert") ? 'f' : 'O');
		return -EINVAL;
	}
	if (o->format == IMG_FMT_RAW && o->prealloc == IMG_PREALLOC_METADATA) {
		log_err("%s: preallocation=metadata is for qcow2 — raw images take off or full",
		        cmd->name);
		return -EINVAL;
	}
	if (o->lazy_refcounts && o->compat == 2) {
		log_err("%s: lazy_refcounts=on needs compat=1.1 — qcow2 v2 (0.10) has no lazy "
		        "refcounts",
		        cmd->name);
		return -EINVAL;
	}
	return 0;
}

void cli_print_formatting(const struct img_create_opts *o, const char *backing_fmt_name)
{
	static const char *const prealloc[] = {"off", "metadata", "full"};

	printf("Formatting '%s', fmt=%s", o->path, img_format_name(o->format));
	if (o->format == IMG_FMT_QCOW2)
		printf(" cluster_size=%u extended_l2=off",
		       o->cluster_size ? o->cluster_size : 65536);
	if (o->prealloc != IMG_PREALLOC_OFF && o->format == IMG_FMT_QCOW2)
		printf(" preallocation=%s", prealloc[o->prealloc]);
	if (o->format == IMG_FMT_QCOW2)
		printf(" compression_type=zlib");
	printf(" size=%llu", (unsigned long long)o->size);
	if (o->backing_file)
		printf(" backing_file=%s", o->backing_file);
	if (o->backing_file && backing_fmt_name)
		printf(" backing_fmt=%s", backing_fmt_name);
	if (o->prealloc != IMG_PREALLOC_OFF && o->format == IMG_FMT_RAW)
		printf(" preallocation=%s", prealloc[o->prealloc]);
	if (o->format == IMG_FMT_QCOW2) {
		if (o->compat)
			printf(" compat=%s", o->compat == 2 ? "0.10" : "1.1");
		printf(" lazy_refcounts=%s refcount_bits=16", o->lazy_refcounts ? "on" : "off");
	}
	printf("\n");
	fflush(stdout);
}

/* ---- create ---- */

static const struct option create_longopts[] = {
    {"force", no_argument, NULL, CLI_OPT_FORCE},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int create_run(int argc, char **argv)
{
	const struct cli_img_cmd *cmd = &cli_img_create_cmd;
	struct img_create_opts o = {.format = IMG_FMT_AUTO};
	const char *qcow2_key = NULL, *size_arg = NULL;
	bool size_set = false, force = false, quiet = false, unsafe = false;
	char err[512] = "";
	char *backing_path = NULL;
	struct stat st;
	int c, r;

	cli_getopt_reset();
	while ((c = cli_getopt(cmd, argc, argv, ":f:b:F:o:quh", create_longopts)) != -1) {
		switch (c) {
		case 'h':
			return CLI_EXIT_OK;
		case 'f':
			if (cli_parse_format(cmd, 'f', optarg, &o.format) < 0)
				return CLI_EXIT_ERROR;
			break;
		case 'b':
			o.backing_file = optarg;
			break;
		case 'F':
			if (cli_parse_format(cmd, 'F', optarg, &o.backing_format) < 0)
				return CLI_EXIT_ERROR;
			break;
		case 'o':
			r = cli_parse_create_opts(cmd, optarg, &o, &o.size, &size_set, &qcow2_key);
			if (r)
				return r > 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
			break;
		case 'q':
			quiet = true;
			break;
		case 'u':
			unsafe = true;
			break;
		case CLI_OPT_FORCE:
			force = true;
			break;
		default:
			return CLI_EXIT_ERROR;
		}
	}
	if (optind >= argc) {
		cli_missing(cmd, "FILE");
		return CLI_EXIT_ERROR;
	}
	o.path = argv[optind++];
	if (optind < argc)
		size_arg = argv[optind++];
	if (optind < argc) {
		cli_extra(cmd, argv[optind]);
		return CLI_EXIT_ERROR;
	}
	if (size_arg) {
		if (cli_parse_size(cmd, "size", size_arg, &o.size) < 0)
			return CLI_EXIT_ERROR;
		size_set = true;
	}
	/* A backing file only makes sense for qcow2, so -b without -f means qcow2. */
	if (o.format == IMG_FMT_AUTO)
		o.format = o.backing_file ? IMG_FMT_QCOW2 : IMG_FMT_RAW;
	if (o.backing_file && o.format != IMG_FMT_QCOW2) {
		log_err("create: %s: raw images cannot have a backing file — use -f qcow2", o.path);
		return CLI_EXIT_ERROR;
	}
	if (o.backing_file && !o.backing_file[0]) {
		log_err("create: -b: empty backing file name — name the backing file, or drop -b");
		return CLI_EXIT_ERROR;
	}
	if (cli_check_create_opts(cmd, &o, qcow2_key) < 0)
		return CLI_EXIT_ERROR;
	if (!size_set && !o.backing_file) {
		cli_missing(cmd, "SIZE (the virtual disk size, e.g. 10G)");
		return CLI_EXIT_ERROR;
	}
	if (!force && lstat(o.path, &st) == 0) {
		log_err("create: %s: already exists — remove it first or pass --force", o.path);
		return CLI_EXIT_ERROR;
	}
	o.overwrite = force;

	if (o.backing_file && !unsafe) {
		/* Open it now: its size is the default, its format goes into the header, and a
		 * typo in its name shows here rather than when a VM starts. */
		struct img *b;

		backing_path = cli_backing_path(o.path, o.backing_file);
		if (!backing_path)
			return CLI_EXIT_ERROR;
		b = cli_open(backing_path, o.backing_format, true, true);
		free(backing_path);
		if (!b)
			return CLI_EXIT_ERROR;
		if (!size_set)
			o.size = img_size(b);
		o.backing_format = img_format(b);
		cli_close(b);
	} else if (o.backing_file && !size_set) {
		log_err("create: -u needs SIZE — the backing file is not opened, so its size is "
		        "unknown");
		return CLI_EXIT_ERROR;
	}
	if (!quiet)
		cli_print_formatting(&o, o.backing_format != IMG_FMT_AUTO
		                             ? img_format_name(o.backing_format)
		                             : NULL);
	r = img_create(&o, err, sizeof(err));
	if (r < 0) {
		if (err[0])
			log_err("%s", err);
		else
			log_err("create: %s: %s", o.path, strerror(-r));
		return CLI_EXIT_ERROR;
	}
	return CLI_EXIT_OK;
}

const struct cli_img_cmd cli_img_create_cmd = {
    .name = "create",
    .synopsis = "create [-q] [-f FMT] [-b BACKING [-F FMT]] [-u] [-o OPTIONS] [--force] FILE "
                "[SIZE]",
    .summary = "create a new raw or qcow2 image",
    .help = "  -f FMT        raw (default) or qcow2 (the default with -b)\n"
            "  -b BACKING    qcow2 backing file; a relative name is relative to FILE's "
            "directory\n"
            "  -F FMT        the backing file's format (default: probed, then recorded)\n"
            "  -u            do not open the backing file (SIZE is then required)\n"
            "  -o OPTIONS    creation options; -o help lists them\n"
            "  -q            quiet: no \"Formatting\" line\n"
            "  --force       overwrite FILE if it exists (default: refuse)\n"
            "  SIZE          virtual size, e.g. 10G (default with -b: the backing file's)\n",
    .run = create_run,
};

/* ---- resize ---- */

static const struct option resize_longopts[] = {
    {"shrink", no_argument, NULL, CLI_OPT_SHRINK},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int resize_run(int argc, char **argv)
{
	const struct cli_img_cmd *cmd = &cli_img_resize_cmd;
	enum img_format fmt = IMG_FMT_AUTO;
	bool shrink = false, quiet = false;
	const char *size_arg, *path, *num;
	uint64_t cur, delta, new_size;
	char err[512] = "", a[32], b[32];
	struct img *im;
	int c, r;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			cli_print_help(cmd);
			return CLI_EXIT_OK;
		}
	}
	if (argc < 3) {
		cli_missing(cmd, argc < 2 ? "FILE and SIZE" : "SIZE");
		return CLI_EXIT_ERROR;
	}
	/* Take SIZE off first, so that "-1G" is not read as an option (as qemu-img does). */
	size_arg = argv[--argc];
	cli_getopt_reset();
	while ((c = cli_getopt(cmd, argc, argv, ":f:qh", resize_longopts)) != -1) {
		switch (c) {
		case 'h':
			return CLI_EXIT_OK;
		case 'f':
			if (cli_parse_format(cmd, 'f', optarg, &fmt) < 0)
				return CLI_EXIT_ERROR;
			break;
		case 'q':
			quiet = true;
			break;
		case CLI_OPT_SHRINK:
			shrink = true;
			break;
		default:
			return CLI_EXIT_ERROR;
		}
	}
	if (optind >= argc) {
		cli_missing(cmd, "FILE");
		return CLI_EXIT_ERROR;
	}
	path = argv[optind++];
	if (optind < argc) {
		cli_extra(cmd, argv[optind]);
		return CLI_EXIT_ERROR;
	}
	num = size_arg + (size_arg[0] == '+' || size_arg[0] == '-');
	if (cli_parse_size(cmd, "size", num, &delta) < 0)
		return CLI_EXIT_ERROR;

	im = cli_open(path, fmt, false, true);
	if (!im)
		return CLI_EXIT_ERROR;
	cur = img_size(im);
	if (size_arg[0] == '+') {
		if (delta > UINT64_MAX - cur) {
			log_err("resize: %s: %s would overflow the size — give a smaller size",
			        path, size_arg);
			cli_close(im);
			return CLI_EXIT_ERROR;
		}
		new_size = cur + delta;
	} else if (size_arg[0] == '-') {
		if (delta > cur) {
			log_err("resize: %s: cannot shrink by %s, the image is only %s — give a "
			        "smaller amount",
			        path, cli_size_str(delta, a, sizeof(a)),
			        cli_size_str(cur, b, sizeof(b)));
			cli_close(im);
			return CLI_EXIT_ERROR;
		}
		new_size = cur - delta;
	} else {
		new_size = delta;
	}
	if (new_size < cur && img_format(im) == IMG_FMT_RAW && !shrink) {
		log_err("resize: %s: shrinking from %llu to %llu bytes discards the data past the "
		        "new end — pass --shrink if that is intended",
		        path, (unsigned long long)cur, (unsigned long long)new_size);
		cli_close(im);
		return CLI_EXIT_ERROR;
	}
	r = img_resize(im, new_size, err, sizeof(err));
	if (r < 0) {
		if (err[0])
			log_err("%s", err);
		else
			log_err("resize: %s: %s", path, strerror(-r));
		cli_close(im);
		return CLI_EXIT_ERROR;
	}
	if (cli_close(im) < 0)
		return CLI_EXIT_ERROR;
	if (!quiet)
		printf("Image resized.\n");
	return CLI_EXIT_OK;
}

const struct cli_img_cmd cli_img_resize_cmd = {
    .name = "resize",
    .synopsis = "resize [-q] [-f FMT] [--shrink] FILE [+|-]SIZE",
    .summary = "change an image's virtual size",
    .help = "  SIZE          the new size, or +SIZE / -SIZE relative to the current one\n"
            "  --shrink      allow a raw image to shrink (the data past the new end is lost;\n"
            "                qcow2 images cannot shrink)\n"
            "  -q            quiet: no \"Image resized.\" line\n",
    .run = resize_run,
};
