/* serial8250.h: bus-independent 16550A UART chip model (8250 family); the bus wrapper wires it. */
#ifndef VMSTACK_SERIAL8250_H
#define VMSTACK_SERIAL8250_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Register map, as offsets from the base port (0x3f8 for COM1 on a PC):
 *
 *   off  DLAB=0 read   DLAB=0 write   DLAB=1
 *    0   RBR rx data   THR tx data    DLL divisor low
 *    1   IER           IER            DLM divisor high
 *    2   IIR           FCR            (IIR / FCR, as with DLAB=0)
 *    3   LCR (bit 7 is DLAB)
 *    4   MCR (bit 3 OUT2 gates the interrupt line, bit 4 loopback)
 *    5   LSR (reading clears the overrun bit)
 *    6   MSR (reading clears the delta bits)
 *    7   SCR scratch
 *
 * What is modelled and what is not:
 *
 *   guest THR write --> tx() callback at once (THR and TSR are never busy, LSR.THRE|TEMT
 *                       always read 1); in loopback the byte goes into the rx FIFO instead,
 *                       and a byte looped into a full FIFO is lost and sets LSR.OE.
 *   host input -------> serial8250_receive() --> rx FIFO --> guest RBR reads.
 *                       The FIFO is never overrun by host input: what does not fit is
 *                       refused and must be offered again later.
 *
 * The rx FIFO always buffers, even with FCR bit 0 clear, and the "data available" interrupt
 * fires on any byte (FCR trigger levels are stored but ignored, so no timeout interrupt is
 * needed). Parity, framing and break errors never happen. Baud rate and line format are
 * stored for the guest to read back and otherwise ignored.
 *
 * Interrupt line: asserted when MCR.OUT2 is set and IIR reports an interrupt, as on a PC
 * where OUT2 gates the UART's IRQ; Linux's 8250 driver relies on this.
 */

/* Entries in the receive FIFO (a real 16550A has 16; more only helps host input). */
#define SERIAL8250_RX_FIFO_SIZE 64

/* Register offsets. */
#define SERIAL8250_RBR     0 /* read, DLAB=0 */
#define SERIAL8250_THR     0 /* write, DLAB=0 */
#define SERIAL8250_DLL     0 /* DLAB=1 */
#define SERIAL8250_IER     1 /* DLAB=0 */
#define SERIAL8250_DLM     1 /* DLAB=1 */
#define SERIAL8250_IIR     2 /* read */
#define SERIAL8250_FCR     2 /* write */
#define SERIAL8250_LCR     3
#define SERIAL8250_MCR     4
#define SERIAL8250_LSR     5
#define SERIAL8250_MSR     6
#define SERIAL8250_SCR     7
#define SERIAL8250_NR_REGS 8

struct serial8250;
struct snap_writer;
struct snap_reader;

/*
 * Callbacks are never invoked with the chip's lock held, so they may call back into the
 * chip (e.g. tx() may read LSR, set_irq() may read IIR). Any of them may be NULL.
 */
struct serial8250_callbacks {
	/*
	 * The interrupt line changed level (true = asserted). Called only on changes, and
	 * never concurrently with itself: when several threads change the line at once, one
	 * of them delivers the changes in order and the last call made always matches the
	 * chip's current state. A short pulse may therefore be merged away, which is harmless
	 * for a level-triggered line.
	 */
	void (*set_irq)(void *opaque, bool level);
	/*
	 * The guest transmitted these bytes (THR writes, not in loopback mode). Called on the
	 * thread of the THR write, before that write returns; bytes written by two vCPUs at
	 * the same moment may come out in either order.
	 */
	void (*tx)(void *opaque, const uint8_t *buf, size_t len);
	void *opaque;
};

/*
 * Creates a chip in its reset state. *cb is copied (cb may be NULL: no callbacks).
 * The interrupt line starts deasserted and no set_irq call is made for that.
 * Returns NULL on ENOMEM. Free with serial8250_destroy().
 */
struct serial8250 *serial8250_create(const struct serial8250_callbacks *cb);
/* The caller guarantees no other thread is still using s. NULL is allowed. */
void serial8250_destroy(struct serial8250 *s);

/*
 * Power-on / machine reset: every register back to its reset value, rx FIFO emptied.
 * Lowers the interrupt line (calling set_irq) if it was asserted.
 *   IER 0, IIR 0x01, LCR 0, MCR 0, LSR 0x60, MSR 0xb0, SCR 0, divisor 12 (9600 baud).
 */
void serial8250_reset(struct serial8250 *s);

/*
 * One guest access to register `reg` (0..7, offset from the base port). Reads of a
 * register index above 7 return 0xff and writes to one are dropped. Safe to call from
 * several vCPU threads at once. May call the callbacks before returning.
 */
uint8_t serial8250_read(struct serial8250 *s, unsigned reg);
void serial8250_write(struct serial8250 *s, unsigned reg, uint8_t val);

/*
 * Host input (console keyboard) into the receive FIFO. Returns how many bytes were
 * accepted, from the start of buf; the rest must be offered again later (there is no
 * notification: poll serial8250_rx_room()). Accepts nothing while the guest has the chip
 * in loopback mode, where the real receiver is disconnected from its input pin.
 */
size_t serial8250_receive(struct serial8250 *s, const uint8_t *buf, size_t len);

/* Free space in the receive FIFO: 0 when full, and 0 while in loopback mode. */
size_t serial8250_rx_room(struct serial8250 *s);

/*
 * Snapshot: every register, the receive FIFO (contents and positions) and the interrupt
 * line, as section "serial" number `inst`. Returns 0 or -errno (from snap_put).
 */
int serial8250_save(const struct serial8250 *s, struct snap_writer *w, uint32_t inst);
/*
 * Loads what serial8250_save() wrote into s (fresh from serial8250_create(), or reset).
 * Every field is checked: a bad section gives -EINVAL (-ENOENT if absent) and one line
 * in err naming it and the field, leaving s unchanged. If the line was asserted, set_irq
 * is called to assert it again (the callbacks are s's own, not the saved chip's).
 */
int serial8250_load(struct serial8250 *s, const struct snap_reader *r, uint32_t inst, char *err,
                    size_t errlen);

#endif
