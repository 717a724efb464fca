/* netdev.h: host ends of a guest network interface (tap, passt user networking). */
#ifndef VMSTACK_NETDEV_H
#define VMSTACK_NETDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/*
 * Every frame crossing this interface starts with a 12-byte struct virtio_net_hdr_v1
 * (virtio 1.2 5.1.6: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
 * num_buffers), so the virtio-net device passes guest buffers through untouched:
 *  - tap: opened with IFF_VNET_HDR and TUNSETVNETHDRSZ 12, the kernel reads and writes
 *    that header itself; offloads (TUNSETOFFLOAD) follow what the guest negotiated.
 *  - passt: frames travel over a stream socket as QEMU's "stream" netdev does (each
 *    frame prefixed by its length, 32-bit big-endian, no virtio header); the backend
 *    strips the header on send (frames must then be complete: no offloads are offered)
 *    and prepends a zeroed one on receive.
 */
#define NETDEV_HDR_LEN 12

struct netdev;

enum netdev_kind { NETDEV_TAP, NETDEV_USER };

struct netdev_opts {
	enum netdev_kind kind;
	const char *ifname; /* tap: name; created if absent (needs CAP_NET_ADMIN) */
	int fd;             /* tap: an already-open tap fd handed in (fd=N), or -1 */
	/* user: passt's addresses; NULL = defaults 10.0.2.15/24, gateway 10.0.2.2, like
	 * QEMU's user networking. Connections to the gateway reach the host's loopback. */
	const char *user_addr, *user_gw;
	unsigned user_prefix;
};

/*
 * Opens the backend. NULL + one line in err naming it, the problem and the fix:
 *   "tap vm0: permission denied creating the interface — run as root, or create it with
 *    `ip tuntap add vm0 mode tap user $USER` first"
 *   "--net user: passt not found — install it (apt-get install passt)"
 */
struct netdev *netdev_open(const struct netdev_opts *opts, char *err, size_t errlen);
void netdev_close(struct netdev *nd);

const char *netdev_name(const struct netdev *nd); /* "tap vm0", "user (passt pid N)" */

/* An fd to poll: EPOLLIN when a frame may be received, EPOLLOUT when sending may resume. */
int netdev_fd(const struct netdev *nd);

/* Can the host end take partial checksums / TSO (i.e. a tap with vnet headers)? */
bool netdev_has_offloads(const struct netdev *nd);
/* Tells the host end which offloads the guest accepts on receive (VIRTIO_NET_F_GUEST_*). */
int netdev_set_offloads(struct netdev *nd, bool csum, bool tso4, bool tso6, bool ecn, bool ufo);

/*
 * Sends one frame (header + packet, gathered from iov). Returns the bytes consumed, or
 * -EAGAIN when the host end is full (poll netdev_fd for EPOLLOUT and retry the same
 * frame), or another -errno: the frame is dropped.
 */
ssize_t netdev_send(struct netdev *nd, const struct iovec *iov, unsigned iovcnt);

/*
 * Receives one frame (header + packet) into iov. Returns its length, -EAGAIN when none
 * is waiting, -EMSGSIZE if it did not fit (the frame is dropped), or another -errno.
 */
ssize_t netdev_recv(struct netdev *nd, const struct iovec *iov, unsigned iovcnt);

/* A tap, whose netdev_fd() vhost-net can serve (vhost_net.h)? */
bool netdev_is_tap(const struct netdev *nd);

/*
 * A tap's own counters, as the guest sees them (the tap's tx is the guest's rx), from
 * /sys/class/net/<its current name>/statistics: what counts frames when vhost-net moves
 * them and the monitor never sees one. Order: rx_packets, rx_bytes, tx_packets,
 * tx_bytes, rx_dropped, tx_dropped. Returns 0, or -errno (not a tap: -ENOTTY).
 */
int netdev_tap_counters(const struct netdev *nd, uint64_t out[6]);

#endif
