// The per-layer report plot: bars must be proportional to the values they show, panels appear
// only when there is data for them, and names are escaped.
#include <gtest/gtest.h>

#include <regex>
#include <string>
#include <vector>

#include "quant/report_plot.h"

namespace lrq {
namespace {

struct Bar {
  int panel;
  double value, height;
};

std::vector<Bar> bars(const std::string& svg) {
  std::vector<Bar> out;
  const std::regex re(
      R"re(<rect class="bar" data-panel="(\d+)" data-value="([^"]+)" x="[^"]+" y="[^"]+" width="[^"]+" height="([^"]+)")re");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back({std::stoi((*it)[1]), std::stod((*it)[2]), std::stod((*it)[3])});
  return out;
}

nlohmann::json layer(const std::string& name, double err, double bpw) {
  return {{"name", name}, {"output_err", err}, {"bpw", bpw}};
}

TEST(ReportPlot, BarsAreProportionalToValues) {
  nlohmann::json rep;
  rep["layers"] = nlohmann::json::array();
  auto a = layer("model.layers.0.self_attn.q_proj", 0.02, 3.25);
  a["rank"] = 4;
  auto b = layer("model.layers.0.mlp.down_proj", 0.05, 3.5);
  b["rank"] = 2;
  auto c = layer("model.layers.1.mlp.up_proj", 0.01, 3.25);  // no rank: no bar in that panel
  rep["layers"] = {a, b, c};
  const auto bs = bars(report_svg(rep, "t"));
  ASSERT_EQ(bs.size(), 2u + 3u + 3u);
  std::vector<Bar> rank, err;
  for (const auto& x : bs) {
    if (x.panel == 0) rank.push_back(x);
    if (x.panel == 1) err.push_back(x);
  }
  ASSERT_EQ(rank.size(), 2u);
  EXPECT_NEAR(rank[0].height / rank[1].height, 2.0, 1e-3);  // ranks 4 and 2
  ASSERT_EQ(err.size(), 3u);
  EXPECT_NEAR(err[1].height / err[0].height, 2.5, 1e-3);  // errors 0.05 and 0.02
  EXPECT_NEAR(err[2].value, 0.01, 1e-9);
}

TEST(ReportPlot, NoRankPanelWithoutRanksAndEscapedNames) {
  nlohmann::json rep;
  rep["layers"] = {layer("a<b>&\"c", 0.1, 4.0)};
  const std::string svg = report_svg(rep, "x & y");
  const auto bs = bars(svg);
  ASSERT_EQ(bs.size(), 2u);  // error and bpw panels only
  EXPECT_EQ(bs[0].panel, 0);
  EXPECT_EQ(svg.find("a<b>"), std::string::npos);
  EXPECT_NE(svg.find("a&lt;b&gt;&amp;&quot;c"), std::string::npos);
  EXPECT_NE(svg.find("x &amp; y"), std::string::npos);
}

TEST(ReportPlot, SvgPathBesideTheReport) {
  EXPECT_EQ(report_svg_path("out/rep.json"), "out/rep.svg");
  EXPECT_EQ(report_svg_path("out/rep"), "out/rep.svg");
  EXPECT_EQ(report_svg_path(".json"), ".json.svg");
}

}  // namespace
}  // namespace lrq
