/*
 * NAME
 *	test_syntax - DID / TID / handle / NSID / record key syntax
 * DESCRIPTION
 *	Runs every line of vectors/interop/syntax/<kind>_syntax_{valid,invalid}.txt
 *	through the matching checker.  Lines are taken verbatim (leading and
 *	trailing spaces matter); '#' lines and empty lines are skipped.
 * DIAGNOSTICS
 *	Prints failing lines; exits non-zero on failure.
 */
#include <stdbool.h>
#include <stdint.h>

#include "bt_syntax.h"
#include "bt_test.h"

static void run_file(const char *kind, bool (*fn)(const char *, size_t))
{
	for (int valid = 1; valid >= 0; valid--) {
		char path[512];
		snprintf(path, sizeof path, "%s/interop/syntax/%s_syntax_%s.txt", bt_vectors(), kind,
			 valid ? "valid" : "invalid");
		size_t len;
		char *buf = bt_test_slurp(path, &len);
		CHECKF(buf != NULL, "open %s", path);
		if (!buf)
			continue;
		int lines = 0;
		char *save = NULL;
		for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			size_t n = strlen(line);
			if (n && line[n - 1] == '\r')
				line[--n] = 0;
			if (n == 0 || line[0] == '#')
				continue;
			CHECKF(fn(line, n) == (bool)valid, "%s %s: '%.80s' (len %zu)", kind,
			       valid ? "valid" : "invalid", line, n);
			lines++;
		}
		CHECKF(lines > 0, "%s has lines", path);
		free(buf);
	}
}

int main(void)
{
	run_file("did", bt_syntax_did);
	run_file("tid", bt_syntax_tid);
	run_file("handle", bt_syntax_handle);
	run_file("nsid", bt_syntax_nsid);
	run_file("recordkey", bt_syntax_rkey);

	/* TID timestamps: "2222222222222" is zero; a known rev decodes to 2025-02. */
	CHECK(bt_tid_micros("2222222222222", 13) == 0);
	int64_t us = bt_tid_micros("3lhhvfanmos22", 13);
	CHECKF(us > 1738800000LL * 1000000 && us < 1738900000LL * 1000000, "micros %lld", (long long)us);
	CHECK(bt_tid_micros("3lhhvfanmos2", 12) == -1);
	CHECK(bt_tid_micros("klhhvfanmos22", 13) == -1);
	CHECK(bt_tid_micros("3lhhvfanmos21", 13) == -1);
	/* ordering of TIDs is lexicographic */
	CHECK(bt_tid_micros("3lhhvfafwmq2r", 13) < bt_tid_micros("3lhhvfanmos22", 13));
	CHECK(!bt_syntax_did("did:plc:", 8));
	CHECK(bt_syntax_did("did:plc:6hy5p6rm3zlcdephqssc2p76", 32));
	CHECK(!bt_syntax_rkey("", 0));
	BT_TEST_END();
}
