// The DNC's temporal link update with both directional reads, forward and backward, as one fused CPU kernel each.
// models/_link_kernel.py has models/_cpp.py build it with torch's load_inline on first use, which registers the two
// ops (forward and backward, in the namespace KERNEL_NAMESPACE: kernel_common.h); the math is update_link then directional_read_weights in
// models/addressing.py, and its PyTorch twin is _LinkUpdateAndRead in models/_link_kernel.py.

#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <tuple>
#include <vector>

#include "kernel_common.h"

namespace {

using kernel_common::axpy;
using kernel_common::dot;
using kernel_common::dot_diff;

// one row of L_new: (1 - w_i - w_j) L[i, j] + w_i p_j, with L_new[i, i] = 0
template <typename T>
KERNEL_INLINE void new_link_row(T* __restrict out, const T* __restrict row, const T* __restrict p,
                           const T* __restrict w, T w_i, int64_t i, int64_t n) {
  const T keep = T(1) - w_i;
  for (int64_t j = 0; j < n; ++j) out[j] = (keep - w[j]) * row[j] + w_i * p[j];
  out[i] = 0;
}

// g = g0 + a r + c q (the gradient reaching a row of L_new from later steps and from one head's two reads)
template <typename T>
KERNEL_INLINE void row_grad_first(T* __restrict g, const T* __restrict g0, T a, const T* __restrict r, T c,
                             const T* __restrict q, int64_t n) {
  for (int64_t j = 0; j < n; ++j) g[j] = g0[j] + a * r[j] + c * q[j];
}

// g += a r + c q (further heads)
template <typename T>
KERNEL_INLINE void row_grad_more(T* __restrict g, T a, const T* __restrict r, T c, const T* __restrict q, int64_t n) {
  for (int64_t j = 0; j < n; ++j) g[j] += a * r[j] + c * q[j];
}

// the column terms of one row: grad_w_j -= g_j L[i, j], grad_p_j += g_j w_i, grad_old[i, j] = g_j (1 - w_i - w_j)
template <typename T>
KERNEL_INLINE void row_grad_out(const T* __restrict g, const T* __restrict row, const T* __restrict w, T w_i,
                           T* __restrict gw, T* __restrict gp, T* __restrict go, int64_t n) {
  const T keep = T(1) - w_i;
  for (int64_t j = 0; j < n; ++j) {
    gw[j] -= g[j] * row[j];
    gp[j] += g[j] * w_i;
    go[j] = g[j] * (keep - w[j]);
  }
}

template <typename T>
KERNEL_INLINE void forward_kernel(const T* link, const T* p, const T* w, const T* r, T* new_link, T* fwd, T* bwd,
                      int64_t batch, int64_t heads, int64_t n) {
  for (int64_t b = 0; b < batch; ++b) {
    const T* Lb = link + b * n * n;
    T* NLb = new_link + b * n * n;
    const T* pb = p + b * n;
    const T* wb = w + b * n;
    const T* rb = r + b * heads * n;
    T* fb = fwd + b * heads * n;
    T* kb = bwd + b * heads * n;
    for (int64_t x = 0; x < heads * n; ++x) kb[x] = 0;
    for (int64_t i = 0; i < n; ++i) {
      T* out = NLb + i * n;
      new_link_row(out, Lb + i * n, pb, wb, wb[i], i, n);
      for (int64_t h = 0; h < heads; ++h) {
        const T* rh = rb + h * n;
        fb[h * n + i] = dot(out, rh, n);    // forward[i] = sum_j L_new[i, j] r_j
        axpy(kb + h * n, rh[i], out, n);     // backward[j] += L_new[i, j] r_i
      }
    }
  }
}

template <typename T>
KERNEL_INLINE void backward_kernel(const T* grad_link, const T* gf, const T* gb, const T* link, const T* p,
                                   const T* w, const T* r, T* grad_old, T* grad_p, T* grad_w, T* grad_r, int64_t batch,
                                   int64_t heads, int64_t n) {
  std::vector<T> g_buffer(n), nl_buffer(n);
  T* g = g_buffer.data();
  T* nl = nl_buffer.data();
  for (int64_t b = 0; b < batch; ++b) {
    const T* G0 = grad_link + b * n * n;
    const T* Lb = link + b * n * n;
    T* GO = grad_old + b * n * n;
    const T* pb = p + b * n;
    const T* wb = w + b * n;
    const T* rb = r + b * heads * n;
    const T* gfb = gf + b * heads * n;
    const T* gbb = gb + b * heads * n;
    T* gpb = grad_p + b * n;
    T* gwb = grad_w + b * n;
    T* grb = grad_r + b * heads * n;
    for (int64_t x = 0; x < n; ++x) gpb[x] = 0;
    for (int64_t x = 0; x < n; ++x) gwb[x] = 0;
    for (int64_t x = 0; x < heads * n; ++x) grb[x] = 0;
    for (int64_t i = 0; i < n; ++i) {
      const T* row = Lb + i * n;
      const T w_i = wb[i];
      // the gradient reaching L_new[i, :]: from later steps, and from this step's two reads; 0 on the diagonal
      row_grad_first(g, G0 + i * n, gfb[i], rb, rb[i], gbb, n);
      for (int64_t h = 1; h < heads; ++h) row_grad_more(g, gfb[h * n + i], rb + h * n, rb[h * n + i], gbb + h * n, n);
      g[i] = 0;
      // the read weights' gradient needs L_new[i, :], recomputed exactly as the forward computed it
      new_link_row(nl, row, pb, wb, w_i, i, n);
      for (int64_t h = 0; h < heads; ++h) {
        axpy(grb + h * n, gfb[h * n + i], nl, n);  // sum_i g_f[i] L_new[i, j]
        grb[h * n + i] += dot(gbb + h * n, nl, n);  // sum_j g_b[j] L_new[i, j]
      }
      // d/dw_i: sum_j g[i, j] (p_j - L[i, j]); d/dw_j: -sum_i g[i, j] L[i, j]; d/dp_j: sum_i g[i, j] w_i
      gwb[i] += dot_diff(g, pb, row, n);
      row_grad_out(g, row, wb, w_i, gwb, gpb, GO + i * n, n);
    }
  }
}

KERNEL_CLONES void forward_float(const float* link, const float* p, const float* w, const float* r, float* new_link,
                               float* fwd, float* bwd, int64_t batch, int64_t heads, int64_t n) {
  forward_kernel<float>(link, p, w, r, new_link, fwd, bwd, batch, heads, n);
}

KERNEL_CLONES void backward_float(const float* grad_link, const float* gf, const float* gb, const float* link,
                                const float* p, const float* w, const float* r, float* grad_old, float* grad_p,
                                float* grad_w, float* grad_r, int64_t batch, int64_t heads, int64_t n) {
  backward_kernel<float>(grad_link, gf, gb, link, p, w, r, grad_old, grad_p, grad_w, grad_r, batch, heads, n);
}

// any dtype: float goes through the wrappers above
template <typename T>
void forward_any(const T* link, const T* p, const T* w, const T* r, T* new_link, T* fwd, T* bwd, int64_t batch,
                 int64_t heads, int64_t n) {
  forward_kernel<T>(link, p, w, r, new_link, fwd, bwd, batch, heads, n);
}
template <>
void forward_any<float>(const float* link, const float* p, const float* w, const float* r, float* new_link,
                        float* fwd, float* bwd, int64_t batch, int64_t heads, int64_t n) {
  forward_float(link, p, w, r, new_link, fwd, bwd, batch, heads, n);
}
template <typename T>
void backward_any(const T* grad_link, const T* gf, const T* gb, const T* link, const T* p, const T* w, const T* r,
                  T* grad_old, T* grad_p, T* grad_w, T* grad_r, int64_t batch, int64_t heads, int64_t n) {
  backward_kernel<T>(grad_link, gf, gb, link, p, w, r, grad_old, grad_p, grad_w, grad_r, batch, heads, n);
}
template <>
void backward_any<float>(const float* grad_link, const float* gf, const float* gb, const float* link,
                         const float* p, const float* w, const float* r, float* grad_old, float* grad_p,
                         float* grad_w, float* grad_r, int64_t batch, int64_t heads, int64_t n) {
  backward_float(grad_link, gf, gb, link, p, w, r, grad_old, grad_p, grad_w, grad_r, batch, heads, n);
}

void check(const at::Tensor& link, const at::Tensor& p, const at::Tensor& w, const at::Tensor& r) {
  TORCH_CHECK(link.dim() == 3 && link.size(1) == link.size(2), "link must be [B, N, N]");
  TORCH_CHECK(p.dim() == 2 && w.dim() == 2 && r.dim() == 3, "precedence, write weights [B, N]; reads [B, R, N]");
  TORCH_CHECK(p.sizes() == w.sizes() && p.size(0) == link.size(0) && p.size(1) == link.size(1) &&
              r.size(0) == link.size(0) && r.size(2) == link.size(1), "shapes disagree");
  TORCH_CHECK(r.size(1) >= 1, "at least one read head");
  TORCH_CHECK(link.device().is_cpu(), "CPU tensors only");
  TORCH_CHECK(p.scalar_type() == link.scalar_type() && w.scalar_type() == link.scalar_type() &&
              r.scalar_type() == link.scalar_type(), "dtypes disagree");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> link_forward(const at::Tensor& link_, const at::Tensor& p_,
                                                            const at::Tensor& w_, const at::Tensor& r_) {
  check(link_, p_, w_, r_);
  auto link = link_.contiguous(); auto p = p_.contiguous(); auto w = w_.contiguous(); auto r = r_.contiguous();
  auto new_link = at::empty_like(link);
  auto fwd = at::empty_like(r);
  auto bwd = at::empty_like(r);
  AT_DISPATCH_FLOATING_TYPES(link.scalar_type(), "link_forward", [&] {
    forward_any<scalar_t>(link.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                             r.data_ptr<scalar_t>(), new_link.data_ptr<scalar_t>(), fwd.data_ptr<scalar_t>(),
                             bwd.data_ptr<scalar_t>(), link.size(0), r.size(1), link.size(1));
  });
  return {new_link, fwd, bwd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> link_backward(
    const at::Tensor& grad_link_, const at::Tensor& grad_forward_, const at::Tensor& grad_backward_,
    const at::Tensor& link_, const at::Tensor& p_, const at::Tensor& w_, const at::Tensor& r_) {
  check(link_, p_, w_, r_);
  TORCH_CHECK(grad_link_.sizes() == link_.sizes() && grad_forward_.sizes() == r_.sizes() &&
              grad_backward_.sizes() == r_.sizes(), "gradient shapes disagree");
  auto gl = grad_link_.contiguous().to(link_.scalar_type());
  auto gf = grad_forward_.contiguous().to(link_.scalar_type());
  auto gb = grad_backward_.contiguous().to(link_.scalar_type());
  auto link = link_.contiguous(); auto p = p_.contiguous(); auto w = w_.contiguous(); auto r = r_.contiguous();
  auto grad_old = at::empty_like(link);
  auto grad_p = at::empty_like(p);
  auto grad_w = at::empty_like(w);
  auto grad_r = at::empty_like(r);
  AT_DISPATCH_FLOATING_TYPES(link.scalar_type(), "link_backward", [&] {
    backward_any<scalar_t>(gl.data_ptr<scalar_t>(), gf.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>(),
                              link.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                              r.data_ptr<scalar_t>(), grad_old.data_ptr<scalar_t>(), grad_p.data_ptr<scalar_t>(),
                              grad_w.data_ptr<scalar_t>(), grad_r.data_ptr<scalar_t>(), link.size(0), r.size(1),
                              link.size(1));
  });
  return {grad_old, grad_p, grad_w, grad_r};
}

}  // namespace

KERNEL_LIBRARY(m) {
  m.def("forward(Tensor link, Tensor precedence, Tensor write_weights, Tensor read_weights) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("backward(Tensor grad_link, Tensor grad_forward, Tensor grad_backward, Tensor link, Tensor precedence, "
        "Tensor write_weights, Tensor read_weights) -> (Tensor, Tensor, Tensor, Tensor)");
}

KERNEL_LIBRARY_IMPL(CPU, m) {
  m.impl("forward", &link_forward);
  m.impl("backward", &link_backward);
}
