// A small per-layer plot of a quantization report: the chosen rank (when a method picks one)
// and the relative output error of every projection, as a self-contained SVG written beside
// the JSON report. SVG because it needs no library and opens in any browser.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace lrq {

/// The SVG document for a report as produced by QuantizeReport::to_json() (reads each layer's
/// name, output_err, bpw and, where present, rank or lr_rank). Panels with no data are omitted.
std::string report_svg(const nlohmann::json& report, const std::string& title);

/// Where the plot of the report at `report_path` goes: its .json suffix replaced by .svg
/// (or .svg appended).
std::string report_svg_path(const std::string& report_path);

}  // namespace lrq
