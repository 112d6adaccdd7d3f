/* modeltool.c — helpers shared by the model build tools (see modeltool.h). */
#include "modeltool.h"
#include "library.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *tool_name = "tool";

void tool_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: error: ", tool_name);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

bool tool_mkdirs(const char *dir) {
  char path[4096];
  if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
    tool_error("path too long: '%s'", dir);
    return false;
  }
  for (char *s = path + 1;; s++) {
    if (*s != '/' && *s != '\0') continue;
    char saved = *s;
    *s = '\0';
    struct stat st;
    if (mkdir(path, 0777) != 0 && (errno != EEXIST || stat(path, &st) != 0 || !S_ISDIR(st.st_mode))) {
      tool_error("cannot create directory '%s': %s", path, errno == EEXIST ? "a file is in the way" : strerror(errno));
      return false;
    }
    if (saved == '\0') return true;
    *s = saved;
  }
}

void tool_uuid(const char *name, char out[37]) {
  char key[512];
  int n = snprintf(key, sizeof key, "circc-models:%s", name);
  uint8_t h[32];
  blake3_hash(key, (size_t)n < sizeof key ? (size_t)n : sizeof key - 1, h);
  h[6] = (uint8_t)((h[6] & 0x0f) | 0x40);   /* version 4 */
  h[8] = (uint8_t)((h[8] & 0x3f) | 0x80);   /* RFC 4122 variant */
  char *o = out;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
    o += sprintf(o, "%02x", h[i]);
  }
}

void tool_scalar(double v, char *buf, size_t cap) { lib_scalar_text(v, buf, cap); }

bool tool_write_file(const char *path, const char *text, size_t len) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "w");
  bool ok = f && fwrite(text, 1, len, f) == len;
  if (f && fclose(f) != 0) ok = false;
  if (ok && rename(tmp, path) != 0) ok = false;
  if (!ok) {
    tool_error("cannot write '%s': %s", path, strerror(errno));
    unlink(tmp);
  }
  return ok;
}

const char *tool_store(Comp *c, const Tensor *t) {
  const char *hash = store_write(c, t);
  return hash ? arena_strndup(&c->arena, hash, 24) : NULL;
}
