/*
 * rgrid-spawn: starts the process runtime's jobs with posix_spawn.
 *
 * Why a helper: Node's child_process starts a program with a plain fork() of
 * the whole Node process and waits for the child's exec; on the 2-core VMs we
 * measured that costs 3-5 ms of the parent's CPU per job. glibc's posix_spawn
 * clones with CLONE_VM|CLONE_VFORK and costs a fraction of that. The node
 * keeps one helper and talks to it over the helper's stdin and stdout; the
 * helper also keeps the tail of each job's output, so a job's output costs
 * the node one message, not one per chunk.
 *
 * Wire format, both directions: u32 payload length (little-endian), payload.
 * Requests (stdin):
 *   RUN   1: u32 id, u32 keepBytes, u8 live, u32 argc, u32 envc, then
 *            NUL-terminated strings: cwd, argv[0..argc), env[0..envc)
 *   CLOSE 2: u32 id   stop waiting for the job's output (a process that left
 *            the job's group still holds it open)
 * Replies (stdout):
 *   READY   6: u32 0, u32 protocol version (1)   once, first, at start
 *   STARTED 1: u32 id, i32 pid
 *   FAILED  2: u32 id, i32 errno          the program never ran
 *   OUTPUT  3: u32 id, u8 stream (1 out, 2 err), bytes     live jobs only
 *   EXITED  4: u32 id, i32 code (-1 when signalled), i32 signal (0 if none)
 *   DONE    5: u32 id, u64 outTotal, u64 errTotal, u32 outLen, out bytes,
 *              u32 errLen, err bytes    after EXITED, once both pipes closed
 *              (or CLOSE); the last keepBytes of each stream, oldest first
 *              (none for live jobs, whose output went out as OUTPUT)
 * When stdin closes (the node stopped or died), every job's process group
 * gets SIGTERM, then SIGKILL after 2 s; the helper sends each job's EXITED
 * and DONE as usual (DONE at the latest 1 s after the SIGKILL) and exits 0.
 * A malformed request makes it exit 2: the node then fails the jobs and
 * starts another.
 *
 * The program is found along the job's PATH as execvp does, and a script
 * without a #! line runs with /bin/sh. One difference from Node's spawn:
 * glibc's posix_spawn leaves its two internal signals (32 and 33) ignored in
 * the job, where libuv resets every signal to its default.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spawn-util.h"

enum { REQ_RUN = 1, REQ_CLOSE = 2 };
enum { REP_STARTED = 1, REP_FAILED = 2, REP_OUTPUT = 3, REP_EXITED = 4, REP_DONE = 5, REP_READY = 6 };
#define PROTOCOL_VERSION 1

/* Far above any job spec the protocol accepts; a bigger frame is a bug. */
#define MAX_REQUEST (8u << 20)
#define MAX_KEEP (16u << 20)
#define READ_CHUNK 65536
#define CLOSING_GRACE_MS 2000
/* After the SIGKILL, how long output may still arrive before DONE goes out without it. */
#define CLOSING_DRAIN_MS 1000

typedef struct {
  uint32_t id;
  pid_t pid;
  int fd[2];        /* read ends of stdout and stderr; -1 once closed */
  int live;
  int exited;
  ring_t out[2];
} job_t;

static job_t *jobs;
static size_t njobs, capjobs;
static int closing;       /* stdin closed: 1 jobs have had SIGTERM, 2 SIGKILL; then exit */

static job_t *find_job(uint32_t id) {
  for (size_t i = 0; i < njobs; i++) if (jobs[i].id == id) return &jobs[i];
  return NULL;
}

static void close_fd(job_t *j, int s) {
  if (j->fd[s] >= 0) { close(j->fd[s]); j->fd[s] = -1; }
}

/* Sends DONE and forgets the job once it has exited and both pipes closed. */
static void maybe_done(job_t *j) {
  if (!j->exited || j->fd[0] >= 0 || j->fd[1] >= 0) return;
  rep_begin(REP_DONE, j->id);
  rep_u64(j->out[0].total);
  rep_u64(j->out[1].total);
  rep_ring(&j->out[0]);
  rep_ring(&j->out[1]);
  rep_send();
  free(j->out[0].buf);
  free(j->out[1].buf);
  *j = jobs[--njobs];
}

static void start_job(const unsigned char *p, uint32_t n) {
  if (n < 17) { fprintf(stderr, "rgrid-spawn: short RUN request\n"); exit(2); }
  uint32_t id = get_u32(p), keep = get_u32(p + 4), argc = get_u32(p + 9), envc = get_u32(p + 13);
  int live = p[8] != 0;
  const unsigned char *s = p + 17, *end = p + n;
  if (argc == 0 || argc > n || envc > n || keep > MAX_KEEP || find_job(id) != NULL) {
    fprintf(stderr, "rgrid-spawn: bad RUN request\n"); exit(2);
  }
  /* 1 cwd + argc + envc strings, each NUL-terminated, filling the payload exactly. */
  size_t want = 1 + (size_t)argc + envc, got = 0;
  char **strs = xrealloc(NULL, (want + 2) * sizeof *strs);
  while (s < end && got < want) {
    const unsigned char *z = memchr(s, 0, (size_t)(end - s));
    if (z == NULL) break;
    strs[got++] = (char *)s;
    s = z + 1;
  }
  if (got != want || s != end) { fprintf(stderr, "rgrid-spawn: malformed RUN strings\n"); exit(2); }
  char *cwd = strs[0];
  char **argv = strs + 1;
  char **envp = xrealloc(NULL, (envc + 1) * sizeof *envp);
  const char *path = NULL;
  for (uint32_t i = 0; i < envc; i++) {
    envp[i] = strs[1 + argc + i];
    if (strncmp(envp[i], "PATH=", 5) == 0) path = envp[i] + 5;
  }
  envp[envc] = NULL;
  /* argv needs its terminating NULL where env[0] starts; copy it. */
  char **args = xrealloc(NULL, ((size_t)argc + 1) * sizeof *args);
  memcpy(args, argv, argc * sizeof *args);
  args[argc] = NULL;

  int outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, err = 0;
  pid_t pid = -1;
  if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
    err = errno;
  } else {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, deflt;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    /* The job's own session and process group, as Node's detached: true. */
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&at, &none);
    /* Default dispositions for every catchable signal, as libuv gives its children. */
    sigemptyset(&deflt);
    for (int sig = 1; sig < 32; sig++) if (sig != SIGKILL && sig != SIGSTOP) sigaddset(&deflt, sig);
    posix_spawnattr_setsigdefault(&at, &deflt);
    posix_spawn_file_actions_addchdir_np(&fa, cwd);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
    posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
    char *program = find_program(args[0], path, cwd, &err);
    if (program != NULL) {
      err = posix_spawn(&pid, program, &fa, &at, args, envp);
      if (err == ENOEXEC) {
        /* A script without a #! line: run it with /bin/sh, as execvp (and so
           Node's spawn) does. */
        char **shargs = xrealloc(NULL, ((size_t)argc + 2) * sizeof *shargs);
        shargs[0] = "/bin/sh";
        shargs[1] = program;
        memcpy(shargs + 2, args + 1, argc * sizeof *shargs); /* args[1..argc], NULL included */
        err = posix_spawn(&pid, "/bin/sh", &fa, &at, shargs, envp);
        free(shargs);
      }
      free(program);
    }
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
  }
  if (outp[1] >= 0) close(outp[1]);
  if (errp[1] >= 0) close(errp[1]);
  free(strs);
  free(envp);
  free(args);
  if (err != 0) {
    if (outp[0] >= 0) close(outp[0]);
    if (errp[0] >= 0) close(errp[0]);
    rep_begin(REP_FAILED, id);
    rep_u32((uint32_t)err);
    rep_send();
    return;
  }
  fcntl(outp[0], F_SETFL, O_NONBLOCK);
  fcntl(errp[0], F_SETFL, O_NONBLOCK);
  if (njobs == capjobs) {
    capjobs = capjobs ? capjobs * 2 : 16;
    jobs = xrealloc(jobs, capjobs * sizeof *jobs);
  }
  job_t *j = &jobs[njobs++];
  memset(j, 0, sizeof *j);
  j->id = id;
  j->pid = pid;
  j->fd[0] = outp[0];
  j->fd[1] = errp[0];
  j->live = live;
  j->out[0].cap = j->out[1].cap = live ? 0 : keep;
  rep_begin(REP_STARTED, id);
  rep_u32((uint32_t)pid);
  rep_send();
}

static void handle_request(const unsigned char *p, uint32_t n) {
  if (n < 1) { fprintf(stderr, "rgrid-spawn: empty request\n"); exit(2); }
  if (p[0] == REQ_RUN) { start_job(p + 1, n - 1); return; }
  if (p[0] == REQ_CLOSE && n == 5) {
    job_t *j = find_job(get_u32(p + 1));
    if (j == NULL) return; /* already done: the reply crossed the request */
    close_fd(j, 0);
    close_fd(j, 1);
    maybe_done(j);
    return;
  }
  fprintf(stderr, "rgrid-spawn: unknown request type %u\n", p[0]);
  exit(2);
}

static void reap(void) {
  for (;;) {
    int st;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid <= 0) return;
    for (size_t i = 0; i < njobs; i++) {
      job_t *j = &jobs[i];
      if (j->pid != pid) continue;
      j->exited = 1;
      rep_begin(REP_EXITED, j->id);
      rep_u32((uint32_t)(WIFEXITED(st) ? WEXITSTATUS(st) : -1));
      rep_u32((uint32_t)(WIFSIGNALED(st) ? WTERMSIG(st) : 0));
      rep_send();
      maybe_done(j);
      break;
    }
  }
}

static void read_output(job_t *j, int s) {
  static unsigned char chunk[READ_CHUNK];
  /* At most 1 MiB per wake-up, so a job that prints without pause cannot keep
     the helper from the other jobs and from new requests. */
  for (int reads = 0; reads < 16; reads++) {
    ssize_t r = read(j->fd[s], chunk, sizeof chunk);
    if (r > 0) {
      if (j->live) {
        j->out[s].total += (size_t)r;
        rep_begin(REP_OUTPUT, j->id);
        rep_u8((uint8_t)(s + 1));
        rep_put(chunk, (size_t)r);
        rep_send();
      } else {
        ring_push(&j->out[s], chunk, (size_t)r);
      }
      /* A short read means the pipe is empty for now. */
      if ((size_t)r < sizeof chunk) return;
      continue;
    }
    if (r < 0 && (errno == EINTR)) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    close_fd(j, s); /* EOF, or an error that leaves nothing more to read */
    return;
  }
}

static void signal_all(int sig) {
  for (size_t i = 0; i < njobs; i++) if (!jobs[i].exited) kill(-jobs[i].pid, sig);
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(void) {
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0) die("sigprocmask");
  int sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) die("signalfd");
  signal(SIGPIPE, SIG_IGN);
  fcntl(0, F_SETFD, FD_CLOEXEC);
  fcntl(1, F_SETFD, FD_CLOEXEC);

  unsigned char *in = NULL;
  size_t inlen = 0, incap = 0;
  struct pollfd *pfd = NULL;
  size_t pfdcap = 0;
  long long deadline = 0;

  rep_begin(REP_READY, 0);
  rep_u32(PROTOCOL_VERSION);
  rep_send();

  for (;;) {
    if (closing) {
      if (njobs == 0) return 0;
      if (closing == 1 && now_ms() >= deadline) {
        signal_all(SIGKILL);
        closing = 2;
        deadline = now_ms() + CLOSING_DRAIN_MS;
      } else if (closing == 2 && now_ms() >= deadline) {
        /* Whatever still holds a pipe left its job's group: DONE with what arrived. */
        for (size_t i = njobs; i-- > 0;) {
          if (!jobs[i].exited) continue;
          close_fd(&jobs[i], 0);
          close_fd(&jobs[i], 1);
          maybe_done(&jobs[i]);
        }
        return 0;
      }
    }
    size_t want = 2 + 2 * njobs;
    if (want > pfdcap) { pfdcap = want * 2; pfd = xrealloc(pfd, pfdcap * sizeof *pfd); }
    size_t n = 0;
    pfd[n++] = (struct pollfd){ .fd = closing ? -1 : 0, .events = POLLIN };
    pfd[n++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
    for (size_t i = 0; i < njobs; i++)
      for (int s = 0; s < 2; s++) pfd[n++] = (struct pollfd){ .fd = jobs[i].fd[s], .events = POLLIN };
    int timeout = closing ? (int)(deadline - now_ms()) : -1;
    if (closing && timeout < 0) timeout = 0;
    if (poll(pfd, n, timeout) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (pfd[1].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {}
      reap();
    }
    /* Output before requests: a CLOSE must not drop bytes that already arrived.
       Jobs are matched by id, since reaping and DONE reorder the array. */
    for (size_t k = 2; k < n; k++) {
      if (pfd[k].revents == 0) continue;
      for (size_t i = 0; i < njobs; i++) {
        for (int s = 0; s < 2; s++) {
          if (jobs[i].fd[s] != pfd[k].fd || jobs[i].fd[s] < 0) continue;
          read_output(&jobs[i], s);
          maybe_done(&jobs[i]);
          goto next_fd;
        }
      }
    next_fd:;
    }
    if (pfd[0].revents) {
      if (inlen + READ_CHUNK > incap) { incap = (inlen + READ_CHUNK) * 2; in = xrealloc(in, incap); }
      ssize_t r = read(0, in + inlen, incap - inlen);
      if (r < 0 && errno != EINTR && errno != EAGAIN) die("read stdin");
      if (r == 0) {
        closing = 1;
        deadline = now_ms() + CLOSING_GRACE_MS;
        signal_all(SIGTERM);
        continue;
      }
      if (r > 0) inlen += (size_t)r;
      size_t off = 0;
      while (inlen - off >= 4) {
        uint32_t len = get_u32(in + off);
        if (len > MAX_REQUEST) { fprintf(stderr, "rgrid-spawn: request of %u bytes\n", len); exit(2); }
        if (inlen - off - 4 < len) break;
        handle_request(in + off + 4, len);
        off += 4 + (size_t)len;
      }
      memmove(in, in + off, inlen - off);
      inlen -= off;
    }
  }
}
