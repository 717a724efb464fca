/* qcow2.c: qcow2 images: open (header validation), header writes, metadata I/O, flush, info.
 * Creating and resizing images is in qcow2_create.c. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "log.h"
#include "qcow2_internal.h"
#include "util.h"

/*
 * Everything in the header is untrusted: each field is checked against the file before it
 * is used, so a later table lookup can rely on the tables themselves lying inside the file
 * (entries in them are checked at each use, in qcow2_io.c and qcow2_refcount.c).
 *
 * Header rewrites always produce what QEMU 7.2 writes: v3 headers 112 bytes long (with the
 * compression type byte), then the backing format extension, the feature name table (v3),
 * the extensions we keep verbatim, the end marker and the backing file name.
 */

#define QCOW2_V2_HEADER_LEN    72
#define QCOW2_V3_HEADER_LEN    112
#define QCOW2_DEFAULT_L2_CACHE (1 * MiB)
#define QCOW2_RC_CACHE_TABLES  16

/* Reads up to len bytes; the part past the end of the file reads as zeros. */
static int pread_zero(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0) {
			memset((uint8_t *)buf + done, 0, len - done);
			break;
		}
		done += (size_t)r;
	}
	return 0;
}

int qcow2_corrupt(struct qcow2 *q, const char *table, uint64_t i, uint64_t val)
{
	log_ratelimited(&q->corrupt_rl, LOG_ERR,
	                "%s: %s entry %llu points outside the image (0x%llx) — the image is "
	                "corrupt; run `vmstack img check`",
	                img_path(q->img), table, (unsigned long long)i, (unsigned long long)val);
	return -EIO;
}

int qcow2_sync(struct qcow2 *q)
{
	if (fdatasync(img_fd(q->img)) < 0) {
		int e = errno;

		log_err("%s: fdatasync failed: %s", img_path(q->img), strerror(e));
		return -e;
	}
	q->need_sync = false;
	return 0;
}

static bool meta_range_ok(struct qcow2 *q, uint64_t off, size_t len)
{
	return !((off | len) & 7) && off + len >= off && off + len <= q->file_end + q->cluster_size;
}

int qcow2_meta_read(struct qcow2 *q, uint64_t off, void *buf, size_t len)
{
	if (!meta_range_ok(q, off, len))
		return qcow2_corrupt(q, "metadata read", off, len);
	return pread_zero(img_fd(q->img), buf, len, off);
}

int qcow2_meta_write(struct qcow2 *q, uint64_t off, const void *buf, size_t len)
{
	int ret;

	if (!meta_range_ok(q, off, len) || off < q->cluster_size)
		return qcow2_corrupt(q, "metadata write", off, len);
	ret = pwrite_all(img_fd(q->img), buf, len, off);
	if (ret < 0)
		log_err("%s: cannot write metadata at 0x%llx: %s", img_path(q->img),
		        (unsigned long long)off, strerror(-ret));
	return ret;
}

int qcow2_write_l1(struct qcow2 *q)
{
	if (!q->l1_size)
		return 0;
	return qcow2_meta_write(q, q->l1_offset, q->l1, (size_t)q->l1_size * 8);
}

/* QEMU's feature name table (the same entries, in the same order). */
static const struct {
	uint8_t type, bit;
	const char *name;
} feature_names[] = {
    {0, 0, "dirty bit"},        {0, 1, "corrupt bit"},         {0, 2, "external data file"},
    {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},          {2, 1, "raw external data"},
};

static size_t put_ext(uint8_t *buf, size_t pos, uint32_t type, const void *data, uint32_t len)
{
	put_be32(buf + pos, type);
	put_be32(buf + pos + 4, len);
	memcpy(buf + pos + 8, data, len);
	return pos + 8 + ALIGN_UP(len, 8);
}

static int write_header(struct qcow2 *q, bool features);

int qcow2_write_header(struct qcow2 *q)
{
	/* Like QEMU, the feature name table is left out when it does not fit (small
	 * clusters with a long backing file name). */
	int ret = write_header(q, q->version >= 3);

	if (ret == -ENOSPC && q->version >= 3)
		ret = write_header(q, false);
	if (ret == -ENOSPC)
		log_err("%s: the qcow2 header does not fit in one %llu-byte cluster — use a "
		        "shorter backing file name",
		        img_path(q->img), (unsigned long long)q->cluster_size);
	return ret;
}

static int write_header(struct qcow2 *q, bool features)
{
	size_t cs = q->cluster_size, pos, name_len = q->backing_file ? strlen(q->backing_file) : 0;
	size_t need;
	uint8_t *buf;
	int ret;

	/* Worst case: header, backing format, feature table, kept extensions, end, name. */
	need = QCOW2_V3_HEADER_LEN + 8 + 1024 + 8 +
	       sizeof(feature_names) / sizeof(feature_names[0]) * 48 + q->unknown_ext_len + 8 +
	       name_len;
	need = ALIGN_UP(MAX(need, 512), 512);
	buf = calloc(1, need);
	if (!buf)
		return -ENOMEM;
	put_be32(buf + 0, QCOW2_MAGIC);
	put_be32(buf + 4, q->version);
	put_be32(buf + 20, q->cluster_bits);
	put_be64(buf + 24, q->size);
	put_be32(buf + 36, q->l1_size);
	put_be64(buf + 40, q->l1_offset);
	put_be64(buf + 48, q->reft_offset);
	put_be32(buf + 56, q->reft_clusters);
	put_be32(buf + 60, q->nb_snapshots);
	put_be64(buf + 64, q->snapshots_offset);
	if (q->version >= 3) {
		put_be64(buf + 72, q->incompat);
		put_be64(buf + 80, q->compat);
		put_be64(buf + 88, q->autoclear);
		put_be32(buf + 96, q->refcount_order);
		put_be32(buf + 100, QCOW2_V3_HEADER_LEN);
		buf[104] = q->compression_type;
		pos = QCOW2_V3_HEADER_LEN;
		q->header_length = QCOW2_V3_HEADER_LEN;
	} else {
		pos = QCOW2_V2_HEADER_LEN;
		q->header_length = QCOW2_V2_HEADER_LEN;
	}
	if (q->backing_format)
		pos = put_ext(buf, pos, QCOW2_EXT_BACKING_FORMAT, q->backing_format,
		              (uint32_t)strnlen(q->backing_format, 1023));
	if (features) {
		uint8_t t[sizeof(feature_names) / sizeof(feature_names[0]) * 48] = {0};

		for (size_t i = 0; i < ARRAY_SIZE(feature_names); i++) {
			t[i * 48] = feature_names[i].type;
			t[i * 48 + 1] = feature_names[i].bit;
			memcpy(t + i * 48 + 2, feature_names[i].name,
			       strlen(feature_names[i].name));
		}
		pos = put_ext(buf, pos, QCOW2_EXT_FEATURE_TABLE, t, sizeof(t));
	}
	if (q->unknown_ext_len) {
		memcpy(buf + pos, q->unknown_ext, q->unknown_ext_len);
		pos += q->unknown_ext_len;
	}
	pos += 8; /* end of extensions */
	if (name_len) {
		put_be64(buf + 8, pos);
		put_be32(buf + 16, (uint32_t)name_len);
		memcpy(buf + pos, q->backing_file, name_len);
		pos += name_len;
	}
	if (pos > cs) {
		free(buf);
		return -ENOSPC;
	}
	ret = pwrite_all(img_fd(q->img), buf, MIN(ALIGN_UP(pos, 512), cs), 0);
	free(buf);
	if (ret < 0) {
		log_err("%s: cannot write the qcow2 header: %s", img_path(q->img), strerror(-ret));
		return ret;
	}
	return qcow2_sync(q);
}

/* ---- open ---- */

static const char *feature_name(const uint8_t *table, uint32_t len, unsigned type, unsigned bit,
                                char *buf, size_t buflen)
{
	for (uint32_t i = 0; table && i + 48 <= len; i += 48) {
		if (table[i] == type && table[i + 1] == bit) {
			snprintf(buf, buflen, "%.46s", (const char *)table + i + 2);
			return buf;
		}
	}
	for (size_t i = 0; i < ARRAY_SIZE(feature_names); i++) {
		if (feature_names[i].type == type && feature_names[i].bit == bit) {
			snprintf(buf, buflen, "%s", feature_names[i].name);
			return buf;
		}
	}
	snprintf(buf, buflen, "bit %u", bit);
	return buf;
}

static void free_q(struct qcow2 *q)
{
	if (!q)
		return;
	qcow2_cache_free(q->l2_cache);
	qcow2_cache_free(q->rc_cache);
	free(q->l1);
	free(q->reft);
	free(q->backing_file);
	free(q->backing_format);
	free(q->unknown_ext);
	free(q->frees);
	free(q->cbuf);
	free(q->dbuf);
	if (q->zstd_dctx)
		ZSTD_freeDCtx(q->zstd_dctx);
	pthread_mutex_destroy(&q->lock);
	free(q);
}

#define BAD(...)                                                                                   \
	do {                                                                                       \
		snprintf(err, errlen, __VA_ARGS__);                                                \
		ret = -EINVAL;                                                                     \
		goto fail;                                                                         \
	} while (0)

#define CORRUPT "the image is corrupt or not a qcow2 image"

static int parse_extensions(struct qcow2 *q, const uint8_t *h, uint64_t end, const char *p,
                            char *err, size_t errlen, const uint8_t **ftable, uint32_t *ftlen)
{
	uint64_t pos = q->header_length;
	int ret = 0;

	while (pos + 8 <= end) {
		uint32_t type = get_be32(h + pos), len = get_be32(h + pos + 4);
		uint64_t start = pos;

		pos += 8;
		if (type == QCOW2_EXT_END)
			break;
		if (len > end - pos || ALIGN_UP((uint64_t)len, 8) > end - pos)
			BAD("%s: header extension 0x%08x runs past the header cluster — " CORRUPT,
			    p, type);
		if (type == QCOW2_EXT_BACKING_FORMAT) {
			if (len > 1023 || q->backing_format)
				BAD("%s: bad backing format extension — " CORRUPT, p);
			q->backing_format = strndup((const char *)h + pos, len);
			if (!q->backing_format)
				return -ENOMEM;
		} else if (type == QCOW2_EXT_FEATURE_TABLE) {
			*ftable = h + pos;
			*ftlen = len;
		} else {
			size_t n = (size_t)(pos - start) + ALIGN_UP(len, 8);
			uint8_t *u = realloc(q->unknown_ext, q->unknown_ext_len + n);

			if (!u)
				return -ENOMEM;
			memcpy(u + q->unknown_ext_len, h + start, n);
			q->unknown_ext = u;
			q->unknown_ext_len += n;
		}
		pos += ALIGN_UP(len, 8);
	}
	return 0;
fail:
	return ret;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Two refcount table entries naming one block would let a small hostile file make every
 * free-cluster scan walk a huge table of full blocks: refuse it. */
static int check_reft(struct qcow2 *q, const char *p, char *err, size_t errlen)
{
	uint64_t n = (uint64_t)q->reft_clusters << (q->cluster_bits - 3), k = 0, *v;
	int ret = 0;

	v = malloc(n * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (uint64_t i = 0; i < n; i++)
		if (q->reft[i])
			v[k++] = be64toh(q->reft[i]) & QCOW2_REFT_OFFSET_MASK;
	qsort(v, k, sizeof(*v), cmp_u64);
	for (uint64_t i = 1; i < k; i++) {
		if (v[i] == v[i - 1]) {
			snprintf(err, errlen,
			         "%s: two refcount table entries point to one block (0x%llx) — the "
			         "image is corrupt; run `vmstack img check`",
			         p, (unsigned long long)v[i]);
			ret = -EINVAL;
			break;
		}
	}
	free(v);
	return ret;
}

int qcow2_open(struct img *im, const struct img_open_opts *o, char *err, size_t errlen)
{
	const char *p = im->path;
	struct qcow2 *q;
	struct stat st;
	uint8_t h0[QCOW2_V3_HEADER_LEN] = {0}, *h = NULL;
	const uint8_t *ftable = NULL;
	uint32_t ftlen = 0, crypt, bf_size;
	uint64_t file_size, bf_off, cov, need_l1, l2_cache_bytes, n;
	int ret;

	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	pthread_mutex_init(&q->lock, NULL);
	q->img = im;
	q->corrupt_rl = (struct ratelimit)RATELIMIT_INIT;
	if (fstat(im->fd, &st) < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: cannot stat: %s", p, strerror(errno));
		goto fail;
	}
	file_size = (uint64_t)st.st_size;
	ret = pread_zero(im->fd, h0, sizeof(h0), 0);
	if (ret < 0) {
		snprintf(err, errlen, "%s: cannot read the header: %s", p, strerror(-ret));
		goto fail;
	}
	if (file_size < QCOW2_V2_HEADER_LEN || get_be32(h0) != QCOW2_MAGIC)
		BAD("%s: not a qcow2 image (bad magic or too short) — open it as raw, or check the "
		    "path",
		    p);
	q->version = get_be32(h0 + 4);
	if (q->version != 2 && q->version != 3)
		BAD("%s: qcow2 version %u is not supported (only 2 and 3) — convert it with "
		    "qemu-img convert -O qcow2",
		    p, q->version);
	q->cluster_bits = get_be32(h0 + 20);
	if (q->cluster_bits < QCOW2_MIN_CLUSTER_BITS || q->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		BAD("%s: cluster_bits %u is out of range (%u..%u) — " CORRUPT, p, q->cluster_bits,
		    QCOW2_MIN_CLUSTER_BITS, QCOW2_MAX_CLUSTER_BITS);
	q->cluster_size = 1ull << q->cluster_bits;
	q->file_end = ALIGN_UP(file_size, q->cluster_size);
	q->l2_bits = q->cluster_bits - 3;
	q->l2_entries = 1u << q->l2_bits;
	if (posix_memalign((void **)&h, 4096, q->cluster_size)) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = pread_zero(im->fd, h, q->cluster_size, 0);
	if (ret < 0) {
		snprintf(err, errlen, "%s: cannot read the header: %s", p, strerror(-ret));
		goto fail;
	}
	bf_off = get_be64(h + 8);
	bf_size = get_be32(h + 16);
	q->size = get_be64(h + 24);
	crypt = get_be32(h + 32);
	q->l1_size = get_be32(h + 36);
	q->l1_offset = get_be64(h + 40);
	q->reft_offset = get_be64(h + 48);
	q->reft_clusters = get_be32(h + 56);
	q->nb_snapshots = get_be32(h + 60);
	q->snapshots_offset = get_be64(h + 64);
	if (q->version == 2) {
		q->header_length = QCOW2_V2_HEADER_LEN;
		q->refcount_order = 4;
	} else {
		q->incompat = get_be64(h + 72);
		q->compat = get_be64(h + 80);
		q->autoclear = get_be64(h + 88);
		q->refcount_order = get_be32(h + 96);
		q->header_length = get_be32(h + 100);
		if (q->header_length < 104 || q->header_length > q->cluster_size ||
		    (q->header_length & 7))
			BAD("%s: bad header length %u — " CORRUPT, p, q->header_length);
		if (q->header_length > 104)
			q->compression_type = h[104];
		if (q->refcount_order > 6)
			BAD("%s: refcount_order %u is out of range (0..6) — " CORRUPT, p,
			    q->refcount_order);
	}
	q->max_refcount =
	    q->refcount_order == 6 ? UINT64_MAX : (1ull << (1u << q->refcount_order)) - 1;
	q->rc_entries = (unsigned)((q->cluster_size * 8) >> q->refcount_order);

	if (bf_off && (bf_off < q->header_length || bf_off > q->cluster_size))
		BAD("%s: backing file name offset 0x%llx is outside the header cluster — " CORRUPT,
		    p, (unsigned long long)bf_off);
	ret = parse_extensions(q, h, bf_off ? bf_off : q->cluster_size, p, err, errlen, &ftable,
	                       &ftlen);
	if (ret < 0)
		goto fail;

	if (crypt != 0)
		BAD("%s: the image is encrypted (method %u), which is not supported — decrypt it "
		    "with "
		    "qemu-img convert",
		    p, crypt);
	if (q->incompat &
	    ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_COMPRESSION)) {
		char names[512] = "", one[64];
		size_t len = 0;

		for (unsigned b = 0; b < 64; b++) {
			uint64_t bit = 1ull << b;

			if (!(q->incompat & bit) || bit == QCOW2_INCOMPAT_DIRTY ||
			    bit == QCOW2_INCOMPAT_CORRUPT || bit == QCOW2_INCOMPAT_COMPRESSION)
				continue;
			len += (size_t)snprintf(
			    names + len, sizeof(names) - MIN(len, sizeof(names)), "%s%s",
			    len ? ", " : "", feature_name(ftable, ftlen, 0, b, one, sizeof(one)));
			if (len >= sizeof(names))
				break;
		}
		BAD("%s: uses unsupported qcow2 feature(s): %s — convert it with `qemu-img convert "
		    "-O qcow2`",
		    p, names);
	}
	if (!!(q->incompat & QCOW2_INCOMPAT_COMPRESSION) != (q->compression_type != 0))
		BAD("%s: compression type %u does not match the compression feature bit — " CORRUPT,
		    p, q->compression_type);
	if (q->compression_type > 1)
		BAD("%s: unknown compression type %u — convert it with `qemu-img convert -O qcow2`",
		    p, q->compression_type);
	if (!o->readonly && !(o->repair && o->no_backing) && (q->incompat & QCOW2_INCOMPAT_CORRUPT))
		BAD("%s: marked corrupt — run `vmstack img check -r all`", p);
	if (!o->readonly && !(o->repair && o->no_backing) && (q->incompat & QCOW2_INCOMPAT_DIRTY))
		BAD("%s: needs a refcount repair — run `vmstack img check -r all`", p);

	if (bf_size) {
		if (!bf_off || bf_size > QCOW2_MAX_BACKING_NAME ||
		    bf_off + bf_size > q->cluster_size)
			BAD("%s: the backing file name (%u bytes at 0x%llx) does not fit the "
			    "header "
			    "cluster — " CORRUPT,
			    p, bf_size, (unsigned long long)bf_off);
		q->backing_file = strndup((const char *)h + bf_off, bf_size);
		if (!q->backing_file) {
			ret = -ENOMEM;
			goto fail;
		}
		if (strlen(q->backing_file) != bf_size)
			BAD("%s: the backing file name contains a NUL byte — " CORRUPT, p);
	}

	/* L1: must cover the virtual size and lie in the file. */
	cov = q->cluster_size << q->l2_bits;
	need_l1 = q->size / cov + (q->size % cov != 0);
	if ((uint64_t)q->l1_size * 8 > QCOW2_MAX_L1_BYTES || need_l1 * 8 > QCOW2_MAX_L1_BYTES)
		BAD("%s: the L1 table would be larger than %u MiB (virtual size %llu) — " CORRUPT,
		    p, QCOW2_MAX_L1_BYTES >> 20, (unsigned long long)q->size);
	if (q->l1_size < need_l1)
		BAD("%s: the L1 table (%u entries) is too small for the virtual size — " CORRUPT, p,
		    q->l1_size);
	if (q->l1_size &&
	    (!q->l1_offset || (q->l1_offset & (q->cluster_size - 1)) || q->l1_offset > file_size ||
	     (uint64_t)q->l1_size * 8 > file_size - q->l1_offset))
		BAD("%s: the L1 table offset 0x%llx is unaligned or outside the file — " CORRUPT, p,
		    (unsigned long long)q->l1_offset);
	/* Refcount table. */
	if (!q->reft_clusters ||
	    (uint64_t)q->reft_clusters * q->cluster_size > QCOW2_MAX_REFT_BYTES)
		BAD("%s: bad refcount table size (%u clusters) — " CORRUPT, p, q->reft_clusters);
	if (!q->reft_offset || (q->reft_offset & (q->cluster_size - 1)) ||
	    q->reft_offset > q->file_end ||
	    (uint64_t)q->reft_clusters * q->cluster_size > q->file_end - q->reft_offset)
		BAD("%s: the refcount table offset 0x%llx is unaligned or outside the file "
		    "— " CORRUPT,
		    p, (unsigned long long)q->reft_offset);
	/* Snapshot table: only bounds here (qcow2_snaptable.c reads it). */
	if (q->nb_snapshots > QCOW2_MAX_SNAPSHOTS)
		BAD("%s: too many snapshots (%u) — " CORRUPT, p, q->nb_snapshots);
	if (q->nb_snapshots &&
	    (!q->snapshots_offset || (q->snapshots_offset & (q->cluster_size - 1)) ||
	     q->snapshots_offset > file_size ||
	     (uint64_t)q->nb_snapshots * 40 > file_size - q->snapshots_offset))
		BAD("%s: the snapshot table offset 0x%llx is unaligned or outside the file "
		    "— " CORRUPT,
		    p, (unsigned long long)q->snapshots_offset);

	n = ALIGN_UP((uint64_t)q->l1_size * 8, q->cluster_size);
	if (posix_memalign((void **)&q->l1, 4096, MAX(n, 8))) {
		ret = -ENOMEM;
		goto fail;
	}
	memset(q->l1, 0, MAX(n, 8));
	if (q->l1_size &&
	    (ret = pread_zero(im->fd, q->l1, (size_t)q->l1_size * 8, q->l1_offset)) < 0) {
		snprintf(err, errlen, "%s: cannot read the L1 table: %s", p, strerror(-ret));
		goto fail;
	}
	n = (uint64_t)q->reft_clusters * q->cluster_size;
	if (posix_memalign((void **)&q->reft, 4096, n)) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = pread_zero(im->fd, q->reft, n, q->reft_offset);
	if (ret < 0) {
		snprintf(err, errlen, "%s: cannot read the refcount table: %s", p, strerror(-ret));
		goto fail;
	}

	ret = check_reft(q, p, err, errlen);
	if (ret < 0)
		goto fail;

	l2_cache_bytes = o->l2_cache_bytes ? o->l2_cache_bytes : QCOW2_DEFAULT_L2_CACHE;
	n = l2_cache_bytes / q->cluster_size;
	n = MIN(n, MAX((uint64_t)q->l1_size, 4)); /* more tables than the image has is waste */
	n = MIN(MAX(n, 4), 65536);
	q->l2_cache = qcow2_cache_new((unsigned)n, q->cluster_size);
	q->rc_cache = qcow2_cache_new(QCOW2_RC_CACHE_TABLES, q->cluster_size);
	if (!q->l2_cache || !q->rc_cache) {
		ret = -ENOMEM;
		snprintf(err, errlen, "%s: out of memory for the metadata caches", p);
		goto fail;
	}
	im->q = q;
	im->size = q->size;

	/* Spec: autoclear bits we do not know (we know none) are cleared when writing. */
	if (!o->readonly && q->autoclear) {
		q->autoclear = 0;
		ret = qcow2_write_header(q);
		if (ret < 0) {
			snprintf(err, errlen, "%s: cannot update the header: %s", p,
			         strerror(-ret));
			im->q = NULL;
			goto fail;
		}
	}
	free(h);
	return 0;
fail:
	free(h);
	free_q(q);
	return ret < 0 ? ret : -EINVAL;
}

void qcow2_close(struct img *im)
{
	free_q(im->q);
	im->q = NULL;
}

int qcow2_flush(struct img *im)
{
	struct qcow2 *q = im->q;
	int ret;

	pthread_mutex_lock(&q->lock);
	ret = qcow2_flush_caches(q);
	pthread_mutex_unlock(&q->lock);
	return ret;
}

int qcow2_get_info(struct img *im, struct img_info *info)
{
	struct qcow2 *q = im->q;

	pthread_mutex_lock(&q->lock);
	info->version = q->version;
	info->cluster_size = (unsigned)q->cluster_size;
	info->refcount_bits = 1u << q->refcount_order;
	info->lazy_refcounts = q->compat & QCOW2_COMPAT_LAZY_REFCOUNTS;
	info->corrupt = q->incompat & QCOW2_INCOMPAT_CORRUPT;
	info->dirty = q->incompat & QCOW2_INCOMPAT_DIRTY;
	info->compression = q->compression_type == 1 ? "zstd" : "zlib";
	info->backing_file = q->backing_file;
	info->backing_format = q->backing_format;
	info->nb_snapshots = q->nb_snapshots;
	pthread_mutex_unlock(&q->lock);
	return 0;
}
