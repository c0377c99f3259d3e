/*
 * spf plugin ABI, for plugins written in C (or anything that speaks the C ABI).
 *
 * Mirrors the Rust crate spf-plugin (src/lib.rs); a test checks that the two
 * agree on every constant, size, field offset and function signature.
 *
 * A plugin is a shared library that exports one object:
 *
 *     const SpfPluginDeclaration spf_plugin_declaration = { ... };
 *
 * spf reads it before calling anything. Its first six fields keep their layout in
 * every ABI version; the vtables may change with SPF_ABI_MAJOR. Its *_size fields
 * (sizeof of each struct below) must match spf's own, or spf refuses the plugin.
 *
 * Rules:
 *   - Everything spf passes in (config, event views, lines) is borrowed for the
 *     call only. Output goes back through SpfDecoderOut callbacks, which copy.
 *     Each side frees only what it allocated.
 *   - Calls are synchronous. One instance is never called from two threads at
 *     once, but successive calls may come from different threads.
 *   - Return SPF_OK, or SPF_ERROR with a message for last_error(). A failed call
 *     costs spf that one event; a plugin that keeps failing is disabled.
 */
#ifndef SPF_PLUGIN_H
#define SPF_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SPF_PLUGIN_MAGIC 0x53504650u /* "SPFP" */
#define SPF_ABI_MAJOR 1u
#define SPF_ABI_MINOR 0u

#define SPF_KIND_DECODER 1u
#define SPF_KIND_SINK 2u

#define SPF_OK 0
#define SPF_ERROR 1
#define SPF_PANIC 2

#define SPF_DIR_SEND 0u
#define SPF_DIR_RECV 1u

#define SPF_SOCK_STREAM 0u
#define SPF_SOCK_DGRAM 1u
#define SPF_SOCK_SEQPACKET 2u

/* A borrowed byte string; ptr may be NULL when len is 0. Not NUL-terminated. */
typedef struct SpfBytes {
    const uint8_t *ptr;
    size_t len;
} SpfBytes;

/* One event, lent for one decode() call. comm and path are UTF-8. */
typedef struct SpfEventView {
    uint64_t seq;
    uint64_t ts_ns;   /* kernel clock */
    uint64_t time_ns; /* wall clock, since the Unix epoch */
    uint64_t conn;    /* same for both directions of one connection */
    uint64_t socket;  /* the socket used (its inode), 0 when unknown */
    uint64_t len;     /* bytes the syscall moved */
    uint32_t pid;
    uint32_t tid;
    uint32_t peer_pid;
    uint32_t dir;       /* SPF_DIR_* */
    uint32_t sock;      /* SPF_SOCK_* */
    uint32_t truncated; /* 1 when data holds fewer bytes than len */
    SpfBytes comm;
    SpfBytes path;
    SpfBytes data;
} SpfEventView;

/* Host callbacks for a decoder's output. Both copy before returning; non-zero
 * means the host rejected the output and reported why itself. */
typedef struct SpfDecoderOut {
    void *ctx;
    /* json: a JSON object whose keys become top-level NDJSON fields (put
     * everything under one key named after the plugin); text: human rendering. */
    int32_t (*record)(void *ctx, const uint8_t *json, size_t json_len,
                      const uint8_t *text, size_t text_len);
    /* An error record about the input; code may be empty. */
    int32_t (*error)(void *ctx, const uint8_t *code, size_t code_len,
                     const uint8_t *message, size_t message_len);
} SpfDecoderOut;

/* Entries marked optional may be NULL. */
typedef struct SpfDecoderVtable {
    /* config: the plugin's TOML table as a JSON object (UTF-8, not
     * NUL-terminated). On failure, leave the message for last_error(NULL). */
    int32_t (*init)(const uint8_t *config, size_t config_len, void **instance);
    int32_t (*decode)(void *instance, const SpfEventView *event,
                      const SpfDecoderOut *out);
    int32_t (*lost)(void *instance, uint64_t count,
                    const SpfDecoderOut *out);                   /* optional */
    int32_t (*closed)(void *instance, uint64_t conn,
                      const SpfDecoderOut *out);                 /* optional */
    int32_t (*finish)(void *instance, const SpfDecoderOut *out); /* optional */
    /* Message of the last failed call on instance (of the last failed init on
     * this thread when instance is NULL); plugin-owned, valid until the next
     * call into the plugin. */
    const uint8_t *(*last_error)(void *instance, size_t *len);
    void (*destroy)(void *instance);
} SpfDecoderVtable;

typedef struct SpfSinkVtable {
    int32_t (*init)(const uint8_t *config, size_t config_len, void **instance);
    /* One record as one NDJSON line (a JSON object, no trailing newline). */
    int32_t (*write)(void *instance, const uint8_t *line, size_t line_len);
    int32_t (*flush)(void *instance); /* optional */
    const uint8_t *(*last_error)(void *instance, size_t *len);
    void (*destroy)(void *instance);
} SpfSinkVtable;

typedef struct SpfPluginDeclaration {
    uint32_t magic;     /* SPF_PLUGIN_MAGIC */
    uint32_t abi_major; /* SPF_ABI_MAJOR */
    uint32_t abi_minor; /* SPF_ABI_MINOR */
    uint32_t kind;      /* SPF_KIND_* */
    const char *name;   /* lowercase letters, digits, '-', '_' */
    const char *version;
    const SpfDecoderVtable *decoder; /* decoders: set; sinks: NULL */
    const SpfSinkVtable *sink;       /* sinks: set; decoders: NULL */
    /* sizeof each struct as this plugin was built; spf refuses the plugin when
     * any differs from its own, before calling anything. Set them all:
     *     .declaration_size = sizeof(SpfPluginDeclaration),
     *     .event_view_size = sizeof(SpfEventView),
     *     .decoder_out_size = sizeof(SpfDecoderOut),
     *     .decoder_vtable_size = sizeof(SpfDecoderVtable),
     *     .sink_vtable_size = sizeof(SpfSinkVtable), */
    uint32_t declaration_size;
    uint32_t event_view_size;
    uint32_t decoder_out_size;
    uint32_t decoder_vtable_size;
    uint32_t sink_vtable_size;
} SpfPluginDeclaration;

#ifdef __cplusplus
}
#endif

#endif /* SPF_PLUGIN_H */
