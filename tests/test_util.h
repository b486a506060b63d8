// Helpers shared by the test programs.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
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

// The slow real-data checks run only with XDREC_SLOW_TESTS set (and not "0"), as `scripts/test --slow` does.
inline bool slow_tests_enabled() {
  const char* e = std::getenv("XDREC_SLOW_TESTS");
  return e && *e && std::string(e) != "0";
}

}  // namespace xdrec::testing_util

#define REQUIRE_SLOW_TESTS()                         \
  if (!::xdrec::testing_util::slow_tests_enabled()) \
  GTEST_SKIP() << "slow real-data check: run scripts/test --slow"
