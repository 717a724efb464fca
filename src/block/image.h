/* image.h: disk image files (raw, qcow2) through one synchronous interface — `vmstack img`
 * and the monitor's qcow2 path both use it. */
#ifndef VMSTACK_IMAGE_H
#define VMSTACK_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/*
 * A `struct img` is one open image file plus, for qcow2, its backing chain (each backing
 * file is its own struct img, opened read-only). Every call is synchronous and
 * thread-safe: a qcow2 image serialises metadata work under one mutex; data I/O to
 * already-allocated clusters may run concurrently (see qcow2_map_io()).
 *
 * Everything read from a file is untrusted. A malformed image is refused at open, or the
 * request that meets the bad metadata fails with -EIO after one log line naming the file
 * and what is wrong; nothing is ever read or written outside the image's own file.
 *
 *	struct img *im = img_open(&(struct img_open_opts){.path = p}, err, sizeof err);
 *	img_preadv(im, iov, n, off); img_pwritev(...); img_flush(im);
 *	img_close(im);          // writes back cached metadata, then closes the chain
 *
 * Errors: functions return 0 (or a byte count where said) or -errno. Open/create failures
 * put one line in err: "<path>: <what is wrong> — <the likely fix>".
 */

enum img_format {
	IMG_FMT_AUTO, /* probe: the qcow2 magic means qcow2, anything else raw */
	IMG_FMT_RAW,
	IMG_FMT_QCOW2,
};

/* "raw", "qcow2" (AUTO: "auto"); and back: -1 for an unknown name. */
const char *img_format_name(enum img_format f);
int img_format_parse(const char *name);

struct img_open_opts {
	const char *path;
	enum img_format format;  /* AUTO probes */
	bool readonly;           /* O_RDONLY; writes fail with -EROFS */
	bool no_backing;         /* do not open the backing chain (info, rebase -u, check) */
	bool lock;               /* take the OFD lock like blk_open (shared if readonly) */
	bool direct;             /* O_DIRECT on every file of the chain */
	uint64_t l2_cache_bytes; /* qcow2 L2 cache size; 0 = default (1 MiB, at least 4 tables) */
	/* qcow2: allow a read-write open of an image marked dirty or corrupt, for `check -r`
	 * (qcow2_check) and nothing else; needs no_backing. */
	bool repair;
	/* A backing file named by a qcow2 header is opened relative to the directory of the
	 * image naming it (as QEMU does) unless absolute. Chains deeper than IMG_MAX_CHAIN or
	 * naming a file already in the chain (same st_dev/st_ino) are refused. */
};

#define IMG_MAX_CHAIN 64

struct img;

struct img *img_open(const struct img_open_opts *o, char *err, size_t errlen);
/* Flushes (qcow2: dirty metadata, then fdatasync), closes the chain. Returns 0 or the
 * first error met while flushing; im is freed either way. */
int img_close(struct img *im);

enum img_format img_format(const struct img *im);
const char *img_path(const struct img *im);
uint64_t img_size(const struct img *im);            /* virtual size in bytes */
struct img *img_backing(const struct img *im);      /* NULL if none or not opened */
const char *img_backing_name(const struct img *im); /* as written in the header, or NULL */
int img_fd(const struct img *im);                   /* the image file's own fd */
bool img_readonly(const struct img *im);

/*
 * Data. Full transfers or an error: reads past a backing file's end return zeros; reads
 * of unallocated clusters without a backing file return zeros. Offsets and lengths are
 * bytes, any alignment (qcow2 does read-modify-write below a cluster); the range must lie
 * within img_size() (else -EINVAL).
 */
int img_preadv(struct img *im, const struct iovec *iov, int iovcnt, uint64_t off);
int img_pwritev(struct img *im, const struct iovec *iov, int iovcnt, uint64_t off);
int img_pread(struct img *im, void *buf, size_t len, uint64_t off);
int img_pwrite(struct img *im, const void *buf, size_t len, uint64_t off);
/* Afterwards the range reads as zeros. may_unmap: host space may be released. */
int img_write_zeroes(struct img *im, uint64_t off, uint64_t len, bool may_unmap);
/* May release host space; afterwards the range reads as zeros or its old data. */
int img_discard(struct img *im, uint64_t off, uint64_t len);
/* Everything written before is on stable storage (qcow2: metadata too, in a safe order). */
int img_flush(struct img *im);
/* Grow (raw and qcow2) or shrink (raw only; qcow2 -ENOTSUP) the virtual size. */
int img_resize(struct img *im, uint64_t new_size, char *err, size_t errlen);

/*
 * Block status of [off, off+len): describes the first extent, of length ext->len > 0
 * (<= len), that is uniform in this image alone (not the backing chain).
 */
enum img_extent_kind {
	IMG_EXT_DATA,    /* data stored in this image (raw: always, except holes) */
	IMG_EXT_ZERO,    /* reads as zeros because this image says so (qcow2 zero flag, raw hole) */
	IMG_EXT_UNALLOC, /* not in this image: reads come from the backing file (or zeros) */
};
struct img_extent {
	enum img_extent_kind kind;
	uint64_t len;
	uint64_t host_off; /* DATA (not compressed): where it is in img_fd(); else 0 */
	bool compressed;   /* qcow2 compressed cluster (DATA) */
};
int img_block_status(struct img *im, uint64_t off, uint64_t len, struct img_extent *ext);

/*
 * The whole-file OFD lock (F_OFD_SETLK, start 0, length 0: it covers growth too): shared
 * if readonly, else exclusive. It also conflicts with QEMU's per-byte locks. -EBUSY with
 * one line in err when another process holds it; 0 with a warning where the filesystem
 * has no OFD locks.
 */
int img_lock_fd(int fd, bool readonly, const char *path, char *err, size_t errlen);

/* Creation. */
enum img_prealloc { IMG_PREALLOC_OFF, IMG_PREALLOC_METADATA, IMG_PREALLOC_FULL };
struct img_create_opts {
	const char *path;
	enum img_format format; /* RAW or QCOW2 */
	uint64_t size;          /* 0 with a backing file = the backing file's size */
	/* qcow2 only: */
	const char *backing_file;       /* written as given; opened relative to path's directory */
	enum img_format backing_format; /* AUTO probes; written as the backing-format extension */
	unsigned cluster_size;          /* 0 = 65536; a power of two in 512..2 MiB */
	unsigned compat;                /* 0 or 3 = v3 ("1.1"), 2 = v2 ("0.10") */
	enum img_prealloc prealloc;
	bool lazy_refcounts; /* v3 only; off by default */
	/* Refuses an existing file unless overwrite. */
	bool overwrite;
};
int img_create(const struct img_create_opts *o, char *err, size_t errlen);

/* What `vmstack img info` shows. Strings point into im (valid until img_close). */
struct img_info {
	enum img_format format;
	uint64_t virtual_size;
	uint64_t actual_size; /* bytes allocated on the host (st_blocks * 512) */
	uint64_t file_size;   /* st_size */
	/* qcow2 only: */
	unsigned version; /* 2 or 3 */
	unsigned cluster_size;
	unsigned refcount_bits;
	bool lazy_refcounts;
	bool corrupt;            /* incompatible feature bit 1 */
	bool dirty;              /* incompatible feature bit 0 */
	const char *compression; /* "zlib" or "zstd" */
	const char *backing_file;
	const char *backing_format;
	unsigned nb_snapshots;
};
int img_get_info(struct img *im, struct img_info *info);

#endif
