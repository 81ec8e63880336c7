#!/usr/bin/env node
// Compiles the TypeScript sources (runtime/, compiler/, models/) to dist/ with their .d.ts, imports rewritten
// to .js, and copies the plain-JS worker bootstrap beside them: what `npm pack` ships, so the installed
// package runs on plain Node 20 and type-checks in TypeScript projects. Run by `npm run build` / prepack.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
if (!fs.existsSync(tsc)) {
  // an installed package ships dist/ already; only a checkout builds it
  if (fs.existsSync(path.join(root, 'dist', 'runtime', 'index.js'))) process.exit(0);
  console.error('build-dist: typescript is not installed (npm install in the checkout first)');
  process.exit(1);
}
fs.rmSync(path.join(root, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json')], { stdio: 'inherit', cwd: root });
fs.copyFileSync(path.join(root, 'runtime', 'comm', 'shm-worker.mjs'), path.join(root, 'dist', 'runtime', 'comm', 'shm-worker.mjs'));
console.log(`build-dist: ${path.relative(process.cwd(), path.join(root, 'dist')) || 'dist'} built`);
