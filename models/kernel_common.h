// What the C++ CPU kernels of models/ share (link_kernel.cpp for the DNC, ntm_kernel.cpp for the NTM): the inlining
// and target-clone attributes, and the small vector loops. models/_cpp.py builds each kernel with this folder on the
// include path and hashes this file into the extension's name, so a change here rebuilds both.
#pragma once

#include <cstdint>

// the kernels are inlined into one wrapper per dtype; on x86-64 with GCC or clang each float wrapper is built twice,
// for baseline SSE2 and for AVX2 (without FMA, so both give the same results), and the loader picks the one the CPU
// runs: plain -O3, no -march flag, so the build stays portable
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KERNEL_INLINE __attribute__((always_inline)) inline
#define KERNEL_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define KERNEL_INLINE inline
#define KERNEL_CLONES
#endif

// the ops' namespace is the extension's name, KERNEL_NAMESPACE (set by models/_cpp.py: a prefix and a digest of the
// sources, flags and torch version), so every version of a kernel registers differently named ops and torch.compile's
// on-disk caches never hand a graph compiled against one version's ops to another; these pass it on expanded
#ifndef KERNEL_NAMESPACE
#error "KERNEL_NAMESPACE must be defined (models/_cpp.py defines it)"
#endif
#define KERNEL_LIBRARY_EXPANDED(ns, m) TORCH_LIBRARY(ns, m)
#define KERNEL_LIBRARY(m) KERNEL_LIBRARY_EXPANDED(KERNEL_NAMESPACE, m)
#define KERNEL_LIBRARY_IMPL_EXPANDED(ns, k, m) TORCH_LIBRARY_IMPL(ns, k, m)
#define KERNEL_LIBRARY_IMPL(k, m) KERNEL_LIBRARY_IMPL_EXPANDED(KERNEL_NAMESPACE, k, m)

namespace kernel_common {

// sum_j term(j) for j < n, with 8 independent partial sums, so the compiler can vectorise it without -ffast-math
template <typename T, typename Term>
KERNEL_INLINE T sum8(int64_t n, Term term) {
  T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += term(j + k);
  }
  T tail = 0;
  for (; j < n; ++j) tail += term(j);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

// sum_j a_j b_j
template <typename T>
KERNEL_INLINE T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  return sum8<T>(n, [=](int64_t j) { return a[j] * b[j]; });
}

// sum_j a_j (b_j - c_j)
template <typename T>
KERNEL_INLINE T dot_diff(const T* __restrict a, const T* __restrict b, const T* __restrict c, int64_t n) {
  return sum8<T>(n, [=](int64_t j) { return a[j] * (b[j] - c[j]); });
}

// y += a x
template <typename T>
KERNEL_INLINE void axpy(T* __restrict y, T a, const T* __restrict x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

}  // namespace kernel_common
