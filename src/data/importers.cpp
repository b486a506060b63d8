// Importers for the public datasets under ../shared/data (see each folder's PROVENANCE.md).

#include <algorithm>
#include <filesystem>
#include <initializer_list>
#include <map>

#include "data/formats.h"

namespace fs = std::filesystem;

namespace xdrec::data {

namespace {

std::string join_path(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}
bool has_file(const std::string& dir, const std::string& name) {
  return fs::is_regular_file(fs::path(dir) / name);
}
// Paths of those of `names` that exist as files in dir, appended to out in the given order.
void append_present(std::vector<std::string>& out, const std::string& dir,
                    std::initializer_list<const char*> names) {
  for (const char* f : names)
    if (has_file(dir, f)) out.push_back(join_path(dir, f));
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// HTML character references found in Amazon titles (&amp;, &quot;, &#153;, ...) decoded to UTF-8. Numeric
// references 128..159 are read as Windows-1252, as browsers do. Unknown references stay as they are.
std::string decode_html_entities(std::string_view s) {
  if (s.find('&') == std::string_view::npos) return std::string(s);
  static const std::map<std::string_view, uint32_t> named = {
      {"quot", 0x22},    {"amp", 0x26},     {"apos", 0x27},     {"lt", 0x3C},       {"gt", 0x3E},
      {"nbsp", 0x20},    {"iexcl", 0xA1},   {"cent", 0xA2},     {"pound", 0xA3},    {"yen", 0xA5},
      {"sect", 0xA7},    {"uml", 0xA8},     {"copy", 0xA9},     {"ordf", 0xAA},     {"laquo", 0xAB},
      {"reg", 0xAE},     {"deg", 0xB0},     {"plusmn", 0xB1},   {"sup2", 0xB2},     {"sup3", 0xB3},
      {"micro", 0xB5},   {"para", 0xB6},    {"middot", 0xB7},   {"sup1", 0xB9},     {"ordm", 0xBA},
      {"raquo", 0xBB},   {"frac14", 0xBC},  {"frac12", 0xBD},   {"frac34", 0xBE},   {"iquest", 0xBF},
      {"Agrave", 0xC0},  {"Aacute", 0xC1},  {"Acirc", 0xC2},    {"Atilde", 0xC3},   {"Auml", 0xC4},
      {"Aring", 0xC5},   {"Ccedil", 0xC7},  {"Egrave", 0xC8},   {"Eacute", 0xC9},   {"Ntilde", 0xD1},
      {"Ouml", 0xD6},    {"times", 0xD7},   {"Uuml", 0xDC},     {"szlig", 0xDF},    {"agrave", 0xE0},
      {"aacute", 0xE1},  {"acirc", 0xE2},   {"atilde", 0xE3},   {"auml", 0xE4},     {"aring", 0xE5},
      {"ccedil", 0xE7},  {"egrave", 0xE8},  {"eacute", 0xE9},   {"ecirc", 0xEA},    {"euml", 0xEB},
      {"igrave", 0xEC},  {"iacute", 0xED},  {"icirc", 0xEE},    {"iuml", 0xEF},     {"ntilde", 0xF1},
      {"ograve", 0xF2},  {"oacute", 0xF3},  {"ocirc", 0xF4},    {"otilde", 0xF5},   {"ouml", 0xF6},
      {"divide", 0xF7},  {"oslash", 0xF8},  {"ugrave", 0xF9},   {"uacute", 0xFA},   {"ucirc", 0xFB},
      {"uuml", 0xFC},    {"ndash", 0x2013}, {"mdash", 0x2014},  {"lsquo", 0x2018},  {"rsquo", 0x2019},
      {"ldquo", 0x201C}, {"rdquo", 0x201D}, {"bull", 0x2022},   {"hellip", 0x2026}, {"euro", 0x20AC},
      {"trade", 0x2122}, {"minus", 0x2212}, {"spades", 0x2660}, {"clubs", 0x2663},  {"hearts", 0x2665},
      {"diams", 0x2666}};
  static const uint16_t cp1252[32] = {0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
                                      0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0,      0x017D, 0,
                                      0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                      0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178};
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] != '&') {
      out.push_back(s[i++]);
      continue;
    }
    const size_t semi = s.find(';', i + 1);
    if (semi == std::string_view::npos || semi - i > 10) {
      out.push_back(s[i++]);
      continue;
    }
    const std::string_view ref = s.substr(i + 1, semi - i - 1);
    uint32_t cp = 0;
    bool ok = false;
    if (ref.size() > 1 && ref[0] == '#') {
      const bool hex = ref[1] == 'x' || ref[1] == 'X';
      const std::string_view digits = ref.substr(hex ? 2 : 1);
      uint64_t v = 0;
      ok = !digits.empty() && digits.size() <= 7;
      for (char c : digits) {
        int dv = (c >= '0' && c <= '9')          ? c - '0'
                 : hex && (c >= 'a' && c <= 'f') ? c - 'a' + 10
                 : hex && (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                                 : -1;
        if (dv < 0) ok = false;
        v = v * (hex ? 16 : 10) + static_cast<uint64_t>(dv < 0 ? 0 : dv);
      }
      if (ok && v >= 0x80 && v < 0xA0) v = cp1252[v - 0x80];
      ok = ok && v > 0 && v <= 0x10FFFF && !(v >= 0xD800 && v <= 0xDFFF);
      cp = static_cast<uint32_t>(v);
    } else if (auto it = named.find(ref); it != named.end()) {
      cp = it->second;
      ok = true;
    }
    if (!ok) {
      out.push_back(s[i++]);
      continue;
    }
    if (cp != 0xFEFF) append_utf8(out, cp);  // a byte-order mark inside a title carries nothing
    i = semi + 1;
  }
  return out;
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's civil-days algorithm).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

int64_t need_int(const DelimitedReader& rd, const Record& rec, size_t k, const char* what) {
  auto v = parse_int(rec.fields[k]);
  if (!v)
    rd.fail(rec, k,
            std::string("bad ") + what + " " + quote_for_message(rec.fields[k]) + " (expected an integer)");
  return *v;
}

double need_number(const DelimitedReader& rd, const Record& rec, size_t k, const char* what) {
  auto v = parse_double(rec.fields[k]);
  if (!v)
    rd.fail(rec, k,
            std::string("bad ") + what + " " + quote_for_message(rec.fields[k]) + " (expected a number)");
  return *v;
}

void need_nonempty(const DelimitedReader& rd, const Record& rec, size_t k, const char* what) {
  if (rec.fields[k].empty()) rd.fail(rec, k, std::string("empty ") + what);
}

// Finds a header column or throws ParseError at the header.
struct Columns {
  std::vector<size_t> index;
  size_t width = 0;
  Columns(DelimitedReader& rd, std::initializer_list<const char*> names) {
    Header h = Header::read(rd);
    for (const char* n : names) index.push_back(h.require(n));
    width = h.names().size();
  }
};

// ---- MovieLens 100K -------------------------------------------------------------------------------------

std::vector<std::string> ml100k_inputs(const std::string& dir) {
  std::vector<std::string> v;
  append_present(v, dir, {"u.data", "u.item", "u.user", "u.genre"});
  return v;
}

std::string ml100k_profile(const std::string& age, const std::string& gender, const std::string& occupation) {
  std::string text = age + " year old";
  if (gender == "M")
    text += " male";
  else if (gender == "F")
    text += " female";
  else if (!gender.empty())
    text += " " + gender;
  else
    text += " person";
  if (occupation == "none")
    text += " with no occupation";
  else if (!occupation.empty() && occupation != "other")
    text += " " + occupation;
  return text;
}

Dataset read_ml100k(const std::string& dir, ReadContext& ctx) {
  Dataset ds;
  ds.name = "ml-100k";
  const std::string domain = "movies";
  if (!has_file(dir, "u.data")) throw Error("ml-100k: no u.data in '" + dir + "'");

  std::vector<std::string> genres;
  if (has_file(dir, "u.genre")) {
    const FileData f = ctx.load(join_path(dir, "u.genre"));
    DelimitedReader rd(f.path, f.bytes, DelimitedFormat::plain('|'));
    for_each_record(rd, ctx, [&](const Record& r) {
      rd.expect_fields(r, 2);
      need_nonempty(rd, r, 0, "genre name");
      const int64_t idx = need_int(rd, r, 1, "genre index");
      if (idx < 0 || idx > 1000) rd.fail(r, 1, "genre index out of range");
      if (genres.size() <= static_cast<size_t>(idx)) genres.resize(idx + 1);
      genres[idx] = r.fields[0];
    });
  }

  bool items_given = false;
  if (has_file(dir, "u.item")) {
    items_given = true;
    const FileData f = ctx.load(join_path(dir, "u.item"));
    // The original release is ISO-8859-1: text fields are converted to UTF-8 where needed.
    DelimitedReader rd(f.path, f.bytes, DelimitedFormat::plain('|', false));
    std::vector<uint32_t> line_of;
    for_each_record(rd, ctx, [&](const Record& r) {
      if (genres.empty())
        rd.expect_fields(r, 5, true);
      else
        rd.expect_fields(r, 5 + genres.size());
      need_nonempty(rd, r, 0, "movie id");
      need_int(rd, r, 0, "movie id");
      std::vector<std::string> cats;
      for (size_t k = 5; k < r.size(); ++k) {
        if (r.fields[k] != "0" && r.fields[k] != "1")
          rd.fail(r, k, "bad genre flag " + quote_for_message(r.fields[k]) + " (expected 0 or 1)");
        if (r.fields[k] == "1") {
          const size_t g = k - 5;
          const std::string name =
              g < genres.size() && !genres[g].empty() ? genres[g] : "genre " + std::to_string(g);
          if (name != "unknown") cats.push_back(name);
        }
      }
      const std::string id(r.fields[0]);
      if (auto prev = ds.items.find(id))
        rd.fail(r, 0, "duplicate movie id " + id + " (first on line " + std::to_string(line_of[*prev]) + ")");
      const uint32_t i = ds.add_item(id, domain);
      line_of.resize(ds.n_items());
      line_of[i] = static_cast<uint32_t>(r.line);
      ds.item_text[i].title = utf8_or_latin1(r.fields[1]);
      ds.item_text[i].categories = std::move(cats);
    });
  }

  if (has_file(dir, "u.user")) {
    const FileData f = ctx.load(join_path(dir, "u.user"));
    DelimitedReader rd(f.path, f.bytes, DelimitedFormat::plain('|'));
    for_each_record(rd, ctx, [&](const Record& r) {
      rd.expect_fields(r, 5);
      need_nonempty(rd, r, 0, "user id");
      const int64_t age = need_int(rd, r, 1, "age");
      if (age < 0 || age > 150) rd.fail(r, 1, "age out of range");
      const std::string id(r.fields[0]);
      if (ds.users.find(id)) rd.fail(r, 0, "duplicate user id " + id);
      const uint32_t u = ds.add_user(id);
      UserProfile& p = ds.user_profile[u];
      const std::string gender(r.fields[2]), occupation(r.fields[3]);
      p.attributes["age"] = std::to_string(age);
      if (!gender.empty()) p.attributes["gender"] = gender;
      if (!occupation.empty()) p.attributes["occupation"] = occupation;
      if (!r.fields[4].empty()) p.attributes["zip"] = std::string(r.fields[4]);
      p.text = ml100k_profile(std::to_string(age), gender, occupation);
    });
  }

  {
    const FileData f = ctx.load(join_path(dir, "u.data"));
    DelimitedReader rd(f.path, f.bytes, DelimitedFormat::plain('\t'));
    ds.interactions.reserve(f.bytes.size() / 19);
    std::string key;
    for_each_record(rd, ctx, [&](const Record& r) {
      rd.expect_fields(r, 4);
      need_nonempty(rd, r, 0, "user id");
      need_nonempty(rd, r, 1, "item id");
      Interaction x;
      x.rating = static_cast<float>(need_number(rd, r, 2, "rating"));
      x.timestamp = need_int(rd, r, 3, "timestamp");
      key.assign(r.fields[1]);
      auto item = ds.items.find(key);
      if (!item && items_given)
        rd.fail(r, 1, "unknown item " + quote_for_message(r.fields[1]) + " (not in u.item)");
      x.item = item ? *item : ds.add_item(key, domain);
      key.assign(r.fields[0]);
      x.user = ds.add_user(key);
      ds.interactions.push_back(x);
    });
  }
  return ds;
}

// ---- MovieLens latest-small ----------------------------------------------------------------------------

std::vector<std::string> mllatest_inputs(const std::string& dir) {
  std::vector<std::string> v;
  append_present(v, dir, {"movies.csv", "ratings.csv", "tags.csv"});
  return v;
}

Dataset read_mllatest(const std::string& dir, ReadContext& ctx) {
  Dataset ds;
  ds.name = "ml-latest-small";
  const std::string domain = "movies";
  bool items_given = false;
  if (has_file(dir, "movies.csv")) {
    items_given = true;
    const FileData f = ctx.load(join_path(dir, "movies.csv"));
    DelimitedReader rd(f.path, f.bytes, DelimitedFormat::csv());
    const Columns c(rd, {"movieId", "title", "genres"});
    for_each_record(rd, ctx, [&](const Record& r) {
      rd.expect_fields(r, c.width);
      const size_t ki = c.index[0], kt = c.index[1], kg = c.index[2];
      need_nonempty(rd, r, ki, "movie id");
      const std::string id(r.fields[ki]);
      if (ds.items.find(id)) rd.fail(r, ki, "duplicate movie id " + id);
      const uint32_t i = ds.add_item(id, domain);
      ds.item_text[i].title = r.fields[kt];
      for (auto& g : split_categories(r.fields[kg]))
        if (g != "(no genres listed)") ds.item_text[i].categories.push_back(std::move(g));
    });
  }
  if (!has_file(dir, "ratings.csv")) throw Error("ml-latest-small: no ratings.csv in '" + dir + "'");
  {
    const FileData f = ctx.load(join_path(dir, "ratings.csv"));
    DelimitedReader rd(f.path, f.bytes, DelimitedFormat::csv());
    const Columns c(rd, {"userId", "movieId", "rating", "timestamp"});
    ds.interactions.reserve(f.bytes.size() / 24);
    std::string key;
    for_each_record(rd, ctx, [&](const Record& r) {
      rd.expect_fields(r, c.width);
      const size_t ku = c.index[0], ki = c.index[1], kr = c.index[2], kt = c.index[3];
      need_nonempty(rd, r, ku, "user id");
      need_nonempty(rd, r, ki, "movie id");
      Interaction x;
      x.rating = static_cast<float>(need_number(rd, r, kr, "rating"));
      x.timestamp = need_int(rd, r, kt, "timestamp");
      key.assign(r.fields[ki]);
      auto item = ds.items.find(key);
      if (!item && items_given)
        rd.fail(r, ki, "unknown movie " + quote_for_message(r.fields[ki]) + " (not in movies.csv)");
      x.item = item ? *item : ds.add_item(key, domain);
      key.assign(r.fields[ku]);
      x.user = ds.add_user(key);
      ds.interactions.push_back(x);
    });
  }
  if (has_file(dir, "tags.csv")) {
    // Tags go to Dataset::tags, not into item text: most were written by users who rated the same movie
    // (see the PROVENANCE caution), so they must be filtered per split (item_text_with_tags).
    const FileData f = ctx.load(join_path(dir, "tags.csv"));
    DelimitedReader rd(f.path, f.bytes, DelimitedFormat::csv());
    const Columns c(rd, {"userId", "movieId", "tag", "timestamp"});
    for_each_record(rd, ctx, [&](const Record& r) {
      rd.expect_fields(r, c.width);
      const size_t ku = c.index[0], ki = c.index[1], kg = c.index[2], kt = c.index[3];
      need_nonempty(rd, r, ku, "user id");
      need_nonempty(rd, r, kg, "tag");
      auto item = ds.items.find(std::string(r.fields[ki]));
      if (!item) rd.fail(r, ki, "unknown movie " + quote_for_message(r.fields[ki]));
      TagAssignment a;
      a.timestamp = need_int(rd, r, kt, "timestamp");
      a.item = *item;
      a.user = ds.add_user(std::string(r.fields[ku]));
      a.tag = ds.tag_names.get_or_add(std::string(r.fields[kg]));
      ds.tags.push_back(a);
    });
  }
  return ds;
}

// ---- Douban (GA-DTCDR): <domain>_ratings.dat per domain --------------------------------------------------

std::vector<std::string> douban_inputs(const std::string& dir) {
  std::vector<std::string> v;
  if (!fs::is_directory(dir)) return v;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (e.is_regular_file() && n.size() > 12 && n.ends_with("_ratings.dat")) v.push_back(e.path().string());
  }
  std::sort(v.begin(), v.end());
  return v;
}

Dataset read_douban(const std::string& dir, ReadContext& ctx) {
  Dataset ds;
  ds.name = "douban";
  const auto files = douban_inputs(dir);
  if (files.empty()) throw Error("douban: no <domain>_ratings.dat files in '" + dir + "'");
  std::string key;
  for (const auto& path : files) {
    const std::string fname = fs::path(path).filename().string();
    const std::string domain = fname.substr(0, fname.size() - std::string("_ratings.dat").size());
    const FileData f = ctx.load(path);
    DelimitedReader rd(f.path, f.bytes, DelimitedFormat::plain('\t'));
    for_each_record(rd, ctx, [&](const Record& r) {
      rd.expect_fields(r, 3);
      need_nonempty(rd, r, 0, "user id");
      need_nonempty(rd, r, 1, "item id");
      Interaction x;
      x.rating = static_cast<float>(need_number(rd, r, 2, "rating"));
      key = domain;
      key += ':';
      key.append(r.fields[1]);
      x.item = ds.add_item(key, domain);  // item ids are per domain: "book:12"
      key.assign(r.fields[0]);
      x.user = ds.add_user(key);  // user ids are shared by the domains
      ds.interactions.push_back(x);
    });
  }
  return ds;
}

// ---- Amazon Food-Kitchen (LLMCDSR) ----------------------------------------------------------------------

struct SeqFiles {
  std::vector<std::string> items;  // items_<domain>.tsv
  std::vector<std::string> train;  // train_*.txt
  std::string valid, test;
};

SeqFiles seq_files(const std::string& dir) {
  SeqFiles s;
  if (!fs::is_directory(dir)) return s;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string n = e.path().filename().string();
    if (n.starts_with("items_") && n.ends_with(".tsv")) s.items.push_back(e.path().string());
    if (n.starts_with("train_") && n.ends_with(".txt")) s.train.push_back(e.path().string());
    if (n == "valid.txt") s.valid = e.path().string();
    if (n == "test.txt") s.test = e.path().string();
  }
  std::sort(s.items.begin(), s.items.end());
  std::sort(s.train.begin(), s.train.end());
  return s;
}

std::vector<std::string> seq_inputs(const std::string& dir) {
  SeqFiles s = seq_files(dir);
  std::vector<std::string> v = s.items;
  v.insert(v.end(), s.train.begin(), s.train.end());
  if (!s.valid.empty()) v.push_back(s.valid);
  if (!s.test.empty()) v.push_back(s.test);
  return v;
}

Dataset read_food_kitchen(const std::string& dir, ReadContext& ctx) {
  Dataset ds;
  ds.name = fs::path(dir).lexically_normal().filename().string();
  if (ds.name.empty()) ds.name = fs::path(dir).lexically_normal().parent_path().filename().string();
  if (ds.name.find("food-kitchen") != std::string::npos) ds.name = "food-kitchen";
  const SeqFiles files = seq_files(dir);
  if (files.items.empty()) throw Error("food-kitchen: no items_<domain>.tsv files in '" + dir + "'");
  if (files.train.empty()) throw Error("food-kitchen: no train_*.txt files in '" + dir + "'");

  // Global item id (as used in the sequence files) -> item index.
  std::vector<int64_t> global;
  for (const auto& path : files.items) {
    const std::string fname = fs::path(path).filename().string();
    const std::string domain = fname.substr(6, fname.size() - 6 - 4);
    const FileData f = ctx.load(path);
    DelimitedReader rd(f.path, f.bytes, DelimitedFormat::plain('\t'));
    const Columns c(rd, {"global_item_id", "domain_item_id", "title"});
    for_each_record(rd, ctx, [&](const Record& r) {
      rd.expect_fields(r, c.width);
      const int64_t g = need_int(rd, r, c.index[0], "global item id");
      const int64_t local = need_int(rd, r, c.index[1], "domain item id");
      if (g < 0 || g > 100000000) rd.fail(r, c.index[0], "global item id out of range");
      if (static_cast<size_t>(g) < global.size() && global[g] >= 0)
        rd.fail(r, c.index[0], "duplicate global item id " + std::to_string(g));
      const uint32_t i = ds.add_item(domain + ":" + std::to_string(local), domain);
      if (global.size() <= static_cast<size_t>(g)) global.resize(g + 1, -1);
      global[g] = i;
      ds.item_text[i].title = decode_html_entities(r.fields[c.index[2]]);
    });
  }

  std::vector<uint8_t> split;
  auto read_sequences = [&](const std::string& path, int held_out) {
    const std::string prefix = fs::path(path).stem().string() + ":";
    const FileData f = ctx.load(path);
    DelimitedReader rd(f.path, f.bytes, DelimitedFormat::plain('\t'));
    std::vector<uint32_t> seq;
    for_each_record(rd, ctx, [&](const Record& r) {
      rd.expect_fields(r, 2);
      need_nonempty(rd, r, 0, "user id");
      if (r.fields[1].empty()) rd.fail(r, 1, "empty item sequence");
      seq.clear();
      const std::string_view list = r.fields[1];
      size_t b = 0;
      while (b <= list.size()) {
        size_t e = list.find(',', b);
        if (e == std::string_view::npos) e = list.size();
        const std::string_view tok = list.substr(b, e - b);
        auto g = parse_int(tok);
        const size_t col = r.columns[1] + b;
        if (!g) throw ParseError(f.path, r.lines[1], col, "bad item id " + quote_for_message(tok));
        if (*g < 0 || static_cast<size_t>(*g) >= global.size() || global[*g] < 0)
          throw ParseError(f.path, r.lines[1], col,
                           "unknown item " + std::to_string(*g) + " (not in the items_*.tsv files)");
        seq.push_back(static_cast<uint32_t>(global[*g]));
        b = e + 1;
      }
      const uint32_t u = ds.add_user(prefix + std::string(r.fields[0]));
      for (size_t k = 0; k < seq.size(); ++k) {
        Interaction x;
        x.user = u;
        x.item = seq[k];
        x.timestamp = static_cast<int64_t>(k + 1);  // sequence order; the data has no times
        ds.interactions.push_back(x);
        split.push_back(held_out > 0 && k + 1 == seq.size() ? static_cast<uint8_t>(held_out) : 0);
      }
    });
  };
  for (const auto& p : files.train) read_sequences(p, 0);
  if (!files.valid.empty()) read_sequences(files.valid, 1);
  if (!files.test.empty()) read_sequences(files.test, 2);
  if (!files.valid.empty() || !files.test.empty()) ds.fixed_split = std::move(split);
  return ds;
}

// ---- Amazon 4 pairs (DisenCDR): X_Y/ and Y_X/ with train.txt and test.txt -------------------------------

struct PairDirs {
  std::string a, b;          // X_Y and Y_X
  std::string dom_a, dom_b;  // X and Y
};

std::optional<PairDirs> pair_dirs(const std::string& dir) {
  const fs::path p = fs::path(dir).lexically_normal();
  std::string name = p.filename().string();
  fs::path parent = p.parent_path();
  if (name.empty()) {
    name = p.parent_path().filename().string();
    parent = p.parent_path().parent_path();
  }
  const size_t us = name.find('_');
  if (us == std::string::npos || us == 0 || us + 1 >= name.size()) return std::nullopt;
  PairDirs d;
  d.dom_a = name.substr(0, us);
  d.dom_b = name.substr(us + 1);
  d.a = p.string();
  d.b = (parent / (d.dom_b + "_" + d.dom_a)).string();
  return d;
}

bool detect_disencdr(const std::string& dir) {
  if (!has_file(dir, "train.txt") || !has_file(dir, "test.txt")) return false;
  auto d = pair_dirs(dir);
  return d && has_file(d->b, "train.txt");
}

std::vector<std::string> disencdr_inputs(const std::string& dir) {
  std::vector<std::string> v;
  auto d = pair_dirs(dir);
  if (!d) return v;
  for (const auto& sub : {d->a, d->b}) append_present(v, sub, {"train.txt", "test.txt"});
  return v;
}

Dataset read_disencdr(const std::string& dir, ReadContext& ctx) {
  auto d = pair_dirs(dir);
  if (!d || !has_file(dir, "train.txt")) {
    std::string hint;
    if (fs::is_directory(dir))
      for (const auto& e : fs::directory_iterator(dir))
        if (e.is_directory() && has_file(e.path().string(), "train.txt"))
          hint += (hint.empty() ? "" : ", ") + e.path().filename().string();
    throw Error("disencdr: '" + dir + "' is not a scenario folder X_Y with train.txt and test.txt" +
                (hint.empty() ? std::string() : " (choose one of: " + hint + ")"));
  }
  if (!has_file(d->b, "train.txt"))
    throw Error("disencdr: the paired folder '" + d->b + "' (domain " + d->dom_b + ") has no train.txt");
  Dataset ds;
  ds.name = "disencdr:" + d->dom_a + "_" + d->dom_b;
  std::vector<uint8_t> split;
  std::string key;
  auto read_pairs = [&](const std::string& path, const std::string& domain, uint8_t part) {
    const FileData f = ctx.load(path);
    DelimitedReader rd(f.path, f.bytes, DelimitedFormat::plain('\t'));
    for_each_record(rd, ctx, [&](const Record& r) {
      rd.expect_fields(r, 3);
      need_nonempty(rd, r, 0, "user id");
      need_nonempty(rd, r, 1, "item id");
      need_number(rd, r, 2, "weight");  // always 1: implicit feedback, kept without a rating
      Interaction x;
      key = domain;
      key += ':';
      key.append(r.fields[1]);
      x.item = ds.add_item(key, domain);
      key.assign(r.fields[0]);
      x.user = ds.add_user(key);
      ds.interactions.push_back(x);
      split.push_back(part);
    });
  };
  read_pairs(join_path(d->a, "train.txt"), d->dom_a, 0);
  read_pairs(join_path(d->b, "train.txt"), d->dom_b, 0);
  if (has_file(d->a, "test.txt")) read_pairs(join_path(d->a, "test.txt"), d->dom_a, 2);
  if (has_file(d->b, "test.txt")) read_pairs(join_path(d->b, "test.txt"), d->dom_b, 2);
  ds.fixed_split = std::move(split);
  return ds;
}

// ---- Last.fm HetRec 2011 ---------------------------------------------------------------------------------

std::vector<std::string> lastfm_inputs(const std::string& dir) {
  std::vector<std::string> v;
  append_present(v, dir, {"artists.dat", "user_artists.dat", "tags.dat", "user_taggedartists.dat"});
  return v;
}

Dataset read_lastfm(const std::string& dir, ReadContext& ctx) {
  Dataset ds;
  ds.name = "lastfm";
  const std::string domain = "music";
  bool items_given = false;
  if (has_file(dir, "artists.dat")) {
    items_given = true;
    const FileData f = ctx.load(join_path(dir, "artists.dat"));
    DelimitedReader rd(f.path, f.bytes, DelimitedFormat::plain('\t'));
    const Columns c(rd, {"id", "name"});
    for_each_record(rd, ctx, [&](const Record& r) {
      rd.expect_fields(r, c.width);
      need_nonempty(rd, r, c.index[0], "artist id");
      const std::string id(r.fields[c.index[0]]);
      if (ds.items.find(id)) rd.fail(r, c.index[0], "duplicate artist id " + id);
      const uint32_t i = ds.add_item(id, domain);
      ds.item_text[i].title = r.fields[c.index[1]];
    });
  }
  if (!has_file(dir, "user_artists.dat")) throw Error("lastfm: no user_artists.dat in '" + dir + "'");
  {
    const FileData f = ctx.load(join_path(dir, "user_artists.dat"));
    DelimitedReader rd(f.path, f.bytes, DelimitedFormat::plain('\t'));
    const Columns c(rd, {"userID", "artistID", "weight"});
    std::string key;
    for_each_record(rd, ctx, [&](const Record& r) {
      rd.expect_fields(r, c.width);
      const size_t ku = c.index[0], ki = c.index[1], kw = c.index[2];
      need_nonempty(rd, r, ku, "user id");
      need_nonempty(rd, r, ki, "artist id");
      Interaction x;
      x.rating = static_cast<float>(need_number(rd, r, kw, "play count"));  // play count as the weight
      key.assign(r.fields[ki]);
      auto item = ds.items.find(key);
      if (!item && items_given)
        rd.fail(r, ki, "unknown artist " + quote_for_message(r.fields[ki]) + " (not in artists.dat)");
      x.item = item ? *item : ds.add_item(key, domain);
      key.assign(r.fields[ku]);
      x.user = ds.add_user(key);
      ds.interactions.push_back(x);
    });
  }
  if (has_file(dir, "tags.dat") && has_file(dir, "user_taggedartists.dat")) {
    std::map<std::string, uint32_t> tag_index;  // tagID -> index into tag_names
    {
      const FileData f = ctx.load(join_path(dir, "tags.dat"));
      DelimitedReader rd(f.path, f.bytes, DelimitedFormat::plain('\t', false));  // ISO-8859-1
      const Columns c(rd, {"tagID", "tagValue"});
      for_each_record(rd, ctx, [&](const Record& r) {
        rd.expect_fields(r, c.width);
        need_nonempty(rd, r, c.index[0], "tag id");
        need_nonempty(rd, r, c.index[1], "tag");
        tag_index[std::string(r.fields[c.index[0]])] =
            ds.tag_names.get_or_add(utf8_or_latin1(r.fields[c.index[1]]));
      });
    }
    const FileData f = ctx.load(join_path(dir, "user_taggedartists.dat"));
    DelimitedReader rd(f.path, f.bytes, DelimitedFormat::plain('\t'));
    const Columns c(rd, {"userID", "artistID", "tagID", "day", "month", "year"});
    for_each_record(rd, ctx, [&](const Record& r) {
      rd.expect_fields(r, c.width);
      const auto& k = c.index;
      need_nonempty(rd, r, k[0], "user id");
      auto t = tag_index.find(std::string(r.fields[k[2]]));
      if (t == tag_index.end()) rd.fail(r, k[2], "unknown tag id " + quote_for_message(r.fields[k[2]]));
      const int64_t day = need_int(rd, r, k[3], "day"), month = need_int(rd, r, k[4], "month"),
                    year = need_int(rd, r, k[5], "year");
      auto item = ds.items.find(std::string(r.fields[k[1]]));
      if (!item) return;  // a few hundred tagged artists are not in artists.dat: nothing to attach the tag to
      TagAssignment a;
      a.item = *item;
      a.user = ds.add_user(std::string(r.fields[k[0]]));
      a.tag = t->second;
      if (day >= 1 && day <= 31 && month >= 1 && month <= 12)
        a.timestamp = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86400;
      ds.tags.push_back(a);
    });
  }
  return ds;
}

bool detect_ml100k(const std::string& d) {
  return has_file(d, "u.data");
}
bool detect_mllatest(const std::string& d) {
  return has_file(d, "ratings.csv") && has_file(d, "movies.csv");
}
bool detect_douban(const std::string& d) {
  return !douban_inputs(d).empty();
}
bool detect_food_kitchen(const std::string& d) {
  const SeqFiles s = seq_files(d);
  return !s.items.empty() && !s.train.empty();
}
bool detect_lastfm(const std::string& d) {
  return has_file(d, "user_artists.dat");
}

}  // namespace

const std::vector<Format>& formats() {
  static const std::vector<Format> all = {
      {"ml-100k", "MovieLens 100K (u.data, u.item, u.user, u.genre)", detect_ml100k, ml100k_inputs,
       read_ml100k},
      {"ml-latest-small", "MovieLens latest (ratings.csv, movies.csv, tags.csv)", detect_mllatest,
       mllatest_inputs, read_mllatest},
      {"douban", "Douban <domain>_ratings.dat files (user, item, rating)", detect_douban, douban_inputs,
       read_douban},
      {"food-kitchen", "LLMCDSR sequences (items_<domain>.tsv, train_*.txt, valid.txt, test.txt)",
       detect_food_kitchen, seq_inputs, read_food_kitchen},
      {"disencdr", "DisenCDR scenario folder X_Y with its pair Y_X (train.txt, test.txt)", detect_disencdr,
       disencdr_inputs, read_disencdr},
      {"lastfm", "Last.fm HetRec 2011 (user_artists.dat, artists.dat, tags)", detect_lastfm, lastfm_inputs,
       read_lastfm},
      {"canonical", "interactions/items/users/tags as CSV, TSV or JSON lines", detect_canonical,
       canonical_inputs, read_canonical},
  };
  return all;
}

}  // namespace xdrec::data
