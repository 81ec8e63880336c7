// Calibrators (reference §1.8): TaylorSeer, FoCa and DMD over Float32Array residuals.
//
// Every forecast is a pure function of the per-name state and is expressed as a weighted sum of
// stored tensors (`ForecastTerms`): TaylorSeer = sum_i elapsed^i/i! * dY_i, FoCa = F_full + c*(dfull+dcurr),
// DMD = sum_j c_j * snapshot_j per batch item. A fused native `weighted_sum` forecast kernel can replace
// `evalTerms` without touching the state logic (the coefficients come from `*Terms()` below).

import type { CalibratorConfig } from './config.ts';
import { cdiv, cmul, cadd, cconj, cpow, csolve, eig, symEig, type Complex } from './linalg.ts';

const f32 = Math.fround;

/** A forecast as a linear combination of tensors, per batch segment (segments split the flat tensor). */
export interface ForecastTerms {
  /** number of equal batch segments (1 for elementwise calibrators) */
  batch: number;
  /** per segment: tensors and coefficients */
  terms: { tensors: Float32Array[]; coefs: number[] }[];
  /** TaylorSeer/FoCa accumulate in float32 like torch; DMD accumulates in float64 then casts */
  precision: 'f32' | 'f64';
}

/** Evaluate forecast terms (CPU reference of the fused forecast kernel). */
export function evalTerms(t: ForecastTerms, numel: number): Float32Array {
  const out = new Float32Array(numel);
  const seg = numel / t.batch;
  for (let b = 0; b < t.batch; b++) {
    const { tensors, coefs } = t.terms[b];
    const off = b * seg;
    if (t.precision === 'f32') {
      for (let j = 0; j < tensors.length; j++) {
        const x = tensors[j];
        const c = f32(coefs[j]);
        if (j === 0 && c === 1) {
          for (let i = off; i < off + seg; i++) out[i] = x[i];
        } else {
          for (let i = off; i < off + seg; i++) out[i] = f32(out[i] + f32(c * x[i]));
        }
      }
    } else {
      const acc = new Float64Array(seg);
      for (let j = 0; j < tensors.length; j++) {
        const x = tensors[j];
        const c = coefs[j];
        for (let i = 0; i < seg; i++) acc[i] += c * x[off + i];
      }
      for (let i = 0; i < seg; i++) out[off + i] = acc[i];
    }
  }
  return out;
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
 * variant 'dmd' reproduces DMDState._update_taylor (the DMD warm-up fallback): it adds a `window > 0`
 * guard and - QUIRK - differences against `dY_prev` BEFORE shifting the ladder, i.e. against the ladder of
 * the compute step before the previous one, while still dividing by the last gap only.
 */
export function taylorUpdate(s: TaylorState, y: Float32Array, variant: 'taylorseer' | 'dmd' = 'taylorseer'): void {
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
      const a = cur[i]!;
      const d = new Float32Array(a.length);
      for (let k = 0; k < a.length; k++) d[k] = f32(f32(a[k] - p[k]) / window);
      cur[i + 1] = d;
    } else {
      break;
    }
  }
  s.dYPrev = s.dYCurrent;
  s.dYCurrent = cur;
  s.lastNonApproximatedStep = s.currentStep;
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

/**
 * FoCa forecast: Heun/trapezoid `F_full + (e/2)(dfull + dcurr)` for elapsed e <= 3, damped
 * `w(F_full + 1.5(dfull+dcurr)) + (1-w)F_full` with w = 3/e beyond. QUIRK (Cache-DiT): dfull and dcurr
 * are NOT divided by the step gap between anchors. Single anchor -> copy of the anchor.
 */
export function focaTerms(s: FocaState): ForecastTerms {
  if (s.Ffull === null) throw new Error('FoCa: approximate() before any update()');
  if (s.Fkm1 === null || s.FfullPrev === null) {
    return { batch: 1, terms: [{ tensors: [s.Ffull], coefs: [1] }], precision: 'f32' };
  }
  const e = s.currentStep - s.lastFullStep;
  const c = e <= 3 ? e / 2 : (3 / e) * 1.5;
  // F_full + c*(F_full - F_full_prev) + c*(F_k - F_km1)
  return {
    batch: 1,
    terms: [{ tensors: [s.Ffull, s.Ffull, s.FfullPrev, s.Fk!, s.Fkm1], coefs: [1, c, -c, c, -c] }],
    precision: 'f32',
  };
}

/** FoCa approximate: evaluates and feeds the prediction back (F_km1 <- F_k, F_k <- F), recursive. */
export function focaApproximate(s: FocaState): Float32Array {
  const full = s.Ffull;
  if (full === null) throw new Error('FoCa: approximate() before any update()');
  if (s.Fkm1 === null || s.FfullPrev === null) return full.slice();
  const e = s.currentStep - s.lastFullStep;
  const F = new Float32Array(full.length);
  const prev = s.FfullPrev;
  const fk = s.Fk!;
  const fkm1 = s.Fkm1;
  if (e <= 3) {
    const h = f32(e / 2);
    for (let i = 0; i < F.length; i++) {
      const df = f32(full[i] - prev[i]);
      const dc = f32(fk[i] - fkm1[i]);
      F[i] = f32(full[i] + f32(h * f32(df + dc)));
    }
  } else {
    const w = f32(3 / e);
    for (let i = 0; i < F.length; i++) {
      const df = f32(full[i] - prev[i]);
      const dc = f32(fk[i] - fkm1[i]);
      const a = f32(full[i] + f32(1.5 * f32(df + dc)));
      F[i] = f32(f32(w * a) + f32(f32(1 - w) * full[i]));
    }
  }
  s.Fkm1 = s.Fk;
  s.Fk = F;
  return F;
}

// ---------------------------------------------------------------------------------------------
// DMD (Dynamic Mode Decomposition / Prony)

export interface DmdState {
  history: number;
  rank: number;
  ridge: number;
  currentStep: number;
  lastNonApproximatedStep: number;
  snapshots: { step: number; y: Float32Array }[];
  batch: number;
  taylor: TaylorState;
  fitKey: string | null;
  fit: DmdFit | null;
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
  };
}

function resetDmd(s: DmdState): void {
  s.currentStep = -1;
  s.lastNonApproximatedStep = -1;
  s.snapshots = [];
  s.fit = null;
  s.fitKey = null;
  resetTaylor(s.taylor);
}

export function dmdUpdate(s: DmdState, y: Float32Array, batch: number): void {
  if (s.snapshots.length && s.snapshots[s.snapshots.length - 1].y.length !== y.length) resetDmd(s);
  s.batch = batch;
  s.taylor.currentStep = s.currentStep;
  s.taylor.lastNonApproximatedStep = s.lastNonApproximatedStep;
  taylorUpdate(s.taylor, y.slice(), 'dmd');
  s.snapshots.push({ step: s.currentStep, y: y.slice() });
  if (s.snapshots.length > s.history) s.snapshots.splice(0, s.snapshots.length - s.history);
  s.lastNonApproximatedStep = s.currentStep;
  s.fitKey = null;
}

/** Longest uniformly spaced suffix of the snapshot history (OLDEST..NEWEST) and its spacing. */
export function dmdUniformTail(s: DmdState): { tail: Float32Array[]; spacing: number } {
  const n = s.snapshots.length;
  if (n < 2) return { tail: [], spacing: 0 };
  const steps = s.snapshots.map((x) => x.step);
  const spacing = steps[n - 1] - steps[n - 2];
  if (spacing <= 0) return { tail: [], spacing: 0 };
  let j = n - 2;
  while (j - 1 >= 0 && steps[j] - steps[j - 1] === spacing) j--;
  return { tail: s.snapshots.slice(j).map((x) => x.y), spacing };
}

/** Fit one batch item on rows [off, off+d) of the tail snapshots (float64, Gram-matrix economy SVD). */
export function dmdFitItem(tail: Float32Array[], off: number, d: number, rank: number, ridge: number): DmdItemFit | null {
  const n = tail.length;
  const m = n - 1;
  // Gram matrix of all snapshots: G[i][j] = <Y_i, Y_j>
  const G: number[][] = Array.from({ length: n }, () => new Array<number>(n).fill(0));
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      const a = tail[i];
      const b = tail[j];
      let s = 0;
      for (let k = off; k < off + d; k++) s += a[k] * b[k];
      G[i][j] = s;
      G[j][i] = s;
    }
  }
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

export function dmdApproximate(s: DmdState): Float32Array {
  const { tail, spacing } = dmdUniformTail(s);
  if (tail.length >= 4) {
    const last = s.snapshots[s.snapshots.length - 1];
    const k = (s.currentStep - last.step) / spacing;
    const key = `${last.step}|${tail.length}|${spacing}`;
    if (s.fitKey !== key) {
      const numel = last.y.length;
      const d = numel / s.batch;
      const items: (DmdItemFit | null)[] = [];
      for (let b = 0; b < s.batch; b++) items.push(dmdFitItem(tail, b * d, d, s.rank, s.ridge));
      s.fit = { items, tail };
      s.fitKey = key;
    }
    const fit = s.fit!;
    if (fit.items.every((x) => x !== null)) {
      const terms = fit.items.map((it) => ({ tensors: fit.tail.slice(1), coefs: dmdCoefs(it!, k) }));
      const out = evalTerms({ batch: s.batch, terms, precision: 'f64' }, last.y.length);
      let finite = true;
      for (let i = 0; i < out.length; i++) if (!Number.isFinite(out[i])) { finite = false; break; }
      if (finite) return out;
    }
    return last.y.slice(); // degenerate / non-finite: reuse newest snapshot
  }
  s.taylor.currentStep = s.currentStep;
  return evalTerms(taylorTerms(s.taylor), s.snapshots.length ? s.snapshots[s.snapshots.length - 1].y.length : 0);
}

// ---------------------------------------------------------------------------------------------
// Calibrator objects (states keyed by tensor-stream name, created lazily on first update)

export interface Calibrator {
  readonly type: 'taylorseer' | 'foca' | 'dmd';
  /** reset every state (the name -> state mapping is kept), current steps back to -1 */
  resetCache(): void;
  /** advance every existing state's step counter */
  markStepBegin(): void;
  update(y: Float32Array, name: string, batch?: number): void;
  approximate(name: string): Float32Array;
  has(name: string): boolean;
}

export class TaylorSeerCalibrator implements Calibrator {
  readonly type = 'taylorseer';
  readonly states = new Map<string, TaylorState>();
  constructor(readonly nDerivatives = 1) {}
  resetCache(): void {
    for (const s of this.states.values()) resetTaylor(s);
  }
  markStepBegin(): void {
    for (const s of this.states.values()) s.currentStep += 1;
  }
  update(y: Float32Array, name: string): void {
    let s = this.states.get(name);
    if (!s) this.states.set(name, (s = newTaylorState(this.nDerivatives)));
    taylorUpdate(s, y.slice());
  }
  approximate(name: string): Float32Array {
    const s = this.states.get(name);
    if (!s) throw new Error(`TaylorSeer: state '${name}' not found`);
    const n = s.dYCurrent[0]?.length ?? 0;
    return evalTerms(taylorTerms(s), n);
  }
  /** the forecast as terms (for the native `forecast` kernel; evaluates to `approximate(name)`) */
  terms(name: string): ForecastTerms {
    const s = this.states.get(name);
    if (!s) throw new Error(`TaylorSeer: state '${name}' not found`);
    return taylorTerms(s);
  }
  has(name: string): boolean {
    return this.states.has(name);
  }
}

export class FoCaCalibrator implements Calibrator {
  readonly type = 'foca';
  readonly states = new Map<string, FocaState>();
  resetCache(): void {
    for (const [k] of this.states) this.states.set(k, newFocaState());
  }
  markStepBegin(): void {
    for (const s of this.states.values()) s.currentStep += 1;
  }
  update(y: Float32Array, name: string): void {
    let s = this.states.get(name);
    if (!s) this.states.set(name, (s = newFocaState()));
    focaUpdate(s, y.slice());
  }
  approximate(name: string): Float32Array {
    const s = this.states.get(name);
    if (!s) throw new Error(`FoCa: state '${name}' not found`);
    return focaApproximate(s);
  }
  has(name: string): boolean {
    return this.states.has(name);
  }
}

export class DMDCalibrator implements Calibrator {
  readonly type = 'dmd';
  readonly states = new Map<string, DmdState>();
  constructor(
    readonly history = 6,
    readonly rank = 0,
    readonly ridge = 1e-8,
    readonly nDerivatives = 1,
  ) {}
  resetCache(): void {
    for (const s of this.states.values()) resetDmd(s);
  }
  markStepBegin(): void {
    for (const s of this.states.values()) s.currentStep += 1;
  }
  update(y: Float32Array, name: string, batch = 1): void {
    let s = this.states.get(name);
    if (!s) this.states.set(name, (s = newDmdState(this.history, this.rank, this.ridge, this.nDerivatives)));
    if (!Number.isInteger(batch) || batch < 1 || y.length % batch !== 0) {
      throw new Error(`DMD: batch ${batch} does not divide the tensor size ${y.length}`);
    }
    dmdUpdate(s, y, batch);
  }
  approximate(name: string): Float32Array {
    const s = this.states.get(name);
    if (!s) throw new Error(`DMD: state '${name}' not found`);
    return dmdApproximate(s);
  }
  has(name: string): boolean {
    return this.states.has(name);
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
