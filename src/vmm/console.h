/* console.h: the serial console's host side — stdio (raw, Ctrl-A x), a file, or a pty. */
#ifndef VMSTACK_CONSOLE_H
#define VMSTACK_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"

#define CONSOLE_ESCAPE 0x01 /* Ctrl-A, as in QEMU: Ctrl-A x quits, Ctrl-A Ctrl-A sends one */

struct console {
	enum console_kind kind;
	int in_fd; /* -1: no input */
	int out_fd;
	int pty_slave;     /* kept open so the master never reports hang-up */
	bool raw;          /* the terminal was put in raw mode and must be restored */
	bool escape;       /* the previous input byte was the escape character */
	bool drop_on_full; /* pty: never block the guest on a reader that went away */
	char pty_path[64];
};

/*
 * Opens the backend chosen in cfg. For stdio on a terminal, switches it to raw mode
 * and arranges for it to be restored on every exit path (normal exit, fatal signal).
 */
int console_open(struct console *c, const struct vm_config *cfg, char *err, size_t errlen);
/* The same for any console-like option `opt` (e.g. "--vconsole"); stdio is the caller's. */
int console_open_as(struct console *c, enum console_kind kind, const char *path, const char *opt,
                    char *err, size_t errlen);
void console_close(struct console *c);

/* Guest output. Thread-safe (a single write(2) per call). */
void console_write(struct console *c, const uint8_t *buf, size_t len);

/*
 * Reads host input into out. Returns bytes for the guest (>= 0), -1 at end of input,
 * and sets *quit when the user typed the escape sequence.
 */
ssize_t console_read(struct console *c, uint8_t *out, size_t len, bool *quit);

/*
 * Applies escape processing to input bytes in place; returns how many bytes remain
 * for the guest. Exposed for unit tests.
 */
size_t console_filter(struct console *c, uint8_t *buf, size_t len, bool *quit);

/* Puts the terminal back (idempotent, async-signal-safe). */
void console_restore_terminal(void);

#endif
