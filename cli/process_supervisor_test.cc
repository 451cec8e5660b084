#include "cli/process_supervisor.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <vector>

namespace kvmesh::cli {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

struct Captured {
  std::vector<std::string> lines;  // "[name] line"
};

ProcessSupervisor::Options Capture(Captured* out) {
  ProcessSupervisor::Options o;
  o.sink = [out](std::string_view name, std::string_view line) {
    out->lines.push_back("[" + std::string(name) + "] " + std::string(line));
  };
  return o;
}

ChildSpec Shell(std::string name, std::string script) {
  ChildSpec s;
  s.name = std::move(name);
  s.argv = {"/bin/sh", "-c", std::move(script)};
  s.restart_backoff = milliseconds(1);
  return s;
}

// Polls until `pred` holds or 10 s pass; collects the events seen.
template <class Pred>
bool PollUntil(ProcessSupervisor& sup, std::vector<ChildEvent>& events, Pred pred) {
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline) {
    for (auto& e : sup.Poll(milliseconds(20))) events.push_back(std::move(e));
    if (pred()) return true;
  }
  return false;
}

// True when `pid` no longer runs (gone, or a zombie nobody has reaped yet).
bool Dead(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  size_t paren = content.rfind(')');
  return paren != std::string::npos && paren + 2 < content.size() &&
         (content[paren + 2] == 'Z' || content[paren + 2] == 'X');
}

TEST(ProcessSupervisorTest, PrefixesStdoutAndStderrLinesAndFlushesPartialLine) {
  Captured cap;
  ProcessSupervisor sup(Capture(&cap));
  ChildSpec spec = Shell("decode-0", "echo hello; echo oops >&2; printf 'no newline'; exit 0");
  spec.max_restarts = 0;
  ASSERT_TRUE(sup.Start(spec).ok());
  std::vector<ChildEvent> events;
  ASSERT_TRUE(PollUntil(sup, events, [&] { return !events.empty(); }));
  EXPECT_EQ(cap.lines, (std::vector<std::string>{"[decode-0] hello", "[decode-0] oops", "[decode-0] no newline"}));
  EXPECT_EQ(sup.LastLines("decode-0").back(), "no newline");
}

TEST(ProcessSupervisorTest, PassesEnvironmentOnTopOfParent) {
  Captured cap;
  ProcessSupervisor sup(Capture(&cap));
  ::setenv("KVMESH_SUP_TEST_PARENT", "from-parent", 1);
  ChildSpec spec = Shell("env", "echo $KVMESH_SUP_TEST_PARENT $KVMESH_SUP_TEST_CHILD; exit 0");
  spec.env = {{"KVMESH_SUP_TEST_CHILD", "from-spec"}};
  spec.max_restarts = 0;
  ASSERT_TRUE(sup.Start(spec).ok());
  std::vector<ChildEvent> events;
  ASSERT_TRUE(PollUntil(sup, events, [&] { return !events.empty(); }));
  ASSERT_FALSE(cap.lines.empty());
  EXPECT_EQ(cap.lines[0], "[env] from-parent from-spec");
}

TEST(ProcessSupervisorTest, DetectsExitCodeAndSignal) {
  Captured cap;
  ProcessSupervisor sup(Capture(&cap));
  ChildSpec a = Shell("a", "exit 3");
  a.max_restarts = 0;
  ChildSpec b = Shell("b", "exec sleep 30");
  b.max_restarts = 0;
  ASSERT_TRUE(sup.Start(a).ok());
  ASSERT_TRUE(sup.Start(b).ok());
  pid_t bpid = sup.Pid("b");
  ASSERT_GT(bpid, 0);
  ASSERT_EQ(::kill(bpid, SIGKILL), 0);
  std::vector<ChildEvent> events;
  ASSERT_TRUE(PollUntil(sup, events, [&] { return events.size() >= 2; }));
  for (const auto& e : events) {
    EXPECT_EQ(e.kind, ChildEvent::Kind::kFailed);  // no restart budget
    if (e.name == "a") {
      EXPECT_NE(e.description.find("exited with code 3"), std::string::npos) << e.description;
    }
    if (e.name == "b") {
      EXPECT_EQ(e.pid, bpid);
      EXPECT_NE(e.description.find("killed by signal 9"), std::string::npos) << e.description;
    }
  }
  EXPECT_TRUE(sup.AnyFailed());
  EXPECT_EQ(sup.Pid("a"), 0);
  EXPECT_TRUE(sup.RunningPids().empty());
}

TEST(ProcessSupervisorTest, RestartsUpToBudgetThenFails) {
  Captured cap;
  ProcessSupervisor sup(Capture(&cap));
  ChildSpec spec = Shell("crashy", "echo run; exit 1");
  spec.max_restarts = 2;
  ASSERT_TRUE(sup.Start(spec).ok());
  std::vector<ChildEvent> events;
  ASSERT_TRUE(PollUntil(sup, events, [&] { return sup.State("crashy") == ChildState::kFailed; }));
  std::vector<ChildEvent::Kind> kinds;
  for (const auto& e : events) kinds.push_back(e.kind);
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[0].restart_in, milliseconds(1));  // backoff doubles per exit in the window
  EXPECT_EQ(events[2].restart_in, milliseconds(2));
  using K = ChildEvent::Kind;
  EXPECT_EQ(kinds, (std::vector<K>{K::kExited, K::kRestarted, K::kExited, K::kRestarted, K::kFailed}));
  EXPECT_EQ(sup.Restarts("crashy"), 2);
  EXPECT_EQ(cap.lines.size(), 3u);  // three runs
  EXPECT_NE(events.back().description.find("restart budget spent"), std::string::npos);
  // Failed children stay failed.
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(sup.Poll(milliseconds(5)).empty());
}

TEST(ProcessSupervisorTest, RestartWindowForgetsOldExitsWithInjectedClock) {
  Captured cap;
  auto now = std::make_shared<Clock::time_point>(Clock::now());
  ProcessSupervisor::Options o = Capture(&cap);
  o.now = [now] { return *now; };
  ProcessSupervisor sup(o);
  ChildSpec spec = Shell("w", "exit 1");
  spec.max_restarts = 1;
  spec.restart_window = milliseconds(10000);
  spec.restart_backoff = milliseconds(1000);
  ASSERT_TRUE(sup.Start(spec).ok());
  std::vector<ChildEvent> events;
  ASSERT_TRUE(PollUntil(sup, events, [&] { return sup.State("w") == ChildState::kRestartPending; }));
  // Backoff is measured on the injected clock: no restart while it stands still.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(sup.Poll(milliseconds(5)).empty());
  *now += milliseconds(1000);
  ASSERT_TRUE(PollUntil(sup, events, [&] { return sup.Restarts("w") == 1; }));
  // The next exit comes 20 s later: the first one has left the window, so it restarts again.
  *now += milliseconds(20000);
  ASSERT_TRUE(PollUntil(sup, events, [&] { return sup.State("w") == ChildState::kRestartPending; }));
  *now += milliseconds(1000);
  ASSERT_TRUE(PollUntil(sup, events, [&] { return sup.Restarts("w") == 2; }));
  // An exit within 10 s of the last one spends the budget of 1.
  *now += milliseconds(100);
  ASSERT_TRUE(PollUntil(sup, events, [&] { return sup.State("w") == ChildState::kFailed; }));
}

TEST(ProcessSupervisorTest, RestartIsNotInTheSamePollAsTheExit) {
  Captured cap;
  ProcessSupervisor sup(Capture(&cap));
  ChildSpec spec = Shell("r", "exit 1");
  spec.restart_backoff = milliseconds(0);
  ASSERT_TRUE(sup.Start(spec).ok());
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  std::vector<ChildEvent> batch;
  while (batch.empty() && Clock::now() < deadline) batch = sup.Poll(milliseconds(20));
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0].kind, ChildEvent::Kind::kExited);
  EXPECT_EQ(batch[0].description, "exited with code 1");
  EXPECT_EQ(batch[0].restart_in, milliseconds(0));
  auto next = sup.Poll(milliseconds(0));
  ASSERT_FALSE(next.empty());
  EXPECT_EQ(next[0].kind, ChildEvent::Kind::kRestarted);
  sup.StopAll(milliseconds(500));
}

TEST(ProcessSupervisorTest, StopSendsTermThenKillAfterGrace) {
  Captured cap;
  ProcessSupervisor sup(Capture(&cap));
  // Ignores SIGTERM: must be SIGKILLed after the grace period.
  ASSERT_TRUE(sup.Start(Shell("stubborn", "trap '' TERM; echo armed; while :; do sleep 0.02; done")).ok());
  ASSERT_TRUE(sup.Start(Shell("polite", "exec sleep 30")).ok());
  std::vector<ChildEvent> events;
  ASSERT_TRUE(PollUntil(sup, events, [&] { return !cap.lines.empty(); }));  // trap installed
  pid_t stubborn = sup.Pid("stubborn");
  pid_t polite = sup.Pid("polite");

  auto t0 = Clock::now();
  sup.Stop("polite", milliseconds(5000));
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));  // SIGTERM was enough
  EXPECT_TRUE(Dead(polite));
  EXPECT_EQ(sup.State("polite"), ChildState::kStopped);

  t0 = Clock::now();
  sup.Stop("stubborn", milliseconds(300));
  auto took = Clock::now() - t0;
  EXPECT_GE(took, milliseconds(300));
  EXPECT_LT(took, std::chrono::seconds(5));
  EXPECT_TRUE(Dead(stubborn));
  EXPECT_EQ(sup.State("stubborn"), ChildState::kStopped);
  EXPECT_TRUE(sup.Poll(milliseconds(5)).empty());  // a requested stop is no crash
  EXPECT_FALSE(sup.AnyFailed());
}

TEST(ProcessSupervisorTest, StopAllStopsEveryChild) {
  Captured cap;
  ProcessSupervisor sup(Capture(&cap));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(sup.Start(Shell("s" + std::to_string(i), "exec sleep 30")).ok());
  std::vector<pid_t> pids = sup.RunningPids();
  ASSERT_EQ(pids.size(), 3u);
  sup.StopAll(milliseconds(2000));
  for (pid_t p : pids) EXPECT_TRUE(Dead(p)) << p;
  EXPECT_TRUE(sup.RunningPids().empty());
}

TEST(ProcessSupervisorTest, ExecFailureIsReportedAtStart) {
  ProcessSupervisor sup;
  ChildSpec spec;
  spec.name = "ghost";
  spec.argv = {"/nonexistent/kvmesh-agent"};
  Status s = sup.Start(spec);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("/nonexistent/kvmesh-agent"), std::string::npos);
  EXPECT_FALSE(sup.Start(ChildSpec{}).ok());
  ASSERT_TRUE(sup.Start(Shell("dup", "exec sleep 30")).ok());
  EXPECT_EQ(sup.Start(Shell("dup", "true")).code(), StatusCode::kInvalidArgument);
}

TEST(ProcessSupervisorTest, ChildrenDieWithAKilledParent) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t helper = ::fork();
  ASSERT_GE(helper, 0);
  if (helper == 0) {
    ::close(fds[0]);
    ProcessSupervisor sup;
    if (!sup.Start(Shell("orphan", "exec sleep 30")).ok()) ::_exit(1);
    pid_t p = sup.Pid("orphan");
    if (::write(fds[1], &p, sizeof(p)) != sizeof(p)) ::_exit(1);
    ::pause();
    ::_exit(0);
  }
  ::close(fds[1]);
  pid_t orphan = 0;
  ASSERT_EQ(::read(fds[0], &orphan, sizeof(orphan)), static_cast<ssize_t>(sizeof(orphan)));
  ::close(fds[0]);
  ASSERT_FALSE(Dead(orphan));
  ASSERT_EQ(::kill(helper, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(helper, &status, 0), helper);
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (!Dead(orphan) && Clock::now() < deadline) ::usleep(10000);
  EXPECT_TRUE(Dead(orphan)) << "child " << orphan << " outlived its SIGKILLed parent";
  if (!Dead(orphan)) ::kill(orphan, SIGKILL);
}

}  // namespace
}  // namespace kvmesh::cli
