/* row_max_builds.c — templates/row_f32.h's circc_row_max_of compiled once per
 * path it has (tests/CMakeLists.txt builds this file with ROW_MAX_BUILD set
 * to avx512, avx2 and portable, and the matching -m flags) for
 * test_templates, which compares them with each other and with the largest
 * non-NaN element. */
#include <stdint.h>
#include "elementwise_f32.h"
#include "row_f32.h"

#define ROW_MAX_NAME_(b) row_max_##b
#define ROW_MAX_NAME(b) ROW_MAX_NAME_(b)
float ROW_MAX_NAME(ROW_MAX_BUILD)(const float *x, int64_t xs, int64_t len);
float ROW_MAX_NAME(ROW_MAX_BUILD)(const float *x, int64_t xs, int64_t len) { return circc_row_max_of(x, xs, len); }
