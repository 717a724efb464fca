/* virtio_blk.c: block requests from a virtqueue to asynchronous image I/O and back. */
#include "virtio_blk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "iothread.h"
#include "util.h"

/*
 * One request (5.2.6): a chain of
 *   16-byte header (readable): le32 type, le32 reserved, le64 sector
 *   data (readable for OUT/DISCARD/WRITE_ZEROES, writable for IN/GET_ID)
 *   1-byte status (writable): the chain's last byte
 * framed any way the driver likes (VERSION_1 implies ANY_LAYOUT), so header and status
 * are gathered/scattered across segments and the data is what lies between.
 *
 * Flow, all on the device's iothread: a kick pops every available chain, turns it into
 * a struct blk_req on that virtqueue's blk_queue and kicks the batch to the backend in
 * one go; the backend's completion fd brings done() calls, which write the status byte
 * and return the chain; one interrupt per completion batch (if the driver wants it).
 * A chain's head index is unique while it is in flight, so it indexes the request slot.
 */

#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_MQ           12
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

/* Device configuration layout (5.2.4). */
#define CFG_CAPACITY        0
#define CFG_SEG_MAX         12
#define CFG_BLK_SIZE        20
#define CFG_NUM_QUEUES      34
#define CFG_MAX_DISCARD     36
#define CFG_MAX_DISCARD_SEG 40
#define CFG_DISCARD_ALIGN   44
#define CFG_MAX_WZ          48
#define CFG_MAX_WZ_SEG      52
#define CFG_WZ_MAY_UNMAP    56
#define CFG_SIZE            60

#define QUEUE_SIZE 256
#define SUBMITTED  0xff /* start_request(): in the backend's hands */
#define SECTOR     512ull
/* One discard/write-zeroes range per request; at most 4 GiB - 1 sector of it. */
#define MAX_RANGE_SECTORS 0x7fffff

struct vblk_req {
	struct vblk_queue *bq;
	uint16_t head;
	uint8_t *status;  /* in guest RAM */
	uint32_t written; /* bytes for the used element: data read + status */
	uint32_t type;
	struct blk_req br;
	unsigned niov;
	struct iovec iov[VIRTQ_MAX_SEGS];
};

struct vblk_queue {
	struct virtio_blk *vb;
	struct virtio_queue *q;
	struct blk_queue *bq;
	struct vblk_req *reqs; /* QUEUE_SIZE slots, by head */
	unsigned inflight;
};

static struct ratelimit blk_rl = RATELIMIT_INIT;

/* --- scatter/gather over request segments --- */

/* Copies up to len bytes from the start of segs into buf; returns how many. */
static size_t gather(const struct virtq_seg *segs, unsigned n, void *buf, size_t len)
{
	size_t done = 0;

	for (unsigned i = 0; i < n && done < len; i++) {
		size_t k = MIN(segs[i].len, len - done);
		memcpy((uint8_t *)buf + done, segs[i].addr, k);
		done += k;
	}
	return done;
}

/*
 * iov = segs with `skip` bytes dropped from the front and `trim` from the back. Returns
 * the bytes described, or -1 if that needs more than VIRTQ_MAX_SEGS entries (cannot).
 */
static uint64_t segs_to_iov(const struct virtq_seg *segs, unsigned n, uint64_t skip, uint64_t trim,
                            uint64_t total, struct iovec *iov, unsigned *niov)
{
	uint64_t want = total - skip - trim, got = 0;
	unsigned k = 0;

	for (unsigned i = 0; i < n && got < want; i++) {
		uint64_t len = segs[i].len, off = 0;
		if (skip >= len) {
			skip -= len;
			continue;
		}
		off = skip;
		skip = 0;
		len = MIN(len - off, want - got);
		iov[k].iov_base = (uint8_t *)segs[i].addr + off;
		iov[k].iov_len = len;
		k++;
		got += len;
	}
	*niov = k;
	return got;
}

/* --- completion --- */

static void finish(struct vblk_req *r, uint8_t status)
{
	struct vblk_queue *bq = r->bq;

	if (status != VIRTIO_BLK_S_OK)
		atomic_fetch_add_explicit(&bq->vb->stats.errors, 1, memory_order_relaxed);
	*r->status = status;
	virtq_push(&bq->q->vq, r->head, r->written + 1);
}

static void request_done(struct blk_req *br, int64_t ret)
{
	struct vblk_req *r = br->opaque;
	struct virtio_blk *vb = r->bq->vb;

	r->bq->inflight--;
	if (ret < 0) {
		log_ratelimited(&blk_rl, LOG_WARN, "%s: %s at sector %llu failed: %s", vb->name,
		                r->type == VIRTIO_BLK_T_IN ? "read" : "request",
		                (unsigned long long)(br->offset / SECTOR), strerror((int)-ret));
		if (ret != -EINVAL) { /* a host failure, not a bad request */
			char msg[160];
			snprintf(msg, sizeof(msg), "%s at sector %llu failed: %s",
			         r->type == VIRTIO_BLK_T_IN ? "read" : "request",
			         (unsigned long long)(br->offset / SECTOR), strerror((int)-ret));
			virtio_report_error(&vb->vdev, "io-error", msg);
		}
		r->written = 0;
		finish(r, VIRTIO_BLK_S_IOERR);
		return;
	}
	finish(r, VIRTIO_BLK_S_OK);
}

static void completions_ready(void *opaque, uint32_t events)
{
	struct vblk_queue *bq = opaque;

	(void)events;
	if (blk_queue_complete(bq->bq))
		virtio_queue_interrupt(bq->q);
}

/* While the iothread polls (iothread.h): completions seen in the ring, no fd read. */
static bool completions_pending(void *opaque)
{
	struct vblk_queue *bq = opaque;

	return blk_queue_pending(bq->bq);
}

static void completions_polled(void *opaque)
{
	completions_ready(opaque, 0);
}

/* --- submission --- */

/* Checks [sector, +bytes) lies in the disk. */
static bool in_range(struct virtio_blk *vb, uint64_t sector, uint64_t bytes)
{
	uint64_t cap = vb->capacity * SECTOR;

	return sector < vb->capacity && bytes <= cap - sector * SECTOR;
}

/* Fills r->br for a discard/write-zeroes request from its one range segment. */
static uint8_t prepare_range(struct vblk_req *r, const struct virtq_req *req)
{
	struct virtio_blk *vb = r->bq->vb;
	uint8_t seg[16 + 16];
	uint64_t sector;
	uint32_t n, flags;

	if (req->out_bytes != 32 || gather(req->out, req->nout, seg, 32) != 32)
		return VIRTIO_BLK_S_IOERR; /* exactly one range (max_*_seg = 1) */
	sector = get_le64(seg + 16);
	n = get_le32(seg + 24);
	flags = get_le32(seg + 28);
	if (n == 0 || n > MAX_RANGE_SECTORS || !in_range(vb, sector, n * SECTOR) || (flags & ~1u))
		return VIRTIO_BLK_S_IOERR;
	r->br.op = r->type == VIRTIO_BLK_T_DISCARD ? BLK_OP_DISCARD : BLK_OP_WRITE_ZEROES;
	r->br.offset = sector * SECTOR;
	r->br.len = (uint64_t)n * SECTOR;
	r->br.unmap = flags & 1;
	return VIRTIO_BLK_S_OK;
}

/* Turns a popped chain into a backend request; returns a status to finish it with
 * at once, or SUBMITTED. */
static uint8_t start_request(struct vblk_queue *bq, struct vblk_req *r, const struct virtq_req *req)
{
	struct virtio_blk *vb = bq->vb;
	uint8_t hdr[16];
	uint64_t sector, bytes;

	if (gather(req->out, req->nout, hdr, 16) != 16)
		return VIRTIO_BLK_S_IOERR; /* no complete header */
	r->type = get_le32(hdr);
	sector = get_le64(hdr + 8);
	r->br = (struct blk_req){.done = request_done, .opaque = r, .iov = r->iov};
	switch (r->type) {
	case VIRTIO_BLK_T_IN:
		bytes = segs_to_iov(req->in, req->nin, 0, 1, req->in_bytes, r->iov, &r->niov);
		if (bytes % SECTOR || !in_range(vb, sector, bytes))
			return VIRTIO_BLK_S_IOERR;
		r->br.op = BLK_OP_READ;
		r->written = (uint32_t)bytes;
		atomic_fetch_add_explicit(&vb->stats.reads, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&vb->stats.read_bytes, bytes, memory_order_relaxed);
		break;
	case VIRTIO_BLK_T_OUT:
		if (vb->readonly)
			return VIRTIO_BLK_S_IOERR;
		bytes = segs_to_iov(req->out, req->nout, 16, 0, req->out_bytes, r->iov, &r->niov);
		if (bytes % SECTOR || !in_range(vb, sector, bytes))
			return VIRTIO_BLK_S_IOERR;
		r->br.op = BLK_OP_WRITE;
		atomic_fetch_add_explicit(&vb->stats.writes, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&vb->stats.write_bytes, bytes, memory_order_relaxed);
		break;
	case VIRTIO_BLK_T_FLUSH:
		r->br.op = BLK_OP_FLUSH;
		atomic_fetch_add_explicit(&vb->stats.flushes, 1, memory_order_relaxed);
		break;
	case VIRTIO_BLK_T_GET_ID: {
		struct iovec iov[VIRTQ_MAX_SEGS];
		unsigned n;
		size_t done = 0, len = strnlen(vb->serial, VIRTIO_BLK_SERIAL_LEN);
		/* Up to 20 bytes, NUL-padded only if shorter (5.2.6.1). */
		bytes = segs_to_iov(req->in, req->nin, 0, 1, req->in_bytes, iov, &n);
		for (unsigned i = 0; i < n && done < VIRTIO_BLK_SERIAL_LEN; i++) {
			size_t k = MIN(iov[i].iov_len, VIRTIO_BLK_SERIAL_LEN - done);
			memset(iov[i].iov_base, 0, k);
			memcpy(iov[i].iov_base, vb->serial + done,
			       done < len ? MIN(k, len - done) : 0);
			done += k;
		}
		r->written = (uint32_t)done;
		return VIRTIO_BLK_S_OK;
	}
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES: {
		bool dz = r->type == VIRTIO_BLK_T_DISCARD;
		uint8_t st;
		if (vb->readonly ||
		    !(dz ? virtio_has_feature(&vb->vdev, VIRTIO_BLK_F_DISCARD)
		         : virtio_has_feature(&vb->vdev, VIRTIO_BLK_F_WRITE_ZEROES)))
			return vb->readonly ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_UNSUPP;
		st = prepare_range(r, req);
		if (st != VIRTIO_BLK_S_OK)
			return st;
		atomic_fetch_add_explicit(&vb->stats.discards, 1, memory_order_relaxed);
		break;
	}
	default:
		return VIRTIO_BLK_S_UNSUPP;
	}
	r->br.offset = sector * SECTOR;
	r->br.iovcnt = r->niov;
	if ((r->br.op == BLK_OP_READ || r->br.op == BLK_OP_WRITE) && r->niov == 0)
		return VIRTIO_BLK_S_OK; /* zero-length transfer */
	int ret = blk_submit(bq->bq, &r->br);
	if (ret < 0) {
		log_ratelimited(&blk_rl, LOG_WARN, "%s: request type %u at sector %llu refused: %s",
		                vb->name, r->type, (unsigned long long)sector, strerror(-ret));
		return ret == -EOPNOTSUPP ? VIRTIO_BLK_S_UNSUPP : VIRTIO_BLK_S_IOERR;
	}
	bq->inflight++;
	return SUBMITTED;
}

static void blk_notify(struct virtio_dev *d, unsigned qi)
{
	struct virtio_blk *vb = container_of(d, struct virtio_blk, vdev);
	struct vblk_queue *bq = &vb->queues[qi];
	struct virtio_queue *q = &d->q[qi];
	struct virtq_req req;
	bool submitted = false;
	int r;

	for (;;) {
		virtq_disable_notify(&q->vq);
		while ((r = virtq_pop(&q->vq, &req)) != 0) {
			struct vblk_req *vr;
			uint8_t st;
			if (r < 0) {
				if (q->vq.broken)
					break;
				continue;
			}
			if (req.in_bytes < 1) {
				log_ratelimited(&blk_rl, LOG_WARN,
				                "%s: request without a status byte", vb->name);
				virtq_push(&q->vq, req.head, 0);
				continue;
			}
			vr = &bq->reqs[req.head];
			vr->bq = bq;
			vr->head = req.head;
			vr->written = 0;
			vr->status =
			    (uint8_t *)req.in[req.nin - 1].addr + req.in[req.nin - 1].len - 1;
			st = start_request(bq, vr, &req);
			if (st == SUBMITTED)
				submitted = true;
			else
				finish(vr, st);
		}
		if (q->vq.broken) {
			virtio_set_needs_reset(d);
			break;
		}
		if (!virtq_enable_notify(&q->vq))
			break;
	}
	if (submitted) {
		blk_queue_kick(bq->bq);
		/* Requests the kernel finished during the submit (page-cache hits) complete
		 * now, under the same interrupt, not after another trip through epoll; when
		 * none did (O_DIRECT, the thread pool), this costs no syscall. */
		if (blk_queue_pending(bq->bq))
			blk_queue_complete(bq->bq);
	}
	virtio_queue_interrupt(q);
}

/* --- device config, lifecycle --- */

static void blk_cfg_read(struct virtio_dev *d, uint32_t off, void *data, unsigned len)
{
	struct virtio_blk *vb = container_of(d, struct virtio_blk, vdev);
	uint8_t c[CFG_SIZE] = {0};

	put_le64(c + CFG_CAPACITY, vb->capacity);
	put_le32(c + CFG_SEG_MAX, VIRTQ_MAX_SEGS - 2);
	put_le32(c + CFG_BLK_SIZE, blk_block_size(vb->blk));
	put_le16(c + CFG_NUM_QUEUES, (uint16_t)vb->nqueues);
	put_le32(c + CFG_MAX_DISCARD, MAX_RANGE_SECTORS);
	put_le32(c + CFG_MAX_DISCARD_SEG, 1);
	put_le32(c + CFG_DISCARD_ALIGN, blk_block_size(vb->blk) / SECTOR);
	put_le32(c + CFG_MAX_WZ, MAX_RANGE_SECTORS);
	put_le32(c + CFG_MAX_WZ_SEG, 1);
	c[CFG_WZ_MAY_UNMAP] = blk_can_discard(vb->blk);
	memcpy(data, c + off, len);
}

/* Reset: let the backend finish what is in flight (its done() calls return the chains). */
static void blk_reset(struct virtio_dev *d)
{
	struct virtio_blk *vb = container_of(d, struct virtio_blk, vdev);

	for (unsigned i = 0; i < vb->nqueues; i++)
		if (vb->queues[i].inflight)
			blk_queue_drain(vb->queues[i].bq);
}

struct quiesce_flush {
	int64_t ret;
	bool done;
};

static void quiesce_flush_done(struct blk_req *br, int64_t ret)
{
	struct quiesce_flush *f = br->opaque;

	f->ret = ret;
	f->done = true;
}

/* Snapshot: every request completed into its used ring, then the image flushed. */
static void blk_quiesce(struct virtio_dev *d)
{
	struct virtio_blk *vb = container_of(d, struct virtio_blk, vdev);
	struct vblk_queue *bq0 = &vb->queues[0];
	struct quiesce_flush f = {0};
	struct blk_req br = {.op = BLK_OP_FLUSH, .done = quiesce_flush_done, .opaque = &f};
	int r;

	for (unsigned i = 0; i < vb->nqueues; i++) {
		struct vblk_queue *bq = &vb->queues[i];
		if (bq->inflight) {
			blk_queue_drain(bq->bq); /* done() pushes each chain */
			virtio_queue_interrupt(bq->q);
		}
	}
	/* What a FLUSH request does (for qcow2, cached metadata is written too). */
	r = blk_submit(bq0->bq, &br);
	if (r == 0) {
		blk_queue_kick(bq0->bq);
		blk_queue_drain(bq0->bq);
		r = !f.done ? -EIO : f.ret < 0 ? (int)f.ret : 0;
	}
	if (r < 0)
		log_err("%s: flushing %s for the snapshot failed: %s", vb->name, blk_path(vb->blk),
		        strerror(-r));
	vb->quiesce_err = r;
}

static const struct virtio_dev_ops blk_ops = {.cfg_read = blk_cfg_read,
                                              .queue_notify = blk_notify,
                                              .reset = blk_reset,
                                              .quiesce = blk_quiesce};

static void free_queues(struct virtio_blk *vb)
{
	for (unsigned i = 0; vb->queues && i < vb->nqueues; i++) {
		struct vblk_queue *bq = &vb->queues[i];
		if (bq->bq) {
			if (vb->vdev.io) {
				iothread_del(vb->vdev.io, blk_queue_fd(bq->bq));
				iothread_del_poller(vb->vdev.io, bq);
			}
			blk_queue_free(bq->bq);
		}
		free(bq->reqs);
	}
	free(vb->queues);
	vb->queues = NULL;
}

int virtio_blk_create(struct virtio_blk *vb, unsigned index, const struct disk_config *dc,
                      struct hv *hv, const struct guest_mem *mem, struct pci_bus *bus, char *err,
                      size_t errlen)
{
	uint64_t features = 1ull << VIRTIO_BLK_F_SEG_MAX | 1ull << VIRTIO_BLK_F_BLK_SIZE |
	                    1ull << VIRTIO_BLK_F_FLUSH;
	struct virtio_pci_params p = {
	    .device_id = VIRTIO_ID_BLOCK,
	    .pci_class = 0x010000,
	    .queue_size = QUEUE_SIZE,
	    .cfg_size = CFG_SIZE,
	    .ops = &blk_ops,
	    .poll = true,
	};
	int r;

	memset(vb, 0, sizeof(*vb));
	snprintf(vb->name, sizeof(vb->name), "virtio-blk%u", index);
	vb->blk = dc->blk;
	vb->readonly = blk_readonly(dc->blk);
	vb->capacity = blk_size(dc->blk) / SECTOR;
	memcpy(vb->serial, dc->serial, VIRTIO_BLK_SERIAL_LEN);
	vb->nqueues = dc->queues ? dc->queues : 1;
	if (vb->readonly)
		features |= 1ull << VIRTIO_BLK_F_RO;
	if (vb->nqueues > 1)
		features |= 1ull << VIRTIO_BLK_F_MQ;
	if (!vb->readonly && blk_can_discard(dc->blk))
		features |= 1ull << VIRTIO_BLK_F_DISCARD;
	if (!vb->readonly && blk_can_write_zeroes(dc->blk))
		features |= 1ull << VIRTIO_BLK_F_WRITE_ZEROES;
	p.name = vb->name;
	p.features = features;
	p.nqueues = vb->nqueues;

	vb->queues = calloc(vb->nqueues, sizeof(*vb->queues));
	if (!vb->queues)
		goto nomem;
	for (unsigned i = 0; i < vb->nqueues; i++) {
		struct vblk_queue *bq = &vb->queues[i];
		bq->vb = vb;
		bq->reqs = calloc(QUEUE_SIZE, sizeof(*bq->reqs));
		if (!bq->reqs)
			goto nomem;
		bq->bq = blk_queue_new(dc->blk, QUEUE_SIZE, err, errlen);
		if (!bq->bq) {
			free_queues(vb);
			return -EIO;
		}
	}
	r = virtio_pci_init(&vb->vdev, &p, hv, mem, bus, err, errlen);
	if (r < 0) {
		free_queues(vb);
		return r;
	}
	for (unsigned i = 0; i < vb->nqueues; i++) {
		struct vblk_queue *bq = &vb->queues[i];
		bq->q = &vb->vdev.q[i];
		r = iothread_add(vb->vdev.io, blk_queue_fd(bq->bq), EPOLLIN, completions_ready, bq);
		if (r == 0)
			r = iothread_add_poller(
			    vb->vdev.io, &(struct iothread_poller){.ready = completions_pending,
			                                           .run = completions_polled,
			                                           .opaque = bq});
		if (r < 0) {
			snprintf(err, errlen, "%s: cannot watch I/O completions: %s", vb->name,
			         strerror(-r));
			virtio_blk_destroy(vb);
			return r;
		}
	}
	return 0;
nomem:
	free_queues(vb);
	snprintf(err, errlen, "%s: out of memory", vb->name);
	return -ENOMEM;
}

static void del_watches(void *opaque)
{
	struct virtio_blk *vb = opaque;

	for (unsigned i = 0; i < vb->nqueues; i++) {
		iothread_del(vb->vdev.io, blk_queue_fd(vb->queues[i].bq));
		iothread_del_poller(vb->vdev.io, &vb->queues[i]);
	}
}

void virtio_blk_destroy(struct virtio_blk *vb)
{
	if (vb->vdev.io)
		iothread_call(vb->vdev.io, del_watches, vb);
	virtio_pci_destroy(&vb->vdev); /* resets: drains in-flight I/O */
	free_queues(vb);
}

int virtio_blk_save(struct virtio_blk *vb, struct snap_writer *w, uint32_t inst)
{
	if (vb->quiesce_err)
		return vb->quiesce_err;
	return virtio_pci_save(&vb->vdev, w, VIRTIO_PCI_STATE_INST(VIRTIO_ID_BLOCK, inst));
}

int virtio_blk_load(struct virtio_blk *vb, const struct snap_reader *r, uint32_t inst, char *err,
                    size_t errlen)
{
	return virtio_pci_load(&vb->vdev, r, VIRTIO_PCI_STATE_INST(VIRTIO_ID_BLOCK, inst), err,
	                       errlen);
}
