// Helpers for the data module's tests: a temporary directory removed at the end, small file writers.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "xdrec/common.h"

namespace xdrec::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "xdrec-data-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw Error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }
  // Writes bytes exactly as given (no newline added) and returns the path.
  std::string write(const std::string& name, const std::string& bytes) const {
    const std::string p = file(name);
    std::filesystem::create_directories(std::filesystem::path(p).parent_path());
    std::ofstream f(p, std::ios::binary);
    f << bytes;
    return p;
  }

 private:
  std::string path_;
};

inline std::string shared_data(const std::string& sub) {
  return std::string(XDREC_SHARED_DATA) + "/" + sub;
}
inline bool have_shared(const std::string& sub) {
  return std::filesystem::exists(shared_data(sub));
}

}  // namespace xdrec::testing
