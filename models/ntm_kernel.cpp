// The NTM's head math of one time step, forward and backward, as one fused CPU kernel each. models/_ntm_kernel.py
// has models/_cpp.py build this file with torch's load_inline on first use, which registers the two ops (forward and
// backward, in the namespace KERNEL_NAMESPACE: kernel_common.h). The math is steps 2-4 of NTMCell.forward in models/ntm.py (its PyTorch twin, `NTMCell.heads`), with
// the functions of models/addressing.py:
//   clip the interface's raw values to +-clip; per head: key tanh, strength softplus, gate sigmoid, shift softmax,
//   sharpening 1 + softplus; content weighting (cosine against every memory row, |M_i| |k| + 1e-8 in the
//   denominator, then a softmax of strength * cosine); and with location addressing the interpolation with the
//   previous weights, the circular shift by offsets -S..S and the sharpening softmax(gamma log max(w, 1e-30));
//   read with the read heads' weights from the old memory; then per write head, in order, erase (sigmoid) and add
//   (tanh).
// Everything is done one example at a time, its memory (10 KiB at the paper's 128 x 20) in L1, and every loop runs
// along the N locations, so that it vectorises: the kernel keeps the memory TRANSPOSED, as [B, M, N] contiguous. Its
// memory output (and the old memory's gradient) is a [B, N, M] tensor with strides (N M, 1, N), the transpose of
// such a buffer, so the next step reads it without a copy; any other layout (the initial memory, expanded over the
// batch) is copied once into that one.

#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <algorithm>
#include <cmath>
#include <mutex>
#include <tuple>
#include <vector>

#include "kernel_common.h"

namespace {

using kernel_common::axpy;

using kernel_common::dot;
using kernel_common::dot_diff;
using kernel_common::sum8;

// as in models/addressing.py: SHARPEN_FLOOR, NTM_COSINE_EPS; torch's softplus switches to x above 20
constexpr double kSharpenFloor = 1e-30;
constexpr double kCosineEps = 1e-8;
constexpr double kSoftplusThreshold = 20;
// what the forward keeps for the backward, per example: per head kSavedRows rows of N values (content weights,
// interpolated weights, shifted weights, log max(shifted, floor), cosine similarities), then the N memory locations'
// norms, then the P activations (tanh, softplus, sigmoid, softmax of the clipped interface values), so the backward
// evaluates no exp, log or square root over N
constexpr int64_t kSavedRows = 5;

struct Shape {
  int64_t batch, heads, reads, writes, n, m, radius, shifts, head_size, interface_size;
  bool location;
  int64_t saved() const { return (heads * kSavedRows + 1) * n + interface_size; }  // per example
};

// memories are [B, M, N] here (see above)
template <typename T>
struct Forward {
  const T* raw;      // [B, P] unclipped interface output
  const T* prev;     // [B, H, N] previous weights
  const T* memory;   // [B, M, N] memory of step t - 1
  T* reads;          // [B, R, M]
  T* weights;        // [B, H, N]
  T* new_memory;     // [B, M, N]
  T* saved;          // [B, Shape::saved()]
};

template <typename T>
struct Backward {
  const T* grad_reads;    // [B, R, M]
  const T* grad_weights;  // [B, H, N]
  const T* grad_memory;   // [B, M, N], reaching the new memory
  const T* raw;
  const T* prev;
  const T* memory;
  const T* weights;
  const T* saved;
  T* grad_raw;       // [B, P]
  T* grad_prev;      // [B, H, N]
  T* grad_old;       // [B, M, N], of the old memory
};

// exp, tanh and log that the compiler inlines and vectorises. In double they are <cmath>'s. In float they are
// written out (no libm call, so a loop over them vectorises without -ffast-math), within about 2 ulp of <cmath>'s:
// - exp(x), |x| <= 88: x = n ln2 + r, |r| <= ln2 / 2, exp(r) - 1 by its Taylor series to r^8, times 2^n set in the
//   exponent bits; a result below 2^-126 is 0;
// - tanh(x) = expm1(2x) / (expm1(2x) + 2), with expm1 from the same reduction (exact to round-off near 0);
// - log(x), x > 0 normal: x = m 2^e, m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s), s = (m - 1) / (m + 1), by its
//   series to s^9; a NaN stays NaN.
template <typename T>
struct Math {
  static KERNEL_INLINE T exp(T x) { return std::exp(x); }
  static KERNEL_INLINE T tanh(T x) { return std::tanh(x); }
  static KERNEL_INLINE T log(T x) { return std::log(x); }
};

template <>
struct Math<float> {
  struct Split { float q, scale; };  // exp(x) = (q + 1) scale
  static KERNEL_INLINE Split split(float x) {
    const float big = 12582912.0f;  // 1.5 2^23: adding it rounds x / ln2 to an integer, held in the low bits
    const float t = x * 1.44269504088896341f + big;
    const float n = t - big;
    const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // ln2 in two parts: n * the first is exact
    float p = 1.0f / 40320;
    p = p * r + 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    int32_t e = __builtin_bit_cast(int32_t, t) - __builtin_bit_cast(int32_t, big) + 127;
    e = std::min(std::max(e, 0), 254);
    return {p * r, __builtin_bit_cast(float, e << 23)};
  }
  static KERNEL_INLINE float exp(float x) {
    const Split a = split(x);
    return a.q * a.scale + a.scale;
  }
  static KERNEL_INLINE float tanh(float x) {
    const Split a = split(2.0f * x);
    const float m = a.q * a.scale + (a.scale - 1.0f);
    return m / (m + 2.0f);
  }
  static KERNEL_INLINE float log(float x) {
    const int32_t bits = __builtin_bit_cast(int32_t, x);
    const int32_t mantissa = bits & 0x007fffff;
    const int32_t high = mantissa > 0x3504f3 ? 1 : 0;  // m = 1.mantissa > sqrt(2): halve it
    const float m = __builtin_bit_cast(float, mantissa | ((127 - high) << 23));
    const float e = static_cast<float>(((bits >> 23) & 0xff) - 127 + high);
    const float s = (m - 1.0f) / (m + 1.0f);
    const float s2 = s * s;
    float p = 1.0f / 9;
    p = p * s2 + 1.0f / 7;
    p = p * s2 + 1.0f / 5;
    p = p * s2 + 1.0f / 3;
    p = p * s2 + 1.0f;
    return e * 0.693359375f + (e * -2.12194440e-4f + 2.0f * s * p) + (x - x);
  }
};

template <typename T>
KERNEL_INLINE T sigmoid(T x) { return T(1) / (T(1) + Math<T>::exp(-x)); }

// torch's softplus (beta 1, threshold 20) and its slope, as torch's softplus_backward computes it
template <typename T>
KERNEL_INLINE T softplus(T x) { return x > T(kSoftplusThreshold) ? x : std::log1p(std::exp(x)); }
template <typename T>
KERNEL_INLINE T softplus_slope(T x) {
  if (x > T(kSoftplusThreshold)) return T(1);
  const T z = std::exp(x);
  return z / (z + T(1));
}

// out[k] = sum_i term(k, i) for k < rows, i < n: four rows at a time, each with 8 partial sums added up as sum8 adds
// them, so that four chains of adds run at once
template <typename T, typename Term>
KERNEL_INLINE void row_sums(int64_t rows, int64_t n, T* __restrict out, Term term) {
  int64_t k = 0;
  for (; k + 4 <= rows; k += 4) {
    T a0[8] = {}, a1[8] = {}, a2[8] = {}, a3[8] = {};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      for (int l = 0; l < 8; ++l) {
        a0[l] += term(k, i + l);
        a1[l] += term(k + 1, i + l);
        a2[l] += term(k + 2, i + l);
        a3[l] += term(k + 3, i + l);
      }
    }
    const T* acc[4] = {a0, a1, a2, a3};
    for (int r = 0; r < 4; ++r) {
      T tail = 0;
      for (int64_t j = i; j < n; ++j) tail += term(k + r, j);
      const T* a = acc[r];
      out[k + r] = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])) + tail;
    }
  }
  for (; k < rows; ++k) out[k] = sum8<T>(n, [&](int64_t i) { return term(k, i); });
}

template <typename T>
KERNEL_INLINE T max8(const T* __restrict z, int64_t n) {
  T acc[8];
  for (int k = 0; k < 8; ++k) acc[k] = z[0];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) acc[k] = std::max(acc[k], z[i + k]);
  }
  for (; i < n; ++i) acc[0] = std::max(acc[0], z[i]);
  for (int k = 1; k < 8; ++k) acc[0] = std::max(acc[0], acc[k]);
  return acc[0];
}

// out = softmax(z), as torch's CPU softmax: exp(z - max), then times 1 / sum; out may be z
template <typename T>
KERNEL_INLINE void softmax(const T* z, T* out, int64_t n) {
  const T top = max8(z, n);
  for (int64_t i = 0; i < n; ++i) out[i] = Math<T>::exp(z[i] - top);
  const T scale = T(1) / sum8<T>(n, [=](int64_t i) { return out[i]; });
  for (int64_t i = 0; i < n; ++i) out[i] *= scale;
}

// the softmax's backward: out_i = y_i (g_i - sum_j y_j g_j)
template <typename T>
KERNEL_INLINE void softmax_grad(const T* __restrict y, const T* __restrict g, T* __restrict out, int64_t n) {
  const T centre = dot(y, g, n);
  for (int64_t i = 0; i < n; ++i) out[i] = y[i] * (g[i] - centre);
}

template <typename T>
KERNEL_INLINE T clipped(T x, T clip) { return std::min(std::max(x, -clip), clip); }

// the activations of one example's P clipped interface values, in their order: per head the key (tanh), strength
// (softplus), gate (sigmoid), shift weights (softmax) and sharpening (1 + softplus); per write head erase (sigmoid)
// and add (tanh)
template <typename T>
KERNEL_INLINE void activate(const Shape& s, const T* __restrict raw, T clip, T* __restrict act) {
  const int64_t M = s.m, K = s.shifts, HS = s.head_size;
  for (int64_t p = 0; p < s.interface_size; ++p) act[p] = clipped(raw[p], clip);
  for (int64_t h = 0; h < s.heads; ++h) {
    T* a = act + h * HS;
    for (int64_t k = 0; k < M; ++k) a[k] = Math<T>::tanh(a[k]);
    a[M] = softplus(a[M]);
    a[M + 1] = sigmoid(a[M + 1]);
    softmax(a + M + 2, a + M + 2, K);
    a[M + 2 + K] = T(1) + softplus(a[M + 2 + K]);
  }
  for (int64_t j = 0; j < s.writes; ++j) {
    T* a = act + s.heads * HS + j * 2 * M;
    for (int64_t k = 0; k < M; ++k) a[k] = sigmoid(a[k]);
    for (int64_t k = 0; k < M; ++k) a[M + k] = Math<T>::tanh(a[M + k]);
  }
}

// padded[x] = w[(x - radius) mod n] for x < n + 2 radius: padded[i + radius + k] is w(i + k), wrapping around
template <typename T>
KERNEL_INLINE void pad_circular(const T* __restrict w, T* __restrict padded, int64_t n, int64_t radius) {
  std::copy(w + n - radius, w + n, padded);
  std::copy(w, w + n, padded + radius);
  std::copy(w, w + radius, padded + radius + n);
}

// the memory locations' Euclidean norms, from the [M, N] memory
template <typename T>
KERNEL_INLINE void location_norms(const T* __restrict mem, T* __restrict norms, int64_t n, int64_t m) {
  std::fill(norms, norms + n, T(0));
  for (int64_t k = 0; k < m; ++k) {
    const T* row = mem + k * n;
    for (int64_t i = 0; i < n; ++i) norms[i] += row[i] * row[i];
  }
  for (int64_t i = 0; i < n; ++i) norms[i] = std::sqrt(norms[i]);
}

// memory <- memory (1 - w e^T) + w a^T, one write head, on the [M, N] memory
template <typename T>
KERNEL_INLINE void write_head(T* __restrict mem, const T* __restrict w, const T* __restrict erase,
                              const T* __restrict add, int64_t n, int64_t m) {
  for (int64_t k = 0; k < m; ++k) {
    T* row = mem + k * n;
    const T e = erase[k], a = add[k];
    for (int64_t i = 0; i < n; ++i) row[i] = row[i] * (T(1) - w[i] * e) + w[i] * a;
  }
}

template <typename T>
KERNEL_INLINE void forward_kernel(const Shape& s, T clip, const Forward<T>& t) {
  const int64_t N = s.n, M = s.m, H = s.heads, K = s.shifts, S = s.radius, P = s.interface_size, HS = s.head_size;
  std::vector<T> buffer(N + N + 2 * S);
  T* z = buffer.data();
  T* padded = z + N;  // N + 2S
  for (int64_t b = 0; b < s.batch; ++b) {
    T* saved_b = t.saved + b * s.saved();
    T* norms = saved_b + H * kSavedRows * N;
    T* act = norms + N;
    activate(s, t.raw + b * P, clip, act);
    const T* mem = t.memory + b * M * N;
    location_norms(mem, norms, N, M);
    for (int64_t h = 0; h < H; ++h) {
      const T* ah = act + h * HS;
      T* saved = saved_b + h * kSavedRows * N;
      T *wc = saved, *wg = saved + N, *ws = saved + 2 * N, *lg = saved + 3 * N, *sim = saved + 4 * N;
      T* w = t.weights + (b * H + h) * N;
      const T key_norm = std::sqrt(dot(ah, ah, M));
      const T beta = ah[M];
      // content weighting: softmax over i of beta * cos(k, M_i)
      std::fill(z, z + N, T(0));
      for (int64_t k = 0; k < M; ++k) axpy(z, ah[k], mem + k * N, N);
      for (int64_t i = 0; i < N; ++i) {
        sim[i] = z[i] / (key_norm * norms[i] + T(kCosineEps));
        z[i] = beta * sim[i];
      }
      softmax(z, wc, N);
      if (!s.location) {
        std::copy(wc, wc + N, w);
        std::fill(wg, wg + 3 * N, T(0));
        continue;
      }
      const T gate = ah[M + 1], gamma = ah[M + 2 + K];
      const T* shift = ah + M + 2;
      const T* wp = t.prev + (b * H + h) * N;
      for (int64_t i = 0; i < N; ++i) wg[i] = gate * wc[i] + (T(1) - gate) * wp[i];
      // the shift: ws_i = sum over offsets o = -S..S of wg(i - o) s_o, s ordered -S..S
      pad_circular(wg, padded, N, S);
      std::fill(ws, ws + N, T(0));
      for (int64_t j = K - 1; j >= 0; --j) axpy(ws, shift[j], padded + 2 * S - j, N);
      for (int64_t i = 0; i < N; ++i) z[i] = std::max(ws[i], T(kSharpenFloor));
      for (int64_t i = 0; i < N; ++i) lg[i] = Math<T>::log(z[i]);
      for (int64_t i = 0; i < N; ++i) z[i] = gamma * lg[i];
      softmax(z, w, N);
    }
    // read the old memory with the read heads' weights
    const T* wb = t.weights + b * H * N;
    for (int64_t h = 0; h < s.reads; ++h) {
      T* out = t.reads + (b * s.reads + h) * M;
      const T* w = wb + h * N;
      row_sums(M, N, out, [=](int64_t k, int64_t i) { return w[i] * mem[k * N + i]; });
    }
    // then write, one write head after another
    T* new_mem = t.new_memory + b * M * N;
    std::copy(mem, mem + M * N, new_mem);
    for (int64_t j = 0; j < s.writes; ++j) {
      const T* aw = act + H * HS + j * 2 * M;
      write_head(new_mem, wb + (s.reads + j) * N, aw, aw + M, N, M);
    }
  }
}

template <typename T>
KERNEL_INLINE void backward_kernel(const Shape& s, T clip, const Backward<T>& t) {
  const int64_t N = s.n, M = s.m, H = s.heads, R = s.reads, W = s.writes, K = s.shifts, S = s.radius,
                P = s.interface_size, HS = s.head_size;
  const int64_t between_size = W > 1 ? (W - 1) * M * N : 0;  // the memories between write heads, recomputed
  std::vector<T> buffer(2 * N + H * N + M * N + between_size + 2 * M + 2 * K + 4 * N + 2 * (N + 2 * S));
  T* grad_norms = buffer.data();
  T* scratch = grad_norms + N;
  T* dw = scratch + N;           // [H, N]: the gradient reaching each head's final weights
  T* grad_mem = dw + H * N;      // [M, N]: the gradient reaching the memory after the write heads so far
  T* between = grad_mem + M * N;
  T* grad_key = between + between_size;  // also the erase vector's gradient
  T* grad_add = grad_key + M;
  T* grad_shift = grad_add + M;
  T* grad_l = grad_shift + K;
  T* grad_shifted = grad_l + N;
  T* grad_interp = grad_shifted + N;
  T* grad_content = grad_interp + N;  // then the gradient of the dot products
  T* padded = grad_content + N;
  T* padded_grad = padded + N + 2 * S;
  for (int64_t b = 0; b < s.batch; ++b) {
    const T* raw = t.raw + b * P;
    const T* saved_b = t.saved + b * s.saved();
    const T* norms = saved_b + H * kSavedRows * N;
    const T* act = norms + N;
    T* gr = t.grad_raw + b * P;
    std::fill(gr, gr + P, T(0));
    const T* mem = t.memory + b * M * N;
    T* grad_old = t.grad_old + b * M * N;
    const T* wb = t.weights + b * H * N;
    std::copy(t.grad_weights + b * H * N, t.grad_weights + (b + 1) * H * N, dw);
    // the writes, last head first: M' = M (1 - w e^T) + w a^T; grad_mem ends as the gradient of the old memory
    for (int64_t j = 0; j + 1 < W; ++j) {
      const T* from = j == 0 ? mem : between + (j - 1) * M * N;
      const T* aw = act + H * HS + j * 2 * M;
      std::copy(from, from + M * N, between + j * M * N);
      write_head(between + j * M * N, wb + (R + j) * N, aw, aw + M, N, M);
    }
    std::copy(t.grad_memory + b * M * N, t.grad_memory + (b + 1) * M * N, grad_mem);
    for (int64_t j = W - 1; j >= 0; --j) {
      const T* before = j == 0 ? mem : between + (j - 1) * M * N;
      const T* w = wb + (R + j) * N;
      T* grad_w = dw + (R + j) * N;
      const T* erase = act + H * HS + j * 2 * M;
      const T* add = erase + M;
      T* gwrite = gr + H * HS + j * 2 * M;
      const T* g_all = grad_mem;
      row_sums(M, N, grad_key, [=](int64_t k, int64_t i) { return g_all[k * N + i] * before[k * N + i] * w[i]; });
      row_sums(M, N, grad_add, [=](int64_t k, int64_t i) { return g_all[k * N + i] * w[i]; });
      for (int64_t k = 0; k < M; ++k) {
        gwrite[k] = -grad_key[k] * (T(1) - erase[k]) * erase[k];
        gwrite[M + k] = grad_add[k] * (T(1) - add[k] * add[k]);
      }
      for (int64_t k = 0; k < M; ++k) {
        const T* row = before + k * N;
        T* g = grad_mem + k * N;
        const T e = erase[k], a = add[k];
        for (int64_t i = 0; i < N; ++i) {
          const T g_i = g[i];
          grad_w[i] += g_i * (a - row[i] * e);
          g[i] = g_i * (T(1) - w[i] * e);
        }
      }
    }
    std::copy(grad_mem, grad_mem + M * N, grad_old);
    // the reads: r_h = sum_i w_h,i M_i
    for (int64_t h = 0; h < R; ++h) {
      const T* g = t.grad_reads + (b * R + h) * M;
      for (int64_t k = 0; k < M; ++k) {
        axpy(dw + h * N, g[k], mem + k * N, N);
        axpy(grad_old + k * N, g[k], wb + h * N, N);
      }
    }
    // the heads' addressing, each against the old memory
    std::fill(grad_norms, grad_norms + N, T(0));
    for (int64_t h = 0; h < H; ++h) {
      const T* rh = raw + h * HS;
      const T* ah = act + h * HS;
      T* grh = gr + h * HS;
      const T* saved = saved_b + h * kSavedRows * N;
      const T *wc = saved, *wg = saved + N, *ws = saved + 2 * N, *lg = saved + 3 * N, *sim = saved + 4 * N;
      const T* w = wb + h * N;
      T* grad_prev = t.grad_prev + (b * H + h) * N;
      if (s.location) {
        const T gate = ah[M + 1], gamma = ah[M + 2 + K];
        const T* shift = ah + M + 2;
        // sharpening: w = softmax(gamma l), l = log max(ws, floor); the floor passes no gradient below it
        softmax_grad(w, dw + h * N, grad_l, N);
        grh[M + 2 + K] = dot(grad_l, lg, N) * softplus_slope(clipped(rh[M + 2 + K], clip));
        for (int64_t i = 0; i < N; ++i) {  // the mask as a factor, not a branch, so that it vectorises
          const T below = T(ws[i] < T(kSharpenFloor));
          grad_shifted[i] = grad_l[i] * gamma / (ws[i] + below) * (T(1) - below);
        }
        // the shift: ws_i = sum_j wg(i + S - j) s_j
        pad_circular(grad_shifted, padded_grad, N, S);
        pad_circular(wg, padded, N, S);
        std::fill(grad_interp, grad_interp + N, T(0));
        for (int64_t j = 0; j < K; ++j) {
          axpy(grad_interp, shift[j], padded_grad + j, N);
          grad_shift[j] = dot(grad_shifted, padded + 2 * S - j, N);
        }
        softmax_grad(shift, grad_shift, grh + M + 2, K);
        // the interpolation: wg = g wc + (1 - g) w_prev
        const T* wp = t.prev + (b * H + h) * N;
        grh[M + 1] = dot_diff(grad_interp, wc, wp, N) * (T(1) - gate) * gate;
        for (int64_t i = 0; i < N; ++i) {
          grad_prev[i] = (T(1) - gate) * grad_interp[i];
          grad_content[i] = gate * grad_interp[i];
        }
      } else {
        std::fill(grad_prev, grad_prev + N, T(0));
        std::copy(dw + h * N, dw + (h + 1) * N, grad_content);
      }
      // content weighting: wc = softmax(beta sim), sim_i = dot_i / (|k| |M_i| + eps), dot_i = k.M_i
      const T* key = ah;
      const T key_norm = std::sqrt(dot(key, key, M));
      const T beta = ah[M];
      softmax_grad(wc, grad_content, scratch, N);  // the gradient of beta sim
      grh[M] = dot(scratch, sim, N) * softplus_slope(clipped(rh[M], clip));
      T* grad_dot = grad_content;
      for (int64_t i = 0; i < N; ++i) {
        grad_dot[i] = beta * scratch[i] / (key_norm * norms[i] + T(kCosineEps));
        scratch[i] = -grad_dot[i] * sim[i];  // the gradient of the denominator
        grad_norms[i] += scratch[i] * key_norm;
      }
      const T grad_key_norm = dot(scratch, norms, N);
      row_sums(M, N, grad_key, [=](int64_t k, int64_t i) { return grad_dot[i] * mem[k * N + i]; });
      for (int64_t k = 0; k < M; ++k) axpy(grad_old + k * N, key[k], grad_dot, N);
      // a norm's gradient is 0 at a zero vector, as torch.linalg.vector_norm's
      if (key_norm != T(0)) axpy(grad_key, grad_key_norm / key_norm, key, M);
      for (int64_t k = 0; k < M; ++k) grh[k] = grad_key[k] * (T(1) - key[k] * key[k]);
    }
    for (int64_t i = 0; i < N; ++i) {  // masks as factors, not branches, so that it vectorises
      const T zero = T(norms[i] == T(0));
      scratch[i] = grad_norms[i] / (norms[i] + zero) * (T(1) - zero);
    }
    for (int64_t k = 0; k < M; ++k) {
      T* g = grad_old + k * N;
      const T* row = mem + k * N;
      for (int64_t i = 0; i < N; ++i) g[i] += scratch[i] * row[i];
    }
    // the clip passes the gradient inside [-clip, clip], ends included, as torch's clamp
    for (int64_t p = 0; p < P; ++p) gr[p] *= T(raw[p] >= -clip && raw[p] <= clip);
  }
}

KERNEL_CLONES void forward_float(const Shape& s, float clip, const Forward<float>& t) {
  forward_kernel<float>(s, clip, t);
}

KERNEL_CLONES void backward_float(const Shape& s, float clip, const Backward<float>& t) {
  backward_kernel<float>(s, clip, t);
}

// any dtype: float goes through the wrappers above
template <typename T>
void forward_any(const Shape& s, T clip, const Forward<T>& t) { forward_kernel<T>(s, clip, t); }
template <>
void forward_any<float>(const Shape& s, float clip, const Forward<float>& t) { forward_float(s, clip, t); }
template <typename T>
void backward_any(const Shape& s, T clip, const Backward<T>& t) { backward_kernel<T>(s, clip, t); }
template <>
void backward_any<float>(const Shape& s, float clip, const Backward<float>& t) { backward_float(s, clip, t); }

Shape shape_of(const at::Tensor& raw, const at::Tensor& prev, const at::Tensor& memory, int64_t reads,
               int64_t radius, bool location) {
  TORCH_CHECK(raw.dim() == 2 && prev.dim() == 3 && memory.dim() == 3,
              "raw [B, P], previous weights [B, H, N], memory [B, N, M]");
  Shape s;
  s.batch = raw.size(0);
  s.heads = prev.size(1);
  s.reads = reads;
  s.writes = s.heads - reads;
  s.n = memory.size(1);
  s.m = memory.size(2);
  s.radius = radius;
  s.shifts = 2 * radius + 1;
  s.head_size = s.m + s.shifts + 3;
  s.interface_size = s.heads * s.head_size + s.writes * 2 * s.m;
  s.location = location;
  TORCH_CHECK(reads >= 0 && s.writes >= 0, "read_heads must be within 0..H");
  TORCH_CHECK(radius >= 0 && s.shifts <= s.n, "shift offsets -S..S must be distinct slots");
  TORCH_CHECK(prev.size(0) == s.batch && memory.size(0) == s.batch && prev.size(2) == s.n &&
              raw.size(1) == s.interface_size, "shapes disagree");
  TORCH_CHECK(raw.device().is_cpu() && prev.device().is_cpu() && memory.device().is_cpu(), "CPU tensors only");
  TORCH_CHECK(prev.scalar_type() == raw.scalar_type() && memory.scalar_type() == raw.scalar_type(),
              "dtypes disagree");
  return s;
}

// a [B, N, M] memory as the contiguous [B, M, N] buffer the kernels work on: free for the kernels' own outputs
at::Tensor transposed(const at::Tensor& memory) { return memory.transpose(1, 2).contiguous(); }

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> heads_forward(
    const at::Tensor& raw_, const at::Tensor& prev_, const at::Tensor& memory_, double clip, int64_t read_heads,
    int64_t shift_radius, bool location) {
  const Shape s = shape_of(raw_, prev_, memory_, read_heads, shift_radius, location);
  auto raw = raw_.contiguous(); auto prev = prev_.contiguous(); auto memory = transposed(memory_);
  auto reads = at::empty({s.batch, s.reads, s.m}, raw.options());
  auto weights = at::empty({s.batch, s.heads, s.n}, raw.options());
  auto new_memory = at::empty({s.batch, s.m, s.n}, raw.options());
  auto saved = at::empty({s.batch, s.saved()}, raw.options());
  AT_DISPATCH_FLOATING_TYPES(raw.scalar_type(), "ntm_heads_forward", [&] {
    forward_any<scalar_t>(s, static_cast<scalar_t>(clip),
                          Forward<scalar_t>{raw.data_ptr<scalar_t>(), prev.data_ptr<scalar_t>(),
                                            memory.data_ptr<scalar_t>(), reads.data_ptr<scalar_t>(),
                                            weights.data_ptr<scalar_t>(), new_memory.data_ptr<scalar_t>(),
                                            saved.data_ptr<scalar_t>()});
  });
  return {reads, weights, new_memory.transpose(1, 2), saved};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> heads_backward(
    const at::Tensor& grad_reads_, const at::Tensor& grad_weights_, const at::Tensor& grad_memory_,
    const at::Tensor& raw_, const at::Tensor& prev_, const at::Tensor& memory_, const at::Tensor& weights_,
    const at::Tensor& saved_, double clip, int64_t read_heads, int64_t shift_radius, bool location) {
  const Shape s = shape_of(raw_, prev_, memory_, read_heads, shift_radius, location);
  TORCH_CHECK(grad_reads_.sizes() == at::IntArrayRef({s.batch, s.reads, s.m}) &&
              grad_weights_.sizes() == prev_.sizes() && grad_memory_.sizes() == memory_.sizes() &&
              weights_.sizes() == prev_.sizes() && saved_.sizes() == at::IntArrayRef({s.batch, s.saved()}),
              "gradient shapes disagree");
  const auto dtype = raw_.scalar_type();
  auto grad_reads = grad_reads_.contiguous().to(dtype);
  auto grad_weights = grad_weights_.contiguous().to(dtype);
  auto grad_memory = transposed(grad_memory_.to(dtype));
  auto raw = raw_.contiguous(); auto prev = prev_.contiguous(); auto memory = transposed(memory_);
  auto weights = weights_.contiguous().to(dtype); auto saved = saved_.contiguous().to(dtype);
  auto grad_raw = at::empty({s.batch, s.interface_size}, raw.options());
  auto grad_prev = at::empty({s.batch, s.heads, s.n}, raw.options());
  auto grad_old = at::empty({s.batch, s.m, s.n}, raw.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "ntm_heads_backward", [&] {
    backward_any<scalar_t>(s, static_cast<scalar_t>(clip),
                           Backward<scalar_t>{grad_reads.data_ptr<scalar_t>(), grad_weights.data_ptr<scalar_t>(),
                                              grad_memory.data_ptr<scalar_t>(), raw.data_ptr<scalar_t>(),
                                              prev.data_ptr<scalar_t>(), memory.data_ptr<scalar_t>(),
                                              weights.data_ptr<scalar_t>(), saved.data_ptr<scalar_t>(),
                                              grad_raw.data_ptr<scalar_t>(), grad_prev.data_ptr<scalar_t>(),
                                              grad_old.data_ptr<scalar_t>()});
  });
  return {grad_raw, grad_prev, grad_old.transpose(1, 2)};
}


// ---------------------------------------------------------------------------------------------------------------------
// A whole sequence of NTM steps with a one-layer LSTM controller, forward and backward (models/ntm.py, NTM.run): the
// cell's five steps per time step, with the heads above, so that a training step is two op calls instead of several
// hundred small ones. Every buffer is time-major. The state after step t is st[t] = [h_t, reads_t] ([B, U + RM]; st[0]
// is the initial state); step t computes the gates from x_t and st[t], the controller's h_{t+1} and c_{t+1}, the
// interface's raw values from h_{t+1}, the heads (reads_{t+1}, weights_{t+1}, memory_{t+1}); the output layer then
// runs once on st[1..T] after the loop. The backward runs the steps in reverse and forms the weights' gradients as
// one matrix product each after its loop. Products go through ATen (BLAS); the pointwise LSTM math is written out.

// the activated LSTM gates (torch's order i, f, g, o) from their pre-activations, in place; the new cell and
// hidden state
template <typename T>
void lstm_forward(int64_t batch, int64_t units, T* gates, const T* c_prev, T* c, T* h, int64_t h_stride) {
  for (int64_t b = 0; b < batch; ++b) {
    T* g = gates + b * 4 * units;
    for (int64_t u = 0; u < 2 * units; ++u) g[u] = sigmoid(g[u]);
    for (int64_t u = 2 * units; u < 3 * units; ++u) g[u] = Math<T>::tanh(g[u]);
    for (int64_t u = 3 * units; u < 4 * units; ++u) g[u] = sigmoid(g[u]);
    const T* cp = c_prev + b * units;
    T* cb = c + b * units;
    T* hb = h + b * h_stride;
    for (int64_t u = 0; u < units; ++u) {
      cb[u] = g[units + u] * cp[u] + g[u] * g[2 * units + u];
      hb[u] = g[3 * units + u] * Math<T>::tanh(cb[u]);
    }
  }
}

// the gates' pre-activation gradients [B, 4U] from dh (read with stride h_stride) and dc, which becomes dc_prev
template <typename T>
void lstm_backward(int64_t batch, int64_t units, const T* gates, const T* c_prev, const T* c, const T* dh,
                   int64_t h_stride, T* dc, T* dgates) {
  for (int64_t b = 0; b < batch; ++b) {
    const T* g = gates + b * 4 * units;
    const T* cp = c_prev + b * units;
    const T* cb = c + b * units;
    const T* dhb = dh + b * h_stride;
    T* dcb = dc + b * units;
    T* d = dgates + b * 4 * units;
    for (int64_t u = 0; u < units; ++u) {
      const T i = g[u], f = g[units + u], z = g[2 * units + u], o = g[3 * units + u];
      const T tc = Math<T>::tanh(cb[u]);
      const T dct = dcb[u] + dhb[u] * o * (T(1) - tc * tc);
      d[u] = dct * z * i * (T(1) - i);
      d[units + u] = dct * cp[u] * f * (T(1) - f);
      d[2 * units + u] = dct * i * (T(1) - z * z);
      d[3 * units + u] = dhb[u] * tc * o * (T(1) - o);
      dcb[u] = dct * f;
    }
  }
}

// The sequence ops' large buffers (the forward keeps about 25 MB for the backward at the paper's sizes and T = 41)
// come from a small pool of storages, reused once nothing else holds them (the backward has run and autograd freed
// its saved tensors). Allocated fresh, buffers of that size are mapped and unmapped by malloc at every training step,
// and the page faults took about a fifth of the step's time.
class BufferPool {
 public:
  at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
    const int64_t bytes = c10::multiply_integers(sizes) * static_cast<int64_t>(options.dtype().itemsize());
    std::lock_guard<std::mutex> lock(mutex_);
    c10::Storage* best = nullptr;
    for (auto& storage : storages_) {
      if (storage.use_count() == 1 && static_cast<int64_t>(storage.nbytes()) >= bytes &&
          (best == nullptr || storage.nbytes() < best->nbytes()))
        best = &storage;
    }
    if (best != nullptr) return at::empty({0}, options).set_(*best, 0, sizes);
    auto tensor = at::empty(sizes, options);
    if (storages_.size() >= kCapacity) {  // forget a free storage, the smallest, if any
      auto victim = storages_.end();
      for (auto it = storages_.begin(); it != storages_.end(); ++it) {
        if (it->use_count() == 1 && (victim == storages_.end() || it->nbytes() < victim->nbytes())) victim = it;
      }
      if (victim != storages_.end()) storages_.erase(victim);
    }
    if (storages_.size() < kCapacity) storages_.push_back(tensor.storage());
    // and forget the largest free storages while the free ones hold more than kIdleBytes
    for (;;) {
      size_t idle = 0;
      auto largest = storages_.end();
      for (auto it = storages_.begin(); it != storages_.end(); ++it) {
        if (it->use_count() != 1) continue;
        idle += it->nbytes();
        if (largest == storages_.end() || it->nbytes() > largest->nbytes()) largest = it;
      }
      if (idle <= kIdleBytes) break;
      storages_.erase(largest);
    }
    return tensor;
  }

 private:
  static constexpr size_t kCapacity = 64;
  static constexpr size_t kIdleBytes = size_t(256) << 20;
  std::mutex mutex_;
  std::vector<c10::Storage> storages_;
};

at::Tensor pooled(at::IntArrayRef sizes, const at::TensorOptions& options) {
  static BufferPool pool;
  return pool.empty(sizes, options);
}

// the sequence ops' outputs: fourteen tensors each way
using Fourteen = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                            at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

struct SequenceShape {
  Shape heads;
  int64_t time, inputs, units, outputs, state;  // state = U + R M
};

SequenceShape sequence_shape(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& weights0,
                             const at::Tensor& memory0, const at::Tensor& w_ih, const at::Tensor& w_if,
                             const at::Tensor& w_out, int64_t reads, int64_t radius, bool location) {
  TORCH_CHECK(x.dim() == 3 && h0.dim() == 2, "inputs [B, T, I], h0 [B, U]");
  const int64_t batch = x.size(0);
  SequenceShape q;
  q.heads = shape_of(at::empty({batch, w_if.size(0)}, x.options()), weights0, memory0, reads, radius, location);
  q.time = x.size(1);
  q.inputs = x.size(2);
  q.units = h0.size(1);
  q.outputs = w_out.size(0);
  q.state = q.units + reads * q.heads.m;
  TORCH_CHECK(w_ih.size(0) == 4 * q.units && w_ih.size(1) == q.inputs + reads * q.heads.m &&
              w_if.size(1) == q.units && w_out.size(1) == q.state, "parameter shapes disagree");
  return q;
}

// the products' weights for the state [h, reads]: the controller's [W_hh, W_ih's reads columns] [4U, U + RM]
at::Tensor state_weights(const at::Tensor& w_ih, const at::Tensor& w_hh, int64_t inputs) {
  return at::cat({w_hh, w_ih.narrow(1, inputs, w_ih.size(1) - inputs)}, 1);
}

Fourteen sequence_forward(
    const at::Tensor& x_, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& reads0,
    const at::Tensor& weights0, const at::Tensor& memory0, const at::Tensor& w_ih, const at::Tensor& b_ih,
    const at::Tensor& w_hh, const at::Tensor& b_hh, const at::Tensor& w_if, const at::Tensor& b_if,
    const at::Tensor& w_out, const at::Tensor& b_out, double clip, int64_t read_heads, int64_t shift_radius,
    bool location, bool keep) {
  at::AutoDispatchBelowADInplaceOrView guard;
  const SequenceShape q = sequence_shape(x_, h0, weights0, memory0, w_ih, w_if, w_out, read_heads, shift_radius,
                                         location);
  const Shape& s = q.heads;
  const int64_t B = s.batch, T = q.time, U = q.units, RM = s.reads * s.m;
  TORCH_CHECK(T >= 1, "a sequence of at least one time step");
  for (const auto* t : {&h0, &c0, &reads0, &weights0, &memory0, &w_ih, &b_ih, &w_hh, &b_hh, &w_if, &b_if, &w_out,
                        &b_out})
    TORCH_CHECK(t->scalar_type() == x_.scalar_type() && t->device().is_cpu(), "dtypes or devices disagree");
  auto opts = x_.options();
  auto x = x_.transpose(0, 1).contiguous();  // [T, B, I]
  // With `keep` (a forward that autograd will go back through) every step's values stay for the backward. Without
  // it (evaluation) the per-step buffers are two slots used in turn, and the output layer runs at every step, so
  // that memory does not grow with T.
  const int64_t steps = keep ? T : 1, states = keep ? T + 1 : 2;
  auto slot = [&](int64_t t) { return keep ? t : t % 2; };
  auto step_slot = [&](int64_t t) { return keep ? t : int64_t(0); };
  auto biases = b_ih + b_hh;
  auto w_x = w_ih.narrow(1, 0, q.inputs).t();
  // the gates' pre-activations from the inputs and both biases (for every step at once with `keep`), activated in
  // place below
  auto gates = pooled({steps, B, 4 * U}, opts);
  if (keep) {
    auto gates_flat = gates.view({T * B, 4 * U});
    at::addmm_out(gates_flat, biases, x.view({T * B, q.inputs}), w_x);
  }
  auto wz = state_weights(w_ih, w_hh, q.inputs);
  auto st = pooled({states, B, q.state}, opts);
  st[0].narrow(1, 0, U).copy_(h0);
  st[0].narrow(1, U, RM).copy_(reads0.reshape({B, RM}));
  auto cells = pooled({states, B, U}, opts);
  cells[0].copy_(c0);
  auto raw = pooled({steps, B, s.interface_size}, opts);
  auto weights = pooled({states, B, s.heads, s.n}, opts);
  weights[0].copy_(weights0);
  auto memory = pooled({states, B, s.m, s.n}, opts);  // the kernel's layout
  memory[0].copy_(memory0.transpose(1, 2));
  auto saved = pooled({steps, B, s.saved()}, opts);
  auto unclipped = pooled({T, B, q.outputs}, opts);
  auto reads = at::empty({B, s.reads, s.m}, opts);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ntm_sequence_forward", [&] {
    using scalar = scalar_t;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t now = slot(t), next_slot = slot(t + 1), k = step_slot(t);
      auto gates_t = gates[k];
      if (!keep) at::addmm_out(gates_t, biases, x[t], w_x);
      gates_t.addmm_(st[now], wz.t());
      auto next = st[next_slot];
      lstm_forward<scalar>(B, U, gates_t.data_ptr<scalar>(), cells[now].data_ptr<scalar>(),
                           cells[next_slot].data_ptr<scalar>(), next.data_ptr<scalar>(), q.state);
      auto raw_t = raw[k];
      at::addmm_out(raw_t, b_if, next.narrow(1, 0, U), w_if.t());
      forward_any<scalar>(s, static_cast<scalar>(clip),
                          Forward<scalar>{raw_t.data_ptr<scalar>(), weights[now].data_ptr<scalar>(),
                                          memory[now].data_ptr<scalar>(), reads.data_ptr<scalar>(),
                                          weights[next_slot].data_ptr<scalar>(),
                                          memory[next_slot].data_ptr<scalar>(), saved[k].data_ptr<scalar>()});
      next.narrow(1, U, RM).copy_(reads.view({B, RM}));
      if (!keep) {
        auto unclipped_t = unclipped[t];
        at::addmm_out(unclipped_t, b_out, next, w_out.t());
      }
    }
  });
  if (keep) {  // the output layer once over every step's state
    auto unclipped_flat = unclipped.view({T * B, q.outputs});
    at::addmm_out(unclipped_flat, b_out, st.narrow(0, 1, T).reshape({T * B, q.state}), w_out.t());
  }
  auto logits = unclipped.clamp(-clip, clip).transpose(0, 1).contiguous();
  const int64_t last_slot = slot(T);
  auto last = st[last_slot];
  auto outputs = Fourteen{logits,
                          last.narrow(1, 0, U).clone(),
                          cells[last_slot].clone(),
                          last.narrow(1, U, RM).reshape({B, s.reads, s.m}).clone(),
                          weights[last_slot].clone(),
                          pooled({B, s.m, s.n}, opts).copy_(memory[last_slot]).transpose(1, 2),
                          st, gates, cells, raw, weights, memory, saved, unclipped};
  if (!keep) {  // nothing for a backward
    auto none = at::empty({0}, opts);
    outputs = Fourteen{std::get<0>(outputs), std::get<1>(outputs), std::get<2>(outputs), std::get<3>(outputs),
                       std::get<4>(outputs), std::get<5>(outputs), none, none.clone(), none.clone(), none.clone(),
                       none.clone(), none.clone(), none.clone(), none.clone()};
  }
  return outputs;
}

Fourteen sequence_backward(
    const at::Tensor& grad_logits, const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& grad_reads,
    const at::Tensor& grad_weights, const at::Tensor& grad_memory, const at::Tensor& x_, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const at::Tensor& w_if, const at::Tensor& w_out, const at::Tensor& st,
    const at::Tensor& gates, const at::Tensor& cells, const at::Tensor& raw, const at::Tensor& weights,
    const at::Tensor& memory, const at::Tensor& saved, const at::Tensor& unclipped, double clip, int64_t read_heads,
    int64_t shift_radius, bool location) {
  at::AutoDispatchBelowADInplaceOrView guard;
  const int64_t B = x_.size(0), T = x_.size(1), I = x_.size(2), U = w_hh.size(1), M = memory.size(2);
  const int64_t RM = read_heads * M, state = U + RM, P = w_if.size(0);
  TORCH_CHECK(T >= 1 && raw.size(0) == T, "the saved values of a forward with keep=True");
  const Shape s = shape_of(raw[0], weights[0], memory[0].transpose(1, 2), read_heads, shift_radius, location);
  auto opts = x_.options();
  const auto dtype = x_.scalar_type();
  // the logits' gradient through the clip (passed inside [-clip, clip], ends included, as torch's clamp)
  auto dlogits = grad_logits.to(dtype).transpose(0, 1) * unclipped.ge(-clip).logical_and(unclipped.le(clip));
  auto dlogits_flat = dlogits.reshape({T * B, -1});
  auto grad_w_out = dlogits_flat.t().mm(st.narrow(0, 1, T).reshape({T * B, state}));
  auto grad_b_out = dlogits_flat.sum(0);
  auto dstate = pooled({T, B, state}, opts);  // each st[t + 1]'s gradient from the outputs
  auto dstate_flat = dstate.view({T * B, state});
  at::mm_out(dstate_flat, dlogits_flat, w_out);
  auto wz = state_weights(w_ih, w_hh, I);
  auto dcur = at::empty({B, state}, opts);  // the gradient reaching st[t + 1]
  dcur.narrow(1, 0, U).copy_(grad_h);
  dcur.narrow(1, U, RM).copy_(grad_reads.reshape({B, RM}));
  auto dc = grad_c.to(dtype).clone(at::MemoryFormat::Contiguous);
  auto dw = grad_weights.to(dtype).clone(at::MemoryFormat::Contiguous);
  auto dmem = pooled({B, M, s.n}, opts).copy_(grad_memory.transpose(1, 2));  // [B, M, N]
  auto dw_prev = at::empty_like(dw);
  auto dmem_prev = pooled({B, M, s.n}, opts);
  auto draw = pooled({T, B, P}, opts);
  auto dgates = pooled({T, B, 4 * U}, opts);
  AT_DISPATCH_FLOATING_TYPES(dtype, "ntm_sequence_backward", [&] {
    using scalar = scalar_t;
    for (int64_t t = T - 1; t >= 0; --t) {
      dcur.add_(dstate[t]);
      auto draw_t = draw[t];
      auto dreads = dcur.narrow(1, U, RM).contiguous();
      backward_any<scalar>(s, static_cast<scalar>(clip),
                           Backward<scalar>{dreads.data_ptr<scalar>(), dw.data_ptr<scalar>(),
                                            dmem.data_ptr<scalar>(), raw[t].data_ptr<scalar>(),
                                            weights[t].data_ptr<scalar>(), memory[t].data_ptr<scalar>(),
                                            weights[t + 1].data_ptr<scalar>(), saved[t].data_ptr<scalar>(),
                                            draw_t.data_ptr<scalar>(), dw_prev.data_ptr<scalar>(),
                                            dmem_prev.data_ptr<scalar>()});
      std::swap(dw, dw_prev);
      std::swap(dmem, dmem_prev);
      auto dh = dcur.narrow(1, 0, U);
      dh.addmm_(draw_t, w_if);
      auto dgates_t = dgates[t];
      lstm_backward<scalar>(B, U, gates[t].data_ptr<scalar>(), cells[t].data_ptr<scalar>(),
                            cells[t + 1].data_ptr<scalar>(), dcur.data_ptr<scalar>(), state, dc.data_ptr<scalar>(),
                            dgates_t.data_ptr<scalar>());
      at::mm_out(dcur, dgates_t, wz);
    }
  });
  auto dgates_flat = dgates.view({T * B, 4 * U});
  auto x = x_.transpose(0, 1).contiguous().view({T * B, I});
  auto grad_wz = dgates_flat.t().mm(st.narrow(0, 0, T).reshape({T * B, state}));  // [4U, U + RM]
  auto grad_w_ih = at::cat({dgates_flat.t().mm(x), grad_wz.narrow(1, U, RM)}, 1);
  auto grad_w_hh = grad_wz.narrow(1, 0, U).contiguous();
  auto grad_b = dgates_flat.sum(0);
  auto draw_flat = draw.view({T * B, P});
  auto grad_w_if = draw_flat.t().mm(st.narrow(0, 1, T).narrow(2, 0, U).reshape({T * B, U}));
  auto grad_b_if = draw_flat.sum(0);
  auto grad_x = dgates_flat.mm(w_ih.narrow(1, 0, I)).view({T, B, I}).transpose(0, 1).contiguous();
  return {grad_x,
          dcur.narrow(1, 0, U).clone(at::MemoryFormat::Contiguous),  // fresh tensors, never views of dcur
          dc,
          dcur.narrow(1, U, RM).reshape({B, read_heads, M}).clone(at::MemoryFormat::Contiguous),
          dw,
          dmem.transpose(1, 2),
          grad_w_ih, grad_b, grad_w_hh, grad_b.clone(), grad_w_if, grad_b_if, grad_w_out, grad_b_out};
}

}  // namespace

KERNEL_LIBRARY(m) {
  m.def("forward(Tensor raw, Tensor prev_weights, Tensor memory, float clip, int read_heads, int shift_radius, "
        "bool location) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("backward(Tensor grad_reads, Tensor grad_weights, Tensor grad_memory, Tensor raw, Tensor prev_weights, "
        "Tensor memory, Tensor weights, Tensor saved, float clip, int read_heads, int shift_radius, bool location) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("sequence_forward(Tensor x, Tensor h0, Tensor c0, Tensor reads0, Tensor weights0, Tensor memory0, "
        "Tensor w_ih, Tensor b_ih, Tensor w_hh, Tensor b_hh, Tensor w_if, Tensor b_if, Tensor w_out, Tensor b_out, "
        "float clip, int read_heads, int shift_radius, bool location, bool keep) -> (Tensor, Tensor, Tensor, Tensor, "
        "Tensor, Tensor, "
        "Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("sequence_backward(Tensor grad_logits, Tensor grad_h, Tensor grad_c, Tensor grad_reads, "
        "Tensor grad_weights, Tensor grad_memory, Tensor x, Tensor w_ih, Tensor w_hh, Tensor w_if, Tensor w_out, "
        "Tensor st, Tensor gates, Tensor cells, Tensor raw, Tensor weights, Tensor memory, Tensor saved, "
        "Tensor unclipped, float clip, int read_heads, int shift_radius, bool location) -> (Tensor, Tensor, Tensor, "
        "Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

KERNEL_LIBRARY_IMPL(CPU, m) {
  m.impl("forward", &heads_forward);
  m.impl("backward", &heads_backward);
  m.impl("sequence_forward", &sequence_forward);
  m.impl("sequence_backward", &sequence_backward);
}
