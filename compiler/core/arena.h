/* arena.h — bump allocator. All IR nodes, shapes and strings of a compilation
 * live in one Arena owned by the Comp; nothing is freed individually.
 * Allocation never fails (out of memory is fatal, exit 70). Memory is zeroed. */
#ifndef CIRCC_ARENA_H
#define CIRCC_ARENA_H
#include <stddef.h>

typedef struct ArenaBlock ArenaBlock;
typedef struct Arena {
  ArenaBlock *head;     /* newest block */
  size_t total;         /* bytes handed out, for --report */
} Arena;

void *arena_alloc(Arena *a, size_t size);               /* zeroed, 16-byte aligned */
char *arena_strdup(Arena *a, const char *s);
char *arena_strndup(Arena *a, const char *s, size_t n);
char *arena_printf(Arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void arena_free_all(Arena *a);                          /* releases every block */

#define ARENA_NEW(a, T) ((T *)arena_alloc((a), sizeof(T)))
#define ARENA_ARRAY(a, T, n) ((T *)arena_alloc((a), sizeof(T) * (size_t)(n)))
#endif
