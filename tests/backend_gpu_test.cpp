// The CUDA backend against the CPU backend: every primitive of backend/ops.h runs on both with
// the same random inputs, and the difference must stay inside a stated budget per dtype.
// Where the answer is unique only up to signs (eigenvectors, singular vectors, QR), the GPU
// result is checked through reconstruction, orthogonality and subspace agreement instead, and
// against inputs built with a known spectrum. GPU outputs start as NaN, so an element a kernel
// forgets to write fails the comparison. Each check prints "[budget] <name> err <e> budget <b>".
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/cuda_ops.h"
#include "backend/memory.h"
#include "backend/ops.h"
#include "compare_util.h"
#include "test_util.h"

using namespace lrq;

namespace {


Tensor randn(Shape s, uint64_t seed, DType t = DType::F32) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d;
  Tensor x = Tensor::empty(std::move(s), DType::F64);
  for (int64_t i = 0; i < x.numel(); ++i) x.at<double>(i) = d(g);
  return x.to(t);
}

Tensor gpu(const Tensor& t) { return t.to(Device::CUDA); }
Tensor host(const Tensor& t) { return t.to(Device::CPU); }
Tensor f64(const Tensor& t) { return host(t).to(DType::F64); }

// A GPU tensor of NaNs: a kernel that skips an element leaves a NaN that fails every check.
Tensor poisoned(Shape s, DType t = DType::F32) {
  Tensor x = Tensor::empty(std::move(s), DType::F64);
  for (int64_t i = 0; i < x.numel(); ++i) x.at<double>(i) = std::numeric_limits<double>::quiet_NaN();
  return gpu(x.to(t));
}

double fro(const Tensor& a) {
  Tensor x = f64(a);
  double s = 0;
  for (int64_t i = 0; i < x.numel(); ++i) s += x.at<double>(i) * x.at<double>(i);
  return std::sqrt(s);
}

using test::rel_err;
using test::within;

std::string dt(DType t) { return std::string(dtype_name(t)); }
double budget(DType t, double f32, double f64v) { return t == DType::F32 ? f32 : f64v; }

// a^T b on the CPU in double (the reference for the checks built from products).
Tensor atb(const Tensor& a, const Tensor& b) {
  Tensor x = f64(a), y = f64(b), r = Tensor::zeros({x.dim(1), y.dim(1)}, DType::F64);
  ops::gemm(x, true, y, false, r);
  return r;
}

Tensor identity(int64_t n) {
  Tensor I = Tensor::zeros({n, n}, DType::F64);
  for (int64_t i = 0; i < n; ++i) I.at<double>(i * n + i) = 1;
  return I;
}

// ||abs(P) - I||_F for a square P: zero when P is a signed identity (same vectors up to sign).
double signed_identity_err(const Tensor& P) {
  const int64_t n = P.dim(0);
  double s = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double d = std::abs(P.at<double>(i * n + j)) - (i == j);
      s += d * d;
    }
  return std::sqrt(s);
}

// A well-conditioned SPD matrix X^T X / rows + I (n x n) in dtype t.
Tensor spd(int64_t n, uint64_t seed, DType t) {
  Tensor X = randn({3 * n, n}, seed, DType::F64), H = identity(n);
  ops::gemm(X, true, X, false, H, 1.0 / double(3 * n), 1.0);
  return H.to(t);
}

// Q D Q^T with Q orthonormal from `seed` and D = diag(vals) (ascending), built in F64.
Tensor with_spectrum(const std::vector<double>& vals, uint64_t seed, Tensor* Q_out) {
  const int64_t n = int64_t(vals.size());
  Tensor Q = randn({n, n}, seed, DType::F64);
  ops::orthonormalize_columns(Q);
  Tensor QD = Q.clone(), A = Tensor::zeros({n, n}, DType::F64);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) QD.at<double>(i * n + j) *= vals[j];
  ops::gemm(QD, false, Q, true, A);
  *Q_out = Q;
  return A;
}

}  // namespace

// ------------------------------------------------------------------ dense products
TEST(BackendGpu, GemmMatchesCpu) {
  REQUIRE_GPU();
  const int64_t m = 67, n = 45, k = 300;
  for (DType t : {DType::F32, DType::F64})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        Tensor A = randn(ta ? Shape{k, m} : Shape{m, k}, 1, t);
        Tensor B = randn(tb ? Shape{n, k} : Shape{k, n}, 2, t);
        Tensor C = randn({m, n}, 3, t), Cc = C.clone(), Cg = gpu(C);
        ops::gemm(A, ta, B, tb, Cc, 0.7, 0.3);
        ops::gemm(gpu(A), ta, gpu(B), tb, Cg, 0.7, 0.3);
        const std::string name = "gemm " + dt(t) + (ta ? " A^T" : " A") + (tb ? " B^T" : " B");
        within(name, rel_err(Cg, Cc), budget(t, 1e-5, 1e-12));
        // beta = 0 must ignore C entirely, NaNs included.
        Tensor C0 = Tensor::zeros({m, n}, t), Cp = poisoned({m, n}, t);
        ops::gemm(A, ta, B, tb, C0);
        ops::gemm(gpu(A), ta, gpu(B), tb, Cp);
        within(name + " beta=0", rel_err(Cp, C0), budget(t, 1e-5, 1e-12));
      }
}

TEST(BackendGpu, Tf32IsOptInAndStaysClose) {
  REQUIRE_GPU();
  ASSERT_FALSE(cuda::allow_tf32()) << "TF32 must be off by default (LRQ_CUDA_TF32 set?)";
  Tensor A = randn({256, 256}, 4), B = randn({256, 256}, 5), C = Tensor::zeros({256, 256}, DType::F64);
  ops::gemm(A.to(DType::F64), false, B.to(DType::F64), false, C);
  Tensor Cg = poisoned({256, 256});
  cuda::set_allow_tf32(true);
  ops::gemm(gpu(A), false, gpu(B), false, Cg);
  cuda::set_allow_tf32(false);
  // TF32 keeps 10 mantissa bits: about 1e-3 relative per product, less after summation.
  within("gemm F32 with TF32 vs F64", rel_err(Cg, C), 3e-3);
  ops::gemm(gpu(A), false, gpu(B), false, Cg);
  within("gemm F32 after TF32 off vs F64", rel_err(Cg, C), 1e-5);
}

TEST(BackendGpu, GemvMatchesCpu) {
  REQUIRE_GPU();
  for (DType t : {DType::F32, DType::F64})
    for (bool ta : {false, true}) {
      Tensor A = randn({300, 170}, 6, t);
      Tensor x = randn({ta ? 300 : 170}, 7, t), y = randn({ta ? 170 : 300}, 8, t);
      Tensor yc = y.clone(), yg = gpu(y);
      ops::gemv(A, ta, x, yc, 1.3, -0.4);
      ops::gemv(gpu(A), ta, gpu(x), yg, 1.3, -0.4);
      within("gemv " + dt(t) + (ta ? " A^T" : " A"), rel_err(yg, yc), budget(t, 1e-5, 1e-12));
    }
}

TEST(BackendGpu, LinearMatchesCpuForEveryWeightType) {
  REQUIRE_GPU();
  struct Case {
    int64_t T, in, out;
  };
  // Decode (T <= 4, vector and scalar loads), prefill (one slab, and several slabs of 4M weights).
  const Case cases[] = {{1, 320, 200}, {3, 320, 200}, {4, 320, 200}, {2, 321, 150},
                        {5, 320, 200}, {64, 320, 200}, {37, 4096, 1100}};
  for (DType wt : {DType::F32, DType::F16, DType::BF16})
    for (const Case& c : cases) {
      Tensor W = randn({c.out, c.in}, 9, DType::F32).to(wt), x = randn({c.T, c.in}, 10);
      Tensor yc = Tensor::empty({c.T, c.out}), yg = poisoned({c.T, c.out});
      ops::linear(x, W, yc);
      ops::linear(gpu(x), gpu(W), yg);
      within("linear W " + dt(wt) + " T=" + std::to_string(c.T) + " " + std::to_string(c.out) +
                 "x" + std::to_string(c.in),
             rel_err(yg, yc), 1e-5);
    }
}

// ------------------------------------------------------------------ factorizations
TEST(BackendGpu, CholeskyMatchesCpu) {
  REQUIRE_GPU();
  for (DType t : {DType::F32, DType::F64}) {
    Tensor H = spd(100, 11, t), Lc = H.clone(), Lg = gpu(H);
    ASSERT_TRUE(ops::cholesky(Lc));
    ASSERT_TRUE(ops::cholesky(Lg));
    // The factor with a positive diagonal is unique: compare it directly.
    within("cholesky " + dt(t), rel_err(Lg, Lc), budget(t, 1e-5, 1e-12));
    Tensor L = f64(Lg);
    for (int64_t i = 0; i < 100; ++i)
      for (int64_t j = i + 1; j < 100; ++j) ASSERT_EQ(L.at<double>(i * 100 + j), 0.0);
    Tensor R = Tensor::zeros({100, 100}, DType::F64);
    ops::gemm(L, false, L, true, R);
    within("cholesky " + dt(t) + " L L^T vs A", rel_err(R, H), budget(t, 1e-5, 1e-13));
  }
  Tensor bad = Tensor::from({1, 2, 2, 1}, {2, 2});
  EXPECT_FALSE(ops::cholesky(gpu(bad)));
  EXPECT_FALSE(ops::spd_inverse(gpu(bad)));
}

TEST(BackendGpu, SpdInverseMatchesCpu) {
  REQUIRE_GPU();
  for (DType t : {DType::F32, DType::F64}) {
    Tensor H = spd(90, 12, t), Ic = H.clone(), Ig = gpu(H);
    ASSERT_TRUE(ops::spd_inverse(Ic));
    ASSERT_TRUE(ops::spd_inverse(Ig));
    within("spd_inverse " + dt(t), rel_err(Ig, Ic), budget(t, 1e-5, 1e-12));
    Tensor Hi = f64(Ig), P = Tensor::zeros({90, 90}, DType::F64);
    for (int64_t i = 0; i < 90; ++i)
      for (int64_t j = 0; j < i; ++j) ASSERT_EQ(Hi.at<double>(i * 90 + j), Hi.at<double>(j * 90 + i));
    ops::gemm(f64(H), false, Hi, false, P);
    within("spd_inverse " + dt(t) + " A A^-1 vs I", rel_err(P, identity(90)), budget(t, 1e-5, 1e-13));
  }
}

TEST(BackendGpu, TrsmMatchesCpu) {
  REQUIRE_GPU();
  for (DType t : {DType::F32, DType::F64})
    for (bool tl : {false, true}) {
      Tensor L = spd(100, 13, t);
      ASSERT_TRUE(ops::cholesky(L));
      Tensor B = randn({100, 37}, 14, t), Xc = B.clone(), Xg = gpu(B);
      ops::trsm_lower(L, tl, Xc);
      ops::trsm_lower(gpu(L), tl, Xg);
      within("trsm_lower " + dt(t) + (tl ? " L^T" : " L"), rel_err(Xg, Xc), budget(t, 1e-5, 1e-12));
    }
}

TEST(BackendGpu, EighRecoversAKnownSpectrum) {
  REQUIRE_GPU();
  const int64_t n = 64;
  std::vector<double> vals(n);
  for (int64_t i = 0; i < n; ++i) vals[i] = double(i + 1) - 20.5;  // gaps of 1, both signs
  Tensor Q;
  Tensor A64 = with_spectrum(vals, 15, &Q);
  for (DType t : {DType::F32, DType::F64}) {
    Tensor A = A64.to(t), w = poisoned({n}, t), V = poisoned({n, n}, t);
    ops::eigh(gpu(A), w, V);
    within("eigh " + dt(t) + " eigenvalues vs formula", rel_err(w, Tensor::from(std::vector<float>(vals.begin(), vals.end()), {n})),
           budget(t, 1e-6, 1e-12));  // half-integers: exact in the F32 reference
    // Gaps of 1 make each eigenvector well determined: V^T Q must be a signed identity.
    within("eigh " + dt(t) + " eigenvectors vs Q", signed_identity_err(atb(V, Q)), budget(t, 1e-4, 1e-10));
    within("eigh " + dt(t) + " V^T V vs I", rel_err(atb(V, V), identity(n)), budget(t, 1e-5, 1e-13));
    Tensor wc = Tensor::empty({n}, t), Vc = Tensor::empty({n, n}, t);
    ops::eigh(A, wc, Vc);
    within("eigh " + dt(t) + " eigenvalues vs CPU", rel_err(w, wc), budget(t, 1e-5, 1e-12));
  }
  // A random SPD matrix (clustered spectrum): eigenvalues still agree, and A V = V diag(w).
  for (DType t : {DType::F32, DType::F64}) {
    Tensor H = spd(120, 16, t), w = poisoned({120}, t), V = poisoned({120, 120}, t);
    Tensor wc = Tensor::empty({120}, t), Vc = Tensor::empty({120, 120}, t);
    ops::eigh(gpu(H), w, V);
    ops::eigh(H, wc, Vc);
    within("eigh " + dt(t) + " SPD eigenvalues vs CPU", rel_err(w, wc), budget(t, 1e-5, 1e-12));
    Tensor Vd = f64(V), wd = f64(w), AV = Tensor::zeros({120, 120}, DType::F64), VW = Vd.clone();
    ops::gemm(f64(H), false, Vd, false, AV);
    for (int64_t i = 0; i < 120; ++i)
      for (int64_t j = 0; j < 120; ++j) VW.at<double>(i * 120 + j) *= wd.at<double>(j);
    within("eigh " + dt(t) + " SPD A V vs V diag(w)", rel_err(AV, VW), budget(t, 1e-5, 1e-12));
  }
}

TEST(BackendGpu, SvdReconstructsAndMatchesCpu) {
  REQUIRE_GPU();
  for (DType t : {DType::F32, DType::F64})
    for (Shape s : {Shape{70, 40}, Shape{40, 70}, Shape{50, 50}}) {
      const int64_t m = s[0], n = s[1], k = std::min(m, n);
      Tensor A = randn(s, 17, t);
      Tensor U = poisoned({m, k}, t), S = poisoned({k}, t), Vt = poisoned({k, n}, t);
      Tensor Uc = Tensor::empty({m, k}, t), Sc = Tensor::empty({k}, t), Vtc = Tensor::empty({k, n}, t);
      ops::svd(gpu(A), U, S, Vt);
      ops::svd(A, Uc, Sc, Vtc);
      const std::string name = "svd " + dt(t) + " " + std::to_string(m) + "x" + std::to_string(n);
      within(name + " S vs CPU", rel_err(S, Sc), budget(t, 1e-5, 1e-12));
      Tensor US = f64(U), Sd = f64(S), R = Tensor::zeros({m, n}, DType::F64);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < k; ++j) US.at<double>(i * k + j) *= Sd.at<double>(j);
      ops::gemm(US, false, f64(Vt), false, R);
      within(name + " U S Vt vs A", rel_err(R, A), budget(t, 1e-5, 1e-12));
      within(name + " U^T U vs I", rel_err(atb(U, U), identity(k)), budget(t, 1e-5, 1e-12));
      Tensor V = host(Vt).to(DType::F64), VVt = Tensor::zeros({k, k}, DType::F64);
      ops::gemm(V, false, V, true, VVt);
      within(name + " Vt Vt^T vs I", rel_err(VVt, identity(k)), budget(t, 1e-5, 1e-12));
      for (int64_t i = 0; i + 1 < k; ++i) EXPECT_GE(Sd.at<double>(i), Sd.at<double>(i + 1));
    }
  // Known singular values with gaps of 1: the singular vectors must match Q's columns.
  const int64_t n = 40;
  std::vector<double> vals(n);
  for (int64_t i = 0; i < n; ++i) vals[i] = double(i + 1);  // ascending for with_spectrum
  Tensor Q;
  Tensor A64 = with_spectrum(vals, 18, &Q);  // symmetric PD: U = V = Q (columns reversed)
  for (DType t : {DType::F32, DType::F64}) {
    Tensor U = poisoned({n, n}, t), S = poisoned({n}, t), Vt = poisoned({n, n}, t);
    ops::svd(gpu(A64.to(t)), U, S, Vt);
    Tensor want = Tensor::empty({n});
    for (int64_t i = 0; i < n; ++i) want.at<float>(i) = float(vals[n - 1 - i]);
    within("svd " + dt(t) + " known singular values", rel_err(S, want), budget(t, 1e-6, 1e-12));
    Tensor Qr = Q.clone();  // Q with its columns in descending order of value
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) Qr.at<double>(i * n + j) = Q.at<double>(i * n + n - 1 - j);
    within("svd " + dt(t) + " U vs known vectors", signed_identity_err(atb(U, Qr)), budget(t, 1e-4, 1e-10));
  }
}

TEST(BackendGpu, OrthonormalizeMatchesCpuUpToSigns) {
  REQUIRE_GPU();
  for (DType t : {DType::F32, DType::F64}) {
    const int64_t m = 80, k = 12;
    Tensor A = randn({m, k}, 19, t), Qc = A.clone(), Qg = gpu(A);
    ops::orthonormalize_columns(Qc);
    ops::orthonormalize_columns(Qg);
    within("orthonormalize " + dt(t) + " Q^T Q vs I", rel_err(atb(Qg, Qg), identity(k)), budget(t, 1e-5, 1e-13));
    // R = Q^T A is upper triangular when Q's leading columns span A's leading columns.
    Tensor R = atb(Qg, A);
    double lower = 0;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < i; ++j) lower += R.at<double>(i * k + j) * R.at<double>(i * k + j);
    within("orthonormalize " + dt(t) + " tril(Q^T A)/|A|", std::sqrt(lower) / fro(A), budget(t, 1e-6, 1e-14));
    within("orthonormalize " + dt(t) + " vs CPU up to signs", signed_identity_err(atb(Qg, Qc)), budget(t, 1e-5, 1e-12));
  }
}

// ------------------------------------------------------------------ sketching primitives
TEST(BackendGpu, FillGaussianMatchesCpu) {
  REQUIRE_GPU();
  // Same counter-based formula on both sides; only libm vs CUDA math in the last bit of a
  // double can differ, which rounds to the same F32 value but for about one value in 10^8.
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(1) << 20}) {
    Tensor c = Tensor::empty({n}), g = poisoned({n});
    ops::fill_gaussian(c, 12345);
    ops::fill_gaussian(g, 12345);
    within("fill_gaussian n=" + std::to_string(n), rel_err(g, c), 1e-7);
  }
}

TEST(BackendGpu, GramMatchesCpu) {
  REQUIRE_GPU();
  // k 1, 24, 70: our chunked kernels (k <= 72; 1 and 24 leave most of a thread's four entry
  // slots spare, 70 needs three rounds of them); 100: cuBLAS DGEMM. m 5: one partial chunk;
  // 3001: a ragged last chunk; 40000: more chunks than CTAs, so CTAs sum several.
  for (DType t : {DType::F32, DType::F64})
    for (int64_t k : {1, 24, 70, 100})
      for (int64_t m : {5, 3001, 40000}) {
        if (k == 100 && m == 40000) continue;
        Tensor A = randn({m, k}, 31, t), Gc = Tensor::empty({k, k}, DType::F64);
        Tensor Gg = poisoned({k, k}, DType::F64);
        ops::gram(A, Gc);
        ops::gram(gpu(A), Gg);
        // Products of F32 values are exact in double: both sides differ only in summation order.
        within("gram " + dt(t) + " " + std::to_string(m) + "x" + std::to_string(k),
               rel_err(Gg, Gc), 1e-13);
      }
}

TEST(BackendGpu, CholeskyQrMatchesCpu) {
  REQUIRE_GPU();
  // k = 24, 25 / 40, 41 / 72: the device kernel's three instances, each at or next to the
  // largest k its slots per thread cover; 100: through the host.
  for (int64_t k : {24, 25, 40, 41, 72, 100}) {
    for (DType t : {DType::F32, DType::F64}) {
      const int64_t m = 2000;
      Tensor A = randn({m, k}, 37, DType::F64);
      for (int64_t r = 0; r < m; ++r)  // column 7 depends on columns 0 and 5
        A.at<double>(r * k + 7) = 0.5 * A.at<double>(r * k) + A.at<double>(r * k + 5);
      Tensor Qc = A.to(t), Qg = gpu(Qc);
      Qc = Qc.clone();
      ops::cholesky_qr(Qc, 2);
      ops::cholesky_qr(Qg, 2);
      const std::string tag = "cholesky_qr k=" + std::to_string(k) + " " + dt(t);
      within(tag + " vs CPU", rel_err(Qg, Qc), budget(t, 1e-5, 1e-12));
      Tensor I = identity(k);
      I.at<double>(7 * k + 7) = 0;  // the dependent column is zero
      within(tag + " Q^T Q vs I", rel_err(atb(Qg, Qg), I), budget(t, 1e-5, 1e-13));
    }
  }
}

// ------------------------------------------------------------------ transforms
TEST(BackendGpu, FwhtMatchesCpu) {
  REQUIRE_GPU();
  for (DType t : {DType::F32, DType::F64})
    for (int64_t block : {1, 2, 32, 256, 4096, 8192, 16384})
      for (int64_t skip : {0, 1}) {
        const int64_t n = block >= 4096 ? 2 * block : 4 * block, rows = block >= 4096 ? 3 : 5;
        Tensor X = randn({rows, n}, 20, t), Xc = X.clone(), Xg = gpu(X);
        ops::fwht_rows(Xc, block, skip);
        ops::fwht_rows(Xg, block, skip);
        const std::string name = "fwht " + dt(t) + " block " + std::to_string(block) + " skip " + std::to_string(skip);
        within(name, rel_err(Xg, Xc), budget(t, 1e-6, 1e-14));
        Tensor back = f64(Xg), orig = f64(X);
        for (int64_t r = 0; r < rows; ++r)  // skipped blocks are untouched, bit for bit
          for (int64_t i = 0; i < skip * block; ++i)
            ASSERT_EQ(back.at<double>(r * n + i), orig.at<double>(r * n + i));
        ops::fwht_rows(Xg, block, skip);  // the normalized transform is its own inverse
        within(name + " twice vs input", rel_err(Xg, X), budget(t, 1e-5, 1e-13));
      }
}

// ------------------------------------------------------------------ transformer pieces
TEST(BackendGpu, RmsnormMatchesCpu) {
  REQUIRE_GPU();
  for (DType wt : {DType::F32, DType::F16, DType::BF16})
    for (int64_t d : {300, 4096}) {
      Tensor x = randn({7, d}, 21), w = randn({d}, 22).to(wt), oc = Tensor::empty({7, d});
      Tensor og = poisoned({7, d});
      ops::rmsnorm(x, w, 1e-5f, oc);
      ops::rmsnorm(gpu(x), gpu(w), 1e-5f, og);
      within("rmsnorm w " + dt(wt) + " d=" + std::to_string(d), rel_err(og, oc), 1e-6);
      Tensor xg = gpu(x);
      ops::rmsnorm(xg, gpu(w), 1e-5f, xg);  // in place
      within("rmsnorm in place w " + dt(wt) + " d=" + std::to_string(d), rel_err(xg, oc), 1e-6);
    }
}

TEST(BackendGpu, RopeMatchesCpuInBothLayouts) {
  REQUIRE_GPU();
  for (bool inter : {false, true})
    for (int64_t pos0 : {0, 1990})
      for (float theta : {10000.0f, 500000.0f}) {
        Tensor x = randn({33, 4 * 64}, 23), xc = x.clone(), xg = gpu(x);
        ops::rope(xc, 4, 64, pos0, theta, inter);
        ops::rope(xg, 4, 64, pos0, theta, inter);
        within(std::string("rope ") + (inter ? "interleaved" : "rotate_half") + " pos0=" +
                   std::to_string(pos0) + " theta=" + std::to_string(int(theta)),
               rel_err(xg, xc), 1e-6);
      }
}

TEST(BackendGpu, AttentionMatchesCpu) {
  REQUIRE_GPU();
  struct Case {
    int64_t T, pos0, nh, nkv, hd;
  };
  const Case cases[] = {
      {70, 0, 8, 2, 64},    // prefill, GQA
      {20, 50, 4, 4, 128},  // a chunk after a cached prefix, MHA
      {1, 300, 8, 2, 128},  // decode
      {1, 2047, 4, 1, 64},  // decode at the end of a 2048 context
      {5, 3, 6, 3, 96},     // head_dim not a multiple of 64
      {2048, 0, 4, 1, 64},  // long prefill
      {64, 0, 1, 1, 64},    // key splits, the early queries' later splits empty
      {1, 777, 2, 1, 256},  // decode, largest head_dim
      {3, 1000, 8, 8, 80},  // short chunk split over keys
      // From 64 queries on, prefill goes through cuBLAS (S = QK^T, softmax, PV) in chunks of
      // 256 queries: a prefix, GQA groups of 4, several chunks, a ragged last one.
      {100, 37, 8, 2, 96},
      {600, 0, 16, 4, 128},
      {300, 300, 4, 2, 64},
  };
  for (const Case& c : cases) {
    const int64_t rows = c.pos0 + c.T + 3;  // caches are longer than the visible part
    Tensor q = randn({c.T, c.nh * c.hd}, 24), K = randn({rows, c.nkv * c.hd}, 25),
           V = randn({rows, c.nkv * c.hd}, 26);
    Tensor oc = Tensor::empty({c.T, c.nh * c.hd}), og = poisoned({c.T, c.nh * c.hd});
    ops::attention(q, K, V, c.nh, c.nkv, c.hd, c.pos0, oc);
    ops::attention(gpu(q), gpu(K), gpu(V), c.nh, c.nkv, c.hd, c.pos0, og);
    within("attention T=" + std::to_string(c.T) + " pos0=" + std::to_string(c.pos0) + " heads " +
               std::to_string(c.nh) + "/" + std::to_string(c.nkv) + " d=" + std::to_string(c.hd),
           rel_err(og, oc), 1e-5);
  }
  // The cuBLAS prefill on TF32 tensor cores (quantize --tf32; --bf16 takes the fused kernel
  // below for head_dim 64 and 128).
  Tensor q = randn({600, 8 * 128}, 27), K = randn({600, 2 * 128}, 28), V = randn({600, 2 * 128}, 29);
  Tensor oc = Tensor::empty({600, 8 * 128}), og = poisoned({600, 8 * 128});
  ops::attention(q, K, V, 8, 2, 128, 0, oc);
  cuda::set_allow_tf32(true);
  ops::attention(gpu(q), gpu(K), gpu(V), 8, 2, 128, 0, og);
  cuda::set_allow_tf32(false);
  within("attention T=600 heads 8/2 d=128 TF32 (cuBLAS)", rel_err(og, oc), 3e-3);
}

TEST(BackendGpu, AttentionFusedBf16MatchesCpu) {
  REQUIRE_GPU();
  // With TF32 allowed, prefill (T >= 64) of head_dim 64 or 128 runs the fused flash kernel:
  // Q, K, P and V rounded to BF16 (8 mantissa bits, unit roundoff 2^-9 = 2e-3), products and
  // sums in F32. Each rounding perturbs O by about 1e-3 relative (V and P enter linearly; the
  // Q, K errors shift the log-probabilities by ~1.6e-3 at unit score spread) and they add in
  // quadrature to ~2.5e-3 (a host emulation of the kernel's fragments gave 2.7e-3 to 3.2e-3);
  // the budget 1e-2 leaves a factor of three. A forgotten row stays NaN.
  struct Case {
    int64_t T, pos0, nh, nkv, hd;
  };
  const Case cases[] = {
      {64, 0, 8, 2, 64},       // one query tile, exactly full
      {64, 37, 32, 32, 128},   // one tile after a prefix: its diagonal spans two key tiles
      {100, 0, 32, 32, 64},    // a ragged last query tile
      {100, 37, 8, 2, 128},    // ragged, prefix not a multiple of the key tile
      {100, 300, 8, 2, 64},    // long prefix, short chunk
      {600, 0, 8, 2, 128},     // GQA groups of 4, many tiles
      {600, 37, 32, 32, 64},
      {600, 300, 8, 2, 128},
      {2048, 0, 32, 32, 128},  // the LLaMA-2-7B calibration window
      {2048, 37, 8, 2, 64},
      {2048, 300, 8, 2, 128},
  };
  cuda::set_bf16_matmul(true);
  for (const Case& c : cases) {
    const int64_t rows = c.pos0 + c.T + 3;
    Tensor q = randn({c.T, c.nh * c.hd}, 31), K = randn({rows, c.nkv * c.hd}, 32),
           V = randn({rows, c.nkv * c.hd}, 33);
    // The cache rows past pos0 + T are no key of this call: NaN there catches a kernel that
    // lets them into S or P V (0 * NaN is NaN).
    for (int64_t i = (c.pos0 + c.T) * c.nkv * c.hd; i < rows * c.nkv * c.hd; ++i)
      K.at<float>(i) = V.at<float>(i) = std::numeric_limits<float>::quiet_NaN();
    Tensor oc = Tensor::empty({c.T, c.nh * c.hd}), og = poisoned({c.T, c.nh * c.hd});
    ops::attention(q, K, V, c.nh, c.nkv, c.hd, c.pos0, oc);
    ops::attention(gpu(q), gpu(K), gpu(V), c.nh, c.nkv, c.hd, c.pos0, og);
    within("attention fused BF16 T=" + std::to_string(c.T) + " pos0=" + std::to_string(c.pos0) +
               " heads " + std::to_string(c.nh) + "/" + std::to_string(c.nkv) + " d=" +
               std::to_string(c.hd),
           rel_err(og, oc), 1e-2);
  }
  // On BF16-exact Q, K, V only the rounding of P is left (~1.1e-3; emulated 1.1e-3 to 1.2e-3):
  // a tighter check that the kernel adds no error of its own (wrong scale, a mask off by one,
  // a lost rescale would each show well above 4e-3).
  {
    const int64_t T = 300, pos0 = 37, nh = 8, nkv = 2, hd = 128, rows = pos0 + T;
    auto bf = [](const Tensor& x) { return x.to(DType::BF16).to(DType::F32); };
    Tensor q = bf(randn({T, nh * hd}, 34)), K = bf(randn({rows, nkv * hd}, 35)),
           V = bf(randn({rows, nkv * hd}, 36));
    Tensor oc = Tensor::empty({T, nh * hd}), og = poisoned({T, nh * hd});
    ops::attention(q, K, V, nh, nkv, hd, pos0, oc);
    ops::attention(gpu(q), gpu(K), gpu(V), nh, nkv, hd, pos0, og);
    within("attention fused BF16 on BF16-exact inputs T=300 pos0=37 heads 8/2 d=128",
           rel_err(og, oc), 4e-3);
  }
  cuda::set_bf16_matmul(false);
}

// X with every entry rounded to BF16 (as F32): the exact input the BF16 tensor-core path sees.
Tensor bf16_rounded(const Tensor& x) { return x.to(DType::BF16).to(DType::F32); }

TEST(BackendGpu, Bf16PrefillMatchesCpuOnRoundedActivations) {
  REQUIRE_GPU();
  ASSERT_FALSE(cuda::bf16_matmul()) << "BF16 matmul must be off by default";
  // Products of BF16 values are exact in F32, so against the CPU on the rounded activations
  // only the F32 summation order differs.
  const Tensor W = randn({300, 512}, 40, DType::BF16), x = randn({100, 512}, 41);
  Tensor yc = Tensor::empty({100, 300}), yg = poisoned({100, 300});
  ops::linear(bf16_rounded(x), W, yc);
  cuda::set_bf16_matmul(true);
  ops::linear(gpu(x), gpu(W), yg);
  cuda::set_bf16_matmul(false);
  within("linear BF16 weight, BF16 activations", rel_err(yg, yc), 1e-5);
  // Decode (T <= 4) keeps its F32 kernel whatever the setting.
  Tensor y1c = Tensor::empty({1, 300}), y1g = poisoned({1, 300});
  ops::linear(x.rows(0, 1), W, y1c);
  cuda::set_bf16_matmul(true);
  ops::linear(gpu(x.rows(0, 1).clone()), gpu(W), y1g);
  cuda::set_bf16_matmul(false);
  within("linear BF16 weight, decode unaffected", rel_err(y1g, y1c), 1e-5);
}

// Captured Tensor::to() calls between the host and the GPU return before their bytes move;
// after the fences each side sees exactly the other's bytes: uploads larger than the staging
// ring (4 x 16 MiB, reused), a view (its offset counts), a source dropped before the fence,
// and a download of a tensor that a kernel queued just before it writes.
TEST(BackendGpu, CopyQueueMovesExactBytes) {
  REQUIRE_GPU();
  const Tensor big = randn({3, 7'000'000}, 48);  // 84 MB: 6 chunks, two laps of the ring
  const Tensor want = randn({1000, 33}, 49, DType::F64);
  Tensor g_big, g_view, g_dropped, h_scaled, h_dropped;
  {
    backend::CopyQueue q;
    {
      backend::CopyQueue::Capture c(q);
      g_big = big.to(Device::CUDA);
      g_view = want.rows(10, 20).to(Device::CUDA);
      Tensor dropped = want.clone();
      g_dropped = dropped.to(Device::CUDA);
    }  // `dropped` is gone; the queue holds its buffer until it is copied
    EXPECT_EQ(backend::CopyQueue::capturing(), nullptr);
    const Tensor plain = big.rows(0, 1).to(Device::CUDA);  // outside a capture: synchronous
    q.fence_uploads();
    EXPECT_EQ(rel_err(host(plain), big.rows(0, 1).clone()), 0.0);
    Tensor y = gpu(want);
    ops::scale(y, 2.0);  // queued on the compute stream right before the download
    {
      backend::CopyQueue::Capture c(q);
      h_scaled = y.to(Device::CPU);
      h_dropped = gpu(want).to(Device::CPU);  // the device source dies at once
    }
    y = Tensor();
    q.fence();
  }
  EXPECT_EQ(rel_err(host(g_big), big), 0.0);
  EXPECT_EQ(rel_err(host(g_view), want.rows(10, 20).clone()), 0.0);
  EXPECT_EQ(rel_err(host(g_dropped), want), 0.0);
  Tensor twice = want.clone();
  ops::scale(twice, 2.0);
  EXPECT_EQ(rel_err(h_scaled, twice), 0.0);
  EXPECT_EQ(rel_err(h_dropped, want), 0.0);
}

TEST(BackendGpu, StatisticsProductsMatchCpu) {
  REQUIRE_GPU();
  const Tensor X = randn({300, 613}, 42), X2 = randn({200, 613}, 43);
  Tensor G = Tensor::empty({613, 613});
  ops::xtx(X, G, false);
  ops::xtx(X2, G, true);
  Tensor Gg = poisoned({613, 613});
  ops::xtx(gpu(X), Gg, false);
  ops::xtx(gpu(X2), Gg, true);
  within("xtx F32, two windows accumulated", rel_err(Gg, G), 1e-5);
  // Two windows through the BF16 path on the GPU (into gpu_out) and, as the reference, their
  // BF16-rounded copies through the CPU (into cpu_out).
  auto bf16_two_windows = [](const Tensor& A, const Tensor& B, const Tensor& cpu_out,
                             const Tensor& gpu_out) {
    ops::xtx(bf16_rounded(A), cpu_out, false);
    ops::xtx(bf16_rounded(B), cpu_out, true);
    cuda::set_bf16_matmul(true);
    ops::xtx(gpu(A), gpu_out, false);
    ops::xtx(gpu(B), gpu_out, true);
    cuda::set_bf16_matmul(false);
  };
  Tensor Gb = Tensor::empty({613, 613});
  bf16_two_windows(X, X2, Gb, Gg);
  within("xtx BF16 vs CPU on rounded X", rel_err(Gg, Gb), 1e-5);
  // Wide enough for the BF16 path's tiles (2 x 2 of 576, the last 524): only the upper
  // triangle is promised; accumulate_symmetric reads it into an exactly symmetric F64 sum.
  {
    const Tensor W = randn({96, 1100}, 45), W2 = randn({64, 1100}, 46);
    Tensor Gc = Tensor::empty({1100, 1100}), Gt = poisoned({1100, 1100});
    bf16_two_windows(W, W2, Gc, Gt);
    Tensor Hc = randn({1100, 1100}, 47, DType::F64), Hg = gpu(Hc);
    ops::accumulate_symmetric(Hc, Gc);
    ops::accumulate_symmetric(Hg, Gt);
    within("xtx BF16 tiled, upper triangle, accumulated", rel_err(host(Hg), Hc), 1e-6);
    // What it adds is exactly symmetric (the poisoned lower tiles, NaN, are never read).
    Tensor Z = Tensor::zeros({1100, 1100}, DType::F64), Zg = gpu(Z);
    ops::accumulate_symmetric(Zg, Gt);
    const Tensor Zh = host(Zg);
    for (int64_t i = 0; i < 1100; i += 7)
      for (int64_t j = 0; j < 1100; j += 5)
        ASSERT_EQ(Zh.at<double>(i * 1100 + j), Zh.at<double>(j * 1100 + i));
    EXPECT_THROW(ops::accumulate_symmetric(Zg, gpu(Tensor::empty({1100, 1099}))), Error);
  }
  EXPECT_THROW(ops::xtx(gpu(X), gpu(Tensor::empty({612, 612})), false), Error);
  // Column sums of |x| in fixed 64-row slices: 300 rows are 5 slices, the last one ragged.
  Tensor acc = randn({613}, 44, DType::F64), accg = gpu(acc);
  ops::add_abs_col_sums(X, acc);
  ops::add_abs_col_sums(gpu(X), accg);
  within("add_abs_col_sums T=300", rel_err(host(accg), acc), 1e-14);
}

TEST(BackendGpu, ElementwiseAndEmbeddingMatchCpu) {
  REQUIRE_GPU();
  Tensor g = randn({9, 1000}, 27), u = randn({9, 1000}, 28);
  Tensor oc = Tensor::empty({9, 1000}), og = poisoned({9, 1000});
  ops::silu_mul(g, u, oc);
  ops::silu_mul(gpu(g), gpu(u), og);
  within("silu_mul", rel_err(og, oc), 1e-6);
  Tensor gg = gpu(g);
  ops::silu_mul(gg, gpu(u), gg);  // out aliases gate
  within("silu_mul in place", rel_err(gg, oc), 1e-6);

  Tensor xc = g.clone(), xg = gpu(g);
  ops::add_inplace(xc, u);
  ops::add_inplace(xg, gpu(u));
  within("add_inplace (IEEE adds, exact)", rel_err(xg, xc), 0.0);
  for (DType bt : {DType::F32, DType::F16, DType::BF16}) {
    Tensor b = randn({1000}, 29).to(bt), yc = g.clone(), yg = gpu(g);
    ops::add_row_vector(yc, b);
    ops::add_row_vector(yg, gpu(b));
    within("add_row_vector b " + dt(bt) + " (exact)", rel_err(yg, yc), 0.0);
  }
  const std::vector<int32_t> ids = {3, 0, 49, 3, 17};
  for (DType tt : {DType::F32, DType::F16, DType::BF16}) {
    Tensor table = randn({50, 64}, 30).to(tt), ec = Tensor::empty({5, 64}), eg = poisoned({5, 64});
    ops::embedding(table, ids, ec);
    ops::embedding(gpu(table), ids, eg);
    within("embedding table " + dt(tt) + " (exact)", rel_err(eg, ec), 0.0);
  }
}

TEST(BackendGpu, BadArgumentsAreErrors) {
  REQUIRE_GPU();
  Tensor A = gpu(randn({4, 5}, 31)), B = gpu(randn({4, 5}, 32)), C = gpu(randn({4, 4}, 33));
  EXPECT_THROW(ops::gemm(A, false, B, false, C), Error);
  EXPECT_THROW(ops::gemm(A, false, randn({5, 4}, 34), false, C), Error);  // mixed devices
  EXPECT_THROW(ops::fwht_rows(gpu(randn({2, 12}, 35)), 6), Error);
  EXPECT_THROW(ops::fwht_rows(gpu(randn({2, 16}, 36)), 4, -1), Error);
  EXPECT_THROW(ops::linear(gpu(randn({2, 5}, 37)), gpu(Tensor::zeros({3, 5}, DType::I32)),
                           gpu(Tensor::zeros({2, 3}))),
               Error);
  Tensor q = gpu(randn({1, 512}, 38)), kv = gpu(randn({4, 512}, 39));
  EXPECT_THROW(ops::attention(q, kv, kv, 1, 1, 512, 0, gpu(Tensor::zeros({1, 512}))), Error);
  EXPECT_THROW(ops::embedding(gpu(randn({10, 8}, 40)), std::vector<int32_t>{10}, gpu(Tensor::zeros({1, 8}))),
               Error);
  EXPECT_THROW(ops::svd(A, gpu(Tensor::zeros({4, 5})), gpu(Tensor::zeros({4})), gpu(Tensor::zeros({4, 5}))),
               Error);
  EXPECT_THROW(ops::orthonormalize_columns(gpu(randn({3, 5}, 41))), Error);
  EXPECT_THROW(ops::cholesky_qr(gpu(randn({3, 5}, 42))), Error);
  EXPECT_THROW(ops::gram(A, gpu(Tensor::zeros({5, 5}))), Error);  // G must be F64
  EXPECT_THROW(ops::fill_gaussian(gpu(Tensor::zeros({4}, DType::F64)), 1), Error);
}

// ------------------------------------------------------------------ F64 reductions and gathers

TEST(BackendGpu, AccumulateAndDotMatchCpu) {
  REQUIRE_GPU();
  // 3e5 + 7 entries: several grid-stride passes and a ragged tail.
  const int64_t n = 300007;
  const Tensor a32 = randn({n}, 130), b64 = randn({n}, 131, DType::F64);
  for (double alpha : {1.0, -0.5}) {
    Tensor acc = randn({n}, 132, DType::F64), accg = gpu(acc);
    ops::accumulate(acc, a32, alpha);
    ops::accumulate(accg, gpu(a32), alpha);
    ops::accumulate(acc, b64, alpha);
    ops::accumulate(accg, gpu(b64), alpha);
    // One multiply-add per entry in double on both sides (an FMA at most changes the last bit).
    within("accumulate F32+F64 alpha=" + std::to_string(alpha), rel_err(host(accg), acc), 1e-15);
  }
  const Tensor x = randn({517, 613}, 133, DType::F64), y = randn({517, 613}, 134, DType::F64);
  double want = 0;  // reference: the sum in long double
  long double s = 0;
  for (int64_t i = 0; i < x.numel(); ++i) s += (long double)x.at<double>(i) * y.at<double>(i);
  want = double(s);
  const double norm = fro(x) * fro(y);  // the sum's conditioning scale
  within("dot cpu vs long double", std::abs(ops::dot(x, y) - want) / norm, 1e-12);
  within("dot cuda vs long double", std::abs(ops::dot(gpu(x), gpu(y)) - want) / norm, 1e-12);
  EXPECT_THROW(ops::dot(gpu(x), gpu(x.to(DType::F32))), Error);
  EXPECT_THROW(ops::dot(gpu(x), gpu(randn({5}, 1, DType::F64))), Error);
}

TEST(BackendGpu, PermuteColsF64IsAnExactGather) {
  REQUIRE_GPU();
  const int64_t T = 37, n = 300;
  const Tensor x = randn({T, n}, 140, DType::F64);
  std::vector<int32_t> p(static_cast<size_t>(n));
  std::mt19937_64 g(141);
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = int32_t(i);
  std::shuffle(p.begin(), p.end(), g);
  Tensor perm = Tensor::empty({n}, DType::I32);
  for (int64_t i = 0; i < n; ++i) perm.at<int32_t>(i) = p[size_t(i)];
  Tensor out = poisoned({T, n}, DType::F64);
  ops::permute_scale_cols(gpu(x), gpu(perm), {}, out);
  const Tensor o = host(out);
  int64_t bad = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < n; ++i) bad += o.at<double>(t * n + i) != x.at<double>(t * n + p[size_t(i)]);
  within("permute_scale_cols F64 mismatches", double(bad), 0);
  // The CPU agrees bit for bit, and an F64 gather with a scale is refused on both sides.
  Tensor oc = Tensor::empty({T, n}, DType::F64);
  ops::permute_scale_cols(x, perm, {}, oc);
  within("permute_scale_cols F64 cpu vs cuda", rel_err(oc, o), 0);
  const Tensor sc = randn({n}, 142);
  EXPECT_THROW(ops::permute_scale_cols(gpu(x), gpu(perm), gpu(sc), out), Error);
  EXPECT_THROW(ops::permute_scale_cols(x, perm, sc, oc), Error);
}
