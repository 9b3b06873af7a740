/* fileio.h - a whole file into memory, with a cap.
 *
 * For the small files a process reads whole: policy JSON, PEM certificates
 * and keys, token files. Reads until end of file, so pipes and /proc files
 * (whose st_size says 0) work too.
 */
#ifndef SLUICE_FILEIO_H
#define SLUICE_FILEIO_H

#include <stddef.h>

/* Reads the file at `path` into *out: malloc'ed, NUL-terminated (the
 * caller frees), its length without the NUL in *len (len may be NULL).
 * Returns 0, or a negative errno: -EISDIR for a directory, -EFBIG when it
 * holds more than max_bytes, -ENOMEM, or what open(2)/read(2) said. On
 * error *out is untouched and nothing stays allocated. */
int fileio_read(const char *path, size_t max_bytes, char **out, size_t *len);

#endif
