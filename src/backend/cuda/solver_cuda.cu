// Factorizations on the GPU through cuSOLVER (and cuBLAS's trsm).
//
// Our matrices are row-major; cuSOLVER is column-major, where a row-major matrix reads as its
// transpose. Each routine says how it absorbs that. Algorithm choices, for accuracy first:
//  - eigh: syevd (divide and conquer, like the CPU's LAPACK syevd). syevj (Jacobi) can be faster
//    for small batched problems and has better relative accuracy for tiny eigenvalues, but
//    stops at a tolerance and sweep limit instead of running to completion.
//  - svd: gesvd (QR iteration on the bidiagonal; LAPACK's gesvd is the CPU's fallback too).
//    gesvdj stops at a tolerance, gesvdp (polar decomposition) is faster but loses relative
//    accuracy in the small singular values, gesvdr is randomized; none is the better default.
//    gesvd needs rows >= columns, so wide inputs are factored as their transposes.
//  - spd_inverse: potrf + potri (half the flops of potrs against an identity).
#include <algorithm>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"

namespace lrq::cuda {
namespace {

// Overloads over float/double for the cuSOLVER/cuBLAS calls we use; the handle, fill mode
// (upper, column-major) and leading dimensions are fixed here because every caller wants them.
#define LRQ_SOLVER_OVERLOADS(T, P)                                                              \
  void potrf_ws(int n, T* a, int* lw) {                                                         \
    LRQ_CUSOLVER_CHECK(cusolverDn##P##potrf_bufferSize(cusolver(), CUBLAS_FILL_MODE_UPPER, n, a, \
                                                       n, lw));                                 \
  }                                                                                             \
  void potrf(int n, T* a, T* w, int lw, int* info) {                                            \
    LRQ_CUSOLVER_CHECK(                                                                         \
        cusolverDn##P##potrf(cusolver(), CUBLAS_FILL_MODE_UPPER, n, a, n, w, lw, info));        \
  }                                                                                             \
  void potri_ws(int n, T* a, int* lw) {                                                         \
    LRQ_CUSOLVER_CHECK(cusolverDn##P##potri_bufferSize(cusolver(), CUBLAS_FILL_MODE_UPPER, n, a, \
                                                       n, lw));                                 \
  }                                                                                             \
  void potri(int n, T* a, T* w, int lw, int* info) {                                            \
    LRQ_CUSOLVER_CHECK(                                                                         \
        cusolverDn##P##potri(cusolver(), CUBLAS_FILL_MODE_UPPER, n, a, n, w, lw, info));        \
  }                                                                                             \
  void syevd_ws(int n, const T* a, const T* w, int* lw) {                                       \
    LRQ_CUSOLVER_CHECK(cusolverDn##P##syevd_bufferSize(cusolver(), CUSOLVER_EIG_MODE_VECTOR,    \
                                                       CUBLAS_FILL_MODE_UPPER, n, a, n, w, lw)); \
  }                                                                                             \
  void syevd(int n, T* a, T* w, T* work, int lw, int* info) {                                   \
    LRQ_CUSOLVER_CHECK(cusolverDn##P##syevd(cusolver(), CUSOLVER_EIG_MODE_VECTOR,               \
                                            CUBLAS_FILL_MODE_UPPER, n, a, n, w, work, lw, info)); \
  }                                                                                             \
  void gesvd_ws(int m, int n, T*, int* lw) {                                                    \
    LRQ_CUSOLVER_CHECK(cusolverDn##P##gesvd_bufferSize(cusolver(), m, n, lw));                  \
  }                                                                                             \
  void gesvd(int m, int n, T* a, T* s, T* u, T* vt, T* work, int lw, T* rwork, int* info) {    \
    LRQ_CUSOLVER_CHECK(cusolverDn##P##gesvd(cusolver(), 'S', 'S', m, n, a, m, s, u, m, vt,      \
                                            std::min(m, n), work, lw, rwork, info));            \
  }                                                                                             \
  void qr_ws(int m, int k, T* a, const T* tau, int* lw) {                                       \
    int l1 = 0, l2 = 0;                                                                         \
    LRQ_CUSOLVER_CHECK(cusolverDn##P##geqrf_bufferSize(cusolver(), m, k, a, m, &l1));           \
    LRQ_CUSOLVER_CHECK(cusolverDn##P##orgqr_bufferSize(cusolver(), m, k, k, a, m, tau, &l2));   \
    *lw = std::max(l1, l2);                                                                     \
  }                                                                                             \
  void geqrf(int m, int k, T* a, T* tau, T* w, int lw, int* info) {                             \
    LRQ_CUSOLVER_CHECK(cusolverDn##P##geqrf(cusolver(), m, k, a, m, tau, w, lw, info));         \
  }                                                                                             \
  void orgqr(int m, int k, T* a, const T* tau, T* w, int lw, int* info) {                       \
    LRQ_CUSOLVER_CHECK(cusolverDn##P##orgqr(cusolver(), m, k, k, a, m, tau, w, lw, info));      \
  }                                                                                             \
  void trsm(cublasSideMode_t side, cublasOperation_t t, int m, int n, const T* a, int lda, T* b, \
            int ldb) {                                                                          \
    const T one = 1;                                                                            \
    LRQ_CUBLAS_CHECK(cublas##P##trsm(cublas(), side, CUBLAS_FILL_MODE_UPPER, t,                 \
                                     CUBLAS_DIAG_NON_UNIT, m, n, &one, a, lda, b, ldb));        \
  }
LRQ_SOLVER_OVERLOADS(float, S)
LRQ_SOLVER_OVERLOADS(double, D)
#undef LRQ_SOLVER_OVERLOADS

// A cuSOLVER status word: > 0 is a numerical outcome the caller handles, < 0 is our bug.
int checked_info(const int* dev_info, const char* op) {
  const int info = read_info(dev_info);
  if (info < 0)
    fail_msg("internal error", std::string(op) + ": cuSOLVER rejected argument " + std::to_string(-info));
  return info;
}

// Row-major n x n: zero the strict upper triangle (upper = true) or copy the lower triangle
// onto it (upper = false, making the matrix symmetric).
template <class T>
__global__ void fill_upper_kernel(T* a, int64_t n, bool zero) {
  const int64_t total = n * n;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / n, j = e % n;
    if (j > i) a[e] = zero ? T(0) : a[j * n + i];
  }
}

template <class T>
void fill_upper(T* a, int64_t n, bool zero) {
  fill_upper_kernel<T><<<grid_for(n * n, 256), 256, 0, stream()>>>(a, n, zero);
  LRQ_CUDA_LAUNCHED();
}

// Row-major A is column-major A^T = A. cuSOLVER's upper factor U (A = U^T U, column-major)
// read row-major is L = U^T, lower, with A = L L^T. potrf leaves the other triangle as it was.
template <class T>
bool factor(T* a, int n, DeviceScratch& info) {
  int lw = 0;
  potrf_ws(n, a, &lw);
  DeviceScratch work(size_t(std::max(lw, 1)) * sizeof(T));
  potrf(n, a, work.as<T>(), lw, info.as<int>());
  return checked_info(info.as<int>(), "potrf") == 0;
}

template <class T>
bool cholesky_impl(const Tensor& A) {
  const int n = blas_int(A.dim(0), "cholesky");
  DeviceScratch info(sizeof(int));
  if (!factor(A.data<T>(), n, info)) return false;
  fill_upper(A.data<T>(), n, true);
  return true;
}

template <class T>
bool spd_inverse_impl(const Tensor& A) {
  const int n = blas_int(A.dim(0), "spd_inverse");
  T* a = A.data<T>();
  DeviceScratch info(sizeof(int));
  if (!factor(a, n, info)) return false;
  int lw = 0;
  potri_ws(n, a, &lw);
  DeviceScratch work(size_t(std::max(lw, 1)) * sizeof(T));
  potri(n, a, work.as<T>(), lw, info.as<int>());
  if (checked_info(info.as<int>(), "potri") != 0) return false;
  // potri filled the column-major upper triangle, the row-major lower one: mirror it.
  fill_upper(a, n, false);
  return true;
}

template <class T>
void eigh_impl(const Tensor& A, const Tensor& w, const Tensor& V) {
  const int n = blas_int(A.dim(0), "eigh");
  DeviceScratch a(size_t(n) * n * sizeof(T)), info(sizeof(int));
  LRQ_CUDA_CHECK(cudaMemcpyAsync(a.as<T>(), A.raw(), A.nbytes(), cudaMemcpyDeviceToDevice,
                                 stream()));
  int lw = 0;
  syevd_ws(n, a.as<T>(), w.data<T>(), &lw);
  DeviceScratch work(size_t(std::max(lw, 1)) * sizeof(T));
  syevd(n, a.as<T>(), w.data<T>(), work.as<T>(), lw, info.as<int>());
  if (int e = checked_info(info.as<int>(), "syevd"); e != 0)
    bad_args("eigh", "cuSOLVER syevd did not converge (info " + std::to_string(e) + ") on " +
                         A.str());
  // Eigenvectors are the column-major columns, i.e. the rows of `a` read row-major.
  transpose_device(a.as<T>(), V.data<T>(), n, n);
}

template <class T>
void svd_impl(const Tensor& A, const Tensor& U, const Tensor& S, const Tensor& Vt) {
  const int m = blas_int(A.dim(0), "svd"), n = blas_int(A.dim(1), "svd"), k = std::min(m, n);
  DeviceScratch a(A.nbytes()), info(sizeof(int)), rwork(size_t(k) * sizeof(T));
  int lw = 0;
  if (n >= m) {
    // Row-major A (m x n) is column-major A^T (n x m, tall) = U' S V'^T, so A = V' S U'^T.
    // U' (n x k column-major) read row-major is our Vt (k x n); V'^T (k x m column-major, k = m)
    // read row-major is our U (m x k). cuSOLVER writes both in place.
    LRQ_CUDA_CHECK(cudaMemcpyAsync(a.as<T>(), A.raw(), A.nbytes(), cudaMemcpyDeviceToDevice,
                                   stream()));
    gesvd_ws(n, m, a.as<T>(), &lw);
    DeviceScratch work(size_t(std::max(lw, 1)) * sizeof(T));
    gesvd(n, m, a.as<T>(), S.data<T>(), Vt.data<T>(), U.data<T>(), work.as<T>(), lw,
          rwork.as<T>(), info.as<int>());
  } else {
    // Tall A: factor its column-major copy A = U S V^T (row-major A^T), then transpose U
    // (m x k column-major) and V^T (k x n column-major) into row-major.
    transpose_device(A.data<T>(), a.as<T>(), m, n);
    DeviceScratch u(size_t(m) * k * sizeof(T)), vt(size_t(k) * n * sizeof(T));
    gesvd_ws(m, n, a.as<T>(), &lw);
    DeviceScratch work(size_t(std::max(lw, 1)) * sizeof(T));
    gesvd(m, n, a.as<T>(), S.data<T>(), u.as<T>(), vt.as<T>(), work.as<T>(), lw, rwork.as<T>(),
          info.as<int>());
    transpose_device(u.as<T>(), U.data<T>(), k, m);
    transpose_device(vt.as<T>(), Vt.data<T>(), n, k);
  }
  if (int e = checked_info(info.as<int>(), "gesvd"); e != 0)
    bad_args("svd", "cuSOLVER gesvd did not converge (info " + std::to_string(e) + ") on " +
                        A.str());
}

template <class T>
void orthonormalize_impl(const Tensor& A) {
  // Thin QR of the column-major copy of A (m x k): Q's columns span A's leading columns in
  // order, like Gram-Schmidt (the CPU gets the same Q from the LQ factorization of A^T).
  const int m = blas_int(A.dim(0), "orthonormalize_columns");
  const int k = blas_int(A.dim(1), "orthonormalize_columns");
  DeviceScratch a(A.nbytes()), tau(size_t(k) * sizeof(T)), info(sizeof(int));
  transpose_device(A.data<T>(), a.as<T>(), m, k);
  int lw = 0;
  qr_ws(m, k, a.as<T>(), tau.as<T>(), &lw);
  DeviceScratch work(size_t(std::max(lw, 1)) * sizeof(T));
  geqrf(m, k, a.as<T>(), tau.as<T>(), work.as<T>(), lw, info.as<int>());
  checked_info(info.as<int>(), "geqrf");
  orgqr(m, k, a.as<T>(), tau.as<T>(), work.as<T>(), lw, info.as<int>());
  checked_info(info.as<int>(), "orgqr");
  transpose_device(a.as<T>(), A.data<T>(), k, m);
}

}  // namespace

bool cholesky(const Tensor& A) {
  if (A.dim(0) == 0) return true;
  return A.dtype() == DType::F32 ? cholesky_impl<float>(A) : cholesky_impl<double>(A);
}

bool spd_inverse(const Tensor& A) {
  if (A.dim(0) == 0) return true;
  return A.dtype() == DType::F32 ? spd_inverse_impl<float>(A) : spd_inverse_impl<double>(A);
}

void trsm_lower(const Tensor& L, bool tl, const Tensor& B) {
  const int64_t n = L.dim(0), k = B.dim(1);
  if (n == 0 || k == 0) return;
  // Column-major, L reads as the upper M = L^T and B (n x k) as B^T (k x n). op(L) X = B
  // becomes X^T op(L)^T = B^T: a right-side solve with M itself (no flag) or M^T (flag).
  const int N = blas_int(n, "trsm_lower"), K = blas_int(k, "trsm_lower");
  const cublasOperation_t t = tl ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (L.dtype() == DType::F32)
    trsm(CUBLAS_SIDE_RIGHT, t, K, N, L.data<float>(), N, B.data<float>(), K);
  else
    trsm(CUBLAS_SIDE_RIGHT, t, K, N, L.data<double>(), N, B.data<double>(), K);
}

void eigh(const Tensor& A, const Tensor& w, const Tensor& V) {
  if (A.dim(0) == 0) return;
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

}  // namespace lrq::cuda
