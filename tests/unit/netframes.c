/* netframes.c: Ethernet/ARP/IPv4/ICMP frames built by hand, and test taps (see netframes.h). */
#include "netframes.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

const uint8_t guest_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
const uint8_t bcast_mac[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

uint32_t get32(const uint8_t *p)
{
	return (uint32_t)get16(p) << 16 | get16(p + 2);
}

uint32_t ip4(const char *s)
{
	struct in_addr a;

	inet_pton(AF_INET, s, &a);
	return a.s_addr; /* network order, stored as bytes with memcpy */
}

/* Ones' complement sum of len bytes, added to sum (RFC 1071), not yet folded. */
uint32_t sum16(const uint8_t *p, size_t len, uint32_t sum)
{
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += get16(p + i);
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/* Sum of the IPv4 pseudo-header of the packet at f + IP carrying l4len bytes. */
uint32_t pseudo_sum(const uint8_t *f, uint16_t l4len)
{
	return sum16(f + IP + 12, 8, 0) + f[IP + 9] + l4len;
}

/* A zeroed virtio-net header and an Ethernet header from the guest. */
void eth_hdr(uint8_t *f, const uint8_t *dst, uint16_t type)
{
	memset(f, 0, HDR);
	memcpy(f + ETH, dst, 6);
	memcpy(f + ETH + 6, guest_mac, 6);
	put16(f + ETH + 12, type);
}

/* An ARP request from the guest (sip) for tip; returns the frame length. */
size_t arp_request(uint8_t *f, const char *sip, const char *tip)
{
	uint32_t s = ip4(sip), t = ip4(tip);
	uint8_t *a = f + IP;

	eth_hdr(f, bcast_mac, 0x0806);
	put16(a, 1);
	put16(a + 2, 0x0800);
	a[4] = 6;
	a[5] = 4;
	put16(a + 6, 1);
	memcpy(a + 8, guest_mac, 6);
	memcpy(a + 14, &s, 4);
	memset(a + 18, 0, 6);
	memcpy(a + 24, &t, 4);
	return IP + 28;
}

/* An IPv4 header with its checksum, for l4len bytes of protocol proto. */
void ip_hdr(uint8_t *f, uint8_t proto, const char *src, const char *dst, uint16_t l4len)
{
	uint32_t s = ip4(src), d = ip4(dst);
	uint8_t *h = f + IP;

	memset(h, 0, 20);
	h[0] = 0x45;
	put16(h + 2, (uint16_t)(20 + l4len));
	put16(h + 4, 0x1234);
	h[8] = 64;
	h[9] = proto;
	memcpy(h + 12, &s, 4);
	memcpy(h + 16, &d, 4);
	put16(h + 10, (uint16_t)~fold(sum16(h, 20, 0)));
}

/* Does the IPv4 packet in the frame come from `src` with protocol proto? */
bool is_ip_from(const uint8_t *f, size_t len, uint8_t proto, const char *src)
{
	uint32_t s = ip4(src);

	return len >= L4 && get16(f + ETH + 12) == 0x0800 && f[IP + 9] == proto &&
	       memcmp(f + IP + 12, &s, 4) == 0;
}

bool is_arp(const uint8_t *f, size_t len, uint16_t op, const char *sender)
{
	uint32_t s = ip4(sender);

	return len >= IP + 28 && get16(f + ETH + 12) == 0x0806 && get16(f + IP + 6) == op &&
	       memcmp(f + IP + 14, &s, 4) == 0;
}

int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until deadline (ms, CLOCK_MONOTONIC) for events on fd; true if they came. */
bool wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = events};
	int64_t left = deadline - now_ms();

	return left > 0 && poll(&p, 1, (int)left) == 1;
}

int run(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st != 0)
		fprintf(stderr, "`%s` failed: %d\n", cmd, st);
	return st;
}

/* ---- tap ---- */

bool tap_unavailable(void)
{
	if (geteuid() != 0) {
		test_skip("needs root (CAP_NET_ADMIN) to create a tap");
		return true;
	}
	if (access("/dev/net/tun", R_OK | W_OK) != 0) {
		test_skip("no /dev/net/tun (modprobe tun)");
		return true;
	}
	if (system("ip link show lo >/dev/null 2>&1") != 0) {
		test_skip("no `ip` command to configure the tap");
		return true;
	}
	return false;
}

void tap_name(char *name, size_t len)
{
	static unsigned n;

	snprintf(name, len, "vmst%d%c", (int)(getpid() % 100000), 'a' + (char)(n++ % 26));
}

/* Opens a fresh tap, up, with the host at 10.213.<net>.1/24 (the guest will be .2). */
struct netdev *tap_up(char *name, size_t len, int net)
{
	struct netdev_opts o = {.kind = NETDEV_TAP, .ifname = name, .fd = -1};
	char err[256] = "", path[128];
	struct netdev *nd;
	FILE *f;

	tap_name(name, len);
	nd = netdev_open(&o, err, sizeof(err));
	if (!nd) {
		fprintf(stderr, "%s\n", err);
		CHECK(nd);
		return NULL;
	}
	/* No IPv6 chatter (router solicitations, MLD) on the test link. */
	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", name);
	f = fopen(path, "w");
	if (f) {
		fputs("1", f);
		fclose(f);
	}
	CHECK_EQ(run("ip addr add 10.213.%d.1/24 dev %s && ip link set %s up", net, name, name), 0);
	return nd;
}

size_t icmp_echo(uint8_t *f, const uint8_t *dst_mac, const char *src, const char *dst, uint16_t id,
                 uint16_t seq, uint16_t payload)
{
	eth_hdr(f, dst_mac, 0x0800);
	ip_hdr(f, 1, src, dst, (uint16_t)(8 + payload));
	memset(f + L4, 0, 8);
	f[L4] = 8;
	put16(f + L4 + 4, id);
	put16(f + L4 + 6, seq);
	for (unsigned i = 0; i < payload; i++)
		f[L4 + 8 + i] = (uint8_t)(i * 7 + seq);
	put16(f + L4 + 2, (uint16_t)~fold(sum16(f + L4, 8u + payload, 0)));
	return L4 + 8u + payload;
}
