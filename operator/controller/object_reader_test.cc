// LabelSelector of the informer-cache reader (object_reader.h). The readers themselves run against
// the test API server in reconciler_test.cc (ReadsFromInformerCachesAndNeverWritesOnAStaleRead).
#include "operator/controller/object_reader.h"

#include <gtest/gtest.h>

namespace kvmesh::controller {
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

TEST(GraphIndexTest, NamespaceAndGraphLabel) {
  json pod = {{"metadata", {{"name", "p"}, {"namespace", "ns1"}, {"labels", {{"kvmesh.dev/graph", "g"}}}}}};
  EXPECT_EQ(GraphIndexValues(pod), std::vector<std::string>{"ns1/g"});
  json bare = {{"metadata", {{"name", "p"}, {"namespace", "ns1"}}}};
  EXPECT_TRUE(GraphIndexValues(bare).empty());
}

}  // namespace
}  // namespace kvmesh::controller
