// qwen-ts/synthetic: models with random weights and the real Qwen2.5 shapes and file layout, for
// speed measurements and tests (`qwen-ts make-model`). Not needed to run a real model.
export { writeSyntheticModel, PRESETS, type SyntheticOptions, type SyntheticPreset } from './model/synthetic.js';
