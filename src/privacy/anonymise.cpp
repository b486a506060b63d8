// Pseudonymised datasets (see anonymise.h for the rules and docs/PRIVACY.md for what they protect).
#include "xdrec/anonymise.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <unordered_map>

namespace xdrec {
namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_alnum(char c) {
  return is_digit(c) || is_alpha(c);
}
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool word_before(const std::string& s, size_t p) {
  return p > 0 && is_alnum(s[p - 1]);
}
bool word_at(const std::string& s, size_t p) {
  return p < s.size() && is_alnum(s[p]);
}

// One rule: find(s, p) returns the end of a match starting at p (or p when none); matches are replaced by
// `placeholder`, scanning left to right without overlaps.
template <class Find>
std::string replace_matches(const std::string& s, const char* placeholder, size_t& count, Find find) {
  std::string out;
  out.reserve(s.size());
  size_t p = 0;
  while (p < s.size()) {
    const size_t end = find(s, p);
    if (end > p) {
      out += placeholder;
      ++count;
      p = end;
    } else {
      out += s[p++];
    }
  }
  return out;
}

// Rule 1: "letters://..." or "www." at a word start, up to whitespace, without trailing sentence punctuation.
size_t find_url(const std::string& s, size_t p) {
  if (word_before(s, p) || !is_alpha(s[p])) return p;
  size_t i = p;
  while (i < s.size() && (is_alpha(s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.')) ++i;
  const bool scheme = i - p >= 2 && s.compare(i, 3, "://") == 0;
  bool www = false;
  if (!scheme && s.size() - p > 4) {
    www = (s[p] == 'w' || s[p] == 'W') && (s[p + 1] == 'w' || s[p + 1] == 'W') &&
          (s[p + 2] == 'w' || s[p + 2] == 'W') && s[p + 3] == '.' && word_at(s, p + 4);
  }
  if (!scheme && !www) return p;
  size_t end = p;
  while (end < s.size() && !is_space(s[end])) ++end;
  while (end > p && std::string_view(".,;:!?)]}'\"").find(s[end - 1]) != std::string_view::npos) --end;
  return end;
}

// Rule 2: local@domain.tld, the local part extending left of '@' (found when p starts it).
bool is_local_char(char c) {
  return is_alnum(c) || std::string_view("._%+-").find(c) != std::string_view::npos;
}
size_t find_email(const std::string& s, size_t p) {
  if (!is_local_char(s[p]) || (p > 0 && is_local_char(s[p - 1]))) return p;
  size_t at = p;
  while (at < s.size() && is_local_char(s[at])) ++at;
  if (at == p || at >= s.size() || s[at] != '@') return p;
  size_t end = at + 1;
  if (!word_at(s, end)) return p;
  while (end < s.size() && (is_alnum(s[end]) || s[end] == '.' || s[end] == '-')) ++end;
  while (end > at + 1 && (s[end - 1] == '.' || s[end - 1] == '-')) --end;
  // A dotted domain whose last label has >= 2 letters.
  const size_t dot = s.rfind('.', end - 1);
  if (dot == std::string::npos || dot <= at + 1 || end - dot - 1 < 2) return p;
  for (size_t i = dot + 1; i < end; ++i)
    if (!is_alpha(s[i])) return p;
  return end;
}

// Rule 3: [+] digit groups joined by single separators (space, '-', '.', parentheses), >= 7 digits, not
// touching a letter or digit. A group in parentheses must be followed by more digits (an area code), so a
// year in brackets after a number ("1-900 (1994)") is not part of it. Kept: calendar dates (4-2-2 or 2-2-4
// digits with one separator) and two groups apart by one space.
size_t find_phone(const std::string& s, size_t p) {
  if (word_before(s, p)) return p;
  struct Group {
    size_t begin, end;
    bool parenthesised;  // opened by '('
  };
  std::vector<Group> groups;
  std::string seps;  // the first character of the separator before each group but the first
  size_t i = p;
  if (s[i] == '+') ++i;
  bool open = false;
  if (i < s.size() && s[i] == '(') {
    ++i;
    open = true;
  }
  while (i < s.size() && is_digit(s[i])) {
    size_t j = i;
    while (j < s.size() && is_digit(s[j])) ++j;
    groups.push_back({i, j, open});
    i = j;
    if (i >= s.size()) break;
    // One separator: ' ', '-' or '.' (optionally opening a parenthesis), ')' closing one (optionally followed
    // by ' ', '-' or '.'), or '('; followed by a digit.
    size_t k = i;
    const char c = s[i];
    open = false;
    if (c == ')') {
      if (!groups.back().parenthesised) break;
      ++k;
      if (k < s.size() && (s[k] == ' ' || s[k] == '-' || s[k] == '.')) ++k;
    } else if (c == ' ' || c == '-' || c == '.') {
      ++k;
      if (k < s.size() && s[k] == '(') {
        ++k;
        open = true;
      }
    } else if (c == '(') {
      ++k;
      open = true;
    } else {
      break;
    }
    if (k >= s.size() || !is_digit(s[k])) break;
    seps += c;
    i = k;
  }
  if (!groups.empty() && groups.back().parenthesised) {
    groups.pop_back();
    if (!seps.empty()) seps.pop_back();
  }
  if (groups.empty()) return p;
  size_t digits = 0;
  for (const Group& g : groups) digits += g.end - g.begin;
  const size_t end = groups.back().end;
  if (digits < 7 || word_at(s, end)) return p;
  // Two numbers apart by a space ("123 4567", "Top 100 1995") are not taken for a phone number.
  if (groups.size() == 2 && seps == " " && s[p] != '+' && s[p] != '(') return p;
  const bool one_sep = seps.size() == 2 && seps[0] == seps[1] && seps[0] != ' ' && s[p] != '+';
  if (one_sep && groups.size() == 3) {
    const size_t a = groups[0].end - groups[0].begin, b = groups[1].end - groups[1].begin,
                 c = groups[2].end - groups[2].begin;
    if ((a == 4 && b == 2 && c == 2) || (a == 2 && b == 2 && c == 4)) return p;
  }
  return end;
}

// HMAC-SHA256 pseudonyms of every name of an IdMap, checked for collisions.
std::vector<std::string> pseudonyms(const IdMap& ids, const std::string& key, const std::string& kind,
                                    size_t hex_chars) {
  std::vector<std::string> out(ids.size());
  std::unordered_map<std::string, uint32_t> seen;
  seen.reserve(ids.size());
  for (uint32_t i = 0; i < ids.size(); ++i) {
    out[i] = hmac_sha256_hex(key, kind + ":" + ids.name(i), hex_chars);
    auto [it, fresh] = seen.emplace(out[i], i);
    if (!fresh)
      throw Error("anonymise: " + kind + "s '" + ids.name(it->second) + "' and '" + ids.name(i) +
                  "' have the same " + std::to_string(hex_chars) + "-digit pseudonym " + out[i] +
                  " (use longer pseudonyms)");
  }
  return out;
}

// Indices ordered by pseudonym, and the new index of each old one.
std::vector<uint32_t> order_by(const std::vector<std::string>& names, std::vector<uint32_t>& new_index) {
  std::vector<uint32_t> order(names.size());
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return names[a] < names[b]; });
  new_index.assign(names.size(), 0);
  for (uint32_t r = 0; r < order.size(); ++r) new_index[order[r]] = r;
  return order;
}

// Days since 1970-01-01 of a civil date, and back (H. Hinnant's algorithms, proleptic Gregorian).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}
void civil_from_days(int64_t z, int64_t& y, unsigned& m) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  m = mp < 10 ? mp + 3 : mp - 9;
  y = static_cast<int64_t>(yoe) + era * 400 + (m <= 2);
}
int64_t floor_div(int64_t a, int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

std::string escape_tsv(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\t')
      out += "\\t";
    else if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\\')
      out += "\\\\";
    else
      out += c;
  }
  return out;
}

}  // namespace

TimeCoarsening parse_time_coarsening(const std::string& name) {
  if (name == "none") return TimeCoarsening::kNone;
  if (name == "day") return TimeCoarsening::kDay;
  if (name == "week") return TimeCoarsening::kWeek;
  if (name == "month") return TimeCoarsening::kMonth;
  throw Error("unknown time coarsening '" + name + "' (expected none, day, week or month)");
}

std::string read_key_file(const std::string& path) {
  std::error_code ec;
  check(std::filesystem::is_regular_file(path, ec),
        "key file '" + path + "' does not exist or is not a file");
  std::string key;
  try {
    key = read_file(path);
  } catch (const Error&) {
    throw Error("cannot read key file '" + path + "'");
  }
  check(!key.empty(), "key file '" + path + "' is empty (it must hold a secret, e.g. 32 random bytes)");
  return key;
}

std::string hmac_sha256_hex(const std::string& key, const std::string& message, size_t hex_chars) {
  check(hex_chars >= 1 && hex_chars <= 64, "hmac_sha256_hex: hex_chars must lie in 1..64");
  check(key.size() <= static_cast<size_t>(INT_MAX), "hmac_sha256_hex: key too long");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
            reinterpret_cast<const unsigned char*>(message.data()), message.size(), md, &len) ||
      len != 32)
    throw Error("HMAC-SHA256 failed (OpenSSL)");
  static const char* hex = "0123456789abcdef";
  std::string out(hex_chars, '0');
  for (size_t i = 0; i < hex_chars; ++i) out[i] = hex[(md[i / 2] >> (i % 2 ? 0 : 4)) & 0xf];
  return out;
}

int64_t coarsen_timestamp(int64_t t, TimeCoarsening c) {
  if (t == kNoTimestamp || c == TimeCoarsening::kNone) return t;
  const int64_t day = floor_div(t, 86400);
  switch (c) {
    case TimeCoarsening::kDay:
      return day * 86400;
    case TimeCoarsening::kWeek: {
      const int64_t weekday = ((day + 3) % 7 + 7) % 7;  // 1970-01-01 was a Thursday; Monday = 0
      return (day - weekday) * 86400;
    }
    case TimeCoarsening::kMonth: {
      int64_t y;
      unsigned m;
      civil_from_days(day, y, m);
      return days_from_civil(y, m, 1) * 86400;
    }
    default:
      return t;
  }
}

RawIds::RawIds(std::initializer_list<std::string> ids) {
  for (const auto& id : ids) add(id);
}

void RawIds::add(const std::string& id) {
  if (id.empty() || !ids_.insert(id).second) return;
  if (std::find(lengths_.begin(), lengths_.end(), id.size()) == lengths_.end()) {
    lengths_.push_back(id.size());
    std::sort(lengths_.rbegin(), lengths_.rend());
  }
}

std::string scrub_text(const std::string& text, const RawIds& ids, ScrubCounts* counts) {
  ScrubCounts local;
  ScrubCounts& n = counts ? *counts : local;
  if (text.empty()) return text;
  std::string s = replace_matches(text, "[url]", n.urls, find_url);
  s = replace_matches(s, "[email]", n.emails, find_email);
  s = replace_matches(s, "[phone]", n.phones, find_phone);
  if (ids.empty()) return s;
  // Rule 4: the longest raw id that starts at a word start and ends at a word end.
  return replace_matches(s, "[id]", n.ids, [&](const std::string& str, size_t p) {
    if (word_before(str, p) || is_space(str[p])) return p;
    for (size_t len : ids.lengths()) {
      if (p + len > str.size() || word_at(str, p + len)) continue;
      if (ids.contains(str.substr(p, len))) return p + len;
    }
    return p;
  });
}

Anonymised anonymise(const Dataset& ds, const AnonymiseOptions& opt) {
  check(!opt.key.empty(), "anonymise: the key is empty");
  check(opt.hex_chars >= 4 && opt.hex_chars <= 64,
        "anonymise: pseudonyms need 4..64 hex digits (got " + std::to_string(opt.hex_chars) + ")");
  ds.validate();
  const std::vector<std::string> user_p = pseudonyms(ds.users, opt.key, "user", opt.hex_chars);
  const std::vector<std::string> item_p = pseudonyms(ds.items, opt.key, "item", opt.hex_chars);
  std::vector<uint32_t> new_user, new_item;
  const std::vector<uint32_t> user_order = order_by(user_p, new_user);
  const std::vector<uint32_t> item_order = order_by(item_p, new_item);

  RawIds raw_ids;
  for (const auto& id : ds.users.names()) raw_ids.add(id);
  for (const auto& id : ds.items.names()) raw_ids.add(id);

  Anonymised a;
  Dataset& out = a.data;
  ScrubCounts& n = a.scrubbed;
  auto scrub = [&](const std::string& s) { return scrub_text(s, raw_ids, &n); };
  out.name = scrub(ds.name);
  out.domains = ds.domains;

  out.users.reserve(ds.n_users());
  out.user_profile.resize(ds.n_users());
  a.user_ids.reserve(ds.n_users());
  for (uint32_t old : user_order) {
    const uint32_t u = out.users.get_or_add(user_p[old]);
    a.user_ids.emplace_back(ds.users.name(old), user_p[old]);
    const UserProfile& src = ds.user_profile[old];
    UserProfile& dst = out.user_profile[u];
    dst.text = scrub(src.text);
    for (const auto& [k, v] : src.attributes) dst.attributes[k] = scrub(v);
  }
  out.items.reserve(ds.n_items());
  out.item_domain.resize(ds.n_items());
  out.item_text.resize(ds.n_items());
  a.item_ids.reserve(ds.n_items());
  for (uint32_t old : item_order) {
    const uint32_t i = out.items.get_or_add(item_p[old]);
    a.item_ids.emplace_back(ds.items.name(old), item_p[old]);
    out.item_domain[i] = ds.item_domain[old];
    const ItemText& src = ds.item_text[old];
    ItemText& dst = out.item_text[i];
    dst.title = scrub(src.title);
    dst.description = scrub(src.description);
    for (const auto& c : src.categories) dst.categories.push_back(scrub(c));
  }

  // Interactions by (user, time), the source order kept among equal times; the fixed split moves with them.
  std::vector<Interaction> inter(ds.interactions.size());
  for (size_t k = 0; k < inter.size(); ++k) {
    Interaction it = ds.interactions[k];
    it.user = new_user[it.user];
    it.item = new_item[it.item];
    it.timestamp = coarsen_timestamp(it.timestamp, opt.coarsen_time);
    inter[k] = it;
  }
  std::vector<size_t> perm(inter.size());
  std::iota(perm.begin(), perm.end(), size_t{0});
  std::stable_sort(perm.begin(), perm.end(), [&](size_t x, size_t y) {
    if (inter[x].user != inter[y].user) return inter[x].user < inter[y].user;
    return inter[x].timestamp < inter[y].timestamp;
  });
  out.interactions.resize(inter.size());
  for (size_t k = 0; k < perm.size(); ++k) out.interactions[k] = inter[perm[k]];
  if (!ds.fixed_split.empty()) {
    out.fixed_split.resize(perm.size());
    for (size_t k = 0; k < perm.size(); ++k) out.fixed_split[k] = ds.fixed_split[perm[k]];
  }

  // Tags: scrubbed names (two names may become one), remapped and ordered like the interactions.
  std::vector<uint32_t> new_tag(ds.tag_names.size());
  for (uint32_t t = 0; t < ds.tag_names.size(); ++t)
    new_tag[t] = out.tag_names.get_or_add(scrub(ds.tag_names.name(t)));
  out.tags.reserve(ds.tags.size());
  for (TagAssignment ta : ds.tags) {
    ta.user = new_user[ta.user];
    ta.item = new_item[ta.item];
    ta.tag = new_tag[ta.tag];
    ta.timestamp = coarsen_timestamp(ta.timestamp, opt.coarsen_time);
    out.tags.push_back(ta);
  }
  std::stable_sort(out.tags.begin(), out.tags.end(), [](const TagAssignment& x, const TagAssignment& y) {
    if (x.user != y.user) return x.user < y.user;
    return x.timestamp < y.timestamp;
  });
  out.validate();
  return a;
}

void write_id_map(const Anonymised& a, const std::string& path) {
  std::string text = "kind\traw\tpseudonym\n";
  for (const auto& [raw, p] : a.user_ids) text += "user\t" + escape_tsv(raw) + "\t" + p + "\n";
  for (const auto& [raw, p] : a.item_ids) text += "item\t" + escape_tsv(raw) + "\t" + p + "\n";
  write_file_atomic(path, text, 0600);
}

}  // namespace xdrec
