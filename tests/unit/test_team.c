/* test_team.c — runtime/rt_team.c, the barrier between the phases of a run:
 * no thread leaves before every thread arrived, and each sees what the others
 * wrote before it, under each wait policy (spinning, sleeping at once, a
 * user's spin count) and with more threads than CPUs (threads preempted
 * while they wait: the contended path); how long a thread spins, with its
 * CPU contended (a busy thread pinned to the same CPU) and calm; and the
 * team's size: when it shrinks, for how long, that a thread counts the time
 * it waited for its CPU, and that a generated program's runs shrink their
 * team while its CPU is busy (and keep it under a user's wait policy).
 * Criterion runs each test in its own process, so each sets its policy's
 * environment before the first wait. rt_team.c is included, not linked, to
 * reach its static cpu_contended and spin_for. */
#include "rt_team.c"
#include <criterion/criterion.h>
#include <dirent.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

enum { MAX_THREADS = 8, ROUNDS = 3000 };

/* Each round every thread writes its slot, waits, reads all slots (they must
 * hold this round), waits again (so no one writes the next round while
 * another still reads). Thread 0 is slow now and then, so the others wait in
 * every way: spinning, then sleeping. Returns the rounds that went wrong. */
static int rounds_with_a_team(int nthreads) {
  static volatile int slot[MAX_THREADS];
  rt_barrier barrier = {0, 0, 0};
  int bad = 0;
  #pragma omp parallel num_threads(nthreads) reduction(+ : bad)
  {
    const int me = omp_get_thread_num(), nt = omp_get_num_threads();
    for (int r = 1; r <= ROUNDS; r++) {
      if (me == 0 && r % 500 == 0) {
        struct timespec pause = {0, 2 * 1000 * 1000}; /* 2 ms: past the spin */
        nanosleep(&pause, NULL);
      }
      slot[me] = r;
      rt_barrier_wait(&barrier, nt);
      for (int t = 0; t < nt; t++) bad += slot[t] != r;
      rt_barrier_wait(&barrier, nt);
    }
  }
  cr_assert_eq(barrier.arrived, 0u, "no thread is left counted as arrived");
  cr_assert_eq(barrier.generation, (unsigned)(2 * ROUNDS * (nthreads > 1)), "one generation per barrier");
  return bad;
}

Test(team, the_default_policy_holds_every_thread) {
  unsetenv("OMP_WAIT_POLICY");
  unsetenv("GOMP_SPINCOUNT");
  cr_assert_eq(rounds_with_a_team(2), 0);
  cr_assert_eq(rounds_with_a_team(1), 0, "a team of one does not wait");
}

Test(team, more_threads_than_cpus) {
  unsetenv("OMP_WAIT_POLICY");
  unsetenv("GOMP_SPINCOUNT");
  cr_assert_eq(rounds_with_a_team(MAX_THREADS), 0);
}

Test(team, passive_sleeps_at_once) {
  setenv("OMP_WAIT_POLICY", "passive", 1);
  cr_assert_eq(rounds_with_a_team(4), 0);
}

Test(team, active_only_spins) {
  setenv("OMP_WAIT_POLICY", "ACTIVE", 1);
  cr_assert_eq(rounds_with_a_team(2), 0);
}

Test(team, a_users_spin_count) {
  unsetenv("OMP_WAIT_POLICY");
  setenv("GOMP_SPINCOUNT", "10", 1);
  cr_assert_eq(rounds_with_a_team(3), 0);
}

#if defined(__linux__)
/* Pins the calling thread to cpu. */
static void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  cr_assert_eq(pthread_setaffinity_np(pthread_self(), sizeof set, &set), 0);
}

static int busy_cpu;
static volatile int keep_busy;
static void *busy(void *unused) {
  (void)unused;
  pin_to(busy_cpu);
  while (keep_busy) {
  }
  return NULL;
}

/* Pins this thread and a busy one to the same CPU and spins until the
 * scheduler has preempted this thread (at most 10 s; CFS shares a CPU
 * between two busy threads within milliseconds); then unpins it. */
static void get_preempted(void) {
  cpu_set_t allowed;
  cr_assert_eq(pthread_getaffinity_np(pthread_self(), sizeof allowed, &allowed), 0);
  busy_cpu = 0;
  while (!CPU_ISSET(busy_cpu, &allowed)) busy_cpu++;
  pin_to(busy_cpu);
  keep_busy = 1;
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, busy, NULL), 0);
  const long before = involuntary_switches();
  const long long give_up = now_ns() + 10 * 1000000000LL;
  while (involuntary_switches() == before && now_ns() < give_up) {
  }
  keep_busy = 0;
  pthread_join(t, NULL);
  cr_assert_eq(pthread_setaffinity_np(pthread_self(), sizeof allowed, &allowed), 0);
  cr_assert_neq(involuntary_switches(), before, "a busy thread on the same CPU preempted this one");
}

Test(team, a_preempted_thread_counts_its_cpu_contended_for_a_while) {
  cr_assert(!cpu_contended(), "calm at first");
  get_preempted();
  cr_assert(cpu_contended(), "preempted since its last wait: contended");
  /* then calm again after CONTENDED_WAITS waits without a preemption (a
   * preemption meanwhile, on a busy machine, starts the count again) */
  int in_a_row = 0;
  bool calm = false;
  for (int i = 0; i < 1000000 && !calm; i++) {
    if (cpu_contended()) in_a_row++;
    else calm = true;
  }
  cr_assert(calm, "calm again");
  cr_assert_geq(in_a_row, CONTENDED_WAITS - 1, "contended for %d more waits after the preemption, not %d", in_a_row,
                CONTENDED_WAITS - 1);
}

/* ns spin_for takes on a barrier no other thread arrives at. */
static long long spin_alone(int policy) {
  rt_barrier b = {0, 0, 0};
  const long long t0 = now_ns();
  cr_assert(!spin_for(&b, 0, policy), "nobody moved the generation");
  return now_ns() - t0;
}

Test(team, a_contended_cpu_spins_briefly_and_a_calm_one_long) {
  unsetenv("OMP_WAIT_POLICY");
  unsetenv("GOMP_SPINCOUNT");
  cr_assert_eq(wait_policy(), WAIT_ADAPTIVE);
  cr_assert(!cpu_contended());
  get_preempted();
  /* contended: RT_BARRIER_QUICK_NS, then sleep; the least of 20 spins, since
   * one the scheduler interrupts takes longer */
  long long least = -1;
  for (int i = 0; i < 20; i++) {
    long long ns = spin_alone(WAIT_ADAPTIVE);
    cr_assert_geq(ns, RT_BARRIER_QUICK_NS, "a contended thread still spins %d ns first", RT_BARRIER_QUICK_NS);
    if (least < 0 || ns < least) least = ns;
  }
  cr_assert_lt(least, RT_BARRIER_SPIN_NS, "a contended thread spins briefly (least %lld ns)", least);
  for (int i = 0; i < 1000000 && cpu_contended(); i++) {
  }
  cr_assert_geq(spin_alone(WAIT_ADAPTIVE), RT_BARRIER_SPIN_NS, "a calm thread spins RT_BARRIER_SPIN_NS");
  cr_assert_lt(spin_alone(WAIT_PASSIVE), RT_BARRIER_QUICK_NS * 50, "passive does not spin");
}

/* ------------------------------------------------------------ the team */

/* One run of a team of up to max threads in which `waited` of them waited
 * for a CPU (when the run is watched); the run's team size. */
static int run_team(int max, int waited) {
  rt_team t = rt_team_begin(max);
  t.ran = t.threads; /* as if its region ran */
  if (t.watch) t.waited = waited;
  rt_team_end(&t);
  return t.threads;
}

/* `runs` runs of up to max threads in which no thread waited; true if every one had `size` threads. */
static bool runs_of(int runs, int max, int size) {
  bool all = true;
  for (int i = 0; i < runs; i++) all &= run_team(max, 0) == size;
  return all;
}

Test(team, shrinks_after_two_runs_in_a_row_with_waiting_threads_then_tries_the_full_team) {
  unsetenv("OMP_WAIT_POLICY");
  unsetenv("GOMP_SPINCOUNT");
  cr_assert(runs_of(5, 4, 4), "quiet: the full team");
  cr_assert_eq(run_team(4, 1), 4);
  cr_assert_eq(run_team(4, 0), 4, "one such run alone changes nothing");
  cr_assert_eq(run_team(4, 1), 4);
  cr_assert_eq(run_team(4, 1), 4, "the second in a row decides the next runs");
  cr_assert(runs_of(RT_TEAM_SHORT_MIN, 4, 3), "one thread fewer per waiting one, for RT_TEAM_SHORT_MIN runs");
  cr_assert_eq(rt_team_short_runs(), RT_TEAM_SHORT_MIN);
  /* the full team again; waiting again at once, it shrinks for twice as long, up to RT_TEAM_SHORT_MAX */
  int len = RT_TEAM_SHORT_MIN;
  for (int k = 0; k < 7; k++) {
    cr_assert_eq(run_team(4, 2), 4, "the full team is tried again");
    len = len * 2 < RT_TEAM_SHORT_MAX ? len * 2 : RT_TEAM_SHORT_MAX;
    cr_assert(runs_of(len, 4, 2), "then %d runs of 2 threads", len);
  }
  cr_assert_eq(len, RT_TEAM_SHORT_MAX);
  cr_assert_eq(run_team(4, 0), 4, "tried again, and quiet");
  cr_assert(runs_of(3, 4, 4), "quiet: the full team stays");
  cr_assert_eq(run_team(4, 4), 4);
  cr_assert_eq(run_team(4, 4), 4);
  cr_assert(runs_of(RT_TEAM_SHORT_MIN, 4, 1), "every thread waited: one is left, and a quiet try reset the length");
  cr_assert_eq(run_team(1, 1), 1);
  cr_assert_eq(run_team(1, 1), 1);
  cr_assert(runs_of(3, 1, 1), "a team of one is not watched");
}

Test(team, keeps_its_size_under_a_users_wait_policy) {
  setenv("OMP_WAIT_POLICY", "passive", 1);
  for (int i = 0; i < 4; i++) {
    rt_team t = rt_team_begin(2);
    cr_assert(!t.watch && t.threads == 2);
    t.ran = 2;
    t.waited = 2;
    rt_team_end(&t);
  }
  cr_assert_eq(rt_team_short_runs(), 0);
  cr_assert_str_eq(rt_team_policy(), "always every thread");
}

Test(team, a_thread_that_waited_for_its_cpu_counts) {
  unsetenv("OMP_WAIT_POLICY");
  unsetenv("GOMP_SPINCOUNT");
  rt_team t = rt_team_begin(2);
  cr_assert(t.watch);
  long long entered = rt_team_enter(&t);
  cr_assert_geq(entered, 0, "/proc/thread-self/schedstat is readable");
  get_preempted(); /* spinning next to a busy thread: it waited about half the time */
  rt_team_leave(&t, entered);
  cr_assert_eq(t.waited, 1);
  /* on its own CPU it does not count (the least of 5 tries: the machine may be busy) */
  int least = 1;
  for (int i = 0; i < 5; i++) {
    rt_team calm = rt_team_begin(2);
    entered = rt_team_enter(&calm);
    const long long until = now_ns() + 20 * 1000000LL;
    while (now_ns() < until) {
    }
    rt_team_leave(&calm, entered);
    least = calm.waited < least ? calm.waited : least;
  }
  cr_assert_eq(least, 0);
  rt_team unwatched = {2, 2, 0, 0, 0, now_ns()};
  entered = rt_team_enter(&unwatched);
  get_preempted();
  rt_team_leave(&unwatched, entered);
  cr_assert_eq(unwatched.waited, 0, "an unwatched run counts nothing");
}

static int open_descriptors(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  cr_assert(d);
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

static void *read_wait(void *unused) {
  (void)unused;
  cr_assert_geq(runqueue_wait_ns(), 0);
  cr_assert_geq(runqueue_wait_ns(), 0, "read again through the same descriptor");
  return NULL;
}

Test(team, a_thread_closes_its_schedstat_descriptor_when_it_exits) {
  const int before = open_descriptors();
  for (int i = 0; i < 50; i++) {
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_wait, NULL), 0);
    pthread_join(t, NULL);
  }
  cr_assert_eq(open_descriptors(), before, "50 threads that read their wait left no descriptor open");
}

/* testutil.h's, which cannot be included next to rt_team.c (the compiler's
 * headers it includes and circc_rt.h share names) */
void tu_build(const char *text, const char *prog, const char *opt);
int tu_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *tu_temp_dir(const char *tag);
char *tu_read_file(const char *path, size_t *len);

/* A generated program (a GEMM big enough for every thread) run with 2
 * threads and `policy` (NULL: the default), --bench 20 with a busy loop, all
 * on one CPU; what --bench printed. */
static char *bench_on_a_busy_cpu(const char *dir, const char *policy) {
  cpu_set_t allowed, one;
  cr_assert_eq(sched_getaffinity(0, sizeof allowed, &allowed), 0);
  int cpu = 0;
  while (!CPU_ISSET(cpu, &allowed)) cpu++;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  cr_assert_eq(sched_setaffinity(0, sizeof one, &one), 0); /* the shell, the busy loop and the program inherit it */
  int code = tu_sh("cd %s && sh -c 'while :; do :; done' & b=$!; cd %s && %s ./prog --threads 2 --bench 20 > bench.txt; "
                   "s=$?; kill $b; exit $s",
                   dir, dir, policy ? policy : "env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT");
  cr_assert_eq(sched_setaffinity(0, sizeof allowed, &allowed), 0);
  cr_assert_eq(code, 0);
  char path[4200];
  snprintf(path, sizeof path, "%s/bench.txt", dir);
  return tu_read_file(path, NULL);
}

Test(team, a_program_runs_with_fewer_threads_while_its_cpu_is_busy) {
  char *dir = tu_temp_dir("team_program");
  char prog[4200];
  snprintf(prog, sizeof prog, "%s/prog", dir);
  tu_build("'mm' Einsum ij,jk->ik\n  'a' [384,384] Symbol\n  'b' [384,384] Symbol\n", prog, "-O1");
  char *got = bench_on_a_busy_cpu(dir, NULL);
  cr_assert(strstr(got, "2 threads: median ") && strstr(got, " with fewer threads (CPUs busy)"), "%s", got);
  free(got);
  got = bench_on_a_busy_cpu(dir, "OMP_WAIT_POLICY=passive");
  cr_assert(strstr(got, "2 threads: median ") && !strstr(got, "fewer threads"), "a user's policy keeps the team: %s",
            got);
  free(got);
  tu_sh("rm -rf %s", dir);
  free(dir);
}
#endif
