/* Unit test of the requestCrawl hostname policy (common/bt_host.c). */
#include "bt_host.h"
#include "bt_test.h"

static void ok(const char *in, bool insecure_allowed, const char *want, bool want_insecure)
{
	char out[256];
	bool ins = !want_insecure;
	const char *why = NULL;
	int rc = bt_host_normalize(in, insecure_allowed, out, sizeof out, &ins, &why);
	CHECKF(rc == 0 && !strcmp(out, want) && ins == want_insecure, "%s -> rc %d '%s' (%s)", in, rc,
	       rc == 0 ? out : "", why ? why : "");
}

static void refused(const char *in, bool insecure_allowed)
{
	char out[256];
	bool ins;
	const char *why = NULL;
	int rc = bt_host_normalize(in, insecure_allowed, out, sizeof out, &ins, &why);
	CHECKF(rc < 0 && why, "%s accepted as '%s'", in, rc == 0 ? out : "");
}

int main(void)
{
	ok("pds.example.com", false, "pds.example.com", false);
	ok("PDS.Example.COM", false, "pds.example.com", false);
	ok("https://pds.example.com/", false, "pds.example.com", false);
	ok("wss://pds.example.com/xrpc/x", false, "pds.example.com", false);
	ok("morel.us-east.host.bsky.network", false, "morel.us-east.host.bsky.network", false);
	ok("localhost:2583", true, "localhost:2583", true);
	ok("http://LOCALHOST:2583", true, "localhost:2583", true);
	refused("localhost:2583", false);          /* insecure hosts not allowed */
	refused("localhost", true);                /* needs a port */
	refused("pds.example.com:8080", true);     /* ports only for localhost */
	refused("127.0.0.1", true);
	refused("10.0.0.1", false);
	refused("[::1]:2583", true);
	refused("::1", true);
	refused("localhost:0", true);
	refused("localhost:70000", true);
	refused("localhost:12ab", true);
	refused("intranet", false);                /* no domain */
	refused("", false);
	refused(NULL, false);
	refused("pds.exa mple.com", false);
	refused("pds.example.com\r\nHost: evil", false);
	refused("https://", false);
	char longname[400];
	memset(longname, 'a', sizeof longname - 5);
	strcpy(longname + sizeof longname - 5, ".com");
	refused(longname, false);
	/* DNS label syntax (issue 7: "a..b" was accepted) */
	refused("a..b.com", false);
	refused(".example.com", false);
	refused("example.com.", false);
	refused("-pds.example.com", false);
	refused("pds-.example.com", false);
	refused("localhost..:2583", true);
	char label[80];
	memset(label, 'a', 64);
	strcpy(label + 64, ".com");
	refused(label, false); /* a 64-character label */
	label[63] = '.';
	strcpy(label + 64, "com");
	ok(label, false, label, false); /* 63 is the most */
	ok("xn--bcher-kva.example", false, "xn--bcher-kva.example", false);
	ok("a-b.c-d.example", false, "a-b.c-d.example", false);
	/* bt_host_under: the domain itself and its subdomains, not look-alikes; a port is ignored */
	CHECK(bt_host_under("example.com", "example.com"));
	CHECK(bt_host_under("pds.example.com", "example.com"));
	CHECK(bt_host_under("a.b.example.com", "example.com"));
	CHECK(!bt_host_under("notexample.com", "example.com"));
	CHECK(!bt_host_under("example.com.evil.net", "example.com"));
	CHECK(!bt_host_under("com", "example.com"));
	CHECK(!bt_host_under("example.com", ""));
	CHECK(bt_host_under("localhost:2583", "localhost"));
	CHECK(!bt_host_under("localhost:2583", "host"));
	/* bt_host_domain_normalize: what banDomain accepts */
	char d[256];
	const char *why = NULL;
	CHECK(bt_host_domain_normalize("Example.COM", d, sizeof d, &why) == 0 && !strcmp(d, "example.com"));
	CHECK(bt_host_domain_normalize("https://example.com/", d, sizeof d, &why) == 0 && !strcmp(d, "example.com"));
	CHECK(bt_host_domain_normalize(".example.com", d, sizeof d, &why) == 0 && !strcmp(d, "example.com"));
	CHECK(bt_host_domain_normalize("localhost", d, sizeof d, &why) == 0 && !strcmp(d, "localhost"));
	CHECK(bt_host_domain_normalize("a..b", d, sizeof d, &why) < 0 && why);
	CHECK(bt_host_domain_normalize("", d, sizeof d, &why) < 0);
	CHECK(bt_host_domain_normalize(NULL, d, sizeof d, &why) < 0);
	CHECK(bt_host_domain_normalize("evil.com\nINFO forged", d, sizeof d, &why) < 0);
	CHECK(bt_host_domain_normalize("exa mple.com", d, sizeof d, &why) < 0);
	CHECK(bt_host_domain_normalize("example.com:443", d, sizeof d, &why) < 0);
	/* domain bans: the domain and its subdomains, not look-alikes */
	CHECK(bt_host_banned("example.com", "example.com"));
	CHECK(bt_host_banned("pds.example.com", "other.net, example.com"));
	CHECK(bt_host_banned("a.b.example.com", "example.com"));
	CHECK(!bt_host_banned("notexample.com", "example.com"));
	CHECK(!bt_host_banned("example.com.evil.net", "example.com"));
	CHECK(!bt_host_banned("example.com", ""));
	CHECK(!bt_host_banned("com", "example.com"));
	CHECK(bt_host_banned("localhost:2583", "localhost"));
	CHECK(bt_host_banned("PDS.EXAMPLE.COM", "example.com"));
	BT_TEST_END();
}
