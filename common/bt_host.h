/*
 * NAME
 *	bt_host - the hostname policy of requestCrawl (see bt_host.c)
 */
#ifndef BT_HOST_H
#define BT_HOST_H
#include <stdbool.h>
#include <stddef.h>

/* Normalise a requested hostname into out ("host" or "localhost:PORT"); *insecure is set for
   localhost:PORT.  Returns 0, or -1 with *why (may be NULL) set to a static reason. */
int bt_host_normalize(const char *in, bool allow_insecure, char *out, size_t cap, bool *insecure, const char **why);
/* True if host (normalised) is domain or a subdomain of any domain in the comma-separated list
   (a ban of "example.com" covers "pds.example.com", not "notexample.com").  Borrows both. */
bool bt_host_banned(const char *host, const char *list);
/* True if host (normalised; a ":port" is ignored) is domain or a subdomain of it. */
bool bt_host_under(const char *host, const char *domain);
/* Normalise a domain to ban ("Example.COM", "https://example.com/", ".example.com" ->
   "example.com"; one label such as "localhost" is allowed): lower case, DNS label rules.
   0, or -1 with *why (may be NULL) set to a static reason. */
int bt_host_domain_normalize(const char *in, char *out, size_t cap, const char **why);
#endif
