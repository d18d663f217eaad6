#include "quant/resume.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "formats/registry.h"
#include "io/json_util.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "quant/pipeline.h"

namespace lrq {

namespace fs = std::filesystem;

namespace {

constexpr int kVersion = 1;

std::string block_file(const std::string& dir, int64_t layer, const char* ext) {
  return dir + "/block-" + std::to_string(layer) + ext;
}

// Doubles go through JSON exactly (nlohmann writes the shortest round-tripping form), so a
// resumed report totals to the same bits as an uninterrupted one.
nlohmann::json row_json(const LayerReport& l) {
  return {{"name", l.name},     {"recipe", l.recipe},         {"describe", l.describe},
          {"in", l.in},         {"out", l.out},               {"bytes", l.bytes},
          {"bpw", l.bpw},       {"weight_err", l.weight_err}, {"output_err", l.output_err},
          {"seconds", l.seconds}, {"extra", l.extra}};
}

LayerReport row_from(const nlohmann::json& j) {
  LayerReport l;
  l.name = j.at("name").get<std::string>();
  l.recipe = j.at("recipe").get<std::string>();
  l.describe = j.at("describe").get<std::string>();
  l.in = io::json_int(j, "in", "resume block", 1, INT32_MAX);
  l.out = io::json_int(j, "out", "resume block", 1, INT32_MAX);
  l.bytes = j.at("bytes").get<size_t>();
  l.bpw = j.at("bpw").get<double>();
  l.weight_err = j.at("weight_err").get<double>();
  l.output_err = j.at("output_err").get<double>();
  l.seconds = j.at("seconds").get<double>();
  l.extra = j.at("extra");
  return l;
}

// The first key where two job descriptions differ, for the error message.
std::string first_difference(const nlohmann::json& a, const nlohmann::json& b) {
  for (auto it = b.begin(); it != b.end(); ++it)
    if (!a.contains(it.key()) || a.at(it.key()) != it.value()) return it.key();
  for (auto it = a.begin(); it != a.end(); ++it)
    if (!b.contains(it.key())) return it.key();
  return "?";
}

}  // namespace

std::string BlockCheckpoints::dir_for(const std::string& out_dir) {
  const fs::path out = fs::absolute(out_dir);
  const fs::path p = out.has_filename() ? out : out.parent_path();
  return (p.parent_path() / ("." + p.filename().string() + ".resume")).string();
}

BlockCheckpoints::BlockCheckpoints(std::string dir, nlohmann::json job, Previous previous)
    : dir_(std::move(dir)), job_(std::move(job)) {
  // One run per checkpoint: a second run of the same output (two shells, a scheduler retry)
  // would otherwise interleave its blocks with ours. The lock is on the folder itself and
  // dies with the process, so a killed run never leaves it held.
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) fail(dir_, "cannot create the resume folder: {}", ec.message());
  lock_.fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock_.fd < 0) fail(dir_, "cannot open the resume folder: {}", std::strerror(errno));
  if (::flock(lock_.fd, LOCK_EX | LOCK_NB) != 0) {
    fail(dir_, "another lrquant run is writing this output; wait for it or choose another --out");
  }
  const std::string state = dir_ + "/state.json";
  if (previous == Previous::Refuse && fs::exists(state)) {
    const auto s = nlohmann::json::parse(read_text_file(state), nullptr, false);
    const int64_t n = s.is_object() && s.contains("finished") && s.at("finished").is_number_integer()
                          ? s.at("finished").get<int64_t>()
                          : 1;
    if (n > 0)
      fail(dir_, "holds {} finished blocks of an interrupted run; pass --resume to continue it, "
           "or --force to start over", n);
  }
  if (previous == Previous::Resume && fs::exists(state)) {
    const nlohmann::json s = io::parse_json(read_text_file(state), state, "resume state");
    if (!s.is_object() || s.value("version", 0) != kVersion || !s.contains("job") ||
        !s.contains("finished") || !s.at("finished").is_number_integer())
      fail(state, "not a resume state of this lrquant version; rerun without --resume");
    if (s.at("job") != job_)
      fail(dir_, "holds an interrupted run of a different job ({} differs); rerun without "
           "--resume to start over",
           first_difference(s.at("job"), job_));
    finished_ = io::json_int(s, "finished", state, 0, INT32_MAX);
    for (int64_t l = 0; l < finished_; ++l)
      if (!fs::exists(block_file(dir_, l, ".safetensors")) ||
          !fs::exists(block_file(dir_, l, ".json")))
        fail(dir_, "block {} of the interrupted run is missing; rerun without --resume", l);
    return;
  }
  // Starting over: empty the folder we hold (removing it would drop the lock).
  for (const auto& e : fs::directory_iterator(dir_, ec)) fs::remove_all(e.path(), ec);
  if (ec) fail(dir_, "cannot empty the resume folder: {}", ec.message());
  write_state();
}

BlockCheckpoints::~BlockCheckpoints() {
  if (finished_ == 0) remove();
}

BlockCheckpoints::Lock::~Lock() {
  if (fd >= 0) ::close(fd);
}

void BlockCheckpoints::write_state() const {
  const nlohmann::json s = {{"version", kVersion}, {"job", job_}, {"finished", finished_}};
  write_file_atomic(dir_ + "/state.json", s.dump(1) + "\n");
}

void BlockCheckpoints::save(const Model& model, int64_t layer,
                            const std::vector<LayerReport>& rows) {
  LRQ_ASSERT(layer == finished_);
  NamedTensors tensors;
  nlohmann::json layers = nlohmann::json::object();
  for (const auto& proj : projection_names()) {
    const std::string name = Model::linear_name(layer, proj);
    const Linear& lin = model.linear(name);
    bool installed = false;
    for (const auto& r : rows) installed |= r.name == name;
    if (!installed) continue;  // kept in full precision: the model's own weight
    const size_t before = tensors.size();
    nlohmann::json meta = lin.save(name, tensors);
    if (meta.is_null()) {
      // A method that returned a dense layer: its weight is all there is to keep.
      LRQ_ASSERT(tensors.size() == before + 1);
      meta = {{"kind", "dense"}};
    }
    layers[name] = meta;
  }
  nlohmann::json j = {{"layers", layers}, {"rows", nlohmann::json::array()}};
  for (const auto& r : rows) j["rows"].push_back(row_json(r));
  write_safetensors(block_file(dir_, layer, ".safetensors"), tensors);
  write_file_atomic(block_file(dir_, layer, ".json"), j.dump(1) + "\n");
  ++finished_;
  write_state();
}

BlockCheckpoints::Restored BlockCheckpoints::restore(const Model& model, int64_t layer) const {
  LRQ_ASSERT(layer < finished_);
  const std::string jf = block_file(dir_, layer, ".json");
  const nlohmann::json j = io::parse_json(read_text_file(jf), jf, "resume block");
  auto file = std::make_shared<SafetensorsFile>(
      SafetensorsFile::open(block_file(dir_, layer, ".safetensors")));
  Restored r;
  try {
    for (const auto& row : j.at("rows")) r.rows.push_back(row_from(row));
    for (auto it = j.at("layers").begin(); it != j.at("layers").end(); ++it) {
      const std::string& name = it.key();
      const Linear& now = model.linear(name);
      if (it.value().value("kind", "") == "dense") {
        r.layers.emplace_back(name, std::make_unique<DenseLinear>(file->get(name + ".weight")));
        continue;
      }
      LayerSource src{name, it.value(), [&](const std::string& t) { return file->get(t); },
                      now.in_features(), now.out_features(), jf + ": layer " + name};
      r.layers.emplace_back(name, load_layer(src));
    }
  } catch (const nlohmann::json::exception& e) {
    fail(jf, "malformed resume block ({}); rerun without --resume", e.what());
  }
  return r;
}

void BlockCheckpoints::remove() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

}  // namespace lrq
