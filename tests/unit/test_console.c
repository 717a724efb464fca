/* test_console.c: Ctrl-A escape handling of console input (console_filter). */
#include "console.h"
#include "test.h"

/* Filters `in` through c; the bytes for the guest end up in out (NUL-terminated). */
static size_t filter(struct console *c, const char *in, size_t len, char *out, bool *quit)
{
	size_t n;

	memcpy(out, in, len);
	n = console_filter(c, (uint8_t *)out, len, quit);
	CHECK(n <= len);
	out[n] = '\0';
	return n;
}

TEST(console_plain_bytes_pass)
{
	struct console c = {.escape = false};
	char out[64];
	bool quit = false;
	static const char in[] = "ls -l\r\x03\x1b[A\x7f\x00x";

	CHECK_EQ(filter(&c, in, sizeof(in) - 1, out, &quit), sizeof(in) - 1);
	CHECK(memcmp(out, in, sizeof(in) - 1) == 0);
	CHECK(!quit);
	CHECK(!c.escape);
	CHECK_EQ(filter(&c, "", 0, out, &quit), 0);
	CHECK(!quit);
}

TEST(console_ctrl_a_x_quits)
{
	struct console c = {.escape = false};
	char out[64];
	bool quit = false;

	CHECK_EQ(filter(&c, "ab\x01xcd", 6, out, &quit), 2);
	CHECK(quit);
	CHECK_STR(out, "ab");

	c = (struct console){.escape = false};
	quit = false;
	CHECK_EQ(filter(&c, "\x01X", 2, out, &quit), 0);
	CHECK(quit);
}

TEST(console_ctrl_a_ctrl_a_sends_one)
{
	struct console c = {.escape = false};
	char out[64];
	bool quit = false;

	CHECK_EQ(filter(&c,
	                "a\x01\x01"
	                "b",
	                4, out, &quit),
	         3);
	CHECK(memcmp(out,
	             "a\x01"
	             "b",
	             3) == 0);
	CHECK(!quit);
	CHECK(!c.escape);

	/* The Ctrl-A that was sent does not start a new escape; the next one does. */
	CHECK_EQ(filter(&c, "\x01\x01\x01x", 4, out, &quit), 1);
	CHECK_EQ(out[0], 0x01);
	CHECK(quit);
}

TEST(console_ctrl_a_other_key_dropped)
{
	struct console c = {.escape = false};
	char out[64];
	bool quit = false;

	CHECK_EQ(filter(&c, "a\x01zb", 4, out, &quit), 2);
	CHECK_STR(out, "ab");
	CHECK(!quit);
	CHECK(!c.escape);
	/* 'x' right after a dropped pair is just a letter. */
	CHECK_EQ(filter(&c, "\x01hx", 3, out, &quit), 1);
	CHECK_STR(out, "x");
	CHECK(!quit);
}

TEST(console_escape_split_across_reads)
{
	struct console c = {.escape = false};
	char out[64];
	bool quit = false;

	CHECK_EQ(filter(&c, "ab\x01", 3, out, &quit), 2);
	CHECK_STR(out, "ab");
	CHECK(!quit);
	CHECK(c.escape);
	CHECK_EQ(filter(&c, "x", 1, out, &quit), 0);
	CHECK(quit);

	c = (struct console){.escape = false};
	quit = false;
	CHECK_EQ(filter(&c, "\x01", 1, out, &quit), 0);
	CHECK_EQ(filter(&c,
	                "\x01"
	                "c",
	                2, out, &quit),
	         2);
	CHECK(memcmp(out,
	             "\x01"
	             "c",
	             2) == 0);
	CHECK(!quit);

	c = (struct console){.escape = false};
	CHECK_EQ(filter(&c, "\x01", 1, out, &quit), 0);
	CHECK_EQ(filter(&c, "qrs", 3, out, &quit), 2);
	CHECK_STR(out, "rs");
	CHECK(!quit);
}
