// The MovieLens 100k gates' data: the shared data set (XDREC_SHARED_DATA) on the random split of the
// compression, pruning and item-code gates (test 0.2, seed 42), with its train and test matrices.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "xdrec/readers.h"
#include "xdrec/split.h"

namespace xdrec::testing_util {

struct Ml100kSplit {
  Dataset ds;
  Split split;
  Csr train, test;
};

inline std::string ml100k_path() {
  return std::string(XDREC_SHARED_DATA) + "/movielens_ml-100k";
}

// Null when the data set is not there (the caller skips).
inline std::unique_ptr<Ml100kSplit> load_ml100k_split() {
  if (!std::filesystem::exists(ml100k_path())) return nullptr;
  auto m = std::make_unique<Ml100kSplit>();
  m->ds = read_dataset(ml100k_path());
  SplitOptions so;
  so.test_ratio = 0.2;
  so.seed = 42;
  m->split = split_random(m->ds, so);
  m->train = m->ds.user_item_matrix(m->split.train);
  m->test = m->ds.user_item_matrix(m->split.test);
  return m;
}

}  // namespace xdrec::testing_util
