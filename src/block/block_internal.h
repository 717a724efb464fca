/* block_internal.h: what block.c shares with its two I/O engines (aio_uring.c, aio_threads.c). */
#ifndef VMSTACK_BLOCK_INTERNAL_H
#define VMSTACK_BLOCK_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "block.h"

/*
 * The front end (block.c) owns the image, the queue and its slots, and knows what each
 * request means; an engine only turns `struct blk_io` (one system call) into a syscall or
 * an SQE and reports the result. A request's life:
 *
 *	blk_submit()   takes a free slot, engine->start() -> blk_slot_first() -> first blk_io
 *	engine         runs the blk_io, then blk_slot_next(res): another blk_io (short transfer,
 *	               EINTR, the next write-zeroes method) or finished with slot->ret
 *	engine->reap() on the queue's thread: blk_slot_finish() frees the slot, calls done()
 *
 * Nothing here allocates after blk_queue_new(): a short transfer is continued first with
 * the rest of the iovec it stopped in (slot->one_iov), then with the request's remaining
 * iovecs as they are.
 */

/* Write-zeroes methods a filesystem refused once; later requests skip them (blk.bad_methods). */
#define BLK_BAD_ZERO_RANGE (1u << 0)
#define BLK_BAD_PUNCH_HOLE (1u << 1)

struct blk {
	char *path;
	int fd;
	bool readonly;
	bool is_bdev;
	bool can_discard;
	bool can_write_zeroes;
	unsigned block_size;
	uint64_t size; /* what blk_size() reports: rounded down to 512 bytes */
	const struct blk_engine *engine;
	unsigned bad_methods; /* BLK_BAD_*; atomic: any queue's thread may set one */
	unsigned nqueues;     /* atomic; blk_close() checks it is 0 */
	struct img *img;      /* qcow2: the image (fd is img_fd(img)); NULL for raw */
};

/* One request in flight. A queue preallocates `depth` of them, so submitting never mallocs. */
struct blk_slot {
	struct blk_req *req;
	struct blk_slot *next; /* the queue's free list, or an engine's list while in flight */
	uint64_t base;         /* where the request starts in the file (qcow2: host offset) */
	uint64_t total;        /* READ/WRITE: sum of iov lengths; WRITE_ZEROES: req->len */
	uint64_t done;         /* bytes transferred so far (short transfers, writing zeros) */
	int64_t ret;           /* the result for done(), once blk_slot_next() returned false */
	uint8_t stage;         /* WRITE_ZEROES: index of the method being tried */
	uint8_t retries;       /* EINTR/EAGAIN retries of the current call */
	struct iovec one_iov;  /* the rest of a partly transferred iovec, or the zero buffer */
};

struct blk_queue {
	struct blk *blk;
	unsigned depth;
	unsigned inflight; /* submitted and not yet handed to done() */
	bool completing;   /* inside blk_queue_complete(): a nested call from done() returns 0 */
	int efd;           /* eventfd, readable when completions wait (blk_queue_fd) */
	struct blk_slot *slots;
	struct blk_slot *free;
	struct blk_slot *sync_done; /* finished synchronously (qcow2 slow path), LIFO */
	void *priv;                 /* the engine's per-queue state */
};

enum blk_io_kind {
	BLK_IO_NOP, /* nothing to do (zero-length discard/write-zeroes): result 0 */
	BLK_IO_READ,
	BLK_IO_WRITE,
	BLK_IO_FDATASYNC,
	BLK_IO_FALLOCATE,
};

/* One system call: preadv/pwritev(iov, iovcnt, offset), fdatasync, fallocate(mode, offset, len). */
struct blk_io {
	enum blk_io_kind kind;
	int mode;
	uint64_t offset;
	uint64_t len;
	const struct iovec *iov; /* the request's own, or the slot's one_iov */
	unsigned iovcnt;
};

struct blk_engine {
	const char *name;
	/* Sets up q->priv; q->efd, q->slots and q->depth are ready. */
	int (*init)(struct blk_queue *q, char *err, size_t errlen);
	/* Nothing is in flight any more. */
	void (*fini)(struct blk_queue *q);
	/* Queues s (req and total set) for the next kick; must not call done(). */
	void (*start)(struct blk_queue *q, struct blk_slot *s);
	void (*kick)(struct blk_queue *q);
	/* Hands finished slots to blk_slot_finish(); returns how many. Never blocks. */
	unsigned (*reap)(struct blk_queue *q);
	/* Optional: true if reap() would find something (a look at memory, no syscall). */
	bool (*pending)(const struct blk_queue *q);
};

extern const struct blk_engine blk_engine_uring;
extern const struct blk_engine blk_engine_threads;

/* 0 if io_uring works here with every opcode we use; else -errno and the reason in why. */
int blk_uring_probe(char *why, size_t whylen);

/* Resets s (req, base and total set) and gives its first call. */
void blk_slot_first(struct blk *b, struct blk_slot *s, struct blk_io *io);
/* Accounts res (bytes or -errno) of the last call; gives the next, or false when finished. */
bool blk_slot_next(struct blk *b, struct blk_slot *s, int64_t res, struct blk_io *io);
/* Returns s to the free list and calls its req's done(req, s->ret). Queue thread only. */
void blk_slot_finish(struct blk_queue *q, struct blk_slot *s);

#endif
