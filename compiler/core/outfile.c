/* outfile.c — see outfile.h. */
#include "outfile.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

OutFile outfile_begin(Comp *c, const char *path) {
  OutFile o = {.path = path, .final = path};
  struct stat st;
  if (stat(path, &st) == 0 && (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode) ||
                               S_ISSOCK(st.st_mode))) {
    o.through = true;
    o.write_to = path;
    return o;
  }
  /* a symlink (perhaps to a file not yet there): the file it names gets the result */
  for (int hops = 0; hops < 40 && lstat(o.final, &st) == 0 && S_ISLNK(st.st_mode); hops++) {
    char target[4096];
    ssize_t n = readlink(o.final, target, sizeof target - 1);
    if (n <= 0) break;
    target[n] = '\0';
    const char *slash = strrchr(o.final, '/');
    o.final = target[0] == '/' || !slash ? arena_strdup(&c->arena, target)
                                         : arena_printf(&c->arena, "%.*s/%s", (int)(slash - o.final), o.final, target);
  }
  o.write_to = arena_printf(&c->arena, "%s.tmp.%ld", o.final, (long)getpid());
  return o;
}

/* Copies the file from into the open descriptor fd. */
static bool copy_into(const char *from, int fd) {
  int in = open(from, O_RDONLY | O_CLOEXEC);
  if (in < 0) return false;
  char buf[1 << 16];
  bool ok = true;
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = n == 0;
      break;
    }
    for (ssize_t at = 0; ok && at < n;) {
      ssize_t w = write(fd, buf + at, (size_t)(n - at));
      if (w < 0 && errno == EINTR) continue;
      ok = w > 0;
      at += w > 0 ? w : 0;
    }
    if (!ok) break;
  }
  int err = errno;
  close(in);
  errno = err;
  return ok;
}

bool outfile_commit(const OutFile *o, const char *from) {
  if (o->through) {
    if (!from) return true;
    int fd = open(o->path, O_WRONLY | O_CLOEXEC);
    bool ok = fd >= 0 && copy_into(from, fd);
    int err = errno;
    if (fd >= 0 && close(fd) != 0 && ok) ok = false, err = errno;
    errno = err;
    return ok;
  }
  if (rename(o->write_to, o->final) == 0) return true;
  int err = errno;
  unlink(o->write_to);
  errno = err;
  return false;
}

void outfile_abort(const OutFile *o) {
  if (!o->through) unlink(o->write_to);
}
