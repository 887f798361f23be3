// src/tensor/matmul.ts with matmul replaced by the kernels of before (see before-hooks.ts).
export { allocQuantizedMatrix, readRow } from '../src/tensor/matmul.js';
export { matmulReference as matmul } from './matmul-reference.js';
