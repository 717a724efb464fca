/* test_virtq.c: split virtqueue engine, with the test acting as the guest driver. */
#include <errno.h>

#include "guest_mem.h"
#include "test.h"
#include "util.h"
#include "virtq.h"

#define RAM_SIZE  (64 * MiB)
#define DESC_GPA  0x10000ULL
#define AVAIL_GPA 0x20000ULL
#define USED_GPA  0x30000ULL
#define TABLE_GPA 0x40000ULL /* indirect tables */
#define DATA_GPA  0x100000ULL

/* A fake guest: RAM, one queue, and the driver's side of the rings. */
struct drv {
	struct guest_mem m;
	struct virtq q;
	struct virtq_config cfg;
	uint16_t size;
	uint16_t avail_idx; /* the driver's copy */
	uint16_t used_seen; /* used entries the driver has consumed */
	struct virtq_desc *desc;
	struct virtq_avail *avail;
	struct virtq_used *used;
};

static void drv_setup(struct drv *d, uint16_t size, bool event_idx, bool indirect)
{
	char err[256] = "";

	memset(d, 0, sizeof(*d));
	CHECK_EQ(guest_mem_create(&d->m, RAM_SIZE, 0, 0, err, sizeof(err)), 0);
	d->size = size;
	d->desc = gm_ptr(&d->m, DESC_GPA, 16ULL * size);
	d->avail = gm_ptr(&d->m, AVAIL_GPA, 6 + 2ULL * size);
	d->used = gm_ptr(&d->m, USED_GPA, 6 + 8ULL * size);
	/* Stale garbage where the device keeps its state: virtq_init must clear it. */
	memset(d->used, 0xa5, 6 + 8ULL * size);
	d->cfg = (struct virtq_config){.name = "test-q",
	                               .size = size,
	                               .desc_gpa = DESC_GPA,
	                               .avail_gpa = AVAIL_GPA,
	                               .used_gpa = USED_GPA,
	                               .event_idx = event_idx,
	                               .indirect = indirect};
	CHECK_EQ(virtq_init(&d->q, &d->m, &d->cfg), 0);
	CHECK_EQ(d->used->idx, 0);
	CHECK_EQ(d->used->flags, 0);
}

static void drv_teardown(struct drv *d)
{
	guest_mem_destroy(&d->m);
}

static void *host(struct drv *d, uint64_t gpa)
{
	return d->m.host + gpa;
}

static void set_desc(struct virtq_desc *table, unsigned i, uint64_t addr, uint32_t len,
                     uint16_t flags, uint16_t next)
{
	table[i] = (struct virtq_desc){.addr = addr, .len = len, .flags = flags, .next = next};
}

static void drv_add(struct drv *d, uint16_t head)
{
	d->avail->ring[d->avail_idx % d->size] = head;
	d->avail_idx++;
	d->avail->idx = d->avail_idx;
}

static uint16_t *drv_used_event(struct drv *d)
{
	return &d->avail->ring[d->size];
}

static uint16_t *drv_avail_event(struct drv *d)
{
	return (uint16_t *)&d->used->ring[d->size];
}

/* Checks the next used element the driver has not seen yet. */
static void drv_expect_used(struct drv *d, uint32_t id, uint32_t len)
{
	struct virtq_used_elem *e = &d->used->ring[d->used_seen % d->size];

	CHECK(d->used->idx != d->used_seen);
	CHECK_EQ(e->id, id);
	CHECK_EQ(e->len, len);
	d->used_seen++;
}

/* A well-formed one-buffer request through the last descriptor still goes through. */
static void drv_expect_working(struct drv *d)
{
	struct virtq_req req;
	uint16_t i = d->size - 1;

	set_desc(d->desc, i, DATA_GPA + 0x8000, 64, 0, 0);
	drv_add(d, i);
	CHECK_EQ(virtq_pop(&d->q, &req), 1);
	CHECK_EQ(req.head, i);
	CHECK_EQ(req.nout, 1);
	CHECK_EQ(req.nin, 0);
	CHECK(req.out[0].addr == host(d, DATA_GPA + 0x8000));
	virtq_push(&d->q, req.head, 0);
	drv_expect_used(d, i, 0);
	CHECK_EQ(virtq_pop(&d->q, &req), 0);
}

/* The chain at `head` (already laid out) fails alone: returned with len 0, queue usable. */
static void drv_expect_bad_chain(struct drv *d, uint16_t head)
{
	struct virtq_req req;

	drv_add(d, head);
	CHECK_EQ(virtq_pop(&d->q, &req), -EIO);
	CHECK_EQ(req.head, head);
	CHECK(!d->q.broken);
	drv_expect_used(d, head, 0);
	CHECK_EQ(d->used->idx, d->used_seen);
	CHECK(virtq_should_notify(&d->q));
	drv_expect_working(d);
}

TEST(virtq_init_rejects_bad_layout)
{
	struct drv d;
	struct virtq q;
	struct virtq_config c;
	struct virtq_req req;

	drv_setup(&d, 16, false, false);
	memset(&q, 0, sizeof(q));

	c = d.cfg;
	c.size = 0;
	CHECK_EQ(virtq_init(&q, &d.m, &c), -EINVAL);
	CHECK_EQ(q.size, 0);
	c.size = 24;
	CHECK_EQ(virtq_init(&q, &d.m, &c), -EINVAL);
	c.size = 65535;
	CHECK_EQ(virtq_init(&q, &d.m, &c), -EINVAL);
	c.size = 32768;
	CHECK_EQ(virtq_init(&q, &d.m, &c), 0);
	CHECK_EQ(q.size, 32768);
	c.size = 1;
	CHECK_EQ(virtq_init(&q, &d.m, &c), 0);

	c = d.cfg;
	c.desc_gpa += 8;
	CHECK_EQ(virtq_init(&q, &d.m, &c), -EINVAL);
	c = d.cfg;
	c.avail_gpa += 1;
	CHECK_EQ(virtq_init(&q, &d.m, &c), -EINVAL);
	c = d.cfg;
	c.used_gpa += 2;
	CHECK_EQ(virtq_init(&q, &d.m, &c), -EINVAL);

	/* Each area must lie wholly in RAM, trailing event fields included. */
	c = d.cfg;
	c.desc_gpa = RAM_SIZE - 16 * 15;
	CHECK_EQ(virtq_init(&q, &d.m, &c), -EINVAL);
	c.desc_gpa = RAM_SIZE - 16 * 16;
	CHECK_EQ(virtq_init(&q, &d.m, &c), 0);
	c = d.cfg;
	c.avail_gpa = RAM_SIZE - (6 + 2 * 16) + 2;
	CHECK_EQ(virtq_init(&q, &d.m, &c), -EINVAL);
	c.avail_gpa = RAM_SIZE - (6 + 2 * 16);
	CHECK_EQ(virtq_init(&q, &d.m, &c), 0);
	c = d.cfg;
	c.used_gpa = RAM_SIZE - 132; /* 134 bytes needed */
	CHECK_EQ(virtq_init(&q, &d.m, &c), -EINVAL);
	c.used_gpa = RAM_SIZE - 136;
	CHECK_EQ(virtq_init(&q, &d.m, &c), 0);
	c.used_gpa = 0xfffffffffffffff0ULL;
	CHECK_EQ(virtq_init(&q, &d.m, &c), -EINVAL);
	c.used_gpa = GM_4G;
	CHECK_EQ(virtq_init(&q, &d.m, &c), -EINVAL);

	/* A failed init leaves the queue disabled, not half set up. */
	CHECK_EQ(virtq_pop(&q, &req), 0);
	CHECK(!virtq_should_notify(&q));
	drv_teardown(&d);
}

TEST(virtq_disabled_queue_is_inert)
{
	struct virtq q;
	struct virtq_req req;

	memset(&q, 0, sizeof(q));
	CHECK_EQ(virtq_pop(&q, &req), 0);
	virtq_push(&q, 0, 0);
	CHECK(!virtq_should_notify(&q));
	virtq_disable_notify(&q);
	CHECK(!virtq_enable_notify(&q));
}

TEST(virtq_single_readable_buffer)
{
	struct drv d;
	struct virtq_req req;

	drv_setup(&d, 16, false, false);
	CHECK_EQ(virtq_pop(&d.q, &req), 0);

	memcpy(host(&d, DATA_GPA), "hello", 5);
	set_desc(d.desc, 3, DATA_GPA, 5, 0, 0);
	drv_add(&d, 3);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(req.head, 3);
	CHECK_EQ(req.nout, 1);
	CHECK_EQ(req.nin, 0);
	CHECK_EQ(req.out_bytes, 5);
	CHECK_EQ(req.in_bytes, 0);
	CHECK(req.out[0].addr == host(&d, DATA_GPA));
	CHECK_EQ(req.out[0].len, 5);
	CHECK(memcmp(req.out[0].addr, "hello", 5) == 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 0);

	CHECK_EQ(d.used->idx, 0);
	virtq_push(&d.q, 3, 0);
	CHECK_EQ(d.used->idx, 1);
	drv_expect_used(&d, 3, 0);
	CHECK(virtq_should_notify(&d.q));
	CHECK(!virtq_should_notify(&d.q));
	drv_teardown(&d);
}

TEST(virtq_chain_readable_then_writable)
{
	struct drv d;
	struct virtq_req req, req2;

	drv_setup(&d, 16, false, false);
	/* A virtio-blk read: header (R), two data buffers (W), status byte (W). */
	set_desc(d.desc, 5, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 9);
	set_desc(d.desc, 9, DATA_GPA + 0x1000, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 0);
	set_desc(d.desc, 0, DATA_GPA + 0x3000, 3584, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 15);
	set_desc(d.desc, 15, DATA_GPA + 0x5000, 1, VIRTQ_DESC_F_WRITE, 7);
	drv_add(&d, 5);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(req.head, 5);
	CHECK_EQ(req.nout, 1);
	CHECK_EQ(req.nin, 3);
	CHECK_EQ(req.out_bytes, 16);
	CHECK_EQ(req.in_bytes, 512 + 3584 + 1);
	CHECK(req.out[0].addr == host(&d, DATA_GPA));
	CHECK(req.in[0].addr == host(&d, DATA_GPA + 0x1000));
	CHECK_EQ(req.in[0].len, 512);
	CHECK(req.in[1].addr == host(&d, DATA_GPA + 0x3000));
	CHECK_EQ(req.in[1].len, 3584);
	CHECK(req.in[2].addr == host(&d, DATA_GPA + 0x5000));
	CHECK_EQ(req.in[2].len, 1);

	/* Only writable: a receive buffer. */
	set_desc(d.desc, 1, DATA_GPA + 0x6000, 1500, VIRTQ_DESC_F_WRITE, 0);
	drv_add(&d, 1);
	CHECK_EQ(virtq_pop(&d.q, &req2), 1);
	CHECK_EQ(req2.nout, 0);
	CHECK_EQ(req2.nin, 1);
	CHECK_EQ(req2.in_bytes, 1500);

	virtq_push(&d.q, req.head, 4097);
	virtq_push(&d.q, req2.head, 60);
	CHECK_EQ(d.used->idx, 2);
	drv_expect_used(&d, 5, 4097);
	drv_expect_used(&d, 1, 60);
	drv_teardown(&d);
}

TEST(virtq_out_of_order_completion)
{
	struct drv d;
	struct virtq_req req[3];

	drv_setup(&d, 8, false, false);
	for (unsigned i = 0; i < 3; i++) {
		set_desc(d.desc, i * 2, DATA_GPA + i * 0x1000, 100 + i, VIRTQ_DESC_F_WRITE, 0);
		drv_add(&d, (uint16_t)(i * 2));
	}
	for (unsigned i = 0; i < 3; i++) {
		CHECK_EQ(virtq_pop(&d.q, &req[i]), 1);
		CHECK_EQ(req[i].head, i * 2);
		CHECK_EQ(req[i].in_bytes, 100 + i);
	}
	CHECK_EQ(virtq_pop(&d.q, &req[0]), 0);
	virtq_push(&d.q, 4, 102);
	virtq_push(&d.q, 0, 100);
	virtq_push(&d.q, 2, 101);
	drv_expect_used(&d, 4, 102);
	drv_expect_used(&d, 0, 100);
	drv_expect_used(&d, 2, 101);
	CHECK_EQ(d.used->idx, 3);
	drv_teardown(&d);
}

TEST(virtq_full_ring)
{
	struct drv d;
	struct virtq_req req;

	/* avail->idx exactly `size` ahead is a full ring, not corruption. */
	drv_setup(&d, 4, false, false);
	for (uint16_t i = 0; i < 4; i++) {
		set_desc(d.desc, i, DATA_GPA + i * 0x100, 16, 0, 0);
		drv_add(&d, i);
	}
	for (uint16_t i = 0; i < 4; i++) {
		CHECK_EQ(virtq_pop(&d.q, &req), 1);
		CHECK_EQ(req.head, i);
	}
	CHECK_EQ(virtq_pop(&d.q, &req), 0);
	CHECK(!d.q.broken);
	drv_teardown(&d);
}

TEST(virtq_indirect_table)
{
	struct drv d;
	struct virtq_req req;
	struct virtq_desc *t;

	drv_setup(&d, 16, false, true);
	t = host(&d, TABLE_GPA);
	/* Entries linked out of order: 0 -> 2 -> 1 -> 3. */
	set_desc(t, 0, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 2);
	set_desc(t, 2, DATA_GPA + 0x100, 200, VIRTQ_DESC_F_NEXT, 1);
	set_desc(t, 1, DATA_GPA + 0x1000, 4096, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 3);
	set_desc(t, 3, DATA_GPA + 0x2000, 1, VIRTQ_DESC_F_WRITE, 0);
	set_desc(d.desc, 4, TABLE_GPA, 4 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	drv_add(&d, 4);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(req.head, 4);
	CHECK_EQ(req.nout, 2);
	CHECK_EQ(req.nin, 2);
	CHECK(req.out[0].addr == host(&d, DATA_GPA));
	CHECK(req.out[1].addr == host(&d, DATA_GPA + 0x100));
	CHECK(req.in[0].addr == host(&d, DATA_GPA + 0x1000));
	CHECK(req.in[1].addr == host(&d, DATA_GPA + 0x2000));
	CHECK_EQ(req.out_bytes, 216);
	CHECK_EQ(req.in_bytes, 4097);
	virtq_push(&d.q, 4, 4097);
	drv_expect_used(&d, 4, 4097);
	drv_teardown(&d);
}

TEST(virtq_direct_then_indirect)
{
	struct drv d;
	struct virtq_req req;
	struct virtq_desc *t;

	/* 2.7.5.3.2: normal descriptors followed by one indirect; its WRITE flag is ignored. */
	drv_setup(&d, 16, false, true);
	t = host(&d, TABLE_GPA);
	set_desc(t, 0, DATA_GPA + 0x100, 32, VIRTQ_DESC_F_NEXT, 1);
	set_desc(t, 1, DATA_GPA + 0x200, 64, VIRTQ_DESC_F_WRITE, 0);
	set_desc(d.desc, 2, DATA_GPA, 8, VIRTQ_DESC_F_NEXT, 6);
	set_desc(d.desc, 6, TABLE_GPA, 2 * 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0);
	drv_add(&d, 2);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(req.nout, 2);
	CHECK_EQ(req.nin, 1);
	CHECK(req.out[0].addr == host(&d, DATA_GPA));
	CHECK(req.out[1].addr == host(&d, DATA_GPA + 0x100));
	CHECK(req.in[0].addr == host(&d, DATA_GPA + 0x200));
	drv_teardown(&d);
}

TEST(virtq_indirect_table_misaligned)
{
	struct drv d;
	struct virtq_req req;
	uint8_t *t;

	/* No alignment is required of an indirect table; read it without UB. */
	drv_setup(&d, 16, false, true);
	t = host(&d, TABLE_GPA + 3);
	put_le64(t, DATA_GPA + 0x10);
	put_le32(t + 8, 10);
	put_le16(t + 12, VIRTQ_DESC_F_NEXT);
	put_le16(t + 14, 1);
	put_le64(t + 16, DATA_GPA + 0x20);
	put_le32(t + 24, 20);
	put_le16(t + 28, VIRTQ_DESC_F_WRITE);
	put_le16(t + 30, 0);
	set_desc(d.desc, 0, TABLE_GPA + 3, 32, VIRTQ_DESC_F_INDIRECT, 0);
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(req.nout, 1);
	CHECK_EQ(req.nin, 1);
	CHECK(req.out[0].addr == host(&d, DATA_GPA + 0x10));
	CHECK_EQ(req.out[0].len, 10);
	CHECK(req.in[0].addr == host(&d, DATA_GPA + 0x20));
	CHECK_EQ(req.in[0].len, 20);
	drv_teardown(&d);
}

TEST(virtq_zero_length_descriptors_skipped)
{
	struct drv d;
	struct virtq_req req;

	/* Empty buffers are dropped, even at addresses that are not RAM. */
	drv_setup(&d, 16, false, false);
	set_desc(d.desc, 0, 0xdead00000000ULL, 0, VIRTQ_DESC_F_NEXT, 1);
	set_desc(d.desc, 1, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 2);
	set_desc(d.desc, 2, DATA_GPA, 0, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 3);
	set_desc(d.desc, 3, DATA_GPA + 0x100, 8, VIRTQ_DESC_F_WRITE, 0);
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(req.nout, 1);
	CHECK_EQ(req.nin, 1);
	CHECK(req.out[0].addr == host(&d, DATA_GPA));
	CHECK(req.in[0].addr == host(&d, DATA_GPA + 0x100));

	/* A chain of nothing but an empty buffer is a request with no segments. */
	set_desc(d.desc, 4, 0, 0, 0, 0);
	drv_add(&d, 4);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(req.head, 4);
	CHECK_EQ(req.nout + req.nin, 0);
	drv_teardown(&d);
}

TEST(virtq_longest_chains)
{
	struct drv d;
	struct virtq_req req;

	/* VIRTQ_MAX_SEGS each way, in one chain of the ring's table. */
	drv_setup(&d, 2 * VIRTQ_MAX_SEGS, false, false);
	for (unsigned i = 0; i < 2 * VIRTQ_MAX_SEGS; i++) {
		uint16_t f = i + 1 < 2 * VIRTQ_MAX_SEGS ? VIRTQ_DESC_F_NEXT : 0;

		if (i >= VIRTQ_MAX_SEGS)
			f |= VIRTQ_DESC_F_WRITE;
		set_desc(d.desc, i, DATA_GPA + i * 0x10, 0x10, f, (uint16_t)(i + 1));
	}
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(req.nout, VIRTQ_MAX_SEGS);
	CHECK_EQ(req.nin, VIRTQ_MAX_SEGS);
	CHECK(req.in[VIRTQ_MAX_SEGS - 1].addr ==
	      host(&d, DATA_GPA + (2 * VIRTQ_MAX_SEGS - 1) * 0x10));
	drv_teardown(&d);
}

TEST(virtq_index_wrap)
{
	struct drv d;
	struct virtq_req req;

	/* Run the 16-bit indexes across 65535 -> 0 twice, as a long-lived guest does. */
	drv_setup(&d, 4, false, false);
	for (uint32_t n = 0; n < 140000; n++) {
		uint16_t head = (uint16_t)(n % 4);

		set_desc(d.desc, head, DATA_GPA + head * 0x100, 32, VIRTQ_DESC_F_WRITE, 0);
		drv_add(&d, head);
		if (virtq_pop(&d.q, &req) != 1 || req.head != head) {
			CHECK(!"pop failed");
			break;
		}
		virtq_push(&d.q, req.head, n & 31);
		if (d.used->idx != (uint16_t)(n + 1) || d.used->ring[n % 4].id != head ||
		    d.used->ring[n % 4].len != (n & 31)) {
			CHECK(!"bad used element");
			break;
		}
	}
	CHECK_EQ(d.q.last_avail, (uint16_t)140000);
	CHECK_EQ(d.used->idx, (uint16_t)140000);
	CHECK_EQ(virtq_pop(&d.q, &req), 0);
	/* More than 65535 pushes since the last check: cannot tell, so notify. */
	CHECK(virtq_should_notify(&d.q));

	/* Several requests in flight across the wrap point. */
	while (d.avail_idx != 65534) {
		drv_add(&d, 0);
		CHECK_EQ(virtq_pop(&d.q, &req), 1);
		virtq_push(&d.q, 0, 0);
	}
	d.used_seen = d.used->idx;
	for (uint16_t i = 0; i < 4; i++) {
		set_desc(d.desc, i, DATA_GPA, 8 + i, 0, 0);
		drv_add(&d, i);
	}
	CHECK_EQ(d.avail->idx, 2);
	for (uint16_t i = 0; i < 4; i++) {
		CHECK_EQ(virtq_pop(&d.q, &req), 1);
		CHECK_EQ(req.head, i);
		CHECK_EQ(req.out_bytes, 8 + i);
	}
	CHECK_EQ(virtq_pop(&d.q, &req), 0);
	for (uint16_t i = 0; i < 4; i++)
		virtq_push(&d.q, 3 - i, i);
	CHECK_EQ(d.used->idx, 2);
	for (uint16_t i = 0; i < 4; i++)
		drv_expect_used(&d, 3 - i, i);
	drv_teardown(&d);
}

TEST(virtq_notify_without_event_idx)
{
	struct drv d;
	struct virtq_req req;

	drv_setup(&d, 8, false, false);
	CHECK(!virtq_should_notify(&d.q)); /* nothing pushed */

	set_desc(d.desc, 0, DATA_GPA, 8, 0, 0);
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	virtq_push(&d.q, 0, 0);
	CHECK(virtq_should_notify(&d.q));

	/* The driver turns interrupts off. */
	d.avail->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	virtq_push(&d.q, 0, 0);
	CHECK(!virtq_should_notify(&d.q));
	d.avail->flags = 0;
	CHECK(!virtq_should_notify(&d.q)); /* already reported */

	/* Kick suppression through used->flags. */
	virtq_disable_notify(&d.q);
	CHECK_EQ(d.used->flags, VIRTQ_USED_F_NO_NOTIFY);
	CHECK(!virtq_enable_notify(&d.q));
	CHECK_EQ(d.used->flags, 0);

	/* A chain added while kicks were off is reported by enable, not lost. */
	virtq_disable_notify(&d.q);
	drv_add(&d, 0);
	CHECK(virtq_enable_notify(&d.q));
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK(!virtq_enable_notify(&d.q));
	/* Without EVENT_IDX avail_event is left alone. */
	CHECK_EQ(*drv_avail_event(&d), 0);
	drv_teardown(&d);
}

TEST(virtq_polling_keeps_kicks_off)
{
	struct drv d;
	struct virtq_req req;

	/* Without EVENT_IDX: used->flags says NO_NOTIFY for the whole polling phase. */
	drv_setup(&d, 8, false, false);
	set_desc(d.desc, 0, DATA_GPA, 8, 0, 0);
	CHECK(!virtq_poll_ready(&d.q));
	virtq_poll_begin(&d.q);
	CHECK_EQ(d.used->flags, VIRTQ_USED_F_NO_NOTIFY);
	drv_add(&d, 0);
	CHECK(virtq_poll_ready(&d.q));
	/* A handler's usual disable/pop/enable loop: enable neither turns kicks on nor
	 * asks for another round (the poller looks again). */
	virtq_disable_notify(&d.q);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK(!virtq_poll_ready(&d.q));
	drv_add(&d, 0);
	CHECK(!virtq_enable_notify(&d.q));
	CHECK_EQ(d.used->flags, VIRTQ_USED_F_NO_NOTIFY);
	CHECK(virtq_poll_ready(&d.q));
	/* The end turns kicks on and reports the chain that came meanwhile. */
	CHECK(virtq_poll_end(&d.q));
	CHECK_EQ(d.used->flags, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK(!virtq_enable_notify(&d.q));
	virtq_poll_begin(&d.q);
	CHECK(!virtq_poll_end(&d.q));
	CHECK_EQ(d.used->flags, 0);
	drv_teardown(&d);

	/* With EVENT_IDX: avail_event stays where it was while polling, then catches up. */
	drv_setup(&d, 8, true, false);
	set_desc(d.desc, 0, DATA_GPA, 8, 0, 0);
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(*drv_avail_event(&d), 1);
	virtq_poll_begin(&d.q);
	drv_add(&d, 0);
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(*drv_avail_event(&d), 1);
	CHECK(!virtq_enable_notify(&d.q));
	CHECK_EQ(*drv_avail_event(&d), 1);
	CHECK(!virtq_poll_end(&d.q));
	CHECK_EQ(*drv_avail_event(&d), 3);
	drv_teardown(&d);

	/* A broken ring is never ready. */
	drv_setup(&d, 8, false, false);
	d.q.broken = true;
	drv_add(&d, 0);
	CHECK(!virtq_poll_ready(&d.q));
	drv_teardown(&d);
}

/* After vhost served the ring: our positions come from its avail index and the used ring. */
TEST(virtq_resume_from_another_server)
{
	struct drv d;
	struct virtq_req req;

	drv_setup(&d, 8, true, false);
	for (uint16_t i = 0; i < 4; i++) {
		set_desc(d.desc, i, DATA_GPA + 64 * i, 8, 0, 0);
		drv_add(&d, i);
	}
	/* "vhost" consumed and completed heads 0-2, kicks off meanwhile. */
	virtq_disable_notify(&d.q);
	for (uint16_t i = 0; i < 3; i++)
		d.used->ring[i] = (struct virtq_used_elem){i, 0};
	__atomic_store_n(&d.used->idx, 3, __ATOMIC_RELEASE);
	virtq_resume_from(&d.q, 3);
	CHECK_EQ(d.q.used_idx, 3);
	CHECK_EQ(d.q.unsignalled, 0);
	CHECK(d.q.notify_enabled);
	CHECK_EQ(*drv_avail_event(&d), 3);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(req.head, 3);
	virtq_push(&d.q, req.head, 0);
	CHECK_EQ(d.used->idx, 4);
	CHECK_EQ(d.used->ring[3].id, 3);
	CHECK_EQ(virtq_pop(&d.q, &req), 0);
	drv_teardown(&d);
}

TEST(virtq_notify_with_event_idx)
{
	struct drv d;
	struct virtq_req req;

	drv_setup(&d, 8, true, false);
	for (uint16_t i = 0; i < 8; i++)
		set_desc(d.desc, i, DATA_GPA, 8, 0, 0);

	/* used_event 0: interrupt when used->idx moves past 0. */
	*drv_used_event(&d) = 0;
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(*drv_avail_event(&d), 1); /* kick me for the next one */
	virtq_push(&d.q, 0, 0);
	CHECK(virtq_should_notify(&d.q)); /* 0 -> 1 */
	drv_add(&d, 1);
	drv_add(&d, 2);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(*drv_avail_event(&d), 3);
	virtq_push(&d.q, 1, 0);
	virtq_push(&d.q, 2, 0);
	CHECK(!virtq_should_notify(&d.q)); /* 1 -> 3, event 0 is behind */

	/* The driver asks for an interrupt once entry 4 is used (idx passes 4). */
	*drv_used_event(&d) = 4;
	drv_add(&d, 3);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	virtq_push(&d.q, 3, 0);
	CHECK(!virtq_should_notify(&d.q)); /* 3 -> 4 */
	drv_add(&d, 4);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	virtq_push(&d.q, 4, 0);
	CHECK(virtq_should_notify(&d.q)); /* 4 -> 5 */

	/* A batch that steps over the event in its middle. */
	*drv_used_event(&d) = 6;
	for (uint16_t i = 5; i < 8; i++)
		drv_add(&d, i);
	for (uint16_t i = 5; i < 8; i++)
		CHECK_EQ(virtq_pop(&d.q, &req), 1);
	for (uint16_t i = 5; i < 8; i++)
		virtq_push(&d.q, i, 0);
	CHECK(virtq_should_notify(&d.q)); /* 5 -> 8 covers 6 */
	CHECK(!virtq_should_notify(&d.q));

	/* Disabled: pops leave avail_event where it was; enable catches up and re-checks. */
	virtq_disable_notify(&d.q);
	CHECK_EQ(d.used->flags, 0); /* flags are not used with EVENT_IDX */
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(*drv_avail_event(&d), 8);
	drv_add(&d, 1);
	CHECK(virtq_enable_notify(&d.q));
	CHECK_EQ(*drv_avail_event(&d), 9);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(*drv_avail_event(&d), 10);
	CHECK(!virtq_enable_notify(&d.q));
	drv_teardown(&d);
}

TEST(virtq_event_idx_wrap)
{
	struct drv d;
	struct virtq_req req;

	drv_setup(&d, 4, true, false);
	set_desc(d.desc, 0, DATA_GPA, 8, 0, 0);
	*drv_used_event(&d) = 0;
	while (d.avail_idx != 65534) {
		drv_add(&d, 0);
		CHECK_EQ(virtq_pop(&d.q, &req), 1);
		virtq_push(&d.q, 0, 0);
		virtq_should_notify(&d.q);
	}
	CHECK_EQ(d.used->idx, 65534);

	/* used_event 65535: no interrupt for 65534 -> 65535, one for 65535 -> 0. */
	*drv_used_event(&d) = 65535;
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	virtq_push(&d.q, 0, 0);
	CHECK(!virtq_should_notify(&d.q));
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(*drv_avail_event(&d), 0);
	virtq_push(&d.q, 0, 0);
	CHECK_EQ(d.used->idx, 0);
	CHECK(virtq_should_notify(&d.q));

	/* A batch 0 -> 3 over used_event 1, then one 3 -> 4 with the event left behind. */
	*drv_used_event(&d) = 1;
	for (int i = 0; i < 3; i++) {
		drv_add(&d, 0);
		CHECK_EQ(virtq_pop(&d.q, &req), 1);
		virtq_push(&d.q, 0, 0);
	}
	CHECK(virtq_should_notify(&d.q));
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	virtq_push(&d.q, 0, 0);
	CHECK(!virtq_should_notify(&d.q));

	/* A batch that crosses both 65535 -> 0 and used_event 65535. */
	while (d.used->idx != 65533) {
		drv_add(&d, 0);
		CHECK_EQ(virtq_pop(&d.q, &req), 1);
		virtq_push(&d.q, 0, 0);
		virtq_should_notify(&d.q);
	}
	*drv_used_event(&d) = 65535;
	for (int i = 0; i < 4; i++) {
		drv_add(&d, 0);
		CHECK_EQ(virtq_pop(&d.q, &req), 1);
		virtq_push(&d.q, 0, 0);
	}
	CHECK_EQ(d.used->idx, 1);
	CHECK(virtq_should_notify(&d.q));

	/* Exactly 65536 pushes unchecked: used->idx is back where it was, yet notify. */
	*drv_used_event(&d) = 0x8000;
	for (uint32_t n = 0; n < 65536; n++) {
		drv_add(&d, 0);
		if (virtq_pop(&d.q, &req) != 1) {
			CHECK(!"pop failed");
			break;
		}
		virtq_push(&d.q, 0, 0);
	}
	CHECK_EQ(d.used->idx, 1);
	CHECK(virtq_should_notify(&d.q));
	drv_teardown(&d);
}

TEST(virtq_two_queues_are_independent)
{
	struct drv d;
	struct virtq q2;
	struct virtq_config c;
	struct virtq_req req;

	drv_setup(&d, 8, false, false);
	c = d.cfg;
	c.desc_gpa += 0x1000;
	c.avail_gpa += 0x1000;
	c.used_gpa += 0x1000;
	memset(&q2, 0, sizeof(q2));
	CHECK_EQ(virtq_init(&q2, &d.m, &c), 0);
	set_desc(d.desc, 0, DATA_GPA, 8, 0, 0);
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&q2, &req), 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	drv_teardown(&d);
}

/* Hostile drivers. */

TEST(virtq_bad_avail_idx_breaks_queue)
{
	struct drv d;
	struct virtq_req req;

	drv_setup(&d, 8, false, false);
	set_desc(d.desc, 0, DATA_GPA, 8, 0, 0);
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	virtq_push(&d.q, 0, 0);
	CHECK(virtq_should_notify(&d.q));

	d.avail->idx = d.avail_idx + 9; /* 9 > size ahead */
	CHECK_EQ(virtq_pop(&d.q, &req), -EIO);
	CHECK(d.q.broken);
	/* Broken stays broken, and writes nothing more to the rings. */
	d.avail->idx = d.avail_idx;
	CHECK_EQ(virtq_pop(&d.q, &req), -EIO);
	virtq_push(&d.q, 0, 0);
	CHECK_EQ(d.used->idx, 1);
	CHECK(!virtq_should_notify(&d.q));
	CHECK(!virtq_enable_notify(&d.q));

	/* Going backwards is as corrupt as jumping forward. */
	d.avail_idx = 0;
	d.used_seen = 0;
	CHECK_EQ(virtq_init(&d.q, &d.m, &d.cfg), 0); /* the device reset */
	CHECK(!d.q.broken);
	d.avail->idx = 0xffff;
	CHECK_EQ(virtq_pop(&d.q, &req), -EIO);
	CHECK(d.q.broken);

	d.avail_idx = 0;
	d.used_seen = 0;
	CHECK_EQ(virtq_init(&d.q, &d.m, &d.cfg), 0);
	d.avail->idx = 0;
	drv_expect_working(&d);
	drv_teardown(&d);
}

TEST(virtq_bad_head_breaks_queue)
{
	struct drv d;
	struct virtq_req req;

	drv_setup(&d, 8, false, false);
	drv_add(&d, 8);
	CHECK_EQ(virtq_pop(&d.q, &req), -EIO);
	CHECK(d.q.broken);
	CHECK_EQ(d.used->idx, 0);

	d.avail_idx = 0;
	CHECK_EQ(virtq_init(&d.q, &d.m, &d.cfg), 0);
	drv_add(&d, 0xffff);
	CHECK_EQ(virtq_pop(&d.q, &req), -EIO);
	CHECK(d.q.broken);
	drv_teardown(&d);
}

TEST(virtq_bad_next_index)
{
	struct drv d;

	drv_setup(&d, 8, false, false);
	set_desc(d.desc, 2, DATA_GPA, 8, VIRTQ_DESC_F_NEXT, 8);
	drv_expect_bad_chain(&d, 2);
	set_desc(d.desc, 2, DATA_GPA, 8, VIRTQ_DESC_F_NEXT, 0xffff);
	drv_expect_bad_chain(&d, 2);
	drv_teardown(&d);
}

TEST(virtq_chain_loops)
{
	struct drv d;

	drv_setup(&d, 8, false, false);
	set_desc(d.desc, 1, DATA_GPA, 8, VIRTQ_DESC_F_NEXT, 1);
	drv_expect_bad_chain(&d, 1);
	set_desc(d.desc, 1, DATA_GPA, 8, VIRTQ_DESC_F_NEXT, 2);
	set_desc(d.desc, 2, DATA_GPA, 8, VIRTQ_DESC_F_NEXT, 3);
	set_desc(d.desc, 3, DATA_GPA, 8, VIRTQ_DESC_F_NEXT, 1);
	drv_expect_bad_chain(&d, 1);
	/* Zero-length descriptors take no segment but still count against loops. */
	set_desc(d.desc, 1, DATA_GPA, 0, VIRTQ_DESC_F_NEXT, 2);
	set_desc(d.desc, 2, DATA_GPA, 0, VIRTQ_DESC_F_NEXT, 1);
	drv_expect_bad_chain(&d, 1);
	drv_teardown(&d);
}

TEST(virtq_indirect_loops)
{
	struct drv d;
	struct virtq_desc *t;

	drv_setup(&d, 8, false, true);
	t = host(&d, TABLE_GPA);
	set_desc(t, 0, DATA_GPA, 8, VIRTQ_DESC_F_NEXT, 1);
	set_desc(t, 1, DATA_GPA, 0, VIRTQ_DESC_F_NEXT, 0);
	set_desc(d.desc, 0, TABLE_GPA, 2 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	drv_expect_bad_chain(&d, 0);
	/* next within the ring's size but beyond the table's own entries */
	set_desc(t, 1, DATA_GPA, 8, VIRTQ_DESC_F_NEXT, 2);
	drv_expect_bad_chain(&d, 0);
	drv_teardown(&d);
}

TEST(virtq_too_many_segments)
{
	struct drv d;
	struct virtq_desc *t;

	/* Direct: one more readable buffer than fits. */
	drv_setup(&d, 2 * VIRTQ_MAX_SEGS, false, true);
	for (unsigned i = 0; i <= VIRTQ_MAX_SEGS; i++)
		set_desc(d.desc, i, DATA_GPA + i * 8, 8, i < VIRTQ_MAX_SEGS ? VIRTQ_DESC_F_NEXT : 0,
		         (uint16_t)(i + 1));
	drv_expect_bad_chain(&d, 0);

	/* Indirect: one more writable buffer than fits. */
	t = host(&d, TABLE_GPA);
	for (unsigned i = 0; i <= VIRTQ_MAX_SEGS; i++)
		set_desc(t, i, DATA_GPA + i * 8, 8,
		         VIRTQ_DESC_F_WRITE | (i < VIRTQ_MAX_SEGS ? VIRTQ_DESC_F_NEXT : 0),
		         (uint16_t)(i + 1));
	set_desc(d.desc, 0, TABLE_GPA, (VIRTQ_MAX_SEGS + 1) * 16, VIRTQ_DESC_F_INDIRECT, 0);
	drv_expect_bad_chain(&d, 0);
	drv_teardown(&d);
}

TEST(virtq_buffer_outside_ram)
{
	struct drv d;
	struct virtq_req req;

	drv_setup(&d, 8, false, false);
	set_desc(d.desc, 0, RAM_SIZE - 8, 16, 0, 0); /* straddles the end */
	drv_expect_bad_chain(&d, 0);
	set_desc(d.desc, 0, RAM_SIZE, 1, VIRTQ_DESC_F_WRITE, 0);
	drv_expect_bad_chain(&d, 0);
	set_desc(d.desc, 0, 0xfffffffffffffffcULL, 16, 0, 0); /* wraps around */
	drv_expect_bad_chain(&d, 0);
	set_desc(d.desc, 0, GM_HOLE_START, 4096, 0, 0);
	drv_expect_bad_chain(&d, 0);
	/* A bad buffer after good ones in the same chain. */
	set_desc(d.desc, 0, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	set_desc(d.desc, 1, GM_4G, 0xffffffff, VIRTQ_DESC_F_WRITE, 0);
	drv_expect_bad_chain(&d, 0);
	/* The last byte of RAM is fine. */
	set_desc(d.desc, 0, RAM_SIZE - 1, 1, VIRTQ_DESC_F_WRITE, 0);
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK(req.in[0].addr == host(&d, RAM_SIZE - 1));
	drv_teardown(&d);
}

TEST(virtq_readable_after_writable)
{
	struct drv d;

	drv_setup(&d, 8, false, false);
	set_desc(d.desc, 0, DATA_GPA, 16, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
	set_desc(d.desc, 1, DATA_GPA, 16, 0, 0);
	drv_expect_bad_chain(&d, 0);
	/* Even an empty one. */
	set_desc(d.desc, 1, DATA_GPA, 0, 0, 0);
	drv_expect_bad_chain(&d, 0);
	drv_teardown(&d);
}

TEST(virtq_bad_indirect_descriptors)
{
	struct drv d;
	struct virtq_desc *t;

	drv_setup(&d, 8, false, true);
	t = host(&d, TABLE_GPA);
	set_desc(t, 0, DATA_GPA, 8, 0, 0);
	set_desc(t, 1, DATA_GPA, 8, 0, 0);

	set_desc(d.desc, 0, TABLE_GPA, 0, VIRTQ_DESC_F_INDIRECT, 0);
	drv_expect_bad_chain(&d, 0);
	set_desc(d.desc, 0, TABLE_GPA, 24, VIRTQ_DESC_F_INDIRECT, 0);
	drv_expect_bad_chain(&d, 0);
	set_desc(d.desc, 0, TABLE_GPA, (VIRTQ_MAX_SIZE + 1) * 16, VIRTQ_DESC_F_INDIRECT, 0);
	drv_expect_bad_chain(&d, 0);
	/* table outside RAM */
	set_desc(d.desc, 0, RAM_SIZE - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
	drv_expect_bad_chain(&d, 0);
	set_desc(d.desc, 0, 0xfffffffffffffff0ULL, 32, VIRTQ_DESC_F_INDIRECT, 0);
	drv_expect_bad_chain(&d, 0);
	/* INDIRECT together with NEXT */
	set_desc(d.desc, 0, TABLE_GPA, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
	set_desc(d.desc, 1, DATA_GPA, 8, 0, 0);
	drv_expect_bad_chain(&d, 0);
	/* nested: an indirect descriptor inside the table */
	set_desc(t, 0, DATA_GPA, 8, VIRTQ_DESC_F_NEXT, 1);
	set_desc(t, 1, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
	set_desc(d.desc, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
	drv_expect_bad_chain(&d, 0);
	/* readable inside the table after a writable before it */
	set_desc(t, 0, DATA_GPA, 8, 0, 0);
	set_desc(d.desc, 0, DATA_GPA, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	set_desc(d.desc, 1, TABLE_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
	drv_expect_bad_chain(&d, 0);
	drv_teardown(&d);

	/* INDIRECT_DESC not negotiated */
	drv_setup(&d, 8, false, false);
	t = host(&d, TABLE_GPA);
	set_desc(t, 0, DATA_GPA, 8, 0, 0);
	set_desc(d.desc, 0, TABLE_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
	drv_expect_bad_chain(&d, 0);
	drv_teardown(&d);
}

TEST(virtq_chain_over_4gib)
{
	struct drv d;
	struct virtq_desc *t;
	struct virtq_req req;
	const unsigned n = (unsigned)(4 * GiB / RAM_SIZE); /* 64 buffers of all of RAM */

	/* The same RAM many times over: exactly 4 GiB is allowed, in uint64 sums. */
	drv_setup(&d, 8, false, true);
	t = host(&d, TABLE_GPA);
	for (unsigned i = 0; i <= n; i++)
		set_desc(t, i, 0, RAM_SIZE, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
		         (uint16_t)(i + 1));
	t[n - 1].flags = VIRTQ_DESC_F_WRITE;
	set_desc(d.desc, 0, TABLE_GPA, n * 16, VIRTQ_DESC_F_INDIRECT, 0);
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	CHECK_EQ(req.nin, n);
	CHECK_EQ(req.in_bytes, 4 * GiB);
	virtq_push(&d.q, 0, 0);
	drv_expect_used(&d, 0, 0);

	/* One more byte is too many. */
	t[n - 1].flags = VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT;
	set_desc(t, n, 0, 1, VIRTQ_DESC_F_WRITE, 0);
	set_desc(d.desc, 0, TABLE_GPA, (n + 1) * 16, VIRTQ_DESC_F_INDIRECT, 0);
	drv_expect_bad_chain(&d, 0);
	drv_teardown(&d);
}

TEST(virtq_request_copied_before_use)
{
	struct drv d;
	struct virtq_req req;

	/* Rewriting descriptors after the pop changes nothing the device holds. */
	drv_setup(&d, 8, false, false);
	set_desc(d.desc, 0, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	set_desc(d.desc, 1, DATA_GPA + 0x100, 16, VIRTQ_DESC_F_WRITE, 0);
	drv_add(&d, 0);
	CHECK_EQ(virtq_pop(&d.q, &req), 1);
	set_desc(d.desc, 0, RAM_SIZE * 2, 0xffffffff, VIRTQ_DESC_F_NEXT, 5);
	set_desc(d.desc, 1, RAM_SIZE * 2, 0xffffffff, VIRTQ_DESC_F_WRITE, 0);
	CHECK(req.out[0].addr == host(&d, DATA_GPA));
	CHECK_EQ(req.out[0].len, 16);
	CHECK(req.in[0].addr == host(&d, DATA_GPA + 0x100));
	CHECK_EQ(req.in[0].len, 16);
	drv_teardown(&d);
}
