/*
 * NAME
 *	bt_syntax.h - atproto identifier syntax checks
 * DESCRIPTION
 *	Pure functions over (pointer, length) strings, following the atproto
 *	specs: DID, TID, handle, NSID, record key.  Syntax only: no resolution,
 *	no TLD policy.  Thread-safe.
 * DIAGNOSTICS
 *	Checks return false for invalid input; bt_tid_micros returns -1.
 */
#ifndef BT_SYNTAX_H
#define BT_SYNTAX_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* did:<method>:<id>, at most 2048 chars; borrows s. */
bool bt_syntax_did(const char *s, size_t n);
/* 13-char base32-sortable timestamp id; borrows s. */
bool bt_syntax_tid(const char *s, size_t n);
/* DNS-style handle, at most 253 chars; borrows s. */
bool bt_syntax_handle(const char *s, size_t n);
/* Namespaced id (reversed domain + name); borrows s. */
bool bt_syntax_nsid(const char *s, size_t n);
/* Record key: 1..512 of [A-Za-z0-9._~:-], not "." or ".."; borrows s. */
bool bt_syntax_rkey(const char *s, size_t n);
/* Microseconds since the epoch encoded in a TID, or -1 if s is not a TID. */
int64_t bt_tid_micros(const char *s, size_t n);

#endif
