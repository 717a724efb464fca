/* lib.h: the little runtime shared by the bare-metal test guests. */
#ifndef BAREMETAL_LIB_H
#define BAREMETAL_LIB_H

/*
 * A guest is one C file defining guest_main(); start.S calls it with the address of
 * the Linux zero page the monitor passed in RSI, in 64-bit long mode, interrupts off,
 * on a 16 KiB stack, with .bss zeroed. If guest_main returns, the guest powers off.
 *
 * Everything here polls: no interrupts are ever enabled. Output goes to COM1
 * (0x3f8) and every '\n' is sent as "\r\n". The code is built with
 * -mgeneral-regs-only and must avoid instructions this project's nested KVM cannot
 * emulate (int3, x87, SSE, xsave, popcnt, cmpxchg16b, clac/stac).
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* Opaque: the zero page is read only through the bp_* accessors below. */
struct boot_params;

void guest_main(struct boot_params *bp);

/* ---- port and memory-mapped I/O ---- */

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outw(uint16_t port, uint16_t v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;

	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint16_t inw(uint16_t port)
{
	uint16_t v;

	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;

	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* Guest-physical == virtual: the monitor identity-maps the first 4 GiB. */

/* A pointer to guest-physical addr; hidden from gcc so low constants draw no -Warray-bounds. */
static inline void *phys(uint64_t addr)
{
	void *p = (void *)addr;

	__asm__("" : "+r"(p));
	return p;
}

static inline uint8_t mmio_read8(uint64_t addr)
{
	return *(volatile uint8_t *)addr;
}

static inline uint32_t mmio_read32(uint64_t addr)
{
	return *(volatile uint32_t *)addr;
}

static inline void mmio_write8(uint64_t addr, uint8_t v)
{
	*(volatile uint8_t *)addr = v;
}

static inline void mmio_write32(uint64_t addr, uint32_t v)
{
	*(volatile uint32_t *)addr = v;
}

static inline void cpuid(uint32_t leaf, uint32_t subleaf, uint32_t *a, uint32_t *b, uint32_t *c,
                         uint32_t *d)
{
	__asm__ volatile("cpuid"
	                 : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d)
	                 : "a"(leaf), "c"(subleaf));
}

static inline uint64_t read_cr3(void)
{
	uint64_t v;

	__asm__ volatile("mov %%cr3, %0" : "=r"(v));
	return v;
}

/* ---- console (COM1) ---- */

void print_char(char c);
void print_str(const char *s);
void print_hex(uint64_t v); /* "0x" then lower-case hex digits, no padding */
void print_dec(uint64_t v);
/*
 * A small printf: %s %c %d %i %u %x %p and %%, with an optional zero flag and width
 * (%08x), and the length modifiers l and ll (ignored: integer arguments are read as
 * 64-bit when an 'l' is present, 32-bit otherwise).
 */
void print(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vprint(const char *fmt, va_list ap);

/* ---- ending a test ---- */

/* ACPI S5 through PM1a control at 0x604; returns only if the monitor ignored it. */
void poweroff(void);
/* i8042 pulse (0xFE to port 0x64), then the ACPI reset register; returns if ignored. */
void reset(void);
/* cli; hlt forever. */
__attribute__((noreturn)) void halt_forever(void);
/* Print "PASS" / "FAIL: <msg>" on a line of its own, power off, halt if still running. */
__attribute__((noreturn)) void pass(void);
__attribute__((noreturn)) void fail(const char *msg);
/* fail() with a formatted reason. */
__attribute__((noreturn, format(printf, 1, 2))) void failf(const char *fmt, ...);

/* ---- time: the ACPI PM timer (port 0x608, 24 bits, 3.579545 MHz) ---- */

#define PMTIMER_HZ 3579545u

/* True if port 0x608 looks like a PM timer (upper byte zero and the count moves). */
bool pmtimer_present(void);
/*
 * A 64-bit tick count built from the 24-bit counter; it stays monotonic as long as it
 * is called at least every 4.6 s. Falls back to a loop counter when there is no timer.
 */
uint64_t pmtimer_ticks(void);
uint64_t pmtimer_us(void);
void delay_us(uint64_t us);

/* ---- the Linux zero page ---- */

#define E820_RAM 1

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
} __attribute__((packed));

/* The kernel command line ("" if none). */
const char *bp_cmdline(const struct boot_params *bp);
/* Number of e820 entries (at most 128) and a pointer to entry i. */
unsigned bp_e820_count(const struct boot_params *bp);
const struct e820_entry *bp_e820_entry(const struct boot_params *bp, unsigned i);
/* True if `word` occurs in the command line as a whole space-separated word. */
bool cmdline_has(const char *cmdline, const char *word);

/* ---- the C library bits gcc may call even when freestanding ---- */

void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

/* Sum of n bytes, as the ACPI and MP table checksums use (valid if it is 0). */
uint8_t checksum8(const void *p, size_t n);

#endif
