// LoRDS (arXiv 2601.22716): codebook codes times a scale matrix of low rank S = B A, refined
// after quantization (quant/kernels/lords_refine.h), stored as the "lords" layer kind
// (formats/lords_linear.h). Objectives weighted by the calibration statistics and the GPTQ
// assignment are our extensions; objective=weight with assign=nearest is the paper's PTQ.
#include "formats/lords_linear.h"
#include "quant/kernels/lords_refine.h"
#include "quant/methods/common.h"
#include "quant/methods/options.h"

namespace lrq {

namespace {

class Lords final : public Method {
 public:
  explicit Lords(const LordsOptions& o) : o_(o) {}
  Quantized quantize(const Tensor& W, const SiteStats& st, const QuantJob& job) const override {
    const bool need_h = o_.objective != LordsOptions::Objective::Weight ||
                        o_.assign == LordsOptions::Assign::Gptq;
    Tensor H;
    if (need_h) H = site_tensors(st, W.device())->H;
    LordsResult r = lords_quantize(W, H, o_, job.layer);
    Quantized q;
    q.layer = LordsLinear::pack(r.codes, r.B, r.A, r.codebook, o_.bits);
    q.extra["rank"] = r.rank;
    q.extra["lords_loss_init"] = r.loss_init;
    q.extra["lords_loss"] = r.loss;
    q.extra["lords_best_step"] = r.best_step;
    if (o_.assign == LordsOptions::Assign::Gptq) q.extra["lords_gptq_kept"] = r.gptq_kept;
    return q;
  }
  bool runs_on(Device d) const override { return d == Device::CPU || gpu_build(); }

 private:
  LordsOptions o_;
};

std::unique_ptr<Method> make(const Stage& s) {
  using O = LordsOptions;
  LordsOptions o;
  o.bits = int(s.i("bits"));
  o.codebook = choice<O::Codebook>(s, "codebook", {O::Codebook::Nf, O::Codebook::Int});
  o.blk = s.i("blk");
  o.rank = s.i("rank");
  o.steps = int(s.i("steps"));
  o.init = choice<O::Init>(s, "init", {O::Init::Block, O::Init::Exact});
  o.objective =
      choice<O::Objective>(s, "objective", {O::Objective::Weight, O::Objective::Diag, O::Objective::Obs,
                                                       O::Objective::Full});
  o.assign = choice<O::Assign>(s, "assign", {O::Assign::Nearest, O::Assign::Gptq});
  o.lr = s.f("lr");
  o.damp = s.f("damp");
  return std::make_unique<Lords>(o);
}

}  // namespace

LRQ_REGISTER_METHOD(
    lords,
    {.spec = {"lords",
              "LoRDS: codebook codes times element-wise scales of low rank S = B A, refined by Adam",
              {{"bits", OptionSpec::Int, "3", "code width (bB shorthand)", {"2", "3", "4", "8"}},
               {"codebook", OptionSpec::Choice, "nf", "code values: NormalFloat or symmetric INT",
                {"nf", "int"}},
               {"blk", OptionSpec::Int, "128",
                "block size the rank is matched to: r = floor(m n / (blk (m + n)))"},
               {"rank", OptionSpec::Int, "0", "rank of S (0: matched to blk; rN shorthand)"},
               {"steps", OptionSpec::Int, "500", "refinement steps (Adam on B and A)"},
               {"init", OptionSpec::Choice, "block",
                "block: SVD of blk-column absmax scales (paper); exact: blocks of n/r columns",
                {"block", "exact"}},
               {"objective", OptionSpec::Choice, "weight",
                "weight: ||W - Q(.)S||_F (paper); diag: weighted by diag(H); obs: by "
                "1/diag(H^-1) (for assign=gptq); full: tr(D H D^T)",
                {"weight", "diag", "obs", "full"}},
               {"assign", OptionSpec::Choice, "nearest",
                "final codes: nearest, or gptq (error feedback through H^-1 under the final S)",
                {"nearest", "gptq"}},
               {"lr", OptionSpec::Float, "0.03", "Adam learning rate (cosine decay to lr/10)"},
               {"damp", OptionSpec::Float, "0.01", "assign=gptq and objective=obs: damping as a fraction of mean diag(H)"}}},
     .order = 55,
     .layer = make});

}  // namespace lrq
