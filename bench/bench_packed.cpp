// Packed low-bit GEMV (T = 1) against the machine's memory bandwidth.
//
// For each shape and bit width (affine grid, group 128): the fused packed kernel (AVX2 and
// scalar), dequantize into a preallocated fp32 matrix then gemv, and a dense fp32 gemv on the
// pre-dequantized matrix.
// GB/s counts the bytes a GEMV must move: storage_bytes + x + y (fp32 gemv: its own matrix).
// Enough copies of each packed matrix are cycled through that the working set exceeds the last
// level cache, so the numbers are DRAM-bound, as for a real model's sequence of layers.
// Bandwidth references: a STREAM-style triad a = b + s c and a large memcpy.
// Then LoRDS (element-wise low-rank scales, rank matched to block 128) against the packed GEMV at
// the same bits: the cost of forming s_ij = B_i . A_j in the decode (r FMAs per weight).
// Usage: bench_packed [min_seconds_per_case (default 0.5)]. Prints a markdown table; times are
// the fastest call.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "backend/ops.h"
#include "formats/lords_linear.h"
#include "formats/packed_weight.h"
#include "quant/kernels/nf_codebook.h"
#include "quant/kernels/rtn_grid.h"

using namespace lrq;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kWorkingSetBytes = size_t(256) << 20;  // > 8x the 32 MiB L3 of the dev box

// Fastest seconds per call of fn(i) over at least min_s seconds (and 5 calls), after a warm-up.
// The minimum, not the median: on a shared 2-core box, a run whose thread was preempted by
// another process measures the scheduler, and OpenMP's static split waits for the slowest.
double time_it(const std::function<void(int)>& fn, double min_s) {
  fn(0);
  std::vector<double> t;
  const auto start = Clock::now();
  for (int i = 1; t.size() < 5 || std::chrono::duration<double>(Clock::now() - start).count() < min_s; ++i) {
    const auto a = Clock::now();
    fn(i);
    t.push_back(std::chrono::duration<double>(Clock::now() - a).count());
  }
  return *std::min_element(t.begin(), t.end());
}

Tensor random_weight(int64_t rows, int64_t cols, uint64_t seed) {
  Tensor w = Tensor::empty({rows, cols});
  float* p = w.data<float>();
#pragma omp parallel
  {
    std::mt19937_64 g(seed + uint64_t(omp_get_thread_num()));
    std::normal_distribution<float> d(0.f, 0.02f);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < rows * cols; ++i) p[i] = d(g);
  }
  return w;
}

}  // namespace

int main(int argc, char** argv) {
  const double min_s = argc > 1 ? std::atof(argv[1]) : 0.5;

  // Bandwidth references.
  const size_t n = kWorkingSetBytes / sizeof(float) / 2;
  std::vector<float> a(n), b(n, 1.f), c(n, 2.f);
  const double triad_s = time_it([&](int) {
    float* pa = a.data();
    const float* pb = b.data();
    const float* pc = c.data();
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) pa[i] = pb[i] + 3.f * pc[i];
  }, min_s);
  const double triad_gbs = 3.0 * double(n) * 4 / triad_s / 1e9;
  const double memcpy_s = time_it([&](int) {
    const size_t half = n / 2;
#pragma omp parallel for schedule(static)
    for (int part = 0; part < 2; ++part)
      std::memcpy(a.data() + part * half, b.data() + part * half, half * sizeof(float));
  }, min_s);
  const double memcpy_gbs = 2.0 * double(n) * 4 / memcpy_s / 1e9;
  std::printf("threads: %d, triad %.1f GB/s, memcpy %.1f GB/s (read + write bytes)\n\n",
              omp_get_max_threads(), triad_gbs, memcpy_gbs);
  std::printf("| W (out x in) | bits | packed MiB | bpw | packed GEMV ms | GB/s | %% of triad | "
              "scalar GEMV ms | dequant+gemv ms | fp32 gemv ms | fp32 GB/s |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");

  const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}};
  for (auto [rows, cols] : shapes) {
    const Tensor W = random_weight(rows, cols, uint64_t(rows));
    const Tensor x = random_weight(1, cols, 7), y = Tensor::empty({1, rows});
    for (int bits : {4, 3, 2}) {
      RtnOptions opt;
      opt.bits = bits;
      opt.group = 128;
      const PackedWeight q = rtn_quantize(W, opt);
      const size_t bytes = q.storage_bytes() + size_t(cols + rows) * 4;
      const int copies = int(std::max<size_t>(1, kWorkingSetBytes / q.storage_bytes()));
      std::vector<PackedWeight> qs;
      for (int i = 0; i < copies; ++i)
        qs.push_back(PackedWeight::from_tensors(q.codes().clone(), q.scales().clone(),
                                                q.offsets().clone(), Tensor(), bits, 128,
                                                q.format(), "bench"));
      auto packed = [&](int i) { qs[size_t(i % copies)].matmul(x, y); };
      const double t_packed = time_it(packed, min_s);
      ops::packed_force_scalar(true);
      const double t_scalar = time_it(packed, min_s);
      ops::packed_force_scalar(false);
      const Tensor dense = q.dequantize();
      const double t_deq = time_it([&](int i) {
        qs[size_t(i % copies)].dequantize_rows(0, rows, dense.data<float>());
        ops::gemv(dense, false, x.reshape({cols}), y.reshape({rows}));
      }, min_s);
      const double t_dense = time_it(
          [&](int) { ops::gemv(dense, false, x.reshape({cols}), y.reshape({rows})); }, min_s);
      const double gbs = double(bytes) / t_packed / 1e9;
      std::printf("| %ldx%ld | %d | %.2f | %.3f | %.3f | %.1f | %.0f%% | %.3f | %.2f | %.2f | %.1f |\n",
                  long(rows), long(cols), bits, double(q.storage_bytes()) / (1 << 20),
                  q.bits_per_weight(), t_packed * 1e3, gbs, 100 * gbs / triad_gbs, t_scalar * 1e3,
                  t_deq * 1e3, t_dense * 1e3,
                  double(dense.nbytes() + size_t(cols + rows) * 4) / t_dense / 1e9);
      std::fflush(stdout);
    }
  }

  std::printf("\n| W (out x in) | bits | rank | LoRDS GEMV ms | packed w{b}g128 GEMV ms | ratio | LoRDS T=8 ms |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (auto [rows, cols] : shapes) {
    const Tensor W = random_weight(rows, cols, uint64_t(rows));
    const Tensor x = random_weight(1, cols, 7), y = Tensor::empty({1, rows});
    const Tensor x8 = random_weight(8, cols, 8), y8 = Tensor::empty({8, rows});
    const int64_t r = lords_matched_rank(rows, cols, 128);
    for (int bits : {4, 3}) {
      std::mt19937_64 g(static_cast<uint64_t>(bits));
      Tensor codes = Tensor::empty({rows, cols}, DType::U8);
      for (int64_t e = 0; e < codes.numel(); ++e) codes.data<uint8_t>()[e] = uint8_t(g() % (1u << bits));
      const auto l = LordsLinear::pack(codes, random_weight(rows, r, 3), random_weight(r, cols, 4),
                                       nf_codebook(bits), bits);
      const int copies = int(std::max<size_t>(1, kWorkingSetBytes / l->storage_bytes()));
      std::vector<std::unique_ptr<Linear>> ls;
      const ops::Lords& v = l->view();
      for (int i = 0; i < copies; ++i)  // copies, so the cycle runs from DRAM
        ls.push_back(std::make_unique<LordsLinear>(
            ops::Lords{v.codes.clone(), v.codebook.clone(), v.B.clone(), v.A.clone(), bits}, "bench"));
      const double t_l = time_it([&](int i) { ls[size_t(i % copies)]->forward(x, y); }, min_s);
      const double t_l8 = time_it([&](int i) { ls[size_t(i % copies)]->forward(x8, y8); }, min_s);
      RtnOptions opt;
      opt.bits = bits;
      opt.group = 128;
      const PackedWeight q = rtn_quantize(W, opt);
      const int pc = int(std::max<size_t>(1, kWorkingSetBytes / q.storage_bytes()));
      std::vector<PackedWeight> qs;
      for (int i = 0; i < pc; ++i)
        qs.push_back(PackedWeight::from_tensors(q.codes().clone(), q.scales().clone(),
                                                q.offsets().clone(), Tensor(), bits, 128,
                                                q.format(), "bench"));
      const double t_p = time_it([&](int i) { qs[size_t(i % pc)].matmul(x, y); }, min_s);
      std::printf("| %ldx%ld | %d | %ld | %.3f | %.3f | %.2f | %.3f |\n", long(rows), long(cols), bits,
                  long(r), t_l * 1e3, t_p * 1e3, t_l / t_p, t_l8 * 1e3);
      std::fflush(stdout);
    }
  }
  return 0;
}
