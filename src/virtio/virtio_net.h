/* virtio_net.h: virtio network device (virtio 1.2 section 5.1) on a tap or passt backend. */
#ifndef VMSTACK_VIRTIO_NET_H
#define VMSTACK_VIRTIO_NET_H

#include <stdatomic.h>

#include "config.h"
#include "netdev.h"
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
	uint32_t watch; /* epoll events currently asked for on the backend fd */
	struct virtio_net_stats stats;
};

int virtio_net_create(struct virtio_net *vn, unsigned index, const struct net_config *nc,
                      struct hv *hv, const struct guest_mem *mem, struct pci_bus *bus, char *err,
                      size_t errlen);
void virtio_net_destroy(struct virtio_net *vn);

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
