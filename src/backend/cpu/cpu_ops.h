// CPU implementations of the ops in backend/op_list.h (OpenBLAS, LAPACK, OpenMP, AVX2), declared
// from that list; ops.cpp checks the arguments (backend/checks.h) and dispatches here on the
// tensors' device. Below the list: what only the CPU has.
#pragma once
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

/// Threads for OpenMP (this calling thread) and OpenBLAS: the OpenMP build of OpenBLAS follows
/// the former, the pthreads build (the GPU machine's) has its own process-wide count.
void set_num_threads(int n);
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
