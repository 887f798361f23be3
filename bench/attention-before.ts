// The attention kernel of before issue 23, kept as the bench's baseline: one query head at a time
// (every K/V row read once per head of a GQA group), scores for the whole context, then softmax.
// Causal scaled dot-product attention of one query head over a paged KV cache.
// Keys/values of kv head `kvHead` for position t live at
//   ((blockTable[tableOff + (t >> log2(blockSize))] * kvHeads + kvHead) * blockSize + t % blockSize) * headDim.
// Scores for positions 0..len-1 go into `scores` (length >= len): memory O(context) per query,
// never an [n x n] matrix, whatever the prompt length.
import { softmax } from '../src/tensor/ops.js';

export function attendHead(
  q: Float32Array,
  qOff: number,
  k: Float32Array,
  v: Float32Array,
  blockTable: Int32Array,
  tableOff: number,
  kvHead: number,
  kvHeads: number,
  headDim: number,
  blockSize: number,
  len: number,
  scores: Float32Array,
  out: Float32Array,
  outOff: number,
): void {
  const scale = 1 / Math.sqrt(headDim);
  const blockStride = blockSize * headDim;
  for (let t0 = 0; t0 < len; t0 += blockSize) {
    const base = (blockTable[tableOff + t0 / blockSize] * kvHeads + kvHead) * blockStride;
    const tEnd = Math.min(len, t0 + blockSize);
    for (let t = t0; t < tEnd; t++) {
      const ko = base + (t - t0) * headDim;
      let s0 = 0,
        s1 = 0,
        s2 = 0,
        s3 = 0;
      let d = 0;
      for (; d + 4 <= headDim; d += 4) {
        s0 += q[qOff + d] * k[ko + d];
        s1 += q[qOff + d + 1] * k[ko + d + 1];
        s2 += q[qOff + d + 2] * k[ko + d + 2];
        s3 += q[qOff + d + 3] * k[ko + d + 3];
      }
      for (; d < headDim; d++) s0 += q[qOff + d] * k[ko + d];
      scores[t] = (s0 + s1 + s2 + s3) * scale;
    }
  }
  softmax(scores, 0, len);
  for (let d = 0; d < headDim; d++) out[outOff + d] = 0;
  for (let t0 = 0; t0 < len; t0 += blockSize) {
    const base = (blockTable[tableOff + t0 / blockSize] * kvHeads + kvHead) * blockStride;
    const tEnd = Math.min(len, t0 + blockSize);
    for (let t = t0; t < tEnd; t++) {
      const p = scores[t];
      const vo = base + (t - t0) * headDim;
      for (let d = 0; d < headDim; d++) out[outOff + d] += p * v[vo + d];
    }
  }
}
