#include "cli/process_supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <thread>

extern char** environ;

namespace kvmesh::cli {

const char* ChildStateName(ChildState s) {
  switch (s) {
    case ChildState::kRunning: return "running";
    case ChildState::kRestartPending: return "restart_pending";
    case ChildState::kStopped: return "stopped";
    case ChildState::kFailed: return "failed";
  }
  return "?";
}

struct ProcessSupervisor::Child {
  ChildSpec spec;
  ChildState state = ChildState::kStopped;
  pid_t pid = 0;
  int out_fd = -1;              // read end of the child's stdout+stderr pipe
  std::string partial;          // output after the last newline
  std::deque<std::string> last_lines;
  std::deque<Clock::time_point> exits;  // unexpected exits within the restart window
  Clock::time_point restart_at{};
  int restarts = 0;
};

namespace {

void CloseFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* name = strsignal(sig);
    return "killed by signal " + std::to_string(sig) + " (" + (name ? name : "?") + ")";
  }
  return "ended with wait status " + std::to_string(status);
}

}  // namespace

ProcessSupervisor::ProcessSupervisor() : ProcessSupervisor(Options{}) {}

ProcessSupervisor::ProcessSupervisor(Options options) : options_(std::move(options)) {
  if (!options_.sink) {
    options_.sink = [](std::string_view name, std::string_view line) {
      std::string out;
      out.reserve(name.size() + line.size() + 4);
      out.append("[").append(name).append("] ").append(line).append("\n");
      std::fwrite(out.data(), 1, out.size(), stdout);
      std::fflush(stdout);
    };
  }
}

ProcessSupervisor::~ProcessSupervisor() {
  StopAll(std::chrono::milliseconds(2000));
  for (auto& c : children_) CloseFd(c->out_fd);
}

ProcessSupervisor::Clock::time_point ProcessSupervisor::Now() const {
  return options_.now ? options_.now() : Clock::now();
}

ProcessSupervisor::Child* ProcessSupervisor::Find(std::string_view name) const {
  for (const auto& c : children_) {
    if (c->spec.name == name) return c.get();
  }
  return nullptr;
}

Status ProcessSupervisor::Start(ChildSpec spec) {
  if (spec.name.empty()) return InvalidArgumentError("child name must not be empty");
  if (spec.argv.empty() || spec.argv[0].empty()) {
    return InvalidArgumentError("child " + spec.name + ": argv must name an executable");
  }
  if (Find(spec.name) != nullptr) return InvalidArgumentError("child " + spec.name + " already exists");
  auto child = std::make_unique<Child>();
  child->spec = std::move(spec);
  KVMESH_RETURN_IF_ERROR(Spawn(*child));
  children_.push_back(std::move(child));
  return Status::Ok();
}

Status ProcessSupervisor::Spawn(Child& c) {
  // Everything the child needs is built before fork: between fork and exec only async-signal-safe
  // calls are made.
  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view kv(*e);
    bool overridden = false;
    for (const auto& [k, v] : c.spec.env) {
      overridden = overridden || (kv.size() > k.size() && kv.substr(0, k.size()) == k && kv[k.size()] == '=');
    }
    if (!overridden) env_strings.emplace_back(kv);
  }
  for (const auto& [k, v] : c.spec.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings = c.spec.argv;
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  int out_pipe[2];
  int err_pipe[2];  // exec errno back to the parent; closed by a successful exec
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return InternalError(std::string("pipe: ") + std::strerror(errno));
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return InternalError(std::string("pipe: ") + std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) ::close(fd);
    return InternalError("fork for " + c.spec.name + ": " + std::strerror(e));
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP, SIGQUIT}) ::signal(sig, SIG_DFL);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(out_pipe[1], 2);
    ::execve(argv[0], argv.data(), envp.data());
    int e = errno;
    ssize_t unused = ::write(err_pipe[1], &e, sizeof(e));
    (void)unused;
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(err_pipe[0], &exec_errno, sizeof(exec_errno));
  } while (n < 0 && errno == EINTR);
  ::close(err_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof(exec_errno))) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    ::close(out_pipe[0]);
    std::string msg = "exec " + c.spec.argv[0] + " (child " + c.spec.name + "): " + std::strerror(exec_errno);
    if (exec_errno == ENOENT) return NotFoundError(msg);
    if (exec_errno == EACCES) return PermissionDeniedError(msg);
    return InternalError(msg);
  }
  ::fcntl(out_pipe[0], F_SETFL, ::fcntl(out_pipe[0], F_GETFL) | O_NONBLOCK);
  CloseFd(c.out_fd);
  c.out_fd = out_pipe[0];
  c.pid = pid;
  c.partial.clear();
  c.state = ChildState::kRunning;
  return Status::Ok();
}

void ProcessSupervisor::EmitLine(Child& c, std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  options_.sink(c.spec.name, line);
  c.last_lines.emplace_back(line);
  while (c.last_lines.size() > options_.last_lines_kept) c.last_lines.pop_front();
}

void ProcessSupervisor::DrainOutput(Child& c, bool final) {
  if (c.out_fd < 0) return;
  char buf[8192];
  while (true) {
    ssize_t n = ::read(c.out_fd, buf, sizeof(buf));
    if (n > 0) {
      c.partial.append(buf, static_cast<size_t>(n));
      size_t start = 0;
      size_t nl;
      while ((nl = c.partial.find('\n', start)) != std::string::npos) {
        EmitLine(c, std::string_view(c.partial).substr(start, nl - start));
        start = nl + 1;
      }
      c.partial.erase(0, start);
      if (c.partial.size() > 64 * 1024) {  // a runaway line: print it in pieces
        EmitLine(c, c.partial);
        c.partial.clear();
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {  // EOF: every writer (the child and anything it spawned) is gone
      if (!c.partial.empty()) EmitLine(c, c.partial);
      c.partial.clear();
      CloseFd(c.out_fd);
    }
    break;  // EAGAIN or EOF
  }
  if (final && !c.partial.empty()) {
    EmitLine(c, c.partial);
    c.partial.clear();
  }
}

bool ProcessSupervisor::Reap(Child& c, bool block, std::string* description) {
  if (c.pid <= 0) return false;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(c.pid, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return false;
  if (r < 0) {  // ECHILD: someone else reaped it; treat as gone
    status = 0;
  }
  if (description != nullptr) *description = r < 0 ? "exited (status unknown)" : DescribeWaitStatus(status);
  DrainOutput(c, /*final=*/true);
  CloseFd(c.out_fd);
  c.pid = 0;
  return true;
}

std::vector<ChildEvent> ProcessSupervisor::Poll(std::chrono::milliseconds timeout) {
  std::vector<ChildEvent> events;
  std::vector<pollfd> fds;
  std::vector<Child*> owners;
  for (auto& c : children_) {
    if (c->out_fd >= 0) {
      fds.push_back(pollfd{c->out_fd, POLLIN, 0});
      owners.push_back(c.get());
    }
  }
  // Wake up in time for a due restart, and at least every 50 ms to notice exits of children whose
  // pipe stays open (a grandchild holding it).
  auto wait = std::min(timeout, std::chrono::milliseconds(50));
  const auto now0 = Now();
  for (auto& c : children_) {
    if (c->state == ChildState::kRestartPending) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(c->restart_at - now0);
      wait = std::max(std::chrono::milliseconds(0), std::min(wait, left));
    }
  }
  int rc = ::poll(fds.data(), fds.size(), static_cast<int>(wait.count()));
  if (rc > 0) {
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents != 0) DrainOutput(*owners[i], false);
    }
  }

  std::vector<Child*> just_exited;
  for (auto& cp : children_) {
    Child& c = *cp;
    if (c.state != ChildState::kRunning) continue;
    std::string how;
    const pid_t old_pid = c.pid;
    if (!Reap(c, false, &how)) continue;
    just_exited.push_back(&c);
    const auto now = Now();
    while (!c.exits.empty() && now - c.exits.front() > c.spec.restart_window) c.exits.pop_front();
    if (static_cast<int>(c.exits.size()) >= c.spec.max_restarts) {
      c.state = ChildState::kFailed;
      events.push_back({ChildEvent::Kind::kFailed, c.spec.name, old_pid,
                        how + "; restart budget spent (" + std::to_string(c.spec.max_restarts) + " within " +
                            std::to_string(c.spec.restart_window.count() / 1000) + "s)",
                        std::chrono::milliseconds(0)});
      continue;
    }
    auto backoff = c.spec.restart_backoff * (1LL << std::min<size_t>(c.exits.size(), 10));
    c.exits.push_back(now);
    c.state = ChildState::kRestartPending;
    c.restart_at = now + backoff;
    events.push_back({ChildEvent::Kind::kExited, c.spec.name, old_pid, how,
                      std::chrono::duration_cast<std::chrono::milliseconds>(backoff)});
  }

  const auto now = Now();
  for (auto& cp : children_) {
    Child& c = *cp;
    if (c.state != ChildState::kRestartPending || now < c.restart_at) continue;
    bool exited_now = false;
    for (Child* e : just_exited) exited_now = exited_now || e == &c;
    if (exited_now) continue;  // the owner sees the exit before the new process starts
    Status s = Spawn(c);
    if (!s.ok()) {
      c.state = ChildState::kFailed;
      events.push_back({ChildEvent::Kind::kFailed, c.spec.name, 0, "restart failed: " + s.ToString(),
                        std::chrono::milliseconds(0)});
      continue;
    }
    ++c.restarts;
    events.push_back({ChildEvent::Kind::kRestarted, c.spec.name, c.pid,
                      "restart " + std::to_string(c.restarts) + ", pid " + std::to_string(c.pid),
                      std::chrono::milliseconds(0)});
  }
  return events;
}

void ProcessSupervisor::Stop(std::string_view name, std::chrono::milliseconds grace) {
  Child* c = Find(name);
  if (c == nullptr) return;
  if (c->state != ChildState::kRunning) {
    if (c->state == ChildState::kRestartPending) c->state = ChildState::kStopped;
    return;
  }
  ::kill(c->pid, SIGTERM);
  const auto deadline = Clock::now() + grace;
  while (Clock::now() < deadline) {
    pollfd p{c->out_fd, POLLIN, 0};
    if (c->out_fd >= 0) {
      if (::poll(&p, 1, 10) > 0) DrainOutput(*c, false);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (Reap(*c, false, nullptr)) break;
  }
  if (c->pid > 0) {
    ::kill(c->pid, SIGKILL);
    Reap(*c, true, nullptr);
  }
  c->state = ChildState::kStopped;
}

void ProcessSupervisor::StopAll(std::chrono::milliseconds grace) {
  std::vector<Child*> running;
  for (auto& c : children_) {
    if (c->state == ChildState::kRestartPending) c->state = ChildState::kStopped;
    if (c->state == ChildState::kRunning && c->pid > 0) {
      ::kill(c->pid, SIGTERM);
      running.push_back(c.get());
    }
  }
  const auto deadline = Clock::now() + grace;
  while (!running.empty() && Clock::now() < deadline) {
    std::vector<pollfd> fds;
    for (Child* c : running) {
      if (c->out_fd >= 0) fds.push_back(pollfd{c->out_fd, POLLIN, 0});
    }
    if (fds.empty()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } else {
      ::poll(fds.data(), fds.size(), 10);
    }
    for (size_t i = 0; i < running.size();) {
      Child* c = running[i];
      DrainOutput(*c, false);
      if (Reap(*c, false, nullptr)) {
        c->state = ChildState::kStopped;
        running.erase(running.begin() + static_cast<ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
  }
  for (Child* c : running) {
    ::kill(c->pid, SIGKILL);
    Reap(*c, true, nullptr);
    c->state = ChildState::kStopped;
  }
}

bool ProcessSupervisor::Has(std::string_view name) const { return Find(name) != nullptr; }

pid_t ProcessSupervisor::Pid(std::string_view name) const {
  Child* c = Find(name);
  return c != nullptr && c->state == ChildState::kRunning ? c->pid : 0;
}

ChildState ProcessSupervisor::State(std::string_view name) const {
  Child* c = Find(name);
  return c != nullptr ? c->state : ChildState::kStopped;
}

int ProcessSupervisor::Restarts(std::string_view name) const {
  Child* c = Find(name);
  return c != nullptr ? c->restarts : 0;
}

std::vector<std::string> ProcessSupervisor::LastLines(std::string_view name) const {
  Child* c = Find(name);
  if (c == nullptr) return {};
  return {c->last_lines.begin(), c->last_lines.end()};
}

std::vector<pid_t> ProcessSupervisor::RunningPids() const {
  std::vector<pid_t> out;
  for (const auto& c : children_) {
    if (c->state == ChildState::kRunning && c->pid > 0) out.push_back(c->pid);
  }
  return out;
}

bool ProcessSupervisor::AnyFailed() const {
  for (const auto& c : children_) {
    if (c->state == ChildState::kFailed) return true;
  }
  return false;
}

}  // namespace kvmesh::cli
