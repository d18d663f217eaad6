// Low-rank extraction on the GPU against cuSOLVER's SVD drivers, on matrices with a known
// spectrum: A = U diag(s) V^T with U, V orthonormal (Householder QR of Gaussian matrices on the
// GPU) and s_i = 1/i (i = 1..min(m, n)), a slowly decaying spectrum like a weight matrix's and
// a hard one for sketches (no gap). For each size and rank r: median device-event time after
// warm-up, and ||A - L R||_F divided by the optimal rank-r residual sqrt(sum_{i>r} s_i^2).
// cuSOLVER's gesvd and gesvdj compute the full SVD whatever r (timed once per matrix);
// gesvda (Gram-based, approximate) takes r. Prints a markdown table last.
//   bench_lowrank_gpu [--reps 7] [--peer-reps 2] [--no-peers] [--sizes 4096x4096,11008x4096]
//                     [--ranks 16,64,128] [--only SPEC] (--only: that spec in TF32, no peers;
//                     for profiling one configuration)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "backend/memory.h"
#include "backend/ops.h"
#include "lowrank/lowrank.h"
#if defined(LRQ_WITH_CUDA)
#include <cuda_profiler_api.h>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"
#endif

using namespace lrq;

#if defined(LRQ_WITH_CUDA)
namespace {

struct Problem {
  int64_t m = 0, n = 0;
  Tensor A;               // m x n row-major F32 on the GPU
  std::vector<double> s;  // its exact singular values, descending
  double optimal(int r) const {
    double t = 0;
    for (size_t i = size_t(r); i < s.size(); ++i) t += s[i] * s[i];
    return std::sqrt(t);
  }
};

Problem build(int64_t m, int64_t n, uint64_t seed) {
  Problem p;
  p.m = m, p.n = n;
  const int64_t k = std::min(m, n);
  Tensor U = Tensor::empty({m, k}, DType::F32, Device::CUDA), V = Tensor::empty({n, k}, DType::F32, Device::CUDA);
  ops::fill_gaussian(U, seed);
  ops::fill_gaussian(V, seed + 1);
  ops::orthonormalize_columns(U);
  ops::orthonormalize_columns(V);
  Tensor sv = Tensor::empty({k});
  for (int64_t i = 0; i < k; ++i) {
    p.s.push_back(1.0 / double(i + 1));
    sv.at<float>(i) = float(p.s.back());
  }
  ops::scale(U, 1, {}, sv.to(Device::CUDA));
  p.A = Tensor::empty({m, n}, DType::F32, Device::CUDA);
  ops::gemm(U, false, V, true, p.A);
  return p;
}

// Median milliseconds of `op` (device events on our stream) after `warm` unmeasured runs.
double median_ms(int warm, int reps, const std::function<void()>& op) {
  cudaEvent_t a, b;
  LRQ_CUDA_CHECK(cudaEventCreate(&a));
  LRQ_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < warm; ++i) op();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    LRQ_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
    LRQ_CUDA_CHECK(cudaEventRecord(a, cuda::stream()));
    op();
    LRQ_CUDA_CHECK(cudaEventRecord(b, cuda::stream()));
    LRQ_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    LRQ_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double fro(const Tensor& E) { return std::sqrt(ops::norm_stats(E).sumsq); }

// ||A - L R||_F, in full F32 whatever the TF32 setting of the timed run.
double residual(const Problem& p, const Tensor& L, const Tensor& R) {
  cuda::set_allow_tf32(false);
  Tensor E = p.A.clone();
  if (L.dim(1) > 0) ops::gemm(L, false, R, false, E, -1, 1);
  return fro(E);
}

struct Row {
  std::string size, method, prec;
  int rank;
  double ms, ratio;
  std::string note;
};
std::vector<Row> g_rows;

void add(const Problem& p, int r, std::string method, std::string prec, double ms, double res,
         std::string note = "") {
  const std::string size = std::to_string(p.m) + "x" + std::to_string(p.n);
  g_rows.push_back({size, std::move(method), std::move(prec), r, ms, res / p.optimal(r), std::move(note)});
  std::fprintf(stderr, "%s r=%d %-28s %s %9.3f ms  residual/optimal %.5f %s\n", size.c_str(), r,
               g_rows.back().method.c_str(), g_rows.back().prec.c_str(), ms, g_rows.back().ratio,
               g_rows.back().note.c_str());
}

// ---------------------------------------------------------------- cuSOLVER peers (F32)
// cuSOLVER is column-major and its drivers want rows >= columns: Mc is A or A^T laid out as a
// column-major tall matrix (mm x nn, mm >= nn); both have A's singular values and residuals.
struct Tall {
  int mm, nn;
  Tensor Mc;  // the column-major buffer (a row-major nn x mm tensor)
};

Tall tall_of(const Problem& p) {
  Tall t;
  if (p.m >= p.n) {
    t.mm = int(p.m), t.nn = int(p.n);
    t.Mc = Tensor::empty({p.n, p.m}, DType::F32, Device::CUDA);
    ops::transpose(p.A, t.Mc);  // row-major A^T = column-major A
  } else {
    t.mm = int(p.n), t.nn = int(p.m);
    t.Mc = p.A;  // row-major A = column-major A^T, already tall
  }
  return t;
}

// ||Mc - U_r diag(S_r) op(W)||_F: W is V^T (nn x nn, rows = right vectors; w_is_vt) or V
// (nn x >= r, columns = right vectors), ldw = nn.
double tall_residual(const Tall& t, const float* U, int ldu, const float* S, const float* W,
                     bool w_is_vt, int r) {
  cuda::set_allow_tf32(false);
  Tensor E = t.Mc.clone(), US = Tensor::empty({r, t.mm}, DType::F32, Device::CUDA);
  if (r == 0) return fro(E);
  LRQ_CUBLAS_CHECK(cublasSdgmm(cuda::cublas(), CUBLAS_SIDE_RIGHT, t.mm, r, U, ldu, S, 1,
                               US.data<float>(), t.mm));
  const float minus = -1, one = 1;
  LRQ_CUBLAS_CHECK(cublasSgemm(cuda::cublas(), CUBLAS_OP_N, w_is_vt ? CUBLAS_OP_N : CUBLAS_OP_T,
                               t.mm, t.nn, r, &minus, US.data<float>(), t.mm, W, t.nn, &one,
                               E.data<float>(), t.mm));
  return fro(E);
}

void check_info(const cuda::DeviceScratch& info, const char* what) {
  if (int e = cuda::read_info(info.as<int>()); e != 0)
    fail(what, "cuSOLVER info {}", e);
}

void peer_gesvd(const Problem& p, const Tall& t, const std::vector<int>& ranks, int warm, int reps) {
  const int mm = t.mm, nn = t.nn;
  Tensor a = Tensor::empty({nn, mm}, DType::F32, Device::CUDA), S = Tensor::empty({nn}, DType::F32, Device::CUDA),
         U = Tensor::empty({nn, mm}, DType::F32, Device::CUDA), VT = Tensor::empty({nn, nn}, DType::F32, Device::CUDA);
  int lw = 0;
  LRQ_CUSOLVER_CHECK(cusolverDnSgesvd_bufferSize(cuda::cusolver(), mm, nn, &lw));
  cuda::DeviceScratch work(size_t(lw) * 4), rwork(size_t(nn) * 4), info(sizeof(int));
  const double ms = median_ms(warm, reps, [&] {
    a.copy_from(t.Mc);  // gesvd destroys its input
    LRQ_CUSOLVER_CHECK(cusolverDnSgesvd(cuda::cusolver(), 'S', 'S', mm, nn, a.data<float>(), mm,
                                        S.data<float>(), U.data<float>(), mm, VT.data<float>(), nn,
                                        work.as<float>(), lw, rwork.as<float>(), info.as<int>()));
  });
  check_info(info, "gesvd");
  for (int r : ranks)
    add(p, r, "cusolver gesvd (full SVD)", "F32", ms,
        tall_residual(t, U.data<float>(), mm, S.data<float>(), VT.data<float>(), true, r));
}

void peer_gesvdj(const Problem& p, const Tall& t, const std::vector<int>& ranks, int warm, int reps) {
  const int mm = t.mm, nn = t.nn;
  Tensor a = Tensor::empty({nn, mm}, DType::F32, Device::CUDA), S = Tensor::empty({nn}, DType::F32, Device::CUDA),
         U = Tensor::empty({nn, mm}, DType::F32, Device::CUDA), V = Tensor::empty({nn, nn}, DType::F32, Device::CUDA);
  gesvdjInfo_t params;
  LRQ_CUSOLVER_CHECK(cusolverDnCreateGesvdjInfo(&params));  // default tolerance and sweeps
  int lw = 0;
  LRQ_CUSOLVER_CHECK(cusolverDnSgesvdj_bufferSize(cuda::cusolver(), CUSOLVER_EIG_MODE_VECTOR, 1, mm, nn,
                                                  a.data<float>(), mm, S.data<float>(), U.data<float>(),
                                                  mm, V.data<float>(), nn, &lw, params));
  cuda::DeviceScratch work(size_t(lw) * 4), info(sizeof(int));
  const double ms = median_ms(warm, reps, [&] {
    a.copy_from(t.Mc);
    LRQ_CUSOLVER_CHECK(cusolverDnSgesvdj(cuda::cusolver(), CUSOLVER_EIG_MODE_VECTOR, 1, mm, nn,
                                         a.data<float>(), mm, S.data<float>(), U.data<float>(), mm,
                                         V.data<float>(), nn, work.as<float>(), lw, info.as<int>(),
                                         params));
  });
  const int e = cuda::read_info(info.as<int>());
  cusolverDnDestroyGesvdjInfo(params);
  for (int r : ranks)
    add(p, r, "cusolver gesvdj (full SVD)", "F32", ms,
        tall_residual(t, U.data<float>(), mm, S.data<float>(), V.data<float>(), false, r),
        e ? "info " + std::to_string(e) : "");
}

void peer_gesvda(const Problem& p, const Tall& t, int r, int warm, int reps) {
  const int mm = t.mm, nn = t.nn;
  Tensor S = Tensor::empty({r}, DType::F32, Device::CUDA), U = Tensor::empty({r, mm}, DType::F32, Device::CUDA),
         V = Tensor::empty({r, nn}, DType::F32, Device::CUDA);
  int lw = 0;
  const float* A = t.Mc.data<float>();
  LRQ_CUSOLVER_CHECK(cusolverDnSgesvdaStridedBatched_bufferSize(
      cuda::cusolver(), CUSOLVER_EIG_MODE_VECTOR, r, mm, nn, A, mm, int64_t(mm) * nn, S.data<float>(), r,
      U.data<float>(), mm, int64_t(mm) * r, V.data<float>(), nn, int64_t(nn) * r, &lw, 1));
  cuda::DeviceScratch work(size_t(lw) * 4), info(sizeof(int));
  double rnrm = 0;
  const double ms = median_ms(warm, reps, [&] {
    LRQ_CUSOLVER_CHECK(cusolverDnSgesvdaStridedBatched(
        cuda::cusolver(), CUSOLVER_EIG_MODE_VECTOR, r, mm, nn, A, mm, int64_t(mm) * nn, S.data<float>(), r,
        U.data<float>(), mm, int64_t(mm) * r, V.data<float>(), nn, int64_t(nn) * r, work.as<float>(), lw,
        info.as<int>(), &rnrm, 1));
  });
  const int e = cuda::read_info(info.as<int>());
  add(p, r, "cusolver gesvda (rank r)", "F32", ms,
      tall_residual(t, U.data<float>(), mm, S.data<float>(), V.data<float>(), false, r),
      e ? "info " + std::to_string(e) : "");
}

// Runs a peer, turning a failure into a table note instead of ending the benchmark.
void guarded(const Problem& p, const std::vector<int>& ranks, const char* name,
             const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    for (int r : ranks) {
      const std::string size = std::to_string(p.m) + "x" + std::to_string(p.n);
      g_rows.push_back({size, name, "F32", r, NAN, NAN, std::string("failed: ") + e.what()});
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 7, peer_reps = 2;
  bool peers = true;
  std::vector<std::pair<int64_t, int64_t>> sizes{{4096, 4096}, {11008, 4096}};
  std::vector<int> ranks{16, 64, 128};
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--peer-reps") && i + 1 < argc) peer_reps = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--no-peers")) peers = false;
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i], peers = false;
    else if (!std::strcmp(argv[i], "--ranks") && i + 1 < argc) {
      ranks.clear();
      for (const char* c = argv[++i]; *c;) {
        char* end = nullptr;
        const long r = std::strtol(c, &end, 10);
        if (end == c || r < 1) break;
        ranks.push_back(int(r));
        c = *end == ',' ? end + 1 : end;
      }
    }
    else if (!std::strcmp(argv[i], "--sizes") && i + 1 < argc) {
      sizes.clear();
      std::string s = argv[++i];
      for (size_t at = 0; at <= s.size();) {
        const size_t c = std::min(s.find(',', at), s.size());
        long long m = 0, n = 0;
        if (std::sscanf(s.substr(at, c - at).c_str(), "%lldx%lld", &m, &n) == 2) sizes.push_back({m, n});
        at = c + 1;
      }
    } else {
      std::fprintf(stderr, "usage: bench_lowrank_gpu [--reps N] [--peer-reps N] [--no-peers] [--sizes MxN,...] "
                           "[--ranks R,...] [--only SPEC]\n");
      return 2;
    }
  }
  if (!backend::cuda_available()) {
    std::fprintf(stderr, "bench_lowrank_gpu: no CUDA device visible\n");
    return 1;
  }
  if (ranks.empty()) {
    std::fprintf(stderr, "bench_lowrank_gpu: --ranks needs positive integers\n");
    return 2;
  }
  // Our methods: spec, TF32 for the products with A (Gram matrices and Cholesky QR stay F64).
  std::vector<std::pair<std::string, bool>> ours{
      {"rsvd:p=10,q=2", false}, {"rsvd:p=10,q=2", true},   {"r1:it=2", false},
      {"block:b=16,p=8,it=2", false}, {"block:b=16,p=8,it=2", true},
      {"block:b=32,p=8,it=2", false}, {"block:b=32,p=8,it=2", true},
      {"block:b=64,p=8,it=1", true},  {"block:b=64,p=8,it=2", true}};
  if (!only.empty()) ours = {{only, true}};
  bool peers_warm = false;
  for (auto [m, n] : sizes) {
    cuda::set_allow_tf32(false);
    const Problem p = build(m, n, 2024);
    std::fprintf(stderr, "built %lldx%lld, ||A||_F = %.4f (exact %.4f)\n", (long long)m, (long long)n,
                 fro(p.A), p.optimal(0));
    for (int r : ranks)
      for (const auto& [spec, tf32] : ours) {
        const LowRankSpec ls = LowRankSpec::parse(spec);
        LowRank lr;
        const double ms = median_ms(2, reps, [&] {
          cuda::set_allow_tf32(tf32);
          lr = low_rank(p.A, r, ls);
        });
        add(p, r, spec, tf32 ? "TF32" : "F32", ms, residual(p, lr.L, lr.R));
        if (!only.empty()) {  // one more run inside the profiler's window (ncu --profile-from-start off)
          cuda::set_allow_tf32(tf32);  // residual() turned it off
          LRQ_CUDA_CHECK(cudaDeviceSynchronize());
          LRQ_CUDA_CHECK(cudaProfilerStart());
          lr = low_rank(p.A, r, ls);
          LRQ_CUDA_CHECK(cudaDeviceSynchronize());
          LRQ_CUDA_CHECK(cudaProfilerStop());
        }
      }
    // Ours first: if the slow full-SVD drivers hit the script's time limit, these are logged.
    // Full-SVD drivers are slow at these sizes: one warm-up on the first matrix only.
    const int pw = peers_warm ? 0 : 1, pr = m * n > 4096LL * 4096 ? 1 : peer_reps;
    if (peers) {
      const Tall t = tall_of(p);
      guarded(p, ranks, "cusolver gesvd (full SVD)", [&] { peer_gesvd(p, t, ranks, pw, pr); });
      guarded(p, ranks, "cusolver gesvdj (full SVD)", [&] { peer_gesvdj(p, t, ranks, pw, pr); });
      for (int r : ranks)
        guarded(p, {r}, "cusolver gesvda (rank r)", [&] { peer_gesvda(p, t, r, 1, peer_reps); });
      peers_warm = true;
    }
  }
  std::printf("\nLow-rank extraction on %s; A = U diag(1/i) V^T (exact spectrum), F32 input; time: median "
              "of %d device-event runs after warm-up (full-SVD drivers: %d at 4096, 1 above); "
              "ratio = ||A - L R||_F / optimal rank-r residual. TF32: products with A on tensor "
              "cores (LRQ's Gram/Cholesky steps stay F64).\n\n",
              "the GPU", reps, peer_reps);
  std::printf("| matrix | rank | method | prec | ms | residual / optimal | note |\n");
  std::printf("|---|---:|---|---|---:|---:|---|\n");
  for (const Row& r : g_rows)
    std::printf("| %s | %d | %s | %s | %.3f | %.5f | %s |\n", r.size.c_str(), r.rank, r.method.c_str(),
                r.prec.c_str(), r.ms, r.ratio, r.note.c_str());
  return 0;
}

#else
int main() {
  std::fprintf(stderr, "bench_lowrank_gpu: this build has no CUDA backend\n");
  return 1;
}
#endif
