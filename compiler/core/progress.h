/* progress.h — what circc is doing, on stderr, while it works: with -v a line
 * per step when it ends ("circc: parse 0.012 s"); on a terminal a step still
 * running after 2 s is announced ("circc: cc ...") and its time printed when
 * it ends. Steps are the driver's stages and the C compiler's run (cc, inside
 * emit); they may nest. */
#ifndef CIRCC_PROGRESS_H
#define CIRCC_PROGRESS_H
#include <stdbool.h>

/* verbose: -v (every step); else only long steps, and only if stderr is a terminal. */
void progress_init(bool verbose);
/* Starts the step `name` (a string that outlives it). */
void progress_begin(const char *name);
/* Ends the innermost step. */
void progress_end(void);
#endif
