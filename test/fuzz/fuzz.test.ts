// Fuzzing with a fixed budget and fixed seeds (fast-check): hostile safetensors files, Cache-DiT cache options
// and plan JSON handed to the native executor. Every case must end in a result or in a clear error of the
// project's own kind (a message naming the file / key / field), never another exception, a crash or a hang.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadCacheOptions } from '../../runtime/cache/config.ts';
import { openSafetensorsSync, SafetensorsError, writeSafetensors } from '../../runtime/io/safetensors.ts';
import { native, nativeAvailable } from '../../runtime/native.ts';
import { PACKAGE_ROOT } from '../../runtime/pipeline.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-fuzz-'));
const RUNS = 300;

/** a valid two-tensor file, the seed of the byte-level mutations */
function validFile(): Buffer {
  const f = path.join(tmp, 'valid.safetensors');
  writeSafetensors(f, { a: { dtype: 'F32', shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) }, b: { dtype: 'I64', shape: [2], data: [7, 8] } }, { note: 'x' });
  return fs.readFileSync(f);
}

/** opens `bytes` as a file and reads every tensor: a SafetensorsError or a result, nothing else */
function openAll(bytes: Uint8Array, name: string): 'ok' | 'refused' {
  const f = path.join(tmp, name);
  fs.writeFileSync(f, bytes);
  try {
    const st = openSafetensorsSync(f);
    for (const n of st.names()) {
      const info = st.info(n);
      if (['F32', 'F16', 'BF16'].includes(info.dtype)) st.tensor(n);
      else st.ints(n);
    }
    return 'ok';
  } catch (e) {
    if (!(e instanceof SafetensorsError)) throw new Error(`${name}: ${(e as Error).name} instead of a SafetensorsError: ${(e as Error).message}`);
    expect((e as Error).message).toContain(f);
    return 'refused';
  }
}

describe('fuzz: safetensors', () => {
  it(`${RUNS} byte-level mutations of a valid file and ${RUNS} random headers: read or refused with the file named`, () => {
    const base = validFile();
    const counts = { ok: 0, refused: 0 };
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), fc.nat(base.length), (edits, cut) => {
        const b = Uint8Array.from(base.subarray(0, Math.max(cut, 1)));
        for (const [i, v] of edits) if (i < b.length) b[i] = v;
        counts[openAll(b, 'mut.safetensors')]++;
      }),
      { seed: 1, numRuns: RUNS },
    );
    const dtype = fc.constantFrom('F32', 'F16', 'BF16', 'I64', 'I32', 'U8', 'F64', 'Q4', '', 7 as unknown as string);
    const dim = fc.oneof(fc.integer({ min: 0, max: 6 }), fc.constantFrom(-1, 1e12, 2 ** 53, 0.5, '3' as unknown as number));
    const tensor = fc.record({ dtype, shape: fc.array(dim, { maxLength: 4 }), data_offsets: fc.tuple(fc.integer({ min: -4, max: 200 }), fc.integer({ min: -4, max: 200 })) });
    fc.assert(
      fc.property(fc.dictionary(fc.string({ minLength: 1, maxLength: 6 }), tensor, { maxKeys: 4 }), fc.nat(200), (header, body) => {
        const json = Buffer.from(JSON.stringify(header));
        const b = Buffer.alloc(8 + json.length + body);
        b.writeBigUInt64LE(BigInt(json.length), 0);
        json.copy(b, 8);
        counts[openAll(b, 'hdr.safetensors')]++;
      }),
      { seed: 2, numRuns: RUNS },
    );
    console.log(`fuzz safetensors: ${counts.ok} read, ${counts.refused} refused with the file named, 0 other errors`);
    expect(counts.refused).toBeGreaterThan(0);
  });
});

describe('fuzz: Cache-DiT cache options', () => {
  it(`${RUNS} random option objects: accepted, or refused naming a key they hold; never a string taken for a boolean`, () => {
    const keys = ['cache_type', 'Fn_compute_blocks', 'Bn_compute_blocks', 'residual_diff_threshold', 'max_warmup_steps', 'warmup_interval', 'max_cached_steps', 'max_continuous_cached_steps', 'enable_separate_cfg', 'steps_computation_mask', 'steps_computation_policy', 'num_inference_steps', 'taylorseer_order', 'enable_taylorseer', 'calibrator_type', 'bogus_key'];
    const value = fc.oneof(fc.integer({ min: -3, max: 60 }), fc.double({ noNaN: false }), fc.boolean(), fc.string({ maxLength: 6 }), fc.constantFrom('true', 'DBCache', 'DBPrune', 'NONE', 'dynamic', 'static', null), fc.array(fc.integer({ min: 0, max: 1 }), { maxLength: 8 }));
    let accepted = 0;
    let refused = 0;
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom(...keys), value, { maxKeys: 5 }), (opts) => {
        try {
          loadCacheOptions(opts);
          accepted++;
          for (const k of ['enable_separate_cfg', 'enable_taylorseer']) if (k in opts) expect(typeof opts[k] === 'boolean' || opts[k] === null, `${k}: ${JSON.stringify(opts[k])} accepted`).toBe(true);
        } catch (e) {
          if (!(e instanceof Error) || e.name === 'TypeError' || e.name === 'RangeError') throw e;
          const msg = e.message;
          expect(Object.keys(opts).some((k) => msg.includes(k)) || /cache_type|Fn_compute_blocks|steps_computation_mask/.test(msg), msg).toBe(true);
          refused++;
        }
      }),
      { seed: 3, numRuns: RUNS },
    );
    console.log(`fuzz cache options: ${accepted} accepted, ${refused} refused naming the key`);
  });
});

describe.skipIf(!nativeAvailable())('fuzz: plan JSON handed to the native executor', () => {
  it(`${RUNS} mutations of tiny-flux's transformer plan (op arguments, tensor offsets and sizes, kernels): refused with an error, or it runs`, () => {
    const plan = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'generated', 'tiny-flux', 'transformer', 'plan.json'), 'utf8')) as {
      tensors: { offset: number; numel: number }[];
      segments: { ops?: { k: string; t: number[]; i: number[] }[]; blocks?: { ops: { k: string; t: number[]; i: number[] }[] }[] }[];
      arenaFloats: number;
    };
    const ops = plan.segments.flatMap((s) => [...(s.ops ?? []), ...(s.blocks ?? []).flatMap((b) => b.ops)]);
    let refused = 0;
    let ran = 0;
    fc.assert(
      fc.property(fc.nat(ops.length - 1), fc.nat(plan.tensors.length - 1), fc.integer({ min: -5, max: 1 << 20 }), fc.constantFrom('op.t', 'op.i', 'tensor.offset', 'tensor.numel', 'arena', 'kernel'), (oi, ti, v, where) => {
        const p = structuredClone(plan);
        const pops = p.segments.flatMap((s) => [...(s.ops ?? []), ...(s.blocks ?? []).flatMap((b) => b.ops)]);
        const op = pops[oi]!;
        if (where === 'op.t' && op.t.length) op.t[v % op.t.length < 0 ? 0 : v % op.t.length] = v;
        else if (where === 'op.i' && op.i.length) op.i[Math.abs(v) % op.i.length] = v;
        else if (where === 'tensor.offset') p.tensors[ti]!.offset = v;
        else if (where === 'tensor.numel') p.tensors[ti]!.numel = v;
        else if (where === 'arena') p.arenaFloats = v;
        else op.k = `nope_${v}`;
        try {
          new native.Executor(JSON.stringify(p), { threads: 1 });
          ran++;
        } catch (e) {
          expect(e).toBeInstanceOf(Error);
          expect((e as Error).message.length).toBeGreaterThan(10);
          refused++;
        }
      }),
      { seed: 4, numRuns: RUNS },
    );
    console.log(`fuzz plan JSON: ${refused} refused, ${ran} accepted by the executor's checks`);
    expect(refused).toBeGreaterThan(0);
  });
});

describe('fuzz: CLI argument vectors', () => {
  it('30 random flag vectors for generate: a result or one clear line on stderr (exit 1), never a stack trace or another code', () => {
    const flags = ['--steps', '--height', '--width', '--seed', '--guidance-scale', '--rdt', '--Fn', '--world', '--threads', '--max-memory', '--strength', '--out', '--negative-prompt', '--max-sequence-length'];
    const values = ['0', '-1', '3', '1e9', 'abc', '', '32', '0.5', 'NaN', '/proc/x.png', 'o.bmp', '--cache'];
    let ok = 0;
    let refused = 0;
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom(...flags), fc.constantFrom(...values)), { minLength: 1, maxLength: 4 }), (pairs) => {
        const args = ['generate', '--model', 'tiny-flux', '--prompt', 'a red circle', '--out', path.join(tmp, 'cli.png'), ...pairs.flat()];
        const r = spawnSync(process.execPath, [path.join(PACKAGE_ROOT, 'bin', 'ditforge.mjs'), ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, DITFORGE_PROGRESS_SECONDS: '1000' } });
        expect(r.status === 0 || r.status === 1, `${args.join(' ')}: exit ${r.status} ${r.signal ?? ''}\n${r.stderr}`).toBe(true);
        expect(r.stderr, args.join(' ')).not.toMatch(/^\s+at /m);
        if (r.status === 1) {
          expect(r.stderr.trim().split('\n').filter((l) => !/^(denoising: step|compiling a )/.test(l)).length, `${args.join(' ')}\n${r.stderr}`).toBe(1);
          refused++;
        } else ok++;
      }),
      { seed: 5, numRuns: 30 },
    );
    console.log(`fuzz CLI: ${ok} ran, ${refused} refused with one clear line`);
  });
});

describe.skipIf(!nativeAvailable())('fuzz: a model directory\'s config.json', () => {
  it('25 mutations of a FLUX.1 transformer config (wrong types, sizes that do not fit the checkpoint, extra keys): an image or an error naming the file', async () => {
    const { loadPipeline } = await import('../../runtime/pipeline.ts');
    const { compileRequest } = await import('../../compiler/index.ts');
    const src = path.resolve(import.meta.dirname, '../fixtures/flux1-random');
    const dir = path.join(tmp, 'flux1-mut');
    fs.cpSync(src, dir, { recursive: true, dereference: true });
    fs.rmSync(path.join(dir, 'reference'), { recursive: true, force: true });
    const file = path.join(dir, 'transformer', 'config.json');
    const base = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    const keys = Object.keys(base).filter((k) => !k.startsWith('_'));
    const value = fc.oneof(fc.integer({ min: -2, max: 130 }), fc.constantFrom('16', null, true, [4, 6, 6], [1, 2], 0.5, {}, 'gelu'));
    let ran = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...keys, 'extra_key'), value, async (k, v) => {
        fs.writeFileSync(file, JSON.stringify({ ...base, [k]: v }));
        try {
          const pipe = await loadPipeline(dir, { threads: 1, planProvider: (c, _d, req) => compileRequest(c, req) });
          await pipe.generate({ prompt: 'a red circle', steps: 1, height: 32, width: 32, maxSequenceLength: 8 } as never);
          ran++;
        } catch (e) {
          const msg = (e as Error).message;
          if ((e as Error).name === 'TypeError' || (e as Error).name === 'RangeError') throw e;
          expect(msg.includes('config.json') || msg.includes(k) || /transformer/.test(msg), `${k}=${JSON.stringify(v)}: ${msg}`).toBe(true);
          refused++;
        }
      }),
      { seed: 6, numRuns: 25 },
    );
    console.log(`fuzz model-directory config: ${ran} ran, ${refused} refused naming the file or the field`);
  }, 120_000);
});
