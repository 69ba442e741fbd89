#include "affinity_zlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <errno.h>
#include <unistd.h>

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

// MARK: streaming

struct affinity_gz {
    z_stream stream;
    int fd;
    int at_eof;         // the file has no more bytes
    int member_ended;   // the last inflate finished a member
    size_t produced;    // decompressed bytes so far
    size_t max_out;
    uint8_t input[1 << 20];
};

affinity_gz *affinity_gz_open(int fd, size_t max_out, char *error, size_t error_len) {
    affinity_gz *g = calloc(1, sizeof *g);
    if (!g) { snprintf(error, error_len, "out of memory"); return NULL; }
    g->fd = fd;
    g->max_out = max_out == 0 ? SIZE_MAX : max_out;
    if (inflateInit2(&g->stream, 16 + MAX_WBITS) != Z_OK) {
        free(g);
        snprintf(error, error_len, "zlib could not start");
        return NULL;
    }
    return g;
}

// Refills the input buffer when it is empty; returns -1 on a read error.
static int refill(affinity_gz *g, char *error, size_t error_len) {
    if (g->stream.avail_in > 0 || g->at_eof) return 0;
    for (;;) {
        ssize_t n = read(g->fd, g->input, sizeof g->input);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { snprintf(error, error_len, "read failed (%s)", strerror(errno)); return -1; }
        if (n == 0) g->at_eof = 1;
        g->stream.next_in = g->input;
        g->stream.avail_in = (uInt)n;
        return 0;
    }
}

long affinity_gz_read(affinity_gz *g, uint8_t *out, size_t out_len, char *error, size_t error_len) {
    if (out_len > (1u << 30)) out_len = 1u << 30;
    for (;;) {
        if (refill(g, error, error_len) != 0) return -1;
        if (g->member_ended) {
            // Another member may follow (concatenated gzip files); trailing zero padding is ignored.
            while (g->stream.avail_in > 0 && *g->stream.next_in == 0) { g->stream.next_in++; g->stream.avail_in--; }
            if (g->stream.avail_in == 0) {
                if (g->at_eof) return 0;
                continue;
            }
            if (inflateReset(&g->stream) != Z_OK) { snprintf(error, error_len, "zlib error between members"); return -1; }
            g->member_ended = 0;
        }
        if (g->stream.avail_in == 0 && g->at_eof) {
            snprintf(error, error_len, "truncated gzip file (ends inside the compressed data)");
            return -1;
        }
        g->stream.next_out = out;
        g->stream.avail_out = (uInt)out_len;
        int status = inflate(&g->stream, Z_NO_FLUSH);
        size_t got = out_len - g->stream.avail_out;
        if (status == Z_STREAM_END) g->member_ended = 1;
        else if (status != Z_OK && !(status == Z_BUF_ERROR && g->stream.avail_in == 0)) {
            snprintf(error, error_len, "%s", status == Z_DATA_ERROR ? "corrupt gzip data" : "zlib error while decoding");
            return -1;
        }
        g->produced += got;
        if (g->produced > g->max_out) {
            snprintf(error, error_len, "decompressed size exceeds the memory budget");
            return -1;
        }
        if (got > 0) return (long)got;
    }
}

void affinity_gz_close(affinity_gz *g) {
    if (!g) return;
    inflateEnd(&g->stream);
    free(g);
}
