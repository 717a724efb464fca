/* qcow2_snaptable.c: the qcow2 snapshot table (reading and validating it, writing it anew,
 * finding and listing entries) and the small helpers the snapshot code shares. */
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

#define SNAP_HDR_BYTES       40
#define SNAP_EXTRA_KNOWN     24          /* vm_state_size_large, disk_size, icount */
#define SNAP_MAX_EXTRA       1024        /* QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA */
#define SNAP_MAX_TABLE_BYTES (64u << 20) /* QEMU's QCOW_MAX_SNAPSHOTS_SIZE */

void qcow2_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

struct qcow2 *qcow2_of(struct img *im)
{
	if (!im || im->format != IMG_FMT_QCOW2 || !im->q)
		return NULL;
	return im->q;
}

/* The host file's size, rounded up to a cluster (the core's file_end may lag behind). */
int qcow2_file_bound(struct qcow2 *q, uint64_t *end)
{
	struct stat st;

	if (fstat(q->img->fd, &st) < 0)
		return -errno;
	*end = MAX(ALIGN_UP((uint64_t)st.st_size, q->cluster_size), q->file_end);
	return 0;
}

void *qcow2_alloc_buf(size_t len)
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

void qcow2_snap_table_free(struct snap_table *t)
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
			uint8_t *nb = qcow2_alloc_buf(ncap);

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
int qcow2_snap_table_read(struct qcow2 *q, struct snap_table *t, char *err, size_t errlen)
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
		qcow2_seterr(err, errlen,
		             "%s: header claims %" PRIu32 " snapshots (limit %d) — the header is "
		             "corrupt; run `vmstack img check`",
		             path, q->nb_snapshots, QCOW2_MAX_SNAPSHOTS);
		return -EIO;
	}
	if (fstat(q->img->fd, &st) < 0)
		return -errno;
	fsize = (uint64_t)st.st_size;
	if (b.off == 0 || (b.off & (b.cs - 1)) || b.off >= fsize) {
		qcow2_seterr(err, errlen,
		             "%s: snapshot table offset 0x%" PRIx64
		             " is unaligned or outside the file "
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
				qcow2_seterr(
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
			qcow2_seterr(
			    err, errlen,
			    "%s: snapshot table entry %" PRIu32 " (of %" PRIu32 ") at 0x%" PRIx64
			    " runs past %s — the table is corrupt; run `vmstack img check`",
			    path, i, q->nb_snapshots, b.off + pos,
			    b.avail == fsize - b.off ? "the end of the file"
			                             : "the 64 MiB table limit");
			ret = -EIO;
			goto out;
		}
		if (ret < 0) {
			qcow2_seterr(err, errlen, "%s: reading the snapshot table: %s", path,
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
		t->n = i + 1; /* so qcow2_snap_table_free sees this entry */
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
		qcow2_snap_table_free(t);
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
int qcow2_snap_table_write(struct qcow2 *q, const struct snap_table *t, uint64_t old_bytes,
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
		qcow2_seterr(err, errlen,
		             "%s: the snapshot table would exceed 64 MiB — delete snapshots",
		             q->img->path);
		return -ENOSPC;
	}
	alloc_len = ALIGN_UP(bytes, q->cluster_size);
	if (t->n) {
		buf = qcow2_alloc_buf((size_t)alloc_len);
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
			qcow2_seterr(err, errlen, "%s: allocating the snapshot table: %s",
			             q->img->path, strerror((int)-new_off));
			return (int)new_off;
		}
		ret = qcow2_meta_write(q, (uint64_t)new_off, buf, (size_t)alloc_len);
		free(buf);
		if (ret == 0)
			ret = qcow2_sync(q);
		if (ret < 0) {
			qcow2_refcount_update(q, (uint64_t)new_off, alloc_len, -1);
			qcow2_seterr(err, errlen, "%s: writing the snapshot table: %s",
			             q->img->path, strerror(-ret));
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
		qcow2_seterr(err, errlen, "%s: writing the header: %s", q->img->path,
		             strerror(-ret));
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
int qcow2_snap_find(const struct snap_table *t, const char *id_or_name)
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
 * For qcow2_check.c (which works on qcow2_snapshot_info, not struct snap): calls fn for every entry
 * of the table, with its L1 table; *table_bytes gets the on-disk size of the table. Returns 0, fn's
 * first non-zero return, or -errno with err set if the table cannot be read.
 */
int qcow2_snapshot_table_walk(struct qcow2 *q,
                              int (*fn)(void *opaque, const struct qcow2_snapshot_info *info,
                                        uint64_t l1_offset, uint32_t l1_size),
                              void *opaque, uint64_t *table_bytes, char *err, size_t errlen)
{
	struct qcow2_snapshot_info info;
	struct snap_table t;
	int ret = qcow2_snap_table_read(q, &t, err, errlen);

	if (ret < 0)
		return ret;
	*table_bytes = t.bytes;
	for (uint32_t i = 0; i < t.n && ret == 0; i++) {
		snap_to_info(&t.s[i], &info);
		ret = fn(opaque, &info, t.s[i].l1_offset, t.s[i].l1_size);
	}
	qcow2_snap_table_free(&t);
	return ret;
}

/* Reads a snapshot's L1 table into a zeroed buffer of at least min_entries entries, after
 * checking it is aligned, within QCOW2_MAX_L1_BYTES and inside the file. */
int qcow2_snap_read_l1(struct qcow2 *q, const struct snap *sn, uint32_t min_entries, uint64_t **out,
                       char *err, size_t errlen)
{
	uint64_t bytes = (uint64_t)sn->l1_size * 8, fend, *l1;
	uint32_t entries = MAX(min_entries, sn->l1_size);
	int ret = qcow2_file_bound(q, &fend);

	*out = NULL;
	if (ret < 0)
		return ret;
	if (bytes > QCOW2_MAX_L1_BYTES ||
	    (sn->l1_size && ((sn->l1_offset & (q->cluster_size - 1)) || sn->l1_offset == 0 ||
	                     sn->l1_offset + bytes > fend))) {
		qcow2_seterr(err, errlen,
		             "%s: snapshot '%s' has a bad L1 table (offset 0x%" PRIx64 ", %" PRIu32
		             " entries) — the snapshot table is corrupt; run `vmstack img check`",
		             q->img->path, sn->name, sn->l1_offset, sn->l1_size);
		return -EIO;
	}
	l1 = qcow2_alloc_buf((size_t)entries * 8);
	if (!l1)
		return -ENOMEM;
	memset(l1, 0, (size_t)entries * 8);
	if (bytes) {
		ret = qcow2_meta_read(q, sn->l1_offset, l1, (size_t)bytes);
		if (ret < 0) {
			free(l1);
			qcow2_seterr(err, errlen, "%s: reading snapshot '%s' L1 table: %s",
			             q->img->path, sn->name, strerror(-ret));
			return ret;
		}
	}
	*out = l1;
	return 0;
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
	ret = qcow2_snap_table_read(q, &t, err, sizeof(err));
	pthread_mutex_unlock(&q->lock);
	if (ret < 0) {
		log_err("%s", err);
		return ret;
	}
	for (uint32_t i = 0; i < t.n && i < max; i++)
		snap_to_info(&t.s[i], &out[i]);
	ret = (int)t.n;
	qcow2_snap_table_free(&t);
	return ret;
}
