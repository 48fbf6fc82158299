/* pymalloc-rs demo: what a C program embedding Python-like objects does
 * with the memory API, at scale, then the allocator's own account of it.
 *
 * Four threads each build a dictionary-like hash table of string keys
 * (PyMem_Malloc'd strings, GC-tracked node objects), integer objects
 * (PyObject_New), lists that grow with PyMem_Resize, and a binary tree of
 * variable-size "tuple" objects (PyObject_NewVar); a quarter of the nodes
 * are handed to a neighbouring thread to free; everything is torn down. */
#include <pymalloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct { PyObject_HEAD long value; } IntObject;
typedef struct { PyObject_VAR_HEAD PyObject *items[1]; } TupleObject;
typedef struct Node { PyObject_HEAD struct Node *next; char *key; IntObject *value; } NodeObject;

static PyTypeObject IntType = { PyVarObject_HEAD_INIT(NULL, 0) .tp_name = "int", .tp_basicsize = sizeof(IntObject) };
static PyTypeObject TupleType = { PyVarObject_HEAD_INIT(NULL, 0) .tp_name = "tuple",
                                  .tp_basicsize = sizeof(TupleObject) - sizeof(PyObject *),
                                  .tp_itemsize = sizeof(PyObject *) };
static PyTypeObject NodeType = { PyVarObject_HEAD_INIT(NULL, 0) .tp_name = "node", .tp_basicsize = sizeof(NodeObject) };

#define THREADS 4
#define ENTRIES 150000
#define BUCKETS 65536
#define TREE_DEPTH 16

typedef struct {
    int id;
    long objects;
    NodeObject *handoff;              /* nodes the neighbour must free */
    pthread_mutex_t lock;
} worker;

static worker workers[THREADS];

static IntObject *new_int(long value)
{
    IntObject *op = PyObject_New(IntObject, &IntType);
    op->value = value;
    return op;
}

static TupleObject *build_tree(int depth, long *count)
{
    TupleObject *t = PyObject_NewVar(TupleObject, &TupleType, depth > 0 ? 2 : 1);
    (*count)++;
    if (depth > 0) {
        t->items[0] = (PyObject *)build_tree(depth - 1, count);
        t->items[1] = (PyObject *)build_tree(depth - 1, count);
    } else {
        t->items[0] = (PyObject *)new_int(depth);
        (*count)++;
    }
    return t;
}

static void free_tree(TupleObject *t)
{
    for (Py_ssize_t i = 0; i < Py_SIZE(t); i++) {
        if (Py_TYPE(t->items[i]) == &TupleType)
            free_tree((TupleObject *)t->items[i]);
        else
            PyObject_Del(t->items[i]);
    }
    PyObject_Del(t);
}

static void free_node(NodeObject *n)
{
    PyMem_Free(n->key);
    PyObject_Del(n->value);
    PyObject_GC_Del(n);
}

static void *work(void *arg)
{
    worker *w = arg;
    NodeObject **table = PyMem_Calloc(BUCKETS, sizeof *table);
    long *list = PyMem_New(long, 4);
    size_t list_size = 4;
    char key[32];

    for (long i = 0; i < ENTRIES; i++) {                  /* dict of str -> int */
        int length = snprintf(key, sizeof key, "key-%d-%ld", w->id, i);
        NodeObject *n = PyObject_GC_New(NodeObject, &NodeType);
        n->key = PyMem_Malloc((size_t)length + 1);
        memcpy(n->key, key, (size_t)length + 1);
        n->value = new_int(i);
        size_t h = (size_t)i * 2654435761u % BUCKETS;
        n->next = table[h];
        table[h] = n;
        if ((size_t)i == list_size) {                     /* list.append */
            list_size *= 2;
            PyMem_Resize(list, long, list_size);
        }
        list[i] = i;
        w->objects += 3;
    }
    TupleObject *tree = build_tree(TREE_DEPTH, &w->objects);
    free_tree(tree);

    worker *neighbour = &workers[(w->id + 1) % THREADS];
    for (size_t b = 0; b < BUCKETS; b++) {                /* teardown */
        NodeObject *n = table[b];
        while (n) {
            NodeObject *next = n->next;
            if (b % 4 == 0) {                             /* hand to the neighbour */
                pthread_mutex_lock(&neighbour->lock);
                n->next = neighbour->handoff;
                neighbour->handoff = n;
                pthread_mutex_unlock(&neighbour->lock);
            } else {
                free_node(n);
            }
            n = next;
        }
    }
    PyMem_Free(table);
    PyMem_Del(list);
    return NULL;
}

int main(void)
{
    pthread_t threads[THREADS];
    struct timespec start, end;
    long objects = 0, handed = 0;

    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < THREADS; i++) {
        workers[i].id = i;
        pthread_mutex_init(&workers[i].lock, NULL);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_create(&threads[i], NULL, work, &workers[i]);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < THREADS; i++) {                   /* nodes handed over */
        NodeObject *n = workers[i].handoff;
        while (n) {
            NodeObject *next = n->next;
            free_node(n);
            handed++;
            n = next;
        }
        objects += workers[i].objects;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double seconds = (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9;
    printf("pymalloc-rs demo: %d threads built and freed %ld objects and strings "
           "(%ld nodes freed by another thread) in %.3f s: %.1f M objects/s\n\n",
           THREADS, objects, handed, seconds, objects / seconds / 1e6);
    PyCore_Trim();
    printf("The allocator's statistics after the teardown (PyCore_PrintStats):\n\n");
    PyCore_PrintStats(stdout);
    return 0;
}
