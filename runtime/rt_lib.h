/* rt_lib.h — the runtime of shared libraries (circc --emit lib): the C API of
 * circc_lib.h for one rt_model. The library's generated lib.c defines each
 * P_ function as the rt_lib_ one applied to its model; only those are
 * exported. Nothing here prints or exits: errors are returned, with a message
 * kept in the context. */
#ifndef RT_LIB_H
#define RT_LIB_H
#include "circc_lib.h"
#include "circc_rt.h"

circc_ctx *rt_lib_init(const rt_model *m);
void rt_lib_free(circc_ctx *ctx);
int rt_lib_run(const rt_model *m, circc_ctx *ctx, const void *const *inputs, void *const *outputs,
               const void *const *patches);
const char *rt_lib_error(const circc_ctx *ctx);
int rt_lib_set_threads(circc_ctx *ctx, int n);
int rt_lib_threads(const circc_ctx *ctx);
void rt_lib_info(const rt_model *m, circc_info *info);
int rt_lib_tensor(const rt_model *m, int kind, int i, circc_tensor *t);
#endif
