/* test_block.c: raw images through both I/O engines, on temporary files under /tmp. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block.h"
#include "block_internal.h"
#include "qcow2.h"
#include "test.h"
#include "util.h"

/* A request with its outcome, so a test can check done() ran exactly once. */
struct treq {
	struct blk_req req;
	struct iovec iov[4];
	int64_t ret;
	int calls;
};

static void treq_done(struct blk_req *r, int64_t ret)
{
	struct treq *t = container_of(r, struct treq, req);

	t->ret = ret;
	t->calls++;
}

static void treq_rw(struct treq *t, enum blk_op op, uint64_t off, void *buf, size_t len)
{
	memset(t, 0, sizeof(*t));
	t->iov[0] = (struct iovec){buf, len};
	t->req = (struct blk_req){
	    .op = op, .offset = off, .iov = t->iov, .iovcnt = 1, .done = treq_done};
	t->ret = -12345;
}

static void treq_range(struct treq *t, enum blk_op op, uint64_t off, uint64_t len, bool unmap)
{
	memset(t, 0, sizeof(*t));
	t->req = (struct blk_req){
	    .op = op, .offset = off, .len = len, .unmap = unmap, .done = treq_done};
	t->ret = -12345;
}

static uint8_t pat(uint64_t off, unsigned seed)
{
	return (uint8_t)(off * 131 + (off >> 9) * 7 + seed * 29 + 1);
}

static void fill(uint8_t *buf, size_t len, uint64_t off, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = pat(off + i, seed);
}

static bool is_pattern(const uint8_t *buf, size_t len, uint64_t off, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != pat(off + i, seed))
			return false;
	return true;
}

static bool all_bytes(const uint8_t *buf, size_t len, uint8_t v)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != v)
			return false;
	return true;
}

/* A temporary image of `size` bytes, each set to `byte`; its path goes to path[64]. */
static void make_image(char *path, uint64_t size, uint8_t byte)
{
	uint8_t buf[64 * 1024];
	int fd;

	strcpy(path, "/tmp/vmstack-test-block-XXXXXX");
	fd = mkstemp(path);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK_EQ(ftruncate(fd, (off_t)size), 0);
	if (byte) {
		memset(buf, byte, sizeof(buf));
		for (uint64_t off = 0; off < size; off += sizeof(buf))
			CHECK(pwrite(fd, buf, MIN(sizeof(buf), size - off), (off_t)off) > 0);
	}
	close(fd);
}

static struct blk *open_image(const char *path, enum blk_aio aio, bool readonly,
                              enum blk_cache cache, char *err, size_t errlen)
{
	struct blk_opts o = {.path = path, .readonly = readonly, .cache = cache, .aio = aio};

	err[0] = 0;
	return blk_open(&o, err, errlen);
}

static struct blk *open_rw(const char *path, enum blk_aio aio)
{
	char err[256];
	struct blk *b = open_image(path, aio, false, BLK_CACHE_WRITEBACK, err, sizeof(err));

	if (!b)
		fprintf(stderr, "blk_open: %s\n", err);
	CHECK(b != NULL);
	return b;
}

static struct blk_queue *queue(struct blk *b, unsigned depth)
{
	char err[256] = "";
	struct blk_queue *q = blk_queue_new(b, depth, err, sizeof(err));

	if (!q)
		fprintf(stderr, "blk_queue_new: %s\n", err);
	CHECK(q != NULL);
	return q;
}

/* Kicks, then waits on the queue's fd until nothing is in flight. */
static void wait_idle(struct blk_queue *q)
{
	struct pollfd pfd = {.fd = blk_queue_fd(q), .events = POLLIN};

	blk_queue_kick(q);
	while (blk_queue_inflight(q)) {
		/* The timeout only stops a broken engine from hanging the test run. */
		if (poll(&pfd, 1, 20000) == 0) {
			CHECK(!"no completion within 20 s");
			return;
		}
		blk_queue_complete(q);
	}
}

/* Runs one request to its end; returns what done() got. */
static int64_t run(struct blk_queue *q, struct treq *t)
{
	int r = blk_submit(q, &t->req);

	if (r < 0)
		return r;
	wait_idle(q);
	CHECK_EQ(t->calls, 1);
	return t->ret;
}

static int64_t run_rw(struct blk_queue *q, enum blk_op op, uint64_t off, void *buf, size_t len)
{
	struct treq t;

	treq_rw(&t, op, off, buf, len);
	return run(q, &t);
}

static int64_t run_range(struct blk_queue *q, enum blk_op op, uint64_t off, uint64_t len,
                         bool unmap)
{
	struct treq t;

	treq_range(&t, op, off, len, unmap);
	return run(q, &t);
}

static bool uring_available(void)
{
	char why[200];

	return blk_uring_probe(why, sizeof(why)) == 0;
}

/* One test per engine; the io_uring one is skipped where the kernel refuses io_uring. */
#define ENGINE_TEST(name)                                                                          \
	static void name(enum blk_aio aio);                                                        \
	TEST(name##_io_uring)                                                                      \
	{                                                                                          \
		if (!uring_available()) {                                                          \
			test_skip("io_uring is unavailable on this host");                         \
			return;                                                                    \
		}                                                                                  \
		name(BLK_AIO_IO_URING);                                                            \
	}                                                                                          \
	TEST(name##_threads)                                                                       \
	{                                                                                          \
		name(BLK_AIO_THREADS);                                                             \
	}                                                                                          \
	static void name(enum blk_aio aio)

ENGINE_TEST(write_read_flush)
{
	static uint8_t src[64 * KiB], dst[64 * KiB], chk[64 * KiB];
	const uint64_t off = 128 * KiB;
	char path[64];
	struct blk *b;
	struct blk_queue *q;
	struct treq t;
	int fd;

	make_image(path, 1 * MiB, 0);
	b = open_rw(path, aio);
	if (!b)
		goto out;
	CHECK_STR(blk_engine_name(b), aio == BLK_AIO_THREADS ? "threads" : "io_uring");
	CHECK_EQ(blk_size(b), 1 * MiB);
	CHECK_EQ(blk_block_size(b), 512);
	CHECK(!blk_readonly(b));
	CHECK(blk_can_write_zeroes(b));
	CHECK_STR(blk_path(b), path);
	q = queue(b, 16);

	/* Written from three iovecs, read back into two others. */
	fill(src, sizeof(src), off, 1);
	treq_rw(&t, BLK_OP_WRITE, off, src, 4096);
	t.iov[1] = (struct iovec){src + 4096, 8192 + 512};
	t.iov[2] = (struct iovec){src + 4096 + 8192 + 512, sizeof(src) - 4096 - 8192 - 512};
	t.req.iovcnt = 3;
	CHECK_EQ(run(q, &t), sizeof(src));

	treq_rw(&t, BLK_OP_READ, off, dst, 1000);
	t.iov[1] = (struct iovec){dst + 1000, sizeof(dst) - 1000};
	t.req.iovcnt = 2;
	CHECK_EQ(run(q, &t), sizeof(dst));
	CHECK(memcmp(src, dst, sizeof(src)) == 0);

	fd = open(path, O_RDONLY);
	CHECK_EQ(pread(fd, chk, sizeof(chk), (off_t)off), sizeof(chk));
	CHECK(memcmp(src, chk, sizeof(src)) == 0);
	CHECK_EQ(pread(fd, chk, 4096, (off_t)(off - 4096)), 4096);
	CHECK(all_bytes(chk, 4096, 0));
	close(fd);

	treq_range(&t, BLK_OP_FLUSH, 0, 0, false);
	CHECK_EQ(run(q, &t), 0);

	blk_queue_free(q);
	blk_close(b);
out:
	unlink(path);
}

ENGINE_TEST(bounds)
{
	static uint8_t buf[BLK_MAX_IOV * 512];
	static struct iovec iov[BLK_MAX_IOV + 1];
	const uint64_t size = 1 * MiB;
	char path[64];
	struct blk *b;
	struct blk_queue *q;
	struct treq t;

	/* 100 bytes past the last whole sector: not part of the disk. */
	make_image(path, size + 100, 0);
	b = open_rw(path, aio);
	if (!b)
		goto out;
	CHECK_EQ(blk_size(b), size);
	q = queue(b, 8);

	fill(buf, 4096, size - 4096, 2);
	CHECK_EQ(run_rw(q, BLK_OP_WRITE, size - 4096, buf, 4096), 4096);
	memset(buf, 0, 4096);
	CHECK_EQ(run_rw(q, BLK_OP_READ, size - 512, buf, 512), 512);
	CHECK(is_pattern(buf, 512, size - 512, 2));
	CHECK_EQ(run_rw(q, BLK_OP_READ, size, buf, 0), 0);

	CHECK_EQ(run_rw(q, BLK_OP_READ, size - 512, buf, 1024), -EINVAL);
	CHECK_EQ(run_rw(q, BLK_OP_WRITE, size, buf, 512), -EINVAL);
	CHECK_EQ(run_rw(q, BLK_OP_READ, UINT64_MAX - 511, buf, 512), -EINVAL);
	CHECK_EQ(run_rw(q, BLK_OP_READ, 0, buf, SIZE_MAX), -EINVAL);
	CHECK_EQ(run_range(q, BLK_OP_WRITE_ZEROES, size - 512, 1024, false), -EINVAL);
	CHECK_EQ(run_range(q, BLK_OP_WRITE_ZEROES, UINT64_MAX, 2, false), -EINVAL);

	treq_rw(&t, BLK_OP_READ, 0, buf, 512);
	t.req.iovcnt = 0;
	CHECK_EQ(blk_submit(q, &t.req), -EINVAL);
	t.req.iov = iov;
	t.req.iovcnt = BLK_MAX_IOV + 1;
	CHECK_EQ(blk_submit(q, &t.req), -EINVAL);
	t.req.done = NULL;
	t.req.iovcnt = 1;
	CHECK_EQ(blk_submit(q, &t.req), -EINVAL);
	CHECK_EQ(blk_queue_inflight(q), 0);

	/* The most iovecs a request may have, at the very end of the image. */
	for (unsigned i = 0; i < BLK_MAX_IOV; i++)
		iov[i] = (struct iovec){buf + 512 * i, 512};
	fill(buf, sizeof(buf), size - sizeof(buf), 3);
	treq_rw(&t, BLK_OP_WRITE, size - sizeof(buf), NULL, 0);
	t.req.iov = iov;
	t.req.iovcnt = BLK_MAX_IOV;
	CHECK_EQ(run(q, &t), sizeof(buf));
	memset(buf, 0, sizeof(buf));
	CHECK_EQ(run_rw(q, BLK_OP_READ, size - sizeof(buf), buf, sizeof(buf)), sizeof(buf));
	CHECK(is_pattern(buf, sizeof(buf), size - sizeof(buf), 3));

	blk_queue_free(q);
	blk_close(b);
out:
	unlink(path);
}

ENGINE_TEST(readonly_image)
{
	uint8_t buf[4096];
	char path[64], err[256];
	struct blk *b;
	struct blk_queue *q;

	make_image(path, 256 * KiB, 0x5a);
	b = open_image(path, aio, true, BLK_CACHE_WRITEBACK, err, sizeof(err));
	CHECK(b != NULL);
	if (!b)
		goto out;
	CHECK(blk_readonly(b));
	CHECK(!blk_can_discard(b));
	CHECK(!blk_can_write_zeroes(b));
	q = queue(b, 4);

	CHECK_EQ(run_rw(q, BLK_OP_WRITE, 0, buf, sizeof(buf)), -EROFS);
	CHECK_EQ(run_range(q, BLK_OP_DISCARD, 0, 4096, false), -EROFS);
	CHECK_EQ(run_range(q, BLK_OP_WRITE_ZEROES, 0, 4096, true), -EROFS);
	CHECK_EQ(run_rw(q, BLK_OP_READ, 8192, buf, sizeof(buf)), sizeof(buf));
	CHECK(all_bytes(buf, sizeof(buf), 0x5a));
	CHECK_EQ(run_range(q, BLK_OP_FLUSH, 0, 0, false), 0);

	blk_queue_free(q);
	blk_close(b);
out:
	unlink(path);
}

/* Reads [off, off+len) through q and checks it is all `v`. */
static bool range_is(struct blk_queue *q, uint64_t off, size_t len, uint8_t v)
{
	static uint8_t buf[4 * MiB];
	bool ok;

	if (len > sizeof(buf))
		return false;
	memset(buf, ~v, len);
	ok = run_rw(q, BLK_OP_READ, off, buf, len) == (int64_t)len;
	return ok && all_bytes(buf, len, v);
}

ENGINE_TEST(write_zeroes_and_discard)
{
	char path[64];
	struct blk *b;
	struct blk_queue *q;

	make_image(path, 4 * MiB, 0xaa);
	b = open_rw(path, aio);
	if (!b)
		goto out;
	q = queue(b, 4);

	CHECK_EQ(run_range(q, BLK_OP_WRITE_ZEROES, 4 * KiB, 64 * KiB, false), 0);
	CHECK(range_is(q, 4 * KiB, 64 * KiB, 0));
	CHECK(range_is(q, 0, 4 * KiB, 0xaa));
	CHECK(range_is(q, 68 * KiB, 4 * KiB, 0xaa));

	CHECK_EQ(run_range(q, BLK_OP_WRITE_ZEROES, 100 * KiB + 512, 12 * KiB, true), 0);
	CHECK(range_is(q, 100 * KiB + 512, 12 * KiB, 0));
	CHECK(range_is(q, 100 * KiB, 512, 0xaa));
	CHECK(range_is(q, 112 * KiB + 512, 512, 0xaa));

	/* Discard may keep the data; on a filesystem that punches holes (as the probe found)
	 * a punched range reads back as zeros. */
	if (blk_can_discard(b)) {
		CHECK_EQ(run_range(q, BLK_OP_DISCARD, 256 * KiB, 64 * KiB, false), 0);
		CHECK(range_is(q, 256 * KiB, 64 * KiB, 0));
		CHECK(range_is(q, 320 * KiB, 4 * KiB, 0xaa));
		CHECK_EQ(run_range(q, BLK_OP_DISCARD, 0, 0, false), 0);
	} else {
		CHECK_EQ(run_range(q, BLK_OP_DISCARD, 256 * KiB, 64 * KiB, false), -EOPNOTSUPP);
	}
	CHECK_EQ(run_range(q, BLK_OP_WRITE_ZEROES, 0, 0, false), 0);

	/* Where the filesystem refuses both fallocate modes: zeros are written, in chunks. */
	b->bad_methods = BLK_BAD_ZERO_RANGE | BLK_BAD_PUNCH_HOLE;
	CHECK_EQ(run_range(q, BLK_OP_WRITE_ZEROES, 512 * KiB + 512, 2 * MiB + 1024, true), 0);
	CHECK(range_is(q, 512 * KiB + 512, 2 * MiB + 1024, 0));
	CHECK(range_is(q, 512 * KiB, 512, 0xaa));
	CHECK(range_is(q, 2560 * KiB + 1536, 512, 0xaa));

	blk_queue_free(q);
	blk_close(b);
out:
	unlink(path);
}

ENGINE_TEST(depth_limit)
{
	static uint8_t buf[5][4096];
	struct pollfd pfd;
	struct treq t[5];
	char path[64];
	struct blk *b;
	struct blk_queue *q;

	make_image(path, 1 * MiB, 0x11);
	b = open_rw(path, aio);
	if (!b)
		goto out;
	q = queue(b, 4);
	for (int i = 0; i < 5; i++)
		treq_rw(&t[i], BLK_OP_READ, 4096 * (uint64_t)i, buf[i], 4096);
	for (int i = 0; i < 4; i++)
		CHECK_EQ(blk_submit(q, &t[i].req), 0);
	CHECK_EQ(blk_queue_inflight(q), 4);
	CHECK_EQ(blk_submit(q, &t[4].req), -EAGAIN);
	CHECK_EQ(t[0].calls + t[1].calls + t[2].calls + t[3].calls, 0);

	blk_queue_kick(q);
	pfd = (struct pollfd){.fd = blk_queue_fd(q), .events = POLLIN};
	while (blk_queue_inflight(q) == 4) {
		if (poll(&pfd, 1, 20000) != 1) {
			CHECK(!"no completion within 20 s");
			break;
		}
		blk_queue_complete(q);
	}
	CHECK_EQ(blk_submit(q, &t[4].req), 0);
	wait_idle(q);
	for (int i = 0; i < 5; i++) {
		CHECK_EQ(t[i].calls, 1);
		CHECK_EQ(t[i].ret, 4096);
		CHECK(all_bytes(buf[i], 4096, 0x11));
	}
	CHECK_EQ(blk_queue_complete(q), 0);

	blk_queue_free(q);
	blk_close(b);
out:
	unlink(path);
}

ENGINE_TEST(many_in_flight)
{
	enum { N = 256, BLOCKS = 2048 };
	static uint8_t bufs[N][4096];
	static struct treq t[N];
	static unsigned idx[BLOCKS];
	uint8_t chk[4096];
	char path[64];
	struct blk *b;
	struct blk_queue *q;
	unsigned seed = 12345;
	int fd;

	make_image(path, BLOCKS * 4096ULL, 0);
	b = open_rw(path, aio);
	if (!b)
		goto out;
	q = queue(b, N);

	/* N distinct random blocks, all written in one batch. */
	for (unsigned i = 0; i < BLOCKS; i++)
		idx[i] = i;
	for (unsigned i = BLOCKS - 1; i > 0; i--) {
		unsigned j = (seed = seed * 1103515245 + 12345) % (i + 1), tmp = idx[i];

		idx[i] = idx[j];
		idx[j] = tmp;
	}
	for (unsigned i = 0; i < N; i++) {
		fill(bufs[i], 4096, idx[i] * 4096ULL, 7);
		treq_rw(&t[i], BLK_OP_WRITE, idx[i] * 4096ULL, bufs[i], 4096);
		CHECK_EQ(blk_submit(q, &t[i].req), 0);
	}
	wait_idle(q);
	for (unsigned i = 0; i < N; i++) {
		CHECK_EQ(t[i].calls, 1);
		CHECK_EQ(t[i].ret, 4096);
	}

	/* Read back in another order, through a shallower queue: submit until -EAGAIN,
	 * complete some, go on. */
	blk_queue_free(q);
	q = queue(b, 32);
	memset(bufs, 0, sizeof(bufs));
	for (unsigned i = 0; i < N; i++)
		treq_rw(&t[i], BLK_OP_READ, idx[N - 1 - i] * 4096ULL, bufs[i], 4096);
	for (unsigned i = 0; i < N;) {
		int r = blk_submit(q, &t[i].req);

		if (r == -EAGAIN) {
			struct pollfd pfd = {.fd = blk_queue_fd(q), .events = POLLIN};

			blk_queue_kick(q);
			if (poll(&pfd, 1, 20000) != 1) {
				CHECK(!"no completion within 20 s");
				break;
			}
			blk_queue_complete(q);
			continue;
		}
		CHECK_EQ(r, 0);
		i++;
	}
	wait_idle(q);
	fd = open(path, O_RDONLY);
	for (unsigned i = 0; i < N; i++) {
		uint64_t off = idx[N - 1 - i] * 4096ULL;

		CHECK_EQ(t[i].calls, 1);
		CHECK_EQ(t[i].ret, 4096);
		CHECK(is_pattern(bufs[i], 4096, off, 7));
		CHECK_EQ(pread(fd, chk, sizeof(chk), (off_t)off), 4096);
		CHECK(is_pattern(chk, 4096, off, 7));
	}
	close(fd);

	blk_queue_free(q);
	blk_close(b);
out:
	unlink(path);
}

ENGINE_TEST(free_completes_in_flight)
{
	enum { N = 64 };
	static uint8_t bufs[N][4096];
	static struct treq t[N + 1];
	char path[64];
	struct blk *b;
	struct blk_queue *q;

	make_image(path, 1 * MiB, 0);
	b = open_rw(path, aio);
	if (!b)
		goto out;
	q = queue(b, N + 1);
	for (unsigned i = 0; i < N; i++) {
		memset(bufs[i], (int)i + 1, 4096);
		treq_rw(&t[i], BLK_OP_WRITE, i * 4096ULL, bufs[i], 4096);
		CHECK_EQ(blk_submit(q, &t[i].req), 0);
		if (i == N / 2)
			blk_queue_kick(q); /* half kicked, half still queued */
	}
	treq_range(&t[N], BLK_OP_FLUSH, 0, 0, false);
	CHECK_EQ(blk_submit(q, &t[N].req), 0);
	blk_queue_free(q);
	for (unsigned i = 0; i < N; i++) {
		CHECK_EQ(t[i].calls, 1);
		CHECK_EQ(t[i].ret, 4096);
	}
	CHECK_EQ(t[N].calls, 1);
	CHECK_EQ(t[N].ret, 0);
	blk_close(b);
out:
	unlink(path);
}

/* done() chains the next read, and a nested complete is refused. */
struct chain {
	struct treq t;
	struct blk_queue *q;
	uint8_t buf[512];
	unsigned left, finished, nested;
};

static void chain_done(struct blk_req *r, int64_t ret)
{
	struct chain *c = container_of(r, struct chain, t.req);

	CHECK_EQ(ret, 512);
	c->finished++;
	c->nested += blk_queue_complete(c->q);
	if (c->left) {
		c->left--;
		c->t.req.offset += 512;
		CHECK_EQ(blk_submit(c->q, &c->t.req), 0);
		blk_queue_kick(c->q);
	}
}

ENGINE_TEST(done_submits_more)
{
	static struct chain c;
	char path[64];
	struct blk *b;

	make_image(path, 64 * KiB, 0x33);
	b = open_rw(path, aio);
	if (!b)
		goto out;
	memset(&c, 0, sizeof(c));
	c.q = queue(b, 1);
	c.left = 20;
	treq_rw(&c.t, BLK_OP_READ, 0, c.buf, sizeof(c.buf));
	c.t.req.done = chain_done;
	CHECK_EQ(blk_submit(c.q, &c.t.req), 0);
	wait_idle(c.q);
	CHECK_EQ(c.finished, 21);
	CHECK_EQ(c.nested, 0);
	CHECK(all_bytes(c.buf, sizeof(c.buf), 0x33));
	blk_queue_free(c.q);
	blk_close(b);
out:
	unlink(path);
}

/* The image shrinks under us: a read past the new end fails, it is never left half-done. */
ENGINE_TEST(read_past_shrunk_end)
{
	static uint8_t buf[12 * KiB];
	char path[64];
	struct blk *b;
	struct blk_queue *q;
	struct treq t;
	int fd;

	make_image(path, 1 * MiB, 0x44);
	b = open_rw(path, aio);
	if (!b)
		goto out;
	q = queue(b, 4);
	fd = open(path, O_RDWR);
	CHECK_EQ(ftruncate(fd, 512 * KiB + 100), 0);
	close(fd);

	CHECK_EQ(run_rw(q, BLK_OP_READ, 512 * KiB, buf, 8 * KiB), -EIO);
	/* Short in the middle of the second iovec, then nothing. */
	treq_rw(&t, BLK_OP_READ, 508 * KiB, buf, 4 * KiB);
	t.iov[1] = (struct iovec){buf + 4 * KiB, 4 * KiB};
	t.iov[2] = (struct iovec){buf + 8 * KiB, 4 * KiB};
	t.req.iovcnt = 3;
	CHECK_EQ(run(q, &t), -EIO);
	CHECK_EQ(run_rw(q, BLK_OP_READ, 0, buf, 4096), 4096);
	CHECK(all_bytes(buf, 4096, 0x44));

	blk_queue_free(q);
	blk_close(b);
out:
	unlink(path);
}

ENGINE_TEST(cache_none)
{
	const size_t len = 64 * KiB;
	uint8_t *buf = NULL, *chk = malloc(len);
	char path[64], err[256];
	struct blk *b;
	struct blk_queue *q;
	int fd;

	make_image(path, 1 * MiB, 0x77);
	b = open_image(path, aio, false, BLK_CACHE_NONE, err, sizeof(err));
	if (!b) {
		CHECK(strstr(err, path) != NULL);
		CHECK(strstr(err, "does not support O_DIRECT — use cache=writeback") != NULL);
		test_skip("%s", err);
		goto out;
	}
	CHECK(blk_block_size(b) == 512 || blk_block_size(b) == 4096);
	CHECK_EQ(posix_memalign((void **)&buf, 4096, len), 0);
	q = queue(b, 8);

	fill(buf, len, 64 * KiB, 9);
	CHECK_EQ(run_rw(q, BLK_OP_WRITE, 64 * KiB, buf, len), len);
	memset(buf, 0, len);
	CHECK_EQ(run_rw(q, BLK_OP_READ, 64 * KiB, buf, len), len);
	CHECK(is_pattern(buf, len, 64 * KiB, 9));
	CHECK_EQ(run_range(q, BLK_OP_FLUSH, 0, 0, false), 0);

	/* Writing zeros from the engine's own buffer must suit O_DIRECT too. */
	b->bad_methods = BLK_BAD_ZERO_RANGE | BLK_BAD_PUNCH_HOLE;
	CHECK_EQ(run_range(q, BLK_OP_WRITE_ZEROES, 192 * KiB, 64 * KiB, false), 0);

	fd = open(path, O_RDONLY);
	CHECK_EQ(pread(fd, chk, len, 64 * KiB), len);
	CHECK(is_pattern(chk, len, 64 * KiB, 9));
	CHECK_EQ(pread(fd, chk, len, 192 * KiB), len);
	CHECK(all_bytes(chk, len, 0));
	CHECK_EQ(pread(fd, chk, len, 256 * KiB), len);
	CHECK(all_bytes(chk, len, 0x77));
	close(fd);

	blk_queue_free(q);
	blk_close(b);
out:
	free(buf);
	free(chk);
	unlink(path);
}

TEST(lock_conflicts)
{
	char path[64], err[256];
	struct blk *rw, *ro1, *ro2, *b;

	make_image(path, 64 * KiB, 0);
	rw = open_image(path, BLK_AIO_THREADS, false, BLK_CACHE_WRITEBACK, err, sizeof(err));
	CHECK(rw != NULL);

	b = open_image(path, BLK_AIO_THREADS, false, BLK_CACHE_WRITEBACK, err, sizeof(err));
	CHECK(b == NULL);
	CHECK(strstr(err, path) != NULL);
	CHECK(strstr(err, "locked by another process") != NULL);
	CHECK(strstr(err, ",readonly") != NULL);

	b = open_image(path, BLK_AIO_THREADS, true, BLK_CACHE_WRITEBACK, err, sizeof(err));
	CHECK(b == NULL);
	CHECK(strstr(err, path) != NULL);
	CHECK(strstr(err, "locked by another process") != NULL);
	blk_close(rw);

	ro1 = open_image(path, BLK_AIO_THREADS, true, BLK_CACHE_WRITEBACK, err, sizeof(err));
	ro2 = open_image(path, BLK_AIO_THREADS, true, BLK_CACHE_WRITEBACK, err, sizeof(err));
	CHECK(ro1 != NULL);
	CHECK(ro2 != NULL);
	b = open_image(path, BLK_AIO_THREADS, false, BLK_CACHE_WRITEBACK, err, sizeof(err));
	CHECK(b == NULL);
	CHECK(strstr(err, "locked by another process") != NULL);
	blk_close(ro1);
	blk_close(ro2);

	/* Closing released every lock. */
	rw = open_image(path, BLK_AIO_THREADS, false, BLK_CACHE_WRITEBACK, err, sizeof(err));
	CHECK(rw != NULL);
	blk_close(rw);
	unlink(path);
}

/* Closing drops the lock at once, even after a queue's I/O (io_uring's teardown is lazy). */
ENGINE_TEST(lock_released_by_close)
{
	uint8_t buf[4096];
	char path[64];
	struct blk *b;
	struct blk_queue *q;

	make_image(path, 64 * KiB, 0);
	for (int i = 0; i < 3; i++) {
		b = open_rw(path, aio);
		if (!b)
			break;
		q = queue(b, 8);
		CHECK_EQ(run_rw(q, BLK_OP_READ, 0, buf, sizeof(buf)), sizeof(buf));
		blk_queue_free(q);
		blk_close(b);
	}
	unlink(path);
}

static void check_open_error(const char *path, bool readonly, const char *what, const char *hint)
{
	int before = test_failures;
	char err[512];
	struct blk *b =
	    open_image(path, BLK_AIO_THREADS, readonly, BLK_CACHE_WRITEBACK, err, sizeof(err));

	CHECK(b == NULL);
	blk_close(b);
	CHECK(strncmp(err, path, strlen(path)) == 0);
	CHECK(strstr(err, what) != NULL);
	CHECK(!hint || strstr(err, hint) != NULL);
	CHECK(strchr(err, '\n') == NULL);
	if (test_failures != before)
		fprintf(stderr, "  message: %s\n", err);
}

TEST(open_errors)
{
	char path[64], dir[64] = "/tmp/vmstack-test-block-dir-XXXXXX", err[256];

	check_open_error("/tmp/vmstack-test-block-no-such-file", false, "no such file",
	                 "truncate -s 1G /tmp/vmstack-test-block-no-such-file");
	CHECK(mkdtemp(dir) != NULL);
	check_open_error(dir, false, "is a directory", NULL);
	check_open_error(dir, true, "is a directory", NULL);
	rmdir(dir);

	make_image(path, 0, 0);
	check_open_error(path, false, "is empty (0 bytes)", "give it a size with `truncate -s");
	unlink(path);
	make_image(path, 300, 0);
	check_open_error(path, true, "less than one 512-byte block", "truncate -s");
	unlink(path);
	check_open_error("/dev/null", true, "not a regular file or a block device", NULL);

	CHECK(blk_open(&(struct blk_opts){.path = ""}, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "no image path") != NULL);
}

TEST(open_error_permission)
{
	char path[64];

	if (geteuid() == 0) {
		test_skip("root ignores file permissions");
		return;
	}
	make_image(path, 64 * KiB, 0);
	CHECK_EQ(chmod(path, 0444), 0);
	check_open_error(path, false, "permission denied", "or add ,readonly");
	CHECK_EQ(chmod(path, 0), 0);
	check_open_error(path, true, "permission denied", "chmod");
	unlink(path);
}

TEST(engine_choice)
{
	char path[64], err[256];
	struct blk *b;

	make_image(path, 64 * KiB, 0);
	b = open_image(path, BLK_AIO_AUTO, false, BLK_CACHE_WRITEBACK, err, sizeof(err));
	CHECK(b != NULL);
	if (b)
		CHECK_STR(blk_engine_name(b), uring_available() ? "io_uring" : "threads");
	blk_close(b);

	b = open_image(path, BLK_AIO_IO_URING, false, BLK_CACHE_WRITEBACK, err, sizeof(err));
	if (uring_available()) {
		CHECK(b != NULL);
	} else {
		CHECK(b == NULL);
		CHECK(strstr(err, path) != NULL);
		CHECK(strstr(err, "aio=threads") != NULL);
	}
	blk_close(b);
	unlink(path);
}

TEST(queue_depth_checked)
{
	char path[64], err[256];
	struct blk *b;

	make_image(path, 64 * KiB, 0);
	b = open_rw(path, BLK_AIO_THREADS);
	if (b) {
		CHECK(blk_queue_new(b, 0, err, sizeof(err)) == NULL);
		CHECK(strstr(err, path) != NULL);
		CHECK(strstr(err, "queue depth 0") != NULL);
		CHECK(blk_queue_new(b, 1u << 20, err, sizeof(err)) == NULL);
	}
	blk_close(b);
	unlink(path);
}

/* The request state machine alone: short transfers and fallbacks, results made up. */
TEST(slot_short_transfers)
{
	static uint8_t a[1000], c2[2000], c3[3000];
	struct iovec iov[3] = {{a, sizeof(a)}, {c2, sizeof(c2)}, {c3, sizeof(c3)}};
	struct blk b = {.size = 1 * MiB};
	struct blk_req req = {.op = BLK_OP_READ, .offset = 4096, .iov = iov, .iovcnt = 3};
	struct blk_slot s = {.req = &req, .base = 4096, .total = 6000};
	struct blk_io io;

	blk_slot_first(&b, &s, &io);
	CHECK(io.kind == BLK_IO_READ && io.iov == iov && io.iovcnt == 3 && io.offset == 4096);
	CHECK(blk_slot_next(&b, &s, 500, &io));
	CHECK(io.iovcnt == 1 && io.iov[0].iov_base == a + 500 && io.iov[0].iov_len == 500);
	CHECK_EQ(io.offset, 4596);
	CHECK(blk_slot_next(&b, &s, -EINTR, &io));
	CHECK(io.iovcnt == 1 && io.iov[0].iov_base == a + 500 && io.offset == 4596);
	CHECK(blk_slot_next(&b, &s, 500, &io));
	CHECK(io.iov == iov + 1 && io.iovcnt == 2 && io.offset == 5096);
	CHECK(blk_slot_next(&b, &s, 2500, &io));
	CHECK(io.iovcnt == 1 && io.iov[0].iov_base == c3 + 500 && io.iov[0].iov_len == 2500);
	CHECK_EQ(io.offset, 7596);
	CHECK(!blk_slot_next(&b, &s, 2500, &io));
	CHECK_EQ(s.ret, 6000);

	blk_slot_first(&b, &s, &io);
	CHECK(blk_slot_next(&b, &s, 1500, &io));
	CHECK(!blk_slot_next(&b, &s, 0, &io));
	CHECK_EQ(s.ret, -EIO);
	blk_slot_first(&b, &s, &io);
	CHECK(!blk_slot_next(&b, &s, -EFAULT, &io));
	CHECK_EQ(s.ret, -EFAULT);

	/* Write zeroes: ZERO_RANGE, then PUNCH_HOLE, then writing 1 MiB at a time. */
	req = (struct blk_req){.op = BLK_OP_WRITE_ZEROES, .offset = 0, .len = 3 * MiB};
	s.base = 0;
	s.total = 3 * MiB;
	blk_slot_first(&b, &s, &io);
	CHECK(io.kind == BLK_IO_FALLOCATE && (io.mode & FALLOC_FL_ZERO_RANGE));
	CHECK(blk_slot_next(&b, &s, -EOPNOTSUPP, &io));
	CHECK(io.kind == BLK_IO_FALLOCATE && (io.mode & FALLOC_FL_PUNCH_HOLE));
	CHECK(blk_slot_next(&b, &s, -EOPNOTSUPP, &io));
	CHECK(io.kind == BLK_IO_WRITE && io.offset == 0 && io.iov[0].iov_len == 1 * MiB);
	CHECK(blk_slot_next(&b, &s, 1 * MiB, &io));
	CHECK(io.kind == BLK_IO_WRITE && io.offset == 1 * MiB);
	CHECK(blk_slot_next(&b, &s, 4096, &io));
	CHECK(io.offset == 1 * MiB + 4096 && io.iov[0].iov_len == 1 * MiB);
	CHECK(blk_slot_next(&b, &s, 1 * MiB, &io));
	CHECK_EQ(io.iov[0].iov_len, 1 * MiB - 4096);
	CHECK(!blk_slot_next(&b, &s, 1 * MiB - 4096, &io));
	CHECK_EQ(s.ret, 0);
	/* Both refusals are remembered: the next request writes at once. */
	CHECK_EQ(b.bad_methods, BLK_BAD_ZERO_RANGE | BLK_BAD_PUNCH_HOLE);
	blk_slot_first(&b, &s, &io);
	CHECK(io.kind == BLK_IO_WRITE);

	/* Discard is advisory: a filesystem that cannot punch holes is not an error. */
	req = (struct blk_req){.op = BLK_OP_DISCARD, .offset = 0, .len = 4096};
	blk_slot_first(&b, &s, &io);
	CHECK(io.kind == BLK_IO_FALLOCATE);
	CHECK(!blk_slot_next(&b, &s, -EOPNOTSUPP, &io));
	CHECK_EQ(s.ret, 0);
}

/* qcow2 through the queue: allocating writes and unallocated reads take the synchronous
 * path, reads and writes of allocated clusters go to the engine at their host offset. */
ENGINE_TEST(qcow2_requests)
{
	static uint8_t w[192 * KiB], r[192 * KiB];
	char dir[] = "/tmp/vmstack-test-blk-qcow2-XXXXXX", path[128], err[256] = "";
	struct img_create_opts co = {.format = IMG_FMT_QCOW2, .size = 16 * MiB};
	struct blk_opts o = {.aio = aio};
	struct blk_queue *q;
	struct img *im;
	struct blk *b;
	uint64_t host;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/d.qcow2", dir);
	co.path = path;
	CHECK_EQ(img_create(&co, err, sizeof(err)), 0);
	o.path = path;
	b = blk_open(&o, err, sizeof(err));
	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ(blk_format(b), IMG_FMT_QCOW2);
	CHECK_EQ(blk_size(b), 16 * MiB);
	q = queue(b, 8);
	/* Unallocated: zeros, through the synchronous path. */
	memset(r, 0xee, sizeof(r));
	CHECK_EQ(run_rw(q, BLK_OP_READ, 1 * MiB, r, sizeof(r)), sizeof(r));
	CHECK(all_bytes(r, sizeof(r), 0));
	/* Allocating write of three clusters at an unaligned offset, then an in-place one. */
	fill(w, sizeof(w), 1 * MiB + 512, 3);
	CHECK_EQ(run_rw(q, BLK_OP_WRITE, 1 * MiB + 512, w, sizeof(w)), sizeof(w));
	CHECK(qcow2_map_io(b->img, 1 * MiB + 4096, 4096, true, &host) > 0);
	fill(w, 4096, 1 * MiB + 8192, 4);
	CHECK_EQ(run_rw(q, BLK_OP_WRITE, 1 * MiB + 8192, w, 4096), 4096);
	memset(r, 0, sizeof(r));
	CHECK_EQ(run_rw(q, BLK_OP_READ, 1 * MiB + 8192, r, 4096), 4096);
	CHECK(is_pattern(r, 4096, 1 * MiB + 8192, 4));
	CHECK_EQ(run_range(q, BLK_OP_WRITE_ZEROES, 1 * MiB + 65536, 65536, true), 0);
	CHECK_EQ(run_range(q, BLK_OP_FLUSH, 0, 0, false), 0);
	blk_queue_free(q);
	blk_close(b);

	/* What a fresh open of the file sees. */
	im = img_open(&(struct img_open_opts){.path = path}, err, sizeof(err));
	CHECK(im != NULL);
	if (im) {
		CHECK_EQ(img_pread(im, r, 512, 1 * MiB), 0);
		CHECK(all_bytes(r, 512, 0));
		CHECK_EQ(img_pread(im, r, 8192 - 512, 1 * MiB + 512), 0);
		CHECK(is_pattern(r, 8192 - 512, 1 * MiB + 512, 3));
		CHECK_EQ(img_pread(im, r, 4096, 1 * MiB + 8192), 0);
		CHECK(is_pattern(r, 4096, 1 * MiB + 8192, 4));
		CHECK_EQ(img_pread(im, r, 65536, 1 * MiB + 65536), 0);
		CHECK(all_bytes(r, 65536, 0));
		CHECK_EQ(img_pread(im, r, 512, 1 * MiB + 131072), 0);
		CHECK(is_pattern(r, 512, 1 * MiB + 131072, 3));
		CHECK_EQ(img_close(im), 0);
	}
	if (system("command -v qemu-img >/dev/null") == 0) {
		char cmd[256];

		snprintf(cmd, sizeof(cmd), "qemu-img check -q %s", path);
		CHECK_EQ(system(cmd), 0);
	}
	unlink(path);
	rmdir(dir);
}
