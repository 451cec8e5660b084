// RunService end to end in forked children (gtest death tests): real exit codes, real stderr and
// real signals; the parent process's signal mask is never touched.
#include "common/service_runner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace kvmesh {
namespace {

using ::testing::ExitedWithCode;
using ::testing::HasSubstr;

struct FakeServiceConfig {
  std::string mode = "ok";
  int32_t workers = 1;
  template <class V>
  void Visit(V& v) {
    v("mode", mode, "what the fake service does");
    v("workers", workers, "threads (>= 1)");
  }
  Status Validate() const {
    if (workers < 1) return InvalidArgumentError("workers must be >= 1, got " + std::to_string(workers));
    return Status::Ok();
  }
};

// mode: "ok" (waits for a signal), "create-invalid" / "create-fails" (Create fails),
// "start-fails", "sigterm-from-thread" / "sigint-from-thread" (a thread the service starts sends
// the signal to the process).
class FakeService {
 public:
  explicit FakeService(std::string mode) : mode_(std::move(mode)) {}
  ~FakeService() { std::fprintf(stderr, "fake: destroyed\n"); }

  static StatusOr<std::unique_ptr<FakeService>> Create(const FakeServiceConfig& c) {
    if (c.mode == "create-invalid") return InvalidArgumentError("model: bad shape");
    if (c.mode == "create-fails") return UnavailableError("cannot load weights");
    return std::make_unique<FakeService>(c.mode);
  }
  Status Start() {
    if (mode_ == "start-fails") return UnavailableError("address in use");
    if (mode_ == "sigterm-from-thread" || mode_ == "sigint-from-thread") {
      const int sig = mode_ == "sigterm-from-thread" ? SIGTERM : SIGINT;
      // Sent to the process: any thread that did not block it would die of it, so exit 0 shows
      // this thread inherited the mask.
      thread_ = std::thread([this, sig] {
        ::kill(::getpid(), sig);
        while (!stop_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      });
    }
    return Status::Ok();
  }
  void Shutdown() {
    std::fprintf(stderr, "fake: shutdown\n");
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::string mode_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

int RunFake(std::vector<std::string> args, bool invalid_exits_2 = false) {
  std::vector<char*> argv;
  static std::string name = "fake-svc";
  argv.push_back(name.data());
  for (auto& a : args) argv.push_back(a.data());
  return RunService<FakeServiceConfig>({.binary = "fake-svc",
                                        .component = "fake",
                                        .env_prefix = "KVMESH_FAKESVC",
                                        .create_invalid_argument_exits_2 = invalid_exits_2},
                                       static_cast<int>(argv.size()), argv.data(),
                                       [](const FakeServiceConfig& c) { return FakeService::Create(c); });
}

TEST(RunService, HelpPrintsUsageAndFlagsAndExits0) {
  ::testing::internal::CaptureStdout();
  const int rc = RunFake({"--help"});
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0);
  EXPECT_THAT(out, HasSubstr("usage: fake-svc [--config FILE] [flags]"));
  EXPECT_THAT(out, HasSubstr("--mode"));
  EXPECT_THAT(out, HasSubstr("KVMESH_FAKESVC_WORKERS"));
}

TEST(RunService, ConfigErrorsExit2) {
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunFake({"--workers", "0"}), 2);
  EXPECT_EQ(RunFake({"--no-such-flag", "1"}), 2);
  EXPECT_EQ(RunFake({"stray"}), 2);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(err, HasSubstr("fake-svc: INVALID_ARGUMENT: workers must be >= 1, got 0\n(see --help)\n"));
  EXPECT_THAT(err, HasSubstr("no-such-flag"));
  EXPECT_THAT(err, HasSubstr("fake-svc: unexpected argument 'stray'\n"));
}

TEST(RunService, BadLogEnvironmentExits2) {
  EXPECT_EXIT(
      {
        ::setenv("KVMESH_LOG_LEVEL", "loud", 1);
        std::exit(RunFake({}));
      },
      ExitedWithCode(2), "fake-svc: .*loud");
}

TEST(RunService, CreateFailureExits1OrUsage2) {
  EXPECT_EXIT(std::exit(RunFake({"--mode", "create-fails"})), ExitedWithCode(1),
              "fake-svc: UNAVAILABLE: cannot load weights");
  EXPECT_EXIT(std::exit(RunFake({"--mode", "create-invalid"})), ExitedWithCode(1),
              "fake-svc: INVALID_ARGUMENT: model: bad shape");
  EXPECT_EXIT(std::exit(RunFake({"--mode", "create-invalid"}, /*invalid_exits_2=*/true)),
              ExitedWithCode(2), "fake-svc: INVALID_ARGUMENT: model: bad shape");
  EXPECT_EXIT(std::exit(RunFake({"--mode", "create-fails"}, /*invalid_exits_2=*/true)),
              ExitedWithCode(1), "cannot load weights");
}

TEST(RunService, StartFailureShutsDownThenExits1) {
  EXPECT_EXIT(std::exit(RunFake({"--mode", "start-fails"})), ExitedWithCode(1),
              "fake-svc: UNAVAILABLE: address in use\nfake: shutdown\nfake: destroyed");
}

TEST(RunService, SignalFromAnyThreadShutsDownAndExits0) {
  EXPECT_EXIT(std::exit(RunFake({"--mode", "sigterm-from-thread"})), ExitedWithCode(0),
              "signal received.*SIGTERM.*fake: shutdown\nfake: destroyed");
  EXPECT_EXIT(std::exit(RunFake({"--mode", "sigint-from-thread"})), ExitedWithCode(0),
              "signal received.*SIGINT.*fake: shutdown\nfake: destroyed");
}

TEST(RunService, ServesUntilSignalledByAnotherProcess) {
  EXPECT_EXIT(
      {
        // Blocked first, so that the signal is pending (not fatal) whenever it lands.
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, nullptr);
        if (::fork() == 0) {
          ::kill(::getppid(), SIGTERM);
          ::_exit(0);
        }
        std::exit(RunFake({"--mode", "ok"}));
      },
      ExitedWithCode(0), "signal received.*SIGTERM.*fake: shutdown");
}

}  // namespace
}  // namespace kvmesh
