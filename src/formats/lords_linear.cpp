#include "formats/lords_linear.h"

#include <algorithm>
#include <cmath>

#include "io/json_util.h"
#include "core/error.h"
#include "formats/format_traits.h"
#include "formats/tensor_checks.h"

namespace lrq {

int64_t lords_matched_rank(int64_t rows, int64_t cols, int64_t blk) {
  return std::max<int64_t>(1, rows * cols / (blk * (rows + cols)));
}

LordsLinear::LordsLinear(ops::Lords w, std::string_view where)
    : Linear(0, 0), w_(std::move(w)) {
  if (!packed_bits_valid(w_.bits)) fail(where, "bits must be 2, 3, 4 or 8, got {}", w_.bits);
  const Tensor& c = w_.codes;
  if (!c.defined() || c.ndim() != 2 || c.dtype() != DType::U8 ||
      c.dim(1) % chunk_bytes(w_.bits) != 0 || c.dim(0) < 1 || c.dim(1) < 1)
    fail(where, "codes must be U8 [rows, whole {}-byte chunks], got {}", chunk_bytes(w_.bits),
         c.defined() ? c.str() : "none");
  in_ = w_.cols();
  out_ = w_.rows();
  const Device dev = c.device();
  auto need = [&](const Tensor& t, const char* name, DType dt, const Shape& shape) {
    if (!t.defined()) fail(where, "{} tensor missing", name);
    if (t.device() != dev)
      fail(where, "{} must be on {} like the codes, got {}", name, device_name(dev), t.str());
    if (t.dtype() != dt || t.shape() != shape)
      fail(where, "{} must be {}{}, got {}", name, dtype_name(dt), shape_str(shape), t.str());
  };
  if (!w_.A.defined() || w_.A.ndim() != 2 || w_.A.dim(0) < 1 || w_.A.dim(0) > std::min(in_, out_))
    fail(where, "A must be F16 [r, {}] with 1 <= r <= {}, got {}", in_, std::min(in_, out_),
         w_.A.defined() ? w_.A.str() : "none");
  const int64_t r = w_.A.dim(0);
  need(w_.A, "A", DType::F16, {r, in_});
  need(w_.B, "B", DType::F16, {out_, r});
  need(w_.codebook, "codebook", DType::F32, {int64_t(1) << w_.bits});
  need_finite_f16(w_.A, where, "A");
  need_finite_f16(w_.B, where, "B");
  const Tensor book = w_.codebook.to(Device::CPU);  // at most 256 values
  for (int64_t i = 0; i < book.numel(); ++i) {
    if (!std::isfinite(book.at<float>(i)))
      fail(where, "codebook contains inf or NaN at element {}", i);
    if (i > 0 && !(book.at<float>(i) > book.at<float>(i - 1)))
      fail(where, "codebook is not strictly ascending at element {}", i);
  }
}

std::unique_ptr<LordsLinear> LordsLinear::pack(const Tensor& codes, const Tensor& B,
                                               const Tensor& A, const Tensor& codebook, int bits) {
  const char* where = "LordsLinear::pack";
  if (!codes.defined() || codes.ndim() != 2 || codes.dtype() != DType::U8 ||
      codes.dim(1) % kChunkValues != 0)
    fail(where, "codes must be U8 [rows, a multiple of {} columns], got {}", kChunkValues,
         codes.defined() ? codes.str() : "none");
  if (!packed_bits_valid(bits)) fail(where, "bits must be 2, 3, 4 or 8, got {}", bits);
  Tensor packed = Tensor::empty({codes.dim(0), packed_row_bytes(codes.dim(1), bits)}, DType::U8,
                                codes.device());
  if (const ops::PackedEncodeResult r = ops::packed_encode(codes, bits, packed); r.bad >= 0)
    fail(where, "code {} at element {} does not fit in {} bits", r.code, r.bad, bits);
  auto f16 = [](const Tensor& t) { return t.dtype() == DType::F16 ? t : t.to(DType::F16); };
  return std::make_unique<LordsLinear>(
      ops::Lords{packed, codebook.to(DType::F32), f16(B), f16(A), bits}, where);
}

void LordsLinear::forward(const Tensor& x, const Tensor& y) const {
  ops::lords_matmul(w_, x, y, false);
}

Tensor LordsLinear::dequantize() const {
  Tensor out = Tensor::empty({out_, in_}, DType::F32, device());
  ops::lords_dequantize(w_, out);
  return out;
}

size_t LordsLinear::storage_bytes() const {
  return w_.codes.nbytes() + w_.codebook.nbytes() + w_.B.nbytes() + w_.A.nbytes();
}

std::string LordsLinear::describe() const {
  return "lords w" + std::to_string(w_.bits) + " r" + std::to_string(rank());
}

LordsLinear::LordsLinear(ops::Lords w, Copied)
    : Linear(w.cols(), w.rows()), w_(std::move(w)) {}

std::unique_ptr<Linear> LordsLinear::to(Device device) const {
  return std::unique_ptr<LordsLinear>(new LordsLinear(
      ops::Lords{w_.codes.to(device), w_.codebook.to(device), w_.B.to(device), w_.A.to(device),
                 w_.bits},
      Copied{}));
}

Tensor LordsLinear::unpack_codes() const {
  if (!w_.codes.is_cpu()) fail("LordsLinear::unpack_codes", "codes on the GPU: CPU only");
  Tensor out = Tensor::empty({out_, in_}, DType::U8);
  ops::packed_decode(w_.codes, w_.bits, out);
  return out;
}

nlohmann::json LordsLinear::save(const std::string& prefix, NamedTensors& out) const {
  out.emplace_back(prefix + ".qcodes", w_.codes);
  out.emplace_back(prefix + ".qcodebook", w_.codebook);
  out.emplace_back(prefix + ".lords_B", w_.B);
  out.emplace_back(prefix + ".lords_A", w_.A);
  return {{"kind", "lords"}, {"bits", w_.bits}, {"rank", rank()}, {"in", in_}, {"out", out_}};
}

std::unique_ptr<LordsLinear> LordsLinear::load(const LayerSource& src) {
  const std::string& w = src.where;
  try {
    const int bits = int(io::json_int(src.meta, "bits", w, 1, 8));
    const int64_t rank = io::json_int(src.meta, "rank", w, 1, INT32_MAX);
    auto layer = std::make_unique<LordsLinear>(
        ops::Lords{src.get(src.prefix + ".qcodes"), src.get(src.prefix + ".qcodebook"),
                   src.get(src.prefix + ".lords_B"), src.get(src.prefix + ".lords_A"), bits},
        w);
    if (layer->out_features() != src.out || layer->in_features() != src.in)
      fail(w, "codes are {}x{}, the model needs {}x{}", layer->out_features(),
           layer->in_features(), src.out, src.in);
    if (layer->rank() != rank)
      fail(w, "metadata says rank {}, the factors have rank {}", rank, layer->rank());
    return layer;
  } catch (const nlohmann::json::exception& e) {
    fail(w, "malformed layer metadata: {}", e.what());
  }
}

namespace {
std::unique_ptr<Linear> load_lords(const LayerSource& src) { return LordsLinear::load(src); }
}  // namespace
LRQ_REGISTER_LAYER_KIND(lords, "lords", load_lords);

}  // namespace lrq
