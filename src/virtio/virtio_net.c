/* virtio_net.c: frames between the guest's rx/tx queues and a netdev, on the iothread. */
#include "virtio_net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "iothread.h"
#include "util.h"

/*
 * Queue 0 receives (device -> guest), queue 1 transmits. Every frame carries the
 * 12-byte virtio_net_hdr_v1, which the backend understands (netdev.h), so transmit is
 * the chain's readable buffers handed to netdev_send() as they are. Receive reads a frame
 * into one bounce buffer, then copies it into one guest chain, or with MRG_RXBUF into as
 * many as it needs, writing their count into the header's num_buffers. When the guest
 * has no buffers the backend fd is no longer watched for input (the host side queues or
 * drops, as a full NIC would) until the guest adds some and kicks the receive queue.
 * When the backend is full on transmit, the chain is given back (unpopped) and the fd
 * is watched for output.
 */

#define VIRTIO_NET_F_CSUM       0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MAC        5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN  9
#define VIRTIO_NET_F_HOST_TSO4  11
#define VIRTIO_NET_F_HOST_TSO6  12
#define VIRTIO_NET_F_HOST_ECN   13
#define VIRTIO_NET_F_MRG_RXBUF  15
#define VIRTIO_NET_F_STATUS     16

#define VIRTIO_NET_S_LINK_UP 1

#define RXQ             0
#define TXQ             1
#define QUEUE_SIZE      256
#define HDR_NUM_BUFFERS 10 /* offset of le16 num_buffers in the header */
#define CFG_SIZE        10 /* mac[6], le16 status, le16 max_virtqueue_pairs */

static struct ratelimit net_rl = RATELIMIT_INIT;

static void set_watch(struct virtio_net *vn)
{
	uint32_t ev = (vn->rx_blocked ? 0 : EPOLLIN) | (vn->tx_blocked ? EPOLLOUT : 0);

	if (ev != vn->watch && vn->vdev.running) {
		iothread_mod(vn->vdev.io, netdev_fd(vn->nd), ev);
		vn->watch = ev;
	}
}

/* --- receive --- */

static void copy_to_segs(const struct virtq_req *req, const uint8_t *src, uint32_t len)
{
	uint32_t done = 0;

	for (unsigned i = 0; i < req->nin && done < len; i++) {
		uint32_t k = MIN(req->in[i].len, len - done);
		memcpy(req->in[i].addr, src + done, k);
		done += k;
	}
}

/*
 * Puts the frame in rx_buf into guest buffers. Returns false if the guest does not
 * have enough buffers yet (nothing consumed).
 */
static bool deliver(struct virtio_net *vn, struct virtio_queue *q)
{
	struct virtq_req *req = vn->rx_reqs;
	uint16_t heads = 0;
	uint64_t room = 0;
	uint32_t off = 0;
	int r;

	while (room < vn->rx_len) {
		if (heads == (vn->mrg_rxbuf ? VNET_RX_CHAINS : 1))
			break;
		r = virtq_pop(&q->vq, &req[heads]);
		if (r == 0) {
			virtq_unpop(&q->vq, heads);
			return false;
		}
		if (r < 0) {
			if (q->vq.broken) {
				virtq_unpop(&q->vq, heads);
				return false;
			}
			continue; /* that chain was returned empty */
		}
		room += req[heads].in_bytes;
		heads++;
	}
	if (room < vn->rx_len) {
		/* The buffers the guest gave cannot hold it: drop the frame, return them. */
		for (uint16_t i = 0; i < heads; i++)
			virtq_push(&q->vq, req[i].head, 0);
		atomic_fetch_add_explicit(&vn->stats.rx_dropped, 1, memory_order_relaxed);
		log_ratelimited(&net_rl, LOG_WARN,
		                "%s: %u-byte frame dropped: receive buffers too small", vn->name,
		                vn->rx_len);
		return true;
	}
	put_le16(vn->rx_buf + HDR_NUM_BUFFERS, vn->mrg_rxbuf ? heads : 0);
	for (uint16_t i = 0; i < heads; i++) {
		uint32_t k = (uint32_t)MIN(req[i].in_bytes, vn->rx_len - off);
		copy_to_segs(&req[i], vn->rx_buf + off, k);
		virtq_push(&q->vq, req[i].head, k);
		off += k;
	}
	atomic_fetch_add_explicit(&vn->stats.rx_packets, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&vn->stats.rx_bytes, vn->rx_len - NETDEV_HDR_LEN,
	                          memory_order_relaxed);
	return true;
}

static void rx_work(struct virtio_net *vn)
{
	struct virtio_queue *q = &vn->vdev.q[RXQ];
	struct iovec iov = {.iov_base = vn->rx_buf, .iov_len = VNET_MAX_FRAME};

	if (!q->enabled || q->vq.broken)
		return;
	for (unsigned budget = 0; budget < 256; budget++) {
		if (!vn->rx_len) {
			ssize_t n = netdev_recv(vn->nd, &iov, 1);
			if (n == -EAGAIN)
				break;
			if (n < NETDEV_HDR_LEN) {
				if (n < 0 && n != -EMSGSIZE)
					log_ratelimited(&net_rl, LOG_WARN, "%s: receive: %s",
					                vn->name, strerror((int)-n));
				atomic_fetch_add_explicit(&vn->stats.rx_dropped, 1,
				                          memory_order_relaxed);
				if (n < 0 && n != -EMSGSIZE)
					break;
				continue;
			}
			vn->rx_len = (uint32_t)n;
		}
		virtq_disable_notify(&q->vq);
		if (!deliver(vn, q)) {
			/* Out of buffers: wait for the guest's kick on the receive queue. */
			if (q->vq.broken || !virtq_enable_notify(&q->vq)) {
				vn->rx_blocked = true;
				break;
			}
			continue; /* buffers arrived meanwhile */
		}
		vn->rx_len = 0;
	}
	virtq_enable_notify(&q->vq);
	if (q->vq.broken)
		virtio_set_needs_reset(&vn->vdev);
	virtio_queue_interrupt(q);
}

/* --- transmit --- */

static void tx_work(struct virtio_net *vn)
{
	struct virtio_queue *q = &vn->vdev.q[TXQ];
	struct virtq_req req;
	int r;

	if (!q->enabled || q->vq.broken)
		return;
	vn->tx_blocked = false;
	for (;;) {
		virtq_disable_notify(&q->vq);
		while ((r = virtq_pop(&q->vq, &req)) != 0) {
			struct iovec iov[VIRTQ_MAX_SEGS];
			ssize_t n;
			if (r < 0) {
				if (q->vq.broken)
					break;
				continue;
			}
			for (unsigned i = 0; i < req.nout; i++)
				iov[i] = (struct iovec){req.out[i].addr, req.out[i].len};
			if (req.out_bytes <= NETDEV_HDR_LEN || req.out_bytes > VNET_MAX_FRAME)
				n = -EINVAL;
			else
				n = netdev_send(vn->nd, iov, req.nout);
			if (n == -EAGAIN) {
				virtq_unpop(&q->vq, 1);
				vn->tx_blocked = true;
				break;
			}
			if (n < 0) {
				atomic_fetch_add_explicit(&vn->stats.tx_dropped, 1,
				                          memory_order_relaxed);
				log_ratelimited(
				    &net_rl, LOG_WARN, "%s: %llu-byte frame dropped: %s", vn->name,
				    (unsigned long long)req.out_bytes, strerror((int)-n));
			} else {
				atomic_fetch_add_explicit(&vn->stats.tx_packets, 1,
				                          memory_order_relaxed);
				atomic_fetch_add_explicit(&vn->stats.tx_bytes,
				                          req.out_bytes - NETDEV_HDR_LEN,
				                          memory_order_relaxed);
			}
			virtq_push(&q->vq, req.head, 0);
		}
		if (q->vq.broken || vn->tx_blocked)
			break;
		if (!virtq_enable_notify(&q->vq))
			break;
	}
	if (vn->tx_blocked)
		virtq_enable_notify(&q->vq);
	if (q->vq.broken)
		virtio_set_needs_reset(&vn->vdev);
	virtio_queue_interrupt(q);
	set_watch(vn);
}

/* --- vhost-net --- */

/*
 * With vhost-net the kernel serves both queues from DRIVER_OK to reset: it waits on the
 * kick eventfds itself (the transport stops watching them, virtio_queue_set_external)
 * and moves frames between the rings and the tap, which our iothread no longer reads.
 * What it writes when the driver is due an interrupt (its call fd) is, per ring:
 *  - the MSI-X vector's own irqfd, when the vector is enabled, unmasked and routed in
 *    KVM: the interrupt then goes from the vhost worker to the vCPU with no thread of
 *    ours in between (QEMU does the same);
 *  - otherwise a relay eventfd the iothread watches, which raises the interrupt through
 *    the transport (msix_notify keeps a masked vector's pending bit; INTx sets the ISR).
 * The msix watch switches between the two whenever the vector changes, and when it
 * moves to the irqfd it raises an interrupt the relay had taken but not yet delivered.
 * Stopping a ring (reset, snapshot) returns the avail position, which goes into the
 * transport's struct virtq as if we had served the ring ourselves, so a snapshot or a
 * later start (vhost or ours) carries on from there.
 */

static const uint64_t vhost_ring_features =
    1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_F_INDIRECT_DESC | 1ull << VIRTIO_F_EVENT_IDX |
    1ull << VIRTIO_NET_F_MRG_RXBUF;

/* msix lock held. Points each started ring's call fd where it should be now. */
static void vhost_update_calls(struct virtio_net *vn)
{
	char err[200];

	for (unsigned i = 0; i < 2; i++) {
		struct virtio_net_vring *r = &vn->vring[i];
		int fd;
		uint64_t n;

		if (!r->started)
			continue;
		fd = msix_direct_fd_locked(&vn->vdev.msix, r->vector);
		if (fd < 0)
			fd = r->relay_fd;
		if (fd == r->call_fd)
			continue;
		if (vhost_net_set_call(&vn->vhost, i, fd, err, sizeof(err)) < 0) {
			log_ratelimited(&net_rl, LOG_WARN, "%s: %s", vn->name, err);
			continue;
		}
		r->call_fd = fd;
		/* Relayed but not raised yet (the vector was masked): raise it now. */
		if (fd != r->relay_fd && read(r->relay_fd, &n, sizeof(n)) == sizeof(n) &&
		    write(fd, &(uint64_t){1}, sizeof(uint64_t)) < 0) {
			/* counter saturated: an interrupt is pending anyway */
		}
	}
}

static void vhost_vector_changed(void *opaque, unsigned v)
{
	struct virtio_net *vn = opaque;

	(void)v;
	if (vn->vhost_running)
		vhost_update_calls(vn);
}

static void vhost_relay_ready(void *opaque, uint32_t events)
{
	struct virtio_queue *q = opaque;
	struct virtio_net *vn = container_of(q->dev, struct virtio_net, vdev);
	uint64_t n;

	(void)events;
	if (read(vn->vring[q->index].relay_fd, &n, sizeof(n)) == sizeof(n))
		virtio_queue_raise(q);
}

static void vhost_err_ready(void *opaque, uint32_t events)
{
	struct virtio_queue *q = opaque;
	struct virtio_net *vn = container_of(q->dev, struct virtio_net, vdev);
	uint64_t n;

	(void)events;
	if (read(vn->vring[q->index].err_fd, &n, sizeof(n)) != sizeof(n))
		return;
	log_ratelimited(&net_rl, LOG_WARN, "%s: vhost-net stopped queue %u: bad ring contents",
	                vn->name, q->index);
	q->vq.broken = true;
	virtio_set_needs_reset(&vn->vdev);
}

/* Hands ring i back from the kernel: its positions into q->vq, kicks to the iothread. */
static void vhost_stop_ring(struct virtio_net *vn, unsigned i)
{
	struct virtio_net_vring *r = &vn->vring[i];
	struct virtio_queue *q = &vn->vdev.q[i];
	uint16_t base;
	uint64_t n;
	char err[200];

	if (!r->started)
		return;
	r->started = false;
	if (vhost_net_stop_ring(&vn->vhost, i, &base, err, sizeof(err)) < 0) {
		/* Cannot happen for a ring that started; keep what we have. */
		log_warn("%s: %s", vn->name, err);
		base = q->vq.last_avail;
	}
	iothread_del(vn->vdev.io, r->relay_fd);
	iothread_del(vn->vdev.io, r->err_fd);
	if (read(r->err_fd, &n, sizeof(n)) < 0) {
		/* none */
	}
	virtq_resume_from(&q->vq, base);
	if (read(r->relay_fd, &n, sizeof(n)) == sizeof(n))
		virtio_queue_raise(q);
	virtio_queue_set_external(q, false);
}

static void vhost_stop(struct virtio_net *vn)
{
	msix_lock(&vn->vdev.msix);
	vn->vhost_running = false;
	msix_unlock(&vn->vdev.msix);
	for (unsigned i = 0; i < 2; i++)
		vhost_stop_ring(vn, i);
}

/* iothread, at DRIVER_OK or after a snapshot: hands the live queues to the kernel.
 * Returns false (nothing handed over) if vhost-net cannot serve them. */
static bool vhost_start(struct virtio_net *vn)
{
	struct virtio_dev *d = &vn->vdev;
	uint64_t want = d->driver_features & vhost_ring_features;
	char err[200];
	int r;

	if (vn->vhost.fd < 0 || vn->vhost_failed)
		return false;
	if (want & ~vn->vhost.features) {
		log_info("%s: the driver's features 0x%llx need what vhost-net lacks (0x%llx); "
		         "using our own data path",
		         vn->name, (unsigned long long)d->driver_features,
		         (unsigned long long)(want & ~vn->vhost.features));
		return false;
	}
	r = vhost_net_set_features(&vn->vhost, d->driver_features, err, sizeof(err));
	if (r == 0)
		r = vhost_net_set_mem(&vn->vhost, d->mem, err, sizeof(err));
	for (unsigned i = 0; i < 2 && r == 0; i++) {
		struct virtio_queue *q = &d->q[i];
		struct virtio_net_vring *vr = &vn->vring[i];
		struct vhost_ring ring = {
		    .index = i,
		    .size = q->vq.size,
		    .base = q->vq.last_avail,
		    .desc = q->vq.desc,
		    .avail = q->vq.avail,
		    .used = q->vq.used,
		    .kick_fd = q->kick_fd,
		    .call_fd = vr->relay_fd,
		    .err_fd = vr->err_fd,
		    .backend_fd = netdev_fd(vn->nd),
		};
		if (!q->enabled || q->vq.broken || !q->vq.size)
			continue;
		r = virtio_queue_set_external(q, true);
		if (r == 0)
			r = iothread_add(d->io, vr->relay_fd, EPOLLIN, vhost_relay_ready, q);
		if (r == 0)
			r = iothread_add(d->io, vr->err_fd, EPOLLIN, vhost_err_ready, q);
		if (r < 0) {
			snprintf(err, sizeof(err), "cannot watch its eventfds: %s", strerror(-r));
			iothread_del(d->io, vr->relay_fd);
			virtio_queue_set_external(q, false);
			break;
		}
		vr->vector = q->msix_vector;
		vr->call_fd = vr->relay_fd;
		vr->started = true;
		r = vhost_net_start_ring(&vn->vhost, &ring, err, sizeof(err));
	}
	if (r < 0) {
		vhost_stop(vn);
		vn->vhost_failed = true;
		log_warn("%s: %s — using our own data path", vn->name, err);
		return false;
	}
	msix_lock(&d->msix);
	vn->vhost_running = true;
	vhost_update_calls(vn);
	msix_unlock(&d->msix);
	/* Buffers the driver queued before this: have the kernel look. */
	for (unsigned i = 0; i < 2; i++)
		if (vn->vring[i].started &&
		    write(d->q[i].kick_fd, &(uint64_t){1}, sizeof(uint64_t)) < 0) {
			/* counter saturated: a kick is pending anyway */
		}
	return true;
}

bool virtio_net_vhost_active(struct virtio_net *vn)
{
	bool on;

	msix_lock(&vn->vdev.msix);
	on = vn->vhost_running;
	msix_unlock(&vn->vdev.msix);
	return on;
}

/* --- iothread entry points --- */

static void backend_ready(void *opaque, uint32_t events)
{
	struct virtio_net *vn = opaque;

	if (!vn->vdev.running)
		return;
	if (events & EPOLLOUT)
		tx_work(vn);
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		rx_work(vn);
	set_watch(vn);
}

static void net_notify(struct virtio_dev *d, unsigned qi)
{
	struct virtio_net *vn = container_of(d, struct virtio_net, vdev);

	if (vn->vhost_running)
		return; /* the kernel has the queues (a look after start, or a restore) */
	if (qi == TXQ) {
		tx_work(vn);
	} else if (qi == RXQ) {
		vn->rx_blocked = false;
		rx_work(vn);
		set_watch(vn);
	}
}

static void net_start(struct virtio_dev *d)
{
	struct virtio_net *vn = container_of(d, struct virtio_net, vdev);
	int r;

	vn->mrg_rxbuf = virtio_has_feature(d, VIRTIO_NET_F_MRG_RXBUF);
	if (netdev_has_offloads(vn->nd)) {
		r = netdev_set_offloads(vn->nd, virtio_has_feature(d, VIRTIO_NET_F_GUEST_CSUM),
		                        virtio_has_feature(d, VIRTIO_NET_F_GUEST_TSO4),
		                        virtio_has_feature(d, VIRTIO_NET_F_GUEST_TSO6),
		                        virtio_has_feature(d, VIRTIO_NET_F_GUEST_ECN), false);
		if (r < 0)
			log_warn("%s: %s refused the offloads: %s", vn->name, netdev_name(vn->nd),
			         strerror(-r));
	}
	vn->rx_len = 0;
	vn->rx_blocked = vn->tx_blocked = false;
	if (vhost_start(vn))
		return;
	vn->watch = EPOLLIN;
	r = iothread_add(d->io, netdev_fd(vn->nd), EPOLLIN, backend_ready, vn);
	if (r < 0)
		log_err("%s: cannot watch %s: %s", vn->name, netdev_name(vn->nd), strerror(-r));
	vn->tap_watched = r == 0;
}

static void net_reset(struct virtio_dev *d)
{
	struct virtio_net *vn = container_of(d, struct virtio_net, vdev);

	if (vn->vhost_running)
		vhost_stop(vn);
	if (vn->tap_watched)
		iothread_del(d->io, netdev_fd(vn->nd));
	vn->tap_watched = false;
	vn->rx_len = 0;
}

/* Snapshot: the kernel gives the rings back (positions into the transport's state, which
 * is what gets saved) and takes them again afterwards. Our own path needs nothing. */
static void net_quiesce(struct virtio_dev *d)
{
	struct virtio_net *vn = container_of(d, struct virtio_net, vdev);

	vn->vhost_resume = vn->vhost_running;
	if (vn->vhost_running)
		vhost_stop(vn);
}

static void net_unquiesce(struct virtio_dev *d)
{
	struct virtio_net *vn = container_of(d, struct virtio_net, vdev);

	if (vn->vhost_resume && d->running && !vhost_start(vn))
		net_start(d); /* the kernel refused: serve the queues ourselves */
	vn->vhost_resume = false;
}

static void net_cfg_read(struct virtio_dev *d, uint32_t off, void *data, unsigned len)
{
	struct virtio_net *vn = container_of(d, struct virtio_net, vdev);
	uint8_t c[CFG_SIZE] = {0};

	memcpy(c, vn->mac, 6);
	put_le16(c + 6, VIRTIO_NET_S_LINK_UP);
	put_le16(c + 8, 1);
	memcpy(data, c + off, len);
}

static const struct virtio_dev_ops net_ops = {.cfg_read = net_cfg_read,
                                              .start = net_start,
                                              .queue_notify = net_notify,
                                              .reset = net_reset,
                                              .quiesce = net_quiesce,
                                              .unquiesce = net_unquiesce};

/* Opens /dev/vhost-net and the ring eventfds if nc asks for vhost and the backend is a tap. */
static int vhost_open(struct virtio_net *vn, const struct net_config *nc, char *err, size_t errlen)
{
	char why[200];

	if (nc->vhost == VHOST_OFF || !netdev_is_tap(vn->nd))
		return 0;
	if (vhost_net_open(&vn->vhost, why, sizeof(why)) < 0) {
		if (nc->vhost == VHOST_ON) {
			snprintf(err, errlen, "%s (%s): %s", vn->name, netdev_name(vn->nd), why);
			return -ENODEV;
		}
		log_debug("%s: %s; using our own data path", vn->name, why);
		return 0;
	}
	for (unsigned i = 0; i < 2; i++) {
		vn->vring[i].relay_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		vn->vring[i].err_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (vn->vring[i].relay_fd < 0 || vn->vring[i].err_fd < 0) {
			int e = errno;
			snprintf(err, errlen, "%s: eventfd: %s", vn->name, strerror(e));
			return -e;
		}
	}
	log_info("%s: vhost-net serves %s", vn->name, netdev_name(vn->nd));
	return 0;
}

static void release(struct virtio_net *vn)
{
	vhost_net_close(&vn->vhost);
	for (unsigned i = 0; i < 2; i++) {
		if (vn->vring[i].relay_fd >= 0)
			close(vn->vring[i].relay_fd);
		if (vn->vring[i].err_fd >= 0)
			close(vn->vring[i].err_fd);
		vn->vring[i].relay_fd = vn->vring[i].err_fd = -1;
	}
	free(vn->rx_buf);
	free(vn->rx_reqs);
	vn->rx_buf = NULL;
	vn->rx_reqs = NULL;
}

int virtio_net_create(struct virtio_net *vn, unsigned index, const struct net_config *nc,
                      struct hv *hv, const struct guest_mem *mem, struct pci_bus *bus, char *err,
                      size_t errlen)
{
	uint64_t features =
	    1ull << VIRTIO_NET_F_MAC | 1ull << VIRTIO_NET_F_STATUS | 1ull << VIRTIO_NET_F_MRG_RXBUF;
	struct virtio_pci_params p = {
	    .device_id = VIRTIO_ID_NET,
	    .pci_class = 0x020000,
	    .nqueues = 2,
	    .queue_size = QUEUE_SIZE,
	    .cfg_size = CFG_SIZE,
	    .ops = &net_ops,
	};
	int r;

	memset(vn, 0, sizeof(*vn));
	snprintf(vn->name, sizeof(vn->name), "virtio-net%u", index);
	vn->nd = nc->nd;
	memcpy(vn->mac, nc->mac, 6);
	vn->vhost.fd = -1;
	for (unsigned i = 0; i < 2; i++)
		vn->vring[i].relay_fd = vn->vring[i].err_fd = vn->vring[i].call_fd = -1;
	if (netdev_has_offloads(vn->nd))
		features |= 1ull << VIRTIO_NET_F_CSUM | 1ull << VIRTIO_NET_F_GUEST_CSUM |
		            1ull << VIRTIO_NET_F_HOST_TSO4 | 1ull << VIRTIO_NET_F_HOST_TSO6 |
		            1ull << VIRTIO_NET_F_HOST_ECN | 1ull << VIRTIO_NET_F_GUEST_TSO4 |
		            1ull << VIRTIO_NET_F_GUEST_TSO6 | 1ull << VIRTIO_NET_F_GUEST_ECN;
	p.name = vn->name;
	p.features = features;
	r = vhost_open(vn, nc, err, errlen);
	if (r < 0)
		return r;
	vn->rx_buf = malloc(VNET_MAX_FRAME);
	vn->rx_reqs = calloc(VNET_RX_CHAINS, sizeof(*vn->rx_reqs));
	if (!vn->rx_buf || !vn->rx_reqs) {
		snprintf(err, errlen, "%s: out of memory", vn->name);
		r = -ENOMEM;
	} else {
		r = virtio_pci_init(&vn->vdev, &p, hv, mem, bus, err, errlen);
	}
	if (r < 0) {
		release(vn);
		return r;
	}
	if (vn->vhost.fd >= 0)
		msix_set_watch(&vn->vdev.msix, vhost_vector_changed, vn);
	return 0;
}

void virtio_net_destroy(struct virtio_net *vn)
{
	virtio_pci_destroy(&vn->vdev); /* resets: vhost gives the rings back */
	release(vn);
}

int virtio_net_save(struct virtio_net *vn, struct snap_writer *w, uint32_t inst)
{
	return virtio_pci_save(&vn->vdev, w, VIRTIO_PCI_STATE_INST(VIRTIO_ID_NET, inst));
}

int virtio_net_load(struct virtio_net *vn, const struct snap_reader *r, uint32_t inst, char *err,
                    size_t errlen)
{
	return virtio_pci_load(&vn->vdev, r, VIRTIO_PCI_STATE_INST(VIRTIO_ID_NET, inst), err,
	                       errlen);
}
