// Wall time and residual error of the low-rank methods against the exact truncated SVD.
//
//   bench_lowrank [--sizes 4096x4096,11008x4096] [--ranks 16,64,128]
//                 [--methods "svd;rsvd:q=2;r1:it=2;block"] [--reps 1] [--seed 1]
//                 [--decay 0.8] [--inner 512] [--noise 0.05] [--amax 1]
//
// Synthetic matrices have a decaying spectrum: A = G1 diag(i^-decay) G2 + noise, with Gaussian
// G1 (m x inner), G2 (inner x n) and i.i.d. Gaussian noise of `noise` times the signal's RMS
// entry. Prints one markdown table; error = ||A - L R||_F / ||A - SVD_r(A)||_F, where the
// reference SVD is computed once per matrix (its time is the svd row at every rank). Times are
// the best of --reps runs; "+amax" is one run with LowRankControl::track_amax (the residual
// formed and scanned after every rank, as FLRQ's R1-FLR rule needs).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backend/ops.h"
#include "lowrank/lowrank.h"

using namespace lrq;

namespace {

struct Config {
  std::vector<int> ranks{16, 64, 128};
  std::vector<LowRankSpec> methods;
  int reps = 1;
  bool track_amax = true;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ||A - L R||_F, computed explicitly.
double residual(const Tensor& A, const LowRank& f) {
  Tensor E = A.clone(), Lt = Tensor::empty({f.L.dim(1), f.L.dim(0)});
  ops::transpose(f.L, Lt);
  ops::gemm(Lt, true, f.R, false, E, -1, 1);
  return std::sqrt(ops::norm_stats(E).sumsq);
}

// Same for the leading r ranks of a factorization of higher rank.
double residual_prefix(const Tensor& A, const LowRank& f, int r) {
  Tensor E = A.clone(), Lt = Tensor::empty({f.L.dim(1), f.L.dim(0)});
  ops::transpose(f.L, Lt);
  ops::gemm(Lt.rows(0, r), true, f.R.rows(0, r), false, E, -1, 1);
  return std::sqrt(ops::norm_stats(E).sumsq);
}

Tensor gaussian(int64_t rows, int64_t cols, std::mt19937_64& rng) {
  Tensor t = Tensor::empty({rows, cols});
  std::normal_distribution<float> d;
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = d(rng);
  return t;
}

Tensor synthetic(int64_t m, int64_t n, int64_t inner, double decay, double noise, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Tensor G1 = gaussian(m, inner, rng), G2 = gaussian(inner, n, rng);
  std::vector<float> s(inner);
  for (int64_t i = 0; i < inner; ++i) s[i] = float(std::pow(double(i + 1), -decay));
  ops::scale(G1, 1, {}, Tensor::from(s, {inner}));
  Tensor A = gaussian(m, n, rng);  // the noise, scaled below
  double signal_rms = 0;
  for (float v : s) signal_rms += double(v) * v;
  signal_rms = std::sqrt(signal_rms);
  ops::gemm(G1, false, G2, false, A, 1, noise * signal_rms);
  return A;
}

/// Benchmarks every method on A (any m x n F32 matrix) and prints table rows labelled `label`.
void bench_matrix(const std::string& label, const Tensor& A, const Config& cfg) {
  int max_rank = 0;
  for (int r : cfg.ranks) max_rank = std::max(max_rank, r);
  auto t0 = std::chrono::steady_clock::now();
  const LowRank ref = low_rank(A, max_rank, LowRankSpec{});
  const double svd_time = seconds_since(t0);
  for (int r : cfg.ranks) {
    const double ref_err = residual_prefix(A, ref, r);
    const double rel = ref_err / std::sqrt(ops::norm_stats(A).sumsq);
    for (const LowRankSpec& spec : cfg.methods) {
      double best = svd_time, err = ref_err;
      if (spec.method != LowRankMethod::Svd) {
        best = 1e300;
        for (int rep = 0; rep < cfg.reps; ++rep) {
          t0 = std::chrono::steady_clock::now();
          const LowRank f = low_rank(A, r, spec);
          best = std::min(best, seconds_since(t0));
          err = residual(A, f);
        }
      }
      std::string amax_time = "-";
      if (cfg.track_amax && spec.method != LowRankMethod::Svd) {
        LowRankControl ctl;
        ctl.track_amax = true;
        t0 = std::chrono::steady_clock::now();
        low_rank(A, r, spec, ctl);
        amax_time = fmt::format("{:.3f}", seconds_since(t0));
      }
      fmt::print("| {} | {} | {:.3f} | {} | {:.3f} | {} | {:.1f}x | {:.4f} |\n", label, r, rel,
                 spec.to_string(), best, amax_time, svd_time / best, err / ref_err);
      std::fflush(stdout);
    }
  }
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end - start));
    if (end == std::string::npos) return out;
    start = end + 1;
  }
}

[[noreturn]] void usage(const std::string& why) {
  fmt::print(stderr, "bench_lowrank: {}\n"
             "usage: bench_lowrank [--sizes MxN,...] [--ranks r,...] [--methods \"spec;spec\"] "
             "[--reps N] [--seed S] [--decay D] [--inner K] [--noise X] [--amax 0|1]\n", why);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  std::vector<std::pair<int64_t, int64_t>> sizes{{4096, 4096}, {11008, 4096}};
  std::string methods = "svd;rsvd:q=2;r1:it=2;block";
  uint64_t seed = 1;
  double decay = 0.8, noise = 0.05;
  int64_t inner = 512;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (i + 1 >= argc) usage("missing value after " + a);
      const std::string v = argv[++i];
      if (a == "--sizes") {
        sizes.clear();
        for (const auto& s : split(v, ',')) {
          const size_t x = s.find('x');
          if (x == std::string::npos) usage("bad size " + s);
          sizes.emplace_back(std::stoll(s.substr(0, x)), std::stoll(s.substr(x + 1)));
        }
      } else if (a == "--ranks") {
        cfg.ranks.clear();
        for (const auto& s : split(v, ',')) cfg.ranks.push_back(std::stoi(s));
      } else if (a == "--methods") {
        methods = v;
      } else if (a == "--reps") {
        cfg.reps = std::max(1, std::stoi(v));
      } else if (a == "--seed") {
        seed = std::stoull(v);
      } else if (a == "--decay") {
        decay = std::stod(v);
      } else if (a == "--inner") {
        inner = std::stoll(v);
      } else if (a == "--noise") {
        noise = std::stod(v);
      } else if (a == "--amax") {
        cfg.track_amax = std::stoi(v) != 0;
      } else {
        usage("unknown flag " + a);
      }
    }
    for (const auto& m : split(methods, ';')) cfg.methods.push_back(LowRankSpec::parse(m));
  } catch (const std::logic_error& e) {  // std::stoi and friends
    usage(std::string("bad number: ") + e.what());
  } catch (const Error& e) {
    usage(e.what());
  }

  fmt::print("| matrix | rank | optimal rel. residual | method | time (s) | +amax (s) | "
             "speedup vs svd | error / svd error |\n|---|---|---|---|---|---|---|---|\n");
  try {
    for (auto [m, n] : sizes) {
      const Tensor A = synthetic(m, n, inner, decay, noise, seed);
      bench_matrix(fmt::format("{}x{}", m, n), A, cfg);
    }
  } catch (const Error& e) {
    fmt::print(stderr, "bench_lowrank: {}\n", e.what());
    return 1;
  }
  return 0;
}
