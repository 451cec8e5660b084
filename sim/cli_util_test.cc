#include "sim/cli_util.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kvmesh::sim {
namespace {

TEST(CliUtilTest, SplitListKeepsEmptyPartsSplitNamesDropsThem) {
  EXPECT_EQ(SplitList("a,,b"), (std::vector<std::string_view>{"a", "", "b"}));
  EXPECT_EQ(SplitList(""), (std::vector<std::string_view>{""}));
  EXPECT_EQ(SplitList("2:1", ':'), (std::vector<std::string_view>{"2", "1"}));
  EXPECT_EQ(SplitNames("random,,kv:dynamo,"), (std::vector<std::string>{"random", "kv:dynamo"}));
  EXPECT_TRUE(SplitNames("").empty());
}

TEST(CliUtilTest, NumbersMustFillTheTextAndBeFinite) {
  double d = -1;
  EXPECT_TRUE(ParseFlagNumber("--rate", "1e3", &d).ok());
  EXPECT_DOUBLE_EQ(d, 1000);
  for (const char* bad : {"", "x", "1.5x", " 2", "inf", "nan"}) {
    const Status s = ParseFlagNumber("--rate", bad, &d);
    EXPECT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.message(), "--rate: '" + std::string(bad) + "' is not a number");
  }
  EXPECT_DOUBLE_EQ(d, 1000);  // untouched on failure
  uint32_t u = 7;
  EXPECT_TRUE(ParseFlagNumber("--gpus", "16", &u).ok());
  EXPECT_EQ(u, 16u);
  const Status s = ParseFlagNumber("--gpus", "-1", &u);
  EXPECT_EQ(s.message(), "--gpus: '-1' is not a non-negative integer");
  EXPECT_FALSE(ParseFlagNumber("--gpus", "99999999999", &u).ok());  // out of range
  EXPECT_EQ(u, 16u);
}

TEST(CliUtilTest, ListsParseEveryPartOrNothing) {
  std::vector<double> v = {9};
  EXPECT_TRUE(ParseFlagList("--rates", "0.5,1,2", &v).ok());
  EXPECT_EQ(v, (std::vector<double>{0.5, 1, 2}));
  const Status s = ParseFlagList("--rates", "1,,2", &v);
  EXPECT_EQ(s.message(), "--rates: '' is not a number");
  EXPECT_EQ(v, (std::vector<double>{0.5, 1, 2}));  // unchanged
  std::vector<uint32_t> tp;
  EXPECT_TRUE(ParseFlagList("--tp", "2,4", &tp).ok());
  EXPECT_EQ(tp, (std::vector<uint32_t>{2, 4}));
}

}  // namespace
}  // namespace kvmesh::sim
