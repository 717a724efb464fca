/* util.h: small helpers shared by every layer (container_of, sizes, checked arithmetic). */
#ifndef VMSTACK_UTIL_H
#define VMSTACK_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define ARRAY_SIZE(a)                   (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b)                       ((a) < (b) ? (a) : (b))
#define MAX(a, b)                       ((a) > (b) ? (a) : (b))
#define ALIGN_UP(x, a)                  (((x) + (a)-1) & ~((uint64_t)(a)-1))
#define ALIGN_DOWN(x, a)                ((x) & ~((uint64_t)(a)-1))

#define KiB (1024ULL)
#define MiB (1024ULL * KiB)
#define GiB (1024ULL * MiB)
#define TiB (1024ULL * GiB)

/*
 * Parses a size such as "512M", "4G", "1024" (bytes) or "64K" into *out.
 * Suffixes K, M, G, T (powers of 1024, optionally followed by "iB" or "B").
 * Returns 0, or -EINVAL for malformed text and -ERANGE on overflow.
 */
int parse_size(const char *s, uint64_t *out);

/* Formats a byte count as "512 MiB" / "1.5 GiB" into buf; returns buf. */
const char *format_size(uint64_t bytes, char *buf, size_t len);

/*
 * Maps a regular file read-only (MAP_PRIVATE): its pages cost no memory once unmapped,
 * unlike a read() copy. Returns 0 or -errno (-EISDIR, -EINVAL for non-regular files).
 * An empty file gives data == NULL, len == 0.
 */
int map_file(const char *path, const uint8_t **data, size_t *len);
void unmap_file(const uint8_t *data, size_t len);

/* pwrite() until all of buf is written (EINTR and short writes retried). 0 or -errno. */
int pwrite_all(int fd, const void *buf, size_t len, uint64_t off);

/* Little-endian stores and loads at any alignment (guest tables, boot headers). */
static inline void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
	put_le16(p, (uint16_t)v);
	put_le16(p + 2, (uint16_t)(v >> 16));
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t get_le32(const uint8_t *p)
{
	return get_le16(p) | ((uint32_t)get_le16(p + 2) << 16);
}

static inline uint64_t get_le64(const uint8_t *p)
{
	return get_le32(p) | ((uint64_t)get_le32(p + 4) << 32);
}

/* Sum of bytes, for the 8-bit checksums of MP and ACPI tables. */
uint8_t byte_sum(const void *p, size_t len);

#endif
