/* test_serial8250.c: 16550A register, FIFO and interrupt-line behaviour of the serial8250 model. */
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>

#include "serial8250.h"
#include "test.h"
#include "util.h"

#define RBR SERIAL8250_RBR
#define THR SERIAL8250_THR
#define DLL SERIAL8250_DLL
#define DLM SERIAL8250_DLM
#define IER SERIAL8250_IER
#define IIR SERIAL8250_IIR
#define FCR SERIAL8250_FCR
#define LCR SERIAL8250_LCR
#define MCR SERIAL8250_MCR
#define LSR SERIAL8250_LSR
#define MSR SERIAL8250_MSR
#define SCR SERIAL8250_SCR

#define FIFO SERIAL8250_RX_FIFO_SIZE

/* What the chip told its bus: every set_irq level and every transmitted byte. */
struct recorder {
	struct serial8250 *s;
	bool irq[4096];
	unsigned nirq;
	uint8_t tx[256];
	size_t ntx;
	unsigned tx_calls;
	bool nested; /* test reentrancy: callbacks read registers */
	uint8_t nested_lsr;
	bool bad_order; /* two set_irq calls in a row with the same level */
};

static void rec_set_irq(void *opaque, bool level)
{
	struct recorder *r = opaque;

	if ((r->nirq == 0 && !level) || (r->nirq && r->irq[r->nirq - 1] == level))
		r->bad_order = true;
	if (r->nirq < ARRAY_SIZE(r->irq))
		r->irq[r->nirq++] = level;
	if (r->nested && level)
		serial8250_read(r->s, IIR); /* acknowledges THRE, dropping the line again */
}

static void rec_tx(void *opaque, const uint8_t *buf, size_t len)
{
	struct recorder *r = opaque;

	r->tx_calls++;
	for (size_t i = 0; i < len && r->ntx < sizeof(r->tx); i++)
		r->tx[r->ntx++] = buf[i];
	if (r->nested)
		r->nested_lsr = serial8250_read(r->s, LSR);
}

static struct serial8250 *rec_create(struct recorder *r)
{
	struct serial8250_callbacks cb = {.set_irq = rec_set_irq, .tx = rec_tx, .opaque = r};

	memset(r, 0, sizeof(*r));
	r->s = serial8250_create(&cb);
	return r->s;
}

static void rec_destroy(struct recorder *r)
{
	CHECK(!r->bad_order);
	serial8250_destroy(r->s);
}

static uint16_t read_divisor(struct serial8250 *s)
{
	uint8_t lcr = serial8250_read(s, LCR);
	uint16_t div;

	serial8250_write(s, LCR, lcr | 0x80);
	div = serial8250_read(s, DLL) | serial8250_read(s, DLM) << 8;
	serial8250_write(s, LCR, lcr);
	return div;
}

TEST(serial8250_reset_values)
{
	struct recorder r;
	struct serial8250 *s = rec_create(&r);

	CHECK(s);
	CHECK_EQ(serial8250_read(s, IER), 0);
	CHECK_EQ(serial8250_read(s, IIR), 0x01);
	CHECK_EQ(serial8250_read(s, LCR), 0);
	CHECK_EQ(serial8250_read(s, MCR), 0);
	CHECK_EQ(serial8250_read(s, LSR), 0x60);
	CHECK_EQ(serial8250_read(s, MSR), 0xb0);
	CHECK_EQ(serial8250_read(s, SCR), 0);
	CHECK_EQ(serial8250_read(s, RBR), 0);
	CHECK_EQ(read_divisor(s), 12);
	CHECK_EQ(serial8250_rx_room(s), FIFO);
	CHECK(FIFO >= 16);
	CHECK_EQ(r.nirq, 0);
	CHECK_EQ(r.tx_calls, 0);
	rec_destroy(&r);
}

TEST(serial8250_null_callbacks)
{
	struct serial8250 *s = serial8250_create(NULL);
	uint8_t b = 'k';

	CHECK(s);
	serial8250_write(s, MCR, 0x08);
	serial8250_write(s, IER, 0x0f);
	serial8250_write(s, THR, 'x');
	CHECK_EQ(serial8250_receive(s, &b, 1), 1);
	CHECK_EQ(serial8250_read(s, IIR), 0x04);
	CHECK_EQ(serial8250_read(s, RBR), 'k');
	serial8250_destroy(s);
	serial8250_destroy(NULL);
}

TEST(serial8250_divisor_latch)
{
	struct recorder r;
	struct serial8250 *s = rec_create(&r);

	serial8250_write(s, LCR, 0x83); /* DLAB, 8N1 */
	CHECK_EQ(serial8250_read(s, LCR), 0x83);
	serial8250_write(s, DLL, 0x01);
	serial8250_write(s, DLM, 0x02);
	CHECK_EQ(serial8250_read(s, DLL), 0x01);
	CHECK_EQ(serial8250_read(s, DLM), 0x02);
	/* Divisor writes are neither transmitted nor IER writes. */
	CHECK_EQ(r.tx_calls, 0);
	serial8250_write(s, LCR, 0x03);
	CHECK_EQ(serial8250_read(s, IER), 0);
	serial8250_write(s, IER, 0x05);
	serial8250_write(s, THR, 'x');
	CHECK_EQ(r.tx_calls, 1);
	CHECK_EQ(serial8250_read(s, IER), 0x05);
	CHECK_EQ(read_divisor(s), 0x0201);
	/* With DLAB set, offset 2 is still IIR/FCR and the other registers are unaffected. */
	serial8250_write(s, LCR, 0x83);
	CHECK_EQ(serial8250_read(s, IIR), 0x01);
	serial8250_write(s, SCR, 0x5a);
	CHECK_EQ(serial8250_read(s, SCR), 0x5a);
	rec_destroy(&r);
}

TEST(serial8250_scratch_register)
{
	struct recorder r;
	struct serial8250 *s = rec_create(&r);

	for (unsigned v = 0; v < 256; v++) {
		serial8250_write(s, SCR, v);
		CHECK_EQ(serial8250_read(s, SCR), v);
	}
	CHECK_EQ(serial8250_read(s, LSR), 0x60);
	rec_destroy(&r);
}

TEST(serial8250_ier_mcr_writable_bits)
{
	struct recorder r;
	struct serial8250 *s = rec_create(&r);

	/* Linux's autoconfig checks that IER's upper nibble reads 0 on a 16550A. */
	serial8250_write(s, IER, 0xff);
	CHECK_EQ(serial8250_read(s, IER), 0x0f);
	serial8250_write(s, MCR, 0xff);
	CHECK_EQ(serial8250_read(s, MCR), 0x1f);
	serial8250_write(s, LCR, 0xff);
	CHECK_EQ(serial8250_read(s, LCR), 0xff);
	/* LSR and MSR are read-only. */
	serial8250_write(s, MCR, 0x00);
	serial8250_read(s, MSR);
	serial8250_write(s, LSR, 0x00);
	serial8250_write(s, MSR, 0x00);
	CHECK_EQ(serial8250_read(s, LSR), 0x60);
	CHECK_EQ(serial8250_read(s, MSR), 0xb0);
	rec_destroy(&r);
}

TEST(serial8250_tx_callback)
{
	struct recorder r;
	struct serial8250 *s = rec_create(&r);
	const char *msg = "hello\r\n";

	for (const char *p = msg; *p; p++) {
		serial8250_write(s, THR, *p);
		/* Transmission is immediate: THR and TSR are empty again at once. */
		CHECK_EQ(serial8250_read(s, LSR), 0x60);
	}
	CHECK_EQ(r.tx_calls, strlen(msg));
	CHECK_EQ(r.ntx, strlen(msg));
	r.tx[r.ntx] = 0;
	CHECK_STR((const char *)r.tx, msg);
	/* Nothing was looped back. */
	CHECK_EQ(serial8250_rx_room(s), FIFO);
	rec_destroy(&r);
}

TEST(serial8250_loopback_data)
{
	struct recorder r;
	struct serial8250 *s = rec_create(&r);
	uint8_t b = 'h';

	serial8250_write(s, MCR, 0x10);
	serial8250_write(s, THR, 'A');
	serial8250_write(s, THR, 'B');
	CHECK_EQ(r.tx_calls, 0);
	CHECK_EQ(serial8250_read(s, LSR), 0x61);
	CHECK_EQ(serial8250_read(s, RBR), 'A');
	CHECK_EQ(serial8250_read(s, RBR), 'B');
	CHECK_EQ(serial8250_read(s, LSR), 0x60);
	/* The receiver is disconnected from host input while in loopback. */
	CHECK_EQ(serial8250_rx_room(s), 0);
	CHECK_EQ(serial8250_receive(s, &b, 1), 0);
	CHECK_EQ(serial8250_read(s, LSR), 0x60);

	/* Looping back into a full FIFO loses the byte and sets LSR.OE until LSR is read. */
	for (unsigned i = 0; i < FIFO + 1; i++)
		serial8250_write(s, THR, i);
	CHECK_EQ(serial8250_read(s, LSR), 0x63);
	CHECK_EQ(serial8250_read(s, LSR), 0x61);
	for (unsigned i = 0; i < FIFO; i++)
		CHECK_EQ(serial8250_read(s, RBR), i);
	CHECK_EQ(serial8250_read(s, LSR), 0x60);

	/* Leaving loopback: bytes go out again and host input is accepted. */
	serial8250_write(s, MCR, 0x00);
	serial8250_write(s, THR, 'C');
	CHECK_EQ(r.tx_calls, 1);
	CHECK_EQ(r.tx[0], 'C');
	CHECK_EQ(serial8250_read(s, LSR), 0x60);
	CHECK_EQ(serial8250_rx_room(s), FIFO);
	CHECK_EQ(serial8250_receive(s, &b, 1), 1);
	CHECK_EQ(serial8250_read(s, RBR), 'h');
	rec_destroy(&r);
}

TEST(serial8250_loopback_msr)
{
	struct recorder r;
	struct serial8250 *s = rec_create(&r);

	/* Entering loopback with all outputs low drops DCD, DSR and CTS: three deltas. */
	serial8250_write(s, MCR, 0x10);
	CHECK_EQ(serial8250_read(s, MSR), 0x0b);
	CHECK_EQ(serial8250_read(s, MSR), 0x00); /* deltas clear on read */
	/* DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD; RI rising is not a TERI edge. */
	serial8250_write(s, MCR, 0x1f);
	CHECK_EQ(serial8250_read(s, MSR), 0xfb);
	CHECK_EQ(serial8250_read(s, MSR), 0xf0);
	/* OUT1 falling: RI trailing edge. */
	serial8250_write(s, MCR, 0x1b);
	CHECK_EQ(serial8250_read(s, MSR), 0xb4);
	/* One line at a time. */
	serial8250_write(s, MCR, 0x11);
	CHECK_EQ(serial8250_read(s, MSR), 0x20 | 0x01 | 0x08);
	serial8250_write(s, MCR, 0x12);
	CHECK_EQ(serial8250_read(s, MSR), 0x10 | 0x01 | 0x02);
	serial8250_write(s, MCR, 0x18);
	CHECK_EQ(serial8250_read(s, MSR), 0x80 | 0x01 | 0x08);
	/* Linux's autoconfig loopback test: MCR = LOOP|OUT2|RTS must give MSR & 0xf0 == 0x90. */
	serial8250_write(s, MCR, 0x1a);
	CHECK_EQ(serial8250_read(s, MSR) & 0xf0, 0x90);
	/* Back out of loopback: the idle lines DCD|DSR|CTS. */
	serial8250_write(s, MCR, 0x00);
	CHECK_EQ(serial8250_read(s, MSR) & 0xf0, 0xb0);
	CHECK_EQ(serial8250_read(s, MSR), 0xb0);
	/* Outside loopback the MCR outputs do not reach MSR. */
	serial8250_write(s, MCR, 0x0f);
	CHECK_EQ(serial8250_read(s, MSR), 0xb0);
	rec_destroy(&r);
}

TEST(serial8250_receive_fifo)
{
	struct recorder r;
	struct serial8250 *s = rec_create(&r);
	uint8_t buf[FIFO + 8];

	CHECK_EQ(serial8250_receive(s, (const uint8_t *)"abc", 3), 3);
	CHECK_EQ(serial8250_rx_room(s), FIFO - 3);
	CHECK_EQ(serial8250_read(s, LSR), 0x61);
	CHECK_EQ(serial8250_read(s, RBR), 'a');
	CHECK_EQ(serial8250_read(s, RBR), 'b');
	CHECK_EQ(serial8250_read(s, LSR), 0x61);
	CHECK_EQ(serial8250_read(s, RBR), 'c');
	CHECK_EQ(serial8250_read(s, LSR), 0x60);
	CHECK_EQ(serial8250_rx_room(s), FIFO);
	CHECK_EQ(serial8250_receive(s, buf, 0), 0);
	CHECK_EQ(serial8250_read(s, LSR), 0x60);

	/* Overfilling is refused, not overrun: the caller keeps the rest. */
	for (unsigned i = 0; i < sizeof(buf); i++)
		buf[i] = 0x40 + i;
	CHECK_EQ(serial8250_receive(s, buf, sizeof(buf)), FIFO);
	CHECK_EQ(serial8250_rx_room(s), 0);
	CHECK_EQ(serial8250_receive(s, buf + FIFO, 8), 0);
	CHECK_EQ(serial8250_read(s, LSR), 0x61); /* no OE */
	CHECK_EQ(serial8250_read(s, RBR), 0x40);
	CHECK_EQ(serial8250_rx_room(s), 1);
	CHECK_EQ(serial8250_receive(s, buf + FIFO, 8), 1);
	CHECK_EQ(serial8250_rx_room(s), 0);
	/* The ring wrapped; order is still kept. */
	for (unsigned i = 1; i <= FIFO; i++)
		CHECK_EQ(serial8250_read(s, RBR), 0x40 + i);
	CHECK_EQ(serial8250_read(s, LSR), 0x60);
	CHECK_EQ(serial8250_rx_room(s), FIFO);
	rec_destroy(&r);
}

TEST(serial8250_fcr)
{
	struct recorder r;
	struct serial8250 *s = rec_create(&r);

	/* IIR bits 7:6 read 11 with the FIFOs enabled; the identification bits are unchanged. */
	serial8250_write(s, FCR, 0x01);
	CHECK_EQ(serial8250_read(s, IIR), 0xc1);
	serial8250_write(s, IER, 0x01);
	CHECK_EQ(serial8250_receive(s, (const uint8_t *)"xyz", 3), 3);
	CHECK_EQ(serial8250_read(s, IIR), 0xc4);

	/* Bit 1 clears the receive FIFO; bit 0 stays set. */
	serial8250_write(s, FCR, 0x03);
	CHECK_EQ(serial8250_read(s, LSR), 0x60);
	CHECK_EQ(serial8250_rx_room(s), FIFO);
	CHECK_EQ(serial8250_read(s, IIR), 0xc1);

	/* Bit 2 (clear tx) alone leaves received data in place. */
	CHECK_EQ(serial8250_receive(s, (const uint8_t *)"q", 1), 1);
	serial8250_write(s, FCR, 0xc5);
	CHECK_EQ(serial8250_read(s, LSR), 0x61);
	CHECK_EQ(serial8250_read(s, IIR), 0xc4);

	/* Turning the FIFOs off empties them too, and IIR bits 7:6 read 00 again. */
	serial8250_write(s, FCR, 0x00);
	CHECK_EQ(serial8250_read(s, LSR), 0x60);
	CHECK_EQ(serial8250_read(s, IIR), 0x01);
	/* Even without FIFOs, host input is buffered. */
	CHECK_EQ(serial8250_receive(s, (const uint8_t *)"12", 2), 2);
	CHECK_EQ(serial8250_read(s, IIR), 0x04);
	CHECK_EQ(serial8250_read(s, RBR), '1');
	CHECK_EQ(serial8250_read(s, RBR), '2');
	CHECK_EQ(serial8250_read(s, IIR), 0x01);
	rec_destroy(&r);
}

TEST(serial8250_iir_priority)
{
	struct recorder r;
	struct serial8250 *s = rec_create(&r);

	/* Loopback lets the guest side create every condition at once. */
	serial8250_write(s, MCR, 0x18); /* LOOP | OUT2: MSR deltas pending */
	for (unsigned i = 0; i < FIFO + 1; i++)
		serial8250_write(s, THR, i); /* last one overruns */
	serial8250_write(s, IER, 0x0f);      /* THRE raised by the ETBEI edge */

	CHECK_EQ(serial8250_read(s, IIR), 0x06); /* line status first */
	CHECK_EQ(serial8250_read(s, IIR), 0x06); /* until LSR is read */
	CHECK_EQ(serial8250_read(s, LSR), 0x63);
	CHECK_EQ(serial8250_read(s, IIR), 0x04); /* then rx data */
	for (unsigned i = 0; i < FIFO - 1; i++)
		serial8250_read(s, RBR);
	CHECK_EQ(serial8250_read(s, IIR), 0x04);
	serial8250_read(s, RBR);
	CHECK_EQ(serial8250_read(s, IIR), 0x02); /* then THR empty, acknowledged by this read */
	CHECK_EQ(serial8250_read(s, IIR), 0x00); /* then modem status */
	CHECK_EQ(serial8250_read(s, IIR), 0x00);
	CHECK_EQ(serial8250_read(s, MSR), 0x83); /* DCD (OUT2) stays up; DSR, CTS fell */
	CHECK_EQ(serial8250_read(s, IIR), 0x01);

	/* Each source is gated by its own IER bit. */
	serial8250_write(s, IER, 0x00);
	serial8250_write(s, THR, 'z');
	CHECK_EQ(serial8250_read(s, IIR), 0x01);
	serial8250_write(s, IER, 0x0d); /* everything but ETBEI */
	CHECK_EQ(serial8250_read(s, IIR), 0x04);
	serial8250_write(s, IER, 0x0c);
	CHECK_EQ(serial8250_read(s, IIR), 0x01);
	serial8250_read(s, RBR);
	rec_destroy(&r);
}

TEST(serial8250_thre_interrupt)
{
	struct recorder r;
	struct serial8250 *s = rec_create(&r);

	/* THR writes with ETBEI clear leave nothing pending. */
	serial8250_write(s, THR, 'a');
	CHECK_EQ(serial8250_read(s, IIR), 0x01);

	/* Setting ETBEI with THR empty raises THRE; the IIR read that reports it clears it. */
	serial8250_write(s, IER, 0x02);
	CHECK_EQ(serial8250_read(s, IIR), 0x02);
	CHECK_EQ(serial8250_read(s, IIR), 0x01);
	CHECK_EQ(serial8250_read(s, LSR), 0x60); /* THRE itself stays set in LSR */

	/* Rewriting ETBEI without a rising edge does not raise it again... */
	serial8250_write(s, IER, 0x02);
	CHECK_EQ(serial8250_read(s, IIR), 0x01);
	/* ...but toggling it does (Linux's THRE-bug probe and Windows rely on this). */
	serial8250_write(s, IER, 0x00);
	serial8250_write(s, IER, 0x02);
	CHECK_EQ(serial8250_read(s, IIR), 0x02);
	CHECK_EQ(serial8250_read(s, IIR), 0x01);

	/* Each completed THR write raises it again. */
	serial8250_write(s, THR, 'b');
	CHECK_EQ(serial8250_read(s, IIR), 0x02);
	CHECK_EQ(serial8250_read(s, IIR), 0x01);

	/* Clearing ETBEI drops a pending THRE; setting it again re-raises it. */
	serial8250_write(s, THR, 'c');
	serial8250_write(s, IER, 0x00);
	CHECK_EQ(serial8250_read(s, IIR), 0x01);

	/* An IIR read that reports a higher priority does not acknowledge THRE. */
	serial8250_write(s, IER, 0x03);
	CHECK_EQ(serial8250_receive(s, (const uint8_t *)"k", 1), 1);
	CHECK_EQ(serial8250_read(s, IIR), 0x04);
	CHECK_EQ(serial8250_read(s, IIR), 0x04);
	CHECK_EQ(serial8250_read(s, RBR), 'k');
	CHECK_EQ(serial8250_read(s, IIR), 0x02);
	CHECK_EQ(serial8250_read(s, IIR), 0x01);

	/* Writing THR while THRE is pending: acknowledged, then raised again after transmit. */
	serial8250_write(s, IER, 0x00);
	serial8250_write(s, IER, 0x02);
	serial8250_write(s, THR, 'd');
	CHECK_EQ(serial8250_read(s, IIR), 0x02);
	CHECK_EQ(serial8250_read(s, IIR), 0x01);
	CHECK_EQ(r.ntx, 4);
	rec_destroy(&r);
}

TEST(serial8250_irq_line)
{
	struct recorder r;
	struct serial8250 *s = rec_create(&r);

	/* Pending interrupt without OUT2: the line stays low and set_irq is not called. */
	serial8250_write(s, IER, 0x01);
	CHECK_EQ(serial8250_receive(s, (const uint8_t *)"a", 1), 1);
	CHECK_EQ(serial8250_read(s, IIR), 0x04);
	CHECK_EQ(r.nirq, 0);

	/* OUT2 connects it. */
	serial8250_write(s, MCR, 0x0b); /* DTR | RTS | OUT2, as Linux does */
	CHECK_EQ(r.nirq, 1);
	CHECK_EQ(r.irq[0], true);
	/* More data, more register reads: no change, no call. */
	CHECK_EQ(serial8250_receive(s, (const uint8_t *)"bc", 2), 2);
	serial8250_read(s, IIR);
	serial8250_read(s, LSR);
	serial8250_read(s, RBR);
	serial8250_read(s, RBR);
	CHECK_EQ(r.nirq, 1);
	/* Draining the FIFO lowers it. */
	serial8250_read(s, RBR);
	CHECK_EQ(r.nirq, 2);
	CHECK_EQ(r.irq[1], false);
	serial8250_read(s, IIR);
	serial8250_read(s, RBR);
	CHECK_EQ(r.nirq, 2);

	/* Receiving raises it; clearing OUT2 lowers it while the cause remains. */
	CHECK_EQ(serial8250_receive(s, (const uint8_t *)"d", 1), 1);
	CHECK_EQ(r.nirq, 3);
	CHECK_EQ(r.irq[2], true);
	serial8250_write(s, MCR, 0x03);
	CHECK_EQ(r.nirq, 4);
	CHECK_EQ(r.irq[3], false);
	CHECK_EQ(serial8250_read(s, IIR), 0x04);
	serial8250_write(s, MCR, 0x0b);
	CHECK_EQ(r.nirq, 5);
	CHECK_EQ(r.irq[4], true);
	/* Masking the source in IER lowers it. */
	serial8250_write(s, IER, 0x00);
	CHECK_EQ(r.nirq, 6);
	CHECK_EQ(r.irq[5], false);
	serial8250_read(s, RBR);

	/* THRE: raised by the ETBEI edge and by each THR write, lowered by the IIR read. */
	serial8250_write(s, IER, 0x02);
	CHECK_EQ(r.nirq, 7);
	CHECK_EQ(r.irq[6], true);
	CHECK_EQ(serial8250_read(s, IIR), 0x02);
	CHECK_EQ(r.nirq, 8);
	CHECK_EQ(r.irq[7], false);
	serial8250_write(s, THR, '!');
	CHECK_EQ(r.nirq, 9);
	CHECK_EQ(r.irq[8], true);
	/* A THR write while THRE is pending keeps the line up: acknowledged and raised again. */
	serial8250_write(s, THR, '?');
	CHECK_EQ(r.nirq, 9);
	CHECK_EQ(r.ntx, 2);

	/* Reset lowers the line. */
	serial8250_reset(s);
	CHECK_EQ(r.nirq, 10);
	CHECK_EQ(r.irq[9], false);
	CHECK_EQ(serial8250_read(s, IER), 0);
	CHECK_EQ(serial8250_read(s, MCR), 0);
	CHECK_EQ(read_divisor(s), 12);
	rec_destroy(&r);
}

TEST(serial8250_callbacks_may_reenter)
{
	struct recorder r;
	struct serial8250 *s = rec_create(&r);

	r.nested = true;
	serial8250_write(s, MCR, 0x08);
	serial8250_write(s, THR, 'x');
	CHECK_EQ(r.ntx, 1);
	CHECK_EQ(r.nested_lsr, 0x60);
	/* set_irq(true) reads IIR, which acknowledges THRE: the line must come back down. */
	serial8250_write(s, IER, 0x02);
	CHECK_EQ(r.nirq, 2);
	CHECK_EQ(r.irq[0], true);
	CHECK_EQ(r.irq[1], false);
	CHECK_EQ(serial8250_read(s, IIR), 0x01);
	rec_destroy(&r);
}

TEST(serial8250_out_of_range_register)
{
	struct recorder r;
	struct serial8250 *s = rec_create(&r);

	serial8250_write(s, SCR, 0x42);
	CHECK_EQ(serial8250_read(s, 8), 0xff);
	CHECK_EQ(serial8250_read(s, 255), 0xff);
	CHECK_EQ(serial8250_read(s, ~0u), 0xff);
	serial8250_write(s, 8, 0x80);
	serial8250_write(s, 8 + THR, 'x');
	serial8250_write(s, 8 + MCR, 0x1f);
	serial8250_write(s, ~0u, 0x00);
	CHECK_EQ(r.tx_calls, 0);
	CHECK_EQ(serial8250_read(s, LCR), 0);
	CHECK_EQ(serial8250_read(s, MCR), 0);
	CHECK_EQ(serial8250_read(s, SCR), 0x42);
	CHECK_EQ(r.nirq, 0);
	rec_destroy(&r);
}

TEST(serial8250_two_instances)
{
	struct recorder a, b;

	rec_create(&a);
	rec_create(&b);
	serial8250_write(a.s, SCR, 1);
	serial8250_write(b.s, SCR, 2);
	serial8250_write(a.s, THR, 'a');
	CHECK_EQ(serial8250_read(a.s, SCR), 1);
	CHECK_EQ(serial8250_read(b.s, SCR), 2);
	CHECK_EQ(a.ntx, 1);
	CHECK_EQ(b.ntx, 0);
	rec_destroy(&a);
	rec_destroy(&b);
}

/* A console thread feeds bytes while the "guest" reads them: order kept, line consistent. */
#define STRESS_BYTES 20000

struct stress {
	struct serial8250 *s;
	bool level;
	unsigned changes;
	bool bad_order;
};

static void stress_set_irq(void *opaque, bool level)
{
	struct stress *st = opaque;

	if (st->level == level)
		st->bad_order = true;
	st->level = level;
	st->changes++;
}

static void *stress_feeder(void *arg)
{
	struct stress *st = arg;
	unsigned sent = 0;

	while (sent < STRESS_BYTES) {
		uint8_t buf[7];
		size_t n = 0;

		while (n < sizeof(buf) && sent + n < STRESS_BYTES) {
			buf[n] = (uint8_t)((sent + n) * 7);
			n++;
		}
		n = serial8250_receive(st->s, buf, n);
		sent += n;
		if (n == 0)
			sched_yield();
	}
	return NULL;
}

TEST(serial8250_threads)
{
	struct stress st = {0};
	struct serial8250_callbacks cb = {.set_irq = stress_set_irq, .opaque = &st};
	pthread_t feeder;
	unsigned got = 0;
	bool ok = true;

	st.s = serial8250_create(&cb);
	serial8250_write(st.s, MCR, 0x08);
	serial8250_write(st.s, IER, 0x01);
	CHECK_EQ(pthread_create(&feeder, NULL, stress_feeder, &st), 0);
	while (got < STRESS_BYTES) {
		if (!(serial8250_read(st.s, LSR) & 0x01)) {
			sched_yield();
			continue;
		}
		if (serial8250_read(st.s, RBR) != (uint8_t)(got * 7))
			ok = false;
		got++;
	}
	pthread_join(feeder, NULL);
	CHECK(ok);
	CHECK(!st.bad_order);
	CHECK(st.changes > 0);
	/* Everything consumed: the last level delivered must be low. */
	CHECK_EQ(serial8250_read(st.s, IIR), 0x01);
	CHECK(!st.level);
	serial8250_destroy(st.s);
}
