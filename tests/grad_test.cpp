// The backward passes of the transformer pieces (op_list.h, "transformer backward") and the
// differentiable block (model/block_grad.h) on the CPU, against independent references:
//  - every backward op against central finite differences of its forward, in F64, on small
//    random shapes (GQA with two query heads per KV head, odd T, head_dim 8 and 16, both RoPE
//    layouts, a window longer than the CPU's 128-row query block);
//  - the F64 forwards against naive loops written here, F32 forwards unchanged by F64;
//  - each F32 backward against the F64 one on the same (F32-rounded) inputs;
//  - a whole tiny Llama block (hidden 16, 2 heads, 1 KV head, intermediate 32, T 5): dX and
//    all nine weight gradients against finite differences, and against PyTorch autograd through
//    the fixture tests/data/grad_block_reference.safetensors (scripts/grad_reference.py);
//  - BlockGrad's forward against Model::block_forward on lab-s, bit for bit.
// Budgets are relative errors, max |got - want| / max |want| over a tensor, printed with each
// check. Central differences with step h = 1e-5 in F64 are good to about 1e-9 here (truncation
// h^2 f''' / 6 plus roundoff 1e-16 |L| / h), so the budget 1e-7 leaves a margin of 100 while an
// error in any term of a gradient shows up at 1e-3 or above.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "io/checkpoint.h"
#include "model/linear.h"
#include "io/safetensors.h"
#include "model/block_grad.h"
#include "model/llama.h"
#include "grad_util.h"
#include "test_util.h"

using namespace lrq;
using namespace lrq::test;  // grad_util.h and test_util.h

namespace {



Tensor f32(const Tensor& t) { return t.to(DType::F32); }
// An F64 tensor rounded to F32 and back: the inputs both precisions see in the F32 checks.
Tensor rounded(const Tensor& t) { return f64(f32(t)); }




// Central differences of loss() in every entry of t (F64, perturbed in place and restored).
// With stride > 1 only every stride-th entry is differenced (the rest stay 0 and are skipped
// by fd_check).
Tensor numeric_grad(const Tensor& t, const std::function<double()>& loss, int64_t stride = 1) {
  Tensor g = Tensor::zeros(t.shape(), DType::F64);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); i += stride) {
    const double v = p[i];
    p[i] = v + kFdStep;
    const double up = loss();
    p[i] = v - kFdStep;
    const double down = loss();
    p[i] = v;
    g.at<double>(i) = (up - down) / (2 * kFdStep);
  }
  return g;
}

// The analytic gradient against central differences (on the differenced entries only).
void fd_check(const std::string& what, const Tensor& analytic, const Tensor& t,
              const std::function<double()>& loss, int64_t stride = 1) {
  const Tensor num = numeric_grad(t, loss, stride);
  Tensor got = f64(analytic).clone();
  if (stride > 1)
    for (int64_t i = 0; i < got.numel(); ++i)
      if (i % stride) got.at<double>(i) = 0;
  within(what + " vs finite differences", max_rel(got, num), kFdBudget);
}

std::string shape_name(int64_t rows, int64_t cols) {
  return std::to_string(rows) + "x" + std::to_string(cols);
}

// ------------------------------------------------------------------ naive references
// Causal GQA attention in F64 by the definition, one query at a time.
void naive_attention(const Tensor& q, const Tensor& K, const Tensor& V, int64_t nh, int64_t nkv,
                     int64_t hd, int64_t pos0, Tensor& out, Tensor& lse) {
  const int64_t T = q.dim(0), qw = nh * hd, kw = nkv * hd;
  out = Tensor::zeros({T, qw}, DType::F64);
  lse = Tensor::zeros({nh, T}, DType::F64);
  const double scale = 1.0 / std::sqrt(double(hd));
  for (int64_t h = 0; h < nh; ++h) {
    const int64_t g = h / (nh / nkv);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t n = pos0 + t + 1;
      std::vector<double> s(static_cast<size_t>(n));
      double mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0;
        for (int64_t c = 0; c < hd; ++c)
          dot += q.at<double>(t * qw + h * hd + c) * K.at<double>(j * kw + g * hd + c);
        s[size_t(j)] = scale * dot;
        mx = std::max(mx, s[size_t(j)]);
      }
      double sum = 0;
      for (double v : s) sum += std::exp(v - mx);
      lse.at<double>(h * T + t) = mx + std::log(sum);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t c = 0; c < hd; ++c)
          out.at<double>(t * qw + h * hd + c) +=
              std::exp(s[size_t(j)] - mx) / sum * V.at<double>(j * kw + g * hd + c);
    }
  }
}

}  // namespace

// ------------------------------------------------------------------ RMSNorm
TEST(Grad, RmsnormBackwardMatchesFiniteDifferences) {
  struct Case { int64_t T, d; float eps; };
  for (const Case c : {Case{1, 8, 1e-5f}, Case{5, 16, 1e-5f}, Case{7, 33, 1e-5f},
                       Case{3, 64, 1e-5f}, Case{4, 16, 0.5f}}) {
    const std::string name = "rmsnorm " + shape_name(c.T, c.d) + " eps " + std::to_string(c.eps);
    const Tensor x = rnd({c.T, c.d}, uint64_t(c.T * 100 + c.d));
    const Tensor w = rnd({c.d}, uint64_t(c.d), 0.3, 1.0);
    const Tensor G = rnd({c.T, c.d}, uint64_t(c.T + 7));
    auto loss = [&] {
      Tensor y = Tensor::empty(x.shape(), DType::F64);
      ops::rmsnorm(x, w, c.eps, y);
      return inner(y, G);
    };
    Tensor dx = Tensor::empty(x.shape(), DType::F64);
    const Tensor dw0 = rnd({c.d}, 99);  // dw accumulates into what it holds
    Tensor dw = dw0.clone();
    ops::rmsnorm_backward(x, w, c.eps, G, dx, dw);
    for (int64_t i = 0; i < c.d; ++i) dw.at<double>(i) -= dw0.at<double>(i);
    fd_check(name + " dx", dx, x, loss);
    fd_check(name + " dw", dw, w, loss);

    // dx may overwrite dy; dw undefined skips it.
    Tensor inplace = G.clone();
    ops::rmsnorm_backward(x, w, c.eps, inplace, inplace, Tensor());
    EXPECT_EQ(std::memcmp(inplace.raw(), dx.raw(), dx.nbytes()), 0) << name << " in place";

    // F32 against F64 on the same rounded inputs, with an F32 and a BF16 weight.
    const Tensor xr = rounded(x), wr = rounded(w), Gr = rounded(G);
    Tensor dx64 = Tensor::empty(x.shape(), DType::F64), dw64 = Tensor::zeros({c.d}, DType::F64);
    ops::rmsnorm_backward(xr, wr, c.eps, Gr, dx64, dw64);
    Tensor dx32 = Tensor::empty(x.shape()), dw32 = Tensor::zeros({c.d});
    ops::rmsnorm_backward(f32(xr), f32(wr), c.eps, f32(Gr), dx32, dw32);
    within(name + " dx F32 vs F64", max_rel(dx32, dx64), 1e-6);
    within(name + " dw F32 vs F64", max_rel(dw32, dw64), 1e-6);
  }
}

// ------------------------------------------------------------------ RoPE
TEST(Grad, RopeBackwardIsTheTransposeRotation) {
  for (bool interleaved : {false, true})
    for (int64_t hd : {8, 16})
      for (int64_t pos0 : {0, 7}) {
        const int64_t T = 5, nh = 2;
        const std::string name = std::string("rope ") + (interleaved ? "interleaved" : "rotate_half") +
                                 " hd " + std::to_string(hd) + " pos0 " + std::to_string(pos0);
        const Tensor x = rnd({T, nh * hd}, uint64_t(hd + pos0));
        const Tensor G = rnd({T, nh * hd}, uint64_t(hd * pos0 + 3));
        auto loss = [&] {
          Tensor y = x.clone();
          ops::rope(y, nh, hd, pos0, 10000.0f, interleaved);
          return inner(y, G);
        };
        Tensor dx = G.clone();
        ops::rope_backward(dx, nh, hd, pos0, 10000.0f, interleaved);
        fd_check(name + " dx", dx, x, loss);
        // R^T R = I: the backward undoes the forward.
        Tensor y = x.clone();
        ops::rope(y, nh, hd, pos0, 10000.0f, interleaved);
        ops::rope_backward(y, nh, hd, pos0, 10000.0f, interleaved);
        within(name + " R^T R x = x", max_rel(y, x), 1e-15);
        Tensor d32 = f32(G);
        ops::rope_backward(d32, nh, hd, pos0, 10000.0f, interleaved);
        Tensor d64 = rounded(G);
        ops::rope_backward(d64, nh, hd, pos0, 10000.0f, interleaved);
        within(name + " F32 vs F64", max_rel(d32, d64), 1e-6);
      }
}

// ------------------------------------------------------------------ attention
namespace {
struct AttnCase {
  int64_t T, nh, nkv, hd;
};
std::string attn_name(const AttnCase& c) {
  return "attention T " + std::to_string(c.T) + " heads " + std::to_string(c.nh) + "/" +
         std::to_string(c.nkv) + " hd " + std::to_string(c.hd);
}
}  // namespace

TEST(Grad, AttentionForwardMatchesNaiveF64) {
  for (const AttnCase c : {AttnCase{1, 2, 1, 8}, AttnCase{7, 4, 2, 16}, AttnCase{131, 2, 1, 8}}) {
    const Tensor q = rnd({c.T, c.nh * c.hd}, 1), K = rnd({c.T, c.nkv * c.hd}, 2),
                 V = rnd({c.T, c.nkv * c.hd}, 3);
    Tensor want, want_lse;
    naive_attention(q, K, V, c.nh, c.nkv, c.hd, 0, want, want_lse);
    Tensor out = Tensor::empty(q.shape(), DType::F64), lse = Tensor::empty({c.nh, c.T}, DType::F64);
    ops::attention_train(q, K, V, c.nh, c.nkv, c.hd, out, lse);
    within(attn_name(c) + " out F64 vs naive", max_rel(out, want), 1e-14);
    within(attn_name(c) + " lse F64 vs naive", max_rel(lse, want_lse), 1e-14);
    // The inference op computes the same thing (without lse), also from a later position.
    Tensor inf = Tensor::empty(q.shape(), DType::F64);
    ops::attention(q, K, V, c.nh, c.nkv, c.hd, 0, inf);
    EXPECT_EQ(std::memcmp(inf.raw(), out.raw(), out.nbytes()), 0) << attn_name(c);
    if (c.T > 3) {
      const int64_t pos0 = 3, n = c.T - pos0;
      Tensor tail = Tensor::empty({n, c.nh * c.hd}, DType::F64), naive_tail, unused;
      ops::attention(q.rows(pos0, c.T), K, V, c.nh, c.nkv, c.hd, pos0, tail);
      naive_attention(q.rows(pos0, c.T).clone(), K, V, c.nh, c.nkv, c.hd, pos0, naive_tail, unused);
      within(attn_name(c) + " pos0 3 F64 vs naive", max_rel(tail, naive_tail), 1e-14);
    }
    // attention_train's F32 output is the inference op's, bit for bit.
    Tensor o32 = Tensor::empty(q.shape()), l32 = Tensor::empty({c.nh, c.T}), i32 = Tensor::empty(q.shape());
    ops::attention_train(f32(q), f32(K), f32(V), c.nh, c.nkv, c.hd, o32, l32);
    ops::attention(f32(q), f32(K), f32(V), c.nh, c.nkv, c.hd, 0, i32);
    EXPECT_EQ(std::memcmp(i32.raw(), o32.raw(), o32.nbytes()), 0) << attn_name(c);
    within(attn_name(c) + " lse F32 vs naive", max_rel(l32, want_lse), 1e-6);
  }
}

TEST(Grad, AttentionBackwardMatchesFiniteDifferences) {
  // GQA (2 query heads per KV head), MHA, odd T, head_dim 8 and 16, one window longer than
  // the CPU's 128-row query block (differenced on every 7th entry).
  for (const AttnCase c : {AttnCase{1, 2, 1, 8}, AttnCase{5, 2, 1, 8}, AttnCase{7, 4, 2, 16},
                           AttnCase{9, 2, 2, 8}, AttnCase{13, 4, 1, 16}, AttnCase{131, 2, 1, 8}}) {
    const std::string name = attn_name(c);
    const int64_t stride = c.T > 100 ? 7 : 1;
    const Tensor q = rnd({c.T, c.nh * c.hd}, uint64_t(c.T * 10 + 1));
    const Tensor K = rnd({c.T, c.nkv * c.hd}, uint64_t(c.T * 10 + 2));
    const Tensor V = rnd({c.T, c.nkv * c.hd}, uint64_t(c.T * 10 + 3));
    const Tensor G = rnd({c.T, c.nh * c.hd}, uint64_t(c.T * 10 + 4));
    auto loss = [&] {
      Tensor out = Tensor::empty(q.shape(), DType::F64), lse = Tensor::empty({c.nh, c.T}, DType::F64);
      ops::attention_train(q, K, V, c.nh, c.nkv, c.hd, out, lse);
      return inner(out, G);
    };
    Tensor out = Tensor::empty(q.shape(), DType::F64), lse = Tensor::empty({c.nh, c.T}, DType::F64);
    ops::attention_train(q, K, V, c.nh, c.nkv, c.hd, out, lse);
    Tensor dq = Tensor::empty(q.shape(), DType::F64), dK = Tensor::empty(K.shape(), DType::F64),
           dV = Tensor::empty(V.shape(), DType::F64);
    ops::attention_backward(q, K, V, out, lse, G, c.nh, c.nkv, c.hd, dq, dK, dV);
    fd_check(name + " dq", dq, q, loss, stride);
    fd_check(name + " dK", dK, K, loss, stride);
    fd_check(name + " dV", dV, V, loss, stride);

    // F32 against F64 on the same rounded inputs.
    const Tensor qr = rounded(q), Kr = rounded(K), Vr = rounded(V), Gr = rounded(G);
    ops::attention_train(qr, Kr, Vr, c.nh, c.nkv, c.hd, out, lse);
    ops::attention_backward(qr, Kr, Vr, out, lse, Gr, c.nh, c.nkv, c.hd, dq, dK, dV);
    Tensor o32 = Tensor::empty(q.shape()), l32 = Tensor::empty({c.nh, c.T});
    ops::attention_train(f32(qr), f32(Kr), f32(Vr), c.nh, c.nkv, c.hd, o32, l32);
    Tensor dq32 = Tensor::empty(q.shape()), dK32 = Tensor::empty(K.shape()), dV32 = Tensor::empty(V.shape());
    ops::attention_backward(f32(qr), f32(Kr), f32(Vr), o32, l32, f32(Gr), c.nh, c.nkv, c.hd, dq32,
                            dK32, dV32);
    within(name + " dq F32 vs F64", max_rel(dq32, dq), 1e-5);
    within(name + " dK F32 vs F64", max_rel(dK32, dK), 1e-5);
    within(name + " dV F32 vs F64", max_rel(dV32, dV), 1e-5);
  }
}

TEST(Grad, AttentionBackwardDoesNotDependOnThreads) {
  const AttnCase c{300, 4, 2, 16};
  const Tensor q = rnd({c.T, c.nh * c.hd}, 5, 1, 0, DType::F32), K = rnd({c.T, c.nkv * c.hd}, 6, 1, 0, DType::F32),
               V = rnd({c.T, c.nkv * c.hd}, 7, 1, 0, DType::F32), G = rnd({c.T, c.nh * c.hd}, 8, 1, 0, DType::F32);
  std::vector<Tensor> runs;
  for (int threads : {1, 2}) {
    ops::set_num_threads(threads);
    Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({c.nh, c.T});
    ops::attention_train(q, K, V, c.nh, c.nkv, c.hd, out, lse);
    Tensor dq = Tensor::empty(q.shape()), dK = Tensor::empty(K.shape()), dV = Tensor::empty(V.shape());
    ops::attention_backward(q, K, V, out, lse, G, c.nh, c.nkv, c.hd, dq, dK, dV);
    for (const Tensor& t : {dq, dK, dV}) runs.push_back(t);
  }
  ops::set_num_threads(0);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(std::memcmp(runs[i].raw(), runs[i + 3].raw(), runs[i].nbytes()), 0) << i;
}

// ------------------------------------------------------------------ SwiGLU
TEST(Grad, SiluMulBackwardMatchesFiniteDifferences) {
  for (const auto& s : {Shape{1, 8}, Shape{5, 32}, Shape{7, 33}}) {
    const std::string name = "silu_mul " + shape_name(s[0], s[1]);
    const Tensor g = rnd(s, uint64_t(s[0] * 3 + s[1]), 2.0), u = rnd(s, uint64_t(s[1])),
                 G = rnd(s, uint64_t(s[0]));
    auto loss = [&] {
      Tensor y = Tensor::empty(s, DType::F64);
      ops::silu_mul(g, u, y);
      return inner(y, G);
    };
    Tensor dg = Tensor::empty(s, DType::F64), du = Tensor::empty(s, DType::F64);
    ops::silu_mul_backward(g, u, G, dg, du);
    fd_check(name + " dgate", dg, g, loss);
    fd_check(name + " dup", du, u, loss);
    // Outputs may overwrite the inputs.
    Tensor ga = g.clone(), ua = u.clone();
    ops::silu_mul_backward(ga, ua, G, ga, ua);
    EXPECT_EQ(std::memcmp(ga.raw(), dg.raw(), dg.nbytes()), 0) << name;
    EXPECT_EQ(std::memcmp(ua.raw(), du.raw(), du.nbytes()), 0) << name;
    Tensor dg32 = Tensor::empty(s), du32 = Tensor::empty(s), dg64 = Tensor::empty(s, DType::F64),
           du64 = Tensor::empty(s, DType::F64);
    ops::silu_mul_backward(f32(g), f32(u), f32(G), dg32, du32);
    ops::silu_mul_backward(rounded(g), rounded(u), rounded(G), dg64, du64);
    within(name + " dgate F32 vs F64", max_rel(dg32, dg64), 1e-6);
    within(name + " dup F32 vs F64", max_rel(du32, du64), 1e-6);
  }
  // Saturated gates: no NaN from exp overflow, the limits of silu' (0 and 1).
  const Tensor g = Tensor::from({-1000.f, -90.f, 90.f, 1000.f}, {1, 4});
  const Tensor one = Tensor::from({1.f, 1.f, 1.f, 1.f}, {1, 4});
  Tensor dg = Tensor::empty({1, 4}), du = Tensor::empty({1, 4});
  ops::silu_mul_backward(g, one, one, dg, du);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(dg.at<float>(i), i < 2 ? 0.0f : 1.0f, 1e-6f) << i;
    EXPECT_TRUE(std::isfinite(du.at<float>(i))) << i;
  }
}

TEST(Grad, BadArgumentsAreErrors) {
  const Tensor q = rnd({5, 16}, 1), K = rnd({5, 8}, 2), out = Tensor::empty({5, 16}, DType::F64);
  Tensor lse = Tensor::empty({2, 5}, DType::F64);
  EXPECT_NO_THROW(ops::attention_train(q, K, K, 2, 1, 8, out, lse));
  EXPECT_THROW(ops::attention_train(q, K, K, 2, 1, 8, out, Tensor::empty({5, 2}, DType::F64)), Error);
  EXPECT_THROW(ops::attention_train(q, rnd({6, 8}, 3), rnd({6, 8}, 3), 2, 1, 8, out, lse), Error);
  EXPECT_THROW(ops::attention_train(q, f32(K), K, 2, 1, 8, out, lse), Error);  // mixed dtypes
  EXPECT_THROW(ops::attention_train(q, K, K, 3, 1, 8, out, lse), Error);       // 3 % 1 ok, 3*8 != 16
  Tensor dq = Tensor::empty({5, 16}, DType::F64), dK = Tensor::empty({5, 8}, DType::F64),
         dV = Tensor::empty({5, 8}, DType::F64);
  EXPECT_NO_THROW(ops::attention_backward(q, K, K, out, lse, q, 2, 1, 8, dq, dK, dV));
  EXPECT_THROW(ops::attention_backward(q, K, K, out, lse, q, 2, 1, 8, q, dK, dV), Error);  // alias
  EXPECT_THROW(ops::attention_backward(q, K, K, out, lse, q, 2, 1, 8, dq, dK, Tensor()), Error);
  Tensor x = rnd({3, 8}, 4);
  EXPECT_THROW(ops::rmsnorm_backward(x, rnd({8}, 5), 1e-5f, x, x, Tensor::zeros({8})), Error);  // dw F32
  EXPECT_THROW(ops::rmsnorm_backward(x, rnd({7}, 5), 1e-5f, x, x, Tensor()), Error);
  EXPECT_THROW(ops::rmsnorm_backward(x, Tensor::zeros({8}, DType::I32), 1e-5f, x, x, Tensor()), Error);
  EXPECT_THROW(ops::rope_backward(x, 2, 3, 0, 1e4f, false), Error);  // odd head_dim
  EXPECT_THROW(ops::silu_mul_backward(x, x, x, x, rnd({3, 7}, 6)), Error);
  EXPECT_THROW(ops::rmsnorm(x, rnd({8}, 5), 1e-5f, Tensor::empty({3, 8})), Error);  // F64 into F32
}

// ------------------------------------------------------------------ the block
namespace {

ModelConfig tiny_config(bool interleaved = false) {
  ModelConfig c;
  c.hidden = 16;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 8;
  c.intermediate = 32;
  c.n_layers = 1;
  c.vocab = 8;
  c.max_positions = 64;
  c.rms_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.rope_interleaved = interleaved;
  return c;
}


BlockWeights cast(const BlockWeights& w, DType t) {
  BlockWeights out = w;
  for (auto& [n, p] : out.named()) *p = p->to(t);
  return out;
}

}  // namespace

TEST(GradBlock, BackwardMatchesFiniteDifferences) {
  for (bool interleaved : {false, true}) {
    const ModelConfig cfg = tiny_config(interleaved);
    const std::string tag = interleaved ? "block (interleaved) " : "block ";
    BlockGrad block(cfg, random_block_weights(cfg, 10));
    const Tensor x = rnd({5, cfg.hidden}, 20), G = rnd({5, cfg.hidden}, 21);
    auto loss = [&] { return inner(block.forward(x), G); };
    block.forward(x);
    BlockWeights grads = block.weights().zeros_like();
    const Tensor dx = block.backward(G, grads);
    fd_check(tag + "dX", dx, x, loss);
    auto gn = grads.named();
    auto wn = block.weights().named();
    for (size_t i = 0; i < wn.size(); ++i) fd_check(tag + "d " + wn[i].first, *gn[i].second, *wn[i].second, loss);

    // Gradients accumulate over windows: a second backward doubles them.
    block.forward(x);
    BlockWeights twice = grads;
    for (auto& [n, p] : twice.named()) *p = p->clone();
    block.backward(G, twice);
    auto tn = twice.named();
    for (size_t i = 0; i < tn.size(); ++i) {
      Tensor want = gn[i].second->clone();
      for (int64_t j = 0; j < want.numel(); ++j) want.at<double>(j) *= 2;
      within(tag + "2x " + tn[i].first, max_rel(*tn[i].second, want), 1e-15);
    }
  }
}

TEST(GradBlock, F32AgreesWithF64) {
  const ModelConfig cfg = tiny_config();
  const BlockWeights w64 = cast(cast(random_block_weights(cfg, 30), DType::F32), DType::F64);
  const Tensor x = rounded(rnd({9, cfg.hidden}, 31)), G = rounded(rnd({9, cfg.hidden}, 32));
  BlockGrad b64(cfg, w64), b32(cfg, cast(w64, DType::F32));
  const Tensor y64 = b64.forward(x), y32 = b32.forward(f32(x));
  within("block y F32 vs F64", max_rel(y32, y64), 1e-6);
  BlockWeights g64 = w64.zeros_like(), g32 = b32.weights().zeros_like();
  const Tensor dx64 = b64.backward(G, g64), dx32 = b32.backward(f32(G), g32);
  within("block dX F32 vs F64", max_rel(dx32, dx64), 1e-5);
  auto a = g32.named();
  auto b = g64.named();
  for (size_t i = 0; i < a.size(); ++i)
    within("block d " + a[i].first + " F32 vs F64", max_rel(*a[i].second, *b[i].second), 1e-5);
}

// The block differentiated here is the model's: on lab-s (GQA 4/2, head_dim 64), BlockGrad's
// F32 forward gives Model::block_forward's bits (with the BF16 projections widened to F32 on
// both sides: ops::linear's BF16 path multiplies in other blocks), and its F64 gradients match
// central differences on a sample of every weight.
TEST(GradBlock, IsTheModelsBlockOnLabS) {
  const auto ck = std::make_shared<Checkpoint>(load_checkpoint(test::repo("models/lab-s")));
  const auto model = std::make_unique<Model>(ck, [&](const std::string& name) -> std::unique_ptr<Linear> {
    return std::make_unique<DenseLinear>(ck->get(name + ".weight").to(DType::F32));
  });
  const ModelConfig& cfg = model->config();
  std::vector<int32_t> ids;
  for (int i = 0; i < 37; ++i) ids.push_back(int32_t((i * 977 + 13) % cfg.vocab));
  for (int64_t layer : {0, 3}) {
    Tensor x = model->embed(ids);
    for (int64_t l = 0; l < layer; ++l) {
      KVCache none;
      model->block_forward(l, x, 0, none);
    }
    BlockGrad block(cfg, BlockWeights::from_block(model->block(layer), DType::F32, Device::CPU));
    const Tensor y = block.forward(x);
    KVCache none;
    model->block_forward(layer, x, 0, none);
    EXPECT_EQ(std::memcmp(y.raw(), x.raw(), x.nbytes()), 0) << "layer " << layer;
  }
  BlockGrad block(cfg, BlockWeights::from_block(model->block(1), DType::F64, Device::CPU));
  const Tensor x = f64(model->embed(std::vector<int32_t>(ids.begin(), ids.begin() + 7)));
  const Tensor G = rnd({7, cfg.hidden}, 41);
  auto loss = [&] { return inner(block.forward(x), G); };
  block.forward(x);
  BlockWeights grads = block.weights().zeros_like();
  const Tensor dx = block.backward(G, grads);
  fd_check("lab-s block 1 dX (every 61st)", dx, x, loss, 61);
  auto gn = grads.named();
  auto wn = block.weights().named();
  for (size_t i = 0; i < wn.size(); ++i) {
    const int64_t stride = std::max<int64_t>(1, wn[i].second->numel() / 12) | 1;
    fd_check("lab-s block 1 d " + wn[i].first + " (sampled)", *gn[i].second, *wn[i].second, loss,
             stride);
  }
}

// Against PyTorch: scripts/grad_reference.py builds the same tiny block from seeded inputs,
// takes every gradient of sum(y * G) by autograd in F64 and writes inputs and results to the
// fixture; this reads the inputs, runs BlockGrad and compares. (PyTorch is not needed here.)
TEST(GradBlock, MatchesPyTorchAutograd) {
  const std::string path = test::test_data("grad_block_reference.safetensors");
  if (!std::ifstream(path).good())
    GTEST_SKIP() << path << " is missing: run scripts/grad_reference.py";
  const SafetensorsFile f = SafetensorsFile::open(path);
  const auto& meta = f.metadata();
  ModelConfig cfg;
  cfg.hidden = std::stoll(meta.at("hidden"));
  cfg.n_heads = std::stoll(meta.at("n_heads"));
  cfg.n_kv_heads = std::stoll(meta.at("n_kv_heads"));
  cfg.head_dim = std::stoll(meta.at("head_dim"));
  cfg.intermediate = std::stoll(meta.at("intermediate"));
  cfg.rms_eps = std::stof(meta.at("rms_eps"));
  cfg.rope_theta = std::stof(meta.at("rope_theta"));
  cfg.rope_interleaved = meta.at("rope_interleaved") == "true";
  BlockWeights w;
  for (auto& [n, p] : w.named()) *p = f.get(n).clone();
  const Tensor x = f.get("x"), G = f.get("G");
  BlockGrad block(cfg, w);
  const Tensor y = block.forward(x);
  within("block y vs PyTorch F64", max_rel(y, f.get("y")), 1e-12);
  BlockWeights grads = w.zeros_like();
  const Tensor dx = block.backward(G, grads);
  within("block dX vs PyTorch F64", max_rel(dx, f.get("grad.x")), 1e-12);
  for (auto& [n, p] : grads.named())
    within("block d " + n + " vs PyTorch F64", max_rel(*p, f.get("grad." + n)), 1e-12);
  // The F32 block against the same F64 autograd.
  BlockGrad b32(cfg, cast(w, DType::F32));
  b32.forward(f32(x));
  BlockWeights g32 = b32.weights().zeros_like();
  const Tensor dx32 = b32.backward(f32(G), g32);
  within("block dX F32 vs PyTorch F64", max_rel(dx32, f.get("grad.x")), 1e-5);
  for (auto& [n, p] : g32.named())
    within("block d " + n + " F32 vs PyTorch F64", max_rel(*p, f.get("grad." + n)), 1e-5);
}
