/* virtio_console.c: one port, no multiport control queue; bytes copied to and from fds. */
#include "virtio_console.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include "iothread.h"
#include "util.h"

/*
 * Queue 0 (receiveq) carries host input to the guest, queue 1 (transmitq) guest output
 * to the host. Without VIRTIO_CONSOLE_F_MULTIPORT there is exactly one port and no
 * control messages. Output is written to out_fd as it comes (a slow pty reader costs
 * the guest nothing: the fd is non-blocking and what does not fit is dropped, as a
 * serial line would); input is read from in_fd only while the guest has buffers.
 */

#define RXQ      0
#define TXQ      1
#define CFG_SIZE 12 /* le16 cols, le16 rows, le32 max_nr_ports, le32 emerg_wr */

static void input_ready(void *opaque, uint32_t events);

static void set_watch(struct virtio_console *vc, bool want)
{
	if (vc->in_fd < 0 || want == vc->watching)
		return;
	if (want) {
		vc->watching = iothread_add(vc->vdev.io, vc->in_fd, EPOLLIN, input_ready, vc) == 0;
	} else {
		iothread_del(vc->vdev.io, vc->in_fd);
		vc->watching = false;
	}
}

static void rx_work(struct virtio_console *vc)
{
	struct virtio_queue *q = &vc->vdev.q[RXQ];
	struct virtq_req req;
	int r;

	if (vc->in_fd < 0 || !q->enabled || q->vq.broken)
		return;
	for (;;) {
		struct iovec iov[VIRTQ_MAX_SEGS];
		ssize_t n;
		r = virtq_pop(&q->vq, &req);
		if (r == 0) {
			vc->in_blocked = true;
			break;
		}
		if (r < 0) {
			if (q->vq.broken)
				break;
			continue;
		}
		for (unsigned i = 0; i < req.nin; i++)
			iov[i] = (struct iovec){req.in[i].addr, req.in[i].len};
		n = readv(vc->in_fd, iov, (int)req.nin);
		if (n <= 0) {
			virtq_unpop(&q->vq, 1);
			if (n == 0 || (errno != EAGAIN && errno != EINTR))
				set_watch(vc, false); /* hung up: stop polling it */
			break;
		}
		atomic_fetch_add_explicit(&vc->rx_bytes, (uint64_t)n, memory_order_relaxed);
		virtq_push(&q->vq, req.head, (uint32_t)n);
	}
	if (q->vq.broken)
		virtio_set_needs_reset(&vc->vdev);
	virtio_queue_interrupt(q);
}

static void tx_work(struct virtio_console *vc)
{
	struct virtio_queue *q = &vc->vdev.q[TXQ];
	struct virtq_req req;
	int r;

	if (!q->enabled || q->vq.broken)
		return;
	for (;;) {
		virtq_disable_notify(&q->vq);
		while ((r = virtq_pop(&q->vq, &req)) != 0) {
			if (r < 0) {
				if (q->vq.broken)
					break;
				continue;
			}
			for (unsigned i = 0; i < req.nout; i++) {
				ssize_t n = write(vc->out_fd, req.out[i].addr, req.out[i].len);
				if (n > 0)
					atomic_fetch_add_explicit(&vc->tx_bytes, (uint64_t)n,
					                          memory_order_relaxed);
			}
			virtq_push(&q->vq, req.head, 0);
		}
		if (q->vq.broken || !virtq_enable_notify(&q->vq))
			break;
	}
	if (q->vq.broken)
		virtio_set_needs_reset(&vc->vdev);
	virtio_queue_interrupt(q);
}

static void input_ready(void *opaque, uint32_t events)
{
	struct virtio_console *vc = opaque;

	(void)events;
	rx_work(vc);
	if (vc->in_blocked)
		set_watch(vc, false);
}

static void con_notify(struct virtio_dev *d, unsigned qi)
{
	struct virtio_console *vc = container_of(d, struct virtio_console, vdev);

	if (qi == TXQ) {
		tx_work(vc);
	} else if (qi == RXQ && vc->in_fd >= 0) {
		vc->in_blocked = false;
		set_watch(vc, true);
	}
}

static void con_reset(struct virtio_dev *d)
{
	struct virtio_console *vc = container_of(d, struct virtio_console, vdev);

	set_watch(vc, false);
	vc->in_blocked = false;
}

static void con_cfg_read(struct virtio_dev *d, uint32_t off, void *data, unsigned len)
{
	uint8_t c[CFG_SIZE] = {0};

	(void)d;
	put_le32(c + 4, 1);
	memcpy(data, c + off, len);
}

static const struct virtio_dev_ops con_ops = {
    .cfg_read = con_cfg_read, .queue_notify = con_notify, .reset = con_reset};

int virtio_console_create(struct virtio_console *vc, int in_fd, int out_fd, struct hv *hv,
                          const struct guest_mem *mem, struct pci_bus *bus, char *err,
                          size_t errlen)
{
	struct virtio_pci_params p = {
	    .name = "virtio-console",
	    .device_id = VIRTIO_ID_CONSOLE,
	    .pci_class = 0x078000,
	    .nqueues = 2,
	    .queue_size = 64,
	    .cfg_size = CFG_SIZE,
	    .ops = &con_ops,
	};

	memset(vc, 0, sizeof(*vc));
	vc->in_fd = in_fd;
	vc->out_fd = out_fd;
	return virtio_pci_init(&vc->vdev, &p, hv, mem, bus, err, errlen);
}

void virtio_console_destroy(struct virtio_console *vc)
{
	virtio_pci_destroy(&vc->vdev);
}

int virtio_console_save(struct virtio_console *vc, struct snap_writer *w, uint32_t inst)
{
	return virtio_pci_save(&vc->vdev, w, VIRTIO_PCI_STATE_INST(VIRTIO_ID_CONSOLE, inst));
}

int virtio_console_load(struct virtio_console *vc, const struct snap_reader *r, uint32_t inst,
                        char *err, size_t errlen)
{
	return virtio_pci_load(&vc->vdev, r, VIRTIO_PCI_STATE_INST(VIRTIO_ID_CONSOLE, inst), err,
	                       errlen);
}
