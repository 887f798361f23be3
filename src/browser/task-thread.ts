// A Web Worker of the browser's kernel pool (platform/runtime.browser.ts): as a piscina thread in
// Node, it runs the default export of the module it is given on its task (tensor/worker.ts: the
// pool's loop, which returns when the pool closes).
// (The DOM library's types, not the WebWorker library's, which cannot be used with them.)
interface WorkerScope {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(message: unknown): void;
  close(): void;
}
const scope = globalThis as unknown as WorkerScope;

scope.onmessage = async (e: MessageEvent<{ module: string; task: unknown }>) => {
  try {
    const mod = (await import(/* @vite-ignore */ e.data.module)) as { default: (task: unknown) => unknown };
    scope.postMessage({ ok: true, result: await mod.default(e.data.task) });
  } catch (err) {
    scope.postMessage({ ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  }
};
