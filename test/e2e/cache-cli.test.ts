// End-to-end: `ditforge generate` with Cache-DiT's cache flags (node bin/ditforge.mjs ...).
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { readPng } from '../../runtime/image.ts';
import { psnr } from '../../runtime/metrics.ts';
import { cliInTmp, expectCleanError } from './cli-harness.ts';

const PROMPT = 'a large red circle at the center on a black background';
const { tmp, cli } = cliInTmp('ditforge-cache-e2e-', ['generate', '--model', 'tiny-flux', '--prompt', PROMPT, '--threads', '2']);

describe('ditforge generate --cache', () => {
  it('--cache (CLI defaults F1B0 W8 MC3 R0.12) --json --summary: tagged file name, Cache-DiT summary fields, close to uncached', () => {
    const plain = cli(['--out', path.join(tmp, 'plain.png'), '--json']);
    expect(plain.code).toBe(0);
    const r = cli(['--cache', '--out', path.join(tmp, 'out.png'), '--json', '--summary']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout.trim());
    expect(j.cache.tag).toMatch(/^DBCache_F1B0_W8I1M0MC3_R0\.12_CFG0_T0O0_S\d+$/);
    expect(path.basename(j.output)).toBe(`out_${j.cache.tag}.png`);
    expect(fs.existsSync(j.output)).toBe(true);
    for (const k of ['cached_steps', 'residual_diffs', 'cfg_cached_steps', 'cfg_residual_diffs', 'accumulated_cached_steps', 'accumulated_executed_steps', 'accumulated_transformer_executed_steps']) {
      expect(j.cache, k).toHaveProperty(k);
    }
    expect(j.cache.cached_steps.length).toBe(j.cache.accumulated_cached_steps);
    expect(j.cache.cached_steps.length).toBeGreaterThan(5);
    expect(Math.min(...j.cache.cached_steps)).toBeGreaterThanOrEqual(8); // W8
    expect(j.cache.accumulated_executed_steps).toBe(28);
    expect(r.stderr).toMatch(/\| Cache Steps \| Diffs P00 \|/);
    const a = readPng(j.output).pixels;
    const b = readPng(JSON.parse(plain.stdout.trim()).output).pixels;
    expect(psnr(a, b, 255)).toBeGreaterThan(30);
  });

  it('--config (Cache-DiT tests/api/config.yaml: SCM fast string, TaylorSeer, parallelism section ignored)', () => {
    const cfg = path.join(tmp, 'config.yaml');
    fs.writeFileSync(
      cfg,
      'cache_config:\n  max_warmup_steps: 8\n  warmup_interval: 2\n  max_cached_steps: -1\n  max_continuous_cached_steps: 2\n  Fn_compute_blocks: 1\n' +
        '  Bn_compute_blocks: 0\n  num_inference_steps: 28\n  steps_computation_mask: fast\n  residual_diff_threshold: 0.12\n  enable_taylorseer: true\n' +
        '  taylorseer_order: 1\nparallelism_config:\n  ulysses_size: 2\n',
    );
    const r = cli(['--config', cfg, '--json', '--out', path.join(tmp, 'cfg.png')]);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout.trim());
    expect(j.cache.tag).toMatch(/^DBCache_F1B0_W8I2M0MC2_R0\.12_SCM1111110100010000100000100001_dynamic_N28_CFG0_T1O1_S\d+$/);
    // a 28-step mask with --steps 20 is the wrong length
    expectCleanError(cli(['--config', cfg, '--steps', '20']), /steps_computation_mask: length 28 does not match num_inference_steps 20/);
  });

  it('DBPrune, SCM ultra + TaylorSeer, true CFG with a negative prompt', () => {
    const p = cli(['--dbprune', '--Bn', '1', '--ws', '4', '--json', '--out', path.join(tmp, 'p.png')]);
    expect(p.code, p.stderr).toBe(0);
    expect(JSON.parse(p.stdout).cache.tag).toMatch(/^DBPrune_F1B1_W4I1M0MC3_R0\.12_P[\d.]+_T0O0_S\d+$/);
    const u = cli(['--cache', '--scm', 'u', '--taylorseer', '--json', '--out', path.join(tmp, 'u.png')]);
    expect(u.code, u.stderr).toBe(0);
    expect(JSON.parse(u.stdout).cache.tag).toMatch(/_SCM1111001000001000000100000001_dynamic_N28_CFG0_T1O1_S\d+$/);
    const c = cli(['--cache', '--ws', '4', '--negative-prompt', 'a small blue square', '--guidance-scale', '4', '--json', '--out', path.join(tmp, 'c.png')]);
    expect(c.code, c.stderr).toBe(0);
    const cj = JSON.parse(c.stdout);
    expect(cj.cache.tag).toMatch(/_CFG1_/);
    expect(cj.cache.accumulated_transformer_executed_steps).toBe(56);
    expect(cj.cache.cfg_cached_steps.length).toBeGreaterThan(0);
    expect(cj.guidanceScale).toBe(4);
  });

  it('contradictory or bad options: one clear line naming the option, exit 1', () => {
    expectCleanError(cli(['--cache', '--taylorseer', '--foca']), /--taylorseer and --foca/);
    expectCleanError(cli(['--cache', '--Fn', '4', '--Bn', '3']), /--Fn 4 \+ --Bn 3.*6 blocks/);
    expectCleanError(cli(['--taylorseer']), /require --cache/);
    expectCleanError(cli(['--cache', '--rdt', 'x']), /--rdt must be a number/);
    expectCleanError(cli(['--cache', '--scm', 'q']), /--scm/);
    expectCleanError(cli(['--config', path.join(tmp, 'missing.yaml')]), /--config: .*missing\.yaml does not exist/);
    expectCleanError(cli(['--guidance-scale', '3']), /--guidance-scale > 1 needs --negative-prompt/);
  });
});
