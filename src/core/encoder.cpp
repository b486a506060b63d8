// Encoder registry and the model cache directory.
#include "xdrec/encoder.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace xdrec {

namespace {
std::vector<EncoderInfo>& registry() {
  static std::vector<EncoderInfo> r;
  return r;
}
// "key=value" with an identifier key; a path or URL (even one holding '=' after '?') is not.
bool is_key_value(const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) return false;
  for (size_t i = 0; i < eq; ++i) {
    const char c = text[i];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  }
  return true;
}
}  // namespace

bool register_encoder(EncoderInfo info) {
  auto& r = registry();
  auto it = std::lower_bound(r.begin(), r.end(), info.name,
                             [](const EncoderInfo& e, const std::string& n) { return e.name < n; });
  r.insert(it, std::move(info));
  return true;
}

const std::vector<EncoderInfo>& registered_encoders() {
  return registry();
}

std::unique_ptr<TextEncoder> create_encoder(const std::string& text) {
  const size_t colon = text.find(':');
  const std::string name = text.substr(0, colon);
  const EncoderInfo* info = nullptr;
  for (auto& e : registry())
    if (e.name == name) info = &e;
  if (!info) {
    std::string known;
    for (auto& e : registry()) known += (known.empty() ? "" : ", ") + e.name;
    throw Error("unknown encoder '" + name + "' (known: " + known + ")");
  }
  Spec spec;
  spec.name = name;
  if (colon != std::string::npos) {
    std::string rest = text.substr(colon + 1);
    // A leading argument without '=' (a directory or a URL, which may itself contain ':' and '=' after
    // a '?') is stored under the empty key; the remaining ",key=value" pairs are parsed as usual.
    if (!rest.empty() && rest.find('=') == std::string::npos) {
      spec.values[""] = rest;
    } else if (!rest.empty()) {
      size_t first_comma = rest.find(',');
      std::string head = rest.substr(0, first_comma);
      if (!is_key_value(head)) {
        spec.values[""] = head;
        rest = first_comma == std::string::npos ? "" : rest.substr(first_comma + 1);
      }
      Spec kv = Spec::parse(name + ":" + rest);
      for (auto& [k, v] : kv.values) spec.values[k] = v;
    }
  }
  return info->create(spec);
}

std::string model_cache_dir() {
  if (const char* d = std::getenv("XDREC_MODEL_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/xdrec/models";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.cache/xdrec/models";
}

}  // namespace xdrec
