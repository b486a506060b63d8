#include "data/text.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace xdrec::data {

size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    // ASCII fast path, eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= n) break;
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;  // 0x80..0xC1 (continuation or overlong lead) or 0xF5..0xFF
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string latin1_to_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  for (unsigned char c : s) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

std::string utf8_or_latin1(std::string_view s) {
  if (find_invalid_utf8(s) == std::string_view::npos) return std::string(s);
  return latin1_to_utf8(s);
}

std::optional<int64_t> parse_int(std::string_view s) {
  int64_t v = 0;
  if (s.empty()) return std::nullopt;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<double> parse_double(std::string_view s) {
  double v = 0;
  if (s.empty()) return std::nullopt;
  // from_chars also accepts "inf" and "nan"; numbers here must start with a digit, '-' or '.'.
  const char c0 = s[0];
  if (!(std::isdigit(static_cast<unsigned char>(c0)) || c0 == '-' || c0 == '.')) return std::nullopt;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

uint64_t hash_bytes(const void* data, size_t n, uint64_t seed) {
  constexpr uint64_t k1 = 0x9E3779B97F4A7C15ULL, k2 = 0xC2B2AE3D27D4EB4FULL;
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h[4] = {seed ^ k1, seed ^ k2, (seed + 1) * k1, (seed + 2) * k2};
  auto rotl = [](uint64_t x, int r) { return (x << r) | (x >> (64 - r)); };
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int l = 0; l < 4; ++l) {
      uint64_t w;
      std::memcpy(&w, p + i + 8 * l, 8);
      h[l] = rotl((h[l] ^ w) * k2, 31) * k1;
    }
  }
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h[0] = rotl((h[0] ^ w) * k2, 31) * k1;
  }
  uint64_t tail = 0;
  for (size_t k = 0; i < n; ++i, ++k) tail |= uint64_t(p[i]) << (8 * k);
  h[1] = rotl((h[1] ^ tail) * k2, 31) * k1;
  uint64_t r = splitmix64(h[0]) ^ splitmix64(h[1] + k1) ^ splitmix64(h[2] + k2) ^ splitmix64(h[3] ^ n);
  return splitmix64(r);
}

std::string quote_for_message(std::string_view s) {
  std::string out = "'";
  const size_t limit = 40;
  for (size_t i = 0; i < s.size() && i < limit; ++i) {
    const unsigned char c = s[i];
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (s.size() > limit) out += "...";
  out += "'";
  return out;
}

void ErrorSink::handle(const ParseError& e) {
  if (!opt_.skip_errors) throw e;
  ++report_.skipped;
  if (report_.examples.size() < opt_.max_examples) report_.examples.push_back(e.what());
}

// ---- DelimitedReader ------------------------------------------------------------------------------------

DelimitedReader::DelimitedReader(std::string file, std::string_view data, DelimitedFormat format)
    : file_(std::move(file)), data_(data), fmt_(format) {
  if (data_.size() >= 3 && static_cast<unsigned char>(data_[0]) == 0xEF &&
      static_cast<unsigned char>(data_[1]) == 0xBB && static_cast<unsigned char>(data_[2]) == 0xBF)
    pos_ = 3;
}

void DelimitedReader::fail_at(size_t line, size_t column, const std::string& reason, size_t resume) {
  pos_ = resume;
  throw ParseError(file_, line, column, reason);
}

void DelimitedReader::begin_line(size_t pos) {
  line_start_ = pos;
  ++line_;
  const void* nl = std::memchr(data_.data() + pos, '\n', data_.size() - pos);
  line_end_ = nl ? static_cast<size_t>(static_cast<const char*>(nl) - data_.data()) : data_.size();
  if (fmt_.utf8) {
    const size_t bad = find_invalid_utf8(data_.substr(pos, line_end_ - pos));
    if (bad != std::string_view::npos) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "invalid UTF-8 (byte 0x%02X)",
                    static_cast<unsigned char>(data_[pos + bad]));
      fail_at(line_, bad + 1, buf, line_end_ + 1);
    }
  }
}

bool DelimitedReader::next(Record& rec) {
  const char* d = data_.data();
  const size_t n = data_.size();
  auto content_end = [&]() {
    size_t e = line_end_;
    if (e > line_start_ && d[e - 1] == '\r') --e;
    return e;
  };
  for (;;) {
    if (pos_ >= n) return false;
    begin_line(pos_);
    if (content_end() == line_start_) {
      pos_ = line_end_ + 1;  // blank line
      continue;
    }
    break;
  }
  rec.fields.clear();
  rec.columns.clear();
  rec.lines.clear();
  rec.buffer.clear();
  spans_.clear();
  rec.line = line_;
  const char delim = fmt_.delimiter;
  size_t p = line_start_;
  for (;;) {
    size_t eol = content_end();
    rec.columns.push_back(static_cast<uint32_t>(p - line_start_ + 1));
    rec.lines.push_back(static_cast<uint32_t>(line_));
    if (fmt_.quotes && p < eol && d[p] == '"') {
      const size_t open_line = line_, open_col = p - line_start_ + 1;
      ++p;
      size_t seg = p;  // start of the not yet copied part of the field
      bool owned = false;
      size_t buf_start = rec.buffer.size();
      size_t close = 0;
      for (;;) {
        const void* q = std::memchr(d + p, '"', line_end_ - p);
        if (!q) {
          if (line_end_ >= n)
            fail_at(open_line, open_col, "unterminated quoted field (no closing quote before end of file)",
                    n);
          begin_line(line_end_ + 1);  // the field goes on over the line break
          p = line_start_;
          continue;
        }
        const size_t qi = static_cast<const char*>(q) - d;
        if (qi + 1 < n && d[qi + 1] == '"') {  // doubled quote: one literal quote
          if (!owned) {
            owned = true;
            buf_start = rec.buffer.size();
          }
          rec.buffer.append(d + seg, qi + 1 - seg);
          p = seg = qi + 2;
          continue;
        }
        close = qi;
        break;
      }
      if (owned) {
        rec.buffer.append(d + seg, close - seg);
        spans_.push_back({true, buf_start, rec.buffer.size() - buf_start});
      } else {
        spans_.push_back({false, seg, close - seg});
      }
      p = close + 1;
      eol = content_end();
      if (p < eol && d[p] != delim)
        fail_at(line_, p - line_start_ + 1, "unexpected character after a closing quote", line_end_ + 1);
    } else {
      const void* f = std::memchr(d + p, delim, eol - p);
      const size_t fe = f ? static_cast<size_t>(static_cast<const char*>(f) - d) : eol;
      if (fmt_.quotes) {
        const void* q = std::memchr(d + p, '"', fe - p);
        if (q)
          fail_at(line_, static_cast<const char*>(q) - d - line_start_ + 1,
                  "quote inside an unquoted field (quote the whole field and double inner quotes)",
                  line_end_ + 1);
      }
      if (fmt_.escapes && std::memchr(d + p, '\\', fe - p)) {
        const size_t start = rec.buffer.size();
        for (size_t k = p; k < fe; ++k) {
          if (d[k] == '\\' && k + 1 < fe) {
            const char e = d[k + 1];
            const char r = e == 't' ? '\t' : e == 'n' ? '\n' : e == 'r' ? '\r' : e == '\\' ? '\\' : 0;
            if (r) {
              rec.buffer.push_back(r);
              ++k;
              continue;
            }
          }
          rec.buffer.push_back(d[k]);
        }
        spans_.push_back({true, start, rec.buffer.size() - start});
      } else {
        spans_.push_back({false, p, fe - p});
      }
      p = fe;
    }
    if (p < eol && d[p] == delim) {
      ++p;
      continue;
    }
    break;
  }
  rec.end_line = line_;
  rec.end_column = content_end() - line_start_ + 1;
  pos_ = line_end_ + 1;
  rec.fields.resize(spans_.size());
  for (size_t k = 0; k < spans_.size(); ++k) {
    const Span& s = spans_[k];
    rec.fields[k] = s.owned ? std::string_view(rec.buffer).substr(s.offset, s.length)
                            : std::string_view(d + s.offset, s.length);
  }
  return true;
}

void DelimitedReader::fail(const Record& rec, size_t field, const std::string& reason) const {
  if (field < rec.size()) throw ParseError(file_, rec.lines[field], rec.columns[field], reason);
  throw ParseError(file_, rec.end_line, rec.end_column, reason);
}

void DelimitedReader::expect_fields(const Record& rec, size_t n, bool at_least) const {
  if (rec.size() < n)
    throw ParseError(file_, rec.end_line, rec.end_column,
                     "missing column: expected " + std::string(at_least ? "at least " : "") +
                         std::to_string(n) + " fields, found " + std::to_string(rec.size()));
  if (!at_least && rec.size() > n)
    throw ParseError(
        file_, rec.lines[n], rec.columns[n],
        "too many fields: expected " + std::to_string(n) + ", found " + std::to_string(rec.size()));
}

// ---- Header ---------------------------------------------------------------------------------------------

namespace {
bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}
}  // namespace

Header Header::read(DelimitedReader& reader) {
  Header h;
  h.file_ = reader.file();
  Record rec;
  if (!reader.next(rec)) throw ParseError(reader.file(), 1, 1, "empty file");
  h.line_ = rec.line;
  for (size_t k = 0; k < rec.size(); ++k) {
    std::string name(rec.fields[k]);
    if (name.empty())
      throw ParseError(h.file_, rec.lines[k], rec.columns[k], "empty column name in the header");
    if (auto prev = h.find(name))
      throw ParseError(h.file_, rec.lines[k], rec.columns[k],
                       "duplicate column '" + name + "' in the header (also column " +
                           std::to_string(h.columns_[*prev]) + ")");
    h.names_.push_back(std::move(name));
    h.columns_.push_back(rec.columns[k]);
  }
  return h;
}

std::optional<size_t> Header::find(std::string_view name) const {
  for (size_t k = 0; k < names_.size(); ++k)
    if (iequals(names_[k], name)) return k;
  return std::nullopt;
}

size_t Header::require(std::string_view name) const {
  auto k = find(name);
  if (!k) {
    std::string have;
    for (const auto& n : names_) have += (have.empty() ? "" : ",") + n;
    throw ParseError(file_, line_, 1,
                     "header lacks required column '" + std::string(name) + "' (found: " + have + ")");
  }
  return *k;
}

FileData FileData::load(const std::string& path) {
  FileData f;
  f.path = path;
  std::FILE* fp = std::fopen(path.c_str(), "rb");
  if (!fp) throw Error("cannot open '" + path + "': " + std::strerror(errno));
  std::fseek(fp, 0, SEEK_END);
  const long size = std::ftell(fp);
  std::fseek(fp, 0, SEEK_SET);
  if (size < 0) {
    std::fclose(fp);
    throw Error("cannot read '" + path + "'");
  }
  f.bytes.resize(static_cast<size_t>(size));
  const size_t got = size ? std::fread(f.bytes.data(), 1, f.bytes.size(), fp) : 0;
  std::fclose(fp);
  if (got != f.bytes.size()) throw Error("cannot read '" + path + "' (short read)");
  return f;
}

}  // namespace xdrec::data
