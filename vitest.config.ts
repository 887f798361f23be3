import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // Two cores: one test file per core; the model tests start worker threads of their own.
    maxWorkers: 2,
  },
});
