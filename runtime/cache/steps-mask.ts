// SCM, Steps Computation Mask: Cache-DiT `caching/cache_interface.py::steps_mask` / `_steps_mask`.
// 1 = the step must compute all blocks, 0 = the step may use the cache (dynamic: still through the
// DBCache diff test; static: always cached). Reproduces every golden mask of the reference table.

export type MaskPolicyName = 'slow' | 'medium' | 'fast' | 'ultra';
export type MaskPolicy = MaskPolicyName | 's' | 'm' | 'f' | 'u';

const ALIASES: Record<string, MaskPolicyName> = {
  slow: 'slow', s: 'slow', medium: 'medium', m: 'medium', fast: 'fast', f: 'fast', ultra: 'ultra', u: 'ultra',
};

/** Normalise a policy name or CLI alias (`s|m|f|u`); throws naming the option for anything else. */
export function normalizeMaskPolicy(policy: string): MaskPolicyName {
  const p = ALIASES[String(policy).trim().toLowerCase()];
  if (!p) {
    throw new Error(
      `steps_computation_mask: unknown mask policy '${policy}' (expected slow|medium|fast|ultra or s|m|f|u)`,
    );
  }
  return p;
}

export interface StepsMaskOptions {
  /** predefined policy (default 'medium', as Cache-DiT); ignored when both bins are given */
  policy?: MaskPolicy;
  /** explicit run lengths of computed steps (alternating with cacheBins) */
  computeBins?: number[];
  /** explicit run lengths of cacheable steps */
  cacheBins?: number[];
  totalSteps?: number;
}

/** `_steps_mask`: alternate `[1]*compute_bins[i]`, `[0]*cache_bins[i]` until totalSteps, truncate. */
function binsToMask(computeBins: number[], cacheBins: number[], totalSteps?: number): number[] {
  for (const [name, bins] of [['computeBins', computeBins], ['cacheBins', cacheBins]] as const) {
    for (const b of bins) {
      if (!Number.isInteger(b) || b < 0) throw new Error(`stepsMask: ${name} must hold integers >= 0, got ${b}`);
    }
  }
  const sum = computeBins.reduce((a, b) => a + b, 0) + cacheBins.reduce((a, b) => a + b, 0);
  let total: number;
  if (totalSteps !== undefined) {
    if (sum < totalSteps) {
      throw new Error(
        `stepsMask: the sum of computeBins and cacheBins (${sum}) must be at least totalSteps (${totalSteps})`,
      );
    }
    total = totalSteps;
  } else {
    total = sum;
  }
  const compute = [...computeBins];
  const cache = [...cacheBins];
  const mask: number[] = [];
  let step = 0;
  while (step < total) {
    if (compute.length) {
      const c = compute.shift()!;
      for (let i = 0; i < c; i++) mask.push(1);
      step += c;
    }
    if (cache.length) {
      const c = cache.shift()!;
      for (let i = 0; i < c; i++) mask.push(0);
      step += c;
    }
    if (step >= total) break;
    if (!compute.length && !cache.length) break; // zero-length bins only: cannot progress
  }
  return mask.slice(0, total);
}

type Policy = [number[], number[]];

function sumPolicy(p: Policy): number {
  return p[0].reduce((a, b) => a + b, 0) + p[1].reduce((a, b) => a + b, 0);
}

/** `_truncate_policy`: alternately decrement the last cache bin and the last compute bin. */
function truncatePolicy(p: Policy, target: number): Policy {
  const [compute, cache] = p;
  while (sumPolicy(p) > target) {
    if (cache.length) {
      cache[cache.length - 1] -= 1;
      if (cache[cache.length - 1] === 0) cache.pop();
    }
    if (sumPolicy(p) <= target) break;
    if (compute.length) {
      compute[compute.length - 1] -= 1;
      if (compute[compute.length - 1] === 0) compute.pop();
    }
    if (sumPolicy(p) <= target) break;
  }
  return [compute, cache];
}

function predefined(): Record<MaskPolicyName, Policy> {
  // defined for 28 steps
  return {
    slow: [[8, 3, 3, 2, 1, 1], [1, 2, 2, 2, 3]],
    medium: [[6, 2, 2, 2, 2, 1], [1, 3, 3, 3, 3]],
    fast: [[6, 1, 1, 1, 1, 1], [1, 3, 4, 5, 4]],
    ultra: [[4, 1, 1, 1, 1], [2, 5, 6, 7]],
  };
}

/**
 * Cache-DiT `steps_mask(compute_bins, cache_bins, total_steps, mask_policy)`.
 * Explicit bins win (and are NOT forced to end with 1, as in Cache-DiT); predefined policies are
 * scaled to `totalSteps` and the last step is forced to 1.
 */
export function stepsMask(opts: StepsMaskOptions): number[] {
  const { computeBins, cacheBins, totalSteps } = opts;
  if (totalSteps !== undefined && (!Number.isInteger(totalSteps) || totalSteps < 1)) {
    throw new Error(`stepsMask: totalSteps must be a positive integer, got ${totalSteps}`);
  }
  if (computeBins !== undefined && cacheBins !== undefined) {
    return binsToMask(computeBins, cacheBins, totalSteps);
  }
  if (totalSteps === undefined) {
    throw new Error('stepsMask: totalSteps must be provided when using a predefined mask policy');
  }
  const name = normalizeMaskPolicy(opts.policy ?? 'medium');
  const T = totalSteps;
  let policies = predefined();
  if (T > 28) {
    // Grow bins in place (relative ratio kept), alternating compute/cache, last compute bin +1/round.
    for (const policy of Object.values(policies)) {
      const minLen = Math.min(policy[0].length, policy[1].length);
      const compute0 = [...policy[0]];
      const cache0 = [...policy[1]];
      while (sumPolicy(policy) < T) {
        for (let i = 0; i < minLen; i++) {
          policy[0][i] += Math.max(Math.trunc(compute0[i] * ((T / 28) * 0.5)), 1);
          if (sumPolicy(policy) >= T) break;
          policy[1][i] += Math.max(Math.trunc(cache0[i] * ((T / 28) * 0.5)), 1);
          if (sumPolicy(policy) >= T) break;
        }
        if (sumPolicy(policy) >= T) break;
        policy[0][policy[0].length - 1] += 1;
        if (sumPolicy(policy) >= T) break;
      }
    }
    for (const k of Object.keys(policies) as MaskPolicyName[]) policies[k] = truncatePolicy(policies[k], T);
  } else if (T < 28 && T >= 16) {
    for (const k of Object.keys(policies) as MaskPolicyName[]) policies[k] = truncatePolicy(policies[k], T);
  } else if (T < 16 && T >= 8) {
    if (T > 8) {
      policies = {
        slow: [[4, 2, 2, 2, 1], [1, 1, 1, 1]],
        medium: [[4, 2, 1, 1, 1], [1, 1, 2, 2]],
        fast: [[3, 1, 1, 1, 1], [1, 2, 2, 3]],
        ultra: [[2, 1, 1, 1, 1], [1, 2, 3, 3]],
      };
      if (T === 9) {
        // Z-Image-Turbo
        policies = {
          slow: [[5, 2, 1], [1]],
          medium: [[5, 1, 1], [1, 1]],
          fast: [[4, 1, 1], [1, 2]],
          ultra: [[3, 1, 1], [2, 2]],
        };
      }
    } else {
      policies = {
        slow: [[5, 1, 1], [1]],
        medium: [[4, 1, 1], [1, 1]],
        fast: [[3, 1, 1], [1, 2]],
        ultra: [[2, 1, 1], [2, 2]],
      };
    }
    for (const k of Object.keys(policies) as MaskPolicyName[]) policies[k] = truncatePolicy(policies[k], T);
  } else if (T < 8) {
    if (T !== 4 && T !== 6) {
      throw new Error(
        `stepsMask: only totalSteps=4 or 6 are supported for predefined masks below 8 steps, got totalSteps=${T}`,
      );
    }
    const c: Policy = T === 4 ? [[2, 1], [1]] : [[3, 1], [2]];
    policies = {
      slow: [[...c[0]], [...c[1]]], medium: [[...c[0]], [...c[1]]],
      fast: [[...c[0]], [...c[1]]], ultra: [[...c[0]], [...c[1]]],
    };
  }
  const [compute, cache] = policies[name];
  const mask = binsToMask(compute, cache, T);
  mask[mask.length - 1] = 1; // force the last step to compute
  return mask;
}

/** Number of leading 1s of a mask (Cache-DiT truncates the warmup to it). */
export function leadingComputeSteps(mask: readonly number[]): number {
  let n = 0;
  for (const m of mask) {
    if (m === 1) n++;
    else break;
  }
  return n;
}

/** Validate a user mask: 0/1 entries and (when known) length == numInferenceSteps. */
export function validateStepsMask(mask: readonly number[], numInferenceSteps?: number | null): void {
  if (!Array.isArray(mask) || mask.length === 0) {
    throw new Error('steps_computation_mask: must be a non-empty list of 0/1');
  }
  mask.forEach((m, i) => {
    if (m !== 0 && m !== 1) throw new Error(`steps_computation_mask: entry ${i} is ${m}, expected 0 or 1`);
  });
  if (numInferenceSteps != null && mask.length !== numInferenceSteps) {
    throw new Error(
      `steps_computation_mask: length ${mask.length} does not match num_inference_steps ${numInferenceSteps}`,
    );
  }
}
