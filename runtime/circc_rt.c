/* circc_rt.c — rt_main, the spine of the runtime (see circc_rt.h): checks
 * the generated model's description, then runs the first mode of its table
 * (rt_modes.h) whose `requested` says yes; -h / --help prints every mode's
 * help. Expectation programs (m->expect) have a table of their own, so the
 * other modes need not know about them. Needs only libc, libm and OpenMP. */
#include <stdbool.h>
#include <stdio.h>
#include "rt_core.h"
#include "rt_modes.h"

/* Asked in order; the last, the generic mode, is always requested. Generation
 * comes first: its options take precedence over the others'. */
static const rt_mode *const MODES[] = {&rt_mode_generate, &rt_mode_sample, &rt_mode_run};
static const rt_mode *const EXPECT_MODES[] = {&rt_mode_expect};
enum { NMODES = sizeof MODES / sizeof *MODES, NEXPECT_MODES = sizeof EXPECT_MODES / sizeof *EXPECT_MODES };

/* The generated model is trusted, but a bad descriptor must not overrun a buffer. */
static bool check_descs(const char *prog, const rt_tensor_desc *d, int n) {
  if (n < 0 || (n && !d)) {
    rt_error(prog, "internal error: bad tensor list");
    return false;
  }
  for (int i = 0; i < n; i++) {
    int64_t numel = 1;
    bool ok = d[i].name && d[i].rank >= 0 && d[i].rank <= RT_MAX_RANK && (d[i].dtype == RT_F32 || d[i].dtype == RT_I64);
    for (int k = 0; ok && k < d[i].rank; k++) {
      ok = d[i].shape[k] >= 0 && (d[i].shape[k] == 0 || numel <= INT64_MAX / d[i].shape[k]);
      numel *= ok ? d[i].shape[k] : 1;
    }
    if (!ok || numel != d[i].numel) {
      rt_error(prog, "internal error: bad descriptor of tensor %d ('%s')", i, d[i].name ? d[i].name : "");
      return false;
    }
  }
  return true;
}

int rt_main(const rt_model *m, int argc, char **argv) {
  const char *prog = rt_prog(m, argc, argv);
  int code = RT_EXIT_BAD_INPUT;
  if (!m->circc_version || !m->command_line || !m->source_hash || !m->run) {
    rt_error(prog, "internal error: the model lacks its version, command line, hash or run function");
  } else if (check_descs(prog, m->inputs, m->ninputs) && check_descs(prog, m->outputs, m->noutputs)) {
    const rt_mode *const *modes = m->expect ? EXPECT_MODES : MODES;
    int nmodes = m->expect ? NEXPECT_MODES : NMODES, k = 0;
    while (k + 1 < nmodes && !modes[k]->requested(argc, argv)) k++;
    code = modes[k]->main(m, argc, argv);
    if (code == RT_MODE_HELP) {   /* the generic mode's usage first */
      for (int i = nmodes - 1; i >= 0; i--) modes[i]->help(m, prog);
      code = RT_EXIT_OK;
    }
  }
  fflush(stdout);
  return code;
}
