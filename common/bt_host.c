/*
 * NAME
 *	bt_host - the hostname policy of requestCrawl and configured hosts
 * DESCRIPTION
 *	Used by ingest before it probes or stores a host.  Lower-cases, strips a scheme and any
 *	path, refuses IP literals (v4 and v6), bare names without a domain, and ports — except
 *	localhost:PORT when insecure hosts are allowed (local testing), which is then plain ws.
 * DIAGNOSTICS
 *	-1 with *why set to a static reason.
 */
#include "bt_host.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The DNS label rules for the name p[0..n): labels of 1..63 letters, digits and '-', not
   starting or ending with '-' ("a..b", ".a", "a.", "-a.b" are refused).  NULL or a reason. */
static const char *bt_host_labels_bad(const char *p, size_t n)
{
	size_t len = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && p[i] != '.') {
			if (!isalnum((unsigned char)p[i]) && p[i] != '-')
				return "hostname has invalid characters";
			if (++len > 63)
				return "hostname label longer than 63 characters";
			continue;
		}
		if (len == 0)
			return "hostname has an empty label";
		if (p[i - 1] == '-' || p[i - len] == '-')
			return "hostname label starts or ends with '-'";
		len = 0;
	}
	return NULL;
}

int bt_host_normalize(const char *in, bool allow_insecure, char *out, size_t cap, bool *insecure, const char **why)
{
	const char *w = NULL;
	if (!in || !*in)
		w = "empty hostname";
	const char *p = in;
	if (!w) {
		if (!strncasecmp(p, "https://", 8))
			p += 8;
		else if (!strncasecmp(p, "http://", 7))
			p += 7;
		else if (!strncasecmp(p, "wss://", 6))
			p += 6;
		else if (!strncasecmp(p, "ws://", 5))
			p += 5;
	}
	size_t n = 0;
	while (!w && p[n] && p[n] != '/' && p[n] != '?')
		n++;
	if (!w && (n == 0 || n >= cap || n >= 256))
		w = "bad hostname length";
	if (!w) {
		for (size_t i = 0; i < n; i++)
			out[i] = (char)tolower((unsigned char)p[i]);
		out[n] = 0;
		for (size_t i = 0; i < n && !w; i++)
			if (!isalnum((unsigned char)out[i]) && out[i] != '.' && out[i] != '-' && out[i] != ':')
				w = "hostname has invalid characters";
		if (!w) {
			size_t hn = strcspn(out, ":");
			w = bt_host_labels_bad(out, hn);
		}
	}
	*insecure = false;
	if (!w) {
		char *colon = strchr(out, ':');
		if (colon) {
			if (strncmp(out, "localhost:", 10) != 0)
				w = "a port is only allowed for localhost";
			else if (!allow_insecure)
				w = "localhost is not allowed (RELAY_ALLOW_INSECURE_HOSTS)";
			else {
				char *end;
				long port = strtol(colon + 1, &end, 10);
				if (*end || port < 1 || port > 65535)
					w = "bad port";
				*insecure = true;
			}
		} else {
			struct in_addr a4;
			if (strchr(out, '[') || strchr(out, ']'))
				w = "IP addresses are not accepted";
			else if (!strcmp(out, "localhost"))
				w = "localhost needs a port";
			else if (inet_pton(AF_INET, out, &a4) == 1)
				w = "IP addresses are not accepted";
			else if (!strchr(out, '.'))
				w = "hostname needs a domain";
		}
	}
	if (w) {
		if (why)
			*why = w;
		return -1;
	}
	return 0;
}


bool bt_host_banned(const char *host, const char *list)
{
	size_t hn = strlen(host);
	const char *colon = strchr(host, ':');
	if (colon)
		hn = (size_t)(colon - host);
	for (const char *p = list; p && *p;) {
		while (*p == ',' || *p == ' ')
			p++;
		size_t n = strcspn(p, ", ");
		if (n > 0 && n <= hn && strncasecmp(host + hn - n, p, n) == 0 && (n == hn || host[hn - n - 1] == '.'))
			return true;
		p += n;
	}
	return false;
}

bool bt_host_under(const char *host, const char *domain)
{
	size_t hn = strcspn(host, ":"), n = strlen(domain);
	return n > 0 && n <= hn && strncasecmp(host + hn - n, domain, n) == 0 && (n == hn || host[hn - n - 1] == '.');
}

int bt_host_domain_normalize(const char *in, char *out, size_t cap, const char **why)
{
	const char *w = NULL;
	const char *p = in ? in : "";
	while (*p == ' ' || *p == '\t')
		p++;
	if (!strncasecmp(p, "https://", 8))
		p += 8;
	else if (!strncasecmp(p, "http://", 7))
		p += 7;
	if (*p == '.')
		p++; /* ".example.com" is how some operators write "example.com and below" */
	size_t n = strlen(p);
	while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '/'))
		n--;
	if (n == 0)
		w = "empty domain";
	else if (n >= cap || n > 253)
		w = "domain too long";
	if (!w) {
		for (size_t i = 0; i < n; i++)
			out[i] = (char)tolower((unsigned char)p[i]);
		out[n] = 0;
		w = bt_host_labels_bad(out, n);
	}
	if (w) {
		if (why)
			*why = w;
		return -1;
	}
	return 0;
}
