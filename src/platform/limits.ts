/** Size limits of the JSON files of a model folder (the largest real ones are far below). */
export const MAX_CONFIG_BYTES = 16 * 2 ** 20; // config.json, generation_config.json, tokenizer_config.json
export const MAX_INDEX_BYTES = 64 * 2 ** 20; // model.safetensors.index.json
export const MAX_TOKENIZER_BYTES = 256 * 2 ** 20; // tokenizer.json (Qwen2.5's is 7 MB)
