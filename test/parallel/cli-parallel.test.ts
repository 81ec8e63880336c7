// `ditforge generate --world N` end to end (node bin/ditforge.mjs): same latents and PNG as one rank.
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { relL2 } from '../../runtime/metrics.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { withoutProgress } from '../e2e/cli-harness.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin/ditforge.mjs');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-par-e2e-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: tmp, encoding: 'utf8', env: { ...process.env, DITFORGE_DEBUG: '' }, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const base = ['generate', '--model', 'tiny-flux', '--prompt', 'a red circle', '--steps', '4', '--threads', '1', '--json'];

describe.skipIf(!nativeAvailable())('ditforge generate --world N', () => {
  it('--world 3 (default: Ulysses, UAA switched on) == one rank; --json reports the ranks', () => {
    const one = cli([...base, '--out', 'w1.png', '--save-latents', 'w1.safetensors']);
    expect(one.code).toBe(0);
    const r = cli([...base, '--world', '3', '--out', 'w3.png', '--save-latents', 'w3.safetensors']);
    expect(withoutProgress(r.stderr)).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { parallel: { world: number; comm: string; parallel: string; ulyssesAnything: boolean; ranks: { rank: number; bytesPerStep: number }[] } };
    expect(j.parallel).toMatchObject({ world: 3, comm: 'shm', parallel: 'ulysses', ulyssesAnything: true });
    expect(j.parallel.ranks.map((x) => x.rank)).toEqual([0, 1, 2]);
    const a = openSafetensorsSync(path.join(tmp, 'w1.safetensors')).tensor('latents').data;
    const b = openSafetensorsSync(path.join(tmp, 'w3.safetensors')).tensor('latents').data;
    expect(relL2(b, a)).toBeLessThan(1e-5);
    expect(fs.readFileSync(path.join(tmp, 'w3.png')).equals(fs.readFileSync(path.join(tmp, 'w1.png')))).toBe(true);
  });

  it('--world 2 --cache: the 1-rank cached steps and run tag (probe sums all-reduced)', () => {
    const args = ['generate', '--model', 'tiny-flux', '--prompt', 'a red circle', '--steps', '12', '--threads', '1', '--json', '--cache'];
    const one = JSON.parse(cli([...args, '--out', 'c1.png']).stdout) as { cache: { tag: string; cached_steps: number[] } };
    const two = JSON.parse(cli([...args, '--world', '2', '--out', 'c2.png']).stdout) as { cache: { tag: string; cached_steps: number[] }; parallel: { world: number } };
    expect(two.parallel.world).toBe(2);
    expect(two.cache.tag).toBe(one.cache.tag);
    expect(two.cache.cached_steps).toEqual(one.cache.cached_steps);
  });

  it('impossible / unsupported plans: one clear error line', () => {
    const r = cli([...base, '--world', '3', '--parallel', 'ulysses', '--out', 'x.png']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^error: .*input 'hidden_states' has 16 tokens \(imageTokens\), not divisible by ulysses=3: set ulysses_anything/);
    expect(r.stderr.trim().split('\n').length).toBe(1);
    const u = cli([...base, '--world', '2', '--parallel', 'tp', '--ulysses-async', '--out', 'x.png']);
    expect(u.code).toBe(1);
    expect(u.stderr.trim()).toMatch(/^error: --ulysses-anything \/ --ulysses-float8 \/ --ulysses-async apply to Ulysses; they cannot be combined with --parallel tp$/);
  });
});
