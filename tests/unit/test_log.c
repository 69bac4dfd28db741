/*
 * NAME
 *	test_log - bt_log_escape, and that bt_log writes one line whatever its arguments hold
 * DESCRIPTION
 *	Hostnames, DIDs and upstream error text reach log lines through %s: a newline, CR, ESC,
 *	C1 control, U+2028 or bidi override in them must come out escaped, and a log call must
 *	write exactly one line (stderr redirected to a pipe here).
 */
#include "bt_log.h"
#include "bt_test.h"

#include <unistd.h>

static const char *esc(const char *in)
{
	static char out[512];
	bt_log_escape(out, sizeof out, in, strlen(in));
	return out;
}

int main(void)
{
	CHECK(!strcmp(esc("plain host.example:443"), "plain host.example:443"));
	CHECK(!strcmp(esc("a\nb\rc\td"), "a\\nb\\rc\\td"));
	CHECK(!strcmp(esc("\x1b[31mred"), "\\x1b[31mred"));
	CHECK(!strcmp(esc("back\\slash"), "back\\\\slash"));
	CHECK(!strcmp(esc("\"quoted\" 'q'"), "\"quoted\" 'q'"));
	CHECK(!strcmp(esc("del\x7f"), "del\\x7f"));
	CHECK(!strcmp(esc("caf\xc3\xa9"), "caf\xc3\xa9"));                 /* valid UTF-8 kept */
	CHECK(!strcmp(esc("bad\xff"), "bad\\xff"));                        /* invalid byte */
	CHECK(!strcmp(esc("c1\xc2\x9b"), "c1\\xc2\\x9b"));                  /* C1 CSI */
	CHECK(!strcmp(esc("ls\xe2\x80\xa8"), "ls\\xe2\\x80\\xa8"));         /* U+2028 */
	CHECK(!strcmp(esc("rlo\xe2\x80\xae"), "rlo\\xe2\\x80\\xae"));       /* U+202E bidi override */
	/* truncation never splits an escape */
	char small[6];
	size_t n = bt_log_escape(small, sizeof small, "ab\n\n", 4);
	CHECK(n == 4 && !strcmp(small, "ab\\n"));
	n = bt_log_escape(small, sizeof small, "abcd\n", 5);
	CHECK(n == 4 && !strcmp(small, "abcd"));

	/* one log call, one line */
	int p[2];
	CHECK(pipe(p) == 0);
	int saved = dup(STDERR_FILENO);
	dup2(p[1], STDERR_FILENO);
	bt_log_init("test", -1);
	BT_WARN("host %s: error %s", "evil\n2026-01-01T00:00:00.000Z baton-x pid=1 warn: forged", "\r\x1b[2J");
	dup2(saved, STDERR_FILENO);
	close(p[1]);
	char buf[1024];
	ssize_t got = read(p[0], buf, sizeof buf - 1);
	CHECK(got > 0);
	buf[got > 0 ? got : 0] = 0;
	int lines = 0;
	for (char *q = buf; *q; q++)
		lines += *q == '\n';
	CHECKF(lines == 1 && buf[got - 1] == '\n', "%s", buf);
	CHECK(!strchr(buf, '\x1b') && !strchr(buf, '\r'));
	CHECK(strstr(buf, "evil\\n2026-01-01") && strstr(buf, "\\r\\x1b[2J"));
	BT_TEST_END();
}
