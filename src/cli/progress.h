// A progress bar on standard error for long steps (shown only when stderr is a terminal).
#pragma once

#include <unistd.h>

#include <cstdio>
#include <string>

#include "xdrec/common.h"

namespace xdrec::cli {

inline ProgressFn progress_bar(bool enabled = true) {
  if (!enabled || !isatty(fileno(stderr))) return {};
  return [](size_t done, size_t total, const std::string& label) {
    const int width = 30;
    const double frac = total ? double(done) / double(total) : 1.0;
    const int filled = static_cast<int>(frac * width);
    std::fprintf(stderr, "\r%-18s [%.*s%*s] %5.1f%%", label.c_str(), filled, "##############################",
                 width - filled, "", 100.0 * frac);
    if (done >= total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  };
}

}  // namespace xdrec::cli
