/* true_: exits with status 0 (the exec target of fork_exec). */
#include "libc.h"

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return 0;
}
