/* qcow2.h: what only a qcow2 image can do — internal snapshots, check, backing changes,
 * and the monitor's fast-path mapping. Generic I/O is in image.h. */
#ifndef VMSTACK_QCOW2_H
#define VMSTACK_QCOW2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "image.h"

/* Every function here takes an img whose img_format() is IMG_FMT_QCOW2 (else -EINVAL). */

/*
 * The monitor's fast path. If guest range [off, off+len) starts in plain data clusters of
 * THIS image that can be accessed in place — for a write: allocated, not compressed, not
 * zero-flagged, refcount 1 (OFLAG_COPIED) — returns how many bytes from off (> 0, <= len)
 * lie contiguously in the host file starting at *host_off. Returns 0 when the start of the
 * range needs the slow path (img_preadv/img_pwritev), -errno on a metadata error.
 * A cluster mapped here stays at *host_off until img_close() (discard only punches holes
 * in clusters it keeps allocated; nothing frees a cluster while the image is open for a VM)
 * so the caller may do the data I/O after this returns, without the image's lock.
 */
int64_t qcow2_map_io(struct img *im, uint64_t off, uint64_t len, bool write, uint64_t *host_off);

/* Internal snapshots (qcow2 spec "Snapshots"). The image must be open read-write and not
 * used by a running VM. id strings are decimal, assigned like QEMU's (max existing + 1). */
struct qcow2_snapshot_info {
	char id[16];
	char name[256];
	uint64_t vm_state_size;
	uint64_t disk_size; /* virtual size at creation (v3 extra data), else the image size */
	uint32_t date_sec, date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t icount; /* (uint64_t)-1 if absent */
};
/* Fills up to max entries; returns the number of snapshots (may be > max) or -errno. */
int qcow2_snapshot_list(struct img *im, struct qcow2_snapshot_info *out, unsigned max);
/* name must be unique (-EEXIST) and 1..255 bytes. */
int qcow2_snapshot_create(struct img *im, const char *name, char *err, size_t errlen);
/* Looks a snapshot up by id first, then by name (like qemu-img). -ENOENT if absent. */
int qcow2_snapshot_apply(struct img *im, const char *id_or_name, char *err, size_t errlen);
int qcow2_snapshot_delete(struct img *im, const char *id_or_name, char *err, size_t errlen);

/* Consistency check, modelled on qemu-img check. */
struct qcow2_check_result {
	uint64_t corruptions;  /* refcount too low, bad offsets, OFLAG_COPIED wrong, overlaps */
	uint64_t leaks;        /* clusters with a refcount but no reference */
	uint64_t check_errors; /* I/O errors while checking */
	uint64_t corruptions_fixed, leaks_fixed;
	uint64_t allocated_clusters, total_clusters; /* of the virtual disk (for the summary) */
	uint64_t fragmented_clusters, compressed_clusters;
	uint64_t image_end_offset;
};
enum qcow2_repair { QCOW2_REPAIR_NONE, QCOW2_REPAIR_LEAKS, QCOW2_REPAIR_ALL };
/* Opens nothing: im must have been opened with no_backing (and readonly unless repair).
 * Logs each problem found through the report callback (one line each, like qemu-img's
 * "Leaked cluster 5 refcount=1 reference=0"); report may be NULL. Returns 0 if the check
 * ran (look at res), -errno if it could not. */
int qcow2_check(struct img *im, enum qcow2_repair repair, struct qcow2_check_result *res,
                void (*report)(void *opaque, const char *line), void *opaque);

/* Rewrites the header's backing file name and format (NULL name = no backing file). Does
 * not touch data (that is `img rebase`'s job) and does not reopen the chain. */
int qcow2_set_backing(struct img *im, const char *backing_file, enum img_format backing_fmt,
                      char *err, size_t errlen);

/* Makes every cluster of this image unallocated (after `img commit`): L2 entries cleared,
 * clusters freed. Snapshots make it refuse with -EBUSY. */
int qcow2_make_empty(struct img *im);

#endif
