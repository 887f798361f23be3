// `node --import dist/bench/before.js ...` runs the model on the kernels of before (see before-hooks.ts).
import { register } from 'node:module';

register('./before-hooks.js', import.meta.url);
