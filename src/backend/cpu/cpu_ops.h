// CPU implementations of the ops in backend/op_list.h (OpenBLAS, LAPACK, OpenMP, AVX2), declared
// from that list; ops.cpp checks the arguments (backend/checks.h) and dispatches here on the
// tensors' device. Below the list: what only the CPU has.
#pragma once
#include <omp.h>
#include <span>

#include "backend/ops.h"
#include "core/tensor.h"

// A definition whose signature drifts from the list would declare a new overload and leave the
// listed one undefined; this makes it a compile error in every file that implements an op.
// (Not under nvcc, whose renamed anonymous namespaces would trip it in the .cu files that
// borrow cholesky_drop_inverse.)
#if defined(__GNUC__) && !defined(__CUDACC__)
#pragma GCC diagnostic error "-Wmissing-declarations"
#endif

namespace lrq::cpu {

using ops::LowRankTerm;
using ops::NormStats;
using ops::AdamParams;
using ops::Lords;
using ops::Packed;
using ops::PackedEncodeResult;

#define LRQ_OP(name, ret, params, args, devices) ret name params;
#include "backend/op_list.h"

/// Threads for OpenMP. OpenBLAS always runs on one thread (its threaded results depend on the
/// thread count); the ops parallelize around it (gemm_rm).
int set_num_threads(int n);
/// One BLAS thread for the calls in scope, whichever OpenBLAS build is linked: the OpenMP build
/// takes its count from omp_get_max_threads() (even inside a parallel region, where it then
/// splits the work as if threaded), the pthreads build from openblas_set_num_threads, which
/// linalg_cpu.cpp sets to 1 once. The setting is the calling thread's own.
class SerialBlas {
 public:
  SerialBlas() : saved_(omp_get_max_threads()) {
    if (saved_ != 1) omp_set_num_threads(1);
  }
  ~SerialBlas() {
    if (saved_ != 1) omp_set_num_threads(saved_);
  }
  SerialBlas(const SerialBlas&) = delete;
  SerialBlas& operator=(const SerialBlas&) = delete;

 private:
  int saved_;
};
/// Row-major C (m x n, ld ldc) = alpha op(A) op(B) + beta C, split into blocks of C fixed by the
/// shape and run as single-threaded BLAS calls across OpenMP threads: the same bits with any
/// thread count. Every CPU product goes through this (float and double).
template <class T>
void gemm_rm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* A,
             int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);
/// See ops::packed_force_scalar / ops::packed_simd_active.
void packed_force_scalar(bool on);
bool packed_simd_active();

// Shared by both backends' cholesky_qr (the k x k step runs on the host for either).
/// The inverse X = R^-1 (k x k, row-major, upper) of the Cholesky factor of G = R^T R (k x k,
/// row-major, symmetric, overwritten), with the pivots of numerically dependent columns
/// (Schur complement <= tol^2 times the column's own G_jj, or G_jj <= 0) dropped: their row and
/// column of X are zero, so A X zeroes those columns and orthonormalizes the rest.
void cholesky_drop_inverse(double* G, int64_t k, double tol, double* X);

}  // namespace lrq::cpu
