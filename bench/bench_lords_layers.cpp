// LoRDS refinement on a checkpoint's projections without calibration (the data-free objective):
// the relative weight error ||W - What||_F / ||W||_F of NF at the matched block size, of the
// LoRDS init and of the refined result, and the seconds taken, per projection. For choosing the
// refinement's defaults (learning rate, steps) quickly on the 2-core box.
//   bench_lords_layers MODEL RECIPE [BLOCKS...]   e.g. ../shared/models/lab-m lords:b3,lr=0.003 0 3
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "formats/lords_linear.h"
#include "io/checkpoint.h"
#include "quant/kernels/lords_refine.h"
#include "quant/kernels/nf_codebook.h"
#include "quant/recipe.h"

using namespace lrq;

int main(int argc, char** argv) try {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL RECIPE [BLOCKS...]\n", argv[0]);
    return 2;
  }
  const Checkpoint ck = load_checkpoint(argv[1]);
  const Stage s = parse_recipe(argv[2]).base();
  LordsOptions o;
  o.bits = int(s.i("bits"));
  o.blk = s.i("blk");
  o.rank = s.i("rank");
  o.steps = int(s.i("steps"));
  o.lr = s.f("lr");
  o.init = s.s("init") == "exact" ? LordsOptions::Init::Exact : LordsOptions::Init::Block;
  o.codebook = s.s("codebook") == "int" ? LordsOptions::Codebook::Int : LordsOptions::Codebook::Nf;
  std::vector<int> blocks;
  for (int i = 3; i < argc; ++i) blocks.push_back(std::stoi(argv[i]));
  if (blocks.empty()) blocks = {0};
  const char* projs[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                         "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  double sum_nf = 0, sum_init = 0, sum_fin = 0;
  int count = 0;
  std::printf("%-32s %5s %8s %8s %8s %6s %6s\n", "layer", "rank", "nf", "init", "refined", "best", "sec");
  for (int b : blocks)
    for (const char* p : projs) {
      const std::string name = "model.layers." + std::to_string(b) + "." + p + ".weight";
      const Tensor W = ck.get(name).to(DType::F32);
      const double wn = std::sqrt(ops::norm_stats(W).sumsq);
      NfOptions nf;
      nf.bits = o.bits;
      nf.block = o.blk;
      Tensor D = Tensor::empty(W.shape());
      const Tensor Wnf = nf_quantize(W, nf).dequantize();
      for (int64_t e = 0; e < D.numel(); ++e) D.data<float>()[e] = W.data<float>()[e] - Wnf.data<float>()[e];
      const double e_nf = std::sqrt(ops::norm_stats(D).sumsq) / wn;
      const auto t0 = std::chrono::steady_clock::now();
      const LordsResult r = lords_quantize(W, Tensor(), o);
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double e_init = std::sqrt(r.loss_init) / wn, e_fin = std::sqrt(r.loss) / wn;
      std::printf("%-32s %5ld %8.5f %8.5f %8.5f %6d %6.2f\n", (std::to_string(b) + "." + p).c_str(),
                  long(r.rank), e_nf, e_init, e_fin, r.best_step, sec);
      sum_nf += e_nf;
      sum_init += e_init;
      sum_fin += e_fin;
      ++count;
    }
  std::printf("mean rel weight error: nf %.5f  init %.5f  refined %.5f\n", sum_nf / count,
              sum_init / count, sum_fin / count);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "%s\n", e.what());
  return 1;
}
