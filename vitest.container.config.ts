import { defineConfig } from 'vitest/config';

/**
 * `npm run test:container`: the container image built and run (test/container/). Minutes, not seconds:
 * the base image is made with debootstrap on a first run and the image is built with `npm ci` inside.
 */
export default defineConfig({
  test: {
    include: ['test/container/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 1,
    testTimeout: 20 * 60_000,
    hookTimeout: 60 * 60_000,
    reporters: ['default'],
  },
});
