/* Built from an installed copy through `pkg-config --cflags --libs pymalloc`. */
#include <pymalloc.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    char *text = PyMem_Malloc(32);

    if (text == NULL)
        return 1;
    strcpy(text, "installed pymalloc works");
    puts(text);
    PyMem_Free(text);
    return 0;
}
