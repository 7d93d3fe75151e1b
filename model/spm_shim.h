// C interface of the SentencePiece shim library (layer: model, internal). Debian's
// libsentencepiece.so carries its own copy of protobuf 3.14 and exports it; in a process that
// also uses the system protobuf (gRPC) the two copies bind to each other and crash. So the
// library is reached only through this shim, loaded with dlopen(RTLD_LOCAL | RTLD_DEEPBIND):
// its protobuf stays private to it. Plain C types only; every function is thread-safe on a
// loaded model (SentencePiece's processor is immutable after loading).
#pragma once

#include <stddef.h>
#include <stdint.h>

extern "C" {

struct TpserveSpm;

// Parses a serialized ModelProto. nullptr on failure, with a message in `error`.
typedef TpserveSpm* (*TpserveSpmLoadFn)(const char* bytes, size_t size, char* error,
                                        size_t error_capacity);
typedef void (*TpserveSpmFreeFn)(TpserveSpm* model);
// Number of pieces; bos/eos ids (-1 when absent).
typedef int32_t (*TpserveSpmIntFn)(const TpserveSpm* model);
// Kind of piece `id`: 0 text, 1 control, 2 byte (value in *byte_value), -1 a byte piece not
// spelled <0xNN>.
typedef int32_t (*TpserveSpmKindFn)(const TpserveSpm* model, int32_t id, int32_t* byte_value);
// Encodes / decodes; writes at most `capacity` items and returns how many there are in all
// (call again with a larger buffer when that is more), or -1 on failure.
typedef int64_t (*TpserveSpmEncodeFn)(const TpserveSpm* model, const char* text, size_t size,
                                      int32_t* out, size_t capacity);
typedef int64_t (*TpserveSpmDecodeFn)(const TpserveSpm* model, const int32_t* ids, size_t count,
                                      char* out, size_t capacity);

}  // extern "C"
