/* log.c: stderr diagnostics with a program prefix and a simple rate limiter. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log_prefix = "vmstack";
static enum log_level log_level = LOG_WARN;
static bool log_raw;

void log_set_prefix(const char *prefix)
{
	log_prefix = prefix;
}

void log_set_level(enum log_level level)
{
	log_level = level;
}

enum log_level log_get_level(void)
{
	return log_level;
}

void log_set_raw_terminal(bool raw)
{
	log_raw = raw;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	char line[1024];
	int n;
	va_list ap;

	if (level > log_level)
		return;
	n = snprintf(line, sizeof(line), "%s: %s", log_prefix,
	             level == LOG_ERR    ? ""
	             : level == LOG_WARN ? "warning: "
	                                 : "");
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	n = (int)strlen(line);
	if (n > (int)sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	if (log_raw)
		line[n++] = '\r';
	line[n++] = '\n';
	/* One write(2) so lines from several threads do not interleave. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* nowhere left to report it */
	}
}

bool ratelimit_ok(struct ratelimit *rl)
{
	struct timespec ts;
	uint64_t now;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	if (now - rl->window_start_ms >= rl->interval_ms) {
		if (rl->suppressed)
			log_msg(LOG_WARN, "%u similar messages suppressed", rl->suppressed);
		rl->window_start_ms = now;
		rl->printed = 0;
		rl->suppressed = 0;
	}
	if (rl->printed < rl->burst) {
		rl->printed++;
		return true;
	}
	rl->suppressed++;
	return false;
}
