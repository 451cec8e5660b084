#include "cli/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string_view>

namespace kvmesh::bench {
namespace {

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f", v);
  return buf;
}

std::string TickLabel(double v) {
  char buf[32];
  const double a = std::fabs(v);
  if (a == 0) return "0";
  if (a >= 1e6 || a < 1e-3) {
    std::snprintf(buf, sizeof(buf), "%.3g", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.6g", v);
  }
  return buf;
}

}  // namespace

std::string XmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        // Control characters other than tab/newline are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') {
          out += ' ';
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::vector<double> NiceTicks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0, 1};
  if (hi <= lo) {
    const double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  target = std::max(target, 2);
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  const double first = std::floor(lo / step) * step;
  std::vector<double> ticks;
  for (int i = 0; i < 1000; ++i) {
    double t = first + i * step;
    if (std::fabs(t) < step * 1e-9) t = 0;
    ticks.push_back(t);
    if (t >= hi - step * 1e-9) break;
  }
  return ticks;
}

std::string RenderCdfSvg(const CdfPlot& plot) {
  const double w = std::max(plot.width, 200), h = std::max(plot.height, 150);
  const double left = 70, right = 20, top = 40, bottom = 60;
  const double pw = w - left - right, ph = h - top - bottom;

  // Clean, sorted samples per series.
  std::vector<std::vector<double>> data;
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& s : plot.series) {
    std::vector<double> v;
    for (double x : s.values) {
      if (!std::isfinite(x) || (plot.log_x && x <= 0)) continue;
      v.push_back(plot.log_x ? std::log10(x) : x);
    }
    std::sort(v.begin(), v.end());
    if (!v.empty()) {
      lo = std::min(lo, v.front());
      hi = std::max(hi, v.back());
    }
    data.push_back(std::move(v));
  }
  if (!std::isfinite(lo)) {
    lo = 0;
    hi = 1;
  }
  if (!plot.log_x) lo = std::min(lo, 0.0);
  std::vector<double> xt;
  if (plot.log_x) {
    for (double e = std::floor(lo); e <= std::ceil(hi) + 1e-9; e += 1) xt.push_back(e);
    if (xt.size() < 2) xt.push_back(xt.back() + 1);
  } else {
    xt = NiceTicks(lo, hi, 8);
  }
  const double x0 = xt.front(), x1 = xt.back();
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + (1 - y) * ph; };

  std::string s;
  s += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + Num(w) + "\" height=\"" + Num(h) +
       "\" viewBox=\"0 0 " + Num(w) + " " + Num(h) +
       "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s +=
      "<rect x=\"0\" y=\"0\" width=\"" + Num(w) + "\" height=\"" + Num(h) + "\" fill=\"white\"/>\n";
  s += "<text x=\"" + Num(w / 2) + "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" +
       XmlEscape(plot.title) + "</text>\n";
  // Grid and ticks.
  s += "<g stroke=\"#dddddd\" stroke-width=\"1\">\n";
  for (double t : xt) {
    s += "<line x1=\"" + Num(px(t)) + "\" y1=\"" + Num(top) + "\" x2=\"" + Num(px(t)) + "\" y2=\"" +
         Num(top + ph) + "\"/>\n";
  }
  for (int i = 0; i <= 10; ++i) {
    const double y = i / 10.0;
    s += "<line x1=\"" + Num(left) + "\" y1=\"" + Num(py(y)) + "\" x2=\"" + Num(left + pw) +
         "\" y2=\"" + Num(py(y)) + "\"/>\n";
  }
  s += "</g>\n<g text-anchor=\"middle\">\n";
  for (double t : xt) {
    const std::string label = plot.log_x ? TickLabel(std::pow(10.0, t)) : TickLabel(t);
    s += "<text x=\"" + Num(px(t)) + "\" y=\"" + Num(top + ph + 18) + "\">" + XmlEscape(label) +
         "</text>\n";
  }
  s += "</g>\n<g text-anchor=\"end\">\n";
  for (int i = 0; i <= 10; i += 2) {
    const double y = i / 10.0;
    s += "<text x=\"" + Num(left - 6) + "\" y=\"" + Num(py(y) + 4) + "\">" + TickLabel(y) +
         "</text>\n";
  }
  s += "</g>\n";
  // Axes and labels.
  s += "<rect x=\"" + Num(left) + "\" y=\"" + Num(top) + "\" width=\"" + Num(pw) + "\" height=\"" +
       Num(ph) + "\" fill=\"none\" stroke=\"black\"/>\n";
  s += "<text x=\"" + Num(left + pw / 2) + "\" y=\"" + Num(h - 18) + "\" text-anchor=\"middle\">" +
       XmlEscape(plot.x_label + (plot.log_x ? " (log scale)" : "")) + "</text>\n";
  s += "<text x=\"18\" y=\"" + Num(top + ph / 2) +
       "\" text-anchor=\"middle\" transform=\"rotate(-90 18 " + Num(top + ph / 2) + ")\">" +
       XmlEscape(plot.y_label) + "</text>\n";
  // CDF step lines.
  for (size_t k = 0; k < data.size(); ++k) {
    const auto& v = data[k];
    if (v.empty()) continue;
    std::string pts = Num(px(v.front())) + "," + Num(py(0));
    const double n = static_cast<double>(v.size());
    // Thin out very large series to ~2000 steps; the curve is unchanged at screen resolution.
    const size_t stride = std::max<size_t>(1, v.size() / 2000);
    for (size_t i = 0; i < v.size(); i += stride) {
      const size_t j = std::min(v.size() - 1, i + stride - 1);
      pts += " " + Num(px(v[i])) + "," + Num(py(static_cast<double>(i) / n));
      pts += " " + Num(px(v[i])) + "," + Num(py(static_cast<double>(j + 1) / n));
    }
    s += "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"" + XmlEscape(plot.series[k].color) +
         "\" points=\"" + pts + "\"/>\n";
  }
  // Legend (bottom right, inside the plot).
  double ly = top + ph - 12 - 18.0 * static_cast<double>(plot.series.size() - 1);
  for (size_t k = 0; k < plot.series.size(); ++k, ly += 18) {
    const double lx = left + pw - 230;
    std::string label = plot.series[k].name;
    if (data[k].empty()) label += " (no data)";
    s += "<line x1=\"" + Num(lx) + "\" y1=\"" + Num(ly - 4) + "\" x2=\"" + Num(lx + 24) +
         "\" y2=\"" + Num(ly - 4) + "\" stroke-width=\"3\" stroke=\"" +
         XmlEscape(plot.series[k].color) + "\"/>\n";
    s += "<text x=\"" + Num(lx + 30) + "\" y=\"" + Num(ly) + "\">" + XmlEscape(label) + "</text>\n";
  }
  s += "</svg>\n";
  return s;
}

}  // namespace kvmesh::bench
