/* Every allocation function and macro of the memory API, exactly as a C
 * user writes them: zero sizes, alignment, free(NULL), sizes above
 * PY_SSIZE_T_MAX, calloc zeroing and overflow, the typed PyMem_New/Resize
 * macros, realloc across the small/large boundary in both directions. */
#include "families.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)


static unsigned char pattern(size_t i, unsigned seed) { return (unsigned char)(i * 7 + seed * 13 + 1); }

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pattern(i, seed);
}

static int intact(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern(i, seed))
            return 0;
    return 1;
}

static void zero_sizes(const family *f)
{
    void *a = f->malloc(0), *b = f->malloc(0), *c = f->calloc(0, 8), *d = f->calloc(8, 0), *e = f->calloc(0, 0);
    CHECK(a && b && c && d && e, "%s: zero-size requests return non-NULL", f->name);
    CHECK(a != b && a != c && c != d && d != e, "%s: zero-size blocks are distinct", f->name);
    void *r = f->realloc(f->malloc(10), 0);
    CHECK(r != NULL, "%s: realloc(p, 0) returns a non-NULL block", f->name);
    f->free(r);
    f->free(a); f->free(b); f->free(c); f->free(d); f->free(e);
    f->free(NULL);
}

static void alignment_and_content(const family *f)
{
    static void *blocks[4097];
    for (size_t n = 0; n <= 4096; n++) {
        blocks[n] = f->malloc(n);
        CHECK(blocks[n] != NULL, "%s: malloc(%zu)", f->name, n);
        CHECK(((uintptr_t)blocks[n] & 15) == 0, "%s: malloc(%zu) is 16-byte aligned", f->name, n);
        fill(blocks[n], n, (unsigned)n);
    }
    for (size_t n = 0; n <= 4096; n++) {
        CHECK(intact(blocks[n], n, (unsigned)n), "%s: block of %zu bytes kept its content", f->name, n);
        f->free(blocks[n]);
    }
}

static void oversized(const family *f)
{
    size_t too_big = (size_t)PY_SSIZE_T_MAX + 1;
    void *keep = f->malloc(32);
    CHECK(f->malloc(too_big) == NULL && f->malloc(SIZE_MAX) == NULL, "%s: sizes > PY_SSIZE_T_MAX give NULL", f->name);
    CHECK(f->calloc(SIZE_MAX / 2, 3) == NULL, "%s: calloc multiplication overflow gives NULL", f->name);
    CHECK(f->calloc((size_t)PY_SSIZE_T_MAX, 2) == NULL, "%s: calloc above PY_SSIZE_T_MAX gives NULL", f->name);
    fill(keep, 32, 9);
    CHECK(f->realloc(keep, too_big) == NULL, "%s: realloc above PY_SSIZE_T_MAX gives NULL", f->name);
    CHECK(intact(keep, 32, 9), "%s: a refused realloc leaves the block intact", f->name);
    f->free(keep);
}

static void calloc_zeroes(const family *f)
{
    for (size_t n = 1; n <= 2048; n += (n < 600 ? 1 : 37)) {
        unsigned char *dirty = f->malloc(n);
        memset(dirty, 0xAB, n);
        f->free(dirty); /* the next calloc may reuse it */
        unsigned char *p = f->calloc(n, 1);
        size_t i = 0;
        while (i < n && p[i] == 0)
            i++;
        CHECK(i == n, "%s: calloc(%zu, 1) byte %zu is not zero", f->name, n, i);
        f->free(p);
    }
    unsigned char *big = f->calloc(1000, 1000);
    CHECK(big && big[0] == 0 && big[999999] == 0, "%s: large calloc zeroed", f->name);
    f->free(big);
}

static void realloc_across_threshold(const family *f)
{
    for (size_t from = 1; from <= 600; from += 7) {
        static const size_t targets[] = { 511, 512, 513, 1024, 4096, 100000 };
        for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
            size_t to = targets[t];
            unsigned char *p = f->malloc(from);
            fill(p, from, (unsigned)(from + to));
            p = f->realloc(p, to);
            CHECK(p != NULL && intact(p, from < to ? from : to, (unsigned)(from + to)),
                  "%s: %zu -> %zu keeps content", f->name, from, to);
            fill(p, to, 5);
            p = f->realloc(p, from);          /* and back down */
            CHECK(p != NULL && intact(p, from < to ? from : to, 5), "%s: %zu -> %zu -> %zu keeps content",
                  f->name, from, to, from);
            f->free(p);
        }
    }
    unsigned char *p = f->realloc(NULL, 100);
    CHECK(p != NULL, "%s: realloc(NULL, n) allocates", f->name);
    f->free(p);
}

static void foreign_pointers(void)
{
    /* A block from libc handed to the API: the address map sends it back. */
    void *a = malloc(100), *b = malloc(100), *c = malloc(5000);
    PyObject_Free(a);
    PyMem_Free(b);
    c = PyCore_Realloc(c, 10);
    CHECK(c != NULL && !PyCore_IsPooled(c), "a libc block stays with libc when resized");
    PyCore_Free(c);
    int on_stack = 0;
    void *pooled = PyCore_Malloc(64), *large = PyCore_Malloc(100000);
    CHECK(PyCore_IsPooled(pooled), "a 64-byte block is pooled");
    CHECK(!PyCore_IsPooled(large), "a 100000-byte block is not pooled");
    CHECK(!PyCore_IsPooled(&on_stack) && !PyCore_IsPooled(NULL), "stack and NULL are not pooled");
    CHECK(!PyCore_IsPooled((void *)UINTPTR_MAX), "any pointer value can be asked about");
    PyCore_Free(pooled);
    PyCore_Free(large);
}

struct point { double x, y; };

static void typed_macros(void)
{
    struct point *points = PyMem_New(struct point, 10), *saved;
    CHECK(points != NULL, "PyMem_New");
    points[9].y = 42;
    PyMem_Resize(points, struct point, 1000);
    CHECK(points != NULL && points[9].y == 42, "PyMem_Resize keeps content");
    saved = points;
    PyMem_Resize(points, struct point, (size_t)PY_SSIZE_T_MAX);
    CHECK(points == NULL, "PyMem_Resize overflow sets the pointer to NULL");
    PyMem_Del(saved);
    CHECK(PyMem_New(struct point, (size_t)PY_SSIZE_T_MAX / 4) == NULL, "PyMem_New overflow gives NULL");
    CHECK(PyMem_NEW(char, (size_t)PY_SSIZE_T_MAX + 1) == NULL, "PyMem_NEW above PY_SSIZE_T_MAX");
    int *numbers = PyMem_NEW(int, 3);
    numbers[2] = 7;
    PyMem_RESIZE(numbers, int, 300);
    CHECK(numbers && numbers[2] == 7, "PyMem_RESIZE");
    PyMem_DEL(numbers);
    char *m = PyMem_MALLOC(10);
    m = PyMem_REALLOC(m, 1000);
    PyMem_FREE(m);
    char *o = PyObject_MALLOC(10);
    o = PyObject_REALLOC(o, 1000);
    PyObject_FREE(o);
}

static void backend_names(void)
{
    const char *raw = PyCore_GetBackendName(PYCORE_DOMAIN_RAW), *obj = PyCore_GetBackendName(PYCORE_DOMAIN_OBJ);
    CHECK(raw && obj, "backend names");
    CHECK(PyCore_GetBackendName(-1) == NULL && PyCore_GetBackendName(3) == NULL, "unknown domains give NULL");
    if (getenv("PYMALLOC") == NULL && getenv("PYMALLOC_OBJ") == NULL) {
        void *p = PyObject_Malloc(32);
        CHECK(strcmp(obj, "pymalloc") == 0 && PyCore_IsPooled(p), "object domain is pooled by default");
        PyObject_Free(p);
    }
}

#define SECTION_OK(...) do { if (!failures) printf(__VA_ARGS__); } while (0)

int main(void)
{
    for (size_t i = 0; i < NFAMILIES; i++) {
        zero_sizes(&families[i]);
        alignment_and_content(&families[i]);
        oversized(&families[i]);
        calloc_zeroes(&families[i]);
        realloc_across_threshold(&families[i]);
    }
    SECTION_OK("ok: zero sizes, alignment 0..4096, oversize, calloc, realloc across 512 for every family\n");
    foreign_pointers();
    SECTION_OK("ok: libc pointers through the API, PyCore_IsPooled\n");
    typed_macros();
    SECTION_OK("ok: PyMem_New/NEW/Resize/RESIZE/Del/DEL and the MALLOC/REALLOC/FREE macros\n");
    backend_names();
    SECTION_OK("ok: PyCore_GetBackendName\n");
    /* the shrink rule of pooled blocks */
    char *p = PyObject_Malloc(512), *q = PyObject_Realloc(p, 400);
    CHECK(p == q, "shrinking 512 -> 400 keeps the block (less than a quarter)");
    q = PyObject_Realloc(q, 16);
    CHECK(p != q, "shrinking 512 -> 16 moves to a smaller class");
    PyObject_Free(q);
    SECTION_OK("ok: realloc keeps a block that shrinks by less than a quarter\n");
    return failures ? 1 : 0;
}
