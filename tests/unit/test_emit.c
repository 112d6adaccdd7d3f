/* test_emit.c — properties of the generated C itself: the same input gives
 * byte-identical C and weights, and the program directory written by
 * `--emit c` compiles warning-free with -Wall -Wextra -Werror under gcc and
 * clang (design.md, conventions.md "Files"). Values are checked elsewhere
 * (test_codegen.c). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "kernel.h"
#include "testutil.h"

/* Runs the compile pipeline of main.c on the circuits of `path` (all
 * top-level circuits, or just `output`), up to the kernel graph. */
static bool pipeline(Comp *c, const char *path, const char *output, Kernels *k) {
  NodeList tops = {0}, chosen = {0};
  Program p;
  if (!tu_parse_file(c, path, &tops)) return false;
  for (int i = 0; i < tops.n; i++)
    if (!output || (tops.node[i]->name && !strcmp(tops.node[i]->name, output))) nodelist_push(c, &chosen, tops.node[i]);
  return resolve_program(c, &chosen, &p) && simplify_run(c, p.outputs.node, p.outputs.n, NULL) &&
         plan_einsums(c, p.outputs.node, p.outputs.n, NULL) && lower_program(c, &p, k) &&
         (memplan_assign(c, k), true);
}

static char *emit_to_memory(const char *path, const char *output, size_t *len, char **blob, size_t *blob_len) {
  Comp *c = tu_comp();
  Kernels k;
  cr_assert(pipeline(c, path, output, &k), "%s", tu_diags(c));
  char *text = NULL;
  FILE *f = open_memstream(&text, len), *w = open_memstream(blob, blob_len);
  EmitOptions eo = {.name = "prog", .command_line = "circc test", .source_hash = "0"};
  cr_assert(emit_program(c, &k, &eo, f, w), "%s", tu_diags(c));
  fclose(f);
  fclose(w);
  tu_free(c);
  return text;
}

static const char *CIRCUITS[][2] = {
    {"circ/gpt2_block_module.circ", "b0"},
    {"circ/all_steps.circ", NULL},
    {"circ/e1_sharing.circ", NULL},
    {"circ/e10_rearrange.circ", NULL},
};

Test(emit, same_input_gives_identical_c_and_weights) {
  for (size_t i = 0; i < sizeof CIRCUITS / sizeof *CIRCUITS; i++) {
    size_t n1, n2, b1, b2;
    char *w1, *w2;
    char *t1 = emit_to_memory(tu_data(CIRCUITS[i][0]), CIRCUITS[i][1], &n1, &w1, &b1);
    char *t2 = emit_to_memory(tu_data(CIRCUITS[i][0]), CIRCUITS[i][1], &n2, &w2, &b2);
    cr_assert(n1 == n2 && !memcmp(t1, t2, n1), "%s: generated C differs between two runs", CIRCUITS[i][0]);
    cr_assert(b1 == b2 && !memcmp(w1, w2, b1), "%s: weights blob differs between two runs", CIRCUITS[i][0]);
    cr_assert(strstr(t1, "#pragma omp") || n1 > 0);
    free(t1), free(t2), free(w1), free(w2);
  }
}

static bool have(const char *cc) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", cc);
  return system(cmd) == 0;
}

Test(emit, program_directory_compiles_warning_free_with_gcc_and_clang) {
  for (size_t i = 0; i < sizeof CIRCUITS / sizeof *CIRCUITS; i++) {
    Comp *c = tu_comp();
    Kernels k;
    cr_assert(pipeline(c, tu_data(CIRCUITS[i][0]), CIRCUITS[i][1], &k), "%s", tu_diags(c));
    char dir[] = "/tmp/circc-emit-XXXXXX";
    cr_assert(mkdtemp(dir));
    char *out = arena_printf(&c->arena, "%s/prog.d", dir);
    EmitOptions eo = {.name = "prog", .command_line = "circc test", .source_hash = "0"};
    BuildOptions bo = {.output = out, .emit_c_only = true};
    cr_assert(build_program(c, &k, &eo, &bo), "%s", tu_diags(c));
    const char *compilers[] = {"gcc", "clang"};
    for (int j = 0; j < 2; j++) {
      if (!have(compilers[j])) {
        cr_log_warn("%s not installed; skipped", compilers[j]);
        continue;
      }
      char *cmd = arena_printf(&c->arena,
                               "cd %s && %s -std=c11 -O2 -fopenmp -Wall -Wextra -Wshadow -Werror -c model.c circc_rt.c "
                               "rt_sample.c 2>&1 && %s -c weights.S && make -s CC=%s >/dev/null 2>&1 && test -x prog",
                               out, compilers[j], compilers[j], compilers[j]);
      cr_assert(system(cmd) == 0, "%s: the generated program does not compile cleanly with %s (%s)", CIRCUITS[i][0],
                compilers[j], cmd);
    }
    char *rm = arena_printf(&c->arena, "rm -rf %s", dir);
    cr_assert(system(rm) == 0);
    tu_free(c);
  }
}

Test(emit, program_sources_go_to_tmpdir) {
  /* circc builds in $TMPDIR: an unusable one is a located I/O error, not a
   * silent fallback to /tmp */
  Comp *c = tu_comp();
  Kernels k;
  cr_assert(pipeline(c, tu_data("circ/e1_sharing.circ"), NULL, &k), "%s", tu_diags(c));
  const char *old = getenv("TMPDIR");
  char *saved = old ? strdup(old) : NULL;
  setenv("TMPDIR", "/nonexistent-circc-tmpdir", 1);
  EmitOptions eo = {.name = "prog", .command_line = "circc test", .source_hash = "0"};
  BuildOptions bo = {.output = "/tmp/circc-tmpdir-test-prog"};
  bool ok = build_program(c, &k, &eo, &bo);
  if (saved) setenv("TMPDIR", saved, 1);
  else unsetenv("TMPDIR");
  free(saved);
  cr_assert(!ok);
  cr_assert(strstr(tu_diags(c), "/nonexistent-circc-tmpdir"), "%s", tu_diags(c));
  cr_assert(access("/tmp/circc-tmpdir-test-prog", F_OK) != 0, "no program may be written");
  tu_free(c);
}

/* gcc must compile the last step of a long program like the first: called
 * from a chain of `if (err) return err;` its static estimate made later steps
 * ever less likely and compiled their loops as cold code, unvectorised (the
 * steps are called through a table now). 150 softmax steps, then a tanh loop
 * that must be reported vectorised. */
Test(emit, late_steps_are_optimised_like_early_ones) {
  if (!have("gcc")) {
    cr_log_warn("gcc not installed; skipped");
    return;
  }
  char dir[] = "/tmp/circc-late-XXXXXX";
  cr_assert(mkdtemp(dir));
  Comp *c = tu_comp();
  char *circ = arena_printf(&c->arena, "%s/chain.circ", dir);
  FILE *f = fopen(circ, "w");
  cr_assert(f);
  fprintf(f, "'s0' GeneralFunction softmax\n  'x' [256] Symbol\n");
  for (int i = 1; i < 150; i++) fprintf(f, "'s%d' GeneralFunction softmax\n  's%d'\n", i, i - 1);
  fprintf(f, "'last' GeneralFunction tanh\n  's149'\n");
  fclose(f);
  Kernels k;
  cr_assert(pipeline(c, circ, NULL, &k), "%s", tu_diags(c));
  EmitOptions eo = {.name = "prog", .command_line = "circc test", .source_hash = "0"};
  BuildOptions bo = {.output = arena_printf(&c->arena, "%s/prog.d", dir), .emit_c_only = true};
  cr_assert(build_program(c, &k, &eo, &bo), "%s", tu_diags(c));
  char *cmd = arena_printf(&c->arena,
                           "cd %s/prog.d && gcc -std=c11 -O3 -mavx2 -mfma -fno-trapping-math -fopenmp -c model.c "
                           "-fopt-info-vec-optimized 2>report.txt",
                           dir);
  cr_assert(system(cmd) == 0, "%s failed", cmd);
  /* the line of the last step's loop body: the one that calls fn_tanh */
  f = fopen(arena_printf(&c->arena, "%s/prog.d/model.c", dir), "r");
  cr_assert(f);
  char line[1024];
  int n = 0, tanh_line = 0;
  while (fgets(line, sizeof line, f)) {
    n++;
    if (strstr(line, "= fn_tanh(")) tanh_line = n;
  }
  fclose(f);
  cr_assert(tanh_line > 0, "no fn_tanh loop in the program");
  f = fopen(arena_printf(&c->arena, "%s/prog.d/report.txt", dir), "r");
  cr_assert(f);
  bool vectorised = false;
  while (fgets(line, sizeof line, f)) {
    int ln;
    if (sscanf(line, "model.c:%d:", &ln) == 1 && strstr(line, "loop vectorized") && ln >= tanh_line - 2 && ln <= tanh_line)
      vectorised = true;
  }
  fclose(f);
  cr_expect(vectorised, "gcc did not vectorise the last step's loop (model.c:%d)", tanh_line);
  cr_assert(system(arena_printf(&c->arena, "rm -rf %s", dir)) == 0);
  tu_free(c);
}
