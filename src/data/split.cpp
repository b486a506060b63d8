#include "xdrec/split.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <unordered_set>

namespace xdrec {

namespace {

constexpr uint8_t kTrain = 0, kVal = 1, kTest = 2;

size_t floor_count(double n, double ratio) {
  return static_cast<size_t>(std::floor(n * ratio + 1e-9));
}

std::string fmt_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

void check_ratio(double r, const char* name, bool allow_one = false) {
  if (!(r >= 0.0 && (allow_one ? r <= 1.0 : r < 1.0)))
    throw Error(std::string("split: ") + name + " = " + fmt_double(r) + " is out of range [0, " +
                (allow_one ? "1]" : "1)"));
}

// Interaction indices grouped by user, input order kept within each user.
struct ByUser {
  std::vector<uint64_t> start;
  std::vector<size_t> order;
  explicit ByUser(const Dataset& ds) : start(size_t(ds.n_users()) + 1, 0), order(ds.interactions.size()) {
    for (const auto& x : ds.interactions) ++start[x.user + 1];
    for (size_t u = 0; u < ds.n_users(); ++u) start[u + 1] += start[u];
    std::vector<uint64_t> pos(start.begin(), start.end() - 1);
    for (size_t k = 0; k < ds.interactions.size(); ++k) order[pos[ds.interactions[k].user]++] = k;
  }
};

Split assemble(const Dataset& ds, const std::vector<uint8_t>& part, std::string protocol) {
  Split s;
  s.protocol = std::move(protocol);
  size_t c[3] = {0, 0, 0};
  for (uint8_t p : part) ++c[p];
  s.train.reserve(c[kTrain]);
  s.validation.reserve(c[kVal]);
  s.test.reserve(c[kTest]);
  for (size_t k = 0; k < part.size(); ++k) {
    const Interaction& x = ds.interactions[k];
    (part[k] == kTrain ? s.train : part[k] == kVal ? s.validation : s.test).push_back(x);
  }
  s.cold_user.assign(ds.n_users(), 0);
  s.cold_item.assign(ds.n_items(), 0);
  return s;
}

void check_dataset(const Dataset& ds) {
  for (size_t k = 0; k < ds.interactions.size(); ++k)
    if (ds.interactions[k].user >= ds.n_users() || ds.interactions[k].item >= ds.n_items())
      throw Error("split: interaction " + std::to_string(k) + " refers to a user or item out of range");
}

std::string pair_name(const Dataset& ds, const Interaction& x) {
  return "(user '" + ds.users.name(x.user) + "', item '" + ds.items.name(x.item) + "')";
}

uint64_t pair_key(uint32_t u, uint32_t i) {
  return (uint64_t(u) << 32) | i;
}

std::vector<uint64_t> sorted_keys(const std::vector<Interaction>& v) {
  std::vector<uint64_t> keys(v.size());
  for (size_t k = 0; k < v.size(); ++k) keys[k] = pair_key(v[k].user, v[k].item);
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

}  // namespace

Split split_random(const Dataset& ds, const SplitOptions& opt) {
  check_ratio(opt.test_ratio, "test ratio");
  check_ratio(opt.val_ratio, "validation ratio");
  check_dataset(ds);
  const ByUser by(ds);
  std::vector<uint8_t> part(ds.interactions.size(), kTrain);
  std::vector<std::pair<uint32_t, size_t>> rows;  // (item, interaction)
  std::vector<size_t> group_start;
  for (uint32_t u = 0; u < ds.n_users(); ++u) {
    rows.clear();
    for (uint64_t p = by.start[u]; p < by.start[u + 1]; ++p)
      rows.emplace_back(ds.interactions[by.order[p]].item, by.order[p]);
    if (rows.empty()) continue;
    std::sort(rows.begin(), rows.end());
    group_start.clear();  // distinct items, in item order
    for (size_t k = 0; k < rows.size(); ++k)
      if (k == 0 || rows[k].first != rows[k - 1].first) group_start.push_back(k);
    const size_t n = group_start.size();
    group_start.push_back(rows.size());
    std::vector<size_t> perm(n);
    for (size_t g = 0; g < n; ++g) perm[g] = g;
    Rng rng(opt.seed, u);
    for (size_t g = n; g > 1; --g) std::swap(perm[g - 1], perm[rng.below(g)]);
    const size_t n_test = floor_count(double(n), opt.test_ratio);
    const size_t n_val = floor_count(double(n - n_test), opt.val_ratio);
    for (size_t j = 0; j < n_test + n_val && j < n; ++j) {
      const size_t g = perm[j];
      const uint8_t label = j < n_test ? kTest : kVal;
      for (size_t k = group_start[g]; k < group_start[g + 1]; ++k) part[rows[k].second] = label;
    }
  }
  Split s = assemble(ds, part,
                     "random:test=" + fmt_double(opt.test_ratio) + ",val=" + fmt_double(opt.val_ratio) +
                         ",seed=" + std::to_string(opt.seed));
  check_no_leakage(ds, s);
  return s;
}

Split split_leave_last_out(const Dataset& ds, const SplitOptions& opt) {
  check_ratio(opt.val_ratio, "validation ratio");
  check_dataset(ds);
  for (size_t k = 0; k < ds.interactions.size(); ++k)
    if (!ds.interactions[k].has_timestamp())
      throw Error("leave-last-out needs timestamps, but interaction " + std::to_string(k) + " " +
                  pair_name(ds, ds.interactions[k]) + " has none (use the random split instead)");
  const ByUser by(ds);
  std::vector<uint8_t> part(ds.interactions.size(), kTrain);
  std::vector<size_t> idx;
  for (uint32_t u = 0; u < ds.n_users(); ++u) {
    idx.assign(by.order.begin() + by.start[u], by.order.begin() + by.start[u + 1]);
    if (idx.size() < 2) continue;
    std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
      return ds.interactions[a].timestamp < ds.interactions[b].timestamp;
    });
    // Distinct items, needed to keep at least one item in train.
    std::vector<uint32_t> items;
    for (size_t k : idx) items.push_back(ds.interactions[k].item);
    std::sort(items.begin(), items.end());
    const size_t distinct = std::unique(items.begin(), items.end()) - items.begin();
    if (distinct < 2) continue;
    const uint32_t test_item = ds.interactions[idx.back()].item;
    int64_t val_item = -1;
    if (opt.val_ratio > 0 && distinct >= 3) {
      for (size_t j = idx.size(); j-- > 0;)
        if (ds.interactions[idx[j]].item != test_item) {
          val_item = ds.interactions[idx[j]].item;
          break;
        }
    }
    for (size_t k : idx) {
      const uint32_t it = ds.interactions[k].item;
      if (it == test_item)
        part[k] = kTest;
      else if (static_cast<int64_t>(it) == val_item)
        part[k] = kVal;
    }
  }
  Split s = assemble(ds, part, "leave-last-out:val=" + fmt_double(opt.val_ratio));
  check_no_leakage(ds, s);
  return s;
}

Split split_cold_users(const Dataset& ds, const SplitOptions& opt) {
  check_ratio(opt.cold_ratio, "cold ratio", true);
  check_ratio(opt.val_ratio, "validation ratio");
  check_dataset(ds);
  if (opt.target_domain < 0 || opt.target_domain >= static_cast<int>(ds.n_domains()))
    throw Error("cold-users split needs a target domain (target=<name or index>); the dataset has " +
                std::to_string(ds.n_domains()) + " domain(s)");
  if (ds.n_domains() < 2) throw Error("cold-users split needs at least two domains");
  const uint16_t target = static_cast<uint16_t>(opt.target_domain);
  std::vector<uint8_t> in_target(ds.n_users(), 0), in_other(ds.n_users(), 0);
  for (const auto& x : ds.interactions) {
    if (ds.item_domain[x.item] == target)
      in_target[x.user] = 1;
    else
      in_other[x.user] = 1;
  }
  std::vector<uint32_t> eligible;
  for (uint32_t u = 0; u < ds.n_users(); ++u)
    if (in_target[u] && in_other[u]) eligible.push_back(u);
  Rng rng(opt.seed, 0x636f6c64);  // "cold"
  for (size_t k = eligible.size(); k > 1; --k) std::swap(eligible[k - 1], eligible[rng.below(k)]);
  const size_t n_cold = floor_count(double(eligible.size()), opt.cold_ratio);
  const size_t n_val = opt.val_ratio > 0 ? n_cold / 2 : 0;
  std::vector<uint8_t> label(ds.n_users(), kTrain);
  for (size_t k = 0; k < n_cold; ++k) label[eligible[k]] = k < n_val ? kVal : kTest;
  std::vector<uint8_t> part(ds.interactions.size(), kTrain);
  for (size_t k = 0; k < ds.interactions.size(); ++k) {
    const auto& x = ds.interactions[k];
    if (ds.item_domain[x.item] == target) part[k] = label[x.user];
  }
  Split s = assemble(ds, part,
                     "cold-users:target=" + ds.domains.name(target) + ",cold=" + fmt_double(opt.cold_ratio) +
                         ",val=" + fmt_double(opt.val_ratio) + ",seed=" + std::to_string(opt.seed));
  s.target_domain = opt.target_domain;
  for (size_t k = 0; k < n_cold; ++k) s.cold_user[eligible[k]] = 1;
  check_no_leakage(ds, s);
  return s;
}

Split split_cold_items(const Dataset& ds, const SplitOptions& opt) {
  check_ratio(opt.cold_ratio, "cold ratio", true);
  check_ratio(opt.val_ratio, "validation ratio");
  check_dataset(ds);
  if (opt.target_domain >= static_cast<int>(ds.n_domains()))
    throw Error("cold-items split: target domain " + std::to_string(opt.target_domain) + " does not exist (" +
                std::to_string(ds.n_domains()) + " domains)");
  std::vector<uint8_t> used(ds.n_items(), 0);
  for (const auto& x : ds.interactions) used[x.item] = 1;
  std::vector<uint32_t> candidates;
  for (uint32_t i = 0; i < ds.n_items(); ++i)
    if (used[i] && (opt.target_domain < 0 || ds.item_domain[i] == opt.target_domain)) candidates.push_back(i);
  Rng rng(opt.seed, 0x6974656d);  // "item"
  for (size_t k = candidates.size(); k > 1; --k) std::swap(candidates[k - 1], candidates[rng.below(k)]);
  const size_t n_test = floor_count(double(candidates.size()), opt.cold_ratio);
  const size_t n_val = floor_count(double(candidates.size() - n_test), opt.val_ratio);
  std::vector<uint8_t> label(ds.n_items(), kTrain);
  for (size_t k = 0; k < n_test + n_val && k < candidates.size(); ++k)
    label[candidates[k]] = k < n_test ? kTest : kVal;
  std::vector<uint8_t> part(ds.interactions.size());
  for (size_t k = 0; k < ds.interactions.size(); ++k) part[k] = label[ds.interactions[k].item];
  std::string protocol = "cold-items:cold=" + fmt_double(opt.cold_ratio) +
                         ",val=" + fmt_double(opt.val_ratio) + ",seed=" + std::to_string(opt.seed);
  if (opt.target_domain >= 0) protocol += ",target=" + ds.domains.name(opt.target_domain);
  Split s = assemble(ds, part, protocol);
  s.target_domain = opt.target_domain;
  for (size_t k = 0; k < n_test + n_val && k < candidates.size(); ++k) s.cold_item[candidates[k]] = 1;
  check_no_leakage(ds, s);
  return s;
}

Split split_fixed(const Dataset& ds) {
  check_dataset(ds);
  if (ds.fixed_split.empty())
    throw Error("dataset '" + ds.name + "' has no split of its own (choose random, leave-last-out, ...)");
  if (ds.fixed_split.size() != ds.interactions.size())
    throw Error("dataset '" + ds.name + "': fixed split has " + std::to_string(ds.fixed_split.size()) +
                " entries for " + std::to_string(ds.interactions.size()) + " interactions");
  for (uint8_t p : ds.fixed_split)
    if (p > kTest)
      throw Error("dataset '" + ds.name + "': fixed split value " + std::to_string(p) + " (expected 0-2)");
  Split s = assemble(ds, ds.fixed_split, "fixed");
  check_no_leakage(ds, s);
  return s;
}

Split make_split(const Dataset& ds, const std::string& protocol, const SplitOptions& opt_in) {
  SplitOptions opt = opt_in;
  const size_t colon = protocol.find(':');
  const std::string name = protocol.substr(0, colon);
  if (colon != std::string::npos) {
    const std::string rest = protocol.substr(colon + 1);
    size_t b = 0;
    while (b <= rest.size()) {
      size_t e = rest.find(',', b);
      if (e == std::string::npos) e = rest.size();
      const std::string kv = rest.substr(b, e - b);
      b = e + 1;
      if (kv.empty()) continue;
      const size_t eq = kv.find('=');
      if (eq == std::string::npos)
        throw Error("split '" + protocol + "': expected key=value, got '" + kv + "'");
      const std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
      auto number = [&]() {
        size_t used = 0;
        double v = 0;
        try {
          v = std::stod(value, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used != value.size() || value.empty() || !std::isfinite(v))
          throw Error("split '" + protocol + "': " + key + " must be a number, got '" + value + "'");
        return v;
      };
      if (key == "test") {
        opt.test_ratio = number();
      } else if (key == "val") {
        opt.val_ratio = number();
      } else if (key == "cold") {
        opt.cold_ratio = number();
      } else if (key == "seed") {
        const double v = number();
        if (v < 0 || v != std::floor(v) || v > 9.007199254740992e15)
          throw Error("split '" + protocol + "': seed must be a non-negative integer, got '" + value + "'");
        opt.seed = static_cast<uint64_t>(v);
      } else if (key == "target") {
        if (auto d = ds.domains.find(value)) {
          opt.target_domain = static_cast<int>(*d);
        } else {
          std::string names;
          for (const auto& n : ds.domains.names()) names += (names.empty() ? "" : ", ") + n;
          bool numeric = !value.empty() && value.find_first_not_of("0123456789") == std::string::npos;
          if (!numeric || std::stoul(value) >= ds.n_domains())
            throw Error("split '" + protocol + "': unknown target domain '" + value + "' (domains: " + names +
                        ")");
          opt.target_domain = static_cast<int>(std::stoul(value));
        }
      } else {
        throw Error("split '" + protocol + "': unknown option '" + key +
                    "' (expected test, val, seed, target or cold)");
      }
    }
  }
  if (name == "random") return split_random(ds, opt);
  if (name == "leave-last-out" || name == "loo") return split_leave_last_out(ds, opt);
  if (name == "cold-users") return split_cold_users(ds, opt);
  if (name == "cold-items") return split_cold_items(ds, opt);
  if (name == "fixed") return split_fixed(ds);
  throw Error("unknown split protocol '" + name +
              "' (expected random, leave-last-out, cold-users, cold-items or fixed)");
}

void check_no_leakage(const Dataset& ds, const Split& split) {
  const uint32_t nu = ds.n_users(), ni = ds.n_items();
  if (!split.cold_user.empty() && split.cold_user.size() != nu)
    throw Error("split: cold_user has " + std::to_string(split.cold_user.size()) + " entries for " +
                std::to_string(nu) + " users");
  if (!split.cold_item.empty() && split.cold_item.size() != ni)
    throw Error("split: cold_item has " + std::to_string(split.cold_item.size()) + " entries for " +
                std::to_string(ni) + " items");
  for (const auto* part : {&split.train, &split.validation, &split.test})
    for (const auto& x : *part)
      if (x.user >= nu || x.item >= ni)
        throw Error("split: an interaction refers to a user or item out of range");

  // Train items of each user, sorted (counting sort by user, then a sort per row).
  std::vector<uint64_t> start(size_t(nu) + 1, 0);
  for (const auto& x : split.train) ++start[x.user + 1];
  for (size_t u = 0; u < nu; ++u) start[u + 1] += start[u];
  std::vector<uint32_t> items(split.train.size());
  {
    std::vector<uint64_t> pos(start.begin(), start.end() - 1);
    for (const auto& x : split.train) items[pos[x.user]++] = x.item;
  }
  for (size_t u = 0; u < nu; ++u) std::sort(items.begin() + start[u], items.begin() + start[u + 1]);
  auto in_train = [&](const Interaction& x) {
    return std::binary_search(items.begin() + start[x.user], items.begin() + start[x.user + 1], x.item);
  };
  for (const auto& x : split.test)
    if (in_train(x)) throw Error("leakage: test pair " + pair_name(ds, x) + " also appears in train");
  for (const auto& x : split.validation)
    if (in_train(x)) throw Error("leakage: validation pair " + pair_name(ds, x) + " also appears in train");
  if (!split.validation.empty() && !split.test.empty()) {
    const std::vector<uint64_t> val = sorted_keys(split.validation);
    for (const auto& x : split.test)
      if (std::binary_search(val.begin(), val.end(), pair_key(x.user, x.item)))
        throw Error("leakage: test pair " + pair_name(ds, x) + " also appears in validation");
  }
  const bool any_cold_user =
      std::find(split.cold_user.begin(), split.cold_user.end(), 1) != split.cold_user.end();
  if (any_cold_user && split.target_domain >= 0) {
    for (const auto& x : split.train)
      if (split.cold_user[x.user] && ds.item_domain[x.item] == split.target_domain)
        throw Error("leakage: cold user '" + ds.users.name(x.user) + "' has a target-domain (" +
                    ds.domains.name(split.target_domain) + ") interaction in train (item '" +
                    ds.items.name(x.item) + "')");
  }
  const bool any_cold_item =
      std::find(split.cold_item.begin(), split.cold_item.end(), 1) != split.cold_item.end();
  if (any_cold_item) {
    for (const auto& x : split.train)
      if (split.cold_item[x.item])
        throw Error("leakage: cold item '" + ds.items.name(x.item) + "' appears in train (user '" +
                    ds.users.name(x.user) + "')");
  }
}

std::vector<ItemText> item_text_with_tags(const Dataset& ds, const Split& split, size_t max_tags_per_item) {
  std::vector<ItemText> out = ds.item_text;
  if (ds.tags.empty() || max_tags_per_item == 0) return out;
  std::vector<uint64_t> held = sorted_keys(split.test);
  {
    const std::vector<uint64_t> v = sorted_keys(split.validation);
    held.insert(held.end(), v.begin(), v.end());
    std::sort(held.begin(), held.end());
  }
  // Count (item, tag) over fair assignments.
  std::map<std::pair<uint32_t, uint32_t>, uint32_t> count;
  for (const TagAssignment& a : ds.tags) {
    if (a.item >= ds.n_items() || a.tag >= ds.tag_names.size()) continue;
    if (std::binary_search(held.begin(), held.end(), pair_key(a.user, a.item))) continue;
    ++count[{a.item, a.tag}];
  }
  std::vector<std::pair<uint32_t, uint32_t>> row;  // (count, tag) of one item
  auto flush = [&](uint32_t item) {
    std::sort(row.begin(), row.end(), [&](const auto& a, const auto& b) {
      if (a.first != b.first) return a.first > b.first;
      return ds.tag_names.name(a.second) < ds.tag_names.name(b.second);
    });
    auto& cats = out[item].categories;
    size_t added = 0;
    for (const auto& [c, t] : row) {
      if (added >= max_tags_per_item) break;
      const std::string& name = ds.tag_names.name(t);
      if (std::find(cats.begin(), cats.end(), name) != cats.end()) continue;
      cats.push_back(name);
      ++added;
    }
    row.clear();
  };
  int64_t current = -1;
  for (const auto& [key, c] : count) {
    if (static_cast<int64_t>(key.first) != current) {
      if (current >= 0) flush(static_cast<uint32_t>(current));
      current = key.first;
    }
    row.emplace_back(c, key.second);
  }
  if (current >= 0) flush(static_cast<uint32_t>(current));
  return out;
}

std::vector<uint32_t> keep_last_occurrence(std::span<const uint32_t> items) {
  // From the back: an item is kept the first time it is met there (its last place), then reversed.
  std::vector<uint32_t> out;
  std::unordered_set<uint32_t> met;
  for (size_t k = items.size(); k-- > 0;)
    if (met.insert(items[k]).second) out.push_back(items[k]);
  std::reverse(out.begin(), out.end());
  return out;
}

Sequences user_sequences(uint32_t n_users, const std::vector<Interaction>& a,
                         const std::vector<Interaction>* b) {
  const size_t na = a.size(), n = na + (b ? b->size() : 0);
  auto at = [&](size_t k) -> const Interaction& { return k < na ? a[k] : (*b)[k - na]; };
  std::vector<uint32_t> order(n);
  for (size_t k = 0; k < n; ++k) {
    check(at(k).user < n_users, "user_sequences: user index " + std::to_string(at(k).user) +
                                    " is out of range (" + std::to_string(n_users) + " users)");
    order[k] = uint32_t(k);
  }
  // Missing timestamps sort as the smallest value, so a user without any keeps input order.
  std::stable_sort(order.begin(), order.end(), [&](uint32_t x, uint32_t y) {
    const Interaction &p = at(x), &q = at(y);
    if (p.user != q.user) return p.user < q.user;
    return p.timestamp < q.timestamp;
  });
  Sequences s;
  s.offsets.assign(size_t(n_users) + 1, 0);
  s.items.resize(n);
  for (size_t k = 0; k < n; ++k) {
    s.items[k] = at(order[k]).item;
    ++s.offsets[at(order[k]).user + 1];
  }
  for (uint32_t u = 0; u < n_users; ++u) s.offsets[u + 1] += s.offsets[u];
  return s;
}

}  // namespace xdrec
