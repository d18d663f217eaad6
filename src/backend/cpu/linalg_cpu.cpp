// Dense linear algebra on the CPU: OpenBLAS for BLAS, LAPACK (from OpenBLAS) for
// factorizations. Our matrices are row-major; LAPACK is column-major, so each routine below
// says how the transpose is absorbed instead of copying where it can.
#include <cblas.h>
#include <sys/resource.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/lapack.h"

namespace lrq::cpu {
namespace {

// OpenBLAS's threaded GEMM splits a product one way per thread count, and the results differ
// in the last bits from its single-threaded ones (tests/threads_test: 1 vs 2 threads). So BLAS
// always runs on one thread (SerialBlas per call; g_serial_blas below for the pthreads build)
// and gemm_rm splits products into blocks of C fixed by the shape alone, one single-threaded
// call each, OpenMP across the blocks: the same bits with any number of threads.
// Only the pthreads build needs this: in the OpenMP build openblas_set_num_threads(1) also sets
// OpenMP's own thread count to 1 for the whole process (every parallel loop of ours would then
// run on one thread); there SerialBlas does the job per call.
const bool g_serial_blas = [] {
  if (openblas_get_parallel() == 1) openblas_set_num_threads(1);
  return true;
}();

inline void blas_call(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                      const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                      float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              int(m), int(n), int(k), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}
inline void blas_call(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                      const double* A, int64_t lda, const double* B, int64_t ldb, double beta,
                      double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              int(m), int(n), int(k), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

}  // namespace

template <class T>
void gemm_rm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* A,
             int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  (void)g_serial_blas;
  // Each call repacks the operand it shares with the other blocks, which costs about 25 / w of
  // the block's arithmetic for a block w wide (measured as timeouts with 64-row blocks). So
  // blocks are at least 256 wide, up to 16 of them, along C's columns (repacking A) unless C is
  // narrow and tall (then along its rows, repacking B).
  const bool by_rows = n < 512 && m >= 1024;
  const int64_t len = by_rows ? m : n;
  const int64_t bs = std::max<int64_t>(256, (len + 16 * 64 - 1) / (16 * 64) * 64);
  const int64_t nb = (len + bs - 1) / bs;
  auto block = [&](int64_t b) {
    const SerialBlas one;
    const int64_t lo = b * bs, hi = std::min(len, lo + bs);
    if (by_rows)  // rows lo..hi of op(A): rows of A, or columns when transposed
      blas_call(ta, tb, hi - lo, n, k, alpha, A + (ta ? lo : lo * lda), lda, B, ldb, beta,
                C + lo * ldc, ldc);
    else  // columns lo..hi of op(B): columns of B, or rows when transposed
      blas_call(ta, tb, m, hi - lo, k, alpha, A, lda, B + (tb ? lo * ldb : lo), ldb, beta,
                C + lo, ldc);
  };
  if (nb == 1 || double(m) * double(n) * double(k) < double(1 << 18)) {
    for (int64_t b = 0; b < nb; ++b) block(b);
    return;
  }
#pragma omp parallel for schedule(dynamic)
  for (int64_t b = 0; b < nb; ++b) block(b);
}
template void gemm_rm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                             const float*, int64_t, float, float*, int64_t);
template void gemm_rm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*,
                              int64_t, const double*, int64_t, double, double*, int64_t);

void gemm(const Tensor& A, bool ta, const Tensor& B, bool tb, const Tensor& C, double alpha,
          double beta) {
  const int64_t m = ta ? A.dim(1) : A.dim(0), k = ta ? A.dim(0) : A.dim(1);
  const int64_t n = tb ? B.dim(0) : B.dim(1);
  if (m == 0 || n == 0) return;
  if (A.dtype() == DType::F32)
    gemm_rm<float>(ta, tb, m, n, k, float(alpha), A.data<float>(), A.dim(1), B.data<float>(),
                   B.dim(1), float(beta), C.data<float>(), n);
  else
    gemm_rm<double>(ta, tb, m, n, k, alpha, A.data<double>(), A.dim(1), B.data<double>(),
                    B.dim(1), beta, C.data<double>(), n);
}

void gemv(const Tensor& A, bool ta, const Tensor& x, const Tensor& y, double alpha, double beta) {
  const SerialBlas one;
  auto TA = ta ? CblasTrans : CblasNoTrans;
  if (A.dtype() == DType::F32)
    cblas_sgemv(CblasRowMajor, TA, A.dim(0), A.dim(1), float(alpha), A.data<float>(), A.dim(1),
                x.data<float>(), 1, float(beta), y.data<float>(), 1);
  else
    cblas_dgemv(CblasRowMajor, TA, A.dim(0), A.dim(1), alpha, A.data<double>(), A.dim(1),
                x.data<double>(), 1, beta, y.data<double>(), 1);
}

namespace {

template <class T>
bool cholesky_impl(const Tensor& A) {
  const SerialBlas one;
  // Row-major A is column-major A^T = A. LAPACK's upper factor U (A = U^T U, column-major) is,
  // read row-major, the lower factor L = U^T with A = L L^T.
  int n = int(A.dim(0)), info = 0;
  T* a = A.data<T>();
  lapack::potrf("U", &n, a, &n, &info);
  if (info != 0) return false;
  for (int i = 0; i < n; ++i)
    for (int j = i + 1; j < n; ++j) a[int64_t(i) * n + j] = 0;
  return true;
}

template <class T>
bool spd_inverse_impl(const Tensor& A) {
  const SerialBlas one;
  int n = int(A.dim(0)), info = 0;
  T* a = A.data<T>();
  lapack::potrf("U", &n, a, &n, &info);
  if (info != 0) return false;
  lapack::potri("U", &n, a, &n, &info);
  if (info != 0) return false;
  // Column-major upper triangle = row-major lower triangle; mirror it.
  for (int i = 0; i < n; ++i)
    for (int j = i + 1; j < n; ++j) a[int64_t(i) * n + j] = a[int64_t(j) * n + i];
  return true;
}

}  // namespace

bool cholesky(const Tensor& A) {
  return A.dtype() == DType::F32 ? cholesky_impl<float>(A) : cholesky_impl<double>(A);
}

bool spd_inverse(const Tensor& A) {
  return A.dtype() == DType::F32 ? spd_inverse_impl<float>(A) : spd_inverse_impl<double>(A);
}

void trsm_lower(const Tensor& L, bool tl, const Tensor& B) {
  const SerialBlas one;
  const int64_t n = L.dim(0), k = B.dim(1);
  auto T = tl ? CblasTrans : CblasNoTrans;
  if (L.dtype() == DType::F32)
    cblas_strsm(CblasRowMajor, CblasLeft, CblasLower, T, CblasNonUnit, n, k, 1.0f,
                L.data<float>(), n, B.data<float>(), k);
  else
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, T, CblasNonUnit, n, k, 1.0,
                L.data<double>(), n, B.data<double>(), k);
}

namespace {
// VmSize of this process (Linux); 0 where /proc is not there.
double mapped_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmSize:", 0) == 0) return std::stod(line.substr(7)) * 1024.0;
  return 0.0;
}
}  // namespace

int set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  // OpenBLAS maps a 128 MiB buffer per thread that calls it and loops forever when the mmap
  // fails; measured here, two threads did not fit in 600 MB at 144 MiB each, so 256 MiB a
  // thread (buffer, stack, malloc arena) and at most half of an address-space limit.
  // What is already mapped counts against the limit too: a CUDA build maps about 1 GB of
  // cuBLAS/cuSOLVER before main, so the headroom, not the limit, decides.
  struct rlimit lim;
  if (getrlimit(RLIMIT_AS, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
    const double per_thread = 256.0 * 1024 * 1024;
    const double headroom = std::max(0.0, double(lim.rlim_cur) - mapped_bytes());
    const int fit = int(std::max(1.0, std::floor(0.5 * headroom / per_thread)));
    n = std::min(n, fit);
  }
  omp_set_num_threads(n);
  return n;
}

namespace {


template <class T>
void eigh_impl(const Tensor& A, const Tensor& w, const Tensor& V) {
  const SerialBlas one;
  int n = int(A.dim(0)), info = 0, lwork = -1, liwork = -1, iq = 0;
  std::vector<T> a(A.data<T>(), A.data<T>() + int64_t(n) * n);
  T wq;
  lapack::syevd("V", "U", &n, a.data(), &n, w.data<T>(), &wq, &lwork, &iq, &liwork, &info);
  lwork = int(wq);
  liwork = iq;
  std::vector<T> work(std::max(lwork, 1));
  std::vector<int> iwork(std::max(liwork, 1));
  lapack::syevd("V", "U", &n, a.data(), &n, w.data<T>(), work.data(), &lwork, iwork.data(),
                &liwork, &info);
  if (info != 0) fail("", "eigh: LAPACK syevd failed (info {})", info);
  // Column-major eigenvectors (columns) read row-major are rows: transpose into V.
  T* v = V.data<T>();
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) v[int64_t(i) * n + j] = a[int64_t(j) * n + i];
}

template <class T>
void svd_impl(const Tensor& A, const Tensor& U, const Tensor& S, const Tensor& Vt) {
  const SerialBlas one;
  // Row-major A (m x n) is column-major A^T (n x m) = U' S V'^T, so A = V' S U'^T:
  // LAPACK's VT' (k x m column-major) read row-major is our U (m x k), and its U'
  // (n x k column-major) read row-major is our Vt (k x n). No transposes needed.
  int m = int(A.dim(0)), n = int(A.dim(1)), k = std::min(m, n), info = 0, lwork = -1;
  std::vector<T> a(A.data<T>(), A.data<T>() + int64_t(m) * n), a2;
  std::vector<int> iwork(8 * size_t(k));
  T wq;
  lapack::gesdd("S", &n, &m, a.data(), &n, S.data<T>(), Vt.data<T>(), &n, U.data<T>(), &k, &wq,
                &lwork, iwork.data(), &info);
  a2 = a;  // gesdd may fail to converge; keep a copy for the gesvd fallback
  lwork = int(wq);
  std::vector<T> work(std::max(lwork, 1));
  lapack::gesdd("S", &n, &m, a.data(), &n, S.data<T>(), Vt.data<T>(), &n, U.data<T>(), &k,
                work.data(), &lwork, iwork.data(), &info);
  if (info > 0) {
    lwork = -1;
    lapack::gesvd("S", "S", &n, &m, a2.data(), &n, S.data<T>(), Vt.data<T>(), &n, U.data<T>(),
                  &k, &wq, &lwork, &info);
    lwork = int(wq);
    work.assign(std::max(lwork, 1), T(0));
    lapack::gesvd("S", "S", &n, &m, a2.data(), &n, S.data<T>(), Vt.data<T>(), &n, U.data<T>(),
                  &k, work.data(), &lwork, &info);
  }
  if (info != 0) fail("", "svd: LAPACK failed to converge (info {}) on {}", info, A.str());
}

template <class T>
void orthonormalize_impl(const Tensor& A) {
  const SerialBlas one;
  // Row-major A (m x k) is column-major A^T (k x m). Its LQ factorization A^T = L Q has
  // orthonormal rows in Q spanning the same nested row spaces, so Q read row-major (m x k)
  // has orthonormal columns spanning A's leading columns, like Gram-Schmidt.
  int m = int(A.dim(0)), k = int(A.dim(1)), info = 0, lwork = -1;
  T* a = A.data<T>();
  std::vector<T> tau(k);
  T wq;
  lapack::gelqf(&k, &m, a, &k, tau.data(), &wq, &lwork, &info);
  lwork = std::max(int(wq), k * 64);
  std::vector<T> work(lwork);
  lapack::gelqf(&k, &m, a, &k, tau.data(), work.data(), &lwork, &info);
  if (info != 0) fail("", "orthonormalize_columns: gelqf failed (info {})", info);
  lapack::orglq(&k, &m, &k, a, &k, tau.data(), work.data(), &lwork, &info);
  if (info != 0) fail("", "orthonormalize_columns: orglq failed (info {})", info);
}

}  // namespace

void eigh(const Tensor& A, const Tensor& w, const Tensor& V) {
  A.dtype() == DType::F32 ? eigh_impl<float>(A, w, V) : eigh_impl<double>(A, w, V);
}

void svd(const Tensor& A, const Tensor& U, const Tensor& S, const Tensor& Vt) {
  if (std::min(A.dim(0), A.dim(1)) == 0) return;
  A.dtype() == DType::F32 ? svd_impl<float>(A, U, S, Vt) : svd_impl<double>(A, U, S, Vt);
}

void orthonormalize_columns(const Tensor& A) {
  if (A.dim(1) == 0) return;
  A.dtype() == DType::F32 ? orthonormalize_impl<float>(A) : orthonormalize_impl<double>(A);
}

}  // namespace lrq::cpu
