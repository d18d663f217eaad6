#include <cstdio>

#include "backend/ops.h"
#include "cli/common.h"
#include "eval/generate.h"
#include "formats/load_model.h"

namespace lrq::cli {

Command add_generate(CLI::App& app) {
  struct Args {
    std::string model, tokenizer, prompt, device = "cpu";
    SampleOptions s;
    bool no_eos_stop = false, exact = false;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("generate", "Continue a prompt (greedy or sampled)");
  sub->add_option("--model", a->model, "model folder, .gguf file or llama2.c .bin")->required();
  sub->add_option("--tokenizer", a->tokenizer, "tokenizer file (default: beside the weights)");
  sub->add_option("--prompt", a->prompt, "text to continue")->required();
  sub->add_option("--max-tokens", a->s.max_tokens, "new tokens")->required();
  sub->add_option("--temperature", a->s.temperature, "0: greedy")->capture_default_str();
  sub->add_option("--top-p", a->s.top_p, "nucleus mass")->capture_default_str();
  sub->add_option("--seed", a->s.seed, "sampling seed")->capture_default_str();
  sub->add_flag("--ignore-eos", a->no_eos_stop, "keep going after the end-of-text token");
  add_device_option(sub, a->device);
  add_exact_flag(sub, a->exact);
  return {sub, [a] {
            ops::set_exact_kernels(a->exact);
            Loaded m = open_model(a->model, a->tokenizer, true, parse_device(a->device));
            a->s.stop_at_eos = !a->no_eos_stop;
            auto prompt = m.tokenizer->encode(a->prompt, m.model->config().add_bos);
            std::vector<int32_t> all = prompt;
            std::string shown = m.tokenizer->decode(all);
            std::fputs(shown.c_str(), stdout);
            std::fflush(stdout);
            // Decode the whole sequence each step: SentencePiece pieces and byte tokens only
            // form correct text in context, so print the new suffix of the full decode.
            generate(*m.model, prompt, a->s, [&](int32_t t) {
              if (t == m.model->config().eos_id) return;
              all.push_back(t);
              std::string text = m.tokenizer->decode(all);
              if (text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0) {
                std::fputs(text.c_str() + shown.size(), stdout);
                std::fflush(stdout);
                shown = std::move(text);
              }
            });
            std::fputs("\n", stdout);
          }};
}

}  // namespace lrq::cli
