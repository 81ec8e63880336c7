// The package as a user installs it: `npm pack` (prepack compiles dist/ with its .d.ts), the tarball installed
// in a fresh project, then the README's library example run by plain Node 20, a TypeScript file importing the
// package type-checked with TypeScript's default options and with nodenext, the CLI from the installed bin,
// and two ranks through the package's own worker bootstrap. The install skips the native build (the
// checkout's addon is used through DITFORGE_NATIVE_ADDON) so the test takes seconds; `npm install` of the
// tarball with its postinstall was run by hand (see the closing note of the change).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NATIVE_ADDON_PATH, nativeAvailable } from '../../runtime/native.ts';
import { ROOT } from './cli-harness.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-package-'));
const env = { ...process.env, DITFORGE_NATIVE_ADDON: NATIVE_ADDON_PATH, npm_config_loglevel: 'error' };
const sh = (cmd: string, args: string[], o: { cwd?: string; timeout?: number } = {}) => execFileSync(cmd, args, { cwd: o.cwd ?? tmp, env, encoding: 'utf8', timeout: o.timeout ?? 300_000, stdio: ['ignore', 'pipe', 'pipe'] });

/** the README's ```js block under "## Library" */
function readmeExample(): string {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const lib = readme.slice(readme.indexOf('## Library'));
  const m = /```js\n([\s\S]*?)```/.exec(lib);
  if (!m) throw new Error('README.md has no ```js example under "## Library"');
  return m[1]!;
}

describe.skipIf(!nativeAvailable())('the packed package, installed in a fresh project', () => {
  beforeAll(() => {
    const out = sh('npm', ['pack', ROOT, '--pack-destination', tmp], { timeout: 600_000 });
    const tarball = out.trim().split('\n').pop()!;
    fs.writeFileSync(path.join(tmp, 'package.json'), JSON.stringify({ name: 'user-project', version: '1.0.0', type: 'module', private: true }));
    sh('npm', ['install', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', path.join(tmp, tarball)], { timeout: 600_000 });
  }, 900_000);
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('ships compiled JavaScript and declarations, not the TypeScript sources', () => {
    const pkg = path.join(tmp, 'node_modules', 'ditforge');
    expect(fs.existsSync(path.join(pkg, 'dist', 'runtime', 'index.js'))).toBe(true);
    expect(fs.existsSync(path.join(pkg, 'dist', 'runtime', 'index.d.ts'))).toBe(true);
    expect(fs.existsSync(path.join(pkg, 'runtime', 'pipeline.ts'))).toBe(false);
    expect(fs.existsSync(path.join(pkg, 'generated', 'tiny-flux', 'transformer', 'plan.json'))).toBe(true);
  });

  it("runs the README's library example on plain Node (a size compiled on the fly)", () => {
    fs.writeFileSync(path.join(tmp, 'example.mjs'), readmeExample());
    const out = sh(process.execPath, ['example.mjs']);
    expect(out).toMatch(/^64x48, [0-9.]+ ms\/step$/m);
    expect(fs.statSync(path.join(tmp, 'out.png')).size).toBeGreaterThan(100);
  });

  it('type-checks a TypeScript user of the package with the default options and with nodenext', () => {
    fs.writeFileSync(
      path.join(tmp, 'use.ts'),
      "import { loadPipeline, type GenerateResult, type PipelineOptions } from 'ditforge';\n" +
        "const opts: PipelineOptions = { threads: 1 };\n" +
        "export async function run(): Promise<number> {\n  const pipe = await loadPipeline('tiny-flux', opts);\n  const r = (await pipe.generate({ prompt: 'a red circle', steps: 2 })) as GenerateResult;\n  return r.image.length;\n}\n",
    );
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    sh(process.execPath, [tsc, '--noEmit', 'use.ts']);
    sh(process.execPath, [tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', 'use.ts']);
    // a wrong use is caught against the shipped declarations
    fs.writeFileSync(path.join(tmp, 'bad.ts'), "import { loadPipeline } from 'ditforge';\nawait loadPipeline(42);\n");
    let report = '';
    try {
      sh(process.execPath, [tsc, '--noEmit', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', 'bad.ts']);
    } catch (e) {
      report = String((e as { stdout?: string }).stdout);
    }
    expect(report).toMatch(/bad\.ts\(2,.*not assignable to parameter of type 'string'/);
  });

  it('the installed CLI generates; two ranks run through the compiled worker bootstrap', () => {
    const bin = path.join(tmp, 'node_modules', '.bin', 'ditforge');
    expect(sh(bin, ['generate', '--model', 'tiny-flux', '--prompt', 'a red circle', '--steps', '2', '--out', 'cli.png']).length).toBe(0);
    expect(fs.existsSync(path.join(tmp, 'cli.png'))).toBe(true);
    fs.writeFileSync(
      path.join(tmp, 'ranks.mjs'),
      "import { generateParallel } from 'ditforge';\nimport { compileParallelPlans, requestOptions } from 'ditforge/compiler';\n" +
        "const r = await generateParallel('tiny-flux', { prompt: 'a red circle', steps: 2, seed: 1, world: 2, threads: 1, parallelPlanProvider: (c, _d, parallel, req) => compileParallelPlans(req.model, { ...requestOptions(c, req), parallel }) });\n" +
        'console.log(r.world, r.parallel.kind, r.ranks.length);\n',
    );
    expect(sh(process.execPath, ['ranks.mjs']).trim()).toBe('2 ulysses 2');
  });
});
