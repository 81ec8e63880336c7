#!/usr/bin/env node
// Builds the native addon (runtime/native -> build/native/Release/ditforge_native.node) with cmake-js.
// 1. renders generated/kernels/{cpu,cuda} from templates/ and the shipped plans (deterministic; files are
//    only rewritten when their content changes);
// 2. skips the build when the addon is newer than every input, unless --force;
// 3. runs `cmake-js build -d runtime/native -O build/native` (offline: runtime/native/package.json sets
//    binary.napi_versions, so cmake-js uses node-api-headers instead of downloading Node headers).
// Flags: --force, --no-cuda (or env DITFORGE_WITH_CUDA=0), --debug. Env DITFORGE_PORTABLE=1 drops -march=native.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = new Set(process.argv.slice(2));
const force = args.has('--force');
const noCuda = args.has('--no-cuda') || process.env.DITFORGE_WITH_CUDA === '0';
const addon = join(root, 'build', 'native', 'Release', 'ditforge_native.node');

function fail(msg) {
  console.error(`\nbuild-native: ${msg}\n`);
  process.exit(1);
}

function have(cmd, argv = ['--version']) {
  const r = spawnSync(cmd, argv, { stdio: 'ignore' });
  return r.status === 0;
}

function newestMtime(path) {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let m = 0;
  for (const name of readdirSync(path)) m = Math.max(m, newestMtime(join(path, name)));
  return m;
}

// 0. toolchain
// resolved as Node resolves them: the checkout's node_modules, or the project's that installed this package
const pkgDir = (name) => {
  try {
    return dirname(createRequire(join(root, 'package.json')).resolve(`${name}/package.json`));
  } catch {
    return null;
  }
};
const cmakeJsDir = pkgDir('cmake-js');
const cmakeJs = cmakeJsDir && join(cmakeJsDir, 'bin', 'cmake-js');
const tsxDir = pkgDir('tsx');
const tsxCli = tsxDir ? join(tsxDir, 'dist', 'cli.mjs') : '';
if (!cmakeJs || !existsSync(cmakeJs)) fail('cmake-js is missing from node_modules: run `npm install` first.');
if (!pkgDir('node-addon-api') || !pkgDir('node-api-headers')) fail('node-addon-api / node-api-headers are missing from node_modules: run `npm install` first.');
const missing = [];
if (!have('cmake')) missing.push('cmake');
if (!have('c++') && !have('g++')) missing.push('g++');
if (missing.length)
  fail(
    `${missing.join(' and ')} not found on PATH. The native runtime needs a C++17 compiler and CMake >= 3.18.\n` +
      `  Fix (Debian/Ubuntu): sudo apt-get install -y cmake g++ ninja-build   (or: bash scripts/install-system-deps.sh)\n` +
      `  then: npm run build:native`,
  );

// 1. kernel sources
if (tsxCli && existsSync(tsxCli) && existsSync(join(root, 'compiler', 'cli', 'render-kernels.ts'))) {
  const r = spawnSync(process.execPath, [tsxCli, join(root, 'compiler', 'cli', 'render-kernels.ts'), '--quiet'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) fail('rendering the kernel library failed (see above).');
} else if (!existsSync(join(root, 'generated', 'kernels', 'cpu', 'registry.cpp'))) {
  fail('generated/kernels/cpu is empty and tsx is not installed to render it: run `npm install` first.');
}

// 2. up to date?
const inputs = [
  join(root, 'runtime', 'native'),
  join(root, 'generated', 'kernels'),
  join(root, 'scripts', 'build-native.mjs'),
];
if (!force && existsSync(addon)) {
  const built = statSync(addon).mtimeMs;
  const newest = Math.max(...inputs.map(newestMtime));
  if (built >= newest) {
    console.log(`build-native: ${relative(root, addon)} is up to date (use --force to rebuild)`);
    process.exit(0);
  }
}

// 3. build
const cmakeArgs = [cmakeJs, 'build', '-d', 'runtime/native', '-O', 'build/native'];
if (args.has('--debug')) cmakeArgs.push('-D');
cmakeArgs.push(noCuda ? '--CDWITH_CUDA=OFF' : '--CDWITH_CUDA=ON'); // explicit: the CMake cache would keep an earlier OFF
console.log(`build-native: ${['cmake-js', ...cmakeArgs.slice(1)].join(' ')}`);
const t0 = Date.now();
// npm passes npm_config_nodedir from ~/.npmrc; with napi_versions set cmake-js ignores it, but drop it to be safe.
const env = { ...process.env };
delete env.npm_config_nodedir;
const r = spawnSync(process.execPath, cmakeArgs, { cwd: root, stdio: 'inherit', env });
if (r.status !== 0)
  fail(
    `cmake-js failed (exit ${r.status}). Common fixes:\n` +
      `  - missing compiler/CMake: sudo apt-get install -y cmake g++ ninja-build\n` +
      `  - CUDA problems: build CPU-only with \`node scripts/build-native.mjs --force --no-cuda\`\n` +
      `  - stale CMake cache: rm -rf build/native and retry`,
  );
if (!existsSync(addon)) fail(`cmake-js succeeded but ${relative(root, addon)} is missing.`);
console.log(`build-native: built ${relative(root, addon)} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
