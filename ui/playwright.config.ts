// The browser suite's settings: Debian's Chromium (no browser download), one worker, the
// gateway the Rust harness (crates/postern/tests/ui.rs) started and names in UI_TEST_* variables.
import { defineConfig } from '@playwright/test';

export default defineConfig({
  testDir: 'tests',
  timeout: 90_000,
  expect: { timeout: 15_000 },
  workers: 1,
  fullyParallel: false,
  forbidOnly: true,
  retries: 0,
  reporter: 'line',
  outputDir: process.env.UI_TEST_OUTPUT ?? 'test-results',
  use: {
    baseURL: process.env.UI_TEST_BASE_URL,
    viewport: { width: 1280, height: 800 },
    headless: true,
    trace: 'off',
    launchOptions: {
      executablePath: '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    },
  },
});
