#include "quant/report_plot.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <fmt/format.h>

namespace lrq {

namespace {

// Projection kind from a layer name ("model.layers.3.self_attn.q_proj" -> "q_proj"): bars are
// coloured by kind so a pattern across depth (say, down_proj always needing the most rank)
// is visible at a glance.
std::string kind_of(const std::string& name) {
  const auto dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

const char* colour_of(const std::string& kind) {
  static const std::vector<std::pair<std::string, const char*>> c = {
      {"q_proj", "#4e79a7"}, {"k_proj", "#76b7b2"}, {"v_proj", "#59a14f"}, {"o_proj", "#edc948"},
      {"gate_proj", "#f28e2b"}, {"up_proj", "#e15759"}, {"down_proj", "#b07aa1"}};
  for (const auto& [k, v] : c)
    if (k == kind) return v;
  return "#9c9c9c";
}

std::string esc(const std::string& s) {
  std::string o;
  for (char ch : s) {
    if (ch == '<') o += "&lt;";
    else if (ch == '>') o += "&gt;";
    else if (ch == '&') o += "&amp;";
    else if (ch == '"') o += "&quot;";
    else o += ch;
  }
  return o;
}

struct Panel {
  std::string label;
  std::vector<double> v;  // one per layer; NaN = no value
};

constexpr double kLeft = 70, kRight = 20, kTop = 40, kPanelH = 150, kGap = 45, kBarW = 6;

}  // namespace

std::string report_svg_path(const std::string& report_path) {
  const std::string suf = ".json";
  if (report_path.size() > suf.size() &&
      report_path.compare(report_path.size() - suf.size(), suf.size(), suf) == 0)
    return report_path.substr(0, report_path.size() - suf.size()) + ".svg";
  return report_path + ".svg";
}

std::string report_svg(const nlohmann::json& report, const std::string& title) {
  const auto& layers = report.at("layers");
  const size_t n = layers.size();
  std::vector<std::string> kinds;
  Panel rank{"rank", {}}, err{"relative output error ||(W - Wq) X|| / ||W X||", {}},
      bpw{"bits per weight", {}};
  bool any_rank = false;
  for (const auto& l : layers) {
    kinds.push_back(kind_of(l.value("name", std::string())));
    double r = NAN;
    if (l.contains("rank") && l["rank"].is_number()) r = l["rank"].get<double>();
    else if (l.contains("lr_rank") && l["lr_rank"].is_number()) r = l["lr_rank"].get<double>();
    any_rank |= !std::isnan(r);
    rank.v.push_back(r);
    err.v.push_back(l.value("output_err", NAN));
    bpw.v.push_back(l.value("bpw", NAN));
  }
  std::vector<const Panel*> panels;
  if (any_rank) panels.push_back(&rank);
  panels.push_back(&err);
  panels.push_back(&bpw);

  const double W = kLeft + kRight + std::max<double>(200, double(n) * (kBarW + 1));
  const double H = kTop + double(panels.size()) * (kPanelH + kGap) + 30;
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0f}\" height=\"{:.0f}\" "
      "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n<text x=\"{}\" y=\"20\" font-size=\"14\">{}</text>\n",
      W, H, kLeft, esc(title));
  for (size_t p = 0; p < panels.size(); ++p) {
    const Panel& pn = *panels[p];
    const double y0 = kTop + double(p) * (kPanelH + kGap);  // panel top
    double vmax = 0;
    for (double v : pn.v)
      if (std::isfinite(v)) vmax = std::max(vmax, v);
    if (vmax <= 0) vmax = 1;
    s += fmt::format("<text x=\"{}\" y=\"{:.0f}\">{} (max {:.4g})</text>\n", kLeft, y0 + 12,
                     esc(pn.label), vmax);
    const double base = y0 + 20 + kPanelH - 20;  // axis line
    const double hmax = kPanelH - 30;
    s += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{:.0f}\" y2=\"{:.1f}\" stroke=\"black\"/>\n",
                     kLeft, base, W - kRight, base);
    s += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">0</text>\n", kLeft - 4, base);
    s += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:.4g}</text>\n", kLeft - 4,
                     base - hmax + 4, vmax);
    for (size_t i = 0; i < n; ++i) {
      const double v = pn.v[i];
      if (!std::isfinite(v)) continue;
      const double h = hmax * v / vmax;
      s += fmt::format(
          "<rect class=\"bar\" data-panel=\"{}\" data-value=\"{:.6g}\" x=\"{:.1f}\" y=\"{:.2f}\" "
          "width=\"{}\" height=\"{:.2f}\" fill=\"{}\"><title>{}: {:.4g}</title></rect>\n",
          p, v, kLeft + double(i) * (kBarW + 1), base - h, kBarW, h, colour_of(kinds[i]),
          esc(layers[i].value("name", std::string())), v);
    }
  }
  // Legend: one swatch per projection kind present, in first-seen order.
  std::vector<std::string> seen;
  for (const auto& k : kinds)
    if (std::find(seen.begin(), seen.end(), k) == seen.end()) seen.push_back(k);
  double x = kLeft;
  const double ly = H - 14;
  for (const auto& k : seen) {
    s += fmt::format("<rect x=\"{:.0f}\" y=\"{:.0f}\" width=\"10\" height=\"10\" fill=\"{}\"/>"
                     "<text x=\"{:.0f}\" y=\"{:.0f}\">{}</text>\n",
                     x, ly - 9, colour_of(k), x + 13, ly, esc(k));
    x += 20 + 7.0 * double(k.size());
  }
  s += "</svg>\n";
  return s;
}

}  // namespace lrq
