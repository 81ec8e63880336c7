// Calibrators (reference §1.8): TaylorSeer, FoCa and DMD. The state logic here only holds tensor handles
// and calls `TensorOps` (tensor-ops.ts): `hostOps` on host arrays (default, the reference) or the native
// cache kernels (NativeBlockListRunner.ops), so updates and forecasts never read a tensor back to the host.
// What stays on the host: step counters, coefficients, and DMD's tiny fit (Gram-matrix eigen / solve on at
// most history x history float64 values from `ops.gram`, launched by the update, read at the fit).

import type { CalibratorConfig } from './config.ts';
import { cmul, cadd, cconj, cpow, csolve, eig, symEig, type Complex } from './linalg.ts';
import { hostOps, type TensorOps } from './tensor-ops.ts';

/** A forecast as a linear combination of tensors, per batch segment (segments split the flat tensor). */
export interface ForecastTerms {
  /** number of equal batch segments (1 for elementwise calibrators) */
  batch: number;
  /** per segment: tensors and coefficients */
  terms: { tensors: Float32Array[]; coefs: number[] }[];
  /** TaylorSeer accumulates in float32 like torch; DMD accumulates in float64 then casts */
  precision: 'f32' | 'f64';
}

/** Evaluate forecast terms on the host (hostOps.combine / combine64; every segment uses the same tensors). */
export function evalTerms(t: ForecastTerms, numel: number): Float32Array {
  if (t.terms[0].tensors.length === 0) return new Float32Array(numel);
  if (t.precision === 'f32') {
    if (t.batch !== 1) throw new Error('evalTerms: float32 terms have batch 1');
    return hostOps.combine(t.terms[0].tensors, t.terms[0].coefs);
  }
  return hostOps.combine64(t.terms[0].tensors, t.terms.map((x) => x.coefs), t.batch);
}

function factorial(n: number): number {
  let r = 1;
  for (let i = 2; i <= n; i++) r *= i;
  return r;
}

// ---------------------------------------------------------------------------------------------
// TaylorSeer

export interface TaylorState {
  nDerivatives: number;
  currentStep: number;
  lastNonApproximatedStep: number;
  dYPrev: (Float32Array | null)[];
  dYCurrent: (Float32Array | null)[];
}

export function newTaylorState(nDerivatives: number): TaylorState {
  return {
    nDerivatives,
    currentStep: -1,
    lastNonApproximatedStep: -1,
    dYPrev: new Array(nDerivatives + 1).fill(null),
    dYCurrent: new Array(nDerivatives + 1).fill(null),
  };
}

function resetTaylor(s: TaylorState): void {
  s.dYPrev = new Array(s.nDerivatives + 1).fill(null);
  s.dYCurrent = new Array(s.nDerivatives + 1).fill(null);
  s.currentStep = -1;
  s.lastNonApproximatedStep = -1;
}

/**
 * TaylorSeer `update(Y)`: divided differences over the real step gap
 * `window = current_step - last_non_approximated_step`.
 * QUIRK (Cache-DiT): a derivative is only formed while `current_step > 1` in the state's own counter,
 * which lags the context by one (states are created lazily at -1), so the first slope appears at the
 * 4th compute step of a context; with fewer computes the forecast is plain reuse of the last value.
 *
 * `y` becomes the state's d0 (callers pass a copy they own).
 * variant 'dmd' reproduces DMDState._update_taylor (the DMD warm-up fallback): it adds a `window > 0`
 * guard and - QUIRK - differences against `dY_prev` BEFORE shifting the ladder, i.e. against the ladder of
 * the compute step before the previous one, while still dividing by the last gap only.
 */
export function taylorUpdate(
  s: TaylorState,
  y: Float32Array,
  variant: 'taylorseer' | 'dmd' = 'taylorseer',
  ops: TensorOps = hostOps,
): void {
  const cur: (Float32Array | null)[] = new Array(s.nDerivatives + 1).fill(null);
  cur[0] = y;
  const window = s.currentStep - s.lastNonApproximatedStep;
  // TaylorSeer shifts first (dY_prev <- dY_current) and then differences against dY_prev.
  const ref = variant === 'taylorseer' ? s.dYCurrent : s.dYPrev;
  if (ref[0] !== null && ref[0].length !== y.length) resetTaylor(s); // QUIRK: also resets the step counters
  const prev = variant === 'taylorseer' ? s.dYCurrent : s.dYPrev;
  for (let i = 0; i < s.nDerivatives; i++) {
    const p = prev[i];
    if (p !== null && s.currentStep > 1 && (variant === 'taylorseer' || window > 0)) {
      cur[i + 1] = ops.diff(cur[i]!, p, window);
    } else {
      break;
    }
  }
  s.dYPrev = s.dYCurrent;
  s.dYCurrent = cur;
  s.lastNonApproximatedStep = s.currentStep;
}

/** the tensors of both ladders (buffer recycling, StateCalibrator) */
function* taylorHandles(s: TaylorState): Iterable<Float32Array> {
  for (const t of s.dYPrev) if (t) yield t;
  for (const t of s.dYCurrent) if (t) yield t;
}

/** `approximate()`: sum_i dY_i * elapsed^i / i!, stopping at the first missing derivative. */
export function taylorTerms(s: TaylorState): ForecastTerms {
  const elapsed = s.currentStep - s.lastNonApproximatedStep;
  const tensors: Float32Array[] = [];
  const coefs: number[] = [];
  for (let i = 0; i < s.dYCurrent.length; i++) {
    const d = s.dYCurrent[i];
    if (d === null) break;
    tensors.push(d);
    // torch: (1 / i!) * derivative * elapsed**i  (two float32 multiplies); folded into one coefficient
    coefs.push((1 / factorial(i)) * Math.pow(elapsed, i));
  }
  return { batch: 1, terms: [{ tensors, coefs }], precision: 'f32' };
}

/** TaylorSeer forecast through `ops.combine` (terms beyond 6 are chained natively, same float32 order) */
export function taylorApproximate(s: TaylorState, ops: TensorOps = hostOps): Float32Array {
  const { tensors, coefs } = taylorTerms(s).terms[0];
  return tensors.length ? ops.combine(tensors, coefs) : new Float32Array(0);
}

// ---------------------------------------------------------------------------------------------
// FoCa

export interface FocaState {
  currentStep: number;
  lastFullStep: number;
  Fk: Float32Array | null;
  Fkm1: Float32Array | null;
  Ffull: Float32Array | null;
  FfullPrev: Float32Array | null;
}

export function newFocaState(): FocaState {
  return { currentStep: -1, lastFullStep: -1, Fk: null, Fkm1: null, Ffull: null, FfullPrev: null };
}

export function focaUpdate(s: FocaState, y: Float32Array): void {
  s.FfullPrev = s.Ffull;
  s.Ffull = y;
  s.Fkm1 = s.Fk;
  s.Fk = y;
  s.lastFullStep = s.currentStep;
}

/*
 * FoCa forecast (tensor-ops.ts `foca`): Heun/trapezoid `F_full + (e/2)(dfull + dcurr)` for elapsed e <= 3,
 * damped `w(F_full + 1.5(dfull+dcurr)) + (1-w)F_full` with w = 3/e beyond. QUIRK (Cache-DiT): dfull and
 * dcurr are NOT divided by the step gap between anchors. Single anchor -> copy of the anchor.
 */
/** FoCa approximate: evaluates and feeds the prediction back (F_km1 <- F_k, F_k <- F), recursive. */
export function focaApproximate(s: FocaState, ops: TensorOps = hostOps): Float32Array {
  const full = s.Ffull;
  if (full === null) throw new Error('FoCa: approximate() before any update()');
  if (s.Fkm1 === null || s.FfullPrev === null) return ops.copy(full);
  const F = ops.foca(full, s.FfullPrev, s.Fk!, s.Fkm1, s.currentStep - s.lastFullStep);
  s.Fkm1 = s.Fk;
  s.Fk = F;
  return F;
}

// ---------------------------------------------------------------------------------------------
// DMD (Dynamic Mode Decomposition / Prony)

export interface DmdSnapshot {
  step: number;
  y: Float32Array;
}

export interface DmdState {
  history: number;
  rank: number;
  ridge: number;
  currentStep: number;
  lastNonApproximatedStep: number;
  snapshots: DmdSnapshot[];
  batch: number;
  taylor: TaylorState;
  fitKey: string | null;
  fit: DmdFit | null;
  /** Gram matrices of the tail launched by the last update (fit key + deferred read), see dmdUpdate */
  gram: { key: string; read: () => Float64Array } | null;
}

/** Per batch item: forecast = sum_j Re(M (lambda^k . b))_j * Xp_j, Xp_j = snapshot j+1 of the tail. */
export interface DmdItemFit {
  M: Complex[][]; // m x r
  lambda: Complex[];
  b: Complex[];
}

export interface DmdFit {
  items: (DmdItemFit | null)[];
  /** snapshots of the uniform tail, OLDEST..NEWEST */
  tail: Float32Array[];
}

export function newDmdState(history: number, rank: number, ridge: number, nDerivatives = 1): DmdState {
  return {
    history, rank, ridge,
    currentStep: -1,
    lastNonApproximatedStep: -1,
    snapshots: [],
    batch: 1,
    taylor: newTaylorState(nDerivatives),
    fitKey: null,
    fit: null,
    gram: null,
  };
}

function resetDmd(s: DmdState): void {
  s.currentStep = -1;
  s.lastNonApproximatedStep = -1;
  s.snapshots = [];
  s.fit = null;
  s.fitKey = null;
  s.gram = null;
  resetTaylor(s.taylor);
}

/** `y` is not kept: the state stores one copy (shared by the snapshot and the Taylor fallback ladder). */
export function dmdUpdate(s: DmdState, y: Float32Array, batch: number, ops: TensorOps = hostOps): void {
  if (s.snapshots.length && s.snapshots[s.snapshots.length - 1].y.length !== y.length) resetDmd(s);
  s.batch = batch;
  s.taylor.currentStep = s.currentStep;
  s.taylor.lastNonApproximatedStep = s.lastNonApproximatedStep;
  const c = ops.copy(y); // never written in place, so one copy serves both
  taylorUpdate(s.taylor, c, 'dmd', ops);
  s.snapshots.push({ step: s.currentStep, y: c });
  if (s.snapshots.length > s.history) s.snapshots.splice(0, s.snapshots.length - s.history);
  s.lastNonApproximatedStep = s.currentStep;
  s.fitKey = null;
  // the next fit's Gram matrices are launched now, at the compute step, so that they reach the host with the
  // next step's probe sums instead of as a read of their own (the window key cannot change before the fit)
  const { snaps, spacing } = uniformSnapshots(s);
  s.gram = snaps.length >= 4 ? { key: dmdFitKey(s, snaps.length, spacing), read: ops.gram(snaps.map((x) => x.y), batch) } : null;
}

function dmdFitKey(s: DmdState, tailLength: number, spacing: number): string {
  return `${s.snapshots[s.snapshots.length - 1].step}|${tailLength}|${spacing}`;
}

/** Longest uniformly spaced suffix of the snapshot history (OLDEST..NEWEST) and its spacing. */
export function dmdUniformTail(s: DmdState): { tail: Float32Array[]; spacing: number } {
  const { snaps, spacing } = uniformSnapshots(s);
  return { tail: snaps.map((x) => x.y), spacing };
}

function uniformSnapshots(s: DmdState): { snaps: DmdSnapshot[]; spacing: number } {
  const n = s.snapshots.length;
  if (n < 2) return { snaps: [], spacing: 0 };
  const steps = s.snapshots.map((x) => x.step);
  const spacing = steps[n - 1] - steps[n - 2];
  if (spacing <= 0) return { snaps: [], spacing: 0 };
  let j = n - 2;
  while (j - 1 >= 0 && steps[j] - steps[j - 1] === spacing) j--;
  return { snaps: s.snapshots.slice(j), spacing };
}

/**
 * Per batch item G[b][i][j] = <Y_i, Y_j> over segment b from an `ops.gram` result of n snapshots (float64,
 * fixed chunk order; natively one dmd_gram launch for up to 7 snapshots).
 */
function gramMatrices(g: Float64Array, n: number, batch: number): number[][][] {
  return Array.from({ length: batch }, (_, b) => Array.from({ length: n }, (_, i) => Array.from(g.subarray((b * n + i) * n, (b * n + i + 1) * n))));
}

/** Fit one batch item on rows [off, off+d) of the tail snapshots (float64, Gram-matrix economy SVD). */
export function dmdFitItem(tail: Float32Array[], off: number, d: number, rank: number, ridge: number): DmdItemFit | null {
  return dmdFitGram(gramMatrices(hostOps.gram(tail.map((y) => y.subarray(off, off + d)), 1)(), tail.length, 1)[0], rank, ridge);
}

/** The DMD fit from the Gram matrix G[i][j] = <Y_i, Y_j> of n snapshots (host, float64, n <= history). */
export function dmdFitGram(G: number[][], rank: number, ridge: number): DmdItemFit | null {
  const n = G.length;
  const m = n - 1;
  if (!G.every((r) => r.every(Number.isFinite))) return null;
  // X = [Y0..Y_{m-1}], Xp = [Y1..Ym]; X^T X = V S^2 V^T
  const XtX = Array.from({ length: m }, (_, i) => Array.from({ length: m }, (_, j) => G[i][j]));
  const { values, vectors } = symEig(XtX);
  const sig = values.map((v) => Math.sqrt(Math.max(v, 0)));
  if (!(sig[0] > 0)) return null;
  let r = rank;
  if (r <= 0) r = Math.max(1, sig.filter((x) => x > sig[0] * 1e-4).length);
  r = Math.max(1, Math.min(r, m));
  const Vr = (i: number, j: number) => vectors[i][j]; // m x m, use first r columns
  // A~ = S_r^-1 V_r^T (X^T Xp) V_r (S_r + ridge)^-1
  const XtXp = Array.from({ length: m }, (_, i) => Array.from({ length: m }, (_, j) => G[i][j + 1]));
  const T1: number[][] = Array.from({ length: r }, () => new Array<number>(m).fill(0)); // V_r^T XtXp
  for (let a = 0; a < r; a++) for (let j = 0; j < m; j++) {
    let s = 0;
    for (let i = 0; i < m; i++) s += Vr(i, a) * XtXp[i][j];
    T1[a][j] = s;
  }
  const At: number[][] = Array.from({ length: r }, () => new Array<number>(r).fill(0));
  for (let a = 0; a < r; a++) for (let c = 0; c < r; c++) {
    let s = 0;
    for (let j = 0; j < m; j++) s += T1[a][j] * Vr(j, c);
    At[a][c] = s / sig[a] / (sig[c] + ridge);
  }
  if (!At.every((row) => row.every(Number.isFinite))) return null;
  const ev = eig(At);
  if (!ev) return null;
  // M = V_r (S_r + ridge)^-1 W   (m x r), Phi = Xp M
  const M: Complex[][] = Array.from({ length: m }, (_, i) =>
    Array.from({ length: r }, (_, c) => {
      let re = 0;
      let im = 0;
      for (let a = 0; a < r; a++) {
        const w = ev.vectors[a][c];
        const f = Vr(i, a) / (sig[a] + ridge);
        re += f * w.re;
        im += f * w.im;
      }
      return { re, im };
    }),
  );
  // b = lstsq(Phi, y), y = newest snapshot: (M^H XpTXp M) b = M^H (Xp^T y)
  const XpXp = Array.from({ length: m }, (_, i) => Array.from({ length: m }, (_, j) => G[i + 1][j + 1]));
  const Xpy = Array.from({ length: m }, (_, i) => G[i + 1][n - 1]);
  const N: Complex[][] = Array.from({ length: r }, () => new Array<Complex>(r));
  const rhs: Complex[] = new Array(r);
  for (let p = 0; p < r; p++) {
    let rr: Complex = { re: 0, im: 0 };
    for (let i = 0; i < m; i++) rr = cadd(rr, { re: M[i][p].re * Xpy[i], im: -M[i][p].im * Xpy[i] });
    rhs[p] = rr;
    for (let q = 0; q < r; q++) {
      let s: Complex = { re: 0, im: 0 };
      for (let i = 0; i < m; i++) {
        let t: Complex = { re: 0, im: 0 };
        for (let j = 0; j < m; j++) t = cadd(t, { re: XpXp[i][j] * M[j][q].re, im: XpXp[i][j] * M[j][q].im });
        s = cadd(s, cmul(cconj(M[i][p]), t));
      }
      N[p][q] = s;
    }
  }
  const b = csolve(N, rhs);
  if (!b) return null;
  return { M, lambda: ev.values, b };
}

/** Coefficients over Xp (= tail[1..]) for horizon k (fractional allowed). */
export function dmdCoefs(f: DmdItemFit, k: number): number[] {
  const z = f.lambda.map((l, i) => cmul(cpow(l, k), f.b[i]));
  return f.M.map((row) => row.reduce((acc, mij, i) => acc + (mij.re * z[i].re - mij.im * z[i].im), 0));
}

export function dmdApproximate(s: DmdState, ops: TensorOps = hostOps): Float32Array {
  const { snaps, spacing } = uniformSnapshots(s);
  if (snaps.length >= 4) {
    const last = s.snapshots[s.snapshots.length - 1];
    const k = (s.currentStep - last.step) / spacing;
    const key = dmdFitKey(s, snaps.length, spacing);
    if (s.fitKey !== key) {
      const tail = snaps.map((x) => x.y);
      // launched by the update (always, unless the state was edited by hand): the deferred read
      const read = s.gram?.key === key ? s.gram.read : ops.gram(tail, s.batch);
      const G = gramMatrices(read(), tail.length, s.batch);
      s.fit = { items: G.map((g) => dmdFitGram(g, s.rank, s.ridge)), tail: snaps.map((x) => x.y) };
      s.fitKey = key;
    }
    const fit = s.fit!;
    // non-finite output -> the newest snapshot (combine64 does it where the values are)
    if (fit.items.every((x) => x !== null)) return ops.combine64(fit.tail.slice(1), fit.items.map((it) => dmdCoefs(it!, k)), s.batch);
    return ops.copy(last.y); // degenerate: reuse newest snapshot
  }
  s.taylor.currentStep = s.currentStep;
  return taylorApproximate(s.taylor, ops);
}

// ---------------------------------------------------------------------------------------------
// Calibrator objects (states keyed by tensor-stream name, created lazily on first update)

export interface Calibrator {
  readonly type: 'taylorseer' | 'foca' | 'dmd';
  /** reset every state (the name -> state mapping is kept), current steps back to -1 */
  resetCache(): void;
  /** advance every existing state's step counter */
  markStepBegin(): void;
  /** feed a computed tensor (not kept: the state copies it with `ops`) */
  update(y: Float32Array, name: string, batch?: number, ops?: TensorOps): void;
  /**
   * the forecast, a tensor made by `ops` (FoCa also feeds it back into its state). Valid until the next
   * update / approximate / resetCache of `name`: with ops that recycle buffers (NativeTensorOps) it is then
   * released; callers apply it at once.
   */
  approximate(name: string, ops?: TensorOps): Float32Array;
  has(name: string): boolean;
}

/**
 * per-name states with Cache-DiT's lazy creation and the shared step counter.
 * Buffer recycling (`ops.release`): states share handles (a DMD snapshot is also its Taylor ladder's d0, FoCa's
 * F_k is F_full after an update, a DMD fit holds its tail), so rather than tracking each drop, every call
 * re-lists the tensors the state reaches (`handles`) and releases those it reached before and no longer does.
 * The last forecast counts as reached until the next call on its state, so the caller can still apply it.
 */
abstract class StateCalibrator<S extends { currentStep: number }> implements Calibrator {
  abstract readonly type: Calibrator['type'];
  readonly states = new Map<string, S>();
  /** per state: the tensors it reached after its last call (incl. that call's forecast) and the ops that made them */
  private readonly held = new Map<string, { ops: TensorOps; live: Set<Float32Array> }>();
  protected abstract fresh(): S;
  protected abstract reset(s: S): void;
  /** every tensor the state holds (duplicates allowed) */
  protected abstract handles(s: S): Iterable<Float32Array>;
  protected abstract updateState(s: S, y: Float32Array, batch: number | undefined, ops: TensorOps): void;
  protected abstract approximateState(s: S, ops: TensorOps): Float32Array;
  update(y: Float32Array, name: string, batch?: number, ops: TensorOps = hostOps): void {
    const s = this.state(name, true);
    this.updateState(s, y, batch, ops);
    this.sweep(name, s, ops);
  }
  approximate(name: string, ops: TensorOps = hostOps): Float32Array {
    const s = this.state(name, false);
    const f = this.approximateState(s, ops);
    this.sweep(name, s, ops, f);
    return f;
  }
  resetCache(): void {
    for (const [name, s] of this.states) {
      this.reset(s);
      const h = this.held.get(name);
      if (h) this.sweep(name, s, h.ops);
    }
  }
  /** releases what state `name` reached before this call and reaches no more (nothing when ops cannot recycle) */
  private sweep(name: string, s: S, ops: TensorOps, forecast?: Float32Array): void {
    if (!ops.release) return;
    const live = new Set(this.handles(s));
    if (forecast) live.add(forecast);
    const before = this.held.get(name);
    if (before) for (const t of before.live) if (!live.has(t)) before.ops.release?.(t);
    this.held.set(name, { ops, live });
  }
  markStepBegin(): void {
    for (const s of this.states.values()) s.currentStep += 1;
  }
  has(name: string): boolean {
    return this.states.has(name);
  }
  protected state(name: string, create: boolean): S {
    let s = this.states.get(name);
    if (!s && create) this.states.set(name, (s = this.fresh()));
    if (!s) throw new Error(`${this.type}: state '${name}' not found (approximate() before any update())`);
    return s;
  }
}

export class TaylorSeerCalibrator extends StateCalibrator<TaylorState> {
  readonly type = 'taylorseer';
  constructor(readonly nDerivatives = 1) {
    super();
  }
  protected fresh(): TaylorState {
    return newTaylorState(this.nDerivatives);
  }
  protected reset(s: TaylorState): void {
    resetTaylor(s);
  }
  protected handles(s: TaylorState): Iterable<Float32Array> {
    return taylorHandles(s);
  }
  protected updateState(s: TaylorState, y: Float32Array, _batch: number | undefined, ops: TensorOps): void {
    taylorUpdate(s, ops.copy(y), 'taylorseer', ops);
  }
  protected approximateState(s: TaylorState, ops: TensorOps): Float32Array {
    return taylorApproximate(s, ops);
  }
  /** the forecast as terms (evaluates to `approximate(name)`) */
  terms(name: string): ForecastTerms {
    return taylorTerms(this.state(name, false));
  }
}

export class FoCaCalibrator extends StateCalibrator<FocaState> {
  readonly type = 'foca';
  protected fresh(): FocaState {
    return newFocaState();
  }
  protected reset(s: FocaState): void {
    Object.assign(s, newFocaState());
  }
  protected *handles(s: FocaState): Iterable<Float32Array> {
    for (const t of [s.Fk, s.Fkm1, s.Ffull, s.FfullPrev]) if (t) yield t;
  }
  protected updateState(s: FocaState, y: Float32Array, _batch: number | undefined, ops: TensorOps): void {
    focaUpdate(s, ops.copy(y));
  }
  protected approximateState(s: FocaState, ops: TensorOps): Float32Array {
    return focaApproximate(s, ops);
  }
}

export class DMDCalibrator extends StateCalibrator<DmdState> {
  readonly type = 'dmd';
  constructor(
    readonly history = 6,
    readonly rank = 0,
    readonly ridge = 1e-8,
    readonly nDerivatives = 1,
  ) {
    super();
  }
  protected fresh(): DmdState {
    return newDmdState(this.history, this.rank, this.ridge, this.nDerivatives);
  }
  protected reset(s: DmdState): void {
    resetDmd(s);
  }
  protected *handles(s: DmdState): Iterable<Float32Array> {
    for (const x of s.snapshots) yield x.y;
    if (s.fit) yield* s.fit.tail;
    yield* taylorHandles(s.taylor);
  }
  override update(y: Float32Array, name: string, batch = 1, ops: TensorOps = hostOps): void {
    // checked before the state is created, so a bad batch leaves no empty state behind
    if (!Number.isInteger(batch) || batch < 1 || y.length % batch !== 0) {
      throw new Error(`DMD: batch ${batch} does not divide the tensor size ${y.length}`);
    }
    super.update(y, name, batch, ops);
  }
  protected updateState(s: DmdState, y: Float32Array, batch: number | undefined, ops: TensorOps): void {
    dmdUpdate(s, y, batch ?? 1, ops);
  }
  protected approximateState(s: DmdState, ops: TensorOps): Float32Array {
    return dmdApproximate(s, ops);
  }
}

/** Cache-DiT `Calibrator(config)` factory. */
export function createCalibrator(cfg: CalibratorConfig): Calibrator {
  switch (cfg.calibrator_type) {
    case 'taylorseer':
      return new TaylorSeerCalibrator(cfg.taylorseer_order);
    case 'foca':
      return new FoCaCalibrator();
    case 'dmd':
      return new DMDCalibrator(cfg.dmd_history, cfg.dmd_rank, cfg.dmd_ridge);
  }
}
