/* circc_op.h — marks C functions as implementations of GeneralFunctions for
 * `circc --ops FILE.c` (README, "Custom functions"). circc finds the marked
 * functions with libclang (the marker is an annotate attribute it reads from
 * the syntax tree), checks their signatures, and compiles the files into the
 * program and into `circc eval`. circc puts this header's directory on the
 * include path itself (it is written next to every generated program).
 *
 *   CIRCC_OP("name")  one of the forms below, told apart by the signature:
 *     elementwise  float f(float x)            or  float f(float x, float y)
 *                  (two children broadcast like pow)
 *     row          void f(const float *x, float *y, int64_t n)
 *                  (over the last axis, one call per row, like softmax)
 *   CIRCC_OP_SHAPE("name", "RULE")  a general function:
 *                  void f(const float *const *in, const int64_t *const *shapes, int n_in, float *out)
 *     in[i] is child i (row-major), shapes[i][0] its rank and shapes[i][1..rank]
 *     its sizes; out (row-major) has the shape RULE gives: `in0` (the shape of
 *     child 0) or a list of sizes `[in0[0], in1[-1], 4]` (a child's size on an
 *     axis, negative from the end, or a number).
 *
 * "name" is the GeneralFunction's name as the circuit writes it: a simple
 * name (`my_gelu`) or the part before ` at ` of a Python-class spec
 * (`apply_rotary_pos_emb at rust_circuit.generalfuncs.rotary_pos_emb:ApplyRotaryPosEmb`). */
#ifndef CIRCC_OP_H
#define CIRCC_OP_H
#include <stdint.h>

/* only circc's libclang parse reads the marker; other compilers see nothing
 * (gcc would warn about an unknown attribute) */
#ifdef __clang__
#define CIRCC_OP(name) __attribute__((annotate("circc:op=" name)))
#define CIRCC_OP_SHAPE(name, rule) __attribute__((annotate("circc:op=" name), annotate("circc:shape=" rule)))
#else
#define CIRCC_OP(name)
#define CIRCC_OP_SHAPE(name, rule)
#endif
#endif
