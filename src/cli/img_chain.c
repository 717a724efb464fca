/* img_chain.c: `vmstack img rebase` and `vmstack img commit` — moving data between a qcow2
 * image and its backing files so that what the guest reads never changes. */
#include "img_cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "qcow2.h"
#include "util.h"

static int checked_status(struct img *im, uint64_t off, uint64_t len, struct img_extent *ext)
{
	int r = img_block_status(im, off, len, ext);

	if (r < 0)
		return cli_io_error("allocation map read", im, off, len, r);
	if (ext->len == 0 || ext->len > len) {
		log_err("%s: allocation map at offset %llu gave a bad extent length %llu",
		        img_path(im), (unsigned long long)off, (unsigned long long)ext->len);
		return -EIO;
	}
	return 0;
}

/* Reads [off, off+n) of im, zeros past its end (a shorter backing file). */
static int read_padded(struct img *im, uint8_t *buf, uint64_t off, uint64_t n)
{
	uint64_t size = img_size(im), have = off < size ? MIN(n, size - off) : 0;
	int r = 0;

	if (have && (r = img_pread(im, buf, have, off)) < 0)
		return cli_io_error("read", im, off, have, r);
	memset(buf + have, 0, n - have);
	return 0;
}

/* ---- rebase ---- */

/*
 * Safe rebase: wherever im has no data of its own, what the guest reads comes from the old
 * chain; if the new backing file (NULL: none) reads differently there, the old content is
 * written into im, cluster by cluster.
 */
static int rebase_copy(struct img *im, struct img *newb, unsigned gran, bool progress)
{
	uint64_t size = img_size(im), off = 0;
	uint8_t *old = malloc(CLI_CHUNK), *cur = malloc(CLI_CHUNK);
	struct cli_progress p;
	int r = 0;

	if (!old || !cur) {
		free(old);
		free(cur);
		return -ENOMEM;
	}
	cli_progress_start(&p, progress);
	while (off < size && r == 0) {
		struct img_extent ext;
		uint64_t n;

		r = checked_status(im, off, MIN(CLI_STATUS_SPAN, size - off), &ext);
		if (r < 0)
			break;
		n = ext.len;
		if (ext.kind == IMG_EXT_UNALLOC) {
			n = MIN(n, (uint64_t)CLI_CHUNK);
			/* img_pread() of im reads through the old chain here. */
			r = img_pread(im, old, n, off);
			if (r < 0)
				cli_io_error("read", im, off, n, r);
			else if (newb)
				r = read_padded(newb, cur, off, n);
			else
				memset(cur, 0, n);
			for (uint64_t i = 0; r == 0 && i < n;) {
				uint64_t g = MIN(gran - (off + i) % gran, n - i);
				if (memcmp(old + i, cur + i, g) != 0 &&
				    (r = img_pwrite(im, old + i, g, off + i)) < 0)
					cli_io_error("write", im, off + i, g, r);
				i += g;
			}
		}
		off += n;
		cli_progress_update(&p, off, size);
	}
	cli_progress_end(&p, r == 0);
	free(old);
	free(cur);
	return r;
}

static int rebase_run(int argc, char **argv)
{
	const struct cli_img_cmd *cmd = &cli_img_rebase_cmd;
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	enum img_format fmt = IMG_FMT_AUTO, new_fmt = IMG_FMT_AUTO;
	bool unsafe = false, progress = false, fmt_given = false;
	const char *path, *backing = NULL;
	struct img *im = NULL, *newb = NULL;
	char *newb_path = NULL, err[512] = "";
	struct img_info info;
	int c, r;

	cli_getopt_reset();
	while ((c = cli_getopt(cmd, argc, argv, ":f:b:F:upqh", longopts)) != -1) {
		switch (c) {
		case 'h':
			return CLI_EXIT_OK;
		case 'f':
			if (cli_parse_format(cmd, 'f', optarg, &fmt) < 0)
				return CLI_EXIT_ERROR;
			break;
		case 'b':
			backing = optarg;
			break;
		case 'F':
			if (cli_parse_format(cmd, 'F', optarg, &new_fmt) < 0)
				return CLI_EXIT_ERROR;
			fmt_given = true;
			break;
		case 'u':
			unsafe = true;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			progress = false;
			break;
		default:
			return CLI_EXIT_ERROR;
		}
	}
	if (optind >= argc) {
		cli_missing(cmd, "FILE");
		return CLI_EXIT_ERROR;
	}
	path = argv[optind];
	if (optind + 1 < argc) {
		cli_extra(cmd, argv[optind + 1]);
		return CLI_EXIT_ERROR;
	}
	if (!backing) {
		log_err(
		    "rebase: missing -b NEW_BACKING — name the new backing file, or give -b \"\" "
		    "to make %s standalone",
		    path);
		return CLI_EXIT_ERROR;
	}
	if (!backing[0])
		backing = NULL;

	im = cli_open(path, fmt, false, unsafe);
	if (!im)
		return CLI_EXIT_ERROR;
	r = -EINVAL;
	if (img_format(im) != IMG_FMT_QCOW2) {
		log_err("rebase: %s: raw images have no backing file — convert to qcow2 first",
		        path);
		goto out;
	}
	if (backing) {
		newb_path = cli_backing_path(path, backing);
		if (!newb_path) {
			r = -ENOMEM;
			goto out;
		}
		/* -u does not need the new backing file to exist (renaming it is the usual
		 * reason for -u), but if it does, its format is recorded exactly. */
		if (!unsafe || (!fmt_given && access(newb_path, F_OK) == 0)) {
			newb = cli_open(newb_path, new_fmt, true, unsafe);
			if (!newb)
				goto out;
			new_fmt = img_format(newb);
		}
	}
	if (!unsafe) {
		r = img_get_info(im, &info);
		if (r < 0) {
			log_err("%s: cannot read the image's header: %s", path, strerror(-r));
			goto out;
		}
		r = rebase_copy(im, newb, info.cluster_size >= 512 ? info.cluster_size : 65536,
		                progress);
		if (r < 0)
			goto out;
	}
	r = qcow2_set_backing(im, backing, backing ? new_fmt : IMG_FMT_AUTO, err, sizeof(err));
	if (r < 0) {
		if (err[0])
			log_err("%s", err);
		else
			log_err("rebase: %s: cannot write the new backing file name: %s", path,
			        strerror(-r));
	}
out:
	if (newb)
		cli_close(newb);
	if (cli_close(im) < 0 && r == 0)
		r = -EIO;
	free(newb_path);
	return r < 0 ? CLI_EXIT_ERROR : CLI_EXIT_OK;
}

const struct cli_img_cmd cli_img_rebase_cmd = {
    .name = "rebase",
    .synopsis = "rebase [-q] [-p] [-f FMT] [-u] -b NEW_BACKING [-F FMT] FILE",
    .summary = "change a qcow2 image's backing file, keeping what the guest reads",
    .help = "  -b NEW_BACKING  the new backing file (relative names are relative to FILE's\n"
            "                  directory); -b \"\" makes FILE standalone\n"
            "  -F FMT          NEW_BACKING's format (default: probed, then recorded)\n"
            "  -u              unsafe: only rewrite the name; the old and new backing files\n"
            "                  must read the same (e.g. the backing file was moved)\n"
            "  -p              show progress on stderr\n"
            "Without -u, the data where the old and new chains differ is copied into FILE\n"
            "first, so FILE's old backing chain must still be there.\n",
    .run = rebase_run,
};

/* ---- commit ---- */

/* Writes every extent top holds itself into base. */
static int commit_copy(struct img *top, struct img *base, bool progress)
{
	uint64_t size = img_size(top), off = 0;
	uint8_t *buf = malloc(CLI_CHUNK);
	struct cli_progress p;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	cli_progress_start(&p, progress);
	while (off < size && r == 0) {
		struct img_extent ext;
		uint64_t n;

		r = checked_status(top, off, MIN(CLI_STATUS_SPAN, size - off), &ext);
		if (r < 0)
			break;
		n = ext.len;
		if (ext.kind == IMG_EXT_DATA) {
			n = MIN(n, (uint64_t)CLI_CHUNK);
			r = img_pread(top, buf, n, off);
			if (r < 0)
				cli_io_error("read", top, off, n, r);
			else if ((r = img_pwrite(base, buf, n, off)) < 0)
				cli_io_error("write", base, off, n, r);
		} else if (ext.kind == IMG_EXT_ZERO) {
			r = img_write_zeroes(base, off, n, false);
			if (r < 0)
				cli_io_error("write of zeros", base, off, n, r);
		}
		off += n;
		cli_progress_update(&p, off, size);
	}
	if (r == 0 && (r = img_flush(base)) < 0)
		log_err("%s: flush failed: %s", img_path(base), strerror(-r));
	cli_progress_end(&p, r == 0);
	free(buf);
	return r;
}

static int commit_run(int argc, char **argv)
{
	const struct cli_img_cmd *cmd = &cli_img_commit_cmd;
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	enum img_format fmt = IMG_FMT_AUTO, base_fmt = IMG_FMT_AUTO;
	bool keep = false, progress = false, quiet = false;
	struct img *top, *base = NULL;
	struct img_info info;
	char *base_path = NULL, err[512] = "";
	const char *path;
	int c, r;

	cli_getopt_reset();
	while ((c = cli_getopt(cmd, argc, argv, ":f:dpqh", longopts)) != -1) {
		switch (c) {
		case 'h':
			return CLI_EXIT_OK;
		case 'f':
			if (cli_parse_format(cmd, 'f', optarg, &fmt) < 0)
				return CLI_EXIT_ERROR;
			break;
		case 'd':
			keep = true;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			quiet = true;
			break;
		default:
			return CLI_EXIT_ERROR;
		}
	}
	if (optind >= argc) {
		cli_missing(cmd, "FILE");
		return CLI_EXIT_ERROR;
	}
	path = argv[optind];
	if (optind + 1 < argc) {
		cli_extra(cmd, argv[optind + 1]);
		return CLI_EXIT_ERROR;
	}
	/* FILE alone (its backing chain is opened read-only by img_open), then its backing
	 * file by itself, read-write, with that file's own chain below it. */
	top = cli_open(path, fmt, keep, true);
	if (!top)
		return CLI_EXIT_ERROR;
	r = img_get_info(top, &info);
	if (r < 0) {
		log_err("%s: cannot read the image's header: %s", path, strerror(-r));
		goto out;
	}
	if (info.format != IMG_FMT_QCOW2 || !info.backing_file) {
		log_err("commit: %s has no backing file — there is nothing to commit into", path);
		r = -EINVAL;
		goto out;
	}
	if (!keep && info.nb_snapshots) {
		/* Emptying an image with snapshots is refused (qcow2_make_empty): say so before
		 * anything is written, rather than after the data has been committed. */
		log_err("commit: %s has internal snapshots, so it cannot be emptied afterwards — "
		        "pass -d to keep its data, or delete the snapshots first",
		        path);
		r = -EBUSY;
		goto out;
	}
	if (info.backing_format) {
		int bf = img_format_parse(info.backing_format);
		base_fmt = bf < 0 ? IMG_FMT_AUTO : (enum img_format)bf;
	}
	base_path = cli_backing_path(path, info.backing_file);
	base = base_path ? cli_open(base_path, base_fmt, false, false) : NULL;
	if (!base) {
		r = -EIO;
		goto out;
	}
	if (img_size(base) < img_size(top)) {
		r = img_resize(base, img_size(top), err, sizeof(err));
		if (r < 0) {
			log_err("%s", err[0] ? err : "commit: cannot grow the backing file");
			goto out;
		}
	}
	r = commit_copy(top, base, progress && !quiet);
	if (r < 0)
		goto out;
	r = cli_close(base);
	base = NULL;
	if (r < 0)
		goto out;
	if (!keep) {
		r = qcow2_make_empty(top);
		if (r < 0)
			log_err("commit: %s: the data is committed, but emptying the image failed: "
			        "%s",
			        path, strerror(-r));
	}
out:
	if (base)
		cli_close(base);
	if (cli_close(top) < 0 && r == 0)
		r = -EIO;
	free(base_path);
	if (r == 0 && !quiet)
		printf("Image committed.\n");
	return r < 0 ? CLI_EXIT_ERROR : CLI_EXIT_OK;
}

const struct cli_img_cmd cli_img_commit_cmd = {
    .name = "commit",
    .synopsis = "commit [-q] [-p] [-f FMT] [-d] FILE",
    .summary = "write a qcow2 image's own data into its backing file",
    .help = "  -d   keep FILE's data (default: empty FILE afterwards, as its data is now in\n"
            "       the backing file)\n"
            "  -p   show progress on stderr\n"
            "  -q   quiet: no \"Image committed.\" line\n"
            "The backing file is grown if it is smaller than FILE.\n",
    .run = commit_run,
};
