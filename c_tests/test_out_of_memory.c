/* Out of memory: under setrlimit(RLIMIT_AS) every family returns NULL (no
 * abort, no crash), blocks allocated before stay intact, and allocation
 * works again once memory is available. */
#include "families.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>


#define MAX_BLOCKS (1 << 22)
static unsigned char *blocks[MAX_BLOCKS];

static long vm_size_kib(void)
{
    char line[256];
    long kib = -1;
    FILE *status = fopen("/proc/self/status", "r");
    while (status && fgets(line, sizeof line, status))
        if (sscanf(line, "VmSize: %ld kB", &kib) == 1)
            break;
    if (status)
        fclose(status);
    return kib;
}

static int run(void)
{
    int failures = 0;
    struct rlimit original, limited;
    getrlimit(RLIMIT_AS, &original);
    for (size_t f = 0; f < NFAMILIES; f++) {
        const family *fam = &families[f];
        size_t count = 0, sizes[] = { 24, 500, 4000, 100000 };
        for (size_t s = 0; s < 4; s++) {
            size_t size = sizes[s];
            count = 0;
            limited = original;
            limited.rlim_cur = (rlim_t)(vm_size_kib() + 32 * 1024) * 1024; /* 32 MiB more */
            if (setrlimit(RLIMIT_AS, &limited) != 0) {
                perror("setrlimit");
                return 2;
            }
            while (count < MAX_BLOCKS) {
                unsigned char *p = fam->malloc(size);
                if (!p)
                    break;
                p[0] = (unsigned char)count;
                p[size - 1] = (unsigned char)(count >> 8);
                blocks[count++] = p;
            }
            int exhausted = count < MAX_BLOCKS;
            int calloc_null = fam->calloc(size, 1) == NULL || size <= 512; /* a pooled class may still have room */
            /* 1 GiB cannot fit under the limit: realloc fails, the block stays. */
            void *grown = count ? fam->realloc(blocks[0], (size_t)1 << 30) : NULL;
            int realloc_kept = grown == NULL;
            if (grown)
                blocks[0] = grown;
            setrlimit(RLIMIT_AS, &original);                 /* memory available again */
            unsigned char *again = fam->malloc(size);
            int intact = 1;
            for (size_t i = 0; i < count; i++)
                intact &= blocks[i][0] == (unsigned char)i && blocks[i][size - 1] == (unsigned char)(i >> 8);
            for (size_t i = 0; i < count; i++)
                fam->free(blocks[i]);
            fam->free(again);
            if (!exhausted || !calloc_null || !realloc_kept || !again || !intact) {
                fprintf(stderr, "FAIL %s, %zu-byte blocks: exhausted %d, calloc NULL %d, realloc kept %d, "
                        "recovered %d, intact %d (%zu blocks)\n", fam->name, size, exhausted, calloc_null,
                        realloc_kept, again != NULL, intact, count);
                failures++;
            }
        }
        PyCore_Trim();
        if (!failures)
            printf("ok: %s: NULL when the address space runs out (24 B to 100 KB), blocks intact, recovery\n",
                   fam->name);
    }
    return failures ? 1 : 0;
}

int main(void)
{
#if defined(__SANITIZE_ADDRESS__)
    /* ASan reserves terabytes of shadow memory: an address-space limit
     * cannot be set under it. The plain build runs this test. */
    (void)run;
    puts("skipped under AddressSanitizer: RLIMIT_AS conflicts with its shadow memory (run in the plain build)");
    return 0;
#else
    return run();
#endif
}
