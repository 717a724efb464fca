/* uart.c: drives the COM1 16550 through its registers: scratch, divisor latch, FIFO, loopback. */
#include "lib.h"

#define COM1 0x3f8
#define RBR  0 /* read, DLAB=0 */
#define THR  0 /* write, DLAB=0 */
#define DLL  0 /* DLAB=1 */
#define IER  1
#define DLM  1 /* DLAB=1 */
#define IIR  2 /* read */
#define FCR  2 /* write */
#define LCR  3
#define MCR  4
#define LSR  5
#define MSR  6
#define SCR  7

#define LCR_DLAB     0x80
#define LCR_8N1      0x03
#define MCR_LOOP     0x10
#define LSR_DR       0x01
#define FCR_ENABLE   0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04

/* Never printed: the test asserts these bytes do not leak out of the serial port. */
static const uint8_t loop_bytes[] = {'x', 'y', 'z', 'z', 'y', '-', 'l', 'b'};

static uint8_t rd(unsigned reg)
{
	return inb(COM1 + reg);
}

static void wr(unsigned reg, uint8_t v)
{
	outb(COM1 + reg, v);
}

static bool wait_dr(void)
{
	for (unsigned i = 0; i < 10000; i++) {
		if (rd(LSR) & LSR_DR)
			return true;
	}
	return false;
}

static void drain_rx(void)
{
	for (unsigned i = 0; i < 64 && (rd(LSR) & LSR_DR); i++)
		(void)rd(RBR);
}

void guest_main(struct boot_params *bp)
{
	uint8_t lcr, mcr, ier, scr1, scr2, dll, dlm, iir, lsr_after;
	uint8_t one_back = 0, msr_0f = 0, msr_05 = 0, msr_0a = 0;
	uint8_t got[sizeof(loop_bytes)];
	unsigned got_n = 0;
	bool one_ok;

	(void)bp;
	print("uart: testing COM1 at 0x3f8\n");

	/* Scratch register: plain storage. */
	wr(SCR, 0x5a);
	scr1 = rd(SCR);
	wr(SCR, 0xa5);
	scr2 = rd(SCR);
	print("uart: scratch wrote 5a/a5 read %02x/%02x\n", scr1, scr2);
	if (scr1 != 0x5a || scr2 != 0xa5)
		fail("scratch register does not read back");

	/* Divisor latch; nothing may be printed while DLAB is set (THR is DLL then). */
	lcr = rd(LCR);
	ier = rd(IER);
	wr(LCR, lcr | LCR_DLAB);
	wr(DLL, 0x34);
	wr(DLM, 0x12);
	dll = rd(DLL);
	dlm = rd(DLM);
	wr(DLL, 0x01); /* 115200 baud */
	wr(DLM, 0x00);
	wr(LCR, LCR_8N1);
	print("uart: lcr was %02x, divisor wrote 1234 read %02x%02x, ier %02x after\n", lcr, dlm,
	      dll, rd(IER));
	if (dll != 0x34 || dlm != 0x12)
		fail("divisor latch does not read back");
	if (rd(IER) != ier)
		fail("DLM write with DLAB set changed IER");
	if (rd(LCR) != LCR_8N1)
		fail("LCR does not read back");

	/* FIFOs: IIR bits 7:6 say "FIFOs enabled" on a 16550A. */
	wr(FCR, FCR_ENABLE | FCR_CLEAR_RX | FCR_CLEAR_TX);
	iir = rd(IIR);
	print("uart: iir %02x after FCR=07\n", iir);
	if ((iir & 0xc0) != 0xc0)
		fail("IIR bits 7:6 are not 11 with FIFOs enabled");

	/*
	 * Loopback: THR feeds RBR and MCR's outputs feed MSR's inputs (DTR->DSR,
	 * RTS->CTS, OUT1->RI, OUT2->DCD). Nothing may be printed in this block.
	 */
	mcr = rd(MCR);
	drain_rx();
	wr(MCR, MCR_LOOP | 0x0f);
	msr_0f = rd(MSR);
	wr(MCR, MCR_LOOP | 0x05); /* DTR, OUT1 */
	msr_05 = rd(MSR);
	wr(MCR, MCR_LOOP | 0x0a); /* RTS, OUT2 */
	msr_0a = rd(MSR);

	wr(THR, 0x42);
	one_ok = wait_dr();
	if (one_ok)
		one_back = rd(RBR);
	for (unsigned i = 0; i < sizeof(loop_bytes); i++)
		wr(THR, loop_bytes[i]);
	while (got_n < sizeof(loop_bytes) && wait_dr())
		got[got_n++] = rd(RBR);
	lsr_after = rd(LSR);
	drain_rx();
	wr(MCR, mcr & ~MCR_LOOP);

	print("uart: loopback msr %02x %02x %02x for mcr 1f 15 1a\n", msr_0f, msr_05, msr_0a);
	print("uart: loopback single byte %s %02x\n", one_ok ? "read" : "missing", one_back);
	print("uart: loopback burst got %u of %u bytes, lsr %02x after\n", got_n,
	      (unsigned)sizeof(loop_bytes), lsr_after);
	if ((msr_0f & 0xf0) != 0xf0)
		fail("MSR does not mirror MCR 0f in loopback");
	/* DTR->DSR (bit 5), OUT1->RI (bit 6). */
	if ((msr_05 & 0xf0) != 0x60)
		fail("MSR does not mirror MCR 05 in loopback");
	/* RTS->CTS (bit 4), OUT2->DCD (bit 7). */
	if ((msr_0a & 0xf0) != 0x90)
		fail("MSR does not mirror MCR 0a in loopback");
	if (!one_ok || one_back != 0x42)
		fail("loopback byte did not come back through RBR");
	if (got_n != sizeof(loop_bytes))
		fail("loopback burst lost bytes");
	if (memcmp(got, loop_bytes, sizeof(loop_bytes)) != 0)
		fail("loopback burst came back out of order");
	if (lsr_after & LSR_DR)
		fail("LSR.DR still set with the receive FIFO empty");
	if (rd(MCR) & MCR_LOOP)
		fail("MCR loopback bit stuck");
	pass();
}
