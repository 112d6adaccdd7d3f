/* gpt2_npy.c — reshapes the Hugging Face goldens for the GPT-2 e2e tests:
 *   gpt2_npy squeeze IN.npy OUT.npy   drops the leading size-1 axis
 *                                     ([1,T,V] logits → [T,V], [1,T] ids → [T])
 *   gpt2_npy next IN.npy OUT.npy      drops the first position of the last axis
 *                                     (ids [...,T] → the next tokens [...,T-1],
 *                                     the `targets` of a circuit built with --loss)
 *   gpt2_npy shape IN.npy             prints the shape, e.g. "1 16"
 *   gpt2_npy ids IN.npy               prints every value, comma-separated (token
 *                                     ids: the form of --tokens and --print-ids)
 *   gpt2_npy argmax IN.npy            prints the index of the largest element of
 *                                     each row of the last axis (first on ties),
 *                                     comma-separated (logits → greedy next tokens)
 *   gpt2_npy from-ids ID,ID,... OUT.npy   writes the ids as an int64 [n] .npy
 *   gpt2_npy head N IN.npy OUT.npy    keeps the first N entries of the first axis
 *                                     (logits [T,V] → the rows of a shorter prompt)
 *   gpt2_npy tail N IN.npy OUT.npy    keeps the last N entries of the first axis
 *                                     (the rows after a left padding)
 *   gpt2_npy finite IN.npy            exits 1 unless every element is finite
 *   gpt2_npy zeros D,D,... OUT.npy    writes float32 zeros of shape [D,D,...] (a patch value)
 *   gpt2_npy zero-entry K IN.npy OUT.npy  IN with entry K of the first axis set to 0
 *                                     (one head's output zeroed: a patch value)
 *   gpt2_npy causal-softmax IN.npy    exits 1 unless every row of the last axis sums
 *                                     to 1 (1e-5) and [..., q, k] is 0 for k > q
 *                                     (an attention pattern, [..., T, T])
 * Values and dtype are unchanged. Exit codes: 0 ok, 1 a shape that does not
 * fit, 2 usage, 3 I/O. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "modeltool.h"

static const char USAGE[] = "usage: gpt2_npy squeeze|next IN.npy OUT.npy | gpt2_npy shape|ids|argmax IN.npy\n"
                            "       gpt2_npy from-ids ID,ID,... OUT.npy | gpt2_npy head|tail N IN.npy OUT.npy\n"
                            "       gpt2_npy finite|causal-softmax IN.npy | gpt2_npy zeros D,D,... OUT.npy\n"
                            "       gpt2_npy zero-entry K IN.npy OUT.npy\n"
                            "  squeeze  drop the leading size-1 axis\n"
                            "  next     drop the first element of the last axis (ids -> next tokens)\n"
                            "  shape    print the shape, axes separated by spaces\n"
                            "  ids      print the values, comma-separated\n"
                            "  argmax   print the argmax of each row of the last axis, comma-separated\n"
                            "  from-ids write comma-separated ids as an int64 [n] .npy\n"
                            "  head     keep the first N entries of the first axis\n"
                            "  tail     keep the last N entries of the first axis\n"
                            "  finite   exit 1 unless every element is finite (not NaN or infinite)\n"
                            "  zeros    write float32 zeros of the shape D,D,...\n"
                            "  zero-entry  set entry K of the first axis to 0\n"
                            "  causal-softmax  exit 1 unless rows sum to 1 and entries above the diagonal are 0\n";

/* ids, argmax: comma-separated values or row argmaxes of t. */
static void print_list(const Tensor *t, bool argmax) {
  int r = t->shape.rank;
  int64_t n = shape_numel(&t->shape), row = argmax ? (r ? t->shape.dim[r - 1] : 1) : 1;
  for (int64_t i = 0; row && i < n / row; i++) {
    int64_t best = 0;
    for (int64_t j = 1; argmax && j < row; j++)
      if (tensor_get_f64(t, i * row + j) > tensor_get_f64(t, i * row + best)) best = j;
    if (argmax) printf(i ? ",%lld" : "%lld", (long long)best);
    else printf(i ? ",%.17g" : "%.17g", tensor_get_f64(t, i));
  }
  putchar('\n');
}

/* from-ids: "1,2,3" → int64 [3]; zeros: "1,2,3" → float32 zeros [1,2,3] */
static int from_ids(Comp *c, const char *list, const char *out, bool zeros) {
  int64_t n = 1;
  for (const char *p = list; *p; p++) n += *p == ',';
  Tensor *t = tensor_new(c, DT_I64, &(Shape){1, {n}});
  const char *p = list;
  for (int64_t i = 0; i < n; i++) {
    char *end;
    long long v = strtoll(p, &end, 10);
    if (end == p || *end != (i + 1 < n ? ',' : '\0')) {
      tool_error("from-ids: expected comma-separated integers, found '%s'", list);
      return 1;
    }
    ((int64_t *)t->data)[i] = v;
    p = end + 1;
  }
  if (zeros) {
    if (n > MAX_RANK) return tool_error("zeros: at most %d axes", MAX_RANK), 1;
    Shape s = {(int)n, {0}};
    for (int64_t i = 0; i < n; i++)
      if ((s.dim[i] = ((int64_t *)t->data)[i]) < 0 || s.dim[i] > (1 << 24))
        return tool_error("zeros: sizes go from 0 to 2^24, found %lld", (long long)s.dim[i]), 1;
    t = tensor_new(c, DT_F32, &s);
  }
  return npy_save(c, t, out) ? TOOL_OK : TOOL_IO;
}

int main(int argc, char **argv) {
  tool_name = "gpt2_npy";
  bool squeeze = argc == 4 && !strcmp(argv[1], "squeeze"), next = argc == 4 && !strcmp(argv[1], "next");
  bool shape = argc == 3 && !strcmp(argv[1], "shape");
  bool ids = argc == 3 && !strcmp(argv[1], "ids"), argmax = argc == 3 && !strcmp(argv[1], "argmax");
  bool fromids = argc == 4 && !strcmp(argv[1], "from-ids");
  bool head = argc == 5 && !strcmp(argv[1], "head"), tail = argc == 5 && !strcmp(argv[1], "tail");
  bool zero_entry = argc == 5 && !strcmp(argv[1], "zero-entry");
  bool finite = argc == 3 && !strcmp(argv[1], "finite");
  bool zeros = argc == 4 && !strcmp(argv[1], "zeros"), causal = argc == 3 && !strcmp(argv[1], "causal-softmax");
  if (!squeeze && !next && !shape && !ids && !argmax && !fromids && !head && !tail && !finite && !zeros && !causal && !zero_entry) {
    fputs(USAGE, stderr);
    return TOOL_USAGE;
  }
  Comp c;
  comp_init(&c);
  if (fromids || zeros) {
    int rc = from_ids(&c, argv[2], argv[3], zeros);
    comp_free(&c);
    return rc;
  }
  if (head || tail || zero_entry) {
    char *end;
    long long n = strtoll(argv[2], &end, 10);
    Loc hloc = {argv[3], 0, 0};
    Tensor *t = end != argv[2] && !*end && n >= 0 ? npy_load(&c, argv[3], hloc) : NULL;
    int rc = t ? TOOL_OK : end == argv[2] || *end || n < 0 ? TOOL_USAGE : TOOL_IO;
    if (rc == TOOL_USAGE) tool_error("%s: expected a count, found '%s'", argv[1], argv[2]);
    if (t && (t->shape.rank == 0 || t->shape.dim[0] < n)) {
      tool_error("%s: expected at least %lld entries along the first axis", argv[3], n);
      rc = 1;
    } else if (t && zero_entry) {
      if (n >= t->shape.dim[0]) {
        tool_error("%s: expected more than %lld entries along the first axis", argv[3], n);
        rc = 1;
      } else {
        Tensor *o = tensor_new(&c, t->dtype, &t->shape); /* t may be a read-only mapping */
        size_t entry = o->nbytes / (size_t)o->shape.dim[0];
        memcpy(o->data, t->data, o->nbytes);
        memset((char *)o->data + (size_t)n * entry, 0, entry);
        if (!npy_save(&c, o, argv[4])) rc = TOOL_IO;
      }
    } else if (t) {
      Shape s = t->shape;
      s.dim[0] = n;
      Tensor *o = tensor_new(&c, t->dtype, &s);
      memcpy(o->data, (const char *)t->data + (head ? 0 : t->nbytes - o->nbytes), o->nbytes);
      if (!npy_save(&c, o, argv[4])) rc = TOOL_IO;
    }
    comp_free(&c);
    return rc;
  }
  Loc loc = {argv[2], 0, 0};
  Tensor *t = npy_load(&c, argv[2], loc);
  int rc = t ? TOOL_OK : TOOL_IO;
  int r = t ? t->shape.rank : 0;
  if (t && finite) {
    int64_t n = shape_numel(&t->shape), bad = 0;
    for (int64_t i = 0; i < n; i++) bad += !isfinite(tensor_get_f64(t, i));
    if (bad) {
      tool_error("%s: %lld of %lld elements are not finite", argv[2], (long long)bad, (long long)n);
      rc = 1;
    }
  } else if (t && causal) {
    int64_t T = r >= 2 ? t->shape.dim[r - 1] : 0, bad = 0;
    if (r < 2 || t->shape.dim[r - 2] != T) {
      tool_error("%s: expected [..., T, T]", argv[2]);
      rc = 1;
    }
    for (int64_t row = 0; rc == TOOL_OK && T && row < shape_numel(&t->shape) / T; row++) {
      double sum = 0;
      for (int64_t k = 0; k < T; k++) {
        double v = tensor_get_f64(t, row * T + k);
        sum += v;
        bad += k > row % T && v != 0;
      }
      bad += !(fabs(sum - 1) <= 1e-5);
    }
    if (bad) {
      tool_error("%s: %lld rows or entries break a causal softmax", argv[2], (long long)bad);
      rc = 1;
    }
  } else if (t && (ids || argmax)) {
    print_list(t, argmax);
  } else if (t && shape) {
    for (int i = 0; i < r; i++) printf(i ? " %lld" : "%lld", (long long)t->shape.dim[i]);
    putchar('\n');
  } else if (t && squeeze && (r == 0 || t->shape.dim[0] != 1)) {
    tool_error("%s: expected a leading axis of size 1, found %s", argv[2], r ? "a larger one" : "a rank-0 array");
    rc = 1;
  } else if (t && next && (r == 0 || t->shape.dim[r - 1] < 2)) {
    tool_error("%s: expected at least 2 elements along the last axis", argv[2]);
    rc = 1;
  }
  if (rc == TOOL_OK && (shape || ids || argmax || finite || causal)) {
    /* printed above */
  } else if (rc == TOOL_OK && squeeze) {
    t->shape.rank--;
    memmove(t->shape.dim, t->shape.dim + 1, (size_t)t->shape.rank * sizeof t->shape.dim[0]);
    if (!npy_save(&c, t, argv[3])) rc = TOOL_IO;
  } else if (rc == TOOL_OK) {
    Shape s = t->shape;
    int64_t n = s.dim[r - 1]--, rows = shape_numel(&t->shape) / n;
    Tensor *o = tensor_new(&c, t->dtype, &s);
    size_t el = dtype_size(t->dtype);
    for (int64_t i = 0; i < rows; i++)
      memcpy((char *)o->data + (size_t)(i * (n - 1)) * el, (const char *)t->data + (size_t)(i * n + 1) * el,
             (size_t)(n - 1) * el);
    if (!npy_save(&c, o, argv[3])) rc = TOOL_IO;
  }
  comp_free(&c);
  return rc;
}
