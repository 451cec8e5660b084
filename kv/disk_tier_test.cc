#include "kv/disk_tier.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "kv/tier_test_util.h"

namespace kvmesh::kv {
namespace {

namespace fs = std::filesystem;
using testing::PatternFor;
using testing::SameBytes;
using testing::VectorSink;

constexpr size_t kBytes = 512;

// Real files, with injectable write failures.
class FaultyDiskIo final : public DiskIo {
 public:
  Status WriteFile(const std::string& path, std::span<const std::span<const std::byte>> parts,
                   bool sync) override {
    ++writes;
    if (fail_writes) {
      // Like a disk that fills up mid-write: the first part lands, then ENOSPC.
      std::span<const std::span<const std::byte>> first = parts.first(1);
      (void)real.WriteFile(path, first, false);
      return ResourceExhaustedError("write " + path + ": No space left on device");
    }
    return real.WriteFile(path, parts, sync);
  }
  StatusOr<size_t> ReadFile(const std::string& path, std::span<std::byte> dst) override {
    if (fail_reads) return InternalError("read " + path + ": Input/output error");
    return real.ReadFile(path, dst);
  }
  Status RenameFile(const std::string& from, const std::string& to) override {
    return real.RenameFile(from, to);
  }
  Status RemoveFile(const std::string& path) override { return real.RemoveFile(path); }
  StatusOr<std::vector<DiskFileInfo>> ListDir(const std::string& dir) override {
    return real.ListDir(dir);
  }
  Status CreateDirs(const std::string& dir) override { return real.CreateDirs(dir); }
  Status SyncDir(const std::string& dir) override { return real.SyncDir(dir); }

  PosixDiskIo real;
  bool fail_writes = false;
  bool fail_reads = false;
  int writes = 0;
};

class DiskTierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvmesh_disk_tier_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  DiskTierOptions Options(uint32_t capacity = 4) const {
    DiskTierOptions o;
    o.dir = dir_ + "/g3";
    o.capacity_blocks = capacity;
    o.block_bytes = kBytes;
    return o;
  }
  std::unique_ptr<DiskTier> Make(const DiskTierOptions& o, KvEventSink* sink = nullptr,
                                 DiskIo* io = nullptr) {
    auto t = DiskTier::Create(o, sink, io);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? std::move(t).value() : nullptr;
  }
  void Put(DiskTier& t, BlockHash h, uint32_t hits = 2) {
    auto p = PatternFor(h, kBytes);
    ASSERT_TRUE(t.Store(h, std::nullopt, hits, p).ok());
  }
  // Overwrites one byte of a block file at `offset`.
  static void FlipByte(const std::string& path, std::streamoff offset) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good()) << path;
    f.seekg(offset);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x5a);
    f.seekp(offset);
    f.write(&c, 1);
  }
  std::vector<std::string> Names() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_ + "/g3")) {
      out.push_back(e.path().filename());
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  // Expects Load(h) to fail as corrupt, and the block to be gone for good.
  void ExpectDropped(DiskTier& t, VectorSink& sink, BlockHash h) {
    std::vector<std::byte> dst(kBytes);
    auto r = t.Load(h, dst);
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();
    EXPECT_FALSE(t.Contains(h));
    EXPECT_FALSE(fs::exists(t.PathFor(h)));
    EXPECT_EQ(t.stats().corrupt_dropped, 1u);
    EXPECT_EQ(sink.Removed(Medium::kG3), std::vector<BlockHash>{h});
    EXPECT_EQ(t.Load(h, dst).status().code(), StatusCode::kNotFound);  // never served later
  }

  std::string dir_;
};

TEST_F(DiskTierTest, StoreThenLoadRoundTripsThroughAFile) {
  VectorSink sink;
  auto t = Make(Options(), &sink);
  auto p = PatternFor(0xabcdef, kBytes);
  ASSERT_TRUE(t->Store(0xabcdef, BlockHash{5}, 3, p).ok());
  EXPECT_EQ(Names(), std::vector<std::string>{"0000000000abcdef.kvb"});  // no .tmp left behind
  EXPECT_EQ(fs::file_size(t->PathFor(0xabcdef)), kDiskBlockHeaderBytes + kBytes);

  std::vector<std::byte> dst(kBytes);
  auto hits = t->Load(0xabcdef, dst);
  ASSERT_TRUE(hits.ok()) << hits.status().ToString();
  EXPECT_EQ(*hits, 4u);
  EXPECT_TRUE(SameBytes(dst, p));
  ASSERT_EQ(sink.events.size(), 1u);
  const auto& ev = std::get<BlockStored>(sink.events[0]);
  EXPECT_EQ(ev.medium, Medium::kG3);
  EXPECT_EQ(ev.parent_hash, BlockHash{5});
  EXPECT_EQ(ev.hashes, std::vector<BlockHash>{0xabcdef});
}

TEST_F(DiskTierTest, TruncatedFileIsDetectedAndDropped) {
  VectorSink sink;
  auto t = Make(Options(), &sink);
  Put(*t, 1);
  fs::resize_file(t->PathFor(1), kDiskBlockHeaderBytes + kBytes - 1);
  ExpectDropped(*t, sink, 1);
}

TEST_F(DiskTierTest, OverlongFileIsDetectedAndDropped) {
  VectorSink sink;
  auto t = Make(Options(), &sink);
  Put(*t, 1);
  fs::resize_file(t->PathFor(1), kDiskBlockHeaderBytes + kBytes + 8);
  ExpectDropped(*t, sink, 1);
}

TEST_F(DiskTierTest, FlippedPayloadByteIsDetectedAndDropped) {
  VectorSink sink;
  auto t = Make(Options(), &sink);
  Put(*t, 1);
  FlipByte(t->PathFor(1), kDiskBlockHeaderBytes + 100);
  ExpectDropped(*t, sink, 1);
}

TEST_F(DiskTierTest, FlippedHeaderByteIsDetectedAndDropped) {
  VectorSink sink;
  auto t = Make(Options(), &sink);
  Put(*t, 1);
  FlipByte(t->PathFor(1), 12);  // the hit count: only the checksum can notice
  ExpectDropped(*t, sink, 1);
}

TEST_F(DiskTierTest, FlippedChecksumByteIsDetectedAndDropped) {
  VectorSink sink;
  auto t = Make(Options(), &sink);
  Put(*t, 1);
  FlipByte(t->PathFor(1), 44);
  ExpectDropped(*t, sink, 1);
}

TEST_F(DiskTierTest, WrongHashInHeaderIsDetectedAndDropped) {
  VectorSink sink;
  auto t = Make(Options(), &sink);
  Put(*t, 1);
  Put(*t, 2);
  // A self-consistent file (valid checksum) for block 2 sitting under block 1's name.
  fs::copy_file(t->PathFor(2), t->PathFor(1), fs::copy_options::overwrite_existing);
  ExpectDropped(*t, sink, 1);
  std::vector<std::byte> dst(kBytes);
  EXPECT_TRUE(t->Load(2, dst).ok());
}

TEST_F(DiskTierTest, ReadErrorDropsTheBlock) {
  VectorSink sink;
  FaultyDiskIo io;
  auto t = Make(Options(), &sink, &io);
  Put(*t, 1);
  io.fail_reads = true;
  ExpectDropped(*t, sink, 1);
}

TEST_F(DiskTierTest, WriteErrorMeansNotStoredAndIsNotFatal) {
  VectorSink sink;
  FaultyDiskIo io;
  auto t = Make(Options(), &sink, &io);
  io.fail_writes = true;
  auto p = PatternFor(1, kBytes);
  Status st = t->Store(1, std::nullopt, 2, p);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  EXPECT_FALSE(t->Contains(1));
  EXPECT_TRUE(Names().empty());  // the partial .tmp was removed
  EXPECT_TRUE(sink.events.empty());
  EXPECT_EQ(t->stats().write_errors, 1u);
  st = t->Store(3, std::nullopt, 2, p);
  EXPECT_EQ(t->stats().write_errors, 2u);

  io.fail_writes = false;  // space freed: the tier keeps working
  Put(*t, 2);
  EXPECT_TRUE(t->Contains(2));
  EXPECT_EQ(sink.Stored(Medium::kG3), std::vector<BlockHash>{2});
}

TEST_F(DiskTierTest, EvictsLeastRecentlyUsedAtCapacity) {
  VectorSink sink;
  auto t = Make(Options(2), &sink);
  Put(*t, 1);
  Put(*t, 2);
  std::vector<std::byte> dst(kBytes);
  ASSERT_TRUE(t->Load(1, dst).ok());
  Put(*t, 3);
  EXPECT_FALSE(t->Contains(2));
  EXPECT_FALSE(fs::exists(t->PathFor(2)));
  EXPECT_EQ(t->LruSnapshot(), (std::vector<BlockHash>{1, 3}));
  EXPECT_EQ(sink.Removed(Medium::kG3), std::vector<BlockHash>{2});
  EXPECT_EQ(t->stats().evictions, 1u);
  EXPECT_EQ(Names().size(), 2u);
}

TEST_F(DiskTierTest, RestartReloadsValidBlocksAndRemovesTheRest) {
  {
    auto t = Make(Options());
    Put(*t, 1, /*hits=*/3);
    Put(*t, 2);
  }
  const std::string g3 = dir_ + "/g3";
  std::ofstream(g3 + "/0000000000000009.kvb.tmp") << "half written";    // crash mid-write
  std::ofstream(g3 + "/0000000000000008.kvb") << "wrong size";          // torn/garbage file
  std::ofstream(g3 + "/notes.txt") << "not ours";                        // left alone
  fs::copy_file(g3 + "/0000000000000002.kvb", g3 + "/0000000000000007.kvb");  // hash mismatch

  VectorSink sink;
  auto t = Make(Options(), &sink);
  EXPECT_TRUE(t->Contains(1));
  EXPECT_TRUE(t->Contains(2));
  EXPECT_EQ(t->size(), 2u);
  EXPECT_EQ(t->stats().reloaded, 2u);
  EXPECT_EQ(t->stats().reload_rejected, 3u);
  EXPECT_EQ(Names(), (std::vector<std::string>{"0000000000000001.kvb", "0000000000000002.kvb",
                                               "notes.txt"}));
  auto stored = sink.Stored(Medium::kG3);
  std::sort(stored.begin(), stored.end());
  EXPECT_EQ(stored, (std::vector<BlockHash>{1, 2}));
  EXPECT_EQ(t->HitCount(1), 3u);
  std::vector<std::byte> dst(kBytes);
  ASSERT_TRUE(t->Load(1, dst).ok());
  EXPECT_TRUE(SameBytes(dst, PatternFor(1, kBytes)));
}

TEST_F(DiskTierTest, RestartReloadStillVerifiesChecksumOnRead) {
  {
    auto t = Make(Options());
    Put(*t, 1);
  }
  VectorSink sink;
  auto t0 = Make(Options());  // to compute the path
  const std::string path = t0->PathFor(1);
  t0.reset();
  FlipByte(path, kDiskBlockHeaderBytes + 3);
  auto t = Make(Options(), &sink);
  EXPECT_TRUE(t->Contains(1));  // header is fine: indexed
  sink.events.clear();
  ExpectDropped(*t, sink, 1);
}

TEST_F(DiskTierTest, RestartKeepsTheNewestBlocksWhenOverCapacity) {
  {
    auto t = Make(Options(4));
    for (BlockHash h : {1, 2, 3}) Put(*t, h);
  }
  const auto now = fs::file_time_type::clock::now();
  int age = 3;
  for (BlockHash h : {1, 2, 3}) {  // 1 oldest, 3 newest
    char name[32];
    std::snprintf(name, sizeof(name), "/g3/%016llx.kvb", static_cast<unsigned long long>(h));
    fs::last_write_time(dir_ + name, now - std::chrono::seconds(10 * age--));
  }
  auto t = Make(Options(2));
  EXPECT_FALSE(t->Contains(1));
  EXPECT_EQ(t->LruSnapshot(), (std::vector<BlockHash>{2, 3}));
  EXPECT_EQ(Names().size(), 2u);
}

TEST_F(DiskTierTest, RestartWithOtherBlockBytesRejectsOldFiles) {
  {
    auto t = Make(Options());
    Put(*t, 1);
  }
  DiskTierOptions o = Options();
  o.block_bytes = kBytes * 2;
  auto t = Make(o);
  EXPECT_EQ(t->size(), 0u);
  EXPECT_TRUE(Names().empty());
}

TEST_F(DiskTierTest, WipePolicyRemovesOurFilesOnly) {
  {
    auto t = Make(Options());
    Put(*t, 1);
    Put(*t, 2);
  }
  std::ofstream(dir_ + "/g3/notes.txt") << "not ours";
  DiskTierOptions o = Options();
  o.restart = DiskRestartPolicy::kWipe;
  VectorSink sink;
  auto t = Make(o, &sink);
  EXPECT_EQ(t->size(), 0u);
  EXPECT_EQ(Names(), std::vector<std::string>{"notes.txt"});
  EXPECT_TRUE(sink.events.empty());
}

TEST_F(DiskTierTest, FsyncModeWorks) {
  DiskTierOptions o = Options();
  o.fsync = true;
  auto t = Make(o);
  Put(*t, 1);
  std::vector<std::byte> dst(kBytes);
  EXPECT_TRUE(t->Load(1, dst).ok());
}

TEST(DiskTierNameTest, ParsesOnlyOurFileNames) {
  EXPECT_EQ(ParseDiskBlockFileName("00000000000000ff.kvb"), BlockHash{255});
  EXPECT_EQ(ParseDiskBlockFileName("00000000000000FF.kvb"), std::nullopt);
  EXPECT_EQ(ParseDiskBlockFileName("00000000000000ff.kvb.tmp"), std::nullopt);
  EXPECT_EQ(ParseDiskBlockFileName("ff.kvb"), std::nullopt);
}

TEST(DiskTierOptionsTest, ValidateNamesBadField) {
  DiskTierOptions o;
  o.capacity_blocks = 1;
  o.block_bytes = 1;
  auto st = o.Validate();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("dir"), std::string::npos);
}

}  // namespace
}  // namespace kvmesh::kv
