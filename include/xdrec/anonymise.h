// Pseudonymised datasets: user and item ids replaced by keyed pseudonyms, free text scrubbed of contact data
// and raw ids, timestamps optionally coarsened. What this protects and what it does not: docs/PRIVACY.md.
//
// Pseudonym of a raw id: the first `hex_chars` hex digits of HMAC-SHA256(key, "user:" + id) for users and of
// HMAC-SHA256(key, "item:" + id) for items (the prefixes separate the two namespaces). The same key gives the
// same pseudonyms in every file and run; without the key they cannot be recomputed from the raw ids. Two raw
// ids of one namespace with the same truncated pseudonym are an error, never merged.
//
// Text scrubbing rules (scrub_text), applied in this order to every string that may hold free text — item
// titles, descriptions and categories, user profile texts and attribute values, user tags:
//   1. URLs: "scheme://..." (http, https, ftp, file and any other letters+"://") and "www." up to the next
//      whitespace -> "[url]"
//   2. e-mail addresses: local@domain.tld (local part of letters, digits and ._%+-; a dotted domain with a
//      top-level part of >= 2 letters) -> "[email]"
//   3. phone numbers: an optional "+", then digit groups joined by single spaces, hyphens, dots or
//      parentheses (a parenthesised group followed by more digits), 7 digits or more in all, not touching a
//      letter or digit -> "[phone]". Kept: calendar dates
//      (4-2-2 or 2-2-4 digits with one separator) and two groups apart by one space ("Top 100 1995"). Long
//      digit runs that are not phone numbers (account numbers, long timestamps) go too.
//   4. raw ids: a raw user or item id of the dataset appearing as a whole token (not preceded or followed by
//   a
//      letter or digit) -> "[id]". On datasets whose ids are small numbers, numbers in text that equal an id
//      (ages, sequel numbers) are removed too: the rule cannot tell them apart.
// Domain names and the dataset's name are kept as they are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "xdrec/dataset.h"

namespace xdrec {

enum class TimeCoarsening : uint8_t { kNone, kDay, kWeek, kMonth };

// "none", "day", "week" or "month"; Error otherwise.
TimeCoarsening parse_time_coarsening(const std::string& name);

// The key in a file (its bytes as they are). Error when the file is missing, unreadable or empty.
std::string read_key_file(const std::string& path);

// First hex_chars (1..64) hex digits of HMAC-SHA256(key, message).
std::string hmac_sha256_hex(const std::string& key, const std::string& message, size_t hex_chars = 64);

// Timestamp (seconds since the epoch, UTC) floored to the start of its day, week (Monday 00:00 UTC) or month.
int64_t coarsen_timestamp(int64_t t, TimeCoarsening c);

struct ScrubCounts {
  size_t urls = 0, emails = 0, phones = 0, ids = 0;
  size_t total() const { return urls + emails + phones + ids; }
};

// The raw ids that rule 4 removes, with their distinct lengths (longest first) for the whole-token lookup.
class RawIds {
 public:
  RawIds() = default;
  RawIds(std::initializer_list<std::string> ids);
  void add(const std::string& id);  // empty ids are ignored
  bool contains(const std::string& s) const { return ids_.count(s) > 0; }
  const std::vector<size_t>& lengths() const { return lengths_; }
  bool empty() const { return ids_.empty(); }

 private:
  std::unordered_set<std::string> ids_;
  std::vector<size_t> lengths_;
};

// Applies the rules above; `ids` holds the raw ids to remove as whole tokens (may be empty).
std::string scrub_text(const std::string& text, const RawIds& ids, ScrubCounts* counts = nullptr);

struct AnonymiseOptions {
  std::string key;        // secret key (non-empty)
  size_t hex_chars = 16;  // pseudonym length, 4..64 hex digits (short ones collide sooner: an error)
  TimeCoarsening coarsen_time = TimeCoarsening::kNone;
};

struct Anonymised {
  // The pseudonymised dataset. Users and items are re-indexed in the order of their pseudonyms (so an index
  // reveals nothing about the raw id or the order of the source files); interactions are ordered by user,
  // then time, keeping the source order among equal times; tags likewise.
  Dataset data;
  std::vector<std::pair<std::string, std::string>> user_ids, item_ids;  // (raw, pseudonym), by new index
  ScrubCounts scrubbed;
};

// The pseudonymised copy of ds (ds is validated first). Error on an empty key or a pseudonym collision.
Anonymised anonymise(const Dataset& ds, const AnonymiseOptions& opt);

// The id map, "kind\traw\tpseudonym" lines (kind: user or item) under a header, written atomically. It is the
// key back to the raw ids: keep it as secret as the key.
void write_id_map(const Anonymised& a, const std::string& path);

}  // namespace xdrec
