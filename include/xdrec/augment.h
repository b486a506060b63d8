// Data augmentation of a sparse domain: generated interactions for the users who have few (or no)
// interactions in one domain, added to the training matrix before another model is fitted. Three generators,
// so that the GAN has to earn its place against simple ones:
//   gan        CFGAN (model cfgan) generating the domain's items from the user's whole history; each
//   augmented
//              user gets the top `per_user` generated items they have not interacted with
//   itemknn    the top `per_user` items of item-based nearest neighbours of the user's history
//   popular    `per_user` items drawn by popularity (without replacement, seeded per user)
// Generated interactions are never evaluation data: an experiment evaluates on its real split and excludes
// only the real training interactions from the rankings.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "xdrec/common.h"
#include "xdrec/dataset.h"

namespace xdrec {

struct AugmentOptions {
  std::string by = "gan";    // gan | itemknn | popular
  std::string generator;     // the generator's model spec (cfgan / itemknn with their parameters)
  int domain = -1;           // the domain to augment (-1: every item)
  uint32_t per_user = 5;     // generated interactions per augmented user
  uint32_t max_history = 5;  // users with at most this many interactions in the domain are augmented
  uint32_t min_history = 1;  // ... and at least this many interactions in all (the generator's condition)
  float weight = 1.0f;       // value of a generated interaction
};

// "gan:per_user=10,max_history=3,domain=food,weight=0.5,epochs=100": the keys above (domain by name or
// index) are the augmenter's, the rest go to the generator model (cfgan for gan, itemknn for itemknn;
// popular takes none). Error for an unknown generator, an unknown domain or a bad value.
AugmentOptions parse_augment(const std::string& spec, const Dataset& ds);

struct AugmentReport {
  uint32_t users = 0;     // users augmented
  uint64_t added = 0;     // interactions added
  double seconds = 0;     // fitting the generator and generating
  std::string generator;  // the fitted generator's spec ("" for popular)
};

// The training matrix plus the generated interactions (an existing entry is never changed). item_domain: one
// entry per item (may be empty: one domain). Deterministic by seed, independent of the thread count.
Csr augment_interactions(const Csr& train, std::span<const uint16_t> item_domain, const AugmentOptions& opt,
                         uint64_t seed, int threads, AugmentReport* report = nullptr);

}  // namespace xdrec
