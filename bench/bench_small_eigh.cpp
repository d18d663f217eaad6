// Why ops::eigh runs small problems on one thread: LAPACK's dsyevd at the GPU sketches' sizes
// (s x s, s = 40-72, solved on the host twice per rank-64 extraction while the GPU waits),
// called directly with OpenBLAS's full OpenMP team and with one thread, next to ops::eigh
// (which should match the fastest one-thread driver). Also on one thread, the other LAPACK
// drivers for all eigenvalues and eigenvectors: dsyev (QR iteration) and dsyevr (MRRR,
// RANGE='A'). Workspaces come from one lwork=-1 query per driver, outside the timed loops.
// Mean microseconds over --reps calls.
//   bench_small_eigh [--reps 200]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
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
  std::printf("| n | dsyevd, %d threads (us) | dsyevd, 1 thread (us) | ops::eigh (us) "
              "| dsyev, 1 thread (us) | dsyevr, 1 thread (us) |\n|---:|---:|---:|---:|---:|---:|\n",
              team);
  double worst = 0;  // largest eigenvalue disagreement between the drivers, as a sanity check
  for (int n : {40, 72, 128}) {
    Tensor A = Tensor::empty({n, n}, DType::F64), w = Tensor::empty({n}, DType::F64),
           V = Tensor::empty({n, n}, DType::F64);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) A.at<double>(i * n + j) = 1.0 / (1 + i + j) + (i == j);
    std::vector<double> a(size_t(n) * n), ev(static_cast<size_t>(n)), z(size_t(n) * n);
    std::vector<int> isuppz(size_t(2 * n));
    int info = 0, m = 0, il = 1, iu = n;
    const double vl = 0, vu = 0, abstol = 0;  // RANGE='A' ignores vl..iu; abstol 0: default
    // Workspace queries, once per driver.
    int lwork = -1, liwork = -1, iq = 0;
    double wq = 0;
    dsyevd_("V", "U", &n, a.data(), &n, ev.data(), &wq, &lwork, &iq, &liwork, &info);
    std::vector<double> work(std::max(1, int(wq)));
    std::vector<int> iwork(std::max(1, iq));
    lwork = int(work.size());
    liwork = int(iwork.size());
    int lwork_ev = -1;
    dsyev_("V", "U", &n, a.data(), &n, ev.data(), &wq, &lwork_ev, &info);
    std::vector<double> work_ev(std::max(1, int(wq)));
    lwork_ev = int(work_ev.size());
    int lwork_evr = -1, liwork_evr = -1;
    dsyevr_("V", "A", "U", &n, a.data(), &n, &vl, &vu, &il, &iu, &abstol, &m, ev.data(), z.data(),
            &n, isuppz.data(), &wq, &lwork_evr, &iq, &liwork_evr, &info);
    std::vector<double> work_evr(std::max(1, int(wq)));
    std::vector<int> iwork_evr(std::max(1, iq));
    lwork_evr = int(work_evr.size());
    liwork_evr = int(iwork_evr.size());

    auto direct = [&] {
      a.assign(A.data<double>(), A.data<double>() + n * n);
      dsyevd_("V", "U", &n, a.data(), &n, ev.data(), work.data(), &lwork, iwork.data(), &liwork,
              &info);
    };
    auto qr = [&] {
      a.assign(A.data<double>(), A.data<double>() + n * n);
      dsyev_("V", "U", &n, a.data(), &n, ev.data(), work_ev.data(), &lwork_ev, &info);
    };
    auto mrrr = [&] {
      a.assign(A.data<double>(), A.data<double>() + n * n);
      dsyevr_("V", "A", "U", &n, a.data(), &n, &vl, &vu, &il, &iu, &abstol, &m, ev.data(),
              z.data(), &n, isuppz.data(), work_evr.data(), &lwork_evr, iwork_evr.data(),
              &liwork_evr, &info);
    };
    const double full = mean_us(reps, direct);
    ops::set_num_threads(1);  // OpenMP and the pthreads build of OpenBLAS alike
    const double one = mean_us(reps, direct);
    const std::vector<double> ref = ev;
    const double t_ev = mean_us(reps, qr);
    for (int i = 0; i < n; ++i) worst = std::max(worst, std::abs(ev[size_t(i)] - ref[size_t(i)]));
    const double t_evr = mean_us(reps, mrrr);
    for (int i = 0; i < n; ++i) worst = std::max(worst, std::abs(ev[size_t(i)] - ref[size_t(i)]));
    if (m != n) std::fprintf(stderr, "dsyevr found %d of %d eigenvalues\n", m, n);
    ops::set_num_threads(team);
    const double ours = mean_us(reps, [&] { ops::eigh(A, w, V); });
    std::printf("| %d | %.1f | %.1f | %.1f | %.1f | %.1f |\n", n, full, one, ours, t_ev, t_evr);
  }
  std::printf("\nLargest eigenvalue difference between the drivers: %.1e\n", worst);
  return 0;
}
