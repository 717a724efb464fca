/* virtq.c: split virtqueue engine: chain walking, used ring updates, notification suppression. */
#include "virtq.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "guest_mem.h"
#include "util.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtio 1.x rings are little-endian");
_Static_assert(sizeof(struct virtq_desc) == 16, "descriptor layout");
_Static_assert(sizeof(struct virtq_used_elem) == 8, "used element layout");
_Static_assert(offsetof(struct virtq_avail, ring) == 4, "avail ring layout");
_Static_assert(offsetof(struct virtq_used, ring) == 4, "used ring layout");

/* A chain may not carry more than 2^32 bytes in total (2.7.5). */
#define VIRTQ_MAX_CHAIN_BYTES (4 * GiB)

#define virtq_warn(q, fmt, ...)                                                                    \
	log_ratelimited(&(q)->rl, LOG_WARN, "%s: " fmt, (q)->name, ##__VA_ARGS__)

/*
 * Every access to the rings is one atomic load or store: the driver writes them from
 * another CPU, and a plain access could be torn, repeated or elided by the compiler.
 */
static inline uint16_t virtq_ld16(const uint16_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void virtq_st16(uint16_t *p, uint16_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static inline uint16_t *virtq_used_event(const struct virtq *q)
{
	return &q->avail->ring[q->size];
}

static inline uint16_t *virtq_avail_event(const struct virtq *q)
{
	return (uint16_t *)&q->used->ring[q->size];
}

/*
 * Copies one descriptor out of guest RAM, reading each byte once, so the checks made on
 * the copy hold however the guest rewrites the table meanwhile. The ring's own table is
 * 16-byte aligned; an indirect table may sit at any address the guest likes.
 */
static void virtq_desc_read(const uint8_t *src, struct virtq_desc *d)
{
	if (((uintptr_t)src & 7) == 0) {
		const struct virtq_desc *s = (const struct virtq_desc *)src;

		d->addr = __atomic_load_n(&s->addr, __ATOMIC_RELAXED);
		d->len = __atomic_load_n(&s->len, __ATOMIC_RELAXED);
		d->flags = __atomic_load_n(&s->flags, __ATOMIC_RELAXED);
		d->next = __atomic_load_n(&s->next, __ATOMIC_RELAXED);
	} else {
		const volatile uint8_t *s = src;
		uint8_t b[sizeof(*d)];

		for (size_t i = 0; i < sizeof(b); i++)
			b[i] = s[i];
		d->addr = get_le64(b);
		d->len = get_le32(b + 8);
		d->flags = get_le16(b + 12);
		d->next = get_le16(b + 14);
	}
}

/*
 * Gathers the chain starting at `head` into req. Zero or more descriptors of the ring's
 * table may be followed by one that points to an indirect table (2.7.5.3.2), whose
 * entries then continue the chain. Each table bounds the walk by its entry count, which
 * also catches loops. Returns 0, or -EIO with the reason logged.
 */
static int virtq_walk(struct virtq *q, uint16_t head, struct virtq_req *req)
{
	const uint8_t *table = (const uint8_t *)q->desc;
	uint32_t count = q->size;  /* entries in the current table */
	uint32_t budget = q->size; /* descriptors we may still read from it */
	uint32_t i = head;
	bool in_indirect = false, seen_write = false;
	uint64_t total = 0;
	struct virtq_desc d;

	for (;;) {
		if (budget-- == 0) {
			virtq_warn(q, "chain %u: loops or is longer than its %s table (%u entries)",
			           head, in_indirect ? "indirect" : "descriptor", count);
			return -EIO;
		}
		virtq_desc_read(table + (size_t)i * sizeof(d), &d);

		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			const char *why = NULL;

			if (!q->indirect)
				why = "VIRTIO_F_INDIRECT_DESC not negotiated";
			else if (in_indirect)
				why = "nested in an indirect table";
			else if (d.flags & VIRTQ_DESC_F_NEXT)
				why = "has NEXT set too";
			else if (d.len == 0 || d.len % sizeof(d) ||
			         d.len / sizeof(d) > VIRTQ_MAX_SIZE)
				why = "bad table length";
			else if (!(table = gm_ptr(q->mem, d.addr, d.len)))
				why = "table outside guest RAM";
			if (why) {
				virtq_warn(q, "chain %u: indirect descriptor (0x%llx+%u): %s", head,
				           (unsigned long long)d.addr, d.len, why);
				return -EIO;
			}
			/* The WRITE flag of this descriptor means nothing (2.7.5.3.2). */
			count = budget = d.len / sizeof(d);
			i = 0;
			in_indirect = true;
			continue;
		}

		if (d.flags & VIRTQ_DESC_F_WRITE) {
			seen_write = true;
		} else if (seen_write) {
			/* 2.7.4.2: writable buffers follow all readable ones. */
			virtq_warn(q, "chain %u: readable descriptor after a writable one", head);
			return -EIO;
		}

		/* Empty buffers carry nothing; skip them rather than hand devices 0-length segs. */
		if (d.len) {
			bool w = d.flags & VIRTQ_DESC_F_WRITE;
			unsigned *n = w ? &req->nin : &req->nout;
			void *p = gm_ptr(q->mem, d.addr, d.len);

			if (!p) {
				virtq_warn(q, "chain %u: buffer 0x%llx+%u is not guest RAM", head,
				           (unsigned long long)d.addr, d.len);
				return -EIO;
			}
			if (*n == VIRTQ_MAX_SEGS) {
				virtq_warn(q, "chain %u: more than %u %s buffers", head,
				           VIRTQ_MAX_SEGS, w ? "writable" : "readable");
				return -EIO;
			}
			total += d.len;
			if (total > VIRTQ_MAX_CHAIN_BYTES) {
				virtq_warn(q, "chain %u: more than 4 GiB in total", head);
				return -EIO;
			}
			if (w) {
				req->in[(*n)++] = (struct virtq_seg){p, d.len};
				req->in_bytes += d.len;
			} else {
				req->out[(*n)++] = (struct virtq_seg){p, d.len};
				req->out_bytes += d.len;
			}
		}

		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		if (d.next >= count) {
			virtq_warn(q, "chain %u: next index %u beyond the %s table (%u entries)",
			           head, d.next, in_indirect ? "indirect" : "descriptor", count);
			return -EIO;
		}
		i = d.next;
	}
}

int virtq_init(struct virtq *q, const struct guest_mem *mem, const struct virtq_config *cfg)
{
	/* Keep the limiter across resets, so a guest cannot reset its way past it. */
	struct ratelimit rl = q->rl;
	uint16_t n = cfg->size;
	const char *why = NULL;

	memset(q, 0, sizeof(*q));
	q->rl = rl;
	if (!q->rl.interval_ms) {
		q->rl.interval_ms = 5000;
		q->rl.burst = 10;
	}
	q->name = cfg->name ? cfg->name : "virtq";

	/* Alignments from the table in 2.7. */
	if (n == 0 || n > VIRTQ_MAX_SIZE || (n & (n - 1)))
		why = "size is not a power of two from 1 to 32768";
	else if (cfg->desc_gpa % 16 || cfg->avail_gpa % 2 || cfg->used_gpa % 4)
		why = "misaligned ring";
	else if (!(q->desc = gm_ptr(mem, cfg->desc_gpa, 16ULL * n)) ||
	         !(q->avail = gm_ptr(mem, cfg->avail_gpa, 6 + 2ULL * n)) ||
	         !(q->used = gm_ptr(mem, cfg->used_gpa, 6 + 8ULL * n)))
		why = "ring outside guest RAM";
	if (why) {
		log_ratelimited(&q->rl, LOG_WARN,
		                "%s: cannot enable (size %u, desc 0x%llx, avail 0x%llx, used "
		                "0x%llx): %s",
		                q->name, n, (unsigned long long)cfg->desc_gpa,
		                (unsigned long long)cfg->avail_gpa,
		                (unsigned long long)cfg->used_gpa, why);
		q->desc = NULL;
		q->avail = NULL;
		q->used = NULL;
		return -EINVAL;
	}

	q->mem = mem;
	q->size = n;
	q->desc_gpa = cfg->desc_gpa;
	q->avail_gpa = cfg->avail_gpa;
	q->used_gpa = cfg->used_gpa;
	q->event_idx = cfg->event_idx;
	q->indirect = cfg->indirect;
	q->notify_enabled = true;
	virtq_st16(&q->used->flags, 0);
	virtq_st16(virtq_avail_event(q), 0);
	__atomic_store_n(&q->used->idx, 0, __ATOMIC_RELEASE);
	return 0;
}

int virtq_pop(struct virtq *q, struct virtq_req *req)
{
	uint16_t head;

	if (q->broken)
		return -EIO;
	if (!q->size)
		return 0;
	if (q->last_avail == q->avail_idx) {
		/* Acquire: the ring entries below were written before this index (2.7.13). */
		uint16_t idx = __atomic_load_n(&q->avail->idx, __ATOMIC_ACQUIRE);

		if ((uint16_t)(idx - q->last_avail) > q->size) {
			virtq_warn(q, "avail idx %u is more than %u ahead of %u: ring corrupt", idx,
			           q->size, q->last_avail);
			q->broken = true;
			return -EIO;
		}
		q->avail_idx = idx;
		if (idx == q->last_avail)
			return 0;
	}

	head = virtq_ld16(&q->avail->ring[q->last_avail & (q->size - 1)]);
	if (head >= q->size) {
		virtq_warn(q, "avail ring entry %u: head %u out of range: ring corrupt",
		           q->last_avail, head);
		q->broken = true;
		return -EIO;
	}
	q->last_avail++;
	/* Ask for a kick when the driver adds the entry after this one (2.7.10). */
	if (q->event_idx && q->notify_enabled)
		virtq_st16(virtq_avail_event(q), q->last_avail);

	req->head = head;
	req->nout = req->nin = 0;
	req->out_bytes = req->in_bytes = 0;
	if (virtq_walk(q, head, req) < 0) {
		/* Give the descriptors back so the driver is not left waiting for them. */
		req->nout = req->nin = 0;
		req->out_bytes = req->in_bytes = 0;
		virtq_push(q, head, 0);
		return -EIO;
	}
	return 1;
}

void virtq_unpop(struct virtq *q, uint16_t n)
{
	q->last_avail = (uint16_t)(q->last_avail - n);
}

void virtq_push(struct virtq *q, uint16_t head, uint32_t written)
{
	struct virtq_used_elem *e;

	if (!q->size || q->broken)
		return;
	e = &q->used->ring[q->used_idx & (q->size - 1)];
	__atomic_store_n(&e->id, head, __ATOMIC_RELAXED);
	__atomic_store_n(&e->len, written, __ATOMIC_RELAXED);
	q->used_idx++;
	/* Release: the driver must see the element before the index that covers it (2.7.14). */
	__atomic_store_n(&q->used->idx, q->used_idx, __ATOMIC_RELEASE);
	if (q->unsignalled < UINT32_MAX)
		q->unsignalled++;
}

bool virtq_should_notify(struct virtq *q)
{
	uint32_t pushed = q->unsignalled;
	uint16_t new_idx = q->used_idx, old_idx = (uint16_t)(new_idx - pushed);

	if (!q->size || q->broken || !pushed)
		return false;
	q->unsignalled = 0;
	/*
	 * Our used->idx store must be visible before we read the driver's suppression
	 * fields, or driver and device can each miss the other's update: a store-load
	 * ordering, which only a full barrier gives.
	 */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	/* The 16-bit distances below cannot tell 65536 pushes from none: just notify. */
	if (pushed > UINT16_MAX)
		return true;
	if (q->event_idx) {
		/* vring_need_event(): did used->idx step over used_event? (2.7.7.2) */
		uint16_t event = virtq_ld16(virtq_used_event(q));

		return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old_idx);
	}
	return !(virtq_ld16(&q->avail->flags) & VIRTQ_AVAIL_F_NO_INTERRUPT);
}

void virtq_disable_notify(struct virtq *q)
{
	if (!q->size || q->broken || !q->notify_enabled)
		return;
	q->notify_enabled = false;
	if (!q->event_idx)
		virtq_st16(&q->used->flags, VIRTQ_USED_F_NO_NOTIFY);
}

bool virtq_enable_notify(struct virtq *q)
{
	uint16_t idx;

	if (!q->size || q->broken || q->polling)
		return false;
	q->notify_enabled = true;
	if (q->event_idx)
		virtq_st16(virtq_avail_event(q), q->last_avail);
	else
		virtq_st16(&q->used->flags, 0);
	/* As in virtq_should_notify(): publish our wish before re-reading the driver's index. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	idx = __atomic_load_n(&q->avail->idx, __ATOMIC_ACQUIRE);
	return idx != q->last_avail || q->avail_idx != q->last_avail;
}

void virtq_poll_begin(struct virtq *q)
{
	virtq_disable_notify(q);
	q->polling = true;
}

bool virtq_poll_ready(const struct virtq *q)
{
	if (!q->size || q->broken)
		return false;
	return __atomic_load_n(&q->avail->idx, __ATOMIC_ACQUIRE) != q->last_avail;
}

bool virtq_poll_end(struct virtq *q)
{
	q->polling = false;
	return virtq_enable_notify(q);
}

void virtq_resume_from(struct virtq *q, uint16_t last_avail)
{
	if (!q->size || q->broken)
		return;
	q->last_avail = q->avail_idx = last_avail;
	q->used_idx = __atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE);
	q->unsignalled = 0;
	virtq_enable_notify(q);
}
