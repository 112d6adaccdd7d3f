/* arena.c — bump allocator in growing blocks (see arena.h). */
#include "arena.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ArenaBlock {
  ArenaBlock *prev;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
};

void *arena_alloc(Arena *a, size_t size) {
  size = (size + 15) & ~(size_t)15;
  ArenaBlock *b = a->head;
  if (!b || b->used + size > b->cap) {
    size_t cap = size > (1u << 20) ? size : (1u << 20);
    b = malloc(sizeof(ArenaBlock) + cap);
    if (!b) {
      fprintf(stderr, "circc: internal error: out of memory\n");
      exit(70);
    }
    b->prev = a->head;
    b->used = 0;
    b->cap = cap;
    a->head = b;
  }
  void *p = b->data + b->used;
  b->used += size;
  a->total += size;
  memset(p, 0, size);
  return p;
}

char *arena_strndup(Arena *a, const char *s, size_t n) {
  char *p = arena_alloc(a, n + 1);
  memcpy(p, s, n);
  p[n] = 0;
  return p;
}

char *arena_strdup(Arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }

char *arena_printf(Arena *a, const char *fmt, ...) {
  char small[256];
  va_list ap;
  if (!fmt) return arena_strdup(a, ""); /* also quiets gcc 12's -Wformat-truncation under -fsanitize */
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  char *p = arena_alloc(a, (size_t)n + 1);
  if ((size_t)n < sizeof small) {
    memcpy(p, small, (size_t)n + 1);
    return p;
  }
  va_start(ap, fmt);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return p;
}

void arena_free_all(Arena *a) {
  while (a->head) {
    ArenaBlock *prev = a->head->prev;
    free(a->head);
    a->head = prev;
  }
  a->total = 0;
}
