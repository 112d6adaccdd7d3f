/* progress.c — see progress.h. A step running for LONG_STEP_S seconds is
 * announced from a SIGALRM handler (write(2) only: async-signal-safe); the
 * handler is installed with SA_RESTART so the work it interrupts goes on. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L   /* sigaction, clock_gettime */
#endif
#include "progress.h"
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { LONG_STEP_S = 2, MAX_DEPTH = 8 };

static struct {
  bool verbose, tty;
  int depth;
  const char *name[MAX_DEPTH];
  double start[MAX_DEPTH];
  volatile sig_atomic_t announced[MAX_DEPTH];
} g;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void announce(int sig) {
  (void)sig;
  int d = g.depth - 1;
  if (d < 0 || d >= MAX_DEPTH) return;
  char line[128] = "circc: ";
  size_t n = strlen(line), len = strlen(g.name[d]);
  if (len > sizeof line - n - 6) len = sizeof line - n - 6;
  memcpy(line + n, g.name[d], len);
  memcpy(line + n + len, " ...\n", 5);
  ssize_t w = write(2, line, n + len + 5);
  (void)w;
  g.announced[d] = 1;
}

void progress_init(bool verbose) {
  g.verbose = verbose;
  g.tty = isatty(2);
  g.depth = 0;
  if (!g.tty) return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = announce;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, NULL);
}

void progress_begin(const char *name) {
  if (g.depth < MAX_DEPTH) {
    g.name[g.depth] = name;
    g.start[g.depth] = now_s();
    g.announced[g.depth] = 0;
  }
  g.depth++;
  if (g.tty) alarm(LONG_STEP_S);
}

void progress_end(void) {
  if (g.depth == 0) return;
  if (g.tty) alarm(0);
  int d = --g.depth;
  if (d >= MAX_DEPTH) return;
  double t = now_s() - g.start[d];
  if (g.verbose || g.announced[d] || (g.tty && t >= LONG_STEP_S))
    fprintf(stderr, "circc: %s %.3f s\n", g.name[d], t);
  /* the enclosing step's 2 s count again from here; it was announced or is being timed */
  if (g.tty && g.depth > 0 && g.depth <= MAX_DEPTH && !g.announced[g.depth - 1]) {
    double left = LONG_STEP_S - (now_s() - g.start[g.depth - 1]);
    alarm(left > 1 ? (unsigned)left : 1);
  }
}
