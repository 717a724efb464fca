/*
 * fuzz_qcow2.c: the qcow2 parser and I/O paths on untrusted image bytes (libFuzzer target;
 * replay.c runs the same function over tests/fuzz/corpus in every test run).
 *
 * The input is an image file. It is opened without its backing chain (a fuzzed name must
 * not make us open host files), read-only for most inputs and read-write for inputs whose
 * last byte is odd, then walked: block status over the whole disk (bounded), reads at the
 * start, the end and offsets taken from the input, the snapshot list, a check, and for
 * read-write opens a few writes and a flush. Nothing here may crash, hang, leak or touch
 * any file but the copy it was given.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image.h"
#include "log.h"
#include "qcow2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_EXTENTS 256
#define IO_LEN      8192

static uint64_t input_u64(const uint8_t *data, size_t size, size_t at)
{
	uint64_t v = 0;

	for (size_t i = 0; i < 8 && at + i < size; i++)
		v = v << 8 | data[at + i];
	return v;
}

static void walk(struct img *im, const uint8_t *data, size_t size, bool writable)
{
	static uint8_t buf[IO_LEN];
	uint64_t disk = img_size(im), off = 0;
	struct qcow2_snapshot_info snaps[4];
	struct qcow2_check_result res;
	struct img_extent ext;
	struct img_info info;

	(void)img_get_info(im, &info);
	for (unsigned n = 0; n < MAX_EXTENTS && off < disk; n++) {
		if (img_block_status(im, off, disk - off, &ext) < 0 || ext.len == 0)
			break;
		off += ext.len;
	}
	if (disk) {
		uint64_t len = disk < IO_LEN ? disk : IO_LEN;
		uint64_t at[3] = {0, disk - len, input_u64(data, size, 64) % (disk - len + 1)};

		for (unsigned i = 0; i < 3; i++)
			(void)img_pread(im, buf, len, at[i]);
		if (writable) {
			memset(buf, 0x5a, sizeof(buf));
			(void)img_pwrite(im, buf, len, at[2]);
			(void)img_pwrite(im, buf, len / 2 + 1, at[1] + len / 2 - 1);
			(void)img_write_zeroes(im, at[0], len, true);
			(void)img_discard(im, at[2], len);
			(void)img_pread(im, buf, len, at[2]);
			(void)img_flush(im);
		}
	}
	if (img_format(im) == IMG_FMT_QCOW2) {
		(void)qcow2_snapshot_list(im, snaps, 4);
		(void)qcow2_check(im, QCOW2_REPAIR_NONE, &res, NULL, NULL);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[64], err[512];
	bool writable = size && (data[size - 1] & 1);
	struct img *im;
	int fd;

	log_set_level(LOG_ERR);
	/* tmpfs when there is one: the read-write inputs flush, and a flush on tmpfs is free */
	snprintf(path, sizeof(path), "%s/vmstack-fuzz-XXXXXX",
	         access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	fd = mkstemp(path);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		unlink(path);
		return 0;
	}
	close(fd);
	im = img_open(
	    &(struct img_open_opts){
	        .path = path, .format = IMG_FMT_QCOW2, .readonly = !writable, .no_backing = true},
	    err, sizeof(err));
	if (im) {
		walk(im, data, size, writable);
		(void)img_close(im);
	}
	unlink(path);
	return 0;
}
