/// <reference types="vitest/config" />
// Vite: dev server (proxying the API, live stream included) and production build into dist/, which
// the API serves when `api.web_root` points at it.
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The API during development: `source ../.run/env` after scripts/up.sh sets CADEV_API_PORT.
const apiTarget =
  process.env.COINALARM_API_URL ??
  `http://127.0.0.1:${process.env.CADEV_API_PORT ?? '8080'}`;

export default defineConfig({
  plugins: [react()],
  server: {
    proxy: {
      // Server-sent events pass through http-proxy unbuffered.
      '/v1': { target: apiTarget, changeOrigin: false },
      '/openapi.json': apiTarget,
    },
  },
  build: {
    // Hashed file names under assets/: the API caches those for a year.
    assetsDir: 'assets',
    sourcemap: true,
    chunkSizeWarningLimit: 400,
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
