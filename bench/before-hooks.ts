// Module hooks for `--compare-before`: every import of src/tensor/matmul.js (in the main thread and
// in every worker) resolves to bench/matmul-before.js instead, which runs the kernels of before
// (bench/matmul-reference.ts). Registered by bench/before.ts through `node --import`.
interface ResolveContext {
  parentURL?: string;
}
type NextResolve = (specifier: string, context: ResolveContext) => Promise<{ url: string }>;

const BEFORE_URL = new URL('./matmul-before.js', import.meta.url).href;

export async function resolve(specifier: string, context: ResolveContext, next: NextResolve): Promise<{ url: string }> {
  const resolved = await next(specifier, context);
  if (resolved.url.endsWith('/src/tensor/matmul.js') && context.parentURL !== BEFORE_URL)
    return { ...resolved, url: BEFORE_URL };
  return resolved;
}
