// LoRDS refinement's elementwise passes on the CPU (the fused kernels that read packed codes
// live in packed_cpu.cpp beside the decoders they share) and the Adam step.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_ops.h"

namespace lrq::cpu {
namespace {

// The codebook entry nearest t (an ascending table of n entries): the number of midpoints
// below t, so a tie goes to the lower entry, as in nf_quantize.
inline uint8_t nearest_code(const float* mid, int n, float t) {
  return uint8_t(std::lower_bound(mid, mid + n - 1, t) - mid);
}

}  // namespace

double lords_assign(const Tensor& W, const Tensor& S, const Tensor& codebook, const Tensor& h,
                    const Tensor& codes, const Tensor& D, const Tensor& G) {
  const int64_t m = W.dim(0), n = W.dim(1);
  const int K = int(codebook.numel());
  const float* book = codebook.data<float>();
  std::vector<float> mid(size_t(std::max(K - 1, 0)));
  for (int i = 0; i + 1 < K; ++i) mid[size_t(i)] = 0.5f * (book[i] + book[i + 1]);
  const uint8_t zero = nearest_code(mid.data(), K, 0.f);
  const float* w = W.data<float>();
  const float* s = S.data<float>();
  const float* hw = h.defined() ? h.data<float>() : nullptr;
  uint8_t* c = codes.defined() ? codes.data<uint8_t>() : nullptr;
  float* d = D.defined() ? D.data<float>() : nullptr;
  float* g = G.defined() ? G.data<float>() : nullptr;
  // Row losses summed in row order afterwards: the total does not depend on the threads.
  std::vector<double> row_loss(static_cast<size_t>(m));
#pragma omp parallel
  {
    // Per row: the quotients first, then the code as the count of midpoints below each (one
    // comparison pass per midpoint, vectorized across the row; the same answer as
    // nearest_code's binary search, ties to the lower entry).
    std::vector<float> t(static_cast<size_t>(n));
    std::vector<uint8_t> code(static_cast<size_t>(n));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < m; ++i) {
      const float* wr = w + i * n;
      const float* sr = s + i * n;
      for (int64_t j = 0; j < n; ++j) {
        const float sv = sr[j];
        t[size_t(j)] = std::fabs(sv) < 1e-30f ? 0.f : wr[j] / sv;
      }
      std::fill(code.begin(), code.end(), uint8_t(0));
      for (int k = 0; k + 1 < K; ++k) {
        const float mk = mid[size_t(k)];
        for (int64_t j = 0; j < n; ++j) code[size_t(j)] += uint8_t(mk < t[size_t(j)]);
      }
      double l = 0;
      for (int64_t j = 0; j < n; ++j) {
        const int64_t e = i * n + j;
        const uint8_t cj = std::fabs(sr[j]) < 1e-30f ? zero : code[size_t(j)];
        const float q = book[cj];
        const float r = wr[j] - q * sr[j];
        const float hj = hw ? hw[j] : 1.f;
        if (c) c[e] = cj;
        if (d) d[e] = r;
        if (g) g[e] = -2.f * hj * r * q;
        l += double(hj) * double(r) * double(r);
      }
      row_loss[size_t(i)] = l;
    }
  }
  double total = 0;
  for (double l : row_loss) total += l;
  return total;
}

void scale_by_codebook(const Tensor& G, const Tensor& codes, const Tensor& codebook,
                       double alpha) {
  float* g = G.data<float>();
  const uint8_t* c = codes.data<uint8_t>();
  const float* book = codebook.data<float>();
  const int64_t n = G.numel(), K = codebook.numel();
  const float a = float(alpha);
  for (int64_t e = 0; e < n; ++e)
    if (c[e] >= K) fail("", "scale_by_codebook: code {} at {} is outside the codebook of {}", c[e], e, K);
#pragma omp parallel for schedule(static)
  for (int64_t e = 0; e < n; ++e) g[e] *= a * book[c[e]];
}

void adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v,
               const AdamParams& a) {
  const int64_t n = p.numel();
  float* pp = p.data<float>();
  const float* gp = g.data<float>();
  float* mp = m.data<float>();
  float* vp = v.data<float>();
  const float b1 = float(a.beta1), b2 = float(a.beta2), eps = float(a.eps);
  const float c1 = float(1.0 / (1.0 - std::pow(a.beta1, double(a.step))));
  const float c2 = float(1.0 / (1.0 - std::pow(a.beta2, double(a.step))));
  const float lr = float(a.lr);
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t e = 0; e < n; ++e) {
    const float gv = gp[e];
    mp[e] = b1 * mp[e] + (1.f - b1) * gv;
    vp[e] = b2 * vp[e] + (1.f - b2) * gv * gv;
    pp[e] -= lr * (mp[e] * c1) / (std::sqrt(vp[e] * c2) + eps);
  }
}

}  // namespace lrq::cpu
