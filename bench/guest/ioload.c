/*
 * ioload.c: the in-guest block workload of bench/blk (static; runs from the tools disk).
 *
 *   ioload DEVICE SECONDS [ROW]
 *
 * Four rows (or only ROW) on DEVICE opened with O_DIRECT (no guest page cache), each ending after a
 * fixed amount of work or SECONDS, whichever comes first:
 *   seq-read   1 MiB preads from offset 0 up, at most the whole device
 *   seq-write  1 MiB pwrites from offset 0 up, at most the whole device, then fsync
 *   rand-read  4 KiB preads at random 4 KiB-aligned offsets, queue depth 1
 *   rand-write 4 KiB pwrites at random 4 KiB-aligned offsets, queue depth 1, then fsync
 * The offsets come from a fixed seed, so every monitor sees the same requests. Times are
 * the guest's own (clock_gettime(CLOCK_MONOTONIC)); the fsync is inside the timed part.
 *
 * Output, one line per row (MB = 10^6 bytes):
 *   IOLOAD-DEV size=BYTES
 *   IOLOAD row=NAME bs=BYTES ops=N secs=S MBps=X IOPS=Y
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RAND_MAX_OPS 100000 /* a cap for the random rows; the time limit comes first */

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* xorshift64: the same offsets on every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static const char *only; /* the one row to run, or NULL for all */

/* One row: `max_ops` requests of `bs` bytes (or `limit` seconds), sequential or random. */
static void row(int fd, const char *name, int write, int random, size_t bs, long max_ops,
                double limit, char *buf, uint64_t size)
{
	uint64_t blocks = size / bs;
	long ops = 0;
	double t0, t;

	if (only && strcmp(only, name) != 0)
		return;
	printf("IOLOAD-BEGIN row=%s\n", name);
	fflush(stdout);
	t0 = t = now();

	while (ops < max_ops && t - t0 < limit) {
		off_t off = (off_t)((random ? rng_next() % blocks : (uint64_t)ops % blocks) * bs);
		ssize_t r = write ? pwrite(fd, buf, bs, off) : pread(fd, buf, bs, off);

		if (r != (ssize_t)bs)
			die(write ? "pwrite" : "pread");
		ops++;
		/* Small requests: read the clock every 8th, so it costs nothing measurable
		 * even if the guest's clock_gettime ends up being a (slow, emulated) syscall. */
		if (!random || (ops & 7) == 0)
			t = now();
	}
	if (write && fsync(fd))
		die("fsync");
	t = now() - t0;
	printf("IOLOAD row=%s bs=%zu ops=%ld secs=%.3f MBps=%.2f IOPS=%.1f\n", name, bs, ops, t,
	       ops * (double)bs / t / 1e6, ops / t);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	const size_t big = 1 << 20, small = 4096;
	uint64_t size;
	double limit;
	char *buf;
	int fd;

	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: ioload DEVICE SECONDS [ROW]\n");
		return 2;
	}
	only = argc == 4 ? argv[3] : NULL;
	limit = atof(argv[2]);
	fd = open(argv[1], O_RDWR | O_DIRECT);
	if (fd < 0)
		die(argv[1]);
	size = (uint64_t)lseek(fd, 0, SEEK_END); /* a block device's size, or a file's */
	if (size == (uint64_t)-1)
		die("lseek");
	printf("IOLOAD-DEV size=%llu\n", (unsigned long long)size);
	if (size < big)
		return 1;
	/* O_DIRECT wants an aligned buffer; fill it so writes carry non-zero data. */
	if (posix_memalign((void **)&buf, 4096, big))
		die("posix_memalign");
	memset(buf, 0x5a, big);

	row(fd, "seq-read", 0, 0, big, (long)(size / big), limit, buf, size);
	row(fd, "seq-write", 1, 0, big, (long)(size / big), limit, buf, size);
	row(fd, "rand-read", 0, 1, small, RAND_MAX_OPS, limit, buf, size);
	row(fd, "rand-write", 1, 1, small, RAND_MAX_OPS, limit, buf, size);
	close(fd);
	return 0;
}
