// The native FP8 all-to-all kernels (templates/cpu/fp8.cpp.hbs: fp8_qkv_permute_quant, ..._dequant,
// fp8_per_token_quant, ..._dequant) behind ulysses.ts's Fp8Kernels interface; bit-exact with fp8.ts.
// Byte payloads are allocated in whole floats (the kernel ABI passes float buffers).
import type { Fp8Kernels } from './ulysses.ts';

interface KernelRunner {
  kernels(): string[];
  runKernel(name: string, t: (Float32Array | null)[], i: number[], f: number[]): void;
}

const NAMES = ['fp8_qkv_permute_quant', 'fp8_qkv_permute_dequant', 'fp8_per_token_quant', 'fp8_per_token_dequant'];

function bytes(n: number): { u8: Uint8Array; f32: Float32Array } {
  const f32 = new Float32Array(Math.ceil(n / 4));
  return { u8: new Uint8Array(f32.buffer, 0, n), f32 };
}

/** float view of a byte payload (copied into whole floats when misaligned or ragged) */
function asFloats(q: Uint8Array): Float32Array {
  if (q.byteOffset % 4 === 0 && q.byteLength % 4 === 0) return new Float32Array(q.buffer, q.byteOffset, q.byteLength / 4);
  const b = bytes(q.byteLength);
  b.u8.set(q);
  return b.f32;
}

/** Native FP8 kernels, or null when the addon lacks them (older build). */
export function nativeFp8Kernels(native: KernelRunner): Fp8Kernels | null {
  const have = new Set(native.kernels());
  if (!NAMES.every((n) => have.has(n))) return null;
  return {
    qkvPermuteQuant(x, B, S, P, N, D, H) {
      const out = bytes(P * S * B * N * (D + 4));
      native.runKernel('fp8_qkv_permute_quant', [x, out.f32], [B, S, P, N, D, H, H * D], []);
      return out.u8;
    },
    qkvPermuteDequant(q, S, B, N, D) {
      const out = new Float32Array(B * S * N * D);
      native.runKernel('fp8_qkv_permute_dequant', [asFloats(q), out], [S, B, N, D], []);
      return out;
    },
    perTokenQuant(x, rows, H) {
      const out = bytes(rows * (H + 2));
      native.runKernel('fp8_per_token_quant', [x, out.f32], [rows, H], []);
      return out.u8;
    },
    perTokenDequant(q, rows, H) {
      const out = new Float32Array(rows * H);
      native.runKernel('fp8_per_token_dequant', [asFloats(q), out], [rows, H], []);
      return out;
    },
  };
}
