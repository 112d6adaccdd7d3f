/* build.c — turns the kernel graph into an executable: writes model.c
 * (emit.c), the weights blob and the assembler stub that links it with
 * `.incbin`, the runtime sources (embedded in circc at build time) and a
 * Makefile into a directory, then runs the C compiler there. The executable is
 * renamed into place only when the compiler succeeded, so a failed build
 * leaves nothing at the output path. With --mpi (expectation programs only)
 * the compiler is mpicc ($MPICC), -DCIRCC_MPI is defined and the MANIFEST's
 * "mpi:" files (the MPI transport, runtime/rt_reduce_mpi.c) are added.
 * --emit lib builds a shared library instead: lib.c (written here) includes
 * model.c without its main and defines the C API of runtime/circc_lib.h under
 * a prefix made from the output's name; the MANIFEST's "lib:" files
 * (runtime/rt_lib.c) are added; everything is compiled -fPIC
 * -fvisibility=hidden and a version script exports the API alone, so several
 * libraries load into one process. The header (the output with its extension
 * replaced by .h) is renamed into place just before the library. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <ctype.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "circc.h"
#include "kernel.h"
#include "outfile.h"
#include "progress.h"


/* .lrodata, x86-64's large read-only data, which the linker places after
 * every other section: the program's code and data stay within the small
 * code model's 2 GiB of each other whatever the size of the weights, and the
 * one reference to circc_weights (its start) is near too. */
static const char WEIGHTS_S[] =
    "/* links weights.bin into the program's large read-only data */\n"
    "  .section .lrodata,\"a\",@progbits\n"
    "  .balign 64\n"
    "  .globl circc_weights\n"
    "  .type circc_weights, @object\n"
    "circc_weights:\n"
    "  .incbin \"weights.bin\"\n"
    "  .section .note.GNU-stack,\"\",@progbits\n";

/* the tokenizer table of programs compiled with --lm (compiler/back/tokenizer.c) */
static const char TOKENIZER_S[] =
    "/* links tokenizer.bin (the tokenizer table, runtime/rt_bpe.c) into the program's read-only data */\n"
    "  .section .rodata\n"
    "  .balign 64\n"
    "  .globl circc_tokenizer\n"
    "  .type circc_tokenizer, @object\n"
    "circc_tokenizer:\n"
    "  .incbin \"tokenizer.bin\"\n"
    "  .section .note.GNU-stack,\"\",@progbits\n";

static bool is_c_source(const char *name) {
  size_t n = strlen(name);
  return n > 2 && !strcmp(name + n - 2, ".c");
}

/* --emit lib: position-independent; only the API exported; the runtime's
 * unused parts (rt_main and the modes) dropped by --gc-sections. */
static const char LIB_CFLAGS[] = " -fPIC -fvisibility=hidden -ffunction-sections -fdata-sections";

static bool wanted(const struct RuntimeFile *f, const BuildOptions *bo) {
  return (!f->mpi || bo->mpi) && (!f->lib || bo->emit_lib);
}

/* --emit lib: the API's prefix, a C identifier made from the output's file
 * name up to its first '.' (runtime/circc_lib.h), or NULL after a usage error. */
static const char *lib_prefix(Comp *c, const char *output) {
  const char *base = strrchr(output, '/') ? strrchr(output, '/') + 1 : output;
  size_t n = strcspn(base, ".");
  char *p = n ? arena_printf(&c->arena, "%s%.*s", isdigit((unsigned char)base[0]) ? "m_" : "", (int)n, base)
              : arena_strdup(&c->arena, "model");
  for (char *q = p; *q; q++)
    if (!(isascii((unsigned char)*q) && (isalnum((unsigned char)*q) || *q == '_'))) *q = '_';
  if (!strcmp(p, "circc")) {   /* circc_info and circc_tensor are the API's types */
    diag_error_class(c, DIAG_USAGE, NO_LOC, "--emit lib: the output '%s' would give the API prefix 'circc', which "
                     "its types use; name the library otherwise", output);
    return NULL;
  }
  return p;
}

/* --emit lib: the header's path, the output's with its extension (if any) replaced by .h. */
static const char *lib_header_path(Comp *c, const char *output) {
  const char *base = strrchr(output, '/') ? strrchr(output, '/') + 1 : output, *dot = strrchr(base, '.');
  size_t n = dot && dot != base ? (size_t)(dot - output) : strlen(output);
  return arena_printf(&c->arena, "%.*s.h", (int)n, output);
}

/* The embedded runtime file called name. */
static const struct RuntimeFile *runtime_file(const char *name) {
  for (size_t i = 0; i < circc_runtime_nfiles; i++)
    if (!strcmp(circc_runtime_files[i].name, name)) return &circc_runtime_files[i];
  return NULL;
}

/* The program's runtime files whose name is (with_c) or is not a .c source, space-separated. */
static const char *runtime_names(Comp *c, const BuildOptions *bo, bool with_c) {
  const char *list = "";
  for (size_t i = 0; i < circc_runtime_nfiles; i++)
    if (wanted(&circc_runtime_files[i], bo) && is_c_source(circc_runtime_files[i].name) == with_c)
      list = arena_printf(&c->arena, "%s %s", list, circc_runtime_files[i].name);
  return list;
}

/* The sources the C compiler gets (weights.S / tokenizer.S: the blobs; a
 * library's lib.c includes model.c), largest first: they compile in
 * parallel, each taken by the next free process. */
static const char *program_sources(Comp *c, const EmitOptions *eo, const BuildOptions *bo) {
  return arena_printf(&c->arena, "%s weights.S%s%s", bo->emit_lib ? "lib.c" : "model.c",
                      eo->tokenizer_len ? " tokenizer.S" : "", runtime_names(c, bo, true));
}

/* name with its extension (.c, .S) replaced by .o */
static const char *object_name(Comp *c, const char *name, size_t len) {
  const char *dot = memchr(name, '.', len);
  return arena_printf(&c->arena, "%.*s.o", (int)(dot ? (size_t)(dot - name) : len), name);
}

/* The objects of program_sources, in its order, space-separated. */
static const char *program_objects(Comp *c, const char *sources) {
  const char *list = "";
  for (const char *p = sources; *p;) {
    size_t n = strcspn(p, " ");
    if (n) list = arena_printf(&c->arena, "%s%s%s", list, *list ? " " : "", object_name(c, p, n));
    p += n + (p[n] == ' ');
  }
  return list;
}

/* Processes for the compile: the CPUs this process may run on. */
static int build_jobs(void) {
#ifdef CPU_COUNT
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

static bool write_file(Comp *c, const char *dir, const char *name, const void *data, size_t len) {
  char *path = arena_printf(&c->arena, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
    diag_error_class(c, DIAG_IO, NO_LOC, "cannot write '%s': %s", path, strerror(errno));
    return false;
  }
  return true;
}

/* The C API's functions (runtime/circc_lib.h): name, return type, parameters,
 * and the rt_lib.c call that defines it. */
static const struct { const char *name, *type, *params, *call; } LIB_API[] = {
    {"init", "circc_ctx *", "void", "rt_lib_init(&model)"},
    {"free", "void ", "circc_ctx *ctx", "rt_lib_free(ctx)"},
    {"run", "int ", "circc_ctx *ctx, const void *const *inputs, void *const *outputs, const void *const *patches",
     "rt_lib_run(&model, ctx, inputs, outputs, patches)"},
    {"error", "const char *", "const circc_ctx *ctx", "rt_lib_error(ctx)"},
    {"set_threads", "int ", "circc_ctx *ctx, int n", "rt_lib_set_threads(ctx, n)"},
    {"threads", "int ", "const circc_ctx *ctx", "rt_lib_threads(ctx)"},
    {"info", "void ", "circc_info *info", "rt_lib_info(&model, info)"},
    {"tensor", "int ", "int kind, int i, circc_tensor *t", "rt_lib_tensor(&model, kind, i, t)"},
};
enum { NLIB_API = sizeof LIB_API / sizeof *LIB_API };

/* --emit lib: the header users include (circc_lib.h's types, then the
 * prefixed functions; its text goes to *header), lib.c and the linker's
 * version script. */
static bool write_lib_sources(Comp *c, const EmitOptions *eo, const char *dir, const char *prefix, const char **header) {
  const struct RuntimeFile *types = runtime_file("circc_lib.h");
  CHECK(types);
  char *guard = arena_printf(&c->arena, "%s_H", prefix);
  for (char *q = guard; *q; q++) *q = (char)toupper((unsigned char)*q);
  const char *h = arena_printf(&c->arena,
      "/* The C API of the shared library %s, built by circc %s (--emit lib): a\n"
      " * context per user (%s_init), runs (%s_run), descriptions of its tensors\n"
      " * (%s_info, %s_tensor). The types and every function's meaning follow. */\n"
      "#ifndef %s\n#define %s\n%.*s\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n",
      eo->name, CIRCC_VERSION, prefix, prefix, prefix, prefix, guard, guard, (int)types->len, (const char *)types->data);
  const char *lib = arena_printf(&c->arena,
      "/* lib.c — the exported C API of %s (lib.h): rt_lib.c's functions for this\n"
      " * model. Generated by circc %s. */\n#define CIRCC_NO_MAIN\n#include \"model.c\"\n#include \"rt_lib.h\"\n"
      "#pragma GCC visibility push(default)\n#include \"lib.h\"\n#pragma GCC visibility pop\n\n",
      eo->name, CIRCC_VERSION);
  const char *map = "{\n  global:\n";
  for (int i = 0; i < NLIB_API; i++) {
    h = arena_printf(&c->arena, "%s%s%s_%s(%s);\n", h, LIB_API[i].type, prefix, LIB_API[i].name, LIB_API[i].params);
    lib = arena_printf(&c->arena, "%s%s%s_%s(%s) { %s%s; }\n", lib, LIB_API[i].type, prefix, LIB_API[i].name,
                       LIB_API[i].params, strcmp(LIB_API[i].type, "void ") ? "return " : "", LIB_API[i].call);
    map = arena_printf(&c->arena, "%s    %s_%s;\n", map, prefix, LIB_API[i].name);
  }
  h = arena_printf(&c->arena, "%s#ifdef __cplusplus\n}\n#endif\n#endif\n", h);
  map = arena_printf(&c->arena, "%s  local: *;\n};\n", map);
  *header = h;
  return write_file(c, dir, "lib.h", h, strlen(h)) && write_file(c, dir, "lib.c", lib, strlen(lib)) &&
         write_file(c, dir, "lib.map", map, strlen(map));
}

/* Single-quotes s for sh. */
static const char *shell_quote(Comp *c, const char *s) {
  size_t n = 2;
  for (const char *p = s; *p; p++) n += *p == '\'' ? 4 : 1;
  char *q = arena_alloc(&c->arena, n + 1), *o = q;
  *o++ = '\'';
  for (const char *p = s; *p; p++) {
    if (*p == '\'') { memcpy(o, "'\\''", 4); o += 4; }
    else *o++ = *p;
  }
  *o++ = '\'';
  return q;
}

static const char *absolute(Comp *c, const char *path) {
  if (path[0] == '/') return path;
  char cwd[4096];
  if (!getcwd(cwd, sizeof cwd)) return path;
  return arena_printf(&c->arena, "%s/%s", cwd, path);
}

/* The files a program directory can hold besides the runtime's. */
static const char *const OWN_FILES[] = {"model.c", "weights.bin", "weights.S", "tokenizer.bin", "tokenizer.S",
                                         "Makefile", "cc.log", "link.log", "lib.c", "lib.h", "lib.map", "program"};
enum { NOWN_FILES = sizeof OWN_FILES / sizeof *OWN_FILES };

/* The files of a program directory: circc's, the runtime's, the --ops files'. */
static size_t program_nfiles(const Comp *c) { return NOWN_FILES + circc_runtime_nfiles + (c->ops ? c->ops->nfiles : 0); }

/* File i of a program directory, i < program_nfiles(c). */
static const char *program_file(Comp *c, size_t i) {
  if (i < NOWN_FILES) return OWN_FILES[i];
  if (i < NOWN_FILES + circc_runtime_nfiles) return circc_runtime_files[i - NOWN_FILES].name;
  return ops_program_file(c, (int)(i - NOWN_FILES - circc_runtime_nfiles));
}

static void remove_dir(Comp *c, const char *dir) {
  char path[4200];
  for (size_t i = 0; i < program_nfiles(c); i++) {
    const char *name = program_file(c, i);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
    size_t n = strlen(name);
    if (n > 2 && (!strcmp(name + n - 2, ".c") || !strcmp(name + n - 2, ".S"))) { /* its object */
      snprintf(path, sizeof path, "%s/%s", dir, object_name(c, name, n));
      unlink(path);
    }
  }
  rmdir(dir);
}

/* A SIGINT, SIGTERM or SIGHUP while a build has temporaries: the handler
 * only records it and kills the C compiler's process group; build_program
 * then removes what it made and dies of the same signal. */
static volatile sig_atomic_t interrupted;
static volatile pid_t compiler_group;
static const int BUILD_SIGNALS[] = {SIGINT, SIGTERM, SIGHUP};

static void on_build_signal(int sig) {
  interrupted = sig;
  if (compiler_group > 0) kill(-compiler_group, SIGKILL);
}

/* Runs cmd with /bin/sh in a process group of its own (so a signal can stop
 * the compiler, assembler and linker together); its wait status, or -1. */
static int run_compiler(const char *cmd) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    setpgid(0, 0);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  setpgid(pid, pid); /* also here: no race with a signal before the child's own call */
  compiler_group = pid;
  if (interrupted) kill(-pid, SIGKILL);
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) {
      status = -1;
      break;
    }
  compiler_group = 0;
  return status;
}

/* After a recorded signal: the default action of that signal. */
static _Noreturn void die_of_signal(void) {
  int sig = interrupted;
  signal(sig, SIG_DFL);
  raise(sig);
  _exit(128 + sig);
}

/* The --ops files, copied next to model.c (which includes them), space-separated. */
static bool write_ops_files(Comp *c, const char *dir, const char **names) {
  *names = "";
  for (int i = 0; c->ops && i < c->ops->nfiles; i++) {
    char *text;
    size_t len;
    if (!load_text_file(c, c->ops->files[i], "--ops file", &text, &len)) return false;
    bool ok = write_file(c, dir, ops_program_file(c, i), text, len);
    free(text);
    if (!ok) return false;
    *names = arena_printf(&c->arena, "%s %s", *names, ops_program_file(c, i));
  }
  return true;
}

/* Writes every source of the program into dir (a library's too when prefix
 * is not NULL, with *header its header's text; ldflags: the link's own flags). */
static bool write_sources(Comp *c, const Kernels *k, const EmitOptions *eo, const BuildOptions *bo, const char *dir,
                          const char *cflags, const char *prefix, const char *ldflags, const char **header) {
  char *model = arena_printf(&c->arena, "%s/model.c", dir), *blob = arena_printf(&c->arena, "%s/weights.bin", dir);
  FILE *m = fopen(model, "w"), *w = fopen(blob, "wb");
  bool ok = m && w && emit_program(c, k, eo, m, w);
  if (m && fclose(m) != 0) ok = false;
  if (w && fclose(w) != 0) ok = false;
  if (!ok) {
    if (!diag_error_count(c)) diag_error_class(c, DIAG_IO, NO_LOC, "cannot write the program sources in '%s'", dir);
    return false;
  }
  const char *ops_files;
  if (!write_ops_files(c, dir, &ops_files)) return false;
  /* one object per source, so that `make -j` compiles them in parallel as circc's own build does */
  const char *makefile = arena_printf(&c->arena,
      "# Builds %s; generated by circc %s. `make -j` compiles the sources in parallel.\n"
      "CC %s %s\n"
      "CFLAGS ?= %s\n"
      "OBJS = %s\n"
      "%s: $(OBJS)%s\n"
      "\t$(CC) $(CFLAGS)%s -o $@ $(OBJS) -lm\n"
      "$(OBJS):%s%s\n"
      "weights.o: weights.bin\n"
      "%s%s"
      "%%.o: %%.c\n\t$(CC) $(CFLAGS) -c $<\n"
      "%%.o: %%.S\n\t$(CC) $(CFLAGS) -c $<\n",
      eo->name, CIRCC_VERSION, bo->mpi ? "=" : "?=", bo->mpi ? "$(or $(MPICC),mpicc)" : "gcc", cflags,
      program_objects(c, program_sources(c, eo, bo)), eo->name, prefix ? " lib.map" : "", ldflags,
      runtime_names(c, bo, false), ops_files, eo->tokenizer_len ? "tokenizer.o: tokenizer.bin\n" : "",
      prefix ? "lib.o: model.c lib.h\n" : "");
  if (prefix && !write_lib_sources(c, eo, dir, prefix, header)) return false;
  for (size_t i = 0; i < circc_runtime_nfiles; i++)
    if (wanted(&circc_runtime_files[i], bo) &&
        !write_file(c, dir, circc_runtime_files[i].name, circc_runtime_files[i].data, circc_runtime_files[i].len))
      return false;
  return write_file(c, dir, "weights.S", WEIGHTS_S, sizeof WEIGHTS_S - 1) &&
         (!eo->tokenizer_len || (write_file(c, dir, "tokenizer.bin", eo->tokenizer, eo->tokenizer_len) &&
                                 write_file(c, dir, "tokenizer.S", TOKENIZER_S, sizeof TOKENIZER_S - 1))) &&
         write_file(c, dir, "Makefile", makefile, strlen(makefile));
}

/* --emit c: the sources go to a sibling directory first and are then moved
 * into the output directory file by file, so a failure midway leaves the
 * output directory as it was. */
static bool emit_directory(Comp *c, const Kernels *k, const EmitOptions *eo, const BuildOptions *bo, const char *cflags) {
  char *out = arena_strdup(&c->arena, bo->output);
  for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--) out[n - 1] = '\0';
  const char *tmp = arena_printf(&c->arena, "%s.tmp%d", out, (int)getpid());
  if (mkdir(tmp, 0777) != 0) {
    diag_error_class(c, DIAG_IO, NO_LOC, "cannot create directory '%s': %s", out, strerror(errno));
    return false;
  }
  bool ok = write_sources(c, k, eo, bo, tmp, cflags, NULL, "", NULL);
  if (ok && mkdir(out, 0777) != 0 && errno != EEXIST) {
    diag_error_class(c, DIAG_IO, NO_LOC, "cannot create directory '%s': %s", out, strerror(errno));
    ok = false;
  }
  for (size_t i = 0; ok && i < program_nfiles(c); i++) {
    const char *from = arena_printf(&c->arena, "%s/%s", tmp, program_file(c, i)),
               *to = arena_printf(&c->arena, "%s/%s", out, program_file(c, i));
    if (access(from, F_OK) == 0 && rename(from, to) != 0) {
      diag_error_class(c, DIAG_IO, NO_LOC, "cannot write '%s': %s", to, strerror(errno));
      ok = false;
    }
  }
  remove_dir(c, tmp);
  return ok;
}

/* --emit lib: writes the header as outfile.h writes (whole or not at all). */
static bool install_header(Comp *c, const char *path, const char *text) {
  OutFile of = outfile_begin(c, path);
  FILE *f = fopen(of.write_to, "w");
  bool ok = f && fputs(text, f) >= 0;
  if (f && fclose(f) != 0) ok = false;
  if (!ok || !outfile_commit(&of, NULL)) {
    diag_error_class(c, DIAG_IO, NO_LOC, "cannot write '%s': %s", path, strerror(errno));
    outfile_abort(&of);
    return false;
  }
  return true;
}

/* Whether cmd (a path, or a name looked up in $PATH) is an executable. */
static bool have_command(Comp *c, const char *cmd) {
  if (strchr(cmd, '/')) return access(cmd, X_OK) == 0;
  const char *path = getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin";
  for (const char *p = path;; p += strcspn(p, ":") + 1) {
    size_t n = strcspn(p, ":");
    if (n && access(arena_printf(&c->arena, "%.*s/%s", (int)n, p, cmd), X_OK) == 0) return true;
    if (!p[n]) return false;
  }
}

/* " -DCIRCC_GEMM_A_BYTES=N" for a -march=native build: the fp32 GEMM packs up
 * to half of this host's per-core L2 of A at once (gemm_f32.h; any value gives
 * the same bits), or "" when the L2 size is unknown (the template's default).
 * The size comes from sysfs, else from glibc's CPUID reading: some virtual
 * machines (seen on a Zen 5 guest) have no cpu0/cache in sysfs. */
static const char *host_gemm_a_bytes(Comp *c) {
  FILE *f = fopen("/sys/devices/system/cpu/cpu0/cache/index2/size", "r");
  long kib = 0;
  char unit = 0;
  if (f) {
    if (fscanf(f, "%ld%c", &kib, &unit) != 2 || unit != 'K') kib = 0;
    fclose(f);
  }
#ifdef _SC_LEVEL2_CACHE_SIZE
  if (!f) kib = sysconf(_SC_LEVEL2_CACHE_SIZE) / 1024;
#endif
  return kib >= 256 && kib <= 65536 ? arena_printf(&c->arena, " -DCIRCC_GEMM_A_BYTES=%ld", kib * 1024 / 2) : "";
}

bool build_program(Comp *c, const Kernels *k, const EmitOptions *eo, const BuildOptions *bo) {
  const char *env_cc = bo->mpi ? "MPICC" : "CC", *cc = bo->cc ? bo->cc : getenv(env_cc) && *getenv(env_cc) ? getenv(env_cc)
                                                                          : bo->mpi ? "mpicc" : "gcc";
  if (bo->mpi && !(eo->expect && eo->expect->present)) {
    diag_error_class(c, DIAG_USAGE, NO_LOC, "--mpi applies to expectation programs (circuits with Cumulants of "
                     "DiscreteVars); this circuit has none");
    return false;
  }
  /* the first word of cc is the command (mpicc, or e.g. "ccache gcc") */
  if (bo->mpi && !bo->emit_c_only && !have_command(c, arena_strndup(&c->arena, cc, strcspn(cc, " ")))) {
    diag_error_class(c, DIAG_CC, NO_LOC, "--mpi: the MPI C compiler '%s' was not found; install Open MPI "
                     "(Debian: apt-get install libopenmpi-dev openmpi-bin) or set MPICC", cc);
    return false;
  }
  const char *prefix = NULL, *header = NULL, *header_text = NULL, *ldflags = "";
  if (bo->emit_lib) {
    if (eo->expect && eo->expect->present) {
      diag_error_class(c, DIAG_USAGE, NO_LOC, "--emit lib does not build expectation programs (circuits with "
                       "Cumulants of DiscreteVars) yet; build an executable (--emit exe)");
      return false;
    }
    header = lib_header_path(c, bo->output);
    if (!strcmp(header, bo->output)) {
      diag_error_class(c, DIAG_USAGE, NO_LOC, "--emit lib: the library '%s' would be overwritten by its header; "
                       "name it NAME.so", bo->output);
      return false;
    }
    if (!(prefix = lib_prefix(c, bo->output))) return false;
    const char *base = strrchr(bo->output, '/') ? strrchr(bo->output, '/') + 1 : bo->output;
    ldflags = arena_printf(&c->arena, " -shared -Wl,--version-script=lib.map -Wl,--gc-sections -Wl,-z,defs "
                           "-Wl,-soname,%s", shell_quote(c, base));
  }
  /* -fno-trapping-math (clang's default): programs never read floating-point
   * exception flags, and without it gcc will not if-convert the clamps of
   * fn_exp / fn_tanh without AVX-512 masks, so those loops stay scalar. An
   * undeclared libc function would be assumed to return int: an error. */
  const char *cflags = arena_printf(&c->arena, "%s %s -fno-trapping-math -fopenmp -std=c11 -D_POSIX_C_SOURCE=200809L -Werror=implicit-function-declaration%s%s%s%s%s",
                                    bo->opt ? bo->opt : "-O3", bo->native ? "-march=native" : "",
                                    bo->native ? host_gemm_a_bytes(c) : "", bo->mpi ? " -DCIRCC_MPI" : "", bo->emit_lib ? LIB_CFLAGS : "",
                                    bo->cflags ? " " : "", bo->cflags ? bo->cflags : "");
  if (bo->emit_c_only) return emit_directory(c, k, eo, bo, cflags);
  /* an unwritable output location is an I/O error, not a compiler failure */
  const char *slash = strrchr(bo->output, '/');
  const char *outdir = slash ? (slash == bo->output ? "/" : arena_strndup(&c->arena, bo->output, (size_t)(slash - bo->output))) : ".";
  if (access(outdir, W_OK) != 0) {
    diag_error_class(c, DIAG_IO, NO_LOC, "cannot write '%s': %s", bo->output, strerror(errno));
    return false;
  }
  const char *tmpdir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  const char *dir = mkdtemp(arena_printf(&c->arena, "%s/circc-XXXXXX", tmpdir));
  if (!dir) {
    diag_error_class(c, DIAG_IO, NO_LOC, "cannot create a temporary directory in '%s' (TMPDIR): %s", tmpdir,
                     strerror(errno));
    return false;
  }
  dir = arena_strdup(&c->arena, dir);
  struct sigaction on = {.sa_handler = on_build_signal}, before[3];
  sigemptyset(&on.sa_mask);
  interrupted = 0;
  for (int i = 0; i < 3; i++) sigaction(BUILD_SIGNALS[i], &on, &before[i]);
  bool ok = write_sources(c, k, eo, bo, dir, cflags, prefix, ldflags, &header_text) && !interrupted;
  /* the C compiler writes beside the output (a device or FIFO: into dir, then copied) */
  OutFile of = outfile_begin(c, absolute(c, bo->output));
  const char *tmp_out = of.through ? arena_printf(&c->arena, "%s/program", dir) : of.write_to;
  if (ok) {
    /* The sources compile in parallel, one process each (model.c takes most
     * of the time, the weights' assembly most of the rest; xargs starts no
     * more after a failure: exit 255); then the link, with gold where the C
     * compiler finds it, else its default linker: GNU ld copies a large blob
     * with small writes (8 of the 27 s of a GPT-2 program at T = 1024; gold
     * 1.4 s), and gold too places .lrodata last; it maps only what it reads
     * of its inputs (mapped whole, the weights' object doubled its peak
     * resident memory). */
    const char *sources = program_sources(c, eo, bo), *objects = program_objects(c, sources);
    const char *link = arena_printf(&c->arena, "%s %s%s -o %s %s -lm", cc, cflags, ldflags, shell_quote(c, tmp_out),
                                    objects);
    const char *compile = shell_quote(c, arena_printf(&c->arena, "%s %s -c \"$0\" || exit 255", cc, cflags));
    const char *cmd = arena_printf(&c->arena,
                                   "cd %s && printf '%%s\\n' %s | xargs -P %d -n 1 sh -c %s > cc.log 2>&1 && "
                                   "{ (%s -fuse-ld=gold -Wl,--no-map-whole-files) > link.log 2>&1 || (%s) >> cc.log 2>&1; }",
                                   shell_quote(c, dir), sources, build_jobs(), compile, link, link);
    progress_begin("cc");
    int status = run_compiler(cmd);
    progress_end();
    if (interrupted) {
      unlink(tmp_out);
      ok = false;
    } else if (status != 0) {
      char *log = NULL;
      size_t len = 0;
      FILE *f = fopen(arena_printf(&c->arena, "%s/cc.log", dir), "r");
      if (f) {
        FILE *mem = open_memstream(&log, &len);
        int ch;
        while ((ch = fgetc(f)) != EOF) fputc(ch, mem);
        fclose(mem);
        fclose(f);
      }
      /* a full disk is an I/O error (exit 3), not the compiler's */
      bool full = log && strstr(log, "No space left on device");
      diag_error_class(c, full ? DIAG_IO : DIAG_CC, NO_LOC, "the C compiler failed (exit status %d):\n  %s\n%s%s",
                       WIFEXITED(status) ? WEXITSTATUS(status) : -1, cmd, log ? log : "",
                       bo->keep_temps ? "" : "(use --save-temps to keep the sources)");
      free(log);
      unlink(tmp_out);
      ok = false;
    } else if (header && !install_header(c, header, header_text)) {
      unlink(tmp_out);
      ok = false;
    } else if (!outfile_commit(&of, tmp_out)) {
      diag_error_class(c, DIAG_IO, NO_LOC, "cannot write '%s': %s", of.path, strerror(errno));
      if (header) unlink(header);
      ok = false;
    }
  }
  if (bo->keep_temps && !interrupted) fprintf(stderr, "circc: sources kept in %s\n", dir);
  else remove_dir(c, dir);
  if (interrupted) die_of_signal();
  for (int i = 0; i < 3; i++) sigaction(BUILD_SIGNALS[i], &before[i], NULL);
  return ok;
}
