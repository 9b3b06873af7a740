/* pbjson.h - proto3 JSON <-> protobuf-c messages, for any message type.
 *
 * Driven by protobuf-c's runtime descriptors: one implementation serves
 * every message. Follows the proto3 JSON mapping (what grpcurl sends and
 * prints): lowerCamelCase names on output, either that or the proto field
 * name on input; enums by name (numbers accepted on input); 64-bit integers
 * as strings (numbers accepted on input); bytes as base64; default values
 * omitted on output; null means default. Unknown fields, wrong types,
 * out-of-range numbers and unknown enum names are errors naming the JSON
 * path, e.g. "resources[2].route.maxBodyBytes: expected an unsigned
 * integer".
 */
#ifndef SLUICE_PBJSON_H
#define SLUICE_PBJSON_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#define PBJSON_ERR_LEN 256

/* Parses `len` bytes of JSON text into a new message of type `desc`.
 * Returns 0 and the message in *ret (free with protobuf_c_message_free_unpacked
 * (m, NULL)); -EBADMSG with the reason in err (may be NULL); -ENOMEM.
 * Nesting deeper than 64 levels is an error. */
int pbjson_decode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
		  char err[PBJSON_ERR_LEN], ProtobufCMessage **ret);

/* Convenience: reads a whole file (at most 256 MiB) and decodes it.
 * -errno for I/O errors (err says which file; -EFBIG when too large).
 * Decode errors are prefixed with the file name too: "'f.json': name: ...". */
int pbjson_decode_file(const ProtobufCMessageDescriptor *desc, const char *path,
		       char err[PBJSON_ERR_LEN], ProtobufCMessage **ret);

enum pbjson_flags {
	PBJSON_PRETTY = 1 << 0,        /* two-space indentation */
	PBJSON_PROTO_NAMES = 1 << 1,   /* proto field names, not lowerCamelCase */
};

/* Encodes a message as JSON. Returns a malloc'ed NUL-terminated string
 * (free()), or NULL with errno. */
/* errno values: ENOMEM; EINVAL for a NULL message, unknown flags or output
 * nested deeper than 64 levels (pbjson_decode could not read it back);
 * EILSEQ for a string field that is not valid UTF-8. */
char *pbjson_encode(const ProtobufCMessage *msg, unsigned flags);

#endif
