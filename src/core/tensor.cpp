#include "core/tensor.h"

#include <fmt/format.h>

#include <cstring>
#include <numeric>

#include "backend/memory.h"

namespace lrq {

std::string_view device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

Buffer::Buffer(size_t bytes, Device device) : bytes_(bytes), device_(device), owned_(true) {
  data_ = backend::device_alloc(device, bytes ? bytes : 1);
}

Buffer::Buffer(void* data, size_t bytes, Device device, std::shared_ptr<void> keepalive)
    : data_(data), bytes_(bytes), device_(device), keepalive_(std::move(keepalive)) {}

Buffer::~Buffer() {
  if (owned_) backend::device_free(device_, data_);
}

static int64_t count(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) {
    if (d < 0) fail("", "negative dimension in shape {}", shape_str(s));
    n *= d;
  }
  return n;
}

Tensor Tensor::empty(Shape shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.buf_ = std::make_shared<Buffer>(size_t(count(t.shape_)) * dtype_size(dtype), device);
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype, Device device) {
  Tensor t = empty(std::move(shape), dtype, device);
  backend::device_memset0(t.raw(), device, t.nbytes());
  return t;
}

Tensor Tensor::wrap(void* data, Shape shape, DType dtype, Device device,
                    std::shared_ptr<void> keepalive) {
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.buf_ = std::make_shared<Buffer>(data, size_t(count(t.shape_)) * dtype_size(dtype), device,
                                    std::move(keepalive));
  return t;
}

Tensor Tensor::from(const std::vector<float>& v, Shape shape) {
  Tensor t = empty(std::move(shape));
  if (size_t(t.numel()) != v.size())
    fail("", "Tensor::from: {} values for shape {}", v.size(), shape_str(t.shape_));
  std::memcpy(t.raw(), v.data(), v.size() * 4);
  return t;
}

int64_t Tensor::numel() const { return count(shape_); }

Tensor Tensor::reshape(Shape shape) const {
  if (count(shape) != numel())
    fail("", "cannot reshape {} to {}", shape_str(shape_), shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  LRQ_ASSERT(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0]);
  Tensor t = *this;
  int64_t row_elems = shape_[0] ? numel() / shape_[0] : 0;
  t.offset_ += size_t(begin * row_elems) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  if (!is_cpu()) return to(Device::CPU).to(dtype).to(device());
  Tensor t = empty(shape_, dtype);
  if (dtype == DType::F32) {
    convert_to_f32(raw(), dtype_, t.data<float>(), size_t(numel()));
  } else if (dtype_ == DType::F32) {
    convert_from_f32(data<float>(), t.raw(), dtype, size_t(numel()));
  } else {
    return to(DType::F32).to(dtype);
  }
  return t;
}

Tensor Tensor::to(Device device) const {
  if (!defined() || device == this->device()) return *this;
  Tensor t = empty(shape_, dtype_, device);
  if (backend::CopyQueue* q = backend::CopyQueue::capturing()) {
    q->enqueue(t.raw(), device, raw(), this->device(), nbytes(), buf_);
    return t;
  }
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  if (src.numel() != numel() || src.dtype_ != dtype_)
    fail("", "copy_from: {} into {}", src.str(), str());
  backend::device_copy(raw(), device(), src.raw(), src.device(), nbytes());
}

std::string Tensor::str() const {
  return fmt::format("{}{}@{}", dtype_name(dtype_), shape_str(shape_), device_name(device()));
}

void Tensor::check_type(size_t elem_size) const {
  if (!buf_) fail("", "use of an undefined tensor");
  if (dtype_size(dtype_) != elem_size)
    fail("", "tensor {} accessed with an element of {} bytes", str(), elem_size);
}

}  // namespace lrq
