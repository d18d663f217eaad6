#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/interrupt.h"
#include "formats/gguf_export.h"
#include "formats/load_model.h"

namespace lrq::cli {

namespace fs = std::filesystem;

Command add_export(CLI::App& app) {
  struct Args {
    std::string model, out, type = "auto", tokenizer, name, lora_out;
    bool force = false, json = false;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("export", "Write a model as a GGUF file for llama.cpp");
  sub->add_option("--model", a->model, "Hugging Face folder, lrquant folder or .gguf")->required();
  sub->add_option("--out", a->out, "GGUF file to write")->required();
  sub->add_option("--type", a->type,
                  "auto (as stored) | f32 | f16 | bf16 | q8_0 | q4_0 | q4_1 (projections of a "
                  "dense model)")
      ->capture_default_str();
  sub->add_option("--tokenizer", a->tokenizer,
                  "SentencePiece .model (default: beside the weights)");
  sub->add_option("--name", a->name, "general.name (default: the model's folder name)");
  sub->add_option("--lora-out", a->lora_out,
                  "write the low-rank branches (FLRQ, +lr) as a llama.cpp LoRA adapter GGUF; "
                  "the base file then holds the quantized residuals");
  sub->add_flag("--force", a->force, "replace an existing output file");
  sub->add_flag("--json", a->json, "print one JSON object");
  return {sub, [a] {
            install_interrupt_handler();
            std::error_code ec;
            if (fs::is_directory(a->out, ec)) fail(a->out, "is a directory, expected a file name");
            for (const std::string& out : {a->out, a->lora_out}) {
              if (out.empty()) continue;
              if (fs::is_directory(out, ec)) fail(out, "is a directory, expected a file name");
              if (fs::exists(out, ec)) {
                if (fs::equivalent(out, a->model, ec))
                  fail(out, "is the input model; write the export elsewhere");
                if (!a->force) fail(out, "output file exists (pass --force to replace it)");
              }
            }
            if (!a->lora_out.empty() && fs::absolute(a->lora_out) == fs::absolute(a->out))
              fail(a->lora_out, "is also --out; the adapter needs a file of its own");
            auto t0 = std::chrono::steady_clock::now();
            std::unique_ptr<Model> model = load_model(a->model);
            const std::string tok =
                a->tokenizer.empty() ? model->checkpoint().tokenizer_path : a->tokenizer;
            if (tok.empty())
              fail(a->model,
                   "no tokenizer found beside the weights; pass --tokenizer FILE (a "
                   "SentencePiece .model)");
            SpmVocab vocab = load_spm_vocab(tok);
            // Whether a text starts with BOS is the model's setting (tokenizer_config.json), not
            // the SentencePiece file's.
            vocab.add_bos = model->config().add_bos;
            GgufExportOptions o;
            o.type = a->type;
            o.name = a->name;
            o.lora_out = a->lora_out;
            if (o.name.empty()) {
              fs::path p = fs::path(a->model).lexically_normal();
              if (p.filename().empty()) p = p.parent_path();
              o.name = p.stem().string();
            }
            const GgufExportSummary s = export_gguf(*model, vocab, o, a->out);
            const double sec =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            const double bpw = 8.0 * double(s.projection_bytes) / double(s.projection_weights);
            if (a->json) {
              nlohmann::json j = {{"model", a->model},
                                  {"out", a->out},
                                  {"type", a->type},
                                  {"tensors", s.tensors},
                                  {"transcoded_layers", s.transcoded},
                                  {"projection_bits_per_weight", bpw},
                                  {"bytes", s.file_bytes},
                                  {"adapter", a->lora_out},
                                  {"adapter_layers", s.adapter_layers},
                                  {"adapter_max_rank", s.adapter_max_rank},
                                  {"adapter_bytes", s.adapter_bytes},
                                  {"seconds", sec}};
              std::printf("%s\n", j.dump().c_str());
              return;
            }
            std::string types;
            for (const auto& [t, n] : s.tensors)
              types += (types.empty() ? "" : ", ") + t + " " + std::to_string(n);
            std::printf(
                "wrote %s: %llu bytes, tensors %s; projections %.3f bits/weight%s (%.1f s)\n",
                a->out.c_str(), (unsigned long long)s.file_bytes, types.c_str(), bpw,
                s.transcoded ? (", " + std::to_string(s.transcoded) +
                                " lrquant layers transcoded bit for bit")
                                   .c_str()
                             : "",
                sec);
            if (!a->lora_out.empty())
              std::printf("wrote %s: %llu bytes, LoRA adapter of %lld layers (rank up to %lld)\n",
                          a->lora_out.c_str(), (unsigned long long)s.adapter_bytes,
                          (long long)s.adapter_layers, (long long)s.adapter_max_rank);
          }};
}

}  // namespace lrq::cli
