/*
 * NAME
 *	bt_log - logging with role and pid (see bt_log.h)
 * DESCRIPTION
 *	Formats into a stack buffer and writes the line with one write(2), so lines from
 *	several processes sharing stderr do not interleave mid-line.  The formatted message is
 *	escaped (bt_log_escape) before it is written: hostnames, DIDs and upstream error text
 *	reach log lines through %s, and none of them may forge a line or drive a terminal.
 */
#include "bt_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static char log_tag[64] = "baton";
static enum bt_log_level log_level = BT_LOG_INFO;
static const char *lvl_names[] = { "debug", "info", "warn", "error" };

void bt_log_init(const char *role, int index)
{
	if (index >= 0)
		snprintf(log_tag, sizeof log_tag, "%s[%d]", role, index);
	else
		snprintf(log_tag, sizeof log_tag, "%s", role);
	const char *lv = getenv("RELAY_LOG_LEVEL");
	int l = lv ? bt_log_parse_level(lv) : -1;
	if (l >= 0)
		log_level = (enum bt_log_level)l;
}

void bt_log_set_level(enum bt_log_level lvl)
{
	log_level = lvl;
}

const char *bt_log_role(void)
{
	return log_tag;
}

int bt_log_parse_level(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcasecmp(s, lvl_names[i]) == 0)
			return i;
	if (strcasecmp(s, "warning") == 0)
		return BT_LOG_WARN;
	return -1;
}

long bt_log_now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* Length of the UTF-8 sequence at p (at most n bytes) and its code point, or 0 if invalid
   (overlong, surrogate, above U+10FFFF, truncated). */
static size_t utf8_seq(const unsigned char *p, size_t n, unsigned *cp)
{
	unsigned c = p[0];
	size_t len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
	if (!len || len > n)
		return 0;
	unsigned v = c & (0x7f >> len);
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (p[i] & 0x3f);
	}
	if ((len == 3 && v < 0x800) || (len == 4 && (v < 0x10000 || v > 0x10ffff)) || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return len;
}

/* Code points that move the line or the reader's eye: C1 controls, line and paragraph
   separators, bidirectional overrides and isolates. */
static int hidden_cp(unsigned v)
{
	return (v >= 0x80 && v <= 0x9f) || v == 0x2028 || v == 0x2029 || (v >= 0x202a && v <= 0x202e) ||
	       (v >= 0x2066 && v <= 0x2069);
}

size_t bt_log_escape(char *out, size_t cap, const char *in, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	if (!cap)
		return 0;
	const unsigned char *p = (const unsigned char *)in;
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		char e[16];
		size_t el = 0, step = 1;
		unsigned c = p[i], cp;
		if (c == '\\') {
			e[el++] = '\\';
			e[el++] = '\\';
		} else if (c == '\n' || c == '\r' || c == '\t') {
			e[el++] = '\\';
			e[el++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
		} else if (c >= 0x20 && c < 0x7f) {
			e[el++] = (char)c;
		} else {
			size_t sl = c >= 0x80 ? utf8_seq(p + i, n - i, &cp) : 0;
			if (sl && !hidden_cp(cp)) {
				memcpy(e, p + i, sl);
				el = sl;
			} else {
				/* a control byte, an invalid byte, or each byte of a hidden code point */
				sl = sl ? sl : 1;
				for (size_t k = 0; k < sl; k++) {
					e[el++] = '\\';
					e[el++] = 'x';
					e[el++] = hex[p[i + k] >> 4];
					e[el++] = hex[p[i + k] & 15];
				}
			}
			step = sl;
		}
		if (o + el >= cap)
			break; /* truncated, never inside an escape or a UTF-8 sequence */
		memcpy(out + o, e, el);
		o += el;
		i += step;
	}
	out[o] = 0;
	return o;
}

static void vlog(enum bt_log_level lvl, const char *fmt, va_list ap)
{
	char line[2048];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s pid=%d %s: ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, ts.tv_nsec / 1000000, log_tag, (int)getpid(), lvl_names[lvl]);
	if (n < 0)
		return;
	/* The arguments may be untrusted (hostnames, DIDs, upstream error text): the message is
	   escaped as a whole, so nothing in it can end the line or drive a terminal. */
	char msg[2048];
	int m = vsnprintf(msg, sizeof msg, fmt, ap);
	if (m < 0)
		m = 0;
	if ((size_t)m >= sizeof msg)
		m = sizeof msg - 1;
	size_t len = (size_t)n + bt_log_escape(line + n, sizeof line - (size_t)n - 1, msg, (size_t)m);
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

void bt_log(enum bt_log_level lvl, const char *fmt, ...)
{
	if (lvl < log_level)
		return;
	va_list ap;
	va_start(ap, fmt);
	vlog(lvl, fmt, ap);
	va_end(ap);
}

void bt_die_config(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(BT_LOG_ERROR, fmt, ap);
	va_end(ap);
	exit(2);
}
