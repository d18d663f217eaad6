// lrquant: one binary, one parser, a subcommand per job. Built twice: `lrquant` with every
// subcommand, and `lrquant-runtime` without the quantizer's (LRQ_CLI_QUANT unset), linked
// against the runtime library alone.
#include <omp.h>

#include <cstdio>
#include <new>

#include "backend/ops.h"
#include "cli/common.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"lrquant " LRQ_VERSION
               ": low-rank-assisted post-training quantization of Llama-family models"};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "CPU threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  app.set_version_flag("--version", LRQ_VERSION);
  std::vector<lrq::cli::Command> commands = {
      lrq::cli::add_inspect(app), lrq::cli::add_eval(app), lrq::cli::add_generate(app)};
#if defined(LRQ_CLI_QUANT)
  commands.push_back(lrq::cli::add_quantize(app));
  commands.push_back(lrq::cli::add_export(app));
  commands.push_back(lrq::cli::add_recipes(app));
  commands.push_back(lrq::cli::add_train(app));
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    // Always applied: even the default (every core) must fit an address-space limit.
    const int wanted = threads > 0 ? threads : 0;
    const int got = lrq::ops::set_num_threads(wanted);
    if (threads > 0 && got < threads)
      std::fprintf(stderr,
                   "lrquant: note: using %d threads, not %d: the address-space limit (ulimit -v) "
                   "leaves room for %d threads' BLAS buffers\n",
                   got, threads, got);
    for (const auto& c : commands)
      if (c.sub->parsed()) c.run();
  } catch (const lrq::Error& e) {
    std::fprintf(stderr, "lrquant: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "lrquant: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lrquant: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
