// LoRDS init, refinement and assignment (the algorithm is described in lords_refine.h).
#include "quant/kernels/lords_refine.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "backend/ops.h"
#include "core/error.h"
#include "formats/lords_linear.h"
#include "quant/kernels/gptq_solver.h"
#include "quant/kernels/nf_codebook.h"
#include "quant/kernels/rtn_grid.h"
#include "quant/objective.h"

namespace lrq {

Tensor lords_codebook(int bits, LordsOptions::Codebook kind) {
  if (kind == LordsOptions::Codebook::Nf) return nf_codebook(bits);
  if (bits < 2 || bits > 8) fail("lords", "bits must be 2..8, got {}", bits);
  const int n = 1 << bits, half = n / 2;
  Tensor cb = Tensor::empty({n});
  for (int i = 0; i < n; ++i) cb.at<float>(i) = float(double(i - half) / double(half - 1));
  return cb;
}

LordsFactors lords_init(const Tensor& Win, int64_t rank, LordsOptions::Init init, int64_t blk) {
  const Tensor W = Win.is_cpu() ? Win : Win.to(Device::CPU);
  const int64_t m = W.dim(0), n = W.dim(1);
  if (rank < 1 || rank > std::min(m, n)) fail("lords", "rank {} outside [1, {}]", rank, std::min(m, n));
  const int64_t bs = init == LordsOptions::Init::Exact ? (n + rank - 1) / rank : blk;
  if (bs < 1) fail("lords", "block size must be positive, got {}", bs);
  const int64_t g = (n + bs - 1) / bs;
  auto len = [&](int64_t b) { return std::min(n, (b + 1) * bs) - b * bs; };
  // The block-scale matrix S0 = sb E (E: block indicator rows) equals (sb D)(D^-1 E) with
  // D = diag(sqrt(block length)), and D^-1 E has orthonormal rows: the SVD of the small m x g
  // matrix sb D gives S0's.
  Tensor M = Tensor::empty({m, g}, DType::F64);
  const float* w = W.data<float>();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t b = 0; b < g; ++b) {
      float amax = 0;
      for (int64_t j = b * bs; j < b * bs + len(b); ++j) amax = std::max(amax, std::fabs(w[i * n + j]));
      M.data<double>()[i * g + b] = double(amax) * std::sqrt(double(len(b)));
    }
  const int64_t k = std::min(m, g);
  Tensor U = Tensor::empty({m, k}, DType::F64), S = Tensor::empty({k}, DType::F64),
         Vt = Tensor::empty({k, g}, DType::F64);
  ops::svd(M, U, S, Vt);
  LordsFactors f{Tensor::zeros({m, rank}), Tensor::zeros({rank, n})};
  const int64_t rr = std::min(rank, k);
  for (int64_t t = 0; t < rr; ++t) {
    const double sq = std::sqrt(S.data<double>()[t]);
    // The sign SVD leaves free: make the column of B sum non-negative (scales are positive).
    double su = 0;
    for (int64_t i = 0; i < m; ++i) su += U.data<double>()[i * k + t];
    const double sg = su < 0 ? -1.0 : 1.0;
    for (int64_t i = 0; i < m; ++i) f.B.data<float>()[i * rank + t] = float(sg * U.data<double>()[i * k + t] * sq);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t b = j / bs;
      f.A.data<float>()[t * n + j] =
          float(sg * sq * Vt.data<double>()[t * g + b] / std::sqrt(double(len(b))));
    }
  }
  // Ranks beyond the block count start with B's column at 0 and a small deterministic A row,
  // so the first gradient reaches them (with both zero they would never move).
  double a_rms = 0;
  for (int64_t e = 0; e < rr * n; ++e) a_rms += double(f.A.data<float>()[e]) * f.A.data<float>()[e];
  a_rms = rr > 0 ? std::sqrt(a_rms / double(rr * n)) : 1.0;
  for (int64_t t = rr; t < rank; ++t)
    for (int64_t j = 0; j < n; ++j)
      f.A.data<float>()[t * n + j] = float(1e-2 * a_rms * std::sin(double(1 + t) * double(1 + j)));
  return f;
}

namespace {

std::vector<float> midpoints(const Tensor& cb) {
  std::vector<float> mid(size_t(cb.numel() - 1));
  for (int64_t i = 0; i + 1 < cb.numel(); ++i)
    mid[size_t(i)] = 0.5f * (cb.at<float>(i) + cb.at<float>(i + 1));
  return mid;
}

// GPTQ's column loop with element scales: column i's codes are the nearest codebook values of
// w / s under the fixed S, and the error (w - q s) / U_ii is pushed onto the later columns.
// CPU, F32 like gptq_quantize; returns codes U8 [m, n] in the input order.
Tensor gptq_assign(const Tensor& W, const Tensor& S, const Tensor& cb, const Tensor& H,
                   double damp) {
  const int64_t m = W.dim(0), n = W.dim(1);
  GptqOptions go;
  go.act_order = true;
  go.damp = damp;
  const GptqFactor f = gptq_factor(H, go);
  const float* u = f.U.data<float>();
  const std::vector<float> mid = midpoints(cb);
  const float* book = cb.data<float>();
  const int K = int(cb.numel());
  const uint8_t zero = uint8_t(std::lower_bound(mid.begin(), mid.end(), 0.f) - mid.begin());
  Tensor Wt = Tensor::empty({n, m}), St = Tensor::empty({n, m});
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = f.perm[size_t(i)];
    const bool dead = f.dead[size_t(c)];
    for (int64_t r = 0; r < m; ++r) {
      Wt.data<float>()[i * m + r] = dead ? 0.f : W.data<float>()[r * n + c];
      St.data<float>()[i * m + r] = S.data<float>()[r * n + c];
    }
  }
  std::vector<uint8_t> codes_t(size_t(n * m));
  const int64_t blockw = std::min<int64_t>(128, n);
  Tensor E = Tensor::empty({blockw, m});
  float* wt = Wt.data<float>();
  const float* st = St.data<float>();
  float* e = E.data<float>();
  constexpr int64_t kRows = 64;
  const int64_t tasks = (m + kRows - 1) / kRows;
  for (int64_t b0 = 0; b0 < n; b0 += blockw) {
    const int64_t b1 = std::min(n, b0 + blockw);
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t r0 = task * kRows, r1 = std::min(m, r0 + kRows);
      for (int64_t i = b0; i < b1; ++i) {
        const float d = u[i * n + i];
        float* wi = wt + i * m;
        float* ei = e + (i - b0) * m;
        for (int64_t r = r0; r < r1; ++r) {
          const float s = st[i * m + r];
          const uint8_t c = std::fabs(s) < 1e-30f
                                ? zero
                                : uint8_t(std::lower_bound(mid.begin(), mid.end(), wi[r] / s) -
                                          mid.begin());
          codes_t[size_t(i * m + r)] = uint8_t(std::min(int(c), K - 1));
          ei[r] = (wi[r] - book[c] * s) / d;
        }
        for (int64_t j = i + 1; j < b1; ++j) {
          const float uij = u[i * n + j];
          float* wj = wt + j * m;
          for (int64_t r = r0; r < r1; ++r) wj[r] -= ei[r] * uij;
        }
      }
    }
    if (b1 < n) {
      Tensor Ublk = Tensor::empty({b1 - b0, n - b1});
      for (int64_t i = b0; i < b1; ++i)
        std::copy_n(u + i * n + b1, n - b1, Ublk.data<float>() + (i - b0) * (n - b1));
      ops::gemm(Ublk, true, E.rows(0, b1 - b0), false, Wt.rows(b1, n), -1.0, 1.0);
    }
  }
  Tensor codes = Tensor::empty({m, n}, DType::U8);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 0; r < m; ++r)
      codes.data<uint8_t>()[r * n + f.perm[size_t(i)]] = codes_t[size_t(i * m + r)];
  return codes;
}

// 1 / [(H + lambda I)^-1]_jj, lambda = damp * mean diag(H) (raised tenfold while H + lambda I
// is not numerically SPD), in F64 on H's device: GPTQ's per-column error weights.
std::vector<double> obs_weights(const Tensor& H, double damp, const std::string& where) {
  const int64_t n = H.dim(0);
  const std::vector<double> d = hessian_diagonal(H);
  double mean = 0;
  for (double v : d) mean += v;
  mean = n > 0 ? mean / double(n) : 0.0;
  if (!(mean > 0)) mean = 1.0;  // no signal at all: every column alike
  for (int attempt = 0; attempt < 4; ++attempt) {
    Tensor Hd = H.to(DType::F64).to(Device::CPU).clone();
    const double lambda = damp * mean * std::pow(10.0, attempt);
    for (int64_t j = 0; j < n; ++j) {
      double& hjj = Hd.data<double>()[j * n + j];
      if (!(hjj > 0)) hjj = mean;  // a dead input column: GPTQ's convention
      hjj += lambda;
    }
    Tensor Hdev = Hd.to(H.device());
    if (!ops::spd_inverse(Hdev)) continue;
    const Tensor inv = Hdev.to(Device::CPU);
    std::vector<double> w(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) w[size_t(j)] = 1.0 / inv.data<double>()[j * n + j];
    return w;
  }
  fail(where, "objective=obs: H + damping is not positive definite (damp {})", damp);
}

// W - codebook[codes] (.) S, through lords_assign's residual with the codes fixed: S scaled so
// that the assignment reproduces them is not available, so this evaluates directly (CPU).
Tensor residual_of(const Tensor& W, const Tensor& S, const Tensor& cb, const Tensor& codes) {
  Tensor D = Tensor::empty(W.shape());
  const int64_t N = W.numel();
  const float* book = cb.data<float>();
  for (int64_t e = 0; e < N; ++e)
    D.data<float>()[e] = W.data<float>()[e] - book[codes.data<uint8_t>()[e]] * S.data<float>()[e];
  return D;
}

}  // namespace

LordsResult lords_quantize(const Tensor& W, const Tensor& H, const LordsOptions& opt,
                           const std::string& where) {
  check_quantizable(W, where);
  const int64_t m = W.dim(0), n = W.dim(1);
  const Device dev = W.device();
  if (n % 32 != 0) fail(where, "{} columns is not a multiple of 32", n);
  if (opt.bits != 2 && opt.bits != 3 && opt.bits != 4 && opt.bits != 8)
    fail(where, "bits must be 2, 3, 4 or 8, got {}", opt.bits);
  if (opt.blk < 1) fail(where, "blk must be positive, got {}", opt.blk);
  if (opt.steps < 0) fail(where, "steps must be >= 0, got {}", opt.steps);
  using Obj = LordsOptions::Objective;
  const bool need_h = opt.objective != Obj::Weight || opt.assign == LordsOptions::Assign::Gptq;
  if (need_h && (!H.defined() || H.shape() != Shape{n, n} || H.device() != dev))
    fail(where, "objective {} needs H [{}, {}] on the weight's device",
         opt.objective == Obj::Full ? "full" : opt.objective == Obj::Diag ? "diag" : opt.objective == Obj::Obs ? "obs" : "weight", n, n);
  const int64_t rank = opt.rank > 0 ? opt.rank : lords_matched_rank(m, n, opt.blk);
  if (rank > std::min(m, n)) fail(where, "rank {} exceeds min({}, {})", rank, m, n);

  LordsResult res;
  res.rank = rank;
  res.codebook = lords_codebook(opt.bits, opt.codebook).to(dev);
  LordsFactors f0 = lords_init(W, rank, opt.init, opt.blk);
  Tensor B = f0.B.to(dev), A = f0.A.to(dev);
  if (B.device() == Device::CPU) {  // the refinement updates them in place
    B = B.clone();
    A = A.clone();
  }

  Tensor h, Hf;
  if (opt.objective == Obj::Diag || opt.objective == Obj::Obs) {
    const std::vector<double> d =
        opt.objective == Obj::Diag ? hessian_diagonal(H) : obs_weights(H, opt.damp, where);
    Tensor hc = Tensor::empty({n});
    for (int64_t j = 0; j < n; ++j) hc.data<float>()[j] = float(d[size_t(j)]);
    h = hc.to(dev);
  } else if (opt.objective == Obj::Full) {
    Hf = H.to(DType::F32);
  }
  Tensor S = Tensor::empty({m, n}, DType::F32, dev);
  Tensor G = Tensor::empty({m, n}, DType::F32, dev);
  Tensor codes = Tensor::empty({m, n}, DType::U8, dev);
  Tensor D = opt.objective == Obj::Full ? Tensor::empty({m, n}, DType::F32, dev) : Tensor();

  // The objective at (B, A) with nearest codes; fills the gradient in S into G when asked.
  // The full objective's value costs an F64 m x n x n product, so it is only evaluated when
  // `want_loss` (every kFullCheck steps); other steps return NaN and are not candidates.
  constexpr int kFullCheck = 10;
  auto evaluate = [&](bool grad, bool want_loss) {
    ops::gemm(B, false, A, false, S);
    if (opt.objective != Obj::Full)
      return ops::lords_assign(W, S, res.codebook, h, codes, Tensor(), grad ? G : Tensor());
    ops::lords_assign(W, S, res.codebook, Tensor(), codes, D, Tensor());
    const double loss = want_loss ? hessian_error(D, H) : std::nan("");
    if (grad) {
      ops::gemm(D, false, Hf, false, G);
      ops::scale_by_codebook(G, codes, res.codebook, -2.0);
    }
    return loss;
  };

  Tensor mB = Tensor::zeros(B.shape(), DType::F32, dev), vB = Tensor::zeros(B.shape(), DType::F32, dev);
  Tensor mA = Tensor::zeros(A.shape(), DType::F32, dev), vA = Tensor::zeros(A.shape(), DType::F32, dev);
  Tensor gB = Tensor::empty(B.shape(), DType::F32, dev), gA = Tensor::empty(A.shape(), DType::F32, dev);
  Tensor bestB = B.clone(), bestA = A.clone();
  double best = 0;
  for (int step = 0; step <= opt.steps; ++step) {
    const bool last = step == opt.steps;
    const double loss = evaluate(!last, last || step % kFullCheck == 0);
    if (step == 0) res.loss_init = loss;
    if (step == 0 || loss < best) {  // false for NaN: unchecked steps are not kept
      best = loss;
      res.best_step = step;
      if (step > 0) {
        bestB = B.clone();
        bestA = A.clone();
      }
    }
    if (last) break;
    ops::gemm(G, false, A, true, gB);
    ops::gemm(B, true, G, false, gA);
    // Cosine decay from lr to lr/10: late steps refine instead of jumping between assignments.
    const double frac = double(step) / double(std::max(1, opt.steps - 1));
    ops::AdamParams ap;
    ap.lr = opt.lr * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(std::numbers::pi * frac)));
    ap.step = step + 1;
    ops::adam_step(B, gB, mB, vB, ap);
    ops::adam_step(A, gA, mA, vA, ap);
  }
  B = bestB;
  A = bestA;
  res.loss = evaluate(false, true);  // codes of the kept factors

  if (opt.assign == LordsOptions::Assign::Gptq) {
    // Judged by the output error it minimizes, whatever the refinement's objective.
    const Tensor Wc = W.to(Device::CPU), Sc = S.to(Device::CPU), Hc = H.to(Device::CPU);
    const Tensor cbc = res.codebook.to(Device::CPU);
    const Tensor cg = gptq_assign(Wc, Sc, cbc, Hc.dtype() == DType::F64 ? Hc : Hc.to(DType::F64), opt.damp);
    const Tensor H64 = Hc.dtype() == DType::F64 ? Hc : Hc.to(DType::F64);
    const double e_near = hessian_error(residual_of(Wc, Sc, cbc, codes.to(Device::CPU)), H64);
    const double e_gptq = hessian_error(residual_of(Wc, Sc, cbc, cg), H64);
    if (e_gptq < e_near) {
      codes = cg.to(dev);
      res.gptq_kept = true;
    }
  }
  res.codes = codes;
  res.B = B;
  res.A = A;
  return res;
}

}  // namespace lrq
