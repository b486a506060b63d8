// Augmentation of a sparse domain (include/xdrec/augment.h).
#include "xdrec/augment.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "xdrec/pipeline.h"
#include "xdrec/rank.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

uint32_t parse_count(const std::string& key, const std::string& v) {
  size_t pos = 0;
  long long x = -1;
  try {
    x = std::stoll(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  check(pos == v.size() && x >= 0 && x <= (1LL << 30),
        "augment: " + key + " must be a whole number from 0 to 2^30, got '" + v + "'");
  return uint32_t(x);
}

}  // namespace

AugmentOptions parse_augment(const std::string& spec, const Dataset& ds) {
  const Spec s = Spec::parse(spec);
  AugmentOptions o;
  o.by = s.name;
  check(o.by == "gan" || o.by == "itemknn" || o.by == "popular",
        "augment: unknown generator '" + o.by + "' (gan, itemknn or popular)");
  Spec model{o.by == "gan" ? "cfgan" : "itemknn", {}};
  for (const auto& [k, v] : s.values) {
    if (k == "per_user") {
      o.per_user = parse_count(k, v);
    } else if (k == "max_history") {
      o.max_history = parse_count(k, v);
    } else if (k == "min_history") {
      o.min_history = parse_count(k, v);
    } else if (k == "weight") {
      char* end = nullptr;
      o.weight = std::strtof(v.c_str(), &end);
      check(end && *end == '\0' && std::isfinite(o.weight) && o.weight > 0,
            "augment: weight must be a positive number, got '" + v + "'");
    } else if (k == "domain") {
      const bool numeric = !v.empty() && std::all_of(v.begin(), v.end(),
                                                     [](unsigned char ch) { return std::isdigit(ch) != 0; });
      o.domain = numeric ? int(parse_count(k, v)) : domain_index(ds, v);
      check(o.domain < int(ds.n_domains()),
            "augment: domain " + v + " is out of range (" + std::to_string(ds.n_domains()) + " domains)");
    } else {
      check(o.by != "popular", "augment: popular takes no parameter '" + k + "'");
      model.values[k] = v;
    }
  }
  check(!model.values.contains("domain"), "augment: the generator's domain is the augmenter's domain");
  if (o.by != "popular") o.generator = model.str();
  return o;
}

Csr augment_interactions(const Csr& train, std::span<const uint16_t> item_domain, const AugmentOptions& opt,
                         uint64_t seed, int threads, AugmentReport* report) {
  Timer t;
  const uint32_t nu = train.n_rows, ni = train.n_cols;
  check(item_domain.empty() || item_domain.size() == ni,
        "augment: item domains have " + std::to_string(item_domain.size()) + " entries but the matrix has " +
            std::to_string(ni) + " items");
  auto in_domain = [&](uint32_t i) {
    return opt.domain < 0 || (item_domain.empty() ? opt.domain == 0 : item_domain[i] == uint16_t(opt.domain));
  };
  // The users to augment.
  std::vector<uint32_t> users;
  for (uint32_t u = 0; u < nu; ++u) {
    uint32_t total = 0, here = 0;
    for (uint64_t p = train.indptr[u]; p < train.indptr[u + 1]; ++p) {
      if (train.values[p] <= 0) continue;
      ++total;
      here += in_domain(train.indices[p]) ? 1 : 0;
    }
    if (total >= std::max(1u, opt.min_history) && here <= opt.max_history) users.push_back(u);
  }
  std::vector<std::vector<uint32_t>> added(users.size());
  AugmentReport rep;
  if (opt.per_user > 0 && !users.empty()) {
    if (opt.by == "popular") {
      std::vector<double> pop(ni, 0.0);
      for (uint64_t p = 0; p < train.nnz(); ++p)
        if (train.values[p] > 0) pop[train.indices[p]] += 1.0;
      parallel_for(users.size(), threads, 64, [&](size_t b, size_t e) {
        for (size_t k = b; k < e; ++k) {
          const auto seen = train.row_indices(users[k]);
          std::vector<uint32_t> cand;
          std::vector<double> w;
          for (uint32_t i = 0; i < ni; ++i)
            if (in_domain(i) && pop[i] > 0 && !std::binary_search(seen.begin(), seen.end(), i)) {
              cand.push_back(i);
              w.push_back(pop[i]);
            }
          // Weighted sampling without replacement: the largest u^(1/w) keys (Efraimidis-Spirakis).
          Rng rng(seed, 0xA5A5 + users[k]);
          std::vector<std::pair<double, uint32_t>> keys;
          for (size_t c = 0; c < cand.size(); ++c)
            keys.emplace_back(std::log(std::max(rng.uniform(), 1e-300)) / w[c], cand[c]);
          const size_t n = std::min<size_t>(opt.per_user, keys.size());
          std::partial_sort(keys.begin(), keys.begin() + int64_t(n), keys.end(),
                            [](const auto& a, const auto& b) {
                              return a.first > b.first || (a.first == b.first && a.second < b.second);
                            });
          for (size_t c = 0; c < n; ++c) added[k].push_back(keys[c].second);
        }
      });
    } else {
      std::string spec = opt.generator.empty() ? (opt.by == "gan" ? "cfgan" : "itemknn") : opt.generator;
      if (opt.by == "gan" && opt.domain >= 0)
        spec += std::string(spec.find(':') == std::string::npos ? ":" : ",") +
                "domain=" + std::to_string(opt.domain);
      auto model = create_model(spec);
      FitContext ctx;
      ctx.threads = threads;
      ctx.seed = seed;
      ctx.item_domain = item_domain;
      model->fit(train, ctx);
      rep.generator = model->spec();
      Matrix scores;
      constexpr size_t kBlock = 256;
      for (size_t b = 0; b < users.size(); b += kBlock) {
        const std::span<const uint32_t> bu(users.data() + b, std::min(kBlock, users.size() - b));
        model->score(bu, scores, threads);
        for (size_t k = 0; k < bu.size(); ++k) {
          const float* s = scores.row(k);
          const auto seen = train.row_indices(bu[k]);
          std::vector<uint32_t> cand;
          for (uint32_t i = 0; i < ni; ++i)
            if (in_domain(i) && !std::binary_search(seen.begin(), seen.end(), i) && std::isfinite(s[i]))
              cand.push_back(i);
          const size_t n = std::min<size_t>(opt.per_user, cand.size());
          // Highest scores first, ties by item index (a generator that cannot tell items apart adds the
          // first ones; the downstream model's evaluation does not depend on that order).
          std::partial_sort(cand.begin(), cand.begin() + int64_t(n), cand.end(),
                            [&](uint32_t x, uint32_t y) { return s[x] > s[y] || (s[x] == s[y] && x < y); });
          added[b + k].assign(cand.begin(), cand.begin() + int64_t(n));
        }
      }
    }
  }
  // The merged matrix.
  std::vector<uint32_t> rows, cols;
  std::vector<float> vals;
  rows.reserve(train.nnz());
  for (uint32_t u = 0; u < nu; ++u)
    for (uint64_t p = train.indptr[u]; p < train.indptr[u + 1]; ++p) {
      rows.push_back(u);
      cols.push_back(train.indices[p]);
      vals.push_back(train.values[p]);
    }
  for (size_t k = 0; k < users.size(); ++k) {
    if (!added[k].empty()) ++rep.users;
    for (uint32_t i : added[k]) {
      rows.push_back(users[k]);
      cols.push_back(i);
      vals.push_back(opt.weight);
      ++rep.added;
    }
  }
  rep.seconds = t.seconds();
  if (report) *report = rep;
  return Csr::from_triplets(nu, ni, rows, cols, vals);
}

}  // namespace xdrec
