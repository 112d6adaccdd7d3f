/* rt_team.c — a run's team: how many threads it gets, and the barrier they
 * wait at after each phase of steps (run() and run_steps in the generated
 * model.c; see circc_rt.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RUSAGE_THREAD, syscall */
#endif
#include "circc_rt.h"
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#if defined(__linux__)
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__linux__)
enum {
  WAIT_ADAPTIVE, /* the default: spin up to RT_BARRIER_SPIN_NS unless this thread's CPU is contended */
  WAIT_PASSIVE,  /* OMP_WAIT_POLICY=passive: sleep at once */
  WAIT_ACTIVE,   /* OMP_WAIT_POLICY=active: spin, never sleep */
  WAIT_COUNT     /* GOMP_SPINCOUNT=N set by the user: N pauses, then sleep */
};
/* Waits after which a thread that was preempted tries spinning again: about
 * two decoded tokens of GPT-2 small. */
enum { CONTENDED_WAITS = 256 };

static int g_policy = -1;
static long long g_spin_count;

/* The user's OMP_WAIT_POLICY / GOMP_SPINCOUNT, as libgomp reads them; the
 * GOMP_SPINCOUNT rt_wait_policy sets for libgomp's own waits is not one.
 * Read once; threads that race to read it store the same values. */
static int wait_policy(void) {
  int p = __atomic_load_n(&g_policy, __ATOMIC_ACQUIRE);
  if (p >= 0) return p;
  const char *policy = getenv("OMP_WAIT_POLICY"), *spin = getenv("GOMP_SPINCOUNT");
  p = WAIT_ADAPTIVE;
  if (policy && !strcasecmp(policy, "passive")) p = WAIT_PASSIVE;
  else if (policy && !strcasecmp(policy, "active")) p = WAIT_ACTIVE;
  else if (spin && strcmp(spin, RT_SPIN_COUNT) != 0) {
    char *end;
    long long n = strtoll(spin, &end, 10);
    if (end != spin && n >= 0) {
      __atomic_store_n(&g_spin_count, n, __ATOMIC_RELAXED);
      p = WAIT_COUNT;
    }
  }
  __atomic_store_n(&g_policy, p, __ATOMIC_RELEASE);
  return p;
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The times the scheduler preempted this thread so far (-1: unknown). */
static long involuntary_switches(void) {
  struct rusage ru;
  return getrusage(RUSAGE_THREAD, &ru) == 0 ? ru.ru_nivcsw : -1;
}

/* Was this thread's CPU contended lately: did another task preempt it since
 * its last wait, or within the last CONTENDED_WAITS waits? A spinning thread
 * on such a CPU burns the share of the CPU its own next phase needs, and the
 * scheduler then runs it late; one that sleeps keeps that share. */
static bool cpu_contended(void) {
  static _Thread_local long seen = -1;
  static _Thread_local unsigned since = CONTENDED_WAITS;
  const long now = involuntary_switches();
  if (now < 0) return false;
  if (seen >= 0 && now > seen) since = 0;
  else if (since < CONTENDED_WAITS) since++;
  seen = now;
  return since < CONTENDED_WAITS;
}

/* Spins until b's generation is no longer gen, or the clock passes deadline
 * (checked every 8 pauses); true if the generation moved. */
static bool spin_until(rt_barrier *b, unsigned gen, long long deadline) {
  for (unsigned i = 1;; i++) {
    if (__atomic_load_n(&b->generation, __ATOMIC_ACQUIRE) != gen) return true;
    cpu_relax();
    if (i % 8 == 0 && now_ns() > deadline) return false;
  }
}

/* Spins until b's generation is no longer gen or the policy's spin ends;
 * true if it moved on. The adaptive policy spins RT_BARRIER_QUICK_NS before
 * it asks whether the CPU is contended: most waits at the end of a decode
 * phase are shorter than that question (a system call, ~1 us under kernel
 * page-table isolation), and a spin that short costs a contended CPU little. */
static bool spin_for(rt_barrier *b, unsigned gen, int policy) {
  if (policy == WAIT_PASSIVE) return false;
  if (policy == WAIT_ADAPTIVE) {
    long long start = now_ns();
    return spin_until(b, gen, start + RT_BARRIER_QUICK_NS) ||
           (!cpu_contended() && spin_until(b, gen, start + RT_BARRIER_SPIN_NS));
  }
  const long long count = __atomic_load_n(&g_spin_count, __ATOMIC_RELAXED);
  for (long long i = 1;; i++) {
    if (__atomic_load_n(&b->generation, __ATOMIC_ACQUIRE) != gen) return true;
    cpu_relax();
    if (policy == WAIT_COUNT && i >= count) return false;
  }
}
#endif

const char *rt_barrier_policy(void) {
#if defined(__linux__)
  static char text[96];
  switch (wait_policy()) {
  case WAIT_PASSIVE: return "sleep at once (OMP_WAIT_POLICY)";
  case WAIT_ACTIVE: return "spin (OMP_WAIT_POLICY)";
  case WAIT_COUNT:
    snprintf(text, sizeof text, "spin %lld times, then sleep (GOMP_SPINCOUNT)",
             __atomic_load_n(&g_spin_count, __ATOMIC_RELAXED));
    return text;
  default:
    snprintf(text, sizeof text, "spin up to %d us, or %d us while the thread's CPU is contended, then sleep",
             RT_BARRIER_SPIN_NS / 1000, RT_BARRIER_QUICK_NS / 1000);
    return text;
  }
#else
  return "the OpenMP runtime's";
#endif
}

void rt_barrier_wait(rt_barrier *b, int nthreads) {
#if defined(__linux__)
  if (nthreads <= 1) return;
  const int policy = wait_policy();
  const unsigned gen = __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE); /* it moves only after this thread arrives */
  if (__atomic_add_fetch(&b->arrived, 1, __ATOMIC_ACQ_REL) == (unsigned)nthreads) {
    __atomic_store_n(&b->arrived, 0, __ATOMIC_RELAXED); /* the others touch it only after the generation moves */
    __atomic_add_fetch(&b->generation, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&b->sleepers, __ATOMIC_SEQ_CST))
      syscall(SYS_futex, &b->generation, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    return;
  }
  if (spin_for(b, gen, policy)) return;
  /* sleepers is counted before the generation is read again and the waker
   * reads it after moving the generation (both sequentially consistent), so
   * either the waker sees a sleeper and wakes it or the sleeper sees the new
   * generation; the kernel compares the word before sleeping */
  __atomic_add_fetch(&b->sleepers, 1, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(&b->generation, __ATOMIC_SEQ_CST) == gen)
    syscall(SYS_futex, &b->generation, FUTEX_WAIT_PRIVATE, gen, NULL, NULL, 0);
  __atomic_sub_fetch(&b->sleepers, 1, __ATOMIC_RELAXED);
#elif defined(_OPENMP)
  (void)b, (void)nthreads;
  #pragma omp barrier
#else
  (void)b, (void)nthreads;
#endif
}

/* ------------------------------------------------------------ the team */

#if defined(__linux__)
/* Between runs, under team_lock (a library's user may run from several threads). */
static pthread_mutex_t team_lock = PTHREAD_MUTEX_INITIALIZER;
static int team_left_out;                      /* threads the short runs leave out */
static int team_short_left;                    /* short runs to go (0: the full team) */
static int team_short_len = RT_TEAM_SHORT_MIN; /* runs the next shrink lasts */
static int team_strikes;                       /* full-team runs in a row in which a thread waited */
static bool team_probing;                      /* the next full run is the first after a shrink */
static long team_short_total;                  /* short runs so far */

/* Each thread's descriptor of /proc/thread-self/schedstat, opened once and
 * closed when the thread exits (a library's host may start many threads). */
static pthread_key_t schedstat_key;
static pthread_once_t schedstat_once = PTHREAD_ONCE_INIT;
static void close_schedstat(void *fd) { close((int)(intptr_t)fd - 1); }
static void make_schedstat_key(void) {
  if (pthread_key_create(&schedstat_key, close_schedstat) != 0) schedstat_key = (pthread_key_t)-1;
}

/* This thread's time so far waiting for a CPU while it could run, in ns
 * (-1: unknown): /proc/thread-self/schedstat's second field. */
static long long runqueue_wait_ns(void) {
  static _Thread_local int fd = -2;
  if (fd == -2) {
    pthread_once(&schedstat_once, make_schedstat_key);
    fd = schedstat_key == (pthread_key_t)-1 ? -1 : open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && pthread_setspecific(schedstat_key, (void *)(intptr_t)(fd + 1)) != 0) close(fd), fd = -1;
  }
  char buf[96];
  ssize_t n = fd >= 0 ? pread(fd, buf, sizeof buf - 1, 0) : -1;
  if (n <= 0) return -1;
  buf[n] = '\0';
  unsigned long long ran, waited;
  return sscanf(buf, "%llu %llu", &ran, &waited) == 2 ? (long long)waited : -1;
}
#endif

rt_team rt_team_begin(int max_threads) {
  rt_team t = {max_threads > 1 ? max_threads : 1, max_threads > 1 ? max_threads : 1, 0, 0, 0, 0};
#if defined(__linux__)
  if (t.threads == 1 || wait_policy() != WAIT_ADAPTIVE) return t;
  pthread_mutex_lock(&team_lock);
  if (team_short_left > 0) {
    t.threads = t.threads - team_left_out > 1 ? t.threads - team_left_out : 1;
    if (--team_short_left == 0) team_probing = true;
  } else {
    t.watch = 1; /* only full teams are watched: they decide */
    t.start_ns = now_ns();
  }
  pthread_mutex_unlock(&team_lock);
#endif
  return t;
}

long long rt_team_enter(const rt_team *t) {
#if defined(__linux__)
  return t->watch ? runqueue_wait_ns() : -1;
#else
  (void)t;
  return -1;
#endif
}

void rt_team_leave(rt_team *t, long long entered) {
  __atomic_add_fetch(&t->ran, 1, __ATOMIC_RELAXED);
#if defined(__linux__)
  if (entered < 0) return;
  const long long waited = runqueue_wait_ns() - entered, took = now_ns() - t->start_ns;
  if (waited * RT_TEAM_WAIT_SHARE > took) __atomic_add_fetch(&t->waited, 1, __ATOMIC_RELAXED);
#else
  (void)t, (void)entered;
#endif
}

#if defined(__linux__)
/* After a full team's run, under team_lock: shrink the next runs' team, or not. */
static void decide(const rt_team *t) {
  if (t->waited == 0) {
    team_strikes = 0;
    team_short_len = RT_TEAM_SHORT_MIN;
  } else if (team_probing || ++team_strikes == 2) { /* one such run may be the kernel's own work */
    if (team_probing) team_short_len = team_short_len * 2 < RT_TEAM_SHORT_MAX ? team_short_len * 2 : RT_TEAM_SHORT_MAX;
    team_left_out = t->waited < t->threads ? t->waited : t->threads - 1;
    team_short_left = team_short_len;
    team_strikes = 0;
  }
  team_probing = false;
}
#endif

void rt_team_end(const rt_team *t) {
#if defined(__linux__)
  if (!t->watch && t->ran >= t->full) return;
  pthread_mutex_lock(&team_lock);
  if (t->ran < t->full) team_short_total++; /* counted from the threads that ran, not from the plan */
  if (t->watch) decide(t);
  pthread_mutex_unlock(&team_lock);
#else
  (void)t;
#endif
}

long rt_team_short_runs(void) {
#if defined(__linux__)
  pthread_mutex_lock(&team_lock);
  long n = team_short_total;
  pthread_mutex_unlock(&team_lock);
  return n;
#else
  return 0;
#endif
}

const char *rt_team_policy(void) {
#if defined(__linux__)
  if (wait_policy() == WAIT_ADAPTIVE) {
    static char text[200];
    snprintf(text, sizeof text,
             "one thread fewer per thread that waited for a CPU over 1/%d of the run, in two runs in a row, "
             "for %d to %d runs",
             RT_TEAM_WAIT_SHARE, RT_TEAM_SHORT_MIN, RT_TEAM_SHORT_MAX);
    return text;
  }
#endif
  return "always every thread";
}
