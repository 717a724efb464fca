/* test_main.c: runs every TEST() linked into this executable; exit status 1 on any failure. */
#include <stdarg.h>
#include <stdbool.h>

#include "test.h"

int test_failures;
static bool skipped;

void test_skip(const char *fmt, ...)
{
	va_list ap;

	printf("  skipped: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	skipped = true;
}

static struct test_case tests[256];
static int ntests;

void test_register(const char *name, void (*fn)(void))
{
	if (ntests < (int)(sizeof(tests) / sizeof(tests[0])))
		tests[ntests++] = (struct test_case){name, fn};
}

int main(void)
{
	int failed_tests = 0, skipped_tests = 0;

	for (int i = 0; i < ntests; i++) {
		int before = test_failures;
		skipped = false;
		tests[i].fn();
		if (skipped && test_failures == before) {
			printf("skip %s\n", tests[i].name);
			skipped_tests++;
		} else if (test_failures != before) {
			printf("FAIL %s\n", tests[i].name);
			failed_tests++;
		} else {
			printf("ok   %s\n", tests[i].name);
		}
	}
	if (skipped_tests)
		printf("%d tests, %d failed, %d skipped\n", ntests, failed_tests, skipped_tests);
	else
		printf("%d tests, %d failed\n", ntests, failed_tests);
	return failed_tests ? 1 : 0;
}
