/* netdev.c: dispatch from the public netdev API to a backend's ops, and shared helpers. */
#include "netdev.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vhost.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "log.h"
#include "netdev_internal.h"
#include "util.h"

/*
 * Each backend (tap.c, passt.c) embeds struct netdev and fills in its ops; this file only
 * forwards. The design notes of each backend sit at the top of its own file.
 */

void netdev_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

size_t netdev_iov_len(const struct iovec *iov, unsigned iovcnt)
{
	size_t total = 0;

	for (unsigned i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > SIZE_MAX - total)
			return SIZE_MAX;
		total += iov[i].iov_len;
	}
	return total;
}

void netdev_iov_write(const struct iovec *iov, unsigned iovcnt, size_t skip, const void *src,
                      size_t len)
{
	const uint8_t *from = src;

	for (unsigned i = 0; i < iovcnt && len; i++) {
		size_t n = iov[i].iov_len;

		if (skip >= n) {
			skip -= n;
			continue;
		}
		n = MIN(n - skip, len);
		memcpy((uint8_t *)iov[i].iov_base + skip, from, n);
		from += n;
		len -= n;
		skip = 0;
	}
}

struct netdev *netdev_open(const struct netdev_opts *opts, char *err, size_t errlen)
{
	if (!opts) {
		netdev_err(err, errlen, "netdev: no options given");
		return NULL;
	}
	switch (opts->kind) {
	case NETDEV_TAP:
		return tap_open(opts, err, errlen);
	case NETDEV_USER:
		return passt_open(opts, NULL, err, errlen);
	}
	netdev_err(err, errlen, "netdev: unknown backend kind %d", (int)opts->kind);
	return NULL;
}

void netdev_close(struct netdev *nd)
{
	if (nd)
		nd->ops->close(nd);
}

const char *netdev_name(const struct netdev *nd)
{
	return nd->name;
}

int netdev_fd(const struct netdev *nd)
{
	return nd->fd;
}

bool netdev_has_offloads(const struct netdev *nd)
{
	return nd->has_offloads;
}

int netdev_set_offloads(struct netdev *nd, bool csum, bool tso4, bool tso6, bool ecn, bool ufo)
{
	unsigned off = (csum ? NETDEV_OFF_CSUM : 0) | (tso4 ? NETDEV_OFF_TSO4 : 0) |
	               (tso6 ? NETDEV_OFF_TSO6 : 0) | (ecn ? NETDEV_OFF_ECN : 0) |
	               (ufo ? NETDEV_OFF_UFO : 0);

	return nd->ops->set_offloads(nd, off);
}

ssize_t netdev_send(struct netdev *nd, const struct iovec *iov, unsigned iovcnt)
{
	return nd->ops->send(nd, iov, iovcnt);
}

ssize_t netdev_recv(struct netdev *nd, const struct iovec *iov, unsigned iovcnt)
{
	return nd->ops->recv(nd, iov, iovcnt);
}

/*
 * Only detects the device for now: a vhost-net backend would also need the tap fd and
 * the guest memory table, which is the virtio-net device's business.
 */
bool netdev_vhost_available(char *why, size_t whylen)
{
	const char *path = "/dev/vhost-net";
	uint64_t features;
	int fd, e;

	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		e = errno;
		netdev_err(why, whylen, "%s: %s — %s", path, strerror(e),
		           e == ENOENT   ? "modprobe vhost_net"
		           : e == EACCES ? "run as root or give this user access to it"
		                         : "check that the vhost_net module works");
		return false;
	}
	if (ioctl(fd, VHOST_GET_FEATURES, &features) < 0) {
		e = errno;
		netdev_err(why, whylen,
		           "%s: VHOST_GET_FEATURES: %s — not a working vhost-net device", path,
		           strerror(e));
		close(fd);
		return false;
	}
	close(fd);
	netdev_err(why, whylen, "%s: available (features %#llx)", path,
	           (unsigned long long)features);
	return true;
}
