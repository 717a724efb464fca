/* img_check.c: `vmstack img check` — qcow2 consistency check and repair, qemu-img's output
 * and exit codes (0 clean, 1 check failed, 2 corruptions, 3 leaks only, 63 unsupported). */
#include "img_cli.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "qcow2.h"
#include "util.h"

#define CHECK_EXIT_ERRORS      1
#define CHECK_EXIT_CORRUPT     2
#define CHECK_EXIT_LEAKS       3
#define CHECK_EXIT_UNSUPPORTED 63

/* Each problem the check meets, like qemu-img's "Leaked cluster 5 refcount=1 reference=0". */
static void check_report(void *opaque, const char *line)
{
	(void)opaque;
	fprintf(stderr, "%s\n", line);
}

static void check_print_human(const struct qcow2_check_result *r)
{
	if (!r->corruptions && !r->leaks && !r->check_errors) {
		printf("No errors were found on the image.\n");
	} else {
		if (r->corruptions)
			printf("\n%llu errors were found on the image.\n"
			       "Data may be corrupted, or further writes to the image may corrupt "
			       "it.\n",
			       (unsigned long long)r->corruptions);
		if (r->leaks)
			printf("\n%llu leaked clusters were found on the image.\n"
			       "This means waste of disk space, but no harm to data.\n",
			       (unsigned long long)r->leaks);
		if (r->check_errors)
			printf("\n%llu internal errors have occurred during the check.\n",
			       (unsigned long long)r->check_errors);
	}
	if (r->total_clusters && r->allocated_clusters)
		printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed "
		       "clusters\n",
		       (unsigned long long)r->allocated_clusters,
		       (unsigned long long)r->total_clusters,
		       (double)r->allocated_clusters * 100.0 / (double)r->total_clusters,
		       (double)r->fragmented_clusters * 100.0 / (double)r->allocated_clusters,
		       (double)r->compressed_clusters * 100.0 / (double)r->allocated_clusters);
	if (r->image_end_offset)
		printf("Image end offset: %llu\n", (unsigned long long)r->image_end_offset);
}

/* Like qemu-img, a count of zero is left out (except check-errors). */
static void jset_nz(json_t *o, const char *key, uint64_t v)
{
	if (v)
		json_object_set_new(o, key, json_integer((json_int_t)v));
}

static int check_print_json(const char *path, const struct qcow2_check_result *r)
{
	json_t *o = json_object();
	char *text;

	jset_nz(o, "image-end-offset", r->image_end_offset);
	jset_nz(o, "total-clusters", r->total_clusters);
	jset_nz(o, "corruptions", r->corruptions);
	json_object_set_new(o, "check-errors", json_integer((json_int_t)r->check_errors));
	jset_nz(o, "leaks", r->leaks);
	jset_nz(o, "leaks-fixed", r->leaks_fixed);
	jset_nz(o, "corruptions-fixed", r->corruptions_fixed);
	jset_nz(o, "allocated-clusters", r->allocated_clusters);
	jset_nz(o, "fragmented-clusters", r->fragmented_clusters);
	jset_nz(o, "compressed-clusters", r->compressed_clusters);
	json_object_set_new(o, "filename", json_string(path));
	json_object_set_new(o, "format", json_string("qcow2"));
	text = json_dumps(o, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!text)
		return -ENOMEM;
	printf("%s\n", text);
	free(text);
	return 0;
}

static int check_run(int argc, char **argv)
{
	const struct cli_img_cmd *cmd = &cli_img_check_cmd;
	static const struct option longopts[] = {
	    {"output", required_argument, NULL, CLI_OPT_OUTPUT},
	    {"repair", required_argument, NULL, 'r'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	enum img_format fmt = IMG_FMT_AUTO;
	enum qcow2_repair repair = QCOW2_REPAIR_NONE;
	struct qcow2_check_result res = {0}, again;
	bool json = false, quiet = false;
	const char *path;
	struct img *im;
	int c, r;

	cli_getopt_reset();
	while ((c = cli_getopt(cmd, argc, argv, ":f:r:qh", longopts)) != -1) {
		switch (c) {
		case 'h':
			return CLI_EXIT_OK;
		case 'f':
			if (cli_parse_format(cmd, 'f', optarg, &fmt) < 0)
				return CLI_EXIT_ERROR;
			break;
		case 'r':
			if (!strcmp(optarg, "leaks")) {
				repair = QCOW2_REPAIR_LEAKS;
			} else if (!strcmp(optarg, "all")) {
				repair = QCOW2_REPAIR_ALL;
			} else {
				log_err(
				    "check: -r: unknown repair mode '%s' — use -r leaks or -r all",
				    optarg);
				return CLI_EXIT_ERROR;
			}
			break;
		case CLI_OPT_OUTPUT:
			if (cli_parse_output(cmd, optarg, &json) < 0)
				return CLI_EXIT_ERROR;
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
	im = repair == QCOW2_REPAIR_NONE ? cli_open(path, fmt, true, true)
	                                 : cli_open_for_repair(path, fmt);
	if (!im)
		return CLI_EXIT_ERROR;
	if (img_format(im) != IMG_FMT_QCOW2) {
		log_err("check: %s: a raw image has no metadata to check — only qcow2 images can "
		        "be checked",
		        path);
		cli_close(im);
		return CHECK_EXIT_UNSUPPORTED;
	}
	r = qcow2_check(im, repair, &res, check_report, NULL);
	if (r == 0 && (res.leaks_fixed || res.corruptions_fixed)) {
		if (!json && !quiet)
			printf("The following inconsistencies were found and repaired:\n\n"
			       "    %llu leaked clusters\n"
			       "    %llu corruptions\n\n"
			       "Double checking the fixed image now...\n",
			       (unsigned long long)res.leaks_fixed,
			       (unsigned long long)res.corruptions_fixed);
		r = qcow2_check(im, QCOW2_REPAIR_NONE, &again, check_report, NULL);
		again.leaks_fixed = res.leaks_fixed;
		again.corruptions_fixed = res.corruptions_fixed;
		res = again;
	}
	if (r < 0) {
		log_err("check: %s: the check could not complete: %s — the image may be damaged "
		        "beyond what check can read",
		        path, strerror(-r));
		cli_close(im);
		return CHECK_EXIT_ERRORS;
	}
	if (cli_close(im) < 0)
		return CHECK_EXIT_ERRORS;
	if (json)
		check_print_json(path, &res);
	else if (!quiet)
		check_print_human(&res);
	if (res.check_errors)
		return CHECK_EXIT_ERRORS;
	if (res.corruptions)
		return CHECK_EXIT_CORRUPT;
	if (res.leaks)
		return CHECK_EXIT_LEAKS;
	return CLI_EXIT_OK;
}

const struct cli_img_cmd cli_img_check_cmd = {
    .name = "check",
    .synopsis = "check [-q] [-f FMT] [-r leaks|all] [--output=human|json] FILE",
    .summary = "check a qcow2 image's metadata for errors and leaks, optionally repairing them",
    .help = "  -r leaks       free leaked clusters (safe)\n"
            "  -r all         also repair corruptions (back the image up first)\n"
            "  --output=FMT   human (default) or json\n"
            "  -q             quiet: only the exit status tells\n"
            "\n"
            "Exit status: 0 no problems; 1 the check could not complete; 2 corruptions;\n"
            "3 leaked clusters only; 63 the format (raw) has nothing to check.\n",
    .run = check_run,
};
