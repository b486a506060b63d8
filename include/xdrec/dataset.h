// Dataset: users, items, domains, interactions, item text and user profiles, with stable id maps.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "xdrec/common.h"

namespace xdrec {

inline constexpr float kNoRating = std::numeric_limits<float>::quiet_NaN();
inline constexpr int64_t kNoTimestamp = std::numeric_limits<int64_t>::min();

// One (user, item) event. The item's domain is the item's own (Dataset::item_domain).
struct Interaction {
  uint32_t user = 0;
  uint32_t item = 0;
  float rating = kNoRating;          // NaN when the source has no rating
  int64_t timestamp = kNoTimestamp;  // seconds since epoch, or kNoTimestamp
  bool has_rating() const { return !std::isnan(rating); }
  bool has_timestamp() const { return timestamp != kNoTimestamp; }
};

struct ItemText {
  std::string title;
  std::string description;
  std::vector<std::string> categories;  // categories, genres or tags
};

// One user's free-text tag on an item (MovieLens tags.csv, Last.fm user_taggedartists.dat). Tags are kept
// apart from ItemText because most are written by users who also interacted with the item, so copying them
// into item text leaks held-out interactions; item_text_with_tags() (split.h) adds only the fair ones.
struct TagAssignment {
  uint32_t user = 0;
  uint32_t item = 0;
  uint32_t tag = 0;                  // index into Dataset::tag_names
  int64_t timestamp = kNoTimestamp;  // when known
};

struct UserProfile {
  std::string text;                               // free profile text
  std::map<std::string, std::string> attributes;  // e.g. age, gender, occupation
};

// Maps external string ids to dense 0-based indices and back, in first-seen order (stable).
class IdMap {
 public:
  uint32_t get_or_add(const std::string& id);
  std::optional<uint32_t> find(const std::string& id) const;
  const std::string& name(uint32_t index) const { return names_[index]; }
  uint32_t size() const { return static_cast<uint32_t>(names_.size()); }
  const std::vector<std::string>& names() const { return names_; }
  void reserve(size_t n);

 private:
  std::vector<std::string> names_;
  std::unordered_map<std::string, uint32_t> index_;
};

class Dataset {
 public:
  std::string name;  // e.g. "ml-100k"
  IdMap users, items, domains;
  std::vector<uint16_t> item_domain;      // domain index of each item (size items.size())
  std::vector<ItemText> item_text;        // size items.size() (empty strings when unknown)
  std::vector<UserProfile> user_profile;  // size users.size()
  std::vector<Interaction> interactions;
  // Fixed split shipped with the data (e.g. Food-Kitchen valid/test users): 0 = train, 1 = validation,
  // 2 = test, per interaction. Empty when the dataset has none.
  std::vector<uint8_t> fixed_split;
  // User-written tags (may be empty). Not part of item_text: see TagAssignment.
  IdMap tag_names;
  std::vector<TagAssignment> tags;

  uint32_t n_users() const { return users.size(); }
  uint32_t n_items() const { return items.size(); }
  uint32_t n_domains() const { return domains.size(); }

  // Adds a user/item (with domain) if new and returns its index; keeps item_domain/text/profile sized.
  // add_item throws Error when the item already exists in another domain.
  uint32_t add_user(const std::string& id);
  uint32_t add_item(const std::string& id, const std::string& domain);

  // Users x items matrix of the given interactions. Value per entry: 1 (implicit), or the rating when
  // use_ratings is true and the rating is present; repeated pairs are summed.
  Csr user_item_matrix(const std::vector<Interaction>& subset, bool use_ratings = false) const;
  Csr user_item_matrix(bool use_ratings = false) const { return user_item_matrix(interactions, use_ratings); }

  // Fingerprint of ids, domains and interactions (for model manifests and caches).
  uint64_t fingerprint() const;
  // Throws Error describing the first inconsistency (index out of range, sizes differ).
  void validate() const;
  std::string summary() const;  // one-line counts per domain

  // Items x distinct categories (genres, categories; not user tags) one-hot matrix with L2-normalised rows,
  // for intra-list diversity. Empty (0 x 0) when no item has a category.
  Matrix category_vectors() const;
};

}  // namespace xdrec
