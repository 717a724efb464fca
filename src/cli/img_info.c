/* img_info.c: `vmstack img info` (human and JSON, optionally down the backing chain) and
 * `vmstack img snapshot`. Output follows qemu-img 7.2's, key for key. */
#include "img_cli.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"
#include "qcow2.h"
#include "util.h"

/* Everything shown for one image of the chain. */
struct info_entry {
	const char *filename; /* as the user (or the chain) named it */
	struct img_info info;
	char *full_backing; /* backing path as opened from here (malloc'ed), or NULL */
	struct qcow2_snapshot_info *snaps;
	int nb_snaps;
};

/* Fills *sn (malloc'ed) with im's snapshots; returns how many, or -errno (logged). */
static int snapshots_get(struct img *im, struct qcow2_snapshot_info **sn)
{
	int n, m;

	*sn = NULL;
	if (img_format(im) != IMG_FMT_QCOW2)
		return 0;
	n = qcow2_snapshot_list(im, NULL, 0);
	for (;;) {
		if (n < 0) {
			if (n != -EIO) /* -EIO: the library named the bad metadata already */
				log_err("%s: cannot read the snapshot table: %s", img_path(im),
				        strerror(-n));
			free(*sn);
			*sn = NULL;
			return n;
		}
		if (n == 0)
			return 0;
		free(*sn);
		*sn = calloc((size_t)n, sizeof(**sn));
		if (!*sn)
			return -ENOMEM;
		m = qcow2_snapshot_list(im, *sn, (unsigned)n);
		if (m <= n) /* the table cannot grow under us, but be exact if it did */
			return m;
		n = m;
	}
}

static void snapshot_header(void)
{
	printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
}

static void snapshot_row(const struct qcow2_snapshot_info *s)
{
	char date[64] = "", clock[64], size[32], icount[32] = "";
	time_t t = (time_t)s->date_sec;
	uint64_t secs = s->vm_clock_nsec / 1000000000ULL;
	struct tm tm;

	if (localtime_r(&t, &tm))
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(clock, sizeof(clock), "%02llu:%02llu:%02llu.%03llu",
	         (unsigned long long)(secs / 3600), (unsigned long long)(secs / 60 % 60),
	         (unsigned long long)(secs % 60),
	         (unsigned long long)(s->vm_clock_nsec / 1000000 % 1000));
	if (s->icount != UINT64_MAX)
		snprintf(icount, sizeof(icount), "%llu", (unsigned long long)s->icount);
	printf("%-9s %-16s %8s%20s%13s%11s\n", s->id, s->name,
	       cli_size_str(s->vm_state_size, size, sizeof(size)), date, clock, icount);
}

static void info_print_human(const struct info_entry *e)
{
	const struct img_info *i = &e->info;
	char vsize[32], dsize[32];

	printf("image: %s\nfile format: %s\nvirtual size: %s (%llu bytes)\ndisk size: %s\n",
	       e->filename, img_format_name(i->format),
	       cli_size_str(i->virtual_size, vsize, sizeof(vsize)),
	       (unsigned long long)i->virtual_size,
	       cli_size_str(i->actual_size, dsize, sizeof(dsize)));
	if (i->format != IMG_FMT_QCOW2)
		return;
	printf("cluster_size: %u\n", i->cluster_size);
	if (i->dirty)
		printf("cleanly shut down: no\n");
	if (i->backing_file) {
		printf("backing file: %s", i->backing_file);
		if (e->full_backing && strcmp(e->full_backing, i->backing_file))
			printf(" (actual path: %s)", e->full_backing);
		printf("\n");
		if (i->backing_format)
			printf("backing file format: %s\n", i->backing_format);
	}
	if (e->nb_snaps > 0) {
		printf("Snapshot list:\n");
		snapshot_header();
		for (int k = 0; k < e->nb_snaps; k++)
			snapshot_row(&e->snaps[k]);
	}
	printf("Format specific information:\n"
	       "    compat: %s\n"
	       "    compression type: %s\n",
	       i->version >= 3 ? "1.1" : "0.10", i->compression ? i->compression : "zlib");
	if (i->version >= 3)
		printf("    lazy refcounts: %s\n", i->lazy_refcounts ? "true" : "false");
	printf("    refcount bits: %u\n", i->refcount_bits);
	if (i->version >= 3)
		printf("    corrupt: %s\n    extended l2: false\n", i->corrupt ? "true" : "false");
}

/* Adds key = v to obj; jansson's json_object_set_new() takes the reference. */
static void jset(json_t *obj, const char *key, json_t *v)
{
	json_object_set_new(obj, key, v);
}

static json_t *info_to_json(const struct info_entry *e)
{
	const struct img_info *i = &e->info;
	json_t *o = json_object(), *data, *spec;

	if (e->nb_snaps > 0) {
		json_t *arr = json_array();
		for (int k = 0; k < e->nb_snaps; k++) {
			const struct qcow2_snapshot_info *s = &e->snaps[k];
			json_t *sj = json_object();
			if (s->icount != UINT64_MAX)
				jset(sj, "icount", json_integer((json_int_t)s->icount));
			jset(sj, "vm-clock-nsec",
			     json_integer((json_int_t)(s->vm_clock_nsec % 1000000000ULL)));
			jset(sj, "name", json_string(s->name));
			jset(sj, "date-sec", json_integer(s->date_sec));
			jset(sj, "date-nsec", json_integer(s->date_nsec));
			jset(sj, "vm-clock-sec",
			     json_integer((json_int_t)(s->vm_clock_nsec / 1000000000ULL)));
			jset(sj, "id", json_string(s->id));
			jset(sj, "vm-state-size", json_integer((json_int_t)s->vm_state_size));
			json_array_append_new(arr, sj);
		}
		jset(o, "snapshots", arr);
	}
	if (i->backing_file && i->backing_format)
		jset(o, "backing-filename-format", json_string(i->backing_format));
	jset(o, "virtual-size", json_integer((json_int_t)i->virtual_size));
	jset(o, "filename", json_string(e->filename));
	if (i->format == IMG_FMT_QCOW2)
		jset(o, "cluster-size", json_integer(i->cluster_size));
	jset(o, "format", json_string(img_format_name(i->format)));
	jset(o, "actual-size", json_integer((json_int_t)i->actual_size));
	if (i->format == IMG_FMT_QCOW2) {
		data = json_object();
		jset(data, "compat", json_string(i->version >= 3 ? "1.1" : "0.10"));
		jset(data, "compression-type",
		     json_string(i->compression ? i->compression : "zlib"));
		if (i->version >= 3)
			jset(data, "lazy-refcounts", json_boolean(i->lazy_refcounts));
		jset(data, "refcount-bits", json_integer(i->refcount_bits));
		if (i->version >= 3) {
			jset(data, "corrupt", json_boolean(i->corrupt));
			jset(data, "extended-l2", json_false());
		}
		spec = json_object();
		jset(spec, "type", json_string("qcow2"));
		jset(spec, "data", data);
		jset(o, "format-specific", spec);
	}
	if (i->backing_file) {
		if (e->full_backing)
			jset(o, "full-backing-filename", json_string(e->full_backing));
		jset(o, "backing-filename", json_string(i->backing_file));
	}
	jset(o, "dirty-flag", json_boolean(i->dirty));
	return o;
}

static int print_json(json_t *root)
{
	char *text = json_dumps(root, JSON_INDENT(4) | JSON_PRESERVE_ORDER);

	if (!text)
		return -ENOMEM;
	printf("%s\n", text);
	free(text);
	return 0;
}

static const struct option info_longopts[] = {
    {"output", required_argument, NULL, CLI_OPT_OUTPUT},
    {"backing-chain", no_argument, NULL, CLI_OPT_BACKING_CHAIN},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Shows one image; sets *next to the malloc'ed path of its backing file (if chain). */
static int info_one(const char *path, enum img_format fmt, bool json, json_t *arr, bool first,
                    char **next, enum img_format *next_fmt)
{
	struct info_entry e = {.filename = path};
	struct img *im = cli_open(path, fmt, true, true);
	int r;

	*next = NULL;
	if (!im)
		return -ENOENT;
	r = img_get_info(im, &e.info);
	if (r < 0) {
		log_err("%s: cannot read the image's header: %s", path, strerror(-r));
		goto out;
	}
	r = e.nb_snaps = snapshots_get(im, &e.snaps);
	if (r < 0)
		goto out;
	if (e.info.backing_file) {
		e.full_backing = cli_backing_path(path, e.info.backing_file);
		if (e.full_backing && (*next = strdup(e.full_backing)) == NULL)
			r = -ENOMEM;
		int bf = e.info.backing_format ? img_format_parse(e.info.backing_format) : -1;
		*next_fmt = bf < 0 ? IMG_FMT_AUTO : (enum img_format)bf;
	}
	if (json) {
		json_t *o = info_to_json(&e);
		if (arr) {
			json_array_append_new(arr, o);
		} else {
			r = print_json(o);
			json_decref(o);
		}
	} else {
		if (!first)
			printf("\n");
		info_print_human(&e);
	}
out:
	free(e.full_backing);
	free(e.snaps);
	cli_close(im);
	return r < 0 ? r : 0;
}

static int info_run(int argc, char **argv)
{
	const struct cli_img_cmd *cmd = &cli_img_info_cmd;
	enum img_format fmt = IMG_FMT_AUTO;
	bool json = false, chain = false;
	struct {
		dev_t dev;
		ino_t ino;
	} seen[IMG_MAX_CHAIN + 1];
	json_t *arr = NULL;
	char *path;
	int c, r = 0, depth;

	cli_getopt_reset();
	while ((c = cli_getopt(cmd, argc, argv, ":f:h", info_longopts)) != -1) {
		switch (c) {
		case 'h':
			return CLI_EXIT_OK;
		case 'f':
			if (cli_parse_format(cmd, 'f', optarg, &fmt) < 0)
				return CLI_EXIT_ERROR;
			break;
		case CLI_OPT_OUTPUT:
			if (cli_parse_output(cmd, optarg, &json) < 0)
				return CLI_EXIT_ERROR;
			break;
		case CLI_OPT_BACKING_CHAIN:
			chain = true;
			break;
		default:
			return CLI_EXIT_ERROR;
		}
	}
	if (optind >= argc) {
		cli_missing(cmd, "FILE");
		return CLI_EXIT_ERROR;
	}
	if (optind + 1 < argc) {
		cli_extra(cmd, argv[optind + 1]);
		return CLI_EXIT_ERROR;
	}
	path = strdup(argv[optind]);
	if (chain && json)
		arr = json_array();
	for (depth = 0; path && r == 0; depth++) {
		char *next = NULL;
		struct stat st;

		if (chain && stat(path, &st) == 0) {
			for (int k = 0; k < depth; k++) {
				if (seen[k].dev == st.st_dev && seen[k].ino == st.st_ino) {
					log_err(
					    "info: %s: the backing chain loops back to this file — "
					    "fix it with `vmstack img rebase -u`",
					    path);
					r = -ELOOP;
				}
			}
			if (depth > IMG_MAX_CHAIN) {
				log_err(
				    "info: %s: backing chain deeper than %d images — flatten it "
				    "with `vmstack img convert`",
				    argv[optind], IMG_MAX_CHAIN);
				r = -ELOOP;
			}
			if (r < 0)
				break;
			seen[depth].dev = st.st_dev;
			seen[depth].ino = st.st_ino;
		}
		/* info_one() sets fmt to the format the header records for the next file. */
		r = info_one(path, fmt, json, arr, depth == 0, &next, &fmt);
		free(path);
		path = chain ? next : NULL;
		if (!chain)
			free(next);
	}
	free(path);
	if (arr) {
		if (r == 0)
			r = print_json(arr);
		json_decref(arr);
	}
	return r < 0 ? CLI_EXIT_ERROR : CLI_EXIT_OK;
}

const struct cli_img_cmd cli_img_info_cmd = {
    .name = "info",
    .synopsis = "info [-f FMT] [--output=human|json] [--backing-chain] FILE",
    .summary = "show an image's format, sizes, backing file and snapshots",
    .help = "  --output=FMT     human (default) or json (qemu-img's keys)\n"
            "  --backing-chain  also show every backing file, down the chain\n",
    .run = info_run,
};

/* ---- snapshot ---- */

static int snapshot_run(int argc, char **argv)
{
	const struct cli_img_cmd *cmd = &cli_img_snapshot_cmd;
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	enum img_format fmt = IMG_FMT_AUTO;
	const char *name = NULL, *path;
	char err[512] = "";
	struct img *im;
	int action = 0, c, r = 0;

	cli_getopt_reset();
	while ((c = cli_getopt(cmd, argc, argv, ":f:lc:a:d:qh", longopts)) != -1) {
		switch (c) {
		case 'h':
			return CLI_EXIT_OK;
		case 'f':
			if (cli_parse_format(cmd, 'f', optarg, &fmt) < 0)
				return CLI_EXIT_ERROR;
			break;
		case 'l':
		case 'c':
		case 'a':
		case 'd':
			if (action) {
				log_err("snapshot: give one of -l, -c, -a or -d, not several — run "
				        "one command per action");
				return CLI_EXIT_ERROR;
			}
			action = c;
			name = optarg;
			break;
		case 'q':
			break;
		default:
			return CLI_EXIT_ERROR;
		}
	}
	if (!action)
		action = 'l';
	if (optind >= argc) {
		cli_missing(cmd, "FILE");
		return CLI_EXIT_ERROR;
	}
	path = argv[optind];
	if (optind + 1 < argc) {
		cli_extra(cmd, argv[optind + 1]);
		return CLI_EXIT_ERROR;
	}
	if (name && !name[0]) {
		log_err("snapshot: -%c: empty snapshot name — give its name or ID", action);
		return CLI_EXIT_ERROR;
	}
	im = cli_open(path, fmt, action == 'l', true);
	if (!im)
		return CLI_EXIT_ERROR;
	if (img_format(im) != IMG_FMT_QCOW2) {
		log_err("snapshot: %s: raw images have no internal snapshots — convert to qcow2 "
		        "first",
		        path);
		cli_close(im);
		return CLI_EXIT_ERROR;
	}
	switch (action) {
	case 'l': {
		struct qcow2_snapshot_info *sn;
		int n = snapshots_get(im, &sn);
		r = n < 0 ? n : 0;
		if (n > 0) {
			printf("Snapshot list:\n");
			snapshot_header();
			for (int k = 0; k < n; k++)
				snapshot_row(&sn[k]);
		}
		free(sn);
		break;
	}
	case 'c':
		r = qcow2_snapshot_create(im, name, err, sizeof(err));
		break;
	case 'a':
		r = qcow2_snapshot_apply(im, name, err, sizeof(err));
		break;
	case 'd':
		r = qcow2_snapshot_delete(im, name, err, sizeof(err));
		break;
	}
	if (r < 0 && action != 'l') {
		if (err[0])
			log_err("%s", err);
		else if (r == -ENOENT)
			log_err(
			    "snapshot: %s: no snapshot '%s' — `vmstack img snapshot -l %s` lists "
			    "them",
			    path, name, path);
		else if (r == -EEXIST)
			log_err("snapshot: %s: a snapshot '%s' already exists — pick another name",
			        path, name);
		else
			log_err("snapshot: %s: -%c %s failed: %s", path, action, name,
			        strerror(-r));
	}
	if (cli_close(im) < 0 && r == 0)
		r = -EIO;
	return r < 0 ? CLI_EXIT_ERROR : CLI_EXIT_OK;
}

const struct cli_img_cmd cli_img_snapshot_cmd = {
    .name = "snapshot",
    .synopsis = "snapshot [-q] [-f FMT] [-l | -c NAME | -a NAME | -d NAME] FILE",
    .summary = "list, create, apply or delete a qcow2 image's internal snapshots",
    .help = "  -l         list the snapshots (the default)\n"
            "  -c NAME    create snapshot NAME of the image as it is now\n"
            "  -a NAME    apply (revert the image to) snapshot NAME (an ID or a name)\n"
            "  -d NAME    delete snapshot NAME (an ID or a name)\n"
            "The image must not be in use by a running VM.\n",
    .run = snapshot_run,
};
