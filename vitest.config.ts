import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    // The container image has its own run, `npm run test:container` (vitest.container.config.ts).
    exclude: ['**/node_modules/**', '**/.git/**', 'test/container/**'],
    globalSetup: ['test/global-setup.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: run two files at a time; each file starts its own servers on port 0.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
