#include "common/file_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace kvmesh {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class WriteFileAtomicTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "kvmesh-file-util-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, ec);
    fs::remove_all(dir_, ec);
  }
  fs::path dir_;
};

TEST_F(WriteFileAtomicTest, CreatesThenReplacesAndLeavesNoTempFile) {
  const fs::path p = dir_ / "ready.json";
  ASSERT_TRUE(WriteFileAtomic(p.string(), "{\"port\": 1}\n").ok());
  EXPECT_EQ(ReadAll(p), "{\"port\": 1}\n");
  ASSERT_TRUE(WriteFileAtomic(p.string(), "x").ok());
  EXPECT_EQ(ReadAll(p), "x");  // replaced, not appended
  ASSERT_TRUE(WriteFileAtomic(p.string(), "").ok());
  EXPECT_EQ(fs::file_size(p), 0u);
  // Only the file itself is left in the folder.
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "ready.json");
  }
  EXPECT_EQ(entries, 1u);
}

TEST_F(WriteFileAtomicTest, LargeContentsAreWrittenWhole) {
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  const fs::path p = dir_ / "big";
  ASSERT_TRUE(WriteFileAtomic(p.string(), big).ok());
  EXPECT_EQ(ReadAll(p), big);
}

TEST_F(WriteFileAtomicTest, ReplacesAnOpenFileWithoutChangingWhatItsReaderSees) {
  // A reader holding the old file keeps reading the old contents: the new file is a new inode
  // renamed over the name, not a rewrite in place.
  const fs::path p = dir_ / "workers.yaml";
  ASSERT_TRUE(WriteFileAtomic(p.string(), "old contents\n").ok());
  std::ifstream reader(p);
  ASSERT_TRUE(WriteFileAtomic(p.string(), "new\n").ok());
  std::stringstream ss;
  ss << reader.rdbuf();
  EXPECT_EQ(ss.str(), "old contents\n");
  EXPECT_EQ(ReadAll(p), "new\n");
}

TEST_F(WriteFileAtomicTest, MissingFolderIsNotFoundNamingTheFile) {
  const fs::path p = dir_ / "no-such-dir" / "ready.json";
  Status s = WriteFileAtomic(p.string(), "x");
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
  EXPECT_THAT(s.message(), HasSubstr(p.string() + ".tmp"));
  EXPECT_THAT(s.message(), HasSubstr("No such file or directory"));
  EXPECT_FALSE(fs::exists(p));
}

TEST_F(WriteFileAtomicTest, PathUnderAFileIsNotFound) {
  ASSERT_TRUE(WriteFileAtomic((dir_ / "plain").string(), "x").ok());
  Status s = WriteFileAtomic((dir_ / "plain" / "f").string(), "x");
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
}

TEST_F(WriteFileAtomicTest, TargetIsAFolderFailsAndRemovesTheTempFile) {
  fs::create_directory(dir_ / "sub");
  ASSERT_TRUE(WriteFileAtomic((dir_ / "sub" / "keep").string(), "x").ok());
  Status s = WriteFileAtomic((dir_ / "sub").string(), "x");  // rename(file, non-empty dir) fails
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("cannot rename"));
  EXPECT_FALSE(fs::exists(dir_ / "sub.tmp"));
  EXPECT_TRUE(fs::is_directory(dir_ / "sub"));
}

TEST_F(WriteFileAtomicTest, EmptyPathIsInvalid) {
  EXPECT_EQ(WriteFileAtomic("", "x").code(), StatusCode::kInvalidArgument);
}

// Runs in a forked child (a death test): the folder is made read-only, and a root test process
// drops to an unprivileged user first (root writes through permissions). Exits 0 iff the write
// failed with PermissionDenied; prints the status for the parent to match.
[[noreturn]] void WriteIntoReadOnlyFolderAndExit(const fs::path& p) {
  if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) {
    std::fprintf(stderr, "cannot drop root\n");
    std::_Exit(3);
  }
  Status s = WriteFileAtomic(p.string(), "new");
  std::fprintf(stderr, "status: %s\n", s.ToString().c_str());
  std::_Exit(s.code() == StatusCode::kPermissionDenied ? 0 : 1);
}

TEST_F(WriteFileAtomicTest, ReadOnlyFolderIsPermissionDeniedAndKeepsTheOldFile) {
  const fs::path p = dir_ / "ready.json";
  ASSERT_TRUE(WriteFileAtomic(p.string(), "old").ok());
  fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                            fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
  EXPECT_EXIT(WriteIntoReadOnlyFolderAndExit(p), ::testing::ExitedWithCode(0),
              "status: .*" + (p.string() + ".tmp") + ".*Permission denied");
  fs::permissions(dir_, fs::perms::owner_all);
  EXPECT_EQ(ReadAll(p), "old");
  EXPECT_FALSE(fs::exists(p.string() + ".tmp"));
}

}  // namespace
}  // namespace kvmesh
