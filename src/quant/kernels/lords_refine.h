// LoRDS (arXiv 2601.22716) post-training quantization of one matrix: W ~ Q (.) S, S = B A of
// rank r, Q codebook values.
//
//   init     block absmax scales, made rank r by SVD. init=block: blocks of `blk` columns (the
//            paper; the scale matrix has rank up to n/blk, so the truncation is only the best
//            rank-r fit); init=exact: blocks of ceil(n/r) columns (the author's code; at most r
//            blocks, so the factorization is exact and starts at block-scale quantization).
//   refine   `steps` times: S = B A, Q = nearest codebook value of W (/) S, one Adam step on B
//            and A for the objective. objective=weight: ||W - Q (.) S||_F^2 (the paper's,
//            data-free); diag: sum_ij h_j (W - Q (.) S)_ij^2 with h = diag(H); obs: the same
//            with h_j = 1 / [(H + damp I)^-1]_jj, the weight of column j's rounding error once
//            GPTQ's feedback has spread it (Optimal Brain Surgeon), made for assign=gptq; full:
//            tr(D H D^T), D = W - Q (.) S, the output error GPTQ minimizes (measured: with
//            nearest codes its gradient chases the rounding noise, see DECISIONS.md).
//   assign   nearest: Q as in the loop; gptq: with the final S fixed, Q chosen column by column
//            in act order with GPTQ's error feedback through H^-1 (the objective's own
//            assignment when it is `full`).
// The result is the best state seen under the objective (the init counts), so refinement never
// ends worse than where it started (objective=full offers every 10th step and the last as
// candidates: its value costs an F64 m x n x n product). Every step runs on W's device through the seam; the init's
// small SVD and the gptq assignment run on the host.
#pragma once
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace lrq {

struct LordsOptions {
  int bits = 3;                                        ///< 2, 3, 4 or 8
  enum class Codebook { Nf, Int } codebook = Codebook::Nf;
  int64_t blk = 128;                                   ///< block size the rank is matched to
  int64_t rank = 0;                                    ///< 0: lords_matched_rank(m, n, blk)
  int steps = 500;
  enum class Init { Block, Exact } init = Init::Block;
  enum class Objective { Weight, Diag, Obs, Full } objective = Objective::Weight;
  enum class Assign { Nearest, Gptq } assign = Assign::Nearest;
  double lr = 0.03;                                    ///< Adam, cosine-decayed to lr/10
  double damp = 0.01;                                  ///< assign=gptq, objective=obs: damping
};

/// The codebook, F32 [2^bits] ascending: NormalFloat (nf_codebook) or symmetric INT
/// k / (2^(b-1) - 1), k = -2^(b-1) .. 2^(b-1) - 1 (so an absmax scale maps the largest positive
/// weight to a code exactly).
Tensor lords_codebook(int bits, LordsOptions::Codebook kind);

struct LordsFactors {
  Tensor B, A;  ///< F32 [m, r], [r, n] on the CPU
};
/// The init's factors of W (F32 [m, n], any device; read on the host).
LordsFactors lords_init(const Tensor& W, int64_t rank, LordsOptions::Init init, int64_t blk);

struct LordsResult {
  Tensor codes;           ///< U8 [m, n] on W's device
  Tensor B, A;            ///< F32 [m, r], [r, n] on W's device
  Tensor codebook;        ///< F32 [2^bits] on W's device
  int64_t rank = 0;
  double loss_init = 0;   ///< the objective at the init (nearest codes)
  double loss = 0;        ///< the objective of the result
  int best_step = 0;      ///< refinement step of the kept factors (0: the init)
  bool gptq_kept = false; ///< assign=gptq's codes beat the nearest ones
};

/// Quantizes W (F32 [m, n], CPU or GPU). H: F64 [n, n] input second moment on W's device
/// (needed by objective=diag/full and assign=gptq; may be undefined otherwise).
LordsResult lords_quantize(const Tensor& W, const Tensor& H, const LordsOptions& opt,
                           const std::string& where = "lords");

}  // namespace lrq
