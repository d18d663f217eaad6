#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "calib/windows.h"
#include "cli/common.h"
#include "cli/quantize_budget.h"
#include "core/interrupt.h"
#include "core/sha256.h"
#include "io/mapped_file.h"
#include "formats/load_model.h"
#include "quant/pipeline.h"
#include "quant/report_plot.h"
#include "quant/resume.h"
#include "formats/save.h"

namespace lrq::cli {

namespace {

// The totals written into the checkpoint's config.json: what the weights are, not how long this
// run took (timings and GPU memory go to the report), so two runs of the same command write
// byte-identical folders.
nlohmann::json reproducible_total(const QuantizeReport& rep) {
  nlohmann::json t = rep.to_json()["total"];
  for (const char* k : {"seconds", "stages", "peak_gpu_bytes", "gpu_device_used_bytes"}) t.erase(k);
  return t;
}
// What decides a run's result, for --resume to check that the checkpoint is this job's: the
// model files (path, size, modification time: hashing 13 GB would cost more than it saves), the
// calibration windows themselves, the recipes and every option that changes a bit. Threads are
// left out (the CPU result does not depend on them).
nlohmann::json job_identity(const std::string& model, const std::string& tokenizer,
                            const std::vector<std::string>& layer_recipes,
                            const std::string& device, const QuantizeOptions& o,
                            const std::vector<std::vector<int32_t>>& windows) {
  namespace fs = std::filesystem;
  nlohmann::json files = nlohmann::json::array();
  auto stamp = [&](const fs::path& p) {
    std::error_code ec;
    const auto t = fs::last_write_time(p, ec);
    files.push_back({p.filename().string(), fs::file_size(p, ec),
                     int64_t(t.time_since_epoch().count())});
  };
  const fs::path mp = fs::absolute(model);
  if (fs::is_directory(mp)) {
    std::vector<fs::path> in_dir;
    for (const auto& e : fs::directory_iterator(mp))
      if (e.is_regular_file()) in_dir.push_back(e.path());
    std::sort(in_dir.begin(), in_dir.end());
    for (const auto& p : in_dir) stamp(p);
  } else {
    stamp(mp);
  }
  Sha256 h;
  for (const auto& w : windows) {
    const uint64_t n = w.size();
    h.update(&n, sizeof n);
    h.update(w.data(), w.size() * sizeof(int32_t));
  }
  return {{"lrquant", LRQ_VERSION},
          {"model", mp.lexically_normal().string()},
          {"model_files", files},
          {"tokenizer", tokenizer},
          {"windows_sha256", h.hex_digest()},
          {"recipe", o.recipe.str()},
          {"layer_recipes", layer_recipes},
          {"seed", o.seed},
          {"fp_inputs", o.fp_inputs},
          {"calib_mode", std::string(calib_mode_name(o.calib_mode))},
          {"device", device},
          {"tf32", o.tf32},
          {"bf16", o.bf16}};
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  for (size_t i = 0; i <= s.size(); ++i)
    if (i == s.size() || s[i] == ',') {
      if (i > b) out.push_back(s.substr(b, i - b));
      b = i + 1;
    }
  return out;
}

void print_table(const QuantizeReport& r) {
  std::printf("%-34s %-26s %6s %9s %9s %7s\n", "layer", "recipe", "bpw", "w_err", "out_err",
              "sec");
  for (const auto& l : r.layers)
    std::printf("%-34s %-26s %6.3f %9.5f %9.5f %7.2f\n", l.name.c_str(), l.recipe.c_str(),
                l.bpw, l.weight_err, l.output_err, l.seconds);
  auto j = r.to_json()["total"];
  std::printf("total: %lld weights, %zu bytes, %.4f bits/weight, mean output error %.5f, %.1f s\n",
              (long long)r.total_weights(), r.total_bytes(), j["bpw"].get<double>(),
              j["mean_output_err"].get<double>(), r.seconds);
}

void print_stages(const QuantizeReport& r) {
  const StageTimes& s = r.stages;
  std::printf("stages (%s%s): forward %.1f s, statistics %.1f s, method %.1f s, report %.1f s, "
              "transfers %.1f s in, %.1f s out\n",
              std::string(device_name(r.device)).c_str(), r.streamed ? ", streamed" : "",
              s.forward, s.stats, s.method, s.report, s.transfer, s.offload);
  if (r.device != Device::CPU)
    std::printf("peak GPU memory %.1f MiB (allocator high-water mark; device in use at the end "
                "%.1f MiB)\n",
                double(r.peak_gpu_bytes) / 1048576.0, double(r.gpu_device_used_bytes) / 1048576.0);
}
}  // namespace

Command add_quantize(CLI::App& app) {
  struct Args {
    std::string model, tokenizer, calib, recipe, out, report, device = "cpu",
        calib_mode = "sites";
    std::vector<std::string> layer_recipes;
    int64_t nsamples = 128, seqlen = 512;
    uint64_t seed = 0;
    bool force = false, fp_inputs = false, quiet = false, tf32 = false, bf16 = false,
         resume = false;
  };
  auto a = std::make_shared<Args>();
  auto b = std::make_shared<BudgetArgs>();
  auto* sub = app.add_subcommand("quantize", "Quantize every projection and write a checkpoint");
  sub->add_option("--model", a->model, "model folder or llama2.c .bin")->required();
  sub->add_option("--tokenizer", a->tokenizer, "tokenizer file (default: beside the weights)");
  sub->add_option("--calib", a->calib, "calibration text file(s), comma separated")->required();
  sub->add_option("--nsamples", a->nsamples, "calibration windows")->capture_default_str();
  sub->add_option("--seqlen", a->seqlen, "tokens per window")->capture_default_str();
  sub->add_option("--recipe", a->recipe, "e.g. gptq:w4g128,act_order (list: lrquant recipes; docs/RECIPES.md)");
  sub->add_option("--layer-recipe", a->layer_recipes, "REGEX=RECIPE override (repeatable)");
  sub->add_option("--out", a->out, "output folder")->required();
  sub->add_option("--report", a->report,
                  "per-layer JSON report; a plot of rank and error per layer goes beside it (.svg)");
  sub->add_option("--seed", a->seed, "calibration sampling and method seed")
      ->capture_default_str();
  sub->add_flag("--force", a->force, "replace an existing output folder");
  sub->add_flag("--resume", a->resume,
                "continue an interrupted run of the same command from its last finished block "
                "(kept in .<out>.resume beside the output)");
  sub->add_flag("--fp-inputs", a->fp_inputs,
                "feed each block full-precision activations (default: quantized ones)");
  sub->add_flag("--quiet", a->quiet, "no progress on stderr");
  add_device_option(sub, a->device);
  sub->add_option("--calib-mode", a->calib_mode,
                  "sites: re-run the block up to each site (true sequential); block: one "
                  "statistics pass per block (faster; docs/DECISIONS.md)")
      ->capture_default_str();
  sub->add_flag("--tf32", a->tf32,
                "with --device cuda: TF32 tensor cores for the calibration GEMMs (faster, "
                "statistics ~1e-3 relative off the F32 ones)");
  sub->add_flag("--bf16", a->bf16,
                "with --device cuda: BF16 activations on the tensor cores for the calibration "
                "products (fastest; implies --tf32 for the rest)");
  add_budget_options(sub, *b);
  return {sub, [a, b] {
            install_interrupt_handler();
            const BudgetOptions bo =
                budget_options(*b, !a->recipe.empty(), !a->layer_recipes.empty(), a->resume);
            const std::optional<Measurements> reuse = load_measurements(*b);
            QuantizeOptions o;
            o.recipe = parse_recipe(b->active() ? "fp" : a->recipe);
            for (const auto& s : a->layer_recipes) o.overrides.push_back(parse_layer_recipe(s));
            o.seed = a->seed;
            o.fp_inputs = a->fp_inputs;
            o.progress = !a->quiet;
            o.calib_mode = parse_calib_mode(a->calib_mode);
            o.device = parse_device(a->device);
            o.tf32 = a->tf32;
            o.bf16 = a->bf16;
            if (o.tf32 && o.device == Device::CPU) fail("--tf32", "needs --device cuda");
            if (o.bf16 && o.device == Device::CPU) fail("--bf16", "needs --device cuda");
            // A run killed while saving here left its pieces: repair first (the previous
            // output may come back), then refuse an existing output, or one that would replace
            // an input, before spending minutes on calibration.
            std::vector<std::pair<std::string, std::string>> inputs = {{a->model, "model"}};
            for (const auto& f : split_commas(a->calib)) inputs.emplace_back(f, "calibration file");
            prepare_output(a->out, a->force, inputs);
            Loaded m = open_model(a->model, a->tokenizer, true);
            auto files = split_commas(a->calib);
            if (files.empty()) fail("--calib", "no calibration file given");
            auto stream = tokenize_files(*m.tokenizer, files, m.model->config().add_bos);
            const int64_t limit = m.model->config().max_positions;
            if (a->seqlen > limit)
              fail("--seqlen", "{} is longer than the model supports ({})", a->seqlen, limit);
            auto windows = draw_windows(stream, a->nsamples, a->seqlen, a->seed, a->calib);
            // Every run records its finished blocks, so that one killed or failed can be
            // continued; a record left by another run is never discarded silently.
            const std::string ck_dir = BlockCheckpoints::dir_for(a->out);
            using Previous = BlockCheckpoints::Previous;
            BlockCheckpoints ck(ck_dir,
                                job_identity(a->model, a->tokenizer, a->layer_recipes, a->device,
                                             o, windows),
                                a->resume  ? Previous::Resume
                                : a->force ? Previous::Discard
                                           : Previous::Refuse);
            if (ck.finished() > 0 && !a->quiet)
              std::fprintf(stderr,
                           "lrquant: note: resuming: %lld of %lld blocks finished earlier (%s)\n",
                           (long long)ck.finished(), (long long)m.model->n_layers(),
                           ck_dir.c_str());
            o.checkpoints = &ck;
            auto save_output = [&](const QuantizeReport& rep, const std::optional<BudgetRun>& br) {
              nlohmann::json prov = {{"recipe", o.recipe.str()},
                                     {"layer_recipes", a->layer_recipes},
                                     {"calibration",
                                      {{"files", files},
                                       {"nsamples", a->nsamples},
                                       {"seqlen", a->seqlen},
                                       {"seed", a->seed},
                                       {"fp_inputs", a->fp_inputs},
                                       {"mode", std::string(calib_mode_name(o.calib_mode))},
                                       {"device", a->device},
                                       {"tf32", a->tf32},
                                       {"bf16", a->bf16}}},
                                     {"source", a->model},
                                     {"total", reproducible_total(rep)}};
              if (br) {  // the allocation as the recipes that replay it
                prov["recipe"] = br->alloc.recipe.str();
                prov["layer_recipes"] = br->alloc.layer_recipe_args;
                prov["budget"] = {{"bpw", bo.bpw},
                                  {"objective", std::string(budget_objective_name(bo.objective))},
                                  {"candidates", br->measured.candidates}};
              }
              SaveOptions so{a->out, a->force, prov};
              save_quantized(*m.model, so);
            };
            std::optional<BudgetRun> br;
            QuantizeReport rep;
            // A run that fails after finishing blocks (full disk, a bad layer, out of memory)
            // keeps them: the one-line error says where they are and how to continue.
            try {
              if (b->active())
                br = quantize_to_budget(*m.model, windows, o, bo, reuse ? &*reuse : nullptr);
              rep = br ? br->report : quantize_model(*m.model, windows, o);
              save_output(rep, br);
            } catch (const Error& e) {
              if (ck.finished() == 0) throw;
              throw Error(fmt::format(
                  "{} ({} of {} blocks finished are kept in {}; fix the cause and rerun the same "
                  "command with --resume to continue, or with --force to start over)",
                  e.what(), ck.finished(), m.model->n_layers(), ck_dir));
            }
            ck.remove();
            struct rusage ru;
            getrusage(RUSAGE_SELF, &ru);
            const double peak_mib = double(ru.ru_maxrss) / 1024.0;
            if (!a->report.empty()) {
              nlohmann::json j = rep.to_json();
              j["total"]["peak_rss_mib"] = peak_mib;
              j["recipe"] = o.recipe.str();
              j["model"] = a->model;
              if (br) {
                j["recipe"] = br->alloc.recipe.str();
                j["budget"] = br->to_json();
              }
              write_file_atomic(a->report, j.dump(1) + "\n");
              write_file_atomic(report_svg_path(a->report),
                                report_svg(j, j["recipe"].get<std::string>() + "  (" + a->model + ")"));
            }
            if (!a->quiet) {
              print_table(rep);
              print_stages(rep);
              std::printf("peak resident memory %.1f MiB\n", peak_mib);
            }
            if (br) print_budget(*br);
            std::printf("wrote %s\n", a->out.c_str());
          }};
}

}  // namespace lrq::cli
