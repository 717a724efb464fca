/* virtq.h: the device side of a virtio 1.x split virtqueue (Virtio 1.2 section 2.7). */
#ifndef VMSTACK_VIRTQ_H
#define VMSTACK_VIRTQ_H

#include <stdbool.h>
#include <stdint.h>

#include "log.h"

struct guest_mem;

/*
 * A split virtqueue is three areas of guest RAM, placed by the driver anywhere it likes
 * (all little-endian; size N is a power of two, at most 32768):
 *
 *   descriptor table (desc_gpa, 16-byte aligned, 16*N bytes), written by the driver
 *   +------------------+---------+---------+---------+
 *   | addr (u64, gpa)  | len u32 | flags16 | next u16|  x N; NEXT chains entries,
 *   +------------------+---------+---------+---------+  WRITE = device writes the buffer,
 *                                                       INDIRECT = buffer is a table of these
 *
 *   available ring (avail_gpa, 2-byte aligned, 6+2*N bytes), written by the driver
 *   +-------+-------+-----------------------------+------------+
 *   | flags |  idx  | ring[N]: heads of chains    | used_event |
 *   +-------+-------+-----------------------------+------------+
 *
 *   used ring (used_gpa, 4-byte aligned, 6+8*N bytes), written by the device (us)
 *   +-------+-------+-----------------------------+-------------+
 *   | flags |  idx  | ring[N]: {u32 id, u32 len}  | avail_event |
 *   +-------+-------+-----------------------------+-------------+
 *
 * The idx fields are free-running 16-bit counters; slot = idx % N. The driver puts a head
 * in avail->ring[avail->idx % N] and then bumps avail->idx; we consume entries from
 * last_avail up to avail->idx, and return each chain by writing {head, bytes written} to
 * used->ring[used_idx % N] before publishing used->idx.
 *
 *     driver                        device thread (this module)
 *     ------                        ---------------------------
 *     add chain, avail->idx++  -->  virtq_pop()       chain -> struct virtq_req
 *     kick (if not suppressed)      ...process req->out[] / req->in[]...
 *                                   virtq_push()      used elem, used->idx++
 *     interrupt <-------------      virtq_should_notify()
 *
 * Threading: a struct virtq belongs to one thread at a time (the device's queue thread,
 * or whoever holds the device lock). The driver runs concurrently on guest vCPUs; all
 * accesses to the rings are single atomic loads and stores with the barriers of 2.7.13
 * and 2.7.14. This module assumes a little-endian host (x86), as virtio 1.x is LE.
 *
 * Errors (the guest is hostile; nothing here crashes or asserts on guest data, and every
 * problem is logged through q->rl):
 *  - a malformed chain (bad next index, loop, too many segments, buffer outside RAM,
 *    readable after writable, bad or unnegotiated indirect table, over 4 GiB in total)
 *    fails that request only: virtq_pop() consumes it, returns it to the driver as used
 *    with len 0 (so the driver gets its descriptors back) and returns -EIO. The queue
 *    keeps working; the caller should still run virtq_should_notify().
 *  - a corrupt ring (avail->idx more than N ahead of what we consumed, or a head index
 *    >= N, which cannot even be returned) sets q->broken: every later virtq_pop() returns
 *    -EIO and nothing more is written to the rings. The transport should then set
 *    DEVICE_NEEDS_RESET (2.1.2); virtq_init() after the reset makes the queue usable again.
 *  - zero-length descriptors are allowed and skipped: never translated, never in out[] or
 *    in[], but they count against loops and must keep readable-before-writable order.
 *
 * Limits of a walk: the ring's table is walked at most N steps, an indirect table at most
 * its entry count (len/16, at most VIRTQ_MAX_SIZE); so a hostile chain costs bounded time.
 */

#define VIRTQ_MAX_SIZE 32768

/* Most non-empty segments per direction in one request; longer chains are failed. 256, so
 * virtio-blk can offer seg_max 254 as QEMU does for 256-entry queues: Linux then splits a
 * 1 MiB O_DIRECT transfer of 256 scattered pages in two requests, not three. */
#define VIRTQ_MAX_SEGS 256

/* struct virtq_desc.flags (2.7.5) */
#define VIRTQ_DESC_F_NEXT     1
#define VIRTQ_DESC_F_WRITE    2
#define VIRTQ_DESC_F_INDIRECT 4

/* struct virtq_avail.flags: the driver wants no used-buffer interrupts (2.7.7). */
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
/* struct virtq_used.flags: we want no available-buffer kicks (2.7.10). */
#define VIRTQ_USED_F_NO_NOTIFY 1

/* The guest-visible layouts, as in the spec. */
struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct virtq_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[]; /* N entries, then uint16_t used_event (with EVENT_IDX) */
};

struct virtq_used_elem {
	uint32_t id;  /* head of the returned chain */
	uint32_t len; /* bytes the device wrote into its writable buffers */
};

struct virtq_used {
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[]; /* N entries, then uint16_t avail_event (with EVENT_IDX) */
};

/* What the transport learnt from the driver before it enabled the queue. */
struct virtq_config {
	const char *name; /* for log lines, e.g. "virtio-blk0 q0"; must outlive the queue */
	uint16_t size;    /* queue size N: a power of two, 1..VIRTQ_MAX_SIZE */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	bool event_idx; /* VIRTIO_F_EVENT_IDX negotiated */
	bool indirect;  /* VIRTIO_F_INDIRECT_DESC negotiated */
};

/* One queue. Zero-initialised it is "not enabled": virtq_pop() finds it empty. */
struct virtq {
	const struct guest_mem *mem;
	const char *name;
	uint16_t size;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	bool event_idx;
	bool indirect;
	/* Host views of the three areas, checked once by virtq_init(). */
	struct virtq_desc *desc;
	struct virtq_avail *avail;
	struct virtq_used *used;

	uint16_t last_avail;  /* next avail index to consume */
	uint16_t avail_idx;   /* avail->idx when last read (acquire) */
	uint16_t used_idx;    /* our copy of used->idx */
	uint32_t unsignalled; /* pushes since the last virtq_should_notify() */
	bool notify_enabled;  /* kicks wanted: see virtq_enable_notify() */
	bool polling;         /* between virtq_poll_begin() and _end() */
	bool broken;          /* ring corrupt: device should enter NEEDS_RESET */
	struct ratelimit rl;
};

/* A buffer of the request, translated to host memory (guest RAM, shared with the guest). */
struct virtq_seg {
	void *addr;
	uint32_t len; /* never 0: empty descriptors are skipped */
};

/*
 * One popped request: the chain's device-readable buffers in out[] and device-writable
 * buffers in in[], in chain order (2.7.5: all readable ones come first). The guest can
 * change the buffers' contents at any time, so a device must copy whatever it validates
 * (a request header, say) before using it. out_bytes + in_bytes <= 4 GiB.
 */
struct virtq_req {
	uint16_t head; /* give this to virtq_push() */
	unsigned nout, nin;
	uint64_t out_bytes, in_bytes;
	struct virtq_seg out[VIRTQ_MAX_SEGS];
	struct virtq_seg in[VIRTQ_MAX_SEGS];
};

/*
 * Enables q from cfg once the driver has set the queue up (queue_enable = 1). Checks
 * that size is a power of two and each area is aligned and lies in guest RAM, then
 * writes zeros to used->flags, used->idx and avail_event and starts with notifications
 * enabled. mem must outlive q. Returns 0, or -EINVAL (logged, rate-limited) leaving q
 * not enabled.
 */
int virtq_init(struct virtq *q, const struct guest_mem *mem, const struct virtq_config *cfg);

/*
 * Takes the next available chain into *req. Returns 1 with *req filled, 0 if the ring is
 * empty (or q not enabled), -EIO if the chain was malformed (already returned to the
 * driver with len 0; req->head says which) or the ring is corrupt (q->broken set; see
 * the error rules above).
 */
int virtq_pop(struct virtq *q, struct virtq_req *req);

/*
 * Gives back the last n chains popped and not yet pushed, in reverse order of popping
 * (a receive path that took buffers for a frame that turned out not to fit): the next
 * virtq_pop() returns them again.
 */
void virtq_unpop(struct virtq *q, uint16_t n);

/*
 * Returns the chain `head` (from virtq_pop) to the driver, `written` bytes having been
 * stored into its writable buffers (at most req->in_bytes). Chains may be returned in
 * any order. Publishes used->idx at once, with release ordering after the element.
 */
void virtq_push(struct virtq *q, uint16_t head, uint32_t written);

/*
 * After one or more virtq_push() calls: true if the driver wants an interrupt for the
 * elements pushed since the last call (avail->flags NO_INTERRUPT without EVENT_IDX;
 * used_event crossing with it, 2.7.7). False if nothing was pushed since.
 */
bool virtq_should_notify(struct virtq *q);

/*
 * Kick suppression (2.7.10), for a device thread that polls while it has work:
 *
 *	for (;;) {
 *		virtq_disable_notify(q);
 *		while ((r = virtq_pop(q, &req)) != 0)
 *			... process, virtq_push() ...
 *		if (!virtq_enable_notify(q))
 *			break;	// ring really empty; wait for the next kick
 *	}
 *	if (virtq_should_notify(q))
 *		... raise the interrupt ...
 *
 * virtq_enable_notify() asks for kicks again, then (after a full barrier) re-reads
 * avail->idx and returns true if chains arrived meanwhile, whose kick the driver may have
 * skipped: the caller must pop them, or it loses that work. With EVENT_IDX, disabling
 * writes nothing (the driver kicks at most once for a stale avail_event) and while
 * enabled each virtq_pop() moves avail_event along.
 */
void virtq_disable_notify(struct virtq *q);
bool virtq_enable_notify(struct virtq *q);

/*
 * Polling (an iothread poller, see iothread.h): virtq_poll_begin() turns kicks off and
 * keeps them off — virtq_enable_notify() then does nothing and returns false, so a
 * handler's usual loop ends without asking for kicks; virtq_poll_ready() tells whether
 * the driver has made chains available beyond those popped (one load, no barrier); virtq_poll_end()
 * asks for kicks again and returns virtq_enable_notify()'s answer: true if chains arrived that the
 * caller must still pop.
 */
void virtq_poll_begin(struct virtq *q);
bool virtq_poll_ready(const struct virtq *q);
bool virtq_poll_end(struct virtq *q);

/*
 * Takes the ring back from someone else who served it meanwhile (vhost-net): carries on
 * from avail position last_avail and from the used index that server published in the
 * ring, counts nothing as unsignalled (it made its own interrupt decisions), and asks
 * for kicks again. No-op on a queue that is not enabled or is broken.
 */
void virtq_resume_from(struct virtq *q, uint16_t last_avail);

#endif
