/* qcow2_snapshot.c: qcow2 internal snapshots (create, apply, delete, list), backing-file
 * changes and make_empty, on top of the core's metadata primitives. */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

#define SNAP_HDR_BYTES       40
#define SNAP_EXTRA_KNOWN     24          /* vm_state_size_large, disk_size, icount */
#define SNAP_MAX_EXTRA       1024        /* QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA */
#define SNAP_MAX_TABLE_BYTES (64u << 20) /* QEMU's QCOW_MAX_SNAPSHOTS_SIZE */
#define SNAP_MAX_NAME        255

/* One snapshot table entry, decoded. */
struct snap {
	uint64_t l1_offset;
	uint32_t l1_size;
	uint32_t date_sec, date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t vm_state_size;
	uint64_t disk_size;
	uint64_t icount;
	uint8_t *unknown_extra; /* extra data past the fields we know, kept verbatim */
	uint32_t unknown_extra_len;
	char *id, *name; /* NUL-terminated copies; may hold NULs, so lengths are kept too */
	uint16_t id_len, name_len;
};

struct snap_table {
	struct snap *s;
	uint32_t n;
	uint64_t bytes; /* on-disk size of the table read */
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static struct qcow2 *qcow2_of(struct img *im)
{
	if (!im || im->format != IMG_FMT_QCOW2 || !im->q)
		return NULL;
	return im->q;
}

/* The host file's size, rounded up to a cluster (the core's file_end may lag behind). */
static int file_bound(struct qcow2 *q, uint64_t *end)
{
	struct stat st;

	if (fstat(q->img->fd, &st) < 0)
		return -errno;
	*end = MAX(ALIGN_UP((uint64_t)st.st_size, q->cluster_size), q->file_end);
	return 0;
}

static int sync_file(struct qcow2 *q)
{
	return qcow2_sync(q); /* logs its own failure */
}

static void *alloc_buf(size_t len)
{
	void *p = NULL;

	/* Aligned and rounded for an O_DIRECT fd. */
	if (posix_memalign(&p, 4096, ALIGN_UP(len ? len : 1, 4096)) != 0)
		return NULL;
	return p;
}

static ssize_t pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* ---- the snapshot table ---- */

static void snap_table_free(struct snap_table *t)
{
	for (uint32_t i = 0; i < t->n; i++) {
		free(t->s[i].id);
		free(t->s[i].name);
		free(t->s[i].unknown_extra);
	}
	free(t->s);
	memset(t, 0, sizeof(*t));
}

static char *memdup_str(const uint8_t *p, size_t len)
{
	char *s = malloc(len + 1);

	if (s) {
		memcpy(s, p, len);
		s[len] = '\0';
	}
	return s;
}

/* The snapshot table as read so far: [off, off + have) of the file, in buf. */
struct tbl_buf {
	int fd;
	uint64_t off, avail, cs; /* avail: bytes the table may span (file end, size limit) */
	uint8_t *buf;
	uint64_t have;
	size_t cap;
};

/* Makes the first `want` bytes of the table available, a cluster at a time, from
 * cluster-aligned offsets into an aligned buffer (fine for O_DIRECT). -ERANGE if the table
 * cannot be that long. */
static int tbl_need(struct tbl_buf *b, uint64_t want)
{
	if (want > b->avail)
		return -ERANGE;
	while (b->have < want) {
		size_t chunk = (size_t)MIN(b->cs, b->avail - b->have);
		ssize_t n;

		if (b->have + b->cs > b->cap) {
			size_t ncap = MAX((size_t)(b->have + b->cs), b->cap * 2);
			uint8_t *nb = alloc_buf(ncap);

			if (!nb)
				return -ENOMEM;
			if (b->buf)
				memcpy(nb, b->buf, (size_t)b->have);
			free(b->buf);
			b->buf = nb;
			b->cap = ncap;
		}
		n = pread_full(b->fd, b->buf + b->have, (size_t)b->cs, b->off + b->have);
		if (n < 0)
			return (int)n;
		if ((size_t)n < chunk)
			return -EIO; /* the file shrank under us */
		b->have += chunk;
	}
	return 0;
}

/*
 * Reads and decodes the table at q->snapshots_offset (nb_snapshots entries). Everything in
 * it is untrusted: each record is bounds-checked against the file and against
 * SNAP_MAX_TABLE_BYTES before it is used.
 */
static int snap_table_read(struct qcow2 *q, struct snap_table *t, char *err, size_t errlen)
{
	const char *path = q->img->path;
	struct tbl_buf b = {.fd = q->img->fd, .off = q->snapshots_offset, .cs = q->cluster_size};
	uint64_t fsize, pos = 0;
	struct stat st;
	int ret = 0;

	memset(t, 0, sizeof(*t));
	if (q->nb_snapshots == 0)
		return 0;
	if (q->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
		seterr(err, errlen,
		       "%s: header claims %" PRIu32 " snapshots (limit %d) — the header is "
		       "corrupt; run `vmstack img check`",
		       path, q->nb_snapshots, QCOW2_MAX_SNAPSHOTS);
		return -EIO;
	}
	if (fstat(q->img->fd, &st) < 0)
		return -errno;
	fsize = (uint64_t)st.st_size;
	if (b.off == 0 || (b.off & (b.cs - 1)) || b.off >= fsize) {
		seterr(err, errlen,
		       "%s: snapshot table offset 0x%" PRIx64 " is unaligned or outside the file "
		       "(size %" PRIu64 ") — the header is corrupt; run `vmstack img check`",
		       path, b.off, fsize);
		return -EIO;
	}
	b.avail = MIN(fsize - b.off, (uint64_t)SNAP_MAX_TABLE_BYTES);
	t->s = calloc(q->nb_snapshots, sizeof(*t->s));
	if (!t->s)
		return -ENOMEM;

	for (uint32_t i = 0; i < q->nb_snapshots; i++) {
		struct snap *sn = &t->s[i];
		uint64_t rec = 0;
		uint32_t extra = 0;
		const uint8_t *p;

		ret = tbl_need(&b, pos + SNAP_HDR_BYTES);
		if (ret == 0) {
			p = b.buf + pos;
			extra = be32toh(*(const uint32_t *)(p + 36));
			rec = SNAP_HDR_BYTES + (uint64_t)extra +
			      be16toh(*(const uint16_t *)(p + 12)) +
			      be16toh(*(const uint16_t *)(p + 14));
			if (extra > SNAP_MAX_EXTRA) {
				seterr(
				    err, errlen,
				    "%s: snapshot table entry %" PRIu32 " has %" PRIu32
				    " bytes of extra data (limit %d) — the table is corrupt; run "
				    "`vmstack img check`",
				    path, i, extra, SNAP_MAX_EXTRA);
				ret = -EIO;
				goto out;
			}
			ret = tbl_need(&b, pos + rec);
		}
		if (ret == -ERANGE) {
			seterr(err, errlen,
			       "%s: snapshot table entry %" PRIu32 " (of %" PRIu32 ") at 0x%" PRIx64
			       " runs past %s — the table is corrupt; run `vmstack img check`",
			       path, i, q->nb_snapshots, b.off + pos,
			       b.avail == fsize - b.off ? "the end of the file"
			                                : "the 64 MiB table limit");
			ret = -EIO;
			goto out;
		}
		if (ret < 0) {
			seterr(err, errlen, "%s: reading the snapshot table: %s", path,
			       strerror(-ret));
			goto out;
		}

		p = b.buf + pos;
		sn->l1_offset = be64toh(*(const uint64_t *)p);
		sn->l1_size = be32toh(*(const uint32_t *)(p + 8));
		sn->id_len = be16toh(*(const uint16_t *)(p + 12));
		sn->name_len = be16toh(*(const uint16_t *)(p + 14));
		sn->date_sec = be32toh(*(const uint32_t *)(p + 16));
		sn->date_nsec = be32toh(*(const uint32_t *)(p + 20));
		sn->vm_clock_nsec = be64toh(*(const uint64_t *)(p + 24));
		sn->vm_state_size = be32toh(*(const uint32_t *)(p + 32));
		sn->disk_size = q->size;
		sn->icount = UINT64_MAX;
		p += SNAP_HDR_BYTES;
		/* Extra data fields are only present as far as extra_data_size says. */
		if (extra >= 8)
			sn->vm_state_size = be64toh(*(const uint64_t *)p);
		if (extra >= 16)
			sn->disk_size = be64toh(*(const uint64_t *)(p + 8));
		if (extra >= 24)
			sn->icount = be64toh(*(const uint64_t *)(p + 16));
		if (extra > SNAP_EXTRA_KNOWN) {
			sn->unknown_extra_len = extra - SNAP_EXTRA_KNOWN;
			sn->unknown_extra = malloc(sn->unknown_extra_len);
			if (!sn->unknown_extra) {
				ret = -ENOMEM;
				goto out;
			}
			memcpy(sn->unknown_extra, p + SNAP_EXTRA_KNOWN, sn->unknown_extra_len);
		}
		p += extra;
		sn->id = memdup_str(p, sn->id_len);
		sn->name = memdup_str(p + sn->id_len, sn->name_len);
		t->n = i + 1; /* so snap_table_free sees this entry */
		if (!sn->id || !sn->name) {
			ret = -ENOMEM;
			goto out;
		}
		pos = ALIGN_UP(pos + rec, 8);
	}
	t->bytes = pos;
out:
	free(b.buf);
	if (ret < 0)
		snap_table_free(t);
	return ret;
}

static uint64_t snap_rec_bytes(const struct snap *sn)
{
	return ALIGN_UP((uint64_t)SNAP_HDR_BYTES + SNAP_EXTRA_KNOWN + sn->unknown_extra_len +
	                    sn->id_len + sn->name_len,
	                8);
}

static void snap_encode(const struct snap *sn, uint8_t *p)
{
	*(uint64_t *)p = htobe64(sn->l1_offset);
	*(uint32_t *)(p + 8) = htobe32(sn->l1_size);
	*(uint16_t *)(p + 12) = htobe16(sn->id_len);
	*(uint16_t *)(p + 14) = htobe16(sn->name_len);
	*(uint32_t *)(p + 16) = htobe32(sn->date_sec);
	*(uint32_t *)(p + 20) = htobe32(sn->date_nsec);
	*(uint64_t *)(p + 24) = htobe64(sn->vm_clock_nsec);
	/* The 32-bit field is ignored when the 64-bit one is present (always, here). */
	*(uint32_t *)(p + 32) = htobe32((uint32_t)MIN(sn->vm_state_size, UINT32_MAX));
	*(uint32_t *)(p + 36) = htobe32(SNAP_EXTRA_KNOWN + sn->unknown_extra_len);
	p += SNAP_HDR_BYTES;
	*(uint64_t *)p = htobe64(sn->vm_state_size);
	*(uint64_t *)(p + 8) = htobe64(sn->disk_size);
	*(uint64_t *)(p + 16) = htobe64(sn->icount);
	p += SNAP_EXTRA_KNOWN;
	if (sn->unknown_extra_len)
		memcpy(p, sn->unknown_extra, sn->unknown_extra_len);
	p += sn->unknown_extra_len;
	memcpy(p, sn->id, sn->id_len);
	memcpy(p + sn->id_len, sn->name, sn->name_len);
}

/*
 * Writes t as the new snapshot table: into newly allocated clusters, fdatasync, then the
 * header (which syncs), and only then frees the old table. old_bytes is the size of the
 * table being replaced.
 */
static int snap_table_write(struct qcow2 *q, const struct snap_table *t, uint64_t old_bytes,
                            char *err, size_t errlen)
{
	uint64_t old_off = q->snapshots_offset, bytes = 0, pos = 0, alloc_len;
	uint32_t old_n = q->nb_snapshots;
	int64_t new_off = 0;
	uint8_t *buf;
	int ret;

	for (uint32_t i = 0; i < t->n; i++)
		bytes += snap_rec_bytes(&t->s[i]);
	if (bytes > SNAP_MAX_TABLE_BYTES) {
		seterr(err, errlen, "%s: the snapshot table would exceed 64 MiB — delete snapshots",
		       q->img->path);
		return -ENOSPC;
	}
	alloc_len = ALIGN_UP(bytes, q->cluster_size);
	if (t->n) {
		buf = alloc_buf((size_t)alloc_len);
		if (!buf)
			return -ENOMEM;
		memset(buf, 0, (size_t)alloc_len);
		for (uint32_t i = 0; i < t->n; i++) {
			snap_encode(&t->s[i], buf + pos);
			pos += snap_rec_bytes(&t->s[i]);
		}
		new_off = qcow2_alloc_clusters(q, alloc_len);
		if (new_off < 0) {
			free(buf);
			seterr(err, errlen, "%s: allocating the snapshot table: %s", q->img->path,
			       strerror((int)-new_off));
			return (int)new_off;
		}
		ret = qcow2_meta_write(q, (uint64_t)new_off, buf, (size_t)alloc_len);
		free(buf);
		if (ret == 0)
			ret = sync_file(q);
		if (ret < 0) {
			qcow2_refcount_update(q, (uint64_t)new_off, alloc_len, -1);
			seterr(err, errlen, "%s: writing the snapshot table: %s", q->img->path,
			       strerror(-ret));
			return ret;
		}
	}
	q->nb_snapshots = t->n;
	q->snapshots_offset = (uint64_t)new_off;
	ret = qcow2_write_header(q);
	if (ret < 0) {
		/* The header on disk may be either one: leak the new table rather than guess. */
		q->nb_snapshots = old_n;
		q->snapshots_offset = old_off;
		seterr(err, errlen, "%s: writing the header: %s", q->img->path, strerror(-ret));
		return ret;
	}
	if (old_n && old_off && old_bytes) {
		ret = qcow2_refcount_update(q, old_off, old_bytes, -1);
		if (ret < 0)
			log_warn("%s: freeing the old snapshot table: %s (clusters leaked; "
			         "`vmstack img check -r leaks` reclaims them)",
			         q->img->path, strerror(-ret));
	}
	return 0;
}

/* Index of the snapshot with this id, else with this name; -1 if none. */
static int snap_find(const struct snap_table *t, const char *id_or_name)
{
	size_t len = strlen(id_or_name);

	for (uint32_t i = 0; i < t->n; i++)
		if (t->s[i].id_len == len && memcmp(t->s[i].id, id_or_name, len) == 0)
			return (int)i;
	for (uint32_t i = 0; i < t->n; i++)
		if (t->s[i].name_len == len && memcmp(t->s[i].name, id_or_name, len) == 0)
			return (int)i;
	return -1;
}

static void snap_to_info(const struct snap *sn, struct qcow2_snapshot_info *o)
{
	memset(o, 0, sizeof(*o));
	snprintf(o->id, sizeof(o->id), "%s", sn->id);
	snprintf(o->name, sizeof(o->name), "%s", sn->name);
	o->vm_state_size = sn->vm_state_size;
	o->disk_size = sn->disk_size;
	o->date_sec = sn->date_sec;
	o->date_nsec = sn->date_nsec;
	o->vm_clock_nsec = sn->vm_clock_nsec;
	o->icount = sn->icount;
}

/*
 * For qcow2_check.c (which cannot see struct snap): calls fn for every entry of the table,
 * with its L1 table; *table_bytes gets the on-disk size of the table. Returns 0, fn's
 * first non-zero return, or -errno with err set if the table cannot be read.
 */
int qcow2_snapshot_table_walk(struct qcow2 *q,
                              int (*fn)(void *opaque, const struct qcow2_snapshot_info *info,
                                        uint64_t l1_offset, uint32_t l1_size),
                              void *opaque, uint64_t *table_bytes, char *err, size_t errlen)
{
	struct qcow2_snapshot_info info;
	struct snap_table t;
	int ret = snap_table_read(q, &t, err, errlen);

	if (ret < 0)
		return ret;
	*table_bytes = t.bytes;
	for (uint32_t i = 0; i < t.n && ret == 0; i++) {
		snap_to_info(&t.s[i], &info);
		ret = fn(opaque, &info, t.s[i].l1_offset, t.s[i].l1_size);
	}
	snap_table_free(&t);
	return ret;
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
	int ret = file_bound(q, &fend);

	if (ret < 0)
		return ret;
	l2 = alloc_buf((size_t)cs);
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

	l2 = alloc_buf((size_t)cs);
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

/* Reads a snapshot's L1 table into a zeroed buffer of at least min_entries entries, after
 * checking it is aligned, within QCOW2_MAX_L1_BYTES and inside the file. */
static int snap_read_l1(struct qcow2 *q, const struct snap *sn, uint32_t min_entries,
                        uint64_t **out, char *err, size_t errlen)
{
	uint64_t bytes = (uint64_t)sn->l1_size * 8, fend, *l1;
	uint32_t entries = MAX(min_entries, sn->l1_size);
	int ret = file_bound(q, &fend);

	*out = NULL;
	if (ret < 0)
		return ret;
	if (bytes > QCOW2_MAX_L1_BYTES ||
	    (sn->l1_size && ((sn->l1_offset & (q->cluster_size - 1)) || sn->l1_offset == 0 ||
	                     sn->l1_offset + bytes > fend))) {
		seterr(err, errlen,
		       "%s: snapshot '%s' has a bad L1 table (offset 0x%" PRIx64 ", %" PRIu32
		       " entries) — the snapshot table is corrupt; run `vmstack img check`",
		       q->img->path, sn->name, sn->l1_offset, sn->l1_size);
		return -EIO;
	}
	l1 = alloc_buf((size_t)entries * 8);
	if (!l1)
		return -ENOMEM;
	memset(l1, 0, (size_t)entries * 8);
	if (bytes) {
		ret = qcow2_meta_read(q, sn->l1_offset, l1, (size_t)bytes);
		if (ret < 0) {
			free(l1);
			seterr(err, errlen, "%s: reading snapshot '%s' L1 table: %s", q->img->path,
			       sn->name, strerror(-ret));
			return ret;
		}
	}
	*out = l1;
	return 0;
}

/* Common entry checks; on success q->lock is held and the caches are flushed and dropped. */
static int snap_begin(struct img *im, bool write, char *err, size_t errlen)
{
	struct qcow2 *q = qcow2_of(im);
	int ret;

	if (!q) {
		seterr(err, errlen, "%s: not a qcow2 image — snapshots need qcow2",
		       im ? im->path : "(null)");
		return -EINVAL;
	}
	if (write && im->readonly) {
		seterr(err, errlen, "%s: image is open read-only — open it read-write", im->path);
		return -EROFS;
	}
	pthread_mutex_lock(&q->lock);
	if (write && (q->incompat & QCOW2_INCOMPAT_CORRUPT)) {
		seterr(err, errlen,
		       "%s: image is marked corrupt — repair it with `vmstack img check "
		       "-r all`",
		       im->path);
		ret = -EIO;
		goto fail;
	}
	if (q->incompat & (QCOW2_INCOMPAT_EXTL2 | QCOW2_INCOMPAT_DATA_FILE)) {
		seterr(err, errlen,
		       "%s: snapshots of images with extended L2 entries or an external data file "
		       "are not supported — use qemu-img snapshot",
		       im->path);
		ret = -ENOTSUP;
		goto fail;
	}
	if (write) {
		ret = qcow2_flush_caches(q);
		if (ret < 0) {
			seterr(err, errlen, "%s: writing back cached metadata: %s", im->path,
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

int qcow2_snapshot_list(struct img *im, struct qcow2_snapshot_info *out, unsigned max)
{
	struct qcow2 *q = qcow2_of(im);
	struct snap_table t;
	char err[512];
	int ret;

	if (!q)
		return -EINVAL;
	pthread_mutex_lock(&q->lock);
	ret = snap_table_read(q, &t, err, sizeof(err));
	pthread_mutex_unlock(&q->lock);
	if (ret < 0) {
		log_err("%s", err);
		return ret;
	}
	for (uint32_t i = 0; i < t.n && i < max; i++)
		snap_to_info(&t.s[i], &out[i]);
	ret = (int)t.n;
	snap_table_free(&t);
	return ret;
}

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
		seterr(err, errlen, "snapshot name must be 1..%d bytes long", SNAP_MAX_NAME);
		return -EINVAL;
	}
	ret = snap_begin(im, true, err, errlen);
	if (ret < 0)
		return ret;
	q = im->q;
	ret = snap_table_read(q, &t, err, errlen);
	if (ret < 0)
		goto out_unlock;
	old_bytes = t.bytes;
	if (q->refcount_order == 0) {
		seterr(err, errlen,
		       "%s: 1-bit refcounts cannot count snapshot references — convert with "
		       "refcount_bits=16",
		       im->path);
		ret = -ENOTSUP;
		goto out;
	}
	if (t.n >= QCOW2_MAX_SNAPSHOTS) {
		seterr(err, errlen, "%s: already %u snapshots (the limit) — delete some", im->path,
		       t.n);
		ret = -ENOSPC;
		goto out;
	}
	for (uint32_t i = 0; i < t.n; i++) {
		if (t.s[i].name_len == nlen && memcmp(t.s[i].name, name, nlen) == 0) {
			seterr(err, errlen, "%s: a snapshot named '%s' exists — pick another name",
			       im->path, name);
			ret = -EEXIST;
			goto out;
		}
		max_id = MAX(max_id, strtoull(t.s[i].id, NULL, 10));
	}
	/* Check the active tables before touching any refcount. */
	ret = walk_l1_refs(q, q->l1, q->l1_size, 0, "the active L1");
	if (ret < 0) {
		seterr(err, errlen,
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
			seterr(err, errlen, "%s: allocating the snapshot L1 table: %s", im->path,
			       strerror(-ret));
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
		seterr(err, errlen, "%s: updating refcounts: %s (some clusters may be leaked)",
		       im->path, strerror(-ret));
		goto out;
	}
	/* 3. The L1 copy, then the new table (snap_table_write syncs, writes the header,
	 * frees the old table). */
	if (l1_bytes) {
		l1copy = alloc_buf((size_t)ALIGN_UP(l1_bytes, q->cluster_size));
		if (!l1copy) {
			ret = -ENOMEM;
			goto out;
		}
		memset(l1copy, 0, (size_t)ALIGN_UP(l1_bytes, q->cluster_size));
		memcpy(l1copy, q->l1, (size_t)l1_bytes);
		ret = qcow2_meta_write(q, (uint64_t)l1off, l1copy,
		                       (size_t)ALIGN_UP(l1_bytes, q->cluster_size));
		if (ret < 0) {
			seterr(err, errlen, "%s: writing the snapshot L1 table: %s", im->path,
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
	ret = snap_table_write(q, &t, old_bytes, err, errlen);
	if (ret == 0)
		l1off = 0; /* owned by the table now */
out:
	free(l1copy);
	snap_table_free(&t);
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
	ret = snap_table_read(q, &t, err, errlen);
	if (ret < 0)
		goto out_unlock;
	idx = snap_find(&t, id_or_name);
	if (idx < 0) {
		seterr(err, errlen,
		       "%s: no snapshot '%s' — list them with `vmstack img snapshot -l`", im->path,
		       id_or_name);
		ret = -ENOENT;
		goto out;
	}
	sn = &t.s[idx];
	need = l1_entries_for(q, sn->disk_size);
	if (sn->disk_size == 0 || need * 8 > QCOW2_MAX_L1_BYTES) {
		seterr(err, errlen,
		       "%s: snapshot '%s' records a disk size of %" PRIu64 " bytes — the snapshot "
		       "table is corrupt; run `vmstack img check`",
		       im->path, sn->name, sn->disk_size);
		ret = -EIO;
		goto out;
	}
	new_l1_size = (uint32_t)MAX(MAX((uint64_t)q->l1_size, (uint64_t)sn->l1_size), need);
	ret = snap_read_l1(q, sn, new_l1_size, &sn_l1, err, errlen);
	if (ret < 0)
		goto out;
	ret = walk_l1_refs(q, sn_l1, sn->l1_size, 0, "the snapshot's L1");
	if (ret == 0)
		ret = walk_l1_refs(q, q->l1, q->l1_size, 0, "the active L1");
	if (ret < 0) {
		seterr(err, errlen, "%s: corrupt L1/L2 tables — run `vmstack img check`", im->path);
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
		uint64_t *nl1 = alloc_buf((size_t)bytes);
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
	seterr(err, errlen,
	       "%s: reverting to snapshot '%s' failed: %s (clusters may be leaked; "
	       "`vmstack img check` tells)",
	       im->path, sn->name, strerror(-ret));
out:
	free(old_l1);
	free(sn_l1);
	snap_table_free(&t);
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
	ret = snap_table_read(q, &t, err, errlen);
	if (ret < 0)
		goto out_unlock;
	old_bytes = t.bytes;
	idx = snap_find(&t, id_or_name);
	if (idx < 0) {
		seterr(err, errlen,
		       "%s: no snapshot '%s' — list them with `vmstack img snapshot -l`", im->path,
		       id_or_name);
		ret = -ENOENT;
		goto out;
	}
	sn = t.s[idx];
	ret = snap_read_l1(q, &sn, 0, &sn_l1, err, errlen);
	if (ret < 0)
		goto out;
	ret = walk_l1_refs(q, sn_l1, sn.l1_size, 0, "the snapshot's L1");
	if (ret < 0) {
		seterr(err, errlen,
		       "%s: snapshot '%s' has corrupt L1/L2 tables — run `vmstack img check`",
		       im->path, sn.name);
		goto out;
	}

	/* 1. The table without it (crash from here on: leaks only). */
	memmove(&t.s[idx], &t.s[idx + 1], (t.n - (uint32_t)idx - 1) * sizeof(*t.s));
	t.n--;
	ret = snap_table_write(q, &t, old_bytes, err, errlen);
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
		seterr(err, errlen,
		       "%s: snapshot '%s' deleted, but freeing its clusters failed: %s "
		       "(`vmstack img check -r leaks` reclaims them)",
		       im->path, sn.name, strerror(-ret));
	free(sn.id);
	free(sn.name);
	free(sn.unknown_extra);
out:
	free(sn_l1);
	snap_table_free(&t);
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
		seterr(err, errlen, "%s: not a qcow2 image — only qcow2 names a backing file",
		       im ? im->path : "(null)");
		return -EINVAL;
	}
	if (im->readonly) {
		seterr(err, errlen, "%s: image is open read-only — open it read-write", im->path);
		return -EROFS;
	}
	if (backing_file && (!*backing_file || strlen(backing_file) > QCOW2_MAX_BACKING_NAME)) {
		seterr(err, errlen, "%s: backing file name must be 1..%d bytes long", im->path,
		       QCOW2_MAX_BACKING_NAME);
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
			seterr(err, errlen,
			       "%s: the backing file name does not fit in the header cluster — "
			       "use a shorter (relative) path",
			       im->path);
		else
			seterr(err, errlen, "%s: writing the header: %s", im->path, strerror(-ret));
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
