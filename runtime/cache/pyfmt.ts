// Python-compatible number formatting and numpy-compatible statistics used by the run tag
// (`strify`) and `summary()`. Cache-DiT builds its tags with f-strings, so `R{0.24}` prints Python's
// float repr and `_P{round(ratio * 100, 2)}` prints a rounded Python float.

/** Python `repr(float)`: shortest round-trip digits, exponent form when exp < -4 or exp >= 16. */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  const [mant, expStr] = Math.abs(x).toExponential().split('e');
  const exp = Number(expStr);
  const digits = mant.replace('.', '');
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp) < 10 ? `0${Math.abs(exp)}` : `${Math.abs(exp)}`;
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${e}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  if (digits.length <= exp + 1) return `${sign}${digits}${'0'.repeat(exp + 1 - digits.length)}.0`;
  return `${sign}${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`;
}

/** Python `str(int)` / `str(float)` depending on how the value was given (integers print without `.0`). */
export function pyNumber(x: number, isInt: boolean): string {
  return isInt && Number.isInteger(x) ? String(x) : pyFloatRepr(x);
}

/**
 * Python `round(x, ndigits)` for floats: correctly rounded on the exact binary value, ties to even.
 */
export function pyRound(x: number, ndigits: number): number {
  if (!Number.isFinite(x)) return x;
  const neg = x < 0;
  // Exact decimal expansion (doubles of moderate magnitude have < 1100 fractional digits; 100 is
  // plenty for the ratios and thresholds formatted here, ties are detected on the exact string).
  const s = Math.abs(x).toFixed(100);
  const [ip, fp] = s.split('.');
  const keep = fp.slice(0, ndigits);
  const rest = fp.slice(ndigits);
  let digits = (ip + keep).split('').map(Number);
  const first = Number(rest[0] ?? '0');
  const tail = rest.slice(1);
  let up = false;
  if (first > 5) up = true;
  else if (first === 5) {
    if (/[1-9]/.test(tail)) up = true;
    else up = digits[digits.length - 1] % 2 === 1; // exact tie: half to even
  }
  if (up) {
    let i = digits.length - 1;
    while (i >= 0) {
      if (digits[i] === 9) {
        digits[i] = 0;
        i--;
      } else {
        digits[i]++;
        break;
      }
    }
    if (i < 0) digits = [1, ...digits];
  }
  const str = digits.join('');
  const intPart = str.slice(0, str.length - ndigits) || '0';
  const frac = str.slice(str.length - ndigits);
  const v = Number(ndigits > 0 ? `${intPart}.${frac}` : intPart);
  return neg ? -v : v;
}

/** numpy.percentile(values, q) with the default 'linear' method (numpy's `_lerp`). */
export function npPercentile(values: readonly number[], q: number): number {
  if (values.length === 0) throw new Error('npPercentile: empty input');
  const v = [...values].sort((a, b) => a - b);
  const n = v.length;
  const pos = (q / 100) * (n - 1); // numpy: virtual index = quantile * (n - 1)
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, n - 1);
  const t = pos - lo;
  const a = v[lo];
  const b = v[hi];
  const diff = b - a;
  // numpy: lerp = a + diff * t; where t >= 0.5 use b - diff * (1 - t)
  return t >= 0.5 ? b - diff * (1 - t) : a + diff * t;
}
