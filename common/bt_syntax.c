/*
 * NAME
 *	bt_syntax - atproto identifier syntax
 * DESCRIPTION
 *	Hand-written matchers equivalent to the spec regexes (no regex library,
 *	no allocation).  Used by verify (repo/rev checks) and the HTTP layer.
 * DIAGNOSTICS
 *	None: boolean results.
 */
#include "bt_syntax.h"

#include <string.h>

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
	return is_alpha(c) || is_digit(c);
}

bool bt_syntax_did(const char *s, size_t n)
{
	if (n < 7 || n > 2048 || memcmp(s, "did:", 4) != 0)
		return false;
	size_t i = 4;
	while (i < n && s[i] >= 'a' && s[i] <= 'z')
		i++;
	if (i == 4 || i >= n || s[i] != ':')
		return false;
	i++;
	if (i >= n)
		return false;
	for (size_t j = i; j < n; j++) {
		char c = s[j];
		if (!(is_alnum(c) || c == '.' || c == '_' || c == ':' || c == '%' || c == '-'))
			return false;
	}
	char last = s[n - 1];
	return last != ':' && last != '%';
}

static int b32s_val(char c)
{
	static const char a[] = "234567abcdefghijklmnopqrstuvwxyz";
	const char *p = c ? strchr(a, c) : NULL;
	return p ? (int)(p - a) : -1;
}

int64_t bt_tid_micros(const char *s, size_t n)
{
	if (n != 13)
		return -1;
	uint64_t v = 0;
	for (size_t i = 0; i < 13; i++) {
		int d = b32s_val(s[i]);
		if (d < 0 || (i == 0 && d >= 16))
			return -1;
		v = (v << 5) | (uint64_t)d;
	}
	return (int64_t)(v >> 10);
}

bool bt_syntax_tid(const char *s, size_t n)
{
	return bt_tid_micros(s, n) >= 0;
}

/* One DNS label [A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])? */
static bool dns_label(const char *s, size_t n)
{
	if (n < 1 || n > 63 || !is_alnum(s[0]) || !is_alnum(s[n - 1]))
		return false;
	for (size_t i = 1; i + 1 < n; i++)
		if (!is_alnum(s[i]) && s[i] != '-')
			return false;
	return true;
}

bool bt_syntax_handle(const char *s, size_t n)
{
	if (n < 3 || n > 253)
		return false;
	size_t start = 0, labels = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || s[i] == '.') {
			if (!dns_label(s + start, i - start))
				return false;
			if (i == n && !is_alpha(s[start]))
				return false; /* the TLD starts with a letter */
			labels++;
			start = i + 1;
		}
	}
	return labels >= 2;
}

bool bt_syntax_nsid(const char *s, size_t n)
{
	if (n < 5 || n > 317)
		return false;
	const char *dot = memrchr(s, '.', n);
	if (!dot)
		return false;
	size_t dn = (size_t)(dot - s), nn = n - dn - 1;
	/* name: [A-Za-z][A-Za-z0-9]{0,62} */
	if (nn < 1 || nn > 63 || !is_alpha(dot[1]))
		return false;
	for (size_t i = 1; i < nn; i++)
		if (!is_alnum(dot[1 + i]))
			return false;
	size_t start = 0, labels = 0;
	for (size_t i = 0; i <= dn; i++) {
		if (i == dn || s[i] == '.') {
			if (!dns_label(s + start, i - start))
				return false;
			if (labels == 0 && !is_alpha(s[0]))
				return false; /* first segment starts with a letter */
			labels++;
			start = i + 1;
		}
	}
	return labels >= 2;
}

bool bt_syntax_rkey(const char *s, size_t n)
{
	if (n < 1 || n > 512)
		return false;
	if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!(is_alnum(c) || c == '.' || c == '_' || c == '~' || c == ':' || c == '-'))
			return false;
	}
	return true;
}
