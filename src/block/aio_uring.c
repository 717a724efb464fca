/* aio_uring.c: the io_uring engine: one ring per blk_queue, completions signalled by eventfd. */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block_internal.h"
#include "log.h"

/*
 * Each blk_queue owns a ring of `depth` SQ entries and the default 2*depth CQ entries. A
 * slot in flight holds at most one SQE or CQE, so a free slot always finds a free SQE and
 * the CQ cannot overflow. blk_submit() fills an SQE at once (READ/WRITE for one iovec,
 * READV/WRITEV otherwise, FSYNC with DATASYNC, FALLOCATE); blk_queue_kick() hands the
 * batch to the kernel in one io_uring_enter(). The image fd is registered as fixed file 0
 * when the kernel allows, saving a file table lookup per request.
 *
 * The kernel signals the queue's eventfd with each CQE (io_uring_register_eventfd).
 * reap() copies the CQEs out and releases them before it continues (resubmits) or
 * finishes any request, so a done() that submits and kicks meets a consistent ring. No
 * locks: a ring is touched by its queue's thread only.
 */

struct uring_cqe_copy {
	struct blk_slot *slot;
	int32_t res;
};

struct blk_uring {
	struct io_uring ring;
	int fd;            /* as the SQEs name the image: fixed file 0, or the fd itself */
	uint8_t sqe_flags; /* IOSQE_FIXED_FILE when the fd is registered */
	struct ratelimit rl;
	struct uring_cqe_copy *batch; /* depth entries */
};

/* --- can io_uring be used here? (probed once per process) --- */

static const struct {
	int op;
	const char *name;
} uring_ops[] = {
    {IORING_OP_NOP, "NOP"},
    {IORING_OP_READ, "READ"},
    {IORING_OP_WRITE, "WRITE"},
    {IORING_OP_READV, "READV"},
    {IORING_OP_WRITEV, "WRITEV"},
    {IORING_OP_FSYNC, "FSYNC"},
    {IORING_OP_FALLOCATE, "FALLOCATE"},
};

static pthread_once_t uring_probe_once = PTHREAD_ONCE_INIT;
static int uring_probe_err;
static char uring_probe_why[160];

static void uring_probe_run(void)
{
	struct io_uring_probe *probe;
	struct io_uring ring;
	int r = io_uring_queue_init(2, &ring, 0);

	if (r < 0) {
		uring_probe_err = r;
		if (r == -ENOSYS)
			snprintf(uring_probe_why, sizeof(uring_probe_why),
			         "the kernel has no io_uring (CONFIG_IO_URING)");
		else if (r == -EPERM)
			snprintf(
			    uring_probe_why, sizeof(uring_probe_why),
			    "io_uring_setup is not permitted (sysctl kernel.io_uring_disabled, "
			    "or a seccomp filter)");
		else
			snprintf(uring_probe_why, sizeof(uring_probe_why), "io_uring_setup: %s",
			         strerror(-r));
		return;
	}
	probe = io_uring_get_probe_ring(&ring);
	for (size_t i = 0; i < sizeof(uring_ops) / sizeof(uring_ops[0]); i++) {
		if (probe && io_uring_opcode_supported(probe, uring_ops[i].op))
			continue;
		uring_probe_err = -EOPNOTSUPP;
		snprintf(uring_probe_why, sizeof(uring_probe_why),
		         "the kernel's io_uring lacks IORING_OP_%s (needs Linux 5.6)",
		         uring_ops[i].name);
		break;
	}
	io_uring_free_probe(probe);
	io_uring_queue_exit(&ring);
}

int blk_uring_probe(char *why, size_t whylen)
{
	pthread_once(&uring_probe_once, uring_probe_run);
	if (uring_probe_err)
		snprintf(why, whylen, "%s", uring_probe_why);
	return uring_probe_err;
}

/* --- the engine (the queue's thread) --- */

static void uring_submit(struct blk_queue *q)
{
	struct blk_uring *u = q->priv;

	while (io_uring_sq_ready(&u->ring)) {
		int r = io_uring_submit(&u->ring);

		if (r == -EINTR || r > 0)
			continue;
		/* Left in the SQ ring: the next kick or completion submits them again. */
		if (r < 0)
			log_ratelimited(&u->rl, LOG_WARN, "%s: io_uring_submit: %s", q->blk->path,
			                strerror(-r));
		return;
	}
}

static void uring_prep(struct blk_queue *q, struct blk_slot *s, const struct blk_io *io)
{
	struct blk_uring *u = q->priv;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	const struct iovec *v = io->iov;

	if (!sqe) {
		/* Cannot happen (one SQE per slot, depth slots); be safe anyway. */
		uring_submit(q);
		sqe = io_uring_get_sqe(&u->ring);
		if (!sqe)
			abort();
	}
	switch (io->kind) {
	case BLK_IO_NOP:
		io_uring_prep_nop(sqe);
		break;
	case BLK_IO_READ:
		if (io->iovcnt == 1 && v->iov_len <= UINT32_MAX)
			io_uring_prep_read(sqe, u->fd, v->iov_base, (unsigned)v->iov_len,
			                   io->offset);
		else
			io_uring_prep_readv(sqe, u->fd, v, io->iovcnt, io->offset);
		break;
	case BLK_IO_WRITE:
		if (io->iovcnt == 1 && v->iov_len <= UINT32_MAX)
			io_uring_prep_write(sqe, u->fd, v->iov_base, (unsigned)v->iov_len,
			                    io->offset);
		else
			io_uring_prep_writev(sqe, u->fd, v, io->iovcnt, io->offset);
		break;
	case BLK_IO_FDATASYNC:
		io_uring_prep_fsync(sqe, u->fd, IORING_FSYNC_DATASYNC);
		break;
	case BLK_IO_FALLOCATE:
		io_uring_prep_fallocate(sqe, u->fd, io->mode, (off_t)io->offset, (off_t)io->len);
		break;
	}
	if (io->kind != BLK_IO_NOP)
		sqe->flags |= u->sqe_flags;
	io_uring_sqe_set_data(sqe, s);
}

static int uring_init(struct blk_queue *q, char *err, size_t errlen)
{
	struct blk_uring *u = calloc(1, sizeof(*u));
	const char *p = q->blk->path;
	int r;

	if (!u || !(u->batch = calloc(q->depth, sizeof(*u->batch)))) {
		snprintf(err, errlen, "%s: out of memory", p);
		free(u);
		return -ENOMEM;
	}
	u->rl.interval_ms = 5000;
	u->rl.burst = 5;
	r = io_uring_queue_init(q->depth, &u->ring, 0);
	if (r < 0) {
		snprintf(err, errlen, "%s: io_uring of depth %u: %s%s", p, q->depth, strerror(-r),
		         r == -ENOMEM ? " — raise the locked-memory limit (ulimit -l) or use "
		                        "aio=threads"
		                      : "");
		goto fail;
	}
	r = io_uring_register_eventfd(&u->ring, q->efd);
	if (r < 0) {
		snprintf(err, errlen, "%s: io_uring_register_eventfd: %s", p, strerror(-r));
		io_uring_queue_exit(&u->ring);
		goto fail;
	}
	if (io_uring_register_files(&u->ring, &q->blk->fd, 1) == 0) {
		u->fd = 0;
		u->sqe_flags = IOSQE_FIXED_FILE;
	} else {
		u->fd = q->blk->fd;
	}
	q->priv = u;
	return 0;
fail:
	free(u->batch);
	free(u);
	return r;
}

static void uring_fini(struct blk_queue *q)
{
	struct blk_uring *u = q->priv;

	/* The ring is torn down asynchronously, and a registered file would keep the image's
	 * open file description, and so its lock, alive a while after blk_close(). */
	if (u->sqe_flags & IOSQE_FIXED_FILE)
		io_uring_unregister_files(&u->ring);
	io_uring_queue_exit(&u->ring);
	free(u->batch);
	free(u);
	q->priv = NULL;
}

static void uring_start(struct blk_queue *q, struct blk_slot *s)
{
	struct blk_io io;

	blk_slot_first(q->blk, s, &io);
	uring_prep(q, s, &io);
}

static void uring_kick(struct blk_queue *q)
{
	uring_submit(q);
}

static unsigned uring_reap(struct blk_queue *q)
{
	struct blk_uring *u = q->priv;
	struct io_uring_cqe *cqe;
	unsigned head, n = 0, finished = 0;
	bool resubmit = false;

	io_uring_for_each_cqe(&u->ring, head, cqe)
	{
		if (n == q->depth)
			break;
		u->batch[n].slot = io_uring_cqe_get_data(cqe);
		u->batch[n].res = cqe->res;
		n++;
	}
	io_uring_cq_advance(&u->ring, n);

	for (unsigned i = 0; i < n; i++) {
		struct blk_slot *s = u->batch[i].slot;
		struct blk_io io;

		if (blk_slot_next(q->blk, s, u->batch[i].res, &io)) {
			uring_prep(q, s, &io);
			resubmit = true;
		} else {
			blk_slot_finish(q, s);
			finished++;
		}
	}
	if (resubmit)
		uring_submit(q);
	return finished;
}

static bool uring_pending(const struct blk_queue *q)
{
	const struct blk_uring *u = q->priv;

	return io_uring_cq_ready(&u->ring) != 0;
}

const struct blk_engine blk_engine_uring = {
    .name = "io_uring",
    .init = uring_init,
    .fini = uring_fini,
    .start = uring_start,
    .kick = uring_kick,
    .reap = uring_reap,
    .pending = uring_pending,
};
