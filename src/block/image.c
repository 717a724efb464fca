/* image.c: the synchronous image API: raw files, dispatch to qcow2, probing, backing chains. */
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "qcow2_internal.h"
#include "util.h"

/*
 * Choices worth knowing:
 *  - Probing (IMG_FMT_AUTO): the qcow2 magic in the first 4 bytes means qcow2, anything
 *    else raw. Backing files are opened with the format the qcow2 header names, if any.
 *  - Backing files are opened read-only, relative to the directory of the image that
 *    names them; the chain is refused if it is deeper than IMG_MAX_CHAIN or names a file
 *    (st_dev/st_ino) already in it — checked before locking, so a loop is reported as a
 *    loop, not as a lock conflict with ourselves.
 *  - Lock: like blk_open, one OFD lock over the whole file, shared when read-only.
 *  - direct (O_DIRECT) applies to raw files only: qcow2 metadata I/O is not
 *    sector-aligned, so a qcow2 file is always opened through the page cache.
 */

struct img_id {
	dev_t dev;
	ino_t ino;
};

const char *img_format_name(enum img_format f)
{
	switch (f) {
	case IMG_FMT_RAW:
		return "raw";
	case IMG_FMT_QCOW2:
		return "qcow2";
	default:
		return "auto";
	}
}

int img_format_parse(const char *name)
{
	if (!name)
		return -1;
	if (!strcmp(name, "raw"))
		return IMG_FMT_RAW;
	if (!strcmp(name, "qcow2"))
		return IMG_FMT_QCOW2;
	if (!strcmp(name, "auto"))
		return IMG_FMT_AUTO;
	return -1;
}

static int open_error(const char *p, int e, bool readonly, char *err, size_t errlen)
{
	if (e == ENOENT)
		snprintf(err, errlen,
		         "%s: no such file — check the path, or create it with "
		         "`vmstack img create`",
		         p);
	else if ((e == EACCES || e == EPERM) && readonly)
		snprintf(err, errlen,
		         "%s: permission denied — make it readable by this user (chmod/chown)", p);
	else if (e == EACCES || e == EPERM)
		snprintf(err, errlen,
		         "%s: permission denied — make it writable by this user (chmod/chown), or "
		         "open it read-only",
		         p);
	else if (e == EROFS)
		snprintf(err, errlen, "%s: on a read-only filesystem — open it read-only", p);
	else if (e == EISDIR)
		snprintf(err, errlen, "%s: is a directory — give the path of an image file", p);
	else if (e == EINVAL)
		snprintf(err, errlen, "%s: the filesystem does not support O_DIRECT — drop direct",
		         p);
	else
		snprintf(err, errlen, "%s: cannot open: %s", p, strerror(e));
	return -e;
}

int img_lock_fd(int fd, bool readonly, const char *path, char *err, size_t errlen)
{
	struct flock fl = {
	    .l_type = readonly ? F_RDLCK : F_WRLCK,
	    .l_whence = SEEK_SET,
	    .l_start = 0,
	    .l_len = 0, /* to the end of the file, however long it grows */
	};

	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno == EAGAIN || errno == EACCES) {
		if (readonly)
			snprintf(err, errlen,
			         "%s: locked by another process that writes to it (is a VM using "
			         "it?) — stop it first",
			         path);
		else
			snprintf(
			    err, errlen,
			    "%s: locked by another process (is another VM using it?) — stop it, "
			    "or add ,readonly",
			    path);
		return -EBUSY;
	}
	/* No OFD locks here (a kernel before 3.15, some network filesystems): go on unguarded. */
	log_warn("%s: cannot lock the image (%s); nothing stops another process writing to it",
	         path, strerror(errno));
	return 0;
}

static int img_lock(struct img *im, char *err, size_t errlen)
{
	return img_lock_fd(im->fd, im->readonly, im->path, err, errlen);
}

int img_create_file(const char *path, bool overwrite, char *err, size_t errlen)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | (overwrite ? O_TRUNC : O_EXCL), 0644);

	if (fd >= 0)
		return fd;
	if (errno == EEXIST)
		snprintf(err, errlen,
		         "%s: already exists — choose another name, or overwrite it explicitly",
		         path);
	else
		snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
	return -errno;
}

static void free_img(struct img *im)
{
	if (!im)
		return;
	if (im->q)
		qcow2_close(im);
	if (im->fd >= 0)
		close(im->fd);
	free(im->path);
	free(im->dir);
	free(im);
}

static struct img *open_chain(const struct img_open_opts *o, struct img_id *anc, int depth,
                              char *err, size_t errlen)
{
	const char *p = o->path;
	struct img *im;
	struct stat st;
	uint8_t magic[4] = {0};
	char *tmp;
	int ret;

	if (depth > IMG_MAX_CHAIN) {
		snprintf(
		    err, errlen,
		    "%s: the backing chain is deeper than %d images — flatten it with `vmstack "
		    "img convert`",
		    p, IMG_MAX_CHAIN);
		return NULL;
	}
	im = calloc(1, sizeof(*im));
	if (!im) {
		snprintf(err, errlen, "%s: out of memory", p);
		return NULL;
	}
	im->fd = -1;
	im->readonly = o->readonly;
	im->path = strdup(p);
	tmp = strdup(p);
	if (!im->path || !tmp) {
		free(tmp);
		snprintf(err, errlen, "%s: out of memory", p);
		goto fail;
	}
	im->dir = strdup(dirname(tmp));
	free(tmp);
	if (!im->dir)
		goto fail;
	im->fd = open(p, (o->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (im->fd < 0) {
		open_error(p, errno, o->readonly, err, errlen);
		goto fail;
	}
	if (fstat(im->fd, &st) < 0) {
		open_error(p, errno, o->readonly, err, errlen);
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		open_error(p, EISDIR, o->readonly, err, errlen);
		goto fail;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file or a block device", p);
		goto fail;
	}
	im->dev = st.st_dev;
	im->ino = st.st_ino;
	for (int i = 0; i < depth; i++) {
		if (anc[i].dev == st.st_dev && anc[i].ino == st.st_ino) {
			snprintf(err, errlen,
			         "%s: the backing chain loops back to this file — point a backing "
			         "file elsewhere with `vmstack img rebase -u`",
			         p);
			goto fail;
		}
	}
	if (o->lock && img_lock(im, err, errlen) < 0)
		goto fail;
	if (pread(im->fd, magic, sizeof(magic), 0) < 0) {
		snprintf(err, errlen, "%s: cannot read: %s", p, strerror(errno));
		goto fail;
	}
	im->format = o->format;
	if (im->format == IMG_FMT_AUTO)
		im->format =
		    (magic[0] == 'Q' && magic[1] == 'F' && magic[2] == 'I' && magic[3] == 0xfb)
		        ? IMG_FMT_QCOW2
		        : IMG_FMT_RAW;
	if (im->format == IMG_FMT_RAW) {
		if (o->direct) {
			int fd = open(p, (o->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_DIRECT);

			if (fd < 0) {
				open_error(p, errno, o->readonly, err, errlen);
				goto fail;
			}
			if (o->lock) {
				int old = im->fd;

				im->fd = fd;
				ret = img_lock(im, err, errlen);
				close(old);
				if (ret < 0)
					goto fail;
			} else {
				close(im->fd);
				im->fd = fd;
			}
		}
		if (S_ISBLK(st.st_mode)) {
			uint64_t bytes;

			if (ioctl(im->fd, BLKGETSIZE64, &bytes) < 0) {
				snprintf(err, errlen, "%s: cannot read the device's size: %s", p,
				         strerror(errno));
				goto fail;
			}
			im->size = bytes;
		} else {
			im->size = (uint64_t)st.st_size;
		}
		return im;
	}
	if (im->format != IMG_FMT_QCOW2) {
		snprintf(err, errlen, "%s: unknown image format — use raw or qcow2", p);
		goto fail;
	}
	if (qcow2_open(im, o, err, errlen) < 0)
		goto fail;
	if (im->q->backing_file && !o->no_backing) {
		const char *name = im->q->backing_file;
		size_t blen = strlen(im->dir) + strlen(name) + 2;
		char *bpath = malloc(blen), berr[1024];
		struct img_open_opts bo = *o;
		int fmt = IMG_FMT_AUTO;

		if (!bpath) {
			snprintf(err, errlen, "%s: out of memory", p);
			goto fail;
		}
		if (name[0] == '/')
			snprintf(bpath, blen, "%s", name);
		else
			snprintf(bpath, blen, "%s/%s", im->dir, name);
		if (im->q->backing_format) {
			fmt = img_format_parse(im->q->backing_format);
			if (fmt < 0) {
				snprintf(
				    err, errlen,
				    "%s: unknown backing file format '%s' — set it with `vmstack "
				    "img rebase -u -F raw|qcow2`",
				    p, im->q->backing_format);
				free(bpath);
				goto fail;
			}
		}
		bo.path = bpath;
		bo.format = (enum img_format)fmt;
		bo.readonly = true;
		anc[depth] = (struct img_id){st.st_dev, st.st_ino};
		im->backing = open_chain(&bo, anc, depth + 1, berr, sizeof(berr));
		free(bpath);
		if (!im->backing) {
			snprintf(err, errlen, "%s: backing file: %s", p, berr);
			goto fail;
		}
	}
	return im;
fail:
	free_img(im);
	return NULL;
}

struct img *img_open(const struct img_open_opts *o, char *err, size_t errlen)
{
	struct img_id anc[IMG_MAX_CHAIN + 1];

	if (!o || !o->path || !*o->path) {
		snprintf(err, errlen, "no image path given — give the path of an image file");
		return NULL;
	}
	return open_chain(o, anc, 0, err, errlen);
}

int img_close(struct img *im)
{
	int ret = 0;

	if (!im)
		return 0;
	if (!im->readonly) {
		if (im->q)
			ret = qcow2_flush(im);
		else if (fdatasync(im->fd) < 0 && errno != EINVAL)
			ret = -errno;
	}
	img_close(im->backing);
	free_img(im);
	return ret;
}

enum img_format img_format(const struct img *im)
{
	return im->format;
}

const char *img_path(const struct img *im)
{
	return im->path;
}

uint64_t img_size(const struct img *im)
{
	return im->size;
}

struct img *img_backing(const struct img *im)
{
	return im->backing;
}

const char *img_backing_name(const struct img *im)
{
	return im->q ? im->q->backing_file : NULL;
}

int img_fd(const struct img *im)
{
	return im->fd;
}

bool img_readonly(const struct img *im)
{
	return im->readonly;
}

/* ---- data ---- */

static int check_range(const struct img *im, uint64_t off, uint64_t len, bool write)
{
	if (write && im->readonly)
		return -EROFS;
	if (off > im->size || len > im->size - off)
		return -EINVAL;
	return 0;
}

static uint64_t iov_total(const struct iovec *iov, int iovcnt)
{
	uint64_t t = 0;

	for (int i = 0; i < iovcnt; i++)
		t += iov[i].iov_len;
	return t;
}

/* Raw I/O of the whole iov; reads past the end of the file give zeros. */
static int raw_io(struct img *im, const struct iovec *iov, int iovcnt, uint64_t off, bool write)
{
	for (int i = 0; i < iovcnt; i++) {
		uint8_t *b = iov[i].iov_base;
		size_t len = iov[i].iov_len;

		while (len) {
			ssize_t r = write ? pwrite(im->fd, b, len, (off_t)off)
			                  : pread(im->fd, b, len, (off_t)off);

			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				return -errno;
			if (r == 0) {
				if (write)
					return -EIO;
				memset(b, 0, len);
				r = (ssize_t)len;
			}
			b += r;
			len -= (size_t)r;
			off += (uint64_t)r;
		}
	}
	return 0;
}

int img_preadv(struct img *im, const struct iovec *iov, int iovcnt, uint64_t off)
{
	int ret = check_range(im, off, iov_total(iov, iovcnt), false);

	if (ret < 0)
		return ret;
	if (im->q)
		return qcow2_preadv(im, iov, iovcnt, off);
	return raw_io(im, iov, iovcnt, off, false);
}

int img_pwritev(struct img *im, const struct iovec *iov, int iovcnt, uint64_t off)
{
	int ret = check_range(im, off, iov_total(iov, iovcnt), true);

	if (ret < 0)
		return ret;
	if (im->q)
		return qcow2_pwritev(im, iov, iovcnt, off);
	return raw_io(im, iov, iovcnt, off, true);
}

int img_pread(struct img *im, void *buf, size_t len, uint64_t off)
{
	struct iovec v = {buf, len};

	return img_preadv(im, &v, 1, off);
}

int img_pwrite(struct img *im, const void *buf, size_t len, uint64_t off)
{
	struct iovec v = {(void *)buf, len};

	return img_pwritev(im, &v, 1, off);
}

int img_write_zeroes(struct img *im, uint64_t off, uint64_t len, bool may_unmap)
{
	static const uint8_t zeros[64 * 1024];
	int ret = check_range(im, off, len, true);

	if (ret < 0 || !len)
		return ret;
	if (im->q)
		return qcow2_write_zeroes(im, off, len, may_unmap);
	if (may_unmap && fallocate(im->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
	                           (off_t)len) == 0)
		return 0;
	if (fallocate(im->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) ==
	    0)
		return 0;
	while (len) {
		size_t n = MIN(len, sizeof(zeros));

		ret = img_pwrite(im, zeros, n, off);
		if (ret < 0)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

int img_discard(struct img *im, uint64_t off, uint64_t len)
{
	int ret = check_range(im, off, len, true);

	if (ret < 0 || !len)
		return ret;
	if (im->q)
		return qcow2_discard(im, off, len);
	/* Advisory: a filesystem that cannot punch holes keeps the data. */
	fallocate(im->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
	return 0;
}

int img_flush(struct img *im)
{
	if (im->readonly)
		return 0;
	if (im->q)
		return qcow2_flush(im);
	return fdatasync(im->fd) < 0 ? -errno : 0;
}

int img_resize(struct img *im, uint64_t new_size, char *err, size_t errlen)
{
	struct stat st;

	if (im->readonly) {
		snprintf(err, errlen, "%s: opened read-only — open it read-write to resize",
		         im->path);
		return -EROFS;
	}
	if (im->q)
		return qcow2_resize(im, new_size, err, errlen);
	if (fstat(im->fd, &st) == 0 && S_ISBLK(st.st_mode)) {
		snprintf(err, errlen, "%s: is a block device — resize the device instead",
		         im->path);
		return -ENOTSUP;
	}
	if (new_size > INT64_MAX || ftruncate(im->fd, (off_t)new_size) < 0) {
		int e = new_size > INT64_MAX ? EFBIG : errno;

		snprintf(err, errlen, "%s: cannot resize: %s", im->path, strerror(e));
		return -e;
	}
	im->size = new_size;
	return 0;
}

int img_block_status(struct img *im, uint64_t off, uint64_t len, struct img_extent *ext)
{
	int ret = check_range(im, off, len, false);
	off_t data, hole;

	if (ret < 0)
		return ret;
	if (!len)
		return -EINVAL;
	if (im->q)
		return qcow2_block_status(im, off, len, ext);
	*ext = (struct img_extent){.kind = IMG_EXT_DATA, .len = len, .host_off = off};
	data = lseek(im->fd, (off_t)off, SEEK_DATA);
	if (data < 0) {
		if (errno == ENXIO) /* only a hole up to the end */
			*ext = (struct img_extent){.kind = IMG_EXT_ZERO, .len = len};
		return 0; /* EINVAL etc.: no hole support, all data */
	}
	if ((uint64_t)data > off) {
		*ext = (struct img_extent){.kind = IMG_EXT_ZERO,
		                           .len = MIN(len, (uint64_t)data - off)};
		return 0;
	}
	hole = lseek(im->fd, (off_t)off, SEEK_HOLE);
	if (hole > (off_t)off)
		ext->len = MIN(len, (uint64_t)hole - off);
	return 0;
}

/* ---- create, info ---- */

static int raw_create(const struct img_create_opts *o, char *err, size_t errlen)
{
	const char *p = o->path;
	int fd, ret = 0;

	if (o->backing_file) {
		snprintf(err, errlen, "%s: a raw image cannot have a backing file — use qcow2", p);
		return -EINVAL;
	}
	if (o->prealloc == IMG_PREALLOC_METADATA) {
		snprintf(err, errlen,
		         "%s: preallocation=metadata is for qcow2 — use full, or off, for raw", p);
		return -EINVAL;
	}
	if (o->size > INT64_MAX) {
		snprintf(err, errlen, "%s: size too large", p);
		return -EFBIG;
	}
	fd = img_create_file(p, o->overwrite, err, errlen);
	if (fd < 0)
		return fd;
	if (ftruncate(fd, (off_t)o->size) < 0)
		ret = -errno;
	if (ret == 0 && o->prealloc == IMG_PREALLOC_FULL && o->size &&
	    fallocate(fd, 0, 0, (off_t)o->size) < 0) {
		static const uint8_t zeros[64 * 1024];

		for (uint64_t off = 0; off < o->size && ret == 0;) {
			ssize_t r =
			    pwrite(fd, zeros, MIN(sizeof(zeros), o->size - off), (off_t)off);

			if (r < 0 && errno != EINTR)
				ret = -errno;
			else if (r > 0)
				off += (uint64_t)r;
		}
	}
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	if (ret < 0) {
		snprintf(err, errlen, "%s: cannot create: %s", p, strerror(-ret));
		if (!o->overwrite)
			unlink(p);
	}
	return ret;
}

int img_create(const struct img_create_opts *o, char *err, size_t errlen)
{
	if (!o || !o->path || !*o->path) {
		snprintf(err, errlen, "no image path given — give the path of the new image");
		return -EINVAL;
	}
	if (o->format == IMG_FMT_RAW)
		return raw_create(o, err, errlen);
	if (o->format == IMG_FMT_QCOW2)
		return qcow2_create(o, err, errlen);
	snprintf(err, errlen, "%s: give the format of the new image — raw or qcow2", o->path);
	return -EINVAL;
}

int img_get_info(struct img *im, struct img_info *info)
{
	struct stat st;

	memset(info, 0, sizeof(*info));
	info->format = im->format;
	info->virtual_size = im->size;
	if (fstat(im->fd, &st) < 0)
		return -errno;
	info->actual_size = (uint64_t)st.st_blocks * 512;
	info->file_size = (uint64_t)st.st_size;
	if (im->q)
		return qcow2_get_info(im, info);
	return 0;
}
