/* log.h: one-line diagnostics on stderr, prefixed with the program name; rate limiting. */
#ifndef VMSTACK_LOG_H
#define VMSTACK_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Set once by main(); defaults: prefix "vmstack", level LOG_WARN. */
void log_set_prefix(const char *prefix);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* While the terminal is in raw mode, lines must end in "\r\n". */
void log_set_raw_terminal(bool raw);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/*
 * At most `burst` messages per `interval_ms`; guest-triggered messages go through
 * one of these so a hostile guest cannot flood the log. Zero-initialise, then set
 * interval_ms and burst. Not thread-safe by itself: callers hold their device lock.
 */
struct ratelimit {
	uint64_t interval_ms;
	unsigned burst;
	uint64_t window_start_ms;
	unsigned printed;
	unsigned suppressed;
};
/* At most 10 messages per 5 s. */
#define RATELIMIT_INIT                                                                             \
	{                                                                                          \
		.interval_ms = 5000, .burst = 10                                                   \
	}

bool ratelimit_ok(struct ratelimit *rl);

#define log_ratelimited(rl, level, ...)                                                            \
	do {                                                                                       \
		if (ratelimit_ok(rl))                                                              \
			log_msg(level, __VA_ARGS__);                                               \
	} while (0)

#endif
