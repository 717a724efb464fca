/* i8042.c: keyboard-controller commands Linux uses at reboot (0xFE pulse, 0xD1 output port). */
#include "i8042.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "snapshot_file.h"
#include "util.h"

#define STATUS_OBF 0x01
#define STATUS_SYS 0x04 /* self-test passed */
#define STATUS_CMD 0x08 /* last write was to the command port */

static void put_out(struct i8042 *k, uint8_t v)
{
	k->out = v;
	k->out_full = true;
}

static void kbd_read(struct io_region *r, uint64_t off, void *data, unsigned len, bool cmd_port)
{
	(void)off;
	struct i8042 *k = cmd_port ? container_of(r, struct i8042, cmd_io)
	                           : container_of(r, struct i8042, data_io);
	uint8_t v;

	pthread_mutex_lock(&k->lock);
	if (cmd_port) {
		v = STATUS_SYS | (k->out_full ? STATUS_OBF : 0);
	} else {
		v = k->out;
		k->out_full = false;
	}
	pthread_mutex_unlock(&k->lock);
	memset(data, v, len);
}

static void data_read(struct io_region *r, uint64_t off, void *data, unsigned len)
{
	kbd_read(r, off, data, len, false);
}

static void cmd_read(struct io_region *r, uint64_t off, void *data, unsigned len)
{
	kbd_read(r, off, data, len, true);
}

static void data_write(struct io_region *r, uint64_t off, const void *data, unsigned len)
{
	struct i8042 *k = container_of(r, struct i8042, data_io);
	uint8_t v = *(const uint8_t *)data;
	bool reset = false;

	(void)off;
	(void)len;
	pthread_mutex_lock(&k->lock);
	switch (k->pending) {
	case 0x60:
		k->cmd_byte = v;
		break;
	case 0xd1:
		reset = !(v & 1); /* output port bit 0 is the CPU reset line, active low */
		break;
	default:
		break; /* bytes for the keyboard itself: no keyboard attached */
	}
	k->pending = 0;
	pthread_mutex_unlock(&k->lock);
	if (reset && k->cb.reset)
		k->cb.reset(k->cb.opaque);
}

static void cmd_write(struct io_region *r, uint64_t off, const void *data, unsigned len)
{
	struct i8042 *k = container_of(r, struct i8042, cmd_io);
	uint8_t v = *(const uint8_t *)data;
	bool reset = false;

	(void)off;
	(void)len;
	pthread_mutex_lock(&k->lock);
	k->pending = 0;
	switch (v) {
	case 0x20:
		put_out(k, k->cmd_byte);
		break;
	case 0x60:
	case 0xd1:
		k->pending = v;
		break;
	case 0xaa:
		put_out(k, 0x55); /* controller self-test passed */
		break;
	case 0xab:
		put_out(k, 0x00); /* interface test passed */
		break;
	default:
		/* 0xF0-0xFF pulse output lines for 6 us; bit 0 clear pulses CPU reset. */
		if ((v & 0xf0) == 0xf0 && !(v & 1))
			reset = true;
		break;
	}
	pthread_mutex_unlock(&k->lock);
	if (reset && k->cb.reset)
		k->cb.reset(k->cb.opaque);
}

static const struct io_region_ops data_ops = {.read = data_read, .write = data_write};
static const struct io_region_ops cmd_ops = {.read = cmd_read, .write = cmd_write};

void i8042_init(struct i8042 *k, const struct i8042_callbacks *cb)
{
	memset(k, 0, sizeof(*k));
	k->data_io = (struct io_region){.base = 0x60, .len = 1, .name = "i8042", .ops = &data_ops};
	k->cmd_io = (struct io_region){.base = 0x64, .len = 1, .name = "i8042", .ops = &cmd_ops};
	pthread_mutex_init(&k->lock, NULL);
	k->cb = *cb;
	k->cmd_byte = 0x61; /* translate, system flag, keyboard interrupt */
}

void i8042_destroy(struct i8042 *k)
{
	pthread_mutex_destroy(&k->lock);
}

/* --- snapshot --- */

/* Section "i8042". */
struct i8042_state {
	uint8_t cmd_byte;
	uint8_t pending; /* 0, 0x60 or 0xd1 */
	uint8_t out;
	uint8_t out_full;
};
_Static_assert(sizeof(struct i8042_state) == 4, "i8042_state layout");

#define I8042_TAG "i8042"

int i8042_save(const struct i8042 *k, struct snap_writer *w, uint32_t inst)
{
	pthread_mutex_t *lock = (pthread_mutex_t *)&k->lock;
	struct i8042_state st;

	pthread_mutex_lock(lock);
	st.cmd_byte = k->cmd_byte;
	st.pending = k->pending;
	st.out = k->out;
	st.out_full = k->out_full;
	pthread_mutex_unlock(lock);
	return snap_put(w, I8042_TAG, inst, &st, sizeof(st));
}

int i8042_load(struct i8042 *k, const struct snap_reader *r, uint32_t inst, char *err,
               size_t errlen)
{
	struct i8042_state st;
	int ret = snap_get_exact(r, I8042_TAG, inst, &st, sizeof(st), err, errlen);

	if (ret < 0)
		return ret;
	if (st.pending != 0 && st.pending != 0x60 && st.pending != 0xd1) {
		snprintf(err, errlen, "%s: section %s %u: pending command 0x%x is not 0x60 or 0xd1",
		         snap_reader_name(r), I8042_TAG, inst, st.pending);
		return -EINVAL;
	}
	if (st.out_full > 1) {
		snprintf(err, errlen, "%s: section %s %u: out_full %u is not 0 or 1",
		         snap_reader_name(r), I8042_TAG, inst, st.out_full);
		return -EINVAL;
	}
	pthread_mutex_lock(&k->lock);
	k->cmd_byte = st.cmd_byte;
	k->pending = st.pending;
	k->out = st.out;
	k->out_full = st.out_full;
	pthread_mutex_unlock(&k->lock);
	return 0;
}
