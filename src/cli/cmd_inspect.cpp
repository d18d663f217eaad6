#include <cstdio>
#include <map>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "io/gguf.h"

namespace lrq::cli {

Command add_inspect(CLI::App& app) {
  struct Args {
    std::string model, tokenizer;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("inspect", "Architecture, sizes, dtypes and storage of a model");
  sub->add_option("--model", a->model,
                  "Hugging Face folder, lrquant folder, .gguf file or llama2.c .bin")
      ->required();
  sub->add_option("--tokenizer", a->tokenizer, "tokenizer file (default: beside the weights)");
  sub->add_flag("--json", a->json, "print one JSON object");
  return {sub, [a] {
            Loaded m = open_model(a->model, a->tokenizer, false);
            const Model& M = *m.model;
            const ModelConfig& c = M.config();
            std::map<std::string, int64_t> dtype_count;
            size_t bytes = 0;
            for (const auto& [name, t] : M.checkpoint().tensors) {
              dtype_count[std::string(dtype_name(t.dtype()))] += t.numel();
              bytes += t.nbytes();
            }
            size_t linear_bytes = 0;
            int64_t linear_weights = 0;
            // A GGUF's block types are decoded to F32 on loading: count the bytes the file holds.
            const auto& stored_types = M.checkpoint().stored_type;
            for (const auto& n : M.linear_names()) {
              const Linear& l = M.linear(n);
              auto st = stored_types.find(n + ".weight");
              gguf::Type t;
              if (st != stored_types.end() && gguf::type_from_name(st->second, &t))
                linear_bytes += size_t(l.out_features()) * gguf::row_bytes(t, l.in_features());
              else
                linear_bytes += l.storage_bytes();
              linear_weights += l.in_features() * l.out_features();
            }
            nlohmann::json j = {
                {"path", a->model},
                {"architecture", c.architecture},
                {"model_type", c.model_type},
                {"hidden", c.hidden},
                {"intermediate", c.intermediate},
                {"layers", c.n_layers},
                {"heads", c.n_heads},
                {"kv_heads", c.n_kv_heads},
                {"head_dim", c.head_dim},
                {"vocab", c.vocab},
                {"max_positions", c.max_positions},
                {"rope_theta", c.rope_theta},
                {"rms_eps", c.rms_eps},
                {"tied_embeddings", c.tied_embeddings},
                {"parameters", M.parameter_count()},
                {"tensor_bytes", bytes},
                {"dtypes", dtype_count},
                {"linear_weights", linear_weights},
                {"linear_bytes", linear_bytes},
                {"linear_bits_per_weight", 8.0 * double(linear_bytes) / double(linear_weights)},
                {"quantization", M.checkpoint().quantization.is_null()
                                     ? nlohmann::json(nullptr)
                                     : nlohmann::json(M.checkpoint().quantization.value(
                                           "recipe", std::string()))}};
            std::map<std::string, int64_t> stored;
            for (const auto& [name, t] : M.checkpoint().stored_type) ++stored[t];
            if (!stored.empty()) j["gguf_types"] = stored;
            if (m.tokenizer)
              j["tokenizer"] = {{"vocab", m.tokenizer->vocab_size()},
                                {"bos", m.tokenizer->bos_id()},
                                {"eos", m.tokenizer->eos_id()}};
            if (a->json) {
              std::printf("%s\n", j.dump(2).c_str());
              return;
            }
            std::printf("%s (%s)\n", a->model.c_str(), c.architecture.c_str());
            std::printf("  layers %lld, hidden %lld, intermediate %lld, heads %lld/%lld kv, "
                        "head_dim %lld, vocab %lld, max positions %lld\n",
                        (long long)c.n_layers, (long long)c.hidden, (long long)c.intermediate,
                        (long long)c.n_heads, (long long)c.n_kv_heads, (long long)c.head_dim,
                        (long long)c.vocab, (long long)c.max_positions);
            std::printf("  rope theta %g%s, rms eps %g, %s embeddings\n", c.rope_theta,
                        c.rope_interleaved ? " (interleaved)" : "", c.rms_eps,
                        c.tied_embeddings ? "tied" : "untied");
            std::printf("  parameters %lld, tensor bytes %zu\n", (long long)M.parameter_count(),
                        bytes);
            for (const auto& [d, n] : dtype_count)
              std::printf("  %-5s %lld elements\n", d.c_str(), (long long)n);
            if (!stored.empty()) {
              std::string list;
              for (const auto& [t, n] : stored)
                list += (list.empty() ? "" : ", ") + t + " " + std::to_string(n);
              std::printf("  GGUF tensor types: %s\n", list.c_str());
            }
            std::printf("  projections: %lld weights, %zu bytes, %.3f bits/weight\n",
                        (long long)linear_weights, linear_bytes,
                        8.0 * double(linear_bytes) / double(linear_weights));
            if (m.tokenizer)
              std::printf("  tokenizer: %d tokens, bos %d, eos %d\n", m.tokenizer->vocab_size(),
                          m.tokenizer->bos_id(), m.tokenizer->eos_id());
          }};
}

}  // namespace lrq::cli
