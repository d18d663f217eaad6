// LoPRo (arXiv 2601.19675): W = Wr + R. Wr from the rank-1 sketch with R1-FLR's rank, stored in
// mixed precision (leading ranks fp16, later ranks int8 with per-row scales). The residual's
// input columns are ordered by importance (P), every block of b columns except the `protect`
// most salient gets a Walsh-Hadamard rotation (B), and GPTQ quantizes R' = R P^T B with the
// matching H' = B P H P^T B. At run time x' = B P x feeds the packed GEMM (PackedLinear's input
// transform), the low-rank branch reads x directly.
// On the GPU the residual, its permutation and rotation, H' and GPTQ (packing included) run
// there; the factors (r (m + n) values), importance and permutation (n values) are host-side
// bookkeeping, and the layer is built on the GPU.
#include <cmath>
#include <numeric>

#include "backend/ops.h"
#include "quant/methods/common.h"
#include "quant/methods/options.h"
#include "quant/objective.h"

namespace lrq {

namespace {

// Largest power of two dividing n.
int64_t pow2_divisor(int64_t n) { return n & -n; }

struct LoproOptions {
  GptqOptions gptq;           // the residual's: grid and damp
  FlexRankOptions flex;
  int64_t block = 128;        // Hadamard block, a power of two
  int64_t protect = 1;        // most salient blocks left unrotated
  enum class Importance { Diag, WDiag, MeanAbs } imp = Importance::Diag;
  bool permute = true;        // columns in importance order
  enum class Rotation { Block, Global, None } rot = Rotation::Block;
  int hp = 8;                 // leading ranks stored fp16
  bool fp16_factors = false;  // every rank fp16 (hp ignored)
};

class Lopro final : public Method {
 public:
  explicit Lopro(const LoproOptions& o) : o_(o) {}

  Quantized quantize(const Tensor& W, const SiteStats& st, const QuantJob& job) const override {
    const int64_t m = W.dim(0), n = W.dim(1);
    const Device dev = W.device();
    const auto site = site_tensors(st, dev);
    Quantized out;
    // Low-rank part in its stored precision (split and rounded on the host: r (m + n) values).
    LowRank lr = flexible_low_rank(W, st, o_.flex, job.seed);
    const int r = lr.rank();
    out.extra["rank"] = r;
    out.extra["amax_curve"] = lr.amax_curve;
    std::vector<LowRankPart> parts;
    if (r > 0) {
      lr.L = lr.L.to(Device::CPU);
      lr.R = lr.R.to(Device::CPU);
      const int hp = o_.fp16_factors ? r : std::min<int>(r, o_.hp);
      parts.push_back(LowRankPart::from_f32(lr.L.reshape({m, r}).clone(), lr.R, false));
      if (hp < r) {
        // Split the columns of L / rows of R: [0, hp) fp16, [hp, r) int8.
        Tensor L16 = Tensor::empty({m, hp}), L8 = Tensor::empty({m, r - hp});
        for (int64_t i = 0; i < m; ++i)
          for (int k = 0; k < r; ++k)
            (k < hp ? L16.data<float>()[i * hp + k] : L8.data<float>()[i * (r - hp) + k - hp]) =
                lr.L.data<float>()[i * r + k];
        parts.clear();
        parts.push_back(LowRankPart::from_f32(L16, lr.R.rows(0, hp).clone(), false));
        parts.push_back(LowRankPart::from_f32(L8, lr.R.rows(hp, r).clone(), true));
      }
    }
    // Residual R = W - Wr, with Wr as stored.
    Tensor Wr = Tensor::zeros({m, n}, DType::F32, dev);
    add_low_rank(parts, Wr);
    Tensor Rw = difference(W, Wr);

    // Importance order (n values, on the host).
    using Imp = LoproOptions::Importance;
    std::vector<double> imp(n);
    if (o_.imp == Imp::MeanAbs) {
      const Tensor ma = site->mean_abs.to(Device::CPU);
      for (int64_t j = 0; j < n; ++j) imp[j] = ma.at<double>(j);
    } else {
      imp = hessian_diagonal(site->H);
      if (o_.imp == Imp::WDiag) {
        // ||R_:j||^2 per column. On the GPU the residual is read back for this option only.
        const Tensor Rh = Rw.to(Device::CPU);
        for (int64_t j = 0; j < n; ++j) {
          double c = 0;
          for (int64_t i = 0; i < m; ++i)
            c += double(Rh.data<float>()[i * n + j]) * Rh.data<float>()[i * n + j];
          imp[j] *= c;
        }
      }
    }
    // The layer's transform, built as a chain at the end: x' = B P x.
    struct {
      std::vector<int32_t> perm;
      int64_t had_block = 0, had_skip = 0;
    } t;
    if (o_.permute) {
      t.perm.resize(n);
      std::iota(t.perm.begin(), t.perm.end(), 0);
      std::stable_sort(t.perm.begin(), t.perm.end(),
                       [&](int32_t a, int32_t b) { return imp[a] > imp[b]; });
    }
    using Rot = LoproOptions::Rotation;
    if (o_.rot != Rot::None) {
      t.had_block = o_.rot == Rot::Global ? pow2_divisor(n) : o_.block;
      t.had_skip = o_.rot == Rot::Global ? 0 : o_.protect;
      if (n % t.had_block)
        fail(job.layer, "lopro: width {} is not a multiple of block {}", n, t.had_block);
      t.had_skip = std::min(t.had_skip, n / t.had_block);
    }
    out.extra["hadamard_block"] = t.had_block;

    // R' = (R P^T) B and H' = B P H P^T B.
    Tensor Rt, Ht;
    if (dev == Device::CPU) {
      const double* H = site->H.data<double>();
      Rt = Tensor::empty({m, n});
      Ht = Tensor::empty({n, n}, DType::F64);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t k = 0; k < n; ++k)
          Rt.data<float>()[i * n + k] = Rw.data<float>()[i * n + (t.perm.empty() ? k : t.perm[k])];
      for (int64_t a = 0; a < n; ++a)
        for (int64_t b = 0; b < n; ++b) {
          const int64_t pa = t.perm.empty() ? a : t.perm[a], pb = t.perm.empty() ? b : t.perm[b];
          Ht.data<double>()[a * n + b] = H[pa * n + pb];
        }
    } else {
      // Column gathers on the device. With Y = H P^T (Y[a, b] = H[a, p_b]), gathering the
      // columns of Y^T gives Z[b, a] = H[p_a, p_b], i.e. Z = (P H P^T)^T: one more transpose,
      // so no symmetry of H is assumed and H' holds exactly the entries the CPU path copies.
      Rt = Rw;
      Ht = site->H;
      if (!t.perm.empty()) {
        Tensor p = Tensor::empty({n}, DType::I32);
        std::copy(t.perm.begin(), t.perm.end(), p.data<int32_t>());
        p = p.to(dev);
        Rt = Tensor::empty({m, n}, DType::F32, dev);
        ops::permute_scale_cols(Rw, p, {}, Rt);
        Tensor Y = Tensor::empty({n, n}, DType::F64, dev), Z = Tensor::empty({n, n}, DType::F64, dev);
        ops::permute_scale_cols(site->H, p, {}, Y);
        ops::transpose(Y, Z);
        ops::permute_scale_cols(Z, p, {}, Y);
        Ht = Tensor::empty({n, n}, DType::F64, dev);
        ops::transpose(Y, Ht);
      } else if (t.had_block) {
        Ht = site->H.clone();  // rotated in place below
      }
    }
    if (t.had_block) {
      ops::fwht_rows(Rt, t.had_block, t.had_skip);
      ops::fwht_rows(Ht, t.had_block, t.had_skip);
      // H is symmetric: rotating the rows of (B H)^T = H B finishes B H B.
      Tensor HtT = Tensor::empty({n, n}, DType::F64, dev);
      if (dev == Device::CPU) {
        for (int64_t a = 0; a < n; ++a)
          for (int64_t b = 0; b < n; ++b) HtT.data<double>()[b * n + a] = Ht.data<double>()[a * n + b];
      } else {
        ops::transpose(Ht, HtT);
      }
      ops::fwht_rows(HtT, t.had_block, t.had_skip);
      Ht = HtT;
    }
    GptqResult g = gptq_quantize(Rt, Ht, o_.gptq, nullptr);
    if (!g.warning.empty()) out.extra["warning"] = g.warning;
    InputTransform chain;
    if (!t.perm.empty()) chain.permute(std::move(t.perm));
    if (t.had_block) chain.hadamard(t.had_block, t.had_skip);
    out.layer = std::make_unique<PackedLinear>(std::move(g.q), std::move(chain), std::move(parts));
    return out;
  }
  bool runs_on(Device d) const override { return d == Device::CPU || gpu_build(); }

 private:
  LoproOptions o_;
};

std::unique_ptr<Method> make(const Stage& s) {
  LoproOptions o;
  o.gptq.grid = parse_grid_options(s);
  o.gptq.damp = s.f("damp");
  o.flex = parse_flex_options(s);
  o.block = s.i("block");
  if (o.block < 2 || (o.block & (o.block - 1)))
    fail("recipe", "lopro: block must be a power of two >= 2, got {}", o.block);
  o.protect = s.i("protect");
  using Imp = LoproOptions::Importance;
  o.imp = choice<Imp>(s, "imp", {Imp::Diag, Imp::WDiag, Imp::MeanAbs});
  o.permute = s.s("perm") == "on";
  using Rot = LoproOptions::Rotation;
  o.rot = choice<Rot>(s, "rot", {Rot::Block, Rot::Global, Rot::None});
  o.hp = int(s.i("hp"));
  o.fp16_factors = s.s("factors") == "fp16";
  return std::make_unique<Lopro>(o);
}

}  // namespace

LRQ_REGISTER_METHOD(
    lopro,
    {.spec = {"lopro",
              "LoPRo: low-rank part + GPTQ on the importance-permuted, block-Hadamard-rotated "
              "residual",
              cat({pick(grid_option_specs(), {{"bits", "residual code width (wB shorthand)", "2"},
                                              {"group", "residual group size", "128"},
                                              {"sym", "symmetric residual grid"},
                                              {"clip", "clip search for the residual grids"}}),
                   {{"block", OptionSpec::Int, "128",
                     "Hadamard block size, a power of two (blockN)"},
                    {"protect", OptionSpec::Int, "1", "most salient blocks left unrotated"},
                    {"imp", OptionSpec::Choice, "diag",
                     "column importance: diag (H_jj), wdiag (H_jj ||W_:j||^2), "
                     "meanabs (mean |x_j|)",
                     {"diag", "wdiag", "meanabs"}},
                    {"perm", OptionSpec::Choice, "on", "group columns of similar importance",
                     {"on", "off"}},
                    {"rot", OptionSpec::Choice, "block",
                     "rotation: block WHT, one global WHT (largest power-of-two block dividing the "
                     "width), or none",
                     {"block", "global", "none"}}},
                   pick(flex_option_specs(),
                        {{"act", "activation-scaling exponent for the sketch"},
                         {"sketch"},
                         {"it"},
                         {"x", "R1-FLR storage-growth bound"},
                         {"flat", "R1-FLR amax-flattening threshold"},
                         {"rank"},
                         {"maxrank"}}),
                   {{"hp", OptionSpec::Int, "8",
                     "leading ranks stored fp16; the rest int8 with per-row scales"},
                    {"factors", OptionSpec::Choice, "mixed",
                     "factor precision: mixed (hp fp16 + int8) or fp16", {"mixed", "fp16"}}},
                   pick(gptq_option_specs(), {{"damp", "GPTQ damping"}})})},
     .order = 70,
     .layer = make});

}  // namespace lrq
