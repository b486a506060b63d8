// Internal text utilities of the data module: UTF-8 validation, Latin-1 conversion, strict number parsing,
// a strict delimited-text (CSV/TSV) record reader, a JSON-lines reader and the skip-or-throw error sink.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/readers.h"

namespace xdrec::data {

// Byte offset of the first byte of s that is not part of a well-formed UTF-8 sequence (overlong forms,
// surrogates and code points above U+10FFFF are ill-formed), or npos when s is valid.
size_t find_invalid_utf8(std::string_view s);
// Every byte is one ISO-8859-1 code point.
std::string latin1_to_utf8(std::string_view s);
// s itself when it is valid UTF-8, otherwise s read as ISO-8859-1.
std::string utf8_or_latin1(std::string_view s);

// Strict numbers: the whole text must be the number (no spaces, no '+'); floats must be finite.
std::optional<int64_t> parse_int(std::string_view s);
std::optional<double> parse_double(std::string_view s);

// Fast 64-bit hash of bytes (four independent multiply-rotate lanes over 8-byte words, then a final mix):
// several GB/s, for dataset fingerprints and file checksums. Chain calls by passing the previous result.
uint64_t hash_bytes(const void* data, size_t n, uint64_t seed = 0);

// Text of a string for messages: quoted, shortened to 40 bytes.
std::string quote_for_message(std::string_view s);

// Counts malformed records: rethrows when skipping is off, otherwise keeps the first examples.
class ErrorSink {
 public:
  ErrorSink(const ReadOptions& opt, ReadReport& report) : opt_(opt), report_(report) {}
  void handle(const ParseError& e);
  bool skipping() const { return opt_.skip_errors; }

 private:
  const ReadOptions& opt_;
  ReadReport& report_;
};

// One record of a delimited file. Fields are views into the file's bytes or into the record's own buffer
// (quoted fields with doubled quotes, TSV escapes); valid until the next call to next().
struct Record {
  size_t line = 0;        // 1-based line where the record starts
  size_t end_line = 0;    // line where it ends (differs with quoted newlines)
  size_t end_column = 0;  // 1-based column just past the last byte of the record on end_line
  std::vector<std::string_view> fields;
  std::vector<uint32_t> columns;  // 1-based column of each field's first byte
  std::vector<uint32_t> lines;    // line of each field's first byte
  std::string buffer;

  size_t size() const { return fields.size(); }
};

struct DelimitedFormat {
  char delimiter = ',';
  bool quotes = false;   // RFC 4180 double quotes (CSV)
  bool escapes = false;  // backslash escapes \t \n \r \\ (canonical TSV); other backslashes stay literal
  bool utf8 = true;      // reject invalid UTF-8 (off for Latin-1 files, which callers convert)

  static DelimitedFormat csv() { return {',', true, false, true}; }
  static DelimitedFormat tsv() { return {'\t', false, true, true}; }
  static DelimitedFormat plain(char delim, bool utf8 = true) { return {delim, false, false, utf8}; }
};

// Reads records one by one from bytes in memory. Blank lines are skipped; "\r\n" line ends are accepted; a
// UTF-8 byte-order mark at the start is skipped. A structural error (invalid UTF-8, unterminated quote, text
// after a closing quote, a quote inside an unquoted field) throws ParseError and leaves the reader at the
// start of the next line, so that a caller skipping errors can go on.
class DelimitedReader {
 public:
  DelimitedReader(std::string file, std::string_view data, DelimitedFormat format);
  bool next(Record& rec);
  const std::string& file() const { return file_; }
  [[noreturn]] void fail(const Record& rec, size_t field, const std::string& reason) const;
  // Requires exactly n fields (or at least n when at_least): ParseError naming the first missing or extra
  // one.
  void expect_fields(const Record& rec, size_t n, bool at_least = false) const;

 private:
  [[noreturn]] void fail_at(size_t line, size_t column, const std::string& reason, size_t resume);
  void begin_line(size_t pos);  // validates the physical line starting at pos

  std::string file_;
  std::string_view data_;
  DelimitedFormat fmt_;
  size_t pos_ = 0;
  size_t line_ = 0;  // number of the line that starts at line_start_
  size_t line_start_ = 0;
  size_t line_end_ = 0;  // position of '\n' (or data size) of the current line
  struct Span {
    bool owned;
    size_t offset, length;
  };
  std::vector<Span> spans_;
};

// Header of a delimited file: column names mapped to field positions.
class Header {
 public:
  // Reads the first record as the header; ParseError for an empty file, an empty or duplicate name.
  static Header read(DelimitedReader& reader);
  std::optional<size_t> find(std::string_view name) const;
  // ParseError (header line, column 1) when the column is absent.
  size_t require(std::string_view name) const;
  const std::vector<std::string>& names() const { return names_; }
  size_t line() const { return line_; }
  uint32_t column_of(size_t field) const { return columns_[field]; }

 private:
  std::string file_;
  size_t line_ = 0;
  std::vector<std::string> names_;
  std::vector<uint32_t> columns_;
};

// Whole-file contents with the file name for messages; Error when unreadable.
struct FileData {
  std::string path;
  std::string bytes;
  static FileData load(const std::string& path);
};

}  // namespace xdrec::data
