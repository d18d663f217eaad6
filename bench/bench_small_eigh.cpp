// Why ops::eigh runs small problems on one thread: LAPACK's dsyevd at the GPU sketches' sizes
// (s x s, s = 40-72, solved on the host twice per rank-64 extraction while the GPU waits),
// called directly with OpenBLAS's full OpenMP team and with one thread, next to ops::eigh
// (which should match the one-thread row). Mean microseconds over --reps calls.
//   bench_small_eigh [--reps 200]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "backend/cpu/lapack.h"
#include "backend/ops.h"

using namespace lrq;

namespace {

double mean_us(int reps, const std::function<void()>& f) {
  for (int i = 0; i < 5; ++i) f();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / reps;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 200;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: bench_small_eigh [--reps N]\n");
      return 2;
    }
  }
  const int team = omp_get_max_threads();
  std::printf("\n### Small symmetric eigenproblems on the host (%d OpenMP threads available)\n\n", team);
  std::printf("| n | dsyevd, %d threads (us) | dsyevd, 1 thread (us) | ops::eigh (us) |\n|---:|---:|---:|---:|\n", team);
  for (int n : {40, 72, 128}) {
    Tensor A = Tensor::empty({n, n}, DType::F64), w = Tensor::empty({n}, DType::F64),
           V = Tensor::empty({n, n}, DType::F64);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) A.at<double>(i * n + j) = 1.0 / (1 + i + j) + (i == j);
    std::vector<double> a(size_t(n) * n), ev(static_cast<size_t>(n));
    std::vector<double> work(size_t(1 + 6 * n + 2 * n * n));
    std::vector<int> iwork(size_t(3 + 5 * n));
    const int lwork = int(work.size()), liwork = int(iwork.size());
    auto direct = [&] {
      a.assign(A.data<double>(), A.data<double>() + n * n);
      int info = 0;
      dsyevd_("V", "U", &n, a.data(), &n, ev.data(), work.data(), &lwork, iwork.data(), &liwork,
              &info);
    };
    const double full = mean_us(reps, direct);
    omp_set_num_threads(1);
    const double one = mean_us(reps, direct);
    omp_set_num_threads(team);
    const double ours = mean_us(reps, [&] { ops::eigh(A, w, V); });
    std::printf("| %d | %.1f | %.1f | %.1f |\n", n, full, one, ours);
  }
  return 0;
}
