// Shape inference for every IR op. Throws plain Errors with a readable message; Graph.add prefixes
// the model-file location.

export const UNARY_EW = new Set(['silu', 'gelu_tanh', 'gelu_erf', 'neg', 'scale', 'add_scalar', 'sigmoid', 'tanh', 'exp', 'sqrt', 'rsqrt', 'square', 'identity']);
export const BINARY_EW = new Set(['add', 'sub', 'mul', 'div']);

function fmt(s: number[]): string {
  return `[${s.join(', ')}]`;
}

function need(cond: boolean, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

/** numpy-style broadcast of two shapes (right-aligned) */
export function broadcastShapes(a: number[], b: number[], what: string): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    need(x === y || x === 1 || y === 1, `${what}: shapes ${fmt(a)} and ${fmt(b)} do not broadcast (axis ${i}: ${x} vs ${y})`);
    out.push(Math.max(x, y));
  }
  return out;
}

/** a per-batch vector: [B, C] or [B, 1, C] */
export function isBatchVec(s: number[], B: number, C: number): boolean {
  return (s.length === 2 && s[0] === B && s[1] === C) || (s.length === 3 && s[0] === B && s[1] === 1 && s[2] === C);
}

function normAxis(axis: number, rank: number, what: string): number {
  const a = axis < 0 ? axis + rank : axis;
  need(a >= 0 && a < rank, `${what}: axis ${axis} out of range for rank ${rank}`);
  return a;
}

export function inferShape(op: string, ins: number[][], attrs: Record<string, unknown>, present: boolean[]): number[] {
  const A = attrs as Record<string, any>;
  const x = ins[0] ?? [];
  const last = x[x.length - 1] ?? 0;
  if (UNARY_EW.has(op)) return [...x];
  if (BINARY_EW.has(op)) return broadcastShapes(x, ins[1]!, op);
  switch (op) {
    case 'input':
    case 'weight':
      return [...(A.shape as number[])];
    case 'block_in':
    case 'block_out':
    case 'all_reduce': // tensor parallel: sum over the TP group (compiler/passes/tp-lower.ts)
    case 'dist_rms_norm': // tensor parallel: RMSNorm over channels sharded across the TP group
      return [...x];
    case 'tp_all_gather': {
      // tensor parallel (compiler/passes/tp-lower.ts): channels gathered over the TP group
      const out = [...x];
      out[out.length - 1] = A.full as number;
      return out;
    }
    case 'all_gather': {
      // context parallel internal gather point (compiler/passes/cp-points.ts): the token axis grows to `full`
      const ax = normAxis(A.axis as number, x.length, 'all_gather');
      const out = [...x];
      out[ax] = A.full as number;
      return out;
    }
    case 'linear': {
      const w = ins[1]!;
      need(w.length === 2, `linear: weight must be 2-D, got ${fmt(w)}`);
      need(
        w[1] === last,
        `linear '${A.name ?? ''}' expects ${w[1]} input channels, got ${last} (input shape ${fmt(x)})`,
      );
      if (present[2]) need(ins[2]!.length === 1 && ins[2]![0] === w[0], `linear '${A.name ?? ''}': bias shape ${fmt(ins[2]!)} does not match ${w[0]} outputs`);
      if (A.epilogue === 3) {
        const out = [...x.slice(0, -1), w[0]!];
        need(ins[4] !== undefined && fmt(ins[4]) === fmt(out), `linear epilogue 3: residual must have shape ${fmt(out)}`);
      }
      return [...x.slice(0, -1), w[0]!];
    }
    case 'layer_norm':
    case 'rms_norm': {
      need(x.length >= 1, `${op}: input must have rank >= 1`);
      for (let i = 1; i <= 2; i++) if (present[i]) need(ins[i]!.length === 1 && ins[i]![0] === last, `${op}: weight/bias shape ${fmt(ins[i]!)} must be [${last}]`);
      return [...x];
    }
    case 'head_rms_norm': {
      const H = A.heads as number;
      need(last % H === 0, `per-head RMSNorm: ${last} channels are not divisible by ${H} heads`);
      if (present[1]) need(ins[1]!.length === 1 && ins[1]![0] === last / H, `per-head RMSNorm: weight must be [${last / H}] (head dim), got ${fmt(ins[1]!)}`);
      return [...x];
    }
    case 'rope_table': {
      need(x.length === 2, `rope ids must be [S, axes], got ${fmt(x)}`);
      const axes = A.axes as number[];
      need(x[1]! >= axes.length, `rope ids have ${x[1]} axes, ${axes.length} axis dims given`);
      for (const d of axes) need(d % 2 === 0, `rope axis dim ${d} must be even`);
      return [2, x[0]!, axes.reduce((a, b) => a + b, 0)];
    }
    case 'rope':
    case 'qk_norm_rope': {
      need(x.length === 3, `${op}: input must be [B, S, H*D], got ${fmt(x)}`);
      const H = A.heads as number;
      need(x[2]! % H === 0, `${op}: ${x[2]} channels are not divisible by ${H} heads`);
      const D = x[2]! / H;
      const tIdx = op === 'rope' ? 1 : 2;
      if (present[tIdx]) {
        const t = ins[tIdx]!;
        need(t.length === 3 && t[0] === 2, `${op}: rope table must be [2, S, D], got ${fmt(t)}`);
        need(t[2] === D, `rope: table has head dim ${t[2]} (sum of axes dims) but the heads have dim ${D}`);
        const r0 = (A.row0 as number) ?? 0;
        need(r0 + x[1]! <= t[1]!, `rope: rows ${r0}..${r0 + x[1]!} exceed the ${t[1]} rows of the rope table`);
      }
      return [...x];
    }
    case 'attention':
    case 'attention_bias': {
      const [q, k, v] = [ins[0]!, ins[1]!, ins[2]!];
      const H = A.heads as number;
      need(q.length === 3 && k.length === 3 && v.length === 3, `attention: q/k/v must be [B, S, H*D]`);
      need(q[0] === k[0] && k[0] === v[0], `attention: batch mismatch q ${fmt(q)} k ${fmt(k)} v ${fmt(v)}`);
      // grouped-query attention: k and v hold kvHeads of the head dim
      const kvC = A.kvHeads ? (q[2]! / H) * (A.kvHeads as number) : q[2]!;
      need(k[2] === kvC && k[2] === v[2], `attention: channel mismatch q ${fmt(q)} k ${fmt(k)} v ${fmt(v)}`);
      need(k[1] === v[1], `attention: k has ${k[1]} tokens, v has ${v[1]}`);
      need(q[2]! % H === 0, `attention: ${q[2]} channels cannot be split into ${H} heads`);
      // input 3: attention's key mask [B, Sk], or attention_bias's bias [H, Sq, Sk]
      const [what, want] = op === 'attention' ? ['key mask', [k[0]!, k[1]!]] : ['bias', [H, q[1]!, k[1]!]];
      if (present[3]) need(fmt(ins[3]!) === fmt(want), `attention: ${what} must be ${fmt(want)}, got ${fmt(ins[3]!)}`);
      // input 4: attention_bias's key mask [B, Sk]
      if (present[4]) need(fmt(ins[4]!) === fmt([k[0]!, k[1]!]), `attention: key mask must be ${fmt([k[0]!, k[1]!])}, got ${fmt(ins[4]!)}`);
      return [...q];
    }
    case 't5_position_bias': {
      need(x.length === 2, `t5 position bias: table must be [numBuckets, H], got ${fmt(x)}`);
      need(x[0] === A.numBuckets, `t5 position bias: table has ${x[0]} buckets, the config says ${A.numBuckets}`);
      need((A.numBuckets as number) >= 4 && (A.maxDistance as number) > (A.numBuckets as number) / 4, `t5 position bias: need numBuckets >= 4 and maxDistance > numBuckets / 4, got ${A.numBuckets} / ${A.maxDistance}`);
      return [x[1]!, A.queries as number, A.keys as number];
    }
    case 'timestep_embedding':
      need(x.length === 1, `timestep embedding: timestep must be [B], got ${fmt(x)}`);
      need((A.dim as number) % 2 === 0, `timestep embedding: dim ${A.dim} must be even`);
      return [x[0]!, A.dim as number];
    case 'embedding': {
      const t = ins[1]!;
      need(t.length === 2, `embedding: table must be [V, C], got ${fmt(t)}`);
      return [...x, t[1]!];
    }
    case 'masked_mean': {
      const m = ins[1]!;
      need(x.length === 3 && m.length === 2 && m[0] === x[0] && m[1] === x[1], `masked mean: x ${fmt(x)} and mask ${fmt(m)} must be [B, S, C] and [B, S]`);
      return [x[0]!, x[2]!];
    }
    case 'conv2d': {
      const w = ins[1]!;
      need(x.length === 4, `conv2d: input must be [N, C, H, W], got ${fmt(x)}`);
      need(w.length === 4, `conv2d: weight must be [Co, Ci, kh, kw], got ${fmt(w)}`);
      need(w[1] === x[1], `conv2d '${A.name ?? ''}' expects ${w[1]} input channels, got ${x[1]}`);
      const s = A.stride as number;
      const p = (A.pad as number) + (A.padEnd as number);
      const ho = Math.floor((x[2]! + p - w[2]!) / s) + 1;
      const wo = Math.floor((x[3]! + p - w[3]!) / s) + 1;
      need(ho > 0 && wo > 0, `conv2d: output would be empty`);
      return [x[0]!, w[0]!, ho, wo];
    }
    case 'conv3d': {
      // frame-major [T, Ci, H, W]: output frame t reads input frames t .. t+kt-1 (no temporal padding)
      const w = ins[1]!;
      need(x.length === 4, `conv3d: input must be frame-major [T, C, H, W], got ${fmt(x)}`);
      need(w.length === 5, `conv3d: weight must be [Co, Ci, kt, kh, kw], got ${fmt(w)}`);
      need(w[1] === x[1], `conv3d '${A.name ?? ''}' expects ${w[1]} input channels, got ${x[1]}`);
      need(x[0]! >= w[2]!, `conv3d '${A.name ?? ''}': ${x[0]} input frames are fewer than the ${w[2]} temporal taps`);
      const s = A.stride as number;
      const p = A.pad as number;
      const ho = Math.floor((x[2]! + 2 * p - w[3]!) / s) + 1;
      const wo = Math.floor((x[3]! + 2 * p - w[4]!) / s) + 1;
      need(ho > 0 && wo > 0, `conv3d: output would be empty`);
      return [x[0]! - w[2]! + 1, w[0]!, ho, wo];
    }
    case 'group_norm': {
      need(x.length >= 2, `group_norm: input must be [N, C, ...]`);
      const G = A.groups as number;
      need(x[1]! % G === 0, `group_norm: ${x[1]} channels are not divisible by ${G} groups`);
      return [...x];
    }
    case 'upsample_nearest2x':
      need(x.length === 4, `upsample: input must be [N, C, H, W]`);
      return [x[0]!, x[1]!, x[2]! * 2, x[3]! * 2];
    case 'transpose':
      need(x.length === 3, `transpose: input must be [batch, R, C], got ${fmt(x)}`);
      return [x[0]!, x[2]!, x[1]!];
    case 'reshape': {
      const s = [...(A.shape as number[])];
      const n = x.reduce((a, b) => a * b, 1);
      const known = s.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
      const neg = s.filter((d) => d === -1).length;
      need(neg <= 1, `reshape: at most one -1`);
      if (neg) {
        need(n % known === 0, `reshape: cannot view ${fmt(x)} as ${fmt(s)}`);
        s[s.indexOf(-1)] = n / known;
      }
      need(s.reduce((a, b) => a * b, 1) === n, `reshape: cannot view ${fmt(x)} (${n} elements) as ${fmt(s)}`);
      return s;
    }
    case 'slice': {
      const ax = normAxis(A.axis as number, x.length, 'slice');
      const st = A.start as number;
      const len = A.len as number;
      need(st >= 0 && len > 0 && st + len <= x[ax]!, `slice: [${st}, ${st + len}) out of range for axis ${ax} of size ${x[ax]}`);
      const out = [...x];
      out[ax] = len;
      return out;
    }
    case 'concat': {
      const ax = normAxis(A.axis as number, x.length, 'concat');
      const out = [...x];
      for (let i = 1; i < ins.length; i++) {
        const s = ins[i]!;
        need(s.length === x.length, `concat: rank mismatch ${fmt(x)} vs ${fmt(s)}`);
        for (let d = 0; d < s.length; d++) if (d !== ax) need(s[d] === x[d], `concat on axis ${ax}: shapes ${fmt(x)} and ${fmt(s)} differ on axis ${d}`);
        out[ax] += s[ax]!;
      }
      return out;
    }
    case 'modulate':
    case 'ln_modulate': {
      need(x.length === 3, `modulate: input must be [B, S, C], got ${fmt(x)}`);
      for (const i of [1, 2]) {
        const s = ins[i]!;
        need(isBatchVec(s, x[0]!, x[2]!), `modulate: shift/scale must be [${x[0]}, ${x[2]}] or [${x[0]}, 1, ${x[2]}] (per batch, per channel), got ${fmt(s)}`);
      }
      return [...x];
    }
    case 'gate_residual': {
      const [r, g, v] = [ins[0]!, ins[1]!, ins[2]!];
      need(fmt(r) === fmt(v), `gated residual: residual ${fmt(r)} and value ${fmt(v)} differ`);
      need(r.length === 3 && isBatchVec(g, r[0]!, r[2]!), `gate must be [${r[0]}, ${r[2]}] or [${r[0]}, 1, ${r[2]}] for a [B, S, C] residual ${fmt(r)}, got ${fmt(g)}`);
      return [...r];
    }
    case 'gate': {
      const [g, v] = [ins[0]!, ins[1]!];
      need(v.length === 3 && isBatchVec(g, v[0]!, v[2]!), `gate must be [${v[0]}, ${v[2]}] or [${v[0]}, 1, ${v[2]}] for a [B, S, C] value ${fmt(v)}, got ${fmt(g)}`);
      return [...v];
    }
    case 'ew':
      return [...(A.shape as number[])];
    default:
      throw new Error(`internal: no shape rule for op '${op}'`);
  }
}
