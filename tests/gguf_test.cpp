// GGUF in and out, against independent references: ggml's own block codecs (libggml-base from the
// node-llama-cpp install, called through dlopen), the bits-per-weight and RoPE order that
// ../shared/docs/GGUF.md states, the safetensors model the export came from, and llama.cpp itself
// (tests/llama_cpp/ppl.mjs) for greedy text and perplexity. Malformed files are written byte by
// byte here, not by the writer under test.
#include "io/gguf.h"

#include <dlfcn.h>

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

#include "backend/ops.h"
#include "core/error.h"
#include "core/sha256.h"
#include "eval/generate.h"
#include "eval/perplexity.h"
#include "formats/ggml_linear.h"
#include "formats/gguf_export.h"
#include "formats/load_model.h"
#include "formats/packed_linear.h"
#include "io/checkpoint.h"
#include "io/gguf_llama.h"
#include "io/safetensors.h"
#include "quant/kernels/kquant_grid.h"
#include "quant/objective.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

using namespace lrq;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kLabS = test::repo("models/lab-s");

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write(const std::string& path, std::string_view bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

// Runs `fn`, expects an lrq::Error of one line that names `file` and contains `keyword`.
void expect_error(const std::function<void()>& fn, const std::string& file,
                  const std::string& keyword) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message is not one line: " << msg;
    EXPECT_NE(msg.find(file), std::string::npos) << "message does not name " << file << ": " << msg;
    EXPECT_NE(msg.find(keyword), std::string::npos) << "message lacks '" << keyword << "': " << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected lrq::Error, got another exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "no error for " << file << " (expected '" << keyword << "')";
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

std::vector<float> gaussian(size_t n, uint64_t seed, double sd = 1.0) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d(0, sd);
  std::vector<float> v(n);
  for (float& x : v) x = float(d(g));
  return v;
}

// ------------------------------------------------------------------ the reference llama.cpp
// node-llama-cpp installed once per test process into the build tree (scripts/llama_cpp_setup.sh);
// "" when the install failed, with the reason in `why`.
const std::string& llama_cpp_dir(std::string* why = nullptr) {
  static std::once_flag once;
  static std::string dir, reason;
  std::call_once(once, [] {
    const std::string target = LRQ_LLAMA_CPP_DIR, log = target + ".log";
    fs::create_directories(fs::path(target).parent_path());
    const std::string cmd = "bash '" + test::repo("scripts/llama_cpp_setup.sh") + "' '" + target +
                            "' >'" + log + "' 2>&1";
    if (std::system(cmd.c_str()) == 0)
      dir = target;
    else
      reason = "node-llama-cpp could not be installed (npm registry unreachable?); see " + log;
  });
  if (why) *why = reason;
  return dir;
}

#define REQUIRE_LLAMA_CPP()                                 \
  do {                                                      \
    std::string why_;                                       \
    if (llama_cpp_dir(&why_).empty()) GTEST_SKIP() << why_; \
  } while (0)

// The folder of node-llama-cpp's prebuilt libraries for this machine.
std::string llama_bins() {
#if defined(__aarch64__)
  const std::string arch = "linux-arm64";
#else
  const std::string arch = "linux-x64";
#endif
  return llama_cpp_dir() + "/node_modules/@node-llama-cpp/" + arch + "/bins/" + arch + "/";
}

// ggml's own codecs, from the shared library llama.cpp runs on.
struct Ggml {
  using Quant = void (*)(const float*, void*, int64_t);
  using Dequant = void (*)(const void*, float*, int64_t);
  void* lib = nullptr;
  Quant quant(const std::string& t) const {
    return reinterpret_cast<Quant>(dlsym(lib, ("quantize_row_" + t + "_ref").c_str()));
  }
  Dequant dequant(const std::string& t) const {
    return reinterpret_cast<Dequant>(dlsym(lib, ("dequantize_row_" + t).c_str()));
  }
};

const Ggml& ggml() {
  static Ggml g;
  static std::once_flag once;
  std::call_once(once, [] {
    g.lib = dlopen((llama_bins() + "libggml-base.so").c_str(), RTLD_NOW | RTLD_LOCAL);
  });
  return g;
}

// Runs a command, returns its stdout; fails the test on a non-zero exit.
std::string run(const std::string& cmd) {
  const std::string err = test::temp_dir() + "/stderr";
  FILE* p = popen((cmd + " 2>" + err).c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = pclose(p);
  EXPECT_EQ(rc, 0) << cmd << "\n" << slurp(err);
  return out;
}

json llama_cpp(const std::string& args) {
  const std::string out = run("node '" + test::repo("tests/llama_cpp/ppl.mjs") + "' --llama-dir '" +
                              llama_cpp_dir() + "' " + args);
  json j = json::parse(out, nullptr, false);
  // A failed run has printed its reason through run(); stop this test with the output.
  if (j.is_discarded()) throw std::runtime_error("ppl.mjs printed no JSON: " + out);
  return j;
}

// lrquant's own CLI, asserting success.
std::string lrquant(const std::string& args) {
  test::CliResult r = test::run_cli(args);
  EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.err;
  return r.out;
}

// ------------------------------------------------------------------ codecs
TEST(GgufCodecs, BlockSizesAreGgmls) {
  // Bits per weight as GGUF.md lists them (block bytes * 8 / values, scales included).
  const std::pair<gguf::Type, double> bpw[] = {
      {gguf::Type::Q4_0, 4.5},   {gguf::Type::Q4_1, 5.0},    {gguf::Type::Q8_0, 8.5},
      {gguf::Type::Q2_K, 2.625}, {gguf::Type::Q3_K, 3.4375}, {gguf::Type::Q4_K, 4.5},
      {gguf::Type::Q5_K, 5.5},   {gguf::Type::Q6_K, 6.5625}, {gguf::Type::F16, 16},
      {gguf::Type::BF16, 16},    {gguf::Type::F32, 32}};
  for (auto [t, b] : bpw) {
    const gguf::TypeTraits& tr = gguf::traits(t);
    EXPECT_DOUBLE_EQ(8.0 * double(tr.block_bytes) / double(tr.block), b) << tr.name;
    EXPECT_NE(tr.decode, nullptr) << tr.name;
  }
  // The file stores ggml's numbers: these are fixed by every GGUF already written.
  EXPECT_EQ(uint32_t(gguf::Type::Q8_0), 8u);
  EXPECT_EQ(uint32_t(gguf::Type::Q4_K), 12u);
  EXPECT_EQ(uint32_t(gguf::Type::BF16), 30u);
  EXPECT_EQ(gguf::find_type(4), nullptr);  // retired Q4_2
  gguf::Type t;
  ASSERT_TRUE(gguf::type_from_name("Q4_K", &t));
  EXPECT_EQ(t, gguf::Type::Q4_K);
  EXPECT_FALSE(gguf::type_from_name("q4", &t));
}

TEST(GgufCodecs, FloatTypesRoundTripExactly) {
  std::vector<float> x = gaussian(4096, 1, 3.0);
  x[0] = 0.f;
  x[1] = -0.f;
  x[2] = 1e-30f;  // F16 subnormal range and below
  x[3] = 65504.f;
  for (gguf::Type t : {gguf::Type::F32, gguf::Type::F16, gguf::Type::BF16}) {
    const gguf::TypeTraits& tr = gguf::traits(t);
    std::vector<uint8_t> enc(gguf::row_bytes(t, int64_t(x.size())));
    std::vector<float> y(x.size()), z(x.size());
    tr.encode(x.data(), enc.data(), int64_t(x.size()));
    tr.decode(enc.data(), y.data(), int64_t(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      // Each encoder rounds to nearest even in its format, exactly as the dtype conversions.
      const float want = t == gguf::Type::F32   ? x[i]
                         : t == gguf::Type::F16 ? f16_to_f32(f32_to_f16(x[i]))
                                                : bf16_to_f32(f32_to_bf16(x[i]));
      ASSERT_EQ(std::memcmp(&y[i], &want, 4), 0) << tr.name << " element " << i;
    }
    // Values already in the format survive unchanged.
    tr.encode(y.data(), enc.data(), int64_t(y.size()));
    tr.decode(enc.data(), z.data(), int64_t(y.size()));
    EXPECT_EQ(std::memcmp(y.data(), z.data(), 4 * y.size()), 0) << tr.name;
  }
}

TEST(GgufCodecs, BlockTypesRoundTripWithinTheirGrid) {
  // Rows with a Gaussian bulk, outliers, an all-zero block and a constant block.
  std::vector<float> x = gaussian(32 * 64, 2, 0.02);
  for (size_t i = 7; i < x.size(); i += 97) x[i] *= 30;
  std::fill(x.begin() + 64, x.begin() + 96, 0.f);
  std::fill(x.begin() + 96, x.begin() + 128, -0.5f);
  for (gguf::Type t : {gguf::Type::Q8_0, gguf::Type::Q4_0, gguf::Type::Q4_1}) {
    const gguf::TypeTraits& tr = gguf::traits(t);
    const int64_t n = int64_t(x.size());
    std::vector<uint8_t> enc(gguf::row_bytes(t, n));
    std::vector<float> y(x.size());
    tr.encode(x.data(), enc.data(), n);
    tr.decode(enc.data(), y.data(), n);
    double se = 0, sx = 0;
    for (int64_t b = 0; b < n / 32; ++b) {
      const uint8_t* blk = enc.data() + size_t(b) * tr.block_bytes;
      uint16_t dh;
      std::memcpy(&dh, blk, 2);
      const float d = std::fabs(f16_to_f32(dh));
      float lo = x[size_t(b) * 32], hi = lo;
      for (int k = 0; k < 32; ++k) {
        lo = std::min(lo, x[size_t(b) * 32 + k]);
        hi = std::max(hi, x[size_t(b) * 32 + k]);
      }
      for (int k = 0; k < 32; ++k) {
        const size_t i = size_t(b) * 32 + k;
        const double e = std::fabs(double(y[i]) - double(x[i]));
        // Round to nearest on a grid of step d: half a step, plus the F16 rounding of the scale
        // (and of Q4_1's min) carried to the code's magnitude. Q4_0's grid -8d..7d leaves the
        // value of largest magnitude's opposite extreme a whole step away at worst.
        const double grid = t == gguf::Type::Q4_0 ? d : 0.5 * d;
        const double f16 = (std::fabs(double(x[i])) + std::fabs(double(lo))) * 1e-3;
        ASSERT_LE(e, grid + f16 + 1e-12) << tr.name << " element " << i;
        se += e * e;
        sx += double(x[i]) * x[i];
      }
      if (lo == hi && lo == 0.f) {
        for (int k = 0; k < 32; ++k) EXPECT_EQ(y[size_t(b) * 32 + k], 0.f) << tr.name;
      }
    }
    // Relative RMS error: 8 bits near 1/256 of the range, 4 bits near 1/16.
    const double rel = std::sqrt(se / sx);
    EXPECT_LT(rel, t == gguf::Type::Q8_0 ? 0.01 : 0.15) << tr.name;
    EXPECT_GT(rel, t == gguf::Type::Q8_0 ? 1e-4 : 0.01) << tr.name << ": suspiciously exact";
  }
}

TEST(GgufCodecs, MatchGgmlBitForBit) {
  REQUIRE_LLAMA_CPP();
  const Ggml& g = ggml();
  ASSERT_NE(g.lib, nullptr) << dlerror();
  std::vector<std::vector<float>> rows = {gaussian(256 * 16, 3, 0.05), gaussian(256 * 16, 4, 4.0)};
  std::vector<float> ties(256 * 4, 0.25f);  // repeated extremes: the first one sets the scale
  for (size_t i = 0; i < ties.size(); i += 3) ties[i] = -0.25f;
  rows.push_back(ties);
  std::vector<float> tiny = gaussian(256 * 4, 5, 1e-6);  // scales in F16's subnormal range
  rows.push_back(tiny);
  rows.push_back(std::vector<float>(256 * 2, 0.f));
  // Our encoders write ggml's reference bytes.
  for (const char* name : {"q4_0", "q4_1", "q8_0"}) {
    gguf::Type t;
    ASSERT_TRUE(gguf::type_from_name(name, &t));
    ASSERT_NE(g.quant(name), nullptr) << name;
    for (const auto& x : rows) {
      const int64_t n = int64_t(x.size());
      std::vector<uint8_t> ours(gguf::row_bytes(t, n)), theirs(ours.size());
      gguf::traits(t).encode(x.data(), ours.data(), n);
      g.quant(name)(x.data(), theirs.data(), n);
      EXPECT_EQ(ours, theirs) << name;
    }
  }
  // Our decoders read every type as ggml does: blocks ggml's encoder wrote, and random bytes
  // with finite scales (codes, sub-block scales and masks all over their range).
  using namespace gguf;
  const std::pair<const char*, std::vector<size_t>> types[] = {
      {"q4_0", {offsetof(BlockQ4_0, d)}},
      {"q4_1", {offsetof(BlockQ4_1, d), offsetof(BlockQ4_1, m)}},
      {"q5_0", {offsetof(BlockQ5_0, d)}},
      {"q5_1", {offsetof(BlockQ5_1, d), offsetof(BlockQ5_1, m)}},
      {"q8_0", {offsetof(BlockQ8_0, d)}},
      {"q2_K", {offsetof(BlockQ2_K, d), offsetof(BlockQ2_K, dmin)}},
      {"q3_K", {offsetof(BlockQ3_K, d)}},
      {"q4_K", {offsetof(BlockQ4_K, d), offsetof(BlockQ4_K, dmin)}},
      {"q5_K", {offsetof(BlockQ5_K, d), offsetof(BlockQ5_K, dmin)}},
      {"q6_K", {offsetof(BlockQ6_K, d)}}};
  std::mt19937_64 rng(6);
  for (const auto& [name, scale_at] : types) {
    gguf::Type t;
    ASSERT_TRUE(gguf::type_from_name(name, &t));
    const gguf::TypeTraits& tr = gguf::traits(t);
    ASSERT_NE(g.dequant(name), nullptr) << name;
    std::vector<std::vector<uint8_t>> inputs;
    for (const auto& x : rows) {
      if (!g.quant(name)) continue;
      std::vector<uint8_t> b(gguf::row_bytes(t, int64_t(x.size())));
      g.quant(name)(x.data(), b.data(), int64_t(x.size()));
      inputs.push_back(b);
    }
    std::vector<uint8_t> random(tr.block_bytes * 64);
    for (auto& byte : random) byte = uint8_t(rng());
    std::uniform_real_distribution<float> scale(-0.1f, 0.1f);
    for (size_t b = 0; b < 64; ++b)
      for (size_t off : scale_at) {
        const uint16_t h = f32_to_f16(scale(rng));
        std::memcpy(&random[b * tr.block_bytes + off], &h, 2);
      }
    inputs.push_back(random);
    for (const auto& in : inputs) {
      const int64_t n = int64_t(in.size() / tr.block_bytes) * tr.block;
      std::vector<float> ours(size_t(n), NAN), theirs(size_t(n), -NAN);
      tr.decode(in.data(), ours.data(), n);
      g.dequant(name)(in.data(), theirs.data(), n);
      EXPECT_EQ(std::memcmp(ours.data(), theirs.data(), 4 * size_t(n)), 0) << name;
    }
  }
}

// ------------------------------------------------------------------ the file format
TEST(GgufFile, WriteThenReadEverything) {
  const std::string path = test::temp_dir() + "/all.gguf";
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::string("test"));
  w.set("a.u32", gguf::Value::u32(4000000000u));
  w.set("a.i32", gguf::Value::i32(-7));
  w.set("a.u64", gguf::Value::u64(uint64_t(1) << 40));
  w.set("a.f32", gguf::Value::f32(0.125f));
  w.set("a.bool", gguf::Value::boolean(true));
  w.set("a.strs", gguf::Value::strings({"", "x", std::string("nul\0inside", 10)}));
  w.set("a.f32s", gguf::Value::f32s({1.5f, -2.f}));
  w.set("a.i32s", gguf::Value::i32s({}));
  w.set("a.u32", gguf::Value::u32(5));  // replaced in place
  std::vector<float> v = gaussian(64 * 3, 7);
  const std::pair<const char*, gguf::Type> kinds[] = {
      {"t.f32", gguf::Type::F32},   {"t.f16", gguf::Type::F16},   {"t.bf16", gguf::Type::BF16},
      {"t.q8_0", gguf::Type::Q8_0}, {"t.q4_0", gguf::Type::Q4_0}, {"t.q4_1", gguf::Type::Q4_1}};
  for (auto [name, t] : kinds)
    w.add_tensor(name, {64, 3}, t, [&, t = t](uint8_t* dst) {
      gguf::traits(t).encode(v.data(), dst, int64_t(v.size()));
    });
  w.add_tensor("t.vec", {5}, gguf::Type::F32,
               [&](uint8_t* dst) { std::memcpy(dst, v.data(), 20); });
  w.add_tensor("t.3d", {32, 2, 3}, gguf::Type::F16,
               [&](uint8_t* dst) { gguf::traits(gguf::Type::F16).encode(v.data(), dst, 192); });
  w.write(path);
  EXPECT_EQ(fs::file_size(path), w.file_bytes());

  const gguf::File f = gguf::File::open(path);
  EXPECT_EQ(f.version(), 3u);
  ASSERT_EQ(f.metadata().size(), 9u);
  EXPECT_EQ(f.metadata()[1].first, "a.u32");  // kept its place
  EXPECT_EQ(f.opt_int("a.u32"), 5);
  EXPECT_EQ(f.opt_int("a.i32"), -7);
  EXPECT_EQ(f.opt_int("a.u64"), int64_t(1) << 40);
  EXPECT_EQ(f.opt_number("a.f32"), 0.125);
  EXPECT_EQ(f.opt_bool("a.bool"), true);
  EXPECT_EQ(f.find("a.strs")->string_array(),
            (std::vector<std::string>{"", "x", std::string("nul\0inside", 10)}));
  EXPECT_EQ(f.find("a.f32s")->number_at(1), -2.0);
  EXPECT_EQ(f.find("a.i32s")->count(), 0u);
  expect_error([&] { f.opt_int("general.architecture"); }, path, "expected an integer");
  ASSERT_EQ(f.tensors().size(), 8u);
  for (const auto& t : f.tensors()) EXPECT_EQ(t.offset % 32, 0u) << t.name;
  for (auto [name, t] : kinds) {
    const gguf::TensorInfo* ti = f.tensor(name);
    ASSERT_NE(ti, nullptr);
    EXPECT_EQ(ti->type, t);
    EXPECT_EQ(ti->shape(), (Shape{3, 64}));
    std::vector<uint8_t> want(gguf::row_bytes(t, 192));
    gguf::traits(t).encode(v.data(), want.data(), 192);
    EXPECT_EQ(std::memcmp(f.data(*ti), want.data(), want.size()), 0) << name;
    // load() decodes the stored bytes: F32 from every type, or a view of the float types.
    const Tensor x = f.load(*ti).to(DType::F32);
    std::vector<float> dec(192);
    gguf::traits(t).decode(want.data(), dec.data(), 192);
    EXPECT_EQ(std::memcmp(x.raw(), dec.data(), 4 * 192), 0) << name;
  }
  EXPECT_EQ(f.tensor("t.3d")->shape(), (Shape{3, 2, 32}));
  // Rows reordered on load: row r of the result is stored row src(r).
  const Tensor rev = f.load_rows(*f.tensor("t.q4_0"), [](int64_t r) { return 2 - r; });
  const Tensor fwd = f.load(*f.tensor("t.q4_0"));
  for (int64_t r = 0; r < 3; ++r)
    EXPECT_EQ(std::memcmp(rev.row(r).raw(), fwd.row(2 - r).raw(), 64 * 4), 0);

  expect_error([&] { w.write(test::temp_dir() + "/no/such/dir/x.gguf"); }, "x.gguf", "temporary");
  gguf::Writer bad;
  bad.add_tensor("r", {31}, gguf::Type::Q8_0, [](uint8_t*) {});
  expect_error([&] { bad.write(test::temp_dir() + "/bad.gguf"); }, "bad.gguf", "whole");
}

// GGUF bytes assembled by hand, so each field can be made wrong on its own.
struct Bytes {
  std::string s;
  Bytes& u32(uint32_t v) { return raw(&v, 4); }
  Bytes& u64(uint64_t v) { return raw(&v, 8); }
  Bytes& str(std::string_view v) {
    u64(v.size());
    s.append(v);
    return *this;
  }
  Bytes& raw(const void* p, size_t n) {
    s.append(static_cast<const char*>(p), n);
    return *this;
  }
};

std::string kv_str(std::string_view k, std::string_view v) {
  return Bytes().str(k).u32(8).str(v).s;
}
std::string kv_u32(std::string_view k, uint32_t v) { return Bytes().str(k).u32(4).u32(v).s; }
std::string info(std::string_view name, std::vector<int64_t> ne, uint32_t type, uint64_t offset) {
  Bytes b;
  b.str(name).u32(uint32_t(ne.size()));
  for (int64_t d : ne) b.u64(uint64_t(d));
  return b.u32(type).u64(offset).s;
}

struct Parts {
  std::string magic = "GGUF";
  uint32_t version = 3;
  std::optional<int64_t> n_tensors, n_kv;
  std::vector<std::string> kvs = {kv_str("general.architecture", "test"),
                                  kv_u32("general.alignment", 32)};
  // A Q8_0 vector (34 bytes, padded to 64) then an F32 matrix (64 bytes, no padding after it),
  // so that every proper prefix of the file is damaged.
  std::vector<std::string> infos = {info("q", {32}, 8, 0), info("w", {8, 2}, 0, 64)};
  uint64_t align = 32;
  std::string data = [] {
    std::string d(128, '\0');
    const uint16_t one = f32_to_f16(1.f);
    std::memcpy(d.data(), &one, 2);
    for (int i = 0; i < 16; ++i) {
      const float x = float(i);
      std::memcpy(d.data() + 64 + 4 * i, &x, 4);
    }
    return d;
  }();
  std::string build() const {
    Bytes b;
    b.raw(magic.data(), magic.size()).u32(version);
    b.u64(uint64_t(n_tensors.value_or(int64_t(infos.size()))));
    b.u64(uint64_t(n_kv.value_or(int64_t(kvs.size()))));
    for (const auto& k : kvs) b.s += k;
    for (const auto& i : infos) b.s += i;
    b.s.append((align - b.s.size() % align) % align, '\0');
    return b.s + data;
  }
};

TEST(GgufFile, HandWrittenFileReads) {
  const std::string path = test::temp_dir() + "/ok.gguf";
  write(path, Parts().build());
  const gguf::File f = gguf::File::open(path);
  ASSERT_EQ(f.tensors().size(), 2u);
  const Tensor q = f.load(*f.tensor("q")), w = f.load(*f.tensor("w"));
  EXPECT_EQ(q.at<float>(0), 0.f);  // code 0 times d = 1
  EXPECT_EQ(w.shape(), (Shape{2, 8}));
  EXPECT_EQ(w.at<float>(15), 15.f);
}

TEST(GgufFile, TruncatedAtEveryByte) {
  const std::string dir = test::temp_dir(), good = Parts().build();
  for (size_t cut = 0; cut < good.size(); ++cut) {
    const std::string path = dir + "/cut" + std::to_string(cut) + ".gguf";
    write(path, good.substr(0, cut));
    SCOPED_TRACE("cut at byte " + std::to_string(cut));
    expect_error([&] { gguf::File::open(path); }, path,
                 cut < 4                   ? "not a GGUF file"
                 : cut < good.size() - 128 ? "trunc"
                                           : "truncated?");
  }
  // The CLI reports it as one line too.
  const std::string path = dir + "/cut50.gguf";
  test::CliResult r = test::run_cli("inspect --model " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.find("lrquant: error: " + path + ": "), 0u) << r.err;
  EXPECT_NE(r.err.find("truncated?"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(GgufFile, MalformedFilesGiveOneLineErrors) {
  const std::string dir = test::temp_dir();
  int n = 0;
  auto check = [&](const Parts& p, const std::string& keyword) {
    const std::string path = dir + "/bad" + std::to_string(n++) + ".gguf";
    write(path, p.build());
    SCOPED_TRACE(keyword);
    expect_error([&] { gguf::File::open(path); }, path, keyword);
  };
  auto with = [](auto change) {
    Parts p;
    change(p);
    return p;
  };
  check(with([](Parts& p) { p.magic = "GGML"; }), "not a GGUF file");
  check(with([](Parts& p) { p.version = 1; }), "version 1 is not supported");
  check(with([](Parts& p) { p.version = 4; }), "version 4 is not supported");
  check(with([](Parts& p) { p.version = 0x03000000; }), "big-endian");
  check(with([](Parts& p) { p.n_kv = int64_t(1) << 40; }), "metadata count");
  check(with([](Parts& p) { p.n_kv = -1; }), "metadata count -1");
  check(with([](Parts& p) { p.n_tensors = int64_t(1) << 40; }), "tensor count");
  check(with([](Parts& p) { p.n_tensors = 3; }), "tensor 2 has an empty name");  // reads padding
  check(with([](Parts& p) { p.kvs[0] = Bytes().u64(uint64_t(1) << 60).s; }), "claims");
  check(with([](Parts& p) { p.kvs[0] = Bytes().str("").u32(4).u32(1).s; }), "empty key");
  check(with([](Parts& p) { p.kvs[0] = Bytes().str("k").u32(13).u32(1).s; }),
        "unknown value type 13");
  check(with([](Parts& p) { p.kvs[0] = Bytes().str("k").u32(9).u32(9).u64(1).s; }),
        "array of arrays");
  check(with([](Parts& p) { p.kvs[0] = Bytes().str("k").u32(9).u32(99).u64(1).s; }),
        "unknown value type 99");
  check(with([](Parts& p) { p.kvs[0] = Bytes().str("k").u32(9).u32(8).u64(uint64_t(1) << 50).s; }),
        "cannot fit");
  check(with([](Parts& p) { p.kvs[0] = Bytes().str("k").u32(9).u32(4).u64(uint64_t(1) << 62).s; }),
        "cannot fit");
  check(with([](Parts& p) { p.kvs[0] = kv_u32("general.alignment", 32); }), "appears twice");
  check(with([](Parts& p) { p.kvs[1] = kv_u32("general.alignment", 48); }), "power of two");
  check(with([](Parts& p) { p.kvs[1] = Bytes().str("general.alignment").u32(10).u64(32).s; }),
        "expected a u32");
  check(with([](Parts& p) { p.kvs[1] = kv_u32("general.alignment", 1u << 30); }),
        "data section would start");
  check(with([](Parts& p) { p.infos[0] = info(std::string(64, 'n'), {32}, 8, 0); }), "longer than");
  check(with([](Parts& p) { p.infos[0] = info("", {32}, 8, 0); }), "empty name");
  check(with([](Parts& p) { p.infos[1] = info("q", {8, 2}, 0, 64); }), "appears twice");
  check(with([](Parts& p) { p.infos[0] = info("q", {32, 1, 1, 1, 1}, 8, 0); }), "5 dimensions");
  check(with([](Parts& p) { p.infos[0] = info("q", {32, -1}, 8, 0); }), "negative dimension");
  check(with([](Parts& p) {
          p.infos[0] = info("q", {int64_t(1) << 40, int64_t(1) << 40}, 8, 0);
        }),
        "overflows");
  check(with([](Parts& p) { p.infos[0] = info("q", {int64_t(1) << 62}, 0, 0); }),
        "impossibly large");
  check(with([](Parts& p) { p.infos[0] = info("q", {32}, 4, 0); }), "unknown ggml type 4");
  check(with([](Parts& p) { p.infos[0] = info("q", {32}, 1000, 0); }), "unknown ggml type 1000");
  check(with([](Parts& p) { p.infos[0] = info("q", {31}, 8, 0); }),
        "whole number of 32-value blocks");
  check(with([](Parts& p) { p.infos[0] = info("q", {32}, 8, 8); }),
        "not a multiple of the alignment");
  check(with([](Parts& p) {
          p.infos[1] = info("w", {8, 2}, 0, 96);
        }),
        "past the end of the data section");
  check(with([](Parts& p) {
          p.infos[1] = info("w", {8, 2}, 0, uint64_t(1) << 63);
        }),
        "past the end of the data section");
  check(with([](Parts& p) { p.infos[1] = info("w", {8, 2}, 0, 32); }), "overlaps tensor 'q'");
  // A type the reader knows but cannot decode is refused when the tensor is read, by name.
  const std::string path = dir + "/iq.gguf";
  write(path, with([](Parts& p) { p.infos[0] = info("q", {32}, 20, 0); }).build());
  const gguf::File f = gguf::File::open(path);
  expect_error([&] { f.load(*f.tensor("q")); }, path,
               "tensor 'q' has type iq4_nl, which lrquant cannot read");
}

// ------------------------------------------------------------------ K-quant grids
constexpr gguf::Type kKTypes[] = {gguf::Type::Q2_K, gguf::Type::Q3_K, gguf::Type::Q4_K,
                                  gguf::Type::Q5_K, gguf::Type::Q6_K};

// Rows of gaussian weights with a few large ones, as trained projections have.
Tensor weights(int64_t rows, int64_t cols, uint64_t seed) {
  Tensor W = test::randn({rows, cols}, seed, 0.02);
  std::mt19937_64 g(seed + 1);
  for (int64_t i = 0; i < W.numel() / 97; ++i)
    W.data<float>()[g() % uint64_t(W.numel())] *= 8.f;
  return W;
}

TEST(KQuantGrid, StoredBytesDecodeToTheFittedValues) {
  // The values the fit and the code assignment computed with (kquant_values, from the block's
  // numbers) are what the bytes decode to, by our decoder and by ggml's own dequantize_row.
  const Tensor W = weights(8, 1024, 11);
  const std::vector<float> imp = gaussian(1024, 12);
  for (gguf::Type t : kKTypes) {
    SCOPED_TRACE(std::string(gguf::type_name(t)));
    const gguf::KQuantLayout& l = *gguf::kquant_layout(t);
    const size_t bb = gguf::traits(t).block_bytes;
    for (int64_t b = 0; b < W.numel() / 256; ++b) {
      const float* x = W.data<float>() + b * 256;
      std::vector<float> w(256);
      for (int k = 0; k < 256; ++k) w[size_t(k)] = std::fabs(imp[size_t((b * 256 + k) % 1024)]);
      gguf::KQuantBlock blk;
      float S[16], O[16];
      fit_kquant_superblock(l, x, 1, w.data(), &blk, S, O);
      for (int k = 0; k < 256; ++k) {
        const float c = std::nearbyint((x[k] - O[k / l.sub]) / S[k / l.sub]);
        blk.code[k] = uint8_t(std::clamp(std::isfinite(c) ? c : 0.f, 0.f, float(l.maxq())));
      }
      for (int j = 0; j < l.subs(); ++j) {
        ASSERT_GE(blk.scale[j], l.scale_min);
        ASSERT_LE(blk.scale[j], l.scale_max);
        ASSERT_GE(blk.min[j], 0);
        ASSERT_LE(blk.min[j], l.min_max);
      }
      std::vector<float> mine(256), ours(256);
      kquant_values(l, blk, mine.data());
      std::vector<uint8_t> bytes(bb);
      gguf::pack_kquant(l, blk, bytes.data());
      gguf::traits(t).decode(bytes.data(), ours.data(), 256);
      ASSERT_EQ(std::memcmp(mine.data(), ours.data(), 4 * 256), 0) << "block " << b;
      // The fit is nearest on its grid: no value is further than half a step from its code's.
      for (int k = 0; k < 256; ++k)
        ASSERT_LE(std::fabs(x[k] - mine[size_t(k)]),
                  0.5f * std::fabs(S[k / l.sub]) * 1.0001f +
                      (blk.code[k] == 0 || blk.code[k] == l.maxq() ? INFINITY : 0.f))
            << k;
    }
  }
  // The whole matrix through ggml's decoder, where the reference library is installed.
  if (!llama_cpp_dir().empty()) {
    for (gguf::Type t : kKTypes) {
      Tensor imp_t = Tensor::empty({1024});
      for (int64_t k = 0; k < 1024; ++k) imp_t.data<float>()[k] = std::fabs(imp[size_t(k)]);
      const Tensor blocks = kquant_rtn(W, t, imp_t);
      const GgmlLinear layer(t, blocks, 1024, {}, {});
      auto dequant = ggml().dequant(std::string(gguf::type_name(t)));
      ASSERT_NE(dequant, nullptr);
      std::vector<float> theirs(size_t(W.numel()));
      dequant(blocks.data<uint8_t>(), theirs.data(), W.numel());
      EXPECT_EQ(std::memcmp(layer.dequantize().data<float>(), theirs.data(), 4 * theirs.size()), 0)
          << gguf::type_name(t);
    }
  }
}

TEST(KQuantGrid, FitIsAtLeastAsGoodAsGgmlsReference) {
  REQUIRE_LLAMA_CPP();
  // Same values, plain squared error: our searched grids against ggml's reference quantizer
  // (quantize_row_*_ref, what llama-quantize writes without an importance matrix).
  const Tensor W = weights(64, 1024, 21);
  for (gguf::Type t : kKTypes) {
    const std::string name(gguf::type_name(t));
    auto quant = ggml().quant(name);
    ASSERT_NE(quant, nullptr) << name;
    std::vector<uint8_t> ref(gguf::row_bytes(t, W.numel()));
    quant(W.data<float>(), ref.data(), W.numel());
    std::vector<float> theirs(size_t(W.numel()));
    gguf::traits(t).decode(ref.data(), theirs.data(), W.numel());
    const Tensor ours = GgmlLinear(t, kquant_rtn(W, t), 1024, {}, {}).dequantize();
    double e_ref = 0, e_ours = 0;
    for (int64_t i = 0; i < W.numel(); ++i) {
      const double x = W.data<float>()[i];
      e_ref += (x - theirs[size_t(i)]) * (x - theirs[size_t(i)]);
      e_ours += (x - ours.data<float>()[i]) * (x - ours.data<float>()[i]);
    }
    EXPECT_LT(e_ours, e_ref) << name << ": ours " << e_ours << " ggml " << e_ref;
    std::printf("[ KQuantGrid ] %s squared error: ours %.4g, ggml reference %.4g (%.3f)\n",
                name.c_str(), e_ours, e_ref, e_ours / e_ref);
  }
}

TEST(KQuantGrid, GptqHasLessOutputErrorThanRtnOnTheSameGrid) {
  // Inputs with correlated channels (a random mixing of gaussians), H = X^T X / T.
  const int64_t n = 512, T = 2048;
  const Tensor Z = test::randn({T, n}, 31), M = test::randn({n, n}, 32, 1.0 / std::sqrt(n));
  Tensor X = Tensor::empty({T, n});
  ops::gemm(Z, false, M, false, X);
  Tensor H = Tensor::empty({n, n}, DType::F64);
  Tensor Hf = Tensor::empty({n, n});
  ops::gemm(X, true, X, false, Hf, 1.0 / double(T));
  for (int64_t i = 0; i < n * n; ++i) H.data<double>()[i] = Hf.data<float>()[i];
  const Tensor W = weights(128, n, 33);
  Tensor dH = Tensor::empty({n});
  for (int64_t i = 0; i < n; ++i) dH.data<float>()[i] = float(H.data<double>()[i * n + i]);
  for (gguf::Type t : {gguf::Type::Q4_K, gguf::Type::Q3_K, gguf::Type::Q2_K}) {
    SCOPED_TRACE(std::string(gguf::type_name(t)));
    const Tensor rtn = GgmlLinear(t, kquant_rtn(W, t, dH), n, {}, {}).dequantize();
    GptqResult r;
    const Tensor gptq = GgmlLinear(t, kquant_gptq(W, H, t, GptqOptions{}, nullptr, &r), n, {}, {})
                            .dequantize();
    EXPECT_TRUE(r.perm.empty());
    const double e_rtn = hessian_error(difference(W, rtn), H);
    const double e_gptq = hessian_error(difference(W, gptq), H);
    EXPECT_LT(e_gptq, 0.9 * e_rtn) << "gptq " << e_gptq << " rtn " << e_rtn;
    std::printf("[ KQuantGrid ] %s tr(D H D^T): gptq %.4g, rtn %.4g (%.3f)\n",
                std::string(gguf::type_name(t)).c_str(), e_gptq, e_rtn, e_gptq / e_rtn);
  }
}

// ------------------------------------------------------------------ models
struct Lab {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
};

Lab open_lab(const std::string& path) {
  Lab l;
  l.model = load_model(path);
  l.tok = load_tokenizer(l.model->checkpoint().tokenizer_path);
  return l;
}

std::vector<int32_t> valid_ids(const Lab& l) {
  return l.tok->encode(slurp(test::shared("data/lab-corpus/valid.txt")), l.model->config().add_bos);
}

EvalResult eval4(const Lab& l, const std::vector<int32_t>& ids) {
  EvalOptions o;
  o.max_windows = 4;
  o.progress = false;
  return evaluate(*l.model, ids, o, l.model->config().bos_id);
}

std::string u16_digest(const std::vector<int32_t>& ids) {
  std::string bytes;
  for (int32_t id : ids) {
    bytes += char(id & 0xFF);
    bytes += char(id >> 8);
  }
  return sha256_hex(bytes);
}

TEST(GgufModel, LabSF32ExportReadsBackIdentical) {
  REQUIRE_SHARED();
  const std::string out = test::temp_dir() + "/lab-s-f32.gguf";
  lrquant("export --model " + kLabS + " --out " + out + " --type f32");
  const TensorStore st = TensorStore::open_dir(kLabS);
  const gguf::File f = gguf::File::open(out);
  EXPECT_EQ(f.req_string("general.architecture"), "llama");
  EXPECT_EQ(f.tensor("output.weight"), nullptr);  // tied: llama.cpp falls back to token_embd
  EXPECT_EQ(f.tensor("output_norm.weight")->type, gguf::Type::F32);
  EXPECT_EQ(f.tensor("blk.0.attn_q.weight")->ne, (std::vector<int64_t>{256, 256}));
  EXPECT_EQ(f.tensor("blk.0.attn_k.weight")->ne, (std::vector<int64_t>{256, 128}));
  // The stored attn_q/attn_k rows follow GGUF.md's formula: GGUF row h*hd + 2i + j holds HF row
  // h*hd + j*hd/2 + i; every other tensor is the HF matrix as it was.
  const int64_t hd = 64;
  for (const char* n : {"self_attn.q_proj", "self_attn.k_proj"}) {
    for (int64_t layer = 0; layer < 4; ++layer) {
      const std::string hf = "model.layers." + std::to_string(layer) + "." + n + ".weight";
      const Tensor w = st.get(hf).to(DType::F32);
      const gguf::TensorInfo* t = f.tensor(gguf::llama_name(hf));
      const float* g = reinterpret_cast<const float*>(f.data(*t));
      for (int64_t h = 0; h < w.dim(0) / hd; ++h)
        for (int64_t i = 0; i < hd / 2; ++i)
          for (int64_t j = 0; j < 2; ++j)
            ASSERT_EQ(std::memcmp(g + (h * hd + 2 * i + j) * 256,
                                  w.data<float>() + (h * hd + j * hd / 2 + i) * 256, 256 * 4),
                      0)
                << hf;
    }
  }
  // Loaded back, every tensor equals the safetensors one (BF16 widened to F32 exactly).
  const Checkpoint ck = load_checkpoint(out);
  EXPECT_TRUE(ck.config.tied_embeddings);
  EXPECT_EQ(ck.config.head_dim, 64);
  EXPECT_EQ(ck.config.n_kv_heads, 2);
  EXPECT_FLOAT_EQ(ck.config.rms_eps, 1e-5f);
  EXPECT_EQ(ck.tensors.size(), st.names().size());
  for (const std::string& name : st.names()) {
    ASSERT_TRUE(ck.has(name)) << name;
    EXPECT_TRUE(same_bits(ck.get(name), st.get(name).to(DType::F32))) << name;
  }
  // The vocabulary in the file tokenizes the evaluation text as tokenizer.model does.
  const auto a = load_tokenizer(out), b = load_tokenizer(kLabS + "/tokenizer.model");
  const std::string text = slurp(test::shared("data/lab-corpus/valid.txt"));
  EXPECT_EQ(a->encode(text, true), b->encode(text, true));
  EXPECT_EQ(a->vocab_size(), 4096);
  const std::string inspect = lrquant("inspect --model " + out);
  EXPECT_NE(inspect.find("GGUF tensor types: f32 38"), std::string::npos) << inspect;
}

TEST(GgufModel, ExportAsStoredHasTheSamePerplexityAndText) {
  REQUIRE_SHARED();
  // "auto" keeps BF16, so lrquant runs the same kernels on the same values: the same bits.
  const std::string dir = test::temp_dir(), as_stored = dir + "/auto.gguf", f32 = dir + "/f32.gguf";
  lrquant("export --model " + kLabS + " --out " + as_stored);
  lrquant("export --model " + kLabS + " --out " + f32 + " --type f32");
  const Lab src = open_lab(kLabS), same = open_lab(as_stored), wide = open_lab(f32);
  EXPECT_EQ(same.model->checkpoint().stored_type.at("model.layers.0.mlp.up_proj.weight"), "bf16");
  const auto ids = valid_ids(src);
  const EvalResult r0 = eval4(src, ids), r1 = eval4(same, ids), r2 = eval4(wide, ids);
  EXPECT_EQ(r0.ppl, r1.ppl);
  // F32 weights take the F32 GEMM instead of the BF16 one: the same values, other roundings.
  EXPECT_NEAR(r2.ppl / r0.ppl, 1.0, 1e-6);
  const std::string gen = "generate --prompt 'Gentlemen of the Senate' --max-tokens 24 --model ";
  EXPECT_EQ(lrquant(gen + kLabS), lrquant(gen + as_stored));
  // Exporting the GGUF again writes the same file (a GGUF is as good a source as the folder).
  const std::string again = dir + "/again.gguf";
  lrquant("export --model " + f32 + " --out " + again + " --type f32 --name lab-s");
  EXPECT_TRUE(slurp(again) == slurp(f32));
}

TEST(GgufModel, QuantizedExportIsGgmlRoundToNearest) {
  const std::string dir = test::temp_dir();
  const TensorStore st = TensorStore::open_dir(kLabS);
  for (const char* type : {"q8_0", "q4_0", "q4_1"}) {
    const std::string out = dir + "/" + type + ".gguf";
    lrquant("export --model " + kLabS + " --out " + out + " --type " + type);
    gguf::Type t;
    ASSERT_TRUE(gguf::type_from_name(type, &t));
    const gguf::File f = gguf::File::open(out);
    // Projections in the block type, each row encoded from the source row; the embedding stays
    // as stored, the norms F32.
    EXPECT_EQ(f.tensor("token_embd.weight")->type, gguf::Type::BF16);
    EXPECT_EQ(f.tensor("blk.0.ffn_norm.weight")->type, gguf::Type::F32);
    const Tensor w = st.get("model.layers.2.mlp.down_proj.weight").to(DType::F32);
    const gguf::TensorInfo* ti = f.tensor("blk.2.ffn_down.weight");
    ASSERT_EQ(ti->type, t);
    std::vector<uint8_t> want(gguf::row_bytes(t, w.numel()));
    gguf::traits(t).encode(w.data<float>(), want.data(), w.numel());
    EXPECT_EQ(std::memcmp(f.data(*ti), want.data(), want.size()), 0) << type;
    // Loaded back: the decoded grid values, rows of attn_q back in Hugging Face order.
    const Checkpoint ck = load_checkpoint(out);
    const Tensor q = st.get("model.layers.1.self_attn.q_proj.weight").to(DType::F32);
    std::vector<float> dec(size_t(q.numel()));
    std::vector<uint8_t> enc(gguf::row_bytes(t, q.numel()));
    gguf::traits(t).encode(q.data<float>(), enc.data(), q.numel());
    gguf::traits(t).decode(enc.data(), dec.data(), q.numel());
    EXPECT_EQ(std::memcmp(ck.get("model.layers.1.self_attn.q_proj.weight").raw(), dec.data(),
                          4 * dec.size()),
              0)
        << type;
  }
  test::CliResult r =
      test::run_cli("export --model " + kLabS + " --out " + dir + "/x.gguf --type q4_K");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--type: q4_K is not an export type"), std::string::npos) << r.err;
  r = test::run_cli("export --model " + kLabS + " --out " + dir + "/q8_0.gguf");
  EXPECT_NE(r.err.find("output file exists (pass --force"), std::string::npos) << r.err;
}

std::string quantize(const std::string& recipe) {
  const std::string out = test::temp_dir() + "/q";
  lrquant("quantize --model " + kLabS + " --calib " + test::shared("data/lab-corpus/calib.txt") +
          " --nsamples 4 --seqlen 128 --recipe '" + recipe + "' --out " + out);
  return out;
}

TEST(GgufModel, LrquantFoldersTranscodeBitForBit) {
  REQUIRE_SHARED();
  const std::pair<const char*, gguf::Type> cases[] = {{"rtn:w4g32,sym", gguf::Type::Q4_0},
                                                      {"rtn:w4g32", gguf::Type::Q4_1},
                                                      {"rtn:w8g32,sym", gguf::Type::Q8_0}};
  for (auto [recipe, type] : cases) {
    SCOPED_TRACE(recipe);
    const std::string folder = quantize(recipe), out = folder + ".gguf";
    const std::string msg = lrquant("export --model " + folder + " --out " + out);
    EXPECT_NE(msg.find("28 lrquant layers transcoded bit for bit"), std::string::npos) << msg;
    const gguf::File f = gguf::File::open(out);
    EXPECT_EQ(f.opt_string("lrquant.recipe"), recipe);
    const Lab q = open_lab(folder), g = open_lab(out);
    for (const std::string& name : q.model->linear_names()) {
      EXPECT_EQ(f.tensor(gguf::llama_name(name + ".weight"))->type, type) << name;
      // What llama.cpp decodes is what lrquant's packed layer computes with.
      EXPECT_TRUE(same_bits(g.model->checkpoint().get(name + ".weight"),
                            q.model->linear(name).dequantize()))
          << name;
    }
  }
}

TEST(GgufModel, KQuantFoldersTranscodeBitForBit) {
  REQUIRE_SHARED();
  // lab-s's 256-wide inputs take the K-quant; ffn_down (640 = 2.5 super-blocks) its stand-in.
  const std::tuple<const char*, gguf::Type, gguf::Type> cases[] = {
      {"gptq:q4_k", gguf::Type::Q4_K, gguf::Type::Q4_1},
      {"gptq:q3_k", gguf::Type::Q3_K, gguf::Type::Q4_0},
      {"rtn:q2_k", gguf::Type::Q2_K, gguf::Type::Q4_0},
      {"awq:q5_k", gguf::Type::Q5_K, gguf::Type::Q8_0},
      {"rtn:q6_k,clip", gguf::Type::Q6_K, gguf::Type::Q8_0},
      {"rtn:q4_0", gguf::Type::Q4_0, gguf::Type::Q4_0}};
  for (auto [recipe, type, stand_in] : cases) {
    SCOPED_TRACE(recipe);
    const std::string folder = quantize(recipe), out = folder + ".gguf";
    const bool awq = std::string(recipe).starts_with("awq");
    test::CliResult r = test::run_cli("export --model " + folder + " --out " + out);
    if (awq) {
      // AWQ's per-layer input scale is runtime-only: quantized on the grid, refused at export.
      EXPECT_EQ(r.exit_code, 1);
      EXPECT_NE(r.err.find("an input scale (AWQ)"), std::string::npos) << r.err;
      const Lab q = open_lab(folder);
      EXPECT_NE(q.model->linear("model.layers.0.self_attn.q_proj").describe().find("ggml q5_K"),
                std::string::npos);
      continue;
    }
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("28 lrquant layers transcoded bit for bit"), std::string::npos) << r.out;
    const gguf::File f = gguf::File::open(out);
    const Lab q = open_lab(folder), g = open_lab(out);
    for (const std::string& name : q.model->linear_names()) {
      const bool down = name.ends_with("down_proj");
      EXPECT_EQ(f.tensor(gguf::llama_name(name + ".weight"))->type, down ? stand_in : type)
          << name;
      EXPECT_TRUE(same_bits(g.model->checkpoint().get(name + ".weight"),
                            q.model->linear(name).dequantize()))
          << name;
    }
    // The stored bytes of a K-quant layer are the file's bytes (q_proj: rows in RoPE order).
    const auto* layer = dynamic_cast<const GgmlLinear*>(&q.model->linear("model.layers.1.mlp.up_proj"));
    if (type != gguf::Type::Q4_0) {
      ASSERT_NE(layer, nullptr);
      const gguf::TensorInfo* ti = f.tensor("blk.1.ffn_up.weight");
      EXPECT_EQ(ti->bytes, uint64_t(layer->blocks().nbytes()));
      EXPECT_EQ(std::memcmp(f.data(*ti), layer->blocks().raw(), ti->bytes), 0);
      // Bits per weight of ggml's block: 84, 110, 144, 176 or 210 bytes per 256.
      EXPECT_DOUBLE_EQ(layer->bits_per_weight(),
                       double(gguf::traits(type).block_bytes) * 8.0 / 256.0);
    }
  }
}

TEST(GgufModel, LowRankBranchGoesToALoraAdapter) {
  REQUIRE_SHARED();
  const std::string folder = quantize("gptq:q4_k+lr:r8"), dir = test::temp_dir();
  const std::string base = dir + "/base.gguf", adapter = dir + "/adapter.gguf";
  test::CliResult r = test::run_cli("export --model " + folder + " --out " + base);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("pass --lora-out ADAPTER.gguf"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(base));
  lrquant("export --model " + folder + " --out " + base + " --lora-out " + adapter);
  const gguf::File a = gguf::File::open(adapter);
  EXPECT_EQ(a.opt_string("general.type"), "adapter");
  EXPECT_EQ(a.opt_string("adapter.type"), "lora");
  EXPECT_EQ(a.opt_number("adapter.lora.alpha"), 8.0);  // = the rank: llama.cpp's scale is 1
  const Lab q = open_lab(folder), g = open_lab(base);
  for (const std::string& name : q.model->linear_names()) {
    SCOPED_TRACE(name);
    const auto& l = dynamic_cast<const LowRankLinear&>(q.model->linear(name));
    const std::string gname = gguf::llama_name(name + ".weight");
    const gguf::TensorInfo* ta = a.tensor(gname + ".lora_a");
    const gguf::TensorInfo* tb = a.tensor(gname + ".lora_b");
    ASSERT_TRUE(ta && tb);
    EXPECT_EQ(ta->ne, (std::vector<int64_t>{l.in_features(), 8}));
    EXPECT_EQ(tb->ne, (std::vector<int64_t>{8, l.out_features()}));
    // base + B A, with lora_b's rows taken back from RoPE order, is the layer lrquant runs.
    const Tensor A = a.load(*ta);
    const Tensor B = gguf::rope_permuted(name + ".weight")
                         ? a.load_rows(*tb, [&](int64_t row) {
                             return gguf::rope_gguf_row(row, q.model->config().head_dim);
                           })
                         : a.load(*tb);
    Tensor W = g.model->checkpoint().get(name + ".weight").clone();
    ops::gemm(B, false, A, false, W, 1.0, 1.0);
    const Tensor want = q.model->linear(name).dequantize();
    double worst = 0;
    for (int64_t i = 0; i < W.numel(); ++i)
      worst = std::max(worst, double(std::fabs(W.data<float>()[i] - want.data<float>()[i])));
    EXPECT_LT(worst, 1e-6);  // one F32 rounding of a rank-8 product on weights of ~0.1
    // The base alone is the quantized residual, bit for bit.
    auto residual = l.with_low_rank({});
    EXPECT_TRUE(same_bits(g.model->checkpoint().get(name + ".weight"), residual->dequantize()));
  }
  // A rotation or permutation of the input cannot become W + B A on the input.
  const std::string lopro = quantize("gptq:q4_0,act_order+lr:r4");
  r = test::run_cli("export --model " + lopro + " --out " + dir + "/p.gguf --lora-out " + dir +
                    "/pa.gguf");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("column permutation"), std::string::npos) << r.err;
}

TEST(GgufModel, InexactLayersAreRefusedNamingARecipe) {
  const int64_t out = 64, in = 128;
  auto packed = [&](int bits, int64_t group, QuantFormat f) {
    Tensor codes = test::random_codes(out, in, bits, 1);
    Tensor scales = test::randn({out, in / group}, 2, 0.01, 0.05).to(DType::F16);
    Tensor offsets =
        f == QuantFormat::Affine ? test::randn({out, in / group}, 3).to(DType::F16) : Tensor();
    Tensor book;
    if (f == QuantFormat::Codebook) book = test::randn({int64_t(1) << bits}, 4);
    return PackedWeight::pack(codes, scales, offsets, book, bits, group, f);
  };
  gguf::Type t;
  auto reason = [&](PackedWeight q, InputTransform tr = {}, std::vector<LowRankPart> lr = {}) {
    return exact_gguf_type(PackedLinear(std::move(q), std::move(tr), std::move(lr)), &t);
  };
  EXPECT_EQ(reason(packed(4, 32, QuantFormat::Symmetric)), "");
  EXPECT_EQ(t, gguf::Type::Q4_0);
  EXPECT_EQ(reason(packed(4, 32, QuantFormat::Affine)), "");
  EXPECT_EQ(t, gguf::Type::Q4_1);
  EXPECT_EQ(reason(packed(8, 32, QuantFormat::Symmetric)), "");
  EXPECT_EQ(t, gguf::Type::Q8_0);
  std::vector<int32_t> perm(in);
  std::iota(perm.rbegin(), perm.rend(), 0);
  const std::pair<std::string, std::string> refused[] = {
      {reason(packed(4, 128, QuantFormat::Symmetric)), "groups of 128"},
      {reason(packed(3, 32, QuantFormat::Affine)), "3-bit affine"},
      {reason(packed(8, 32, QuantFormat::Affine)), "8-bit affine"},
      {reason(packed(4, 32, QuantFormat::Codebook)), "codebook"},
      {reason(packed(4, 32, QuantFormat::Symmetric), InputTransform().permute(perm)), "act_order"},
      {reason(packed(4, 32, QuantFormat::Symmetric), InputTransform().hadamard(128, 0)),
       "Hadamard"}};
  for (const auto& [why, what] : refused) {
    EXPECT_NE(why.find(what), std::string::npos) << why;
    EXPECT_NE(why.find("rtn or gptq (no act_order) with q4_0, q4_1, q8_0 or q2_k..q6_k"),
              std::string::npos)
        << why;
  }
  // A low-rank branch has its own way out: the adapter.
  const std::string lr = reason(
      packed(4, 32, QuantFormat::Symmetric), {},
      {LowRankPart::from_f32(test::randn({out, 4}, 5), test::randn({4, in}, 6), false)});
  EXPECT_NE(lr.find("low-rank branch (rank 4)"), std::string::npos) << lr;
  EXPECT_NE(lr.find("pass --lora-out ADAPTER.gguf"), std::string::npos) << lr;
  // Through the CLI, on a real GPTQ act_order checkpoint.
  REQUIRE_SHARED();
  const std::string folder = quantize("gptq:w4g32,sym,act_order");
  test::CliResult r = test::run_cli("export --model " + folder + " --out " + folder + ".gguf");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("layer model.layers.0.self_attn.q_proj cannot be exported exactly: its "
                       "input transform (a column permutation (act_order"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(folder + ".gguf"));
  r = test::run_cli("export --model " + folder + " --out " + folder + ".gguf --type q4_0");
  EXPECT_NE(r.err.find("already quantized by lrquant"), std::string::npos) << r.err;
}

// A copy of `src` with metadata and tensors changed, written by the writer under test only for
// the parts the reader is not being tested on.
void rewrite(const std::string& src, const std::string& out,
             const std::function<void(gguf::Writer&)>& meta,
             const std::function<bool(const gguf::TensorInfo&, std::vector<uint8_t>&)>& tensor) {
  const gguf::File f = gguf::File::open(src);
  gguf::Writer w;
  for (const auto& [k, v] : f.metadata()) w.set(k, v);
  meta(w);
  for (const gguf::TensorInfo& t : f.tensors()) {
    std::vector<uint8_t> bytes(f.data(t), f.data(t) + t.bytes);
    if (!tensor(t, bytes)) continue;
    w.add_tensor(t.name, t.ne, t.type,
                 [bytes](uint8_t* dst) { std::memcpy(dst, bytes.data(), bytes.size()); });
  }
  w.write(out);
}

TEST(GgufModel, MalformedModelsGiveOneLineErrors) {
  const std::string dir = test::temp_dir(), good = dir + "/good.gguf";
  lrquant("export --model " + kLabS + " --out " + good + " --type f32");
  auto keep = [](const gguf::TensorInfo&, std::vector<uint8_t>&) { return true; };
  auto none = [](gguf::Writer&) {};
  int n = 0;
  auto check =
      [&](const std::function<void(gguf::Writer&)>& meta,
          const std::function<bool(const gguf::TensorInfo&, std::vector<uint8_t>&)>& tensor,
          const std::string& keyword) {
        const std::string path = dir + "/m" + std::to_string(n++) + ".gguf";
        rewrite(good, path, meta, tensor);
        SCOPED_TRACE(keyword);
        expect_error([&] { load_model(path); }, path, keyword);
      };
  check([](gguf::Writer& w) { w.set("general.architecture", gguf::Value::string("qwen2")); }, keep,
        "general.architecture 'qwen2' is not supported");
  check([](gguf::Writer& w) { w.set("general.type", gguf::Value::string("adapter")); }, keep,
        "not a model");
  check([](gguf::Writer& w) { w.set("llama.block_count", gguf::Value::string("4")); }, keep,
        "metadata llama.block_count is str \"4\", expected an integer");
  check([](gguf::Writer& w) { w.set("llama.block_count", gguf::Value::u32(5)); }, keep,
        "missing tensor blk.4.attn_norm.weight");
  check([](gguf::Writer& w) { w.set("llama.attention.head_count_kv", gguf::Value::u32(3)); }, keep,
        "not divisible by head_count_kv 3");
  check([](gguf::Writer& w) { w.set("llama.rope.scaling.type", gguf::Value::string("yarn")); },
        keep, "llama.rope.scaling.type 'yarn' is not supported");
  check(
      [](gguf::Writer& w) {
        w.set("llama.attention.layer_norm_rms_epsilon", gguf::Value::f32(-1));
      },
      keep, "layer_norm_rms_epsilon must be a positive float");
  check(
      none, [](const gguf::TensorInfo& t, auto&) { return t.name != "blk.2.ffn_up.weight"; },
      "missing tensor blk.2.ffn_up.weight");
  check([](gguf::Writer& w) { w.set("llama.feed_forward_length", gguf::Value::u32(512)); }, keep,
        "tensor blk.0.ffn_gate.weight has ne [256,640], the llama.* metadata implies [256,512]");
  check([](gguf::Writer& w) { w.set("tokenizer.ggml.bos_token_id", gguf::Value::u32(4096)); }, keep,
        "tokenizer.ggml.bos_token_id = 4096 is outside the vocabulary");
  check(
      none,
      [](const gguf::TensorInfo& t, std::vector<uint8_t>& b) {
        if (t.name == "blk.1.attn_v.weight") {
          const float nan = std::nanf("");
          std::memcpy(b.data() + 4 * 300, &nan, 4);
        }
        return true;
      },
      "holds NaN at element 300 (row 1, column 44)");
  // An extra tensor the graph has no use for is refused rather than silently ignored.
  const std::string extra = dir + "/extra.gguf";
  gguf::Writer w;
  {
    const gguf::File f = gguf::File::open(good);
    for (const auto& [k, v] : f.metadata()) w.set(k, v);
    for (const gguf::TensorInfo& t : f.tensors())
      w.add_tensor(t.name, t.ne, t.type,
                   [&f, &t](uint8_t* dst) { std::memcpy(dst, f.data(t), t.bytes); });
    w.add_tensor("rope_freqs.weight", {32}, gguf::Type::F32,
                 [](uint8_t* d) { std::memset(d, 0, 128); });
    w.write(extra);
  }
  expect_error([&] { load_model(extra); }, extra,
               "tensor 'rope_freqs.weight' is not part of the llama graph");
  // A tokenizer GGUF cannot carry.
  const std::string gpt2 = dir + "/gpt2.gguf";
  rewrite(
      good, gpt2,
      [](gguf::Writer& w) { w.set("tokenizer.ggml.model", gguf::Value::string("gpt2")); }, keep);
  expect_error([&] { load_tokenizer(gpt2); }, gpt2, "tokenizer.ggml.model 'gpt2' is not supported");
}

// ------------------------------------------------------------------ llama.cpp itself
const char* kPrompt = "Gentlemen of the Senate and of the House";

TEST(LlamaCpp, F32ExportMatchesGreedyTextAndPerplexity) {
  REQUIRE_SHARED();
  REQUIRE_LLAMA_CPP();
  const std::string out = test::temp_dir() + "/lab-s-f32.gguf";
  lrquant("export --model " + kLabS + " --out " + out + " --type f32");
  const std::string text = test::shared("data/lab-corpus/valid.txt");
  const json ll =
      llama_cpp("--model " + out + " --text " + text + " --ctx 512 --max-windows 4 --prompt '" +
                kPrompt + "' --max-tokens 40");
  const Lab ours = open_lab(kLabS);
  const auto ids = valid_ids(ours);
  // The same token stream (llama.cpp's tokenizer on the metadata we wrote).
  EXPECT_EQ(ll.at("stream_tokens").get<size_t>(), ids.size());
  EXPECT_EQ(ll.at("token_sha256").get<std::string>(), u16_digest(ids));
  // The same greedy continuation.
  const auto prompt = ours.tok->encode(kPrompt, true);
  EXPECT_EQ(ll.at("prompt_ids").get<std::vector<int32_t>>(), prompt);
  SampleOptions s;
  s.max_tokens = 40;
  std::vector<int32_t> gen = generate(*ours.model, prompt, s);
  if (!gen.empty() && gen.back() == ours.model->config().eos_id) gen.pop_back();
  EXPECT_EQ(ll.at("generated_ids").get<std::vector<int32_t>>(), gen);
  EXPECT_GE(gen.size(), 20u);
  // The same perplexity on the same windows (measured: 1.7e-8 relative).
  const EvalResult r = eval4(ours, ids);
  EXPECT_EQ(ll.at("tokens").get<int64_t>(), r.tokens);
  EXPECT_NEAR(ll.at("ppl").get<double>() / r.ppl, 1.0, 1e-5)
      << "llama.cpp " << ll.at("ppl") << " lrquant " << r.ppl;
}

TEST(LlamaCpp, QuantizedExportsWithinActivationTolerance) {
  REQUIRE_SHARED();
  REQUIRE_LLAMA_CPP();
  // llama.cpp rounds activations to 8 bits inside its quantized dot products; lrquant computes
  // in F32 with the decoded weights. With Q8_0 weights (exactly the same values in both) that
  // rounding is the whole difference: measured 0.08% on these windows, Q4_0 0.07%. The issue's
  // 0.5% leaves room for other texts without hiding a wrong decode (a single wrong scale per
  // tensor moves the perplexity by percent).
  const std::string dir = test::temp_dir(), text = test::shared("data/lab-corpus/valid.txt");
  std::vector<std::string> files;
  for (const char* type : {"q8_0", "q4_0"}) {
    files.push_back(dir + "/" + type + ".gguf");
    lrquant("export --model " + kLabS + " --out " + files.back() + " --type " + type);
  }
  const std::string folder = quantize("rtn:w4g32,sym");
  files.push_back(folder + ".gguf");
  lrquant("export --model " + folder + " --out " + files.back());
  const Lab fp = open_lab(kLabS);
  const auto ids = valid_ids(fp);
  const double fp_ppl = eval4(fp, ids).ppl;
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    const json ll = llama_cpp("--model " + file + " --text " + text + " --ctx 512 --max-windows 4");
    const double ours = eval4(open_lab(file), ids).ppl;
    EXPECT_NEAR(ll.at("ppl").get<double>() / ours, 1.0, 5e-3)
        << "llama.cpp " << ll.at("ppl") << " lrquant " << ours;
    // Quantization is visible (the comparison is not of two FP models).
    EXPECT_GT(std::fabs(ours / fp_ppl - 1.0), 5e-5);
  }
  // The transcoded folder evaluates the same in lrquant from either form.
  EXPECT_EQ(eval4(open_lab(folder), ids).ppl, eval4(open_lab(files.back()), ids).ppl);
}

TEST(LlamaCpp, KQuantAndLowRankExportsMatchLrquant) {
  REQUIRE_SHARED();
  REQUIRE_LLAMA_CPP();
  // Within the 0.5% of QuantizedExportsWithinActivationTolerance: llama.cpp quantizes
  // activations to 8 bits in its K-quant and Q4_0 dot products, lrquant does not.
  const std::string text = test::shared("data/lab-corpus/valid.txt");
  const Lab fp = open_lab(kLabS);
  const auto ids = valid_ids(fp);
  for (const char* recipe : {"gptq:q4_k", "rtn:q4_0"}) {
    SCOPED_TRACE(recipe);
    const std::string folder = quantize(recipe), out = folder + ".gguf";
    lrquant("export --model " + folder + " --out " + out);
    const json ll = llama_cpp("--model " + out + " --text " + text + " --ctx 512 --max-windows 4");
    const double ours = eval4(open_lab(folder), ids).ppl;
    EXPECT_NEAR(ll.at("ppl").get<double>() / ours, 1.0, 5e-3)
        << "llama.cpp " << ll.at("ppl") << " lrquant " << ours;
    std::printf("[ LlamaCpp ] %s: llama.cpp %.4f, lrquant %.4f\n", recipe,
                ll.at("ppl").get<double>(), ours);
  }
  // FLRQ: the residual on q3_k, its branch as an adapter.
  const std::string folder = quantize("flrq:q3_k"), base = folder + ".gguf",
                    adapter = folder + ".lora.gguf";
  lrquant("export --model " + folder + " --out " + base + " --lora-out " + adapter);
  const double ours = eval4(open_lab(folder), ids).ppl;
  const json with = llama_cpp("--model " + base + " --lora " + adapter + " --text " + text +
                              " --ctx 512 --max-windows 4");
  const json without = llama_cpp("--model " + base + " --text " + text + " --ctx 512 --max-windows 4");
  const double w = with.at("ppl").get<double>(), wo = without.at("ppl").get<double>();
  std::printf("[ LlamaCpp ] flrq:q3_k: llama.cpp with adapter %.4f, without %.4f, lrquant %.4f\n",
              w, wo, ours);
  EXPECT_NEAR(w / ours, 1.0, 5e-3) << "llama.cpp " << w << " lrquant " << ours;
  // The branch matters: without it the residual alone is measurably worse.
  EXPECT_GT(wo / w, 1.01) << "without " << wo << " with " << w;
}

// llama_model_quantize_params as llama.h of the shipped release (v0.4.0) declares it; the
// library is called through dlopen, so this mirror is the ABI.
struct LlamaQuantizeParams {
  int32_t nthread;
  int32_t ftype;
  int32_t output_tensor_type, token_embedding_type;
  bool allow_requantize, quantize_output_tensor, only_copy, pure, keep_split, dry_run;
  const void *imatrix, *kv_overrides, *tt_overrides;
  const int32_t* prune_layers;
  size_t max_buf_size;
};

TEST(LlamaCpp, ReadsTheMixesLlamaQuantizeWrites) {
  REQUIRE_SHARED();
  REQUIRE_LLAMA_CPP();
  void* lib = dlopen((llama_bins() + "libllama.v0.4.0.so").c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(lib, nullptr) << dlerror();
  auto init = reinterpret_cast<void (*)()>(dlsym(lib, "llama_backend_init"));
  auto defaults = reinterpret_cast<LlamaQuantizeParams (*)()>(
      dlsym(lib, "llama_model_quantize_default_params"));
  auto quantize =
      reinterpret_cast<uint32_t (*)(const char*, const char*, const LlamaQuantizeParams*)>(
          dlsym(lib, "llama_model_quantize"));
  ASSERT_TRUE(init && defaults && quantize);
  init();
  const std::string dir = test::temp_dir(), f32 = dir + "/f32.gguf";
  const std::string text = test::shared("data/lab-corpus/valid.txt");
  lrquant("export --model " + kLabS + " --out " + f32 + " --type f32");
  const Lab fp = open_lab(kLabS);
  const auto ids = valid_ids(fp);
  // llama.cpp's own per-tensor mixes (lab-s's 640-wide rows fall back to 32-blocks for ffn_down),
  // so every K-quant decoder and the legacy types meet files we did not write.
  const std::pair<int32_t, std::set<std::string>> mixes[] = {
      {15, {"q4_K", "q6_K"}},          // Q4_K_M
      {12, {"q3_K", "q4_K", "q5_K"}},  // Q3_K_M
      {10, {"q2_K", "q3_K"}}};         // Q2_K
  for (const auto& [ftype, must] : mixes) {
    SCOPED_TRACE("llama_ftype " + std::to_string(ftype));
    const std::string out = dir + "/mix" + std::to_string(ftype) + ".gguf";
    LlamaQuantizeParams p = defaults();
    p.ftype = ftype;
    p.nthread = 2;
    ASSERT_EQ(quantize(f32.c_str(), out.c_str(), &p), 0u);
    const Lab q = open_lab(out);
    std::set<std::string> types;
    for (const auto& [name, t] : q.model->checkpoint().stored_type) types.insert(t);
    for (const std::string& t : must) EXPECT_TRUE(types.count(t)) << t;
    // Its perplexity, measured by lrquant and by llama.cpp, within the activation tolerance of
    // QuantizedExportsWithinActivationTolerance (measured: Q4_K_M -0.04%, Q2_K +0.10%).
    const json ll = llama_cpp("--model " + out + " --text " + text + " --ctx 512 --max-windows 4");
    const double ours = eval4(q, ids).ppl;
    EXPECT_NEAR(ll.at("ppl").get<double>() / ours, 1.0, 5e-3)
        << "llama.cpp " << ll.at("ppl") << " lrquant " << ours;
  }
}

}  // namespace
