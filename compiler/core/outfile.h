/* outfile.h — how circc writes a file the user names (circc eval's --output,
 * the executable of -o): into a temporary beside the file the path names
 * (after symlinks, so a link keeps pointing where it did), renamed over it
 * only when complete, so a failure never leaves a partial file; a path that
 * names a device or FIFO (/dev/null, /dev/stdout) is written through, never
 * replaced — circc may run as root. */
#ifndef CIRCC_OUTFILE_H
#define CIRCC_OUTFILE_H
#include <stdbool.h>
#include "comp.h"

typedef struct OutFile {
  const char *path;      /* as the user wrote it (messages) */
  const char *write_to;  /* the temporary, or the path itself when written through */
  const char *final;     /* what the temporary replaces (the symlink's target) */
  bool through;          /* a device or FIFO */
} OutFile;

/* Chooses where to write path (arena strings). */
OutFile outfile_begin(Comp *c, const char *path);
/* Puts the complete write_to in place: renames the temporary over final, or,
 * for a device or FIFO that something else wrote (from: the C compiler's
 * output), copies from's bytes into it. false with errno set on failure (the
 * temporary is removed). */
bool outfile_commit(const OutFile *o, const char *from);
/* Removes the temporary after a failure (never the path written through). */
void outfile_abort(const OutFile *o);
#endif
