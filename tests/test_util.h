// Helpers shared by the test programs.
#pragma once

#include <gtest/gtest.h>

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

}  // namespace xdrec::testing_util
