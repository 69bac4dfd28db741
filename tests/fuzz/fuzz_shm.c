/*
 * NAME
 *	fuzz_shm.c - libFuzzer target: attach to a hostile segment file and read its rings
 * DESCRIPTION
 *	The input is the whole segment file.  bt_shm_open must refuse a bad header or table
 *	(-EPROTO) and, on a file it accepts, bt_ring_read / bt_bcast_read / bt_bcast_seek
 *	must return errors for corrupt records, never read outside the mapping.  Seeds in
 *	corpus/fuzz_shm are valid segments holding a few records.
 * DIAGNOSTICS
 *	Crashes and sanitizer reports only.
 */
#include "bt_shm.h"

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static char path[64];
	static uint8_t buf[1 << 16];
	if (fd < 0) {
		fd = memfd_create("fuzz_shm", MFD_CLOEXEC);
		if (fd < 0)
			return 0;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
		return 0;
	struct bt_shm *s = NULL;
	if (bt_shm_open(path, &s) < 0)
		return 0;
	for (unsigned i = 0; i < bt_shm_n_rings(s); i++) {
		struct bt_ring *r = bt_shm_ring(s, i);
		if (bt_ring_kind(r) == BT_RING_SPSC) {
			uint64_t pos = bt_ring_tail(r);
			for (int k = 0; k < 1000; k++) {
				uint32_t type;
				const void *p;
				size_t len;
				if (bt_ring_read(r, &pos, &type, &p, &len) < 0)
					break;
				if (len)
					buf[0] ^= ((const uint8_t *)p)[len - 1];
			}
		} else {
			uint64_t pos = 0, seq;
			uint32_t type;
			size_t len;
			bt_bcast_seek(r, 0, &pos);
			bt_bcast_seek(r, 3, &pos);
			for (int k = 0; k < 1000; k++)
				if (bt_bcast_read(r, &pos, &seq, &type, buf, sizeof(buf), &len) < 0)
					break;
		}
	}
	bt_shm_close(&s);
	return 0;
}
