/* replay.c: runs fuzz_qcow2.c's target over every file of the given directories (the
 * hostile-image corpus) without libFuzzer, so each test run — and the ASan+UBSan build —
 * covers them. Counts as ONE test in the unit-test summary ("1 tests, 0 failed"; the number
 * of images is printed above it): a file passes by not crashing (the sanitizers turn memory
 * errors into crashes), and a whole corpus is one check, not hundreds. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
	int n = 0, failed = 0;

	for (int i = 1; i < argc; i++) {
		DIR *d = opendir(argv[i]);
		struct dirent *e;
		char *names[4096];
		int count = 0;

		if (!d) {
			fprintf(stderr, "%s: cannot open the corpus directory\n", argv[i]);
			failed++;
			continue;
		}
		while ((e = readdir(d)) && count < 4096) {
			if (e->d_name[0] != '.' &&
			    asprintf(&names[count], "%s/%s", argv[i], e->d_name) > 0)
				count++;
		}
		closedir(d);
		qsort(names, (size_t)count, sizeof(names[0]), cmp);
		for (int k = 0; k < count; k++) {
			const uint8_t *data;
			size_t len;

			if (map_file(names[k], &data, &len) < 0) {
				fprintf(stderr, "%s: cannot read the corpus file\n", names[k]);
				failed++;
			} else {
				printf("%s\n", names[k]);
				fflush(stdout);
				LLVMFuzzerTestOneInput(data, len);
				unmap_file(data, len);
			}
			free(names[k]);
			n++;
		}
	}
	printf("%d corpus files replayed, %d unreadable\n", n, failed);
	printf("1 tests, %d failed\n", failed ? 1 : 0);
	return failed ? 1 : 0;
}
