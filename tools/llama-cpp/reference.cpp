// A second implementation's view of a GGUF file, through llama.cpp's own library:
// how llama.cpp tokenizes a text, its top logits at every position of that text, and
// its greedy continuation. pipe's tests compare pipe's loader and exporter with what this
// prints (see tools/llama-cpp/README.md); pipe itself never links llama.cpp.
//
//   reference MODEL.gguf [--lora ADAPTER.gguf] [--top K] [--generate N] TEXT
//
// Prints one JSON object: {"tokens": [...], "top": [[[id, logit], ...] per position],
// "generated": [...], "text": "..."}. Logits are printed with 6 significant digits.
#include "llama.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static void quiet(ggml_log_level, const char *, void *) {}

static void json_string(const std::string & s) {
    std::putchar('"');
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            std::printf("\\%c", c);
        } else if (c < 0x20) {
            std::printf("\\u%04x", c);
        } else {
            std::putchar(c);
        }
    }
    std::putchar('"');
}

int main(int argc, char ** argv) {
    std::string model_path, lora_path, text;
    int top = 5, generate = 0;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--lora" && i + 1 < argc) {
            lora_path = argv[++i];
        } else if (a == "--top" && i + 1 < argc) {
            top = std::atoi(argv[++i]);
        } else if (a == "--generate" && i + 1 < argc) {
            generate = std::atoi(argv[++i]);
        } else if (model_path.empty()) {
            model_path = a;
        } else {
            text = a;
        }
    }
    if (model_path.empty() || text.empty()) {
        std::fprintf(stderr, "usage: reference MODEL.gguf [--lora A.gguf] [--top K] [--generate N] TEXT\n");
        return 2;
    }
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(model_path.c_str(), llama_model_default_params());
    if (!model) {
        std::fprintf(stderr, "llama.cpp cannot load %s\n", model_path.c_str());
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = 512;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!lora_path.empty()) {
        llama_adapter_lora * lora = llama_adapter_lora_init(model, lora_path.c_str());
        if (!lora) {
            std::fprintf(stderr, "llama.cpp cannot load the LoRA %s\n", lora_path.c_str());
            return 1;
        }
        float scale = 1.0f;
        llama_set_adapters_lora(ctx, &lora, 1, &scale);
    }
    // parse_special: the chat template's markers are single tokens, as pipe reads them.
    std::vector<llama_token> tokens(text.size() + 8);
    int n = llama_tokenize(vocab, text.c_str(), (int) text.size(), tokens.data(), (int) tokens.size(), false, true);
    if (n < 0) {
        std::fprintf(stderr, "tokenize failed\n");
        return 1;
    }
    tokens.resize(n);
    llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        batch.token[i] = tokens[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch) != 0) {
        std::fprintf(stderr, "decode failed\n");
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(vocab);
    std::printf("{\"tokens\": [");
    for (int i = 0; i < n; i++) {
        std::printf("%s%d", i ? ", " : "", tokens[i]);
    }
    std::printf("], \"top\": [");
    llama_token next = 0;
    for (int i = 0; i < n; i++) {
        const float * logits = llama_get_logits_ith(ctx, i);
        std::vector<int> ids(n_vocab);
        for (int v = 0; v < n_vocab; v++) {
            ids[v] = v;
        }
        std::partial_sort(ids.begin(), ids.begin() + top, ids.end(),
                          [&](int a, int b) { return logits[a] > logits[b]; });
        std::printf("%s[", i ? ", " : "");
        for (int k = 0; k < top; k++) {
            std::printf("%s[%d, %.6g]", k ? ", " : "", ids[k], logits[ids[k]]);
        }
        std::printf("]");
        next = ids[0];
    }
    std::printf("], \"generated\": [");
    std::string generated;
    for (int g = 0; g < generate; g++) {
        if (llama_vocab_is_eog(vocab, next)) {
            break;
        }
        char piece[256];
        int len = llama_token_to_piece(vocab, next, piece, sizeof piece, 0, false);
        if (len > 0) {
            generated.append(piece, len);
        }
        std::printf("%s%d", g ? ", " : "", next);
        llama_batch one = llama_batch_get_one(&next, 1);
        if (llama_decode(ctx, one) != 0) {
            break;
        }
        const float * logits = llama_get_logits_ith(ctx, -1);
        next = (llama_token) (std::max_element(logits, logits + n_vocab) - logits);
    }
    std::printf("], \"text\": ");
    json_string(generated);
    std::printf("}\n");
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
