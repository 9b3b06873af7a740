/* pmap.c - placeholder while the module is written. */
