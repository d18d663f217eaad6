// Tensor: a typed, shaped, row-major contiguous view of a buffer on one device.
//
// Deliberately small: no strides, no broadcasting. Views (reshape, row ranges) share the
// buffer; a memory-mapped checkpoint tensor is a view whose buffer keeps the mapping alive.
// Arithmetic lives in backend/ops.h, which dispatches on the tensor's device.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace lrq {

enum class Device : uint8_t { CPU, CUDA };
std::string_view device_name(Device d);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);

/// Owns (or keeps alive) a block of memory on one device.
class Buffer {
 public:
  /// Allocates `bytes` on `device` (64-byte aligned on the CPU). Contents undefined.
  Buffer(size_t bytes, Device device);
  /// Wraps foreign memory; `keepalive` is released when the buffer dies (e.g. an mmap).
  Buffer(void* data, size_t bytes, Device device, std::shared_ptr<void> keepalive);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_ = Device::CPU;
  bool owned_ = false;
  std::shared_ptr<void> keepalive_;
};

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(Shape shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor zeros(Shape shape, DType dtype = DType::F32, Device device = Device::CPU);
  /// A view of existing memory (no copy). `keepalive` owns it.
  static Tensor wrap(void* data, Shape shape, DType dtype, Device device,
                     std::shared_ptr<void> keepalive);
  /// Copies host data into a new CPU tensor.
  static Tensor from(const std::vector<float>& v, Shape shape);

  bool defined() const { return buf_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return int(shape_.size()); }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int64_t numel() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return buf_ ? buf_->device() : Device::CPU; }
  bool is_cpu() const { return device() == Device::CPU; }

  void* raw() const { return static_cast<char*>(buf_->data()) + offset_; }
  template <class T>
  T* data() const {
    check_type(sizeof(T));
    return static_cast<T*>(raw());
  }
  /// CPU-only element access for tests and small bookkeeping.
  template <class T>
  T& at(int64_t i) const { return data<T>()[i]; }

  /// View with a new shape of the same element count.
  Tensor reshape(Shape shape) const;
  /// View of rows [begin, end) of the leading dimension.
  Tensor rows(int64_t begin, int64_t end) const;
  Tensor row(int64_t i) const { return rows(i, i + 1).reshape(Shape(shape_.begin() + 1, shape_.end())); }

  /// Deep copy (same device, same dtype).
  Tensor clone() const;
  /// Converted copy (or `*this` when already of that dtype and device; an undefined tensor
  /// stays undefined when moved).
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  /// Copies the contents of `src` (same numel and dtype, any devices) into this tensor.
  void copy_from(const Tensor& src);

  std::string str() const;  // "F32[4,8]@cpu"

 private:
  void check_type(size_t elem_size) const;

  std::shared_ptr<Buffer> buf_;
  size_t offset_ = 0;
  Shape shape_;
  DType dtype_ = DType::F32;
};

}  // namespace lrq
