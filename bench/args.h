// The command line shared by the benchmark programs: OUT.json [DATA_ROOT] plus each program's own options.
#pragma once

#include <cstdio>
#include <functional>
#include <string>

namespace xdrec::bench {

struct BenchArgs {
  std::string out, root = "../shared/data";
  bool quick = false;
};

// Reads argv into `b`: `--quick`, the two positional arguments, and the program's options through
// option(name, value): it returns true when it took `name`, calling value() to take the next argument (null
// when there is none). On a bad or missing argument prints `usage` and returns false.
inline bool parse_bench_args(
    int argc, char** argv, const char* usage, BenchArgs& b,
    const std::function<bool(const std::string&, const std::function<const char*()>&)>& option = {}) {
  bool have_root = false;
  for (int k = 1; k < argc; ++k) {
    const std::string a = argv[k];
    auto value = [&]() -> const char* { return k + 1 < argc ? argv[++k] : nullptr; };
    if (a == "--quick") {
      b.quick = true;
    } else if (option && a.size() > 1 && a[0] == '-' && option(a, value)) {
      continue;
    } else if (a[0] != '-' && b.out.empty()) {
      b.out = a;
    } else if (a[0] != '-' && !have_root) {
      b.root = a;
      have_root = true;
    } else {
      std::fputs(usage, stderr);
      return false;
    }
  }
  if (b.out.empty()) {
    std::fputs(usage, stderr);
    return false;
  }
  return true;
}

}  // namespace xdrec::bench
