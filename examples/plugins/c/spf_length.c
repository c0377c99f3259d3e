/*
 * An spf decoder plugin in plain C: one record per event with its length and a
 * running total per instance.
 *
 *     cc -std=c11 -shared -fPIC -I plugin-sdk/include \
 *        -o libspf_length.so examples/plugins/c/spf_length.c
 *
 *     [decoder]
 *     type = "plugin"
 *     path = "/usr/local/lib/spf/libspf_length.so"
 *
 * Records: {"length":{"bytes":12,"captured":12,"total":40}}
 * It takes no config keys; any key makes init fail with a message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spf_plugin.h"

typedef struct {
    uint64_t total;
    char error[256];
} Length;

/* Message of the last failed init; see SpfDecoderVtable.last_error. */
static _Thread_local char init_error[256];

static int32_t length_init(const uint8_t *config, size_t config_len, void **instance) {
    /* The host always passes a JSON object; "{}" is the only one accepted here. */
    size_t i = 0, j = config_len;
    while (i < j && (config[i] == ' ' || config[i] == '\n')) i++;
    while (j > i && (config[j - 1] == ' ' || config[j - 1] == '\n')) j--;
    if (!(j - i == 2 && config[i] == '{' && config[i + 1] == '}')) {
        snprintf(init_error, sizeof init_error, "length takes no config keys, got %.*s",
                 (int)(config_len > 200 ? 200 : config_len), (const char *)config);
        return SPF_ERROR;
    }
    Length *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(init_error, sizeof init_error, "out of memory");
        return SPF_ERROR;
    }
    *instance = l;
    return SPF_OK;
}

static int32_t length_decode(void *instance, const SpfEventView *ev, const SpfDecoderOut *out) {
    Length *l = instance;
    if (ev->truncated && ev->data.len == 0) {
        snprintf(l->error, sizeof l->error, "event %llu carries no bytes", (unsigned long long)ev->seq);
        return SPF_ERROR;
    }
    l->total += ev->len;
    char json[160], text[96];
    int n = snprintf(json, sizeof json,
                     "{\"length\":{\"bytes\":%llu,\"captured\":%llu,\"total\":%llu}}",
                     (unsigned long long)ev->len, (unsigned long long)ev->data.len,
                     (unsigned long long)l->total);
    int m = snprintf(text, sizeof text, "%llu bytes %s (total %llu)", (unsigned long long)ev->len,
                     ev->dir == SPF_DIR_SEND ? "sent" : "received", (unsigned long long)l->total);
    out->record(out->ctx, (const uint8_t *)json, (size_t)n, (const uint8_t *)text, (size_t)m);
    return SPF_OK;
}

static const uint8_t *length_last_error(void *instance, size_t *len) {
    const char *e = instance ? ((Length *)instance)->error : init_error;
    *len = strlen(e);
    return (const uint8_t *)e;
}

static void length_destroy(void *instance) { free(instance); }

static const SpfDecoderVtable length_vtable = {
    .init = length_init,
    .decode = length_decode,
    .lost = NULL,
    .closed = NULL,
    .finish = NULL,
    .last_error = length_last_error,
    .destroy = length_destroy,
};

const SpfPluginDeclaration spf_plugin_declaration = {
    .magic = SPF_PLUGIN_MAGIC,
    .abi_major = SPF_ABI_MAJOR,
    .abi_minor = SPF_ABI_MINOR,
    .kind = SPF_KIND_DECODER,
    .name = "length",
    .version = "1.0.0",
    .decoder = &length_vtable,
    .sink = NULL,
    /* spf compares these with its own sizes and refuses a plugin built against
     * a header whose structs differ. */
    .declaration_size = sizeof(SpfPluginDeclaration),
    .event_view_size = sizeof(SpfEventView),
    .decoder_out_size = sizeof(SpfDecoderOut),
    .decoder_vtable_size = sizeof(SpfDecoderVtable),
    .sink_vtable_size = sizeof(SpfSinkVtable),
};
