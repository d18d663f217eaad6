#include "quant/allocate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>

#include "io/json_util.h"
#include "core/error.h"
#include "core/interrupt.h"
#include "quant/method.h"
#include "quant/objective.h"

namespace lrq {

// Sym + clip: FLRQ's grid, cheaper (no zero points) and better than the asymmetric default at
// every width on lab-m (bench/RESULTS.md). Rank 8 with QERA's weighting (scale=full, the best
// +lr weighting there) costs ~0.35-0.5 bpw at lab-m's widths, so it competes with one more bit
// or a smaller group; r16 (~0.8 bpw) rarely can.
const char* const kDefaultCandidates =
    "gptq:w2g128,sym,clip;gptq:w2g64,sym,clip;gptq:w2g32,sym,clip;"
    "gptq:w2g128,sym,clip+lr:r8,scale=full;gptq:w3g128,sym,clip;gptq:w3g64,sym,clip;"
    "gptq:w3g128,sym,clip+lr:r8,scale=full;gptq:w4g128,sym,clip";

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

constexpr Site kSites[] = {Site::AttnIn, Site::OIn, Site::MlpIn, Site::DownIn};

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// An exact-name pattern for core/pattern.h: anchored, every '.' escaped.
std::string exact_pattern(const std::string& name) {
  std::string p = "^";
  for (char c : name) {
    if (c == '.') p += '\\';
    p += c;
  }
  return p + "$";
}

uint64_t bytes_for_budget(double bpw, int64_t weights) {
  return uint64_t(std::floor((long double)bpw * (long double)weights / 8.0L));
}

double bits(uint64_t bytes, int64_t weights) { return 8.0 * double(bytes) / double(weights); }

// The candidate a projection's measurement feeds forward and probes the block's sensitivity
// with: the smallest output error, the first of equals.
size_t most_accurate(const ProjectionMeasure& p) {
  size_t k = 0;
  for (size_t j = 1; j < p.c.size(); ++j)
    if (p.c[j].output_err < p.c[k].output_err) k = j;
  return k;
}

double objective_cost(BudgetObjective o, double e, double sensitivity) {
  switch (o) {
    case BudgetObjective::Sum:
      return e;
    case BudgetObjective::Power:
      return e * e;
    case BudgetObjective::BlockKl:
    case BudgetObjective::LayerKl:
      return sensitivity * e * e;
  }
  return e;
}

// log sum exp of one row of logits, in double, in index order.
double log_sum_exp(const float* a, int64_t V) {
  double mx = a[0], s = 0;
  for (int64_t i = 1; i < V; ++i) mx = std::max(mx, double(a[i]));
  for (int64_t i = 0; i < V; ++i) s += std::exp(double(a[i]) - mx);
  return mx + std::log(s);
}

// The reference side of KL(P || Q) for T x V logits, computed once per window: log P and P
// per row, in double (sums of 4096+ exps lose digits in float).
struct RefRows {
  int64_t T = 0, V = 0;
  std::vector<double> lp, p;
  explicit RefRows(const Tensor& logits) : T(logits.dim(0)), V(logits.dim(1)) {
    lp.resize(size_t(T * V));
    p.resize(size_t(T * V));
    const float* z = logits.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const float* a = z + t * V;
      const double lse = log_sum_exp(a, V);
      for (int64_t i = 0; i < V; ++i) {
        lp[size_t(t * V + i)] = double(a[i]) - lse;
        p[size_t(t * V + i)] = std::exp(lp[size_t(t * V + i)]);
      }
    }
  }
  // Sum over rows of KL(P || softmax(q)); rows in parallel, added in row order (the same bits
  // for any thread count).
  double kl_sum(const Tensor& q) const {
    const float* zq = q.data<float>();
    std::vector<double> out(size_t(T), 0.0);
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const float* b = zq + t * V;
      const double lse = log_sum_exp(b, V);
      const double* l = lp.data() + t * V;
      const double* pp = p.data() + t * V;
      double kl = 0;
      for (int64_t i = 0; i < V; ++i) kl += pp[i] * (l[i] - (double(b[i]) - lse));
      out[size_t(t)] = kl;
    }
    double sum = 0;
    for (double v : out) sum += v;
    return sum;
  }
};

using LayerMap = std::map<std::string, std::unique_ptr<Linear>>;

// A set of projections swapped together for one KL measurement; all in block `block`.
struct ProbeGroup {
  int64_t block = 0;
  std::vector<std::string> names;
};

// Per group: the mean KL of the final logits from the full-precision model's when only that
// group's projections take their `probe` layers, over the first `count` windows. The blocks
// before a group's block are the same in both models, so each window's block inputs are
// computed once and the probe run starts at the group's block: sum over groups of (L - block)
// block forwards per window instead of L each.
std::vector<double> probe_kl(Model& model, const std::vector<std::vector<int32_t>>& windows,
                             int64_t count, LayerMap& probe, const std::vector<ProbeGroup>& groups) {
  const int64_t L = model.n_layers();
  std::vector<double> kl(groups.size(), 0.0);
  int64_t tokens = 0;
  auto swap_group = [&](const ProbeGroup& g) {
    for (const auto& name : g.names) {
      auto it = probe.find(name);
      LRQ_ASSERT(it != probe.end());
      const std::string short_name = name.substr(Model::linear_name(g.block, "").size());
      std::swap(model.block(g.block).proj(short_name), it->second);
    }
  };
  count = std::min<int64_t>(count, int64_t(windows.size()));
  for (int64_t w = 0; w < count; ++w) {
    KVCache none;
    std::vector<Tensor> h;
    h.push_back(model.embed(windows[size_t(w)]));
    for (int64_t l = 0; l < L; ++l) {
      Tensor y = h.back().clone();
      model.block_forward(l, y, 0, none);
      h.push_back(y);
    }
    const RefRows ref(model.head(h.back()).to(Device::CPU));
    for (size_t g = 0; g < groups.size(); ++g) {
      check_interrupted();
      Tensor y = h[size_t(groups[g].block)].clone();
      swap_group(groups[g]);
      try {
        for (int64_t l = groups[g].block; l < L; ++l) model.block_forward(l, y, 0, none);
      } catch (...) {
        swap_group(groups[g]);
        throw;
      }
      swap_group(groups[g]);
      kl[g] += ref.kl_sum(model.head(y).to(Device::CPU));
    }
    tokens += ref.T;
  }
  for (double& v : kl) v /= double(std::max<int64_t>(1, tokens));
  return kl;
}

}  // namespace

BudgetObjective parse_budget_objective(const std::string& s, const std::string& arg) {
  if (s == "sum") return BudgetObjective::Sum;
  if (s == "power") return BudgetObjective::Power;
  if (s == "block-kl") return BudgetObjective::BlockKl;
  if (s == "layer-kl") return BudgetObjective::LayerKl;
  fail(arg, "unknown objective '{}' (sum | power | block-kl | layer-kl)", s);
}

std::string_view budget_objective_name(BudgetObjective o) {
  switch (o) {
    case BudgetObjective::Sum:
      return "sum";
    case BudgetObjective::Power:
      return "power";
    case BudgetObjective::BlockKl:
      return "block-kl";
    case BudgetObjective::LayerKl:
      return "layer-kl";
  }
  return "?";
}

MeasureFeed parse_measure_feed(const std::string& s, const std::string& arg) {
  if (s == "best") return MeasureFeed::Best;
  if (s == "fp") return MeasureFeed::Fp;
  fail(arg, "unknown feed '{}' (best | fp)", s);
}

std::string_view measure_feed_name(MeasureFeed f) { return f == MeasureFeed::Fp ? "fp" : "best"; }

std::vector<Recipe> parse_candidates(const std::string& text, const std::string& arg) {
  if (trim(text).empty()) fail(arg, "no candidates given");
  std::vector<Recipe> out;
  std::vector<std::string> seen;
  size_t b = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i < text.size() && text[i] != ';') continue;
    const std::string part = trim(text.substr(b, i - b));
    b = i + 1;
    if (part.empty()) {
      if (i == text.size() && !out.empty()) continue;  // a trailing ';' is harmless
      fail(arg, "empty candidate in '{}' (recipes separated by ';')", text);
    }
    Recipe r = parse_recipe(part, arg);
    if (is_block_method(r))
      fail(arg, "'{}' quantizes whole blocks; a budget chooses recipes layer by layer", part);
    if (r.act.any())
      fail(arg, "'{}': {} applies to the whole model, not to a candidate", part, r.act.str());
    if (std::find(seen.begin(), seen.end(), r.str()) != seen.end())
      fail(arg, "candidate '{}' given twice", r.str());
    seen.push_back(r.str());
    out.push_back(std::move(r));
  }
  if (out.empty()) fail(arg, "no candidates given");
  if (out.size() > 255) fail(arg, "{} candidates (at most 255)", out.size());
  return out;
}

void check_budget_bpw(double bpw, const std::string& arg) {
  if (!std::isfinite(bpw) || !(bpw > 0))
    fail(arg, "needs a positive number of bits per weight, got {}", bpw);
}

uint64_t projection_disk_bytes(const Linear& layer, const std::string& name) {
  NamedTensors t;
  layer.save(name, t);
  uint64_t b = 0;
  for (const auto& [n, tensor] : t)
    if (n != name + ".bias") b += tensor.nbytes();
  return b;
}

nlohmann::json Measurements::to_json() const {
  nlohmann::json j;
  j["candidates"] = candidates;
  j["feed"] = std::string(measure_feed_name(feed));
  j["seconds"] = seconds;
  j["sensitivity_seconds"] = sensitivity_seconds;
  j["stages"] = stages.to_json();
  j["block_kl"] = block_kl;
  j["block_sensitivity"] = block_sensitivity;
  j["layer_kl"] = layer_kl;
  j["layer_sensitivity"] = layer_sensitivity;
  j["layers"] = nlohmann::json::array();
  for (const auto& p : layers) {
    nlohmann::json e = {{"name", p.name}, {"block", p.block}, {"in", p.in}, {"out", p.out}};
    for (const auto& c : p.c) {
      e["bytes"].push_back(c.bytes);
      e["output_err"].push_back(c.output_err);
      e["weight_err"].push_back(c.weight_err);
      e["seconds"].push_back(c.seconds);
    }
    j["layers"].push_back(e);
  }
  return j;
}

Measurements Measurements::from_json(const nlohmann::json& j, const std::string& where) {
  Measurements m;
  try {
    m.candidates = j.at("candidates").get<std::vector<std::string>>();
    m.feed = parse_measure_feed(j.at("feed").get<std::string>(), where);
    m.seconds = j.at("seconds").get<double>();
    m.sensitivity_seconds = j.value("sensitivity_seconds", 0.0);
    m.block_kl = j.value("block_kl", std::vector<double>{});
    m.block_sensitivity = j.value("block_sensitivity", std::vector<double>{});
    m.layer_kl = j.value("layer_kl", std::vector<double>{});
    m.layer_sensitivity = j.value("layer_sensitivity", std::vector<double>{});
    for (const auto& e : j.at("layers")) {
      ProjectionMeasure p;
      p.name = e.at("name").get<std::string>();
      p.block = io::json_int(e, "block", where, 0, INT32_MAX);
      p.in = io::json_int(e, "in", where, 1, INT32_MAX);
      p.out = io::json_int(e, "out", where, 1, INT32_MAX);
      const auto bytes = e.at("bytes").get<std::vector<uint64_t>>();
      const auto oerr = e.at("output_err").get<std::vector<double>>();
      const auto werr = e.at("weight_err").get<std::vector<double>>();
      const auto secs = e.at("seconds").get<std::vector<double>>();
      if (bytes.size() != m.candidates.size() || oerr.size() != bytes.size() ||
          werr.size() != bytes.size() || secs.size() != bytes.size())
        fail(where, "layer {} has {} measurements for {} candidates", p.name, bytes.size(),
             m.candidates.size());
      for (size_t k = 0; k < bytes.size(); ++k) {
        if (!std::isfinite(oerr[k]) || oerr[k] < 0)
          fail(where, "layer {}: output error {} is not a finite non-negative number", p.name,
               oerr[k]);
        p.c.push_back({bytes[k], oerr[k], werr[k], secs[k]});
      }
      m.layers.push_back(std::move(p));
    }
  } catch (const nlohmann::json::exception& e) {
    fail(where, "not a budget measurement table ({})", e.what());
  }
  return m;
}

Measurements measure_candidates(Model& model, const std::vector<std::vector<int32_t>>& windows,
                                const QuantizeOptions& o, const BudgetOptions& b) {
  if (b.candidates.empty()) fail("--candidates", "no candidates given");
  const auto t_start = std::chrono::steady_clock::now();
  Measurements m;
  m.feed = b.feed;
  std::vector<std::unique_ptr<Method>> methods;
  for (const Recipe& r : b.candidates) {
    m.candidates.push_back(r.str());
    methods.push_back(r.base().method == "fp" ? nullptr : make_method(r));
  }
  const int64_t L = model.n_layers();
  int64_t weights = 0;
  // The full-precision layers, kept aside (views of the checkpoint: no copy) so the model
  // leaves as it came, whatever the measurement installs.
  LayerMap fp, probe;
  for (int64_t l = 0; l < L; ++l)
    for (const auto& p : projection_names()) {
      const std::string name = Model::linear_name(l, p);
      fp[name] = model.linear(name).to(model.block_device(l));
      weights += model.linear(name).in_features() * model.linear(name).out_features();
    }
  const uint64_t budget = b.bpw > 0 ? bytes_for_budget(b.bpw, weights) : 0;
  // A candidate's bytes per shape: a size that depends on the data breaks the promise that the
  // final run writes what was measured.
  std::map<std::pair<int64_t, int64_t>, std::vector<uint64_t>> shape_bytes;
  {
    CalibRunner run(model, windows,
                    CalibOptions{o.device, o.tf32, o.bf16, o.calib_mode,
                                 o.fp_inputs || b.feed == MeasureFeed::Fp, o.progress});
    for (int64_t l = 0; l < L; ++l) {
      run.begin_block(l);
      for (Site s : kSites)
        for (const auto& proj : site_projections(s)) {
          check_interrupted();
          const std::string name = Model::linear_name(l, proj);
          const SiteStats& S = run.stats(s);
          const Device bdev = run.block_device();
          Tensor W, Wcpu;
          run.timed(&StageTimes::method, [&] { W = dense_f32(model.linear(name)); });
          ProjectionMeasure pm{name, l, W.dim(1), W.dim(0), {}};
          std::unique_ptr<Linear> keep;
          Tensor keep_wq;
          bool keep_fp = false;  // the kept layer is the full-precision one, bias included
          for (size_t k = 0; k < methods.size(); ++k) {
            const auto t0 = std::chrono::steady_clock::now();
            std::unique_ptr<Linear> layer;
            if (!methods[k]) {
              layer = fp.at(name)->to(bdev);
            } else {
              // As the pipeline does: a method that cannot run where the block is gets CPU
              // copies (made once per projection, shared by the candidates).
              const Device mdev = methods[k]->runs_on(bdev) ? bdev : Device::CPU;
              if (mdev != bdev && !Wcpu.defined())
                run.timed(&StageTimes::transfer, [&] { Wcpu = W.to(mdev); });
              const SiteStats& Sm = run.stats(s, mdev);
              Quantized q;
              run.timed(&StageTimes::method, [&] {
                q = methods[k]->quantize(mdev != bdev ? Wcpu : W, Sm,
                                         QuantJob{name, layer_seed(o.seed, name)});
              });
              layer = run.to_block_device(std::move(q.layer));
            }
            CandidateResult c;
            c.bytes = projection_disk_bytes(*layer, name);
            Tensor Wq;
            run.timed(&StageTimes::report, [&] {
              Wq = layer->dequantize().to(W.device());
              const LayerErrors e = layer_errors(W, Wq, S.H());
              c.output_err = e.output;
              c.weight_err = e.weight;
            });
            c.seconds = seconds_since(t0);
            if (!keep || c.output_err < pm.c[most_accurate(pm)].output_err) {
              keep = std::move(layer);
              keep_wq = Wq;
              keep_fp = !methods[k];
            }
            pm.c.push_back(c);
          }
          auto& sb = shape_bytes[{pm.in, pm.out}];
          if (sb.empty()) {
            for (const auto& c : pm.c) sb.push_back(c.bytes);
          } else {
            for (size_t k = 0; k < sb.size(); ++k)
              if (sb[k] != pm.c[k].bytes)
                fail("--candidates",
                     "'{}' stored {} bytes for {} but {} for an earlier {}x{} projection: its "
                     "size depends on the data, which a budget cannot promise (give it a fixed "
                     "rank, e.g. rank=8)",
                     m.candidates[k], pm.c[k].bytes, name, sb[k], pm.out, pm.in);
          }
          if (!keep_fp) keep = keep_bias(model, name, std::move(keep));
          if (b.objective == BudgetObjective::BlockKl || b.objective == BudgetObjective::LayerKl)
            probe[name] = keep->to(model.device());
          if (b.feed == MeasureFeed::Best) run.install(name, std::move(keep), keep_wq);
          m.layers.push_back(std::move(pm));
        }
      run.end_block();
      if (l == 0 && budget > 0) {
        // Every block has block 0's shapes, so the cheapest allocation is known now: a budget
        // below it fails here rather than after the whole measurement.
        uint64_t least = 0;
        for (const auto& p : m.layers) {
          uint64_t lo = p.c[0].bytes;
          for (const auto& c : p.c) lo = std::min(lo, c.bytes);
          least += lo;
        }
        least *= uint64_t(L);
        if (least > budget)
          fail("--budget",
               "{} bits per weight is below the cheapest allocation of these candidates: {:.4f} "
               "bits per weight (every projection at its smallest candidate)",
               b.bpw, bits(least, weights));
      }
    }
    run.finish();
    m.stages = run.times();
  }
  for (auto& [name, layer] : fp) model.set_linear(name, std::move(layer));
  m.seconds = seconds_since(t_start);
  if (b.objective == BudgetObjective::BlockKl || b.objective == BudgetObjective::LayerKl) {
    // Sensitivity = KL per unit of e^2 of the probe (most accurate) layers: the objective then
    // predicts exactly the KL measured for the probe allocation of each group.
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<ProbeGroup> blocks(static_cast<size_t>(L));
    std::vector<double> e2(size_t(L), 0.0);
    for (int64_t l = 0; l < L; ++l) blocks[size_t(l)].block = l;
    for (const auto& p : m.layers) {
      const double e = p.c[most_accurate(p)].output_err;
      blocks[size_t(p.block)].names.push_back(p.name);
      e2[size_t(p.block)] += e * e;
    }
    m.block_kl = probe_kl(model, windows, b.kl_windows, probe, blocks);
    for (int64_t l = 0; l < L; ++l)
      m.block_sensitivity.push_back(e2[size_t(l)] > 0 ? m.block_kl[size_t(l)] / e2[size_t(l)] : 0.0);
    if (b.objective == BudgetObjective::LayerKl) {
      std::vector<ProbeGroup> single;
      for (const auto& p : m.layers) single.push_back({p.block, {p.name}});
      m.layer_kl = probe_kl(model, windows, b.kl_windows, probe, single);
      for (size_t i = 0; i < m.layers.size(); ++i) {
        const double e = m.layers[i].c[most_accurate(m.layers[i])].output_err;
        m.layer_sensitivity.push_back(e > 0 ? m.layer_kl[i] / (e * e) : 0.0);
      }
    }
    m.sensitivity_seconds = seconds_since(t0);
  }
  return m;
}

Allocation allocate_budget(const Measurements& m, const BudgetOptions& b) {
  check_budget_bpw(b.bpw);
  if (m.layers.empty()) fail("--budget", "nothing measured");
  const auto t0 = std::chrono::steady_clock::now();
  Allocation a;
  for (const auto& p : m.layers) a.weights += p.in * p.out;
  a.budget_bytes = bytes_for_budget(b.bpw, a.weights);
  int64_t blocks = 0;
  for (const auto& p : m.layers) blocks = std::max(blocks, p.block + 1);
  if (b.objective == BudgetObjective::BlockKl && int64_t(m.block_sensitivity.size()) != blocks)
    fail("--objective", "block-kl needs per-block sensitivities, which this measurement lacks "
         "(measure again with --objective block-kl or layer-kl)");
  if (b.objective == BudgetObjective::LayerKl && m.layer_sensitivity.size() != m.layers.size())
    fail("--objective", "layer-kl needs per-layer sensitivities, which this measurement lacks "
         "(measure again with --objective layer-kl)");
  std::vector<std::vector<BudgetOption>> items;
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const ProjectionMeasure& p = m.layers[i];
    const double s = b.objective == BudgetObjective::BlockKl ? m.block_sensitivity[size_t(p.block)]
                     : b.objective == BudgetObjective::LayerKl ? m.layer_sensitivity[i]
                                                                : 1.0;
    std::vector<BudgetOption> opts;
    for (const auto& c : p.c) opts.push_back({c.bytes, objective_cost(b.objective, c.output_err, s)});
    items.push_back(std::move(opts));
  }
  const uint64_t least = min_budget_bytes(items);
  if (least > a.budget_bytes)
    fail("--budget",
         "{} bits per weight is below the cheapest allocation of these candidates: {:.4f} bits "
         "per weight (every projection at its smallest candidate)",
         b.bpw, bits(least, a.weights));
  a.solution = solve_budget(items, a.budget_bytes);
  a.pick = a.solution.pick;
  // The replayable form: the most common pick as the default recipe (the first candidate of
  // equals), an exact-name override for every other layer.
  std::vector<int> count(m.candidates.size(), 0);
  for (int k : a.pick) ++count[size_t(k)];
  const size_t common = size_t(std::max_element(count.begin(), count.end()) - count.begin());
  a.recipe = parse_recipe(m.candidates[common], "--candidates");
  for (size_t i = 0; i < m.layers.size(); ++i) {
    if (size_t(a.pick[i]) == common) continue;
    const std::string arg = exact_pattern(m.layers[i].name) + "=" + m.candidates[size_t(a.pick[i])];
    a.overrides.push_back(parse_layer_recipe(arg));
    a.layer_recipe_args.push_back(arg);
  }
  a.seconds = seconds_since(t0);
  return a;
}

BudgetRun quantize_to_budget(Model& model, const std::vector<std::vector<int32_t>>& windows,
                             const QuantizeOptions& o, const BudgetOptions& b,
                             const Measurements* reuse) {
  check_budget_bpw(b.bpw);
  const auto t0 = std::chrono::steady_clock::now();
  BudgetRun r;
  if (reuse) {
    std::vector<std::string> want;
    for (const Recipe& c : b.candidates) want.push_back(c.str());
    if (reuse->candidates != want)
      fail("--measurements", "measured for other candidates ({} of them; this run has {})",
           reuse->candidates.size(), want.size());
    if (reuse->feed != b.feed)
      fail("--measurements", "measured with --measure-feed {}, this run asks {}",
           measure_feed_name(reuse->feed), measure_feed_name(b.feed));
    size_t i = 0;
    for (int64_t l = 0; l < model.n_layers(); ++l)
      for (Site s : kSites)
        for (const auto& p : site_projections(s)) {
          const std::string name = Model::linear_name(l, p);
          if (i >= reuse->layers.size() || reuse->layers[i].name != name ||
              reuse->layers[i].in != model.linear(name).in_features() ||
              reuse->layers[i].out != model.linear(name).out_features())
            fail("--measurements", "measured on another model (no {} of this shape at row {})",
                 name, i);
          ++i;
        }
    if (i != reuse->layers.size())
      fail("--measurements", "measured on another model ({} layers, this one has {})",
           reuse->layers.size(), i);
    r.measured = *reuse;
  } else {
    r.measured = measure_candidates(model, windows, o, b);
  }
  r.alloc = allocate_budget(r.measured, b);
  QuantizeOptions fo = o;
  fo.recipe = r.alloc.recipe;
  fo.overrides = r.alloc.overrides;
  // Resumable block records name the job by its recipes, which a budget run only knows now.
  fo.checkpoints = nullptr;
  r.report = quantize_model(model, windows, fo);
  // Every layer must have written exactly the bytes the solver counted: the budget is a promise
  // about the file, not about the measurement.
  for (size_t i = 0; i < r.measured.layers.size(); ++i) {
    const ProjectionMeasure& p = r.measured.layers[i];
    const size_t k = size_t(r.alloc.pick[i]);
    const uint64_t disk = projection_disk_bytes(model.linear(p.name), p.name);
    if (disk != p.c[k].bytes)
      fail("--budget",
           "{}: '{}' wrote {} bytes but measured {}: its size depends on the data (give it a "
           "fixed rank)",
           p.name, r.measured.candidates[k], disk, p.c[k].bytes);
    r.disk_bytes += disk;
  }
  if (r.disk_bytes > r.alloc.budget_bytes)
    fail("--budget", "internal error: {} projection bytes exceed the budget's {}", r.disk_bytes,
         r.alloc.budget_bytes);
  r.bpw = b.bpw;
  r.objective = b.objective;
  r.seconds = seconds_since(t0);
  return r;
}

nlohmann::json BudgetRun::to_json() const {
  nlohmann::json j;
  j["bpw"] = bpw;
  j["budget_bytes"] = alloc.budget_bytes;
  j["weights"] = alloc.weights;
  j["projection_bytes"] = disk_bytes;
  j["projection_bpw"] = bits(disk_bytes, alloc.weights);
  j["objective"] = std::string(budget_objective_name(objective));
  j["candidates"] = measured.candidates;
  j["solver"] = {{"how", alloc.solution.how},
                 {"exact", alloc.solution.exact},
                 {"cost", alloc.solution.cost},
                 {"lower_bound", alloc.solution.lower_bound},
                 {"seconds", alloc.seconds}};
  j["recipe"] = alloc.recipe.str();
  j["layer_recipes"] = alloc.layer_recipe_args;
  std::map<std::string, const LayerReport*> final_rows;
  for (const auto& l : report.layers) final_rows[l.name] = &l;
  j["layers"] = nlohmann::json::array();
  for (size_t i = 0; i < measured.layers.size(); ++i) {
    const ProjectionMeasure& p = measured.layers[i];
    const size_t k = size_t(alloc.pick[i]);
    nlohmann::json e = {{"name", p.name},
                        {"recipe", measured.candidates[k]},
                        {"candidate", k},
                        {"bytes", p.c[k].bytes},
                        {"bpw", bits(p.c[k].bytes, p.in * p.out)},
                        {"predicted_output_err", p.c[k].output_err}};
    auto it = final_rows.find(p.name);
    if (it != final_rows.end()) e["output_err"] = it->second->output_err;
    j["layers"].push_back(e);
  }
  j["seconds"] = {{"measure", measured.seconds},
                  {"sensitivity", measured.sensitivity_seconds},
                  {"solve", alloc.seconds},
                  {"final", report.seconds},
                  {"total", seconds}};
  j["measurement"] = measured.to_json();
  return j;
}

}  // namespace lrq
