#include "sim/cli_util.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kvmesh::sim {
namespace {

TEST(CliUtilTest, SplitListKeepsEmptyPartsNonEmptyDropsThem) {
  EXPECT_EQ(SplitList("a::b", ':'), (std::vector<std::string_view>{"a", "", "b"}));
  EXPECT_EQ(SplitList("", ':'), (std::vector<std::string_view>{""}));
  EXPECT_EQ(SplitList("2:1", ':'), (std::vector<std::string_view>{"2", "1"}));
  EXPECT_EQ(NonEmpty({"random", "", "kv:dynamo", ""}), (std::vector<std::string>{"random", "kv:dynamo"}));
  EXPECT_TRUE(NonEmpty({""}).empty());
}

TEST(CliUtilTest, NumbersMustFillTheTextAndBeFinite) {
  auto d = ParseFlagNumber<double>("--rate", "1e3");
  ASSERT_TRUE(d.ok());
  EXPECT_DOUBLE_EQ(*d, 1000);
  for (const char* bad : {"", "x", "1.5x", " 2", "inf", "nan"}) {
    const auto s = ParseFlagNumber<double>("--rate", bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().message(), "--rate: '" + std::string(bad) + "' is not a number");
  }
  auto u = ParseFlagNumber<uint32_t>("--gpus", "16");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(*u, 16u);
  EXPECT_EQ(ParseFlagNumber<uint32_t>("--gpus", "-1").status().message(),
            "--gpus: '-1' is not a non-negative integer");
  EXPECT_FALSE(ParseFlagNumber<uint32_t>("--gpus", "99999999999").ok());  // out of range
}

TEST(CliUtilTest, ListsParseEveryItemOrFail) {
  auto v = ParseFlagNumbers<double>("--rates", {"0.5", "1", "2"});
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, (std::vector<double>{0.5, 1, 2}));
  EXPECT_EQ(ParseFlagNumbers<double>("--rates", {"1", "", "2"}).status().message(),
            "--rates: '' is not a number");
  auto tp = ParseFlagNumbers<uint32_t>("--tp", {"2", "4"});
  ASSERT_TRUE(tp.ok());
  EXPECT_EQ(*tp, (std::vector<uint32_t>{2, 4}));
  EXPECT_TRUE(ParseFlagNumbers<uint32_t>("--tp", {}).value().empty());
}

}  // namespace
}  // namespace kvmesh::sim
