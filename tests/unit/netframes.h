/* netframes.h: frames built by hand for the network tests, and test taps. */
#ifndef VMSTACK_TEST_NETFRAMES_H
#define VMSTACK_TEST_NETFRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "netdev.h"

/*
 * Frames are laid out as netdev.h carries them: a 12-byte virtio-net header, then
 * Ethernet at byte 12, IPv4 at 26 and the transport header at 46. Waiting is poll()
 * with a deadline, an upper bound only: tests go on as soon as what they expect arrives.
 */
#define HDR NETDEV_HDR_LEN
#define ETH HDR
#define IP  (ETH + 14)
#define L4  (IP + 20)

extern const uint8_t guest_mac[6]; /* 52:54:00:12:34:56, the frames' source */
extern const uint8_t bcast_mac[6];

/* Big-endian fields, IPv4 addresses (network order, for memcpy), RFC 1071 sums. */
void put16(uint8_t *p, uint16_t v);
uint16_t get16(const uint8_t *p);
uint32_t get32(const uint8_t *p);
uint32_t ip4(const char *s);
uint32_t sum16(const uint8_t *p, size_t len, uint32_t sum);
uint16_t fold(uint32_t sum);
uint32_t pseudo_sum(const uint8_t *f, uint16_t l4len);

/* Headers and frames from the guest (netframes.c says what each writes). */
void eth_hdr(uint8_t *f, const uint8_t *dst, uint16_t type);
size_t arp_request(uint8_t *f, const char *sip, const char *tip);
void ip_hdr(uint8_t *f, uint8_t proto, const char *src, const char *dst, uint16_t l4len);
bool is_ip_from(const uint8_t *f, size_t len, uint8_t proto, const char *src);
bool is_arp(const uint8_t *f, size_t len, uint16_t op, const char *sender);

/* CLOCK_MONOTONIC in ms; poll() for events on fd until deadline; system() with a format. */
int64_t now_ms(void);
bool wait_fd(int fd, short events, int64_t deadline);
int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Taps: skips the test (true) where none can be made; a fresh name; a fresh tap, up,
 * with the host at 10.213.<net>.1/24 (the guest will be .2). */
bool tap_unavailable(void);
void tap_name(char *name, size_t len);
struct netdev *tap_up(char *name, size_t len, int net);

/* An ICMP echo request from the guest (guest_mac, src) to dst at dst_mac, with
 * `payload` bytes of a pattern that depends on seq; returns the frame length. */
size_t icmp_echo(uint8_t *f, const uint8_t *dst_mac, const char *src, const char *dst, uint16_t id,
                 uint16_t seq, uint16_t payload);

#endif
