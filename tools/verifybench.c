/*
 * NAME
 *	verifybench - micro-benchmark of bt_pubkey_verify / bt_privkey_sign per event
 * DESCRIPTION
 *	verifybench [--n N] [--key k256|p256|mixed]
 *	Signs 256 commit-sized messages (about 150 bytes, like an unsigned commit) with fresh keys,
 *	then times N signature verifications (CPU time of this thread) and prints one line:
 *	  key=K n=N verify_us=X sign_us=Y sha256_us=Z
 *	tests/bench.sh uses verify_us as the bound for the relay's verify CPU per event, measured in
 *	the same run on the same machine.
 * DIAGNOSTICS
 *	Exit 1 if a signature fails to verify (a bug), 2 on a usage error.
 */
#include "bt_crypto.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define M 256

static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	long n = 20000;
	const char *key = "k256";
	static const struct option lo[] = { { "n", 1, 0, 'n' }, { "key", 1, 0, 'k' }, { 0, 0, 0, 0 } };
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (c == 'n')
			n = atol(optarg);
		else if (c == 'k')
			key = optarg;
		else
			n = 0;
	}
	if (n <= 0 || (strcmp(key, "k256") && strcmp(key, "p256") && strcmp(key, "mixed"))) {
		fprintf(stderr, "usage: verifybench [--n N] [--key k256|p256|mixed]\n");
		return 2;
	}
	static struct bt_privkey *sk[M];
	static struct bt_pubkey *pk[M];
	static uint8_t msg[M][150], sig[M][64];
	for (int i = 0; i < M; i++) {
		enum bt_key_type t = !strcmp(key, "p256") || (!strcmp(key, "mixed") && (i & 1)) ? BT_KEY_P256 : BT_KEY_K256;
		if (bt_privkey_generate(t, &sk[i]) < 0 || bt_privkey_public(sk[i], &pk[i]) < 0)
			return 1;
		for (int j = 0; j < 150; j++)
			msg[i][j] = (uint8_t)(i * 31 + j * 7);
	}
	double t0 = cpu_s();
	for (int i = 0; i < M; i++)
		if (bt_privkey_sign(sk[i], msg[i], sizeof msg[i], sig[i]) < 0)
			return 1;
	double sign_us = (cpu_s() - t0) * 1e6 / M;
	t0 = cpu_s();
	for (long k = 0; k < n; k++)
		if (bt_pubkey_verify(pk[k % M], msg[k % M], sizeof msg[0], sig[k % M], 64) < 0) {
			fprintf(stderr, "verifybench: signature %ld did not verify\n", k);
			return 1;
		}
	double verify_us = (cpu_s() - t0) * 1e6 / (double)n;
	uint8_t h[32];
	t0 = cpu_s();
	for (long k = 0; k < n; k++)
		bt_sha256(msg[k % M], sizeof msg[0], h);
	double sha_us = (cpu_s() - t0) * 1e6 / (double)n;
	printf("key=%s n=%ld verify_us=%.2f sign_us=%.2f sha256_us=%.3f\n", key, n, verify_us, sign_us, sha_us);
	for (int i = 0; i < M; i++) {
		bt_privkey_free(&sk[i]);
		bt_pubkey_free(&pk[i]);
	}
	return 0;
}
