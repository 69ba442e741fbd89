// Implementation detail of AffinityData: gzip decoding through the system zlib (zlib1g-dev on
// Debian, part of the SDK on Apple platforms). zlib's initialisers are C macros Swift cannot call,
// so this one function wraps them.
#ifndef AFFINITY_ZLIB_H
#define AFFINITY_ZLIB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Decodes a gzip file held in memory (every member of a multi-member file, as `gzip -dc` does).
/// On success returns 0 and sets `*out` (release it with free) and `*out_len`. On failure returns
/// -1, leaves `*out` NULL and writes a message into `error` (at most `error_len` bytes, NUL-ended):
/// corrupt data, a truncated file, or output beyond `max_out` bytes (a decompression bomb).
int affinity_gunzip(const uint8_t *in, size_t in_len, size_t max_out,
                    uint8_t **out, size_t *out_len, char *error, size_t error_len);

/// Streaming decoder over an open file descriptor (every member, as above), for files whose text is
/// not held in memory. `max_out` bounds the total decompressed bytes (0 = no bound).
typedef struct affinity_gz affinity_gz;
affinity_gz *affinity_gz_open(int fd, size_t max_out, char *error, size_t error_len);
/// Decodes up to `out_len` bytes into `out`: returns how many (> 0), 0 at the end of the last
/// member, or -1 with a message in `error` (corrupt, truncated, over `max_out`, a read error).
long affinity_gz_read(affinity_gz *g, uint8_t *out, size_t out_len, char *error, size_t error_len);
void affinity_gz_close(affinity_gz *g);

#ifdef __cplusplus
}
#endif
#endif
