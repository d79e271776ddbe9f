/* hello: prints a greeting and its arguments. */
#include "libc.h"

int main(int argc, char **argv)
{
    printf("hello, world\n");
    printf("hello argc=%d pid=%d\n", argc, getpid());
    for (int i = 1; i < argc; i++)
        printf("hello arg%d=%s\n", i, argv[i]);
    return 0;
}
