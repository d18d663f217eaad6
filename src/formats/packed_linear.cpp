#include "formats/packed_linear.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "io/json_util.h"
#include "backend/ops.h"
#include "core/error.h"
#include "formats/tensor_checks.h"

namespace lrq {

size_t LowRankPart::storage_bytes() const {
  size_t b = L.nbytes() + R.nbytes();
  if (L_scale.defined()) b += L_scale.nbytes() + R_scale.nbytes();
  return b;
}

namespace {
// Per-row absmax int8 of an F32 matrix: codes and F16 scales.
void to_int8_rows(const Tensor& A, Tensor& q, Tensor& s) {
  const int64_t r = A.dim(0), c = A.dim(1);
  q = Tensor::empty({r, c}, DType::I8);
  Tensor sf = Tensor::empty({r});
  const float* a = A.data<float>();
  for (int64_t i = 0; i < r; ++i) {
    float m = 0;
    for (int64_t j = 0; j < c; ++j) m = std::max(m, std::fabs(a[i * c + j]));
    sf.data<float>()[i] = m > 0 ? m / 127.0f : 1.0f;
  }
  s = sf.to(DType::F16);
  Tensor sr = s.to(DType::F32);  // quantize against the stored (rounded) scale
  for (int64_t i = 0; i < r; ++i) {
    float inv = 1.0f / sr.data<float>()[i];
    for (int64_t j = 0; j < c; ++j)
      q.data<int8_t>()[i * c + j] =
          int8_t(std::clamp(std::lround(a[i * c + j] * inv), -127L, 127L));
  }
}

Tensor from_int8_rows(const Tensor& q, const Tensor& s) {
  const int64_t r = q.dim(0), c = q.dim(1);
  Tensor out = Tensor::empty({r, c});
  Tensor sf = s.to(DType::F32);
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j)
      out.data<float>()[i * c + j] = float(q.data<int8_t>()[i * c + j]) * sf.data<float>()[i];
  return out;
}
}  // namespace

LowRankPart LowRankPart::from_f32(const Tensor& L, const Tensor& R, bool int8) {
  LowRankPart p;
  if (!int8) {
    p.L = L.to(DType::F16);
    p.R = R.to(DType::F16);
  } else {
    to_int8_rows(L, p.L, p.L_scale);
    to_int8_rows(R, p.R, p.R_scale);
  }
  return p;
}

LowRankPart LowRankPart::to(Device device) const {
  LowRankPart p;
  p.L = L.to(device);
  p.R = R.to(device);
  p.L_scale = L_scale.to(device);
  p.R_scale = R_scale.to(device);
  p.L_f32 = L_f32.to(device);
  p.R_f32 = R_f32.to(device);
  return p;
}

std::pair<Tensor, Tensor> LowRankPart::to_f32() const {
  if (L_scale.defined()) return {from_int8_rows(L, L_scale), from_int8_rows(R, R_scale)};
  return {L.to(DType::F32).clone(), R.to(DType::F32).clone()};
}

LowRankLinear::LowRankLinear(int64_t in, int64_t out, Device dev, InputTransform t,
                             std::vector<LowRankPart> lr)
    : Linear(in, out), t_(std::move(t)), lr_(std::move(lr)) {
  for (auto& p : lr_) {
    LRQ_ASSERT(p.L.dim(0) == out_ && p.R.dim(1) == in_ && p.L.dim(1) == p.R.dim(0));
    // int8 factors run through the F32 path: expand once (they are small: r (m + n) values).
    // A copy made by to() arrives with its expansions.
    if (p.L_scale.defined() && !p.L_f32.defined()) {
      if (!p.L.is_cpu())
        fail("PackedLinear", "int8 low-rank factors on {} need their F32 expansions",
             device_name(p.L.device()));
      auto [L, R] = p.to_f32();
      p.L_f32 = L;
      p.R_f32 = R;
    }
    // Methods round the factors on the host while a GPU quantizer leaves the packed weight on
    // the GPU: the layer lives where its packed weight does.
    if (p.L.device() != dev) p = p.to(dev);
  }
  LRQ_ASSERT(t_.fits(in_));
  t_ = t_.to(dev);
}

PackedLinear::PackedLinear(PackedWeight q, InputTransform t, std::vector<LowRankPart> lr)
    : LowRankLinear(q.cols(), q.rows(), q.device(), std::move(t), std::move(lr)),
      q_(std::move(q)) {}

std::unique_ptr<Linear> PackedLinear::to(Device device) const {
  std::vector<LowRankPart> lr;
  for (const auto& p : lr_) lr.push_back(p.to(device));
  return std::make_unique<PackedLinear>(q_.to(device), t_.to(device), std::move(lr));
}

std::unique_ptr<LowRankLinear> PackedLinear::with_low_rank(std::vector<LowRankPart> parts) const {
  return std::make_unique<PackedLinear>(q_, t_, std::move(parts));
}

int64_t LowRankLinear::rank() const {
  int64_t r = 0;
  for (const auto& p : lr_) r += p.rank();
  return r;
}

size_t LowRankLinear::transform_and_low_rank_bytes() const {
  size_t b = t_.storage_bytes(in_);
  for (const auto& p : lr_) b += p.storage_bytes();
  return b;
}

size_t PackedLinear::storage_bytes() const {
  return q_.storage_bytes() + transform_and_low_rank_bytes();
}

std::string PackedLinear::describe() const {
  std::string s = std::string(quant_format_name(q_.format())) + " w" + std::to_string(q_.bits()) +
                  "g" + std::to_string(q_.group());
  s += t_.describe();
  if (!lr_.empty()) s += " +lr r" + std::to_string(rank());
  return s;
}

void LowRankLinear::apply_transform(const Tensor& x, const Tensor& xt) const { t_.apply(x, xt); }

std::vector<LowRankTerm> LowRankLinear::low_rank_inputs(const Tensor& x) const {
  std::vector<LowRankTerm> terms;
  for (const auto& p : lr_) {
    const bool i8 = p.L_scale.defined();
    Tensor h = Tensor::empty({x.dim(0), p.rank()}, DType::F32, x.device());
    ops::linear(x, i8 ? p.R_f32 : p.R, h);
    terms.push_back({i8 ? p.L_f32 : p.L, h});
  }
  return terms;
}

void PackedLinear::forward(const Tensor& x, const Tensor& y) const {
  const int64_t T = x.dim(0);
  const Device dev = x.device();
  Tensor xt = x;
  if (!t_.empty()) {
    xt = Tensor::empty({T, in_}, DType::F32, dev);
    apply_transform(x, xt);
  }
  // The low-rank inputs R x first, so the packed product can add L (R x) in the same pass.
  const std::vector<LowRankTerm> terms = low_rank_inputs(x);
  q_.matmul(xt, y, false, terms);
}

Tensor PackedLinear::dequantize() const {
  // Every step dispatches on the layer's device: the packed decode, the transform's inverse
  // (WHT and one gather) and the factor products.
  Tensor W = q_.dequantize();
  t_.unapply_rows(W);
  add_low_rank(lr_, W);
  return W;
}

void add_low_rank(const std::vector<LowRankPart>& parts, const Tensor& W) {
  for (const auto& p : parts) {
    // The stored factors are small (r (m + n) values): expanded on the host, multiplied on W's
    // device.
    auto [L, R] = p.L.is_cpu() ? p.to_f32() : p.to(Device::CPU).to_f32();
    ops::gemm(L.to(W.device()), false, R.to(W.device()), false, W, 1.0, 1.0);
  }
}

nlohmann::json PackedLinear::save(const std::string& prefix, NamedTensors& out) const {
  nlohmann::json m = {{"kind", "packed"},
                      {"format", quant_format_name(q_.format())},
                      {"bits", q_.bits()},
                      {"group", q_.group()},
                      {"in", in_},
                      {"out", out_}};
  out.emplace_back(prefix + ".qcodes", q_.codes());
  out.emplace_back(prefix + ".qscales", q_.scales());
  if (q_.offsets().defined()) out.emplace_back(prefix + ".qoffsets", q_.offsets());
  if (q_.codebook().defined()) out.emplace_back(prefix + ".qcodebook", q_.codebook());
  save_transform_and_low_rank(prefix, m, out);
  return m;
}

void LowRankLinear::save_transform_and_low_rank(const std::string& prefix, nlohmann::json& m,
                                                NamedTensors& out) const {
  t_.save(prefix, m, out);
  m["lowrank"] = nlohmann::json::array();
  for (size_t k = 0; k < lr_.size(); ++k) {
    const auto& p = lr_[k];
    const std::string n = prefix + ".lr" + std::to_string(k);
    out.emplace_back(n + ".L", p.L);
    out.emplace_back(n + ".R", p.R);
    if (p.L_scale.defined()) {
      out.emplace_back(n + ".L_scale", p.L_scale);
      out.emplace_back(n + ".R_scale", p.R_scale);
    }
    m["lowrank"].push_back({{"rank", p.rank()}, {"dtype", dtype_name(p.L.dtype())}});
  }
}

std::unique_ptr<PackedLinear> PackedLinear::load(const LayerSource& src) {
  const std::string& prefix = src.prefix;
  const nlohmann::json& meta = src.meta;
  const auto& get = src.get;
  const int64_t in = src.in, out = src.out;
  const std::string& w = src.where;
  try {
    QuantFormat fmt;
    if (!quant_format_from_name(meta.at("format").get<std::string>(), &fmt))
      fail(w, "unknown format '{}'", meta.at("format").get<std::string>());
    const int bits = int(io::json_int(meta, "bits", w, 1, 8));
    const int64_t group = io::json_int(meta, "group", w, 1, INT32_MAX);
    Tensor offsets = fmt == QuantFormat::Affine ? get(prefix + ".qoffsets") : Tensor();
    Tensor codebook = fmt == QuantFormat::Codebook ? get(prefix + ".qcodebook") : Tensor();
    PackedWeight q = PackedWeight::from_tensors(get(prefix + ".qcodes"), get(prefix + ".qscales"),
                                                offsets, codebook, bits, group, fmt, w);
    if (q.rows() != out || q.cols() != in)
      fail(w, "codes are {}x{}, the model needs {}x{}", q.rows(), q.cols(), out, in);
    InputTransform t = InputTransform::load(src);
    return std::make_unique<PackedLinear>(std::move(q), std::move(t), load_low_rank(src));
  } catch (const nlohmann::json::exception& e) {
    fail(w, "malformed layer metadata: {}", e.what());
  }
}

std::vector<LowRankPart> LowRankLinear::load_low_rank(const LayerSource& src) {
  const std::string& prefix = src.prefix;
  const auto& get = src.get;
  const int64_t in = src.in, out = src.out;
  const std::string& w = src.where;
  try {
    std::vector<LowRankPart> lr;
    const auto& parts = src.meta.value("lowrank", nlohmann::json::array());
    for (size_t k = 0; k < parts.size(); ++k) {
      const std::string n = prefix + ".lr" + std::to_string(k);
      LowRankPart p;
      p.L = get(n + ".L");
      p.R = get(n + ".R");
      const int64_t r = io::json_int(parts[k], "rank", w + ": low-rank part " + std::to_string(k), 1, INT32_MAX);
      const bool i8 = p.L.dtype() == DType::I8;
      if (p.L.ndim() != 2 || p.R.ndim() != 2 || p.L.dim(0) != out || p.L.dim(1) != r ||
          p.R.dim(0) != r || p.R.dim(1) != in || p.L.dtype() != p.R.dtype() ||
          (p.L.dtype() != DType::F16 && !i8))
        fail(w, "low-rank part {} has L {} and R {}, expected F16/I8 [{}x{}] and [{}x{}]", k,
             p.L.str(), p.R.str(), out, r, r, in);
      const std::string part = "low-rank part " + std::to_string(k);
      if (!i8) {
        need_finite_f16(p.L, w, part + " L");
        need_finite_f16(p.R, w, part + " R");
      }
      if (i8) {
        p.L_scale = get(n + ".L_scale");
        p.R_scale = get(n + ".R_scale");
        if (p.L_scale.numel() != out || p.R_scale.numel() != r ||
            p.L_scale.dtype() != DType::F16 || p.R_scale.dtype() != DType::F16)
          fail(w, "low-rank part {} scales have the wrong shape or dtype", k);
        need_finite_f16(p.L_scale, w, part + " L_scale");
        need_finite_f16(p.R_scale, w, part + " R_scale");
      }
      lr.push_back(std::move(p));
    }
    return lr;
  } catch (const nlohmann::json::exception& e) {
    fail(w, "malformed layer metadata: {}", e.what());
  }
}

namespace {
std::unique_ptr<Linear> load_packed(const LayerSource& src) { return PackedLinear::load(src); }
}  // namespace
LRQ_REGISTER_LAYER_KIND(packed, "packed", load_packed);

}  // namespace lrq
