/* i8042.h: just enough of the PS/2 keyboard controller (ports 0x60, 0x64) for a reset request. */
#ifndef VMSTACK_I8042_H
#define VMSTACK_I8042_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iobus.h"

struct snap_writer;
struct snap_reader;

struct i8042_callbacks {
	void (*reset)(void *opaque); /* the guest pulsed the CPU reset line */
	void *opaque;
};

struct i8042 {
	struct io_region data_io; /* port 0x60 */
	struct io_region cmd_io;  /* port 0x64 */
	pthread_mutex_t lock;
	struct i8042_callbacks cb;
	uint8_t cmd_byte;
	uint8_t pending; /* command waiting for its data byte on port 0x60, or 0 */
	uint8_t out;
	bool out_full;
};

/* The caller adds &kbd->data_io and &kbd->cmd_io to its port bus. */
void i8042_init(struct i8042 *kbd, const struct i8042_callbacks *cb);
void i8042_destroy(struct i8042 *kbd);

/*
 * Snapshot, section "i8042" number `inst`: command byte, the command waiting for its data
 * byte, the output buffer. Load into a controller fresh from i8042_init(); returns 0, or
 * -EINVAL/-ENOENT with one line in err naming the section and field (kbd unchanged).
 */
int i8042_save(const struct i8042 *kbd, struct snap_writer *w, uint32_t inst);
int i8042_load(struct i8042 *kbd, const struct snap_reader *r, uint32_t inst, char *err,
               size_t errlen);

#endif
