/* test_mpi.c — expectation programs built with --mpi (issue 14, label mpi):
 * under `mpirun -n R` for R = 1, 2, 3 and more ranks than chunks they write
 * the same bytes (--output, --output-se, --dump-indices, stdout) as the
 * program built without --mpi, for the example circuits of tests/data/rv
 * (order 1 with the jackknife, order 2, orders 3-4, a module and a mask), a
 * nested Cumulant and --all; a rank with a bad --data file stops every rank
 * with its message and no output file; ranks with different arguments are
 * refused; usage errors are printed once; circc --mpi without mpicc is exit 4
 * and programs built without --mpi do not link MPI. Needs Open MPI
 * (scripts/setup.sh installs it); runs as root on one host (loopback). */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "scrub_gen.h"

/* Open MPI on one host: shared memory only, no binding (oversubscribed on 2 cores). */
#define MPIRUN                                                                                                     \
  "OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none mpirun --allow-run-as-root --oversubscribe " \
  "--bind-to none"

/* Compiles text to dir/name, with --mpi or without; outputs (NULL: every top-level circuit) as --output. */
static void compile_outputs(const char *text, const char *dir, const char *name, bool mpi, const char *const *streams,
                            int nstreams, const char *store, const char *const *outputs, int noutputs) {
  Comp *c = tu_comp();
  c->streamed = streams, c->nstreamed = nstreams;
  if (store) c->tensor_dir = store;
  char *prog;
  cr_assert(asprintf(&prog, "%s/%s", dir, name) > 0);
  DriverOptions o = {.text = text, .text_len = strlen(text), .text_name = "case.circ", .last = STAGE_EMIT,
                     .outputs = outputs, .noutputs = noutputs, .verify_each = true,
                     .emit = {.name = name, .command_line = "test_mpi"},
                     .build = {.output = prog, .opt = "-O1", .mpi = mpi}};
  Compilation cm = {0};
  cr_assert(driver_run(c, &o, &cm), "%s", tu_diags(c));
  free(prog);
  tu_free(c);
}

static void compile(const char *text, const char *dir, const char *name, bool mpi, const char *const *streams,
                    int nstreams, const char *store) {
  compile_outputs(text, dir, name, mpi, streams, nstreams, store, NULL, 0);
}

typedef struct Case {
  const char *name;
  const char *outputs[4];
  bool se;                     /* every output is a first-pass mean: the jackknife runs */
} Case;

static const Case CASES[] = {
    {"dice_independent", {"E[d1*d3]"}, true},
    {"dataset_loss", {"expected_loss", "expected_loss_by_seq"}, true},
    {"cumulant2", {"K2(x,y)", "K2(y,e)", "K2(y,y+e)"}, false},
    {"scrub_pattern", {"E[f(x_ref,x_scrub)]", "K2(x_ref,x_scrub)", "K3(u,u,u)", "K4(u,u,u,u)"}, false},
    {"nested", {"var"}, false},
    {"scrub", {"expected_loss_by_pos", "expected_loss"}, true},
};

/* Var(x) as E[(x - E[x])^2]: the inner mean is pass 0, the outer Cumulant pass 1. */
static const char NESTED[] = "'var' Cumulant\n"
                             "  'sq' Einsum ,->\n"
                             "    'centred' Add\n"
                             "      'x' DiscreteVar\n"
                             "        'v' Concat 0\n"
                             "          'v0' [1] Scalar 1\n"
                             "          'v1' [1] Scalar 2\n"
                             "          'v2' [1] Scalar 4\n"
                             "          'v3' [1] Scalar 8.5\n"
                             "        'p' Concat 0\n"
                             "          'p0' [1] Scalar 0.1\n"
                             "          'p1' [1] Scalar 0.2\n"
                             "          'p2' [1] Scalar 0.3\n"
                             "          'p3' [1] Scalar 0.4\n"
                             "      'neg' Einsum ,->\n"
                             "        'inner' Cumulant\n"
                             "          'x'\n"
                             "        'm1' [] Scalar -1\n"
                             "    'centred'\n";

/* " --output 'NAME=@TAGi.npy'" for every output (and --output-se TAGseI.npy when se). */
static char *file_args(const Case *cs, const char *tag, bool se) {
  char *s = strdup("");
  for (int i = 0; i < 4 && cs->outputs[i]; i++) {
    char *t;
    cr_assert(asprintf(&t, "%s --output '%s=@%s%d.npy'", s, cs->outputs[i], tag, i) > 0);
    free(s), s = t;
    if (!se) continue;
    cr_assert(asprintf(&t, "%s --output-se '%s=@%sse%d.npy'", s, cs->outputs[i], tag, i) > 0);
    free(s), s = t;
  }
  return s;
}

/* Every file the run tagged `tag` wrote equals the reference run's (tag "ref"). */
static void expect_same(const char *dir, const Case *cs, const char *tag, bool se, bool indices, const char *what) {
  for (int i = 0; i < 4 && cs->outputs[i]; i++) {
    cr_expect_eq(tu_sh("cmp -s '%s/ref%d.npy' '%s/%s%d.npy'", dir, i, dir, tag, i), 0, "%s %s: %s differs", cs->name, what,
                 cs->outputs[i]);
    if (se)
      cr_expect_eq(tu_sh("cmp -s '%s/refse%d.npy' '%s/%sse%d.npy'", dir, i, dir, tag, i), 0, "%s %s: se of %s differs",
                   cs->name, what, cs->outputs[i]);
  }
  if (indices)
    cr_expect_eq(tu_sh("cmp -s '%s/ref_idx.npy' '%s/%s_idx.npy'", dir, dir, tag), 0, "%s %s: indices differ", cs->name, what);
  cr_expect_eq(tu_sh("cmp -s '%s/ref.txt' '%s/%s.txt'", dir, dir, tag), 0, "%s %s: the report differs", cs->name, what);
}

/* 300 samples are 5 chunks (the last one partial): 2 and 3 ranks do not
 * divide them, 7 ranks leave some without a chunk; 2 ranks also run 2 threads. */
static void same_bytes_for_any_rank_count(const Case *cs) {
  char *dir = tu_temp_dir("mpi"), *rel, *text;
  if (!strcmp(cs->name, "nested")) {
    text = strdup(NESTED);
  } else {
    cr_assert(asprintf(&rel, "rv/%s.circ", cs->name) > 0);
    text = tu_read_file(tu_data(rel), NULL);
    free(rel);
  }
  compile(text, dir, "plain", false, NULL, 0, NULL);
  compile(text, dir, "prog", true, NULL, 0, NULL);
  char *ref = file_args(cs, "ref", cs->se);
  cr_assert_eq(tu_sh("cd '%s' && ./plain --samples 300 --seed 9 --threads 1 --dump-indices ref_idx.npy %s > ref.txt", dir,
                  ref), 0, "%s", cs->name);
  static const int RANKS[] = {1, 2, 3, 7};
  for (size_t j = 0; j < sizeof RANKS / sizeof *RANKS; j++) {
    char tag[16], what[32];
    snprintf(tag, sizeof tag, "r%d", RANKS[j]);
    snprintf(what, sizeof what, "%d ranks", RANKS[j]);
    char *args = file_args(cs, tag, cs->se);
    cr_assert_eq(tu_sh("cd '%s' && " MPIRUN " -n %d ./prog --samples 300 --seed 9 --threads %d --dump-indices %s_idx.npy "
                    "%s > %s.txt",
                    dir, RANKS[j], RANKS[j] == 2 ? 2 : 1, tag, args, tag), 0, "%s, %s", cs->name, what);
    expect_same(dir, cs, tag, cs->se, true, what);
    free(args);
  }
  /* --all: the enumeration is split the same way */
  char *all = file_args(cs, "ref", false);
  cr_assert_eq(tu_sh("cd '%s' && ./plain --all %s > ref.txt", dir, all), 0, "%s --all", cs->name);
  for (int ranks = 2; ranks <= 3; ranks++) {
    char tag[16], what[32];
    snprintf(tag, sizeof tag, "all%d", ranks);
    snprintf(what, sizeof what, "--all, %d ranks", ranks);
    char *args = file_args(cs, tag, false);
    cr_assert_eq(tu_sh("cd '%s' && " MPIRUN " -n %d ./prog --all --threads 1 %s > %s.txt", dir, ranks, args, tag), 0,
                 "%s, %s", cs->name, what);
    expect_same(dir, cs, tag, false, false, what);
    free(args);
  }
  free(all), free(ref), free(text);
  cr_assert_eq(tu_sh("rm -rf '%s'", dir), 0);
  free(dir);
}

/* order 1 with the jackknife */
Test(mpi, dice_independent) { same_bytes_for_any_rank_count(&CASES[0]); }
/* a module, a mask, two outputs from one pass, the jackknife */
Test(mpi, dataset_loss) { same_bytes_for_any_rank_count(&CASES[1]); }
/* order 2: means, then centred moments, one exchange after each sweep */
Test(mpi, cumulant2) { same_bytes_for_any_rank_count(&CASES[2]); }
/* the scrubbing pattern's example: orders 1 to 4 over one shared group */
Test(mpi, scrub_pattern) { same_bytes_for_any_rank_count(&CASES[3]); }
/* a nested Cumulant: pass 1 takes pass 0's combined estimate */
Test(mpi, nested) { same_bytes_for_any_rank_count(&CASES[4]); }

/* The scrubbing pattern on a transformer (scrub_gen.c, as test_scrub runs it):
 * two groups, a rewired model input, a masked per-position loss. */
Test(mpi, scrubbing_transformer) {
  char *dir = tu_temp_dir("mpi"), *store = tu_temp_dir("mpi");
  Model m;
  Comp *c = scrub_comp(&m, store, 77);
  char *text = scrub_file(c, &m);
  const Case *cs = &CASES[5];
  compile_outputs(text, dir, "plain", false, NULL, 0, store, SCRUB_OUTPUTS, 2);
  compile_outputs(text, dir, "prog", true, NULL, 0, store, SCRUB_OUTPUTS, 2);
  char *ref = file_args(cs, "ref", true);
  cr_assert_eq(tu_sh("cd '%s' && ./plain --samples 300 --seed 5 --dump-indices ref_idx.npy %s > ref.txt", dir, ref), 0);
  for (int ranks = 2; ranks <= 3; ranks++) {
    char tag[16], what[32];
    snprintf(tag, sizeof tag, "r%d", ranks);
    snprintf(what, sizeof what, "%d ranks", ranks);
    char *args = file_args(cs, tag, true);
    cr_assert_eq(tu_sh("cd '%s' && " MPIRUN " -n %d ./prog --samples 300 --seed 5 --threads 1 --dump-indices %s_idx.npy "
                    "%s > %s.txt", dir, ranks, tag, args, tag), 0, "%s", what);
    expect_same(dir, cs, tag, true, true, what);
    free(args);
  }
  char *all = file_args(cs, "ref", false), *all2 = file_args(cs, "all2", false);
  cr_assert_eq(tu_sh("cd '%s' && ./plain --all %s > ref.txt", dir, all), 0);
  cr_assert_eq(tu_sh("cd '%s' && " MPIRUN " -n 2 ./prog --all --threads 1 %s > all2.txt", dir, all2), 0);
  expect_same(dir, cs, "all2", false, false, "--all, 2 ranks");
  free(all), free(all2), free(ref), free(text);
  tu_free(c);
  cr_assert_eq(tu_sh("rm -rf '%s' '%s'", dir, store), 0);
  free(dir), free(store);
}

/* Jackknife groups that straddle the ranks' ranges: 5000 samples are 79
 * chunks in 32 groups of 2 or 3 chunks; 3 and 4 ranks split some groups. */
Test(mpi, jackknife_groups_across_ranks) {
  char *dir = tu_temp_dir("mpi"), *text = tu_read_file(tu_data("rv/dataset_loss.circ"), NULL);
  const Case *cs = &CASES[1];
  compile(text, dir, "plain", false, NULL, 0, NULL);
  compile(text, dir, "prog", true, NULL, 0, NULL);
  char *ref = file_args(cs, "ref", true);
  cr_assert_eq(tu_sh("cd '%s' && ./plain --samples 5000 --seed 4 %s > ref.txt", dir, ref), 0);
  for (int ranks = 3; ranks <= 4; ranks++) {
    char tag[16], what[32];
    snprintf(tag, sizeof tag, "r%d", ranks);
    snprintf(what, sizeof what, "%d ranks", ranks);
    char *args = file_args(cs, tag, true);
    cr_assert_eq(tu_sh("cd '%s' && " MPIRUN " -n %d ./prog --samples 5000 --seed 4 --threads 1 %s > %s.txt", dir, ranks,
                    args, tag), 0);
    expect_same(dir, cs, tag, true, false, what);
    free(args);
  }
  /* the jackknife ran: the report names its groups */
  cr_expect_eq(tu_sh("grep -q 'jackknife, 32 groups' '%s/r3.txt'", dir), 0);
  free(ref), free(text);
  cr_assert_eq(tu_sh("rm -rf '%s'", dir), 0);
  free(dir);
}

/* A streamed dataset that is wrong on rank 1's host (each rank runs in its
 * own directory with the same arguments): every rank stops, the message
 * names the file's problem and the rank, and no output file appears. */
Test(mpi, a_failing_rank_stops_every_rank) {
  char *dir = tu_temp_dir("mpi"), *store = tu_temp_dir("mpi");
  Comp *c = tu_comp();
  c->tensor_dir = store;
  Shape good = {2, {5, 3}}, bad = {2, {4, 3}};
  Tensor *rows = tensor_new(c, DT_F32, &good);
  for (int i = 0; i < 15; i++) tensor_set_f64(rows, i, (i * 7 % 11) - 3.5);
  const char *hash = store_write(c, rows);
  cr_assert(hash, "%s", tu_diags(c));
  cr_assert_eq(tu_sh("mkdir '%s/d0' '%s/d1'", dir, dir), 0);
  char *path;
  cr_assert(asprintf(&path, "%s/d0/rows.npy", dir) > 0);
  cr_assert(npy_save(c, rows, path));
  free(path);
  cr_assert(asprintf(&path, "%s/d1/rows.npy", dir) > 0);
  cr_assert(npy_save(c, tensor_new(c, DT_F32, &bad), path));
  free(path);
  char *text;
  cr_assert(asprintf(&text,
                     "'E' Cumulant\n"
                     "  'sq' Einsum a,a->\n"
                     "    'x' DiscreteVar\n"
                     "      'rows' [5,3] Array %.24s\n"
                     "      'p' [5] Scalar 0.2\n"
                     "    'x'\n",
                     hash) > 0);
  const char *streams[] = {"rows"};
  compile(text, dir, "prog", true, streams, 1, "/nonexistent-store");
  /* OMPI_COMM_WORLD_RANK picks the directory; the program's arguments are the same on both ranks */
  int code = tu_sh("cd '%s' && " MPIRUN " -n 2 sh -c 'cd d$OMPI_COMM_WORLD_RANK && exec ../prog --samples 500 --seed 3 "
                "--data rows=@rows.npy --output E=@e.npy' > out.txt 2> err.txt",
                dir);
  cr_expect_neq(code, 0, "a failing rank must fail the run");
  cr_expect_eq(tu_sh("grep -q 'wrong shape: expected \\[5,3\\], found \\[4,3\\]' '%s/err.txt'", dir), 0,
               "the failing rank's message is missing");
  cr_expect_eq(tu_sh("grep -q 'rank 1 of 2 failed' '%s/err.txt'", dir), 0, "the failing rank is not named");
  cr_expect_eq(tu_sh("test -e '%s/d0/e.npy' || test -e '%s/d1/e.npy'", dir, dir), 1, "a failed run wrote a file");
  /* the same command with good data on both hosts succeeds */
  cr_assert(asprintf(&path, "%s/d1/rows.npy", dir) > 0);
  cr_assert(npy_save(c, rows, path));
  free(path);
  cr_expect_eq(tu_sh("cd '%s' && " MPIRUN " -n 2 sh -c 'cd d$OMPI_COMM_WORLD_RANK && exec ../prog --samples 500 --seed 3 "
                  "--data rows=@rows.npy --output E=@e.npy' > out.txt 2> err.txt",
                  dir), 0);
  cr_expect_eq(tu_sh("test -e '%s/d0/e.npy' && ! test -e '%s/d1/e.npy'", dir, dir), 0, "rank 0 alone writes the output");
  free(text);
  tu_free(c);
  cr_assert_eq(tu_sh("rm -rf '%s' '%s'", dir, store), 0);
  free(dir), free(store);
}

/* Ranks started with different arguments (an MPMD command line) are refused
 * before anything runs; a usage error is printed once, by rank 0. */
Test(mpi, mismatched_arguments_and_usage_errors) {
  char *dir = tu_temp_dir("mpi"), *text = tu_read_file(tu_data("rv/dice_independent.circ"), NULL);
  compile(text, dir, "prog", true, NULL, 0, NULL);
  cr_expect_eq(tu_sh("cd '%s' && " MPIRUN " -n 1 ./prog --samples 100 --seed 1 --output 'E[d1*d3]=@e.npy' : "
                  "-n 1 ./prog --samples 100 --seed 2 --output 'E[d1*d3]=@e.npy' > out.txt 2> err.txt",
                  dir), 2);
  cr_expect_eq(tu_sh("grep -q 'rank 1 of 2 runs another program or other arguments than rank 0' '%s/err.txt'", dir), 0,
               "no message about the mismatch");
  cr_expect_eq(tu_sh("test -e '%s/e.npy'", dir), 1, "a refused run wrote a file");
  cr_expect_eq(tu_sh("cd '%s' && " MPIRUN " -n 3 ./prog --samples 0 2> err.txt", dir), 2);
  cr_expect_eq(tu_sh("test \"$(grep -c 'expects a positive number of samples' '%s/err.txt')\" = 1", dir), 0,
               "the usage error should be printed once");
  free(text);
  cr_assert_eq(tu_sh("rm -rf '%s'", dir), 0);
  free(dir);
}

/* circc --mpi: MPI only when asked, an expectation program only, and a clear
 * exit 4 naming the Debian packages when there is no mpicc. */
Test(mpi, circc_mpi_option) {
  char *dir = tu_temp_dir("mpi");
  const char *circ = tu_data("rv/dice_independent.circ");
  cr_assert_eq(tu_sh("cd '%s' && " CIRCC_BIN " -O1 '%s' -o plain && " CIRCC_BIN " -O1 --mpi '%s' -o prog", dir, circ, circ), 0);
  cr_expect_eq(tu_sh("ldd '%s/plain' | grep -q libmpi", dir), 1, "a program built without --mpi links MPI");
  cr_expect_eq(tu_sh("ldd '%s/prog' | grep -q libmpi", dir), 0, "a program built with --mpi does not link MPI");
  /* the non-MPI program started as 2 copies would do the whole run twice */
  cr_expect_eq(tu_sh("cd '%s' && " MPIRUN " -n 2 ./plain --samples 100 --output 'E[d1*d3]=@e.npy' 2> err.txt", dir), 2);
  cr_expect_eq(tu_sh("grep -q 'built without circc --mpi' '%s/err.txt' && ! test -e '%s/e.npy'", dir, dir), 0);
  cr_expect_eq(tu_sh("cd '%s' && MPICC=/nonexistent/mpicc " CIRCC_BIN " --mpi '%s' -o none 2> err.txt", dir, circ), 4);
  cr_expect_eq(tu_sh("grep -q 'libopenmpi-dev openmpi-bin' '%s/err.txt'", dir), 0, "the error does not name the packages");
  cr_expect_eq(tu_sh("test -e '%s/none'", dir), 1);
  cr_assert_eq(tu_sh("printf \"'y' Einsum a->\\n  'x' [3] Scalar 2\\n\" > '%s/det.circ'", dir), 0);
  cr_expect_eq(tu_sh("cd '%s' && " CIRCC_BIN " --mpi det.circ -o det 2> err.txt", dir), 2);
  cr_expect_eq(tu_sh("grep -q 'applies to expectation programs' '%s/err.txt'", dir), 0);
  cr_assert_eq(tu_sh("rm -rf '%s'", dir), 0);
  free(dir);
}
