#include "formats/ggml_linear.h"

#include "backend/ops.h"
#include "core/error.h"

namespace lrq {

GgmlLinear::GgmlLinear(gguf::Type type, Tensor blocks, int64_t cols, InputTransform t,
                       std::vector<LowRankPart> lr, const std::string& where)
    : LowRankLinear(cols, blocks.defined() && blocks.ndim() == 2 ? blocks.dim(0) : 0, Device::CPU,
                    std::move(t), std::move(lr)),
      type_(type),
      blocks_(std::move(blocks)) {
  const gguf::TypeTraits& tr = gguf::traits(type_);
  if (!tr.decode || tr.block == 1)
    fail(where, "ggml type {} is not a block type lrquant decodes", tr.name);
  if (cols <= 0 || cols % tr.block != 0)
    fail(where, "{} columns is not a whole number of {}-value {} blocks", cols, tr.block, tr.name);
  if (!blocks_.defined() || blocks_.ndim() != 2 || blocks_.dtype() != DType::U8 ||
      !blocks_.is_cpu() || blocks_.dim(0) <= 0 ||
      blocks_.dim(1) != int64_t(gguf::row_bytes(type_, cols)))
    fail(where, "qblocks must be a CPU U8 matrix [rows, {}] ({} {} columns), got {}",
         gguf::row_bytes(type_, cols), cols, tr.name, blocks_.defined() ? blocks_.str() : "none");
}

Tensor GgmlLinear::dequantize_blocks() const {
  Tensor W = Tensor::empty({out_, in_});
  const gguf::DecodeFn decode = gguf::traits(type_).decode;
  const uint8_t* b = blocks_.data<uint8_t>();
  const int64_t rb = blocks_.dim(1);
  float* w = W.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < out_; ++r) decode(b + r * rb, w + r * in_, in_);
  return W;
}

void GgmlLinear::forward(const Tensor& x, const Tensor& y) const {
  if (!x.is_cpu()) fail("GgmlLinear", "{} layers run on the CPU", gguf::type_name(type_));
  // A correct path, not a fast one: the matrix is decoded for every call (the model never holds
  // it decoded, so memory stays at the stored bytes).
  Tensor xt = x;
  if (!t_.empty()) {
    xt = Tensor::empty({x.dim(0), in_});
    apply_transform(x, xt);
  }
  ops::linear(xt, dequantize_blocks(), y);
  for (const LowRankTerm& term : low_rank_inputs(x)) {
    const Tensor L = term.L.dtype() == DType::F32 ? term.L : term.L.to(DType::F32);
    ops::gemm(term.h, false, L, true, y, 1.0, 1.0);  // y += (R x) L^T
  }
}

Tensor GgmlLinear::dequantize() const {
  Tensor W = dequantize_blocks();
  t_.unapply_rows(W);
  add_low_rank(lr_, W);
  return W;
}

size_t GgmlLinear::storage_bytes() const {
  return blocks_.nbytes() + transform_and_low_rank_bytes();
}

std::string GgmlLinear::describe() const {
  std::string s = "ggml " + std::string(gguf::type_name(type_)) + t_.describe();
  if (!lr_.empty()) s += " +lr r" + std::to_string(rank());
  return s;
}

std::unique_ptr<Linear> GgmlLinear::to(Device device) const {
  if (device != Device::CPU)
    fail("GgmlLinear", "{} layers run on the CPU only (no {} decoder)", gguf::type_name(type_),
         device_name(device));
  return with_low_rank(lr_);
}

std::unique_ptr<LowRankLinear> GgmlLinear::with_low_rank(std::vector<LowRankPart> parts) const {
  return std::make_unique<GgmlLinear>(type_, blocks_, in_, t_, std::move(parts));
}

nlohmann::json GgmlLinear::save(const std::string& prefix, NamedTensors& out) const {
  nlohmann::json m = {
      {"kind", "ggml"}, {"type", std::string(gguf::type_name(type_))}, {"in", in_}, {"out", out_}};
  out.emplace_back(prefix + ".qblocks", blocks_);
  save_transform_and_low_rank(prefix, m, out);
  return m;
}

std::unique_ptr<GgmlLinear> GgmlLinear::load(const LayerSource& src) {
  try {
    const std::string name = src.meta.at("type").get<std::string>();
    gguf::Type t;
    if (!gguf::type_from_name(name, &t)) fail(src.where, "unknown ggml type '{}'", name);
    Tensor blocks = src.get(src.prefix + ".qblocks");
    if (blocks.ndim() != 2 || blocks.dim(0) != src.out)
      fail(src.where, "qblocks is {}, the model needs {} rows", blocks.str(), src.out);
    return std::make_unique<GgmlLinear>(t, blocks, src.in, InputTransform::load(src),
                                        load_low_rank(src), src.where);
  } catch (const nlohmann::json::exception& e) {
    fail(src.where, "malformed layer metadata: {}", e.what());
  }
}

namespace {
std::unique_ptr<Linear> load_ggml(const LayerSource& src) { return GgmlLinear::load(src); }
}  // namespace
LRQ_REGISTER_LAYER_KIND(ggml, "ggml", load_ggml);

}  // namespace lrq
