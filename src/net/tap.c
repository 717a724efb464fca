/* tap.c: tap backend: frames with virtio-net headers straight through /dev/net/tun. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"
#include "netdev_internal.h"
#include "util.h"

/*
 * The tap is opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a 12-byte vnet header
 * (TUNSETVNETHDRSZ), which is exactly struct virtio_net_hdr_v1: the kernel parses the
 * header of each frame we write (partial checksum, GSO) and fills one in on each frame
 * we read, so send and recv are plain writev and readv.
 *
 * TUNSETIFF on a name that does not exist creates a non-persistent tap which vanishes
 * when we close it; on an existing one (`ip tuntap add NAME mode tap user $USER`) it
 * attaches, which needs no privilege for the owner. Either way the link is left as it
 * is: bringing it up, addresses and bridges are the user's business.
 *
 * A read into a short buffer gets what fits of the frame, the rest is dropped, and the
 * kernel returns only the length it copied. So recv reads with one spare byte behind the
 * caller's buffer: when the kernel fills it, the frame did not fit and recv returns
 * -EMSGSIZE. Callers that never want that give 65562 bytes (header + 64 KiB IP packet
 * + Ethernet and VLAN headers); without receive offloads frames are at most MTU + 26.
 */

struct tap {
	struct netdev nd;
	struct ratelimit rl;
	uint8_t spare;                  /* catches the first byte that did not fit */
	struct iovec riov[IOV_MAX + 1]; /* the caller's iov + spare */
};

#define tap_warn(t, fmt, ...)                                                                      \
	log_ratelimited(&(t)->rl, LOG_WARN, "%s: " fmt, (t)->nd.name, ##__VA_ARGS__)

static ssize_t tap_send(struct netdev *nd, const struct iovec *iov, unsigned iovcnt)
{
	ssize_t n = writev(nd->fd, iov, (int)iovcnt);

	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return n;
}

static ssize_t tap_recv(struct netdev *nd, const struct iovec *iov, unsigned iovcnt)
{
	struct tap *t = container_of(nd, struct tap, nd);
	size_t room = netdev_iov_len(iov, iovcnt);
	unsigned cnt = iovcnt;
	ssize_t n;

	/* With IOV_MAX entries already there is no slot for the spare byte: no detection. */
	if (iovcnt < IOV_MAX) {
		memcpy(t->riov, iov, iovcnt * sizeof(*iov));
		t->riov[cnt++] = (struct iovec){&t->spare, 1};
		iov = t->riov;
	}
	n = readv(nd->fd, iov, (int)cnt);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	if ((size_t)n > room) {
		tap_warn(t, "dropped a frame larger than the %zu-byte buffer", room);
		return -EMSGSIZE;
	}
	/* Older kernels skip num_buffers rather than zero it; the device fills it in. */
	if (n >= NETDEV_HDR_LEN)
		netdev_iov_write(iov, iovcnt, 10, (const uint8_t[2]){0, 0}, 2);
	return n;
}

static unsigned tap_tun_flags(unsigned off)
{
	unsigned f = 0;

	f |= off & NETDEV_OFF_CSUM ? TUN_F_CSUM : 0;
	f |= off & NETDEV_OFF_TSO4 ? TUN_F_TSO4 : 0;
	f |= off & NETDEV_OFF_TSO6 ? TUN_F_TSO6 : 0;
	f |= off & NETDEV_OFF_ECN ? TUN_F_TSO_ECN : 0;
	f |= off & NETDEV_OFF_UFO ? TUN_F_UFO : 0;
	return f;
}

static int tap_set_offloads(struct netdev *nd, unsigned off)
{
	unsigned long f = tap_tun_flags(off);

	if (ioctl(nd->fd, TUNSETOFFLOAD, f) == 0)
		return 0;
	/* Kernels since 4.14 refuse UFO: the guest then gets UDP as ordinary frames. */
	if (errno == EINVAL && (f & TUN_F_UFO) &&
	    ioctl(nd->fd, TUNSETOFFLOAD, f & ~(unsigned long)TUN_F_UFO) == 0) {
		log_debug("%s: kernel refuses UFO, offloading without it", nd->name);
		return 0;
	}
	log_warn("%s: TUNSETOFFLOAD %#lx: %s", nd->name, f, strerror(errno));
	return -errno;
}

static void tap_close(struct netdev *nd)
{
	close(nd->fd);
	free(container_of(nd, struct tap, nd));
}

static const struct netdev_ops tap_ops = {
    .send = tap_send,
    .recv = tap_recv,
    .set_offloads = tap_set_offloads,
    .close = tap_close,
};

/* One line for a TUNSETIFF on `name` that failed with e: the problem and the fix. */
static void tap_setiff_error(const char *name, int e, char *err, size_t errlen)
{
	switch (e) {
	case EPERM:
	case EACCES:
		netdev_err(err, errlen,
		           "tap %s: permission denied creating the interface — run as root, or "
		           "create it with `ip tuntap add %s mode tap user $USER` first",
		           name, name);
		break;
	case EBUSY:
		netdev_err(err, errlen,
		           "tap %s: in use by another process — stop it, or pick another name",
		           name);
		break;
	case EINVAL:
		if (if_nametoindex(name))
			netdev_err(err, errlen,
			           "tap %s: an interface of that name exists and is not a "
			           "single-queue tap — pick another name",
			           name);
		else
			netdev_err(err, errlen,
			           "tap %s: invalid interface name — pick another name", name);
		break;
	default:
		netdev_err(err, errlen, "tap %s: TUNSETIFF: %s", name, strerror(e));
	}
}

/* Opens /dev/net/tun and attaches to (or creates) the tap `name` ("" lets the kernel pick). */
static int tap_create(const char *name, char *ifname, char *err, size_t errlen)
{
	struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR};
	const char *shown = name[0] ? name : "(unnamed)";
	int fd, e;

	if (strlen(name) >= IFNAMSIZ) {
		netdev_err(err, errlen, "tap %s: interface name too long — %d characters at most",
		           name, IFNAMSIZ - 1);
		return -1;
	}
	fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		e = errno;
		netdev_err(err, errlen, "tap %s: /dev/net/tun: %s — %s", shown, strerror(e),
		           e == ENOENT ? "load the tun module (modprobe tun)"
		                       : "run as root, or give this user access to /dev/net/tun");
		return -1;
	}
	memcpy(ifr.ifr_name, name, strlen(name));
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		e = errno;
		close(fd);
		tap_setiff_error(shown, e, err, errlen);
		return -1;
	}
	memcpy(ifname, ifr.ifr_name, IFNAMSIZ);
	return fd;
}

/* Checks an fd handed in by the user: a tap with the flags tap_create would have set. */
static int tap_adopt(int fd, char *ifname, char *err, size_t errlen)
{
	struct ifreq ifr = {0};
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0) {
		netdev_err(err, errlen, "tap fd %d: %s — pass an fd that is open in this process",
		           fd, strerror(errno));
		return -1;
	}
	if (ioctl(fd, TUNGETIFF, &ifr) < 0) {
		netdev_err(err, errlen,
		           "tap fd %d: not a tap device (TUNGETIFF: %s) — pass an fd of "
		           "/dev/net/tun attached with TUNSETIFF",
		           fd, strerror(errno));
		return -1;
	}
	if ((ifr.ifr_flags & (IFF_TAP | IFF_TUN)) != IFF_TAP) {
		netdev_err(err, errlen,
		           "tap fd %d: %.*s is a tun, not a tap — attach it with IFF_TAP", fd,
		           IFNAMSIZ, ifr.ifr_name);
		return -1;
	}
	if (!(ifr.ifr_flags & IFF_VNET_HDR) || !(ifr.ifr_flags & IFF_NO_PI)) {
		netdev_err(err, errlen,
		           "tap fd %d: opened without %s — attach it with IFF_TAP | IFF_NO_PI | "
		           "IFF_VNET_HDR (QEMU's vnet_hdr=on)",
		           fd, !(ifr.ifr_flags & IFF_VNET_HDR) ? "IFF_VNET_HDR" : "IFF_NO_PI");
		return -1;
	}
	if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		netdev_err(err, errlen, "tap fd %d: fcntl: %s", fd, strerror(errno));
		return -1;
	}
	memcpy(ifname, ifr.ifr_name, IFNAMSIZ);
	return 0;
}

/*
 * With fd >= 0 the tap is adopted: on success netdev_close() closes it, on failure it is
 * left open for the caller.
 */
struct netdev *tap_open(const struct netdev_opts *opts, char *err, size_t errlen)
{
	char ifname[IFNAMSIZ + 1] = {0};
	int hdr_len = NETDEV_HDR_LEN;
	int fd = opts->fd;
	struct tap *t;

	if (fd >= 0) {
		if (tap_adopt(fd, ifname, err, errlen) < 0)
			return NULL;
	} else {
		fd = tap_create(opts->ifname ? opts->ifname : "", ifname, err, errlen);
		if (fd < 0)
			return NULL;
	}
	if (ioctl(fd, TUNSETVNETHDRSZ, &hdr_len) < 0) {
		netdev_err(err, errlen, "tap %s: TUNSETVNETHDRSZ %d: %s — kernel too old?", ifname,
		           hdr_len, strerror(errno));
		goto fail;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		netdev_err(err, errlen, "tap %s: out of memory", ifname);
		goto fail;
	}
	t->nd.ops = &tap_ops;
	t->nd.fd = fd;
	t->rl.interval_ms = 5000;
	t->rl.burst = 5;
	snprintf(t->nd.name, sizeof(t->nd.name), "tap %s", ifname);
	/* The guest accepts no offloads until it negotiates some: start from none. */
	t->nd.has_offloads = ioctl(fd, TUNSETOFFLOAD, 0UL) == 0;
	t->nd.is_tap = true;
	log_debug("%s: opened (fd %d, offloads %s)", t->nd.name, fd,
	          t->nd.has_offloads ? "yes" : "no");
	return &t->nd;
fail:
	if (opts->fd < 0)
		close(fd);
	return NULL;
}
