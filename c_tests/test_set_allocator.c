/* PyMem_GetAllocator and PyMem_SetAllocator in a program without CPython,
 * as CPython's documentation uses them: a hook set over the table it
 * replaces sees every call of its domain and hands the work to the table
 * beneath; setting the old table back ends it; a table that is not a hook
 * serves its domain alone; what names no domain, NULL and a table with a
 * NULL function set nothing. */
#include <pymalloc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                \
            return 1;                                                      \
        }                                                                  \
    } while (0)

/* The hook: counts the calls and the context it receives. */
static PyMemAllocatorEx beneath;
static int hook_context;
static size_t mallocs, callocs, reallocs, frees, wrong_context;

static void count_context(void *ctx)
{
    if (ctx != &hook_context)
        wrong_context++;
}
static void *hook_malloc(void *ctx, size_t size)
{
    count_context(ctx);
    mallocs++;
    return beneath.malloc(beneath.ctx, size);
}
static void *hook_calloc(void *ctx, size_t nelem, size_t elsize)
{
    count_context(ctx);
    callocs++;
    return beneath.calloc(beneath.ctx, nelem, elsize);
}
static void *hook_realloc(void *ctx, void *ptr, size_t size)
{
    count_context(ctx);
    reallocs++;
    return beneath.realloc(beneath.ctx, ptr, size);
}
static void hook_free(void *ctx, void *ptr)
{
    count_context(ctx);
    frees++;
    beneath.free(beneath.ctx, ptr);
}

/* A table that is not a hook: the C library alone. */
static void *libc_malloc(void *ctx, size_t size) { (void)ctx; return malloc(size ? size : 1); }
static void *libc_calloc(void *ctx, size_t n, size_t s) { (void)ctx; return calloc(n ? n : 1, s ? s : 1); }
static void *libc_realloc(void *ctx, void *p, size_t s) { (void)ctx; return realloc(p, s ? s : 1); }
static void libc_free(void *ctx, void *p) { (void)ctx; free(p); }

int main(void)
{
    PyMemAllocatorEx hook = {&hook_context, hook_malloc, hook_calloc, hook_realloc, hook_free};
    PyMemAllocatorEx got;
    char *block, *zeroed;
    size_t i;

    /* The configured table serves the domain as configured: the pools. */
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &beneath);
    CHECK(beneath.malloc && beneath.calloc && beneath.realloc && beneath.free);
    block = beneath.malloc(beneath.ctx, 40);
    CHECK(block != NULL && PyCore_IsPooled(block));
    beneath.free(beneath.ctx, block);

    /* The hook over it sees every call, with its context. */
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &hook);
    block = PyMem_Malloc(40);
    CHECK(block != NULL && mallocs == 1 && PyCore_IsPooled(block));
    memset(block, 'x', 40);
    block = PyMem_Realloc(block, 400);
    CHECK(block != NULL && reallocs == 1 && block[39] == 'x');
    PyMem_Free(block);
    CHECK(frees == 1);
    zeroed = PyMem_Calloc(10, 30);
    CHECK(zeroed != NULL && callocs == 1);
    for (i = 0; i < 300; i++)
        CHECK(zeroed[i] == 0);
    PyMem_Free(zeroed);
    CHECK(frees == 2 && wrong_context == 0);
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &got);
    CHECK(got.ctx == &hook_context && got.malloc == hook_malloc && got.free == hook_free);

    /* Only its domain. */
    block = PyObject_Malloc(40);
    CHECK(block != NULL && PyCore_IsPooled(block));
    PyObject_Free(block);
    block = PyMem_RawMalloc(40);
    CHECK(block != NULL);
    PyMem_RawFree(block);
    CHECK(mallocs == 1 && frees == 2);

    /* Nothing set: no domain 7, NULL, a NULL function (messages on stderr). */
    PyMem_GetAllocator((PyMemAllocatorDomain)7, &got);
    CHECK(got.ctx == NULL && got.malloc == NULL && got.free == NULL);
    PyMem_SetAllocator((PyMemAllocatorDomain)7, &beneath);
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, NULL);
    got = beneath;
    got.free = NULL;
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &got);
    block = PyMem_Malloc(8);
    CHECK(block != NULL && mallocs == 2);
    PyMem_Free(block);

    /* The old table set back: the hook sees nothing more. */
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &beneath);
    block = PyMem_Malloc(40);
    CHECK(block != NULL && PyCore_IsPooled(block) && mallocs == 2);
    PyMem_Free(block);
    CHECK(frees == 3);

    /* A table that is not a hook serves its domain alone. */
    {
        PyMemAllocatorEx object_table, libc_table = {NULL, libc_malloc, libc_calloc,
                                                     libc_realloc, libc_free};
        PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &object_table);
        PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &libc_table);
        block = PyObject_Malloc(40);
        CHECK(block != NULL && !PyCore_IsPooled(block));
        block = PyObject_Realloc(block, 4000);
        CHECK(block != NULL && !PyCore_IsPooled(block));
        PyObject_Free(block);
        PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &object_table);
        block = PyObject_Malloc(40);
        CHECK(block != NULL && PyCore_IsPooled(block));
        PyObject_Free(block);
    }

    puts("test_set_allocator: ok");
    return 0;
}
