// Seeded synthetic multi-domain data: items with English titles built from topic words, users with latent
// tastes across topics, partial user overlap between domains and a popularity skew.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xdrec/dataset.h"

namespace xdrec {

struct SyntheticOptions {
  uint32_t n_users = 2000;
  std::vector<std::string> domains{"books", "films", "kitchen"};
  uint32_t items_per_domain = 500;
  uint32_t n_topics = 12;
  double mean_interactions = 25;  // per user per active domain
  double overlap = 0.4;           // fraction of users active in more than one domain
  double popularity_skew = 1.0;   // Zipf-like exponent of item popularity
  uint64_t seed = 42;
  int threads = 1;  // generation threads (0: all); the data does not depend on it
};

Dataset make_synthetic(const SyntheticOptions& opt);

// Keeps each interaction of domain `domain` with probability `keep` (seeded), the others all: a deliberately
// sparse domain (augmentation tests and benchmarks). Error for an unknown domain.
void thin_domain(Dataset& ds, const std::string& domain, double keep, uint64_t seed);

}  // namespace xdrec
