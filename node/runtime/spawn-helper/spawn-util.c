/*
 * rgrid-spawn's plumbing: replies to the node, the ring buffer that keeps an
 * output's tail, and finding a program along PATH as execvp does. The job
 * handling is in rgrid-spawn.c, the wire format in its header comment.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spawn-util.h"

int stdout_broken;

void die(const char *what) {
  fprintf(stderr, "rgrid-spawn: %s: %s\n", what, strerror(errno));
  exit(1);
}

void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n);
  if (q == NULL && n != 0) die("out of memory");
  return q;
}

void write_all(const unsigned char *p, size_t n) {
  while (n > 0 && !stdout_broken) {
    ssize_t w = write(1, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        /* A non-blocking stdout: wait until the node has read some. */
        struct pollfd out = { .fd = 1, .events = POLLOUT };
        poll(&out, 1, -1);
        continue;
      }
      /* EPIPE: the node closed its end. Keep reaping until stdin says so too. */
      stdout_broken = 1;
      return;
    }
    p += w;
    n -= (size_t)w;
  }
}

/* Reply builder: one buffer, length patched in at the end. */
static unsigned char *rep;
static size_t replen, repcap;

void rep_put(const void *p, size_t n) {
  if (replen + n > repcap) {
    repcap = (replen + n) * 2;
    rep = xrealloc(rep, repcap);
  }
  memcpy(rep + replen, p, n);
  replen += n;
}
void rep_u8(uint8_t v) { rep_put(&v, 1); }
void rep_u32(uint32_t v) {
  unsigned char b[4] = { v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >> 24) & 0xff };
  rep_put(b, 4);
}
void rep_u64(uint64_t v) { rep_u32((uint32_t)v); rep_u32((uint32_t)(v >> 32)); }
void rep_begin(uint8_t type, uint32_t id) { replen = 0; rep_u32(0); rep_u8(type); rep_u32(id); }
void rep_send(void) {
  uint32_t n = (uint32_t)(replen - 4);
  rep[0] = n & 0xff; rep[1] = (n >> 8) & 0xff; rep[2] = (n >> 16) & 0xff; rep[3] = (n >> 24) & 0xff;
  write_all(rep, replen);
}

uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void ring_push(ring_t *r, const unsigned char *p, size_t n) {
  r->total += n;
  if (r->cap == 0) return;
  if (r->buf == NULL) r->buf = xrealloc(NULL, r->cap);
  if (n >= r->cap) {
    memcpy(r->buf, p + n - r->cap, r->cap);
    r->pos = 0;
    return;
  }
  size_t first = r->cap - r->pos < n ? r->cap - r->pos : n;
  memcpy(r->buf + r->pos, p, first);
  if (first < n) memcpy(r->buf, p + first, n - first);
  r->pos = (uint32_t)((r->pos + n) % r->cap);
}

void rep_ring(const ring_t *r) {
  if (r->buf == NULL) { rep_u32(0); return; }
  if (r->total < r->cap) {
    rep_u32((uint32_t)r->total);
    rep_put(r->buf, (size_t)r->total);
    return;
  }
  rep_u32(r->cap);
  rep_put(r->buf + r->pos, r->cap - r->pos);
  rep_put(r->buf, r->pos);
}

/* The file execvp would run for `file`, spelled as execvp passes it on: as
   given when it has a slash, else the first executable regular file along
   `path` (glibc's default when the job has none). Relative entries (and
   empty ones, the current directory) are checked from `cwd`, where the job
   runs. NULL with *err set when there is none: EACCES when a file was found
   but is not executable, as execvp says, else ENOENT. Searching here, not
   with posix_spawnp, keeps the helper's own environment untouched (glibc
   never frees a replaced PATH). */
char *find_program(const char *file, const char *path, const char *cwd, int *err) {
  if (strchr(file, '/') != NULL) return strdup(file);
  *err = ENOENT;
  const char *p = path != NULL ? path : "/bin:/usr/bin";
  for (;;) {
    const char *colon = strchr(p, ':');
    int len = (int)(colon != NULL ? (size_t)(colon - p) : strlen(p));
    char *name = NULL, *checked = NULL;
    if ((len == 0 ? asprintf(&name, "%s", file) : asprintf(&name, "%.*s/%s", len, p, file)) < 0) die("out of memory");
    if (asprintf(&checked, "%s%s%s", name[0] == '/' ? "" : cwd, name[0] == '/' ? "" : "/", name) < 0) die("out of memory");
    struct stat st;
    int found = stat(checked, &st) == 0 && S_ISREG(st.st_mode);
    int runnable = found && access(checked, X_OK) == 0;
    free(checked);
    if (runnable) {
      /* Without a slash, execve would not look in the current directory. */
      if (len == 0) {
        char *here = NULL;
        if (asprintf(&here, "./%s", file) < 0) die("out of memory");
        free(name);
        return here;
      }
      return name;
    }
    if (found) *err = EACCES;
    free(name);
    if (colon == NULL) return NULL;
    p = colon + 1;
  }
}
