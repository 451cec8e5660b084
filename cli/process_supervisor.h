// ProcessSupervisor: runs named child processes for `kvmesh up`, re-prints their output line by
// line with a "[name] " prefix, notices when they exit, restarts them with a bounded count and
// backoff, and stops them (SIGTERM, then SIGKILL after a grace period).
//
// Invariants:
//  - Single-threaded: every method is called from the one thread that owns the supervisor (the
//    thread that forked is the one PR_SET_PDEATHSIG watches). Poll() is the only place children
//    are reaped, restarted, and their output drained (besides Stop/StopAll, which drain while
//    they wait).
//  - A child never outlives the supervisor's process: it gets PR_SET_PDEATHSIG(SIGTERM) (so even a
//    kill -9 of the parent stops it) and the destructor stops whatever still runs.
//  - Each child runs in its own process group, so a terminal's Ctrl-C reaches only the
//    supervisor, which then stops the children in the order its owner chooses.
//  - stdout and stderr of a child share one pipe, so its lines keep their order.
//  - A restart never happens in the same Poll() call that reported the exit, so the owner can
//    clean up (e.g. delete a stale ready file) before the new process starts.
//  - Restart budget: at most max_restarts unexpected exits within restart_window; the next one
//    marks the child kFailed (it is not started again). Any exit that Stop() did not ask for is
//    unexpected, exit code 0 included.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace kvmesh::cli {

struct ChildSpec {
  std::string name;               // unique; the log prefix "[name] "
  std::vector<std::string> argv;  // argv[0]: path of the executable (no PATH search)
  std::vector<std::pair<std::string, std::string>> env;  // set on top of the parent's environment
  int max_restarts = 3;           // unexpected exits tolerated within restart_window; 0 = none
  std::chrono::milliseconds restart_window{60000};
  std::chrono::milliseconds restart_backoff{500};  // before the 1st restart; doubled for each next
};

enum class ChildState {
  kRunning,
  kRestartPending,  // exited unexpectedly; starts again once its backoff has passed
  kStopped,         // stopped on request
  kFailed,          // restart budget spent (or could not be started again)
};
const char* ChildStateName(ChildState s);

struct ChildEvent {
  enum class Kind { kExited, kRestarted, kFailed };
  Kind kind;
  std::string name;
  pid_t pid = 0;            // the process that exited, or the new one (kRestarted)
  std::string description;  // "exited with code 1", "killed by signal 9 (Killed)", ...
  std::chrono::milliseconds restart_in{0};  // kExited: the backoff before the restart
};

class ProcessSupervisor {
 public:
  using Clock = std::chrono::steady_clock;
  // Receives each complete output line of a child (without the newline).
  using LineSink = std::function<void(std::string_view name, std::string_view line)>;

  struct Options {
    LineSink sink;                       // empty = print "[name] line" to stdout
    std::function<Clock::time_point()> now;  // empty = steady_clock (tests inject a clock)
    size_t last_lines_kept = 40;         // per child, for LastLines()
  };

  ProcessSupervisor();
  explicit ProcessSupervisor(Options options);
  ~ProcessSupervisor();  // StopAll(2s)
  ProcessSupervisor(const ProcessSupervisor&) = delete;
  ProcessSupervisor& operator=(const ProcessSupervisor&) = delete;

  // Starts a child. InvalidArgument for an empty or duplicate name or empty argv; Internal when
  // fork/pipe fail; NotFound/PermissionDenied/Internal naming argv[0] when exec fails (the child's
  // errno is passed back through a close-on-exec pipe, so a bad path is reported here, not as an
  // exit later).
  Status Start(ChildSpec spec);

  // Waits up to `timeout` for output or exits, then: prints complete output lines, reaps exited
  // children (scheduling restarts or marking them failed) and starts children whose backoff has
  // passed. Returns what happened. Interrupted early by a signal (EINTR), which is not an error.
  std::vector<ChildEvent> Poll(std::chrono::milliseconds timeout);

  // Stops one child: SIGTERM, up to `grace` for it to exit (its output still drained), then
  // SIGKILL. No restart follows. Returns at once for an unknown name or a child not running.
  void Stop(std::string_view name, std::chrono::milliseconds grace);
  // Stops every running child: SIGTERM to all, then one shared grace period, then SIGKILL.
  void StopAll(std::chrono::milliseconds grace);

  bool Has(std::string_view name) const;
  pid_t Pid(std::string_view name) const;  // 0 when not running
  ChildState State(std::string_view name) const;
  int Restarts(std::string_view name) const;  // restarts done so far (all time)
  std::vector<std::string> LastLines(std::string_view name) const;
  std::vector<pid_t> RunningPids() const;
  bool AnyFailed() const;

 private:
  struct Child;
  Child* Find(std::string_view name) const;
  Status Spawn(Child& c);
  void DrainOutput(Child& c, bool final);
  void EmitLine(Child& c, std::string_view line);
  // Reaps `c` if it exited; returns true and fills `description` then.
  bool Reap(Child& c, bool block, std::string* description);
  Clock::time_point Now() const;

  Options options_;
  std::vector<std::unique_ptr<Child>> children_;  // in start order
};

}  // namespace kvmesh::cli
