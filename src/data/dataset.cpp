#include "xdrec/dataset.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "data/text.h"

namespace xdrec {

uint32_t IdMap::get_or_add(const std::string& id) {
  auto [it, inserted] = index_.try_emplace(id, static_cast<uint32_t>(names_.size()));
  if (inserted) {
    if (names_.size() >= std::numeric_limits<uint32_t>::max()) {
      index_.erase(it);
      throw Error("IdMap: more than 2^32-1 ids");
    }
    names_.push_back(id);
  }
  return it->second;
}

std::optional<uint32_t> IdMap::find(const std::string& id) const {
  auto it = index_.find(id);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

void IdMap::reserve(size_t n) {
  names_.reserve(n);
  index_.reserve(n);
}

uint32_t Dataset::add_user(const std::string& id) {
  uint32_t u = users.get_or_add(id);
  if (user_profile.size() < users.size()) user_profile.resize(users.size());
  return u;
}

uint32_t Dataset::add_item(const std::string& id, const std::string& domain) {
  auto existing = items.find(id);
  if (existing) {
    const uint16_t d = item_domain[*existing];
    if (domains.name(d) != domain)
      throw Error("item '" + id + "' is already in domain '" + domains.name(d) + "', not '" + domain + "'");
    return *existing;
  }
  auto d_found = domains.find(domain);
  if (!d_found && domains.size() >= std::numeric_limits<uint16_t>::max())
    throw Error("too many domains (at most 65535)");
  const uint32_t d = d_found ? *d_found : domains.get_or_add(domain);
  const uint32_t i = items.get_or_add(id);
  item_domain.resize(items.size(), 0);
  item_domain[i] = static_cast<uint16_t>(d);
  if (item_text.size() < items.size()) item_text.resize(items.size());
  return i;
}

Csr Dataset::user_item_matrix(const std::vector<Interaction>& subset, bool use_ratings) const {
  std::vector<uint32_t> rows(subset.size()), cols(subset.size());
  std::vector<float> vals(subset.size());
  for (size_t k = 0; k < subset.size(); ++k) {
    const Interaction& x = subset[k];
    if (x.user >= n_users() || x.item >= n_items())
      throw Error("user_item_matrix: interaction " + std::to_string(k) + " has user " +
                  std::to_string(x.user) + " / item " + std::to_string(x.item) + " out of range (" +
                  std::to_string(n_users()) + " users, " + std::to_string(n_items()) + " items)");
    rows[k] = x.user;
    cols[k] = x.item;
    vals[k] = (use_ratings && x.has_rating()) ? x.rating : 1.0f;
  }
  return Csr::from_triplets(n_users(), n_items(), rows, cols, vals);
}

namespace {

struct Hasher {
  uint64_t h = 0x6a09e667f3bcc908ULL;
  void bytes(const void* p, size_t n) { h = data::hash_bytes(p, n, h); }
  template <class T>
  void pod(const T& v) {
    bytes(&v, sizeof v);
  }
  void str(const std::string& s) {
    pod(static_cast<uint64_t>(s.size()));
    bytes(s.data(), s.size());
  }
};

}  // namespace

uint64_t Dataset::fingerprint() const {
  Hasher h;
  h.str("xdrec-dataset-v1");
  h.pod(static_cast<uint64_t>(domains.size()));
  for (const auto& d : domains.names()) h.str(d);
  h.pod(static_cast<uint64_t>(users.size()));
  for (const auto& u : users.names()) h.str(u);
  h.pod(static_cast<uint64_t>(items.size()));
  for (uint32_t i = 0; i < items.size(); ++i) {
    h.str(items.name(i));
    h.pod(i < item_domain.size() ? item_domain[i] : uint16_t{0xffff});
  }
  h.pod(static_cast<uint64_t>(interactions.size()));
  // Interactions are hashed field by field in blocks (the struct has padding bytes).
  constexpr size_t kBlock = 16384;
  std::vector<unsigned char> buf;
  buf.reserve(kBlock * 20);
  for (size_t b = 0; b < interactions.size(); b += kBlock) {
    buf.clear();
    const size_t e = std::min(interactions.size(), b + kBlock);
    for (size_t k = b; k < e; ++k) {
      const Interaction& x = interactions[k];
      unsigned char rec[20];
      uint32_t rating_bits;
      const float r = x.has_rating() ? x.rating : kNoRating;
      std::memcpy(&rating_bits, &r, 4);
      if (!x.has_rating()) rating_bits = 0x7fc00000u;  // one canonical NaN
      std::memcpy(rec, &x.user, 4);
      std::memcpy(rec + 4, &x.item, 4);
      std::memcpy(rec + 8, &rating_bits, 4);
      std::memcpy(rec + 12, &x.timestamp, 8);
      buf.insert(buf.end(), rec, rec + 20);
    }
    h.bytes(buf.data(), buf.size());
  }
  return h.h;
}

void Dataset::validate() const {
  const std::string where = "dataset '" + name + "': ";
  if (item_domain.size() != n_items())
    throw Error(where + "item_domain has " + std::to_string(item_domain.size()) + " entries for " +
                std::to_string(n_items()) + " items");
  if (item_text.size() != n_items())
    throw Error(where + "item_text has " + std::to_string(item_text.size()) + " entries for " +
                std::to_string(n_items()) + " items");
  if (user_profile.size() != n_users())
    throw Error(where + "user_profile has " + std::to_string(user_profile.size()) + " entries for " +
                std::to_string(n_users()) + " users");
  for (uint32_t i = 0; i < n_items(); ++i)
    if (item_domain[i] >= n_domains())
      throw Error(where + "item " + std::to_string(i) + " ('" + items.name(i) + "') has domain " +
                  std::to_string(item_domain[i]) + " but there are " + std::to_string(n_domains()) +
                  " domains");
  for (size_t k = 0; k < interactions.size(); ++k) {
    const Interaction& x = interactions[k];
    if (x.user >= n_users())
      throw Error(where + "interaction " + std::to_string(k) + " has user " + std::to_string(x.user) +
                  " >= " + std::to_string(n_users()) + " users");
    if (x.item >= n_items())
      throw Error(where + "interaction " + std::to_string(k) + " has item " + std::to_string(x.item) +
                  " >= " + std::to_string(n_items()) + " items");
    if (x.has_rating() && !std::isfinite(x.rating))
      throw Error(where + "interaction " + std::to_string(k) + " has a non-finite rating");
  }
  if (!fixed_split.empty()) {
    if (fixed_split.size() != interactions.size())
      throw Error(where + "fixed_split has " + std::to_string(fixed_split.size()) + " entries for " +
                  std::to_string(interactions.size()) + " interactions");
    for (size_t k = 0; k < fixed_split.size(); ++k)
      if (fixed_split[k] > 2)
        throw Error(where + "fixed_split[" + std::to_string(k) + "] = " + std::to_string(fixed_split[k]) +
                    " (expected 0 = train, 1 = validation or 2 = test)");
  }
  for (size_t k = 0; k < tags.size(); ++k) {
    const TagAssignment& t = tags[k];
    if (t.user >= n_users() || t.item >= n_items() || t.tag >= tag_names.size())
      throw Error(where + "tag assignment " + std::to_string(k) +
                  " refers to a user, item or tag out of range");
  }
}

std::string Dataset::summary() const {
  const uint32_t nd = n_domains();
  std::vector<size_t> d_items(nd, 0), d_inter(nd, 0), d_users(nd, 0);
  for (uint32_t i = 0; i < n_items() && i < item_domain.size(); ++i)
    if (item_domain[i] < nd) ++d_items[item_domain[i]];
  // Users per domain: count distinct (user, domain) pairs with a bitmap per domain.
  std::vector<std::vector<bool>> seen(nd, std::vector<bool>(n_users(), false));
  size_t with_rating = 0, with_time = 0;
  for (const Interaction& x : interactions) {
    if (x.item >= item_domain.size() || x.user >= n_users()) continue;
    const uint16_t d = item_domain[x.item];
    if (d >= nd) continue;
    ++d_inter[d];
    if (!seen[d][x.user]) {
      seen[d][x.user] = true;
      ++d_users[d];
    }
    with_rating += x.has_rating();
    with_time += x.has_timestamp();
  }
  std::ostringstream os;
  os << (name.empty() ? std::string("dataset") : name) << ": " << n_users() << " users, " << n_items()
     << " items, " << interactions.size() << " interactions, " << nd << (nd == 1 ? " domain" : " domains");
  if (nd > 0) {
    os << " (";
    for (uint32_t d = 0; d < nd; ++d) {
      if (d) os << "; ";
      os << domains.name(d) << ": " << d_users[d] << " users, " << d_items[d] << " items, " << d_inter[d]
         << " interactions";
    }
    os << ")";
  }
  const auto part = [&](size_t n) {
    return n == interactions.size() ? std::string("all") : n == 0 ? std::string("none") : std::to_string(n);
  };
  os << "; ratings: " << part(with_rating) << ", timestamps: " << part(with_time);
  if (!fixed_split.empty()) {
    size_t c[3] = {0, 0, 0};
    for (uint8_t s : fixed_split)
      if (s < 3) ++c[s];
    os << "; fixed split " << c[0] << "/" << c[1] << "/" << c[2] << " train/validation/test";
  }
  if (!tags.empty()) os << "; " << tags.size() << " tag assignments (" << tag_names.size() << " tags)";
  return os.str();
}

Matrix Dataset::category_vectors() const {
  IdMap cats;
  for (auto& t : item_text)
    for (auto& c : t.categories) cats.get_or_add(c);
  if (cats.size() == 0) return {};
  Matrix m(n_items(), cats.size());
  for (uint32_t i = 0; i < n_items() && i < item_text.size(); ++i) {
    auto& c = item_text[i].categories;
    if (c.empty()) continue;
    const float w = 1.0f / std::sqrt(static_cast<float>(c.size()));
    for (auto& name : c) m(i, *cats.find(name)) = w;
  }
  return m;
}

}  // namespace xdrec
