/* test_i8042.c: the keyboard controller's reset paths, self-test and command byte. */
#include <pthread.h>

#include "i8042.h"
#include "test.h"

struct resets {
	struct i8042 *kbd;
	int count;
	int lock_was_free;
};

static void on_reset(void *opaque)
{
	struct resets *r = opaque;

	r->count++;
	/* The callback may take the machine down: it must not run under the device lock. */
	if (pthread_mutex_trylock(&r->kbd->lock) == 0) {
		r->lock_was_free++;
		pthread_mutex_unlock(&r->kbd->lock);
	}
}

static void kbd_setup(struct i8042 *k, struct resets *r)
{
	struct i8042_callbacks cb = {.reset = on_reset, .opaque = r};

	memset(r, 0, sizeof(*r));
	r->kbd = k;
	i8042_init(k, &cb);
}

static void cmd(struct i8042 *k, uint8_t v)
{
	k->cmd_io.ops->write(&k->cmd_io, 0, &v, 1);
}

static void data_out(struct i8042 *k, uint8_t v)
{
	k->data_io.ops->write(&k->data_io, 0, &v, 1);
}

static uint8_t status(struct i8042 *k)
{
	uint8_t v = 0;

	k->cmd_io.ops->read(&k->cmd_io, 0, &v, 1);
	return v;
}

static uint8_t data_in(struct i8042 *k)
{
	uint8_t v = 0;

	k->data_io.ops->read(&k->data_io, 0, &v, 1);
	return v;
}

TEST(i8042_ports)
{
	struct i8042 k;
	struct resets r;

	kbd_setup(&k, &r);
	CHECK_EQ(k.data_io.base, 0x60);
	CHECK_EQ(k.data_io.len, 1);
	CHECK_EQ(k.cmd_io.base, 0x64);
	CHECK_EQ(k.cmd_io.len, 1);
	i8042_destroy(&k);
}

TEST(i8042_pulse_reset)
{
	struct i8042 k;
	struct resets r;

	kbd_setup(&k, &r);
	cmd(&k, 0xfe);
	CHECK_EQ(r.count, 1);
	CHECK_EQ(r.lock_was_free, 1);
	/* 0xFF pulses no line; other pulse commands with bit 0 set neither. */
	cmd(&k, 0xff);
	cmd(&k, 0xf1);
	CHECK_EQ(r.count, 1);
	/* 0xF0-0xFE with bit 0 clear all include the reset line. */
	cmd(&k, 0xf0);
	CHECK_EQ(r.count, 2);
	i8042_destroy(&k);
}

TEST(i8042_output_port_reset)
{
	struct i8042 k;
	struct resets r;

	kbd_setup(&k, &r);
	cmd(&k, 0xd1);
	data_out(&k, 0xdf); /* bit 0 set: CPU keeps running (A20 on) */
	CHECK_EQ(r.count, 0);
	cmd(&k, 0xd1);
	data_out(&k, 0xfe); /* bit 0 clear: reset */
	CHECK_EQ(r.count, 1);
	CHECK_EQ(r.lock_was_free, 1);

	/* A data byte without 0xD1 before it goes to the (absent) keyboard. */
	data_out(&k, 0x00);
	CHECK_EQ(r.count, 1);
	/* 0xD1 waits for one byte only. */
	cmd(&k, 0xd1);
	data_out(&k, 0x01);
	data_out(&k, 0x00);
	CHECK_EQ(r.count, 1);
	/* Another command cancels a pending 0xD1. */
	cmd(&k, 0xd1);
	cmd(&k, 0xaa);
	data_out(&k, 0x00);
	CHECK_EQ(r.count, 1);
	i8042_destroy(&k);
}

TEST(i8042_reset_without_callback)
{
	struct i8042 k;
	struct i8042_callbacks cb = {0};

	i8042_init(&k, &cb);
	cmd(&k, 0xfe); /* must not crash */
	cmd(&k, 0xd1);
	data_out(&k, 0x00);
	CHECK_EQ(status(&k) & 0x01, 0);
	i8042_destroy(&k);
}

TEST(i8042_self_test)
{
	struct i8042 k;
	struct resets r;

	kbd_setup(&k, &r);
	CHECK_EQ(status(&k) & 0x01, 0); /* nothing to read yet */
	CHECK(status(&k) & 0x04);       /* system flag */
	cmd(&k, 0xaa);
	CHECK_EQ(status(&k) & 0x01, 0x01);
	CHECK_EQ(data_in(&k), 0x55);
	CHECK_EQ(status(&k) & 0x01, 0); /* reading emptied the buffer */
	cmd(&k, 0xab);                  /* interface test */
	CHECK_EQ(status(&k) & 0x01, 0x01);
	CHECK_EQ(data_in(&k), 0x00);
	CHECK_EQ(r.count, 0);
	i8042_destroy(&k);
}

TEST(i8042_command_byte)
{
	struct i8042 k;
	struct resets r;

	kbd_setup(&k, &r);
	cmd(&k, 0x20);
	CHECK_EQ(status(&k) & 0x01, 0x01);
	CHECK_EQ(data_in(&k), 0x61);
	cmd(&k, 0x60);
	data_out(&k, 0x45);
	CHECK_EQ(status(&k) & 0x01, 0); /* writing it produces no output */
	cmd(&k, 0x20);
	CHECK_EQ(data_in(&k), 0x45);
	/* The next data byte is for the keyboard, not the command byte. */
	data_out(&k, 0x99);
	cmd(&k, 0x20);
	CHECK_EQ(data_in(&k), 0x45);
	CHECK_EQ(r.count, 0);

	/* Two controllers do not share state. */
	struct i8042 k2;
	struct resets r2;
	kbd_setup(&k2, &r2);
	cmd(&k2, 0x20);
	CHECK_EQ(data_in(&k2), 0x61);
	cmd(&k2, 0xfe);
	CHECK_EQ(r2.count, 1);
	CHECK_EQ(r.count, 0);
	i8042_destroy(&k2);
	i8042_destroy(&k);
}
