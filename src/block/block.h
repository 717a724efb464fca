/* block.h: disk image backends (raw now, qcow2 later) behind one asynchronous interface. */
#ifndef VMSTACK_BLOCK_H
#define VMSTACK_BLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "image.h"

/*
 * A `struct blk` is one open image. I/O is asynchronous and submitted through a
 * `struct blk_queue`, a submission/completion context that belongs to ONE thread (a device
 * queue's I/O thread): requests are submitted and their completions delivered on that
 * thread only. A disk with several virtqueues opens one blk_queue per thread.
 *
 *	struct blk_queue *q = blk_queue_new(b, 128, err, sizeof err);
 *	... epoll on blk_queue_fd(q) ...
 *	blk_submit(q, &req);            // any number, batched
 *	blk_queue_kick(q);              // hand the batch to the kernel / the workers
 *	... blk_queue_fd(q) becomes readable ...
 *	blk_queue_complete(q);          // calls req->done() for each finished request
 *
 * Engines: io_uring (liburing) when the kernel allows it, else a small pool of worker
 * threads doing preadv/pwritev/fdatasync (4 per blk_queue, fewer if depth < 4). Both give
 * the same semantics.
 *
 * Formats: raw, and qcow2 through image.h. A qcow2 read or write whose whole range lies in
 * allocated clusters that can be accessed in place (qcow2_map_io) goes to the engine at its
 * host offset, like raw; anything else (allocating writes, copy-on-write, backing-file
 * reads, zero clusters, flush, discard) runs synchronously on the queue's thread through
 * image.h and completes through the same eventfd.
 */

enum blk_cache {
	BLK_CACHE_WRITEBACK, /* host page cache; flush = fdatasync (default) */
	BLK_CACHE_NONE,      /* O_DIRECT, bypassing the host page cache; flush = fdatasync */
};

enum blk_aio {
	BLK_AIO_AUTO,     /* io_uring if it works, else threads (logged at info level) */
	BLK_AIO_IO_URING, /* io_uring or fail to open */
	BLK_AIO_THREADS,  /* worker threads */
};

struct blk_opts {
	const char *path;
	bool readonly;
	enum blk_cache cache;
	enum blk_aio aio;
	/* AUTO probes; a probed qcow2 image may not name a backing file (a guest that wrote a
	 * qcow2 header onto its raw disk could otherwise make us read any host file). */
	enum img_format format;
	uint64_t l2_cache_bytes; /* qcow2 L2 cache; 0 = default */
};

enum blk_op {
	BLK_OP_READ,
	BLK_OP_WRITE,
	BLK_OP_FLUSH,        /* everything completed before is on stable storage (fdatasync) */
	BLK_OP_DISCARD,      /* may deallocate; reads afterwards return zeros or old data */
	BLK_OP_WRITE_ZEROES, /* reads afterwards return zeros */
};

struct blk_req {
	enum blk_op op;
	uint64_t offset;         /* bytes; READ/WRITE/DISCARD/WRITE_ZEROES */
	uint64_t len;            /* bytes; DISCARD/WRITE_ZEROES only (READ/WRITE use iov) */
	const struct iovec *iov; /* READ/WRITE; must stay valid until done() */
	unsigned iovcnt;         /* at most BLK_MAX_IOV */
	bool unmap;              /* WRITE_ZEROES: deallocating is allowed */
	/* Called once, on the queue's thread from blk_queue_complete(): ret is the byte count
	 * (READ/WRITE: all of it, short transfers are retried or become -EIO) or 0, or -errno. */
	void (*done)(struct blk_req *req, int64_t ret);
	void *opaque;
};

#define BLK_MAX_IOV 1024

struct blk;
struct blk_queue;

/*
 * Opens the image. Takes an advisory lock (open file description lock, like QEMU's):
 * shared for readonly, exclusive otherwise, so two monitors cannot write one image.
 * On failure returns NULL with one line in err naming the path, what is wrong and the fix:
 *   "disk.img: no such file — create it with `truncate -s 1G disk.img` (or qemu-img create)"
 *   "disk.img: locked by another process (is another VM using it?) — stop it, or add ,readonly"
 *   "disk.img: permission denied — ... or add ,readonly"
 *   "disk.img: is a directory", "disk.img: cache=none: the filesystem does not support O_DIRECT —
 * use cache=writeback" "disk.img: is empty (0 bytes) — give it a size with `truncate -s 1G
 * disk.img`" The lock covers the whole file (F_OFD_SETLK, start 0, length 0). A file whose size is
 * not a multiple of blk_block_size() is accepted; the tail is not part of the disk.
 */
struct blk *blk_open(const struct blk_opts *opts, char *err, size_t errlen);
void blk_close(struct blk *b); /* all queues must be freed first */

/* Bytes: a block device's size, or a regular file's rounded down to whole blocks. */
uint64_t blk_size(const struct blk *b);
bool blk_readonly(const struct blk *b);
unsigned
blk_block_size(const struct blk *b); /* logical block size for O_DIRECT alignment (512 or 4096) */
/* Writable file whose filesystem punches holes (probed past EOF at open); false for devices. */
bool blk_can_discard(const struct blk *b);
/* Any writable image: fallocate(ZERO_RANGE/PUNCH_HOLE), else writing zeros. */
bool blk_can_write_zeroes(const struct blk *b);
const char *blk_engine_name(const struct blk *b); /* "io_uring" or "threads" */
enum img_format blk_format(const struct blk *b);  /* RAW or QCOW2 */
const char *blk_path(const struct blk *b);

/* A submission context for up to `depth` requests in flight. NULL + err on failure. */
struct blk_queue *blk_queue_new(struct blk *b, unsigned depth, char *err, size_t errlen);
/* Waits for every request in flight (delivering their done() calls), then frees q. */
void blk_queue_free(struct blk_queue *q);
/* An fd that becomes readable (EPOLLIN) when completions are waiting. */
int blk_queue_fd(const struct blk_queue *q);

/*
 * Queues one request. Returns 0 (done() will be called later, never from inside
 * blk_submit), -EAGAIN if `depth` requests are in flight (complete some and retry),
 * -EROFS for a write to a readonly image, -EINVAL for a request outside the image or a
 * bad iovec count, -EOPNOTSUPP for discard/write-zeroes the image cannot do. On an
 * error return done() is not called.
 */
int blk_submit(struct blk_queue *q, struct blk_req *req);
/* Starts everything queued since the last kick. */
void blk_queue_kick(struct blk_queue *q);
/*
 * Delivers finished requests' done() calls; returns how many. Never blocks. done() may
 * blk_submit() and blk_queue_kick(); a nested blk_queue_complete() returns 0, and done()
 * must not drain or free its queue.
 */
unsigned blk_queue_complete(struct blk_queue *q);
/* True if blk_queue_complete() has something to finish, as far as can be told without a
 * syscall (for polling: the io_uring engine looks at its completion ring; the thread
 * pool's completions are only seen through blk_queue_fd()). The queue's thread. */
bool blk_queue_pending(const struct blk_queue *q);
/* Waits until nothing is in flight, delivering completions. */
void blk_queue_drain(struct blk_queue *q);
unsigned blk_queue_inflight(const struct blk_queue *q);

#endif
