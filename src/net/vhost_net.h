/* vhost_net.h: the kernel's vhost-net (/dev/vhost-net) as a virtio-net data path. */
#ifndef VMSTACK_VHOST_NET_H
#define VMSTACK_VHOST_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct guest_mem;

/*
 * vhost-net moves frames between a virtqueue in guest RAM and a tap in the kernel: a
 * kick eventfd wakes its worker, which reads the avail ring and the buffers through
 * our process's mappings of guest RAM (the memory table below), hands the frames to
 * the tap's socket, fills the used ring and writes a call eventfd. So, with KVM's
 * ioeventfd on the kick side and an irqfd on the call side, a packet crosses no
 * userspace thread at all. What stays ours: feature negotiation, the memory table, where
 * the rings are and where they start (the avail position), and stopping a ring, which
 * returns that position (VHOST_GET_VRING_BASE) for a reset or a snapshot.
 *
 * The tap must carry 12-byte virtio-net headers (IFF_VNET_HDR + TUNSETVNETHDRSZ, as
 * tap.c opens it): without VHOST_NET_F_VIRTIO_NET_HDR, vhost passes the guest's header
 * to the tap untouched and the tap does checksums and segmentation, as it does for our
 * own path. Checking the guest's descriptors is the kernel's work here (it fails a bad
 * ring and reports through the error eventfd); ring placement was checked by virtq_init().
 *
 * Every function returns 0 or -errno, with one line in err naming the operation.
 */

#define VHOST_NET_PATH "/dev/vhost-net"

struct vhost_net {
	int fd;
	uint64_t features; /* what this vhost-net can do (VHOST_GET_FEATURES) */
};

/*
 * Opens /dev/vhost-net and makes this process its owner (the worker then works in our
 * address space). Errors say what to do: "/dev/vhost-net: No such file or directory —
 * modprobe vhost_net (or say vhost=off)".
 */
int vhost_net_open(struct vhost_net *vh, char *err, size_t errlen);
void vhost_net_close(struct vhost_net *vh);

/* Features as negotiated with the driver; bits vhost does not know are left out
 * (device features such as checksum offload are the tap's, not vhost's). */
int vhost_net_set_features(struct vhost_net *vh, uint64_t features, char *err, size_t errlen);

/* Guest RAM, region by region, as the worker will translate guest addresses. */
int vhost_net_set_mem(struct vhost_net *vh, const struct guest_mem *mem, char *err, size_t errlen);

/* One ring, as the transport knows it once the queue is live. */
struct vhost_ring {
	unsigned index;               /* 0 receive, 1 transmit */
	uint16_t size;                /* queue size */
	uint16_t base;                /* avail position to start from (last_avail) */
	void *desc, *avail, *used;    /* host addresses of the three areas */
	int kick_fd, call_fd, err_fd; /* eventfds; err_fd may be -1 */
	int backend_fd;               /* the tap */
};

/* Sets the ring up and attaches the tap; from then on the kernel serves the queue. */
int vhost_net_start_ring(struct vhost_net *vh, const struct vhost_ring *r, char *err,
                         size_t errlen);
/* Another call eventfd for a running ring (the vector was masked or unmasked). */
int vhost_net_set_call(struct vhost_net *vh, unsigned index, int call_fd, char *err, size_t errlen);
/* Detaches the tap and stops the ring; *base gets the avail position to resume from.
 * When this returns the worker no longer touches the ring. */
int vhost_net_stop_ring(struct vhost_net *vh, unsigned index, uint16_t *base, char *err,
                        size_t errlen);

#endif
