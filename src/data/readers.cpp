// read_dataset (format detection and the binary cache) and the binary dataset file.

#include "xdrec/readers.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "data/formats.h"

namespace fs = std::filesystem;

namespace xdrec {

namespace data {

FileData ReadContext::load(const std::string& path) {
  FileData f = FileData::load(path);
  report.bytes += f.bytes.size();
  return f;
}

}  // namespace data

namespace {

// ---- Binary dataset file ---------------------------------------------------------------------------------
//
// Layout (little-endian): magic "XDRECDS\n", u32 version, u32 byte-order check 0x01020304, u64 payload size,
// u64 hash of the payload (data::hash_bytes), then the payload: cache metadata, name, id maps, item domains,
// item text, user profiles, interactions (column arrays), fixed split, tags.

constexpr char kMagic[8] = {'X', 'D', 'R', 'E', 'C', 'D', 'S', '\n'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kByteOrder = 0x01020304;
constexpr size_t kHeaderSize = 8 + 4 + 4 + 8 + 8;

// What the cache stores besides the dataset: the key it was made for and the original read report.
struct CacheMeta {
  std::string key;
  uint64_t records = 0, skipped = 0, bytes = 0;
  double seconds = 0;
  std::vector<std::string> examples;
};

class Writer {
 public:
  std::string out;
  template <class T>
  void pod(const T& v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void str(std::string_view s) {
    pod(static_cast<uint64_t>(s.size()));
    out.append(s.data(), s.size());
  }
  template <class T>
  void array(const T* p, size_t n) {
    pod(static_cast<uint64_t>(n));
    out.append(reinterpret_cast<const char*>(p), n * sizeof(T));
  }
  // A column of n values get(0..n-1), stored like array().
  template <class Get>
  void column(size_t n, Get get) {
    using T = decltype(get(size_t{0}));
    pod(static_cast<uint64_t>(n));
    const size_t off = out.size();
    out.resize(off + n * sizeof(T));
    char* dst = out.data() + off;
    for (size_t k = 0; k < n; ++k) {
      const T v = get(k);
      std::memcpy(dst + k * sizeof(T), &v, sizeof(T));
    }
  }
  void ids(const IdMap& m) {
    pod(static_cast<uint64_t>(m.size()));
    for (const auto& s : m.names()) str(s);
  }
};

class Reader {
 public:
  Reader(const std::string& path, std::string_view data) : path_(path), data_(data) {}
  template <class T>
  T pod() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, data_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }
  uint64_t count(size_t elem_size) {
    const uint64_t n = pod<uint64_t>();
    if (elem_size && n > (data_.size() - pos_) / elem_size) corrupt("a count exceeds the file size");
    return n;
  }
  std::string str() {
    const uint64_t n = count(1);
    std::string s(data_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  template <class T>
  std::vector<T> array() {
    const uint64_t n = count(sizeof(T));
    std::vector<T> v(n);
    if (n) std::memcpy(v.data(), data_.data() + pos_, n * sizeof(T));
    pos_ += n * sizeof(T);
    return v;
  }
  // Count of the next array without consuming it (checked against the bytes left).
  uint64_t peek_count(size_t elem_size) {
    const size_t save = pos_;
    const uint64_t n = count(elem_size);
    pos_ = save;
    return n;
  }
  // Reads a column written by Writer::column, calling set(k, value) for each k below its length when that
  // length is at most `limit`; returns the length.
  template <class T, class Set>
  uint64_t column(Set set, uint64_t limit) {
    const uint64_t n = count(sizeof(T));
    if (n > limit) return n;
    const char* src = data_.data() + pos_;
    for (uint64_t k = 0; k < n; ++k) {
      T v;
      std::memcpy(&v, src + k * sizeof(T), sizeof(T));
      set(k, v);
    }
    pos_ += n * sizeof(T);
    return n;
  }
  void ids(IdMap& m) {
    const uint64_t n = count(8);
    m.reserve(n);
    for (uint64_t k = 0; k < n; ++k) {
      const std::string s = str();
      if (m.get_or_add(s) != k) corrupt("duplicate id '" + s + "'");
    }
  }
  bool at_end() const { return pos_ == data_.size(); }
  [[noreturn]] void corrupt(const std::string& why) const {
    throw Error("'" + path_ + "': corrupt dataset file (" + why + ")");
  }

 private:
  void need(size_t n) {
    if (data_.size() - pos_ < n) corrupt("unexpected end of data");
  }
  const std::string& path_;
  std::string_view data_;
  size_t pos_ = 0;
};

std::string encode(const Dataset& ds, const CacheMeta& meta) {
  Writer w;
  w.out.reserve(64 + ds.interactions.size() * 20 + ds.n_items() * 48 + ds.n_users() * 24);
  w.str(meta.key);
  w.pod(meta.records);
  w.pod(meta.skipped);
  w.pod(meta.bytes);
  w.pod(meta.seconds);
  w.pod(static_cast<uint64_t>(meta.examples.size()));
  for (const auto& e : meta.examples) w.str(e);

  w.str(ds.name);
  w.ids(ds.domains);
  w.ids(ds.users);
  w.ids(ds.items);
  w.array(ds.item_domain.data(), ds.item_domain.size());
  w.pod(static_cast<uint64_t>(ds.item_text.size()));
  for (const ItemText& t : ds.item_text) {
    w.str(t.title);
    w.str(t.description);
    w.pod(static_cast<uint64_t>(t.categories.size()));
    for (const auto& c : t.categories) w.str(c);
  }
  w.pod(static_cast<uint64_t>(ds.user_profile.size()));
  for (const UserProfile& p : ds.user_profile) {
    w.str(p.text);
    w.pod(static_cast<uint64_t>(p.attributes.size()));
    for (const auto& [k, v] : p.attributes) {
      w.str(k);
      w.str(v);
    }
  }
  const size_t n = ds.interactions.size();
  w.column(n, [&](size_t k) { return ds.interactions[k].user; });
  w.column(n, [&](size_t k) { return ds.interactions[k].item; });
  w.column(n, [&](size_t k) { return ds.interactions[k].rating; });
  w.column(n, [&](size_t k) { return ds.interactions[k].timestamp; });
  w.array(ds.fixed_split.data(), ds.fixed_split.size());
  w.ids(ds.tag_names);
  const size_t nt = ds.tags.size();
  w.column(nt, [&](size_t k) { return ds.tags[k].user; });
  w.column(nt, [&](size_t k) { return ds.tags[k].item; });
  w.column(nt, [&](size_t k) { return ds.tags[k].tag; });
  w.column(nt, [&](size_t k) { return ds.tags[k].timestamp; });
  return std::move(w.out);
}

void save_binary(const Dataset& ds, const std::string& path, const CacheMeta& meta) {
  ds.validate();
  const std::string payload = encode(ds, meta);
  Writer head;
  head.out.append(kMagic, 8);
  head.pod(kVersion);
  head.pod(kByteOrder);
  head.pod(static_cast<uint64_t>(payload.size()));
  head.pod(data::hash_bytes(payload.data(), payload.size()));
  write_file_atomic(path, [&](std::FILE* f) {
    if (std::fwrite(head.out.data(), 1, head.out.size(), f) != head.out.size() ||
        std::fwrite(payload.data(), 1, payload.size(), f) != payload.size())
      throw Error("write failed for '" + path + "'");
  });
}

Dataset load_binary(const std::string& path, CacheMeta* meta_out) {
  const std::string bytes = data::FileData::load(path).bytes;
  if (bytes.size() < 8 || std::memcmp(bytes.data(), kMagic, 8) != 0)
    throw Error("'" + path + "' is not an xdrec dataset file (bad magic)");
  if (bytes.size() < kHeaderSize)
    throw Error("'" + path + "': truncated dataset file (" + std::to_string(bytes.size()) +
                " bytes, shorter than its header)");
  uint32_t version, order;
  uint64_t size, sum;
  std::memcpy(&version, bytes.data() + 8, 4);
  std::memcpy(&order, bytes.data() + 12, 4);
  std::memcpy(&size, bytes.data() + 16, 8);
  std::memcpy(&sum, bytes.data() + 24, 8);
  if (order != kByteOrder) throw Error("'" + path + "': dataset file written with another byte order");
  if (version != kVersion)
    throw Error("'" + path + "': dataset file version " + std::to_string(version) +
                ", this build reads version " + std::to_string(kVersion) +
                " (re-create it from the source data)");
  if (bytes.size() - kHeaderSize != size)
    throw Error("'" + path + "': truncated dataset file (expected " + std::to_string(kHeaderSize + size) +
                " bytes, found " + std::to_string(bytes.size()) + ")");
  const std::string_view payload = std::string_view(bytes).substr(kHeaderSize);
  if (data::hash_bytes(payload.data(), payload.size()) != sum)
    throw Error("'" + path + "': corrupt dataset file (checksum mismatch)");

  Reader r(path, payload);
  CacheMeta meta;
  meta.key = r.str();
  meta.records = r.pod<uint64_t>();
  meta.skipped = r.pod<uint64_t>();
  meta.bytes = r.pod<uint64_t>();
  meta.seconds = r.pod<double>();
  const uint64_t n_examples = r.count(8);
  for (uint64_t k = 0; k < n_examples; ++k) meta.examples.push_back(r.str());

  Dataset ds;
  ds.name = r.str();
  r.ids(ds.domains);
  r.ids(ds.users);
  r.ids(ds.items);
  ds.item_domain = r.array<uint16_t>();
  const uint64_t n_text = r.count(24);
  ds.item_text.resize(n_text);
  for (ItemText& t : ds.item_text) {
    t.title = r.str();
    t.description = r.str();
    const uint64_t nc = r.count(8);
    t.categories.resize(nc);
    for (auto& c : t.categories) c = r.str();
  }
  const uint64_t n_prof = r.count(16);
  ds.user_profile.resize(n_prof);
  for (UserProfile& p : ds.user_profile) {
    p.text = r.str();
    const uint64_t na = r.count(16);
    for (uint64_t k = 0; k < na; ++k) {
      std::string key = r.str();
      p.attributes[std::move(key)] = r.str();
    }
  }
  {
    // Four columns of equal length: user, item, rating, timestamp.
    auto& v = ds.interactions;
    const uint64_t n = r.peek_count(sizeof(uint32_t));
    v.resize(n);
    auto expect_len = [&](uint64_t m) {
      if (m != n) r.corrupt("interaction columns differ in length");
    };
    expect_len(r.column<uint32_t>([&](uint64_t k, uint32_t x) { v[k].user = x; }, n));
    expect_len(r.column<uint32_t>([&](uint64_t k, uint32_t x) { v[k].item = x; }, n));
    expect_len(r.column<float>([&](uint64_t k, float x) { v[k].rating = x; }, n));
    expect_len(r.column<int64_t>([&](uint64_t k, int64_t x) { v[k].timestamp = x; }, n));
  }
  ds.fixed_split = r.array<uint8_t>();
  r.ids(ds.tag_names);
  {
    auto& v = ds.tags;
    const uint64_t n = r.peek_count(sizeof(uint32_t));
    v.resize(n);
    auto expect_len = [&](uint64_t m) {
      if (m != n) r.corrupt("tag columns differ in length");
    };
    expect_len(r.column<uint32_t>([&](uint64_t k, uint32_t x) { v[k].user = x; }, n));
    expect_len(r.column<uint32_t>([&](uint64_t k, uint32_t x) { v[k].item = x; }, n));
    expect_len(r.column<uint32_t>([&](uint64_t k, uint32_t x) { v[k].tag = x; }, n));
    expect_len(r.column<int64_t>([&](uint64_t k, int64_t x) { v[k].timestamp = x; }, n));
  }
  if (!r.at_end()) r.corrupt("trailing bytes");
  try {
    ds.validate();
  } catch (const Error& e) {
    r.corrupt(e.what());
  }
  if (meta_out) *meta_out = std::move(meta);
  return ds;
}

// ---- Cache ----------------------------------------------------------------------------------------------

std::string cache_directory(const ReadOptions& opt) {
  if (!opt.cache_dir.empty()) return opt.cache_dir;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return (fs::path(x) / "xdrec" / "datasets").string();
  if (const char* h = std::getenv("HOME"); h && *h)
    return (fs::path(h) / ".cache" / "xdrec" / "datasets").string();
  return {};
}

const data::Format& find_format(const std::string& path, const std::string& name) {
  const auto& all = data::formats();
  if (name == "auto") {
    if (!fs::exists(path)) throw Error("no such file or directory: '" + path + "'");
    if (fs::is_regular_file(path)) return all.back();  // a single file is a canonical interactions file
    for (const auto& f : all)
      if (f.detect(path)) return f;
    std::string names;
    for (const auto& f : all) names += "\n  " + f.name + ": " + f.description;
    throw Error("cannot detect the dataset format of '" + path + "'; the formats are:" + names);
  }
  for (const auto& f : all)
    if (f.name == name) return f;
  std::string names;
  for (const auto& f : all) names += (names.empty() ? "" : ", ") + f.name;
  throw Error("unknown dataset format '" + name + "' (expected auto, " + names + ")");
}

}  // namespace

Dataset read_dataset(const std::string& path, const std::string& format, const ReadOptions& opt,
                     ReadReport* report) {
  Timer timer;
  ReadReport local;
  ReadReport& rep = report ? *report : local;
  rep = ReadReport{};
  if (!fs::exists(path)) throw Error("no such file or directory: '" + path + "'");
  const data::Format& fmt = find_format(path, format);

  std::string cache_path, key;
  if (opt.use_cache) {
    const std::string dir = cache_directory(opt);
    if (!dir.empty()) {
      const std::string abs = fs::absolute(path).lexically_normal().string();
      std::string id = "path=" + abs + "\nformat=" + fmt.name + "\ndomain=" + opt.domain +
                       "\nskip_errors=" + std::to_string(opt.skip_errors) +
                       "\nmax_examples=" + std::to_string(opt.max_examples) + "\n";
      key = "xdrec dataset cache\n" + id;
      for (const auto& in : fmt.inputs(path)) {
        std::error_code ec;
        const auto size = fs::file_size(in, ec);
        const auto mtime = fs::last_write_time(in, ec).time_since_epoch().count();
        key += "file=" + fs::absolute(in).lexically_normal().string() + " size=" + std::to_string(size) +
               " mtime=" + std::to_string(mtime) + "\n";
      }
      cache_path =
          (fs::path(dir) / (fmt.name + "-" + hex64(fnv1a64(id.data(), id.size())) + ".xds")).string();
      std::error_code ec;
      if (fs::is_regular_file(cache_path, ec)) {
        try {
          CacheMeta meta;
          Dataset ds = load_binary(cache_path, &meta);
          if (meta.key == key) {
            rep.from_cache = true;
            rep.records = meta.records;
            rep.skipped = meta.skipped;
            rep.examples = meta.examples;
            rep.bytes = fs::file_size(cache_path, ec);
            rep.seconds = timer.seconds();
            return ds;
          }
        } catch (const Error&) {
          // A stale, truncated or foreign cache file is rebuilt below.
        }
      }
    }
  }

  data::ReadContext ctx(opt, rep);
  Dataset ds = fmt.read(path, ctx);
  ds.validate();
  rep.seconds = timer.seconds();

  if (!cache_path.empty()) {
    try {
      fs::create_directories(fs::path(cache_path).parent_path());
      CacheMeta meta{key, rep.records, rep.skipped, rep.bytes, rep.seconds, rep.examples};
      save_binary(ds, cache_path, meta);
    } catch (const std::exception&) {
      // The cache only saves time: an unwritable cache directory is not an error.
    }
  }
  return ds;
}

void save_dataset_binary(const Dataset& ds, const std::string& path) {
  save_binary(ds, path, CacheMeta{});
}

Dataset load_dataset_binary(const std::string& path) {
  return load_binary(path, nullptr);
}

}  // namespace xdrec
