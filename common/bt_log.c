/*
 * NAME
 *	bt_log - logging with role and pid (see bt_log.h)
 * DESCRIPTION
 *	Formats into a stack buffer and writes the line with one write(2), so lines from
 *	several processes sharing stderr do not interleave mid-line.
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
	int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof line - 2)
		len = sizeof line - 2;
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
