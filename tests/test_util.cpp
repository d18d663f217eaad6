#include <random>
#include "test_util.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace fs = std::filesystem;

namespace lrq::test {

std::string shared_dir() {
  if (const char* e = std::getenv("LRQ_SHARED"); e && fs::is_directory(e)) return e;
  fs::path p = fs::path(LRQ_SOURCE_DIR).parent_path() / "shared";
  return fs::is_directory(p / "models") ? p.string() : "";
}

std::string shared(const std::string& rel) { return (fs::path(shared_dir()) / rel).string(); }
std::string repo(const std::string& rel) { return (fs::path(LRQ_SOURCE_DIR) / rel).string(); }
std::string test_data(const std::string& rel) { return (fs::path(LRQ_TEST_DATA) / rel).string(); }

namespace {
struct TempDirs {
  std::vector<fs::path> dirs;
  ~TempDirs() {
    std::error_code ec;
    for (auto& d : dirs) fs::remove_all(d, ec);
  }
};
TempDirs g_temps;

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
}  // namespace

std::string temp_dir() {
  std::string tmpl = (fs::temp_directory_path() / "lrq_test_XXXXXX").string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back(0);
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
  g_temps.dirs.emplace_back(buf.data());
  return buf.data();
}

Tensor randn(Shape s, uint64_t seed, double sd, double mean) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d(mean, sd);
  Tensor x = Tensor::empty(std::move(s));
  for (int64_t i = 0; i < x.numel(); ++i) x.at<float>(i) = float(d(g));
  return x;
}

Tensor random_codes(int64_t m, int64_t n, int bits, uint64_t seed) {
  std::mt19937_64 g(seed);
  Tensor c = Tensor::empty({m, n}, DType::U8);
  for (int64_t e = 0; e < c.numel(); ++e) c.data<uint8_t>()[e] = uint8_t(g() % (1u << bits));
  return c;
}

CliResult run_cli(const std::string& args, const std::string& binary) {
  std::string dir = temp_dir();
  std::string out = dir + "/out", err = dir + "/err";
  std::string cmd = (binary.empty() ? std::string(LRQ_CLI_BINARY) : binary) + " " + args + " >" +
                    out + " 2>" + err;
  int rc = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

}  // namespace lrq::test
