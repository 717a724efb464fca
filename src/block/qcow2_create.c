/* qcow2_create.c: creating qcow2 images, and growing them (resize, L1 table growth). */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "qcow2_internal.h"
#include "util.h"

/* ---- resize ---- */

int qcow2_grow_l1(struct qcow2 *q, uint64_t l1_size)
{
	uint64_t bytes = ALIGN_UP(l1_size * 8, q->cluster_size), old_off = q->l1_offset;
	uint64_t old_bytes = ALIGN_UP((uint64_t)q->l1_size * 8, q->cluster_size);
	uint64_t *l1;
	int64_t off;
	int ret;

	if (l1_size <= q->l1_size)
		return 0;
	if (l1_size * 8 > QCOW2_MAX_L1_BYTES)
		return -EFBIG;
	if (posix_memalign((void **)&l1, 4096, bytes))
		return -ENOMEM;
	memset(l1, 0, bytes);
	memcpy(l1, q->l1, (size_t)q->l1_size * 8);
	off = qcow2_alloc_clusters(q, bytes);
	if (off < 0) {
		free(l1);
		return (int)off;
	}
	/* Like QEMU, only the entries: the rest of the cluster reads as zeros anyway. */
	ret = qcow2_meta_write(q, (uint64_t)off, l1, l1_size * 8);
	if (ret == 0)
		ret = qcow2_sync(q);
	if (ret < 0) {
		free(l1);
		return ret;
	}
	free(q->l1);
	q->l1 = l1;
	q->l1_offset = (uint64_t)off;
	q->l1_size = (uint32_t)l1_size;
	ret = qcow2_write_header(q);
	if (ret < 0)
		return ret;
	if (old_bytes)
		return qcow2_refcount_update(q, old_off, old_bytes, -1);
	return 0;
}

int qcow2_resize(struct img *im, uint64_t new_size, char *err, size_t errlen)
{
	struct qcow2 *q = im->q;
	uint64_t cov = q->cluster_size << q->l2_bits, need;
	int ret = 0;

	pthread_mutex_lock(&q->lock);
	if (new_size < q->size) {
		snprintf(err, errlen,
		         "%s: shrinking a qcow2 image is not supported — create a smaller image "
		         "and convert into it",
		         im->path);
		ret = -ENOTSUP;
		goto out;
	}
	if (new_size == q->size)
		goto out;
	need = new_size / cov + (new_size % cov != 0);
	if (need * 8 > QCOW2_MAX_L1_BYTES) {
		snprintf(err, errlen,
		         "%s: %llu bytes is too large for %llu-byte clusters — use bigger clusters",
		         im->path, (unsigned long long)new_size,
		         (unsigned long long)q->cluster_size);
		ret = -EFBIG;
		goto out;
	}
	ret = qcow2_flush_caches(q);
	if (ret == 0)
		ret = qcow2_grow_l1(q, need);
	if (ret == 0) {
		uint64_t old = q->size;

		q->size = new_size;
		ret = qcow2_write_header(q);
		if (ret < 0)
			q->size = old;
	}
	if (ret < 0)
		snprintf(err, errlen, "%s: cannot resize: %s", im->path, strerror(-ret));
	else
		im->size = new_size;
out:
	pthread_mutex_unlock(&q->lock);
	return ret;
}

/* ---- create ---- */

/* Writes an empty image (size 0, no L1), like QEMU before it truncates to the size:
 * header in cluster 0, refcount table in cluster 1, refcount block in cluster 2. */
static int write_empty(int fd, const char *path, const struct img_create_opts *o,
                       unsigned cluster_bits, unsigned version, const char *backing_fmt)
{
	struct img tmp = {.fd = fd, .path = (char *)path};
	struct qcow2 q = {
	    .img = &tmp,
	    .version = version,
	    .cluster_bits = cluster_bits,
	    .cluster_size = 1ull << cluster_bits,
	    .refcount_order = 4,
	    .reft_offset = 1ull << cluster_bits,
	    .reft_clusters = 1,
	    .compat = o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0,
	    .backing_file = (char *)o->backing_file,
	    .backing_format = (char *)backing_fmt,
	};
	uint64_t cs = q.cluster_size;
	uint8_t *c;
	int ret;

	tmp.q = &q;
	q.file_end = 3 * cs;
	c = calloc(1, cs);
	if (!c)
		return -ENOMEM;
	ret = qcow2_write_header(&q);
	if (ret == 0) {
		put_be64(c, 2 * cs);
		ret = pwrite_all(fd, c, cs, cs);
	}
	if (ret == 0) {
		memset(c, 0, cs);
		for (int i = 0; i < 3; i++)
			qcow2_rc_entry_set(c, 4, (uint64_t)i, 1);
		ret = pwrite_all(fd, c, cs, 2 * cs);
	}
	free(c);
	return ret;
}

int qcow2_create(const struct img_create_opts *o, char *err, size_t errlen)
{
	const char *p = o->path;
	unsigned cs = o->cluster_size ? o->cluster_size : 65536, bits, version;
	uint64_t size = o->size;
	const char *bfmt = NULL;
	struct img *im;
	int fd, ret;

	if (cs < 512 || cs > 2 * MiB || (cs & (cs - 1))) {
		snprintf(err, errlen,
		         "%s: cluster size %u is not a power of two between 512 and 2M — use e.g. "
		         "65536",
		         p, cs);
		return -EINVAL;
	}
	bits = (unsigned)__builtin_ctz(cs);
	if (o->compat != 0 && o->compat != 2 && o->compat != 3) {
		snprintf(err, errlen, "%s: compat %u is not supported — use 2 (0.10) or 3 (1.1)", p,
		         o->compat);
		return -EINVAL;
	}
	version = o->compat == 2 ? 2 : 3;
	if (version == 2 && o->lazy_refcounts) {
		snprintf(err, errlen, "%s: lazy refcounts need compat 1.1 (v3) — drop compat=0.10",
		         p);
		return -EINVAL;
	}
	if (o->backing_file) {
		if (!*o->backing_file || strlen(o->backing_file) > QCOW2_MAX_BACKING_NAME) {
			snprintf(
			    err, errlen,
			    "%s: the backing file name must be 1..%u bytes — use a shorter path", p,
			    QCOW2_MAX_BACKING_NAME);
			return -EINVAL;
		}
		if (o->prealloc != IMG_PREALLOC_OFF) {
			snprintf(
			    err, errlen,
			    "%s: preallocation and a backing file cannot be combined — drop one",
			    p);
			return -EINVAL;
		}
		if (o->backing_format != IMG_FMT_AUTO)
			bfmt = img_format_name(o->backing_format);
		if (!size || !bfmt) {
			char bpath[4096 + 1024], berr[512], *dup = strdup(p);
			struct img *b;

			if (!dup)
				return -ENOMEM;
			if (o->backing_file[0] == '/')
				snprintf(bpath, sizeof(bpath), "%s", o->backing_file);
			else
				snprintf(bpath, sizeof(bpath), "%s/%s", dirname(dup),
				         o->backing_file);
			free(dup);
			b = img_open(&(struct img_open_opts){.path = bpath,
			                                     .format = o->backing_format,
			                                     .readonly = true,
			                                     .no_backing = true},
			             berr, sizeof(berr));
			if (!b) {
				snprintf(err, errlen, "%s: cannot open the backing file: %s", p,
				         berr);
				return -ENOENT;
			}
			if (!size)
				size = img_size(b);
			bfmt = img_format_name(img_format(b));
			img_close(b);
		}
	}
	size = ALIGN_UP(size, 512);
	fd = img_create_file(p, o->overwrite, err, errlen);
	if (fd < 0)
		return fd;
	ret = write_empty(fd, p, o, bits, version, bfmt);
	close(fd);
	if (ret < 0) {
		snprintf(err, errlen, "%s: cannot write the new image: %s", p, strerror(-ret));
		goto fail;
	}
	im = img_open(
	    &(struct img_open_opts){.path = p, .format = IMG_FMT_QCOW2, .no_backing = true}, err,
	    errlen);
	if (!im) {
		ret = -EIO;
		goto fail;
	}
	ret = img_resize(im, size, err, errlen);
	if (ret == 0 && o->prealloc != IMG_PREALLOC_OFF) {
		pthread_mutex_lock(&im->q->lock);
		ret = qcow2_preallocate(im->q, o->prealloc == IMG_PREALLOC_FULL);
		pthread_mutex_unlock(&im->q->lock);
		if (ret < 0)
			snprintf(err, errlen, "%s: cannot preallocate: %s", p, strerror(-ret));
	}
	if (img_close(im) < 0 && ret == 0) {
		snprintf(err, errlen, "%s: cannot write the new image's metadata", p);
		ret = -EIO;
	}
	if (ret == 0)
		return 0;
fail:
	if (!o->overwrite)
		unlink(p);
	return ret;
}
