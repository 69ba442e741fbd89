#include "affinity_zlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static int fail(z_stream *s, uint8_t *buffer, char *error, size_t error_len, const char *message) {
    if (s) inflateEnd(s);
    free(buffer);
    snprintf(error, error_len, "%s", message);
    return -1;
}

int affinity_gunzip(const uint8_t *in, size_t in_len, size_t max_out,
                    uint8_t **out, size_t *out_len, char *error, size_t error_len) {
    *out = NULL;
    *out_len = 0;
    if (max_out == 0) max_out = SIZE_MAX;
    size_t capacity = in_len < 1024 ? 4096 : in_len * 4;
    if (capacity > max_out) capacity = max_out;
    if (capacity == 0) capacity = 1;
    uint8_t *buffer = malloc(capacity);
    if (!buffer) return fail(NULL, NULL, error, error_len, "out of memory");
    z_stream s;
    memset(&s, 0, sizeof s);
    // 16 + MAX_WBITS: a gzip header and trailer (CRC-32 and length are checked by zlib).
    if (inflateInit2(&s, 16 + MAX_WBITS) != Z_OK) return fail(NULL, buffer, error, error_len, "zlib could not start");
    size_t used = 0;
    size_t offset = 0;
    for (;;) {
        // zlib counts in unsigned int: feed at most 1 GiB at a time.
        size_t chunk = in_len - offset;
        if (chunk > (1u << 30)) chunk = 1u << 30;
        s.next_in = (Bytef *)(in + offset);
        s.avail_in = (uInt)chunk;
        int status = Z_OK;
        while (s.avail_in > 0 || status == Z_OK) {
            if (used == capacity) {
                if (capacity >= max_out) return fail(&s, buffer, error, error_len, "decompressed size exceeds the memory budget");
                size_t grown = capacity * 2 > max_out ? max_out : capacity * 2;
                uint8_t *bigger = realloc(buffer, grown);
                if (!bigger) return fail(&s, buffer, error, error_len, "out of memory");
                buffer = bigger;
                capacity = grown;
            }
            size_t room = capacity - used;
            if (room > (1u << 30)) room = 1u << 30;
            s.next_out = buffer + used;
            s.avail_out = (uInt)room;
            status = inflate(&s, Z_NO_FLUSH);
            used += room - s.avail_out;
            if (status == Z_STREAM_END) break;
            if (status == Z_BUF_ERROR && s.avail_in == 0) break; // needs more input
            if (status != Z_OK) {
                return fail(&s, buffer, error, error_len, status == Z_DATA_ERROR ? "corrupt gzip data" : "zlib error while decoding");
            }
        }
        offset += chunk - s.avail_in;
        if (status == Z_STREAM_END) {
            // Another member may follow (concatenated gzip files); trailing zero padding is ignored.
            size_t rest = offset;
            while (rest < in_len && in[rest] == 0) rest++;
            if (rest >= in_len) break;
            offset = rest;
            if (inflateReset(&s) != Z_OK) return fail(&s, buffer, error, error_len, "zlib error between members");
            continue;
        }
        if (offset >= in_len) return fail(&s, buffer, error, error_len, "truncated gzip file (ends inside the compressed data)");
    }
    inflateEnd(&s);
    *out = buffer;
    *out_len = used;
    return 0;
}
