// CI check: the committed API types and ui/dist are exactly what the committed openapi.json and sources produce.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ui = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => join(ui, 'node_modules', '.bin', name);
const scratch = mkdtempSync(join(tmpdir(), 'postern-ui-check-'));

function fail(message) {
  rmSync(scratch, { recursive: true, force: true });
  console.error(`ui check failed: ${message}`);
  process.exit(1);
}

// The tools run under this same node, not whichever `node` is first on PATH.
function run(command, args) {
  const result = spawnSync(process.execPath, [command, ...args], { cwd: ui, encoding: 'utf8' });
  if (result.status !== 0) {
    process.stderr.write(result.stdout + result.stderr);
    fail(`${[command, ...args].map((a) => relative(ui, a) || a).join(' ')} exited with ${result.status ?? result.signal}`);
  }
}

/** Every file under `dir`, as relative paths, sorted. */
function files(dir, base = dir) {
  let out = [];
  for (const entry of readdirSync(dir).sort()) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) out = out.concat(files(path, base));
    else out.push(relative(base, path));
  }
  return out;
}

// The same arguments as `npm run gen`, read from package.json so the two cannot drift.
const gen = JSON.parse(readFileSync(join(ui, 'package.json'), 'utf8')).scripts.gen.split(/\s+/);
const output = gen.indexOf('-o');
const schema = gen[output + 1];
const fresh = join(scratch, 'schema.d.ts');
run(bin(gen[0]), [...gen.slice(1, output), '-o', fresh, ...gen.slice(output + 2)]);
if (!readFileSync(join(ui, schema)).equals(readFileSync(fresh))) {
  fail(`ui/${schema} does not match ui/openapi.json: run \`npm run gen\` in ui/ and commit the result`);
}

run(bin('tsc'), ['--noEmit']);
const built = join(scratch, 'dist');
run(bin('vite'), ['build', '--logLevel', 'warn', '--outDir', built, '--emptyOutDir']);
const committed = join(ui, 'dist');
let want = [];
try {
  want = files(committed);
} catch {
  fail('ui/dist is missing: run `npm run build` in ui/ and commit ui/dist');
}
const got = files(built);
const differing =
  want.join('\n') !== got.join('\n')
    ? [...new Set([...want, ...got])].filter((f) => !want.includes(f) || !got.includes(f))
    : got.filter((f) => !readFileSync(join(committed, f)).equals(readFileSync(join(built, f))));
if (differing.length) {
  fail(`ui/dist does not match the sources (${differing.slice(0, 3).join(', ')}${differing.length > 3 ? ', …' : ''}): run \`npm run build\` in ui/ and commit ui/dist`);
}
rmSync(scratch, { recursive: true, force: true });
console.log(`ui check passed: schema.d.ts and ${got.length} files of ui/dist match`);
