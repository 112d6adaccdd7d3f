/* tensor.c — Tensor basics: dtypes, element access with conversion,
 * allocation and release (see tensor.h). */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "tensor.h"

static const struct { const char *name; size_t size; } DTYPES[DT_COUNT] = {
    [DT_F32] = {"float32", 4}, [DT_F64] = {"float64", 8}, [DT_F16] = {"float16", 2},
    [DT_BF16] = {"bfloat16", 2}, [DT_I64] = {"int64", 8},  [DT_I32] = {"int32", 4},
    [DT_I16] = {"int16", 2},     [DT_I8] = {"int8", 1},     [DT_U8] = {"uint8", 1},
    [DT_BOOL] = {"bool", 1},
};

size_t dtype_size(DType t) { return t >= 0 && t < DT_COUNT ? DTYPES[t].size : 0; }
const char *dtype_name(DType t) { return t >= 0 && t < DT_COUNT ? DTYPES[t].name : "unknown"; }

int64_t shape_numel(const Shape *s) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) n *= s->dim[i];
  return n;
}

bool shape_eq(const Shape *a, const Shape *b) {
  if (a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (a->dim[i] != b->dim[i]) return false;
  return true;
}

Tensor *tensor_new(Comp *c, DType dt, const Shape *shape) {
  Tensor *t = ARENA_NEW(&c->arena, Tensor);
  t->dtype = dt;
  t->shape = *shape;
  int64_t numel = shape_numel(shape), nbytes;
  if (numel < 0 || __builtin_mul_overflow(numel, (int64_t)dtype_size(dt), &nbytes))
    ICE("tensor_new: a shape of more than 2^63 bytes escaped the size checks");
  t->nbytes = (size_t)nbytes;
  t->data = calloc(1, t->nbytes ? t->nbytes : 1);
  if (!t->data) diag_out_of_memory(t->nbytes);
  t->data_owned = true;
  t->next = c->tensors;
  c->tensors = t;
  return t;
}

void tensor_free_all(Comp *c) {
  for (Tensor *t = c->tensors; t; t = t->next) {
    if (t->data_owned) free(t->data);
    if (t->map_base) munmap(t->map_base, t->map_len);
    t->data = NULL;
  }
  c->tensors = NULL;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else { /* subnormal: normalise */
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) { mant <<= 1; exp--; }
      bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

double tensor_get_f64(const Tensor *t, int64_t i) {
  const unsigned char *p = (const unsigned char *)t->data + (size_t)i * dtype_size(t->dtype);
  switch (t->dtype) {
  case DT_F32: { float v; memcpy(&v, p, 4); return v; }
  case DT_F64: { double v; memcpy(&v, p, 8); return v; }
  case DT_F16: { uint16_t v; memcpy(&v, p, 2); return f16_to_f32(v); }
  case DT_BF16: { uint16_t v; memcpy(&v, p, 2); return bf16_to_f32(v); }
  case DT_I64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
  case DT_I32: { int32_t v; memcpy(&v, p, 4); return v; }
  case DT_I16: { int16_t v; memcpy(&v, p, 2); return v; }
  case DT_I8: return (int8_t)*p;
  case DT_U8: return *p;
  case DT_BOOL: return *p ? 1.0 : 0.0;
  default: ICE("tensor_get_f64 on dtype %d", (int)t->dtype);
  }
}

void tensor_set_f64(Tensor *t, int64_t i, double v) {
  unsigned char *p = (unsigned char *)t->data + (size_t)i * dtype_size(t->dtype);
  switch (t->dtype) {
  case DT_F32: { float f = (float)v; memcpy(p, &f, 4); return; }
  case DT_F64: memcpy(p, &v, 8); return;
  case DT_I64: { int64_t x = (int64_t)v; memcpy(p, &x, 8); return; }
  case DT_I32: { int32_t x = (int32_t)v; memcpy(p, &x, 4); return; }
  case DT_I16: { int16_t x = (int16_t)v; memcpy(p, &x, 2); return; }
  case DT_I8: *(int8_t *)p = (int8_t)v; return;
  case DT_U8: *p = (uint8_t)v; return;
  case DT_BOOL: *p = v != 0; return;
  default: ICE("tensor_set_f64 on dtype %s", dtype_name(t->dtype));
  }
}
