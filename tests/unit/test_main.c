/* test_main.c: runs every TEST() linked into this executable; exit status 1 on any failure. */
#include "test.h"

int test_failures;

static struct test_case tests[256];
static int ntests;

void test_register(const char *name, void (*fn)(void))
{
	if (ntests < (int)(sizeof(tests) / sizeof(tests[0])))
		tests[ntests++] = (struct test_case){name, fn};
}

int main(void)
{
	int failed_tests = 0;

	for (int i = 0; i < ntests; i++) {
		int before = test_failures;
		tests[i].fn();
		if (test_failures != before) {
			printf("FAIL %s\n", tests[i].name);
			failed_tests++;
		} else {
			printf("ok   %s\n", tests[i].name);
		}
	}
	printf("%d tests, %d failed\n", ntests, failed_tests);
	return failed_tests ? 1 : 0;
}
