// Small dense float64 linear algebra for the DMD calibrator (matrices are at most history x history):
// symmetric Jacobi eigen solver, complex Schur (Hessenberg + shifted QR) eigen solver for a real
// non-symmetric matrix, complex linear solve. No dependencies.

export interface Complex {
  re: number;
  im: number;
}

export const cadd = (a: Complex, b: Complex): Complex => ({ re: a.re + b.re, im: a.im + b.im });
export const csub = (a: Complex, b: Complex): Complex => ({ re: a.re - b.re, im: a.im - b.im });
export const cmul = (a: Complex, b: Complex): Complex => ({ re: a.re * b.re - a.im * b.im, im: a.re * b.im + a.im * b.re });
export const cconj = (a: Complex): Complex => ({ re: a.re, im: -a.im });
export const cabs = (a: Complex): number => Math.hypot(a.re, a.im);
export function cdiv(a: Complex, b: Complex): Complex {
  // Smith's algorithm
  if (Math.abs(b.re) >= Math.abs(b.im)) {
    const r = b.im / b.re;
    const d = b.re + b.im * r;
    return { re: (a.re + a.im * r) / d, im: (a.im - a.re * r) / d };
  }
  const r = b.re / b.im;
  const d = b.re * r + b.im;
  return { re: (a.re * r + a.im) / d, im: (a.im * r - a.re) / d };
}
/** principal branch of z^k (torch complex pow): |z|^k * e^{i k arg z}; 0^0 = 1, 0^k = 0 for k > 0 */
export function cpow(z: Complex, k: number): Complex {
  if (k === 0) return { re: 1, im: 0 };
  const r = cabs(z);
  if (r === 0) return { re: 0, im: 0 };
  const th = Math.atan2(z.im, z.re);
  const rk = Math.pow(r, k);
  return { re: rk * Math.cos(k * th), im: rk * Math.sin(k * th) };
}

/** Cyclic Jacobi eigen decomposition of a symmetric matrix: values descending, vectors as columns. */
export function symEig(Ain: number[][]): { values: number[]; vectors: number[][] } {
  const n = Ain.length;
  const A = Ain.map((r) => [...r]);
  const V: number[][] = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j): number => (i === j ? 1 : 0)));
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    let tot = 0;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        tot += A[i][j] * A[i][j];
        if (i !== j) off += A[i][j] * A[i][j];
      }
    }
    if (off <= 1e-30 * tot || off === 0) break;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = A[p][q];
        if (apq === 0) continue;
        const theta = (A[q][q] - A[p][p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = A[k][p];
          const akq = A[k][q];
          A[k][p] = c * akp - s * akq;
          A[k][q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = A[p][k];
          const aqk = A[q][k];
          A[p][k] = c * apk - s * aqk;
          A[q][k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = V[k][p];
          const vkq = V[k][q];
          V[k][p] = c * vkp - s * vkq;
          V[k][q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => A[b][b] - A[a][a]);
  return {
    values: order.map((i) => A[i][i]),
    vectors: Array.from({ length: n }, (_, r) => order.map((i) => V[r][i])),
  };
}

/**
 * Eigen decomposition of a real square matrix: eigenvalues and unit-norm eigenvectors (columns of
 * `vectors`), like torch.linalg.eig up to eigenvector phase. Returns null if the QR iteration fails.
 */
export function eig(Ain: number[][]): { values: Complex[]; vectors: Complex[][] } | null {
  const n = Ain.length;
  if (n === 0) return { values: [], vectors: [] };
  const H: Complex[][] = Ain.map((r) => r.map((x) => ({ re: x, im: 0 })));
  const Z: Complex[][] = Array.from({ length: n }, (_, i) =>
    Array.from({ length: n }, (_, j) => ({ re: i === j ? 1 : 0, im: 0 })),
  );
  // Householder reduction to upper Hessenberg form (real arithmetic on complex storage).
  for (let k = 0; k < n - 2; k++) {
    let alpha = 0;
    for (let i = k + 1; i < n; i++) alpha += H[i][k].re * H[i][k].re;
    alpha = Math.sqrt(alpha);
    if (alpha === 0) continue;
    if (H[k + 1][k].re > 0) alpha = -alpha;
    const v = new Array<number>(n).fill(0);
    v[k + 1] = H[k + 1][k].re - alpha;
    for (let i = k + 2; i < n; i++) v[i] = H[i][k].re;
    let vn = 0;
    for (let i = k + 1; i < n; i++) vn += v[i] * v[i];
    if (vn === 0) continue;
    // H = P H P, P = I - 2 v v^T / (v^T v)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let i = k + 1; i < n; i++) s += v[i] * H[i][j].re;
      s = (2 * s) / vn;
      for (let i = k + 1; i < n; i++) H[i][j] = { re: H[i][j].re - s * v[i], im: 0 };
    }
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = k + 1; j < n; j++) s += H[i][j].re * v[j];
      s = (2 * s) / vn;
      for (let j = k + 1; j < n; j++) H[i][j] = { re: H[i][j].re - s * v[j], im: 0 };
    }
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = k + 1; j < n; j++) s += Z[i][j].re * v[j];
      s = (2 * s) / vn;
      for (let j = k + 1; j < n; j++) Z[i][j] = { re: Z[i][j].re - s * v[j], im: 0 };
    }
  }
  // Complex shifted QR (Givens) -> upper triangular Schur form, accumulating Z.
  let hi = n - 1;
  let iter = 0;
  let norm = 0;
  for (const r of H) for (const x of r) norm = Math.max(norm, cabs(x));
  const eps = 2.220446049250313e-16;
  while (hi > 0) {
    if (iter > 1000 * n) return null;
    // deflation check
    let l = hi;
    while (l > 0) {
      const s = cabs(H[l - 1][l - 1]) + cabs(H[l][l]);
      if (cabs(H[l][l - 1]) <= eps * (s === 0 ? norm : s)) {
        H[l][l - 1] = { re: 0, im: 0 };
        break;
      }
      l--;
    }
    if (l === hi) {
      hi--;
      iter = 0;
      continue;
    }
    iter++;
    // Wilkinson shift from the trailing 2x2 of the active block [l..hi]
    const a = H[hi - 1][hi - 1];
    const b = H[hi - 1][hi];
    const c = H[hi][hi - 1];
    const d = H[hi][hi];
    let mu: Complex;
    if (iter % 11 === 10) {
      mu = { re: d.re + cabs(c) * 0.75, im: d.im }; // exceptional shift
    } else {
      const tr = cadd(a, d);
      const det = csub(cmul(a, d), cmul(b, c));
      const half = { re: tr.re / 2, im: tr.im / 2 };
      const disc = csub(cmul(half, half), det);
      const sq = cpow(disc, 0.5);
      const e1 = cadd(half, sq);
      const e2 = csub(half, sq);
      mu = cabs(csub(e1, d)) < cabs(csub(e2, d)) ? e1 : e2;
    }
    for (let i = l; i <= hi; i++) H[i][i] = csub(H[i][i], mu);
    const rots: { c: number; s: Complex }[] = [];
    for (let k = l; k < hi; k++) {
      const x = H[k][k];
      const y = H[k + 1][k];
      const r = Math.hypot(cabs(x), cabs(y));
      let cr: number;
      let sr: Complex;
      if (r === 0) {
        cr = 1;
        sr = { re: 0, im: 0 };
      } else if (cabs(x) === 0) {
        cr = 0;
        sr = cdiv(cconj(y), { re: cabs(y), im: 0 });
      } else {
        cr = cabs(x) / r;
        // s = (x/|x|) * conj(y) / r
        const ph = { re: x.re / cabs(x), im: x.im / cabs(x) };
        const t = cmul(ph, cconj(y));
        sr = { re: t.re / r, im: t.im / r };
      }
      rots.push({ c: cr, s: sr });
      // apply G = [[c, s],[-conj(s), c]] to rows k, k+1 (columns k..n-1)
      for (let j = k; j < n; j++) {
        const u = H[k][j];
        const v = H[k + 1][j];
        H[k][j] = cadd({ re: cr * u.re, im: cr * u.im }, cmul(sr, v));
        H[k + 1][j] = csub({ re: cr * v.re, im: cr * v.im }, cmul(cconj(sr), u));
      }
    }
    for (let k = l; k < hi; k++) {
      const { c: cr, s: sr } = rots[k - l];
      // right-multiply by G^H on columns k, k+1 (rows 0..min(k+2,hi))
      for (let i = 0; i <= Math.min(k + 2, hi); i++) {
        const u = H[i][k];
        const v = H[i][k + 1];
        H[i][k] = cadd({ re: cr * u.re, im: cr * u.im }, cmul(cconj(sr), v));
        H[i][k + 1] = csub({ re: cr * v.re, im: cr * v.im }, cmul(sr, u));
      }
      for (let i = 0; i < n; i++) {
        const u = Z[i][k];
        const v = Z[i][k + 1];
        Z[i][k] = cadd({ re: cr * u.re, im: cr * u.im }, cmul(cconj(sr), v));
        Z[i][k + 1] = csub({ re: cr * v.re, im: cr * v.im }, cmul(sr, u));
      }
    }
    for (let i = l; i <= hi; i++) H[i][i] = cadd(H[i][i], mu);
  }
  // Columns above the active block were updated by the row rotations (j from k), rows above l by the
  // column rotations (i from 0): the full H stays Z^H A Z. Eigenvectors of the triangular T:
  const values = H.map((r, i) => r[i]);
  const vectors: Complex[][] = Array.from({ length: n }, () => new Array<Complex>(n));
  const small = eps * Math.max(norm, 1e-300);
  for (let k = 0; k < n; k++) {
    const x: Complex[] = new Array(n).fill(null).map(() => ({ re: 0, im: 0 }));
    x[k] = { re: 1, im: 0 };
    for (let j = k - 1; j >= 0; j--) {
      let s: Complex = { re: 0, im: 0 };
      for (let l2 = j + 1; l2 <= k; l2++) s = cadd(s, cmul(H[j][l2], x[l2]));
      let den = csub(H[j][j], values[k]);
      if (cabs(den) < small) den = { re: small, im: 0 };
      x[j] = cdiv({ re: -s.re, im: -s.im }, den);
    }
    // w = Z x, normalised
    let nrm = 0;
    const w: Complex[] = [];
    for (let i = 0; i < n; i++) {
      let s: Complex = { re: 0, im: 0 };
      for (let j = 0; j <= k; j++) s = cadd(s, cmul(Z[i][j], x[j]));
      w.push(s);
      nrm += s.re * s.re + s.im * s.im;
    }
    nrm = Math.sqrt(nrm);
    for (let i = 0; i < n; i++) vectors[i][k] = { re: w[i].re / nrm, im: w[i].im / nrm };
  }
  return { values, vectors };
}

/** Solve A x = b (complex, Gaussian elimination with partial pivoting); null when singular. */
export function csolve(Ain: Complex[][], bin: Complex[]): Complex[] | null {
  const n = Ain.length;
  const A = Ain.map((r) => r.map((x) => ({ ...x })));
  const b = bin.map((x) => ({ ...x }));
  let scale = 0;
  for (const r of A) for (const x of r) scale = Math.max(scale, cabs(x));
  if (!(scale > 0) || !Number.isFinite(scale)) return null;
  for (let k = 0; k < n; k++) {
    let p = k;
    for (let i = k + 1; i < n; i++) if (cabs(A[i][k]) > cabs(A[p][k])) p = i;
    if (cabs(A[p][k]) <= 1e-14 * scale) return null;
    [A[k], A[p]] = [A[p], A[k]];
    [b[k], b[p]] = [b[p], b[k]];
    for (let i = k + 1; i < n; i++) {
      const f = cdiv(A[i][k], A[k][k]);
      for (let j = k; j < n; j++) A[i][j] = csub(A[i][j], cmul(f, A[k][j]));
      b[i] = csub(b[i], cmul(f, b[k]));
    }
  }
  const x: Complex[] = new Array(n);
  for (let i = n - 1; i >= 0; i--) {
    let s = b[i];
    for (let j = i + 1; j < n; j++) s = csub(s, cmul(A[i][j], x[j]));
    x[i] = cdiv(s, A[i][i]);
  }
  return x;
}
