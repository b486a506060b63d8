// Isolated runs (a forked worker per task, with a time-out), memory sampling and the machine description.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "xdrec/pipeline.h"

namespace xdrec {

std::optional<nlohmann::json> run_isolated(const std::function<nlohmann::json()>& work, bool isolate,
                                           int timeout_seconds, std::string& error) {
  if (!isolate) {
    try {
      return work();
    } catch (const std::exception& e) {
      error = e.what();
      return std::nullopt;
    }
  }
  int fd[2];
  if (pipe(fd) != 0) throw Error(std::string("pipe: ") + std::strerror(errno));
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) throw Error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    close(fd[0]);
    nlohmann::json j;
    try {
      j["result"] = work();
    } catch (const std::exception& e) {
      j["error"] = e.what();
    }
    const std::string msg = j.dump();
    size_t off = 0;
    while (off < msg.size()) {
      const ssize_t w = write(fd[1], msg.data() + off, msg.size() - off);
      if (w <= 0) break;
      off += size_t(w);
    }
    close(fd[1]);
    std::fflush(stdout);
    _exit(0);
  }
  close(fd[1]);
  std::string msg;
  char buf[65536];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  bool timed_out = false;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    pollfd pfd{fd[0], POLLIN, 0};
    const int r = poll(&pfd, 1, int(std::min<int64_t>(left.count(), 1000)));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    const ssize_t n = read(fd[0], buf, sizeof buf);
    if (n <= 0) break;
    msg.append(buf, size_t(n));
  }
  close(fd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    error = "timed out after " + std::to_string(timeout_seconds) + " s";
    return std::nullopt;
  }
  if (WIFSIGNALED(status)) {
    error = std::string("crashed (signal ") + std::to_string(WTERMSIG(status)) + ": " +
            strsignal(WTERMSIG(status)) + ")";
    return std::nullopt;
  }
  try {
    nlohmann::json j = nlohmann::json::parse(msg);
    if (j.contains("error")) {
      error = j["error"].get<std::string>();
      return std::nullopt;
    }
    return j["result"];
  } catch (const std::exception&) {
    error = "the worker sent no result (exit status " + std::to_string(WEXITSTATUS(status)) + ")";
    return std::nullopt;
  }
}

double current_rss_mb() {
  std::ifstream f("/proc/self/statm");
  size_t pages = 0, resident = 0;
  if (!(f >> pages >> resident)) return 0;
  return double(resident) * double(sysconf(_SC_PAGESIZE)) / double(1 << 20);
}

// Samples the resident set every 5 ms on a thread of its own (the kernel's high-water mark cannot be reset,
// so it would report the largest fit so far).
struct RssSampler::Impl {
  double base = current_rss_mb();
  std::atomic<double> peak{base};
  std::atomic<bool> stop{false};
  std::thread thread;
};

RssSampler::RssSampler() : impl_(std::make_unique<Impl>()) {
  Impl* p = impl_.get();
  p->thread = std::thread([p] {
    while (!p->stop.load()) {
      const double r = current_rss_mb();
      double cur = p->peak.load();
      while (r > cur && !p->peak.compare_exchange_weak(cur, r)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
}

RssSampler::~RssSampler() {
  stop();
}

double RssSampler::stop() {
  if (impl_->thread.joinable()) {
    impl_->stop.store(true);
    impl_->thread.join();
    const double r = current_rss_mb();
    if (r > impl_->peak.load()) impl_->peak.store(r);
  }
  return std::max(0.0, impl_->peak.load() - impl_->base);
}

std::string machine_description() {
  std::string model, flags;
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    if (model.empty() && line.rfind("model name", 0) == 0) model = line.substr(line.find(':') + 2);
    if (flags.empty() && line.rfind("flags", 0) == 0)
      flags = line.find("avx512f") != std::string::npos ? ", AVX-512" : ", no AVX-512";
  }
  const double mem_gb = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE)) / double(1ULL << 30);
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s%s, %u cores, %.0f GiB", model.c_str(), flags.c_str(),
                std::thread::hardware_concurrency(), mem_gb);
  return buf;
}

}  // namespace xdrec
