#include "cli/svg_plot.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace kvmesh::bench {
namespace {

// A tiny XML well-formedness check: tags balance, attributes are quoted, entities are known.
// Returns "" when well-formed, else what is wrong.
std::string CheckXml(const std::string& s) {
  std::vector<std::string> stack;
  size_t i = 0;
  if (s.rfind("<?xml", 0) == 0) i = s.find("?>") + 2;
  size_t roots = 0;
  while (i < s.size()) {
    if (s[i] == '&') {
      const size_t semi = s.find(';', i);
      if (semi == std::string::npos) return "unterminated entity";
      const std::string ent = s.substr(i, semi - i + 1);
      if (ent != "&amp;" && ent != "&lt;" && ent != "&gt;" && ent != "&quot;" && ent != "&apos;") {
        return "unknown entity " + ent;
      }
      i = semi + 1;
      continue;
    }
    if (s[i] == '>') return "stray '>' in text";
    if (s[i] != '<') {
      ++i;
      continue;
    }
    const size_t end = s.find('>', i);
    if (end == std::string::npos) return "unterminated tag";
    std::string tag = s.substr(i + 1, end - i - 1);
    i = end + 1;
    if (!tag.empty() && tag[0] == '/') {
      if (stack.empty() || stack.back() != tag.substr(1))
        return "mismatched </" + tag.substr(1) + ">";
      stack.pop_back();
      continue;
    }
    const bool self_closing = !tag.empty() && tag.back() == '/';
    if (self_closing) tag.pop_back();
    const std::string name = tag.substr(0, tag.find_first_of(" \n\t"));
    if (name.empty()) return "empty tag name";
    // Attributes: name="value" with no '<' or '"' inside values.
    size_t p = name.size();
    while (p < tag.size()) {
      while (p < tag.size() && std::isspace(static_cast<unsigned char>(tag[p]))) ++p;
      if (p >= tag.size()) break;
      const size_t eq = tag.find('=', p);
      if (eq == std::string::npos || eq + 1 >= tag.size() || tag[eq + 1] != '"') {
        return "unquoted attribute in <" + name + ">";
      }
      const size_t close = tag.find('"', eq + 2);
      if (close == std::string::npos) return "unterminated attribute in <" + name + ">";
      if (tag.substr(eq + 2, close - eq - 2).find('<') != std::string::npos)
        return "'<' in attribute";
      p = close + 1;
    }
    if (stack.empty()) ++roots;
    if (!self_closing) stack.push_back(name);
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  if (roots != 1) return "expected one root element, got " + std::to_string(roots);
  return "";
}

size_t Count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

TEST(SvgPlot, CheckerRejectsBrokenXml) {
  EXPECT_EQ(CheckXml("<a><b x=\"1\"/></a>"), "");
  EXPECT_NE(CheckXml("<a><b></a>"), "");
  EXPECT_NE(CheckXml("<a>x & y</a>"), "");
  EXPECT_NE(CheckXml("<a x=1></a>"), "");
  EXPECT_NE(CheckXml("<a></a><b></b>"), "");
}

TEST(SvgPlot, CdfIsWellFormedWithAxesTicksLabelsAndOneLinePerSeries) {
  CdfPlot p;
  p.title = "latency <p99> & \"friends\"";
  p.x_label = "latency (ms)";
  std::vector<double> a, b;
  for (int i = 1; i <= 500; ++i) {
    a.push_back(i * 0.7);
    b.push_back(i * 1.3 + 10);
  }
  a.push_back(NAN);  // dropped
  p.series = {{"TTFT", "#1f77b4", a}, {"E2E", "#d62728", b}, {"ITL", "#2ca02c", {}}};
  const std::string svg = RenderCdfSvg(p);
  EXPECT_EQ(CheckXml(svg), "") << svg.substr(0, 400);
  EXPECT_NE(svg.find("xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  EXPECT_NE(svg.find("latency &lt;p99&gt; &amp; &quot;friends&quot;"), std::string::npos);
  EXPECT_NE(svg.find(">latency (ms)<"), std::string::npos);
  EXPECT_NE(svg.find(">fraction of requests<"), std::string::npos);
  EXPECT_EQ(Count(svg, "<polyline"), 2u);                   // the empty series draws nothing...
  EXPECT_NE(svg.find("ITL (no data)"), std::string::npos);  // ...but is in the legend
  EXPECT_NE(svg.find(">TTFT<"), std::string::npos);
  // The x axis covers the data: ticks 0 .. >= 660, y ticks 0 .. 1.
  EXPECT_NE(svg.find(">0<"), std::string::npos);
  EXPECT_NE(svg.find(">0.6<"), std::string::npos);
  EXPECT_NE(svg.find(">1<"), std::string::npos);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
}

TEST(SvgPlot, EmptyAndDegenerateInputsStillRender) {
  CdfPlot p;
  EXPECT_EQ(CheckXml(RenderCdfSvg(p)), "");
  p.series = {{"one", "red", {5, 5, 5}}};
  const std::string svg = RenderCdfSvg(p);
  EXPECT_EQ(CheckXml(svg), "");
  EXPECT_EQ(Count(svg, "<polyline"), 1u);
  p.log_x = true;
  p.series = {{"log", "blue", {0.5, 3, 40, 900, -1, 0}}};
  const std::string lg = RenderCdfSvg(p);
  EXPECT_EQ(CheckXml(lg), "");
  EXPECT_NE(lg.find(">1000<"), std::string::npos);
  EXPECT_NE(lg.find(">0.1<"), std::string::npos);
}

TEST(SvgPlot, NiceTicksCoverTheRangeWithRoundSteps) {
  auto t = NiceTicks(0, 97, 8);
  ASSERT_GE(t.size(), 3u);
  EXPECT_LE(t.front(), 0);
  EXPECT_GE(t.back(), 97);
  const double step = t[1] - t[0];
  EXPECT_DOUBLE_EQ(step, 20);  // 97/8 = 12.1 -> the next nice step
  for (size_t i = 1; i < t.size(); ++i) EXPECT_NEAR(t[i] - t[i - 1], step, 1e-9);
  t = NiceTicks(3.2, 3.9, 5);
  EXPECT_LE(t.front(), 3.2);
  EXPECT_GE(t.back(), 3.9);
  EXPECT_LE(t.size(), 10u);
  t = NiceTicks(5, 5, 5);  // degenerate range
  EXPECT_GE(t.size(), 2u);
  EXPECT_LE(t.front(), 5);
  EXPECT_GE(t.back(), 5);
}

TEST(SvgPlot, EscapesXmlSpecials) {
  EXPECT_EQ(XmlEscape("a<b>&\"'\x01"), "a&lt;b&gt;&amp;&quot;&apos; ");
}

}  // namespace
}  // namespace kvmesh::bench
