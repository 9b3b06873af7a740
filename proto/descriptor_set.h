/* descriptor_set.h - the serialized google.protobuf.FileDescriptorSet of
 * every sluice/v1 proto plus grpc health and reflection, with their imports.
 * Generated at build time (proto/meson.build); static, read-only. */
#ifndef SLUICE_DESCRIPTOR_SET_H
#define SLUICE_DESCRIPTOR_SET_H

#include <stddef.h>
#include <stdint.h>

extern const uint8_t sluice_descriptor_set[];
extern const size_t sluice_descriptor_set_len;

#endif
