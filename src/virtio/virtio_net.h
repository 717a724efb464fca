/* virtio_net.h: virtio network device (virtio 1.2 section 5.1) on a tap or passt backend. */
#ifndef VMSTACK_VIRTIO_NET_H
#define VMSTACK_VIRTIO_NET_H

#include <stdatomic.h>

#include "config.h"
#include "netdev.h"
#include "vhost_net.h"
#include "virtio_pci.h"

/* Largest frame with its header: 64 KiB of GSO payload plus headers. */
#define VNET_MAX_FRAME (NETDEV_HDR_LEN + 65550)
/* Most receive chains one frame may take with MRG_RXBUF. */
#define VNET_RX_CHAINS 64

struct virtio_net_stats {
	atomic_uint_fast64_t rx_packets, rx_bytes, rx_dropped, tx_packets, tx_bytes, tx_dropped;
};

struct virtio_net {
	struct virtio_dev vdev;
	char name[24];
	struct netdev *nd;
	uint8_t mac[6];
	bool mrg_rxbuf;
	/* receive: a frame read from the backend that waits for guest buffers */
	uint8_t *rx_buf;
	uint32_t rx_len;
	struct virtq_req *rx_reqs; /* VNET_RX_CHAINS chains being filled with one frame */
	bool rx_blocked;           /* no guest buffers: backend not watched for input */
	/* transmit: a chain the backend could not take yet */
	bool tx_blocked;
	uint32_t watch;   /* epoll events currently asked for on the backend fd */
	bool tap_watched; /* the backend fd is on the iothread */
	struct virtio_net_stats stats;
	/* vhost-net (vhost.fd >= 0): the kernel serves both queues; see virtio_net.c */
	struct vhost_net vhost;
	bool vhost_running; /* rings attached; changed under the msix lock */
	bool vhost_resume;  /* quiesced for a snapshot while running */
	bool vhost_failed;  /* the kernel refused once: our own path from then on */
	struct virtio_net_vring {
		bool started;
		uint16_t vector; /* the queue's MSI-X vector when it started */
		int relay_fd;    /* call eventfd the iothread relays (vector masked, INTx) */
		int err_fd;      /* vhost's error eventfd for the ring */
		int call_fd;     /* what vhost writes now: relay_fd or the vector's irqfd */
	} vring[2];
};

/*
 * Creates the device on nc's backend, opened already. With a tap and nc->vhost auto or
 * on, /dev/vhost-net is opened here, so that vhost=on fails before the guest starts
 * (err: "virtio-net0 (tap vm0): /dev/vhost-net: No such file or directory — modprobe
 * vhost_net (or say vhost=off)"); auto falls back to our own path quietly.
 */
int virtio_net_create(struct virtio_net *vn, unsigned index, const struct net_config *nc,
                      struct hv *hv, const struct guest_mem *mem, struct pci_bus *bus, char *err,
                      size_t errlen);
void virtio_net_destroy(struct virtio_net *vn);

/* vhost-net serves the queues now (any thread; a snapshot of a moving state). */
bool virtio_net_vhost_active(struct virtio_net *vn);

/*
 * Snapshot: the transport's sections (virtio_pci.h) with instance
 * VIRTIO_PCI_STATE_INST(VIRTIO_ID_NET, inst). The rest is derived at load (MRG_RXBUF and
 * the backend offloads from the features, as at DRIVER_OK) or transient: a received frame
 * still waiting for guest buffers is dropped, as a NIC may drop any frame.
 */
int virtio_net_save(struct virtio_net *vn, struct snap_writer *w, uint32_t inst);
int virtio_net_load(struct virtio_net *vn, const struct snap_reader *r, uint32_t inst, char *err,
                    size_t errlen);

#endif
