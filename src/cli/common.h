// Pieces every subcommand shares: opening a model with its tokenizer, reading text, printing.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/llama.h"
#include "tokenizer/tokenizer.h"

namespace lrq::cli {

struct Loaded {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null when not needed and not found
};

/// Opens `path` on `device`; the tokenizer is --tokenizer when given, else the one beside the
/// weights. `need_tokenizer`: a missing tokenizer is an error naming what to pass.
Loaded open_model(const std::string& path, const std::string& tokenizer, bool need_tokenizer,
                  Device device = Device::CPU);
/// Adds `--device cpu|cuda` (default cpu) to a subcommand.
void add_device_option(CLI::App* sub, std::string& device);
/// --exact: the GPU's quantized kernels keep every product exact (ops::set_exact_kernels)
/// instead of 16-bit activation products; the CPU's always are.
void add_exact_flag(CLI::App* sub, bool& exact);
/// Before a command spends minutes writing `out`: repairs what a killed run left (noted on
/// stderr), refuses an existing folder without `force`, checks that it can be written, and
/// refuses an output that is or contains one of `inputs` (path, what it is).
void prepare_output(const std::string& out, bool force,
                    const std::vector<std::pair<std::string, std::string>>& inputs);

/// Tokenizes a whole text file as EVAL.md says (one BOS at the start when the model adds one).
/// Empty files and files that tokenize to nothing are errors naming the file.
std::vector<int32_t> tokenize_file(const Loaded& m, const std::string& path);

/// A subcommand: its parser and the action main() runs once parsing (and --threads) is done.
struct Command {
  CLI::App* sub;
  std::function<void()> run;
};
Command add_inspect(CLI::App& app);
Command add_eval(CLI::App& app);
Command add_generate(CLI::App& app);
Command add_quantize(CLI::App& app);
Command add_recipes(CLI::App& app);
Command add_export(CLI::App& app);
Command add_train(CLI::App& app);

}  // namespace lrq::cli
