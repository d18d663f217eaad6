// llama2.c checkpoints (version 0): a 7-int32 header, then float32 arrays, each stacked over
// the layers. Mapped to Hugging Face names so the model code sees one vocabulary.
#include <bit>
#include <cstring>
#include <filesystem>

#include "io/checkpoint.h"
#include "io/mapped_file.h"

namespace lrq {

static_assert(std::endian::native == std::endian::little,
              "llama2.c files are little-endian; a big-endian host needs byte swaps");

namespace fs = std::filesystem;

namespace {

constexpr size_t kHeaderBytes = 7 * 4;

// Products in 64 bits with an overflow flag: a corrupt header must not wrap around to the
// actual file size.
struct Count {
  uint64_t v = 0;
  bool overflow = false;
  Count& add(std::initializer_list<int64_t> factors) {
    uint64_t p = 1;
    for (int64_t f : factors) overflow |= __builtin_mul_overflow(p, uint64_t(f), &p);
    overflow |= __builtin_add_overflow(v, p, &v);
    return *this;
  }
};

}  // namespace

Checkpoint load_llama2c(const std::string& path) {
  auto file = MappedFile::open(path);
  if (file->size() < kHeaderBytes)
    fail(path, "file is {} bytes, shorter than the 28-byte llama2.c header (truncated?)",
         file->size());
  int32_t h[7];
  std::memcpy(h, file->data(), kHeaderBytes);
  static const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads",
                                 "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < 7; ++i)
    if (h[i] <= 0 && !(i == 5 && h[i] < 0))
      fail(path, "llama2.c header field {} is {}, must be positive (not a llama2.c checkpoint?)",
           names[i], h[i]);
  const int64_t dim = h[0], hidden = h[1], L = h[2], heads = h[3], kv_heads = h[4];
  const int64_t vocab = h[5] < 0 ? -int64_t(h[5]) : h[5], seq_len = h[6];
  const bool shared_classifier = h[5] > 0;  // negative vocab_size: separate classifier at the end
  if (dim % heads != 0)
    fail(path, "llama2.c header: dim {} is not divisible by n_heads {}", dim, heads);
  if (heads % kv_heads != 0)
    fail(path, "llama2.c header: n_heads {} is not divisible by n_kv_heads {}", heads, kv_heads);
  const int64_t head_size = dim / heads, kv_dim = kv_heads * head_size;
  if (head_size % 2 != 0)
    fail(path, "llama2.c header: head size {} is odd; rotary embeddings need it even", head_size);

  Count floats;
  floats.add({vocab, dim})
      .add({L, dim})
      .add({L, dim, dim})
      .add({L, kv_dim, dim})
      .add({L, kv_dim, dim})
      .add({L, dim, dim})
      .add({L, dim})
      .add({L, hidden, dim})
      .add({L, dim, hidden})
      .add({L, hidden, dim})
      .add({dim})
      .add({2, seq_len, head_size / 2});
  if (!shared_classifier) floats.add({vocab, dim});
  if (floats.overflow || floats.v > (UINT64_MAX - kHeaderBytes) / 4)
    fail(path, "llama2.c header (dim {}, hidden_dim {}, {} layers) implies an impossibly large file",
         dim, hidden, L);
  const uint64_t expected = kHeaderBytes + floats.v * 4;
  if (expected != file->size())
    fail(path,
         "file is {} bytes but its llama2.c header (dim {}, hidden_dim {}, n_layers {}, n_heads {}, "
         "n_kv_heads {}, vocab_size {}, seq_len {}) implies {} bytes{}",
         file->size(), dim, hidden, L, heads, kv_heads, h[5], seq_len, expected,
         file->size() < expected ? " (truncated?)" : "");

  Checkpoint ck;
  ck.path = path;
  ModelConfig& c = ck.config;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama2c";
  c.hidden = dim;
  c.intermediate = hidden;
  c.n_layers = L;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = head_size;
  c.vocab = vocab;
  c.max_positions = seq_len;
  c.rms_eps = 1e-5f;  // llama2.c's run.c hard-codes both
  c.rope_theta = 10000.0f;
  c.rope_interleaved = true;
  c.tied_embeddings = shared_classifier;
  c.bos_id = vocab > 1 ? 1 : -1;
  c.eos_id = vocab > 2 ? 2 : -1;
  c.add_bos = c.bos_id >= 0;
  c.dtype = DType::F32;

  // The header is 28 bytes, so every float array is 4-byte aligned in the page-aligned mapping.
  auto* cursor = reinterpret_cast<float*>(const_cast<char*>(file->data()) + kHeaderBytes);
  auto add = [&](const std::string& name, Shape shape) {
    Tensor t = Tensor::wrap(cursor, shape, DType::F32, Device::CPU, file);
    cursor += t.numel();
    ck.tensors.emplace(name, t);
    ck.tensor_file.emplace(name, path);
  };
  auto per_layer = [&](const std::string& suffix, Shape shape) {
    for (int64_t i = 0; i < L; ++i) add("model.layers." + std::to_string(i) + "." + suffix, shape);
  };
  add("model.embed_tokens.weight", {vocab, dim});
  per_layer("input_layernorm.weight", {dim});
  per_layer("self_attn.q_proj.weight", {dim, dim});
  per_layer("self_attn.k_proj.weight", {kv_dim, dim});
  per_layer("self_attn.v_proj.weight", {kv_dim, dim});
  per_layer("self_attn.o_proj.weight", {dim, dim});
  per_layer("post_attention_layernorm.weight", {dim});
  per_layer("mlp.gate_proj.weight", {hidden, dim});  // w1
  per_layer("mlp.down_proj.weight", {dim, hidden});  // w2
  per_layer("mlp.up_proj.weight", {hidden, dim});    // w3
  add("model.norm.weight", {dim});
  cursor += 2 * seq_len * (head_size / 2);  // legacy rotary tables; rope is computed instead
  if (!shared_classifier) add("lm_head.weight", {vocab, dim});
  LRQ_ASSERT(reinterpret_cast<const char*>(cursor) == file->data() + file->size());

  const fs::path dir = fs::path(path).parent_path();
  std::error_code ec;
  for (std::string name : {"tok" + std::to_string(vocab) + ".bin", std::string("tokenizer.bin")})
    if (fs::exists(dir / name, ec)) {
      ck.tokenizer_path = (dir / name).string();
      break;
    }
  return ck;
}

}  // namespace lrq
