// xdrec privacy epsilon / xdrec privacy noise: the RDP accountant (privacy.h) on the command line.
#include <cmath>
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "xdrec/privacy.h"

namespace xdrec::cli {

namespace {

// An order as it was given: "10" for an integer, else up to 12 significant digits.
std::string order_str(double a) {
  char buf[64];
  if (a == std::floor(a) && std::abs(a) < 1e15)
    std::snprintf(buf, sizeof buf, "%.0f", a);
  else
    std::snprintf(buf, sizeof buf, "%.12g", a);
  return buf;
}

}  // namespace

// ε first on the line (the first number printed), then the order that attains it.
int cmd_privacy_epsilon(const PrivacyArgs& a) {
  const privacy::Conversion conv = privacy::parse_conversion(a.conversion);
  const privacy::Epsilon e = privacy::compute_epsilon(a.q, a.noise, a.steps, a.delta, conv, a.orders);
  std::printf("epsilon %.12g order %s conversion %s\n", e.epsilon, order_str(e.order).c_str(),
              privacy::conversion_name(conv));
  return 0;
}

// σ first on the line, then the ε it gives and its order.
int cmd_privacy_noise(const PrivacyArgs& a) {
  const privacy::Conversion conv = privacy::parse_conversion(a.conversion);
  const double sigma = privacy::noise_for_epsilon(a.q, a.steps, a.delta, a.epsilon, conv, a.orders);
  const privacy::Epsilon e = privacy::compute_epsilon(a.q, sigma, a.steps, a.delta, conv, a.orders);
  std::printf("noise %.12g epsilon %.12g order %s conversion %s\n", sigma, e.epsilon,
              order_str(e.order).c_str(), privacy::conversion_name(conv));
  return 0;
}

}  // namespace xdrec::cli
