#include "formats/gguf_export.h"

#include <cstring>
#include <filesystem>
#include <functional>
#include <set>

#include "core/interrupt.h"
#include "formats/ggml_linear.h"
#include "formats/lords_linear.h"
#include "formats/packed_linear.h"

namespace lrq {

namespace fs = std::filesystem;

namespace {

constexpr const char* kExactRecipes =
    "recipes that export exactly: rtn or gptq (no act_order) with q4_0, q4_1, q8_0 or q2_k..q6_k "
    "(K-quants), flrq with one of these types and --lora-out";

// One GGUF tensor: where its rows come from and how each is written.
struct Source {
  std::string hf;              // Hugging Face name, for messages
  int64_t rows = 1, cols = 0;  // row-major; a vector is one row
  bool vector = false;         // 1-D (the norms)
  gguf::Type type = gguf::Type::F32;
  // Writes row `r` of the source (in Hugging Face order) to `dst` in `type`.
  std::function<void(int64_t r, uint8_t* dst)> row;
};

// A float tensor (F32/F16/BF16) written row by row in `type`, converting through F32 unless the
// types agree (then the bytes are copied and nothing rounds).
Source float_source(const std::string& hf, const Tensor& t, gguf::Type type) {
  LRQ_ASSERT(t.is_cpu());
  Source s;
  s.hf = hf;
  s.rows = t.ndim() == 2 ? t.dim(0) : 1;
  s.cols = t.ndim() == 2 ? t.dim(1) : t.numel();
  s.vector = t.ndim() != 2;
  s.type = type;
  const bool same = (type == gguf::Type::F32 && t.dtype() == DType::F32) ||
                    (type == gguf::Type::F16 && t.dtype() == DType::F16) ||
                    (type == gguf::Type::BF16 && t.dtype() == DType::BF16);
  const size_t in_rb = size_t(s.cols) * dtype_size(t.dtype());
  const auto* base = static_cast<const uint8_t*>(t.raw());
  const DType dt = t.dtype();
  const int64_t cols = s.cols;
  s.row = [=](int64_t r, uint8_t* dst) {
    const uint8_t* src = base + size_t(r) * in_rb;
    if (same) {
      std::memcpy(dst, src, in_rb);
      return;
    }
    std::vector<float> tmp(static_cast<size_t>(cols));
    convert_to_f32(src, dt, tmp.data(), tmp.size());
    gguf::traits(type).encode(tmp.data(), dst, cols);
  };
  return s;
}

// A packed layer whose format is a ggml block type: each 32-value chunk of codes with its F16
// scale (and offset) is one block, copied (Q8_0: codes c stored as int8 c - 128).
Source packed_source(const std::string& hf, const PackedWeight& q, gguf::Type type) {
  LRQ_ASSERT(q.device() == Device::CPU && q.group() == gguf::kQK);
  Source s;
  s.hf = hf;
  s.rows = q.rows();
  s.cols = q.cols();
  s.type = type;
  const int64_t nb = q.cols() / gguf::kQK;
  const size_t code_rb = size_t(q.codes().dim(1)), chunk = code_rb / size_t(nb);
  const auto* codes = q.codes().data<uint8_t>();
  const auto* scales = q.scales().data<uint16_t>();
  const uint16_t* offsets = q.offsets().defined() ? q.offsets().data<uint16_t>() : nullptr;
  s.row = [=](int64_t r, uint8_t* dst) {
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* c = codes + size_t(r) * code_rb + size_t(b) * chunk;
      const uint16_t d = scales[r * nb + b];
      if (type == gguf::Type::Q4_0) {
        gguf::BlockQ4_0 blk{d, {}};
        std::memcpy(blk.qs, c, sizeof blk.qs);
        std::memcpy(dst + size_t(b) * sizeof blk, &blk, sizeof blk);
      } else if (type == gguf::Type::Q4_1) {
        gguf::BlockQ4_1 blk{d, offsets[r * nb + b], {}};
        std::memcpy(blk.qs, c, sizeof blk.qs);
        std::memcpy(dst + size_t(b) * sizeof blk, &blk, sizeof blk);
      } else {
        gguf::BlockQ8_0 blk{d, {}};
        for (int k = 0; k < gguf::kQK; ++k) blk.qs[k] = int8_t(int(c[k]) - 128);
        std::memcpy(dst + size_t(b) * sizeof blk, &blk, sizeof blk);
      }
    }
  };
  return s;
}

// A ggml layer's blocks: row r of the stored matrix is row r of the tensor, as is.
Source ggml_source(const std::string& hf, const GgmlLinear& g) {
  Source s;
  s.hf = hf;
  s.rows = g.out_features();
  s.cols = g.in_features();
  s.type = g.type();
  const uint8_t* b = g.blocks().data<uint8_t>();
  const size_t rb = size_t(g.blocks().dim(1));
  s.row = [=](int64_t r, uint8_t* dst) { std::memcpy(dst, b + size_t(r) * rb, rb); };
  return s;
}

// The low-rank parts of one layer side by side as F32 rows: A = [R_1; R_2; ...] [r, in] (rows of
// lora_a) when `a`, else B = [L_1, L_2, ...] [out, r] (rows of lora_b). The stored F16 (or int8
// times F16 scale) factors widen to F32 exactly as the runtime widens them, and llama.cpp
// multiplies F32 adapter tensors in F32.
Source lora_source(const std::string& hf, const LowRankLinear& l, bool a) {
  std::vector<std::pair<Tensor, Tensor>> f;
  for (const LowRankPart& p : l.low_rank()) f.push_back(p.to_f32());
  const int64_t r = l.rank(), in = l.in_features(), out = l.out_features();
  Tensor m = Tensor::empty(a ? Shape{r, in} : Shape{out, r});
  int64_t k0 = 0;
  for (const auto& [L, R] : f) {
    const int64_t k = R.dim(0);
    for (int64_t i = 0; i < k; ++i)
      if (a) std::memcpy(m.data<float>() + (k0 + i) * in, R.data<float>() + i * in, 4 * size_t(in));
    if (!a)
      for (int64_t o = 0; o < out; ++o)
        std::memcpy(m.data<float>() + o * r + k0, L.data<float>() + o * k, 4 * size_t(k));
    k0 += k;
  }
  Source s = float_source(hf, m, gguf::Type::F32);
  // float_source keeps a pointer into m's storage: the tensor must outlive the source.
  auto row = s.row;
  s.row = [row, m](int64_t i, uint8_t* dst) { row(i, dst); };
  return s;
}

gguf::Type float_type_of(DType d) {
  return d == DType::F32 ? gguf::Type::F32 : d == DType::F16 ? gguf::Type::F16 : gguf::Type::BF16;
}

// Adds every planned tensor to `w`, rows of attn_q/attn_k (by their Hugging Face name) in
// llama.cpp's RoPE order.
void add_tensors(gguf::Writer& w, std::vector<std::pair<std::string, Source>>& plan, bool permute,
                 int64_t head_dim, std::map<std::string, int64_t>* types) {
  for (auto& [gname, s] : plan) {
    LRQ_ASSERT(!gname.empty());
    ++(*types)[std::string(gguf::type_name(s.type))];
    const bool rope = permute && gguf::rope_permuted(s.hf);
    const int64_t hd = head_dim;
    std::vector<int64_t> ne =
        s.vector ? std::vector<int64_t>{s.cols} : std::vector<int64_t>{s.cols, s.rows};
    const size_t rb = gguf::row_bytes(s.type, s.cols);
    // An init-capture: clang 14 cannot capture a structured binding.
    w.add_tensor(gname, std::move(ne), s.type, [s = s, rope, hd, rb](uint8_t* dst) {
      check_interrupted();
#pragma omp parallel for schedule(dynamic, 16)
      for (int64_t r = 0; r < s.rows; ++r)
        s.row(rope ? gguf::rope_hf_row(r, hd) : r, dst + size_t(r) * rb);
    });
  }
}

}  // namespace

std::string exact_gguf_type(const Linear& layer, gguf::Type* type, bool lora) {
  if (dynamic_cast<const LordsLinear*>(&layer))
    return fmt::format("a LoRDS layer (codes times a low-rank scale matrix) has no ggml type; {}",
                       kExactRecipes);
  const auto* l = dynamic_cast<const LowRankLinear*>(&layer);
  if (!l) return fmt::format("a {} layer has no ggml type; {}", layer.describe(), kExactRecipes);
  if (!l->low_rank().empty() && !lora)
    return fmt::format(
        "its low-rank branch (rank {}) cannot be stored in a GGUF tensor (pass --lora-out "
        "ADAPTER.gguf to write it as a llama.cpp LoRA adapter)",
        l->rank());
  if (!l->transform().empty()) {
    // A rotation or permutation of the input acts on x before Q, while llama.cpp applies the
    // adapter to the same x as the base: with a transform neither the base nor W + B A holds.
    std::string why = l->transform().find<PermuteStage>()
                          ? "a column permutation (act_order or LoPRo)"
                      : l->transform().find<ScaleStage>() ? "an input scale (AWQ)"
                                                          : "a Hadamard rotation (LoPRo)";
    return fmt::format("its input transform ({}) has no place in a ggml block type; {}", why,
                       kExactRecipes);
  }
  if (const auto* g = dynamic_cast<const GgmlLinear*>(l)) {
    *type = g->type();
    return "";
  }
  const auto* p = dynamic_cast<const PackedLinear*>(l);
  if (!p) return fmt::format("a {} layer has no ggml type; {}", layer.describe(), kExactRecipes);
  const PackedWeight& q = p->packed();
  const QuantFormat f = q.format();
  if (f == QuantFormat::Codebook)
    return fmt::format("its codebook (NormalFloat) grid is not a ggml grid; {}", kExactRecipes);
  if (q.group() != gguf::kQK)
    return fmt::format("its groups of {} are not ggml's blocks of 32; {}", q.group(),
                       kExactRecipes);
  if (q.bits() == 4 && f == QuantFormat::Symmetric)
    *type = gguf::Type::Q4_0;
  else if (q.bits() == 4 && f == QuantFormat::Affine)
    *type = gguf::Type::Q4_1;
  else if (q.bits() == 8 && f == QuantFormat::Symmetric)
    *type = gguf::Type::Q8_0;
  else
    return fmt::format("{}-bit {} groups have no ggml block type; {}", q.bits(),
                       quant_format_name(f), kExactRecipes);
  return "";
}

GgufExportSummary export_gguf(const Model& model, const SpmVocab& vocab, const GgufExportOptions& o,
                              const std::string& out) {
  const Checkpoint& ck = model.checkpoint();
  const ModelConfig& c = model.config();
  const std::string& src = ck.path;
  if (model.device() != Device::CPU) fail(src, "export runs on a CPU model");
  if (c.qkv_bias || c.qk_norm ||
      (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "llama2c"))
    fail(src, "{} export is not implemented (the llama architecture only: Llama, Mistral)",
         c.architecture);
  if (c.sliding_window > 0 && c.sliding_window < c.max_positions)
    fail(src,
         "sliding window of {} tokens: llama.cpp's llama architecture attends to the whole "
         "context, so the exported model would differ beyond {} tokens",
         c.sliding_window, c.sliding_window);
  if (int64_t(vocab.tokens.size()) > c.vocab)
    fail(src, "the tokenizer has {} tokens but the embedding only {} rows", vocab.tokens.size(),
         c.vocab);

  if (model.activation_quant().active())
    fail(src, "runs with {}-bit activations (a8 {}, kv8 {}), which GGUF cannot record: llama.cpp "
         "would run it with full-precision activations", ActivationQuant::kBits,
         act_mode_name(model.activation_quant().a8), model.activation_quant().kv8 ? "on" : "off");

  gguf::Type target = gguf::Type::F32;
  if (o.type != "auto" && !gguf::type_from_name(o.type, &target))
    fail("--type", "unknown type '{}' (valid: auto, f32, f16, bf16, q8_0, q4_0, q4_1)", o.type);
  const bool block_target = o.type != "auto" && gguf::traits(target).block > 1;
  if (o.type != "auto" &&
      !(target == gguf::Type::F32 || target == gguf::Type::F16 || target == gguf::Type::BF16 ||
        target == gguf::Type::Q8_0 || target == gguf::Type::Q4_0 || target == gguf::Type::Q4_1))
    fail("--type", "{} is not an export type (valid: auto, f32, f16, bf16, q8_0, q4_0, q4_1)",
         o.type);
  const bool quantized = !ck.quantization.is_null();
  if (quantized && block_target)
    fail(src,
         "is already quantized by lrquant (recipe {}): its layers are transcoded as "
         "stored; leave out --type or give a float type for the dense tensors",
         ck.quantization.value("recipe", std::string("?")));

  // Norms stay F32 (llama.cpp multiplies them in F32); other float tensors follow --type, or
  // keep their stored type under "auto" and for the embedding and head of a block --type.
  auto float_target = [&](const Tensor& t, bool norm) {
    if (norm) return gguf::Type::F32;
    if (o.type == "auto" || block_target) return float_type_of(t.dtype());
    return target;
  };
  const bool permute = !c.rope_interleaved;  // llama2.c weights are in llama.cpp's order already
  std::vector<std::pair<std::string, Source>> plan;  // GGUF name, source
  std::vector<std::pair<std::string, Source>> adapter;
  std::set<int64_t> ranks;
  const bool lora = !o.lora_out.empty();
  GgufExportSummary sum;

  auto add_float = [&](const std::string& hf, bool norm) {
    const Tensor& t = ck.get(hf);
    plan.emplace_back(gguf::llama_name(hf), float_source(hf, t, float_target(t, norm)));
  };
  add_float("model.embed_tokens.weight", false);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    add_float(l + "input_layernorm.weight", true);
    for (const std::string& p : projection_names()) {
      const std::string name = Model::linear_name(i, p);
      const Linear& layer = model.linear(name);
      const std::string hf = name + ".weight";
      Source s;
      if (const auto* dense = dynamic_cast<const DenseLinear*>(&layer)) {
        const Tensor& w = dense->weight();
        s = float_source(hf, w, block_target ? target : float_target(w, false));
        if (block_target && w.dim(1) % gguf::kQK != 0)
          fail(src, "layer {} has {} input columns, not a multiple of ggml's 32-value blocks", name,
               w.dim(1));
      } else {
        gguf::Type t;
        const std::string why = exact_gguf_type(layer, &t, lora);
        if (!why.empty()) fail(src, "layer {} cannot be exported exactly: {}", name, why);
        const auto& l = dynamic_cast<const LowRankLinear&>(layer);
        if (const auto* g = dynamic_cast<const GgmlLinear*>(&l))
          s = ggml_source(hf, *g);
        else
          s = packed_source(hf, dynamic_cast<const PackedLinear&>(l).packed(), t);
        ++sum.transcoded;
        if (!l.low_rank().empty()) {
          // lora_b's rows are output rows: q and k take the RoPE order as their weights do
          // (the writer permutes by the Hugging Face name); lora_a's rows are ranks.
          const std::string g = gguf::llama_name(hf);
          const std::string base = g.substr(0, g.size() - std::string(".weight").size());
          adapter.emplace_back(g + ".lora_a", lora_source(base + ".lora_a", l, true));
          adapter.emplace_back(g + ".lora_b", lora_source(hf, l, false));
          ranks.insert(l.rank());
          ++sum.adapter_layers;
          sum.adapter_max_rank = std::max(sum.adapter_max_rank, l.rank());
        }
      }
      sum.projection_weights += s.rows * s.cols;
      sum.projection_bytes += uint64_t(s.rows) * gguf::row_bytes(s.type, s.cols);
      plan.emplace_back(gguf::llama_name(hf), std::move(s));
    }
    add_float(l + "post_attention_layernorm.weight", true);
  }
  add_float("model.norm.weight", true);
  if (!c.tied_embeddings) add_float("lm_head.weight", false);

  gguf::Writer w;
  gguf::set_llama_metadata(w, c, vocab, o.name);
  if (quantized) {
    w.set("general.quantized_by", gguf::Value::string("lrquant"));
    w.set("lrquant.recipe", gguf::Value::string(ck.quantization.value("recipe", std::string("?"))));
  }
  if (quantized || block_target) w.set("general.quantization_version", gguf::Value::u32(2));
  add_tensors(w, plan, permute, c.head_dim, &sum.tensors);
  sum.file_bytes = w.file_bytes();
  if (lora) {
    if (adapter.empty())
      fail(src, "--lora-out: no layer has a low-rank branch (the model's recipe is {})",
           ck.quantization.is_null() ? std::string("none")
                                     : ck.quantization.value("recipe", std::string("?")));
    gguf::Writer a;
    a.set("general.architecture", gguf::Value::string("llama"));
    a.set("general.type", gguf::Value::string("adapter"));
    a.set("general.name", gguf::Value::string(o.name));
    a.set("adapter.type", gguf::Value::string("lora"));
    // llama.cpp scales B A x by alpha / r with r each tensor's own rank, or by 1 when alpha is
    // 0: alpha = r when every layer has rank r, else 0, so the branch is added unscaled.
    a.set("adapter.lora.alpha", gguf::Value::f32(ranks.size() == 1 ? float(*ranks.begin()) : 0.f));
    std::map<std::string, int64_t> types;
    add_tensors(a, adapter, permute, c.head_dim, &types);
    sum.adapter_bytes = a.file_bytes();
    // The base first: an adapter is only written beside the model it belongs to.
    w.write(out);
    a.write(o.lora_out);
    return sum;
  }
  w.write(out);
  return sum;
}

}  // namespace lrq
