/* ptrmap.h — the one pointer-keyed map: open addressing from a pointer (a
 * node, usually) to a small record, for the memo tables of passes that walk
 * a DAG (modules.c, simplify.c, eval.c). Power-of-two capacity, at most half
 * full; entries move when the map grows. */
#ifndef CIRCC_PTRMAP_H
#define CIRCC_PTRMAP_H
#include <stdbool.h>
#include <stddef.h>

typedef struct PtrMapEntry {
  const void *key;
  void *ptr;     /* the value (e.g. the rewritten node, a tensor) */
  int num;       /* a small number (e.g. batch dims, a use count) */
  bool flag;
  double real;   /* a measure (e.g. a cost) */
} PtrMapEntry;

typedef struct PtrMap {
  PtrMapEntry *slot;
  size_t cap, count;
} PtrMap;

/* key's entry, NULL if absent. */
PtrMapEntry *ptrmap_find(const PtrMap *m, const void *key);
/* key's entry, created zeroed if absent; valid until the next ptrmap_get. */
PtrMapEntry *ptrmap_get(PtrMap *m, const void *key);
void ptrmap_free(PtrMap *m);
#endif
