// LabelSelector (common/label_selector.h): the parser and matcher shared by the operator's
// informer-cache reader and the test API server.
#include "common/label_selector.h"

#include <gtest/gtest.h>

namespace kvmesh {
namespace {

using json = nlohmann::json;

TEST(LabelSelectorTest, MatchesEveryOperator) {
  const json labels = {{"kvmesh.dev/graph", "g1"}, {"app.kubernetes.io/component", "decode"}, {"tier", "a"}};
  auto match = [&](const std::string& text) {
    auto sel = LabelSelector::Parse(text);
    EXPECT_TRUE(sel.ok()) << text << ": " << sel.status().ToString();
    return sel.ok() && sel->Matches(labels);
  };
  EXPECT_TRUE(match(""));
  EXPECT_TRUE(match("kvmesh.dev/graph=g1"));
  EXPECT_TRUE(match("kvmesh.dev/graph==g1"));
  EXPECT_FALSE(match("kvmesh.dev/graph=g2"));
  EXPECT_TRUE(match("kvmesh.dev/graph!=g2"));
  EXPECT_FALSE(match("kvmesh.dev/graph!=g1"));
  EXPECT_TRUE(match("kvmesh.dev/graph=g1,app.kubernetes.io/component in (prefill,decode)"));
  EXPECT_FALSE(match("kvmesh.dev/graph=g1,app.kubernetes.io/component in (prefill, router)"));
  EXPECT_TRUE(match("app.kubernetes.io/component notin (router)"));
  EXPECT_FALSE(match("app.kubernetes.io/component notin (decode)"));
  EXPECT_TRUE(match("tier"));
  EXPECT_FALSE(match("!tier"));
  EXPECT_TRUE(match("!missing"));
  EXPECT_FALSE(match("missing"));
  EXPECT_TRUE(match("missing!=x"));  // absent satisfies != and notin (Kubernetes semantics)
  auto sel = LabelSelector::Parse("a=b");
  ASSERT_TRUE(sel.ok());
  EXPECT_FALSE(sel->Matches(json()));  // no labels at all
}

TEST(LabelSelectorTest, EqualityValueAndErrors) {
  auto sel = LabelSelector::Parse("kvmesh.dev/graph=g7, x in (y)");
  ASSERT_TRUE(sel.ok()) << sel.status().ToString();
  EXPECT_EQ(sel->EqualityValue("kvmesh.dev/graph"), "g7");
  EXPECT_EQ(sel->EqualityValue("x"), "y");
  EXPECT_EQ(sel->EqualityValue("z"), "");
  for (const char* bad : {"a=b,", "=b", "a in b", "a in (b", "a foo (b)", "a=b c", "a b"}) {
    auto s = LabelSelector::Parse(bad);
    EXPECT_FALSE(s.ok()) << bad;
    if (!s.ok()) {
      EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << bad;
    }
  }
}

TEST(LabelSelectorTest, FromObjectMatchLabelsAndExpressions) {
  const json labels = {{"app", "kvmesh"}, {"role", "decode"}};
  auto sel = LabelSelector::FromObject(json::parse(R"({
      "matchLabels": {"app": "kvmesh"},
      "matchExpressions": [{"key": "role", "operator": "In", "values": ["prefill", "decode"]},
                           {"key": "gone", "operator": "DoesNotExist"}]})"));
  ASSERT_TRUE(sel.ok()) << sel.status().ToString();
  EXPECT_TRUE(sel->Matches(labels));
  EXPECT_FALSE(sel->Matches(json{{"app", "kvmesh"}, {"role", "router"}}));
  EXPECT_FALSE(sel->Matches(json{{"app", "kvmesh"}, {"role", "decode"}, {"gone", "x"}}));
  EXPECT_EQ(sel->EqualityValue("app"), "kvmesh");

  auto everything = LabelSelector::FromObject(json());
  ASSERT_TRUE(everything.ok());
  EXPECT_TRUE(everything->empty());
  EXPECT_TRUE(everything->Matches(json()));

  auto bad_op = LabelSelector::FromObject(
      json::parse(R"({"matchExpressions": [{"key": "a", "operator": "Near"}]})"));
  ASSERT_FALSE(bad_op.ok());
  EXPECT_EQ(bad_op.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_op.status().message().find("Near"), std::string::npos);
  EXPECT_FALSE(LabelSelector::FromObject(
                   json::parse(R"({"matchExpressions": [{"key": "", "operator": "Exists"}]})"))
                   .ok());
}

}  // namespace
}  // namespace kvmesh
