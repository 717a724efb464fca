/* test_iothread.c: the iothread's pollers: kicks off while polling, on again at rest. */
#include <stdatomic.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "iothread.h"
#include "test.h"

/*
 * A toy device with the shape of a virtqueue: the test thread is the driver (it bumps
 * `avail`, then kicks if `notify` says the device wants kicks), the iothread is the
 * device (it catches `done` up with `avail`, either from the kick's callback or from its
 * poller). seq_cst on both sides, as virtq's full barriers: neither can miss the other.
 */
struct toy {
	int kick_fd;
	atomic_uint avail, done;
	atomic_bool notify;
	atomic_uint begins, ends, kicked_runs, polled_runs;
};

static void sleep_us(unsigned us)
{
	struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};

	nanosleep(&ts, NULL);
}

static void toy_kick_ready(void *opaque, uint32_t events)
{
	struct toy *t = opaque;
	uint64_t n;

	(void)events;
	if (read(t->kick_fd, &n, sizeof(n)) != sizeof(n))
		return;
	atomic_store(&t->done, atomic_load(&t->avail));
	atomic_fetch_add(&t->kicked_runs, 1);
}

static bool toy_ready(void *opaque)
{
	struct toy *t = opaque;

	return atomic_load(&t->avail) != atomic_load(&t->done);
}

static void toy_run(void *opaque)
{
	struct toy *t = opaque;

	atomic_store(&t->done, atomic_load(&t->avail));
	atomic_fetch_add(&t->polled_runs, 1);
}

static void toy_begin(void *opaque)
{
	struct toy *t = opaque;

	atomic_fetch_add(&t->begins, 1);
	atomic_store(&t->notify, false);
}

static bool toy_end(void *opaque)
{
	struct toy *t = opaque;

	atomic_fetch_add(&t->ends, 1);
	atomic_store(&t->notify, true);
	return toy_ready(t);
}

/* Driver side: one item, a kick if wanted, then waits (up to 5 s) until it is done. */
static bool toy_submit(struct toy *t)
{
	unsigned want = atomic_fetch_add(&t->avail, 1) + 1;
	uint64_t one = 1;

	if (atomic_load(&t->notify) && write(t->kick_fd, &one, sizeof(one)) != sizeof(one))
		return false;
	for (unsigned i = 0; i < 500000 && atomic_load(&t->done) != want; i++)
		sleep_us(10);
	return atomic_load(&t->done) == want;
}

static struct iothread *toy_start(struct toy *t, uint64_t poll_max_ns)
{
	struct iothread *io = iothread_new("t-poll");

	memset(t, 0, sizeof(*t));
	atomic_store(&t->notify, true);
	t->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	CHECK(io != NULL && t->kick_fd >= 0);
	iothread_set_poll_max(io, poll_max_ns);
	CHECK_EQ(iothread_add(io, t->kick_fd, EPOLLIN, toy_kick_ready, t), 0);
	CHECK_EQ(iothread_add_poller(io, &(struct iothread_poller){.ready = toy_ready,
	                                                           .run = toy_run,
	                                                           .begin = toy_begin,
	                                                           .end = toy_end,
	                                                           .opaque = t}),
	         0);
	CHECK_EQ(iothread_start(io), 0);
	return io;
}

TEST(iothread_poll_off_uses_kicks_only)
{
	struct toy t;
	struct iothread *io = toy_start(&t, 0);

	for (unsigned i = 0; i < 50; i++)
		CHECK(toy_submit(&t));
	CHECK_EQ(atomic_load(&t.polled_runs), 0);
	CHECK_EQ(atomic_load(&t.begins), 0);
	CHECK_EQ(atomic_load(&t.kicked_runs), 50);
	iothread_free(io);
	close(t.kick_fd);
}

TEST(iothread_poll_window_grows_and_finds_work_without_kicks)
{
	struct toy t;
	struct iothread *io = toy_start(&t, 10ull * 1000 * 1000 * 1000);
	unsigned n = 0;

	/* Requests 1 ms apart: every wait is shorter than the 10 s maximum, so the window
	 * doubles from 4 µs until it covers the gap; from then on the loop finds the
	 * requests itself and the driver, seeing kicks off, stops kicking. */
	while (atomic_load(&t.polled_runs) == 0 && n < 200) {
		CHECK(toy_submit(&t));
		sleep_us(1000);
		n++;
	}
	CHECK(atomic_load(&t.polled_runs) > 0);
	CHECK(atomic_load(&t.kicked_runs) < n);
	CHECK_EQ(atomic_load(&t.polled_runs) + atomic_load(&t.kicked_runs) >= n, 1);

	/* At a pause the loop is out of its polling phase: kicks are on again, and every
	 * begin had its end. A pause does not wait for the window to run out. */
	iothread_pause(io);
	CHECK(atomic_load(&t.notify));
	CHECK_EQ(atomic_load(&t.begins), atomic_load(&t.ends));
	iothread_resume(io);

	/* Polling turned off: the next long wait drops the window, kicks do the work. */
	iothread_set_poll_max(io, 0);
	for (unsigned i = 0; i < 5; i++)
		CHECK(toy_submit(&t));
	unsigned polled = atomic_load(&t.polled_runs), kicked = atomic_load(&t.kicked_runs);
	sleep_us(20000);
	for (unsigned i = 0; i < 5; i++)
		CHECK(toy_submit(&t));
	CHECK_EQ(atomic_load(&t.polled_runs), polled);
	CHECK_EQ(atomic_load(&t.kicked_runs), kicked + 5);
	iothread_free(io);
	close(t.kick_fd);
}

TEST(iothread_poller_removed_is_not_called)
{
	struct toy t;
	struct iothread *io = toy_start(&t, 10ull * 1000 * 1000);

	iothread_pause(io);
	iothread_del_poller(io, &t);
	iothread_resume(io);
	for (unsigned i = 0; i < 20; i++)
		CHECK(toy_submit(&t));
	CHECK_EQ(atomic_load(&t.polled_runs), 0);
	CHECK_EQ(atomic_load(&t.begins), 0);
	iothread_free(io);
	close(t.kick_fd);
}

/* The environment knob: VMSTACK_POLL_MAX_NS raises the window's ceiling. With the 32 µs
 * default, requests 1 ms apart are never found by polling; with 0.9 s they are. */
TEST(iothread_poll_max_from_environment)
{
	struct toy t;
	struct iothread *io;
	unsigned n = 0;

	setenv("VMSTACK_POLL_MAX_NS", "900000000", 1);
	io = iothread_new("t-env");
	unsetenv("VMSTACK_POLL_MAX_NS");
	CHECK(io != NULL);
	memset(&t, 0, sizeof(t));
	atomic_store(&t.notify, true);
	t.kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	CHECK_EQ(iothread_add(io, t.kick_fd, EPOLLIN, toy_kick_ready, &t), 0);
	CHECK_EQ(iothread_add_poller(io, &(struct iothread_poller){.ready = toy_ready,
	                                                           .run = toy_run,
	                                                           .begin = toy_begin,
	                                                           .end = toy_end,
	                                                           .opaque = &t}),
	         0);
	CHECK_EQ(iothread_start(io), 0);
	while (atomic_load(&t.polled_runs) == 0 && n++ < 200) {
		CHECK(toy_submit(&t));
		sleep_us(1000);
	}
	CHECK(atomic_load(&t.polled_runs) > 0);
	iothread_free(io);
	close(t.kick_fd);
}
