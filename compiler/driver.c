/* driver.c — the pipeline, one stage per line (design.md §1). Each stage
 * reads what the earlier ones left in the Compilation; after each the driver
 * may dump the IR (--dump STAGE) and check its invariants (--verify-each). */
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include "driver.h"
#include "outfile.h"
#include "progress.h"
#include "ptrmap.h"

static const char *const STAGE_NAMES[STAGE_COUNT] = {
    [STAGE_LOAD] = "load",         [STAGE_LIBRARY] = "library", [STAGE_PARSE] = "parse",     [STAGE_TENSORS] = "tensors",
    [STAGE_RESOLVE] = "resolve",   [STAGE_RV] = "rv",           [STAGE_SIMPLIFY] = "simplify", [STAGE_PLAN] = "plan",
    [STAGE_LOWER] = "lower",       [STAGE_FUSE] = "fuse",       [STAGE_SCHEDULE] = "schedule",
    [STAGE_MEMPLAN] = "memplan",
    [STAGE_EMIT] = "emit",
};

const char *stage_name(Stage s) { return s < STAGE_COUNT ? STAGE_NAMES[s] : "?"; }

int stage_from_name(const char *name) {
  for (int s = 0; s < STAGE_COUNT; s++)
    if (!strcmp(STAGE_NAMES[s], name)) return s;
  return -1;
}

/* The first node named `name` below the roots (depth first), NULL if none. */
static const Node *find_named(const NodeList *roots, const char *name) {
  PtrMap seen = {0};
  const Node *found = NULL;
  int cap = 64, n = 0;
  const Node **stack = malloc((size_t)cap * sizeof *stack);
  CHECK(stack);
  for (int i = roots->n - 1; i >= 0; i--) stack[n++] = roots->node[i];
  while (n && !found) {
    const Node *x = stack[--n];
    PtrMapEntry *e = ptrmap_get(&seen, x);
    if (e->flag) continue;
    e->flag = true;
    if (x->name && !strcmp(x->name, name)) found = x;
    if (n + x->nchild > cap) {
      cap = 2 * (n + x->nchild);
      CHECK((stack = realloc(stack, (size_t)cap * sizeof *stack)));
    }
    for (int k = x->nchild - 1; k >= 0; k--) stack[n++] = x->child[k];
  }
  free(stack);
  ptrmap_free(&seen);
  return found;
}

/* The top-level circuits the options choose (--output NAME), in file order.
 * A NAME that no top-level circuit has is a circuit error (exit 1) listing
 * the top-level names; an inner node of that name gets a note suggesting --tap.
 * In circc eval with --tap, --output may also name a tap, which evaluate()
 * checks once the taps exist: the top-level circuits named are kept, or every
 * one when no --output names one. */
static bool choose_outputs(Comp *c, const DriverOptions *o, NodeList *all, NodeList *chosen) {
  if (o->evaluate && o->ntaps) {
    for (int i = 0; i < all->n; i++)
      for (int j = 0; j < o->noutputs; j++)
        if (all->node[i]->name && !strcmp(all->node[i]->name, o->outputs[j])) {
          nodelist_push(c, chosen, all->node[i]);
          break;
        }
    if (!chosen->n) *chosen = *all;
    return true;
  }
  for (int i = 0; i < all->n; i++) {
    bool want = o->noutputs == 0;
    for (int j = 0; j < o->noutputs; j++) want |= all->node[i]->name && !strcmp(all->node[i]->name, o->outputs[j]);
    if (want) nodelist_push(c, chosen, all->node[i]);
  }
  bool ok = true;
  for (int j = 0; j < o->noutputs; j++) {
    bool found = false;
    for (int i = 0; i < all->n; i++) found |= all->node[i]->name && !strcmp(all->node[i]->name, o->outputs[j]);
    if (found) continue;
    diag_error(c, NO_LOC, "--output %s: no top-level circuit is named '%s'", o->outputs[j], o->outputs[j]);
    ok = false;
    char *names = NULL;
    for (int i = 0; i < all->n; i++)
      if (all->node[i]->name)
        names = names ? arena_printf(&c->arena, "%s, %s", names, all->node[i]->name) : arena_strdup(&c->arena, all->node[i]->name);
    diag_note(c, NO_LOC, "the top-level circuits are: %s", names ? names : "(none named)");
    const Node *inner = find_named(all, o->outputs[j]);
    if (inner)
      diag_note(c, inner->loc, "'%s' is an inner node: --tap %s makes it an extra output", o->outputs[j], o->outputs[j]);
  }
  return ok;
}

/* BLAKE3 of the circuit text, so a program's --info can tell which circuit it came from. */
static const char *source_hash(Comp *c, const SourceFile *src) {
  uint8_t h[32];
  blake3_hash(src->text, src->len, h);
  char *hex = arena_alloc(&c->arena, 65);
  for (int j = 0; j < 32; j++) snprintf(hex + 2 * j, 3, "%02x", h[j]);
  return hex;
}

static void report_simplify(const DriverOptions *o, const SimplifyStats *st) {
  if (!o->report) return;
  for (int i = 0; i < st->nrules; i++)
    if (st->fired[i]) fprintf(o->report, "simplify: %-32s fired %d times\n", st->rule_name[i], st->fired[i]);
}

/* The graphs the stages after rv compile: the program (an expectation
 * program's post circuit) and each pass of an expectation program. */
enum { DEFAULT_SAMPLE_BATCH = 32 };
static const int64_t DEFAULT_PASS_ARENA = (int64_t)1 << 30; /* what the default batch may take */
static int graph_count(const Compilation *cm) { return 1 + (cm->expect.present ? cm->expect.npasses : 0); }
static Program *graph_program(Compilation *cm, int g) { return g == 0 ? &cm->program : &cm->expect.pass[g - 1].program; }
static Kernels *graph_kernels(Compilation *cm, int g) { return g == 0 ? &cm->kernels : &cm->pass_kernels[g - 1]; }
/* Which graph a dump shows (nothing for a deterministic program's one graph). */
static void graph_header(FILE *f, const Compilation *cm, int g) {
  if (!cm->expect.present) return;
  if (g == 0) fprintf(f, "# post: the outputs from the cumulant estimates\n");
  else fprintf(f, "# pass %d: the cumulant arguments of %d samples\n", g - 1, cm->expect.batch);
}

/* emit: the program's C and weights. --dump emit prints the C (the weights go
 * nowhere); with build.output, build_program writes the sources and runs the C
 * compiler. */
static bool emit(Comp *c, const DriverOptions *o, Compilation *cm) {
  EmitOptions eo = o->emit;
  eo.source_hash = source_hash(c, cm->source);
  eo.expect = &cm->expect;
  eo.pass_kernels = cm->pass_kernels;
  if (o->lm) {
    void *blob;
    if (!tokenizer_build(c, o->lm, &blob, &eo.tokenizer_len) || !tokenizer_check_model(c, o->lm, blob, &cm->kernels))
      return false;
    eo.tokenizer = blob;
  }
  if (eo.vocab && !vocab_check_model(c, eo.vocab, &cm->kernels)) return false;
  if (o->dump & 1u << STAGE_EMIT) {
    FILE *sink = fopen("/dev/null", "wb");
    if (!sink) {
      diag_error_class(c, DIAG_IO, NO_LOC, "cannot open /dev/null for the weights of --dump emit");
      return false;
    }
    bool ok = emit_program(c, &cm->kernels, &eo, o->dump_to ? o->dump_to : stdout, sink);
    fclose(sink);
    if (!ok) return false;
  }
  return !o->build.output || build_program(c, &cm->kernels, &eo, &o->build);
}

/* Prints the IR after stage s: rust_circuit text for DAG stages, the kernel
 * listing for kernel stages (emit prints its C itself). */
static void dump(Comp *c, const DriverOptions *o, Compilation *cm, Stage s) {
  FILE *f = o->dump_to ? o->dump_to : stdout;
  switch (s) {
  case STAGE_LOAD: fwrite(cm->source->text, 1, cm->source->len, f); break;
  case STAGE_LIBRARY:
    if (cm->library.present) fwrite(cm->library.text, 1, cm->library.len, f);
    else fprintf(f, "# %s has no '# info:' line: no model library\n", cm->source->name);
    break;
  case STAGE_PARSE:
  case STAGE_TENSORS: dump_circuits(c, f, cm->tops.node, cm->tops.n); break;
  case STAGE_RESOLVE: dump_circuits(c, f, cm->program.outputs.node, cm->program.outputs.n); break;
  case STAGE_RV:
  case STAGE_SIMPLIFY:
  case STAGE_PLAN:
    for (int g = 0; g < graph_count(cm); g++) {
      graph_header(f, cm, g);
      dump_circuits(c, f, graph_program(cm, g)->outputs.node, graph_program(cm, g)->outputs.n);
    }
    break;
  case STAGE_LOWER:
  case STAGE_FUSE:
  case STAGE_SCHEDULE:
  case STAGE_MEMPLAN:
    for (int g = 0; g < graph_count(cm); g++) {
      graph_header(f, cm, g);
      dump_kernels(c, f, graph_kernels(cm, g), s == STAGE_MEMPLAN);
    }
    break;
  case STAGE_EMIT:
  case STAGE_COUNT: break;
  }
}

static bool verify(Comp *c, Compilation *cm, Stage s) {
  const char *name = stage_name(s);
  bool ok = true;
  switch (s) {
  case STAGE_LOAD:
  case STAGE_EMIT:
  case STAGE_COUNT: return true;
  case STAGE_LIBRARY: return verify_circuits(c, cm->library.refs.node, cm->library.refs.n, false, name);
  case STAGE_PARSE: return verify_circuits(c, cm->tops.node, cm->tops.n, false, name);
  case STAGE_TENSORS: return verify_circuits(c, cm->tops.node, cm->tops.n, true, name);
  case STAGE_RESOLVE: return verify_circuits(c, cm->program.outputs.node, cm->program.outputs.n, true, name);
  case STAGE_RV:
  case STAGE_SIMPLIFY:
  case STAGE_PLAN:
    for (int g = 0; g < graph_count(cm) && ok; g++)
      ok = verify_circuits(c, graph_program(cm, g)->outputs.node, graph_program(cm, g)->outputs.n, true, name);
    return ok;
  case STAGE_LOWER:
  case STAGE_FUSE:
  case STAGE_SCHEDULE:
  case STAGE_MEMPLAN:
    for (int g = 0; g < graph_count(cm) && ok; g++) ok = verify_kernels(c, graph_kernels(cm, g), s == STAGE_MEMPLAN, name);
    return ok;
  }
  return true;
}

static bool read_inputs(Comp *c, const DriverOptions *o, Compilation *cm);

/* Deeper than IR_MAX_DEPTH is a located error: no stage recurses per level
 * (ir_walk), so the limit bounds the work and the generated program of a
 * deep circuit, not circc's stack. */
static bool shallow_enough(Comp *c, const NodeList *roots, const char *when) {
  const Node *deepest;
  int64_t depth = ir_depth(c, roots->node, roots->n, &deepest);
  if (depth <= IR_MAX_DEPTH) return true;
  diag_error(c, deepest->loc, "%s is %lld levels deep%s; circc compiles circuits of at most %d levels",
             node_label(c, deepest), (long long)depth, when, IR_MAX_DEPTH);
  return false;
}

/* --tap and --patch after resolve (taps.c); circc eval's --patch NAME=@FILE
 * patches the nodes NAME matches. */
static bool apply_taps(Comp *c, const DriverOptions *o, Program *p) {
  if (!o->evaluate) return taps_apply(c, p, o->taps, o->ntaps, o->patches, o->npatches);
  const char **names = ARENA_ARRAY(&c->arena, const char *, o->neval_patches + 1);
  for (int i = 0; i < o->neval_patches; i++) names[i] = o->eval_patches[i].name;
  return taps_apply(c, p, o->taps, o->ntaps, names, o->neval_patches);
}
static bool evaluate(Comp *c, const DriverOptions *o, const Compilation *cm);

/* One stage on one graph (stages after rv compile every graph alike). */
static bool graph_stage(Comp *c, const DriverOptions *o, Compilation *cm, Stage s, int g) {
  Program *p = graph_program(cm, g);
  Kernels *k = graph_kernels(cm, g);
  switch (s) {
  case STAGE_SIMPLIFY: {
    SimplifyStats st = {0};
    if (!simplify_run(c, p->outputs.node, p->outputs.n, g == 0 ? &cm->simplify : &st)) return false;
    report_simplify(o, g == 0 ? &cm->simplify : &st);
    return true;
  }
  case STAGE_PLAN: return plan_einsums(c, p->outputs.node, p->outputs.n, o->report);
  case STAGE_LOWER:
    if (!lower_program(c, p, k)) return false;
    /* not in an expectation program (its runtime fills the inputs as fp32) nor
     * in a library (the caller passes its own float32 buffers each call) */
    if (!cm->expect.present && !o->build.emit_lib) lower_bf16_inputs(c, k);
    return true;
  case STAGE_FUSE: return fuse_epilogues(c, k);
  case STAGE_SCHEDULE:
    schedule_phases(k);
    return true;
  case STAGE_MEMPLAN:
    memplan_assign(k);
    if (o->report) dump_kernels(c, o->report, k, true);
    return true;
  default: ICE("stage %s is not per graph", stage_name(s));
  }
}

/* The default batch of an expectation program is the largest power of two up
 * to 32 whose passes' arenas fit DEFAULT_PASS_ARENA (arenas grow about
 * linearly with it). If the one just planned is too large, the stages from rv
 * run again from the resolved program with a smaller batch. */
static void smaller_default_batch(const DriverOptions *o, Compilation *cm) {
  if (!cm->expect.present || o->sample_batch > 0 || cm->sample_batch == 1) return;
  int64_t worst = 0;
  for (int j = 0; j < cm->expect.npasses; j++)
    if (cm->pass_kernels[j].arena_bytes > worst) worst = cm->pass_kernels[j].arena_bytes;
  if (worst <= DEFAULT_PASS_ARENA) return;
  int b = cm->sample_batch;
  while (b > 1 && (double)worst * b / cm->sample_batch > (double)DEFAULT_PASS_ARENA) b /= 2;
  if (o->report)
    fprintf(o->report, "rv: the passes need %lld bytes of arena for %d samples; compiling for %d\n", (long long)worst,
            cm->sample_batch, b);
  cm->sample_batch = b;
  cm->program = cm->resolved;
  cm->next = STAGE_RESOLVE; /* driver_run's loop goes on with rv */
}

/* One stage. The pipeline is the order of the cases. */
static bool run_stage(Comp *c, const DriverOptions *o, Compilation *cm, Stage s) {
  switch (s) {
  case STAGE_LOAD:
    if (o->path) {
      cm->source = load_source(c, o->path);
    } else {  /* text given in memory (tests): parse_text registers it for diagnostics */
      SourceFile *src = ARENA_NEW(&c->arena, SourceFile);
      *src = (SourceFile){o->text_name, o->text, o->text_len};
      cm->source = src;
    }
    return cm->source != NULL && ops_load(c, o->ops_files, o->nops_files, &cm->ops);
  case STAGE_LIBRARY: return model_library(c, cm->source, &cm->library);
  case STAGE_PARSE: {
    NodeList all = {0};
    const RefCircuits *refs = cm->library.present ? &cm->library.refs : NULL;
    bool ok = parse_text(c, cm->source->name, cm->source->text, cm->source->len, refs, &all);
    ok = model_library_check(c, &cm->library, &all) && ok;
    if (ok && o->bind_tokens) ok = bind_tokens(c, cm->source, &cm->library, &all);
    return ok && choose_outputs(c, o, &all, &cm->tops) && shallow_enough(c, &cm->tops, "");
  }
  case STAGE_TENSORS: return load_tensors(c, cm->tops.node, cm->tops.n);
  case STAGE_RESOLVE:
    return (!o->evaluate || read_inputs(c, o, cm)) && resolve_program(c, &cm->tops, &cm->program) &&
           shallow_enough(c, &cm->program.outputs, " after module substitution") && apply_taps(c, o, &cm->program) &&
           (o->evaluate || positions_check(c, &cm->program));
  case STAGE_RV:
    if (!cm->sample_batch) {
      cm->resolved = cm->program;
      cm->sample_batch = o->sample_batch > 0 ? o->sample_batch : DEFAULT_SAMPLE_BATCH;
    }
    if (!rv_lower(c, &cm->program, cm->sample_batch, &cm->expect)) return false;
    if (cm->expect.present && (o->ntaps || o->npatches)) {
      diag_error_class(c, DIAG_USAGE, NO_LOC, "--tap and --patch are not supported in expectation programs "
                                              "(circuits with DiscreteVars and Cumulants)");
      return false;
    }
    if (cm->expect.present) cm->pass_kernels = ARENA_ARRAY(&c->arena, Kernels, cm->expect.npasses + 1);
    return true;
  case STAGE_SIMPLIFY:
  case STAGE_PLAN:
  case STAGE_LOWER:
  case STAGE_FUSE:
  case STAGE_SCHEDULE:
  case STAGE_MEMPLAN:
    for (int g = 0; g < graph_count(cm); g++)
      if (!graph_stage(c, o, cm, s, g)) return false;
    if (s == STAGE_MEMPLAN) smaller_default_batch(o, cm);
    return true;
  case STAGE_EMIT: return emit(c, o, cm);
  case STAGE_COUNT: break;
  }
  return true;
}

bool driver_run(Comp *c, const DriverOptions *o, Compilation *cm) {
  Stage last = o->evaluate ? STAGE_RESOLVE : o->last;
  progress_init(o->verbose);
  for (; cm->next <= last; cm->next++) {
    Stage s = cm->next;
    if (diag_error_count(c)) return false;
    progress_begin(stage_name(s));
    bool ok = run_stage(c, o, cm, s);
    progress_end();
    if (!ok) return false;
    if (o->verify_each && !verify(c, cm, s)) return false;
    if (o->dump & 1u << s) dump(c, o, cm, s);
  }
  if (o->evaluate && !diag_error_count(c)) {
    progress_begin("eval");
    evaluate(c, o, cm);
    progress_end();
  }
  return !diag_error_count(c);
}

/* ------------------------------------------------------------ circc eval */

/* Prints t with numpy-like nesting. */
static void print_values(FILE *f, const Tensor *t, int dim, int64_t *offset) {
  if (dim == t->shape.rank) {
    fprintf(f, "%.9g", tensor_get_f64(t, (*offset)++));
    return;
  }
  fputc('[', f);
  for (int64_t i = 0; i < t->shape.dim[dim]; i++) {
    if (i) fputs(dim + 1 == t->shape.rank ? ", " : ",\n ", f);
    print_values(f, t, dim + 1, offset);
  }
  fputc(']', f);
}

/* Converts an evaluated (f64) value to the output node's dtype for saving. */
static Tensor *to_dtype(Comp *c, const Tensor *v, DType dt) {
  if (dt == DT_UNKNOWN || dt == DT_F16 || dt == DT_BF16) dt = DT_F32;
  Tensor *t = tensor_new(c, dt, &v->shape);
  int64_t n = shape_numel(&v->shape);
  for (int64_t i = 0; i < n; i++) tensor_set_f64(t, i, tensor_get_f64(v, i));
  return t;
}

/* circc eval, before resolve: reads every --input; their shapes give the
 * symbolic sizes of the free Symbols they are for (no -D needed). */
static bool read_inputs(Comp *c, const DriverOptions *o, Compilation *cm) {
  Loc cli = {"command line", 0, 0};
  cm->eval_values = ARENA_ARRAY(&c->arena, Tensor *, o->neval_inputs + 1);
  for (int i = 0; i < o->neval_inputs; i++) {
    const Binding *b = &o->eval_inputs[i];
    if (!(cm->eval_values[i] = npy_load(c, b->path, cli))) continue;
    sizes_from_input(c, cm->tops.node, cm->tops.n, b->name, b->path, &cm->eval_values[i]->shape);
  }
  return !diag_error_count(c);
}

/* Binds each --input to its free Symbol; false after a diagnostic. */
static void bind_inputs(Comp *c, const DriverOptions *o, const Compilation *cm, Eval *e) {
  const Program *p = &cm->program;
  for (int i = 0; i < o->neval_inputs; i++) {
    const Binding *b = &o->eval_inputs[i];
    const Node *sym = NULL;
    for (int j = 0; j < p->inputs.n; j++)
      if (p->inputs.node[j]->name && !strcmp(p->inputs.node[j]->name, b->name)) sym = p->inputs.node[j];
    if (!sym && o->noutputs) {
      diag_warn(c, NO_LOC, "--input %s: not used by the selected outputs; ignored", b->name);
      continue;
    }
    if (!sym) {
      diag_error_class(c, DIAG_USAGE, NO_LOC, "--input %s: the circuit has no free symbol named '%s'", b->name, b->name);
      for (int j = 0; j < p->inputs.n; j++)
        diag_note(c, p->inputs.node[j]->loc, "free symbol %s %s", node_label(c, p->inputs.node[j]),
                  shape_str(c, &p->inputs.node[j]->shape));
      continue;
    }
    const Tensor *t = cm->eval_values[i];
    if (!shape_eq(&t->shape, &sym->shape)) {
      diag_error_class(c, DIAG_IO, NO_LOC, "--input %s: %s has shape %s but symbol '%s' needs %s", b->name, b->path,
                       shape_str(c, &t->shape), b->name, shape_str(c, &sym->shape));
      continue;
    }
    eval_bind(e, sym, t);
  }
}

/* The reference evaluator on the resolved program: --output files and/or the
 * values printed (--all: exact expectations). Everything is evaluated first,
 * so an error leaves no file. */
static bool evaluate(Comp *c, const DriverOptions *o, const Compilation *cm) {
  const Program *p = &cm->program;
  Eval *e = eval_new(c);
  bind_inputs(c, o, cm, e);
  Loc cli = {"command line", 0, 0};
  Tensor **patch_value = ARENA_ARRAY(&c->arena, Tensor *, o->neval_patches + 1);
  for (int i = 0; i < o->neval_patches; i++) patch_value[i] = npy_load(c, o->eval_patches[i].path, cli);
  for (int k = 0; k < p->npatches; k++) {
    const Binding *b = &o->eval_patches[p->patch_source[k]];
    const Tensor *t = patch_value[p->patch_source[k]];
    const Shape *want = &p->patch_nodes[k]->shape;
    if (t && !shape_eq(&t->shape, want))
      diag_error_class(c, DIAG_IO, NO_LOC, "--patch %s: %s has shape %s but node %s has shape %s", b->name, b->path,
                       shape_str(c, &t->shape), p->patch_names[k], shape_str(c, want));
    else if (t) eval_bind(e, p->patch_nodes[k], t);
  }
  for (int i = 0; i < o->noutputs; i++) {   /* every --output NAME, with a file or without */
    bool found = false;
    for (int j = 0; j < p->outputs.n; j++) found |= !strcmp(p->output_names[j], o->outputs[i]);
    if (!found)
      diag_error(c, NO_LOC, "--output %s: neither a top-level circuit nor a tap", o->outputs[i]);   /* exit 1 */
  }
  RvGroups groups;
  if (o->eval_all && rv_groups(c, p->outputs.node, p->outputs.n, &groups))
    eval_expectations(e, &groups, o->eval_max_all > 0 ? o->eval_max_all : 1000000);
  if (diag_error_count(c)) {
    eval_free(e);
    return false;
  }
  /* printed: with --print every output, else those without a file: all of
   * them without --output, those named by --output NAME (no file) with it */
  Tensor **value = ARENA_ARRAY(&c->arena, Tensor *, p->outputs.n);
  const Binding **dest = ARENA_ARRAY(&c->arena, const Binding *, p->outputs.n);
  bool *print = ARENA_ARRAY(&c->arena, bool, p->outputs.n);
  for (int j = 0; j < p->outputs.n; j++) {
    bool named = false;
    for (int i = 0; i < o->noutputs; i++) named |= !strcmp(p->output_names[j], o->outputs[i]);
    for (int i = 0; i < o->neval_outputs; i++)
      if (!strcmp(p->output_names[j], o->eval_outputs[i].name)) dest[j] = &o->eval_outputs[i];
    print[j] = o->eval_print || (!dest[j] && (o->noutputs == 0 || named));
    if (dest[j] || print[j]) value[j] = eval_node(e, p->outputs.node[j]);
  }
  /* --output files, all or none: each to its temporary, then all renamed;
   * devices and FIFOs are written last (outfile.h) */
  OutFile *of = ARENA_ARRAY(&c->arena, OutFile, p->outputs.n);
  for (int j = 0; j < p->outputs.n && !diag_error_count(c); j++)
    if (dest[j] && !(of[j] = outfile_begin(c, dest[j]->path)).through)
      npy_write_staged(c, to_dtype(c, value[j], p->outputs.node[j]->dtype), &of[j]);
  for (int j = 0; j < p->outputs.n; j++)
    if (dest[j] && of[j].write_to && !of[j].through) {
      if (diag_error_count(c)) outfile_abort(&of[j]);
      else if (!outfile_commit(&of[j], NULL))
        diag_error_class(c, DIAG_IO, NO_LOC, "cannot write %s: %s", dest[j]->path, strerror(errno));
    }
  for (int j = 0; j < p->outputs.n && !diag_error_count(c); j++)
    if (dest[j] && of[j].through) npy_write_staged(c, to_dtype(c, value[j], p->outputs.node[j]->dtype), &of[j]);
  for (int j = 0; j < p->outputs.n && !diag_error_count(c); j++) {
    const Node *n = p->outputs.node[j];
    if (value[j] && print[j]) {
      printf("%s %s %s\n", p->output_names[j], shape_str(c, &n->shape),
             dtype_name(n->dtype == DT_UNKNOWN ? DT_F32 : n->dtype));
      int64_t off = 0;
      print_values(stdout, value[j], 0, &off);
      fputc('\n', stdout);
    }
  }
  eval_free(e);
  return !diag_error_count(c);
}

/* ------------------------------------------------------------ circc store */

bool driver_store(Comp *c, const char *const *files, int n) {
  for (int i = 0; i < n; i++) {
    Loc loc = {files[i], 0, 0};
    Tensor *t = npy_load(c, files[i], loc);
    const char *hash = t ? store_write(c, t) : NULL;
    if (hash) printf("%s  %s\n", hash, files[i]);
  }
  return !diag_error_count(c);
}
