// Reading datasets: the canonical interactions/items/users files (CSV, TSV or JSONL with a header), the
// real formats under ../shared/data, and a binary cache so that a re-run does not re-parse.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xdrec/dataset.h"

namespace xdrec {

struct ReadOptions {
  bool skip_errors = false;  // --on-error=skip: skip malformed records, count them, keep the first examples
  size_t max_examples = 5;   // how many skipped-record messages to keep
  std::string domain;        // default domain name for single-domain canonical files ("default")
  bool use_cache = true;     // read/write the binary cache (a file per input path in the cache directory)
  std::string cache_dir;     // empty: $XDG_CACHE_HOME/xdrec/datasets or ~/.cache/xdrec/datasets
};

struct ReadReport {
  size_t records = 0;                 // records read successfully (all files)
  size_t skipped = 0;                 // malformed records skipped (skip_errors)
  std::vector<std::string> examples;  // first messages of skipped records, "file:line:col: reason"
  size_t bytes = 0;
  double seconds = 0;
  bool from_cache = false;
  double lines_per_second() const { return seconds > 0 ? records / seconds : 0; }
};

// Formats: "auto" (detected from the files present), "canonical", "ml-100k", "ml-latest-small", "douban",
// "food-kitchen", "disencdr", "lastfm". `path` is a directory (or, for canonical, an interactions file).
// Canonical layout: DIR/interactions.{csv,tsv,jsonl} with columns user,item[,domain][,rating][,timestamp]
// [,split] (split: train, validation or test, filling Dataset::fixed_split);
// optional DIR/items.{csv,tsv,jsonl} with item[,domain][,title][,description][,categories] ("|"-separated);
// optional DIR/users.{csv,tsv,jsonl} with user[,text][,any other column as an attribute];
// optional DIR/tags.{csv,tsv,jsonl} with user,item,tag[,timestamp] (Dataset::tags).
// CSV follows RFC 4180 (double quotes, "" inside quotes, quoted line breaks); TSV has no quoting but reads
// the escapes \t \n \r \\ (other backslashes are literal); JSONL has one object per line (values may be
// strings, numbers or null; categories may be an array). A lone interactions file (not named
// interactions.*) is read without items/users/tags. Empty rating/timestamp fields mean "none".
// Imported formats (see ../shared/data/*/PROVENANCE.md): ml-100k and ml-latest-small (domain "movies";
// genres as categories; ml-100k user attributes and profile text; ml-latest-small tags.csv into
// Dataset::tags), douban (<domain>_ratings.dat, item ids "book:12"), food-kitchen (items_<domain>.tsv
// titles, item ids "food:<domain_item_id>", user ids "<file stem>:<line id>", valid/test targets as the
// fixed split, sequence position as the timestamp), disencdr (a scenario folder X_Y read with its pair Y_X,
// item ids "X:<id>", test.txt as the fixed test part), lastfm (play counts as ratings, artist names as
// titles, user tags into Dataset::tags).
// Errors: ParseError with file, line, column and reason (invalid UTF-8, a missing column, a bad number,
// an unknown item in interactions when an items file is given, an empty file, a duplicate header).
// With use_cache, the parsed Dataset is stored in the cache directory keyed by the absolute path, the
// format and the options, and reused while the sizes and modification times of the input files match.
Dataset read_dataset(const std::string& path, const std::string& format = "auto", const ReadOptions& opt = {},
                     ReadReport* report = nullptr);

// Writes the canonical layout (interactions.tsv with a split column when the dataset has a fixed split,
// items.tsv, users.tsv, and tags.tsv when there are tags) into dir, each file atomically; reading it back
// gives the same ids, text, interactions, split and tags.
void write_canonical(const Dataset& ds, const std::string& dir);

// Binary cache of a whole Dataset (versioned; written atomically).
void save_dataset_binary(const Dataset& ds, const std::string& path);
Dataset load_dataset_binary(const std::string& path);  // Error on a wrong version or a truncated file

}  // namespace xdrec
