/* netdev.c: dispatch from the public netdev API to a backend's ops, and shared helpers. */
#include "netdev.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
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

bool netdev_is_tap(const struct netdev *nd)
{
	return nd->is_tap;
}

int netdev_tap_counters(const struct netdev *nd, uint64_t out[6])
{
	/* The tap's names for what the guest calls rx_packets, rx_bytes, ... */
	static const char *const names[6] = {"tx_packets", "tx_bytes",   "rx_packets",
	                                     "rx_bytes",   "tx_dropped", "rx_dropped"};
	struct ifreq ifr = {0};

	if (!nd->is_tap)
		return -ENOTTY;
	if (ioctl(nd->fd, TUNGETIFF, &ifr) < 0)
		return -errno;
	for (unsigned i = 0; i < 6; i++) {
		char path[96];
		unsigned long long v;
		FILE *f;
		int n;

		snprintf(path, sizeof(path), "/sys/class/net/%.*s/statistics/%s", IFNAMSIZ,
		         ifr.ifr_name, names[i]);
		f = fopen(path, "re");
		if (!f)
			return -errno;
		n = fscanf(f, "%llu", &v);
		fclose(f);
		if (n != 1)
			return -EIO;
		out[i] = v;
	}
	return 0;
}
