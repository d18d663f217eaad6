// The whole-model training pass (model/model_grad.h) against central finite differences in F64
// on a tiny random Llama (2 blocks, GQA, vocabulary 11, a window with repeated tokens so the
// embedding's scatter-add sums): the gradient of every parameter kind (token embedding, both
// block norms, all seven projections, the final norm, the head), tied and untied, plus the
// cross-entropy and embedding-backward ops on their own, and the F32 pass on lab-s against the
// inference model's logits. Budgets as in grad_test: central differences with h = 1e-5 in F64
// are good to about 1e-9, so 1e-7 leaves a margin while a wrong term fails by 1e-3 or more.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "grad_util.h"
#include "io/checkpoint.h"
#include "model/llama.h"
#include "model/model_grad.h"
#include "test_util.h"

using namespace lrq;
using namespace lrq::test;  // grad_util.h and test_util.h

namespace {


ModelConfig tiny_config(bool tied) {
  ModelConfig c;
  c.hidden = 16;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.intermediate = 24;
  c.n_layers = 2;
  c.vocab = 11;
  c.max_positions = 64;
  c.tied_embeddings = tied;
  return c;
}


// Every parameter of the tiny model under a name, with its analytic gradient beside it.
struct Entry {
  std::string name;
  Tensor* w;
  Tensor* g;
};

void check_model(bool tied) {
  const ModelConfig cfg = tiny_config(tied);
  DenseBlocks blocks;
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    blocks.w.push_back(random_block_weights(cfg, 100 + 20 * uint64_t(l)));
    blocks.g.push_back(blocks.w.back().zeros_like());
  }
  LmWeights w;
  w.embed = rnd({cfg.vocab, cfg.hidden}, 7);
  w.final_norm = rnd({cfg.hidden}, 8, 0.2, 1.0);
  if (!tied) w.head = rnd({cfg.vocab, cfg.hidden}, 9, 0.5);
  ModelGrad model(cfg, w, blocks);
  LmWeights g;
  g.embed = Tensor::zeros(w.embed.shape(), DType::F64);
  g.final_norm = Tensor::zeros(w.final_norm.shape(), DType::F64);
  if (!tied) g.head = Tensor::zeros(w.head.shape(), DType::F64);

  // Token 3 three times (the embedding's scatter adds), token 10 never read, the last target
  // skipped (-1: the last position predicts nothing, so its row's gradient is zero).
  const std::vector<int32_t> tokens = {1, 3, 5, 3, 0, 7, 3, 9, 2, 4, -1};
  const double scale = 0.37;  // any scale: the gradient is scale x d(sum NLL)
  auto loss = [&] { return model.loss(tokens); };
  const double l0 = model.loss_and_grad(tokens, scale, g);
  EXPECT_NEAR(l0, loss(), 1e-12 * std::abs(l0));

  std::vector<Entry> entries = {{"embed", &model.weights().embed, &g.embed},
                                {"final_norm", &model.weights().final_norm, &g.final_norm}};
  if (!tied) entries.push_back({"head", &model.weights().head, &g.head});
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    auto wn = blocks.w[size_t(l)].named();
    auto gn = blocks.g[size_t(l)].named();
    for (size_t i = 0; i < wn.size(); ++i)
      entries.push_back({"block " + std::to_string(l) + " " + wn[i].first, wn[i].second,
                         gn[i].second});
  }
  for (const Entry& e : entries) {
    Tensor num = Tensor::zeros(e.w->shape(), DType::F64);
    for (int64_t i = 0; i < e.w->numel(); ++i) {
      double& v = e.w->at<double>(i);
      const double keep = v;
      v = keep + kFdStep;
      const double up = loss();
      v = keep - kFdStep;
      const double down = loss();
      v = keep;
      num.at<double>(i) = scale * (up - down) / (2 * kFdStep);
    }
    within(std::string(tied ? "tied " : "untied ") + e.name, max_rel(*e.g, num), kFdBudget);
  }
  // Token 10 never appears: its embedding row's gradient is the head's alone (zero untied).
  if (!tied) {
    for (int64_t j = 0; j < cfg.hidden; ++j) EXPECT_EQ(g.embed.at<double>(10 * cfg.hidden + j), 0.0);
  }
}

}  // namespace

TEST(ModelGrad, EveryParameterMatchesFiniteDifferencesUntied) { check_model(false); }
TEST(ModelGrad, EveryParameterMatchesFiniteDifferencesTied) { check_model(true); }

TEST(ModelGrad, CrossEntropyMatchesLogSoftmaxAndSkipsNegativeTargets) {
  const Tensor logits = rnd({3, 5}, 11, 3.0);
  const std::vector<int32_t> t = {4, -1, 0};
  Tensor d = Tensor::empty({3, 5}, DType::F64);
  const double l = ops::cross_entropy(logits, t, d, 0.5);
  double want = 0;
  for (int64_t r : {0, 2}) {
    double s = 0;
    for (int64_t j = 0; j < 5; ++j) s += std::exp(logits.at<double>(r * 5 + j));
    want += std::log(s) - logits.at<double>(r * 5 + t[size_t(r)]);
    for (int64_t j = 0; j < 5; ++j)
      EXPECT_NEAR(d.at<double>(r * 5 + j),
                  0.5 * (std::exp(logits.at<double>(r * 5 + j)) / s - (j == t[size_t(r)])), 1e-15);
  }
  EXPECT_NEAR(l, want, 1e-13);
  for (int64_t j = 0; j < 5; ++j) EXPECT_EQ(d.at<double>(5 + j), 0.0);
  // Large logits: the max is subtracted before exponentiating, so nothing overflows.
  Tensor big = Tensor::from({1000.f, 0.f, -1000.f}, {1, 3});
  const double lb = ops::cross_entropy(big, std::vector<int32_t>{1}, Tensor{}, 1.0);
  EXPECT_NEAR(lb, 1000.0, 1e-9);
  EXPECT_THROW(ops::cross_entropy(big, std::vector<int32_t>{3}, Tensor{}, 1.0), Error);
}

TEST(ModelGrad, EmbeddingBackwardAddsRepeatedIdsInOrder) {
  const Tensor dout = rnd({4, 3}, 12);
  Tensor table = Tensor::zeros({5, 3}, DType::F64);
  ops::embedding_backward(std::vector<int32_t>{2, 0, 2, 4}, dout, table);
  for (int64_t j = 0; j < 3; ++j) {
    EXPECT_EQ(table.at<double>(2 * 3 + j), dout.at<double>(j) + dout.at<double>(6 + j));
    EXPECT_EQ(table.at<double>(0 * 3 + j), dout.at<double>(3 + j));
    EXPECT_EQ(table.at<double>(1 * 3 + j), 0.0);
  }
  EXPECT_THROW(ops::embedding_backward(std::vector<int32_t>{5, 0, 0, 0}, dout, table), Error);
}

// The F32 training forward is the inference model: lab-s's loss on a window equals the
// cross-entropy of Model::forward's logits (the blocks agree bit for bit, grad_test; the head is
// the same product).
TEST(ModelGrad, F32LossIsTheInferenceModelsOnLabS) {
  const auto ck = std::make_shared<Checkpoint>(load_checkpoint(test::repo("models/lab-s")));
  Model model(ck, [&](const std::string& name) -> std::unique_ptr<Linear> {
    return std::make_unique<DenseLinear>(ck->get(name + ".weight").to(DType::F32));
  });
  const ModelConfig& cfg = model.config();
  std::vector<int32_t> ids;
  for (int i = 0; i < 41; ++i) ids.push_back(int32_t((i * 977 + 13) % cfg.vocab));
  DenseBlocks blocks;
  for (int64_t l = 0; l < cfg.n_layers; ++l)
    blocks.w.push_back(BlockWeights::from_block(model.block(l), DType::F32, Device::CPU));
  LmWeights w;
  w.embed = ck->get("model.embed_tokens.weight").to(DType::F32);
  w.final_norm = ck->get("model.norm.weight").to(DType::F32);
  ModelGrad mg(cfg, w, blocks);
  const double got = mg.loss(ids);
  KVCache cache = model.make_cache(64);
  const Tensor logits = model.forward(std::span(ids).first(40), cache, true);
  double want = 0;
  for (int64_t t = 0; t < 40; ++t) {
    double mx = -1e30, s = 0;
    for (int64_t j = 0; j < cfg.vocab; ++j) mx = std::max(mx, double(logits.at<float>(t * cfg.vocab + j)));
    for (int64_t j = 0; j < cfg.vocab; ++j) s += std::exp(double(logits.at<float>(t * cfg.vocab + j)) - mx);
    want += mx + std::log(s) - double(logits.at<float>(t * cfg.vocab + ids[size_t(t + 1)]));
  }
  within("lab-s window loss, training pass vs inference logits", std::abs(got - want) / want, 1e-6);
}
