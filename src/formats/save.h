// Writing a quantized model as a Hugging Face-style folder (layout: docs/FORMAT.md).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/llama.h"

namespace lrq {

struct SaveOptions {
  std::string out_dir;
  bool force = false;        // replace an existing folder
  nlohmann::json provenance;  // recipe, overrides, calibration settings, report totals
};

/// Error naming `out_dir` when replacing it would delete `input` (a model folder or file, a
/// calibration text): `out_dir` is `input` or a folder that contains it.
void refuse_output_over_input(const std::string& out_dir, const std::string& input,
                              const std::string& what);

/// Repairs what a run killed while saving to `out_dir` left beside it (only entries whose
/// process is gone): ".<name>.partial-<pid>" folders (never complete) are removed, and a
/// ".<name>.old-<pid>" (the previous complete output, moved aside by a --force replace killed
/// before its second rename) is renamed back when <name> is missing, else removed. Returns a
/// line per repair for the user. Called by save_quantized and at the start of `quantize`.
std::vector<std::string> recover_stale_output(const std::string& out_dir);
/// An Error naming `out_dir` unless a folder can be created beside it (the save's temporary
/// folder goes there): a read-only file system or a missing parent is refused before the
/// minutes of calibration, not after.
void check_output_writable(const std::string& out_dir);
/// Writes config.json (with quantization_config), the tokenizer files found beside the source,
/// and model.safetensors. Everything goes to a temporary folder beside `out_dir` that is renamed
/// into place at the end, so a failure or an interruption leaves no partial output.
void save_quantized(const Model& model, const SaveOptions& o);

}  // namespace lrq
