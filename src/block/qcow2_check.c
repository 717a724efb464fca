/* qcow2_check.c: qcow2 consistency check and repair, modelled on `qemu-img check`. */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "qcow2.h"
#include "qcow2_internal.h"
#include "util.h"

/*
 * The check reads the file itself (pread on the image fd), not the core's caches: it
 * computes, for every host cluster, how many references the metadata makes to it (header,
 * active L1 and its L2 tables and data, each snapshot's L1/L2/data, the snapshot table, the
 * refcount table and blocks), then compares with the refcounts on disk. Reports use
 * QEMU's wording so the two tools' output can be compared line by line.
 *
 * Repair only ever writes through the core's primitives (qcow2_refcount_update, which
 * writes through, and qcow2_meta_write / qcow2_write_l1 for OFLAG_COPIED) and never
 * allocates: a too-low refcount is only raised when its refcount block exists, because an
 * allocation could otherwise pick a referenced cluster whose refcount reads 0. Nothing is
 * repaired when the metadata could not be read in full (the expected counts would be too
 * low and "leaks" could be live data).
 */

/* Bits 1-8 and 56-61 of a standard cluster descriptor (qcow2 spec "Standard Cluster
 * Descriptor"). */
#define L2E_STD_RESERVED_MASK 0x3f000000000001feull

#define CHK_MAX_CLUSTERS (1ull << 31) /* 8 GiB of counters at most; QEMU's INT_MAX too */

struct chk {
	struct qcow2 *q;
	int fd;
	uint64_t cs;
	unsigned bits;
	uint64_t fsize;
	uint64_t nb_clusters; /* of the file */
	uint32_t *ref;        /* expected refcounts, nb_clusters + 1 entries */
	uint64_t nref;        /* entries of ref in use (nb_clusters, or one more) */
	uint64_t refcount_max;
	enum qcow2_repair fix;
	struct qcow2_check_result *res;
	void (*report)(void *opaque, const char *line);
	void *opaque;
	bool incomplete; /* some metadata could not be read: repair nothing */

	/* On-disk refcounts: the refcount table and one cached block. */
	uint64_t *reft;
	uint64_t reft_entries;
	uint8_t *rcblk;
	uint64_t rcblk_index; /* reft index cached in rcblk, UINT64_MAX if none */
	uint64_t rc_entries;

	uint64_t *l2; /* scratch cluster */
};

static void say(struct chk *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(struct chk *c, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (!c->report)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	c->report(c->opaque, line);
}

static void *alloc_buf(size_t len)
{
	void *p = NULL;

	if (posix_memalign(&p, 4096, ALIGN_UP(len ? len : 1, 4096)) != 0)
		return NULL;
	return p;
}

/* Reads len bytes at off; the part past the end of the file reads as zeros. Returns the
 * number of bytes that came from the file, or -errno. Reads are rounded to 512 bytes. */
static int64_t chk_read(struct chk *c, void *buf, size_t len, uint64_t off)
{
	size_t want = (size_t)ALIGN_UP(len, 512), done = 0;

	while (done < want) {
		ssize_t n = pread(c->fd, (char *)buf + done, want - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	if (done < want)
		memset((char *)buf + done, 0, want - done);
	return (int64_t)MIN(done, len);
}

/* Counts one reference to every cluster overlapping [off, off+len) (QEMU's
 * qcow2_inc_refcounts_imrt, with the same end-of-file rule: the last cluster may be
 * partly past the end, anything further is corruption). */
static void inc_refs(struct chk *c, uint64_t off, uint64_t len)
{
	if (len == 0)
		return;
	if (off + len < off || (off + len > c->fsize && off + len - c->fsize >= c->cs)) {
		say(c,
		    "ERROR: counting reference for region exceeding the end of the file by one "
		    "cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64,
		    off, len);
		c->res->corruptions++;
		return;
	}
	for (uint64_t k = off >> c->bits; k <= (off + len - 1) >> c->bits; k++) {
		if (k >= c->nb_clusters + 1)
			break; /* cannot happen after the test above */
		if (k >= c->nref)
			c->nref = k + 1;
		if (c->ref[k] >= c->refcount_max || c->ref[k] == UINT32_MAX) {
			say(c, "ERROR: overflow cluster offset=0x%" PRIx64, k << c->bits);
			c->res->corruptions++;
			continue;
		}
		c->ref[k]++;
	}
}

/* The on-disk refcount of cluster k; -EIO if its refcount block is unusable. */
static int disk_refcount(struct chk *c, uint64_t k, uint64_t *rc)
{
	uint64_t bi = k / c->rc_entries, i = k % c->rc_entries, boff;
	const uint8_t *b = c->rcblk;
	unsigned order = c->q->refcount_order;

	*rc = 0;
	if (bi >= c->reft_entries)
		return 0;
	boff = be64toh(c->reft[bi]) & QCOW2_REFT_OFFSET_MASK;
	if (!boff)
		return 0;
	if ((boff & (c->cs - 1)) || boff + c->cs > c->fsize)
		return -EIO;
	if (c->rcblk_index != bi) {
		int64_t n = chk_read(c, c->rcblk, (size_t)c->cs, boff);

		if (n < 0)
			return (int)n;
		if ((uint64_t)n < c->cs)
			return -EIO;
		c->rcblk_index = bi;
	}
	switch (order) {
	case 0:
	case 1:
	case 2: {
		unsigned w = 1u << order, per = 8 / w;

		*rc = (b[i / per] >> (w * (i % per))) & ((1u << w) - 1);
		break;
	}
	case 3:
		*rc = b[i];
		break;
	case 4:
		*rc = be16toh(((const uint16_t *)b)[i]);
		break;
	case 5:
		*rc = be32toh(((const uint32_t *)b)[i]);
		break;
	default:
		*rc = be64toh(((const uint64_t *)b)[i]);
		break;
	}
	return 0;
}

/* An L2 table (QEMU's check_refcounts_l2). active: count the allocation statistics. */
static void check_l2(struct chk *c, uint64_t l2off, bool active)
{
	uint64_t next_contig = 0;
	int64_t n = chk_read(c, c->l2, (size_t)c->cs, l2off);

	if (n <= 0) {
		say(c, "ERROR: I/O error in check_refcounts_l2 (L2 table 0x%" PRIx64 ")", l2off);
		c->res->check_errors++;
		c->incomplete = true;
		return;
	}
	for (unsigned j = 0; j < c->q->l2_entries; j++) {
		uint64_t e = be64toh(c->l2[j]);

		if (e & QCOW2_OFLAG_COMPRESSED) {
			unsigned shift = 62 - (c->bits - 8);
			uint64_t nsect = ((e >> shift) & ((1ull << (c->bits - 8)) - 1)) + 1;
			uint64_t coff = e & ((1ull << shift) - 1) & ~QCOW2_OFLAG_COPIED;

			if (e & QCOW2_OFLAG_COPIED) {
				say(c,
				    "ERROR: coffset=0x%" PRIx64
				    ": copied flag must never be set for "
				    "compressed clusters",
				    coff);
				c->res->corruptions++;
			}
			inc_refs(c, coff, nsect * 512 - (coff & 511));
			if (active) {
				c->res->allocated_clusters++;
				c->res->compressed_clusters++;
				c->res->fragmented_clusters++;
			}
		} else {
			uint64_t off = e & QCOW2_L2E_OFFSET_MASK;

			if (e & L2E_STD_RESERVED_MASK) {
				say(c, "ERROR found l2 entry with reserved bits set: %" PRIx64, e);
				c->res->corruptions++;
			}
			if (!off)
				continue;
			if (off & (c->cs - 1)) {
				if ((e & QCOW2_OFLAG_ZERO) && c->q->version >= 3)
					say(c,
					    "ERROR offset=%" PRIx64 ": Preallocated cluster is not "
					    "properly aligned; L2 entry corrupted.",
					    off);
				else
					say(c,
					    "ERROR offset=%" PRIx64
					    ": Data cluster is not properly "
					    "aligned; L2 entry corrupted.",
					    off);
				c->res->corruptions++;
			}
			if (active) {
				c->res->allocated_clusters++;
				if (next_contig && off != next_contig)
					c->res->fragmented_clusters++;
				next_contig = off + c->cs;
			}
			inc_refs(c, off, c->cs);
		}
	}
}

/* An L1 table and everything it reaches (QEMU's check_refcounts_l1). */
static void check_l1(struct chk *c, uint64_t l1off, uint32_t l1_size, bool active)
{
	size_t bytes = (size_t)l1_size * 8;
	uint64_t *l1;
	int64_t n;

	if (!l1_size)
		return;
	inc_refs(c, l1off, bytes);
	l1 = alloc_buf(bytes);
	if (!l1) {
		c->res->check_errors++;
		c->incomplete = true;
		return;
	}
	n = chk_read(c, l1, bytes, l1off);
	if (n < 0 || (size_t)n < bytes) {
		say(c, "ERROR: I/O error in check_refcounts_l1 (L1 table 0x%" PRIx64 ")", l1off);
		c->res->check_errors++;
		c->incomplete = true;
		free(l1);
		return;
	}
	for (uint32_t i = 0; i < l1_size; i++) {
		uint64_t l2off = be64toh(l1[i]) & QCOW2_L1E_OFFSET_MASK;

		if (!l2off)
			continue;
		inc_refs(c, l2off, c->cs);
		if (l2off & (c->cs - 1)) {
			say(c,
			    "ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 entry "
			    "corrupted",
			    l2off);
			c->res->corruptions++;
			continue;
		}
		if (l2off >= c->fsize)
			continue; /* reported by inc_refs; nothing to read */
		check_l2(c, l2off, active);
	}
	free(l1);
}

static int check_snapshot(void *opaque, const struct qcow2_snapshot_info *sn, uint64_t l1off,
                          uint32_t l1_size)
{
	struct chk *c = opaque;

	if (l1off & (c->cs - 1)) {
		say(c,
		    "ERROR snapshot %s (%s) l1_offset=%#" PRIx64 ": L1 table is not cluster "
		    "aligned; snapshot table entry corrupted",
		    sn->id, sn->name, l1off);
		c->res->corruptions++;
		c->incomplete = true;
		return 0;
	}
	if ((uint64_t)l1_size * 8 > QCOW2_MAX_L1_BYTES) {
		say(c,
		    "ERROR snapshot %s (%s) l1_size=%#" PRIx32 ": L1 table is too large; snapshot "
		    "table entry corrupted",
		    sn->id, sn->name, l1_size);
		c->res->corruptions++;
		c->incomplete = true;
		return 0;
	}
	check_l1(c, l1off, l1_size, false);
	return 0;
}

/* The refcount blocks themselves (QEMU's check_refblocks). */
static void check_refblocks(struct chk *c)
{
	for (uint64_t i = 0; i < c->reft_entries; i++) {
		uint64_t e = be64toh(c->reft[i]), off = e & QCOW2_REFT_OFFSET_MASK;

		if (e & ~QCOW2_REFT_OFFSET_MASK) {
			say(c, "ERROR refcount table entry %" PRIu64 " has reserved bits set", i);
			c->res->corruptions++;
			continue;
		}
		if (off & (c->cs - 1)) {
			say(c,
			    "ERROR refcount block %" PRIu64
			    " is not cluster aligned; refcount table "
			    "entry corrupted",
			    i);
			c->res->corruptions++;
			continue;
		}
		if ((off >> c->bits) >= c->nb_clusters) {
			say(c, "ERROR refcount block %" PRIu64 " is outside image", i);
			c->res->corruptions++;
			continue;
		}
		if (off) {
			inc_refs(c, off, c->cs);
			if (c->ref[off >> c->bits] != 1) {
				say(c, "ERROR refcount block %" PRIu64 " refcount=%" PRIu32, i,
				    c->ref[off >> c->bits]);
				c->res->corruptions++;
			}
		}
	}
}

/* On-disk against expected refcounts (QEMU's compare_refcounts), repairing what fix allows. */
static void compare_refcounts(struct chk *c, uint64_t *highest)
{
	struct qcow2 *q = c->q;

	*highest = 0;
	for (uint64_t k = 0; k < c->nref; k++) {
		uint64_t rc, want = c->ref[k], *fixed = NULL;
		int ret = disk_refcount(c, k, &rc);

		if (ret < 0) {
			say(c, "Can't get refcount for cluster %" PRIu64 ": %s", k, strerror(-ret));
			c->res->check_errors++;
			continue;
		}
		if (rc || want)
			*highest = k;
		if (rc == want)
			continue;
		if (!c->incomplete) {
			uint64_t bi = k / c->rc_entries;
			bool have_block =
			    bi < c->reft_entries && (be64toh(c->reft[bi]) & QCOW2_REFT_OFFSET_MASK);

			if (rc > want && c->fix != QCOW2_REPAIR_NONE)
				fixed = &c->res->leaks_fixed;
			else if (rc < want && c->fix == QCOW2_REPAIR_ALL && have_block)
				fixed = &c->res->corruptions_fixed;
		}
		say(c, "%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
		    fixed       ? "Repairing"
		    : rc < want ? "ERROR"
		                : "Leaked",
		    k, rc, want);
		if (fixed) {
			ret = qcow2_refcount_update(q, k << c->bits, c->cs,
			                            (int64_t)want - (int64_t)rc);
			c->rcblk_index = UINT64_MAX;
			if (ret == 0) {
				(*fixed)++;
				continue;
			}
			say(c, "ERROR could not fix cluster %" PRIu64 " refcount: %s", k,
			    strerror(-ret));
		}
		if (rc < want)
			c->res->corruptions++;
		else
			c->res->leaks++;
	}
}

/* OFLAG_COPIED in the active tables against the on-disk refcounts (QEMU's
 * check_oflag_copied). */
static void check_copied(struct chk *c)
{
	struct qcow2 *q = c->q;
	bool repair;
	bool l1_dirty = false;

	if (c->incomplete)
		repair = false;
	else if (c->fix == QCOW2_REPAIR_ALL)
		repair = true;
	else if (c->fix == QCOW2_REPAIR_LEAKS)
		repair = !c->res->check_errors && !c->res->corruptions && !c->res->leaks;
	else
		repair = false;

	for (uint32_t i = 0; i < q->l1_size; i++) {
		uint64_t l1e = be64toh(q->l1[i]), l2off = l1e & QCOW2_L1E_OFFSET_MASK, rc;
		unsigned dirty = 0;
		int64_t n;

		if (!l2off || (l2off & (c->cs - 1)) || l2off >= c->fsize)
			continue;
		if (disk_refcount(c, l2off >> c->bits, &rc) < 0)
			continue;
		if ((rc == 1) != !!(l1e & QCOW2_OFLAG_COPIED)) {
			say(c,
			    "%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu32 " l1_entry=%" PRIx64
			    " refcount=%" PRIu64,
			    repair ? "Repairing" : "ERROR", i, l1e, rc);
			if (repair) {
				q->l1[i] = htobe64(rc == 1 ? l1e | QCOW2_OFLAG_COPIED
				                           : l1e & ~QCOW2_OFLAG_COPIED);
				l1_dirty = true;
				c->res->corruptions_fixed++;
			} else {
				c->res->corruptions++;
			}
		}
		n = chk_read(c, c->l2, (size_t)c->cs, l2off);
		if (n <= 0)
			continue;
		for (unsigned j = 0; j < q->l2_entries; j++) {
			uint64_t e = be64toh(c->l2[j]), off = e & QCOW2_L2E_OFFSET_MASK;

			if ((e & QCOW2_OFLAG_COMPRESSED) || !off)
				continue;
			if (disk_refcount(c, off >> c->bits, &rc) < 0)
				continue;
			if ((rc == 1) != !!(e & QCOW2_OFLAG_COPIED)) {
				say(c,
				    "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64
				    " refcount=%" PRIu64,
				    repair ? "Repairing" : "ERROR", e, rc);
				if (repair) {
					c->l2[j] = htobe64(rc == 1 ? e | QCOW2_OFLAG_COPIED
					                           : e & ~QCOW2_OFLAG_COPIED);
					dirty++;
				} else {
					c->res->corruptions++;
				}
			}
		}
		if (dirty) {
			if (qcow2_meta_write(q, l2off, c->l2, (size_t)c->cs) == 0) {
				c->res->corruptions_fixed += dirty;
			} else {
				say(c, "ERROR could not write L2 table 0x%" PRIx64, l2off);
				c->res->corruptions += dirty;
				c->res->check_errors++;
			}
		}
	}
	if (l1_dirty && qcow2_write_l1(q) < 0) {
		say(c, "ERROR could not write the L1 table");
		c->res->check_errors++;
	}
}

static void chk_free(struct chk *c)
{
	free(c->ref);
	free(c->reft);
	free(c->rcblk);
	free(c->l2);
	c->ref = NULL;
	c->reft = NULL;
	c->rcblk = NULL;
	c->l2 = NULL;
}

/* One pass over the image. Returns 0 if it ran, -errno if it could not. */
static int check_once(struct qcow2 *q, enum qcow2_repair fix, struct qcow2_check_result *res,
                      void (*report)(void *opaque, const char *line), void *opaque)
{
	struct chk c = {.q = q,
	                .fd = q->img->fd,
	                .cs = q->cluster_size,
	                .bits = q->cluster_bits,
	                .fix = fix,
	                .res = res,
	                .report = report,
	                .opaque = opaque,
	                .rcblk_index = UINT64_MAX};
	uint64_t highest = 0, reft_bytes, snap_bytes = 0;
	char err[512];
	struct stat st;
	int64_t n;
	int ret;

	memset(res, 0, sizeof(*res));
	if (fstat(c.fd, &st) < 0)
		return -errno;
	c.fsize = (uint64_t)st.st_size;
	c.nb_clusters = (c.fsize + c.cs - 1) >> c.bits;
	if (c.nb_clusters > CHK_MAX_CLUSTERS) {
		res->check_errors++;
		return -EFBIG;
	}
	c.refcount_max =
	    q->refcount_order >= 6 ? UINT64_MAX : (1ull << (1u << q->refcount_order)) - 1;
	c.rc_entries = (c.cs * 8) >> q->refcount_order;
	res->total_clusters = (q->size + c.cs - 1) >> c.bits;

	c.ref = calloc(c.nb_clusters + 1, sizeof(*c.ref));
	c.rcblk = alloc_buf((size_t)c.cs);
	c.l2 = alloc_buf((size_t)c.cs);
	reft_bytes = (uint64_t)q->reft_clusters * c.cs;
	c.reft_entries = reft_bytes / 8;
	c.reft = alloc_buf((size_t)reft_bytes);
	if (!c.ref || !c.rcblk || !c.l2 || !c.reft) {
		chk_free(&c);
		res->check_errors++;
		return -ENOMEM;
	}
	c.nref = c.nb_clusters;
	n = chk_read(&c, c.reft, (size_t)reft_bytes, q->reft_offset);
	if (n < 0 || (uint64_t)n < reft_bytes) {
		say(&c, "ERROR: cannot read the refcount table at 0x%" PRIx64, q->reft_offset);
		res->check_errors++;
		chk_free(&c);
		return n < 0 ? (int)n : -EIO;
	}

	/* calculate_refcounts */
	inc_refs(&c, 0, c.cs);
	check_l1(&c, q->l1_offset, q->l1_size, true); /* q->l1 matches the file after the flush */
	ret = qcow2_snapshot_table_walk(q, check_snapshot, &c, &snap_bytes, err, sizeof(err));
	if (ret < 0) {
		say(&c, "ERROR snapshot table: %s", err);
		res->corruptions++;
		res->check_errors++;
		c.incomplete = true;
	} else if (q->nb_snapshots) {
		inc_refs(&c, q->snapshots_offset, snap_bytes);
	}
	inc_refs(&c, q->reft_offset, reft_bytes);
	check_refblocks(&c);
	if (c.incomplete && fix != QCOW2_REPAIR_NONE)
		say(&c, "ERROR some metadata could not be read; not repairing anything");

	compare_refcounts(&c, &highest);
	check_copied(&c);
	res->image_end_offset = (highest + 1) * c.cs;
	chk_free(&c);
	return 0;
}

int qcow2_check(struct img *im, enum qcow2_repair repair, struct qcow2_check_result *res,
                void (*report)(void *opaque, const char *line), void *opaque)
{
	struct qcow2 *q = im && im->format == IMG_FMT_QCOW2 ? im->q : NULL;
	struct qcow2_check_result first;
	int ret;

	if (!q || !res || repair > QCOW2_REPAIR_ALL)
		return -EINVAL;
	if (repair != QCOW2_REPAIR_NONE && im->readonly)
		return -EROFS;
	pthread_mutex_lock(&q->lock);
	if (q->incompat & (QCOW2_INCOMPAT_EXTL2 | QCOW2_INCOMPAT_DATA_FILE)) {
		pthread_mutex_unlock(&q->lock);
		log_err("%s: checking images with extended L2 entries or an external data file is "
		        "not supported — use qemu-img check",
		        im->path);
		return -ENOTSUP;
	}
	if (!im->readonly) {
		ret = qcow2_flush_caches(q);
		if (ret < 0) {
			pthread_mutex_unlock(&q->lock);
			return ret;
		}
		qcow2_drop_caches(q);
	}
	ret = check_once(q, repair, res, report, opaque);
	if (ret == 0 && repair != QCOW2_REPAIR_NONE &&
	    (res->leaks_fixed || res->corruptions_fixed)) {
		/* Like qemu-img: report what is left after the repair from a second pass. */
		first = *res;
		if (fdatasync(im->fd) < 0)
			log_warn("%s: fdatasync after repair: %s", im->path, strerror(errno));
		qcow2_drop_caches(q);
		ret = check_once(q, QCOW2_REPAIR_NONE, res, report, opaque);
		res->leaks_fixed = first.leaks_fixed;
		res->corruptions_fixed = first.corruptions_fixed;
	}
	/* Like QEMU (qcow2_mark_clean, qcow2_mark_consistent): a repair that leaves nothing
	 * wrong clears the dirty and corrupt bits. */
	if (ret == 0 && repair != QCOW2_REPAIR_NONE && !res->corruptions && !res->check_errors &&
	    (q->incompat & (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT))) {
		q->incompat &= ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT);
		ret = qcow2_write_header(q);
	}
	if (!im->readonly)
		qcow2_drop_caches(q);
	pthread_mutex_unlock(&q->lock);
	return ret;
}
