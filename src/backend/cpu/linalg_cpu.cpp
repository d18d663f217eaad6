// Dense linear algebra on the CPU: OpenBLAS for BLAS, LAPACK (from OpenBLAS) for
// factorizations. Our matrices are row-major; LAPACK is column-major, so each routine below
// says how the transpose is absorbed instead of copying where it can.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/lapack.h"

namespace lrq::cpu {
void gemm(const Tensor& A, bool ta, const Tensor& B, bool tb, const Tensor& C, double alpha,
          double beta) {
  const int64_t m = ta ? A.dim(1) : A.dim(0), k = ta ? A.dim(0) : A.dim(1);
  const int64_t n = tb ? B.dim(0) : B.dim(1);
  if (m == 0 || n == 0) return;
  auto TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
  if (A.dtype() == DType::F32)
    cblas_sgemm(CblasRowMajor, TA, TB, m, n, k, float(alpha), A.data<float>(), A.dim(1),
                B.data<float>(), B.dim(1), float(beta), C.data<float>(), n);
  else
    cblas_dgemm(CblasRowMajor, TA, TB, m, n, k, alpha, A.data<double>(), A.dim(1),
                B.data<double>(), B.dim(1), beta, C.data<double>(), n);
}

void gemv(const Tensor& A, bool ta, const Tensor& x, const Tensor& y, double alpha, double beta) {
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
  const int64_t n = L.dim(0), k = B.dim(1);
  auto T = tl ? CblasTrans : CblasNoTrans;
  if (L.dtype() == DType::F32)
    cblas_strsm(CblasRowMajor, CblasLeft, CblasLower, T, CblasNonUnit, n, k, 1.0f,
                L.data<float>(), n, B.data<float>(), k);
  else
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, T, CblasNonUnit, n, k, 1.0,
                L.data<double>(), n, B.data<double>(), k);
}

void set_num_threads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

namespace {

// LAPACK on a small matrix runs faster on one thread: OpenBLAS's thread team costs more than
// it saves (bench_small_eigh; 40 x 40 syevd on the 2-core box: one thread about 40% faster).
// The GPU sketches solve their s x s eigenproblem (s = 40-72) on the host once per block, with
// the GPU idle meanwhile. Both counts are set (set_num_threads) and restored; in OpenBLAS's
// pthreads build the count is process-wide (nothing else calls BLAS while a sketch waits for
// its eigenproblem).
class OneThreadBelow {
 public:
  explicit OneThreadBelow(int64_t n)
      : small_(n <= 128), omp_(omp_get_max_threads()), blas_(openblas_get_num_threads()) {
    if (small_) set_num_threads(1);
  }
  ~OneThreadBelow() {
    if (!small_) return;
    omp_set_num_threads(omp_);
    openblas_set_num_threads(blas_);
  }
  OneThreadBelow(const OneThreadBelow&) = delete;
  OneThreadBelow& operator=(const OneThreadBelow&) = delete;

 private:
  bool small_;
  int omp_, blas_;
};

template <class T>
void eigh_impl(const Tensor& A, const Tensor& w, const Tensor& V) {
  const OneThreadBelow small(A.dim(0));
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
