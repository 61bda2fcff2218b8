/* rgrid-spawn's plumbing (spawn-util.c), shared with the job handling in rgrid-spawn.c. */
#ifndef RGRID_SPAWN_UTIL_H
#define RGRID_SPAWN_UTIL_H

#include <stddef.h>
#include <stdint.h>

/** Keeps the last `cap` bytes pushed into it, and counts all of them. */
typedef struct {
  unsigned char *buf; /* allocated on first byte: most jobs print nothing on one stream */
  uint32_t cap, pos;
  uint64_t total;
} ring_t;

/** Set once a write to the node failed (it is gone); replies are dropped from then on. */
extern int stdout_broken;

void die(const char *what);
void *xrealloc(void *p, size_t n);
uint32_t get_u32(const unsigned char *p);

/* One reply at a time: begin, add fields, send (the length is filled in then). */
void rep_begin(uint8_t type, uint32_t id);
void rep_put(const void *p, size_t n);
void rep_u8(uint8_t v);
void rep_u32(uint32_t v);
void rep_u64(uint64_t v);
/** Adds a ring's kept bytes, oldest first, after their u32 length. */
void rep_ring(const ring_t *r);
void rep_send(void);

void ring_push(ring_t *r, const unsigned char *p, size_t n);

/**
 * The file execvp would run for `file` along `path` (NULL: glibc's default),
 * checked from `cwd`; NULL with *err set (ENOENT or EACCES) when there is none.
 */
char *find_program(const char *file, const char *path, const char *cwd, int *err);

#endif
