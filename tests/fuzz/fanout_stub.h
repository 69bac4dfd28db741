/*
 * NAME
 *	fanout_stub.h - the fanout's HTTP routes in a fuzz target (fanout_stub.c)
 * DESCRIPTION
 *	For tests/fuzz/ only.  One thread; no other stage runs.
 * DIAGNOSTICS
 *	Set-up failures abort.
 */
#ifndef FANOUT_STUB_H
#define FANOUT_STUB_H
#include <stddef.h>

/* Once: parameters, stats page, event base, a seeded RocksDB, the HTTP server with fan_xrpc_handle. */
void fuzz_fanout_init(void);
/* Sends the raw HTTP request req[0..n) (borrowed) on a new connection and runs the loop until it is answered. */
void fuzz_fanout_request(const void *req, size_t n);

#endif
