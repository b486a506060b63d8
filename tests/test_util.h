// Helpers shared by the test programs.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <string>

#include "xdrec/common.h"

namespace xdrec::testing_util {

// Success when f() throws xdrec::Error whose message contains every one of `parts`.
template <class F>
::testing::AssertionResult throws_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
  } catch (const Error& e) {
    const std::string what = e.what();
    for (auto& p : parts)
      if (what.find(p) == std::string::npos)
        return ::testing::AssertionFailure() << "message '" << what << "' lacks '" << p << "'";
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-xdrec exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

// A fixture with a fresh directory per test, `dir` (under the system's temporary directory, named by the
// prefix, the process id and the test's name), removed after the test.
template <const char* Prefix>
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() /
          (std::string(Prefix) + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::filesystem::path dir;
};

// The slow real-data checks run only with XDREC_SLOW_TESTS set (and not "0"), as `scripts/test --slow` does.
inline bool slow_tests_enabled() {
  const char* e = std::getenv("XDREC_SLOW_TESTS");
  return e && *e && std::string(e) != "0";
}

#ifdef XDREC_BINARY_DIR
// Runs the xdrec command line (XDREC_CLI, else the build's binary) with `args`; stdout and stderr together.
struct CliResult {
  int status;
  std::string out;
};
inline std::string cli_path() {
  const char* p = std::getenv("XDREC_CLI");
  return p ? p : std::string(XDREC_BINARY_DIR) + "/xdrec";
}
// `env`: assignments put before the command (e.g. "XDG_CACHE_HOME='/tmp/x' ").
inline CliResult run_cli(const std::string& args, const std::string& env = "") {
  const std::string cmd = env + cli_path() + " " + args + " 2>&1";
  FILE* f = popen(cmd.c_str(), "r");
  CliResult r{-1, ""};
  if (!f) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(f);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}
#endif

}  // namespace xdrec::testing_util

#define REQUIRE_SLOW_TESTS()                        \
  if (!::xdrec::testing_util::slow_tests_enabled()) \
  GTEST_SKIP() << "slow real-data check: run scripts/test --slow"
