/* aio_threads.c: the worker-thread engine: preadv/pwritev/fdatasync/fallocate on a small pool. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block_internal.h"
#include "util.h"

/*
 * Each blk_queue has its own pool of BLK_THREADS workers (fewer for a shallower queue),
 * so queues on different threads never share a lock. Three singly linked lists of slots:
 *
 *	pending   blk_submit() appends, the queue's thread only, no lock
 *	work      blk_queue_kick() splices pending onto it in one locked step; workers pop
 *	done      a worker appends a finished slot; blk_queue_complete() takes it all at once
 *
 * A worker runs one request to its end (short transfers and fallbacks included), then
 * rings the queue's eventfd if the done list was empty: blk_queue_complete() reads the
 * eventfd before taking the list, so no completion goes unsignalled. Workers block every
 * signal, leaving them to the threads that expect them.
 */

#define BLK_THREADS 4

struct blk_list {
	struct blk_slot *head;
	struct blk_slot **tail;
};

struct blk_threads {
	struct blk_queue *q;
	pthread_mutex_t lock;
	pthread_cond_t work_cond;
	struct blk_list work; /* under lock */
	struct blk_list done; /* under lock */
	bool stop;            /* under lock */
	struct blk_list pending;
	unsigned npending;
	unsigned nworkers;
	pthread_t workers[BLK_THREADS];
};

static void list_init(struct blk_list *l)
{
	l->head = NULL;
	l->tail = &l->head;
}

static void list_append(struct blk_list *l, struct blk_slot *s)
{
	s->next = NULL;
	*l->tail = s;
	l->tail = &s->next;
}

static void list_splice(struct blk_list *to, struct blk_list *from)
{
	if (!from->head)
		return;
	*to->tail = from->head;
	to->tail = from->tail;
	list_init(from);
}

static int64_t threads_syscall(int fd, const struct blk_io *io)
{
	ssize_t r = 0;

	switch (io->kind) {
	case BLK_IO_NOP:
		break;
	case BLK_IO_READ:
		r = preadv(fd, io->iov, (int)io->iovcnt, (off_t)io->offset);
		break;
	case BLK_IO_WRITE:
		r = pwritev(fd, io->iov, (int)io->iovcnt, (off_t)io->offset);
		break;
	case BLK_IO_FDATASYNC:
		r = fdatasync(fd);
		break;
	case BLK_IO_FALLOCATE:
		r = fallocate(fd, io->mode, (off_t)io->offset, (off_t)io->len);
		break;
	}
	return r < 0 ? -errno : r;
}

static void threads_ring(int efd)
{
	uint64_t one = 1;

	while (write(efd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

static void *threads_worker(void *opaque)
{
	struct blk_threads *t = opaque;
	struct blk *b = t->q->blk;
	struct blk_slot *s;
	struct blk_io io;
	bool was_empty;

	for (;;) {
		pthread_mutex_lock(&t->lock);
		while (!t->work.head && !t->stop)
			pthread_cond_wait(&t->work_cond, &t->lock);
		s = t->work.head;
		if (!s) {
			pthread_mutex_unlock(&t->lock);
			return NULL;
		}
		t->work.head = s->next;
		if (!t->work.head)
			t->work.tail = &t->work.head;
		pthread_mutex_unlock(&t->lock);

		blk_slot_first(b, s, &io);
		while (blk_slot_next(b, s, threads_syscall(b->fd, &io), &io))
			;

		pthread_mutex_lock(&t->lock);
		was_empty = !t->done.head;
		list_append(&t->done, s);
		pthread_mutex_unlock(&t->lock);
		if (was_empty)
			threads_ring(t->q->efd);
	}
}

static void threads_stop(struct blk_threads *t)
{
	pthread_mutex_lock(&t->lock);
	t->stop = true;
	pthread_cond_broadcast(&t->work_cond);
	pthread_mutex_unlock(&t->lock);
	for (unsigned i = 0; i < t->nworkers; i++)
		pthread_join(t->workers[i], NULL);
	pthread_cond_destroy(&t->work_cond);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

static int threads_init(struct blk_queue *q, char *err, size_t errlen)
{
	struct blk_threads *t = calloc(1, sizeof(*t));
	sigset_t all, old;
	int r = 0;

	if (!t) {
		snprintf(err, errlen, "%s: out of memory", q->blk->path);
		return -ENOMEM;
	}
	t->q = q;
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->work_cond, NULL);
	list_init(&t->work);
	list_init(&t->done);
	list_init(&t->pending);

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	while (t->nworkers < MIN(BLK_THREADS, q->depth)) {
		r = pthread_create(&t->workers[t->nworkers], NULL, threads_worker, t);
		if (r)
			break;
		pthread_setname_np(t->workers[t->nworkers++], "vmstack-blk");
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		snprintf(err, errlen, "%s: cannot start I/O worker threads: %s", q->blk->path,
		         strerror(r));
		threads_stop(t);
		return -r;
	}
	q->priv = t;
	return 0;
}

static void threads_fini(struct blk_queue *q)
{
	threads_stop(q->priv);
	q->priv = NULL;
}

static void threads_start(struct blk_queue *q, struct blk_slot *s)
{
	struct blk_threads *t = q->priv;

	list_append(&t->pending, s);
	t->npending++;
}

static void threads_kick(struct blk_queue *q)
{
	struct blk_threads *t = q->priv;
	unsigned n = t->npending;

	if (!n)
		return;
	pthread_mutex_lock(&t->lock);
	list_splice(&t->work, &t->pending);
	pthread_mutex_unlock(&t->lock);
	t->npending = 0;
	if (n >= t->nworkers)
		pthread_cond_broadcast(&t->work_cond);
	else
		while (n--)
			pthread_cond_signal(&t->work_cond);
}

static unsigned threads_reap(struct blk_queue *q)
{
	struct blk_threads *t = q->priv;
	struct blk_slot *s, *next;
	unsigned n = 0;

	pthread_mutex_lock(&t->lock);
	s = t->done.head;
	list_init(&t->done);
	pthread_mutex_unlock(&t->lock);
	for (; s; s = next, n++) {
		next = s->next; /* blk_slot_finish() puts s on the free list */
		blk_slot_finish(q, s);
	}
	return n;
}

const struct blk_engine blk_engine_threads = {
    .name = "threads",
    .init = threads_init,
    .fini = threads_fini,
    .start = threads_start,
    .kick = threads_kick,
    .reap = threads_reap,
};
