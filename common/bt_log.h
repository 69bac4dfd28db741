/*
 * NAME
 *	bt_log - logging with role and pid
 * DESCRIPTION
 *	One line per event on stderr: "2026-11-25T10:00:00.123Z baton-verify[1] pid=42 warn: text".
 *	Every process calls bt_log_init() once with its role; the level comes from RELAY_LOG_LEVEL.
 *	bt_log_every() rate-limits a noisy call site (at most one line per second per site).
 *	The message is escaped (bt_log_escape): control characters in an argument never end the
 *	line, so a hostname, DID or upstream error can be logged with a plain %s.
 * DIAGNOSTICS
 *	None; a failed write to stderr is ignored.
 */
#ifndef BT_LOG_H
#define BT_LOG_H
#include <stdarg.h>
#include <stddef.h>

enum bt_log_level { BT_LOG_DEBUG, BT_LOG_INFO, BT_LOG_WARN, BT_LOG_ERROR };

void bt_log_init(const char *role, int index);             /* role borrowed for the process lifetime */
void bt_log_set_level(enum bt_log_level lvl);
int bt_log_parse_level(const char *s);                      /* -1 if unknown */
void bt_log(enum bt_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *bt_log_role(void);

#define BT_DEBUG(...) bt_log(BT_LOG_DEBUG, __VA_ARGS__)
#define BT_INFO(...) bt_log(BT_LOG_INFO, __VA_ARGS__)
#define BT_WARN(...) bt_log(BT_LOG_WARN, __VA_ARGS__)
#define BT_ERR(...) bt_log(BT_LOG_ERROR, __VA_ARGS__)

/* Log at most once a second from this call site. */
#define BT_LOG_EVERY(lvl, ...)                                          \
	do {                                                            \
		static long bt_le_last_;                                \
		long bt_le_now_ = bt_log_now_s();                       \
		if (bt_le_now_ != bt_le_last_) {                        \
			bt_le_last_ = bt_le_now_;                       \
			bt_log(lvl, __VA_ARGS__);                       \
		}                                                       \
	} while (0)
long bt_log_now_s(void);

/* Escapes n bytes of in into out (cap bytes, NUL-terminated; cut at an escape boundary when it
   does not fit) and returns the length written.  Backslash becomes \\, newline \n, CR \r, tab
   \t; other control bytes, DEL, invalid UTF-8 and the bytes of C1 controls, U+2028/2029 and
   bidi overrides/isolates become \xNN; printable ASCII and other valid UTF-8 are kept.  Every log
   line goes through it, so an untrusted %s argument cannot write a second line. */
size_t bt_log_escape(char *out, size_t cap, const char *in, size_t n);

/* Fatal start-up error (tier 2): log and exit 2, which the supervisor never respawns. */
void bt_die_config(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#endif
