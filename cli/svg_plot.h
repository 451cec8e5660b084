// Self-contained SVG charts for `kvmesh bench`: empirical CDFs of latency samples (TTFT, E2E, ...)
// on one set of axes, with ticks, grid, axis labels, a title and a legend. No scripts, no external
// fonts or styles: the file renders in any browser and parses as plain XML.
//
// Invariants: the output is well-formed XML (text is escaped); NaN/inf samples are dropped; an
// empty series is listed in the legend as "(no data)" and drawn as nothing.
#pragma once

#include <string>
#include <vector>

namespace kvmesh::bench {

struct PlotSeries {
  std::string name;            // legend text
  std::string color;           // SVG color, e.g. "#1f77b4"
  std::vector<double> values;  // samples (any order)
};

struct CdfPlot {
  std::string title;
  std::string x_label;  // e.g. "latency (ms)"
  std::string y_label = "fraction of requests";
  int width = 800;
  int height = 480;
  bool log_x = false;  // log10 x axis (all samples must be > 0; others are dropped)
  std::vector<PlotSeries> series;
};

// Renders the chart as an SVG document.
std::string RenderCdfSvg(const CdfPlot& plot);

// "Nice" tick positions (1, 2, 2.5, 5 x 10^k steps) covering [lo, hi], about `target` of them;
// the first tick is <= lo and the last >= hi. hi <= lo gives ticks around lo.
std::vector<double> NiceTicks(double lo, double hi, int target);

// Escapes &, <, >, " and ' for XML text and attributes.
std::string XmlEscape(const std::string& text);

}  // namespace kvmesh::bench
