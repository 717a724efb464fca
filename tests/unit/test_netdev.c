/* test_netdev.c: tap and passt backends against the real kernel and a real passt. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "netdev.h"
#include "netdev_internal.h"
#include "netframes.h"
#include "test.h"
#include "util.h"

/* Frames as netframes.h builds them. */

#define WAIT_MS  5000
#define FRAME_SZ (HDR + 65550)

static uint8_t tx[FRAME_SZ], rx[FRAME_SZ];

static void send_frame(struct netdev *nd, const uint8_t *f, size_t len)
{
	struct iovec v = {(void *)f, len};
	int64_t deadline = now_ms() + WAIT_MS;
	ssize_t r;

	while ((r = netdev_send(nd, &v, 1)) == -EAGAIN && wait_fd(netdev_fd(nd), POLLOUT, deadline))
		;
	if (r != (ssize_t)len)
		fprintf(stderr, "netdev_send: %zd (%s)\n", r, r < 0 ? strerror((int)-r) : "short");
	CHECK_EQ(r, len);
}

/*
 * Receives frames into rx until match() accepts one (it may answer others through nd),
 * returning its length, or a negative errno (-ETIMEDOUT after WAIT_MS).
 */
typedef bool match_fn(struct netdev *nd, const uint8_t *f, size_t len, void *ctx);

static ssize_t recv_until(struct netdev *nd, size_t room, match_fn *match, void *ctx)
{
	int64_t deadline = now_ms() + WAIT_MS;
	struct iovec v = {rx, room};
	ssize_t r;

	for (;;) {
		memset(rx, 0xff, room); /* so that stale bytes cannot pass for the header */
		r = netdev_recv(nd, &v, 1);
		if (r > 0 && match(nd, rx, (size_t)r, ctx))
			return r;
		if (r == -EAGAIN && !wait_fd(netdev_fd(nd), POLLIN, deadline))
			return -ETIMEDOUT;
		if (r < 0 && r != -EAGAIN)
			return r;
	}
}

/* ---- tap ---- */

static bool arp_reply_from(struct netdev *nd, const uint8_t *f, size_t len, void *ctx)
{
	(void)nd;
	return is_arp(f, len, 2, ctx);
}

TEST(tap_open_names_interface)
{
	char name[IFNAMSIZ];
	struct netdev *nd;

	if (tap_unavailable())
		return;
	nd = tap_up(name, sizeof(name), 1);
	if (!nd)
		return;
	CHECK(strncmp(netdev_name(nd), "tap ", 4) == 0);
	CHECK_STR(netdev_name(nd) + 4, name);
	CHECK(if_nametoindex(name) != 0);
	CHECK(netdev_has_offloads(nd));
	CHECK(fcntl(netdev_fd(nd), F_GETFL) & O_NONBLOCK);
	CHECK(fcntl(netdev_fd(nd), F_GETFD) & FD_CLOEXEC);
	netdev_close(nd);
	/* Created by us, not persistent: gone with the last fd. */
	CHECK_EQ(if_nametoindex(name), 0);
}

TEST(tap_arp_request_gets_kernel_reply)
{
	char name[IFNAMSIZ];
	struct netdev *nd;
	ssize_t r;

	if (tap_unavailable())
		return;
	nd = tap_up(name, sizeof(name), 2);
	if (!nd)
		return;
	send_frame(nd, tx, arp_request(tx, "10.213.2.2", "10.213.2.1"));
	r = recv_until(nd, sizeof(rx), arp_reply_from, "10.213.2.1");
	CHECK(r >= (ssize_t)(IP + 28));
	if (r > 0) {
		CHECK_EQ(rx[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM, 0);
		CHECK_EQ(rx[1], VIRTIO_NET_HDR_GSO_NONE);
		CHECK_EQ(get_le16(rx + 10), 0); /* num_buffers: for the device to fill in */
		CHECK(memcmp(rx + ETH, guest_mac, 6) == 0);
		CHECK(memcmp(rx + IP + 18, guest_mac, 6) == 0);
	}
	netdev_close(nd);
}

struct echo_ctx {
	const char *host, *guest;
	uint16_t id, seq;
};

/* Matches the echo reply; answers the kernel's ARP requests for the guest meanwhile. */
static bool echo_reply(struct netdev *nd, const uint8_t *f, size_t len, void *ctx)
{
	const struct echo_ctx *e = ctx;
	uint32_t gip = ip4(e->guest);
	uint8_t a[IP + 28];

	if (is_arp(f, len, 1, e->host) && memcmp(f + IP + 24, &gip, 4) == 0) {
		arp_request(a, e->guest, e->host);
		memcpy(a + ETH, f + ETH + 6, 6);
		put16(a + IP + 6, 2);
		memcpy(a + IP + 18, f + IP + 8, 10);
		send_frame(nd, a, sizeof(a));
		return false;
	}
	return is_ip_from(f, len, 1, e->host) && len >= L4 + 8 && f[L4] == 0 &&
	       get16(f + L4 + 4) == e->id && get16(f + L4 + 6) == e->seq;
}

/* The tap's counters from the guest's side: what it sent is tx, what came back rx. */
TEST(tap_counters_are_the_guests_view)
{
	uint64_t before[6], after[6];
	char name[IFNAMSIZ];
	struct netdev *nd;

	if (tap_unavailable())
		return;
	nd = tap_up(name, sizeof(name), 9);
	if (!nd)
		return;
	CHECK_EQ(netdev_tap_counters(nd, before), 0);
	send_frame(nd, tx, arp_request(tx, "10.213.9.2", "10.213.9.1"));
	CHECK(recv_until(nd, sizeof(rx), arp_reply_from, (void *)"10.213.9.1") > 0);
	CHECK_EQ(netdev_tap_counters(nd, after), 0);
	CHECK(after[2] >= before[2] + 1 && after[3] >= before[3] + 42); /* tx: the request */
	CHECK(after[0] >= before[0] + 1);                               /* rx: the reply */
	netdev_close(nd);
}

TEST(tap_icmp_echo_gets_reply)
{
	struct echo_ctx e = {"10.213.3.1", "10.213.3.2", 0x4242, 7};
	uint8_t host_mac[6];
	char name[IFNAMSIZ];
	struct netdev *nd;
	size_t len = L4 + 8 + 32;
	ssize_t r;

	if (tap_unavailable())
		return;
	nd = tap_up(name, sizeof(name), 3);
	if (!nd)
		return;
	send_frame(nd, tx, arp_request(tx, e.guest, e.host));
	r = recv_until(nd, sizeof(rx), arp_reply_from, (void *)e.host);
	CHECK(r > 0);
	if (r <= 0)
		goto out;
	memcpy(host_mac, rx + IP + 8, 6);

	CHECK_EQ(icmp_echo(tx, host_mac, e.guest, e.host, e.id, e.seq, 32), len);
	send_frame(nd, tx, len);

	r = recv_until(nd, sizeof(rx), echo_reply, &e);
	CHECK_EQ(r, len);
	if (r == (ssize_t)len) {
		CHECK_EQ(fold(sum16(rx + IP, 20, 0)), 0xffff);
		CHECK_EQ(fold(sum16(rx + L4, 8 + 32, 0)), 0xffff);
		CHECK(memcmp(rx + L4 + 8, tx + L4 + 8, 32) == 0);
	}
out:
	netdev_close(nd);
}

struct udp_ctx {
	const char *src;
	uint16_t dport;
};

static bool udp_to(struct netdev *nd, const uint8_t *f, size_t len, void *ctx)
{
	const struct udp_ctx *u = ctx;

	(void)nd;
	return is_ip_from(f, len, 17, u->src) && len >= L4 + 8 && get16(f + L4 + 2) == u->dport;
}

/* A UDP socket of the host, for datagrams to and from the guest. */
static int host_udp(const char *bind_ip)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = ip4(bind_ip)};
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	CHECK(s >= 0);
	CHECK_EQ(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	return s;
}

static void host_send_udp(int s, const char *dst, uint16_t port, size_t len)
{
	struct sockaddr_in a = {
	    .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = ip4(dst)};
	static uint8_t payload[2000];

	memset(payload, 0xa5, sizeof(payload));
	CHECK_EQ(sendto(s, payload, len, 0, (struct sockaddr *)&a, sizeof(a)), len);
}

TEST(tap_offloads_give_partial_checksums)
{
	struct udp_ctx u = {"10.213.4.1", 9};
	char name[IFNAMSIZ];
	struct netdev *nd;
	uint16_t udplen;
	ssize_t r;
	int s;

	if (tap_unavailable())
		return;
	nd = tap_up(name, sizeof(name), 4);
	if (!nd)
		return;
	CHECK_EQ(
	    run("ip neigh replace 10.213.4.2 lladdr 52:54:00:12:34:56 dev %s nud permanent", name),
	    0);
	s = host_udp("10.213.4.1");

	/* No offloads yet: the kernel hands over a checksummed frame. */
	host_send_udp(s, "10.213.4.2", 9, 100);
	r = recv_until(nd, sizeof(rx), udp_to, &u);
	CHECK_EQ(r, L4 + 8 + 100);
	if (r > 0) {
		CHECK_EQ(rx[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM, 0);
		udplen = get16(rx + L4 + 4);
		CHECK_EQ(fold(pseudo_sum(rx, udplen) + sum16(rx + L4, udplen, 0)), 0xffff);
	}

	/* The guest takes partial checksums: the kernel leaves the UDP checksum to it. */
	CHECK_EQ(netdev_set_offloads(nd, true, false, false, false, false), 0);
	host_send_udp(s, "10.213.4.2", 9, 100);
	r = recv_until(nd, sizeof(rx), udp_to, &u);
	CHECK_EQ(r, L4 + 8 + 100);
	if (r > 0) {
		CHECK_EQ(rx[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_F_NEEDS_CSUM);
		CHECK_EQ(get_le16(rx + 6), 14 + 20); /* csum_start: the UDP header */
		CHECK_EQ(get_le16(rx + 8), 6);       /* csum_offset: its checksum field */
	}
	/* Everything a guest may negotiate is accepted (UFO retried without, if refused). */
	CHECK_EQ(netdev_set_offloads(nd, true, true, true, true, true), 0);
	CHECK_EQ(netdev_set_offloads(nd, false, false, false, false, false), 0);
	close(s);
	netdev_close(nd);
}

/* A Linux guest with VIRTIO_NET_F_CSUM: the UDP checksum field holds the pseudo-header sum. */
static size_t udp_needs_csum(const uint8_t *mac, uint16_t dport, uint16_t payload)
{
	uint16_t udplen = (uint16_t)(8 + payload);

	eth_hdr(tx, mac, 0x0800);
	ip_hdr(tx, 17, "10.213.5.2", "10.213.5.1", udplen);
	put16(tx + L4, 5555);
	put16(tx + L4 + 2, dport);
	put16(tx + L4 + 4, udplen);
	memset(tx + L4 + 8, 0x5a, payload);
	put16(tx + L4 + 6, fold(pseudo_sum(tx, udplen)));
	tx[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	put_le16(tx + 6, 14 + 20);
	put_le16(tx + 8, 6);
	return L4 + udplen;
}

TEST(tap_send_needs_csum_frame)
{
	struct sockaddr_in a, from;
	socklen_t al = sizeof(a), fromlen = sizeof(from);
	uint8_t buf[256];
	char name[IFNAMSIZ];
	struct netdev *nd;
	ssize_t n;
	int s;

	if (tap_unavailable())
		return;
	nd = tap_up(name, sizeof(name), 5);
	if (!nd)
		return;
	s = host_udp("10.213.5.1");
	getsockname(s, (struct sockaddr *)&a, &al);
	send_frame(nd, tx, arp_request(tx, "10.213.5.2", "10.213.5.1"));
	CHECK(recv_until(nd, sizeof(rx), arp_reply_from, "10.213.5.1") > 0);
	CHECK_EQ(netdev_set_offloads(nd, true, true, true, false, false), 0);
	send_frame(nd, tx, udp_needs_csum(rx + IP + 8, ntohs(a.sin_port), 64));

	/* The kernel completed the checksum: a wrong one would have been dropped. */
	CHECK(wait_fd(s, POLLIN, now_ms() + WAIT_MS));
	n = recvfrom(s, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen);
	CHECK_EQ(n, 64);
	CHECK_EQ(from.sin_addr.s_addr, ip4("10.213.5.2"));
	close(s);
	netdev_close(nd);
}

static bool truncated(struct netdev *nd, const uint8_t *f, size_t len, void *ctx)
{
	(void)nd, (void)f, (void)len, (void)ctx;
	return false; /* only -EMSGSIZE ends recv_until */
}

TEST(tap_frame_larger_than_buffer_is_emsgsize)
{
	char name[IFNAMSIZ];
	struct netdev *nd;
	struct udp_ctx u = {"10.213.6.1", 9};
	int s;

	if (tap_unavailable())
		return;
	nd = tap_up(name, sizeof(name), 6);
	if (!nd)
		return;
	CHECK_EQ(
	    run("ip neigh replace 10.213.6.2 lladdr 52:54:00:12:34:56 dev %s nud permanent", name),
	    0);
	s = host_udp("10.213.6.1");
	host_send_udp(s, "10.213.6.2", 9, 1000);
	CHECK_EQ(recv_until(nd, HDR + 100, truncated, NULL), -EMSGSIZE);
	/* The next frame is whole again. */
	host_send_udp(s, "10.213.6.2", 9, 50);
	CHECK_EQ(recv_until(nd, sizeof(rx), udp_to, &u), L4 + 8 + 50);
	close(s);
	netdev_close(nd);
}

TEST(tap_name_too_long)
{
	struct netdev_opts o = {.kind = NETDEV_TAP, .ifname = "vmst-much-too-long-name", .fd = -1};
	char err[256] = "";

	CHECK(netdev_open(&o, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "tap vmst-much-too-long-name: ") == err);
	CHECK(strstr(err, "too long") != NULL);
	CHECK(strchr(err, '\n') == NULL);
}

TEST(tap_fd_that_is_not_a_tap)
{
	struct netdev_opts o = {.kind = NETDEV_TAP};
	char err[256] = "", want[32];
	int p[2];

	CHECK_EQ(pipe(p), 0);
	o.fd = p[0];
	CHECK(netdev_open(&o, err, sizeof(err)) == NULL);
	snprintf(want, sizeof(want), "tap fd %d: not a tap", p[0]);
	CHECK(strstr(err, want) == err);
	/* Left open for the caller on failure. */
	CHECK(fcntl(p[0], F_GETFD) >= 0);
	close(p[0]);
	close(p[1]);

	o.fd = 1000;
	CHECK(netdev_open(&o, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "tap fd 1000: ") == err);
}

/* Opens /dev/net/tun attached to `name` with the given flags, as a user's helper would. */
static int raw_tap(const char *name, short flags)
{
	struct ifreq ifr = {.ifr_flags = flags};
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (fd >= 0 && ioctl(fd, TUNSETIFF, &ifr) < 0) {
		close(fd);
		fd = -1;
	}
	CHECK(fd >= 0);
	return fd;
}

TEST(tap_fd_handed_in)
{
	struct netdev_opts o = {.kind = NETDEV_TAP};
	char name[IFNAMSIZ], err[256] = "", want[64];
	struct netdev *nd;
	int fd;

	if (tap_unavailable())
		return;
	tap_name(name, sizeof(name));
	o.fd = fd = raw_tap(name, IFF_TAP | IFF_NO_PI);
	CHECK(netdev_open(&o, err, sizeof(err)) == NULL);
	snprintf(want, sizeof(want), "tap fd %d: opened without IFF_VNET_HDR — ", fd);
	CHECK(strstr(err, want) == err);
	close(fd);

	o.fd = fd = raw_tap(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
	nd = netdev_open(&o, err, sizeof(err));
	CHECK(nd != NULL);
	if (nd) {
		snprintf(want, sizeof(want), "tap %s", name);
		CHECK_STR(netdev_name(nd), want);
		CHECK_EQ(netdev_fd(nd), fd);
		CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
		netdev_close(nd);
	}
	CHECK_EQ(if_nametoindex(name), 0);
}

TEST(tap_in_use_elsewhere)
{
	struct netdev_opts o = {.kind = NETDEV_TAP, .fd = -1};
	char name[IFNAMSIZ], err[256] = "", want[64];
	struct netdev *nd;
	int fd;

	if (tap_unavailable())
		return;
	tap_name(name, sizeof(name));
	fd = raw_tap(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
	o.ifname = name;
	nd = netdev_open(&o, err, sizeof(err));
	CHECK(nd == NULL);
	snprintf(want, sizeof(want), "tap %s: in use by another process", name);
	CHECK(strstr(err, want) == err);
	netdev_close(nd);
	close(fd);

	o.ifname = "lo";
	CHECK(netdev_open(&o, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "tap lo: an interface of that name exists and is not a") == err);
}

TEST(tap_unprivileged_error_says_how)
{
	char err[256] = "";
	int p[2], st;
	pid_t pid;

	if (tap_unavailable())
		return;
	CHECK_EQ(pipe(p), 0);
	pid = fork();
	if (pid == 0) {
		struct netdev_opts o = {.kind = NETDEV_TAP, .ifname = "vmstnoperm", .fd = -1};
		char e[256] = "";

		if (setgid(65534) == 0 && setuid(65534) == 0 && !netdev_open(&o, e, sizeof(e)))
			(void)!write(p[1], e, strlen(e));
		_exit(0);
	}
	close(p[1]);
	CHECK(read(p[0], err, sizeof(err) - 1) > 0);
	waitpid(pid, &st, 0);
	close(p[0]);
	CHECK(strstr(err, "tap vmstnoperm: ") == err);
	CHECK(strstr(err, "run as root") != NULL);
}

/* ---- passt ---- */

static bool passt_missing(void)
{
	if (access("/usr/bin/passt", X_OK) != 0) {
		test_skip("no /usr/bin/passt (apt-get install passt)");
		return true;
	}
	return false;
}

static struct netdev *user_open(void)
{
	struct netdev_opts o = {.kind = NETDEV_USER, .fd = -1};
	char err[512] = "";
	struct netdev *nd = netdev_open(&o, err, sizeof(err));

	if (!nd)
		fprintf(stderr, "%s\n", err);
	CHECK(nd != NULL);
	return nd;
}

static pid_t passt_pid(const struct netdev *nd)
{
	int pid = 0;

	CHECK_EQ(sscanf(netdev_name(nd), "user (passt pid %d)", &pid), 1);
	return pid;
}

/* ARPs for the gateway; returns passt's MAC in mac. */
static bool user_arp_gateway(struct netdev *nd, uint8_t *mac)
{
	uint32_t guest = ip4("10.0.2.15");
	ssize_t r;

	send_frame(nd, tx, arp_request(tx, "10.0.2.15", "10.0.2.2"));
	r = recv_until(nd, sizeof(rx), arp_reply_from, "10.0.2.2");
	CHECK(r >= (ssize_t)(IP + 28));
	if (r < (ssize_t)(IP + 28))
		return false;
	CHECK(memcmp(rx, (uint8_t[HDR]){0}, HDR) == 0); /* a zeroed virtio-net header */
	CHECK(memcmp(rx + IP + 18, guest_mac, 6) == 0);
	CHECK(memcmp(rx + IP + 24, &guest, 4) == 0);
	memcpy(mac, rx + IP + 8, 6);
	return true;
}

TEST(passt_arp_for_gateway)
{
	struct netdev *nd;
	uint8_t mac[6];

	if (passt_missing())
		return;
	nd = user_open();
	if (!nd)
		return;
	CHECK(!netdev_has_offloads(nd));
	CHECK_EQ(netdev_set_offloads(nd, false, false, false, false, false), 0);
	CHECK_EQ(netdev_set_offloads(nd, true, false, false, false, false), -EOPNOTSUPP);
	user_arp_gateway(nd, mac);
	netdev_close(nd);
}

struct dhcp_ctx {
	uint32_t xid;
};

static bool dhcp_offer(struct netdev *nd, const uint8_t *f, size_t len, void *ctx)
{
	const struct dhcp_ctx *d = ctx;

	(void)nd;
	return len >= L4 + 8 + 240 && get16(f + ETH + 12) == 0x0800 && f[IP + 9] == 17 &&
	       get16(f + L4) == 67 && get16(f + L4 + 2) == 68 && f[L4 + 8] == 2 &&
	       get32(f + L4 + 8 + 4) == d->xid;
}

/* The value of DHCP option `code` in the reply in rx, or NULL. */
static const uint8_t *dhcp_option(size_t len, uint8_t code, uint8_t *optlen)
{
	size_t i = L4 + 8 + 240;

	while (i + 2 <= len && rx[i] != 255) {
		if (rx[i] == 0) {
			i++;
			continue;
		}
		if (rx[i] == code && i + 2 + rx[i + 1] <= len) {
			*optlen = rx[i + 1];
			return rx + i + 2;
		}
		i += 2 + rx[i + 1];
	}
	return NULL;
}

TEST(passt_dhcp_discover_gets_offer)
{
	struct dhcp_ctx d = {0x5eed1234};
	const uint8_t *o;
	uint8_t *b = tx + L4 + 8, olen = 0;
	uint16_t udplen = 8 + 300;
	uint32_t yiaddr = ip4("10.0.2.15"), gw = ip4("10.0.2.2");
	struct netdev *nd;
	ssize_t r;

	if (passt_missing())
		return;
	nd = user_open();
	if (!nd)
		return;
	eth_hdr(tx, bcast_mac, 0x0800);
	ip_hdr(tx, 17, "0.0.0.0", "255.255.255.255", udplen);
	memset(tx + L4, 0, udplen);
	put16(tx + L4, 68);
	put16(tx + L4 + 2, 67);
	put16(tx + L4 + 4, udplen);
	b[0] = 1; /* BOOTREQUEST */
	b[1] = 1;
	b[2] = 6;
	put16(b + 4, (uint16_t)(d.xid >> 16));
	put16(b + 6, (uint16_t)d.xid);
	put16(b + 10, 0x8000); /* broadcast */
	memcpy(b + 28, guest_mac, 6);
	memcpy(b + 236, (uint8_t[]){99, 130, 83, 99, 53, 1, 1, 255}, 8);
	send_frame(nd, tx, L4 + udplen);

	r = recv_until(nd, sizeof(rx), dhcp_offer, &d);
	CHECK(r > 0);
	if (r > 0) {
		CHECK(memcmp(rx + L4 + 8 + 16, &yiaddr, 4) == 0);
		o = dhcp_option((size_t)r, 53, &olen);
		CHECK(o && olen == 1 && o[0] == 2); /* DHCPOFFER */
		o = dhcp_option((size_t)r, 3, &olen);
		CHECK(o && olen >= 4 && memcmp(o, &gw, 4) == 0);
		o = dhcp_option((size_t)r, 26, &olen);
		CHECK(o && olen == 2 && get16(o) == 1500); /* our --mtu */
	}
	netdev_close(nd);
}

struct tcp_ctx {
	uint16_t sport, dport;
	uint32_t seq;
};

static bool syn_ack(struct netdev *nd, const uint8_t *f, size_t len, void *ctx)
{
	const struct tcp_ctx *t = ctx;

	(void)nd;
	return is_ip_from(f, len, 6, "10.0.2.2") && len >= L4 + 20 && get16(f + L4) == t->dport &&
	       get16(f + L4 + 2) == t->sport;
}

/* A TCP segment from the guest 10.0.2.15 to the gateway, with an MSS option if SYN. */
static size_t tcp_segment(const uint8_t *mac, const struct tcp_ctx *t, uint8_t flags)
{
	uint16_t l4len = flags & 0x02 ? 24 : 20;

	eth_hdr(tx, mac, 0x0800);
	ip_hdr(tx, 6, "10.0.2.15", "10.0.2.2", l4len);
	memset(tx + L4, 0, l4len);
	put16(tx + L4, t->sport);
	put16(tx + L4 + 2, t->dport);
	put16(tx + L4 + 4, (uint16_t)(t->seq >> 16));
	put16(tx + L4 + 6, (uint16_t)t->seq);
	tx[L4 + 12] = (uint8_t)((l4len / 4) << 4);
	tx[L4 + 13] = flags;
	put16(tx + L4 + 14, 65535);
	if (l4len == 24)
		memcpy(tx + L4 + 20, (uint8_t[]){2, 4, 0x05, 0xb4}, 4);
	put16(tx + L4 + 16, (uint16_t)~fold(pseudo_sum(tx, l4len) + sum16(tx + L4, l4len, 0)));
	return L4 + l4len;
}

TEST(passt_tcp_syn_to_gateway_reaches_host_loopback)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	struct tcp_ctx t = {.sport = 40001, .seq = 1000};
	struct netdev *nd;
	uint8_t mac[6];
	ssize_t r;
	int ls, cs;

	if (passt_missing())
		return;
	ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK_EQ(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
	CHECK_EQ(listen(ls, 1), 0);
	getsockname(ls, (struct sockaddr *)&a, &al);
	t.dport = ntohs(a.sin_port);
	nd = user_open();
	if (!nd) {
		close(ls);
		return;
	}
	if (!user_arp_gateway(nd, mac))
		goto out;
	send_frame(nd, tx, tcp_segment(mac, &t, 0x02));
	r = recv_until(nd, sizeof(rx), syn_ack, &t);
	CHECK(r > 0);
	if (r > 0) {
		CHECK_EQ(rx[L4 + 13] & 0x17, 0x12); /* SYN|ACK, no RST */
		CHECK_EQ(get32(rx + L4 + 8), t.seq + 1);
		uint16_t l4len = (uint16_t)(get16(rx + IP + 2) - 20);

		CHECK_EQ(fold(pseudo_sum(rx, l4len) + sum16(rx + L4, l4len, 0)), 0xffff);
	}
	/* passt connected to 127.0.0.1:port on our behalf. */
	CHECK(wait_fd(ls, POLLIN, now_ms() + WAIT_MS));
	cs = accept4(ls, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	CHECK(cs >= 0);
	if (cs >= 0)
		close(cs);
	t.seq++;
	send_frame(nd, tx, tcp_segment(mac, &t, 0x04)); /* RST */
out:
	netdev_close(nd);
	close(ls);
}

TEST(passt_close_leaves_no_process)
{
	struct netdev *nd;
	pid_t pid;

	if (passt_missing())
		return;
	nd = user_open();
	if (!nd)
		return;
	pid = passt_pid(nd);
	CHECK(pid > 0);
	CHECK_EQ(kill(pid, 0), 0);
	netdev_close(nd);
	CHECK_EQ(kill(pid, 0), -1);
	CHECK_EQ(errno, ESRCH);
	CHECK_EQ(waitpid(pid, NULL, WNOHANG), -1); /* reaped: no zombie left */
}

TEST(passt_death_is_reported)
{
	struct iovec v = {rx, sizeof(rx)};
	struct netdev *nd;
	ssize_t r;
	pid_t pid;

	if (passt_missing())
		return;
	nd = user_open();
	if (!nd)
		return;
	pid = passt_pid(nd);
	CHECK_EQ(kill(pid, SIGKILL), 0);
	CHECK(wait_fd(netdev_fd(nd), POLLIN, now_ms() + WAIT_MS));
	CHECK_EQ(netdev_recv(nd, &v, 1), -ECONNRESET);
	CHECK_EQ(netdev_recv(nd, &v, 1), -ECONNRESET);
	arp_request(tx, "10.0.2.15", "10.0.2.2");
	v = (struct iovec){tx, IP + 28};
	r = netdev_send(nd, &v, 1);
	CHECK(r == -EPIPE || r == -ECONNRESET);
	netdev_close(nd);
	CHECK_EQ(kill(pid, 0), -1);
}

TEST(passt_startup_failure_reports_its_error)
{
	struct netdev_opts o = {.kind = NETDEV_USER, .fd = -1, .user_gw = "10.0.2.999"};
	char err[512] = "";

	if (passt_missing())
		return;
	CHECK(netdev_open(&o, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "--net user: passt exited with status ") == err);
	CHECK(strstr(err, "at startup: Invalid gateway address: 10.0.2.999") != NULL);
	CHECK(strchr(err, '\n') == NULL);
	CHECK_EQ(waitpid(-1, NULL, WNOHANG), -1); /* nothing left to reap */
}

TEST(passt_not_installed)
{
	struct netdev_opts o = {.kind = NETDEV_USER, .fd = -1};
	char err[512] = "", *path = getenv("PATH");

	path = path ? strdup(path) : NULL;
	CHECK(passt_open(&o, "/nonexistent/passt", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "--net user: passt not found") == err);
	CHECK(strstr(err, "install it (apt-get install passt)") != NULL);

	setenv("PATH", "/nonexistent", 1);
	CHECK(netdev_open(&o, err, sizeof(err)) == NULL);
	CHECK_STR(err, "--net user: passt not found — install it (apt-get install passt)");
	if (path)
		setenv("PATH", path, 1);
	else
		unsetenv("PATH");
	free(path);
}

/* Writes an executable shell script standing in for passt into dir; returns its path. */
static const char *fake_passt(char *dir, const char *body)
{
	static char path[128];
	FILE *f;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/passt", dir);
	f = fopen(path, "w");
	CHECK(f != NULL);
	if (!f)
		return path;
	fprintf(f, "#!/bin/sh\n%s\n", body);
	fclose(f);
	CHECK_EQ(chmod(path, 0755), 0);
	return path;
}

TEST(passt_without_pid_file_support_still_starts)
{
	struct netdev_opts o = {.kind = NETDEV_USER, .fd = -1};
	char dir[] = "/tmp/vmst-passt-XXXXXX", err[512] = "";
	const char *path;
	struct netdev *nd;
	pid_t pid = 0;

	/* Like a passt that closes inherited fds: -P /proc/self/fd/N cannot be opened. */
	path = fake_passt(dir, "case \" $* \" in *\" -P \"*)\n"
	                       "  echo 'PID file open: No such file or directory' >&2; exit 1;;\n"
	                       "esac\n"
	                       "exec sleep 600");
	nd = passt_open(&o, path, err, sizeof(err));
	if (!nd)
		fprintf(stderr, "%s\n", err);
	CHECK(nd != NULL);
	if (nd) {
		pid = passt_pid(nd);
		netdev_close(nd);
		CHECK_EQ(kill(pid, 0), -1);
	}
	unlink(path);
	rmdir(dir);
}

TEST(passt_exec_failure_is_reported)
{
	struct netdev_opts o = {.kind = NETDEV_USER, .fd = -1};
	char dir[] = "/tmp/vmst-passt-XXXXXX", err[512] = "";
	const char *path;

	path = fake_passt(dir, "echo 'passt: something went wrong' >&2\nexit 3");
	CHECK(passt_open(&o, path, err, sizeof(err)) == NULL);
	CHECK_STR(err, "--net user: passt exited with status 3 at startup: passt: something went "
	               "wrong");
	unlink(path);
	rmdir(dir);
}

/* ---- passt framing, against our own end of a socketpair ---- */

static struct netdev *framed_pair(int *peer)
{
	char err[256] = "";
	struct netdev *nd;
	int sv[2];

	CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	nd = passt_adopt(sv[0], err, sizeof(err));
	CHECK(nd != NULL);
	*peer = sv[1];
	return nd;
}

/* Writes a frame of len bytes (byte i = seed + i) with its length prefix into buf. */
static size_t framed(uint8_t *buf, uint32_t len, uint8_t seed)
{
	buf[0] = (uint8_t)(len >> 24);
	buf[1] = (uint8_t)(len >> 16);
	buf[2] = (uint8_t)(len >> 8);
	buf[3] = (uint8_t)len;
	for (uint32_t i = 0; i < len; i++)
		buf[4 + i] = (uint8_t)(seed + i);
	return 4 + len;
}

static bool frame_is(ssize_t r, uint32_t len, uint8_t seed)
{
	if (r != (ssize_t)(HDR + len))
		return false;
	for (unsigned i = 0; i < HDR; i++)
		if (rx[i])
			return false;
	for (uint32_t i = 0; i < len; i++)
		if (rx[HDR + i] != (uint8_t)(seed + i))
			return false;
	return true;
}

TEST(passt_recv_reassembles_split_frames)
{
	static uint8_t buf[3 * (4 + 1600)];
	struct iovec v[3] = {{rx, 5}, {rx + 5, 30}, {rx + 35, sizeof(rx) - 35}};
	struct netdev *nd;
	size_t n, a, b;
	int peer;

	nd = framed_pair(&peer);
	if (!nd)
		return;
	CHECK_EQ(netdev_recv(nd, v, 3), -EAGAIN);
	/* One byte at a time: nothing until the last. */
	n = framed(buf, 60, 1);
	for (size_t i = 0; i < n; i++) {
		CHECK_EQ(write(peer, buf + i, 1), 1);
		if (i + 1 < n)
			CHECK_EQ(netdev_recv(nd, v, 3), -EAGAIN);
	}
	CHECK(frame_is(netdev_recv(nd, v, 3), 60, 1));
	CHECK_EQ(netdev_recv(nd, v, 3), -EAGAIN);

	/* Two whole frames and half a third in one write; a zero-length frame is skipped. */
	a = framed(buf, 1500, 2);
	a += framed(buf + a, 0, 0);
	b = a + framed(buf + a, 1600, 3);
	n = b + framed(buf + b, 100, 4);
	CHECK_EQ(write(peer, buf, b + 50), b + 50);
	CHECK(frame_is(netdev_recv(nd, v, 3), 1500, 2));
	CHECK(frame_is(netdev_recv(nd, v, 3), 1600, 3));
	CHECK_EQ(netdev_recv(nd, v, 3), -EAGAIN);
	/* Nothing complete waits in our buffer, so EPOLLIN is exact. */
	CHECK(!wait_fd(netdev_fd(nd), POLLIN, now_ms() + 1));
	CHECK_EQ(write(peer, buf + b + 50, n - b - 50), n - b - 50);
	CHECK(wait_fd(netdev_fd(nd), POLLIN, now_ms() + WAIT_MS));
	CHECK(frame_is(netdev_recv(nd, v, 3), 100, 4));
	CHECK_EQ(netdev_recv(nd, v, 3), -EAGAIN);
	netdev_close(nd);
	close(peer);
}

TEST(passt_recv_drops_what_does_not_fit)
{
	static uint8_t buf[4 + 70000];
	struct iovec small = {rx, HDR + 100}, big = {rx, sizeof(rx)};
	struct netdev *nd;
	int peer;
	size_t n;

	nd = framed_pair(&peer);
	if (!nd)
		return;
	/* Larger than any frame passt sends: dropped, and the stream stays in step. */
	n = framed(buf, 70000, 5);
	CHECK_EQ(write(peer, buf, n), n);
	n = framed(buf, 200, 6);
	CHECK_EQ(write(peer, buf, n), n);
	n = framed(buf, 80, 7);
	CHECK_EQ(write(peer, buf, n), n);
	CHECK_EQ(netdev_recv(nd, &big, 1), -EMSGSIZE);
	CHECK_EQ(netdev_recv(nd, &small, 1), -EMSGSIZE); /* 200 bytes in a 100-byte buffer */
	CHECK(frame_is(netdev_recv(nd, &small, 1), 80, 7));
	CHECK_EQ(netdev_recv(nd, &big, 1), -EAGAIN);
	netdev_close(nd);
	close(peer);
}

/* Reads whatever the peer has into out (at *have). */
static void drain(int peer, uint8_t *out, size_t cap, size_t *have)
{
	ssize_t n;

	while (*have < cap && (n = recv(peer, out + *have, cap - *have, MSG_DONTWAIT)) > 0)
		*have += (size_t)n;
}

/* Sends the frame in tx (len bytes with header) until accepted, draining the peer. */
static ssize_t send_draining(struct netdev *nd, size_t len, int peer, uint8_t *out, size_t cap,
                             size_t *have, int *eagains)
{
	struct iovec v[2] = {{tx, 20}, {tx + 20, len - 20}}; /* header split across two */
	ssize_t r;

	while ((r = netdev_send(nd, v, 2)) == -EAGAIN) {
		(*eagains)++;
		CHECK(!wait_fd(netdev_fd(nd), POLLOUT, now_ms() + 1));
		drain(peer, out, cap, have);
		CHECK(wait_fd(netdev_fd(nd), POLLOUT, now_ms() + WAIT_MS));
	}
	return r;
}

TEST(passt_send_finishes_partial_frames)
{
	static uint8_t out[4 * (4 + 60000)];
	struct netdev *nd;
	size_t have = 0, len = HDR + 60000;
	int peer, small = 4096, eagains = 0;
	uint8_t want[4 + 60000];

	nd = framed_pair(&peer);
	if (!nd)
		return;
	CHECK_EQ(setsockopt(netdev_fd(nd), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	memset(tx, 0xee, HDR); /* the header is stripped whatever it holds */
	framed(want, 60000, 8);
	memcpy(tx + HDR, want + 4, 60000);
	CHECK_EQ(send_draining(nd, len, peer, out, sizeof(out), &have, &eagains), len);
	CHECK(eagains > 0); /* the socket did take only part of it */
	drain(peer, out, sizeof(out), &have);
	CHECK_EQ(have, sizeof(want));
	CHECK(memcmp(out, want, sizeof(want)) == 0);

	/* -EAGAIN, then a different frame: the first one's tail still goes out first. */
	{
		struct iovec v = {tx, len};
		uint8_t want2[4 + 1000];

		have = 0;
		CHECK_EQ(netdev_send(nd, &v, 1), -EAGAIN);
		framed(want2, 1000, 9);
		memcpy(tx + HDR, want2 + 4, 1000);
		CHECK_EQ(send_draining(nd, HDR + 1000, peer, out, sizeof(out), &have, &eagains),
		         HDR + 1000);
		drain(peer, out, sizeof(out), &have);
		CHECK_EQ(have, sizeof(want) + sizeof(want2));
		CHECK(memcmp(out, want, sizeof(want)) == 0);
		CHECK(memcmp(out + sizeof(want), want2, sizeof(want2)) == 0);
	}

	/* Frames passt would refuse are refused here. */
	{
		struct iovec v = {tx, HDR + 13};

		CHECK_EQ(netdev_send(nd, &v, 1), -EINVAL);
		v.iov_len = HDR + 65536;
		CHECK_EQ(netdev_send(nd, &v, 1), -EMSGSIZE);
	}
	netdev_close(nd);
	close(peer);
}

TEST(passt_peer_hangup)
{
	struct iovec v = {rx, sizeof(rx)};
	struct netdev *nd;
	int peer;

	nd = framed_pair(&peer);
	if (!nd)
		return;
	close(peer);
	CHECK_EQ(netdev_recv(nd, &v, 1), -ECONNRESET);
	v = (struct iovec){tx, HDR + 60};
	CHECK_EQ(netdev_send(nd, &v, 1), -EPIPE);
	netdev_close(nd);
}
