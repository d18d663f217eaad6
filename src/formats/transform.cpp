#include "formats/transform.h"

#include "io/json_util.h"
#include "backend/ops.h"
#include "core/error.h"
#include "core/registry.h"
#include "formats/tensor_checks.h"

namespace lrq {

namespace {
Registry<TransformLoader>& loaders() {
  static Registry<TransformLoader> l("input transform");
  return l;
}

// A stored (F16) tensor as F32 on the host, for the CPU loops below.
Tensor host_f32(const Tensor& t) { return t.to(Device::CPU).to(DType::F32); }
}  // namespace

bool register_transform(const std::string& name, TransformLoader loader) {
  return loaders().add(name, loader);
}

// ------------------------------------------------------------------ scale
void ScaleStage::apply(const Tensor& x, const Tensor& out) const {
  ops::permute_scale_cols(x, {}, s_, out);
}

void ScaleStage::unapply_rows(const Tensor& W) const {
  const int64_t m = W.dim(0), n = W.dim(1);
  if (!W.is_cpu()) {
    Tensor out = Tensor::empty({m, n}, DType::F32, W.device());
    ops::permute_scale_cols(W, {}, s_.to(W.device()), out);
    Tensor(W).copy_from(out);  // W is a handle: the copy writes through
    return;
  }
  const Tensor sc = host_f32(s_);
  float* w = W.data<float>();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) w[i * n + j] /= sc.data<float>()[j];
}

std::shared_ptr<const TransformStage> ScaleStage::to(Device device) const {
  return std::make_shared<ScaleStage>(s_.to(device));
}

void ScaleStage::save(const std::string& prefix, nlohmann::json& meta, NamedTensors& out) const {
  out.emplace_back(prefix + ".input_scale", s_);
  meta["input_scale"] = true;
}

namespace {
std::shared_ptr<const TransformStage> load_scale(const LayerSource& src) {
  Tensor s = src.get(src.prefix + ".input_scale");
  if (s.dtype() != DType::F16 || s.numel() != src.in)
    fail(src.where, "input_scale must be F16 [{}], got {}", src.in, s.str());
  need_finite_nonzero_f16(s, src.where, "input_scale");
  return std::make_shared<ScaleStage>(s);
}
}  // namespace
LRQ_REGISTER_TRANSFORM(scale, "scale", load_scale);

// ------------------------------------------------------------------ permutation
PermuteStage::PermuteStage(std::vector<int32_t> perm, Device device) : perm_(std::move(perm)) {
  index_ = Tensor::empty({int64_t(perm_.size())}, DType::I32);
  std::copy(perm_.begin(), perm_.end(), index_.data<int32_t>());
  index_ = index_.to(device);
}

void PermuteStage::apply(const Tensor& x, const Tensor& out) const {
  ops::permute_scale_cols(x, index_.to(x.device()), {}, out);
}

void PermuteStage::unapply_rows(const Tensor& W) const {
  const int64_t m = W.dim(0), n = W.dim(1);
  if (!W.is_cpu()) {
    // out[:, j] = W[:, inv[j]]: the inverse permutation as the gather's index.
    Tensor inv = Tensor::empty({n}, DType::I32);
    for (int64_t k = 0; k < n; ++k) inv.at<int32_t>(perm_[size_t(k)]) = int32_t(k);
    Tensor out = Tensor::empty({m, n}, DType::F32, W.device());
    ops::permute_scale_cols(W, inv.to(W.device()), {}, out);
    Tensor(W).copy_from(out);
    return;
  }
  std::vector<float> row(static_cast<size_t>(n));
  float* w = W.data<float>();
  for (int64_t i = 0; i < m; ++i) {
    float* r = w + i * n;
    for (int64_t k = 0; k < n; ++k) row[size_t(perm_[size_t(k)])] = r[k];
    std::copy(row.begin(), row.end(), r);
  }
}

std::shared_ptr<const TransformStage> PermuteStage::to(Device device) const {
  return std::make_shared<PermuteStage>(perm_, device);
}

void PermuteStage::save(const std::string& prefix, nlohmann::json& meta, NamedTensors& out) const {
  const int64_t in = int64_t(perm_.size());
  const bool small = in <= 65536;
  Tensor p = Tensor::empty({in}, small ? DType::U16 : DType::I32);
  for (int64_t i = 0; i < in; ++i) {
    if (small)
      p.data<uint16_t>()[i] = uint16_t(perm_[size_t(i)]);
    else
      p.data<int32_t>()[i] = perm_[size_t(i)];
  }
  out.emplace_back(prefix + ".perm", p);
  meta["perm"] = true;
}

namespace {
std::shared_ptr<const TransformStage> load_perm(const LayerSource& src) {
  const int64_t in = src.in;
  Tensor p = src.get(src.prefix + ".perm");
  if (p.numel() != in || (p.dtype() != DType::U16 && p.dtype() != DType::I32))
    fail(src.where, "perm must be U16/I32 [{}], got {}", in, p.str());
  std::vector<char> seen(size_t(in), 0);
  std::vector<int32_t> perm;
  perm.reserve(size_t(in));
  for (int64_t i = 0; i < in; ++i) {
    int64_t v = p.dtype() == DType::U16 ? p.data<uint16_t>()[i] : p.data<int32_t>()[i];
    if (v < 0 || v >= in || seen[size_t(v)])
      fail(src.where, "perm is not a permutation of 0..{}", in - 1);
    seen[size_t(v)] = 1;
    perm.push_back(int32_t(v));
  }
  return std::make_shared<PermuteStage>(std::move(perm));
}
}  // namespace
LRQ_REGISTER_TRANSFORM(perm, "perm", load_perm);

// ------------------------------------------------------------------ block Hadamard
void HadamardStage::apply(const Tensor& x, const Tensor& out) const {
  if (out.raw() != x.raw()) Tensor(out).copy_from(x);
  ops::fwht_rows(out, block_, skip_);
}

void HadamardStage::unapply_rows(const Tensor& W) const { ops::fwht_rows(W, block_, skip_); }

std::shared_ptr<const TransformStage> HadamardStage::to(Device) const {
  return std::make_shared<HadamardStage>(block_, skip_);
}

void HadamardStage::save(const std::string&, nlohmann::json& meta, NamedTensors&) const {
  meta["hadamard_block"] = block_;
  meta["hadamard_skip"] = skip_;
}

bool HadamardStage::fits(int64_t in) const {
  return block_ >= 2 && !(block_ & (block_ - 1)) && in % block_ == 0 && skip_ >= 0 &&
         skip_ <= in / block_;
}

namespace {
std::shared_ptr<const TransformStage> load_hadamard(const LayerSource& src) {
  const int64_t b = io::json_int_or(src.meta, "hadamard_block", 0, src.where, 0, INT32_MAX);
  const int64_t skip = io::json_int_or(src.meta, "hadamard_skip", 0, src.where, 0, INT32_MAX);
  auto st = std::make_shared<HadamardStage>(b, skip);
  if (!st->fits(src.in))
    fail(src.where, "invalid Hadamard block {} / skip {} for width {}", b, skip, src.in);
  return st;
}
}  // namespace
LRQ_REGISTER_TRANSFORM(hadamard, "hadamard", load_hadamard);

// ------------------------------------------------------------------ the chain
InputTransform& InputTransform::then(std::shared_ptr<const TransformStage> stage) {
  LRQ_ASSERT(stage);
  stages_.push_back(std::move(stage));
  return *this;
}

void InputTransform::apply(const Tensor& x, const Tensor& xt) const {
  bool in_xt = false;  // whether xt holds the running value yet
  for (size_t k = 0; k < stages_.size(); ++k) {
    const TransformStage& s = *stages_[k];
    if (s.in_place()) {
      if (!in_xt) Tensor(xt).copy_from(x);
      in_xt = true;
      s.apply(xt, xt);
      continue;
    }
    // A scale followed by a permutation is one gather: out[:, i] = x[:, p_i] / s[p_i].
    const auto* sc = dynamic_cast<const ScaleStage*>(&s);
    const auto* pe = k + 1 < stages_.size() ? dynamic_cast<const PermuteStage*>(stages_[k + 1].get())
                                            : nullptr;
    const Tensor src = in_xt ? xt : x;
    const Tensor dst = in_xt ? Tensor::empty(xt.shape(), DType::F32, xt.device()) : xt;
    if (sc && pe) {
      ops::permute_scale_cols(src, pe->index().to(x.device()), sc->scale().to(x.device()), dst);
      ++k;
    } else {
      s.apply(src, dst);
    }
    if (in_xt) Tensor(xt).copy_from(dst);
    in_xt = true;
  }
  if (!in_xt) Tensor(xt).copy_from(x);
}

void InputTransform::unapply_rows(const Tensor& Wt) const {
  for (auto it = stages_.rbegin(); it != stages_.rend(); ++it) (*it)->unapply_rows(Wt);
}

size_t InputTransform::storage_bytes(int64_t in) const {
  size_t b = 0;
  for (const auto& s : stages_) b += s->storage_bytes(in);
  return b;
}

std::string InputTransform::describe() const {
  std::string d;
  for (const auto& s : stages_) d += s->describe();
  return d;
}

InputTransform InputTransform::to(Device device) const {
  InputTransform t;
  for (const auto& s : stages_) t.stages_.push_back(s->to(device));
  return t;
}

bool InputTransform::fits(int64_t in) const {
  for (const auto& s : stages_)
    if (!s->fits(in)) return false;
  return true;
}

void InputTransform::save(const std::string& prefix, nlohmann::json& meta,
                          NamedTensors& out) const {
  if (stages_.empty()) return;
  nlohmann::json names = nlohmann::json::array();
  for (const auto& s : stages_) {
    s->save(prefix, meta, out);
    names.push_back(std::string(s->name()));
  }
  meta["transforms"] = names;
}

InputTransform InputTransform::load(const LayerSource& src) {
  std::vector<std::string> names;
  if (auto it = src.meta.find("transforms"); it != src.meta.end()) {
    if (!it->is_array()) fail(src.where, "transforms must be a list of stage names");
    for (const auto& n : *it) {
      if (!n.is_string()) fail(src.where, "transforms must be a list of stage names");
      names.push_back(n.get<std::string>());
    }
  } else {
    if (src.meta.value("input_scale", false)) names.push_back("scale");
    if (src.meta.value("perm", false)) names.push_back("perm");
    if (io::json_int_or(src.meta, "hadamard_block", 0, src.where, 0, INT32_MAX))
      names.push_back("hadamard");
  }
  InputTransform t;
  for (const auto& n : names) {
    const TransformLoader* load = loaders().find(n);
    if (!load)
      fail(src.where, "unknown input transform '{}' (this build reads: {})", n, loaders().joined());
    t.then((*load)(src));
  }
  return t;
}

}  // namespace lrq
