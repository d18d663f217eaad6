// PackedWeight: construction, validation and the public methods, on top of the seam's packed
// ops (the kernels live in backend/cpu/packed_cpu.cpp and backend/cuda/packed_cuda.cu).
#include "formats/packed_weight.h"

#include <cmath>

#include "formats/tensor_checks.h"

namespace lrq {

// ------------------------------------------------------------------ construction
void PackedWeight::validate(std::string_view where) const {
  if (!packed_bits_valid(bits_)) fail(where, "bits must be 2, 3, 4 or 8, got {}", bits_);
  const Device dev = codes_.device();
  auto need = [&](const Tensor& t, const char* name, DType dt, const Shape& shape) {
    if (!t.defined()) fail(where, "{} tensor missing", name);
    if (t.device() != dev)
      fail(where, "{} must be on {} like the codes, got {}", name, device_name(dev), t.str());
    if (t.dtype() != dt || t.shape() != shape)
      fail(where, "{} must be {}{}, got {}", name, dtype_name(dt), shape_str(shape), t.str());
  };
  auto all_finite_f16 = [&](const Tensor& t, const char* name) { need_finite_f16(t, where, name); };
  if (group_ <= 0 || group_ % kChunkValues != 0)
    fail(where, "group must be a positive multiple of {}, got {}", kChunkValues, group_);
  if (rows_ <= 0 || cols_ <= 0 || cols_ % group_ != 0)
    fail(where, "{} columns is not a positive multiple of group {}", cols_, group_);
  need(codes_, "codes", DType::U8, {rows_, packed_row_bytes(cols_, bits_)});
  need(scales_, "scales", DType::F16, {rows_, ngroups()});
  all_finite_f16(scales_, "scales");
  const FormatTraits& traits = format_traits(format_);
  if (traits.has_offsets) {
    need(offsets_, "offsets", DType::F16, {rows_, ngroups()});
    all_finite_f16(offsets_, "offsets");
  } else if (offsets_.defined()) {
    fail(where, "offsets given for the {} format, which has none", quant_format_name(format_));
  }
  if (traits.has_codebook) {
    need(codebook_, "codebook", DType::F32, {int64_t(1) << bits_});
    const Tensor book = codebook_.to(Device::CPU);  // at most 256 values
    for (int64_t i = 0; i < book.numel(); ++i)
      if (!std::isfinite(book.at<float>(i)))
        fail(where, "codebook contains inf or NaN at element {}", i);
  } else if (codebook_.defined()) {
    fail(where, "codebook given for the {} format, which has none", quant_format_name(format_));
  }
}

PackedWeight PackedWeight::from_tensors(const Tensor& packed_codes, const Tensor& scales,
                                        const Tensor& offsets, const Tensor& codebook, int bits,
                                        int64_t group, QuantFormat format,
                                        std::string_view where) {
  if (!packed_codes.defined()) fail(where, "codes tensor missing");
  if (packed_codes.ndim() != 2 || packed_codes.dtype() != DType::U8)
    fail(where, "codes must be a U8 matrix, got {}", packed_codes.str());
  if (!packed_bits_valid(bits)) fail(where, "bits must be 2, 3, 4 or 8, got {}", bits);
  const int64_t chunk = chunk_bytes(bits);
  if (packed_codes.dim(1) % chunk != 0)
    fail(where, "codes row of {} bytes is not a whole number of {}-byte chunks at {} bits",
         packed_codes.dim(1), chunk, bits);
  PackedWeight w;
  w.codes_ = packed_codes;
  w.scales_ = scales;
  w.offsets_ = offsets;
  w.codebook_ = codebook;
  w.bits_ = bits;
  w.group_ = group;
  w.format_ = format;
  w.rows_ = packed_codes.dim(0);
  w.cols_ = packed_codes.dim(1) / chunk * kChunkValues;
  w.validate(where);
  return w;
}

PackedWeight PackedWeight::pack(const Tensor& codes, const Tensor& scales, const Tensor& offsets,
                                const Tensor& codebook, int bits, int64_t group,
                                QuantFormat format) {
  const char* where = "PackedWeight::pack";
  if (!codes.defined() || codes.ndim() != 2 || codes.dtype() != DType::U8)
    fail(where, "codes must be a U8 matrix, got {}", codes.defined() ? codes.str() : "none");
  const int64_t rows = codes.dim(0), cols = codes.dim(1);
  if (cols % kChunkValues != 0)
    fail(where, "{} columns is not a multiple of {}", cols, kChunkValues);
  if (!packed_bits_valid(bits)) fail(where, "bits must be 2, 3, 4 or 8, got {}", bits);
  Tensor packed = Tensor::empty({rows, packed_row_bytes(cols, bits)}, DType::U8, codes.device());
  // Codes already on the GPU are encoded there: only the verdict on them comes back.
  if (const ops::PackedEncodeResult r = ops::packed_encode(codes, bits, packed); r.bad >= 0)
    fail(where, "code {} at element {} does not fit in {} bits", r.code, r.bad, bits);
  return from_tensors(packed, scales, offsets, codebook, bits, group, format, where);
}

size_t PackedWeight::storage_bytes() const {
  return defined() ? format_storage_bytes(format_, rows_, cols_, bits_, group_) : 0;
}

double PackedWeight::bits_per_weight() const {
  return double(storage_bytes()) * 8.0 / double(rows_ * cols_);
}

PackedWeight PackedWeight::to(Device device) const {
  PackedWeight w = *this;
  w.codes_ = codes_.to(device);
  w.scales_ = scales_.to(device);
  w.offsets_ = offsets_.to(device);
  w.codebook_ = codebook_.to(device);
  return w;
}

Tensor PackedWeight::unpack_codes() const {
  if (!codes_.is_cpu())
    fail("PackedWeight::unpack_codes", "codes on {}: CPU only", device_name(device()));
  Tensor out = Tensor::empty({rows_, cols_}, DType::U8);
  ops::packed_decode(codes_, bits_, out);
  return out;
}

// ------------------------------------------------------------------ dequantize, matmul
ops::Packed PackedWeight::view() const {
  return ops::Packed{codes_, scales_, offsets_, codebook_, bits_, group_, format_};
}

void PackedWeight::dequantize_rows(int64_t begin, int64_t end, float* out) const {
  if (begin < 0 || end > rows_ || begin > end)
    fail("PackedWeight::dequantize_rows", "rows [{}, {}) outside [0, {})", begin, end, rows_);
  if (!codes_.is_cpu())
    fail("PackedWeight::dequantize_rows", "codes on {}: CPU only", device_name(device()));
  // The rows as a weight of their own: every row decodes alone, so the values are the same.
  ops::Packed v = view();
  v.codes = codes_.rows(begin, end);
  v.scales = scales_.rows(begin, end);
  if (offsets_.defined()) v.offsets = offsets_.rows(begin, end);
  ops::packed_dequantize(v, Tensor::wrap(out, {end - begin, cols_}, DType::F32, Device::CPU, {}));
}

Tensor PackedWeight::dequantize() const {
  Tensor out = Tensor::empty({rows_, cols_}, DType::F32, device());
  ops::packed_dequantize(view(), out);
  return out;
}

void PackedWeight::matmul(const Tensor& x, const Tensor& y, bool accumulate,
                          std::span<const LowRankTerm> terms) const {
  if (!defined()) fail("PackedWeight::matmul", "empty weight");
  ops::packed_matmul(view(), x, y, accumulate, terms);
}

}  // namespace lrq
