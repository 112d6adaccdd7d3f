/* ops.c — `circc --ops FILE.c`: C implementations of GeneralFunctions that
 * circc does not know (README, "Custom functions"). Each file is parsed with
 * libclang's C API, the one place circc uses Clang tooling: it gives Clang's
 * own diagnostics for the file (at the user's file:line:col) and the syntax
 * tree, in which the functions marked by include/circc_op.h carry their
 * GeneralFunction name as an annotate attribute. Every marked function must
 * fit one of the forms (ir.h UserOpForm); one name has one implementation; a
 * write to a global variable is a warning (steps call the functions from
 * parallel loops, so results could depend on the thread count). All of it
 * happens before the circuit is parsed, so the parser can give user ops their
 * shapes. circc eval calls the functions from a shared object compiled with
 * $CC (ops_function). */
#include <clang-c/Index.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "circc.h"

/* libclang reads circc_op.h from memory (the copy embedded in circc, see
 * runtime/MANIFEST), at a path in a directory that exists nowhere else. */
#define HEADER_DIR "/circc-builtin-include"
#define HEADER_NAME "circc_op.h"

static const char FORMS[] =
    "float f(float), float f(float, float), void f(const float *x, float *y, int64_t n), or with "
    "CIRCC_OP_SHAPE(\"name\", \"rule\") void f(const float *const *in, const int64_t *const *shapes, int n_in, "
    "float *out)";

static const struct RuntimeFile *ops_header(void) {
  for (size_t i = 0; i < circc_runtime_nfiles; i++)
    if (!strcmp(circc_runtime_files[i].name, HEADER_NAME)) return &circc_runtime_files[i];
  ICE("%s is not embedded (runtime/MANIFEST)", HEADER_NAME);
}

static const char *take(Comp *c, CXString s) {
  const char *t = arena_strdup(&c->arena, clang_getCString(s) ? clang_getCString(s) : "");
  clang_disposeString(s);
  return t;
}

/* A libclang location as a circc Loc: the file name as the user gave it for
 * the file itself, and the column in Unicode scalars (circc's convention). */
typedef struct File {
  Comp *c;
  const char *path;      /* as given */
  const char *text;
  size_t len;
  CXTranslationUnit tu;
  UserOps *ops;
  int index;
  bool ok;
} File;

static Loc loc_of(File *f, CXSourceLocation where) {
  CXFile file;
  unsigned line, col, offset;
  clang_getExpansionLocation(where, &file, &line, &col, &offset);
  if (!file) return NO_LOC;
  Loc loc = {take(f->c, clang_getFileName(file)), (int)line, (int)col};
  if (clang_Location_isFromMainFile(where)) {
    loc.file = f->path;
    size_t start = offset >= col - 1 ? offset - (col - 1) : 0;
    int scalars = 1;
    for (size_t i = start; i < offset && i < f->len; i++) scalars += ((unsigned char)f->text[i] & 0xC0) != 0x80;
    loc.col = scalars;
  }
  return loc;
}

static Loc cursor_loc(File *f, CXCursor cur) { return loc_of(f, clang_getCursorLocation(cur)); }

/* Clang's diagnostics of the file as circc's. */
static void report_clang(File *f) {
  unsigned n = clang_getNumDiagnostics(f->tu);
  for (unsigned i = 0; i < n; i++) {
    CXDiagnostic d = clang_getDiagnostic(f->tu, i);
    Loc loc = loc_of(f, clang_getDiagnosticLocation(d));
    const char *msg = take(f->c, clang_getDiagnosticSpelling(d));
    switch (clang_getDiagnosticSeverity(d)) {
    case CXDiagnostic_Ignored: break;
    case CXDiagnostic_Note: diag_note(f->c, loc, "%s", msg); break;
    case CXDiagnostic_Warning: diag_warn(f->c, loc, "%s", msg); break;
    case CXDiagnostic_Error:
    case CXDiagnostic_Fatal:
      diag_error(f->c, loc, "%s", msg);
      f->ok = false;
      break;
    }
    clang_disposeDiagnostic(d);
  }
}

/* ---- signatures */

static CXType canon(CXType t) { return clang_getCanonicalType(t); }
static bool is_float(CXType t) { return canon(t).kind == CXType_Float; }
static bool is_int64(CXType t) {
  t = canon(t);
  return (t.kind == CXType_Long || t.kind == CXType_LongLong) && clang_Type_getSizeOf(t) == 8;
}
/* pointer to T where pointee_ok(T) and T's constness is `konst` */
static bool is_ptr_to(CXType t, bool (*pointee_ok)(CXType), bool konst) {
  t = canon(t);
  if (t.kind != CXType_Pointer) return false;
  CXType p = clang_getPointeeType(t);
  return pointee_ok(p) && (bool)clang_isConstQualifiedType(p) == konst;
}
static bool is_const_float_ptr(CXType t) { return is_ptr_to(t, is_float, true); }
static bool is_const_int64_ptr(CXType t) { return is_ptr_to(t, is_int64, true); }

static bool form_of(CXCursor fn, UserOpForm *form) {
  CXType t = clang_getCursorType(fn);
  if (canon(t).kind != CXType_FunctionProto || clang_isFunctionTypeVariadic(t)) return false;
  CXType r = clang_getResultType(t);
  int n = clang_getNumArgTypes(t);
  CXType a[4];
  for (int i = 0; i < n && i < 4; i++) a[i] = clang_getArgType(t, (unsigned)i);
  bool ret_void = canon(r).kind == CXType_Void;
  if (is_float(r) && n == 1 && is_float(a[0])) return *form = OP_UNARY, true;
  if (is_float(r) && n == 2 && is_float(a[0]) && is_float(a[1])) return *form = OP_BINARY, true;
  if (ret_void && n == 3 && is_const_float_ptr(a[0]) && is_ptr_to(a[1], is_float, false) && is_int64(a[2]))
    return *form = OP_ROW, true;
  if (ret_void && n == 4 && is_ptr_to(a[0], is_const_float_ptr, true) && is_ptr_to(a[1], is_const_int64_ptr, true) &&
      canon(a[2]).kind == CXType_Int && is_ptr_to(a[3], is_float, false))
    return *form = OP_GENERAL, true;
  return false;
}

/* ---- shape rules: `inK` or `[inK[AXIS], N, ...]` */

static void skip_space(const char **p) {
  while (**p == ' ') (*p)++;
}

static bool rule_int(const char **p, long long lo, long long hi, long long *v) {
  char *end;
  errno = 0;
  *v = strtoll(*p, &end, 10);
  if (end == *p || errno || *v < lo || *v > hi) return false;
  *p = end;
  return true;
}

static bool rule_child(const char **p, int *k) {
  long long v;
  if (strncmp(*p, "in", 2) || !(*p += 2, rule_int(p, 0, 1000, &v))) return false;
  *k = (int)v;
  return true;
}

static bool parse_rule(const char *s, UserShapeRule *r) {
  memset(r, 0, sizeof *r);
  const char *p = s;
  skip_space(&p);
  if (*p != '[') {
    r->rank = -1;
    if (!rule_child(&p, &r->in[0])) return false;
    r->nin = r->in[0] + 1;
    skip_space(&p);
    return *p == 0;
  }
  p++;
  skip_space(&p);
  if (*p == ']') {
    p++;
    skip_space(&p);
    return *p == 0;
  }
  for (;;) {
    if (r->rank == MAX_RANK) return false;
    int d = r->rank++;
    long long v;
    skip_space(&p);
    if (*p == 'i') {
      if (!rule_child(&p, &r->in[d]) || *p++ != '[' || !rule_int(&p, -MAX_RANK, MAX_RANK - 1, &v) || *p++ != ']')
        return false;
      r->axis[d] = (int)v;
      if (r->in[d] + 1 > r->nin) r->nin = r->in[d] + 1;
    } else {
      if (!rule_int(&p, 0, (long long)1 << 40, &v)) return false;
      r->in[d] = -1;
      r->size[d] = v;
    }
    skip_space(&p);
    if (*p == ',') {
      p++;
      continue;
    }
    if (*p++ != ']') return false;
    skip_space(&p);
    return *p == 0;
  }
}

/* ---- global writes */

/* The variable with global storage an assignment's target names (through
 * subscripts, members, dereferences, casts and parentheses), if any. */
typedef struct Target {
  CXCursor var;
  bool found;
} Target;

static enum CXChildVisitResult first_child(CXCursor cur, CXCursor parent, CXClientData data) {
  *(CXCursor *)data = cur;
  return CXChildVisit_Break;
}

static bool global_target(CXCursor e, CXCursor *var) {
  for (int depth = 0; depth < 64; depth++) {
    enum CXCursorKind k = clang_getCursorKind(e);
    if (k == CXCursor_DeclRefExpr) {
      CXCursor d = clang_getCursorReferenced(e);
      if (clang_getCursorKind(d) == CXCursor_VarDecl && clang_Cursor_hasVarDeclGlobalStorage(d) == 1) {
        *var = d;
        return true;
      }
      return false;
    }
    if (k != CXCursor_UnexposedExpr && k != CXCursor_ParenExpr && k != CXCursor_ArraySubscriptExpr &&
        k != CXCursor_MemberRefExpr && k != CXCursor_UnaryOperator && k != CXCursor_CStyleCastExpr)
      return false;
    CXCursor child = clang_getNullCursor();
    clang_visitChildren(e, first_child, &child);
    if (clang_Cursor_isNull(child)) return false;
    e = child;
  }
  return false;
}

/* The spelling of the first token of cur's extent at or after byte offset `from`. */
static const char *token_at(File *f, CXCursor cur, unsigned from, bool last) {
  CXToken *tok;
  unsigned n;
  clang_tokenize(f->tu, clang_getCursorExtent(cur), &tok, &n);
  const char *s = "";
  for (unsigned i = 0; i < n; i++) {
    unsigned off;
    clang_getSpellingLocation(clang_getTokenLocation(f->tu, tok[i]), NULL, NULL, NULL, &off);
    if (last ? i == n - 1 : off >= from) {
      s = take(f->c, clang_getTokenSpelling(f->tu, tok[i]));
      break;
    }
  }
  clang_disposeTokens(f->tu, tok, n);
  return s;
}

typedef struct Body {
  File *f;
  const char *function;
} Body;

static enum CXChildVisitResult find_writes(CXCursor cur, CXCursor parent, CXClientData data) {
  Body *b = data;
  File *f = b->f;
  enum CXCursorKind k = clang_getCursorKind(cur);
  bool write = k == CXCursor_CompoundAssignOperator;
  CXCursor target = clang_getNullCursor();
  clang_visitChildren(cur, first_child, &target);
  if (k == CXCursor_BinaryOperator && !clang_Cursor_isNull(target)) {
    unsigned end;
    clang_getSpellingLocation(clang_getRangeEnd(clang_getCursorExtent(target)), NULL, NULL, NULL, &end);
    write = !strcmp(token_at(f, cur, end, false), "=");
  }
  if (k == CXCursor_UnaryOperator) {
    const char *first = token_at(f, cur, 0, false), *last = token_at(f, cur, 0, true);
    write = !strcmp(first, "++") || !strcmp(first, "--") || !strcmp(last, "++") || !strcmp(last, "--");
  }
  CXCursor var;
  if (write && !clang_Cursor_isNull(target) && global_target(target, &var))
    diag_warn(f->c, cursor_loc(f, cur),
              "--ops function '%s' writes the global variable '%s': steps call it from parallel loops, so its "
              "results could depend on the thread count", b->function, take(f->c, clang_getCursorSpelling(var)));
  return CXChildVisit_Recurse;
}

/* ---- marked functions */

static enum CXChildVisitResult annotations(CXCursor cur, CXCursor parent, CXClientData data) {
  const char **m = data;
  if (clang_getCursorKind(cur) != CXCursor_AnnotateAttr) return CXChildVisit_Continue;
  CXString s = clang_getCursorSpelling(cur);
  const char *a = clang_getCString(s);
  if (a && !strncmp(a, "circc:op=", 9) && !m[0]) m[0] = strdup(a + 9);
  if (a && !strncmp(a, "circc:shape=", 12) && !m[1]) m[1] = strdup(a + 12);
  clang_disposeString(s);
  return CXChildVisit_Continue;
}

static void add_op(File *f, CXCursor cur, const char *name, const char *rule) {
  Comp *c = f->c;
  UserOps *ops = f->ops;
  const char *function = take(c, clang_getCursorSpelling(cur));
  Loc loc = cursor_loc(f, cur);
  GenFnSpec builtin;
  if (!*name) {
    diag_error(c, loc, "'%s' is marked CIRCC_OP(\"\"): the marker needs the GeneralFunction's name", function);
    f->ok = false;
    return;
  }
  if (genfn_parse(name, &builtin) && builtin.fn != GF_USER) {
    diag_error(c, loc, "'%s' is marked as GeneralFunction '%s', which is built into circc; an --ops function "
               "implements a GeneralFunction circc does not know", function, name);
    f->ok = false;
    return;
  }
  UserOp op = {.name = arena_strdup(&c->arena, name), .function = function, .file = f->index, .loc = loc};
  if (!form_of(cur, &op.form)) {
    diag_error(c, loc, "'%s' (marked as GeneralFunction '%s') has type '%s', which fits none of the forms of "
               "--ops functions: %s", function, name, take(c, clang_getTypeSpelling(clang_getCursorType(cur))), FORMS);
    f->ok = false;
    return;
  }
  if (op.form == OP_GENERAL && !rule) {
    diag_error(c, loc, "'%s' (marked as GeneralFunction '%s') is a general function: its marker must give the "
               "output shape, e.g. CIRCC_OP_SHAPE(\"%s\", \"in0\")", function, name, name);
    f->ok = false;
    return;
  }
  if (op.form != OP_GENERAL && rule) {
    diag_error(c, loc, "'%s' (marked as GeneralFunction '%s') has a shape rule but is not a general function; "
               "elementwise and row functions keep their input's shape (use CIRCC_OP)", function, name);
    f->ok = false;
    return;
  }
  if (rule) {
    op.rule_text = arena_strdup(&c->arena, rule);
    if (!parse_rule(rule, &op.shape)) {
      diag_error(c, loc, "'%s': shape rule '%s': expected inK (the shape of child K) or a list of sizes such as "
                 "[in0[0], in1[-1], 4]", function, rule);
      f->ok = false;
      return;
    }
  }
  for (int i = 0; i < ops->nops; i++)
    if (!strcmp(ops->op[i].name, op.name)) {
      diag_error(c, loc, "GeneralFunction '%s' has two --ops implementations: '%s' here and '%s'", name, function,
                 ops->op[i].function);
      diag_note(c, ops->op[i].loc, "'%s' is here", ops->op[i].function);
      f->ok = false;
      return;
    }
  UserOp *grown = ARENA_ARRAY(&c->arena, UserOp, ops->nops + 1);
  if (ops->nops) memcpy(grown, ops->op, sizeof(UserOp) * (size_t)ops->nops);
  grown[ops->nops++] = op;
  ops->op = grown;
  Body b = {f, function};
  clang_visitChildren(cur, find_writes, &b);
}

static enum CXChildVisitResult visit_top(CXCursor cur, CXCursor parent, CXClientData data) {
  File *f = data;
  if (clang_getCursorKind(cur) != CXCursor_FunctionDecl || !clang_Location_isFromMainFile(clang_getCursorLocation(cur)))
    return CXChildVisit_Continue;
  char *marks[2] = {NULL, NULL};
  clang_visitChildren(cur, annotations, marks);
  if (marks[0]) {
    if (clang_isCursorDefinition(cur)) add_op(f, cur, marks[0], marks[1]);
    else if (clang_Cursor_isNull(clang_getCursorDefinition(cur))) {
      diag_error(f->c, cursor_loc(f, cur), "'%s' is marked as GeneralFunction '%s' but not defined in this file",
                 take(f->c, clang_getCursorSpelling(cur)), marks[0]);
      f->ok = false;
    }
  }
  free(marks[0]);
  free(marks[1]);
  return CXChildVisit_Continue;
}

static bool load_file(Comp *c, CXIndex index, UserOps *ops, int i) {
  File f = {c, ops->files[i], NULL, 0, NULL, ops, i, true};
  char *text;
  size_t len;
  if (!load_text_file(c, f.path, "--ops file", &text, &len)) return false;
  f.text = arena_strndup(&c->arena, text, len);
  f.len = len;
  free(text);
  diag_add_source(c, f.path, f.text, f.len);
  const struct RuntimeFile *h = ops_header();
  struct CXUnsavedFile header = {HEADER_DIR "/" HEADER_NAME, (const char *)h->data, (unsigned long)h->len};
  const char *args[] = {"-xc", "-std=c11", "-D_POSIX_C_SOURCE=200809L", ("-I" HEADER_DIR)};
  enum CXErrorCode err = clang_parseTranslationUnit2(index, f.path, args, sizeof args / sizeof *args, &header, 1,
                                                     CXTranslationUnit_None, &f.tu);
  if (err != CXError_Success) {
    diag_error_class(c, DIAG_IO, NO_LOC, "--ops %s: libclang could not parse the file (error %d)", f.path, (int)err);
    return false;
  }
  report_clang(&f);
  clang_visitChildren(clang_getTranslationUnitCursor(f.tu), visit_top, &f);
  clang_disposeTranslationUnit(f.tu);
  return f.ok;
}

bool ops_load(Comp *c, const char *const *files, int n, UserOps *out) {
  memset(out, 0, sizeof *out);
  if (n == 0) return true;
  out->files = ARENA_ARRAY(&c->arena, const char *, n);
  for (int i = 0; i < n; i++) out->files[i] = arena_strdup(&c->arena, files[i]);
  out->nfiles = n;
  CXIndex index = clang_createIndex(0, 0);
  bool ok = true;
  for (int i = 0; i < n; i++) ok = load_file(c, index, out, i) && ok;
  clang_disposeIndex(index);
  if (ok) c->ops = out;
  return ok;
}

void user_op_missing(Comp *c, const Node *n) {
  const GenFnSpec *g = &n->u.gf;
  const UserOps *ops = c->ops;
  int len = g->user_name_len;
  if (!ops) {
    diag_error(c, n->loc, "%s is a Python-class GeneralFunction ('%s'); circc cannot run Python: give a C "
               "implementation of '%.*s' with --ops FILE.c (README: Custom functions)", node_label(c, n), g->text, len,
               g->text);
    return;
  }
  const char *have = "";
  for (int i = 0; i < ops->nops; i++)
    have = arena_printf(&c->arena, "%s%s'%s' (%s, %s:%d)", have, i ? ", " : "", ops->op[i].name,
                        ops->op[i].function, ops->op[i].loc.file, ops->op[i].loc.line);
  diag_error(c, n->loc, "%s: no --ops file implements GeneralFunction '%.*s'; %s %s", node_label(c, n), len, g->text,
             ops->nfiles == 1 ? "the file provides" : "the files provide", ops->nops ? have : "none");
}

/* ---- program files and circc eval */

const char *ops_program_file(Comp *c, int i) {
  const char *path = c->ops->files[i], *slash = strrchr(path, '/');
  return arena_printf(&c->arena, "ops%d_%s", i, slash ? slash + 1 : path);
}

static bool write_text(Comp *c, const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
    diag_error_class(c, DIAG_IO, NO_LOC, "cannot write '%s': %s", path, strerror(errno));
    return false;
  }
  return true;
}

/* circc eval's shared object: one source that includes every --ops file (as
 * the program does, so static functions work too) and a table of the marked
 * functions by op index. */
static bool open_shared_object(Comp *c, UserOps *ops) {
  const char *tmpdir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  char *dir = arena_printf(&c->arena, "%s/circc-ops-XXXXXX", tmpdir);
  if (!mkdtemp(dir)) {
    diag_error_class(c, DIAG_IO, NO_LOC, "cannot create a temporary directory in '%s' (TMPDIR): %s", tmpdir,
                     strerror(errno));
    return false;
  }
  const char *src = "/* circc eval: the --ops files and their functions by op index */\n";
  for (int i = 0; i < ops->nfiles; i++) {
    char *abs = realpath(ops->files[i], NULL);
    src = arena_printf(&c->arena, "%s#include \"%s\"\n", src, abs ? abs : ops->files[i]);
    free(abs);
  }
  src = arena_printf(&c->arena, "%svoid (*const circc_eval_ops[])(void) = {", src);
  for (int i = 0; i < ops->nops; i++) src = arena_printf(&c->arena, "%s(void (*)(void))%s, ", src, ops->op[i].function);
  src = arena_printf(&c->arena, "%s0};\n", src);
  const struct RuntimeFile *h = ops_header();
  const char *cc = getenv("CC") && *getenv("CC") ? getenv("CC") : "gcc";
  const char *so = arena_printf(&c->arena, "%s/ops.so", dir), *log = arena_printf(&c->arena, "%s/cc.log", dir);
  const char *cmd = arena_printf(&c->arena, "cd '%s' && %s -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -fno-trapping-math "
                                 "-fPIC -shared -I. -o ops.so ops.c -lm > cc.log 2>&1", dir, cc);
  bool ok = write_text(c, arena_printf(&c->arena, "%s/%s", dir, HEADER_NAME), h->data, h->len) &&
            write_text(c, arena_printf(&c->arena, "%s/ops.c", dir), src, strlen(src));
  if (ok) {
    int status = system(cmd);
    if (status != 0) {
      char *text = NULL;
      size_t len = 0;
      load_text_file(c, log, "compiler log", &text, &len);
      diag_error_class(c, DIAG_CC, NO_LOC, "circc eval: the C compiler failed on the --ops files (exit status %d):\n"
                       "  %s\n%s", WIFEXITED(status) ? WEXITSTATUS(status) : -1, cmd, text ? text : "");
      free(text);
      ok = false;
    }
  }
  if (ok && !(ops->dl = dlopen(so, RTLD_NOW | RTLD_LOCAL))) {
    diag_error_class(c, DIAG_CC, NO_LOC, "circc eval: cannot load the compiled --ops files: %s", dlerror());
    ok = false;
  }
  /* the mapping outlives the files */
  const char *files[] = {HEADER_NAME, "ops.c", "ops.so", "cc.log"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) unlink(arena_printf(&c->arena, "%s/%s", dir, files[i]));
  rmdir(dir);
  return ok;
}

UserOpFn ops_function(Comp *c, const UserOp *op) {
  UserOps *ops = c->ops;
  if (ops->dl_failed) return NULL;
  if (!ops->dl && !open_shared_object(c, ops)) {
    ops->dl_failed = true; /* reported once */
    return NULL;
  }
  UserOpFn const *table = dlsym(ops->dl, "circc_eval_ops");
  if (!table) ICE("circc_eval_ops missing from the --ops shared object");
  return table[op - ops->op];
}
