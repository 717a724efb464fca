/* block.c: raw images: open, lock and probe; the blk_queue front end shared by both engines. */
#include "block.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block_internal.h"
#include "log.h"
#include "qcow2.h"
#include "util.h"

/*
 * The image is opened once per blk; every queue shares its fd. What a request means —
 * bounds, short transfers, the write-zeroes fallbacks — lives here, in the blk_slot state
 * machine; the engines only run the system calls it asks for (see block_internal.h).
 *
 * Choices worth knowing:
 *  - Lock: img_lock_fd (image.h), one open file description lock over the whole file,
 *    shared when readonly; it also conflicts with QEMU's per-byte locks, so neither can
 *    write an image the other uses.
 *  - Size: a regular file's size rounded down to whole blocks (blk_block_size()); a tail
 *    shorter than a block is kept on disk but not shown to the guest.
 *  - Block size: the device's logical block size (BLKSSZGET) for a block device; 512 for a
 *    file, or 4096 under cache=none when a 512-byte O_DIRECT read of block 0 is refused.
 *  - Discard: for files, probed at open by punching a hole wholly past the end of the file
 *    (PUNCH_HOLE|KEEP_SIZE at the end rounded up to 64 KiB), which deallocates nothing.
 *    Block devices report no discard: fallocate is all we use, and on a block device
 *    PUNCH_HOLE means "write zeroes by unmapping", not a discard.
 *  - Write zeroes: every writable image can, because the last fallback is writing zeros:
 *    ZERO_RANGE, PUNCH_HOLE (first when unmap is allowed), then plain writes.
 *  - qcow2: opened through image.h, which takes the same lock. Requests that qcow2_map_io
 *    maps in place are rebased to their host offset (slot->base) and run like raw ones;
 *    the rest run synchronously in blk_submit and complete through q->sync_done.
 */

#define BLK_SECTOR        512
#define BLK_MAX_DEPTH     32768 /* IORING_MAX_ENTRIES */
#define BLK_MAX_RETRIES   16    /* of one call failing with EINTR or EAGAIN */
#define BLK_PROBE_ALIGN   (64 * KiB)
#define BLK_ZERO_BUF_SIZE (1 * MiB)

/* Source of WRITE_ZEROES done by writing. Never written: its pages stay the shared zero page. */
static uint8_t blk_zero_buf[BLK_ZERO_BUF_SIZE] __attribute__((aligned(4096)));

/* Write-zeroes methods, tried in this order until one is supported. */
enum { WZ_PUNCH_HOLE, WZ_ZERO_RANGE, WZ_WRITE };
static const uint8_t wz_order[2][3] = {
    {WZ_ZERO_RANGE, WZ_PUNCH_HOLE, WZ_WRITE}, /* keep the blocks allocated if we can */
    {WZ_PUNCH_HOLE, WZ_ZERO_RANGE, WZ_WRITE}, /* req->unmap: deallocating is allowed */
};

static int blk_open_error(const struct blk_opts *o, int e, char *err, size_t errlen)
{
	const char *p = o->path;

	if (e == ENOENT)
		snprintf(
		    err, errlen,
		    "%s: no such file — create it with `truncate -s 1G %s` (or qemu-img create)", p,
		    p);
	else if ((e == EACCES || e == EPERM) && o->readonly)
		snprintf(err, errlen,
		         "%s: permission denied — make it readable by this user (chmod/chown)", p);
	else if (e == EACCES || e == EPERM)
		snprintf(err, errlen,
		         "%s: permission denied — make it writable by this user (chmod/chown), "
		         "or add ,readonly",
		         p);
	else if (e == EROFS)
		snprintf(err, errlen, "%s: on a read-only filesystem — add ,readonly", p);
	else if (e == EISDIR)
		snprintf(err, errlen, "%s: is a directory — give the path of an image file", p);
	else if (e == EINVAL && o->cache == BLK_CACHE_NONE)
		snprintf(err, errlen,
		         "%s: cache=none: the filesystem does not support O_DIRECT — use "
		         "cache=writeback",
		         p);
	else
		snprintf(err, errlen, "%s: cannot open: %s", p, strerror(e));
	return -e;
}

/* 512, or 4096 if O_DIRECT refuses a 512-byte read (a 4K-sector disk under the file). */
static unsigned blk_probe_dio_align(int fd)
{
	unsigned align = BLK_SECTOR;
	void *buf;

	if (posix_memalign(&buf, 4096, 4096))
		return 4096;
	if (pread(fd, buf, BLK_SECTOR, 0) < 0 && errno == EINVAL)
		align = 4096;
	free(buf);
	return align;
}

/* Sets size, block size and is_bdev from what fd is. */
static int blk_probe_size(struct blk *b, const struct blk_opts *o, char *err, size_t errlen)
{
	const char *p = o->path;
	uint64_t bytes;
	struct stat st;

	if (fstat(b->fd, &st) < 0)
		return blk_open_error(o, errno, err, errlen);
	if (S_ISDIR(st.st_mode))
		return blk_open_error(o, EISDIR, err, errlen);
	if (S_ISBLK(st.st_mode)) {
		int lbs = 0;

		if (ioctl(b->fd, BLKGETSIZE64, &bytes) < 0 || ioctl(b->fd, BLKSSZGET, &lbs) < 0) {
			snprintf(err, errlen, "%s: cannot read the device's size: %s", p,
			         strerror(errno));
			return -EIO;
		}
		b->is_bdev = true;
		b->block_size = lbs >= BLK_SECTOR ? (unsigned)lbs : BLK_SECTOR;
	} else if (S_ISREG(st.st_mode)) {
		bytes = (uint64_t)st.st_size;
		b->block_size =
		    o->cache == BLK_CACHE_NONE ? blk_probe_dio_align(b->fd) : BLK_SECTOR;
	} else {
		snprintf(err, errlen, "%s: not a regular file or a block device", p);
		return -EINVAL;
	}
	b->size = ALIGN_DOWN(bytes, b->block_size);
	if (bytes == 0) {
		snprintf(err, errlen,
		         "%s: is empty (0 bytes) — give it a size with `truncate -s 1G %s`", p, p);
		return -EINVAL;
	}
	if (b->size == 0) {
		snprintf(err, errlen,
		         "%s: is %llu bytes, less than one %u-byte block — give it a size with "
		         "`truncate -s 1G %s`",
		         p, (unsigned long long)bytes, b->block_size, p);
		return -EINVAL;
	}
	return 0;
}

/* Punches a hole wholly past the end of the file: it tells whether the filesystem can,
 * and deallocates nothing the file holds. */
static bool blk_probe_punch_hole(int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return false;
	return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
	                 (off_t)ALIGN_UP((uint64_t)st.st_size, BLK_PROBE_ALIGN),
	                 BLK_PROBE_ALIGN) == 0;
}

static const struct blk_engine *blk_pick_engine(const struct blk_opts *o, char *err, size_t errlen)
{
	static bool logged;
	char why[200];

	if (o->aio == BLK_AIO_THREADS)
		return &blk_engine_threads;
	if (blk_uring_probe(why, sizeof(why)) == 0)
		return &blk_engine_uring;
	if (o->aio == BLK_AIO_IO_URING) {
		snprintf(err, errlen, "%s: aio=io_uring: %s — use aio=threads or aio=auto", o->path,
		         why);
		return NULL;
	}
	if (!__atomic_exchange_n(&logged, true, __ATOMIC_RELAXED))
		log_info("io_uring is unavailable (%s); disk I/O uses worker threads", why);
	return &blk_engine_threads;
}

/* Whether the file starts with the qcow2 magic (a probe: errors mean "no"). */
static bool blk_probe_qcow2(const char *path)
{
	uint32_t magic;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	bool yes;

	if (fd < 0)
		return false;
	yes = pread(fd, &magic, sizeof(magic), 0) == (ssize_t)sizeof(magic) &&
	      be32toh(magic) == 0x514649fbu; /* "QFI\xfb" */
	close(fd);
	return yes;
}

/* The qcow2 half of blk_open: b->path and b->readonly are set. */
static int blk_open_qcow2(struct blk *b, const struct blk_opts *o, char *err, size_t errlen)
{
	struct img_open_opts io = {
	    .path = o->path,
	    .format = IMG_FMT_QCOW2,
	    .readonly = o->readonly,
	    .lock = true,
	    .l2_cache_bytes = o->l2_cache_bytes,
	};

	if (o->cache == BLK_CACHE_NONE) {
		snprintf(err, errlen,
		         "%s: cache=none is not supported for qcow2 images yet — use "
		         "cache=writeback",
		         o->path);
		return -EINVAL;
	}
	b->img = img_open(&io, err, errlen);
	if (!b->img)
		return -EINVAL;
	if (o->format == IMG_FMT_AUTO && img_backing_name(b->img)) {
		snprintf(err, errlen,
		         "%s: a probed qcow2 image may not name a backing file ('%s') — say "
		         "format=qcow2 if you trust this image",
		         o->path, img_backing_name(b->img));
		return -EPERM;
	}
	b->fd = img_fd(b->img);
	b->size = img_size(b->img);
	b->block_size = BLK_SECTOR;
	if (b->size < BLK_SECTOR) {
		snprintf(err, errlen, "%s: virtual size %llu is less than one %u-byte block",
		         o->path, (unsigned long long)b->size, BLK_SECTOR);
		return -EINVAL;
	}
	b->size = ALIGN_DOWN(b->size, BLK_SECTOR);
	b->can_discard = b->can_write_zeroes = !b->readonly;
	return 0;
}

struct blk *blk_open(const struct blk_opts *opts, char *err, size_t errlen)
{
	int flags = (opts->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	struct blk *b;

	if (!opts->path || !opts->path[0]) {
		snprintf(err, errlen, "disk: no image path given");
		return NULL;
	}
	b = calloc(1, sizeof(*b));
	if (!b || !(b->path = strdup(opts->path))) {
		snprintf(err, errlen, "%s: out of memory", opts->path);
		free(b);
		return NULL;
	}
	b->readonly = opts->readonly;
	b->fd = -1;
	if (opts->format == IMG_FMT_QCOW2 ||
	    (opts->format == IMG_FMT_AUTO && blk_probe_qcow2(opts->path))) {
		if (blk_open_qcow2(b, opts, err, errlen) < 0)
			goto fail;
		goto engine;
	}
	if (opts->cache == BLK_CACHE_NONE)
		flags |= O_DIRECT;
	b->fd = open(opts->path, flags);
	if (b->fd < 0) {
		blk_open_error(opts, errno, err, errlen);
		goto fail;
	}
	if (blk_probe_size(b, opts, err, errlen) < 0 ||
	    img_lock_fd(b->fd, b->readonly, opts->path, err, errlen) < 0)
		goto fail;
	if (!b->readonly) {
		b->can_discard = !b->is_bdev && blk_probe_punch_hole(b->fd);
		b->can_write_zeroes = true;
	}
engine:
	b->engine = blk_pick_engine(opts, err, errlen);
	if (!b->engine)
		goto fail;
	return b;
fail:
	blk_close(b);
	return NULL;
}

void blk_close(struct blk *b)
{
	unsigned nqueues;

	if (!b)
		return;
	nqueues = __atomic_load_n(&b->nqueues, __ATOMIC_RELAXED);
	if (nqueues)
		log_err("%s: closed with %u queues still open", b->path, nqueues);
	if (b->img) {
		int r = img_close(b->img); /* writes back qcow2 metadata, drops the lock */

		if (r < 0)
			log_err("%s: writing back image metadata: %s", b->path, strerror(-r));
	} else if (b->fd >= 0) {
		close(b->fd); /* drops the lock too */
	}
	free(b->path);
	free(b);
}

uint64_t blk_size(const struct blk *b)
{
	return b->size;
}

bool blk_readonly(const struct blk *b)
{
	return b->readonly;
}

unsigned blk_block_size(const struct blk *b)
{
	return b->block_size;
}

bool blk_can_discard(const struct blk *b)
{
	return b->can_discard;
}

bool blk_can_write_zeroes(const struct blk *b)
{
	return b->can_write_zeroes;
}

const char *blk_engine_name(const struct blk *b)
{
	return b->engine->name;
}

const char *blk_path(const struct blk *b)
{
	return b->path;
}

enum img_format blk_format(const struct blk *b)
{
	return b->img ? IMG_FMT_QCOW2 : IMG_FMT_RAW;
}

/* --- the request state machine (any thread: it touches the slot and atomics only) --- */

/* READ/WRITE: the whole request, or what a short transfer left (see block_internal.h). */
static void blk_slot_rw_io(struct blk_slot *s, struct blk_io *io)
{
	const struct blk_req *r = s->req;
	uint64_t skip = s->done;
	unsigned i = 0;

	io->offset = s->base + s->done;
	/* Terminates inside the array: done < total, the sum of the lengths. */
	while (skip && skip >= r->iov[i].iov_len)
		skip -= r->iov[i++].iov_len;
	if (skip) {
		s->one_iov.iov_base = (uint8_t *)r->iov[i].iov_base + skip;
		s->one_iov.iov_len = r->iov[i].iov_len - skip;
		io->iov = &s->one_iov;
		io->iovcnt = 1;
	} else {
		io->iov = r->iov + i;
		io->iovcnt = r->iovcnt - i;
	}
}

static uint8_t blk_wz_method(struct blk *b, struct blk_slot *s)
{
	unsigned bad = __atomic_load_n(&b->bad_methods, __ATOMIC_RELAXED);
	const uint8_t *order = wz_order[s->req->unmap];

	for (;; s->stage++) {
		if (order[s->stage] == WZ_PUNCH_HOLE && (bad & BLK_BAD_PUNCH_HOLE))
			continue;
		if (order[s->stage] == WZ_ZERO_RANGE && (bad & BLK_BAD_ZERO_RANGE))
			continue;
		return order[s->stage]; /* WZ_WRITE, last, is never bad */
	}
}

static void blk_slot_wz_io(struct blk *b, struct blk_slot *s, struct blk_io *io)
{
	switch (blk_wz_method(b, s)) {
	case WZ_PUNCH_HOLE:
		io->kind = BLK_IO_FALLOCATE;
		io->mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		break;
	case WZ_ZERO_RANGE:
		io->kind = BLK_IO_FALLOCATE;
		io->mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
		break;
	default:
		s->one_iov.iov_base = blk_zero_buf;
		s->one_iov.iov_len = MIN(s->total - s->done, BLK_ZERO_BUF_SIZE);
		io->kind = BLK_IO_WRITE;
		io->offset += s->done;
		io->iov = &s->one_iov;
		io->iovcnt = 1;
		break;
	}
}

/* The call that moves s on from its current state. */
static void blk_slot_io(struct blk *b, struct blk_slot *s, struct blk_io *io)
{
	const struct blk_req *r = s->req;

	*io = (struct blk_io){.offset = s->base, .len = r->len};
	switch (r->op) {
	case BLK_OP_READ:
	case BLK_OP_WRITE:
		io->kind = r->op == BLK_OP_READ ? BLK_IO_READ : BLK_IO_WRITE;
		blk_slot_rw_io(s, io);
		break;
	case BLK_OP_FLUSH:
		io->kind = BLK_IO_FDATASYNC;
		break;
	case BLK_OP_DISCARD:
		io->kind = r->len ? BLK_IO_FALLOCATE : BLK_IO_NOP;
		io->mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		break;
	case BLK_OP_WRITE_ZEROES:
		if (r->len)
			blk_slot_wz_io(b, s, io);
		else
			io->kind = BLK_IO_NOP; /* fallocate refuses a zero length */
		break;
	}
}

static bool blk_slot_finished(struct blk_slot *s, int64_t ret)
{
	s->ret = ret;
	return false;
}

/* Transfers continue where a short one stopped; no progress at all means the image shrank. */
static bool blk_slot_transferred(struct blk_slot *s, int64_t res, int64_t ret)
{
	if (res < 0)
		return blk_slot_finished(s, res);
	if (res == 0 && s->done < s->total)
		return blk_slot_finished(s, -EIO);
	s->done += (uint64_t)res;
	return s->done < s->total || blk_slot_finished(s, ret);
}

static bool blk_slot_wz_update(struct blk *b, struct blk_slot *s, int64_t res)
{
	uint8_t method = wz_order[s->req->unmap][s->stage];

	if (!s->req->len)
		return blk_slot_finished(s, 0);
	if (method == WZ_WRITE)
		return blk_slot_transferred(s, res, 0);
	if (res == -EOPNOTSUPP) {
		/* The filesystem will refuse it every time: later requests skip straight on. */
		__atomic_fetch_or(&b->bad_methods,
		                  method == WZ_PUNCH_HOLE ? BLK_BAD_PUNCH_HOLE : BLK_BAD_ZERO_RANGE,
		                  __ATOMIC_RELAXED);
		s->stage++;
		return true;
	}
	return blk_slot_finished(s, MIN(res, 0));
}

/* Accounts the result of the last call; true if another is needed. */
static bool blk_slot_update(struct blk *b, struct blk_slot *s, int64_t res)
{
	if ((res == -EINTR || res == -EAGAIN) && s->retries < BLK_MAX_RETRIES) {
		s->retries++;
		return true;
	}
	s->retries = 0;
	switch (s->req->op) {
	case BLK_OP_READ:
	case BLK_OP_WRITE:
		return blk_slot_transferred(s, res, (int64_t)s->total);
	case BLK_OP_FLUSH:
		return blk_slot_finished(s, MIN(res, 0));
	case BLK_OP_DISCARD:
		/* Advisory: a filesystem that cannot punch holes keeps the data, and that is fine.
		 */
		return blk_slot_finished(s, res == -EOPNOTSUPP ? 0 : MIN(res, 0));
	case BLK_OP_WRITE_ZEROES:
		return blk_slot_wz_update(b, s, res);
	}
	return blk_slot_finished(s, -EINVAL);
}

void blk_slot_first(struct blk *b, struct blk_slot *s, struct blk_io *io)
{
	s->done = 0;
	s->ret = 0;
	s->stage = 0;
	s->retries = 0;
	blk_slot_io(b, s, io);
}

bool blk_slot_next(struct blk *b, struct blk_slot *s, int64_t res, struct blk_io *io)
{
	if (!blk_slot_update(b, s, res))
		return false;
	blk_slot_io(b, s, io);
	return true;
}

void blk_slot_finish(struct blk_queue *q, struct blk_slot *s)
{
	struct blk_req *req = s->req;
	int64_t ret = s->ret;

	s->req = NULL;
	s->next = q->free;
	q->free = s;
	q->inflight--;
	req->done(req, ret);
}

/* --- queues (the queue's thread) --- */

struct blk_queue *blk_queue_new(struct blk *b, unsigned depth, char *err, size_t errlen)
{
	struct blk_queue *q;

	if (depth == 0 || depth > BLK_MAX_DEPTH) {
		snprintf(err, errlen, "%s: queue depth %u: must be 1 to %u", b->path, depth,
		         BLK_MAX_DEPTH);
		return NULL;
	}
	q = calloc(1, sizeof(*q));
	if (!q || !(q->slots = calloc(depth, sizeof(*q->slots)))) {
		snprintf(err, errlen, "%s: out of memory for a queue of depth %u", b->path, depth);
		free(q);
		return NULL;
	}
	q->blk = b;
	q->depth = depth;
	for (unsigned i = depth; i-- > 0;) {
		q->slots[i].next = q->free;
		q->free = &q->slots[i];
	}
	q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (q->efd < 0) {
		snprintf(err, errlen, "%s: eventfd: %s", b->path, strerror(errno));
		goto fail;
	}
	if (b->engine->init(q, err, errlen) < 0)
		goto fail;
	__atomic_fetch_add(&b->nqueues, 1, __ATOMIC_RELAXED);
	return q;
fail:
	if (q->efd >= 0)
		close(q->efd);
	free(q->slots);
	free(q);
	return NULL;
}

void blk_queue_free(struct blk_queue *q)
{
	if (!q)
		return;
	blk_queue_drain(q);
	q->blk->engine->fini(q);
	__atomic_fetch_sub(&q->blk->nqueues, 1, __ATOMIC_RELAXED);
	close(q->efd);
	free(q->slots);
	free(q);
}

int blk_queue_fd(const struct blk_queue *q)
{
	return q->efd;
}

unsigned blk_queue_inflight(const struct blk_queue *q)
{
	return q->inflight;
}

/* Whether req may be queued; sets *total to its byte count. */
static int blk_req_check(const struct blk *b, const struct blk_req *req, uint64_t *total)
{
	uint64_t len = 0;

	if (!req->done)
		return -EINVAL;
	switch (req->op) {
	case BLK_OP_FLUSH:
		*total = 0;
		return 0;
	case BLK_OP_WRITE:
		if (b->readonly)
			return -EROFS;
		/* fall through */
	case BLK_OP_READ:
		if (!req->iov || req->iovcnt == 0 || req->iovcnt > BLK_MAX_IOV)
			return -EINVAL;
		/* len <= size throughout, so the sum cannot overflow. */
		for (unsigned i = 0; i < req->iovcnt; i++) {
			if (req->iov[i].iov_len > b->size - len)
				return -EINVAL;
			len += req->iov[i].iov_len;
		}
		break;
	case BLK_OP_DISCARD:
	case BLK_OP_WRITE_ZEROES:
		if (b->readonly)
			return -EROFS;
		if (!(req->op == BLK_OP_DISCARD ? b->can_discard : b->can_write_zeroes))
			return -EOPNOTSUPP;
		len = req->len;
		break;
	default:
		return -EINVAL;
	}
	if (req->offset > b->size || len > b->size - req->offset)
		return -EINVAL;
	*total = len;
	return 0;
}

/* qcow2: whether req can go to the engine as is, at *base in the file (see qcow2_map_io). */
static bool blk_img_in_place(struct blk *b, const struct blk_req *req, uint64_t total,
                             uint64_t *base)
{
	int64_t n;

	if (req->op != BLK_OP_READ && req->op != BLK_OP_WRITE)
		return false;
	n = qcow2_map_io(b->img, req->offset, total, req->op == BLK_OP_WRITE, base);
	return n > 0 && (uint64_t)n == total;
}

/* qcow2's slow path: the whole request, synchronously, through image.h. */
static int64_t blk_img_sync(struct blk *b, const struct blk_req *r, uint64_t total)
{
	int ret;

	switch (r->op) {
	case BLK_OP_READ:
		ret = img_preadv(b->img, r->iov, (int)r->iovcnt, r->offset);
		return ret < 0 ? ret : (int64_t)total;
	case BLK_OP_WRITE:
		ret = img_pwritev(b->img, r->iov, (int)r->iovcnt, r->offset);
		return ret < 0 ? ret : (int64_t)total;
	case BLK_OP_FLUSH:
		return img_flush(b->img);
	case BLK_OP_DISCARD:
		ret = r->len ? img_discard(b->img, r->offset, r->len) : 0;
		return ret == -EOPNOTSUPP ? 0 : ret;
	case BLK_OP_WRITE_ZEROES:
		return r->len ? img_write_zeroes(b->img, r->offset, r->len, r->unmap) : 0;
	}
	return -EINVAL;
}

int blk_submit(struct blk_queue *q, struct blk_req *req)
{
	struct blk_slot *s;
	uint64_t total;
	int r = blk_req_check(q->blk, req, &total);

	if (r < 0)
		return r;
	s = q->free;
	if (!s)
		return -EAGAIN;
	q->free = s->next;
	s->next = NULL;
	s->req = req;
	s->total = total;
	s->base = req->offset;
	q->inflight++;
	if (q->blk->img && !blk_img_in_place(q->blk, req, total, &s->base)) {
		s->ret = blk_img_sync(q->blk, req, total);
		s->next = q->sync_done;
		q->sync_done = s;
		eventfd_write(q->efd, 1);
		return 0;
	}
	q->blk->engine->start(q, s);
	return 0;
}

void blk_queue_kick(struct blk_queue *q)
{
	q->blk->engine->kick(q);
}

unsigned blk_queue_complete(struct blk_queue *q)
{
	uint64_t n;
	unsigned done;

	if (q->completing)
		return 0;
	/* Cleared before looking: a completion posted after this read rings it again. */
	if (read(q->efd, &n, sizeof(n)) < 0) {
		/* EAGAIN: nothing was signalled since the last call */
	}
	q->completing = true;
	done = q->blk->engine->reap(q);
	while (q->sync_done) {
		struct blk_slot *s = q->sync_done;

		q->sync_done = s->next;
		blk_slot_finish(q, s);
		done++;
	}
	q->completing = false;
	return done;
}

bool blk_queue_pending(const struct blk_queue *q)
{
	if (q->sync_done)
		return true;
	return q->blk->engine->pending && q->blk->engine->pending(q);
}

void blk_queue_drain(struct blk_queue *q)
{
	struct pollfd pfd = {.fd = q->efd, .events = POLLIN};

	for (;;) {
		blk_queue_kick(q);
		blk_queue_complete(q);
		if (!q->inflight)
			return;
		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			log_err("%s: waiting for disk I/O: %s", q->blk->path, strerror(errno));
	}
}
