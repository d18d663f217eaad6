// Times the CUDA side of the linear-algebra seam at Llama-8B-like sizes and prints a markdown
// table: median of device-event times after warm-up, with the rate that bounds each op
// (GB/s for memory-bound ops, TFLOP/s for products). Inputs are random, never zeros.
//   bench_cuda_seam [--reps 10]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backend/memory.h"
#include "backend/ops.h"
#if defined(LRQ_WITH_CUDA)
#include "backend/cuda/cuda_common.h"
#endif

using namespace lrq;

#if defined(LRQ_WITH_CUDA)
namespace {

Tensor rand_gpu(Shape s, uint64_t seed, DType t = DType::F32) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d;
  Tensor x = Tensor::empty(std::move(s));
  for (int64_t i = 0; i < x.numel(); ++i) x.at<float>(i) = d(g);
  return x.to(t).to(Device::CUDA);
}

// Median milliseconds of `op` over `reps` runs; `reset` runs before each, outside the timing.
double median_ms(int reps, const std::function<void()>& op,
                 const std::function<void()>& reset = [] {}) {
  cudaEvent_t a, b;
  LRQ_CUDA_CHECK(cudaEventCreate(&a));
  LRQ_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 2; ++i) {  // warm-up: handles, kernels' first load, the memory pool
    reset();
    op();
  }
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    reset();
    LRQ_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
    LRQ_CUDA_CHECK(cudaEventRecord(a, cuda::stream()));
    op();
    LRQ_CUDA_CHECK(cudaEventRecord(b, cuda::stream()));
    LRQ_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    LRQ_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// amount: bytes for a "GB/s" rate, floating-point operations for "TFLOP/s", none for "".
void row(const std::string& op, const std::string& shape, double ms, double amount = 0,
         const std::string& unit = "") {
  const double per_s = amount / (ms * 1e-3);
  const double rate = unit == "GB/s" ? per_s * 1e-9 : per_s * 1e-12;
  if (unit.empty())
    std::printf("| %-22s | %-30s | %10.3f | - |\n", op.c_str(), shape.c_str(), ms);
  else
    std::printf("| %-22s | %-30s | %10.3f | %9.1f %s |\n", op.c_str(), shape.c_str(), ms, rate,
                unit.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 10;
  for (int i = 1; i + 1 < argc; ++i)
    if (!std::strcmp(argv[i], "--reps")) reps = std::max(1, std::atoi(argv[i + 1]));
  if (!backend::cuda_available()) {
    std::printf("no CUDA device visible\n");
    return 0;
  }
  std::printf("| op | shape | median ms | rate |\n| --- | --- | ---: | ---: |\n");
  {  // dense products
    const int64_t n = 4096;
    Tensor A = rand_gpu({n, n}, 1), B = rand_gpu({n, n}, 2), C = rand_gpu({n, n}, 3);
    row("gemm F32", "4096^3", median_ms(reps, [&] { ops::gemm(A, false, B, false, C); }),
        2.0 * n * n * n, "TFLOP/s");
    Tensor Ad = rand_gpu({2048, 2048}, 4, DType::F64), Bd = rand_gpu({2048, 2048}, 5, DType::F64),
           Cd = rand_gpu({2048, 2048}, 6, DType::F64);
    row("gemm F64", "2048^3", median_ms(reps, [&] { ops::gemm(Ad, false, Bd, false, Cd); }),
        2.0 * 2048 * 2048 * 2048, "TFLOP/s");
  }
  {  // linear: Llama-8B MLP up-projection, decode and prefill
    const int64_t in = 4096, out = 14336;
    for (DType wt : {DType::BF16, DType::F32}) {
      Tensor W = rand_gpu({out, in}, 7, wt);
      const std::string w = std::string(dtype_name(wt)) + " 14336x4096";
      for (int64_t T : {1, 4, 2048}) {
        Tensor x = rand_gpu({T, in}, 8), y = rand_gpu({T, out}, 9);
        const double ms = median_ms(reps, [&] { ops::linear(x, W, y); });
        if (T <= 4)
          row("linear T=" + std::to_string(T), w, ms, double(W.nbytes()), "GB/s");
        else
          row("linear T=" + std::to_string(T), w, ms, 2.0 * T * in * out, "TFLOP/s");
      }
    }
  }
  {  // attention: 32 query heads, 8 KV heads, head_dim 128
    const int64_t nh = 32, nkv = 8, hd = 128, ctx = 2048;
    Tensor K = rand_gpu({ctx, nkv * hd}, 10), V = rand_gpu({ctx, nkv * hd}, 11);
    Tensor q = rand_gpu({ctx, nh * hd}, 12), o = rand_gpu({ctx, nh * hd}, 13);
    const double flops = 4.0 * nh * hd * (double(ctx) * (ctx + 1) / 2);  // QK^T and PV, causal
    row("attention prefill", "T=2048 32/8 heads d=128",
        median_ms(reps, [&] { ops::attention(q, K, V, nh, nkv, hd, 0, o); }), flops, "TFLOP/s");
    Tensor q1 = q.rows(0, 1), o1 = o.rows(0, 1);
    row("attention decode", "pos0=2047 32/8 heads d=128",
        median_ms(reps, [&] { ops::attention(q1, K, V, nh, nkv, hd, ctx - 1, o1); }),
        2.0 * double(ctx) * nkv * hd * 4, "GB/s");
  }
  {  // memory-bound transformer pieces on a 2048 x 4096 activation
    Tensor x = rand_gpu({2048, 4096}, 14), y = rand_gpu({2048, 4096}, 15), w = rand_gpu({4096}, 16, DType::BF16);
    const double bytes = 2.0 * x.nbytes();  // read once, write once
    row("fwht_rows F32", "2048x4096 block 4096",
        median_ms(reps, [&] { ops::fwht_rows(x, 4096); }), bytes, "GB/s");
    row("fwht_rows F32", "2048x4096 block 128",
        median_ms(reps, [&] { ops::fwht_rows(x, 128); }), bytes, "GB/s");
    row("rmsnorm", "2048x4096", median_ms(reps, [&] { ops::rmsnorm(x, w, 1e-5f, y); }), bytes, "GB/s");
    row("rope", "2048x(32x128)", median_ms(reps, [&] { ops::rope(x, 32, 128, 0, 5e5f, false); }),
        bytes, "GB/s");
    row("silu_mul", "2048x4096", median_ms(reps, [&] { ops::silu_mul(x, y, y); }), 1.5 * bytes, "GB/s");
  }
  {  // factorizations (each includes cuSOLVER's status read-back, a device sync)
    for (DType t : {DType::F32, DType::F64}) {
      const std::string dn(dtype_name(t));
      const int64_t n = 4096;
      // X^T X of a 2n x n Gaussian X has condition number near 34: factorable in F32 too.
      Tensor X = rand_gpu({2 * n, n}, 17, t), H = rand_gpu({n, n}, 18, t), L = rand_gpu({n, n}, 19, t);
      ops::gemm(X, true, X, false, H);
      bool ok = true;
      const double ms = median_ms(reps, [&] { ok = ops::cholesky(L) && ok; }, [&] { L.copy_from(H); });
      row("cholesky " + dn + (ok ? "" : " (NOT SPD)"), "4096", ms, double(n) * n * n / 3, "TFLOP/s");
      const int64_t m = 2048;
      Tensor S = H.rows(0, m).reshape({m, n}), G = rand_gpu({m, m}, 20, t), w = rand_gpu({m}, 21, t),
             V = rand_gpu({m, m}, 22, t);
      ops::gemm(S, false, S, true, G);
      row("eigh " + dn, "2048 (values and vectors)", median_ms(3, [&] { ops::eigh(G, w, V); }));
      const int64_t k = 1024;
      Tensor A = rand_gpu({k, k}, 23, t), U = rand_gpu({k, k}, 24, t), Sv = rand_gpu({k}, 25, t),
             Vt = rand_gpu({k, k}, 26, t);
      row("svd " + dn, "1024x1024 (thin)", median_ms(3, [&] { ops::svd(A, U, Sv, Vt); }));
      Tensor Q = rand_gpu({n, 256}, 27, t), Q0 = rand_gpu({n, 256}, 27, t);
      row("orthonormalize " + dn, "4096x256",
          median_ms(reps, [&] { ops::orthonormalize_columns(Q); }, [&] { Q.copy_from(Q0); }));
    }
  }
  {  // GPTQ's factor at 7B sizes: potrf, then L^-1 by a triangular solve against I (what
     // quant_cuda does) or by cuSOLVER's trtri (n^3/3 instead of n^3, measured slower: not used)
    for (int64_t n : {4096, 11008}) {
      const std::string sz = std::to_string(n);
      Tensor X = rand_gpu({n + n / 2, n}, 28, DType::F64), H = rand_gpu({n, n}, 29, DType::F64),
             L = rand_gpu({n, n}, 30, DType::F64), B = rand_gpu({n, n}, 31, DType::F64);
      ops::gemm(X, true, X, false, H);
      X = Tensor();
      bool ok = true;
      const double chol_ms =
          median_ms(3, [&] { ok = ops::cholesky(L) && ok; }, [&] { L.copy_from(H); });
      row("cholesky F64" + std::string(ok ? "" : " (NOT SPD)"), sz, chol_ms,
          double(n) * n * n / 3, "TFLOP/s");
      row("trsm_lower F64 n x n", sz, median_ms(3, [&] { ops::trsm_lower(L, false, B); }),
          double(n) * n * n, "TFLOP/s");
      // Row-major lower L is column-major upper.
      size_t dev_bytes = 0, host_bytes = 0;
      LRQ_CUSOLVER_CHECK(cusolverDnXtrtri_bufferSize(cuda::cusolver(), CUBLAS_FILL_MODE_UPPER,
                                                     CUBLAS_DIAG_NON_UNIT, n, CUDA_R_64F,
                                                     B.raw(), n, &dev_bytes, &host_bytes));
      cuda::DeviceScratch work(std::max<size_t>(dev_bytes, 1)), info(sizeof(int));
      std::vector<char> host(std::max<size_t>(host_bytes, 1));
      row("cuSOLVER trtri F64", sz,
          median_ms(3,
                    [&] {
                      LRQ_CUSOLVER_CHECK(cusolverDnXtrtri(
                          cuda::cusolver(), CUBLAS_FILL_MODE_UPPER, CUBLAS_DIAG_NON_UNIT, n,
                          CUDA_R_64F, B.raw(), n, work.as<void>(), dev_bytes, host.data(),
                          host_bytes, info.as<int>()));
                    },
                    [&] { B.copy_from(L); }),
          double(n) * n * n / 3, "TFLOP/s");
    }
  }
  return 0;
}
#else
int main() {
  std::printf("this build has no CUDA backend\n");
  return 0;
}
#endif
