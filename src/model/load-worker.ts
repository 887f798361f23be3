// Entry point of a piscina worker thread while a model loads: it runs pieces of the load (see
// load-pieces.ts) until none are left, reading the files through its own descriptors.
import { runPiecesUntilDone, type LoadPlan, type PiecesResult } from './load-pieces.js';
import { TensorReader } from './safetensors.js';

export default function loadPieces(plan: LoadPlan): PiecesResult {
  return runPiecesUntilDone(plan, new TensorReader());
}
