// Formats as data: every layer kind the registry knows saves and loads back to the same layer
// (same bytes, same decoded matrix, same products), old checkpoints without kind tags still
// load, and unknown kinds or transform stages are errors that name the layer. Built from the
// runtime alone but for two fits (NormalFloat's codebook, the K-quant blocks: random bytes would not
// make finite F16 scales); other layers are packed from random codes.
#include <algorithm>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/error.h"
#include "formats/ggml_linear.h"
#include "formats/lords_linear.h"
#include "formats/packed_linear.h"
#include "quant/kernels/kquant_grid.h"
#include "quant/kernels/nf_codebook.h"
#include "formats/registry.h"
#include "formats/transform.h"
#include "test_util.h"

using namespace lrq;

namespace {

using test::randn;

PackedWeight random_packed(int64_t rows, int64_t cols, int bits, int64_t group, QuantFormat f,
                           uint64_t seed) {
  std::mt19937_64 g(seed);
  Tensor codes = Tensor::empty({rows, cols}, DType::U8);
  for (int64_t i = 0; i < codes.numel(); ++i) codes.at<uint8_t>(i) = uint8_t(g() % (1u << bits));
  Tensor scales = randn({rows, cols / group}, seed + 1, 0.01, 0.05).to(DType::F16);
  Tensor offsets = f == QuantFormat::Affine ? randn({rows, cols / group}, seed + 2, 0.1).to(DType::F16)
                                            : Tensor();
  Tensor codebook;
  if (f == QuantFormat::Codebook) {
    codebook = Tensor::empty({int64_t(1) << bits});
    for (int64_t k = 0; k < codebook.numel(); ++k)
      codebook.at<float>(k) = -1.0f + 2.0f * float(k) / float(codebook.numel() - 1);
  }
  return PackedWeight::pack(codes, scales, offsets, codebook, bits, group, f);
}

struct Case {
  std::string name;
  std::unique_ptr<Linear> layer;
};

// One layer per stored variant: every packed format, every transform stage in more than one
// order, both low-rank factor precisions, a bias beside a packed weight.
std::vector<Case> all_cases() {
  const int64_t in = 256, out = 96;
  std::vector<int32_t> perm(in);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(5));
  Tensor s = randn({in}, 6, 0.2, 1.0);
  for (int64_t i = 0; i < in; ++i) s.at<float>(i) = std::fabs(s.at<float>(i)) + 0.25f;
  const Tensor s16 = s.to(DType::F16);
  std::vector<Case> cases;
  auto add = [&](std::string name, PackedWeight q, InputTransform t, std::vector<LowRankPart> lr) {
    cases.push_back({std::move(name), std::make_unique<PackedLinear>(std::move(q), std::move(t),
                                                                     std::move(lr))});
  };
  add("affine w4g128", random_packed(out, in, 4, 128, QuantFormat::Affine, 10), {}, {});
  add("symmetric w3g64 scale perm wht",
      random_packed(out, in, 3, 64, QuantFormat::Symmetric, 20),
      InputTransform().scale(s16).permute(perm).hadamard(64, 1),
      {LowRankPart::from_f32(randn({out, 6}, 21, 0.1), randn({6, in}, 22, 0.1), false),
       LowRankPart::from_f32(randn({out, 4}, 23, 0.1), randn({4, in}, 24, 0.1), true)});
  add("codebook b4 wht perm (other order)",
      random_packed(out, in, 4, 64, QuantFormat::Codebook, 30),
      InputTransform().hadamard(128, 0).permute(perm), {});
  add("affine w2g32 perm", random_packed(out, in, 2, 32, QuantFormat::Affine, 40),
      InputTransform().permute(perm), {});
  {
    Tensor codes = Tensor::empty({out, in}, DType::U8);
    for (int64_t e = 0; e < codes.numel(); ++e) codes.data<uint8_t>()[e] = uint8_t((e * 7 + 3) % 8);
    cases.push_back({"lords b3 r5", LordsLinear::pack(codes, randn({out, 5}, 60, 0.3, 0.5),
                                                      randn({5, in}, 61, 0.3, 0.5),
                                                      nf_codebook(3), 3)});
  }
  cases.push_back(
      {"ggml q4_K perm +lr",
       std::make_unique<GgmlLinear>(
           gguf::Type::Q4_K, kquant_rtn(randn({out, in}, 70, 0.05), gguf::Type::Q4_K), in,
           InputTransform().permute(perm),
           std::vector<LowRankPart>{
               LowRankPart::from_f32(randn({out, 3}, 71, 0.1), randn({3, in}, 72, 0.1), false)})});
  auto inner = std::make_unique<PackedLinear>(random_packed(out, in, 8, 128, QuantFormat::Symmetric, 50),
                                              InputTransform(), std::vector<LowRankPart>{});
  cases.push_back({"symmetric w8 + bias",
                   std::make_unique<BiasedLinear>(std::move(inner), randn({out}, 51))});
  return cases;
}

std::function<Tensor(const std::string&)> lookup(const NamedTensors& saved) {
  return [&saved](const std::string& name) {
    for (const auto& [n, t] : saved)
      if (n == name) return t;
    fail("test checkpoint", "no tensor '{}'", name);
  };
}

// Layers the registry builds, wrapped the way the model loader wraps a stored bias.
std::unique_ptr<Linear> load_back(const std::string& prefix, const nlohmann::json& meta,
                                  const NamedTensors& saved, int64_t in, int64_t out) {
  std::unique_ptr<Linear> l = load_layer(LayerSource{prefix, meta, lookup(saved), in, out, "test"});
  for (const auto& [n, t] : saved)
    if (n == prefix + ".bias") return std::make_unique<BiasedLinear>(std::move(l), t);
  return l;
}

void expect_same_layer(const Linear& a, const Linear& b, const std::string& what) {
  EXPECT_EQ(a.describe(), b.describe()) << what;
  EXPECT_EQ(a.storage_bytes(), b.storage_bytes()) << what;
  const Tensor wa = a.dequantize(), wb = b.dequantize();
  ASSERT_EQ(wa.numel(), wb.numel()) << what;
  EXPECT_EQ(0, std::memcmp(wa.raw(), wb.raw(), wa.nbytes())) << what << ": decoded matrices differ";
  const Tensor x = randn({3, a.in_features()}, 99);
  Tensor ya = Tensor::empty({3, a.out_features()}), yb = Tensor::empty({3, a.out_features()});
  a.forward(x, ya);
  b.forward(x, yb);
  EXPECT_EQ(0, std::memcmp(ya.raw(), yb.raw(), ya.nbytes())) << what << ": products differ";
}

}  // namespace

TEST(Formats, EveryLayerKindSavesAndLoadsBackThroughTheRegistry) {
  std::set<std::string> kinds_seen;
  for (const auto& c : all_cases()) {
    NamedTensors saved;
    const nlohmann::json meta = c.layer->save("layer", saved);
    ASSERT_TRUE(meta.is_object()) << c.name;
    ASSERT_TRUE(meta.contains("kind")) << c.name;
    kinds_seen.insert(meta.at("kind").get<std::string>());
    // Through JSON text, as a checkpoint stores it.
    const nlohmann::json stored = nlohmann::json::parse(meta.dump());
    const auto back = load_back("layer", stored, saved, c.layer->in_features(),
                                c.layer->out_features());
    expect_same_layer(*c.layer, *back, c.name);
  }
  // A kind registered without a case here fails this test: add one when adding a format.
  const auto kinds = layer_kinds();
  EXPECT_EQ(std::set<std::string>(kinds.begin(), kinds.end()), kinds_seen);
}

TEST(Formats, TransformChainKeepsItsOrder) {
  const auto cases = all_cases();
  NamedTensors saved;
  const nlohmann::json meta = cases[2].layer->save("layer", saved);
  EXPECT_EQ(meta.at("transforms"), nlohmann::json({"hadamard", "perm"}));
  // Applying the chain equals applying its stages one by one, in order.
  const auto& ql = dynamic_cast<const PackedLinear&>(*cases[1].layer);
  const Tensor x = randn({4, 256}, 7);
  Tensor got = Tensor::empty({4, 256}), want = x.clone();
  ql.transform().apply(x, got);
  for (const auto& st : ql.transform().stages()) {
    Tensor next = Tensor::empty({4, 256});
    st->apply(want, next);
    want = next;
  }
  EXPECT_EQ(0, std::memcmp(got.raw(), want.raw(), got.nbytes()));
}

TEST(Formats, VersionOneMetadataWithoutTagsLoads) {
  // format_version 1 wrote no "kind" and no "transforms": packed, stages in the fixed order
  // scale, perm, hadamard.
  const auto cases = all_cases();
  const Linear& l = *cases[1].layer;
  NamedTensors saved;
  nlohmann::json meta = l.save("layer", saved);
  meta.erase("kind");
  meta.erase("transforms");
  const auto back = load_back("layer", meta, saved, l.in_features(), l.out_features());
  expect_same_layer(l, *back, "version 1 metadata");
}

TEST(Formats, UnknownKindsAndStagesAreErrorsNamingTheLayer) {
  const auto cases = all_cases();
  NamedTensors saved;
  nlohmann::json meta = cases[1].layer->save("layer", saved);
  auto message = [&](const nlohmann::json& m) {
    try {
      load_layer(LayerSource{"layer", m, lookup(saved), 256, 96, "ck: layer layer"});
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  nlohmann::json bad = meta;
  bad["kind"] = "sparse";
  EXPECT_NE(message(bad).find("ck: layer layer"), std::string::npos) << message(bad);
  EXPECT_NE(message(bad).find("unknown layer kind 'sparse' (this build reads: ggml, lords, packed"),
            std::string::npos)
      << message(bad);
  bad = meta;
  bad["kind"] = 3;
  EXPECT_NE(message(bad).find("layer kind must be a string"), std::string::npos) << message(bad);
  bad = meta;
  bad["transforms"] = {"scale", "rotate"};
  EXPECT_NE(message(bad).find("unknown input transform 'rotate'"), std::string::npos)
      << message(bad);
  bad = meta;
  bad["transforms"] = "perm";
  EXPECT_NE(message(bad).find("transforms must be a list"), std::string::npos) << message(bad);
  // A stage whose stored tensor is missing names it.
  NamedTensors partial;
  for (const auto& [n, t] : saved)
    if (n != "layer.input_scale") partial.emplace_back(n, t);
  try {
    load_layer(LayerSource{"layer", meta, lookup(partial), 256, 96, "ck"});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer.input_scale"), std::string::npos) << e.what();
  }
}
