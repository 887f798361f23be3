// ggml's own quantizers and dequantizers as a filter, the reference for src/tensor/formats/ggml.ts:
//   ggml-quant-ref TYPE ROWS COLS < rows.f32 > out
// reads ROWS x COLS float32 values, writes the ggml_quantize_chunk bytes (the *_ref quantizers: no
// importance matrix) followed by their dequantization (the type's to_float) as float32.
// Built and run by tools/make_ggml_fixtures.py against llama.cpp's libggml-base.
#include <stdio.h>
#include <stdlib.h>

#include "ggml.h"

int main(int argc, char ** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s TYPE ROWS COLS < rows.f32 > out\n", argv[0]);
        return 2;
    }
    enum ggml_type type = (enum ggml_type) atoi(argv[1]);
    long rows = atol(argv[2]), cols = atol(argv[3]);
    long n = rows * cols;
    float * x = malloc(n * sizeof(float));
    float * y = malloc(n * sizeof(float));
    size_t bytes = ggml_row_size(type, cols) * rows;
    void * q = malloc(bytes);
    if (fread(x, sizeof(float), n, stdin) != (size_t) n) {
        fprintf(stderr, "short input\n");
        return 1;
    }
    if (type == GGML_TYPE_F32) {
        for (long i = 0; i < n; i++) ((float *) q)[i] = y[i] = x[i];
    } else if (type == GGML_TYPE_F16) {
        ggml_fp32_to_fp16_row(x, q, n);
        ggml_fp16_to_fp32_row(q, y, n);
    } else if (type == GGML_TYPE_BF16) {
        ggml_fp32_to_bf16_row_ref(x, q, n);
        ggml_bf16_to_fp32_row(q, y, n);
    } else {
        ggml_quantize_init(type);
        size_t written = ggml_quantize_chunk(type, x, q, 0, rows, cols, NULL);
        if (written != bytes) {
            fprintf(stderr, "wrote %zu bytes, expected %zu\n", written, bytes);
            return 1;
        }
        ggml_get_type_traits(type)->to_float(q, y, n);
    }
    fwrite(q, 1, bytes, stdout);
    fwrite(y, sizeof(float), n, stdout);
    return 0;
}
