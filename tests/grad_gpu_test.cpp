// The backward passes on the GPU (grad_cuda.cu): every op against central finite differences of
// the GPU's own F64 forward, then against the CPU (tests/grad_test.cpp checks the CPU against
// finite differences and PyTorch) in F64 to rounding and in F32 under a budget, on shapes that
// cross the 32-row tiles, every head_dim tile width (32, 64, 128, 256) and GQA; the tiled
// attention backward gives the same bits on every run; the differentiable block runs on the
// GPU and matches the CPU. GPU outputs start as NaN, so an element a kernel forgets to write
// fails its comparison. Budgets as in grad_test.cpp: max |got - want| / max |want|.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "io/checkpoint.h"
#include "model/block_grad.h"
#include "model/linear.h"
#include "model/llama.h"
#include "grad_util.h"
#include "test_util.h"

using namespace lrq;
using namespace lrq::test;  // grad_util.h and test_util.h

namespace {


Tensor gpu(const Tensor& t) { return t.to(Device::CUDA); }
Tensor host(const Tensor& t) { return t.to(Device::CPU); }
Tensor poisoned(Shape s, DType t) {
  Tensor x = Tensor::empty(std::move(s), DType::F64);
  for (int64_t i = 0; i < x.numel(); ++i) x.at<double>(i) = std::numeric_limits<double>::quiet_NaN();
  return gpu(x.to(t));
}

bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor x = host(a), y = host(b);
  return x.nbytes() == y.nbytes() && std::memcmp(x.raw(), y.raw(), x.nbytes()) == 0;
}

// Central differences in every entry of the host tensor t (F64); loss() reads t (uploading it).
void fd_check(const std::string& what, const Tensor& analytic, const Tensor& t,
              const std::function<double()>& loss) {
  Tensor num = Tensor::zeros(t.shape(), DType::F64);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double v = p[i];
    p[i] = v + kFdStep;
    const double up = loss();
    p[i] = v - kFdStep;
    const double down = loss();
    p[i] = v;
    num.at<double>(i) = (up - down) / (2 * kFdStep);
  }
  within(what + " GPU vs finite differences", max_rel(analytic, num), kFdBudget);
}

struct AttnCase {
  int64_t T, nh, nkv, hd;
};
std::string attn_name(const AttnCase& c) {
  return "attention T " + std::to_string(c.T) + " heads " + std::to_string(c.nh) + "/" +
         std::to_string(c.nkv) + " hd " + std::to_string(c.hd);
}

}  // namespace

// ------------------------------------------------------------------ finite differences (F64)
TEST(GradGpu, BackwardOpsMatchFiniteDifferencesInF64) {
  REQUIRE_GPU();
  {  // RMSNorm
    const Tensor x = rnd({5, 16}, 1), w = rnd({16}, 2, 0.3, 1.0), G = rnd({5, 16}, 3);
    auto loss = [&] {
      Tensor y = Tensor::empty({5, 16}, DType::F64, Device::CUDA);
      ops::rmsnorm(gpu(x), gpu(w), 1e-5f, y);
      return inner(y, G);
    };
    Tensor dx = poisoned({5, 16}, DType::F64), dw = gpu(Tensor::zeros({16}, DType::F64));
    ops::rmsnorm_backward(gpu(x), gpu(w), 1e-5f, gpu(G), dx, dw);
    fd_check("rmsnorm dx", dx, x, loss);
    fd_check("rmsnorm dw", dw, w, loss);
  }
  for (bool interleaved : {false, true}) {  // RoPE
    const Tensor x = rnd({5, 32}, 4), G = rnd({5, 32}, 5);
    auto loss = [&] {
      Tensor y = gpu(x);
      ops::rope(y, 2, 16, 3, 10000.0f, interleaved);
      return inner(y, G);
    };
    Tensor dx = gpu(G);
    ops::rope_backward(dx, 2, 16, 3, 10000.0f, interleaved);
    fd_check(std::string("rope ") + (interleaved ? "interleaved" : "rotate_half"), dx, x, loss);
  }
  for (const AttnCase c : {AttnCase{5, 2, 1, 8}, AttnCase{7, 4, 2, 16}, AttnCase{13, 4, 1, 16},
                           AttnCase{37, 2, 1, 8}}) {
    const Tensor q = rnd({c.T, c.nh * c.hd}, 6), K = rnd({c.T, c.nkv * c.hd}, 7),
                 V = rnd({c.T, c.nkv * c.hd}, 8), G = rnd({c.T, c.nh * c.hd}, 9);
    auto loss = [&] {
      Tensor out = Tensor::empty(q.shape(), DType::F64, Device::CUDA),
             lse = Tensor::empty({c.nh, c.T}, DType::F64, Device::CUDA);
      ops::attention_train(gpu(q), gpu(K), gpu(V), c.nh, c.nkv, c.hd, out, lse);
      return inner(out, G);
    };
    Tensor out = poisoned(q.shape(), DType::F64), lse = poisoned({c.nh, c.T}, DType::F64);
    ops::attention_train(gpu(q), gpu(K), gpu(V), c.nh, c.nkv, c.hd, out, lse);
    Tensor dq = poisoned(q.shape(), DType::F64), dK = poisoned(K.shape(), DType::F64),
           dV = poisoned(V.shape(), DType::F64);
    ops::attention_backward(gpu(q), gpu(K), gpu(V), out, lse, gpu(G), c.nh, c.nkv, c.hd, dq, dK, dV);
    fd_check(attn_name(c) + " dq", dq, q, loss);
    fd_check(attn_name(c) + " dK", dK, K, loss);
    fd_check(attn_name(c) + " dV", dV, V, loss);
  }
  {  // SwiGLU
    const Tensor g = rnd({5, 32}, 10, 2.0), u = rnd({5, 32}, 11), G = rnd({5, 32}, 12);
    auto loss = [&] {
      Tensor y = Tensor::empty({5, 32}, DType::F64, Device::CUDA);
      ops::silu_mul(gpu(g), gpu(u), y);
      return inner(y, G);
    };
    Tensor dg = poisoned({5, 32}, DType::F64), du = poisoned({5, 32}, DType::F64);
    ops::silu_mul_backward(gpu(g), gpu(u), gpu(G), dg, du);
    fd_check("silu_mul dgate", dg, g, loss);
    fd_check("silu_mul dup", du, u, loss);
  }
}

// ------------------------------------------------------------------ against the CPU
TEST(GradGpu, ForwardF64MatchesCpu) {
  REQUIRE_GPU();
  const Tensor x = rnd({9, 200}, 20), w = rnd({200}, 21, 0.3, 1.0);
  Tensor yc = Tensor::empty(x.shape(), DType::F64), yg = poisoned(x.shape(), DType::F64);
  ops::rmsnorm(x, w, 1e-5f, yc);
  ops::rmsnorm(gpu(x), gpu(w), 1e-5f, yg);
  within("rmsnorm F64", max_rel(yg, yc), 1e-14);
  for (bool il : {false, true}) {
    Tensor rc = x.clone(), rg = gpu(x);
    ops::rope(rc, 5, 40, 1000, 500000.0f, il);
    ops::rope(rg, 5, 40, 1000, 500000.0f, il);
    within(std::string("rope F64 pos0 1000 ") + (il ? "interleaved" : "rotate_half"), max_rel(rg, rc), 1e-13);
  }
  const Tensor g = rnd({9, 200}, 22, 3.0);
  ops::silu_mul(x, g, yc);
  ops::silu_mul(gpu(x), gpu(g), yg);
  within("silu_mul F64", max_rel(yg, yc), 1e-15);
  Tensor ac = x.clone(), ag = gpu(x);
  ops::add_inplace(ac, g);
  ops::add_inplace(ag, gpu(g));
  EXPECT_TRUE(same_bits(ag, ac));
  // Inference attention in F64 from a later position (the tiled forward with pos0).
  const Tensor q = rnd({40, 8 * 64}, 23), K = rnd({90, 2 * 64}, 24), V = rnd({90, 2 * 64}, 25);
  Tensor oc = Tensor::empty(q.shape(), DType::F64), og = poisoned(q.shape(), DType::F64);
  ops::attention(q, K, V, 8, 2, 64, 50, oc);
  ops::attention(gpu(q), gpu(K), gpu(V), 8, 2, 64, 50, og);
  within("attention F64 pos0 50", max_rel(og, oc), 1e-13);
}

TEST(GradGpu, BackwardMatchesCpu) {
  REQUIRE_GPU();
  // Tile edges (1, 31, 33, 100 rows), each head_dim tile width, GQA and MHA.
  for (const AttnCase c : {AttnCase{1, 2, 1, 8}, AttnCase{31, 8, 2, 64}, AttnCase{33, 4, 4, 32},
                           AttnCase{100, 8, 2, 128}, AttnCase{70, 2, 1, 256},
                           AttnCase{257, 4, 2, 64}}) {
    for (DType dt : {DType::F64, DType::F32}) {
      const std::string name = attn_name(c) + " " + std::string(dtype_name(dt));
      const double budget = dt == DType::F64 ? 1e-12 : 2e-5;
      const Tensor q = rnd({c.T, c.nh * c.hd}, 30, 1, 0, dt), K = rnd({c.T, c.nkv * c.hd}, 31, 1, 0, dt),
                   V = rnd({c.T, c.nkv * c.hd}, 32, 1, 0, dt), G = rnd({c.T, c.nh * c.hd}, 33, 1, 0, dt);
      Tensor oc = Tensor::empty(q.shape(), dt), lc = Tensor::empty({c.nh, c.T}, dt);
      ops::attention_train(q, K, V, c.nh, c.nkv, c.hd, oc, lc);
      Tensor og = poisoned(q.shape(), dt), lg = poisoned({c.nh, c.T}, dt);
      ops::attention_train(gpu(q), gpu(K), gpu(V), c.nh, c.nkv, c.hd, og, lg);
      within(name + " out", max_rel(og, oc), dt == DType::F64 ? 1e-14 : 2e-6);
      within(name + " lse", max_rel(lg, lc), dt == DType::F64 ? 1e-14 : 2e-6);
      Tensor dqc = Tensor::empty(q.shape(), dt), dKc = Tensor::empty(K.shape(), dt),
             dVc = Tensor::empty(V.shape(), dt);
      ops::attention_backward(q, K, V, oc, lc, G, c.nh, c.nkv, c.hd, dqc, dKc, dVc);
      Tensor dqg = poisoned(q.shape(), dt), dKg = poisoned(K.shape(), dt), dVg = poisoned(V.shape(), dt);
      ops::attention_backward(gpu(q), gpu(K), gpu(V), og, lg, gpu(G), c.nh, c.nkv, c.hd, dqg, dKg, dVg);
      const double dv_scale = max_rel(dVc, Tensor::zeros(dVc.shape(), dVc.dtype()));
      within(name + " dq", max_rel(dqg, dqc, dv_scale), budget);
      within(name + " dK", max_rel(dKg, dKc, dv_scale), budget);
      within(name + " dV", max_rel(dVg, dVc), budget);
      // No atomics: a second run gives the same bits.
      Tensor dq2 = poisoned(q.shape(), dt), dK2 = poisoned(K.shape(), dt), dV2 = poisoned(V.shape(), dt);
      ops::attention_backward(gpu(q), gpu(K), gpu(V), og, lg, gpu(G), c.nh, c.nkv, c.hd, dq2, dK2, dV2);
      EXPECT_TRUE(same_bits(dq2, dqg) && same_bits(dK2, dKg) && same_bits(dV2, dVg)) << name;
    }
  }
  for (DType dt : {DType::F64, DType::F32}) {
    const std::string t(dtype_name(dt));
    const double budget = dt == DType::F64 ? 1e-13 : 1e-6;
    // RMSNorm over rows past one dw chunk (64), a width off the block size, a BF16 weight in F32.
    const Tensor x = rnd({150, 300}, 40, 1, 0, dt), G = rnd({150, 300}, 41, 1, 0, dt);
    const Tensor w = rnd({300}, 42, 0.3, 1.0, dt == DType::F64 ? DType::F64 : DType::BF16);
    Tensor dxc = Tensor::empty(x.shape(), dt), dwc = rnd({300}, 43, 1, 0, dt);
    Tensor dxg = poisoned(x.shape(), dt), dwg = gpu(dwc);
    ops::rmsnorm_backward(x, w, 1e-5f, G, dxc, dwc);
    ops::rmsnorm_backward(gpu(x), gpu(w), 1e-5f, gpu(G), dxg, dwg);
    within("rmsnorm_backward dx " + t, max_rel(dxg, dxc), budget);
    within("rmsnorm_backward dw " + t, max_rel(dwg, dwc), budget);
    Tensor inplace = gpu(G);
    ops::rmsnorm_backward(gpu(x), gpu(w), 1e-5f, inplace, inplace, Tensor());
    EXPECT_TRUE(same_bits(inplace, dxg)) << "rmsnorm_backward in place " << t;
    for (bool il : {false, true}) {
      Tensor rc = G.clone(), rg = gpu(G);
      ops::rope_backward(rc, 5, 60, 17, 10000.0f, il);
      ops::rope_backward(rg, 5, 60, 17, 10000.0f, il);
      within("rope_backward " + t + (il ? " interleaved" : " rotate_half"), max_rel(rg, rc), budget);
    }
    const Tensor g = rnd({150, 300}, 44, 3.0, 0, dt), u = rnd({150, 300}, 45, 1, 0, dt);
    Tensor dgc = Tensor::empty(g.shape(), dt), duc = Tensor::empty(g.shape(), dt);
    Tensor dgg = poisoned(g.shape(), dt), dug = poisoned(g.shape(), dt);
    ops::silu_mul_backward(g, u, G, dgc, duc);
    ops::silu_mul_backward(gpu(g), gpu(u), gpu(G), dgg, dug);
    within("silu_mul_backward dgate " + t, max_rel(dgg, dgc), budget);
    within("silu_mul_backward dup " + t, max_rel(dug, duc), budget);
  }
}

// ------------------------------------------------------------------ the block
TEST(GradGpu, BlockMatchesCpu) {
  REQUIRE_GPU();
  const auto ck = std::make_shared<Checkpoint>(load_checkpoint(test::repo("models/lab-s")));
  const Model model(ck, [&](const std::string& name) -> std::unique_ptr<Linear> {
    return std::make_unique<DenseLinear>(ck->get(name + ".weight").to(DType::F32));
  });
  const ModelConfig& cfg = model.config();
  std::vector<int32_t> ids;
  for (int i = 0; i < 77; ++i) ids.push_back(int32_t((i * 977 + 13) % cfg.vocab));
  const Tensor x = model.embed(ids);
  for (DType dt : {DType::F64, DType::F32}) {
    const std::string t(dtype_name(dt));
    const double budget = dt == DType::F64 ? 1e-12 : 2e-5;
    BlockGrad bc(cfg, BlockWeights::from_block(model.block(2), dt, Device::CPU));
    BlockGrad bg(cfg, BlockWeights::from_block(model.block(2), dt, Device::CUDA));
    const Tensor xc = x.to(dt), G = rnd({77, cfg.hidden}, 50, 1, 0, dt);
    within("lab-s block 2 y " + t, max_rel(bg.forward(gpu(xc)), bc.forward(xc)), budget);
    BlockWeights gc = bc.weights().zeros_like(), gg = bg.weights().zeros_like();
    within("lab-s block 2 dX " + t, max_rel(bg.backward(gpu(G), gg), bc.backward(G, gc)), budget);
    auto a = gg.named();
    auto b = gc.named();
    for (size_t i = 0; i < a.size(); ++i)
      within("lab-s block 2 d " + a[i].first + " " + t, max_rel(*a[i].second, *b[i].second), budget);
  }
}
