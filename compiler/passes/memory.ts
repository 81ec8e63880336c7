// Memory planning: liveness intervals over the final launch order, first-fit arena reuse.
// Pinned storages (inputs, outputs, block-list io, anything shared across segments or blocks) get
// their own ranges for the whole plan; everything else shares the rest of the arena.
import type { LOp, Lowered, Storage } from './lower.ts';

export const ALIGN = 16; // floats (64 bytes)

export interface MemoryPlan {
  arenaFloats: number;
  pinnedFloats: number;
  /** storage id -> [first op, last op] in launch order (pinned: whole plan) */
  intervals: Map<number, [number, number]>;
}

const align = (n: number): number => Math.ceil(n / ALIGN) * ALIGN;

/** `ops` in launch order (segments, then blocks, as the plan lists them). */
export function planMemory(lw: Lowered, ops: LOp[], opts: { reuse?: boolean } = {}): MemoryPlan {
  const arena = lw.storages.filter((s) => s.kind === 'arena');
  const first = new Map<number, number>();
  const last = new Map<number, number>();
  const scopes = new Map<number, Set<string>>();
  ops.forEach((o, j) => {
    for (const r of o.t) {
      if (!r) continue;
      if (!first.has(r.st)) first.set(r.st, j);
      last.set(r.st, j);
      const sc = scopes.get(r.st) ?? new Set<string>();
      sc.add(`${o.segment}|${o.block ?? ''}`);
      scopes.set(r.st, sc);
    }
  });
  for (const s of arena) if ((scopes.get(s.id)?.size ?? 0) > 1) s.pinned = true;
  const intervals = new Map<number, [number, number]>();
  let offset = 0;
  // pinned: inputs first (in order), then io, outputs, the rest, each its own range
  const rank = (s: Storage): number => (s.role === 'input' ? 0 : s.role === 'io' ? 1 : s.role === 'output' ? 2 : 3);
  const pinned = arena.filter((s) => s.pinned).sort((a, b) => rank(a) - rank(b) || a.id - b.id);
  for (const s of pinned) {
    s.offset = offset;
    offset += align(s.numel);
    intervals.set(s.id, [0, ops.length]);
  }
  const pinnedFloats = offset;
  const free = arena.filter((s) => !s.pinned && first.has(s.id));
  for (const s of arena) if (!s.pinned && !first.has(s.id)) s.offset = pinnedFloats; // unused (numel counted nowhere)
  free.sort((a, b) => b.numel - a.numel || first.get(a.id)! - first.get(b.id)! || a.id - b.id);
  const placed: { off: number; end: number; a: number; b: number }[] = [];
  let top = pinnedFloats;
  for (const s of free) {
    const a = first.get(s.id)!;
    const b = last.get(s.id)!;
    intervals.set(s.id, [a, b]);
    const size = align(s.numel);
    const conflicts = (opts.reuse === false ? placed : placed.filter((p) => p.a <= b && a <= p.b)).sort((x, y) => x.off - y.off);
    let off = pinnedFloats;
    for (const p of conflicts) {
      if (off + size <= p.off) break;
      off = Math.max(off, p.end);
    }
    s.offset = off;
    placed.push({ off, end: off + size, a, b });
    top = Math.max(top, off + size);
  }
  return { arenaFloats: top, pinnedFloats, intervals };
}
