// Vite build of the admin UI: hashed assets under /ui/assets, byte-identical output for identical sources.
import { defineConfig } from 'vite';

// `npm run dev` / `vite preview` talk to a running gateway (`postern demo` listens on 127.0.0.1:8432).
const gateway = process.env.POSTERN_API ?? 'http://127.0.0.1:8432';
const proxy = Object.fromEntries(['/api', '/healthz', '/readyz'].map((path) => [path, { target: gateway, changeOrigin: true }]));
// The policy the gateway serves the UI with, so a preview shows the same violations it would.
const csp =
  "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
  "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

export default defineConfig({
  base: '/ui/',
  // The server's CSP forbids inline scripts, so nothing may be inlined into index.html.
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact', legalComments: 'none' },
  server: { proxy },
  preview: { proxy, headers: { 'Content-Security-Policy': csp } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
    rollupOptions: {
      output: {
        entryFileNames: 'assets/[name]-[hash].js',
        chunkFileNames: 'assets/[name]-[hash].js',
        assetFileNames: 'assets/[name]-[hash][extname]',
      },
    },
  },
});
