/* qcow2_snapshot.c: qcow2 internal snapshots (create, apply, delete), backing-file changes
 * and make_empty, on top of the core's metadata primitives and qcow2_snaptable.c. */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "qcow2.h"
#include "qcow2_internal.h"
#include "util.h"

/*
 * Refcount semantics (as QEMU, qcow2 spec "Snapshots"): a data cluster's refcount is the
 * number of L1 tables (active or snapshot) that reach it, through whichever L2 table; an
 * L2 table's refcount is the number of L1 tables naming it. So taking a snapshot adds one
 * to every L2 table and every cluster the active L1 reaches, and deleting one subtracts
 * what its L1 reaches. OFLAG_COPIED only matters in the active tables: it must be set
 * exactly where the refcount is 1 (the core then writes in place).
 *
 * The L2 tables and refcount blocks live in the core's caches. Every operation here runs
 * under q->lock, flushes and drops those caches, works on the file with
 * qcow2_meta_read/write (refcounts through qcow2_refcount_update, which writes through),
 * and drops the caches again at the end so the core re-reads what changed.
 *
 * Crash safety: refcounts only ever go up before the metadata that needs them is written
 * (with an fdatasync in between), and go down only after the metadata that no longer
 * needs them is on disk. A crash at any point leaks clusters, never corrupts.
 */

#define SNAP_MAX_NAME 255

static int sync_file(struct qcow2 *q)
{
	return qcow2_sync(q); /* logs its own failure */
}

/* ---- walking L1/L2 tables ---- */

/* Consecutive refcount updates of adjacent clusters, merged into one call. */
struct rc_batch {
	struct qcow2 *q;
	int64_t delta;
	uint64_t start, end;
};

static int batch_flush(struct rc_batch *b)
{
	int ret = 0;

	if (b->end > b->start && b->delta)
		ret = qcow2_refcount_update(b->q, b->start, b->end - b->start, b->delta);
	b->start = b->end = 0;
	return ret;
}

static int batch_add(struct rc_batch *b, uint64_t off, uint64_t len)
{
	uint64_t s = ALIGN_DOWN(off, b->q->cluster_size);
	uint64_t e = ALIGN_UP(off + len, b->q->cluster_size);
	int ret;

	/* Only exactly adjacent ranges merge: two compressed clusters sharing a host
	 * cluster each hold a reference to it. */
	if (b->end && b->end == s) {
		b->end = e;
		return 0;
	}
	ret = batch_flush(b);
	b->start = s;
	b->end = e;
	return ret;
}

/* Host range of a compressed L2 entry (qcow2 spec "Compressed Clusters Descriptor"). */
static void compressed_range(const struct qcow2 *q, uint64_t e, uint64_t *off, uint64_t *len)
{
	unsigned shift = 62 - (q->cluster_bits - 8);
	uint64_t nsect = ((e >> shift) & ((1ull << (q->cluster_bits - 8)) - 1)) + 1;

	*off = e & ((1ull << shift) - 1);
	*len = nsect * 512 - (*off & 511);
}

/*
 * Adds delta to the refcount of every L2 table that l1 (big-endian, n entries) names and
 * every host cluster those reach. delta 0 only validates: every offset aligned and inside
 * the file. `what` names the table in errors ("snapshot 3's L1").
 */
static int walk_l1_refs(struct qcow2 *q, const uint64_t *l1, uint32_t n, int64_t delta,
                        const char *what)
{
	struct rc_batch b = {.q = q, .delta = delta};
	uint64_t cs = q->cluster_size, fend, *l2;
	int ret = qcow2_file_bound(q, &fend);

	if (ret < 0)
		return ret;
	l2 = qcow2_alloc_buf((size_t)cs);
	if (!l2)
		return -ENOMEM;
	for (uint32_t i = 0; i < n && ret == 0; i++) {
		uint64_t l2off = be64toh(l1[i]) & QCOW2_L1E_OFFSET_MASK;

		if (!l2off)
			continue;
		if ((l2off & (cs - 1)) || l2off + cs > fend) {
			log_err("%s: %s entry %" PRIu32 " names L2 table 0x%" PRIx64
			        " (unaligned or past the end of the file) — the image is corrupt; "
			        "run `vmstack img check`",
			        q->img->path, what, i, l2off);
			ret = -EIO;
			break;
		}
		ret = qcow2_meta_read(q, l2off, l2, (size_t)cs);
		if (ret < 0)
			break;
		for (unsigned j = 0; j < q->l2_entries && ret == 0; j++) {
			uint64_t e = be64toh(l2[j]), off, len = cs;

			if (e & QCOW2_OFLAG_COMPRESSED) {
				compressed_range(q, e, &off, &len);
				if (off + len > fend + cs) {
					log_err("%s: %s: compressed cluster at 0x%" PRIx64
					        " lies past the end of the file — the image is "
					        "corrupt; "
					        "run `vmstack img check`",
					        q->img->path, what, off);
					ret = -EIO;
					break;
				}
			} else {
				off = e & QCOW2_L2E_OFFSET_MASK;
				if (!off)
					continue;
				if ((off & (cs - 1)) || off + cs > fend) {
					log_err("%s: %s: L2 table 0x%" PRIx64
					        " entry %u names cluster "
					        "0x%" PRIx64
					        " (unaligned or past the end of the file) — "
					        "the image is corrupt; run `vmstack img check`",
					        q->img->path, what, l2off, j, off);
					ret = -EIO;
					break;
				}
			}
			ret = batch_add(&b, off, len);
		}
		if (ret == 0)
			ret = batch_add(&b, l2off, cs);
	}
	if (ret == 0)
		ret = batch_flush(&b);
	free(l2);
	return ret;
}

/*
 * Sets OFLAG_COPIED on the active L1/L2 entries exactly where the cluster's refcount is 1
 * (never on compressed or unallocated entries), writing back what changed, then syncs.
 * Callers make sure the refcounts this reads are on disk first.
 */
static int fix_copied(struct qcow2 *q)
{
	uint64_t cs = q->cluster_size, *l2, rc;
	bool l1_dirty = false;
	int ret = 0;

	l2 = qcow2_alloc_buf((size_t)cs);
	if (!l2)
		return -ENOMEM;
	for (uint32_t i = 0; i < q->l1_size && ret == 0; i++) {
		uint64_t l1e = be64toh(q->l1[i]), l2off = l1e & QCOW2_L1E_OFFSET_MASK, nl1e;
		bool dirty = false;

		if (!l2off)
			continue;
		ret = qcow2_meta_read(q, l2off, l2, (size_t)cs);
		for (unsigned j = 0; j < q->l2_entries && ret == 0; j++) {
			uint64_t e = be64toh(l2[j]), ne = e & ~QCOW2_OFLAG_COPIED;
			uint64_t off = e & QCOW2_L2E_OFFSET_MASK;

			if (!(e & QCOW2_OFLAG_COMPRESSED) && off) {
				ret = qcow2_refcount_get(q, off / cs, &rc);
				if (rc == 1)
					ne |= QCOW2_OFLAG_COPIED;
			}
			if (ne != e) {
				l2[j] = htobe64(ne);
				dirty = true;
			}
		}
		if (ret == 0 && dirty)
			ret = qcow2_meta_write(q, l2off, l2, (size_t)cs);
		if (ret == 0)
			ret = qcow2_refcount_get(q, l2off / cs, &rc);
		if (ret < 0)
			break;
		nl1e = (l1e & ~QCOW2_OFLAG_COPIED) | (rc == 1 ? QCOW2_OFLAG_COPIED : 0);
		if (nl1e != l1e) {
			q->l1[i] = htobe64(nl1e);
			l1_dirty = true;
		}
	}
	free(l2);
	if (ret == 0 && l1_dirty)
		ret = qcow2_write_l1(q);
	if (ret == 0)
		ret = sync_file(q);
	return ret;
}

/* Common entry checks; on success q->lock is held and the caches are flushed and dropped. */
static int snap_begin(struct img *im, bool write, char *err, size_t errlen)
{
	struct qcow2 *q = qcow2_of(im);
	int ret;

	if (!q) {
		qcow2_seterr(err, errlen, "%s: not a qcow2 image — snapshots need qcow2",
		             im ? im->path : "(null)");
		return -EINVAL;
	}
	if (write && im->readonly) {
		qcow2_seterr(err, errlen, "%s: image is open read-only — open it read-write",
		             im->path);
		return -EROFS;
	}
	pthread_mutex_lock(&q->lock);
	if (write && (q->incompat & QCOW2_INCOMPAT_CORRUPT)) {
		qcow2_seterr(err, errlen,
		             "%s: image is marked corrupt — repair it with `vmstack img check "
		             "-r all`",
		             im->path);
		ret = -EIO;
		goto fail;
	}
	if (q->incompat & (QCOW2_INCOMPAT_EXTL2 | QCOW2_INCOMPAT_DATA_FILE)) {
		qcow2_seterr(
		    err, errlen,
		    "%s: snapshots of images with extended L2 entries or an external data file "
		    "are not supported — use qemu-img snapshot",
		    im->path);
		ret = -ENOTSUP;
		goto fail;
	}
	if (write) {
		ret = qcow2_flush_caches(q);
		if (ret < 0) {
			qcow2_seterr(err, errlen, "%s: writing back cached metadata: %s", im->path,
			             strerror(-ret));
			goto fail;
		}
		qcow2_drop_caches(q);
	}
	return 0;
fail:
	pthread_mutex_unlock(&q->lock);
	return ret;
}

static void snap_end(struct qcow2 *q, bool write)
{
	if (write)
		qcow2_drop_caches(q);
	pthread_mutex_unlock(&q->lock);
}

/* ---- public API ---- */

int qcow2_snapshot_create(struct img *im, const char *name, char *err, size_t errlen)
{
	struct qcow2 *q;
	struct snap_table t;
	struct snap *sn;
	struct timespec ts;
	uint64_t *l1copy = NULL, old_bytes, l1_bytes, max_id = 0;
	int64_t l1off = 0;
	char idbuf[24];
	size_t nlen = name ? strlen(name) : 0;
	int ret;

	if (nlen == 0 || nlen > SNAP_MAX_NAME) {
		qcow2_seterr(err, errlen, "snapshot name must be 1..%d bytes long", SNAP_MAX_NAME);
		return -EINVAL;
	}
	ret = snap_begin(im, true, err, errlen);
	if (ret < 0)
		return ret;
	q = im->q;
	ret = qcow2_snap_table_read(q, &t, err, errlen);
	if (ret < 0)
		goto out_unlock;
	old_bytes = t.bytes;
	if (q->refcount_order == 0) {
		qcow2_seterr(err, errlen,
		             "%s: 1-bit refcounts cannot count snapshot references — convert with "
		             "refcount_bits=16",
		             im->path);
		ret = -ENOTSUP;
		goto out;
	}
	if (t.n >= QCOW2_MAX_SNAPSHOTS) {
		qcow2_seterr(err, errlen, "%s: already %u snapshots (the limit) — delete some",
		             im->path, t.n);
		ret = -ENOSPC;
		goto out;
	}
	for (uint32_t i = 0; i < t.n; i++) {
		if (t.s[i].name_len == nlen && memcmp(t.s[i].name, name, nlen) == 0) {
			qcow2_seterr(err, errlen,
			             "%s: a snapshot named '%s' exists — pick another name",
			             im->path, name);
			ret = -EEXIST;
			goto out;
		}
		max_id = MAX(max_id, strtoull(t.s[i].id, NULL, 10));
	}
	/* Check the active tables before touching any refcount. */
	ret = walk_l1_refs(q, q->l1, q->l1_size, 0, "the active L1");
	if (ret < 0) {
		qcow2_seterr(err, errlen,
		             "%s: the active L1/L2 tables are corrupt — run `vmstack img "
		             "check`",
		             im->path);
		goto out;
	}

	l1_bytes = (uint64_t)q->l1_size * 8;
	if (l1_bytes) {
		l1off = qcow2_alloc_clusters(q, ALIGN_UP(l1_bytes, q->cluster_size));
		if (l1off < 0) {
			ret = (int)l1off;
			qcow2_seterr(err, errlen, "%s: allocating the snapshot L1 table: %s",
			             im->path, strerror(-ret));
			goto out;
		}
	}
	/* 1. References first (written through), then make them durable. */
	ret = walk_l1_refs(q, q->l1, q->l1_size, 1, "the active L1");
	if (ret == 0)
		ret = sync_file(q);
	/* 2. Nothing in the active tables has refcount 1 any more: clear OFLAG_COPIED. */
	if (ret == 0)
		ret = fix_copied(q);
	if (ret < 0) {
		qcow2_seterr(err, errlen,
		             "%s: updating refcounts: %s (some clusters may be leaked)", im->path,
		             strerror(-ret));
		goto out;
	}
	/* 3. The L1 copy, then the new table (qcow2_snap_table_write syncs, writes the header,
	 * frees the old table). */
	if (l1_bytes) {
		l1copy = qcow2_alloc_buf((size_t)ALIGN_UP(l1_bytes, q->cluster_size));
		if (!l1copy) {
			ret = -ENOMEM;
			goto out;
		}
		memset(l1copy, 0, (size_t)ALIGN_UP(l1_bytes, q->cluster_size));
		memcpy(l1copy, q->l1, (size_t)l1_bytes);
		ret = qcow2_meta_write(q, (uint64_t)l1off, l1copy,
		                       (size_t)ALIGN_UP(l1_bytes, q->cluster_size));
		if (ret < 0) {
			qcow2_seterr(err, errlen, "%s: writing the snapshot L1 table: %s", im->path,
			             strerror(-ret));
			goto out;
		}
	}
	sn = realloc(t.s, (t.n + 1) * sizeof(*t.s));
	if (!sn) {
		ret = -ENOMEM;
		goto out;
	}
	t.s = sn;
	sn = &t.s[t.n];
	memset(sn, 0, sizeof(*sn));
	snprintf(idbuf, sizeof(idbuf), "%" PRIu64, max_id + 1);
	sn->id = strdup(idbuf);
	sn->name = strdup(name);
	t.n++;
	if (!sn->id || !sn->name) {
		ret = -ENOMEM;
		goto out;
	}
	sn->id_len = (uint16_t)strlen(idbuf);
	sn->name_len = (uint16_t)nlen;
	sn->l1_offset = (uint64_t)l1off;
	sn->l1_size = q->l1_size;
	clock_gettime(CLOCK_REALTIME, &ts);
	sn->date_sec = (uint32_t)ts.tv_sec;
	sn->date_nsec = (uint32_t)ts.tv_nsec;
	sn->disk_size = q->size;
	sn->icount = UINT64_MAX;
	ret = qcow2_snap_table_write(q, &t, old_bytes, err, errlen);
	if (ret == 0)
		l1off = 0; /* owned by the table now */
out:
	free(l1copy);
	qcow2_snap_table_free(&t);
	/* A failure after step 1 leaves leaked clusters only (refcounts too high); the L1
	 * copy, if allocated and unused, is leaked too rather than freed at a risk. */
out_unlock:
	snap_end(q, true);
	return ret;
}

/* Clusters needed to map `size` bytes: L1 entries. */
static uint64_t l1_entries_for(const struct qcow2 *q, uint64_t size)
{
	uint64_t per_l2 = q->cluster_size * q->l2_entries;

	return size / per_l2 + (size % per_l2 != 0);
}

int qcow2_snapshot_apply(struct img *im, const char *id_or_name, char *err, size_t errlen)
{
	struct qcow2 *q;
	struct snap_table t;
	struct snap *sn;
	uint64_t *sn_l1 = NULL, *old_l1 = NULL, need, old_l1_offset, old_size;
	uint32_t new_l1_size, old_l1_size;
	bool relocate;
	int idx, ret;

	if (!id_or_name)
		return -EINVAL;
	ret = snap_begin(im, true, err, errlen);
	if (ret < 0)
		return ret;
	q = im->q;
	ret = qcow2_snap_table_read(q, &t, err, errlen);
	if (ret < 0)
		goto out_unlock;
	idx = qcow2_snap_find(&t, id_or_name);
	if (idx < 0) {
		qcow2_seterr(err, errlen,
		             "%s: no snapshot '%s' — list them with `vmstack img snapshot -l`",
		             im->path, id_or_name);
		ret = -ENOENT;
		goto out;
	}
	sn = &t.s[idx];
	need = l1_entries_for(q, sn->disk_size);
	if (sn->disk_size == 0 || need * 8 > QCOW2_MAX_L1_BYTES) {
		qcow2_seterr(err, errlen,
		             "%s: snapshot '%s' records a disk size of %" PRIu64
		             " bytes — the snapshot "
		             "table is corrupt; run `vmstack img check`",
		             im->path, sn->name, sn->disk_size);
		ret = -EIO;
		goto out;
	}
	new_l1_size = (uint32_t)MAX(MAX((uint64_t)q->l1_size, (uint64_t)sn->l1_size), need);
	ret = qcow2_snap_read_l1(q, sn, new_l1_size, &sn_l1, err, errlen);
	if (ret < 0)
		goto out;
	ret = walk_l1_refs(q, sn_l1, sn->l1_size, 0, "the snapshot's L1");
	if (ret == 0)
		ret = walk_l1_refs(q, q->l1, q->l1_size, 0, "the active L1");
	if (ret < 0) {
		qcow2_seterr(err, errlen, "%s: corrupt L1/L2 tables — run `vmstack img check`",
		             im->path);
		goto out;
	}
	old_l1_size = q->l1_size;
	old_l1_offset = q->l1_offset;
	old_size = q->size;
	old_l1 = malloc((size_t)old_l1_size * 8 + 8);
	if (!old_l1) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(old_l1, q->l1, (size_t)old_l1_size * 8);

	/* 1. The snapshot's references, durable before any table points at them. */
	ret = walk_l1_refs(q, sn_l1, sn->l1_size, 1, "the snapshot's L1");
	if (ret == 0)
		ret = sync_file(q);
	if (ret < 0)
		goto fail_leak;

	/* 2. Switch the active L1: in place if it fits, else to a new, larger area. */
	relocate = new_l1_size > q->l1_size;
	if (relocate) {
		uint64_t bytes = ALIGN_UP((uint64_t)new_l1_size * 8, q->cluster_size);
		uint64_t *nl1 = qcow2_alloc_buf((size_t)bytes);
		int64_t off;

		if (!nl1) {
			ret = -ENOMEM;
			goto fail_leak;
		}
		memset(nl1, 0, (size_t)bytes);
		memcpy(nl1, sn_l1, (size_t)new_l1_size * 8);
		off = qcow2_alloc_clusters(q, bytes);
		ret = off < 0 ? (int)off : qcow2_meta_write(q, (uint64_t)off, nl1, (size_t)bytes);
		if (ret == 0)
			ret = sync_file(q);
		if (ret < 0) {
			free(nl1);
			goto fail_leak;
		}
		free(q->l1);
		q->l1 = nl1;
		q->l1_offset = (uint64_t)off;
		q->l1_size = new_l1_size;
		q->size = sn->disk_size;
		im->size = q->size;
		ret = qcow2_write_header(q);
		if (ret < 0)
			goto fail_leak; /* in-memory state follows the new L1 (the safer guess) */
	} else {
		memcpy(q->l1, sn_l1, (size_t)q->l1_size * 8);
		ret = qcow2_write_l1(q);
		if (ret == 0)
			ret = sync_file(q);
		if (ret == 0 && sn->disk_size != q->size) {
			q->size = sn->disk_size;
			im->size = q->size;
			ret = qcow2_write_header(q);
		}
		if (ret < 0)
			goto fail_leak;
	}
	if (old_size != q->size)
		log_info("%s: virtual size changed to %" PRIu64 " bytes with snapshot '%s'",
		         im->path, q->size, sn->name);

	/* 3. The old active state's references go, then OFLAG_COPIED follows. */
	ret = walk_l1_refs(q, old_l1, old_l1_size, -1, "the old active L1");
	if (ret == 0 && relocate && old_l1_size)
		ret = qcow2_refcount_update(q, old_l1_offset, (uint64_t)old_l1_size * 8, -1);
	if (ret == 0)
		ret = sync_file(q);
	if (ret == 0)
		ret = fix_copied(q);
	if (ret < 0)
		goto fail_leak;
	goto out;

fail_leak:
	qcow2_seterr(err, errlen,
	             "%s: reverting to snapshot '%s' failed: %s (clusters may be leaked; "
	             "`vmstack img check` tells)",
	             im->path, sn->name, strerror(-ret));
out:
	free(old_l1);
	free(sn_l1);
	qcow2_snap_table_free(&t);
out_unlock:
	snap_end(q, true);
	return ret;
}

int qcow2_snapshot_delete(struct img *im, const char *id_or_name, char *err, size_t errlen)
{
	struct qcow2 *q;
	struct snap_table t;
	struct snap sn;
	uint64_t *sn_l1 = NULL, old_bytes;
	int idx, ret;

	if (!id_or_name)
		return -EINVAL;
	ret = snap_begin(im, true, err, errlen);
	if (ret < 0)
		return ret;
	q = im->q;
	ret = qcow2_snap_table_read(q, &t, err, errlen);
	if (ret < 0)
		goto out_unlock;
	old_bytes = t.bytes;
	idx = qcow2_snap_find(&t, id_or_name);
	if (idx < 0) {
		qcow2_seterr(err, errlen,
		             "%s: no snapshot '%s' — list them with `vmstack img snapshot -l`",
		             im->path, id_or_name);
		ret = -ENOENT;
		goto out;
	}
	sn = t.s[idx];
	ret = qcow2_snap_read_l1(q, &sn, 0, &sn_l1, err, errlen);
	if (ret < 0)
		goto out;
	ret = walk_l1_refs(q, sn_l1, sn.l1_size, 0, "the snapshot's L1");
	if (ret < 0) {
		qcow2_seterr(err, errlen,
		             "%s: snapshot '%s' has corrupt L1/L2 tables — run `vmstack img check`",
		             im->path, sn.name);
		goto out;
	}

	/* 1. The table without it (crash from here on: leaks only). */
	memmove(&t.s[idx], &t.s[idx + 1], (t.n - (uint32_t)idx - 1) * sizeof(*t.s));
	t.n--;
	ret = qcow2_snap_table_write(q, &t, old_bytes, err, errlen);
	/* sn's strings now belong to us, not to t. */
	if (ret < 0) {
		t.s[t.n++] = sn; /* so they are freed */
		goto out;
	}
	/* 2. Its references and its L1 table go; then the active flags follow. */
	ret = walk_l1_refs(q, sn_l1, sn.l1_size, -1, "the deleted snapshot's L1");
	if (ret == 0 && sn.l1_size)
		ret = qcow2_refcount_update(q, sn.l1_offset, (uint64_t)sn.l1_size * 8, -1);
	if (ret == 0)
		ret = sync_file(q);
	if (ret == 0)
		ret = fix_copied(q);
	if (ret < 0)
		qcow2_seterr(err, errlen,
		             "%s: snapshot '%s' deleted, but freeing its clusters failed: %s "
		             "(`vmstack img check -r leaks` reclaims them)",
		             im->path, sn.name, strerror(-ret));
	free(sn.id);
	free(sn.name);
	free(sn.unknown_extra);
out:
	free(sn_l1);
	qcow2_snap_table_free(&t);
out_unlock:
	snap_end(q, true);
	return ret;
}

int qcow2_set_backing(struct img *im, const char *backing_file, enum img_format backing_fmt,
                      char *err, size_t errlen)
{
	struct qcow2 *q = qcow2_of(im);
	char *old_file, *old_fmt, *nfile = NULL, *nfmt = NULL;
	int ret;

	if (!q) {
		qcow2_seterr(err, errlen, "%s: not a qcow2 image — only qcow2 names a backing file",
		             im ? im->path : "(null)");
		return -EINVAL;
	}
	if (im->readonly) {
		qcow2_seterr(err, errlen, "%s: image is open read-only — open it read-write",
		             im->path);
		return -EROFS;
	}
	if (backing_file && (!*backing_file || strlen(backing_file) > QCOW2_MAX_BACKING_NAME)) {
		qcow2_seterr(err, errlen, "%s: backing file name must be 1..%d bytes long",
		             im->path, QCOW2_MAX_BACKING_NAME);
		return -EINVAL;
	}
	if (backing_file) {
		nfile = strdup(backing_file);
		if (!nfile)
			return -ENOMEM;
		if (backing_fmt == IMG_FMT_RAW || backing_fmt == IMG_FMT_QCOW2) {
			nfmt = strdup(img_format_name(backing_fmt));
			if (!nfmt) {
				free(nfile);
				return -ENOMEM;
			}
		}
	}
	pthread_mutex_lock(&q->lock);
	old_file = q->backing_file;
	old_fmt = q->backing_format;
	q->backing_file = nfile;
	q->backing_format = nfmt;
	ret = qcow2_write_header(q);
	if (ret < 0) {
		q->backing_file = old_file;
		q->backing_format = old_fmt;
		pthread_mutex_unlock(&q->lock);
		free(nfile);
		free(nfmt);
		if (ret == -ENOSPC)
			qcow2_seterr(
			    err, errlen,
			    "%s: the backing file name does not fit in the header cluster — "
			    "use a shorter (relative) path",
			    im->path);
		else
			qcow2_seterr(err, errlen, "%s: writing the header: %s", im->path,
			             strerror(-ret));
		return ret;
	}
	pthread_mutex_unlock(&q->lock);
	free(old_file);
	free(old_fmt);
	return 0;
}

int qcow2_make_empty(struct img *im)
{
	struct qcow2 *q = qcow2_of(im);
	uint64_t *old_l1;
	uint32_t n;
	char err[256];
	int ret;

	if (!q)
		return -EINVAL;
	ret = snap_begin(im, true, err, sizeof(err));
	if (ret < 0) {
		log_err("%s", err);
		return ret;
	}
	if (q->nb_snapshots > 0) {
		log_err("%s: the image has internal snapshots — delete them before emptying it",
		        im->path);
		ret = -EBUSY;
		goto out;
	}
	n = q->l1_size;
	ret = walk_l1_refs(q, q->l1, n, 0, "the active L1");
	if (ret < 0)
		goto out;
	old_l1 = malloc((size_t)n * 8 + 8);
	if (!old_l1) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(old_l1, q->l1, (size_t)n * 8);
	/* Unhook every L2 table first (durably); then free what they named: a crash in
	 * between leaks, never leaves a table pointing at freed clusters. */
	memset(q->l1, 0, (size_t)n * 8);
	ret = qcow2_write_l1(q);
	if (ret == 0)
		ret = sync_file(q);
	if (ret < 0)
		memcpy(q->l1, old_l1, (size_t)n * 8); /* the file may hold either */
	if (ret == 0)
		ret = walk_l1_refs(q, old_l1, n, -1, "the old active L1");
	if (ret == 0)
		ret = sync_file(q);
	free(old_l1);
out:
	snap_end(q, true);
	return ret;
}
