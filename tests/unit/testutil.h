/* testutil.h — helpers shared by the Criterion unit tests. */
#ifndef CIRCC_TESTUTIL_H
#define CIRCC_TESTUTIL_H
#include "driver.h"

/* A Comp whose diagnostics go to a memory buffer (read with tu_diags). */
Comp *tu_comp(void);
const char *tu_diags(Comp *c);   /* everything printed to c->err so far */
void tu_free(Comp *c);
/* Path of a file under tests/data; of one under models/ (the bundled models). */
const char *tu_data(const char *rel);
const char *tu_model(const char *rel);

/* The pipeline users run (driver_run with --verify-each), from circuit text
 * or a file, up to and including stage `last`; `outputs` (NULL: all) picks
 * top-level circuits as --output does. cm receives what the stages made (zero it
 * first; a later call continues from where it stopped). false after a
 * diagnostic (tu_diags says which). */
bool tu_run(Comp *c, const char *text, Stage last, Compilation *cm);
/* tu_run with the text named `name`, for tests whose diagnostics name their own file. */
bool tu_run_named(Comp *c, const char *name, const char *text, Stage last, Compilation *cm);
bool tu_run_file(Comp *c, const char *path, const char *output, Stage last, Compilation *cm);
/* Compiles circuit text into the executable prog (opt: "-O0".."-O3", NULL
 * for circc's default); a diagnostic fails the test. */
void tu_build(const char *text, const char *prog, const char *opt);
/* Compiles circuit text with precision p into dir/name at -O2, checking the IR
 * after every stage (--verify-each): an executable, or with emit_c a
 * directory with model.c (--emit c); native: -march=native, else generic
 * code. A diagnostic fails the test. */
void tu_build_precision(const char *text, Precision p, const char *dir, const char *name, bool emit_c, bool native);

/* dir/file, a float32 .npy, loaded into c's arena; anything else fails the test. */
Tensor *tu_load_f32(Comp *c, const char *dir, const char *file);
/* t saved as dir/file (.npy); a failure fails the test. */
void tu_save_npy(Comp *c, const Tensor *t, const char *dir, const char *file);
/* Runs dir/prog (from dir) with 1 and then 2 threads: `args`, then
 * --output OUT=@OUT1.npy (OUT2.npy); asserts both exit 0 and write the same
 * bytes, else fails with "WHAT: 1 and 2 threads differ". */
void tu_run_1_and_2_threads(const char *dir, const char *args, const char *out, const char *what);
/* Runs a shell command (printf-style); its exit status, -1 if it did not exit. */
int tu_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A new empty directory /tmp/circc_TAG_XXXXXX (malloc'd path). */
char *tu_temp_dir(const char *tag);
/* The whole file, NUL-terminated (malloc'd); *len (len may be NULL) its size.
 * An unreadable file fails the test. */
char *tu_read_file(const char *path, size_t *len);

/* ---- GEMM kernel tests (test_gemm_bf16, test_gemm_int8): a case, its
 * operands and a double reference with the fp32 accumulation bound. */

/* xorshift64 from a fixed seed (each test starts from it: Criterion runs
 * every test in a process of its own); tu_seed restarts it from another. */
uint64_t tu_rand64(void);
void tu_seed(uint64_t seed);
/* Uniform in [-1, 1), from tu_rand64: a multiple of 2^-23, exact in fp32. */
float tu_frand(void);

/* C (M x N) = A (M x K) B (K x N); with a_t A is stored transposed (a_m = 1),
 * with c_t C is. */
typedef struct TuGemmCase {
  int64_t M, N, K;
  bool a_t, c_t;
} TuGemmCase;

/* A case's operands: A (tu_frand() * 4, drawn first) and its strides, C with
 * 64 floats after it (clen in all) to see stray writes, the kernel's packed B
 * and scratch (the test's to make; tu_gemm_free frees them), and
 * tu_gemm_reference's ref and bound, indexed m*N + n. */
typedef struct TuGemm {
  TuGemmCase cs;
  float *A, *C;
  void *B, *scratch;
  double *ref, *bound;
  int64_t a_m, a_k, c_m, c_n, clen;
} TuGemm;

TuGemm tu_gemm_new(TuGemmCase cs);
/* ref = sum_k a(A[m,k]) W[k*N + n] in double (a: the value the kernel
 * multiplies, NULL: A's own; W: B's), and bound = (Kp + 1) 2^-24
 * sum_k |a(A[m,k]) W[k*N + n]| + 1e-30 (Kp: K padded to a multiple of 32). */
void tu_gemm_reference(TuGemm *d, double (*a)(float), const double *W);
void tu_gemm_free(TuGemm *d);
void tu_gemm_fill_nan(TuGemm *d); /* every float of C */
/* Every element of C within its bound of ref, and the floats after C NaN
 * (name: the kernel path, for messages). */
void tu_gemm_check_close(const char *name, const TuGemm *d);
/* Rows [m0,m1) and columns [n0,n1) of C within their bound, every other
 * element of C NaN (untouched since tu_gemm_fill_nan). */
void tu_gemm_check_block(const char *name, const TuGemm *d, int64_t m0, int64_t m1, int64_t n0, int64_t n1);

/* ---- whole-program precision tests (test_precision, test_precision_int8) */

/* y = x w + bias: x [M,K] an input; w [K,N] and bias [N] random weights
 * (Array rand) that are also outputs, or with w_input inputs (Symbols).
 * malloc'd. */
char *tu_product_circuit(int64_t M, int64_t K, int64_t N, bool w_input);
/* Builds tu_product_circuit(M, K, N, false) with precision p as dir/prog,
 * writes its input x (values of both signs over a few binades) to dir/x.npy,
 * runs it with 1 and 2 threads (dir/y1.npy, y2.npy; w.npy and b.npy: the
 * weights as outputs), and checks that both give the same bits and that
 * `prog --info` has a line matching the grep pattern `info`. Returns x (in
 * c's arena). */
Tensor *tu_run_product(Comp *c, const char *dir, Precision p, int64_t M, int64_t K, int64_t N, const char *info);
/* y (M x N) against xe we + b, xe [M,K] and we [K,N] being x and w as the
 * precision multiplies them: within (Kp + 1) 2^-24 sum_k |xe we| (the fp32
 * accumulation bound, Kp: K padded to a multiple of 32) plus the bias add's
 * rounding; and visibly not the fp32 product x w + b (off by > 1e-3 somewhere). */
void tu_check_product(int64_t M, int64_t K, int64_t N, const double *xe, const double *we, const float *x,
                      const float *w, const float *b, const float *y);
/* An expectation program (batch-invariant GEMMs: a Cumulant of a product with
 * a DiscreteVar over 40 [16,64] matrices) built with precision p against the
 * fp32 one: the same bits with 1 and 2 threads, --info names the precision
 * (pname), and it differs from fp32, by at most tol times the largest
 * |fp32 value|. */
void tu_check_expectation_precision(Precision p, const char *pname, double tol);
#endif
