#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "backend/ops.h"
#include "cli/common.h"
#include "eval/perplexity.h"
#include "formats/load_model.h"

namespace lrq::cli {

Command add_eval(CLI::App& app) {
  struct Args {
    std::string model, tokenizer, text, reference, protocol = "nonoverlap", device = "cpu";
    int64_t ctx = 512, max_windows = 0;
    bool json = false, quiet = false, exact = false;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("eval", "Perplexity under a named protocol (docs: EVAL.md)");
  sub->add_option("--model", a->model, "model folder, .gguf file or llama2.c .bin")->required();
  sub->add_option("--tokenizer", a->tokenizer, "tokenizer file (default: beside the weights)");
  sub->add_option("--text", a->text, "text file to score")->required();
  sub->add_option("--ctx", a->ctx, "window length in tokens")->required();
  sub->add_option("--protocol", a->protocol, "nonoverlap | llamacpp")->capture_default_str();
  sub->add_option("--max-windows", a->max_windows, "score at most K windows (0: all)");
  sub->add_option("--reference", a->reference,
                  "full-precision model: also report KL divergence, top-1 agreement, delta p");
  add_device_option(sub, a->device);
  add_exact_flag(sub, a->exact);
  sub->add_flag("--json", a->json, "print one JSON object on stdout");
  sub->add_flag("--quiet", a->quiet, "no progress on stderr");
  return {sub, [a] {
            EvalOptions o;
            o.protocol = parse_protocol(a->protocol);
            o.ctx = a->ctx;
            o.max_windows = a->max_windows;
            o.progress = !a->quiet;
            if (a->max_windows < 0) fail("--max-windows", "must be >= 0");
            const Device dev = parse_device(a->device);
            ops::set_exact_kernels(a->exact);
            Loaded m = open_model(a->model, a->tokenizer, true, dev);
            Loaded ref;
            if (!a->reference.empty()) ref = open_model(a->reference, a->tokenizer, false, dev);
            auto ids = tokenize_file(m, a->text);
            auto t0 = std::chrono::steady_clock::now();
            EvalResult r = evaluate(*m.model, ids, o, m.model->config().bos_id, ref.model.get());
            double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            nlohmann::json j = {{"model", a->model},     {"text", a->text},
                                {"protocol", r.protocol}, {"ppl", r.ppl},
                                {"nll", r.nll},           {"tokens", r.tokens},
                                {"windows", r.windows},   {"stream_tokens", ids.size()},
                                {"seconds", sec},
                                {"tokens_per_s", double(r.windows * o.ctx) / sec}};
            const ActivationQuant& act = m.model->activation_quant();
            if (act.active())  // stored in the folder: runs with no flag, so say so
              j["activations"] = {{"a8", std::string(act_mode_name(act.a8))}, {"kv8", act.kv8}};
            if (r.kld) {
              j["reference"] = a->reference;
              j["ref_ppl"] = *r.ref_ppl;
              j["kld"] = *r.kld;
              j["top1"] = *r.top1;
              j["delta_p"] = *r.delta_p;
            }
            if (a->json) {
              std::printf("%s\n", j.dump().c_str());
              return;
            }
            std::printf("%s on %s: ppl %.4f (nll %.5f, %lld tokens, %lld windows, %s)\n",
                        a->model.c_str(), a->text.c_str(), r.ppl, r.nll, (long long)r.tokens,
                        (long long)r.windows, r.protocol.c_str());
            if (act.active())
              std::printf("activations: a8 %s, kv8 %s (from the folder's config)\n",
                          std::string(act_mode_name(act.a8)).c_str(), act.kv8 ? "on" : "off");
            if (r.kld)
              std::printf("against %s (ppl %.4f): KL %.5f, same top token %.2f%%, "
                          "delta p(correct) %+.5f\n",
                          a->reference.c_str(), *r.ref_ppl, *r.kld, 100 * *r.top1, *r.delta_p);
          }};
}

}  // namespace lrq::cli
