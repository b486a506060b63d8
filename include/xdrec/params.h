// Typed, declared parameters parsed from spec strings such as "ials:factors=128,reg=0.05".
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "xdrec/common.h"

namespace xdrec {

// A spec string split into its name and key=value pairs (values kept as text).
struct Spec {
  std::string name;
  std::map<std::string, std::string> values;
  static Spec parse(const std::string& text);  // throws Error on malformed text
  std::string str() const;                      // canonical "name:k=v,k=v" (keys sorted)
};

// Declares the parameters of one component with defaults, ranges and documentation; binds them to fields;
// applies a Spec with clear errors for unknown keys, bad values and out-of-range numbers.
class ParamSet {
 public:
  explicit ParamSet(std::string owner) : owner_(std::move(owner)) {}
  ParamSet& add(const std::string& key, int* field, int def, int lo, int hi, const std::string& doc);
  ParamSet& add(const std::string& key, double* field, double def, double lo, double hi, const std::string& doc);
  ParamSet& add(const std::string& key, bool* field, bool def, const std::string& doc);
  ParamSet& add(const std::string& key, std::string* field, const std::string& def,
                const std::vector<std::string>& choices, const std::string& doc);
  void apply(const std::map<std::string, std::string>& values);  // throws Error
  std::string current() const;  // "k=v,k=v" of every parameter's current value, keys sorted
  std::string help() const;     // one line per parameter: key, type, default, range, doc

 private:
  struct Entry {
    std::string key, doc;
    std::variant<int*, double*, bool*, std::string*> field;
    double lo = 0, hi = 0;
    std::vector<std::string> choices;
    std::string def;
  };
  std::string owner_;
  std::vector<Entry> entries_;
};

}  // namespace xdrec
