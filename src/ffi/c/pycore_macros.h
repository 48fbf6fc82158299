/* Domains for PyCore_GetBackendName (CPython's PYMEM_DOMAIN_* values). */
#define PYCORE_DOMAIN_RAW 0
#define PYCORE_DOMAIN_MEM 1
#define PYCORE_DOMAIN_OBJ 2
