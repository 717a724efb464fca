/* img_convert.c: `vmstack img convert` (sparse-aware copy into a new image) and
 * `vmstack img compare` (content equality, as a guest would read it). */
#include "img_cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/* Raw destinations stay sparse at this granularity (qemu-img's default -S 4k). */
#define RAW_SPARSE_GRANULE 4096u

/*
 * Writes buf (n bytes, for offset off of dst) in runs of whole granules: non-zero runs
 * are written; all-zero runs are skipped (the new image reads zeros there already), or
 * with explicit_zeroes (the image has a backing file to hide) written as zeros.
 */
static int write_sparse(struct img *dst, const uint8_t *buf, uint64_t off, uint64_t n,
                        unsigned gran, bool explicit_zeroes)
{
	uint64_t i = 0;

	while (i < n) {
		uint64_t g = MIN(gran - (off + i) % gran, n - i);
		bool zero = cli_is_zero(buf + i, g);
		uint64_t j = i + g;
		int r = 0;

		while (j < n) {
			uint64_t g2 = MIN(gran - (off + j) % gran, n - j);
			if (cli_is_zero(buf + j, g2) != zero)
				break;
			j += g2;
		}
		if (!zero)
			r = img_pwrite(dst, buf + i, j - i, off + i);
		else if (explicit_zeroes)
			r = img_write_zeroes(dst, off + i, j - i, false);
		if (r < 0)
			return cli_io_error("write", dst, off + i, j - i, r);
		i = j;
	}
	return 0;
}

/* Copies src (as a guest sees it, through its chain) into the fresh dst. With top_only
 * (dst has a backing file), only what src's own top layer holds is copied. */
static int convert_copy(struct img *src, struct img *dst, bool top_only, unsigned gran,
                        bool progress)
{
	uint64_t size = img_size(src), off = 0;
	struct cli_progress p;
	uint8_t *buf = malloc(CLI_CHUNK);
	int r = 0;

	if (!buf)
		return -ENOMEM;
	cli_progress_start(&p, progress);
	while (off < size && r == 0) {
		uint64_t len = MIN(CLI_STATUS_SPAN, size - off), n;
		bool zero, data;

		if (top_only) {
			struct img_extent ext;
			r = img_block_status(src, off, len, &ext);
			if (r < 0) {
				cli_io_error("allocation map read", src, off, len, r);
				break;
			}
			if (ext.len == 0 || ext.len > len) {
				log_err(
				    "%s: allocation map at offset %llu gave a bad extent length",
				    img_path(src), (unsigned long long)off);
				r = -EIO;
				break;
			}
			n = ext.len;
			data = ext.kind == IMG_EXT_DATA;
			if (ext.kind == IMG_EXT_ZERO &&
			    (r = img_write_zeroes(dst, off, n, false)) < 0)
				cli_io_error("write of zeros", dst, off, n, r);
		} else {
			r = cli_chain_status(src, off, len, &zero, &n);
			data = !zero;
		}
		if (r == 0 && data) {
			n = MIN(n, (uint64_t)CLI_CHUNK);
			r = img_pread(src, buf, n, off);
			if (r < 0)
				cli_io_error("read", src, off, n, r);
			else
				r = write_sparse(dst, buf, off, n, gran, top_only);
		}
		off += n;
		cli_progress_update(&p, off, size);
	}
	cli_progress_end(&p, r == 0);
	free(buf);
	return r;
}

static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

static int convert_run(int argc, char **argv)
{
	const struct cli_img_cmd *cmd = &cli_img_convert_cmd;
	static const struct option longopts[] = {
	    {"force", no_argument, NULL, CLI_OPT_FORCE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct img_create_opts o = {.format = IMG_FMT_RAW};
	enum img_format src_fmt = IMG_FMT_AUTO;
	const char *qcow2_key = NULL, *src_path, *dst_path;
	bool force = false, progress = isatty(STDERR_FILENO), created = false;
	struct img *src = NULL, *dst = NULL;
	struct img_info info;
	char err[512] = "";
	unsigned gran = RAW_SPARSE_GRANULE;
	struct stat st;
	int c, r;

	cli_getopt_reset();
	while ((c = cli_getopt(cmd, argc, argv, ":f:O:o:B:F:pqch", longopts)) != -1) {
		switch (c) {
		case 'h':
			return CLI_EXIT_OK;
		case 'f':
			if (cli_parse_format(cmd, 'f', optarg, &src_fmt) < 0)
				return CLI_EXIT_ERROR;
			break;
		case 'O':
			if (cli_parse_format(cmd, 'O', optarg, &o.format) < 0)
				return CLI_EXIT_ERROR;
			break;
		case 'o':
			r = cli_parse_create_opts(cmd, optarg, &o, NULL, NULL, &qcow2_key);
			if (r)
				return r > 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
			break;
		case 'B':
			o.backing_file = optarg;
			break;
		case 'F':
			if (cli_parse_format(cmd, 'F', optarg, &o.backing_format) < 0)
				return CLI_EXIT_ERROR;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			progress = false;
			break;
		case 'c':
			log_err(
			    "convert: -c: writing compressed clusters is not supported — convert "
			    "without -c");
			return CLI_EXIT_ERROR;
		case CLI_OPT_FORCE:
			force = true;
			break;
		default:
			return CLI_EXIT_ERROR;
		}
	}
	if (argc - optind < 2) {
		cli_missing(cmd, argc - optind < 1 ? "SRC and DST" : "DST");
		return CLI_EXIT_ERROR;
	}
	if (argc - optind > 2) {
		log_err("convert: give one SRC and one DST (got %d files) — concatenating several "
		        "sources is not supported",
		        argc - optind);
		return CLI_EXIT_ERROR;
	}
	src_path = argv[optind];
	dst_path = o.path = argv[optind + 1];
	if (o.backing_file && o.format != IMG_FMT_QCOW2) {
		log_err("convert: -B needs -O qcow2 — raw images cannot have a backing file");
		return CLI_EXIT_ERROR;
	}
	if (cli_check_create_opts(cmd, &o, qcow2_key) < 0)
		return CLI_EXIT_ERROR;
	if (same_file(src_path, dst_path)) {
		log_err("convert: %s is the source image itself — choose another destination",
		        dst_path);
		return CLI_EXIT_ERROR;
	}
	if (!force && lstat(dst_path, &st) == 0) {
		log_err("convert: %s: already exists — remove it first or pass --force", dst_path);
		return CLI_EXIT_ERROR;
	}
	o.overwrite = force;

	src = cli_open(src_path, src_fmt, true, false);
	if (!src)
		return CLI_EXIT_ERROR;
	o.size = img_size(src);
	if (o.backing_file) {
		char *bp = cli_backing_path(dst_path, o.backing_file);
		struct img *b = bp ? cli_open(bp, o.backing_format, true, true) : NULL;

		free(bp);
		if (!b) {
			r = -ENOENT;
			goto out;
		}
		o.backing_format = img_format(b);
		cli_close(b);
	}
	r = img_create(&o, err, sizeof(err));
	if (r < 0) {
		if (err[0])
			log_err("%s", err);
		else
			log_err("convert: cannot create %s: %s", dst_path, strerror(-r));
		goto out;
	}
	created = true;
	dst = cli_open(dst_path, o.format, false, !o.backing_file);
	if (!dst) {
		r = -EIO;
		goto out;
	}
	if (img_format(dst) == IMG_FMT_QCOW2 && img_get_info(dst, &info) == 0 &&
	    info.cluster_size >= 512)
		gran = info.cluster_size;
	r = convert_copy(src, dst, o.backing_file != NULL, gran, progress);
out:
	if (dst && cli_close(dst) < 0 && r == 0)
		r = -EIO;
	cli_close(src);
	if (r < 0 && created)
		unlink(dst_path); /* ours, half-written: nothing of the user's is in it */
	return r < 0 ? CLI_EXIT_ERROR : CLI_EXIT_OK;
}

const struct cli_img_cmd cli_img_convert_cmd = {
    .name = "convert",
    .synopsis = "convert [-p] [-q] [-f FMT] [-O raw|qcow2] [-o OPTIONS] [-B BACKING [-F FMT]] "
                "[--force] SRC DST",
    .summary = "copy an image (and its backing chain) into a new image, keeping it sparse",
    .help = "  -O FMT        the new image's format: raw (default) or qcow2\n"
            "  -o OPTIONS    creation options as for create; -o help lists them\n"
            "  -B BACKING    give DST this backing file and copy only what SRC's top layer\n"
            "                holds (BACKING must read like the rest of SRC's chain)\n"
            "  -F FMT        BACKING's format (default: probed, then recorded)\n"
            "  -p            show progress on stderr (the default when stderr is a terminal)\n"
            "  -q            quiet: no progress\n"
            "  --force       overwrite DST if it exists (default: refuse)\n"
            "Zero-filled and unallocated areas are not written, so DST stays sparse.\n",
    .run = convert_run,
};

/* ---- compare ---- */

#define COMPARE_EXIT_DIFFERENT 1
#define COMPARE_EXIT_ERROR     2

/* Reads n bytes of im at off into buf, or zeros if known zero. */
static int read_or_zero(struct img *im, uint8_t *buf, uint64_t off, uint64_t n, bool zero)
{
	int r;

	if (zero) {
		memset(buf, 0, n);
		return 0;
	}
	r = img_pread(im, buf, n, off);
	return r < 0 ? cli_io_error("read", im, off, n, r) : 0;
}

/* 1 and *where if [from, to) of im holds a non-zero byte, 0 if all zero, -errno. */
static int find_nonzero(struct img *im, uint8_t *buf, uint64_t from, uint64_t to, uint64_t *where)
{
	while (from < to) {
		uint64_t n;
		bool zero;
		int r = cli_chain_status(im, from, MIN(CLI_STATUS_SPAN, to - from), &zero, &n);

		if (r < 0)
			return r;
		if (!zero) {
			n = MIN(n, (uint64_t)CLI_CHUNK);
			if ((r = read_or_zero(im, buf, from, n, false)) < 0)
				return r;
			for (uint64_t i = 0; i < n; i++) {
				if (buf[i]) {
					*where = from + i;
					return 1;
				}
			}
		}
		from += n;
	}
	return 0;
}

static int compare_images(struct img *a, struct img *b, bool strict, bool quiet, bool progress)
{
	uint64_t sa = img_size(a), sb = img_size(b), common = MIN(sa, sb), off = 0, where = 0;
	uint8_t *ba = malloc(CLI_CHUNK), *bb = malloc(CLI_CHUNK);
	struct cli_progress p;
	int r = 0, differ = 0;

	if (!ba || !bb) {
		free(ba);
		free(bb);
		return -ENOMEM;
	}
	cli_progress_start(&p, progress);
	while (off < common && !differ && r == 0) {
		uint64_t na, nb;
		bool za, zb;

		r = cli_chain_status(a, off, MIN(CLI_STATUS_SPAN, common - off), &za, &na);
		if (r == 0)
			r = cli_chain_status(b, off, na, &zb, &nb);
		if (r < 0)
			break;
		if (!(za && zb)) {
			nb = MIN(nb, (uint64_t)CLI_CHUNK);
			r = read_or_zero(a, ba, off, nb, za);
			if (r == 0)
				r = read_or_zero(b, bb, off, nb, zb);
			if (r == 0 && memcmp(ba, bb, nb) != 0) {
				uint64_t i = 0;
				while (ba[i] == bb[i])
					i++;
				where = off + i;
				differ = 1;
			}
		}
		off += nb;
		cli_progress_update(&p, off, MAX(sa, sb));
	}
	if (r == 0 && !differ && sa != sb) {
		if (strict) {
			cli_progress_end(&p, false);
			if (!quiet)
				printf("Strict mode: Image size mismatch!\n");
			free(ba);
			free(bb);
			return COMPARE_EXIT_DIFFERENT;
		}
		r = find_nonzero(sa > sb ? a : b, ba, common, MAX(sa, sb), &where);
		if (r > 0) {
			differ = 1;
			r = 0;
		}
		if (r == 0 && !quiet) {
			cli_progress_end(&p, !differ);
			printf("Warning: Image size mismatch!\n");
		}
	}
	cli_progress_end(&p, r == 0 && !differ);
	free(ba);
	free(bb);
	if (r < 0)
		return r;
	if (!quiet) {
		if (differ)
			printf("Content mismatch at offset %llu!\n",
			       (unsigned long long)ALIGN_DOWN(where, 512));
		else
			printf("Images are identical.\n");
	}
	return differ ? COMPARE_EXIT_DIFFERENT : 0;
}

static int compare_run(int argc, char **argv)
{
	const struct cli_img_cmd *cmd = &cli_img_compare_cmd;
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	enum img_format fa = IMG_FMT_AUTO, fb = IMG_FMT_AUTO;
	bool strict = false, quiet = false, progress = false;
	struct img *a, *b;
	int c, r;

	cli_getopt_reset();
	while ((c = cli_getopt(cmd, argc, argv, ":f:F:spqh", longopts)) != -1) {
		switch (c) {
		case 'h':
			return CLI_EXIT_OK;
		case 'f':
			if (cli_parse_format(cmd, 'f', optarg, &fa) < 0)
				return COMPARE_EXIT_ERROR;
			break;
		case 'F':
			if (cli_parse_format(cmd, 'F', optarg, &fb) < 0)
				return COMPARE_EXIT_ERROR;
			break;
		case 's':
			strict = true;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			quiet = true;
			break;
		default:
			return COMPARE_EXIT_ERROR;
		}
	}
	if (argc - optind < 2) {
		cli_missing(cmd, argc - optind < 1 ? "FILE1 and FILE2" : "FILE2");
		return COMPARE_EXIT_ERROR;
	}
	if (argc - optind > 2) {
		cli_extra(cmd, argv[optind + 2]);
		return COMPARE_EXIT_ERROR;
	}
	a = cli_open(argv[optind], fa, true, false);
	if (!a)
		return COMPARE_EXIT_ERROR;
	b = cli_open(argv[optind + 1], fb, true, false);
	if (!b) {
		cli_close(a);
		return COMPARE_EXIT_ERROR;
	}
	r = compare_images(a, b, strict, quiet, progress && !quiet);
	cli_close(a);
	cli_close(b);
	return r < 0 ? COMPARE_EXIT_ERROR : r;
}

const struct cli_img_cmd cli_img_compare_cmd = {
    .name = "compare",
    .synopsis = "compare [-q] [-p] [-s] [-f FMT] [-F FMT] FILE1 FILE2",
    .summary = "check whether two images hold the same content",
    .help = "  -f FMT, -F FMT  the formats of FILE1 and FILE2\n"
            "  -s              strict: images of different sizes differ\n"
            "  -p              show progress on stderr\n"
            "  -q              quiet: only the exit status tells\n"
            "Images of different sizes are identical if the longer one's tail reads as "
            "zeros.\n"
            "\n"
            "Exit status: 0 identical, 1 different, 2 error.\n",
    .run = compare_run,
};
