// The canonical layout: interactions/items/users/tags files as CSV, TSV or JSON lines with a header.

#include <algorithm>
#include <cctype>
#include <deque>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "data/formats.h"

namespace fs = std::filesystem;

namespace xdrec::data {

namespace {

enum class Kind { kCsv, kTsv, kJsonl };

std::optional<Kind> kind_of(const std::string& path) {
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".csv") return Kind::kCsv;
  if (ext == ".tsv" || ext == ".tab") return Kind::kTsv;
  if (ext == ".jsonl" || ext == ".ndjson") return Kind::kJsonl;
  return std::nullopt;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

struct Cell {
  std::string_view text;
  uint32_t line = 0, column = 0;
  bool present = false;
};

// One canonical file, CSV/TSV (header line) or JSON lines (one object per line), read record by record into
// cells of a fixed schema plus, where allowed, extra named cells.
class Table {
 public:
  Table(const FileData& f, std::vector<std::string> known, const std::vector<std::string>& required,
        bool extra_allowed, std::string what)
      : file_(f.path),
        known_(std::move(known)),
        required_(required),
        extra_allowed_(extra_allowed),
        what_(std::move(what)),
        kind_(*kind_of(f.path)),
        reader_(f.path, f.bytes,
                kind_ == Kind::kCsv   ? DelimitedFormat::csv()
                : kind_ == Kind::kTsv ? DelimitedFormat::tsv()
                                      : DelimitedFormat::plain('\n')),
        cells_(known_.size()) {
    if (kind_ == Kind::kJsonl) {
      // No header: check only that the file has some content.
      bool blank = true;
      for (char c : f.bytes)
        if (!std::isspace(static_cast<unsigned char>(c))) {
          blank = false;
          break;
        }
      if (blank) throw ParseError(file_, 1, 1, "empty file");
      return;
    }
    Header h = Header::read(reader_);
    header_names_ = h.names();
    slot_.assign(h.names().size(), -1);
    for (size_t k = 0; k < h.names().size(); ++k) {
      const int id = known_id(h.names()[k]);
      if (id >= 0) {
        slot_[k] = id;
      } else if (!extra_allowed_) {
        throw ParseError(file_, h.line(), h.column_of(k),
                         "unknown column '" + h.names()[k] + "' in the " + what_ + " file (expected " +
                             join(known_) + ")");
      }
    }
    for (const auto& r : required_) h.require(r);
  }

  const std::string& file() const { return file_; }
  size_t line() const { return line_; }
  const Cell& cell(size_t id) const { return cells_[id]; }
  const std::vector<std::pair<std::string_view, Cell>>& extras() const { return extras_; }

  [[noreturn]] void fail(const Cell& c, const std::string& reason) const {
    throw ParseError(file_, c.present ? c.line : line_, c.present ? c.column : 1, reason);
  }

  // Next record; false at end of file. Throws ParseError for a malformed record.
  bool next() {
    if (!reader_.next(rec_)) return false;
    line_ = rec_.line;
    for (auto& c : cells_) c = Cell{};
    extras_.clear();
    if (kind_ != Kind::kJsonl) {
      reader_.expect_fields(rec_, slot_.size());
      for (size_t k = 0; k < slot_.size(); ++k) {
        const Cell c{rec_.fields[k], rec_.lines[k], rec_.columns[k], true};
        if (slot_[k] >= 0)
          cells_[slot_[k]] = c;
        else
          extras_.emplace_back(header_names_[k], c);
      }
      return true;
    }
    parse_json_line();
    return true;
  }

 private:
  int known_id(std::string_view name) const {
    for (size_t k = 0; k < known_.size(); ++k)
      if (known_[k].size() == name.size() &&
          std::equal(name.begin(), name.end(), known_[k].begin(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
          }))
        return static_cast<int>(k);
    return -1;
  }

  void parse_json_line() {
    const std::string_view text = rec_.fields[0];
    nlohmann::json obj;
    try {
      obj = nlohmann::json::parse(text.begin(), text.end());
    } catch (const nlohmann::json::parse_error& e) {
      std::string msg = e.what();
      const auto colon = msg.find(": ", msg.find("parse error"));
      if (colon != std::string::npos) msg = msg.substr(colon + 2);
      const size_t col = std::clamp<size_t>(e.byte, 1, text.size() + 1);
      throw ParseError(file_, line_, col, "invalid JSON: " + msg);
    }
    if (!obj.is_object()) throw ParseError(file_, line_, 1, "expected a JSON object");
    storage_.clear();
    extra_keys_.clear();
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      const std::string& key = it.key();
      const size_t kpos = text.find("\"" + key + "\"");
      const uint32_t col = static_cast<uint32_t>(kpos == std::string_view::npos ? 1 : kpos + 1);
      const nlohmann::json& v = it.value();
      if (v.is_null()) continue;
      std::string s;
      if (v.is_string()) {
        s = v.get<std::string>();
      } else if (v.is_number_integer() || v.is_number_unsigned() || v.is_number_float() || v.is_boolean()) {
        s = v.dump();
      } else if (v.is_array()) {
        for (const auto& x : v) {
          if (!x.is_string())
            throw ParseError(file_, line_, col,
                             "field '" + key + "' must be a string or an array of strings");
          s += (s.empty() ? "" : "|") + x.get<std::string>();
        }
      } else {
        throw ParseError(file_, line_, col, "field '" + key + "' is a nested object");
      }
      storage_.push_back(std::move(s));
      const Cell c{storage_.back(), static_cast<uint32_t>(line_), col, true};
      const int id = known_id(key);
      if (id >= 0) {
        cells_[id] = c;
      } else if (extra_allowed_) {
        extra_keys_.push_back(key);  // a deque: earlier elements stay where they are
        extras_.emplace_back(extra_keys_.back(), c);
      } else {
        throw ParseError(
            file_, line_, col,
            "unknown field '" + key + "' in the " + what_ + " file (expected " + join(known_) + ")");
      }
    }
    for (const auto& r : required_) {
      const int id = known_id(r);
      if (!cells_[id].present) throw ParseError(file_, line_, 1, "missing field '" + r + "'");
    }
  }

  std::string file_;
  std::vector<std::string> known_, required_;
  bool extra_allowed_;
  std::string what_;
  Kind kind_;
  DelimitedReader reader_;
  Record rec_;
  size_t line_ = 0;
  std::vector<Cell> cells_;
  std::vector<int> slot_;
  std::vector<std::string> header_names_;
  std::vector<std::pair<std::string_view, Cell>> extras_;
  std::deque<std::string> storage_;
  std::deque<std::string> extra_keys_;
};

// Runs f() for each record of the table, passing malformed records to the sink.
template <class F>
void for_each_row(Table& t, ReadContext& ctx, F&& f) {
  for (;;) {
    try {
      if (!t.next()) break;
      f();
      ++ctx.report.records;
    } catch (const ParseError& e) {
      ctx.sink.handle(e);
    }
  }
}

std::optional<std::string> find_table(const fs::path& dir, const std::string& stem) {
  std::vector<std::string> found;
  for (const char* ext : {".csv", ".tsv", ".jsonl"}) {
    const fs::path p = dir / (stem + ext);
    if (fs::is_regular_file(p)) found.push_back(p.string());
  }
  if (found.size() > 1)
    throw Error("ambiguous " + stem + " file in '" + dir.string() + "': found " + join(found) +
                " (keep one)");
  if (found.empty()) return std::nullopt;
  return found[0];
}

struct CanonicalFiles {
  std::string interactions;
  std::optional<std::string> items, users, tags;
};

CanonicalFiles locate(const std::string& path) {
  CanonicalFiles f;
  fs::path dir;
  if (fs::is_directory(path)) {
    dir = path;
    auto inter = find_table(dir, "interactions");
    if (!inter)
      throw Error("no interactions file in '" + path + "' (expected interactions.csv, .tsv or .jsonl)");
    f.interactions = *inter;
  } else {
    if (!fs::is_regular_file(path)) throw Error("no such file or directory: '" + path + "'");
    if (!kind_of(path))
      throw Error("cannot tell the format of '" + path +
                  "' from its extension (expected .csv, .tsv or .jsonl)");
    f.interactions = path;
    dir = fs::path(path).parent_path();
    if (dir.empty()) dir = ".";
    if (fs::path(path).stem() != "interactions") return f;  // a lone interactions file
  }
  f.items = find_table(dir, "items");
  f.users = find_table(dir, "users");
  f.tags = find_table(dir, "tags");
  return f;
}

std::string default_domain(const ReadOptions& opt) {
  return opt.domain.empty() ? "default" : opt.domain;
}

}  // namespace

std::vector<std::string> split_categories(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b <= s.size()) {
    size_t e = s.find(sep, b);
    if (e == std::string_view::npos) e = s.size();
    if (e > b) out.emplace_back(s.substr(b, e - b));
    b = e + 1;
  }
  return out;
}

bool detect_canonical(const std::string& path) {
  if (fs::is_directory(path)) {
    for (const char* ext : {".csv", ".tsv", ".jsonl"})
      if (fs::is_regular_file(fs::path(path) / (std::string("interactions") + ext))) return true;
    return false;
  }
  return fs::is_regular_file(path) && kind_of(path).has_value();
}

std::vector<std::string> canonical_inputs(const std::string& path) {
  const CanonicalFiles f = locate(path);
  std::vector<std::string> v{f.interactions};
  for (const auto& o : {f.items, f.users, f.tags})
    if (o) v.push_back(*o);
  return v;
}

Dataset read_canonical(const std::string& path, ReadContext& ctx) {
  const CanonicalFiles files = locate(path);
  Dataset ds;
  {
    fs::path p = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
    p = fs::absolute(p).lexically_normal();
    ds.name = p.filename().empty() ? p.parent_path().filename().string() : p.filename().string();
  }
  const std::string dflt = default_domain(ctx.opt);

  // Items first, so that their order and domains are the items file's.
  std::vector<uint32_t> item_line;
  if (files.items) {
    const FileData f = ctx.load(*files.items);
    enum { kItem, kDomain, kTitle, kDescription, kCategories };
    Table t(f, {"item", "domain", "title", "description", "categories"}, {"item"}, false, "items");
    for_each_row(t, ctx, [&] {
      const Cell& id = t.cell(kItem);
      if (id.text.empty()) t.fail(id, "empty item id");
      const std::string item(id.text);
      if (auto prev = ds.items.find(item))
        t.fail(id, "duplicate item '" + item + "' (first on line " + std::to_string(item_line[*prev]) + ")");
      const Cell& dom = t.cell(kDomain);
      const uint32_t i = ds.add_item(item, dom.present && !dom.text.empty() ? std::string(dom.text) : dflt);
      item_line.resize(ds.n_items(), 0);
      item_line[i] = static_cast<uint32_t>(t.line());
      ItemText& text = ds.item_text[i];
      text.title = t.cell(kTitle).text;
      text.description = t.cell(kDescription).text;
      text.categories = split_categories(t.cell(kCategories).text);
    });
  }
  const bool items_given = files.items.has_value();

  if (files.users) {
    const FileData f = ctx.load(*files.users);
    enum { kUser, kText };
    Table t(f, {"user", "text"}, {"user"}, true, "users");
    std::vector<uint32_t> user_line;
    for_each_row(t, ctx, [&] {
      const Cell& id = t.cell(kUser);
      if (id.text.empty()) t.fail(id, "empty user id");
      const std::string user(id.text);
      if (auto prev = ds.users.find(user))
        t.fail(id, "duplicate user '" + user + "' (first on line " + std::to_string(user_line[*prev]) + ")");
      const uint32_t u = ds.add_user(user);
      user_line.resize(ds.n_users(), 0);
      user_line[u] = static_cast<uint32_t>(t.line());
      UserProfile& prof = ds.user_profile[u];
      prof.text = t.cell(kText).text;
      for (const auto& [key, c] : t.extras())
        if (!c.text.empty()) prof.attributes[std::string(key)] = std::string(c.text);
    });
  }

  {
    const FileData f = ctx.load(files.interactions);
    enum { kUser, kItem, kDomain, kRating, kTimestamp, kSplit };
    Table t(f, {"user", "item", "domain", "rating", "timestamp", "split"}, {"user", "item"}, false,
            "interactions");
    bool any_split = false;
    std::vector<uint8_t> split;
    std::string item_key;
    for_each_row(t, ctx, [&] {
      const Cell& uc = t.cell(kUser);
      const Cell& ic = t.cell(kItem);
      const Cell& dc = t.cell(kDomain);
      const Cell& rc = t.cell(kRating);
      const Cell& tc = t.cell(kTimestamp);
      const Cell& sc = t.cell(kSplit);
      if (uc.text.empty()) t.fail(uc, "empty user id");
      if (ic.text.empty()) t.fail(ic, "empty item id");
      Interaction x;
      if (rc.present && !rc.text.empty()) {
        auto r = parse_double(rc.text);
        if (!r) t.fail(rc, "bad rating " + quote_for_message(rc.text) + " (expected a number)");
        x.rating = static_cast<float>(*r);
      }
      if (tc.present && !tc.text.empty()) {
        auto ts = parse_int(tc.text);
        if (!ts) t.fail(tc, "bad timestamp " + quote_for_message(tc.text) + " (expected integer seconds)");
        x.timestamp = *ts;
      }
      uint8_t part = 0;
      if (sc.present && !sc.text.empty()) {
        if (sc.text == "train")
          part = 0;
        else if (sc.text == "validation" || sc.text == "valid")
          part = 1;
        else if (sc.text == "test")
          part = 2;
        else
          t.fail(sc, "bad split " + quote_for_message(sc.text) + " (expected train, validation or test)");
        any_split = any_split || part != 0;
      }
      item_key.assign(ic.text);
      const std::string domain = dc.present && !dc.text.empty() ? std::string(dc.text) : std::string();
      auto found = ds.items.find(item_key);
      if (items_given && !found)
        t.fail(ic, "unknown item " + quote_for_message(ic.text) + " (not in " + *files.items + ")");
      if (found && !domain.empty() && ds.domains.name(ds.item_domain[*found]) != domain)
        t.fail(dc, "item " + quote_for_message(ic.text) + " is in domain '" +
                       ds.domains.name(ds.item_domain[*found]) + "', not '" + domain + "'");
      x.item = found ? *found : ds.add_item(item_key, domain.empty() ? dflt : domain);
      x.user = ds.add_user(std::string(uc.text));
      ds.interactions.push_back(x);
      split.push_back(part);
    });
    if (ds.interactions.empty())
      throw Error("no interactions read from '" + files.interactions + "'" +
                  (ctx.report.skipped ? " (all records were malformed)" : ""));
    if (any_split) ds.fixed_split = std::move(split);
  }

  if (files.tags) {
    const FileData f = ctx.load(*files.tags);
    enum { kUser, kItem, kTag, kTimestamp };
    Table t(f, {"user", "item", "tag", "timestamp"}, {"user", "item", "tag"}, false, "tags");
    for_each_row(t, ctx, [&] {
      const Cell& uc = t.cell(kUser);
      const Cell& ic = t.cell(kItem);
      const Cell& gc = t.cell(kTag);
      const Cell& tc = t.cell(kTimestamp);
      if (uc.text.empty()) t.fail(uc, "empty user id");
      auto item = ds.items.find(std::string(ic.text));
      if (!item) t.fail(ic, "unknown item " + quote_for_message(ic.text));
      if (gc.text.empty()) t.fail(gc, "empty tag");
      TagAssignment a;
      if (tc.present && !tc.text.empty()) {
        auto ts = parse_int(tc.text);
        if (!ts) t.fail(tc, "bad timestamp " + quote_for_message(tc.text) + " (expected integer seconds)");
        a.timestamp = *ts;
      }
      a.item = *item;
      a.user = ds.add_user(std::string(uc.text));
      a.tag = ds.tag_names.get_or_add(std::string(gc.text));
      ds.tags.push_back(a);
    });
  }
  ds.validate();
  return ds;
}

}  // namespace xdrec::data

namespace xdrec {

namespace {

// TSV field escaping matching the canonical reader: backslash, tab, newline and carriage return.
void put_field(std::string& out, std::string_view s) {
  for (char c : s) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        out.push_back(c);
    }
  }
}

void write_text(const std::string& path, const std::string& s) {
  write_file_atomic(path, std::string_view(s));
}

}  // namespace

void write_canonical(const Dataset& ds, const std::string& dir) {
  ds.validate();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) throw Error("cannot create directory '" + dir + "'");
  const fs::path d(dir);
  for (const char* stem : {"interactions", "items", "users", "tags"})
    for (const char* ext : {".csv", ".jsonl"})
      if (fs::exists(d / (std::string(stem) + ext)))
        throw Error("'" + (d / (std::string(stem) + ext)).string() +
                    "' exists and would make the canonical layout ambiguous; write into an empty directory");

  std::string out;
  // items.tsv
  out = "item\tdomain\ttitle\tdescription\tcategories\n";
  for (uint32_t i = 0; i < ds.n_items(); ++i) {
    put_field(out, ds.items.name(i));
    out += '\t';
    put_field(out, ds.domains.name(ds.item_domain[i]));
    out += '\t';
    const ItemText& t = ds.item_text[i];
    put_field(out, t.title);
    out += '\t';
    put_field(out, t.description);
    out += '\t';
    for (size_t k = 0; k < t.categories.size(); ++k) {
      if (k) out += '|';
      std::string c = t.categories[k];
      std::replace(c.begin(), c.end(), '|', '/');  // '|' separates categories
      put_field(out, c);
    }
    out += '\n';
  }
  write_text((d / "items.tsv").string(), out);

  // users.tsv: id, text and one column per attribute name.
  std::set<std::string> attr_names;
  for (const auto& p : ds.user_profile)
    for (const auto& [k, v] : p.attributes) attr_names.insert(k);
  for (const auto& k : attr_names)
    if (k == "user" || k == "text" || k.empty())
      throw Error("cannot write user attribute named '" + k + "' (reserved column name)");
  out = "user\ttext";
  for (const auto& k : attr_names) {
    out += '\t';
    put_field(out, k);
  }
  out += '\n';
  for (uint32_t u = 0; u < ds.n_users(); ++u) {
    put_field(out, ds.users.name(u));
    out += '\t';
    put_field(out, ds.user_profile[u].text);
    for (const auto& k : attr_names) {
      out += '\t';
      auto it = ds.user_profile[u].attributes.find(k);
      if (it != ds.user_profile[u].attributes.end()) put_field(out, it->second);
    }
    out += '\n';
  }
  write_text((d / "users.tsv").string(), out);

  // interactions.tsv
  const bool with_split = !ds.fixed_split.empty();
  out = with_split ? "user\titem\tdomain\trating\ttimestamp\tsplit\n"
                   : "user\titem\tdomain\trating\ttimestamp\n";
  out.reserve(out.size() + ds.interactions.size() * 32);
  char num[64];
  for (size_t k = 0; k < ds.interactions.size(); ++k) {
    const Interaction& x = ds.interactions[k];
    put_field(out, ds.users.name(x.user));
    out += '\t';
    put_field(out, ds.items.name(x.item));
    out += '\t';
    put_field(out, ds.domains.name(ds.item_domain[x.item]));
    out += '\t';
    if (x.has_rating()) {
      std::snprintf(num, sizeof num, "%.9g", static_cast<double>(x.rating));
      out += num;
    }
    out += '\t';
    if (x.has_timestamp()) out += std::to_string(x.timestamp);
    if (with_split) {
      static const char* names[] = {"train", "validation", "test"};
      out += '\t';
      out += names[ds.fixed_split[k]];
    }
    out += '\n';
  }
  write_text((d / "interactions.tsv").string(), out);

  if (!ds.tags.empty()) {
    out = "user\titem\ttag\ttimestamp\n";
    for (const TagAssignment& a : ds.tags) {
      put_field(out, ds.users.name(a.user));
      out += '\t';
      put_field(out, ds.items.name(a.item));
      out += '\t';
      put_field(out, ds.tag_names.name(a.tag));
      out += '\t';
      if (a.timestamp != kNoTimestamp) out += std::to_string(a.timestamp);
      out += '\n';
    }
    write_text((d / "tags.tsv").string(), out);
  } else {
    fs::remove(d / "tags.tsv", ec);  // a stale file from an earlier write would be read back
  }
}

}  // namespace xdrec
