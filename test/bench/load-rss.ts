// Peak resident memory of loading a sharded bf16 checkpoint the way a pipeline does (ComponentWeights:
// every shard mapped, each tensor converted to float32 once and kept for the executor), against the
// checkpoint's float32 size. The target: below 1.3x (never the file twice in memory). A synthetic
// checkpoint of `params` parameters in 4 shards (real layouts: sharded bf16 with an index) is written to a
// temp folder; a fresh process loads it and reports its VmHWM above its own baseline.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ComponentWeights } from '../../runtime/io/weights.ts';

const SHARDS = 4;
const TENSORS_PER_SHARD = 16;

function vm(key: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, 'm').exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

/** a bf16 safetensors shard of `n` tensors [rows, 1024] with random bits (finite values) */
function writeShard(file: string, names: string[], rows: number): void {
  const header: Record<string, unknown> = {};
  const bytes = rows * 1024 * 2;
  names.forEach((n, i) => (header[n] = { dtype: 'BF16', shape: [rows, 1024], data_offsets: [i * bytes, (i + 1) * bytes] }));
  let h = JSON.stringify(header);
  h += ' '.repeat((8 - (h.length % 8)) % 8);
  const fd = fs.openSync(file, 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  fs.writeSync(fd, len);
  fs.writeSync(fd, h);
  const chunk = new Uint16Array(rows * 1024);
  for (let k = 0; k < chunk.length; k++) chunk[k] = 0x3c00 + ((k * 2654435761) >>> 20) % 0x0400; // |x| in [2^-7, 2^-6)
  for (let i = 0; i < names.length; i++) fs.writeSync(fd, new Uint8Array(chunk.buffer));
  fs.closeSync(fd);
}

/** writes a sharded bf16 component folder of about `params` parameters; returns its float32 byte size */
export function writeShardedCheckpoint(dir: string, params: number): number {
  fs.mkdirSync(dir, { recursive: true });
  const rows = Math.max(1, Math.round(params / (SHARDS * TENSORS_PER_SHARD * 1024)));
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < SHARDS; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(SHARDS).padStart(5, '0')}.safetensors`;
    const names = Array.from({ length: TENSORS_PER_SHARD }, (_, i) => `layers.${s * TENSORS_PER_SHARD + i}.weight`);
    writeShard(path.join(dir, file), names, rows);
    for (const n of names) weightMap[n] = file;
  }
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return SHARDS * TENSORS_PER_SHARD * rows * 1024 * 4;
}

/** in a fresh process: load every tensor as float32 and keep it; peak RSS above the baseline */
async function child(dir: string): Promise<void> {
  const base = vm('VmRSS');
  const w = await ComponentWeights.open(dir);
  const kept: Float32Array[] = [];
  for (const n of w.names()) kept.push(w.tensor(n).data);
  const peak = vm('VmHWM');
  process.stdout.write(JSON.stringify({ baseBytes: base, peakBytes: peak, tensors: kept.length }) + '\n');
}

export function benchLoadRss(o: { params?: number; log?: (s: string) => void } = {}): Record<string, unknown> {
  const params = o.params ?? 64 * 2 ** 20;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-loadrss-'));
  try {
    const fp32 = writeShardedCheckpoint(dir, params);
    const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', dir], { encoding: 'utf8', timeout: 600_000 });
    if (r.status !== 0) return { error: r.stderr.trim() || `exit ${r.status}` };
    const j = JSON.parse(r.stdout) as { baseBytes: number; peakBytes: number };
    const ratio = (j.peakBytes - j.baseBytes) / fp32;
    o.log?.(`  sharded bf16 checkpoint of ${(fp32 / 2 ** 20).toFixed(0)} MB float32: peak RSS +${((j.peakBytes - j.baseBytes) / 2 ** 20).toFixed(0)} MB = ${ratio.toFixed(2)}x (target < 1.3x)`);
    return { what: 'ComponentWeights.open + every tensor as float32, kept (4 bf16 shards + index)', params: fp32 / 4, fp32MB: fp32 / 2 ** 20, bf16MB: fp32 / 2 ** 21, peakAboveBaselineMB: (j.peakBytes - j.baseBytes) / 2 ** 20, ratioToFp32: ratio, target: '< 1.3' };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') await child(process.argv[3]!);
