/* snapshot_test.c - placeholder while the module is written. */
#include <criterion/criterion.h>
