#include "io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <limits>

#include <nlohmann/json.hpp>

#include "io/json_util.h"
#include "io/mapped_file.h"

namespace lrq {

static_assert(std::endian::native == std::endian::little,
              "safetensors integers are little-endian; a big-endian host needs byte swaps");

namespace fs = std::filesystem;
using nlohmann::json;
using io::json_type;
using io::printable;

namespace {

// Far above any real header (a 1000-layer model's is ~1 MB); beyond it the file is not a
// safetensors file or is corrupt, and allocating it would be the failure.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

std::string tensor_tag(const std::string& name) { return "(tensor " + printable(name) + ")"; }

const json& require(const json& entry, const char* key, const std::string& file,
                    const std::string& name) {
  auto it = entry.find(key);
  if (it == entry.end()) fail(file, "entry has no '{}' {}", key, tensor_tag(name));
  return *it;
}

// A non-negative JSON integer, or an Error naming `what`.
uint64_t nonneg_int(const json& v, std::string_view what, const std::string& file,
                    const std::string& name) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer())
    fail(file, "{} has negative value {} {}", what, v.get<int64_t>(), tensor_tag(name));
  fail(file, "{} is a JSON {}, expected an integer {}", what, json_type(v), tensor_tag(name));
}

TensorEntry parse_entry(const json& v, const std::string& file, const std::string& name,
                        size_t data_size) {
  if (!v.is_object())
    fail(file, "entry is a JSON {}, expected an object {}", json_type(v), tensor_tag(name));
  TensorEntry e;

  const json& dt = require(v, "dtype", file, name);
  if (!dt.is_string())
    fail(file, "'dtype' is a JSON {}, expected a string {}", json_type(dt), tensor_tag(name));
  if (!dtype_from_name(dt.get_ref<const std::string&>(), &e.dtype))
    fail(file, "unknown dtype '{}' {}; supported: F32 F64 F16 BF16 I64 I32 I16 I8 U32 U16 U8",
         printable(dt.get_ref<const std::string&>()), tensor_tag(name));

  const json& sh = require(v, "shape", file, name);
  if (!sh.is_array())
    fail(file, "'shape' is a JSON {}, expected an array {}", json_type(sh), tensor_tag(name));
  // numel * element size in 64 bits with overflow checks: a hostile shape must not wrap around
  // to a size that happens to match the byte range.
  uint64_t bytes = dtype_size(e.dtype);
  bool overflow = false;
  for (const json& d : sh) {
    if (d.is_number_integer() && !d.is_number_unsigned())
      fail(file, "negative dimension {} in shape {} {}", d.get<int64_t>(), io::preview(sh),
           tensor_tag(name));
    uint64_t n = nonneg_int(d, "a 'shape' dimension", file, name);
    if (n > uint64_t(std::numeric_limits<int64_t>::max())) overflow = true;
    overflow |= __builtin_mul_overflow(bytes, n, &bytes);
    e.shape.push_back(int64_t(n));
  }
  if (overflow) fail(file, "shape {} is impossibly large {}", io::preview(sh), tensor_tag(name));

  const json& off = require(v, "data_offsets", file, name);
  if (!off.is_array() || off.size() != 2)
    fail(file, "'data_offsets' must be an array of 2 integers, got {} {}", io::preview(off),
         tensor_tag(name));
  uint64_t begin = nonneg_int(off[0], "data_offsets begin", file, name);
  uint64_t end = nonneg_int(off[1], "data_offsets end", file, name);
  if (begin > end)
    fail(file, "data_offsets [{}, {}] has begin after end {}", begin, end, tensor_tag(name));
  if (end > data_size)
    fail(file, "data_offsets end {} is beyond the data buffer ({} bytes; truncated file?) {}", end,
         data_size, tensor_tag(name));
  if (end - begin != bytes)
    fail(file, "data_offsets span {} bytes but {} {} needs {} bytes {}", end - begin,
         dtype_name(e.dtype), shape_str(e.shape), bytes, tensor_tag(name));
  e.begin = size_t(begin);
  e.end = size_t(end);
  return e;
}

void check_no_overlap(const std::map<std::string, TensorEntry>& entries, const std::string& file) {
  std::vector<std::pair<const std::string*, const TensorEntry*>> order;
  for (auto& [name, e] : entries)
    if (e.end > e.begin) order.push_back({&name, &e});  // empty tensors occupy no bytes
  std::sort(order.begin(), order.end(),
            [](auto& a, auto& b) { return a.second->begin < b.second->begin; });
  // Sorted by begin, a range overlaps some earlier one iff it starts before the furthest end.
  const std::pair<const std::string*, const TensorEntry*>* reach = nullptr;
  for (auto& cur : order) {
    if (reach && cur.second->begin < reach->second->end)
      fail(file, "byte range [{}, {}) overlaps tensor {} [{}, {}) {}", cur.second->begin,
           cur.second->end, printable(*reach->first), reach->second->begin, reach->second->end,
           tensor_tag(*cur.first));
    if (!reach || cur.second->end > reach->second->end) reach = &cur;
  }
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  f.file_ = MappedFile::open(path);
  const size_t size = f.file_->size();
  if (size < 8)
    fail(path, "file is {} bytes, too short for the 8-byte safetensors header length (truncated?)",
         size);
  uint64_t n;
  std::memcpy(&n, f.file_->data(), 8);
  if (n > kMaxHeaderBytes)
    fail(path, "header length {} is absurd (over 100 MB): not a safetensors file?", n);
  if (n > size - 8)
    fail(path, "header length {} runs past the end of the file ({} bytes; truncated?)", n, size);
  json h = io::parse_json(std::string(f.file_->data() + 8, size_t(n)), path, "safetensors header");
  if (!h.is_object()) fail(path, "safetensors header is a JSON {}, expected an object", json_type(h));

  f.data_start_ = 8 + size_t(n);
  const size_t data_size = size - f.data_start_;
  for (auto& [name, v] : h.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) fail(path, "__metadata__ is a JSON {}, expected an object", json_type(v));
      for (auto& [k, s] : v.items()) {
        if (!s.is_string())
          fail(path, "__metadata__ value of '{}' is a JSON {}, expected a string", printable(k),
               json_type(s));
        f.metadata_[k] = s.get<std::string>();
      }
      continue;
    }
    f.entries_[name] = parse_entry(v, path, name, data_size);
  }
  check_no_overlap(f.entries_, path);
  return f;
}

Tensor SafetensorsFile::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail(path_, "missing tensor {}", printable(name));
  const TensorEntry& e = it->second;
  const char* p = file_->data() + data_start_ + e.begin;
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(e.dtype) != 0) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    std::memcpy(t.raw(), p, e.end - e.begin);
    return t;
  }
  // The mapping is read-only; the non-const pointer is what Tensor stores, and writing through
  // a checkpoint view is a bug the page protection turns into a crash, never a silent change.
  return Tensor::wrap(const_cast<char*>(p), e.shape, e.dtype, Device::CPU, file_);
}

// ------------------------------------------------------------------ TensorStore

namespace {

bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

}  // namespace

TensorStore TensorStore::open_dir(const std::string& dir) {
  TensorStore s;
  s.dir_ = dir;
  const fs::path d(dir);
  const fs::path single = d / "model.safetensors", index = d / "model.safetensors.index.json";
  // Like transformers, a single-file checkpoint wins over an index beside it.
  if (exists(single)) {
    s.source_ = single.string();
    s.files_.push_back(SafetensorsFile::open(s.source_));
  } else if (exists(index)) {
    s.source_ = index.string();
    const std::string& ix = s.source_;
    json j = io::parse_json(read_text_file(ix), ix, "index");
    if (!j.is_object()) fail(ix, "index is a JSON {}, expected an object", json_type(j));
    auto wm = j.find("weight_map");
    if (wm == j.end()) fail(ix, "missing 'weight_map'");
    if (!wm->is_object()) fail(ix, "'weight_map' is a JSON {}, expected an object", json_type(*wm));
    if (wm->empty()) fail(ix, "'weight_map' is empty");
    std::map<std::string, size_t> shard_of_file;
    std::vector<std::pair<std::string, size_t>> listed;  // tensor name, index into files_
    for (auto& [name, v] : wm->items()) {
      if (!v.is_string())
        fail(ix, "weight_map value is a JSON {}, expected a shard file name {}", json_type(v),
             tensor_tag(name));
      const std::string& shard = v.get_ref<const std::string&>();
      if (shard.empty() || shard == "." || shard == ".." ||
          shard.find_first_of("/\\") != std::string::npos)
        fail(ix, "shard '{}' is not a file name inside the folder {}", printable(shard),
             tensor_tag(name));
      auto it = shard_of_file.find(shard);
      if (it == shard_of_file.end()) {
        fs::path p = d / shard;
        if (!path_exists(p))
          fail(ix, "shard {} does not exist {}", printable(shard), tensor_tag(name));
        s.files_.push_back(SafetensorsFile::open(p.string()));
        it = shard_of_file.emplace(shard, s.files_.size() - 1).first;
      }
      listed.emplace_back(name, it->second);
    }
    for (auto& [name, i] : listed)
      if (!s.files_[i].has(name))
        fail(ix, "tensor {} is not in its shard {}", printable(name),
             fs::path(s.files_[i].path()).filename().string());
  } else {
    std::error_code ec;
    if (!fs::is_directory(d, ec)) fail(dir, "is not a directory");
    fail(dir, "no model.safetensors or model.safetensors.index.json in the folder");
  }
  for (size_t i = 0; i < s.files_.size(); ++i)
    for (auto& [name, e] : s.files_[i].entries()) {
      auto [it, fresh] = s.where_.emplace(name, i);
      if (!fresh)
        fail(s.files_[i].path(), "tensor {} is also in {}", printable(name),
             s.files_[it->second].path());
    }
  return s;
}

Tensor TensorStore::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(dir_, "missing tensor {}", printable(name));
  return files_[it->second].get(name);
}

const TensorEntry& TensorStore::entry(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(dir_, "missing tensor {}", printable(name));
  return files_[it->second].entries().at(name);
}

const std::string& TensorStore::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(dir_, "missing tensor {}", printable(name));
  return files_[it->second].path();
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (auto& [name, i] : where_) out.push_back(name);
  return out;
}

// ------------------------------------------------------------------ writing

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::map<std::string_view, size_t> seen;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    if (name == "__metadata__") fail(path, "'__metadata__' cannot be a tensor name");
    if (!t.defined()) fail(path, "tensor {} is undefined", printable(name));
    if (!seen.emplace(name, i).second) fail(path, "duplicate tensor name {}", printable(name));
  }
  // Wider element types first, stable within one width: every offset stays a multiple of the
  // element size without padding between tensors.
  std::vector<size_t> layout(tensors.size());
  for (size_t i = 0; i < layout.size(); ++i) layout[i] = i;
  std::stable_sort(layout.begin(), layout.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors[a].second.dtype()) > dtype_size(tensors[b].second.dtype());
  });
  std::vector<size_t> begin(tensors.size());
  size_t offset = 0;
  for (size_t i : layout) {
    begin[i] = offset;
    offset += tensors[i].second.nbytes();
  }

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& m = header["__metadata__"] = nlohmann::ordered_json::object();
    for (auto& [k, v] : metadata) m[k] = v;
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    header[name] = {{"dtype", dtype_name(t.dtype())},
                    {"shape", t.shape()},
                    {"data_offsets", {begin[i], begin[i] + t.nbytes()}}};
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception&) {
    fail(path, "a tensor name or metadata string is not valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t n = text.size();

  AtomicFileWriter w(path);
  w.write(&n, 8);
  w.write(text);
  for (size_t i : layout) {
    Tensor t = tensors[i].second.to(Device::CPU);
    w.write(t.raw(), t.nbytes());
  }
  w.commit();
}

}  // namespace lrq
