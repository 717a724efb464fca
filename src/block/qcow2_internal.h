/* qcow2_internal.h: the open-image structures and the metadata primitives that image.c,
 * the qcow2 core, the snapshot code and qcow2_check.c share. Not for other directories. */
#ifndef VMSTACK_QCOW2_INTERNAL_H
#define VMSTACK_QCOW2_INTERNAL_H

#include <endian.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "image.h"
#include "log.h"
#include "qcow2.h"

/*
 * On-disk format: docs/interop/qcow2.txt of QEMU ("qcow2 spec"). Every integer on disk is
 * big-endian; in memory (l1, refcount_table, cache entries) tables are kept big-endian
 * too, exactly as on disk, and converted at each use (be64toh/htobe64) — one
 * representation means a cached table can be written back as is.
 */
#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */

#define QCOW2_OFLAG_COPIED     (1ull << 63) /* refcount is exactly 1: write in place */
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO       (1ull << 0) /* v3 L2 entries: reads as zeros */
#define QCOW2_L1E_OFFSET_MASK  0x00fffffffffffe00ull
#define QCOW2_L2E_OFFSET_MASK  0x00fffffffffffe00ull
#define QCOW2_REFT_OFFSET_MASK 0xfffffffffffffe00ull

#define QCOW2_INCOMPAT_DIRTY        (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT      (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE    (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION  (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2        (1ull << 4)
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)

#define QCOW2_EXT_END            0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE  0x6803f857u
#define QCOW2_EXT_BITMAPS        0x23852875u
#define QCOW2_EXT_CRYPTO         0x0537be77u
#define QCOW2_EXT_DATA_FILE      0x44415441u

/* Limits on what an (untrusted) header may ask of us. */
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_L1_BYTES     (32u << 20) /* QEMU's limit too */
#define QCOW2_MAX_REFT_BYTES   (8u << 20)
#define QCOW2_MAX_SNAPSHOTS    65536
#define QCOW2_MAX_BACKING_NAME 1023

/* Big-endian loads and stores at any alignment (header fields). */
static inline uint32_t get_be32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return be32toh(v);
}

static inline uint64_t get_be64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return be64toh(v);
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, 4);
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, 8);
}

struct qcow2_cache; /* an LRU of cluster-sized tables (L2 tables or refcount blocks) */

struct qcow2 {
	struct img *img;      /* back pointer: fd, path, readonly, backing */
	pthread_mutex_t lock; /* every field below, and both caches */

	/* Header (host-endian copies of the fields we use). */
	uint32_t version;       /* 2 or 3 */
	uint32_t header_length; /* v2: 72 */
	unsigned cluster_bits;
	uint64_t cluster_size;
	uint64_t size; /* virtual size */
	uint64_t incompat, compat, autoclear;
	unsigned refcount_order;  /* refcount bits = 1 << refcount_order (v2: 4) */
	uint8_t compression_type; /* 0 zlib, 1 zstd */
	char *backing_file;       /* NULL if none */
	char *backing_format;     /* from the extension, NULL if absent */

	/* L1: all of it in memory, big-endian as on disk. */
	uint64_t l1_offset;
	uint32_t l1_size; /* entries */
	uint64_t *l1;

	/* Refcount table: all of it in memory, big-endian as on disk. */
	uint64_t reft_offset;
	uint32_t reft_clusters;
	uint64_t *reft; /* reft_clusters * cluster_size / 8 entries */

	uint32_t nb_snapshots;
	uint64_t snapshots_offset;

	unsigned l2_entries; /* cluster_size / 8 */
	unsigned rc_entries; /* refcounts per refcount block */
	struct qcow2_cache *l2_cache;
	struct qcow2_cache *rc_cache;

	uint64_t free_hint; /* no free cluster below this host cluster index */
	uint64_t file_end;  /* host file size, rounded up to a cluster */

	/*
	 * Write ordering (crash consistency, see qcow2_write.c): a dirty L2 table may only reach
	 * the file after an fdatasync that covers the data and refcount writes its new
	 * entries depend on. need_sync says such writes happened since the last fdatasync.
	 */
	bool need_sync;

	/* Header extensions we do not interpret, kept verbatim for header rewrites. */
	uint8_t *unknown_ext;
	size_t unknown_ext_len;

	/* ---- core-private (qcow2.c, qcow2_{create,io,write,refcount}.c) ---- */
	unsigned l2_bits;      /* log2(l2_entries) */
	uint64_t max_refcount; /* (1 << refcount bits) - 1 */
	/* Host ranges whose refcount drops by one at the next flush, once the tables that
	 * stopped referencing them are on disk (crash consistency rule 5 in qcow2_write.c). */
	struct qcow2_free {
		uint64_t off, len;
	} * frees;
	size_t nb_frees, frees_cap;
	struct ratelimit corrupt_rl; /* "the image is corrupt" lines, per image */
	void *zstd_dctx;             /* ZSTD_DCtx, made on the first zstd cluster */
	uint8_t *cbuf;               /* compressed bytes of one cluster (2 clusters + 512) */
	uint8_t *dbuf;               /* one decompressed cluster */
	uint64_t dbuf_desc;          /* the L2 entry dbuf holds, 0 = none */
};

/* Open image (image.c). */
struct img {
	enum img_format format;
	char *path;
	char *dir; /* directory of path, for relative backing names */
	int fd;
	bool readonly;
	uint64_t size; /* raw: file size; qcow2: q->size */
	dev_t dev;
	ino_t ino;
	struct img *backing; /* NULL if none / not opened */
	struct qcow2 *q;     /* qcow2 only */
};

/* image.c: creates path for writing (O_EXCL unless overwrite); fd or -errno + err. */
int img_create_file(const char *path, bool overwrite, char *err, size_t errlen);

/* ---- the core (qcow2.c, qcow2_create.c, qcow2_io.c, qcow2_write.c), called by image.c ---- */
int qcow2_open(struct img *im, const struct img_open_opts *o, char *err, size_t errlen);
void qcow2_close(struct img *im); /* after qcow2_flush */
int qcow2_preadv(struct img *im, const struct iovec *iov, int iovcnt, uint64_t off);
int qcow2_pwritev(struct img *im, const struct iovec *iov, int iovcnt, uint64_t off);
int qcow2_write_zeroes(struct img *im, uint64_t off, uint64_t len, bool may_unmap);
int qcow2_discard(struct img *im, uint64_t off, uint64_t len);
int qcow2_flush(struct img *im);
int qcow2_resize(struct img *im, uint64_t new_size, char *err, size_t errlen);
int qcow2_block_status(struct img *im, uint64_t off, uint64_t len, struct img_extent *ext);
int qcow2_create(const struct img_create_opts *o, char *err, size_t errlen);
int qcow2_get_info(struct img *im, struct img_info *info);

/*
 * ---- qcow2.c: metadata primitives for qcow2_snapshot.c / qcow2_check.c ----
 * All require q->lock held by the caller (they never take it), except where noted.
 */
/* Reads/writes metadata at a host offset; refuses (−EIO, logged) a range outside
 * [0, file_end + cluster_size) or not 8-byte aligned. */
int qcow2_meta_read(struct qcow2 *q, uint64_t off, void *buf, size_t len);
int qcow2_meta_write(struct qcow2 *q, uint64_t off, const void *buf, size_t len);
/* Refcount of host cluster index c (0 if beyond the table). */
int qcow2_refcount_get(struct qcow2 *q, uint64_t c, uint64_t *rc);
/* Adds delta to the refcount of every cluster overlapping [off, off+len); allocates
 * refcount blocks (and grows the refcount table) as needed. Refuses to go below 0 or
 * above the maximum (−EIO / −ERANGE). Written through to the file. */
int qcow2_refcount_update(struct qcow2 *q, uint64_t off, uint64_t len, int64_t delta);
/* Allocates len bytes of contiguous, cluster-aligned host space with refcount 1 (written
 * through); returns the host offset or −errno. The clusters' contents are undefined. */
int64_t qcow2_alloc_clusters(struct qcow2 *q, uint64_t len);
/* Writes back every dirty cached table in a crash-safe order and fdatasyncs. */
int qcow2_flush_caches(struct qcow2 *q);
/* Forgets every cached table (call qcow2_flush_caches first): lets snapshot/check code
 * rewrite L2 tables and refcount blocks in the file directly. */
void qcow2_drop_caches(struct qcow2 *q);
/* Writes the header (fields above, extensions: backing format, feature table, unknown
 * ones kept) to cluster 0 and fdatasyncs. Fails (−ENOSPC) if it does not fit a cluster. */
int qcow2_write_header(struct qcow2 *q);
/* Writes q->l1 (l1_size entries) at q->l1_offset. */
int qcow2_write_l1(struct qcow2 *q);

/*
 * ---- core-private: shared by the core files only (q->lock held) ----
 */
/* Logs "<path>: <table> entry <i> points outside the image (0x...) — ..." (rate limited)
 * and returns -EIO. */
int qcow2_corrupt(struct qcow2 *q, const char *table, uint64_t i, uint64_t val);
int qcow2_sync(struct qcow2 *q); /* fdatasync; clears need_sync */

/* Cache of cluster-sized big-endian tables, LRU, keyed by host offset. A table pointer is
 * valid until the next qcow2_cache_get() on the same cache. */
struct qcow2_cache *qcow2_cache_new(unsigned nb_tables, size_t table_size);
void qcow2_cache_free(struct qcow2_cache *c);
/* load=false: the caller initialises the table (a new cluster); nothing is read. Evicting
 * a dirty table writes it back (after an fdatasync if q->need_sync). */
int qcow2_cache_get(struct qcow2 *q, struct qcow2_cache *c, uint64_t off, bool load,
                    uint64_t **table);
void qcow2_cache_mark_dirty(struct qcow2_cache *c, const uint64_t *table);
/* The table now lives at new_off (copy-on-write of a shared L2 table). */
void qcow2_cache_rename(struct qcow2_cache *c, const uint64_t *table, uint64_t new_off);
void qcow2_cache_forget(struct qcow2_cache *c, uint64_t off);
bool qcow2_cache_dirty(const struct qcow2_cache *c);
/* Writes every dirty table (fdatasync first if q->need_sync). */
int qcow2_cache_writeback(struct qcow2 *q, struct qcow2_cache *c);

/* Generic refcount entry access in a refcount block (order 0..6). */
uint64_t qcow2_rc_entry_get(const void *blk, unsigned order, uint64_t i);
void qcow2_rc_entry_set(void *blk, unsigned order, uint64_t i, uint64_t v);
/* Queues a refcount decrement of [off, off+len) for the next flush (rule 5). */
int qcow2_free_later(struct qcow2 *q, uint64_t off, uint64_t len);
/* Applies the queued decrements (the tables that dropped them must be on disk). */
int qcow2_process_frees(struct qcow2 *q);
/* Grows the L1 table to exactly l1_size entries (elsewhere), header rewritten. */
int qcow2_grow_l1(struct qcow2 *q, uint64_t l1_size);
/* Allocates every L2 table and data cluster of the virtual disk (full: and the space). */
int qcow2_preallocate(struct qcow2 *q, bool full);

/*
 * ---- qcow2_io.c: cluster lookup and reads, shared with qcow2_write.c (q->lock held) ----
 */
enum q2_kind { Q2_UNALLOC, Q2_ZERO, Q2_NORMAL, Q2_COMPRESSED };

struct q2_map {
	enum q2_kind kind;
	uint64_t bytes; /* from off, uniform, within one L2 table's range */
	uint64_t host;  /* NORMAL: host offset of off; ZERO: preallocated cluster or 0 */
	bool copied;
	uint64_t l2e; /* the entry of off's cluster */
};

/* A position in an iovec array, consumed by qcow2_iovc_take(). */
struct iovc {
	const struct iovec *iov;
	int cnt, i;
	size_t pos;
};

/* Takes the next n bytes of c (fewer at its end) as iovecs into out; returns how many. */
int qcow2_iovc_take(struct iovc *c, uint64_t n, struct iovec *out);
/* Full vectored I/O; reads past the end of the file read zeros. iov is consumed. */
int qcow2_io_full(int fd, struct iovec *iov, int cnt, uint64_t off, bool write);
/* stack if it has room for cnt + 2 iovecs, else a malloc'ed array (NULL if no memory). */
struct iovec *qcow2_iov_scratch(struct iovec *stack, size_t nstack, int cnt);
/* L2 table offset for L1 index i: 0 if none, -EIO if the entry is bad. */
int64_t qcow2_l1_entry(struct qcow2 *q, uint64_t i, bool *copied);
/* Host offset and length in bytes of the compressed cluster that L2 entry e describes. */
void qcow2_compressed_desc(const struct qcow2 *q, uint64_t e, uint64_t *coff, uint64_t *csize);
/* Kind and host offset of an L2 entry; -EIO if it is bad (logged when log is set). */
int qcow2_classify(struct qcow2 *q, uint64_t e, uint64_t idx, bool log, enum q2_kind *kind,
                   uint64_t *host);
/* What [off, off+len) is in this image, as far as it is uniform (m->bytes of it). */
int qcow2_lookup(struct qcow2 *q, uint64_t off, uint64_t len, struct q2_map *m);
/* Reads the current content of the guest cluster at goff (entry e) into buf. */
int qcow2_read_cluster(struct qcow2 *q, uint64_t goff, uint64_t e, uint8_t *buf);

/*
 * ---- qcow2_snaptable.c: the snapshot table, for qcow2_snapshot.c and qcow2_check.c ----
 * Functions taking a struct qcow2 require q->lock held by the caller.
 */
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

/* Formats into err like snprintf, unless err is NULL or errlen 0. */
void qcow2_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The qcow2 state of im; NULL unless im is an open qcow2 image. No lock needed. */
struct qcow2 *qcow2_of(struct img *im);
/* Sets *end to the host file's size rounded up to a cluster (at least q->file_end). */
int qcow2_file_bound(struct qcow2 *q, uint64_t *end);
/* A buffer of len bytes, 4096-aligned and rounded up for an O_DIRECT fd; NULL if no memory. */
void *qcow2_alloc_buf(size_t len);
/* Reads and validates the nb_snapshots entries at snapshots_offset into t (t->bytes set). */
int qcow2_snap_table_read(struct qcow2 *q, struct snap_table *t, char *err, size_t errlen);
/* Frees every entry of t and zeroes t. */
void qcow2_snap_table_free(struct snap_table *t);
/* Writes t as the new table (new clusters, synced), then the header, then frees the old one. */
int qcow2_snap_table_write(struct qcow2 *q, const struct snap_table *t, uint64_t old_bytes,
                           char *err, size_t errlen);
/* Index of the entry with this id, else with this name; -1 if none. */
int qcow2_snap_find(const struct snap_table *t, const char *id_or_name);
/* Reads sn's L1 table (checked against the file) into a zeroed buffer of >= min_entries. */
int qcow2_snap_read_l1(struct qcow2 *q, const struct snap *sn, uint32_t min_entries, uint64_t **out,
                       char *err, size_t errlen);
/* Calls fn for each snapshot table entry (validated), stops at the first nonzero return;
 * *table_bytes gets the table's size. */
int qcow2_snapshot_table_walk(struct qcow2 *q,
                              int (*fn)(void *opaque, const struct qcow2_snapshot_info *info,
                                        uint64_t l1_offset, uint32_t l1_size),
                              void *opaque, uint64_t *table_bytes, char *err, size_t errlen);

/* qcow2_snaptable.c: the snapshot table is read on demand; core open only checks that
 * [snapshots_offset, +nb_snapshots * 40 minimum) lies in the file and is cluster aligned. */

#endif
