// LoRDS kernels on the GPU at the Llama-7B projection shapes (4096x4096, 11008x4096, 4096x11008,
// out x in), 4 and 3 bits at the rank matched to block-128 scales:
//  - decode (T = 1 and 8): the fused GEMV (S formed on the tensor cores, never stored) against
//    our packed w{b}g128 kernel at the same bits and cuBLAS with F16 weights; weights cycled
//    through >= 4x the L2 so every call reads them from DRAM (bench_gpu_util.h);
//  - prefill (T = 2048): by default a BF16 dequantization (S tiles on the tensor cores) + one
//    cuBLAS BF16 GEMM per row slab; exact: F32 slabs + cuBLAS with BF16 tensor cores
//    (set_bf16_matmul) and in F32; against cuBLAS with BF16 weights and activations.
// Goals (issue 21): decode within 1.25x of the packed kernel at the same bits, prefill within
// 1.5x of BF16 cuBLAS. Prints one markdown table per part.
//   bench_lords_gpu [--reps N]
#include <cmath>
#include <cstdio>
#include <random>
#include <string>

#include "backend/memory.h"
#include "backend/ops.h"
#include "formats/lords_linear.h"
#include "formats/packed_linear.h"
#include "quant/kernels/nf_codebook.h"
#include "quant/kernels/rtn_grid.h"
#if defined(LRQ_WITH_CUDA)
#include "backend/cuda/cuda_ops.h"
#include "bench_gpu_util.h"
#endif

using namespace lrq;

#if defined(LRQ_WITH_CUDA)
namespace {

using bench::copies_for;
using bench::per_call_ms;
using bench::randn;

struct Shape2 {
  int64_t out, in;
};
constexpr Shape2 kShapes[] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};

std::unique_ptr<LordsLinear> lords_layer(int64_t m, int64_t n, int bits, int64_t rank) {
  std::mt19937_64 g(uint64_t(m * 31 + n + bits));
  Tensor c = Tensor::empty({m, n}, DType::U8);
  for (int64_t e = 0; e < c.numel(); ++e) c.data<uint8_t>()[e] = uint8_t(g() % (1u << bits));
  // Scales around 0.01 (a 0.02-sd weight's block scale at 4 bits), factors of equal size.
  const double sd = std::sqrt(0.01 / double(rank));
  return LordsLinear::pack(c, randn({m, rank}, 5, float(std::sqrt(sd))),
                           randn({rank, n}, 6, float(std::sqrt(sd))), nf_codebook(bits), bits);
}

void row(const std::string& what, double ms, double base_ms, const char* base_name) {
  std::printf("| %-40s | %9.2f | %s%.2fx |\n", what.c_str(), ms * 1e3, base_name, ms / base_ms);
  std::fflush(stdout);
}

void decode_section(int reps) {
  std::printf("\n### Decode (us per call, weights from DRAM)\n\n");
  std::printf("| kernel | us/call | ratio |\n| --- | ---: | ---: |\n");
  for (const Shape2 sh : kShapes) {
    const std::string shape = std::to_string(sh.out) + "x" + std::to_string(sh.in);
    const Tensor Wf = randn({sh.out, sh.in}, 3, 0.02f);
    const double cublas_ms = bench::cublas_f16_gemv_ms(Wf, reps);
    std::printf("| cuBLAS f16 %-29s | %9.2f | - |\n", shape.c_str(), cublas_ms * 1e3);
    for (int bits : {4, 3}) {
      const int64_t rank = lords_matched_rank(sh.out, sh.in, 128);
      RtnOptions o;
      o.bits = bits;
      o.group = 128;
      const PackedLinear q(rtn_quantize(Wf, o), InputTransform{}, {});
      const auto l = lords_layer(sh.out, sh.in, bits, rank);
      for (int64_t T : {1, 8}) {
        const Tensor x = randn({T, sh.in}, 8).to(Device::CUDA);
        Tensor y = Tensor::empty({T, sh.out}, DType::F32, Device::CUDA);
        auto time_layer = [&](const Linear& layer) {
          const int n = copies_for(double(layer.storage_bytes()));
          std::vector<std::unique_ptr<Linear>> ls;
          for (int i = 0; i < n; ++i) ls.push_back(layer.to(Device::CUDA));
          return per_call_ms(n, reps, [&](int i) { ls[size_t(i % n)]->forward(x, y); });
        };
        const std::string tag = " " + shape + " T=" + std::to_string(T);
        const double pm = time_layer(q);
        std::printf("| %-40s | %9.2f | %.2fx cuBLAS |\n", (q.describe() + tag).c_str(), pm * 1e3,
                    pm / cublas_ms);
        const double lm = time_layer(*l);
        row("lords b" + std::to_string(bits) + " r" + std::to_string(rank) + tag, lm, pm,
            "packed ");
      }
    }
  }
}

void prefill_section(int reps) {
  const int64_t T = 2048;
  std::printf("\n### Prefill T = %lld (us per call)\n\n", (long long)T);
  std::printf("| kernel | us/call | ratio |\n| --- | ---: | ---: |\n");
  for (const Shape2 sh : kShapes) {
    const std::string shape = std::to_string(sh.out) + "x" + std::to_string(sh.in);
    const Tensor x = randn({T, sh.in}, 9).to(Device::CUDA);
    Tensor y = Tensor::empty({T, sh.out}, DType::F32, Device::CUDA);
    double bf16_ms = 0;
    {
      const Tensor Wb = randn({sh.out, sh.in}, 3, 0.02f).to(DType::BF16).to(Device::CUDA);
      Tensor xb = Tensor::empty({T, sh.in}, DType::BF16, Device::CUDA);
      cuda::to_bf16(x.data<float>(), xb.data<uint16_t>(), T * sh.in);
      bf16_ms = per_call_ms(1, reps, [&](int) {
        cuda::gemm_bf16(true, false, sh.out, T, sh.in, Wb.data<uint16_t>(), sh.in,
                        xb.data<uint16_t>(), sh.in, 0.f, y.data<float>(), sh.out);
      });
      std::printf("| cuBLAS bf16 %-28s | %9.2f | - |\n", shape.c_str(), bf16_ms * 1e3);
    }
    for (int bits : {4, 3}) {
      const int64_t rank = lords_matched_rank(sh.out, sh.in, 128);
      const auto l = lords_layer(sh.out, sh.in, bits, rank)->to(Device::CUDA);
      const std::string name = "lords b" + std::to_string(bits) + " r" + std::to_string(rank) +
                               " " + shape;
      const bool was_exact = cuda::set_exact_kernels(false);
      const double md = per_call_ms(1, reps, [&](int) { l->forward(x, y); });
      cuda::set_exact_kernels(true);
      const bool was = cuda::set_bf16_matmul(true);
      const double mb = per_call_ms(1, reps, [&](int) { l->forward(x, y); });
      cuda::set_bf16_matmul(false);
      const double mf = per_call_ms(1, reps, [&](int) { l->forward(x, y); });
      cuda::set_bf16_matmul(was);
      cuda::set_exact_kernels(was_exact);
      row(name + " (default: bf16 dequant)", md, bf16_ms, "");
      row(name + " (exact, bf16 slabs)", mb, bf16_ms, "");
      row(name + " (exact, f32)", mf, bf16_ms, "");
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) reps = std::max(3, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "bench_lords_gpu: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  return bench::run_gpu_bench("bench_lords_gpu", [&](const cudaDeviceProp& prop) {
    std::printf("GPU: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    decode_section(reps);
    prefill_section(reps);
  });
}
#else
int main() {
  std::printf("bench_lords_gpu: this build has no CUDA backend\n");
  return 0;
}
#endif
