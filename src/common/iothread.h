/* iothread.h: an epoll event loop on its own thread, where device work runs. */
#ifndef VMSTACK_IOTHREAD_H
#define VMSTACK_IOTHREAD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * Device work never runs on vCPU threads (a vCPU stuck behind a disk read stalls the
 * guest). Each device owns one iothread; everything that touches the device's queues runs
 * there, so queue state needs no lock:
 *
 *   vCPU thread                         iothread
 *   -----------                         --------
 *   guest kick --(ioeventfd, in KVM)--> queue handler: pop, submit I/O
 *                                       I/O completion fd: push, irqfd --> guest interrupt
 *   register write (reset, enable) ---> iothread_call(): runs fn there, waits for it
 *
 * Handlers are level-triggered epoll callbacks; a handler may add or delete fds
 * (including its own) and may call iothread_call() on itself (it runs inline).
 */

typedef void (*iothread_fn)(void *opaque, uint32_t events);

struct iothread;

/* A stopped loop named `name` (thread name, at most 15 chars used). NULL on failure. */
struct iothread *iothread_new(const char *name);
/* Starts the thread. Returns 0 or -errno. */
int iothread_start(struct iothread *t);
/* Stops the thread (if started), waits for it, frees t. fds added are not closed. */
void iothread_free(struct iothread *t);

/* Watches fd for `events` (EPOLLIN, EPOLLOUT). Returns 0 or -errno. Any thread. */
int iothread_add(struct iothread *t, int fd, uint32_t events, iothread_fn fn, void *opaque);
int iothread_mod(struct iothread *t, int fd, uint32_t events);
/* Stops watching fd; once it returns, fn will not be called for it again (on the loop
 * thread; from another thread, a callback already running may still be finishing, so
 * other threads should use iothread_call() to remove fds of objects they free). */
void iothread_del(struct iothread *t, int fd);

/* Runs fn(opaque) on the loop thread and waits for it; inline if called from the loop
 * thread or if the thread is not running. */
void iothread_call(struct iothread *t, void (*fn)(void *opaque), void *opaque);

/*
 * Polling (QEMU's poll-max-ns): waking a sleeping thread costs microseconds (an IPI, a
 * context switch; far more in a VM), so when events come close together the loop looks
 * for work itself for a while before it sleeps. A poller names a cheap check (ready: no
 * syscalls, just a look at a ring in memory) and the work to do when it finds some (run).
 * While the loop polls it calls begin() on every poller, so a device can tell its driver
 * not to notify (virtio's NO_NOTIFY / avail_event) and save the driver the kick; end()
 * asks for notifications again and returns true if work came in meanwhile (then run() is
 * called). The poll window adapts: it starts at 0, doubles from 4 µs while waits are
 * shorter than poll_max_ns, and drops to 0 after a wait longer than that, so an idle
 * device does not spin. Pollers run on the loop thread, between pause points. run() must
 * do all the work it can, so that ready() turns false (a poller that stays ready keeps
 * the loop spinning).
 */
struct iothread_poller {
	bool (*ready)(void *opaque);
	void (*run)(void *opaque);
	void (*begin)(void *opaque);
	bool (*end)(void *opaque);
	void *opaque;
};

/* Adds a poller (copied). Returns 0 or -ENOSPC. Any thread. Removing: as iothread_del(). */
int iothread_add_poller(struct iothread *t, const struct iothread_poller *p);
void iothread_del_poller(struct iothread *t, void *opaque);
/* The longest the loop polls before sleeping; 0 turns polling off. Default 32 µs, or
 * VMSTACK_POLL_MAX_NS from the environment. Any thread. */
void iothread_set_poll_max(struct iothread *t, uint64_t ns);

/* True on t's own thread. */
bool iothread_is_current(const struct iothread *t);

/*
 * Pausing (a snapshot): iothread_pause() returns once the loop thread is held between
 * two callbacks (never inside one), and it stays held until iothread_resume(): no event
 * callback runs meanwhile. It still runs what iothread_call() asks of it (on the loop
 * thread, so what a callback owns stays that thread's), and nothing else: the caller
 * decides what runs during the pause. Events that arrive meanwhile are handled after the
 * resume (epoll is level-triggered: nothing is lost). Pauses nest: the loop runs again
 * after as many resumes as pauses. Calling either from the loop thread itself is a bug
 * (asserted). On a thread that is not running, pause and resume only count.
 *
 * To run something as the last thing before a pause (a device finishing its requests):
 * pause first, then iothread_call() it. The other order lets callbacks for events that
 * came meanwhile run between the two.
 */
void iothread_pause(struct iothread *t);
void iothread_resume(struct iothread *t);

#endif
