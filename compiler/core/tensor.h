/* tensor.h — tensors and the readers/writers for every file format circc
 * accepts: rust_circuit's tensor store (torch.save zip + pickle, named by
 * BLAKE3 hash; rust_circuit_format.md §3), NumPy .npy and safetensors.
 *
 * A Tensor is always logically contiguous, row-major, in its file's dtype.
 * Large contiguous payloads point straight into an mmapped file; strided
 * views (torch slices) are gathered into malloc'd memory. Tensors are owned
 * by the Comp that loaded them (comp_free releases them). Every reader reports
 * problems through diag_error with the given Loc (the Array node or the
 * command-line flag that asked for the file) and returns NULL. */
#ifndef CIRCC_TENSOR_H
#define CIRCC_TENSOR_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "comp.h"

#define MAX_RANK 32

typedef struct Shape {
  int rank;
  int64_t dim[MAX_RANK];
} Shape;

typedef enum DType {
  DT_F32, DT_F64, DT_F16, DT_BF16, DT_I64, DT_I32, DT_I16, DT_I8, DT_U8, DT_BOOL,
  DT_COUNT,
  DT_UNKNOWN = -1, /* Symbols: combine with anything */
} DType;

typedef struct Tensor {
  DType dtype;
  Shape shape;
  void *data;             /* numel * dtype_size bytes, row-major, little-endian */
  size_t nbytes;
  /* ownership (private to tensor.c) */
  void *map_base;         /* non-NULL: munmap(map_base, map_len) on free */
  size_t map_len;
  bool data_owned;        /* free(data) on free */
  struct Tensor *next;    /* Comp's list of tensors */
  char hash_hex[65];      /* full BLAKE3 hash if known (store tensors), else "" */
} Tensor;

/* ---- tensor.c: basics ---- */
size_t dtype_size(DType t);
const char *dtype_name(DType t);          /* "float32", "int64", ... (torch names) */
int64_t shape_numel(const Shape *s);
bool shape_eq(const Shape *a, const Shape *b);
Tensor *tensor_new(Comp *c, DType dt, const Shape *shape);   /* zeroed, malloc'd, registered */
double tensor_get_f64(const Tensor *t, int64_t i);           /* element i as double (f16/bf16 converted) */
void tensor_set_f64(Tensor *t, int64_t i, double v);
void tensor_free_all(Comp *c);
float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t h);

/* ---- blake3.c ---- */
void blake3_hash(const void *data, size_t len, uint8_t out[32]);
typedef struct Blake3 {        /* incremental hasher state (hash mode, 32-byte output) */
  uint32_t cv[8];              /* chaining value of the chunk being hashed */
  uint64_t chunk;              /* index of that chunk */
  uint8_t buf[64];             /* pending bytes of the current block */
  uint8_t buf_len;
  uint8_t blocks_done;         /* blocks of the current chunk already compressed */
  uint8_t depth;               /* entries used in stack */
  uint32_t stack[54][8];       /* CVs of completed subtrees (2^54 chunks = 2^64 bytes) */
} Blake3;
void blake3_init(Blake3 *h);
void blake3_update(Blake3 *h, const void *data, size_t len);
void blake3_final(const Blake3 *h, uint8_t out[32]);

/* ---- tensor_store.c: rust_circuit's tensor store (§3) ---- */
/* The store root: comp->tensor_dir, else $TENSORS_CACHE_DIR, else $HOME/tensors_by_hash_cache. */
const char *store_root(Comp *c);
/* Loads the tensor whose hash starts with `prefix` (lowercase hex). Errors:
 * no match, ambiguous prefix (lists the candidates), unreadable/malformed file. */
Tensor *store_load(Comp *c, const char *prefix, Loc loc);
/* Reads one torch.save file (zip + pickle; §3.3–3.4). */
Tensor *torch_load(Comp *c, const char *path, Loc loc);
/* Same, from memory (the bytes must outlive the tensor if it is returned as a view). */
Tensor *torch_load_bytes(Comp *c, const uint8_t *bytes, size_t len, const char *what, Loc loc);
/* The rust_circuit tensor hash (§3.2) of t as it would be on device "cpu"; 64 hex chars + NUL. */
void tensor_hash_hex(const Tensor *t, char out[65]);
/* Writes t to the store as a torch.save file under its hash; returns the hash
 * (arena string) or NULL on I/O error. Existing identical entries are kept. */
const char *store_write(Comp *c, const Tensor *t);
/* Writes a torch.save file readable by PyTorch and rust_circuit. Returns false on I/O error. */
bool torch_save(Comp *c, const Tensor *t, const char *path);

/* ---- npy.c ---- */
Tensor *npy_load(Comp *c, const char *path, Loc loc);
Tensor *npy_load_bytes(Comp *c, const uint8_t *bytes, size_t len, const char *what, Loc loc);
bool npy_save(Comp *c, const Tensor *t, const char *path);   /* v1.0, C order; atomic (outfile.h) */
struct OutFile;
/* npy_save's write into of->write_to, not yet committed (several files, all or none). */
bool npy_write_staged(Comp *c, const Tensor *t, const struct OutFile *of);

/* ---- safetensors.c ---- */
typedef struct TensorFile TensorFile;     /* an open .safetensors file or sharded checkpoint */
/* Opens a .safetensors file, or a directory / model.safetensors.index.json of a sharded one. */
TensorFile *safetensors_open(Comp *c, const char *path, Loc loc);
int safetensors_count(const TensorFile *f);
const char *safetensors_name(const TensorFile *f, int i);
Tensor *safetensors_get(Comp *c, TensorFile *f, const char *name, Loc loc); /* NULL + error if absent */
#endif
