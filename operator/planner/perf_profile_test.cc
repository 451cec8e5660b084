#include "operator/planner/perf_profile.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include <gtest/gtest.h>

namespace kvmesh::planner {
namespace {

// Two ISLs x three loads; two contexts x three concurrencies.
constexpr char kProfile[] = R"({
  "model": "ignored", "gpu": "H100",
  "prefill": [
    {"isl": 1000, "prefill_tokens_per_s": 10000, "ttft_s": 0.10},
    {"isl": 1000, "prefill_tokens_per_s": 20000, "ttft_s": 0.20},
    {"isl": 1000, "prefill_tokens_per_s": 30000, "ttft_s": 0.60},
    {"isl": 3000, "prefill_tokens_per_s": 8000,  "ttft_s": 0.40},
    {"isl": 3000, "prefill_tokens_per_s": 16000, "ttft_s": 0.60},
    {"isl": 3000, "prefill_tokens_per_s": 24000, "ttft_s": 1.40}
  ],
  "decode": [
    {"concurrency": 8,  "context": 1000, "itl_s": 0.010, "tokens_per_s": 800},
    {"concurrency": 32, "context": 1000, "itl_s": 0.020, "tokens_per_s": 1600},
    {"concurrency": 64, "context": 1000, "itl_s": 0.040, "tokens_per_s": 1600},
    {"concurrency": 8,  "context": 4000, "itl_s": 0.020, "tokens_per_s": 400},
    {"concurrency": 32, "context": 4000, "itl_s": 0.040, "tokens_per_s": 800},
    {"concurrency": 64, "context": 4000, "itl_s": 0.080, "tokens_per_s": 800}
  ]})";

TablePerfProfile Load() {
  auto p = TablePerfProfile::FromJson(kProfile);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return std::move(p).value();
}

TEST(TablePerfProfileTest, ExpectedTtftInterpolatesLoadThenIsl) {
  const TablePerfProfile p = Load();
  EXPECT_NEAR(p.ExpectedTtft(1000, 15000), 0.15, 1e-12);    // between loads
  EXPECT_NEAR(p.ExpectedTtft(1000, 5000), 0.10, 1e-12);     // below the lowest load: first point
  EXPECT_NEAR(p.ExpectedTtft(1000, 40000), 1.00, 1e-12);    // beyond: last segment extended
  EXPECT_NEAR(p.ExpectedTtft(3000, 12000), 0.50, 1e-12);
  // ISL 2000 is halfway: mean of the two curves at the same load.
  EXPECT_NEAR(p.ExpectedTtft(2000, 16000), 0.5 * (0.16 + 0.60), 1e-12);
  EXPECT_NEAR(p.ExpectedTtft(500, 20000), 0.20, 1e-12);     // below the ISL range: nearest curve
  EXPECT_NEAR(p.ExpectedTtft(9000, 16000), 0.60, 1e-12);
}

TEST(TablePerfProfileTest, MaxPrefillFindsTheLoadAtTheTarget) {
  const TablePerfProfile p = Load();
  PrefillCapacity c = p.MaxPrefill(1000, 0.4);  // on the 20k..30k segment: 0.2 + 0.4 * (x-20k)/10k
  EXPECT_TRUE(c.attainable);
  EXPECT_NEAR(c.tokens_per_s, 25000, 1);
  c = p.MaxPrefill(1000, 5.0);  // target looser than any measurement: capped at the measured range
  EXPECT_TRUE(c.attainable);
  EXPECT_NEAR(c.tokens_per_s, 30000, 1e-6);
  c = p.MaxPrefill(3000, 0.3);  // even the lightest measured load misses 300 ms
  EXPECT_FALSE(c.attainable);
  EXPECT_NEAR(c.tokens_per_s, 8000, 1e-6);
  // Between ISLs the capacity lies between the two curves' capacities at that target.
  const double mid = p.MaxPrefill(2000, 0.6).tokens_per_s;
  EXPECT_GT(mid, p.MaxPrefill(3000, 0.6).tokens_per_s - 1);
  EXPECT_LT(mid, p.MaxPrefill(1000, 0.6).tokens_per_s + 1);
}

TEST(TablePerfProfileTest, MaxDecodeFindsConcurrencyAndThroughputAtTheTarget) {
  const TablePerfProfile p = Load();
  DecodeCapacity c = p.MaxDecode(1000, 0.015);  // halfway between 8 and 32
  EXPECT_TRUE(c.attainable);
  EXPECT_NEAR(c.concurrency, 20, 1e-3);
  EXPECT_NEAR(c.tokens_per_s, 1200, 0.1);
  c = p.MaxDecode(4000, 0.040);
  EXPECT_NEAR(c.concurrency, 32, 1e-3);
  EXPECT_NEAR(c.tokens_per_s, 800, 0.1);
  c = p.MaxDecode(4000, 0.005);
  EXPECT_FALSE(c.attainable);
  // Longer contexts give less per replica at the same target.
  EXPECT_GT(p.MaxDecode(1000, 0.03).tokens_per_s, p.MaxDecode(4000, 0.03).tokens_per_s);
}

TEST(TablePerfProfileTest, SinglePointPerIslWorks) {
  // Dynamo-style prefill profile: one (throughput, TTFT) point per ISL, measured at batch 1.
  auto p = TablePerfProfile::FromJson(R"({"prefill": [{"isl": 1000, "prefill_tokens_per_s": 9000, "ttft_s": 0.12}],
                                          "decode": [{"concurrency": 1, "context": 1000, "itl_s": 0.01, "tokens_per_s": 100}]})");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->MaxPrefill(1000, 0.2).attainable);
  EXPECT_DOUBLE_EQ(p->MaxPrefill(1000, 0.2).tokens_per_s, 9000);
  EXPECT_FALSE(p->MaxPrefill(1000, 0.1).attainable);
}

TEST(TablePerfProfileTest, RejectsBadInputWithTheOffendingField) {
  auto bad_json = TablePerfProfile::FromJson("{\"prefill\": [");
  ASSERT_FALSE(bad_json.ok());
  EXPECT_EQ(bad_json.status().code(), StatusCode::kInvalidArgument);
  auto missing = TablePerfProfile::FromJson(R"({"prefill": []})");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("decode"), std::string::npos) << missing.status().message();
  auto negative = TablePerfProfile::FromJson(R"({"prefill": [{"isl": 1000, "prefill_tokens_per_s": -1, "ttft_s": 0.1}],
      "decode": [{"concurrency": 1, "context": 1, "itl_s": 0.01, "tokens_per_s": 100}]})");
  ASSERT_FALSE(negative.ok());
  EXPECT_NE(negative.status().message().find("prefill[0].prefill_tokens_per_s"), std::string::npos)
      << negative.status().message();
  auto wrong_type = TablePerfProfile::FromJson(R"({"prefill": [{"isl": "x", "prefill_tokens_per_s": 1, "ttft_s": 0.1}],
      "decode": [{"concurrency": 1, "context": 1, "itl_s": 0.01, "tokens_per_s": 100}]})");
  ASSERT_FALSE(wrong_type.ok());
  EXPECT_NE(wrong_type.status().message().find("prefill[0].isl"), std::string::npos);
}

TEST(TablePerfProfileTest, FromFileReadsAndNamesMissingFiles) {
  char path[] = "/tmp/kvmesh_profile_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << kProfile;
  auto p = TablePerfProfile::FromFile(path);
  std::remove(path);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_NEAR(p->ExpectedTtft(1000, 15000), 0.15, 1e-12);
  auto missing = TablePerfProfile::FromFile("/nonexistent/profile.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/profile.json"), std::string::npos);
}

TEST(CallbackPerfProfileTest, BisectsTheCallbacks) {
  // Prefill: TTFT = isl / 10000 s plus a queueing term that explodes near 40k tok/s.
  // Decode: ITL = 5 ms + 0.1 ms per sequence, tokens/s = concurrency / ITL.
  CallbackPerfProfile p([](double isl, double load) { return isl / 10000.0 + 0.1 * load / (40000.0 - std::min(load, 39999.0)); },
                        [](double, double c) { return 0.005 + 0.0001 * c; });
  const PrefillCapacity pc = p.MaxPrefill(2000, 0.3);  // 0.2 + 0.1 x / (40000 - x) = 0.3 -> x = 20000
  EXPECT_TRUE(pc.attainable);
  EXPECT_NEAR(pc.tokens_per_s, 20000, 1);
  const DecodeCapacity dc = p.MaxDecode(1000, 0.015);  // 0.005 + 0.0001 c = 0.015 -> c = 100
  EXPECT_TRUE(dc.attainable);
  EXPECT_NEAR(dc.concurrency, 100, 1e-3);
  EXPECT_NEAR(dc.tokens_per_s, 100 / 0.015, 0.1);
  EXPECT_FALSE(p.MaxDecode(1000, 0.001).attainable);
}

}  // namespace
}  // namespace kvmesh::planner
