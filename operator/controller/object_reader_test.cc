// GraphIndexValues of the informer-cache reader (object_reader.h; its label selector is tested in
// common/label_selector_test.cc). The readers themselves run against
// the test API server in reconciler_test.cc (ReadsFromInformerCachesAndNeverWritesOnAStaleRead).
#include "operator/controller/object_reader.h"

#include <gtest/gtest.h>

namespace kvmesh::controller {
namespace {

using json = nlohmann::json;

TEST(GraphIndexTest, NamespaceAndGraphLabel) {
  json pod = {{"metadata", {{"name", "p"}, {"namespace", "ns1"}, {"labels", {{"kvmesh.dev/graph", "g"}}}}}};
  EXPECT_EQ(GraphIndexValues(pod), std::vector<std::string>{"ns1/g"});
  json bare = {{"metadata", {{"name", "p"}, {"namespace", "ns1"}}}};
  EXPECT_TRUE(GraphIndexValues(bare).empty());
}

}  // namespace
}  // namespace kvmesh::controller
