#include "xdrec/params.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace xdrec {

Spec Spec::parse(const std::string& text) {
  Spec s;
  size_t colon = text.find(':');
  s.name = text.substr(0, colon);
  auto trim = [](std::string v) {
    size_t b = v.find_first_not_of(" \t"), e = v.find_last_not_of(" \t");
    return b == std::string::npos ? std::string() : v.substr(b, e - b + 1);
  };
  s.name = trim(s.name);
  check(!s.name.empty(), "spec '" + text + "': missing a name before ':'");
  if (colon == std::string::npos) return s;
  std::string rest = text.substr(colon + 1);
  std::stringstream ss(rest);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item = trim(item);
    if (item.empty()) continue;
    size_t eq = item.find('=');
    check(eq != std::string::npos && eq > 0,
          "spec '" + text + "': expected key=value, got '" + item + "'");
    std::string key = trim(item.substr(0, eq)), value = trim(item.substr(eq + 1));
    check(!s.values.count(key), "spec '" + text + "': key '" + key + "' given twice");
    s.values[key] = value;
  }
  return s;
}

std::string Spec::str() const {
  std::string out = name;
  bool first = true;
  for (auto& [k, v] : values) {
    out += first ? ":" : ",";
    out += k + "=" + v;
    first = false;
  }
  return out;
}

namespace {
std::string fmt_double(double v) {
  std::ostringstream os;
  os.precision(10);
  os << v;
  return os.str();
}
}  // namespace

ParamSet& ParamSet::add(const std::string& key, int* field, int def, int lo, int hi, const std::string& doc) {
  *field = def;
  entries_.push_back({key, doc, field, double(lo), double(hi), {}, std::to_string(def)});
  return *this;
}
ParamSet& ParamSet::add(const std::string& key, double* field, double def, double lo, double hi,
                        const std::string& doc) {
  *field = def;
  entries_.push_back({key, doc, field, lo, hi, {}, fmt_double(def)});
  return *this;
}
ParamSet& ParamSet::add(const std::string& key, bool* field, bool def, const std::string& doc) {
  *field = def;
  entries_.push_back({key, doc, field, 0, 1, {}, def ? "true" : "false"});
  return *this;
}
ParamSet& ParamSet::add(const std::string& key, std::string* field, const std::string& def,
                        const std::vector<std::string>& choices, const std::string& doc) {
  *field = def;
  entries_.push_back({key, doc, field, 0, 0, choices, def});
  return *this;
}

void ParamSet::apply(const std::map<std::string, std::string>& values) {
  for (auto& [key, text] : values) {
    auto it = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.key == key; });
    if (it == entries_.end()) {
      std::string known;
      for (auto& e : entries_) known += (known.empty() ? "" : ", ") + e.key;
      throw Error(owner_ + ": unknown parameter '" + key + "' (known: " + known + ")");
    }
    const Entry& e = *it;
    const std::string where = owner_ + ": parameter '" + key + "'";
    if (auto p = std::get_if<int*>(&e.field)) {
      long v = 0;
      auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      check(ec == std::errc() && ptr == text.data() + text.size(),
            where + " expects an integer, got '" + text + "'");
      check(v >= e.lo && v <= e.hi, where + " = " + text + " is out of range [" + fmt_double(e.lo) + ", " +
                                        fmt_double(e.hi) + "]");
      **p = static_cast<int>(v);
    } else if (auto p = std::get_if<double*>(&e.field)) {
      char* end = nullptr;
      double v = std::strtod(text.c_str(), &end);
      check(!text.empty() && end == text.c_str() + text.size() && std::isfinite(v),
            where + " expects a number, got '" + text + "'");
      check(v >= e.lo && v <= e.hi, where + " = " + text + " is out of range [" + fmt_double(e.lo) + ", " +
                                        fmt_double(e.hi) + "]");
      **p = v;
    } else if (auto p = std::get_if<bool*>(&e.field)) {
      if (text == "true" || text == "1" || text == "yes") {
        **p = true;
      } else if (text == "false" || text == "0" || text == "no") {
        **p = false;
      } else {
        throw Error(where + " expects true or false, got '" + text + "'");
      }
    } else if (auto p = std::get_if<std::string*>(&e.field)) {
      if (!e.choices.empty() && std::find(e.choices.begin(), e.choices.end(), text) == e.choices.end()) {
        std::string c;
        for (auto& x : e.choices) c += (c.empty() ? "" : ", ") + x;
        throw Error(where + " = '" + text + "' is not one of: " + c);
      }
      **p = text;
    }
  }
}

std::string ParamSet::current() const {
  std::map<std::string, std::string> kv;
  for (auto& e : entries_) {
    if (auto p = std::get_if<int*>(&e.field)) kv[e.key] = std::to_string(**p);
    if (auto p = std::get_if<double*>(&e.field)) kv[e.key] = fmt_double(**p);
    if (auto p = std::get_if<bool*>(&e.field)) kv[e.key] = **p ? "true" : "false";
    if (auto p = std::get_if<std::string*>(&e.field)) kv[e.key] = **p;
  }
  std::string out;
  for (auto& [k, v] : kv) out += (out.empty() ? "" : ",") + k + "=" + v;
  return out;
}

std::string ParamSet::help() const {
  std::ostringstream os;
  for (auto& e : entries_) {
    os << "  " << e.key;
    if (std::holds_alternative<int*>(e.field)) {
      os << " (int, default " << e.def << ", range [" << fmt_double(e.lo) << ", " << fmt_double(e.hi) << "])";
    } else if (std::holds_alternative<double*>(e.field)) {
      os << " (number, default " << e.def << ", range [" << fmt_double(e.lo) << ", " << fmt_double(e.hi)
         << "])";
    } else if (std::holds_alternative<bool*>(e.field)) {
      os << " (bool, default " << e.def << ")";
    } else {
      os << " (string, default '" << e.def << "'";
      if (!e.choices.empty()) {
        os << ", one of";
        for (auto& c : e.choices) os << " " << c;
      }
      os << ")";
    }
    os << ": " << e.doc << "\n";
  }
  return os.str();
}

}  // namespace xdrec
