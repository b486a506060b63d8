// Reading datasets: the canonical interactions/items/users files (CSV, TSV or JSONL with a header), the
// real formats under ../shared/data, and a binary cache so that a re-run does not re-parse.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xdrec/dataset.h"

namespace xdrec {

struct ReadOptions {
  bool skip_errors = false;   // --on-error=skip: skip malformed records, count them, keep the first examples
  size_t max_examples = 5;    // how many skipped-record messages to keep
  std::string domain;         // default domain name for single-domain canonical files ("default")
  bool use_cache = true;      // read/write the binary cache next to the input (or in cache_dir)
  std::string cache_dir;      // empty: $XDG_CACHE_HOME/xdrec/datasets or ~/.cache/xdrec/datasets
};

struct ReadReport {
  size_t records = 0;          // records read successfully (all files)
  size_t skipped = 0;          // malformed records skipped (skip_errors)
  std::vector<std::string> examples;  // first messages of skipped records, "file:line:col: reason"
  size_t bytes = 0;
  double seconds = 0;
  bool from_cache = false;
  double lines_per_second() const { return seconds > 0 ? records / seconds : 0; }
};

// Formats: "auto" (detected from the files present), "canonical", "ml-100k", "ml-latest-small", "douban",
// "food-kitchen", "disencdr", "lastfm". `path` is a directory (or, for canonical, an interactions file).
// Canonical layout: DIR/interactions.{csv,tsv,jsonl} with columns user,item[,domain][,rating][,timestamp];
// optional DIR/items.{csv,tsv,jsonl} with item[,domain][,title][,description][,categories] ("|"-separated);
// optional DIR/users.{csv,tsv,jsonl} with user[,text][,any other column as an attribute].
// Errors: ParseError with file, line, column and reason (invalid UTF-8, a missing column, a bad number,
// an unknown item in interactions when an items file is given, an empty file, a duplicate header).
Dataset read_dataset(const std::string& path, const std::string& format = "auto", const ReadOptions& opt = {},
                     ReadReport* report = nullptr);

// Writes the canonical layout (interactions.tsv, items.tsv, users.tsv) into dir, each file atomically.
void write_canonical(const Dataset& ds, const std::string& dir);

// Binary cache of a whole Dataset (versioned; written atomically).
void save_dataset_binary(const Dataset& ds, const std::string& path);
Dataset load_dataset_binary(const std::string& path);  // Error on a wrong version or a truncated file

}  // namespace xdrec
