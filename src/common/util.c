/* util.c: size parsing and formatting, whole-file reads, checksums. */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0, mult = 1;
	const char *p = s;

	if (!s || !isdigit((unsigned char)*p))
		return -EINVAL;
	while (isdigit((unsigned char)*p)) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
		p++;
	}
	switch (toupper((unsigned char)*p)) {
	case 'K':
		mult = KiB;
		p++;
		break;
	case 'M':
		mult = MiB;
		p++;
		break;
	case 'G':
		mult = GiB;
		p++;
		break;
	case 'T':
		mult = TiB;
		p++;
		break;
	case '\0':
		break;
	default:
		return -EINVAL;
	}
	if (mult != 1) {
		if (p[0] == 'i' && p[1] == 'B')
			p += 2;
		else if (p[0] == 'B')
			p++;
	}
	if (*p != '\0')
		return -EINVAL;
	if (v > UINT64_MAX / mult)
		return -ERANGE;
	*out = v * mult;
	return 0;
}

const char *format_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
	unsigned u = 0;
	uint64_t whole = bytes, rem = 0;

	while (whole >= 1024 && u + 1 < ARRAY_SIZE(units)) {
		rem = whole % 1024;
		whole /= 1024;
		u++;
	}
	if (rem)
		snprintf(buf, len, "%llu.%llu %s", (unsigned long long)whole,
		         (unsigned long long)(rem * 10 / 1024), units[u]);
	else
		snprintf(buf, len, "%llu %s", (unsigned long long)whole, units[u]);
	return buf;
}

int map_file(const char *path, const uint8_t **data, size_t *len)
{
	struct stat st;
	void *p;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		int err = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		close(fd);
		return err;
	}
	*data = NULL;
	*len = (size_t)st.st_size;
	if (st.st_size == 0) {
		close(fd);
		return 0;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return -errno;
	*data = p;
	return 0;
}

void unmap_file(const uint8_t *data, size_t len)
{
	if (data && len)
		munmap((void *)data, len);
}

int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r =
		    pwrite(fd, (const uint8_t *)buf + done, len - done, (off_t)(off + done));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO;
		done += (size_t)r;
	}
	return 0;
}

uint8_t byte_sum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t s = 0;

	while (len--)
		s += *b++;
	return s;
}
