/* pbjson.c - placeholder while the module is written. */
