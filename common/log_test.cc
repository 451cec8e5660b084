#include "common/log.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace kvmesh {
namespace {

TEST(LogTest, ParseLevels) {
  EXPECT_EQ(*ParseLogLevel("DEBUG"), LogLevel::kDebug);
  EXPECT_EQ(*ParseLogLevel("warning"), LogLevel::kWarn);
  auto bad = ParseLogLevel("loud");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'loud'"), std::string::npos);
}

TEST(LogTest, LevelFiltering) {
  LogLevel old = GetLogLevel();
  SetLogLevel(LogLevel::kWarn);
  EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
  EXPECT_TRUE(LogEnabled(LogLevel::kError));
  SetLogLevel(old);
}

TEST(LogTest, TextFormatQuotesWhenNeeded) {
  std::string line = FormatLogRecord(LogFormat::kText, LogLevel::kInfo, "kv", "pool created",
                                     {{"blocks", 1024}, {"path", "/tmp/a b"}, {"ok", true}});
  EXPECT_NE(line.find(" INFO kv pool created blocks=1024 path=\"/tmp/a b\" ok=true\n"),
            std::string::npos)
      << line;
}

TEST(LogTest, JsonFormatIsValidJson) {
  std::string line = FormatLogRecord(LogFormat::kJson, LogLevel::kError, "http", "bad \"body\"\n",
                                     {{"status", 400}, {"ratio", 0.5}, {"who", "x\ty"}});
  auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["level"], "error");
  EXPECT_EQ(j["component"], "http");
  EXPECT_EQ(j["msg"], "bad \"body\"\n");
  EXPECT_EQ(j["status"], 400);
  EXPECT_DOUBLE_EQ(j["ratio"].get<double>(), 0.5);
  EXPECT_EQ(j["who"], "x\ty");
}

}  // namespace
}  // namespace kvmesh
