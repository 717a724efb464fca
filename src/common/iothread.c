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
#include <unistd.h>

#include "log.h"

#define MAX_WATCHES 64

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
};

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

static void *loop(void *arg)
{
	struct iothread *t = arg;
	struct epoll_event ev[16];

	for (;;) {
		iothread_pause_point(t);
		int n = epoll_wait(t->epfd, ev, 16, -1);
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
