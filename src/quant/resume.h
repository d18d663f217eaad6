// Resumable quantization: each finished block's quantized layers and report rows are written to
// a checkpoint folder beside the output, so a run that is killed (or fails) can be continued
// with `--resume` from the first unfinished block. Restored blocks are not re-quantized: their
// layers are loaded through the same registry as a saved model and swapped in, and the next
// block's calibration inputs are recomputed by one forward pass of those layers, the same
// computation the uninterrupted run did (docs/DECISIONS.md, "Resumable quantization").
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/linear.h"
#include "model/llama.h"

namespace lrq {

struct LayerReport;

class BlockCheckpoints {
 public:
  /// The checkpoint folder of an output folder: ".<name>.resume" beside it.
  static std::string dir_for(const std::string& out_dir);

  /// What to do with blocks a previous run left: continue from them (an Error naming `dir`
  /// and the first difference when they are another job's), discard them, or refuse to start
  /// (an Error telling the user about --resume and --force) when there are any.
  enum class Previous { Resume, Discard, Refuse };
  /// Opens (or prepares) `dir` for a job identified by `job` (everything that decides the
  /// result: model, calibration windows, recipes, seed, options). The folder is locked while
  /// this object lives: a second run on the same output is an Error, not a mix of two runs'
  /// blocks.
  BlockCheckpoints(std::string dir, nlohmann::json job, Previous previous);
  /// A run that ends (or fails) before finishing a block leaves nothing behind: the folder is
  /// removed unless it holds finished blocks.
  ~BlockCheckpoints();
  BlockCheckpoints(const BlockCheckpoints&) = delete;
  BlockCheckpoints& operator=(const BlockCheckpoints&) = delete;

  /// Blocks 0..finished()-1 are in the checkpoint.
  int64_t finished() const { return finished_; }
  const std::string& dir() const { return dir_; }

  /// Records block `layer` (its projections as they are in `model` now, and its report rows).
  /// Blocks must be saved in order. Each file is written atomically, the state last, so a kill
  /// at any point leaves a consistent checkpoint.
  void save(const Model& model, int64_t layer, const std::vector<LayerReport>& rows);

  struct Restored {
    std::vector<std::pair<std::string, std::unique_ptr<Linear>>> layers;  // full names
    std::vector<LayerReport> rows;
  };
  /// Block `layer`'s layers and report rows, as saved (layer < finished()).
  Restored restore(const Model& model, int64_t layer) const;

  /// Removes the folder (after the output is in place).
  void remove();

 private:
  void write_state() const;

  std::string dir_;
  nlohmann::json job_;
  int64_t finished_ = 0;
  // A member, not a raw fd closed in the destructor: when the constructor throws after taking
  // the lock, members are still destroyed and the lock goes with them.
  struct Lock {
    int fd = -1;
    ~Lock();
  } lock_;
};

}  // namespace lrq
