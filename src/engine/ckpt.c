/*
 * ckpt.c - the checkpoint file DIR/checkpoint: where recovery starts.
 *
 * 64 bytes, little-endian, replaced durably (cf_durable_write_file):
 *    0  8 magic "COFFERCP"
 *    8  4 version (1)
 *   12  4 reserved
 *   16 16 database signature
 *   32  8 redo LSN: replay starts here; every change before it is in the
 *         database file
 *   40  8 time (µs)
 *   48  8 reserved
 *   56  8 XXH3-64 of bytes 0..55
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/err.h"
#include "common/os.h"
#include "engine/env.h"

#define CKPT_SIZE 64

int cf_checkpoint_write(const char *path, const struct cf_checkpoint *c)
{
	uint8_t b[CKPT_SIZE] = {0};
	memcpy(b, "COFFERCP", 8);
	cf_put32(b + 8, 1);
	memcpy(b + 16, c->signature, 16);
	cf_put64(b + 32, c->redo);
	cf_put64(b + 40, (uint64_t)c->time_us);
	cf_put64(b + 56, XXH3_64bits(b, 56));
	return cf_durable_write_file(path, b, sizeof b, 0600);
}

int cf_checkpoint_read(const char *path, struct cf_checkpoint *c)
{
	uint8_t b[CKPT_SIZE];
	int fd, rc;
	CF_RET(cf_open(&fd, path, O_RDONLY, 0));
	rc = cf_pread_full(fd, path, b, sizeof b, 0);
	cf_close(fd, path);
	if (rc == COFFER_E_SHORT_READ)
		return CF_ERROR(COFFER_E_CHECKPOINT_CORRUPT, CF_OBJ(.file = path),
				"checkpoint file \"%s\" is shorter than %d bytes", path, CKPT_SIZE);
	if (rc)
		return rc;
	if (memcmp(b, "COFFERCP", 8) != 0 || cf_get64(b + 56) != XXH3_64bits(b, 56))
		return CF_ERROR(COFFER_E_CHECKPOINT_CORRUPT, CF_OBJ(.file = path),
				"checkpoint file \"%s\" fails its checksum", path);
	if (cf_get32(b + 8) != 1)
		return CF_ERROR(COFFER_E_VERSION, CF_OBJ(.file = path),
				"checkpoint file \"%s\" has version %u; this Coffer reads version 1",
				path, cf_get32(b + 8));
	memcpy(c->signature, b + 16, 16);
	c->redo = cf_get64(b + 32);
	c->time_us = (int64_t)cf_get64(b + 40);
	return COFFER_OK;
}
