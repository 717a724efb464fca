/* iothread.c: epoll loop + eventfd for cross-thread calls. */
#include "iothread.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define MAX_WATCHES         64
#define MAX_POLLERS         16
#define POLL_DEFAULT_MAX_NS 32000
#define POLL_INITIAL_NS     4000

struct watch {
	int fd; /* -1: free slot */
	iothread_fn fn;
	void *opaque;
};

struct call {
	void (*fn)(void *opaque);
	void *opaque;
	bool done;
	struct call *next;
};

struct iothread {
	char name[16];
	int epfd;
	int wake_fd; /* eventfd: calls queued or stop requested */
	pthread_t thread;
	bool running;
	bool stop;
	pthread_mutex_t lock; /* calls, stop, watches[], the pause state */
	pthread_cond_t cond;  /* calls done, paused, resumed, stopped, exited */
	struct call *calls;
	struct watch watches[MAX_WATCHES];
	unsigned pauses;       /* iothread_pause() calls not yet resumed */
	atomic_bool pause_req; /* pauses != 0, for the loop to test without the lock */
	bool paused;           /* the loop is held in iothread_pause_point() */
	bool exited;           /* the loop has returned */
	struct iothread_poller pollers[MAX_POLLERS]; /* ready == NULL: free slot */
	unsigned npollers;                           /* slots in use */
	_Atomic uint64_t poll_max_ns;
	uint64_t poll_ns; /* the current window (loop thread only) */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Lock held: runs the queued calls (dropping the lock around each). */
static void run_calls_locked(struct iothread *t)
{
	while (t->calls) {
		struct call *c = t->calls;
		t->calls = c->next;
		pthread_mutex_unlock(&t->lock);
		c->fn(c->opaque);
		pthread_mutex_lock(&t->lock);
		c->done = true;
		pthread_cond_broadcast(&t->cond);
	}
}

static void run_calls(struct iothread *t)
{
	uint64_t v;

	if (read(t->wake_fd, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing pending */
	}
	pthread_mutex_lock(&t->lock);
	run_calls_locked(t);
	pthread_mutex_unlock(&t->lock);
}

/*
 * Between callbacks: blocks while a pause is requested, running only the calls made
 * meanwhile. Unlocked fast path, since it runs after every callback; a request missed
 * here is caught at the next point, and the requester's wake() makes sure there is one.
 */
static void iothread_pause_point(struct iothread *t)
{
	if (!atomic_load_explicit(&t->pause_req, memory_order_acquire))
		return;
	pthread_mutex_lock(&t->lock);
	if (t->pauses && !t->stop) {
		t->paused = true;
		pthread_cond_broadcast(&t->cond);
		while (t->pauses && !t->stop) {
			if (t->calls)
				run_calls_locked(t);
			else
				pthread_cond_wait(&t->cond, &t->lock);
		}
		t->paused = false;
	}
	pthread_mutex_unlock(&t->lock);
}

/* Lock held: one pause fewer. */
static void unpause_locked(struct iothread *t)
{
	assert(t->pauses > 0);
	if (--t->pauses == 0)
		atomic_store_explicit(&t->pause_req, false, memory_order_release);
	pthread_cond_broadcast(&t->cond);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

/* Something for the loop other than pollers: a pause, a call, a stop. */
static bool loop_wanted(struct iothread *t)
{
	return atomic_load_explicit(&t->pause_req, memory_order_acquire) ||
	       __atomic_load_n(&t->calls, __ATOMIC_RELAXED) ||
	       __atomic_load_n(&t->stop, __ATOMIC_RELAXED);
}

/*
 * Polls for up to poll_ns (the window restarts whenever a poller finds work), with every
 * poller's notifications off meanwhile. Returns true if any work was found and run. Leaves
 * notifications on, so the loop may sleep afterwards.
 */
static bool poll_phase(struct iothread *t)
{
	uint64_t deadline = now_ns() + t->poll_ns;
	bool progress = false;

	for (unsigned i = 0; i < MAX_POLLERS; i++)
		if (t->pollers[i].ready && t->pollers[i].begin)
			t->pollers[i].begin(t->pollers[i].opaque);
	for (;;) {
		bool found = false;

		for (unsigned i = 0; i < MAX_POLLERS; i++) {
			struct iothread_poller *p = &t->pollers[i];
			if (p->ready && p->ready(p->opaque)) {
				p->run(p->opaque);
				found = true;
			}
		}
		uint64_t now = now_ns();
		if (found) {
			progress = true;
			deadline = now + t->poll_ns;
		}
		if (now >= deadline || loop_wanted(t) ||
		    !atomic_load_explicit(&t->poll_max_ns, memory_order_relaxed))
			break;
		cpu_relax();
	}
	for (unsigned i = 0; i < MAX_POLLERS; i++) {
		struct iothread_poller *p = &t->pollers[i];
		if (p->ready && p->end && p->end(p->opaque)) {
			p->run(p->opaque);
			progress = true;
		}
	}
	return progress;
}

/* QEMU's adaptive window: grow while waits are short, drop to 0 after a long one. */
static void adapt_poll(struct iothread *t, uint64_t waited_ns)
{
	uint64_t max = atomic_load_explicit(&t->poll_max_ns, memory_order_relaxed);

	if (waited_ns <= t->poll_ns)
		return; /* polling found it */
	if (waited_ns > max)
		t->poll_ns = 0;
	else if (t->poll_ns < max)
		t->poll_ns = t->poll_ns ? MIN(t->poll_ns * 2, max) : MIN(POLL_INITIAL_NS, max);
}

static void *loop(void *arg)
{
	struct iothread *t = arg;
	struct epoll_event ev[16];

	for (;;) {
		uint64_t t0 = 0;
		int timeout = -1;

		iothread_pause_point(t);
		t->poll_ns =
		    MIN(t->poll_ns, atomic_load_explicit(&t->poll_max_ns, memory_order_relaxed));
		if (t->poll_ns && t->npollers) {
			t0 = now_ns();
			if (poll_phase(t))
				timeout = 0; /* found work: look at the fds, then poll again */
		} else if (t->npollers) {
			t0 = now_ns();
		}
		int n = epoll_wait(t->epfd, ev, 16, timeout);
		if (t0 && timeout)
			adapt_poll(t, now_ns() - t0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_err("%s: epoll_wait: %s", t->name, strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			struct watch *w;
			if (ev[i].data.u64 == UINT64_MAX) {
				run_calls(t);
			} else {
				w = &t->watches[ev[i].data.u64];
				/* The slot may have been deleted by an earlier callback of this
				 * batch (or while paused). */
				if (w->fd >= 0)
					w->fn(w->opaque, ev[i].events);
			}
			iothread_pause_point(t);
		}
		pthread_mutex_lock(&t->lock);
		bool stop = t->stop;
		pthread_mutex_unlock(&t->lock);
		if (stop)
			break;
	}
	pthread_mutex_lock(&t->lock);
	t->exited = true;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

/* VMSTACK_POLL_MAX_NS: nanoseconds, at most 1 s; anything else keeps the default, once
 * said. */
static uint64_t poll_max_from_env(void)
{
	static atomic_bool warned;
	const char *env = getenv("VMSTACK_POLL_MAX_NS");
	char *end;
	unsigned long long v;

	if (!env || !*env)
		return POLL_DEFAULT_MAX_NS;
	errno = 0;
	v = strtoull(env, &end, 10);
	if (errno || *end || *env == '-' || v > 1000000000ull) {
		if (!atomic_exchange(&warned, true))
			log_warn("VMSTACK_POLL_MAX_NS=%s: not a number of nanoseconds from 0 to "
			         "1000000000; polling for up to %u ns (0 turns it off)",
			         env, POLL_DEFAULT_MAX_NS);
		return POLL_DEFAULT_MAX_NS;
	}
	return v;
}

struct iothread *iothread_new(const char *name)
{
	struct iothread *t = calloc(1, sizeof(*t));
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};

	if (!t)
		return NULL;
	snprintf(t->name, sizeof(t->name), "%s", name);
	for (unsigned i = 0; i < MAX_WATCHES; i++)
		t->watches[i].fd = -1;
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	t->poll_max_ns = poll_max_from_env();
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	t->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (t->epfd < 0 || t->wake_fd < 0 || epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->wake_fd, &ev)) {
		iothread_free(t);
		return NULL;
	}
	return t;
}

int iothread_start(struct iothread *t)
{
	int r = pthread_create(&t->thread, NULL, loop, t);

	if (r)
		return -r;
	pthread_setname_np(t->thread, t->name);
	t->running = true;
	return 0;
}

static void wake(struct iothread *t)
{
	uint64_t one = 1;

	if (write(t->wake_fd, &one, sizeof(one)) < 0) {
		/* counter saturated: the loop is awake anyway */
	}
}

void iothread_free(struct iothread *t)
{
	if (!t)
		return;
	if (t->running) {
		pthread_mutex_lock(&t->lock);
		t->stop = true;
		pthread_cond_broadcast(&t->cond); /* out of a pause, if paused */
		pthread_mutex_unlock(&t->lock);
		wake(t);
		pthread_join(t->thread, NULL);
		t->running = false;
	}
	if (t->epfd >= 0)
		close(t->epfd);
	if (t->wake_fd >= 0)
		close(t->wake_fd);
	pthread_mutex_destroy(&t->lock);
	pthread_cond_destroy(&t->cond);
	free(t);
}

int iothread_add(struct iothread *t, int fd, uint32_t events, iothread_fn fn, void *opaque)
{
	struct epoll_event ev = {.events = events};
	int r = -ENOSPC;

	pthread_mutex_lock(&t->lock);
	for (unsigned i = 0; i < MAX_WATCHES; i++) {
		if (t->watches[i].fd >= 0)
			continue;
		ev.data.u64 = i;
		if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			r = -errno;
			break;
		}
		t->watches[i] = (struct watch){.fd = fd, .fn = fn, .opaque = opaque};
		r = 0;
		break;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

static struct watch *find(struct iothread *t, int fd)
{
	for (unsigned i = 0; i < MAX_WATCHES; i++)
		if (t->watches[i].fd == fd)
			return &t->watches[i];
	return NULL;
}

int iothread_mod(struct iothread *t, int fd, uint32_t events)
{
	struct epoll_event ev = {.events = events};
	struct watch *w;
	int r = -ENOENT;

	pthread_mutex_lock(&t->lock);
	w = find(t, fd);
	if (w) {
		ev.data.u64 = (uint64_t)(w - t->watches);
		r = epoll_ctl(t->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

void iothread_del(struct iothread *t, int fd)
{
	struct watch *w;

	pthread_mutex_lock(&t->lock);
	w = find(t, fd);
	if (w) {
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, fd, NULL);
		w->fd = -1;
	}
	pthread_mutex_unlock(&t->lock);
}

int iothread_add_poller(struct iothread *t, const struct iothread_poller *p)
{
	int r = -ENOSPC;

	pthread_mutex_lock(&t->lock);
	for (unsigned i = 0; i < MAX_POLLERS; i++) {
		if (t->pollers[i].ready)
			continue;
		t->pollers[i] = *p;
		t->npollers++;
		r = 0;
		break;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

void iothread_del_poller(struct iothread *t, void *opaque)
{
	pthread_mutex_lock(&t->lock);
	for (unsigned i = 0; i < MAX_POLLERS; i++) {
		if (t->pollers[i].ready && t->pollers[i].opaque == opaque) {
			t->pollers[i] = (struct iothread_poller){0};
			t->npollers--;
		}
	}
	pthread_mutex_unlock(&t->lock);
}

void iothread_set_poll_max(struct iothread *t, uint64_t ns)
{
	atomic_store_explicit(&t->poll_max_ns, ns, memory_order_relaxed);
}

bool iothread_is_current(const struct iothread *t)
{
	return t->running && pthread_equal(pthread_self(), t->thread);
}

void iothread_call(struct iothread *t, void (*fn)(void *opaque), void *opaque)
{
	struct call c = {.fn = fn, .opaque = opaque};
	struct call **tail;

	if (!t->running || iothread_is_current(t)) {
		fn(opaque);
		return;
	}
	pthread_mutex_lock(&t->lock);
	for (tail = &t->calls; *tail; tail = &(*tail)->next)
		;
	*tail = &c;
	pthread_cond_broadcast(&t->cond); /* a paused loop waits there, not in epoll */
	pthread_mutex_unlock(&t->lock);
	wake(t);
	pthread_mutex_lock(&t->lock);
	while (!c.done)
		pthread_cond_wait(&t->cond, &t->lock);
	pthread_mutex_unlock(&t->lock);
}

void iothread_pause(struct iothread *t)
{
	assert(!iothread_is_current(t));
	pthread_mutex_lock(&t->lock);
	t->pauses++;
	atomic_store_explicit(&t->pause_req, true, memory_order_release);
	pthread_mutex_unlock(&t->lock);
	if (!t->running)
		return;
	wake(t);
	pthread_mutex_lock(&t->lock);
	while (!t->paused && !t->exited)
		pthread_cond_wait(&t->cond, &t->lock);
	pthread_mutex_unlock(&t->lock);
}

void iothread_resume(struct iothread *t)
{
	assert(!iothread_is_current(t));
	pthread_mutex_lock(&t->lock);
	unpause_locked(t);
	pthread_mutex_unlock(&t->lock);
}
