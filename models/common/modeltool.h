/* modeltool.h — helpers shared by the model build tools (bigram_build,
 * mlp_build, scalar_npy): exit codes, directories, deterministic Symbol
 * UUIDs, rust_circuit's Scalar text, atomic text files, and adding a tensor to
 * the tensor store. Errors are printed as "<tool>: error: …". */
#ifndef CIRCC_MODELTOOL_H
#define CIRCC_MODELTOOL_H
#include <stdbool.h>
#include <stddef.h>
#include "circc.h"

enum { TOOL_OK = 0, TOOL_USAGE = 2, TOOL_IO = 3 };

extern const char *tool_name;                 /* set by main, prefixes every message */
void tool_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

bool tool_mkdirs(const char *dir);            /* mkdir -p */
/* A version-4-shaped UUID derived from BLAKE3("circc-models:" + name): the same
 * symbol gets the same UUID on every run, so the circuit text is reproducible. */
void tool_uuid(const char *name, char out[37]);
/* v as rust_circuit prints a Scalar: shortest round-trip decimal, no exponent. */
void tool_scalar(double v, char *buf, size_t cap);
/* Writes text to path atomically (temporary file + rename). */
bool tool_write_file(const char *path, const char *text, size_t len);
/* Adds t to the tensor store c->tensor_dir and returns the 24-hex-character
 * prefix a circuit names it by (arena string), or NULL after an error. */
const char *tool_store(Comp *c, const Tensor *t);
#endif
