/* netdev_internal.h: the ops table behind struct netdev, shared by netdev.c, tap.c and passt.c. */
#ifndef VMSTACK_NETDEV_INTERNAL_H
#define VMSTACK_NETDEV_INTERNAL_H

#include "netdev.h"

/* Offloads the guest accepts on receive, as netdev_set_offloads() passes them on. */
enum {
	NETDEV_OFF_CSUM = 1u << 0,
	NETDEV_OFF_TSO4 = 1u << 1,
	NETDEV_OFF_TSO6 = 1u << 2,
	NETDEV_OFF_ECN = 1u << 3,
	NETDEV_OFF_UFO = 1u << 4,
};

/*
 * One backend. netdev.c checks nothing on the way through: each op gets exactly what the
 * public function got. close releases everything, the struct included.
 */
struct netdev_ops {
	ssize_t (*send)(struct netdev *nd, const struct iovec *iov, unsigned iovcnt);
	ssize_t (*recv)(struct netdev *nd, const struct iovec *iov, unsigned iovcnt);
	int (*set_offloads)(struct netdev *nd, unsigned offloads);
	void (*close)(struct netdev *nd);
};

/* The common head each backend embeds in its own struct (container_of gets back to it). */
struct netdev {
	const struct netdev_ops *ops;
	int fd;            /* what netdev_fd() returns */
	bool has_offloads; /* what netdev_has_offloads() returns */
	bool is_tap;       /* what netdev_is_tap() returns */
	char name[64];     /* what netdev_name() returns */
};

/* Backends: same contract as netdev_open() for their kind. */
struct netdev *tap_open(const struct netdev_opts *opts, char *err, size_t errlen);

/*
 * binary: the passt executable to run, or NULL to look for "passt" in $PATH (tests pass
 * a path that does not exist to see the "not found" error).
 */
struct netdev *passt_open(const struct netdev_opts *opts, const char *binary, char *err,
                          size_t errlen);

/*
 * Wraps a connected stream socket that already speaks passt's framing (see passt.c),
 * with no passt process of ours behind it: for tests of the framing, and for a caller
 * that starts passt itself. On success netdev_close() closes sock.
 */
struct netdev *passt_adopt(int sock, char *err, size_t errlen);

/* snprintf into an error buffer that may be NULL or empty. */
void netdev_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Total length of an iovec array (saturating, so a hostile sum cannot wrap). */
size_t netdev_iov_len(const struct iovec *iov, unsigned iovcnt);

/* Copies len bytes from src into iov from byte `skip` of iov on; stops where iov ends. */
void netdev_iov_write(const struct iovec *iov, unsigned iovcnt, size_t skip, const void *src,
                      size_t len);

#endif
