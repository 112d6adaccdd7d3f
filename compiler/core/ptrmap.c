/* ptrmap.c — see ptrmap.h. */
#include "ptrmap.h"
#include <stdint.h>
#include <stdlib.h>
#include "diag.h"

static size_t ptr_hash(const void *p) { return (size_t)(((uintptr_t)p >> 4) * 0x9e3779b97f4a7c15ull); }

PtrMapEntry *ptrmap_find(const PtrMap *m, const void *key) {
  if (!m->cap) return NULL;
  for (size_t i = ptr_hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    if (m->slot[i].key == key) return &m->slot[i];
    if (!m->slot[i].key) return NULL;
  }
}

PtrMapEntry *ptrmap_get(PtrMap *m, const void *key) {
  PtrMapEntry *e = ptrmap_find(m, key);
  if (e) return e;
  if (2 * (m->count + 1) > m->cap) {
    PtrMap big = {calloc(m->cap ? 2 * m->cap : 64, sizeof(PtrMapEntry)), m->cap ? 2 * m->cap : 64, m->count};
    if (!big.slot) ICE("out of memory");
    for (size_t i = 0; i < m->cap; i++)
      if (m->slot[i].key) {
        size_t j = ptr_hash(m->slot[i].key) & (big.cap - 1);
        while (big.slot[j].key) j = (j + 1) & (big.cap - 1);
        big.slot[j] = m->slot[i];
      }
    free(m->slot);
    *m = big;
  }
  size_t i = ptr_hash(key) & (m->cap - 1);
  while (m->slot[i].key) i = (i + 1) & (m->cap - 1);
  m->count++;
  m->slot[i] = (PtrMapEntry){.key = key};
  return &m->slot[i];
}

void ptrmap_free(PtrMap *m) {
  free(m->slot);
  *m = (PtrMap){0};
}
