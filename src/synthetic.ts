// qwen-ts/synthetic: models with random weights and the real Qwen2.5 shapes and file layout, for
// speed measurements and tests (`qwen-ts make-model`). Not needed to run a real model.
export {
  writeSyntheticModel,
  isSyntheticPreset,
  PRESETS,
  type SyntheticOptions,
  type SyntheticPreset,
  type SyntheticPresetName,
} from './model/synthetic.js';
// The cache the CLI's --preset uses ($QWEN_TS_CACHE, else $XDG_CACHE_HOME/qwen-ts, else ~/.cache/qwen-ts).
export { ensureSyntheticModel, syntheticModelDir, cacheRoot } from './cli/synthetic-cache.js';
