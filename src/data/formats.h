// Internal registry of the dataset formats the data module reads: detection, the input files of each
// (for the cache key) and the reader itself.
#pragma once

#include <string>
#include <vector>

#include "data/text.h"
#include "xdrec/dataset.h"
#include "xdrec/readers.h"

namespace xdrec::data {

struct ReadContext {
  const ReadOptions& opt;
  ReadReport& report;
  ErrorSink sink;
  ReadContext(const ReadOptions& o, ReadReport& r) : opt(o), report(r), sink(o, r) {}
  // Loads a file and counts its bytes in the report.
  FileData load(const std::string& path);
};

struct Format {
  std::string name;
  std::string description;
  // True when `path` (a directory, or a file for canonical) looks like this format.
  bool (*detect)(const std::string& path);
  // Every file the reader would read (existing ones), for the cache key.
  std::vector<std::string> (*inputs)(const std::string& path);
  Dataset (*read)(const std::string& path, ReadContext& ctx);
};

const std::vector<Format>& formats();

// Canonical layout (canonical.cpp).
bool detect_canonical(const std::string& path);
std::vector<std::string> canonical_inputs(const std::string& path);
Dataset read_canonical(const std::string& path, ReadContext& ctx);

// Runs f(record) for every record, counting good ones and passing ParseErrors to the sink.
template <class F>
void for_each_record(DelimitedReader& reader, ReadContext& ctx, F&& f) {
  Record rec;
  for (;;) {
    try {
      if (!reader.next(rec)) break;
      f(rec);
      ++ctx.report.records;
    } catch (const ParseError& e) {
      ctx.sink.handle(e);
    }
  }
}

// Splits "a|b|c" into its non-empty parts.
std::vector<std::string> split_categories(std::string_view s, char sep = '|');

}  // namespace xdrec::data
