#include "kernel_sigs.h"

#include <cstring>
#include <sstream>
#include <vector>

namespace ditforge {

namespace {

struct Sig {
  const char* name;
  int nt, ni, nf;
  const char* slots;     // comma-free list: one char per tensor slot, 'r' required, 'o' optional
  const char* tnames[8];
};

const Sig kSigs[] = {
    {"linear", 6, 6, 0, "rrorol", {"x", "W", "bias", "y", "gate", "residual"}},
    {"layer_norm", 4, 2, 1, "roor", {"x", "w", "b", "y"}},
    {"ln_modulate", 4, 5, 1, "rrrr", {"x", "shift", "scale", "y"}},
    {"rms_norm", 3, 2, 1, "ror", {"x", "w", "y"}},
    {"rms_sumsq", 2, 2, 0, "rr", {"x", "ss"}},
    {"rms_norm_apply", 4, 3, 1, "rror", {"x", "ss", "w", "y"}},
    {"gate_residual", 4, 4, 0, "rrrr", {"r", "g", "x", "y"}},
    {"rope", 4, 7, 0, "rrrr", {"x", "cos", "sin", "y"}},
    {"qk_norm_rope", 5, 7, 1, "rroor", {"x", "w", "cos", "sin", "y"}},
    {"attention", 5, 9, 1, "rrror", {"q", "k", "v", "keyMask", "o"}},
    {"attention_lse", 6, 9, 1, "rrrorr", {"q", "k", "v", "keyMask", "o", "lse"}},
    {"attn_merge", 6, 7, 0, "rrrrrr", {"prevOut", "prevLse", "out", "lse", "yOut", "yLse"}},
    {"attention_bias", 6, 11, 1, "rrroor", {"q", "k", "v", "bias", "mask", "o"}},
    {"t5_position_bias", 2, 6, 0, "rr", {"table", "bias"}},
    {"timestep_embedding", 2, 3, 3, "rr", {"t", "y"}},
    {"rope_table", 3, 6, 1, "rrr", {"ids", "cos", "sin"}},
    {"embedding", 3, 3, 0, "rrr", {"ids", "table", "y"}},
    {"masked_mean", 3, 3, 0, "rrr", {"x", "mask", "y"}},
    {"copy3d", 2, 7, 0, "rr", {"x", "y"}},
    {"transpose", 2, 3, 0, "rr", {"x", "y"}},
    {"conv2d", 4, 10, 0, "rror", {"x", "W", "bias", "y"}},
    {"conv3d", 4, 10, 0, "rror", {"x", "W", "bias", "y"}},
    {"group_norm", 4, 5, 1, "roor", {"x", "w", "b", "y"}},
    {"upsample_nearest2x", 2, 3, 0, "rr", {"x", "y"}},
    {"fp8_qkv_permute_quant", 2, 7, 0, "rr", {"x", "y"}},
    {"fp8_qkv_permute_dequant", 2, 4, 0, "rr", {"q", "y"}},
    {"fp8_per_token_quant", 2, 2, 0, "rr", {"x", "y"}},
    {"fp8_per_token_dequant", 2, 2, 0, "rr", {"q", "y"}},
    {"cache_probe", 5, 1, 0, "ooroo", {"prev", "x0", "h", "cur", "sums"}},
    {"residual_store", 3, 1, 0, "rrr", {"a", "b", "y"}},
    {"residual_apply", 3, 1, 0, "rrr", {"x", "r", "y"}},
    {"forecast", 7, 2, 6, "roooooo", {"y", "s0", "s1", "s2", "s3", "s4", "s5"}},
    {"taylor_diff", 3, 1, 1, "rrr", {"a", "b", "y"}},
    {"foca_forecast", 5, 2, 1, "rrrrr", {"full", "prev", "fk", "fkm1", "y"}},
    {"dmd_gram", 8, 4, 0, "rroooooo", {"g", "x0", "x1", "x2", "x3", "x4", "x5", "x6"}},
    {"forecast_f64", 8, 4, 0, "rroooooo", {"y", "coefs", "acc", "s0", "s1", "s2", "s3", "s4"}},
};

const Sig* find_sig(const std::string& name) {
  for (auto& s : kSigs)
    if (name == s.name) return &s;
  return nullptr;
}

// rows-with-stride extent: the last row starts at (rows-1)*stride and holds `width` floats
int64_t strided(int64_t rows, int64_t stride, int64_t width) { return rows <= 0 ? 0 : (rows - 1) * stride + width; }

}  // namespace

std::string validate_kernel_args(const std::string& name, int ew_arity, int nt, const TensorArg* t, int ni,
                                 const int64_t* iv, int nf, std::vector<int64_t>* needs) {
  std::ostringstream err;
  if (nt > 8) return "at most 8 tensors, got " + std::to_string(nt);
  if (ni > 16) return "at most 16 ints, got " + std::to_string(ni);
  if (nf > 8) return "at most 8 floats, got " + std::to_string(nf);
  int64_t I[16] = {0};
  for (int k = 0; k < ni; ++k) I[k] = iv[k];
  TensorArg T[8];
  for (int k = 0; k < nt; ++k) T[k] = t[k];

  std::vector<const char*> names;
  std::vector<int64_t> need(8, 0);
  int expect_nt = 0, expect_ni = 0, expect_nf = 0;
  std::string req;

  if (ew_arity >= 0) {
    expect_nt = ew_arity + 1;
    expect_ni = 1;
    expect_nf = 8;
    static const char* in_names[] = {"in0", "in1", "in2", "in3", "in4", "in5", "in6", "in7"};
    for (int k = 0; k < ew_arity; ++k) names.push_back(in_names[k]);
    names.push_back("y");
    req.assign(expect_nt, 'r');
    if (I[0] < 0) return "n must be >= 0, got " + std::to_string(I[0]);
    for (int k = 0; k < expect_nt; ++k) need[k] = I[0];
  } else {
    const Sig* s = find_sig(name);
    if (!s) return "";  // not a catalogue kernel: nothing more to check
    expect_nt = s->nt;
    expect_ni = s->ni;
    expect_nf = s->nf;
    req = s->slots;
    for (int k = 0; k < s->nt; ++k) names.push_back(s->tnames[k]);
  }
  if (nt > expect_nt) { err << "takes at most " << expect_nt << " tensors, got " << nt; return err.str(); }
  if (ni > expect_ni) { err << "takes at most " << expect_ni << " ints, got " << ni; return err.str(); }
  if (nf > expect_nf) { err << "takes at most " << expect_nf << " floats, got " << nf; return err.str(); }
  for (int k = 0; k < expect_ni; ++k)
    if (I[k] < 0) { err << "int parameter " << k << " must be >= 0, got " << I[k]; return err.str(); }

  auto present = [&](int k) { return k < nt && T[k].present; };
  if (ew_arity < 0) {
    // kernel-specific sizes
    auto M = I[0];
    auto group_rows = [](int64_t rows, int64_t S) { return S > 0 ? (rows + S - 1) / S : 0; };
    if (name == "linear") {
      int64_t N = I[1], K = I[2], ep = I[3], S = I[4], gs = I[5];
      if (ep > 3) return "epilogue must be 0..3, got " + std::to_string(ep);
      need[0] = M * K; need[1] = N * K; need[2] = N; need[3] = M * N; need[5] = M * N;
      // epilogue 3: y = residual + gate[m/S] * acc; a null gate counts as 1, a null residual as 0
      if (ep == 3 && present(4)) {
        if (S <= 0 && M > 0) return "epilogue 3 with a gate needs S > 0";
        need[4] = strided(group_rows(M, S), gs, N);
      }
    } else if (name == "layer_norm" || name == "rms_norm") {
      int64_t C = I[1];
      need[0] = M * C;
      if (name == "layer_norm") { need[1] = C; need[2] = C; need[3] = M * C; }
      else { need[1] = C; need[2] = M * C; }
    } else if (name == "rms_sumsq" || name == "rms_norm_apply") {
      // distributed RMSNorm: ss holds M float64 (2 floats each)
      int64_t C = I[1];
      need[0] = M * C;
      need[1] = 2 * M;
      if (name == "rms_norm_apply") {
        if (I[2] < C || (I[2] == 0 && M > 0)) return "Cfull (channels over all ranks) must be >= C and >= 1, got Cfull " + std::to_string(I[2]) + ", C " + std::to_string(C);
        need[2] = C;
        need[3] = M * C;
      }
    } else if (name == "ln_modulate" || name == "gate_residual") {
      int64_t C = I[1], S = I[2];
      if (S <= 0 && M > 0) return "S (rows per batch) must be > 0";
      int64_t G = group_rows(M, S);
      if (name == "ln_modulate") {
        need[0] = M * C; need[1] = strided(G, I[3], C); need[2] = strided(G, I[4], C); need[3] = M * C;
      } else {
        need[0] = M * C; need[1] = strided(G, I[3], C); need[2] = M * C; need[3] = M * C;
      }
    } else if (name == "rope" || name == "qk_norm_rope") {
      int64_t B = I[0], S = I[1], H = I[2], D = I[3], xs = I[4], ys = I[5];
      if (D % 2) return "D must be even, got " + std::to_string(D);
      if (xs < H * D || ys < H * D) return "xStride and yStride must be >= H*D";
      if (I[6] != 0 && I[6] != 1) return "half must be 0 (interleaved pairs) or 1 (rotate-half), got " + std::to_string(I[6]);
      int64_t rows = B * S;
      if (name == "rope") {
        need[0] = strided(rows, xs, H * D); need[1] = S * D; need[2] = S * D; need[3] = strided(rows, ys, H * D);
      } else {
        if (present(2) != present(3)) return "cos and sin must be both given or both null";
        need[0] = strided(rows, xs, H * D); need[1] = D; need[2] = S * D; need[3] = S * D;
        need[4] = strided(rows, ys, H * D);
      }
    } else if (name == "attention" || name == "attention_lse") {
      int64_t B = I[0], Sq = I[1], Sk = I[2], H = I[3], D = I[4];
      if (I[5] < H * D || I[6] < H * D || I[7] < H * D || I[8] < H * D) return "strides must be >= H*D";
      need[0] = strided(B * Sq, I[5], H * D);
      need[1] = strided(B * Sk, I[6], H * D);
      need[2] = strided(B * Sk, I[7], H * D);
      need[3] = B * Sk;
      need[4] = strided(B * Sq, I[8], H * D);
      need[5] = B * Sq * H;  // attention_lse: lse [B, Sq, H]
    } else if (name == "attention_bias") {
      int64_t B = I[0], Sq = I[1], Sk = I[2], H = I[3], D = I[4];
      // i[10]: key/value heads (grouped-query attention; 0 = H), each serving H / kvHeads query heads
      int64_t Hk = I[10] == 0 ? H : I[10];
      if (H % Hk) return "kvHeads must divide H (H=" + std::to_string(H) + ", kvHeads=" + std::to_string(Hk) + ")";
      if (I[5] < H * D || I[8] < H * D) return "strides must be >= H*D";
      if (I[6] < Hk * D || I[7] < Hk * D) return "key / value strides must be >= kvHeads*D";
      if (I[9] != 0 && I[9] != 1) return "causal must be 0 or 1, got " + std::to_string(I[9]);
      need[0] = strided(B * Sq, I[5], H * D);
      need[1] = strided(B * Sk, I[6], Hk * D);
      need[2] = strided(B * Sk, I[7], Hk * D);
      need[3] = H * Sq * Sk;
      need[4] = B * Sk;
      need[5] = strided(B * Sq, I[8], H * D);
    } else if (name == "t5_position_bias") {
      int64_t H = I[0], Sq = I[1], Sk = I[2];
      if (I[3] < 4) return "numBuckets must be >= 4, got " + std::to_string(I[3]);
      if (I[4] <= I[3] / 4) return "maxDistance must exceed numBuckets / 4, got " + std::to_string(I[4]);
      need[0] = I[3] * H;
      need[1] = H * Sq * Sk;
    } else if (name == "attn_merge") {
      int64_t rows = I[0] * I[1], H = I[2], D = I[3];
      if (I[4] < H * D || I[5] < H * D || I[6] < H * D) return "strides must be >= H*D";
      need[0] = strided(rows, I[4], H * D); need[2] = strided(rows, I[5], H * D); need[4] = strided(rows, I[6], H * D);
      need[1] = need[3] = need[5] = rows * H;
    } else if (name == "timestep_embedding") {
      need[0] = I[0]; need[1] = I[0] * I[1];
    } else if (name == "rope_table") {
      int64_t S = I[0], A = I[1];
      if (A < 1 || A > 4) return "A (number of axes) must be 1..4, got " + std::to_string(A);
      int64_t D = 0;
      for (int a = 0; a < A; ++a) {
        if (I[2 + a] % 2) return "axis dims must be even";
        D += I[2 + a];
      }
      need[0] = S * A; need[1] = S * D; need[2] = S * D;
    } else if (name == "embedding") {
      need[0] = I[0]; need[1] = I[2] * I[1]; need[2] = I[0] * I[1];
    } else if (name == "masked_mean") {
      need[0] = I[0] * I[1] * I[2]; need[1] = I[0] * I[1]; need[2] = I[0] * I[2];
    } else if (name == "copy3d") {
      int64_t outer = I[0], rows = I[1], cols = I[2];
      if (outer > 0 && rows > 0 && cols > 0) {
        need[0] = (outer - 1) * I[3] + (rows - 1) * I[4] + cols;
        need[1] = (outer - 1) * I[5] + (rows - 1) * I[6] + cols;
      }
    } else if (name == "transpose") {
      need[0] = need[1] = I[0] * I[1] * I[2];
    } else if (name == "conv2d") {
      int64_t N = I[0], Ci = I[1], H = I[2], W = I[3], Co = I[4], kh = I[5], kw = I[6], st = I[7], pad = I[8], pad_end = I[9];
      if (st < 1) return "stride must be >= 1";
      if (kh < 1 || kw < 1) return "kernel size must be >= 1";
      int64_t Ho = (H + pad + pad_end - kh) / st + 1, Wo = (W + pad + pad_end - kw) / st + 1;
      if (H + pad + pad_end < kh || W + pad + pad_end < kw) return "kernel larger than the padded input";
      need[0] = N * Ci * H * W; need[1] = Co * Ci * kh * kw; need[2] = Co; need[3] = N * Co * Ho * Wo;
    } else if (name == "conv3d") {
      int64_t To = I[0], Ci = I[1], H = I[2], W = I[3], Co = I[4], kt = I[5], kh = I[6], kw = I[7], st = I[8], pad = I[9];
      if (st < 1) return "stride must be >= 1";
      if (kt < 1 || kh < 1 || kw < 1) return "kernel size must be >= 1";
      if (H + 2 * pad < kh || W + 2 * pad < kw) return "kernel larger than the padded input";
      int64_t Ho = (H + 2 * pad - kh) / st + 1, Wo = (W + 2 * pad - kw) / st + 1;
      need[0] = (To + kt - 1) * Ci * H * W; need[1] = Co * Ci * kt * kh * kw; need[2] = Co; need[3] = To * Co * Ho * Wo;
    } else if (name == "group_norm") {
      int64_t N = I[0], C = I[1], HW = I[2], G = I[3];
      if (G < 1 || C % G) return "G must be >= 1 and divide C (C=" + std::to_string(C) + ", G=" + std::to_string(G) + ")";
      need[0] = N * C * HW; need[1] = C; need[2] = C; need[3] = N * C * HW;
    } else if (name == "upsample_nearest2x") {
      need[0] = I[0] * I[1] * I[2]; need[1] = 4 * I[0] * I[1] * I[2];
    } else if (name == "fp8_qkv_permute_quant") {
      // byte payloads live in float buffers: sizes in floats, rounded up
      int64_t B = I[0], S = I[1], P = I[2], N = I[3], D = I[4], H = I[5], xs = I[6];
      if (D % 4) return "D must be a multiple of 4 (the fp32 scale closes each row), got " + std::to_string(D);
      if (H > P * N) return "H must be <= P*N";
      if (xs < H * D) return "xStride must be >= H*D";
      need[0] = strided(B * S, xs, H * D);
      need[1] = (P * S * B * N * (D + 4) + 3) / 4;
    } else if (name == "fp8_qkv_permute_dequant") {
      int64_t S = I[0], B = I[1], N = I[2], D = I[3];
      if (D % 4) return "D must be a multiple of 4, got " + std::to_string(D);
      need[0] = (S * B * N * (D + 4) + 3) / 4;
      need[1] = S * B * N * D;
    } else if (name == "cache_probe") {
      // sums: 2 float64 in 4 floats; cur written only when given
      need[0] = need[1] = need[2] = need[3] = M;
      need[4] = 4;
    } else if (name == "residual_store" || name == "residual_apply") {
      need[0] = need[1] = need[2] = M;
    } else if (name == "forecast") {
      int64_t K = I[1];
      if (K < 1 || K > 6) return "k (number of terms) must be 1..6, got " + std::to_string(K);
      need[0] = M;
      for (int64_t j = 0; j < K; ++j) {
        if (!present(1 + static_cast<int>(j)) && M > 0) return "tensor t[" + std::to_string(1 + j) + "] (s" + std::to_string(j) + ") is required (k = " + std::to_string(K) + ")";
        need[1 + j] = M;
      }
    } else if (name == "taylor_diff") {
      need[0] = need[1] = need[2] = M;
    } else if (name == "foca_forecast") {
      need[0] = need[1] = need[2] = need[3] = need[4] = M;
    } else if (name == "dmd_gram" || name == "forecast_f64") {
      // cache calibrators (DMD): n elements in `batch` equal segments; float64 tensors take 2 floats each
      const int64_t B = I[1];
      if (B < 1 || (M % B) != 0) return "batch must be >= 1 and divide n = " + std::to_string(M) + ", got " + std::to_string(B);
      const bool gram = name == "dmd_gram";
      const int64_t K = gram ? I[2] + I[3] : I[2];
      if (gram && (I[2] < 1 || K > 7)) return "ka must be >= 1 and ka + kb <= 7 (tensors x0..x6), got ka " + std::to_string(I[2]) + ", kb " + std::to_string(I[3]);
      if (!gram && (K < 1 || K > 5)) return "k (number of terms) must be 1..5, got " + std::to_string(K);
      const int first = gram ? 1 : 3;
      const char* pre = gram ? "x" : "s";
      for (int64_t j = 0; j < K; ++j) {
        const int slot = first + static_cast<int>(j);
        if (!present(slot) && M > 0) return "tensor t[" + std::to_string(slot) + "] (" + pre + std::to_string(j) + ") is required (" + (gram ? "ka + kb = " : "k = ") + std::to_string(K) + ")";
        need[slot] = M;
      }
      if (gram) {
        need[0] = 2 * B * I[2] * (I[3] == 0 ? I[2] : I[3]);
      } else {
        const int64_t flags = I[3];
        if (flags > 3) return "flags must be 0..3 (1 start, 2 finish), got " + std::to_string(flags);
        if (flags != 3 && !present(2) && M > 0) return "tensor t[2] (acc) is required unless flags == 3 (one call)";
        need[0] = M;
        need[1] = 2 * B * K;
        need[2] = present(2) ? 2 * M : 0;
      }
    } else if (name == "fp8_per_token_quant" || name == "fp8_per_token_dequant") {
      int64_t rows = I[0], H = I[1];
      int64_t bytes = (rows * (H + 2) + 3) / 4;
      if (name == "fp8_per_token_quant") { need[0] = rows * H; need[1] = bytes; }
      else { need[0] = bytes; need[1] = rows * H; }
    }
  }
  for (int k = 0; k < expect_nt; ++k) {
    bool p = present(k);
    if (req[k] == 'r' && !p && need[k] > 0) {
      err << "tensor t[" << k << "] (" << names[k] << ") is required";
      return err.str();
    }
    if (p && T[k].numel < need[k]) {
      err << "tensor t[" << k << "] (" << names[k] << ") holds " << T[k].numel << " floats, needs " << need[k];
      return err.str();
    }
  }
  if (needs) needs->assign(need.begin(), need.begin() + expect_nt);
  return "";
}

}  // namespace ditforge
