#!/usr/bin/env node
// Builds the optional MPI communicator addon (runtime/comm/mpi-native -> build/mpi/Release/ditforge_mpi.node)
// when an MPI C toolchain (mpicc + headers) is found. Without MPI it prints why and exits 0 (the shm
// communicator needs nothing); `--require` turns that into exit 1. `--force` rebuilds.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, statSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'runtime/comm/mpi-native');
const out = join(root, 'build/mpi');
const artefact = join(out, 'Release/ditforge_mpi.node');
const args = new Set(process.argv.slice(2));

function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

const mpicc = which('mpicc');
if (!mpicc) {
  const msg =
    'build-mpi: MPI not found (no mpicc on PATH): the mpi communicator is not built; --comm shm works without it. ' +
    'Install Open MPI (Debian/Ubuntu: apt-get install -y openmpi-bin libopenmpi-dev) and re-run `node scripts/build-mpi.mjs`.';
  console.error(msg);
  process.exit(args.has('--require') ? 1 : 0);
}
try {
  execFileSync(mpicc, ['--showme:version'], { stdio: 'ignore' });
} catch {
  /* MPICH's mpicc has no --showme; fine */
}

const newest = (dir) =>
  readdirSync(dir, { withFileTypes: true }).reduce((m, e) => {
    const p = join(dir, e.name);
    return Math.max(m, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }, 0);
if (!args.has('--force') && existsSync(artefact) && statSync(artefact).mtimeMs >= newest(src)) {
  console.log(`build-mpi: up to date (${artefact})`);
  process.exit(0);
}

// cmake-js as Node resolves it (the checkout's node_modules, or the project's that installed this package)
const cmakeJs = join(dirname(createRequire(join(root, 'package.json')).resolve('cmake-js/package.json')), 'bin', 'cmake-js');
const t0 = Date.now();
const r = spawnSync(process.execPath, [cmakeJs, 'build', '-d', src, '-O', out], { stdio: 'inherit', cwd: root });
if (r.status !== 0) {
  console.error(`build-mpi: cmake-js failed (exit ${r.status}); MPI at ${mpicc}`);
  process.exit(1);
}
console.log(`build-mpi: built ${artefact} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
