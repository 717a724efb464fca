/* test.h: a minimal unit-test harness: TEST() functions, CHECK macros, one runner per file. */
#ifndef VMSTACK_TEST_H
#define VMSTACK_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct test_case {
	const char *name;
	void (*fn)(void);
};

extern int test_failures;

/* Registers a test; the runner (test_main.c) runs every registered test in order. */
#define TEST(name)                                                                                 \
	static void name(void);                                                                    \
	__attribute__((constructor)) static void register_##name(void)                             \
	{                                                                                          \
		test_register(#name, name);                                                        \
	}                                                                                          \
	static void name(void)

void test_register(const char *name, void (*fn)(void));

/*
 * Skips the running test, for one that needs something the host may lack (root, a tap
 * device, a helper binary): prints the reason and counts the test as skipped, not passed.
 * Use as `return test_skip("needs root");` before any CHECK.
 */
void test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);   \
			test_failures++;                                                           \
		}                                                                                  \
	} while (0)

#define CHECK_EQ(a, b)                                                                             \
	do {                                                                                       \
		uint64_t va_ = (uint64_t)(a), vb_ = (uint64_t)(b);                                 \
		if (va_ != vb_) {                                                                  \
			fprintf(stderr,                                                            \
			        "%s:%d: CHECK_EQ(%s, %s) failed: 0x%" PRIx64 " != 0x%" PRIx64      \
			        "\n",                                                              \
			        __FILE__, __LINE__, #a, #b, va_, vb_);                             \
			test_failures++;                                                           \
		}                                                                                  \
	} while (0)

#define CHECK_STR(a, b)                                                                            \
	do {                                                                                       \
		const char *sa_ = (a), *sb_ = (b);                                                 \
		if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0) {                                       \
			fprintf(stderr, "%s:%d: CHECK_STR failed: \"%s\" != \"%s\"\n", __FILE__,   \
			        __LINE__, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");             \
			test_failures++;                                                           \
		}                                                                                  \
	} while (0)

#endif
