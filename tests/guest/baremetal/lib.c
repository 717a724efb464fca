/* lib.c: console, power, timing and zero-page helpers for the bare-metal test guests. */
#include "lib.h"

#define COM1          0x3f8
#define UART_LSR      5
#define UART_LSR_THRE 0x20

#define ACPI_PM1A_CNT   0x604
#define ACPI_PM_TMR     0x608
#define ACPI_RESET_REG  0x60c
#define ACPI_SLP_TYP_S5 (5u << 10)
#define ACPI_SLP_EN     (1u << 13)

#define I8042_CMD   0x64
#define I8042_RESET 0xfe

/* Zero-page offsets (Documentation/arch/x86/zero-page.rst). */
#define BP_E820_ENTRIES 0x1e8
#define BP_CMD_LINE_PTR 0x228
#define BP_E820_TABLE   0x2d0
#define BP_E820_MAX     128

/* ---- console ---- */

static void uart_put(uint8_t c)
{
	/*
	 * Bounded, so that a monitor whose LSR never reports THRE still gets its output
	 * (and the test fails on content rather than hanging).
	 */
	for (unsigned i = 0; i < 100000; i++) {
		if (inb(COM1 + UART_LSR) & UART_LSR_THRE)
			break;
	}
	outb(COM1, c);
}

void print_char(char c)
{
	if (c == '\n')
		uart_put('\r');
	uart_put((uint8_t)c);
}

void print_str(const char *s)
{
	while (*s)
		print_char(*s++);
}

static void print_num(uint64_t v, unsigned base, unsigned width, char pad)
{
	char buf[24];
	unsigned n = 0;

	do {
		unsigned d = (unsigned)(v % base);

		buf[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v /= base;
	} while (v && n < sizeof(buf));
	while (width > n) {
		print_char(pad);
		width--;
	}
	while (n)
		print_char(buf[--n]);
}

void print_hex(uint64_t v)
{
	print_str("0x");
	print_num(v, 16, 0, '0');
}

void print_dec(uint64_t v)
{
	print_num(v, 10, 0, '0');
}

void vprint(const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		char pad = ' ';
		unsigned width = 0;
		bool is_long = false;
		uint64_t u;
		int64_t s;

		if (*fmt != '%') {
			print_char(*fmt);
			continue;
		}
		fmt++;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (unsigned)(*fmt++ - '0');
		while (*fmt == 'l') {
			is_long = true;
			fmt++;
		}
		switch (*fmt) {
		case 's': {
			const char *str = va_arg(ap, const char *);
			size_t len = strlen(str ? str : "(null)");

			while (width > len) {
				print_char(' ');
				width--;
			}
			print_str(str ? str : "(null)");
			break;
		}
		case 'c':
			print_char((char)va_arg(ap, int));
			break;
		case 'd':
		case 'i':
			s = is_long ? va_arg(ap, int64_t) : va_arg(ap, int);
			if (s < 0) {
				print_char('-');
				u = (uint64_t)0 - (uint64_t)s;
				if (width)
					width--;
			} else {
				u = (uint64_t)s;
			}
			print_num(u, 10, width, pad);
			break;
		case 'u':
			u = is_long ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
			print_num(u, 10, width, pad);
			break;
		case 'x':
			u = is_long ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
			print_num(u, 16, width, pad);
			break;
		case 'p':
			print_str("0x");
			print_num((uint64_t)va_arg(ap, void *), 16, width, pad);
			break;
		case '%':
			print_char('%');
			break;
		case '\0':
			return;
		default:
			print_char('%');
			print_char(*fmt);
			break;
		}
	}
}

void print(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprint(fmt, ap);
	va_end(ap);
}

/* ---- ending a test ---- */

void poweroff(void)
{
	outw(ACPI_PM1A_CNT, ACPI_SLP_TYP_S5 | ACPI_SLP_EN);
}

void reset(void)
{
	outb(I8042_CMD, I8042_RESET);
	delay_us(100000);
	outb(ACPI_RESET_REG, 1);
}

void halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

void pass(void)
{
	print_str("PASS\n");
	poweroff();
	halt_forever();
}

void fail(const char *msg)
{
	print_str("FAIL: ");
	print_str(msg);
	print_char('\n');
	poweroff();
	halt_forever();
}

void failf(const char *fmt, ...)
{
	va_list ap;

	print_str("FAIL: ");
	va_start(ap, fmt);
	vprint(fmt, ap);
	va_end(ap);
	print_char('\n');
	poweroff();
	halt_forever();
}

/* ---- time ---- */

enum { PMT_UNKNOWN, PMT_PRESENT, PMT_ABSENT };

static int pmt_state;
static uint32_t pmt_last;
static uint64_t pmt_ticks;

bool pmtimer_present(void)
{
	if (pmt_state == PMT_UNKNOWN) {
		uint32_t a = inl(ACPI_PM_TMR);

		pmt_state = PMT_ABSENT;
		/* Bits 31:24 of a 24-bit timer read as zero; an unclaimed port reads all-ones. */
		for (unsigned i = 0; i < 1000 && !(a & 0xff000000u); i++) {
			if (inl(ACPI_PM_TMR) != a) {
				pmt_state = PMT_PRESENT;
				break;
			}
		}
		pmt_last = inl(ACPI_PM_TMR) & 0xffffffu;
	}
	return pmt_state == PMT_PRESENT;
}

uint64_t pmtimer_ticks(void)
{
	if (!pmtimer_present()) {
		/*
		 * No timer: each call burns a few dozen instructions, about 36 ticks
		 * (10 us) where guest kernel code is emulated at ~1M instructions/s.
		 */
		for (volatile unsigned i = 0; i < 4; i++)
			;
		pmt_ticks += 36;
		return pmt_ticks;
	}
	uint32_t now = inl(ACPI_PM_TMR) & 0xffffffu;

	pmt_ticks += (now - pmt_last) & 0xffffffu;
	pmt_last = now;
	return pmt_ticks;
}

uint64_t pmtimer_us(void)
{
	return pmtimer_ticks() * 1000000u / PMTIMER_HZ;
}

void delay_us(uint64_t us)
{
	uint64_t end = pmtimer_ticks() + us * PMTIMER_HZ / 1000000u;

	while (pmtimer_ticks() < end)
		;
}

/* ---- zero page ---- */

static uint32_t bp_read32(const struct boot_params *bp, unsigned off)
{
	return *(const volatile uint32_t *)((const char *)bp + off);
}

const char *bp_cmdline(const struct boot_params *bp)
{
	uint32_t p = bp ? bp_read32(bp, BP_CMD_LINE_PTR) : 0;

	return p ? (const char *)(uintptr_t)p : "";
}

unsigned bp_e820_count(const struct boot_params *bp)
{
	unsigned n = bp ? *((const volatile uint8_t *)bp + BP_E820_ENTRIES) : 0;

	return n > BP_E820_MAX ? BP_E820_MAX : n;
}

const struct e820_entry *bp_e820_entry(const struct boot_params *bp, unsigned i)
{
	return (const struct e820_entry *)((const char *)bp + BP_E820_TABLE) + i;
}

bool cmdline_has(const char *cmdline, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = cmdline; *p;) {
		while (*p == ' ')
			p++;
		const char *start = p;

		while (*p && *p != ' ')
			p++;
		if ((size_t)(p - start) == n && memcmp(start, word, n) == 0)
			return true;
	}
	return false;
}

/* ---- libc ---- */

void *memset(void *dst, int c, size_t n)
{
	unsigned char *d = dst;

	while (n--)
		*d++ = (unsigned char)c;
	return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	while (n--)
		*d++ = *s++;
	return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	if (d < s) {
		while (n--)
			*d++ = *s++;
	} else {
		while (n--)
			d[n] = s[n];
	}
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;

	for (; n; n--, x++, y++) {
		if (*x != *y)
			return *x - *y;
	}
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

uint8_t checksum8(const void *p, size_t n)
{
	const volatile uint8_t *b = p;
	uint8_t sum = 0;

	while (n--)
		sum = (uint8_t)(sum + *b++);
	return sum;
}
