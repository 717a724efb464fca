/* serial8250.c: 16550A UART registers, receive FIFO and interrupt logic, behind one mutex. */
#include "serial8250.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot_file.h"
#include "util.h"

#define IER_ERBFI 0x01 /* rx data available */
#define IER_ETBEI 0x02 /* THR empty */
#define IER_ELSI  0x04 /* line status */
#define IER_EDSSI 0x08 /* modem status */
#define IER_MASK  0x0f /* the rest read 0 on a 16550A; Linux's probe checks that */

#define IIR_NO_INT  0x01
#define IIR_MSI     0x00
#define IIR_THRI    0x02
#define IIR_RDI     0x04
#define IIR_RLSI    0x06
#define IIR_ID_MASK 0x0f
#define IIR_FIFO_ON 0xc0

#define FCR_ENABLE   0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04
#define FCR_TRIGGER  0xc0

#define LCR_DLAB 0x80

#define MCR_DTR  0x01
#define MCR_RTS  0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define MCR_MASK 0x1f

#define LSR_DR   0x01
#define LSR_OE   0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

#define MSR_DCTS 0x01
#define MSR_DDSR 0x02
#define MSR_TERI 0x04
#define MSR_DDCD 0x08
#define MSR_CTS  0x10
#define MSR_DSR  0x20
#define MSR_RI   0x40
#define MSR_DCD  0x80

/* With nothing attached to the modem pins, tell the guest a modem is present and ready. */
#define MSR_LINES_IDLE (MSR_DCD | MSR_DSR | MSR_CTS)

#define DIVISOR_RESET 12 /* 115200 / 12 = 9600 baud */

struct serial8250 {
	pthread_mutex_t lock;
	struct serial8250_callbacks cb;

	/* Registers, all under lock. */
	uint8_t ier;
	uint8_t fcr; /* FCR_ENABLE | FCR_TRIGGER bits; the clear bits self-clear */
	uint8_t lcr;
	uint8_t mcr;
	uint8_t scr;
	uint8_t dll, dlm;
	uint8_t msr_delta; /* MSR bits 3:0, cleared by reading MSR */
	bool overrun;      /* LSR.OE, cleared by reading LSR */
	bool thre_pending; /* THRE interrupt latched; cleared by an IIR read that reports it */

	uint8_t rx[SERIAL8250_RX_FIFO_SIZE];
	unsigned rx_head, rx_count;

	/* Interrupt line delivery; see serial8250_unlock(). */
	bool irq_reported; /* level last passed to set_irq */
	bool irq_busy;     /* a thread is inside set_irq and will re-check before it leaves */
};

static bool serial8250_loopback(const struct serial8250 *s)
{
	return s->mcr & MCR_LOOP;
}

static void serial8250_rx_push(struct serial8250 *s, uint8_t byte)
{
	s->rx[(s->rx_head + s->rx_count) % SERIAL8250_RX_FIFO_SIZE] = byte;
	s->rx_count++;
}

static uint8_t serial8250_rx_pop(struct serial8250 *s)
{
	uint8_t byte;

	if (s->rx_count == 0)
		return 0;
	byte = s->rx[s->rx_head];
	s->rx_head = (s->rx_head + 1) % SERIAL8250_RX_FIFO_SIZE;
	s->rx_count--;
	return byte;
}

static void serial8250_rx_clear(struct serial8250 *s)
{
	s->rx_head = 0;
	s->rx_count = 0;
}

/* The modem input lines, before the delta bits are added. */
static uint8_t serial8250_msr_lines(const struct serial8250 *s)
{
	uint8_t msr = 0;

	if (!serial8250_loopback(s))
		return MSR_LINES_IDLE;
	/* In loopback the MCR outputs are wired to the MSR inputs (16550A datasheet, MCR bit 4). */
	if (s->mcr & MCR_DTR)
		msr |= MSR_DSR;
	if (s->mcr & MCR_RTS)
		msr |= MSR_CTS;
	if (s->mcr & MCR_OUT1)
		msr |= MSR_RI;
	if (s->mcr & MCR_OUT2)
		msr |= MSR_DCD;
	return msr;
}

static uint8_t serial8250_lsr(const struct serial8250 *s)
{
	uint8_t lsr = LSR_THRE | LSR_TEMT;

	if (s->rx_count)
		lsr |= LSR_DR;
	if (s->overrun)
		lsr |= LSR_OE;
	return lsr;
}

/* IIR by the 16550A priority order: line status > rx data > THR empty > modem status. */
static uint8_t serial8250_iir(const struct serial8250 *s)
{
	uint8_t iir;

	if ((s->ier & IER_ELSI) && s->overrun)
		iir = IIR_RLSI;
	else if ((s->ier & IER_ERBFI) && s->rx_count)
		iir = IIR_RDI;
	else if ((s->ier & IER_ETBEI) && s->thre_pending)
		iir = IIR_THRI;
	else if ((s->ier & IER_EDSSI) && s->msr_delta)
		iir = IIR_MSI;
	else
		iir = IIR_NO_INT;
	if (s->fcr & FCR_ENABLE)
		iir |= IIR_FIFO_ON;
	return iir;
}

static bool serial8250_irq_level(const struct serial8250 *s)
{
	return (s->mcr & MCR_OUT2) && !(serial8250_iir(s) & IIR_NO_INT);
}

/*
 * Drops the lock after bringing the interrupt line up to date. set_irq runs unlocked, so
 * two threads could otherwise deliver levels out of order and leave the line wrong; instead
 * one thread at a time delivers (irq_busy), and it recomputes the level after each call
 * so that changes made meanwhile by other threads, or by set_irq itself, are not lost.
 */
static void serial8250_unlock(struct serial8250 *s)
{
	while (s->cb.set_irq && !s->irq_busy) {
		bool level = serial8250_irq_level(s);

		if (level == s->irq_reported)
			break;
		s->irq_reported = level;
		s->irq_busy = true;
		pthread_mutex_unlock(&s->lock);
		s->cb.set_irq(s->cb.opaque, level);
		pthread_mutex_lock(&s->lock);
		s->irq_busy = false;
	}
	pthread_mutex_unlock(&s->lock);
}

static void serial8250_reset_locked(struct serial8250 *s)
{
	s->ier = 0;
	s->fcr = 0;
	s->lcr = 0;
	s->mcr = 0;
	s->scr = 0;
	s->dll = DIVISOR_RESET & 0xff;
	s->dlm = DIVISOR_RESET >> 8;
	s->msr_delta = 0;
	s->overrun = false;
	s->thre_pending = false;
	serial8250_rx_clear(s);
}

struct serial8250 *serial8250_create(const struct serial8250_callbacks *cb)
{
	struct serial8250 *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	if (pthread_mutex_init(&s->lock, NULL) != 0) {
		free(s);
		return NULL;
	}
	if (cb)
		s->cb = *cb;
	serial8250_reset_locked(s);
	return s;
}

void serial8250_destroy(struct serial8250 *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	free(s);
}

void serial8250_reset(struct serial8250 *s)
{
	pthread_mutex_lock(&s->lock);
	serial8250_reset_locked(s);
	serial8250_unlock(s);
}

static uint8_t serial8250_read_locked(struct serial8250 *s, unsigned reg)
{
	uint8_t val;

	switch (reg) {
	case SERIAL8250_RBR:
		if (s->lcr & LCR_DLAB)
			return s->dll;
		return serial8250_rx_pop(s);
	case SERIAL8250_IER:
		if (s->lcr & LCR_DLAB)
			return s->dlm;
		return s->ier;
	case SERIAL8250_IIR:
		val = serial8250_iir(s);
		/* Reading IIR acknowledges THRE, but only when THRE is what it reports. */
		if ((val & IIR_ID_MASK) == IIR_THRI)
			s->thre_pending = false;
		return val;
	case SERIAL8250_LCR:
		return s->lcr;
	case SERIAL8250_MCR:
		return s->mcr;
	case SERIAL8250_LSR:
		val = serial8250_lsr(s);
		s->overrun = false;
		return val;
	case SERIAL8250_MSR:
		val = serial8250_msr_lines(s) | s->msr_delta;
		s->msr_delta = 0;
		return val;
	case SERIAL8250_SCR:
		return s->scr;
	}
	return 0xff;
}

static void serial8250_write_ier(struct serial8250 *s, uint8_t val)
{
	uint8_t changed = (s->ier ^ val) & IER_MASK;

	s->ier = val & IER_MASK;
	/*
	 * Enabling ETBEI while THR is empty raises THRE at once, even if an earlier IIR read
	 * acknowledged it; Linux's THRE-bug probe and Windows both toggle IER to rely on this.
	 * Only the rising edge counts, like Bochs and QEMU.
	 */
	if (changed & IER_ETBEI)
		s->thre_pending = s->ier & IER_ETBEI;
}

static void serial8250_write_fcr(struct serial8250 *s, uint8_t val)
{
	/* Turning the FIFOs on or off empties them (16550A datasheet, FCR bit 0). */
	if ((val ^ s->fcr) & FCR_ENABLE)
		serial8250_rx_clear(s);
	if (val & FCR_CLEAR_RX)
		serial8250_rx_clear(s);
	/* FCR_CLEAR_TX: transmission is immediate, so the tx FIFO is always empty. */
	s->fcr = val & (FCR_ENABLE | FCR_TRIGGER);
}

static void serial8250_write_mcr(struct serial8250 *s, uint8_t val)
{
	uint8_t before = serial8250_msr_lines(s), after, changed;

	s->mcr = val & MCR_MASK;
	after = serial8250_msr_lines(s);
	changed = before ^ after;
	if (changed & MSR_CTS)
		s->msr_delta |= MSR_DCTS;
	if (changed & MSR_DSR)
		s->msr_delta |= MSR_DDSR;
	if (changed & before & MSR_RI) /* trailing edge only */
		s->msr_delta |= MSR_TERI;
	if (changed & MSR_DCD)
		s->msr_delta |= MSR_DDCD;
}

/* The transmitter moved the THR byte out: THR is empty again. */
static void serial8250_thr_emptied(struct serial8250 *s)
{
	s->thre_pending = s->ier & IER_ETBEI;
}

/*
 * Returns the byte to pass to tx() once unlocked, or -1. After tx() the caller must
 * call serial8250_thr_emptied().
 */
static int serial8250_write_locked(struct serial8250 *s, unsigned reg, uint8_t val)
{
	switch (reg) {
	case SERIAL8250_THR:
		if (s->lcr & LCR_DLAB) {
			s->dll = val;
			break;
		}
		/* Writing THR acknowledges THRE; it is raised anew once the byte has left. */
		s->thre_pending = false;
		if (!serial8250_loopback(s))
			return val;
		if (s->rx_count < SERIAL8250_RX_FIFO_SIZE)
			serial8250_rx_push(s, val);
		else
			s->overrun = true;
		serial8250_thr_emptied(s);
		break;
	case SERIAL8250_IER:
		if (s->lcr & LCR_DLAB)
			s->dlm = val;
		else
			serial8250_write_ier(s, val);
		break;
	case SERIAL8250_FCR:
		serial8250_write_fcr(s, val);
		break;
	case SERIAL8250_LCR:
		s->lcr = val;
		break;
	case SERIAL8250_MCR:
		serial8250_write_mcr(s, val);
		break;
	case SERIAL8250_LSR:
	case SERIAL8250_MSR:
		/* Read-only here (writable only in factory test modes). */
		break;
	case SERIAL8250_SCR:
		s->scr = val;
		break;
	}
	return -1;
}

uint8_t serial8250_read(struct serial8250 *s, unsigned reg)
{
	uint8_t val;

	if (reg >= SERIAL8250_NR_REGS)
		return 0xff;
	pthread_mutex_lock(&s->lock);
	val = serial8250_read_locked(s, reg);
	serial8250_unlock(s);
	return val;
}

void serial8250_write(struct serial8250 *s, unsigned reg, uint8_t val)
{
	int tx;

	if (reg >= SERIAL8250_NR_REGS)
		return;
	pthread_mutex_lock(&s->lock);
	tx = serial8250_write_locked(s, reg, val);
	if (tx >= 0) {
		uint8_t byte = tx;

		if (s->cb.tx) {
			pthread_mutex_unlock(&s->lock);
			s->cb.tx(s->cb.opaque, &byte, 1);
			pthread_mutex_lock(&s->lock);
		}
		/*
		 * Raise THRE only after tx() returned, so that the guest's next byte (perhaps
		 * from another vCPU taking the interrupt) cannot overtake this one.
		 */
		serial8250_thr_emptied(s);
	}
	serial8250_unlock(s);
}

static size_t serial8250_rx_room_locked(const struct serial8250 *s)
{
	if (serial8250_loopback(s))
		return 0;
	return SERIAL8250_RX_FIFO_SIZE - s->rx_count;
}

size_t serial8250_receive(struct serial8250 *s, const uint8_t *buf, size_t len)
{
	size_t n, i;

	pthread_mutex_lock(&s->lock);
	n = MIN(len, serial8250_rx_room_locked(s));
	for (i = 0; i < n; i++)
		serial8250_rx_push(s, buf[i]);
	serial8250_unlock(s);
	return n;
}

size_t serial8250_rx_room(struct serial8250 *s)
{
	size_t room;

	pthread_mutex_lock(&s->lock);
	room = serial8250_rx_room_locked(s);
	pthread_mutex_unlock(&s->lock);
	return room;
}

/* --- snapshot --- */

/*
 * Section "serial": the registers, then the rx FIFO as its ring (rx[rx_head] is the next
 * byte the guest reads). irq_level is the line as the registers imply it, recorded so a
 * loader can check them against each other.
 */
struct serial8250_state {
	uint8_t ier, fcr, lcr, mcr, scr, dll, dlm, msr_delta;
	uint8_t overrun, thre_pending, irq_level, pad0;
	uint8_t rx_head, rx_count, pad1[2];
	uint8_t rx[SERIAL8250_RX_FIFO_SIZE];
};
_Static_assert(sizeof(struct serial8250_state) == 16 + SERIAL8250_RX_FIFO_SIZE,
               "serial8250_state layout");
_Static_assert(SERIAL8250_RX_FIFO_SIZE <= 255, "rx_count fits a byte");

#define SERIAL8250_TAG "serial"

int serial8250_save(const struct serial8250 *s, struct snap_writer *w, uint32_t inst)
{
	struct serial8250 *m = (struct serial8250 *)s; /* the lock only */
	struct serial8250_state st;

	memset(&st, 0, sizeof(st));
	pthread_mutex_lock(&m->lock);
	st.ier = s->ier;
	st.fcr = s->fcr;
	st.lcr = s->lcr;
	st.mcr = s->mcr;
	st.scr = s->scr;
	st.dll = s->dll;
	st.dlm = s->dlm;
	st.msr_delta = s->msr_delta;
	st.overrun = s->overrun;
	st.thre_pending = s->thre_pending;
	st.irq_level = serial8250_irq_level(s);
	st.rx_head = (uint8_t)s->rx_head;
	st.rx_count = (uint8_t)s->rx_count;
	memcpy(st.rx, s->rx, sizeof(st.rx));
	pthread_mutex_unlock(&m->lock);
	return snap_put(w, SERIAL8250_TAG, inst, &st, sizeof(st));
}

static int serial8250_bad(char *err, size_t errlen, const struct snap_reader *r, uint32_t inst,
                          const char *field, unsigned val)
{
	snprintf(err, errlen, "%s: section %s %u: %s 0x%x out of range", snap_reader_name(r),
	         SERIAL8250_TAG, inst, field, val);
	return -EINVAL;
}

int serial8250_load(struct serial8250 *s, const struct snap_reader *r, uint32_t inst, char *err,
                    size_t errlen)
{
	struct serial8250_state st;
	struct serial8250 t;
	int ret = snap_get_exact(r, SERIAL8250_TAG, inst, &st, sizeof(st), err, errlen);

	if (ret < 0)
		return ret;
	if (st.ier & ~IER_MASK)
		return serial8250_bad(err, errlen, r, inst, "IER", st.ier);
	if (st.fcr & ~(FCR_ENABLE | FCR_TRIGGER))
		return serial8250_bad(err, errlen, r, inst, "FCR", st.fcr);
	if (st.mcr & ~MCR_MASK)
		return serial8250_bad(err, errlen, r, inst, "MCR", st.mcr);
	if (st.msr_delta & ~(MSR_DCTS | MSR_DDSR | MSR_TERI | MSR_DDCD))
		return serial8250_bad(err, errlen, r, inst, "MSR delta bits", st.msr_delta);
	if (st.overrun > 1)
		return serial8250_bad(err, errlen, r, inst, "overrun", st.overrun);
	if (st.thre_pending > 1)
		return serial8250_bad(err, errlen, r, inst, "thre_pending", st.thre_pending);
	if (st.irq_level > 1)
		return serial8250_bad(err, errlen, r, inst, "irq_level", st.irq_level);
	if (st.rx_head >= SERIAL8250_RX_FIFO_SIZE)
		return serial8250_bad(err, errlen, r, inst, "rx FIFO head", st.rx_head);
	if (st.rx_count > SERIAL8250_RX_FIFO_SIZE)
		return serial8250_bad(err, errlen, r, inst, "rx FIFO count", st.rx_count);

	/* The registers as the chip would hold them, checked before s is touched. */
	memset(&t, 0, sizeof(t));
	t.ier = st.ier;
	t.fcr = st.fcr;
	t.lcr = st.lcr;
	t.mcr = st.mcr;
	t.scr = st.scr;
	t.dll = st.dll;
	t.dlm = st.dlm;
	t.msr_delta = st.msr_delta;
	t.overrun = st.overrun;
	t.thre_pending = st.thre_pending;
	t.rx_head = st.rx_head;
	t.rx_count = st.rx_count;
	memcpy(t.rx, st.rx, sizeof(t.rx));
	if (serial8250_irq_level(&t) != st.irq_level) {
		snprintf(err, errlen,
		         "%s: section %s %u: irq_level %u does not match the registers (IER 0x%x, "
		         "MCR 0x%x)",
		         snap_reader_name(r), SERIAL8250_TAG, inst, st.irq_level, st.ier, st.mcr);
		return -EINVAL;
	}

	pthread_mutex_lock(&s->lock);
	s->ier = t.ier;
	s->fcr = t.fcr;
	s->lcr = t.lcr;
	s->mcr = t.mcr;
	s->scr = t.scr;
	s->dll = t.dll;
	s->dlm = t.dlm;
	s->msr_delta = t.msr_delta;
	s->overrun = t.overrun;
	s->thre_pending = t.thre_pending;
	s->rx_head = t.rx_head;
	s->rx_count = t.rx_count;
	memcpy(s->rx, t.rx, sizeof(s->rx));
	/* Delivers the line's new level through set_irq, as after any register access. */
	serial8250_unlock(s);
	return 0;
}
